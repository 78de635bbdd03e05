//! The device engine: one sans-IO state machine from sampling to delivery.
//!
//! [`Engine`] owns the channels and their rules, the stager, the store and
//! the uplink. It never touches hardware: the driver feeds it events
//! (a reading, a failed sample, a frame sent or received) and carries out
//! the [`Action`] that [`Engine::poll`] answers, until the answer is
//! [`Action::Sleep`]. The same engine runs under a bare-metal loop, an
//! embassy task and the simulator.
//!
//! ```
//! use telemark_core::channel::{ChannelSpec, Range, Unit, ValueKind};
//! use telemark_core::engine::{Action, Boot, Engine};
//! use telemark_core::config::EngineConfig;
//! use telemark_core::model::{ChannelId, Reading, Severity, Value};
//! use telemark_core::wire::report::ResetReason;
//! use telemark_core::rules::Rules;
//! use telemark_core::stager::StagerConfig;
//! use telemark_core::store::{FullPolicy, RamStore};
//! use telemark_core::time::{Duration, Instant};
//! use telemark_core::uplink::UplinkConfig;
//! use telemark_core::wire::seal::{Key, Sealing};
//! use telemark_core::wire::Epoch;
//!
//! const TEMP: ChannelSpec = ChannelSpec::new(
//!     ChannelId(1), Unit::Celsius, ValueKind::Scaled { decimals: 1 },
//!     Range::new(-20.0, 60.0), Duration::from_mins(1),
//!     Rules::NONE.high(30.0, 1.0, Severity::Critical),
//! );
//! let config = EngineConfig {
//!     uplink: UplinkConfig::new(7, 160, Duration::from_mins(30)),
//!     stager: StagerConfig::new(64, 96, Duration::from_mins(30)),
//!     heartbeat: Duration::from_mins(60 * 6),
//! };
//! let store: RamStore<128, 2048> = RamStore::new(FullPolicy::EvictOldest);
//! let boot = Boot {
//!     reset_reason: ResetReason::PowerOn,
//!     epoch: Epoch(0x5eed_0001), // 64 bits from the board's RNG, new at every boot
//!     sealing: Sealing::key(1, Key::from_bytes([0x42; 32])), // provisioned with id 7
//! };
//! let mut engine: Engine<_, 4, 64, 160> = Engine::new(&[TEMP], store, config, boot).unwrap();
//!
//! let now = Instant::from_millis(0);
//! assert_eq!(engine.poll(now), Action::Sample(ChannelId(1)));
//! engine.on_reading(now, Reading::new(ChannelId(1), now, Value::Scaled(312)));
//! // 31.2 °C is over the threshold: the alert wakes the radio at once.
//! assert_eq!(engine.poll(now), Action::RadioOn);
//! assert!(matches!(engine.poll(now), Action::Send(_)));
//! ```

use core::fmt;

use crate::channel::{ChannelSpec, ValueKind};
use crate::codec::BlockCodec;
use crate::config::{ConfigError, ConfigUpdate, DeviceConfig, EngineConfig};
use crate::model::{Alert, ChannelId, Quality, Reading};
use crate::profile::{Full, Profile};
use crate::rules::RuleState;
use crate::sensor::SensorErrorKind;
use crate::stager::{SealedBlock, Stager};
use crate::store::{Lane, RecordMeta, RecordStore, SaveError, Seq};
use crate::time::{Duration, Instant};
use crate::uplink::{AckInfo, Uplink, UplinkAction};
use crate::wire::frame::{frame_overhead, Command, Item, RECORD_EPOCH_BYTES, RECORD_HEADER_MAX};
use crate::wire::report::{Crash, Heartbeat, KeyStatus, Report, ResetReason, MAX_REPORT_LEN};
use crate::wire::seal::{FrameError, Key, Sealing};
use crate::wire::Epoch;

