//! The local gateway: the "local only" deployment next to the meter.
//!
//! It reads frames from devices over a serial line (a UART, or QEMU's
//! `-serial tcp:`), stores every record in SQLite inside one transaction per
//! frame, and only after the commit acknowledges the sequence numbers it
//! stored. A record it already has is acknowledged again and not stored
//! twice: records are keyed by (device, sequence). Blocks are decoded into
//! one row per reading; alerts, heartbeats, config statuses and command
//! results get tables of their own. Config updates and commands queued for a
//! device go down with its next acknowledgement.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io::{Read, Write};
use std::path::Path;

use rusqlite::{params, Connection};
use telemark_core::codec::{BlockCodec, CompactCodec};
use telemark_core::wire::frame::{
    write_ack, write_command, write_config, Command, RecordsFrame, MAX_ACK_RANGES,
};
use telemark_core::model::{Reading, Value};
use telemark_core::wire::report::Report;
use telemark_core::store::{Lane, Seq, SeqRange};
use telemark_serial::{encode, overhead, Deframer};

/// Why the gateway failed.
#[derive(Debug)]
pub enum GatewayError {
    /// The database failed.
    Db(rusqlite::Error),
    /// The line failed.
    Io(std::io::Error),
}

impl fmt::Display for GatewayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GatewayError::Db(e) => write!(f, "database: {e}"),
            GatewayError::Io(e) => write!(f, "line: {e}"),
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

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS records (
    device INTEGER NOT NULL, seq INTEGER NOT NULL, lane TEXT NOT NULL,
    decimated INTEGER NOT NULL, received_ms INTEGER NOT NULL, payload BLOB NOT NULL,
    PRIMARY KEY (device, seq));
CREATE TABLE IF NOT EXISTS readings (
    device INTEGER NOT NULL, seq INTEGER NOT NULL, channel INTEGER NOT NULL,
    time_ms INTEGER NOT NULL, kind TEXT NOT NULL, value REAL NOT NULL, raw INTEGER NOT NULL,
    quality INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS readings_by_channel ON readings (device, channel, time_ms);
CREATE TABLE IF NOT EXISTS alerts (
    device INTEGER NOT NULL, seq INTEGER NOT NULL, channel INTEGER NOT NULL, kind TEXT NOT NULL,
    severity TEXT NOT NULL, time_ms INTEGER NOT NULL, value REAL);
CREATE TABLE IF NOT EXISTS reports (
    device INTEGER NOT NULL, seq INTEGER NOT NULL, report TEXT NOT NULL);
";

/// Counts of what the gateway did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GatewayCounters {
    /// Frames accepted.
    pub frames: u64,
    /// Frames refused (bad CRC, malformed).
    pub bad_frames: u64,
    /// Records stored.
    pub records: u64,
    /// Records received again and not stored again.
    pub duplicates: u64,
    /// Readings stored.
    pub readings: u64,
}

/// What a stored record held, as shown to a [`Gateway::watch`]er.
#[derive(Clone, Debug, PartialEq)]
pub enum Stored {
    /// A block of readings.
    Readings(Vec<Reading>),
    /// An alert, a heartbeat, a config status, a command result, a crash.
    Report(Report),
    /// A payload that did not decode; it is kept raw in `records`.
    Undecodable,
}

type Watcher = Box<dyn FnMut(u64, Seq, &Stored) + Send>;

/// The gateway's store and downlink queue.
pub struct Gateway {
    db: Connection,
    downlink: HashMap<u64, VecDeque<Vec<u8>>>,
    counters: GatewayCounters,
    watch: Option<Watcher>,
}

fn raw_bits(v: Value) -> (&'static str, i64, f64) {
    match v {
        Value::Scaled(x) => ("scaled", i64::from(x), f64::from(x)),
        Value::Float(f) => ("float", i64::from(f.to_bits()), f64::from(f)),
        Value::Bool(b) => ("bool", i64::from(b), f64::from(u8::from(b))),
        Value::Counter(c) => ("counter", i64::from(c), f64::from(c)),
    }
}

/// Sequence numbers as acknowledgement ranges, consecutive ones merged.
pub fn ranges(mut seqs: Vec<u32>) -> Vec<SeqRange> {
    seqs.sort_unstable();
    seqs.dedup();
    let mut out: Vec<SeqRange> = Vec::new();
    for s in seqs {
        match out.last_mut() {
            Some(r) if r.last.0.checked_add(1) == Some(s) => r.last = Seq(s),
            _ => out.push(SeqRange::single(Seq(s))),
        }
    }
    out
}

