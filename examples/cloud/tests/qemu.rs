//! The QEMU firmware end to end: QEMU boots each board's firmware
//! (`examples/qemu-*`); on the UART boards its UART is a TCP socket the
//! service connects to, and the mps2-an386 publishes over MQTT, through
//! its LAN9118 and QEMU's user network, to a mosquitto of the test's own
//! that the service subscribes to. The test checks what reaches SQLite:
//!
//! - readings and alerts arrive, each stored once;
//! - a config update is applied and reported;
//! - the link is cut for a while and restored (the UART socket shut down,
//!   or the broker stopped and started again, its sessions and queued
//!   messages lost with it), and no reading is lost (the gas meter's pulse
//!   count arrives without a gap);
//! - on the STM32F405, whose store is the flash store, a crash drill makes
//!   the firmware panic: after the reset the crash is reported, the config
//!   is still the new one, and what the store held is still delivered;
//! - the board is power-cycled: QEMU is killed and started again, so its
//!   RAM is lost (on the STM32F405 the flash store with it, which the
//!   firmware formats). The device numbers its records from the start
//!   again in a new epoch, and every record of the new boot is stored,
//!   once; the config it lost is sent again and applied.
//!
//! It builds the firmware with cargo and needs `qemu-system-arm`
//! (Debian: `apt-get install qemu-system-arm`) and, for MQTT, `mosquitto`;
//! without them the test fails and says so.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::expect_used)]

use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use telemark_cloud::{line, mqtt, unix_ms, Broker, Hub, SqliteStore};
use telemark_core::codec::CompactCodec;
use telemark_core::model::{Reading, Value};
use telemark_core::wire::frame::Command as Downlink;
use telemark_core::wire::seal::Key;
use telemark_qemu_app::{DEMO_KEYS, KEY_ID};
use telemark_server::Counters;
use telemark_transport_testkit::cloud::Cloud;

/// How a board reaches the service.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Link {
    /// Its UART, which QEMU serves as a TCP socket the service connects to.
    Uart,
    /// MQTT over its Ethernet MAC, through QEMU's user network, to a
    /// broker on the host that the service subscribes to.
    Mqtt,
}

struct Board {
    /// Folder under `examples/`.
    dir: &'static str,
    link: Link,
    target: &'static str,
    machine: &'static str,
    device: u64,
    /// Run the crash drill (the board whose store survives a reset).
    crash_drill: bool,
}

const NETDUINO: Board = Board {
    dir: "qemu-netduinoplus2",
    link: Link::Uart,
    target: "thumbv7em-none-eabihf",
    machine: "netduinoplus2",
    device: 405,
    crash_drill: true,
};

const MICROBIT: Board = Board {
    dir: "qemu-microbit",
    link: Link::Uart,
    target: "thumbv6m-none-eabi",
    machine: "microbit",
    device: 51,
    crash_drill: false,
};

const MPS2_AN386: Board = Board {
    dir: "qemu-mps2-an386",
    link: Link::Mqtt,
    target: "thumbv7em-none-eabihf",
    machine: "mps2-an386",
    device: 386,
    crash_drill: false,
};

/// {0: 2, 1: 120}: version 2 reports every 2 minutes.
const CONFIG_V2: [u8; 6] = [0xa2, 0x00, 0x02, 0x01, 0x18, 0x78];
const CRASH_DRILL: Downlink = Downlink::SetOutput {
    output: 0xFF,
    value: 7,
};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Builds the board's firmware with its demo identity, or with the one
/// `provisioned` gives (what `telemark-cloud device add` printed, as
/// `TELEMARK_DEVICE`), in a target folder of its own so that the two never
/// overwrite each other.
fn build(board: &Board, provisioned: Option<&str>) -> PathBuf {
    let dir = examples().join(board.dir);
    let target_dir = match provisioned {
        None => dir.join("target"),
        Some(_) => dir.join("target").join("provisioned"),
    };
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cargo = Command::new(cargo);
    cargo
        .args(["build", "--release", "--locked"])
        .current_dir(&dir)
        .env("CARGO_TARGET_DIR", &target_dir)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET");
    match provisioned {
        Some(identity) => cargo.env("TELEMARK_DEVICE", identity),
        None => cargo.env_remove("TELEMARK_DEVICE"),
    };
    let status = cargo.status().expect("run cargo");
    assert!(status.success(), "building {} failed", board.dir);
    target_dir
        .join(board.target)
        .join("release")
        .join(format!("telemark-{}", board.dir))
}

