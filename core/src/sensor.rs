//! The traits sensor drivers implement.
//!
//! A driver declares its channels ([`ChannelSpec`]s) and, when sampled,
//! writes readings into a [`ReadingSink`]. [`Sensor`] is for blocking
//! drivers over `embedded-hal`; [`AsyncSensor`] for drivers over
//! `embedded-hal-async`. Errors are typed: every driver error says what
//! [`SensorErrorKind`] it is, so the core's fault rules work with any driver.
//!
//! ```
//! use telemark_core::channel::{ChannelSpec, Range, Unit, ValueKind};
//! use telemark_core::model::{ChannelId, Reading, ReadingSink, Value};
//! use telemark_core::rules::Rules;
//! use telemark_core::sensor::{Sensor, SensorErrorKind};
//! use telemark_core::time::{Duration, Instant};
//!
//! /// A door contact on a GPIO (here just a bool).
//! struct Door { open: bool }
//!
//! const DOOR: [ChannelSpec; 1] = [ChannelSpec::new(
//!     ChannelId(3), Unit::None, ValueKind::Bool, Range::new(0.0, 1.0),
//!     Duration::from_secs(1), Rules::NONE,
//! )];
//!
//! impl Sensor for Door {
//!     type Error = SensorErrorKind;
//!     fn channels(&self) -> &[ChannelSpec] { &DOOR }
//!     fn sample(&mut self, now: Instant, sink: &mut dyn ReadingSink) -> Result<(), SensorErrorKind> {
//!         sink.push_reading(Reading::new(ChannelId(3), now, Value::Bool(self.open)))
//!             .map_err(|_| SensorErrorKind::SinkFull)
//!     }
//! }
//!
//! let mut out: heapless::Vec<Reading, 4> = heapless::Vec::new();
//! Door { open: true }.sample(Instant::from_millis(5), &mut out).unwrap();
//! assert_eq!(out[0].value, Value::Bool(true));
//! ```

use core::fmt;

use crate::channel::ChannelSpec;
use crate::model::ReadingSink;
use crate::time::Instant;

/// What kind of failure a sensor error is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum SensorErrorKind {
    /// The bus failed (arbitration lost, overrun, line stuck).
    Bus,
    /// The device did not acknowledge its address or data.
    Nack,
    /// A checksum over the device's answer did not match.
    Crc,
    /// The device did not answer in time.
    Timeout,
    /// The device is not ready (still measuring, warming up).
    NotReady,
    /// The device answered with an identity we do not drive.
    WrongDevice,
    /// The value is outside what the sensor can physically measure.
    OutOfRange,
    /// The sink had no room for the readings.
    SinkFull,
    /// Any other failure.
    Other,
}

impl fmt::Display for SensorErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SensorErrorKind::Bus => "bus error",
            SensorErrorKind::Nack => "no acknowledge",
            SensorErrorKind::Crc => "checksum mismatch",
            SensorErrorKind::Timeout => "timeout",
            SensorErrorKind::NotReady => "not ready",
            SensorErrorKind::WrongDevice => "wrong device",
            SensorErrorKind::OutOfRange => "physically impossible value",
            SensorErrorKind::SinkFull => "reading sink full",
            SensorErrorKind::Other => "sensor error",
        })
    }
}

#[cfg(feature = "std")]
impl std::error::Error for SensorErrorKind {}

/// A driver's error type: anything that can say what kind of failure it is.
pub trait SensorError: fmt::Debug {
    /// The kind of failure.
    fn kind(&self) -> SensorErrorKind;
}

impl SensorError for SensorErrorKind {
    fn kind(&self) -> SensorErrorKind {
        *self
    }
}

/// A blocking sensor driver.
pub trait Sensor {
    /// The driver's error.
    type Error: SensorError;

    /// The channels this sensor produces.
    fn channels(&self) -> &[ChannelSpec];

    /// Measures now and writes one reading per channel into `sink`.
    fn sample(&mut self, now: Instant, sink: &mut dyn ReadingSink) -> Result<(), Self::Error>;
}

/// An async sensor driver, for `embedded-hal-async` buses and executors
/// such as embassy.
// Embedded executors are single-threaded, so no `Send` bound is imposed on
// the returned future (as in embedded-hal-async).
#[allow(async_fn_in_trait)]
pub trait AsyncSensor {
    /// The driver's error.
    type Error: SensorError;

    /// The channels this sensor produces.
    fn channels(&self) -> &[ChannelSpec];

    /// Measures now and writes one reading per channel into `sink`.
    async fn sample(&mut self, now: Instant, sink: &mut dyn ReadingSink)
        -> Result<(), Self::Error>;
}
