//! Links, and the thin drivers that run an [`Engine`] over them.
//!
//! A [`Transport`] moves whole frames (a serial framing, an MQTT topic, an
//! HTTP request, a LoRa packet); a [`Board`] samples the sensors and drives
//! the outputs. [`step`] runs the engine over them until it has nothing left
//! to do and says when to call again; `step_async` (feature `async`) does
//! the same over an `AsyncTransport`, for embassy and tokio.
//!
//! ```
//! use telemark_core::channel::{ChannelSpec, Range, Unit, ValueKind};
//! use telemark_core::engine::{Boot, Engine};
//! use telemark_core::config::EngineConfig;
//! use telemark_core::model::{ChannelId, Reading, ReadingSink, Value};
//! use telemark_core::sensor::SensorErrorKind;
//! use telemark_core::wire::report::ResetReason;
//! use telemark_core::rules::Rules;
//! use telemark_core::stager::StagerConfig;
//! use telemark_core::store::{FullPolicy, RamStore};
//! use telemark_core::time::{Duration, Instant};
//! use telemark_core::transport::{step, Board, Transport};
//! use telemark_core::uplink::UplinkConfig;
//! use telemark_core::wire::seal::{Key, Sealing};
//! use telemark_core::wire::Epoch;
//!
//! /// A link that is never up: everything stays stored.
//! struct Dead;
//! impl Transport for Dead {
//!     type Error = ();
//!     fn mtu(&self) -> usize { 128 }
//!     fn power(&mut self, on: bool) -> Result<(), ()> { if on { Err(()) } else { Ok(()) } }
//!     fn send(&mut self, _: &[u8]) -> Result<(), ()> { Err(()) }
//!     fn receive(&mut self, _: &mut [u8]) -> Result<Option<usize>, ()> { Ok(None) }
//! }
//!
//! const LEVEL: ChannelSpec = ChannelSpec::new(ChannelId(1), Unit::Percent,
//!     ValueKind::Scaled { decimals: 0 }, Range::new(0.0, 100.0), Duration::from_mins(10), Rules::NONE);
//! let config = EngineConfig {
//!     uplink: UplinkConfig::new(1, 128, Duration::from_mins(60)),
//!     stager: StagerConfig::new(32, 32, Duration::from_mins(60)),
//!     heartbeat: Duration::from_mins(60),
//! };
//! // The key provisioned with the device id, and this boot's epoch from
//! // the board's random number generator.
//! let boot = Boot {
//!     reset_reason: ResetReason::PowerOn,
//!     epoch: Epoch(0x5eed_0001),
//!     sealing: Sealing::key(1, Key::from_bytes([0x42; 32])),
//! };
//! let mut engine: Engine<RamStore<128, 512>, 2, 32, 128> =
//!     Engine::new(&[LEVEL], RamStore::new(FullPolicy::EvictOldest), config, boot).unwrap();
//! /// A tank with a level sensor that always reads 42 %.
//! struct Tank;
//! impl Board for Tank {
//!     fn sample(&mut self, ch: ChannelId, now: Instant, out: &mut dyn ReadingSink) -> Result<(), SensorErrorKind> {
//!         out.push_reading(Reading::new(ch, now, Value::Scaled(42))).map_err(|_| SensorErrorKind::SinkFull)
//!     }
//! }
//! let wake = step(&mut engine, &mut Dead, Instant::ZERO, &mut Tank);
//! assert_eq!(wake, Instant::from_millis(10 * 60_000)); // the next sample
//! assert_eq!(engine.counters().sampled, 1);
//! ```

use core::fmt;

use crate::engine::{Action, Engine};
use crate::model::{ChannelId, Reading, ReadingSink};
use crate::profile::Profile;
use crate::sensor::SensorErrorKind;
use crate::store::RecordStore;
use crate::time::{Duration, Instant};

/// Largest downlink frame the drivers accept.
pub const MAX_DOWNLINK: usize = 256;

/// A blocking link that carries whole frames.
pub trait Transport {
    /// The link's error.
    type Error: fmt::Debug;

    /// Largest frame the link carries. [`step`] tells the engine, which
    /// builds no larger frame and refuses a config update with a larger
    /// MTU; the engine's `UplinkConfig::mtu` should not exceed it either.
    fn mtu(&self) -> usize;

    /// Powers the radio; `Err` on power-on means the link could not come up.
    fn power(&mut self, on: bool) -> Result<(), Self::Error>;

    /// Sends one frame.
    fn send(&mut self, frame: &[u8]) -> Result<(), Self::Error>;

