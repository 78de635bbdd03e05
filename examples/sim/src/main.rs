//! A deterministic fleet simulator: devices running the real engine, a
//! faulty link, and the real server half of the protocol
//! (`telemark-server`, over its memory store).
//!
//! ```text
//! cargo run --release -p telemark-sim -- --devices 100 --days 30 --loss 0.3 --partition-hours 12 \
//!     --reboots-per-day 1 --attacker --seed 1 --json
//! ```
//!
//! Each device samples a boiler temperature (which overheats now and then,
//! raising alerts) and a gas meter, through the same `Engine` that runs on a
//! microcontroller, and seals every frame with its own key. Its link loses,
//! duplicates, delays and reorders frames and goes dark for outages; the
//! server process restarts about weekly; the device is power-cycled at
//! random, losing its RAM store, and comes back numbering its records from
//! one again in a new epoch, its uptime from zero. With `--attacker`, an
//! attacker on the link replays captured frames, tampers with bytes, forges
//! frames and acknowledgements with a key of its own and speaks for devices
//! it is not. At the end the link heals and the devices drain their stores.
//!
//! With `--store flash` each device keeps its records in the real flash
//! store on a `SimFlash` of 16 pages of 1 KiB (4 for alerts and state), so
//! a power cycle keeps them, and `--power-cuts-per-day R` cuts the power at
//! a random byte of a random write or erase:
//!
//! ```text
//! cargo run --release -p telemark-sim -- --devices 100 --days 30 --loss 0.3 --partition-hours 12 \
//!     --store flash --power-cuts-per-day 4 --seed 1 --json
//! ```
//!
//! After each cut the simulator compares what the store held before the
//! call the power went in with what it mounts after: every sealed record
//! must be there, acknowledged, evicted oldest first or a heartbeat
//! replaced unsent (`sealed_records_lost` counts any other); the readings
//! in RAM not sealed into a surviving block are `readings_lost_unsealed`.
//! With the RAM store a power cut is a power cycle like the others.
//!
//! With `--server` the devices report to a running telemark-cloud
//! instead, over the real transport (`mqtt://`, `http://` or `coap://`),
//! each provisioned through its API, and the accounting is checked
//! against what the API says it stored (`docs/cloud.md`):
//!
//! ```text
//! cargo run --release -p telemark-sim -- --devices 100 --days 2 \
//!     --server mqtt://127.0.0.1:1883 --api http://127.0.0.1:8080 --token "$TOKEN"
//! ```
//!
//! Invariants checked as it runs, any violation a non-zero exit:
//!
//! - every reading produced is on the server exactly once, or counted
//!   (evicted, decimated, lost unsealed or lost with RAM at a power cut);
//! - no sealed record is lost to a power cut on flash;
//! - nothing is acknowledged that is not stored;
//! - no record is dropped as a duplicate unless it is byte-identical;
//! - every attacker frame is refused, and no device frees a record for a
//!   forged or replayed acknowledgement;
//! - every reading's Unix time is right to within the link's latency;
//! - alerts travel before routine data; config and command are settled.

use std::process::ExitCode;

use telemark_core::engine::Engine;
use telemark_core::store::RecordStore;
use telemark_server::Counters;

mod attacker;
mod device;
mod link;
#[cfg(feature = "service")]
mod remote;
#[cfg(not(feature = "service"))]
#[path = "no_service.rs"]
mod remote;
mod storage;

const HOUR: u64 = 3_600_000;
const DAY: u64 = 24 * HOUR;

/// Which store the devices run on.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// `RamStore`: a power cycle loses what it holds.
    Ram,
    /// `FlashStore` on `SimFlash`: power cuts land in writes and erases.
    Flash,
}

