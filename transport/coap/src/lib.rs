//! CoAP link for telemark, for cellular NB-IoT and LTE-M devices that pay
//! for every byte: each sealed frame is one non-confirmable CoAP request
//! (`POST /up`, RFC 7252) over UDP, and the server's response frame comes
//! back in a non-confirmable 2.04 with the same token.
//!
//! - **Device side** ([`CoapLink`]): `no_std`, no alloc, over any
//!   embedded-nal-async [`ConnectedUdp`](embedded_nal_async::ConnectedUdp)
//!   socket, with a message codec of its own ([`message`]: header,
//!   token, options, payload; a few hundred bytes of code).
//! - **Host side** (`host::Udp`, feature `host`): a tokio socket for the
//!   same link on Linux.
//! - **Server end** ([`server`]): sans-IO, for telemark-cloud's listener.
//!
//! # Retransmission: the engine's, not CoAP's
//!
//! telemark acknowledges end to end, so a request is NON: CoAP's CON
//! retransmission stacked under the engine's would resend what the engine
//! is about to resend. A lost request or answer costs one resend when the
//! engine's timeout runs out; the server deduplicates the records. An
//! uplink carries 10 bytes of CoAP (4 header, 2 token, 3 for the Uri-Path
//! `up`, 1 payload marker) and the answer 7 (no options): no
//! Content-Format, as the path says what the payload is.
//!
//! A 4.29 or 5.03 with Max-Age holds the engine off that many seconds
//! (CoAP's default, 60, without one) through `retry_after`; 4.01 and 4.03
//! are their own error.
//!
//! # No block-wise transfer
//!
//! Frames are at most the engine's MTU (256 bytes by default, the config
//! may raise it to 1,024), well under an NB-IoT path MTU (about 1,280 for
//! IPv6 and more for IPv4), so one datagram carries each frame and RFC 7959
//! block-wise transfer is not needed.
//!
//! ```
//! use telemark_coap::{CoapLink, Config};
//! use telemark_core::transport::AsyncTransport;
//! # struct Udp;
//! # impl embedded_nal_async::ConnectedUdp for Udp {
//! #     type Error = embedded_io_async::ErrorKind;
//! #     async fn send(&mut self, _: &[u8]) -> Result<(), Self::Error> { Ok(()) }
//! #     async fn receive_into(&mut self, _: &mut [u8]) -> Result<usize, Self::Error> { Ok(0) }
//! # }
//! # let udp = Udp;
//!
//! // One datagram: the frame and its CoAP header.
//! let mut buf = [0u8; 300];
//! let link = CoapLink::new(udp, Config::new(), &mut buf, 0x5eed);
//! assert_eq!(link.mtu(), 256);
//! ```
#![no_std]
#![forbid(unsafe_code)]

#[cfg(feature = "host")]
pub mod host;
mod link;
pub mod message;
pub mod server;

pub use link::{CoapLink, Config, Counters, LinkError, DEFAULT_MAX_AGE_S, MAX_WAIT_S, PATH};
