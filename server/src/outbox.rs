//! What the server wants a device to do: the config it should run and the
//! commands it should execute, each sent with every response until the
//! device's own report settles it.

use telemark_core::wire::frame::{Command, Item};
use telemark_core::wire::report::Report;

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

/// Everything queued for one device.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outbox {
    /// The config it should run, if one was set.
    pub config: Option<DesiredConfig>,
    /// Commands, oldest first.
    pub commands: Vec<QueuedCommand>,
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
        }
    }

    /// What still goes down with every response: a pending config, then
    /// commands without a result, oldest first.
    pub fn pending(&self) -> Vec<Item<'_>> {
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
        config.chain(commands).collect()
    }
}
