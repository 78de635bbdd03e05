//! The link against a real `nats-server`: the machine's own at
//! 127.0.0.1:4222 for the round trip (under a subject prefix of the test's
//! own), and servers the tests start on free ports where they need their
//! own settings (credentials, a small `max_payload`, a restart). The
//! server's end is `telemark-server` behind an async-nats client.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration as RealDuration;

use async_nats::ConnectOptions;
use telemark_core::time::Instant;
use telemark_core::transport::AsyncTransport;
use telemark_nats::{LinkError, LinkState, NatsConfig, NatsLink};
use telemark_server::Store;
use telemark_transport_testkit::nats::serve;
use telemark_transport_testkit::{
    assert_stored_once, engine, free_port, per_device_day, run_device, Boiler, DEVICE, MTU,
};

/// A nats-server of the test's own on a free port, stopped when dropped.
struct NatsServer {
    port: u16,
    args: Vec<String>,
    dir: PathBuf,
    child: Option<Child>,
}

impl NatsServer {
    /// A server with these lines of configuration.
    fn start(name: &str, config: &str) -> NatsServer {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("telemark-nats-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("nats.conf");
        std::fs::write(&file, format!("listen: 127.0.0.1:{port}\n{config}\n")).unwrap();
        let args = vec!["-c".to_string(), file.display().to_string()];
        let mut server = NatsServer {
            port,
            args,
            dir,
            child: None,
        };
        server.resume();
        server
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn resume(&mut self) {
        let log = std::fs::File::create(self.dir.join("server.log")).unwrap();
        let child = Command::new("nats-server")
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("nats-server is missing: install it (Debian: apt-get install nats-server)");
        self.child = Some(child);
        let start = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                start.elapsed() < RealDuration::from_secs(10),
                "nats-server did not start: {}",
                std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
            );
            std::thread::sleep(RealDuration::from_millis(20));
        }
    }

