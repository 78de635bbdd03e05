//! The two-lane store in NOR flash, safe against power loss at any instant.
//!
//! [`FlashStore`] keeps the routine lane in a [`sequential-storage`] queue,
//! and the alert lane with the device's state (a lease on sequence numbers,
//! the config in force) in a `sequential-storage` map, each in its own
//! pages of one flash ([`FlashLayout`]): routine data can never take an
//! alert's room. Every item carries CRCs; a write torn by a power cut is
//! ignored and repaired on the next operation, so after any cut the store
//! holds exactly what it held before the operation, or after it.
//!
//! Four pages are enough (two for the map, two for the queue), so the
//! store fits the four 16 KiB sectors of an STM32F4 as well as sixteen
//! 4 KiB pages of an nRF52840.
//!
//! What survives a reboot:
//!
//! - every unacknowledged record of both lanes, in order;
//! - the sequence counter: a push first leases numbers in blocks of 256 in
//!   the map, so after a reboot numbering resumes past every number that
//!   may have been handed out (up to 256 go unused per reboot);
//! - the config in force ([`RecordStore::save_config`]), written before the
//!   engine reports it applied;
//! - the boot epochs ([`FlashStore::start_boot`]);
//! - a key the server rotated to ([`RecordStore::save_key`]), saved before
//!   the first frame sealed with it. Formatting forgets it: a formatted
//!   device comes back with its provisioned key.
//!
//! What stays in RAM, so that a wake-up costs few flash reads: the alert
//! lane's delivery order (12 bytes per record, at most
//! [`MAX_ALERT_RECORDS`]), the lanes' lengths and room, and the first
//! record to send, so a poll with nothing due reads no flash. A frame is
//! built in one walk through the store ([`RecordStore::visit`]), reading
//! each record it carries about once.
//!
//! The flash must allow a word to be written twice (clearing bits only):
//! acknowledging a record marks it in place (`MultiwriteNorFlash`). The
//! internal flash of the nRF52 and STM32F4 families does.
//!
//! ```
//! use telemark_core::store::{FlashLayout, FlashStore, Lane, RecordMeta, RecordStore, SeqRange, SimFlash};
//!
//! // 16 pages of 1 KiB: 4 for alerts and state, 12 for routine blocks.
//! let layout = FlashLayout::split(0..16 * 1024, 1024, 4);
//! let mut store = FlashStore::<_, 256>::new(SimFlash::<1024, 16>::new(), layout.clone()).unwrap();
//! store.mount().unwrap();
//! let seq = store.push(RecordMeta::routine(3), b"block").unwrap();
//!
//! // Power goes: everything in RAM is lost; mount reads it back.
//! let flash = store.release().0;
//! let mut store = FlashStore::<_, 256>::new(flash, layout).unwrap();
//! store.mount().unwrap();
//! assert_eq!(store.peek(0).unwrap().unwrap().payload, b"block");
//! assert!(store.next_seq() > seq);
//! store.ack(SeqRange::single(seq)).unwrap();
//! assert!(store.is_empty());
//! ```
//!
//! [`sequential-storage`]: https://docs.rs/sequential-storage

mod blocking;
mod sim;

pub use blocking::Blocking;
pub use sim::{SimFlash, SimFlashError};

use core::fmt;
use core::ops::Range;

use embedded_storage_async::nor_flash::{MultiwriteNorFlash, NorFlash};
use sequential_storage::cache::{Cache, Uncached};
use sequential_storage::map::{MapConfig, MapStorage};
use sequential_storage::queue::{QueueConfig, QueueStorage};

use blocking::run;

use super::{
    Acked, Boots, Epoch, FullPolicy, Lane, PushError, Record, RecordMeta, RecordStore, SaveError,
    Seq, SeqRange, StoreCounters, MAX_BOOTS, MAX_READINGS, RECORD_OVERHEAD,
};
use crate::model::Severity;
use crate::wire::seal::Key;

/// Bytes in front of each record's payload in flash: sequence number (4),
/// flags (1: severity, decimated), readings (2).
pub const FLASH_RECORD_HEADER: usize = 7;

/// Sequence numbers leased per write of the lease.
const LEASE: u32 = 256;

/// Keys of the state map: alerts by sequence number, then the state.
const KEY_LEASE: u32 = u32::MAX;
const KEY_CONFIG: u32 = u32::MAX - 1;
const KEY_REPLACING: u32 = u32::MAX - 2;
const KEY_BOOTS: u32 = u32::MAX - 3;
const KEY_KEY: u32 = u32::MAX - 4;
const KEY_COMMANDS: u32 = u32::MAX - 5;
/// The key item: its id, then its 32 bytes.
const KEY_ITEM: usize = 1 + 32;
/// The boots item: the latest epoch, then (epoch, first seq) per boot kept.
const BOOTS_ITEM: usize = 1 + 2 * MAX_BOOTS;
/// Sequence numbers stop below the state's keys.
const SEQ_LIMIT: u32 = u32::MAX - 255;
/// Map keys are stored little-endian in front of the value.
const KEY_BYTES: usize = 4;

const DECIMATED: u8 = 0b100;

/// Most records the alert lane holds: their delivery order is kept in RAM
/// (12 bytes each), so a poll never walks the map to find the next one.
pub const MAX_ALERT_RECORDS: usize = 32;

/// An alert record as the store keeps it in RAM.
#[derive(Clone, Copy, Debug)]
struct AlertEntry {
    seq: u32,
    /// Payload bytes.
    len: u16,
    readings: u16,
    severity: Severity,
}

impl AlertEntry {
    /// Delivery order: most severe first, then oldest.
    fn order(&self) -> (core::cmp::Reverse<u8>, u32) {
        (core::cmp::Reverse(self.severity as u8), self.seq)
    }
}

/// Where in the flash each part of the store lives. Each range is whole
/// pages (erase units) and the three do not overlap.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct FlashLayout {
    /// The alert lane, the sequence lease and the config, in a map. At
    /// least 2 pages; one is kept free for compaction.
    pub alerts: Range<u32>,
    /// The routine lane, a queue. At least 2 pages: a page is reclaimed
    /// only when every record on it is acknowledged or evicted.
    pub routine: Range<u32>,
}