    /// A frame received since the last call, if any, without waiting.
    fn receive(&mut self, buf: &mut [u8]) -> Result<Option<usize>, Self::Error>;

    /// Whether to keep the link up between sessions
    /// (`UplinkConfig::keep_link_up`, which a config update can change);
    /// [`step`] tells the transport at every call. A transport whose link
    /// costs nothing to hold, or that cannot hold one, ignores it.
    fn keep_link_up(&mut self, keep: bool) {
        let _ = keep;
    }

    /// How long the far end asked the device to wait before it tries again
    /// (an HTTP 429 or 503 with `Retry-After`), taken once after a failed
    /// `power` or `send`: [`step`] then ends the session and the next
    /// waits at least that long. The default never asks.
    fn retry_after(&mut self) -> Option<Duration> {
        None
    }
}

/// An async link that carries whole frames.
#[cfg(feature = "async")]
#[allow(async_fn_in_trait)] // single-threaded embedded executors need no Send bound
pub trait AsyncTransport {
    /// The link's error.
    type Error: fmt::Debug;

    /// Largest frame the link carries.
    fn mtu(&self) -> usize;

    /// Powers the radio; `Err` on power-on means the link could not come up.
    async fn power(&mut self, on: bool) -> Result<(), Self::Error>;

    /// Sends one frame.
    async fn send(&mut self, frame: &[u8]) -> Result<(), Self::Error>;

    /// A frame received since the last call, if any, without waiting.
    async fn receive(&mut self, buf: &mut [u8]) -> Result<Option<usize>, Self::Error>;

    /// Whether to keep the link up between sessions
    /// (`UplinkConfig::keep_link_up`, which a config update can change):
    /// `power(false)` then ends the session but keeps the link, so a
    /// command arrives at once. [`step_async`] tells the transport at every
    /// call; a transport that cannot hold its link ignores it.
    fn keep_link_up(&mut self, keep: bool) {
        let _ = keep;
    }

    /// How long the far end asked the device to wait before it tries again
    /// (an HTTP 429 or 503 with `Retry-After`), taken once after a failed
    /// `power` or `send`: [`step_async`] then ends the session and the
    /// next waits at least that long. The default never asks.
    fn retry_after(&mut self) -> Option<Duration> {
        None
    }
}

/// A link that is down: the radio never attaches, so the engine keeps
/// everything in its store. For a cut link in simulations and tests, and for
/// a device between two links.
///
/// ```
/// use telemark_core::transport::{NoLink, Transport};
/// let mut link = NoLink { mtu: 256 };
/// assert!(link.power(true).is_err());
/// assert_eq!(link.receive(&mut [0u8; 8]), Ok(None));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoLink {
    /// The MTU the link would have.
    pub mtu: usize,
}

/// Why [`NoLink`] did not carry a frame: it is down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct LinkDown;

impl Transport for NoLink {
    type Error = LinkDown;

    fn mtu(&self) -> usize {
        self.mtu
    }

    fn power(&mut self, on: bool) -> Result<(), LinkDown> {
        if on {
            Err(LinkDown)
        } else {
            Ok(())
        }
    }

    fn send(&mut self, _frame: &[u8]) -> Result<(), LinkDown> {
        Err(LinkDown)
    }

    fn receive(&mut self, _buf: &mut [u8]) -> Result<Option<usize>, LinkDown> {
        Ok(None)
    }
}

/// Takes the readings a sampler writes, to hand them to the engine.
struct Collected(heapless::Vec<Reading, 8>);

impl ReadingSink for Collected {
    fn push_reading(&mut self, reading: Reading) -> Result<(), Reading> {
        self.0.push(reading)
    }
}

/// What the engine asked of the link, without borrowing the engine.
enum Io {
    Radio(bool),
    Send(usize),
    Sleep(Instant),
}

/// What the firmware provides a driver besides the link: its sensors, its
/// outputs and its reset.
pub trait Board {
    /// Measures `channel` now and writes its readings into `out`.
    fn sample(
        &mut self,
        channel: ChannelId,
        now: Instant,
        out: &mut dyn ReadingSink,
    ) -> Result<(), SensorErrorKind>;

    /// Sets an output, as a command asked. The default ignores it.
    fn set_output(&mut self, _output: u8, _value: u32) {}

    /// Restarts the device, as a command asked. The default ignores it.
    fn reboot(&mut self) {}
}

