//! Any byte stream fed to the serial deframer yields frames or typed
//! errors, never a panic; every frame it yields re-frames to bytes that
//! deframe to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use telemark_serial::{encode, overhead, Deframer};

fuzz_target!(|data: &[u8]| {
    let mut rx: Deframer<128> = Deframer::new();
    for &b in data {
        if let Some(Ok(frame)) = rx.push(b) {
            let frame = frame.to_vec();
            let mut line = vec![0u8; frame.len() + overhead(frame.len())];
            let n = encode(&frame, &mut line).expect("sized for the frame");
            let mut again: Deframer<256> = Deframer::new();
            let back = line[..n]
                .iter()
                .find_map(|&b| again.push(b).map(|r| r.map(<[u8]>::to_vec)));
            assert_eq!(back, Some(Ok(frame)));
        }
    }
});