impl FlashLayout {
    /// Splits `range` into `alert_pages` pages of alerts and state, and
    /// the rest for routine blocks.
    pub const fn split(range: Range<u32>, page: u32, alert_pages: u32) -> Self {
        let routine = range.start + alert_pages * page;
        FlashLayout {
            alerts: range.start..routine,
            routine: routine..range.end,
        }
    }
}

/// Why a [`FlashLayout`] does not fit a flash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum LayoutError {
    /// A range does not start and end on page boundaries.
    NotPageAligned,
    /// The alert lane or the routine lane has fewer than 2 pages.
    TooFewPages,
    /// The flash's pages are too small for the queue's bookkeeping.
    PagesTooSmall,
    /// The two ranges overlap.
    Overlap,
    /// A range goes past the end of the flash.
    BeyondFlash,
    /// The store's buffer `N` is under 64 bytes.
    BufferTooSmall,
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LayoutError::NotPageAligned => "range not on page boundaries",
            LayoutError::TooFewPages => "too few pages for a part of the store",
            LayoutError::PagesTooSmall => "flash pages too small",
            LayoutError::Overlap => "ranges overlap",
            LayoutError::BeyondFlash => "range past the end of the flash",
            LayoutError::BufferTooSmall => "buffer under 64 bytes",
        })
    }
}

/// Why a flash store operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum FlashError<E> {
    /// The flash driver failed (on a power cut, the store is re-mounted
    /// after the reboot and nothing accepted is lost).
    Flash(E),
    /// The flash holds something the store cannot repair (not a state its
    /// own writes leave, power cut or not); [`FlashStore::format`] clears it.
    Corrupted,
    /// [`FlashStore::mount`] has not succeeded yet.
    NotMounted,
    /// The storage library reported an internal inconsistency.
    Internal,
}

impl<E: fmt::Debug> fmt::Display for FlashError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlashError::Flash(e) => write!(f, "flash: {e:?}"),
            FlashError::Corrupted => f.write_str("flash holds data the store cannot repair"),
            FlashError::NotMounted => f.write_str("store not mounted"),
            FlashError::Internal => f.write_str("storage library inconsistency"),
        }
    }
}

#[cfg(feature = "std")]
impl<E: fmt::Debug> std::error::Error for FlashError<E> {}

impl<E> From<sequential_storage::Error<E>> for FlashError<E> {
    fn from(e: sequential_storage::Error<E>) -> Self {
        match e {
            sequential_storage::Error::Storage { value, .. } => FlashError::Flash(value),
            sequential_storage::Error::Corrupted { .. } => FlashError::Corrupted,
            _ => FlashError::Internal,
        }
    }
}

/// What [`FlashStore::mount`] found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Mount {
    /// Records waiting in the alert lane.
    pub alert_records: usize,
    /// Records waiting in the routine lane.
    pub routine_records: usize,
    /// The sequence number the next push gets.
    pub next_seq: Seq,
    /// A decimated block was being rewritten when the power went; the
    /// rewrite was completed.
    pub finished_decimation: bool,
    /// Items that were not records of this store (removed).
    pub foreign_items: u32,
    /// The store was corrupted and has been formatted
    /// ([`FlashStore::mount_or_format`]).
    pub formatted: bool,
}

#[derive(Clone, Copy, Debug, Default)]
struct LaneState {
    len: usize,
    used: usize,
    free: usize,
    capacity: usize,
}

/// What a scan does with the item it is shown.
enum Visit {
    Next,
    Pop,
    /// Stop, leaving the item at the start of the buffer.
    Stop,
}

/// A record's header as kept in flash.
#[derive(Clone, Copy)]
struct Header {
    seq: Seq,
    severity: Severity,
    decimated: bool,
    readings: u16,
}

impl Header {
    fn parse(data: &[u8]) -> Option<Header> {
        let h: &[u8; FLASH_RECORD_HEADER] = data.get(..FLASH_RECORD_HEADER)?.try_into().ok()?;
        let [s0, s1, s2, s3, flags, r0, r1] = *h;
        if flags & !(DECIMATED | 0b11) != 0 {
            return None;
        }
        Some(Header {
            seq: Seq(u32::from_le_bytes([s0, s1, s2, s3])),
            severity: Severity::from_bits(flags & 0b11)?,
            decimated: flags & DECIMATED != 0,
            readings: u16::from_le_bytes([r0, r1]),
        })
    }

    fn write(&self, out: &mut [u8]) -> Option<()> {
        let flags = self.severity as u8 | if self.decimated { DECIMATED } else { 0 };
        let [s0, s1, s2, s3] = self.seq.0.to_le_bytes();
        let [r0, r1] = self.readings.to_le_bytes();
        out.get_mut(..FLASH_RECORD_HEADER)?
            .copy_from_slice(&[s0, s1, s2, s3, flags, r0, r1]);
        Some(())
    }

    fn meta(&self, lane: Lane) -> RecordMeta {
        RecordMeta {
            lane,
            severity: self.severity,
            readings: self.readings,
            decimated: self.decimated,
        }
    }
}

/// The two-lane store in NOR flash; see the [module docs](crate::store::flash).
///
/// `F` is an async NOR flash: a blocking one comes wrapped in [`Blocking`]
/// by [`FlashStore::new`]. `N` is the store's buffer: the largest record is
/// `N - 7` bytes of payload, and the saved config must fit in it too.
pub struct FlashStore<F, const N: usize = 512> {
    flash: F,
    layout: FlashLayout,
    buf: [u8; N],
    alerts: LaneState,
    routine: LaneState,
    next_seq: u32,
    leased: u32,
    mounted: bool,
    policy: FullPolicy,
    counters: StoreCounters,
    boots: Boots,
    /// The epoch of the last boot started, if any: kept apart from `boots`,
    /// which may not have room for every boot.
    latest_epoch: Option<Epoch>,
    /// The lowest sequence number stored when mounted.
    oldest: u32,
    /// The alert lane in delivery order.
    order: heapless::Vec<AlertEntry, MAX_ALERT_RECORDS>,
    /// The buffer holds the first record in delivery order, of this lane
    /// and length: what every poll asks for, answered without a read.
    front: Option<(Lane, usize)>,
}

impl<F, const N: usize> FlashStore<Blocking<F>, N>
where
    F: embedded_storage::nor_flash::NorFlash + embedded_storage::nor_flash::MultiwriteNorFlash,
{
    /// A store over a blocking flash, after checking `layout` against it.
    /// Nothing is read until [`FlashStore::mount`].
    pub fn new(flash: F, layout: FlashLayout) -> Result<Self, LayoutError> {
        Self::build(Blocking(flash), layout)
    }
}

