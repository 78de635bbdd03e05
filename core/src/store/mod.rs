//! Where sealed blocks and alerts wait until the server acknowledges them.
//!
//! A record is an opaque payload (a sealed block, an encoded alert) with a
//! sequence number the store assigns. Sequence numbers are `u32`, strictly
//! increasing, shared by both lanes, and never reused.
//!
//! Records live in two lanes:
//!
//! - the **alert lane** has its own reserved capacity, so routine data can
//!   never evict an alert; its records come out most severe first, then oldest
//!   first;
//! - the **routine lane** is a ring; when it is full the configured
//!   [`FullPolicy`] either refuses the new record or evicts the oldest.
//!
//! A record leaves the store only when acknowledged ([`RecordStore::ack`]) or
//! evicted by policy, and every eviction and refusal is counted, in records
//! and in readings ([`LaneCounters`]).
//!
//! [`RamStore`] keeps both lanes in RAM with capacities fixed at compile
//! time; `FlashStore` (feature `flash`) keeps them in NOR flash, where they
//! survive power cuts and reboots.

use core::fmt;

use crate::wire::seal::Key;

#[cfg(feature = "flash")]
pub mod flash;
mod ram;
mod ring;

#[cfg(feature = "flash")]
pub use flash::{
    Blocking, FlashError, FlashLayout, FlashStore, LayoutError, Mount, SimFlash, SimFlashError,
    FLASH_RECORD_HEADER,
};

pub use crate::wire::record::{Epoch, Lane, Record, RecordMeta, Seq, SeqRange};
pub use ram::{RamStore, RAM_STORE_STATE_BYTES};
pub use ring::{RecordRing, MAX_PAYLOAD, MAX_READINGS, RECORD_OVERHEAD, RING_STATE_BYTES};

/// What a lane does when a new record does not fit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum FullPolicy {
    /// Refuse the new record; the caller keeps it and decides.
    #[default]
    Refuse,
    /// Evict the oldest records of the lane until the new one fits.
    EvictOldest,
}

/// Boots kept track of by [`Boots`].
pub const MAX_BOOTS: usize = 8;

/// Which boot epoch numbered which records, for a store whose records
/// survive a reboot: each entry is an epoch and the first sequence number
/// of that boot. A record is named on the wire by the epoch that numbered
/// it, not by the boot that sends it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Boots {
    entries: heapless::Vec<(Epoch, Seq), MAX_BOOTS>,
}

impl Boots {
    /// The epoch that numbered `seq`, if it is one of the boots kept.
    pub fn epoch_of(&self, seq: Seq) -> Option<Epoch> {
        self.entries
            .iter()
            .rev()
            .find(|(_, first)| *first <= seq)
            .map(|(epoch, _)| *epoch)
    }

    /// The boots, oldest first.
    pub fn entries(&self) -> &[(Epoch, Seq)] {
        &self.entries
    }

    /// Starts boot `epoch` at `first`, dropping the older boots that own
    /// no record any more (none numbered from `oldest` on). The store
    /// first evicts the records of the oldest boot when all
    /// [`MAX_BOOTS`] still own some ([`Boots::crowded`]), so every
    /// record is named by the boot that numbered it: a record named by
    /// another boot would have its times read against the wrong uptime.
    #[cfg_attr(not(feature = "flash"), allow(dead_code))]
    pub(crate) fn start(&mut self, epoch: Epoch, first: Seq, oldest: Seq) {
        while self.entries.get(1).is_some_and(|e| e.1 <= oldest) {
            self.entries.remove(0);
        }
        let _ = self.entries.push((epoch, first));
    }

    /// The numbers of the oldest boot's records, when every boot kept
    /// still owns records from `oldest` on and none is left for a new one.
    #[cfg_attr(not(feature = "flash"), allow(dead_code))]
    pub(crate) fn crowded(&self, oldest: Seq) -> Option<SeqRange> {
        let owning = self.entries.iter().skip(1).filter(|e| e.1 > oldest).count() + 1;
        match (
            owning >= MAX_BOOTS,
            self.entries.first(),
            self.entries.get(1),
        ) {
            (true, Some(first), Some(second)) if second.1 .0 > first.1 .0 => {
                Some(SeqRange::new(first.1, Seq(second.1 .0 - 1)))
            }
            _ => None,
        }
    }

