//! Stager sealing on count, bytes and age, and nothing lost across seals.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use proptest::prelude::*;
use telemark_core::codec::{BlockCodec, CompactCodec, DecodeError, EncodeError, PlainCodec};
use telemark_core::model::{ChannelId, Reading, ReadingSink, Value};
use telemark_core::stager::{SealError, SealReason, SealedBlock, StageError, Stager, StagerConfig};
use telemark_core::time::{Duration, Instant};

fn reading(i: u64) -> Reading {
    Reading::new(
        ChannelId((i % 3) as u16),
        Instant::from_millis(i * 1000),
        Value::Scaled(i as i32 * 7 - 300),
    )
}

fn decode(block: &[u8]) -> Vec<Reading> {
    let mut out = Vec::new();
    PlainCodec
        .decode(
            block,
            &mut telemark_core::model::FnSink(|r| {
                out.push(r);
                Ok(())
            }),
        )
        .unwrap();
    out
}

#[test]
fn seals_on_count() {
    let mut s: Stager<32, PlainCodec> = Stager::new(
        PlainCodec,
        StagerConfig::new(10, 1024, Duration::from_mins(60)),
    );
    let mut buf = [0u8; 1024];
    for i in 0..9 {
        assert_eq!(s.push(reading(i), &mut buf).unwrap(), None);
    }
    let b = s.push(reading(9), &mut buf).unwrap().unwrap();
    assert_eq!(
        (b.readings, b.reason, b.first, b.last),
        (
            10,
            SealReason::Count,
            Instant::ZERO,
            Instant::from_millis(9000)
        )
    );
    assert_eq!(
        decode(&buf[..b.len]),
        (0..10).map(reading).collect::<Vec<_>>()
    );
    assert!(s.is_empty());
}

#[test]
fn count_is_capped_by_the_stager_capacity() {
    let mut s: Stager<4, PlainCodec> = Stager::new(
        PlainCodec,
        StagerConfig::new(100, 1024, Duration::from_mins(60)),
    );
    let mut buf = [0u8; 1024];
    let sealed: Vec<_> = (0..8)
        .filter_map(|i| s.push(reading(i), &mut buf).unwrap())
        .collect();
    assert_eq!(sealed.len(), 2);
    assert!(sealed
        .iter()
        .all(|b| b.readings == 4 && b.reason == SealReason::Count));
}

#[test]
fn seals_before_the_byte_budget_is_passed() {
    let mut s: Stager<64, PlainCodec> = Stager::new(
        PlainCodec,
        StagerConfig::new(64, 100, Duration::from_mins(60)),
    );
    let mut buf = [0u8; 512];
    let mut total = 0;
    for i in 0..40 {
        if let Some(b) = s.push(reading(i), &mut buf).unwrap() {
            assert_eq!(b.reason, SealReason::Bytes);
            assert!(b.len <= 100, "block of {} bytes", b.len);
            let got = decode(&buf[..b.len]);
            assert_eq!(
                got,
                (total..total + u64::from(b.readings))
                    .map(reading)
                    .collect::<Vec<_>>()
            );
            total += u64::from(b.readings);
        }
    }
    assert!(total > 0);
    assert_eq!(total as usize + s.len(), 40);
    assert!(s.estimated_len() <= 100);
}

#[test]
fn the_output_buffer_is_a_byte_budget_too() {
    let mut s: Stager<64, PlainCodec> = Stager::new(
        PlainCodec,
        StagerConfig::new(64, 4096, Duration::from_mins(60)),
    );
    let mut buf = [0u8; 48];
    let b = (0..20)
        .find_map(|i| s.push(reading(i), &mut buf).unwrap())
        .unwrap();
    assert!(b.len <= 48);
    assert_eq!(b.reason, SealReason::Bytes);
}

