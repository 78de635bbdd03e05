//! The hub: the server half of the protocol over the service's store.
//! Every listener (MQTT, serial lines, the API) hands it what arrives;
//! it holds the keyring the store's devices make, and changes both
//! together.
//!
//! The hub runs on a thread of its own ([`Hub::spawn`]); listeners and
//! the API reach it through a [`HubHandle`]. Frames that wait while it
//! commits are taken together: verified one after the other, each seeing
//! the ones before it, and committed in one transaction
//! ([`Server::receive_group`]), so that a busy service syncs to disk once
//! for many frames, not once for each.
//!
//! A frame is verified, its records stored, and only after the commit is
//! the response built: the acknowledgement, and
//! whatever config, commands or key wait for the device. A commit that
//! fails (the database busy, locked by another process, the disk full,
//! PostgreSQL away) acknowledges nothing; the device sends the records
//! again.

use std::fmt;
use std::sync::{mpsc, Arc};
use std::time::Instant;

use tokio::sync::oneshot;

use telemark_core::config::{ConfigError, ConfigUpdate};
use telemark_core::model::ChannelId;
use telemark_core::wire::frame::Command;
use telemark_core::wire::report::Report;
use telemark_core::wire::seal::{Header, Key};
use telemark_core::wire::{Epoch, Seq};
use telemark_server::{
    Contents, Counters, Keyring, Received, Refusal, RotateError, Server, TimedReading,
};

use crate::cluster::FrontEnd;
use crate::notify;
use crate::rules::{Rule, RuleSpec};
use crate::silence::{self, Watch};
use crate::store::ReadingQuery;
use crate::store::{CloudStore, Device, DeviceKey, StoreError};
use crate::throttle::{Rate, Throttle};

/// Why the hub refused a request.
#[derive(Debug)]
pub enum HubError {
    /// The store failed.
    Store(StoreError),
    /// No device of that id.
    UnknownDevice(u64),
    /// The device's keys are revoked.
    Revoked(u64),
    /// A config update the device would refuse, with the device's reason.
    Config(ConfigError),
    /// A key rotation that cannot start.
    Rotate(RotateError<StoreError>),
    /// A request that makes no sense (an empty name, a bad id).
    Invalid(String),
}

impl fmt::Display for HubError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HubError::Store(e) => write!(f, "{e}"),
            HubError::UnknownDevice(d) => write!(f, "no device {d}"),
            HubError::Revoked(d) => write!(f, "device {d} is revoked"),
            HubError::Config(e) => write!(f, "the device would refuse this config: {e}"),
            HubError::Rotate(e) => write!(f, "key rotation: {e}"),
            HubError::Invalid(e) => f.write_str(e),
        }
    }
}

impl std::error::Error for HubError {}

impl From<StoreError> for HubError {
    fn from(e: StoreError) -> Self {
        HubError::Store(e)
    }
}

/// What a stored record held, as shown to a [`Hub::watch`]er.
#[derive(Clone, Debug, PartialEq)]
pub enum Stored {
    /// A block of readings, each with its Unix time where its boot is
    /// anchored.
    Readings(Vec<TimedReading>),
    /// An alert, a heartbeat, a config status, a command result, a crash.
    Report(Report),
    /// An alert-lane payload of no known report; it is kept raw.
    Undecodable,
}

/// What a device's firmware needs to reach the service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Provisioned {
    /// The device as stored.
    pub device: Device,
    /// Its key's id.
    pub key_id: u8,
    /// Its key.
    pub key: Key,
}

impl Provisioned {
    /// The key as 64 hex digits.
    pub fn key_hex(&self) -> String {
        self.key
            .as_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// The line of a keys file (`DEVICE ID HEX`), which the firmware
    /// builds and `--keys` read.
    pub fn keys_line(&self) -> String {
        format!("{} {} {}", self.device.id, self.key_id, self.key_hex())
    }
}

/// Ingest figures besides the protocol's [`Counters`].
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Figures {
    /// Frames whose device is not the one their topic or certificate names.
    pub wrong_device: u64,
    /// Frames of a device over its rate, not taken ([`crate::throttle`]).
    pub throttled: u64,
    /// Commits, and the seconds they took (for the mean).
    pub commits: u64,
    /// Seconds all commits took.
    pub commit_seconds: f64,
    /// Commits by latency: at most 1, 5, 25, 100, 500 ms, and above.
    pub commit_buckets: [u64; 6],
}

/// Jobs that may wait for the hub's thread; a listener past it waits.
pub const QUEUE: usize = 4096;

/// Most frames committed in one group.
pub const MAX_GROUP: usize = 512;

/// A frame as it arrived.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Arrival {
    /// The device its path names (an MQTT topic), if any: a frame of
    /// another device is refused.
    pub device: Option<u64>,
    /// The frame.
    pub frame: Vec<u8>,
    /// When it arrived, Unix ms.
    pub received_unix_ms: u64,
}

/// What a frame's sender is told.
pub type Answer = Result<Vec<u8>, NotAcknowledged>;

