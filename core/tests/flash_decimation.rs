//! Decimation in the flash store gives space back: halving every block of
//! a routine lane at 90 % leaves it a little over half as full. (Each copy
//! is appended before its original goes, and a page comes back only once
//! all its items are gone, so a lane with no room left for one copy cannot
//! be decimated: the engine starts at its high-water mark, below that.)
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use telemark_core::store::{
    Blocking, FlashLayout, FlashStore, FullPolicy, Lane, RecordMeta, RecordStore, SimFlash,
};

type Flash = SimFlash<1024, 12>;
type Store = FlashStore<Blocking<Flash>, 512>;

#[test]
fn halving_every_block_frees_routine_space() {
    let mut store = Store::new(Flash::new(), FlashLayout::split(0..12 * 1024, 1024, 3)).unwrap();
    store.mount_or_format().unwrap();
    store.set_routine_policy(FullPolicy::Refuse);
    let capacity = store.capacity(Lane::Routine);
    let mut pushed = 0;
    while store.used(Lane::Routine) * 100 < capacity * 90 {
        let payload = [pushed as u8; 160];
        if store.push(RecordMeta::routine(100), &payload).is_err() {
            break;
        }
        pushed += 1;
    }
    let full = store.used(Lane::Routine);
    let mut halved = 0;
    while let Some(r) = store.oldest_undecimated(&[]).unwrap() {
        let (seq, half) = (r.seq, r.payload[..r.payload.len() / 2].to_vec());
        if !store.replace_decimated(seq, &half, 50).unwrap() {
            break;
        }
        halved += 1;
    }
    let after = store.used(Lane::Routine);
    assert_eq!(halved, pushed, "every block halved");
    assert!(
        after * 100 < full * 60,
        "{after} of {capacity} bytes used after halving, {full} before"
    );
}