#[cfg(feature = "async")]
impl<F: NorFlash + MultiwriteNorFlash, const N: usize> FlashStore<F, N> {
    /// A store over an [`embedded_storage_async`] flash.
    ///
    /// The store's operations stay synchronous, as the engine calls them:
    /// each runs the flash's futures to completion by polling them, which
    /// suits drivers that check the controller's status when polled.
    pub fn new_async(flash: F, layout: FlashLayout) -> Result<Self, LayoutError> {
        Self::build(flash, layout)
    }
}

impl<F: NorFlash + MultiwriteNorFlash, const N: usize> FlashStore<F, N> {
    fn build(flash: F, layout: FlashLayout) -> Result<Self, LayoutError> {
        use sequential_storage::map::MapConfigError as M;
        use sequential_storage::queue::QueueConfigError as Q;
        if N < 64 {
            return Err(LayoutError::BufferTooSmall);
        }
        MapConfig::<F>::try_new(layout.alerts.clone()).map_err(|e| match e {
            M::StartRangeNotAtPageBoundary | M::EndRangeNotAtPageBoundary => {
                LayoutError::NotPageAligned
            }
            M::RangeTooSmall => LayoutError::TooFewPages,
            _ => LayoutError::PagesTooSmall,
        })?;
        QueueConfig::<F>::try_new(layout.routine.clone()).map_err(|e| match e {
            Q::StartRangeNotAtPageBoundary | Q::EndRangeNotAtPageBoundary => {
                LayoutError::NotPageAligned
            }
            Q::RangeTooSmall => LayoutError::TooFewPages,
            _ => LayoutError::PagesTooSmall,
        })?;
        let page = F::ERASE_SIZE as u32;
        if layout.routine.end - layout.routine.start < 2 * page {
            return Err(LayoutError::TooFewPages);
        }
        if layout.alerts.end.max(layout.routine.end) as usize > flash.capacity() {
            return Err(LayoutError::BeyondFlash);
        }
        if layout.alerts.start < layout.routine.end && layout.routine.start < layout.alerts.end {
            return Err(LayoutError::Overlap);
        }
        let word = F::READ_SIZE.max(F::WRITE_SIZE);
        let pages = |r: &Range<u32>| (r.end - r.start) as usize / F::ERASE_SIZE;
        let alerts = LaneState {
            // The map keeps a page free to compact into.
            capacity: pages(&layout.alerts).saturating_sub(1) * (F::ERASE_SIZE - 2 * word),
            ..LaneState::default()
        };
        let routine = LaneState {
            capacity: pages(&layout.routine) * (F::ERASE_SIZE - 2 * word),
            ..LaneState::default()
        };
        Ok(FlashStore {
            alerts,
            routine,
            flash,
            layout,
            buf: [0; N],
            next_seq: 0,
            leased: 0,
            mounted: false,
            policy: FullPolicy::default(),
            counters: StoreCounters::default(),
            boots: Boots::default(),
            latest_epoch: None,
            oldest: 0,
            order: heapless::Vec::new(),
            front: None,
        })
    }

    /// Reads the store back from flash: finishes what a power cut
    /// interrupted, counts the records and resumes the sequence numbers.
    ///
    /// On [`FlashError::Corrupted`] (flash that never held this store, or
    /// damaged by something else than a power cut) the caller decides
    /// whether to [`FlashStore::format`]; power cuts alone never cause it.
    pub fn mount(&mut self) -> Result<Mount, FlashError<F::Error>> {
        self.mounted = false;
        self.front = None;
        self.order.clear();
        let mut report = Mount::default();
        // A decimated copy pushed but its original not yet removed?
        let replacing: Option<u32> = self.fetch_u32(KEY_REPLACING)?;
        if let Some(seq) = replacing {
            let mut copy = false;
            self.scan(Lane::Routine, |h, _| {
                copy |= h.seq.0 == seq && h.decimated;
                Visit::Next
            })?;
            if copy {
                let mut removed = false;
                self.scan(Lane::Routine, |h, _| {
                    if h.seq.0 == seq && !h.decimated && !removed {
                        removed = true;
                        Visit::Pop
                    } else {
                        Visit::Next
                    }
                })?;
                report.finished_decimation = removed;
            }
            self.remove(KEY_REPLACING)?;
        }
        let mut max_seq: Option<u32> = None;
        let mut min_seq: Option<u32> = None;
        for lane in [Lane::Alert, Lane::Routine] {
            // Items that are not records of this store go first.
            loop {
                let mut foreign = 0;
                self.scan_raw(lane, |data| match Header::parse(data) {
                    Some(_) => Visit::Next,
                    None => {
                        foreign += 1;
                        Visit::Pop
                    }
                })?;
                report.foreign_items += foreign;
                if foreign < POPS_PER_PASS as u32 {
                    break;
                }
            }
            let (mut len, mut used) = (0, 0);
            if lane == Lane::Routine {
                self.scan(lane, |h, payload| {
                    len += 1;
                    used += item_bytes::<F>(payload.len());
                    max_seq = Some(max_seq.map_or(h.seq.0, |m| m.max(h.seq.0)));
                    min_seq = Some(min_seq.map_or(h.seq.0, |m| m.min(h.seq.0)));
                    Visit::Next
                })?;
            } else {
                // A cut while the map compacts can leave an alert on two
                // pages until the next compaction: each number counts once.
                let mut order: heapless::Vec<AlertEntry, MAX_ALERT_RECORDS> = heapless::Vec::new();
                let mut overflow = false;
                self.scan(lane, |h, payload| {
                    let entry = AlertEntry {
                        seq: h.seq.0,
                        len: payload.len() as u16,
                        readings: h.readings,
                        severity: h.severity,
                    };
                    if let Err(at) = order.binary_search_by(|e| e.order().cmp(&entry.order())) {
                        overflow |= order.insert(at, entry).is_err();
                    }
                    Visit::Next
                })?;
                // More alerts than the store ever holds: not its own writes.
                if overflow {
                    return Err(FlashError::Corrupted);
                }
                for e in &order {
                    len += 1;
                    used += item_bytes::<F>(usize::from(e.len));
                    max_seq = Some(max_seq.map_or(e.seq, |m| m.max(e.seq)));
                    min_seq = Some(min_seq.map_or(e.seq, |m| m.min(e.seq)));
                }
                self.order = order;
            }
            let state = self.lane_mut(lane);
            state.len = len;
            state.used = used;
            self.refresh(lane)?;
        }
        let lease: Option<u32> = self.fetch_u32(KEY_LEASE)?;
        let after_records = max_seq.map_or(0, |m| m.saturating_add(1));
        self.next_seq = lease.unwrap_or(0).max(after_records);
        self.leased = self.next_seq;
        self.oldest = min_seq.unwrap_or(self.next_seq);
        // The latest epoch, then (epoch, first seq) of each boot kept.
        let boots: Option<[u64; BOOTS_ITEM]> = {
            let (mut map, buf) = self.map();
            run(map.fetch_item(buf, &KEY_BOOTS))?
        };
        let boots = boots.unwrap_or([0; BOOTS_ITEM]);
        let (latest, table) = boots.split_at(1);
        self.latest_epoch = latest.first().copied().filter(|&e| e != 0).map(Epoch);
        self.boots = Boots::from_entries(table.chunks(2).filter_map(|p| match *p {
            [epoch, first] if epoch != 0 => Some((Epoch(epoch), Seq(first as u32))),
            _ => None,
        }));
        self.mounted = true;
        report.alert_records = self.alerts.len;
        report.routine_records = self.routine.len;
        report.next_seq = Seq(self.next_seq);
        Ok(report)
    }

