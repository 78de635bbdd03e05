//! The simulator against a running telemark-cloud: devices provisioned
//! through its HTTP API, frames carried by the real transports (MQTT,
//! HTTP or CoAP, the host links a Linux device runs), and the fleet's
//! accounting checked against what the API says it stored.
//!
//! The link's faults stay the simulator's: a frame it loses never reaches
//! the transport, a copy it duplicates is sent twice, and an answer it
//! loses is taken off the transport and dropped before the device sees
//! it. The simulator sees every answer the service sent, so it knows
//! exactly which records the service acknowledged, and the service
//! acknowledges only what it committed: those records' readings are what
//! the API must count, no more and no fewer.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration as RealDuration, Instant as RealInstant};

use serde_json::{json, Value};
use telemark_core::store::Lane;
use telemark_core::transport::AsyncTransport;
use telemark_core::wire::frame::{RecordsFrame, Response};
use telemark_core::wire::report::Report;
use telemark_core::wire::seal::{open, Direction, Header, Key, Sealing};
use telemark_core::wire::Epoch;
use telemark_server::RecordKey;

/// How long the service has to answer a frame.
const ANSWER: RealDuration = RealDuration::from_secs(10);

/// Where the devices' frames go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// An MQTT broker: the service's embedded one, or the one it uses.
    Mqtt { host: String, port: u16 },
    /// The service's HTTP ingest, `POST /v1/up`.
    Http { url: String },
    /// The service's CoAP listener.
    Coap { addr: SocketAddr },
}

impl Endpoint {
    /// `mqtt://HOST:PORT`, `http://HOST:PORT` or `coap://HOST:PORT`.
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let (scheme, rest) = url.split_once("://").ok_or(format!(
            "--server {url}: a URL such as mqtt://127.0.0.1:1883"
        ))?;
        let authority = rest.trim_end_matches('/');
        let (host, port) = authority
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
            .ok_or(format!(
                "--server {url}: HOST:PORT expected after {scheme}://"
            ))?;
        match scheme {
            "mqtt" => Ok(Endpoint::Mqtt {
                host: host.to_string(),
                port,
            }),
            "http" => Ok(Endpoint::Http {
                url: format!("http://{authority}{}", telemark_http::exchange::PATH),
            }),
            "coap" => {
                let addr = (host, port)
                    .to_socket_addrs()
                    .ok()
                    .and_then(|mut a| a.next())
                    .ok_or(format!("--server {url}: {host} does not resolve"))?;
                Ok(Endpoint::Coap { addr })
            }
            other => Err(format!(
                "--server {url}: mqtt://, http:// or coap://, not {other}://"
            )),
        }
    }
}

impl Endpoint {
    /// The transport's name.
    pub fn scheme(&self) -> &'static str {
        match self {
            Endpoint::Mqtt { .. } => "mqtt",
            Endpoint::Http { .. } => "http",
            Endpoint::Coap { .. } => "coap",
        }
    }
}

/// The running service: its API, and where its devices send.
pub struct Service {
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
    api: String,
    token: String,
    endpoint: Endpoint,
    mtu: usize,
}

/// A device the API created.
pub struct Provisioned {
    pub id: u64,
    pub key_id: u8,
    pub key: Key,
}

/// What the API says it holds of one device.
pub struct Account {
    pub readings: u64,
    pub alerts: u64,
    pub config_applied: bool,
    /// Where the desired config stands: pending, applied or refused.
    pub config_state: String,
    pub command_answered: bool,
}

