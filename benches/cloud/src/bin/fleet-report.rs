//! `fleet-report`: a fleet connected all at once to telemark-cloud in
//! cluster mode, and what it costs the instances.
//!
//! ```text
//! cargo build --release -p telemark-cloud -p telemark-bench-cloud
//! target/release/fleet-report --devices 10000 --instances 2 --minutes 3
//! ```
//!
//! It starts `--nats-nodes` NATS servers (3: one JetStream cluster, the
//! stream on 3 replicas), a database of its own on PostgreSQL
//! (127.0.0.1:5432, or `--postgres URL`), and `--instances` telemark-cloud
//! processes in cluster mode: the `telemark-cloud` binary beside this one.
//! Then it runs `--devices` devices in this process, each the real engine
//! on a RAM store, with its own key, sealing every frame, over its own MQTT
//! connection (`telemark-mqtt`'s host link) to one instance's embedded
//! broker, round robin. Each samples two channels once a minute and reports
//! once a minute, in real time, its link kept up (config key 13), so every
//! device is connected the whole time. Their starts spread over the first
//! minute.
//!
//! After that minute of warm-up it measures for `--minutes`:
//!
//! - devices connected (their link up) at the end;
//! - each instance's RSS, and all the instances' RSS over the devices
//!   connected: memory per connected device;
//! - the instances' CPU time over the window, per 1,000 connected devices,
//!   in % of one core;
//! - acknowledgement latency, p50 and p99: from a frame handed to the link
//!   to its answer back at the device.
//!
//! The devices, NATS, PostgreSQL and the instances share this machine's
//! cores; the latency includes the devices' own scheduling.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration as Wall, Instant as WallClock};

use telemark_bench_cloud::percentile_ms;
use telemark_bench_cloud::services::{self, clock_ticks, usage};
use telemark_core::engine::{Boot, Engine};
use telemark_core::store::{FullPolicy, RamStore};
use telemark_core::time::{Duration, Instant};
use telemark_core::transport::{step_async, AsyncTransport};
use telemark_core::wire::report::ResetReason;
use telemark_core::wire::seal::{Key, Sealing};
use telemark_core::wire::Epoch;
use telemark_mqtt::host::{HostConfig, HostLink};
use telemark_mqtt::LinkState;
use telemark_qemu_app::{Boiler, FLOW, GAS, MTU};

type Device = Engine<RamStore<32, 1024>, 2, 16, MTU>;

struct Args {
    devices: usize,
    instances: usize,
    minutes: u64,
    nats_nodes: usize,
    postgres: String,
    json: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        devices: 1000,
        instances: 2,
        minutes: 2,
        nats_nodes: 3,
        postgres: "postgres://postgres@127.0.0.1:5432".into(),
        json: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        let number = |v: String| v.parse::<u64>().map_err(|e| format!("{flag} {v}: {e}"));
        match flag.as_str() {
            "--devices" => a.devices = number(value()?)? as usize,
            "--instances" => a.instances = number(value()?)?.max(1) as usize,
            "--minutes" => a.minutes = number(value()?)?.max(1),
            "--nats-nodes" => a.nats_nodes = number(value()?)?.clamp(1, 3) as usize,
            "--postgres" => a.postgres = value()?,
            "--json" => a.json = true,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(a)
}

/// A link that times each frame to its answer.
struct Timed {
    link: HostLink,
    sent: Option<WallClock>,
    answers: Vec<(WallClock, Wall)>,
}

impl AsyncTransport for Timed {
    type Error = <HostLink as AsyncTransport>::Error;

    fn mtu(&self) -> usize {
        self.link.mtu()
    }

    async fn power(&mut self, on: bool) -> Result<(), Self::Error> {
        self.link.power(on).await
    }

    async fn send(&mut self, frame: &[u8]) -> Result<(), Self::Error> {
        self.sent = Some(WallClock::now());
        self.link.send(frame).await
    }

    async fn receive(&mut self, buf: &mut [u8]) -> Result<Option<usize>, Self::Error> {
        let got = self.link.receive(buf).await?;
        if got.is_some() {
            if let Some(sent) = self.sent.take() {
                self.answers.push((WallClock::now(), sent.elapsed()));
            }
        }
        Ok(got)
    }