/// Why an [`Engine`] could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum EngineError {
    /// More channels than the engine's capacity.
    TooManyChannels,
    /// Two channels with one id.
    DuplicateChannel(ChannelId),
    /// A channel spec is invalid.
    Channel(ChannelId),
    /// The uplink config is invalid.
    Uplink(crate::uplink::UplinkConfigError),
    /// The stager config is invalid.
    Stager(crate::stager::StagerConfigError),
    /// The MTU is larger than the engine's frame buffer.
    MtuOverBuffer,
    /// A sealed block could not fit in a frame: lower `stager.max_bytes`.
    BlockOverMtu,
    /// The MTU is below [`min_mtu`]: some report could never be sent.
    MtuBelowReports,
    /// A zero heartbeat interval.
    ZeroHeartbeat,
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EngineError::TooManyChannels => f.write_str("more channels than the engine holds"),
            EngineError::DuplicateChannel(c) => write!(f, "channel {c} declared twice"),
            EngineError::Channel(c) => write!(f, "channel {c} has an invalid spec"),
            EngineError::Uplink(e) => write!(f, "uplink: {e}"),
            EngineError::Stager(e) => write!(f, "stager: {e}"),
            EngineError::MtuOverBuffer => f.write_str("MTU larger than the frame buffer"),
            EngineError::BlockOverMtu => {
                f.write_str("stager max_bytes leaves no room for the frame envelope")
            }
            EngineError::MtuBelowReports => {
                f.write_str("MTU too small for the largest report in one frame")
            }
            EngineError::ZeroHeartbeat => f.write_str("heartbeat interval is zero"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for EngineError {}

/// What the driver should do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Action<'a> {
    /// Sample this channel now and report with [`Engine::on_reading`] or
    /// [`Engine::on_sample_failed`].
    Sample(ChannelId),
    /// Power the radio and bring the link up.
    RadioOn,
    /// Send this frame, then report [`Engine::on_sent`] or
    /// [`Engine::on_send_failed`].
    Send(&'a [u8]),
    /// Power the radio down.
    RadioOff,
    /// Set an output, as a command asked.
    SetOutput {
        /// Which output.
        output: u8,
        /// The value.
        value: u32,
    },
    /// Restart the device, as a command asked (its result is delivered).
    Reboot,
    /// Nothing to do before this instant (or before the next event).
    Sleep(Instant),
}

/// What a response from the server did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Downlink {
    /// What its acknowledgement freed.
    pub ack: AckInfo,
    /// A config update it carried: applied (its version) or refused (why).
    pub config: Option<Result<u32, ConfigError>>,
    /// Commands it carried that were executed.
    pub commands: u8,
    /// Commands it carried whose ids were seen before: their earlier
    /// results were reported again.
    pub repeated: u8,
    /// A new key it carried, and what the device did with it (see
    /// [`Engine::take_key`]).
    pub key: Option<KeyStatus>,
}

/// What a device is in this boot: how it seals its frames, and the epoch
/// that names this boot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Boot {
    /// Why the device started.
    pub reset_reason: ResetReason,
    /// This boot's epoch: from the flash store's mount, or 64 bits from
    /// the board's random number generator.
    pub epoch: Epoch,
    /// The device's provisioned key (or, on a bench,
    /// [`Sealing::Unauthenticated`]). A key the store saved when the server
    /// rotated it ([`RecordStore::load_key`]) takes its place.
    pub sealing: Sealing,
}

/// Commands remembered, so a repeated id is not executed twice.
const RECENT_COMMANDS: usize = 16;
/// A remembered command as saved: id (4), status (1), value (4).
const COMMAND_BYTES: usize = 9;
const _: () = assert!(RECENT_COMMANDS * COMMAND_BYTES <= crate::store::MAX_COMMANDS_BYTES);

/// Counts of what the engine did. All saturate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct EngineCounters {
    /// Readings taken.
    pub sampled: u32,
    /// Samples that failed.
    pub sensor_faults: u32,
    /// Alerts raised.
    pub alerts: u32,
    /// Heartbeats queued.
    pub heartbeats: u32,
    /// Blocks sealed.
    pub blocks: u32,
    /// Readings that could not be staged or stored (the store refused their
    /// block, or they were reported for an unknown channel).
    pub dropped_readings: u32,
    /// Reports not stored when they were made because the alert lane had
    /// filled its share for their severity (see [`alert_share_percent`]),
    /// so that room stays for more urgent ones. A channel's report (what it
    /// measures) is stored later, once there is room; the others are not.
    pub reports_held_back: u32,
}

/// How much of the alert lane, in percent of its capacity, reports of
/// `severity` may fill: info reports (heartbeats, config statuses, command
/// results, cleared alerts) half of it, warnings three quarters, critical
/// alerts all of it. A report is stored only if the lane's use
/// ([`RecordStore::used`]) stays within its share with the report's record
/// added (at [`RECORD_OVERHEAD`](crate::store::RECORD_OVERHEAD) bytes beside
/// its payload); otherwise it is counted in
/// [`EngineCounters::reports_held_back`].
pub const fn alert_share_percent(severity: crate::model::Severity) -> usize {
    match severity {
        crate::model::Severity::Info => 50,
        crate::model::Severity::Warning => 75,
        crate::model::Severity::Critical => 100,
    }
}

/// A report the alert lane's share for its severity had no room for.
struct HeldBack;

/// What `spec` measures and how its values read, as the server learns it.
fn channel_report(spec: &ChannelSpec) -> Report {
    Report::Channel {
        channel: spec.id,
        unit: spec.unit,
        kind: spec.kind,
    }
}

#[derive(Clone, Copy, Debug)]
struct Channel {
    spec: ChannelSpec,
    rules: RuleState,
    next_due: Instant,
    /// Its [`Report::Channel`] could not be stored when it was made (the
    /// alert lane had filled its share for info reports): it is stored as
    /// soon as there is room, so the server always learns what it measures.
    unreported: bool,
}

/// The device engine over store `S`, with room for `CH` channels, `STAGE`
/// staged readings and frames of up to `MTU` bytes, in profile `P`
/// ([`Full`] unless chosen otherwise; see [`crate::profile`]).
pub struct Engine<
    S: RecordStore,
    const CH: usize,
    const STAGE: usize,
    const MTU: usize,
    P: Profile = Full,
