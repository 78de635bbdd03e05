//! A device (the real engine, synthetic sensors, serial framing) talks to
//! the service over a TCP socket, as QEMU's `-serial tcp:` would carry it:
//! every reading is stored once, a config update is applied and reported,
//! and a link cut mid-run loses nothing.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;

use rusqlite::Connection;

use telemark_cloud::{line, Hub, HubHandle, SqliteStore};
use telemark_core::channel::{ChannelSpec, Range, Unit, ValueKind};
use telemark_core::config::EngineConfig;
use telemark_core::engine::{Boot, Engine};
use telemark_core::model::{ChannelId, ReadingSink, Severity};
use telemark_core::rules::Rules;
use telemark_core::sensor::{Sensor, SensorErrorKind};
use telemark_core::stager::StagerConfig;
use telemark_core::store::{FullPolicy, RamStore, RecordStore};
use telemark_core::time::{Duration, Instant};
use telemark_core::transport::{step, Board, NoLink};
use telemark_core::uplink::UplinkConfig;
use telemark_core::wire::report::ResetReason;
use telemark_core::wire::seal::{Key, Sealing};
use telemark_core::wire::Epoch;
use telemark_sensors::synthetic::{Episode, Signal, Synthetic};
use telemark_serial::{SerialTransport, TcpLine};

const DEVICE: u64 = 77;
const KEY: [u8; 32] = [0x77; 32];
const TEMP: ChannelSpec = ChannelSpec::new(
    ChannelId(1),
    Unit::Celsius,
    ValueKind::Scaled { decimals: 2 },
    Range::new(0.0, 95.0),
    Duration::from_mins(5),
    Rules::NONE.high(75.0, 3.0, Severity::Critical),
);

struct Boiler(Synthetic<1>, u64);

impl Board for Boiler {
    fn sample(
        &mut self,
        _ch: ChannelId,
        now: Instant,
        out: &mut dyn ReadingSink,
    ) -> Result<(), SensorErrorKind> {
        self.1 += 1;
        self.0.sample(now, out)
    }
}

/// Unix ms at device uptime zero: the server's clock follows the device's.
const BOOTED: u64 = 1_700_000_000_000;

fn serve(listener: TcpListener, hub: &HubHandle, connections: usize, clock: &AtomicU64) {
    for _ in 0..connections {
        let (mut s, _) = listener.accept().unwrap();
        // The cut may reset the connection rather than close it.
        if let Err(e) = line::serve(hub, &mut s, || clock.load(Ordering::Relaxed)) {
            eprintln!("the line ended: {e}");
        }
    }
}

