//! The PostgreSQL backend (`--database postgres://…`): the same tables as
//! SQLite's, in PostgreSQL's types. One connection, dialled again when it
//! is lost: while PostgreSQL is away every commit fails (nothing is
//! acknowledged, the devices send again) and the service keeps running.
//!
//! Its schema is versioned in `telemark_schema`; [`PgStore::connect`]
//! creates or upgrades it in one transaction.

use postgres::error::SqlState;
use std::collections::{HashMap, HashSet};

use postgres::types::ToSql;
use postgres::{Client, NoTls, Row, Statement};
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
use crate::sqlite::SCHEMA_VERSION;
use crate::store::{
    command_columns, command_of, decode_into, key_of, number, outputs_of, reset_reason_of,
    AlertRow, ChannelRow, CloudStore, CommandRow, DeliveryRow, Device, DeviceKey, EventRow,
    HealthRow, NotificationRow, OutputRow, ReadingQuery, ReportedConfig, Span, StoreError,
    StoredReading,
};

/// The schema at version 2; [`V3`] to [`V9`] bring it to
/// [`SCHEMA_VERSION`].
const SCHEMA: &str = "
CREATE TABLE records (
    device BIGINT NOT NULL, epoch BIGINT NOT NULL, seq BIGINT NOT NULL, lane TEXT NOT NULL,
    severity TEXT NOT NULL, decimated BOOLEAN NOT NULL, declared INTEGER NOT NULL,
    received_ms BIGINT NOT NULL, payload BYTEA NOT NULL,
    anchor_ms BIGINT, first_ms BIGINT, last_ms BIGINT,
    PRIMARY KEY (device, epoch, seq));
CREATE INDEX records_by_time ON records (device, last_ms);
CREATE TABLE alerts (
    id BIGSERIAL PRIMARY KEY, device BIGINT NOT NULL, epoch BIGINT NOT NULL, seq BIGINT NOT NULL,
    channel INTEGER NOT NULL, kind TEXT NOT NULL, severity TEXT NOT NULL,
    time_ms BIGINT NOT NULL, unix_ms BIGINT, value DOUBLE PRECISION);
CREATE TABLE heartbeats (
    device BIGINT NOT NULL, epoch BIGINT NOT NULL, seq BIGINT NOT NULL, unix_ms BIGINT,
    uptime_s BIGINT NOT NULL, sampled BIGINT NOT NULL, sent_readings BIGINT NOT NULL,
    bytes_on_air BIGINT NOT NULL, retries BIGINT NOT NULL, evicted BIGINT NOT NULL,
    decimated BIGINT NOT NULL, sensor_faults BIGINT NOT NULL, queue_depth BIGINT NOT NULL,
    reset_reason TEXT NOT NULL, wakeups BIGINT NOT NULL);
CREATE TABLE config_status (
    device BIGINT NOT NULL, epoch BIGINT NOT NULL, seq BIGINT NOT NULL,
    received_ms BIGINT NOT NULL, version BIGINT NOT NULL, code INTEGER NOT NULL,
    detail INTEGER NOT NULL);
CREATE TABLE command_results (
    device BIGINT NOT NULL, epoch BIGINT NOT NULL, seq BIGINT NOT NULL,
    received_ms BIGINT NOT NULL, id BIGINT NOT NULL, status INTEGER NOT NULL,
    value BIGINT NOT NULL);
CREATE TABLE crashes (
    device BIGINT NOT NULL, epoch BIGINT NOT NULL, seq BIGINT NOT NULL,
    received_ms BIGINT NOT NULL, kind TEXT NOT NULL, pc BIGINT NOT NULL, lr BIGINT NOT NULL,
    fault_status BIGINT NOT NULL, uptime_ms BIGINT NOT NULL, reset_reason TEXT NOT NULL,
    text TEXT NOT NULL);
CREATE TABLE conflicts (
    device BIGINT NOT NULL, epoch BIGINT NOT NULL, seq BIGINT NOT NULL,
    received_ms BIGINT NOT NULL, payload BYTEA NOT NULL);
CREATE TABLE epochs (
    device BIGINT NOT NULL, epoch BIGINT NOT NULL, highest BIGINT NOT NULL,
    seen BIGINT NOT NULL, anchor_ms BIGINT, PRIMARY KEY (device, epoch));
CREATE TABLE outbox_config (
    device BIGINT PRIMARY KEY, version BIGINT NOT NULL, cbor BYTEA NOT NULL,
    state TEXT NOT NULL, code INTEGER NOT NULL, detail INTEGER NOT NULL);
CREATE TABLE key_status (
    device BIGINT NOT NULL, epoch BIGINT NOT NULL, seq BIGINT NOT NULL,
    received_ms BIGINT NOT NULL, id INTEGER NOT NULL, status TEXT NOT NULL);
CREATE TABLE outbox_key (
    device BIGINT PRIMARY KEY, id INTEGER NOT NULL, key BYTEA NOT NULL, state TEXT NOT NULL,
    status INTEGER, previous_id INTEGER, previous_key BYTEA);
CREATE TABLE outbox_commands (
    device BIGINT NOT NULL, id BIGINT NOT NULL, code INTEGER NOT NULL,
    output INTEGER NOT NULL, value BIGINT NOT NULL, status INTEGER, result BIGINT,
    queued BIGSERIAL, PRIMARY KEY (device, id));
CREATE TABLE devices (
    device BIGINT PRIMARY KEY, name TEXT NOT NULL UNIQUE, created_ms BIGINT NOT NULL,
    revoked_ms BIGINT, last_seen_ms BIGINT);
CREATE TABLE device_keys (
    device BIGINT NOT NULL REFERENCES devices (device), id INTEGER NOT NULL,
    key BYTEA NOT NULL, PRIMARY KEY (device, id));
";

/// From version 2 to 3: the row-per-reading table, for those who ask;
/// each epoch's row keeps when it was last heard.
const V3: &str = "
ALTER TABLE epochs ADD COLUMN received_ms BIGINT;
CREATE TABLE reading_rows (
    device BIGINT NOT NULL, channel INTEGER NOT NULL, unix_ms BIGINT NOT NULL,
    value DOUBLE PRECISION NOT NULL, quality INTEGER NOT NULL);
CREATE INDEX reading_rows_by_time ON reading_rows (device, channel, unix_ms);
";

/// From version 3 to 4: groups of devices, and API tokens.
const V4: &str = "
CREATE TABLE groups (
    id BIGSERIAL PRIMARY KEY, name TEXT NOT NULL UNIQUE, parent BIGINT REFERENCES groups (id));
ALTER TABLE devices ADD COLUMN group_id BIGINT REFERENCES groups (id);
CREATE TABLE tokens (
    id BIGSERIAL PRIMARY KEY, name TEXT NOT NULL, digest TEXT NOT NULL UNIQUE, role TEXT NOT NULL,
    group_id BIGINT REFERENCES groups (id), created_ms BIGINT NOT NULL, revoked_ms BIGINT);
";

/// From version 4 to 5: devices gone silent, and what happened to each
/// device.
const V5: &str = "
ALTER TABLE devices ADD COLUMN offline_ms BIGINT;
CREATE TABLE events (
    id BIGSERIAL PRIMARY KEY, device BIGINT NOT NULL, kind TEXT NOT NULL,
    unix_ms BIGINT NOT NULL, detail TEXT NOT NULL);
CREATE INDEX events_by_device ON events (device, id);
";

/// From version 5 to 6: when each command was queued and first sent, and
/// when it expires or expired unanswered.
const V6: &str = "
ALTER TABLE outbox_commands ADD COLUMN queued_ms BIGINT, ADD COLUMN sent_ms BIGINT,
    ADD COLUMN expires_ms BIGINT, ADD COLUMN expired_ms BIGINT;
";

/// From version 6 to 7: notifications, where each sink stands in them,
/// and every attempt at delivering one.
const V7: &str = "
CREATE TABLE notifications (
    id BIGSERIAL PRIMARY KEY, unix_ms BIGINT NOT NULL, body TEXT NOT NULL);
CREATE TABLE sink_cursors (sink TEXT PRIMARY KEY, delivered BIGINT NOT NULL);
CREATE TABLE deliveries (
    id BIGSERIAL PRIMARY KEY, sink TEXT NOT NULL, notification BIGINT NOT NULL,
    attempt BIGINT NOT NULL, unix_ms BIGINT NOT NULL, status INTEGER, error TEXT,
    delivered BOOLEAN NOT NULL);
