//! A gas (or water) meter's pulse output: volume, flow and a leak rule.
//!
//! Most domestic gas meters close a reed switch, or pass a magnet, once per
//! fixed volume (0.01 m³ is common). Pulses are counted either
//!
//! - from an interrupt, into a [`SharedPulses`] counter guarded by a
//!   critical section, or
//! - by polling an input pin through a [`PinPulses`] debouncer, from a
//!   timer faster than the pulses.
//!
//! [`GasMeter`] turns the count into three channels: the volume delivered
//! (0.001 m³), the flow since the last sample (0.001 m³/h), and how long gas
//! has flowed without a pause (minutes), with a rule that raises an alert
//! when that passes the leak limit: a real appliance stops now and then, a
//! leak does not.
//!
//! ```
//! use telemark_core::model::{ChannelId, Reading, Value};
//! use telemark_core::sensor::Sensor;
//! use telemark_core::time::Instant;
//! use telemark_sensors::pulse::{GasMeter, SharedPulses};
//!
//! static PULSES: SharedPulses = SharedPulses::new();
//! let mut meter = GasMeter::new(&PULSES, 10, [ChannelId(1), ChannelId(2), ChannelId(3)], 12 * 60);
//! let mut out: Vec<Reading> = Vec::new();
//! meter.sample(Instant::from_millis(0), &mut out).unwrap();
//! for _ in 0..30 {
//!     PULSES.pulse(); // in the interrupt handler
//! }
//! meter.sample(Instant::from_millis(15 * 60_000), &mut out).unwrap();
//! // 30 pulses of 10 L in a quarter of an hour: 300 L, 1.2 m³/h.
//! assert_eq!(out[3].value, Value::Scaled(300));
//! assert_eq!(out[4].value, Value::Scaled(1_200));
//! ```

use core::cell::Cell;

use critical_section::Mutex;
use embedded_hal::digital::InputPin;
use telemark_core::channel::{ChannelSpec, Range, Unit, ValueKind};
use telemark_core::model::{ChannelId, Reading, ReadingSink, Severity, Value};
use telemark_core::rules::Rules;
use telemark_core::sensor::{Sensor, SensorErrorKind};
use telemark_core::time::{Duration, Instant};

/// A pulse counter an interrupt handler increments.
pub struct SharedPulses(Mutex<Cell<u32>>);

impl SharedPulses {
    /// A counter at zero, for a `static`.
    pub const fn new() -> Self {
        SharedPulses(Mutex::new(Cell::new(0)))
    }

    /// Counts one pulse. Safe to call from an interrupt.
    pub fn pulse(&self) {
        critical_section::with(|cs| {
            let c = self.0.borrow(cs);
            c.set(c.get().wrapping_add(1));
        });
    }

    /// Pulses so far (wraps at `u32::MAX`).
    pub fn total(&self) -> u32 {
        critical_section::with(|cs| self.0.borrow(cs).get())
    }
}

impl Default for SharedPulses {
    fn default() -> Self {
        Self::new()
    }
}

/// Where a meter's pulse count comes from.
pub trait PulseSource {
    /// Pulses counted so far (wrapping).
    fn total(&mut self) -> Result<u32, SensorErrorKind>;
}

impl PulseSource for &SharedPulses {
    fn total(&mut self) -> Result<u32, SensorErrorKind> {
        Ok(SharedPulses::total(self))
    }
}

/// Counts pulses on an input pin polled by the firmware, ignoring contact
/// bounce: a level counts only once it has held for `stable` polls.
pub struct PinPulses<P> {
    pin: P,
    stable: u8,
    level: bool,
    candidate: bool,
    run: u8,
    count: u32,
    failed: bool,
}

impl<P: InputPin> PinPulses<P> {
    /// Counts rising edges on `pin` that hold for `stable` polls.
    pub fn new(pin: P, stable: u8) -> Self {
        PinPulses {
            pin,
            stable: stable.max(1),
            level: false,
            candidate: false,
            run: 0,
            count: 0,
            failed: false,
        }
    }

    /// Reads the pin once; call from a timer, several times per pulse.
    pub fn poll(&mut self) {
        let Ok(high) = self.pin.is_high() else {
            self.failed = true;
            return;
        };
        if high == self.level {
            self.run = 0;
            return;
        }
        if high != self.candidate {
            self.candidate = high;
            self.run = 0;
        }
        self.run = self.run.saturating_add(1);
        if self.run >= self.stable {
            self.level = high;
            self.run = 0;
            if high {
                self.count = self.count.wrapping_add(1);
            }
        }
    }
}

