//! The gateway's SQLite store: the server library's conformance suite, and
//! a database locked by another process for 10 s while a device keeps
//! sending: the line stays up, nothing is acknowledged during the lock,
//! and every frame is stored once after it.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration as Wall;

use rusqlite::Connection;
use telemark_core::channel::{ChannelSpec, Range, Unit, ValueKind};
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
use telemark_gateway::{Gateway, SqliteStore};
use telemark_serial::{SerialTransport, TcpLine};
use telemark_server::{conformance, Keyring};

#[test]
fn the_sqlite_store_conforms() {
    conformance::run(|| SqliteStore::in_memory().unwrap());
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
    let mut keyring = Keyring::new();
    keyring.insert(DEVICE, 1, Key::from_bytes(KEY));
    let mut gateway = Gateway::open(&path, keyring).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let line_closed = Arc::new(AtomicBool::new(false));
    let closed = Arc::clone(&line_closed);
    let server = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let served = gateway.serve(&mut s, || 1_700_000_000_000);
        closed.store(true, Ordering::Relaxed);
        served.unwrap();
        gateway
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
    let gateway = server.join().unwrap();
    assert!(gateway.counters().store_failures > 0, "the lock was felt");

    let db = Connection::open(&path).unwrap();
    let values: Vec<i64> = db
        .prepare("SELECT raw FROM readings WHERE device = ?1 ORDER BY raw")
        .unwrap()
        .query_map([DEVICE as i64], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let sealed = board.0 as usize - engine.staged();
    assert_eq!(values.len(), sealed, "every reading sealed is stored");
    assert!(
        values.iter().enumerate().all(|(i, v)| *v == i as i64 + 1),
        "each once, none missing"
    );
    let _ = std::fs::remove_file(&path);
}
