//! Key rotation by downlink, between the real engine and the gateway: a
//! flash-store device moves to the new key, keeps it through a power cut,
//! and its old key is refused from then on; a RAM-store device refuses the
//! key and goes on with its own. No reading is lost or stored twice.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use rusqlite::Connection;
use telemark_cloud::{Hub, SqliteStore};
use telemark_core::channel::{ChannelSpec, Range, Unit, ValueKind};
use telemark_core::config::EngineConfig;
use telemark_core::engine::{Action, Boot, Engine};
use telemark_core::model::{ChannelId, Reading, Value};
use telemark_core::rules::Rules;
use telemark_core::stager::StagerConfig;
use telemark_core::store::{
    Blocking, FlashLayout, FlashStore, FullPolicy, RamStore, RecordStore, SimFlash,
};
use telemark_core::time::{Duration, Instant};
use telemark_core::uplink::UplinkConfig;
use telemark_core::wire::report::{KeyStatus, ResetReason};
use telemark_core::wire::seal::{Header, Key, Sealing};
use telemark_core::wire::Epoch;

const FLASH_DEVICE: u64 = 0x51;
const RAM_DEVICE: u64 = 0x52;
const PROVISIONED: [u8; 32] = [0x11; 32];
const ROTATED: [u8; 32] = [0x22; 32];
const LEVEL: ChannelSpec = ChannelSpec::new(
    ChannelId(1),
    Unit::Percent,
    ValueKind::Scaled { decimals: 1 },
    Range::new(0.0, 100.0),
    Duration::from_mins(1),
    Rules::NONE,
);

type Flash = SimFlash<1024, 12>;
type FlashDevice = Engine<FlashStore<Blocking<Flash>, 512>, 1, 64, 256>;

fn config(device: u64) -> EngineConfig {
    EngineConfig {
        uplink: UplinkConfig::new(device, 256, Duration::from_mins(10)),
        stager: StagerConfig::new(10, 190, Duration::from_mins(10)),
        heartbeat: Duration::from_mins(24 * 60),
    }
}

fn provisioned() -> Sealing {
    Sealing::key(1, Key::from_bytes(PROVISIONED))
}

fn flash_device(flash: Flash, entropy: u64) -> FlashDevice {
    let layout = FlashLayout::split(0..12 * 1024, 1024, 3);
    let mut store = FlashStore::new(flash, layout).unwrap();
    store.mount_or_format().unwrap();
    let epoch = store.start_boot(entropy).unwrap();
    store.set_routine_policy(FullPolicy::EvictOldest);
    let boot = Boot {
        reset_reason: ResetReason::PowerOn,
        epoch,
        sealing: provisioned(),
    };
    Engine::new(&[LEVEL], store, config(FLASH_DEVICE), boot).unwrap()
}

/// What a run of the device saw.
#[derive(Default)]
struct Run {
    sampled: u64,
    keys: Vec<KeyStatus>,
    /// Key ids named by the frames sent.
    sealed_with: Vec<u8>,
}

/// Runs `engine` for `minutes` of device time from `start`, every frame
/// through the gateway and every response back; then sends what is left.
fn run<S: RecordStore, const CH: usize, const ST: usize, const MTU: usize>(
    engine: &mut Engine<S, CH, ST, MTU>,
    gateway: &mut Hub,
    start: u64,
    minutes: u64,
    run: &mut Run,
) {
    let end = Instant::from_millis((start + minutes) * 60_000);
    let mut now = Instant::from_millis(start * 60_000);
    let mut draining = false;
    loop {
        let frame = match engine.poll(now) {
            Action::Sample(ch) => {
                run.sampled += 1;
                let v = Value::Scaled(400 + (run.sampled % 50) as i32);
                engine.on_reading(now, Reading::new(ch, now, v));
                if draining {
                    engine.flush_now(now);
                }
                continue;
            }
            Action::Send(frame) => frame.to_vec(),
            Action::Sleep(_) if draining => return,
            Action::Sleep(t) if t < end => {
                now = t;
                continue;
            }
            Action::Sleep(_) => {
                now = end;
                draining = true;
                engine.flush_now(now);
                continue;
            }
            _ => continue,
        };
        run.sealed_with
            .push(Header::parse(&frame).unwrap().0.key_id);
        engine.on_sent(now);
        let unix = 1_700_000_000_000 + now.as_millis();
        if let Some(mut response) = gateway.receive(&frame, unix) {
            run.keys
                .extend(engine.on_frame(now, &mut response).unwrap().key);
        }
    }
}

fn readings(gateway: &mut Hub, device: u64) -> u64 {
    gateway.store().reading_count(device).unwrap()
}

