//! Remote configuration: a versioned [`DeviceConfig`] in CBOR, so a server
//! in any language can write one.
//!
//! A config update is a CBOR map with small integer keys. Only `0`, the
//! version, is required; a key that is absent leaves its setting as it is.
//! The device checks the whole result before it changes anything: an update
//! is applied entirely or not at all, and a refused update is reported with
//! its reason while the old config stays in force.
//!
//! | key | setting | CBOR |
//! | --- | --- | --- |
//! | 0 | version; must be above the current one | uint |
//! | 1 | report interval, s | uint |
//! | 2 | heartbeat interval, s | uint |
//! | 3 | MTU, bytes | uint |
//! | 4 | sends of a frame before a session gives up | uint |
//! | 5 | first acknowledgement timeout, s | uint |
//! | 6 | longest backoff, s | uint |
//! | 7 | block: most readings | uint |
//! | 8 | block: most bytes | uint |
//! | 9 | block: longest age, s | uint |
//! | 10 | routine lane when full: 0 refuse, 1 evict oldest | uint |
//! | 11 | high-water mark, % | uint |
//! | 12 | channels: array of maps, below | array |
//! | 13 | link between sessions: 0 let it go, 1 keep it up | uint |
//!
//! A channel map names an existing channel by key 0 (its id) and may set:
//! 1 sampling period (s); 2 decimals; 3 normal range `[min, max]`; and its
//! rules, each an array or `null` to remove it: 4 high `[limit, hysteresis,
//! severity]`, 5 low (same), 6 rate `[max per s, severity]`, 7 stuck
//! `[samples, severity]`, 8 fault `[failures, severity]`. Numbers may be
//! integers or floats; severity is 0 info, 1 warning, 2 critical.
//!
//! ```
//! use telemark_core::config::{ConfigUpdate, DeviceConfig, EngineConfig};
//! use telemark_core::stager::StagerConfig;
//! use telemark_core::store::FullPolicy;
//! use telemark_core::time::Duration;
//! use telemark_core::uplink::UplinkConfig;
//!
//! let current: DeviceConfig<4> = DeviceConfig {
//!     version: 3,
//!     engine: EngineConfig {
//!         uplink: UplinkConfig::new(9, 256, Duration::from_mins(60)),
//!         stager: StagerConfig::new(128, 190, Duration::from_mins(60)),
//!         heartbeat: Duration::from_mins(360),
//!     },
//!     store_policy: FullPolicy::EvictOldest,
//!     channels: heapless::Vec::new(),
//! };
//! // {0: 4, 1: 900}: version 4 reports every 15 minutes.
//! let update = [0xa2, 0x00, 0x04, 0x01, 0x19, 0x03, 0x84];
//! let next = ConfigUpdate::parse(&update).unwrap().apply(&current).unwrap();
//! assert_eq!(next.version, 4);
//! assert_eq!(next.engine.uplink.report_interval, Duration::from_mins(15));
//! assert_eq!(next.engine.heartbeat, current.engine.heartbeat);
//! ```

use core::fmt;

use minicbor::data::Type;
use minicbor::Decoder;

use crate::channel::{ChannelSpec, Range, SpecError, ValueKind};
use crate::channel::{RateLimit, RunRule, Threshold};
use crate::model::{ChannelId, Severity};
use crate::stager::StagerConfig;
use crate::store::FullPolicy;
use crate::time::Duration;
use crate::uplink::UplinkConfig;

/// Most channel entries one update may carry.
pub const MAX_CHANNEL_UPDATES: usize = 16;

/// What the [`Engine`](crate::engine::Engine) needs to know besides its
/// channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct EngineConfig {
    /// When and how to send.
    pub uplink: UplinkConfig,
    /// When blocks seal. `max_bytes` must leave room for the frame envelope
    /// within the MTU.
    pub stager: StagerConfig,
    /// How often to report health.
    pub heartbeat: Duration,
}

/// Everything a server can configure on a device.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceConfig<const CH: usize> {
    /// Version of this config; each update must raise it.
    pub version: u32,
    /// Uplink, sealing and heartbeat settings.
    pub engine: EngineConfig,
    /// What the routine lane does when full.
    pub store_policy: FullPolicy,
    /// The channels, with their periods, resolutions and rules.
    pub channels: heapless::Vec<ChannelSpec, CH>,
}

