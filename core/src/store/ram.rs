//! Both lanes in RAM, capacities fixed at compile time.

use core::convert::Infallible;

use super::{
    Acked, FullPolicy, Lane, PushError, Record, RecordMeta, RecordRing, RecordStore, Seq, SeqRange,
    StoreCounters,
};
use crate::model::Severity;

/// Bytes of a [`RamStore`] beyond its two capacities (for capacities that
/// are multiples of 4): two ring states and the next sequence number.
pub const RAM_STORE_STATE_BYTES: usize = 2 * super::RING_STATE_BYTES + 4;

/// A two-lane record store in RAM: `ALERT` bytes reserved for alerts,
/// `ROUTINE` bytes for routine blocks. No allocation.
///
/// ```
/// use telemark_core::model::Severity;
/// use telemark_core::store::{FullPolicy, RamStore, RecordMeta, RecordStore, SeqRange};
///
/// let mut store: RamStore<256, 1024> = RamStore::new(FullPolicy::EvictOldest);
/// let block = store.push(RecordMeta::routine(64), b"sealed block").unwrap();
/// let alert = store.push(RecordMeta::alert(Severity::Critical, 1), b"boiler too hot").unwrap();
///
/// // The alert goes first, although it came second.
/// assert_eq!(store.peek(0).unwrap().unwrap().seq, alert);
/// assert_eq!(store.peek(1).unwrap().unwrap().seq, block);
///
/// // The server stored both durably and acknowledged them.
/// let freed = store.ack(SeqRange::new(block, alert)).unwrap();
/// assert_eq!((freed.records, freed.readings), (2, 65));
/// assert!(store.is_empty());
/// ```
#[derive(Clone, Debug)]
pub struct RamStore<const ALERT: usize, const ROUTINE: usize> {
    alert: RecordRing<ALERT>,
    routine: RecordRing<ROUTINE>,
    next_seq: u32,
}

impl<const ALERT: usize, const ROUTINE: usize> RamStore<ALERT, ROUTINE> {
    /// An empty store whose routine lane applies `routine_policy` when full.
    /// The alert lane refuses when full: alerts are never evicted.
    /// Sequence numbers start at 1.
    pub const fn new(routine_policy: FullPolicy) -> Self {
        Self::resume(routine_policy, Seq(1))
    }

    /// An empty store whose first sequence number is `next`: for a device
    /// that persisted its counter and must not reuse numbers after a reboot.
    pub const fn resume(routine_policy: FullPolicy, next: Seq) -> Self {
        RamStore {
            alert: RecordRing::new(Lane::Alert, FullPolicy::Refuse),
            routine: RecordRing::new(Lane::Routine, routine_policy),
            next_seq: next.0,
        }
    }

    /// Evicts the oldest routine record, counting it. False if none.
    pub fn evict_oldest_routine(&mut self) -> bool {
        self.routine.evict_oldest()
    }

    /// The alert lane.
    pub const fn alert_lane(&self) -> &RecordRing<ALERT> {
        &self.alert
    }

    /// The routine lane.
    pub const fn routine_lane(&self) -> &RecordRing<ROUTINE> {
        &self.routine
    }

    /// Unacknowledged records in delivery order.
    pub fn iter(&self) -> impl Iterator<Item = Record<'_>> + '_ {
        Severity::MOST_URGENT_FIRST
            .into_iter()
            .flat_map(move |sev| self.alert.iter().filter(move |r| r.meta.severity == sev))
            .chain(self.routine.iter())
    }
}

impl<const ALERT: usize, const ROUTINE: usize> RecordStore for RamStore<ALERT, ROUTINE> {
    type Error = Infallible;

    fn push(&mut self, meta: RecordMeta, payload: &[u8]) -> Result<Seq, PushError<Infallible>> {
        if self.next_seq == u32::MAX {
            return Err(PushError::SequenceExhausted);
        }
        let seq = Seq(self.next_seq);
        match meta.lane {
            Lane::Alert => self.alert.push(seq, meta, payload)?,
            Lane::Routine => self.routine.push(seq, meta, payload)?,
        }
        self.next_seq += 1;
        Ok(seq)
    }

    fn peek(&mut self, nth: usize) -> Result<Option<Record<'_>>, Infallible> {
        Ok(self.iter().nth(nth))
    }

    fn visit(&mut self, mut visit: impl FnMut(&Record<'_>) -> bool) -> Result<(), Infallible> {
        for record in self.iter() {
            if !visit(&record) {
                break;
            }
        }
        Ok(())
    }

    fn ack(&mut self, range: SeqRange) -> Result<Acked, Infallible> {
        let a = self.alert.ack(range);
        let r = self.routine.ack(range);
        Ok(Acked {
            records: a.records + r.records,
            readings: a.readings + r.readings,
        })
    }

    fn discard(&mut self, seq: Seq) -> Result<bool, Infallible> {
        Ok(self.alert.discard(seq) || self.routine.discard(seq))
    }

    fn len(&self) -> usize {
        self.alert.len() + self.routine.len()
    }

    fn capacity(&self, lane: Lane) -> usize {
        match lane {
            Lane::Alert => ALERT,
            Lane::Routine => ROUTINE,
        }
    }

    fn free(&self, lane: Lane) -> usize {
        match lane {
            Lane::Alert => self.alert.free(),
            Lane::Routine => self.routine.free(),
        }
    }

    fn used(&self, lane: Lane) -> usize {
        match lane {
            Lane::Alert => self.alert.used(),
            Lane::Routine => self.routine.used(),
        }
    }

    fn next_seq(&self) -> Seq {
        Seq(self.next_seq)
    }

    fn counters(&self) -> StoreCounters {
        StoreCounters {
            alert: self.alert.counters(),
            routine: self.routine.counters(),
        }
    }

    fn routine_policy(&self) -> FullPolicy {
        self.routine.policy()
    }

    fn set_routine_policy(&mut self, policy: FullPolicy) {
        self.routine.set_policy(policy);
    }

    fn oldest_undecimated(&mut self, skip: &[Seq]) -> Result<Option<Record<'_>>, Infallible> {
        Ok(self.routine.oldest_undecimated(skip))
    }

    fn replace_decimated(
        &mut self,
        seq: Seq,
        payload: &[u8],
        readings: u16,
    ) -> Result<bool, Infallible> {
        Ok(self.routine.replace_decimated(seq, payload, readings))
    }
}
