//! The RAM store against a simple model: two `VecDeque`s.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::collections::VecDeque;

use proptest::prelude::*;
use telemark_core::model::Severity;
use telemark_core::store::{
    FullPolicy, Lane, PushError, RamStore, RecordMeta, RecordStore, Seq, SeqRange,
    RAM_STORE_STATE_BYTES, RECORD_OVERHEAD, RING_STATE_BYTES,
};

const ALERT: usize = 128;
const ROUTINE: usize = 512;
type Store = RamStore<ALERT, ROUTINE>;

#[derive(Clone, Debug, PartialEq)]
struct Rec {
    seq: u32,
    severity: Severity,
    readings: u16,
    payload: Vec<u8>,
}

#[derive(Default)]
struct Model {
    alert: VecDeque<Rec>,
    routine: VecDeque<Rec>,
    /// Readings in records discarded from each lane (alert, routine).
    superseded_readings: [u32; 2],
}

impl Model {
    fn delivery_order(&self) -> Vec<Rec> {
        let mut alerts: Vec<Rec> = self.alert.iter().cloned().collect();
        alerts.sort_by_key(|r| (std::cmp::Reverse(r.severity), r.seq));
        alerts
            .into_iter()
            .chain(self.routine.iter().cloned())
            .collect()
    }

    fn all_seqs(&self) -> Vec<u32> {
        let mut s: Vec<u32> = self
            .alert
            .iter()
            .chain(&self.routine)
            .map(|r| r.seq)
            .collect();
        s.sort_unstable();
        s
    }

    fn lane(&mut self, lane: Lane) -> &mut VecDeque<Rec> {
        match lane {
            Lane::Alert => &mut self.alert,
            Lane::Routine => &mut self.routine,
        }
    }
}

#[derive(Clone, Debug)]
enum Op {
    Push {
        alert: bool,
        severity: u8,
        len: usize,
        readings: u16,
    },
    /// Acknowledge `width` consecutive pending sequence numbers from the `at`-th.
    Ack { at: usize, width: usize },
    /// Acknowledge numbers that were never issued or are already gone.
    AckStale { seq: u32 },
    /// Discard the `at`-th pending record, as a superseded heartbeat is.
    Discard { at: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (any::<bool>(), 0u8..3, 0usize..=ROUTINE, 0u16..300).prop_map(|(alert, severity, len, readings)| {
            // Alerts are small; routine blocks span the whole lane.
            let len = if alert { len % (ALERT - RECORD_OVERHEAD + 1) } else { len };
            Op::Push { alert, severity, len, readings }
        }),
        3 => (0usize..16, 1usize..4).prop_map(|(at, width)| Op::Ack { at, width }),
        1 => any::<u32>().prop_map(|seq| Op::AckStale { seq }),
        2 => (0usize..16).prop_map(|at| Op::Discard { at }),
    ]
}

fn payload(seq: u32, len: usize) -> Vec<u8> {
    (0..len).map(|i| (seq as usize * 31 + i) as u8).collect()
}

fn check(store: &mut Store, model: &Model) {
    let got: Vec<Rec> = store
        .iter()
        .map(|r| Rec {
            seq: r.seq.0,
            severity: r.meta.severity,
            readings: r.meta.readings,
            payload: r.payload.to_vec(),
        })
        .collect();
    let want = model.delivery_order();
    assert_eq!(got, want);
    for (i, w) in want.iter().enumerate() {
        assert_eq!(store.peek(i).unwrap().unwrap().seq.0, w.seq);
    }
    assert!(store.peek(want.len()).unwrap().is_none());
    assert_eq!(store.len(), want.len());

    let counters = store.counters();
    for (lane, c, cap, recs, superseded) in [
        (
            Lane::Alert,
            counters.alert,
            ALERT,
            &model.alert,
            model.superseded_readings[0],
        ),
        (
            Lane::Routine,
            counters.routine,
            ROUTINE,
            &model.routine,
            model.superseded_readings[1],
        ),
    ] {
        // Every record and reading that went in is pending, acked, evicted
        // or superseded.
        assert_eq!(
            c.pushed_records,
            c.acked_records + c.evicted_records + c.superseded_records + recs.len() as u32
        );
        let pending: u32 = recs.iter().map(|r| u32::from(r.readings)).sum();
        assert_eq!(
            c.pushed_readings,
            c.acked_readings + c.evicted_readings + superseded + pending
        );
        let live: usize = recs.iter().map(|r| r.payload.len() + RECORD_OVERHEAD).sum();
        assert!(store.used(lane) >= live && store.used(lane) <= cap);
        assert!(store.free(lane) <= cap - live);
        if recs.is_empty() {
            assert_eq!(store.used(lane), 0);
            assert_eq!(store.free(lane), cap);
        }
    }
}

