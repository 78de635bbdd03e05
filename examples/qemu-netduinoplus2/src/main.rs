//! telemark on QEMU's netduinoplus2 (STM32F405, Cortex-M4F).
//!
//! The engine samples a simulated boiler, keeps its records in the flash
//! store, and talks to telemark-cloud over USART1. A crash is recorded in
//! no-init RAM and reported after the reset. `cargo run --release` in this
//! folder boots it; see the README.
#![no_std]
#![no_main]

#[cfg(not(feature = "ram-store"))]
mod retained;
mod usart;

use core::fmt::Write as _;
use core::panic::PanicInfo;

use cortex_m::peripheral::SCB;
use cortex_m_rt::{entry, exception, ExceptionFrame};
use cortex_m_semihosting::hio;
use telemark_core::store::RecordStore;
#[cfg(not(feature = "ram-store"))]
use telemark_core::store::{Blocking, FlashLayout, FlashStore};
use telemark_core::transport::step;
use telemark_core::wire::report::ResetReason;
use telemark_core::wire::Epoch;
use telemark_cortex_m::{crash, stack, uptime};
use telemark_qemu_app::{
    device, device_boot, device_id, device_time, real_ms_until, Boiler, Device, Status,
    CRASH_DRILL_OUTPUT,
};
use telemark_serial::SerialTransport;

#[cfg(not(feature = "ram-store"))]
use retained::RetainedFlash;
use usart::Usart1;

/// This device's id on the wire: its demo id, or the one its build was
/// provisioned with (`TELEMARK_DEVICE`, see the README).
const DEVICE: u64 = device_id(405);
/// The STM32F405's core clock in QEMU's model.
const CORE_HZ: u32 = 168_000_000;

macro_rules! log {
    ($($arg:tt)*) => {{
        if let Ok(mut out) = hio::hstdout() {
            let _ = writeln!(out, $($arg)*);
        }
    }};
}

/// 32 pages of 1 KiB of retained RAM standing in for flash.
#[cfg(not(feature = "ram-store"))]
type Store = FlashStore<Blocking<RetainedFlash>, 512>;
/// With `--features ram-store`: the RAM store, for the footprint report.
#[cfg(feature = "ram-store")]
type Store = telemark_core::store::RamStore<1024, 8192>;
/// The full engine, or with `--features device` the device profile.
#[cfg(not(feature = "device"))]
type Profile = telemark_core::profile::Full;
#[cfg(feature = "device")]
type Profile = telemark_core::profile::Device;
type Engine = Device<&'static mut Store, 64, Profile>;
type Serial = SerialTransport<Usart1, 512>;

#[entry]
fn main() -> ! {
    // cortex-m-rt makes these `&'static mut`: the store, the engine, the
    // serial port and the plant live in .bss, not on the stack.
    static mut STORE: Option<Store> = None;
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
        while uptime::now_ms() < until && !Usart1::has_input() {
            cortex_m::asm::wfi();
        }
    }
}

/// Mounts the store (formatting it if the retained RAM holds none, as
/// after a power-on), starts the engine over it, and reports a crash
/// recorded before this reset.
#[inline(never)]
fn boot(
    store: &'static mut Option<Store>,
    slot: &mut Option<Engine>,
    serial: &mut Option<Serial>,
    boiler: &mut Option<Boiler>,
) {
    *serial = Some(SerialTransport::new(Usart1::take()));
    *boiler = Some(Boiler::new(DEVICE));
    let crashed = crash::take();
    let reset = if crashed.is_some() {
        ResetReason::Crash
    } else {
        ResetReason::PowerOn
    };
    let (store, epoch) = open_store(store);
    log!(
        "telemark on netduinoplus2: device {DEVICE}, reset {reset:?}, epoch {epoch}, {} records in the store, next seq {}",
        store.len(),
        store.next_seq().0
    );
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

#[cfg(not(feature = "device"))]
#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    crash::record_panic(info);
    log!("panic: {info}; resetting");
    SCB::sys_reset()
}

/// The device profile's handler: the location is recorded and reported
/// after the reset, the message is not formatted.
#[cfg(feature = "device")]
#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    crash::record_panic_location(info);
    SCB::sys_reset()
}

/// Mounts the flash store (formatting the retained RAM only if it holds
/// no store, as after a power-on) and starts this boot's epoch in it.
#[cfg(not(feature = "ram-store"))]
fn open_store(slot: &'static mut Option<Store>) -> (&'static mut Store, Epoch) {
    // 4 pages for alerts and state, 28 for routine blocks.
    let layout = FlashLayout::split(0..retained::SIZE as u32, retained::PAGE as u32, 4);
    let store = match Store::new(RetainedFlash::take(), layout) {
        Ok(s) => slot.insert(s),
        Err(e) => panic!("store layout: {e}"),
    };
    match store.mount_or_format() {
        Ok(m) if m.formatted => log!("no store in flash: formatted"),
        Ok(_) => {}
        Err(e) => panic!("flash store: {e}"),
    }
    match store.start_boot(entropy()) {
        Ok(epoch) => (store, epoch),
        Err(e) => panic!("flash store: {e}"),
    }
}

/// The RAM store, for the footprint report: a new epoch every boot.
#[cfg(feature = "ram-store")]
fn open_store(slot: &'static mut Option<Store>) -> (&'static mut Store, Epoch) {
    let store = slot.insert(Store::new(telemark_core::store::FullPolicy::EvictOldest));
    (store, Epoch(entropy()))
}

/// 64 bits that differ from one power-on to the next. QEMU emulates no
/// STM32 RNG, so the host's clock (through semihosting) and the time the
/// core took to get here stand in; on a real STM32F405 this is the RNG
/// peripheral (see `examples/stm32f4-embassy`).
fn entropy() -> u64 {
    use cortex_m_semihosting::{nr, syscall1};
    // SAFETY: SYS_TIME takes no argument block and only returns a value;
    // QEMU runs with semihosting enabled for this firmware (the log needs it).
    let host_s = unsafe { syscall1(nr::TIME, 0) } as u64;
    // SAFETY: SYS_ELAPSED writes two words into the block r1 points to,
    // which lives on this stack frame for the call.
    let mut ticks = [0u32; 2];
    let ok = unsafe { syscall1(nr::ELAPSED, ticks.as_mut_ptr() as usize) };
    let elapsed = if ok == 0 {
        u64::from(ticks[0]) | u64::from(ticks[1]) << 32
    } else {
        0
    };
    let mixed = (host_s << 32)
        ^ elapsed.rotate_left(17)
        ^ u64::from(cortex_m::peripheral::SYST::get_current());
    mixed | 1
}
