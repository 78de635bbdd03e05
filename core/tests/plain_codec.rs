//! The reference codec: exact round trips, and no panic on any input.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use telemark_core::codec::{BlockCodec, DecodeError, PlainCodec};
use telemark_core::model::{ChannelId, Quality, Reading, Value};
use telemark_core::time::Instant;

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i32>().prop_map(Value::Scaled),
        any::<u32>().prop_map(|b| Value::Float(f32::from_bits(b))),
        any::<bool>().prop_map(Value::Bool),
        any::<u32>().prop_map(Value::Counter),
    ]
}

fn reading() -> impl Strategy<Value = Reading> {
    (any::<u16>(), any::<u64>(), value(), any::<u8>()).prop_map(|(c, t, v, q)| Reading {
        channel: ChannelId(c),
        time: Instant::from_millis(t),
        value: v,
        quality: Quality::from_bits(q),
    })
}

fn bits(r: &[Reading]) -> Vec<(u16, u64, u8, u64)> {
    r.iter()
        .map(|r| {
            let v = match r.value {
                Value::Scaled(v) => v as u32 as u64,
                Value::Float(f) => (1 << 32) | u64::from(f.to_bits()),
                Value::Bool(b) => (2 << 32) | u64::from(b),
                Value::Counter(c) => (3 << 32) | u64::from(c),
            };
            (r.channel.0, r.time.as_millis(), r.quality.bits(), v)
        })
        .collect()
}

proptest! {
    #[test]
    fn round_trips_bit_exact(readings in prop::collection::vec(reading(), 0..200)) {
        let mut buf = vec![0u8; 25 * readings.len() + 8];
        let n = PlainCodec.encode(&readings, &mut buf).unwrap();
        prop_assert!(PlainCodec.estimate_all(&readings) >= n);
        let mut back = Vec::new();
        prop_assert_eq!(PlainCodec.decode(&buf[..n], &mut back), Ok(readings.len()));
        prop_assert_eq!(bits(&back), bits(&readings));
    }

    #[test]
    fn arbitrary_bytes_decode_or_fail_cleanly(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let mut back = Vec::new();
        if let Ok(n) = PlainCodec.decode(&bytes, &mut back) {
            prop_assert_eq!(n, back.len());
            prop_assert!(n <= bytes.len() / 5);
        }
    }
}

trait EstimateAll {
    fn estimate_all(&self, readings: &[Reading]) -> usize;
}

impl EstimateAll for PlainCodec {
    fn estimate_all(&self, readings: &[Reading]) -> usize {
        let mut e = 0;
        readings.iter().fold(1, |_, r| self.estimate(&mut e, r))
    }
}

#[test]
fn truncation_and_trailing_bytes_are_errors() {
    let r = [Reading::new(
        ChannelId(1),
        Instant::from_millis(5),
        Value::Counter(9),
    )];
    let mut buf = [0u8; 32];
    let n = PlainCodec.encode(&r, &mut buf).unwrap();
    let mut sink = Vec::new();
    assert_eq!(
        PlainCodec.decode(&buf[..n - 1], &mut sink),
        Err(DecodeError::BadCount)
    );
    assert_eq!(
        PlainCodec.decode(&buf[..n + 1], &mut sink),
        Err(DecodeError::TrailingBytes)
    );
    let mut full: heapless::Vec<Reading, 0> = heapless::Vec::new();
    assert_eq!(
        PlainCodec.decode(&buf[..n], &mut full),
        Err(DecodeError::SinkFull { decoded: 0 })
    );
}
