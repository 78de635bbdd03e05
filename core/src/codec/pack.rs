//! Bit-packing of unsigned integers in small groups, each with a width
//! header; runs of all-zero groups collapse into one header.
//!
//! A packed stream of `n` values is a sequence of group headers, each a
//! 6-bit width `w` (0..=62 as is, 63 meaning 64 bits):
//!
//! - `w > 0`: the next `min(G, left)` values follow, `w` bits each;
//! - `w = 0`: an Elias-gamma count `k >= 1` follows: the next `k` groups are
//!   all zeros and take no further bits.
//!
//! `G`, the group size, is 8, 16 or 32 and is chosen per stream by
//! [`PackCost`], which prices all three in one pass.

use super::bits::{gamma_bits, width, BitReader, BitWriter};
use super::{DecodeError, EncodeError};

/// Group sizes a stream may use, by their 2-bit code.
pub(crate) const GROUP_SIZES: [usize; 3] = [8, 16, 32];
const WIDTH_BITS: u32 = 6;
const MAX_GROUP: usize = 32;

fn width_code(w: u32) -> (u64, u32) {
    if w >= 63 {
        (63, 64)
    } else {
        (u64::from(w), w)
    }
}

/// The price in bits of packing a stream, for each group size at once.
///
/// One OR per value: groups of 16 and 32 are priced from the ORs of the
/// groups of 8 they are made of.
#[derive(Clone, Debug, Default)]
pub(crate) struct PackCost {
    or8: u64,
    or16: u64,
    or32: u64,
    fill: u32,
    eights: u32,
    bits: [u64; 3],
    zero_run: [u64; 3],
}

impl PackCost {
    #[inline]
    pub(crate) fn push(&mut self, v: u64) {
        self.or8 |= v;
        self.fill += 1;
        if self.fill == 8 {
            self.close_eight();
        }
    }

    /// Adds eight values at once, by their OR. Only at a group boundary
    /// (after a multiple of eight values).
    #[inline]
    pub(crate) fn push_eight(&mut self, or: u64) {
        self.or8 = or;
        self.close_eight();
    }

    fn close_eight(&mut self) {
        let or8 = self.or8;
        self.price(0, or8, 8);
        self.or16 |= or8;
        self.or32 |= or8;
        self.or8 = 0;
        self.fill = 0;
        self.eights += 1;
        if self.eights.is_multiple_of(2) {
            self.price(1, self.or16, 16);
            self.or16 = 0;
        }
        if self.eights.is_multiple_of(4) {
            self.price(2, self.or32, 32);
            self.or32 = 0;
        }
    }

    /// Adds a group of `fill` values whose OR is `or` to size code `k`.
    fn price(&mut self, k: usize, or: u64, fill: u32) {
        let (Some(bits), Some(run)) = (self.bits.get_mut(k), self.zero_run.get_mut(k)) else {
            return;
        };
        if or == 0 {
            *run += 1;
        } else {
            if *run > 0 {
                *bits += u64::from(WIDTH_BITS) + gamma_bits(*run);
                *run = 0;
            }
            let (_, w) = width_code(width(or));
            *bits += u64::from(WIDTH_BITS) + u64::from(w) * u64::from(fill);
        }
    }

    /// The cheapest group-size code and its cost in bits.
    pub(crate) fn best(self) -> (u8, u64) {
        let totals = self.totals();
        let mut best = (0u8, u64::MAX);
        for (k, &total) in totals.iter().enumerate() {
            if total < best.1 {
                best = (k as u8, total);
            }
        }
        best
    }

    /// The cost in bits with group-size code `code`.
    #[cfg(test)]
    fn price_of(self, code: u8) -> u64 {
        self.totals()
            .get(usize::from(code))
            .copied()
            .unwrap_or(u64::MAX)
    }

    fn totals(mut self) -> [u64; 3] {
        // Close the partial groups at the end.
        let tail = self.fill;
        let (or8, or16, or32) = (self.or8, self.or16 | self.or8, self.or32 | self.or8);
        if tail > 0 {
            self.price(0, or8, tail);
        }
        let fill16 = (self.eights % 2) * 8 + tail;
        if fill16 > 0 {
            self.price(1, or16, fill16);
        }
        let fill32 = (self.eights % 4) * 8 + tail;
        if fill32 > 0 {
            self.price(2, or32, fill32);
        }
        let mut totals = self.bits;
        for (total, run) in totals.iter_mut().zip(self.zero_run) {
            if run > 0 {
                *total += u64::from(WIDTH_BITS) + gamma_bits(run);
            }
        }
        totals
    }
}

/// Packs a stream with group-size code `group`.
pub(crate) struct PackWriter {
    group: usize,
    buf: [u64; MAX_GROUP],
    fill: usize,
    /// OR of the values in `buf`.
    or: u64,
    zero_run: u64,
}

