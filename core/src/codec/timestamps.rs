//! Timestamp columns: regular sampling costs almost nothing, jitter little.
//!
//! | field | encoding |
//! | --- | --- |
//! | header | u8: mode (bit 0), group-size code (bits 1-2) |
//! | first | varint of zigzag(first time - block base time) |
//!
//! Mode 0, delta-of-delta: then, if there are two or more times, a varint of
//! zigzag(second - first), then the packed zigzag delta-of-deltas of the
//! remaining times. Regular sampling gives a run of zero groups.
//!
//! Mode 1, linear: a varint `interval` in 1/65536 ms and a varint `phase`
//! (< 65536), then the packed zigzag residuals of times 2..n against
//! `first + (i * interval + phase) >> 16`. A 360 Hz clock rounded to
//! milliseconds (3, 3, 2, 3, ... ms apart) has residuals of zero here.
//!
//! All arithmetic wraps at 64 bits.

use super::bits::{unzigzag, zigzag, BitReader, BitWriter};
use super::pack::{PackCost, PackReader, PackWriter};
use super::{DecodeError, EncodeError};
use crate::bytes::{ByteReader, ByteWriter};

const FRAC: u32 = 16;
const MAX_PHASE: u64 = 1 << FRAC;

#[derive(Clone, Copy, Debug)]
enum Mode {
    DeltaOfDelta,
    Linear { interval: u64, phase: u64 },
}

/// How a timestamp column will be written, and its cost.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TimePlan {
    mode: Mode,
    group: u8,
    /// Estimated bits of the packed stream.
    pub(crate) bits: u64,
}

fn linear(t0: u64, i: u64, interval: u64, phase: u64) -> u64 {
    t0.wrapping_add(i.wrapping_mul(interval).wrapping_add(phase) >> FRAC)
}

fn linear_cost<I: Iterator<Item = u64>>(times: I, interval: u64, phase: u64) -> (u8, u64) {
    let mut cost = PackCost::default();
    let mut it = times;
    let t0 = it.next().unwrap_or(0);
    for (i, t) in it.enumerate() {
        let pred = linear(t0, i as u64 + 1, interval, phase);
        cost.push(zigzag(t.wrapping_sub(pred) as i64));
    }
    cost.best()
}

/// Chooses the cheaper of delta-of-delta and a fitted linear clock.
///
/// The clock is fitted on `prefix`, the first times of the column (all of
/// them when it is short), and priced on the whole column.
pub(crate) fn plan<I: Iterator<Item = u64>>(
    times: impl Fn() -> I,
    count: usize,
    prefix: &[u64],
) -> TimePlan {
    let whole = count == prefix.len();
    // A regular clock is a single run of zero delta-of-deltas.
    if whole && is_regular(prefix) {
        return TimePlan {
            mode: Mode::DeltaOfDelta,
            group: 0,
            bits: zero_run_bits(count.saturating_sub(2)),
        };
    }
    let (t0, last) = (
        prefix.first().copied().unwrap_or(0),
        times().last().unwrap_or(0),
    );
    let n = count as u64;
    let fitted = if n >= 3 && last > t0 {
        let span = u128::from(last - t0) << FRAC;
        u64::try_from(span / u128::from(n - 1))
            .ok()
            .map(|centre| fit_clock(prefix, centre))
    } else {
        None
    };
    // A clock that fits every time exactly leaves only zeros to write.
    if let Some((interval, phase, true)) = fitted {
        if whole {
            return TimePlan {
                mode: Mode::Linear { interval, phase },
                group: 0,
                bits: zero_run_bits(count - 1),
            };
        }
    }
    let mut dod = PackCost::default();
    let mut it = times();
    let t0 = it.next().unwrap_or(0);
    if let Some(t1) = it.next() {
        let mut prev = (t1, t1.wrapping_sub(t0));
        for t in it {
            let delta = t.wrapping_sub(prev.0);
            dod.push(zigzag(delta.wrapping_sub(prev.1) as i64));
            prev = (t, delta);
        }
    }
    let (group, bits) = dod.best();
    let mut best = TimePlan {
        mode: Mode::DeltaOfDelta,
        group,
        bits,
    };
    if let Some((interval, phase, _)) = fitted {
        let (group, bits) = linear_cost(times(), interval, phase);
        // The interval and phase varints cost about 5 bytes.
        let bits = bits + 40;
        if bits < best.bits {
            best = TimePlan {
                mode: Mode::Linear { interval, phase },
                group,
                bits,
            };
        }
    }
    best
}

/// True if the times are evenly spaced.
fn is_regular(times: &[u64]) -> bool {
    match times {
        [a, b, rest @ ..] => {
            let step = b.wrapping_sub(*a);
            let mut prev = *b;
            rest.iter().all(|&t| {
                let ok = t.wrapping_sub(prev) == step;
                prev = t;
                ok
            })
        }
        _ => true,
    }
}

