//! Time as the core sees it: milliseconds of monotonic uptime, and an
//! optional offset that maps uptime to wall-clock time.
//!
//! The core never reads a clock. The driver passes [`Instant`]s in with every
//! event. A device without a real-time clock learns the offset from the
//! server (acknowledgements carry server time) and keeps it in a
//! [`WallClock`].

use core::fmt;
use core::ops::{Add, Sub};

/// A point in monotonic device uptime, in milliseconds since boot.
///
/// ```
/// use telemark_core::time::{Duration, Instant};
/// let t = Instant::from_millis(1_000) + Duration::from_secs(2);
/// assert_eq!(t.as_millis(), 3_000);
/// assert_eq!(t - Instant::from_millis(500), Duration::from_millis(2_500));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Instant(u64);

impl Instant {
    /// Boot.
    pub const ZERO: Instant = Instant(0);

    /// An instant `ms` milliseconds after boot.
    pub const fn from_millis(ms: u64) -> Self {
        Instant(ms)
    }

    /// Milliseconds since boot.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// Time from `earlier` to `self`, or zero if `earlier` is later.
    pub const fn saturating_since(self, earlier: Instant) -> Duration {
        Duration(self.0.saturating_sub(earlier.0))
    }

    /// `self + d`, or `None` on overflow.
    pub const fn checked_add(self, d: Duration) -> Option<Instant> {
        match self.0.checked_add(d.0) {
            Some(ms) => Some(Instant(ms)),
            None => None,
        }
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    /// Saturates at the far future instead of overflowing.
    fn add(self, d: Duration) -> Instant {
        Instant(self.0.saturating_add(d.0))
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;
    /// Saturates at zero when `rhs` is later.
    fn sub(self, rhs: Instant) -> Duration {
        self.saturating_since(rhs)
    }
}

impl fmt::Display for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "+{}.{:03}s", self.0 / 1000, self.0 % 1000)
    }
}

/// A span of time in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Duration(u64);

impl Duration {
    /// No time.
    pub const ZERO: Duration = Duration(0);

    /// `ms` milliseconds.
    pub const fn from_millis(ms: u64) -> Self {
        Duration(ms)
    }

    /// `s` seconds.
    pub const fn from_secs(s: u64) -> Self {
        Duration(s.saturating_mul(1000))
    }

    /// `m` minutes.
    pub const fn from_mins(m: u64) -> Self {
        Duration(m.saturating_mul(60_000))
    }

    /// Length in milliseconds.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// True for the zero duration.
    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }
}

/// Maps uptime to wall-clock time (Unix milliseconds) once an offset is known.
///
/// ```
/// use telemark_core::time::{Instant, WallClock};
/// let mut clock = WallClock::unsynced();
/// assert_eq!(clock.to_unix_millis(Instant::from_millis(5)), None);
/// // The server said "it is 1_700_000_000_000" when our uptime was 10 s.
/// clock.sync(Instant::from_millis(10_000), 1_700_000_000_000);
/// assert_eq!(clock.to_unix_millis(Instant::from_millis(12_000)), Some(1_700_000_002_000));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct WallClock {
    offset_ms: Option<i64>,
}

impl WallClock {
    /// A clock that does not know the wall-clock time yet.
    pub const fn unsynced() -> Self {
        WallClock { offset_ms: None }
    }

    /// A clock with a known offset: Unix milliseconds at boot.
    pub const fn with_offset(offset_ms: i64) -> Self {
        WallClock {
            offset_ms: Some(offset_ms),
        }
    }

    /// Records that at uptime `now` the wall-clock time was `unix_ms`.
    pub fn sync(&mut self, now: Instant, unix_ms: i64) {
        let uptime = i64::try_from(now.as_millis()).unwrap_or(i64::MAX);
        self.offset_ms = Some(unix_ms.saturating_sub(uptime));
    }

    /// Unix milliseconds at boot, if known.
    pub const fn offset_millis(&self) -> Option<i64> {
        self.offset_ms
    }

    /// The wall-clock time of `t`, if the offset is known.
    pub fn to_unix_millis(&self, t: Instant) -> Option<i64> {
        let uptime = i64::try_from(t.as_millis()).ok()?;
        self.offset_ms?.checked_add(uptime)
    }
}
