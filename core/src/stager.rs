//! The stager gathers routine readings into a block and seals it.
//!
//! A block seals when it holds `max_readings`, when the next reading would
//! take its estimated size past `max_bytes`, or when its first reading is
//! `max_age` old. Sealing encodes the block once, through the
//! [`BlockCodec`], into a buffer the caller supplies; the caller then pushes
//! those bytes into the store.
//!
//! ```
//! use telemark_core::codec::CompactCodec;
//! use telemark_core::model::{ChannelId, Reading, Value};
//! use telemark_core::stager::{SealReason, Stager, StagerConfig};
//! use telemark_core::time::{Duration, Instant};
//!
//! const CONFIG: StagerConfig = StagerConfig::new(4, 256, Duration::from_mins(15));
//! let mut stager: Stager<16> = Stager::new(CompactCodec, CONFIG);
//! let mut block = [0u8; 256];
//!
//! let mut sealed = None;
//! for i in 0..4 {
//!     let r = Reading::new(ChannelId(1), Instant::from_millis(i * 1000), Value::Scaled(i as i32));
//!     sealed = stager.push(r, &mut block).unwrap();
//! }
//! let sealed = sealed.expect("the fourth reading fills the block");
//! assert_eq!((sealed.readings, sealed.reason), (4, SealReason::Count));
//! assert!(stager.is_empty());
//! // `block[..sealed.len]` now goes into the store.
//! ```

use core::fmt;

use crate::codec::{BlockCodec, CompactCodec, EncodeError};
use crate::model::Reading;
use crate::time::{Duration, Instant};

/// When blocks seal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct StagerConfig {
    /// Seal when the block holds this many readings.
    pub max_readings: u16,
    /// Seal before the block's estimated size passes this many bytes.
    pub max_bytes: u16,
    /// Seal when the first reading in the block is this old.
    pub max_age: Duration,
}

/// Why a [`StagerConfig`] was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum StagerConfigError {
    /// `max_readings` is zero.
    ZeroReadings,
    /// `max_bytes` is below [`StagerConfig::MIN_BYTES`].
    TooFewBytes,
    /// `max_age` is zero.
    ZeroAge,
}

impl fmt::Display for StagerConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StagerConfigError::ZeroReadings => "max_readings is zero",
            StagerConfigError::TooFewBytes => "max_bytes below 32",
            StagerConfigError::ZeroAge => "max_age is zero",
        })
    }
}

#[cfg(feature = "std")]
impl std::error::Error for StagerConfigError {}

impl StagerConfig {
    /// Smallest byte budget: room for any single reading in any codec.
    pub const MIN_BYTES: u16 = 32;

    /// A config, checked at compile time when used in a `const`.
    ///
    /// # Panics
    /// If [`StagerConfig::try_new`] would refuse it.
    pub const fn new(max_readings: u16, max_bytes: u16, max_age: Duration) -> Self {
        match Self::try_new(max_readings, max_bytes, max_age) {
            Ok(c) => c,
            #[allow(clippy::panic)] // a build error when evaluated in a const
            Err(_) => panic!("invalid StagerConfig"),
        }
    }

    /// A config, or the reason it makes no sense.
    pub const fn try_new(
        max_readings: u16,
        max_bytes: u16,
        max_age: Duration,
    ) -> Result<Self, StagerConfigError> {
        let c = StagerConfig {
            max_readings,
            max_bytes,
            max_age,
        };
        match c.validate() {
            Ok(()) => Ok(c),
            Err(e) => Err(e),
        }
    }

    /// Checks the config.
    pub const fn validate(&self) -> Result<(), StagerConfigError> {
        if self.max_readings == 0 {
            Err(StagerConfigError::ZeroReadings)
        } else if self.max_bytes < Self::MIN_BYTES {
            Err(StagerConfigError::TooFewBytes)
        } else if self.max_age.is_zero() {
            Err(StagerConfigError::ZeroAge)
        } else {
            Ok(())
        }
    }
}

/// Why a block was sealed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum SealReason {
    /// It reached `max_readings`.
    Count,
    /// The next reading would have passed `max_bytes` (or the buffer size).
    Bytes,
    /// Its first reading reached `max_age`.
    Age,
    /// The caller asked ([`Stager::flush`]).
    Flush,
}

/// A block sealed into the caller's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SealedBlock {
    /// Bytes written at the start of the buffer.
    pub len: usize,
    /// Readings in the block.
    pub readings: u16,
    /// Time of the first reading.
    pub first: Instant,
    /// Time of the last reading.
    pub last: Instant,
    /// Why it was sealed.
    pub reason: SealReason,
}

/// Why sealing failed. The readings stay staged; nothing is lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum SealError {
    /// Not even one reading fits in the buffer.
    BufferTooSmall,
    /// The codec refused the readings.
    Codec(EncodeError),
}

impl fmt::Display for SealError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SealError::BufferTooSmall => f.write_str("buffer too small for one reading"),
            SealError::Codec(e) => write!(f, "codec: {e}"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for SealError {}

/// Why [`Stager::push`] failed.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum StageError {
    /// The reading is staged, but the block it completed could not be sealed.
    Seal(SealError),
    /// No room to stage the reading, which is handed back.
    Full {
        /// The reading, not staged.
        reading: Reading,
        /// Why the staged readings could not be sealed to make room.
        cause: Option<SealError>,
    },
}