/// The command line.
pub struct Args {
    devices: u64,
    days: u64,
    loss: f64,
    partition_hours: u64,
    reboots_per_day: f64,
    power_cuts_per_day: f64,
    store: StoreKind,
    mtu: u16,
    /// Packets of the link, when they are smaller than a frame: each
    /// frame then travels in pieces (`wire::fragment`).
    link_mtu: Option<usize>,
    attacker: bool,
    seed: u64,
    json: bool,
    /// A running telemark-cloud: where its devices send, its API and a
    /// token that may add devices.
    service: Option<(remote::Endpoint, String, String)>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        devices: 10,
        days: 7,
        loss: 0.1,
        partition_hours: 0,
        reboots_per_day: 0.05,
        power_cuts_per_day: 0.0,
        store: StoreKind::Ram,
        mtu: device::MTU as u16,
        link_mtu: None,
        attacker: false,
        seed: 1,
        json: false,
        service: None,
    };
    let (mut server, mut api, mut token) = (None, None, std::env::var("TELEMARK_TOKEN").ok());
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
            "--power-cuts-per-day" => {
                a.power_cuts_per_day = value("--power-cuts-per-day")?
                    .parse()
                    .map_err(|e| format!("--power-cuts-per-day: {e}"))?
            }
            "--store" => {
                a.store = match value("--store")?.as_str() {
                    "ram" => StoreKind::Ram,
                    "flash" => StoreKind::Flash,
                    other => return Err(format!("--store: ram or flash, not {other}")),
                }
            }
            "--mtu" => a.mtu = value("--mtu")?.parse().map_err(|e| format!("--mtu: {e}"))?,
            "--attacker" => a.attacker = true,
            "--seed" => {
                a.seed = value("--seed")?
                    .parse()
                    .map_err(|e| format!("--seed: {e}"))?
            }
            "--json" => a.json = true,
            "--server" => server = Some(remote::Endpoint::parse(&value("--server")?)?),
            "--api" => api = Some(value("--api")?),
            "--token" => token = Some(value("--token")?),
            "-h" | "--help" => return Err(
                "usage: telemark-sim [--devices N] [--days N] [--loss P] [--partition-hours H] \
                     [--reboots-per-day R] [--power-cuts-per-day R] [--store ram|flash] \
                     [--mtu BYTES] [--attacker] [--seed S] [--json] \
                     [--server mqtt://HOST:PORT|http://HOST:PORT|coap://HOST:PORT \
                     --api http://HOST:PORT --token TOKEN]"
                    .into(),
            ),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    match (server, api, token) {
        (None, None, _) => {}
        (Some(server), Some(api), Some(token)) => {
            if a.attacker {
                return Err("--attacker runs against the server half in this process, \
                            not with --server"
                    .into());
            }
            a.service = Some((server, api, token));
        }
        (Some(_), None, _) | (None, Some(_), _) => {
            return Err("--server and --api go together".into())
        }
        (Some(_), Some(_), None) => {
            return Err("--server needs --token (or TELEMARK_TOKEN): an admin token".into())
        }
    }
    if !(0.0..1.0).contains(&a.loss) {
        return Err("--loss must be in [0, 1)".into());
    }
    if a.reboots_per_day.is_nan() || a.reboots_per_day < 0.0 {
        return Err("--reboots-per-day must be 0 or more".into());
    }
    if a.power_cuts_per_day.is_nan() || a.power_cuts_per_day < 0.0 {
        return Err("--power-cuts-per-day must be 0 or more".into());
    }
    // The largest device id the fleet uses, sealed.
    let sealing = telemark_core::wire::seal::Sealing::key(
        1,
        telemark_core::wire::seal::Key::from_bytes([0; 32]),
    );
    // A service numbers its devices itself, below 2^53.
    let largest = if a.service.is_some() {
        (1 << 53) - 1
    } else {
        0x1000 + a.devices
    };
    let min = telemark_core::engine::min_mtu(largest, &sealing);
    const LINK_MIN: usize = 16;
    let mtu = usize::from(a.mtu);
    if !(LINK_MIN..=device::MTU).contains(&mtu) {
        return Err(format!("--mtu must be from {LINK_MIN} to {}", device::MTU));
    }
    if mtu < min {
        // Packets smaller than a frame: frames of whole pieces, at least
        // the smallest every report fits, each cut into pieces on air.
        let piece = mtu - telemark_core::wire::fragment::FRAGMENT_HEADER;
        let frame = min.div_ceil(piece) * piece;
        if frame > device::MTU.min(telemark_core::wire::fragment::max_frame(mtu)) {
            return Err(format!(
                "--mtu {mtu}: a {min}-byte frame does not fit 16 pieces of the link"
            ));
        }
        a.link_mtu = Some(mtu);
        a.mtu = frame as u16;
    }
    Ok(a)
}

