//! The envelope every frame travels in, both ways: a clear header that
//! names the sender, and a body sealed with the device's own key.
//!
//! | field | encoding |
//! | --- | --- |
//! | version | u8, [`FRAME_VERSION`] |
//! | kind | u8: bits 0-6 the [`FrameKind`]; bit 7 set for an unauthenticated (bench) frame |
//! | key | u8: which of the device's keys sealed it (a rotation moves to a new id) |
//! | device | varint: the device id |
//! | epoch | u64 little endian: the device's boot [`Epoch`] |
//! | counter | varint: the frame counter, from 1 within the epoch; a response repeats the counter of the frame it answers |
//! | body | ChaCha20-Poly1305 ciphertext of the body |
//! | tag | 16 bytes: the Poly1305 tag over the header (as associated data) and the body |
//!
//! The 96-bit nonce is the epoch (8 bytes, little endian) and the counter
//! (4 bytes, little endian) with its top bit set for frames to the device.
//! Devices number their frames from 1 in every epoch, and the epoch differs
//! at every boot, so a device never seals two frames under one nonce. The
//! server answers each device frame at most once, under that frame's
//! counter, so neither does it.
//!
//! An unauthenticated frame (bit 7 of the kind) has its body in clear and a
//! CRC-32 (ISO-HDLC) of everything before it instead of a tag. It exists for
//! benches only: both ends must name [`Sealing::Unauthenticated`], and a
//! server refuses it unless told to accept it from that device.
//!
//! ```
//! use telemark_core::wire::seal::{open, seal, Direction, FrameKind, Header, Key, Sealing};
//! use telemark_core::wire::Epoch;
//!
//! let sealing = Sealing::key(1, Key::from_bytes([7; 32]));
//! let header = Header::new(FrameKind::Records, 42, Epoch(9), 1, &sealing);
//! let mut buf = [0u8; 64];
//! let at = header.write(&mut buf).unwrap();
//! buf[at..at + 5].copy_from_slice(b"hello");
//! let len = seal(&mut buf, at, 5, &sealing, Direction::Up).unwrap();
//!
//! let (got, body) = open(&mut buf[..len], &sealing, Direction::Up).unwrap();
//! assert_eq!((got.device, got.counter, body), (42, 1, &b"hello"[..]));
//! ```

use core::fmt;

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Nonce, Tag};

use super::record::Epoch;
use crate::bytes::{ByteReader, ByteWriter};

/// The envelope format this build writes and reads.
pub const FRAME_VERSION: u8 = 2;
/// Bytes of an authentication tag.
pub const TAG_LEN: usize = 16;
/// Bytes of the CRC that ends an unauthenticated frame.
pub const CRC_LEN: usize = 4;
/// Longest header: version, kind, key, a 10-byte device id, the epoch and
/// a 5-byte counter.
pub const HEADER_MAX: usize = 1 + 1 + 1 + 10 + 8 + 5;
/// Largest frame counter; a device that reaches it must reboot (a new
/// epoch) before it sends again.
pub const MAX_COUNTER: u32 = (1 << 31) - 1;

const PLAIN: u8 = 0x80;
const CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);

/// The kind of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum FrameKind {
    /// Device to server: stored records ([`super::frame::RecordsFrame`]).
    Records = 0,
    /// Server to device: the answer to one records frame, with the
    /// acknowledgement and what the server has queued
    /// ([`super::frame::Response`]).
    Response = 1,
}

/// Which way a frame travels; part of the nonce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Direction {
    /// Device to server.
    Up,
    /// Server to device.
    Down,
}

/// A device key: 256 bits for ChaCha20-Poly1305.
///
/// `Debug` does not print it.
#[derive(Clone, PartialEq, Eq)]
pub struct Key([u8; 32]);

