//! Value columns: integers by prediction, zigzag and bit-packing; floats
//! bit-exact by XOR coding.
//!
//! Integer column (scaled values, counters, booleans as 0/1):
//!
//! | field | encoding |
//! | --- | --- |
//! | header | u8: predictor (bits 0-1), group-size code (bits 2-3), has-factor (bit 4) |
//! | first | varint of zigzag(first value) |
//! | factor | varint, if has-factor: every value is `first + k * factor` |
//! | residuals | packed stream of zigzag residuals for values 2..n |
//!
//! Predictors: 0 = the first value, 1 = the previous value (delta), 2 = linear
//! extrapolation from the previous two (`2a - b`). Arithmetic wraps at 32 bits.
//!
//! Float column: header u8 = 0, then a bit stream: the first value's 32 bits,
//! then per value `0` if equal to the previous, else `1` followed by the XOR
//! with the previous as `0` + the meaningful bits in the previous window, or
//! `1` + 5 bits of leading zeros + 5 bits of (length - 1) + the bits.

use super::bits::{zigzag, BitReader, BitWriter};
use super::pack::{PackCost, PackReader, PackWriter};
use super::{DecodeError, EncodeError};
use crate::bytes::{ByteReader, ByteWriter};

const PREDICTORS: usize = 3;

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

const fn zigzag32(v: i32) -> u64 {
    ((v << 1) ^ (v >> 31)) as u32 as u64
}

/// The prediction of the next value. Before the second value `prev` and
/// `prev2` are both the first value, so the linear predictor starts as delta.
#[inline]
fn predict(predictor: u8, y0: i32, prev: i32, prev2: i32) -> i32 {
    match predictor {
        1 => prev,
        2 => prev.wrapping_mul(2).wrapping_sub(prev2),
        _ => y0,
    }
}

/// How an integer column will be written, and its cost.
#[derive(Clone, Copy, Debug)]
pub(crate) struct IntPlan {
    predictor: u8,
    group: u8,
    factor: u32,
    first: i32,
    /// Estimated bits of the residual stream.
    pub(crate) bits: u64,
}

impl IntPlan {
    /// The plan of a column written without a search: the previous value
    /// as the predictor, in groups of 8 (what the stager's estimate prices).
    pub(crate) fn fixed(mut values: impl Iterator<Item = i32>, factor: u32) -> Self {
        IntPlan {
            predictor: 1,
            group: 0,
            factor,
            first: values.next().unwrap_or(0),
            bits: 0,
        }
    }
}

/// Exact division by a constant without a divide instruction: shift out
/// the factor's power of two, then multiply by the inverse of its odd part
/// modulo 2^32. Exact for multiples of the factor, which is all it is used on.
#[derive(Clone, Copy, Debug)]
struct Divisor {
    shift: u32,
    inverse: u32,
    /// Largest `u32` quotient: `x * inverse <= limit` iff the odd part divides `x`.
    limit: u32,
}

impl Divisor {
    fn new(factor: u32) -> Self {
        let shift = factor.trailing_zeros();
        let odd = factor >> shift;
        // Newton's iteration doubles the correct low bits each step: 3, 6, 12, 24, 48.
        let mut inverse = odd;
        for _ in 0..4 {
            inverse = inverse.wrapping_mul(2u32.wrapping_sub(odd.wrapping_mul(inverse)));
        }
        Divisor {
            shift,
            inverse,
            limit: u32::MAX / odd.max(1),
        }
    }

    /// True if the factor divides `x`.
    #[inline]
    fn divides(self, x: u32) -> bool {
        x.trailing_zeros() >= self.shift
            && (x >> self.shift).wrapping_mul(self.inverse) <= self.limit
    }

    /// `x / factor` for a multiple `x` of the factor whose quotient fits `i32`.
    #[inline]
    fn exact(self, x: i64) -> i32 {
        ((x >> self.shift) as u32).wrapping_mul(self.inverse) as i32
    }
}

