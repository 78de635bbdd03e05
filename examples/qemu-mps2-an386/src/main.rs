//! telemark on QEMU's mps2-an386 (Cortex-M4), over MQTT and Ethernet.
//!
//! The engine samples a simulated boiler and keeps its records in the RAM
//! store. Its link is MQTT 5 (`telemark-mqtt`'s device side, in push mode)
//! over embassy-net TCP, on the board's LAN9118 (`telemark-lan9118`).
//! Three tasks run on the embassy executor: the network stack, the MQTT
//! session, and the engine's loop. The embassy-time clock is SysTick
//! (`telemark-cortex-m`'s `embassy-time-driver`). `cargo run --release` in
//! this folder boots it; see the README.
#![no_std]
#![no_main]

mod net;

use core::fmt::Write as _;
use core::net::SocketAddr;
use core::panic::PanicInfo;

use cortex_m::peripheral::{NVIC, SCB};
use cortex_m_rt::{exception, ExceptionFrame};
use cortex_m_semihosting::hio;
use embassy_executor::Spawner;
use embassy_futures::select::select;
use embassy_net::StackResources;
use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;
use embassy_time::{Instant as Tick, Timer};
use static_cell::StaticCell;
use telemark_core::store::{FullPolicy, RamStore};
use telemark_core::transport::step_async;
use telemark_core::wire::report::ResetReason;
use telemark_core::wire::Epoch;
use telemark_cortex_m::{crash, stack, uptime};
use telemark_lan9118::{Lan9118, Registers, MPS2_BASE};
use telemark_mqtt::embassy_net::Tcp;
use telemark_mqtt::Config;
use telemark_qemu_app::{
    device, device_boot, device_id, device_time, real_ms_until, Boiler, Device, Status,
    CRASH_DRILL_OUTPUT, MTU,
};

use net::Irq;

/// This device's id on the wire: its demo id, or the one its build was
/// provisioned with (`TELEMARK_DEVICE`, see the README).
const DEVICE: u64 = device_id(386);
/// The core clock of QEMU's MPS2 boards.
const CORE_HZ: u32 = 25_000_000;

macro_rules! log {
    ($($arg:tt)*) => {{
        if let Ok(mut out) = hio::hstdout() {
            let _ = writeln!(out, $($arg)*);
        }
    }};
}

type Store = RamStore<1024, 8192>;
type Engine = Device<&'static mut Store, 64>;
type LinkState = telemark_mqtt::State<CriticalSectionRawMutex, MTU>;
/// One inbound MQTT packet: a downlink of `MTU` with its header and topic.
const MQTT_RX: usize = MTU + 64;

#[embassy_executor::main]
async fn main(spawner: Spawner) {
    static STORE: StaticCell<Store> = StaticCell::new();
    static ENGINE: StaticCell<Engine> = StaticCell::new();
    static NET: StaticCell<StackResources<2>> = StaticCell::new();
    static STATE: StaticCell<LinkState> = StaticCell::new();
    static BROKERS: StaticCell<[SocketAddr; 1]> = StaticCell::new();
    static MQTT_BUFFERS: StaticCell<([u8; MQTT_RX], [u8; 2 * MQTT_RX])> = StaticCell::new();
    static TCP_BUFFERS: StaticCell<([u8; 1024], [u8; 1024])> = StaticCell::new();
    stack::paint();
    let Some(mut core) = cortex_m::Peripherals::take() else {
        panic!("core peripherals taken twice");
    };
    uptime::start(&mut core.SYST, CORE_HZ);
    let seed = entropy();
    let broker = broker();

    // SAFETY: the MPS2 boards map their LAN9118 at MPS2_BASE, and only
    // this driver touches it.
    let regs = unsafe { Registers::new(MPS2_BASE) };
    let chip = match Lan9118::new(regs, net::MAC) {
        Ok(chip) => chip,
        Err(e) => panic!("ethernet: {e}"),
    };
    // SAFETY: the handler (DefaultHandler, below) only wakes tasks, and
    // no critical section relies on this line being masked.
    unsafe { NVIC::unmask(Irq::Ethernet) };
    let (stack, net_runner) = embassy_net::new(
        chip,
        net::ip_config(),
        NET.init(StackResources::new()),
        seed,
    );
    spawner.spawn(run_network(net_runner).expect("one network task"));

    let brokers = BROKERS.init([broker]);
    let (rx, tx) = MQTT_BUFFERS.init(([0; MQTT_RX], [0; 2 * MQTT_RX]));
    let (mqtt, mut link) = match telemark_mqtt::new(
        STATE.init(LinkState::new()),
        Config::new(DEVICE, brokers),
        rx,
        tx,
    ) {
        Ok(halves) => halves,
        Err(e) => panic!("mqtt: {e:?}"),
    };
    let (tcp_rx, tcp_tx) = TCP_BUFFERS.init(([0; 1024], [0; 1024]));
    let tcp = Tcp::new(stack, tcp_rx, tcp_tx);
    spawner.spawn(run_mqtt(mqtt, tcp).expect("one MQTT task"));

    let mut boiler = Boiler::new(DEVICE);
    let engine = boot(
        STORE.init(Store::new(FullPolicy::EvictOldest)),
        seed,
        broker,
        &ENGINE,
    );
    let mut status_at = 0;
    loop {
        let ms = uptime::now_ms();
        let now = device_time(ms);
        let wake = step_async(engine, &mut link, now, &mut boiler).await;
        if let Some((CRASH_DRILL_OUTPUT, value)) = boiler.last_output.take() {
            panic!("crash drill {value}");
        }
        if now.as_millis() >= status_at {
            let c = link.counters();
            log!(
                "{}, {} MQTT connects, stack high-water {} B",
                Status(engine, now),
                c.connects,
                stack::high_water()
            );
            status_at = now.as_millis() + 10 * 60_000;
        }
        let until = Tick::from_millis(ms + real_ms_until(ms, wake));
        select(Timer::at(until), link.wait_input()).await;
    }
}

