//! The local gateway: the "local only" deployment next to the meter.
//!
//! It reads frames from devices over serial lines (a UART, or QEMU's
//! `-serial tcp:`) or through an MQTT broker ([`Gateway::serve_mqtt`]),
//! and hands each to the server half of the protocol
//! ([`telemark_server`]), over SQLite ([`SqliteStore`]): the frame is
//! verified with the device's key, its records stored in one transaction,
//! and only after the commit is the response sent back, with the
//! acknowledgement and whatever config or commands wait for the device.
//!
//! A commit that fails (the database busy or locked by another process, the
//! disk full) acknowledges nothing and keeps the line up; the device sends
//! the records again. The error is logged with its cause.

use std::fmt;
use std::io::{Read, Write};
use std::path::Path;

use telemark_core::config::ConfigUpdate;
use telemark_core::model::Reading;
use telemark_core::wire::frame::Command;
use telemark_core::wire::report::Report;
use telemark_core::wire::seal::Key;
use telemark_core::wire::{Epoch, Seq};
use telemark_serial::{encode, overhead, Deframer};
use telemark_server::{Contents, Counters, Keyring, ReceiveError, RotateError, Server, Store};

mod mqtt;
mod sqlite;

pub use mqtt::{Broker, MqttError};
pub use sqlite::SqliteStore;

/// Why the gateway failed.
#[derive(Debug)]
pub enum GatewayError {
    /// The database failed.
    Db(rusqlite::Error),
    /// The line failed.
    Io(std::io::Error),
    /// A config update that is not one (its CBOR does not parse).
    Config(telemark_core::config::ConfigError),
    /// A key rotation that cannot start (an unknown device, an id in use).
    Rotate(RotateError<rusqlite::Error>),
    /// The MQTT broker refused the gateway.
    Mqtt(MqttError),
}

impl fmt::Display for GatewayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GatewayError::Db(e) => write!(f, "database: {e}"),
            GatewayError::Io(e) => write!(f, "line: {e}"),
            GatewayError::Config(e) => write!(f, "config update: {e}"),
            GatewayError::Rotate(e) => write!(f, "key rotation: {e}"),
            GatewayError::Mqtt(e) => write!(f, "mqtt: {e}"),
        }
    }
}

impl std::error::Error for GatewayError {}

impl From<rusqlite::Error> for GatewayError {
    fn from(e: rusqlite::Error) -> Self {
        GatewayError::Db(e)
    }
}

impl From<std::io::Error> for GatewayError {
    fn from(e: std::io::Error) -> Self {
        GatewayError::Io(e)
    }
}

/// What a stored record held, as shown to a [`Gateway::watch`]er.
#[derive(Clone, Debug, PartialEq)]
pub enum Stored {
    /// A block of readings.
    Readings(Vec<Reading>),
    /// An alert, a heartbeat, a config status, a command result, a crash.
    Report(Report),
    /// An alert-lane payload of no known report; it is kept raw in `records`.
    Undecodable,
}

type Watcher = Box<dyn FnMut(u64, Epoch, Seq, &Stored) + Send>;

/// The gateway: the server half over SQLite.
pub struct Gateway {
    server: Server,
    store: SqliteStore,
    watch: Option<Watcher>,
}

impl Gateway {
    /// Opens (or creates) the database at `path`; accepts the devices of
    /// `keyring`.
    pub fn open(path: &Path, keyring: Keyring) -> Result<Self, GatewayError> {
        Ok(Self::with(SqliteStore::open(path)?, keyring))
    }

    /// A gateway with a database in memory, for tests and trials.
    pub fn in_memory(keyring: Keyring) -> Result<Self, GatewayError> {
        Ok(Self::with(SqliteStore::in_memory()?, keyring))
    }

    fn with(store: SqliteStore, keyring: Keyring) -> Self {
        Gateway {
            server: Server::new(keyring),
            store,
            watch: None,
        }
    }

    /// Calls `f` with each record once it is stored (after the commit):
    /// the device, the record's epoch and sequence number, and what it
    /// held. Records received again are not shown again.
    pub fn watch(&mut self, f: impl FnMut(u64, Epoch, Seq, &Stored) + Send + 'static) {
        self.watch = Some(Box::new(f));
    }

    /// What the gateway stored and refused so far (only committed work).
    pub fn counters(&self) -> Counters {
        self.server.counters()
    }

    /// The database, for queries.
    pub fn db(&self) -> &rusqlite::Connection {
        self.store.db()
    }

