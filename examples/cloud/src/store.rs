//! What telemark-cloud keeps, behind one trait with two backends:
//! [`SqliteStore`](crate::SqliteStore) (the default, one file) and
//! [`PgStore`](crate::PgStore) (PostgreSQL). Both run the protocol's
//! conformance suite ([`telemark_server::conformance`]) and the service's
//! own ([`crate::conformance`]).
//!
//! Blocks stay compressed at rest: a record keeps the payload its device
//! sent, with the Unix time of its first and last reading and the anchor
//! that maps its device times to Unix time. A range query picks the
//! records that overlap the range and decodes them.

use std::fmt;

use telemark_core::channel::{Unit, ValueKind};
use telemark_core::codec::CompactCodec;
use telemark_core::model::{ChannelId, Reading, Value};
use telemark_core::wire::frame::Command;
use telemark_core::wire::report::{Heartbeat, ResetReason};
use telemark_core::wire::seal::Key;
use telemark_server::{Contents, DesiredConfig, NewRecord, Store};

use crate::access::{Group, Role, Token};
use crate::rules::Rule;

/// Why the store failed. Nothing was acknowledged that it did not commit.
#[derive(Clone, Debug)]
pub enum StoreError {
    /// Another writer holds the database, or it is locked: try again.
    Busy(String),
    /// The disk (or the database's quota) is full.
    Full(String),
    /// The database cannot be reached (PostgreSQL down, the connection lost).
    Unavailable(String),
    /// A name or an id that is taken.
    Taken(String),
    /// A row that does not hold what the schema says, or a failure of
    /// another kind.
    Failed(String),
}

impl StoreError {
    /// True if the same call may succeed later with nothing changed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StoreError::Busy(_) | StoreError::Full(_) | StoreError::Unavailable(_)
        )
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Busy(e) => write!(f, "the database is busy: {e}"),
            StoreError::Full(e) => write!(f, "the disk is full: {e}"),
            StoreError::Unavailable(e) => write!(f, "the database is unavailable: {e}"),
            StoreError::Taken(e) => write!(f, "{e}"),
            StoreError::Failed(e) => write!(f, "database: {e}"),
        }
    }
}

impl std::error::Error for StoreError {}

/// A device the service knows.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Device {
    /// Its id, the one its frames carry.
    pub id: u64,
    /// Its name, unique.
    pub name: String,
    /// When it was added, Unix ms.
    pub created_ms: i64,
    /// When its keys were revoked, Unix ms: its frames are refused.
    pub revoked_ms: Option<i64>,
    /// When it was last heard (a frame committed), Unix ms.
    pub last_seen_ms: Option<i64>,
    /// The group it is in, if any.
    pub group: Option<i64>,
    /// Since when it is offline (silent too long), Unix ms.
    pub offline_ms: Option<i64>,
}

impl Device {
    /// `unseen` (never heard), `online`, `offline` (silent too long) or
    /// `revoked`.
    pub fn state(&self) -> &'static str {
        match (self.revoked_ms, self.offline_ms, self.last_seen_ms) {
            (Some(_), _, _) => "revoked",
            (None, Some(_), _) => "offline",
            (None, None, Some(_)) => "online",
            (None, None, None) => "unseen",
        }
    }
}

/// One key of a device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceKey {
    /// The device.
    pub device: u64,
    /// The key's id, the one its frames name.
    pub id: u8,
    /// The key.
    pub key: Key,
}

/// A reading as stored, on the server's clock.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct StoredReading {
    /// Its channel.
    pub channel: u16,
    /// Unix ms.
    pub unix_ms: i64,
    /// Its value, as a number.
    pub value: f64,
    /// Its quality flags (0: good).
    pub quality: u8,
}

/// Which readings a query wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadingQuery {
    /// The device.
    pub device: u64,
    /// One channel, or all.
    pub channel: Option<u16>,
    /// From this Unix ms, inclusive.
    pub from_ms: i64,
    /// To this Unix ms, exclusive.
    pub to_ms: i64,
}

