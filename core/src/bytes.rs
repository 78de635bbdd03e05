//! Byte and varint cursors over caller-supplied slices, shared by the wire
//! layer and the block codec.
//!
//! A writer fails with [`Overflow`] instead of growing; a reader fails with
//! [`ReadError::Truncated`] instead of reading past the end. Each layer maps
//! these into its own errors.

/// The writer's slice has no room left.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Overflow;

/// Why a reader could not read a field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReadError {
    /// The slice ends before the field.
    Truncated,
    /// An overlong varint, or a value over its bound.
    Malformed,
}

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

    pub(crate) fn u8(&mut self, b: u8) -> Result<(), Overflow> {
        let slot = self.buf.get_mut(self.pos).ok_or(Overflow)?;
        *slot = b;
        self.pos += 1;
        Ok(())
    }

    #[inline]
    pub(crate) fn bytes(&mut self, b: &[u8]) -> Result<(), Overflow> {
        let end = self.pos + b.len();
        self.buf
            .get_mut(self.pos..end)
            .ok_or(Overflow)?
            .copy_from_slice(b);
        self.pos = end;
        Ok(())
    }

    /// LEB128, as postcard writes varints.
    pub(crate) fn varint(&mut self, mut v: u64) -> Result<(), Overflow> {
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

    pub(crate) fn u8(&mut self) -> Result<u8, ReadError> {
        let b = *self.buf.get(self.pos).ok_or(ReadError::Truncated)?;
        self.pos += 1;
        Ok(b)
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], ReadError> {
        let end = self.pos.checked_add(n).ok_or(ReadError::Truncated)?;
        let s = self.buf.get(self.pos..end).ok_or(ReadError::Truncated)?;
        self.pos = end;
        Ok(s)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], ReadError> {
        self.take(N)?.try_into().map_err(|_| ReadError::Truncated)
    }

    /// LEB128 of at most 64 bits; overlong or overflowing encodings are malformed.
    pub(crate) fn varint(&mut self) -> Result<u64, ReadError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            let bits = u64::from(b & 0x7f);
            if shift == 63 && bits > 1 {
                return Err(ReadError::Malformed);
            }
            v |= bits << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(ReadError::Malformed)
    }

    /// A varint that must fit `u32`.
    pub(crate) fn varint_u32(&mut self) -> Result<u32, ReadError> {
        u32::try_from(self.varint()?).map_err(|_| ReadError::Malformed)
    }

    /// A varint used as a length or count, at most `max`.
    pub(crate) fn len(&mut self, max: usize) -> Result<usize, ReadError> {
        let v = self.varint()?;
        usize::try_from(v)
            .ok()
            .filter(|&n| n <= max)
            .ok_or(ReadError::Malformed)
    }

    pub(crate) fn rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or_default()
    }
}