";

/// From version 7 to 8: rules, and the runs that fired them.
const V8: &str = "
CREATE TABLE rules (
    id BIGSERIAL PRIMARY KEY, name TEXT NOT NULL UNIQUE, device BIGINT NOT NULL,
    channel INTEGER NOT NULL, op TEXT NOT NULL, threshold DOUBLE PRECISION NOT NULL,
    for_ms BIGINT NOT NULL, target BIGINT NOT NULL, code INTEGER NOT NULL,
    output INTEGER NOT NULL, value BIGINT NOT NULL);
CREATE TABLE rule_firings (
    id BIGSERIAL PRIMARY KEY, rule BIGINT NOT NULL, start_ms BIGINT NOT NULL,
    end_ms BIGINT NOT NULL, fired_ms BIGINT NOT NULL);
CREATE INDEX rule_firings_by_rule ON rule_firings (rule, start_ms);
";

/// From version 10 to 11: the outputs of a device, as the operator names
/// them (a JSON array of `{"output", "name"}`).
const V11: &str = "
CREATE TABLE outputs (device BIGINT PRIMARY KEY, list TEXT NOT NULL);
";

/// From version 9 to 10: what each channel of a device measures, as it
/// reports it.
const V10: &str = "
CREATE TABLE channels (
    device BIGINT NOT NULL, channel INTEGER NOT NULL, unit INTEGER NOT NULL,
    kind TEXT NOT NULL, decimals INTEGER NOT NULL, received_ms BIGINT NOT NULL,
    PRIMARY KEY (device, channel));
";

/// From version 8 to 9: the silent-device rule's intervals a group sets.
const V9: &str = "
CREATE TABLE group_silence (
    group_id BIGINT PRIMARY KEY REFERENCES groups (id), intervals BIGINT NOT NULL);
";

/// PostgreSQL errors, by what the caller can do about them.
fn db_error(e: postgres::Error) -> StoreError {
    let text = e.to_string();
    if e.is_closed() {
        return StoreError::Unavailable(text);
    }
    match e.code() {
        Some(c) if *c == SqlState::UNIQUE_VIOLATION || *c == SqlState::FOREIGN_KEY_VIOLATION => {
            StoreError::Taken(text)
        }
        Some(c) if *c == SqlState::DISK_FULL || *c == SqlState::OUT_OF_MEMORY => {
            StoreError::Full(text)
        }
        Some(c)
            if *c == SqlState::T_R_SERIALIZATION_FAILURE
                || *c == SqlState::T_R_DEADLOCK_DETECTED
                || *c == SqlState::LOCK_NOT_AVAILABLE =>
        {
            StoreError::Busy(text)
        }
        Some(c)
            if *c == SqlState::ADMIN_SHUTDOWN
                || *c == SqlState::CRASH_SHUTDOWN
                || *c == SqlState::CANNOT_CONNECT_NOW
                || *c == SqlState::CONNECTION_FAILURE =>
        {
            StoreError::Unavailable(text)
        }
        Some(_) => StoreError::Failed(text),
        // No SQL state: the connection or the server, not the statement.
        None => StoreError::Unavailable(text),
    }
}

/// The connection with its statements prepared once: each statement then
/// costs one round trip, not two.
struct Session<'a> {
    client: &'a mut Client,
    prepared: &'a mut HashMap<&'static str, Statement>,
}

type Params<'p> = &'p [&'p (dyn ToSql + Sync)];

impl Session<'_> {
    fn statement(&mut self, sql: &'static str) -> Result<Statement, postgres::Error> {
        if let Some(s) = self.prepared.get(sql) {
            return Ok(s.clone());
        }
        let s = self.client.prepare(sql)?;
        self.prepared.insert(sql, s.clone());
        Ok(s)
    }

    fn execute(&mut self, sql: &'static str, params: Params<'_>) -> Result<u64, postgres::Error> {
        let s = self.statement(sql)?;
        self.client.execute(&s, params)
    }

    fn query(
        &mut self,
        sql: &'static str,
        params: Params<'_>,
    ) -> Result<Vec<Row>, postgres::Error> {
        let s = self.statement(sql)?;
        self.client.query(&s, params)
    }

    fn query_opt(
        &mut self,
        sql: &'static str,
        params: Params<'_>,
    ) -> Result<Option<Row>, postgres::Error> {
        let s = self.statement(sql)?;
        self.client.query_opt(&s, params)
    }

    fn query_one(&mut self, sql: &'static str, params: Params<'_>) -> Result<Row, postgres::Error> {
        let s = self.statement(sql)?;
        self.client.query_one(&s, params)
    }

    fn batch_execute(&mut self, sql: &str) -> Result<(), postgres::Error> {
        self.client.batch_execute(sql)
    }

    /// Runs `f` in a transaction: committed if it succeeds, rolled back
    /// if not.
    fn transaction<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, postgres::Error>,
    ) -> Result<T, postgres::Error> {
        self.batch_execute("BEGIN")?;
        match f(self) {
            Ok(v) => {
                self.batch_execute("COMMIT")?;
                Ok(v)
            }
            Err(e) => {
                let _ = self.batch_execute("ROLLBACK");
                Err(e)
            }
        }
    }
}

/// Bounds on a connection that goes silent (a partition, a host that
/// died), unless the URL sets its own: the client drops it within about
/// 10 s, and so does the server, which then ends the session and frees
/// its locks, the lead among them, for the other instances.
const SILENT_S: u64 = 10;

/// Connects to `url`, bounded as [`SILENT_S`] says.
fn dial(url: &str) -> Result<Client, StoreError> {
    use std::time::Duration;
    let mut config: postgres::Config = url
        .parse()
        .map_err(|e| StoreError::Failed(format!("the database URL: {e}")))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(5));
    }
    if config.get_tcp_user_timeout().is_none() {
        config.tcp_user_timeout(Duration::from_secs(SILENT_S));
    }
    config
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(5))
        .keepalives_interval(Duration::from_secs(2))
        .keepalives_retries(3);
    let mut client = config.connect(NoTls).map_err(db_error)?;
    // The server's side: a session silent or idle in a transaction that
    // long is ended; a lock another session holds is waited on no longer.
    client
        .batch_execute(&format!(
            "SET idle_in_transaction_session_timeout = '{SILENT_S}s'; \
             SET tcp_keepalives_idle = 5; SET tcp_keepalives_interval = 2; \
             SET tcp_keepalives_count = 3; SET tcp_user_timeout = {}; \
             SET lock_timeout = '{SILENT_S}s'",
            SILENT_S * 1000
        ))
        .map_err(db_error)?;
    Ok(client)
}

/// u64 ids and epochs are kept bit for bit in BIGINT.
fn i(v: u64) -> i64 {
    v as i64
}

fn lane_name(lane: Lane) -> &'static str {
    if lane == Lane::Alert {
        "alert"
    } else {
        "routine"
    }
}

/// The PostgreSQL backend. See the module docs.
pub struct PgStore {
    url: String,
    client: Option<Client>,
    prepared: HashMap<&'static str, Statement>,
    group_open: bool,
    /// The devices the open group holds ([`Store::claim`]).
    claimed: HashSet<u64>,
    /// What [`Store::claim_all`] read of them for the group, each until
    /// its first use or its device's next batch: the outbox, and the
    /// latest epoch's state (`None`: never heard).
    group_outboxes: HashMap<u64, Outbox>,
    group_epochs: HashMap<u64, Option<(u64, EpochState)>>,
    reading_rows: bool,
    leading: bool,
}

/// The advisory lock whose holder leads the instances that share the
/// database ([`CloudStore::lead`]): "telemark" in ASCII, above every
/// device id (those stay below 2^53), so no device's lock is it.
const LEAD_LOCK: i64 = 0x7465_6c65_6d61_726b;

impl PgStore {
    /// Forgets what the group held and read.
    fn forget_group(&mut self) {
        self.claimed.clear();
        self.group_outboxes.clear();
        self.group_epochs.clear();
    }

    /// Connects to the database at `url` (`postgres://user@host/db`),
    /// creating or upgrading its schema.
    pub fn connect(url: &str) -> Result<PgStore, StoreError> {
        let mut store = PgStore {
            url: url.to_string(),
            client: None,
            prepared: HashMap::new(),
            group_open: false,
            claimed: HashSet::new(),
            group_outboxes: HashMap::new(),
            group_epochs: HashMap::new(),
            reading_rows: false,
            leading: false,
        };
        migrate(store.client()?)?;
        Ok(store)
    }

