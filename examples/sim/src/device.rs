//! One device's whole simulation: the real engine over a faulty link to
//! the real server half, with power cycles, server restarts and, on
//! request, an attacker; every invariant checked as it goes.

use std::collections::{BTreeMap, HashMap, HashSet};

use telemark_core::channel::{ChannelSpec, Range, Unit, ValueKind};
use telemark_core::config::EngineConfig;
use telemark_core::engine::{Action, Boot, Engine};
use telemark_core::model::{ChannelId, Reading, Severity};
use telemark_core::rules::Rules;
use telemark_core::sensor::Sensor;
use telemark_core::stager::StagerConfig;
use telemark_core::store::{Lane, StoreCounters};
use telemark_core::time::{Duration, Instant};
use telemark_core::uplink::UplinkConfig;
use telemark_core::wire::frame::{Command, RecordsFrame, Response};
use telemark_core::wire::report::{Report, ResetReason};
use telemark_core::wire::seal::{open, Direction, Header, Key, Sealing};
use telemark_core::wire::{Epoch, Seq};
use telemark_sensors::synthetic::{Episode, Signal, Synthetic};
use telemark_server::{
    ConfigState, Contents, Keyring, MemoryStore, ReceiveError, RecordKey, Refusal, Server, Store,
};

use crate::attacker::Attacker;
use crate::link::{Link, Pieces, Rng};
#[cfg(feature = "service")]
use crate::remote::Delivery;
use crate::remote::Remote;
use crate::storage::{list, Listed, SimStore};
use crate::{Args, Totals, DAY, HOUR};

/// Unix ms at the start of the simulation.
pub const UNIX0: u64 = 1_700_000_000_000;
/// The engine's frame buffer: the largest MTU the simulator runs.
pub const MTU: usize = 512;

const BOILER: ChannelSpec = ChannelSpec::new(
    ChannelId(1),
    Unit::Celsius,
    ValueKind::Scaled { decimals: 2 },
    Range::new(0.0, 95.0),
    Duration::from_mins(5),
    Rules::NONE.high(75.0, 3.0, Severity::Critical),
);
const GAS: ChannelSpec = ChannelSpec::new(
    ChannelId(2),
    Unit::Count,
    ValueKind::Counter,
    Range::new(0.0, 4.0e9),
    Duration::from_mins(15),
    Rules::NONE,
);

type DeviceEngine<S> = Engine<S, 4, 256, MTU>;

/// Routine data, heartbeats and block sealing share one cadence, so one
/// wake-up carries all three.
pub const REPORT: Duration = Duration::from_mins(6 * 60);

fn engine_config(device: u64, mtu: u16, sealing: &Sealing) -> EngineConfig {
    let mut uplink = UplinkConfig::new(device, mtu, REPORT);
    // A failed session is retried at most once per report interval.
    uplink.max_backoff = REPORT;
    let mut config = EngineConfig {
        uplink,
        stager: StagerConfig::new(256, 440, REPORT),
        heartbeat: REPORT,
    };
    // Blocks as large as one frame carries.
    let room = telemark_core::engine::block_room(&config, sealing);
    config.stager.max_bytes = config.stager.max_bytes.min(room as u16);
    config
}

/// Config version 1: `{0: 1, 2: 43200}`.
const CONFIG_V1: [u8; 7] = [0xa2, 0x00, 0x01, 0x02, 0x19, 0xa8, 0xc0];
const COMMAND_ID: u32 = 7;

struct Sensors {
    boiler: Synthetic<1>,
    gas: Synthetic<1>,
}

fn sensors(device: u64, rng: &mut Rng, days: u64) -> Sensors {
    let mut boiler = Synthetic::new(
        [BOILER],
        [Signal::Sine {
            mean: 60.0,
            amplitude: 5.0,
            period: Duration::from_mins(24 * 60),
        }],
        device,
    )
    .with_noise(0.3);
    // A few overheating episodes per month.
    for _ in 0..(days / 10 + 1).min(6) {
        let from = rng.below(days.max(1) * DAY);
        let _ = boiler.schedule(Episode::Excursion {
            channel: 0,
            from: Instant::from_millis(from),
            until: Instant::from_millis(from + HOUR),
            offset: 25.0,
        });
    }
    let gas = Synthetic::new([GAS], [Signal::Pulses { per_sample: 2 }], device);
    Sensors { boiler, gas }
}

/// What the simulation knows that the server does not: when each boot
/// began, and which readings were produced.
#[derive(Default)]
struct Truth {
    boot_at: HashMap<Epoch, u64>,
    /// Readings delivered, by (channel, simulation time).
    delivered: HashMap<(u16, u64), (Epoch, Seq, u64)>,
}

/// The device and its boot.
struct Device<S: SimStore> {
    id: u64,
    sealing: Sealing,
    engine: DeviceEngine<S>,
    epoch: Epoch,
    boot_at: u64,
    radio_on: bool,
}

impl<S: SimStore> Device<S> {
    fn boot(
        id: u64,
        sealing: &Sealing,
        (store, epoch): (S, Epoch),
        at: u64,
        reason: ResetReason,
        mtu: u16,
    ) -> Result<Device<S>, String> {
        let sealing = sealing.clone();
        let boot = Boot {
            reset_reason: reason,
            epoch,
            sealing: sealing.clone(),
        };
        let config = engine_config(id, mtu, &sealing);
        let engine = DeviceEngine::new(&[BOILER, GAS], store, config, boot)
            .map_err(|e| format!("engine refused: {e:?}"))?;
        Ok(Device {
            id,
            sealing,
            engine,
            epoch,
            boot_at: at,
            radio_on: false,
        })
    }

