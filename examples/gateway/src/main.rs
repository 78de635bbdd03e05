//! `telemark-gateway`: bridges a serial line, or an MQTT broker, to a local
//! SQLite store.
//!
//! ```text
//! telemark-gateway --db readings.sqlite --connect 127.0.0.1:4444   # QEMU -serial tcp::4444,server
//! telemark-gateway --db readings.sqlite --listen 127.0.0.1:4444    # a device that connects
//! telemark-gateway --db readings.sqlite --tty /dev/ttyUSB0         # a real UART (set its speed with stty)
//! telemark-gateway --db readings.sqlite --mqtt 127.0.0.1:1883      # devices on MQTT (telemark-mqtt)
//! ```
//!
//! With `--mqtt HOST:PORT` the gateway subscribes to `telemark/v1/+/up`
//! (`--mqtt-prefix P` for another prefix) with a persistent session, and
//! answers each device on its `.../down` topic; it can serve a serial line
//! at the same time.
//!
//! Devices are known by their keys: `--key DEVICE:ID:HEX` (the 32-byte key
//! number ID of the device, 64 hex digits), or `--keys FILE` with a line
//! `DEVICE ID HEX` per key (`#` starts a comment). A frame from a device
//! without a key is refused. `--unauthenticated DEVICE` accepts frames from
//! that device without a seal: for a bench only, and the device must be
//! built for it too.
//!
//! `--config DEVICE:HEX` sets the config a device should run (CBOR),
//! `--ping DEVICE:ID` queues a ping; both go down with the device's
//! responses until it reports them done. `--rotate-key DEVICE:ID:HEX`
//! moves a device to a new key (a new id): it goes down, sealed with the
//! current key, until the device's first frame under the new one, which
//! retires the old. It needs a device with a flash store; the gateway keeps
//! the new key in its database, so `--key` keeps naming the provisioned
//! one. Each record stored is printed on
//! standard output, one line each (`--quiet` stops that). With `--connect`
//! the gateway connects again whenever the line closes (QEMU restarted, a
//! cable pulled), until it is stopped; with `--listen` it serves every
//! device that connects, each on its own thread, until it is stopped.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use telemark_core::model::Value;
use telemark_core::store::Seq;
use telemark_core::wire::frame::Command;
use telemark_core::wire::report::Report;
use telemark_core::wire::seal::Key;
use telemark_gateway::{Broker, Gateway, Stored};
use telemark_server::Keyring;

enum Link {
    Connect(String),
    Listen(String),
    Tty(PathBuf),
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn hex(s: &str) -> Option<Vec<u8>> {
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok()))
        .collect()
}

/// One line for a stored record.
fn describe(device: u64, seq: Seq, stored: &Stored) -> String {
    match stored {
        Stored::Readings(readings) => {
            let mut line = format!("device {device} {seq}: {} readings", readings.len());
            if let (Some(first), Some(last)) = (readings.first(), readings.last()) {
                line += &format!(" from {} to {}:", first.time, last.time);
            }
            // The last value of each channel.
            let mut channels: Vec<_> = readings.iter().map(|r| r.channel).collect();
            channels.sort_unstable();
            channels.dedup();
            for c in channels {
                if let Some(r) = readings.iter().rev().find(|r| r.channel == c) {
                    let v = match r.value {
                        Value::Scaled(x) => x.to_string(),
                        Value::Float(f) => f.to_string(),
                        Value::Bool(b) => b.to_string(),
                        Value::Counter(n) => n.to_string(),
                    };
                    line += &format!(" {c}={v}");
                }
            }
            line
        }
        Stored::Report(Report::Alert(a)) => format!(
            "device {device} {seq}: ALERT {:?} {:?} on {} at {}",
            a.severity, a.kind, a.channel, a.time
        ),
        Stored::Report(r) => format!("device {device} {seq}: {r:?}"),
        Stored::Undecodable => format!("device {device} {seq}: undecodable payload, kept raw"),
    }
}

/// A key from `DEVICE`, `ID` and 64 hex digits.
fn parse_key(device: &str, id: &str, hex_key: &str) -> Result<(u64, u8, Key), String> {
    let device = parse_device(device)?;
    let id = id.parse::<u8>().map_err(|e| format!("key id {id}: {e}"))?;
    let key =
        Key::from_hex(hex_key).ok_or(format!("key of device {device}: 64 hex digits needed"))?;
    Ok((device, id, key))
}

/// A device id, decimal or 0x-hexadecimal.
fn parse_device(s: &str) -> Result<u64, String> {
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse(),
    }
    .map_err(|e| format!("device id {s}: {e}"))
}

fn read_keys(path: &str, keyring: &mut Keyring) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [device, id, key] = fields[..] else {
            return Err(format!("{path}:{}: DEVICE ID HEX expected", n + 1));
        };
        let (device, id, key) =
            parse_key(device, id, key).map_err(|e| format!("{path}:{}: {e}", n + 1))?;
        keyring.insert(device, id, key);
    }
    Ok(())
}

