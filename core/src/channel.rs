//! Channel specifications: what a channel measures, how exactly, how often,
//! and which rules raise alerts on it.
//!
//! A [`ChannelSpec`] is declared once, usually as a `const`, so that a
//! nonsensical spec fails the build:
//!
//! ```
//! use telemark_core::channel::{ChannelSpec, Range, Unit, ValueKind};
//! use telemark_core::model::{ChannelId, Severity};
//! use telemark_core::rules::Rules;
//! use telemark_core::time::Duration;
//!
//! const BOILER_TEMP: ChannelSpec = ChannelSpec::new(
//!     ChannelId(1),
//!     Unit::Celsius,
//!     ValueKind::Scaled { decimals: 2 },
//!     Range::new(-40.0, 125.0),
//!     Duration::from_secs(10),
//!     Rules::NONE.high(90.0, 2.0, Severity::Critical),
//! );
//! assert_eq!(BOILER_TEMP.quantize(21.456), Ok(telemark_core::model::Value::Scaled(2146)));
//! ```
//!
//! `try_new` returns the reason instead of failing the build:
//!
//! ```
//! # use telemark_core::channel::*;
//! # use telemark_core::model::ChannelId;
//! # use telemark_core::rules::Rules;
//! # use telemark_core::time::Duration;
//! let bad = ChannelSpec::try_new(
//!     ChannelId(2), Unit::Percent, ValueKind::Float,
//!     Range::new(0.0, 100.0), Duration::ZERO, Rules::NONE,
//! );
//! assert_eq!(bad.unwrap_err(), SpecError::ZeroPeriod);
//! ```

use core::fmt;

use crate::model::{ChannelId, Severity, Value};
use crate::time::Duration;

/// Largest number of decimals a scaled channel may declare.
pub const MAX_DECIMALS: u8 = 9;

/// `10^decimals`; exact in `f32` up to `10^10`.
const fn pow10(decimals: u8) -> f32 {
    let mut scale = 1.0;
    let mut i = 0;
    while i < decimals {
        scale *= 10.0;
        i += 1;
    }
    scale
}

/// The physical unit of a channel. Carried in the channel report so that the
/// cloud side can label values; it never changes how values are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Unit {
    /// No unit (a ratio, a state).
    None,
    /// Degrees Celsius.
    Celsius,
    /// Percent (relative humidity, battery level).
    Percent,
    /// Pascal.
    Pascal,
    /// Hectopascal.
    Hectopascal,
    /// Cubic metres (gas volume).
    CubicMetre,
    /// Litres.
    Litre,
    /// Litres per minute.
    LitrePerMinute,
    /// Cubic metres per hour.
    CubicMetrePerHour,
    /// Volts.
    Volt,
    /// Millivolts.
    Millivolt,
    /// Milliamperes (4-20 mA loops).
    Milliampere,
    /// Metres per second.
    MetrePerSecond,
    /// Angle in degrees.
    Degree,
    /// Watts per square metre (irradiance).
    WattPerSquareMetre,
    /// Standard gravity (accelerometers).
    StandardGravity,
    /// Degrees per second (gyroscopes).
    DegreePerSecond,
    /// A count of events (pulses).
    Count,
}

/// Every unit, in the order of its code on the wire ([`Unit::code`];
/// a test holds the two together).
const UNITS: [Unit; 18] = [
    Unit::None,
    Unit::Celsius,
    Unit::Percent,
    Unit::Pascal,
    Unit::Hectopascal,
    Unit::CubicMetre,
    Unit::Litre,
    Unit::LitrePerMinute,
    Unit::CubicMetrePerHour,
    Unit::Volt,
    Unit::Millivolt,
    Unit::Milliampere,
    Unit::MetrePerSecond,
    Unit::Degree,
    Unit::WattPerSquareMetre,
    Unit::StandardGravity,
    Unit::DegreePerSecond,
    Unit::Count,
];

