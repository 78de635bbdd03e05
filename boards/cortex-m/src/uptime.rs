//! Milliseconds since boot, counted by SysTick.
//!
//! ```no_run
//! // At start-up, with the core clock's frequency:
//! if let Some(mut core) = cortex_m::Peripherals::take() {
//!     telemark_cortex_m::uptime::start(&mut core.SYST, 168_000_000);
//! }
//! // and in the firmware:
//! // #[cortex_m_rt::exception]
//! // fn SysTick() { telemark_cortex_m::uptime::tick(); }
//! let ms = telemark_cortex_m::uptime::now_ms();
//! # let _ = ms;
//! ```

use core::cell::Cell;

use cortex_m::peripheral::syst::SystClkSource;
use cortex_m::peripheral::SYST;
use critical_section::Mutex;

static MS: Mutex<Cell<u64>> = Mutex::new(Cell::new(0));

/// Starts SysTick interrupting every millisecond from a core clock of `hz`.
pub fn start(syst: &mut SYST, hz: u32) {
    syst.set_clock_source(SystClkSource::Core);
    syst.set_reload((hz / 1_000).saturating_sub(1));
    syst.clear_current();
    syst.enable_interrupt();
    syst.enable_counter();
}

/// Counts one millisecond; call it from the SysTick handler. It also keeps
/// the crash record's uptime current.
pub fn tick() {
    let ms = critical_section::with(|cs| {
        let cell = MS.borrow(cs);
        let ms = cell.get() + 1;
        cell.set(ms);
        ms
    });
    crate::crash::set_uptime(ms as u32);
    #[cfg(feature = "embassy-time-driver")]
    crate::time_driver::on_tick(ms);
}

/// Milliseconds since [`start`].
pub fn now_ms() -> u64 {
    critical_section::with(|cs| MS.borrow(cs).get())
}
