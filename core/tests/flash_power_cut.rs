//! The flash store under power cuts: every workload is cut at every byte
//! of every write and erase, the store re-mounted from flash alone, and
//! checked against a model of what it had accepted. A sample of the cut
//! points is cut a second time while recovering. Garbage flash is mounted
//! too. Run with `--nocapture` to see the counts.

use std::collections::BTreeMap;

use telemark_core::config::{ConfigUpdate, DeviceConfig, EngineConfig};
use telemark_core::model::Severity;
use telemark_core::stager::StagerConfig;
use telemark_core::store::{
    Blocking, FlashError, FlashLayout, FlashStore, FullPolicy, Lane, RecordMeta, RecordStore, Seq,
    SeqRange, SimFlash,
};
use telemark_core::time::Duration;
use telemark_core::uplink::UplinkConfig;

const PAGE: usize = 512;
const PAGES: usize = 10;
type Flash = SimFlash<PAGE, PAGES>;
type Store = FlashStore<Blocking<Flash>, 256>;

fn layout() -> FlashLayout {
    FlashLayout::split(0..(PAGE * PAGES) as u32, PAGE as u32, 3)
}

fn open(
    flash: Flash,
) -> (
    Store,
    Result<(), FlashError<telemark_core::store::SimFlashError>>,
) {
    let mut store = Store::new(flash, layout()).expect("layout fits");
    let mounted = store.mount().map(|_| ());
    (store, mounted)
}

#[derive(Clone, Debug, PartialEq)]
struct Rec {
    lane: Lane,
    severity: Severity,
    decimated: bool,
    payload: Vec<u8>,
}

/// What the store must hold, and what it may.
#[derive(Clone, Debug, Default)]
struct Model {
    /// Accepted and not acknowledged: must be present exactly once.
    held: BTreeMap<u32, Rec>,
    /// The operation the power cut interrupted may or may not have happened.
    in_flight: Option<Op>,
    /// Every sequence number the store handed out.
    max_seq: Option<u32>,
    /// Config versions: the one in force, and one being saved.
    config: Option<u32>,
}

#[derive(Clone, Debug)]
enum Op {
    Push(u32, Rec),
    Ack(SeqRange),
    /// An evicting push: it may also have removed any number of the oldest
    /// routine records.
    PushEvicting(u32, Rec),
    Replace(u32, Rec),
    Config(u32),
}

fn config(version: u32) -> DeviceConfig<2> {
    DeviceConfig {
        version,
        engine: EngineConfig {
            uplink: UplinkConfig::new(9, 200, Duration::from_secs(60 + u64::from(version))),
            stager: StagerConfig::new(64, 140, Duration::from_mins(10)),
            heartbeat: Duration::from_mins(60),
        },
        store_policy: FullPolicy::Refuse,
        channels: heapless::Vec::new(),
    }
}

fn payload(seed: u32, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (seed.wrapping_mul(31).wrapping_add(i as u32 * 7)) as u8)
        .collect()
}

/// Runs operations against the store and the model; stops at the first
/// error (the power cut), leaving the interrupted operation in flight.
struct Run<'a> {
    store: &'a mut Store,
    model: &'a mut Model,
}

type Step = Result<(), ()>;

