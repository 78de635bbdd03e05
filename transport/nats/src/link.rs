//! The link: one value the engine steps, with no task to spawn.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::{Client, ConnectErrorKind, ConnectOptions, Event, Subscriber};
use futures_util::{FutureExt, StreamExt};
use telemark_core::transport::AsyncTransport;

use crate::subject::Subjects;

/// How a device or gateway reaches its NATS servers.
#[derive(Clone)]
pub struct NatsConfig {
    /// The device id: it names the subjects and the connection.
    pub device: u64,
    /// Subject prefix.
    pub prefix: String,
    /// Servers (`nats://host:port`, `tls://host:port` or `host:port`),
    /// tried in this order; the client's own reconnection goes through
    /// them too.
    pub servers: Vec<String>,
    /// Credentials, TLS and anything else of async-nats's: a user and
    /// password, a token, a `.creds` file or an nkey, a rustls config
    /// with client certificates. The link sets the name, the timeouts and
    /// the event callback on top.
    pub options: ConnectOptions,
    /// Bound on one attempt to connect to each server.
    pub connect_timeout: Duration,
    /// How often the client pings the server while connected.
    pub ping_interval: Duration,
    /// Largest frame, before the server's `max_payload` lowers it.
    pub mtu: usize,
}

impl NatsConfig {
    /// No credentials, 5 s to connect, a ping every 30 s, frames of up to
    /// 512 bytes.
    pub fn new(device: u64, servers: Vec<String>) -> Self {
        NatsConfig {
            device,
            prefix: "telemark".to_string(),
            servers,
            options: ConnectOptions::new(),
            connect_timeout: Duration::from_secs(5),
            ping_interval: Duration::from_secs(30),
            mtu: 512,
        }
    }
}

/// Where the link stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkState {
    /// Not connected (or the client is reconnecting in the background).
    Down,
    /// Connected and subscribed to the device's downlink subject.
    Up,
    /// The server refused the credentials. Tried again only when the
    /// engine turns the radio on again, never in a loop.
    Refused,
}

/// Why the link did not carry a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkError {
    /// No server could be reached, or the connection was lost: transient;
    /// the engine keeps its records and tries again on its schedule.
    Down,
    /// The server refused the credentials (an authorization violation):
    /// not transient.
    Refused,
    /// A frame larger than the link's MTU.
    TooLarge,
}

impl core::fmt::Display for LinkError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            LinkError::Down => "no NATS server reachable",
            LinkError::Refused => "the NATS server refused the credentials",
            LinkError::TooLarge => "frame larger than the link's MTU",
        })
    }
}

impl std::error::Error for LinkError {}

/// What the link did, since it was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Connections made (the engine asked and a server answered).
    pub connects: u32,
    /// Attempts on which no server answered.
    pub connect_failures: u32,
    /// Connections the server refused for the credentials.
    pub refusals: u32,
    /// Connections lost while up (the client then reconnects by itself).
    pub drops: u32,
    /// Frames published and flushed to the server.
    pub published: u32,
    /// Frames the link could not publish; the engine sends them again.
    pub publish_failures: u32,
    /// Downlinks heard on the device's subject.
    pub received: u32,
    /// Downlinks dropped: the queue to the engine was full, or the frame
    /// larger than the MTU. The server sends them again.
    pub downlinks_dropped: u32,
}

/// Downlinks held for the engine.
const DOWN_QUEUE: usize = 16;

struct Live {
    client: Client,
    down: Subscriber,
}

/// The NATS link: an [`AsyncTransport`] for `step_async` on tokio.
///
/// Core NATS delivers to whoever is subscribed at that moment and keeps
/// nothing, which is all telemark needs: a frame that is lost is sent
/// again because the server did not acknowledge it, and a command the
/// server queued rides on its response to the device's next frame.
pub struct NatsLink {
    config: NatsConfig,
    subjects: Subjects,
    keep_up: bool,
    live: Option<Live>,
    state: LinkState,
    mtu: usize,
    down: VecDeque<Vec<u8>>,
    counters: Counters,
    /// Connection losses, counted by the client's event callback.
    drops: Arc<AtomicU32>,
}

impl NatsLink {
    /// A link, down; `None` if the prefix makes no valid subject.
    pub fn new(config: NatsConfig) -> Option<NatsLink> {
        let subjects = Subjects::new(&config.prefix, config.device)?;
        Some(NatsLink {
            mtu: config.mtu,
            config,
            subjects,
            keep_up: false,
            live: None,
            state: LinkState::Down,
            down: VecDeque::new(),
            counters: Counters::default(),
            drops: Arc::new(AtomicU32::new(0)),
        })
    }

    /// Where the link stands.
    pub fn state(&self) -> LinkState {
        match &self.live {
            Some(live)
                if live.client.connection_state() != async_nats::connection::State::Connected =>
            {
                LinkState::Down
            }
            _ => self.state,
        }
    }

    /// What the link did so far.
    pub fn counters(&self) -> Counters {
        Counters {
            drops: self.drops.load(Ordering::Relaxed),
            ..self.counters
        }
    }

    /// Whether the engine's config keeps the link up between sessions.
    pub fn keeps_link_up(&self) -> bool {
        self.keep_up
    }

    /// The subjects this link uses.
    pub fn subjects(&self) -> &Subjects {
        &self.subjects
    }

