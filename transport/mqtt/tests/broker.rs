//! The device side against real brokers, through an embedded-io-async
//! adapter over a real TCP socket: the code path the firmware runs. The
//! server end is `telemark-server` behind a rumqttc client.
//!
//! The cases a device meets on any broker run twice: against mosquitto
//! (`mosquitto::…`) and against the broker telemark-cloud embeds,
//! rmqtt in library mode (`embedded::…`, `telemark-mqtt-broker`). Each
//! test starts a broker of its own on a free port (`mosquitto` must be on
//! the PATH; `scripts/check.sh` installs it). Credentials and TLS are
//! tested on mosquitto.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration as RealDuration;

use embassy_futures::select::{select, Either};
use embassy_sync::blocking_mutex::raw::NoopRawMutex;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use telemark_core::time::Instant;
use telemark_core::transport::AsyncTransport;
use telemark_mqtt::{Config, LinkError, LinkState, Mode, Refusal, State, Topics};
use telemark_mqtt_broker::{Broker as EmbeddedBroker, Settings};
use telemark_server::Store;
use telemark_transport_testkit::mqtt::{serve, Tcp};
use telemark_transport_testkit::{
    assert_stored_once, engine, free_port, per_device_day, run_device, Boiler, DEVICE, MTU,
};

type Link<'a> = telemark_mqtt::Link<'a, NoopRawMutex, MTU>;
type Runner<'a> = telemark_mqtt::Runner<'a, NoopRawMutex, MTU>;

/// A broker of the test's own, on a free port, stopped when dropped.
struct Broker {
    port: u16,
    process: Process,
}

enum Process {
    /// A mosquitto process, with its persistence in a directory of its own.
    Mosquitto { dir: PathBuf, child: Option<Child> },
    /// The embedded broker, in this process; it keeps no state across a
    /// stop.
    Embedded {
        settings: Settings,
        broker: Option<EmbeddedBroker>,
    },
}

impl Broker {
    fn start(name: &str, password: Option<(&str, &str)>) -> Broker {
        Broker::with_settings(name, password, "")
    }

    /// A mosquitto with more lines of configuration.
    fn with_settings(name: &str, password: Option<(&str, &str)>, settings: &str) -> Broker {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("telemark-mqtt-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut conf = format!(
            "listener {port} 127.0.0.1\npersistence true\npersistence_location {}/\n\
             user {}\n\
             log_dest file {}/broker.log\n",
            dir.display(),
            std::env::var("USER").unwrap_or_else(|_| "root".into()),
            dir.display()
        );
        match password {
            Some((user, pass)) => {
                let file = dir.join("passwd");
                let ok = Command::new("mosquitto_passwd")
                    .args(["-b", "-c"])
                    .arg(&file)
                    .args([user, pass])
                    .status()
                    .expect("mosquitto_passwd is installed");
                assert!(ok.success());
                conf += &format!("allow_anonymous false\npassword_file {}\n", file.display());
            }
            None => conf += "allow_anonymous true\n",
        }
        conf += settings;
        std::fs::write(dir.join("mosquitto.conf"), conf).unwrap();
        let mut broker = Broker {
            port,
            process: Process::Mosquitto { dir, child: None },
        };
        broker.resume();
        broker
    }

    /// The embedded broker, with `settings` but for its address.
    fn embedded_with(mut settings: Settings) -> Broker {
        let port = free_port();
        settings.listen = SocketAddr::from(([127, 0, 0, 1], port));
        let mut broker = Broker {
            port,
            process: Process::Embedded {
                settings,
                broker: None,
            },
        };
        broker.resume();
        broker
    }

    fn embedded() -> Broker {
        Broker::embedded_with(Settings::new(SocketAddr::from(([127, 0, 0, 1], 0))))
    }

