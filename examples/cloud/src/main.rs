//! `telemark-cloud`: the service. See the crate docs and `docs/cloud.md`.
//!
//! ```text
//! telemark-cloud [serve] [--config FILE] [--data DIR] [--database postgres://…]
//!                [--http ADDR] [--mqtt ADDR] [--coap ADDR] [--broker mqtt://HOST:PORT]
//!                [--line ADDR] [--line-connect ADDR] [--serial PATH]
//!                [--keys FILE] [--key DEVICE:ID:HEX] [--admin-token TOKEN]
//!                [--silent-intervals N] [--report-interval SECONDS] [--command-ttl SECONDS]
//!                [--webhook URL --webhook-secret SECRET] [--mqtt-notifications]
//!                [--device-rate FRAMES_PER_S] [--device-burst FRAMES]
//!                [--tls-cert FILE --tls-key FILE]
//!                [--mqtt-tls-cert FILE --mqtt-tls-key FILE [--mqtt-client-ca FILE]]
//!                [--reading-rows] [--verbose] [--log-format text|json]
//! telemark-cloud device add --name NAME [--data DIR | --database URL]
//! telemark-cloud device list [--data DIR | --database URL]
//! telemark-cloud device revoke ID [--data DIR | --database URL]
//! telemark-cloud device rotate ID [--data DIR | --database URL]
//! ```
//!
//! `serve` prints the addresses it bound as one JSON line on standard
//! output (`{"http": "127.0.0.1:8080", "mqtt": …, "line": […]}`), so
//! scripts can ask for port 0. SIGTERM or Ctrl-C stops it: it takes no
//! new frame, lets the one being committed finish, and exits.

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use telemark_cloud::cluster::{self, Cluster, FrontEnd};
use telemark_cloud::notify;
use telemark_cloud::settings::{device_id, keys_file, LogFormat, Settings};
use telemark_cloud::{
    api::Api, coap, line, mqtt, unix_ms, Broker, CloudStore, Hub, HubHandle, PgStore, SqliteStore,
    Stored,
};
use telemark_core::model::Value;
use telemark_core::store::Seq;
use telemark_core::wire::report::Report;

/// One line for a stored record.
fn describe(device: u64, seq: Seq, stored: &Stored) -> String {
    match stored {
        Stored::Readings(timed) => {
            let readings: Vec<_> = timed.iter().map(|t| t.reading).collect();
            let mut line = format!("device {device} {seq}: {} readings", readings.len());
            if let (Some(first), Some(last)) = (readings.first(), readings.last()) {
                line += &format!(" from {} to {}:", first.time, last.time);
            }
            // The last value of each channel.
            let mut channels: Vec<_> = readings.iter().map(|r| r.channel).collect();
            channels.sort_unstable();
            channels.dedup();
            for c in channels {
                if let Some(r) = readings.iter().rev().find(|r| r.channel == c) {
                    let v = match r.value {
                        Value::Scaled(x) => x.to_string(),
                        Value::Float(f) => f.to_string(),
                        Value::Bool(b) => b.to_string(),
                        Value::Counter(n) => n.to_string(),
                    };
                    line += &format!(" {c}={v}");
                }
            }
            line
        }
        Stored::Report(Report::Alert(a)) => format!(
            "device {device} {seq}: ALERT {:?} {:?} on {} at {}",
            a.severity, a.kind, a.channel, a.time
        ),
        Stored::Report(r) => format!("device {device} {seq}: {r:?}"),
        Stored::Undecodable => format!("device {device} {seq}: undecodable payload, kept raw"),
    }
}

/// The store the settings name: PostgreSQL, or SQLite in the data
/// directory.
fn open_store(s: &Settings) -> Result<Box<dyn CloudStore>, String> {
    if let Some(url) = &s.database {
        let mut store = PgStore::connect(url).map_err(|e| format!("{url}: {e}"))?;
        store.keep_reading_rows(s.reading_rows);
        return Ok(Box::new(store));
    }
    std::fs::create_dir_all(&s.data).map_err(|e| format!("{}: {e}", s.data.display()))?;
    let path = s.data.join("telemark.sqlite");
    let mut store = SqliteStore::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    store.keep_reading_rows(s.reading_rows);
    Ok(Box::new(store))
}