    fn at(&self, now: u64) -> Instant {
        Instant::from_millis(now.saturating_sub(self.boot_at))
    }
}

/// A frame on the wire.
struct Wire {
    bytes: Vec<u8>,
    /// The epoch it was sent in (for the device's side).
    epoch: Epoch,
}

/// The server half and its store, as the host runs them.
struct Host {
    keyring: Keyring,
    server: Server,
    store: MemoryStore,
}

impl Host {
    /// The server process starts again; its store stays.
    fn restart(&mut self, totals: &mut Totals) {
        totals.add_server(self.server.counters());
        self.server = Server::new(self.keyring.clone());
    }
}

/// Where the device's frames go.
enum Home<'s, 'b> {
    /// The server half in this process.
    Local(Box<Host>),
    /// A running telemark-cloud, over a real transport.
    #[cfg(feature = "service")]
    Remote(Box<Remote<'s, 'b>>),
    /// A build without the service has none.
    #[cfg(not(feature = "service"))]
    Remote(Remote<'s, 'b>),
}

impl Home<'_, '_> {
    /// True if the server stored the record.
    fn holds(&self, key: &RecordKey) -> bool {
        match self {
            Home::Local(host) => host.store.records().contains_key(key),
            #[cfg(feature = "service")]
            Home::Remote(remote) => remote.holds(key),
            #[cfg(not(feature = "service"))]
            Home::Remote(remote) => remote.never(),
        }
    }
}

/// A power cut armed on the device's flash, and what the store held before
/// the engine call it may land in: enough to tell, after the reboot, what
/// the cut cost.
#[derive(Default)]
struct Watch {
    armed: bool,
    /// The store's records before the call.
    records: Vec<Listed>,
    /// The store's counters before the call.
    counters: StoreCounters,
    /// Readings in RAM before the call, and those the call was given.
    in_ram: u64,
    /// Flash bytes written when the ledger was taken.
    written: u64,
}

impl Watch {
    /// Arms a cut at a random byte of the next write or erase.
    fn arm<S: SimStore>(&mut self, engine: &mut DeviceEngine<S>, rng: &mut Rng) {
        self.armed = true;
        self.take(engine, true);
        engine.store_mut().cut_in_next(rng.next());
    }

    fn take<S: SimStore>(&mut self, engine: &mut DeviceEngine<S>, list_store: bool) {
        let store = engine.store_mut();
        if list_store || store.written() != self.written {
            self.written = store.written();
            self.records = store.snapshot();
        }
        self.counters = engine.store().counters();
        self.in_ram = engine.staged() as u64;
    }

    /// Takes back a cut that has not happened.
    fn disarm<S: SimStore>(&mut self, engine: &mut DeviceEngine<S>) {
        self.armed = false;
        engine.store_mut().disarm();
    }

    /// After an engine call that was given `fed` readings: true if the
    /// power went during it.
    fn after<S: SimStore>(&mut self, engine: &mut DeviceEngine<S>, fed: u64) -> bool {
        if !self.armed {
            return false;
        }
        if engine.store().is_cut() {
            self.armed = false;
            self.in_ram += fed;
            return true;
        }
        self.take(engine, false);
        false
    }
}

/// What the device accounts for at its end or at a power cycle.
#[derive(Default)]
struct Ledger {
    produced: u64,
    lost_unsealed: u64,
    evicted: u64,
    decimated: u64,
    /// Routine records lost with RAM at power cycles: (epoch, seq, readings).
    lost_blocks: Vec<(Epoch, Seq, u64)>,
    /// Routine records the store evicted to start a boot, counted by its
    /// counters: (epoch, seq, readings). The store cannot know whether
    /// the server already holds one (its ack lost); those are delivered.
    evicted_at_boot: Vec<(Epoch, Seq, u64)>,
}

impl Ledger {
    /// Readings a store's counters say were dropped by policy.
    fn count_store(&mut self, c: StoreCounters) {
        self.evicted +=
            u64::from(c.routine.evicted_readings) + u64::from(c.routine.refused_readings);
        self.decimated += u64::from(c.routine.decimated_readings);
    }
}

/// The action with its frame copied out, so that the engine can be called
/// again before it is carried out.
fn owned(action: Action<'_>) -> (Action<'static>, Vec<u8>) {
    match action {
        Action::Send(frame) => (Action::Send(&[]), frame.to_vec()),
        Action::Sample(ch) => (Action::Sample(ch), Vec::new()),
        Action::RadioOn => (Action::RadioOn, Vec::new()),
        Action::RadioOff => (Action::RadioOff, Vec::new()),
        Action::SetOutput { output, value } => (Action::SetOutput { output, value }, Vec::new()),
        Action::Reboot => (Action::Reboot, Vec::new()),
        Action::Sleep(t) => (Action::Sleep(t), Vec::new()),
    }
}

