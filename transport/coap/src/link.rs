//! The device side: `no_std`, no alloc, over any embedded-nal-async
//! [`ConnectedUdp`] socket.

use core::fmt;

use embassy_time::{with_timeout, Duration as Timeout, Instant as Clock};
use embedded_nal_async::ConnectedUdp;
use telemark_core::time::Duration;
use telemark_core::transport::{AsyncTransport, MAX_DOWNLINK};

use crate::message::{option, Code, Message, MessageError, Type, Writer};

/// The path frames go to: one Uri-Path option, `up`.
pub const PATH: &str = "up";

/// The wait when a 4.29 or 5.03 carries no Max-Age: CoAP's own default
/// Max-Age, a minute.
pub const DEFAULT_MAX_AGE_S: u32 = 60;

/// The longest wait honoured: a day.
pub const MAX_WAIT_S: u32 = 86_400;

/// Why the link did not carry a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum LinkError {
    /// No answer in time, the socket failed, or the server failed (5.xx
    /// other than 5.03): transient; the engine sends again.
    Down,
    /// 4.29 or 5.03: the server asked for this many seconds (Max-Age),
    /// which the engine honours through `retry_after`.
    Busy {
        /// How long.
        retry_after_s: u32,
    },
    /// 4.01 or 4.03: the server will not take this device's frames.
    Refused {
        /// The code.
        code: Code,
    },
    /// Another 4.xx: the server refused this frame.
    Rejected {
        /// The code.
        code: Code,
    },
    /// A frame larger than the MTU, or a request the buffer cannot hold.
    TooLarge,
}

impl fmt::Display for LinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkError::Down => f.write_str("no CoAP answer"),
            LinkError::Busy { retry_after_s } => {
                write!(f, "the server is busy: retry after {retry_after_s} s")
            }
            LinkError::Refused { code } => write!(f, "the server refused this device ({code})"),
            LinkError::Rejected { code } => write!(f, "the server refused the frame ({code})"),
            LinkError::TooLarge => f.write_str("frame too large"),
        }
    }
}

impl core::error::Error for LinkError {}

/// What the link did, since it was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Counters {
    /// Requests sent, one per frame.
    pub requests: u32,
    /// Answered with 2.xx.
    pub answered: u32,
    /// Answered 4.29 or 5.03.
    pub busy: u32,
    /// Answered 4.01 or 4.03.
    pub refused: u32,
    /// Answered with another 4.xx.
    pub rejected: u32,
    /// No answer in time, a socket error, or another 5.xx.
    pub failed: u32,
    /// Datagrams that were no answer to the request in flight (another
    /// token, a late answer, no CoAP at all): dropped.
    pub stray: u32,
    /// Responses larger than the engine takes, dropped.
    pub responses_dropped: u32,
    /// Bytes sent and received in CoAP messages (headers, tokens,
    /// options and payloads; not UDP or IP).
    pub bytes_out: u64,
    /// See `bytes_out`.
    pub bytes_in: u64,
}

/// How a device talks to its CoAP server.
#[derive(Clone, Copy, Debug)]
pub struct Config<'a> {
    /// The Uri-Path, segments separated by `/`.
    pub path: &'a str,
    /// The method: POST, or PUT for a server that takes only that.
    pub method: Code,
    /// How long to wait for the answer to a request.
    pub timeout: Timeout,
    /// Largest frame.
    pub mtu: usize,
}

impl Default for Config<'static> {
    fn default() -> Self {
        Config::new()
    }
}

impl Config<'static> {
    /// POST to [`PATH`], 5 s for an answer, frames of up to 256 bytes.
    pub fn new() -> Self {
        Config {
            path: PATH,
            method: Code::POST,
            timeout: Timeout::from_secs(5),
            mtu: 256,
        }
    }
}

/// The device's CoAP link: an [`AsyncTransport`] that sends each frame as
/// one non-confirmable request and waits for the matching response.
///
/// The engine's own acknowledgement is end to end, so CoAP's
/// retransmission is not used (no CON): a frame or answer lost on the way
/// is sent again when the engine's timeout runs out, and the server, which
/// deduplicates records, answers as for the first. A confirmable response
/// (which some servers send) is acknowledged with an empty ACK.
pub struct CoapLink<'a, U: ConnectedUdp> {
    udp: U,
    config: Config<'a>,
    buf: &'a mut [u8],
    response: heapless::Vec<u8, MAX_DOWNLINK>,
    has_response: bool,
    retry_after: Option<Duration>,
    message_id: u16,
    counters: Counters,
}

impl<'a, U: ConnectedUdp> CoapLink<'a, U> {
    /// A link over `udp`, connected to the server. `buf` holds one
    /// datagram; `seed` starts the message ids and tokens, and should
    /// differ from one boot to the next (the boot's epoch, a random
    /// number).
    pub fn new(udp: U, config: Config<'a>, buf: &'a mut [u8], seed: u16) -> Self {
        CoapLink {
            udp,
            config,
            buf,
            response: heapless::Vec::new(),
            has_response: false,
            retry_after: None,
            message_id: seed,
            counters: Counters::default(),
        }
    }

