//! The link against real peers over loopback UDP: a server end of the
//! test's own on `telemark-server` (answers lost, a busy server, a
//! refusal, stray datagrams), and libcoap, which telemark did not write
//! (Debian's `libcoap3-bin`): its `coap-server` takes what the link sends
//! and echoes it back, and its `coap-client` posts a captured frame to the
//! server end and gets an acknowledgement the device accepts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration as RealDuration;

use embassy_time::Duration as Timeout;
use telemark_coap::host::Udp;
use telemark_coap::message::{Code, Message, Type, Writer};
use telemark_coap::server::Server as CoapServer;
use telemark_coap::{CoapLink, Config, LinkError};
use telemark_core::time::{Duration, Instant};
use telemark_core::transport::AsyncTransport;
use telemark_transport_testkit::coap::{serve, Scripted};
use telemark_transport_testkit::{
    assert_stored_once, captured_frame, engine, held_off, run_until, Boiler,
};

fn config() -> Config<'static> {
    let mut config = Config::new();
    config.timeout = Timeout::from_millis(300);
    config
}

#[tokio::test]
async fn records_reach_the_server_and_acks_free_them() {
    let end = serve().await;
    let mut buf = [0u8; 512];
    let udp = Udp::connect(end.addr).await.unwrap();
    let mut link = CoapLink::new(udp, config(), &mut buf, 1);
    let mut engine = engine();
    let mut boiler = Boiler::new(1);
    run_until(
        &mut engine,
        &mut link,
        &mut boiler,
        Instant::from_millis(4 * 3_600_000),
    )
    .await;
    let sampled = assert_stored_once(&end.store.lock().unwrap(), &engine);
    assert!(sampled >= 4 * 60, "{sampled} readings in 4 hours");
    let c = link.counters();
    assert_eq!(c.answered, c.requests, "{c:?}");
    assert_eq!(
        c.failed + c.busy + c.refused + c.rejected + c.stray,
        0,
        "{c:?}"
    );
    // CoAP's share: 10 bytes a request and 7 an answer, beside the frames.
    let frames = engine.uplink().counters().bytes_sent;
    assert_eq!(c.bytes_out, frames + 10 * u64::from(c.requests), "{c:?}");
}

#[tokio::test]
async fn lost_answers_cost_a_resend_and_stray_datagrams_are_dropped() {
    let end = serve().await;
    for _ in 0..3 {
        end.then(Scripted::Lose);
        end.then(Scripted::Stray);
    }
    let mut buf = [0u8; 512];
    let udp = Udp::connect(end.addr).await.unwrap();
    let mut link = CoapLink::new(udp, config(), &mut buf, 2);
    let mut engine = engine();
    let mut boiler = Boiler::new(2);
    run_until(
        &mut engine,
        &mut link,
        &mut boiler,
        Instant::from_millis(3_600_000),
    )
    .await;
    assert_stored_once(&end.store.lock().unwrap(), &engine);
    let c = link.counters();
    assert_eq!(c.failed, 3, "{c:?}");
    assert_eq!(c.stray, 6, "{c:?}");
    assert!(engine.uplink().counters().retries >= 3);
}

#[tokio::test]
async fn a_busy_server_holds_the_device_off_for_its_max_age() {
    let end = serve().await;
    end.then(Scripted::Busy(600));
    let mut buf = [0u8; 512];
    let udp = Udp::connect(end.addr).await.unwrap();
    let mut link = CoapLink::new(udp, config(), &mut buf, 3);
    let mut engine = engine();
    let mut boiler = Boiler::new(3);
    let waited = held_off(
        &mut engine,
        &mut link,
        &mut boiler,
        |l| l.counters().busy,
        |l| l.counters().answered,
    )
    .await;
    assert!(waited >= Duration::from_secs(600), "{waited:?}");
}

#[tokio::test]
async fn an_unauthorized_device_gets_its_own_error() {
    let end = serve().await;
    end.then(Scripted::Unauthorized);
    let mut buf = [0u8; 512];
    let udp = Udp::connect(end.addr).await.unwrap();
    let mut link = CoapLink::new(udp, config(), &mut buf, 4);
    assert_eq!(
        link.send(b"frame").await,
        Err(LinkError::Refused {
            code: Code::UNAUTHORIZED
        })
    );
    // Bytes that are no frame: refused as a frame.
    assert_eq!(
        link.send(b"frame").await,
        Err(LinkError::Rejected {
            code: Code::BAD_REQUEST
        })
    );
    assert_eq!(link.retry_after(), None);
}