    /// Sets the config `device` should run: a CBOR update, sent with every
    /// response until the device reports it applied or refused. Returns
    /// its version.
    pub fn queue_config(&mut self, device: u64, cbor: &[u8]) -> Result<u32, GatewayError> {
        let version = ConfigUpdate::parse(cbor)
            .map_err(GatewayError::Config)?
            .version();
        self.store.set_config(device, version, cbor)?;
        Ok(version)
    }

    /// Queues a command for `device`, sent until its result comes back.
    pub fn queue_command(
        &mut self,
        device: u64,
        id: u32,
        command: Command,
    ) -> Result<(), GatewayError> {
        Ok(self.store.queue_command(device, id, command)?)
    }

    /// Starts moving `device` to key `key` of id `id`: sent with every
    /// response until the device's first frame sealed with it, which
    /// retires its earlier keys (see [`Server::rotate_key`]). The device's
    /// store must keep keys (a flash store): a RAM-store device refuses it
    /// and keeps its key (its `key_status` row says why).
    pub fn rotate_key(&mut self, device: u64, id: u8, key: Key) -> Result<(), GatewayError> {
        self.server
            .rotate_key(&mut self.store, device, id, key)
            .map_err(GatewayError::Rotate)
    }

    /// Takes one frame that arrived at `now_unix_ms`; returns the response
    /// to send back, or nothing if the frame was refused (counted) or
    /// could not be stored (logged: the device sends it again).
    pub fn receive(&mut self, frame: &[u8], now_unix_ms: u64) -> Option<Vec<u8>> {
        match self.server.receive(&mut self.store, frame, now_unix_ms) {
            Ok(received) => {
                if let Some(watch) = &mut self.watch {
                    for r in &received.batch.records {
                        let stored = match &r.contents {
                            Contents::Readings(v) => {
                                Stored::Readings(v.iter().map(|t| t.reading).collect())
                            }
                            Contents::Report { report, .. } => Stored::Report(*report),
                            Contents::Unknown => Stored::Undecodable,
                        };
                        watch(received.batch.device, r.epoch, r.seq, &stored);
                    }
                }
                Some(received.response)
            }
            Err(ReceiveError::Refused(_)) => None,
            Err(ReceiveError::Store(e)) => {
                eprintln!("frame not stored, not acknowledged (the device sends it again): {e}");
                None
            }
        }
    }

    /// Serves one serial line until it closes: frames in, responses out.
    /// `clock` gives Unix milliseconds.
    pub fn serve<L: Read + Write>(
        &mut self,
        line: &mut L,
        clock: impl Fn() -> u64,
    ) -> Result<(), GatewayError> {
        serve_line(line, |frame| self.receive(frame, clock()))
    }

    /// Serves one of several lines at once: each line's thread takes the
    /// gateway only while it handles a frame.
    pub fn serve_shared<L: Read + Write>(
        gateway: &std::sync::Mutex<Gateway>,
        line: &mut L,
        clock: impl Fn() -> u64,
    ) -> Result<(), GatewayError> {
        serve_line(line, |frame| match gateway.lock() {
            Ok(mut g) => g.receive(frame, clock()),
            Err(poisoned) => poisoned.into_inner().receive(frame, clock()),
        })
    }

    /// Readings stored for `device`.
    pub fn readings(&self, device: u64) -> Result<u64, GatewayError> {
        Ok(self.db().query_row(
            "SELECT COUNT(*) FROM readings WHERE device = ?1",
            [device as i64],
            |r| r.get::<_, i64>(0),
        )? as u64)
    }
}

/// Reads frames off `line` until it closes, hands each to `handle`, and
/// writes back the response it returns.
fn serve_line<L: Read + Write>(
    line: &mut L,
    mut handle: impl FnMut(&[u8]) -> Option<Vec<u8>>,
) -> Result<(), GatewayError> {
    let mut rx: Deframer<4096> = Deframer::new();
    let mut buf = [0u8; 1024];
    loop {
        let n = match line.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        for &b in buf.get(..n).unwrap_or_default() {
            let Some(Ok(frame)) = rx.push(b) else {
                continue;
            };
            let frame = frame.to_vec();
            if let Some(reply) = handle(&frame) {
                let mut framed = vec![0u8; reply.len() + overhead(reply.len())];
                if let Ok(len) = encode(&reply, &mut framed) {
                    line.write_all(framed.get(..len).unwrap_or_default())?;
                }
                line.flush()?;
            }
        }
    }
}
