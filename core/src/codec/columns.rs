//! Column mode: each channel's timestamps, values and quality flags as
//! separate, predicted and bit-packed columns.
//!
//! | part | encoding |
//! | --- | --- |
//! | header | mode byte 2, varint readings `n`, varint base time, u8 flags (bit 0: explicit order), varint channels `C` |
//! | columns | per channel in table order: time column (unless shared), value column, quality column (if flagged) |
//! | order | if explicit: each reading's channel index, `ceil(log2 C)` bits each |
//! | table | per channel: varint id, u8 descriptor, varint count, time (varint length, or varint channel index + varint offset when shared), varint value length, varint quality length (if flagged); then varint order length (if explicit) |
//! | table length | u16 little endian: bytes of the table |
//!
//! Descriptor: value kind in bits 0-1 (0 scaled, 1 float, 2 bool,
//! 3 counter), bit 2 quality column present, bit 3 timestamps shared.
//!
//! Readings come back in arrival order: by default the order is the merge of
//! the channels by (time, table position), which the encoder checks holds;
//! otherwise an explicit order column says which channel comes next.

use super::bits::{width, BitReader, BitWriter};
use super::pack::{PackCost, PackReader, PackWriter};
use super::timestamps::{self, TimeCursor};
use super::values::{self, FloatCursor, IntCursor};
use super::{DecodeError, EncodeError};
use crate::bytes::{ByteReader, ByteWriter};
use crate::model::{ChannelId, Quality, Reading, ReadingSink, Value};
use crate::time::Instant;

/// Most channels a column-mode block holds; blocks with more fall back to
/// lz4 or raw. 15 keeps the decoder's state (128 bytes a channel on a
/// 32-bit target) within 2 KiB.
pub const MAX_CHANNELS: usize = 15;

pub(crate) const MODE_COLUMNS: u8 = 2;
const FLAG_EXPLICIT_ORDER: u8 = 1;
const DESC_QUALITY: u8 = 1 << 2;
const DESC_TIME_REF: u8 = 1 << 3;

#[derive(Clone, Copy, Debug)]
struct Chan {
    id: ChannelId,
    kind: u8,
    count: u16,
    quality: bool,
}

/// Why column mode cannot take a batch.
pub(crate) enum Unsuitable {
    TooManyChannels,
    MixedKinds,
    Encode(EncodeError),
}

impl From<EncodeError> for Unsuitable {
    fn from(e: EncodeError) -> Self {
        Unsuitable::Encode(e)
    }
}

impl From<crate::bytes::Overflow> for Unsuitable {
    fn from(_: crate::bytes::Overflow) -> Self {
        Unsuitable::Encode(EncodeError::BufferTooSmall)
    }
}

type Table = heapless::Vec<Chan, MAX_CHANNELS>;

/// Finds `id` in `table`, trying the entry after `guess` and `guess` itself
/// first: sensors emit their channels in a fixed cycle. Updates `guess`.
#[inline]
fn find(table: &Table, id: ChannelId, guess: &mut usize) -> Option<usize> {
    let next = if *guess + 1 < table.len() {
        *guess + 1
    } else {
        0
    };
    let found = if table.get(next).is_some_and(|c| c.id == id) {
        Some(next)
    } else if table.get(*guess).is_some_and(|c| c.id == id) {
        Some(*guess)
    } else {
        table.iter().position(|c| c.id == id)
    };
    if let Some(i) = found {
        *guess = i;
    }
    found
}