    /// Mounts the store, and formats it only if it is corrupted (flash that
    /// never held this store, or damaged by something else than a power
    /// cut); a flash error is returned as it is, and formats nothing. The
    /// one place a firmware should decide to format.
    pub fn mount_or_format(&mut self) -> Result<Mount, FlashError<F::Error>> {
        match self.mount() {
            Err(FlashError::Corrupted) => {
                self.format()?;
                let mut mount = self.mount()?;
                mount.formatted = true;
                Ok(mount)
            }
            other => other,
        }
    }

    /// Starts a boot: advances the boot epoch and saves it, with the first
    /// sequence number of the boot, before any record of the boot is sent.
    /// A store that has no epoch yet (new, or formatted) starts from
    /// `entropy`, 64 bits from the board's random number generator, so a
    /// formatted store never repeats the epochs (and so the nonces) of its
    /// earlier life. Call it once per boot, after mounting.
    pub fn start_boot(&mut self, entropy: u64) -> Result<Epoch, FlashError<F::Error>> {
        if !self.mounted {
            return Err(FlashError::NotMounted);
        }
        let epoch = match self.latest_epoch {
            Some(last) => Epoch(last.0.wrapping_add(1).max(1)),
            None => Epoch(entropy.max(1)),
        };
        if let Some(range) = self.boots.crowded(Seq(self.oldest)) {
            // Every boot kept still owns records: the oldest boot's go, as
            // evictions, so the new boot's records are named by it.
            self.pop_counted(range, |c, popped| {
                c.evicted_records = c.evicted_records.saturating_add(popped.records);
                c.evicted_readings = c.evicted_readings.saturating_add(popped.readings);
            })?;
            self.oldest = range.last.0.saturating_add(1);
            self.front = None;
        }
        let mut next = self.boots.clone();
        next.start(epoch, Seq(self.next_seq), Seq(self.oldest));
        let mut flat = [0u64; BOOTS_ITEM];
        let (latest, table) = flat.split_at_mut(1);
        if let Some(slot) = latest.first_mut() {
            *slot = epoch.0;
        }
        for (slot, (e, first)) in table.chunks_mut(2).zip(next.entries()) {
            if let [a, b] = slot {
                *a = e.0;
                *b = u64::from(first.0);
            }
        }
        {
            let (mut map, buf) = self.map();
            run(map.store_item(buf, &KEY_BOOTS, &flat))?;
        }
        self.boots = next;
        self.latest_epoch = Some(epoch);
        Ok(epoch)
    }

    /// Erases every page of the store. The store must be mounted again.
    /// The sequence lease goes too, so only format flash whose records the
    /// server will never see again (a new device, or one re-registered).
    pub fn format(&mut self) -> Result<(), FlashError<F::Error>> {
        self.mounted = false;
        for range in [self.layout.alerts.clone(), self.layout.routine.clone()] {
            run(self.flash.erase(range.start, range.end)).map_err(FlashError::Flash)?;
        }
        Ok(())
    }

    /// The flash, for inspection.
    pub fn flash(&self) -> &F {
        &self.flash
    }

    /// The flash, mutably: for fault injection in tests and simulations
    /// (`SimFlash::cut_after`). Writes made through it behind the store's
    /// back are seen only after the next [`FlashStore::mount`].
    pub fn flash_mut(&mut self) -> &mut F {
        &mut self.flash
    }

    /// Gives the flash back.
    pub fn release(self) -> F {
        self.flash
    }

    /// The map of alerts and state, and the buffer to use with it.
    #[allow(clippy::type_complexity)]
    fn map(
        &mut self,
    ) -> (
        MapStorage<u32, &mut F, Cache<Uncached, Uncached, Uncached, u32>>,
        &mut [u8; N],
    ) {
        self.front = None;
        // The layout was checked when the store was built.
        let map = MapStorage::new(
            &mut self.flash,
            MapConfig::new(self.layout.alerts.clone()),
            Cache::new_uncached(),
        );
        (map, &mut self.buf)
    }

    fn queue(&mut self) -> QueueStorage<&mut F, Cache<Uncached, Uncached, Uncached>> {
        self.front = None;
        // The layout was checked when the store was built.
        QueueStorage::new(
            &mut self.flash,
            QueueConfig::new(self.layout.routine.clone()),
            Cache::new_uncached(),
        )
    }

    fn fetch_u32(&mut self, key: u32) -> Result<Option<u32>, sequential_storage::Error<F::Error>> {
        let (mut map, buf) = self.map();
        run(map.fetch_item(buf, &key))
    }

    fn store_u32(
        &mut self,
        key: u32,
        value: u32,
    ) -> Result<(), sequential_storage::Error<F::Error>> {
        let (mut map, buf) = self.map();
        run(map.store_item(buf, &key, &value))
    }

