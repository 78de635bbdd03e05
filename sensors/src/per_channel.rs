//! A multi-channel sensor asked for one channel at a time.
//!
//! The engine schedules each channel on its own and asks for them one by
//! one ([`telemark_core::engine::Action::Sample`]). A sensor that measures
//! several channels at once (a BME280: temperature, pressure, humidity)
//! should be measured once for all of them: [`PerChannel`] measures it the
//! first time one of its channels is asked for at an instant, and hands out
//! the other channels' readings from that measurement when they are asked
//! for at the same instant.
//!
//! ```
//! use telemark_core::model::{ChannelId, Reading};
//! use telemark_core::sensor::Sensor;
//! use telemark_core::time::Instant;
//! use telemark_sensors::per_channel::PerChannel;
//! use telemark_sensors::pulse::{GasMeter, SharedPulses};
//!
//! static PULSES: SharedPulses = SharedPulses::new();
//! let ids = [ChannelId(1), ChannelId(2), ChannelId(3)];
//! let mut meter: PerChannel<_, 3> = PerChannel::new(GasMeter::new(&PULSES, 10, ids, 60));
//! let now = Instant::from_millis(60_000);
//! let mut out: Vec<Reading> = Vec::new();
//! for id in ids {
//!     meter.sample(id, now, &mut out).unwrap();
//! }
//! // One reading per channel, all from one measurement.
//! assert_eq!(out.iter().map(|r| r.channel).collect::<Vec<_>>(), ids);
//! ```

use telemark_core::model::{ChannelId, Reading, ReadingSink};
use telemark_core::sensor::{Sensor, SensorError, SensorErrorKind};
use telemark_core::time::Instant;

/// Sensor `S`, of up to `N` channels, asked for one channel at a time.
pub struct PerChannel<S, const N: usize> {
    sensor: S,
    at: Option<Instant>,
    readings: heapless::Vec<Reading, N>,
    failed: Option<SensorErrorKind>,
}

impl<S: Sensor, const N: usize> PerChannel<S, N> {
    /// Wraps `sensor`.
    pub fn new(sensor: S) -> Self {
        PerChannel {
            sensor,
            at: None,
            readings: heapless::Vec::new(),
            failed: None,
        }
    }

    /// True if `channel` is one of the sensor's.
    pub fn has(&self, channel: ChannelId) -> bool {
        self.sensor.channels().iter().any(|c| c.id == channel)
    }

    /// The sensor, to reconfigure it.
    pub fn sensor_mut(&mut self) -> &mut S {
        &mut self.sensor
    }

    /// Writes `channel`'s reading at `now` into `out`, measuring the
    /// sensor if it was not measured at `now` yet. A failed measurement
    /// fails every channel asked for at that instant.
    pub fn sample(
        &mut self,
        channel: ChannelId,
        now: Instant,
        out: &mut dyn ReadingSink,
    ) -> Result<(), SensorErrorKind> {
        if self.at != Some(now) {
            self.readings.clear();
            self.failed = self
                .sensor
                .sample(now, &mut self.readings)
                .err()
                .map(|e| e.kind());
            self.at = Some(now);
        }
        if let Some(kind) = self.failed {
            return Err(kind);
        }
        let reading = self
            .readings
            .iter()
            .find(|r| r.channel == channel)
            .ok_or(SensorErrorKind::Other)?;
        out.push_reading(*reading)
            .map_err(|_| SensorErrorKind::SinkFull)
    }
}
