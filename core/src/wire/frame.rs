//! The bodies of the two frames: records from a device, and the server's
//! response to them. Both travel in the sealed envelope of
//! [`super::seal`]; the parsers here read bodies that [`super::seal::open`]
//! has verified.
//!
//! A **records frame** body:
//!
//! | field | encoding |
//! | --- | --- |
//! | uptime | varint: the device's uptime in ms when it sent the frame |
//! | records | at least one, to the end of the body: varint seq, u8 flags, [u64 LE epoch if flag bit 4], varint readings, varint length, payload |
//!
//! Record flags: bit 0 alert lane, bit 1 decimated, bits 2-3 severity,
//! bit 4 the record was numbered in an earlier boot epoch, which follows.
//! A server keys each record on (device, epoch, seq), and maps its
//! timestamps to Unix time through the sender's uptime.
//!
//! A **response** answers one records frame (its header repeats that
//! frame's counter), and only after the records are stored durably:
//!
//! | field | encoding |
//! | --- | --- |
//! | server time | varint: Unix ms + 1, or 0 if the server has no clock to share |
//! | ranges | varint count (at most [`MAX_ACK_RANGES`]), then for each: varint first seq, varint span |
//! | items | until the end: u8 tag, then a config (1: varint length, CBOR), a command (2: varint id, command), or a new key (3: u8 id, 32 bytes) |
//!
//! Parsing checks every length once; after that, walking cannot fail.
//!
//! ```
//! use telemark_core::model::Severity;
//! use telemark_core::time::Instant;
//! use telemark_core::wire::frame::{FrameWriter, RecordsFrame};
//! use telemark_core::wire::seal::{open, Direction, FrameKind, Header, Key, Sealing};
//! use telemark_core::wire::{Epoch, Lane, Record, RecordMeta, Seq};
//!
//! let sealing = Sealing::key(1, Key::from_bytes([3; 32]));
//! let header = Header::new(FrameKind::Records, 42, Epoch(5), 1, &sealing);
//! let mut buf = [0u8; 96];
//! let mut frame = FrameWriter::new(&mut buf, &header, Instant::from_millis(60_000), &sealing).unwrap();
//! let alert = Record { seq: Seq(7), meta: RecordMeta::alert(Severity::Critical, 1), payload: b"hot" };
//! frame.push(&alert, None).unwrap();
//! let len = frame.finish(&sealing).unwrap();
//!
//! let (header, body) = open(&mut buf[..len], &sealing, Direction::Up).unwrap();
//! let parsed = RecordsFrame::parse(&header, body).unwrap();
//! assert_eq!(parsed.uptime(), Instant::from_millis(60_000));
//! let first = parsed.records().next().unwrap();
//! assert_eq!((first.epoch, first.record.seq, first.record.meta.lane), (Epoch(5), Seq(7), Lane::Alert));
//! ```

use super::record::{Epoch, Lane, Record, RecordMeta, Seq, SeqRange};
use super::seal::{seal, Direction, FrameError, FrameKind, FrameWriteError, Header, Key, Sealing};
use crate::bytes::{ByteReader, ByteWriter};
use crate::model::Severity;
use crate::time::Instant;

/// Bytes a record numbered in the frame's own epoch costs besides its
/// payload, at most (a payload of up to 16 KiB).
pub const RECORD_HEADER_MAX: usize = 5 + 1 + 3 + 2;
/// Bytes a record numbered in an earlier epoch costs besides that.
pub const RECORD_EPOCH_BYTES: usize = 8;

/// Bytes a records frame from `device` costs besides its records, at
/// most, for a device up for less than 139 years.
pub fn frame_overhead(device: u64, sealing: &Sealing) -> usize {
    3 + varint_len(device) + 8 + 5 + 6 + sealing.trailer_len()
}
/// Most ranges one response carries.
pub const MAX_ACK_RANGES: usize = 64;
/// Most records one frame carries.
pub const MAX_FRAME_RECORDS: usize = 0x3fff;

