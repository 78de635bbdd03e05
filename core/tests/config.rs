//! Remote configuration through the engine: applied whole, or refused with
//! a reason while the old config stays; reported upstream either way.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use telemark_core::channel::{ChannelSpec, Range, Unit, ValueKind};
use telemark_core::config::{ConfigError, EngineConfig};
use telemark_core::engine::{Boot, Engine};
use telemark_core::model::{ChannelId, Severity};
use telemark_core::rules::Rules;
use telemark_core::stager::StagerConfig;
use telemark_core::store::{FullPolicy, Lane, RamStore, RecordStore};
use telemark_core::time::{Duration, Instant};
use telemark_core::uplink::UplinkConfig;
use telemark_core::wire::report::{Report, ResetReason};
use telemark_core::wire::seal::{Key, Sealing};
use telemark_core::wire::Epoch;

const TEMP: ChannelSpec = ChannelSpec::new(
    ChannelId(1),
    Unit::Celsius,
    ValueKind::Scaled { decimals: 1 },
    Range::new(-20.0, 60.0),
    Duration::from_mins(5),
    Rules::NONE.high(40.0, 1.0, Severity::Critical),
);

type TestEngine = Engine<RamStore<512, 2048>, 4, 64, 256>;

fn engine() -> TestEngine {
    let config = EngineConfig {
        uplink: UplinkConfig::new(5, 256, Duration::from_mins(60)),
        stager: StagerConfig::new(64, 190, Duration::from_mins(60)),
        heartbeat: Duration::from_mins(360),
    };
    Engine::new(
        &[TEMP],
        RamStore::new(FullPolicy::EvictOldest),
        config,
        Boot {
            reset_reason: ResetReason::PowerOn,
            epoch: Epoch(1),
            sealing: sealing(),
        },
    )
    .unwrap()
}

fn sealing() -> Sealing {
    Sealing::key(1, Key::from_bytes([1; 32]))
}

/// A CBOR map from (key, encoded value) pairs; small keys only.
fn cbor_map(entries: &[(u8, &[u8])]) -> Vec<u8> {
    let mut out = vec![0xa0 | entries.len() as u8];
    for (k, v) in entries {
        out.push(*k);
        out.extend_from_slice(v);
    }
    out
}

fn uint(v: u32) -> Vec<u8> {
    match v {
        0..=23 => vec![v as u8],
        24..=255 => vec![0x18, v as u8],
        256..=65535 => vec![0x19, (v >> 8) as u8, v as u8],
        _ => vec![
            0x1a,
            (v >> 24) as u8,
            (v >> 16) as u8,
            (v >> 8) as u8,
            v as u8,
        ],
    }
}

fn last_config_report(e: &mut TestEngine) -> (u32, u8, u16) {
    let mut found = None;
    let mut n = 0;
    while let Ok(Some(r)) = e.store_mut().peek(n) {
        if r.meta.lane == Lane::Alert {
            if let Ok(Report::ConfigStatus {
                version,
                code,
                detail,
            }) = Report::decode(r.payload)
            {
                found = Some((version, code, detail));
            }
        }
        n += 1;
    }
    found.expect("a config report")
}

#[test]
fn an_update_is_applied_and_reported() {
    let mut e = engine();
    let update = cbor_map(&[(0, &uint(1)), (1, &uint(900)), (2, &uint(43_200))]);
    assert_eq!(e.apply_config(Instant::from_millis(1), &update), Ok(1));
    let c = e.config();
    assert_eq!(c.version, 1);
    assert_eq!(c.engine.uplink.report_interval, Duration::from_mins(15));
    assert_eq!(c.engine.heartbeat, Duration::from_mins(720));
    assert_eq!(last_config_report(&mut e), (1, 0, 0));
}

