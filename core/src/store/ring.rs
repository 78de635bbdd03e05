//! A byte ring of variable-length records, one lane of a store.
//!
//! Records are stored back to back, each behind an 8-byte header, in a
//! `[u8; N]`. A record is never split: when it does not fit between the write
//! position and the end of the buffer it goes to the start instead (as in a
//! bip buffer), so every payload is one contiguous slice.
//!
//! Header, little endian:
//!
//! | bytes | field |
//! | --- | --- |
//! | 0..4 | sequence number |
//! | 4..6 | payload length (bits 0..14), acknowledged (bit 14), decimated (bit 15) |
//! | 6..8 | readings (bits 0..14), severity (bits 14..16) |
//!
//! Acknowledgements may arrive out of order; an acknowledged record in the
//! middle is marked and its space comes back when the records before it go.

use core::convert::Infallible;

use super::{Acked, FullPolicy, Lane, LaneCounters, PushError, Record, RecordMeta, Seq, SeqRange};
use crate::model::Severity;

/// Bytes each record costs on top of its payload.
pub const RECORD_OVERHEAD: usize = 8;
/// Largest payload of one record.
pub const MAX_PAYLOAD: usize = (1 << 14) - 1;
/// Most readings one record can account for.
pub const MAX_READINGS: u16 = (1 << 14) - 1;
/// Bytes of a [`RecordRing`] beyond its `N` bytes of capacity (for `N` a
/// multiple of 4).
pub const RING_STATE_BYTES: usize = 64;

const LEN_MASK: u16 = (1 << 14) - 1;
const ACKED: u16 = 1 << 14;
const DECIMATED: u16 = 1 << 15;
const NOT_WRAPPED: u32 = u32::MAX;

/// One decoded header, and where its record starts.
#[derive(Clone, Copy)]
struct Slot {
    pos: usize,
    seq: Seq,
    len: usize,
    acked: bool,
    meta: RecordMeta,
}

impl Slot {
    fn size(&self) -> usize {
        RECORD_OVERHEAD + self.len
    }
}

/// A lane of records in a byte ring of `N` bytes. See the module docs.
#[derive(Clone, Debug)]
pub struct RecordRing<const N: usize> {
    buf: [u8; N],
    /// Start of the oldest record.
    head: u32,
    /// Where the next record goes.
    tail: u32,
    /// While wrapped: end of the data in the upper segment.
    wrap_end: u32,
    /// Records in the buffer, acknowledged ones not yet reclaimed included.
    records: u32,
    /// Records not yet acknowledged.
    pending: u32,
    policy: FullPolicy,
    lane: Lane,
    counters: LaneCounters,
}

impl<const N: usize> RecordRing<N> {
    const CAPACITY_OK: () = assert!(
        N >= RECORD_OVERHEAD && N <= i32::MAX as usize,
        "ring capacity must be at least 8 bytes and below 2 GiB"
    );

    /// An empty ring for `lane` with the given full policy.
    pub const fn new(lane: Lane, policy: FullPolicy) -> Self {
        #[allow(clippy::let_unit_value)]
        let () = Self::CAPACITY_OK;
        RecordRing {
            buf: [0; N],
            head: 0,
            tail: 0,
            wrap_end: NOT_WRAPPED,
            records: 0,
            pending: 0,
            policy,
            lane,
            counters: LaneCounters {
                pushed_records: 0,
                pushed_readings: 0,
                acked_records: 0,
                acked_readings: 0,
                evicted_records: 0,
                evicted_readings: 0,
                refused_records: 0,
                refused_readings: 0,
                decimated_readings: 0,
                superseded_records: 0,
            },
        }
    }

    /// Unacknowledged records.
    pub const fn len(&self) -> usize {
        self.pending as usize
    }

    /// True if no record awaits acknowledgement.
    pub const fn is_empty(&self) -> bool {
        self.pending == 0
    }

    /// The policy applied when a record does not fit.
    pub const fn policy(&self) -> FullPolicy {
        self.policy
    }

    /// Changes the full policy.
    pub fn set_policy(&mut self, policy: FullPolicy) {
        self.policy = policy;
    }

    /// What went through this lane.
    pub const fn counters(&self) -> LaneCounters {
        self.counters
    }