impl Run<'_> {
    fn push(&mut self, lane: Lane, severity: Severity, len: usize) -> Step {
        let seq = self.store.next_seq().0;
        let rec = Rec {
            lane,
            severity: if lane == Lane::Alert {
                severity
            } else {
                Severity::Info
            },
            decimated: false,
            payload: payload(seq, len),
        };
        let evicting =
            self.store.routine_policy() == FullPolicy::EvictOldest && lane == Lane::Routine;
        self.model.in_flight = Some(if evicting {
            Op::PushEvicting(seq, rec.clone())
        } else {
            Op::Push(seq, rec.clone())
        });
        let meta = RecordMeta {
            lane,
            severity,
            readings: len as u16,
            decimated: false,
        };
        let before = self.store.counters().routine.evicted_records;
        match self.store.push(meta, &rec.payload) {
            Ok(got) => {
                assert_eq!(got.0, seq);
                let evicted = self.store.counters().routine.evicted_records - before;
                for _ in 0..evicted {
                    let oldest = self
                        .model
                        .held
                        .iter()
                        .find(|(_, r)| r.lane == Lane::Routine)
                        .map(|(s, _)| *s)
                        .expect("evicted a record the model holds");
                    self.model.held.remove(&oldest);
                }
                self.model.held.insert(seq, rec);
                self.model.max_seq = Some(seq);
                self.model.in_flight = None;
                Ok(())
            }
            Err(telemark_core::store::PushError::Full) => {
                self.model.in_flight = None;
                Ok(())
            }
            Err(_) => Err(()),
        }
    }

    fn ack(&mut self, range: SeqRange) -> Step {
        self.model.in_flight = Some(Op::Ack(range));
        self.store.ack(range).map_err(|_| ())?;
        self.model.held.retain(|s, _| !range.contains(Seq(*s)));
        self.model.in_flight = None;
        Ok(())
    }

    fn decimate_oldest(&mut self) -> Step {
        let Some((seq, old)) = self
            .model
            .held
            .iter()
            .find(|(_, r)| r.lane == Lane::Routine && !r.decimated)
            .map(|(s, r)| (*s, r.clone()))
        else {
            return Ok(());
        };
        let rec = Rec {
            decimated: true,
            payload: old.payload[..old.payload.len() / 2].to_vec(),
            ..old
        };
        self.model.in_flight = Some(Op::Replace(seq, rec.clone()));
        let replaced = self
            .store
            .replace_decimated(Seq(seq), &rec.payload, rec.payload.len() as u16)
            .map_err(|_| ())?;
        if replaced {
            self.model.held.insert(seq, rec);
        }
        self.model.in_flight = None;
        Ok(())
    }

    fn save_config(&mut self, version: u32) -> Step {
        self.model.in_flight = Some(Op::Config(version));
        let config = config(version);
        self.store
            .save_config(|buf| config.encode(buf).ok())
            .map_err(|_| ())?;
        self.model.config = Some(version);
        self.model.in_flight = None;
        Ok(())
    }
}

