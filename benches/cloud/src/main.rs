//! `cloud-report`: telemark-cloud's ingest, end to end, side by side.
//!
//! ```text
//! cargo run --release -p telemark-bench-cloud --bin cloud-report
//! cargo run --release -p telemark-bench-cloud --bin cloud-report -- --devices 64 --frames 50 --readings 600
//! ```
//!
//! Each simulated device is an MQTT client of the embedded broker
//! (`telemark-mqtt-broker`) that publishes sealed records frames, each one
//! block of `--readings` readings of a 1 Hz boiler temperature (two
//! decimals, with noise), and waits for the response before it sends the
//! next, as the engine does. The service's path is the real one: its MQTT
//! ingest, the hub (verified, staged, committed in groups), the store,
//! the response published back. A reading counts once its frame's
//! response is back at its device.
//!
//! For each backend, SQLite and PostgreSQL (127.0.0.1:5432, or
//! `--postgres URL`), the report runs twice: blocks kept compressed at rest
//! (telemark's form), and the same beside a row per reading (the naive
//! schema, `reading_rows`). It prints readings per second, the mean group
//! committed, acknowledgement latency, the bytes on disk per stored reading
//! (less what the empty schema takes),
//! and a range query of one channel over a week at 1 Hz downsampled to
//! 2,000 points (the median of five).
//!
//! Every reading sent is checked stored once; any other count is an error
//! and a non-zero exit.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant as Wall};

use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::Event;
use telemark_bench_cloud::percentile_ms;
use telemark_bench_cloud::{frames, services};
use telemark_cloud::downsample::downsample;
use telemark_cloud::{
    mqtt, unix_ms, Arrival, Broker, CloudStore, Hub, PgStore, Provisioned, ReadingQuery,
    SqliteStore,
};
use telemark_core::wire::seal::Sealing;
use telemark_mqtt::Topics;

/// What to run.
struct Args {
    devices: u64,
    frames: u32,
    readings: u32,
    postgres: String,
    only: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        devices: 64,
        frames: 50,
        readings: 600,
        postgres: "postgres://postgres@127.0.0.1:5432".into(),
        only: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        let number = |v: String| v.parse::<u64>().map_err(|e| format!("{flag} {v}: {e}"));
        match flag.as_str() {
            "--devices" => a.devices = number(value()?)?.max(1),
            "--frames" => {
                a.frames = u32::try_from(number(value()?)?.max(1)).map_err(|e| e.to_string())?
            }
            "--readings" => {
                a.readings =
                    u32::try_from(number(value()?)?.clamp(1, 2000)).map_err(|e| e.to_string())?
            }
            "--postgres" => a.postgres = value()?,
            "--only" => a.only = Some(value()?),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(a)
}

/// Where a run keeps its data.
#[derive(Clone)]
enum Backend {
    Sqlite(PathBuf),
    Postgres { server: String, db: String },
}

impl Backend {
    fn open(&self, rows: bool) -> Result<Box<dyn CloudStore>, String> {
        match self {
            Backend::Sqlite(path) => {
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
                }
                let mut s = SqliteStore::open(path).map_err(|e| e.to_string())?;
                s.keep_reading_rows(rows);
                Ok(Box::new(s))
            }
            Backend::Postgres { server, db } => {
                let mut admin =
                    postgres::Client::connect(&format!("{server}/postgres"), postgres::NoTls)
                        .map_err(|e| format!("PostgreSQL at {server}: {e}"))?;
                admin
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
                    .map_err(|e| e.to_string())?;
                admin
                    .batch_execute(&format!("CREATE DATABASE {db}"))
                    .map_err(|e| e.to_string())?;
                let mut s =
                    PgStore::connect(&format!("{server}/{db}")).map_err(|e| e.to_string())?;
                s.keep_reading_rows(rows);
                Ok(Box::new(s))
            }
        }
    }

    /// Bytes the data takes on disk (the store closed, for SQLite).
    fn bytes(&self) -> Result<u64, String> {
        match self {
            Backend::Sqlite(path) => {
                let mut total = 0;
                for suffix in ["", "-wal"] {
                    total += std::fs::metadata(format!("{}{suffix}", path.display()))
                        .map_or(0, |m| m.len());
                }
                Ok(total)
            }
            Backend::Postgres { server, db } => {
                let mut c = postgres::Client::connect(&format!("{server}/{db}"), postgres::NoTls)
                    .map_err(|e| e.to_string())?;
                let row = c
                    .query_one("SELECT pg_database_size(current_database())", &[])
                    .map_err(|e| e.to_string())?;
                Ok(row.get::<_, i64>(0) as u64)
            }
        }
    }

