//! Alert rules and their per-channel state.
//!
//! A channel has at most one rule of each kind: a high and a low threshold
//! (each with hysteresis, so a value hovering at the threshold raises one
//! alert, not a storm), a rate-of-change limit, a stuck-value detector and a
//! sensor-fault counter. [`Rules`] is the declaration; [`RuleState`] is the
//! few bytes of memory the rules need at run time.
//!
//! ```
//! use telemark_core::channel::{ChannelSpec, Range, Unit, ValueKind};
//! use telemark_core::model::{AlertKind, ChannelId, Reading, Severity, Value};
//! use telemark_core::rules::{RuleState, Rules};
//! use telemark_core::time::{Duration, Instant};
//!
//! const TANK: ChannelSpec = ChannelSpec::new(
//!     ChannelId(7), Unit::Celsius, ValueKind::Scaled { decimals: 1 },
//!     Range::new(0.0, 100.0), Duration::from_secs(1),
//!     Rules::NONE.high(80.0, 5.0, Severity::Warning),
//! );
//! let mut state = RuleState::new();
//! let at = |ms, tenths| Reading::new(ChannelId(7), Instant::from_millis(ms), Value::Scaled(tenths));
//!
//! assert!(state.on_reading(&TANK, &mut at(0, 790)).is_empty());
//! assert_eq!(state.on_reading(&TANK, &mut at(1000, 805))[0].kind, AlertKind::High);
//! // Chatter around 80 °C raises nothing more...
//! assert!(state.on_reading(&TANK, &mut at(2000, 798)).is_empty());
//! assert!(state.on_reading(&TANK, &mut at(3000, 803)).is_empty());
//! // ...until the value falls below 80 - 5 °C.
//! assert_eq!(state.on_reading(&TANK, &mut at(4000, 749))[0].kind, AlertKind::HighCleared);
//! ```

use core::fmt;

use crate::channel::ChannelSpec;
use crate::model::{Alert, AlertKind, Quality, Reading, Severity, Value};
use crate::time::Instant;

/// Most alerts one event can raise (a reading can clear one threshold, cross
/// the other, exceed the rate limit, complete a stuck run and end a fault).
pub const MAX_ALERTS_PER_EVENT: usize = 5;

/// The alerts raised by one event.
pub type Alerts = heapless::Vec<Alert, MAX_ALERTS_PER_EVENT>;

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

/// The run-time state of one channel's rules: 32 bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct RuleState {
    high_active: bool,
    low_active: bool,
    rate_active: bool,
    stuck_fired: bool,
    faulted: bool,
    same_run: u16,
    failures: u16,
    last: Option<(Instant, Value)>,
}

impl RuleState {
    /// The state of a channel that has seen nothing yet.
    pub const fn new() -> Self {
        RuleState {
            high_active: false,
            low_active: false,
            rate_active: false,
            stuck_fired: false,
            faulted: false,
            same_run: 0,
            failures: 0,
            last: None,
        }
    }

    /// True while the channel is in a sensor-fault state.
    pub const fn is_faulted(&self) -> bool {
        self.faulted
    }

    /// Feeds a reading through the channel's rules.
    ///
    /// Flags the reading [`Quality::OUT_OF_RANGE`] if it lies outside the
    /// spec's normal range, and returns the alerts it raises.
    pub fn on_reading(&mut self, spec: &ChannelSpec, reading: &mut Reading) -> Alerts {
        let x = spec.to_units(reading.value);
        if !spec.range.contains(x) {
            reading.quality = reading.quality.union(Quality::OUT_OF_RANGE);
        }
        let reading = *reading;
        let mut alerts = Alerts::new();
        let mut raise = |kind, severity| {
            // Capacity covers every combination below; a full Vec is unreachable.
            let _ = alerts.push(Alert {
                channel: reading.channel,
                kind,
                severity,
                value: Some(reading.value),
                time: reading.time,
            });
        };

        self.failures = 0;
        if self.faulted {
            self.faulted = false;
            raise(AlertKind::SensorRecovered, Severity::Info);
        }

        if let Some(t) = spec.rules.high {
            if self.high_active && x < t.limit - t.hysteresis {
                self.high_active = false;
                raise(AlertKind::HighCleared, Severity::Info);
            } else if !self.high_active && x > t.limit {
                self.high_active = true;
                raise(AlertKind::High, t.severity);
            }
        }
        if let Some(t) = spec.rules.low {
            if self.low_active && x > t.limit + t.hysteresis {
                self.low_active = false;
                raise(AlertKind::LowCleared, Severity::Info);
            } else if !self.low_active && x < t.limit {
                self.low_active = true;
                raise(AlertKind::Low, t.severity);
            }
        }

        if let (Some(rate), Some((t0, v0))) = (spec.rules.rate, self.last) {
            // A reading at the same millisecond counts as one millisecond apart.
            let dt_ms = reading.time.saturating_since(t0).as_millis().max(1);
            let change = x - spec.to_units(v0);
            let per_sec = change.abs() * 1000.0 / dt_ms as f32;
            if per_sec > rate.max_per_sec {
                if !self.rate_active {
                    self.rate_active = true;
                    raise(AlertKind::RateOfChange, rate.severity);
                }
            } else {
                self.rate_active = false;
            }
        }

        let same = self.last.is_some_and(|(_, v0)| v0.same_as(reading.value));
        if same {
            self.same_run = self.same_run.saturating_add(1);
        } else {
            self.same_run = 1;
            self.stuck_fired = false;
        }
        if let Some(stuck) = spec.rules.stuck {
            if !self.stuck_fired && self.same_run >= stuck.count {
                self.stuck_fired = true;
                raise(AlertKind::Stuck, stuck.severity);
            }
        }

        self.last = Some((reading.time, reading.value));
        alerts
    }

    /// Records that sampling the channel failed at `now`.
    ///
    /// After the spec's fault count of consecutive failures, raises one
    /// [`AlertKind::SensorFault`]; the next good reading raises
    /// [`AlertKind::SensorRecovered`].
    pub fn on_failure(&mut self, spec: &ChannelSpec, now: Instant) -> Option<Alert> {
        self.failures = self.failures.saturating_add(1);
        let rule = spec.rules.fault?;
        if self.faulted || self.failures < rule.count {
            return None;
        }
        self.faulted = true;
        Some(Alert {
            channel: spec.id,
            kind: AlertKind::SensorFault,
            severity: rule.severity,
            value: None,
            time: now,
        })
    }
}