fn require_qemu() {
    let found = Command::new("qemu-system-arm")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        found,
        "qemu-system-arm is missing: install it (Debian: apt-get install qemu-system-arm)"
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// QEMU, killed when dropped.
struct Qemu(Child, PathBuf);

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Qemu {
    /// Boots `elf`, its UART served on `port` or its MQTT broker on the
    /// host's `port`.
    fn boot(board: &Board, elf: &Path, port: u16) -> Qemu {
        let log = std::env::temp_dir().join(format!("telemark-qemu-{}-{port}.log", board.machine));
        let out = std::fs::File::create(&log).unwrap();
        let link: Vec<String> = match board.link {
            Link::Uart => vec![
                "-serial".into(),
                format!("tcp:127.0.0.1:{port},server=on,wait=off"),
            ],
            // The host's loopback is 10.0.2.2 on QEMU's user network; the
            // firmware takes its broker from the command line.
            Link::Mqtt => vec![
                "-nic".into(),
                "user,model=lan9118".into(),
                "-append".into(),
                format!("10.0.2.2:{port}"),
            ],
        };
        let child = Command::new("qemu-system-arm")
            .args([
                "-machine",
                board.machine,
                "-display",
                "none",
                "-monitor",
                "none",
            ])
            .args(["-semihosting-config", "enable=on,target=native"])
            .args(link)
            .arg("-kernel")
            .arg(elf)
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start qemu-system-arm");
        Qemu(child, log)
    }

    /// What the firmware printed over semihosting.
    fn log(&self) -> String {
        std::fs::read_to_string(&self.1).unwrap_or_default()
    }
}

/// What the serving thread does with each new connection.
enum Line {
    /// Connect to QEMU's UART on this port and serve, queueing these
    /// commands first.
    Serve(u16, Vec<(u32, Downlink)>),
    /// Stop: hand the hub back.
    Stop,
}

fn connect(port: u16) -> TcpStream {
    let start = Instant::now();
    loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => return s,
            Err(e) if start.elapsed() < Duration::from_secs(20) => {
                let _ = e;
                thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("QEMU's UART socket on port {port}: {e}"),
        }
    }
}

fn wait_for(what: &str, qemu: &Qemu, timeout: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < timeout,
            "timed out waiting for {what}; firmware log:\n{}",
            qemu.log()
        );
        thread::sleep(Duration::from_millis(250));
    }
}

fn count(db: &Connection, sql: &str, device: u64) -> i64 {
    db.query_row(sql, [device as i64], |r| r.get(0))
        .unwrap_or(0)
}

/// One stored reading, decoded from its block: (epoch, seq, channel,
/// device time ms, value as an integer).
type Row = (i64, i64, u16, u64, i64);

