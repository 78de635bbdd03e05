//! `saturation-report`: the most readings a second telemark-cloud takes
//! end to end into PostgreSQL, in single-node mode, in cluster mode with
//! one instance and with two, beside mosquitto and a plain subscriber that
//! inserts rows, all in one run.
//!
//! ```text
//! cargo build --release -p telemark-cloud -p telemark-bench-cloud
//! target/release/saturation-report --devices 400 --readings 60 --seconds 30
//! ```
//!
//! Each of `--devices` devices is an MQTT client that sends a frame, waits
//! for its answer, and sends the next at once: a closed loop with one
//! frame in flight, as the engine keeps, and enough devices that the
//! service, not the devices, sets the pace. A frame is one sealed block of
//! `--readings` readings (a 1 Hz boiler temperature: 60 is a device
//! reporting a minute at a time). A reading counts once its frame's answer
//! is back at its device. After `--warm-up` seconds (10) it counts for
//! `--seconds`, and reads the CPU time each part spent meanwhile from
//! `/proc`: the instances, the NATS servers, PostgreSQL's processes, the
//! baseline's subscriber, and the whole machine.
//!
//! - **single-node**: one instance with `--database` on PostgreSQL.
//! - **cluster, 1 instance** and **cluster, 2 instances**: `--nats` on
//!   three NATS servers of its own in one JetStream cluster (the stream on
//!   3 replicas), the devices spread over the instances' brokers.
//! - **capped cluster, 1 instance** and **capped cluster, 2 instances**:
//!   the same, each instance held to `--instance-cores` cores (0.3; 0
//!   leaves these runs out) by a control group of its own, as if on a
//!   host of that size. On a small machine the uncapped runs share their
//!   cores with NATS, PostgreSQL and the devices, and a second instance
//!   gets only what those leave; capped, the instances are what sets the
//!   pace, and the ratio says what a second instance host adds. It needs
//!   a writable cgroup CPU controller (root).
//! - **mosquitto + subscriber**: mosquitto of its own; the devices publish
//!   the same readings as JSON; a subscriber (this binary, in a process of
//!   its own) takes what has arrived, up to 512 messages, inserts a row a
//!   reading (`INSERT … UNNEST`, the key making a redelivery harmless) in
//!   one transaction, then acknowledges each message (manual PUBACK) and
//!   answers its device. It does what telemark does between broker and
//!   database, less the verification, the compression and the protocol.
//!
//! Every run checks what it stored: no fewer readings than were answered,
//! no more than were sent; any other count is an error and a non-zero
//! exit. Everything (the devices too) shares this machine's cores.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant as Wall};

use rumqttc::v5::mqttbytes::v5::{Packet, Publish};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{Client, Event, MqttOptions};
use telemark_bench_cloud::frames;
use telemark_bench_cloud::percentile_ms;
use telemark_bench_cloud::services::{self, clock_ticks, cpu_of_command, machine_ticks, Processes};
use telemark_core::model::Value;
use telemark_core::wire::seal::{Key, Sealing};
use telemark_mqtt::Topics;

