//! What the host stores, behind one trait: records keyed by (device,
//! epoch, seq), conflicts, the replay window and time anchor of each boot,
//! and the outbox.
//!
//! A host's [`Store::commit`] writes a whole [`Batch`] in one transaction
//! and only then hands back the [`Committed`] token; the server builds an
//! acknowledgement only from that token, so nothing is acknowledged that
//! is not stored. Every backend runs [`crate::conformance`].

use telemark_core::model::{Reading, Severity};
use telemark_core::wire::frame::Command;
use telemark_core::wire::report::Report;
use telemark_core::wire::seal::Key;
use telemark_core::wire::{Epoch, Lane, Seq, SeqRange};

use crate::outbox::{Outbox, OutboxChange};

/// Frame counters a replay window remembers below the highest one.
pub const REPLAY_WINDOW: u32 = 64;

/// What the server keeps of one boot of one device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EpochState {
    /// The highest frame counter accepted (0: none yet).
    pub highest: u32,
    /// Counters accepted below it: bit `i` is counter `highest - 1 - i`.
    pub seen: u64,
    /// Unix ms at the device's uptime zero in this boot, as measured by
    /// the last frame (its receive time less its uptime when sent).
    pub anchor_unix_ms: Option<i64>,
}

impl EpochState {
    /// True if frame `counter` is new: above the highest, or within the
    /// window and not seen.
    pub fn accepts(&self, counter: u32) -> bool {
        if counter > self.highest {
            return true;
        }
        let back = self.highest - counter;
        (1..=REPLAY_WINDOW).contains(&back) && self.seen & (1 << (back - 1)) == 0
    }

    /// Marks frame `counter` as accepted.
    pub fn accept(&mut self, counter: u32) {
        if counter > self.highest {
            let shift = counter - self.highest;
            self.seen = if shift > REPLAY_WINDOW {
                0
            } else {
                // The old highest becomes bit `shift - 1`.
                let moved = self.seen.checked_shl(shift).unwrap_or(0);
                if self.highest > 0 {
                    moved | 1u64.checked_shl(shift - 1).unwrap_or(0)
                } else {
                    moved
                }
            };
            self.highest = counter;
        } else if let Some(back) = self.highest.checked_sub(counter).filter(|&b| b >= 1) {
            self.seen |= 1u64.checked_shl(back - 1).unwrap_or(0);
        }
    }

    /// Unix ms of device time `ms` of this boot, if the anchor is known.
    pub fn to_unix(&self, ms: u64) -> Option<i64> {
        self.anchor_unix_ms
            .and_then(|a| a.checked_add(i64::try_from(ms).ok()?))
    }
}

/// One record's name, for ever.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordKey {
    /// The device.
    pub device: u64,
    /// The boot epoch that numbered it.
    pub epoch: Epoch,
    /// Its sequence number.
    pub seq: Seq,
}

/// A reading with its time on the server's clock.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TimedReading {
    /// The reading, its time in device uptime.
    pub reading: Reading,
    /// Its time in Unix ms, if the boot that took it is anchored.
    pub unix_ms: Option<i64>,
}

/// What a new record holds, decoded.
#[derive(Clone, Debug, PartialEq)]
pub enum Contents {
    /// A block of readings.
    Readings(Vec<TimedReading>),
    /// An alert, a heartbeat, a config status, a command result, a crash.
    Report {
        /// The report.
        report: Report,
        /// When it happened (an alert, a heartbeat) in Unix ms, if known.
        unix_ms: Option<i64>,
    },
    /// An alert-lane payload that is no report this build knows: kept
    /// raw, acknowledged, nothing lost.
    Unknown,
}

/// A record the store does not hold yet.
#[derive(Clone, Debug, PartialEq)]
pub struct NewRecord {
    /// The epoch that numbered it.
    pub epoch: Epoch,
    /// Its sequence number.
    pub seq: Seq,
    /// Its lane.
    pub lane: Lane,
    /// Its severity (alert lane).
    pub severity: Severity,
    /// The block was decimated on the device.
    pub decimated: bool,
    /// Readings (or reports) it declared.
    pub declared: u16,
    /// The payload, as sent.
    pub payload: Vec<u8>,
    /// The payload, decoded.
    pub contents: Contents,
}

/// A record whose name the store already holds with another payload: it
/// is kept beside the first, counted, and reported, never dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    /// The epoch named.
    pub epoch: Epoch,
    /// The sequence number named.
    pub seq: Seq,
    /// The payload that differs from the stored one.
    pub payload: Vec<u8>,
}

/// The answer to build once the batch is committed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PendingResponse {
    pub(crate) counter: u32,
    pub(crate) key_id: u8,
    pub(crate) unauthenticated: bool,
    pub(crate) ranges: Vec<SeqRange>,
}

