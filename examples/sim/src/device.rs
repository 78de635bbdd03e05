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
use telemark_core::store::{FullPolicy, Lane, RamStore, RecordStore};
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
use crate::link::{Link, Rng};
use crate::{Args, Totals, DAY, HOUR};

/// Unix ms at the start of the simulation.
pub const UNIX0: u64 = 1_700_000_000_000;
const MTU: usize = 512;

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

type DeviceStore = RamStore<1024, 8192>;
type DeviceEngine = Engine<DeviceStore, 4, 256, MTU>;

/// Routine data, heartbeats and block sealing share one cadence, so one
/// wake-up carries all three.
pub const REPORT: Duration = Duration::from_mins(6 * 60);

fn engine_config(device: u64) -> EngineConfig {
    let mut uplink = UplinkConfig::new(device, MTU as u16, REPORT);
    // A failed session is retried at most once per report interval.
    uplink.max_backoff = REPORT;
    EngineConfig {
        uplink,
        stager: StagerConfig::new(256, 440, REPORT),
        heartbeat: REPORT,
    }
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
    delivered: HashSet<(u16, u64)>,
}

/// The device, its boot, and what its lost boots left behind.
struct Device {
    id: u64,
    sealing: Sealing,
    engine: DeviceEngine,
    epoch: Epoch,
    boot_at: u64,
    radio_on: bool,
}