    /// Bytes in use, headers, acknowledged-but-unreclaimed records and the
    /// gap left at the end by a wrap included.
    pub fn used(&self) -> usize {
        if self.records == 0 {
            0
        } else if self.wrapped() {
            (self.wrap_end - self.head + self.tail) as usize + (N - self.wrap_end as usize)
        } else {
            (self.tail - self.head) as usize
        }
    }

    /// Largest record, header included, accepted right now without
    /// evicting: a payload of `len` bytes fits if `len + 8 <= free()`.
    pub fn free(&self) -> usize {
        let (head, tail) = (self.head as usize, self.tail as usize);
        if self.records == 0 {
            N
        } else if self.wrapped() {
            head - tail
        } else {
            (N - tail).max(head)
        }
    }

    fn wrapped(&self) -> bool {
        self.wrap_end != NOT_WRAPPED
    }

    /// Where a record of `size` bytes would go, if it fits now.
    fn place(&self, size: usize) -> Option<usize> {
        let (head, tail) = (self.head as usize, self.tail as usize);
        if self.records == 0 {
            (size <= N).then_some(0)
        } else if self.wrapped() {
            (head - tail >= size).then_some(tail)
        } else if N - tail >= size {
            Some(tail)
        } else {
            (head >= size).then_some(0)
        }
    }

    fn slot_at(&self, pos: usize) -> Option<Slot> {
        let h: [u8; RECORD_OVERHEAD] = self
            .buf
            .get(pos..pos.checked_add(RECORD_OVERHEAD)?)?
            .try_into()
            .ok()?;
        let seq = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
        let len_flags = u16::from_le_bytes([h[4], h[5]]);
        let count_sev = u16::from_le_bytes([h[6], h[7]]);
        Some(Slot {
            pos,
            seq: Seq(seq),
            len: usize::from(len_flags & LEN_MASK),
            acked: len_flags & ACKED != 0,
            meta: RecordMeta {
                lane: self.lane,
                severity: Severity::from_bits((count_sev >> 14) as u8)
                    .unwrap_or(Severity::Critical),
                readings: count_sev & LEN_MASK,
                decimated: len_flags & DECIMATED != 0,
            },
        })
    }