/// Everything one records frame changes, to be written in one transaction.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// The device.
    pub device: u64,
    /// The epoch of the frame.
    pub epoch: Epoch,
    /// The frame's counter.
    pub counter: u32,
    /// The new state of (device, epoch): save it, replacing the old.
    pub state: EpochState,
    /// When the frame arrived, Unix ms.
    pub received_unix_ms: u64,
    /// Records to insert.
    pub records: Vec<NewRecord>,
    /// Conflicting records to keep beside the stored ones.
    pub conflicts: Vec<Conflict>,
    /// Records the store held already, byte for byte (nothing to write).
    pub duplicates: u32,
    /// Outbox entries the frame's reports settled.
    pub outbox: Vec<OutboxChange>,
    pub(crate) response: PendingResponse,
}

impl Batch {
    /// The token of a committed batch. A store calls it once its
    /// transaction has committed, and returns it from [`Store::commit`].
    pub fn committed(&self) -> Committed {
        Committed {
            device: self.device,
            epoch: self.epoch,
            response: self.response.clone(),
        }
    }

    /// Readings in the new records.
    pub fn readings(&self) -> usize {
        self.records
            .iter()
            .map(|r| match &r.contents {
                Contents::Readings(v) => v.len(),
                _ => 0,
            })
            .sum()
    }
}

/// Proof that a batch was committed: the only thing an acknowledgement is
/// built from.
#[derive(Debug, PartialEq, Eq)]
pub struct Committed {
    pub(crate) device: u64,
    pub(crate) epoch: Epoch,
    pub(crate) response: PendingResponse,
}

/// Where the host keeps what the server half decides.
pub trait Store {
    /// Why the backend failed (busy, disk full, connection lost).
    type Error: std::error::Error + Send + Sync + 'static;

    /// The state kept for (device, epoch), if the device was heard in it.
    fn epoch_state(&mut self, device: u64, epoch: Epoch)
        -> Result<Option<EpochState>, Self::Error>;

    /// The payload stored under `key`, if any.
    fn stored_payload(&mut self, key: RecordKey) -> Result<Option<Vec<u8>>, Self::Error>;

    /// The device's outbox.
    fn outbox(&mut self, device: u64) -> Result<Outbox, Self::Error>;

    /// Writes `batch` in one transaction: the new records, the conflicts,
    /// the epoch state and the outbox changes, all or nothing; returns
    /// [`Batch::committed`] only once it is durable.
    fn commit(&mut self, batch: &Batch) -> Result<Committed, Self::Error>;

    /// Opens a group of batches ([`Server::receive_group`]): the batches
    /// [`Store::stage`] writes become durable together, in one
    /// transaction, at [`Store::commit_group`]. By default there is no
    /// group: each staged batch is committed on its own.
    ///
    /// [`Server::receive_group`]: crate::Server::receive_group
    fn begin_group(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }

    /// Writes `batch` into the open group, all of it or none: the reads
    /// that follow see it, and it is durable once [`Store::commit_group`]
    /// returns. By default, [`Store::commit`].
    fn stage(&mut self, batch: &Batch) -> Result<(), Self::Error> {
        self.commit(batch).map(drop)
    }

    /// Holds `device` for the open group: called before the group's
    /// first read of the device's state. A store that servers on several
    /// hosts share (a cluster over one database) locks the device here,
    /// until the group commits or aborts, so that no two change its
    /// replay window or its outbox at once. By default, nothing: one
    /// server alone needs no lock.
    fn claim(&mut self, device: u64) -> Result<(), Self::Error> {
        let _ = device;
        Ok(())
    }

    /// Holds every device of `devices` (ascending, each once) for the
    /// open group, as [`Store::claim`] of each in turn would: called once
    /// a group has begun, with the devices its frames name, before any
    /// read. A store that locks can take them all in one round trip, and
    /// then answer each later [`Store::claim`] of them at once. By
    /// default, [`Store::claim`] of each.
    fn claim_all(&mut self, devices: &[u64]) -> Result<(), Self::Error> {
        devices.iter().try_for_each(|&d| self.claim(d))
    }

    /// Makes every batch staged since [`Store::begin_group`] durable, all
    /// or none.
    fn commit_group(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }

    /// Drops every batch staged since [`Store::begin_group`]; the store is
    /// as it was before it.
    fn abort_group(&mut self) {}

    /// Sets the config `device` should run: `cbor` as version `version`,
    /// sent with each response until the device reports it applied or
    /// refused.
    fn set_config(&mut self, device: u64, version: u32, cbor: &[u8]) -> Result<(), Self::Error>;

    /// Queues a command for `device`, sent with each response until the
    /// device reports its result. A command of an id already queued for
    /// the device replaces nothing and is ignored.
    fn queue_command(&mut self, device: u64, id: u32, command: Command) -> Result<(), Self::Error>;

    /// Sets the key `device` should move to: key `key` of id `id`, sent
    /// (sealed with the device's current key) with each response until a
    /// frame sealed with it arrives, or the device refuses it. It replaces
    /// an earlier rotation, finished or not.
    fn set_key(&mut self, device: u64, id: u8, key: &Key) -> Result<(), Self::Error>;
}