impl Key {
    /// A key from its bytes, as provisioned with the device id.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Key(bytes)
    }

    /// A key from 64 hexadecimal digits, as a provisioning tool prints it;
    /// `None` if it is not that. A `const fn`, so firmware can take its
    /// key from the build environment:
    ///
    /// ```
    /// use telemark_core::wire::seal::Key;
    /// const KEY: Option<Key> = Key::from_hex(
    ///     "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
    /// );
    /// assert_eq!(KEY.unwrap().as_bytes()[31], 0x1f);
    /// assert!(Key::from_hex("not a key").is_none());
    /// ```
    pub const fn from_hex(hex: &str) -> Option<Key> {
        const fn digit(c: u8) -> Option<u8> {
            match c {
                b'0'..=b'9' => Some(c - b'0'),
                b'a'..=b'f' => Some(c - b'a' + 10),
                b'A'..=b'F' => Some(c - b'A' + 10),
                _ => None,
            }
        }
        let mut rest = hex.as_bytes();
        if rest.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        let mut i = 0;
        while let [hi, lo, tail @ ..] = rest {
            let (Some(hi), Some(lo)) = (digit(*hi), digit(*lo)) else {
                return None;
            };
            // 64 digits make 32 bytes: `i` stays below 32.
            #[allow(clippy::indexing_slicing)]
            {
                out[i] = hi << 4 | lo;
            }
            i += 1;
            rest = tail;
        }
        Some(Key(out))
    }

    /// The key's bytes, for a provisioning tool or a keyring.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(..)")
    }
}

/// How frames are sealed: with a key, or (on a bench, named explicitly on
/// both ends) not at all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sealing {
    /// ChaCha20-Poly1305 with the device's key number `id`.
    Key {
        /// The key's id, carried in the header.
        id: u8,
        /// The key.
        key: Key,
    },
    /// No authentication and no secrecy: a CRC only. For benches.
    Unauthenticated,
}

impl Sealing {
    /// Sealing with key `key`, numbered `id`.
    pub const fn key(id: u8, key: Key) -> Self {
        Sealing::Key { id, key }
    }

    /// The key id the header carries (0 when unauthenticated).
    pub fn key_id(&self) -> u8 {
        match self {
            Sealing::Key { id, .. } => *id,
            Sealing::Unauthenticated => 0,
        }
    }

    /// Bytes the seal adds after the body.
    pub fn trailer_len(&self) -> usize {
        match self {
            Sealing::Key { .. } => TAG_LEN,
            Sealing::Unauthenticated => CRC_LEN,
        }
    }

    /// True for [`Sealing::Unauthenticated`].
    pub fn is_unauthenticated(&self) -> bool {
        matches!(self, Sealing::Unauthenticated)
    }
}

/// Why a frame could not be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum FrameWriteError {
    /// The item does not fit in what is left of the frame; the frame so
    /// far is intact and can be finished.
    Full,
    /// The buffer cannot hold even an empty frame.
    BufferTooSmall,
    /// `finish` on a frame without records.
    Empty,
    /// The frame counter is 0 or above [`MAX_COUNTER`].
    Counter,
}

impl fmt::Display for FrameWriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FrameWriteError::Full => "item does not fit in the frame",
            FrameWriteError::BufferTooSmall => "buffer too small for a frame",
            FrameWriteError::Empty => "frame has no records",
            FrameWriteError::Counter => "frame counter out of range",
        })
    }
}

#[cfg(feature = "std")]
impl std::error::Error for FrameWriteError {}

