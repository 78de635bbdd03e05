//! The application the QEMU firmware examples run (`examples/qemu-*`):
//! a boiler whose flow temperature and gas meter are simulated, through
//! the real engine, over the board's link: serial framing on a UART
//! (netduinoplus2, micro:bit), or MQTT over Ethernet (mps2-an386).
//!
//! The boards differ in their link, their clock and their store; this crate
//! holds what they share, and builds and runs on a host too, where its
//! tests drive it.
//!
//! Device time runs [`SPEEDUP`] times faster than the board's clock, so a
//! demo or a test sees an hour of readings in a minute: sampling every
//! device minute is every real second.
#![cfg_attr(not(test), no_std)]

use core::fmt;

use telemark_core::channel::{ChannelSpec, Range, Unit, ValueKind};
use telemark_core::config::EngineConfig;
use telemark_core::engine::{Boot, Engine, EngineError};
use telemark_core::model::{ChannelId, ReadingSink, Severity};
use telemark_core::profile::{Full, Profile};
use telemark_core::rules::Rules;
use telemark_core::sensor::{Sensor, SensorErrorKind};
use telemark_core::stager::StagerConfig;
use telemark_core::store::RecordStore;
use telemark_core::time::{Duration, Instant};
use telemark_core::transport::Board;
use telemark_core::uplink::UplinkConfig;
use telemark_core::wire::report::ResetReason;
use telemark_core::wire::seal::{Key, Sealing};
use telemark_core::wire::Epoch;
use telemark_sensors::synthetic::{Signal, Synthetic};

/// Device seconds per real second.
pub const SPEEDUP: u64 = 60;

/// Largest frame on the UART.
pub const MTU: usize = 256;

/// Flow temperature: 0.01 °C, every minute; an alert above 75 °C.
pub const FLOW: ChannelSpec = ChannelSpec::new(
    ChannelId(1),
    Unit::Celsius,
    ValueKind::Scaled { decimals: 2 },
    Range::new(10.0, 90.0),
    Duration::from_mins(1),
    Rules::NONE.high(75.0, 3.0, Severity::Critical),
);

/// Gas meter: pulses counted, read every minute.
pub const GAS: ChannelSpec = ChannelSpec::new(
    ChannelId(2),
    Unit::Count,
    ValueKind::Counter,
    Range::new(0.0, 4.0e9),
    Duration::from_mins(1),
    Rules::NONE,
);

/// The engine the examples run: 2 channels, `STAGE` staged readings, in
/// profile `P` (the full engine unless the firmware picks the device
/// profile).
pub type Device<S, const STAGE: usize, P = Full> = Engine<S, 2, STAGE, MTU, P>;

/// Reports every 5 device minutes (5 s of real time), blocks of at most
/// `stage` readings sealed at most 5 minutes old, a heartbeat every hour.
pub fn config(device: u64, stage: usize) -> EngineConfig {
    let mut uplink = UplinkConfig::new(device, MTU as u16, Duration::from_mins(5));
    uplink.ack_timeout = Duration::from_secs(30);
    uplink.max_backoff = Duration::from_mins(5);
    EngineConfig {
        uplink,
        stager: StagerConfig::new(stage as u16, 190, Duration::from_mins(5)),
        heartbeat: Duration::from_mins(60),
    }
}

/// The id of the key the demo devices seal their frames with.
pub const KEY_ID: u8 = 1;

/// The demo keys of the three QEMU boards, as a provisioning step would give
/// them with their ids: (device, key). They are public, in this source, so
/// the demo and its tests can name them to the service (`--keys
/// examples/qemu-app/demo-keys.txt`); a real device gets a key of its own
/// that is written nowhere else.
pub const DEMO_KEYS: [(u64, [u8; 32]); 3] = [
    (405, *b"telemark demo key: netduinoplus2"),
    (51, *b"telemark demo key: microbit (M0)"),
    (386, *b"telemark demo key: mps2-an386 M4"),
];

// `PROVISIONED`, which build.rs writes from `TELEMARK_DEVICE`.
include!(concat!(env!("OUT_DIR"), "/provisioned.rs"));

/// The id a board with demo id `demo` runs as: the one it was provisioned
/// with at build time, else `demo`.
///
/// Build a board as a device the service created by giving its build what
/// `telemark-cloud device add` printed:
///
/// ```text
/// TELEMARK_DEVICE="$(telemark-cloud device add --name boiler-1)" cargo run --release
/// ```
pub const fn device_id(demo: u64) -> u64 {
    match PROVISIONED {
        Some((id, _, _)) => id,
        None => demo,
    }
}

/// The sealing of device `id`: the key it was provisioned with, else its
/// demo key, else none (which the service refuses unless told otherwise).
pub fn sealing(id: u64) -> Sealing {
    if let Some((device, key_id, key)) = PROVISIONED {
        if device == id {
            return Sealing::key(key_id, Key::from_bytes(key));
        }
    }
    match DEMO_KEYS.iter().find(|(d, _)| *d == id) {
        Some((_, key)) => Sealing::key(KEY_ID, Key::from_bytes(*key)),
        None => Sealing::Unauthenticated,
    }
}

/// A boot of device `id`: its [`sealing`], this boot's `epoch` and why it
/// started.
pub fn device_boot(id: u64, epoch: Epoch, reset: ResetReason) -> Boot {
    Boot {
        reset_reason: reset,
        epoch,
        sealing: sealing(id),
    }
}