const FLAG_ALERT: u8 = 1;
const FLAG_DECIMATED: u8 = 2;
const FLAG_EPOCH: u8 = 0x10;

const ITEM_CONFIG: u8 = 1;
const ITEM_COMMAND: u8 = 2;
const ITEM_KEY: u8 = 3;

fn varint_len(v: u64) -> usize {
    ((64 - v.leading_zeros() as usize).div_ceil(7)).max(1)
}

/// Bytes `record` takes in a frame, with an explicit epoch or without.
pub fn record_len(record: &Record<'_>, explicit_epoch: bool) -> usize {
    varint_len(u64::from(record.seq.0))
        + 1
        + if explicit_epoch {
            RECORD_EPOCH_BYTES
        } else {
            0
        }
        + varint_len(u64::from(record.meta.readings))
        + varint_len(record.payload.len() as u64)
        + record.payload.len()
}

/// Builds a records frame in a caller's buffer (at most the link's MTU).
pub struct FrameWriter<'a> {
    buf: &'a mut [u8],
    header_len: usize,
    epoch: Epoch,
    len: usize,
    trailer: usize,
    count: u16,
}

impl<'a> FrameWriter<'a> {
    /// Starts a records frame under `header`, sent at device uptime `uptime`.
    pub fn new(
        buf: &'a mut [u8],
        header: &Header,
        uptime: Instant,
        sealing: &Sealing,
    ) -> Result<Self, FrameWriteError> {
        let header_len = header.write(buf)?;
        let mut w = ByteWriter::new(buf.get_mut(header_len..).unwrap_or_default());
        let body = (|| {
            w.varint(uptime.as_millis())?;
            Ok::<usize, crate::bytes::Overflow>(w.position())
        })();
        let records_at = header_len + body.map_err(|_| FrameWriteError::BufferTooSmall)?;
        let trailer = sealing.trailer_len();
        if records_at + trailer > buf.len() {
            return Err(FrameWriteError::BufferTooSmall);
        }
        Ok(FrameWriter {
            buf,
            header_len,
            epoch: header.epoch,
            len: records_at,
            trailer,
            count: 0,
        })
    }

    /// Records in the frame so far.
    pub fn count(&self) -> u16 {
        self.count
    }

    /// Payload bytes the next record may have and still fit.
    pub fn room(&self) -> usize {
        self.buf
            .len()
            .saturating_sub(self.len + self.trailer + RECORD_HEADER_MAX)
    }

    /// Appends `record`, numbered in `epoch` (`None`: the frame's own), or
    /// reports [`FrameWriteError::Full`] and leaves the frame as it was.
    pub fn push(
        &mut self,
        record: &Record<'_>,
        epoch: Option<Epoch>,
    ) -> Result<(), FrameWriteError> {
        let epoch = epoch.filter(|&e| e != self.epoch);
        let need = record_len(record, epoch.is_some());
        if self.len + need + self.trailer > self.buf.len()
            || usize::from(self.count) >= MAX_FRAME_RECORDS
        {
            return Err(FrameWriteError::Full);
        }
        let lane = if record.meta.lane == Lane::Alert {
            FLAG_ALERT
        } else {
            0
        };
        let decimated = if record.meta.decimated {
            FLAG_DECIMATED
        } else {
            0
        };
        let earlier = if epoch.is_some() { FLAG_EPOCH } else { 0 };
        let flags = lane | decimated | earlier | (record.meta.severity as u8) << 2;
        let mut w = ByteWriter::new(self.buf.get_mut(self.len..).unwrap_or_default());
        let written = (|| {
            w.varint(u64::from(record.seq.0))?;
            w.u8(flags)?;
            if let Some(e) = epoch {
                w.bytes(&e.0.to_le_bytes())?;
            }
            w.varint(u64::from(record.meta.readings))?;
            w.varint(record.payload.len() as u64)?;
            w.bytes(record.payload)?;
            Ok::<usize, crate::bytes::Overflow>(w.position())
        })();
        let n = written.map_err(|_| FrameWriteError::Full)?;
        self.len += n;
        self.count += 1;
        Ok(())
    }

