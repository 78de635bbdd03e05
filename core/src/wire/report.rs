//! What a device reports besides blocks of readings: alerts and health
//! heartbeats, each the payload of one record.
//!
//! A record's payload says what it is by its first byte: 0, 1 and 2 are
//! the block modes of [`crate::codec::CompactCodec`]; the tags below are the
//! other reports. All integers are varints.
//!
//! | tag | report | fields |
//! | --- | --- | --- |
//! | `0x10` | alert | channel, kind, severity (u8 each but channel), time (ms), value kind (u8, 4 = none), value bits |
//! | `0x11` | heartbeat | uptime (s), sampled, sent readings, bytes on air, retries, evicted, decimated, sensor faults, queue depth, reset reason (u8), wakeups |
//! | `0x12` | config status | version, code (u8: 0 applied, else [`crate::config::ConfigError::code`]), detail |
//! | `0x13` | command result | id, status (u8: 0 done, 1 refused), value |
//! | `0x14` | crash | kind (u8: 0 panic, 1 hard fault), pc, lr, fault status, uptime at the crash (ms), reset reason (u8), text length (u8), text (UTF-8) |
//! | `0x15` | key status | key id (u8), status (u8, [`KeyStatus`]) |
//! | `0x16` | channel | channel, unit (u8, [`Unit::code`]), kind (u8: 0 scaled, 1 float, 2 bool, 3 counter), decimals (u8, 0 unless scaled) |
//!
//! ```
//! use telemark_core::wire::report::{Heartbeat, Report, ResetReason};
//! let beat = Heartbeat { uptime_s: 86_400, sampled: 2_880, sent_readings: 2_800, bytes_on_air: 3_100,
//!     retries: 4, evicted: 0, decimated: 0, sensor_faults: 1, queue_depth: 2,
//!     reset_reason: ResetReason::PowerOn, wakeups: 97 };
//! let mut buf = [0u8; 48];
//! let n = Report::Heartbeat(beat).encode(&mut buf).unwrap();
//! assert!(n <= 24, "{n} bytes");
//! assert_eq!(Report::decode(&buf[..n]), Ok(Report::Heartbeat(beat)));
//! ```

use super::seal::{FrameError, FrameWriteError};
use crate::bytes::{ByteReader, ByteWriter};
use crate::channel::{Unit, ValueKind};
use crate::model::{Alert, AlertKind, ChannelId, Severity, Value};
use crate::time::Instant;

/// First byte of an alert record.
pub const TAG_ALERT: u8 = 0x10;
/// The value kind an alert without a value carries.
const NO_VALUE: u8 = 4;
/// First byte of a heartbeat record.
pub const TAG_HEARTBEAT: u8 = 0x11;
/// First byte of a config status record.
pub const TAG_CONFIG: u8 = 0x12;
/// First byte of a command result record.
pub const TAG_COMMAND: u8 = 0x13;
/// First byte of a crash record.
pub const TAG_CRASH: u8 = 0x14;
/// First byte of a key status record.
pub const TAG_KEY: u8 = 0x15;
/// First byte of a channel record.
pub const TAG_CHANNEL: u8 = 0x16;

/// The largest report's payload: a crash report with its whole text and
/// every number at its widest (a heartbeat takes at most 52 bytes, an alert
/// 22).
pub const MAX_REPORT_LEN: usize = 2 + 4 * 5 + 2 + CRASH_TEXT;

/// What a device did with a key the server sent it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u8)]
pub enum KeyStatus {
    /// Saved, and sealing every frame from now on.
    InUse = 0,
    /// Refused: the store cannot keep a key across a power cut (a RAM
    /// store), so the device would come back with a key the server
    /// retired. The old key stays.
    NotPersistent = 1,
    /// Refused: the store failed to save it. The old key stays.
    NotSaved = 2,
    /// Refused: the id is the one in force with another key, or the
    /// device seals nothing (a bench device).
    Refused = 3,
}

impl KeyStatus {
    /// The status of its code.
    pub fn from_u8(code: u8) -> Option<Self> {
        Some(match code {
            0 => KeyStatus::InUse,
            1 => KeyStatus::NotPersistent,
            2 => KeyStatus::NotSaved,
            3 => KeyStatus::Refused,
            _ => return None,
        })
    }
}

/// Most bytes of text (panic location and message) a crash record keeps.
pub const CRASH_TEXT: usize = 32;

/// What stopped the firmware.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum CrashKind {
    /// A Rust panic.
    Panic = 0,
    /// A processor fault (HardFault on Cortex-M).
    HardFault = 1,
}