    /// Saves a state item (the config, the key), telling a value too large
    /// for the map from a failing flash.
    fn store_state<'v, V: sequential_storage::map::Value<'v>>(
        &mut self,
        key: u32,
        value: &V,
    ) -> Result<(), SaveError<FlashError<F::Error>>> {
        let (mut map, buf) = self.map();
        match run(map.store_item(buf, &key, value)) {
            Ok(()) => Ok(()),
            Err(sequential_storage::Error::BufferTooSmall(_))
            | Err(sequential_storage::Error::ItemTooBig) => Err(SaveError::TooLarge),
            Err(e) => Err(SaveError::Backend(e.into())),
        }
    }

    /// Hands the bytes of state item `key` (the config, the commands) to
    /// `decode`; `None` if there is none.
    fn load_state<T>(
        &mut self,
        key: u32,
        decode: impl FnOnce(&[u8]) -> T,
    ) -> Result<Option<T>, FlashError<F::Error>> {
        self.check_mounted()?;
        let (mut map, buf) = self.map();
        let saved: Option<&[u8]> = run(map.fetch_item(buf, &key))?;
        Ok(saved.map(decode))
    }

    fn remove(&mut self, key: u32) -> Result<(), sequential_storage::Error<F::Error>> {
        let (mut map, buf) = self.map();
        run(map.remove_item(buf, &key))
    }

    /// Shows every record of `lane`, skipping items that are not records;
    /// stops early on [`Visit::Stop`] and returns the length of the item
    /// then left at the start of the buffer. The routine lane comes oldest
    /// first; the alert lane in flash order, which compaction shuffles.
    fn scan(
        &mut self,
        lane: Lane,
        mut visit: impl FnMut(Header, &[u8]) -> Visit,
    ) -> Result<Option<usize>, FlashError<F::Error>> {
        self.scan_raw(lane, |data| match Header::parse(data) {
            Some(h) => visit(h, data.get(FLASH_RECORD_HEADER..).unwrap_or_default()),
            None => Visit::Next,
        })
    }

    /// As [`FlashStore::scan`], unparsed. In the alert lane at most
    /// [`POPS_PER_PASS`] items are popped per call (after the pass); the
    /// items past them are not shown.
    fn scan_raw(
        &mut self,
        lane: Lane,
        visit: impl FnMut(&[u8]) -> Visit,
    ) -> Result<Option<usize>, FlashError<F::Error>> {
        self.front = None;
        let Self {
            flash, layout, buf, ..
        } = self;
        if lane == Lane::Routine {
            return scan_queue(flash, layout.routine.clone(), buf, visit);
        }
        let (pops, stop) = scan_map(flash, layout.alerts.clone(), buf, visit)?;
        for key in pops {
            self.remove(key)?;
        }
        Ok(stop)
    }

    /// Recomputes what `lane` uses and can take.
    fn refresh(&mut self, lane: Lane) -> Result<(), FlashError<F::Error>> {
        let fit = match lane {
            Lane::Alert => {
                // The map has no space query; its room is its capacity less
                // the live alerts, less a margin for the state items.
                let state = &mut self.alerts;
                state
                    .capacity
                    .saturating_sub(state.used + state_reserve::<F, N>())
            }
            Lane::Routine => {
                let mut queue = self.queue();
                let left = run(queue.space_left())? as usize;
                let fit = run(queue.find_max_fit())?.unwrap_or(0) as usize;
                let state = &mut self.routine;
                state.used = state.capacity.saturating_sub(left);
                fit
            }
        };
        let state = self.lane_mut(lane);
        state.free = match fit.min(N).checked_sub(FLASH_RECORD_HEADER) {
            Some(payload) if fit > FLASH_RECORD_HEADER => payload + RECORD_OVERHEAD,
            _ => 0,
        };
        Ok(())
    }

    fn lane(&self, lane: Lane) -> &LaneState {
        match lane {
            Lane::Alert => &self.alerts,
            Lane::Routine => &self.routine,
        }
    }

    fn lane_mut(&mut self, lane: Lane) -> &mut LaneState {
        match lane {
            Lane::Alert => &mut self.alerts,
            Lane::Routine => &mut self.routine,
        }
    }

    fn check_mounted(&self) -> Result<(), FlashError<F::Error>> {
        if self.mounted {
            Ok(())
        } else {
            Err(FlashError::NotMounted)
        }
    }

    /// Writes `header` + `payload` into `lane`; `Ok(false)` if it is full.
    fn append(
        &mut self,
        lane: Lane,
        header: Header,
        payload: &[u8],
    ) -> Result<bool, PushError<FlashError<F::Error>>> {
        let len = FLASH_RECORD_HEADER + payload.len();
        if lane == Lane::Alert {
            // The map serialises key and value into the buffer itself.
            if len + KEY_BYTES > N {
                return Err(PushError::TooLarge);
            }
            // Alerts leave room for the lease and the config, and no more
            // of them than RAM keeps the order of.
            let state = &self.alerts;
            if state.used + item_bytes::<F>(payload.len()) + state_reserve::<F, N>()
                > state.capacity
                || self.order.is_full()
            {
                return Ok(false);
            }
            let entry = AlertEntry {
                seq: header.seq.0,
                len: payload.len() as u16,
                readings: header.readings,
                severity: header.severity,
            };
            let mut item = [0u8; N];
            let value = item.get_mut(..len).ok_or(PushError::TooLarge)?;
            let (head, body) = value.split_at_mut(FLASH_RECORD_HEADER);
            header.write(head).ok_or(PushError::TooLarge)?;
            body.copy_from_slice(payload);
            let value: &[u8] = value;
            let (mut map, buf) = self.map();
            return match run(map.store_item(buf, &header.seq.0, &value)) {
                Ok(()) => {
                    self.alerts.used += item_bytes::<F>(payload.len());
                    let at = self
                        .order
                        .binary_search_by(|e| e.order().cmp(&entry.order()))
                        .unwrap_or_else(|at| at);
                    // Room was checked above.
                    let _ = self.order.insert(at, entry);
                    Ok(true)
                }
                Err(sequential_storage::Error::FullStorage) => Ok(false),
                Err(sequential_storage::Error::ItemTooBig) => Err(PushError::TooLarge),
                Err(e) => Err(PushError::Backend(e.into())),
            };
        }
        self.front = None;
        let item = self.buf.get_mut(..len).ok_or(PushError::TooLarge)?;
        let (head, body) = item.split_at_mut(FLASH_RECORD_HEADER);
        header.write(head).ok_or(PushError::TooLarge)?;
        body.copy_from_slice(payload);
        let mut queue = QueueStorage::new(
            &mut self.flash,
            QueueConfig::new(self.layout.routine.clone()),
            Cache::new_uncached(),
        );
        match run(queue.push(item, false)) {
            Ok(()) => Ok(true),
            Err(sequential_storage::Error::FullStorage) => Ok(false),
            Err(sequential_storage::Error::ItemTooBig) => Err(PushError::TooLarge),
            Err(e) => Err(PushError::Backend(e.into())),
        }
    }

