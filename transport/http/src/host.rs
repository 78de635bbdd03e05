//! The link for Linux devices and gateways (feature `host`): the same
//! exchange on reqwest and tokio, with TLS and client certificates
//! through rustls.
//!
//! ```
//! use telemark_core::transport::AsyncTransport;
//! use telemark_http::host::{HostConfig, HostLink};
//!
//! let config = HostConfig::new(vec!["https://telemark.example/v1/up".into()]);
//! let link = HostLink::new(config).unwrap();
//! assert_eq!(link.mtu(), 512);
//! // In the main loop: `step_async(&mut engine, &mut link, now, &mut board)`.
//! ```

extern crate std;

use std::string::String;
use std::time::Duration as RealDuration;
use std::vec::Vec;

use telemark_core::time::Duration;
use telemark_core::transport::{AsyncTransport, MAX_DOWNLINK};

use crate::exchange::{Outcome, CONTENT_TYPE};
use crate::link::{Counters, LinkError};

/// Where a host posts, and how.
#[derive(Clone)]
pub struct HostConfig {
    /// Full URLs of the endpoint (`https://host/v1/up`), tried in turn
    /// from the last that answered.
    pub urls: Vec<String>,
    /// A rustls config of the device's own (its roots, a client
    /// certificate); `None` takes the platform's roots and rustls's ring
    /// provider.
    pub tls: Option<rustls::ClientConfig>,
    /// Bound on a connect, and on one exchange.
    pub timeout: RealDuration,
    /// How long an idle connection is kept for the next post.
    pub keep_alive: RealDuration,
    /// Largest frame.
    pub mtu: usize,
}

impl HostConfig {
    /// 10 s per exchange, connections kept 30 s, frames of up to 512
    /// bytes.
    pub fn new(urls: Vec<String>) -> Self {
        HostConfig {
            urls,
            tls: None,
            timeout: RealDuration::from_secs(10),
            keep_alive: RealDuration::from_secs(30),
            mtu: 512,
        }
    }
}

/// The host's HTTP link: an [`AsyncTransport`] for `step_async` on tokio.
pub struct HostLink {
    urls: Vec<String>,
    mtu: usize,
    client: reqwest::Client,
    next_url: usize,
    response: Option<Vec<u8>>,
    retry_after: Option<Duration>,
    counters: Counters,
}

impl HostLink {
    /// A link; `Err` if reqwest cannot build its client from the config.
    pub fn new(config: HostConfig) -> Result<HostLink, reqwest::Error> {
        let builder = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .pool_idle_timeout(config.keep_alive)
            .http1_only();
        let builder = match config.tls {
            Some(tls) => builder.tls_backend_preconfigured(tls),
            None => {
                // Already installed (by this or another part of the
                // program) is as good.
                let _ = rustls::crypto::ring::default_provider().install_default();
                builder.tls_backend_rustls()
            }
        };
        Ok(HostLink {
            urls: config.urls,
            mtu: config.mtu,
            client: builder.build()?,
            next_url: 0,
            response: None,
            retry_after: None,
            counters: Counters::default(),
        })
    }

    /// What the link did so far.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Posts `frame` to each URL in turn until one answers.
    async fn post(&mut self, frame: &[u8]) -> Result<reqwest::Response, LinkError> {
        let n = self.urls.len();
        for k in 0..n {
            let i = (self.next_url + k) % n;
            let Some(url) = self.urls.get(i) else {
                continue;
            };
            let sent = self
                .client
                .post(url)
                .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
                .body(frame.to_vec())
                .send()
                .await;
            match sent {
                Ok(answer) => {
                    self.next_url = i;
                    return Ok(answer);
                }
                Err(e) if e.is_connect() => self.counters.connect_failures += 1,
                Err(_) => return Err(LinkError::Down),
            }
        }
        Err(LinkError::Down)
    }
}

impl AsyncTransport for HostLink {
    type Error = LinkError;

    fn mtu(&self) -> usize {
        self.mtu
    }

    /// Nothing to do: the client connects on the first post and keeps the
    /// connection for `keep_alive`.
    async fn power(&mut self, _on: bool) -> Result<(), LinkError> {
        Ok(())
    }

    async fn send(&mut self, frame: &[u8]) -> Result<(), LinkError> {
        if frame.len() > self.mtu {
            return Err(LinkError::TooLarge);
        }
        self.counters.posts += 1;
        let answer = match self.post(frame).await {
            Ok(answer) => answer,
            Err(e) => {
                self.counters.failed += 1;
                return Err(e);
            }
        };
        let retry_after = answer
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .map(|v| v.as_bytes().to_vec());
        let outcome = Outcome::of(answer.status().as_u16(), retry_after.as_deref());
        if outcome == Outcome::Answered {
            let Ok(body) = answer.bytes().await else {
                self.counters.failed += 1;
                return Err(LinkError::Down);
            };
            if body.len() > MAX_DOWNLINK {
                self.counters.responses_dropped += 1;
                return Err(LinkError::TooLarge);
            }
            self.response = (!body.is_empty()).then(|| body.to_vec());
        }
        self.counters.answer(outcome);
        self.retry_after = outcome.retry_after();
        outcome.into_result()
    }

    async fn receive(&mut self, buf: &mut [u8]) -> Result<Option<usize>, LinkError> {
        let Some(frame) = self.response.take() else {
            return Ok(None);
        };
        let into = buf.get_mut(..frame.len()).ok_or(LinkError::TooLarge)?;
        into.copy_from_slice(&frame);
        Ok(Some(frame.len()))
    }

    fn retry_after(&mut self) -> Option<Duration> {
        self.retry_after.take()
    }
}