enum Job {
    Frame(Arrival, oneshot::Sender<Answer>),
    Run(Box<dyn FnOnce(&mut Hub) + Send>),
}

impl Job {
    /// The job that runs `f`, and where its result comes back.
    fn run<T: Send + 'static>(
        f: impl FnOnce(&mut Hub) -> T + Send + 'static,
    ) -> (Job, oneshot::Receiver<T>) {
        let (reply, answer) = oneshot::channel();
        let job = Job::Run(Box::new(move |hub: &mut Hub| {
            // A caller that went away takes no result.
            let _ = reply.send(f(hub));
        }));
        (job, answer)
    }
}

/// The way to the hub's thread ([`Hub::spawn`]); clones share it.
#[derive(Clone)]
pub struct HubHandle {
    jobs: mpsc::SyncSender<Job>,
    cluster: Option<Arc<FrontEnd>>,
}

/// The hub's thread is gone (it panicked, or the service is stopping).
fn gone() -> NotAcknowledged {
    NotAcknowledged::Unstored(StoreError::Unavailable("the hub has stopped".into()))
}

impl HubHandle {
    /// Frames from now on go through `front`, to whichever instance's
    /// hub takes them from the cluster's stream ([`crate::cluster`]);
    /// everything else still runs on this hub.
    #[must_use]
    pub fn through(mut self, front: Arc<FrontEnd>) -> HubHandle {
        self.cluster = Some(front);
        self
    }

    /// The cluster front-end's figures, in cluster mode.
    pub fn cluster_figures(&self) -> Option<crate::cluster::Figures> {
        self.cluster.as_ref().map(|front| front.figures())
    }

    /// Hands a frame to the hub and waits for its answer, from a thread
    /// that is not the async runtime's.
    pub fn receive_blocking(&self, arrival: Arrival) -> Answer {
        if let Some(front) = &self.cluster {
            return front.receive_blocking(arrival);
        }
        let (reply, answer) = oneshot::channel();
        if self.jobs.send(Job::Frame(arrival, reply)).is_err() {
            return Err(gone());
        }
        answer.blocking_recv().unwrap_or_else(|_| Err(gone()))
    }

    /// Hands a frame to the hub and waits for its answer.
    pub async fn receive(&self, arrival: Arrival) -> Answer {
        if let Some(front) = &self.cluster {
            return front.receive(arrival).await;
        }
        let (reply, answer) = oneshot::channel();
        if !self.send(Job::Frame(arrival, reply)).await {
            return Err(gone());
        }
        answer.await.unwrap_or_else(|_| Err(gone()))
    }

    /// Runs `f` on the hub, from a thread that is not the async
    /// runtime's; `None` if the hub is gone.
    pub fn call_blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Hub) -> T + Send + 'static,
    ) -> Option<T> {
        let (job, answer) = Job::run(f);
        self.jobs.send(job).ok()?;
        answer.blocking_recv().ok()
    }

    /// Runs `f` on the hub; `None` if the hub is gone.
    pub async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Hub) -> T + Send + 'static,
    ) -> Option<T> {
        let (job, answer) = Job::run(f);
        if !self.send(job).await {
            return None;
        }
        answer.await.ok()
    }

    /// Queues `job`; false if the hub is gone. A full queue is waited on
    /// off the async threads.
    async fn send(&self, job: Job) -> bool {
        match self.jobs.try_send(job) {
            Ok(()) => true,
            Err(mpsc::TrySendError::Disconnected(_)) => false,
            Err(mpsc::TrySendError::Full(job)) => {
                let jobs = self.jobs.clone();
                tokio::task::spawn_blocking(move || jobs.send(job).is_ok())
                    .await
                    .unwrap_or(false)
            }
        }
    }
}

/// How long a command is sent unanswered before it expires, unless the
/// service or its caller says otherwise: a day, ms.
pub const DEFAULT_COMMAND_TTL_MS: u64 = 86_400_000;

/// How often the keyring is read again from the store, ms.
pub const KEY_REFRESH_MS: u64 = 10_000;

/// Why a frame got no response. Nothing of it was acknowledged.
#[derive(Debug)]
pub enum NotAcknowledged {
    /// The protocol refused it (counted in [`Counters::refused`]).
    Refused(Refusal),
    /// It names another device than the path it came by.
    WrongDevice {
        /// The device the path names.
        expected: u64,
        /// The device the frame names, if it parses.
        named: Option<u64>,
    },
    /// The store could not commit it: the device sends it again.
    Unstored(StoreError),
    /// Its device sends faster than its rate: it may send again after
    /// this many ms.
    Throttled {
        /// When it may send again, ms from now.
        retry_after_ms: u64,
    },
    /// Another instance of the cluster took it from the stream and
    /// refused it ([`crate::cluster`]), for the reason it gives.
    Declined(String),
}

