//! NATS link for telemark, for Linux edge gateways and devices (std, on
//! [async-nats](https://docs.rs/async-nats) and tokio).
//!
//! A device publishes each sealed frame on `{prefix}.up.{device}` and
//! subscribes to `{prefix}.down.{device}`, where the server answers with
//! the acknowledgement and whatever it has queued (config, commands, a new
//! key). The prefix is `telemark` unless the config says otherwise; the
//! device id is in decimal ([`Subjects`]). The server's end subscribes to
//! `{prefix}.up.*`.
//!
//! Core NATS is at most once and keeps nothing for a subscriber that is
//! away. telemark does not need more: the engine keeps every record until
//! the server acknowledges it, and the server keeps config and commands in
//! its outbox until the device settles them, sending them with each
//! response. So neither JetStream nor a durable consumer is used.
//!
//! # Sessions
//!
//! [`NatsLink`]'s [`power`](telemark_core::transport::AsyncTransport::power) connects when the engine turns the radio on (the
//! servers in order, each within [`NatsConfig::connect_timeout`]),
//! subscribes, and takes the MTU from the server's `max_payload`. When the
//! engine turns it off the link drains and closes, unless the device's
//! config keeps the link up (config key 13, told by `step_async` through
//! [`AsyncTransport::keep_link_up`](telemark_core::transport::AsyncTransport::keep_link_up)): then it stays connected and
//! commands arrive at once, the client reconnecting by itself when a
//! server goes away. [`Counters::connects`] counts connections.
//!
//! A server that cannot be reached is [`LinkError::Down`], transient; one
//! that refuses the credentials is [`LinkError::Refused`], and the link
//! tries again only when the engine next turns the radio on.
//!
//! ```
//! use telemark_core::transport::AsyncTransport;
//! use telemark_nats::{LinkState, NatsConfig, NatsLink};
//!
//! let mut config = NatsConfig::new(0x101, vec!["nats://gateway.local:4222".into()]);
//! config.options = async_nats::ConnectOptions::with_user_and_password(
//!     "boiler-1".into(),
//!     "secret".into(),
//! );
//! let mut link = NatsLink::new(config).unwrap();
//! assert_eq!(link.state(), LinkState::Down);
//! assert_eq!(link.subjects().up(), "telemark.up.257");
//! assert_eq!(link.mtu(), 512);
//! // In the main loop: `step_async(&mut engine, &mut link, now, &mut board)`,
//! // then sleep on the engine's deadline or `link.wait_input()`.
//! ```
#![forbid(unsafe_code)]

mod link;
mod subject;

pub use link::{Counters, LinkError, LinkState, NatsConfig, NatsLink};
pub use subject::Subjects;

// Re-exported for `NatsConfig::options`.
pub use async_nats;