    #[cfg_attr(not(feature = "flash"), allow(dead_code))]
    pub(crate) fn from_entries(entries: impl IntoIterator<Item = (Epoch, Seq)>) -> Self {
        Boots {
            entries: entries.into_iter().take(MAX_BOOTS).collect(),
        }
    }
}

/// Why a push was refused. The caller still holds the payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum PushError<E> {
    /// The lane is full and its policy is [`FullPolicy::Refuse`].
    Full,
    /// The record can never fit: larger than the lane, or than [`MAX_PAYLOAD`].
    TooLarge,
    /// More than [`MAX_READINGS`] readings in one record.
    TooManyReadings,
    /// All `u32` sequence numbers are used.
    SequenceExhausted,
    /// The storage backend failed.
    Backend(E),
}

impl<E: fmt::Debug> fmt::Display for PushError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PushError::Full => f.write_str("lane full"),
            PushError::TooLarge => f.write_str("record larger than the lane"),
            PushError::TooManyReadings => f.write_str("too many readings in one record"),
            PushError::SequenceExhausted => f.write_str("sequence numbers exhausted"),
            PushError::Backend(e) => write!(f, "storage backend: {e:?}"),
        }
    }
}

#[cfg(feature = "std")]
impl<E: fmt::Debug> std::error::Error for PushError<E> {}

/// What an acknowledgement freed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Acked {
    /// Records freed.
    pub records: u32,
    /// Readings in them.
    pub readings: u32,
}

/// Counts of what went through one lane. All counters saturate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct LaneCounters {
    /// Records accepted.
    pub pushed_records: u32,
    /// Readings in accepted records.
    pub pushed_readings: u32,
    /// Records freed by acknowledgement.
    pub acked_records: u32,
    /// Readings in acknowledged records.
    pub acked_readings: u32,
    /// Records evicted by policy before being acknowledged.
    pub evicted_records: u32,
    /// Readings in evicted records: data lost, and reported as such.
    pub evicted_readings: u32,
    /// Records refused because the lane was full.
    pub refused_records: u32,
    /// Readings in refused records.
    pub refused_readings: u32,
    /// Readings dropped by decimating blocks to save space.
    pub decimated_readings: u32,
    /// Records the device replaced with newer ones before they were sent
    /// (an unsent heartbeat, when the next is due): no data lost.
    pub superseded_records: u32,
}

/// Counters of both lanes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct StoreCounters {
    /// The alert lane.
    pub alert: LaneCounters,
    /// The routine lane.
    pub routine: LaneCounters,
}

impl StoreCounters {
    /// The counters of `lane`.
    pub fn lane_mut(&mut self, lane: Lane) -> &mut LaneCounters {
        match lane {
            Lane::Alert => &mut self.alert,
            Lane::Routine => &mut self.routine,
        }
    }
}

/// A two-lane store of records awaiting acknowledgement.
///
/// Implemented by [`RamStore`]; the flash store implements it too, so the
/// uplink engine works over either.
pub trait RecordStore {
    /// Errors of the storage medium (`Infallible` for RAM).
    type Error: fmt::Debug;

    /// Stores a record and returns its new sequence number.
    ///
    /// On `Err` nothing was stored; the refusal is counted.
    fn push(&mut self, meta: RecordMeta, payload: &[u8]) -> Result<Seq, PushError<Self::Error>>;

    /// The `nth` unacknowledged record in delivery order: the alert lane by
    /// severity then age, then the routine lane by age. `peek(0)` is next.
    fn peek(&mut self, nth: usize) -> Result<Option<Record<'_>>, Self::Error>;

