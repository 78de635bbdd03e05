//! Alert rules and their per-channel state.
//!
//! A channel has at most one rule of each kind: a high and a low threshold
//! (each with hysteresis, so a value hovering at the threshold raises one
//! alert, not a storm), a rate-of-change limit, a stuck-value detector and a
//! sensor-fault counter. [`Rules`] is the declaration, held by each
//! [`ChannelSpec`] (and defined beside it); [`RuleState`] is the few bytes
//! of memory the rules need at run time.
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

use crate::channel::ChannelSpec;
pub use crate::channel::{RateLimit, RuleError, Rules, RunRule, Threshold};
use crate::model::{Alert, AlertKind, Quality, Reading, Severity, Value};
use crate::time::Instant;

/// Most alerts one event can raise (a reading can clear one threshold, cross
/// the other, exceed the rate limit, complete a stuck run and end a fault).
pub const MAX_ALERTS_PER_EVENT: usize = 5;

/// The alerts raised by one event.
pub type Alerts = heapless::Vec<Alert, MAX_ALERTS_PER_EVENT>;

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