/// Why a config update was refused. The old config stays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum ConfigError {
    /// Not valid CBOR, or not the map described in the module docs.
    Malformed,
    /// A key this device does not know.
    UnknownKey(u8),
    /// The version is not above the current one.
    StaleVersion,
    /// A channel this device does not have.
    UnknownChannel(ChannelId),
    /// A setting is out of range (key given).
    OutOfRange(u8),
    /// A channel's resulting spec is invalid.
    Channel(ChannelId, SpecError),
    /// The settings do not work together (for example a block larger than
    /// the MTU allows).
    Inconsistent,
    /// The store could not save the new config, so it was not applied:
    /// a config in force is always the one a reboot resumes with.
    NotSaved,
    /// The new MTU is lower than a record already stored needs: it could
    /// never be sent. Send the lower MTU once the store has drained.
    StrandsRecords,
}

impl ConfigError {
    /// A one-byte code for the config report: 1 malformed, 2 unknown key,
    /// 3 stale version, 4 unknown channel, 5 out of range, 6 channel,
    /// 7 inconsistent, 8 not saved.
    pub fn code(&self) -> u8 {
        match self {
            ConfigError::Malformed => 1,
            ConfigError::UnknownKey(_) => 2,
            ConfigError::StaleVersion => 3,
            ConfigError::UnknownChannel(_) => 4,
            ConfigError::OutOfRange(_) => 5,
            ConfigError::Channel(..) => 6,
            ConfigError::Inconsistent => 7,
            ConfigError::NotSaved => 8,
            ConfigError::StrandsRecords => 9,
        }
    }

