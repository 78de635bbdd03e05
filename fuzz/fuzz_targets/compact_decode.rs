//! Any bytes given to the compact codec's decoder yield readings or a typed
//! error: never a panic, and never work out of proportion to the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use telemark_core::codec::{BlockCodec, CompactCodec};
use telemark_core::model::Reading;

fuzz_target!(|data: &[u8]| {
    let mut readings: Vec<Reading> = Vec::new();
    if let Ok(n) = CompactCodec.decode(data, &mut readings) {
        assert_eq!(n, readings.len());
        // Column and raw blocks cannot hold more readings than bits; lz4
        // blocks expand at most 255-fold.
        assert!(n <= data.len().saturating_mul(8 * 255));
    }
});
