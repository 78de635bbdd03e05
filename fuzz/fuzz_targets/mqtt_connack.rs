//! The first bytes a broker sends, read for its Maximum Packet Size: an
//! answer or a request for more, never a panic; once told, more bytes
//! never change the answer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use telemark_mqtt::connack::{read, Told};

fuzz_target!(|data: &[u8]| {
    let mut told = None;
    for end in 0..=data.len() {
        match (read(&data[..end]), told) {
            (Told::Max(max), None) => told = Some(max),
            (Told::Max(max), Some(before)) => assert_eq!(max, before, "at {end}"),
            (Told::More, None) => {}
            (Told::More, Some(_)) => panic!("more wanted after an answer, at {end}"),
        }
    }
});
