//! An embassy-time driver on SysTick, for Cortex-M boards whose HAL has
//! none (QEMU's MPS2 boards, or a bare-metal port).
//!
//! With the `embassy-time-driver` feature, [`uptime`](crate::uptime) is
//! embassy-time's clock: `uptime::tick()` from the SysTick handler counts
//! the millisecond and wakes the timers that are due. The firmware enables
//! embassy-time's `tick-hz-1_000` feature (the build fails otherwise) and
//! starts SysTick with [`uptime::start`](crate::uptime::start).
//!
//! SysTick interrupts every millisecond whether or not a timer is due; a
//! board that must sleep deeper uses a low-power timer's HAL driver instead.

use core::cell::{Cell, RefCell};
use core::task::Waker;

use critical_section::Mutex;
use embassy_time_queue_utils::Queue;

const _: () = assert!(
    embassy_time_driver::TICK_HZ == 1_000,
    "telemark-cortex-m's SysTick driver ticks once a millisecond: enable embassy-time's tick-hz-1_000 feature"
);

struct SysTickDriver {
    queue: Mutex<RefCell<Queue>>,
    /// The earliest deadline in the queue: a tick before it wakes nothing.
    next: Mutex<Cell<u64>>,
}

impl embassy_time_driver::Driver for SysTickDriver {
    fn now(&self) -> u64 {
        crate::uptime::now_ms()
    }

    fn schedule_wake(&self, at: u64, waker: &Waker) {
        critical_section::with(|cs| {
            let mut queue = self.queue.borrow_ref_mut(cs);
            if queue.schedule_wake(at, waker) {
                let next = self.next.borrow(cs);
                next.set(next.get().min(at));
            }
        });
    }
}

// The symbols embassy-time links against; only firmware enables this.
#[allow(unsafe_code)]
mod symbols {
    embassy_time_driver::time_driver_impl!(static DRIVER: super::SysTickDriver = super::SysTickDriver {
        queue: critical_section::Mutex::new(core::cell::RefCell::new(super::Queue::new())),
        next: critical_section::Mutex::new(core::cell::Cell::new(u64::MAX)),
    });

    pub(super) fn driver() -> &'static super::SysTickDriver {
        &DRIVER
    }
}

/// Wakes the timers due at `now`; called by `uptime::tick`.
pub(crate) fn on_tick(now: u64) {
    critical_section::with(|cs| {
        let driver = symbols::driver();
        let next = driver.next.borrow(cs);
        if now >= next.get() {
            next.set(driver.queue.borrow_ref_mut(cs).next_expiration(now));
        }
    });
}