impl Unit {
    /// The unit's code in a channel report
    /// ([`crate::wire::report::Report::Channel`]): its place in the list
    /// above, from 0 for `None` to 17 for `Count`. A new unit takes the
    /// next code.
    ///
    /// ```
    /// use telemark_core::channel::Unit;
    /// assert_eq!(Unit::from_code(Unit::CubicMetre.code()), Some(Unit::CubicMetre));
    /// assert_eq!(Unit::from_code(200), None);
    /// ```
    pub const fn code(self) -> u8 {
        match self {
            Unit::None => 0,
            Unit::Celsius => 1,
            Unit::Percent => 2,
            Unit::Pascal => 3,
            Unit::Hectopascal => 4,
            Unit::CubicMetre => 5,
            Unit::Litre => 6,
            Unit::LitrePerMinute => 7,
            Unit::CubicMetrePerHour => 8,
            Unit::Volt => 9,
            Unit::Millivolt => 10,
            Unit::Milliampere => 11,
            Unit::MetrePerSecond => 12,
            Unit::Degree => 13,
            Unit::WattPerSquareMetre => 14,
            Unit::StandardGravity => 15,
            Unit::DegreePerSecond => 16,
            Unit::Count => 17,
        }
    }

    /// The unit of `code`, if there is one.
    pub fn from_code(code: u8) -> Option<Unit> {
        UNITS.get(usize::from(code)).copied()
    }

    /// The unit's symbol.
    pub const fn symbol(self) -> &'static str {
        match self {
            Unit::None => "",
            Unit::Celsius => "°C",
            Unit::Percent => "%",
            Unit::Pascal => "Pa",
            Unit::Hectopascal => "hPa",
            Unit::CubicMetre => "m³",
            Unit::Litre => "L",
            Unit::LitrePerMinute => "L/min",
            Unit::CubicMetrePerHour => "m³/h",
            Unit::Volt => "V",
            Unit::Millivolt => "mV",
            Unit::Milliampere => "mA",
            Unit::MetrePerSecond => "m/s",
            Unit::Degree => "°",
            Unit::WattPerSquareMetre => "W/m²",
            Unit::StandardGravity => "g",
            Unit::DegreePerSecond => "°/s",
            Unit::Count => "",
        }
    }
}

/// How a channel's values are represented.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ValueKind {
    /// Exact integers of `10^-decimals` units: [`Value::Scaled`].
    Scaled {
        /// Digits after the decimal point (2 means a resolution of 0.01).
        decimals: u8,
    },
    /// Floats kept bit-exact: [`Value::Float`].
    Float,
    /// On/off: [`Value::Bool`].
    Bool,
    /// Monotonic counter: [`Value::Counter`].
    Counter,
}

impl ValueKind {
    /// True if `value` is of this kind.
    pub const fn accepts(self, value: &Value) -> bool {
        matches!(
            (self, value),
            (ValueKind::Scaled { .. }, Value::Scaled(_))
                | (ValueKind::Float, Value::Float(_))
                | (ValueKind::Bool, Value::Bool(_))
                | (ValueKind::Counter, Value::Counter(_))
        )
    }
}

/// The normal range of a channel, in engineering units, inclusive.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Range {
    /// Lowest normal value.
    pub min: f32,
    /// Highest normal value.
    pub max: f32,
}

impl Range {
    /// `min..=max`.
    pub const fn new(min: f32, max: f32) -> Self {
        Range { min, max }
    }

    /// True if `x` lies in the range.
    pub fn contains(&self, x: f32) -> bool {
        self.min <= x && x <= self.max
    }
}

/// Why a [`ChannelSpec`] was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum SpecError {
    /// The sampling period is zero.
    ZeroPeriod,
    /// The range is empty (`min >= max`) or not finite.
    EmptyRange,
    /// More than [`MAX_DECIMALS`] decimals.
    TooManyDecimals,
    /// The range does not fit in `i32` steps at the declared resolution.
    RangeTooWide,
    /// A rule is invalid.
    Rule(RuleError),
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpecError::ZeroPeriod => f.write_str("sampling period is zero"),
            SpecError::EmptyRange => f.write_str("range is empty or not finite"),
            SpecError::TooManyDecimals => f.write_str("more than 9 decimals"),
            SpecError::RangeTooWide => f.write_str("range does not fit i32 at this resolution"),
            SpecError::Rule(e) => write!(f, "invalid rule: {e}"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for SpecError {}

/// Why a float could not become a value of a channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum QuantizeError {
    /// NaN or infinite.
    NotFinite,
    /// Too large for `i32` steps at the channel's resolution.
    Overflow,
    /// The channel is boolean or a counter, not a measured quantity.
    WrongKind,
}

impl fmt::Display for QuantizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            QuantizeError::NotFinite => "value is not finite",
            QuantizeError::Overflow => "value overflows the channel's resolution",
            QuantizeError::WrongKind => "channel does not hold measured quantities",
        })
    }
}

