//! What identifies a record on the wire and in the store: its sequence
//! number, the boot epoch it was numbered in, its lane and metadata.
//!
//! A record is named for ever by (device, epoch, sequence number): the
//! epoch changes at every boot, and sequence numbers never repeat within
//! an epoch, so a device whose numbering restarts (a RAM store after a
//! power cut, a formatted flash store, a replaced board) never reuses a
//! name the server already holds.

use core::fmt;

use crate::model::Severity;

/// A boot epoch: 64 bits that differ at every boot of a device (from a
/// hardware random number generator, or advanced and persisted by the
/// flash store before any record of the boot is sent).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Epoch(pub u64);

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

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
