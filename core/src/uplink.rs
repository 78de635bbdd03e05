//! The uplink: when to wake the radio, what to send, and what to do when the
//! link loses frames.
//!
//! [`Uplink`] is a sans-IO state machine. The driver calls
//! [`Uplink::poll`] and carries out what it answers ([`UplinkAction`]):
//! power the radio, send the frame it built in the driver's buffer, power
//! down. It reports what happened ([`Uplink::on_sent`],
//! [`Uplink::on_send_failed`], [`Uplink::on_link_down`],
//! [`Uplink::on_frame`]) and sleeps until [`Uplink::deadline`].
//!
//! The protocol is stop and wait, with end-to-end acknowledgement:
//!
//! - a frame packs as many records as the MTU allows, alerts first;
//! - the server acknowledges the sequence numbers it stored durably, and
//!   only then does the device free them from its store;
//! - a frame not acknowledged within the timeout is rebuilt from what is
//!   still in the store and sent again, with exponential backoff and jitter;
//!   after `max_attempts` the session ends, the radio goes off, and the next
//!   session waits out a growing, bounded backoff;
//! - duplicates are harmless: the server keeps one copy per (device, seq).
//!
//! The radio wakes at once for an alert of warning severity or worse, and
//! otherwise when the report interval has passed, the routine lane reaches
//! its high-water mark or a flush is asked for; a session sends until the
//! store is empty. After a failed session urgent alerts retry with backoff,
//! and everything else waits for the next report.
//!
//! ```
//! use telemark_core::model::Severity;
//! use telemark_core::store::{FullPolicy, RamStore, RecordMeta, RecordStore, SeqRange};
//! use telemark_core::time::{Duration, Instant};
//! use telemark_core::uplink::{Uplink, UplinkAction, UplinkConfig};
//! use telemark_core::wire::frame::ResponseWriter;
//! use telemark_core::wire::seal::{FrameKind, Header, Key, Sealing};
//! use telemark_core::wire::Epoch;
//!
//! let key = Sealing::key(1, Key::from_bytes([0x42; 32]));
//! let mut store: RamStore<128, 1024> = RamStore::new(FullPolicy::EvictOldest);
//! let mut uplink = Uplink::new(UplinkConfig::new(7, 96, Duration::from_mins(15)), key.clone(), Epoch(3));
//! let mut buf = [0u8; 96];
//! let now = Instant::from_millis(1_000);
//!
//! // An alert wakes the radio at once and goes out in the first frame.
//! let seq = store.push(RecordMeta::alert(Severity::Critical, 1), b"too hot").unwrap();
//! assert_eq!(uplink.poll(now, &mut store, &mut buf), Some(UplinkAction::RadioOn));
//! let Some(UplinkAction::Send(_)) = uplink.poll(now, &mut store, &mut buf) else { panic!() };
//! uplink.on_sent(now);
//!
//! // The server stores it and answers frame 1 of epoch 3; only now is it freed.
//! let mut ack = [0u8; 64];
//! let header = Header::new(FrameKind::Response, 7, Epoch(3), 1, &key);
//! let w = ResponseWriter::new(&mut ack, &header, Some(1_700_000_000_000), &[SeqRange::single(seq)], &key).unwrap();
//! let n = w.finish(&key).unwrap();
//! uplink.on_frame(now, &mut ack[..n], &mut store).unwrap();
//! assert!(store.is_empty());
//! assert_eq!(uplink.poll(now, &mut store, &mut buf), Some(UplinkAction::RadioOff));
//! ```

use core::fmt;

use crate::model::Severity;
use crate::store::RecordStore;
use crate::time::{Duration, Instant, WallClock};
use crate::wire::frame::{FrameWriter, Response};
use crate::wire::seal::{open, Direction, FrameError, FrameKind, Header, Sealing, MAX_COUNTER};
use crate::wire::{Epoch, Lane, Seq};

/// Most records one frame carries: the uplink remembers each one it sent,
/// so that an acknowledgement frees only records that were sent.
pub const MAX_IN_FLIGHT: usize = 32;

/// How the uplink behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct UplinkConfig {
    /// This device's id, sent in every frame.
    pub device: u64,
    /// Largest frame the link carries, in bytes.
    pub mtu: u16,
    /// Routine data goes out at least this often.
    pub report_interval: Duration,
    /// Routine data goes out early when the routine lane is this full (%).
    pub high_water_percent: u8,
    /// How long to wait for an acknowledgement before the first resend.
    pub ack_timeout: Duration,
    /// Upper bound of every backoff.
    pub max_backoff: Duration,
    /// Sends of one frame before the session gives up.
    pub max_attempts: u8,
    /// Keep the link up between sessions, so that a command reaches the
    /// device at once: for links that cost little to hold (MQTT over
    /// Ethernet or Wi-Fi on mains power). Off, a transport that can let
    /// its link go (disconnect, sleep its modem) does so when a session
    /// ends. The engine's sessions are the same either way; the
    /// transport learns this through `keep_link_up` at every step.
    pub keep_link_up: bool,
}

