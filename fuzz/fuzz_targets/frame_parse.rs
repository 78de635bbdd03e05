//! Any bytes given to the frame parser yield a checked frame or a typed
//! error; a checked frame's records can all be walked.
#![no_main]

use libfuzzer_sys::fuzz_target;
use telemark_core::frame::RecordsFrame;

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = RecordsFrame::parse(data) {
        assert_eq!(frame.records().count(), frame.len());
    }
});