/// The channels of a batch, in merge order, and whether the batch's times
/// strictly increase.
fn build_table(readings: &[Reading]) -> Result<(Table, bool), Unsuitable> {
    let mut table = Table::new();
    let mut guess = 0;
    // The largest run of readings sharing a timestamp: (start, length).
    let (mut best, mut start, mut run_time) = ((0, 0), 0, None);
    let mut increasing = true;
    for (i, r) in readings.iter().enumerate() {
        increasing &= run_time.is_none_or(|t| t < r.time);
        if run_time != Some(r.time) {
            start = i;
            run_time = Some(r.time);
        }
        if i + 1 - start > best.1 {
            best = (start, i + 1 - start);
        }
        let found = find(&table, r.channel, &mut guess);
        match found.and_then(|i| table.get_mut(i)) {
            Some(c) => {
                if c.kind != r.value.kind_code() {
                    return Err(Unsuitable::MixedKinds);
                }
                c.count += 1;
                c.quality |= !r.quality.is_good();
            }
            None => table
                .push(Chan {
                    id: r.channel,
                    kind: r.value.kind_code(),
                    count: 1,
                    quality: !r.quality.is_good(),
                })
                .map_err(|_| Unsuitable::TooManyChannels)?,
        }
    }
    // Order channels as they appear in the largest group of readings that
    // share a timestamp, so that merging by (time, order) restores arrival
    // order without an order column.
    let mut ordered = Table::new();
    let row = readings.get(best.0..best.0 + best.1).unwrap_or_default();
    for id in row
        .iter()
        .map(|r| r.channel)
        .chain(readings.iter().map(|r| r.channel))
    {
        if ordered.len() == table.len() {
            break;
        }
        if !ordered.iter().any(|c| c.id == id) {
            if let Some(c) = table.iter().find(|c| c.id == id) {
                let _ = ordered.push(*c);
            }
        }
    }
    Ok((ordered, increasing))
}

fn rank(table: &Table, id: ChannelId) -> usize {
    table
        .iter()
        .position(|c| c.id == id)
        .unwrap_or(MAX_CHANNELS)
}

/// True if arrival order is the merge of the channels by (time, rank).
fn canonical_scan(table: &Table, readings: &[Reading]) -> bool {
    readings.windows(2).all(|w| match w {
        [a, b] => (a.time, rank(table, a.channel)) < (b.time, rank(table, b.channel)),
        _ => true,
    })
}

/// Batches up to this size are indexed by channel before encoding (2 KiB
/// of stack); larger ones are scanned once per channel instead.
#[cfg(not(feature = "small"))]
const INDEXED: usize = 1024;
/// Columns up to this length are gathered into a stack buffer (2 KiB for
/// timestamps, 1 KiB for values, one at a time) and planned from there.
#[cfg(not(feature = "small"))]
const GATHER: usize = 256;
/// With `small`, for parts with a few KiB of RAM: 256 bytes of index
/// and 768 bytes of column. Columns of up to 64 values encode byte for byte
/// as without it; longer ones are planned by re-reading the batch (slower)
/// and fit their clock on their first 64 times.
#[cfg(feature = "small")]
const INDEXED: usize = 128;
#[cfg(feature = "small")]
const GATHER: usize = 64;

/// The readings of each channel, without scanning the batch per channel.
struct ByChannel<'r> {
    readings: &'r [Reading],
    ids: [ChannelId; MAX_CHANNELS],
    /// Reading indices grouped by channel, and where each group starts.
    index: [u16; INDEXED],
    starts: [u16; MAX_CHANNELS + 1],
    indexed: bool,
    /// Arrival order is the merge of the channels by (time, rank).
    canonical: bool,
}

impl<'r> ByChannel<'r> {
    fn new(readings: &'r [Reading], table: &Table, increasing: bool) -> Self {
        let single = table.len() == 1;
        let mut by = ByChannel {
            readings,
            ids: [ChannelId(0); MAX_CHANNELS],
            index: [0; INDEXED],
            starts: [0; MAX_CHANNELS + 1],
            // One channel needs no index: its readings are all of them.
            indexed: !single && readings.len() <= INDEXED,
            canonical: true,
        };
        for (slot, chan) in by.ids.iter_mut().zip(table) {
            *slot = chan.id;
        }
        if by.indexed {
            let mut next = [0u16; MAX_CHANNELS];
            let mut at = 0u16;
            for (c, chan) in table.iter().enumerate() {
                if let (Some(s), Some(n)) = (by.starts.get_mut(c), next.get_mut(c)) {
                    (*s, *n) = (at, at);
                }
                at += chan.count;
            }
            if let Some(end) = by.starts.get_mut(table.len()) {
                *end = at;
            }
            let (mut guess, mut prev) = (0, None);
            for (i, r) in readings.iter().enumerate() {
                let c = find(table, r.channel, &mut guess).unwrap_or(MAX_CHANNELS);
                let key = (r.time, c);
                by.canonical &= prev.is_none_or(|p| p < key);
                prev = Some(key);
                if let Some(n) = next.get_mut(c) {
                    if let Some(slot) = by.index.get_mut(usize::from(*n)) {
                        *slot = i as u16;
                    }
                    *n += 1;
                }
            }
        } else {
            // With one channel, the merge is arrival order if times increase.
            by.canonical = if single {
                increasing
            } else {
                canonical_scan(table, readings)
            };
        }
        by
    }