/// Why an [`UplinkConfig`] was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum UplinkConfigError {
    /// The MTU cannot hold a frame with one small record.
    MtuTooSmall,
    /// A zero report interval or acknowledgement timeout.
    ZeroInterval,
    /// The high-water mark is 0 or above 100 %.
    BadHighWater,
    /// Zero attempts, or a backoff bound below the timeout.
    BadRetry,
}

impl fmt::Display for UplinkConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UplinkConfigError::MtuTooSmall => "MTU below 64 bytes",
            UplinkConfigError::ZeroInterval => "zero report interval or ack timeout",
            UplinkConfigError::BadHighWater => "high-water mark must be 1..=100 %",
            UplinkConfigError::BadRetry => "zero attempts, or max backoff below the ack timeout",
        })
    }
}

#[cfg(feature = "std")]
impl std::error::Error for UplinkConfigError {}

impl UplinkConfig {
    /// Smallest MTU: a sealed frame header, one record header and a few
    /// bytes of payload.
    pub const MIN_MTU: u16 = 64;

    /// Defaults for a cellular or LoRa link: 80 % high water, 10 s first
    /// timeout, backoff up to an hour, 5 attempts per session.
    ///
    /// # Panics
    /// If [`UplinkConfig::validate`] refuses it; in a `const` that is a
    /// build error.
    pub const fn new(device: u64, mtu: u16, report_interval: Duration) -> Self {
        let config = UplinkConfig {
            device,
            mtu,
            report_interval,
            high_water_percent: 80,
            ack_timeout: Duration::from_secs(10),
            max_backoff: Duration::from_mins(60),
            max_attempts: 5,
            keep_link_up: false,
        };
        match config.validate() {
            Ok(()) => config,
            #[allow(clippy::panic)] // a build error when evaluated in a const
            Err(_) => panic!("invalid UplinkConfig"),
        }
    }

    /// Checks the config.
    pub const fn validate(&self) -> Result<(), UplinkConfigError> {
        if self.mtu < Self::MIN_MTU {
            Err(UplinkConfigError::MtuTooSmall)
        } else if self.report_interval.is_zero() || self.ack_timeout.is_zero() {
            Err(UplinkConfigError::ZeroInterval)
        } else if self.high_water_percent == 0 || self.high_water_percent > 100 {
            Err(UplinkConfigError::BadHighWater)
        } else if self.max_attempts == 0
            || self.max_backoff.as_millis() < self.ack_timeout.as_millis()
        {
            Err(UplinkConfigError::BadRetry)
        } else {
            Ok(())
        }
    }
}

/// What the driver should do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum UplinkAction {
    /// Power the radio and bring the link up.
    RadioOn,
    /// Send the first `n` bytes of the buffer given to `poll` as one frame.
    Send(usize),
    /// Nothing more to send: power the radio down.
    RadioOff,
}

/// Counts of what the uplink did. All saturate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct UplinkCounters {
    /// Times the radio was woken.
    pub wakeups: u32,
    /// Frames handed to the link, resends included.
    pub frames_sent: u32,
    /// Records in those frames, resends included.
    pub records_sent: u32,
    /// Bytes of those frames.
    pub bytes_sent: u64,
    /// Frames sent again after a timeout or a failed send.
    pub retries: u32,
    /// Sessions that ended without emptying the store.
    pub failed_sessions: u32,
    /// Acknowledgement frames accepted.
    pub acks: u32,
    /// Records freed by acknowledgements.
    pub acked_records: u32,
    /// Readings in the records freed by acknowledgements.
    pub acked_readings: u32,
    /// Frames from the link that were refused: malformed, bad tag, for
    /// another device, epoch or key.
    pub bad_frames: u32,
    /// Responses refused as replayed, or answering no frame in flight.
    pub replayed: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Radio off, and not to be woken before `backoff_until`.
    Asleep { backoff_until: Instant },
    /// Radio on, nothing in flight: the next poll sends or powers down.
    Ready,
    /// A frame is in flight; resend at `deadline` unless acknowledged.
    Waiting { deadline: Instant },
}