    fn drop_data(&self) {
        match self {
            Backend::Sqlite(path) => {
                let _ = std::fs::remove_file(path);
            }
            Backend::Postgres { server, db } => {
                if let Ok(mut admin) =
                    postgres::Client::connect(&format!("{server}/postgres"), postgres::NoTls)
                {
                    let _ =
                        admin.batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
                }
            }
        }
    }
}

/// What one run measured.
struct Row {
    name: String,
    readings_per_s: f64,
    frames_per_s: f64,
    mean_group: f64,
    p50_ms: f64,
    p99_ms: f64,
    bytes_per_reading: f64,
    week_query_ms: f64,
}

/// One device: publishes its frames one after the other, each once the
/// response to the one before is back; the latency of each.
async fn device(port: u16, id: u64, frames: Vec<Vec<u8>>) -> Result<Vec<Duration>, String> {
    let topics = Topics::new("telemark", id).ok_or("no topics")?;
    let (client, mut events) = services::mqtt_device(
        format!("bench-device-{id}"),
        port,
        topics.down().to_string(),
    )
    .await?;
    let mut latencies = Vec::with_capacity(frames.len());
    for frame in frames {
        let sent = Wall::now();
        client
            .publish(topics.up(), QoS::AtLeastOnce, false, frame)
            .await
            .map_err(|e| e.to_string())?;
        loop {
            match tokio::time::timeout(Duration::from_secs(30), events.poll()).await {
                Ok(Ok(Event::Incoming(Packet::Publish(_)))) => break,
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(format!("device {id}: {e}")),
                Err(_) => return Err(format!("device {id}: no response in 30 s")),
            }
        }
        latencies.push(sent.elapsed());
    }
    let _ = client.disconnect().await;
    Ok(latencies)
}

/// A week at 1 Hz on one channel of a device of its own, stored through
/// the hub; then the median time of five queries of it, downsampled to
/// 2,000 points.
fn week_query(hub: &mut Hub, n: u32) -> Result<f64, String> {
    let p = hub.add_device("week", 0).map_err(|e| e.to_string())?;
    let frames = (7 * 86_400 / n) as usize;
    let received = 1_800_000_000_000u64;
    let arrivals: Vec<Arrival> = (0..frames as u32)
        .map(|i| {
            frame(&p, i, n).map(|frame| Arrival {
                device: None,
                frame,
                // Each frame arrives as its last reading is taken.
                received_unix_ms: received + (u64::from(i) + 1) * u64::from(n) * 1000,
            })
        })
        .collect::<Result<_, _>>()?;
    for group in arrivals.chunks(64) {
        for answer in hub.ingest_group(group) {
            answer.map_err(|e| format!("week: {e}"))?;
        }
    }
    let query = ReadingQuery {
        device: p.device.id,
        channel: Some(1),
        from_ms: received as i64,
        to_ms: received as i64 + 7 * 86_400_000,
    };
    let mut times = Vec::new();
    for _ in 0..5 {
        let started = Wall::now();
        let readings = hub.store().readings(&query).map_err(|e| e.to_string())?;
        let points = downsample(&readings, query.from_ms, query.to_ms, 2000);
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        if readings.len() != frames * n as usize || points.len() != 2000 {
            return Err(format!(
                "week: {} readings in {} points, {} expected",
                readings.len(),
                points.len(),
                frames * n as usize
            ));
        }
    }
    times.sort_by(f64::total_cmp);
    Ok(times.get(2).copied().unwrap_or(0.0))
}

