//! The network's half of the link: it owns the MQTT session, dials the
//! brokers, publishes the engine's frames and queues what arrives.

use core::cell::Cell;
use core::fmt;
use core::net::SocketAddr;

use embassy_futures::select::{select3, Either3};
use embassy_sync::blocking_mutex::raw::RawMutex;
use embassy_time::{with_timeout, Duration};
use embedded_io_async::{Read, Write};
use minimq::{
    Buffers, ConfigBuilder, ConfigError, ConnectEvent, Connection, Error, PeerError, Publication,
    QoS, Session, SubscriptionOptions, TopicFilter,
};

use crate::connack::Watched;
use crate::link::{Frame, Link, LinkState, Refusal, State};
use crate::topic::Topics;
#[cfg(doc)]
use telemark_core::transport::AsyncTransport;

/// Opens a byte stream to a broker: a TCP socket of embassy-net or smoltcp
/// on a device, a tokio `TcpStream` behind an adapter on a host. A TLS
/// session over that socket is a stream too.
#[allow(async_fn_in_trait)] // single-threaded embedded executors need no Send bound
pub trait Connect {
    /// The open stream.
    type Io<'a>: Read + Write
    where
        Self: 'a;
    /// Why a stream could not be opened.
    type Error: fmt::Debug;

    /// Opens a stream to `endpoint`.
    async fn connect(&mut self, endpoint: SocketAddr) -> Result<Self::Io<'_>, Self::Error>;
}

/// When the device holds its connection: the engine's
/// `UplinkConfig::keep_link_up` chooses it (config key 13, so the server
/// can change it), through [`AsyncTransport::keep_link_up`] at every step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Mode {
    /// Connect when the engine turns the radio on, disconnect cleanly when
    /// it turns it off. A downlink queued meanwhile waits in the broker's
    /// persistent session and arrives at the next connect.
    Push,
    /// Stay connected: commands arrive at once. Turning the radio off
    /// leaves the connection up; a lost one is dialled again when the
    /// engine next turns the radio on.
    AlwaysConnected,
}

/// How the device reaches its brokers.
#[derive(Clone, Copy, Debug)]
pub struct Config<'a> {
    /// The device id: it names the topics and the MQTT client id.
    pub device: u64,
    /// Topic prefix (`telemark` gives `telemark/v1/{device}/up`).
    pub prefix: &'a str,
    /// Brokers, tried in turn from the last one that answered.
    pub endpoints: &'a [SocketAddr],
    /// User name and password, if the broker asks for them.
    pub auth: Option<(&'a str, &'a [u8])>,
    /// MQTT keepalive.
    pub keepalive_secs: u16,
    /// How long the broker keeps the session (and the downlinks queued for
    /// it) after the device goes: longer than the device sleeps.
    pub session_expiry_secs: u32,
    /// Bound on dialling one endpoint and its CONNACK.
    pub connect_timeout: Duration,
}

