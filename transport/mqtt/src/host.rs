//! The link for Linux devices and gateways (feature `host`): the same
//! topics, sessions and errors as the device side, on rumqttc (MQTT 5) and
//! tokio, with TLS and client certificates through rustls
//! ([`rumqttc::Transport::tls_with_config`]).
//!
//! One value does it all: there is no task to spawn. The link drives
//! rumqttc's event loop while the engine calls it, and
//! [`HostLink::wait_input`] drives it while the device waits, so an
//! always-connected link keeps its keepalive and takes commands at once.
//!
//! rumqttc drops its queued and unacknowledged publishes when a broker
//! answers with no session; that costs nothing here, as the engine resends
//! every record the server has not acknowledged.
//!
//! ```
//! use telemark_core::transport::AsyncTransport;
//! use telemark_mqtt::host::{HostConfig, HostLink};
//! use telemark_mqtt::{LinkState, Mode};
//!
//! let config = HostConfig::new(0x101, vec![("broker.local".into(), 1883)]);
//! let mut link = HostLink::new(config).unwrap();
//! assert_eq!(link.state(), LinkState::Down);
//! // The engine's config chooses (step_async says so at every step).
//! link.keep_link_up(true);
//! assert_eq!(link.mode(), Mode::AlwaysConnected);
//! assert_eq!(link.mtu(), 512);
//! // In the main loop: `step_async(&mut engine, &mut link, now, &mut board)`,
//! // then sleep on the engine's deadline or `link.wait_input()`.
//! ```

extern crate std;

use std::collections::VecDeque;
use std::string::{String, ToString};
use std::time::Duration;
use std::vec::Vec;

use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode, Packet};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions};
use rumqttc::Transport;
use telemark_core::transport::AsyncTransport;

use crate::link::{Counters, LinkError, LinkState, Refusal};
use crate::runner::{Mode, PUBLISH_OVERHEAD};
use crate::topic::Topics;

/// How a host reaches its brokers.
#[derive(Clone)]
pub struct HostConfig {
    /// The device id: it names the topics and the client id.
    pub device: u64,
    /// Topic prefix.
    pub prefix: String,
    /// Brokers as (host, port), tried in turn from the last that answered.
    pub endpoints: Vec<(String, u16)>,
    /// User name and password.
    pub auth: Option<(String, String)>,
    /// TCP, or TLS with a rustls config (client certificates included).
    pub transport: Transport,
    /// MQTT keepalive.
    pub keepalive: Duration,
    /// How long the broker keeps the session after the device goes.
    pub session_expiry_secs: u32,
    /// Bound on one endpoint's connect and CONNACK.
    pub connect_timeout: Duration,
    /// Largest frame, before the broker's Maximum Packet Size lowers it.
    pub mtu: usize,
}

impl HostConfig {
    /// Plain TCP, keepalive 60 s, sessions kept a week, 10 s to
    /// connect, frames of up to 512 bytes.
    pub fn new(device: u64, endpoints: Vec<(String, u16)>) -> Self {
        HostConfig {
            device,
            prefix: "telemark".to_string(),
            endpoints,
            auth: None,
            transport: Transport::Tcp,
            keepalive: Duration::from_secs(60),
            session_expiry_secs: 7 * 24 * 3600,
            connect_timeout: Duration::from_secs(10),
            mtu: 512,
        }
    }
}

/// The host's MQTT link: an [`AsyncTransport`] for `step_async` on tokio.
pub struct HostLink {
    config: HostConfig,
    topics: Topics,
    mode: Mode,
    live: Option<(AsyncClient, EventLoop)>,
    next_endpoint: usize,
    mtu: usize,
    state: LinkState,
    down: VecDeque<Vec<u8>>,
    counters: Counters,
}

/// Downlinks held for the engine.
const DOWN_QUEUE: usize = 16;

/// Publishes in flight at once, at most.
const INFLIGHT: u16 = 16;

impl HostLink {
    /// A link, down; `None` if the prefix makes no valid topic.
    pub fn new(config: HostConfig) -> Option<HostLink> {
        let topics = Topics::new(&config.prefix, config.device)?;
        Some(HostLink {
            mtu: config.mtu,
            mode: Mode::Push,
            config,
            topics,
            live: None,
            next_endpoint: 0,
            state: LinkState::Down,
            down: VecDeque::new(),
            counters: Counters::default(),
        })
    }

