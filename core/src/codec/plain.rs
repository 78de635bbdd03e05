//! The reference codec: the readings as a postcard sequence.

use super::{BlockCodec, DecodeError, EncodeError};
use crate::model::{Reading, ReadingSink};

/// Smallest postcard encoding of one reading: channel, time, value tag,
/// a one-byte value and quality, one byte each.
const MIN_READING_BYTES: usize = 5;
/// Largest postcard encoding of one reading.
const MAX_READING_BYTES: usize = 3 + 10 + 1 + 5 + 1;
/// Largest sequence-length prefix we write (a `u16` count as varint).
const MAX_PREFIX_BYTES: usize = 3;

/// Blocks as postcard of `&[Reading]`: a varint count, then each reading.
///
/// Simple and obviously correct, so it serves as the reference for the
/// compressed codec, and as a format any postcard implementation can read.
///
/// ```
/// use telemark_core::codec::{BlockCodec, PlainCodec};
/// use telemark_core::model::{ChannelId, Reading, Value};
/// use telemark_core::time::Instant;
///
/// let readings = [
///     Reading::new(ChannelId(1), Instant::from_millis(1000), Value::Scaled(2150)),
///     Reading::new(ChannelId(2), Instant::from_millis(1000), Value::Float(0.25)),
/// ];
/// let mut buf = [0u8; 64];
/// let n = PlainCodec.encode(&readings, &mut buf).unwrap();
///
/// let mut back: heapless::Vec<Reading, 4> = heapless::Vec::new();
/// assert_eq!(PlainCodec.decode(&buf[..n], &mut back), Ok(2));
/// assert_eq!(back.as_slice(), &readings);
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct PlainCodec;

impl BlockCodec for PlainCodec {
    type Estimate = usize;

    fn estimate(&self, estimate: &mut usize, reading: &Reading) -> usize {
        let mut scratch = [0u8; MAX_READING_BYTES];
        let len = postcard::to_slice(reading, &mut scratch).map_or(MAX_READING_BYTES, |b| b.len());
        if *estimate == 0 {
            *estimate = MAX_PREFIX_BYTES;
        }
        *estimate += len;
        *estimate
    }

    fn encode(&mut self, readings: &[Reading], out: &mut [u8]) -> Result<usize, EncodeError> {
        if readings.len() > usize::from(u16::MAX) {
            return Err(EncodeError::TooManyReadings);
        }
        postcard::to_slice(readings, out)
            .map(|b| b.len())
            .map_err(|_| EncodeError::BufferTooSmall)
    }

    fn decode(&self, block: &[u8], sink: &mut dyn ReadingSink) -> Result<usize, DecodeError> {
        let (count, mut rest) = postcard::take_from_bytes::<u32>(block).map_err(map_err)?;
        let count = count as usize;
        if count > rest.len() / MIN_READING_BYTES {
            return Err(DecodeError::BadCount);
        }
        for decoded in 0..count {
            let (reading, tail) = postcard::take_from_bytes::<Reading>(rest).map_err(map_err)?;
            rest = tail;
            sink.push_reading(reading)
                .map_err(|_| DecodeError::SinkFull { decoded })?;
        }
        if !rest.is_empty() {
            return Err(DecodeError::TrailingBytes);
        }
        Ok(count)
    }
}

fn map_err(e: postcard::Error) -> DecodeError {
    match e {
        postcard::Error::DeserializeUnexpectedEnd => DecodeError::Truncated,
        _ => DecodeError::Malformed,
    }
}