/// Polls the engine, carrying out what the board can (samples, outputs,
/// reboots), until it asks something of the link; a frame to send is
/// copied into `frame`.
fn next_io<S, B, P, const CH: usize, const ST: usize, const MTU: usize>(
    engine: &mut Engine<S, CH, ST, MTU, P>,
    board: &mut B,
    now: Instant,
    frame: &mut [u8; MTU],
) -> Io
where
    S: RecordStore,
    P: Profile,
    B: Board,
{
    loop {
        match engine.poll(now) {
            Action::Sample(ch) => {
                let mut out = Collected(heapless::Vec::new());
                match board.sample(ch, now, &mut out) {
                    Ok(()) => out.0.into_iter().for_each(|r| engine.on_reading(now, r)),
                    Err(kind) => engine.on_sample_failed(now, ch, kind),
                }
            }
            Action::SetOutput { output, value } => board.set_output(output, value),
            Action::Reboot => board.reboot(),
            Action::RadioOn => return Io::Radio(true),
            Action::RadioOff => return Io::Radio(false),
            Action::Send(bytes) => {
                let n = bytes.len().min(MTU);
                if let (Some(dst), Some(src)) = (frame.get_mut(..n), bytes.get(..n)) {
                    dst.copy_from_slice(src);
                }
                return Io::Send(n);
            }
            Action::Sleep(t) => return Io::Sleep(t),
        }
    }
}

/// Runs `engine` at `now` over a blocking `transport` until it has nothing
/// to do; returns when to call again (sooner if a frame arrives).
///
/// Kept out of line so a firmware's main loop does not carry its buffers
/// (a downlink frame and an uplink frame) in its own stack frame.
#[inline(never)]
pub fn step<S, T, B, P, const CH: usize, const ST: usize, const MTU: usize>(
    engine: &mut Engine<S, CH, ST, MTU, P>,
    transport: &mut T,
    now: Instant,
    board: &mut B,
) -> Instant
where
    S: RecordStore,
    P: Profile,
    T: Transport,
    B: Board,
{
    let mut rx = [0u8; MAX_DOWNLINK];
    let mut frame = [0u8; MTU];
    engine.set_link_mtu(transport.mtu());
    transport.keep_link_up(engine.uplink().config().keep_link_up);
    loop {
        while let Ok(Some(n)) = transport.receive(&mut rx) {
            // Refused frames are counted by the uplink.
            let _ = engine.on_frame(now, rx.get_mut(..n).unwrap_or_default());
        }
        match next_io(engine, board, now, &mut frame) {
            Io::Radio(true) => {
                if transport.power(true).is_err() {
                    match transport.retry_after() {
                        Some(wait) => engine.on_link_busy(now, wait),
                        None => engine.on_link_down(now),
                    }
                }
            }
            Io::Radio(false) => {
                let _ = transport.power(false);
            }
            Io::Send(n) => match transport.send(frame.get(..n).unwrap_or_default()) {
                Ok(()) => engine.on_sent(now),
                Err(_) => match transport.retry_after() {
                    Some(wait) => engine.on_link_busy(now, wait),
                    None => engine.on_send_failed(now),
                },
            },
            Io::Sleep(t) => return t,
        }
    }
}

/// [`step`] over an [`AsyncTransport`]: for embassy tasks and tokio.
#[cfg(feature = "async")]
pub async fn step_async<S, T, B, P, const CH: usize, const ST: usize, const MTU: usize>(
    engine: &mut Engine<S, CH, ST, MTU, P>,
    transport: &mut T,
    now: Instant,
    board: &mut B,
) -> Instant
where
    S: RecordStore,
    P: Profile,
    T: AsyncTransport,
    B: Board,
{
    let mut rx = [0u8; MAX_DOWNLINK];
    let mut frame = [0u8; MTU];
    engine.set_link_mtu(transport.mtu());
    transport.keep_link_up(engine.uplink().config().keep_link_up);
    loop {
        while let Ok(Some(n)) = transport.receive(&mut rx).await {
            let _ = engine.on_frame(now, rx.get_mut(..n).unwrap_or_default());
        }
        match next_io(engine, board, now, &mut frame) {
            Io::Radio(true) => {
                if transport.power(true).await.is_err() {
                    match transport.retry_after() {
                        Some(wait) => engine.on_link_busy(now, wait),
                        None => engine.on_link_down(now),
                    }
                }
            }
            Io::Radio(false) => {
                let _ = transport.power(false).await;
            }
            Io::Send(n) => match transport.send(frame.get(..n).unwrap_or_default()).await {
                Ok(()) => engine.on_sent(now),
                Err(_) => match transport.retry_after() {
                    Some(wait) => engine.on_link_busy(now, wait),
                    None => engine.on_send_failed(now),
                },
            },
            Io::Sleep(t) => return t,
        }
    }
}