impl fmt::Display for StageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StageError::Seal(e) => write!(f, "reading staged, block not sealed: {e}"),
            StageError::Full { .. } => f.write_str("stager full, reading handed back"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for StageError {}

/// Stages up to `N` readings and seals them into blocks with codec `C`,
/// [`CompactCodec`] unless chosen otherwise.
pub struct Stager<const N: usize, C: BlockCodec = CompactCodec> {
    codec: C,
    config: StagerConfig,
    readings: heapless::Vec<Reading, N>,
    estimate: C::Estimate,
    estimated_len: usize,
}

impl<const N: usize, C: BlockCodec> Stager<N, C> {
    /// An empty stager. Blocks hold at most `min(N, config.max_readings)`.
    pub fn new(codec: C, config: StagerConfig) -> Self {
        Stager {
            codec,
            config,
            readings: heapless::Vec::new(),
            estimate: C::Estimate::default(),
            estimated_len: 0,
        }
    }

    /// The codec.
    pub fn codec(&self) -> &C {
        &self.codec
    }

    /// The sealing config.
    pub fn config(&self) -> StagerConfig {
        self.config
    }

    /// Replaces the sealing config; takes effect from the next reading.
    pub fn set_config(&mut self, config: StagerConfig) {
        self.config = config;
    }

    /// Readings staged.
    pub fn len(&self) -> usize {
        self.readings.len()
    }

    /// True if nothing is staged.
    pub fn is_empty(&self) -> bool {
        self.readings.is_empty()
    }

    /// The staged readings, oldest first.
    pub fn staged(&self) -> &[Reading] {
        &self.readings
    }

    fn max_readings(&self) -> usize {
        usize::from(self.config.max_readings).min(N)
    }

    /// When the open block reaches its age limit, if a block is open.
    pub fn deadline(&self) -> Option<Instant> {
        self.readings.first().map(|r| r.time + self.config.max_age)
    }

    /// Stages `reading`, sealing into `out` when the block is full.
    ///
    /// If the reading would take the block past its byte budget, the block
    /// is sealed first and the reading starts the next one. At most one
    /// block is sealed per call.
    pub fn push(
        &mut self,
        reading: Reading,
        out: &mut [u8],
    ) -> Result<Option<SealedBlock>, StageError> {
        let budget = usize::from(self.config.max_bytes).min(out.len());
        let mut sealed = None;
        let mut failed = None;
        if !self.readings.is_empty() {
            let mut next = self.estimate.clone();
            if self.codec.estimate(&mut next, &reading) > budget {
                match self.seal(out, SealReason::Bytes) {
                    Ok(block) => sealed = Some(block),
                    Err(e) => failed = Some(e),
                }
            }
        }
        if let Err(reading) = self.readings.push(reading) {
            return Err(StageError::Full {
                reading,
                cause: failed,
            });
        }
        self.estimated_len = self.codec.estimate(&mut self.estimate, &reading);
        if let Some(e) = failed {
            return Err(StageError::Seal(e));
        }
        if sealed.is_none() && self.readings.len() >= self.max_readings() {
            sealed = Some(
                self.seal(out, SealReason::Count)
                    .map_err(StageError::Seal)?,
            );
        }
        Ok(sealed)
    }

    /// Seals the open block into `out` if it is `max_age` old at `now`.
    pub fn poll(&mut self, now: Instant, out: &mut [u8]) -> Result<Option<SealedBlock>, SealError> {
        match self.deadline() {
            Some(deadline) if now >= deadline => self.seal(out, SealReason::Age).map(Some),
            _ => Ok(None),
        }
    }

    /// Seals whatever is staged into `out`; `None` if nothing is.
    pub fn flush(&mut self, out: &mut [u8]) -> Result<Option<SealedBlock>, SealError> {
        if self.readings.is_empty() {
            return Ok(None);
        }
        self.seal(out, SealReason::Flush).map(Some)
    }

    /// Encodes as many staged readings as fit, oldest first, halving the
    /// count when the estimate was short. Sealed readings leave the stager.
    fn seal(&mut self, out: &mut [u8], reason: SealReason) -> Result<SealedBlock, SealError> {
        let budget = usize::from(self.config.max_bytes).min(out.len());
        let out = out.get_mut(..budget).ok_or(SealError::BufferTooSmall)?;
        let mut n = self.readings.len();
        let len = loop {
            let batch = self.readings.get(..n).unwrap_or(&[]);
            match self.codec.encode(batch, out) {
                Ok(len) => break len,
                Err(EncodeError::BufferTooSmall) if n > 1 => n /= 2,
                Err(EncodeError::BufferTooSmall) => return Err(SealError::BufferTooSmall),
                Err(e) => return Err(SealError::Codec(e)),
            }
        };
        let (first, last) = match (
            self.readings.first(),
            self.readings.get(n.saturating_sub(1)),
        ) {
            (Some(f), Some(l)) => (f.time, l.time),
            _ => (Instant::ZERO, Instant::ZERO),
        };
        self.readings.rotate_left(n);
        self.readings.truncate(self.readings.len() - n);
        self.estimate = C::Estimate::default();
        self.estimated_len = 0;
        for r in self.readings.iter() {
            self.estimated_len = self.codec.estimate(&mut self.estimate, r);
        }
        Ok(SealedBlock {
            len,
            readings: n as u16,
            first,
            last,
            reason,
        })
    }

    /// Estimated encoded size of the open block.
    pub fn estimated_len(&self) -> usize {
        self.estimated_len
    }
}