/// Why bytes are not a frame, or a part of one (a record, a report, an
/// item), that this end accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum FrameError {
    /// Shorter than its fields say.
    Truncated,
    /// A version this build does not read (version 1 frames had no
    /// epoch and no seal).
    Version(u8),
    /// A kind this build does not read.
    Kind(u8),
    /// A field is out of range (no records, bad flags, a sequence number
    /// over `u32`, a zero counter).
    Malformed,
    /// The tag does not match: forged, sealed with another key, or
    /// corrupted in transit (for an unauthenticated frame: its CRC).
    BadTag,
    /// Sealed, but this end expects unauthenticated frames, or the other
    /// way round.
    SealingMismatch,
    /// The frame is for another device, epoch or key than this end's.
    NotForUs,
    /// A frame that was accepted before, or answers no frame in flight.
    Replayed,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Truncated => f.write_str("frame truncated"),
            FrameError::Version(v) => write!(f, "unsupported frame version {v}"),
            FrameError::Kind(k) => write!(f, "unsupported frame kind {k}"),
            FrameError::Malformed => f.write_str("frame malformed"),
            FrameError::BadTag => f.write_str("frame authentication failed"),
            FrameError::SealingMismatch => {
                f.write_str("frame sealing (authenticated or not) not the one expected")
            }
            FrameError::NotForUs => f.write_str("frame for another device, epoch or key"),
            FrameError::Replayed => f.write_str("frame replayed or stale"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for FrameError {}

impl From<crate::bytes::ReadError> for FrameError {
    fn from(e: crate::bytes::ReadError) -> Self {
        match e {
            crate::bytes::ReadError::Truncated => FrameError::Truncated,
            crate::bytes::ReadError::Malformed => FrameError::Malformed,
        }
    }
}

impl From<crate::bytes::Overflow> for FrameWriteError {
    fn from(_: crate::bytes::Overflow) -> Self {
        FrameWriteError::BufferTooSmall
    }
}

/// The clear header of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Header {
    /// What the body holds.
    pub kind: FrameKind,
    /// The key id (0 for unauthenticated frames).
    pub key_id: u8,
    /// True if the body is in clear, under a CRC.
    pub unauthenticated: bool,
    /// The device that sent it, or that it is for.
    pub device: u64,
    /// The device's boot epoch.
    pub epoch: Epoch,
    /// The frame counter (for a response, the counter of the frame it answers).
    pub counter: u32,
}

impl Header {
    /// A header for a frame sealed with `sealing`.
    pub fn new(
        kind: FrameKind,
        device: u64,
        epoch: Epoch,
        counter: u32,
        sealing: &Sealing,
    ) -> Self {
        Header {
            kind,
            key_id: sealing.key_id(),
            unauthenticated: sealing.is_unauthenticated(),
            device,
            epoch,
            counter,
        }
    }

    /// Writes the header at the start of `buf`; returns its length.
    pub fn write(&self, buf: &mut [u8]) -> Result<usize, FrameWriteError> {
        if self.counter == 0 || self.counter > MAX_COUNTER {
            return Err(FrameWriteError::Counter);
        }
        let mut w = ByteWriter::new(buf);
        let kind = self.kind as u8 | if self.unauthenticated { PLAIN } else { 0 };
        let written = (|| {
            w.u8(FRAME_VERSION)?;
            w.u8(kind)?;
            w.u8(self.key_id)?;
            w.varint(self.device)?;
            w.bytes(&self.epoch.0.to_le_bytes())?;
            w.varint(u64::from(self.counter))?;
            Ok::<usize, crate::bytes::Overflow>(w.position())
        })();
        written.map_err(|_| FrameWriteError::BufferTooSmall)
    }

    /// Reads the clear header of `bytes` (nothing is verified yet); returns
    /// it and its length. A server reads it to find the device's key.
    pub fn parse(bytes: &[u8]) -> Result<(Header, usize), FrameError> {
        let mut r = ByteReader::new(bytes);
        let version = r.u8()?;
        if version != FRAME_VERSION {
            return Err(FrameError::Version(version));
        }
        let kind_byte = r.u8()?;
        let kind = match kind_byte & !PLAIN {
            0 => FrameKind::Records,
            1 => FrameKind::Response,
            k => return Err(FrameError::Kind(k)),
        };
        let key_id = r.u8()?;
        let device = r.varint()?;
        let epoch = Epoch(u64::from_le_bytes(r.array()?));
        let counter = r.varint_u32()?;
        if counter == 0 || counter > MAX_COUNTER {
            return Err(FrameError::Malformed);
        }
        let header = Header {
            kind,
            key_id,
            unauthenticated: kind_byte & PLAIN != 0,
            device,
            epoch,
            counter,
        };
        Ok((header, bytes.len() - r.remaining()))
    }
}

