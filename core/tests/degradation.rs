//! Offline degradation: with no link, the oldest blocks lose half their
//! readings before any block is evicted, and every reading is accounted for;
//! in the device profile, which does not decimate, blocks are evicted and
//! every reading is accounted for too.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use telemark_core::channel::{ChannelSpec, Range, Unit, ValueKind};
use telemark_core::codec::{BlockCodec, CompactCodec};
use telemark_core::config::EngineConfig;
use telemark_core::engine::Boot;
use telemark_core::engine::{Action, Engine};
use telemark_core::model::{ChannelId, Quality, Reading, Value};
use telemark_core::profile::{self, Profile};
use telemark_core::rules::Rules;
use telemark_core::stager::StagerConfig;
use telemark_core::store::{FullPolicy, Lane, RamStore, RecordStore};
use telemark_core::time::{Duration, Instant};
use telemark_core::uplink::UplinkConfig;
use telemark_core::wire::report::ResetReason;
use telemark_core::wire::seal::Sealing;
use telemark_core::wire::Epoch;

const LEVEL: ChannelSpec = ChannelSpec::new(
    ChannelId(3),
    Unit::Percent,
    ValueKind::Scaled { decimals: 1 },
    Range::new(0.0, 100.0),
    Duration::from_mins(1),
    Rules::NONE,
);

type Device<P = profile::Full> = Engine<RamStore<256, 2048>, 2, 64, 256, P>;

/// A level sensor a minute apart, blocks of an hour, no authentication.
fn device<P: Profile>() -> Device<P> {
    let config = EngineConfig {
        uplink: UplinkConfig::new(1, 256, Duration::from_mins(60)),
        stager: StagerConfig::new(60, 190, Duration::from_mins(60)),
        heartbeat: Duration::from_mins(24 * 60),
    };
    Engine::new(
        &[LEVEL],
        RamStore::new(FullPolicy::EvictOldest),
        config,
        Boot {
            reset_reason: ResetReason::PowerOn,
            epoch: Epoch(1),
            sealing: Sealing::Unauthenticated,
        },
    )
    .unwrap()
}

/// Three days a minute apart with no network at all, `after_minute` called
/// after each minute; the readings sampled.
fn offline_for_three_days<P: Profile>(
    engine: &mut Device<P>,
    mut after_minute: impl FnMut(&Device<P>),
) -> u32 {
    let mut produced = 0u32;
    for minute in 0..3 * 24 * 60u64 {
        let now = Instant::from_millis(minute * 60_000);
        loop {
            match engine.poll(now) {
                Action::Sample(ch) => {
                    // A noisy level: blocks do not compress to nothing.
                    let v = ((minute * 7919) % 1000) as i32;
                    engine.on_reading(now, Reading::new(ch, now, Value::Scaled(v)));
                    produced += 1;
                }
                Action::RadioOn => engine.on_link_down(now),
                Action::Sleep(_) => break,
                _ => {}
            }
        }
        after_minute(engine);
    }
    produced
}

/// Every reading sampled is staged, stored, acknowledged, evicted or
/// decimated away, and counted as such.
fn every_reading_is_counted<P: Profile>(engine: &Device<P>, produced: u32) {
    let c = engine.store().counters().routine;
    let pending: u32 = engine
        .store()
        .iter()
        .filter(|r| r.meta.lane == Lane::Routine)
        .map(|r| u32::from(r.meta.readings))
        .sum();
    assert_eq!(
        c.pushed_readings,
        c.acked_readings + c.evicted_readings + c.decimated_readings + pending
    );
    assert_eq!(produced, c.pushed_readings + engine.staged() as u32);
}

