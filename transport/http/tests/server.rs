//! Both sides against a real HTTP server on a loopback socket: axum,
//! standing on `telemark-server` over a memory store, acknowledging after
//! the commit. The device side runs over an embedded-nal-async adapter on
//! tokio sockets (the code path the firmware runs on embassy-net); the
//! host side on reqwest, over TLS with a client certificate too. curl,
//! which telemark did not write, posts a captured frame and gets an
//! acknowledgement the device accepts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::net::SocketAddr;

use telemark_core::store::RecordStore;
use telemark_core::time::{Duration, Instant};
use telemark_core::transport::AsyncTransport;
use telemark_http::host::{HostConfig, HostLink};
use telemark_http::{exchange, Config, HttpLink, LinkError};
use telemark_transport_testkit::http::{Scripted, Tcp, TestServer};
use telemark_transport_testkit::pki::Pki;
use telemark_transport_testkit::{
    assert_stored_once, captured_frame, engine, free_port, held_off, run_until, Boiler,
};

fn buffer() -> Vec<u8> {
    vec![0u8; 1024]
}

#[tokio::test]
async fn records_reach_the_server_and_acks_free_them() {
    let server = TestServer::start().await;
    let endpoints = [server.addr];
    let mut buf = buffer();
    let mut link = HttpLink::new(&Tcp, Config::new("localhost", &endpoints), &mut buf);
    let mut engine = engine();
    let mut boiler = Boiler::new(1);
    let until = Instant::from_millis(4 * 3_600_000);
    run_until(&mut engine, &mut link, &mut boiler, until).await;
    link.power(false).await.unwrap();
    let sampled = assert_stored_once(&server.store().1, &engine);
    assert!(sampled >= 4 * 60, "{sampled} readings in 4 hours");
    let c = link.counters();
    assert_eq!(c.answered, c.posts, "{c:?}");
    assert_eq!(c.failed + c.busy + c.refused + c.rejected, 0, "{c:?}");
    // One connection per session, kept alive for its posts.
    assert!(c.connects >= 1 && c.connects <= c.posts, "{c:?}");
    assert!(!link.is_connected());
}

#[tokio::test]
async fn a_busy_server_holds_the_device_off_for_its_retry_after() {
    let server = TestServer::start().await;
    server.then_answer(Scripted::Busy("600"));
    let endpoints = [server.addr];
    let mut buf = buffer();
    let mut link = HttpLink::new(&Tcp, Config::new("localhost", &endpoints), &mut buf);
    let mut engine = engine();
    let mut boiler = Boiler::new(2);
    // The boot report goes at once and meets the 429.
    let waited = held_off(
        &mut engine,
        &mut link,
        &mut boiler,
        |l| l.counters().busy,
        |l| l.counters().answered,
    )
    .await;
    assert!(
        waited >= Duration::from_secs(600),
        "posted again after {} s",
        waited.as_millis() / 1000
    );
    assert_eq!(engine.uplink().counters().failed_sessions, 1);
}

#[tokio::test]
async fn an_unauthorized_device_gets_its_own_error() {
    let server = TestServer::start().await;
    server.then_answer(Scripted::Unauthorized);
    let endpoints = [server.addr];
    let mut buf = buffer();
    let mut link = HttpLink::new(&Tcp, Config::new("localhost", &endpoints), &mut buf);
    link.power(true).await.unwrap();
    assert_eq!(
        link.send(b"frame").await,
        Err(LinkError::Refused { status: 401 })
    );
    assert_eq!(link.retry_after(), None);
    // Bytes that are no frame: the server refuses them as a frame.
    assert_eq!(
        link.send(b"frame").await,
        Err(LinkError::Rejected { status: 400 })
    );
    let c = link.counters();
    assert_eq!((c.refused, c.rejected, c.connects), (1, 1, 1), "{c:?}");
}

#[tokio::test]
async fn a_second_server_takes_over_from_one_that_is_away() {
    let server = TestServer::start().await;
    let away: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let endpoints = [away, server.addr];
    let mut buf = buffer();
    let mut link = HttpLink::new(&Tcp, Config::new("localhost", &endpoints), &mut buf);
    let mut engine = engine();
    let mut boiler = Boiler::new(3);
    let hour = Instant::from_millis(3_600_000);
    run_until(&mut engine, &mut link, &mut boiler, hour).await;
    assert_stored_once(&server.store().1, &engine);
    let c = link.counters();
    // The dead one was tried once; the live one kept thereafter.
    assert_eq!(c.connect_failures, 1, "{c:?}");
}

#[tokio::test]
async fn a_response_larger_than_the_buffer_is_dropped_and_the_link_recovers() {
    let server = TestServer::start().await;
    server.then_answer(Scripted::Oversized);
    let endpoints = [server.addr];
    let mut buf = buffer();
    let mut link = HttpLink::new(&Tcp, Config::new("localhost", &endpoints), &mut buf);
    let mut engine = engine();
    let mut boiler = Boiler::new(4);
    let hour = Instant::from_millis(3_600_000);
    run_until(&mut engine, &mut link, &mut boiler, hour).await;
    // The device did not hear the first acknowledgement: it sent the
    // records again, on a new connection, and the server stored them once.
    assert_stored_once(&server.store().1, &engine);
    let c = link.counters();
    assert_eq!(c.responses_dropped, 1, "{c:?}");
    assert_eq!(c.answered + 1, c.posts, "{c:?}");
}