/// The admin token: given, or the data directory's, made on first start.
fn admin_token(s: &Settings) -> Result<String, String> {
    if let Some(t) = &s.admin_token {
        return Ok(t.clone());
    }
    if let Ok(t) = std::env::var("TELEMARK_ADMIN_TOKEN") {
        if !t.is_empty() {
            return Ok(t);
        }
    }
    let path = s.data.join("admin-token");
    if let Ok(t) = std::fs::read_to_string(&path) {
        return Ok(t.trim().to_string());
    }
    std::fs::create_dir_all(&s.data).map_err(|e| format!("{}: {e}", s.data.display()))?;
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).map_err(|e| format!("no random source: {e}"))?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    write_secret(&path, &token).map_err(|e| format!("{}: {e}", path.display()))?;
    tracing::info!(path = %path.display(), "admin token written");
    Ok(token)
}

/// Writes a file only its owner reads.
fn write_secret(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(text.as_bytes())
}

/// Logs on standard error, as `format` says, filtered by `RUST_LOG`
/// (`info` when it is unset or unreadable).
fn log_to_stderr(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    // A subscriber already set (a second call) keeps its place.
    let _ = match format {
        LogFormat::Text => logs.try_init(),
        LogFormat::Json => logs.json().try_init(),
    };
}

