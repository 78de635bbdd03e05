//! The SQLite backend, the default: one file in the data directory, in
//! WAL mode, every commit synced to disk before it is acknowledged.
//!
//! Its schema is versioned (`PRAGMA user_version`). Version 1 is the one
//! the earlier `telemark-gateway` wrote; [`SqliteStore::open`] upgrades a
//! file of any version in place, in one transaction:
//!
//! | version | what it changes |
//! | --- | --- |
//! | 1 | records, conflicts, replay windows, reports, the outbox |
//! | 2 | devices and their keys; blocks stay compressed at rest, each with its time span (the row-per-reading table is folded into it and dropped) |
//! | 3 | `reading_rows`: a row per reading, kept only when asked ([`SqliteStore::keep_reading_rows`]); epochs keep when they were last heard |
//! | 4 | groups of devices (nested), and API tokens with roles |

use std::path::Path;
use std::time::Duration;

use rusqlite::{params, Connection, ErrorCode, OptionalExtension};
use telemark_core::wire::frame::Command;
use telemark_core::wire::report::{Heartbeat, KeyStatus, Report};
use telemark_core::wire::seal::Key;
use telemark_core::wire::{Epoch, Lane};
use telemark_server::{
    Batch, CommandOutcome, Committed, ConfigState, Contents, DesiredConfig, EpochState,
    KeyRotation, KeyState, NewRecord, Outbox, OutboxChange, QueuedCommand, RecordKey, Store,
};

use crate::access::{Group, Role, Token};
use crate::rules::Rule;
use crate::store::{
    command_columns, command_of, decode_into, key_of, number, outputs_of, reset_reason_of,
    AlertRow, ChannelRow, CloudStore, CommandRow, DeliveryRow, Device, DeviceKey, EventRow,
    HealthRow, NotificationRow, OutputRow, ReadingQuery, ReportedConfig, Span, StoreError,
    StoredReading,
};

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = 11;

/// Version 1: the schema of `telemark-gateway`.
const V1: &str = "
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

/// Version 2: devices and keys; records carry their time span.
const V2: &str = "
CREATE TABLE devices (
    device INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, created_ms INTEGER NOT NULL,
    revoked_ms INTEGER, last_seen_ms INTEGER);
CREATE TABLE device_keys (
    device INTEGER NOT NULL REFERENCES devices (device), id INTEGER NOT NULL,
    key BLOB NOT NULL, PRIMARY KEY (device, id));
ALTER TABLE records ADD COLUMN anchor_ms INTEGER;
ALTER TABLE records ADD COLUMN first_ms INTEGER;
ALTER TABLE records ADD COLUMN last_ms INTEGER;
CREATE TEMP TABLE spans AS
    SELECT device, epoch, seq, MIN(unix_ms - time_ms) AS anchor_ms,
           MIN(unix_ms) AS first_ms, MAX(unix_ms) AS last_ms
    FROM readings WHERE unix_ms IS NOT NULL GROUP BY device, epoch, seq;
UPDATE records SET anchor_ms = spans.anchor_ms, first_ms = spans.first_ms,
    last_ms = spans.last_ms
    FROM spans WHERE records.device = spans.device AND records.epoch = spans.epoch
        AND records.seq = spans.seq;
DROP TABLE spans;
DROP TABLE readings;
CREATE INDEX records_by_time ON records (device, last_ms);
INSERT INTO devices (device, name, created_ms, last_seen_ms)
    SELECT device, 'device-' || device, MIN(received_ms), MAX(received_ms)
    FROM records GROUP BY device;
";

/// Version 3: the row-per-reading table, for those who ask for it; each
/// epoch's row keeps when it was last heard (not each device's, which
/// cost a write a frame).
const V3: &str = "
ALTER TABLE epochs ADD COLUMN received_ms INTEGER;
CREATE TABLE reading_rows (
    device INTEGER NOT NULL, channel INTEGER NOT NULL, unix_ms INTEGER NOT NULL,
    value REAL NOT NULL, quality INTEGER NOT NULL);
CREATE INDEX reading_rows_by_time ON reading_rows (device, channel, unix_ms);
";

/// Version 4: groups of devices, and API tokens.
const V4: &str = "
CREATE TABLE groups (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, parent INTEGER REFERENCES groups (id));
ALTER TABLE devices ADD COLUMN group_id INTEGER REFERENCES groups (id);
CREATE TABLE tokens (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, digest TEXT NOT NULL UNIQUE, role TEXT NOT NULL,
    group_id INTEGER REFERENCES groups (id), created_ms INTEGER NOT NULL, revoked_ms INTEGER);
";

/// Version 5: devices gone silent, and what happened to each device.
const V5: &str = "
ALTER TABLE devices ADD COLUMN offline_ms INTEGER;
CREATE TABLE events (
    id INTEGER PRIMARY KEY, device INTEGER NOT NULL, kind TEXT NOT NULL,
    unix_ms INTEGER NOT NULL, detail TEXT NOT NULL);
CREATE INDEX events_by_device ON events (device, id);
";

/// Version 6: when each command was queued and first sent, and when it
/// expires or expired unanswered.
const V6: &str = "
ALTER TABLE outbox_commands ADD COLUMN queued_ms INTEGER;
ALTER TABLE outbox_commands ADD COLUMN sent_ms INTEGER;
ALTER TABLE outbox_commands ADD COLUMN expires_ms INTEGER;
ALTER TABLE outbox_commands ADD COLUMN expired_ms INTEGER;
";

/// Version 7: notifications, where each sink stands in them, and every
/// attempt at delivering one.
const V7: &str = "
CREATE TABLE notifications (
    id INTEGER PRIMARY KEY, unix_ms INTEGER NOT NULL, body TEXT NOT NULL);
CREATE TABLE sink_cursors (sink TEXT PRIMARY KEY, delivered INTEGER NOT NULL);
CREATE TABLE deliveries (
    id INTEGER PRIMARY KEY, sink TEXT NOT NULL, notification INTEGER NOT NULL,
    attempt INTEGER NOT NULL, unix_ms INTEGER NOT NULL, status INTEGER, error TEXT,
    delivered INTEGER NOT NULL);
";