    /// The readings of the channel at table position `c`, in arrival order.
    fn of(&self, c: usize) -> ChannelReadings<'_> {
        let id = self.ids.get(c).copied().unwrap_or_default();
        if self.indexed {
            let (start, end) = (self.starts.get(c).copied(), self.starts.get(c + 1).copied());
            let idx = match (start, end) {
                (Some(s), Some(e)) => self
                    .index
                    .get(usize::from(s)..usize::from(e))
                    .unwrap_or_default(),
                _ => &[],
            };
            ChannelReadings::Indexed(self.readings, idx.iter())
        } else {
            ChannelReadings::Scan(self.readings.iter(), id)
        }
    }

    fn times(&self, c: usize) -> impl Iterator<Item = u64> + Clone + '_ {
        self.of(c).map(|r| r.time.as_millis())
    }
}

#[derive(Clone)]
enum ChannelReadings<'a> {
    Indexed(&'a [Reading], core::slice::Iter<'a, u16>),
    Scan(core::slice::Iter<'a, Reading>, ChannelId),
}

impl<'a> Iterator for ChannelReadings<'a> {
    type Item = &'a Reading;

    #[inline]
    fn next(&mut self) -> Option<&'a Reading> {
        match self {
            ChannelReadings::Indexed(readings, idx) => {
                idx.next().and_then(|&i| readings.get(usize::from(i)))
            }
            ChannelReadings::Scan(it, id) => it.find(|r| r.channel == *id),
        }
    }
}

/// A channel's timestamp column: its own, or a run of an earlier channel's.
#[derive(Clone, Copy, Debug)]
enum TimeColumn {
    /// Its own column of this many bytes.
    Own(usize),
    /// The earlier channel's times from this offset on.
    Shared(usize, usize),
}

impl Default for TimeColumn {
    fn default() -> Self {
        TimeColumn::Own(0)
    }
}

/// The columns written for one channel.
#[derive(Clone, Copy, Debug, Default)]
struct Written {
    time: TimeColumn,
    value: usize,
    quality: usize,
}

/// An earlier channel with its own timestamps that contain this channel's
/// as a run; `earlier` holds what was written for the channels before `c`.
/// Only the earlier channel with the most readings is tried: in the common
/// case every channel is sampled with the first.
fn find_time_ref(
    by: &ByChannel<'_>,
    table: &Table,
    earlier: &[Written],
    c: usize,
) -> Option<(usize, usize)> {
    let me = table.get(c)?;
    let (r, other) = table
        .iter()
        .enumerate()
        .take(c)
        .filter(|(r, _)| matches!(earlier.get(*r).map(|w| w.time), Some(TimeColumn::Own(_))))
        .max_by_key(|(r, ch)| (ch.count, core::cmp::Reverse(*r)))?;
    if other.count < me.count {
        return None;
    }
    let first = by.times(c).next()?;
    let offset = by.times(r).position(|t| t == first)?;
    let fits = offset + usize::from(me.count) <= usize::from(other.count);
    let same = fits
        && by
            .times(r)
            .skip(offset)
            .take(usize::from(me.count))
            .eq(by.times(c));
    same.then_some((r, offset))
}