    fn keep_link_up(&mut self, keep: bool) {
        self.link.keep_link_up(keep);
    }

    fn retry_after(&mut self) -> Option<Duration> {
        self.link.retry_after()
    }
}

/// The engine of device `id`, reporting once a minute with its link
/// kept up.
fn engine(id: u64, key: Key) -> Result<Device, String> {
    let mut config = telemark_qemu_app::config(id, 16);
    config.uplink.report_interval = Duration::from_mins(1);
    config.uplink.keep_link_up = true;
    config.stager.max_age = Duration::from_mins(1);
    let boot = Boot {
        reset_reason: ResetReason::PowerOn,
        epoch: Epoch(id),
        sealing: Sealing::key(1, key),
    };
    Engine::new(
        &[FLOW, GAS],
        RamStore::new(FullPolicy::EvictOldest),
        config,
        boot,
    )
    .map_err(|e| format!("device {id}: {e:?}"))
}

/// Runs one device until `stop`; the answers it timed.
async fn run(
    mut engine: Device,
    mut link: Timed,
    seed: u64,
    up: Arc<AtomicUsize>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Vec<(WallClock, Wall)> {
    let start = WallClock::now();
    let mut boiler = Boiler::new(seed);
    let mut was_up = false;
    loop {
        let now = Instant::from_millis(start.elapsed().as_millis() as u64);
        let wake = step_async(&mut engine, &mut link, now, &mut boiler).await;
        let is_up = link.link.state() == LinkState::Up;
        if is_up != was_up {
            if is_up {
                up.fetch_add(1, Ordering::Relaxed);
            } else {
                up.fetch_sub(1, Ordering::Relaxed);
            }
            was_up = is_up;
        }
        let ahead = wake.as_millis().saturating_sub(now.as_millis());
        let wait = Wall::from_millis(ahead.clamp(1, 1000));
        tokio::select! {
            () = link.link.wait_input(), if is_up => {}
            () = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|&s| s) => break,
        }
    }
    link.answers
}

async fn report(a: Args) -> Result<(), String> {
    let binary = services::service_binary()?;
    let dir: PathBuf = std::env::temp_dir().join(format!("telemark-fleet-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let (servers, mut procs) = services::nats(&dir, a.nats_nodes)?;
    let name = format!("telemark_fleet_{}", std::process::id());
    let url = tokio::task::block_in_place(|| services::database(&a.postgres, &name))?;

    // The devices' keys, imported by the first instance.
    let ids: Vec<u64> = (0..a.devices as u64).map(|i| 1_000_001 + i).collect();
    let key_of = |id: u64| {
        let mut k = [0u8; 32];
        for (i, b) in k.iter_mut().enumerate() {
            *b = (id >> ((i % 8) * 8)) as u8 ^ (i as u8);
        }
        k
    };
    let keys: String = ids
        .iter()
        .map(|&id| {
            let hex: String = key_of(id).iter().map(|b| format!("{b:02x}")).collect();
            format!("{id} 1 {hex}\n")
        })
        .collect();
    let keys_file = dir.join("keys.txt");
    std::fs::write(&keys_file, keys).map_err(|e| e.to_string())?;

    let flags = vec![
        "--nats".to_string(),
        servers.join(","),
        "--database".to_string(),
        url.clone(),
    ];
    let mut instances = Vec::new();
    for i in 0..a.instances {
        let mut own = flags.clone();
        if i == 0 {
            own.extend(["--keys".to_string(), keys_file.display().to_string()]);
        }
        let data = dir.join(format!("instance-{i}"));
        instances.push(tokio::task::block_in_place(|| {
            services::instance(&binary, &data, &own, &mut procs)
        })?);
    }
    let ticks = clock_ticks();
    let idle: Vec<u64> = instances.iter().map(|i| usage(i.pid, ticks).0).collect();

    let up = Arc::new(AtomicUsize::new(0));
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let spread = Wall::from_secs(60).as_secs_f64() / a.devices.max(1) as f64;
    let mut tasks = Vec::new();
    for (n, &id) in ids.iter().enumerate() {
        let broker = instances.get(n % instances.len()).map_or(0, |i| i.mqtt);
        let mut config = HostConfig::new(id, vec![("127.0.0.1".into(), broker)]);
        config.mtu = MTU;
        let link = Timed {
            link: HostLink::new(config).ok_or("a host link")?,
            sent: None,
            answers: Vec::new(),
        };
        let device = engine(id, Key::from_bytes(key_of(id)))?;
        let (up, stopping) = (Arc::clone(&up), stopping.clone());
        let delay = Wall::from_secs_f64(spread * n as f64);
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            run(device, link, id, up, stopping).await
        }));
    }
    // A minute of warm-up: every device started and connected.
    tokio::time::sleep(Wall::from_secs(70)).await;
    let from = WallClock::now();
    let before: Vec<(u64, f64)> = instances.iter().map(|i| usage(i.pid, ticks)).collect();
    tokio::time::sleep(Wall::from_secs(60 * a.minutes)).await;
    let after: Vec<(u64, f64)> = instances.iter().map(|i| usage(i.pid, ticks)).collect();
    let window = from.elapsed().as_secs_f64();
    let connected = up.load(Ordering::Relaxed);
    let _ = stop.send(true);
    let mut latencies = Vec::new();
    for t in tasks {
        if let Ok(answers) = t.await {
            latencies.extend(
                answers
                    .into_iter()
                    .filter(|(at, _)| *at >= from)
                    .map(|(_, d)| d),
            );
        }
    }
    latencies.sort();
    let rss: Vec<u64> = after.iter().map(|u| u.0).collect();
    let total_rss: u64 = rss.iter().sum();
    let cpu: f64 = after.iter().zip(&before).map(|(a, b)| a.1 - b.1).sum();
    let per_device_kib = total_rss as f64 / 1024.0 / connected.max(1) as f64;
    let added_kib = (total_rss - idle.iter().sum::<u64>().min(total_rss)) as f64
        / 1024.0
        / connected.max(1) as f64;
    let cpu_per_1000 = cpu / window * 100.0 / (connected.max(1) as f64 / 1000.0);
    let (p50, p99) = (
        percentile_ms(&latencies, 0.5),
        percentile_ms(&latencies, 0.99),
    );
    if a.json {
        println!(
            "{{\"devices\":{},\"connected\":{connected},\"instances\":{},\"nats_nodes\":{},\
             \"rss_bytes\":{rss:?},\"rss_kib_per_device\":{per_device_kib:.1},\
             \"added_rss_kib_per_device\":{added_kib:.1},\"cpu_percent_per_1000_devices\":{cpu_per_1000:.2},\
             \"answers\":{},\"ack_p50_ms\":{p50:.1},\"ack_p99_ms\":{p99:.1},\"window_s\":{window:.0}}}",
            a.devices,
            a.instances,
            a.nats_nodes,
            latencies.len()
        );
    } else {
        println!(
            "{} devices, {connected} connected at the end, over {} instances, {} NATS nodes; \
             {window:.0} s measured",
            a.devices, a.instances, a.nats_nodes
        );
        for (i, r) in rss.iter().enumerate() {
            println!("  instance {i}: RSS {:.1} MiB", *r as f64 / 1048576.0);
        }
        println!("  RSS per connected device: {per_device_kib:.1} KiB ({added_kib:.1} KiB above the idle instances)");
        println!("  CPU per 1,000 connected devices: {cpu_per_1000:.2} % of a core");
        println!(
            "  acknowledgements: {} in the window, p50 {p50:.1} ms, p99 {p99:.1} ms",
            latencies.len()
        );
    }
    drop(procs);
    let _ = std::fs::remove_dir_all(&dir);
    tokio::task::block_in_place(|| services::drop_database(&a.postgres, &url));
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("fleet-report: {e}");
            return ExitCode::from(2);
        }
    };
    services::run_report("fleet-report", report(args))
}