    /// Shows the unacknowledged records in delivery order, as
    /// [`RecordStore::peek`] numbers them, until `visit` returns false: one
    /// walk through the store, where a `peek` per record may walk it
    /// again each time (as a flash store does). Frames are built with it.
    fn visit(&mut self, mut visit: impl FnMut(&Record<'_>) -> bool) -> Result<(), Self::Error> {
        let mut nth = 0;
        while let Some(record) = self.peek(nth)? {
            if !visit(&record) {
                break;
            }
            nth += 1;
        }
        Ok(())
    }

    /// Frees every stored record whose sequence number is in `range`.
    ///
    /// Unknown or already-freed numbers are ignored, so duplicate
    /// acknowledgements are harmless.
    fn ack(&mut self, range: SeqRange) -> Result<Acked, Self::Error>;

    /// Removes the unacknowledged record `seq`, which the device replaced
    /// before it was sent (an unsent heartbeat, when the next one is due),
    /// and gives its space back. Counted in
    /// [`LaneCounters::superseded_records`], not as lost. False if no such
    /// record is waiting.
    fn discard(&mut self, seq: Seq) -> Result<bool, Self::Error>;

    /// Unacknowledged records in both lanes.
    fn len(&self) -> usize;

    /// True if no record awaits acknowledgement.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of payload plus headers the lane can hold.
    fn capacity(&self, lane: Lane) -> usize;

    /// Largest record, its 8-byte header included, the lane accepts right
    /// now without evicting.
    fn free(&self, lane: Lane) -> usize;

    /// Bytes of the lane in use, headers included.
    fn used(&self, lane: Lane) -> usize;

    /// The sequence number the next push will get.
    fn next_seq(&self) -> Seq;

    /// What went through each lane.
    fn counters(&self) -> StoreCounters;

    /// What the routine lane does when full.
    fn routine_policy(&self) -> FullPolicy;

    /// Changes what the routine lane does when full.
    fn set_routine_policy(&mut self, policy: FullPolicy);

    /// The oldest routine record not yet decimated and not in `skip` (the
    /// records of the frame in flight), if the store can replace it in
    /// place.
    fn oldest_undecimated(&mut self, skip: &[Seq]) -> Result<Option<Record<'_>>, Self::Error>;

    /// Replaces routine record `seq` (as returned by
    /// [`RecordStore::oldest_undecimated`]) with a smaller, decimated payload
    /// of `readings` readings; counts the readings dropped. False if it
    /// could not.
    fn replace_decimated(
        &mut self,
        seq: Seq,
        payload: &[u8],
        readings: u16,
    ) -> Result<bool, Self::Error>;

    /// Which boots numbered the records kept; empty for a store whose
    /// records all come from this boot, like [`RamStore`].
    fn boots(&self) -> Boots {
        Boots::default()
    }

    /// Saves the config in force, as the opaque bytes `encode` writes into
    /// the buffer it is given (returning their length, or `None` if they do
    /// not fit), so that [`RecordStore::load_config`] hands them back after
    /// a reboot; a torn save leaves the previous one.
    ///
    /// A store that keeps nothing across a reboot, like [`RamStore`],
    /// accepts and forgets it: the engine reports its config at every boot,
    /// and the server sends again what the device lost.
    fn save_config<W>(&mut self, encode: W) -> Result<(), SaveError<Self::Error>>
    where
        W: FnOnce(&mut [u8]) -> Option<usize>,
    {
        let _ = encode;
        Ok(())
    }

    /// Hands the config saved last to `decode`, and returns what it made of
    /// it; `None` if there is none.
    fn load_config<T, R>(&mut self, decode: R) -> Result<Option<T>, Self::Error>
    where
        R: FnOnce(&[u8]) -> T,
    {
        let _ = decode;
        Ok(None)
    }

    /// Saves the ids and results of the commands run lately (opaque bytes,
    /// at most [`MAX_COMMANDS_BYTES`]), so that a command the server repeats
    /// after a reboot is answered again, not run again. A store that keeps
    /// nothing across a power cut, like [`RamStore`], forgets them.
    fn save_commands(&mut self, bytes: &[u8]) -> Result<(), SaveError<Self::Error>> {
        let _ = bytes;
        Ok(())
    }

    /// Hands the commands saved last to `decode`, and returns what it made
    /// of them; `None` if there are none.
    fn load_commands<T, R>(&mut self, decode: R) -> Result<Option<T>, Self::Error>
    where
        R: FnOnce(&[u8]) -> T,
    {
        let _ = decode;
        Ok(None)
    }

    /// Saves key `id`, sent by the server to replace the device's key, so
    /// that [`RecordStore::load_key`] returns it after a reboot. A store
    /// that cannot keep it across a power cut, like [`RamStore`], refuses
    /// it ([`SaveError::NotPersistent`]): the device would come back with
    /// the key the server retired.
    fn save_key(&mut self, id: u8, key: &Key) -> Result<(), SaveError<Self::Error>> {
        let _ = (id, key);
        Err(SaveError::NotPersistent)
    }

    /// The key saved last, with its id, if any.
    fn load_key(&mut self) -> Result<Option<(u8, Key)>, Self::Error> {
        Ok(None)
    }
}

/// A store lent to the engine: the store can live in a `static` (in .bss,
/// or in a RAM section of its own) while the engine holds a reference.
impl<S: RecordStore> RecordStore for &mut S {
    type Error = S::Error;