/// An alert as stored.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct AlertRow {
    /// Its channel.
    pub channel: u16,
    /// What it is (`High`, `Low`, `Rate`, `Stuck`, `Fault`, ...).
    pub kind: String,
    /// `Info`, `Warning` or `Critical`.
    pub severity: String,
    /// When it happened, Unix ms, if the boot was anchored.
    pub unix_ms: Option<i64>,
    /// The reading that raised it, if any.
    pub value: Option<f64>,
}

/// What one of a device's channels measures, as the device reported it
/// ([`telemark_core::wire::report::Report::Channel`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelRow {
    /// The channel.
    pub channel: u16,
    /// Its unit.
    pub unit: Unit,
    /// How its values read.
    pub kind: ValueKind,
}

impl ChannelRow {
    /// The row of a channel report's fields.
    pub fn of_report(channel: ChannelId, unit: Unit, kind: ValueKind) -> ChannelRow {
        ChannelRow {
            channel: channel.0,
            unit,
            kind,
        }
    }

    /// The kind's name and decimals, as the store keeps them.
    pub fn kind_columns(&self) -> (&'static str, u8) {
        match self.kind {
            ValueKind::Scaled { decimals } => ("scaled", decimals),
            ValueKind::Float => ("float", 0),
            ValueKind::Bool => ("bool", 0),
            ValueKind::Counter => ("counter", 0),
        }
    }

    /// A row from the store's columns; `None` if they name no unit or
    /// kind this build knows.
    pub fn of_columns(channel: u16, unit: u8, kind: &str, decimals: u8) -> Option<ChannelRow> {
        let kind = match kind {
            "scaled" => ValueKind::Scaled { decimals },
            "float" => ValueKind::Float,
            "bool" => ValueKind::Bool,
            "counter" => ValueKind::Counter,
            _ => return None,
        };
        Some(ChannelRow {
            channel,
            unit: Unit::from_code(unit)?,
            kind,
        })
    }
}

/// One of a device's outputs, as the operator names it: what a command's
/// `set_output` sets, and what the dashboard and Home Assistant show.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputRow {
    /// The output's number, as `set_output` takes it.
    pub output: u8,
    /// Its name (`burner`, `pump`).
    pub name: String,
}

/// The outputs a stored list names; none if no list was stored.
pub fn outputs_of(list: Option<String>) -> Result<Vec<OutputRow>, StoreError> {
    match list {
        None => Ok(Vec::new()),
        Some(list) => serde_json::from_str(&list)
            .map_err(|e| StoreError::Failed(format!("a device's outputs: {e}"))),
    }
}

/// A device's health: its latest heartbeat, and the Unix time it was sent
/// (none if the boot had no anchor yet).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct HealthRow {
    /// When it was sent, Unix ms.
    pub unix_ms: Option<i64>,
    /// Its counters; `queue_depth` is the store depth.
    #[serde(flatten)]
    pub heartbeat: Heartbeat,
}

/// A reset reason as the stores keep it (its name); one this build does
/// not know reads as `Unknown`.
pub fn reset_reason_of(name: String) -> ResetReason {
    serde_json::from_value(serde_json::Value::String(name)).unwrap_or_default()
}

/// What a device last said of its config: its latest config report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ReportedConfig {
    /// The version in force on the device.
    pub version: u32,
    /// 0 if the update it answers was applied, else why it was refused
    /// ([`telemark_core::config::ConfigError::code`]).
    pub code: u8,
    /// The key or channel a refusal is about.
    pub detail: u16,
    /// When the report arrived, Unix ms.
    pub received_ms: i64,
}

/// Something that happened to a device, as stored.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct EventRow {
    /// `offline` (silent too long) or `recovered` (heard again).
    pub kind: String,
    /// When, Unix ms.
    pub unix_ms: i64,
    /// What the service saw, in words.
    pub detail: String,
}

