//! Cluster mode on the real engines: three `nats-server` processes
//! clustered with JetStream on loopback ports, PostgreSQL (the machine's,
//! with a database of the test's own; the restart test starts one of its
//! own), two `telemark-cloud` instances over them, and six devices running
//! the real engine over MQTT, each with both instances' brokers as its
//! endpoints. Devices report the whole time, device time running 60 times
//! faster than real time. One fault a test, in the middle of the run; then
//! every reading must be stored exactly once, and every device must have
//! been heard after the fault. The recovery time is measured: from each
//! device's first frame after the fault to the first answer after that,
//! the longest over the fleet.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration as RealDuration, Instant as RealInstant};

use postgres::NoTls;
use serde_json::{json, Value};
use telemark_core::store::{FullPolicy, RamStore, RecordStore};
use telemark_core::time::{Duration, Instant};
use telemark_core::transport::step_async;
use telemark_core::transport::AsyncTransport;
use telemark_core::wire::report::ResetReason;
use telemark_core::wire::seal::{Key, Sealing};
use telemark_core::wire::Epoch;
use telemark_mqtt::host::{HostConfig, HostLink};
use telemark_mqtt::LinkState;
use telemark_qemu_app::device;
use telemark_transport_testkit::cloud::Cloud;
use telemark_transport_testkit::{free_port, Boiler, Engine, MTU};

const TOKEN: &str = "cluster-admin-token";

/// How long the fleet goes on reporting after a fault.
const AFTER_FAULT: RealDuration = RealDuration::from_secs(20);

/// Three NATS servers in one JetStream cluster, each with its store in a
/// folder of the test's own; killed and removed when dropped.
struct NatsCluster {
    dir: PathBuf,
    nodes: Vec<NatsNode>,
}

struct NatsNode {
    name: String,
    port: u16,
    config: PathBuf,
    process: Option<Child>,
}