impl Device {
    fn boot(id: u64, key: &Key, epoch: Epoch, at: u64, reason: ResetReason) -> Option<Device> {
        let sealing = Sealing::key(1, key.clone());
        let boot = Boot {
            reset_reason: reason,
            epoch,
            sealing: sealing.clone(),
        };
        let store = DeviceStore::new(FullPolicy::EvictOldest);
        let engine = DeviceEngine::new(&[BOILER, GAS], store, engine_config(id), boot).ok()?;
        Some(Device {
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
    outbox_set: bool,
}

impl Host {
    /// The server process starts again; its store stays.
    fn restart(&mut self, totals: &mut Totals) {
        totals.add_server(self.server.counters());
        self.server = Server::new(self.keyring.clone());
    }
}

/// Runs one device for the whole simulation.
pub fn run(device: u64, args: &Args, totals: &mut Totals) {
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
    while t < end {
        link.partitions.push((t, t + 10 * 60_000));
        restarts.push(t);
        t += 7 * DAY + rng.below(DAY);
    }
    let mut key_bytes = [0u8; 32];
    for b in key_bytes.iter_mut() {
        *b = rng.next() as u8;
    }
    let key = Key::from_bytes(key_bytes);
    let mut keyring = Keyring::new();
    keyring.insert(device, 1, key.clone());
    let mut host = Host {
        server: Server::new(keyring.clone()),
        keyring,
        store: MemoryStore::new(),
        outbox_set: false,
    };
    let attacker = args.attacker.then(|| Attacker::new(&mut rng));
    let mut attacker = attacker;
    let mut sensors = sensors(device, &mut rng, args.days);
    let mut truth = Truth::default();

    let first_epoch = Epoch(rng.next() | 1);
    let Some(mut dev) = Device::boot(device, &key, first_epoch, 0, ResetReason::PowerOn) else {
        totals.violation(format!("device {device}: engine config refused"));
        return;
    };
    truth.boot_at.insert(first_epoch, 0);
    totals.epochs += 1;
    // Frames on the wire, by arrival time: responses to the device,
    // records to the server.
    let mut to_device: BTreeMap<u64, Vec<Wire>> = BTreeMap::new();
    let mut to_server: BTreeMap<u64, Vec<Wire>> = BTreeMap::new();
    let mut produced = 0u64;
    let mut lost_unsealed = 0u64;
    // Routine records lost with RAM at power cuts: (epoch, seq, readings).
    let mut lost_blocks: Vec<(Epoch, Seq, u64)> = Vec::new();
    let mut evicted = 0u64;
    let mut decimated = 0u64;
    let mut wakeups = 0u64;
    let mut next_reboot = if args.reboots_per_day > 0.0 {
        (rng.unit() * DAY as f64 / args.reboots_per_day) as u64
    } else {
        u64::MAX
    };
    let mut now = 0u64;
    let drain_until = end + 30 * DAY;

    loop {
        let healed = now >= end;
        // A power cycle: RAM is lost, and with it the RAM store.
        if now >= next_reboot && !healed {
            lost_unsealed += dev.engine.staged() as u64;
            lost_blocks.extend(
                dev.engine
                    .store()
                    .iter()
                    .filter(|r| r.meta.lane == Lane::Routine)
                    .map(|r| (dev.epoch, r.seq, u64::from(r.meta.readings))),
            );
            totals.add_engine(&dev.engine);
            let c = dev.engine.store().counters();
            evicted +=
                u64::from(c.routine.evicted_readings) + u64::from(c.routine.refused_readings);
            decimated += u64::from(c.routine.decimated_readings);
            let epoch = Epoch(rng.next() | 1);
            match Device::boot(device, &key, epoch, now, ResetReason::PowerOn) {
                Some(d) => dev = d,
                None => {
                    totals.violation(format!("device {device}: engine refused at reboot"));
                    return;
                }
            }
            truth.boot_at.insert(epoch, now);
            totals.epochs += 1;
            next_reboot = now + 1 + (rng.unit() * 2.0 * DAY as f64 / args.reboots_per_day) as u64;
        }
        if restarts.first().is_some_and(|&t| t <= now) {
            restarts.remove(0);
            host.restart(totals);
        }
        // Frames arriving at the server.
        while let Some((&t, _)) = to_server.first_key_value() {
            if t > now {
                break;
            }
            for wire in to_server.remove(&t).unwrap_or_default() {
                if t >= DAY && !host.outbox_set {
                    // From day two on, the server wants config version 1
                    // and valve 1 open.
                    host.outbox_set = true;
                    let open_valve = Command::SetOutput {
                        output: 1,
                        value: 1,
                    };
                    if host.store.set_config(device, 1, &CONFIG_V1).is_err()
                        || host
                            .store
                            .queue_command(device, COMMAND_ID, open_valve)
                            .is_err()
                    {
                        totals.violation(format!("device {device}: outbox refused"));
                    }
                }
                if let Some(attacker) = &attacker {
                    if rng.unit() < 0.05 {
                        let (attack, frame) =
                            attacker.up(&mut rng, device, wire.epoch, &wire.bytes);
                        totals.attack_frames += 1;
                        match host.server.receive(&mut host.store, &frame, UNIX0 + t) {
                            Err(ReceiveError::Refused(_)) => totals.attack_frames_refused += 1,
                            other => totals.violation(format!(
                                "device {device}: {attack:?} frame not refused: {:?}",
                                other.map(|r| r.batch.records.len())
                            )),
                        }
                    }
                }
                let latency = 2 * link.max_delay_ms + 50;
                let Some(response) =
                    server_receives(&mut host, &dev, &wire, t, latency, &mut truth, totals)
                else {
                    continue;
                };
                if let Some(attacker) = &mut attacker {
                    attacker.stored_frames.push(wire.bytes.clone());
                    if attacker.stored_frames.len() > 16 {
                        attacker.stored_frames.remove(0);
                    }
                }
                for arrival in link.carry(t, &mut rng, t >= end) {
                    to_device.entry(arrival).or_default().push(Wire {
                        bytes: response.clone(),
                        epoch: wire.epoch,
                    });
                }
            }
        }
        // Responses arriving at the device.
        while let Some((&t, _)) = to_device.first_key_value() {
            if t > now {
                break;
            }
            for wire in to_device.remove(&t).unwrap_or_default() {
                if !dev.radio_on || wire.epoch != dev.epoch {
                    continue;
                }
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
                    }
                }
                let mut bytes = wire.bytes.clone();
                if dev.engine.on_frame(at, &mut bytes).is_ok() {
                    if let Some(attacker) = &mut attacker {
                        attacker.accepted_responses.push(wire.bytes);
                        if attacker.accepted_responses.len() > 16 {
                            attacker.accepted_responses.remove(0);
                        }
                    }
                }
            }
        }
        if dev.radio_on && link.down(now) && !healed {
            dev.radio_on = false;
            let at = dev.at(now);
            dev.engine.on_link_down(at);
        }
        // The device.
        let sleep_until = loop {
            let at = dev.at(now);
            match dev.engine.poll(at) {
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
                                produced += 1;
                                dev.engine.on_reading(at, r);
                            }
                        }
                        Err(kind) => dev.engine.on_sample_failed(at, ch, kind),
                    }
                }
                Action::RadioOn => {
                    wakeups += 1;
                    if link.down(now) && !healed {
                        // No network to attach to: the modem says so.
                        dev.engine.on_link_down(at);
                    } else {
                        dev.radio_on = true;
                    }
                }
                Action::RadioOff => dev.radio_on = false,
                Action::Send(frame) => {
                    let frame = frame.to_vec();
                    check_alerts_first(&dev, &frame, totals);
                    for arrival in link.carry(now, &mut rng, healed) {
                        to_server.entry(arrival).or_default().push(Wire {
                            bytes: frame.clone(),
                            epoch: dev.epoch,
                        });
                    }
                    dev.engine.on_sent(at);
                }
                Action::SetOutput { .. } => totals.outputs_set += 1,
                Action::Reboot => next_reboot = now,
                Action::Sleep(t) => break t.as_millis() + dev.boot_at,
            }
        };
        totals.max_store_bytes = totals
            .max_store_bytes
            .max(dev.engine.store().used(Lane::Routine) + dev.engine.store().used(Lane::Alert));
        if healed && now == end {
            // The field trial is over: seal what is staged and send it all.
            let at = dev.at(now);
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

    let records = host.store.records();
    let lost_on_power_cycle: u64 = lost_blocks
        .iter()
        .filter(|(epoch, seq, _)| {
            !records.contains_key(&RecordKey {
                device,
                epoch: *epoch,
                seq: *seq,
            })
        })
        .map(|(_, _, n)| n)
        .sum();
    let c = dev.engine.store().counters();
    evicted += u64::from(c.routine.evicted_readings) + u64::from(c.routine.refused_readings);
    decimated += u64::from(c.routine.decimated_readings);
    let delivered = truth.delivered.len() as u64;
    if produced != delivered + evicted + decimated + lost_unsealed + lost_on_power_cycle {
        totals.violation(format!(
            "device {device}: produced {produced} != delivered {delivered} + evicted {evicted} \
             + decimated {decimated} + lost unsealed {lost_unsealed} + lost with RAM \
             {lost_on_power_cycle}"
        ));
    }
    let outbox = host.store.outbox(device).unwrap_or_default();
    let config_applied = outbox
        .config
        .as_ref()
        .is_some_and(|c| c.state == ConfigState::Applied);
    let answered = outbox
        .commands
        .iter()
        .any(|c| c.id == COMMAND_ID && c.result.is_some());
    if args.days >= 2 {
        if !config_applied {
            totals.violation(format!(
                "device {device}: config version 1 never applied: {:?}",
                outbox.config.map(|c| c.state)
            ));
        }
        if !answered {
            totals.violation(format!("device {device}: command never answered"));
        }
    }
    totals.configs_applied += u64::from(config_applied);
    totals.commands_answered += u64::from(answered);
    totals.conflicts_stored += host.store.conflicts().len() as u64;
    totals.add_engine(&dev.engine);
    totals.add_server(host.server.counters());
    totals.produced += produced;
    totals.delivered += delivered;
    totals.evicted += evicted;
    totals.decimated += decimated;
    totals.lost_unsealed += lost_unsealed;
    totals.lost_on_power_cycle += lost_on_power_cycle;
    totals.wakeups += wakeups;
    totals.routine_flushes += args.days * DAY / REPORT.as_millis();
    totals.device_days += args.days as f64;
}

