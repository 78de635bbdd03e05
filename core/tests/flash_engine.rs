//! The engine over the flash store: what a reboot leaves is the store's
//! records, the config in force and a numbering that never repeats.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use telemark_core::channel::{ChannelSpec, Range, Unit, ValueKind};
use telemark_core::config::EngineConfig;
use telemark_core::engine::Boot;
use telemark_core::engine::{Action, Engine};
use telemark_core::model::{ChannelId, Reading, Severity, Value};
use telemark_core::rules::Rules;
use telemark_core::stager::StagerConfig;
use telemark_core::store::{
    Blocking, FlashLayout, FlashStore, FullPolicy, Lane, RecordStore, SimFlash,
};
use telemark_core::time::{Duration, Instant};
use telemark_core::uplink::UplinkConfig;
use telemark_core::wire::frame::Command;
use telemark_core::wire::report::{Crash, CrashKind, Report, ResetReason};
use telemark_core::wire::seal::{Key, Sealing};
use telemark_core::wire::Epoch;

const LEVEL: ChannelSpec = ChannelSpec::new(
    ChannelId(3),
    Unit::Percent,
    ValueKind::Scaled { decimals: 1 },
    Range::new(0.0, 100.0),
    Duration::from_mins(1),
    Rules::NONE,
);

type Flash = SimFlash<1024, 12>;
type Store = FlashStore<Blocking<Flash>, 512>;
type Device = Engine<Store, 2, 64, 256>;

fn layout() -> FlashLayout {
    FlashLayout::split(0..12 * 1024, 1024, 3)
}

fn boot(flash: Flash, reason: ResetReason) -> Device {
    let mut store = Store::new(flash, layout()).unwrap();
    store.mount_or_format().unwrap();
    let epoch = store.start_boot(0xB007).unwrap();
    store.set_routine_policy(FullPolicy::EvictOldest);
    let config = EngineConfig {
        uplink: UplinkConfig::new(1, 256, Duration::from_mins(60)),
        stager: StagerConfig::new(60, 190, Duration::from_mins(60)),
        heartbeat: Duration::from_mins(24 * 60),
    };
    let sealing = Sealing::key(1, Key::from_bytes([1; 32]));
    Engine::new(
        &[LEVEL],
        store,
        config,
        Boot {
            reset_reason: reason,
            epoch,
            sealing,
        },
    )
    .unwrap()
}

/// Runs `minutes` with the link down; returns readings produced.
fn offline(engine: &mut Device, from: u64, minutes: u64) -> u32 {
    let mut produced = 0;
    for minute in from..from + minutes {
        let now = Instant::from_millis(minute * 60_000);
        loop {
            match engine.poll(now) {
                Action::Sample(ch) => {
                    let v = ((minute * 7919) % 1000) as i32;
                    engine.on_reading(now, Reading::new(ch, now, Value::Scaled(v)));
                    produced += 1;
                }
                Action::RadioOn => engine.on_link_down(now),
                Action::Sleep(_) => break,
                _ => {}
            }
        }
    }
    produced
}

#[test]
fn records_config_and_numbering_survive_a_reboot() {
    let mut engine = boot(Flash::new(), ResetReason::PowerOn);
    // {0: 2, 1: 900}: version 2 reports every 15 minutes.
    let update = [0xa2, 0x00, 0x02, 0x01, 0x19, 0x03, 0x84];
    assert_eq!(engine.apply_config(Instant::ZERO, &update), Ok(2));
    offline(&mut engine, 0, 6 * 60);
    let before = engine.store().len();
    let next = engine.store().next_seq();
    assert!(before >= 6, "{before} records");

    // Power cut: only the flash is left.
    let flash = engine.into_store().release().0;
    let mut engine = boot(flash, ResetReason::BrownOut);
    assert_eq!(engine.config().version, 2);
    assert_eq!(
        engine.config().engine.uplink.report_interval,
        Duration::from_mins(15)
    );
    // Every record kept, and the boot's reports: the config in force, then
    // what its channel measures.
    assert_eq!(engine.store().len(), before + 2);
    let mut records: Vec<_> = (0..engine.store().len())
        .map(|n| {
            let r = engine.store_mut().peek(n).unwrap().unwrap();
            (r.seq, Report::decode(r.payload))
        })
        .collect();
    records.sort_by_key(|(seq, _)| *seq);
    let newest: Vec<_> = records.into_iter().rev().take(2).map(|(_, r)| r).collect();
    assert_eq!(
        newest,
        [
            Ok(Report::Channel {
                channel: LEVEL.id,
                unit: LEVEL.unit,
                kind: LEVEL.kind
            }),
            Ok(Report::ConfigStatus {
                version: 2,
                code: 0,
                detail: 0
            }),
        ]
    );
    assert!(engine.store().next_seq() > next);

    // A crash captured before the reset goes out first.
    let crash = Crash::new(
        CrashKind::HardFault,
        0x0800_1234,
        0x0800_1001,
        0x0000_0400,
        5_000,
        "",
    );
    assert!(engine.report_crash(&crash));
    let first = engine.store_mut().peek(0).unwrap().unwrap();
    assert_eq!(first.meta.lane, Lane::Alert);
    assert_eq!(first.meta.severity, Severity::Critical);
    assert_eq!(
        Report::decode(first.payload),
        Ok(Report::Crash {
            crash,
            reset_reason: ResetReason::BrownOut
        })
    );
}