    fn running(&self) -> bool {
        self.child.is_some()
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A prefix no other run on this server uses.
fn own_prefix(case: &str) -> String {
    format!("telemark-test-{}-{case}", std::process::id())
}

/// Publishes `payload` on `subject` from a client of the server's side.
async fn push(url: &str, subject: &str, payload: &[u8]) {
    let client = async_nats::connect(url).await.unwrap();
    client
        .publish(subject.to_string(), payload.to_vec().into())
        .await
        .unwrap();
    client.flush().await.unwrap();
}

async fn next_downlink(link: &mut NatsLink) -> Vec<u8> {
    tokio::time::timeout(RealDuration::from_secs(5), link.wait_input())
        .await
        .expect("the downlink arrives");
    let mut buf = [0u8; MTU];
    let n = link.receive(&mut buf).await.unwrap().unwrap();
    buf[..n].to_vec()
}

fn link(url: String, prefix: &str) -> NatsLink {
    let mut config = NatsConfig::new(DEVICE, vec![url]);
    config.prefix = prefix.to_string();
    config.mtu = MTU;
    NatsLink::new(config).unwrap()
}

#[tokio::test]
async fn records_reach_the_server_and_acks_free_them() {
    // The machine's nats-server (scripts/check.sh starts it if it is not
    // running), under a prefix of this run's own.
    let url = "nats://127.0.0.1:4222";
    let prefix = own_prefix("round-trip");
    let store = serve(url, &prefix).await;
    let mut link = link(url.to_string(), &prefix);
    let mut engine = engine();
    let mut boiler = Boiler::new(1);
    let until = Instant::from_millis(4 * 3_600_000);
    let end = run_device(
        &mut engine,
        &mut link,
        &mut boiler,
        until,
        |_| {},
        async |l| l.wait_input().await,
    )
    .await;
    link.power(false).await.unwrap();
    let sampled = assert_stored_once(&store.lock().unwrap(), &engine);
    assert!(sampled >= 4 * 60, "{sampled} readings in 4 hours");
    let c = link.counters();
    // Push mode: a connection per session the engine opened, each closed.
    assert!(c.connects > 1 && c.published >= c.connects, "{c:?}");
    assert_eq!(c.connect_failures + c.refusals + c.drops, 0, "{c:?}");
    assert_eq!(link.state(), LinkState::Down);
    let per_day = per_device_day(c.connects, end);
    println!("NATS connects per device-day in push mode: {per_day:.1}");
}

#[tokio::test]
async fn a_server_restarted_mid_session_loses_nothing_and_stores_nothing_twice() {
    let mut nats = NatsServer::start("restart", "");
    let prefix = "telemark";
    let store = serve(&nats.url(), prefix).await;
    let mut link = link(nats.url(), prefix);
    let mut engine = engine();
    let mut boiler = Boiler::new(2);
    let until = Instant::from_millis(6 * 3_600_000);
    let stop_at = Instant::from_millis(2 * 3_600_000);
    let resume_at = Instant::from_millis(3 * 3_600_000);
    let mut stopped = false;
    let during = |now| {
        if now >= stop_at && !stopped {
            nats.stop();
            stopped = true;
        }
        if now >= resume_at && !nats.running() {
            nats.resume();
        }
    };
    run_device(
        &mut engine,
        &mut link,
        &mut boiler,
        until,
        during,
        async |l| l.wait_input().await,
    )
    .await;
    assert!(stopped);
    assert_stored_once(&store.lock().unwrap(), &engine);
    let c = link.counters();
    // The server went under a live connection or before one: the link
    // said so, and the engine kept its records until it came back.
    assert!(c.drops + c.connect_failures >= 1, "{c:?}");
    assert!(engine.uplink().counters().failed_sessions >= 1, "{c:?}");
}

#[tokio::test]
async fn refused_credentials_are_their_own_error_and_not_retried_in_a_loop() {
    let nats = NatsServer::start(
        "credentials",
        "authorization { user: \"device-257\", password: \"right\" }",
    );
    let mut config = NatsConfig::new(DEVICE, vec![nats.url()]);
    config.options = ConnectOptions::with_user_and_password("device-257".into(), "wrong".into());
    let mut link = NatsLink::new(config).unwrap();
    assert_eq!(link.power(true).await, Err(LinkError::Refused));
    assert_eq!(link.state(), LinkState::Refused);
    // Nothing is attempted until the engine's next session.
    tokio::time::sleep(RealDuration::from_millis(300)).await;
    assert_eq!(link.send(b"frame").await, Err(LinkError::Refused));
    let c = link.counters();
    assert_eq!(
        (c.refusals, c.connects, c.connect_failures),
        (1, 0, 0),
        "{c:?}"
    );
}

#[tokio::test]
async fn the_right_credentials_connect_and_a_second_server_takes_over() {
    let nats = NatsServer::start(
        "failover",
        "authorization { user: \"device-257\", password: \"right\" }",
    );
    // The first server is away: nothing listens on its port.
    let dead = format!("nats://127.0.0.1:{}", free_port());
    let mut config = NatsConfig::new(DEVICE, vec![dead, nats.url()]);
    config.options = ConnectOptions::with_user_and_password("device-257".into(), "right".into());
    let mut link = NatsLink::new(config).unwrap();
    link.power(true).await.unwrap();
    assert_eq!(link.state(), LinkState::Up);
    link.send(b"a frame").await.unwrap();
    assert_eq!(link.counters().connects, 1);
}

#[tokio::test]
async fn the_mtu_follows_the_servers_max_payload_and_oversized_downlinks_are_counted() {
    let nats = NatsServer::start("max-payload", "max_payload: 200");
    let mut link = link(nats.url(), "telemark");
    assert_eq!(link.mtu(), MTU);
    link.power(true).await.unwrap();
    assert_eq!(link.mtu(), 200);
    assert_eq!(link.send(&[0; 201]).await, Err(LinkError::TooLarge));
    link.send(&[0; 200]).await.unwrap();
    // A downlink longer than the device's MTU is dropped and counted; the
    // next one arrives.
    let down = link.subjects().down().to_string();
    let mut config = NatsConfig::new(DEVICE, vec![nats.url()]);
    config.mtu = 64;
    let mut small = NatsLink::new(config).unwrap();
    small.power(true).await.unwrap();
    push(&nats.url(), &down, &[7; 100]).await;
    push(&nats.url(), &down, b"fits").await;
    assert_eq!(next_downlink(&mut small).await, b"fits");
    assert_eq!(small.counters().downlinks_dropped, 1);
    assert_eq!(next_downlink(&mut link).await, [7; 100]);
}

#[tokio::test]
async fn the_device_config_chooses_always_connected() {
    let nats = NatsServer::start("always", "");
    let store = serve(&nats.url(), "telemark").await;
    // {0: 2, 13: 1}: config version 2, keep the link up.
    let keep_link_up = [0xa2, 0x00, 0x02, 0x0d, 0x01];
    store
        .lock()
        .unwrap()
        .set_config(DEVICE, 2, &keep_link_up)
        .unwrap();
    let mut link = link(nats.url(), "telemark");
    assert!(!link.keeps_link_up());
    let mut engine = engine();
    let mut boiler = Boiler::new(3);
    let hour = Instant::from_millis(3_600_000);
    run_device(
        &mut engine,
        &mut link,
        &mut boiler,
        hour,
        |_| {},
        async |l| l.wait_input().await,
    )
    .await;
    assert!(engine.uplink().config().keep_link_up);
    assert!(link.keeps_link_up());
    // The sessions are over; the connection is not.
    assert!(!engine.uplink().radio_on());
    assert_eq!(link.state(), LinkState::Up);
    let connects = link.counters().connects;
    assert_eq!(connects, 1);
    let down = link.subjects().down().to_string();
    push(&nats.url(), &down, b"at once").await;
    assert_eq!(next_downlink(&mut link).await, b"at once");
    assert_eq!(link.counters().connects, connects);
}
