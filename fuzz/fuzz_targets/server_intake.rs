//! The server half's intake: any bytes, from a device the keyring knows
//! (allowed unauthenticated frames, so the bytes reach the decoders), are
//! refused or stored; never a panic, never more readings than the bound,
//! and nothing stored from a refused frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use telemark_core::wire::seal::Key;
use telemark_server::{Keyring, Limits, MemoryStore, Server};

fuzz_target!(|data: &[u8]| {
    let mut keyring = Keyring::new();
    keyring.insert(7, 1, Key::from_bytes([1; 32]));
    keyring.allow_unauthenticated(7);
    let limits = Limits {
        readings_per_frame: 4096,
        ..Limits::default()
    };
    let mut server = Server::with_limits(keyring, limits);
    let mut store = MemoryStore::new();
    match server.receive(&mut store, data, 1_700_000_000_000) {
        Ok(received) => {
            assert!(received.batch.readings() <= 4096);
            assert_eq!(store.commits(), 1);
        }
        Err(_) => assert_eq!(store.commits(), 0),
    }
});