#[cfg(feature = "std")]
impl std::error::Error for QuantizeError {}

/// The declaration of one channel.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ChannelSpec {
    /// Which channel.
    pub id: ChannelId,
    /// Physical unit.
    pub unit: Unit,
    /// Representation and resolution.
    pub kind: ValueKind,
    /// Normal range; readings outside it are flagged `OUT_OF_RANGE`.
    pub range: Range,
    /// How often to sample.
    pub period: Duration,
    /// Alert rules.
    pub rules: Rules,
}

impl ChannelSpec {
    /// A spec, checked at compile time when used in a `const`.
    ///
    /// # Panics
    /// If [`ChannelSpec::try_new`] would refuse it. In a `const` this is a
    /// build error; use `try_new` for specs that arrive at run time.
    pub const fn new(
        id: ChannelId,
        unit: Unit,
        kind: ValueKind,
        range: Range,
        period: Duration,
        rules: Rules,
    ) -> Self {
        match Self::try_new(id, unit, kind, range, period, rules) {
            Ok(spec) => spec,
            #[allow(clippy::panic)] // a build error when evaluated in a const
            Err(_) => panic!("invalid ChannelSpec"),
        }
    }

    /// A spec, or the reason it makes no sense.
    pub const fn try_new(
        id: ChannelId,
        unit: Unit,
        kind: ValueKind,
        range: Range,
        period: Duration,
        rules: Rules,
    ) -> Result<Self, SpecError> {
        let spec = ChannelSpec {
            id,
            unit,
            kind,
            range,
            period,
            rules,
        };
        match spec.validate() {
            Ok(()) => Ok(spec),
            Err(e) => Err(e),
        }
    }

    /// Checks the spec; used by `try_new` and by remote configuration.
    pub const fn validate(&self) -> Result<(), SpecError> {
        if self.period.is_zero() {
            return Err(SpecError::ZeroPeriod);
        }
        let (min, max) = (self.range.min, self.range.max);
        if !(min.is_finite() && max.is_finite()) || min >= max {
            return Err(SpecError::EmptyRange);
        }
        if let ValueKind::Scaled { decimals } = self.kind {
            if decimals > MAX_DECIMALS {
                return Err(SpecError::TooManyDecimals);
            }
            let scale = pow10(decimals);
            // i32::MAX as f32 rounds up to 2^31, so compare strictly.
            let limit = 2_147_483_648.0_f32;
            if !(min * scale > -limit && max * scale < limit) {
                return Err(SpecError::RangeTooWide);
            }
        }
        match self.rules.validate() {
            Ok(()) => Ok(()),
            Err(e) => Err(SpecError::Rule(e)),
        }
    }

    /// Converts a measurement in engineering units to this channel's value.
    ///
    /// Scaled channels round to the nearest step; float channels keep `x`.
    pub fn quantize(&self, x: f32) -> Result<Value, QuantizeError> {
        match self.kind {
            ValueKind::Float => Ok(Value::Float(x)),
            ValueKind::Scaled { decimals } => {
                if !x.is_finite() {
                    return Err(QuantizeError::NotFinite);
                }
                let scale = pow10(decimals);
                let steps = x * scale;
                let rounded = if steps >= 0.0 {
                    steps + 0.5
                } else {
                    steps - 0.5
                };
                if !(rounded > -2_147_483_648.0 && rounded < 2_147_483_648.0) {
                    return Err(QuantizeError::Overflow);
                }
                Ok(Value::Scaled(rounded as i32))
            }
            ValueKind::Bool | ValueKind::Counter => Err(QuantizeError::WrongKind),
        }
    }

    /// The value in engineering units (steps divided by the resolution).
    pub fn to_units(&self, value: Value) -> f32 {
        match (self.kind, value) {
            (ValueKind::Scaled { decimals }, Value::Scaled(v)) => {
                let scale = pow10(decimals);
                v as f32 / scale
            }
            (_, v) => v.raw_f32(),
        }
    }
}

/// A threshold with hysteresis, in engineering units.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Threshold {
    /// The alert fires when the value crosses this limit.
    pub limit: f32,
    /// The alert clears only once the value is back by this much.
    pub hysteresis: f32,
    /// Severity of the alert.
    pub severity: Severity,
}

/// A limit on how fast the value may change.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct RateLimit {
    /// Largest normal change, in engineering units per second.
    pub max_per_sec: f32,
    /// Severity of the alert.
    pub severity: Severity,
}