/// The uplink state machine. See the module docs.
#[derive(Clone, Debug)]
pub struct Uplink {
    config: UplinkConfig,
    state: State,
    /// Sends of the current frame so far in this session.
    attempt: u8,
    /// Consecutive failed sessions, for the session backoff.
    failures: u8,
    next_report: Instant,
    flush: bool,
    rng: u32,
    clock: WallClock,
    counters: UplinkCounters,
    sealing: Sealing,
    epoch: Epoch,
    /// Counter of the last frame sent in this epoch.
    counter: u32,
    /// The records of the frame in flight, until its response comes.
    in_flight: heapless::Vec<Seq, MAX_IN_FLIGHT>,
    /// True while the frame `counter` awaits its response.
    awaiting: bool,
    /// The largest frame the link carries, as the transport says.
    link_mtu: u16,
}

impl Uplink {
    /// A fresh uplink for the boot `epoch`, sealing with `sealing`; the
    /// first routine report is due one interval after boot.
    pub fn new(config: UplinkConfig, sealing: Sealing, epoch: Epoch) -> Self {
        Uplink {
            config,
            state: State::Asleep {
                backoff_until: Instant::ZERO,
            },
            attempt: 0,
            failures: 0,
            next_report: Instant::ZERO + config.report_interval,
            flush: false,
            // Jitter differs per device, and never starts at zero.
            rng: (config.device as u32 ^ (config.device >> 32) as u32) | 1,
            clock: WallClock::unsynced(),
            counters: UplinkCounters::default(),
            sealing,
            epoch,
            counter: 0,
            in_flight: heapless::Vec::new(),
            awaiting: false,
            link_mtu: u16::MAX,
        }
    }

    /// The boot epoch this uplink seals its frames under.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// The sealing in force.
    pub fn sealing(&self) -> &Sealing {
        &self.sealing
    }

    /// Seals every frame from the next one on with `sealing` (a key the
    /// server rotated to). Call it only while no frame is in flight, as
    /// after a response: an answer to a frame sealed under the old key
    /// would be refused.
    pub fn set_sealing(&mut self, sealing: Sealing) {
        self.sealing = sealing;
    }

    /// Tells the uplink the largest frame the link carries: no frame is
    /// built larger, whatever the config says.
    pub fn set_link_mtu(&mut self, mtu: usize) {
        self.link_mtu = u16::try_from(mtu).unwrap_or(u16::MAX);
    }

    /// The largest frame the link carries, if a transport said (else
    /// `u16::MAX`).
    pub fn link_mtu(&self) -> u16 {
        self.link_mtu
    }

    /// The config.
    pub fn config(&self) -> &UplinkConfig {
        &self.config
    }

    /// Replaces the config; takes effect from the next decision.
    pub fn set_config(&mut self, config: UplinkConfig) {
        self.config = config;
    }

    /// What the uplink did so far.
    pub fn counters(&self) -> UplinkCounters {
        self.counters
    }

    /// Wall-clock time as learnt from the server's acknowledgements.
    pub fn clock(&self) -> WallClock {
        self.clock
    }

    /// True while the radio should be on.
    pub fn radio_on(&self) -> bool {
        !matches!(self.state, State::Asleep { .. })
    }

    /// Sends everything stored at the next poll, whatever the schedule
    /// (a "flush now" command, a button press).
    pub fn flush_now(&mut self) {
        self.flush = true;
    }

    fn jitter(&mut self, d: Duration) -> Duration {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 17;
        self.rng ^= self.rng << 5;
        // Up to half again as long: devices that lost the link together do
        // not all come back at the same instant.
        let extra = d.as_millis() / 2 * u64::from(self.rng % 1024) / 1024;
        Duration::from_millis(d.as_millis() + extra)
    }

    fn backoff(&mut self, exponent: u8) -> Duration {
        let base = self.config.ack_timeout.as_millis();
        let grown = base.saturating_mul(1u64 << exponent.min(30));
        let bounded = grown.min(self.config.max_backoff.as_millis());
        self.jitter(Duration::from_millis(bounded))
    }

    /// True if stored data is due: an urgent alert (warning or worse) at
    /// once, everything else on the report interval, at the high-water
    /// mark, or when a flush was asked for.
    fn wake_due<S: RecordStore>(&self, now: Instant, store: &mut S) -> bool {
        let urgent = match store.peek(0) {
            Ok(Some(r)) => r.meta.lane == Lane::Alert && r.meta.severity >= Severity::Warning,
            _ => return false,
        };
        let capacity = store.capacity(Lane::Routine).max(1);
        let high_water = store.used(Lane::Routine) * 100
            >= capacity * usize::from(self.config.high_water_percent);
        urgent || self.flush || now >= self.next_report || high_water
    }

