//! Shared pieces of telemark's benchmarks: the recording loader and the
//! baseline codecs that telemark's codec is measured against.
//!
//! - [`load_csv`] reads the long CSV format of `benches/data/`;
//! - [`Baseline`] encodes a batch of readings with postcard + lz4_flex,
//!   zstd level 19, or Gorilla (VLDB 2015), and reports the bytes.

use std::fmt;
use std::path::Path;

use telemark_core::model::{ChannelId, Reading, Value};
use telemark_core::time::Instant;

pub mod gorilla;

/// A recording: readings in arrival order, each with its value also kept as
/// the `f64` the source printed (what Gorilla compresses).
#[derive(Clone, Debug, Default)]
pub struct Recording {
    /// Channel names; `ChannelId(i)` is `channels[i]`.
    pub channels: Vec<String>,
    /// Decimals per channel: its resolution.
    pub decimals: Vec<u8>,
    /// Readings with `Value::Scaled` at each channel's resolution.
    pub readings: Vec<Reading>,
    /// The same values as floats.
    pub floats: Vec<f64>,
}

/// Why a recording could not be read.
#[derive(Debug)]
pub enum LoadError {
    /// The file could not be read.
    Io(std::io::Error),
    /// A line is not `timestamp_ms,channel,value`.
    Line {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: &'static str,
    },
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Io(e) => write!(f, "{e}"),
            LoadError::Line { line, reason } => write!(f, "line {line}: {reason}"),
        }
    }
}

impl std::error::Error for LoadError {}

/// Splits decimal text (`-12.5`, `7.51E-4`) into an integer and the
/// decimals it is scaled by: `(-125, 1)`, `(751, 6)`.
fn parse_decimal(text: &str) -> Option<(i64, u8)> {
    let (mantissa, exp) = match text.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i32>().ok()?),
        None => (text, 0),
    };
    let (digits, decimals) = parse_plain_decimal(mantissa)?;
    let decimals = i32::from(decimals) - exp;
    if decimals >= 0 {
        Some((digits, u8::try_from(decimals).ok()?))
    } else {
        let scale = 10i64.checked_pow(decimals.unsigned_abs())?;
        Some((digits.checked_mul(scale)?, 0))
    }
}

fn parse_plain_decimal(text: &str) -> Option<(i64, u8)> {
    let (neg, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut v: i64 = 0;
    for b in int.bytes().chain(frac.bytes()) {
        v = v.checked_mul(10)?.checked_add(i64::from(b - b'0'))?;
    }
    Some((if neg { -v } else { v }, u8::try_from(frac.len()).ok()?))
}

/// Reads a long CSV recording: `#` comment lines, a header, then
/// `timestamp_ms,channel,value` per line. A channel's resolution is the
/// largest number of decimals its values carry; values become exact scaled
/// integers at that resolution.
pub fn load_csv(path: &Path) -> Result<Recording, LoadError> {
    let text = std::fs::read_to_string(path).map_err(LoadError::Io)?;
    parse_csv(&text)
}

/// [`load_csv`] on text already in memory.
pub fn parse_csv(text: &str) -> Result<Recording, LoadError> {
    let mut rec = Recording::default();
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with("timestamp") {
            continue;
        }
        let bad = |reason| LoadError::Line {
            line: i + 1,
            reason,
        };
        let mut parts = line.split(',');
        let (Some(t), Some(name), Some(value), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("expected three fields"));
        };
        let t: u64 = t.parse().map_err(|_| bad("timestamp is not an integer"))?;
        let (digits, decimals) =
            parse_decimal(value).ok_or_else(|| bad("value is not a decimal number"))?;
        let float: f64 = value.parse().map_err(|_| bad("value is not a number"))?;
        let channel = match rec.channels.iter().position(|c| c == name) {
            Some(c) => c,
            None => {
                rec.channels.push(name.to_string());
                rec.decimals.push(0);
                rec.channels.len() - 1
            }
        };
        if rec.channels.len() > usize::from(u16::MAX) {
            return Err(bad("too many channels"));
        }
        let slot = &mut rec.decimals[channel];
        *slot = (*slot).max(decimals);
        rows.push((t, channel, digits, decimals, float));
    }
    for (t, channel, digits, decimals, float) in rows {
        let scale = 10i64.pow(u32::from(rec.decimals[channel] - decimals));
        let scaled = digits
            .checked_mul(scale)
            .and_then(|v| i32::try_from(v).ok())
            .ok_or(LoadError::Line {
                line: 0,
                reason: "value does not fit i32 at its resolution",
            })?;
        rec.readings.push(Reading::new(
            ChannelId(channel as u16),
            Instant::from_millis(t),
            Value::Scaled(scaled),
        ));
        rec.floats.push(float);
    }
    Ok(rec)
}

/// The codecs telemark is compared with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Baseline {
    /// postcard of the readings, then an lz4_flex block.
    Lz4Flex,
    /// Gorilla, per channel per batch.
    Gorilla,
    /// postcard of the readings, then zstd at level 19.
    Zstd19,
}

impl Baseline {
    /// Every baseline.
    pub const ALL: [Baseline; 3] = [Baseline::Lz4Flex, Baseline::Gorilla, Baseline::Zstd19];

    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Baseline::Lz4Flex => "lz4_flex",
            Baseline::Gorilla => "gorilla",
            Baseline::Zstd19 => "zstd19",
        }
    }

    /// Bytes this baseline needs for one batch.
    pub fn encoded_len(self, readings: &[Reading], floats: &[f64]) -> usize {
        match self {
            Baseline::Lz4Flex => lz4_flex::block::compress(&postcard_bytes(readings)).len(),
            Baseline::Zstd19 => {
                zstd::bulk::compress(&postcard_bytes(readings), 19).map_or(usize::MAX, |b| b.len())
            }
            Baseline::Gorilla => gorilla::batch_len(readings, floats),
        }
    }
}

/// The readings as a postcard sequence: what a device without telemark's
/// codec would send, and the input of the byte-oriented baselines.
pub fn postcard_bytes(readings: &[Reading]) -> Vec<u8> {
    postcard::to_stdvec(readings).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_become_exact_scaled_integers() {
        let rec = parse_csv("# x\ntimestamp_ms,channel,value\n1,a,10.0\n2,a,-0.25\n3,b,7\n4,a,3\n5,b,1.5E1\n6,a,7.5e-3\n")
            .unwrap();
        assert_eq!(rec.channels, ["a", "b"]);
        // 7.5e-3 is 0.0075: channel a carries 4 decimals.
        assert_eq!(rec.decimals, [4, 0]);
        let values: Vec<Value> = rec.readings.iter().map(|r| r.value).collect();
        assert_eq!(
            values,
            [100_000, -2_500, 7, 30_000, 15, 75].map(Value::Scaled)
        );
    }

    #[test]
    fn malformed_lines_are_reported_with_their_number() {
        let err = parse_csv("timestamp_ms,channel,value\n1,a,abc\n").unwrap_err();
        assert!(matches!(err, LoadError::Line { line: 2, .. }), "{err}");
        assert!(parse_csv("1,a\n").is_err());
    }
}