/// Writes `readings` in column mode, mode byte included. With `SEARCH`,
/// each column is written in the cheapest of the codings the format has;
/// without it, in one coding fixed per column type (see
/// [`DeviceCodec`](super::DeviceCodec)).
pub(crate) fn encode<const SEARCH: bool>(
    readings: &[Reading],
    out: &mut [u8],
) -> Result<usize, Unsuitable> {
    let (table, increasing) = build_table(readings)?;
    let by = ByChannel::new(readings, &table, increasing);
    let explicit = !by.canonical;
    let base = readings.first().map_or(0, |r| r.time.as_millis());
    let mut w = ByteWriter::new(out);
    w.u8(MODE_COLUMNS)?;
    w.varint(readings.len() as u64)?;
    w.varint(base)?;
    w.u8(if explicit { FLAG_EXPLICIT_ORDER } else { 0 })?;
    w.varint(table.len() as u64)?;

    // Where each channel's columns went, for the table at the end.
    let mut written = [Written::default(); MAX_CHANNELS];
    // Scratch for one channel's column at a time.
    let mut gathered_times = [0u64; GATHER];
    let mut gathered_values = [0i32; GATHER];
    for (c, chan) in table.iter().enumerate() {
        let time = match find_time_ref(&by, &table, written.get(..c).unwrap_or_default(), c) {
            Some((r, offset)) => TimeColumn::Shared(r, offset),
            None => {
                let count = usize::from(chan.count);
                // The clock is fitted on the first times; longer columns
                // are checked against it in full.
                for (slot, t) in gathered_times.iter_mut().zip(by.times(c)) {
                    *slot = t;
                }
                let prefix = gathered_times.get(..count.min(GATHER)).unwrap_or_default();
                let len = if SEARCH {
                    write_times(&by, c, count, prefix, base, w.rest())?
                } else {
                    let plan = timestamps::plan_fixed(|| by.times(c), prefix);
                    timestamps::write(&plan, base, by.times(c), w.rest())?
                };
                w.advance(len);
                TimeColumn::Own(len)
            }
        };
        let of_channel = || by.of(c);
        let value = if chan.kind == 1 {
            let floats = of_channel().map(|r| f32::from_bits(r.value.bits()));
            values::write_float(floats, w.rest())?
        } else {
            // A column that fits is gathered once and planned and written
            // from the slice; a longer one from the batch.
            let gathered = usize::from(chan.count) <= GATHER;
            let mut factor = values::CommonFactor::default();
            if gathered {
                for (slot, r) in gathered_values.iter_mut().zip(of_channel()) {
                    *slot = r.value.bits() as i32;
                    factor.push(*slot);
                }
            }
            let col = gathered_values
                .get(..usize::from(chan.count).min(GATHER))
                .unwrap_or_default();
            let factor = gathered.then(|| factor.factor());
            let ints = || of_channel().map(|r| r.value.bits() as i32);
            if SEARCH {
                write_ints(col, ints, factor, w.rest())?
            } else {
                let factor = factor.unwrap_or_else(|| values::common_factor(ints()));
                values::write_int(&values::IntPlan::fixed(ints(), factor), ints(), w.rest())?
            }
        };
        w.advance(value);
        let mut quality = 0;
        if chan.quality {
            quality = write_quality::<SEARCH>(of_channel().map(|r| r.quality), w.rest())?;
            w.advance(quality);
        }
        if let Some(slot) = written.get_mut(c) {
            *slot = Written {
                time,
                value,
                quality,
            };
        }
    }
    let mut order_len = 0;
    if explicit {
        let bits_per = width(table.len().saturating_sub(1) as u64);
        let mut bits = BitWriter::new(w.rest());
        for r in readings {
            bits.bits(rank(&table, r.channel) as u64, bits_per)?;
        }
        order_len = bits.finish()?;
        w.advance(order_len);
    }

    let table_start = w.position();
    for (chan, cols) in table.iter().zip(written) {
        let shared = matches!(cols.time, TimeColumn::Shared(..));
        let desc = chan.kind
            | if chan.quality { DESC_QUALITY } else { 0 }
            | if shared { DESC_TIME_REF } else { 0 };
        w.varint(u64::from(chan.id.0))?;
        w.u8(desc)?;
        w.varint(u64::from(chan.count))?;
        match cols.time {
            TimeColumn::Shared(r, offset) => {
                w.varint(r as u64)?;
                w.varint(offset as u64)?;
            }
            TimeColumn::Own(len) => w.varint(len as u64)?,
        }
        w.varint(cols.value as u64)?;
        if chan.quality {
            w.varint(cols.quality as u64)?;
        }
    }
    if explicit {
        w.varint(order_len as u64)?;
    }
    let table_len =
        u16::try_from(w.position() - table_start).map_err(|_| EncodeError::BufferTooSmall)?;
    w.bytes(&table_len.to_le_bytes())?;
    Ok(w.position())
}