/// A crash captured by the board support before the reset, reported after
/// it (see [`crate::engine::Engine::report_crash`]).
///
/// ```
/// use telemark_core::wire::report::{Crash, CrashKind, Report, ResetReason};
/// let crash = Crash::new(CrashKind::Panic, 0, 0, 0, 73_000, "src/main.rs:42 overflow");
/// assert_eq!(crash.text(), "src/main.rs:42 overflow");
/// let mut buf = [0u8; 64];
/// let report = Report::Crash { crash, reset_reason: ResetReason::Crash };
/// let n = report.encode(&mut buf).unwrap();
/// assert_eq!(Report::decode(&buf[..n]), Ok(report));
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Crash {
    /// Panic or fault.
    pub kind: CrashKind,
    /// Program counter at the fault (0 for a panic).
    pub pc: u32,
    /// Link register at the fault (0 for a panic).
    pub lr: u32,
    /// Fault status register (CFSR on Cortex-M; 0 for a panic).
    pub status: u32,
    /// Milliseconds from boot to the crash, as last told to the board support.
    pub uptime_ms: u32,
    text: [u8; CRASH_TEXT],
    text_len: u8,
}

impl core::fmt::Debug for Crash {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Crash")
            .field("kind", &self.kind)
            .field("pc", &format_args!("{:#010x}", self.pc))
            .field("lr", &format_args!("{:#010x}", self.lr))
            .field("status", &format_args!("{:#010x}", self.status))
            .field("uptime_ms", &self.uptime_ms)
            .field("text", &self.text())
            .finish()
    }
}

impl Crash {
    /// A crash record; `text` is cut to [`CRASH_TEXT`] bytes at a
    /// character boundary.
    pub fn new(kind: CrashKind, pc: u32, lr: u32, status: u32, uptime_ms: u32, text: &str) -> Self {
        let mut end = text.len().min(CRASH_TEXT);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let mut buf = [0u8; CRASH_TEXT];
        let bytes = text.as_bytes().get(..end).unwrap_or_default();
        if let Some(dst) = buf.get_mut(..end) {
            dst.copy_from_slice(bytes);
        }
        Crash {
            kind,
            pc,
            lr,
            status,
            uptime_ms,
            text: buf,
            text_len: end as u8,
        }
    }

    /// The panic location and message, as much as was kept.
    pub fn text(&self) -> &str {
        let bytes = self
            .text
            .get(..usize::from(self.text_len))
            .unwrap_or_default();
        match core::str::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => core::str::from_utf8(bytes.get(..e.valid_up_to()).unwrap_or_default())
                .unwrap_or_default(),
        }
    }
}

/// Why the device last started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum ResetReason {
    /// Not known.
    #[default]
    Unknown = 0,
    /// Power applied.
    PowerOn = 1,
    /// Supply dropped below the brown-out level.
    BrownOut = 2,
    /// The watchdog fired.
    Watchdog = 3,
    /// Software asked (a reboot command, an update).
    Software = 4,
    /// A panic or fault.
    Crash = 5,
    /// The reset pin.
    Pin = 6,
}

impl ResetReason {
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => ResetReason::Unknown,
            1 => ResetReason::PowerOn,
            2 => ResetReason::BrownOut,
            3 => ResetReason::Watchdog,
            4 => ResetReason::Software,
            5 => ResetReason::Crash,
            6 => ResetReason::Pin,
            _ => return None,
        })
    }
}

/// A health heartbeat: the counters a fleet operator watches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Heartbeat {
    /// Seconds since boot.
    pub uptime_s: u32,
    /// Readings taken.
    pub sampled: u32,
    /// Readings acknowledged by the server.
    pub sent_readings: u32,
    /// Bytes of frames sent, resends included.
    pub bytes_on_air: u32,
    /// Frames resent.
    pub retries: u32,
    /// Readings evicted by the store's policy.
    pub evicted: u32,
    /// Readings dropped by decimation.
    pub decimated: u32,
    /// Failed samples.
    pub sensor_faults: u32,
    /// Records waiting in the store.
    pub queue_depth: u32,
    /// Why the device last started.
    pub reset_reason: ResetReason,
    /// Times the radio was woken.
    pub wakeups: u32,
}

/// A report other than a block.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Report {
    /// An alert raised by a channel's rules.
    Alert(Alert),
    /// A health heartbeat.
    Heartbeat(Heartbeat),
    /// What became of a config update.
    ConfigStatus {
        /// The version in force after the update.
        version: u32,
        /// 0 if the update was applied, else why it was refused.
        code: u8,
        /// The key or channel the refusal is about.
        detail: u16,
    },
    /// What became of a command.
    CommandResult {
        /// The command's id.
        id: u32,
        /// 0 done, 1 refused.
        status: u8,
        /// A result value (a ping answers with the uptime in seconds).
        value: u32,
    },
    /// What became of a new key (a rotation).
    KeyStatus {
        /// The id of the key the server sent.
        id: u8,
        /// What the device did with it.
        status: KeyStatus,
    },
    /// What a channel measures and how its values read: sent for every
    /// channel when the engine starts, and again for a channel whose
    /// resolution a config changes, so that a server can label and scale
    /// the values of its blocks.
    Channel {
        /// Which channel.
        channel: ChannelId,
        /// Its unit.
        unit: Unit,
        /// How its values are represented.
        kind: ValueKind,
    },
    /// A crash before the last reset.
    Crash {
        /// What was captured.
        crash: Crash,
        /// Why the device started after it.
        reset_reason: ResetReason,
    },
}