struct Args {
    devices: u64,
    readings: u32,
    seconds: u64,
    warm_up: u64,
    postgres: String,
    only: Option<String>,
    /// Each instance's CPU in the capped cluster runs, cores.
    instance_cores: f64,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut a = Args {
        devices: 400,
        readings: 60,
        seconds: 30,
        warm_up: 10,
        postgres: "postgres://postgres@127.0.0.1:5432".into(),
        only: None,
        instance_cores: 0.3,
    };
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        let number = |v: String| v.parse::<u64>().map_err(|e| format!("{flag} {v}: {e}"));
        match flag.as_str() {
            "--devices" => a.devices = number(value()?)?.max(1),
            "--readings" => a.readings = number(value()?)?.clamp(1, 2000) as u32,
            "--seconds" => a.seconds = number(value()?)?.max(1),
            "--warm-up" => a.warm_up = number(value()?)?,
            "--postgres" => a.postgres = value()?,
            "--only" => a.only = Some(value()?),
            "--instance-cores" => {
                let v = value()?;
                a.instance_cores = v.parse::<f64>().map_err(|e| format!("{flag} {v}: {e}"))?;
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(a)
}

/// What one run measured.
struct Measured {
    name: &'static str,
    readings_per_s: f64,
    frames_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// Frames sent again for want of an answer within [`ANSWER_TIMEOUT`].
    resent: u64,
    /// Cores in use, on average over the window: the service (the
    /// instances, or the baseline's subscriber), the message layer (NATS,
    /// or mosquitto), PostgreSQL, the whole machine.
    service: f64,
    messaging: f64,
    postgres: f64,
    machine: f64,
}

/// The key of bench device `id`.
fn key_of(id: u64) -> [u8; 32] {
    let mut k = [0u8; 32];
    for (i, b) in k.iter_mut().enumerate() {
        *b = (id >> ((i % 8) * 8)) as u8 ^ (i as u8).wrapping_mul(31);
    }
    k
}

/// What the devices count, shared.
#[derive(Default)]
struct Tally {
    /// Frames answered, in all and within the window.
    answered: AtomicU64,
    in_window: AtomicU64,
    /// Frames handed to the broker, and frames sent again for want of
    /// an answer.
    sent: AtomicU64,
    resent: AtomicU64,
    counting: AtomicBool,
    latencies: Mutex<Vec<Duration>>,
}

/// What a device publishes, and where.
#[derive(Clone, Copy)]
enum Form {
    /// Sealed telemark frames on `telemark/v1/{id}/up`.
    Telemark,
    /// The same readings as JSON on `baseline/v1/{id}/up`.
    Json,
}

/// The payload of frame `index` of device `id` in `form`.
fn payload(form: Form, id: u64, index: u32, n: u32) -> Result<Vec<u8>, String> {
    match form {
        Form::Telemark => {
            frames::frame(id, &Sealing::key(1, Key::from_bytes(key_of(id))), index, n)
        }
        Form::Json => {
            let points: Vec<String> = frames::readings(index, n)
                .iter()
                .map(|r| {
                    let v = match r.value {
                        Value::Scaled(c) => f64::from(c) / 100.0,
                        _ => f64::NAN,
                    };
                    format!("[{},{v}]", r.time.as_millis())
                })
                .collect();
            Ok(format!(
                "{{\"device\":{id},\"channel\":1,\"readings\":[{}]}}",
                points.join(",")
            )
            .into_bytes())
        }
    }
}

/// How long a device waits for an answer before it sends the frame again.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// One device: a frame, its answer, the next, until `stop`.
async fn device(
    port: u16,
    id: u64,
    form: Form,
    n: u32,
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
) -> Result<(), String> {
    let (up, down) = match form {
        Form::Telemark => {
            let t = Topics::new("telemark", id).ok_or("no topics")?;
            (t.up().to_string(), t.down().to_string())
        }
        Form::Json => (
            format!("baseline/v1/{id}/up"),
            format!("baseline/v1/{id}/down"),
        ),
    };
    let (client, mut events) =
        services::mqtt_device(format!("saturation-{id}"), port, down).await?;
    let mut index = 0u32;
    while !stop.load(Ordering::Relaxed) {
        let body = payload(form, id, index, n)?;
        let sent = Wall::now();
        tally.sent.fetch_add(1, Ordering::Relaxed);
        // Sent again, the same bytes, when no answer comes in time, as
        // the engine does; the server keeps it once.
        let mut tries = 0;
        'answer: loop {
            client
                .publish(up.clone(), QoS::AtLeastOnce, false, body.clone())
                .await
                .map_err(|e| e.to_string())?;
            tries += 1;
            let deadline = tokio::time::Instant::now() + ANSWER_TIMEOUT;
            loop {
                match tokio::time::timeout_at(deadline, events.poll()).await {
                    Ok(Ok(Event::Incoming(Packet::Publish(_)))) => break 'answer,
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Err(format!("device {id}: {e}")),
                    Err(_) if tries < 3 => {
                        tally.resent.fetch_add(1, Ordering::Relaxed);
                        continue 'answer;
                    }
                    Err(_) => return Err(format!("device {id}: no answer to 3 tries")),
                }
            }
        }
        tally.answered.fetch_add(1, Ordering::Relaxed);
        if tally.counting.load(Ordering::Relaxed) {
            tally.in_window.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut l) = tally.latencies.lock() {
                l.push(sent.elapsed());
            }
        }
        index += 1;
    }
    let _ = client.disconnect().await;
    Ok(())
}