/// Fires when a rule sees the same thing `count` times in a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct RunRule {
    /// How many in a row (at least 2 for stuck values, 1 for faults).
    pub count: u16,
    /// Severity of the alert.
    pub severity: Severity,
}

/// The rules of one channel. Build it in a `const` with the chained methods.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Rules {
    /// Fires when the value rises above the limit.
    pub high: Option<Threshold>,
    /// Fires when the value falls below the limit.
    pub low: Option<Threshold>,
    /// Fires when the value changes faster than allowed.
    pub rate: Option<RateLimit>,
    /// Fires when the value is identical for `count` readings.
    pub stuck: Option<RunRule>,
    /// Fires after `count` consecutive sampling failures.
    pub fault: Option<RunRule>,
}

impl Rules {
    /// No rules.
    pub const NONE: Rules = Rules {
        high: None,
        low: None,
        rate: None,
        stuck: None,
        fault: None,
    };

    /// Adds a high threshold.
    pub const fn high(mut self, limit: f32, hysteresis: f32, severity: Severity) -> Self {
        self.high = Some(Threshold {
            limit,
            hysteresis,
            severity,
        });
        self
    }

    /// Adds a low threshold.
    pub const fn low(mut self, limit: f32, hysteresis: f32, severity: Severity) -> Self {
        self.low = Some(Threshold {
            limit,
            hysteresis,
            severity,
        });
        self
    }

    /// Adds a rate-of-change limit in units per second.
    pub const fn rate(mut self, max_per_sec: f32, severity: Severity) -> Self {
        self.rate = Some(RateLimit {
            max_per_sec,
            severity,
        });
        self
    }

    /// Adds a stuck-value rule: `samples` identical readings in a row.
    pub const fn stuck(mut self, samples: u16, severity: Severity) -> Self {
        self.stuck = Some(RunRule {
            count: samples,
            severity,
        });
        self
    }

    /// Adds a sensor-fault rule: `failures` failed samples in a row.
    pub const fn fault(mut self, failures: u16, severity: Severity) -> Self {
        self.fault = Some(RunRule {
            count: failures,
            severity,
        });
        self
    }

    /// Checks that every rule makes sense.
    pub const fn validate(&self) -> Result<(), RuleError> {
        if let Some(t) = self.high {
            if !t.limit.is_finite() || !t.hysteresis.is_finite() || t.hysteresis < 0.0 {
                return Err(RuleError::BadThreshold);
            }
        }
        if let Some(t) = self.low {
            if !t.limit.is_finite() || !t.hysteresis.is_finite() || t.hysteresis < 0.0 {
                return Err(RuleError::BadThreshold);
            }
        }
        if let (Some(h), Some(l)) = (self.high, self.low) {
            if l.limit >= h.limit {
                return Err(RuleError::ThresholdsCrossed);
            }
        }
        if let Some(r) = self.rate {
            if !r.max_per_sec.is_finite() || r.max_per_sec <= 0.0 {
                return Err(RuleError::BadRate);
            }
        }
        if let Some(s) = self.stuck {
            if s.count < 2 {
                return Err(RuleError::BadCount);
            }
        }
        if let Some(f) = self.fault {
            if f.count == 0 {
                return Err(RuleError::BadCount);
            }
        }
        Ok(())
    }
}

/// Why a rule was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum RuleError {
    /// A threshold or its hysteresis is not finite, or the hysteresis is negative.
    BadThreshold,
    /// The low threshold is not below the high threshold.
    ThresholdsCrossed,
    /// The rate limit is not a positive finite number.
    BadRate,
    /// A stuck count below 2 or a fault count of 0.
    BadCount,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RuleError::BadThreshold => "threshold or hysteresis not finite, or hysteresis negative",
            RuleError::ThresholdsCrossed => "low threshold is not below high threshold",
            RuleError::BadRate => "rate limit must be positive and finite",
            RuleError::BadCount => "stuck count must be at least 2, fault count at least 1",
        })
    }
}

#[cfg(feature = "std")]
impl std::error::Error for RuleError {}

#[cfg(test)]
mod unit_codes {
    use super::*;

    #[test]
    fn each_unit_sits_at_its_code() {
        for (i, unit) in UNITS.iter().enumerate() {
            assert_eq!(usize::from(unit.code()), i, "{unit:?}");
            assert_eq!(Unit::from_code(unit.code()), Some(*unit));
        }
        assert_eq!(Unit::from_code(UNITS.len() as u8), None);
    }
}
