//! How the service is set up: a TOML file (`--config FILE`), then flags,
//! which win. Every key of the file is optional:
//!
//! ```toml
//! data = "/var/lib/telemark"              # --data DIR: the SQLite file, the admin token
//! database = "postgres://telemark@db/telemark"  # --database URL: PostgreSQL instead of SQLite
//! nats = ["nats://n1:4222", "nats://n2:4222"]   # --nats URL,URL: cluster mode (crate::cluster), with PostgreSQL
//! nats_replicas = 3                       # --nats-replicas N: copies of its stream (default: servers given, at most 3)
//! http = "0.0.0.0:8080"                   # --http ADDR: the API
//! mqtt = "0.0.0.0:1883"                   # --mqtt ADDR: the embedded broker
//! coap = "0.0.0.0:5683"                   # --coap ADDR: CoAP over UDP
//! broker = "mqtt://broker.lan:1883"       # --broker URL: another broker, not the embedded one
//! mqtt_prefix = "telemark"                # --mqtt-prefix P: the devices' topic prefix
//! line = ["0.0.0.0:4444"]                 # --line ADDR: serial lines over TCP, listened for
//! line_connect = ["127.0.0.1:4444"]       # --line-connect ADDR: ... or dialled (QEMU)
//! serial = ["/dev/ttyUSB0"]               # --serial PATH: a UART (set its speed with stty)
//! keys = ["/etc/telemark/keys.txt"]       # --keys FILE: device keys to import
//! reading_rows = false                    # --reading-rows: also a row per reading, for SQL tools
//! silent_intervals = 3                    # --silent-intervals N: offline after N report intervals (0: never)
//! report_interval = 3600                  # --report-interval S: for devices whose config sets none
//! command_ttl = 86400                     # --command-ttl S: a command unanswered expires (0: never)
//! log_format = "json"                     # --log-format text|json: logs on standard error (RUST_LOG filters)
//!
//! mqtt_notifications = false              # --mqtt-notifications: also on {prefix}/v1/{device}/notifications
//! home_assistant = true                   # --home-assistant: MQTT discovery (crate::home_assistant)
//! home_assistant_broker = "mqtt://ha.lan:1883"  # --home-assistant-broker URL: ... on another broker
//! home_assistant_prefix = "homeassistant" # --home-assistant-prefix P: its discovery prefix
//! device_rate = 10.0                      # --device-rate F: frames a second a device may send (0: any)
//! device_burst = 100                      # --device-burst N: ... and at once
//! tls_cert = "/etc/telemark/cert.pem"     # --tls-cert FILE: HTTPS and TLS lines, with
//! tls_key = "/etc/telemark/key.pem"       # --tls-key FILE
//! mqtt_tls_cert = "/etc/telemark/mqtt.pem" # --mqtt-tls-cert FILE: devices over TLS, with
//! mqtt_tls_key = "/etc/telemark/mqtt.key" # --mqtt-tls-key FILE, and
//! mqtt_client_ca = "/etc/telemark/ca.pem" # --mqtt-client-ca FILE: client certificates, telemark-ID
//!
//! [[webhook]]                             # --webhook URL --webhook-secret S: notifications posted
//! url = "https://hooks.example/telemark"
//! secret = "a long random string"
//!
//! [[rule]]                                # rules (crate::rules), kept by name
//! name = "boiler-hot"
//! when = { device = 4171937491208237, channel = 1, above = 85.0, for_s = 300 }
//! then = { device = 4171937491208238, command = "set_output", output = 2, value = 0 }
//! ```
//!
//! The admin token comes from `--admin-token`, else the environment's
//! `TELEMARK_ADMIN_TOKEN`, else `DATA/admin-token`, which the first start
//! writes with a new random token.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;
use telemark_core::wire::seal::Key;

use crate::notify::Webhook;
use crate::rules::RuleSpec;
use crate::silence::Rule;
use crate::throttle::Rate;