/// A notification as kept ([`crate::notify`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotificationRow {
    /// Its id, in the order notifications were made.
    pub id: i64,
    /// When it was made, Unix ms.
    pub unix_ms: i64,
    /// Its JSON.
    pub body: String,
}

/// One attempt at delivering a notification.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DeliveryRow {
    /// Where to: `webhook URL`.
    pub sink: String,
    /// The notification's id.
    pub notification: i64,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// When, Unix ms.
    pub unix_ms: i64,
    /// The HTTP status answered, if any.
    pub status: Option<u16>,
    /// What went wrong, if anything.
    pub error: Option<String>,
    /// Taken: the sink moves past it.
    pub delivered: bool,
}

/// A command as queued, with where it stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandRow {
    /// Its id, unique for the device.
    pub id: u32,
    /// The command.
    pub command: Command,
    /// The device's answer: its status (0: done) and value.
    pub result: Option<(u8, u32)>,
    /// When it was queued, Unix ms.
    pub queued_ms: Option<i64>,
    /// When a response first carried it down, Unix ms.
    pub sent_ms: Option<i64>,
    /// When it stops being sent if unanswered, Unix ms; never if `None`.
    pub expires_ms: Option<i64>,
    /// When it expired unanswered, Unix ms: it is no longer sent.
    pub expired_ms: Option<i64>,
}

impl CommandRow {
    /// `answered`, `expired`, `sent` or `queued`.
    pub fn state(&self) -> &'static str {
        match (self.result, self.expired_ms, self.sent_ms) {
            (Some(_), _, _) => "answered",
            (None, Some(_), _) => "expired",
            (None, None, Some(_)) => "sent",
            (None, None, None) => "queued",
        }
    }
}

/// What a stored block's row keeps besides its payload: the Unix time of
/// its first and last reading, and the anchor its times were mapped with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    /// Unix ms at the device's uptime zero, if the boot was anchored.
    pub anchor_ms: Option<i64>,
    /// The earliest reading, Unix ms.
    pub first_ms: Option<i64>,
    /// The latest reading, Unix ms.
    pub last_ms: Option<i64>,
}

impl Span {
    /// The span of a new record (blocks only; reports have none).
    pub fn of(record: &NewRecord) -> Span {
        let Contents::Readings(readings) = &record.contents else {
            return Span::default();
        };
        let anchor_ms = readings.iter().find_map(|t| {
            let ms = i64::try_from(t.reading.time.as_millis()).ok()?;
            t.unix_ms?.checked_sub(ms)
        });
        Span {
            anchor_ms,
            first_ms: readings.iter().filter_map(|t| t.unix_ms).min(),
            last_ms: readings.iter().filter_map(|t| t.unix_ms).max(),
        }
    }
}

/// A reading's value as one number for queries and charts.
pub fn number(v: Value) -> f64 {
    match v {
        Value::Scaled(x) => f64::from(x),
        Value::Float(f) => f64::from(f),
        Value::Bool(b) => f64::from(u8::from(b)),
        Value::Counter(c) => f64::from(c),
    }
}

/// Decodes a stored block (anchored at `anchor_ms`) and adds the readings
/// `query` wants to `out`. A payload that no longer decodes (it was
/// checked when it arrived) adds nothing.
pub fn decode_into(
    payload: &[u8],
    declared: usize,
    anchor_ms: i64,
    query: &ReadingQuery,
    out: &mut Vec<StoredReading>,
) {
    let mut readings: Vec<Reading> = Vec::with_capacity(declared);
    if CompactCodec
        .decode_at_most(payload, declared, &mut readings)
        .is_err()
    {
        return;
    }
    for r in readings {
        if query.channel.is_some_and(|c| c != r.channel.0) {
            continue;
        }
        let Some(unix_ms) = i64::try_from(r.time.as_millis())
            .ok()
            .and_then(|t| anchor_ms.checked_add(t))
        else {
            continue;
        };
        if unix_ms < query.from_ms || unix_ms >= query.to_ms {
            continue;
        }
        out.push(StoredReading {
            channel: r.channel.0,
            unix_ms,
            value: number(r.value),
            quality: r.quality.bits(),
        });
    }
}