fn run() -> Result<(), String> {
    let mut db = PathBuf::from("telemark.sqlite");
    let mut link = None;
    let mut mqtt: Option<Broker> = None;
    let mut configs = Vec::new();
    let mut pings = Vec::new();
    let mut rotations = Vec::new();
    let mut quiet = false;
    let mut keyring = Keyring::new();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--db" => db = PathBuf::from(value()?),
            "--connect" => link = Some(Link::Connect(value()?)),
            "--listen" => link = Some(Link::Listen(value()?)),
            "--tty" => link = Some(Link::Tty(PathBuf::from(value()?))),
            "--mqtt" => {
                let v = value()?;
                let (host, port) = v.rsplit_once(':').ok_or("--mqtt HOST:PORT")?;
                let port = port
                    .parse()
                    .map_err(|e| format!("--mqtt port {port}: {e}"))?;
                let prefix = mqtt.take().map(|b| b.prefix);
                let mut broker = Broker::new(host, port);
                broker.prefix = prefix.unwrap_or(broker.prefix);
                mqtt = Some(broker);
            }
            "--mqtt-prefix" => {
                let prefix = value()?;
                let broker = mqtt.as_mut().ok_or("--mqtt-prefix comes after --mqtt")?;
                broker.prefix = prefix;
            }
            "--quiet" => quiet = true,
            "--key" => {
                let v = value()?;
                let parts: Vec<&str> = v.split(':').collect();
                let [device, id, key] = parts[..] else {
                    return Err("--key DEVICE:ID:HEX".into());
                };
                let (device, id, key) = parse_key(device, id, key)?;
                keyring.insert(device, id, key);
            }
            "--keys" => read_keys(&value()?, &mut keyring)?,
            "--rotate-key" => {
                let v = value()?;
                let parts: Vec<&str> = v.split(':').collect();
                let [device, id, key] = parts[..] else {
                    return Err("--rotate-key DEVICE:ID:HEX".into());
                };
                rotations.push(parse_key(device, id, key)?);
            }
            "--unauthenticated" => {
                let device = parse_device(&value()?)?;
                eprintln!("device {device}: unauthenticated frames accepted (a bench only)");
                keyring.allow_unauthenticated(device);
            }
            "--config" => {
                let v = value()?;
                let (d, h) = v.split_once(':').ok_or("--config DEVICE:HEX")?;
                configs.push((parse_device(d)?, hex(h).ok_or("--config: bad hex")?));
            }
            "--ping" => {
                let v = value()?;
                let (d, id) = v.split_once(':').ok_or("--ping DEVICE:ID")?;
                pings.push((
                    parse_device(d)?,
                    id.parse::<u32>().map_err(|e| e.to_string())?,
                ));
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if keyring.devices().next().is_none() {
        return Err("no device keys: give --key DEVICE:ID:HEX or --keys FILE".into());
    }
    let mut gateway = Gateway::open(&db, keyring).map_err(|e| e.to_string())?;
    for (device, cbor) in configs {
        let version = gateway
            .queue_config(device, &cbor)
            .map_err(|e| format!("--config {device}: {e}"))?;
        eprintln!("device {device}: config version {version} queued");
    }
    for (device, id, key) in rotations {
        gateway
            .rotate_key(device, id, key)
            .map_err(|e| format!("--rotate-key {device}: {e}"))?;
        eprintln!("device {device}: key {id} queued");
    }
    for (device, id) in pings {
        gateway
            .queue_command(device, id, Command::Ping)
            .map_err(|e| format!("--ping {device}: {e}"))?;
    }
    if !quiet {
        gateway.watch(|device, _, seq, stored| println!("{}", describe(device, seq, stored)));
    }
    let gateway = Arc::new(Mutex::new(gateway));
    if let Some(broker) = mqtt {
        let shared = Arc::clone(&gateway);
        let mqtt_only = link.is_none();
        let serving = std::thread::spawn(move || {
            eprintln!(
                "serving devices through the broker at {}:{}",
                broker.host, broker.port
            );
            let served = Gateway::serve_mqtt(&shared, &broker, unix_ms, &AtomicBool::new(true));
            if let Err(e) = &served {
                eprintln!("{e}");
            }
            served
        });
        if mqtt_only {
            return match serving.join() {
                Ok(served) => served.map_err(|e| e.to_string()),
                Err(_) => Err("the MQTT thread panicked".into()),
            };
        }
    }
    let served = match link.ok_or("one of --connect, --listen, --tty or --mqtt is needed")? {
        Link::Connect(addr) => loop {
            match TcpStream::connect(&addr) {
                Ok(mut s) => {
                    eprintln!("connected to {addr}");
                    if let Err(e) = Gateway::serve_shared(&gateway, &mut s, unix_ms) {
                        eprintln!("{addr}: {e}");
                    }
                    let c = lock(&gateway).counters();
                    eprintln!(
                        "line closed after {} records ({} received twice, {} conflicts), {} readings, \
                         {} frames refused; connecting again",
                        c.records, c.duplicates, c.conflicts, c.readings, c.refused.total()
                    );
                }
                Err(e) => eprintln!("{addr}: {e}; trying again"),
            }
            std::thread::sleep(std::time::Duration::from_secs(1));
        },
        Link::Listen(addr) => {
            let listener = TcpListener::bind(&addr).map_err(|e| format!("{addr}: {e}"))?;
            loop {
                let (mut s, peer) = match listener.accept() {
                    Ok(c) => c,
                    Err(e) => {
                        eprintln!("{addr}: {e}");
                        continue;
                    }
                };
                eprintln!("device connected from {peer}");
                let gateway = Arc::clone(&gateway);
                std::thread::spawn(move || {
                    if let Err(e) = Gateway::serve_shared(&gateway, &mut s, unix_ms) {
                        eprintln!("{peer}: {e}");
                    }
                    eprintln!("{peer}: line closed");
                });
            }
        }
        Link::Tty(path) => {
            let mut f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            Gateway::serve_shared(&gateway, &mut f, unix_ms)
        }
    };
    served.map_err(|e| e.to_string())?;
    let c = lock(&gateway).counters();
    eprintln!(
        "line closed: {} frames ({} refused), {} records ({} duplicates, {} conflicts), {} readings stored",
        c.frames,
        c.refused.total(),
        c.records,
        c.duplicates,
        c.conflicts,
        c.readings
    );
    Ok(())
}

fn lock(gateway: &Mutex<Gateway>) -> std::sync::MutexGuard<'_, Gateway> {
    gateway
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}
