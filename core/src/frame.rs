//! The frame envelope: what goes over the link around stored records.
//!
//! A records frame carries one or more records (sealed blocks, alerts) from
//! one device, each with its sequence number, so the server can store them
//! durably, drop duplicates by (device, sequence) and acknowledge them.
//!
//! | field | encoding |
//! | --- | --- |
//! | version | u8, [`FRAME_VERSION`] |
//! | kind | u8, [`FrameKind`] (`0` records) |
//! | device | varint: the device id |
//! | count | varint: records in the frame, at least 1 |
//! | records | `count` times: varint seq, u8 flags, varint readings, varint length, payload |
//! | crc | u32 little endian: CRC-32 (ISO-HDLC, as zlib) of everything before it |
//!
//! Record flags: bit 0 alert lane, bit 1 decimated, bits 2-3 severity.
//!
//! Parsing checks the CRC and every length once, in [`RecordsFrame::parse`];
//! after that, walking the records cannot fail.
//!
//! ```
//! use telemark_core::frame::{FrameWriter, RecordsFrame};
//! use telemark_core::model::Severity;
//! use telemark_core::store::{Lane, Record, RecordMeta, Seq};
//!
//! let mut buf = [0u8; 64];
//! let mut frame = FrameWriter::new(&mut buf, 42).unwrap();
//! let alert = Record { seq: Seq(7), meta: RecordMeta::alert(Severity::Critical, 1), payload: b"hot" };
//! frame.push(&alert).unwrap();
//! let len = frame.finish().unwrap();
//!
//! let parsed = RecordsFrame::parse(&buf[..len]).unwrap();
//! assert_eq!(parsed.device(), 42);
//! let first = parsed.records().next().unwrap();
//! assert_eq!((first.seq, first.meta.lane, first.payload), (Seq(7), Lane::Alert, &b"hot"[..]));
//! ```

use core::fmt;

use crate::codec::bits::{ByteReader, ByteWriter};
use crate::model::Severity;
use crate::store::{Lane, Record, RecordMeta, Seq};

/// The envelope format this build writes and reads.
pub const FRAME_VERSION: u8 = 1;
/// Bytes of a records frame besides its records: version, kind, a device id
/// of up to 10 varint bytes, a count of up to 3, the CRC.
pub const FRAME_OVERHEAD_MAX: usize = 1 + 1 + 10 + 3 + 4;
/// Bytes a record costs in a frame besides its payload, at most.
pub const RECORD_HEADER_MAX: usize = 5 + 1 + 3 + 3;

const CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);
const FLAG_ALERT: u8 = 1;
const FLAG_DECIMATED: u8 = 2;

/// The kind of a frame, its second byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum FrameKind {
    /// Device to server: stored records.
    Records = 0,
    /// Server to device: sequence numbers stored durably, and the time.
    Ack = 1,
    /// Server to device: a config update (CBOR, see [`crate::config`]).
    Config = 2,
    /// Server to device: a command with its id.
    Command = 3,
}

/// Most ranges one acknowledgement carries.
pub const MAX_ACK_RANGES: usize = 64;

/// Why a frame could not be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum FrameWriteError {
    /// The record does not fit in what is left of the frame; the frame so
    /// far is intact and can be finished.
    Full,
    /// The buffer cannot hold even an empty frame.
    BufferTooSmall,
    /// `finish` on a frame without records.
    Empty,
}

impl fmt::Display for FrameWriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FrameWriteError::Full => "record does not fit in the frame",
            FrameWriteError::BufferTooSmall => "buffer too small for a frame",
            FrameWriteError::Empty => "frame has no records",
        })
    }
}

#[cfg(feature = "std")]
impl std::error::Error for FrameWriteError {}

