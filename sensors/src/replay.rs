//! Replay of a recorded CSV: real data through the whole pipeline, without
//! hardware.
//!
//! The recording is long CSV, as in `benches/data/`: `#` comment lines, a
//! header, then `timestamp_ms,channel,value` per line in time order. The
//! replay keeps the recording's pace: a row is due when as much time has
//! passed since the first [`Sensor::sample`] as since the recording's first
//! row; each due row becomes a reading of its channel, stamped with the
//! device's `now` and quantized by the channel's spec. At the end the
//! recording starts over.
//!
//! ```
//! use telemark_core::channel::{ChannelSpec, Range, Unit, ValueKind};
//! use telemark_core::model::{ChannelId, Reading, Value};
//! use telemark_core::rules::Rules;
//! use telemark_core::sensor::Sensor;
//! use telemark_core::time::{Duration, Instant};
//! use telemark_sensors::replay::Replay;
//!
//! const AIR: ChannelSpec = ChannelSpec::new(ChannelId(1), Unit::Celsius,
//!     ValueKind::Scaled { decimals: 1 }, Range::new(-40.0, 60.0), Duration::from_mins(60), Rules::NONE);
//! let csv = "# weather\ntimestamp_ms,channel,value\n0,temp_air_c,10.0\n3600000,temp_air_c,9.4\n";
//! let mut replay = Replay::new(csv, [("temp_air_c", AIR)]);
//! let mut out: Vec<Reading> = Vec::new();
//! replay.sample(Instant::from_millis(0), &mut out).unwrap();
//! replay.sample(Instant::from_millis(3_600_000), &mut out).unwrap();
//! assert_eq!(out.iter().map(|r| r.value).collect::<Vec<_>>(), [Value::Scaled(100), Value::Scaled(94)]);
//! ```

use telemark_core::channel::ChannelSpec;
use telemark_core::model::{Reading, ReadingSink};
use telemark_core::sensor::{Sensor, SensorErrorKind};
use telemark_core::time::Instant;

/// A sensor that replays a CSV recording of `C` named channels.
pub struct Replay<'a, const C: usize> {
    csv: &'a str,
    names: [&'a str; C],
    specs: [ChannelSpec; C],
    /// Byte offset of the next row.
    next: usize,
    /// The recording's first timestamp, and the device time it maps to.
    origin: Option<(u64, Instant)>,
    /// Recording time added by each pass through the file.
    lap_ms: u64,
    lap: u64,
}

impl<'a, const C: usize> Replay<'a, C> {
    /// Replays `csv`; channel `name` becomes `spec`'s channel. Rows of other
    /// channels are skipped.
    pub fn new(csv: &'a str, channels: [(&'a str, ChannelSpec); C]) -> Self {
        Replay {
            csv,
            names: channels.map(|c| c.0),
            specs: channels.map(|c| c.1),
            next: 0,
            origin: None,
            lap_ms: 0,
            lap: 0,
        }
    }

    /// The next data row at or after byte `at`: (end of row, time, channel, value).
    fn row(&self, mut at: usize) -> Option<(usize, u64, &'a str, &'a str)> {
        loop {
            let rest = self.csv.get(at..)?;
            if rest.is_empty() {
                return None;
            }
            let (line, len) = match rest.find('\n') {
                Some(i) => (rest.get(..i)?, i + 1),
                None => (rest, rest.len()),
            };
            at += len;
            let line = line.trim();
            let mut fields = line.split(',');
            if let (Some(t), Some(ch), Some(v)) = (fields.next(), fields.next(), fields.next()) {
                if let Ok(t) = t.parse::<u64>() {
                    return Some((at, t, ch, v));
                }
            }
        }
    }
}

impl<const C: usize> Sensor for Replay<'_, C> {
    type Error = SensorErrorKind;

    fn channels(&self) -> &[ChannelSpec] {
        &self.specs
    }

    fn sample(&mut self, now: Instant, sink: &mut dyn ReadingSink) -> Result<(), SensorErrorKind> {
        let Some((_, first, _, _)) = self.row(0) else {
            return Err(SensorErrorKind::NotReady);
        };
        let (t0, start) = *self.origin.get_or_insert((first, now));
        let elapsed = now.saturating_since(start).as_millis();
        let mut emitted = 0usize;
        loop {
            let row = match self.row(self.next) {
                Some(row) => row,
                None => {
                    // Start over, one recording-length later.
                    let last = self.row_last_time().unwrap_or(t0);
                    self.lap_ms = last.saturating_sub(t0).saturating_add(1);
                    self.lap += 1;
                    self.next = 0;
                    match self.row(0) {
                        Some(row) => row,
                        None => return Err(SensorErrorKind::NotReady),
                    }
                }
            };
            let (end, t, name, value) = row;
            let offset = t
                .saturating_sub(t0)
                .saturating_add(self.lap_ms.saturating_mul(self.lap));
            if offset > elapsed || emitted > 4096 {
                break;
            }
            self.next = end;
            emitted += 1;
            let Some(i) = self.names.iter().position(|n| *n == name) else {
                continue;
            };
            let (Some(spec), Ok(x)) = (self.specs.get(i), value.parse::<f32>()) else {
                return Err(SensorErrorKind::Other);
            };
            let v = spec.quantize(x).map_err(|_| SensorErrorKind::OutOfRange)?;
            sink.push_reading(Reading::new(spec.id, now, v))
                .map_err(|_| SensorErrorKind::SinkFull)?;
        }
        Ok(())
    }
}

impl<const C: usize> Replay<'_, C> {
    fn row_last_time(&self) -> Option<u64> {
        let mut at = 0;
        let mut last = None;
        while let Some((end, t, _, _)) = self.row(at) {
            last = Some(t);
            at = end;
        }
        last
    }
}
