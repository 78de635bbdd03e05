#![doc = include_str!("../README.md")]

use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroU16;
use std::time::Duration;

use rmqtt::context::ServerContext;
use rmqtt::net::Builder;
use rmqtt::server::MqttServer;

mod retained;

/// How the broker listens and what it keeps.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Where it listens (port 0 picks a free one; see [`Broker::addr`]).
    pub listen: SocketAddr,
    /// The largest packet either way, announced in the CONNACK.
    pub max_packet_size: u32,
    /// The longest a session (and what is queued for it) outlives its
    /// connection, whatever the client asks.
    pub max_session_expiry: Duration,
    /// Messages queued for one offline session; past it the oldest go.
    pub max_queued: usize,
    /// QoS 1 messages in flight to one client.
    pub max_inflight: NonZeroU16,
}

impl Settings {
    /// Listening on `listen`: packets up to 64 KiB, sessions kept up to 30
    /// days with up to 1000 messages queued, 16 in flight.
    pub fn new(listen: SocketAddr) -> Self {
        Settings {
            listen,
            max_packet_size: 64 * 1024,
            max_session_expiry: Duration::from_secs(30 * 24 * 3600),
            max_queued: 1000,
            max_inflight: NonZeroU16::new(16).unwrap_or(NonZeroU16::MIN),
        }
    }
}

/// Why the broker did not start.
#[derive(Debug)]
pub enum Error {
    /// Its runtime could not start.
    Runtime(std::io::Error),
    /// It could not listen on its address.
    Listen(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Runtime(e) => write!(f, "broker runtime: {e}"),
            Error::Listen(e) => write!(f, "broker listener: {e}"),
        }
    }
}

impl std::error::Error for Error {}

/// A running broker. Dropping it stops it.
pub struct Broker {
    addr: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Broker {
    /// Starts a broker with `settings` on a runtime of its own (two
    /// worker threads), and returns once it listens. It may be called
    /// from inside another tokio runtime.
    pub fn start(settings: &Settings) -> Result<Broker, Error> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("telemark-mqtt-broker")
            .enable_all()
            .build()
            .map_err(Error::Runtime)?;
        let listen = |e: rmqtt::Error| Error::Listen(e.to_string());
        let listener = {
            // Binding needs the broker's reactor; entering it (rather than
            // blocking on it) works from inside another runtime too.
            let _entered = runtime.enter();
            Builder::new()
                .name("mqtt/tcp")
                .laddr(settings.listen)
                .nodelay(true)
                .max_packet_size(settings.max_packet_size)
                .max_session_expiry_interval(settings.max_session_expiry)
                // Queued downlinks live as long as their session: a device
                // that sleeps for hours still gets its command.
                .message_expiry_interval(settings.max_session_expiry)
                .max_mqueue_len(settings.max_queued)
                .max_inflight(settings.max_inflight)
                .reuseaddr(Some(true))
                .bind()
                .and_then(|l| l.tcp())
        };
        let bound = listener.and_then(|l| Ok((l.local_addr()?, l)));
        let (addr, listener) = match bound {
            Ok(bound) => bound,
            Err(e) => {
                // Not dropped: dropping a runtime blocks, which another
                // runtime's task may not.
                runtime.shutdown_background();
                return Err(listen(e));
            }
        };
        runtime.spawn(async move {
            let scx = ServerContext::new().build().await;
            *scx.extends.retain_mut().await = Box::new(retained::Retained::new());
            let server = MqttServer::new(scx).listener(listener).build();
            if let Err(e) = server.run().await {
                eprintln!("telemark-mqtt-broker: {e}");
            }
        });
        Ok(Broker {
            addr,
            runtime: Some(runtime),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the broker: every connection ends and every session with its
    /// queue is gone, as when a broker process restarts with no store.
    /// Its threads finish in the background, within moments; the address
    /// may take as long to be free again.
    pub fn stop(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.shut_down();
    }
}
