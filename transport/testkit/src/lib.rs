//! What the transports' tests share: the demo device (the boiler of
//! `telemark-qemu-app` on the real engine and a RAM store), the loop that
//! runs it over any [`AsyncTransport`] in device time, and the server's
//! view of what it stored; and, one feature per link, the server's end on
//! `telemark-server` over a memory store (`mqtt`, `nats`, `http`, `coap`), a test fleet's PKI (`tls`),
//! and a `telemark-cloud` process on free ports (`cloud`).
//! Each transport's test brings the real peer (broker, server).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[cfg(feature = "cloud")]
pub mod cloud;
#[cfg(feature = "coap")]
pub mod coap;
#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "mqtt")]
pub mod mqtt;
#[cfg(feature = "nats")]
pub mod nats;
#[cfg(feature = "tls")]
pub mod pki;

use std::time::Duration as RealDuration;

use embassy_futures::select::select;
use telemark_core::store::{FullPolicy, Lane, RamStore, RecordStore};
use telemark_core::time::{Duration, Instant};
use telemark_core::transport::{step_async, AsyncTransport};
use telemark_core::wire::report::ResetReason;
use telemark_core::wire::seal::Key;
use telemark_core::wire::Epoch;
use telemark_qemu_app::{device, device_boot, Device, DEMO_KEYS};
use telemark_server::{Keyring, MemoryStore};

pub use telemark_qemu_app::{Boiler, MTU};

/// The device the tests run: the first demo key's.
pub const DEVICE: u64 = DEMO_KEYS[0].0;

/// The demo device's engine, on a RAM store.
pub type Engine = Device<RamStore<256, 4096>, 32>;

/// A fresh engine for [`DEVICE`], as after a power-on.
pub fn engine() -> Engine {
    let boot = device_boot(DEVICE, Epoch(0x5eed_0001), ResetReason::PowerOn);
    match device(DEVICE, RamStore::new(FullPolicy::EvictOldest), boot) {
        Ok(engine) => engine,
        Err(e) => panic!("the demo device's config is valid: {e:?}"),
    }
}

/// The server's keys: every demo device's, key id 1.
pub fn keyring() -> Keyring {
    let mut keyring = Keyring::new();
    for (id, key) in DEMO_KEYS {
        keyring.insert(id, 1, Key::from_bytes(key));
    }
    keyring
}

/// The wall clock, in Unix milliseconds.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A TCP port free on the loopback right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// Routine readings the server holds for `device`.
pub fn stored_readings(store: &MemoryStore, device: u64) -> u64 {
    store
        .records()
        .iter()
        .filter(|(k, r)| k.device == device && r.lane == Lane::Routine)
        .map(|(_, r)| u64::from(r.declared))
        .sum()
}

/// Runs the engine over `link` until device time `until`, then drains:
/// device time jumps to each wake-up, except while a frame waits for its
/// answer, when real time passes for the peer and the server (a second
/// of device time per 10 ms, or sooner when `input` sees a downlink).
/// `during` is called with the device time at each wake-up. Returns the
/// device time at the end.
pub async fn run_device<L: AsyncTransport>(
    engine: &mut Engine,
    link: &mut L,
    boiler: &mut Boiler,
    until: Instant,
    mut during: impl FnMut(Instant),
    mut input: impl AsyncFnMut(&mut L),
) -> Instant {
    let mut now = Instant::ZERO;
    let mut drained = 0;
    loop {
        let wake = step_async(engine, link, now, boiler).await;
        during(now);
        if now >= until {
            if engine.store().is_empty() && engine.staged() == 0 {
                return now;
            }
            engine.flush_now(now);
            drained += 1;
            assert!(
                drained < 2_000,
                "the store never drained: {} records left, {:?}, {:?}",
                engine.store().len(),
                engine.counters(),
                engine.uplink().counters()
            );
        }
        if engine.uplink().radio_on() {
            let _ = select(
                input(link),
                tokio::time::sleep(RealDuration::from_millis(10)),
            )
            .await;
            now = now + Duration::from_secs(1);
        } else {
            // The device sleeps: the link's tasks get their turn. Once
            // draining, time creeps, so the flushed record goes before the
            // next reading is taken.
            tokio::time::sleep(RealDuration::from_millis(1)).await;
            now = if drained > 0 {
                now + Duration::from_millis(1)
            } else {
                wake.max(now + Duration::from_millis(1))
            };
        }
    }
}