impl fmt::Display for NotAcknowledged {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotAcknowledged::Refused(r) => write!(f, "refused: {r}"),
            NotAcknowledged::WrongDevice { expected, named } => match named {
                Some(d) => write!(f, "a frame of device {d} on the path of device {expected}"),
                None => write!(f, "not a frame (on the path of device {expected})"),
            },
            NotAcknowledged::Unstored(e) => write!(f, "not stored: {e}"),
            NotAcknowledged::Throttled { retry_after_ms } => write!(
                f,
                "not taken: the device sends faster than its rate; again in {retry_after_ms} ms"
            ),
            NotAcknowledged::Declined(why) => f.write_str(why),
        }
    }
}

/// Commit latency bucket bounds, seconds.
pub const COMMIT_BOUNDS: [f64; 5] = [0.001, 0.005, 0.025, 0.1, 0.5];

type Watcher = Box<dyn FnMut(u64, Epoch, Seq, &Stored) + Send>;

/// The server half over the service's store. See the module docs.
pub struct Hub {
    server: Server,
    store: Box<dyn CloudStore>,
    watch: Vec<Watcher>,
    figures: Figures,
    unauthenticated: Vec<u64>,
    keys_loaded_ms: u64,
    silence: Watch,
    command_ttl_ms: Option<u64>,
    housekept_ms: u64,
    notifying: bool,
    rules: Vec<Rule>,
    throttle: Throttle,
    closed: bool,
    shared: bool,
}

impl Hub {
    /// A hub over `store`, accepting the keys of its devices that are not
    /// revoked.
    pub fn new(mut store: Box<dyn CloudStore>) -> Result<Hub, StoreError> {
        let mut keyring = Keyring::new();
        for k in store.keys()? {
            keyring.insert(k.device, k.id, k.key);
        }
        // Off until asked for (the service asks, by its settings): a hub
        // fed frames on a clock of its own would find them all silent.
        let off = silence::Rule {
            intervals: 0,
            ..silence::Rule::default()
        };
        let silence = Watch::load(off, store.as_mut())?;
        let rules = store.rules()?;
        Ok(Hub {
            server: Server::new(keyring),
            silence,
            command_ttl_ms: Some(DEFAULT_COMMAND_TTL_MS),
            housekept_ms: 0,
            notifying: false,
            rules,
            throttle: Throttle::new(None),
            store,
            watch: Vec::new(),
            figures: Figures::default(),
            unauthenticated: Vec::new(),
            keys_loaded_ms: 0,
            closed: false,
            shared: false,
        })
    }

    /// Looks for silent devices by `rule` (see [`crate::silence`]) from
    /// now on, on the hub's thread ([`Hub::spawn`]).
    pub fn detect_silence(&mut self, rule: silence::Rule) -> Result<(), StoreError> {
        self.silence = Watch::load(rule, self.store.as_mut())?;
        if self.shared {
            self.silence.share();
        }
        Ok(())
    }

    /// Shares the store's database with other instances from now on (the
    /// cluster mode, [`crate::cluster`]): rules are read again with the
    /// keys, as another instance's API may change them; whether a device
    /// is offline is read from the store; and only the instance that
    /// leads ([`CloudStore::lead`]) looks for silent devices, expires
    /// commands and delivers notifications.
    pub fn share_store(&mut self) {
        self.shared = true;
        self.silence.share();
    }

    /// True if this instance does the work one instance does for all
    /// (see [`Hub::share_store`]); always, alone. A store that cannot say
    /// leads nothing until it can.
    pub fn leads(&mut self) -> bool {
        if !self.shared {
            return true;
        }
        match self.store.lead() {
            Ok(leads) => leads,
            Err(e) => {
                tracing::warn!(error = %e, "the lead not taken");
                false
            }
        }
    }

    /// Marks offline every device silent too long at `now_ms`, and queues
    /// a ping for each; returns them. The hub's thread calls it as often
    /// as the rule says.
    pub fn check_silence(&mut self, now_ms: u64) -> Result<Vec<u64>, HubError> {
        let gone = self.silence.check(self.store.as_mut(), now_ms)?;
        let now = i64::try_from(now_ms).unwrap_or(i64::MAX);
        for (device, detail) in &gone {
            self.notify(now, notify::of_event(*device, "offline", now, detail));
            self.queue_command_at(*device, Command::Ping, now, self.command_ttl_ms)?;
        }
        Ok(gone.into_iter().map(|(device, _)| device).collect())
    }

    /// Keeps rule `spec` ([`crate::rules`]) and runs it from now on; both
    /// its devices must be known.
    pub fn add_rule(&mut self, spec: &RuleSpec) -> Result<Rule, HubError> {
        let mut rule = spec.rule().map_err(HubError::Invalid)?;
        self.known(rule.device)?;
        self.known(rule.target)?;
        rule.id = self.store.add_rule(&rule)?;
        self.rules.push(rule.clone());
        Ok(rule)
    }

    /// Keeps rule `spec` as the config file says: added if no rule has
    /// its name, replaced if one differs.
    pub fn ensure_rule(&mut self, spec: &RuleSpec) -> Result<Rule, HubError> {
        let wanted = spec.rule().map_err(HubError::Invalid)?;
        if let Some(kept) = self.rules.iter().find(|r| r.name == wanted.name) {
            if (Rule {
                id: kept.id,
                ..wanted.clone()
            }) == *kept
            {
                return Ok(kept.clone());
            }
            let id = kept.id;
            self.remove_rule(id)?;
        }
        self.add_rule(spec)
    }

