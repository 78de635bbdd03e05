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

use crate::config::DeviceConfig;
use crate::model::Severity;

#[cfg(feature = "flash")]
pub mod flash;
mod ram;
mod ring;

#[cfg(feature = "flash")]
pub use flash::{
    Blocking, FlashError, FlashLayout, FlashStore, LayoutError, Mount, SimFlash, SimFlashError,
    FLASH_RECORD_HEADER,
};

pub use ram::{RamStore, RAM_STORE_STATE_BYTES};
pub use ring::{RecordRing, MAX_PAYLOAD, MAX_READINGS, RECORD_OVERHEAD, RING_STATE_BYTES};

/// A record's sequence number: assigned on push, strictly increasing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Seq(pub u32);

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// An inclusive range of sequence numbers, as carried by acknowledgements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SeqRange {
    /// First sequence number in the range.
    pub first: Seq,
    /// Last sequence number in the range (inclusive).
    pub last: Seq,
}

impl SeqRange {
    /// `first..=last`.
    pub const fn new(first: Seq, last: Seq) -> Self {
        SeqRange { first, last }
    }

    /// Just `seq`.
    pub const fn single(seq: Seq) -> Self {
        SeqRange {
            first: seq,
            last: seq,
        }
    }

    /// True if `seq` is in the range.
    pub const fn contains(&self, seq: Seq) -> bool {
        self.first.0 <= seq.0 && seq.0 <= self.last.0
    }
}

/// Which lane a record travels in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Lane {
    /// Reserved capacity, sent first, never evicted by routine data.
    Alert,
    /// Sealed blocks of routine readings.
    Routine,
}

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

/// What the store needs to know about a record besides its payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct RecordMeta {
    /// The lane.
    pub lane: Lane,
    /// Ordering within the alert lane; ignored by the routine lane.
    pub severity: Severity,
    /// Readings (or alerts) the payload holds, for loss accounting.
    pub readings: u16,
    /// The block was decimated to save space.
    pub decimated: bool,
}

impl RecordMeta {
    /// A routine block of `readings` readings.
    pub const fn routine(readings: u16) -> Self {
        RecordMeta {
            lane: Lane::Routine,
            severity: Severity::Info,
            readings,
            decimated: false,
        }
    }

    /// An alert record holding `alerts` alerts of the given severity.
    pub const fn alert(severity: Severity, alerts: u16) -> Self {
        RecordMeta {
            lane: Lane::Alert,
            severity,
            readings: alerts,
            decimated: false,
        }
    }
}

/// A stored record, borrowed from the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Record<'a> {
    /// Sequence number.
    pub seq: Seq,
    /// What was pushed with it.
    pub meta: RecordMeta,
    /// The payload, exactly as pushed.
    pub payload: &'a [u8],
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

    /// Frees every stored record whose sequence number is in `range`.
    ///
    /// Unknown or already-freed numbers are ignored, so duplicate
    /// acknowledgements are harmless.
    fn ack(&mut self, range: SeqRange) -> Result<Acked, Self::Error>;

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

    /// The oldest routine record not yet decimated, if the store can
    /// replace it in place.
    fn oldest_undecimated(&mut self) -> Result<Option<Record<'_>>, Self::Error>;

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

    /// Saves the config in force so that [`RecordStore::load_config`]
    /// returns it after a reboot; a torn save leaves the previous one.
    ///
    /// A store that keeps nothing across a reboot, like [`RamStore`],
    /// accepts and forgets it.
    fn save_config<const CH: usize>(
        &mut self,
        config: &DeviceConfig<CH>,
    ) -> Result<(), SaveError<Self::Error>> {
        let _ = config;
        Ok(())
    }

    /// The config saved last, applied over the firmware's `defaults`;
    /// `None` if there is none.
    fn load_config<const CH: usize>(
        &mut self,
        defaults: &DeviceConfig<CH>,
    ) -> Result<Option<DeviceConfig<CH>>, LoadError<Self::Error>> {
        let _ = defaults;
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

    fn ack(&mut self, range: SeqRange) -> Result<Acked, Self::Error> {
        (**self).ack(range)
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

    fn oldest_undecimated(&mut self) -> Result<Option<Record<'_>>, Self::Error> {
        (**self).oldest_undecimated()
    }

    fn replace_decimated(
        &mut self,
        seq: Seq,
        payload: &[u8],
        readings: u16,
    ) -> Result<bool, Self::Error> {
        (**self).replace_decimated(seq, payload, readings)
    }

    fn save_config<const CH: usize>(
        &mut self,
        config: &DeviceConfig<CH>,
    ) -> Result<(), SaveError<Self::Error>> {
        (**self).save_config(config)
    }

    fn load_config<const CH: usize>(
        &mut self,
        defaults: &DeviceConfig<CH>,
    ) -> Result<Option<DeviceConfig<CH>>, LoadError<Self::Error>> {
        (**self).load_config(defaults)
    }
}

/// Why a config could not be saved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum SaveError<E> {
    /// The encoded config is larger than the store's buffer.
    TooLarge,
    /// The storage backend failed.
    Backend(E),
}

/// Why a saved config could not be loaded; the defaults stay in force.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum LoadError<E> {
    /// The saved config does not apply to this firmware's defaults (a
    /// channel it names is gone, say).
    Config(crate::config::ConfigError),
    /// The storage backend failed.
    Backend(E),
}