/// Settles a power cut: what the store held before the call the power
/// went in (`watch`) against what it holds after the reboot (`after`).
/// Every sealed record must be there, or acknowledged (on the server), or
/// evicted oldest first, or be a heartbeat replaced unsent; readings in
/// RAM not sealed into a surviving record are lost unsealed.
fn settle_cut(
    device: u64,
    watch: &Watch,
    after: &[Listed],
    evicted_at_boot: &[Listed],
    home: &Home<'_, '_>,
    ledger: &mut Ledger,
    totals: &mut Totals,
) {
    let on_server = |l: &Listed| {
        l.epoch.is_some_and(|epoch| {
            home.holds(&RecordKey {
                device,
                epoch,
                seq: l.seq,
            })
        })
    };
    let now: HashMap<Seq, &Listed> = after.iter().map(|l| (l.seq, l)).collect();
    let mut kept_older = false;
    let mut evicted = 0;
    for before in &watch.records {
        match now.get(&before.seq) {
            Some(kept) => {
                if before.lane == Lane::Routine {
                    kept_older = true;
                }
                if kept.readings < before.readings && kept.decimated {
                    ledger.decimated += before.readings - kept.readings;
                } else if kept.readings != before.readings {
                    totals.sealed_records_lost += 1;
                    totals.violation(format!(
                        "device {device}: record {:?} changed at a power cut",
                        before.seq
                    ));
                }
            }
            None if on_server(before) => {}
            // Counted by the store's counters.
            None if evicted_at_boot.iter().any(|l| l.seq == before.seq) => {}
            None if before.lane == Lane::Alert && before.heartbeat => {}
            None if before.lane == Lane::Routine && !kept_older => {
                evicted += before.readings;
            }
            None => {
                totals.sealed_records_lost += 1;
                totals.violation(format!(
                    "device {device}: sealed record {:?} ({:?}) lost at a power cut",
                    before.seq, before.lane
                ));
            }
        }
    }
    ledger.evicted += evicted;
    let known: HashSet<Seq> = watch.records.iter().map(|l| l.seq).collect();
    let sealed: u64 = after
        .iter()
        .filter(|l| l.lane == Lane::Routine && !known.contains(&l.seq))
        .map(|l| l.readings)
        .sum();
    match watch.in_ram.checked_sub(sealed) {
        Some(lost) => ledger.lost_unsealed += lost,
        None => totals.violation(format!(
            "device {device}: {sealed} readings sealed at a power cut, {} were in RAM",
            watch.in_ram
        )),
    }
}

/// The time to the next of events that come `per_day` times a day on
/// average: uniform up to twice the mean, never zero; never for a rate of 0.
fn gap(rng: &mut Rng, per_day: f64) -> u64 {
    if per_day > 0.0 {
        1 + (rng.unit() * 2.0 * DAY as f64 / per_day) as u64
    } else {
        u64::MAX
    }
}