/// Why bytes are not a valid frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum FrameError {
    /// Shorter than its fields say.
    Truncated,
    /// The CRC does not match: corrupted in transit.
    Crc,
    /// A version this build does not read.
    Version(u8),
    /// A kind this build does not read.
    Kind(u8),
    /// A field is out of range (no records, bad flags, a sequence number
    /// over `u32`).
    Malformed,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Truncated => f.write_str("frame truncated"),
            FrameError::Crc => f.write_str("frame CRC mismatch"),
            FrameError::Version(v) => write!(f, "unsupported frame version {v}"),
            FrameError::Kind(k) => write!(f, "unsupported frame kind {k}"),
            FrameError::Malformed => f.write_str("frame malformed"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for FrameError {}

impl From<crate::codec::DecodeError> for FrameError {
    fn from(e: crate::codec::DecodeError) -> Self {
        match e {
            crate::codec::DecodeError::Truncated => FrameError::Truncated,
            _ => FrameError::Malformed,
        }
    }
}

fn varint_len(v: u64) -> usize {
    ((64 - v.leading_zeros() as usize).div_ceil(7)).max(1)
}

/// Bytes `record` takes in a frame.
pub fn record_len(record: &Record<'_>) -> usize {
    varint_len(u64::from(record.seq.0))
        + 1
        + varint_len(u64::from(record.meta.readings))
        + varint_len(record.payload.len() as u64)
        + record.payload.len()
}

/// Builds a records frame in a caller's buffer (at most the link's MTU).
pub struct FrameWriter<'a> {
    buf: &'a mut [u8],
    /// Where the records start (after the count, reserved at 3 bytes).
    records_at: usize,
    len: usize,
    count: u16,
}

/// Bytes reserved for the record count: a varint of up to 16383 records,
/// padded (`0x80 0x80 0x00` is a valid three-byte zero).
const COUNT_BYTES: usize = 3;

impl<'a> FrameWriter<'a> {
    /// Starts a frame for `device` in `buf`.
    pub fn new(buf: &'a mut [u8], device: u64) -> Result<Self, FrameWriteError> {
        let mut w = ByteWriter::new(buf);
        let head = (|| {
            w.u8(FRAME_VERSION)?;
            w.u8(FrameKind::Records as u8)?;
            w.varint(device)?;
            w.bytes(&[0; COUNT_BYTES])
        })();
        head.map_err(|_| FrameWriteError::BufferTooSmall)?;
        let records_at = w.position();
        if records_at + 4 > buf.len() {
            return Err(FrameWriteError::BufferTooSmall);
        }
        Ok(FrameWriter {
            buf,
            records_at,
            len: records_at,
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
            .saturating_sub(self.len + 4 + RECORD_HEADER_MAX)
    }

    /// Appends `record`, or reports [`FrameWriteError::Full`] and leaves the
    /// frame as it was.
    pub fn push(&mut self, record: &Record<'_>) -> Result<(), FrameWriteError> {
        let need = record_len(record);
        if self.len + need + 4 > self.buf.len() || self.count >= 0x3fff {
            return Err(FrameWriteError::Full);
        }
        let flags = if record.meta.lane == Lane::Alert {
            FLAG_ALERT
        } else {
            0
        } | if record.meta.decimated {
            FLAG_DECIMATED
        } else {
            0
        } | (record.meta.severity as u8) << 2;
        let mut w = ByteWriter::new(self.buf.get_mut(self.len..).unwrap_or_default());
        let written = (|| {
            w.varint(u64::from(record.seq.0))?;
            w.u8(flags)?;
            w.varint(u64::from(record.meta.readings))?;
            w.varint(record.payload.len() as u64)?;
            w.bytes(record.payload)?;
            Ok::<usize, crate::codec::EncodeError>(w.position())
        })();
        let n = written.map_err(|_| FrameWriteError::Full)?;
        self.len += n;
        self.count += 1;
        Ok(())
    }

    /// Writes the count and CRC; returns the frame's length in bytes.
    pub fn finish(self) -> Result<usize, FrameWriteError> {
        if self.count == 0 {
            return Err(FrameWriteError::Empty);
        }
        // The count as a fixed three-byte varint.
        let c = self.count;
        let count = [
            (c & 0x7f) as u8 | 0x80,
            ((c >> 7) & 0x7f) as u8 | 0x80,
            (c >> 14) as u8,
        ];
        let at = self.records_at - COUNT_BYTES;
        if let Some(slot) = self.buf.get_mut(at..self.records_at) {
            slot.copy_from_slice(&count);
        }
        let crc = CRC.checksum(self.buf.get(..self.len).unwrap_or_default());
        self.buf
            .get_mut(self.len..self.len + 4)
            .ok_or(FrameWriteError::Full)?
            .copy_from_slice(&crc.to_le_bytes());
        Ok(self.len + 4)
    }
}

/// A parsed, checked records frame.
#[derive(Clone, Copy, Debug)]
pub struct RecordsFrame<'a> {
    device: u64,
    count: usize,
    records: &'a [u8],
}

/// Checks that `bytes` hold exactly `count` (at least one) items that
/// `parse` reads; returns them for walking later.
fn items<'a, T>(
    bytes: &'a [u8],
    count: usize,
    parse: fn(&mut ByteReader<'a>) -> Result<T, FrameError>,
) -> Result<&'a [u8], FrameError> {
    if count == 0 {
        return Err(FrameError::Malformed);
    }
    let mut walk = ByteReader::new(bytes);
    for _ in 0..count {
        parse(&mut walk)?;
    }
    if walk.remaining() != 0 {
        return Err(FrameError::Malformed);
    }
    Ok(bytes)
}