impl<'a> Config<'a> {
    /// Keepalive 60 s, sessions kept for a week, 10 s to connect.
    pub const fn new(device: u64, endpoints: &'a [SocketAddr]) -> Self {
        Config {
            device,
            prefix: "telemark",
            endpoints,
            auth: None,
            keepalive_secs: 60,
            session_expiry_secs: 7 * 24 * 3600,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// Why the link could not be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum SetupError {
    /// The prefix makes a topic longer than [`Topics`] holds.
    TopicTooLong,
    /// The buffers cannot hold a frame of `MTU` with its MQTT header.
    BuffersTooSmall,
    /// minimq refused the session settings.
    Session(ConfigError),
}

/// Bytes an MQTT PUBLISH adds to a frame besides its topic: fixed header
/// (5), topic length (2), packet id (2), properties length (1).
pub const PUBLISH_OVERHEAD: usize = 10;

/// The two halves of an MQTT link over `state`, with session buffers `rx`
/// (one inbound packet) and `tx` (the outbound packets in flight, and the
/// CONNECT): run the [`Runner`] in its own task and give the [`Link`] to
/// the engine.
pub fn new<'a, M: RawMutex, const MTU: usize>(
    state: &'a State<M, MTU>,
    config: Config<'a>,
    rx: &'a mut [u8],
    tx: &'a mut [u8],
) -> Result<(Runner<'a, M, MTU>, Link<'a, M, MTU>), SetupError> {
    let topics = Topics::new(config.prefix, config.device).ok_or(SetupError::TopicTooLong)?;
    let packet = MTU + PUBLISH_OVERHEAD + topics.up().len().max(topics.down().len());
    if rx.len() < packet || tx.len() < 2 * packet {
        return Err(SetupError::BuffersTooSmall);
    }
    let mut id = heapless::String::<32>::new();
    fmt::write(&mut id, format_args!("telemark-{}", config.device))
        .map_err(|_| SetupError::TopicTooLong)?;
    let mut builder = ConfigBuilder::new(Buffers::new(rx, tx))
        .client_id(&id)
        .map_err(SetupError::Session)?
        .keepalive_interval(config.keepalive_secs)
        .session_expiry_interval(config.session_expiry_secs);
    if let Some((user, password)) = config.auth {
        builder = builder.auth(user, password).map_err(SetupError::Session)?;
    }
    let runner = Runner {
        state,
        session: Session::new(builder),
        topics,
        config,
        next_endpoint: 0,
    };
    state.update(|s| s.mtu = MTU);
    Ok((runner, Link { state }))
}

/// The network task: run [`Runner::run`] beside the engine.
pub struct Runner<'a, M: RawMutex, const MTU: usize> {
    state: &'a State<M, MTU>,
    session: Session<'a>,
    topics: Topics,
    config: Config<'a>,
    next_endpoint: usize,
}

/// How a connection ended.
enum Ended {
    /// The engine turned the radio off (push mode): disconnected cleanly.
    Off,
    /// The connection was lost.
    Lost,
}

impl<M: RawMutex, const MTU: usize> Runner<'_, M, MTU> {
    /// Serves the link for ever: waits for the engine to want the radio,
    /// connects, then publishes and receives until the radio goes off or
    /// the connection is lost.
    pub async fn run<C: Connect>(&mut self, connector: &mut C) -> ! {
        loop {
            self.wait_wanted().await;
            self.state.set_link(LinkState::Connecting);
            let ended = self.connect_and_serve(connector).await;
            // A frame the runner did not take goes with the connection:
            // the engine resends it on its own schedule.
            if self.state.up.try_receive().is_ok() {
                self.state.count(|c| c.publish_failures += 1);
            }
            match ended {
                Ok(Ended::Off) => self.state.set_link(LinkState::Down),
                Ok(Ended::Lost) => {
                    self.state.count(|c| c.drops += 1);
                    self.state.set_link(LinkState::Down);
                    // Not wanted again until the engine says so.
                    self.state.update(|s| s.want = false);
                }
                Err(link) => {
                    self.state.set_link(link);
                    self.state.answer();
                    self.state.update(|s| s.want = false);
                }
            }
        }
    }

    async fn wait_wanted(&self) {
        loop {
            let s = self.state.get();
            if s.want {
                return;
            }
            if s.answered != s.request {
                // A power-on came and went before the runner saw it.
                self.state.answer();
            }
            self.state.to_runner.wait().await;
        }
    }

    /// Tries each endpoint once, from the last that answered; serves the
    /// first that connects. `Err` is the state the link is left in.
    async fn connect_and_serve<C: Connect>(
        &mut self,
        connector: &mut C,
    ) -> Result<Ended, LinkState> {
        let endpoints = self.config.endpoints;
        for k in 0..endpoints.len() {
            let i = (self.next_endpoint + k) % endpoints.len();
            let Some(&endpoint) = endpoints.get(i) else {
                continue;
            };
            let timeout = self.config.connect_timeout;
            let Ok(Ok(io)) = with_timeout(timeout, connector.connect(endpoint)).await else {
                self.state.count(|c| c.connect_failures += 1);
                continue;
            };
            let broker_max = Cell::new(None);
            let io = Watched::new(io, &broker_max);
            let connected = with_timeout(timeout, self.session.connect(io)).await;
            let mut conn = match connected {
                Ok(Ok(conn)) => conn,
                Ok(Err(Error::Peer(PeerError::Rejected(code)))) => {
                    if let Some(refusal) = Refusal::from_reason(u8::from(&code)) {
                        self.state.count(|c| c.refusals += 1);
                        return Err(LinkState::Refused(refusal));
                    }
                    self.state.count(|c| c.connect_failures += 1);
                    continue;
                }
                Ok(Err(_)) | Err(_) => {
                    self.state.count(|c| c.connect_failures += 1);
                    continue;
                }
            };
            self.next_endpoint = i;
            // The MTU follows the broker's Maximum Packet Size.
            let overhead = PUBLISH_OVERHEAD + self.topics.up().len();
            let mtu = broker_max
                .get()
                .map_or(MTU, |max| (max as usize).saturating_sub(overhead).min(MTU));
            self.state.update(|s| s.mtu = mtu);
            let resumed = conn.connect_event() == ConnectEvent::Reconnected;
            if !resumed {
                // A fresh session: the broker knows no subscription.
                let filter = TopicFilter::new(self.topics.down())
                    .options(SubscriptionOptions::default().maximum_qos(QoS::AtLeastOnce));
                // Up means subscribed: the SUBACK is awaited, so nothing
                // the server sends after the answer misses the device.
                let subscribed = with_timeout(self.config.connect_timeout, async {
                    let op = conn.subscribe(&[filter], &[]).await.map_err(|_| ())?;
                    while !conn.is_complete(&op) {
                        if conn.is_invalidated(&op) {
                            return Err(());
                        }
                        if let Some(publish) = conn.poll().await.map_err(|_| ())? {
                            deliver(self.state, &self.topics, publish.topic(), publish.payload());
                        }
                    }
                    Ok(())
                })
                .await;
                if !matches!(subscribed, Ok(Ok(()))) {
                    self.state.count(|c| c.connect_failures += 1);
                    continue;
                }
            }
            self.state.count(|c| {
                c.connects += 1;
                c.resumed += u32::from(resumed);
            });
            self.state.set_link(LinkState::Up);
            self.state.answer();
            return Ok(serve(self.state, &self.topics, &mut conn).await);
        }
        Err(LinkState::Down)
    }
}

