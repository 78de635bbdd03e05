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

use super::bits::{width, zigzag};
use super::columns::{self, Unsuitable, MODE_COLUMNS};
use super::{BlockCodec, DecodeError, EncodeError};
use crate::bytes::{ByteReader, ByteWriter};
use crate::model::{ChannelId, Quality, Reading, ReadingSink, Value};
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
        let v = r.value.bits().to_le_bytes();
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
            r.value.kind_code(),
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
            value: Value::from_code(b[10], u32::from_le_bytes([b[11], b[12], b[13], b[14]]))
                .ok_or(DecodeError::Malformed)?,
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

/// [`CompactCodec`]'s format, written with one coding per column instead of
/// the cheapest: values predicted from the previous value, timestamps by
/// delta-of-delta or by a clock that fits them exactly, all bit-packed in
/// groups of 8. Its blocks decode with either codec, byte for byte the same
/// readings.
///
/// It is the encoder of the device profile
/// ([`profile::Device`](crate::profile::Device)): it leaves out the search
/// over three predictors, three group sizes and a fitted clock, most of
/// [`CompactCodec`]'s flash, for a few percent more bytes a reading (see
/// `docs/footprint.md` for the figures on the recordings).
///
/// ```
/// use telemark_core::codec::{BlockCodec, CompactCodec, DeviceCodec};
/// use telemark_core::model::{ChannelId, Reading, Value};
/// use telemark_core::time::Instant;
///
/// // A temperature drifting up by a tenth of a degree now and then,
/// // sampled every second for four minutes.
/// let readings: heapless::Vec<Reading, 240> = (0..240u64)
///     .map(|s| {
///         let t = Instant::from_millis(1_700_000_000_000 + s * 1000);
///         Reading::new(ChannelId(1), t, Value::Scaled(2150 + (s * s / 900) as i32))
///     })
///     .collect();
/// let mut block = [0u8; 1024];
/// let n = DeviceCodec.encode(&readings, &mut block).unwrap();
/// let full = CompactCodec.encode(&readings, &mut [0u8; 1024]).unwrap();
/// assert!(n < readings.len() / 2, "{n} bytes for {} readings", readings.len());
/// assert!(n <= full + full / 10, "{n} bytes, the full encoder {full}");
///
/// let mut back: heapless::Vec<Reading, 240> = heapless::Vec::new();
/// CompactCodec.decode(&block[..n], &mut back).unwrap();
/// assert_eq!(back, readings);
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct DeviceCodec;

/// Encodes a block in column mode, searched or fixed, falling back to lz4
/// (with the `lz4` feature) or raw where columns do not pay.
fn encode_block<const SEARCH: bool>(
    readings: &[Reading],
    out: &mut [u8],
) -> Result<usize, EncodeError> {
    if readings.len() > usize::from(u16::MAX) {
        return Err(EncodeError::TooManyReadings);
    }
    let raw = raw_len(readings.len());
    match columns::encode::<SEARCH>(readings, out) {
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

// Out of line, so that a caller that decodes and then encodes (offline
// degradation) holds the decoder's state and the encoder's scratch one
// after the other on the stack, never both.
#[inline(never)]
fn decode_block(block: &[u8], sink: &mut dyn ReadingSink) -> Result<usize, DecodeError> {
    let mut r = ByteReader::new(block);
    match r.u8()? {
        MODE_RAW => decode_raw_body(r.rest(), sink),
        MODE_COLUMNS => super::columns::decode(r.rest(), sink),
        MODE_LZ4 => decode_lz4(r.rest(), sink, usize::from(u16::MAX)),
        _ => Err(DecodeError::Malformed),
    }
}

impl BlockCodec for CompactCodec {
    type Estimate = Estimate;

    fn estimate(&self, estimate: &mut Estimate, reading: &Reading) -> usize {
        estimate.add(reading)
    }

    fn encode(&mut self, readings: &[Reading], out: &mut [u8]) -> Result<usize, EncodeError> {
        encode_block::<true>(readings, out)
    }

    fn decode(&self, block: &[u8], sink: &mut dyn ReadingSink) -> Result<usize, DecodeError> {
        decode_block(block, sink)
    }
}

impl BlockCodec for DeviceCodec {
    type Estimate = Estimate;

    fn estimate(&self, estimate: &mut Estimate, reading: &Reading) -> usize {
        estimate.add(reading)
    }

    fn encode(&mut self, readings: &[Reading], out: &mut [u8]) -> Result<usize, EncodeError> {
        encode_block::<false>(readings, out)
    }

    fn decode(&self, block: &[u8], sink: &mut dyn ReadingSink) -> Result<usize, DecodeError> {
        decode_block(block, sink)
    }
}

/// A sink that takes at most `left` readings.
struct AtMost<'s> {
    sink: &'s mut dyn ReadingSink,
    left: usize,
    over: bool,
}

impl ReadingSink for AtMost<'_> {
    fn push_reading(&mut self, reading: Reading) -> Result<(), Reading> {
        if self.left == 0 {
            self.over = true;
            return Err(reading);
        }
        self.left -= 1;
        self.sink.push_reading(reading)
    }
}