impl Gateway {
    /// Opens (or creates) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, GatewayError> {
        Self::with(Connection::open(path)?)
    }

    /// A gateway with a database in memory, for tests and trials.
    pub fn in_memory() -> Result<Self, GatewayError> {
        Self::with(Connection::open_in_memory()?)
    }

    fn with(db: Connection) -> Result<Self, GatewayError> {
        // Durable before acknowledged: every commit reaches the disk.
        db.pragma_update(None, "synchronous", "FULL")?;
        db.execute_batch(SCHEMA)?;
        Ok(Gateway {
            db,
            downlink: HashMap::new(),
            counters: GatewayCounters::default(),
            watch: None,
        })
    }

    /// Calls `f` with each record once it is stored (after the commit):
    /// the device, the sequence number and what it held. Records received
    /// again are not shown again.
    pub fn watch(&mut self, f: impl FnMut(u64, Seq, &Stored) + Send + 'static) {
        self.watch = Some(Box::new(f));
    }

    /// What the gateway did so far.
    pub fn counters(&self) -> GatewayCounters {
        self.counters
    }

    /// The database, for queries.
    pub fn db(&self) -> &Connection {
        &self.db
    }

    /// Queues a CBOR config update for `device`.
    pub fn queue_config(&mut self, device: u64, cbor: &[u8]) {
        let mut buf = vec![0u8; cbor.len() + 32];
        if let Ok(n) = write_config(&mut buf, device, cbor) {
            buf.truncate(n);
            self.downlink.entry(device).or_default().push_back(buf);
        }
    }

    /// Queues a command for `device`.
    pub fn queue_command(&mut self, device: u64, id: u32, command: Command) {
        let mut buf = vec![0u8; 64];
        if let Ok(n) = write_command(&mut buf, device, id, command) {
            buf.truncate(n);
            self.downlink.entry(device).or_default().push_back(buf);
        }
    }

    /// Stores a frame's records and returns the frames to send back: the
    /// acknowledgement, then anything queued for the device. A frame that
    /// does not parse is refused and counted, and nothing is acknowledged.
    pub fn receive(
        &mut self,
        frame: &[u8],
        now_unix_ms: u64,
    ) -> Result<Vec<Vec<u8>>, GatewayError> {
        let Ok(parsed) = RecordsFrame::parse(frame) else {
            self.counters.bad_frames += 1;
            return Ok(Vec::new());
        };
        let device = parsed.device();
        let tx = self.db.transaction()?;
        let mut seqs = Vec::new();
        let mut stored = Vec::new();
        for record in parsed.records() {
            seqs.push(record.seq.0);
            let lane = if record.meta.lane == Lane::Alert {
                "alert"
            } else {
                "routine"
            };
            let inserted = tx.execute(
                "INSERT OR IGNORE INTO records VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    device as i64,
                    record.seq.0,
                    lane,
                    record.meta.decimated,
                    now_unix_ms as i64,
                    record.payload
                ],
            )?;
            if inserted == 0 {
                self.counters.duplicates += 1;
                continue;
            }
            self.counters.records += 1;
            if record.meta.lane == Lane::Routine {
                let mut readings: Vec<Reading> = Vec::new();
                // An undecodable block stays stored raw, in `records`.
                if CompactCodec.decode(record.payload, &mut readings).is_ok() {
                    for r in &readings {
                        let (kind, raw, value) = raw_bits(r.value);
                        tx.execute(
                            "INSERT INTO readings VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                            params![
                                device as i64,
                                record.seq.0,
                                r.channel.0,
                                r.time.as_millis() as i64,
                                kind,
                                value,
                                raw,
                                r.quality.bits()
                            ],
                        )?;
                    }
                    self.counters.readings += readings.len() as u64;
                    stored.push((record.seq, Stored::Readings(readings)));
                } else {
                    stored.push((record.seq, Stored::Undecodable));
                }
            } else {
                match Report::decode(record.payload) {
                    Ok(Report::Alert(a)) => {
                        stored.push((record.seq, Stored::Report(Report::Alert(a))));
                        tx.execute(
                            "INSERT INTO alerts VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                            params![
                                device as i64,
                                record.seq.0,
                                a.channel.0,
                                format!("{:?}", a.kind),
                                format!("{:?}", a.severity),
                                a.time.as_millis() as i64,
                                a.value.map(|v| raw_bits(v).2)
                            ],
                        )?;
                    }
                    Ok(other) => {
                        stored.push((record.seq, Stored::Report(other)));
                        tx.execute(
                            "INSERT INTO reports VALUES (?1, ?2, ?3)",
                            params![device as i64, record.seq.0, format!("{other:?}")],
                        )?;
                    }
                    Err(_) => stored.push((record.seq, Stored::Undecodable)),
                }
            }
        }
        tx.commit()?;
        self.counters.frames += 1;
        if let Some(watch) = &mut self.watch {
            for (seq, what) in &stored {
                watch(device, *seq, what);
            }
        }
        // Only now, with the records on disk, acknowledge them.
        let mut out = Vec::new();
        for chunk in ranges(seqs).chunks(MAX_ACK_RANGES) {
            let mut ack = vec![0u8; 32 + 12 * chunk.len()];
            if let Ok(n) = write_ack(&mut ack, device, Some(now_unix_ms), chunk) {
                ack.truncate(n);
                out.push(ack);
            }
        }
        if let Some(queue) = self.downlink.get_mut(&device) {
            out.extend(queue.drain(..));
        }
        Ok(out)
    }

    /// Serves one serial line until it closes: frames in, acknowledgements
    /// and downlink out. `clock` gives Unix milliseconds.
    pub fn serve<L: Read + Write>(
        &mut self,
        line: &mut L,
        clock: impl Fn() -> u64,
    ) -> Result<(), GatewayError> {
        serve_line(line, |frame| self.receive(frame, clock()))
    }

    /// Serves one of several lines at once: each line's thread takes the
    /// gateway only while it stores a frame.
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
        Ok(self.db.query_row(
            "SELECT COUNT(*) FROM readings WHERE device = ?1",
            [device as i64],
            |r| r.get::<_, i64>(0),
        )? as u64)
    }
}

/// Reads frames off `line` until it closes, hands each to `handle`, and
/// writes back the frames it returns.
fn serve_line<L: Read + Write>(
    line: &mut L,
    mut handle: impl FnMut(&[u8]) -> Result<Vec<Vec<u8>>, GatewayError>,
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
            for reply in handle(&frame)? {
                let mut framed = vec![0u8; reply.len() + overhead(reply.len())];
                if let Ok(len) = encode(&reply, &mut framed) {
                    line.write_all(framed.get(..len).unwrap_or_default())?;
                }
            }
            line.flush()?;
        }
    }
}