/// Publishes and receives on a live connection until the radio goes off
/// (push mode) or the connection is lost.
async fn serve<M: RawMutex, const MTU: usize, IO: Read + Write>(
    state: &State<M, MTU>,
    topics: &Topics,
    conn: &mut Connection<'_, '_, IO>,
) -> Ended {
    loop {
        let s = state.get();
        if !s.want && s.mode == Mode::Push {
            let _ = conn.disconnect().await;
            return Ended::Off;
        }
        if s.answered != s.request {
            // Powered on again while up (always connected).
            state.answer();
        }
        let inbound = async {
            match conn.poll().await {
                Ok(Some(publish)) => {
                    deliver(state, topics, publish.topic(), publish.payload());
                    Ok(())
                }
                Ok(None) => Ok(()),
                Err(e) => Err(e),
            }
        };
        match select3(state.up.receive(), inbound, state.to_runner.wait()).await {
            Either3::First(frame) => {
                let publication = Publication::bytes(topics.up(), &frame).qos(QoS::AtLeastOnce);
                match conn.publish(publication).await {
                    Ok(_) => state.count(|c| c.published += 1),
                    Err(_) => {
                        state.count(|c| c.publish_failures += 1);
                        if !conn.is_connected() {
                            return Ended::Lost;
                        }
                    }
                }
            }
            Either3::Second(Ok(())) | Either3::Third(()) => {}
            Either3::Second(Err(_)) => return Ended::Lost,
        }
    }
}

/// Queues a publish on the device's downlink topic for the engine; one on
/// another topic, larger than the MTU, or past a full queue is dropped.
/// Each is counted.
fn deliver<M: RawMutex, const MTU: usize>(
    state: &State<M, MTU>,
    topics: &Topics,
    topic: &str,
    payload: &[u8],
) {
    match downlink::<MTU>(topics, topic, payload) {
        Some(frame) => {
            state.count(|c| c.received += 1);
            if state.down.try_send(frame).is_err() {
                state.count(|c| c.downlinks_dropped += 1);
            }
        }
        None => state.count(|c| c.downlinks_dropped += 1),
    }
}

/// A publish on the device's downlink topic, copied out; `None` for
/// another topic or a frame larger than the MTU.
fn downlink<const MTU: usize>(topics: &Topics, topic: &str, payload: &[u8]) -> Option<Frame<MTU>> {
    if topic != topics.down() {
        return None;
    }
    Frame::from_slice(payload).ok()
}
