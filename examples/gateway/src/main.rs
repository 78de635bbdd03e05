//! `telemark-gateway`: bridges a serial line to a local SQLite store.
//!
//! ```text
//! telemark-gateway --db readings.sqlite --connect 127.0.0.1:4444   # QEMU -serial tcp::4444,server
//! telemark-gateway --db readings.sqlite --listen 127.0.0.1:4444    # a device that connects
//! telemark-gateway --db readings.sqlite --tty /dev/ttyUSB0         # a real UART (set its speed with stty)
//! ```
//!
//! `--config DEVICE:HEX` queues a CBOR config update, `--ping DEVICE:ID` a
//! ping; both go down with the device's next acknowledgement. Each record
//! stored is printed on standard output, one line each (`--quiet` stops
//! that). With `--connect` the gateway connects again whenever the line
//! closes (QEMU restarted, a cable pulled), until it is stopped.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use telemark_core::wire::frame::Command;
use telemark_core::model::Value;
use telemark_core::wire::report::Report;
use telemark_core::store::Seq;
use telemark_gateway::{Gateway, Stored};

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

fn run() -> Result<(), String> {
    let mut db = PathBuf::from("telemark.sqlite");
    let mut link = None;
    let mut configs = Vec::new();
    let mut pings = Vec::new();
    let mut quiet = false;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--db" => db = PathBuf::from(value()?),
            "--connect" => link = Some(Link::Connect(value()?)),
            "--listen" => link = Some(Link::Listen(value()?)),
            "--tty" => link = Some(Link::Tty(PathBuf::from(value()?))),
            "--quiet" => quiet = true,
            "--config" => {
                let v = value()?;
                let (d, h) = v.split_once(':').ok_or("--config DEVICE:HEX")?;
                configs.push((
                    d.parse::<u64>().map_err(|e| format!("--config: {e}"))?,
                    hex(h).ok_or("--config: bad hex")?,
                ));
            }
            "--ping" => {
                let v = value()?;
                let (d, id) = v.split_once(':').ok_or("--ping DEVICE:ID")?;
                pings.push((
                    d.parse::<u64>().map_err(|e| e.to_string())?,
                    id.parse::<u32>().map_err(|e| e.to_string())?,
                ));
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let mut gateway = Gateway::open(&db).map_err(|e| e.to_string())?;
    for (device, cbor) in configs {
        gateway.queue_config(device, &cbor);
    }
    for (device, id) in pings {
        gateway.queue_command(device, id, Command::Ping);
    }
    if !quiet {
        gateway.watch(|device, seq, stored| println!("{}", describe(device, seq, stored)));
    }
    let served = match link.ok_or("one of --connect, --listen or --tty is needed")? {
        Link::Connect(addr) => loop {
            match TcpStream::connect(&addr) {
                Ok(mut s) => {
                    eprintln!("connected to {addr}");
                    if let Err(e) = gateway.serve(&mut s, unix_ms) {
                        eprintln!("{addr}: {e}");
                    }
                    let c = gateway.counters();
                    eprintln!(
                        "line closed after {} records ({} received twice), {} readings; connecting again",
                        c.records, c.duplicates, c.readings
                    );
                }
                Err(e) => eprintln!("{addr}: {e}; trying again"),
            }
            std::thread::sleep(std::time::Duration::from_secs(1));
        },
        Link::Listen(addr) => {
            let listener = TcpListener::bind(&addr).map_err(|e| format!("{addr}: {e}"))?;
            let (mut s, peer) = listener.accept().map_err(|e| e.to_string())?;
            eprintln!("device connected from {peer}");
            gateway.serve(&mut s, unix_ms)
        }
        Link::Tty(path) => {
            let mut f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            gateway.serve(&mut f, unix_ms)
        }
    };
    served.map_err(|e| e.to_string())?;
    let c = gateway.counters();
    eprintln!(
        "line closed: {} frames ({} refused), {} records ({} duplicates), {} readings stored",
        c.frames, c.bad_frames, c.records, c.duplicates, c.readings
    );
    Ok(())
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