/// Writes a quality column: in its cheapest group size with `SEARCH`, in
/// groups of 8 without.
fn write_quality<const SEARCH: bool>(
    q: impl Iterator<Item = Quality> + Clone,
    out: &mut [u8],
) -> Result<usize, EncodeError> {
    let group = if SEARCH {
        let mut cost = PackCost::default();
        q.clone().for_each(|q| cost.push(u64::from(q.bits())));
        cost.best().0
    } else {
        0
    };
    let mut head = ByteWriter::new(out);
    head.u8(group)?;
    let mut bits = BitWriter::new(head.rest());
    let mut pack = PackWriter::new(group);
    for q in q {
        pack.push(&mut bits, u64::from(q.bits()))?;
    }
    pack.finish(&mut bits)?;
    Ok(1 + bits.finish()?)
}

/// Reads a quality column.
#[derive(Clone, Debug)]
struct QualityCursor<'a> {
    bits: BitReader<'a>,
    pack: PackReader,
}

impl<'a> QualityCursor<'a> {
    fn new(column: &'a [u8], count: u16) -> Result<Self, DecodeError> {
        let mut r = ByteReader::new(column);
        let group = r.u8()?;
        Ok(QualityCursor {
            pack: PackReader::new(group, count)?,
            bits: BitReader::new(r.rest()),
        })
    }

    fn next(&mut self) -> Result<Quality, DecodeError> {
        let q = self.pack.next(&mut self.bits)?;
        u8::try_from(q)
            .map(Quality::from_bits)
            .map_err(|_| DecodeError::Malformed)
    }
}

/// Keeps the value cursors of one channel.
#[derive(Clone, Debug)]
enum ValueCursor<'a> {
    Int(IntCursor<'a>),
    Float(FloatCursor<'a>),
}

impl ValueCursor<'_> {
    fn next(&mut self, kind: u8) -> Result<Value, DecodeError> {
        match self {
            ValueCursor::Int(c) => {
                Value::from_code(kind, c.next()? as u32).ok_or(DecodeError::Malformed)
            }
            ValueCursor::Float(c) => Ok(Value::Float(c.next()?)),
        }
    }
}

/// One channel being decoded.
#[derive(Clone, Debug)]
struct ChannelCursor<'a> {
    id: ChannelId,
    kind: u8,
    left: u16,
    /// The next timestamp, read ahead for the merge.
    next_time: u64,
    time: TimeCursor<'a>,
    value: ValueCursor<'a>,
    quality: Option<QualityCursor<'a>>,
}

impl ChannelCursor<'_> {
    fn next(&mut self) -> Result<Reading, DecodeError> {
        let time = self.next_time;
        self.left = self.left.checked_sub(1).ok_or(DecodeError::Malformed)?;
        if self.left > 0 {
            self.next_time = self.time.next()?;
        }
        Ok(Reading {
            channel: self.id,
            time: Instant::from_millis(time),
            value: self.value.next(self.kind)?,
            quality: match &mut self.quality {
                Some(q) => q.next()?,
                None => Quality::GOOD,
            },
        })
    }
}

/// Everything the column decoder keeps while it streams a block out.
pub(crate) struct ColumnDecoder<'a> {
    channels: heapless::Vec<ChannelCursor<'a>, MAX_CHANNELS>,
    order: Option<(BitReader<'a>, u32)>,
    left: u16,
}