/// The server takes a records frame that arrived at `t`; checks that it
/// classified each record as the store says it should, that reading times
/// are right to within the link's `latency`, and that the response
/// acknowledges only what is stored. Returns the response.
fn server_receives(
    host: &mut Host,
    dev: &Device,
    wire: &Wire,
    t: u64,
    latency: u64,
    truth: &mut Truth,
    totals: &mut Totals,
) -> Option<Vec<u8>> {
    let device = dev.id;
    // What the store holds of the frame's records, before.
    let mut opened = wire.bytes.clone();
    let Ok((header, body)) = open(&mut opened, &dev.sealing, Direction::Up) else {
        totals.violation(format!("device {device}: its own frame does not open"));
        return None;
    };
    let Ok(frame) = RecordsFrame::parse(&header, body) else {
        totals.violation(format!("device {device}: its own frame does not parse"));
        return None;
    };
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
                    if !truth.delivered.insert((timed.reading.channel.0, sim)) {
                        totals.duplicates_stored += 1;
                        totals.violation(format!(
                            "device {device}: reading {:?} stored twice",
                            timed.reading
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

/// A frame that carries routine data must carry every pending alert first.
fn check_alerts_first(dev: &Device, frame: &[u8], totals: &mut Totals) {
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
        let pending_alerts = dev
            .engine
            .store()
            .iter()
            .filter(|r| r.meta.lane == Lane::Alert)
            .count();
        if pending_alerts > i {
            totals.violation(format!(
                "device {device}: routine data sent while alerts waited"
            ));
        }
    }
}