/// Command columns: a code and two operands.
pub fn command_columns(c: Command) -> (u8, u8, u32) {
    match c {
        Command::Ping => (0, 0, 0),
        Command::FlushNow => (1, 0, 0),
        Command::Reboot => (2, 0, 0),
        Command::SetOutput { output, value } => (3, output, value),
        _ => (255, 0, 0),
    }
}

/// The command of [`command_columns`].
pub fn command_of(code: u8, output: u8, value: u32) -> Option<Command> {
    Some(match code {
        0 => Command::Ping,
        1 => Command::FlushNow,
        2 => Command::Reboot,
        3 => Command::SetOutput { output, value },
        _ => return None,
    })
}

/// A key column: 32 bytes, or the row is damaged.
pub fn key_of(bytes: &[u8]) -> Result<Key, StoreError> {
    <[u8; 32]>::try_from(bytes)
        .map(Key::from_bytes)
        .map_err(|_| StoreError::Failed(format!("a key of {} bytes", bytes.len())))
}

/// The store of telemark-cloud: the protocol's [`Store`] and what the
/// service keeps besides.
pub trait CloudStore: Store<Error = StoreError> + Send {
    /// Adds a device and its first key. A name or an id in use is
    /// [`StoreError::Taken`].
    fn add_device(&mut self, device: &Device, key: &DeviceKey) -> Result<(), StoreError>;

    /// Adds a key to a known device (a key given on the command line, a
    /// rotated key).
    fn add_key(&mut self, key: &DeviceKey) -> Result<(), StoreError>;

    /// Revokes a device at `now_ms`: its keys stop opening frames.
    /// Returns false for an unknown device.
    fn revoke(&mut self, device: u64, now_ms: i64) -> Result<bool, StoreError>;

    /// Every device, by id.
    fn devices(&mut self) -> Result<Vec<Device>, StoreError>;

    /// One device.
    fn device(&mut self, id: u64) -> Result<Option<Device>, StoreError>;

    /// Those of `devices` marked offline. By default a
    /// [`CloudStore::device`] read of each.
    fn offline_among(&mut self, devices: &[u64]) -> Result<Vec<u64>, StoreError> {
        let mut offline = Vec::new();
        for &d in devices {
            if self.device(d)?.is_some_and(|x| x.offline_ms.is_some()) {
                offline.push(d);
            }
        }
        Ok(offline)
    }

    /// The keys of every device that is not revoked.
    fn keys(&mut self) -> Result<Vec<DeviceKey>, StoreError>;

    /// Readings of `query`, by time.
    fn readings(&mut self, query: &ReadingQuery) -> Result<Vec<StoredReading>, StoreError>;

    /// The alerts of `device`, latest first, at most `limit`.
    fn alerts(&mut self, device: u64, limit: u32) -> Result<Vec<AlertRow>, StoreError>;

    /// Names `device`'s outputs, in place of those it had.
    fn set_outputs(&mut self, device: u64, outputs: &[OutputRow]) -> Result<(), StoreError>;

    /// `device`'s outputs, as last named.
    fn outputs(&mut self, device: u64) -> Result<Vec<OutputRow>, StoreError>;

    /// `device`'s channels as it last reported them, by channel.
    fn channels(&mut self, device: u64) -> Result<Vec<ChannelRow>, StoreError>;

    /// `device`'s latest heartbeat, if it sent one.
    fn health(&mut self, device: u64) -> Result<Option<HealthRow>, StoreError>;

    /// `device`'s latest config report, if it sent one.
    fn reported_config(&mut self, device: u64) -> Result<Option<ReportedConfig>, StoreError>;