    /// What the link did so far.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    fn request(&mut self, frame: &[u8], token: &[u8]) -> Result<usize, MessageError> {
        let mut w = Writer::new(
            self.buf,
            Type::Non,
            self.config.method,
            self.message_id,
            token,
        )?;
        for segment in self.config.path.split('/').filter(|s| !s.is_empty()) {
            w.option(option::URI_PATH, segment.as_bytes())?;
        }
        w.payload(frame)
    }

    /// Waits for the answer carrying `token`; what it means.
    async fn answer(&mut self, token: [u8; 2]) -> Result<(), LinkError> {
        let deadline = Clock::now() + self.config.timeout;
        loop {
            let left = deadline.saturating_duration_since(Clock::now());
            let n = match with_timeout(left, self.udp.receive_into(self.buf)).await {
                Ok(Ok(n)) => n,
                Ok(Err(_)) | Err(_) => {
                    self.counters.failed += 1;
                    return Err(LinkError::Down);
                }
            };
            self.counters.bytes_in += n as u64;
            let Some(Ok(message)) = self.buf.get(..n).map(Message::parse) else {
                self.counters.stray += 1;
                continue;
            };
            if message.token != token || message.code.class() == 0 {
                self.counters.stray += 1;
                continue;
            }
            let (ty, message_id, code) = (message.ty, message.message_id, message.code);
            let max_age = message.max_age();
            let kept = if code.class() == 2 {
                self.response.clear();
                self.response.extend_from_slice(message.payload).is_ok()
            } else {
                true
            };
            if ty == Type::Con {
                // The server asked for an acknowledgement: an empty ACK.
                let mut ack = [0u8; 4];
                if let Ok(len) = Writer::new(&mut ack, Type::Ack, Code::EMPTY, message_id, &[])
                    .and_then(|w| w.payload(&[]))
                {
                    let _ = self.udp.send(ack.get(..len).unwrap_or_default()).await;
                    self.counters.bytes_out += len as u64;
                }
            }
            return self.outcome(code, max_age, kept);
        }
    }

    fn outcome(&mut self, code: Code, max_age: Option<u32>, kept: bool) -> Result<(), LinkError> {
        match (code.class(), code) {
            (2, _) if !kept => {
                self.counters.responses_dropped += 1;
                Err(LinkError::TooLarge)
            }
            (2, _) => {
                self.counters.answered += 1;
                self.has_response = !self.response.is_empty();
                Ok(())
            }
            (_, Code::TOO_MANY_REQUESTS | Code::SERVICE_UNAVAILABLE) => {
                self.counters.busy += 1;
                let retry_after_s = max_age.unwrap_or(DEFAULT_MAX_AGE_S).min(MAX_WAIT_S);
                self.retry_after = Some(Duration::from_secs(u64::from(retry_after_s)));
                Err(LinkError::Busy { retry_after_s })
            }
            (_, Code::UNAUTHORIZED | Code::FORBIDDEN) => {
                self.counters.refused += 1;
                Err(LinkError::Refused { code })
            }
            (4, _) => {
                self.counters.rejected += 1;
                Err(LinkError::Rejected { code })
            }
            _ => {
                self.counters.failed += 1;
                Err(LinkError::Down)
            }
        }
    }
}

impl<'a, U: ConnectedUdp> AsyncTransport for CoapLink<'a, U> {
    type Error = LinkError;

    fn mtu(&self) -> usize {
        self.config.mtu
    }

    /// Nothing to do: UDP holds no connection.
    async fn power(&mut self, _on: bool) -> Result<(), LinkError> {
        Ok(())
    }

    async fn send(&mut self, frame: &[u8]) -> Result<(), LinkError> {
        if frame.len() > self.config.mtu {
            return Err(LinkError::TooLarge);
        }
        self.message_id = self.message_id.wrapping_add(1);
        let token = self.message_id.wrapping_mul(0x9e37).to_be_bytes();
        let len = self
            .request(frame, &token)
            .map_err(|_| LinkError::TooLarge)?;
        self.counters.requests += 1;
        let sent = self.udp.send(self.buf.get(..len).unwrap_or_default()).await;
        if sent.is_err() {
            self.counters.failed += 1;
            return Err(LinkError::Down);
        }
        self.counters.bytes_out += len as u64;
        self.answer(token).await
    }

    async fn receive(&mut self, buf: &mut [u8]) -> Result<Option<usize>, LinkError> {
        if !self.has_response {
            return Ok(None);
        }
        self.has_response = false;
        let n = self.response.len();
        let into = buf.get_mut(..n).ok_or(LinkError::TooLarge)?;
        into.copy_from_slice(&self.response);
        Ok(Some(n))
    }

    fn retry_after(&mut self) -> Option<Duration> {
        self.retry_after.take()
    }
}