#[test]
fn the_link_is_held_between_sessions_when_the_config_says_so() {
    let mut e = engine();
    assert!(!e.config().engine.uplink.keep_link_up);
    let keep = cbor_map(&[(0, &uint(1)), (13, &uint(1))]);
    assert_eq!(e.apply_config(Instant::from_millis(1), &keep), Ok(1));
    assert!(e.config().engine.uplink.keep_link_up);
    assert!(e.uplink().config().keep_link_up);
    // The stored form carries it, and restores it.
    let mut buf = [0u8; 256];
    let n = e.config().encode(&mut buf).unwrap();
    let restored = telemark_core::config::ConfigUpdate::parse(&buf[..n])
        .unwrap()
        .apply(&engine().config().clone())
        .unwrap();
    assert!(restored.engine.uplink.keep_link_up);
    // 2 is neither.
    let bad = cbor_map(&[(0, &uint(2)), (13, &uint(2))]);
    assert_eq!(
        e.apply_config(Instant::from_millis(2), &bad),
        Err(ConfigError::OutOfRange(13))
    );
    assert!(e.config().engine.uplink.keep_link_up);
    let go = cbor_map(&[(0, &uint(3)), (13, &uint(0))]);
    assert_eq!(e.apply_config(Instant::from_millis(3), &go), Ok(3));
    assert!(!e.uplink().config().keep_link_up);
}

#[test]
fn channel_rules_and_resolution_change_atomically() {
    let mut e = engine();
    // Channel 1: period 60 s, 2 decimals, high threshold 45 °C, no stuck rule.
    let mut channel = vec![0xa4, 0x00, 0x01, 0x01, 0x18, 60, 0x02, 0x02, 0x04, 0x83];
    channel.extend_from_slice(&[0x18, 45, 0x01, 0x02]);
    let mut update = cbor_map(&[(0, &uint(2))]);
    update[0] += 1;
    update.push(12);
    update.push(0x81);
    update.extend_from_slice(&channel);
    assert_eq!(e.apply_config(Instant::ZERO, &update), Ok(2));
    let spec = *e.spec(ChannelId(1)).unwrap();
    assert_eq!(spec.period, Duration::from_secs(60));
    assert_eq!(spec.kind, ValueKind::Scaled { decimals: 2 });
    assert_eq!(spec.rules.high.unwrap().limit, 45.0);
}

#[test]
fn an_invalid_update_is_refused_with_its_reason_and_changes_nothing() {
    let mut e = engine();
    let before = e.config();
    // A valid report interval, but an MTU too small for the blocks: nothing applies.
    let update = cbor_map(&[(0, &uint(3)), (1, &uint(60)), (3, &uint(40))]);
    assert_eq!(
        e.apply_config(Instant::ZERO, &update),
        Err(ConfigError::Inconsistent)
    );
    assert_eq!(e.config(), before);
    assert_eq!(
        last_config_report(&mut e),
        (0, ConfigError::Inconsistent.code(), 0)
    );

    let unknown_channel = cbor_map(&[(0, &uint(3)), (12, &[0x81, 0xa1, 0x00, 0x09])]);
    assert_eq!(
        e.apply_config(Instant::ZERO, &unknown_channel),
        Err(ConfigError::UnknownChannel(ChannelId(9)))
    );
    assert_eq!(last_config_report(&mut e), (0, 4, 9));

    assert_eq!(
        e.apply_config(Instant::ZERO, &[0xff, 0x00]),
        Err(ConfigError::Malformed)
    );
    assert_eq!(
        e.apply_config(Instant::ZERO, &cbor_map(&[(0, &uint(1)), (14, &uint(1))])),
        Err(ConfigError::UnknownKey(14))
    );
    assert_eq!(e.config(), before);
}

#[test]
fn a_stale_version_is_refused() {
    let mut e = engine();
    assert_eq!(
        e.apply_config(Instant::ZERO, &cbor_map(&[(0, &uint(5))])),
        Ok(5)
    );
    assert_eq!(
        e.apply_config(Instant::ZERO, &cbor_map(&[(0, &uint(5))])),
        Err(ConfigError::StaleVersion)
    );
    assert_eq!(e.config().version, 5);
}

