//! Bytes on air per reading, side by side: one device-day of the demo
//! boiler (two channels, alerts, heartbeats; the real engine with its
//! default config, push mode) through each link, each against a real peer:
//!
//! - **serial**: each frame and response framed by `telemark-serial`
//!   (COBS, CRC-16, delimiter), the server in process;
//! - **MQTT**: `telemark-mqtt`'s device side against the embedded broker
//!   (`telemark-mqtt-broker`), the server's end behind it;
//! - **HTTP**: `telemark-http`'s device side against an axum server;
//! - **CoAP**: `telemark-coap` over UDP against its server end;
//! - **NATS**: `telemark-nats` against a `nats-server` of its own.
//!
//! TCP links are counted by a relay between the device and its peer, so
//! every byte the application protocol puts on the stream is in (connects,
//! subscriptions, keepalives, acknowledgements, disconnects); CoAP by the
//! link's own count of its datagrams. TCP, UDP and IP headers are not.
//! "codec" is the codec's block bytes, as stored by the server. The day
//! runs in seconds of real time, so the keepalives of a connection held
//! all day (MQTT's PINGREQ and PINGRESP, NATS's PING and PONG) are added
//! by count, one exchange per interval.
//!
//!     cargo run --release -p telemark-bench-air --bin air-report
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration as RealDuration;

