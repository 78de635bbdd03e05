//! Random store operations with power cuts at random bytes, against a
//! model: after every cut the store is re-mounted from flash alone and must
//! hold every record it accepted and nobody acknowledged, exactly once,
//! with the same bytes, and never hand out a sequence number twice.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use telemark_core::model::Severity;
use telemark_core::store::{
    Blocking, FlashLayout, FlashStore, FullPolicy, Lane, PushError, RecordMeta, RecordStore, Seq,
    SeqRange, SimFlash,
};

type Flash = SimFlash<512, 8>;
type Store = FlashStore<Blocking<Flash>, 256>;

#[derive(Arbitrary, Debug)]
enum Op {
    Push {
        alert: bool,
        severity: u8,
        len: u8,
    },
    Ack {
        first: u8,
        span: u8,
    },
    /// Discard one record, as a superseded heartbeat is.
    Discard {
        seq: u8,
    },
    Policy {
        evict: bool,
    },
    Decimate,
    /// Cut the power after this many more bytes of writes and erases.
    Cut {
        after: u16,
    },
    Reboot,
}

fn layout() -> FlashLayout {
    FlashLayout::split(0..8 * 512, 512, 3)
}

fn mount(flash: Flash) -> Store {
    let mut store = Store::new(flash, layout()).expect("layout");
    store.mount().expect("mount after power cuts");
    store
}

#[derive(Default)]
struct Model {
    held: BTreeMap<u32, (Lane, Vec<u8>)>,
    /// Records an interrupted operation may have added or removed.
    unsure: BTreeMap<u32, Option<(Lane, Vec<u8>)>>,
    /// The routine queue, oldest first, before an interrupted evicting
    /// push: it may have evicted any prefix of it.
    evicting: Vec<u32>,
    handed_out: Option<u32>,
    policy: FullPolicy,
}

fn check(store: &mut Store, model: &mut Model) {
    let mut found = BTreeMap::new();
    for nth in 0..store.len() {
        let r = store.peek(nth).expect("peek").expect("counted record");
        let dup = found.insert(r.seq.0, (r.meta.lane, r.payload.to_vec(), r.meta.decimated));
        assert!(dup.is_none(), "seq {} twice", r.seq.0);
    }
    let unsure = std::mem::take(&mut model.unsure);
    let evicting = std::mem::take(&mut model.evicting);
    let may_be_gone: Vec<u32> = evicting
        .into_iter()
        .take_while(|s| !found.contains_key(s))
        .collect();
    let held = std::mem::take(&mut model.held);
    for (seq, (lane, payload)) in held {
        match found.get(&seq) {
            Some((l, p, decimated)) => {
                assert_eq!(*l, lane);
                if !decimated {
                    assert_eq!(*p, payload, "record {seq} changed");
                }
                model.held.insert(seq, (*l, p.clone()));
            }
            None if unsure.contains_key(&seq) => {}
            None if may_be_gone.contains(&seq) => {}
            None => panic!("record {seq} lost"),
        }
    }
    for (seq, (lane, payload, _)) in &found {
        if !model.held.contains_key(seq) {
            match unsure.get(seq) {
                Some(Some((l, p))) => {
                    assert_eq!((l, p), (lane, payload));
                    model.held.insert(*seq, (*lane, payload.clone()));
                }
                _ => panic!("record {seq} appeared"),
            }
        }
    }
    let top = found
        .keys()
        .last()
        .copied()
        .into_iter()
        .chain(model.handed_out)
        .max();
    if let Some(top) = top {
        assert!(store.next_seq().0 > top, "seq {top} may be reused");
    }
    model.handed_out = top;
}

