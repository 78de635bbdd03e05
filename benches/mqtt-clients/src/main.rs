//! One MQTT 5 device session, the one `telemark-mqtt` runs, through
//! minimq (`--features minimq`), rust-mqtt (`--features rust-mqtt`), or
//! neither (the baseline: the same program without a client):
//!
//! 1. CONNECT with clean start off, a week's session expiry and a 60 s
//!    keepalive;
//! 2. SUBSCRIBE to the downlink topic at QoS 1, until the SUBACK;
//! 3. PUBLISH a 256-byte frame at QoS 1, until the PUBACK;
//! 4. wait for one inbound PUBLISH and take its payload;
//! 5. DISCONNECT.
//!
//! The byte stream is opaque to the optimiser (`black_box`), so each
//! client's whole path is linked; `scripts/footprint.py` builds the three
//! and subtracts the baseline, then boots each in QEMU (mps2-an386), where
//! it prints the bytes of its session's state (the future that holds the
//! client, its buffers and what it keeps across awaits) and exits.
//!
//! Buffers are sized as the firmware sizes them: one inbound packet of 320
//! bytes, 640 for what goes out. What rust-mqtt leaves to its user
//! (replaying an in-flight publish after a reconnect, resetting its bump
//! buffer between packets, which is `unsafe`) is not here, so its figure is
//! a floor.
#![no_std]
#![no_main]

use core::hint::black_box;
use core::panic::PanicInfo;

use cortex_m_rt::{entry, exception};
use embedded_io_async::{ErrorType, Read, Write};

#[cfg(any(feature = "minimq", feature = "rust-mqtt"))]
const DOWN: &str = "telemark/v1/386/down";
#[cfg(any(feature = "minimq", feature = "rust-mqtt"))]
const UP: &str = "telemark/v1/386/up";
#[cfg(any(feature = "minimq", feature = "rust-mqtt"))]
const CLIENT_ID: &str = "telemark-386";
const FRAME: [u8; 256] = [0x5a; 256];

/// A byte stream whose contents the optimiser cannot know.
struct Wire;

impl ErrorType for Wire {
    type Error = core::convert::Infallible;
}

impl Read for Wire {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        let n = black_box(buf.len()).min(buf.len());
        for b in buf.iter_mut().take(n) {
            *b = black_box(0);
        }
        Ok(n)
    }
}

impl Write for Wire {
    async fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        black_box(buf);
        Ok(buf.len())
    }

    async fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

#[cfg(feature = "minimq")]
async fn session(wire: Wire) -> Option<()> {
    use minimq::{
        Buffers, ConfigBuilder, Publication, QoS, Session, SubscriptionOptions, TopicFilter,
    };
    let (mut rx, mut tx) = ([0u8; 320], [0u8; 640]);
    let config = ConfigBuilder::new(Buffers::new(&mut rx, &mut tx))
        .client_id(CLIENT_ID)
        .ok()?
        .keepalive_interval(60)
        .session_expiry_interval(7 * 24 * 3600);
    let mut session = Session::new(config);
    let mut conn = session.connect(wire).await.ok()?;
    let filter = TopicFilter::new(DOWN)
        .options(SubscriptionOptions::default().maximum_qos(QoS::AtLeastOnce));
    let op = conn.subscribe(&[filter], &[]).await.ok()?;
    while !conn.is_complete(&op) {
        conn.poll().await.ok()?;
    }
    let op = conn
        .publish(Publication::bytes(UP, &FRAME).qos(QoS::AtLeastOnce))
        .await
        .ok()??;
    while !conn.is_complete(&op) {
        conn.poll().await.ok()?;
    }
    loop {
        if let Some(publish) = conn.poll().await.ok()? {
            black_box(publish.payload());
            break;
        }
    }
    conn.disconnect().await.ok()
}

#[cfg(feature = "rust-mqtt")]
async fn session(wire: Wire) -> Option<()> {
    use core::num::NonZero;
    use rust_mqtt::buffer::BumpBuffer;
    use rust_mqtt::client::event::Event;
    use rust_mqtt::client::options::{
        ConnectOptions, DisconnectOptions, PublicationOptions, SubscriptionOptions, TopicReference,
    };
    use rust_mqtt::client::Client;
    use rust_mqtt::config::{KeepAlive, SessionExpiryInterval};
    use rust_mqtt::types::{MqttString, TopicFilter, TopicName};
    use rust_mqtt::Bytes;

    let mut memory = [0u8; 960];
    let mut buffer = BumpBuffer::new(&mut memory);
    let mut client = Client::<'_, '_, Wire, _, 1, 1, 1, 0, 0, 0, 0>::new(&mut buffer);
    let options = ConnectOptions::new()
        .session_expiry_interval(SessionExpiryInterval::Seconds(NonZero::new(7 * 24 * 3600)?))
        .keep_alive(KeepAlive::Seconds(NonZero::new(60)?));
    let id = MqttString::try_from(CLIENT_ID).ok()?;
    client.connect(wire, &options, Some(id)).await.ok()?;
    let down = MqttString::try_from(DOWN).ok()?;
    let qos1 = SubscriptionOptions::new().at_least_once();
    client
        .subscribe(TopicFilter::new(down)?, &qos1)
        .await
        .ok()?;
    loop {
        if let Event::Suback(_) = client.poll().await.ok()? {
            break;
        }
    }
    let up = TopicName::new(MqttString::try_from(UP).ok()?)?;
    let publication = PublicationOptions::new(TopicReference::Name(up)).at_least_once();
    client
        .publish(&publication, Bytes::from(&FRAME[..]))
        .await
        .ok()?;
    loop {
        if let Event::PublishAcknowledged(_) = client.poll().await.ok()? {
            break;
        }
    }
    loop {
        if let Event::Publish(publish) = client.poll().await.ok()? {
            black_box(&publish);
            break;
        }
    }
    client
        .disconnect(&DisconnectOptions::new())
        .await
        .ok()
        .map(|_| ())
}

#[cfg(not(any(feature = "minimq", feature = "rust-mqtt")))]
async fn session(wire: Wire) -> Option<()> {
    // The baseline: the stream, the clock and the frame, no client.
    let mut wire = wire;
    let mut buf = [0u8; 320];
    wire.read(&mut buf).await.ok()?;
    wire.write(&FRAME).await.ok()?;
    black_box((buf, embassy_time::Instant::now()));
    Some(())
}

#[entry]
fn main() -> ! {
    let session = session(Wire);
    let state = core::mem::size_of_val(&session);
    cortex_m_semihosting::hprintln!("session state: {} bytes", state);
    // The stream is not a broker: the session ends at its first check.
    black_box(embassy_futures::block_on(session));
    cortex_m_semihosting::debug::exit(cortex_m_semihosting::debug::EXIT_SUCCESS);
    loop {
        cortex_m::asm::wfi();
    }
}

#[exception]
fn SysTick() {
    telemark_cortex_m::uptime::tick();
}

#[panic_handler]
fn panic(_: &PanicInfo) -> ! {
    loop {
        cortex_m::asm::wfi();
    }
}