/// What the run watches for CPU time: the service's processes, the
/// message layer's.
struct Watched {
    service: Vec<u32>,
    messaging: Vec<u32>,
}

/// CPU seconds of the service, the message layer, PostgreSQL; the
/// machine's busy and total ticks.
fn cpu(w: &Watched, ticks: f64) -> ([f64; 3], (u64, u64)) {
    let sum = |pids: &[u32]| pids.iter().map(|&p| services::usage(p, ticks).1).sum();
    (
        [
            sum(&w.service),
            sum(&w.messaging),
            cpu_of_command("postgres", ticks),
        ],
        machine_ticks(),
    )
}

/// Runs the devices against `ports` (round robin) for the warm-up and the
/// window; what they measured, and the frames sent and answered in all.
async fn drive(
    name: &'static str,
    a: &Args,
    form: Form,
    ports: &[u16],
    watched: &Watched,
) -> Result<(Measured, u64, u64), String> {
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..a.devices)
        .map(|i| {
            let port = ports
                .get(i as usize % ports.len().max(1))
                .copied()
                .unwrap_or(0);
            tokio::spawn(device(
                port,
                2_000_001 + i,
                form,
                a.readings,
                Arc::clone(&tally),
                Arc::clone(&stop),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(a.warm_up)).await;
    let ticks = clock_ticks();
    let (before, machine_before) = cpu(watched, ticks);
    tally.counting.store(true, Ordering::Relaxed);
    let from = Wall::now();
    tokio::time::sleep(Duration::from_secs(a.seconds)).await;
    tally.counting.store(false, Ordering::Relaxed);
    let window = from.elapsed().as_secs_f64();
    let (after, machine_after) = cpu(watched, ticks);
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    let frames = tally.in_window.load(Ordering::Relaxed) as f64;
    let mut latencies = tally
        .latencies
        .lock()
        .map(|l| l.clone())
        .unwrap_or_default();
    latencies.sort_unstable();
    let cores = |i: usize| {
        (after.get(i).copied().unwrap_or(0.0) - before.get(i).copied().unwrap_or(0.0)) / window
    };
    let busy = machine_after.0.saturating_sub(machine_before.0) as f64;
    let total = machine_after.1.saturating_sub(machine_before.1).max(1) as f64;
    let measured = Measured {
        name,
        readings_per_s: frames * f64::from(a.readings) / window,
        frames_per_s: frames / window,
        p50_ms: percentile_ms(&latencies, 0.5),
        p99_ms: percentile_ms(&latencies, 0.99),
        resent: tally.resent.load(Ordering::Relaxed),
        service: cores(0),
        messaging: cores(1),
        postgres: cores(2),
        machine: busy / total * std::thread::available_parallelism().map_or(1, |n| n.get()) as f64,
    };
    Ok((
        measured,
        tally.sent.load(Ordering::Relaxed),
        tally.answered.load(Ordering::Relaxed),
    ))
}

/// Checks the readings stored against those answered and those sent.
fn check(name: &str, stored: u64, sent: u64, answered: u64, n: u32) -> Result<(), String> {
    let (sent, answered) = (sent * u64::from(n), answered * u64::from(n));
    if stored < answered || stored > sent {
        return Err(format!(
            "{name}: {stored} readings stored, {answered} answered, {sent} sent"
        ));
    }
    Ok(())
}

/// A count from the database at `url`.
fn count(url: &str, sql: &str) -> Result<u64, String> {
    let mut c = postgres::Client::connect(url, postgres::NoTls).map_err(|e| e.to_string())?;
    let row = c.query_one(sql, &[]).map_err(|e| e.to_string())?;
    Ok(row.get::<_, i64>(0) as u64)
}

/// One run of telemark-cloud: `instances` of it, in cluster mode or not.
async fn telemark(
    name: &'static str,
    a: &Args,
    binary: &Path,
    dir: &Path,
    cluster: Option<usize>,
    cap: Option<f64>,
) -> Result<Measured, String> {
    let run_dir = dir.join(name.replace([' ', ','], "-"));
    std::fs::create_dir_all(&run_dir).map_err(|e| e.to_string())?;
    let keys: String = (0..a.devices)
        .map(|i| {
            let id = 2_000_001 + i;
            let hex: String = key_of(id).iter().map(|b| format!("{b:02x}")).collect();
            format!("{id} 1 {hex}\n")
        })
        .collect();
    let keys_file = run_dir.join("keys.txt");
    std::fs::write(&keys_file, keys).map_err(|e| e.to_string())?;
    let db = format!("telemark_saturation_{}", std::process::id());
    let url = tokio::task::block_in_place(|| services::database(&a.postgres, &db))?;
    let (servers, nats) = match cluster {
        Some(_) => services::nats(&run_dir, 3)?,
        None => (Vec::new(), Processes::default()),
    };
    let mut flags = vec![
        "--database".to_string(),
        url.clone(),
        "--device-rate".into(),
        "0".into(),
    ];
    if cluster.is_some() {
        flags.extend(["--nats".to_string(), servers.join(",")]);
    }
    let mut procs = Processes::default();
    let mut caps = Vec::new();
    let mut ports = Vec::new();
    for i in 0..cluster.unwrap_or(1) {
        let mut own = flags.clone();
        if i == 0 {
            own.extend(["--keys".to_string(), keys_file.display().to_string()]);
        }
        let data = run_dir.join(format!("instance-{i}"));
        let instance =
            tokio::task::block_in_place(|| services::instance(binary, &data, &own, &mut procs))?;
        if let Some(cores) = cap {
            let group = format!("telemark-saturation-{}-{i}", std::process::id());
            let c = services::CpuCap::new(&group, cores)?;
            c.add(instance.pid)?;
            caps.push(c);
        }
        ports.push(instance.mqtt);
    }
    let watched = Watched {
        service: procs.pids(),
        messaging: nats.pids(),
    };
    let result = drive(name, a, Form::Telemark, &ports, &watched).await;
    // What was sent and not answered may still be committing.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stored = tokio::task::block_in_place(|| {
        count(
            &url,
            "SELECT COALESCE(SUM(declared), 0)::BIGINT FROM records WHERE lane = 'routine'",
        )
    });
    drop(procs);
    drop(caps);
    drop(nats);
    tokio::task::block_in_place(|| services::drop_database(&a.postgres, &url));
    let (measured, sent, answered) = result?;
    check(name, stored?, sent, answered, a.readings)?;
    Ok(measured)
}