/// Everything `telemark-cloud serve` is told.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// The data directory.
    pub data: PathBuf,
    /// PostgreSQL's URL, if not SQLite.
    pub database: Option<String>,
    /// NATS servers: cluster mode ([`crate::cluster`]) when there are any.
    pub nats: Vec<String>,
    /// Copies of the cluster's stream, if not the default.
    pub nats_replicas: Option<usize>,
    /// The API's address.
    pub http: SocketAddr,
    /// The embedded broker's address.
    pub mqtt: SocketAddr,
    /// The CoAP listener's address.
    pub coap: SocketAddr,
    /// Another broker to serve devices through, `host:port`.
    pub broker: Option<(String, u16)>,
    /// The devices' topic prefix.
    pub mqtt_prefix: String,
    /// Serial lines over TCP to listen for.
    pub line: Vec<SocketAddr>,
    /// Serial lines over TCP to dial, again whenever they close.
    pub line_connect: Vec<String>,
    /// UARTs.
    pub serial: Vec<PathBuf>,
    /// Key files to import (`DEVICE ID HEX` a line).
    pub keys: Vec<PathBuf>,
    /// Keys given on the command line.
    pub key: Vec<(u64, u8, Key)>,
    /// Devices whose unsealed frames are accepted (a bench only).
    pub unauthenticated: Vec<u64>,
    /// The admin token, if given.
    pub admin_token: Option<String>,
    /// Also keep a row per reading (for SQL tools).
    pub reading_rows: bool,
    /// Print each stored record on standard output.
    pub verbose: bool,
    /// How logs are written on standard error.
    pub log_format: LogFormat,
    /// When a device is offline ([`crate::silence`]).
    pub silence: Rule,
    /// How long a command is sent unanswered, ms; `None`: until answered.
    pub command_ttl_ms: Option<u64>,
    /// Where notifications are posted ([`crate::notify`]).
    pub webhooks: Vec<Webhook>,
    /// Rules of the config file ([`crate::rules`]).
    pub rules: Vec<RuleSpec>,
    /// Also publish notifications on the broker
    /// (`{prefix}/v1/{device}/notifications`).
    pub mqtt_notifications: bool,
    /// Home Assistant discovery ([`crate::home_assistant`]): on the
    /// devices' broker, or on this one, with this discovery prefix.
    pub home_assistant: Option<HomeAssistant>,
    /// How fast each device may send ([`crate::throttle`]); 0 frames a
    /// second for no limit.
    pub device_rate: Rate,
    /// The certificate chain of the HTTP listener and of the lines it
    /// listens for, PEM ([`crate::tls`]).
    pub tls_cert: Option<PathBuf>,
    /// ... and its private key, PEM.
    pub tls_key: Option<PathBuf>,
    /// The MQTT listener's certificate chain, PEM ([`crate::mqtt_gate`]).
    pub mqtt_tls_cert: Option<PathBuf>,
    /// ... its private key, PEM.
    pub mqtt_tls_key: Option<PathBuf>,
    /// ... and the CA whose certificates devices must show, PEM.
    pub mqtt_client_ca: Option<PathBuf>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            data: PathBuf::from("telemark-data"),
            database: None,
            nats: Vec::new(),
            nats_replicas: None,
            http: SocketAddr::from(([127, 0, 0, 1], 8080)),
            mqtt: SocketAddr::from(([0, 0, 0, 0], 1883)),
            coap: SocketAddr::from(([0, 0, 0, 0], 5683)),
            broker: None,
            mqtt_prefix: "telemark".into(),
            line: Vec::new(),
            line_connect: Vec::new(),
            serial: Vec::new(),
            keys: Vec::new(),
            key: Vec::new(),
            unauthenticated: Vec::new(),
            admin_token: None,
            reading_rows: false,
            verbose: false,
            log_format: LogFormat::Text,
            silence: Rule::default(),
            command_ttl_ms: Some(crate::DEFAULT_COMMAND_TTL_MS),
            webhooks: Vec::new(),
            rules: Vec::new(),
            mqtt_notifications: false,
            home_assistant: None,
            device_rate: Rate::default(),
            tls_cert: None,
            tls_key: None,
            mqtt_tls_cert: None,
            mqtt_tls_key: None,
            mqtt_client_ca: None,
        }
    }
}

