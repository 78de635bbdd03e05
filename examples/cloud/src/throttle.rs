//! Per-device rate limits. Each device has a bucket of `burst` frames
//! that fills at `per_s` frames a second; a frame that finds it empty is
//! not verified or stored but answered "not now" (HTTP 429 with
//! `Retry-After`, CoAP 4.29 with Max-Age; over MQTT, no response) and
//! counted, and its device sends it again later, as after any frame
//! without an answer. A device that floods costs the service a header
//! parse a frame, and the others are served meanwhile.
//!
//! Only the devices the service knows get a bucket, and a frame that the
//! protocol then refuses (a forgery naming the device, a replay) gives
//! its token back: frames that only claim to be a device cannot throttle
//! it.
//!
//! ```
//! use telemark_cloud::throttle::{Rate, Throttle};
//! let mut t = Throttle::new(Some(Rate { per_s: 1.0, burst: 2 }));
//! assert!(t.take(7, 0).is_ok() && t.take(7, 0).is_ok());
//! assert_eq!(t.take(7, 0), Err(1_000), "empty: a token in a second");
//! assert!(t.take(7, 1_000).is_ok());
//! assert!(t.take(8, 0).is_ok(), "each device has its own");
//! ```

use std::collections::HashMap;

/// How fast a device may send.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    /// Frames a second, sustained.
    pub per_s: f64,
    /// Frames at once (a device draining its store after an outage).
    pub burst: u32,
}

impl Default for Rate {
    /// 10 frames a second, 100 at once.
    fn default() -> Self {
        Rate {
            per_s: 10.0,
            burst: 100,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at_ms: u64,
}

/// The buckets of the devices that sent.
#[derive(Debug, Default)]
pub struct Throttle {
    rate: Option<Rate>,
    buckets: HashMap<u64, Bucket>,
}

impl Throttle {
    /// Buckets filling at `rate`; `None` lets every frame through.
    pub fn new(rate: Option<Rate>) -> Throttle {
        Throttle {
            rate: rate.filter(|r| r.per_s > 0.0 && r.burst > 0),
            buckets: HashMap::new(),
        }
    }

    /// True if it limits anything.
    pub fn limits(&self) -> bool {
        self.rate.is_some()
    }

    /// Takes a token for a frame of `device` at `now_ms`; when there is
    /// none, how many ms until there is.
    pub fn take(&mut self, device: u64, now_ms: u64) -> Result<(), u64> {
        let Some(rate) = self.rate else {
            return Ok(());
        };
        let burst = f64::from(rate.burst);
        let b = self.buckets.entry(device).or_insert(Bucket {
            tokens: burst,
            at_ms: now_ms,
        });
        let elapsed = now_ms.saturating_sub(b.at_ms) as f64 / 1000.0;
        b.tokens = (b.tokens + elapsed * rate.per_s).min(burst);
        b.at_ms = b.at_ms.max(now_ms);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - b.tokens) / rate.per_s * 1000.0).ceil() as u64)
        }
    }

    /// Gives back the token of a frame the protocol refused.
    pub fn give_back(&mut self, device: u64) {
        let burst = self.rate.map_or(0.0, |r| f64::from(r.burst));
        if let Some(b) = self.buckets.get_mut(&device) {
            b.tokens = (b.tokens + 1.0).min(burst);
        }
    }

    /// Forgets the buckets full again at `now_ms`: they hold nothing a
    /// new one would not.
    pub fn prune(&mut self, now_ms: u64) {
        let Some(rate) = self.rate else {
            return;
        };
        let burst = f64::from(rate.burst);
        self.buckets.retain(|_, b| {
            let elapsed = now_ms.saturating_sub(b.at_ms) as f64 / 1000.0;
            b.tokens + elapsed * rate.per_s < burst
        });
    }
}