/// Runs one device for the whole simulation: against the server half in
/// this process, or, given `remote`, against a running telemark-cloud.
pub fn run<S: SimStore>(
    device: u64,
    remote: Option<Remote<'_, '_>>,
    args: &Args,
    totals: &mut Totals,
) {
    let mut rng = Rng(args.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ device.wrapping_add(1));
    let end = args.days * DAY;
    let mut outages = Vec::new();
    if args.partition_hours > 0 {
        // About one outage every five days, of the given length.
        let mut t = rng.below(5 * DAY);
        while t < end {
            outages.push((t, t + args.partition_hours * HOUR));
            t += args.partition_hours * HOUR + rng.below(10 * DAY);
        }
    }
    let mut link = Link {
        loss: args.loss,
        dup: args.loss / 3.0,
        max_delay_ms: 3_000,
        partitions: Vec::new(),
        outages,
    };
    // Server restarts: the link is up but the server answers nothing for
    // ten minutes, about weekly; the server process starts anew.
    let mut restarts = Vec::new();
    let mut t = rng.below(7 * DAY);
    // A running service restarts when its operator says so.
    if remote.is_some() {
        t = end;
    }
    while t < end {
        link.partitions.push((t, t + 10 * 60_000));
        restarts.push(t);
        t += 7 * DAY + rng.below(DAY);
    }
    let mut key_bytes = [0u8; 32];
    for b in key_bytes.iter_mut() {
        *b = rng.next() as u8;
    }
    let (mut home, sealing) = match remote {
        Some(remote) => {
            let sealing = remote.sealing();
            #[cfg(feature = "service")]
            let home = Home::Remote(Box::new(remote));
            #[cfg(not(feature = "service"))]
            let home = Home::Remote(remote);
            (home, sealing)
        }
        None => {
            let key = Key::from_bytes(key_bytes);
            let mut keyring = Keyring::new();
            keyring.insert(device, 1, key.clone());
            let host = Host {
                server: Server::new(keyring.clone()),
                keyring,
                store: MemoryStore::new(),
            };
            (Home::Local(Box::new(host)), Sealing::key(1, key))
        }
    };
    let mut outbox_set = false;
    let attacker = args.attacker.then(|| Attacker::new(&mut rng));
    let mut attacker = attacker;
    let mut sensors = sensors(device, &mut rng, args.days);
    let mut truth = Truth::default();

    let booted = S::first(&mut rng)
        .and_then(|first| Device::boot(device, &sealing, first, 0, ResetReason::PowerOn, args.mtu));
    let mut dev = match booted {
        Ok(dev) => dev,
        Err(e) => {
            totals.violation(format!("device {device}: {e}"));
            return;
        }
    };
    truth.boot_at.insert(dev.epoch, 0);
    totals.epochs += 1;
    // Frames on the wire, by arrival time: responses to the device,
    // records to the server.
    let mut to_device: BTreeMap<u64, Vec<Wire>> = BTreeMap::new();
    let mut to_server: BTreeMap<u64, Vec<Wire>> = BTreeMap::new();
    // Frames in pieces on a link of small packets (`--mtu` below a frame).
    let mut up = Pieces::new(args.link_mtu);
    let mut down = Pieces::new(args.link_mtu);
    let mut ledger = Ledger::default();
    let mut wakeups = 0u64;
    let mut next_reboot = if args.reboots_per_day > 0.0 {
        (rng.unit() * DAY as f64 / args.reboots_per_day) as u64
    } else {
        u64::MAX
    };
    let mut next_cut = gap(&mut rng, args.power_cuts_per_day);
    let mut watch = Watch::default();
    // The power went in the middle of a write.
    let mut cut = false;
    let mut now = 0u64;
    let drain_until = end + 30 * DAY;

    loop {
        let healed = now >= end;
        // A power cycle: RAM is lost, and with it a RAM store.
        if cut || (now >= next_reboot && !healed) {
            totals.add_engine(&dev.engine);
            if cut {
                totals.power_cuts += 1;
                ledger.count_store(watch.counters);
            } else {
                ledger.lost_unsealed += dev.engine.staged() as u64;
                ledger.count_store(dev.engine.store().counters());
                if !S::PERSISTENT {
                    let epoch = dev.epoch;
                    ledger.lost_blocks.extend(
                        list(dev.engine.store_mut())
                            .iter()
                            .filter(|r| r.lane == Lane::Routine)
                            .map(|r| (epoch, r.seq, r.readings)),
                    );
                }
                next_reboot = now.saturating_add(gap(&mut rng, args.reboots_per_day));
            }
            // A cut while armed with no write since is a clean cycle.
            watch.armed = false;
            let store = dev.engine.into_store();
            let rebooted = store
                .power_cycle(&mut rng)
                .and_then(|(mut store, epoch, at_boot)| {
                    if cut {
                        let after = list(&mut store);
                        settle_cut(device, &watch, &after, &at_boot, &home, &mut ledger, totals);
                    }
                    ledger
                        .evicted_at_boot
                        .extend(at_boot.iter().filter_map(|l| {
                            let epoch = l.epoch?;
                            (l.lane == Lane::Routine).then_some((epoch, l.seq, l.readings))
                        }));
                    // A millisecond on: no reading of the new boot shares an
                    // instant with one of the old.
                    Device::boot(
                        device,
                        &sealing,
                        (store, epoch),
                        now + 1,
                        ResetReason::PowerOn,
                        args.mtu,
                    )
                });
            up.sender_rebooted(rng.next());
            down.receiver_rebooted();
            match rebooted {
                Ok(d) => dev = d,
                Err(e) => {
                    totals.violation(format!("device {device}: at reboot: {e}"));
                    return;
                }
            }
            cut = false;
            if let Some(old) = truth.boot_at.insert(dev.epoch, dev.boot_at) {
                totals.violation(format!(
                    "device {device}: epoch {:?} of the boot at {old} again at {}",
                    dev.epoch, dev.boot_at
                ));
            }
            totals.epochs += 1;
        }
        if now >= next_cut && !healed && !watch.armed {
            next_cut = now.saturating_add(gap(&mut rng, args.power_cuts_per_day));
            if S::PERSISTENT {
                // The power goes at a random byte of the next write.
                watch.arm(&mut dev.engine, &mut rng);
            } else {
                // Without flash, a cut is a power cycle like any other.
                next_reboot = now;
            }
        }
        if restarts.first().is_some_and(|&t| t <= now) {
            restarts.remove(0);
            if let Home::Local(host) = &mut home {
                host.restart(totals);
            }
        }
        // Frames arriving at the server.
        while let Some((&t, _)) = to_server.first_key_value() {
            if t > now {
                break;
            }
            for piece in to_server.remove(&t).unwrap_or_default() {
                let Some(bytes) = up.join(&piece.bytes) else {
                    continue;
                };
                let wire = Wire {
                    bytes,
                    epoch: piece.epoch,
                };
                if t >= DAY && !outbox_set {
                    // From day two on, the server wants config version 1
                    // and valve 1 open.
                    outbox_set = true;
                    want_config_and_valve(&mut home, device, totals);
                }
                let answers = match &mut home {
                    Home::Local(host) => {
                        if let Some(attacker) = &attacker {
                            if rng.unit() < 0.05 {
                                let (attack, frame) =
                                    attacker.up(&mut rng, device, wire.epoch, &wire.bytes);
                                totals.attack_frames += 1;
                                match host.server.receive(&mut host.store, &frame, UNIX0 + t) {
                                    Err(ReceiveError::Refused(_)) => {
                                        totals.attack_frames_refused += 1
                                    }
                                    other => totals.violation(format!(
                                        "device {device}: {attack:?} frame not refused: {:?}",
                                        other.map(|r| r.batch.records.len())
                                    )),
                                }
                            }
                        }
                        let latency = 2 * link.max_delay_ms + 50;
                        let Some(response) = server_receives(
                            host,
                            &dev,
                            &wire,
                            t,
                            latency,
                            args.link_mtu.is_some(),
                            &mut truth,
                            totals,
                        ) else {
                            continue;
                        };
                        if let Some(attacker) = &mut attacker {
                            attacker.stored_frames.push(wire.bytes.clone());
                            if attacker.stored_frames.len() > 16 {
                                attacker.stored_frames.remove(0);
                            }
                        }
                        vec![response]
                    }
                    #[cfg(not(feature = "service"))]
                    Home::Remote(remote) => remote.never(),
                    #[cfg(feature = "service")]
                    Home::Remote(remote) => service_receives(
                        remote,
                        &dev,
                        &wire,
                        t,
                        args.link_mtu.is_some(),
                        &truth,
                        totals,
                    ),
                };
                for answer in answers {
                    for bytes in down.cut(&answer) {
                        for arrival in link.carry(t, &mut rng, t >= end) {
                            to_device.entry(arrival).or_default().push(Wire {
                                bytes: bytes.clone(),
                                epoch: wire.epoch,
                            });
                        }
                    }
                }
            }
        }
        // Responses arriving at the device.
        'arrivals: while let Some((&t, _)) = to_device.first_key_value() {
            if t > now {
                break;
            }
            for piece in to_device.remove(&t).unwrap_or_default() {
                if !dev.radio_on || piece.epoch != dev.epoch {
                    continue;
                }
                let Some(bytes) = down.join(&piece.bytes) else {
                    continue;
                };
                let wire = Wire {
                    bytes,
                    epoch: piece.epoch,
                };
                let at = dev.at(now);
                if let Some(attacker) = &attacker {
                    if rng.unit() < 0.05 {
                        let counter = Header::parse(&wire.bytes).map_or(1, |(h, _)| h.counter);
                        let (attack, mut frame) =
                            attacker.down(&mut rng, device, dev.epoch, counter, &wire.bytes);
                        totals.forged_downlinks += 1;
                        let before = dev.engine.store().len();
                        let taken = dev.engine.on_frame(at, &mut frame);
                        if taken.is_ok() || dev.engine.store().len() != before {
                            totals.violation(format!(
                                "device {device}: a {attack:?} downlink was taken"
                            ));
                        } else {
                            totals.forged_downlinks_refused += 1;
                        }
                        if watch.after(&mut dev.engine, 0) {
                            cut = true;
                            break 'arrivals;
                        }
                    }
                }
                let mut bytes = wire.bytes.clone();
                let taken = dev.engine.on_frame(at, &mut bytes).is_ok();
                if watch.after(&mut dev.engine, 0) {
                    cut = true;
                    break 'arrivals;
                }
                if taken {
                    if let Some(attacker) = &mut attacker {
                        attacker.accepted_responses.push(wire.bytes);
                        if attacker.accepted_responses.len() > 16 {
                            attacker.accepted_responses.remove(0);
                        }
                    }
                }
            }
        }
        if cut {
            continue;
        }
        if dev.radio_on && link.down(now) && !healed {
            dev.radio_on = false;
            let at = dev.at(now);
            dev.engine.on_link_down(at);
            if watch.after(&mut dev.engine, 0) {
                cut = true;
                continue;
            }
        }
        // The device.
        let sleep_until = loop {
            let at = dev.at(now);
            let (action, frame) = owned(dev.engine.poll(at));
            if watch.after(&mut dev.engine, 0) {
                cut = true;
                break 0;
            }
            match action {
                Action::Sample(ch) => {
                    if healed {
                        continue;
                    }
                    // The plant runs on simulation time; the device stamps
                    // its readings with its own uptime.
                    let sim = Instant::from_millis(now);
                    let mut out: heapless::Vec<Reading, 2> = heapless::Vec::new();
                    let result = if ch == BOILER.id {
                        sensors.boiler.sample(sim, &mut out)
                    } else {
                        sensors.gas.sample(sim, &mut out)
                    };
                    match result {
                        Ok(()) => {
                            for mut r in out {
                                r.time = at;
                                ledger.produced += 1;
                                dev.engine.on_reading(at, r);
                                if watch.after(&mut dev.engine, 1) {
                                    cut = true;
                                    break;
                                }
                            }
                        }
                        Err(kind) => {
                            dev.engine.on_sample_failed(at, ch, kind);
                            cut = watch.after(&mut dev.engine, 0);
                        }
                    }
                    if cut {
                        break 0;
                    }
                }
                Action::RadioOn => {
                    wakeups += 1;
                    if link.down(now) && !healed {
                        // No network to attach to: the modem says so.
                        dev.engine.on_link_down(at);
                        if watch.after(&mut dev.engine, 0) {
                            cut = true;
                            break 0;
                        }
                    } else {
                        dev.radio_on = true;
                    }
                }
                Action::RadioOff => dev.radio_on = false,
                Action::Send(_) => {
                    check_alerts_first(&mut dev, &frame, totals);
                    for bytes in up.cut(&frame) {
                        for arrival in link.carry(now, &mut rng, healed) {
                            to_server.entry(arrival).or_default().push(Wire {
                                bytes: bytes.clone(),
                                epoch: dev.epoch,
                            });
                        }
                    }
                    dev.engine.on_sent(at);
                    if watch.after(&mut dev.engine, 0) {
                        cut = true;
                        break 0;
                    }
                }
                Action::SetOutput { .. } => totals.outputs_set += 1,
                Action::Reboot => next_reboot = now,
                Action::Sleep(t) => break t.as_millis() + dev.boot_at,
            }
        };
        if cut {
            continue;
        }
        totals.max_store_bytes = totals
            .max_store_bytes
            .max(dev.engine.store().used(Lane::Routine) + dev.engine.store().used(Lane::Alert));
        if healed && now == end {
            // The field trial is over: seal what is staged and send it all.
            let at = dev.at(now);
            // No cut after the field trial.
            watch.disarm(&mut dev.engine);
            dev.engine.flush_now(at);
        }
        let mut next = sleep_until.max(now + 1);
        for queue in [&to_server, &to_device] {
            if let Some((&t, _)) = queue.first_key_value() {
                next = next.min(t.max(now + 1));
            }
        }
        if now < end {
            next = next.min(end).min(next_reboot.max(now + 1));
            if !watch.armed {
                next = next.min(next_cut.max(now + 1));
            }
            if let Some(&r) = restarts.first() {
                next = next.min(r.max(now + 1));
            }
            // Notice an outage beginning while the radio is on.
            if dev.radio_on {
                if let Some(&(a, _)) = link.outages.iter().find(|&&(a, _)| a > now) {
                    next = next.min(a);
                }
            }
        }
        if now >= end
            && dev.engine.store().is_empty()
            && dev.engine.staged() == 0
            && to_server.is_empty()
        {
            break;
        }
        if next >= drain_until {
            totals.violation(format!(
                "device {device}: {} records never delivered after the link healed",
                dev.engine.store().len()
            ));
            break;
        }
        now = next;
    }

    let lost_on_power_cycle: u64 = ledger
        .lost_blocks
        .iter()
        .filter(|(epoch, seq, _)| {
            !home.holds(&RecordKey {
                device,
                epoch: *epoch,
                seq: *seq,
            })
        })
        .map(|(_, _, n)| n)
        .sum();
    ledger.count_store(dev.engine.store().counters());
    let held: u64 = ledger
        .evicted_at_boot
        .iter()
        .filter(|(epoch, seq, _)| {
            home.holds(&RecordKey {
                device,
                epoch: *epoch,
                seq: *seq,
            })
        })
        .map(|(_, _, n)| n)
        .sum();
    ledger.evicted = ledger.evicted.saturating_sub(held);
    let Ledger {
        produced,
        lost_unsealed,
        evicted,
        decimated,
        ..
    } = ledger;
    let (delivered, config, answered) = match &mut home {
        Home::Local(host) => {
            let outbox = host.store.outbox(device).unwrap_or_default();
            let answered = outbox
                .commands
                .iter()
                .any(|c| c.id == COMMAND_ID && c.result.is_some());
            totals.conflicts_stored += host.store.conflicts().len() as u64;
            totals.add_server(host.server.counters());
            let config = outbox.config.map(|c| c.state);
            (
                truth.delivered.len() as u64,
                (config == Some(ConfigState::Applied), format!("{config:?}")),
                answered,
            )
        }
        #[cfg(feature = "service")]
        Home::Remote(remote) => settle_remote(remote, totals),
        #[cfg(not(feature = "service"))]
        Home::Remote(remote) => remote.never(),
    };
    if produced != delivered + evicted + decimated + lost_unsealed + lost_on_power_cycle {
        totals.violation(format!(
            "device {device}: produced {produced} != delivered {delivered} + evicted {evicted} \
             + decimated {decimated} + lost unsealed {lost_unsealed} + lost with RAM \
             {lost_on_power_cycle}"
        ));
    }
    let (config_applied, config_state) = config;
    if args.days >= 2 {
        if !config_applied {
            totals.violation(format!(
                "device {device}: config version 1 never applied: {config_state}"
            ));
        }
        if !answered {
            totals.violation(format!("device {device}: command never answered"));
        }
    }
    totals.configs_applied += u64::from(config_applied);
    totals.commands_answered += u64::from(answered);
    totals.add_engine(&dev.engine);
    totals.produced += produced;
    totals.delivered += delivered;
    totals.evicted += evicted;
    totals.decimated += decimated;
    totals.lost_unsealed += lost_unsealed;
    totals.lost_on_power_cycle += lost_on_power_cycle;
    totals.wakeups += wakeups;
    totals.fragments_sent += up.sent + down.sent;
    totals.fragmented_frames_incomplete += up.incomplete() + down.incomplete();
    totals.routine_flushes += args.days * DAY / REPORT.as_millis();
    totals.device_days += args.days as f64;
}

