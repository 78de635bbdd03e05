//! The hub: the server half of the protocol over the service's store.
//! Every listener (MQTT, serial lines, the API) hands it what arrives;
//! it holds the keyring the store's devices make, and changes both
//! together.
//!
//! A frame is verified, its records stored in one transaction, and only
//! after the commit is the response built: the acknowledgement, and
//! whatever config, commands or key wait for the device. A commit that
//! fails (the database busy, locked by another process, the disk full,
//! PostgreSQL away) acknowledges nothing; the device sends the records
//! again.

use std::fmt;
use std::time::Instant;

use telemark_core::config::{ConfigError, ConfigUpdate};
use telemark_core::model::Reading;
use telemark_core::wire::frame::Command;
use telemark_core::wire::report::Report;
use telemark_core::wire::seal::{Header, Key};
use telemark_core::wire::{Epoch, Seq};
use telemark_server::{Contents, Counters, Keyring, ReceiveError, Refusal, RotateError, Server};

use crate::store::{CloudStore, Device, DeviceKey, StoreError};

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
    /// A block of readings.
    Readings(Vec<Reading>),
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
    /// Commits, and the seconds they took (for the mean).
    pub commits: u64,
    /// Seconds all commits took.
    pub commit_seconds: f64,
    /// Commits by latency: at most 1, 5, 25, 100, 500 ms, and above.
    pub commit_buckets: [u64; 6],
}

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
    watch: Option<Watcher>,
    figures: Figures,
    unauthenticated: Vec<u64>,
    keys_loaded_ms: u64,
}

impl Hub {
    /// A hub over `store`, accepting the keys of its devices that are not
    /// revoked.
    pub fn new(mut store: Box<dyn CloudStore>) -> Result<Hub, StoreError> {
        let mut keyring = Keyring::new();
        for k in store.keys()? {
            keyring.insert(k.device, k.id, k.key);
        }
        Ok(Hub {
            server: Server::new(keyring),
            store,
            watch: None,
            figures: Figures::default(),
            unauthenticated: Vec::new(),
            keys_loaded_ms: 0,
        })
    }

    /// Calls `f` with each record once it is stored (after the commit):
    /// the device, the record's epoch and sequence number, and what it
    /// held. Records received again are not shown again.
    pub fn watch(&mut self, f: impl FnMut(u64, Epoch, Seq, &Stored) + Send + 'static) {
        self.watch = Some(Box::new(f));
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
        let name = name.trim();
        if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
            return Err(HubError::Invalid(
                "a device name is 1 to 64 printable characters".into(),
            ));
        }
        let key = Key::from_bytes(random()?);
        // Ids below 2^53 stay exact in JSON numbers (and in JavaScript).
        let id = u64::from_le_bytes(random()?) & ((1 << 53) - 1);
        let device = Device {
            id: id.max(1),
            name: name.to_string(),
            created_ms: now_ms,
            revoked_ms: None,
            last_seen_ms: None,
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
    pub fn queue_config(&mut self, device: u64, cbor: &[u8]) -> Result<u32, HubError> {
        self.live(device)?;
        let update = ConfigUpdate::parse(cbor).map_err(HubError::Config)?;
        let version = update.version();
        if let Some(current) = self.store.desired_config(device)? {
            if version <= current.version {
                return Err(HubError::Config(ConfigError::StaleVersion));
            }
        }
        self.store.set_config(device, version, cbor)?;
        Ok(version)
    }

    /// Queues a command for `device`, sent until its result comes back;
    /// returns its id (one above the device's last).
    pub fn queue_command(&mut self, device: u64, command: Command) -> Result<u32, HubError> {
        self.live(device)?;
        let id = self
            .store
            .commands(device)?
            .iter()
            .map(|c| c.id)
            .max()
            .map_or(1, |id| id.wrapping_add(1).max(1));
        self.store.queue_command(device, id, command)?;
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
                eprintln!("frame not stored, not acknowledged (the device sends it again): {e}");
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
        if let Some(expected) = device {
            let named = Header::parse(frame).map(|(h, _)| h.device).ok();
            if named != Some(expected) {
                self.figures.wrong_device += 1;
                return Err(NotAcknowledged::WrongDevice { expected, named });
            }
        }
        self.refresh_keys(now_unix_ms);
        let started = Instant::now();
        let received = match self.server.receive(&mut self.store, frame, now_unix_ms) {
            Ok(received) => received,
            Err(ReceiveError::Refused(r)) => return Err(NotAcknowledged::Refused(r)),
            Err(ReceiveError::Store(e)) => return Err(NotAcknowledged::Unstored(e)),
        };
        self.time_commit(started.elapsed().as_secs_f64());
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
        Ok(received.response)
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
