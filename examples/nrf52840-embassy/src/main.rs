//! telemark on the nRF52840-DK, with embassy.
//!
//! - a BME280 on TWIM0 (P0.26 SDA, P0.27 SCL): temperature, pressure,
//!   humidity;
//! - a gas meter's reed switch on P0.11 (button 1 on the DK, to try it by
//!   hand), counted on its falling edge through GPIOTE;
//! - the flash store in the last 64 KiB of flash (NVMC);
//! - the uplink to telemark-cloud on UARTE0 (P0.06 TX, P0.08 RX: the DK's
//!   USB serial port), 115200 baud;
//! - the watchdog, fed by the main loop;
//! - a panic or HardFault recorded in no-init RAM and reported after the
//!   reset, with the reset reason read from `POWER.RESETREAS`.
//!
//! Between steps the firmware sleeps until the engine's next deadline, or
//! until a byte arrives on the uplink, waking at least every
//! [`FEED_EVERY`] to feed the watchdog.
//!
//! See the README for wiring and flashing.
#![no_std]
#![no_main]

use core::panic::PanicInfo;

use cortex_m::peripheral::SCB;
use cortex_m_rt::{exception, ExceptionFrame};
use defmt::{error, info, warn};
use defmt_rtt as _;
use embassy_executor::Spawner;
use embassy_futures::select::{select, Either};
use embassy_nrf::buffered_uarte::{self, BufferedUarte};
use embassy_nrf::gpio::{Input, Pull};
use embassy_nrf::nvmc::Nvmc;
use embassy_nrf::twim::{self, Twim};
use embassy_nrf::wdt::{self, Watchdog};
use embassy_nrf::{bind_interrupts, peripherals, uarte};
use embassy_time::{Delay, Duration as Wait, Instant as Tick, Timer};
use static_cell::StaticCell;
use telemark_core::channel::ChannelSpec;
use telemark_core::config::EngineConfig;
use telemark_core::engine::{Boot, Engine};
use telemark_core::model::{ChannelId, ReadingSink};
use telemark_core::sensor::SensorErrorKind;
use telemark_core::stager::StagerConfig;
use telemark_core::store::{Blocking, FlashLayout, FlashStore, FullPolicy, RecordStore};
use telemark_core::time::{Duration, Instant};
use telemark_core::transport::{step_async, Board};
use telemark_core::uplink::UplinkConfig;
use telemark_core::wire::report::ResetReason;
use telemark_core::wire::seal::{Key, Sealing};
use telemark_cortex_m::{crash, reset};
use telemark_sensors::bme280::{self, Bme280};
use telemark_sensors::per_channel::PerChannel;
use telemark_sensors::pulse::{self, GasMeter, SharedPulses};
use telemark_serial::SerialTransport;

bind_interrupts!(struct Irqs {
    UARTE0 => buffered_uarte::InterruptHandler<peripherals::UARTE0>;
    TWISPI0 => twim::InterruptHandler<peripherals::TWISPI0>;
});

/// This device's id on the wire.
const DEVICE: u64 = 0x5284_0001;
/// This device's key, given at build time as 64 hex digits in
/// `TELEMARK_DEVICE_KEY` (telemark-cloud gets the same with `--key`). Without
/// it the build uses a demo key that anyone reading this can use: fine on
/// a bench, never in the field.
const KEY: Key = match option_env!("TELEMARK_DEVICE_KEY") {
    Some(hex) => match Key::from_hex(hex) {
        Some(key) => key,
        None => panic!("TELEMARK_DEVICE_KEY must be 64 hex digits"),
    },
    None => Key::from_bytes(*b"telemark demo key: nRF52840-DK!!"),
};
/// The watchdog resets the chip if the main loop stalls this long.
const WATCHDOG_S: u32 = 30;
/// The main loop wakes at least this often, to feed the watchdog.
const FEED_EVERY: Wait = Wait::from_secs(10);
/// Litres of gas per pulse of the meter's reed switch.
const LITRES_PER_PULSE: u32 = 10;

const CLIMATE: [ChannelSpec; 3] = bme280::channels([ChannelId(1), ChannelId(2), ChannelId(3)]);
const GAS: [ChannelSpec; 3] = pulse::channels([ChannelId(4), ChannelId(5), ChannelId(6)], 12 * 60);

static PULSES: SharedPulses = SharedPulses::new();

type Store = FlashStore<Blocking<Nvmc<'static>>, 512>;

/// The sensors, asked for one channel at a time.
struct Plant<I2C: embedded_hal::i2c::I2c> {
    climate: Option<PerChannel<Bme280<I2C, Delay>, 3>>,
    gas: PerChannel<GasMeter<&'static SharedPulses>, 3>,
}

impl<I2C: embedded_hal::i2c::I2c> Board for Plant<I2C> {
    fn sample(
        &mut self,
        channel: ChannelId,
        now: Instant,
        out: &mut dyn ReadingSink,
    ) -> Result<(), SensorErrorKind> {
        if self.gas.has(channel) {
            return self.gas.sample(channel, now, out);
        }
        match &mut self.climate {
            Some(climate) => climate.sample(channel, now, out),
            // The BME280 did not answer at boot: its channels report faults.
            None => Err(SensorErrorKind::Nack),
        }
    }

    fn reboot(&mut self) {
        SCB::sys_reset();
    }
}

/// Why the chip reset: a crash recorded before it, else the flags of
/// `POWER.RESETREAS`, which are then cleared (written back with ones) for
/// the next reset.
fn reset_reason(crashed: bool) -> ResetReason {
    use embassy_nrf::pac::power::regs::Resetreas;
    use embassy_nrf::pac::POWER;
    let flags = POWER.resetreas().read().0;
    POWER
        .resetreas()
        .write_value(Resetreas(reset::NRF52_RESETREAS_ALL));
    reset::nrf52(flags, crashed)
}

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    crash::record_panic(info);
    error!("panic: {}; resetting", defmt::Display2Format(info));
    SCB::sys_reset()
}