/// The TOML file's form.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    data: Option<PathBuf>,
    database: Option<String>,
    #[serde(default)]
    nats: Vec<String>,
    nats_replicas: Option<usize>,
    http: Option<SocketAddr>,
    mqtt: Option<SocketAddr>,
    coap: Option<SocketAddr>,
    broker: Option<String>,
    mqtt_prefix: Option<String>,
    #[serde(default)]
    line: Vec<SocketAddr>,
    #[serde(default)]
    line_connect: Vec<String>,
    #[serde(default)]
    serial: Vec<PathBuf>,
    #[serde(default)]
    keys: Vec<PathBuf>,
    reading_rows: Option<bool>,
    silent_intervals: Option<u32>,
    report_interval: Option<u64>,
    command_ttl: Option<u64>,
    #[serde(default)]
    webhook: Vec<FileWebhook>,
    #[serde(default)]
    rule: Vec<RuleSpec>,
    mqtt_notifications: Option<bool>,
    home_assistant: Option<bool>,
    home_assistant_broker: Option<String>,
    home_assistant_prefix: Option<String>,
    device_rate: Option<f64>,
    device_burst: Option<u32>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    mqtt_tls_cert: Option<PathBuf>,
    mqtt_tls_key: Option<PathBuf>,
    mqtt_client_ca: Option<PathBuf>,
    log_format: Option<LogFormat>,
}

/// Where Home Assistant discovery goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HomeAssistant {
    /// Another broker than the devices': (host, port).
    pub broker: Option<(String, u16)>,
    /// The discovery prefix (`homeassistant`).
    pub prefix: String,
}

impl HomeAssistant {
    fn on(s: &mut Option<HomeAssistant>) -> &mut HomeAssistant {
        s.get_or_insert_with(|| HomeAssistant {
            broker: None,
            prefix: "homeassistant".into(),
        })
    }
}

/// How logs are written: text for a terminal or journald, a JSON object a
/// line for a log collector.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// `2026-12-07T06:00:00Z  INFO telemark_cloud: stopped frames=3 …`
    Text,
    /// `{"timestamp":…,"level":"INFO","fields":{"message":"stopped","frames":3,…},…}`
    Json,
}

fn log_format(v: &str) -> Result<LogFormat, String> {
    match v {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err(format!("--log-format {v}: text or json")),
    }
}

/// A webhook of the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileWebhook {
    url: String,
    secret: String,
}

/// A webhook, its URL and secret checked.
fn webhook(url: String, secret: String) -> Result<Webhook, String> {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(format!("webhook {url}: http:// or https:// expected"));
    }
    if secret.len() < 16 {
        return Err(format!(
            "webhook {url}: a secret of at least 16 characters signs its notifications"
        ));
    }
    Ok(Webhook { url, secret })
}

/// `mqtt://host:port` (the port defaults to 1883).
pub fn broker_url(url: &str) -> Result<(String, u16), String> {
    let rest = url
        .strip_prefix("mqtt://")
        .ok_or(format!("broker {url}: mqtt://HOST:PORT expected"))?;
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>()
                .map_err(|e| format!("broker {url}: port {p}: {e}"))?,
        ),
        None => (rest, 1883),
    };
    if host.is_empty() {
        return Err(format!("broker {url}: no host"));
    }
    Ok((host.to_string(), port))
}

/// A device id, decimal or 0x-hexadecimal.
pub fn device_id(s: &str) -> Result<u64, String> {
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse(),
    }
    .map_err(|e| format!("device id {s}: {e}"))
}

