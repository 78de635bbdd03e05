//! Analog channels: a minimal ADC trait and two-point linear calibration.
//!
//! embedded-hal 1.0 has no ADC trait, so this module defines the least
//! one: read one raw conversion. [`AnalogChannel`] maps raw counts to
//! engineering units through two calibration points, such as the 4 mA and
//! 20 mA ends of a current loop, and refuses readings outside the
//! physically possible band (a broken 4–20 mA loop reads near 0 mA).
//!
//! ```
//! use telemark_core::channel::{ChannelSpec, Range, Unit, ValueKind};
//! use telemark_core::model::{ChannelId, Reading, Value};
//! use telemark_core::rules::Rules;
//! use telemark_core::sensor::Sensor;
//! use telemark_core::time::{Duration, Instant};
//! use telemark_sensors::analog::{Adc, AnalogChannel, TwoPoint};
//!
//! /// A 12-bit ADC across a 150 Ω shunt: 4 mA reads 745, 20 mA reads 3723.
//! struct Shunt(u32);
//! impl Adc for Shunt {
//!     type Error = ();
//!     fn read(&mut self) -> Result<u32, ()> { Ok(self.0) }
//! }
//!
//! // A pressure transmitter: 4 mA = 0 bar, 20 mA = 10 bar.
//! const BAR: ChannelSpec = ChannelSpec::new(ChannelId(9), Unit::None, ValueKind::Scaled { decimals: 2 },
//!     Range::new(0.0, 10.0), Duration::from_secs(30), Rules::NONE);
//! let cal = TwoPoint::try_new(745, 0.0, 3723, 10.0).unwrap();
//! let mut loop_4_20 = AnalogChannel::new(Shunt(2234), cal, BAR, (-0.5, 10.5));
//! let mut out: Vec<Reading> = Vec::new();
//! loop_4_20.sample(Instant::ZERO, &mut out).unwrap();
//! assert_eq!(out[0].value, Value::Scaled(500)); // 5.00 bar at 12 mA
//! ```

use core::fmt;

use telemark_core::channel::ChannelSpec;
use telemark_core::model::{Reading, ReadingSink};
use telemark_core::sensor::{Sensor, SensorErrorKind};
use telemark_core::time::Instant;

/// One ADC input: the least a driver needs.
pub trait Adc {
    /// The converter's error.
    type Error: fmt::Debug;

    /// One conversion, in raw counts.
    fn read(&mut self) -> Result<u32, Self::Error>;
}

/// One ADC input whose conversion is awaited.
#[allow(async_fn_in_trait)] // single-threaded embedded executors need no Send bound
pub trait AsyncAdc {
    /// The converter's error.
    type Error: fmt::Debug;

    /// One conversion, in raw counts.
    async fn read(&mut self) -> Result<u32, Self::Error>;
}

/// Linear calibration through two points: `raw_a` reads `value_a`, `raw_b`
/// reads `value_b` (engineering units).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TwoPoint {
    raw_a: u32,
    value_a: f32,
    raw_b: u32,
    value_b: f32,
}

/// Why a calibration was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CalibrationError {
    /// Both points have the same raw reading: no line through them.
    SameRaw,
    /// A value is not finite.
    NotFinite,
}

impl TwoPoint {
    /// A calibration, or why the points define no line.
    pub const fn try_new(
        raw_a: u32,
        value_a: f32,
        raw_b: u32,
        value_b: f32,
    ) -> Result<Self, CalibrationError> {
        if raw_a == raw_b {
            return Err(CalibrationError::SameRaw);
        }
        if !value_a.is_finite() || !value_b.is_finite() {
            return Err(CalibrationError::NotFinite);
        }
        Ok(TwoPoint {
            raw_a,
            value_a,
            raw_b,
            value_b,
        })
    }

    /// The engineering value of a raw reading.
    pub fn apply(&self, raw: u32) -> f32 {
        let slope = (self.value_b - self.value_a) / (self.raw_b as f32 - self.raw_a as f32);
        self.value_a + (raw as f32 - self.raw_a as f32) * slope
    }
}

/// An analog input with its calibration and channel spec.
pub struct AnalogChannel<A> {
    adc: A,
    calibration: TwoPoint,
    spec: [ChannelSpec; 1],
    physical: (f32, f32),
}

impl<A> AnalogChannel<A> {
    /// Reads `adc` through `calibration` into `spec`'s channel; values
    /// outside `physical` (min, max) are errors, not readings.
    pub fn new(adc: A, calibration: TwoPoint, spec: ChannelSpec, physical: (f32, f32)) -> Self {
        AnalogChannel {
            adc,
            calibration,
            spec: [spec],
            physical,
        }
    }
}

impl<A: Adc> Sensor for AnalogChannel<A> {
    type Error = SensorErrorKind;

    fn channels(&self) -> &[ChannelSpec] {
        &self.spec
    }

    fn sample(&mut self, now: Instant, sink: &mut dyn ReadingSink) -> Result<(), SensorErrorKind> {
        let raw = self.adc.read().map_err(|_| SensorErrorKind::Bus)?;
        self.report(raw, now, sink)
    }
}

impl<A> AnalogChannel<A> {
    fn report(
        &self,
        raw: u32,
        now: Instant,
        sink: &mut dyn ReadingSink,
    ) -> Result<(), SensorErrorKind> {
        let value = self.calibration.apply(raw);
        if !(self.physical.0..=self.physical.1).contains(&value) {
            return Err(SensorErrorKind::OutOfRange);
        }
        let [spec] = &self.spec;
        let quantized = spec
            .quantize(value)
            .map_err(|_| SensorErrorKind::OutOfRange)?;
        sink.push_reading(Reading::new(spec.id, now, quantized))
            .map_err(|_| SensorErrorKind::SinkFull)
    }
}

impl<A: AsyncAdc> telemark_core::sensor::AsyncSensor for AnalogChannel<A> {
    type Error = SensorErrorKind;

    fn channels(&self) -> &[ChannelSpec] {
        &self.spec
    }

    async fn sample(
        &mut self,
        now: Instant,
        sink: &mut dyn ReadingSink,
    ) -> Result<(), SensorErrorKind> {
        let raw = self.adc.read().await.map_err(|_| SensorErrorKind::Bus)?;
        self.report(raw, now, sink)
    }
}