/// Bits of a packed stream of `n` zeros in groups of 8: one run header.
fn zero_run_bits(n: usize) -> u64 {
    if n == 0 {
        0
    } else {
        6 + super::bits::gamma_bits(n.div_ceil(8) as u64)
    }
}

/// Fits `t0 + (i * interval + phase) >> 16` to the times, minimising the
/// largest error: exact (all residuals zero) for any clock rounded to
/// milliseconds, such as 360 Hz (3, 3, 2, 3, ... ms).
///
/// Time `i` allows `interval * i + phase` in `[d_i << 16, (d_i + 1) << 16)`.
/// For a given interval the phase must lie between the largest lower and
/// the smallest upper bound; the gap between the two is convex in the
/// interval, so a binary search on its slope finds the best interval within
/// the rounding uncertainty of the estimate `centre`.
fn fit_clock(times: &[u64], centre: u64) -> (u64, u64, bool) {
    const S: i64 = 1 << FRAC;
    let fallback = (centre, MAX_PHASE / 2, false);
    let (Some((&t0, rest)), Ok(centre_i)) = (times.split_first(), i64::try_from(centre)) else {
        return fallback;
    };
    // Keep the products in i64: clocks slower than one tick in 24 days, or
    // blocks longer than that, use the estimate.
    if centre_i >= 1 << 46 || rest.iter().any(|t| t.wrapping_sub(t0) >= 1 << 31) {
        return fallback;
    }
    let n = times.len() as i64;
    // (largest lower bound, its i, smallest upper bound, its i) for the
    // phase, from every `stride`-th time.
    let bounds = |interval: i64, stride: usize| {
        let (mut lo, mut lo_i, mut hi, mut hi_i) = (i64::MIN, 0, i64::MAX, 0);
        for (k, t) in rest.iter().enumerate().step_by(stride) {
            let (i, d) = (k as i64 + 1, t.wrapping_sub(t0) as i64);
            let l = d * S - i * interval;
            let u = (d + 1) * S - 1 - i * interval;
            if l > lo {
                (lo, lo_i) = (l, i);
            }
            if u < hi {
                (hi, hi_i) = (u, i);
            }
        }
        (lo, lo_i, hi, hi_i)
    };
    // Binary search on the sign of the gap's slope: the lower bound falls by
    // lo_i per unit of interval and the upper by hi_i, so the gap grows with
    // the interval when hi_i > lo_i.
    let search = |mut lo: i64, mut hi: i64, stride: usize| {
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let (_, lo_i, _, hi_i) = bounds(mid, stride);
            match hi_i.cmp(&lo_i) {
                core::cmp::Ordering::Greater => hi = mid,
                core::cmp::Ordering::Less => lo = mid + 1,
                core::cmp::Ordering::Equal => (lo, hi) = (mid, mid),
            }
        }
        lo
    };
    let spread = S / (n - 1).max(1) + 1;
    let (lo, hi) = ((centre_i - spread).max(0), centre_i + spread);
    // Search on a sample of the times first (cheap), then check against all
    // of them and search again nearby only if the sample misled.
    let mut interval = search(lo, hi, 16);
    let (mut l, _, mut u, _) = bounds(interval, 1);
    if l > u {
        interval = search((interval - 32).max(lo), (interval + 32).min(hi), 1);
        (l, _, u, _) = bounds(interval, 1);
    }
    // The phase must also lie in 0..S; the fit is exact when the bounds
    // leave room for it there.
    let (l, u) = (l.max(0), u.min(S - 1));
    let phase = if l <= u {
        l + (u - l) / 2
    } else {
        ((l + u) / 2).clamp(0, S - 1)
    };
    (interval as u64, phase as u64, l <= u)
}

/// The plan of a column written without pricing: delta-of-delta where the
/// times are evenly spaced or no clock fits them exactly, else the clock
/// fitted on the first times (`prefix`, all of them when the column is
/// short) where it fits every time exactly (any clock rounded to
/// milliseconds, such as 360 Hz); groups of 8 either way.
pub(crate) fn plan_fixed<I: Iterator<Item = u64>>(
    times: impl Fn() -> I,
    prefix: &[u64],
) -> TimePlan {
    let dod = TimePlan {
        mode: Mode::DeltaOfDelta,
        group: 0,
        bits: 0,
    };
    let Some(&t0) = prefix.first() else {
        return dod;
    };
    let (n, last) = times().fold((0u64, t0), |(n, _), t| (n + 1, t));
    // Spans of 2^31 ms and more are left to delta-of-delta, as fit_clock
    // leaves them to its estimate.
    let span = last.wrapping_sub(t0);
    if n < 3 || last <= t0 || span >= 1 << 31 || is_regular(prefix) {
        return dod;
    }
    let (interval, phase, exact) = fit_clock(prefix, (span << FRAC) / (n - 1));
    let fits = exact
        && times()
            .enumerate()
            .all(|(i, t)| linear(t0, i as u64, interval, phase) == t);
    if fits {
        TimePlan {
            mode: Mode::Linear { interval, phase },
            group: 0,
            bits: 0,
        }
    } else {
        dod
    }
}

