//! What the server wants a device to do: the config it should run, the
//! commands it should execute and the key it should move to, each sent
//! with every response until the device settles it: its own report, or (a
//! key) its first frame sealed with the new key.

use telemark_core::wire::frame::{Command, Item};
use telemark_core::wire::report::{KeyStatus, Report};
use telemark_core::wire::seal::Key;

/// Where a desired config stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigState {
    /// Not yet reported by the device: sent with every response.
    Pending,
    /// The device reported this version (or a later one) in force.
    Applied,
    /// The device refused it, with its reason (see
    /// `telemark_core::config::ConfigError::code`); no longer sent.
    Refused {
        /// The refusal code.
        code: u8,
        /// The key or channel it is about.
        detail: u16,
    },
}

/// The config a device should run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredConfig {
    /// Its version.
    pub version: u32,
    /// The update, as CBOR.
    pub cbor: Vec<u8>,
    /// Where it stands.
    pub state: ConfigState,
}

/// A command's result, as the device reported it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommandOutcome {
    /// 0 done, 1 refused.
    pub status: u8,
    /// The result value.
    pub value: u32,
}

/// A command queued for a device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuedCommand {
    /// Its id: the device runs an id once.
    pub id: u32,
    /// What to do.
    pub command: Command,
    /// The device's result, once reported.
    pub result: Option<CommandOutcome>,
}

/// What one response carried of the outbox.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sent {
    /// The config version, if its update went down.
    pub config: Option<u32>,
    /// The ids of the commands that went down.
    pub commands: Vec<u32>,
    /// The id of the key that went down, if one did.
    pub key: Option<u8>,
}

impl Sent {
    /// Notes that `item`, of `outbox`, went down.
    pub fn note(&mut self, item: &Item<'_>, outbox: &Outbox) {
        match item {
            Item::Config(_) => self.config = outbox.config.as_ref().map(|c| c.version),
            Item::Command { id, .. } => self.commands.push(*id),
            Item::Key { id, .. } => self.key = Some(*id),
        }
    }
}

/// A frame sealed with a key the device moved away from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retired;

/// Where a key rotation stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyState {
    /// Sent with every response until a frame sealed with it arrives;
    /// frames under the device's earlier key are still accepted.
    Pending,
    /// A frame sealed with it arrived: it is the device's only key, and
    /// its earlier keys are retired (refused from now on).
    InUse,
    /// The device refused it (a RAM store, a failed save); no longer
    /// sent, and the earlier key stays.
    Refused(KeyStatus),
}

/// The key a device should move to, or moved to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRotation {
    /// Its id, as frames name it.
    pub id: u8,
    /// The key.
    pub key: Key,
    /// Where it stands.
    pub state: KeyState,
    /// The key the device used before, when an earlier rotation gave it
    /// (else the keyring's): accepted until this one is in use.
    pub previous: Option<(u8, Key)>,
}

/// Everything queued for one device.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outbox {
    /// The config it should run, if one was set.
    pub config: Option<DesiredConfig>,
    /// Commands, oldest first.
    pub commands: Vec<QueuedCommand>,
    /// The key it should move to, or moved to, if one was set.
    pub key: Option<KeyRotation>,
}

/// A change a device's report makes to its outbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutboxChange {
    /// The desired config of this version is in force.
    ConfigApplied {
        /// The version.
        version: u32,
    },
    /// The device runs an older version than the desired one it had
    /// applied (it lost it: a RAM store after a power cut): send it again.
    ConfigLost {
        /// The version.
        version: u32,
    },
    /// The desired config of this version was refused.
    ConfigRefused {
        /// The version.
        version: u32,
        /// Why.
        code: u8,
        /// The key or channel it is about.
        detail: u16,
    },
    /// The command of this id ran.
    CommandDone {
        /// The id.
        id: u32,
        /// Its result.
        outcome: CommandOutcome,
    },
    /// A frame sealed with the pending key of this id arrived.
    KeyInUse {
        /// The key's id.
        id: u8,
    },
    /// The device refused the pending key of this id.
    KeyRefused {
        /// The key's id.
        id: u8,
        /// Why.
        status: KeyStatus,
    },
}