    /// The connection, dialled again if it was lost.
    fn client(&mut self) -> Result<&mut Client, StoreError> {
        if self.client.as_ref().is_some_and(Client::is_closed) {
            self.client = None;
        }
        if self.client.is_none() {
            // Statements, and session locks, belong to the connection
            // they were made on.
            self.prepared.clear();
            self.leading = false;
        }
        match &mut self.client {
            Some(c) => Ok(c),
            slot @ None => Ok(slot.insert(dial(&self.url)?)),
        }
    }

    /// Runs `f` on the connection; a failure on a lost connection drops
    /// it, so the next call dials again.
    fn with<T>(
        &mut self,
        f: impl FnOnce(&mut Session<'_>) -> Result<T, postgres::Error>,
    ) -> Result<T, StoreError> {
        self.client()?;
        let (Some(client), prepared) = (self.client.as_mut(), &mut self.prepared) else {
            return Err(StoreError::Unavailable("no connection".into()));
        };
        let result = f(&mut Session { client, prepared }).map_err(db_error);
        if matches!(result, Err(StoreError::Unavailable(_))) {
            self.client = None;
        }
        result
    }

    /// Also keeps a row per reading (`reading_rows`), and answers range
    /// queries from it: for SQL tools that want rows. It costs space and
    /// ingest speed (`benches/cloud` measures both forms); turn it on
    /// before the first frame, as blocks stored before are not copied.
    pub fn keep_reading_rows(&mut self, on: bool) {
        self.reading_rows = on;
    }

    /// The schema version of the database.
    pub fn schema_version(&mut self) -> Result<i64, StoreError> {
        self.with(|c| {
            c.query_one("SELECT version FROM telemark_schema", &[])
                .map(|r| r.get(0))
        })
    }
}

fn insert(tx: &mut Session<'_>, batch: &Batch, r: &NewRecord) -> Result<(), postgres::Error> {
    let (d, e, s) = (i(batch.device), i(r.epoch.0), i64::from(r.seq.0));
    let received = i(batch.received_unix_ms);
    let span = Span::of(r);
    tx.execute(
        "INSERT INTO records VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        &[
            &d,
            &e,
            &s,
            &lane_name(r.lane),
            &format!("{:?}", r.severity),
            &r.decimated,
            &i32::from(r.declared),
            &received,
            &r.payload,
            &span.anchor_ms,
            &span.first_ms,
            &span.last_ms,
        ],
    )?;
    let Contents::Report { report, unix_ms } = &r.contents else {
        // Blocks are kept as they came, in `records`; unknown reports too.
        return Ok(());
    };
    match report {
        Report::Alert(a) => tx.execute(
            "INSERT INTO alerts (device, epoch, seq, channel, kind, severity, time_ms, unix_ms, \
             value) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            &[
                &d,
                &e,
                &s,
                &i32::from(a.channel.0),
                &format!("{:?}", a.kind),
                &format!("{:?}", a.severity),
                &i(a.time.as_millis()),
                unix_ms,
                &a.value.map(number),
            ],
        )?,
        Report::Heartbeat(h) => tx.execute(
            "INSERT INTO heartbeats VALUES \
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
            &[
                &d,
                &e,
                &s,
                unix_ms,
                &i64::from(h.uptime_s),
                &i64::from(h.sampled),
                &i64::from(h.sent_readings),
                &i64::from(h.bytes_on_air),
                &i64::from(h.retries),
                &i64::from(h.evicted),
                &i64::from(h.decimated),
                &i64::from(h.sensor_faults),
                &i64::from(h.queue_depth),
                &format!("{:?}", h.reset_reason),
                &i64::from(h.wakeups),
            ],
        )?,
        Report::ConfigStatus {
            version,
            code,
            detail,
        } => tx.execute(
            "INSERT INTO config_status VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &d,
                &e,
                &s,
                &received,
                &i64::from(*version),
                &i32::from(*code),
                &i32::from(*detail),
            ],
        )?,
        Report::CommandResult { id, status, value } => tx.execute(
            "INSERT INTO command_results VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &d,
                &e,
                &s,
                &received,
                &i64::from(*id),
                &i32::from(*status),
                &i64::from(*value),
            ],
        )?,
        Report::KeyStatus { id, status } => tx.execute(
            "INSERT INTO key_status VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &d,
                &e,
                &s,
                &received,
                &i32::from(*id),
                &format!("{status:?}"),
            ],
        )?,
        Report::Channel {
            channel,
            unit,
            kind,
        } => {
            let (kind, decimals) = ChannelRow::of_report(*channel, *unit, *kind).kind_columns();
            tx.execute(
                "INSERT INTO channels VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (device, channel) DO UPDATE SET unit = excluded.unit, \
                 kind = excluded.kind, decimals = excluded.decimals, \
                 received_ms = excluded.received_ms",
                &[
                    &d,
                    &i32::from(channel.0),
                    &i32::from(unit.code()),
                    &kind,
                    &i32::from(decimals),
                    &received,
                ],
            )?
        }
        Report::Crash {
            crash,
            reset_reason,
        } => tx.execute(
            "INSERT INTO crashes VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            &[
                &d,
                &e,
                &s,
                &received,
                &format!("{:?}", crash.kind),
                &i64::from(crash.pc),
                &i64::from(crash.lr),
                &i64::from(crash.status),
                &i64::from(crash.uptime_ms),
                &format!("{reset_reason:?}"),
                &crash.text(),
            ],
        )?,
    };
    Ok(())
}

fn apply(tx: &mut Session<'_>, device: u64, change: &OutboxChange) -> Result<(), postgres::Error> {
    let d = i(device);
    match *change {
        OutboxChange::ConfigApplied { version } => tx.execute(
            "UPDATE outbox_config SET state = 'applied' WHERE device = $1 AND version = $2",
            &[&d, &i64::from(version)],
        ),
        OutboxChange::ConfigLost { version } => tx.execute(
            "UPDATE outbox_config SET state = 'pending' WHERE device = $1 AND version = $2",
            &[&d, &i64::from(version)],
        ),
        OutboxChange::ConfigRefused {
            version,
            code,
            detail,
        } => tx.execute(
            "UPDATE outbox_config SET state = 'refused', code = $3, detail = $4 \
             WHERE device = $1 AND version = $2",
            &[
                &d,
                &i64::from(version),
                &i32::from(code),
                &i32::from(detail),
            ],
        ),
        OutboxChange::CommandDone { id, outcome } => tx.execute(
            "UPDATE outbox_commands SET status = $3, result = $4 WHERE device = $1 AND id = $2",
            &[
                &d,
                &i64::from(id),
                &i32::from(outcome.status),
                &i64::from(outcome.value),
            ],
        ),
        OutboxChange::KeyInUse { id } => tx.execute(
            "UPDATE outbox_key SET state = 'in use' WHERE device = $1 AND id = $2",
            &[&d, &i32::from(id)],
        ),
        OutboxChange::KeyRefused { id, status } => tx.execute(
            "UPDATE outbox_key SET state = 'refused', status = $3 WHERE device = $1 AND id = $2",
            &[&d, &i32::from(id), &i32::from(status as u8)],
        ),
    }?;
    Ok(())
}

