//! Reports (alerts, heartbeats, config statuses, command results, key
//! statuses, channels, crashes) from any bytes: a report or a typed error, never a
//! panic; a report that decodes encodes to bytes that decode to it again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use telemark_core::wire::report::Report;

fuzz_target!(|data: &[u8]| {
    let Ok(report) = Report::decode(data) else {
        return;
    };
    let mut buf = [0u8; 256];
    let n = report
        .encode(&mut buf)
        .expect("a decoded report re-encodes");
    let again = Report::decode(&buf[..n]).expect("an encoded report decodes");
    let mut buf2 = [0u8; 256];
    let n2 = again.encode(&mut buf2).expect("re-encodes");
    assert_eq!(&buf[..n], &buf2[..n2]);
});