impl PackWriter {
    pub(crate) fn new(group_code: u8) -> Self {
        PackWriter {
            group: GROUP_SIZES
                .get(usize::from(group_code))
                .copied()
                .unwrap_or(MAX_GROUP),
            buf: [0; MAX_GROUP],
            fill: 0,
            or: 0,
            zero_run: 0,
        }
    }

    #[inline]
    pub(crate) fn push(&mut self, w: &mut BitWriter<'_>, v: u64) -> Result<(), EncodeError> {
        if let Some(slot) = self.buf.get_mut(self.fill) {
            *slot = v;
            self.fill += 1;
            self.or |= v;
        }
        if self.fill == self.group {
            self.flush_group(w)?;
        }
        Ok(())
    }

    #[inline]
    fn flush_group(&mut self, w: &mut BitWriter<'_>) -> Result<(), EncodeError> {
        if self.fill == 0 {
            return Ok(());
        }
        if self.or == 0 {
            self.zero_run += 1;
        } else {
            self.flush_zeros(w)?;
            let (code, bits) = width_code(width(self.or));
            w.bits(code, WIDTH_BITS)?;
            w.pack(self.group(), bits)?;
        }
        self.fill = 0;
        self.or = 0;
        Ok(())
    }

    fn group(&self) -> &[u64] {
        self.buf.get(..self.fill).unwrap_or_default()
    }

    fn flush_zeros(&mut self, w: &mut BitWriter<'_>) -> Result<(), EncodeError> {
        if self.zero_run > 0 {
            w.bits(0, WIDTH_BITS)?;
            w.gamma(self.zero_run)?;
            self.zero_run = 0;
        }
        Ok(())
    }

    /// Writes the last, possibly partial, group and any pending zero run.
    pub(crate) fn finish(mut self, w: &mut BitWriter<'_>) -> Result<(), EncodeError> {
        self.flush_group(w)?;
        self.flush_zeros(w)
    }
}

/// Reads a packed stream of a known number of values.
#[derive(Clone, Debug)]
pub(crate) struct PackReader {
    group: u8,
    width: u8,
    in_group: u8,
    zero_groups: u16,
    left: u16,
}

impl PackReader {
    pub(crate) fn new(group_code: u8, count: u16) -> Result<Self, DecodeError> {
        let group = *GROUP_SIZES
            .get(usize::from(group_code))
            .ok_or(DecodeError::Malformed)? as u8;
        Ok(PackReader {
            group,
            width: 0,
            in_group: 0,
            zero_groups: 0,
            left: count,
        })
    }

    pub(crate) fn next(&mut self, r: &mut BitReader<'_>) -> Result<u64, DecodeError> {
        if self.left == 0 {
            return Err(DecodeError::Malformed);
        }
        if self.in_group == 0 {
            if self.zero_groups > 0 {
                self.zero_groups -= 1;
                self.width = 0;
            } else {
                let code = r.bits(WIDTH_BITS)? as u8;
                if code == 0 {
                    // Every group of the run must hold at least one value.
                    let groups_left = self.left.div_ceil(u16::from(self.group));
                    let run = r.gamma()?;
                    if run > u64::from(groups_left) {
                        return Err(DecodeError::Malformed);
                    }
                    self.zero_groups = run as u16 - 1;
                }
                self.width = if code == 63 { 64 } else { code };
            }
            self.in_group = self.group.min(self.left.min(255) as u8);
        }
        self.in_group -= 1;
        self.left -= 1;
        r.bits(u32::from(self.width))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The price is exactly what the writer writes, for every group size,
        /// and the reader gets the values back.
        #[test]
        fn cost_is_exact_and_streams_round_trip(
            values in prop::collection::vec(prop_oneof![Just(0u64), 0u64..4, any::<u64>()], 0..200),
        ) {
            for code in 0..GROUP_SIZES.len() as u8 {
                let mut cost = PackCost::default();
                values.iter().for_each(|&v| cost.push(v));
                let mut buf = vec![0u8; 16 + values.len() * 9];
                let mut w = BitWriter::new(&mut buf);
                let mut pack = PackWriter::new(code);
                for &v in &values {
                    pack.push(&mut w, v).unwrap();
                }
                pack.finish(&mut w).unwrap();
                let bytes = w.finish().unwrap();
                let priced = {
                    let mut c = PackCost::default();
                    values.iter().for_each(|&v| c.push(v));
                    c.price_of(code)
                };
                prop_assert_eq!(bytes as u64, priced.div_ceil(8));
                let mut r = BitReader::new(&buf[..bytes]);
                let mut reader = PackReader::new(code, values.len() as u16).unwrap();
                for &v in &values {
                    prop_assert_eq!(reader.next(&mut r).unwrap(), v);
                }
                prop_assert!(reader.next(&mut r).is_err());
                let _ = cost.best();
            }
        }
    }
}