impl Outbox {
    /// What `report` settles, if anything.
    pub fn settled_by(&self, report: &Report) -> Option<OutboxChange> {
        match *report {
            Report::ConfigStatus {
                version,
                code,
                detail,
            } => {
                let desired = self.config.as_ref()?;
                if desired.state == ConfigState::Applied && version < desired.version && code == 0 {
                    return Some(OutboxChange::ConfigLost {
                        version: desired.version,
                    });
                }
                if desired.state != ConfigState::Pending {
                    return None;
                }
                if version >= desired.version {
                    // In force, or overtaken by a later one.
                    Some(OutboxChange::ConfigApplied {
                        version: desired.version,
                    })
                } else if code != 0 {
                    Some(OutboxChange::ConfigRefused {
                        version: desired.version,
                        code,
                        detail,
                    })
                } else {
                    None
                }
            }
            Report::KeyStatus { id, status } => {
                let rotation = self.key.as_ref()?;
                (rotation.state == KeyState::Pending
                    && rotation.id == id
                    && status != KeyStatus::InUse)
                    .then_some(OutboxChange::KeyRefused { id, status })
            }
            Report::CommandResult { id, status, value } => self
                .commands
                .iter()
                .find(|c| c.id == id && c.result.is_none())
                .map(|_| OutboxChange::CommandDone {
                    id,
                    outcome: CommandOutcome { status, value },
                }),
            _ => None,
        }
    }

    /// Applies `change`; a store applies the changes of a batch this way
    /// (or with the same rules in its own query language).
    pub fn apply(&mut self, change: &OutboxChange) {
        match *change {
            OutboxChange::ConfigApplied { version } => {
                if let Some(c) = self.config.as_mut().filter(|c| c.version == version) {
                    c.state = ConfigState::Applied;
                }
            }
            OutboxChange::ConfigLost { version } => {
                if let Some(c) = self.config.as_mut().filter(|c| c.version == version) {
                    c.state = ConfigState::Pending;
                }
            }
            OutboxChange::ConfigRefused {
                version,
                code,
                detail,
            } => {
                if let Some(c) = self.config.as_mut().filter(|c| c.version == version) {
                    c.state = ConfigState::Refused { code, detail };
                }
            }
            OutboxChange::CommandDone { id, outcome } => {
                if let Some(c) = self.commands.iter_mut().find(|c| c.id == id) {
                    c.result = Some(outcome);
                }
            }
            OutboxChange::KeyInUse { id } => {
                if let Some(k) = self.key.as_mut().filter(|k| k.id == id) {
                    k.state = KeyState::InUse;
                }
            }
            OutboxChange::KeyRefused { id, status } => {
                if let Some(k) = self.key.as_mut().filter(|k| k.id == id) {
                    k.state = KeyState::Refused(status);
                }
            }
        }
    }

    /// The key a frame naming key `id` is opened with, if a rotation
    /// decides it: the key in use (no other id is accepted once a device
    /// moved to it), the pending one, or the one an earlier rotation gave.
    /// `None` leaves it to the keyring.
    pub fn key_for(&self, id: u8) -> Option<Result<&Key, Retired>> {
        let rotation = self.key.as_ref()?;
        if rotation.state == KeyState::InUse {
            return Some(if rotation.id == id {
                Ok(&rotation.key)
            } else {
                Err(Retired)
            });
        }
        if rotation.state == KeyState::Pending && rotation.id == id {
            return Some(Ok(&rotation.key));
        }
        let (previous, key) = rotation.previous.as_ref()?;
        Some(if *previous == id {
            Ok(key)
        } else {
            Err(Retired)
        })
    }

    /// Starts moving the device to key `id`, replacing an earlier
    /// rotation; the key the device uses now stays accepted until then. A
    /// store's [`crate::Store::set_key`] does this (or the same in its own
    /// query language).
    pub fn rotate(&mut self, id: u8, key: Key) {
        let previous = match self.key.take() {
            Some(r) if r.state == KeyState::InUse => Some((r.id, r.key)),
            Some(r) => r.previous,
            None => None,
        };
        self.key = Some(KeyRotation {
            id,
            key,
            state: KeyState::Pending,
            previous,
        });
    }

    /// The id of the key the device seals with, if a rotation decides it
    /// (else the keyring's).
    pub fn key_in_use(&self) -> Option<u8> {
        let rotation = self.key.as_ref()?;
        if rotation.state == KeyState::InUse {
            Some(rotation.id)
        } else {
            rotation.previous.as_ref().map(|(id, _)| *id)
        }
    }

    /// What still goes down with every response: a pending key, a pending
    /// config, then commands without a result, oldest first.
    pub fn pending(&self) -> Vec<Item<'_>> {
        let key = self
            .key
            .iter()
            .filter(|k| k.state == KeyState::Pending)
            .map(|k| Item::Key {
                id: k.id,
                key: k.key.clone(),
            });
        let config = self
            .config
            .iter()
            .filter(|c| c.state == ConfigState::Pending)
            .map(|c| Item::Config(&c.cbor));
        let commands = self
            .commands
            .iter()
            .filter(|c| c.result.is_none())
            .map(|c| Item::Command {
                id: c.id,
                command: c.command,
            });
        key.chain(config).chain(commands).collect()
    }
}