fn alert_kind(v: u8) -> Option<AlertKind> {
    Some(match v {
        0 => AlertKind::High,
        1 => AlertKind::HighCleared,
        2 => AlertKind::Low,
        3 => AlertKind::LowCleared,
        4 => AlertKind::RateOfChange,
        5 => AlertKind::Stuck,
        6 => AlertKind::SensorFault,
        7 => AlertKind::SensorRecovered,
        _ => return None,
    })
}

fn alert_kind_code(k: AlertKind) -> u8 {
    match k {
        AlertKind::High => 0,
        AlertKind::HighCleared => 1,
        AlertKind::Low => 2,
        AlertKind::LowCleared => 3,
        AlertKind::RateOfChange => 4,
        AlertKind::Stuck => 5,
        AlertKind::SensorFault => 6,
        AlertKind::SensorRecovered => 7,
    }
}

impl Report {
    /// Writes the report into `out`; returns its length.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, FrameWriteError> {
        let mut w = ByteWriter::new(out);
        match self {
            Report::Alert(a) => {
                w.u8(TAG_ALERT)?;
                w.varint(u64::from(a.channel.0))?;
                w.u8(alert_kind_code(a.kind))?;
                w.u8(a.severity as u8)?;
                w.varint(a.time.as_millis())?;
                let (kind, bits) = a.value.map_or((NO_VALUE, 0), |v| (v.kind_code(), v.bits()));
                w.u8(kind)?;
                w.varint(u64::from(bits))?;
            }
            Report::Heartbeat(h) => {
                w.u8(TAG_HEARTBEAT)?;
                for v in [
                    h.uptime_s,
                    h.sampled,
                    h.sent_readings,
                    h.bytes_on_air,
                    h.retries,
                    h.evicted,
                    h.decimated,
                    h.sensor_faults,
                    h.queue_depth,
                ] {
                    w.varint(u64::from(v))?;
                }
                w.u8(h.reset_reason as u8)?;
                w.varint(u64::from(h.wakeups))?;
            }
            Report::ConfigStatus {
                version,
                code,
                detail,
            } => {
                w.u8(TAG_CONFIG)?;
                w.varint(u64::from(*version))?;
                w.u8(*code)?;
                w.varint(u64::from(*detail))?;
            }
            Report::CommandResult { id, status, value } => {
                w.u8(TAG_COMMAND)?;
                w.varint(u64::from(*id))?;
                w.u8(*status)?;
                w.varint(u64::from(*value))?;
            }
            Report::KeyStatus { id, status } => {
                w.u8(TAG_KEY)?;
                w.u8(*id)?;
                w.u8(*status as u8)?;
            }
            Report::Channel {
                channel,
                unit,
                kind,
            } => {
                w.u8(TAG_CHANNEL)?;
                w.varint(u64::from(channel.0))?;
                w.u8(unit.code())?;
                let (code, decimals) = match kind {
                    ValueKind::Scaled { decimals } => (0, *decimals),
                    ValueKind::Float => (1, 0),
                    ValueKind::Bool => (2, 0),
                    ValueKind::Counter => (3, 0),
                };
                w.u8(code)?;
                w.u8(decimals)?;
            }
            Report::Crash {
                crash,
                reset_reason,
            } => {
                w.u8(TAG_CRASH)?;
                w.u8(crash.kind as u8)?;
                for v in [crash.pc, crash.lr, crash.status, crash.uptime_ms] {
                    w.varint(u64::from(v))?;
                }
                w.u8(*reset_reason as u8)?;
                let text = crash.text().as_bytes();
                w.u8(text.len() as u8)?;
                for &b in text {
                    w.u8(b)?;
                }
            }
        }
        Ok(w.position())
    }

    /// Reads a report; blocks and unknown tags are errors.
    pub fn decode(bytes: &[u8]) -> Result<Report, FrameError> {
        let mut r = ByteReader::new(bytes);
        let report = match r.u8()? {
            TAG_ALERT => {
                let channel =
                    ChannelId(u16::try_from(r.varint()?).map_err(|_| FrameError::Malformed)?);
                let kind = alert_kind(r.u8()?).ok_or(FrameError::Malformed)?;
                let severity = Severity::from_bits(r.u8()?).ok_or(FrameError::Malformed)?;
                let time = Instant::from_millis(r.varint()?);
                let value_kind = r.u8()?;
                let bits = r.varint_u32()?;
                let value = match value_kind {
                    NO_VALUE => None,
                    k => Some(Value::from_code(k, bits).ok_or(FrameError::Malformed)?),
                };
                Report::Alert(Alert {
                    channel,
                    kind,
                    severity,
                    value,
                    time,
                })
            }
            TAG_HEARTBEAT => {
                let mut f = [0u32; 9];
                for slot in &mut f {
                    *slot = r.varint_u32()?;
                }
                let reset_reason = ResetReason::from_u8(r.u8()?).ok_or(FrameError::Malformed)?;
                let wakeups = r.varint_u32()?;
                let [uptime_s, sampled, sent_readings, bytes_on_air, retries, evicted, decimated, sensor_faults, queue_depth] =
                    f;
                Report::Heartbeat(Heartbeat {
                    uptime_s,
                    sampled,
                    sent_readings,
                    bytes_on_air,
                    retries,
                    evicted,
                    decimated,
                    sensor_faults,
                    queue_depth,
                    reset_reason,
                    wakeups,
                })
            }
            TAG_CONFIG => Report::ConfigStatus {
                version: r.varint_u32()?,
                code: r.u8()?,
                detail: u16::try_from(r.varint()?).map_err(|_| FrameError::Malformed)?,
            },
            TAG_COMMAND => Report::CommandResult {
                id: r.varint_u32()?,
                status: r.u8()?,
                value: r.varint_u32()?,
            },
            TAG_KEY => Report::KeyStatus {
                id: r.u8()?,
                status: KeyStatus::from_u8(r.u8()?).ok_or(FrameError::Malformed)?,
            },
            TAG_CHANNEL => {
                let channel =
                    ChannelId(u16::try_from(r.varint()?).map_err(|_| FrameError::Malformed)?);
                let unit = Unit::from_code(r.u8()?).ok_or(FrameError::Malformed)?;
                let kind = match (r.u8()?, r.u8()?) {
                    (0, decimals) if decimals <= crate::channel::MAX_DECIMALS => {
                        ValueKind::Scaled { decimals }
                    }
                    (1, 0) => ValueKind::Float,
                    (2, 0) => ValueKind::Bool,
                    (3, 0) => ValueKind::Counter,
                    _ => return Err(FrameError::Malformed),
                };
                Report::Channel {
                    channel,
                    unit,
                    kind,
                }
            }
            TAG_CRASH => {
                let kind = match r.u8()? {
                    0 => CrashKind::Panic,
                    1 => CrashKind::HardFault,
                    _ => return Err(FrameError::Malformed),
                };
                let mut f = [0u32; 4];
                for slot in &mut f {
                    *slot = r.varint_u32()?;
                }
                let reset_reason = ResetReason::from_u8(r.u8()?).ok_or(FrameError::Malformed)?;
                let len = usize::from(r.u8()?);
                if len > CRASH_TEXT {
                    return Err(FrameError::Malformed);
                }
                let mut text = [0u8; CRASH_TEXT];
                for slot in text.iter_mut().take(len) {
                    *slot = r.u8()?;
                }
                let text = core::str::from_utf8(text.get(..len).unwrap_or_default())
                    .map_err(|_| FrameError::Malformed)?;
                let [pc, lr, status, uptime_ms] = f;
                Report::Crash {
                    crash: Crash::new(kind, pc, lr, status, uptime_ms, text),
                    reset_reason,
                }
            }
            _ => return Err(FrameError::Malformed),
        };
        if r.remaining() != 0 {
            return Err(FrameError::Malformed);
        }
        Ok(report)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_channel_report_round_trips_and_refuses_what_no_channel_is() {
        let gas = Report::Channel {
            channel: ChannelId(300),
            unit: Unit::CubicMetre,
            kind: ValueKind::Scaled { decimals: 3 },
        };
        let mut buf = [0u8; 16];
        let n = gas.encode(&mut buf).unwrap();
        assert_eq!(&buf[..n], [TAG_CHANNEL, 0xac, 0x02, 5, 0, 3]);
        assert_eq!(Report::decode(&buf[..n]), Ok(gas));
        for bad in [
            [TAG_CHANNEL, 1, 18, 0, 0], // no unit 18
            [TAG_CHANNEL, 1, 1, 1, 2],  // decimals on a float
            [TAG_CHANNEL, 1, 1, 0, 10], // more than 9 decimals
            [TAG_CHANNEL, 1, 1, 4, 0],  // no kind 4
        ] {
            assert_eq!(Report::decode(&bad), Err(FrameError::Malformed), "{bad:?}");
        }
    }
}
