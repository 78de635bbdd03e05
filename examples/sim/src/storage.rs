//! The stores a simulated device can run on: the RAM store, which a power
//! cycle empties, and the flash store on `SimFlash`, which survives it and
//! can lose power at any byte of a write or an erase.

use telemark_core::store::{
    Blocking, FlashLayout, FlashStore, FullPolicy, Lane, RamStore, RecordStore, SimFlash,
};
use telemark_core::wire::report::Report;
use telemark_core::wire::{Epoch, Seq};

use crate::link::Rng;

/// A record as a listing of the store shows it.
#[derive(Clone, Copy, Debug)]
pub struct Listed {
    pub seq: Seq,
    pub lane: Lane,
    pub readings: u64,
    pub decimated: bool,
    /// A heartbeat, which the next one may replace unsent.
    pub heartbeat: bool,
    /// The boot that numbered it.
    pub epoch: Option<Epoch>,
}

/// Every record the store holds, in delivery order.
pub fn list<S: RecordStore>(store: &mut S) -> Vec<Listed> {
    let boots = store.boots();
    let mut out = Vec::new();
    let _ = store.visit(|r| {
        out.push(Listed {
            seq: r.seq,
            lane: r.meta.lane,
            readings: u64::from(r.meta.readings),
            decimated: r.meta.decimated,
            heartbeat: r.meta.lane == Lane::Alert
                && matches!(Report::decode(r.payload), Ok(Report::Heartbeat(_))),
            epoch: boots.epoch_of(r.seq),
        });
        true
    });
    out
}

/// A store after a power cycle: the store, the new boot's epoch, and the
/// records evicted as the boot started.
pub type Cycled<S> = (S, Epoch, Vec<Listed>);

/// A device's store, as the simulator powers it.
pub trait SimStore: RecordStore + Sized {
    /// Whether records survive a power cycle.
    const PERSISTENT: bool;

    /// A new device's store, and the epoch of its first boot.
    fn first(rng: &mut Rng) -> Result<(Self, Epoch), String>;

    /// The store after the power went (cleanly, or cut in the middle of a
    /// write) and came back, the epoch of the new boot, and the records
    /// the store evicted to start it (too many boots still owned records).
    fn power_cycle(self, rng: &mut Rng) -> Result<Cycled<Self>, String>;

    /// Every record the store holds, read without touching it: reading
    /// may repair what an earlier cut left, and a repair writes.
    fn snapshot(&mut self) -> Vec<Listed> {
        list(self)
    }

    /// Cuts the power at byte `at` (modulo its length) of the next write
    /// or erase; nothing for a store without flash.
    fn cut_in_next(&mut self, at: u64) {
        let _ = at;
    }

    /// Takes back a cut not yet happened.
    fn disarm(&mut self) {}

    /// True once a cut happened.
    fn is_cut(&self) -> bool {
        false
    }

    /// Bytes written and erased so far.
    fn written(&self) -> u64 {
        0
    }
}

pub type RamDeviceStore = RamStore<1024, 8192>;

impl SimStore for RamDeviceStore {
    const PERSISTENT: bool = false;

    fn first(rng: &mut Rng) -> Result<(Self, Epoch), String> {
        Ok((Self::new(FullPolicy::EvictOldest), Epoch(rng.next() | 1)))
    }

    fn power_cycle(self, rng: &mut Rng) -> Result<Cycled<Self>, String> {
        Self::first(rng).map(|(store, epoch)| (store, epoch, Vec::new()))
    }
}

/// 16 pages of 1 KiB: 4 for alerts and state, 12 for routine blocks.
pub type DeviceFlash = SimFlash<1024, 16>;
pub type FlashDeviceStore = FlashStore<Blocking<DeviceFlash>, 512>;

fn layout() -> FlashLayout {
    FlashLayout::split(0..16 * 1024, 1024, 4)
}

fn mount(flash: DeviceFlash, rng: &mut Rng) -> Result<Cycled<FlashDeviceStore>, String> {
    let mut store =
        FlashDeviceStore::new(flash, layout()).map_err(|e| format!("flash layout: {e}"))?;
    // A power cut never corrupts the store: mount, never format.
    store.mount().map_err(|e| format!("mount: {e}"))?;
    store.set_routine_policy(FullPolicy::EvictOldest);
    let before = list(&mut store);
    let epoch = store
        .start_boot(rng.next())
        .map_err(|e| format!("start_boot: {e}"))?;
    let after: Vec<Seq> = list(&mut store).iter().map(|l| l.seq).collect();
    let evicted = before
        .into_iter()
        .filter(|l| !after.contains(&l.seq))
        .collect();
    Ok((store, epoch, evicted))
}

impl SimStore for FlashDeviceStore {
    const PERSISTENT: bool = true;

    fn first(rng: &mut Rng) -> Result<(Self, Epoch), String> {
        mount(DeviceFlash::new(), rng).map(|(store, epoch, _)| (store, epoch))
    }

    fn power_cycle(self, rng: &mut Rng) -> Result<Cycled<Self>, String> {
        let mut flash = self.release().0;
        flash.power_on();
        mount(flash, rng)
    }

    fn snapshot(&mut self) -> Vec<Listed> {
        // The same records, mounted from a copy of the flash.
        let mut flash = self.flash().0.clone();
        flash.power_on();
        let copy = FlashDeviceStore::new(flash, layout())
            .ok()
            .and_then(|mut copy| copy.mount().ok().map(|_| copy));
        copy.map(|mut copy| list(&mut copy)).unwrap_or_default()
    }

    fn cut_in_next(&mut self, at: u64) {
        self.flash_mut().0.cut_in_next(at);
    }

    fn disarm(&mut self) {
        if !self.is_cut() {
            self.flash_mut().0.power_on();
        }
    }

    fn is_cut(&self) -> bool {
        self.flash().0.is_cut()
    }

    fn written(&self) -> u64 {
        self.flash().0.spent()
    }
}