impl Service {
    /// A client of the service at `api` (`http://HOST:PORT`) with `token`,
    /// its devices sending to `endpoint` in frames of up to `mtu` bytes.
    pub fn new(api: &str, token: &str, endpoint: Endpoint, mtu: usize) -> Result<Service, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("no runtime: {e}"))?;
        // Already installed is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(ANSWER)
            .build()
            .map_err(|e| format!("no HTTP client: {e}"))?;
        Ok(Service {
            rt,
            http,
            api: api.trim_end_matches('/').to_string(),
            token: token.to_string(),
            endpoint,
            mtu,
        })
    }

    /// One API call: the JSON it answered, or what went wrong.
    fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let url = format!("{}{path}", self.api);
        self.rt.block_on(async {
            let mut request = self
                .http
                .request(method.clone(), &url)
                .bearer_auth(&self.token);
            if let Some(body) = body {
                request = request.json(&body);
            }
            let answer = request
                .send()
                .await
                .map_err(|e| format!("{method} {url}: {e}"))?;
            let status = answer.status();
            let text = answer
                .text()
                .await
                .map_err(|e| format!("{method} {url}: {e}"))?;
            if !status.is_success() {
                return Err(format!("{method} {url}: {status}: {text}"));
            }
            serde_json::from_str(&text).map_err(|e| format!("{method} {url}: {e}: {text}"))
        })
    }

    /// Creates a device named `name`: its id and key.
    pub fn provision(&self, name: &str) -> Result<Provisioned, String> {
        let v = self.call(
            reqwest::Method::POST,
            "/v1/devices",
            Some(json!({ "name": name })),
        )?;
        let id = v["device"]["id"]
            .as_u64()
            .ok_or(format!("no device id in {v}"))?;
        let key_id = v["key_id"]
            .as_u64()
            .and_then(|k| u8::try_from(k).ok())
            .ok_or(format!("no key id in {v}"))?;
        let key = v["key"]
            .as_str()
            .and_then(Key::from_hex)
            .ok_or(format!("no key in {v}"))?;
        Ok(Provisioned { id, key_id, key })
    }

    /// Asks for config `cbor` and output `output` set to `value`: the
    /// command's id.
    pub fn want(&self, device: u64, cbor: &[u8], output: u8, value: u32) -> Result<u64, String> {
        let hex: String = cbor.iter().map(|b| format!("{b:02x}")).collect();
        self.call(
            reqwest::Method::PUT,
            &format!("/v1/devices/{device}/config"),
            Some(json!({ "cbor": hex })),
        )?;
        let v = self.call(
            reqwest::Method::POST,
            &format!("/v1/devices/{device}/commands"),
            Some(json!({ "command": "set_output", "output": output, "value": value })),
        )?;
        v["id"].as_u64().ok_or(format!("no command id in {v}"))
    }

    /// What the API holds of `device`; `command` is the id `want` gave.
    pub fn account(&self, device: u64, command: Option<u64>) -> Result<Account, String> {
        let d = self.call(reqwest::Method::GET, &format!("/v1/devices/{device}"), None)?;
        let readings = d["readings"]
            .as_u64()
            .ok_or(format!("no reading count in {d}"))?;
        let alerts = self.call(
            reqwest::Method::GET,
            &format!("/v1/devices/{device}/alerts?limit=10000"),
            None,
        )?;
        let alerts = alerts["alerts"]
            .as_array()
            .ok_or(format!("no alerts in {alerts}"))?
            .len() as u64;
        let commands = self.call(
            reqwest::Method::GET,
            &format!("/v1/devices/{device}/commands"),
            None,
        )?;
        let command_answered = commands["commands"].as_array().is_some_and(|list| {
            list.iter()
                .any(|c| c["id"].as_u64() == command && c["state"] == "answered")
        });
        Ok(Account {
            readings,
            alerts,
            // Applied, and the version the device says it runs.
            config_applied: d["config"]["state"] == "applied"
                && d["reported_config"]["version"] == d["config"]["version"],
            config_state: d["config"]["state"]
                .as_str()
                .unwrap_or("not set")
                .to_string(),
            command_answered,
        })
    }

    /// The link of device `id`, on `buf` where the transport needs one.
    pub fn link<'b>(&self, id: u64, buf: &'b mut [u8]) -> Result<Uplink<'b>, String> {
        match &self.endpoint {
            Endpoint::Mqtt { host, port } => {
                let mut config =
                    telemark_mqtt::host::HostConfig::new(id, vec![(host.clone(), *port)]);
                config.mtu = self.mtu;
                telemark_mqtt::host::HostLink::new(config)
                    .map(|link| Uplink::Mqtt(Box::new(link)))
                    .ok_or("no MQTT topic for the device".into())
            }
            Endpoint::Http { url } => {
                let mut config = telemark_http::host::HostConfig::new(vec![url.clone()]);
                config.mtu = self.mtu;
                config.timeout = ANSWER;
                telemark_http::host::HostLink::new(config)
                    .map(Uplink::Http)
                    .map_err(|e| format!("no HTTP link: {e}"))
            }
            Endpoint::Coap { addr } => {
                let udp = self
                    .rt
                    .block_on(telemark_coap::host::Udp::connect(*addr))
                    .map_err(|e| format!("no UDP socket: {e}"))?;
                let mut config = telemark_coap::Config::new();
                config.mtu = self.mtu;
                let seed = (id as u16) ^ ((id >> 16) as u16);
                Ok(Uplink::Coap(Box::new(telemark_coap::CoapLink::new(
                    udp, config, buf, seed,
                ))))
            }
        }
    }
}