    /// Makes a group, below `parent` if given (which must exist).
    fn add_group(&mut self, name: &str, parent: Option<i64>) -> Result<Group, StoreError>;

    /// Every group.
    fn groups(&mut self) -> Result<Vec<Group>, StoreError>;

    /// Puts `device` in `group` (which must exist), or in none.
    fn set_device_group(&mut self, device: u64, group: Option<i64>) -> Result<(), StoreError>;

    /// Keeps a token by the digest of its secret ([`crate::access::digest`]).
    fn add_token(
        &mut self,
        name: &str,
        digest: &str,
        role: Role,
        group: Option<i64>,
        now_ms: i64,
    ) -> Result<Token, StoreError>;

    /// The token of a digest, if it is kept and not revoked.
    fn token(&mut self, digest: &str) -> Result<Option<Token>, StoreError>;

    /// Every token, revoked ones too.
    fn tokens(&mut self) -> Result<Vec<Token>, StoreError>;

    /// Revokes token `id`; false if there is none.
    fn revoke_token(&mut self, id: i64, now_ms: i64) -> Result<bool, StoreError>;

    /// How many readings are stored for `device`.
    fn reading_count(&mut self, device: u64) -> Result<u64, StoreError>;

    /// Marks `device` offline since `now_ms` and keeps an `offline` event,
    /// in one transaction; false for an unknown device or one already
    /// offline.
    fn mark_offline(&mut self, device: u64, now_ms: i64, detail: &str) -> Result<bool, StoreError>;

    /// Clears `device`'s offline mark and keeps a `recovered` event, in
    /// one transaction; false if it was not offline.
    fn mark_recovered(
        &mut self,
        device: u64,
        now_ms: i64,
        detail: &str,
    ) -> Result<bool, StoreError>;

    /// The events of `device`, latest first, at most `limit`.
    fn events(&mut self, device: u64, limit: u32) -> Result<Vec<EventRow>, StoreError>;

    /// Sets the silent-device rule's intervals for the devices of `group`
    /// and of the groups below it (0: never offline), or, with `None`,
    /// lets them take their parent's or the service's.
    fn set_group_silence(&mut self, group: i64, intervals: Option<u32>) -> Result<(), StoreError>;

    /// The groups that set their own intervals: (group, intervals).
    fn group_silences(&mut self) -> Result<Vec<(i64, u32)>, StoreError>;

    /// Keeps an event of `device` (a rule that fired).
    fn add_event(
        &mut self,
        device: u64,
        kind: &str,
        unix_ms: i64,
        detail: &str,
    ) -> Result<(), StoreError>;

    /// Keeps a rule; its id. A name in use is [`StoreError::Taken`].
    fn add_rule(&mut self, rule: &Rule) -> Result<i64, StoreError>;

    /// Every rule, by id.
    fn rules(&mut self) -> Result<Vec<Rule>, StoreError>;

    /// Removes rule `id`; false if there is none.
    fn remove_rule(&mut self, id: i64) -> Result<bool, StoreError>;

    /// Notes that rule `rule` held from `start_ms` to `end_ms` long
    /// enough to fire, at `now_ms`: true if no run that overlaps it fired
    /// before (it fires now); an overlapping one is widened to cover it.
    fn rule_run(
        &mut self,
        rule: i64,
        start_ms: i64,
        end_ms: i64,
        now_ms: i64,
    ) -> Result<bool, StoreError>;

    /// Keeps a notification made at `unix_ms`; its id.
    fn add_notification(&mut self, unix_ms: i64, body: &str) -> Result<i64, StoreError>;

    /// Notifications of ids above `after`, oldest first, at most `limit`.
    fn notifications_after(
        &mut self,
        after: i64,
        limit: u32,
    ) -> Result<Vec<NotificationRow>, StoreError>;

    /// The id of the last notification `sink` took; a sink not seen
    /// before starts at the latest notification.
    fn sink_cursor(&mut self, sink: &str) -> Result<i64, StoreError>;