fuzz_target!(|ops: Vec<Op>| {
    let mut store = mount(Flash::new());
    let mut model = Model::default();
    for op in ops.into_iter().take(64) {
        let ok = match op {
            Op::Push {
                alert,
                severity,
                len,
            } => {
                let lane = if alert { Lane::Alert } else { Lane::Routine };
                let severity = Severity::from_bits(severity % 3).unwrap_or(Severity::Info);
                let seq = store.next_seq().0;
                let payload: Vec<u8> = (0..len).map(|i| i ^ seq as u8).collect();
                model.unsure.insert(seq, Some((lane, payload.clone())));
                let meta = RecordMeta {
                    lane,
                    severity,
                    readings: 1,
                    decimated: false,
                };
                let before = store.counters().routine.evicted_records;
                // Eviction takes the routine lane's oldest in queue order (a
                // decimated copy travels after records younger than it).
                let queue: Vec<u32> = (0..store.len())
                    .filter_map(|n| {
                        let r = store.peek(n).ok().flatten()?;
                        (r.meta.lane == Lane::Routine).then_some(r.seq.0)
                    })
                    .collect();
                if lane == Lane::Routine && store.routine_policy() == FullPolicy::EvictOldest {
                    model.evicting = queue.clone();
                }
                match store.push(meta, &payload) {
                    Ok(got) => {
                        assert_eq!(got.0, seq);
                        model.handed_out = Some(seq);
                        let evicted = store.counters().routine.evicted_records - before;
                        for oldest in queue.iter().take(evicted as usize) {
                            assert!(
                                model.held.remove(oldest).is_some(),
                                "evicted {oldest}, not held"
                            );
                        }
                        model.held.insert(seq, (lane, payload));
                        true
                    }
                    Err(PushError::Full) | Err(PushError::TooLarge) => true,
                    Err(_) => false,
                }
            }
            Op::Ack { first, span } => {
                let first = u32::from(first);
                let range = SeqRange::new(Seq(first), Seq(first + u32::from(span % 8)));
                for (seq, rec) in model.held.range(first..=range.last.0) {
                    model.unsure.insert(*seq, Some(rec.clone()));
                }
                match store.ack(range) {
                    Ok(_) => {
                        model.held.retain(|s, _| !range.contains(Seq(*s)));
                        true
                    }
                    Err(_) => false,
                }
            }
            Op::Discard { seq } => {
                let seq = u32::from(seq);
                if let Some(rec) = model.held.get(&seq) {
                    model.unsure.insert(seq, Some(rec.clone()));
                }
                match store.discard(Seq(seq)) {
                    Ok(found) => {
                        assert_eq!(found, model.held.remove(&seq).is_some(), "discard of {seq}");
                        true
                    }
                    Err(_) => false,
                }
            }
            Op::Policy { evict } => {
                model.policy = if evict {
                    FullPolicy::EvictOldest
                } else {
                    FullPolicy::Refuse
                };
                store.set_routine_policy(model.policy);
                true
            }
            Op::Decimate => {
                let target = store
                    .oldest_undecimated(&[])
                    .ok()
                    .flatten()
                    .map(|r| (r.seq, r.payload.len()));
                match target {
                    Some((seq, len)) => {
                        let half = vec![0xA5; len / 2];
                        let rec = model.held.get(&seq.0).cloned();
                        model.unsure.insert(seq.0, rec);
                        match store.replace_decimated(seq, &half, 0) {
                            Ok(true) => {
                                model.held.insert(seq.0, (Lane::Routine, half));
                                true
                            }
                            Ok(false) => true,
                            Err(_) => false,
                        }
                    }
                    None => true,
                }
            }
            Op::Cut { after } => {
                let mut flash = store.release();
                flash.0.cut_after(u64::from(after));
                store = Store::new(flash.0, layout()).expect("layout");
                store.set_routine_policy(model.policy);
                // Mounting may itself be cut.
                store.mount().is_ok()
            }
            Op::Reboot => false,
        };
        if ok {
            model.unsure.clear();
            model.evicting.clear();
            continue;
        }
        let mut flash = store.release().0;
        flash.power_on();
        store = mount(flash);
        store.set_routine_policy(model.policy);
        check(&mut store, &mut model);
    }
});