#[test]
fn commands_run_once_per_id_and_report_the_same_result() {
    use telemark_core::engine::Action;
    use telemark_core::wire::frame::Command;
    let mut e = engine();
    let now = Instant::from_millis(5_000);
    let valve = Command::SetOutput {
        output: 2,
        value: 1,
    };
    assert!(!e.run_command(now, 7, valve));
    assert_eq!(
        e.poll(now),
        Action::SetOutput {
            output: 2,
            value: 1
        }
    );
    // The server did not see the result and asks again: reported, not run.
    assert!(e.run_command(now, 7, valve));
    let mut outputs = 0;
    let mut results = 0;
    loop {
        match e.poll(now) {
            Action::SetOutput { .. } => outputs += 1,
            Action::Sleep(_) => break,
            _ => {}
        }
        if outputs > 1 {
            break;
        }
    }
    let mut n = 0;
    while let Ok(Some(r)) = e.store_mut().peek(n) {
        if let Ok(Report::CommandResult {
            id: 7,
            status: 0,
            value: 1,
        }) = Report::decode(r.payload)
        {
            results += 1;
        }
        n += 1;
    }
    assert_eq!(outputs, 0, "the repeated command ran again");
    assert_eq!(results, 2, "each delivery of the command is answered");
    // A ping answers with the uptime.
    assert!(!e.run_command(now, 8, Command::Ping));
}

#[test]
fn a_reboot_waits_until_its_result_is_acknowledged() {
    use telemark_core::engine::Action;
    use telemark_core::store::SeqRange;
    use telemark_core::wire::frame::{Command, RecordsFrame, ResponseWriter};
    use telemark_core::wire::seal::{open, Direction, FrameKind, Header};
    let mut e = engine();
    let now = Instant::from_millis(1_000);
    assert!(!e.run_command(now, 1, Command::Reboot));
    // The result goes out first; no reboot while it is unacknowledged.
    let mut sent = None;
    loop {
        match e.poll(now) {
            Action::Reboot => panic!("rebooted before the result was delivered"),
            Action::Send(frame) => {
                let mut bytes = frame.to_vec();
                let (header, body) = open(&mut bytes, &sealing(), Direction::Up).unwrap();
                let frame = RecordsFrame::parse(&header, body).unwrap();
                sent = Some((
                    header.counter,
                    frame.records().map(|r| r.record.seq).collect::<Vec<_>>(),
                ))
            }
            Action::Sleep(_) => break,
            _ => {}
        }
    }
    let (counter, seqs) = sent.expect("the result was sent");
    let ranges: Vec<SeqRange> = seqs.iter().map(|&s| SeqRange::single(s)).collect();
    let mut ack = [0u8; 128];
    let header = Header::new(FrameKind::Response, 5, Epoch(1), counter, &sealing());
    let w = ResponseWriter::new(&mut ack, &header, None, &ranges, &sealing()).unwrap();
    let n = w.finish(&sealing()).unwrap();
    e.on_frame(now, &mut ack[..n]).unwrap();
    assert_eq!(e.poll(now), Action::Reboot);
}

#[test]
fn a_key_the_store_cannot_keep_or_under_the_id_in_force_is_refused_and_reported() {
    use telemark_core::wire::report::KeyStatus;
    let mut e = engine();
    let other = Key::from_bytes([9; 32]);
    // A RAM store loses a key with the power: taking it would strand the
    // device with a key the server retired.
    assert_eq!(e.take_key(2, other.clone()), KeyStatus::NotPersistent);
    assert_eq!(e.take_key(1, other), KeyStatus::Refused);
    assert_eq!(e.take_key(1, Key::from_bytes([1; 32])), KeyStatus::InUse);
    let mut reports = Vec::new();
    let mut n = 0;
    while let Ok(Some(r)) = e.store_mut().peek(n) {
        if let Ok(Report::KeyStatus { id, status }) = Report::decode(r.payload) {
            reports.push((id, status));
        }
        n += 1;
    }
    reports.sort_by_key(|&(id, s)| (id, s as u8));
    assert_eq!(
        reports,
        [
            (1, KeyStatus::InUse),
            (1, KeyStatus::Refused),
            (2, KeyStatus::NotPersistent)
        ]
    );
}