/// Builds the engine of device `id` over `store`, for this `boot`.
pub fn device<S: RecordStore, const STAGE: usize, P: Profile>(
    id: u64,
    store: S,
    boot: Boot,
) -> Result<Device<S, STAGE, P>, EngineError> {
    Engine::new(&[FLOW, GAS], store, config(id, STAGE), boot)
}

/// The simulated plant: the flow temperature swings through the alert
/// threshold every 20 minutes; the gas meter gives one pulse per minute.
pub struct Boiler {
    flow: Synthetic<1>,
    gas: Synthetic<1>,
    /// Outputs a command set: (output, value).
    pub last_output: Option<(u8, u32)>,
}

/// The output that, set by a command, makes the firmware panic: the crash
/// drill that shows a crash report arriving after the reset.
pub const CRASH_DRILL_OUTPUT: u8 = 0xFF;

impl Boiler {
    /// A boiler with its noise seeded by `seed`.
    pub fn new(seed: u64) -> Self {
        let swing = Signal::Sine {
            mean: 62.0,
            amplitude: 18.0,
            period: Duration::from_mins(20),
        };
        Boiler {
            flow: Synthetic::new([FLOW], [swing], seed).with_noise(0.2),
            gas: Synthetic::new([GAS], [Signal::Pulses { per_sample: 1 }], seed),
            last_output: None,
        }
    }
}

impl Board for Boiler {
    fn sample(
        &mut self,
        channel: ChannelId,
        now: Instant,
        out: &mut dyn ReadingSink,
    ) -> Result<(), SensorErrorKind> {
        match channel {
            c if c == FLOW.id => self.flow.sample(now, out),
            c if c == GAS.id => self.gas.sample(now, out),
            _ => Err(SensorErrorKind::Other),
        }
    }

    fn set_output(&mut self, output: u8, value: u32) {
        self.last_output = Some((output, value));
    }
}

/// Device time from the board's clock.
pub fn device_time(uptime_ms: u64) -> Instant {
    Instant::from_millis(uptime_ms.saturating_mul(SPEEDUP))
}

/// Real milliseconds until device time `wake`, from `uptime_ms`.
pub fn real_ms_until(uptime_ms: u64, wake: Instant) -> u64 {
    let now = uptime_ms.saturating_mul(SPEEDUP);
    wake.as_millis().saturating_sub(now).div_ceil(SPEEDUP)
}

/// One status line for the semihosting console.
pub struct Status<'a, S: RecordStore, const STAGE: usize, P: Profile>(
    pub &'a Device<S, STAGE, P>,
    pub Instant,
);

impl<S: RecordStore, const STAGE: usize, P: Profile> fmt::Display for Status<'_, S, STAGE, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (engine, now) = (self.0, self.1);
        let store = engine.store().counters();
        write!(
            f,
            "[{:>6} min] sampled {}, alerts {}, stored {} records, acknowledged {} readings, config v{}",
            now.as_millis() / 60_000,
            engine.counters().sampled,
            engine.counters().alerts,
            engine.store().len(),
            store.routine.acked_readings,
            engine.config().version,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use telemark_core::store::{FullPolicy, RamStore};
    use telemark_core::transport::{step, Transport};

    /// The link while nobody listens.
    struct Silent;

    impl Transport for Silent {
        type Error = ();
        fn mtu(&self) -> usize {
            MTU
        }
        fn power(&mut self, _: bool) -> Result<(), ()> {
            Ok(())
        }
        fn send(&mut self, _: &[u8]) -> Result<(), ()> {
            Ok(())
        }
        fn receive(&mut self, _: &mut [u8]) -> Result<Option<usize>, ()> {
            Ok(None)
        }
    }

    #[test]
    fn an_hour_of_the_boiler_samples_both_channels_and_raises_alerts() {
        let store: RamStore<1024, 4096> = RamStore::new(FullPolicy::EvictOldest);
        let mut engine: Device<_, 64> =
            device(405, store, device_boot(405, Epoch(1), ResetReason::PowerOn)).unwrap();
        let mut boiler = Boiler::new(1);
        let mut now = Instant::ZERO;
        while now < Instant::from_millis(3_600_000) {
            let wake = step(&mut engine, &mut Silent, now, &mut boiler);
            now = wake.max(now + Duration::from_millis(1));
        }
        assert_eq!(engine.counters().sampled, 2 * 60);
        assert!(
            engine.counters().alerts >= 3,
            "{} alerts",
            engine.counters().alerts
        );
    }

    #[test]
    fn the_demo_keys_file_holds_the_demo_keys() {
        let text = include_str!("../demo-keys.txt");
        let lines: Vec<Vec<&str>> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(lines.len(), DEMO_KEYS.len());
        for (line, (device, key)) in lines.iter().zip(DEMO_KEYS) {
            assert_eq!(line[0], device.to_string());
            assert_eq!(line[1], KEY_ID.to_string());
            assert_eq!(Key::from_hex(line[2]), Some(Key::from_bytes(key)));
        }
    }

    #[test]
    fn device_time_runs_sixty_times_faster() {
        assert_eq!(device_time(1_000), Instant::from_millis(60_000));
        assert_eq!(real_ms_until(1_000, Instant::from_millis(120_000)), 1_000);
        assert_eq!(real_ms_until(2_000, Instant::from_millis(60_000)), 0);
    }
}