fn serve(s: Settings) -> Result<(), String> {
    log_to_stderr(s.log_format);
    let store = open_store(&s)?;
    let mut hub = Hub::new(store).map_err(|e| e.to_string())?;
    hub.detect_silence(s.silence).map_err(|e| e.to_string())?;
    hub.set_command_ttl(s.command_ttl_ms);
    hub.limit_rate(s.device_rate());
    hub.keep_notifications(!s.webhooks.is_empty() || s.mqtt_notifications);
    let now = unix_ms() as i64;
    let mut keys = s.key.clone();
    for file in &s.keys {
        let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
        keys.extend(keys_file(&text, &file.display().to_string())?);
    }
    for (device, id, key) in keys {
        hub.import_key(device, id, key, now)
            .map_err(|e| format!("key {id} of device {device}: {e}"))?;
    }
    for &device in &s.unauthenticated {
        tracing::warn!(device, "unauthenticated frames accepted (a bench only)");
        hub.allow_unauthenticated(device);
    }
    // After the keys: a rule may name a device a keys file brings.
    for spec in &s.rules {
        hub.ensure_rule(spec)
            .map_err(|e| format!("rule {}: {e}", spec.name))?;
    }
    if s.verbose {
        hub.watch(|device, _, seq, stored| println!("{}", describe(device, seq, stored)));
    }
    // What is stored goes to the API's stream, as it is stored.
    let (events, streamer) = telemark_cloud::stream::channel();
    hub.watch(streamer);
    // What is stored goes on to Home Assistant; if its publisher falls
    // behind, the next block brings the state again.
    let home_assistant = s.home_assistant.clone().map(|ha| {
        let (seen, stored) = tokio::sync::mpsc::channel(4096);
        hub.watch(move |device, _, _, s| {
            let _ = seen.try_send((device, s.clone()));
        });
        (ha, stored)
    });
    let token = admin_token(&s)?;
    let nats = s.cluster();
    if nats.is_some() {
        hub.share_store();
    }
    let (hub, _hub_thread) = hub.spawn().map_err(|e| format!("the hub's thread: {e}"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("telemark-cloud")
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    // Cluster mode: frames go through the stream, from every listener.
    let cluster = match &nats {
        Some(nats) => {
            let name = format!("telemark-cloud-{}", std::process::id());
            let cluster = runtime
                .block_on(Cluster::connect(nats, &name))
                .map_err(|e| format!("--nats {}: {e}", nats.servers.join(",")))?;
            tracing::info!(servers = %nats.servers.join(","), replicas = nats.replicas(), "cluster mode");
            Some(cluster)
        }
        None => None,
    };
    let hub = match &cluster {
        Some(c) => {
            let _on = runtime.enter();
            hub.through(FrontEnd::new(c.clone()))
        }
        None => hub,
    };

    // Devices over TLS: the embedded broker then listens on loopback only,
    // behind the gate on --mqtt.
    let gate = match (&s.mqtt_tls_cert, &s.mqtt_tls_key) {
        (Some(cert), Some(key)) => Some(telemark_cloud::mqtt_gate::server_config(
            cert,
            key,
            s.mqtt_client_ca.as_deref(),
        )?),
        _ => None,
    };
    // The broker: the embedded one, or the one named.
    let (embedded, mut broker) = match &s.broker {
        Some((host, port)) => (None, Broker::new(host.clone(), *port)),
        None => {
            let listen = if gate.is_some() {
                std::net::SocketAddr::from(([127, 0, 0, 1], 0))
            } else {
                s.mqtt
            };
            let b =
                telemark_mqtt_broker::Broker::start(&telemark_mqtt_broker::Settings::new(listen))
                    .map_err(|e| format!("--mqtt {}: {e}", s.mqtt))?;
            let addr = b.addr();
            let host = if addr.ip().is_unspecified() {
                "127.0.0.1".to_string()
            } else {
                addr.ip().to_string()
            };
            (Some(b), Broker::new(host, addr.port()))
        }
    };
    broker.prefix = s.mqtt_prefix.clone();
    let mut mqtt_addr = embedded.as_ref().map(|b| b.addr().to_string());

    let tls = match (&s.tls_cert, &s.tls_key) {
        (Some(cert), Some(key)) => Some(telemark_cloud::tls::server_config(cert, key)?),
        _ => None,
    };
    // Serial lines, each on a thread of its own; with a certificate those
    // it listens for take TLS only.
    let running = Arc::new(AtomicBool::new(true));
    let mut lines = Vec::new();
    let line_tls = tls.as_deref().map(telemark_cloud::tls::line_config);
    for addr in &s.line {
        let listener = TcpListener::bind(addr).map_err(|e| format!("--line {addr}: {e}"))?;
        lines.push(
            listener
                .local_addr()
                .map_err(|e| e.to_string())?
                .to_string(),
        );
        let (hub, line_tls) = (hub.clone(), line_tls.clone());
        std::thread::spawn(move || listen(&hub, &listener, line_tls));
    }
    for addr in s.line_connect.clone() {
        let (hub, running) = (hub.clone(), Arc::clone(&running));
        std::thread::spawn(move || dial(&hub, &addr, &running));
    }
    for path in s.serial.clone() {
        let mut tty = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| format!("--serial {}: {e}", path.display()))?;
        let hub = hub.clone();
        std::thread::spawn(move || {
            if let Err(e) = line::serve(&hub, &mut tty, unix_ms) {
                tracing::error!(serial = %path.display(), error = %e, "serial line stopped");
            }
        });
    }

    // Streams end when the service stops, before the server waits on them.
    let (close, closing) = tokio::sync::watch::channel(false);
    let api = Api::new(hub.clone(), &token).with_stream(events, closing);
    let shutdown = move || async move {
        stopped().await;
        let _ = close.send(true);
    };
    let (stop, stopping) = tokio::sync::watch::channel(false);
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(s.http)
            .await
            .map_err(|e| format!("--http {}: {e}", s.http))?;
        let http = listener.local_addr().map_err(|e| e.to_string())?;
        let udp = tokio::net::UdpSocket::bind(s.coap)
            .await
            .map_err(|e| format!("--coap {}: {e}", s.coap))?;
        let coap_addr = udp.local_addr().map_err(|e| e.to_string())?;
        let coap = tokio::spawn(coap::serve(hub.clone(), udp, unix_ms, stopping.clone()));
        let worker = cluster.map(|c| tokio::spawn(cluster::work(hub.clone(), c, stopping.clone())));
        if let (Some(config), Some(b)) = (&gate, &embedded) {
            let listener = tokio::net::TcpListener::bind(s.mqtt)
                .await
                .map_err(|e| format!("--mqtt {}: {e}", s.mqtt))?;
            mqtt_addr = Some(
                listener
                    .local_addr()
                    .map_err(|e| e.to_string())?
                    .to_string(),
            );
            tokio::spawn(telemark_cloud::mqtt_gate::serve(
                listener,
                b.addr(),
                config.clone(),
                s.mqtt_prefix.clone(),
                stopping.clone(),
            ));
        }
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("the webhooks' HTTP client: {e}"))?;
        let mut sinks: Vec<notify::Sink> = s
            .webhooks
            .iter()
            .map(|hook| notify::Sink::Webhook(hook.clone(), client.clone()))
            .collect();
        if s.mqtt_notifications {
            sinks.push(notify::mqtt_sink(&broker, stopping.clone()));
        }
        let hooks: Vec<_> = sinks
            .into_iter()
            .map(|sink| {
                tokio::spawn(notify::deliver(
                    hub.clone(),
                    sink,
                    notify::Backoff::default(),
                    stopping.clone(),
                ))
            })
            .collect();
        let home_assistant = home_assistant.map(|(ha, stored)| {
            let mut on = broker.clone();
            if let Some((host, port)) = ha.broker {
                (on.host, on.port) = (host, port);
            }
            tokio::spawn(telemark_cloud::home_assistant::serve(
                hub.clone(),
                on,
                ha.prefix,
                stored,
                stopping.clone(),
            ))
        });
        let devices = {
            let (hub, broker) = (hub.clone(), broker.clone());
            tokio::spawn(async move {
                let (host, port) = (broker.host.clone(), broker.port);
                if let Err(e) = mqtt::serve(hub, broker, unix_ms, stopping).await {
                    tracing::error!(broker = %format!("{host}:{port}"), error = %e, "MQTT ingest stopped");
                }
            })
        };
        let bound = serde_json::json!({
            "http": http.to_string(),
            "tls": tls.is_some(),
            "mqtt": mqtt_addr,
            "coap": coap_addr.to_string(),
            "broker": format!("{}:{}", broker.host, broker.port),
            "line": lines,
            "nats": nats.as_ref().map(|n| n.servers.clone()),
        });
        println!("{bound}");
        tracing::info!(
            api = %http,
            tls = tls.is_some(),
            broker = %format!("{}:{}", broker.host, broker.port),
            coap = %coap_addr,
            "serving"
        );
        let served = match &tls {
            Some(config) => {
                let listener = telemark_cloud::tls::TlsListener::new(listener, config.clone())
                    .map_err(|e| format!("--http {}: {e}", s.http))?;
                axum::serve(listener, api.router())
                    .with_graceful_shutdown(shutdown())
                    .await
            }
            None => {
                axum::serve(listener, api.router())
                    .with_graceful_shutdown(shutdown())
                    .await
            }
        }
        .map_err(|e| format!("http: {e}"));
        let _ = stop.send(true);
        let _ = devices.await;
        let _ = coap.await;
        if let Some(worker) = worker {
            let _ = worker.await;
        }
        for hook in hooks {
            let _ = hook.await;
        }
        if let Some(publisher) = home_assistant {
            let _ = publisher.await;
        }
        served
    })?;

    // Stop taking frames: the hub answers what is queued before this, and
    // refuses what comes after.
    running.store(false, Ordering::Relaxed);
    let c = hub
        .call_blocking(|hub| {
            hub.close();
            hub.counters()
        })
        .ok_or("the hub stopped before the service")?;
    tracing::info!(
        frames = c.frames,
        refused = c.refused.total(),
        records = c.records,
        duplicates = c.duplicates,
        conflicts = c.conflicts,
        readings = c.readings,
        "stopped"
    );
    if let Some(b) = embedded {
        b.stop();
    }
    runtime.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}