    /// Where the link stands.
    pub fn state(&self) -> LinkState {
        self.state
    }

    /// What the link did so far.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Push or always connected, as the engine's config last said.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    fn options(&self, host: &str, port: u16) -> MqttOptions {
        let c = &self.config;
        let mut options = MqttOptions::new(std::format!("telemark-{}", c.device), host, port);
        options
            .set_clean_start(false)
            .set_session_expiry_interval(Some(c.session_expiry_secs))
            .set_keep_alive(c.keepalive)
            .set_transport(c.transport.clone())
            // The engine has a frame or a few waiting at a time. The
            // client's default, 65,535 in flight, costs a slot each from
            // the start: fleet-report's links reached 23 GiB with it
            // before the kernel killed it; 10,000 take 0.6 GiB without.
            .set_outgoing_inflight_upper_limit(INFLIGHT);
        if let Some((user, password)) = &c.auth {
            options.set_credentials(user.clone(), password.clone());
        }
        // A frame goes out as soon as the engine hands it over.
        let mut network = rumqttc::NetworkOptions::new();
        network.set_tcp_nodelay(true);
        options.set_network_options(network);
        options
    }

    /// Tries each endpoint once, from the last that answered.
    async fn connect(&mut self) -> Result<(), LinkError> {
        let n = self.config.endpoints.len();
        for k in 0..n {
            let i = (self.next_endpoint + k) % n;
            let Some((host, port)) = self.config.endpoints.get(i).cloned() else {
                continue;
            };
            let (client, mut events) = AsyncClient::new(self.options(&host, port), 16);
            let acked = tokio::time::timeout(self.config.connect_timeout, async {
                loop {
                    match events.poll().await {
                        Ok(Event::Incoming(Packet::ConnAck(ack))) => return Ok(ack),
                        Ok(_) => {}
                        Err(e) => return Err(e),
                    }
                }
            })
            .await;
            let ack = match acked {
                Ok(Ok(ack)) => ack,
                Ok(Err(ConnectionError::ConnectionRefused(code))) => {
                    if let Some(refusal) = refusal(code) {
                        self.counters.refusals += 1;
                        self.state = LinkState::Refused(refusal);
                        return Err(LinkError::Refused(refusal));
                    }
                    self.counters.connect_failures += 1;
                    continue;
                }
                Ok(Err(_)) | Err(_) => {
                    self.counters.connect_failures += 1;
                    continue;
                }
            };
            if !ack.session_present {
                // A fresh session: the broker knows no subscription.
                let subscribed = async {
                    client
                        .subscribe(self.topics.down(), QoS::AtLeastOnce)
                        .await
                        .map_err(|_| ())?;
                    loop {
                        match events.poll().await {
                            Ok(Event::Incoming(Packet::SubAck(_))) => return Ok(()),
                            Ok(_) => {}
                            Err(_) => return Err(()),
                        }
                    }
                };
                let timeout = self.config.connect_timeout;
                if !matches!(tokio::time::timeout(timeout, subscribed).await, Ok(Ok(()))) {
                    self.counters.connect_failures += 1;
                    continue;
                }
            }
            let overhead = PUBLISH_OVERHEAD + self.topics.up().len();
            let broker_max = ack.properties.and_then(|p| p.max_packet_size);
            self.mtu = broker_max.map_or(self.config.mtu, |max| {
                (max as usize).saturating_sub(overhead).min(self.config.mtu)
            });
            self.next_endpoint = i;
            self.counters.connects += 1;
            self.counters.resumed += u32::from(ack.session_present);
            self.state = LinkState::Up;
            self.live = Some((client, events));
            return Ok(());
        }
        self.state = LinkState::Down;
        Err(LinkError::Down)
    }

    /// Drives the event loop once, keeping what arrives; `Err` when the
    /// connection is lost (the link is then down).
    async fn drive(&mut self) -> Result<Option<Event>, LinkError> {
        let Some((_, events)) = self.live.as_mut() else {
            return Err(LinkError::Down);
        };
        match events.poll().await {
            Ok(event) => {
                if let Event::Incoming(Packet::Publish(publish)) = &event {
                    self.keep(&publish.topic, &publish.payload);
                }
                Ok(Some(event))
            }
            Err(_) => {
                self.live = None;
                self.state = LinkState::Down;
                self.counters.drops += 1;
                Err(LinkError::Down)
            }
        }
    }

    fn keep(&mut self, topic: &[u8], payload: &[u8]) {
        if topic != self.topics.down().as_bytes() {
            return;
        }
        self.counters.received += 1;
        if payload.len() > self.mtu.max(self.config.mtu) || self.down.len() >= DOWN_QUEUE {
            self.counters.downlinks_dropped += 1;
        } else {
            self.down.push_back(payload.to_vec());
        }
    }

    /// Waits until a downlink is there for `receive`, driving the
    /// connection meanwhile; returns at once when the link is down.
    pub async fn wait_input(&mut self) {
        while self.down.is_empty() {
            if self.drive().await.is_err() {
                return;
            }
        }
    }
}