/// Checks a frame's CRC and version; returns its kind, device and body.
fn open(bytes: &[u8]) -> Result<(u8, u64, ByteReader<'_>), FrameError> {
    let split = bytes.len().checked_sub(4).ok_or(FrameError::Truncated)?;
    let (body, crc) = bytes.split_at(split);
    let crc = u32::from_le_bytes(crc.try_into().map_err(|_| FrameError::Truncated)?);
    if CRC.checksum(body) != crc {
        return Err(FrameError::Crc);
    }
    let mut r = ByteReader::new(body);
    let version = r.u8()?;
    if version != FRAME_VERSION {
        return Err(FrameError::Version(version));
    }
    let kind = r.u8()?;
    let device = r.varint()?;
    Ok((kind, device, r))
}

/// Any frame this build reads.
#[derive(Clone, Copy, Debug)]
pub enum Frame<'a> {
    /// Records, from a device.
    Records(RecordsFrame<'a>),
    /// An acknowledgement, from the server.
    Ack(AckFrame<'a>),
    /// A config update for `device`, from the server: its CBOR.
    Config {
        /// The device it is for.
        device: u64,
        /// The update, as CBOR.
        cbor: &'a [u8],
    },
    /// A command for `device`, from the server.
    Command {
        /// The device it is for.
        device: u64,
        /// The command's id: a repeated id is not executed twice.
        id: u32,
        /// What to do.
        command: Command,
    },
}

impl<'a> Frame<'a> {
    /// Checks and parses a frame of any kind.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, FrameError> {
        let (kind, device, mut r) = open(bytes)?;
        match kind {
            0 => RecordsFrame::parse(bytes).map(Frame::Records),
            1 => AckFrame::parse(bytes).map(Frame::Ack),
            2 => Ok(Frame::Config {
                device,
                cbor: r.rest(),
            }),
            3 => {
                let id = r.varint_u32()?;
                let command = Command::read(&mut r)?;
                if r.remaining() != 0 {
                    return Err(FrameError::Malformed);
                }
                Ok(Frame::Command {
                    device,
                    id,
                    command,
                })
            }
            kind => Err(FrameError::Kind(kind)),
        }
    }
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

    fn write(&self, w: &mut ByteWriter<'_>) -> Result<(), crate::codec::EncodeError> {
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

/// Seals a frame body of `len` bytes in `buf` with its CRC.
fn seal(buf: &mut [u8], len: usize) -> Result<usize, FrameWriteError> {
    let crc = CRC.checksum(buf.get(..len).unwrap_or_default());
    buf.get_mut(len..len + 4)
        .ok_or(FrameWriteError::BufferTooSmall)?
        .copy_from_slice(&crc.to_le_bytes());
    Ok(len + 4)
}

/// Writes a config frame carrying a CBOR update for `device`.
pub fn write_config(buf: &mut [u8], device: u64, cbor: &[u8]) -> Result<usize, FrameWriteError> {
    let mut w = ByteWriter::new(buf);
    let body = (|| {
        w.u8(FRAME_VERSION)?;
        w.u8(FrameKind::Config as u8)?;
        w.varint(device)?;
        w.bytes(cbor)?;
        Ok::<usize, crate::codec::EncodeError>(w.position())
    })();
    let len = body.map_err(|_| FrameWriteError::BufferTooSmall)?;
    seal(buf, len)
}

/// Writes a command frame for `device`.
pub fn write_command(
    buf: &mut [u8],
    device: u64,
    id: u32,
    command: Command,
) -> Result<usize, FrameWriteError> {
    let mut w = ByteWriter::new(buf);
    let body = (|| {
        w.u8(FRAME_VERSION)?;
        w.u8(FrameKind::Command as u8)?;
        w.varint(device)?;
        w.varint(u64::from(id))?;
        command.write(&mut w)?;
        Ok::<usize, crate::codec::EncodeError>(w.position())
    })();
    let len = body.map_err(|_| FrameWriteError::BufferTooSmall)?;
    seal(buf, len)
}

impl<'a> RecordsFrame<'a> {
    /// Checks the CRC, the header and every record's length.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, FrameError> {
        let (kind, device, mut r) = open(bytes)?;
        if kind != FrameKind::Records as u8 {
            return Err(FrameError::Kind(kind));
        }
        let count = r.len(0x3fff)?;
        let records = items(r.rest(), count, parse_record)?;
        Ok(RecordsFrame {
            device,
            count,
            records,
        })
    }

    /// The sending device.
    pub fn device(&self) -> u64 {
        self.device
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
    pub fn records(&self) -> impl Iterator<Item = Record<'a>> + 'a {
        let mut r = ByteReader::new(self.records);
        (0..self.count).map_while(move |_| parse_record(&mut r).ok())
    }
}

fn parse_record<'a>(r: &mut ByteReader<'a>) -> Result<Record<'a>, FrameError> {
    let seq = Seq(r.varint_u32()?);
    let flags = r.u8()?;
    if flags & !0b1111 != 0 {
        return Err(FrameError::Malformed);
    }
    let severity = Severity::from_bits((flags >> 2) & 3).ok_or(FrameError::Malformed)?;
    let readings = u16::try_from(r.varint()?).map_err(|_| FrameError::Malformed)?;
    let len = r.len(r.remaining())?;
    let payload = r.take(len)?;
    Ok(Record {
        seq,
        meta: RecordMeta {
            lane: if flags & FLAG_ALERT != 0 {
                Lane::Alert
            } else {
                Lane::Routine
            },
            severity,
            readings,
            decimated: flags & FLAG_DECIMATED != 0,
        },
        payload,
    })
}