    /// Starts the broker (again), and waits until it listens.
    fn resume(&mut self) {
        let port = self.port;
        match &mut self.process {
            Process::Mosquitto { dir, child } => {
                *child = Some(
                    Command::new("mosquitto")
                        .arg("-c")
                        .arg(dir.join("mosquitto.conf"))
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .spawn()
                        .expect("mosquitto is installed"),
                );
                for _ in 0..100 {
                    if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                        return;
                    }
                    std::thread::sleep(RealDuration::from_millis(20));
                }
                let log = std::fs::read_to_string(dir.join("broker.log")).unwrap_or_default();
                panic!("mosquitto did not listen on {port}:\n{log}");
            }
            Process::Embedded { settings, broker } => {
                // The address is free again once the last broker's
                // threads have gone.
                for _ in 0..100 {
                    match EmbeddedBroker::start(settings) {
                        Ok(started) => {
                            *broker = Some(started);
                            return;
                        }
                        Err(_) => std::thread::sleep(RealDuration::from_millis(20)),
                    }
                }
                panic!("the embedded broker did not listen on {port}");
            }
        }
    }

    fn running(&self) -> bool {
        match &self.process {
            Process::Mosquitto { child, .. } => child.is_some(),
            Process::Embedded { broker, .. } => broker.is_some(),
        }
    }

    /// Stops the broker as a restart does: mosquitto (SIGTERM) saves its
    /// sessions and the messages queued for them; the embedded broker
    /// forgets them. Every connection drops.
    fn stop(&mut self) {
        match &mut self.process {
            Process::Mosquitto { child, .. } => {
                if let Some(mut child) = child.take() {
                    let _ = Command::new("kill").arg(child.id().to_string()).status();
                    let _ = child.wait();
                }
            }
            Process::Embedded { broker, .. } => {
                if let Some(broker) = broker.take() {
                    broker.stop();
                }
            }
        }
    }

    /// Kills the broker and wipes its store: the messages in flight
    /// through it, and every session, are gone.
    fn crash(&mut self) {
        match &mut self.process {
            Process::Mosquitto { dir, child } => {
                if let Some(mut child) = child.take() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                let _ = std::fs::remove_file(dir.join("mosquitto.db"));
            }
            Process::Embedded { .. } => self.stop(),
        }
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.crash();
        if let Process::Mosquitto { dir, .. } = &self.process {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Dials brokers over tokio sockets, seen through embedded-io-async.
/// Runs `test` beside the link's runner, as the firmware's two tasks run.
async fn with_runner<F: std::future::Future>(runner: &mut Runner<'_>, test: F) -> F::Output {
    match select(runner.run(&mut Tcp), test).await {
        Either::First(never) => match never {},
        Either::Second(out) => out,
    }
}

/// Connects once (making the session and its subscription), then sleeps
/// disconnected, as a device in push mode does between sessions.
async fn connect_then_sleep(link: &mut Link<'_>) {
    link.power(true).await.unwrap();
    link.power(false).await.unwrap();
    tokio::time::sleep(RealDuration::from_millis(100)).await;
    assert_eq!(link.state(), LinkState::Down);
}

/// Publishes `payload` on `topic` at QoS 1 from a client of the server's
/// side, and waits until the broker has it.
async fn push(port: u16, topic: &str, payload: &[u8]) {
    let options = MqttOptions::new("telemark-pusher", "127.0.0.1", port);
    let (client, mut events) = AsyncClient::new(options, 8);
    client
        .publish(topic, QoS::AtLeastOnce, false, payload.to_vec())
        .await
        .unwrap();
    loop {
        if let Ok(Event::Incoming(Packet::PubAck(_))) = events.poll().await {
            return;
        }
    }
}

/// Waits for the next downlink and returns it.
async fn next_downlink(link: &mut Link<'_>) -> Vec<u8> {
    tokio::time::timeout(RealDuration::from_secs(5), link.wait_input())
        .await
        .expect("the downlink arrives");
    let mut buf = [0u8; MTU];
    let n = link.receive(&mut buf).await.unwrap().unwrap();
    buf[..n].to_vec()
}

/// Buffers of a device's MQTT session.
struct Buffers {
    rx: [u8; 512],
    tx: [u8; 1024],
}

impl Buffers {
    fn new() -> Self {
        Buffers {
            rx: [0; 512],
            tx: [0; 1024],
        }
    }

    fn link<'a>(
        &'a mut self,
        state: &'a State<NoopRawMutex, MTU>,
        config: Config<'a>,
    ) -> (Runner<'a>, Link<'a>) {
        telemark_mqtt::new(state, config, &mut self.rx, &mut self.tx).unwrap()
    }
}

async fn records_reach_the_server_and_acks_free_them(broker: Broker) {
    let store = serve(broker.addr());
    let (state, brokers, mut buffers) = (State::new(), [broker.addr()], Buffers::new());
    let (mut runner, mut link) = buffers.link(&state, Config::new(DEVICE, &brokers));
    let mut engine = engine();
    let mut boiler = Boiler::new(1);
    let until = Instant::from_millis(4 * 3_600_000);
    let device = async {
        let end = run_device(
            &mut engine,
            &mut link,
            &mut boiler,
            until,
            |_| {},
            async |l| l.wait_input().await,
        )
        .await;
        // The radio off: the runner disconnects cleanly.
        link.power(false).await.unwrap();
        tokio::time::sleep(RealDuration::from_millis(200)).await;
        end
    };
    let end = with_runner(&mut runner, device).await;
    let sampled = assert_stored_once(&store.lock().unwrap(), &engine);
    assert!(sampled >= 4 * 60, "{sampled} readings in 4 hours");
    let c = link.counters();
    // Push mode: one connect per session the engine opened, each closed.
    assert!(c.connects > 1 && c.published >= c.connects, "{c:?}");
    assert_eq!(c.connect_failures + c.refusals + c.drops, 0, "{c:?}");
    assert_eq!(link.state(), LinkState::Down);
    let per_day = per_device_day(c.connects, end);
    println!("connects per device-day in push mode: {per_day:.1}");
}

async fn a_broker_restarted_mid_session_loses_nothing_and_stores_nothing_twice(broker: Broker) {
    broker_away_for_an_hour(broker, Broker::stop).await;
}

async fn a_broker_that_drops_what_is_in_flight_loses_nothing_end_to_end(broker: Broker) {
    broker_away_for_an_hour(broker, Broker::crash).await;
}

/// Six hours of device time; in the third, the broker goes (as `away`
/// takes it) and comes back. Every reading reaches the server once.
async fn broker_away_for_an_hour(mut broker: Broker, away: fn(&mut Broker)) {
    let store = serve(broker.addr());
    let (state, brokers, mut buffers) = (State::new(), [broker.addr()], Buffers::new());
    let (mut runner, mut link) = buffers.link(&state, Config::new(DEVICE, &brokers));
    let mut engine = engine();
    let mut boiler = Boiler::new(2);
    let until = Instant::from_millis(6 * 3_600_000);
    let stop_at = Instant::from_millis(2 * 3_600_000);
    let resume_at = Instant::from_millis(3 * 3_600_000);
    let mut stopped = false;
    let during = |now| {
        if now >= stop_at && !stopped {
            away(&mut broker);
            stopped = true;
        }
        if now >= resume_at && !broker.running() {
            broker.resume();
        }
    };
    let device = run_device(
        &mut engine,
        &mut link,
        &mut boiler,
        until,
        during,
        async |l| l.wait_input().await,
    );
    with_runner(&mut runner, device).await;
    assert!(stopped);
    assert_stored_once(&store.lock().unwrap(), &engine);
    let c = link.counters();
    // The broker went away under a live connection or before one: the
    // link said so, and the engine kept its records until it came back.
    assert!(c.drops + c.connect_failures >= 1, "{c:?}");
    assert!(engine.uplink().counters().failed_sessions >= 1, "{c:?}");
}

async fn a_downlink_queued_while_the_device_sleeps_arrives_when_it_wakes(broker: Broker) {
    let (state, brokers, mut buffers) = (State::new(), [broker.addr()], Buffers::new());
    let (mut runner, mut link) = buffers.link(&state, Config::new(DEVICE, &brokers));
    let topics = Topics::new("telemark", DEVICE).unwrap();
    let test = async {
        connect_then_sleep(&mut link).await;
        // The server pushes while the device sleeps.
        push(broker.port, topics.down(), b"command while asleep").await;
        // The device wakes: the broker resumes its session and delivers.
        link.power(true).await.unwrap();
        assert_eq!(next_downlink(&mut link).await, b"command while asleep");
    };
    with_runner(&mut runner, test).await;
    let c = link.counters();
    assert_eq!((c.connects, c.resumed, c.received), (2, 1, 1), "{c:?}");
}

async fn a_broker_that_lost_the_session_gets_the_subscription_again(mut broker: Broker) {
    let (state, brokers, mut buffers) = (State::new(), [broker.addr()], Buffers::new());
    let (mut runner, mut link) = buffers.link(&state, Config::new(DEVICE, &brokers));
    let topics = Topics::new("telemark", DEVICE).unwrap();
    let test = async {
        connect_then_sleep(&mut link).await;
        // The broker restarts with its store wiped: no session, no
        // subscription (CONNACK session_present = 0).
        broker.crash();
        broker.resume();
        link.power(true).await.unwrap();
        push(broker.port, topics.down(), b"after the wipe").await;
        assert_eq!(next_downlink(&mut link).await, b"after the wipe");
    };
    with_runner(&mut runner, test).await;
    let c = link.counters();
    assert_eq!((c.connects, c.resumed), (2, 0), "{c:?}");
}

#[tokio::test]
async fn refused_credentials_are_their_own_error_and_not_retried_in_a_loop() {
    let broker = Broker::start("credentials", Some(("device-257", "right")));
    let (state, brokers, mut buffers) = (State::new(), [broker.addr()], Buffers::new());
    let mut config = Config::new(DEVICE, &brokers);
    config.auth = Some(("device-257", b"wrong"));
    let (mut runner, mut link) = buffers.link(&state, config);
    let test = async {
        let refused = link.power(true).await;
        assert!(
            matches!(
                refused,
                Err(LinkError::Refused(
                    Refusal::BadCredentials | Refusal::NotAuthorized
                ))
            ),
            "{refused:?}"
        );
        assert!(matches!(link.state(), LinkState::Refused(_)));
        // The runner waits for the engine's next session: no attempt
        // meanwhile, and nothing is sent.
        tokio::time::sleep(RealDuration::from_millis(500)).await;
        assert!(matches!(
            link.send(b"frame").await,
            Err(LinkError::Refused(_))
        ));
    };
    with_runner(&mut runner, test).await;
    let c = link.counters();
    assert_eq!(
        (c.refusals, c.connects, c.connect_failures),
        (1, 0, 0),
        "{c:?}"
    );
}

#[tokio::test]
async fn the_right_credentials_connect_and_a_second_endpoint_takes_over() {
    let broker = Broker::start("failover", Some(("device-257", "right")));
    // The first endpoint listens to nobody.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let (state, brokers, mut buffers) = (State::new(), [dead_addr, broker.addr()], Buffers::new());
    let mut config = Config::new(DEVICE, &brokers);
    config.auth = Some(("device-257", b"right"));
    let (mut runner, mut link) = buffers.link(&state, config);
    link.keep_link_up(true);
    let test = async {
        link.power(true).await.unwrap();
        // Always connected: the radio off leaves the connection up.
        link.power(false).await.unwrap();
        tokio::time::sleep(RealDuration::from_millis(200)).await;
        assert_eq!(link.state(), LinkState::Up);
        link.power(true).await.unwrap();
    };
    with_runner(&mut runner, test).await;
    let c = link.counters();
    assert_eq!((c.connects, c.connect_failures), (1, 1), "{c:?}");
}

/// `broker` announces a Maximum Packet Size of 160 bytes.
async fn the_mtu_follows_the_brokers_maximum_packet_size(broker: Broker) {
    let (state, brokers, mut buffers) = (State::new(), [broker.addr()], Buffers::new());
    let (mut runner, mut link) = buffers.link(&state, Config::new(DEVICE, &brokers));
    assert_eq!(link.mtu(), MTU);
    let topics = Topics::new("telemark", DEVICE).unwrap();
    let test = async {
        link.power(true).await.unwrap();
        // 160 bytes less the PUBLISH header and the topic.
        let mtu = 160 - telemark_mqtt::PUBLISH_OVERHEAD - topics.up().len();
        assert_eq!(link.mtu(), mtu);
        assert_eq!(link.send(&[0; 200]).await, Err(LinkError::TooLarge));
        // A frame of the MTU passes the broker.
        link.send(&vec![7; mtu]).await.unwrap();
        tokio::time::sleep(RealDuration::from_millis(200)).await;
        assert_eq!(link.state(), LinkState::Up);
    };
    with_runner(&mut runner, test).await;
    let c = link.counters();
    assert_eq!(
        (c.published, c.publish_failures, c.drops),
        (1, 0, 0),
        "{c:?}"
    );
}

/// The server turns the device always connected with a config update
/// (key 13): from then a session's end leaves the connection up, and a
/// command pushed arrives at once, with no new connect.
async fn the_device_config_chooses_always_connected(broker: Broker) {
    let store = serve(broker.addr());
    // {0: 2, 13: 1}
    let keep_link_up = [0xa2, 0x00, 0x02, 0x0d, 0x01];
    store
        .lock()
        .unwrap()
        .set_config(DEVICE, 2, &keep_link_up)
        .unwrap();
    let (state, brokers, mut buffers) = (State::new(), [broker.addr()], Buffers::new());
    let (mut runner, mut link) = buffers.link(&state, Config::new(DEVICE, &brokers));
    assert_eq!(link.mode(), Mode::Push);
    let mut engine = engine();
    let mut boiler = Boiler::new(3);
    let topics = Topics::new("telemark", DEVICE).unwrap();
    let test = async {
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
        assert_eq!(link.mode(), Mode::AlwaysConnected);
        // The sessions are over; the connection is not.
        assert!(!engine.uplink().radio_on());
        tokio::time::sleep(RealDuration::from_millis(200)).await;
        assert_eq!(link.state(), LinkState::Up);
        let connects = link.counters().connects;
        push(broker.port, topics.down(), b"at once").await;
        assert_eq!(next_downlink(&mut link).await, b"at once");
        assert_eq!(link.counters().connects, connects);
    };
    with_runner(&mut runner, test).await;
}

/// The cases every broker must pass, each against mosquitto and the
/// embedded broker.
macro_rules! on_both_brokers {
    ($($case:ident),* $(,)?) => {
        mod mosquitto {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(super::Broker::start(stringify!($case), None)).await;
                }
            )*

            #[tokio::test]
            async fn the_mtu_follows_the_brokers_maximum_packet_size() {
                let broker = super::Broker::with_settings("packet-size", None, "max_packet_size 160\n");
                super::the_mtu_follows_the_brokers_maximum_packet_size(broker).await;
            }
        }

        mod embedded {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(super::Broker::embedded()).await;
                }
            )*

            #[tokio::test]
            async fn the_mtu_follows_the_brokers_maximum_packet_size() {
                let mut settings = super::Settings::new(([127, 0, 0, 1], 0).into());
                settings.max_packet_size = 160;
                let broker = super::Broker::embedded_with(settings);
                super::the_mtu_follows_the_brokers_maximum_packet_size(broker).await;
            }
        }
    };
}

