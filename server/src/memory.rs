//! A store in memory: for the simulator, tests and trials. It can be told
//! to fail, as a busy database or a full disk would.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use telemark_core::wire::frame::Command;
use telemark_core::wire::seal::Key;
use telemark_core::wire::Epoch;

use crate::outbox::{ConfigState, DesiredConfig, Outbox, QueuedCommand};
use crate::store::{Batch, Committed, Conflict, EpochState, NewRecord, RecordKey, Store};

/// The memory store's one failure: it was told to fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unavailable;

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("store unavailable")
    }
}

impl std::error::Error for Unavailable {}

/// What the store holds.
#[derive(Clone, Debug, Default)]
struct Held {
    records: BTreeMap<RecordKey, NewRecord>,
    conflicts: Vec<(u64, Conflict)>,
    epochs: HashMap<(u64, Epoch), EpochState>,
    outboxes: HashMap<u64, Outbox>,
}

/// Everything in memory, in maps. A group ([`Store::begin_group`]) keeps
/// a copy of what was held before it, to go back to if it is aborted.
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    held: Held,
    before_group: Option<Held>,
    failing: bool,
    commits: u64,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        MemoryStore::default()
    }

    /// From now on every call fails (or, with `false`, works again).
    pub fn set_failing(&mut self, failing: bool) {
        self.failing = failing;
    }

    /// The records stored, by key.
    pub fn records(&self) -> &BTreeMap<RecordKey, NewRecord> {
        &self.held.records
    }

    /// The conflicts kept, with their device.
    pub fn conflicts(&self) -> &[(u64, Conflict)] {
        &self.held.conflicts
    }

    /// Transactions committed: each a batch, or a group of them.
    pub fn commits(&self) -> u64 {
        self.commits
    }

    /// Writes `batch`.
    fn write(&mut self, batch: &Batch) {
        for r in &batch.records {
            let key = RecordKey {
                device: batch.device,
                epoch: r.epoch,
                seq: r.seq,
            };
            self.held.records.insert(key, r.clone());
        }
        self.held
            .conflicts
            .extend(batch.conflicts.iter().map(|c| (batch.device, c.clone())));
        self.held
            .epochs
            .insert((batch.device, batch.epoch), batch.state);
        let outbox = self.held.outboxes.entry(batch.device).or_default();
        for change in &batch.outbox {
            outbox.apply(change);
        }
    }

    fn check(&self) -> Result<(), Unavailable> {
        if self.failing {
            Err(Unavailable)
        } else {
            Ok(())
        }
    }
}

impl Store for MemoryStore {
    type Error = Unavailable;

    fn epoch_state(
        &mut self,
        device: u64,
        epoch: Epoch,
    ) -> Result<Option<EpochState>, Unavailable> {
        self.check()?;
        Ok(self.held.epochs.get(&(device, epoch)).copied())
    }

    fn stored_payload(&mut self, key: RecordKey) -> Result<Option<Vec<u8>>, Unavailable> {
        self.check()?;
        Ok(self.held.records.get(&key).map(|r| r.payload.clone()))
    }

    fn outbox(&mut self, device: u64) -> Result<Outbox, Unavailable> {
        self.check()?;
        Ok(self.held.outboxes.get(&device).cloned().unwrap_or_default())
    }

    fn commit(&mut self, batch: &Batch) -> Result<Committed, Unavailable> {
        self.check()?;
        self.write(batch);
        self.commits += 1;
        Ok(batch.committed())
    }

    fn begin_group(&mut self) -> Result<(), Unavailable> {
        self.check()?;
        self.before_group = Some(self.held.clone());
        Ok(())
    }

    fn stage(&mut self, batch: &Batch) -> Result<(), Unavailable> {
        self.check()?;
        self.write(batch);
        Ok(())
    }

    fn commit_group(&mut self) -> Result<(), Unavailable> {
        if let Err(e) = self.check() {
            self.abort_group();
            return Err(e);
        }
        self.before_group = None;
        self.commits += 1;
        Ok(())
    }

    fn abort_group(&mut self) {
        if let Some(before) = self.before_group.take() {
            self.held = before;
        }
    }

    fn set_config(&mut self, device: u64, version: u32, cbor: &[u8]) -> Result<(), Unavailable> {
        self.check()?;
        self.held.outboxes.entry(device).or_default().config = Some(DesiredConfig {
            version,
            cbor: cbor.to_vec(),
            state: ConfigState::Pending,
        });
        Ok(())
    }

    fn queue_command(&mut self, device: u64, id: u32, command: Command) -> Result<(), Unavailable> {
        self.check()?;
        let outbox = self.held.outboxes.entry(device).or_default();
        if !outbox.commands.iter().any(|c| c.id == id) {
            outbox.commands.push(QueuedCommand {
                id,
                command,
                result: None,
            });
        }
        Ok(())
    }

    fn set_key(&mut self, device: u64, id: u8, key: &Key) -> Result<(), Unavailable> {
        self.check()?;
        self.held
            .outboxes
            .entry(device)
            .or_default()
            .rotate(id, key.clone());
        Ok(())
    }
}