use embassy_futures::select::{select, Either};
use embassy_sync::blocking_mutex::raw::NoopRawMutex;
use telemark_coap::host::Udp;
use telemark_coap::CoapLink;
use telemark_core::time::Instant;
use telemark_core::transport::AsyncTransport;
use telemark_http::HttpLink;
use telemark_mqtt_broker::{Broker, Settings};
use telemark_nats::{NatsConfig, NatsLink};
use telemark_server::{MemoryStore, Server, Store};
use telemark_transport_testkit::{
    engine, free_port, keyring, run_device, run_until, unix_ms, Boiler, Engine, DEVICE, MTU,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const DAY: Instant = Instant::from_millis(24 * 3_600_000);
const DAY_S: u64 = 86_400;

/// Bytes a relay carried, each way.
#[derive(Default)]
struct Counted {
    up: AtomicU64,
    down: AtomicU64,
}

/// A TCP relay to `upstream` on a free loopback port, counting.
async fn relay(upstream: SocketAddr) -> (SocketAddr, Arc<Counted>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let counted = Arc::new(Counted::default());
    let shared = counted.clone();
    tokio::spawn(async move {
        while let Ok((device, _)) = listener.accept().await {
            let Ok(peer) = TcpStream::connect(upstream).await else {
                continue;
            };
            let _ = (device.set_nodelay(true), peer.set_nodelay(true));
            let (device_rx, device_tx) = device.into_split();
            let (peer_rx, peer_tx) = peer.into_split();
            let (c1, c2) = (shared.clone(), shared.clone());
            tokio::spawn(pipe(device_rx, peer_tx, move |n| {
                c1.up.fetch_add(n, Ordering::Relaxed);
            }));
            tokio::spawn(pipe(peer_rx, device_tx, move |n| {
                c2.down.fetch_add(n, Ordering::Relaxed);
            }));
        }
    });
    (addr, counted)
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    count: impl Fn(u64),
) {
    let mut buf = [0u8; 4096];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                count(n as u64);
                if to.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown().await;
}

/// What one link carried over the day.
struct Row {
    link: &'static str,
    readings: u64,
    codec: u64,
    up: u64,
    down: u64,
}

/// Readings sampled, and block bytes the server stored.
fn workload(engine: &Engine, store: &MemoryStore) -> (u64, u64) {
    let codec = store
        .records()
        .values()
        .map(|r| r.payload.len() as u64)
        .sum();
    (u64::from(engine.counters().sampled), codec)
}

/// The server in process, each frame and response framed for a UART.
struct Serial {
    server: Server,
    store: MemoryStore,
    response: Option<Vec<u8>>,
    up: u64,
    down: u64,
    /// The sealed frames themselves, each way, and how many exchanges.
    frames: (u64, u64, u64),
}

impl AsyncTransport for Serial {
    type Error = ();

    fn mtu(&self) -> usize {
        MTU
    }

    async fn power(&mut self, _: bool) -> Result<(), ()> {
        Ok(())
    }

    async fn send(&mut self, frame: &[u8]) -> Result<(), ()> {
        let mut framed = vec![0u8; frame.len() + telemark_serial::overhead(frame.len())];
        self.up += telemark_serial::encode(frame, &mut framed).map_err(|_| ())? as u64;
        let received = self
            .server
            .receive(&mut self.store, frame, unix_ms())
            .map_err(|_| ())?;
        let response = received.response;
        self.frames.0 += frame.len() as u64;
        self.frames.1 += response.len() as u64;
        self.frames.2 += 1;
        let mut framed = vec![0u8; response.len() + telemark_serial::overhead(response.len())];
        self.down += telemark_serial::encode(&response, &mut framed).map_err(|_| ())? as u64;
        self.response = Some(response);
        Ok(())
    }

    async fn receive(&mut self, buf: &mut [u8]) -> Result<Option<usize>, ()> {
        let Some(frame) = self.response.take() else {
            return Ok(None);
        };
        buf.get_mut(..frame.len())
            .ok_or(())?
            .copy_from_slice(&frame);
        Ok(Some(frame.len()))
    }
}

async fn serial() -> (Row, (u64, u64, u64)) {
    let mut link = Serial {
        server: Server::new(keyring()),
        store: MemoryStore::new(),
        response: None,
        up: 0,
        down: 0,
        frames: (0, 0, 0),
    };
    let mut engine = engine();
    run_until(&mut engine, &mut link, &mut Boiler::new(1), DAY).await;
    let (readings, codec) = workload(&engine, &link.store);
    let row = Row {
        link: "serial (COBS + CRC-16)",
        readings,
        codec,
        up: link.up,
        down: link.down,
    };
    (row, link.frames)
}

async fn mqtt(always: bool) -> Row {
    let broker = Broker::start(&Settings::new(SocketAddr::from((
        [127, 0, 0, 1],
        free_port(),
    ))))
    .expect("the embedded broker starts");
    let store = telemark_transport_testkit::mqtt::serve(broker.addr());
    keep_up(&store, always);
    let (addr, counted) = relay(broker.addr()).await;
    let state = telemark_mqtt::State::<NoopRawMutex, MTU>::new();
    let brokers = [addr];
    let (mut rx, mut tx) = ([0u8; 512], [0u8; 1024]);
    let (mut runner, mut link) = telemark_mqtt::new(
        &state,
        telemark_mqtt::Config::new(DEVICE, &brokers),
        &mut rx,
        &mut tx,
    )
    .unwrap();
    let mut engine = engine();
    let device = async {
        run_device(
            &mut engine,
            &mut link,
            &mut Boiler::new(1),
            DAY,
            |_| {},
            async |l| l.wait_input().await,
        )
        .await;
        link.power(false).await.unwrap();
        tokio::time::sleep(RealDuration::from_millis(200)).await;
    };
    match select(
        runner.run(&mut telemark_transport_testkit::mqtt::Tcp),
        device,
    )
    .await
    {
        Either::First(never) => match never {},
        Either::Second(()) => {}
    }
    let (readings, codec) = workload(&engine, &store.lock().unwrap());
    broker.stop();
    // The day runs in seconds, so the keepalive's PINGREQ (2 bytes) and
    // PINGRESP (2) of a held connection are added, one pair a keepalive.
    let pings = if always {
        DAY_S / u64::from(telemark_mqtt::Config::new(DEVICE, &brokers).keepalive_secs)
    } else {
        0
    };
    Row {
        link: if always {
            "MQTT 5 (QoS 1, always connected)"
        } else {
            "MQTT 5 (QoS 1, push mode)"
        },
        readings,
        codec,
        up: counted.up.load(Ordering::Relaxed) + 2 * pings,
        down: counted.down.load(Ordering::Relaxed) + 2 * pings,
    }
}

async fn http() -> Row {
    let server = telemark_transport_testkit::http::TestServer::start().await;
    let (addr, counted) = relay(server.addr).await;
    let endpoints = [addr];
    let mut buf = vec![0u8; 1024];
    let mut link = HttpLink::new(
        &telemark_transport_testkit::http::Tcp,
        telemark_http::Config::new("telemark.example", &endpoints),
        &mut buf,
    );
    let mut engine = engine();
    run_until(&mut engine, &mut link, &mut Boiler::new(1), DAY).await;
    link.power(false).await.unwrap();
    let (readings, codec) = workload(&engine, &server.store().1);
    Row {
        link: "HTTP/1.1 (keep-alive within a session)",
        readings,
        codec,
        up: counted.up.load(Ordering::Relaxed),
        down: counted.down.load(Ordering::Relaxed),
    }
}

async fn coap() -> Row {
    let end = telemark_transport_testkit::coap::serve().await;
    let mut buf = [0u8; 512];
    let udp = Udp::connect(end.addr).await.unwrap();
    let mut link = CoapLink::new(udp, telemark_coap::Config::new(), &mut buf, 1);
    let mut engine = engine();
    run_until(&mut engine, &mut link, &mut Boiler::new(1), DAY).await;
    let (readings, codec) = workload(&engine, &end.store.lock().unwrap());
    let c = link.counters();
    Row {
        link: "CoAP (NON over UDP)",
        readings,
        codec,
        up: c.bytes_out,
        down: c.bytes_in,
    }
}

/// A nats-server of the bench's own, stopped when dropped.
struct NatsServer(Child);

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn nats(always: bool) -> Row {
    let port = free_port();
    let child = Command::new("nats-server")
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nats-server is missing: install it (Debian: apt-get install nats-server)");
    let _server = NatsServer(child);
    let upstream = SocketAddr::from(([127, 0, 0, 1], port));
    while TcpStream::connect(upstream).await.is_err() {
        tokio::time::sleep(RealDuration::from_millis(20)).await;
    }
    let store =
        telemark_transport_testkit::nats::serve(&format!("nats://{upstream}"), "telemark").await;
    keep_up(&store, always);
    let (addr, counted) = relay(upstream).await;
    let mut config = NatsConfig::new(DEVICE, vec![format!("nats://{addr}")]);
    config.mtu = MTU;
    let config_ping_s = config.ping_interval.as_secs().max(1);
    let mut link = NatsLink::new(config).unwrap();
    let mut engine = engine();
    run_device(
        &mut engine,
        &mut link,
        &mut Boiler::new(1),
        DAY,
        |_| {},
        async |l| l.wait_input().await,
    )
    .await;
    link.power(false).await.unwrap();
    tokio::time::sleep(RealDuration::from_millis(200)).await;
    let (readings, codec) = workload(&engine, &store.lock().unwrap());
    // As for MQTT: a held connection's PING and PONG (6 bytes each), the
    // client's every ping interval and the server's every 2 minutes (its
    // default).
    let pings = if always {
        DAY_S / config_ping_s + DAY_S / 120
    } else {
        0
    };
    Row {
        link: if always {
            "NATS (core, always connected)"
        } else {
            "NATS (core, push mode)"
        },
        readings,
        codec,
        up: counted.up.load(Ordering::Relaxed) + 6 * pings,
        down: counted.down.load(Ordering::Relaxed) + 6 * pings,
    }
}

/// With `always`, the server's first response carries config version 2
/// with key 13 set: the device keeps its link up from then on.
fn keep_up(store: &std::sync::Mutex<MemoryStore>, always: bool) {
    if always {
        // {0: 2, 13: 1}
        let config = [0xa2, 0x00, 0x02, 0x0d, 0x01];
        store
            .lock()
            .unwrap()
            .set_config(DEVICE, 2, &config)
            .unwrap();
    }
}

fn per(bytes: u64, readings: u64) -> f64 {
    bytes as f64 / readings.max(1) as f64
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let (serial, (frames_up, frames_down, exchanges)) = serial().await;
    let rows = vec![
        serial,
        mqtt(false).await,
        mqtt(true).await,
        http().await,
        coap().await,
        nats(false).await,
        nats(true).await,
    ];
    let frames = frames_up + frames_down;
    println!(
        "One device-day of the demo boiler: {} readings in {} exchanges; {} bytes of codec blocks \
         ({:.2} a reading); sealed frames {} bytes up and {} down ({:.2} a reading)",
        rows[0].readings,
        exchanges,
        rows[0].codec,
        per(rows[0].codec, rows[0].readings),
        frames_up,
        frames_down,
        per(frames, rows[0].readings),
    );
    println!();
    println!(
        "| link | readings | bytes up | bytes down | bytes a reading | to the codec's blocks | \
         to the sealed frames |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for row in &rows {
        let total = row.up + row.down;
        println!(
            "| {} | {} | {} | {} | {:.2} | {:.2}x | {:.2}x |",
            row.link,
            row.readings,
            row.up,
            row.down,
            per(total, row.readings),
            total as f64 / row.codec.max(1) as f64,
            total as f64 / frames.max(1) as f64
        );
    }
}