    fn push(&mut self, meta: RecordMeta, payload: &[u8]) -> Result<Seq, PushError<Self::Error>> {
        (**self).push(meta, payload)
    }

    fn peek(&mut self, nth: usize) -> Result<Option<Record<'_>>, Self::Error> {
        (**self).peek(nth)
    }

    fn visit(&mut self, visit: impl FnMut(&Record<'_>) -> bool) -> Result<(), Self::Error> {
        (**self).visit(visit)
    }

    fn ack(&mut self, range: SeqRange) -> Result<Acked, Self::Error> {
        (**self).ack(range)
    }

    fn discard(&mut self, seq: Seq) -> Result<bool, Self::Error> {
        (**self).discard(seq)
    }

    fn len(&self) -> usize {
        (**self).len()
    }

    fn capacity(&self, lane: Lane) -> usize {
        (**self).capacity(lane)
    }

    fn free(&self, lane: Lane) -> usize {
        (**self).free(lane)
    }

    fn used(&self, lane: Lane) -> usize {
        (**self).used(lane)
    }

    fn next_seq(&self) -> Seq {
        (**self).next_seq()
    }

    fn counters(&self) -> StoreCounters {
        (**self).counters()
    }

    fn routine_policy(&self) -> FullPolicy {
        (**self).routine_policy()
    }

    fn set_routine_policy(&mut self, policy: FullPolicy) {
        (**self).set_routine_policy(policy)
    }

    fn oldest_undecimated(&mut self, skip: &[Seq]) -> Result<Option<Record<'_>>, Self::Error> {
        (**self).oldest_undecimated(skip)
    }

    fn replace_decimated(
        &mut self,
        seq: Seq,
        payload: &[u8],
        readings: u16,
    ) -> Result<bool, Self::Error> {
        (**self).replace_decimated(seq, payload, readings)
    }

    fn boots(&self) -> Boots {
        (**self).boots()
    }

    fn save_config<W>(&mut self, encode: W) -> Result<(), SaveError<Self::Error>>
    where
        W: FnOnce(&mut [u8]) -> Option<usize>,
    {
        (**self).save_config(encode)
    }

    fn load_config<T, R>(&mut self, decode: R) -> Result<Option<T>, Self::Error>
    where
        R: FnOnce(&[u8]) -> T,
    {
        (**self).load_config(decode)
    }

    fn save_key(&mut self, id: u8, key: &Key) -> Result<(), SaveError<Self::Error>> {
        (**self).save_key(id, key)
    }

    fn save_commands(&mut self, bytes: &[u8]) -> Result<(), SaveError<Self::Error>> {
        (**self).save_commands(bytes)
    }

    fn load_commands<T, R>(&mut self, decode: R) -> Result<Option<T>, Self::Error>
    where
        R: FnOnce(&[u8]) -> T,
    {
        (**self).load_commands(decode)
    }

    fn load_key(&mut self) -> Result<Option<(u8, Key)>, Self::Error> {
        (**self).load_key()
    }
}

/// Most bytes [`RecordStore::save_commands`] is given.
pub const MAX_COMMANDS_BYTES: usize = 160;

/// Why a config or a key could not be saved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum SaveError<E> {
    /// The encoded config is larger than the store's buffer.
    TooLarge,
    /// The store keeps nothing across a power cut.
    NotPersistent,
    /// The storage backend failed.
    Backend(E),
}