    /// Decides what to do at `now`; builds frames in `buf` (at most the MTU
    /// of it is used). `None` means nothing until [`Uplink::deadline`] or
    /// the next event.
    pub fn poll<S: RecordStore>(
        &mut self,
        now: Instant,
        store: &mut S,
        buf: &mut [u8],
    ) -> Option<UplinkAction> {
        match self.state {
            State::Asleep { backoff_until } => {
                if now >= backoff_until && self.wake_due(now, store) {
                    self.state = State::Ready;
                    self.attempt = 0;
                    self.counters.wakeups = self.counters.wakeups.saturating_add(1);
                    return Some(UplinkAction::RadioOn);
                }
                if store.is_empty() && now >= self.next_report {
                    // Nothing was due: the next report is one interval on.
                    self.next_report = now + self.config.report_interval;
                }
                None
            }
            State::Waiting { deadline } if now < deadline => None,
            State::Waiting { .. } => {
                // No acknowledgement in time.
                if self.attempt >= self.config.max_attempts {
                    return Some(self.end_session(now, false));
                }
                self.counters.retries = self.counters.retries.saturating_add(1);
                self.send(now, store, buf)
            }
            State::Ready => self.send(now, store, buf),
        }
    }

    fn end_session(&mut self, now: Instant, emptied: bool) -> UplinkAction {
        if emptied {
            self.failures = 0;
            self.flush = false;
            self.next_report = now + self.config.report_interval;
            self.state = State::Asleep { backoff_until: now };
        } else {
            // Urgent alerts retry after a growing backoff; routine data and
            // flushes wait for the next report, so a dead link costs at most
            // one wake-up per report interval.
            self.counters.failed_sessions = self.counters.failed_sessions.saturating_add(1);
            self.failures = self.failures.saturating_add(1);
            self.flush = false;
            self.next_report = now + self.config.report_interval;
            let wait = self.backoff(self.failures);
            self.state = State::Asleep {
                backoff_until: now + wait,
            };
        }
        UplinkAction::RadioOff
    }

    fn send<S: RecordStore>(
        &mut self,
        now: Instant,
        store: &mut S,
        buf: &mut [u8],
    ) -> Option<UplinkAction> {
        let mtu = usize::from(self.config.mtu.min(self.link_mtu)).min(buf.len());
        let Some(frame_buf) = buf.get_mut(..mtu) else {
            return Some(self.end_session(now, false));
        };
        if self.counter >= MAX_COUNTER {
            // Every nonce of this epoch is used: nothing more goes out
            // until a reboot starts a new epoch.
            return Some(self.end_session(now, false));
        }
        let header = Header::new(
            FrameKind::Records,
            self.config.device,
            self.epoch,
            self.counter + 1,
            &self.sealing,
        );
        let Ok(mut frame) = FrameWriter::new(frame_buf, &header, now, &self.sealing) else {
            return Some(self.end_session(now, false));
        };
        self.in_flight.clear();
        let boots = store.boots();
        let in_flight = &mut self.in_flight;
        // A store that fails part way leaves a frame of what it showed.
        let _ = store.visit(|record| {
            if in_flight.is_full() || frame.push(record, boots.epoch_of(record.seq)).is_err() {
                return false;
            }
            let _ = in_flight.push(record.seq);
            true
        });
        if frame.count() == 0 {
            if store.is_empty() {
                return Some(self.end_session(now, true));
            }
            // The next record is larger than the MTU: it can never be sent.
            // The store's sealing budget must stay below the MTU.
            return Some(self.end_session(now, false));
        }
        let records = u32::from(frame.count());
        let Ok(len) = frame.finish(&self.sealing) else {
            return Some(self.end_session(now, false));
        };
        self.counter += 1;
        self.awaiting = true;
        self.attempt = self.attempt.saturating_add(1);
        let exponent = self.attempt.saturating_sub(1);
        let timeout = self.backoff(exponent);
        self.state = State::Waiting {
            deadline: now + timeout,
        };
        let c = &mut self.counters;
        c.frames_sent = c.frames_sent.saturating_add(1);
        c.records_sent = c.records_sent.saturating_add(records);
        c.bytes_sent = c.bytes_sent.saturating_add(len as u64);
        Some(UplinkAction::Send(len))
    }

    /// The records the frame in flight carries, until its response comes
    /// or the next frame is built.
    pub fn in_flight(&self) -> &[Seq] {
        &self.in_flight
    }

