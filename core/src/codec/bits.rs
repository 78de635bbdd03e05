//! Bit and varint I/O over caller-supplied byte slices.
//!
//! Writers fail with [`EncodeError::BufferTooSmall`] instead of growing;
//! readers fail with [`DecodeError::Truncated`] instead of reading past the
//! end. Bits are packed least-significant first.

use super::{DecodeError, EncodeError};

/// Writes bytes into a slice.
pub(crate) struct ByteWriter<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl<'a> ByteWriter<'a> {
    pub(crate) fn new(buf: &'a mut [u8]) -> Self {
        ByteWriter { buf, pos: 0 }
    }

    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    pub(crate) fn u8(&mut self, b: u8) -> Result<(), EncodeError> {
        let slot = self
            .buf
            .get_mut(self.pos)
            .ok_or(EncodeError::BufferTooSmall)?;
        *slot = b;
        self.pos += 1;
        Ok(())
    }

    #[inline]
    pub(crate) fn bytes(&mut self, b: &[u8]) -> Result<(), EncodeError> {
        let end = self.pos + b.len();
        self.buf
            .get_mut(self.pos..end)
            .ok_or(EncodeError::BufferTooSmall)?
            .copy_from_slice(b);
        self.pos = end;
        Ok(())
    }

    /// LEB128, as postcard writes varints.
    pub(crate) fn varint(&mut self, mut v: u64) -> Result<(), EncodeError> {
        loop {
            let low = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                return self.u8(low);
            }
            self.u8(low | 0x80)?;
        }
    }

    /// The unwritten rest of the buffer, for a nested writer.
    pub(crate) fn rest(&mut self) -> &mut [u8] {
        self.buf.get_mut(self.pos..).unwrap_or_default()
    }

    /// Marks `n` bytes of [`ByteWriter::rest`] as written.
    pub(crate) fn advance(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.buf.len());
    }
}

/// Reads bytes from a slice.
#[derive(Clone)]
pub(crate) struct ByteReader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> ByteReader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        ByteReader { buf, pos: 0 }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        let b = *self.buf.get(self.pos).ok_or(DecodeError::Truncated)?;
        self.pos += 1;
        Ok(b)
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or(DecodeError::Truncated)?;
        let s = self.buf.get(self.pos..end).ok_or(DecodeError::Truncated)?;
        self.pos = end;
        Ok(s)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        self.take(N)?.try_into().map_err(|_| DecodeError::Truncated)
    }

    /// LEB128 of at most 64 bits; overlong or overflowing encodings are malformed.
    pub(crate) fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            let bits = u64::from(b & 0x7f);
            if shift == 63 && bits > 1 {
                return Err(DecodeError::Malformed);
            }
            v |= bits << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError::Malformed)
    }

    /// A varint that must fit `u32`.
    pub(crate) fn varint_u32(&mut self) -> Result<u32, DecodeError> {
        u32::try_from(self.varint()?).map_err(|_| DecodeError::Malformed)
    }

    /// A varint used as a length or count, at most `max`.
    pub(crate) fn len(&mut self, max: usize) -> Result<usize, DecodeError> {
        let v = self.varint()?;
        usize::try_from(v)
            .ok()
            .filter(|&n| n <= max)
            .ok_or(DecodeError::Malformed)
    }

    pub(crate) fn rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or_default()
    }
}

/// Writes bits, least significant first, into a slice.
pub(crate) struct BitWriter<'a> {
    out: ByteWriter<'a>,
    acc: u64,
    nbits: u32,
}

impl<'a> BitWriter<'a> {
    pub(crate) fn new(buf: &'a mut [u8]) -> Self {
        BitWriter {
            out: ByteWriter::new(buf),
            acc: 0,
            nbits: 0,
        }
    }