/// Writes an acknowledgement frame: the server stored `ranges` durably; its
/// clock read `server_time` (Unix milliseconds), if it has one to share.
pub fn write_ack(
    buf: &mut [u8],
    device: u64,
    server_time: Option<u64>,
    ranges: &[crate::store::SeqRange],
) -> Result<usize, FrameWriteError> {
    if ranges.is_empty() {
        return Err(FrameWriteError::Empty);
    }
    if ranges.len() > MAX_ACK_RANGES {
        return Err(FrameWriteError::Full);
    }
    let mut w = ByteWriter::new(buf);
    let body = (|| {
        w.u8(FRAME_VERSION)?;
        w.u8(FrameKind::Ack as u8)?;
        w.varint(device)?;
        w.varint(server_time.map_or(0, |t| t.saturating_add(1)))?;
        w.varint(ranges.len() as u64)?;
        for r in ranges {
            w.varint(u64::from(r.first.0))?;
            w.varint(u64::from(r.last.0.saturating_sub(r.first.0)))?;
        }
        Ok::<usize, crate::codec::EncodeError>(w.position())
    })();
    let len = body.map_err(|_| FrameWriteError::BufferTooSmall)?;
    seal(buf, len)
}

/// A parsed, checked acknowledgement frame.
#[derive(Clone, Copy, Debug)]
pub struct AckFrame<'a> {
    device: u64,
    server_time: Option<u64>,
    count: usize,
    ranges: &'a [u8],
}

impl<'a> AckFrame<'a> {
    /// Checks the CRC, the header and every range.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, FrameError> {
        let (kind, device, mut r) = open(bytes)?;
        if kind != FrameKind::Ack as u8 {
            return Err(FrameError::Kind(kind));
        }
        let server_time = r.varint()?.checked_sub(1);
        let count = r.len(MAX_ACK_RANGES)?;
        let ranges = items(r.rest(), count, parse_range)?;
        Ok(AckFrame {
            device,
            server_time,
            count,
            ranges,
        })
    }

    /// The device the acknowledgement is for.
    pub fn device(&self) -> u64 {
        self.device
    }

    /// The server's clock when it sent the acknowledgement, Unix ms.
    pub fn server_time(&self) -> Option<u64> {
        self.server_time
    }

    /// The acknowledged ranges.
    pub fn ranges(&self) -> impl Iterator<Item = crate::store::SeqRange> + 'a {
        let mut r = ByteReader::new(self.ranges);
        (0..self.count).map_while(move |_| parse_range(&mut r).ok())
    }
}

fn parse_range(r: &mut ByteReader<'_>) -> Result<crate::store::SeqRange, FrameError> {
    let first = r.varint_u32()?;
    let span = r.varint_u32()?;
    let last = first.checked_add(span).ok_or(FrameError::Malformed)?;
    Ok(crate::store::SeqRange::new(Seq(first), Seq(last)))
}
