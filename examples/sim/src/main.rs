//! A deterministic fleet simulator: devices running the real engine, a
//! faulty link, and a server that stores durably and acknowledges.
//!
//! ```text
//! cargo run --release -p telemark-sim -- --devices 100 --days 30 --loss 0.3 --partition-hours 12 --seed 1 --json
//! ```
//!
//! Each device samples a boiler temperature (which overheats now and then,
//! raising alerts) and a gas meter, through the same `Engine` that runs on a
//! microcontroller. Its link loses, duplicates, delays and reorders frames,
//! goes dark for partitions, and the device reboots at random, losing its
//! RAM. The server removes duplicates by (device, sequence number) and
//! acknowledges only what it stored. At the end the link heals and the
//! devices drain their stores; then every reading produced must be on the
//! server exactly once, or be counted as evicted or lost with RAM on
//! reboot. The tool exits non-zero on any violation.

use std::collections::{BTreeMap, HashSet};
use std::process::ExitCode;

use telemark_core::channel::{ChannelSpec, Range, Unit, ValueKind};
use telemark_core::codec::{BlockCodec, CompactCodec};
use telemark_core::engine::{Action, Engine, EngineConfig};
use telemark_core::model::{ChannelId, Reading, Severity};
use telemark_core::rules::Rules;
use telemark_core::sensor::Sensor;
use telemark_core::stager::StagerConfig;
use telemark_core::store::{FullPolicy, Lane, RamStore, RecordStore, Seq, SeqRange};
use telemark_core::time::{Duration, Instant};
use telemark_core::uplink::UplinkConfig;
use telemark_core::wire::frame::{write_ack, write_command, write_config, Command, RecordsFrame};
use telemark_core::wire::report::{Report, ResetReason};
use telemark_sensors::synthetic::{Episode, Signal, Synthetic};

const HOUR: u64 = 3_600_000;
const DAY: u64 = 24 * HOUR;
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
const REPORT: Duration = Duration::from_mins(6 * 60);

fn engine_config(device: u64) -> EngineConfig {
    let mut uplink = UplinkConfig::new(device, MTU as u16, REPORT);
    // A failed session is retried at most once per report interval.
    uplink.max_backoff = REPORT;
    EngineConfig {
        uplink,
        stager: StagerConfig::new(256, 480, REPORT),
        heartbeat: REPORT,
    }
}

