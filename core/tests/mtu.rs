//! No record too large for the link: every report fits the smallest MTU the
//! engine accepts, a config update may not lower the MTU below what stored
//! blocks need, and none may raise it above what the link carries.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use telemark_core::channel::{ChannelSpec, Range, Unit, ValueKind};
use telemark_core::config::{ConfigError, EngineConfig};
use telemark_core::engine::{min_mtu, Action, Boot, Engine, EngineError};
use telemark_core::model::{ChannelId, Reading, Severity, Value};
use telemark_core::rules::Rules;
use telemark_core::stager::StagerConfig;
use telemark_core::store::{FullPolicy, Lane, RamStore, RecordMeta, MAX_READINGS};
use telemark_core::time::{Duration, Instant};
use telemark_core::uplink::UplinkConfig;
use telemark_core::wire::frame::{
    frame_overhead, FrameWriter, RecordsFrame, RECORD_EPOCH_BYTES, RECORD_HEADER_MAX,
};
use telemark_core::wire::report::{
    Crash, CrashKind, Heartbeat, Report, ResetReason, CRASH_TEXT, MAX_REPORT_LEN,
};
use telemark_core::wire::seal::{open, Direction, FrameKind, Header, Key, Sealing};
use telemark_core::wire::{Epoch, Record, Seq};

const LEVEL: ChannelSpec = ChannelSpec::new(
    ChannelId(1),
    Unit::Percent,
    ValueKind::Scaled { decimals: 1 },
    Range::new(0.0, 100.0),
    Duration::from_mins(1),
    Rules::NONE,
);

type Device = Engine<RamStore<256, 4096>, 2, 64, 256>;

fn key() -> Key {
    Key::from_bytes([9; 32])
}

fn sealing() -> Sealing {
    Sealing::key(1, key())
}

fn config(device: u64, mtu: u16, block: u16) -> EngineConfig {
    EngineConfig {
        uplink: UplinkConfig::new(device, mtu, Duration::from_mins(60)),
        stager: StagerConfig::new(64, block, Duration::from_mins(60)),
        heartbeat: Duration::from_mins(360),
    }
}

fn device(config: EngineConfig) -> Result<Device, EngineError> {
    Engine::new(
        &[LEVEL],
        RamStore::new(FullPolicy::EvictOldest),
        config,
        Boot {
            reset_reason: ResetReason::PowerOn,
            epoch: Epoch(1),
            sealing: sealing(),
        },
    )
}

#[test]
fn the_widest_reports_fit_max_report_len() {
    let crash = Report::Crash {
        crash: Crash::new(
            CrashKind::HardFault,
            u32::MAX,
            u32::MAX,
            u32::MAX,
            u32::MAX,
            &"x".repeat(CRASH_TEXT + 10),
        ),
        reset_reason: ResetReason::Watchdog,
    };
    let beat = Report::Heartbeat(Heartbeat {
        uptime_s: u32::MAX,
        sampled: u32::MAX,
        sent_readings: u32::MAX,
        bytes_on_air: u32::MAX,
        retries: u32::MAX,
        evicted: u32::MAX,
        decimated: u32::MAX,
        sensor_faults: u32::MAX,
        queue_depth: u32::MAX,
        reset_reason: ResetReason::Watchdog,
        wakeups: u32::MAX,
    });
    let mut buf = [0u8; 128];
    assert_eq!(crash.encode(&mut buf).unwrap(), MAX_REPORT_LEN);
    assert!(beat.encode(&mut buf).unwrap() <= MAX_REPORT_LEN);
}

#[test]
fn the_minimum_mtu_is_the_envelope_and_the_largest_report() {
    for id in [1, 127, 128, u64::MAX] {
        let min = min_mtu(id, &sealing());
        assert_eq!(
            min,
            frame_overhead(id, &sealing())
                + RECORD_HEADER_MAX
                + RECORD_EPOCH_BYTES
                + MAX_REPORT_LEN
        );
        let block =
            (min - frame_overhead(id, &sealing()) - RECORD_HEADER_MAX - RECORD_EPOCH_BYTES) as u16;
        assert!(
            device(config(id, min as u16, block)).is_ok(),
            "id {id}: {min}"
        );
        assert_eq!(
            device(config(id, min as u16 - 1, block - 1)).err(),
            Some(EngineError::MtuBelowReports),
            "id {id}"
        );
    }
    assert_eq!(min_mtu(127, &sealing()), 114);
    assert_eq!(min_mtu(u64::MAX, &sealing()), 123);
}