    /// Seals the frame; returns its length in bytes.
    pub fn finish(self, sealing: &Sealing) -> Result<usize, FrameWriteError> {
        if self.count == 0 {
            return Err(FrameWriteError::Empty);
        }
        let body_len = self.len - self.header_len;
        seal(self.buf, self.header_len, body_len, sealing, Direction::Up)
    }
}

/// A record as a frame carries it: with the epoch it was numbered in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameRecord<'a> {
    /// The boot epoch the record was numbered in.
    pub epoch: Epoch,
    /// The record.
    pub record: Record<'a>,
}

/// A checked records frame body.
#[derive(Clone, Copy, Debug)]
pub struct RecordsFrame<'a> {
    header: Header,
    uptime: Instant,
    count: usize,
    records: &'a [u8],
}

impl<'a> RecordsFrame<'a> {
    /// Checks an opened records frame's body: the count and every
    /// record's length and flags.
    pub fn parse(header: &Header, body: &'a [u8]) -> Result<Self, FrameError> {
        if header.kind != FrameKind::Records {
            return Err(FrameError::Kind(header.kind as u8));
        }
        let mut r = ByteReader::new(body);
        let uptime = Instant::from_millis(r.varint()?);
        let records = r.rest();
        let mut count = 0;
        while r.remaining() > 0 {
            parse_record(&mut r, header.epoch)?;
            count += 1;
            if count > MAX_FRAME_RECORDS {
                return Err(FrameError::Malformed);
            }
        }
        if count == 0 {
            return Err(FrameError::Malformed);
        }
        Ok(RecordsFrame {
            header: *header,
            uptime,
            count,
            records,
        })
    }

    /// The frame's header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The sending device.
    pub fn device(&self) -> u64 {
        self.header.device
    }

    /// The device's uptime when it sent the frame.
    pub fn uptime(&self) -> Instant {
        self.uptime
    }

    /// Records in the frame.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True if the frame has no records (never, once parsed).
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The records, in frame order.
    pub fn records(&self) -> impl Iterator<Item = FrameRecord<'a>> + 'a {
        let mut r = ByteReader::new(self.records);
        let epoch = self.header.epoch;
        (0..self.count).map_while(move |_| parse_record(&mut r, epoch).ok())
    }
}

fn parse_record<'a>(
    r: &mut ByteReader<'a>,
    frame_epoch: Epoch,
) -> Result<FrameRecord<'a>, FrameError> {
    let seq = Seq(r.varint_u32()?);
    let flags = r.u8()?;
    if flags & !0b1_1111 != 0 {
        return Err(FrameError::Malformed);
    }
    let severity = Severity::from_bits((flags >> 2) & 3).ok_or(FrameError::Malformed)?;
    let epoch = if flags & FLAG_EPOCH != 0 {
        Epoch(u64::from_le_bytes(r.array()?))
    } else {
        frame_epoch
    };
    let readings = u16::try_from(r.varint()?).map_err(|_| FrameError::Malformed)?;
    let len = r.len(r.remaining())?;
    let payload = r.take(len)?;
    let lane = if flags & FLAG_ALERT != 0 {
        Lane::Alert
    } else {
        Lane::Routine
    };
    Ok(FrameRecord {
        epoch,
        record: Record {
            seq,
            meta: RecordMeta {
                lane,
                severity,
                readings,
                decimated: flags & FLAG_DECIMATED != 0,
            },
            payload,
        },
    })
}

/// What a server can ask a device to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Command {
    /// Answer, to show the device is alive (code 0).
    Ping,
    /// Send everything stored now (code 1).
    FlushNow,
    /// Restart, once the result of this command is delivered (code 2).
    Reboot,
    /// Set an output: a relay, a valve, a LED (code 3, then varint output
    /// and varint value).
    SetOutput {
        /// Which output, as the firmware numbers them.
        output: u8,
        /// The value to set.
        value: u32,
    },
}