> {
    channels: heapless::Vec<Channel, CH>,
    stager: Stager<STAGE, P::Codec>,
    store: S,
    uplink: Uplink,
    heartbeat: Duration,
    next_heartbeat: Instant,
    /// This boot's latest heartbeat, replaced by the next while unsent.
    last_heartbeat: Option<Seq>,
    reset_reason: ResetReason,
    block: [u8; MTU],
    frame: [u8; MTU],
    counters: EngineCounters,
    version: u32,
    outputs: heapless::Deque<(u8, u32), 4>,
    /// The record of a reboot command's result; reboot once it is delivered.
    reboot_after: Option<Seq>,
    recent: heapless::Deque<(u32, u8, u32), RECENT_COMMANDS>,
}

/// Bytes a frame must be able to carry, at least, for device `device`
/// sealed with `sealing`: the frame's envelope and one report of
/// [`MAX_REPORT_LEN`] bytes numbered in an earlier boot. Below it, some
/// report the engine makes could never leave. 114 bytes for a sealed device
/// whose id is below 128, 123 for the largest id.
pub fn min_mtu(device: u64, sealing: &Sealing) -> usize {
    frame_overhead(device, sealing) + RECORD_HEADER_MAX + RECORD_EPOCH_BYTES + MAX_REPORT_LEN
}

/// The most bytes a sealed block may take so that it fits one frame of
/// `config`, in this boot or a later one (a record from an earlier boot
/// names its epoch): the largest [`StagerConfig::max_bytes`] the engine
/// accepts with that MTU.
///
/// [`StagerConfig::max_bytes`]: crate::stager::StagerConfig::max_bytes
pub fn block_room(config: &EngineConfig, sealing: &Sealing) -> usize {
    let overhead = frame_overhead(config.uplink.device, sealing);
    usize::from(config.uplink.mtu).saturating_sub(overhead + RECORD_HEADER_MAX + RECORD_EPOCH_BYTES)
}

/// Checks what the engine itself needs of a config.
fn check<const MTU: usize>(config: &EngineConfig, sealing: &Sealing) -> Result<(), EngineError> {
    config.uplink.validate().map_err(EngineError::Uplink)?;
    config.stager.validate().map_err(EngineError::Stager)?;
    if usize::from(config.uplink.mtu) > MTU {
        return Err(EngineError::MtuOverBuffer);
    }
    if usize::from(config.uplink.mtu) < min_mtu(config.uplink.device, sealing) {
        return Err(EngineError::MtuBelowReports);
    }
    if usize::from(config.stager.max_bytes) > block_room(config, sealing) {
        return Err(EngineError::BlockOverMtu);
    }
    if config.heartbeat.is_zero() {
        return Err(EngineError::ZeroHeartbeat);
    }
    Ok(())
}