/// The day-two outbox: config version 1 and valve 1 open.
fn want_config_and_valve(home: &mut Home<'_, '_>, device: u64, totals: &mut Totals) {
    let open_valve = Command::SetOutput {
        output: 1,
        value: 1,
    };
    let refused = match home {
        Home::Local(host) => host
            .store
            .set_config(device, 1, &CONFIG_V1)
            .and_then(|_| host.store.queue_command(device, COMMAND_ID, open_valve))
            .err()
            .map(|e| format!("{e:?}")),
        #[cfg(not(feature = "service"))]
        Home::Remote(remote) => remote.never(),
        #[cfg(feature = "service")]
        Home::Remote(remote) => match remote.service.want(device, &CONFIG_V1, 1, 1) {
            Ok(id) => {
                remote.command = Some(id);
                None
            }
            Err(e) => Some(e),
        },
    };
    if let Some(e) = refused {
        totals.violation(format!("device {device}: outbox refused: {e}"));
    }
}

#[cfg(feature = "service")]
/// The running service takes a frame that arrived at `t`, over the real
/// transport: what it sent down. The alerts the frame carries that the
/// service had not stored count for the alert latency.
fn service_receives<S: SimStore>(
    remote: &mut Remote<'_, '_>,
    dev: &Device<S>,
    wire: &Wire,
    t: u64,
    fragmented: bool,
    truth: &Truth,
    totals: &mut Totals,
) -> Vec<Vec<u8>> {
    let device = dev.id;
    let mut opened = wire.bytes.clone();
    let Some(frame) = own_frame(dev, &mut opened, fragmented, totals) else {
        return Vec::new();
    };
    let raised: Vec<(RecordKey, u64)> = frame
        .records()
        .filter_map(|r| {
            let key = RecordKey {
                device: remote.id,
                epoch: r.epoch,
                seq: r.record.seq,
            };
            match Report::decode(r.record.payload) {
                Ok(Report::Alert(alert))
                    if r.record.meta.lane == Lane::Alert
                        && alert.severity >= Severity::Warning
                        && !remote.holds(&key) =>
                {
                    let boot_at = truth.boot_at.get(&r.epoch)?;
                    Some((key, boot_at + alert.time.as_millis()))
                }
                _ => None,
            }
        })
        .collect();
    match remote.deliver(&wire.bytes) {
        Ok(Delivery::Answered(answers)) => {
            for (key, at) in raised {
                if remote.holds(&key) {
                    totals.alert_latency_ms.push(t.saturating_sub(at));
                }
            }
            answers
        }
        Ok(Delivery::Replay(answers)) => {
            totals.link_replays_refused += 1;
            answers
        }
        Err(e) => {
            totals.violation(format!("device {device}: {e}"));
            Vec::new()
        }
    }
}