    /// Logs an attempt; a delivered one moves its sink past its
    /// notification, in the same transaction.
    fn log_delivery(&mut self, delivery: &DeliveryRow) -> Result<(), StoreError>;

    /// The latest attempts, latest first, at most `limit`.
    fn deliveries(&mut self, limit: u32) -> Result<Vec<DeliveryRow>, StoreError>;

    /// The commands queued for `device`, oldest first, with their results.
    fn commands(&mut self, device: u64) -> Result<Vec<CommandRow>, StoreError>;

    /// Queues a command of id `id` at `queued_ms`, to be sent until
    /// answered or until `expires_ms`; an id already queued is left as
    /// it is.
    fn queue_command_until(
        &mut self,
        device: u64,
        id: u32,
        command: Command,
        queued_ms: i64,
        expires_ms: Option<i64>,
    ) -> Result<(), StoreError>;

    /// Notes that a response carried commands `ids` of `device` down at
    /// `now_ms` (the first time counts).
    fn commands_sent(&mut self, device: u64, ids: &[u32], now_ms: i64) -> Result<(), StoreError>;

    /// Expires every unanswered command past its time at `now_ms`: it is
    /// no longer sent. Returns how many.
    fn expire_commands(&mut self, now_ms: i64) -> Result<u64, StoreError>;

    /// True while this store's instance leads the instances that share its
    /// database: the one that looks for silent devices, expires commands
    /// and delivers notifications. A store no other instance shares leads
    /// always. A lead is held for the life of the store's connection; an
    /// instance that dies, or loses its connection, frees it for the next
    /// to ask (see `docs/scaling.md`).
    fn lead(&mut self) -> Result<bool, StoreError> {
        Ok(true)
    }

    /// The config `device` should run, and where its delivery stands.
    fn desired_config(&mut self, device: u64) -> Result<Option<DesiredConfig>, StoreError> {
        Ok(self.outbox(device)?.config)
    }
}

/// The service holds its backend as a trait object; the protocol's server
/// takes it as any [`Store`].
impl Store for Box<dyn CloudStore> {
    type Error = StoreError;

    fn epoch_state(
        &mut self,
        device: u64,
        epoch: telemark_core::wire::Epoch,
    ) -> Result<Option<telemark_server::EpochState>, StoreError> {
        (**self).epoch_state(device, epoch)
    }

    fn stored_payload(
        &mut self,
        key: telemark_server::RecordKey,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        (**self).stored_payload(key)
    }

    fn outbox(&mut self, device: u64) -> Result<telemark_server::Outbox, StoreError> {
        (**self).outbox(device)
    }

    fn begin_group(&mut self) -> Result<(), StoreError> {
        (**self).begin_group()
    }

    fn stage(&mut self, batch: &telemark_server::Batch) -> Result<(), StoreError> {
        (**self).stage(batch)
    }

    fn claim(&mut self, device: u64) -> Result<(), StoreError> {
        (**self).claim(device)
    }

    fn claim_all(&mut self, devices: &[u64]) -> Result<(), StoreError> {
        (**self).claim_all(devices)
    }

    fn commit_group(&mut self) -> Result<(), StoreError> {
        (**self).commit_group()
    }

    fn abort_group(&mut self) {
        (**self).abort_group();
    }

    fn commit(
        &mut self,
        batch: &telemark_server::Batch,
    ) -> Result<telemark_server::Committed, StoreError> {
        (**self).commit(batch)
    }

    fn set_config(&mut self, device: u64, version: u32, cbor: &[u8]) -> Result<(), StoreError> {
        (**self).set_config(device, version, cbor)
    }

    fn queue_command(&mut self, device: u64, id: u32, command: Command) -> Result<(), StoreError> {
        (**self).queue_command(device, id, command)
    }

    fn set_key(&mut self, device: u64, id: u8, key: &Key) -> Result<(), StoreError> {
        (**self).set_key(device, id, key)
    }
}
