//! The device side: `no_std`, no alloc, over any embedded-nal-async
//! [`TcpConnect`] (embassy-net's `TcpClient` on a device, a tokio socket
//! behind an adapter on a host).

use core::fmt;
use core::net::SocketAddr;

use embassy_time::{with_timeout, Duration as Timeout};
use embedded_io_async::Write;
use embedded_nal_async::TcpConnect;
use reqwless::client::HttpConnection;
use reqwless::headers::ContentType;
use reqwless::request::{Method, Request, RequestBuilder};
use reqwless::response::Response;
use telemark_core::time::Duration;
use telemark_core::transport::{AsyncTransport, MAX_DOWNLINK};

use crate::exchange::{Outcome, PATH};

/// Why the link did not carry a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum LinkError {
    /// No server answered, the connection broke, or the server failed
    /// (a 5xx): transient; the engine keeps its records and tries again.
    Down,
    /// A 429 or 503: the server asked for this many seconds of quiet, which
    /// the engine honours through `retry_after`.
    Busy {
        /// How long.
        retry_after_s: u32,
    },
    /// A 401 or 403: the server will not take this device's frames.
    Refused {
        /// The status.
        status: u16,
    },
    /// Another 4xx: the server refused this frame.
    Rejected {
        /// The status.
        status: u16,
    },
    /// A frame larger than the MTU, or a response larger than the buffer.
    TooLarge,
}

impl fmt::Display for LinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkError::Down => f.write_str("no HTTP server answered"),
            LinkError::Busy { retry_after_s } => {
                write!(f, "the server is busy: retry after {retry_after_s} s")
            }
            LinkError::Refused { status } => {
                write!(f, "the server refused this device (HTTP {status})")
            }
            LinkError::Rejected { status } => {
                write!(f, "the server refused the frame (HTTP {status})")
            }
            LinkError::TooLarge => f.write_str("frame or response too large"),
        }
    }
}

impl core::error::Error for LinkError {}

impl Outcome {
    /// How long the server asked the device to wait, if it did.
    pub fn retry_after(self) -> Option<Duration> {
        match self {
            Outcome::Busy { retry_after_s } => Some(Duration::from_secs(u64::from(retry_after_s))),
            _ => None,
        }
    }

    /// The link's answer to the engine for this outcome.
    pub(crate) fn into_result(self) -> Result<(), LinkError> {
        match self {
            Outcome::Answered => Ok(()),
            Outcome::Busy { retry_after_s } => Err(LinkError::Busy { retry_after_s }),
            Outcome::Refused { status } => Err(LinkError::Refused { status }),
            Outcome::Rejected { status } => Err(LinkError::Rejected { status }),
            Outcome::Failed { .. } => Err(LinkError::Down),
        }
    }
}

/// What the link did, since it was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Counters {
    /// Connections opened.
    pub connects: u32,
    /// Attempts on which no server answered.
    pub connect_failures: u32,
    /// Frames posted.
    pub posts: u32,
    /// Posts answered with 200 (the frame committed).
    pub answered: u32,
    /// Posts answered 429 or 503.
    pub busy: u32,
    /// Posts answered 401 or 403.
    pub refused: u32,
    /// Posts answered with another 4xx.
    pub rejected: u32,
    /// Posts that got no answer or a 5xx.
    pub failed: u32,
    /// Responses larger than the engine takes, dropped (the frame is sent
    /// again).
    pub responses_dropped: u32,
}

impl Counters {
    /// Counts an answer.
    pub(crate) fn answer(&mut self, outcome: Outcome) {
        let count = match outcome {
            Outcome::Answered => &mut self.answered,
            Outcome::Busy { .. } => &mut self.busy,
            Outcome::Refused { .. } => &mut self.refused,
            Outcome::Rejected { .. } => &mut self.rejected,
            Outcome::Failed { .. } => &mut self.failed,
        };
        *count += 1;
    }
}

/// Where a device posts, and how.
#[derive(Clone, Copy, Debug)]
pub struct Config<'a> {
    /// The server's name, for the `Host` header.
    pub host: &'a str,
    /// The server's addresses, tried in turn from the last that answered.
    pub endpoints: &'a [SocketAddr],
    /// The path frames go to.
    pub path: &'a str,
    /// Bound on a connect, and on one exchange (request and response).
    pub timeout: Timeout,
    /// Largest frame.
    pub mtu: usize,
}

impl<'a> Config<'a> {
    /// Posts to [`PATH`], 10 s per exchange, frames of up to 256 bytes.
    pub fn new(host: &'a str, endpoints: &'a [SocketAddr]) -> Self {
        Config {
            host,
            endpoints,
            path: PATH,
            timeout: Timeout::from_secs(10),
            mtu: 256,
        }
    }
}