    /// Writes the low `width` bits of `v` (`width <= 64`).
    #[inline]
    pub(crate) fn bits(&mut self, v: u64, width: u32) -> Result<(), EncodeError> {
        if width > 32 {
            self.bits(v & 0xffff_ffff, 32)?;
            return self.bits(v >> 32, width - 32);
        }
        if width == 0 {
            return Ok(());
        }
        // Invariant: fewer than 32 bits are pending, so 32 more fit.
        self.acc |= (v & (u64::MAX >> (64 - width))) << self.nbits;
        self.nbits += width;
        if self.nbits >= 32 {
            self.out.bytes(&(self.acc as u32).to_le_bytes())?;
            self.acc >>= 32;
            self.nbits -= 32;
        }
        Ok(())
    }

    /// Writes the low `width` bits of each value.
    #[inline]
    pub(crate) fn pack(&mut self, values: &[u64], width: u32) -> Result<(), EncodeError> {
        if width == 0 || width > 32 {
            for &v in values {
                self.bits(v, width)?;
            }
            return Ok(());
        }
        let mask = u64::MAX >> (64 - width);
        let (mut acc, mut n) = (self.acc, self.nbits);
        for &v in values {
            acc |= (v & mask) << n;
            n += width;
            if n >= 32 {
                self.out.bytes(&(acc as u32).to_le_bytes())?;
                acc >>= 32;
                n -= 32;
            }
        }
        (self.acc, self.nbits) = (acc, n);
        Ok(())
    }

    /// Elias-gamma code of `v >= 1`.
    pub(crate) fn gamma(&mut self, v: u64) -> Result<(), EncodeError> {
        let n = 63 - v.max(1).leading_zeros();
        self.bits(0, n)?;
        self.bits(1, 1)?;
        self.bits(v, n)
    }

    /// Pads to a byte boundary and returns the bytes written.
    pub(crate) fn finish(mut self) -> Result<usize, EncodeError> {
        while self.nbits > 0 {
            self.out.u8(self.acc as u8)?;
            self.acc >>= 8;
            self.nbits = self.nbits.saturating_sub(8);
        }
        Ok(self.out.position())
    }
}

/// Cost in bits of [`BitWriter::gamma`] for `v`.
pub(crate) fn gamma_bits(v: u64) -> u64 {
    u64::from(2 * (63 - v.max(1).leading_zeros()) + 1)
}

/// Reads bits, least significant first. Small (a slice and a bit
/// position), so a decoder can keep one per column.
#[derive(Clone, Debug)]
pub(crate) struct BitReader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> BitReader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        BitReader { buf, pos: 0 }
    }

    /// Reads `width <= 64` bits.
    pub(crate) fn bits(&mut self, width: u32) -> Result<u64, DecodeError> {
        if width == 0 {
            return Ok(0);
        }
        if width > 56 {
            let low = self.bits(32)?;
            let high = self.bits(width - 32)?;
            return Ok(low | high << 32);
        }
        let end = self.pos + width as usize;
        if end > self.buf.len() * 8 {
            return Err(DecodeError::Truncated);
        }
        let first = self.pos / 8;
        let mut word = [0u8; 8];
        let avail = self.buf.get(first..).unwrap_or_default();
        let n = avail.len().min(8);
        if let (Some(dst), Some(src)) = (word.get_mut(..n), avail.get(..n)) {
            dst.copy_from_slice(src);
        }
        let v = u64::from_le_bytes(word) >> (self.pos % 8);
        self.pos = end;
        Ok(v & ((1u64 << width) - 1))
    }

    pub(crate) fn bit(&mut self) -> Result<bool, DecodeError> {
        Ok(self.bits(1)? == 1)
    }

    /// Elias-gamma; at most 63 leading zeros.
    pub(crate) fn gamma(&mut self) -> Result<u64, DecodeError> {
        let mut n = 0;
        while !self.bit()? {
            n += 1;
            if n > 63 {
                return Err(DecodeError::Malformed);
            }
        }
        Ok(1u64 << n | self.bits(n)?)
    }
}

/// Maps signed to unsigned so small magnitudes get small codes.
pub(crate) const fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// Inverse of [`zigzag`].
pub(crate) const fn unzigzag(v: u64) -> i64 {
    (v >> 1) as i64 ^ -((v & 1) as i64)
}

/// Bits needed to write `v`.
pub(crate) const fn width(v: u64) -> u32 {
    64 - v.leading_zeros()
}