#[exception]
unsafe fn HardFault(frame: &ExceptionFrame) -> ! {
    crash::record_fault(frame);
    SCB::sys_reset()
}

#[embassy_executor::task]
async fn count_pulses(mut reed: Input<'static>) {
    loop {
        reed.wait_for_falling_edge().await;
        PULSES.pulse();
    }
}

#[embassy_executor::main]
async fn main(spawner: Spawner) {
    let p = embassy_nrf::init(Default::default());
    let crashed = crash::take();
    let reset_reason = reset_reason(crashed.is_some());
    let mut wdt_config = wdt::Config::default();
    wdt_config.timeout_ticks = WATCHDOG_S * 32_768;
    let mut watchdog = match Watchdog::try_new::<_, 1>(p.WDT, wdt_config) {
        Ok((_, [handle])) => handle,
        Err(_) => defmt::panic!("watchdog already running with another config"),
    };

    let reed = Input::new(p.P0_11, Pull::Up);
    spawner.spawn(count_pulses(reed).expect("one pulse task"));

    static TWIM_BUF: StaticCell<[u8; 16]> = StaticCell::new();
    let i2c = Twim::new(
        p.TWISPI0,
        Irqs,
        p.P0_26,
        p.P0_27,
        twim::Config::default(),
        TWIM_BUF.init([0; 16]),
    );
    let climate = match Bme280::new(
        i2c,
        Delay,
        bme280::ADDRESS_PRIMARY,
        [ChannelId(1), ChannelId(2), ChannelId(3)],
    ) {
        Ok(bme) => Some(PerChannel::new(bme)),
        Err(e) => {
            warn!("BME280: {}", defmt::Debug2Format(&e));
            None
        }
    };
    let gas = PerChannel::new(GasMeter::new(
        &PULSES,
        LITRES_PER_PULSE,
        [ChannelId(4), ChannelId(5), ChannelId(6)],
        12 * 60,
    ));
    let mut plant = Plant { climate, gas };

    // The store: the last 16 pages of flash; 2 for alerts and state.
    let layout = FlashLayout::split(0xF_0000..0x10_0000, 4096, 2);
    static STORE: StaticCell<Store> = StaticCell::new();
    let store = match Store::new(Nvmc::new(p.NVMC), layout) {
        Ok(s) => STORE.init(s),
        Err(e) => defmt::panic!("store layout: {}", e),
    };
    match store.mount_or_format() {
        Ok(m) if m.formatted => warn!("no telemark store in flash: formatted"),
        Ok(_) => {}
        Err(e) => defmt::panic!("flash store: {}", defmt::Debug2Format(&e)),
    }
    // A new epoch for this boot, saved before anything is sent; a new or
    // formatted store starts from the hardware RNG.
    let entropy = embassy_nrf::rng::Rng::new_blocking(p.RNG).blocking_next_u64();
    let epoch = match store.start_boot(entropy) {
        Ok(e) => e,
        Err(e) => defmt::panic!("flash store: {}", defmt::Debug2Format(&e)),
    };
    store.set_routine_policy(FullPolicy::EvictOldest);

    let mut uart_config = uarte::Config::default();
    uart_config.baudrate = uarte::Baudrate::Baud115200;
    static TX: StaticCell<[u8; 512]> = StaticCell::new();
    static RX: StaticCell<[u8; 512]> = StaticCell::new();
    let uart = BufferedUarte::new(
        p.UARTE0,
        p.TIMER0,
        p.PPI_CH0,
        p.PPI_CH1,
        p.PPI_GROUP0,
        p.P0_08,
        p.P0_06,
        Irqs,
        uart_config,
        RX.init([0; 512]),
        TX.init([0; 512]),
    );
    let mut serial: SerialTransport<_, 512> = SerialTransport::new(uart);

    let config = EngineConfig {
        uplink: UplinkConfig::new(DEVICE, 256, Duration::from_mins(15)),
        stager: StagerConfig::new(128, 190, Duration::from_mins(15)),
        heartbeat: Duration::from_mins(6 * 60),
    };
    let channels = [CLIMATE[0], CLIMATE[1], CLIMATE[2], GAS[0], GAS[1], GAS[2]];
    let boot = Boot {
        reset_reason,
        epoch,
        sealing: Sealing::key(1, KEY),
    };
    let mut engine: Engine<&mut Store, 6, 128, 256> =
        match Engine::new(&channels, store, config, boot) {
            Ok(e) => e,
            Err(e) => defmt::panic!("engine: {}", e),
        };
    info!(
        "telemark: device {=u64:x}, reset {}, {} records waiting",
        DEVICE,
        reset_reason,
        engine.store().len()
    );
    if let Some(c) = crashed {
        warn!("reporting the crash before the reset: {}", c.text());
        engine.report_crash(&c);
    }

    loop {
        let tick = Tick::now();
        let now = Instant::from_millis(tick.as_millis());
        crash::set_uptime(now.as_millis() as u32);
        let wake = step_async(&mut engine, &mut serial, now, &mut plant).await;
        watchdog.pet();
        // Sleep until the engine's next deadline or the first byte of a
        // downlink, whichever comes first.
        let deadline = Tick::from_millis(wake.as_millis()).min(tick + FEED_EVERY);
        if let Either::Second(Err(e)) = select(Timer::at(deadline), serial.wait_input()).await {
            warn!("UARTE0: {}", defmt::Debug2Format(&e));
        }
    }
}
