//! telemark on an STM32F4 board, with embassy.
//!
//! - a BME280 on I2C1 (PB6 SCL, PB7 SDA): temperature, pressure, humidity;
//! - a gas meter's reed switch on PA0, counted on its falling edge (EXTI0);
//! - the flash store in flash sectors 8-11;
//! - the uplink: to telemark-cloud on USART2 (PA2 TX, PA3 RX), 115200 baud, on
//!   an STM32F405 (feature `uart`, the default); or MQTT 5 over Ethernet
//!   on an STM32F407 with a LAN8720 PHY (feature `mqtt`, `src/mqtt.rs`);
//! - the independent watchdog, fed by the main loop;
//! - a panic or HardFault recorded in no-init RAM and reported after the
//!   reset, with the reset reason read from `RCC_CSR`.
//!
//! Between steps the firmware sleeps until the engine's next deadline, or
//! until a downlink arrives, waking at least every
//! [`FEED_EVERY`] to feed the watchdog.
//!
//! See the README for wiring and flashing.
#![no_std]
#![no_main]

#[cfg(all(feature = "uart", feature = "mqtt"))]
compile_error!("one uplink: build `uart` (the default) or `--no-default-features --features mqtt`");
#[cfg(not(any(feature = "uart", feature = "mqtt")))]
compile_error!("no uplink: enable `uart` or `mqtt`");

#[cfg(feature = "mqtt")]
mod mqtt;

use core::panic::PanicInfo;

use cortex_m::peripheral::SCB;
use cortex_m_rt::{exception, ExceptionFrame};
use defmt::{error, info, warn};
use defmt_rtt as _;
use embassy_executor::Spawner;
use embassy_futures::select::select;
#[cfg(feature = "uart")]
use embassy_futures::select::Either;
use embassy_stm32::exti::{self, ExtiInput};
use embassy_stm32::flash::{Bank1Region3, Blocking as FlashBlocking, Flash};
use embassy_stm32::gpio::Pull;
use embassy_stm32::i2c::I2c;
use embassy_stm32::mode::Async;
use embassy_stm32::rng::{self, Rng};
#[cfg(feature = "uart")]
use embassy_stm32::usart::{self, BufferedUart};
use embassy_stm32::wdg::IndependentWatchdog;
use embassy_stm32::{bind_interrupts, interrupt, peripherals};
use embassy_time::{Delay, Duration as Wait, Instant as Tick, Timer};
use embedded_storage::nor_flash::{ErrorType, MultiwriteNorFlash, NorFlash, ReadNorFlash};
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
#[cfg(feature = "uart")]
use telemark_serial::SerialTransport;

bind_interrupts!(struct Irqs {
    #[cfg(feature = "uart")]
    USART2 => usart::BufferedInterruptHandler<peripherals::USART2>;
    #[cfg(feature = "mqtt")]
    ETH => embassy_stm32::eth::InterruptHandler;
    EXTI0 => exti::InterruptHandler<interrupt::typelevel::EXTI0>;
    RNG => rng::InterruptHandler<peripherals::RNG>;
});

/// This device's id on the wire.
const DEVICE: u64 = 0x0405_0001;
/// This device's key, given at build time as 64 hex digits in
/// `TELEMARK_DEVICE_KEY` (telemark-cloud gets the same with `--key`). Without
/// it the build uses a demo key that anyone reading this can use: fine on
/// a bench, never in the field.
const KEY: Key = match option_env!("TELEMARK_DEVICE_KEY") {
    Some(hex) => match Key::from_hex(hex) {
        Some(key) => key,
        None => panic!("TELEMARK_DEVICE_KEY must be 64 hex digits"),
    },
    None => Key::from_bytes(*b"telemark demo key: stm32f4 board"),
};
/// The watchdog resets the chip if the main loop stalls this long (the
/// independent watchdog's longest period is 32.7 s).
const WATCHDOG_US: u32 = 30_000_000;
/// The main loop wakes at least this often, to feed the watchdog.
const FEED_EVERY: Wait = Wait::from_secs(10);
/// Litres of gas per pulse of the meter's reed switch.
const LITRES_PER_PULSE: u32 = 10;

const CLIMATE: [ChannelSpec; 3] = bme280::channels([ChannelId(1), ChannelId(2), ChannelId(3)]);
const GAS: [ChannelSpec; 3] = pulse::channels([ChannelId(4), ChannelId(5), ChannelId(6)], 12 * 60);

static PULSES: SharedPulses = SharedPulses::new();

/// Sectors 8-11 of bank 1 region 3 (128 KiB sectors), as NOR flash that
/// may be written twice: the STM32F4's flash has no ECC, so clearing bits
/// of a programmed word is allowed, which acknowledging a record needs.
struct Sectors(Bank1Region3<'static, FlashBlocking>);

impl ErrorType for Sectors {
    type Error = embassy_stm32::flash::Error;
}

impl ReadNorFlash for Sectors {
    const READ_SIZE: usize = <Bank1Region3<'static, FlashBlocking> as ReadNorFlash>::READ_SIZE;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        self.0.read(offset, bytes)
    }

    fn capacity(&self) -> usize {
        self.0.capacity()
    }
}