    /// Removes rule `id`; false if there is none.
    pub fn remove_rule(&mut self, id: i64) -> Result<bool, HubError> {
        let removed = self.store.remove_rule(id)?;
        self.rules.retain(|r| r.id != id);
        Ok(removed)
    }

    /// Limits each device to `rate` from now on (`None`: no limit).
    pub fn limit_rate(&mut self, rate: Option<Rate>) {
        self.throttle = Throttle::new(rate);
    }

    /// The rules it runs.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Judges the rules that watch `device` on a block it stored: each
    /// channel's readings with the stored ones around them (a rule's time
    /// either side), so a late block counts where it belongs. A run held
    /// long enough that did not fire before fires now.
    fn judge(&mut self, device: u64, readings: &[telemark_server::TimedReading], now_ms: i64) {
        let watching: Vec<Rule> = self
            .rules
            .iter()
            .filter(|r| r.device == device)
            .cloned()
            .collect();
        for rule in watching {
            let times = readings
                .iter()
                .filter(|t| t.reading.channel.0 == rule.channel)
                .filter_map(|t| t.unix_ms);
            let (Some(first), Some(last)) = (times.clone().min(), times.max()) else {
                continue;
            };
            let span = i64::try_from(rule.for_ms).unwrap_or(i64::MAX);
            let query = ReadingQuery {
                device,
                channel: Some(rule.channel),
                from_ms: first.saturating_sub(span),
                to_ms: last.saturating_add(span).saturating_add(1),
            };
            let around: Vec<(i64, f64)> = match self.store.readings(&query) {
                Ok(stored) => stored.iter().map(|r| (r.unix_ms, r.value)).collect(),
                Err(e) => {
                    tracing::warn!(rule = %rule.name, error = %e, "rule: readings not read");
                    continue;
                }
            };
            for (start, end) in rule.firing_runs(&around) {
                match self.store.rule_run(rule.id, start, end, now_ms) {
                    Ok(true) => self.fire(&rule, start, end, now_ms),
                    Ok(false) => {}
                    Err(e) => tracing::warn!(rule = %rule.name, error = %e, "rule: run not kept"),
                }
            }
        }
    }

    /// Carries out `rule`, which held from `start` to `end`.
    fn fire(&mut self, rule: &Rule, start: i64, end: i64, now_ms: i64) {
        let (op, threshold) = rule.condition_columns();
        let detail = format!(
            "rule {:?}: channel {} {op} {threshold} from {start} to {end} (Unix ms), {} s; \
             {:?} to device {}",
            rule.name,
            rule.channel,
            (end - start) / 1000,
            rule.command,
            rule.target
        );
        let queued = self.queue_command_at(rule.target, rule.command, now_ms, self.command_ttl_ms);
        let detail = match queued {
            Ok(id) => format!("{detail} (command {id})"),
            Err(e) => format!("{detail}, not queued: {e}"),
        };
        if let Err(e) = self.store.add_event(rule.device, "rule", now_ms, &detail) {
            tracing::warn!(device = rule.device, %detail, error = %e, "rule event not kept");
        }
        self.notify(
            now_ms,
            serde_json::json!({
                "type": "rule",
                "device": rule.device,
                "unix_ms": now_ms,
                "rule": rule.name,
                "from_ms": start,
                "to_ms": end,
                "detail": detail,
            }),
        );
    }

    /// Keeps notifications for their sinks ([`crate::notify`]) from now
    /// on: alerts, command results, devices offline and recovered.
    pub fn keep_notifications(&mut self, on: bool) {
        self.notifying = on;
    }

    /// Keeps a notification, if they are kept. One the store cannot keep
    /// is logged and lost: what it tells is stored all the same.
    fn notify(&mut self, unix_ms: i64, body: serde_json::Value) {
        if !self.notifying {
            return;
        }
        if let Err(e) = self.store.add_notification(unix_ms, &body.to_string()) {
            tracing::warn!(%body, error = %e, "notification not kept");
        }
    }

    /// True if `device` is held offline (silent too long, not heard since).
    pub fn is_offline(&self, device: u64) -> bool {
        self.silence.is_offline(device)
    }

    /// Takes no frame from now on (the service is stopping): each is
    /// answered as not stored, and its device sends it again later.
    pub fn close(&mut self) {
        self.closed = true;
    }

    /// Calls `f` with each record once it is stored (after the commit):
    /// the device, the record's epoch and sequence number, and what it
    /// held. Records received again are not shown again.
    /// Each call adds a watcher.
    pub fn watch(&mut self, f: impl FnMut(u64, Epoch, Seq, &Stored) + Send + 'static) {
        self.watch.push(Box::new(f));
    }

    /// What the hub stored and refused so far (committed work only).
    pub fn counters(&self) -> Counters {
        self.server.counters()
    }

