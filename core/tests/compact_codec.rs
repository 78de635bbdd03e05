//! The compact codec against the plain reference: exact round trips for
//! every shape of batch, from the full encoder and from the device
//! profile's, and clean errors for any bytes.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use proptest::prelude::*;
use telemark_core::codec::{
    raw_len, BlockCodec, CompactCodec, DecodeError, DeviceCodec, EncodeError, MAX_CHANNELS,
};
use telemark_core::model::{ChannelId, Quality, Reading, Value};
use telemark_core::time::Instant;

/// Readings compared bit for bit (NaN floats included).
fn key(r: &[Reading]) -> Vec<(u16, u64, u8, u8, u32)> {
    r.iter()
        .map(|r| {
            let (k, v) = match r.value {
                Value::Scaled(v) => (0, v as u32),
                Value::Float(f) => (1, f.to_bits()),
                Value::Bool(b) => (2, u32::from(b)),
                Value::Counter(c) => (3, c),
            };
            (r.channel.0, r.time.as_millis(), r.quality.bits(), k, v)
        })
        .collect()
}

/// Encodes `readings` with `codec` and checks that the server's decoder
/// gives them back exactly; returns the block's length.
fn round_trip_with(mut codec: impl BlockCodec, readings: &[Reading]) -> usize {
    let mut buf = vec![0u8; raw_len(readings.len())];
    let n = codec.encode(readings, &mut buf).unwrap();
    assert!(n <= raw_len(readings.len()));
    let mut back = Vec::new();
    assert_eq!(
        CompactCodec.decode(&buf[..n], &mut back),
        Ok(readings.len())
    );
    assert_eq!(key(&back), key(readings));
    n
}

/// Round trips through the full encoder and the device profile's; the
/// larger block's length.
fn round_trip(readings: &[Reading]) -> usize {
    round_trip_with(CompactCodec, readings).max(round_trip_with(DeviceCodec, readings))
}

/// One channel's value of the channel's own kind.
fn value_for(kind: u8, raw: u32) -> Value {
    match kind {
        0 => Value::Scaled(raw as i32),
        1 => Value::Float(f32::from_bits(raw)),
        2 => Value::Bool(raw & 1 == 1),
        _ => Value::Counter(raw),
    }
}

prop_compose! {
    /// Sensor-like batches: a few channels of fixed kinds, sampled in rows,
    /// with smooth or noisy values, jitter, gaps, and the odd bad quality.
    fn sensor_batch()(
        channels in 1usize..8,
        kinds in prop::collection::vec(0u8..4, 8),
        rows in 1usize..120,
        start in any::<u64>(),
        period in 1u64..100_000,
        jitter in 0u64..4,
        noise in prop_oneof![Just(0u32), 0u32..8, any::<u32>()],
        quality_every in prop_oneof![Just(0usize), 1usize..50],
        skip_first in 0usize..8,
        seed in any::<u64>(),
    ) -> Vec<Reading> {
        let mut rng = seed | 1;
        let mut next = move || { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; rng };
        let mut out = Vec::new();
        let mut level = vec![0i64; channels];
        for row in 0..rows {
            let t = start.wrapping_add(row as u64 * period).wrapping_add(next() % (jitter + 1));
            for c in 0..channels {
                level[c] += (next() % 7) as i64 - 3;
                let wobble = if noise == 0 { 0 } else { (next() as u32) % noise.max(1) };
                let raw = (level[c] as u32).wrapping_add(wobble);
                let mut r = Reading::new(ChannelId(c as u16 * 3 + 1), Instant::from_millis(t), value_for(kinds[c], raw));
                if quality_every > 0 && out.len() % quality_every == 0 {
                    r.quality = Quality::from_bits(next() as u8);
                }
                out.push(r);
            }
        }
        // Batches are cut in arrival order, so they may start mid-row.
        let skip = skip_first.min(out.len().saturating_sub(1));
        out.split_off(skip)
    }
}