#[tokio::test]
async fn a_host_link_posts_and_hears_the_acknowledgement() {
    let server = TestServer::start().await;
    let url = format!("http://{}{}", server.addr, exchange::PATH);
    let mut link = HostLink::new(HostConfig::new(vec![url])).unwrap();
    let mut engine = engine();
    let mut boiler = Boiler::new(5);
    let until = Instant::from_millis(2 * 3_600_000);
    run_until(&mut engine, &mut link, &mut boiler, until).await;
    assert_stored_once(&server.store().1, &engine);
    let c = link.counters();
    assert!(c.answered >= 2 && c.answered == c.posts, "{c:?}");
}

#[tokio::test]
async fn a_host_link_honours_retry_after_and_its_own_refusal() {
    let server = TestServer::start().await;
    server.then_answer(Scripted::Busy("90"));
    server.then_answer(Scripted::Unauthorized);
    let url = format!("http://{}{}", server.addr, exchange::PATH);
    let mut link = HostLink::new(HostConfig::new(vec![url])).unwrap();
    assert_eq!(
        link.send(b"x").await,
        Err(LinkError::Busy { retry_after_s: 90 })
    );
    assert_eq!(link.retry_after(), Some(Duration::from_secs(90)));
    assert_eq!(link.retry_after(), None);
    assert_eq!(
        link.send(b"x").await,
        Err(LinkError::Refused { status: 401 })
    );
}

#[tokio::test]
async fn curl_posts_a_captured_frame_and_gets_an_acknowledgement_the_device_takes() {
    let server = TestServer::start().await;
    let (mut engine, frame) = captured_frame().await;
    let dir = std::env::temp_dir().join(format!("telemark-http-curl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (request, answer) = (dir.join("frame.bin"), dir.join("response.bin"));
    std::fs::write(&request, &frame).unwrap();
    let out = tokio::process::Command::new("curl")
        .args([
            "--silent",
            "--show-error",
            "--fail",
            "--write-out",
            "%{http_code} %{content_type}",
        ])
        .args([
            "-H",
            "Content-Type: application/octet-stream",
            "--data-binary",
        ])
        .arg(format!("@{}", request.display()))
        .arg("-o")
        .arg(&answer)
        .arg(format!("http://{}{}", server.addr, exchange::PATH))
        .output()
        .await
        .expect("curl is missing: install it (Debian: apt-get install curl)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "200 application/octet-stream"
    );
    let mut response = std::fs::read(&answer).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let stored = server.store().1.records().len();
    assert!(stored >= 1);
    // The device opens the response: it is the acknowledgement of its frame.
    let before = engine.store().len();
    engine
        .on_frame(Instant::from_millis(1_000), &mut response)
        .expect("the device takes the acknowledgement");
    assert!(
        engine.store().len() < before,
        "the acknowledged records are freed"
    );
}

#[tokio::test]
async fn a_busy_server_answer_gives_a_default_wait_when_it_names_a_date() {
    assert_eq!(
        exchange::retry_after_seconds(b"Wed, 21 Oct 2026 07:28:00 GMT"),
        None
    );
    let server = TestServer::start().await;
    server.then_answer(Scripted::Busy("Wed, 21 Oct 2026 07:28:00 GMT"));
    let endpoints = [server.addr];
    let mut buf = buffer();
    let mut link = HttpLink::new(&Tcp, Config::new("localhost", &endpoints), &mut buf);
    link.power(true).await.unwrap();
    assert_eq!(
        link.send(b"x").await,
        Err(LinkError::Busy {
            retry_after_s: exchange::DEFAULT_RETRY_AFTER_S
        })
    );
}

#[tokio::test]
async fn a_host_link_posts_over_tls_with_its_client_certificate() {
    let pki = Pki::new("localhost", 257);
    let server = TestServer::start_tls(pki.server_config()).await;
    let url = format!("https://localhost:{}{}", server.addr.port(), exchange::PATH);
    let mut config = HostConfig::new(vec![url.clone()]);
    config.tls = Some(pki.device_config());
    let mut link = HostLink::new(config).unwrap();
    let mut engine = engine();
    let mut boiler = Boiler::new(7);
    run_until(
        &mut engine,
        &mut link,
        &mut boiler,
        Instant::from_millis(3_600_000),
    )
    .await;
    assert_stored_once(&server.store().1, &engine);
    assert!(link.counters().answered >= 1);
    // Without its certificate the device gets no further than the
    // handshake: the link is down, and nothing is stored.
    let mut config = HostConfig::new(vec![url]);
    config.tls = Some(pki.stranger_config());
    let mut stranger = HostLink::new(config).unwrap();
    let stored = server.store().1.records().len();
    assert_eq!(stranger.send(b"frame").await, Err(LinkError::Down));
    assert_eq!(server.store().1.records().len(), stored);
}