impl Command {
    fn read(r: &mut ByteReader<'_>) -> Result<Command, FrameError> {
        Ok(match r.u8()? {
            0 => Command::Ping,
            1 => Command::FlushNow,
            2 => Command::Reboot,
            3 => Command::SetOutput {
                output: u8::try_from(r.varint()?).map_err(|_| FrameError::Malformed)?,
                value: r.varint_u32()?,
            },
            _ => return Err(FrameError::Malformed),
        })
    }

    fn len(&self) -> usize {
        match *self {
            Command::SetOutput { output, value } => {
                1 + varint_len(u64::from(output)) + varint_len(u64::from(value))
            }
            _ => 1,
        }
    }

    fn write(&self, w: &mut ByteWriter<'_>) -> Result<(), crate::bytes::Overflow> {
        match *self {
            Command::Ping => w.u8(0),
            Command::FlushNow => w.u8(1),
            Command::Reboot => w.u8(2),
            Command::SetOutput { output, value } => {
                w.u8(3)?;
                w.varint(u64::from(output))?;
                w.varint(u64::from(value))
            }
        }
    }
}

/// Something the server sends down with a response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item<'a> {
    /// A config update, as CBOR (see [`crate::config`]).
    Config(&'a [u8]),
    /// A command with its id: a repeated id is not executed twice.
    Command {
        /// The command's id.
        id: u32,
        /// What to do.
        command: Command,
    },
    /// A new key: seal every frame from now on with it, under `id`.
    Key {
        /// The new key's id.
        id: u8,
        /// The new key.
        key: Key,
    },
}

fn read_item<'a>(r: &mut ByteReader<'a>) -> Result<Item<'a>, FrameError> {
    Ok(match r.u8()? {
        ITEM_CONFIG => {
            let len = r.len(r.remaining())?;
            Item::Config(r.take(len)?)
        }
        ITEM_COMMAND => Item::Command {
            id: r.varint_u32()?,
            command: Command::read(r)?,
        },
        ITEM_KEY => Item::Key {
            id: r.u8()?,
            key: Key::from_bytes(r.array()?),
        },
        _ => return Err(FrameError::Malformed),
    })
}

/// Bytes an item takes in a response.
pub fn item_len(item: &Item<'_>) -> usize {
    1 + match item {
        Item::Config(cbor) => varint_len(cbor.len() as u64) + cbor.len(),
        Item::Command { id, command } => varint_len(u64::from(*id)) + command.len(),
        Item::Key { .. } => 1 + 32,
    }
}

/// Builds the response to one records frame.
pub struct ResponseWriter<'a> {
    buf: &'a mut [u8],
    header_len: usize,
    len: usize,
    trailer: usize,
}

impl<'a> ResponseWriter<'a> {
    /// Starts a response under `header` (the counter of the frame it
    /// answers), acknowledging `ranges` (at most [`MAX_ACK_RANGES`]), with
    /// the server's clock `server_time` in Unix ms if it has one to share.
    pub fn new(
        buf: &'a mut [u8],
        header: &Header,
        server_time: Option<u64>,
        ranges: &[SeqRange],
        sealing: &Sealing,
    ) -> Result<Self, FrameWriteError> {
        if header.kind != FrameKind::Response {
            return Err(FrameWriteError::BufferTooSmall);
        }
        if ranges.len() > MAX_ACK_RANGES {
            return Err(FrameWriteError::Full);
        }
        let header_len = header.write(buf)?;
        let mut w = ByteWriter::new(buf.get_mut(header_len..).unwrap_or_default());
        let body = (|| {
            w.varint(server_time.map_or(0, |t| t.saturating_add(1)))?;
            w.varint(ranges.len() as u64)?;
            for r in ranges {
                w.varint(u64::from(r.first.0))?;
                w.varint(u64::from(r.last.0.saturating_sub(r.first.0)))?;
            }
            Ok::<usize, crate::bytes::Overflow>(w.position())
        })();
        let len = header_len + body.map_err(|_| FrameWriteError::BufferTooSmall)?;
        let trailer = sealing.trailer_len();
        if len + trailer > buf.len() {
            return Err(FrameWriteError::BufferTooSmall);
        }
        Ok(ResponseWriter {
            buf,
            header_len,
            len,
            trailer,
        })
    }

