//! The reading model: one [`Reading`] type serves every sensor.
//!
//! A reading is a channel, a time, a [`Value`] and [`Quality`] flags. Adding a
//! sensor never changes the storage, the codec, the transport or the cloud:
//! it only declares more channels.

use core::fmt;

use crate::time::Instant;

/// Identifies one measured quantity on a device (gas volume, temperature,
/// acceleration x...). Chosen by the firmware author, unique per device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ChannelId(pub u16);

impl fmt::Display for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ch{}", self.0)
    }
}

/// A measured value.
///
/// Channels with a declared resolution carry [`Value::Scaled`]: an exact
/// integer count of resolution steps (2150 at 0.01 °C is 21.50 °C). That keeps
/// values exact from sensor to cloud and lets the codec pack them tightly.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Value {
    /// Integer count of the channel's resolution steps.
    Scaled(i32),
    /// A float for channels without a declared resolution; kept bit-exact.
    Float(f32),
    /// An on/off state (door open, pump running).
    Bool(bool),
    /// A monotonic counter (meter pulses); wraps at `u32::MAX`.
    Counter(u32),
}

impl Value {
    /// The value as a float in raw units (steps for `Scaled`, 0/1 for `Bool`).
    ///
    /// Use [`ChannelSpec::to_units`](crate::channel::ChannelSpec::to_units) for engineering units.
    pub fn raw_f32(self) -> f32 {
        match self {
            Value::Scaled(v) => v as f32,
            Value::Float(v) => v,
            Value::Bool(b) => u8::from(b) as f32,
            Value::Counter(c) => c as f32,
        }
    }

    /// The value's kind as the block codec and the reports write it:
    /// 0 scaled, 1 float, 2 bool, 3 counter.
    pub(crate) const fn kind_code(self) -> u8 {
        match self {
            Value::Scaled(_) => 0,
            Value::Float(_) => 1,
            Value::Bool(_) => 2,
            Value::Counter(_) => 3,
        }
    }

    /// The value's 32 bits as the block codec and the reports write them
    /// (two's complement for `Scaled`, IEEE 754 for `Float`).
    pub(crate) const fn bits(self) -> u32 {
        match self {
            Value::Scaled(v) => v as u32,
            Value::Float(f) => f.to_bits(),
            Value::Bool(b) => b as u32,
            Value::Counter(c) => c,
        }
    }

    /// The value written as `kind` and `bits`, or `None` for an unknown kind
    /// or a bool other than 0 and 1.
    pub(crate) fn from_code(kind: u8, bits: u32) -> Option<Value> {
        Some(match kind {
            0 => Value::Scaled(bits as i32),
            1 => Value::Float(f32::from_bits(bits)),
            2 if bits <= 1 => Value::Bool(bits == 1),
            3 => Value::Counter(bits),
            _ => return None,
        })
    }

    /// True if both values are the same kind and bit-identical.
    ///
    /// Unlike `==`, a NaN float equals itself here, which is what the
    /// stuck-value rule needs.
    pub fn same_as(self, other: Value) -> bool {
        match (self, other) {
            (Value::Float(a), Value::Float(b)) => a.to_bits() == b.to_bits(),
            (a, b) => a == b,
        }
    }
}

/// Quality flags attached to a reading. Empty means a good, measured value.
///
/// ```
/// use telemark_core::model::Quality;
/// let q = Quality::OUT_OF_RANGE.union(Quality::ESTIMATED);
/// assert!(q.contains(Quality::ESTIMATED));
/// assert!(!Quality::GOOD.contains(Quality::ESTIMATED));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Quality(u8);

impl Quality {
    /// A good, measured value.
    pub const GOOD: Quality = Quality(0);
    /// Outside the channel's declared normal range.
    pub const OUT_OF_RANGE: Quality = Quality(1 << 0);
    /// Estimated or interpolated rather than measured.
    pub const ESTIMATED: Quality = Quality(1 << 1);
    /// Taken while the sensor was warming up or calibrating.
    pub const CALIBRATING: Quality = Quality(1 << 2);
    /// The time is uncertain (taken before the clock was synchronised).
    pub const TIME_UNCERTAIN: Quality = Quality(1 << 3);
    /// Resolution was reduced to save space (block decimated while offline).
    pub const DECIMATED: Quality = Quality(1 << 4);

    /// Flags from their bits, as stored on the wire.
    pub const fn from_bits(bits: u8) -> Self {
        Quality(bits)
    }

    /// The flag bits, as stored on the wire.
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// Both sets of flags.
    pub const fn union(self, other: Quality) -> Quality {
        Quality(self.0 | other.0)
    }

    /// True if every flag of `other` is set.
    pub const fn contains(self, other: Quality) -> bool {
        self.0 & other.0 == other.0
    }

    /// True if no flag is set.
    pub const fn is_good(self) -> bool {
        self.0 == 0
    }
}