    /// Ingest figures besides the counters.
    pub fn figures(&self) -> Figures {
        self.figures
    }

    /// The store, for queries.
    pub fn store(&mut self) -> &mut dyn CloudStore {
        self.store.as_mut()
    }

    /// Adds a device named `name` with a new random key (id 1), at
    /// `now_ms`; returns what its firmware needs.
    pub fn add_device(&mut self, name: &str, now_ms: i64) -> Result<Provisioned, HubError> {
        self.add_device_in(name, None, now_ms)
    }

    /// [`Hub::add_device`] into `group` (which must exist).
    pub fn add_device_in(
        &mut self,
        name: &str,
        group: Option<i64>,
        now_ms: i64,
    ) -> Result<Provisioned, HubError> {
        let name = crate::name_of(name).ok_or(HubError::Invalid(
            "a device name is 1 to 64 printable characters".into(),
        ))?;
        let key = Key::from_bytes(random()?);
        // Ids below 2^53 stay exact in JSON numbers (and in JavaScript).
        let id = u64::from_le_bytes(random()?) & ((1 << 53) - 1);
        let device = Device {
            id: id.max(1),
            name: name.to_string(),
            created_ms: now_ms,
            revoked_ms: None,
            last_seen_ms: None,
            group,
            offline_ms: None,
        };
        let k = DeviceKey {
            device: device.id,
            id: 1,
            key: key.clone(),
        };
        self.store.add_device(&device, &k)?;
        self.server.keyring_mut().insert(device.id, 1, key.clone());
        Ok(Provisioned {
            device,
            key_id: 1,
            key,
        })
    }

    /// Accepts key `id` of `device` (a keys file, the command line),
    /// adding the device as `device-ID` if it is not known.
    pub fn import_key(
        &mut self,
        device: u64,
        id: u8,
        key: Key,
        now_ms: i64,
    ) -> Result<(), HubError> {
        let k = DeviceKey {
            device,
            id,
            key: key.clone(),
        };
        if self.store.device(device)?.is_none() {
            let d = Device {
                id: device,
                name: format!("device-{device}"),
                created_ms: now_ms,
                revoked_ms: None,
                last_seen_ms: None,
                group: None,
                offline_ms: None,
            };
            self.store.add_device(&d, &k)?;
        } else {
            self.store.add_key(&k)?;
        }
        self.server.keyring_mut().insert(device, id, key);
        Ok(())
    }

    /// Accepts frames from `device` without a seal: for a bench only, and
    /// the device must be built for it too. Not kept in the store.
    pub fn allow_unauthenticated(&mut self, device: u64) {
        self.unauthenticated.push(device);
        self.server.keyring_mut().allow_unauthenticated(device);
    }

    /// Revokes `device`: its frames are refused from now on.
    pub fn revoke(&mut self, device: u64, now_ms: i64) -> Result<(), HubError> {
        if !self.store.revoke(device, now_ms)? {
            return Err(HubError::UnknownDevice(device));
        }
        self.server.keyring_mut().remove_device(device);
        Ok(())
    }

    /// A known device, revoked or not.
    pub fn known(&mut self, device: u64) -> Result<Device, HubError> {
        self.store
            .device(device)?
            .ok_or(HubError::UnknownDevice(device))
    }

    /// A known device that is not revoked.
    fn live(&mut self, device: u64) -> Result<Device, HubError> {
        match self.known(device)? {
            d if d.revoked_ms.is_some() => Err(HubError::Revoked(device)),
            d => Ok(d),
        }
    }

    /// Sets the config `device` should run: a CBOR update, sent with every
    /// response until the device reports it applied or refused. Returns
    /// its version.
    ///
    /// It is checked first by the core's own validator
    /// ([`ConfigUpdate::parse`], then [`ConfigUpdate::check`]): an update
    /// it refuses the device would refuse with the same [`ConfigError`].
    /// Once the device has reported its channels, the update's channels
    /// are checked against them too ([`ConfigUpdate::check_channels`]).
    /// What depends on the config the device runs is the device's to
    /// refuse, and comes back in its config report.
    pub fn queue_config(&mut self, device: u64, cbor: &[u8]) -> Result<u32, HubError> {
        self.live(device)?;
        let update = ConfigUpdate::parse(cbor)
            .and_then(|u| u.check().map(|()| u))
            .map_err(HubError::Config)?;
        // Against its channels, once it has reported them.
        let channels = self.store.channels(device)?;
        if !channels.is_empty() {
            let kind_of = |c: ChannelId| {
                channels
                    .iter()
                    .find(|row| row.channel == c.0)
                    .map(|row| row.kind)
            };
            update.check_channels(kind_of).map_err(HubError::Config)?;
        }
        let version = update.version();
        if let Some(current) = self.store.desired_config(device)? {
            if version <= current.version {
                return Err(HubError::Config(ConfigError::StaleVersion));
            }
        }
        self.store.set_config(device, version, cbor)?;
        self.silence.config_changed(device);
        Ok(version)
    }