/// Version 8: rules, and the runs that fired them.
const V8: &str = "
CREATE TABLE rules (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, device INTEGER NOT NULL,
    channel INTEGER NOT NULL, op TEXT NOT NULL, threshold REAL NOT NULL,
    for_ms INTEGER NOT NULL, target INTEGER NOT NULL, code INTEGER NOT NULL,
    output INTEGER NOT NULL, value INTEGER NOT NULL);
CREATE TABLE rule_firings (
    id INTEGER PRIMARY KEY, rule INTEGER NOT NULL, start_ms INTEGER NOT NULL,
    end_ms INTEGER NOT NULL, fired_ms INTEGER NOT NULL);
CREATE INDEX rule_firings_by_rule ON rule_firings (rule, start_ms);
";

/// Version 9: the silent-device rule's intervals a group sets.
const V9: &str = "
CREATE TABLE group_silence (
    group_id INTEGER PRIMARY KEY REFERENCES groups (id), intervals INTEGER NOT NULL);
";

/// Version 10: what each channel of a device measures, as it reports it.
const V10: &str = "
CREATE TABLE channels (
    device INTEGER NOT NULL, channel INTEGER NOT NULL, unit INTEGER NOT NULL,
    kind TEXT NOT NULL, decimals INTEGER NOT NULL, received_ms INTEGER NOT NULL,
    PRIMARY KEY (device, channel));
";

/// Version 11: the outputs of a device, as the operator names them (a
/// JSON array of `{"output", "name"}`).
const V11: &str = "
CREATE TABLE outputs (device INTEGER PRIMARY KEY, list TEXT NOT NULL);
";

/// SQLite errors, by what the caller can do about them.
fn db_error(e: rusqlite::Error) -> StoreError {
    let text = e.to_string();
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::Busy(text),
        Some(ErrorCode::DiskFull) => StoreError::Full(text),
        Some(ErrorCode::CannotOpen | ErrorCode::ReadOnly | ErrorCode::SystemIoFailure) => {
            StoreError::Unavailable(text)
        }
        Some(ErrorCode::ConstraintViolation) => StoreError::Taken(text),
        _ => StoreError::Failed(text),
    }
}

/// A key column: 32 bytes, or the row is damaged.
fn key_column(bytes: &[u8]) -> rusqlite::Result<Key> {
    key_of(bytes).map_err(|_| {
        rusqlite::Error::InvalidColumnType(1, "key".into(), rusqlite::types::Type::Blob)
    })
}

/// SQLite's integers are signed: u64 ids and epochs are kept bit for bit.
fn i(v: u64) -> i64 {
    v as i64
}

/// The SQLite backend. See the module docs.
pub struct SqliteStore {
    db: Connection,
    reading_rows: bool,
}

