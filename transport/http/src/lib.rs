//! HTTP link for telemark: each sealed frame is one `POST /v1/up`
//! (`application/octet-stream`), and the answer's body is the server's
//! response frame (the acknowledgement, and whatever config or commands it
//! has queued). The push model: the device decides when to talk, and the
//! server never needs to reach it, so a device behind a firewall that lets
//! only HTTP(S) out still gets its commands, in the response to its next
//! frame.
//!
//! - **Device side** ([`HttpLink`]): `no_std`, no alloc, on reqwless's
//!   request writer and response parser over any embedded-nal-async
//!   [`TcpConnect`](embedded_nal_async::TcpConnect) (embassy-net's
//!   `TcpClient`). One connection per session, kept alive between its
//!   posts.
//! - **Host side** (`host::HostLink`, feature `host`): reqwest and tokio,
//!   TLS and client certificates through rustls.
//!
//! What each answer means ([`Outcome`]):
//!
//! | status | meaning | the link says |
//! | --- | --- | --- |
//! | 200 | committed; the body is the response frame | `Ok` |
//! | 429, 503 | wait `Retry-After` seconds (a minute if it gives none) | [`LinkError::Busy`], and `retry_after` holds the engine off |
//! | 401, 403 | this device is not welcome | [`LinkError::Refused`], not transient |
//! | other 4xx | this frame is refused | [`LinkError::Rejected`] |
//! | anything else, or no answer | transient | [`LinkError::Down`] |
//!
//! A device's request is the request line and three headers (`Host`,
//! `Content-Type`, `Content-Length`): no cookies, no user agent, no
//! token, as the frame is sealed with the device's key. The exchange is
//! in `docs/protocol.md`.
//!
//! ```
//! use core::net::SocketAddr;
//! use telemark_core::transport::AsyncTransport;
//! use telemark_http::{Config, HttpLink};
//! # struct Tcp;
//! # impl embedded_nal_async::TcpConnect for Tcp {
//! #     type Error = std::io::Error;
//! #     type Connection<'a> = embedded_io_adapters::tokio_1::FromTokio<tokio::net::TcpStream>;
//! #     async fn connect<'a>(&'a self, remote: SocketAddr) -> Result<Self::Connection<'a>, Self::Error> {
//! #         Ok(embedded_io_adapters::tokio_1::FromTokio::new(tokio::net::TcpStream::connect(remote).await?))
//! #     }
//! # }
//! # let tcp = Tcp;
//!
//! let servers = ["192.168.1.2:8080".parse::<SocketAddr>().unwrap()];
//! // Status line and headers of one answer, and the response frame.
//! let mut buf = [0u8; 768];
//! let link = HttpLink::new(&tcp, Config::new("telemark.local", &servers), &mut buf);
//! assert_eq!(link.mtu(), 256);
//! // In the main loop: `step_async(&mut engine, &mut link, now, &mut board)`.
//! ```
#![no_std]
#![forbid(unsafe_code)]

pub mod exchange;
#[cfg(feature = "host")]
pub mod host;
mod link;

pub use exchange::Outcome;
pub use link::{Config, Counters, HttpLink, LinkError};