/// Every reading of `device`, decoded from the blocks as stored, in the
/// order the device numbered its records.
fn rows(db: &Connection, device: u64) -> Vec<Row> {
    let mut stmt = db
        .prepare(
            "SELECT epoch, seq, payload, declared FROM records \
             WHERE device = ?1 AND lane = 'routine' ORDER BY seq",
        )
        .unwrap();
    let blocks: Vec<(i64, i64, Vec<u8>, usize)> = stmt
        .query_map([device as i64], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut out = Vec::new();
    for (epoch, seq, payload, declared) in blocks {
        let mut readings: Vec<Reading> = Vec::new();
        let n = CompactCodec
            .decode_at_most(&payload, declared, &mut readings)
            .unwrap();
        assert_eq!(n, declared, "a block decodes to the readings it declared");
        for r in readings {
            let v = match r.value {
                Value::Scaled(x) => i64::from(x),
                Value::Counter(c) => i64::from(c),
                Value::Bool(b) => i64::from(b),
                Value::Float(f) => i64::from(f.to_bits()),
            };
            out.push((epoch, seq, r.channel.0, r.time.as_millis(), v));
        }
    }
    out
}

/// The epochs the device's records were numbered in, in the order the
/// service first stored one of each.
fn epochs(db: &Connection, device: u64) -> Vec<i64> {
    db.prepare("SELECT epoch FROM records WHERE device = ?1 GROUP BY epoch ORDER BY MIN(rowid)")
        .unwrap()
        .query_map([device as i64], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// The gas pulse counts of one epoch, in the order the device took them.
fn pulses(db: &Connection, device: u64, epoch: i64) -> Vec<i64> {
    let mut p: Vec<Row> = rows(db, device)
        .into_iter()
        .filter(|r| r.0 == epoch && r.2 == 2)
        .collect();
    p.sort_by_key(|r| (r.1, r.3));
    p.into_iter().map(|r| r.4).collect()
}

/// The device's highest gas pulse count stored.
fn gas(db: &Connection, device: u64) -> i64 {
    rows(db, device)
        .iter()
        .filter(|r| r.2 == 2)
        .map(|r| r.4)
        .max()
        .unwrap_or(0)
}

/// Waits for what the first minutes bring: readings, an alert, and the
/// queued config reported applied.
fn wait_for_first_delivery(db: &Connection, qemu: &Qemu, device: u64) {
    wait_for(
        "readings, an alert and the config report",
        qemu,
        Duration::from_secs(60),
        || {
            rows(db, device).len() >= 20
                && count(
                    db,
                    "SELECT COUNT(*) FROM alerts WHERE device = ?1 AND kind = 'High'",
                    device,
                ) >= 1
                && count(
                    db,
                    "SELECT COUNT(*) FROM config_status WHERE device = ?1 AND version = 2 AND code = 0",
                    device,
                ) == 1
        },
    );
}

/// Waits, after a power cycle, for readings of the boot after the
/// `before` epochs, and for the config that boot lost applied again.
fn wait_for_new_boot(db: &Connection, qemu: &Qemu, device: u64, before: usize) {
    let minute = Duration::from_secs(60);
    wait_for(
        "readings of the boot after the power cycle",
        qemu,
        minute,
        || {
            let e = epochs(db, device);
            e.len() == before + 1 && pulses(db, device, e[e.len() - 1]).len() >= 10
        },
    );
    let powered_on = *epochs(db, device).last().unwrap();
    wait_for("the lost config applied again", qemu, minute, || {
        db.query_row(
            "SELECT COUNT(*) FROM config_status WHERE device = ?1 AND epoch = ?2 AND version = 2 AND code = 0",
            rusqlite::params![device as i64, powered_on],
            |r| r.get::<_, i64>(0),
        )
        .unwrap_or(0)
            == 1
    });
}

/// A hub over a new SQLite file at `path`, with the demo devices' keys and
/// the board's config update queued.
fn hub(path: &Path, board: &Board) -> Hub {
    let mut hub = Hub::new(Box::new(SqliteStore::open(path).unwrap())).unwrap();
    for (device, key) in DEMO_KEYS {
        hub.import_key(device, KEY_ID, Key::from_bytes(key), 0)
            .unwrap();
    }
    hub.queue_config(board.device, &CONFIG_V2).unwrap();
    hub
}

fn run(board: &Board) {
    require_qemu();
    let elf = build(board, None);
    let port = free_port();
    let qemu = Qemu::boot(board, &elf, port);
    let db_path =
        std::env::temp_dir().join(format!("telemark-qemu-{}-{port}.sqlite", board.machine));
    let _ = std::fs::remove_file(&db_path);

    // The hub serves one connection after another; the test cuts a
    // connection by shutting its socket down.
    let (hub, hub_thread) = hub(&db_path, board).spawn().unwrap();
    let (lines, next_line) = mpsc::channel::<Line>();
    let (streams, live) = mpsc::channel::<TcpStream>();
    let device = board.device;
    let server = thread::spawn(move || {
        while let Ok(Line::Serve(port, commands)) = next_line.recv() {
            for (id, c) in commands {
                hub.call_blocking(move |hub| hub.queue_command_as(device, id, c))
                    .unwrap()
                    .unwrap();
            }
            let mut stream = connect(port);
            streams.send(stream.try_clone().unwrap()).unwrap();
            // Ends when the test shuts the socket down.
            let _ = line::serve(&hub, &mut stream, unix_ms);
        }
        drop(hub);
        hub_thread.join().unwrap()
    });
    let db = Connection::open(&db_path).unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    let gas = |db: &Connection| gas(db, device);
    let minute = Duration::from_secs(60);

    lines.send(Line::Serve(port, vec![])).unwrap();
    let socket = live.recv().unwrap();
    wait_for_first_delivery(&db, &qemu, device);

    // Cut the line for 8 s (8 device minutes), then restore it.
    socket.shutdown(Shutdown::Both).unwrap();
    let at_cut = gas(&db);
    thread::sleep(Duration::from_secs(8));
    lines.send(Line::Serve(port, vec![])).unwrap();
    let mut socket = live.recv().unwrap();
    wait_for("the readings of the cut", &qemu, minute, || {
        gas(&db) >= at_cut + 16
    });

    let rebooted = Arc::new(AtomicBool::new(false));
    if board.crash_drill {
        // The crash drill goes down on the next connection.
        socket.shutdown(Shutdown::Both).unwrap();
        lines
            .send(Line::Serve(port, vec![(1, CRASH_DRILL)]))
            .unwrap();
        socket = live.recv().unwrap();
        wait_for("the crash report after the reset", &qemu, minute, || {
            count(
                &db,
                "SELECT COUNT(*) FROM crashes WHERE device = ?1 AND text LIKE '%crash drill 7%'",
                device,
            ) == 1
        });
        // Readings of the new boot, in its own epoch.
        wait_for("readings after the reset", &qemu, minute, || {
            epochs(&db, device).len() == 2 && pulses(&db, device, epochs(&db, device)[1]).len() >= 2
        });
        rebooted.store(true, Ordering::Relaxed);
    }
    let before_power_cut = epochs(&db, device);
    let log_before = qemu.log();

    // Power cycle: QEMU is killed, RAM and all, and started again.
    socket.shutdown(Shutdown::Both).unwrap();
    drop(qemu);
    let port = free_port();
    let qemu = Qemu::boot(board, &elf, port);
    lines.send(Line::Serve(port, vec![])).unwrap();
    let socket = live.recv().unwrap();
    wait_for_new_boot(&db, &qemu, device, before_power_cut.len());
    socket.shutdown(Shutdown::Both).unwrap();
    lines.send(Line::Stop).unwrap();
    let hub = server.join().unwrap();
    let log = format!("{log_before}{}", qemu.log());
    drop(qemu);

    assert_delivered(&db, board, &hub.counters(), at_cut);
    if board.crash_drill {
        assert!(rebooted.load(Ordering::Relaxed));
        // The config survived the reset in the flash store.
        let after = log.split("reset Crash").nth(1).unwrap_or_default();
        assert!(
            after.contains("config v2"),
            "config after the reset:\n{log}"
        );
    }
    let _ = std::fs::remove_file(&db_path);
}

/// What every run ends with: each record stored once, no conflict, no
/// refused frame, a boot per epoch expected, and in each epoch the gas
/// pulse count gapless from 1.
fn assert_delivered(db: &Connection, board: &Board, c: &Counters, at_cut: i64) {
    let device = board.device;
    // Every record once: the store keeps one per (device, epoch, seq).
    assert_eq!(
        c.records as i64,
        count(db, "SELECT COUNT(*) FROM records WHERE device = ?1", device)
    );
    assert_eq!(c.conflicts, 0, "no record name was reused");
    assert_eq!(
        c.refused.total(),
        0,
        "every frame opened with the device's key"
    );
    // In each epoch the pulse count, in the order the device numbered its
    // records, runs 1, 2, 3, ... without a gap or a repeat: nothing was
    // lost to the cut, nothing stored twice, and nothing of a boot after a
    // power cut dropped as a duplicate of the boot before.
    let all = epochs(db, device);
    assert_eq!(
        all.len(),
        if board.crash_drill { 3 } else { 2 },
        "a boot, (a reset,) a power cycle"
    );
    for &epoch in &all {
        let p = pulses(db, device, epoch);
        assert_eq!(p.first(), Some(&1), "epoch {epoch:x} starts at one pulse");
        for w in p.windows(2) {
            assert_eq!(w[1], w[0] + 1, "epoch {epoch:x}: pulse count jumps: {p:?}");
        }
    }
    let first = pulses(db, device, all[0]);
    assert!(
        first.len() as i64 >= at_cut + 16,
        "{} pulses of the first boot, {at_cut} at the cut; epochs {all:x?}: {:?}",
        first.len(),
        all.iter()
            .map(|&e| pulses(db, device, e).len())
            .collect::<Vec<_>>()
    );
    let mut every = rows(db, device);
    let readings = every.len();
    every.sort_unstable();
    every.dedup_by_key(|r| (r.0, r.1, r.2, r.3));
    assert_eq!(readings, every.len(), "a reading stored twice");
    let unmapped = count(
        db,
        "SELECT COUNT(*) FROM records WHERE device = ?1 AND lane = 'routine' AND anchor_ms IS NULL",
        device,
    );
    assert_eq!(unmapped, 0, "every block has its Unix time");
    println!(
        "{}: {} readings, {} records ({} sent again and not stored twice), {} alerts, {} epochs",
        board.machine,
        readings,
        c.records,
        c.duplicates,
        count(db, "SELECT COUNT(*) FROM alerts WHERE device = ?1", device),
        all.len()
    );
}

/// A mosquitto of the test's own on `port`, with no persistence: stopping
/// it loses every session and every queued message. Killed when dropped.
struct Mosquitto {
    child: Option<Child>,
    port: u16,
    conf: PathBuf,
}

impl Mosquitto {
    fn start(port: u16) -> Mosquitto {
        let conf = std::env::temp_dir().join(format!("telemark-qemu-mosquitto-{port}.conf"));
        std::fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"),
        )
        .unwrap();
        let mut broker = Mosquitto {
            child: None,
            port,
            conf,
        };
        broker.resume();
        broker
    }

    fn resume(&mut self) {
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto is missing: install it (Debian: apt-get install mosquitto)");
        self.child = Some(child);
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "mosquitto did not start"
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_file(&self.conf);
    }
}

/// The MQTT board: the service serves a broker the firmware publishes to;
/// the cut is the broker stopped and started again.
fn run_mqtt(board: &Board) {
    require_qemu();
    let elf = build(board, None);
    let port = free_port();
    let mut broker = Mosquitto::start(port);
    let db_path =
        std::env::temp_dir().join(format!("telemark-qemu-{}-{port}.sqlite", board.machine));
    let _ = std::fs::remove_file(&db_path);
    let (hub, hub_thread) = hub(&db_path, board).spawn().unwrap();
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let server = {
        let hub = hub.clone();
        let mut mqtt = Broker::new("127.0.0.1", port);
        mqtt.client_id = format!("telemark-cloud-test-{port}");
        thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime
                .block_on(mqtt::serve(hub, mqtt, unix_ms, stopping))
                .unwrap();
        })
    };
    let device = board.device;
    let db = Connection::open(&db_path).unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    let gas = |db: &Connection| gas(db, device);
    let minute = Duration::from_secs(60);

    let qemu = Qemu::boot(board, &elf, port);
    let named = format!("broker 10.0.2.2:{port}\n");
    wait_for(
        "the firmware to name the test's broker",
        &qemu,
        minute,
        || qemu.log().contains(&named),
    );
    wait_for_first_delivery(&db, &qemu, device);

    // The broker away for 8 s (8 device minutes), its state lost: the
    // sessions and their subscriptions too, which the device and the
    // service make again.
    broker.stop();
    let at_cut = gas(&db);
    let acked_at_cut = acknowledged(&qemu.log());
    thread::sleep(Duration::from_secs(8));
    broker.resume();
    wait_for("the readings of the cut", &qemu, minute, || {
        gas(&db) >= at_cut + 16
    });
    // Stored is not enough: the device must hear so, and free them.
    wait_for("the acknowledgements of the cut", &qemu, minute, || {
        acknowledged(&qemu.log()) >= acked_at_cut + 2 * 16
    });
    let before_power_cut = epochs(&db, device);

    // Power cycle: QEMU is killed, RAM and all, and started again.
    drop(qemu);
    let qemu = Qemu::boot(board, &elf, port);
    wait_for_new_boot(&db, &qemu, device, before_power_cut.len());
    let log = qemu.log();
    drop(qemu);
    stop.send(true).unwrap();
    server.join().unwrap();
    drop(hub);
    let counters = hub_thread.join().unwrap().counters();
    assert_delivered(&db, board, &counters, at_cut);
    // Push mode: a session per report, not one for the whole run.
    let connects: Vec<u64> = log
        .lines()
        .filter_map(|l| {
            l.split(" MQTT connects")
                .next()?
                .rsplit(' ')
                .next()?
                .parse()
                .ok()
        })
        .collect();
    assert!(
        connects.last().is_some_and(|&n| n >= 3),
        "MQTT connects in the boot after the power cycle: {connects:?}\n{log}"
    );
    let _ = std::fs::remove_file(&db_path);
}