#[test]
fn blocks_are_decimated_before_anything_is_evicted() {
    let mut engine: Device = device();
    let mut first_eviction_at_decimated = None;
    let produced = offline_for_three_days(&mut engine, |engine| {
        let c = engine.store().counters().routine;
        if c.evicted_readings > 0 && first_eviction_at_decimated.is_none() {
            first_eviction_at_decimated = Some(c.decimated_readings);
        }
    });
    let c = engine.store().counters().routine;
    assert!(c.decimated_readings > 0, "nothing decimated");
    assert!(
        first_eviction_at_decimated.unwrap_or(1) > 0,
        "evicted before decimating"
    );
    every_reading_is_counted(&engine, produced);
    // Decimated blocks are flagged, and their readings are marked.
    let decimated: Vec<_> = engine.store().iter().filter(|r| r.meta.decimated).collect();
    assert!(!decimated.is_empty());
    for record in decimated {
        let mut readings = Vec::new();
        CompactCodec.decode(record.payload, &mut readings).unwrap();
        assert_eq!(readings.len(), usize::from(record.meta.readings));
        assert!(readings
            .iter()
            .all(|r| r.quality.contains(Quality::DECIMATED)));
        // Every other minute is left.
        assert!(readings
            .windows(2)
            .all(|w| w[1].time.as_millis() - w[0].time.as_millis() >= 120_000));
    }
    // The heartbeat reports it.
    assert_eq!(
        engine.heartbeat(Instant::ZERO).decimated,
        c.decimated_readings
    );
}

#[test]
fn decimation_never_rewrites_a_record_in_flight() {
    let mut engine = device();
    let run = |engine: &mut Device, from: u64, minutes: u64, link: bool| {
        let mut sent = false;
        for minute in from..from + minutes {
            let now = Instant::from_millis(minute * 60_000);
            loop {
                match engine.poll(now) {
                    Action::Sample(ch) => {
                        let v = ((minute * 7919) % 1000) as i32;
                        engine.on_reading(now, Reading::new(ch, now, Value::Scaled(v)));
                    }
                    // The frame goes out and its answer never comes back.
                    Action::Send(_) if link => {
                        engine.on_sent(now);
                        sent = true;
                    }
                    Action::RadioOn if !link || sent => engine.on_link_down(now),
                    Action::Sleep(_) => break,
                    _ => {}
                }
            }
            if sent {
                return minute;
            }
        }
        from + minutes
    };
    // A few hours offline, then the link comes up for one frame, whose
    // response is lost: its records stay in flight until the next frame.
    let at = run(&mut engine, 0, 6 * 60, false);
    let at = run(&mut engine, at, 24 * 60, true);
    let in_flight: Vec<(u32, Vec<u8>)> = engine
        .store()
        .iter()
        .filter(|r| r.meta.lane == Lane::Routine && engine.uplink().in_flight().contains(&r.seq))
        .map(|r| (r.seq.0, r.payload.to_vec()))
        .collect();
    assert!(!in_flight.is_empty(), "no block in flight");
    assert_eq!(engine.store().counters().routine.decimated_readings, 0);
    // Offline again, up to the first decimation: the oldest blocks are the
    // ones in flight, and it goes around them.
    let mut minute = at + 1;
    while engine.store().counters().routine.decimated_readings == 0 {
        minute = run(&mut engine, minute, 10, false);
        assert!(minute < at + 7 * 24 * 60, "no decimation in a week");
    }
    for (seq, payload) in &in_flight {
        let now = engine.store().iter().find(|r| r.seq.0 == *seq).unwrap();
        assert!(!now.meta.decimated);
        assert_eq!(
            &now.payload.to_vec(),
            payload,
            "record {seq} rewritten in flight"
        );
    }
}

#[test]
fn the_device_profile_evicts_without_decimating_and_counts_every_reading() {
    let mut engine: Device<profile::Device> = device();
    let produced = offline_for_three_days(&mut engine, |_| {});
    let c = engine.store().counters().routine;
    assert_eq!(c.decimated_readings, 0);
    assert!(c.evicted_readings > 0, "three days fit 2 KiB");
    every_reading_is_counted(&engine, produced);
    assert_eq!(engine.heartbeat(Instant::ZERO).evicted, c.evicted_readings);
    // What is left decodes on the server, each reading as it was sampled.
    for record in engine
        .store()
        .iter()
        .filter(|r| r.meta.lane == Lane::Routine)
    {
        let mut readings = Vec::new();
        CompactCodec.decode(record.payload, &mut readings).unwrap();
        assert_eq!(readings.len(), usize::from(record.meta.readings));
        assert!(readings.iter().all(|r| r.quality == Quality::GOOD));
    }
}