    /// How long commands are sent unanswered before they expire, unless
    /// queued with a time of their own; `None`: never.
    pub fn set_command_ttl(&mut self, ttl_ms: Option<u64>) {
        self.command_ttl_ms = ttl_ms;
    }

    /// The service's command time ([`Hub::set_command_ttl`]).
    pub fn command_ttl(&self) -> Option<u64> {
        self.command_ttl_ms
    }

    /// Queues a command for `device` now, sent until its result comes
    /// back or the service's command time runs out; returns its id (one
    /// above the device's last).
    pub fn queue_command(&mut self, device: u64, command: Command) -> Result<u32, HubError> {
        let now = i64::try_from(crate::unix_ms()).unwrap_or(i64::MAX);
        self.queue_command_at(device, command, now, self.command_ttl_ms)
    }

    /// Queues a command for `device` at `now_ms`, sent until its result
    /// comes back or for `ttl_ms` (`None`: until answered); returns its
    /// id.
    pub fn queue_command_at(
        &mut self,
        device: u64,
        command: Command,
        now_ms: i64,
        ttl_ms: Option<u64>,
    ) -> Result<u32, HubError> {
        self.live(device)?;
        let id = self
            .store
            .commands(device)?
            .iter()
            .map(|c| c.id)
            .max()
            .map_or(1, |id| id.wrapping_add(1).max(1));
        let expires = ttl_ms.map(|t| now_ms.saturating_add(i64::try_from(t).unwrap_or(i64::MAX)));
        self.store
            .queue_command_until(device, id, command, now_ms, expires)?;
        Ok(id)
    }

    /// Queues a command of a given id (the id is the caller's: a command
    /// of an id already queued is ignored).
    pub fn queue_command_as(
        &mut self,
        device: u64,
        id: u32,
        command: Command,
    ) -> Result<(), HubError> {
        Ok(self.store.queue_command(device, id, command)?)
    }

    /// Starts moving `device` to key `key` of id `id`: sent with every
    /// response until the device's first frame sealed with it, which
    /// retires its earlier keys (see [`Server::rotate_key`]). The device's
    /// store must keep keys (a flash store): a RAM-store device refuses it
    /// and keeps its key.
    pub fn rotate_key(&mut self, device: u64, id: u8, key: Key) -> Result<(), HubError> {
        self.server
            .rotate_key(&mut self.store, device, id, key)
            .map_err(HubError::Rotate)
    }

    /// Moves `device` to a new random key, of the id after its highest:
    /// the key goes down with every response, sealed with the current
    /// key, until the device's first frame sealed with it (see
    /// [`Hub::rotate_key`]). Returns the new key.
    pub fn rotate(&mut self, device: u64) -> Result<Provisioned, HubError> {
        let d = self.live(device)?;
        let mut ids: Vec<u8> = self
            .store
            .keys()?
            .into_iter()
            .filter(|k| k.device == device)
            .map(|k| k.id)
            .collect();
        if let Some(k) = self.store.outbox(device)?.key {
            ids.push(k.id);
            ids.extend(k.previous.map(|(id, _)| id));
        }
        let id = ids
            .iter()
            .max()
            .map_or(1, |&m| m.checked_add(1).unwrap_or(1));
        let key = Key::from_bytes(random()?);
        self.rotate_key(device, id, key.clone())?;
        Ok(Provisioned {
            device: d,
            key_id: id,
            key,
        })
    }

    /// Takes one frame that arrived at `now_unix_ms`; returns the response
    /// to send back, or nothing if the frame was refused (counted) or
    /// could not be stored (logged: the device sends it again).
    pub fn receive(&mut self, frame: &[u8], now_unix_ms: u64) -> Option<Vec<u8>> {
        self.receive_from(None, frame, now_unix_ms)
    }

    /// [`Hub::receive`] of a frame that arrived on a path that names its
    /// device (an MQTT topic, a client certificate): a frame of another
    /// device is refused and counted.
    pub fn receive_from(
        &mut self,
        device: Option<u64>,
        frame: &[u8],
        now_unix_ms: u64,
    ) -> Option<Vec<u8>> {
        match self.ingest(device, frame, now_unix_ms) {
            Ok(response) => Some(response),
            Err(NotAcknowledged::Unstored(e)) => {
                tracing::warn!(error = %e, "frame not stored, not acknowledged (the device sends it again)");
                None
            }
            Err(_) => None,
        }
    }

    /// [`Hub::receive_from`], saying why a frame got no response.
    pub fn ingest(
        &mut self,
        device: Option<u64>,
        frame: &[u8],
        now_unix_ms: u64,
    ) -> Result<Vec<u8>, NotAcknowledged> {
        let mut answers = self.ingest_group(&[Arrival {
            device,
            frame: frame.to_vec(),
            received_unix_ms: now_unix_ms,
        }]);
        answers
            .pop()
            .unwrap_or(Err(NotAcknowledged::Unstored(StoreError::Failed(
                "no answer".into(),
            ))))
    }