#[cfg(feature = "service")]
/// At a remote device's end: what the service acknowledged against what
/// its API counts. Readings delivered, whether config version 1 applied
/// (and where it stands), whether the command was answered.
fn settle_remote(remote: &mut Remote<'_, '_>, totals: &mut Totals) -> (u64, (bool, String), bool) {
    remote.close();
    totals.duplicates_received += remote.duplicates;
    let device = remote.id;
    let (readings, alerts) = remote.acknowledged();
    match remote.service.account(device, remote.command) {
        Ok(account) => {
            if account.readings != readings {
                totals.duplicates_stored += account.readings.saturating_sub(readings);
                totals.violation(format!(
                    "device {device}: the API counts {} readings, the service acknowledged {readings}",
                    account.readings
                ));
            }
            if account.alerts != alerts {
                totals.violation(format!(
                    "device {device}: the API lists {} alerts, the service acknowledged {alerts}",
                    account.alerts
                ));
            }
            (
                readings,
                (account.config_applied, account.config_state),
                account.command_answered,
            )
        }
        Err(e) => {
            totals.violation(format!("device {device}: {e}"));
            (readings, (false, e), false)
        }
    }
}

/// The server takes a records frame that arrived at `t`; checks that it
/// classified each record as the store says it should, that reading times
/// are right to within the link's `latency`, and that the response
/// acknowledges only what is stored. Returns the response. On a
/// `fragmented` link a frame that does not open is pieces of two frames
/// mixed, counted; anywhere else it is a violation.
#[allow(clippy::too_many_arguments)]
fn server_receives<S: SimStore>(
    host: &mut Host,
    dev: &Device<S>,
    wire: &Wire,
    t: u64,
    latency: u64,
    fragmented: bool,
    truth: &mut Truth,
    totals: &mut Totals,
) -> Option<Vec<u8>> {
    let device = dev.id;
    // What the store holds of the frame's records, before.
    let mut opened = wire.bytes.clone();
    let frame = own_frame(dev, &mut opened, fragmented, totals)?;
    let (mut new, mut dup, mut conflict) = (0usize, 0u32, 0usize);
    let mut keys = Vec::new();
    for r in frame.records() {
        let key = RecordKey {
            device,
            epoch: r.epoch,
            seq: r.record.seq,
        };
        keys.push(key);
        match host.store.records().get(&key) {
            None => new += 1,
            Some(stored) if stored.payload == r.record.payload => dup += 1,
            Some(_) => conflict += 1,
        }
    }
    let received = match host.server.receive(&mut host.store, &wire.bytes, UNIX0 + t) {
        Ok(r) => r,
        // A copy the link duplicated: refused as a replay, and harmless.
        Err(ReceiveError::Refused(Refusal::Replayed)) => {
            totals.link_replays_refused += 1;
            return None;
        }
        Err(e) => {
            totals.violation(format!("device {device}: frame refused: {e}"));
            return None;
        }
    };
    let batch = &received.batch;
    if (batch.records.len(), batch.duplicates, batch.conflicts.len()) != (new, dup, conflict) {
        totals.violation(format!(
            "device {device}: classified {} new, {} duplicate, {} conflict; the store says \
             {new}, {dup}, {conflict}",
            batch.records.len(),
            batch.duplicates,
            batch.conflicts.len()
        ));
    }
    totals.duplicates_received += u64::from(batch.duplicates);
    for r in &batch.records {
        let Some(&boot_at) = truth.boot_at.get(&r.epoch) else {
            totals.violation(format!("device {device}: a record of an unknown epoch"));
            continue;
        };
        match &r.contents {
            Contents::Readings(readings) => {
                totals.block_bytes += r.payload.len() as u64;
                totals.block_readings += readings.len() as u64;
                for timed in readings {
                    let sim = boot_at + timed.reading.time.as_millis();
                    if let Some(first) = truth
                        .delivered
                        .insert((timed.reading.channel.0, sim), (r.epoch, r.seq, t))
                    {
                        totals.duplicates_stored += 1;
                        totals.violation(format!(
                            "device {device}: reading {:?} stored twice (epoch {:?}, seq {:?}, boot at {boot_at}, t {t}; first {first:?})",
                            timed.reading, r.epoch, r.seq
                        ));
                    }
                    match timed.unix_ms {
                        Some(u) => {
                            let error = u.abs_diff((UNIX0 + sim) as i64);
                            totals.time_error_max_ms = totals.time_error_max_ms.max(error);
                            if error > latency {
                                totals.violation(format!(
                                    "device {device}: Unix time off by {error} ms, more than \
                                     the link's latency"
                                ));
                            }
                        }
                        None => totals.time_unknown += 1,
                    }
                }
            }
            Contents::Report {
                report: Report::Alert(alert),
                ..
            } if alert.severity >= Severity::Warning => {
                // Latency of the alerts that wake the radio.
                let raised = boot_at + alert.time.as_millis();
                totals.alert_latency_ms.push(t.saturating_sub(raised));
            }
            Contents::Report {
                report: Report::ConfigStatus { code, detail, .. },
                ..
            } if *code != 0 && *code != 3 => totals.violation(format!(
                "device {device}: config refused, code {code} detail {detail}"
            )),
            Contents::Unknown => totals.violation(format!(
                "device {device}: an alert record of no known report"
            )),
            _ => {}
        }
    }
    // Nothing acknowledged that is not stored.
    let mut response = received.response.clone();
    match open(&mut response, &dev.sealing, Direction::Down)
        .ok()
        .and_then(|(h, body)| Response::parse(&h, body).ok())
    {
        Some(parsed) => {
            for range in parsed.ranges() {
                for key in keys.iter().filter(|k| range.contains(k.seq)) {
                    let stored =
                        host.store.records().contains_key(key)
                            || host.store.conflicts().iter().any(|(d, c)| {
                                *d == device && c.epoch == key.epoch && c.seq == key.seq
                            });
                    if !stored {
                        totals.violation(format!(
                            "device {device}: {key:?} acknowledged, not stored"
                        ));
                    }
                }
            }
        }
        None => totals.violation(format!("device {device}: the response does not open")),
    }
    Some(received.response)
}