/// Writes a timestamp column as planned; returns its length in bytes.
pub(crate) fn write(
    plan: &TimePlan,
    base: u64,
    times: impl Iterator<Item = u64>,
    out: &mut [u8],
) -> Result<usize, EncodeError> {
    let mut head = ByteWriter::new(out);
    let mode_bit = u8::from(matches!(plan.mode, Mode::Linear { .. }));
    head.u8(mode_bit | plan.group << 1)?;
    let mut it = times;
    let t0 = it.next().unwrap_or(base);
    head.varint(zigzag(t0.wrapping_sub(base) as i64))?;
    match plan.mode {
        Mode::DeltaOfDelta => {
            let mut it = it.peekable();
            let mut prev = match it.peek() {
                Some(&t1) => (t1, t1.wrapping_sub(t0)),
                None => (t0, 0),
            };
            if it.next().is_some() {
                head.varint(zigzag(prev.1 as i64))?;
            }
            let start = head.position();
            let mut bits = BitWriter::new(head.rest());
            let mut pack = PackWriter::new(plan.group);
            for t in it {
                let delta = t.wrapping_sub(prev.0);
                pack.push(&mut bits, zigzag(delta.wrapping_sub(prev.1) as i64))?;
                prev = (t, delta);
            }
            pack.finish(&mut bits)?;
            Ok(start + bits.finish()?)
        }
        Mode::Linear { interval, phase } => {
            head.varint(interval)?;
            head.varint(phase)?;
            let start = head.position();
            let mut bits = BitWriter::new(head.rest());
            let mut pack = PackWriter::new(plan.group);
            for (i, t) in it.enumerate() {
                let pred = linear(t0, i as u64 + 1, interval, phase);
                pack.push(&mut bits, zigzag(t.wrapping_sub(pred) as i64))?;
            }
            pack.finish(&mut bits)?;
            Ok(start + bits.finish()?)
        }
    }
}

/// Decodes a timestamp column time by time.
#[derive(Clone, Debug)]
pub(crate) struct TimeCursor<'a> {
    bits: BitReader<'a>,
    pack: PackReader,
    /// Delta-of-delta: the previous time. Linear: the first time.
    anchor: u64,
    /// Delta-of-delta: the previous delta. Linear: the interval.
    slope: u64,
    /// Linear only: the phase; `None` in delta-of-delta mode.
    phase: Option<u16>,
    index: u16,
}

impl<'a> TimeCursor<'a> {
    pub(crate) fn new(column: &'a [u8], base: u64, count: u16) -> Result<Self, DecodeError> {
        let mut r = ByteReader::new(column);
        let header = r.u8()?;
        if header & !0b111 != 0 {
            return Err(DecodeError::Malformed);
        }
        let t0 = base.wrapping_add(unzigzag(r.varint()?) as u64);
        let (slope, phase, packed) = if header & 1 == 0 {
            let d1 = if count >= 2 {
                unzigzag(r.varint()?) as u64
            } else {
                0
            };
            (d1, None, count.saturating_sub(2))
        } else {
            let interval = r.varint()?;
            let phase = u16::try_from(r.varint()?).map_err(|_| DecodeError::Malformed)?;
            (interval, Some(phase), count.saturating_sub(1))
        };
        Ok(TimeCursor {
            bits: BitReader::new(r.rest()),
            pack: PackReader::new(header >> 1, packed)?,
            anchor: t0,
            slope,
            phase,
            index: 0,
        })
    }

    pub(crate) fn next(&mut self) -> Result<u64, DecodeError> {
        let i = self.index;
        self.index = self.index.saturating_add(1);
        match (i, self.phase) {
            (0, _) => Ok(self.anchor),
            (1, None) => {
                self.anchor = self.anchor.wrapping_add(self.slope);
                Ok(self.anchor)
            }
            (_, None) => {
                let dod = unzigzag(self.pack.next(&mut self.bits)?) as u64;
                self.slope = self.slope.wrapping_add(dod);
                self.anchor = self.anchor.wrapping_add(self.slope);
                Ok(self.anchor)
            }
            (_, Some(phase)) => {
                let r = unzigzag(self.pack.next(&mut self.bits)?) as u64;
                Ok(linear(self.anchor, u64::from(i), self.slope, u64::from(phase)).wrapping_add(r))
            }
        }
    }
}
