//! Alerts first, always: on the micro:bit's store (`RamStore<256, 1536>`),
//! a week with no link ends with the critical alert stored and sent before
//! anything else. An unsent heartbeat is replaced by the next; reports of
//! lower severity are held to their share of the alert lane, and counted;
//! a channel's report held back at start-up is sent once there is room.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use telemark_core::channel::{ChannelSpec, Range, Unit, ValueKind};
use telemark_core::config::EngineConfig;
use telemark_core::engine::{alert_share_percent, Action, Boot, Engine};
use telemark_core::model::{AlertKind, ChannelId, Reading, Severity, Value};
use telemark_core::rules::Rules;
use telemark_core::stager::StagerConfig;
use telemark_core::store::{FullPolicy, Lane, RamStore, RecordStore, SeqRange};
use telemark_core::time::{Duration, Instant};
use telemark_core::uplink::UplinkConfig;
use telemark_core::wire::frame::{RecordsFrame, ResponseWriter};
use telemark_core::wire::report::{Report, ResetReason};
use telemark_core::wire::seal::{open, Direction, FrameKind, Header, Sealing};
use telemark_core::wire::Epoch;

type Store = RamStore<256, 1536>;
type Device = Engine<Store, 2, 64, 256>;

/// A tank whose overflow is critical.
const TANK: ChannelSpec = ChannelSpec::new(
    ChannelId(1),
    Unit::Percent,
    ValueKind::Scaled { decimals: 1 },
    Range::new(0.0, 100.0),
    Duration::from_mins(10),
    Rules::NONE.high(90.0, 5.0, Severity::Critical),
);

/// A pump temperature that chatters around a warning threshold: a warning
/// and an info "cleared" every other sample.
const PUMP: ChannelSpec = ChannelSpec::new(
    ChannelId(2),
    Unit::Celsius,
    ValueKind::Scaled { decimals: 1 },
    Range::new(-20.0, 120.0),
    Duration::from_mins(30),
    Rules::NONE.high(60.0, 1.0, Severity::Warning),
);

fn device(heartbeat: Duration) -> Device {
    let config = EngineConfig {
        uplink: UplinkConfig::new(4, 256, Duration::from_mins(60)),
        stager: StagerConfig::new(64, 190, Duration::from_mins(60)),
        heartbeat,
    };
    Engine::new(
        &[TANK, PUMP],
        Store::new(FullPolicy::EvictOldest),
        config,
        Boot {
            reset_reason: ResetReason::PowerOn,
            epoch: Epoch(1),
            sealing: Sealing::Unauthenticated,
        },
    )
    .unwrap()
}

/// Runs `minutes` with no link: the tank at 50 %, the pump at `pump(n)`
/// tenths of a degree on its `n`-th sample.
fn offline(engine: &mut Device, from_min: u64, minutes: u64, pump: impl Fn(u64) -> i32) {
    let mut pump_samples = 0;
    for minute in from_min..from_min + minutes {
        let now = Instant::from_millis(minute * 60_000);
        loop {
            match engine.poll(now) {
                Action::Sample(ch) => {
                    let v = if ch == TANK.id {
                        500
                    } else {
                        pump_samples += 1;
                        pump(pump_samples)
                    };
                    engine.on_reading(now, Reading::new(ch, now, Value::Scaled(v)));
                }
                Action::RadioOn => engine.on_link_down(now),
                Action::Sleep(_) => break,
                _ => {}
            }
        }
    }
}

/// The tank overflows at `minute`, then the link comes back: the records of
/// the first frame the device sends, as (severity, report).
fn overflow_then_first_frame(engine: &mut Device, minute: u64) -> Vec<(Severity, Report)> {
    let at = Instant::from_millis(minute * 60_000);
    engine.on_reading(at, Reading::new(TANK.id, at, Value::Scaled(960)));
    // The alert wakes the radio at once, or after the backoff the week of
    // failed sessions left; within two hours either way.
    for second in 0..2 * 3600 {
        let now = at + Duration::from_secs(second);
        loop {
            match engine.poll(now) {
                Action::Sample(ch) => {
                    engine.on_reading(now, Reading::new(ch, now, Value::Scaled(500)));
                }
                Action::Send(bytes) => {
                    let mut bytes = bytes.to_vec();
                    let (header, body) =
                        open(&mut bytes, &Sealing::Unauthenticated, Direction::Up).unwrap();
                    let frame = RecordsFrame::parse(&header, body).unwrap();
                    return frame
                        .records()
                        .filter(|r| r.record.meta.lane == Lane::Alert)
                        .map(|r| {
                            let report = Report::decode(r.record.payload).unwrap();
                            (r.record.meta.severity, report)
                        })
                        .collect();
                }
                Action::Sleep(_) => break,
                _ => {}
            }
        }
    }
    panic!("no frame sent within two hours of the alert");
}

fn is_overflow(report: &Report) -> bool {
    matches!(report, Report::Alert(a) if a.channel == TANK.id && a.kind == AlertKind::High)
}

