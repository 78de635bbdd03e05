//! Any bytes given to the body parsers (as a verified frame's body would
//! reach them) yield a checked frame or a typed error; a checked frame's
//! records, ranges and items can all be walked.
#![no_main]

use libfuzzer_sys::fuzz_target;
use telemark_core::wire::frame::{RecordsFrame, Response};
use telemark_core::wire::seal::{FrameKind, Header, Sealing};
use telemark_core::wire::Epoch;

fuzz_target!(|data: &[u8]| {
    let records = Header::new(
        FrameKind::Records,
        7,
        Epoch(1),
        1,
        &Sealing::Unauthenticated,
    );
    if let Ok(frame) = RecordsFrame::parse(&records, data) {
        assert_eq!(frame.records().count(), frame.len());
    }
    let response = Header::new(
        FrameKind::Response,
        7,
        Epoch(1),
        1,
        &Sealing::Unauthenticated,
    );
    if let Ok(r) = Response::parse(&response, data) {
        let _ = r.ranges().count();
        let _ = r.items().count();
    }
});