/// What the whole fleet did.
#[derive(Default)]
pub struct Totals {
    outputs_set: u64,
    configs_applied: u64,
    commands_answered: u64,
    device_days: f64,
    epochs: u64,
    produced: u64,
    delivered: u64,
    evicted: u64,
    decimated: u64,
    lost_unsealed: u64,
    lost_on_power_cycle: u64,
    duplicates_received: u64,
    duplicates_stored: u64,
    conflicts_stored: u64,
    link_replays_refused: u64,
    attack_frames: u64,
    attack_frames_refused: u64,
    forged_downlinks: u64,
    forged_downlinks_refused: u64,
    time_error_max_ms: u64,
    time_unknown: u64,
    frames_sent: u64,
    bytes_on_air: u64,
    block_bytes: u64,
    block_readings: u64,
    wakeups: u64,
    routine_flushes: u64,
    alerts: u64,
    heartbeats: u64,
    heartbeats_replaced: u64,
    power_cuts: u64,
    fragments_sent: u64,
    fragmented_frames_incomplete: u64,
    fragmented_frames_mixed: u64,
    sealed_records_lost: u64,
    reports_held_back: u64,
    alert_latency_ms: Vec<u64>,
    violations: Vec<String>,
    max_store_bytes: usize,
    server: Counters,
}

impl Totals {
    fn violation(&mut self, v: String) {
        self.violations.push(v);
    }

    /// What one boot of a device did, at its end.
    fn add_engine<S: RecordStore, const CH: usize, const ST: usize, const MTU: usize>(
        &mut self,
        engine: &Engine<S, CH, ST, MTU>,
    ) {
        let up = engine.uplink().counters();
        self.frames_sent += u64::from(up.frames_sent);
        self.bytes_on_air += up.bytes_sent;
        self.alerts += u64::from(engine.counters().alerts);
        self.heartbeats += u64::from(engine.counters().heartbeats);
        self.heartbeats_replaced += u64::from(engine.store().counters().alert.superseded_records);
        self.reports_held_back += u64::from(engine.counters().reports_held_back);
    }