    /// The link took the frame. (The timeout runs from the send.)
    pub fn on_sent(&mut self, _now: Instant) {}

    /// The link could not send the frame: resend as after a timeout.
    pub fn on_send_failed(&mut self, now: Instant) {
        if let State::Waiting { .. } = self.state {
            self.state = State::Waiting { deadline: now };
        }
    }

    /// The link went down: the session ends; the next waits out a backoff.
    pub fn on_link_down(&mut self, now: Instant) -> Option<UplinkAction> {
        if self.radio_on() {
            Some(self.end_session(now, false))
        } else {
            None
        }
    }

    /// The far end asked for `wait` before the next try: the session ends
    /// as [`on_link_down`](Self::on_link_down) ends it, and the next waits
    /// out the longer of `wait` and the backoff.
    pub fn on_link_busy(&mut self, now: Instant, wait: Duration) -> Option<UplinkAction> {
        let action = self.on_link_down(now);
        if let State::Asleep { backoff_until } = &mut self.state {
            *backoff_until = (*backoff_until).max(now + wait);
        }
        action
    }

    /// A frame arrived from the server: it is opened in place and checked
    /// (the device's key, this device, this epoch, and the answer to the
    /// frame in flight, once). Its acknowledgement frees the records it
    /// names that the frame in flight carried, and sets the clock; the
    /// response is returned for its items. Anything else is refused,
    /// counted, and returned as an error.
    pub fn on_frame<'b, S: RecordStore>(
        &mut self,
        now: Instant,
        bytes: &'b mut [u8],
        store: &mut S,
    ) -> Result<(AckInfo, Response<'b>), FrameError> {
        let response = match self.open_response(bytes) {
            Ok(r) => r,
            Err(e) => {
                let c = &mut self.counters;
                if e == FrameError::Replayed {
                    c.replayed = c.replayed.saturating_add(1);
                } else {
                    c.bad_frames = c.bad_frames.saturating_add(1);
                }
                return Err(e);
            }
        };
        self.awaiting = false;
        let mut info = AckInfo::default();
        for range in response.ranges() {
            // Only what was sent: a range naming records the frame did not
            // carry frees nothing.
            for &seq in self.in_flight.iter().filter(|s| range.contains(**s)) {
                if let Ok(freed) = store.ack(crate::wire::SeqRange::single(seq)) {
                    info.records += freed.records;
                    info.readings += freed.readings;
                }
            }
        }
        self.in_flight.clear();
        if let Some(t) = response.server_time().and_then(|t| i64::try_from(t).ok()) {
            self.clock.sync(now, t);
        }
        let c = &mut self.counters;
        c.acks = c.acks.saturating_add(1);
        c.acked_records = c.acked_records.saturating_add(info.records);
        c.acked_readings = c.acked_readings.saturating_add(info.readings);
        if let State::Waiting { .. } = self.state {
            // Whatever is left is sent next, from a fresh attempt count.
            self.state = State::Ready;
            self.attempt = 0;
        }
        Ok((info, response))
    }

    // Out of line: the cipher's state lives only while a frame is opened.
    #[inline(never)]
    fn open_response<'b>(&self, bytes: &'b mut [u8]) -> Result<Response<'b>, FrameError> {
        let (header, body) = open(bytes, &self.sealing, Direction::Down)?;
        if header.device != self.config.device || header.epoch != self.epoch {
            return Err(FrameError::NotForUs);
        }
        if header.kind != FrameKind::Response {
            return Err(FrameError::Kind(header.kind as u8));
        }
        if !self.awaiting || header.counter != self.counter {
            return Err(FrameError::Replayed);
        }
        Response::parse(&header, body)
    }

    /// When the uplink next needs a poll, if no event comes first: now
    /// while the radio is on and nothing is in flight; the resend time while
    /// a frame is; else when stored data falls due.
    pub fn deadline<S: RecordStore>(&self, now: Instant, store: &mut S) -> Option<Instant> {
        match self.state {
            State::Ready => Some(now),
            State::Waiting { deadline } => Some(deadline),
            State::Asleep { .. } if store.is_empty() => None,
            State::Asleep { backoff_until } if self.wake_due(now, store) => {
                Some(backoff_until.max(now))
            }
            State::Asleep { backoff_until } => Some(backoff_until.max(self.next_report)),
        }
    }
}

/// What an acknowledgement freed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct AckInfo {
    /// Records freed from the store.
    pub records: u32,
    /// Readings in them.
    pub readings: u32,
}