/// The baseline's table.
const BASELINE_SCHEMA: &str = "CREATE TABLE readings (device BIGINT NOT NULL, \
    channel INT NOT NULL, at_ms BIGINT NOT NULL, value DOUBLE PRECISION NOT NULL, \
    PRIMARY KEY (device, channel, at_ms))";

/// The baseline: mosquitto, and this binary as its subscriber.
async fn baseline(name: &'static str, a: &Args, dir: &Path) -> Result<Measured, String> {
    let run_dir = dir.join("baseline");
    std::fs::create_dir_all(&run_dir).map_err(|e| e.to_string())?;
    let (port, broker) = services::mosquitto(&run_dir)?;
    let db = format!("telemark_saturation_{}", std::process::id());
    let url = tokio::task::block_in_place(|| {
        let url = services::database(&a.postgres, &db)?;
        let mut c = postgres::Client::connect(&url, postgres::NoTls).map_err(|e| e.to_string())?;
        c.batch_execute(BASELINE_SCHEMA)
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(url)
    })?;
    let mut child = Command::new(std::env::current_exe().map_err(|e| e.to_string())?)
        .args(["--baseline-subscriber", &port.to_string(), &url])
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    // It says "ready" once subscribed.
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        let _ = BufReader::new(out).read_line(&mut line);
    }
    let subscriber = Processes(vec![child]);
    if line.trim() != "ready" {
        return Err(format!("the baseline's subscriber did not start: {line}"));
    }
    let watched = Watched {
        service: subscriber.pids(),
        messaging: broker.pids(),
    };
    let result = drive(name, a, Form::Json, &[port], &watched).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stored = tokio::task::block_in_place(|| count(&url, "SELECT COUNT(*) FROM readings"));
    drop(subscriber);
    drop(broker);
    tokio::task::block_in_place(|| services::drop_database(&a.postgres, &url));
    let (measured, sent, answered) = result?;
    check(name, stored?, sent, answered, a.readings)?;
    Ok(measured)
}