/// [`run_device`] over a link that answers within `send` (HTTP, CoAP):
/// nothing to wait for between steps.
pub async fn run_until<L: AsyncTransport>(
    engine: &mut Engine,
    link: &mut L,
    boiler: &mut Boiler,
    until: Instant,
) -> Instant {
    run_device(engine, link, boiler, until, |_| {}, async |_| {}).await
}

/// Asserts that the server holds every reading the engine sampled, once,
/// with no conflicting copies; returns how many.
pub fn assert_stored_once(store: &MemoryStore, engine: &Engine) -> u64 {
    let sampled = u64::from(engine.counters().sampled);
    assert_eq!(
        stored_readings(store, DEVICE),
        sampled,
        "every reading stored once"
    );
    assert!(store.conflicts().is_empty(), "{:?}", store.conflicts());
    sampled
}

/// `count` over the device time `elapsed`, per device-day.
pub fn per_device_day(count: u32, elapsed: Instant) -> f64 {
    f64::from(count) / (elapsed.as_millis() as f64 / 86_400_000.0)
}

/// Steps the engine over `link` from device time zero until `answered`
/// counts an answer; returns how much device time passed between the
/// first answer `busy` counted (a 429, a 5.03) and that one. For the
/// links that take a server's wait.
pub async fn held_off<L: AsyncTransport>(
    engine: &mut Engine,
    link: &mut L,
    boiler: &mut Boiler,
    busy: impl Fn(&L) -> u32,
    answered: impl Fn(&L) -> u32,
) -> Duration {
    let mut now = Instant::ZERO;
    let mut busy_at = None;
    loop {
        let wake = step_async(engine, link, now, boiler).await;
        if busy(link) >= 1 && busy_at.is_none() {
            busy_at = Some(now);
        }
        if answered(link) >= 1 {
            let Some(busy_at) = busy_at else {
                panic!("answered without being told to wait first");
            };
            return now - busy_at;
        }
        assert!(
            now < Instant::from_millis(3 * 3_600_000),
            "no answer in three hours"
        );
        now = if engine.uplink().radio_on() {
            now + Duration::from_secs(1)
        } else {
            wake.max(now + Duration::from_millis(1))
        };
    }
}

/// The next frame `engine` sends at `now`, with one more reading in it
/// (channel 1 at 60.00); for tests that carry frames by hand.
pub fn next_frame<S: RecordStore, const CH: usize>(
    engine: &mut Device<S, CH>,
    now: Instant,
) -> Vec<u8> {
    use telemark_core::engine::Action;
    use telemark_core::model::{ChannelId, Reading, Value};
    engine.on_reading(now, Reading::new(ChannelId(1), now, Value::Scaled(6000)));
    engine.flush_now(now);
    for _ in 0..10 {
        match engine.poll(now) {
            Action::Send(frame) => return frame.to_vec(),
            Action::Sample(ch) => {
                engine.on_reading(now, Reading::new(ch, now, Value::Scaled(6000)))
            }
            _ => {}
        }
    }
    panic!("the engine sent no frame");
}

/// The first frame a fresh engine sends (its boot report and first
/// readings), captured; with the engine, which waits for its answer.
pub async fn captured_frame() -> (Engine, Vec<u8>) {
    struct Capture(Option<Vec<u8>>);
    impl AsyncTransport for Capture {
        type Error = ();
        fn mtu(&self) -> usize {
            MTU
        }
        async fn power(&mut self, _: bool) -> Result<(), ()> {
            Ok(())
        }
        async fn send(&mut self, frame: &[u8]) -> Result<(), ()> {
            self.0.get_or_insert_with(|| frame.to_vec());
            Ok(())
        }
        async fn receive(&mut self, _: &mut [u8]) -> Result<Option<usize>, ()> {
            Ok(None)
        }
    }
    let mut engine = engine();
    let mut capture = Capture(None);
    let mut boiler = Boiler::new(6);
    let mut now = Instant::ZERO;
    loop {
        if let Some(frame) = capture.0.take() {
            return (engine, frame);
        }
        now = step_async(&mut engine, &mut capture, now, &mut boiler).await;
    }
}