/// Reduces values by the common factor of their distances from the first.
#[derive(Clone, Copy)]
struct Reduce {
    first: i32,
    divisor: Option<Divisor>,
}

impl Reduce {
    fn new(first: i32, factor: u32) -> Self {
        Reduce {
            first,
            divisor: (factor > 1).then(|| Divisor::new(factor)),
        }
    }

    #[inline]
    fn apply(self, x: i32) -> i32 {
        match self.divisor {
            Some(d) => d.exact(i64::from(x) - i64::from(self.first)),
            None => x,
        }
    }
}

/// Finds the largest factor dividing every distance from the first value,
/// one value at a time.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CommonFactor {
    first: Option<i32>,
    g: u64,
    divisor: Divisor,
}

impl Default for CommonFactor {
    fn default() -> Self {
        CommonFactor {
            first: None,
            g: 0,
            divisor: Divisor::new(1),
        }
    }
}

impl CommonFactor {
    #[inline]
    pub(crate) fn push(&mut self, x: i32) {
        let Some(first) = self.first else {
            self.first = Some(x);
            return;
        };
        // Distances between i32 values fit u32.
        let d = (i64::from(x) - i64::from(first)).unsigned_abs();
        if self.g == 1 || d == 0 || (self.g != 0 && self.divisor.divides(d as u32)) {
            return;
        }
        self.g = gcd(self.g, d);
        self.divisor = Divisor::new(self.g as u32);
    }

    /// The factor, or 1 when there is none.
    pub(crate) fn factor(&self) -> u32 {
        if self.g > 1 {
            u32::try_from(self.g).unwrap_or(1)
        } else {
            1
        }
    }
}

/// The largest factor dividing every distance from the first value, or 1.
pub(crate) fn common_factor(values: impl Iterator<Item = i32>) -> u32 {
    let mut f = CommonFactor::default();
    for x in values {
        f.push(x);
        if f.g == 1 {
            break;
        }
    }
    f.factor()
}

/// Chooses predictor and group size for a column of `values` whose
/// distances from the first value are all multiples of `factor`.
pub(crate) fn plan_int<I: Iterator<Item = i32>>(values: impl Fn() -> I, factor: u32) -> IntPlan {
    let first = values().next().unwrap_or(0);
    let reduce = Reduce::new(first, factor);

    let mut costs: [PackCost; PREDICTORS] = Default::default();
    let mut it = values().map(|x| reduce.apply(x));
    let y0 = it.next().unwrap_or(0);
    let (mut prev, mut prev2) = (y0, y0);
    let [offset, delta, linear] = &mut costs;
    // Eight values at a time: the residual ORs of a group vectorise.
    let mut group = [0i32; 8];
    loop {
        let mut fill = 0;
        for (slot, y) in group.iter_mut().zip(it.by_ref()) {
            *slot = y;
            fill += 1;
        }
        if fill == group.len() {
            let (mut or_o, mut or_d, mut or_l) = (0u64, 0u64, 0u64);
            for &y in &group {
                or_o |= zigzag32(y.wrapping_sub(y0));
                or_d |= zigzag32(y.wrapping_sub(prev));
                or_l |= zigzag32(y.wrapping_sub(prev.wrapping_mul(2).wrapping_sub(prev2)));
                prev2 = prev;
                prev = y;
            }
            offset.push_eight(or_o);
            delta.push_eight(or_d);
            linear.push_eight(or_l);
        } else {
            for &y in group.iter().take(fill) {
                offset.push(zigzag32(y.wrapping_sub(y0)));
                delta.push(zigzag32(y.wrapping_sub(prev)));
                linear.push(zigzag32(
                    y.wrapping_sub(prev.wrapping_mul(2).wrapping_sub(prev2)),
                ));
                prev2 = prev;
                prev = y;
            }
            break;
        }
    }
    let mut plan = IntPlan {
        predictor: 0,
        group: 0,
        factor,
        first,
        bits: u64::MAX,
    };
    for (p, cost) in costs.into_iter().enumerate() {
        let (group, bits) = cost.best();
        if bits < plan.bits {
            plan.predictor = p as u8;
            plan.group = group;
            plan.bits = bits;
        }
    }
    plan
}