impl<S: RecordStore, const CH: usize, const STAGE: usize, const MTU: usize, P: Profile>
    Engine<S, CH, STAGE, MTU, P>
{
    /// An engine for `channels`, storing into `store`, for this `boot`.
    pub fn new(
        channels: &[ChannelSpec],
        store: S,
        config: EngineConfig,
        boot: Boot,
    ) -> Result<Self, EngineError> {
        let mut store = store;
        let sealing = match (boot.sealing, store.load_key()) {
            (Sealing::Key { .. }, Ok(Some((id, key)))) => Sealing::key(id, key),
            // A store that cannot be read leaves the provisioned key; the
            // server refuses it if it retired it, and says so.
            (provisioned, _) => provisioned,
        };
        check::<MTU>(&config, &sealing)?;
        let mut list = heapless::Vec::new();
        for spec in channels {
            spec.validate().map_err(|_| EngineError::Channel(spec.id))?;
            if list.iter().any(|c: &Channel| c.spec.id == spec.id) {
                return Err(EngineError::DuplicateChannel(spec.id));
            }
            list.push(Channel {
                spec: *spec,
                rules: RuleState::new(),
                next_due: Instant::ZERO,
                unreported: false,
            })
            .map_err(|_| EngineError::TooManyChannels)?;
        }
        let mut engine = Engine {
            channels: list,
            stager: Stager::new(P::Codec::default(), config.stager),
            store,
            uplink: Uplink::new(config.uplink, sealing, boot.epoch),
            heartbeat: config.heartbeat,
            next_heartbeat: Instant::ZERO,
            last_heartbeat: None,
            reset_reason: boot.reset_reason,
            block: [0; MTU],
            frame: [0; MTU],
            counters: EngineCounters::default(),
            version: 0,
            outputs: heapless::Deque::new(),
            reboot_after: None,
            recent: heapless::Deque::new(),
        };
        engine.restore_config();
        engine.report_channels(|_| true);
        engine.restore_commands();
        Ok(engine)
    }

    /// Reports what each channel `which` picks measures, and how its
    /// values read ([`Report::Channel`]).
    /// One held back is stored after the next acknowledgement, by
    /// [`Engine::report_unreported`].
    fn report_channels(&mut self, which: impl Fn(&ChannelSpec) -> bool) {
        for i in 0..self.channels.len() {
            let Some(spec) = self.channels.get(i).map(|c| c.spec) else {
                break;
            };
            if which(&spec) {
                let stored = self
                    .push_report(channel_report(&spec), crate::model::Severity::Info)
                    .is_some();
                if let Some(c) = self.channels.get_mut(i) {
                    c.unreported = !stored;
                }
            }
        }
    }

    /// Stores the channel reports held back earlier, in channel order, as
    /// far as the alert lane's share for info reports has room; they were
    /// counted in [`EngineCounters::reports_held_back`] once, when made.
    fn report_unreported(&mut self) {
        for i in 0..self.channels.len() {
            let Some(spec) = self
                .channels
                .get(i)
                .filter(|c| c.unreported)
                .map(|c| c.spec)
            else {
                continue;
            };
            match self.store_report(channel_report(&spec), crate::model::Severity::Info) {
                Ok(_) => {
                    if let Some(c) = self.channels.get_mut(i) {
                        c.unreported = false;
                    }
                }
                // Still no room: the later ones wait with it.
                Err(HeldBack) => return,
            }
        }
    }

    /// Resumes with the commands the store saved before the reboot, so one
    /// the server repeats is answered with its result, not run again (a
    /// reboot command reboots once). A store that cannot be read leaves
    /// none.
    fn restore_commands(&mut self) {
        let recent = self.store.load_commands(|bytes| {
            let mut recent = heapless::Deque::new();
            for entry in bytes.chunks_exact(COMMAND_BYTES) {
                let Some((id, rest)) = entry.split_first_chunk::<4>() else {
                    continue;
                };
                let Some((&status, value)) = rest.split_first() else {
                    continue;
                };
                let Some(value) = value.first_chunk::<4>() else {
                    continue;
                };
                let _ =
                    recent.push_back((u32::from_le_bytes(*id), status, u32::from_le_bytes(*value)));
            }
            recent
        });
        if let Ok(Some(recent)) = recent {
            self.recent = recent;
        }
    }

    /// Saves the commands run lately; see [`RecordStore::save_commands`].
    fn save_commands(&mut self) {
        let mut bytes = [0u8; RECENT_COMMANDS * COMMAND_BYTES];
        let entries = bytes
            .chunks_exact_mut(COMMAND_BYTES)
            .zip(self.recent.iter());
        for (entry, &(id, status, value)) in entries {
            let [a, b, c, d] = id.to_le_bytes();
            let [e, f, g, h] = value.to_le_bytes();
            entry.copy_from_slice(&[a, b, c, d, status, e, f, g, h]);
        }
        let n = self.recent.len() * COMMAND_BYTES;
        // Not saved, a repeat after a reboot would run again; the command
        // itself still runs now.
        let _ = self.store.save_commands(bytes.get(..n).unwrap_or_default());
    }

    /// Resumes with the config the store saved before the reboot, if any,
    /// and reports the version in force, so a server whose config the
    /// device no longer runs (a RAM store after a power cut) sends it
    /// again. A saved config that no longer fits this firmware is reported
    /// as refused, and the firmware's defaults stay (version 0).
    fn restore_config(&mut self) {
        let defaults = self.config();
        let saved = self
            .store
            .load_config(|cbor| ConfigUpdate::parse(cbor).and_then(|u| u.apply(&defaults)));
        let refused = match saved {
            Ok(None) => None,
            Ok(Some(Ok(saved))) => match check::<MTU>(&saved.engine, self.uplink.sealing()) {
                Ok(()) => {
                    self.set_config(Instant::ZERO, saved);
                    None
                }
                Err(_) => Some(ConfigError::Inconsistent),
            },
            Ok(Some(Err(e))) => Some(e),
            Err(_) => Some(ConfigError::NotSaved),
        };
        let report = Report::ConfigStatus {
            version: self.version,
            code: refused.map_or(0, |e| e.code()),
            detail: refused.map_or(0, |e| e.detail()),
        };
        let _ = self.push_report(report, crate::model::Severity::Info);
    }

    fn set_config(&mut self, now: Instant, next: DeviceConfig<CH>) {
        // Readings staged under the old resolution leave in their own block.
        self.seal(now, true);
        self.stager.set_config(next.engine.stager);
        self.uplink.set_config(next.engine.uplink);
        self.heartbeat = next.engine.heartbeat;
        self.next_heartbeat = self.next_heartbeat.min(now + next.engine.heartbeat);
        self.store.set_routine_policy(next.store_policy);
        for (channel, spec) in self.channels.iter_mut().zip(&next.channels) {
            if channel.spec.period != spec.period {
                channel.next_due = now;
            }
            channel.spec = *spec;
        }
        self.version = next.version;
    }

    /// The config in force: version 0 until the server sends one.
    pub fn config(&self) -> DeviceConfig<CH> {
        DeviceConfig {
            version: self.version,
            engine: EngineConfig {
                uplink: *self.uplink.config(),
                stager: self.stager.config(),
                heartbeat: self.heartbeat,
            },
            store_policy: self.store.routine_policy(),
            channels: self.channels.iter().map(|c| c.spec).collect(),
        }
    }

    /// The spec in force for `channel`: drivers quantize with it, since a
    /// config update can change a channel's resolution.
    pub fn spec(&self, channel: ChannelId) -> Option<&ChannelSpec> {
        self.channels
            .iter()
            .find(|c| c.spec.id == channel)
            .map(|c| &c.spec)
    }

    /// Applies a CBOR config update, entirely or not at all; reports the
    /// outcome upstream either way.
    ///
    /// The new config is saved to the store before it takes effect, so the
    /// config reported as applied is the one a reboot resumes with; if it
    /// cannot be saved it is refused ([`ConfigError::NotSaved`]).
    pub fn apply_config(&mut self, now: Instant, cbor: &[u8]) -> Result<u32, ConfigError> {
        let result = self.accept_config(cbor);
        // Applied from this shallow frame: sealing the staged readings runs
        // the block encoder, whose scratch must not sit on top of the
        // parser's.
        let result = result.map(|next| {
            let version = next.version;
            let before: heapless::Vec<ValueKind, CH> =
                self.channels.iter().map(|c| c.spec.kind).collect();
            self.set_config(now, next);
            // A channel whose resolution changed is reported again.
            let changed: heapless::Vec<ChannelId, CH> = self
                .channels
                .iter()
                .zip(&before)
                .filter(|(c, kind)| c.spec.kind != **kind)
                .map(|(c, _)| c.spec.id)
                .collect();
            self.report_channels(|spec| changed.contains(&spec.id));
            version
        });
        let (code, detail) = match &result {
            Ok(_) => (0, 0),
            Err(e) => (e.code(), e.detail()),
        };
        let report = Report::ConfigStatus {
            version: self.version,
            code,
            detail,
        };
        let _ = self.push_report(report, crate::model::Severity::Info);
        self.uplink.flush_now();
        result
    }

    /// Parses `cbor`, applies it to the config in force, checks the result
    /// and saves it. Out of line: the parsed update and two whole configs
    /// are on the stack only while an update is checked.
    #[inline(never)]
    fn accept_config(&mut self, cbor: &[u8]) -> Result<DeviceConfig<CH>, ConfigError> {
        ConfigUpdate::parse(cbor)
            .and_then(|u| u.apply(&self.config()))
            .and_then(|next| {
                check::<MTU>(&next.engine, self.uplink.sealing())
                    .map(|()| next)
                    .map_err(|e| match e {
                        EngineError::MtuBelowReports | EngineError::MtuOverBuffer => {
                            ConfigError::OutOfRange(3)
                        }
                        _ => ConfigError::Inconsistent,
                    })
            })
            .and_then(|next| {
                if next.engine.uplink.mtu > self.uplink.link_mtu() {
                    // Frames that large would never cross the link.
                    return Err(ConfigError::OutOfRange(3));
                }
                // A lower MTU must not strand a record already stored.
                let room = block_room(&next.engine, self.uplink.sealing());
                if next.engine.uplink.mtu < self.uplink.config().mtu && self.largest_block()? > room
                {
                    return Err(ConfigError::StrandsRecords);
                }
                Ok(next)
            })
            .and_then(
                |next| match self.store.save_config(|buf| next.encode(buf).ok()) {
                    Ok(()) => Ok(next),
                    Err(_) => Err(ConfigError::NotSaved),
                },
            )
    }

    /// The largest block waiting in the store (reports always fit, by
    /// [`min_mtu`]). Walks every record: run only when a config lowers the
    /// MTU.
    fn largest_block(&mut self) -> Result<usize, ConfigError> {
        let mut largest = 0;
        self.store
            .visit(|r| {
                if r.meta.lane == Lane::Routine {
                    largest = largest.max(r.payload.len());
                }
                true
            })
            // Unknown sizes: refuse rather than risk stranding them.
            .map_err(|_| ConfigError::StrandsRecords)?;
        Ok(largest)
    }

    /// Tells the engine the largest frame its link carries (the drivers in
    /// [`transport`](crate::transport) do, from `Transport::mtu`): frames are
    /// never built larger, and a config update whose MTU is larger is
    /// refused with [`ConfigError::OutOfRange`]`(3)`.
    pub fn set_link_mtu(&mut self, mtu: usize) {
        self.uplink.set_link_mtu(mtu);
    }

    /// Takes key `id`, sent by the server to replace the device's key: it
    /// is saved to the store, then seals every frame from the next one on,
    /// and the outcome is reported upstream either way. Nothing is in
    /// flight when the key changes (it came in the response to the frame
    /// that was), so no record waits on an answer under the old key.
    ///
    /// Refused, and the old key kept, when the store cannot keep a key
    /// across a power cut ([`KeyStatus::NotPersistent`]: a RAM store
    /// would come back with the key the server retired) or fails to save it
    /// ([`KeyStatus::NotSaved`]), and when `id` is the one in force with
    /// another key or the device seals nothing ([`KeyStatus::Refused`]).
    pub fn take_key(&mut self, id: u8, key: Key) -> KeyStatus {
        let status = match self.uplink.sealing() {
            Sealing::Unauthenticated => KeyStatus::Refused,
            Sealing::Key {
                id: current,
                key: k,
            } if *current == id => {
                if *k == key {
                    KeyStatus::InUse
                } else {
                    KeyStatus::Refused
                }
            }
            Sealing::Key { .. } => match self.store.save_key(id, &key) {
                Ok(()) => {
                    self.uplink.set_sealing(Sealing::key(id, key));
                    KeyStatus::InUse
                }
                Err(SaveError::NotPersistent) => KeyStatus::NotPersistent,
                Err(_) => KeyStatus::NotSaved,
            },
        };
        let severity = match status {
            KeyStatus::InUse => crate::model::Severity::Info,
            _ => crate::model::Severity::Warning,
        };
        let _ = self.push_report(Report::KeyStatus { id, status }, severity);
        self.uplink.flush_now();
        status
    }

    /// Reports a crash captured before this boot (by the board support's
    /// panic or fault handler) as a critical event, sent at once, with this
    /// boot's reset reason. False if the alert lane refused it (counted).
    pub fn report_crash(&mut self, crash: &Crash) -> bool {
        let report = Report::Crash {
            crash: *crash,
            reset_reason: self.reset_reason,
        };
        let pushed = self
            .push_report(report, crate::model::Severity::Critical)
            .is_some();
        self.uplink.flush_now();
        pushed
    }

    /// Executes a command, unless its id was seen: then its earlier result
    /// is reported again. Returns whether it was a repeat.
    pub fn run_command(&mut self, now: Instant, id: u32, command: Command) -> bool {
        if let Some(&(_, status, value)) = self.recent.iter().find(|c| c.0 == id) {
            let _ = self.push_report(
                Report::CommandResult { id, status, value },
                crate::model::Severity::Info,
            );
            self.uplink.flush_now();
            return true;
        }
        let (status, value) = match command {
            Command::Ping => (0, (now.as_millis() / 1000) as u32),
            Command::FlushNow => {
                self.flush_now(now);
                (0, 0)
            }
            Command::Reboot => (0, 0),
            Command::SetOutput { output, value } => match self.outputs.push_back((output, value)) {
                Ok(()) => (0, value),
                Err(_) => (1, 0),
            },
        };
        if self.recent.is_full() {
            self.recent.pop_front();
        }
        let _ = self.recent.push_back((id, status, value));
        self.save_commands();
        let seq = self.push_report(
            Report::CommandResult { id, status, value },
            crate::model::Severity::Info,
        );
        if command == Command::Reboot {
            self.reboot_after = seq;
        }
        self.uplink.flush_now();
        false
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The store, mutably (for inspection in tests and tools).
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// Ends the engine and gives its store back: what a reboot leaves of
    /// the engine is what the store kept.
    pub fn into_store(self) -> S {
        self.store
    }

    /// The uplink.
    pub fn uplink(&self) -> &Uplink {
        &self.uplink
    }

    /// What the engine did so far.
    pub fn counters(&self) -> EngineCounters {
        self.counters
    }

    /// Readings staged but not yet sealed into a block.
    pub fn staged(&self) -> usize {
        self.stager.len()
    }

    /// Sends everything stored at the next poll.
    pub fn flush_now(&mut self, now: Instant) {
        self.seal(now, true);
        self.uplink.flush_now();
    }

    /// The health heartbeat as of `now`.
    pub fn heartbeat(&self, now: Instant) -> Heartbeat {
        let store = self.store.counters();
        let up = self.uplink.counters();
        let lost =
            |l: crate::store::LaneCounters| l.evicted_readings.saturating_add(l.refused_readings);
        Heartbeat {
            uptime_s: (now.as_millis() / 1000) as u32,
            sampled: self.counters.sampled,
            sent_readings: store.routine.acked_readings,
            bytes_on_air: up.bytes_sent.min(u64::from(u32::MAX)) as u32,
            retries: up.retries,
            evicted: lost(store.routine).saturating_add(self.counters.dropped_readings),
            decimated: store.routine.decimated_readings,
            sensor_faults: self.counters.sensor_faults,
            queue_depth: self.store.len() as u32,
            reset_reason: self.reset_reason,
            wakeups: up.wakeups,
        }
    }

    /// Stores a report, or counts it in
    /// [`EngineCounters::reports_held_back`] when its severity's share of the
    /// alert lane has no room for it.
    fn push_report(&mut self, report: Report, severity: crate::model::Severity) -> Option<Seq> {
        match self.store_report(report, severity) {
            Ok(seq) => seq,
            Err(HeldBack) => {
                let c = &mut self.counters;
                c.reports_held_back = c.reports_held_back.saturating_add(1);
                None
            }
        }
    }

    /// Stores a report if its severity's share of the alert lane
    /// ([`alert_share_percent`]) has room for it: its sequence number, or
    /// `None` where the store refused it (counted by the store's alert lane).
    fn store_report(
        &mut self,
        report: Report,
        severity: crate::model::Severity,
    ) -> Result<Option<Seq>, HeldBack> {
        let mut buf = [0u8; 64];
        let Ok(n) = report.encode(&mut buf) else {
            return Ok(None);
        };
        let share = alert_share_percent(severity);
        let capacity = self.store.capacity(Lane::Alert);
        let used_after = self.store.used(Lane::Alert) + n + crate::store::RECORD_OVERHEAD;
        if share < 100 && used_after * 100 > capacity * share {
            return Err(HeldBack);
        }
        Ok(self
            .store
            .push(
                RecordMeta::alert(severity, 1),
                buf.get(..n).unwrap_or_default(),
            )
            .ok())
    }

    fn push_alert(&mut self, alert: Alert) {
        self.counters.alerts = self.counters.alerts.saturating_add(1);
        let _ = self.push_report(Report::Alert(alert), alert.severity);
    }

    fn store_block(&mut self, sealed: SealedBlock) {
        self.counters.blocks = self.counters.blocks.saturating_add(1);
        let bytes = self.block.get(..sealed.len).unwrap_or_default();
        // A refusal is counted by the store's routine lane.
        let _ = self.store.push(RecordMeta::routine(sealed.readings), bytes);
        if P::DECIMATE {
            self.degrade();
        }
    }

    /// Offline degradation: while the routine lane is at its high-water
    /// mark, halve the time resolution of the oldest blocks not yet
    /// decimated (every other reading of each channel goes), so that
    /// eviction comes only after decimation has done what it can. Only in a
    /// profile that decimates ([`Profile::DECIMATE`]).
    ///
    /// Kept out of line: it holds a decoder and a batch of readings, which
    /// the common path of storing a block should not carry on its stack.
    #[inline(never)]
    fn degrade(&mut self) {
        let high_water = usize::from(self.uplink.config().high_water_percent);
        let capacity = self.store.capacity(Lane::Routine).max(1);
        // Each pass shrinks one block; a few per sealed block keep up.
        for _ in 0..4 {
            if self.store.used(Lane::Routine) * 100 < capacity * high_water {
                return;
            }
            let mut kept: heapless::Vec<Reading, STAGE> = heapless::Vec::new();
            // Per channel: was its last reading kept?
            let mut parity: heapless::Vec<(ChannelId, bool), CH> =
                self.channels.iter().map(|c| (c.spec.id, false)).collect();
            // Never a record of the frame in flight: the server may hold it
            // already, and must not get two payloads under one name.
            let in_flight = self.uplink.in_flight();
            let (seq, old_len) = match self.store.oldest_undecimated(in_flight) {
                Ok(Some(record)) => {
                    let mut sink = crate::model::FnSink(|r: Reading| {
                        let slot = parity.iter_mut().find(|p| p.0 == r.channel);
                        let keep = match slot {
                            Some(p) => {
                                p.1 = !p.1;
                                p.1
                            }
                            None => true,
                        };
                        if keep {
                            kept.push(r.with_quality(Quality::DECIMATED))?;
                        }
                        Ok(())
                    });
                    if P::Codec::default()
                        .decode(record.payload, &mut sink)
                        .is_err()
                    {
                        return;
                    }
                    (record.seq, record.payload.len())
                }
                _ => return,
            };
            let Ok(len) = P::Codec::default().encode(&kept, &mut self.block) else {
                return;
            };
            let payload = self.block.get(..len).unwrap_or_default();
            if len >= old_len
                || !matches!(
                    self.store
                        .replace_decimated(seq, payload, kept.len() as u16),
                    Ok(true)
                )
            {
                return;
            }
        }
    }

    fn seal(&mut self, now: Instant, flush: bool) {
        let sealed = if flush {
            self.stager.flush(&mut self.block)
        } else {
            self.stager.poll(now, &mut self.block)
        };
        if let Ok(Some(block)) = sealed {
            self.store_block(block);
        }
    }

    /// A reading from a sensor.
    pub fn on_reading(&mut self, _now: Instant, mut reading: Reading) {
        let Some(channel) = self
            .channels
            .iter_mut()
            .find(|c| c.spec.id == reading.channel)
        else {
            self.counters.dropped_readings = self.counters.dropped_readings.saturating_add(1);
            return;
        };
        self.counters.sampled = self.counters.sampled.saturating_add(1);
        let alerts = channel.rules.on_reading(&channel.spec, &mut reading);
        for alert in alerts {
            self.push_alert(alert);
        }
        match self.stager.push(reading, &mut self.block) {
            Ok(Some(sealed)) => self.store_block(sealed),
            Ok(None) => {}
            Err(crate::stager::StageError::Full { .. }) => {
                self.counters.dropped_readings = self.counters.dropped_readings.saturating_add(1);
            }
            // The reading is staged; the block will seal at a later push.
            Err(_) => {}
        }
    }

    /// Sampling `channel` failed.
    pub fn on_sample_failed(&mut self, now: Instant, channel: ChannelId, _kind: SensorErrorKind) {
        self.counters.sensor_faults = self.counters.sensor_faults.saturating_add(1);
        let alert = self
            .channels
            .iter_mut()
            .find(|c| c.spec.id == channel)
            .and_then(|c| c.rules.on_failure(&c.spec, now));
        if let Some(alert) = alert {
            self.push_alert(alert);
        }
    }

    /// The frame from the last [`Action::Send`] went out.
    pub fn on_sent(&mut self, now: Instant) {
        self.uplink.on_sent(now);
    }

    /// The frame from the last [`Action::Send`] could not be sent.
    pub fn on_send_failed(&mut self, now: Instant) {
        self.uplink.on_send_failed(now);
    }

    /// The link went down.
    pub fn on_link_down(&mut self, now: Instant) {
        let _ = self.uplink.on_link_down(now);
    }

    /// The far end asked the device to wait `wait` before it tries again
    /// (an HTTP 429 or 503 with `Retry-After`): the session ends, and the
    /// next waits out the longer of `wait` and the usual backoff.
    pub fn on_link_busy(&mut self, now: Instant, wait: Duration) {
        let _ = self.uplink.on_link_busy(now, wait);
    }

    /// A frame arrived from the server: the response to the frame in
    /// flight, with its acknowledgement and any config update and
    /// commands. It is opened in place in `bytes`. A forged, replayed or
    /// stale frame, or one for another device, is refused and counted, and
    /// changes nothing.
    // Out of line: config updates and commands are rare, and their
    // buffers should not sit in the stack frame of every poll.
    #[inline(never)]
    pub fn on_frame(&mut self, now: Instant, bytes: &mut [u8]) -> Result<Downlink, FrameError> {
        let (ack, response) = self.uplink.on_frame(now, bytes, &mut self.store)?;
        // Only an acknowledgement makes room in the alert lane.
        self.report_unreported();
        let mut done = Downlink {
            ack,
            ..Downlink::default()
        };
        for item in response.items() {
            match item {
                Item::Config(cbor) => done.config = Some(self.apply_config(now, cbor)),
                Item::Command { id, command } => {
                    if self.run_command(now, id, command) {
                        done.repeated = done.repeated.saturating_add(1);
                    } else {
                        done.commands = done.commands.saturating_add(1);
                    }
                }
                Item::Key { id, key } => done.key = Some(self.take_key(id, key)),
            }
        }
        Ok(done)
    }

    /// What to do at `now`. Call again after carrying it out, until it
    /// answers [`Action::Sleep`].
    pub fn poll(&mut self, now: Instant) -> Action<'_> {
        if let Some((output, value)) = self.outputs.pop_front() {
            return Action::SetOutput { output, value };
        }
        if let Some(seq) = self.reboot_after {
            let mut delivered = true;
            let _ = self.store.visit(|r| {
                delivered &= r.seq != seq;
                delivered
            });
            if delivered {
                self.reboot_after = None;
                return Action::Reboot;
            }
        }
        for channel in self.channels.iter_mut() {
            if now >= channel.next_due {
                let period = channel.spec.period;
                // After a long sleep, resume the cadence from now.
                let next = channel.next_due + period;
                channel.next_due = if next > now { next } else { now + period };
                return Action::Sample(channel.spec.id);
            }
        }
        self.seal(now, false);
        if now >= self.next_heartbeat {
            self.next_heartbeat = now + self.heartbeat;
            self.counters.heartbeats = self.counters.heartbeats.saturating_add(1);
            // An unsent heartbeat is replaced, not queued behind: only the
            // newest counts matter.
            if let Some(seq) = self.last_heartbeat.take() {
                if !self.uplink.in_flight().contains(&seq) {
                    let _ = self.store.discard(seq);
                }
            }
            let beat = self.heartbeat(now);
            self.last_heartbeat =
                self.push_report(Report::Heartbeat(beat), crate::model::Severity::Info);
            // Heartbeats go out on their own interval, with whatever is stored.
            self.uplink.flush_now();
        }
        match self.uplink.poll(now, &mut self.store, &mut self.frame) {
            Some(UplinkAction::RadioOn) => Action::RadioOn,
            Some(UplinkAction::RadioOff) => Action::RadioOff,
            Some(UplinkAction::Send(n)) => Action::Send(self.frame.get(..n).unwrap_or_default()),
            None => Action::Sleep(self.deadline(now)),
        }
    }

    /// The earliest instant anything is due.
    pub fn deadline(&mut self, now: Instant) -> Instant {
        let samples = self.channels.iter().map(|c| c.next_due).min();
        [
            samples,
            self.stager.deadline(),
            Some(self.next_heartbeat),
            self.uplink.deadline(now, &mut self.store),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(self.next_heartbeat)
    }
}
