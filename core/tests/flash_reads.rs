//! What the flash store costs in flash reads: building a frame reads each
//! record it carries about once (O(k), not a scan per record), and a poll
//! with nothing due reads nothing. Figures from `SimFlash`'s read counter;
//! `cargo test -p telemark-core --features std,flash --test flash_reads --
//! --nocapture` prints them.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use telemark_core::model::Severity;
use telemark_core::store::{Blocking, FlashLayout, FlashStore, RecordMeta, RecordStore, SimFlash};
use telemark_core::time::{Duration, Instant};
use telemark_core::uplink::{Uplink, UplinkAction, UplinkConfig};
use telemark_core::wire::seal::{Key, Sealing};
use telemark_core::wire::Epoch;

type Flash = SimFlash<1024, 16>;
type Store = FlashStore<Blocking<Flash>, 512>;

const PAGE_WORDS: u64 = 16 * 8;

fn store(alerts: usize, blocks: usize) -> Store {
    let mut store = Store::new(Flash::new(), FlashLayout::split(0..16 * 1024, 1024, 4)).unwrap();
    store.mount_or_format().unwrap();
    let severities = [Severity::Info, Severity::Critical, Severity::Warning];
    for i in 0..alerts {
        let severity = severities[i % severities.len()];
        store
            .push(RecordMeta::alert(severity, 1), &[i as u8; 24])
            .unwrap();
    }
    for i in 0..blocks {
        store.push(RecordMeta::routine(6), &[i as u8; 24]).unwrap();
    }
    store
}

fn reads(store: &Store) -> u64 {
    store.flash().0.read_bytes()
}

/// Flash bytes read to build one frame of up to `mtu` bytes, the records
/// it carried and their bytes in flash.
fn frame_cost(store: &mut Store, mtu: u16) -> (u64, usize, usize) {
    let sealing = Sealing::key(1, Key::from_bytes([7; 32]));
    let mut up = Uplink::new(
        UplinkConfig::new(1, mtu, Duration::from_mins(60)),
        sealing,
        Epoch(1),
    );
    up.flush_now();
    let mut buf = [0u8; 1024];
    let now = Instant::ZERO;
    assert_eq!(up.poll(now, store, &mut buf), Some(UplinkAction::RadioOn));
    let before = reads(store);
    let Some(UplinkAction::Send(_)) = up.poll(now, store, &mut buf) else {
        panic!("no frame")
    };
    let cost = reads(store) - before;
    let carried = up.in_flight().to_vec();
    let mut bytes = 0;
    for n in 0..carried.len() {
        bytes += 7 + store.peek(n).unwrap().unwrap().payload.len();
    }
    (cost, carried.len(), bytes)
}

#[test]
fn a_frame_reads_each_record_it_carries_about_once() {
    for (alerts, blocks) in [(0, 60), (6, 60), (12, 60)] {
        let mut store = store(alerts, blocks);
        let (cost, records, bytes) = frame_cost(&mut store, 1024);
        println!(
            "{alerts} alerts, {blocks} blocks stored: {cost} bytes read for a frame of {records} \
             records ({bytes} bytes)"
        );
        assert!(records >= 8, "{records} records");
        // Each record once, its item header and the pages' states besides.
        assert!(
            cost <= 2 * bytes as u64 + PAGE_WORDS * 16,
            "{cost} bytes read for {bytes} bytes of records"
        );
    }
}

#[test]
fn the_cost_of_a_frame_grows_with_its_records_not_their_square() {
    let mut small = store(4, 60);
    let (small_cost, small_records, _) = frame_cost(&mut small, 256);
    let mut large = store(4, 60);
    let (large_cost, large_records, _) = frame_cost(&mut large, 1024);
    println!(
        "{small_records} records: {small_cost} bytes read; {large_records} records: \
         {large_cost} bytes read"
    );
    assert!(large_records >= 3 * small_records);
    // Three times the records or more, at most half as much again per record.
    assert!(
        large_cost * small_records as u64 <= 3 * small_cost * large_records as u64,
        "{large_cost} bytes for {large_records} records against {small_cost} for {small_records}"
    );
}

#[test]
fn a_poll_with_nothing_due_reads_no_flash() {
    let mut store = store(1, 20);
    let sealing = Sealing::key(1, Key::from_bytes([7; 32]));
    let mut up = Uplink::new(
        UplinkConfig::new(1, 512, Duration::from_mins(60)),
        sealing,
        Epoch(1),
    );
    let mut buf = [0u8; 512];
    // The info alert and the blocks wait for the report interval.
    let first = up.poll(Instant::ZERO, &mut store, &mut buf);
    assert!(!matches!(first, Some(UplinkAction::RadioOn)), "{first:?}");
    let before = reads(&store);
    for second in 1..600 {
        let now = Instant::from_millis(second * 1000);
        assert_eq!(up.poll(now, &mut store, &mut buf), None);
    }
    let cost = reads(&store) - before;
    println!("599 idle polls: {cost} bytes read");
    assert_eq!(cost, 0, "{cost} bytes read by idle polls");
}