/// Writes an integer column as planned; returns its length in bytes.
pub(crate) fn write_int(
    plan: &IntPlan,
    values: impl Iterator<Item = i32>,
    out: &mut [u8],
) -> Result<usize, EncodeError> {
    let mut head = ByteWriter::new(out);
    let has_factor = plan.factor > 1;
    head.u8(plan.predictor | plan.group << 2 | u8::from(has_factor) << 4)?;
    head.varint(zigzag(i64::from(plan.first)))?;
    if has_factor {
        head.varint(u64::from(plan.factor))?;
    }
    let start = head.position();
    let mut bits = BitWriter::new(head.rest());
    let mut pack = PackWriter::new(plan.group);
    let reduce = Reduce::new(plan.first, plan.factor);
    let it = values.map(|x| reduce.apply(x));
    // One loop per predictor, so the prediction is not chosen per value.
    match plan.predictor {
        0 => pack_residuals(it, |y0, _, _| y0, &mut pack, &mut bits)?,
        1 => pack_residuals(it, |_, prev, _| prev, &mut pack, &mut bits)?,
        _ => pack_residuals(
            it,
            |_, prev, prev2| prev.wrapping_mul(2).wrapping_sub(prev2),
            &mut pack,
            &mut bits,
        )?,
    }
    pack.finish(&mut bits)?;
    Ok(start + bits.finish()?)
}

#[inline]
fn pack_residuals(
    mut values: impl Iterator<Item = i32>,
    predict: impl Fn(i32, i32, i32) -> i32,
    pack: &mut PackWriter,
    bits: &mut BitWriter<'_>,
) -> Result<(), EncodeError> {
    let y0 = values.next().unwrap_or(0);
    let (mut prev, mut prev2) = (y0, y0);
    for y in values {
        pack.push(bits, zigzag32(y.wrapping_sub(predict(y0, prev, prev2))))?;
        prev2 = prev;
        prev = y;
    }
    Ok(())
}

/// Decodes an integer column value by value.
#[derive(Clone, Debug)]
pub(crate) struct IntCursor<'a> {
    bits: BitReader<'a>,
    pack: PackReader,
    predictor: u8,
    factor: u32,
    first: i32,
    prev: i32,
    prev2: i32,
    index: u16,
}

impl<'a> IntCursor<'a> {
    pub(crate) fn new(column: &'a [u8], count: u16) -> Result<Self, DecodeError> {
        let mut r = ByteReader::new(column);
        let header = r.u8()?;
        let (predictor, group, has_factor) = (header & 3, (header >> 2) & 3, header & 0x10 != 0);
        if predictor as usize >= PREDICTORS || header & 0xe0 != 0 {
            return Err(DecodeError::Malformed);
        }
        let first = i32::try_from(super::bits::unzigzag(r.varint()?))
            .map_err(|_| DecodeError::Malformed)?;
        let factor = if has_factor { r.varint_u32()? } else { 1 };
        if has_factor && factor < 2 {
            return Err(DecodeError::Malformed);
        }
        let y0 = if factor > 1 { 0 } else { first };
        Ok(IntCursor {
            bits: BitReader::new(r.rest()),
            pack: PackReader::new(group, count.saturating_sub(1))?,
            predictor,
            factor,
            first,
            prev: y0,
            prev2: y0,
            index: 0,
        })
    }