// The decoder's state must stay within 2 KiB on a microcontroller.
#[cfg(target_pointer_width = "32")]
const _: () = assert!(core::mem::size_of::<ColumnDecoder<'static>>() <= 2048);

impl<'a> ColumnDecoder<'a> {
    /// Parses and checks the header and table of a block (mode byte excluded).
    pub(crate) fn new(body: &'a [u8]) -> Result<Self, DecodeError> {
        let mut r = ByteReader::new(body);
        let n = r.len(usize::from(u16::MAX))? as u16;
        let base = r.varint()?;
        let flags = r.u8()?;
        if flags & !FLAG_EXPLICIT_ORDER != 0 {
            return Err(DecodeError::Malformed);
        }
        let c = r.len(MAX_CHANNELS)?;
        if (c == 0) != (n == 0) {
            return Err(DecodeError::Malformed);
        }
        let rest = r.rest();
        let split = rest.len().checked_sub(2).ok_or(DecodeError::Truncated)?;
        let (front, tail) = rest.split_at(split);
        let table_len = usize::from(u16::from_le_bytes(
            tail.try_into().map_err(|_| DecodeError::Truncated)?,
        ));
        let cut = front
            .len()
            .checked_sub(table_len)
            .ok_or(DecodeError::Malformed)?;
        let (columns, table) = front.split_at(cut);
        let mut t = ByteReader::new(table);
        let mut cols = ByteReader::new(columns);

        let mut channels: heapless::Vec<ChannelCursor<'a>, MAX_CHANNELS> = heapless::Vec::new();
        let mut own_time = [false; MAX_CHANNELS];
        let mut total = 0u32;
        for i in 0..c {
            let id = ChannelId(u16::try_from(t.varint()?).map_err(|_| DecodeError::Malformed)?);
            if channels.iter().any(|ch| ch.id == id) {
                return Err(DecodeError::Malformed);
            }
            let desc = t.u8()?;
            if desc & !(3 | DESC_QUALITY | DESC_TIME_REF) != 0 {
                return Err(DecodeError::Malformed);
            }
            let kind = desc & 3;
            let count = t.len(usize::from(n))? as u16;
            total += u32::from(count);
            if count == 0 || total > u32::from(n) {
                return Err(DecodeError::BadCount);
            }
            let (time, next_time) = if desc & DESC_TIME_REF != 0 {
                let target = t.len(i)?;
                let offset = t.len(usize::from(n))?;
                let shared = channels
                    .get(target)
                    .filter(|_| own_time.get(target) == Some(&true));
                let shared = shared.ok_or(DecodeError::Malformed)?;
                if offset + usize::from(count) > usize::from(shared.left) {
                    return Err(DecodeError::Malformed);
                }
                // The shared cursor has read only its first time, kept in
                // `next_time`; copy it and skip ahead to `offset`.
                let mut time = shared.time.clone();
                let mut first = shared.next_time;
                for _ in 0..offset {
                    first = time.next()?;
                }
                (time, first)
            } else {
                if let Some(own) = own_time.get_mut(i) {
                    *own = true;
                }
                let len = t.len(cols.remaining())?;
                let mut time = TimeCursor::new(cols.take(len)?, base, count)?;
                let first = time.next()?;
                (time, first)
            };
            let len = t.len(cols.remaining())?;
            let bytes = cols.take(len)?;
            let value = if kind == 1 {
                ValueCursor::Float(FloatCursor::new(bytes)?)
            } else {
                ValueCursor::Int(IntCursor::new(bytes, count)?)
            };
            let quality = if desc & DESC_QUALITY != 0 {
                let len = t.len(cols.remaining())?;
                Some(QualityCursor::new(cols.take(len)?, count)?)
            } else {
                None
            };
            channels
                .push(ChannelCursor {
                    id,
                    kind,
                    left: count,
                    next_time,
                    time,
                    value,
                    quality,
                })
                .map_err(|_| DecodeError::Malformed)?;
        }
        if total != u32::from(n) {
            return Err(DecodeError::BadCount);
        }
        let order = if flags & FLAG_EXPLICIT_ORDER != 0 {
            let len = t.len(cols.remaining())?;
            Some((
                BitReader::new(cols.take(len)?),
                width(c.saturating_sub(1) as u64),
            ))
        } else {
            None
        };
        if t.remaining() != 0 || cols.remaining() != 0 {
            return Err(DecodeError::TrailingBytes);
        }
        Ok(ColumnDecoder {
            channels,
            order,
            left: n,
        })
    }

    /// The next reading in arrival order, or `None` at the end.
    pub(crate) fn next(&mut self) -> Result<Option<Reading>, DecodeError> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        let index = match &mut self.order {
            Some((bits, w)) => bits.bits(*w)? as usize,
            None => self
                .channels
                .iter()
                .enumerate()
                .filter(|(_, c)| c.left > 0)
                .min_by_key(|(i, c)| (c.next_time, *i))
                .map(|(i, _)| i)
                .ok_or(DecodeError::Malformed)?,
        };
        let channel = self.channels.get_mut(index).ok_or(DecodeError::Malformed)?;
        channel.next().map(Some)
    }
}