fn run(name: &str, backend: &Backend, rows: bool, a: &Args) -> Result<Row, String> {
    let store = backend.open(rows)?;
    // What the empty schema takes (PostgreSQL's catalogs, SQLite's first
    // pages) is not the readings'.
    let empty = backend.bytes()?;
    let mut hub = Hub::new(store).map_err(|e| e.to_string())?;
    let devices: Vec<Provisioned> = (0..a.devices)
        .map(|i| hub.add_device(&format!("bench-{i}"), 0))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let frames: Vec<Vec<Vec<u8>>> = devices
        .iter()
        .map(|p| (0..a.frames).map(|i| frame(p, i, a.readings)).collect())
        .collect::<Result<_, _>>()?;
    let (handle, thread) = hub.spawn().map_err(|e| e.to_string())?;
    let broker = telemark_mqtt_broker::Broker::start(&telemark_mqtt_broker::Settings::new(
        std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
    ))
    .map_err(|e| e.to_string())?;
    let port = broker.addr().port();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let (elapsed, mut latencies) = runtime.block_on(async {
        let (stop, stopping) = tokio::sync::watch::channel(false);
        let mut b = Broker::new("127.0.0.1", port);
        b.client_id = format!("cloud-report-{name}");
        let service = tokio::spawn(mqtt::serve(handle.clone(), b, unix_ms, stopping));
        // The service's subscription first.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let started = Wall::now();
        let tasks: Vec<_> = devices
            .iter()
            .zip(frames)
            .map(|(p, f)| tokio::spawn(device(port, p.device.id, f)))
            .collect();
        let mut latencies = Vec::new();
        for t in tasks {
            latencies.extend(t.await.map_err(|e| e.to_string())??);
        }
        let elapsed = started.elapsed();
        let _ = stop.send(true);
        let _ = service.await;
        Ok::<_, String>((elapsed, latencies))
    })?;
    broker.stop();
    let ids: Vec<u64> = devices.iter().map(|p| p.device.id).collect();
    let stored = handle
        .call_blocking(move |hub| {
            ids.iter()
                .map(|&id| hub.store().reading_count(id))
                .sum::<Result<u64, _>>()
        })
        .ok_or("the hub stopped")?
        .map_err(|e| e.to_string())?;
    let sent = a.devices * u64::from(a.frames) * u64::from(a.readings);
    if stored != sent {
        return Err(format!("{name}: {stored} readings stored of {sent} sent"));
    }
    drop(handle);
    let mut hub = thread.join().map_err(|_| "the hub's thread panicked")?;
    let (c, f) = (hub.counters(), hub.figures());
    let week_query_ms = week_query(&mut hub, a.readings)?;
    let total_readings = hub.counters().readings;
    drop(hub);
    let bytes = backend.bytes()?;
    backend.drop_data();
    latencies.sort_unstable();
    Ok(Row {
        name: name.to_string(),
        readings_per_s: sent as f64 / elapsed.as_secs_f64(),
        frames_per_s: c.frames as f64 / elapsed.as_secs_f64(),
        mean_group: c.frames as f64 / f.commits.max(1) as f64,
        p50_ms: percentile_ms(&latencies, 0.5),
        p99_ms: percentile_ms(&latencies, 0.99),
        bytes_per_reading: bytes.saturating_sub(empty) as f64 / total_readings.max(1) as f64,
        week_query_ms,
    })
}

fn report(a: &Args) -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("telemark-cloud-report-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let sqlite = Backend::Sqlite(dir.join("bench.sqlite"));
    let pg = |db: &str| Backend::Postgres {
        server: a.postgres.clone(),
        db: db.into(),
    };
    let runs = [
        ("sqlite blocks", sqlite.clone(), false),
        ("sqlite rows", sqlite, true),
        ("postgres blocks", pg("telemark_report_blocks"), false),
        ("postgres rows", pg("telemark_report_rows"), true),
    ];
    println!(
        "{} devices x {} frames x {} readings (1 Hz, one channel) through the embedded broker; a week's query of 604,800 readings",
        a.devices, a.frames, a.readings
    );
    println!();
    println!("| store | readings/s | frames/s | mean group | ack p50 ms | ack p99 ms | bytes/reading on disk | week query ms |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let mut rows: Vec<Row> = Vec::new();
    for (name, backend, with_rows) in runs {
        if a.only.as_deref().is_some_and(|o| !name.starts_with(o)) {
            continue;
        }
        let r = run(name, &backend, with_rows, a)?;
        println!(
            "| {} | {:.0} | {:.0} | {:.1} | {:.1} | {:.1} | {:.2} | {:.0} |",
            r.name,
            r.readings_per_s,
            r.frames_per_s,
            r.mean_group,
            r.p50_ms,
            r.p99_ms,
            r.bytes_per_reading,
            r.week_query_ms
        );
        rows.push(r);
    }
    println!();
    for kind in ["sqlite", "postgres"] {
        let get = |form: &str| rows.iter().find(|r| r.name == format!("{kind} {form}"));
        if let (Some(b), Some(r)) = (get("blocks"), get("rows")) {
            println!(
                "{kind}: blocks at rest {:.2}x the readings/s of a row per reading, {:.1}x smaller on disk, week query {:.2}x as fast",
                b.readings_per_s / r.readings_per_s,
                r.bytes_per_reading / b.bytes_per_reading,
                r.week_query_ms / b.week_query_ms.max(0.001)
            );
        }
    }
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

fn main() -> ExitCode {
    match parse_args().and_then(|a| report(&a)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cloud-report: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Frame `index` of device `p`: a block of `n` readings.
fn frame(p: &Provisioned, index: u32, n: u32) -> Result<Vec<u8>, String> {
    frames::frame(
        p.device.id,
        &Sealing::key(p.key_id, p.key.clone()),
        index,
        n,
    )
}