    pub(crate) fn next(&mut self) -> Result<i32, DecodeError> {
        let i = usize::from(self.index);
        let y0 = if self.factor > 1 { 0 } else { self.first };
        let y = if i == 0 {
            y0
        } else {
            let z = self.pack.next(&mut self.bits)?;
            let r = u32::try_from(z).map_err(|_| DecodeError::Malformed)?;
            let r = ((r >> 1) as i32) ^ -((r & 1) as i32);
            let y = predict(self.predictor, y0, self.prev, self.prev2).wrapping_add(r);
            self.prev2 = self.prev;
            y
        };
        self.prev = y;
        self.index = self.index.saturating_add(1);
        if self.factor > 1 {
            let x = i64::from(self.first) + i64::from(y) * i64::from(self.factor);
            i32::try_from(x).map_err(|_| DecodeError::Malformed)
        } else {
            Ok(y)
        }
    }
}

/// Writes a float column; returns its length in bytes.
pub(crate) fn write_float(
    values: impl Iterator<Item = f32>,
    out: &mut [u8],
) -> Result<usize, EncodeError> {
    let mut head = ByteWriter::new(out);
    head.u8(0)?;
    let mut w = BitWriter::new(head.rest());
    let mut prev: Option<u32> = None;
    let (mut lead, mut trail) = (u32::MAX, 0u32);
    for v in values {
        let bits = v.to_bits();
        let Some(p) = prev else {
            w.bits(u64::from(bits), 32)?;
            prev = Some(bits);
            continue;
        };
        prev = Some(bits);
        let x = bits ^ p;
        if x == 0 {
            w.bits(0, 1)?;
            continue;
        }
        w.bits(1, 1)?;
        let (l, t) = (x.leading_zeros(), x.trailing_zeros());
        if lead != u32::MAX && l >= lead && t >= trail {
            w.bits(0, 1)?;
            w.bits(u64::from(x >> trail), 32 - lead - trail)?;
        } else {
            let len = 32 - l - t;
            w.bits(1, 1)?;
            w.bits(u64::from(l), 5)?;
            w.bits(u64::from(len - 1), 5)?;
            w.bits(u64::from(x >> t), len)?;
            (lead, trail) = (l, t);
        }
    }
    Ok(1 + w.finish()?)
}

/// Decodes a float column value by value.
#[derive(Clone, Debug)]
pub(crate) struct FloatCursor<'a> {
    bits: BitReader<'a>,
    prev: Option<u32>,
    /// Leading and trailing zeros of the current XOR window, once set.
    window: Option<(u8, u8)>,
}

impl<'a> FloatCursor<'a> {
    pub(crate) fn new(column: &'a [u8]) -> Result<Self, DecodeError> {
        let mut r = ByteReader::new(column);
        if r.u8()? != 0 {
            return Err(DecodeError::Malformed);
        }
        Ok(FloatCursor {
            bits: BitReader::new(r.rest()),
            prev: None,
            window: None,
        })
    }

    pub(crate) fn next(&mut self) -> Result<f32, DecodeError> {
        let bits = match self.prev {
            None => self.bits.bits(32)? as u32,
            Some(p) if !self.bits.bit()? => p,
            Some(p) => {
                if self.bits.bit()? {
                    let lead = self.bits.bits(5)? as u8;
                    let len = self.bits.bits(5)? as u8 + 1;
                    if lead + len > 32 {
                        return Err(DecodeError::Malformed);
                    }
                    self.window = Some((lead, 32 - lead - len));
                }
                let (lead, trail) = self.window.ok_or(DecodeError::Malformed)?;
                let len = 32 - u32::from(lead) - u32::from(trail);
                p ^ (self.bits.bits(len)? as u32) << trail
            }
        };
        self.prev = Some(bits);
        Ok(f32::from_bits(bits))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn divisor_agrees_with_division(factor in 1u32.., k in any::<i32>(), x in any::<u32>()) {
            let d = Divisor::new(factor);
            prop_assert_eq!(d.divides(x), x % factor == 0);
            let multiple = i64::from(k) * i64::from(factor);
            if i32::try_from(multiple / i64::from(factor)).is_ok() {
                prop_assert_eq!(d.exact(multiple), k);
            }
        }
    }
}