#[test]
fn seals_on_age_of_the_first_reading() {
    let mut s: Stager<32, PlainCodec> = Stager::new(
        PlainCodec,
        StagerConfig::new(32, 1024, Duration::from_secs(30)),
    );
    let mut buf = [0u8; 1024];
    assert_eq!(s.deadline(), None);
    s.push(reading(10), &mut buf).unwrap();
    s.push(reading(20), &mut buf).unwrap();
    assert_eq!(s.deadline(), Some(Instant::from_millis(40_000)));
    assert_eq!(
        s.poll(Instant::from_millis(39_999), &mut buf).unwrap(),
        None
    );
    let b = s
        .poll(Instant::from_millis(40_000), &mut buf)
        .unwrap()
        .unwrap();
    assert_eq!((b.readings, b.reason), (2, SealReason::Age));
    assert_eq!(s.deadline(), None);
    assert_eq!(s.flush(&mut buf).unwrap(), None);
}

#[test]
fn flush_seals_what_is_staged() {
    let mut s: Stager<32, PlainCodec> = Stager::new(
        PlainCodec,
        StagerConfig::new(32, 1024, Duration::from_secs(30)),
    );
    let mut buf = [0u8; 1024];
    s.push(reading(1), &mut buf).unwrap();
    let b = s.flush(&mut buf).unwrap().unwrap();
    assert_eq!((b.readings, b.reason), (1, SealReason::Flush));
}

/// A codec whose estimate is far too low, and which fits 3 readings per 64 bytes.
struct Optimist;

impl BlockCodec for Optimist {
    type Estimate = ();
    fn estimate(&self, _: &mut (), _: &Reading) -> usize {
        1
    }
    fn encode(&mut self, readings: &[Reading], out: &mut [u8]) -> Result<usize, EncodeError> {
        let need = readings.len() * 20;
        if need > out.len() {
            return Err(EncodeError::BufferTooSmall);
        }
        Ok(need)
    }
    fn decode(&self, _: &[u8], _: &mut dyn ReadingSink) -> Result<usize, DecodeError> {
        Err(DecodeError::Malformed)
    }
}

#[test]
fn a_short_estimate_seals_fewer_readings_and_keeps_the_rest() {
    let mut s: Stager<16, Optimist> =
        Stager::new(Optimist, StagerConfig::new(10, 64, Duration::from_secs(30)));
    let mut buf = [0u8; 64];
    let mut blocks: Vec<SealedBlock> = Vec::new();
    for i in 0..10 {
        blocks.extend(s.push(reading(i), &mut buf).unwrap());
    }
    // 10 readings did not fit; half did not either; 2 did.
    assert_eq!(blocks.len(), 1);
    assert_eq!(blocks[0].readings, 2);
    assert_eq!(s.len(), 8);
    assert_eq!(s.staged()[0], reading(2));
}

#[test]
fn a_buffer_too_small_for_one_reading_loses_nothing() {
    let mut s: Stager<2, Optimist> =
        Stager::new(Optimist, StagerConfig::new(2, 64, Duration::from_secs(30)));
    let mut tiny = [0u8; 8];
    assert_eq!(s.push(reading(0), &mut tiny), Ok(None));
    assert_eq!(
        s.push(reading(1), &mut tiny),
        Err(StageError::Seal(SealError::BufferTooSmall))
    );
    assert_eq!(s.len(), 2);
    // Full, and the block cannot be sealed: the reading is handed back.
    assert_eq!(
        s.push(reading(2), &mut tiny),
        Err(StageError::Full {
            reading: reading(2),
            cause: None
        })
    );
    // A proper buffer gets everything out.
    let mut buf = [0u8; 64];
    let b = s.flush(&mut buf).unwrap().unwrap();
    assert_eq!(b.readings, 2);
}