#[test]
fn a_saved_config_that_no_longer_fits_leaves_the_defaults_and_says_so() {
    let mut engine = boot(Flash::new(), ResetReason::PowerOn);
    // {0: 3, 12: [{0: 3, 1: 30}]}: channel 3 every 30 s.
    let update = [
        0xa2, 0x00, 0x03, 0x0c, 0x81, 0xa2, 0x00, 0x03, 0x01, 0x18, 0x1e,
    ];
    assert_eq!(engine.apply_config(Instant::ZERO, &update), Ok(3));
    let flash = engine.into_store().release().0;

    // New firmware without channel 3.
    let mut store = Store::new(flash, layout()).unwrap();
    store.mount().unwrap();
    let config = EngineConfig {
        uplink: UplinkConfig::new(1, 256, Duration::from_mins(60)),
        stager: StagerConfig::new(60, 190, Duration::from_mins(60)),
        heartbeat: Duration::from_mins(24 * 60),
    };
    let other = ChannelSpec {
        id: ChannelId(9),
        ..LEVEL
    };
    let mut engine: Device = Engine::new(
        &[other],
        store,
        config,
        Boot {
            reset_reason: ResetReason::Software,
            epoch: Epoch(9),
            sealing: Sealing::Unauthenticated,
        },
    )
    .unwrap();
    assert_eq!(engine.config().version, 0);
    let mut refused = false;
    for nth in 0..engine.store().len() {
        let r = engine.store_mut().peek(nth).unwrap().unwrap();
        if let Ok(Report::ConfigStatus {
            version: 0,
            code,
            detail: 3,
        }) = Report::decode(r.payload)
        {
            refused = code == 4;
        }
    }
    assert!(refused, "the refusal of the saved config is reported");
}

#[test]
fn flash_blocks_are_decimated_before_they_are_evicted() {
    let mut engine = boot(Flash::new(), ResetReason::PowerOn);
    let produced = offline(&mut engine, 0, 8 * 24 * 60);
    let c = engine.store().counters().routine;
    assert!(c.decimated_readings > 0, "nothing decimated");
    let mut pending = 0u32;
    for nth in 0..engine.store().len() {
        let r = engine.store_mut().peek(nth).unwrap().unwrap();
        if r.meta.lane == Lane::Routine {
            pending += u32::from(r.meta.readings);
        }
    }
    assert_eq!(
        c.pushed_readings,
        c.acked_readings + c.evicted_readings + c.decimated_readings + pending
    );
    assert_eq!(produced, c.pushed_readings + engine.staged() as u32);
    assert_eq!(
        engine.heartbeat(Instant::ZERO).decimated,
        c.decimated_readings
    );
}

#[test]
fn every_boot_has_a_new_epoch_and_records_keep_the_one_that_numbered_them() {
    use telemark_core::store::RecordMeta;
    use telemark_core::uplink::{Uplink, UplinkAction};
    use telemark_core::wire::frame::RecordsFrame;
    use telemark_core::wire::seal::{open, Direction};

    let mut store = Store::new(Flash::new(), layout()).unwrap();
    store.mount_or_format().unwrap();
    let first = store.start_boot(0xB007).unwrap();
    assert_eq!(
        first,
        Epoch(0xB007),
        "a new store starts from the board's entropy"
    );
    let old = store.push(RecordMeta::routine(1), b"one").unwrap();

    let mut store = Store::new(store.release().0, layout()).unwrap();
    assert!(!store.mount_or_format().unwrap().formatted);
    let second = store.start_boot(0xB007).unwrap();
    assert_ne!(second, first, "the epoch advances at every boot");
    let new = store.push(RecordMeta::routine(1), b"two").unwrap();
    assert_eq!(store.boots().epoch_of(old), Some(first));
    assert_eq!(store.boots().epoch_of(new), Some(second));

    // The frame names each record by the epoch that numbered it.
    let sealing = Sealing::key(1, Key::from_bytes([1; 32]));
    let mut up = Uplink::new(
        UplinkConfig::new(1, 256, Duration::from_mins(60)),
        sealing.clone(),
        second,
    );
    up.flush_now();
    let mut buf = [0u8; 256];
    let now = Instant::from_millis(0);
    assert_eq!(
        up.poll(now, &mut store, &mut buf),
        Some(UplinkAction::RadioOn)
    );
    let Some(UplinkAction::Send(n)) = up.poll(now, &mut store, &mut buf) else {
        panic!("nothing sent")
    };
    let (header, body) = open(&mut buf[..n], &sealing, Direction::Up).unwrap();
    assert_eq!(header.epoch, second);
    let names: Vec<_> = RecordsFrame::parse(&header, body)
        .unwrap()
        .records()
        .map(|r| (r.epoch, r.record.seq))
        .collect();
    assert_eq!(names, [(first, old), (second, new)]);
}

