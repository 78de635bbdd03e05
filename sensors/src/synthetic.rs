//! Deterministic synthetic sensors, for examples, tests and the simulator.
//!
//! Each channel follows a [`Signal`] plus seeded noise, so a run is the same
//! every time. Faults can be scheduled to exercise the core's fault rules.
//!
//! ```
//! use telemark_core::channel::{ChannelSpec, Range, Unit, ValueKind};
//! use telemark_core::model::{ChannelId, Reading, Value};
//! use telemark_core::rules::Rules;
//! use telemark_core::sensor::Sensor;
//! use telemark_core::time::{Duration, Instant};
//! use telemark_sensors::synthetic::{Signal, Synthetic};
//!
//! const ROOM: ChannelSpec = ChannelSpec::new(
//!     ChannelId(1), Unit::Celsius, ValueKind::Scaled { decimals: 2 },
//!     Range::new(-10.0, 50.0), Duration::from_secs(60), Rules::NONE,
//! );
//! let daily = Signal::Sine { mean: 20.0, amplitude: 3.0, period: Duration::from_mins(24 * 60) };
//! let mut sensor = Synthetic::new([ROOM], [daily], 42).with_noise(0.05);
//!
//! let mut out: heapless::Vec<Reading, 4> = heapless::Vec::new();
//! sensor.sample(Instant::from_millis(6 * 3_600_000), &mut out).unwrap();
//! let Value::Scaled(centi) = out[0].value else { unreachable!() };
//! assert!((2290..=2310).contains(&centi), "{centi}"); // 23 °C at the crest
//! ```

use telemark_core::channel::{ChannelSpec, ValueKind};
use telemark_core::model::{Reading, ReadingSink, Value};
use telemark_core::sensor::{Sensor, SensorErrorKind};
use telemark_core::time::{Duration, Instant};

/// The shape a synthetic channel follows, in engineering units.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Signal {
    /// A constant value.
    Constant(f32),
    /// `mean + amplitude * sin(2π t / period)`.
    Sine {
        /// Centre value.
        mean: f32,
        /// Peak deviation from the mean.
        amplitude: f32,
        /// Length of one cycle.
        period: Duration,
    },
    /// Starts at `start` and changes by `per_hour` every hour.
    Ramp {
        /// Value at boot.
        start: f32,
        /// Change per hour.
        per_hour: f32,
    },
    /// A counter that advances by `per_sample` pulses on every sample.
    Pulses {
        /// Pulses added per sample.
        per_sample: u32,
    },
}

/// A temporary change scheduled on one channel.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Episode {
    /// Add `offset` to the channel's value between `from` and `until`.
    Excursion {
        /// Index of the channel in the sensor.
        channel: usize,
        /// Start (inclusive).
        from: Instant,
        /// End (exclusive).
        until: Instant,
        /// Added to the signal.
        offset: f32,
    },
    /// Every sample between `from` and `until` fails with `error`.
    Failure {
        /// Start (inclusive).
        from: Instant,
        /// End (exclusive).
        until: Instant,
        /// The error returned.
        error: SensorErrorKind,
    },
}

const MAX_EPISODES: usize = 8;

/// A sensor of `C` synthetic channels.
#[derive(Clone, Debug)]
pub struct Synthetic<const C: usize> {
    specs: [ChannelSpec; C],
    signals: [Signal; C],
    counters: [u32; C],
    noise: f32,
    rng: u64,
    episodes: heapless::Vec<Episode, MAX_EPISODES>,
}

impl<const C: usize> Synthetic<C> {
    /// Channel `i` follows `signals[i]`; `seed` fixes the noise.
    pub fn new(specs: [ChannelSpec; C], signals: [Signal; C], seed: u64) -> Self {
        Synthetic {
            specs,
            signals,
            counters: [0; C],
            noise: 0.0,
            // xorshift must not start at zero.
            rng: seed ^ 0x9E37_79B9_7F4A_7C15,
            episodes: heapless::Vec::new(),
        }
    }

    /// Adds uniform noise of `±amplitude` engineering units to every
    /// measured (non-counter) channel.
    pub fn with_noise(mut self, amplitude: f32) -> Self {
        self.noise = amplitude;
        self
    }

    /// Schedules an episode; hands it back if 8 are already scheduled.
    pub fn schedule(&mut self, episode: Episode) -> Result<(), Episode> {
        self.episodes.push(episode)
    }

    /// Uniform in [-1, 1).
    fn next_noise(&mut self) -> f32 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    fn failure_at(&self, now: Instant) -> Option<SensorErrorKind> {
        self.episodes.iter().find_map(|e| match *e {
            Episode::Failure { from, until, error } if from <= now && now < until => Some(error),
            _ => None,
        })
    }

    fn offset_at(&self, channel: usize, now: Instant) -> f32 {
        self.episodes
            .iter()
            .map(|e| match *e {
                Episode::Excursion {
                    channel: c,
                    from,
                    until,
                    offset,
                } if c == channel && from <= now && now < until => offset,
                _ => 0.0,
            })
            .sum()
    }
}

impl<const C: usize> Sensor for Synthetic<C> {
    type Error = SensorErrorKind;

    fn channels(&self) -> &[ChannelSpec] {
        &self.specs
    }

    fn sample(&mut self, now: Instant, sink: &mut dyn ReadingSink) -> Result<(), SensorErrorKind> {
        if let Some(error) = self.failure_at(now) {
            return Err(error);
        }
        let t_ms = now.as_millis() as f64;
        for i in 0..C {
            let (Some(spec), Some(signal)) =
                (self.specs.get(i).copied(), self.signals.get(i).copied())
            else {
                break;
            };
            let base = match signal {
                Signal::Constant(v) => v,
                Signal::Sine {
                    mean,
                    amplitude,
                    period,
                } => {
                    let phase = (t_ms / period.as_millis().max(1) as f64) % 1.0;
                    mean + amplitude * libm::sinf((phase * core::f64::consts::TAU) as f32)
                }
                Signal::Ramp { start, per_hour } => start + per_hour * (t_ms / 3_600_000.0) as f32,
                Signal::Pulses { per_sample } => {
                    let counter = self.counters.get_mut(i).ok_or(SensorErrorKind::Other)?;
                    *counter = counter.wrapping_add(per_sample);
                    let value = Value::Counter(*counter);
                    sink.push_reading(Reading::new(spec.id, now, value))
                        .map_err(|_| SensorErrorKind::SinkFull)?;
                    continue;
                }
            };
            let noisy = base + self.noise * self.next_noise() + self.offset_at(i, now);
            let value = match spec.kind {
                ValueKind::Bool => Value::Bool(noisy >= 0.5),
                ValueKind::Counter => Value::Counter(noisy.max(0.0) as u32),
                _ => spec
                    .quantize(noisy)
                    .map_err(|_| SensorErrorKind::OutOfRange)?,
            };
            sink.push_reading(Reading::new(spec.id, now, value))
                .map_err(|_| SensorErrorKind::SinkFull)?;
        }
        Ok(())
    }
}