/// A device's real transport.
pub enum Uplink<'b> {
    Mqtt(Box<telemark_mqtt::host::HostLink>),
    Http(telemark_http::host::HostLink),
    Coap(Box<telemark_coap::CoapLink<'b, telemark_coap::host::Udp>>),
}

/// Every frame waiting on the link, taken off it.
async fn drain<T: AsyncTransport>(link: &mut T, out: &mut Vec<Vec<u8>>) -> Result<(), String> {
    let mut buf = [0u8; 2048];
    while let Some(n) = link
        .receive(&mut buf)
        .await
        .map_err(|e| format!("receive: {e:?}"))?
    {
        out.push(buf.get(..n).unwrap_or_default().to_vec());
    }
    Ok(())
}

async fn send<T: AsyncTransport>(link: &mut T, frame: &[u8]) -> Result<(), String> {
    link.power(true)
        .await
        .map_err(|e| format!("link up: {e:?}"))?;
    link.send(frame).await.map_err(|e| format!("send: {e:?}"))
}

impl Uplink<'_> {
    /// Sends `frame`; with `answer`, waits for the response that answers
    /// that counter. Every frame the link carried down meanwhile.
    async fn exchange(
        &mut self,
        frame: &[u8],
        answer: Option<u32>,
    ) -> Result<Vec<Vec<u8>>, String> {
        let mut down = Vec::new();
        let answered = |down: &[Vec<u8>]| {
            answer.is_none_or(|counter| {
                down.iter()
                    .any(|f| Header::parse(f).is_ok_and(|(h, _)| h.counter == counter))
            })
        };
        match self {
            Uplink::Http(link) => {
                send(link, frame).await?;
                drain(link, &mut down).await?;
            }
            Uplink::Coap(link) => {
                let link = link.as_mut();
                send(link, frame).await?;
                drain(link, &mut down).await?;
            }
            Uplink::Mqtt(link) => {
                let link = link.as_mut();
                send(link, frame).await?;
                let until = RealInstant::now() + ANSWER;
                loop {
                    drain(link, &mut down).await?;
                    if answered(&down) {
                        break;
                    }
                    let left = until.saturating_duration_since(RealInstant::now());
                    if left.is_zero() {
                        break;
                    }
                    let _ = tokio::time::timeout(left, link.wait_input()).await;
                }
            }
        }
        if answered(&down) {
            Ok(down)
        } else {
            Err(format!("no answer within {} s", ANSWER.as_secs()))
        }
    }

    async fn close(&mut self) {
        match self {
            Uplink::Mqtt(link) => {
                link.keep_link_up(false);
                let _ = link.power(false).await;
            }
            Uplink::Http(_) | Uplink::Coap(_) => {}
        }
    }
}

/// A record the service acknowledged.
#[derive(Clone, Copy)]
struct Acked {
    /// Readings, for a routine record.
    readings: u64,
    /// An alert report.
    alert: bool,
}

/// What one device sent and what the service answered.
pub struct Remote<'s, 'b> {
    pub service: &'s Service,
    pub id: u64,
    sealing: Sealing,
    link: Uplink<'b>,
    /// Frames sent, by (epoch, counter): the records each carried.
    sent: HashMap<(Epoch, u32), Vec<(RecordKey, Acked)>>,
    /// Frames the service answered.
    answered: HashSet<(Epoch, u32)>,
    /// Every record the service acknowledged, as it first stored it.
    acked: HashMap<RecordKey, Acked>,
    /// The command asked for on day two.
    pub command: Option<u64>,
    /// Records the service acknowledged again, as duplicates.
    pub duplicates: u64,
}