    async fn connect(&mut self) -> Result<(), LinkError> {
        let drops = Arc::clone(&self.drops);
        let options = self
            .config
            .options
            .clone()
            .name(format!("telemark-{}", self.config.device))
            .connection_timeout(self.config.connect_timeout)
            .ping_interval(self.config.ping_interval)
            .retain_servers_order()
            .event_callback(move |event| {
                let drops = Arc::clone(&drops);
                async move {
                    if matches!(event, Event::Disconnected) {
                        drops.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        let client = match options.connect(&self.config.servers).await {
            Ok(client) => client,
            Err(e) => {
                return Err(match e.kind() {
                    ConnectErrorKind::AuthorizationViolation | ConnectErrorKind::Authentication => {
                        self.counters.refusals += 1;
                        self.state = LinkState::Refused;
                        LinkError::Refused
                    }
                    _ => {
                        self.counters.connect_failures += 1;
                        self.state = LinkState::Down;
                        LinkError::Down
                    }
                });
            }
        };
        let subscribed = async {
            let down = client
                .subscribe(self.subjects.down().to_string())
                .await
                .ok()?;
            // The server has the subscription once it answers the ping.
            client.flush().await.ok()?;
            Some(down)
        };
        let Some(down) = tokio::time::timeout(self.config.connect_timeout, subscribed)
            .await
            .ok()
            .flatten()
        else {
            self.counters.connect_failures += 1;
            self.state = LinkState::Down;
            return Err(LinkError::Down);
        };
        self.mtu = self.config.mtu.min(client.server_info().max_payload);
        self.counters.connects += 1;
        self.state = LinkState::Up;
        self.live = Some(Live { client, down });
        Ok(())
    }

    fn keep(&mut self, payload: &[u8]) {
        self.counters.received += 1;
        if payload.len() > self.mtu.max(self.config.mtu) || self.down.len() >= DOWN_QUEUE {
            self.counters.downlinks_dropped += 1;
        } else {
            self.down.push_back(payload.to_vec());
        }
    }

    /// Takes what has arrived, without waiting.
    fn take_arrived(&mut self) {
        while let Some(live) = self.live.as_mut() {
            match live.down.next().now_or_never() {
                Some(Some(message)) => self.keep(&message.payload),
                Some(None) => {
                    // The connection closed for good.
                    self.live = None;
                    self.state = LinkState::Down;
                }
                None => return,
            }
        }
    }

    /// Waits until a downlink is there for `receive`; returns at once when
    /// the link is not connected.
    pub async fn wait_input(&mut self) {
        self.take_arrived();
        if !self.down.is_empty() {
            return;
        }
        let Some(live) = self.live.as_mut() else {
            return;
        };
        match live.down.next().await {
            Some(message) => self.keep(&message.payload),
            None => {
                self.live = None;
                self.state = LinkState::Down;
            }
        }
    }
}

impl AsyncTransport for NatsLink {
    type Error = LinkError;

    fn mtu(&self) -> usize {
        self.mtu
    }

    /// Kept connected while `keep` holds; otherwise each session's end
    /// closes the connection.
    fn keep_link_up(&mut self, keep: bool) {
        self.keep_up = keep;
    }

    async fn power(&mut self, on: bool) -> Result<(), LinkError> {
        if on {
            return match self.live {
                Some(_) if self.state() == LinkState::Up => Ok(()),
                // The client is reconnecting by itself.
                Some(_) => Err(LinkError::Down),
                None => self.connect().await,
            };
        }
        if self.keep_up {
            return Ok(());
        }
        self.take_arrived();
        if let Some(live) = self.live.take() {
            // Drain: what is written reaches the server, then the
            // connection closes.
            let _ = tokio::time::timeout(self.config.connect_timeout, live.client.drain()).await;
        }
        self.state = LinkState::Down;
        Ok(())
    }

    async fn send(&mut self, frame: &[u8]) -> Result<(), LinkError> {
        if frame.len() > self.mtu {
            return Err(LinkError::TooLarge);
        }
        if self.state() == LinkState::Refused {
            return Err(LinkError::Refused);
        }
        let Some(live) = self.live.as_ref() else {
            return Err(LinkError::Down);
        };
        if self.state() != LinkState::Up {
            self.counters.publish_failures += 1;
            return Err(LinkError::Down);
        }
        let up = self.subjects.up().to_string();
        let sent = async {
            live.client
                .publish(up, frame.to_vec().into())
                .await
                .map_err(|_| ())?;
            live.client.flush().await.map_err(|_| ())
        };
        match tokio::time::timeout(self.config.connect_timeout, sent).await {
            Ok(Ok(())) => {
                self.counters.published += 1;
                Ok(())
            }
            _ => {
                self.counters.publish_failures += 1;
                Err(LinkError::Down)
            }
        }
    }

    async fn receive(&mut self, buf: &mut [u8]) -> Result<Option<usize>, LinkError> {
        self.take_arrived();
        let Some(frame) = self.down.pop_front() else {
            return Ok(None);
        };
        let Some(into) = buf.get_mut(..frame.len()) else {
            self.counters.downlinks_dropped += 1;
            return Err(LinkError::TooLarge);
        };
        into.copy_from_slice(&frame);
        Ok(Some(frame.len()))
    }
}
