//! How deep the stack has been: paint it at start-up, read the high-water
//! mark later. The footprint report quotes it, and a firmware can put it
//! in its logs to size RAM with a margin.
//!
//! ```no_run
//! telemark_cortex_m::stack::paint();
//! // ... run ...
//! let deepest = telemark_cortex_m::stack::high_water();
//! # let _ = deepest;
//! ```
#![allow(unsafe_code)]

use core::ptr::addr_of;

const PAINT: u32 = 0x5EA1_5EA1;

unsafe extern "C" {
    /// The end of statics, where the stack may grow to (cortex-m-rt).
    static _stack_end: u32;
    /// The top of RAM, where the stack starts (cortex-m-rt).
    static _stack_start: u32;
}

/// The stack's lowest and highest addresses. Only the symbols' addresses
/// are taken: their contents are never read through them.
fn bounds() -> (usize, usize) {
    (
        addr_of!(_stack_end) as usize,
        addr_of!(_stack_start) as usize,
    )
}

/// Fills the unused stack with a pattern. Call it first thing in `main`.
pub fn paint() {
    let (end, _) = bounds();
    let here = cortex_m::register::msp::read() as usize;
    // Leave the words near the stack pointer alone: this call's own frame.
    let mut at = (end + 3) & !3;
    while at + 64 < here {
        // SAFETY: `at` lies between the end of the statics and the current
        // stack pointer (less 64 bytes): RAM that nothing uses yet.
        unsafe { (at as *mut u32).write_volatile(PAINT) };
        at += 4;
    }
}

/// The most bytes of stack used since [`paint`].
pub fn high_water() -> usize {
    let (end, start) = bounds();
    let mut at = (end + 3) & !3;
    while at < start {
        // SAFETY: `at` lies in the stack's RAM, between the end of the
        // statics and the top of RAM; reading a word there has no effect.
        let word = unsafe { (at as *const u32).read_volatile() };
        if word != PAINT {
            break;
        }
        at += 4;
    }
    start - at
}