/// The refusal a CONNACK code means, if no retry can mend it.
fn refusal(code: ConnectReturnCode) -> Option<Refusal> {
    match code {
        ConnectReturnCode::BadUserNamePassword => Some(Refusal::BadCredentials),
        ConnectReturnCode::NotAuthorized => Some(Refusal::NotAuthorized),
        ConnectReturnCode::ClientIdentifierNotValid | ConnectReturnCode::BadClientId => {
            Some(Refusal::ClientIdInvalid)
        }
        ConnectReturnCode::Banned | ConnectReturnCode::BadAuthenticationMethod => {
            Some(Refusal::Banned)
        }
        _ => None,
    }
}

impl AsyncTransport for HostLink {
    type Error = LinkError;

    fn mtu(&self) -> usize {
        self.mtu
    }

    /// Always connected while `keep` holds, push mode otherwise (the next
    /// session's end lets the connection go).
    fn keep_link_up(&mut self, keep: bool) {
        self.mode = if keep {
            Mode::AlwaysConnected
        } else {
            Mode::Push
        };
    }

    async fn power(&mut self, on: bool) -> Result<(), LinkError> {
        if on {
            if self.live.is_some() {
                return Ok(());
            }
            return self.connect().await;
        }
        if self.mode == Mode::AlwaysConnected {
            return Ok(());
        }
        if let Some((client, mut events)) = self.live.take() {
            // A clean DISCONNECT: driven until it is written.
            let _ = client.disconnect().await;
            let _ = tokio::time::timeout(self.config.connect_timeout, async {
                loop {
                    match events.poll().await {
                        Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) | Err(_) => return,
                        Ok(Event::Incoming(Packet::Publish(p))) => self.keep(&p.topic, &p.payload),
                        Ok(_) => {}
                    }
                }
            })
            .await;
        }
        self.state = LinkState::Down;
        Ok(())
    }

    async fn send(&mut self, frame: &[u8]) -> Result<(), LinkError> {
        if frame.len() > self.mtu {
            return Err(LinkError::TooLarge);
        }
        if let LinkState::Refused(r) = self.state {
            return Err(LinkError::Refused(r));
        }
        let Some((client, _)) = self.live.as_ref() else {
            return Err(LinkError::Down);
        };
        let queued = client
            .publish(self.topics.up(), QoS::AtLeastOnce, false, frame.to_vec())
            .await;
        if queued.is_err() {
            self.counters.publish_failures += 1;
            return Err(LinkError::Down);
        }
        // Driven until the PUBLISH is written.
        loop {
            match self.drive().await {
                Ok(Some(Event::Outgoing(rumqttc::Outgoing::Publish(_)))) => {
                    self.counters.published += 1;
                    return Ok(());
                }
                Ok(_) => {}
                Err(e) => {
                    self.counters.publish_failures += 1;
                    return Err(e);
                }
            }
        }
    }

    async fn receive(&mut self, buf: &mut [u8]) -> Result<Option<usize>, LinkError> {
        // What already arrived, without waiting for more.
        while self.live.is_some() {
            match tokio::time::timeout(Duration::ZERO, self.drive()).await {
                Ok(Ok(_)) => {}
                Ok(Err(_)) | Err(_) => break,
            }
        }
        let Some(frame) = self.down.pop_front() else {
            return Ok(None);
        };
        let into = buf.get_mut(..frame.len()).ok_or(LinkError::TooLarge)?;
        into.copy_from_slice(&frame);
        Ok(Some(frame.len()))
    }
}
