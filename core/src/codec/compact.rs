//! The compact block codec: columns per channel, predicted and bit-packed,
//! with raw and lz4 fallbacks behind a one-byte mode tag.
//!
//! The full layout is specified in `docs/wire-format.md`. In short:
//!
//! - mode 0, raw: `varint n`, then `n` fixed 16-byte readings;
//! - mode 1, lz4: `varint raw_len`, then an lz4 block of a raw body;
//! - mode 2, columns: a header, the columns of each channel (timestamps,
//!   values, quality), an optional order column, a channel table, and the
//!   table's length as the last two bytes.
//!
//! The encoder picks columns unless they come out larger than raw (or the
//! block holds more than [`MAX_CHANNELS`] channels, or a channel changes its
//! value kind), so a block is never more than raw plus its header.

use super::bits::{width, zigzag, ByteReader, ByteWriter};
use super::columns::{self, int_of, kind_of, value_from, Unsuitable, MODE_COLUMNS};
use super::{BlockCodec, DecodeError, EncodeError};
use crate::model::{ChannelId, Quality, Reading, ReadingSink};
use crate::time::Instant;

pub use super::columns::MAX_CHANNELS;

/// Bytes of one reading in a raw block.
pub const RAW_READING_BYTES: usize = 16;

const MODE_RAW: u8 = 0;
const MODE_LZ4: u8 = 1;

fn varint_len(v: u64) -> usize {
    (width(v) as usize).div_ceil(7).max(1)
}

/// Bytes of a raw block of `n` readings: the most any block of `n` readings
/// takes.
pub fn raw_len(n: usize) -> usize {
    1 + varint_len(n as u64) + n * RAW_READING_BYTES
}

/// The compact codec. Stateless; see the module docs for the format.
///
/// ```
/// use telemark_core::codec::{BlockCodec, CompactCodec};
/// use telemark_core::model::{ChannelId, Reading, Value};
/// use telemark_core::time::Instant;
///
/// // Two channels sampled together every second for four minutes.
/// let readings: heapless::Vec<Reading, 480> = (0..240u64)
///     .flat_map(|s| {
///         let t = Instant::from_millis(1_700_000_000_000 + s * 1000);
///         [
///             Reading::new(ChannelId(1), t, Value::Scaled(2150 + (s % 7) as i32)),
///             Reading::new(ChannelId(2), t, Value::Counter(s as u32 / 10)),
///         ]
///     })
///     .collect();
/// let mut block = [0u8; 2048];
/// let n = CompactCodec.encode(&readings, &mut block).unwrap();
/// assert!(n < readings.len() / 2, "{n} bytes for {} readings", readings.len());
///
/// let mut back: heapless::Vec<Reading, 480> = heapless::Vec::new();
/// CompactCodec.decode(&block[..n], &mut back).unwrap();
/// assert_eq!(back, readings);
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct CompactCodec;

fn write_raw_body(readings: &[Reading], w: &mut ByteWriter<'_>) -> Result<(), EncodeError> {
    w.varint(readings.len() as u64)?;
    for r in readings {
        let t = r.time.as_millis().to_le_bytes();
        let c = r.channel.0.to_le_bytes();
        let v = (int_of(r.value) as u32).to_le_bytes();
        w.bytes(&[
            c[0],
            c[1],
            t[0],
            t[1],
            t[2],
            t[3],
            t[4],
            t[5],
            t[6],
            t[7],
            kind_of(r.value),
            v[0],
            v[1],
            v[2],
            v[3],
            r.quality.bits(),
        ])?;
    }
    Ok(())
}

fn decode_raw_body(body: &[u8], sink: &mut dyn ReadingSink) -> Result<usize, DecodeError> {
    let mut r = ByteReader::new(body);
    let n = r.len(r.remaining() / RAW_READING_BYTES)?;
    for decoded in 0..n {
        let b: [u8; RAW_READING_BYTES] = r.array()?;
        let reading = Reading {
            channel: ChannelId(u16::from_le_bytes([b[0], b[1]])),
            time: Instant::from_millis(u64::from_le_bytes([
                b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9],
            ])),
            value: value_from(b[10], u32::from_le_bytes([b[11], b[12], b[13], b[14]]))?,
            quality: Quality::from_bits(b[15]),
        };
        sink.push_reading(reading)
            .map_err(|_| DecodeError::SinkFull { decoded })?;
    }
    if r.remaining() != 0 {
        return Err(DecodeError::TrailingBytes);
    }
    Ok(n)
}

