//! The SQLite backend: the conformance suites, the upgrade in place of a
//! file the earlier gateway wrote, and a database locked by another
//! process for 10 s while a device keeps sending: the line stays up,
//! nothing is acknowledged during the lock, and every frame is stored
//! once after it.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration as Wall;

use rusqlite::Connection;
use telemark_cloud::{conformance, line, CloudStore, Hub, ReadingQuery, SqliteStore};
use telemark_core::channel::{ChannelSpec, Range, Unit, ValueKind};
use telemark_core::codec::{BlockCodec, CompactCodec};
use telemark_core::config::EngineConfig;
use telemark_core::engine::{Boot, Engine};
use telemark_core::model::{ChannelId, Reading, ReadingSink, Value};
use telemark_core::rules::Rules;
use telemark_core::sensor::SensorErrorKind;
use telemark_core::stager::StagerConfig;
use telemark_core::store::{FullPolicy, RamStore, RecordStore};
use telemark_core::time::{Duration, Instant};
use telemark_core::transport::{step, Board};
use telemark_core::uplink::UplinkConfig;
use telemark_core::wire::report::ResetReason;
use telemark_core::wire::seal::{Key, Sealing};
use telemark_core::wire::Epoch;
use telemark_serial::{SerialTransport, TcpLine};

#[test]
fn the_sqlite_store_conforms() {
    conformance::run(|| Box::new(SqliteStore::in_memory().unwrap()));
}

#[test]
fn the_sqlite_store_conforms_with_a_row_per_reading() {
    conformance::run(|| {
        let mut store = SqliteStore::in_memory().unwrap();
        store.keep_reading_rows(true);
        Box::new(store)
    });
}