    /// Evicts the oldest routine record; false if there is none.
    fn evict_oldest(&mut self) -> Result<bool, FlashError<F::Error>> {
        let mut evicted = None;
        self.scan(Lane::Routine, |h, _| {
            if evicted.is_none() {
                evicted = Some(h.readings);
                Visit::Pop
            } else {
                Visit::Stop
            }
        })?;
        let Some(readings) = evicted else {
            return Ok(false);
        };
        let c = &mut self.counters.routine;
        c.evicted_records = c.evicted_records.saturating_add(1);
        c.evicted_readings = c.evicted_readings.saturating_add(u32::from(readings));
        let state = &mut self.routine;
        state.len = state.len.saturating_sub(1);
        Ok(true)
    }

    fn refuse(&mut self, lane: Lane, readings: u16) {
        let c = self.counters.lane_mut(lane);
        c.refused_records = c.refused_records.saturating_add(1);
        c.refused_readings = c.refused_readings.saturating_add(u32::from(readings));
    }

    /// Finds the `nth` record in delivery order; leaves it at the start of
    /// the buffer and returns its length.
    fn find(&mut self, nth: usize) -> Result<Option<(Lane, usize)>, FlashError<F::Error>> {
        if let Some(entry) = self.order.get(nth) {
            let seq = Seq(entry.seq);
            let found = self.scan(Lane::Alert, |h, _| {
                if h.seq == seq {
                    Visit::Stop
                } else {
                    Visit::Next
                }
            })?;
            return Ok(found.map(|len| (Lane::Alert, len)));
        }
        let mut left = nth - self.order.len();
        let found = self.scan(Lane::Routine, |_, _| {
            if left == 0 {
                Visit::Stop
            } else {
                left -= 1;
                Visit::Next
            }
        })?;
        Ok(found.map(|len| (Lane::Routine, len)))
    }

    fn record(&self, lane: Lane, len: usize) -> Option<Record<'_>> {
        record_of(lane, self.buf.get(..len)?)
    }
}

/// The record an item of `lane` holds, if it is one of this store's.
fn record_of(lane: Lane, item: &[u8]) -> Option<Record<'_>> {
    let header = Header::parse(item)?;
    Some(Record {
        seq: header.seq,
        meta: header.meta(lane),
        payload: item.get(FLASH_RECORD_HEADER..)?,
    })
}

/// Map bytes kept from alerts for the state: a config as large as the
/// buffer, the boots, a key, the lease, and a decimation marker.
fn state_reserve<F: NorFlash, const N: usize>() -> usize {
    item_bytes::<F>(N)
        + item_bytes::<F>(BOOTS_ITEM * 8)
        + item_bytes::<F>(KEY_ITEM)
        + item_bytes::<F>(super::MAX_COMMANDS_BYTES)
        + 2 * item_bytes::<F>(0)
}

/// Shows the routine queue's items oldest first, popping or stopping as
/// `visit` says; returns the length of the item a stop left at the start
/// of `buf`.
fn scan_queue<F: NorFlash + MultiwriteNorFlash>(
    flash: &mut F,
    range: Range<u32>,
    buf: &mut [u8],
    mut visit: impl FnMut(&[u8]) -> Visit,
) -> Result<Option<usize>, FlashError<F::Error>> {
    // The layout was checked when the store was built.
    let mut queue = QueueStorage::new(flash, QueueConfig::new(range), Cache::new_uncached());
    Ok(run(async move {
        let mut items = queue.iter().await?;
        while let Some(entry) = items.next(buf).await? {
            match visit(&entry) {
                Visit::Next => {}
                Visit::Pop => {
                    entry.pop().await?;
                }
                Visit::Stop => return Ok(Some(entry.len())),
            }
        }
        Ok::<_, sequential_storage::Error<F::Error>>(None)
    })?)
}

/// Shows the map's records (not its state items) in flash order; returns
/// the keys `visit` asked to pop (at most [`POPS_PER_PASS`]: the scan
/// ends there) for the caller to remove, and the length of the item a stop
/// left at the start of `buf`.
#[allow(clippy::type_complexity)]
fn scan_map<F: NorFlash>(
    flash: &mut F,
    range: Range<u32>,
    buf: &mut [u8],
    mut visit: impl FnMut(&[u8]) -> Visit,
) -> Result<(heapless::Vec<u32, POPS_PER_PASS>, Option<usize>), FlashError<F::Error>> {
    let base = buf.as_ptr() as usize;
    let mut pops: heapless::Vec<u32, POPS_PER_PASS> = heapless::Vec::new();
    let mut stop = None;
    {
        // The layout was checked when the store was built.
        let mut map: MapStorage<u32, &mut F, Cache<Uncached, Uncached, Uncached, u32>> =
            MapStorage::new(flash, MapConfig::new(range), Cache::new_uncached());
        run(async {
            let mut items = map.fetch_all_items(buf).await?;
            while let Some((key, value)) = items.next::<&[u8]>(buf).await? {
                if key >= SEQ_LIMIT {
                    continue;
                }
                if pops.is_full() {
                    break;
                }
                match visit(value) {
                    Visit::Next => {}
                    Visit::Pop => {
                        let _ = pops.push(key);
                    }
                    Visit::Stop => {
                        stop = Some((value.as_ptr() as usize - base, value.len()));
                        break;
                    }
                }
            }
            Ok::<(), sequential_storage::Error<F::Error>>(())
        })?;
    }
    Ok(match stop {
        Some((start, len)) => {
            buf.copy_within(start..start + len, 0);
            (pops, Some(len))
        }
        None => (pops, None),
    })
}

