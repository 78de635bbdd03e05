//! A number that survives a reset, though not a power cut, in no-init RAM.
//!
//! A firmware with a RAM store keeps its next sequence number here, so that
//! after a crash, a watchdog reset or a reboot command it resumes the
//! numbering instead of reusing numbers the server has already stored (the
//! server would take the new records for duplicates). After a power-on the
//! RAM holds noise, which the check word rejects.
//!
//! ```no_run
//! use telemark_core::store::{FullPolicy, RamStore, Seq};
//! let store: RamStore<256, 1536> = match telemark_cortex_m::retained::load() {
//!     Some(next) => RamStore::resume(FullPolicy::EvictOldest, Seq(next)),
//!     None => RamStore::new(FullPolicy::EvictOldest),
//! };
//! // ... and after each step of the engine:
//! // telemark_cortex_m::retained::save(engine.store().next_seq().0);
//! # let _ = store;
//! ```
#![allow(unsafe_code)]

use core::mem::MaybeUninit;
use core::ptr::{addr_of, addr_of_mut};

const CHECK: u32 = 0x5E0_1EA5;

#[unsafe(link_section = ".uninit.telemark_retained")]
static mut WORDS: MaybeUninit<[u32; 2]> = MaybeUninit::uninit();

/// Keeps `value` across resets.
pub fn save(value: u32) {
    // SAFETY: `WORDS` is only touched here and in `load`, from the main
    // loop (never from an interrupt), so no access overlaps another.
    unsafe {
        addr_of_mut!(WORDS)
            .cast::<[u32; 2]>()
            .write_volatile([value, !value ^ CHECK])
    };
}

/// The value saved before the last reset, if one was.
pub fn load() -> Option<u32> {
    // SAFETY: as for `save`. Every bit pattern is a valid `[u32; 2]`; the
    // check word tells a saved value from the noise of a power-on.
    let [value, check] = unsafe { addr_of!(WORDS).cast::<[u32; 2]>().read_volatile() };
    (check == !value ^ CHECK).then_some(value)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_saved_value_loads_back() {
        super::save(4242);
        assert_eq!(super::load(), Some(4242));
    }
}