#[test]
fn a_crash_report_at_the_minimum_mtu_with_the_largest_device_id_is_sent() {
    let id = u64::MAX;
    let mtu = min_mtu(id, &sealing()) as u16;
    let mut engine = device(config(id, mtu, MAX_REPORT_LEN as u16)).unwrap();
    let crash = Crash::new(
        CrashKind::Panic,
        0x0800_1234,
        0x0800_5678,
        0,
        60_000,
        &"p".repeat(CRASH_TEXT),
    );
    assert!(engine.report_crash(&crash));
    let now = Instant::from_millis(1_000);
    for _ in 0..20 {
        if let Action::Send(bytes) = engine.poll(now) {
            assert!(bytes.len() <= usize::from(mtu));
            let mut bytes = bytes.to_vec();
            let (header, body) = open(&mut bytes, &sealing(), Direction::Up).unwrap();
            let frame = RecordsFrame::parse(&header, body).unwrap();
            let sent: Vec<Report> = frame
                .records()
                .filter_map(|r| Report::decode(r.record.payload).ok())
                .collect();
            assert!(
                sent.iter()
                    .any(|r| matches!(r, Report::Crash { crash: c, .. } if *c == crash)),
                "{sent:?}"
            );
            return;
        }
    }
    panic!("the crash report was never sent");
}

/// `{0: version, 3: mtu, 8: block bytes}` in CBOR.
fn mtu_update(version: u8, mtu: u16, block: u16) -> Vec<u8> {
    let mut cbor = vec![0xa3, 0x00, version, 0x03, 0x19];
    cbor.extend_from_slice(&mtu.to_be_bytes());
    cbor.extend_from_slice(&[0x08, 0x19]);
    cbor.extend_from_slice(&block.to_be_bytes());
    cbor
}

#[test]
fn a_lower_mtu_that_would_strand_stored_blocks_is_refused_with_its_reason() {
    let mut engine = device(config(5, 256, 190)).unwrap();
    // A day without a link: blocks of up to 190 bytes wait in the store.
    for minute in 0..24 * 60u64 {
        let now = Instant::from_millis(minute * 60_000);
        loop {
            match engine.poll(now) {
                Action::Sample(ch) => {
                    let v = ((minute * 7919) % 1000) as i32;
                    engine.on_reading(now, Reading::new(ch, now, Value::Scaled(v)));
                }
                Action::RadioOn => engine.on_link_down(now),
                Action::Sleep(_) => break,
                _ => {}
            }
        }
    }
    let largest = engine
        .store()
        .iter()
        .filter(|r| r.meta.lane == Lane::Routine)
        .map(|r| r.payload.len())
        .max()
        .unwrap();
    assert!(largest > 100, "blocks of {largest} bytes");

    // 128 bytes leave room for blocks of 128 - 58 = 70 bytes: refused.
    let at = Instant::from_millis(24 * 3_600_000);
    assert_eq!(
        engine.apply_config(at, &mtu_update(2, 128, 60)),
        Err(ConfigError::StrandsRecords)
    );
    assert_eq!(engine.config().engine.uplink.mtu, 256);
    // The newest config status is the refusal.
    let status = engine
        .store()
        .iter()
        .filter_map(|r| match Report::decode(r.payload) {
            Ok(Report::ConfigStatus { code, .. }) => Some((r.seq, code)),
            _ => None,
        })
        .max()
        .map(|(_, code)| code);
    assert_eq!(status, Some(ConfigError::StrandsRecords.code()));

    // A device with nothing stored takes the same update.
    let mut empty = device(config(5, 256, 190)).unwrap();
    assert_eq!(
        empty.apply_config(Instant::ZERO, &mtu_update(2, 128, 60)),
        Ok(2)
    );
    assert_eq!(empty.config().engine.uplink.mtu, 128);
}

#[test]
fn an_mtu_above_the_links_is_refused() {
    let mut engine = device(config(5, 160, 100)).unwrap();
    engine.set_link_mtu(200);
    assert_eq!(
        engine.apply_config(Instant::ZERO, &mtu_update(2, 256, 190)),
        Err(ConfigError::OutOfRange(3))
    );
    assert_eq!(
        engine.apply_config(Instant::ZERO, &mtu_update(3, 200, 140)),
        Ok(3)
    );
    assert_eq!(engine.config().engine.uplink.mtu, 200);
}

#[test]
fn the_largest_block_fits_a_frame_in_a_later_boot() {
    // 256 bytes, device 5, sealed: blocks up to 256 - 39 - 11 - 8 = 198.
    assert!(device(config(5, 256, 198)).is_ok());
    assert_eq!(
        device(config(5, 256, 199)).err(),
        Some(EngineError::BlockOverMtu)
    );
    // A 198-byte block with the widest header, numbered in an earlier
    // boot, fits a 256-byte frame of a later one.
    let payload = [0x5a; 198];
    let record = Record {
        seq: Seq(u32::MAX - 1),
        meta: RecordMeta {
            lane: Lane::Routine,
            severity: Severity::Info,
            readings: MAX_READINGS,
            decimated: true,
        },
        payload: &payload,
    };
    let header = Header::new(FrameKind::Records, 5, Epoch(2), 1, &sealing());
    let mut buf = [0u8; 256];
    let mut frame = FrameWriter::new(
        &mut buf,
        &header,
        Instant::from_millis(u64::MAX >> 8),
        &sealing(),
    )
    .unwrap();
    frame.push(&record, Some(Epoch(1))).unwrap();
    assert!(frame.finish(&sealing()).unwrap() <= 256);
}