/// Writes what `batch` changes, in the transaction open on `tx`, and a
/// row per reading if `reading_rows`.
fn write(tx: &mut Session<'_>, batch: &Batch, reading_rows: bool) -> Result<(), postgres::Error> {
    if reading_rows {
        // One statement a block, its rows as arrays.
        for r in &batch.records {
            let Contents::Readings(readings) = &r.contents else {
                continue;
            };
            let timed: Vec<_> = readings
                .iter()
                .filter_map(|t| t.unix_ms.map(|ms| (t.reading, ms)))
                .collect();
            let channels: Vec<i32> = timed.iter().map(|(r, _)| i32::from(r.channel.0)).collect();
            let times: Vec<i64> = timed.iter().map(|&(_, ms)| ms).collect();
            let values: Vec<f64> = timed.iter().map(|(r, _)| number(r.value)).collect();
            let qualities: Vec<i32> = timed
                .iter()
                .map(|(r, _)| i32::from(r.quality.bits()))
                .collect();
            tx.execute(
                "INSERT INTO reading_rows SELECT $1, * FROM \
                 UNNEST($2::INTEGER[], $3::BIGINT[], $4::DOUBLE PRECISION[], $5::INTEGER[])",
                &[&i(batch.device), &channels, &times, &values, &qualities],
            )?;
        }
    }
    for r in &batch.records {
        insert(tx, batch, r)?;
    }
    for conflict in &batch.conflicts {
        tx.execute(
            "INSERT INTO conflicts VALUES ($1, $2, $3, $4, $5)",
            &[
                &i(batch.device),
                &i(conflict.epoch.0),
                &i64::from(conflict.seq.0),
                &i(batch.received_unix_ms),
                &conflict.payload,
            ],
        )?;
    }
    // The epoch's row keeps when the device was last heard.
    tx.execute(
        "INSERT INTO epochs (device, epoch, highest, seen, anchor_ms, received_ms) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (device, epoch) \
         DO UPDATE SET highest = $3, seen = $4, anchor_ms = $5, received_ms = $6",
        &[
            &i(batch.device),
            &i(batch.epoch.0),
            &i64::from(batch.state.highest),
            &(batch.state.seen as i64),
            &batch.state.anchor_unix_ms,
            &i(batch.received_unix_ms),
        ],
    )?;
    for change in &batch.outbox {
        apply(tx, batch.device, change)?;
    }
    Ok(())
}

/// A small column, or the row is damaged.
fn small<T: TryFrom<i64>>(v: i64, what: &str) -> Result<T, StoreError> {
    T::try_from(v).map_err(|_| StoreError::Failed(format!("{what} {v} out of range")))
}

/// The outboxes of the devices `$1` (an array) in one round trip: their
/// config, key and commands as rows of one shape (`kind`, then columns each
/// kind reads its own way, the device last), by device.
const OUTBOX: &str = "
SELECT 'config' AS kind, version AS a, cbor AS b, state AS c, code::BIGINT AS d,
       detail::BIGINT AS e, NULL::BIGINT AS f, NULL::BYTEA AS g, NULL::BIGINT AS h,
       NULL::BIGINT AS k, 0::BIGINT AS q, device
    FROM outbox_config WHERE device = ANY($1)
UNION ALL
SELECT 'key', id::BIGINT, key, state, status::BIGINT, previous_id::BIGINT, NULL, previous_key,
       NULL, NULL, 0, device
    FROM outbox_key WHERE device = ANY($1)
UNION ALL
SELECT 'command', id, NULL, NULL, code::BIGINT, output::BIGINT, value, NULL, status::BIGINT,
       result, queued, device
    FROM outbox_commands WHERE device = ANY($1) AND expired_ms IS NULL
ORDER BY device, q";

/// The outboxes of `devices`, those with nothing queued included.
fn outboxes(
    c: &mut Session<'_>,
    devices: &[i64],
) -> Result<Result<HashMap<u64, Outbox>, StoreError>, postgres::Error> {
    let rows = c.query(OUTBOX, &[&devices])?;
    let mut of: HashMap<u64, Outbox> = HashMap::new();
    for chunk in rows.chunk_by(|a, b| a.get::<_, i64>(11) == b.get::<_, i64>(11)) {
        let Some(first) = chunk.first() else {
            continue;
        };
        match outbox_of(chunk) {
            Ok(o) => of.insert(first.get::<_, i64>(11) as u64, o),
            Err(e) => return Ok(Err(e)),
        };
    }
    for &d in devices {
        of.entry(d as u64).or_default();
    }
    Ok(Ok(of))
}

/// The outbox of the rows of [`OUTBOX`].
fn outbox_of(rows: &[Row]) -> Result<Outbox, StoreError> {
    let mut outbox = Outbox::default();
    for r in rows {
        let (a, d, e): (i64, Option<i64>, Option<i64>) = (r.get(1), r.get(4), r.get(5));
        match r.get::<_, &str>(0) {
            "config" => {
                let state = match r.get::<_, Option<&str>>(3) {
                    Some("applied") => ConfigState::Applied,
                    Some("refused") => ConfigState::Refused {
                        code: small(d.unwrap_or(0), "config code")?,
                        detail: small(e.unwrap_or(0), "config detail")?,
                    },
                    _ => ConfigState::Pending,
                };
                outbox.config = Some(DesiredConfig {
                    version: small(a, "config version")?,
                    cbor: r.get::<_, Option<Vec<u8>>>(2).unwrap_or_default(),
                    state,
                });
            }
            "key" => {
                let state = match r.get::<_, Option<&str>>(3) {
                    Some("in use") => KeyState::InUse,
                    Some("refused") => KeyState::Refused(
                        d.and_then(|s| u8::try_from(s).ok())
                            .and_then(KeyStatus::from_u8)
                            .unwrap_or(KeyStatus::Refused),
                    ),
                    _ => KeyState::Pending,
                };
                let previous = match e.zip(r.get::<_, Option<Vec<u8>>>(7)) {
                    Some((id, key)) => Some((small(id, "key id")?, key_of(&key)?)),
                    None => None,
                };
                outbox.key = Some(KeyRotation {
                    id: small(a, "key id")?,
                    key: key_of(&r.get::<_, Option<Vec<u8>>>(2).unwrap_or_default())?,
                    state,
                    previous,
                });
            }
            _ => {
                let value: Option<i64> = r.get(6);
                let code = small(d.unwrap_or(-1), "command code")?;
                let output = small(e.unwrap_or(0), "command output")?;
                let Some(command) =
                    command_of(code, output, small(value.unwrap_or(0), "command value")?)
                else {
                    continue;
                };
                let status: Option<i64> = r.get(8);
                let result: Option<i64> = r.get(9);
                let result = match status.zip(result) {
                    Some((s, v)) => Some(CommandOutcome {
                        status: small(s, "command status")?,
                        value: small(v, "command result")?,
                    }),
                    None => None,
                };
                outbox.commands.push(QueuedCommand {
                    id: small(a, "command id")?,
                    command,
                    result,
                });
            }
        }
    }
    Ok(outbox)
}

impl Store for PgStore {
    type Error = StoreError;

    fn epoch_state(&mut self, device: u64, epoch: Epoch) -> Result<Option<EpochState>, StoreError> {
        // The device's latest epoch, read with the group's claims: a later
        // one has no state yet.
        if let Some(latest) = self.group_epochs.get(&device) {
            match latest {
                None => return Ok(None),
                Some((e, _)) if *e < epoch.0 => return Ok(None),
                Some((e, state)) if *e == epoch.0 => return Ok(Some(*state)),
                Some(_) => {}
            }
        }
        let row = self.with(|c| {
            c.query_opt(
                "SELECT highest, seen, anchor_ms FROM epochs WHERE device = $1 AND epoch = $2",
                &[&i(device), &i(epoch.0)],
            )
        })?;
        row.map(|r| {
            Ok(EpochState {
                highest: small(r.get(0), "highest counter")?,
                seen: r.get::<_, i64>(1) as u64,
                anchor_unix_ms: r.get(2),
            })
        })
        .transpose()
    }

    fn stored_payload(&mut self, key: RecordKey) -> Result<Option<Vec<u8>>, StoreError> {
        self.with(|c| {
            c.query_opt(
                "SELECT payload FROM records WHERE device = $1 AND epoch = $2 AND seq = $3",
                &[&i(key.device), &i(key.epoch.0), &i64::from(key.seq.0)],
            )
            .map(|r| r.map(|r| r.get(0)))
        })
    }

    fn outbox(&mut self, device: u64) -> Result<Outbox, StoreError> {
        if let Some(o) = self.group_outboxes.remove(&device) {
            return Ok(o);
        }
        let mut of = self.with(|c| outboxes(c, &[i(device)]))??;
        Ok(of.remove(&device).unwrap_or_default())
    }

    fn commit(&mut self, batch: &Batch) -> Result<Committed, StoreError> {
        let rows = self.reading_rows;
        self.with(|c| c.transaction(|tx| write(tx, batch, rows)))?;
        Ok(batch.committed())
    }

    fn begin_group(&mut self) -> Result<(), StoreError> {
        self.with(|c| c.batch_execute("BEGIN"))?;
        self.group_open = true;
        self.forget_group();
        Ok(())
    }

    fn stage(&mut self, batch: &Batch) -> Result<(), StoreError> {
        let lost = self.client.as_ref().is_none_or(Client::is_closed);
        if !self.group_open || lost {
            // The connection the group began on is gone, and its
            // transaction with it: nothing may be written outside it.
            return Err(StoreError::Unavailable(
                "no group open on this connection".into(),
            ));
        }
        // What was read of the device for the group is now stale.
        self.group_outboxes.remove(&batch.device);
        self.group_epochs.remove(&batch.device);
        // No savepoint: a batch that fails aborts its whole group.
        let rows = self.reading_rows;
        self.with(|c| write(c, batch, rows))
    }