struct Args {
    devices: u64,
    days: u64,
    loss: f64,
    partition_hours: u64,
    reboots_per_day: f64,
    seed: u64,
    json: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        devices: 10,
        days: 7,
        loss: 0.1,
        partition_hours: 0,
        reboots_per_day: 0.05,
        seed: 1,
        json: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match flag.as_str() {
            "--devices" => {
                a.devices = value("--devices")?
                    .parse()
                    .map_err(|e| format!("--devices: {e}"))?
            }
            "--days" => {
                a.days = value("--days")?
                    .parse()
                    .map_err(|e| format!("--days: {e}"))?
            }
            "--loss" => {
                a.loss = value("--loss")?
                    .parse()
                    .map_err(|e| format!("--loss: {e}"))?
            }
            "--partition-hours" => {
                a.partition_hours = value("--partition-hours")?
                    .parse()
                    .map_err(|e| format!("--partition-hours: {e}"))?
            }
            "--reboots-per-day" => {
                a.reboots_per_day = value("--reboots-per-day")?
                    .parse()
                    .map_err(|e| format!("--reboots-per-day: {e}"))?
            }
            "--seed" => {
                a.seed = value("--seed")?
                    .parse()
                    .map_err(|e| format!("--seed: {e}"))?
            }
            "--json" => a.json = true,
            "-h" | "--help" => return Err(
                "usage: telemark-sim [--devices N] [--days N] [--loss P] [--partition-hours H] \
                            [--reboots-per-day R] [--seed S] [--json]"
                    .into(),
            ),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if !(0.0..1.0).contains(&a.loss) {
        return Err("--loss must be in [0, 1)".into());
    }
    Ok(a)
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// The faults of one device's link.
struct Link {
    loss: f64,
    dup: f64,
    max_delay_ms: u64,
    /// Periods when frames vanish although the link is up (server restarts).
    partitions: Vec<(u64, u64)>,
    /// Periods with no network at all: the radio cannot attach.
    outages: Vec<(u64, u64)>,
}

impl Link {
    fn partitioned(&self, t: u64) -> bool {
        self.partitions
            .iter()
            .chain(&self.outages)
            .any(|&(a, b)| a <= t && t < b)
    }

    fn down(&self, t: u64) -> bool {
        self.outages.iter().any(|&(a, b)| a <= t && t < b)
    }

    /// Arrival times of the copies of a frame sent at `t`.
    fn carry(&self, t: u64, rng: &mut Rng, healed: bool) -> Vec<u64> {
        if healed {
            return vec![t + 200];
        }
        if self.partitioned(t) {
            return Vec::new();
        }
        let mut out = Vec::new();
        if rng.unit() >= self.loss {
            out.push(t + 50 + rng.below(self.max_delay_ms));
        }
        if rng.unit() < self.dup {
            out.push(t + 50 + rng.below(self.max_delay_ms * 2));
        }
        out
    }
}

#[derive(Default)]
struct Totals {
    outputs_set: u64,
    configs_applied: u64,
    commands_answered: u64,
    device_days: f64,
    produced: u64,
    delivered: u64,
    evicted: u64,
    decimated: u64,
    lost_on_reboot: u64,
    duplicates_received: u64,
    duplicates_stored: u64,
    frames_sent: u64,
    bytes_on_air: u64,
    block_bytes: u64,
    block_readings: u64,
    wakeups: u64,
    routine_flushes: u64,
    alerts: u64,
    heartbeats: u64,
    alert_latency_ms: Vec<u64>,
    violations: Vec<String>,
    max_store_bytes: usize,
}

/// The server's durable store for one device, and what it wants the
/// device to do: take config version 1 (heartbeats every 12 h) and open
/// valve 1, until the device reports both done.
#[derive(Default)]
struct Server {
    records: HashSet<u32>,
    readings: HashSet<(u16, u64)>,
    config_applied: bool,
    command_answers: u32,
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

/// Runs one device for the whole simulation.
fn run_device(device: u64, args: &Args, totals: &mut Totals) {
    let mut rng = Rng(args.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ device.wrapping_add(1));
    let end = args.days * DAY;
    let mut partitions = Vec::new();
    if args.partition_hours > 0 {
        // About one partition every five days, of the given length.
        let mut t = rng.below(5 * DAY);
        while t < end {
            partitions.push((t, t + args.partition_hours * HOUR));
            t += args.partition_hours * HOUR + rng.below(10 * DAY);
        }
    }
    let mut link = Link {
        loss: args.loss,
        dup: args.loss / 3.0,
        max_delay_ms: 3_000,
        partitions: Vec::new(),
        outages: partitions,
    };
    // Server restarts: the link is up but the server answers nothing for
    // ten minutes, about weekly.
    let mut t = rng.below(7 * DAY);
    while t < end {
        link.partitions.push((t, t + 10 * 60_000));
        t += 7 * DAY + rng.below(DAY);
    }
    let mut sensors = sensors(device, &mut rng, args.days);
    let mut server = Server::default();

    let new_engine = |next_seq: Seq, reason| {
        let store = DeviceStore::resume(FullPolicy::EvictOldest, next_seq);
        DeviceEngine::new(&[BOILER, GAS], store, engine_config(device), reason)
    };
    let Ok(mut engine) = new_engine(Seq(1), ResetReason::PowerOn) else {
        totals
            .violations
            .push(format!("device {device}: engine config refused"));
        return;
    };
    // Frames on the wire, by arrival time: acknowledgements to the device,
    // records to the server.
    let mut pending_acks: BTreeMap<u64, Vec<Vec<u8>>> = BTreeMap::new();
    let mut in_flight: BTreeMap<u64, Vec<Vec<u8>>> = BTreeMap::new();
    let mut produced = 0u64;
    let mut lost_on_reboot = 0u64;
    let mut lost_blocks: Vec<(u32, u64)> = Vec::new();
    let mut decimated = 0u64;
    let mut lost_store = (0u64, 0u64); // evicted readings of engines lost to reboots
    let mut wakeups = 0u64;
    let mut radio_on = false;
    let mut next_reboot = if args.reboots_per_day > 0.0 {
        (rng.unit() * DAY as f64 / args.reboots_per_day) as u64
    } else {
        u64::MAX
    };
    let mut now = 0u64;
    let drain_until = end + 30 * DAY;

    loop {
        let healed = now >= end;
        // Reboot: RAM is lost; the sequence counter lives in no-init RAM.
        if now >= next_reboot && !healed {
            // Staged readings are gone; stored blocks are gone unless a copy
            // already reached the server (settled at the end).
            lost_on_reboot += engine.staged() as u64;
            lost_blocks.extend(
                engine
                    .store()
                    .iter()
                    .filter(|r| r.meta.lane == Lane::Routine)
                    .map(|r| (r.seq.0, u64::from(r.meta.readings))),
            );
            let c = engine.store().counters();
            lost_store.0 +=
                u64::from(c.routine.evicted_readings) + u64::from(c.routine.refused_readings);
            decimated += u64::from(c.routine.decimated_readings);
            lost_store.1 += u64::from(engine.uplink().counters().wakeups);
            totals.frames_sent += u64::from(engine.uplink().counters().frames_sent);
            totals.bytes_on_air += engine.uplink().counters().bytes_sent;
            totals.alerts += u64::from(engine.counters().alerts);
            totals.heartbeats += u64::from(engine.counters().heartbeats);
            let next_seq = engine.store().next_seq();
            match new_engine(next_seq, ResetReason::Watchdog) {
                Ok(e) => engine = e,
                Err(e) => {
                    totals.violations.push(format!("device {device}: {e}"));
                    return;
                }
            }
            radio_on = false;
            next_reboot = now + 1 + (rng.unit() * 2.0 * DAY as f64 / args.reboots_per_day) as u64;
        }
        // Frames arriving at the server.
        while let Some((&t, _)) = in_flight.first_key_value() {
            if t > now {
                break;
            }
            let frames = in_flight.remove(&t).unwrap_or_default();
            for frame in frames {
                let Ok(parsed) = RecordsFrame::parse(&frame) else {
                    continue;
                };
                let mut acked = Vec::new();
                for record in parsed.records() {
                    acked.push(SeqRange::single(record.seq));
                    if !server.records.insert(record.seq.0) {
                        totals.duplicates_received += 1;
                        continue;
                    }
                    store_record(
                        &mut server,
                        device,
                        record.payload,
                        record.meta.lane,
                        t,
                        totals,
                    );
                }
                let mut replies = Vec::new();
                let mut ack = [0u8; 1024];
                let acked = &acked[..acked.len().min(64)];
                if let Ok(n) = write_ack(&mut ack, device, Some(1_700_000_000_000 + t), acked) {
                    replies.push(ack[..n].to_vec());
                }
                // From day two on, config and command ride with the acks
                // until the device reports them done.
                if t >= DAY && !server.config_applied {
                    if let Ok(n) = write_config(&mut ack, device, &CONFIG_V1) {
                        replies.push(ack[..n].to_vec());
                    }
                }
                if t >= DAY && server.command_answers == 0 {
                    let open_valve = Command::SetOutput {
                        output: 1,
                        value: 1,
                    };
                    if let Ok(n) = write_command(&mut ack, device, COMMAND_ID, open_valve) {
                        replies.push(ack[..n].to_vec());
                    }
                }
                for reply in replies {
                    for arrival in link.carry(t, &mut rng, t >= end) {
                        pending_acks.entry(arrival).or_default().push(reply.clone());
                    }
                }
            }
        }
        // Acknowledgements arriving at the device.
        while let Some((&t, _)) = pending_acks.first_key_value() {
            if t > now {
                break;
            }
            for ack in pending_acks.remove(&t).unwrap_or_default() {
                if radio_on {
                    let _ = engine.on_frame(Instant::from_millis(now), &ack);
                }
            }
        }
        if radio_on && link.down(now) && !healed {
            radio_on = false;
            engine.on_link_down(Instant::from_millis(now));
        }
        // The device.
        let sleep_until = loop {
            let at = Instant::from_millis(now);
            match engine.poll(at) {
                Action::Sample(ch) => {
                    if healed {
                        continue;
                    }
                    let mut out: heapless::Vec<Reading, 2> = heapless::Vec::new();
                    let result = if ch == BOILER.id {
                        sensors.boiler.sample(at, &mut out)
                    } else {
                        sensors.gas.sample(at, &mut out)
                    };
                    match result {
                        Ok(()) => {
                            for r in out {
                                produced += 1;
                                engine.on_reading(at, r);
                            }
                        }
                        Err(kind) => engine.on_sample_failed(at, ch, kind),
                    }
                }
                Action::RadioOn => {
                    wakeups += 1;
                    if link.down(now) && !healed {
                        // No network to attach to: the modem says so.
                        engine.on_link_down(at);
                    } else {
                        radio_on = true;
                    }
                }
                Action::RadioOff => radio_on = false,
                Action::Send(frame) => {
                    let frame = frame.to_vec();
                    check_alerts_first(device, &frame, engine.store_mut(), totals);
                    for arrival in link.carry(now, &mut rng, healed) {
                        in_flight.entry(arrival).or_default().push(frame.clone());
                    }
                    engine.on_sent(at);
                }
                Action::SetOutput { .. } => totals.outputs_set += 1,
                Action::Reboot => next_reboot = now,
                Action::Sleep(t) => break t.as_millis(),
            }
        };
        totals.max_store_bytes = totals
            .max_store_bytes
            .max(engine.store().used(Lane::Routine) + engine.store().used(Lane::Alert));
        if healed && now == end {
            // The field trial is over: seal what is staged and send it all.
            engine.flush_now(Instant::from_millis(now));
        }
        let mut next = sleep_until.max(now + 1);
        if let Some((&t, _)) = in_flight.first_key_value() {
            next = next.min(t.max(now + 1));
        }
        if let Some((&t, _)) = pending_acks.first_key_value() {
            next = next.min(t.max(now + 1));
        }
        if now < end {
            next = next.min(end).min(next_reboot.max(now + 1));
            // Notice an outage beginning while the radio is on.
            if radio_on {
                if let Some(&(a, _)) = link.outages.iter().find(|&&(a, _)| a > now) {
                    next = next.min(a);
                }
            }
        }
        if now >= end && engine.store().is_empty() && engine.staged() == 0 && in_flight.is_empty() {
            break;
        }
        if next >= drain_until {
            totals.violations.push(format!(
                "device {device}: {} records never delivered after the link healed",
                engine.store().len()
            ));
            break;
        }
        now = next;
    }

    lost_on_reboot += lost_blocks
        .iter()
        .filter(|(seq, _)| !server.records.contains(seq))
        .map(|(_, n)| n)
        .sum::<u64>();
    let c = engine.store().counters();
    let evicted = lost_store.0
        + u64::from(c.routine.evicted_readings)
        + u64::from(c.routine.refused_readings);
    let delivered = server.readings.len() as u64;
    decimated += u64::from(c.routine.decimated_readings);
    if produced != delivered + evicted + decimated + lost_on_reboot {
        totals.violations.push(format!(
            "device {device}: produced {produced} != delivered {delivered} + evicted {evicted} \
             + decimated {decimated} + lost on reboot {lost_on_reboot}"
        ));
    }
    if args.days >= 2 {
        if !server.config_applied {
            totals.violations.push(format!(
                "device {device}: config version 1 never reported applied"
            ));
        }
        if server.command_answers == 0 {
            totals
                .violations
                .push(format!("device {device}: command never answered"));
        }
    }
    totals.configs_applied += u64::from(server.config_applied);
    totals.commands_answered += u64::from(server.command_answers > 0);
    let up = engine.uplink().counters();
    totals.produced += produced;
    totals.delivered += delivered;
    totals.evicted += evicted;
    totals.decimated += decimated;
    totals.lost_on_reboot += lost_on_reboot;
    totals.frames_sent += u64::from(up.frames_sent);
    totals.bytes_on_air += up.bytes_sent;
    totals.wakeups += wakeups + lost_store.1;
    totals.alerts += u64::from(engine.counters().alerts);
    totals.heartbeats += u64::from(engine.counters().heartbeats);
    totals.routine_flushes += args.days * DAY / REPORT.as_millis();
    totals.device_days += args.days as f64;
}

/// Stores a record's contents on the server.
fn store_record(
    server: &mut Server,
    device: u64,
    payload: &[u8],
    lane: Lane,
    at: u64,
    totals: &mut Totals,
) {
    match (lane, payload.first()) {
        (Lane::Routine, _) => {
            let mut readings = Vec::new();
            match CompactCodec.decode(payload, &mut readings) {
                Ok(_) => {
                    totals.block_bytes += payload.len() as u64;
                    totals.block_readings += readings.len() as u64;
                    for r in readings {
                        if !server.readings.insert((r.channel.0, r.time.as_millis())) {
                            totals.duplicates_stored += 1;
                            totals
                                .violations
                                .push(format!("device {device}: reading {r:?} stored twice"));
                        }
                    }
                }
                Err(e) => totals
                    .violations
                    .push(format!("device {device}: undecodable block: {e}")),
            }
        }
        (Lane::Alert, _) => match Report::decode(payload) {
            // Latency of the alerts that wake the radio: warning or worse.
            Ok(Report::Alert(alert)) if alert.severity >= Severity::Warning => {
                totals
                    .alert_latency_ms
                    .push(at.saturating_sub(alert.time.as_millis()));
            }
            Ok(Report::ConfigStatus {
                version: 1,
                code: 0,
                ..
            }) => server.config_applied = true,
            // A repeat of version 1 after it applied is stale, and harmless.
            Ok(Report::ConfigStatus {
                version: 1,
                code: 3,
                ..
            }) => {}
            Ok(Report::ConfigStatus { code, detail, .. }) if code != 0 => totals.violations.push(
                format!("device {device}: config refused, code {code} detail {detail}"),
            ),
            Ok(Report::CommandResult { id: COMMAND_ID, .. }) => server.command_answers += 1,
            _ => {}
        },
    }
}

/// A frame that carries routine data must carry every pending alert first.
fn check_alerts_first<S: RecordStore>(
    device: u64,
    frame: &[u8],
    store: &mut S,
    totals: &mut Totals,
) {
    let Ok(parsed) = RecordsFrame::parse(frame) else {
        totals
            .violations
            .push(format!("device {device}: sent an unparsable frame"));
        return;
    };
    let lanes: Vec<Lane> = parsed.records().map(|r| r.meta.lane).collect();
    let first_routine = lanes.iter().position(|l| *l == Lane::Routine);
    if let Some(i) = first_routine {
        if lanes[i..].contains(&Lane::Alert) {
            totals.violations.push(format!(
                "device {device}: routine record ahead of an alert in a frame"
            ));
        }
        let pending_alerts = (0..)
            .map_while(|n| store.peek(n).ok().flatten().map(|r| r.meta.lane))
            .filter(|l| *l == Lane::Alert)
            .count();
        if pending_alerts > i {
            totals.violations.push(format!(
                "device {device}: routine data sent while alerts waited"
            ));
        }
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64 / 1000.0
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let started = std::time::Instant::now();
    let mut totals = Totals::default();
    for device in 0..args.devices {
        run_device(0x1000 + device, &args, &mut totals);
    }
    let wall = started.elapsed().as_secs_f64();
    totals.alert_latency_ms.sort_unstable();
    let per_reading = |b: u64| b as f64 / totals.delivered.max(1) as f64;
    let block_bpr = totals.block_bytes as f64 / totals.block_readings.max(1) as f64;
    let fields: Vec<(&str, String)> = vec![
        ("device_days", format!("{}", totals.device_days)),
        ("readings_produced", totals.produced.to_string()),
        ("readings_delivered", totals.delivered.to_string()),
        ("readings_evicted", totals.evicted.to_string()),
        ("readings_decimated", totals.decimated.to_string()),
        ("readings_lost_on_reboot", totals.lost_on_reboot.to_string()),
        (
            "duplicates_received",
            totals.duplicates_received.to_string(),
        ),
        ("duplicates_stored", totals.duplicates_stored.to_string()),
        ("frames_sent", totals.frames_sent.to_string()),
        (
            "bytes_on_air_per_reading",
            format!("{:.3}", per_reading(totals.bytes_on_air)),
        ),
        ("block_bytes_per_reading", format!("{block_bpr:.3}")),
        (
            "radio_wake_ups_per_device_day",
            format!("{:.2}", totals.wakeups as f64 / totals.device_days.max(1.0)),
        ),
        (
            "scheduled_wake_ups_per_device_day",
            format!(
                "{:.2}",
                (totals.routine_flushes + totals.alerts + totals.heartbeats) as f64
                    / totals.device_days.max(1.0)
            ),
        ),
        ("alerts", totals.alerts.to_string()),
        ("heartbeats", totals.heartbeats.to_string()),
        (
            "alert_latency_p50",
            format!("{:.1}", percentile(&totals.alert_latency_ms, 0.5)),
        ),
        (
            "alert_latency_p99",
            format!("{:.1}", percentile(&totals.alert_latency_ms, 0.99)),
        ),
        ("max_store_bytes", totals.max_store_bytes.to_string()),
        ("configs_applied", totals.configs_applied.to_string()),
        ("commands_answered", totals.commands_answered.to_string()),
        ("outputs_set", totals.outputs_set.to_string()),
        ("invariant_violations", totals.violations.len().to_string()),
        (
            "device_days_per_second",
            format!("{:.0}", totals.device_days / wall.max(1e-9)),
        ),
    ];
    if args.json {
        let body: Vec<String> = fields
            .iter()
            .map(|(k, v)| format!("\"{k}\": {v}"))
            .collect();
        println!("{{{}}}", body.join(", "));
    } else {
        for (k, v) in &fields {
            println!("{k:>30}  {v}");
        }
    }
    for v in totals.violations.iter().take(20) {
        eprintln!("violation: {v}");
    }
    if totals.violations.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