/// Decodes a column-mode block (mode byte excluded) into `sink`.
pub(crate) fn decode(body: &[u8], sink: &mut dyn ReadingSink) -> Result<usize, DecodeError> {
    let mut decoder = ColumnDecoder::new(body)?;
    let mut decoded = 0;
    while let Some(reading) = decoder.next()? {
        sink.push_reading(reading)
            .map_err(|_| DecodeError::SinkFull { decoded })?;
        decoded += 1;
    }
    Ok(decoded)
}

/// Plans and writes channel `c`'s time column: from `prefix` (its first
/// times) when that is all of it, else from the batch.
///
/// By default each source has its own planner and writer, compiled for it;
/// with the `small` feature one of each serves both, through an `Either`,
/// which saves flash and costs speed.
fn write_times(
    by: &ByChannel<'_>,
    c: usize,
    count: usize,
    prefix: &[u64],
    base: u64,
    out: &mut [u8],
) -> Result<usize, EncodeError> {
    #[cfg(not(feature = "small"))]
    {
        if count <= GATHER {
            let plan = timestamps::plan(|| prefix.iter().copied(), count, prefix);
            timestamps::write(&plan, base, prefix.iter().copied(), out)
        } else {
            let plan = timestamps::plan(|| by.times(c), count, prefix);
            timestamps::write(&plan, base, by.times(c), out)
        }
    }
    #[cfg(feature = "small")]
    {
        let times = || {
            if count <= GATHER {
                Either::Left(prefix.iter().copied())
            } else {
                Either::Right(by.times(c))
            }
        };
        let plan = timestamps::plan(times, count, prefix);
        timestamps::write(&plan, base, times(), out)
    }
}

/// Plans and writes an integer column: from `gathered` when `factor` (its
/// common factor, found while gathering) is known, else from `batch`.
fn write_ints<I: Iterator<Item = i32>>(
    gathered: &[i32],
    batch: impl Fn() -> I,
    factor: Option<u32>,
    out: &mut [u8],
) -> Result<usize, EncodeError> {
    #[cfg(not(feature = "small"))]
    {
        match factor {
            Some(factor) => {
                let plan = values::plan_int(|| gathered.iter().copied(), factor);
                values::write_int(&plan, gathered.iter().copied(), out)
            }
            None => {
                let plan = values::plan_int(&batch, values::common_factor(batch()));
                values::write_int(&plan, batch(), out)
            }
        }
    }
    #[cfg(feature = "small")]
    {
        let ints = || match factor {
            Some(_) => Either::Left(gathered.iter().copied()),
            None => Either::Right(batch()),
        };
        let factor = factor.unwrap_or_else(|| values::common_factor(ints()));
        let plan = values::plan_int(ints, factor);
        values::write_int(&plan, ints(), out)
    }
}

/// One of two iterators over the same items, as one type.
#[cfg(feature = "small")]
#[derive(Clone)]
enum Either<L, R> {
    Left(L),
    Right(R),
}

#[cfg(feature = "small")]
impl<T, L: Iterator<Item = T>, R: Iterator<Item = T>> Iterator for Either<L, R> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        match self {
            Either::Left(l) => l.next(),
            Either::Right(r) => r.next(),
        }
    }
}
