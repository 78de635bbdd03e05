//! Any pieces fed to the reassembler (the first byte picks the link's
//! MTU, then each piece is a length byte and its bytes) yield frames or
//! typed errors, never a panic; every frame it yields cuts again into
//! pieces that put it back together.
#![no_main]

use libfuzzer_sys::fuzz_target;
use telemark_core::wire::fragment::{Fragments, Reassembler};

fuzz_target!(|data: &[u8]| {
    let Some((&mtu, mut rest)) = data.split_first() else {
        return;
    };
    let mtu = usize::from(mtu % 64) + 2;
    let Ok(mut rx) = Reassembler::<256>::new(mtu) else {
        return;
    };
    while let Some((&len, tail)) = rest.split_first() {
        let (piece, tail) = tail.split_at(usize::from(len).min(tail.len()));
        rest = tail;
        if let Ok(Some(frame)) = rx.push(piece) {
            let frame = frame.to_vec();
            let mut again = Reassembler::<256>::new(mtu).expect("same MTU");
            let mut back = None;
            for p in Fragments::new(&frame, mtu, 3).expect("a frame that came in pieces") {
                back = again
                    .push(&p.to_vec())
                    .expect("well-formed")
                    .map(<[u8]>::to_vec);
            }
            assert_eq!(back, Some(frame));
        }
    }
});