on_both_brokers!(
    records_reach_the_server_and_acks_free_them,
    a_broker_restarted_mid_session_loses_nothing_and_stores_nothing_twice,
    a_broker_that_drops_what_is_in_flight_loses_nothing_end_to_end,
    a_downlink_queued_while_the_device_sleeps_arrives_when_it_wakes,
    a_broker_that_lost_the_session_gets_the_subscription_again,
    the_device_config_chooses_always_connected,
);

/// The host side: rumqttc with rustls, over a broker that asks every
/// client for a certificate signed by the fleet's CA.
#[cfg(feature = "host")]
mod host {
    use std::sync::Arc;

    use rumqttc::{TlsConfiguration, Transport};
    use telemark_mqtt::host::{HostConfig, HostLink};
    use telemark_transport_testkit::pki::Pki;

    use super::*;

    /// A CA, a broker certificate for 127.0.0.1, and a client certificate
    /// for the device, written for mosquitto; the rustls configs of a
    /// device that trusts the CA, with its client certificate and without.
    fn pki(dir: &std::path::Path) -> (Transport, Transport) {
        let pki = Pki::new("127.0.0.1", DEVICE);
        std::fs::write(dir.join("ca.pem"), &pki.ca_pem).unwrap();
        std::fs::write(dir.join("server.pem"), &pki.server_pem).unwrap();
        std::fs::write(dir.join("server.key"), &pki.server_key_pem).unwrap();
        let tls = |config| Transport::tls_with_config(TlsConfiguration::Rustls(Arc::new(config)));
        (tls(pki.device_config()), tls(pki.stranger_config()))
    }