    fn slots(&self) -> Slots<'_, N> {
        Slots {
            ring: self,
            pos: self.head as usize,
            left: self.records,
        }
    }

    /// Unacknowledged records, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = Record<'_>> + '_ {
        self.slots().filter(|s| !s.acked).filter_map(move |s| {
            let start = s.pos + RECORD_OVERHEAD;
            Some(Record {
                seq: s.seq,
                meta: s.meta,
                payload: self.buf.get(start..start + s.len)?,
            })
        })
    }

    /// Stores `payload` under `seq`, applying the full policy.
    ///
    /// `seq` must be greater than every sequence number pushed before.
    pub fn push(
        &mut self,
        seq: Seq,
        meta: RecordMeta,
        payload: &[u8],
    ) -> Result<(), PushError<Infallible>> {
        let size = RECORD_OVERHEAD + payload.len();
        if payload.len() > MAX_PAYLOAD || size > N {
            self.count_refused(meta);
            return Err(PushError::TooLarge);
        }
        if meta.readings > MAX_READINGS {
            self.count_refused(meta);
            return Err(PushError::TooManyReadings);
        }
        let pos = loop {
            if let Some(pos) = self.place(size) {
                break pos;
            }
            if self.policy == FullPolicy::Refuse || !self.evict_oldest() {
                self.count_refused(meta);
                return Err(PushError::Full);
            }
        };
        let Some(dst) = self.buf.get_mut(pos..pos + size) else {
            self.count_refused(meta);
            return Err(PushError::Full);
        };
        let (header, body) = dst.split_at_mut(RECORD_OVERHEAD);
        let len_flags = payload.len() as u16 | if meta.decimated { DECIMATED } else { 0 };
        let count_sev = meta.readings | (meta.severity as u16) << 14;
        let (s, l, c) = (
            seq.0.to_le_bytes(),
            len_flags.to_le_bytes(),
            count_sev.to_le_bytes(),
        );
        header.copy_from_slice(&[s[0], s[1], s[2], s[3], l[0], l[1], c[0], c[1]]);
        body.copy_from_slice(payload);

        if self.records > 0 && !self.wrapped() && pos < self.tail as usize {
            self.wrap_end = self.tail;
        }
        self.tail = (pos + size) as u32;
        self.records += 1;
        self.pending += 1;
        self.counters.pushed_records = self.counters.pushed_records.saturating_add(1);
        self.counters.pushed_readings = self
            .counters
            .pushed_readings
            .saturating_add(u32::from(meta.readings));
        Ok(())
    }

    fn count_refused(&mut self, meta: RecordMeta) {
        let c = &mut self.counters;
        c.refused_records = c.refused_records.saturating_add(1);
        c.refused_readings = c.refused_readings.saturating_add(u32::from(meta.readings));
    }

    /// The oldest record not yet decimated, if it lies in the same
    /// contiguous run of the buffer as the head (so it can be rewritten in
    /// place).
    fn decimation_target(&self, skip: &[Seq]) -> Option<Slot> {
        let mut slots = self.slots();
        let target = slots.find(|s| !s.acked && !s.meta.decimated && !skip.contains(&s.seq))?;
        (target.pos >= self.head as usize).then_some(target)
    }

    /// The oldest unacknowledged record not yet decimated, if it can be
    /// replaced in place by [`RecordRing::replace_decimated`].
    pub fn oldest_undecimated(&self, skip: &[Seq]) -> Option<Record<'_>> {
        let slot = self.decimation_target(skip)?;
        let start = slot.pos + RECORD_OVERHEAD;
        Some(Record {
            seq: slot.seq,
            meta: slot.meta,
            payload: self.buf.get(start..start + slot.len)?,
        })
    }

    /// Replaces record `seq` (one [`RecordRing::oldest_undecimated`]
    /// returns) with a smaller payload of `readings` readings, flagged
    /// decimated. The bytes saved become free space; the readings dropped
    /// are counted. False if `seq` is not that record or the payload is not
    /// smaller.
    pub fn replace_decimated(&mut self, seq: Seq, payload: &[u8], readings: u16) -> bool {
        let head = self.head as usize;
        let Some(slot) = self
            .slots()
            .find(|s| s.seq == seq && !s.acked && !s.meta.decimated)
            .filter(|s| s.pos >= head)
        else {
            return false;
        };
        if payload.len() >= slot.len || readings > slot.meta.readings {
            return false;
        }
        let freed = slot.len - payload.len();
        // Shift the records before it forward, then write it right-aligned
        // in its old slot: the freed bytes end up in front of the head.
        self.buf.copy_within(head..slot.pos, head + freed);
        let at = slot.pos + freed;
        let len_flags = payload.len() as u16 | DECIMATED;
        let count_sev = readings | (slot.meta.severity as u16) << 14;
        let (s, l, c) = (
            seq.0.to_le_bytes(),
            len_flags.to_le_bytes(),
            count_sev.to_le_bytes(),
        );
        let Some(dst) = self.buf.get_mut(at..at + RECORD_OVERHEAD + payload.len()) else {
            return false;
        };
        let (header, body) = dst.split_at_mut(RECORD_OVERHEAD);
        header.copy_from_slice(&[s[0], s[1], s[2], s[3], l[0], l[1], c[0], c[1]]);
        body.copy_from_slice(payload);
        self.head = (head + freed) as u32;
        let dropped = u32::from(slot.meta.readings - readings);
        self.counters.decimated_readings = self.counters.decimated_readings.saturating_add(dropped);
        true
    }

    /// Evicts the oldest unacknowledged record, counting it. False if empty.
    pub fn evict_oldest(&mut self) -> bool {
        let Some(slot) = self.slots().next() else {
            return false;
        };
        // The head is never an acknowledged record: those are reclaimed eagerly.
        self.pop_head(slot);
        self.pending = self.pending.saturating_sub(1);
        let c = &mut self.counters;
        c.evicted_records = c.evicted_records.saturating_add(1);
        c.evicted_readings = c
            .evicted_readings
            .saturating_add(u32::from(slot.meta.readings));
        self.reclaim();
        true
    }

    /// Removes the unacknowledged record `seq` and gives its space back at
    /// once, wherever it lies: the records around it move to close the gap
    /// and, unless the ring is wrapped, to the start of the buffer, so the
    /// free space is one run. Counted as superseded. False if `seq` is not
    /// waiting here.
    pub fn discard(&mut self, seq: Seq) -> bool {
        let Some(slot) = self.slots().find(|s| s.seq == seq && !s.acked) else {
            return false;
        };
        let (head, tail, size) = (self.head as usize, self.tail as usize, slot.size());
        if self.wrapped() && slot.pos >= head {
            // In the upper run: the records before it move up by its size.
            self.buf.copy_within(head..slot.pos, head + size);
            self.head = (head + size) as u32;
            if self.head == self.wrap_end {
                self.head = 0;
                self.wrap_end = NOT_WRAPPED;
            }
        } else {
            // In the run that ends at the tail: the records after it move
            // down by its size.
            self.buf.copy_within(slot.pos + size..tail, slot.pos);
            self.tail = (tail - size) as u32;
            if self.wrapped() && self.tail == 0 {
                self.tail = self.wrap_end;
                self.wrap_end = NOT_WRAPPED;
            }
        }
        if !self.wrapped() && self.head > 0 {
            let (head, tail) = (self.head as usize, self.tail as usize);
            self.buf.copy_within(head..tail, 0);
            self.tail = (tail - head) as u32;
            self.head = 0;
        }
        self.records -= 1;
        self.pending = self.pending.saturating_sub(1);
        if self.records == 0 {
            self.head = 0;
            self.tail = 0;
            self.wrap_end = NOT_WRAPPED;
        }
        self.counters.superseded_records = self.counters.superseded_records.saturating_add(1);
        // Acknowledged records it held back may now be at the head.
        self.reclaim();
        true
    }

    /// Marks every record in `range` acknowledged and reclaims what it can.
    pub fn ack(&mut self, range: SeqRange) -> Acked {
        let mut acked = Acked::default();
        let mut pos = self.head as usize;
        let mut left = self.records;
        while left > 0 {
            let Some(slot) = self.slot_at(pos) else { break };
            if slot.seq > range.last {
                break;
            }
            if !slot.acked && range.contains(slot.seq) {
                let flags =
                    slot.len as u16 | ACKED | if slot.meta.decimated { DECIMATED } else { 0 };
                if let Some(b) = self.buf.get_mut(pos + 4..pos + 6) {
                    b.copy_from_slice(&flags.to_le_bytes());
                }
                self.pending = self.pending.saturating_sub(1);
                acked.records += 1;
                acked.readings += u32::from(slot.meta.readings);
            }
            pos = self.next_pos(slot);
            left -= 1;
        }
        let c = &mut self.counters;
        c.acked_records = c.acked_records.saturating_add(acked.records);
        c.acked_readings = c.acked_readings.saturating_add(acked.readings);
        self.reclaim();
        acked
    }

    fn next_pos(&self, slot: Slot) -> usize {
        let next = slot.pos + slot.size();
        if self.wrapped() && next == self.wrap_end as usize {
            0
        } else {
            next
        }
    }

    fn pop_head(&mut self, slot: Slot) {
        self.head = self.next_pos(slot) as u32;
        if self.head == 0 {
            self.wrap_end = NOT_WRAPPED;
        }
        self.records -= 1;
        if self.records == 0 {
            self.head = 0;
            self.tail = 0;
            self.wrap_end = NOT_WRAPPED;
        }
    }

    /// Frees acknowledged records at the head.
    fn reclaim(&mut self) {
        while let Some(slot) = self.slots().next() {
            if !slot.acked {
                break;
            }
            self.pop_head(slot);
        }
    }
}

struct Slots<'a, const N: usize> {
    ring: &'a RecordRing<N>,
    pos: usize,
    left: u32,
}

impl<const N: usize> Iterator for Slots<'_, N> {
    type Item = Slot;

    fn next(&mut self) -> Option<Slot> {
        if self.left == 0 {
            return None;
        }
        let slot = self.ring.slot_at(self.pos)?;
        self.pos = self.ring.next_pos(slot);
        self.left -= 1;
        Some(slot)
    }
}