#[test]
fn a_week_offline_with_heartbeats_ends_with_the_critical_alert_first() {
    for hours in [1u64, 6] {
        let mut engine = device(Duration::from_mins(hours * 60));
        let week = 7 * 24 * 60;
        offline(&mut engine, 0, week, |_| 400);
        let heartbeats = engine.counters().heartbeats;
        assert!(
            heartbeats >= (week / 60 / hours) as u32,
            "{hours} h: {heartbeats} heartbeats"
        );
        // One heartbeat waits: each replaced the one before it.
        let waiting = engine
            .store()
            .iter()
            .filter(|r| matches!(Report::decode(r.payload), Ok(Report::Heartbeat(_))))
            .count();
        assert_eq!(waiting, 1, "{hours} h");
        let alert_lane = engine.store().counters().alert;
        assert_eq!(alert_lane.superseded_records, heartbeats - 1, "{hours} h");

        let first = overflow_then_first_frame(&mut engine, week);
        assert_eq!(
            engine.store().counters().alert.refused_records,
            0,
            "{hours} h"
        );
        assert_eq!(first[0].0, Severity::Critical, "{hours} h");
        assert!(
            is_overflow(&first[0].1),
            "{hours} h: first {:?}",
            first[0].1
        );
    }
}

#[test]
fn chattering_warnings_leave_room_for_the_critical_alert() {
    let mut engine = device(Duration::from_mins(6 * 60));
    let week = 7 * 24 * 60;
    // 65.0 and 55.0 °C in turn: a warning, then its info "cleared".
    offline(&mut engine, 0, week, |n| if n % 2 == 1 { 650 } else { 550 });

    let store = engine.store();
    let (used, capacity) = (store.used(Lane::Alert), store.capacity(Lane::Alert));
    let held_back = engine.counters().reports_held_back;
    assert!(held_back > 0, "the chatter never reached its share");
    // Warnings stop at their share, and info reports stopped at half.
    let share = |severity| capacity * alert_share_percent(severity) / 100;
    assert!(used <= share(Severity::Warning), "{used} bytes used");
    assert!(used > share(Severity::Info), "{used} bytes used");
    // Held back, not refused: the store itself refused nothing.
    assert_eq!(store.counters().alert.refused_records, 0);
    let first = overflow_then_first_frame(&mut engine, week);
    assert_eq!(engine.store().counters().alert.refused_records, 0);
    assert_eq!(first[0].0, Severity::Critical);
    assert!(is_overflow(&first[0].1), "first {:?}", first[0].1);
    assert!(
        engine.report_crash(&telemark_core::wire::report::Crash::new(
            telemark_core::wire::report::CrashKind::Panic,
            0x100,
            0x200,
            0,
            1_000,
            "overflow",
        ))
    );
}

/// On a store whose alert lane holds one info report within its share, the
/// second channel's report is held back at start-up; it is sent once the
/// first one's acknowledgement makes room, so the server learns what every
/// channel measures.
#[test]
fn a_held_back_channel_report_is_sent_once_there_is_room() {
    let config = EngineConfig {
        uplink: UplinkConfig::new(4, 256, Duration::from_mins(60)),
        stager: StagerConfig::new(64, 190, Duration::from_mins(60)),
        heartbeat: Duration::from_mins(24 * 60),
    };
    let mut engine: Engine<RamStore<56, 1536>, 2, 64, 256> = Engine::new(
        &[TANK, PUMP],
        RamStore::new(FullPolicy::EvictOldest),
        config,
        Boot {
            reset_reason: ResetReason::PowerOn,
            epoch: Epoch(1),
            sealing: Sealing::Unauthenticated,
        },
    )
    .unwrap();
    assert_eq!(engine.counters().reports_held_back, 1);
    let mut reported = Vec::new();
    let now = Instant::from_millis(1_000);
    engine.flush_now(now);
    for _ in 0..4 {
        let mut sent = None;
        loop {
            match engine.poll(now) {
                Action::Sample(ch) => {
                    engine.on_reading(now, Reading::new(ch, now, Value::Scaled(100)))
                }
                Action::Send(frame) => {
                    let mut bytes = frame.to_vec();
                    let (header, body) =
                        open(&mut bytes, &Sealing::Unauthenticated, Direction::Up).unwrap();
                    let records = RecordsFrame::parse(&header, body).unwrap();
                    let seqs: Vec<_> = records.records().map(|r| r.record.seq).collect();
                    for r in records.records() {
                        if let Ok(Report::Channel { channel, .. }) =
                            Report::decode(r.record.payload)
                        {
                            reported.push(channel);
                        }
                    }
                    sent = Some((header.counter, seqs));
                    engine.on_sent(now);
                }
                Action::Sleep(_) => break,
                _ => {}
            }
        }
        let Some((counter, seqs)) = sent else { break };
        let ranges: Vec<SeqRange> = seqs.iter().map(|&s| SeqRange::single(s)).collect();
        let header = Header::new(
            FrameKind::Response,
            4,
            Epoch(1),
            counter,
            &Sealing::Unauthenticated,
        );
        let mut ack = [0u8; 128];
        let w = ResponseWriter::new(&mut ack, &header, None, &ranges, &Sealing::Unauthenticated)
            .unwrap();
        let n = w.finish(&Sealing::Unauthenticated).unwrap();
        engine.on_frame(now, &mut ack[..n]).unwrap();
        engine.flush_now(now);
    }
    assert_eq!(reported, [TANK.id, PUMP.id]);
    // Counted once when made, not again while it waited: the other report
    // held back is the boot heartbeat, made while the first channel report
    // filled the share.
    assert_eq!(engine.counters().reports_held_back, 2);
}