    /// What one server process did, at its end.
    fn add_server(&mut self, c: Counters) {
        let s = &mut self.server;
        s.frames += c.frames;
        s.records += c.records;
        s.readings += c.readings;
        s.duplicates += c.duplicates;
        s.conflicts += c.conflicts;
        s.store_failures += c.store_failures;
        let (r, t) = (&mut s.refused, c.refused);
        r.malformed += t.malformed;
        r.unsupported_version += t.unsupported_version;
        r.unknown_device += t.unknown_device;
        r.unknown_key += t.unknown_key;
        r.bad_tag += t.bad_tag;
        r.unauthenticated += t.unauthenticated;
        r.replayed += t.replayed;
        r.invalid_block += t.invalid_block;
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted.get(i.min(sorted.len() - 1)).copied().unwrap_or(0) as f64 / 1000.0
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
    #[cfg(feature = "service")]
    let service = match &args.service {
        Some((endpoint, api, token)) => {
            match remote::Service::new(api, token, endpoint.clone(), usize::from(args.mtu)) {
                Ok(s) => Some(s),
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        None => None,
    };
    // Names a service has not seen: this run's start, in Unix ms.
    #[cfg(feature = "service")]
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    for n in 0..args.devices {
        #[cfg(not(feature = "service"))]
        let (id, remote) = (0x1000 + n, None);
        #[cfg(feature = "service")]
        let mut buf = [0u8; device::MTU + 64];
        #[cfg(feature = "service")]
        let (id, remote) = match &service {
            None => (0x1000 + n, None),
            Some(service) => {
                let provisioned = service.provision(&format!("sim-{run}-{n}"));
                match provisioned.and_then(|p| remote::Remote::new(service, &p, &mut buf)) {
                    Ok(r) => (r.id, Some(r)),
                    Err(e) => {
                        eprintln!("device {n}: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            }
        };
        match args.store {
            StoreKind::Ram => {
                device::run::<storage::RamDeviceStore>(id, remote, &args, &mut totals)
            }
            StoreKind::Flash => {
                device::run::<storage::FlashDeviceStore>(id, remote, &args, &mut totals)
            }
        }
    }
    let wall = started.elapsed().as_secs_f64();
    totals.alert_latency_ms.sort_unstable();
    let per_reading = |b: u64| b as f64 / totals.delivered.max(1) as f64;
    let block_bpr = totals.block_bytes as f64 / totals.block_readings.max(1) as f64;
    let refused = totals.server.refused;
    // What only the server half in this process can tell.
    let local = |v: String| {
        if args.service.is_some() {
            "null".to_string()
        } else {
            v
        }
    };
    let fields: Vec<(&str, String)> = vec![
        (
            "server",
            args.service
                .as_ref()
                .map_or("\"in-process\"".into(), |(e, _, _)| {
                    format!("\"{}\"", e.scheme())
                }),
        ),
        (
            "store",
            match args.store {
                StoreKind::Ram => "\"ram\"".into(),
                StoreKind::Flash => "\"flash\"".into(),
            },
        ),
        ("mtu", args.mtu.to_string()),
        (
            "link_mtu",
            args.link_mtu.map_or("null".into(), |m| m.to_string()),
        ),
        ("fragments_sent", totals.fragments_sent.to_string()),
        (
            "fragmented_frames_incomplete",
            totals.fragmented_frames_incomplete.to_string(),
        ),
        (
            "fragmented_frames_mixed",
            totals.fragmented_frames_mixed.to_string(),
        ),
        ("device_days", format!("{}", totals.device_days)),
        ("boots", totals.epochs.to_string()),
        ("readings_produced", totals.produced.to_string()),
        ("readings_delivered", totals.delivered.to_string()),
        ("readings_evicted", totals.evicted.to_string()),
        ("readings_decimated", totals.decimated.to_string()),
        ("readings_lost_unsealed", totals.lost_unsealed.to_string()),
        (
            "readings_lost_on_power_cycle",
            totals.lost_on_power_cycle.to_string(),
        ),
        ("power_cuts_in_writes", totals.power_cuts.to_string()),
        (
            "sealed_records_lost",
            totals.sealed_records_lost.to_string(),
        ),
        (
            "duplicates_received",
            totals.duplicates_received.to_string(),
        ),
        ("duplicates_stored", totals.duplicates_stored.to_string()),
        (
            "conflicts_stored",
            local(totals.conflicts_stored.to_string()),
        ),
        (
            "link_copies_refused_as_replays",
            totals.link_replays_refused.to_string(),
        ),
        ("attack_frames", local(totals.attack_frames.to_string())),
        (
            "attack_frames_refused",
            local(totals.attack_frames_refused.to_string()),
        ),
        ("refused_replayed", local(refused.replayed.to_string())),
        ("refused_bad_tag", local(refused.bad_tag.to_string())),
        (
            "refused_unknown_device",
            local(refused.unknown_device.to_string()),
        ),
        (
            "refused_unknown_key",
            local(refused.unknown_key.to_string()),
        ),
        ("refused_malformed", local(refused.malformed.to_string())),
        (
            "refused_unsupported_version",
            local(refused.unsupported_version.to_string()),
        ),
        (
            "refused_invalid_block",
            local(refused.invalid_block.to_string()),
        ),
        (
            "forged_downlinks",
            local(totals.forged_downlinks.to_string()),
        ),
        (
            "forged_downlinks_refused",
            local(totals.forged_downlinks_refused.to_string()),
        ),
        (
            "unix_time_error_max_ms",
            local(totals.time_error_max_ms.to_string()),
        ),
        (
            "readings_without_unix_time",
            local(totals.time_unknown.to_string()),
        ),
        ("frames_sent", totals.frames_sent.to_string()),
        (
            "bytes_on_air_per_reading",
            format!("{:.3}", per_reading(totals.bytes_on_air)),
        ),
        ("block_bytes_per_reading", local(format!("{block_bpr:.3}"))),
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
            "heartbeats_replaced_unsent",
            totals.heartbeats_replaced.to_string(),
        ),
        ("reports_held_back", totals.reports_held_back.to_string()),
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
            println!("{k:>32}  {v}");
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
