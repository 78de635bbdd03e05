//! Wear of the flash store's pages under a steady workload, and the
//! lifetime it projects for a 64 KiB region of internal flash.
//!
//! `cargo run --release -p telemark-core --features std,flash --example flash_wear -- [DAYS]`
//!
//! The workload: one sealed block every 5 minutes (200 bytes, the size the
//! default stager seals at), acknowledged at the hourly report; a heartbeat
//! every 6 hours and an alert a day in the alert lane, acknowledged with
//! the next report; a config update a week. Erases are counted per page;
//! the lifetime is the pages' endurance (10,000 cycles) over the busiest
//! page's erases per year.

use telemark_core::config::{DeviceConfig, EngineConfig};
use telemark_core::model::Severity;
use telemark_core::stager::StagerConfig;
use telemark_core::store::{
    FlashLayout, FlashStore, FullPolicy, RecordMeta, RecordStore, SeqRange, SimFlash,
};
use telemark_core::time::Duration;
use telemark_core::uplink::UplinkConfig;

const ENDURANCE: f64 = 10_000.0;
const BLOCK: usize = 200;

fn run<const PAGE: usize, const PAGES: usize>(name: &str, alert_pages: u32, days: u32) {
    let layout = FlashLayout::split(0..(PAGE * PAGES) as u32, PAGE as u32, alert_pages);
    let mut store = FlashStore::<_, 512>::new(SimFlash::<PAGE, PAGES>::new(), layout)
        .expect("layout fits the flash");
    store.mount().expect("mount");
    store.set_routine_policy(FullPolicy::EvictOldest);
    let block = vec![0x5Au8; BLOCK];
    let mut unacked = Vec::new();
    let mut version = 0;
    for minute in (0..days * 24 * 60).step_by(5) {
        unacked.push(
            store
                .push(RecordMeta::routine(120), &block)
                .expect("push block"),
        );
        if minute % (6 * 60) == 0 {
            unacked.push(
                store
                    .push(RecordMeta::alert(Severity::Info, 1), &[0x11; 22])
                    .expect("push heartbeat"),
            );
        }
        if minute % (24 * 60) == 12 * 60 {
            unacked.push(
                store
                    .push(RecordMeta::alert(Severity::Warning, 1), &[0x10; 14])
                    .expect("push alert"),
            );
        }
        if minute % (7 * 24 * 60) == 0 {
            version += 1;
            let config: DeviceConfig<4> = DeviceConfig {
                version,
                engine: EngineConfig {
                    uplink: UplinkConfig::new(9, 256, Duration::from_mins(60)),
                    stager: StagerConfig::new(128, 190, Duration::from_mins(5)),
                    heartbeat: Duration::from_mins(360),
                },
                store_policy: FullPolicy::EvictOldest,
                channels: heapless::Vec::new(),
            };
            store
                .save_config(|buf| config.encode(buf).ok())
                .expect("save config");
        }
        if minute % 60 == 55 {
            if let (Some(first), Some(last)) = (unacked.first(), unacked.last()) {
                store.ack(SeqRange::new(*first, *last)).expect("ack");
            }
            unacked.clear();
        }
    }
    let erases = store.flash().0.erase_counts();
    let years = f64::from(days) / 365.0;
    let split = alert_pages as usize;
    let stats = |pages: &[u32]| {
        let max = pages.iter().copied().max().unwrap_or(0);
        let min = pages.iter().copied().min().unwrap_or(0);
        let mean = pages.iter().map(|&e| f64::from(e)).sum::<f64>() / pages.len() as f64;
        (min, mean, max)
    };
    let (amin, amean, amax) = stats(&erases[..split]);
    let (rmin, rmean, rmax) = stats(&erases[split..]);
    let busiest = f64::from(amax.max(rmax)) / years;
    println!(
        "{name}: {PAGES} pages of {} KiB ({} alert+state, {} routine), {days} days",
        PAGE / 1024,
        split,
        PAGES - split
    );
    println!("  erases per page, alert+state map: min {amin} mean {amean:.1} max {amax}");
    println!("  erases per page, routine queue:   min {rmin} mean {rmean:.1} max {rmax}");
    println!("  all pages: {erases:?}");
    println!(
        "  busiest page: {busiest:.0} erases/year -> {:.0} years to {ENDURANCE} cycles",
        ENDURANCE / busiest
    );
}

fn main() {
    let days = std::env::args()
        .nth(1)
        .map(|d| d.parse().expect("DAYS is a number"))
        .unwrap_or(365);
    run::<4096, 16>("nRF52840 internal flash, 64 KiB", 2, days);
    run::<16384, 4>("STM32F4 internal flash, 64 KiB (sectors 0-3 size)", 2, days);
}
