//! telemark on QEMU's microbit (nRF51822, Cortex-M0, 16 KiB of RAM).
//!
//! The engine samples a simulated boiler, keeps its records in a RAM store,
//! and talks to telemark-cloud over the UART. A crash is recorded in no-init
//! RAM and reported after the reset. `cargo run --release` in this folder
//! boots it; see the README.
#![no_std]
#![no_main]

mod rng;
mod uart;

use core::fmt::Write as _;
use core::panic::PanicInfo;

use cortex_m::peripheral::SCB;
use cortex_m_rt::{entry, exception, ExceptionFrame};
use cortex_m_semihosting::hio;
use telemark_core::store::{FullPolicy, RamStore};
use telemark_core::transport::step;
use telemark_core::wire::report::ResetReason;
use telemark_core::wire::Epoch;
use telemark_cortex_m::{crash, stack, uptime};
use telemark_qemu_app::{
    device, device_boot, device_id, device_time, real_ms_until, Boiler, Device, Status,
    CRASH_DRILL_OUTPUT,
};
use telemark_serial::SerialTransport;

use uart::Uart;

/// This device's id on the wire: its demo id, or the one its build was
/// provisioned with (`TELEMARK_DEVICE`, see the README).
const DEVICE: u64 = device_id(51);
/// The nRF51's core clock.
const CORE_HZ: u32 = 16_000_000;

macro_rules! log {
    ($($arg:tt)*) => {{
        if let Ok(mut out) = hio::hstdout() {
            let _ = writeln!(out, $($arg)*);
        }
    }};
}

/// 256 bytes for alerts, 1.5 KiB for blocks: hours of readings at this
/// boiler's rate while the link is down.
type Store = RamStore<256, 1536>;
/// Blocks of at most 16 readings keep the stager small in 16 KiB of RAM.
/// The device profile, or with `--features full` the full engine.
#[cfg(not(feature = "full"))]
type Profile = telemark_core::profile::Device;
#[cfg(feature = "full")]
type Profile = telemark_core::profile::Full;
type Engine = Device<&'static mut Store, 16, Profile>;
type Serial = SerialTransport<Uart, 320>;

#[entry]
fn main() -> ! {
    // cortex-m-rt makes these `&'static mut`: the engine, the serial port
    // and the plant live in .bss, and the stack keeps to the call chain.
    static mut STORE: Store = Store::new(FullPolicy::EvictOldest);
    static mut ENGINE: Option<Engine> = None;
    static mut SERIAL: Option<Serial> = None;
    static mut BOILER: Option<Boiler> = None;
    stack::paint();
    let Some(mut core) = cortex_m::Peripherals::take() else {
        panic!("core peripherals taken twice");
    };
    uptime::start(&mut core.SYST, CORE_HZ);
    boot(STORE, ENGINE, SERIAL, BOILER);
    let (Some(engine), Some(serial), Some(boiler)) =
        (ENGINE.as_mut(), SERIAL.as_mut(), BOILER.as_mut())
    else {
        panic!("engine did not start");
    };
    let mut status_at = 0;
    loop {
        let ms = uptime::now_ms();
        let now = device_time(ms);
        let wake = step(engine, serial, now, boiler);
        if let Some((CRASH_DRILL_OUTPUT, value)) = boiler.last_output.take() {
            panic!("crash drill {value}");
        }
        if now.as_millis() >= status_at {
            log!(
                "{}, stack high-water {} B",
                Status(engine, now),
                stack::high_water()
            );
            status_at = now.as_millis() + 10 * 60_000;
        }
        let until = ms + real_ms_until(ms, wake);
        while uptime::now_ms() < until && !Uart::has_input() {
            cortex_m::asm::wfi();
        }
    }
}

/// Starts the engine, the serial port and the plant in their slots,
/// reporting a crash recorded before this reset. Out of line, so they are
/// built in a frame that is gone before the main loop runs.
#[inline(never)]
fn boot(
    store: &'static mut Store,
    slot: &mut Option<Engine>,
    serial: &mut Option<Serial>,
    boiler: &mut Option<Boiler>,
) {
    *serial = Some(SerialTransport::new(Uart::take()));
    *boiler = Some(Boiler::new(DEVICE));
    let crashed = crash::take();
    let reset = if crashed.is_some() {
        ResetReason::Crash
    } else {
        ResetReason::PowerOn
    };
    // The RAM store's records and numbering are lost with a reset; the
    // new epoch names this boot's records apart from the last one's.
    let epoch = Epoch(rng::u64() | 1);
    log!("telemark on microbit: device {DEVICE}, reset {reset:?}, epoch {epoch}");
    let engine = match device(DEVICE, store, device_boot(DEVICE, epoch, reset)) {
        Ok(engine) => slot.insert(engine),
        Err(e) => panic!("engine: {e}"),
    };
    if let Some(c) = crashed {
        log!(
            "reporting the crash before the reset: {:?} {}",
            c.kind,
            c.text()
        );
        engine.report_crash(&c);
    }
}

#[exception]
fn SysTick() {
    uptime::tick();
}

#[exception]
unsafe fn HardFault(frame: &ExceptionFrame) -> ! {
    crash::record_fault(frame);
    SCB::sys_reset()
}

#[cfg(feature = "full")]
#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    crash::record_panic(info);
    log!("panic: {info}; resetting");
    SCB::sys_reset()
}

/// The device profile's handler: the location is recorded and reported
/// after the reset, the message is not formatted.
#[cfg(not(feature = "full"))]
#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    crash::record_panic_location(info);
    SCB::sys_reset()
}