    /// Takes `arrivals` in order and commits them together (see the
    /// module docs): an answer for each, in the same order.
    pub fn ingest_group(&mut self, arrivals: &[Arrival]) -> Vec<Result<Vec<u8>, NotAcknowledged>> {
        if self.closed {
            let stopping = StoreError::Unavailable("the service is stopping".into());
            return arrivals
                .iter()
                .map(|_| Err(NotAcknowledged::Unstored(stopping.clone())))
                .collect();
        }
        let mut answers: Vec<Option<Result<Vec<u8>, NotAcknowledged>>> = Vec::new();
        let mut frames: Vec<(&[u8], u64)> = Vec::new();
        // The device each frame took a token of, if any.
        let mut takers: Vec<Option<u64>> = Vec::new();
        for a in arrivals {
            let named = Header::parse(&a.frame).map(|(h, _)| h.device).ok();
            if let Some(expected) = a.device {
                if named != Some(expected) {
                    self.figures.wrong_device += 1;
                    answers.push(Some(Err(NotAcknowledged::WrongDevice { expected, named })));
                    continue;
                }
            }
            // Only a known device has a bucket, and only when there is a limit.
            let known = named
                .filter(|&d| self.throttle.limits() && self.server.keyring().device(d).is_some());
            if let Some(device) = known {
                if let Err(retry_after_ms) = self.throttle.take(device, a.received_unix_ms) {
                    self.figures.throttled += 1;
                    answers.push(Some(Err(NotAcknowledged::Throttled { retry_after_ms })));
                    continue;
                }
            }
            answers.push(None);
            frames.push((&a.frame, a.received_unix_ms));
            takers.push(known);
        }
        if let Some(&(_, now)) = frames.last() {
            self.refresh_keys(now);
        }
        let started = Instant::now();
        let mut results = match self.server.receive_group(&mut self.store, &frames) {
            Ok(results) => results.into_iter(),
            Err(e) => {
                return answers
                    .into_iter()
                    .map(|a| a.unwrap_or_else(|| Err(NotAcknowledged::Unstored(e.clone()))))
                    .collect();
            }
        };
        if !frames.is_empty() {
            self.time_commit(started.elapsed().as_secs_f64());
        }
        let mut heard: Vec<u64> = results
            .as_slice()
            .iter()
            .filter_map(|r| r.as_ref().ok().map(|r| r.batch.device))
            .collect();
        heard.sort_unstable();
        heard.dedup();
        if let Err(e) = self.silence.refresh(self.store.as_mut(), &heard) {
            tracing::warn!(error = %e, "offline marks not read; devices heard stay as marked");
        }
        let mut times = frames.iter().map(|&(_, t)| t);
        let mut takers = takers.into_iter();
        answers
            .into_iter()
            .map(|a| match a {
                Some(answer) => answer,
                None => match (results.next(), times.next(), takers.next().flatten()) {
                    (Some(Ok(received)), Some(t), _) => {
                        self.show(&received);
                        self.heard(received.batch.device, t);
                        self.note_sent(received.batch.device, &received.sent.commands, t);
                        Ok(received.response)
                    }
                    (Some(Err(r)), _, taker) => {
                        // A frame that only claims to be the device.
                        if let Some(device) = taker {
                            self.throttle.give_back(device);
                        }
                        Err(NotAcknowledged::Refused(r))
                    }
                    (Some(Ok(_)), None, _) | (None, _, _) => Err(NotAcknowledged::Unstored(
                        StoreError::Failed("no answer".into()),
                    )),
                },
            })
            .collect()
    }

