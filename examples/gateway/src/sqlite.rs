//! The gateway's [`Store`]: SQLite in one file, one transaction per frame,
//! every commit synced to disk before it is acknowledged. Reports are
//! stored as columns of their own tables, readings with their device time
//! and their Unix time.

use std::path::Path;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, Transaction};
use telemark_core::model::Value;
use telemark_core::wire::frame::Command;
use telemark_core::wire::report::{KeyStatus, Report};
use telemark_core::wire::seal::Key;
use telemark_core::wire::{Epoch, Lane};
use telemark_server::{
    Batch, CommandOutcome, Committed, ConfigState, Contents, DesiredConfig, EpochState,
    KeyRotation, KeyState, NewRecord, Outbox, OutboxChange, QueuedCommand, RecordKey, Store,
};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS records (
    device INTEGER NOT NULL, epoch INTEGER NOT NULL, seq INTEGER NOT NULL, lane TEXT NOT NULL,
    severity TEXT NOT NULL, decimated INTEGER NOT NULL, declared INTEGER NOT NULL,
    received_ms INTEGER NOT NULL, payload BLOB NOT NULL,
    PRIMARY KEY (device, epoch, seq));
CREATE TABLE IF NOT EXISTS readings (
    device INTEGER NOT NULL, epoch INTEGER NOT NULL, seq INTEGER NOT NULL,
    channel INTEGER NOT NULL, time_ms INTEGER NOT NULL, unix_ms INTEGER,
    kind TEXT NOT NULL, value REAL NOT NULL, raw INTEGER NOT NULL, quality INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS readings_by_channel ON readings (device, channel, unix_ms);
CREATE TABLE IF NOT EXISTS alerts (
    device INTEGER NOT NULL, epoch INTEGER NOT NULL, seq INTEGER NOT NULL,
    channel INTEGER NOT NULL, kind TEXT NOT NULL, severity TEXT NOT NULL,
    time_ms INTEGER NOT NULL, unix_ms INTEGER, value REAL);
CREATE TABLE IF NOT EXISTS heartbeats (
    device INTEGER NOT NULL, epoch INTEGER NOT NULL, seq INTEGER NOT NULL, unix_ms INTEGER,
    uptime_s INTEGER NOT NULL, sampled INTEGER NOT NULL, sent_readings INTEGER NOT NULL,
    bytes_on_air INTEGER NOT NULL, retries INTEGER NOT NULL, evicted INTEGER NOT NULL,
    decimated INTEGER NOT NULL, sensor_faults INTEGER NOT NULL, queue_depth INTEGER NOT NULL,
    reset_reason TEXT NOT NULL, wakeups INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS config_status (
    device INTEGER NOT NULL, epoch INTEGER NOT NULL, seq INTEGER NOT NULL,
    received_ms INTEGER NOT NULL, version INTEGER NOT NULL, code INTEGER NOT NULL,
    detail INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS command_results (
    device INTEGER NOT NULL, epoch INTEGER NOT NULL, seq INTEGER NOT NULL,
    received_ms INTEGER NOT NULL, id INTEGER NOT NULL, status INTEGER NOT NULL,
    value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS crashes (
    device INTEGER NOT NULL, epoch INTEGER NOT NULL, seq INTEGER NOT NULL,
    received_ms INTEGER NOT NULL, kind TEXT NOT NULL, pc INTEGER NOT NULL, lr INTEGER NOT NULL,
    fault_status INTEGER NOT NULL, uptime_ms INTEGER NOT NULL, reset_reason TEXT NOT NULL,
    text TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS conflicts (
    device INTEGER NOT NULL, epoch INTEGER NOT NULL, seq INTEGER NOT NULL,
    received_ms INTEGER NOT NULL, payload BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS epochs (
    device INTEGER NOT NULL, epoch INTEGER NOT NULL, highest INTEGER NOT NULL,
    seen INTEGER NOT NULL, anchor_ms INTEGER, PRIMARY KEY (device, epoch));
CREATE TABLE IF NOT EXISTS outbox_config (
    device INTEGER PRIMARY KEY, version INTEGER NOT NULL, cbor BLOB NOT NULL,
    state TEXT NOT NULL, code INTEGER NOT NULL, detail INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS key_status (
    device INTEGER NOT NULL, epoch INTEGER NOT NULL, seq INTEGER NOT NULL,
    received_ms INTEGER NOT NULL, id INTEGER NOT NULL, status TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS outbox_key (
    device INTEGER PRIMARY KEY, id INTEGER NOT NULL, key BLOB NOT NULL, state TEXT NOT NULL,
    status INTEGER, previous_id INTEGER, previous_key BLOB);
CREATE TABLE IF NOT EXISTS outbox_commands (
    device INTEGER NOT NULL, id INTEGER NOT NULL, code INTEGER NOT NULL,
    output INTEGER NOT NULL, value INTEGER NOT NULL, status INTEGER, result INTEGER,
    PRIMARY KEY (device, id));
";

/// A key column: 32 bytes, or the row is damaged.
fn key_of(bytes: &[u8]) -> rusqlite::Result<Key> {
    <[u8; 32]>::try_from(bytes)
        .map(Key::from_bytes)
        .map_err(|_| {
            rusqlite::Error::InvalidColumnType(1, "key".into(), rusqlite::types::Type::Blob)
        })
}

/// SQLite's integers are signed: u64 ids and epochs are kept bit for bit.
fn i(v: u64) -> i64 {
    v as i64
}

fn raw_bits(v: Value) -> (&'static str, i64, f64) {
    match v {
        Value::Scaled(x) => ("scaled", i64::from(x), f64::from(x)),
        Value::Float(f) => ("float", i64::from(f.to_bits()), f64::from(f)),
        Value::Bool(b) => ("bool", i64::from(b), f64::from(u8::from(b))),
        Value::Counter(c) => ("counter", i64::from(c), f64::from(c)),
    }
}

fn command_columns(c: Command) -> (u8, u8, u32) {
    match c {
        Command::Ping => (0, 0, 0),
        Command::FlushNow => (1, 0, 0),
        Command::Reboot => (2, 0, 0),
        Command::SetOutput { output, value } => (3, output, value),
        _ => (255, 0, 0),
    }
}

fn command_of(code: u8, output: u8, value: u32) -> Option<Command> {
    Some(match code {
        0 => Command::Ping,
        1 => Command::FlushNow,
        2 => Command::Reboot,
        3 => Command::SetOutput { output, value },
        _ => return None,
    })
}

/// The gateway's database.
pub struct SqliteStore {
    db: Connection,
}

impl SqliteStore {
    /// Opens (or creates) the database at `path`.
    pub fn open(path: &Path) -> rusqlite::Result<Self> {
        Self::with(Connection::open(path)?)
    }

    /// A database in memory, for tests and trials.
    pub fn in_memory() -> rusqlite::Result<Self> {
        Self::with(Connection::open_in_memory()?)
    }

    fn with(db: Connection) -> rusqlite::Result<Self> {
        // Durable before acknowledged: every commit reaches the disk.
        db.pragma_update(None, "synchronous", "FULL")?;
        // Another process holding the database: wait a little, then give
        // up on this frame (it is not acknowledged; the device resends).
        db.busy_timeout(Duration::from_millis(500))?;
        db.execute_batch(SCHEMA)?;
        Ok(SqliteStore { db })
    }

    /// The database, for queries.
    pub fn db(&self) -> &Connection {
        &self.db
    }

    fn insert(tx: &Transaction<'_>, batch: &Batch, r: &NewRecord) -> rusqlite::Result<()> {
        let (d, e, s) = (i(batch.device), i(r.epoch.0), r.seq.0);
        let lane = if r.lane == Lane::Alert {
            "alert"
        } else {
            "routine"
        };
        tx.execute(
            "INSERT INTO records VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                d,
                e,
                s,
                lane,
                format!("{:?}", r.severity),
                r.decimated,
                r.declared,
                i(batch.received_unix_ms),
                r.payload
            ],
        )?;
        let received = i(batch.received_unix_ms);
        match &r.contents {
            Contents::Readings(readings) => {
                let mut insert = tx.prepare_cached(
                    "INSERT INTO readings VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                )?;
                for t in readings {
                    let (kind, raw, value) = raw_bits(t.reading.value);
                    insert.execute(params![
                        d,
                        e,
                        s,
                        t.reading.channel.0,
                        i(t.reading.time.as_millis()),
                        t.unix_ms,
                        kind,
                        value,
                        raw,
                        t.reading.quality.bits()
                    ])?;
                }
            }
            Contents::Report { report, unix_ms } => match report {
                Report::Alert(a) => {
                    tx.execute(
                        "INSERT INTO alerts VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                        params![
                            d,
                            e,
                            s,
                            a.channel.0,
                            format!("{:?}", a.kind),
                            format!("{:?}", a.severity),
                            i(a.time.as_millis()),
                            unix_ms,
                            a.value.map(|v| raw_bits(v).2)
                        ],
                    )?;
                }
                Report::Heartbeat(h) => {
                    tx.execute(
                        "INSERT INTO heartbeats VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
                        params![
                            d,
                            e,
                            s,
                            unix_ms,
                            h.uptime_s,
                            h.sampled,
                            h.sent_readings,
                            h.bytes_on_air,
                            h.retries,
                            h.evicted,
                            h.decimated,
                            h.sensor_faults,
                            h.queue_depth,
                            format!("{:?}", h.reset_reason),
                            h.wakeups
                        ],
                    )?;
                }
                Report::ConfigStatus {
                    version,
                    code,
                    detail,
                } => {
                    tx.execute(
                        "INSERT INTO config_status VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                        params![d, e, s, received, version, code, detail],
                    )?;
                }
                Report::CommandResult { id, status, value } => {
                    tx.execute(
                        "INSERT INTO command_results VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                        params![d, e, s, received, id, status, value],
                    )?;
                }
                Report::KeyStatus { id, status } => {
                    tx.execute(
                        "INSERT INTO key_status VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                        params![d, e, s, received, id, format!("{status:?}")],
                    )?;
                }
                Report::Crash {
                    crash,
                    reset_reason,
                } => {
                    tx.execute(
                        "INSERT INTO crashes VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                        params![
                            d,
                            e,
                            s,
                            received,
                            format!("{:?}", crash.kind),
                            crash.pc,
                            crash.lr,
                            crash.status,
                            crash.uptime_ms,
                            format!("{reset_reason:?}"),
                            crash.text()
                        ],
                    )?;
                }
            },
            // Kept raw, in `records`.
            Contents::Unknown => {}
        }
        Ok(())
    }

    fn apply(tx: &Transaction<'_>, device: u64, change: &OutboxChange) -> rusqlite::Result<()> {
        match *change {
            OutboxChange::ConfigApplied { version } => {
                tx.execute(
                    "UPDATE outbox_config SET state = 'applied' WHERE device = ?1 AND version = ?2",
                    params![i(device), version],
                )?;
            }
            OutboxChange::ConfigLost { version } => {
                tx.execute(
                    "UPDATE outbox_config SET state = 'pending' WHERE device = ?1 AND version = ?2",
                    params![i(device), version],
                )?;
            }
            OutboxChange::ConfigRefused {
                version,
                code,
                detail,
            } => {
                tx.execute(
                    "UPDATE outbox_config SET state = 'refused', code = ?3, detail = ?4 \
                     WHERE device = ?1 AND version = ?2",
                    params![i(device), version, code, detail],
                )?;
            }
            OutboxChange::CommandDone { id, outcome } => {
                tx.execute(
                    "UPDATE outbox_commands SET status = ?3, result = ?4 WHERE device = ?1 AND id = ?2",
                    params![i(device), id, outcome.status, outcome.value],
                )?;
            }
            OutboxChange::KeyInUse { id } => {
                tx.execute(
                    "UPDATE outbox_key SET state = 'in use' WHERE device = ?1 AND id = ?2",
                    params![i(device), id],
                )?;
            }
            OutboxChange::KeyRefused { id, status } => {
                tx.execute(
                    "UPDATE outbox_key SET state = 'refused', status = ?3 WHERE device = ?1 AND id = ?2",
                    params![i(device), id, status as u8],
                )?;
            }
        }
        Ok(())
    }
}

impl Store for SqliteStore {
    type Error = rusqlite::Error;

    fn epoch_state(&mut self, device: u64, epoch: Epoch) -> rusqlite::Result<Option<EpochState>> {
        self.db
            .query_row(
                "SELECT highest, seen, anchor_ms FROM epochs WHERE device = ?1 AND epoch = ?2",
                params![i(device), i(epoch.0)],
                |r| {
                    Ok(EpochState {
                        highest: r.get(0)?,
                        seen: r.get::<_, i64>(1)? as u64,
                        anchor_unix_ms: r.get(2)?,
                    })
                },
            )
            .optional()
    }

    fn stored_payload(&mut self, key: RecordKey) -> rusqlite::Result<Option<Vec<u8>>> {
        self.db
            .query_row(
                "SELECT payload FROM records WHERE device = ?1 AND epoch = ?2 AND seq = ?3",
                params![i(key.device), i(key.epoch.0), key.seq.0],
                |r| r.get(0),
            )
            .optional()
    }

    fn outbox(&mut self, device: u64) -> rusqlite::Result<Outbox> {
        let config = self
            .db
            .query_row(
                "SELECT version, cbor, state, code, detail FROM outbox_config WHERE device = ?1",
                [i(device)],
                |r| {
                    let state = match r.get::<_, String>(2)?.as_str() {
                        "applied" => ConfigState::Applied,
                        "refused" => ConfigState::Refused {
                            code: r.get(3)?,
                            detail: r.get(4)?,
                        },
                        _ => ConfigState::Pending,
                    };
                    Ok(DesiredConfig {
                        version: r.get(0)?,
                        cbor: r.get(1)?,
                        state,
                    })
                },
            )
            .optional()?;
        let mut stmt = self.db.prepare_cached(
            "SELECT id, code, output, value, status, result FROM outbox_commands \
             WHERE device = ?1 ORDER BY rowid",
        )?;
        let rows = stmt.query_map([i(device)], |r| {
            let status: Option<u8> = r.get(4)?;
            let result: Option<u32> = r.get(5)?;
            Ok((
                r.get::<_, u32>(0)?,
                command_of(r.get(1)?, r.get(2)?, r.get(3)?),
                status
                    .zip(result)
                    .map(|(status, value)| CommandOutcome { status, value }),
            ))
        })?;
        let mut commands = Vec::new();
        for row in rows {
            if let (id, Some(command), result) = row? {
                commands.push(QueuedCommand {
                    id,
                    command,
                    result,
                });
            }
        }
        let key = self
            .db
            .query_row(
                "SELECT id, key, state, status, previous_id, previous_key FROM outbox_key \
                 WHERE device = ?1",
                [i(device)],
                |r| {
                    let state = match (r.get::<_, String>(2)?.as_str(), r.get::<_, Option<u8>>(3)?)
                    {
                        ("in use", _) => KeyState::InUse,
                        ("refused", status) => KeyState::Refused(
                            status
                                .and_then(KeyStatus::from_u8)
                                .unwrap_or(KeyStatus::Refused),
                        ),
                        _ => KeyState::Pending,
                    };
                    let previous: Option<(u8, Vec<u8>)> = r.get::<_, Option<u8>>(4)?.zip(r.get(5)?);
                    Ok((r.get::<_, u8>(0)?, r.get::<_, Vec<u8>>(1)?, state, previous))
                },
            )
            .optional()?;
        let key = match key {
            None => None,
            Some((id, key, state, previous)) => Some(KeyRotation {
                id,
                key: key_of(&key)?,
                state,
                previous: match previous {
                    Some((id, key)) => Some((id, key_of(&key)?)),
                    None => None,
                },
            }),
        };
        Ok(Outbox {
            config,
            commands,
            key,
        })
    }

    fn commit(&mut self, batch: &Batch) -> rusqlite::Result<Committed> {
        let tx = self.db.transaction()?;
        for r in &batch.records {
            Self::insert(&tx, batch, r)?;
        }
        for c in &batch.conflicts {
            tx.execute(
                "INSERT INTO conflicts VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    i(batch.device),
                    i(c.epoch.0),
                    c.seq.0,
                    i(batch.received_unix_ms),
                    c.payload
                ],
            )?;
        }
        tx.execute(
            "INSERT OR REPLACE INTO epochs VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                i(batch.device),
                i(batch.epoch.0),
                batch.state.highest,
                batch.state.seen as i64,
                batch.state.anchor_unix_ms
            ],
        )?;
        for change in &batch.outbox {
            Self::apply(&tx, batch.device, change)?;
        }
        tx.commit()?;
        Ok(batch.committed())
    }

    fn set_config(&mut self, device: u64, version: u32, cbor: &[u8]) -> rusqlite::Result<()> {
        self.db.execute(
            "INSERT OR REPLACE INTO outbox_config VALUES (?1, ?2, ?3, 'pending', 0, 0)",
            params![i(device), version, cbor],
        )?;
        Ok(())
    }

    fn set_key(&mut self, device: u64, id: u8, key: &Key) -> rusqlite::Result<()> {
        let tx = self.db.transaction()?;
        let previous: Option<(Option<u8>, Option<Vec<u8>>)> = tx
            .query_row(
                "SELECT CASE state WHEN 'in use' THEN id ELSE previous_id END, \
                        CASE state WHEN 'in use' THEN key ELSE previous_key END \
                 FROM outbox_key WHERE device = ?1",
                [i(device)],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let (previous_id, previous_key) = previous.unwrap_or_default();
        tx.execute(
            "INSERT OR REPLACE INTO outbox_key VALUES (?1, ?2, ?3, 'pending', NULL, ?4, ?5)",
            params![
                i(device),
                id,
                &key.as_bytes()[..],
                previous_id,
                previous_key
            ],
        )?;
        tx.commit()
    }

    fn queue_command(&mut self, device: u64, id: u32, command: Command) -> rusqlite::Result<()> {
        let (code, output, value) = command_columns(command);
        self.db.execute(
            "INSERT OR IGNORE INTO outbox_commands VALUES (?1, ?2, ?3, ?4, ?5, NULL, NULL)",
            params![i(device), id, code, output, value],
        )?;
        Ok(())
    }
}