#[test]
fn epochs_never_repeat_and_every_record_keeps_the_boot_that_numbered_it() {
    use telemark_core::store::{Lane, RecordMeta, MAX_BOOTS};
    let mut flash = Flash::new();
    let mut seen = Vec::new();
    let mut seqs = Vec::new();
    // More boots than the store keeps, each leaving a record unsent.
    let boots = MAX_BOOTS + 4;
    let mut evicted = 0;
    for _ in 0..boots {
        let mut store = Store::new(flash, layout()).unwrap();
        store.mount_or_format().unwrap();
        let epoch = store.start_boot(0xE0).unwrap();
        evicted += store.counters().routine.evicted_records;
        assert!(!seen.contains(&epoch), "epoch {epoch} started twice");
        seen.push(epoch);
        seqs.push(store.push(RecordMeta::routine(1), b"kept").unwrap());
        flash = store.release().0;
    }
    // When every boot kept still owns a record, the oldest boot's records
    // go, counted as evicted, rather than a new boot's records being named
    // by an older boot (whose uptime would misdate them).
    let mut store = Store::new(flash, layout()).unwrap();
    store.mount_or_format().unwrap();
    let table = store.boots();
    assert_eq!(table.entries().len(), MAX_BOOTS);
    assert_eq!(evicted as usize, boots - MAX_BOOTS);
    let mut named = Vec::new();
    for nth in 0..store.len() {
        let r = store.peek(nth).unwrap().unwrap();
        assert_eq!(r.meta.lane, Lane::Routine);
        named.push((r.seq, table.epoch_of(r.seq)));
    }
    let want: Vec<_> = seqs
        .iter()
        .zip(&seen)
        .skip(boots - MAX_BOOTS)
        .map(|(&seq, &epoch)| (seq, Some(epoch)))
        .collect();
    assert_eq!(named, want);
}

#[test]
fn a_repeated_reboot_command_does_not_reboot_twice() {
    let mut engine = boot(Flash::new(), ResetReason::PowerOn);
    let now = Instant::from_millis(1_000);
    assert!(!engine.run_command(now, 41, Command::Reboot));
    assert!(!engine.run_command(
        now,
        42,
        Command::SetOutput {
            output: 2,
            value: 7
        }
    ));
    // The device reboots (its result was sent, the server's ack lost): only
    // the flash is left.
    let flash = engine.into_store().release().0;
    let mut engine = boot(flash, ResetReason::Software);
    let later = Instant::from_millis(2_000);
    // The server sends both again: each is answered, neither runs.
    assert!(engine.run_command(later, 41, Command::Reboot));
    assert!(engine.run_command(
        later,
        42,
        Command::SetOutput {
            output: 2,
            value: 7
        }
    ));
    for _ in 0..50 {
        let action = engine.poll(later);
        assert!(
            !matches!(action, Action::Reboot | Action::SetOutput { .. }),
            "{action:?}"
        );
        if matches!(action, Action::Sleep(_)) {
            break;
        }
    }
    let store = engine.store_mut();
    let results: Vec<(u32, u8, u32)> = (0..store.len())
        .filter_map(|n| match Report::decode(store.peek(n).ok()??.payload) {
            Ok(Report::CommandResult { id, status, value }) => Some((id, status, value)),
            _ => None,
        })
        .collect();
    // The first boot's results and the repeats', the same.
    assert_eq!(results.iter().filter(|r| **r == (41, 0, 0)).count(), 2);
    assert_eq!(results.iter().filter(|r| **r == (42, 0, 7)).count(), 2);
    // A new command still runs.
    assert!(!engine.run_command(later, 43, Command::Ping));
}
