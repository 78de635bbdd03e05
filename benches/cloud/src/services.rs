//! The processes a report starts (NATS servers, telemark-cloud instances,
//! mosquitto), the databases it makes on PostgreSQL, what they cost (RSS
//! and CPU time read from `/proc`), and the MQTT clients its devices are.

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::Duration;

use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};

/// Runs `report` on a multi-threaded runtime; its error on stderr after
/// `name`, and the exit code.
pub fn run_report(name: &str, report: impl Future<Output = Result<(), String>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{name}: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(report) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The `telemark-cloud` binary beside the running one.
pub fn service_binary() -> Result<PathBuf, String> {
    let binary = std::env::current_exe()
        .map_err(|e| e.to_string())?
        .with_file_name("telemark-cloud");
    if !binary.exists() {
        return Err(format!(
            "{} not found: cargo build --release -p telemark-cloud",
            binary.display()
        ));
    }
    Ok(binary)
}

/// A bench device's MQTT client, `client_id`, on the broker at loopback
/// `port`: a clean session, packets up to 64 KiB, no Nagle delay; once it
/// returns, subscribed to `down` at QoS 1. A connection that fails is
/// tried again twice, a second apart, as a device would.
pub async fn mqtt_device(
    client_id: String,
    port: u16,
    down: String,
) -> Result<(AsyncClient, EventLoop), String> {
    let mut tries = 0;
    loop {
        tries += 1;
        match mqtt_device_once(client_id.clone(), port, down.clone()).await {
            Err(e) if tries < 3 => {
                eprintln!("{e}; connecting again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            done => return done,
        }
    }
}

async fn mqtt_device_once(
    client_id: String,
    port: u16,
    down: String,
) -> Result<(AsyncClient, EventLoop), String> {
    let mut options = MqttOptions::new(client_id.clone(), "127.0.0.1", port);
    options
        .set_clean_start(true)
        .set_keep_alive(Duration::from_secs(60))
        .set_max_packet_size(Some(64 * 1024))
        // A device has one frame in flight; rumqttc's default room for
        // 65,535 is megabytes a client.
        .set_outgoing_inflight_upper_limit(16);
    let mut network = rumqttc::NetworkOptions::new();
    network.set_tcp_nodelay(true);
    options.set_network_options(network);
    let (client, mut events) = AsyncClient::new(options, 16);
    client
        .subscribe(down, QoS::AtLeastOnce)
        .await
        .map_err(|e| e.to_string())?;
    loop {
        match events.poll().await {
            Ok(Event::Incoming(Packet::SubAck(_))) => return Ok((client, events)),
            Ok(_) => {}
            Err(e) => return Err(format!("{client_id}: {e}")),
        }
    }
}

/// A free TCP port on loopback.
pub fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// Processes a report started; killed when it ends.
#[derive(Default)]
pub struct Processes(pub Vec<Child>);

impl Processes {
    /// The process ids of those still held.
    pub fn pids(&self) -> Vec<u32> {
        self.0.iter().map(Child::id).collect()
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for p in &mut self.0 {
            let _ = p.kill();
            let _ = p.wait();
        }
    }
}

/// Starts `nodes` NATS servers with JetStream, clustered when more than
/// one, in `dir`; their client URLs and their processes.
pub fn nats(dir: &Path, nodes: usize) -> Result<(Vec<String>, Processes), String> {
    let mut procs = Processes::default();
    let ports: Vec<(u16, u16)> = (0..nodes)
        .map(|_| Ok((free_port()?, free_port()?)))
        .collect::<Result<_, String>>()?;
    let routes: Vec<String> = ports
        .iter()
        .map(|(_, r)| format!("nats-route://127.0.0.1:{r}"))
        .collect();
    for (i, (port, route)) in ports.iter().enumerate() {
        let mut text = format!(
            "server_name: n{i}\nlisten: 127.0.0.1:{port}\nmax_connections: 100000\n\
             jetstream {{ store_dir: \"{}\" }}\n",
            dir.join(format!("n{i}")).display()
        );
        if nodes > 1 {
            text += &format!(
                "cluster {{ name: telemark, listen: 127.0.0.1:{route}, routes: [{}] }}\n",
                routes.join(", ")
            );
        }
        procs.0.push(configured(
            "nats-server",
            &dir.join(format!("n{i}.conf")),
            &text,
        )?);
    }
    let urls = ports
        .iter()
        .map(|(p, _)| format!("nats://127.0.0.1:{p}"))
        .collect();
    Ok((urls, procs))
}

/// Writes `text` to `config` and starts `program -c config`, its output
/// dropped.
fn configured(program: &str, config: &Path, text: &str) -> Result<Child, String> {
    std::fs::write(config, text).map_err(|e| format!("{}: {e}", config.display()))?;
    Command::new(program)
        .arg("-c")
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("{program}: {e}"))
}

/// Starts mosquitto on a free loopback port, anonymous clients allowed,
/// nothing persisted; its port and its process.
pub fn mosquitto(dir: &Path) -> Result<(u16, Processes), String> {
    let port = free_port()?;
    let text =
        format!("listener {port} 127.0.0.1\nallow_anonymous true\nmax_inflight_messages 1000\n");
    let procs = Processes(vec![configured(
        "mosquitto",
        &dir.join("mosquitto.conf"),
        &text,
    )?]);
    for _ in 0..50 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok((port, procs));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!("mosquitto never listened on {port}"))
}

/// A database named `name` of the report's own on the PostgreSQL server
/// at `server`, made empty; its URL.
pub fn database(server: &str, name: &str) -> Result<String, String> {
    let mut admin = postgres::Client::connect(&format!("{server}/postgres"), postgres::NoTls)
        .map_err(|e| format!("{server}: {e}"))?;
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .and_then(|()| admin.batch_execute(&format!("CREATE DATABASE {name}")))
        .map_err(|e| e.to_string())?;
    Ok(format!("{server}/{name}"))
}

/// Drops the database at `url` on `server`.
pub fn drop_database(server: &str, url: &str) {
    let Some(name) = url.rsplit('/').next() else {
        return;
    };
    if let Ok(mut admin) = postgres::Client::connect(&format!("{server}/postgres"), postgres::NoTls)
    {
        let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
    }
}

/// A running instance of the service: its process id and its broker's
/// port.
pub struct Instance {
    /// Its process id.
    pub pid: u32,
    /// Its embedded broker's port on loopback.
    pub mqtt: u16,
}

/// Starts `binary` (telemark-cloud) with its data in `dir` and `flags`,
/// its stderr in `dir/stderr.log`;
/// waits for its line of bound addresses, and tries again while its NATS
/// stream is being made (the service exits when it cannot reach it).
pub fn instance(
    binary: &Path,
    dir: &Path,
    flags: &[String],
    procs: &mut Processes,
) -> Result<Instance, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for _ in 0..30 {
        // What it says on stderr is kept beside its data.
        let log = std::fs::File::create(dir.join("stderr.log")).map_err(|e| e.to_string())?;
        let mut child = Command::new(binary)
            .args([
                "--http",
                "127.0.0.1:0",
                "--mqtt",
                "127.0.0.1:0",
                "--coap",
                "127.0.0.1:0",
            ])
            .args(["--admin-token", "cloud-bench"])
            .arg("--data")
            .arg(dir)
            .args(flags)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("{}: {e}", binary.display()))?;
        let mut first = String::new();
        if let Some(out) = child.stdout.take() {
            let _ = BufReader::new(out).read_line(&mut first);
        }
        let bound: Option<u16> = first
            .split("\"mqtt\":\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .and_then(|addr| addr.rsplit(':').next()?.parse().ok());
        match bound {
            Some(mqtt) => {
                let pid = child.id();
                procs.0.push(child);
                return Ok(Instance { pid, mqtt });
            }
            None => {
                let _ = child.kill();
                let _ = child.wait();
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
    Err("the service never started (see its --nats and --database)".into())
}

/// A share of the machine's CPU, as if its processes ran on a host of
/// that many cores: a control group of its own (`cpu.max` on cgroup v2,
/// `cpu.cfs_quota_us` on v1). Removed when dropped, once its processes
/// are gone.
pub struct CpuCap {
    dir: PathBuf,
}

/// The scheduler's period a cap's quota is a part of, µs.
const CAP_PERIOD_US: u64 = 100_000;

impl CpuCap {
    /// A group named `name` that may use `cores` of CPU time a second;
    /// an error when this machine gives no CPU controller to write.
    pub fn new(name: &str, cores: f64) -> Result<CpuCap, String> {
        if !(cores > 0.0 && cores.is_finite()) {
            return Err(format!("a CPU cap of {cores} cores"));
        }
        let quota = ((cores * CAP_PERIOD_US as f64) as u64).max(1_000);
        let root = Path::new("/sys/fs/cgroup");
        let v2 = std::fs::read_to_string(root.join("cgroup.controllers"))
            .is_ok_and(|c| c.split_whitespace().any(|c| c == "cpu"));
        let (dir, settings) = if v2 {
            // The root hands the controller down, or the group has none.
            let _ = std::fs::write(root.join("cgroup.subtree_control"), "+cpu");
            (
                root.join(name),
                vec![("cpu.max", format!("{quota} {CAP_PERIOD_US}"))],
            )
        } else {
            (
                root.join("cpu").join(name),
                vec![
                    ("cpu.cfs_period_us", CAP_PERIOD_US.to_string()),
                    ("cpu.cfs_quota_us", quota.to_string()),
                ],
            )
        };
        let _ = std::fs::remove_dir(&dir);
        std::fs::create_dir(&dir).map_err(|e| {
            format!(
                "{}: {e} (a CPU cap needs a writable cgroup CPU controller, as root)",
                dir.display()
            )
        })?;
        let cap = CpuCap { dir };
        for (file, value) in settings {
            std::fs::write(cap.dir.join(file), value)
                .map_err(|e| format!("{}: {e}", cap.dir.join(file).display()))?;
        }
        Ok(cap)
    }

    /// Moves process `pid`, all its threads, into the group.
    pub fn add(&self, pid: u32) -> Result<(), String> {
        let procs = self.dir.join("cgroup.procs");
        std::fs::write(&procs, pid.to_string()).map_err(|e| format!("{}: {e}", procs.display()))
    }
}

impl Drop for CpuCap {
    fn drop(&mut self) {
        // Its processes take a moment to leave it once killed.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The kernel's clock ticks per second, for the CPU times of `/proc`.
pub fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
        .unwrap_or(100.0)
}

/// RSS, bytes, and CPU time, seconds, of process `pid` (zero for one
/// gone).
pub fn usage(pid: u32, ticks_per_s: f64) -> (u64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    (rss_kib * 1024, cpu_of_stat(&stat(pid), ticks_per_s))
}

fn stat(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default()
}

/// User and system time, seconds, in a `/proc/<pid>/stat` line.
fn cpu_of_stat(stat: &str, ticks_per_s: f64) -> f64 {
    // Fields after the command's closing parenthesis; utime and stime are
    // the 12th and 13th of those.
    let after = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (tick(11) + tick(12)) / ticks_per_s
}

/// CPU time, seconds, of every live process whose command is `command`
/// (`postgres`: the server and its backends).
pub fn cpu_of_command(command: &str, ticks_per_s: f64) -> f64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .map(stat)
        .filter(|s| {
            s.split_once('(')
                .and_then(|(_, rest)| rest.rsplit_once(')'))
                .is_some_and(|(name, _)| name == command)
        })
        .map(|s| cpu_of_stat(&s, ticks_per_s))
        .sum()
}

/// Busy and total CPU time of the whole machine, in ticks (`/proc/stat`).
pub fn machine_ticks() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = text
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = fields.iter().take(8).sum();
    // idle and iowait are the 4th and 5th.
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    (total - idle.min(total), total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_is_read_after_the_command_even_with_spaces_in_it() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt
        // majflt cmajflt utime stime
        let line = "42 (a b) c) S 1 1 1 0 -1 0 0 0 0 0 250 50 0 0";
        assert_eq!(cpu_of_stat(line, 100.0), 3.0);
    }

    #[test]
    fn a_capped_process_gets_no_more_than_its_cores() {
        let cap = match CpuCap::new(&format!("telemark-cap-test-{}", std::process::id()), 0.2) {
            Ok(cap) => cap,
            // Not root, or no CPU controller: the reports say so too.
            Err(e) => return eprintln!("no CPU cap here: {e}"),
        };
        let spin = Processes(vec![Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .spawn()
            .unwrap()]);
        let pid = spin.pids()[0];
        cap.add(pid).unwrap();
        let ticks = clock_ticks();
        let (_, before) = usage(pid, ticks);
        std::thread::sleep(Duration::from_secs(2));
        let (_, after) = usage(pid, ticks);
        // 0.2 cores for 2 s is 0.4 s; a spinning process alone takes 2 s.
        assert!(after - before < 0.6, "{} s of CPU in 2 s", after - before);
        drop(spin);
        drop(cap);
    }

    #[test]
    fn this_process_uses_memory_and_the_machine_counts_time() {
        let (rss, _) = usage(std::process::id(), clock_ticks());
        assert!(rss > 0);
        assert!(machine_ticks().1 > 0);
    }
}