/// What became of one copy of a frame.
pub enum Delivery {
    /// What the service sent down (the answer among it).
    Answered(Vec<Vec<u8>>),
    /// A copy of a frame already answered, refused as a replay; what the
    /// service sent down meanwhile.
    Replay(Vec<Vec<u8>>),
}

impl<'s, 'b> Remote<'s, 'b> {
    pub fn new(service: &'s Service, p: &Provisioned, buf: &'b mut [u8]) -> Result<Self, String> {
        Ok(Remote {
            service,
            id: p.id,
            sealing: Sealing::key(p.key_id, p.key.clone()),
            link: service.link(p.id, buf)?,
            sent: HashMap::new(),
            answered: HashSet::new(),
            acked: HashMap::new(),
            command: None,
            duplicates: 0,
        })
    }

    /// The device's sealing, as the API gave its key.
    pub fn sealing(&self) -> Sealing {
        self.sealing.clone()
    }

    /// Carries one copy of a whole frame to the service. The alert
    /// reports among its records, for their latency.
    pub fn deliver(&mut self, frame: &[u8]) -> Result<Delivery, String> {
        let (header, _) = Header::parse(frame).map_err(|e| format!("own frame: {e:?}"))?;
        let at = (header.epoch, header.counter);
        if !self.sent.contains_key(&at) {
            let records = self.records_of(frame)?;
            self.sent.insert(at, records);
        }
        let first = !self.answered.contains(&at);
        let exchanged = self
            .service
            .rt
            .block_on(self.link.exchange(frame, first.then_some(header.counter)));
        let down = match exchanged {
            Ok(down) => down,
            // HTTP and CoAP answer a replayed copy with an error.
            Err(_) if !first => Vec::new(),
            Err(e) => return Err(e),
        };
        for response in &down {
            self.take_answer(response);
        }
        if first {
            Ok(Delivery::Answered(down))
        } else {
            Ok(Delivery::Replay(down))
        }
    }

    /// The records of one of the device's own frames.
    fn records_of(&self, frame: &[u8]) -> Result<Vec<(RecordKey, Acked)>, String> {
        let mut bytes = frame.to_vec();
        let (header, body) = open(&mut bytes, &self.sealing, Direction::Up)
            .map_err(|e| format!("own frame: {e:?}"))?;
        let parsed = RecordsFrame::parse(&header, body).map_err(|e| format!("own frame: {e:?}"))?;
        Ok(parsed
            .records()
            .map(|r| {
                let key = RecordKey {
                    device: self.id,
                    epoch: r.epoch,
                    seq: r.record.seq,
                };
                let routine = r.record.meta.lane == Lane::Routine;
                let acked = Acked {
                    readings: if routine {
                        u64::from(r.record.meta.readings)
                    } else {
                        0
                    },
                    alert: !routine
                        && matches!(Report::decode(r.record.payload), Ok(Report::Alert(_))),
                };
                (key, acked)
            })
            .collect())
    }

    /// Marks what a response acknowledged as stored.
    fn take_answer(&mut self, response: &[u8]) {
        let mut bytes = response.to_vec();
        let Ok((header, body)) = open(&mut bytes, &self.sealing, Direction::Down) else {
            return;
        };
        let Ok(parsed) = Response::parse(&header, body) else {
            return;
        };
        let at = (header.epoch, header.counter);
        self.answered.insert(at);
        let Some(records) = self.sent.get(&at) else {
            return;
        };
        for range in parsed.ranges() {
            for (key, acked) in records.iter().filter(|(k, _)| range.contains(k.seq)) {
                match self.acked.entry(*key) {
                    Entry::Occupied(_) => self.duplicates += 1,
                    Entry::Vacant(slot) => {
                        slot.insert(*acked);
                    }
                }
            }
        }
    }

    /// True if the service acknowledged the record.
    pub fn holds(&self, key: &RecordKey) -> bool {
        self.acked.contains_key(key)
    }

    /// Readings and alerts in the records the service acknowledged.
    pub fn acknowledged(&self) -> (u64, u64) {
        self.acked
            .values()
            .fold((0, 0), |(r, a), v| (r + v.readings, a + u64::from(v.alert)))
    }

    /// Ends the device's session.
    pub fn close(&mut self) {
        self.service.rt.block_on(self.link.close());
    }
}
