//! The nRF51's random number generator, which QEMU emulates: 64 bits of
//! it name each boot (the epoch), so a RAM store whose numbering restarts
//! at every power-on never reuses a record's name or a nonce.

const RNG: usize = 0x4000_D000;
const TASKS_START: *mut u32 = RNG as *mut u32;
const TASKS_STOP: *mut u32 = (RNG + 0x004) as *mut u32;
const EVENTS_VALRDY: *mut u32 = (RNG + 0x100) as *mut u32;
const CONFIG: *mut u32 = (RNG + 0x504) as *mut u32;
const VALUE: *const u32 = (RNG + 0x508) as *const u32;

/// 64 random bits, a byte at a time, with the bias corrector on.
pub fn u64() -> u64 {
    let mut out = 0u64;
    // SAFETY: these are the RNG peripheral's registers (nRF51 reference
    // manual, 22.1), word-aligned and only touched here, at boot, before
    // any interrupt that could use the RNG is enabled.
    unsafe {
        CONFIG.write_volatile(1);
        EVENTS_VALRDY.write_volatile(0);
        TASKS_START.write_volatile(1);
        for _ in 0..8 {
            while EVENTS_VALRDY.read_volatile() == 0 {}
            EVENTS_VALRDY.write_volatile(0);
            out = out << 8 | u64::from(VALUE.read_volatile() & 0xff);
        }
        TASKS_STOP.write_volatile(1);
    }
    out
}
