//! Readings built from arbitrary bytes encode and decode back bit for bit,
//! from the full encoder and from the device profile's.
#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use telemark_core::codec::{raw_len, BlockCodec, CompactCodec, DeviceCodec};
use telemark_core::model::{ChannelId, Quality, Reading, Value};
use telemark_core::time::Instant;

#[derive(Arbitrary, Debug)]
struct Input {
    /// Few channels make realistic blocks; the fuzzer can still reach many.
    readings: Vec<(u8, u64, u8, u32, u8)>,
}

fuzz_target!(|input: Input| {
    let readings: Vec<Reading> = input
        .readings
        .iter()
        .map(|&(c, t, k, v, q)| Reading {
            channel: ChannelId(u16::from(c % 24)),
            time: Instant::from_millis(t),
            value: match k % 4 {
                0 => Value::Scaled(v as i32),
                1 => Value::Float(f32::from_bits(v)),
                2 => Value::Bool(v & 1 == 1),
                _ => Value::Counter(v),
            },
            quality: Quality::from_bits(q),
        })
        .collect();
    round_trip(CompactCodec, &readings);
    round_trip(DeviceCodec, &readings);
});

fn round_trip(mut codec: impl BlockCodec, readings: &[Reading]) {
    let mut buf = vec![0u8; raw_len(readings.len())];
    let n = codec
        .encode(readings, &mut buf)
        .expect("a raw-sized buffer always fits");
    let mut back = Vec::new();
    CompactCodec
        .decode(&buf[..n], &mut back)
        .expect("own blocks decode");
    assert_eq!(back.len(), readings.len());
    assert!(back.iter().zip(readings).all(|(a, b)| a.same_as(b)));
}