/// A key from `DEVICE`, `ID` and 64 hex digits.
pub fn key(device: &str, id: &str, hex_key: &str) -> Result<(u64, u8, Key), String> {
    let device = device_id(device)?;
    let id = id.parse::<u8>().map_err(|e| format!("key id {id}: {e}"))?;
    let key =
        Key::from_hex(hex_key).ok_or(format!("key of device {device}: 64 hex digits needed"))?;
    Ok((device, id, key))
}

/// The keys of a keys file: a line `DEVICE ID HEX` per key, `#` starts a
/// comment.
pub fn keys_file(text: &str, name: &str) -> Result<Vec<(u64, u8, Key)>, String> {
    let mut keys = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [device, id, k] = fields[..] else {
            return Err(format!("{name}:{}: DEVICE ID HEX expected", n + 1));
        };
        keys.push(key(device, id, k).map_err(|e| format!("{name}:{}: {e}", n + 1))?);
    }
    Ok(keys)
}

/// A report interval in whole seconds, 1 s to a year, in ms.
fn interval_ms(v: &str) -> Result<u64, String> {
    match v.parse::<u64>() {
        Ok(s @ 1..=31_536_000) => Ok(s * 1000),
        _ => Err(format!(
            "report interval {v}: whole seconds from 1 to 31536000 expected"
        )),
    }
}

/// A command time in whole seconds, up to a year (0: never), in ms.
fn ttl_ms(v: &str) -> Result<Option<u64>, String> {
    match v.parse::<u64>() {
        Ok(0) => Ok(None),
        Ok(s @ 1..=31_536_000) => Ok(Some(s * 1000)),
        _ => Err(format!(
            "command ttl {v}: whole seconds up to 31536000 expected (0: never)"
        )),
    }
}

fn addr(flag: &str, v: &str) -> Result<SocketAddr, String> {
    v.parse()
        .map_err(|e| format!("{flag} {v}: {e} (an address such as 127.0.0.1:0)"))
}

