//! Any bytes given to `open` are refused or, sealed with the key, opened;
//! a frame that opens was sealed with that key (so a forged one never
//! does); the header parser never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use telemark_core::wire::seal::{open, seal, Direction, Header, Key, Sealing};

fuzz_target!(|data: &[u8]| {
    let _ = Header::parse(data);
    let key = Sealing::key(1, Key::from_bytes([0x42; 32]));
    let mut bytes = data.to_vec();
    if let Ok((header, body)) = open(&mut bytes, &key, Direction::Up) {
        // Reseal what opened: the same bytes come back.
        let body = body.to_vec();
        let mut again = vec![0u8; data.len() + 32];
        let at = header.write(&mut again).unwrap();
        again[at..at + body.len()].copy_from_slice(&body);
        let n = seal(&mut again, at, body.len(), &key, Direction::Up).unwrap();
        assert_eq!(&again[..n], data);
    }
    let mut plain = data.to_vec();
    let _ = open(&mut plain, &Sealing::Unauthenticated, Direction::Down);
});