impl CompactCodec {
    /// Decodes a block that may hold at most `max` readings, as a server
    /// decodes what a device declared: a block holding more is refused
    /// with [`DecodeError::BadCount`] after at most `max` readings of work
    /// (an lz4 block before it is decompressed), so a few bytes never
    /// expand into millions of rows.
    pub fn decode_at_most(
        &self,
        block: &[u8],
        max: usize,
        sink: &mut dyn ReadingSink,
    ) -> Result<usize, DecodeError> {
        let mut bounded = AtMost {
            sink,
            left: max,
            over: false,
        };
        let mut r = ByteReader::new(block);
        let result = match r.u8()? {
            MODE_RAW => decode_raw_body(r.rest(), &mut bounded),
            MODE_COLUMNS => super::columns::decode(r.rest(), &mut bounded),
            MODE_LZ4 => decode_lz4(r.rest(), &mut bounded, max),
            _ => Err(DecodeError::Malformed),
        };
        match result {
            Err(DecodeError::SinkFull { .. }) if bounded.over => Err(DecodeError::BadCount),
            other => other,
        }
    }
}

#[cfg(all(feature = "lz4", feature = "std"))]
fn decode_lz4(body: &[u8], sink: &mut dyn ReadingSink, max: usize) -> Result<usize, DecodeError> {
    let mut r = ByteReader::new(body);
    // A raw body of at most `max` readings: never a buffer larger than
    // what the caller allows.
    let raw = r
        .len(raw_len(max.min(usize::from(u16::MAX))))
        .map_err(|_| DecodeError::BadCount)?;
    let mut buf = std::vec![0u8; raw];
    let n =
        lz4_flex::block::decompress_into(r.rest(), &mut buf).map_err(|_| DecodeError::Malformed)?;
    if n != raw {
        return Err(DecodeError::Malformed);
    }
    decode_raw_body(&buf, sink)
}

#[cfg(not(all(feature = "lz4", feature = "std")))]
fn decode_lz4(_: &[u8], _: &mut dyn ReadingSink, _: usize) -> Result<usize, DecodeError> {
    Err(DecodeError::Unsupported)
}

/// The stager's running estimate of a compact block's size.
///
/// It prices each channel's values with the delta predictor and its
/// timestamps with delta-of-delta, both in groups of 8, plus generous
/// headers: one of the options the encoder weighs, so the block it writes is
/// no larger.
#[derive(Clone, Debug, Default)]
pub struct Estimate {
    channels: heapless::Vec<ChannelEstimate, MAX_CHANNELS>,
    readings: usize,
    overflow: bool,
}

#[derive(Clone, Copy, Debug)]
struct ChannelEstimate {
    id: ChannelId,
    first: i32,
    value: i32,
    time: u64,
    delta: u64,
    values: GroupEstimate,
    times: GroupEstimate,
    quality_bits: u32,
}

/// Bits of a packed stream in groups of 8, as [`super::pack`] writes it.
#[derive(Clone, Copy, Debug, Default)]
struct GroupEstimate {
    or: u64,
    fill: u8,
    bits: u32,
}

impl GroupEstimate {
    fn push(&mut self, v: u64) {
        self.or |= v;
        self.fill += 1;
        if self.fill == 8 {
            self.bits += self.cost();
            (self.or, self.fill) = (0, 0);
        }
    }

    /// Bits of the open group: a header and its values at their width; a
    /// group of zeros joins a run, whose header is shared by many groups.
    fn cost(&self) -> u32 {
        match (self.fill, self.or) {
            (0, _) => 0,
            (_, 0) => 2,
            (fill, or) => 6 + width(or).min(64) * u32::from(fill),
        }
    }

    fn total(&self) -> u32 {
        self.bits + self.cost()
    }
}

/// Bytes of a block's header (base time included) and table length.
const BLOCK_HEADER: usize = 16;
/// Bytes of a channel's table entry and value-column header, besides its
/// first value; and of a timestamp column's header.
const CHANNEL_HEADER: usize = 8;
const TIME_HEADER: usize = 6;

impl Estimate {
    fn add(&mut self, r: &Reading) -> usize {
        self.readings += 1;
        let v = r.value.bits() as i32;
        let t = r.time.as_millis();
        // Channels sampled with the first share its timestamps.
        let leader_time = self.channels.first().map(|c| c.time);
        let leader = self.channels.first().is_some_and(|c| c.id == r.channel);
        match self.channels.iter_mut().find(|c| c.id == r.channel) {
            Some(c) => {
                let dt = t.wrapping_sub(c.time);
                c.values.push(zigzag(i64::from(v.wrapping_sub(c.value))));
                if leader || leader_time != Some(t) {
                    c.times.push(zigzag(dt.wrapping_sub(c.delta) as i64));
                }
                (c.value, c.time, c.delta) = (v, t, dt);
                c.quality_bits += if r.quality.is_good() { 0 } else { 8 };
            }
            None => {
                self.overflow |= self
                    .channels
                    .push(ChannelEstimate {
                        id: r.channel,
                        first: v,
                        value: v,
                        time: t,
                        delta: 0,
                        values: GroupEstimate::default(),
                        times: GroupEstimate::default(),
                        quality_bits: 0,
                    })
                    .is_err();
            }
        }
        let raw = raw_len(self.readings);
        if self.overflow {
            return raw;
        }
        let mut bytes = BLOCK_HEADER + TIME_HEADER;
        let mut bits = 0u32;
        for c in &self.channels {
            bytes += CHANNEL_HEADER + varint_len(zigzag(i64::from(c.first)));
            bits += c.values.total() + c.times.total() + c.quality_bits;
        }
        let columns = bytes + (bits as usize).div_ceil(8);
        columns.min(raw)
    }
}