impl NorFlash for Sectors {
    const WRITE_SIZE: usize = <Bank1Region3<'static, FlashBlocking> as NorFlash>::WRITE_SIZE;
    const ERASE_SIZE: usize = <Bank1Region3<'static, FlashBlocking> as NorFlash>::ERASE_SIZE;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        self.0.erase(from, to)
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        self.0.write(offset, bytes)
    }
}

impl MultiwriteNorFlash for Sectors {}

type Store = FlashStore<Blocking<Sectors>, 512>;

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
/// `RCC_CSR`, which are then cleared for the next reset.
fn reset_reason(crashed: bool) -> ResetReason {
    use embassy_stm32::pac::RCC;
    let flags = RCC.csr().read().0;
    RCC.csr().modify(|w| w.set_rmvf(true));
    reset::stm32f4(flags, crashed)
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
async fn count_pulses(mut reed: ExtiInput<'static, Async>) {
    loop {
        reed.wait_for_falling_edge().await;
        PULSES.pulse();
    }
}

#[embassy_executor::main]
async fn main(spawner: Spawner) {
    // 84 MHz from the internal oscillator through the PLL, whose 48 MHz
    // output clocks the random number generator.
    let mut rcc = embassy_stm32::Config::default();
    {
        use embassy_stm32::rcc::*;
        rcc.rcc.pll_src = PllSource::HSI;
        rcc.rcc.pll = Some(Pll {
            prediv: PllPreDiv::DIV16,
            mul: PllMul::MUL336,
            divp: Some(PllPDiv::DIV4),
            divq: Some(PllQDiv::DIV7),
            divr: None,
        });
        rcc.rcc.sys = Sysclk::PLL1_P;
        rcc.rcc.apb1_pre = APBPrescaler::DIV2;
    }
    let p = embassy_stm32::init(rcc);
    let crashed = crash::take();
    let reset_reason = reset_reason(crashed.is_some());
    let mut watchdog = IndependentWatchdog::new(p.IWDG, WATCHDOG_US);
    watchdog.unleash();

    let reed = ExtiInput::new(p.PA0, p.EXTI0, Pull::Up, Irqs);
    spawner.spawn(count_pulses(reed).expect("one pulse task"));

    let i2c = I2c::new_blocking(p.I2C1, p.PB6, p.PB7, Default::default());
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

    // The store: sectors 8-11, i.e. 384 KiB to 896 KiB into region 3.
    let region = Flash::new_blocking(p.FLASH)
        .into_blocking_regions()
        .bank1_region3;
    const SECTOR: u32 = 128 * 1024;
    let layout = FlashLayout::split(3 * SECTOR..7 * SECTOR, SECTOR, 2);
    static STORE: StaticCell<Store> = StaticCell::new();
    let store = match Store::new(Sectors(region), layout) {
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
    let mut rng = Rng::new(p.RNG, Irqs);
    let epoch = match store.start_boot(rng.next_u64()) {
        Ok(e) => e,
        Err(e) => defmt::panic!("flash store: {}", defmt::Debug2Format(&e)),
    };
    store.set_routine_policy(FullPolicy::EvictOldest);

    #[cfg(feature = "uart")]
    let mut link = {
        let mut uart_config = usart::Config::default();
        uart_config.baudrate = 115_200;
        static TX: StaticCell<[u8; 512]> = StaticCell::new();
        static RX: StaticCell<[u8; 512]> = StaticCell::new();
        let uart = match BufferedUart::new(
            p.USART2,
            p.PA3,
            p.PA2,
            TX.init([0; 512]),
            RX.init([0; 512]),
            Irqs,
            uart_config,
        ) {
            Ok(u) => u,
            Err(e) => defmt::panic!("USART2: {}", e),
        };
        SerialTransport::<_, 512>::new(uart)
    };
    #[cfg(feature = "mqtt")]
    let mut link = {
        use embassy_stm32::eth::{Ethernet, PacketQueue};
        static PACKETS: StaticCell<PacketQueue<4, 4>> = StaticCell::new();
        // A locally administered address made from the device id.
        let [.., a, b, c, d] = DEVICE.to_be_bytes();
        let mac = [0x02, 0x74, a, b, c, d];
        let eth = Ethernet::new(
            PACKETS.init(PacketQueue::new()),
            p.ETH,
            Irqs,
            p.PA1,
            p.PA7,
            p.PC4,
            p.PC5,
            p.PB12,
            p.PB13,
            p.PB11,
            mac,
            p.ETH_SMA,
            p.PA2,
            p.PC1,
        );
        mqtt::start(&spawner, eth, rng.next_u64(), DEVICE)
    };

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
        let wake = step_async(&mut engine, &mut link, now, &mut plant).await;
        watchdog.pet();
        // Sleep until the engine's next deadline or the first byte of a
        // downlink, whichever comes first.
        let deadline = Tick::from_millis(wake.as_millis()).min(tick + FEED_EVERY);
        #[cfg(feature = "uart")]
        if let Either::Second(Err(e)) = select(Timer::at(deadline), link.wait_input()).await {
            warn!("USART2: {}", defmt::Debug2Format(&e));
        }
        #[cfg(feature = "mqtt")]
        select(Timer::at(deadline), link.wait_input()).await;
    }
}