/// One measurement of one channel.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Reading {
    /// Which quantity.
    pub channel: ChannelId,
    /// When it was taken, in device uptime.
    pub time: Instant,
    /// What was measured.
    pub value: Value,
    /// How much to trust it.
    pub quality: Quality,
}

impl Reading {
    /// A good reading.
    pub const fn new(channel: ChannelId, time: Instant, value: Value) -> Self {
        Reading {
            channel,
            time,
            value,
            quality: Quality::GOOD,
        }
    }

    /// True if both readings are identical, bit for bit (a NaN float
    /// equals itself here, unlike `==`): what a lossless codec must return.
    pub fn same_as(&self, other: &Reading) -> bool {
        self.channel == other.channel
            && self.time == other.time
            && self.quality == other.quality
            && self.value.same_as(other.value)
    }

    /// The same reading with `quality` added.
    pub const fn with_quality(mut self, quality: Quality) -> Self {
        self.quality = self.quality.union(quality);
        self
    }
}

/// How urgent an alert is. Ordered: `Info < Warning < Critical`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u8)]
pub enum Severity {
    /// Worth knowing; no action needed (a condition cleared, a sensor recovered).
    #[default]
    Info = 0,
    /// Needs attention.
    Warning = 1,
    /// Needs attention now.
    Critical = 2,
}

impl Severity {
    /// All severities, most urgent first.
    pub const MOST_URGENT_FIRST: [Severity; 3] =
        [Severity::Critical, Severity::Warning, Severity::Info];

    /// The severity stored as `bits`, if valid.
    pub const fn from_bits(bits: u8) -> Option<Severity> {
        match bits {
            0 => Some(Severity::Info),
            1 => Some(Severity::Warning),
            2 => Some(Severity::Critical),
            _ => None,
        }
    }
}

/// What made an alert fire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum AlertKind {
    /// The value rose above the high threshold.
    High,
    /// The value fell back below the high threshold minus hysteresis.
    HighCleared,
    /// The value fell below the low threshold.
    Low,
    /// The value rose back above the low threshold plus hysteresis.
    LowCleared,
    /// The value changed faster than the allowed rate.
    RateOfChange,
    /// The value has not changed for the configured number of samples.
    Stuck,
    /// The sensor failed the configured number of times in a row.
    SensorFault,
    /// The sensor delivered a reading again after a fault.
    SensorRecovered,
}

/// An alert raised by a channel's rules. Alerts travel in their own store
/// lane, ahead of routine data, and are never evicted by it.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Alert {
    /// The channel whose rule fired.
    pub channel: ChannelId,
    /// Which rule, and whether it fired or cleared.
    pub kind: AlertKind,
    /// How urgent.
    pub severity: Severity,
    /// The value that made it fire; `None` for sensor faults.
    pub value: Option<Value>,
    /// When.
    pub time: Instant,
}

/// Somewhere readings can be written: a sensor's output, a decoder's output.
///
/// A full sink hands the reading back instead of dropping it.
///
/// ```
/// use telemark_core::model::{ChannelId, Reading, ReadingSink, Value};
/// use telemark_core::time::Instant;
/// let mut buf: heapless::Vec<Reading, 1> = heapless::Vec::new();
/// let r = Reading::new(ChannelId(1), Instant::ZERO, Value::Bool(true));
/// assert_eq!(buf.push_reading(r), Ok(()));
/// assert_eq!(buf.push_reading(r), Err(r));
/// ```
pub trait ReadingSink {
    /// Takes `reading`, or hands it back if there is no room.
    fn push_reading(&mut self, reading: Reading) -> Result<(), Reading>;
}

impl<const N: usize> ReadingSink for heapless::Vec<Reading, N> {
    fn push_reading(&mut self, reading: Reading) -> Result<(), Reading> {
        self.push(reading)
    }
}

#[cfg(feature = "std")]
impl ReadingSink for std::vec::Vec<Reading> {
    fn push_reading(&mut self, reading: Reading) -> Result<(), Reading> {
        self.push(reading);
        Ok(())
    }
}

/// Adapts a closure into a [`ReadingSink`].
///
/// ```
/// use telemark_core::model::{ChannelId, FnSink, Reading, ReadingSink, Value};
/// use telemark_core::time::Instant;
/// let mut seen = 0;
/// let mut sink = FnSink(|_r: Reading| { seen += 1; Ok(()) });
/// sink.push_reading(Reading::new(ChannelId(1), Instant::ZERO, Value::Counter(3))).unwrap();
/// assert_eq!(seen, 1);
/// ```
pub struct FnSink<F>(pub F);

impl<F: FnMut(Reading) -> Result<(), Reading>> ReadingSink for FnSink<F> {
    fn push_reading(&mut self, reading: Reading) -> Result<(), Reading> {
        (self.0)(reading)
    }
}