fn nonce(epoch: Epoch, counter: u32, direction: Direction) -> Nonce {
    let mut n = [0u8; 12];
    let (e, c) = n.split_at_mut(8);
    e.copy_from_slice(&epoch.0.to_le_bytes());
    let c32 = match direction {
        Direction::Up => counter & MAX_COUNTER,
        Direction::Down => counter | !MAX_COUNTER,
    };
    c.copy_from_slice(&c32.to_le_bytes());
    Nonce::from(n)
}

/// Seals a frame in place: `buf` holds its header (`header_len` bytes, as
/// [`Header::write`] wrote it) and then `body_len` bytes of body; the body
/// is encrypted and the tag appended. Returns the frame's length.
pub fn seal(
    buf: &mut [u8],
    header_len: usize,
    body_len: usize,
    sealing: &Sealing,
    direction: Direction,
) -> Result<usize, FrameWriteError> {
    let end = header_len + body_len;
    let total = end + sealing.trailer_len();
    if total > buf.len() {
        return Err(FrameWriteError::BufferTooSmall);
    }
    let (header, _) = Header::parse(buf).map_err(|_| FrameWriteError::BufferTooSmall)?;
    match sealing {
        Sealing::Key { key, .. } => {
            let (frame, trailer) = buf.split_at_mut(end);
            let (head, body) = frame.split_at_mut(header_len);
            let cipher = ChaCha20Poly1305::new(&(*key.as_bytes()).into());
            let nonce = nonce(header.epoch, header.counter, direction);
            let tag = cipher
                .encrypt_inout_detached(&nonce, head, body.into())
                .map_err(|_| FrameWriteError::BufferTooSmall)?;
            trailer
                .get_mut(..TAG_LEN)
                .ok_or(FrameWriteError::BufferTooSmall)?
                .copy_from_slice(&tag);
        }
        Sealing::Unauthenticated => {
            let crc = CRC.checksum(buf.get(..end).unwrap_or_default());
            buf.get_mut(end..total)
                .ok_or(FrameWriteError::BufferTooSmall)?
                .copy_from_slice(&crc.to_le_bytes());
        }
    }
    Ok(total)
}

/// Opens a frame in place: checks its version, that it is sealed the way
/// `sealing` says, and its tag; decrypts the body. Returns the header and
/// the body in clear. Nothing of the body is trusted before this succeeds.
pub fn open<'a>(
    bytes: &'a mut [u8],
    sealing: &Sealing,
    direction: Direction,
) -> Result<(Header, &'a [u8]), FrameError> {
    let (header, header_len) = Header::parse(bytes)?;
    if header.unauthenticated != sealing.is_unauthenticated() {
        return Err(FrameError::SealingMismatch);
    }
    let end = bytes
        .len()
        .checked_sub(sealing.trailer_len())
        .filter(|&e| e >= header_len)
        .ok_or(FrameError::Truncated)?;
    let (frame, trailer) = bytes.split_at_mut(end);
    match sealing {
        Sealing::Key { id, key } => {
            if header.key_id != *id {
                return Err(FrameError::NotForUs);
            }
            let (head, body) = frame.split_at_mut(header_len);
            let cipher = ChaCha20Poly1305::new(&(*key.as_bytes()).into());
            let nonce = nonce(header.epoch, header.counter, direction);
            let tag = Tag::try_from(&*trailer).map_err(|_| FrameError::Truncated)?;
            cipher
                .decrypt_inout_detached(&nonce, head, body.into(), &tag)
                .map_err(|_| FrameError::BadTag)?;
            Ok((header, body))
        }
        Sealing::Unauthenticated => {
            let crc = u32::from_le_bytes(
                <[u8; CRC_LEN]>::try_from(&*trailer).map_err(|_| FrameError::Truncated)?,
            );
            if CRC.checksum(frame) != crc {
                return Err(FrameError::BadTag);
            }
            Ok((header, frame.get(header_len..).unwrap_or_default()))
        }
    }
}