impl NatsCluster {
    fn start(test: &str) -> NatsCluster {
        let dir = std::env::temp_dir().join(format!("telemark-nats-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
        let routes: Vec<String> = ports
            .iter()
            .map(|(_, r)| format!("nats-route://127.0.0.1:{r}"))
            .collect();
        let mut nodes = Vec::new();
        for (i, (port, route)) in ports.iter().enumerate() {
            let name = format!("n{i}");
            let config = dir.join(format!("{name}.conf"));
            // Every interface: an instance in a network namespace of the
            // test's own reaches it over the namespace's link.
            let text = format!(
                "server_name: {name}\nlisten: 0.0.0.0:{port}\n\
                 jetstream {{ store_dir: \"{}\" }}\n\
                 cluster {{ name: telemark, listen: 127.0.0.1:{route}, routes: [{}] }}\n",
                dir.join(&name).display(),
                routes.join(", ")
            );
            std::fs::write(&config, text).unwrap();
            nodes.push(NatsNode {
                name,
                port: *port,
                config,
                process: None,
            });
        }
        let mut cluster = NatsCluster { dir, nodes };
        for i in 0..3 {
            cluster.restart(i);
        }
        cluster
    }

    /// `nats://…` of every node, comma-separated.
    fn urls(&self) -> String {
        self.urls_at("127.0.0.1")
    }

    /// `nats://…` of every node at `host`, comma-separated.
    fn urls_at(&self, host: &str) -> String {
        self.nodes
            .iter()
            .map(|n| format!("nats://{host}:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Node `i` dies at once (SIGKILL).
    fn kill(&mut self, i: usize) {
        if let Some(mut p) = self.nodes[i].process.take() {
            let _ = p.kill();
            let _ = p.wait();
        }
    }

    /// Node `i` starts again, on its store as it was.
    fn restart(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let log = std::fs::File::create(self.dir.join(format!("{}.log", node.name))).unwrap();
        node.process = Some(
            Command::new("nats-server")
                .arg("-c")
                .arg(&node.config)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("nats-server (scripts/check.sh installs it)"),
        );
    }

    /// Waits until JetStream answers for the stream (with its meta
    /// leader elected): that it has no such stream yet is an answer.
    async fn ready(&self) {
        use async_nats::jetstream::context::GetStreamErrorKind;
        let deadline = RealInstant::now() + RealDuration::from_secs(60);
        loop {
            let asked = async {
                let client = async_nats::connect(self.urls().split(',').collect::<Vec<_>>())
                    .await
                    .ok()?;
                match async_nats::jetstream::new(client)
                    .get_stream(telemark_cloud::cluster::STREAM)
                    .await
                {
                    Ok(_) => Some(()),
                    Err(e) => matches!(e.kind(), GetStreamErrorKind::JetStream(_)).then_some(()),
                }
            };
            if tokio::time::timeout(RealDuration::from_secs(5), asked)
                .await
                .ok()
                .flatten()
                .is_some()
            {
                return;
            }
            assert!(RealInstant::now() < deadline, "JetStream never came up");
            tokio::time::sleep(RealDuration::from_millis(200)).await;
        }
    }

    /// The node that leads the frames' stream.
    async fn stream_leader(&self) -> usize {
        let client = async_nats::connect(self.urls().split(',').collect::<Vec<_>>())
            .await
            .unwrap();
        let mut stream = async_nats::jetstream::new(client)
            .get_stream(telemark_cloud::cluster::STREAM)
            .await
            .unwrap();
        let info = stream.info().await.unwrap();
        let leader = info
            .cluster
            .as_ref()
            .and_then(|c| c.leader.clone())
            .expect("a stream leader");
        self.nodes.iter().position(|n| n.name == leader).unwrap()
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A database of the test's own on the machine's PostgreSQL, dropped
/// when the test ends.
struct Database {
    server: String,
    name: String,
}

/// The synchronous client runs off the runtime's task.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

impl Database {
    fn fresh(test: &str) -> Database {
        let server = std::env::var("TELEMARK_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
        blocking(|| Database::make(server, test))
    }

    /// A database of the test's own on the PostgreSQL at `server`.
    fn make(server: String, test: &str) -> Database {
        let name = format!("telemark_cluster_{test}_{}", std::process::id());
        let mut admin = postgres::Client::connect(&format!("{server}/postgres"), NoTls)
            .expect("PostgreSQL on 127.0.0.1:5432 (scripts/check.sh starts it)");
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .unwrap();
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap();
        Database { server, name }
    }

    fn url(&self) -> String {
        format!("{}/{}", self.server, self.name)
    }

    /// Its URL at `host`, the server's port kept.
    fn url_at(&self, host: &str) -> String {
        self.url().replace("127.0.0.1", host)
    }

    /// One number a query gives.
    fn count(&self, sql: &str) -> i64 {
        blocking(|| {
            let mut c = postgres::Client::connect(&self.url(), NoTls).unwrap();
            c.query_one(sql, &[]).unwrap().get(0)
        })
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        blocking(|| {
            let admin = postgres::Client::connect(&format!("{}/postgres", self.server), NoTls);
            if let Ok(mut admin) = admin {
                let _ = admin.batch_execute(&format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    self.name
                ));
            }
        });
    }
}

/// A PostgreSQL of the test's own, on a free port, in a folder it
/// removes when dropped: one the test may restart.
struct Postgres {
    dir: PathBuf,
    port: u16,
    listen: String,
}

impl Postgres {
    fn bin(tool: &str) -> PathBuf {
        let versions = std::fs::read_dir("/usr/lib/postgresql").expect("PostgreSQL's binaries");
        let mut found: Vec<PathBuf> = versions
            .filter_map(|v| Some(v.ok()?.path().join("bin").join(tool)))
            .filter(|p| p.exists())
            .collect();
        found.sort();
        found.pop().expect("initdb and pg_ctl")
    }

    /// Runs a PostgreSQL tool as the `postgres` user where the test runs
    /// as root (PostgreSQL refuses root), else as the test's user.
    fn run(tool: &str, args: &[&str]) {
        let root = Command::new("id").arg("-u").output().unwrap().stdout == b"0\n";
        let mut command = if root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(Postgres::bin(tool));
            c
        } else {
            Command::new(Postgres::bin(tool))
        };
        let out = command.args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{tool} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn start(test: &str) -> Postgres {
        Postgres::start_on(test, None)
    }

    /// [`Postgres::start`], listening on `also` too, and trusting the
    /// /16 around it.
    fn start_on(test: &str, also: Option<&str>) -> Postgres {
        let dir = std::env::temp_dir().join(format!("telemark-pg-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // Its owner must be the user it runs as.
        let _ = Command::new("chown").arg("postgres").arg(&dir).status();
        let data = dir.join("data");
        let data = data.to_str().unwrap();
        Postgres::run("initdb", &["-D", data, "-A", "trust", "-U", "postgres"]);
        let mut listen = "127.0.0.1".to_string();
        if let Some(addr) = also {
            listen = format!("{listen},{addr}");
            let net: Vec<&str> = addr.split('.').take(2).collect();
            let hba = format!("host all all {}.0.0/16 trust\n", net.join("."));
            let path = Path::new(data).join("pg_hba.conf");
            let mut text = std::fs::read_to_string(&path).unwrap();
            text.push_str(&hba);
            std::fs::write(&path, text).unwrap();
        }
        let pg = Postgres {
            port: free_port(),
            dir,
            listen,
        };
        pg.ctl("start");
        pg
    }

    fn ctl(&self, what: &str) {
        let data = self.dir.join("data");
        let options = format!(
            "-p {} -k {} -c listen_addresses={}",
            self.port,
            self.dir.display(),
            self.listen
        );
        let log = self.dir.join("log");
        Postgres::run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-o",
                &options,
                "-l",
                log.to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                what,
            ],
        );
    }

    fn server(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}", self.port)
    }

    /// Stops at once, as if it crashed (every connection cut, nothing
    /// flushed but the log), and starts again.
    fn restart(&self) {
        blocking(|| self.ctl("restart"));
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = std::panic::catch_unwind(|| self.ctl("stop"));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A network namespace of the test's own, joined to the host by a veth
/// pair of private addresses; removed when dropped. Cutting its link is a
/// partition: what is inside can reach nothing, and nothing reaches it,
/// with no connection reset, as when a cable or a switch dies.
struct Namespace {
    name: String,
    link: String,
    /// The host's end of the link.
    host: String,
    /// The namespace's end.
    inside: String,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("ip (iproute2)");
    assert!(
        out.status.success(),
        "ip {args:?}: {} (the partition test makes network namespaces: it runs as root)",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Namespace {
    fn make() -> Namespace {
        let id = std::process::id();
        let (name, link, peer) = (format!("tmk{id}"), format!("tmkh{id}"), format!("tmkn{id}"));
        let net = format!("10.{}.{}", 200 + id % 50, (id / 50) % 250);
        let (host, inside) = (format!("{net}.1"), format!("{net}.2"));
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        ip(&["netns", "add", &name]);
        let ns = Namespace {
            name,
            link,
            host,
            inside,
        };
        ip(&[
            "link", "add", &ns.link, "type", "veth", "peer", "name", &peer,
        ]);
        ip(&["link", "set", &peer, "netns", &ns.name]);
        ip(&["addr", "add", &format!("{}/30", ns.host), "dev", &ns.link]);
        ip(&["link", "set", &ns.link, "up"]);
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &ns.name, "ip"];
            all.extend_from_slice(args);
            ip(&all);
        };
        inside(&["addr", "add", &format!("{}/30", ns.inside), "dev", &peer]);
        inside(&["link", "set", &peer, "up"]);
        inside(&["link", "set", "lo", "up"]);
        ns
    }

    /// The link goes dead.
    fn cut(&self) {
        ip(&["link", "set", &self.link, "down"]);
    }

    /// It comes back.
    fn mend(&self) {
        ip(&["link", "set", &self.link, "up"]);
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        // The veth pair goes with the namespace.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        let _ = Command::new("ip")
            .args(["link", "del", &self.link])
            .output();
    }
}

/// An instance of the service in cluster mode.
struct Instance {
    cloud: Cloud,
    api: String,
    mqtt: (String, u16),
}

impl Instance {
    /// An instance in network namespace `ns`, which reaches NATS and
    /// PostgreSQL at the host's end of its link.
    fn start_in(name: &str, ns: &Namespace, nats: &NatsCluster, db: &Database) -> Instance {
        let binary = Path::new(env!("CARGO_BIN_EXE_telemark-cloud"));
        let urls = nats.urls_at(&ns.host);
        let url = db.url_at(&ns.host);
        let flags = [
            "--nats",
            &urls,
            "--database",
            &url,
            "--http",
            "0.0.0.0:0",
            "--mqtt",
            "0.0.0.0:0",
        ];
        let wrapper = ["ip", "netns", "exec", &ns.name];
        let cloud = Cloud::start_in(&wrapper, binary, name, TOKEN, &flags);
        let port = |listener: &str| {
            let bound: std::net::SocketAddr = cloud.address(listener).parse().unwrap();
            bound.port()
        };
        Instance {
            api: format!("http://{}:{}", ns.inside, port("http")),
            mqtt: (ns.inside.clone(), port("mqtt")),
            cloud,
        }
    }

    fn start(name: &str, nats: &NatsCluster, db: &Database) -> Instance {
        let binary = Path::new(env!("CARGO_BIN_EXE_telemark-cloud"));
        let (urls, url) = (nats.urls(), db.url());
        let cloud = Cloud::start_with(binary, name, TOKEN, &["--nats", &urls, "--database", &url]);
        let mqtt: std::net::SocketAddr = cloud.address("mqtt").parse().unwrap();
        Instance {
            api: format!("http://{}", cloud.address("http")),
            mqtt: (mqtt.ip().to_string(), mqtt.port()),
            cloud,
        }
    }
}

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(RealDuration::from_secs(10))
        .build()
        .unwrap()
}

async fn api(method: reqwest::Method, url: &str, body: Option<Value>) -> Value {
    let mut request = client().request(method, url).bearer_auth(TOKEN);
    if let Some(b) = body {
        request = request.json(&b);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let v: Value = response.json().await.unwrap();
    assert!(status.is_success(), "{url}: {status} {v}");
    v
}

/// A counter of `instance`'s `/metrics`.
async fn metric(instance: &Instance, name: &str) -> u64 {
    let text = client()
        .get(format!("{}/metrics", instance.api))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

/// When a device sent frames and heard answers.
#[derive(Default)]
struct Timeline {
    sent: Vec<RealInstant>,
    heard: Vec<RealInstant>,
}

/// A link that notes when each frame left the device and each answer
/// reached it.
struct Heard {
    link: HostLink,
    at: Arc<Mutex<Timeline>>,
}

impl AsyncTransport for Heard {
    type Error = <HostLink as AsyncTransport>::Error;

    fn mtu(&self) -> usize {
        self.link.mtu()
    }

    async fn power(&mut self, on: bool) -> Result<(), Self::Error> {
        self.link.power(on).await
    }

    async fn send(&mut self, frame: &[u8]) -> Result<(), Self::Error> {
        self.at.lock().unwrap().sent.push(RealInstant::now());
        self.link.send(frame).await
    }

    async fn receive(&mut self, buf: &mut [u8]) -> Result<Option<usize>, Self::Error> {
        let got = self.link.receive(buf).await?;
        if got.is_some() {
            self.at.lock().unwrap().heard.push(RealInstant::now());
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

/// Device time runs this many times faster than real time: a reading a
/// device minute is one a real second.
const SPEED: u64 = 60;

/// A device of the fleet, reporting until told to stop.
struct Reporter {
    id: u64,
    heard: Arc<Mutex<Timeline>>,
    run: tokio::task::JoinHandle<u64>,
}

/// Runs `engine` over `link`, device time paced by real time ([`SPEED`]),
/// until `stop` turns true; then flushes and runs until its store is
/// empty. Returns the readings it took.
async fn report(
    mut engine: Engine,
    mut link: Heard,
    mut boiler: Boiler,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> u64 {
    let start = RealInstant::now();
    let device_now = || Instant::from_millis(start.elapsed().as_millis() as u64 * SPEED);
    let mut draining = false;
    loop {
        let now = device_now();
        let wake = step_async(&mut engine, &mut link, now, &mut boiler).await;
        if draining {
            if engine.store().is_empty() && engine.staged() == 0 {
                break;
            }
            engine.flush_now(now);
        }
        let ahead = wake.as_millis().saturating_sub(now.as_millis()) / SPEED;
        let wait = RealDuration::from_millis(ahead.clamp(1, 100));
        // A downlink wakes the device while its radio is on and its link
        // up; a link that is down returns at once, and is not waited on.
        let listening = engine.uplink().radio_on() && link.link.state() == LinkState::Up;
        tokio::select! {
            () = link.link.wait_input(), if listening => {}
            () = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|&s| s), if !draining => draining = true,
        }
    }
    let _ = link.power(false).await;
    u64::from(engine.counters().sampled)
}

/// Provisions `n` devices through `first` and runs them until `stop`,
/// half with `first`'s broker as their first endpoint, half with
/// `second`'s.
async fn fleet(
    n: usize,
    first: &Instance,
    second: &Instance,
    stop: &tokio::sync::watch::Receiver<bool>,
) -> Vec<Reporter> {
    let mut fleet = Vec::new();
    for i in 0..n {
        let v = api(
            reqwest::Method::POST,
            &format!("{}/v1/devices", first.api),
            Some(json!({ "name": format!("meter-{i}") })),
        )
        .await;
        let id = v["device"]["id"].as_u64().unwrap();
        let key = Key::from_hex(v["key"].as_str().unwrap()).unwrap();
        let boot = telemark_core::engine::Boot {
            reset_reason: ResetReason::PowerOn,
            epoch: Epoch(0xC1_0000 + i as u64),
            sealing: Sealing::key(v["key_id"].as_u64().unwrap() as u8, key),
        };
        let engine: Engine = device(id, RamStore::new(FullPolicy::EvictOldest), boot).unwrap();
        let endpoints = if i % 2 == 0 {
            vec![first.mqtt.clone(), second.mqtt.clone()]
        } else {
            vec![second.mqtt.clone(), first.mqtt.clone()]
        };
        let mut config = HostConfig::new(id, endpoints);
        config.mtu = MTU;
        config.connect_timeout = RealDuration::from_secs(2);
        // A broker gone silent (a partition) is noticed within seconds.
        config.keepalive = RealDuration::from_secs(5);
        let heard = Arc::new(Mutex::new(Timeline::default()));
        let link = Heard {
            link: HostLink::new(config).unwrap(),
            at: Arc::clone(&heard),
        };
        let run = tokio::spawn(report(engine, link, Boiler::new(i as u64), stop.clone()));
        fleet.push(Reporter { id, heard, run });
    }
    fleet
}

/// Waits until the database holds readings of every device: the run is
/// under way.
async fn under_way(db: &Database, devices: usize) {
    let deadline = RealInstant::now() + RealDuration::from_secs(120);
    while db.count("SELECT COUNT(DISTINCT device) FROM records") < devices as i64 {
        assert!(RealInstant::now() < deadline, "the fleet never reported");
        tokio::time::sleep(RealDuration::from_millis(100)).await;
    }
}

/// Asserts that no device of `fleet` has finished: a fault now is in the
/// middle of the run.
fn mid_run(fleet: &[Reporter]) {
    for r in fleet {
        assert!(
            !r.run.is_finished(),
            "device {} finished before the fault",
            r.id
        );
    }
}

/// Waits for the fleet to finish, then checks that every reading it took
/// is stored exactly once, as `survivor`'s API says, and that each
/// device heard an answer after `fault`. Returns the recovery time: the
/// longest wait, over the fleet, from a device's first frame after the
/// fault to the first answer after that. And the longest time that answer
/// took from the device's last send before it: the rest of the wait is
/// the device's, dialling again and backing off.
async fn every_reading_once(
    fleet: Vec<Reporter>,
    survivor: &Instance,
    db: &Database,
    fault: RealInstant,
) -> (RealDuration, RealDuration) {
    let (mut longest, mut round_trip) = (RealDuration::ZERO, RealDuration::ZERO);
    for r in fleet {
        let sampled = tokio::time::timeout(RealDuration::from_secs(120), r.run)
            .await
            .expect("the device finished")
            .unwrap();
        assert!(sampled >= 20, "device {}: {sampled} readings", r.id);
        let d = api(
            reqwest::Method::GET,
            &format!("{}/v1/devices/{}", survivor.api, r.id),
            None,
        )
        .await;
        assert_eq!(
            d["readings"].as_u64(),
            Some(sampled),
            "device {}: every reading stored once: {d}",
            r.id
        );
        let timeline = r.heard.lock().unwrap();
        // The device's first try after the fault, and the first answer
        // after that: how long the fault kept it from being heard.
        let tried = timeline
            .sent
            .iter()
            .copied()
            .find(|&t| t > fault)
            .unwrap_or_else(|| panic!("device {} sent nothing after the fault", r.id));
        let after = timeline
            .heard
            .iter()
            .copied()
            .find(|&t| t > tried)
            .unwrap_or_else(|| panic!("device {} heard nothing after the fault", r.id));
        longest = longest.max(after - tried);
        let asked = timeline
            .sent
            .iter()
            .copied()
            .rfind(|&t| t <= after)
            .unwrap_or(fault);
        round_trip = round_trip.max(after - asked);
    }
    assert_eq!(
        db.count("SELECT COUNT(*) FROM conflicts"),
        0,
        "no conflicting copy"
    );
    (longest, round_trip)
}

/// Six devices reporting to `a` and `b` until the sender says stop, their
/// readings already in `db`.
async fn running(
    a: &Instance,
    b: &Instance,
    db: &Database,
) -> (tokio::sync::watch::Sender<bool>, Vec<Reporter>) {
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let fleet = fleet(6, a, b, &stopping).await;
    under_way(db, 6).await;
    (stop, fleet)
}

/// Asserts that `instance`'s front-end published frames to the stream
/// and its worker committed some.
async fn took_part(instance: &Instance) {
    let published = metric(instance, "telemark_cluster_published_total").await;
    let batches = metric(instance, "telemark_cluster_batches_total").await;
    assert!(published > 0);
    assert!(
        (1..=published).contains(&batches),
        "{batches} messages for {published} frames"
    );
    // Every device it published for is followed: none has been silent
    // for the idle time.
    assert!(metric(instance, "telemark_cluster_devices_followed").await > 0);
    assert!(metric(instance, "telemark_frames_total").await > 0);
}

/// Prints what was stored and how soon the devices were heard after the
/// fault `what`.
fn recovered(what: &str, db: &Database, recovery: RealDuration, round_trip: RealDuration) {
    let readings =
        db.count("SELECT COALESCE(SUM(declared), 0) FROM records WHERE lane = 'routine'");
    eprintln!(
        "{what}: {readings} readings stored once; the devices resumed within {} ms of their \
         first frame after it, the answer {} ms after the frame it answers",
        recovery.as_millis(),
        round_trip.as_millis()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_killed_mid_run_loses_nothing_and_its_devices_move() {
    let nats = NatsCluster::start("instance");
    nats.ready().await;
    let db = Database::fresh("instance");
    let a = Instance::start("cluster-instance-a", &nats, &db);
    let b = Instance::start("cluster-instance-b", &nats, &db);
    let (stop, fleet) = running(&a, &b, &db).await;

    mid_run(&fleet);
    let fault = RealInstant::now();
    drop(a.cloud); // SIGKILL
    tokio::time::sleep(AFTER_FAULT).await;
    stop.send(true).unwrap();
    let (recovery, round_trip) = every_reading_once(fleet, &b, &db, fault).await;
    // The survivor's front-end took its devices' frames through the
    // stream, and its worker stored them.
    took_part(&b).await;
    recovered("instance killed", &db, recovery, round_trip);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_leader_killed_mid_run_loses_nothing() {
    let mut nats = NatsCluster::start("leader");
    nats.ready().await;
    let db = Database::fresh("leader");
    let a = Instance::start("cluster-leader-a", &nats, &db);
    let b = Instance::start("cluster-leader-b", &nats, &db);
    let (stop, fleet) = running(&a, &b, &db).await;

    let leader = nats.stream_leader().await;
    mid_run(&fleet);
    let fault = RealInstant::now();
    nats.kill(leader);
    tokio::time::sleep(AFTER_FAULT).await;
    stop.send(true).unwrap();
    let (recovery, round_trip) = every_reading_once(fleet, &b, &db, fault).await;
    // Both instances published frames and both workers stored some.
    took_part(&a).await;
    took_part(&b).await;
    // The node comes back and catches up; the stream is whole again.
    nats.restart(leader);
    nats.ready().await;
    let what = format!("stream leader n{leader} killed");
    recovered(&what, &db, recovery, round_trip);
    drop(a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgresql_restart_mid_run_loses_nothing() {
    let nats = NatsCluster::start("restart");
    nats.ready().await;
    let pg = blocking(|| Postgres::start("restart"));
    let db = blocking(|| Database::make(pg.server(), "restart"));
    let a = Instance::start("cluster-restart-a", &nats, &db);
    let b = Instance::start("cluster-restart-b", &nats, &db);
    let (stop, fleet) = running(&a, &b, &db).await;

    mid_run(&fleet);
    let fault = RealInstant::now();
    pg.restart();
    tokio::time::sleep(AFTER_FAULT).await;
    stop.send(true).unwrap();
    let (recovery, round_trip) = every_reading_once(fleet, &b, &db, fault).await;
    let mut failed = 0;
    for i in [&a, &b] {
        took_part(i).await;
        failed += metric(i, "telemark_store_failures_total").await;
    }
    let what = format!("PostgreSQL restarted ({failed} frames not committed, handed out again)");
    recovered(&what, &db, recovery, round_trip);
    drop(a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_cut_off_by_a_partition_loses_nothing() {
    let nats = NatsCluster::start("partition");
    nats.ready().await;
    let ns = Namespace::make();
    let pg = blocking(|| Postgres::start_on("partition", Some(&ns.host)));
    let db = blocking(|| Database::make(pg.server(), "partition"));
    let a = Instance::start_in("cluster-partition-a", &ns, &nats, &db);
    let b = Instance::start("cluster-partition-b", &nats, &db);
    let (stop, fleet) = running(&a, &b, &db).await;

    mid_run(&fleet);
    let fault = RealInstant::now();
    ns.cut();
    tokio::time::sleep(AFTER_FAULT).await;
    ns.mend();
    // The partitioned instance comes back and takes frames again.
    tokio::time::sleep(RealDuration::from_secs(5)).await;
    stop.send(true).unwrap();
    let (recovery, round_trip) = every_reading_once(fleet, &b, &db, fault).await;
    took_part(&a).await;
    took_part(&b).await;
    let what = format!("instance partitioned for {} s", AFTER_FAULT.as_secs());
    recovered(&what, &db, recovery, round_trip);
}