#[test]
fn readings_arrive_once_config_applies_and_a_cut_loses_nothing() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let path = std::env::temp_dir().join(format!("telemark-e2e-{}.sqlite", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let db = path.clone();
    let clock = Arc::new(AtomicU64::new(BOOTED));
    let server_clock = Arc::clone(&clock);
    let gateway = thread::spawn(move || {
        let mut hub = Hub::new(Box::new(SqliteStore::open(&db).unwrap())).unwrap();
        hub.import_key(DEVICE, 1, Key::from_bytes(KEY), 0).unwrap();
        // {0: 2, 1: 1800}: version 2 reports every 30 minutes.
        let version = hub
            .queue_config(DEVICE, &[0xa2, 0x00, 0x02, 0x01, 0x19, 0x07, 0x08])
            .unwrap();
        assert_eq!(version, 2);
        let (handle, thread) = hub.spawn().unwrap();
        serve(listener, &handle, 2, &server_clock);
        drop(handle);
        thread.join().unwrap()
    });

    let config = EngineConfig {
        uplink: {
            let mut u = UplinkConfig::new(DEVICE, 220, Duration::from_mins(60));
            // Device time runs 200 times faster than real time here: a
            // response that takes 50 ms comes 10 device seconds later,
            // and a response to a frame sent again since is refused.
            u.ack_timeout = Duration::from_mins(2);
            u.max_backoff = Duration::from_mins(10);
            u
        },
        stager: StagerConfig::new(64, 160, Duration::from_mins(60)),
        heartbeat: Duration::from_mins(60),
    };
    let store: RamStore<512, 4096> = RamStore::new(FullPolicy::Refuse);
    let boot = Boot {
        reset_reason: ResetReason::PowerOn,
        epoch: Epoch(0x7777),
        sealing: Sealing::key(1, Key::from_bytes(KEY)),
    };
    let mut engine: Engine<_, 2, 64, 220> = Engine::new(&[TEMP], store, config, boot).unwrap();
    let mut boiler = Synthetic::new(
        [TEMP],
        [Signal::Sine {
            mean: 60.0,
            amplitude: 5.0,
            period: Duration::from_mins(600),
        }],
        3,
    );
    boiler
        .schedule(Episode::Excursion {
            channel: 0,
            from: Instant::from_millis(5 * 3_600_000),
            until: Instant::from_millis(6 * 3_600_000),
            offset: 25.0,
        })
        .unwrap();
    let mut board = Boiler(boiler, 0);

    // A day in simulated time: the device runs against the socket, and the
    // link is cut for two hours in the middle (a new connection after).
    let mut link: Option<SerialTransport<TcpLine, 256>> = Some(SerialTransport::new(TcpLine::new(
        TcpStream::connect(addr).unwrap(),
    )));
    let mut now = Instant::ZERO;
    let end = Instant::from_millis(24 * 3_600_000);
    let (cut, mended) = (
        Instant::from_millis(10 * 3_600_000),
        Instant::from_millis(12 * 3_600_000),
    );
    while now < end {
        clock.store(BOOTED + now.as_millis(), Ordering::Relaxed);
        if now >= cut && now < mended {
            if let Some(t) = link.take() {
                drop(t.release()); // closes the socket: the gateway sees the line close
            }
            let mut dead = NoLink { mtu: 220 };
            now = step(&mut engine, &mut dead, now, &mut board)
                .min(mended)
                .max(now + Duration::from_millis(1));
            continue;
        }
        let t = link.get_or_insert_with(|| {
            SerialTransport::new(TcpLine::new(TcpStream::connect(addr).unwrap()))
        });
        let wake = step(&mut engine, t, now, &mut board);
        // Give acknowledgements time to come back before moving on.
        thread::sleep(std::time::Duration::from_millis(2));
        let _ = step(&mut engine, t, now, &mut board);
        now = wake.max(now + Duration::from_millis(1));
    }
    // Drain: seal the open block and send everything.
    engine.flush_now(now);
    let t = link.as_mut().unwrap();
    // Up to a minute of real time: a machine under load answers slowly.
    let draining = std::time::Instant::now();
    while draining.elapsed() < std::time::Duration::from_secs(60) {
        if engine.staged() > 0 {
            engine.flush_now(now);
        }
        clock.store(BOOTED + now.as_millis(), Ordering::Relaxed);
        step(&mut engine, t, now, &mut board);
        thread::sleep(std::time::Duration::from_millis(5));
        now = now + Duration::from_secs(1);
        if engine.store_mut().is_empty() && engine.staged() == 0 {
            break;
        }
    }
    assert!(
        engine.store_mut().is_empty(),
        "{} records never acknowledged",
        engine.store_mut().len()
    );
    drop(link.take().unwrap().release());

    let mut hub = gateway.join().unwrap();
    let every = hub
        .store()
        .readings(&telemark_cloud::ReadingQuery {
            device: DEVICE,
            channel: None,
            from_ms: i64::MIN,
            to_ms: i64::MAX,
        })
        .unwrap();
    let stored = hub.store().reading_count(DEVICE).unwrap();
    assert_eq!(stored, board.1, "every reading taken is stored");
    assert_eq!(
        every.len() as u64,
        stored,
        "every reading has its Unix time"
    );
    // Once each: the store keeps one record per (device, epoch, seq), and
    // no record name was taken by other bytes (below).
    assert!(
        every.iter().all(
            |r| r.unix_ms >= BOOTED as i64 && r.unix_ms <= clock.load(Ordering::Relaxed) as i64
        ),
        "on the server's clock"
    );
    let db = Connection::open(&path).unwrap();
    let alerts: i64 = db
        .query_row("SELECT COUNT(*) FROM alerts WHERE kind = 'High'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert!(alerts >= 1, "the overheating raised an alert");
    let counters = hub.counters();
    assert_eq!(counters.refused.total(), 0);
    assert_eq!(counters.conflicts, 0);
    let config_reports: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM config_status WHERE version = 2 AND code = 0",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(config_reports, 1, "config version 2 applied and reported");
    assert_eq!(
        engine.config().engine.uplink.report_interval,
        Duration::from_mins(30)
    );
    let _ = std::fs::remove_file(&path);
}