    /// Locks `device` until the group ends (a transaction-level advisory
    /// lock), so that instances sharing the database take its frames one
    /// group at a time. Groups that lock their devices in ascending order
    /// never deadlock; others may, and PostgreSQL then aborts one of
    /// them, whose frames are acknowledged to nobody and sent again.
    fn claim(&mut self, device: u64) -> Result<(), StoreError> {
        if !self.group_open {
            // Outside a group each commit is a transaction of its own:
            // its reads were not in it, and a lock would not cover them.
            return Ok(());
        }
        if self.claimed.contains(&device) {
            return Ok(());
        }
        self.with(|c| c.execute("SELECT pg_advisory_xact_lock($1)", &[&i(device)]))?;
        self.claimed.insert(device);
        Ok(())
    }

    /// The group's devices locked in one statement, in the order given
    /// (ascending, from the intake).
    fn claim_all(&mut self, devices: &[u64]) -> Result<(), StoreError> {
        if !self.group_open {
            return Ok(());
        }
        let new: Vec<i64> = devices
            .iter()
            .filter(|d| !self.claimed.contains(d))
            .map(|&d| i(d))
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        self.with(|c| {
            c.execute(
                "SELECT pg_advisory_xact_lock(d) FROM UNNEST($1::BIGINT[]) AS d",
                &[&new],
            )
        })?;
        self.claimed.extend(devices);
        // Held, their state cannot change under the group: read it now,
        // in two statements for them all instead of two a frame.
        let outboxes = self.with(|c| outboxes(c, &new))??;
        let rows = self.with(|c| {
            c.query(
                "SELECT DISTINCT ON (device) device, epoch, highest, seen, anchor_ms \
                 FROM epochs WHERE device = ANY($1) ORDER BY device, epoch DESC",
                &[&new],
            )
        })?;
        for &d in &new {
            self.group_epochs.insert(d as u64, None);
        }
        for r in rows {
            let state = EpochState {
                highest: small(r.get(2), "highest counter")?,
                seen: r.get::<_, i64>(3) as u64,
                anchor_unix_ms: r.get(4),
            };
            self.group_epochs.insert(
                r.get::<_, i64>(0) as u64,
                Some((r.get::<_, i64>(1) as u64, state)),
            );
        }
        self.group_outboxes.extend(outboxes);
        Ok(())
    }

    fn commit_group(&mut self) -> Result<(), StoreError> {
        let done = self.with(|c| c.batch_execute("COMMIT"));
        if done.is_err() {
            self.abort_group();
        }
        self.group_open = false;
        self.forget_group();
        done
    }

    fn abort_group(&mut self) {
        if let Some(c) = self.client.as_mut().filter(|c| !c.is_closed()) {
            let _ = c.batch_execute("ROLLBACK");
        }
        self.group_open = false;
        self.forget_group();
    }

    fn set_config(&mut self, device: u64, version: u32, cbor: &[u8]) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO outbox_config VALUES ($1, $2, $3, 'pending', 0, 0) \
                 ON CONFLICT (device) DO UPDATE SET version = $2, cbor = $3, \
                 state = 'pending', code = 0, detail = 0",
                &[&i(device), &i64::from(version), &cbor],
            )
            .map(drop)
        })
    }

    fn queue_command(&mut self, device: u64, id: u32, command: Command) -> Result<(), StoreError> {
        let (code, output, value) = command_columns(command);
        self.with(|c| {
            c.execute(
                "INSERT INTO outbox_commands (device, id, code, output, value) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                &[
                    &i(device),
                    &i64::from(id),
                    &i32::from(code),
                    &i32::from(output),
                    &i64::from(value),
                ],
            )
            .map(drop)
        })
    }

    fn set_key(&mut self, device: u64, id: u8, key: &Key) -> Result<(), StoreError> {
        self.with(|c| {
            c.transaction(|tx| {
                let previous = tx.query_opt(
                    "SELECT CASE state WHEN 'in use' THEN id ELSE previous_id END, \
                        CASE state WHEN 'in use' THEN key ELSE previous_key END \
                 FROM outbox_key WHERE device = $1",
                    &[&i(device)],
                )?;
                let (previous_id, previous_key): (Option<i32>, Option<Vec<u8>>) = match previous {
                    Some(r) => (r.get(0), r.get(1)),
                    None => (None, None),
                };
                tx.execute(
                    "INSERT INTO outbox_key VALUES ($1, $2, $3, 'pending', NULL, $4, $5) \
                 ON CONFLICT (device) DO UPDATE SET id = $2, key = $3, state = 'pending', \
                 status = NULL, previous_id = $4, previous_key = $5",
                    &[
                        &i(device),
                        &i32::from(id),
                        &&key.as_bytes()[..],
                        &previous_id,
                        &previous_key,
                    ],
                )?;
                Ok(())
            })
        })
    }
}

impl PgStore {
    fn reading_rows_of(&mut self, q: &ReadingQuery) -> Result<Vec<StoredReading>, StoreError> {
        let (low, high) = q
            .channel
            .map_or((0, i32::from(u16::MAX)), |c| (i32::from(c), i32::from(c)));
        let rows = self.with(|c| {
            c.query(
                "SELECT channel, unix_ms, value, quality FROM reading_rows \
                 WHERE device = $1 AND channel BETWEEN $2 AND $3 AND unix_ms >= $4 \
                 AND unix_ms < $5 ORDER BY unix_ms",
                &[&i(q.device), &low, &high, &q.from_ms, &q.to_ms],
            )
        })?;
        rows.iter()
            .map(|r| {
                Ok(StoredReading {
                    channel: small(i64::from(r.get::<_, i32>(0)), "channel")?,
                    unix_ms: r.get(1),
                    value: r.get(2),
                    quality: small(i64::from(r.get::<_, i32>(3)), "quality")?,
                })
            })
            .collect()
    }
}

fn token_row(r: &postgres::Row) -> Result<Token, StoreError> {
    let role: String = r.get(2);
    Ok(Token {
        id: r.get(0),
        name: r.get(1),
        role: Role::parse(&role)
            .ok_or_else(|| StoreError::Failed(format!("a token of role {role:?}")))?,
        group: r.get(3),
        created_ms: r.get(4),
        revoked_ms: r.get(5),
    })
}

/// A name or a group that is not there, said plainly.
fn taken(e: StoreError, what: String) -> StoreError {
    match e {
        StoreError::Taken(_) => StoreError::Taken(what),
        other => other,
    }
}

fn device_row(r: &postgres::Row) -> Device {
    Device {
        id: r.get::<_, i64>(0) as u64,
        name: r.get(1),
        created_ms: r.get(2),
        revoked_ms: r.get(3),
        last_seen_ms: r.get(4),
        group: r.get(5),
        offline_ms: r.get(6),
    }
}

impl CloudStore for PgStore {
    /// The session-level advisory lock `LEAD_LOCK`, tried without
    /// waiting; held until this connection ends. While it is held, each
    /// call checks that the connection is still the one that took it.
    fn lead(&mut self) -> Result<bool, StoreError> {
        self.client()?;
        if self.leading {
            // The session is alive, so the lock is still ours.
            self.with(|c| c.batch_execute("SELECT 1"))?;
            if self.leading {
                return Ok(true);
            }
        }
        let got = self.with(|c| {
            c.query_one("SELECT pg_try_advisory_lock($1)", &[&LEAD_LOCK])
                .map(|r| r.get::<_, bool>(0))
        })?;
        self.leading = got;
        Ok(got)
    }

    fn add_device(&mut self, device: &Device, key: &DeviceKey) -> Result<(), StoreError> {
        self.with(|c| {
            c.transaction(|tx| {
                tx.execute(
                    "INSERT INTO devices (device, name, created_ms, group_id) \
                     VALUES ($1, $2, $3, $4)",
                    &[
                        &i(device.id),
                        &device.name,
                        &device.created_ms,
                        &device.group,
                    ],
                )?;
                tx.execute(
                    "INSERT INTO device_keys VALUES ($1, $2, $3)",
                    &[&i(key.device), &i32::from(key.id), &&key.key.as_bytes()[..]],
                )?;
                Ok(())
            })
        })
        .map_err(|e| match e {
            StoreError::Taken(_) => StoreError::Taken(format!(
                "a device of id {} or name {:?} exists",
                device.id, device.name
            )),
            other => other,
        })
    }