/// Readings of a few channels sampled together, with slow drift.
fn sensor_like(n: usize) -> Vec<Reading> {
    (0..n)
        .map(|i| {
            let row = (i / 3) as u64;
            Reading::new(
                ChannelId((i % 3) as u16),
                Instant::from_millis(row * 10_000),
                Value::Scaled((row as i32 / 4) * (i as i32 % 3 + 1)),
            )
        })
        .collect()
}

#[test]
fn the_compact_codec_is_the_default_and_its_estimate_fills_blocks() {
    // The byte budget, not the count, closes these blocks.
    let mut s: Stager<1024> = Stager::new(
        CompactCodec,
        StagerConfig::new(1024, 128, Duration::from_mins(600)),
    );
    let mut buf = [0u8; 128];
    let mut blocks = Vec::new();
    for r in sensor_like(3000) {
        if let Some(b) = s.push(r, &mut buf).unwrap() {
            assert_eq!(b.reason, SealReason::Bytes);
            assert!(b.len <= 128);
            blocks.push(b);
        }
    }
    // Sealed close to the budget: the estimate is an upper bound, not a wild one.
    let fill: usize = blocks.iter().map(|b| b.len).sum::<usize>() / blocks.len();
    assert!(fill >= 64, "blocks average {fill} of 128 bytes");
    let readings: usize = blocks.iter().map(|b| usize::from(b.readings)).sum();
    assert!(
        readings / blocks.len() > 40,
        "{readings} readings in {} blocks",
        blocks.len()
    );
}

proptest! {
    /// With the compact codec too, every reading comes out once, in order.
    #[test]
    fn compact_blocks_hold_every_reading_once_in_order(
        max_readings in 1u16..300,
        max_bytes in 32u16..600,
        n in 1usize..700,
    ) {
        let mut s: Stager<256> = Stager::new(CompactCodec, StagerConfig::new(max_readings, max_bytes, Duration::from_secs(60)));
        let mut buf = [0u8; 600];
        let input = sensor_like(n);
        let mut output = Vec::new();
        let take = |buf: &[u8], b: SealedBlock, out: &mut Vec<Reading>| {
            prop_assert!(b.len <= usize::from(max_bytes));
            let before = out.len();
            CompactCodec.decode(&buf[..b.len], out).unwrap();
            prop_assert_eq!(out.len() - before, usize::from(b.readings));
            Ok(())
        };
        for &r in &input {
            if let Some(b) = s.push(r, &mut buf).unwrap() {
                take(&buf, b, &mut output)?;
            }
        }
        if let Some(b) = s.flush(&mut buf).unwrap() {
            take(&buf, b, &mut output)?;
        }
        prop_assert_eq!(output, input);
    }

    /// Whatever the config, every reading comes out of some block, once, in order.
    #[test]
    fn every_reading_is_sealed_once_in_order(
        max_readings in 1u16..40,
        max_bytes in 32u16..400,
        values in prop::collection::vec((0u16..5, any::<i32>(), 0u64..5000), 1..300),
    ) {
        let mut s: Stager<32, PlainCodec> =
            Stager::new(PlainCodec, StagerConfig::new(max_readings, max_bytes, Duration::from_secs(60)));
        let mut buf = [0u8; 512];
        let mut t = 0;
        let mut input = Vec::new();
        let mut output = Vec::new();
        for (ch, v, dt) in values {
            t += dt;
            let r = Reading::new(ChannelId(ch), Instant::from_millis(t), Value::Scaled(v));
            input.push(r);
            if let Some(b) = s.push(r, &mut buf).unwrap() {
                prop_assert!(b.len <= usize::from(max_bytes));
                prop_assert!(b.readings <= max_readings);
                output.extend(decode(&buf[..b.len]));
            }
            if let Some(b) = s.poll(Instant::from_millis(t), &mut buf).unwrap() {
                output.extend(decode(&buf[..b.len]));
            }
        }
        if let Some(b) = s.flush(&mut buf).unwrap() {
            output.extend(decode(&buf[..b.len]));
        }
        prop_assert_eq!(output, input);
    }
}
