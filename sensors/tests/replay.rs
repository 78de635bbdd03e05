//! Replaying a real recording: pace, channels, and starting over at the end.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use telemark_core::channel::{ChannelSpec, Range, Unit, ValueKind};
use telemark_core::model::{ChannelId, Reading, Value};
use telemark_core::rules::Rules;
use telemark_core::sensor::Sensor;
use telemark_core::time::{Duration, Instant};
use telemark_sensors::replay::Replay;

const TEMP: ChannelSpec = ChannelSpec::new(
    ChannelId(1),
    Unit::Celsius,
    ValueKind::Scaled { decimals: 1 },
    Range::new(-40.0, 60.0),
    Duration::from_mins(60),
    Rules::NONE,
);
const RH: ChannelSpec = ChannelSpec::new(
    ChannelId(2),
    Unit::Percent,
    ValueKind::Scaled { decimals: 0 },
    Range::new(0.0, 100.0),
    Duration::from_mins(60),
    Rules::NONE,
);

#[test]
fn the_weather_recording_replays_at_its_pace_and_loops() {
    let csv = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../benches/data/weather-greensboro-hourly.csv"
    ))
    .unwrap();
    let mut replay = Replay::new(&csv, [("temp_air_c", TEMP), ("rel_humidity_pct", RH)]);
    let mut out: Vec<Reading> = Vec::new();
    // The first hour: one temperature and one humidity (other channels skipped).
    replay.sample(Instant::ZERO, &mut out).unwrap();
    assert_eq!(
        out.iter().map(|r| (r.channel, r.value)).collect::<Vec<_>>(),
        [
            (ChannelId(1), Value::Scaled(100)),
            (ChannelId(2), Value::Scaled(77))
        ]
    );
    // Nothing new until the next hour of the recording.
    replay
        .sample(Instant::from_millis(3_599_999), &mut out)
        .unwrap();
    assert_eq!(out.len(), 2);
    replay
        .sample(Instant::from_millis(3_600_000), &mut out)
        .unwrap();
    assert_eq!(out.len(), 4);
    // Sampled hourly for a year and an hour: every hour once, then the
    // recording starts over.
    out.clear();
    for hour in 2..=8761u64 {
        replay
            .sample(Instant::from_millis(hour * 3_600_000), &mut out)
            .unwrap();
    }
    assert_eq!(out.len(), 2 * 8760);
    assert_eq!(
        out[out.len() - 2].value,
        Value::Scaled(100),
        "the first hour again"
    );
}