#[cfg(feature = "lz4")]
fn encode_lz4(readings: &[Reading], out: &mut [u8]) -> Option<usize> {
    let raw = raw_len(readings.len()) - 1;
    let split = out.len().checked_sub(raw)?;
    let (front, back) = out.split_at_mut(split);
    write_raw_body(readings, &mut ByteWriter::new(back)).ok()?;
    let mut w = ByteWriter::new(front);
    w.u8(MODE_LZ4).ok()?;
    w.varint(raw as u64).ok()?;
    let n = lz4_flex::block::compress_into(back, w.rest()).ok()?;
    let total = w.position() + n;
    (total < raw + 1).then_some(total)
}

impl BlockCodec for CompactCodec {
    type Estimate = Estimate;

    fn estimate(&self, estimate: &mut Estimate, reading: &Reading) -> usize {
        estimate.add(reading)
    }

    fn encode(&mut self, readings: &[Reading], out: &mut [u8]) -> Result<usize, EncodeError> {
        if readings.len() > usize::from(u16::MAX) {
            return Err(EncodeError::TooManyReadings);
        }
        let raw = raw_len(readings.len());
        match columns::encode(readings, out) {
            Ok(n) if n <= raw => return Ok(n),
            Err(Unsuitable::Encode(EncodeError::BufferTooSmall)) if out.len() < raw => {
                return Err(EncodeError::BufferTooSmall)
            }
            _ => {}
        }
        #[cfg(feature = "lz4")]
        if let Some(n) = encode_lz4(readings, out) {
            return Ok(n);
        }
        let mut w = ByteWriter::new(out);
        w.u8(MODE_RAW)?;
        write_raw_body(readings, &mut w)?;
        Ok(w.position())
    }

    fn decode(&self, block: &[u8], sink: &mut dyn ReadingSink) -> Result<usize, DecodeError> {
        let mut r = ByteReader::new(block);
        match r.u8()? {
            MODE_RAW => decode_raw_body(r.rest(), sink),
            MODE_COLUMNS => super::columns::decode(r.rest(), sink),
            MODE_LZ4 => decode_lz4(r.rest(), sink),
            _ => Err(DecodeError::Malformed),
        }
    }
}

#[cfg(all(feature = "lz4", feature = "std"))]
fn decode_lz4(body: &[u8], sink: &mut dyn ReadingSink) -> Result<usize, DecodeError> {
    let mut r = ByteReader::new(body);
    // A raw body of at most u16::MAX readings.
    let raw = r.len(raw_len(usize::from(u16::MAX)))?;
    let mut buf = std::vec![0u8; raw];
    let n =
        lz4_flex::block::decompress_into(r.rest(), &mut buf).map_err(|_| DecodeError::Malformed)?;
    if n != raw {
        return Err(DecodeError::Malformed);
    }
    decode_raw_body(&buf, sink)
}

#[cfg(not(all(feature = "lz4", feature = "std")))]
fn decode_lz4(_: &[u8], _: &mut dyn ReadingSink) -> Result<usize, DecodeError> {
    Err(DecodeError::Unsupported)
}

/// The stager's running estimate of a compact block's size: an upper
/// bound in practice, from per-channel deltas.
#[derive(Clone, Debug, Default)]
pub struct Estimate {
    channels: heapless::Vec<(ChannelId, i32, u64, u64), MAX_CHANNELS>,
    bits: u64,
    readings: usize,
    overflow: bool,
}

impl Estimate {
    fn add(&mut self, r: &Reading) -> usize {
        self.readings += 1;
        let v = int_of(r.value);
        let t = r.time.as_millis();
        match self.channels.iter_mut().find(|c| c.0 == r.channel) {
            Some((_, last_v, last_t, last_dt)) => {
                let dt = t.wrapping_sub(*last_t);
                let dod = dt.wrapping_sub(*last_dt);
                self.bits += 3 + u64::from(width(zigzag(i64::from(v.wrapping_sub(*last_v)))));
                if dod != 0 {
                    self.bits += 2 + u64::from(width(zigzag(dod as i64)));
                }
                (*last_v, *last_t, *last_dt) = (v, t, dt);
            }
            None => {
                // Table entry, column headers, first value and time.
                self.bits += 8 * 24;
                self.overflow |= self.channels.push((r.channel, v, t, 0)).is_err();
            }
        }
        if !r.quality.is_good() {
            self.bits += 8;
        }
        let columns = 24 + (self.bits / 8) as usize * 9 / 8;
        let raw = raw_len(self.readings);
        if self.overflow {
            raw
        } else {
            columns.min(raw)
        }
    }
}
