//! The engine's half of the link: an [`AsyncTransport`] that hands frames
//! to the [`Runner`](crate::Runner) and takes the downlinks it received.

use core::cell::Cell;

use embassy_sync::blocking_mutex::raw::RawMutex;
use embassy_sync::blocking_mutex::Mutex;
use embassy_sync::channel::Channel;
use embassy_sync::signal::Signal;
use heapless::Vec;
use telemark_core::transport::AsyncTransport;

use crate::runner::Mode;

/// One frame, up or down.
pub type Frame<const MTU: usize> = Vec<u8, MTU>;

/// Downlinks held for the engine: a response and a command pushed while it
/// works, with room to spare.
pub(crate) const DOWN_QUEUE: usize = 4;

/// Where the link stands, as the engine and the application see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum LinkState {
    /// No connection, and none being made.
    Down,
    /// Dialling a broker or waiting for its CONNACK.
    Connecting,
    /// Connected, subscribed, publishing.
    Up,
    /// The broker refused this device's credentials. Retried only when the
    /// engine turns the radio on again, never in a loop.
    Refused(Refusal),
}

/// Why a broker refused the connection: the CONNACK reason codes that no
/// retry can mend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Refusal {
    /// 0x86: bad user name or password.
    BadCredentials,
    /// 0x87: the credentials are good but may not connect.
    NotAuthorized,
    /// 0x85: the broker does not accept this client id.
    ClientIdInvalid,
    /// 0x8A: banned. 0x8C: bad authentication method.
    Banned,
}

impl Refusal {
    /// The refusal a CONNACK reason code means; `None` for one that a
    /// later attempt may get past (server busy, unavailable, ...).
    pub fn from_reason(code: u8) -> Option<Refusal> {
        match code {
            0x86 => Some(Refusal::BadCredentials),
            0x87 => Some(Refusal::NotAuthorized),
            0x85 => Some(Refusal::ClientIdInvalid),
            0x8A | 0x8C => Some(Refusal::Banned),
            _ => None,
        }
    }
}

/// Why the link did not carry a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum LinkError {
    /// No broker could be reached, or the connection was lost: transient;
    /// the engine keeps its records and tries again on its schedule.
    Down,
    /// The broker refused the credentials: not transient.
    Refused(Refusal),
    /// A frame larger than the link's MTU.
    TooLarge,
}

/// What the link did, since it was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Counters {
    /// MQTT sessions established (CONNACK accepted).
    pub connects: u32,
    /// Of those, sessions the broker resumed (`session_present`).
    pub resumed: u32,
    /// Attempts that reached no broker or failed before CONNACK.
    pub connect_failures: u32,
    /// Connections the broker refused for the credentials.
    pub refusals: u32,
    /// Connections lost while up (broker gone, keepalive timed out).
    pub drops: u32,
    /// Frames published (QoS 1, accepted into the session).
    pub published: u32,
    /// Frames handed to the runner that it could not publish (the link
    /// went down first); the engine sends them again.
    pub publish_failures: u32,
    /// Downlinks received on the device's topic.
    pub received: u32,
    /// Downlinks dropped: the queue to the engine was full, or the frame
    /// larger than the MTU. The server sends them again.
    pub downlinks_dropped: u32,
}

#[derive(Clone, Copy)]
pub(crate) struct Shared {
    /// The engine wants the radio on.
    pub want: bool,
    /// Bumped by each power-on; answered by the runner.
    pub request: u32,
    pub answered: u32,
    pub link: LinkState,
    /// The largest frame: `MTU`, or less if the broker's Maximum Packet
    /// Size leaves less room.
    pub mtu: usize,
    /// Push, or always connected: the engine's config says.
    pub mode: Mode,
    pub counters: Counters,
}

/// The memory both halves share; it outlives them (a `static` on a
/// microcontroller, a local in a test). `M` is the mutex the two tasks
/// need: `NoopRawMutex` on one executor, `CriticalSectionRawMutex` across
/// interrupt priorities.
pub struct State<M: RawMutex, const MTU: usize> {
    pub(crate) shared: Mutex<M, Cell<Shared>>,
    pub(crate) to_runner: Signal<M, ()>,
    pub(crate) to_link: Signal<M, ()>,
    pub(crate) up: Channel<M, Frame<MTU>, 1>,
    pub(crate) down: Channel<M, Frame<MTU>, DOWN_QUEUE>,
}