/// A hub over a fresh SQLite file, which the test reads beside it.
fn hub(test: &str) -> (Hub, Connection) {
    let path = std::env::temp_dir().join(format!("telemark-{test}-{}.sqlite", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let mut hub = Hub::new(Box::new(SqliteStore::open(&path).unwrap())).unwrap();
    hub.import_key(FLASH_DEVICE, 1, Key::from_bytes(PROVISIONED), 0)
        .unwrap();
    hub.import_key(RAM_DEVICE, 1, Key::from_bytes(PROVISIONED), 0)
        .unwrap();
    (hub, Connection::open(&path).unwrap())
}

#[test]
fn a_flash_device_moves_to_the_new_key_and_keeps_it_through_a_power_cut() {
    let (mut gateway, db) = hub("flash-rotation");
    let mut seen = Run::default();
    let mut device = flash_device(Flash::new(), 0xE1);
    run(&mut device, &mut gateway, 0, 60, &mut seen);
    assert!(seen.sealed_with.iter().all(|&k| k == 1));

    assert!(
        gateway
            .rotate_key(FLASH_DEVICE, 1, Key::from_bytes(ROTATED))
            .is_err(),
        "a new key needs a new id"
    );
    gateway
        .rotate_key(FLASH_DEVICE, 2, Key::from_bytes(ROTATED))
        .unwrap();
    let before = seen.sealed_with.len();
    run(&mut device, &mut gateway, 60, 60, &mut seen);
    assert_eq!(
        seen.keys,
        [KeyStatus::InUse],
        "the device took the key once"
    );
    let after: Vec<u8> = seen.sealed_with[before..].to_vec();
    let switch = after.iter().position(|&k| k == 2).unwrap();
    assert!(
        after[switch..].iter().all(|&k| k == 2),
        "once switched, only the new key: {after:?}"
    );

    // Power cut: RAM is lost; the flash keeps the records and the key.
    let flash = device.into_store().release().0;
    let mut device = flash_device(flash, 0xE2);
    let before = seen.sealed_with.len();
    run(&mut device, &mut gateway, 0, 60, &mut seen);
    assert!(seen.sealed_with[before..].iter().all(|&k| k == 2));

    // Something still holding the provisioned key is refused now.
    let mut old = Engine::<RamStore<512, 4096>, 1, 64, 256>::new(
        &[LEVEL],
        RamStore::new(FullPolicy::EvictOldest),
        config(FLASH_DEVICE),
        Boot {
            reset_reason: ResetReason::PowerOn,
            epoch: Epoch(0xBAD),
            sealing: provisioned(),
        },
    )
    .unwrap();
    let refused_before = gateway.counters().refused.retired_key;
    run(&mut old, &mut gateway, 0, 30, &mut Run::default());
    assert!(gateway.counters().refused.retired_key > refused_before);

    let stored = readings(&mut gateway, FLASH_DEVICE);
    assert_eq!(
        stored, seen.sampled,
        "every reading of the flash device stored once"
    );
    assert_eq!(gateway.counters().conflicts, 0);
    let (state, status): (String, String) = db
        .query_row(
            "SELECT o.state, k.status FROM outbox_key o JOIN key_status k USING (device) \
             WHERE device = ?1",
            [FLASH_DEVICE as i64],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((state.as_str(), status.as_str()), ("in use", "InUse"));
}

#[test]
fn a_ram_device_refuses_the_key_and_keeps_its_own() {
    let (mut gateway, db) = hub("ram-rotation");
    let mut device = Engine::<RamStore<512, 4096>, 1, 64, 256>::new(
        &[LEVEL],
        RamStore::new(FullPolicy::EvictOldest),
        config(RAM_DEVICE),
        Boot {
            reset_reason: ResetReason::PowerOn,
            epoch: Epoch(0x5EED),
            sealing: provisioned(),
        },
    )
    .unwrap();
    gateway
        .rotate_key(RAM_DEVICE, 2, Key::from_bytes(ROTATED))
        .unwrap();
    let mut seen = Run::default();
    run(&mut device, &mut gateway, 0, 120, &mut seen);
    assert_eq!(seen.keys, [KeyStatus::NotPersistent]);
    assert!(seen.sealed_with.iter().all(|&k| k == 1));
    assert_eq!(readings(&mut gateway, RAM_DEVICE), seen.sampled);
    let state: String = db
        .query_row(
            "SELECT state FROM outbox_key WHERE device = ?1",
            [RAM_DEVICE as i64],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(state, "refused");
    assert_eq!(gateway.counters().refused.total(), 0);
}
