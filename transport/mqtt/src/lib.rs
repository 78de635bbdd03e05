//! MQTT 5 link for telemark devices: `no_std`, no alloc, over any
//! [`embedded_io_async`] byte stream (a TCP socket of embassy-net or
//! smoltcp, a TLS session, a tokio socket behind an adapter).
//!
//! MQTT is only the pipe. A frame is published at QoS 1 on
//! `{prefix}/v1/{device}/up`; the server's response (its end-to-end
//! acknowledgement, config, commands) arrives on `{prefix}/v1/{device}/down`.
//! A PUBACK is not an acknowledgement: the engine frees a record only when
//! the server's response says it is stored, so a broker that loses a
//! message, restarts or drops a session loses nothing end to end.
//!
//! # Two halves
//!
//! [`new`] splits the link, the way embassy-net splits a network stack:
//!
//! - the [`Runner`] owns the MQTT session and the socket; run it in its own
//!   task. It dials the brokers in turn, resumes the persistent session
//!   (clean start off, a session expiry) or subscribes again when the broker
//!   reports none, publishes the engine's frames and queues what arrives;
//! - the [`Link`] is the engine's [`AsyncTransport`]: `power(true)` asks for
//!   the connection and waits for the runner's answer (up, down, or refused
//!   credentials: [`LinkError::Refused`], which the engine's backoff retries
//!   only at its next session, never in a loop).
//!
//! In [`Mode::Push`] the runner connects when the engine turns the radio on
//! and disconnects cleanly when it turns it off; what the server sends
//! meanwhile waits in the broker's session. In [`Mode::AlwaysConnected`] the
//! connection stays up and [`Link::wait_input`] wakes the main loop when a
//! command arrives. The device config chooses: `UplinkConfig::keep_link_up`
//! (config key 13, which the server can change), told to the link by
//! `step_async` at every step ([`AsyncTransport::keep_link_up`]).
//! [`Counters::connects`] counts sessions.
//!
//! The link's MTU is `MTU`, or less once a broker's CONNACK sets a Maximum
//! Packet Size that leaves less room after the PUBLISH header and topic
//! ([`connack`]); `step_async` tells the engine at each call.
//!
//! # Why minimq
//!
//! The client is [minimq](https://docs.rs/minimq) 0.13: MQTT 5, no alloc,
//! fixed caller-owned buffers, and in-flight QoS 1 state kept across
//! reconnects and replayed inside the client when the broker resumes the
//! session. rust-mqtt 0.6 was the other candidate: without `alloc` its
//! buffers come from a bump allocator whose reset is `unsafe`, and it
//! leaves replaying in-flight publishes to its user; this crate forbids
//! `unsafe` and must run for years without a heap.
//!
//! Measured on Cortex-M4F (opt-level "s", fat LTO) by the same session
//! through each (connect with a persistent session, subscribe, publish
//! 256 bytes at QoS 1, one inbound publish, disconnect; `benches/mqtt-clients`,
//! run by `python3 scripts/footprint.py`):
//!
//! | client | flash | session state |
//! |---|---:|---:|
//! | minimq 0.13 | 21,660 B | 2,048 B |
//! | rust-mqtt 0.6 | 48,300 B (2.23×) | 1,876 B |
//!
//! Both with 960 bytes of packet buffers. rust-mqtt's state is a floor: the
//! replay it leaves to its user is not in it.
//!
//! # Buffers
//!
//! `rx` holds one inbound packet: a downlink of `MTU` bytes with its topic
//! and header ([`PUBLISH_OVERHEAD`]). `tx` holds the publish in flight and
//! the CONNECT; [`new`] asks for two packets' worth.
//!
//! ```
//! use core::net::SocketAddr;
//! use embassy_sync::blocking_mutex::raw::NoopRawMutex;
//! use telemark_core::transport::AsyncTransport;
//! use telemark_mqtt::{Config, LinkState, State};
//!
//! const MTU: usize = 256;
//! let state = State::<NoopRawMutex, MTU>::new();
//! let brokers: [SocketAddr; 1] = ["10.0.2.2:1883".parse().unwrap()];
//! let (mut rx, mut tx) = ([0u8; 384], [0u8; 768]);
//! let (_runner, link) =
//!     telemark_mqtt::new(&state, Config::new(0x101, &brokers), &mut rx, &mut tx).unwrap();
//! assert_eq!(link.mtu(), MTU);
//! assert_eq!(link.state(), LinkState::Down);
//! // On the device: spawn a task that runs `runner.run(&mut tcp).await`,
//! // and call `step_async(&mut engine, &mut link, now, &mut board)`.
//! ```
#![no_std]

pub mod connack;
#[cfg(feature = "embassy-net")]
pub mod embassy_net;
#[cfg(feature = "host")]
pub mod host;
mod link;
mod runner;
mod topic;

pub use link::{Counters, Frame, Link, LinkError, LinkState, Refusal, State};
pub use runner::{new, Config, Connect, Mode, Runner, SetupError, PUBLISH_OVERHEAD};
pub use topic::{Topics, MAX_TOPIC};

#[cfg(doc)]
use telemark_core::transport::AsyncTransport;