impl<F: NorFlash + MultiwriteNorFlash, const N: usize> FlashStore<F, N> {
    /// Pops every record of `lane` whose number is in `range` and updates
    /// the lane's length and free space; the caller counts what it was.
    fn pop_range(&mut self, lane: Lane, range: SeqRange) -> Result<Acked, FlashError<F::Error>> {
        let mut acked = Acked::default();
        if self.lane(lane).len == 0 {
            return Ok(acked);
        }
        if lane == Lane::Alert {
            while let Some(at) = self.order.iter().position(|e| range.contains(Seq(e.seq))) {
                let Some(&entry) = self.order.get(at) else {
                    break;
                };
                self.remove(entry.seq)?;
                self.order.remove(at);
                let state = &mut self.alerts;
                state.len = state.len.saturating_sub(1);
                state.used = state
                    .used
                    .saturating_sub(item_bytes::<F>(usize::from(entry.len)));
                acked.records += 1;
                acked.readings = acked.readings.saturating_add(u32::from(entry.readings));
            }
        } else {
            let (mut records, mut readings) = (0u32, 0u32);
            self.scan(lane, |h, _| {
                if range.contains(h.seq) {
                    records += 1;
                    readings = readings.saturating_add(u32::from(h.readings));
                    Visit::Pop
                } else {
                    Visit::Next
                }
            })?;
            let state = &mut self.routine;
            state.len = state.len.saturating_sub(records as usize);
            acked = Acked { records, readings };
        }
        if acked.records > 0 {
            self.refresh(lane)?;
        }
        Ok(acked)
    }
}

impl<F: NorFlash + MultiwriteNorFlash, const N: usize> FlashStore<F, N> {
    /// Pops every record of both lanes numbered in `range`, telling `tally`
    /// each lane's counters and what it popped; returns the total.
    fn pop_counted(
        &mut self,
        range: SeqRange,
        tally: impl Fn(&mut super::LaneCounters, Acked),
    ) -> Result<Acked, FlashError<F::Error>> {
        let mut total = Acked::default();
        for lane in [Lane::Alert, Lane::Routine] {
            let popped = self.pop_range(lane, range)?;
            tally(self.counters.lane_mut(lane), popped);
            total.records += popped.records;
            total.readings = total.readings.saturating_add(popped.readings);
        }
        Ok(total)
    }
}

/// Items the alert lane pops per pass over the map.
const POPS_PER_PASS: usize = 16;

/// Flash bytes an alert record of `payload` bytes takes in the map.
fn item_bytes<F: NorFlash>(payload: usize) -> usize {
    let word = F::READ_SIZE.max(F::WRITE_SIZE);
    let data = KEY_BYTES + FLASH_RECORD_HEADER + payload;
    MapStorage::<u32, F, Cache<Uncached, Uncached, Uncached, u32>>::item_overhead_size() as usize
        + data.div_ceil(word) * word
}

impl<F: NorFlash + MultiwriteNorFlash, const N: usize> RecordStore for FlashStore<F, N> {
    type Error = FlashError<F::Error>;

    fn push(&mut self, meta: RecordMeta, payload: &[u8]) -> Result<Seq, PushError<Self::Error>> {
        self.check_mounted().map_err(PushError::Backend)?;
        if meta.readings > MAX_READINGS {
            self.refuse(meta.lane, meta.readings);
            return Err(PushError::TooManyReadings);
        }
        if FLASH_RECORD_HEADER + payload.len() > N {
            self.refuse(meta.lane, meta.readings);
            return Err(PushError::TooLarge);
        }
        if self.next_seq >= SEQ_LIMIT {
            self.refuse(meta.lane, meta.readings);
            return Err(PushError::SequenceExhausted);
        }
        if self.next_seq >= self.leased {
            // Lease before use: after a power cut, numbering resumes past
            // every number that might have reached flash.
            let lease = self.next_seq.saturating_add(LEASE);
            self.store_u32(KEY_LEASE, lease)
                .map_err(|e| PushError::Backend(e.into()))?;
            self.leased = lease;
        }
        let header = Header {
            seq: Seq(self.next_seq),
            severity: if meta.lane == Lane::Alert {
                meta.severity
            } else {
                Severity::Info
            },
            decimated: meta.decimated,
            readings: meta.readings,
        };
        let mut evictions = false;
        loop {
            match self.append(meta.lane, header, payload) {
                Ok(true) => break,
                Ok(false) => {
                    let evicted = meta.lane == Lane::Routine
                        && self.policy == FullPolicy::EvictOldest
                        && self.evict_oldest().map_err(PushError::Backend)?;
                    if !evicted {
                        self.refuse(meta.lane, meta.readings);
                        // Only evictions changed the lane's pages.
                        if evictions {
                            self.refresh(meta.lane).map_err(PushError::Backend)?;
                        }
                        return Err(PushError::Full);
                    }
                    evictions = true;
                }
                Err(PushError::TooLarge) => {
                    self.refuse(meta.lane, meta.readings);
                    return Err(PushError::TooLarge);
                }
                Err(e) => return Err(e),
            }
        }
        self.next_seq += 1;
        let c = self.counters.lane_mut(meta.lane);
        c.pushed_records = c.pushed_records.saturating_add(1);
        c.pushed_readings = c.pushed_readings.saturating_add(u32::from(meta.readings));
        self.lane_mut(meta.lane).len += 1;
        self.refresh(meta.lane).map_err(PushError::Backend)?;
        Ok(header.seq)
    }

