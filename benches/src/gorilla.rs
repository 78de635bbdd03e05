//! Gorilla (Pelkonen et al., "Gorilla: A Fast, Scalable, In-Memory Time
//! Series Database", VLDB 2015), as a baseline: each channel of a batch is
//! one stream of (timestamp, f64) pairs.
//!
//! Timestamps: the first as 64 bits, the first delta as 14 bits (widened to
//! 64 when it does not fit, which sub-second data needs), then each
//! delta-of-delta as `0`; `10` + 7 bits; `110` + 9 bits; `1110` + 12 bits;
//! `1111` + 32 bits (64 when it does not fit). Values: the first as 64 bits,
//! then each XOR with the previous as `0` if zero, `10` + the meaningful bits
//! if they fit the previous leading/trailing window, else `11` + 5 bits of
//! leading zeros + 6 bits of length + the meaningful bits.

use telemark_core::model::Reading;

/// A growable bit buffer.
#[derive(Default)]
struct Bits {
    bytes: Vec<u8>,
    len: usize,
}

impl Bits {
    fn push(&mut self, v: u64, width: u32) {
        for i in (0..width).rev() {
            if self.len.is_multiple_of(8) {
                self.bytes.push(0);
            }
            if (v >> i) & 1 == 1 {
                if let Some(b) = self.bytes.last_mut() {
                    *b |= 0x80 >> (self.len % 8);
                }
            }
            self.len += 1;
        }
    }
}

fn fits(v: i64, bits: u32) -> bool {
    let half = 1i64 << (bits - 1);
    (-half..half).contains(&v)
}

/// Encodes one channel's stream; returns its length in bits.
pub fn stream_bits(times: &[u64], values: &[f64]) -> usize {
    let mut out = Bits::default();
    let (Some(&t0), Some(&v0)) = (times.first(), values.first()) else {
        return 0;
    };
    out.push(t0, 64);
    out.push(v0.to_bits(), 64);
    let (mut prev_t, mut prev_delta) = (t0, 0i64);
    let (mut prev_v, mut lead, mut trail) = (v0.to_bits(), u32::MAX, 0u32);
    for (i, (&t, &v)) in times.iter().zip(values).enumerate().skip(1) {
        let delta = t.wrapping_sub(prev_t) as i64;
        if i == 1 {
            if fits(delta, 14) && delta >= 0 {
                out.push(delta as u64, 14);
            } else {
                out.push(0x3fff, 14);
                out.push(delta as u64, 64);
            }
        } else {
            let dod = delta.wrapping_sub(prev_delta);
            match dod {
                0 => out.push(0, 1),
                d if fits(d, 7) => {
                    out.push(0b10, 2);
                    out.push(d as u64, 7);
                }
                d if fits(d, 9) => {
                    out.push(0b110, 3);
                    out.push(d as u64, 9);
                }
                d if fits(d, 12) => {
                    out.push(0b1110, 4);
                    out.push(d as u64, 12);
                }
                d if fits(d, 32) => {
                    out.push(0b1111, 4);
                    out.push(d as u64, 32);
                }
                d => {
                    out.push(0b1111, 4);
                    out.push(0x8000_0000, 32);
                    out.push(d as u64, 64);
                }
            }
        }
        prev_delta = delta;
        prev_t = t;

        let bits = v.to_bits();
        let x = bits ^ prev_v;
        prev_v = bits;
        if x == 0 {
            out.push(0, 1);
            continue;
        }
        let (l, tz) = (x.leading_zeros().min(31), x.trailing_zeros());
        if lead != u32::MAX && l >= lead && tz >= trail {
            out.push(0b10, 2);
            out.push(x >> trail, 64 - lead - trail);
        } else {
            let len = 64 - l - tz;
            out.push(0b11, 2);
            out.push(u64::from(l), 5);
            out.push(u64::from(len & 63), 6);
            out.push(x >> tz, len);
            (lead, trail) = (l, tz);
        }
    }
    out.len
}

/// Bytes Gorilla needs for a batch: one stream per channel, each rounded
/// up to whole bytes.
pub fn batch_len(readings: &[Reading], floats: &[f64]) -> usize {
    let mut channels: Vec<(u16, Vec<u64>, Vec<f64>)> = Vec::new();
    for (r, &v) in readings.iter().zip(floats) {
        let i = match channels.iter().position(|c| c.0 == r.channel.0) {
            Some(i) => i,
            None => {
                channels.push((r.channel.0, Vec::new(), Vec::new()));
                channels.len() - 1
            }
        };
        channels[i].1.push(r.time.as_millis());
        channels[i].2.push(v);
    }
    channels
        .iter()
        .map(|(_, t, v)| stream_bits(t, v).div_ceil(8))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regular_constant_series_cost_two_bits_a_point() {
        let times: Vec<u64> = (0..101).map(|i| 1_000 + i * 60).collect();
        let values = vec![21.5; 101];
        // 64 + 64 header bits, 14 + 1 for the second point, then 1 + 1 per point.
        assert_eq!(stream_bits(&times, &values), 128 + 15 + 99 * 2);
    }
}