/// libcoap's example server on a free UDP port, stopped when dropped.
struct LibcoapServer(Child, u16);

impl LibcoapServer {
    fn start(args: &[&str]) -> LibcoapServer {
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("coap-server-notls")
            .args(["-A", "127.0.0.1", "-p", &port.to_string()])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "coap-server-notls is missing: install it (Debian: apt-get install libcoap3-bin)",
            );
        LibcoapServer(child, port)
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.1))
    }
}

impl Drop for LibcoapServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn libcoap_takes_what_the_link_sends_and_the_link_takes_its_answers() {
    // -e: the server echoes back what a PUT to /example_data carries.
    let libcoap = LibcoapServer::start(&["-e"]);
    let mut buf = [0u8; 512];
    let udp = Udp::connect(libcoap.addr()).await.unwrap();
    let mut echo = config();
    echo.path = "example_data";
    echo.method = Code::PUT;
    let mut link = CoapLink::new(udp, echo, &mut buf, 5);
    let payload = b"a sealed frame, as far as libcoap knows";
    // The server may still be starting: a few tries.
    let mut sent = link.send(payload).await;
    for _ in 0..20 {
        if sent.is_ok() {
            break;
        }
        tokio::time::sleep(RealDuration::from_millis(100)).await;
        sent = link.send(payload).await;
    }
    sent.unwrap();
    let mut back = [0u8; 256];
    let n = link.receive(&mut back).await.unwrap().unwrap();
    assert_eq!(&back[..n], payload);
    // POST to a path libcoap does not serve: its 4.04 or 4.05, as the
    // link's own error.
    let udp = Udp::connect(libcoap.addr()).await.unwrap();
    let mut buf = [0u8; 512];
    let mut link = CoapLink::new(udp, config(), &mut buf, 6);
    let refused = link.send(payload).await;
    assert!(
        matches!(refused, Err(LinkError::Rejected { code }) if code == Code::NOT_FOUND || code == Code::new(4, 5)),
        "{refused:?}"
    );
}

#[tokio::test]
async fn libcoap_client_posts_a_captured_frame_and_gets_an_acknowledgement_the_device_takes() {
    let end = serve().await;
    let (mut engine, frame) = captured_frame().await;
    let dir = std::env::temp_dir().join(format!("telemark-coap-client-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (request, answer) = (dir.join("frame.bin"), dir.join("response.bin"));
    std::fs::write(&request, &frame).unwrap();
    let out = tokio::process::Command::new("coap-client-notls")
        .args(["-m", "post", "-N", "-B", "5", "-f"])
        .arg(&request)
        .arg("-o")
        .arg(&answer)
        .arg(format!("coap://{}/up", end.addr))
        .output()
        .await
        .expect("coap-client-notls is missing: install it (Debian: apt-get install libcoap3-bin)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut response = std::fs::read(&answer).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!end.store.lock().unwrap().records().is_empty());
    // The answer is what the device takes as its acknowledgement.
    use telemark_core::store::RecordStore;
    let before = engine.store().len();
    engine
        .on_frame(Instant::from_millis(1_000), &mut response)
        .expect("the device takes the acknowledgement");
    assert!(engine.store().len() < before);
}

#[test]
fn hostile_datagrams_are_refused_without_panic() {
    // Every prefix of a valid message, and a few lies about lengths.
    let mut buf = [0u8; 64];
    let mut w = Writer::new(&mut buf, Type::Non, Code::POST, 9, &[1, 2, 3]).unwrap();
    w.option(11, b"up").unwrap();
    w.option(300, &[7; 20]).unwrap();
    let n = w.payload(b"payload").unwrap();
    let whole = Message::parse(&buf[..n]).unwrap();
    assert_eq!(whole.options().count(), 2);
    assert_eq!(whole.options().nth(1), Some((300, &[7u8; 20][..])));
    for cut in 0..n {
        let _ = Message::parse(&buf[..cut]);
        let _ = CoapServer::default().take(&buf[..cut]);
    }
    for lie in [
        &[0x48u8, 0x02, 0, 1][..],     // token of 8 bytes, none there
        &[0x49, 0x02, 0, 1][..],       // token length 9
        &[0x40, 0x02, 0, 1, 0xd1][..], // delta 13 without its byte
        &[0x40, 0x02, 0, 1, 0xf0][..], // delta 15
        &[0x40, 0x02, 0, 1, 0xff][..], // payload marker, no payload
        &[0x80, 0x02, 0, 1][..],       // version 2
    ] {
        assert!(Message::parse(lie).is_err(), "{lie:?}");
    }
}