    /// The key or channel the error is about, where there is one.
    pub fn detail(&self) -> u16 {
        match self {
            ConfigError::UnknownKey(k) | ConfigError::OutOfRange(k) => u16::from(*k),
            ConfigError::UnknownChannel(c) | ConfigError::Channel(c, _) => c.0,
            _ => 0,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Malformed => f.write_str("config is not the expected CBOR map"),
            ConfigError::UnknownKey(k) => write!(f, "unknown config key {k}"),
            ConfigError::StaleVersion => f.write_str("config version not above the current one"),
            ConfigError::UnknownChannel(c) => write!(f, "no channel {c} on this device"),
            ConfigError::OutOfRange(k) => write!(f, "config key {k} out of range"),
            ConfigError::Channel(c, e) => write!(f, "channel {c}: {e}"),
            ConfigError::Inconsistent => f.write_str("settings do not work together"),
            ConfigError::NotSaved => f.write_str("the store could not save the config"),
            ConfigError::StrandsRecords => {
                f.write_str("the MTU is lower than stored records need to be sent")
            }
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for ConfigError {}

impl From<minicbor::decode::Error> for ConfigError {
    fn from(_: minicbor::decode::Error) -> Self {
        ConfigError::Malformed
    }
}

/// A rule setting in an update: keep, remove, or set.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Change<T> {
    Keep,
    Remove,
    Set(T),
}

impl<T> Change<T> {
    /// The value it sets, if it sets one.
    fn set(self) -> Option<T> {
        match self {
            Change::Set(v) => Some(v),
            Change::Keep | Change::Remove => None,
        }
    }

    fn apply(self, current: Option<T>) -> Option<T> {
        match self {
            Change::Keep => current,
            Change::Remove => None,
            Change::Set(v) => Some(v),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct ChannelUpdate {
    id: ChannelId,
    period_s: Option<u32>,
    decimals: Option<u8>,
    range: Option<(f32, f32)>,
    high: Change<Threshold>,
    low: Change<Threshold>,
    rate: Change<RateLimit>,
    stuck: Change<RunRule>,
    fault: Change<RunRule>,
}

/// A parsed config update, not yet checked against the current config.
#[derive(Clone, Debug, PartialEq)]
pub struct ConfigUpdate {
    version: u32,
    settings: [Option<u32>; 14],
    channels: heapless::Vec<ChannelUpdate, MAX_CHANNEL_UPDATES>,
}

fn number(d: &mut Decoder<'_>) -> Result<f32, ConfigError> {
    Ok(match d.datatype()? {
        Type::F16 | Type::F32 | Type::F64 => d.f64()? as f32,
        Type::I8 | Type::I16 | Type::I32 | Type::I64 | Type::Int => d.i64()? as f32,
        _ => d.u64()? as f32,
    })
}

fn severity(d: &mut Decoder<'_>, key: u8) -> Result<Severity, ConfigError> {
    Severity::from_bits(d.u8()?).ok_or(ConfigError::OutOfRange(key))
}

/// `null`, or an array of exactly `n` items read by `read`.
fn rule<T>(
    d: &mut Decoder<'_>,
    n: u64,
    read: impl FnOnce(&mut Decoder<'_>) -> Result<T, ConfigError>,
) -> Result<Change<T>, ConfigError> {
    if d.datatype()? == Type::Null {
        d.null()?;
        return Ok(Change::Remove);
    }
    if d.array()? != Some(n) {
        return Err(ConfigError::Malformed);
    }
    read(d).map(Change::Set)
}

impl ChannelUpdate {
    /// A spec holding only what this update sets, the rest at values no
    /// check refuses: its [`ChannelSpec::validate`] refuses exactly what
    /// the update gets wrong on its own. Decimals make it a scaled channel,
    /// as only a scaled channel takes them.
    fn probe(&self) -> ChannelSpec {
        let (min, max) = self.range.unwrap_or((0.0, 1.0));
        ChannelSpec {
            id: self.id,
            unit: crate::channel::Unit::Count,
            kind: match self.decimals {
                Some(decimals) => ValueKind::Scaled { decimals },
                None => ValueKind::Float,
            },
            range: Range::new(min, max),
            period: secs(self.period_s.unwrap_or(1)),
            rules: crate::channel::Rules {
                high: self.high.set(),
                low: self.low.set(),
                rate: self.rate.set(),
                stuck: self.stuck.set(),
                fault: self.fault.set(),
            },
        }
    }
}

fn channel_update(d: &mut Decoder<'_>) -> Result<ChannelUpdate, ConfigError> {
    let entries = d.map()?.ok_or(ConfigError::Malformed)?;
    let mut u = ChannelUpdate {
        id: ChannelId(u16::MAX),
        period_s: None,
        decimals: None,
        range: None,
        high: Change::Keep,
        low: Change::Keep,
        rate: Change::Keep,
        stuck: Change::Keep,
        fault: Change::Keep,
    };
    let mut has_id = false;
    for _ in 0..entries {
        let key = d.u8()?;
        let threshold = |d: &mut Decoder<'_>| {
            Ok(Threshold {
                limit: number(d)?,
                hysteresis: number(d)?,
                severity: severity(d, key)?,
            })
        };
        let run = |d: &mut Decoder<'_>| {
            Ok(RunRule {
                count: d.u16()?,
                severity: severity(d, key)?,
            })
        };
        match key {
            0 => {
                u.id = ChannelId(d.u16()?);
                has_id = true;
            }
            1 => u.period_s = Some(d.u32()?),
            2 => u.decimals = Some(d.u8()?),
            3 => {
                if d.array()? != Some(2) {
                    return Err(ConfigError::Malformed);
                }
                u.range = Some((number(d)?, number(d)?));
            }
            4 => u.high = rule(d, 3, threshold)?,
            5 => u.low = rule(d, 3, threshold)?,
            6 => {
                u.rate = rule(d, 2, |d| {
                    Ok(RateLimit {
                        max_per_sec: number(d)?,
                        severity: severity(d, key)?,
                    })
                })?
            }
            7 => u.stuck = rule(d, 2, run)?,
            8 => u.fault = rule(d, 2, run)?,
            k => return Err(ConfigError::UnknownKey(k)),
        }
    }
    if has_id {
        Ok(u)
    } else {
        Err(ConfigError::Malformed)
    }
}

fn secs(s: u32) -> Duration {
    Duration::from_secs(u64::from(s))
}

/// Why a config could not be written as CBOR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct BufferTooSmall;

impl fmt::Display for BufferTooSmall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("buffer too small for the config")
    }
}

fn whole_secs(d: Duration) -> u32 {
    u32::try_from(d.as_millis() / 1000).unwrap_or(u32::MAX)
}

impl<const CH: usize> DeviceConfig<CH> {
    /// Writes the whole config as one update that sets every key, so that
    /// applying it to the firmware's defaults gives this config back: what
    /// a device persists to resume with its config after a reboot.
    ///
    /// Durations are written in whole seconds, the resolution of the
    /// protocol. Returns the length written into `out`.
    ///
    /// ```
    /// # use telemark_core::config::{ConfigUpdate, DeviceConfig, EngineConfig};
    /// # use telemark_core::stager::StagerConfig;
    /// # use telemark_core::store::FullPolicy;
    /// # use telemark_core::time::Duration;
    /// # use telemark_core::uplink::UplinkConfig;
    /// let defaults: DeviceConfig<4> = DeviceConfig {
    ///     version: 0,
    ///     engine: EngineConfig {
    ///         uplink: UplinkConfig::new(9, 256, Duration::from_mins(60)),
    ///         stager: StagerConfig::new(128, 190, Duration::from_mins(60)),
    ///         heartbeat: Duration::from_mins(360),
    ///     },
    ///     store_policy: FullPolicy::Refuse,
    ///     channels: heapless::Vec::new(),
    /// };
    /// let mut current = defaults.clone();
    /// current.version = 7;
    /// current.store_policy = FullPolicy::EvictOldest;
    /// let mut buf = [0u8; 256];
    /// let n = current.encode(&mut buf).unwrap();
    /// let restored = ConfigUpdate::parse(&buf[..n]).unwrap().apply(&defaults).unwrap();
    /// assert_eq!(restored, current);
    /// ```
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, BufferTooSmall> {
        use minicbor::encode::write::Cursor;
        let mut e = minicbor::Encoder::new(Cursor::new(out));
        self.write_cbor(&mut e).map_err(|_| BufferTooSmall)?;
        Ok(e.writer().position())
    }

    fn write_cbor<W: minicbor::encode::Write>(
        &self,
        e: &mut minicbor::Encoder<W>,
    ) -> Result<(), minicbor::encode::Error<W::Error>> {
        let u = &self.engine.uplink;
        let st = &self.engine.stager;
        // Key 13 only when set: a config that leaves the link as it was
        // encodes as it did before the key existed.
        e.map(13 + u64::from(u.keep_link_up))?
            .u8(0)?
            .u32(self.version)?;
        e.u8(1)?.u32(whole_secs(u.report_interval))?;
        e.u8(2)?.u32(whole_secs(self.engine.heartbeat))?;
        e.u8(3)?.u16(u.mtu)?;
        e.u8(4)?.u8(u.max_attempts)?;
        e.u8(5)?.u32(whole_secs(u.ack_timeout))?;
        e.u8(6)?.u32(whole_secs(u.max_backoff))?;
        e.u8(7)?.u16(st.max_readings)?;
        e.u8(8)?.u16(st.max_bytes)?;
        e.u8(9)?.u32(whole_secs(st.max_age))?;
        let policy = match self.store_policy {
            FullPolicy::Refuse => 0u8,
            FullPolicy::EvictOldest => 1,
        };
        e.u8(10)?.u8(policy)?;
        e.u8(11)?.u8(u.high_water_percent)?;
        e.u8(12)?.array(self.channels.len() as u64)?;
        for c in &self.channels {
            let decimals = match c.kind {
                ValueKind::Scaled { decimals } => Some(decimals),
                _ => None,
            };
            e.map(8 + u64::from(decimals.is_some()))?;
            e.u8(0)?.u16(c.id.0)?;
            e.u8(1)?.u32(whole_secs(c.period))?;
            if let Some(d) = decimals {
                e.u8(2)?.u8(d)?;
            }
            e.u8(3)?.array(2)?.f32(c.range.min)?.f32(c.range.max)?;
            for (key, t) in [(4u8, c.rules.high), (5, c.rules.low)] {
                e.u8(key)?;
                match t {
                    Some(t) => {
                        e.array(3)?
                            .f32(t.limit)?
                            .f32(t.hysteresis)?
                            .u8(t.severity as u8)?;
                    }
                    None => {
                        e.null()?;
                    }
                }
            }
            e.u8(6)?;
            match c.rules.rate {
                Some(r) => {
                    e.array(2)?.f32(r.max_per_sec)?.u8(r.severity as u8)?;
                }
                None => {
                    e.null()?;
                }
            }
            for (key, r) in [(7u8, c.rules.stuck), (8, c.rules.fault)] {
                e.u8(key)?;
                match r {
                    Some(r) => {
                        e.array(2)?.u16(r.count)?.u8(r.severity as u8)?;
                    }
                    None => {
                        e.null()?;
                    }
                }
            }
        }
        if u.keep_link_up {
            e.u8(13)?.u8(1)?;
        }
        Ok(())
    }
}

impl ConfigUpdate {
    /// Parses the CBOR of an update; checks its shape, not its values.
    pub fn parse(cbor: &[u8]) -> Result<Self, ConfigError> {
        let mut d = Decoder::new(cbor);
        let entries = d.map()?.ok_or(ConfigError::Malformed)?;
        let mut update = ConfigUpdate {
            version: 0,
            settings: [None; 14],
            channels: heapless::Vec::new(),
        };
        let mut has_version = false;
        for _ in 0..entries {
            match d.u8()? {
                0 => {
                    update.version = d.u32()?;
                    has_version = true;
                }
                12 => {
                    let n = d.array()?.ok_or(ConfigError::Malformed)?;
                    for _ in 0..n {
                        let c = channel_update(&mut d)?;
                        update
                            .channels
                            .push(c)
                            .map_err(|_| ConfigError::OutOfRange(12))?;
                    }
                }
                k @ (1..=11 | 13) => {
                    let v = d.u32()?;
                    if let Some(slot) = update.settings.get_mut(usize::from(k)) {
                        *slot = Some(v);
                    }
                }
                k => return Err(ConfigError::UnknownKey(k)),
            }
        }
        if !has_version || d.position() != cbor.len() {
            return Err(ConfigError::Malformed);
        }
        Ok(update)
    }

    /// The version the update brings.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The report interval the update sets (key 1), if it sets one: what
    /// a server expects to hear the device at.
    ///
    /// ```
    /// use telemark_core::config::ConfigUpdate;
    /// use telemark_core::time::Duration;
    /// // {0: 4, 1: 900}
    /// let update = ConfigUpdate::parse(&[0xa2, 0x00, 0x04, 0x01, 0x19, 0x03, 0x84]).unwrap();
    /// assert_eq!(update.report_interval(), Some(Duration::from_mins(15)));
    /// assert_eq!(update.heartbeat(), None);
    /// ```
    pub fn report_interval(&self) -> Option<Duration> {
        self.settings.get(1).copied().flatten().map(secs)
    }

    /// The heartbeat interval the update sets (key 2), if it sets one.
    pub fn heartbeat(&self) -> Option<Duration> {
        self.settings.get(2).copied().flatten().map(secs)
    }

    /// Checks every value the update sets on its own, whatever config the
    /// device runs: what a server can check before it accepts an update.
    ///
    /// [`ConfigUpdate::apply`] runs it first, so an update it refuses the
    /// device refuses too, with the same [`ConfigError`]. It leaves to
    /// `apply` what depends on the config in force: the version, a channel
    /// the device lacks, decimals on a channel that is not scaled, and
    /// settings that clash with the ones the update keeps.
    ///
    /// ```
    /// use telemark_core::config::{ConfigError, ConfigUpdate};
    /// // {0: 5, 5: 60, 6: 30}: a longest backoff below the first timeout.
    /// let update = ConfigUpdate::parse(&[0xa3, 0x00, 0x05, 0x05, 0x18, 0x3c, 0x06, 0x18, 0x1e]).unwrap();
    /// assert_eq!(update.check(), Err(ConfigError::Inconsistent));
    /// // {0: 5, 10: 2}: no store policy 2.
    /// let update = ConfigUpdate::parse(&[0xa2, 0x00, 0x05, 0x0a, 0x02]).unwrap();
    /// assert_eq!(update.check(), Err(ConfigError::OutOfRange(10)));
    /// ```
    pub fn check(&self) -> Result<(), ConfigError> {
        let s = |k: usize| self.settings.get(k).copied().flatten();
        // Each setting fits its field, in the order `apply` sets them.
        for (key, max) in [
            (3u8, u32::from(u16::MAX)),
            (4, u32::from(u8::MAX)),
            (7, u32::from(u16::MAX)),
            (8, u32::from(u16::MAX)),
            (10, 1),
            (11, u32::from(u8::MAX)),
            (13, 1),
        ] {
            if s(usize::from(key)).is_some_and(|v| v > max) {
                return Err(ConfigError::OutOfRange(key));
            }
        }
        // Settings the uplink, the stager or the heartbeat refuse whatever
        // the others are.
        let zero = |k: usize| s(k) == Some(0);
        let below = |k: usize, min: u16| s(k).is_some_and(|v| v < u32::from(min));
        let backoff_short =
            matches!((s(5), s(6)), (Some(timeout), Some(backoff)) if backoff < timeout);
        let high_water = s(11).is_some_and(|v| v == 0 || v > 100);
        if [1, 2, 4, 5, 7, 9].into_iter().any(zero)
            || below(3, UplinkConfig::MIN_MTU)
            || below(8, StagerConfig::MIN_BYTES)
            || backoff_short
            || high_water
        {
            return Err(ConfigError::Inconsistent);
        }
        for u in &self.channels {
            u.probe()
                .validate()
                .map_err(|e| ConfigError::Channel(u.id, e))?;
        }
        Ok(())
    }

    /// Checks the update's channels against the device's own, as `kind_of`
    /// gives them (`None`: the device has no such channel), with the
    /// errors [`ConfigUpdate::apply`] gives: a channel the device lacks,
    /// decimals on a channel that is not scaled. A server that knows the
    /// device's channels (from its channel reports) runs it after
    /// [`ConfigUpdate::check`].
    ///
    /// ```
    /// use telemark_core::channel::ValueKind;
    /// use telemark_core::config::{ConfigError, ConfigUpdate};
    /// use telemark_core::model::ChannelId;
    /// // {0: 5, 12: [{0: 2, 2: 1}]}: one decimal on channel 2.
    /// let update = ConfigUpdate::parse(&[0xa2, 0x00, 0x05, 0x0c, 0x81, 0xa2, 0x00, 0x02, 0x02, 0x01]).unwrap();
    /// let counter = |c: ChannelId| (c == ChannelId(2)).then_some(ValueKind::Counter);
    /// assert_eq!(update.check_channels(counter), Err(ConfigError::OutOfRange(2)));
    /// assert_eq!(update.check_channels(|_| None), Err(ConfigError::UnknownChannel(ChannelId(2))));
    /// ```
    pub fn check_channels(
        &self,
        kind_of: impl Fn(ChannelId) -> Option<ValueKind>,
    ) -> Result<(), ConfigError> {
        for u in &self.channels {
            let kind = kind_of(u.id).ok_or(ConfigError::UnknownChannel(u.id))?;
            if u.decimals.is_some() && !matches!(kind, ValueKind::Scaled { .. }) {
                return Err(ConfigError::OutOfRange(2));
            }
        }
        Ok(())
    }

    /// The config that results from applying this update to `current`, if
    /// every setting is valid; `current` is not touched.
    pub fn apply<const CH: usize>(
        &self,
        current: &DeviceConfig<CH>,
    ) -> Result<DeviceConfig<CH>, ConfigError> {
        if self.version <= current.version {
            return Err(ConfigError::StaleVersion);
        }
        self.check()?;
        self.merge(current)
    }

    /// Sets what the update sets on a copy of `current` and checks the
    /// result as a whole.
    fn merge<const CH: usize>(
        &self,
        current: &DeviceConfig<CH>,
    ) -> Result<DeviceConfig<CH>, ConfigError> {
        let mut next = current.clone();
        next.version = self.version;
        let s = |k: usize| self.settings.get(k).copied().flatten();
        let small = |k: u8, v: u32| u16::try_from(v).map_err(|_| ConfigError::OutOfRange(k));
        let e = &mut next.engine;
        if let Some(v) = s(1) {
            e.uplink.report_interval = secs(v);
        }
        if let Some(v) = s(2) {
            e.heartbeat = secs(v);
        }
        if let Some(v) = s(3) {
            e.uplink.mtu = small(3, v)?;
        }
        if let Some(v) = s(4) {
            e.uplink.max_attempts = u8::try_from(v).map_err(|_| ConfigError::OutOfRange(4))?;
        }
        if let Some(v) = s(5) {
            e.uplink.ack_timeout = secs(v);
        }
        if let Some(v) = s(6) {
            e.uplink.max_backoff = secs(v);
        }
        if let Some(v) = s(7) {
            e.stager.max_readings = small(7, v)?;
        }
        if let Some(v) = s(8) {
            e.stager.max_bytes = small(8, v)?;
        }
        if let Some(v) = s(9) {
            e.stager.max_age = secs(v);
        }
        if let Some(v) = s(10) {
            next.store_policy = match v {
                0 => FullPolicy::Refuse,
                1 => FullPolicy::EvictOldest,
                _ => return Err(ConfigError::OutOfRange(10)),
            };
        }
        if let Some(v) = s(11) {
            e.uplink.high_water_percent =
                u8::try_from(v).map_err(|_| ConfigError::OutOfRange(11))?;
        }
        if let Some(v) = s(13) {
            e.uplink.keep_link_up = match v {
                0 => false,
                1 => true,
                _ => return Err(ConfigError::OutOfRange(13)),
            };
        }
        if e.uplink.validate().is_err() || e.stager.validate().is_err() || e.heartbeat.is_zero() {
            return Err(ConfigError::Inconsistent);
        }
        for u in &self.channels {
            let spec = next
                .channels
                .iter_mut()
                .find(|c| c.id == u.id)
                .ok_or(ConfigError::UnknownChannel(u.id))?;
            if let Some(p) = u.period_s {
                spec.period = secs(p);
            }
            if let Some(d) = u.decimals {
                match spec.kind {
                    ValueKind::Scaled { .. } => spec.kind = ValueKind::Scaled { decimals: d },
                    _ => return Err(ConfigError::OutOfRange(2)),
                }
            }
            if let Some((min, max)) = u.range {
                spec.range = Range::new(min, max);
            }
            spec.rules.high = u.high.apply(spec.rules.high);
            spec.rules.low = u.low.apply(spec.rules.low);
            spec.rules.rate = u.rate.apply(spec.rules.rate);
            spec.rules.stuck = u.stuck.apply(spec.rules.stuck);
            spec.rules.fault = u.fault.apply(spec.rules.fault);
            spec.validate().map_err(|e| ConfigError::Channel(u.id, e))?;
        }
        Ok(next)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    //! [`ConfigUpdate::check`] against the device's own merge: it refuses
    //! only updates no device could accept, and every setting out of its
    //! field's range.
    extern crate std;
    use std::vec::Vec;

    use proptest::prelude::*;

    use super::*;
    use crate::channel::{Rules, Unit};

    fn uint(out: &mut Vec<u8>, v: u32) {
        match v {
            0..=23 => out.push(v as u8),
            24..=0xff => out.extend([0x18, v as u8]),
            0x100..=0xffff => {
                out.push(0x19);
                out.extend((v as u16).to_be_bytes());
            }
            _ => {
                out.push(0x1a);
                out.extend(v.to_be_bytes());
            }
        }
    }

    fn float(out: &mut Vec<u8>, x: f32) {
        out.push(0xfa);
        out.extend(x.to_be_bytes());
    }

    /// A rule in CBOR: `null`, or an array of numbers and a severity.
    #[derive(Clone, Debug)]
    enum RuleCbor {
        Remove,
        Set(Vec<f32>),
    }

    #[derive(Clone, Debug)]
    struct ChannelCbor {
        id: u16,
        period: Option<u32>,
        decimals: Option<u8>,
        range: Option<(f32, f32)>,
        /// Keys 4 to 8.
        rules: [Option<RuleCbor>; 5],
    }

    fn encode(version: u32, settings: &[(u8, u32)], channels: &[ChannelCbor]) -> Vec<u8> {
        let mut out = Vec::new();
        out.push(0xa0 | (1 + settings.len() + usize::from(!channels.is_empty())) as u8);
        out.extend([0x00]);
        uint(&mut out, version);
        for &(k, v) in settings {
            out.push(k);
            uint(&mut out, v);
        }
        if !channels.is_empty() {
            out.extend([0x0c, 0x80 | channels.len() as u8]);
        }
        for c in channels {
            let keys = 1
                + usize::from(c.period.is_some())
                + usize::from(c.decimals.is_some())
                + usize::from(c.range.is_some())
                + c.rules.iter().flatten().count();
            out.extend([0xa0 | keys as u8, 0x00]);
            uint(&mut out, u32::from(c.id));
            if let Some(p) = c.period {
                out.push(0x01);
                uint(&mut out, p);
            }
            if let Some(d) = c.decimals {
                out.push(0x02);
                uint(&mut out, u32::from(d));
            }
            if let Some((min, max)) = c.range {
                out.extend([0x03, 0x82]);
                float(&mut out, min);
                float(&mut out, max);
            }
            for (key, rule) in (4u8..).zip(&c.rules) {
                match rule {
                    None => {}
                    Some(RuleCbor::Remove) => out.extend([key, 0xf6]),
                    Some(RuleCbor::Set(numbers)) => {
                        out.extend([key, 0x80 | (numbers.len() + 1) as u8]);
                        for (i, x) in numbers.iter().enumerate() {
                            // Run rules count in a u16.
                            if key >= 7 && i == 0 {
                                uint(&mut out, *x as u32);
                            } else {
                                float(&mut out, *x);
                            }
                        }
                        out.push(0x01);
                    }
                }
            }
        }
        out
    }

    fn number() -> impl Strategy<Value = f32> {
        prop_oneof![
            Just(0.0),
            Just(-1.0),
            Just(f32::NAN),
            Just(f32::INFINITY),
            Just(3.0e9),
            -100.0f32..100.0,
        ]
    }

    fn rule(numbers: usize, key: u8) -> impl Strategy<Value = Option<RuleCbor>> {
        let counts = key >= 7;
        prop_oneof![
            Just(None),
            Just(Some(RuleCbor::Remove)),
            proptest::collection::vec(number(), numbers).prop_map(move |mut v| {
                if counts {
                    v[0] = v[0].abs().min(5.0).floor();
                }
                Some(RuleCbor::Set(v))
            }),
        ]
    }

    fn channel() -> impl Strategy<Value = ChannelCbor> {
        (
            prop_oneof![Just(1u16), Just(2), Just(7)],
            proptest::option::of(prop_oneof![Just(0u32), 1..600u32]),
            proptest::option::of(0u8..12),
            proptest::option::of((number(), number())),
            (rule(2, 4), rule(2, 5), rule(1, 6), rule(1, 7), rule(1, 8)),
        )
            .prop_map(
                |(id, period, decimals, range, (h, l, r, s, f))| ChannelCbor {
                    id,
                    period,
                    decimals,
                    range,
                    rules: [h, l, r, s, f],
                },
            )
    }

    fn setting() -> impl Strategy<Value = (u8, u32)> {
        (
            prop_oneof![1u8..=11, Just(13)],
            prop_oneof![
                Just(0u32),
                1..4u32,
                Just(31),
                Just(32),
                Just(63),
                Just(64),
                Just(100),
                Just(101),
                Just(255),
                Just(256),
                1..100_000u32,
                Just(65_536),
                Just(u32::MAX),
            ],
        )
    }

    /// Two configs a device may run: a scaled and a float channel, short
    /// and long timings.
    fn currents() -> [DeviceConfig<4>; 2] {
        let scaled = ChannelSpec::new(
            ChannelId(1),
            Unit::Celsius,
            ValueKind::Scaled { decimals: 1 },
            Range::new(-20.0, 60.0),
            Duration::from_mins(5),
            Rules::NONE.high(40.0, 1.0, Severity::Critical),
        );
        let float = ChannelSpec::new(
            ChannelId(2),
            Unit::Count,
            ValueKind::Float,
            Range::new(0.0, 1.0e6),
            Duration::from_secs(10),
            Rules::NONE.low(1.0, 0.5, Severity::Warning),
        );
        let config = |interval: u64, mtu: u16| DeviceConfig {
            version: 3,
            engine: EngineConfig {
                uplink: UplinkConfig::new(9, mtu, Duration::from_secs(interval)),
                stager: StagerConfig::new(64, 120, Duration::from_secs(interval)),
                heartbeat: Duration::from_secs(interval * 6),
            },
            store_policy: FullPolicy::EvictOldest,
            channels: [scaled, float].into_iter().collect(),
        };
        [config(60, 256), config(3_600, 1_024)]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]
        #[test]
        fn check_refuses_only_what_no_device_accepts(
            settings in proptest::collection::vec(setting(), 0..3),
            channels in proptest::collection::vec(channel(), 0..3),
        ) {
            let cbor = encode(4, &settings, &channels);
            let update = ConfigUpdate::parse(&cbor).unwrap();
            for current in currents() {
                let merged = update.merge(&current);
                match update.check() {
                    // The settings come first, in the same order.
                    Err(e @ (ConfigError::OutOfRange(_) | ConfigError::Inconsistent)) => {
                        prop_assert_eq!(merged, Err(e), "{:?} {:?}", settings, channels)
                    }
                    Err(e) => prop_assert!(
                        merged.is_err(),
                        "check refused ({e}) what the device merges: {settings:?} {channels:?}"
                    ),
                    Ok(()) => {
                        match merged {
                            Err(ConfigError::OutOfRange(k)) => {
                                prop_assert_eq!(k, 2, "check let a setting out of range through")
                            }
                            // The one clash with settings kept: a timeout
                            // and a backoff of which the update sets one.
                            Err(ConfigError::Inconsistent) => {
                                let sets = |k: u8| settings.iter().any(|s| s.0 == k);
                                prop_assert!(sets(5) != sets(6), "check let {:?} through", settings)
                            }
                            _ => {}
                        }
                    }
                }
                if let Err(e) = update.check() {
                    prop_assert_eq!(update.apply(&current), Err(e));
                }
                // Against the device's channels, as a server knows them.
                let kind_of = |c: ChannelId| {
                    current.channels.iter().find(|s| s.id == c).map(|s| s.kind)
                };
                if let Err(e) = update.check_channels(kind_of) {
                    prop_assert!(
                        update.merge(&current).is_err(),
                        "check_channels refused ({e}) what the device merges"
                    );
                }
            }
        }
    }
}