impl Settings {
    /// Settings from the command line's flags (after the subcommand), and
    /// the file `--config` names.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Settings, String> {
        let args: Vec<String> = args.into_iter().collect();
        let mut s = Settings::default();
        // The file first, wherever --config stands, so flags win.
        if let Some(i) = args.iter().position(|a| a == "--config") {
            let path = args.get(i + 1).ok_or("--config needs a value")?;
            let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
            s.apply_file(&text).map_err(|e| format!("{path}: {e}"))?;
        }
        let mut hooks = Vec::new();
        let mut secret = std::env::var("TELEMARK_WEBHOOK_SECRET").ok();
        let mut args = args.into_iter();
        while let Some(flag) = args.next() {
            let mut value = || args.next().ok_or(format!("{flag} needs a value"));
            match flag.as_str() {
                "--config" => drop(value()?),
                "--data" => s.data = PathBuf::from(value()?),
                "--database" => s.database = Some(value()?),
                "--nats" => s.nats.extend(value()?.split(',').map(str::to_string)),
                "--nats-replicas" => {
                    let v = value()?;
                    let n = v
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=5).contains(n))
                        .ok_or(format!("--nats-replicas {v}: 1 to 5 copies"))?;
                    s.nats_replicas = Some(n);
                }
                "--http" => s.http = addr("--http", &value()?)?,
                "--mqtt" => s.mqtt = addr("--mqtt", &value()?)?,
                "--coap" => s.coap = addr("--coap", &value()?)?,
                "--broker" => s.broker = Some(broker_url(&value()?)?),
                "--mqtt-prefix" => s.mqtt_prefix = value()?,
                "--line" => s.line.push(addr("--line", &value()?)?),
                "--line-connect" => s.line_connect.push(value()?),
                "--serial" => s.serial.push(PathBuf::from(value()?)),
                "--keys" => s.keys.push(PathBuf::from(value()?)),
                "--key" => {
                    let v = value()?;
                    let parts: Vec<&str> = v.split(':').collect();
                    let [device, id, k] = parts[..] else {
                        return Err("--key DEVICE:ID:HEX".into());
                    };
                    s.key.push(key(device, id, k)?);
                }
                "--unauthenticated" => s.unauthenticated.push(device_id(&value()?)?),
                "--admin-token" => s.admin_token = Some(value()?),
                "--verbose" => s.verbose = true,
                "--log-format" => s.log_format = log_format(&value()?)?,
                "--reading-rows" => s.reading_rows = true,
                "--silent-intervals" => {
                    let v = value()?;
                    s.silence.intervals = v
                        .parse()
                        .map_err(|e| format!("--silent-intervals {v}: {e}"))?;
                }
                "--report-interval" => {
                    s.silence.default_interval_ms = interval_ms(&value()?)?;
                }
                "--command-ttl" => s.command_ttl_ms = ttl_ms(&value()?)?,
                "--webhook" => hooks.push(value()?),
                "--mqtt-notifications" => s.mqtt_notifications = true,
                "--home-assistant" => drop(HomeAssistant::on(&mut s.home_assistant)),
                "--home-assistant-broker" => {
                    HomeAssistant::on(&mut s.home_assistant).broker = Some(broker_url(&value()?)?)
                }
                "--home-assistant-prefix" => {
                    HomeAssistant::on(&mut s.home_assistant).prefix = value()?
                }
                "--tls-cert" => s.tls_cert = Some(PathBuf::from(value()?)),
                "--tls-key" => s.tls_key = Some(PathBuf::from(value()?)),
                "--mqtt-tls-cert" => s.mqtt_tls_cert = Some(PathBuf::from(value()?)),
                "--mqtt-tls-key" => s.mqtt_tls_key = Some(PathBuf::from(value()?)),
                "--mqtt-client-ca" => s.mqtt_client_ca = Some(PathBuf::from(value()?)),
                "--device-rate" => {
                    let v = value()?;
                    let per_s = v
                        .parse::<f64>()
                        .ok()
                        .filter(|r| r.is_finite() && *r >= 0.0)
                        .ok_or(format!(
                            "--device-rate {v}: frames a second, 0 for no limit"
                        ))?;
                    s.device_rate.per_s = per_s;
                }
                "--device-burst" => {
                    let v = value()?;
                    let burst = v
                        .parse::<u32>()
                        .ok()
                        .filter(|&b| b > 0)
                        .ok_or(format!("--device-burst {v}: frames at once, 1 or more"))?;
                    s.device_rate.burst = burst;
                }
                "--webhook-secret" => secret = Some(value()?),
                other => return Err(format!("unknown argument {other}")),
            }
        }
        for url in hooks {
            let secret = secret.clone().ok_or(format!(
                "--webhook {url}: --webhook-secret (or TELEMARK_WEBHOOK_SECRET) signs its notifications"
            ))?;
            s.webhooks.push(webhook(url, secret)?);
        }
        s.check_tls()?;
        if let Some(db) = &s.database {
            if !(db.starts_with("postgres://") || db.starts_with("postgresql://")) {
                return Err(format!("--database {db}: postgres://… expected"));
            }
        }
        s.check_cluster()?;
        Ok(s)
    }

    /// The cluster's NATS, in cluster mode.
    pub fn cluster(&self) -> Option<crate::cluster::Nats> {
        (!self.nats.is_empty()).then(|| crate::cluster::Nats {
            servers: self.nats.clone(),
            replicas: self.nats_replicas,
            prefix: self.mqtt_prefix.clone(),
        })
    }

    /// Cluster flags that make sense together.
    fn check_cluster(&self) -> Result<(), String> {
        for url in &self.nats {
            if !(url.starts_with("nats://") || url.starts_with("tls://")) {
                return Err(format!("--nats {url}: nats://HOST:PORT expected"));
            }
        }
        if !self.nats.is_empty() && self.database.is_none() {
            return Err(
                "--nats needs --database postgres://…: the instances share one database".into(),
            );
        }
        if self.nats_replicas.is_some() && self.nats.is_empty() {
            return Err("--nats-replicas needs --nats".into());
        }
        Ok(())
    }

    /// TLS flags that make sense together.
    fn check_tls(&self) -> Result<(), String> {
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err("--tls-cert and --tls-key go together".into());
        }
        if self.mqtt_tls_cert.is_some() != self.mqtt_tls_key.is_some() {
            return Err("--mqtt-tls-cert and --mqtt-tls-key go together".into());
        }
        if self.mqtt_client_ca.is_some() && self.mqtt_tls_cert.is_none() {
            return Err("--mqtt-client-ca needs --mqtt-tls-cert and --mqtt-tls-key".into());
        }
        if self.mqtt_tls_cert.is_some() && self.broker.is_some() {
            return Err(
                "--mqtt-tls-cert is for the embedded broker; another broker does its own TLS"
                    .into(),
            );
        }
        Ok(())
    }

    /// How fast each device may send; `None`: any.
    pub fn device_rate(&self) -> Option<Rate> {
        Some(self.device_rate).filter(|r| r.per_s > 0.0)
    }

    fn apply_file(&mut self, text: &str) -> Result<(), String> {
        let f: File = toml::from_str(text).map_err(|e| e.to_string())?;
        if let Some(v) = f.data {
            self.data = v;
        }
        if f.database.is_some() {
            self.database = f.database;
        }
        self.nats.extend(f.nats);
        if f.nats_replicas.is_some() {
            self.nats_replicas = f.nats_replicas;
        }
        if let Some(v) = f.http {
            self.http = v;
        }
        if let Some(v) = f.mqtt {
            self.mqtt = v;
        }
        if let Some(v) = f.coap {
            self.coap = v;
        }
        if let Some(v) = f.broker {
            self.broker = Some(broker_url(&v)?);
        }
        if let Some(v) = f.mqtt_prefix {
            self.mqtt_prefix = v;
        }
        self.line.extend(f.line);
        self.line_connect.extend(f.line_connect);
        self.serial.extend(f.serial);
        self.keys.extend(f.keys);
        if let Some(v) = f.reading_rows {
            self.reading_rows = v;
        }
        if let Some(v) = f.silent_intervals {
            self.silence.intervals = v;
        }
        if let Some(v) = f.report_interval {
            self.silence.default_interval_ms = interval_ms(&v.to_string())?;
        }
        if let Some(v) = f.command_ttl {
            self.command_ttl_ms = ttl_ms(&v.to_string())?;
        }
        for h in f.webhook {
            self.webhooks.push(webhook(h.url, h.secret)?);
        }
        if let Some(v) = f.mqtt_notifications {
            self.mqtt_notifications = v;
        }
        match f.home_assistant {
            Some(false) => self.home_assistant = None,
            Some(true) => drop(HomeAssistant::on(&mut self.home_assistant)),
            None => {}
        }
        if let Some(url) = f.home_assistant_broker {
            HomeAssistant::on(&mut self.home_assistant).broker = Some(broker_url(&url)?);
        }
        if let Some(p) = f.home_assistant_prefix {
            HomeAssistant::on(&mut self.home_assistant).prefix = p;
        }
        if f.device_rate.is_some_and(|r| !r.is_finite() || r < 0.0) {
            return Err("device_rate: frames a second, 0 for no limit".into());
        }
        if f.device_burst == Some(0) {
            return Err("device_burst: frames at once, 1 or more".into());
        }
        if f.tls_cert.is_some() {
            self.tls_cert = f.tls_cert;
        }
        if f.tls_key.is_some() {
            self.tls_key = f.tls_key;
        }
        if f.mqtt_tls_cert.is_some() {
            self.mqtt_tls_cert = f.mqtt_tls_cert;
        }
        if f.mqtt_tls_key.is_some() {
            self.mqtt_tls_key = f.mqtt_tls_key;
        }
        if f.mqtt_client_ca.is_some() {
            self.mqtt_client_ca = f.mqtt_client_ca;
        }
        if let Some(v) = f.log_format {
            self.log_format = v;
        }
        if let Some(v) = f.device_rate {
            self.device_rate.per_s = v;
        }
        if let Some(v) = f.device_burst {
            self.device_rate.burst = v;
        }
        for r in f.rule {
            r.rule()?;
            self.rules.push(r);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file() {
        let dir = std::env::temp_dir().join(format!("telemark-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("cloud.toml");
        std::fs::write(
            &file,
            "http = \"0.0.0.0:9000\"\nmqtt = \"0.0.0.0:1884\"\nline = [\"127.0.0.1:4444\"]\n\
             log_format = \"json\"\n",
        )
        .unwrap();
        let args = ["--http", "127.0.0.1:0", "--config", file.to_str().unwrap()];
        let s = Settings::parse(args.map(String::from)).unwrap();
        assert_eq!(s.http, "127.0.0.1:0".parse().unwrap());
        assert_eq!(s.mqtt, "0.0.0.0:1884".parse().unwrap());
        assert_eq!(s.line, ["127.0.0.1:4444".parse().unwrap()]);
        assert_eq!(s.log_format, LogFormat::Json);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn bad_settings_say_what_is_wrong() {
        let e = |args: &[&str]| Settings::parse(args.iter().map(|a| a.to_string())).unwrap_err();
        assert!(e(&["--http", "localhost"]).contains("--http localhost"));
        assert!(e(&["--broker", "tcp://x:1"]).contains("mqtt://"));
        assert!(e(&["--database", "mysql://x"]).contains("postgres://"));
        assert!(e(&["--nats", "nats://a:4222"]).contains("--database"));
        assert!(e(&["--nats", "http://a", "--database", "postgres://x"]).contains("nats://"));
        assert!(e(&["--nats-replicas", "3"]).contains("--nats"));
        assert!(e(&["--nats", "nats://a:1", "--nats-replicas", "9"]).contains("1 to 5"));
        assert!(e(&["--key", "1:2"]).contains("DEVICE:ID:HEX"));
        assert!(e(&["--frobnicate"]).contains("--frobnicate"));
        assert!(e(&["--log-format", "xml"]).contains("text or json"));
        assert!(e(&["--report-interval", "0"]).contains("report interval 0"));
        assert!(e(&["--command-ttl", "x"]).contains("command ttl x"));
        assert!(e(&["--device-rate", "-1"]).contains("--device-rate -1"));
        assert!(e(&["--device-burst", "0"]).contains("--device-burst 0"));
        assert!(e(&["--tls-cert", "c.pem"]).contains("go together"));
        assert!(e(&["--mqtt-client-ca", "ca.pem"]).contains("needs --mqtt-tls-cert"));
        let off = Settings::parse(["--device-rate", "0"].map(String::from)).unwrap();
        assert_eq!(off.device_rate(), None);
        assert!(e(&["--webhook", "ftp://x"]).contains("--webhook-secret"));
        let short = ["--webhook", "http://x", "--webhook-secret", "short"];
        assert!(e(&short).contains("16 characters"));
        assert!(e(&[
            "--webhook",
            "ftp://x",
            "--webhook-secret",
            "0123456789abcdef"
        ])
        .contains("http://"));
        let never = Settings::parse(["--command-ttl", "0"].map(String::from)).unwrap();
        assert_eq!(never.command_ttl_ms, None);
        assert!(e(&["--silent-intervals", "-1"]).contains("--silent-intervals -1"));
        let mut s = Settings::default();
        assert!(s.apply_file("htp = \"1\"").unwrap_err().contains("htp"));
    }

    #[test]
    fn keys_files_name_the_bad_line() {
        let good = format!("# devices\n257 1 {}\n", "ab".repeat(32));
        assert_eq!(keys_file(&good, "k").unwrap().len(), 1);
        let bad = format!("257 1 {}\n258 1 zz\n", "ab".repeat(32));
        assert!(keys_file(&bad, "k").unwrap_err().starts_with("k:2:"));
    }
}