/// Most messages the baseline's subscriber commits at once.
const BATCH: usize = 512;

/// The baseline's subscriber: `baseline/v1/+/up` from the broker on
/// `port`, rows into `url`, a PUBACK and an answer after each commit.
fn subscriber(port: u16, url: &str) -> Result<(), String> {
    let mut db = postgres::Client::connect(url, postgres::NoTls).map_err(|e| e.to_string())?;
    let insert = db
        .prepare(
            "INSERT INTO readings SELECT * FROM \
             UNNEST($1::BIGINT[], $2::INT[], $3::BIGINT[], $4::FLOAT8[]) ON CONFLICT DO NOTHING",
        )
        .map_err(|e| e.to_string())?;
    let mut options = MqttOptions::new("baseline-subscriber", "127.0.0.1", port);
    options
        .set_clean_start(true)
        .set_keep_alive(Duration::from_secs(60))
        .set_manual_acks(true)
        .set_max_packet_size(Some(64 * 1024))
        .set_outgoing_inflight_upper_limit(1024);
    let (client, mut connection) = Client::new(options, 4 * BATCH);
    client
        .subscribe("baseline/v1/+/up", QoS::AtLeastOnce)
        .map_err(|e| e.to_string())?;
    let (tx, rx) = mpsc::channel::<Publish>();
    std::thread::spawn(move || {
        for event in connection.iter() {
            match event {
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    println!("ready");
                    let _ = std::io::stdout().flush();
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if tx.send(p).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    eprintln!("baseline subscriber: {e}");
                    return;
                }
            }
        }
    });
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let (mut devices, mut channels, mut times, mut values) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut answers = Vec::with_capacity(batch.len());
        for p in &batch {
            let Ok(message) = serde_json::from_slice::<serde_json::Value>(&p.payload) else {
                eprintln!("baseline subscriber: a message that is not JSON, dropped");
                continue;
            };
            let Some(device) = message["device"].as_i64() else {
                continue;
            };
            let channel = message["channel"].as_i64().unwrap_or(0) as i32;
            for point in message["readings"].as_array().into_iter().flatten() {
                if let (Some(at), Some(v)) = (point[0].as_i64(), point[1].as_f64()) {
                    devices.push(device);
                    channels.push(channel);
                    times.push(at);
                    values.push(v);
                }
            }
            answers.push(format!("baseline/v1/{device}/down"));
        }
        let mut tx = db.transaction().map_err(|e| e.to_string())?;
        tx.execute(&insert, &[&devices, &channels, &times, &values])
            .map_err(|e| e.to_string())?;
        tx.commit().map_err(|e| e.to_string())?;
        for p in &batch {
            client.ack(p).map_err(|e| e.to_string())?;
        }
        for topic in answers {
            client
                .publish(topic, QoS::AtLeastOnce, false, b"ok".to_vec())
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

async fn report(a: Args) -> Result<(), String> {
    let binary = services::service_binary()?;
    let dir: PathBuf =
        std::env::temp_dir().join(format!("telemark-saturation-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    println!(
        "{} devices in a closed loop, frames of {} readings; {} s warm-up, {} s counted",
        a.devices, a.readings, a.warm_up, a.seconds
    );
    println!();
    println!("| run | readings/s | frames/s | ack p50 ms | ack p99 ms | sent again | service cores | NATS or mosquitto cores | PostgreSQL cores | machine cores busy |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let names = [
        "single-node",
        "cluster, 1 instance",
        "cluster, 2 instances",
        "capped cluster, 1 instance",
        "capped cluster, 2 instances",
        "mosquitto + subscriber",
    ];
    let cap = Some(a.instance_cores).filter(|&c| c > 0.0);
    let mut rows: Vec<Measured> = Vec::new();
    for name in names {
        if a.only.as_deref().is_some_and(|o| !name.starts_with(o))
            || (name.starts_with("capped") && cap.is_none())
        {
            continue;
        }
        let m = match name {
            "single-node" => telemark(name, &a, &binary, &dir, None, None).await?,
            "cluster, 1 instance" => telemark(name, &a, &binary, &dir, Some(1), None).await?,
            "cluster, 2 instances" => telemark(name, &a, &binary, &dir, Some(2), None).await?,
            "capped cluster, 1 instance" => telemark(name, &a, &binary, &dir, Some(1), cap).await?,
            "capped cluster, 2 instances" => {
                telemark(name, &a, &binary, &dir, Some(2), cap).await?
            }
            _ => baseline(name, &a, &dir).await?,
        };
        println!(
            "| {} | {:.0} | {:.0} | {:.1} | {:.1} | {} | {:.2} | {:.2} | {:.2} | {:.2} |",
            m.name,
            m.readings_per_s,
            m.frames_per_s,
            m.p50_ms,
            m.p99_ms,
            m.resent,
            m.service,
            m.messaging,
            m.postgres,
            m.machine
        );
        rows.push(m);
    }
    println!();
    let get = |n: &str| rows.iter().find(|m| m.name == n);
    if let (Some(one), Some(two)) = (get("cluster, 1 instance"), get("cluster, 2 instances")) {
        println!(
            "two instances: {:.2}x the readings/s of one",
            two.readings_per_s / one.readings_per_s
        );
    }
    if let (Some(one), Some(two), Some(cores)) = (
        get("capped cluster, 1 instance"),
        get("capped cluster, 2 instances"),
        cap,
    ) {
        println!(
            "two instances of {cores} cores each: {:.2}x the readings/s of one",
            two.readings_per_s / one.readings_per_s
        );
    }
    if let (Some(single), Some(one)) = (get("single-node"), get("cluster, 1 instance")) {
        println!(
            "cluster mode, one instance: {:.2}x the readings/s of single-node mode",
            one.readings_per_s / single.readings_per_s
        );
    }
    if let (Some(single), Some(base)) = (get("single-node"), get("mosquitto + subscriber")) {
        println!(
            "single-node: {:.2}x the readings/s of mosquitto + subscriber",
            single.readings_per_s / base.readings_per_s
        );
    }
    for m in &rows {
        // A part that did not run (no NATS in single-node mode) has none.
        let per = |cores: f64| {
            if cores < 0.01 {
                "-".to_string()
            } else {
                format!("{:.0}", m.frames_per_s / cores)
            }
        };
        println!(
            "{}: {} frames/s per core of the service, {} per core of NATS or mosquitto, {} per core of PostgreSQL",
            m.name,
            per(m.service),
            per(m.messaging),
            per(m.postgres)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("--baseline-subscriber") {
        let port = args.nth(1).and_then(|p| p.parse().ok());
        let url = args.next();
        return match (port, url) {
            (Some(port), Some(url)) => match subscriber(port, &url) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("baseline subscriber: {e}");
                    ExitCode::FAILURE
                }
            },
            _ => {
                eprintln!("baseline subscriber: --baseline-subscriber PORT URL");
                ExitCode::from(2)
            }
        };
    }
    let a = match parse_args(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("saturation-report: {e}");
            return ExitCode::from(2);
        }
    };
    services::run_report("saturation-report", report(a))
}