fn run(ops: Vec<Op>, policy: FullPolicy) {
    let mut store = Store::new(policy);
    let mut model = Model::default();
    let mut last_seq = 0u32;
    for op in ops {
        match op {
            Op::Push {
                alert,
                severity,
                len,
                readings,
            } => {
                let severity = if alert {
                    Severity::from_bits(severity).unwrap()
                } else {
                    Severity::Info
                };
                let meta = if alert {
                    RecordMeta::alert(severity, readings)
                } else {
                    RecordMeta::routine(readings)
                };
                let lane = meta.lane;
                let free_before = store.free(lane);
                let cap = store.capacity(lane);
                let before = store.counters();
                let seq = store.next_seq().0;
                let bytes = payload(seq, len);
                match store.push(meta, &bytes) {
                    Ok(Seq(s)) => {
                        assert_eq!(s, seq);
                        assert!(s > last_seq);
                        last_seq = s;
                        let after = store.counters();
                        let (b, a) = match lane {
                            Lane::Alert => (before.alert, after.alert),
                            Lane::Routine => (before.routine, after.routine),
                        };
                        let evicted = (a.evicted_records - b.evicted_records) as usize;
                        if len + RECORD_OVERHEAD <= free_before {
                            assert_eq!(evicted, 0, "fitting record caused eviction");
                        }
                        // Eviction takes the oldest records of the lane only.
                        let recs = model.lane(lane);
                        let gone: Vec<Rec> = recs.drain(..evicted).collect();
                        let gone_readings: u32 = gone.iter().map(|r| u32::from(r.readings)).sum();
                        assert_eq!(a.evicted_readings - b.evicted_readings, gone_readings);
                        recs.push_back(Rec {
                            seq: s,
                            severity,
                            readings,
                            payload: bytes,
                        });
                    }
                    Err(PushError::Full) => {
                        assert!(
                            len + RECORD_OVERHEAD > free_before,
                            "refused a record that fit"
                        );
                        assert!(
                            lane == Lane::Alert || policy == FullPolicy::Refuse,
                            "evicting lane refused a record of {len} bytes"
                        );
                        assert!(len + RECORD_OVERHEAD <= cap);
                        assert_eq!(
                            store.next_seq().0,
                            seq,
                            "refused push used a sequence number"
                        );
                    }
                    Err(PushError::TooLarge) => {
                        assert!(len + RECORD_OVERHEAD > cap);
                        assert_eq!(
                            store.next_seq().0,
                            seq,
                            "refused push used a sequence number"
                        );
                    }
                    Err(e) => panic!("unexpected {e:?}"),
                }
            }
            Op::Ack { at, width } => {
                let seqs = model.all_seqs();
                if seqs.is_empty() {
                    continue;
                }
                let first = seqs[at % seqs.len()];
                let last = seqs[(at % seqs.len() + width - 1).min(seqs.len() - 1)];
                let range = SeqRange::new(Seq(first), Seq(last));
                let mut want = (0u32, 0u32);
                for lane in [&mut model.alert, &mut model.routine] {
                    lane.retain(|r| {
                        let hit = range.contains(Seq(r.seq));
                        if hit {
                            want.0 += 1;
                            want.1 += u32::from(r.readings);
                        }
                        !hit
                    });
                }
                let acked = store.ack(range).unwrap();
                assert_eq!((acked.records, acked.readings), want);
            }
            Op::AckStale { seq } => {
                if model.all_seqs().contains(&seq) {
                    continue;
                }
                let acked = store.ack(SeqRange::single(Seq(seq))).unwrap();
                assert_eq!(acked.records, 0);
                assert!(
                    !store.discard(Seq(seq)).unwrap(),
                    "discarded a record not stored"
                );
            }
            Op::Discard { at } => {
                let seqs = model.all_seqs();
                if seqs.is_empty() {
                    continue;
                }
                let seq = seqs[at % seqs.len()];
                let (i, lane) = if model.alert.iter().any(|r| r.seq == seq) {
                    (0, Lane::Alert)
                } else {
                    (1, Lane::Routine)
                };
                let recs = model.lane(lane);
                let pos = recs.iter().position(|r| r.seq == seq).unwrap();
                let gone = recs.remove(pos).unwrap();
                model.superseded_readings[i] += u32::from(gone.readings);
                let used = store.used(lane);
                assert!(store.discard(Seq(seq)).unwrap());
                // Its space comes back at once, wherever it lay (the gap a
                // wrap leaves at the end may go with it).
                assert!(store.used(lane) <= used - gone.payload.len() - RECORD_OVERHEAD);
            }
        }
        check(&mut store, &model);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn matches_model_when_evicting(ops in prop::collection::vec(op(), 1..200)) {
        run(ops, FullPolicy::EvictOldest);
    }

    #[test]
    fn matches_model_when_refusing(ops in prop::collection::vec(op(), 1..200)) {
        run(ops, FullPolicy::Refuse);
    }

    /// However much routine data arrives, no alert is lost, and alerts come
    /// out most severe first, then oldest first.
    #[test]
    fn alerts_survive_any_routine_volume(
        alerts in prop::collection::vec((0u8..3, 0usize..24), 1..8),
        routine in prop::collection::vec(0usize..300, 0..400),
    ) {
        let mut store: RamStore<256, 1024> = RamStore::new(FullPolicy::EvictOldest);
        let mut pushed = Vec::new();
        let mut routine = routine.into_iter();
        for (sev, len) in alerts {
            let severity = Severity::from_bits(sev).unwrap();
            let seq = store.push(RecordMeta::alert(severity, 1), &vec![sev; len]).unwrap();
            pushed.push((std::cmp::Reverse(severity), seq));
            for len in routine.by_ref().take(50) {
                store.push(RecordMeta::routine(10), &vec![0xAA; len]).unwrap();
            }
        }
        for len in routine {
            store.push(RecordMeta::routine(10), &vec![0xAA; len]).unwrap();
        }
        pushed.sort();
        let out: Vec<Seq> = store.iter().filter(|r| r.meta.lane == Lane::Alert).map(|r| r.seq).collect();
        prop_assert_eq!(out, pushed.iter().map(|p| p.1).collect::<Vec<_>>());
        prop_assert_eq!(store.counters().alert.evicted_records, 0);
        // Alerts come before any routine record.
        let first_routine = store.iter().position(|r| r.meta.lane == Lane::Routine);
        if let Some(i) = first_routine {
            prop_assert_eq!(i, pushed.len());
        }
    }
}

#[test]
fn record_overhead_is_eight_bytes() {
    let mut store: RamStore<64, 1024> = RamStore::new(FullPolicy::Refuse);
    for len in [0usize, 1, 37, 100] {
        let used = store.used(Lane::Routine);
        store.push(RecordMeta::routine(1), &vec![7; len]).unwrap();
        assert_eq!(store.used(Lane::Routine) - used, len + 8);
    }
    assert_eq!(RECORD_OVERHEAD, 8);
    // A record exactly the size of the lane, header included, fits.
    let mut exact: RamStore<64, 64> = RamStore::new(FullPolicy::Refuse);
    exact.push(RecordMeta::routine(1), &[1; 56]).unwrap();
    assert_eq!(exact.used(Lane::Routine), 64);
    assert_eq!(exact.free(Lane::Routine), 0);
    assert_eq!(store.free(Lane::Alert), 64);
    assert_eq!(
        exact.push(RecordMeta::routine(1), &[]),
        Err(PushError::Full)
    );
    assert_eq!(
        exact.push(RecordMeta::alert(Severity::Info, 1), &[0; 57]),
        Err(PushError::TooLarge)
    );
}

#[test]
fn state_beyond_capacity_is_documented() {
    assert_eq!(
        core::mem::size_of::<telemark_core::store::RecordRing<64>>(),
        64 + RING_STATE_BYTES
    );
    assert_eq!(RAM_STORE_STATE_BYTES, 132);
    assert_eq!(
        core::mem::size_of::<RamStore<256, 4096>>(),
        256 + 4096 + RAM_STORE_STATE_BYTES
    );
    assert_eq!(
        core::mem::size_of::<RamStore<64, 64>>(),
        64 + 64 + RAM_STORE_STATE_BYTES
    );
}

#[test]
fn refused_records_are_counted_and_handed_back() {
    let mut store: RamStore<32, 64> = RamStore::new(FullPolicy::Refuse);
    store.push(RecordMeta::routine(5), &[1; 40]).unwrap();
    assert_eq!(
        store.push(RecordMeta::routine(7), &[2; 40]),
        Err(PushError::Full)
    );
    let c = store.counters().routine;
    assert_eq!((c.refused_records, c.refused_readings), (1, 7));
    assert_eq!(store.next_seq(), Seq(2));
}

#[test]
fn sequence_numbers_resume_and_never_repeat() {
    let mut store: RamStore<32, 64> = RamStore::resume(FullPolicy::EvictOldest, Seq(u32::MAX - 2));
    assert_eq!(
        store.push(RecordMeta::routine(1), &[]).unwrap(),
        Seq(u32::MAX - 2)
    );
    assert_eq!(
        store.push(RecordMeta::routine(1), &[]).unwrap(),
        Seq(u32::MAX - 1)
    );
    assert_eq!(
        store.push(RecordMeta::routine(1), &[]),
        Err(PushError::SequenceExhausted)
    );
}

#[test]
fn out_of_order_acks_free_space_once_the_head_goes() {
    let mut store: RamStore<32, 64> = RamStore::new(FullPolicy::Refuse);
    let a = store.push(RecordMeta::routine(1), &[1; 20]).unwrap();
    let b = store.push(RecordMeta::routine(1), &[2; 20]).unwrap();
    store.ack(SeqRange::single(b)).unwrap();
    // b is acknowledged but sits behind a: its bytes are still held.
    assert_eq!(store.used(Lane::Routine), 56);
    assert_eq!(store.len(), 1);
    store.ack(SeqRange::single(a)).unwrap();
    assert_eq!(store.used(Lane::Routine), 0);
    // A duplicate acknowledgement changes nothing.
    assert_eq!(store.ack(SeqRange::new(a, b)).unwrap().records, 0);
}