fn any_reading() -> impl Strategy<Value = Reading> {
    (0u16..20, any::<u64>(), 0u8..4, any::<u32>(), any::<u8>()).prop_map(|(c, t, k, v, q)| {
        Reading {
            channel: ChannelId(c),
            time: Instant::from_millis(t),
            value: value_for(k, v),
            quality: Quality::from_bits(q),
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn sensor_batches_round_trip(readings in sensor_batch()) {
        round_trip(&readings);
    }

    #[test]
    fn arbitrary_batches_round_trip(readings in prop::collection::vec(any_reading(), 0..300)) {
        round_trip(&readings);
    }

    #[test]
    fn arbitrary_bytes_decode_or_fail_cleanly(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let mut back = Vec::new();
        if let Ok(n) = CompactCodec.decode(&bytes, &mut back) {
            prop_assert_eq!(n, back.len());
        }
    }

    /// Corrupting any byte of a real block gives an error or other readings,
    /// never a panic.
    #[test]
    fn corrupted_blocks_fail_cleanly(readings in sensor_batch(), at in any::<usize>(), flip in 1u8..=255) {
        let mut buf = vec![0u8; raw_len(readings.len())];
        let n = CompactCodec.encode(&readings, &mut buf).unwrap();
        buf[at % n] ^= flip;
        let mut back = Vec::new();
        let _ = CompactCodec.decode(&buf[..n], &mut back);
        let _ = CompactCodec.decode(&buf[..at % n], &mut back);
    }
}

#[test]
fn regular_rows_cost_about_nothing_but_their_values() {
    // 4 channels, once a minute, constant values: the block is mostly header.
    let readings: Vec<Reading> = (0..64u64)
        .flat_map(|i| {
            (0..4u16).map(move |c| {
                Reading::new(
                    ChannelId(c),
                    Instant::from_millis(1_700_000_000_000 + i * 60_000),
                    Value::Scaled(100 * i32::from(c)),
                )
            })
        })
        .collect();
    let n = round_trip(&readings);
    assert!(n < 64, "{n} bytes for 256 constant readings");
}

#[test]
fn jittered_360hz_timestamps_are_nearly_free() {
    // 360 Hz rounded to whole milliseconds: 3, 3, 2, 3, 3, 3, 2 ms apart.
    let readings: Vec<Reading> = (0..256u64)
        .map(|i| {
            Reading::new(
                ChannelId(1),
                Instant::from_millis((i * 1000 + 180) / 360),
                Value::Scaled(0),
            )
        })
        .collect();
    let n = round_trip(&readings);
    assert!(n < 40, "{n} bytes");
}

#[test]
fn more_channels_than_columns_allow_fall_back_and_round_trip() {
    let readings: Vec<Reading> = (0..(MAX_CHANNELS as u16 + 3) * 4)
        .map(|i| {
            Reading::new(
                ChannelId(i % (MAX_CHANNELS as u16 + 3)),
                Instant::from_millis(u64::from(i / 8)),
                Value::Scaled(7),
            )
        })
        .collect();
    round_trip(&readings);
}

#[test]
fn a_channel_that_changes_kind_falls_back_and_round_trips() {
    let readings = [
        Reading::new(ChannelId(1), Instant::ZERO, Value::Scaled(1)),
        Reading::new(ChannelId(1), Instant::from_millis(1), Value::Float(1.5)),
    ];
    round_trip(&readings);
}

#[test]
fn output_that_does_not_fit_is_a_typed_error() {
    let readings: Vec<Reading> = (0..100u64)
        .map(|i| {
            Reading::new(
                ChannelId(1),
                Instant::from_millis(i * 7919),
                Value::Counter(i as u32 * 104_729),
            )
        })
        .collect();
    let mut tiny = [0u8; 8];
    assert_eq!(
        CompactCodec.encode(&readings, &mut tiny),
        Err(EncodeError::BufferTooSmall)
    );
}

#[test]
fn empty_and_truncated_input_are_errors() {
    let mut back = Vec::new();
    assert_eq!(
        CompactCodec.decode(&[], &mut back),
        Err(DecodeError::Truncated)
    );
    assert_eq!(
        CompactCodec.decode(&[9], &mut back),
        Err(DecodeError::Malformed)
    );
    let empty: [Reading; 0] = [];
    assert_eq!(round_trip(&empty), 2);
}