/// The device's HTTP link: an [`AsyncTransport`] that posts each frame and
/// keeps the response for the engine.
///
/// The connection opens when the engine turns the radio on and is kept
/// alive for the session's posts (HTTP/1.1), then closed when the session
/// ends: the push model, the server never reaches the device. `buf` holds
/// one answer: its status line and headers, and the response frame.
pub struct HttpLink<'a, T: TcpConnect + 'a> {
    tcp: &'a T,
    config: Config<'a>,
    conn: Option<HttpConnection<'a, T::Connection<'a>>>,
    buf: &'a mut [u8],
    response: heapless::Vec<u8, MAX_DOWNLINK>,
    has_response: bool,
    retry_after: Option<Duration>,
    next_endpoint: usize,
    counters: Counters,
}

impl<'a, T: TcpConnect + 'a> HttpLink<'a, T> {
    /// A link over `tcp`, closed.
    pub fn new(tcp: &'a T, config: Config<'a>, buf: &'a mut [u8]) -> Self {
        HttpLink {
            tcp,
            config,
            conn: None,
            buf,
            response: heapless::Vec::new(),
            has_response: false,
            retry_after: None,
            next_endpoint: 0,
            counters: Counters::default(),
        }
    }

    /// What the link did so far.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Whether a connection is open.
    pub fn is_connected(&self) -> bool {
        self.conn.is_some()
    }

    async fn connect(&mut self) -> Result<(), LinkError> {
        let n = self.config.endpoints.len();
        for k in 0..n {
            let i = (self.next_endpoint + k) % n;
            let Some(&endpoint) = self.config.endpoints.get(i) else {
                continue;
            };
            match with_timeout(self.config.timeout, self.tcp.connect(endpoint)).await {
                Ok(Ok(conn)) => {
                    self.conn = Some(HttpConnection::Plain(conn));
                    self.next_endpoint = i;
                    self.counters.connects += 1;
                    return Ok(());
                }
                Ok(Err(_)) | Err(_) => self.counters.connect_failures += 1,
            }
        }
        Err(LinkError::Down)
    }

    /// Posts `frame` and reads the answer; the response frame, if any, is
    /// left in `self.response`.
    async fn post(&mut self, frame: &[u8]) -> Result<Outcome, LinkError> {
        let Some(conn) = self.conn.as_mut() else {
            return Err(LinkError::Down);
        };
        let request = Request::post(self.config.path)
            .host(self.config.host)
            .content_type(ContentType::ApplicationOctetStream)
            .body(frame)
            .build();
        let buf = &mut *self.buf;
        let response = &mut self.response;
        let exchange = async {
            request
                .write_header(conn)
                .await
                .map_err(|_| LinkError::Down)?;
            conn.write_all(frame).await.map_err(|_| LinkError::Down)?;
            conn.flush().await.map_err(|_| LinkError::Down)?;
            let answer = Response::read(conn, Method::POST, buf)
                .await
                .map_err(|_| LinkError::Down)?;
            let mut retry_after = None;
            let mut close = false;
            for (name, value) in answer.headers() {
                if name.eq_ignore_ascii_case("retry-after") {
                    retry_after = Some(value);
                } else if name.eq_ignore_ascii_case("connection") {
                    close = value.trim_ascii().eq_ignore_ascii_case(b"close");
                }
            }
            let outcome = Outcome::of(answer.status.0, retry_after);
            let body = answer.body().read_to_end().await.map_err(|e| match e {
                reqwless::Error::BufferTooSmall => LinkError::TooLarge,
                _ => LinkError::Down,
            })?;
            response.clear();
            if outcome == Outcome::Answered {
                response
                    .extend_from_slice(body)
                    .map_err(|_| LinkError::TooLarge)?;
            }
            Ok((outcome, close))
        };
        match with_timeout(self.config.timeout, exchange).await {
            Ok(Ok((outcome, close))) => {
                if close {
                    self.conn = None;
                }
                Ok(outcome)
            }
            Ok(Err(e)) => {
                // What is left of the answer is unknown: a new connection.
                self.conn = None;
                Err(e)
            }
            Err(_) => {
                self.conn = None;
                Err(LinkError::Down)
            }
        }
    }
}

impl<'a, T: TcpConnect + 'a> AsyncTransport for HttpLink<'a, T> {
    type Error = LinkError;

    fn mtu(&self) -> usize {
        self.config.mtu
    }

    async fn power(&mut self, on: bool) -> Result<(), LinkError> {
        if !on {
            self.conn = None;
            return Ok(());
        }
        if self.conn.is_some() {
            return Ok(());
        }
        self.connect().await
    }

    async fn send(&mut self, frame: &[u8]) -> Result<(), LinkError> {
        if frame.len() > self.config.mtu {
            return Err(LinkError::TooLarge);
        }
        if self.conn.is_none() {
            // The server closed the last one: a new one for this post.
            self.connect().await?;
        }
        self.counters.posts += 1;
        let outcome = match self.post(frame).await {
            Ok(outcome) => outcome,
            Err(e) => {
                match e {
                    LinkError::TooLarge => self.counters.responses_dropped += 1,
                    _ => self.counters.failed += 1,
                }
                return Err(e);
            }
        };
        self.counters.answer(outcome);
        self.has_response = outcome == Outcome::Answered && !self.response.is_empty();
        self.retry_after = outcome.retry_after();
        outcome.into_result()
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