impl<M: RawMutex, const MTU: usize> State<M, MTU> {
    /// Empty state: link down, nothing queued.
    pub const fn new() -> Self {
        State {
            shared: Mutex::new(Cell::new(Shared {
                want: false,
                request: 0,
                answered: 0,
                link: LinkState::Down,
                mtu: MTU,
                mode: Mode::Push,
                counters: Counters {
                    connects: 0,
                    resumed: 0,
                    connect_failures: 0,
                    refusals: 0,
                    drops: 0,
                    published: 0,
                    publish_failures: 0,
                    received: 0,
                    downlinks_dropped: 0,
                },
            })),
            to_runner: Signal::new(),
            to_link: Signal::new(),
            up: Channel::new(),
            down: Channel::new(),
        }
    }

    pub(crate) fn get(&self) -> Shared {
        self.shared.lock(Cell::get)
    }

    pub(crate) fn update<R>(&self, f: impl FnOnce(&mut Shared) -> R) -> R {
        self.shared.lock(|cell| {
            let mut s = cell.get();
            let r = f(&mut s);
            cell.set(s);
            r
        })
    }

    pub(crate) fn set_link(&self, link: LinkState) {
        self.update(|s| s.link = link);
    }

    /// Tells the link that its latest power-on is answered.
    pub(crate) fn answer(&self) {
        self.update(|s| s.answered = s.request);
        self.to_link.signal(());
    }

    pub(crate) fn count(&self, f: impl FnOnce(&mut Counters)) {
        self.update(|s| f(&mut s.counters));
    }
}

impl<M: RawMutex, const MTU: usize> Default for State<M, MTU> {
    fn default() -> Self {
        Self::new()
    }
}

/// The engine's side of the link. Give it to `step_async`; the
/// [`Runner`](crate::Runner) must be running beside it.
pub struct Link<'a, M: RawMutex, const MTU: usize> {
    pub(crate) state: &'a State<M, MTU>,
}

impl<M: RawMutex, const MTU: usize> Link<'_, M, MTU> {
    /// Where the link stands now.
    pub fn state(&self) -> LinkState {
        self.state.get().link
    }

    /// What the link did so far.
    pub fn counters(&self) -> Counters {
        self.state.get().counters
    }

    /// Push or always connected, as the engine's config last said.
    pub fn mode(&self) -> Mode {
        self.state.get().mode
    }

    /// Waits until a downlink is there for `receive`: the main loop sleeps
    /// on this and on the engine's deadline, so a command pushed to an
    /// always-connected device runs at once.
    pub async fn wait_input(&self) {
        self.state.down.ready_to_receive().await;
    }
}

impl<M: RawMutex, const MTU: usize> AsyncTransport for Link<'_, M, MTU> {
    type Error = LinkError;

    /// `MTU`, or what the broker's Maximum Packet Size leaves of it after
    /// the PUBLISH header and topic, once a broker has said.
    fn mtu(&self) -> usize {
        self.state.get().mtu
    }

    /// Always connected while `keep` holds, push mode otherwise; a
    /// connection held with no session on goes when push mode returns.
    fn keep_link_up(&mut self, keep: bool) {
        let mode = if keep {
            Mode::AlwaysConnected
        } else {
            Mode::Push
        };
        if self.state.get().mode != mode {
            self.state.update(|s| s.mode = mode);
            self.state.to_runner.signal(());
        }
    }

    async fn power(&mut self, on: bool) -> Result<(), LinkError> {
        if !on {
            self.state.update(|s| s.want = false);
            self.state.to_runner.signal(());
            return Ok(());
        }
        let request = self.state.update(|s| {
            s.want = true;
            s.request = s.request.wrapping_add(1);
            s.request
        });
        self.state.to_runner.signal(());
        loop {
            let s = self.state.get();
            if s.answered == request {
                return match s.link {
                    LinkState::Up => Ok(()),
                    LinkState::Refused(r) => Err(LinkError::Refused(r)),
                    LinkState::Down | LinkState::Connecting => Err(LinkError::Down),
                };
            }
            self.state.to_link.wait().await;
        }
    }

    async fn send(&mut self, frame: &[u8]) -> Result<(), LinkError> {
        if frame.len() > self.mtu() {
            return Err(LinkError::TooLarge);
        }
        let frame = Frame::<MTU>::from_slice(frame).map_err(|_| LinkError::TooLarge)?;
        match self.state.get().link {
            LinkState::Up => {}
            LinkState::Refused(r) => return Err(LinkError::Refused(r)),
            LinkState::Down | LinkState::Connecting => return Err(LinkError::Down),
        }
        // One frame waits at most: the runner takes it as it publishes.
        self.state.up.send(frame).await;
        Ok(())
    }

    async fn receive(&mut self, buf: &mut [u8]) -> Result<Option<usize>, LinkError> {
        let Ok(frame) = self.state.down.try_receive() else {
            return Ok(None);
        };
        let into = buf.get_mut(..frame.len()).ok_or(LinkError::TooLarge)?;
        into.copy_from_slice(&frame);
        Ok(Some(frame.len()))
    }
}