type Workload = fn(&mut Run<'_>) -> Step;

fn push_workload(r: &mut Run<'_>) -> Step {
    for i in 0..24usize {
        let lane = if i % 5 == 2 {
            Lane::Alert
        } else {
            Lane::Routine
        };
        let severity = [Severity::Info, Severity::Critical, Severity::Warning][i % 3];
        r.push(lane, severity, 20 + (i * 37) % 110)?;
    }
    Ok(())
}

fn ack_setup(r: &mut Run<'_>) -> Step {
    for i in 0..16usize {
        let lane = if i % 4 == 0 {
            Lane::Alert
        } else {
            Lane::Routine
        };
        r.push(lane, Severity::Warning, 40 + (i * 13) % 60)?;
    }
    Ok(())
}

fn ack_workload(r: &mut Run<'_>) -> Step {
    for range in [(5, 7), (0, 0), (12, 15), (1, 3), (99, 120), (4, 4), (8, 11)] {
        r.ack(SeqRange::new(Seq(range.0), Seq(range.1)))?;
    }
    Ok(())
}

fn wrap_workload(r: &mut Run<'_>) -> Step {
    for i in 0..48u32 {
        r.push(Lane::Routine, Severity::Info, 90 + (i as usize * 11) % 60)?;
        if i % 3 == 2 {
            let oldest = *r.model.held.keys().next().unwrap_or(&0);
            r.ack(SeqRange::new(Seq(oldest), Seq(oldest + 1)))?;
        }
    }
    Ok(())
}

fn evict_setup(r: &mut Run<'_>) -> Step {
    r.store.set_routine_policy(FullPolicy::EvictOldest);
    for _ in 0..22 {
        r.push(Lane::Routine, Severity::Info, 120)?;
    }
    Ok(())
}

fn evict_workload(r: &mut Run<'_>) -> Step {
    r.store.set_routine_policy(FullPolicy::EvictOldest);
    for i in 0..12usize {
        r.push(Lane::Routine, Severity::Info, 100 + i * 5)?;
    }
    Ok(())
}

fn decimate_workload(r: &mut Run<'_>) -> Step {
    for _ in 0..5 {
        r.decimate_oldest()?;
    }
    r.push(Lane::Alert, Severity::Critical, 30)?;
    r.decimate_oldest()
}

fn config_workload(r: &mut Run<'_>) -> Step {
    for version in 1..=12 {
        r.save_config(version)?;
        if version % 4 == 0 {
            r.push(Lane::Routine, Severity::Info, 64)?;
        }
    }
    Ok(())
}

/// Alerts come and go until the map has compacted several times.
fn alert_workload(r: &mut Run<'_>) -> Step {
    for i in 0..36usize {
        let severity = [Severity::Warning, Severity::Critical, Severity::Info][i % 3];
        r.push(Lane::Alert, severity, 30 + (i * 17) % 40)?;
        if i % 2 == 1 {
            let oldest = r
                .model
                .held
                .iter()
                .find(|(_, rec)| rec.lane == Lane::Alert)
                .map(|(s, _)| *s)
                .unwrap_or(0);
            r.ack(SeqRange::single(Seq(oldest)))?;
        }
    }
    Ok(())
}

fn nothing(_: &mut Run<'_>) -> Step {
    Ok(())
}

/// Everything the store holds, in delivery order.
fn contents(store: &mut Store) -> Vec<(u32, Rec)> {
    let mut out = Vec::new();
    for nth in 0..store.len() {
        let r = store
            .peek(nth)
            .expect("peek after recovery")
            .expect("record counted by len is there");
        out.push((
            r.seq.0,
            Rec {
                lane: r.meta.lane,
                severity: r.meta.severity,
                decimated: r.meta.decimated,
                payload: r.payload.to_vec(),
            },
        ));
    }
    assert!(store
        .peek(store.len())
        .expect("peek past the end")
        .is_none());
    out
}

/// Checks the re-mounted store against the model; returns records lost.
/// Settles the model: what the interrupted operation did is taken as done.
fn verify(store: &mut Store, model: &mut Model) -> usize {
    let found = contents(store);
    let mut seen = std::collections::BTreeSet::new();
    for (seq, _) in &found {
        assert!(seen.insert(*seq), "seq {seq} present twice");
    }
    // Order: alerts by severity then seq, then routine records; routine by
    // seq except decimated copies, which move to the back.
    let alerts: Vec<_> = found
        .iter()
        .filter(|(_, r)| r.lane == Lane::Alert)
        .collect();
    let routine: Vec<_> = found
        .iter()
        .filter(|(_, r)| r.lane == Lane::Routine)
        .collect();
    assert!(found
        .iter()
        .take(alerts.len())
        .all(|(_, r)| r.lane == Lane::Alert));
    for w in alerts.windows(2) {
        let key = |x: &(u32, Rec)| (std::cmp::Reverse(x.1.severity as u8), x.0);
        assert!(key(w[0]) < key(w[1]), "alert order {:?}", (w[0].0, w[1].0));
    }
    let plain: Vec<u32> = routine
        .iter()
        .filter(|(_, r)| !r.decimated)
        .map(|(s, _)| *s)
        .collect();
    assert!(
        plain.windows(2).all(|w| w[0] < w[1]),
        "routine order {plain:?}"
    );

    let mut lost = 0;
    let found: BTreeMap<u32, Rec> = found.into_iter().collect();
    let in_flight = model.in_flight.take();
    let mut settled = model.held.clone();
    match &in_flight {
        Some(Op::Push(seq, rec)) | Some(Op::PushEvicting(seq, rec)) => {
            if let Some(got) = found.get(seq) {
                assert_eq!(got, rec, "interrupted push stored wrong");
                settled.insert(*seq, rec.clone());
            }
        }
        Some(Op::Ack(range)) => {
            settled.retain(|s, _| !range.contains(Seq(*s)) || found.contains_key(s));
        }
        Some(Op::Replace(seq, rec)) => {
            if found.get(seq) == Some(rec) {
                settled.insert(*seq, rec.clone());
            }
        }
        Some(Op::Config(_)) | None => {}
    }
    if let Some(Op::PushEvicting(..)) = &in_flight {
        // Eviction removes the oldest routine records first.
        let routine_held: Vec<u32> = settled
            .iter()
            .filter(|(_, r)| r.lane == Lane::Routine)
            .map(|(s, _)| *s)
            .collect();
        let mut gone = true;
        for s in routine_held {
            if found.contains_key(&s) {
                gone = false;
            } else {
                assert!(gone, "evicted {s} but not an older record");
                settled.remove(&s);
            }
        }
    }
    for (seq, rec) in &settled {
        match found.get(seq) {
            Some(got) => assert_eq!(got, rec, "record {seq} changed"),
            None => lost += 1,
        }
    }
    for seq in found.keys() {
        assert!(
            settled.contains_key(seq),
            "record {seq} came back or was never accepted"
        );
    }
    let top = found
        .keys()
        .last()
        .copied()
        .into_iter()
        .chain(model.max_seq)
        .max();
    if let Some(top) = top {
        assert!(
            store.next_seq().0 > top,
            "sequence number {top} could be reused"
        );
    }
    model.held = settled;
    model.max_seq = top;

    // Config: the one in force, or the one being saved.
    let loaded = store
        .load_config(|cbor| ConfigUpdate::parse(cbor).map(|u| u.version()))
        .expect("config readable after recovery")
        .map(|parsed| parsed.expect("the saved config parses"));
    match (&in_flight, loaded) {
        (Some(Op::Config(v)), Some(l)) if l == *v => model.config = Some(l),
        (_, l) => assert_eq!(l, model.config, "config torn"),
    }
    lost
}

/// After recovery the store must work: push, read and acknowledge.
fn exercise(store: &mut Store, model: &mut Model) {
    let mut run = Run { store, model };
    run.store.set_routine_policy(FullPolicy::EvictOldest);
    run.push(Lane::Alert, Severity::Warning, 24)
        .expect("push after recovery");
    run.push(Lane::Routine, Severity::Info, 80)
        .expect("push after recovery");
    let len = contents(run.store).len();
    assert_eq!(len, run.model.held.len());
}

#[derive(Default)]
struct Counts {
    cut_points: u64,
    double_cuts: u64,
    mounts: u64,
    lost: usize,
}

fn sweep(name: &str, setup: Workload, work: Workload, double_every: u64, counts: &mut Counts) {
    // The image the workload starts from, and the model that goes with it.
    let (mut store, mounted) = open(Flash::new());
    mounted.expect("mount fresh flash");
    let mut model = Model::default();
    setup(&mut Run {
        store: &mut store,
        model: &mut model,
    })
    .expect("setup without cuts");
    let image = store.release().0;

    // The workload's cost in bytes written and erased, uncut.
    let (mut store, mounted) = open(image.clone());
    mounted.expect("mount");
    let start = store.flash().0.spent();
    work(&mut Run {
        store: &mut store,
        model: &mut model.clone(),
    })
    .expect("workload without cuts");
    let total = store.flash().0.spent() - start;

    let mut cuts = 0;
    for cut in 0..total {
        let mut flash = image.clone();
        flash.cut_after(cut);
        let (mut store, mounted) = open(flash);
        counts.mounts += 1;
        mounted.expect("mount before the cut");
        let mut m = model.clone();
        let done = work(&mut Run {
            store: &mut store,
            model: &mut m,
        });
        assert!(
            done.is_err(),
            "{name}: cut at {cut} of {total} did not happen"
        );
        assert!(store.flash().0.is_cut());
        cuts += 1;
        let mut flash = store.release().0;
        flash.power_on();

        if cut % double_every == 0 {
            // Measure what recovery writes, then cut at each of its bytes.
            let (mut store, mounted) = open(flash.clone());
            mounted.expect("mount after a cut");
            let before = store.flash().0.spent();
            let mut probe = m.clone();
            verify(&mut store, &mut probe);
            exercise(&mut store, &mut probe);
            let recovery = store.flash().0.spent() - before;
            for second in 0..recovery {
                let mut again = flash.clone();
                again.cut_after(second);
                let mut store = Store::new(again, layout()).expect("layout");
                counts.mounts += 1;
                let mut m2 = m.clone();
                let interrupted = match store.mount() {
                    Err(_) => true,
                    Ok(_) => {
                        verify(&mut store, &mut m2);
                        let mut run = Run {
                            store: &mut store,
                            model: &mut m2,
                        };
                        run.store.set_routine_policy(FullPolicy::EvictOldest);
                        run.push(Lane::Alert, Severity::Warning, 24)
                            .and_then(|()| run.push(Lane::Routine, Severity::Info, 80))
                            .is_err()
                    }
                };
                assert!(
                    interrupted,
                    "{name}: second cut at {second} of {recovery} did not happen"
                );
                let mut again = store.release().0;
                again.power_on();
                let (mut store, mounted) = open(again);
                counts.mounts += 1;
                mounted.expect("mount after a double cut");
                counts.lost += verify(&mut store, &mut m2);
                exercise(&mut store, &mut m2);
                counts.double_cuts += 1;
            }
        }

        let (mut store, mounted) = open(flash);
        counts.mounts += 1;
        mounted.unwrap_or_else(|e| panic!("{name}: mount after cut at {cut}: {e:?}"));
        counts.lost += verify(&mut store, &mut m);
        exercise(&mut store, &mut m);
    }
    counts.cut_points += cuts;
    println!("{name}: {total} bytes written and erased, {cuts} cut points");
}

#[test]
fn power_cut_at_every_byte_loses_nothing() {
    let mut counts = Counts::default();
    sweep("push", nothing, push_workload, 97, &mut counts);
    sweep("ack", ack_setup, ack_workload, 31, &mut counts);
    sweep("wrap", nothing, wrap_workload, 211, &mut counts);
    sweep("evict", evict_setup, evict_workload, 97, &mut counts);
    sweep("decimate", ack_setup, decimate_workload, 31, &mut counts);
    sweep("config", nothing, config_workload, 31, &mut counts);
    sweep("alerts", nothing, alert_workload, 97, &mut counts);
    println!(
        "power cuts: {} cut points, {} double cuts, {} mounts, {} records lost",
        counts.cut_points, counts.double_cuts, counts.mounts, counts.lost
    );
    assert_eq!(counts.lost, 0);
    assert!(
        counts.cut_points > 10_000,
        "the sweep shrank: {}",
        counts.cut_points
    );
}

#[test]
fn garbage_flash_never_panics_and_formats() {
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let (mut corrupted, mut mounted) = (0, 0);
    for round in 0..300 {
        let kind = round % 3;
        let seed = next();
        let flash = Flash::with_contents(|i| match kind {
            // Random bytes.
            0 => (seed.wrapping_mul(i as u64 + 1) >> 29) as u8,
            // Mostly erased, with random words.
            1 if (seed >> (i % 61)) & 7 == 0 => (seed >> (i % 53)) as u8,
            1 => 0xFF,
            // All zero.
            _ => 0,
        });
        let mut store = Store::new(flash, layout()).expect("layout");
        match store.mount() {
            Ok(_) => {
                mounted += 1;
                // Whatever it found, reading and writing must not panic.
                for nth in 0..store.len().min(8) {
                    let _ = store.peek(nth);
                }
                let _ = store.push(RecordMeta::routine(1), b"after garbage");
            }
            Err(_) => corrupted += 1,
        }
        store.format().expect("format");
        store.mount().expect("mount after format");
        let seq = store
            .push(RecordMeta::alert(Severity::Critical, 1), b"fresh")
            .expect("push");
        assert_eq!(store.peek(0).expect("peek").map(|r| r.seq), Some(seq));
    }
    println!("garbage flash: {mounted} mounted, {corrupted} refused as corrupted, all formatted");
}
