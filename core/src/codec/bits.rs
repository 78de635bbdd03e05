//! Bit I/O over caller-supplied byte slices, and the integer transforms the
//! block formats share.
//!
//! Writers fail with [`EncodeError::BufferTooSmall`] instead of growing;
//! readers fail with [`DecodeError::Truncated`] instead of reading past the
//! end. Bits are packed least-significant first.

use super::{DecodeError, EncodeError};
use crate::bytes::ByteWriter;

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