    fn peek(&mut self, nth: usize) -> Result<Option<Record<'_>>, Self::Error> {
        self.check_mounted()?;
        if nth >= self.len() {
            return Ok(None);
        }
        if let (0, Some((lane, len))) = (nth, self.front) {
            return Ok(self.record(lane, len));
        }
        let found = self.find(nth)?;
        if nth == 0 {
            self.front = found;
        }
        Ok(found.and_then(|(lane, len)| self.record(lane, len)))
    }

    /// The alert lane in passes over the map, each showing the records
    /// next in order as it meets them (records of one severity lie in
    /// order, so a pass per severity is the usual cost), then the routine
    /// lane in one pass.
    fn visit(&mut self, mut visit: impl FnMut(&Record<'_>) -> bool) -> Result<(), Self::Error> {
        self.check_mounted()?;
        self.front = None;
        let Self {
            flash,
            layout,
            buf,
            order,
            ..
        } = self;
        let mut next = 0;
        let mut done = false;
        while next < order.len() && !done {
            let before = next;
            let (_, _) = scan_map(flash, layout.alerts.clone(), buf, |data| {
                let (Some(record), Some(want)) = (record_of(Lane::Alert, data), order.get(next))
                else {
                    return Visit::Next;
                };
                if record.seq.0 != want.seq {
                    return Visit::Next;
                }
                next += 1;
                if visit(&record) {
                    Visit::Next
                } else {
                    done = true;
                    Visit::Stop
                }
            })?;
            if next == before {
                // An alert in RAM is missing from flash: the order is stale.
                return Err(FlashError::Internal);
            }
        }
        if done {
            return Ok(());
        }
        scan_queue(flash, layout.routine.clone(), buf, |data| {
            match record_of(Lane::Routine, data) {
                Some(record) if !visit(&record) => Visit::Stop,
                _ => Visit::Next,
            }
        })?;
        Ok(())
    }

    fn ack(&mut self, range: SeqRange) -> Result<Acked, Self::Error> {
        self.check_mounted()?;
        self.pop_counted(range, |c, popped| {
            c.acked_records = c.acked_records.saturating_add(popped.records);
            c.acked_readings = c.acked_readings.saturating_add(popped.readings);
        })
    }

    fn discard(&mut self, seq: Seq) -> Result<bool, Self::Error> {
        self.check_mounted()?;
        for lane in [Lane::Alert, Lane::Routine] {
            if self.pop_range(lane, SeqRange::single(seq))?.records > 0 {
                let c = self.counters.lane_mut(lane);
                c.superseded_records = c.superseded_records.saturating_add(1);
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn len(&self) -> usize {
        self.alerts.len + self.routine.len
    }

    fn capacity(&self, lane: Lane) -> usize {
        self.lane(lane).capacity
    }

    fn free(&self, lane: Lane) -> usize {
        self.lane(lane).free
    }

    fn used(&self, lane: Lane) -> usize {
        self.lane(lane).used
    }

    fn next_seq(&self) -> Seq {
        Seq(self.next_seq)
    }

    fn counters(&self) -> StoreCounters {
        self.counters
    }

    fn routine_policy(&self) -> FullPolicy {
        self.policy
    }

    fn set_routine_policy(&mut self, policy: FullPolicy) {
        self.policy = policy;
    }

    fn oldest_undecimated(&mut self, skip: &[Seq]) -> Result<Option<Record<'_>>, Self::Error> {
        self.check_mounted()?;
        let found = self.scan(Lane::Routine, |h, _| {
            if h.decimated || skip.contains(&h.seq) {
                Visit::Next
            } else {
                Visit::Stop
            }
        })?;
        Ok(found.and_then(|len| self.record(Lane::Routine, len)))
    }

    /// The decimated copy is appended, then the original removed; a power
    /// cut between the two is finished by [`FlashStore::mount`], so the
    /// record is there exactly once either way. The copy then travels
    /// after records younger than it.
    fn replace_decimated(
        &mut self,
        seq: Seq,
        payload: &[u8],
        readings: u16,
    ) -> Result<bool, Self::Error> {
        self.check_mounted()?;
        self.store_u32(KEY_REPLACING, seq.0)?;
        let header = Header {
            seq,
            severity: Severity::Info,
            decimated: true,
            readings,
        };
        let appended = match self.append(Lane::Routine, header, payload) {
            Ok(appended) => appended,
            Err(PushError::Backend(e)) => return Err(e),
            Err(_) => false,
        };
        let mut old = None;
        if appended {
            self.scan(Lane::Routine, |h, _| {
                if old.is_none() && h.seq == seq && !h.decimated {
                    old = Some(h.readings);
                    Visit::Pop
                } else {
                    Visit::Next
                }
            })?;
        }
        self.remove(KEY_REPLACING)?;
        self.refresh(Lane::Routine)?;
        let Some(old) = old else {
            return Ok(false);
        };
        let c = &mut self.counters.routine;
        c.decimated_readings = c
            .decimated_readings
            .saturating_add(u32::from(old.saturating_sub(readings)));
        Ok(true)
    }

    fn boots(&self) -> Boots {
        self.boots.clone()
    }

    fn save_config<W>(&mut self, encode: W) -> Result<(), SaveError<Self::Error>>
    where
        W: FnOnce(&mut [u8]) -> Option<usize>,
    {
        self.check_mounted().map_err(SaveError::Backend)?;
        let mut bytes = [0u8; N];
        let n = encode(&mut bytes).ok_or(SaveError::TooLarge)?;
        let value: &[u8] = bytes.get(..n).ok_or(SaveError::TooLarge)?;
        self.store_state(KEY_CONFIG, &value)
    }

    fn load_config<T, R>(&mut self, decode: R) -> Result<Option<T>, Self::Error>
    where
        R: FnOnce(&[u8]) -> T,
    {
        self.load_state(KEY_CONFIG, decode)
    }

    fn save_commands(&mut self, bytes: &[u8]) -> Result<(), SaveError<Self::Error>> {
        self.check_mounted().map_err(SaveError::Backend)?;
        if bytes.len() > super::MAX_COMMANDS_BYTES {
            return Err(SaveError::TooLarge);
        }
        self.store_state(KEY_COMMANDS, &bytes)
    }

    fn load_commands<T, R>(&mut self, decode: R) -> Result<Option<T>, Self::Error>
    where
        R: FnOnce(&[u8]) -> T,
    {
        self.load_state(KEY_COMMANDS, decode)
    }

    fn save_key(&mut self, id: u8, key: &Key) -> Result<(), SaveError<Self::Error>> {
        self.check_mounted().map_err(SaveError::Backend)?;
        let mut item = [0u8; KEY_ITEM];
        let (head, body) = item.split_at_mut(1);
        head.fill(id);
        body.copy_from_slice(key.as_bytes());
        self.store_state(KEY_KEY, &item)
    }

    fn load_key(&mut self) -> Result<Option<(u8, Key)>, Self::Error> {
        self.check_mounted()?;
        let (mut map, buf) = self.map();
        let saved: Option<[u8; KEY_ITEM]> = run(map.fetch_item(buf, &KEY_KEY))?;
        Ok(saved.and_then(|item| {
            let (id, key) = item.split_first()?;
            Some((*id, Key::from_bytes(<[u8; 32]>::try_from(key).ok()?)))
        }))
    }
}