impl<P: InputPin> PulseSource for PinPulses<P> {
    fn total(&mut self) -> Result<u32, SensorErrorKind> {
        if core::mem::take(&mut self.failed) {
            return Err(SensorErrorKind::Bus);
        }
        Ok(self.count)
    }
}

/// The channel specs of a meter: volume, flow, minutes of continuous flow
/// (alerting at `leak_minutes`).
pub const fn channels(ids: [ChannelId; 3], leak_minutes: u32) -> [ChannelSpec; 3] {
    let period = Duration::from_mins(15);
    // The alert clears when the flow stops (back to 0 minutes).
    let hysteresis = if leak_minutes > 0 {
        leak_minutes as f32 - 0.5
    } else {
        0.0
    };
    [
        ChannelSpec::new(
            ids[0],
            Unit::CubicMetre,
            ValueKind::Scaled { decimals: 3 },
            Range::new(0.0, 2.0e6),
            period,
            Rules::NONE,
        ),
        ChannelSpec::new(
            ids[1],
            Unit::CubicMetrePerHour,
            ValueKind::Scaled { decimals: 3 },
            Range::new(0.0, 40.0),
            period,
            Rules::NONE,
        ),
        ChannelSpec::new(
            ids[2],
            Unit::None,
            ValueKind::Scaled { decimals: 0 },
            Range::new(0.0, 1.0e7),
            period,
            Rules::NONE.high(leak_minutes as f32, hysteresis, Severity::Critical),
        ),
    ]
}

/// A pulse-output meter.
pub struct GasMeter<S> {
    source: S,
    litres_per_pulse: u32,
    specs: [ChannelSpec; 3],
    last: Option<(Instant, u32)>,
    flowing_since: Option<Instant>,
}

impl<S: PulseSource> GasMeter<S> {
    /// A meter of `litres_per_pulse` on `source`; `ids` name its volume,
    /// flow and continuous-flow channels.
    pub fn new(source: S, litres_per_pulse: u32, ids: [ChannelId; 3], leak_minutes: u32) -> Self {
        GasMeter {
            source,
            litres_per_pulse,
            specs: channels(ids, leak_minutes),
            last: None,
            flowing_since: None,
        }
    }

    /// The pulse source, to poll a pin from a timer.
    pub fn source_mut(&mut self) -> &mut S {
        &mut self.source
    }
}

impl<S: PulseSource> Sensor for GasMeter<S> {
    type Error = SensorErrorKind;

    fn channels(&self) -> &[ChannelSpec] {
        &self.specs
    }

    fn sample(&mut self, now: Instant, sink: &mut dyn ReadingSink) -> Result<(), SensorErrorKind> {
        let total = self.source.total()?;
        let litres = u64::from(total) * u64::from(self.litres_per_pulse);
        let (flow, since) = match self.last {
            Some((then, before)) => {
                let delta =
                    u64::from(total.wrapping_sub(before)) * u64::from(self.litres_per_pulse);
                let ms = now.saturating_since(then).as_millis().max(1);
                if delta > 0 {
                    (
                        delta * 3_600_000 / ms,
                        Some(*self.flowing_since.get_or_insert(then)),
                    )
                } else {
                    (0, None)
                }
            }
            None => (0, None),
        };
        self.flowing_since = since;
        self.last = Some((now, total));
        let minutes = since.map_or(0, |s| now.saturating_since(s).as_millis() / 60_000);
        let values = [litres, flow, minutes];
        for (spec, v) in self.specs.iter().zip(values) {
            let v = i32::try_from(v).map_err(|_| SensorErrorKind::OutOfRange)?;
            sink.push_reading(Reading::new(spec.id, now, Value::Scaled(v)))
                .map_err(|_| SensorErrorKind::SinkFull)?;
        }
        Ok(())
    }
}

/// Counting is done by the interrupt or the pin poll, so sampling never
/// waits: the async driver is the blocking one.
impl<S: PulseSource> telemark_core::sensor::AsyncSensor for GasMeter<S> {
    type Error = SensorErrorKind;

    fn channels(&self) -> &[ChannelSpec] {
        &self.specs
    }

    async fn sample(
        &mut self,
        now: Instant,
        sink: &mut dyn ReadingSink,
    ) -> Result<(), SensorErrorKind> {
        Sensor::sample(self, now, sink)
    }
}