/// SIGTERM or Ctrl-C.
async fn stopped() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// Serves every device that connects to `listener`, each on its own
/// thread; over TLS only when given a `tls` config.
fn listen(hub: &HubHandle, listener: &TcpListener, tls: Option<Arc<rustls::ServerConfig>>) {
    loop {
        let (mut stream, peer) = match listener.accept() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "line: accept failed");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        tracing::info!(%peer, "line: device connected");
        let (hub, tls) = (hub.clone(), tls.clone());
        std::thread::spawn(move || {
            let served = match tls {
                None => line::serve(&hub, &mut stream, unix_ms),
                Some(config) => telemark_cloud::tls::line_stream(config, stream)
                    .and_then(|mut tls| line::serve(&hub, &mut tls, unix_ms)),
            };
            if let Err(e) = served {
                tracing::warn!(%peer, error = %e, "line: ended");
            }
            tracing::info!(%peer, "line: closed");
        });
    }
}

/// Dials `addr` (QEMU's `-serial tcp::PORT,server`) and serves it, again
/// whenever it closes, while `running` holds.
fn dial(hub: &HubHandle, addr: &str, running: &AtomicBool) {
    let mut away = false;
    while running.load(Ordering::Relaxed) {
        match TcpStream::connect(addr) {
            Ok(mut stream) => {
                tracing::info!(%addr, "line: connected");
                away = false;
                if let Err(e) = line::serve(hub, &mut stream, unix_ms) {
                    tracing::warn!(%addr, error = %e, "line: ended");
                }
                tracing::info!(%addr, "line: closed; connecting again");
            }
            Err(e) if !away => {
                tracing::warn!(%addr, error = %e, "line: not reached; trying again");
                away = true;
            }
            Err(_) => {}
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// `device add|list|revoke|rotate`, on the store the flags name.
fn device(args: Vec<String>) -> Result<(), String> {
    let mut args = args.into_iter();
    let verb = args.next().ok_or("device add|list|revoke|rotate")?;
    let mut name = None;
    let mut id = None;
    let mut rest = Vec::new();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--name" => name = Some(args.next().ok_or("--name needs a value")?),
            _ if (verb == "revoke" || verb == "rotate") && id.is_none() && !a.starts_with("--") => {
                id = Some(device_id(&a)?)
            }
            _ => rest.push(a),
        }
    }
    let s = Settings::parse(rest)?;
    let mut hub = Hub::new(open_store(&s)?).map_err(|e| e.to_string())?;
    let now = unix_ms() as i64;
    match verb.as_str() {
        "add" => {
            let name = name.ok_or("device add --name NAME")?;
            let p = hub.add_device(&name, now).map_err(|e| e.to_string())?;
            println!(
                "{}",
                serde_json::json!({
                    "id": p.device.id,
                    "name": p.device.name,
                    "key_id": p.key_id,
                    "key": p.key_hex(),
                    "keys_line": p.keys_line(),
                })
            );
            Ok(())
        }
        "list" => {
            let devices = hub.store().devices().map_err(|e| e.to_string())?;
            for d in devices {
                let state = if d.revoked_ms.is_some() {
                    "revoked"
                } else {
                    "active"
                };
                println!("{}\t{}\t{state}", d.id, d.name);
            }
            Ok(())
        }
        "revoke" => {
            let id = id.ok_or("device revoke ID")?;
            hub.revoke(id, now).map_err(|e| e.to_string())?;
            eprintln!(
                "device {id} revoked: a running service refuses its frames within {} s",
                telemark_cloud::KEY_REFRESH_MS / 1000
            );
            Ok(())
        }
        "rotate" => {
            let id = id.ok_or("device rotate ID")?;
            let p = hub.rotate(id).map_err(|e| e.to_string())?;
            println!(
                "{}",
                serde_json::json!({
                    "id": id,
                    "key_id": p.key_id,
                    "key": p.key_hex(),
                    "keys_line": p.keys_line(),
                })
            );
            Ok(())
        }
        other => Err(format!("device {other}: add, list, revoke or rotate")),
    }
}

fn run() -> Result<(), String> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("device") => device(args.split_off(1)),
        Some("serve") => serve(Settings::parse(args.split_off(1))?),
        Some("--help" | "-h" | "help") => {
            println!("{}", USAGE);
            Ok(())
        }
        _ => serve(Settings::parse(args)?),
    }
}

const USAGE: &str =
    "telemark-cloud [serve] [--config FILE] [--data DIR] [--database postgres://...]
               [--http ADDR] [--mqtt ADDR] [--coap ADDR] [--broker mqtt://HOST:PORT]
               [--mqtt-prefix P]
               [--line ADDR] [--line-connect ADDR] [--serial PATH]
               [--keys FILE] [--key DEVICE:ID:HEX] [--admin-token TOKEN]
               [--silent-intervals N] [--report-interval SECONDS] [--command-ttl SECONDS]
               [--webhook URL --webhook-secret SECRET] [--mqtt-notifications]
               [--device-rate FRAMES_PER_S] [--device-burst FRAMES]
               [--tls-cert FILE --tls-key FILE]
               [--mqtt-tls-cert FILE --mqtt-tls-key FILE [--mqtt-client-ca FILE]]
               [--reading-rows] [--verbose] [--log-format text|json]
telemark-cloud device add --name NAME [--data DIR | --database URL]
telemark-cloud device list [--data DIR | --database URL]
telemark-cloud device revoke ID [--data DIR | --database URL]
telemark-cloud device rotate ID [--data DIR | --database URL]";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("telemark-cloud: {e}");
            ExitCode::from(2)
        }
    }
}