    fn add_key(&mut self, key: &DeviceKey) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO device_keys VALUES ($1, $2, $3) \
                 ON CONFLICT (device, id) DO UPDATE SET key = $3",
                &[&i(key.device), &i32::from(key.id), &&key.key.as_bytes()[..]],
            )
            .map(drop)
        })
        .map_err(|e| match e {
            StoreError::Taken(_) => StoreError::Taken(format!("no device {}", key.device)),
            other => other,
        })
    }

    fn revoke(&mut self, device: u64, now_ms: i64) -> Result<bool, StoreError> {
        self.with(|c| {
            c.execute(
                "UPDATE devices SET revoked_ms = $2 WHERE device = $1 AND revoked_ms IS NULL",
                &[&i(device), &now_ms],
            )
        })?;
        Ok(self.device(device)?.is_some())
    }

    fn devices(&mut self) -> Result<Vec<Device>, StoreError> {
        self.with(|c| {
            c.query(
                "SELECT d.device, d.name, d.created_ms, d.revoked_ms, COALESCE((SELECT \
                 MAX(e.received_ms) FROM epochs e WHERE e.device = d.device), d.last_seen_ms), \
                 d.group_id, d.offline_ms FROM devices d ORDER BY d.device",
                &[],
            )
            .map(|rows| rows.iter().map(device_row).collect())
        })
    }

    fn device(&mut self, id: u64) -> Result<Option<Device>, StoreError> {
        self.with(|c| {
            c.query_opt(
                "SELECT d.device, d.name, d.created_ms, d.revoked_ms, COALESCE((SELECT \
                 MAX(e.received_ms) FROM epochs e WHERE e.device = d.device), d.last_seen_ms), \
                 d.group_id, d.offline_ms FROM devices d WHERE d.device = $1",
                &[&i(id)],
            )
            .map(|r| r.as_ref().map(device_row))
        })
    }

    fn offline_among(&mut self, devices: &[u64]) -> Result<Vec<u64>, StoreError> {
        let ids: Vec<i64> = devices.iter().map(|&d| i(d)).collect();
        self.with(|c| {
            c.query(
                "SELECT device FROM devices WHERE device = ANY($1) AND offline_ms IS NOT NULL",
                &[&ids],
            )
            .map(|rows| rows.iter().map(|r| r.get::<_, i64>(0) as u64).collect())
        })
    }

    fn keys(&mut self) -> Result<Vec<DeviceKey>, StoreError> {
        let rows = self.with(|c| {
            c.query(
                "SELECT k.device, k.id, k.key FROM device_keys k JOIN devices d USING (device) \
                 WHERE d.revoked_ms IS NULL ORDER BY k.device, k.id",
                &[],
            )
        })?;
        rows.iter()
            .map(|r| {
                Ok(DeviceKey {
                    device: r.get::<_, i64>(0) as u64,
                    id: small(i64::from(r.get::<_, i32>(1)), "key id")?,
                    key: key_of(r.get(2))?,
                })
            })
            .collect()
    }

    fn readings(&mut self, query: &ReadingQuery) -> Result<Vec<StoredReading>, StoreError> {
        if self.reading_rows {
            return self.reading_rows_of(query);
        }
        let rows = self.with(|c| {
            c.query(
                "SELECT payload, declared, anchor_ms FROM records \
                 WHERE device = $1 AND lane = 'routine' AND last_ms >= $2 AND first_ms < $3 \
                 AND anchor_ms IS NOT NULL",
                &[&i(query.device), &query.from_ms, &query.to_ms],
            )
        })?;
        let mut out = Vec::new();
        for r in &rows {
            let declared: i32 = r.get(1);
            decode_into(
                r.get(0),
                usize::try_from(declared).unwrap_or(0),
                r.get(2),
                query,
                &mut out,
            );
        }
        out.sort_by_key(|r| r.unix_ms);
        Ok(out)
    }

    fn alerts(&mut self, device: u64, limit: u32) -> Result<Vec<AlertRow>, StoreError> {
        let rows = self.with(|c| {
            c.query(
                "SELECT channel, kind, severity, unix_ms, value FROM alerts WHERE device = $1 \
                 ORDER BY id DESC LIMIT $2",
                &[&i(device), &i64::from(limit)],
            )
        })?;
        rows.iter()
            .map(|r| {
                Ok(AlertRow {
                    channel: small(i64::from(r.get::<_, i32>(0)), "alert channel")?,
                    kind: r.get(1),
                    severity: r.get(2),
                    unix_ms: r.get(3),
                    value: r.get(4),
                })
            })
            .collect()
    }

    fn set_outputs(&mut self, device: u64, outputs: &[OutputRow]) -> Result<(), StoreError> {
        let list = serde_json::to_string(outputs).map_err(|e| StoreError::Failed(e.to_string()))?;
        self.with(|c| {
            c.execute(
                "INSERT INTO outputs VALUES ($1, $2) ON CONFLICT (device) DO UPDATE SET list = $2",
                &[&i(device), &list],
            )
        })
        .map(drop)
    }

    fn outputs(&mut self, device: u64) -> Result<Vec<OutputRow>, StoreError> {
        let row = self
            .with(|c| c.query_opt("SELECT list FROM outputs WHERE device = $1", &[&i(device)]))?;
        outputs_of(row.map(|r| r.get(0)))
    }

    fn channels(&mut self, device: u64) -> Result<Vec<ChannelRow>, StoreError> {
        let rows = self.with(|c| {
            c.query(
                "SELECT channel, unit, kind, decimals FROM channels WHERE device = $1 \
                 ORDER BY channel",
                &[&i(device)],
            )
        })?;
        let mut out = Vec::new();
        for r in rows {
            let channel = small(i64::from(r.get::<_, i32>(0)), "channel")?;
            let unit = small(i64::from(r.get::<_, i32>(1)), "channel unit")?;
            let decimals = small(i64::from(r.get::<_, i32>(3)), "channel decimals")?;
            // A unit of a newer build is left out, not made up.
            out.extend(ChannelRow::of_columns(
                channel,
                unit,
                &r.get::<_, String>(2),
                decimals,
            ));
        }
        Ok(out)
    }

    fn health(&mut self, device: u64) -> Result<Option<HealthRow>, StoreError> {
        let row = self.with(|c| {
            c.query_opt(
                "SELECT unix_ms, uptime_s, sampled, sent_readings, bytes_on_air, retries, evicted, decimated, sensor_faults, queue_depth, reset_reason, wakeups FROM heartbeats WHERE device = $1 \
                 ORDER BY unix_ms DESC NULLS LAST, epoch DESC, seq DESC LIMIT 1",
                &[&i(device)],
            )
        })?;
        let Some(r) = row else {
            return Ok(None);
        };
        let n = |k: usize| small::<u32>(r.get::<_, i64>(k), "heartbeat");
        Ok(Some(HealthRow {
            unix_ms: r.get(0),
            heartbeat: Heartbeat {
                uptime_s: n(1)?,
                sampled: n(2)?,
                sent_readings: n(3)?,
                bytes_on_air: n(4)?,
                retries: n(5)?,
                evicted: n(6)?,
                decimated: n(7)?,
                sensor_faults: n(8)?,
                queue_depth: n(9)?,
                reset_reason: reset_reason_of(r.get(10)),
                wakeups: n(11)?,
            },
        }))
    }

    fn reported_config(&mut self, device: u64) -> Result<Option<ReportedConfig>, StoreError> {
        let row = self.with(|c| {
            c.query_opt(
                "SELECT version, code, detail, received_ms FROM config_status WHERE device = $1 \
                 ORDER BY received_ms DESC, seq DESC LIMIT 1",
                &[&i(device)],
            )
        })?;
        row.map(|r| {
            Ok(ReportedConfig {
                version: small(r.get::<_, i64>(0), "reported config version")?,
                code: small(i64::from(r.get::<_, i32>(1)), "reported config code")?,
                detail: small(i64::from(r.get::<_, i32>(2)), "reported config detail")?,
                received_ms: r.get(3),
            })
        })
        .transpose()
    }

    fn add_group(&mut self, name: &str, parent: Option<i64>) -> Result<Group, StoreError> {
        let row = self
            .with(|c| {
                c.query_one(
                    "INSERT INTO groups (name, parent) VALUES ($1, $2) RETURNING id",
                    &[&name, &parent],
                )
            })
            .map_err(|e| {
                taken(
                    e,
                    format!("a group named {name:?} exists, or no group {parent:?}"),
                )
            })?;
        Ok(Group {
            id: row.get(0),
            name: name.to_string(),
            parent,
        })
    }

    fn groups(&mut self) -> Result<Vec<Group>, StoreError> {
        let rows =
            self.with(|c| c.query("SELECT id, name, parent FROM groups ORDER BY id", &[]))?;
        Ok(rows
            .iter()
            .map(|r| Group {
                id: r.get(0),
                name: r.get(1),
                parent: r.get(2),
            })
            .collect())
    }

    fn set_device_group(&mut self, device: u64, group: Option<i64>) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "UPDATE devices SET group_id = $2 WHERE device = $1",
                &[&i(device), &group],
            )
            .map(drop)
        })
        .map_err(|e| taken(e, format!("no group {group:?}")))
    }

    fn add_token(
        &mut self,
        name: &str,
        digest: &str,
        role: Role,
        group: Option<i64>,
        now_ms: i64,
    ) -> Result<Token, StoreError> {
        let row = self
            .with(|c| {
                c.query_one(
                    "INSERT INTO tokens (name, digest, role, group_id, created_ms) \
                     VALUES ($1, $2, $3, $4, $5) RETURNING id",
                    &[&name, &digest, &role.as_str(), &group, &now_ms],
                )
            })
            .map_err(|e| taken(e, format!("no group {group:?}")))?;
        Ok(Token {
            id: row.get(0),
            name: name.to_string(),
            role,
            group,
            created_ms: now_ms,
            revoked_ms: None,
        })
    }

    fn token(&mut self, digest: &str) -> Result<Option<Token>, StoreError> {
        let row = self.with(|c| {
            c.query_opt(
                "SELECT id, name, role, group_id, created_ms, revoked_ms FROM tokens \
                 WHERE digest = $1 AND revoked_ms IS NULL",
                &[&digest],
            )
        })?;
        row.as_ref().map(token_row).transpose()
    }

    fn tokens(&mut self) -> Result<Vec<Token>, StoreError> {
        let rows = self.with(|c| {
            c.query(
                "SELECT id, name, role, group_id, created_ms, revoked_ms FROM tokens ORDER BY id",
                &[],
            )
        })?;
        rows.iter().map(token_row).collect()
    }

    fn revoke_token(&mut self, id: i64, now_ms: i64) -> Result<bool, StoreError> {
        let known = self.with(|c| {
            c.query_one("SELECT COUNT(*) > 0 FROM tokens WHERE id = $1", &[&id])
                .map(|r| r.get::<_, bool>(0))
        })?;
        self.with(|c| {
            c.execute(
                "UPDATE tokens SET revoked_ms = $2 WHERE id = $1 AND revoked_ms IS NULL",
                &[&id, &now_ms],
            )
        })?;
        Ok(known)
    }

    fn reading_count(&mut self, device: u64) -> Result<u64, StoreError> {
        self.with(|c| {
            c.query_one(
                "SELECT COALESCE(SUM(declared), 0)::BIGINT FROM records \
                 WHERE device = $1 AND lane = 'routine'",
                &[&i(device)],
            )
            .map(|r| r.get::<_, i64>(0) as u64)
        })
    }

    fn set_group_silence(&mut self, group: i64, intervals: Option<u32>) -> Result<(), StoreError> {
        self.with(|c| match intervals {
            Some(n) => c.execute(
                "INSERT INTO group_silence VALUES ($1, $2) \
                 ON CONFLICT (group_id) DO UPDATE SET intervals = $2",
                &[&group, &i64::from(n)],
            ),
            None => c.execute("DELETE FROM group_silence WHERE group_id = $1", &[&group]),
        })
        .map(drop)
        .map_err(|e| taken(e, format!("no group {group}")))
    }

    fn group_silences(&mut self) -> Result<Vec<(i64, u32)>, StoreError> {
        let rows = self.with(|c| {
            c.query(
                "SELECT group_id, intervals FROM group_silence ORDER BY group_id",
                &[],
            )
        })?;
        rows.iter()
            .map(|r| Ok((r.get(0), small(r.get::<_, i64>(1), "group intervals")?)))
            .collect()
    }

    fn add_event(
        &mut self,
        device: u64,
        kind: &str,
        unix_ms: i64,
        detail: &str,
    ) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO events (device, kind, unix_ms, detail) VALUES ($1, $2, $3, $4)",
                &[&i(device), &kind, &unix_ms, &detail],
            )
            .map(drop)
        })
    }

    fn add_rule(&mut self, rule: &Rule) -> Result<i64, StoreError> {
        let (op, threshold) = rule.condition_columns();
        let (code, output, value) = rule.command_columns();
        let row = self
            .with(|c| {
                c.query_one(
                    "INSERT INTO rules \
                     (name, device, channel, op, threshold, for_ms, target, code, output, value) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
                    &[
                        &rule.name,
                        &i(rule.device),
                        &i32::from(rule.channel),
                        &op,
                        &threshold,
                        &i(rule.for_ms),
                        &i(rule.target),
                        &i32::from(code),
                        &i32::from(output),
                        &i64::from(value),
                    ],
                )
            })
            .map_err(|e| taken(e, format!("a rule named {:?} exists", rule.name)))?;
        Ok(row.get(0))
    }

    fn rules(&mut self) -> Result<Vec<Rule>, StoreError> {
        let rows = self.with(|c| {
            c.query(
                "SELECT id, name, device, channel, op, threshold, for_ms, target, code, output, \
                 value FROM rules ORDER BY id",
                &[],
            )
        })?;
        rows.iter()
            .map(|r| {
                Rule::of_columns(
                    r.get(0),
                    r.get(1),
                    (
                        r.get::<_, i64>(2) as u64,
                        small(i64::from(r.get::<_, i32>(3)), "rule channel")?,
                    ),
                    (r.get(4), r.get(5)),
                    r.get::<_, i64>(6) as u64,
                    r.get::<_, i64>(7) as u64,
                    (
                        small(i64::from(r.get::<_, i32>(8)), "rule command")?,
                        small(i64::from(r.get::<_, i32>(9)), "rule output")?,
                        small(r.get::<_, i64>(10), "rule value")?,
                    ),
                )
                .ok_or(StoreError::Failed("a rule this build cannot read".into()))
            })
            .collect()
    }

    fn remove_rule(&mut self, id: i64) -> Result<bool, StoreError> {
        self.with(|c| c.execute("DELETE FROM rules WHERE id = $1", &[&id]))
            .map(|n| n > 0)
    }

    fn rule_run(
        &mut self,
        rule: i64,
        start_ms: i64,
        end_ms: i64,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        self.with(|c| {
            c.transaction(|tx| {
                // The rule's row locked: instances judging blocks of its
                // device at once keep its runs one at a time.
                tx.execute("SELECT id FROM rules WHERE id = $1 FOR UPDATE", &[&rule])?;
                let overlapping = tx.query_opt(
                    "SELECT id FROM rule_firings \
                     WHERE rule = $1 AND start_ms <= $3 AND end_ms >= $2 LIMIT 1 FOR UPDATE",
                    &[&rule, &start_ms, &end_ms],
                )?;
                match &overlapping {
                    Some(row) => tx.execute(
                        "UPDATE rule_firings SET start_ms = LEAST(start_ms, $2), \
                         end_ms = GREATEST(end_ms, $3) WHERE id = $1",
                        &[&row.get::<_, i64>(0), &start_ms, &end_ms],
                    )?,
                    None => tx.execute(
                        "INSERT INTO rule_firings (rule, start_ms, end_ms, fired_ms) \
                         VALUES ($1, $2, $3, $4)",
                        &[&rule, &start_ms, &end_ms, &now_ms],
                    )?,
                };
                Ok(overlapping.is_none())
            })
        })
    }

    fn add_notification(&mut self, unix_ms: i64, body: &str) -> Result<i64, StoreError> {
        self.with(|c| {
            c.query_one(
                "INSERT INTO notifications (unix_ms, body) VALUES ($1, $2) RETURNING id",
                &[&unix_ms, &body],
            )
            .map(|r| r.get(0))
        })
    }

    fn notifications_after(
        &mut self,
        after: i64,
        limit: u32,
    ) -> Result<Vec<NotificationRow>, StoreError> {
        let rows = self.with(|c| {
            c.query(
                "SELECT id, unix_ms, body FROM notifications WHERE id > $1 ORDER BY id LIMIT $2",
                &[&after, &i64::from(limit)],
            )
        })?;
        Ok(rows
            .iter()
            .map(|r| NotificationRow {
                id: r.get(0),
                unix_ms: r.get(1),
                body: r.get(2),
            })
            .collect())
    }

    fn sink_cursor(&mut self, sink: &str) -> Result<i64, StoreError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO sink_cursors SELECT $1, COALESCE(MAX(id), 0) FROM notifications \
                 ON CONFLICT DO NOTHING",
                &[&sink],
            )?;
            c.query_one(
                "SELECT delivered FROM sink_cursors WHERE sink = $1",
                &[&sink],
            )
            .map(|r| r.get(0))
        })
    }

    fn log_delivery(&mut self, d: &DeliveryRow) -> Result<(), StoreError> {
        let status = d.status.map(i32::from);
        self.with(|c| {
            c.transaction(|tx| {
                tx.execute(
                    "INSERT INTO deliveries \
                     (sink, notification, attempt, unix_ms, status, error, delivered) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    &[
                        &d.sink,
                        &d.notification,
                        &i64::from(d.attempt),
                        &d.unix_ms,
                        &status,
                        &d.error,
                        &d.delivered,
                    ],
                )?;
                if d.delivered {
                    tx.execute(
                        "UPDATE sink_cursors SET delivered = GREATEST(delivered, $2) \
                         WHERE sink = $1",
                        &[&d.sink, &d.notification],
                    )?;
                }
                Ok(())
            })
        })
    }

    fn deliveries(&mut self, limit: u32) -> Result<Vec<DeliveryRow>, StoreError> {
        let rows = self.with(|c| {
            c.query(
                "SELECT sink, notification, attempt, unix_ms, status, error, delivered \
                 FROM deliveries ORDER BY id DESC LIMIT $1",
                &[&i64::from(limit)],
            )
        })?;
        rows.iter()
            .map(|r| {
                let status: Option<i32> = r.get(4);
                Ok(DeliveryRow {
                    sink: r.get(0),
                    notification: r.get(1),
                    attempt: small(r.get::<_, i64>(2), "delivery attempt")?,
                    unix_ms: r.get(3),
                    status: match status {
                        Some(s) => Some(small(i64::from(s), "delivery status")?),
                        None => None,
                    },
                    error: r.get(5),
                    delivered: r.get(6),
                })
            })
            .collect()
    }

    fn commands(&mut self, device: u64) -> Result<Vec<CommandRow>, StoreError> {
        let rows = self.with(|c| {
            c.query(
                "SELECT id, code, output, value, status, result, queued_ms, sent_ms, expires_ms, \
                 expired_ms FROM outbox_commands WHERE device = $1 ORDER BY queued",
                &[&i(device)],
            )
        })?;
        let mut out = Vec::new();
        for r in &rows {
            let code = small(i64::from(r.get::<_, i32>(1)), "command code")?;
            let output = small(i64::from(r.get::<_, i32>(2)), "command output")?;
            let value = small(r.get::<_, i64>(3), "command value")?;
            // A command this build does not know is left out.
            let Some(command) = command_of(code, output, value) else {
                continue;
            };
            let status: Option<i32> = r.get(4);
            let result: Option<i64> = r.get(5);
            let result = match status.zip(result) {
                Some((s, v)) => Some((
                    small(i64::from(s), "command status")?,
                    small(v, "command result")?,
                )),
                None => None,
            };
            out.push(CommandRow {
                id: small(r.get::<_, i64>(0), "command id")?,
                command,
                result,
                queued_ms: r.get(6),
                sent_ms: r.get(7),
                expires_ms: r.get(8),
                expired_ms: r.get(9),
            });
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
        let (code, output, value) = command_columns(command);
        self.with(|c| {
            c.execute(
                "INSERT INTO outbox_commands \
                 (device, id, code, output, value, queued_ms, expires_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
                &[
                    &i(device),
                    &i64::from(id),
                    &i32::from(code),
                    &i32::from(output),
                    &i64::from(value),
                    &queued_ms,
                    &expires_ms,
                ],
            )
            .map(drop)
        })
    }

    fn commands_sent(&mut self, device: u64, ids: &[u32], now_ms: i64) -> Result<(), StoreError> {
        let ids: Vec<i64> = ids.iter().map(|&id| i64::from(id)).collect();
        self.with(|c| {
            c.execute(
                "UPDATE outbox_commands SET sent_ms = $3 \
                 WHERE device = $1 AND id = ANY($2) AND sent_ms IS NULL",
                &[&i(device), &ids, &now_ms],
            )
            .map(drop)
        })
    }

    fn expire_commands(&mut self, now_ms: i64) -> Result<u64, StoreError> {
        self.with(|c| {
            c.execute(
                "UPDATE outbox_commands SET expired_ms = $1 WHERE result IS NULL \
                 AND expired_ms IS NULL AND expires_ms <= $1",
                &[&now_ms],
            )
        })
    }

    fn mark_offline(&mut self, device: u64, now_ms: i64, detail: &str) -> Result<bool, StoreError> {
        self.mark(
            "UPDATE devices SET offline_ms = $2 WHERE device = $1 AND offline_ms IS NULL",
            &[&i(device), &now_ms],
            (device, now_ms, "offline", detail),
        )
    }

    fn mark_recovered(
        &mut self,
        device: u64,
        now_ms: i64,
        detail: &str,
    ) -> Result<bool, StoreError> {
        self.mark(
            "UPDATE devices SET offline_ms = NULL WHERE device = $1 AND offline_ms IS NOT NULL",
            &[&i(device)],
            (device, now_ms, "recovered", detail),
        )
    }

    fn events(&mut self, device: u64, limit: u32) -> Result<Vec<EventRow>, StoreError> {
        let rows = self.with(|c| {
            c.query(
                "SELECT kind, unix_ms, detail FROM events WHERE device = $1 \
                 ORDER BY id DESC LIMIT $2",
                &[&i(device), &i64::from(limit)],
            )
        })?;
        Ok(rows
            .iter()
            .map(|r| EventRow {
                kind: r.get(0),
                unix_ms: r.get(1),
                detail: r.get(2),
            })
            .collect())
    }
}