/// Starts the engine over the RAM store, with a new epoch, and reports a
/// crash recorded before this reset.
fn boot(
    store: &'static mut Store,
    seed: u64,
    broker: SocketAddr,
    slot: &'static StaticCell<Engine>,
) -> &'static mut Engine {
    let crashed = crash::take();
    let reset = if crashed.is_some() {
        ResetReason::Crash
    } else {
        ResetReason::PowerOn
    };
    let epoch = Epoch(seed);
    log!(
        "telemark on mps2-an386: device {DEVICE}, reset {reset:?}, epoch {epoch}, broker {broker}"
    );
    let engine = match device(DEVICE, store, device_boot(DEVICE, epoch, reset)) {
        Ok(engine) => slot.init(engine),
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
    engine
}

#[embassy_executor::task]
async fn run_network(mut runner: embassy_net::Runner<'static, Lan9118>) -> ! {
    runner.run().await
}

#[embassy_executor::task]
async fn run_mqtt(
    mut runner: telemark_mqtt::Runner<'static, CriticalSectionRawMutex, MTU>,
    mut tcp: Tcp<'static>,
) -> ! {
    runner.run(&mut tcp).await
}

#[exception]
fn SysTick() {
    uptime::tick();
}

// cortex-m-rt declares every handler of a device interrupt `unsafe`.
#[exception]
unsafe fn DefaultHandler(irqn: i16) {
    if irqn == Irq::Ethernet as i16 {
        telemark_lan9118::on_interrupt();
    }
}

#[exception]
unsafe fn HardFault(frame: &ExceptionFrame) -> ! {
    crash::record_fault(frame);
    SCB::sys_reset()
}

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    crash::record_panic(info);
    log!("panic: {info}; resetting");
    SCB::sys_reset()
}

/// The broker QEMU's `-append` names, or [`net::DEFAULT_BROKER`] (said
/// in the log) when the command line cannot be read. The buffer lives
/// only in this frame.
fn broker() -> SocketAddr {
    use cortex_m_semihosting::{nr, syscall1};
    // The kernel's full path comes first: room for a deep checkout.
    let mut buf = [0u8; 512];
    let mut block = [buf.as_mut_ptr() as usize, buf.len()];
    // SAFETY: SYS_GET_CMDLINE writes at most block[1] bytes to block[0],
    // which is `buf`, and the length it wrote to block[1]; both live
    // across the call.
    let failed = unsafe { syscall1(nr::GET_CMDLINE, block.as_mut_ptr() as usize) } != 0;
    let [_, written] = block;
    let line = match buf.get(..written).map(core::str::from_utf8) {
        Some(Ok(line)) if !failed => line,
        _ => {
            log!(
                "command line unreadable (longer than {} bytes?): broker {}",
                buf.len(),
                net::DEFAULT_BROKER
            );
            ""
        }
    };
    net::broker(line)
}

/// 64 bits that differ from one power-on to the next: the host's clock
/// (through semihosting) and the time the core took to get here. A real
/// board uses its RNG.
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