impl SqliteStore {
    /// Opens (or creates) the database at `path`, upgrading its schema.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Connection::open(path).map_err(db_error)?;
        // Readers (the API) do not wait for the writer, nor it for them.
        db.pragma_update(None, "journal_mode", "WAL")
            .map_err(db_error)?;
        Self::with(db)
    }

    /// A database in memory, for tests and trials.
    pub fn in_memory() -> Result<Self, StoreError> {
        Self::with(Connection::open_in_memory().map_err(db_error)?)
    }

    fn with(mut db: Connection) -> Result<Self, StoreError> {
        // Durable before acknowledged: every commit reaches the disk.
        db.pragma_update(None, "synchronous", "FULL")
            .map_err(db_error)?;
        // Another process holding the database: wait a little, then give
        // up on this frame (it is not acknowledged; the device resends).
        db.busy_timeout(Duration::from_millis(500))
            .map_err(db_error)?;
        // Every statement of the ingest path stays prepared.
        db.set_prepared_statement_cache_capacity(64);
        migrate(&mut db)?;
        Ok(SqliteStore {
            db,
            reading_rows: false,
        })
    }

    /// Also keeps a row per reading (`reading_rows`), and answers range
    /// queries from it: for SQL tools that want rows. It costs space and
    /// ingest speed (`benches/cloud` measures both forms); turn it on
    /// before the first frame, as blocks stored before are not copied.
    pub fn keep_reading_rows(&mut self, on: bool) {
        self.reading_rows = on;
    }

    /// The schema version of the database.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        self.db
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(db_error)
    }

    /// The database, for queries.
    pub fn db(&self) -> &Connection {
        &self.db
    }

    fn insert(tx: &Connection, batch: &Batch, r: &NewRecord) -> rusqlite::Result<()> {
        let (d, e, s) = (i(batch.device), i(r.epoch.0), r.seq.0);
        let lane = if r.lane == Lane::Alert {
            "alert"
        } else {
            "routine"
        };
        let span = Span::of(r);
        tx.prepare_cached(
            "INSERT INTO records (device, epoch, seq, lane, severity, decimated, declared, \
             received_ms, payload, anchor_ms, first_ms, last_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        )?
        .execute(params![
            d,
            e,
            s,
            lane,
            format!("{:?}", r.severity),
            r.decimated,
            r.declared,
            i(batch.received_unix_ms),
            r.payload,
            span.anchor_ms,
            span.first_ms,
            span.last_ms
        ])?;
        let received = i(batch.received_unix_ms);
        match &r.contents {
            // Kept as the block in `records`.
            Contents::Readings(_) => {}
            Contents::Report { report, unix_ms } => match report {
                Report::Alert(a) => {
                    tx.prepare_cached(
                        "INSERT INTO alerts VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                    )?
                    .execute(params![
                        d,
                        e,
                        s,
                        a.channel.0,
                        format!("{:?}", a.kind),
                        format!("{:?}", a.severity),
                        i(a.time.as_millis()),
                        unix_ms,
                        a.value.map(number)
                    ])?;
                }
                Report::Heartbeat(h) => {
                    tx.prepare_cached("INSERT INTO heartbeats VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)")?.execute(params![
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
                        ])?;
                }
                Report::ConfigStatus {
                    version,
                    code,
                    detail,
                } => {
                    tx.prepare_cached(
                        "INSERT INTO config_status VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    )?
                    .execute(params![d, e, s, received, version, code, detail])?;
                }
                Report::CommandResult { id, status, value } => {
                    tx.prepare_cached(
                        "INSERT INTO command_results VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    )?
                    .execute(params![d, e, s, received, id, status, value])?;
                }
                Report::KeyStatus { id, status } => {
                    tx.prepare_cached("INSERT INTO key_status VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?
                        .execute(params![d, e, s, received, id, format!("{status:?}")])?;
                }
                Report::Channel {
                    channel,
                    unit,
                    kind,
                } => {
                    let (kind, decimals) =
                        ChannelRow::of_report(*channel, *unit, *kind).kind_columns();
                    tx.prepare_cached(
                        "INSERT INTO channels VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                         ON CONFLICT (device, channel) DO UPDATE SET unit = excluded.unit, \
                         kind = excluded.kind, decimals = excluded.decimals, \
                         received_ms = excluded.received_ms",
                    )?
                    .execute(params![
                        d,
                        channel.0,
                        unit.code(),
                        kind,
                        decimals,
                        received
                    ])?;
                }
                Report::Crash {
                    crash,
                    reset_reason,
                } => {
                    tx.prepare_cached(
                        "INSERT INTO crashes VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                    )?
                    .execute(params![
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
                    ])?;
                }
            },
            // Kept raw, in `records`.
            Contents::Unknown => {}
        }
        Ok(())
    }

    fn apply(tx: &Connection, device: u64, change: &OutboxChange) -> rusqlite::Result<()> {
        match *change {
            OutboxChange::ConfigApplied { version } => {
                tx.prepare_cached(
                    "UPDATE outbox_config SET state = 'applied' WHERE device = ?1 AND version = ?2",
                )?
                .execute(params![i(device), version])?;
            }
            OutboxChange::ConfigLost { version } => {
                tx.prepare_cached(
                    "UPDATE outbox_config SET state = 'pending' WHERE device = ?1 AND version = ?2",
                )?
                .execute(params![i(device), version])?;
            }
            OutboxChange::ConfigRefused {
                version,
                code,
                detail,
            } => {
                tx.prepare_cached(
                    "UPDATE outbox_config SET state = 'refused', code = ?3, detail = ?4 \
                     WHERE device = ?1 AND version = ?2",
                )?
                .execute(params![i(device), version, code, detail])?;
            }
            OutboxChange::CommandDone { id, outcome } => {
                tx.prepare_cached("UPDATE outbox_commands SET status = ?3, result = ?4 WHERE device = ?1 AND id = ?2")?.execute(params![i(device), id, outcome.status, outcome.value])?;
            }
            OutboxChange::KeyInUse { id } => {
                tx.prepare_cached(
                    "UPDATE outbox_key SET state = 'in use' WHERE device = ?1 AND id = ?2",
                )?
                .execute(params![i(device), id])?;
            }
            OutboxChange::KeyRefused { id, status } => {
                tx.prepare_cached("UPDATE outbox_key SET state = 'refused', status = ?3 WHERE device = ?1 AND id = ?2")?.execute(params![i(device), id, status as u8])?;
            }
        }
        Ok(())
    }
}

impl SqliteStore {
    fn epoch_state_db(
        &mut self,
        device: u64,
        epoch: Epoch,
    ) -> rusqlite::Result<Option<EpochState>> {
        self.db
            .prepare_cached(
                "SELECT highest, seen, anchor_ms FROM epochs WHERE device = ?1 AND epoch = ?2",
            )?
            .query_row(params![i(device), i(epoch.0)], |r| {
                Ok(EpochState {
                    highest: r.get(0)?,
                    seen: r.get::<_, i64>(1)? as u64,
                    anchor_unix_ms: r.get(2)?,
                })
            })
            .optional()
    }

    fn stored_payload_db(&mut self, key: RecordKey) -> rusqlite::Result<Option<Vec<u8>>> {
        self.db
            .prepare_cached(
                "SELECT payload FROM records WHERE device = ?1 AND epoch = ?2 AND seq = ?3",
            )?
            .query_row(params![i(key.device), i(key.epoch.0), key.seq.0], |r| {
                r.get(0)
            })
            .optional()
    }

    fn outbox_db(&mut self, device: u64) -> rusqlite::Result<Outbox> {
        let config = self
            .db
            .prepare_cached(
                "SELECT version, cbor, state, code, detail FROM outbox_config WHERE device = ?1",
            )?
            .query_row([i(device)], |r| {
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
            })
            .optional()?;
        let mut stmt = self.db.prepare_cached(
            "SELECT id, code, output, value, status, result FROM outbox_commands \
             WHERE device = ?1 AND expired_ms IS NULL ORDER BY rowid",
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
            .prepare_cached(
                "SELECT id, key, state, status, previous_id, previous_key FROM outbox_key \
                 WHERE device = ?1",
            )?
            .query_row([i(device)], |r| {
                let state = match (r.get::<_, String>(2)?.as_str(), r.get::<_, Option<u8>>(3)?) {
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
            })
            .optional()?;
        let key = match key {
            None => None,
            Some((id, key, state, previous)) => Some(KeyRotation {
                id,
                key: key_column(&key)?,
                state,
                previous: match previous {
                    Some((id, key)) => Some((id, key_column(&key)?)),
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

    fn commit_db(&mut self, batch: &Batch) -> rusqlite::Result<Committed> {
        let rows = self.reading_rows;
        let tx = self.db.transaction()?;
        Self::write(&tx, batch, rows)?;
        tx.commit()?;
        Ok(batch.committed())
    }

    /// Writes what `batch` changes, in the transaction open on `tx`.
    fn write(tx: &Connection, batch: &Batch, reading_rows: bool) -> rusqlite::Result<()> {
        if reading_rows {
            let mut insert =
                tx.prepare_cached("INSERT INTO reading_rows VALUES (?1, ?2, ?3, ?4, ?5)")?;
            for r in &batch.records {
                let Contents::Readings(readings) = &r.contents else {
                    continue;
                };
                for t in readings {
                    if let Some(unix_ms) = t.unix_ms {
                        insert.execute(params![
                            i(batch.device),
                            t.reading.channel.0,
                            unix_ms,
                            number(t.reading.value),
                            t.reading.quality.bits()
                        ])?;
                    }
                }
            }
        }
        for r in &batch.records {
            Self::insert(tx, batch, r)?;
        }
        for c in &batch.conflicts {
            tx.prepare_cached("INSERT INTO conflicts VALUES (?1, ?2, ?3, ?4, ?5)")?
                .execute(params![
                    i(batch.device),
                    i(c.epoch.0),
                    c.seq.0,
                    i(batch.received_unix_ms),
                    c.payload
                ])?;
        }
        // The epoch's row keeps when the device was last heard.
        tx.prepare_cached(
            "INSERT OR REPLACE INTO epochs (device, epoch, highest, seen, anchor_ms, received_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            i(batch.device),
            i(batch.epoch.0),
            batch.state.highest,
            batch.state.seen as i64,
            batch.state.anchor_unix_ms,
            i(batch.received_unix_ms)
        ])?;
        for change in &batch.outbox {
            Self::apply(tx, batch.device, change)?;
        }
        Ok(())
    }

    /// [`Self::write`] of `batch` into the open group. No savepoint: a
    /// batch that fails aborts its whole group.
    fn stage_db(&mut self, batch: &Batch) -> rusqlite::Result<()> {
        Self::write(&self.db, batch, self.reading_rows)
    }

    fn set_config_db(&mut self, device: u64, version: u32, cbor: &[u8]) -> rusqlite::Result<()> {
        self.db.execute(
            "INSERT OR REPLACE INTO outbox_config VALUES (?1, ?2, ?3, 'pending', 0, 0)",
            params![i(device), version, cbor],
        )?;
        Ok(())
    }

    fn set_key_db(&mut self, device: u64, id: u8, key: &Key) -> rusqlite::Result<()> {
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

    fn queue_command_db(
        &mut self,
        device: u64,
        id: u32,
        command: Command,
        (queued_ms, expires_ms): (Option<i64>, Option<i64>),
    ) -> rusqlite::Result<()> {
        let (code, output, value) = command_columns(command);
        self.db.execute(
            "INSERT OR IGNORE INTO outbox_commands \
             (device, id, code, output, value, queued_ms, expires_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![i(device), id, code, output, value, queued_ms, expires_ms],
        )?;
        Ok(())
    }
}

impl Store for SqliteStore {
    type Error = StoreError;

    fn epoch_state(&mut self, device: u64, epoch: Epoch) -> Result<Option<EpochState>, StoreError> {
        self.epoch_state_db(device, epoch).map_err(db_error)
    }

    fn stored_payload(&mut self, key: RecordKey) -> Result<Option<Vec<u8>>, StoreError> {
        self.stored_payload_db(key).map_err(db_error)
    }

    fn outbox(&mut self, device: u64) -> Result<Outbox, StoreError> {
        self.outbox_db(device).map_err(db_error)
    }

    fn commit(&mut self, batch: &Batch) -> Result<Committed, StoreError> {
        self.commit_db(batch).map_err(db_error)
    }

    fn begin_group(&mut self) -> Result<(), StoreError> {
        // The write lock now, not at the first write: a busy database
        // fails the group before anything is staged.
        self.db.execute_batch("BEGIN IMMEDIATE").map_err(db_error)
    }

    fn stage(&mut self, batch: &Batch) -> Result<(), StoreError> {
        self.stage_db(batch).map_err(db_error)
    }

    fn commit_group(&mut self) -> Result<(), StoreError> {
        self.db.execute_batch("COMMIT").map_err(|e| {
            self.abort_group();
            db_error(e)
        })
    }

    fn abort_group(&mut self) {
        if !self.db.is_autocommit() {
            let _ = self.db.execute_batch("ROLLBACK");
        }
    }

    fn set_config(&mut self, device: u64, version: u32, cbor: &[u8]) -> Result<(), StoreError> {
        self.set_config_db(device, version, cbor).map_err(db_error)
    }

    fn queue_command(&mut self, device: u64, id: u32, command: Command) -> Result<(), StoreError> {
        self.queue_command_db(device, id, command, (None, None))
            .map_err(db_error)
    }

    fn set_key(&mut self, device: u64, id: u8, key: &Key) -> Result<(), StoreError> {
        self.set_key_db(device, id, key).map_err(db_error)
    }
}

impl SqliteStore {
    fn reading_rows_of(&mut self, q: &ReadingQuery) -> rusqlite::Result<Vec<StoredReading>> {
        let (low, high) = q.channel.map_or((0, u16::MAX), |c| (c, c));
        let mut stmt = self.db.prepare_cached(
            "SELECT channel, unix_ms, value, quality FROM reading_rows \
             WHERE device = ?1 AND channel BETWEEN ?2 AND ?3 AND unix_ms >= ?4 AND unix_ms < ?5 \
             ORDER BY unix_ms",
        )?;
        let rows = stmt.query_map(params![i(q.device), low, high, q.from_ms, q.to_ms], |r| {
            Ok(StoredReading {
                channel: r.get(0)?,
                unix_ms: r.get(1)?,
                value: r.get(2)?,
                quality: r.get(3)?,
            })
        })?;
        rows.collect()
    }
}

fn device_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Device> {
    Ok(Device {
        id: r.get::<_, i64>(0)? as u64,
        name: r.get(1)?,
        created_ms: r.get(2)?,
        revoked_ms: r.get(3)?,
        last_seen_ms: r.get(4)?,
        group: r.get(5)?,
        offline_ms: r.get(6)?,
    })
}

/// A token of its row; a role this build does not know is a damaged row.
fn token_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<Token, StoreError>> {
    let role: String = r.get(2)?;
    Ok(match Role::parse(&role) {
        Some(role) => Ok(Token {
            id: r.get(0)?,
            name: r.get(1)?,
            role,
            group: r.get(3)?,
            created_ms: r.get(4)?,
            revoked_ms: r.get(5)?,
        }),
        None => Err(StoreError::Failed(format!("a token of role {role:?}"))),
    })
}

/// A device's columns; it was last heard when its latest epoch was.
const DEVICE_COLUMNS: &str = "d.device, d.name, d.created_ms, d.revoked_ms, \
    COALESCE((SELECT MAX(e.received_ms) FROM epochs e WHERE e.device = d.device), d.last_seen_ms), \
    d.group_id, d.offline_ms";

impl CloudStore for SqliteStore {
    fn add_device(&mut self, device: &Device, key: &DeviceKey) -> Result<(), StoreError> {
        let tx = self.db.transaction().map_err(db_error)?;
        tx.execute(
            "INSERT INTO devices (device, name, created_ms, group_id) VALUES (?1, ?2, ?3, ?4)",
            params![i(device.id), device.name, device.created_ms, device.group],
        )
        .map_err(|e| match db_error(e) {
            StoreError::Taken(_) => StoreError::Taken(format!(
                "a device of id {} or name {:?} exists",
                device.id, device.name
            )),
            other => other,
        })?;
        tx.execute(
            "INSERT INTO device_keys VALUES (?1, ?2, ?3)",
            params![i(key.device), key.id, &key.key.as_bytes()[..]],
        )
        .map_err(db_error)?;
        tx.commit().map_err(db_error)
    }

    fn add_key(&mut self, key: &DeviceKey) -> Result<(), StoreError> {
        self.db
            .execute(
                "INSERT OR REPLACE INTO device_keys VALUES (?1, ?2, ?3)",
                params![i(key.device), key.id, &key.key.as_bytes()[..]],
            )
            .map(drop)
            .map_err(|e| match db_error(e) {
                StoreError::Taken(_) => StoreError::Taken(format!("no device {}", key.device)),
                other => other,
            })
    }

    fn revoke(&mut self, device: u64, now_ms: i64) -> Result<bool, StoreError> {
        self.db
            .execute(
                "UPDATE devices SET revoked_ms = ?2 WHERE device = ?1 AND revoked_ms IS NULL",
                params![i(device), now_ms],
            )
            .map_err(db_error)?;
        Ok(self.device(device)?.is_some())
    }

    fn devices(&mut self) -> Result<Vec<Device>, StoreError> {
        let mut stmt = self
            .db
            .prepare_cached(&format!(
                "SELECT {DEVICE_COLUMNS} FROM devices d ORDER BY d.device"
            ))
            .map_err(db_error)?;
        let rows = stmt.query_map([], device_row).map_err(db_error)?;
        rows.collect::<rusqlite::Result<_>>().map_err(db_error)
    }

    fn device(&mut self, id: u64) -> Result<Option<Device>, StoreError> {
        self.db
            .query_row(
                &format!("SELECT {DEVICE_COLUMNS} FROM devices d WHERE d.device = ?1"),
                [i(id)],
                device_row,
            )
            .optional()
            .map_err(db_error)
    }

    fn keys(&mut self) -> Result<Vec<DeviceKey>, StoreError> {
        let mut stmt = self
            .db
            .prepare_cached(
                "SELECT k.device, k.id, k.key FROM device_keys k JOIN devices d USING (device) \
                 WHERE d.revoked_ms IS NULL ORDER BY k.device, k.id",
            )
            .map_err(db_error)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, u8>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                ))
            })
            .map_err(db_error)?;
        let mut keys = Vec::new();
        for row in rows {
            let (device, id, key) = row.map_err(db_error)?;
            keys.push(DeviceKey {
                device: device as u64,
                id,
                key: key_of(&key)?,
            });
        }
        Ok(keys)
    }

    fn readings(&mut self, query: &ReadingQuery) -> Result<Vec<StoredReading>, StoreError> {
        if self.reading_rows {
            return self.reading_rows_of(query).map_err(db_error);
        }
        let mut stmt = self
            .db
            .prepare_cached(
                "SELECT payload, declared, anchor_ms FROM records \
                 WHERE device = ?1 AND lane = 'routine' AND last_ms >= ?2 AND first_ms < ?3 \
                 AND anchor_ms IS NOT NULL",
            )
            .map_err(db_error)?;
        let mut rows = stmt
            .query(params![i(query.device), query.from_ms, query.to_ms])
            .map_err(db_error)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(db_error)? {
            let payload = row
                .get_ref(0)
                .map_err(db_error)?
                .as_blob()
                .map_err(|e| StoreError::Failed(e.to_string()))?;
            let declared: i64 = row.get(1).map_err(db_error)?;
            let anchor: i64 = row.get(2).map_err(db_error)?;
            decode_into(
                payload,
                usize::try_from(declared).unwrap_or(0),
                anchor,
                query,
                &mut out,
            );
        }
        out.sort_by_key(|r| r.unix_ms);
        Ok(out)
    }

    fn alerts(&mut self, device: u64, limit: u32) -> Result<Vec<AlertRow>, StoreError> {
        let mut stmt = self
            .db
            .prepare_cached(
                "SELECT channel, kind, severity, unix_ms, value FROM alerts WHERE device = ?1 \
                 ORDER BY rowid DESC LIMIT ?2",
            )
            .map_err(db_error)?;
        let rows = stmt
            .query_map(params![i(device), limit], |r| {
                Ok(AlertRow {
                    channel: r.get(0)?,
                    kind: r.get(1)?,
                    severity: r.get(2)?,
                    unix_ms: r.get(3)?,
                    value: r.get(4)?,
                })
            })
            .map_err(db_error)?;
        rows.collect::<rusqlite::Result<_>>().map_err(db_error)
    }

    fn set_outputs(&mut self, device: u64, outputs: &[OutputRow]) -> Result<(), StoreError> {
        let list = serde_json::to_string(outputs).map_err(|e| StoreError::Failed(e.to_string()))?;
        self.db
            .execute(
                "INSERT INTO outputs VALUES (?1, ?2) ON CONFLICT (device) DO UPDATE SET list = ?2",
                params![i(device), list],
            )
            .map(drop)
            .map_err(db_error)
    }

    fn outputs(&mut self, device: u64) -> Result<Vec<OutputRow>, StoreError> {
        let list: Option<String> = self
            .db
            .query_row(
                "SELECT list FROM outputs WHERE device = ?1",
                params![i(device)],
                |r| r.get(0),
            )
            .optional()
            .map_err(db_error)?;
        outputs_of(list)
    }

    fn channels(&mut self, device: u64) -> Result<Vec<ChannelRow>, StoreError> {
        let mut stmt = self
            .db
            .prepare_cached(
                "SELECT channel, unit, kind, decimals FROM channels WHERE device = ?1 \
                 ORDER BY channel",
            )
            .map_err(db_error)?;
        let rows = stmt
            .query_map(params![i(device)], |r| {
                Ok((
                    r.get::<_, u16>(0)?,
                    r.get::<_, u8>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, u8>(3)?,
                ))
            })
            .map_err(db_error)?;
        let mut out = Vec::new();
        for row in rows {
            let (channel, unit, kind, decimals) = row.map_err(db_error)?;
            // A unit of a newer build is left out, not made up.
            out.extend(ChannelRow::of_columns(channel, unit, &kind, decimals));
        }
        Ok(out)
    }

    fn health(&mut self, device: u64) -> Result<Option<HealthRow>, StoreError> {
        self.db
            .prepare_cached(
                "SELECT unix_ms, uptime_s, sampled, sent_readings, bytes_on_air, retries, evicted, decimated, sensor_faults, queue_depth, reset_reason, wakeups FROM heartbeats WHERE device = ?1 \
                 ORDER BY unix_ms IS NULL, unix_ms DESC, rowid DESC LIMIT 1",
            )
            .and_then(|mut stmt| {
                stmt.query_row(params![i(device)], |r| {
                    Ok(HealthRow {
                        unix_ms: r.get(0)?,
                        heartbeat: Heartbeat {
                            uptime_s: r.get(1)?,
                            sampled: r.get(2)?,
                            sent_readings: r.get(3)?,
                            bytes_on_air: r.get(4)?,
                            retries: r.get(5)?,
                            evicted: r.get(6)?,
                            decimated: r.get(7)?,
                            sensor_faults: r.get(8)?,
                            queue_depth: r.get(9)?,
                            reset_reason: reset_reason_of(r.get(10)?),
                            wakeups: r.get(11)?,
                        },
                    })
                })
                .optional()
            })
            .map_err(db_error)
    }

    fn reported_config(&mut self, device: u64) -> Result<Option<ReportedConfig>, StoreError> {
        self.db
            .prepare_cached(
                "SELECT version, code, detail, received_ms FROM config_status WHERE device = ?1 \
                 ORDER BY received_ms DESC, seq DESC LIMIT 1",
            )
            .and_then(|mut stmt| {
                stmt.query_row(params![i(device)], |r| {
                    Ok(ReportedConfig {
                        version: r.get(0)?,
                        code: r.get(1)?,
                        detail: r.get(2)?,
                        received_ms: r.get(3)?,
                    })
                })
                .optional()
            })
            .map_err(db_error)
    }

    fn add_group(&mut self, name: &str, parent: Option<i64>) -> Result<Group, StoreError> {
        self.db
            .execute(
                "INSERT INTO groups (name, parent) VALUES (?1, ?2)",
                params![name, parent],
            )
            .map_err(|e| match db_error(e) {
                StoreError::Taken(_) => StoreError::Taken(format!(
                    "a group named {name:?} exists, or no group {parent:?}"
                )),
                other => other,
            })?;
        Ok(Group {
            id: self.db.last_insert_rowid(),
            name: name.to_string(),
            parent,
        })
    }

    fn groups(&mut self) -> Result<Vec<Group>, StoreError> {
        let mut stmt = self
            .db
            .prepare_cached("SELECT id, name, parent FROM groups ORDER BY id")
            .map_err(db_error)?;
        let rows = stmt
            .query_map([], |r| {
                Ok(Group {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    parent: r.get(2)?,
                })
            })
            .map_err(db_error)?;
        rows.collect::<rusqlite::Result<_>>().map_err(db_error)
    }

    fn set_device_group(&mut self, device: u64, group: Option<i64>) -> Result<(), StoreError> {
        self.db
            .execute(
                "UPDATE devices SET group_id = ?2 WHERE device = ?1",
                params![i(device), group],
            )
            .map(drop)
            .map_err(|e| match db_error(e) {
                StoreError::Taken(_) => StoreError::Taken(format!("no group {group:?}")),
                other => other,
            })
    }

    fn add_token(
        &mut self,
        name: &str,
        digest: &str,
        role: Role,
        group: Option<i64>,
        now_ms: i64,
    ) -> Result<Token, StoreError> {
        self.db
            .execute(
                "INSERT INTO tokens (name, digest, role, group_id, created_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![name, digest, role.as_str(), group, now_ms],
            )
            .map_err(|e| match db_error(e) {
                StoreError::Taken(_) => StoreError::Taken(format!("no group {group:?}")),
                other => other,
            })?;
        Ok(Token {
            id: self.db.last_insert_rowid(),
            name: name.to_string(),
            role,
            group,
            created_ms: now_ms,
            revoked_ms: None,
        })
    }

    fn token(&mut self, digest: &str) -> Result<Option<Token>, StoreError> {
        let row = self
            .db
            .prepare_cached(
                "SELECT id, name, role, group_id, created_ms, revoked_ms FROM tokens \
                 WHERE digest = ?1 AND revoked_ms IS NULL",
            )
            .and_then(|mut s| s.query_row([digest], token_row).optional())
            .map_err(db_error)?;
        row.transpose()
    }

    fn tokens(&mut self) -> Result<Vec<Token>, StoreError> {
        let mut stmt = self
            .db
            .prepare_cached(
                "SELECT id, name, role, group_id, created_ms, revoked_ms FROM tokens ORDER BY id",
            )
            .map_err(db_error)?;
        let rows = stmt.query_map([], token_row).map_err(db_error)?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row.map_err(db_error)??);
        }
        Ok(out)
    }

    fn revoke_token(&mut self, id: i64, now_ms: i64) -> Result<bool, StoreError> {
        let known: bool = self
            .db
            .query_row("SELECT COUNT(*) > 0 FROM tokens WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .map_err(db_error)?;
        self.db
            .execute(
                "UPDATE tokens SET revoked_ms = ?2 WHERE id = ?1 AND revoked_ms IS NULL",
                params![id, now_ms],
            )
            .map_err(db_error)?;
        Ok(known)
    }

    fn reading_count(&mut self, device: u64) -> Result<u64, StoreError> {
        self.db
            .query_row(
                "SELECT COALESCE(SUM(declared), 0) FROM records WHERE device = ?1 AND lane = 'routine'",
                [i(device)],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(db_error)
    }

    fn set_group_silence(&mut self, group: i64, intervals: Option<u32>) -> Result<(), StoreError> {
        match intervals {
            Some(n) => self.db.execute(
                "INSERT INTO group_silence VALUES (?1, ?2) \
                 ON CONFLICT (group_id) DO UPDATE SET intervals = ?2",
                params![group, n],
            ),
            None => self
                .db
                .execute("DELETE FROM group_silence WHERE group_id = ?1", [group]),
        }
        .map(drop)
        .map_err(|e| match db_error(e) {
            StoreError::Taken(_) => StoreError::Taken(format!("no group {group}")),
            other => other,
        })
    }

    fn group_silences(&mut self) -> Result<Vec<(i64, u32)>, StoreError> {
        let mut stmt = self
            .db
            .prepare_cached("SELECT group_id, intervals FROM group_silence ORDER BY group_id")
            .map_err(db_error)?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(db_error)?;
        rows.collect::<rusqlite::Result<_>>().map_err(db_error)
    }

    fn add_event(
        &mut self,
        device: u64,
        kind: &str,
        unix_ms: i64,
        detail: &str,
    ) -> Result<(), StoreError> {
        self.db
            .execute(
                "INSERT INTO events (device, kind, unix_ms, detail) VALUES (?1, ?2, ?3, ?4)",
                params![i(device), kind, unix_ms, detail],
            )
            .map(drop)
            .map_err(db_error)
    }

    fn add_rule(&mut self, rule: &Rule) -> Result<i64, StoreError> {
        let (op, threshold) = rule.condition_columns();
        let (code, output, value) = rule.command_columns();
        self.db
            .execute(
                "INSERT INTO rules \
                 (name, device, channel, op, threshold, for_ms, target, code, output, value) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    rule.name,
                    i(rule.device),
                    rule.channel,
                    op,
                    threshold,
                    i(rule.for_ms),
                    i(rule.target),
                    code,
                    output,
                    value
                ],
            )
            .map_err(|e| match db_error(e) {
                StoreError::Taken(_) => {
                    StoreError::Taken(format!("a rule named {:?} exists", rule.name))
                }
                other => other,
            })?;
        Ok(self.db.last_insert_rowid())
    }

    fn rules(&mut self) -> Result<Vec<Rule>, StoreError> {
        let mut stmt = self
            .db
            .prepare_cached(
                "SELECT id, name, device, channel, op, threshold, for_ms, target, code, output, \
                 value FROM rules ORDER BY id",
            )
            .map_err(db_error)?;
        let rows = stmt
            .query_map([], |r| {
                let op: String = r.get(4)?;
                Ok(Rule::of_columns(
                    r.get(0)?,
                    r.get(1)?,
                    (r.get::<_, i64>(2)? as u64, r.get(3)?),
                    (&op, r.get(5)?),
                    r.get::<_, i64>(6)? as u64,
                    r.get::<_, i64>(7)? as u64,
                    (r.get(8)?, r.get(9)?, r.get(10)?),
                ))
            })
            .map_err(db_error)?;
        let mut out = Vec::new();
        for row in rows {
            match row.map_err(db_error)? {
                Some(rule) => out.push(rule),
                None => return Err(StoreError::Failed("a rule this build cannot read".into())),
            }
        }
        Ok(out)
    }

    fn remove_rule(&mut self, id: i64) -> Result<bool, StoreError> {
        self.db
            .execute("DELETE FROM rules WHERE id = ?1", [id])
            .map(|n| n > 0)
            .map_err(db_error)
    }

    fn rule_run(
        &mut self,
        rule: i64,
        start_ms: i64,
        end_ms: i64,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let tx = self.db.transaction().map_err(db_error)?;
        let overlapping: Option<i64> = tx
            .query_row(
                "SELECT id FROM rule_firings WHERE rule = ?1 AND start_ms <= ?3 AND end_ms >= ?2 \
                 LIMIT 1",
                params![rule, start_ms, end_ms],
                |r| r.get(0),
            )
            .optional()
            .map_err(db_error)?;
        match overlapping {
            Some(id) => tx.execute(
                "UPDATE rule_firings SET start_ms = MIN(start_ms, ?2), end_ms = MAX(end_ms, ?3) \
                 WHERE id = ?1",
                params![id, start_ms, end_ms],
            ),
            None => tx.execute(
                "INSERT INTO rule_firings (rule, start_ms, end_ms, fired_ms) \
                 VALUES (?1, ?2, ?3, ?4)",
                params![rule, start_ms, end_ms, now_ms],
            ),
        }
        .map_err(db_error)?;
        tx.commit().map_err(db_error)?;
        Ok(overlapping.is_none())
    }

    fn add_notification(&mut self, unix_ms: i64, body: &str) -> Result<i64, StoreError> {
        self.db
            .prepare_cached("INSERT INTO notifications (unix_ms, body) VALUES (?1, ?2)")
            .and_then(|mut stmt| stmt.insert(params![unix_ms, body]))
            .map_err(db_error)
    }

    fn notifications_after(
        &mut self,
        after: i64,
        limit: u32,
    ) -> Result<Vec<NotificationRow>, StoreError> {
        let mut stmt = self
            .db
            .prepare_cached(
                "SELECT id, unix_ms, body FROM notifications WHERE id > ?1 ORDER BY id LIMIT ?2",
            )
            .map_err(db_error)?;
        let rows = stmt
            .query_map(params![after, limit], |r| {
                Ok(NotificationRow {
                    id: r.get(0)?,
                    unix_ms: r.get(1)?,
                    body: r.get(2)?,
                })
            })
            .map_err(db_error)?;
        rows.collect::<rusqlite::Result<_>>().map_err(db_error)
    }

    fn sink_cursor(&mut self, sink: &str) -> Result<i64, StoreError> {
        self.db
            .execute(
                "INSERT OR IGNORE INTO sink_cursors \
                 SELECT ?1, COALESCE(MAX(id), 0) FROM notifications",
                [sink],
            )
            .map_err(db_error)?;
        self.db
            .query_row(
                "SELECT delivered FROM sink_cursors WHERE sink = ?1",
                [sink],
                |r| r.get(0),
            )
            .map_err(db_error)
    }

    fn log_delivery(&mut self, d: &DeliveryRow) -> Result<(), StoreError> {
        let tx = self.db.transaction().map_err(db_error)?;
        tx.execute(
            "INSERT INTO deliveries \
             (sink, notification, attempt, unix_ms, status, error, delivered) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                d.sink,
                d.notification,
                d.attempt,
                d.unix_ms,
                d.status,
                d.error,
                d.delivered
            ],
        )
        .map_err(db_error)?;
        if d.delivered {
            tx.execute(
                "UPDATE sink_cursors SET delivered = MAX(delivered, ?2) WHERE sink = ?1",
                params![d.sink, d.notification],
            )
            .map_err(db_error)?;
        }
        tx.commit().map_err(db_error)
    }

    fn deliveries(&mut self, limit: u32) -> Result<Vec<DeliveryRow>, StoreError> {
        let mut stmt = self
            .db
            .prepare_cached(
                "SELECT sink, notification, attempt, unix_ms, status, error, delivered \
                 FROM deliveries ORDER BY id DESC LIMIT ?1",
            )
            .map_err(db_error)?;
        let rows = stmt
            .query_map([limit], |r| {
                Ok(DeliveryRow {
                    sink: r.get(0)?,
                    notification: r.get(1)?,
                    attempt: r.get(2)?,
                    unix_ms: r.get(3)?,
                    status: r.get(4)?,
                    error: r.get(5)?,
                    delivered: r.get(6)?,
                })
            })
            .map_err(db_error)?;
        rows.collect::<rusqlite::Result<_>>().map_err(db_error)
    }

    fn commands(&mut self, device: u64) -> Result<Vec<CommandRow>, StoreError> {
        let mut stmt = self
            .db
            .prepare_cached(
                "SELECT id, code, output, value, status, result, queued_ms, sent_ms, expires_ms, \
                 expired_ms FROM outbox_commands WHERE device = ?1 ORDER BY rowid",
            )
            .map_err(db_error)?;
        let rows = stmt
            .query_map([i(device)], |r| {
                let status: Option<u8> = r.get(4)?;
                let result: Option<u32> = r.get(5)?;
                let row = CommandRow {
                    id: r.get(0)?,
                    command: Command::Ping,
                    result: status.zip(result),
                    queued_ms: r.get(6)?,
                    sent_ms: r.get(7)?,
                    expires_ms: r.get(8)?,
                    expired_ms: r.get(9)?,
                };
                // A command this build does not know is left out.
                Ok(command_of(r.get(1)?, r.get(2)?, r.get(3)?)
                    .map(|command| CommandRow { command, ..row }))
            })
            .map_err(db_error)?;
        let mut out = Vec::new();
        for row in rows {
            out.extend(row.map_err(db_error)?);
        }
        Ok(out)
    }

    fn queue_command_until(
        &mut self,
        device: u64,
        id: u32,
        command: Command,
        queued_ms: i64,
        expires_ms: Option<i64>,
    ) -> Result<(), StoreError> {
        self.queue_command_db(device, id, command, (Some(queued_ms), expires_ms))
            .map_err(db_error)
    }

    fn commands_sent(&mut self, device: u64, ids: &[u32], now_ms: i64) -> Result<(), StoreError> {
        let tx = self.db.transaction().map_err(db_error)?;
        for &id in ids {
            tx.prepare_cached(
                "UPDATE outbox_commands SET sent_ms = ?3 \
                 WHERE device = ?1 AND id = ?2 AND sent_ms IS NULL",
            )
            .and_then(|mut stmt| stmt.execute(params![i(device), id, now_ms]))
            .map_err(db_error)?;
        }
        tx.commit().map_err(db_error)
    }

    fn expire_commands(&mut self, now_ms: i64) -> Result<u64, StoreError> {
        self.db
            .execute(
                "UPDATE outbox_commands SET expired_ms = ?1 WHERE result IS NULL \
                 AND expired_ms IS NULL AND expires_ms <= ?1",
                [now_ms],
            )
            .map(|n| n as u64)
            .map_err(db_error)
    }

    fn mark_offline(&mut self, device: u64, now_ms: i64, detail: &str) -> Result<bool, StoreError> {
        self.mark(device, now_ms, "offline", detail)
    }

    fn mark_recovered(
        &mut self,
        device: u64,
        now_ms: i64,
        detail: &str,
    ) -> Result<bool, StoreError> {
        self.mark(device, now_ms, "recovered", detail)
    }

    fn events(&mut self, device: u64, limit: u32) -> Result<Vec<EventRow>, StoreError> {
        let mut stmt = self
            .db
            .prepare_cached(
                "SELECT kind, unix_ms, detail FROM events WHERE device = ?1 \
                 ORDER BY id DESC LIMIT ?2",
            )
            .map_err(db_error)?;
        let rows = stmt
            .query_map(params![i(device), limit], |r| {
                Ok(EventRow {
                    kind: r.get(0)?,
                    unix_ms: r.get(1)?,
                    detail: r.get(2)?,
                })
            })
            .map_err(db_error)?;
        rows.collect::<rusqlite::Result<_>>().map_err(db_error)
    }
}

impl SqliteStore {
    /// Sets (`offline`) or clears (`recovered`) the device's offline mark
    /// and keeps the event, if the mark changes.
    fn mark(
        &mut self,
        device: u64,
        now_ms: i64,
        kind: &str,
        detail: &str,
    ) -> Result<bool, StoreError> {
        let tx = self.db.transaction().map_err(db_error)?;
        let changed = if kind == "offline" {
            tx.execute(
                "UPDATE devices SET offline_ms = ?2 WHERE device = ?1 AND offline_ms IS NULL",
                params![i(device), now_ms],
            )
        } else {
            tx.execute(
                "UPDATE devices SET offline_ms = NULL WHERE device = ?1 AND offline_ms IS NOT NULL",
                params![i(device)],
            )
        }
        .map_err(db_error)?;
        if changed == 0 {
            return Ok(false);
        }
        tx.execute(
            "INSERT INTO events (device, kind, unix_ms, detail) VALUES (?1, ?2, ?3, ?4)",
            params![i(device), kind, now_ms, detail],
        )
        .map_err(db_error)?;
        tx.commit().map_err(db_error)?;
        Ok(true)
    }
}

/// Brings the database to [`SCHEMA_VERSION`], each step in one
/// transaction. A database newer than this build is refused.
fn migrate(db: &mut Connection) -> Result<(), StoreError> {
    let version: i64 = db
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(db_error)?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::Failed(format!(
            "the database has schema version {version}; this build knows up to {SCHEMA_VERSION}"
        )));
    }
    for (to, sql) in [
        (1, V1),
        (2, V2),
        (3, V3),
        (4, V4),
        (5, V5),
        (6, V6),
        (7, V7),
        (8, V8),
        (9, V9),
        (10, V10),
        (11, V11),
    ] {
        if version >= to {
            continue;
        }
        let tx = db.transaction().map_err(db_error)?;
        tx.execute_batch(sql).map_err(db_error)?;
        tx.pragma_update(None, "user_version", to)
            .map_err(db_error)?;
        tx.commit().map_err(db_error)?;
    }
    Ok(())
}