    /// Bytes an item may take and still fit.
    pub fn room(&self) -> usize {
        self.buf.len().saturating_sub(self.len + self.trailer)
    }

    /// Appends `item`, or reports [`FrameWriteError::Full`] and leaves the
    /// response as it was.
    pub fn push(&mut self, item: &Item<'_>) -> Result<(), FrameWriteError> {
        if item_len(item) > self.room() {
            return Err(FrameWriteError::Full);
        }
        let mut w = ByteWriter::new(self.buf.get_mut(self.len..).unwrap_or_default());
        let written = (|| {
            match item {
                Item::Config(cbor) => {
                    w.u8(ITEM_CONFIG)?;
                    w.varint(cbor.len() as u64)?;
                    w.bytes(cbor)?;
                }
                Item::Command { id, command } => {
                    w.u8(ITEM_COMMAND)?;
                    w.varint(u64::from(*id))?;
                    command.write(&mut w)?;
                }
                Item::Key { id, key } => {
                    w.u8(ITEM_KEY)?;
                    w.u8(*id)?;
                    w.bytes(key.as_bytes())?;
                }
            }
            Ok::<usize, crate::bytes::Overflow>(w.position())
        })();
        self.len += written.map_err(|_| FrameWriteError::Full)?;
        Ok(())
    }

    /// Seals the response; returns its length in bytes.
    pub fn finish(self, sealing: &Sealing) -> Result<usize, FrameWriteError> {
        let body_len = self.len - self.header_len;
        seal(
            self.buf,
            self.header_len,
            body_len,
            sealing,
            Direction::Down,
        )
    }
}

/// A checked response body.
#[derive(Clone, Copy, Debug)]
pub struct Response<'a> {
    header: Header,
    server_time: Option<u64>,
    count: usize,
    ranges: &'a [u8],
    items: &'a [u8],
}

impl<'a> Response<'a> {
    /// Checks an opened response's body: every range and item.
    pub fn parse(header: &Header, body: &'a [u8]) -> Result<Self, FrameError> {
        if header.kind != FrameKind::Response {
            return Err(FrameError::Kind(header.kind as u8));
        }
        let mut r = ByteReader::new(body);
        let server_time = r.varint()?.checked_sub(1);
        let count = r.len(MAX_ACK_RANGES)?;
        let rest = r.rest();
        let mut walk = ByteReader::new(rest);
        for _ in 0..count {
            parse_range(&mut walk)?;
        }
        let (ranges, items) = rest.split_at(rest.len() - walk.remaining());
        let mut walk = ByteReader::new(items);
        while walk.remaining() > 0 {
            read_item(&mut walk)?;
        }
        Ok(Response {
            header: *header,
            server_time,
            count,
            ranges,
            items,
        })
    }

    /// The response's header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The server's clock when it answered, Unix ms.
    pub fn server_time(&self) -> Option<u64> {
        self.server_time
    }

    /// The acknowledged ranges: records stored durably.
    pub fn ranges(&self) -> impl Iterator<Item = SeqRange> + 'a {
        let mut r = ByteReader::new(self.ranges);
        (0..self.count).map_while(move |_| parse_range(&mut r).ok())
    }

    /// What the server sent down besides the acknowledgement.
    pub fn items(&self) -> impl Iterator<Item = Item<'a>> + 'a {
        let mut r = ByteReader::new(self.items);
        core::iter::from_fn(move || {
            if r.remaining() == 0 {
                None
            } else {
                read_item(&mut r).ok()
            }
        })
    }
}

fn parse_range(r: &mut ByteReader<'_>) -> Result<SeqRange, FrameError> {
    let first = r.varint_u32()?;
    let span = r.varint_u32()?;
    let last = first.checked_add(span).ok_or(FrameError::Malformed)?;
    Ok(SeqRange::new(Seq(first), Seq(last)))
}