impl PgStore {
    /// Changes the device's offline mark with `update` and, if it
    /// changed, keeps the event (device, Unix ms, kind, detail).
    fn mark(
        &mut self,
        update: &'static str,
        params: Params<'_>,
        (device, now_ms, kind, detail): (u64, i64, &str, &str),
    ) -> Result<bool, StoreError> {
        self.with(|c| {
            c.transaction(|tx| {
                let changed = tx.execute(update, params)? > 0;
                if changed {
                    tx.execute(
                        "INSERT INTO events (device, kind, unix_ms, detail) VALUES ($1, $2, $3, $4)",
                        &[&i(device), &kind, &now_ms, &detail],
                    )?;
                }
                Ok(changed)
            })
        })
    }
}

/// Creates the schema in an empty database, or checks the version of one
/// that has it. A database newer than this build is refused.
fn migrate(c: &mut Client) -> Result<(), StoreError> {
    let mut tx = c.transaction().map_err(db_error)?;
    // One service at a time migrates; the others wait here.
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS telemark_schema (version BIGINT NOT NULL);
         LOCK TABLE telemark_schema IN EXCLUSIVE MODE;",
    )
    .map_err(db_error)?;
    let version: Option<i64> = tx
        .query_opt("SELECT version FROM telemark_schema", &[])
        .map_err(db_error)?
        .map(|r| r.get(0));
    let version = match version {
        None => {
            tx.batch_execute(SCHEMA).map_err(db_error)?;
            tx.execute("INSERT INTO telemark_schema VALUES (2)", &[])
                .map_err(db_error)?;
            2
        }
        Some(v) if v > SCHEMA_VERSION => {
            return Err(StoreError::Failed(format!(
                "the database has schema version {v}; this build knows up to {SCHEMA_VERSION}"
            )))
        }
        Some(v) => v,
    };
    for (to, sql) in [
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
        if version < to {
            tx.batch_execute(sql).map_err(db_error)?;
            tx.execute("UPDATE telemark_schema SET version = $1", &[&to])
                .map_err(db_error)?;
        }
    }
    tx.commit().map_err(db_error)
}