#[test]
fn a_file_on_disk_conforms_and_keeps_its_schema_version() {
    let dir = std::env::temp_dir().join(format!("telemark-conform-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut n = 0;
    conformance::run(|| {
        n += 1;
        let path = dir.join(format!("{n}.sqlite"));
        let _ = std::fs::remove_file(&path);
        Box::new(SqliteStore::open(&path).unwrap())
    });
    let store = SqliteStore::open(&dir.join("1.sqlite")).unwrap();
    assert_eq!(
        store.schema_version().unwrap(),
        telemark_cloud::SCHEMA_VERSION
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// The tables of the gateway's file that the upgrade reads, as the gateway
/// created them (schema version 0: it set none).
const GATEWAY_TABLES: &str = "
CREATE TABLE records (
    device INTEGER NOT NULL, epoch INTEGER NOT NULL, seq INTEGER NOT NULL, lane TEXT NOT NULL,
    severity TEXT NOT NULL, decimated INTEGER NOT NULL, declared INTEGER NOT NULL,
    received_ms INTEGER NOT NULL, payload BLOB NOT NULL,
    PRIMARY KEY (device, epoch, seq));
CREATE TABLE readings (
    device INTEGER NOT NULL, epoch INTEGER NOT NULL, seq INTEGER NOT NULL,
    channel INTEGER NOT NULL, time_ms INTEGER NOT NULL, unix_ms INTEGER,
    kind TEXT NOT NULL, value REAL NOT NULL, raw INTEGER NOT NULL, quality INTEGER NOT NULL);
CREATE INDEX readings_by_channel ON readings (device, channel, unix_ms);
CREATE TABLE epochs (
    device INTEGER NOT NULL, epoch INTEGER NOT NULL, highest INTEGER NOT NULL,
    seen INTEGER NOT NULL, anchor_ms INTEGER, PRIMARY KEY (device, epoch));
";

#[test]
fn a_gateway_file_upgrades_in_place() {
    let path = std::env::temp_dir().join(format!("telemark-v1-{}.sqlite", std::process::id()));
    let _ = std::fs::remove_file(&path);
    // Two blocks of device 9 as the gateway stored them: the record with
    // its payload, and a row per reading with its Unix time.
    let anchor = 1_700_000_000_000i64;
    {
        let db = Connection::open(&path).unwrap();
        db.execute_batch(GATEWAY_TABLES).unwrap();
        for (seq, first) in [(0u32, 60u64), (1, 120)] {
            let readings: Vec<Reading> = (0..6)
                .map(|k| {
                    let t = Instant::from_millis((first + k * 10) * 1000);
                    Reading::new(ChannelId(1), t, Value::Scaled(seq as i32 * 10 + k as i32))
                })
                .collect();
            let mut block = vec![0u8; 256];
            let len = CompactCodec.encode(&readings, &mut block).unwrap();
            block.truncate(len);
            db.execute(
                "INSERT INTO records VALUES (9, 3, ?1, 'routine', 'Info', 0, 6, ?2, ?3)",
                rusqlite::params![seq, anchor + 200_000, block],
            )
            .unwrap();
            for r in &readings {
                let ms = r.time.as_millis() as i64;
                let Value::Scaled(v) = r.value else {
                    unreachable!()
                };
                db.execute(
                    "INSERT INTO readings VALUES (9, 3, ?1, 1, ?2, ?3, 'scaled', ?4, ?4, 0)",
                    rusqlite::params![seq, ms, anchor + ms, v],
                )
                .unwrap();
            }
        }
        db.execute("INSERT INTO epochs VALUES (9, 3, 2, 1, ?1)", [anchor])
            .unwrap();
    }
    let mut store = SqliteStore::open(&path).unwrap();
    assert_eq!(
        store.schema_version().unwrap(),
        telemark_cloud::SCHEMA_VERSION
    );
    // The device is known by its id; its keys come from --keys again.
    let devices = store.devices().unwrap();
    assert_eq!(devices.len(), 1);
    assert_eq!((devices[0].id, devices[0].name.as_str()), (9, "device-9"));
    assert_eq!(store.reading_count(9).unwrap(), 12);
    let all = store
        .readings(&ReadingQuery {
            device: 9,
            channel: Some(1),
            from_ms: anchor,
            to_ms: anchor + 3_600_000,
        })
        .unwrap();
    let values: Vec<f64> = all.iter().map(|r| r.value).collect();
    assert_eq!(
        values,
        [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 10.0, 11.0, 12.0, 13.0, 14.0, 15.0]
    );
    assert_eq!(all[0].unix_ms, anchor + 60_000);
    assert_eq!(all[11].unix_ms, anchor + 170_000);
    // The row-per-reading table is gone; the replay window is kept.
    let tables: i64 = store
        .db()
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE name = 'readings'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tables, 0);
    use telemark_server::Store;
    let window = store.epoch_state(9, Epoch(3)).unwrap().unwrap();
    assert_eq!(window.highest, 2);
    drop(store);
    // Opened again: nothing to do.
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(
        store.schema_version().unwrap(),
        telemark_cloud::SCHEMA_VERSION
    );
    let _ = std::fs::remove_file(&path);
}

const DEVICE: u64 = 9;
const KEY: [u8; 32] = [9; 32];
const LEVEL: ChannelSpec = ChannelSpec::new(
    ChannelId(1),
    Unit::Percent,
    ValueKind::Scaled { decimals: 0 },
    Range::new(0.0, 1000.0),
    Duration::from_mins(1),
    Rules::NONE,
);

/// A level that counts up: reading n has value n.
struct Counter(i32);

impl Board for Counter {
    fn sample(
        &mut self,
        ch: ChannelId,
        now: Instant,
        out: &mut dyn ReadingSink,
    ) -> Result<(), SensorErrorKind> {
        self.0 += 1;
        out.push_reading(Reading::new(ch, now, Value::Scaled(self.0)))
            .map_err(|_| SensorErrorKind::SinkFull)
    }
}

#[test]
fn a_locked_database_acknowledges_nothing_keeps_the_line_and_loses_nothing() {
    let path = std::env::temp_dir().join(format!("telemark-lock-{}.sqlite", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let mut hub = Hub::new(Box::new(SqliteStore::open(&path).unwrap())).unwrap();
    hub.import_key(DEVICE, 1, Key::from_bytes(KEY), 0).unwrap();
    let (hub, hub_thread) = hub.spawn().unwrap();
    let served_hub = hub.clone();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let line_closed = Arc::new(AtomicBool::new(false));
    let closed = Arc::clone(&line_closed);
    let server = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let served = line::serve(&served_hub, &mut s, || 1_700_000_000_000);
        closed.store(true, Ordering::Relaxed);
        served.unwrap();
    });

    let config = EngineConfig {
        uplink: {
            let mut u = UplinkConfig::new(DEVICE, 200, Duration::from_mins(5));
            u.ack_timeout = Duration::from_secs(30);
            u.max_backoff = Duration::from_mins(5);
            u
        },
        stager: StagerConfig::new(10, 120, Duration::from_mins(5)),
        heartbeat: Duration::from_mins(60 * 24),
    };
    let boot = Boot {
        reset_reason: ResetReason::PowerOn,
        epoch: Epoch(0x10c4),
        sealing: Sealing::key(1, Key::from_bytes(KEY)),
    };
    let store: RamStore<512, 8192> = RamStore::new(FullPolicy::Refuse);
    let mut engine: Engine<_, 1, 16, 200> = Engine::new(&[LEVEL], store, config, boot).unwrap();
    let mut link: SerialTransport<TcpLine, 256> =
        SerialTransport::new(TcpLine::new(TcpStream::connect(addr).unwrap()));
    let mut board = Counter(0);
    let mut now = Instant::ZERO;
    // Runs the device for `n` steps of a device minute each, 20 ms apart.
    let mut run = |engine: &mut Engine<_, 1, 16, 200>, n: usize, now: &mut Instant| {
        for _ in 0..n {
            step(engine, &mut link, *now, &mut board);
            thread::sleep(Wall::from_millis(20));
            step(engine, &mut link, *now, &mut board);
            *now = *now + Duration::from_mins(1);
        }
    };

    run(&mut engine, 60, &mut now);
    let before_lock = engine.uplink().counters().acks;
    assert!(before_lock > 0, "the device was heard before the lock");

    // Another process takes the database for 10 s.
    let locker = {
        let path = path.clone();
        thread::spawn(move || {
            let db = Connection::open(path).unwrap();
            db.execute_batch("BEGIN EXCLUSIVE").unwrap();
            thread::sleep(Wall::from_secs(10));
            db.execute_batch("COMMIT").unwrap();
        })
    };
    thread::sleep(Wall::from_millis(300));
    // A frame in flight when the lock came may still be answered.
    run(&mut engine, 10, &mut now);
    let at_lock = engine.uplink().counters().acks;
    run(&mut engine, 300, &mut now);
    assert_eq!(
        engine.uplink().counters().acks,
        at_lock,
        "nothing acknowledged while the database was locked"
    );
    assert!(!line_closed.load(Ordering::Relaxed), "the line stayed up");
    locker.join().unwrap();

    // After the lock: everything arrives.
    for _ in 0..200 {
        if engine.store_mut().is_empty() {
            break;
        }
        engine.flush_now(now);
        run(&mut engine, 5, &mut now);
    }
    assert!(
        engine.store_mut().is_empty(),
        "{} records never acknowledged",
        engine.store_mut().len()
    );
    drop(link.release());
    server.join().unwrap();
    drop(hub);
    let mut hub = hub_thread.join().unwrap();
    assert!(hub.counters().store_failures > 0, "the lock was felt");

    let mut values: Vec<i64> = hub
        .store()
        .readings(&ReadingQuery {
            device: DEVICE,
            channel: None,
            from_ms: i64::MIN,
            to_ms: i64::MAX,
        })
        .unwrap()
        .iter()
        .map(|r| r.value as i64)
        .collect();
    values.sort_unstable();
    let sealed = board.0 as usize - engine.staged();
    assert_eq!(values.len(), sealed, "every reading sealed is stored");
    assert!(
        values.iter().enumerate().all(|(i, v)| *v == i as i64 + 1),
        "each once, none missing"
    );
    let _ = std::fs::remove_file(&path);
}

/// A sealed records frame of `device` with one block of `n` readings as
/// record `seq`.
fn sealed_frame(device: u64, key: &Key, counter: u32, seq: u32, n: u64) -> Vec<u8> {
    use telemark_core::wire::frame::FrameWriter;
    use telemark_core::wire::seal::{FrameKind, Header};
    use telemark_core::wire::{Record, RecordMeta, Seq};
    let readings: Vec<Reading> = (0..n)
        .map(|k| {
            let t = Instant::from_millis((u64::from(seq) * n + k) * 1000);
            Reading::new(ChannelId(1), t, Value::Scaled(k as i32))
        })
        .collect();
    let mut block = vec![0u8; 1024];
    let len = CompactCodec.encode(&readings, &mut block).unwrap();
    block.truncate(len);
    let sealing = Sealing::key(1, key.clone());
    let header = Header::new(FrameKind::Records, device, Epoch(1), counter, &sealing);
    let mut buf = vec![0u8; 2048];
    let uptime = Instant::from_millis((u64::from(seq) + 1) * n * 1000);
    let mut w = FrameWriter::new(&mut buf, &header, uptime, &sealing).unwrap();
    let record = Record {
        seq: Seq(seq),
        meta: RecordMeta::routine(n as u16),
        payload: &block,
    };
    w.push(&record, None).unwrap();
    let len = w.finish(&sealing).unwrap();
    buf.truncate(len);
    buf
}

/// Frames that wait while the hub commits are committed together: many
/// senders at once make fewer transactions than frames, every frame is
/// answered, and every reading is stored once.
#[test]
fn frames_that_wait_are_committed_together() {
    let path = std::env::temp_dir().join(format!("telemark-group-{}.sqlite", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let mut hub = Hub::new(Box::new(SqliteStore::open(&path).unwrap())).unwrap();
    let devices: Vec<(u64, Key)> = (0..16)
        .map(|i| {
            let p = hub.add_device(&format!("sender-{i}"), 0).unwrap();
            (p.device.id, p.key)
        })
        .collect();
    let (handle, thread) = hub.spawn().unwrap();
    let senders: Vec<_> = devices
        .iter()
        .cloned()
        .map(|(device, key)| {
            let handle = handle.clone();
            thread::spawn(move || {
                for counter in 1..=25u32 {
                    let frame = sealed_frame(device, &key, counter, counter - 1, 10);
                    let answer = handle.receive_blocking(telemark_cloud::Arrival {
                        device: None,
                        frame,
                        received_unix_ms: 1_700_000_000_000,
                    });
                    assert!(answer.is_ok(), "frame {counter} of {device}: {answer:?}");
                }
            })
        })
        .collect();
    for s in senders {
        s.join().unwrap();
    }
    drop(handle);
    let mut hub = thread.join().unwrap();
    let (frames, commits) = (hub.counters().frames, hub.figures().commits);
    assert_eq!(frames, 16 * 25);
    assert!(commits < frames, "{commits} commits for {frames} frames");
    for (device, _) in devices {
        assert_eq!(hub.store().reading_count(device).unwrap(), 250);
    }
    println!("{frames} frames in {commits} commits");
    let _ = std::fs::remove_file(&path);
}

/// A tmpfs of its own, unmounted when dropped.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    /// A 4 MiB filesystem; `None` where this user may not mount one.
    fn mount(name: &str) -> Option<SmallDisk> {
        let dir = std::env::temp_dir().join(format!("telemark-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        mounted.then(|| SmallDisk(dir))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The disk fills up: a frame that arrives is acknowledged to no one and
/// the service keeps going; once there is room, the same frame sent again
/// is stored, once. On a real filesystem that runs full (a tmpfs the
/// test mounts, so it runs as root, as CI does; elsewhere it says why it
/// cannot).
#[test]
fn a_full_disk_acknowledges_nothing_and_loses_nothing() {
    use std::io::Write;
    use telemark_cloud::{NotAcknowledged, StoreError};
    use telemark_transport_testkit::{engine, next_frame, DEVICE};

    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    let Some(disk) = SmallDisk::mount("full") else {
        assert!(!root, "root could not mount a tmpfs");
        eprintln!("skipped: mounting a small filesystem takes root");
        return;
    };
    let mut hub = Hub::new(Box::new(
        SqliteStore::open(&disk.0.join("telemark.sqlite")).unwrap(),
    ))
    .unwrap();
    let key = Key::from_bytes(telemark_qemu_app::DEMO_KEYS[0].1);
    hub.import_key(DEVICE, 1, key, 0).unwrap();
    let mut device = engine();
    let received = 1_700_000_000_000;
    let now = Instant::from_millis(1_000);
    let mut response = hub
        .ingest(None, &next_frame(&mut device, now), received)
        .unwrap();
    assert!(device.on_frame(now, &mut response).is_ok());

    // Something else takes the rest of the disk.
    let filler = disk.0.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    while f.write_all(&[0u8; 4096]).is_ok() {}
    drop(f);
    let frame = next_frame(&mut device, Instant::from_millis(2_000));
    let mut full = 0;
    for attempt in 0..20 {
        match hub.ingest(None, &frame, received + attempt) {
            Err(NotAcknowledged::Unstored(StoreError::Full(_))) => full += 1,
            Err(NotAcknowledged::Unstored(e)) => assert!(e.is_transient(), "{e}"),
            Ok(_) => panic!("acknowledged with the disk full"),
            Err(e) => panic!("{e}"),
        }
    }
    assert!(full > 0, "the store said the disk is full");
    assert!(hub.store().devices().is_ok(), "reads go on");

    std::fs::remove_file(&filler).unwrap();
    let mut response = hub.ingest(None, &frame, received + 100).unwrap();
    assert!(device
        .on_frame(Instant::from_millis(2_000), &mut response)
        .is_ok());
    assert_eq!(
        hub.store().reading_count(DEVICE).unwrap(),
        u64::from(device.counters().sampled),
        "every reading stored once"
    );
    assert!(device.store().is_empty());
}