/// One of the device's own frames, opened in `bytes`. On a `fragmented`
/// link a frame that does not open is pieces of two frames under one tag
/// (a frame cut short, then another): the seal refuses the mix, as the
/// server does; lost on the link and resent, it is counted. Anywhere else
/// it is a violation.
fn own_frame<'f, S: SimStore>(
    dev: &Device<S>,
    bytes: &'f mut [u8],
    fragmented: bool,
    totals: &mut Totals,
) -> Option<RecordsFrame<'f>> {
    let device = dev.id;
    let Ok((header, body)) = open(bytes, &dev.sealing, Direction::Up) else {
        if fragmented {
            totals.fragmented_frames_mixed += 1;
        } else {
            totals.violation(format!("device {device}: its own frame does not open"));
        }
        return None;
    };
    let frame = RecordsFrame::parse(&header, body);
    if frame.is_err() {
        totals.violation(format!("device {device}: its own frame does not parse"));
    }
    frame.ok()
}

/// A frame that carries routine data must carry every pending alert first.
fn check_alerts_first<S: SimStore>(dev: &mut Device<S>, frame: &[u8], totals: &mut Totals) {
    let device = dev.id;
    let mut bytes = frame.to_vec();
    let parsed = open(&mut bytes, &dev.sealing, Direction::Up)
        .ok()
        .and_then(|(h, body)| RecordsFrame::parse(&h, body).ok());
    let Some(parsed) = parsed else {
        totals.violation(format!("device {device}: sent an unparsable frame"));
        return;
    };
    let lanes: Vec<Lane> = parsed.records().map(|r| r.record.meta.lane).collect();
    if let Some(i) = lanes.iter().position(|l| *l == Lane::Routine) {
        if lanes
            .get(i..)
            .is_some_and(|rest| rest.contains(&Lane::Alert))
        {
            totals.violation(format!(
                "device {device}: routine record ahead of an alert in a frame"
            ));
        }
        let mut pending_alerts = 0;
        if dev.engine.store().used(Lane::Alert) > 0 {
            let _ = dev.engine.store_mut().visit(|r| {
                pending_alerts += usize::from(r.meta.lane == Lane::Alert);
                r.meta.lane == Lane::Alert
            });
        }
        if pending_alerts > i {
            totals.violation(format!(
                "device {device}: routine data sent while alerts waited"
            ));
        }
    }
}