    /// `device` was heard at `now_ms`: an offline device has recovered.
    /// A store that cannot keep that now keeps the device offline, and
    /// the next frame tries again.
    fn heard(&mut self, device: u64, now_ms: u64) {
        match self.silence.heard(self.store.as_mut(), device, now_ms) {
            Ok(Some(detail)) => {
                let now = i64::try_from(now_ms).unwrap_or(i64::MAX);
                self.notify(now, notify::of_event(device, "recovered", now, &detail));
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(device, error = %e, "heard again, not marked recovered"),
        }
    }

    /// A response carried `commands` of `device` down at `now_ms`. A
    /// store that cannot note it now shows them queued a while longer.
    fn note_sent(&mut self, device: u64, commands: &[u32], now_ms: u64) {
        if commands.is_empty() {
            return;
        }
        let now = i64::try_from(now_ms).unwrap_or(i64::MAX);
        if let Err(e) = self.store.commands_sent(device, commands, now) {
            tracing::warn!(device, ?commands, error = %e, "commands sent, not noted");
        }
    }

    /// Shows the watcher what `received` stored, and notifies what is
    /// worth it.
    fn show(&mut self, received: &Received) {
        let device = received.batch.device;
        let at = i64::try_from(received.batch.received_unix_ms).unwrap_or(i64::MAX);
        for r in &received.batch.records {
            if let Some(body) = notify::of_record(device, at, &r.contents) {
                self.notify(at, body);
            }
            if let Contents::Readings(readings) = &r.contents {
                self.judge(device, readings, at);
            }
        }
        if self.watch.is_empty() {
            return;
        }
        for r in &received.batch.records {
            let stored = match &r.contents {
                Contents::Readings(v) => Stored::Readings(v.clone()),
                Contents::Report { report, .. } => Stored::Report(*report),
                Contents::Unknown => Stored::Undecodable,
            };
            for watch in &mut self.watch {
                watch(received.batch.device, r.epoch, r.seq, &stored);
            }
        }
    }

    /// Runs the hub on a thread of its own, until every handle is dropped
    /// and what they sent is done; the thread then hands the hub back.
    /// Fails only if the operating system gives no thread.
    pub fn spawn(self) -> std::io::Result<(HubHandle, std::thread::JoinHandle<Hub>)> {
        let (jobs, queue) = mpsc::sync_channel(QUEUE);
        let thread = std::thread::Builder::new()
            .name("telemark-hub".into())
            .spawn(move || self.serve(&queue))?;
        Ok((
            HubHandle {
                jobs,
                cluster: None,
            },
            thread,
        ))
    }

    /// The hub's thread: jobs in arrival order, the frames that wait
    /// together taken as one group.
    fn serve(mut self, queue: &mpsc::Receiver<Job>) -> Hub {
        let wait = std::time::Duration::from_millis(self.silence.rule().period_ms());
        let mut next = None;
        loop {
            let job = match next.take() {
                Some(job) => job,
                None => match queue.recv_timeout(wait) {
                    Ok(job) => job,
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        self.tick();
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                },
            };
            match job {
                Job::Run(f) => f(&mut self),
                Job::Frame(first, reply) => {
                    let mut arrivals = vec![first];
                    let mut replies = vec![reply];
                    while arrivals.len() < MAX_GROUP {
                        match queue.try_recv() {
                            Ok(Job::Frame(a, r)) => {
                                arrivals.push(a);
                                replies.push(r);
                            }
                            Ok(other) => {
                                next = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    let answers = self.ingest_group(&arrivals);
                    for (reply, answer) in replies.into_iter().zip(answers) {
                        // A listener that went away takes no answer.
                        let _ = reply.send(answer);
                    }
                }
            }
            self.tick();
        }
        self
    }

    /// Expires commands and looks for silent devices, as often as the
    /// silence rule says (every 10 s with it off).
    fn tick(&mut self) {
        let now = crate::unix_ms();
        let period = self.silence.rule().period_ms();
        if self.closed || now.saturating_sub(self.housekept_ms) < period {
            return;
        }
        self.housekept_ms = now;
        self.throttle.prune(now);
        if self.shared {
            // Keys and rules another instance changed, even while no
            // frame comes.
            self.refresh_keys(now);
            if !self.leads() {
                return;
            }
        }
        if let Err(e) = self.expire_commands(now) {
            tracing::warn!(error = %e, "commands not expired");
        }
        // A group may set intervals of its own where the service's are 0.
        if let Err(e) = self.check_silence(now) {
            tracing::warn!(error = %e, "silent devices not looked for");
        }
    }

    /// Expires every unanswered command past its time at `now_ms`; they
    /// are no longer sent. Returns how many.
    pub fn expire_commands(&mut self, now_ms: u64) -> Result<u64, HubError> {
        let now = i64::try_from(now_ms).unwrap_or(i64::MAX);
        Ok(self.store.expire_commands(now)?)
    }

    /// Reloads the keyring from the store every [`KEY_REFRESH_MS`], so
    /// that devices another process added (`telemark-cloud device add`)
    /// are served, and devices it revoked refused, within that time.
    fn refresh_keys(&mut self, now_unix_ms: u64) {
        if now_unix_ms.saturating_sub(self.keys_loaded_ms) < KEY_REFRESH_MS {
            return;
        }
        // A store that cannot be read now keeps the keyring as it is.
        let Ok(keys) = self.store.keys() else {
            return;
        };
        let mut keyring = Keyring::new();
        for k in keys {
            keyring.insert(k.device, k.id, k.key);
        }
        for &device in &self.unauthenticated {
            keyring.allow_unauthenticated(device);
        }
        if self.shared {
            match self.store.rules() {
                Ok(rules) => self.rules = rules,
                Err(e) => tracing::warn!(error = %e, "rules not read again"),
            }
        }
        *self.server.keyring_mut() = keyring;
        self.keys_loaded_ms = now_unix_ms;
    }

    fn time_commit(&mut self, seconds: f64) {
        let f = &mut self.figures;
        f.commits += 1;
        f.commit_seconds += seconds;
        let bucket = COMMIT_BOUNDS
            .iter()
            .position(|&b| seconds <= b)
            .unwrap_or(COMMIT_BOUNDS.len());
        if let Some(n) = f.commit_buckets.get_mut(bucket) {
            *n += 1;
        }
    }
}

/// Bytes from the operating system's random source.
fn random<const N: usize>() -> Result<[u8; N], HubError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| HubError::Invalid(format!("no random source: {e}")))?;
    Ok(bytes)
}
