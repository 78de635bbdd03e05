//! Block codecs: how a batch of readings becomes the bytes of a record.
//!
//! The [`Stager`](crate::stager::Stager) seals blocks through the
//! [`BlockCodec`] trait, so the codec can be swapped without touching the
//! store or the uplink. [`CompactCodec`] is the default: columns per
//! channel, predicted and bit-packed, about one byte per reading on real
//! sensor data. [`PlainCodec`] (postcard of the readings) is the reference
//! it is checked against.

use core::fmt;

use crate::model::{Reading, ReadingSink};

pub(crate) mod bits;
mod columns;
mod compact;
mod pack;
mod timestamps;
mod values;

#[cfg(feature = "serde")]
mod plain;

pub use compact::{raw_len, CompactCodec, DeviceCodec, Estimate, MAX_CHANNELS, RAW_READING_BYTES};

#[cfg(feature = "serde")]
pub use plain::PlainCodec;

/// Turns batches of readings into bytes and back.
pub trait BlockCodec {
    /// Running estimate of a block's encoded size, kept by the stager.
    type Estimate: Default + Clone;

    /// Adds `reading` to `estimate` and returns the estimated size in bytes
    /// of a block holding every reading added so far.
    ///
    /// The estimate should be an upper bound; when it is not, sealing still
    /// succeeds by sealing fewer readings.
    fn estimate(&self, estimate: &mut Self::Estimate, reading: &Reading) -> usize;

    /// Encodes `readings` into `out` and returns the bytes written.
    fn encode(&mut self, readings: &[Reading], out: &mut [u8]) -> Result<usize, EncodeError>;

    /// Decodes a block into `sink` and returns the number of readings.
    ///
    /// Any byte string yields readings or an error: never a panic, and never
    /// work out of proportion to its length.
    fn decode(&self, block: &[u8], sink: &mut dyn ReadingSink) -> Result<usize, DecodeError>;
}

/// Why a block could not be encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum EncodeError {
    /// The output buffer is too small for the block.
    BufferTooSmall,
    /// The codec cannot hold that many readings in one block.
    TooManyReadings,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EncodeError::BufferTooSmall => "output buffer too small for the block",
            EncodeError::TooManyReadings => "too many readings for one block",
        })
    }
}

#[cfg(feature = "std")]
impl std::error::Error for EncodeError {}

/// Why bytes are not a valid block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum DecodeError {
    /// The block ends before its declared contents.
    Truncated,
    /// The bytes do not follow the format.
    Malformed,
    /// Bytes are left over after the declared contents.
    TrailingBytes,
    /// The block declares more readings than it can hold.
    BadCount,
    /// The block uses a mode this build cannot decode (lz4 needs the
    /// `lz4` and `std` features).
    Unsupported,
    /// The sink refused a reading after `decoded` were delivered.
    SinkFull {
        /// Readings delivered before the sink filled.
        decoded: usize,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated => f.write_str("block truncated"),
            DecodeError::Malformed => f.write_str("block malformed"),
            DecodeError::TrailingBytes => f.write_str("trailing bytes after block"),
            DecodeError::BadCount => f.write_str("reading count exceeds block size"),
            DecodeError::Unsupported => f.write_str("block mode not supported by this build"),
            DecodeError::SinkFull { decoded } => {
                write!(f, "sink full after {decoded} readings")
            }
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for DecodeError {}

impl From<crate::bytes::Overflow> for EncodeError {
    fn from(_: crate::bytes::Overflow) -> Self {
        EncodeError::BufferTooSmall
    }
}

impl From<crate::bytes::ReadError> for DecodeError {
    fn from(e: crate::bytes::ReadError) -> Self {
        match e {
            crate::bytes::ReadError::Truncated => DecodeError::Truncated,
            crate::bytes::ReadError::Malformed => DecodeError::Malformed,
        }
    }
}