/// The readings the firmware says the service acknowledged, from the last
/// status line of its log.
fn acknowledged(log: &str) -> u64 {
    log.lines()
        .filter_map(|l| {
            l.split(" readings, config")
                .next()?
                .rsplit(' ')
                .next()?
                .parse()
                .ok()
        })
        .next_back()
        .unwrap_or(0)
}

#[test]
fn mps2_an386_over_mqtt_end_to_end() {
    run_mqtt(&MPS2_AN386);
}

#[test]
fn netduinoplus2_end_to_end() {
    run(&NETDUINO);
}

#[test]
fn microbit_end_to_end() {
    run(&MICROBIT);
}

/// The path a user takes to a device of their own: `telemark-cloud device
/// add` beside the running service, the firmware built with what it
/// printed (`TELEMARK_DEVICE`), booted on the service's line. The service
/// holds no demo key, only the one it made, so a stored reading shows the
/// firmware runs as the device the service created and seals with its key.
#[test]
fn microbit_built_from_device_add() {
    const TOKEN: &str = "qemu-provisioning-admin";
    require_qemu();
    let binary = Path::new(env!("CARGO_BIN_EXE_telemark-cloud"));
    let port = free_port();
    let line = format!("127.0.0.1:{port}");
    let cloud = Cloud::start_with(
        binary,
        "qemu-provisioned",
        TOKEN,
        &["--line-connect", &line],
    );
    let added = Command::new(binary)
        .args(["device", "add", "--name", "boiler-1", "--data"])
        .arg(cloud.data())
        .output()
        .unwrap();
    assert!(
        added.status.success(),
        "device add: {}",
        String::from_utf8_lossy(&added.stderr)
    );
    let printed = String::from_utf8(added.stdout).unwrap();
    let id = serde_json::from_str::<serde_json::Value>(&printed).unwrap()["id"]
        .as_u64()
        .unwrap();
    assert!(
        DEMO_KEYS.iter().all(|(demo, _)| *demo != id),
        "the service gave a demo id"
    );

    let elf = build(&MICROBIT, Some(&printed));
    let qemu = Qemu::boot(&MICROBIT, &elf, port);
    let url = format!("http://{}/v1/devices/{id}", cloud.address("http"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // reqwest's rustls comes without a provider here; the API is plain
    // HTTP, but the client wants one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::new();
    let device = || -> serde_json::Value {
        runtime.block_on(async {
            let response = client.get(&url).bearer_auth(TOKEN).send().await.unwrap();
            assert!(
                response.status().is_success(),
                "{url}: {}",
                response.status()
            );
            response.json().await.unwrap()
        })
    };
    wait_for(
        "readings of the device `device add` created",
        &qemu,
        Duration::from_secs(90),
        || device()["readings"].as_u64().unwrap_or(0) >= 10,
    );
    assert_eq!(device()["device"]["state"], "online");
    assert!(
        qemu.log().contains(&format!("device {id},")),
        "the firmware does not say it is device {id}:\n{}",
        qemu.log()
    );
    cloud.terminate();
}