    /// mosquitto settings for TLS on the first listener, with the files
    /// `pki` wrote in `dir`, requiring a client certificate.
    fn tls_settings(dir: &std::path::Path) -> String {
        format!(
            "cafile {d}/ca.pem\ncertfile {d}/server.pem\nkeyfile {d}/server.key\n\
             require_certificate true\nuse_identity_as_username true\n",
            d = dir.display()
        )
    }

    #[tokio::test]
    async fn records_travel_over_tls_with_a_client_certificate() {
        // The server end sits beside the broker: here on a plain listener
        // of the same broker.
        let dir = std::env::temp_dir().join(format!("telemark-mqtt-pki-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (transport, _) = pki(&dir);
        let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let plain_port = plain.local_addr().unwrap().port();
        drop(plain);
        let settings = format!("{}listener {plain_port} 127.0.0.1\n", tls_settings(&dir));
        let broker = Broker::with_settings("tls", None, &settings);
        let store = serve(SocketAddr::from(([127, 0, 0, 1], plain_port)));
        let mut config = HostConfig::new(DEVICE, vec![("127.0.0.1".to_string(), broker.port)]);
        config.transport = transport;
        config.mtu = MTU;
        let mut link = HostLink::new(config).unwrap();
        let mut engine = engine();
        let mut boiler = Boiler::new(3);
        let until = Instant::from_millis(3_600_000);
        run_device(
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
        assert!(sampled >= 60);
        let c = link.counters();
        assert!(c.connects >= 1 && c.published >= 1, "{c:?}");
        assert_eq!(c.connect_failures + c.refusals + c.drops, 0, "{c:?}");
        assert_eq!(link.state(), LinkState::Down);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_device_without_its_certificate_does_not_connect() {
        let dir =
            std::env::temp_dir().join(format!("telemark-mqtt-pki-nocert-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (_, without) = pki(&dir);
        let broker = Broker::with_settings("tls-no-cert", None, &tls_settings(&dir));
        // The device trusts the broker, but holds no certificate: the
        // broker ends the TLS handshake.
        let mut config = HostConfig::new(DEVICE, vec![("127.0.0.1".to_string(), broker.port)]);
        config.transport = without;
        config.connect_timeout = RealDuration::from_secs(2);
        let mut link = HostLink::new(config).unwrap();
        assert_eq!(link.power(true).await, Err(LinkError::Down));
        assert_eq!(link.counters().connect_failures, 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_host_link_resumes_its_session_and_gets_what_was_queued() {
        let broker = Broker::start("host-asleep", None);
        let config = HostConfig::new(DEVICE, vec![("127.0.0.1".to_string(), broker.port)]);
        let mut link = HostLink::new(config).unwrap();
        link.power(true).await.unwrap();
        link.power(false).await.unwrap();
        let topics = Topics::new("telemark", DEVICE).unwrap();
        push(broker.port, topics.down(), b"queued for the host").await;
        link.power(true).await.unwrap();
        tokio::time::timeout(RealDuration::from_secs(5), link.wait_input())
            .await
            .unwrap();
        let mut buf = [0u8; MTU];
        let n = link.receive(&mut buf).await.unwrap().unwrap();
        assert_eq!(&buf[..n], b"queued for the host");
        let c = link.counters();
        assert_eq!((c.connects, c.resumed, c.received), (2, 1, 1), "{c:?}");
    }

    #[tokio::test]
    async fn a_host_link_with_wrong_credentials_is_refused() {
        let broker = Broker::start("host-credentials", Some(("device-257", "right")));
        let mut config = HostConfig::new(DEVICE, vec![("127.0.0.1".to_string(), broker.port)]);
        config.auth = Some(("device-257".to_string(), "wrong".to_string()));
        let mut link = HostLink::new(config).unwrap();
        let refused = link.power(true).await;
        assert!(matches!(refused, Err(LinkError::Refused(_))), "{refused:?}");
        assert_eq!(link.counters().refusals, 1);
    }
}
