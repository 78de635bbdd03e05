//! The `telemark-cloud` binary as users run it: started on free ports
//! with a data directory of its own, its devices provisioned through the
//! API, the real engine reporting through its embedded MQTT broker and its
//! HTTP ingest, what they stored read back through the API, bad requests
//! answered with problems, and SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::Path;
use std::process::Command;
use std::time::Duration as RealDuration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use telemark_core::store::{FullPolicy, RamStore};
use telemark_core::time::Instant;
use telemark_core::transport::AsyncTransport;
use telemark_core::wire::report::ResetReason;
use telemark_core::wire::seal::{Key, Sealing};
use telemark_core::wire::Epoch;
use telemark_qemu_app::device;
use telemark_transport_testkit::cloud::Cloud;
use telemark_transport_testkit::{next_frame, run_device, run_until, Boiler, Engine, MTU};

const TOKEN: &str = "test-admin-token";

/// A running service, and where it listens.
struct Service {
    cloud: Cloud,
    api: String,
    mqtt: (String, u16),
    coap: std::net::SocketAddr,
}

impl Service {
    fn start(test: &str) -> Service {
        Service::start_with(test, &[])
    }

    fn start_with(test: &str, flags: &[&str]) -> Service {
        let binary = Path::new(env!("CARGO_BIN_EXE_telemark-cloud"));
        let cloud = Cloud::start_with(binary, test, TOKEN, flags);
        let mqtt: std::net::SocketAddr = cloud.address("mqtt").parse().unwrap();
        Service {
            api: format!("http://{}", cloud.address("http")),
            mqtt: (mqtt.ip().to_string(), mqtt.port()),
            coap: cloud.address("coap").parse().unwrap(),
            cloud,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.api)
    }

    /// Stops it with SIGTERM; its standard error.
    fn terminate(self) -> String {
        self.cloud.terminate()
    }
}

fn client() -> reqwest::Client {
    // reqwest's rustls comes without a provider here (the HTTP link's
    // choice); the API is plain HTTP, but the client wants one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(RealDuration::from_secs(10))
        .build()
        .unwrap()
}

async fn call(method: reqwest::Method, url: &str, body: Option<Value>) -> (StatusCode, Value) {
    as_token(TOKEN, method, url, body).await
}

async fn get(url: &str) -> Value {
    let (status, v) = call(reqwest::Method::GET, url, None).await;
    assert_eq!(status, StatusCode::OK, "GET {url}: {v}");
    v
}

/// The service's `/metrics`, as text.
async fn metrics(service: &Service) -> String {
    client()
        .get(service.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Adds a device through the API; its engine, on a RAM store.
async fn provision(service: &Service, name: &str) -> (u64, Engine) {
    let (status, v) = call(
        reqwest::Method::POST,
        &service.url("/v1/devices"),
        Some(json!({ "name": name })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    assert_eq!(v["device"]["name"], name);
    engine_of(&v)
}

/// Runs `engine` over the MQTT `link` until device time `until`, a
/// boiler of `seed` feeding it; the boiler, with what it was told.
async fn run_mqtt(
    engine: &mut Engine,
    link: &mut telemark_mqtt::host::HostLink,
    seed: u64,
    until: Instant,
) -> Boiler {
    let mut boiler = Boiler::new(seed);
    run_device(
        engine,
        link,
        &mut boiler,
        until,
        |_| {},
        async |l| l.wait_input().await,
    )
    .await;
    boiler
}

/// The engine of the device an answer to `POST /v1/devices` made.
fn engine_of(v: &Value) -> (u64, Engine) {
    let id = v["device"]["id"].as_u64().unwrap();
    assert_eq!(
        v["keys_line"].as_str().unwrap().split(' ').next(),
        Some(id.to_string().as_str())
    );
    let key_id = v["key_id"].as_u64().unwrap() as u8;
    (id, engine_for(id, key_id, v["key"].as_str().unwrap()))
}

/// The engine of device `id` sealing with key `key_id` of hex `key`.
fn engine_for(id: u64, key_id: u8, key: &str) -> Engine {
    let boot = telemark_core::engine::Boot {
        reset_reason: ResetReason::PowerOn,
        epoch: Epoch(0xC10D),
        sealing: Sealing::key(key_id, Key::from_hex(key).unwrap()),
    };
    device(id, RamStore::new(FullPolicy::EvictOldest), boot).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_provisioned_through_the_api_reports_over_the_embedded_broker() {
    let service = Service::start_with("mqtt", &["--log-format", "json"]);
    let health = get(&service.url("/healthz")).await;
    assert_eq!(health["status"], "ok");
    let (id, mut engine) = provision(&service, "boiler-1").await;
    // A command waits for the device.
    let (status, v) = call(
        reqwest::Method::POST,
        &service.url(&format!("/v1/devices/{id}/commands")),
        Some(json!({"command": "set_output", "output": 1, "value": 1})),
    )
    .await;
    assert_eq!(
        (status, v["id"].as_u64(), v["state"].as_str()),
        (StatusCode::CREATED, Some(1), Some("queued"))
    );

    let mut config = telemark_mqtt::host::HostConfig::new(id, vec![service.mqtt.clone()]);
    config.mtu = MTU;
    let mut link = telemark_mqtt::host::HostLink::new(config).unwrap();
    let boiler = run_mqtt(
        &mut engine,
        &mut link,
        7,
        Instant::from_millis(2 * 3_600_000),
    )
    .await;
    let sampled = u64::from(engine.counters().sampled);
    assert!(sampled >= 2 * 60, "{sampled} readings in two hours");

    let d = get(&service.url(&format!("/v1/devices/{id}"))).await;
    assert_eq!(
        d["readings"].as_u64(),
        Some(sampled),
        "every reading stored once: {d}"
    );
    assert!(d["device"]["last_seen_ms"].as_i64().is_some());
    let now = telemark_cloud::unix_ms() as i64;
    let r = get(&service.url(&format!(
        "/v1/devices/{id}/readings?from={}&to={}",
        now - 86_400_000,
        now + 86_400_000
    )))
    .await;
    let readings = r["readings"].as_array().unwrap();
    assert_eq!(readings.len() as u64, sampled);
    assert!(readings
        .windows(2)
        .all(|w| w[0]["unix_ms"].as_i64() <= w[1]["unix_ms"].as_i64()));
    let flow = get(&service.url(&format!(
        "/v1/devices/{id}/readings?channel=1&from={}&to={}&points=10",
        now - 86_400_000,
        now + 86_400_000
    )))
    .await;
    let points = flow["points"].as_array().unwrap();
    assert!(!points.is_empty() && points.len() <= 10, "{flow}");
    assert!(points.iter().all(|p| p["channel"] == 1));
    let counted: u64 = points.iter().map(|p| p["count"].as_u64().unwrap()).sum();
    assert_eq!(
        counted as usize,
        readings.iter().filter(|r| r["channel"] == 1).count()
    );
    // The command reached the device and its result came back.
    assert_eq!(boiler.last_output, Some((1, 1)));
    let c = get(&service.url(&format!("/v1/devices/{id}/commands"))).await;
    assert_eq!(c["commands"][0]["state"], "answered", "{c}");
    assert_eq!(c["commands"][0]["result"]["status"], 0);
    let metrics = metrics(&service).await;
    assert!(
        metrics.contains(&format!("telemark_readings_total {sampled}")),
        "{metrics}"
    );
    assert!(metrics.contains("telemark_commit_seconds_count"));
    // The engine said what its channels measure when it started.
    let channels = get(&service.url(&format!("/v1/devices/{id}/channels"))).await;
    assert_eq!(
        channels["channels"],
        json!([
            {"channel": 1, "unit": "Celsius", "symbol": "°C", "kind": "scaled", "decimals": 2, "scale": 0.01},
            {"channel": 2, "unit": "Count", "symbol": "", "kind": "counter", "decimals": 0, "scale": 1.0},
        ]),
        "{channels}"
    );
    // Its health: the latest heartbeat, with its store depth.
    let health = get(&service.url(&format!("/v1/devices/{id}/health"))).await;
    assert_eq!(health["health"]["reset_reason"], "PowerOn", "{health}");
    assert!(health["health"]["queue_depth"].is_u64(), "{health}");
    assert!(
        health["health"]["sampled"].as_u64().unwrap() > 0,
        "{health}"
    );
    // A config for a channel it lacks, or decimals on its counter, is
    // refused at the API, as the device would refuse it.
    for (cbor, reason, config) in [
        // {0: 12, 12: [{0: 7, 1: 60}]}
        (
            "a2000c0c81a2000701183c",
            "no channel ch7",
            json!({"code": 4, "detail": 7}),
        ),
        // {0: 12, 12: [{0: 2, 2: 1}]}
        (
            "a2000c0c81a200020201",
            "config key 2 out of range",
            json!({"code": 5, "detail": 2}),
        ),
    ] {
        let (status, v) = call(
            reqwest::Method::PUT,
            &service.url(&format!("/v1/devices/{id}/config")),
            Some(json!({ "cbor": cbor })),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
        assert!(v["detail"].as_str().unwrap().contains(reason), "{v}");
        assert_eq!(v["config"], config, "{v}");
    }

    link.power(false).await.unwrap();
    // Its logs are a JSON object a line; the last says what it stored.
    let err = service.terminate();
    let logs: Vec<Value> = err
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let stopped = logs
        .iter()
        .rfind(|l| l["fields"]["message"] == "stopped")
        .unwrap_or_else(|| panic!("no stop in {err}"));
    assert_eq!(stopped["level"], "INFO", "{stopped}");
    assert_eq!(stopped["fields"]["readings"], json!(sampled), "{stopped}");
}

/// Runs `engine` over `link` for a device hour: every reading it took is
/// stored, once, as the API says.
async fn an_hour_is_stored<L: AsyncTransport>(
    service: &Service,
    id: u64,
    engine: &mut Engine,
    link: &mut L,
    seed: u64,
) {
    let mut boiler = Boiler::new(seed);
    run_until(engine, link, &mut boiler, Instant::from_millis(3_600_000)).await;
    let sampled = u64::from(engine.counters().sampled);
    assert!(sampled >= 60, "{sampled} readings in an hour");
    let d = get(&service.url(&format!("/v1/devices/{id}"))).await;
    assert_eq!(d["readings"].as_u64(), Some(sampled), "{d}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_reports_through_the_http_ingest() {
    let service = Service::start("http");
    let (id, mut engine) = provision(&service, "meter").await;
    let url = service.url(telemark_http::exchange::PATH);
    let mut link =
        telemark_http::host::HostLink::new(telemark_http::host::HostConfig::new(vec![url]))
            .unwrap();
    an_hour_is_stored(&service, id, &mut engine, &mut link, 8).await;
    // A new key goes down until the device uses it; each rotation takes
    // the next id.
    let rotate = service.url(&format!("/v1/devices/{id}/rotate"));
    let (status, v) = call(reqwest::Method::POST, &rotate, None).await;
    assert_eq!(
        (status, v["key_id"].as_u64()),
        (StatusCode::CREATED, Some(2)),
        "{v}"
    );
    assert_eq!(v["key"].as_str().unwrap().len(), 64);
    let (_, v) = call(reqwest::Method::POST, &rotate, None).await;
    assert_eq!(v["key_id"].as_u64(), Some(3), "{v}");
    // A frame of a revoked device is refused as from a device unknown.
    let (status, _) = call(
        reqwest::Method::POST,
        &service.url(&format!("/v1/devices/{id}/revoke")),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let frame = next_frame(&mut engine, Instant::from_millis(2 * 3_600_000));
    let refused = client()
        .post(service.url(telemark_http::exchange::PATH))
        .body(frame)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let listed = get(&service.url("/v1/devices")).await;
    assert!(
        listed["devices"][0]["revoked_ms"].as_i64().is_some(),
        "{listed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_reports_over_coap() {
    use telemark_coap::{CoapLink, Config};
    let service = Service::start("coap");
    let (id, mut engine) = provision(&service, "coap-meter").await;
    let mut buf = [0u8; 512];
    let udp = telemark_coap::host::Udp::connect(service.coap)
        .await
        .unwrap();
    let mut link = CoapLink::new(udp, Config::new(), &mut buf, 9);
    an_hour_is_stored(&service, id, &mut engine, &mut link, 9).await;
    // A device the service does not know is told so, and stores nothing.
    let (_, frame) = telemark_transport_testkit::captured_frame().await;
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut request = [0u8; 1024];
    let mut w = telemark_coap::message::Writer::new(
        &mut request,
        telemark_coap::message::Type::Non,
        telemark_coap::message::Code::POST,
        1,
        &[7],
    )
    .unwrap();
    w.option(telemark_coap::message::option::URI_PATH, b"up")
        .unwrap();
    let n = w.payload(&frame).unwrap();
    socket.send_to(&request[..n], service.coap).await.unwrap();
    let mut answer = [0u8; 256];
    let (m, _) = tokio::time::timeout(RealDuration::from_secs(5), socket.recv_from(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let answer = telemark_coap::message::Message::parse(&answer[..m]).unwrap();
    assert_eq!(answer.code, telemark_coap::message::Code::UNAUTHORIZED);
}

/// A device silent for two report intervals (of 1 s here) goes offline,
/// with an event and a ping queued; its next frame brings it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_device_goes_offline_is_pinged_and_recovers() {
    let service = Service::start_with(
        "silent",
        &["--report-interval", "1", "--silent-intervals", "2"],
    );
    let (id, mut engine) = provision(&service, "quiet").await;
    let device = service.url(&format!("/v1/devices/{id}"));
    assert_eq!(get(&device).await["device"]["state"], "unseen");
    let post = |frame: Vec<u8>| {
        client()
            .post(service.url(telemark_http::exchange::PATH))
            .body(frame)
            .send()
    };
    let answer = post(next_frame(&mut engine, Instant::from_millis(1_000)))
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(get(&device).await["device"]["state"], "online");
    let mut seen = Value::Null;
    for _ in 0..100 {
        seen = get(&device).await;
        if seen["device"]["state"] == "offline" {
            break;
        }
        tokio::time::sleep(RealDuration::from_millis(100)).await;
    }
    assert_eq!(seen["device"]["state"], "offline", "{seen}");
    assert!(seen["device"]["offline_ms"].as_i64().is_some(), "{seen}");
    let events = get(&service.url(&format!("/v1/devices/{id}/events"))).await;
    assert_eq!(events["events"][0]["kind"], "offline", "{events}");
    let commands = get(&service.url(&format!("/v1/devices/{id}/commands"))).await;
    assert_eq!(commands["commands"][0]["command"], "ping", "{commands}");
    let answer = post(next_frame(&mut engine, Instant::from_millis(60_000)))
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let after = get(&device).await;
    assert_eq!(after["device"]["state"], "online", "{after}");
    let events = get(&service.url(&format!("/v1/devices/{id}/events"))).await;
    let kinds: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds.get(..2),
        Some(&["recovered", "offline"][..]),
        "{events}"
    );
    service.terminate();
}

/// A webhook is posted each notification, signed, and retried until it
/// takes it: here an offline device, refused once with a 500; both
/// attempts are in the delivery log. The broker has it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_is_posted_signed_notifications_until_it_takes_them() {
    use std::sync::{Arc, Mutex};
    type Posts = Arc<Mutex<Vec<(axum::http::HeaderMap, String)>>>;
    let posts: Posts = Arc::default();
    let app = axum::Router::new()
        .route(
            "/hook",
            axum::routing::post(
                |axum::extract::State(posts): axum::extract::State<Posts>,
                 headers: axum::http::HeaderMap,
                 body: String| async move {
                    let mut all = posts.lock().unwrap();
                    all.push((headers, body));
                    // The first attempt fails: it must come again.
                    if all.len() == 1 {
                        StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        StatusCode::NO_CONTENT
                    }
                },
            ),
        )
        .with_state(Arc::clone(&posts));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    const SECRET: &str = "a webhook secret for the test";
    // Silent past two report intervals of 1 s: offline.
    let service = Service::start_with(
        "webhook",
        &[
            "--webhook",
            &hook,
            "--webhook-secret",
            SECRET,
            "--report-interval",
            "1",
            "--silent-intervals",
            "2",
            "--mqtt-notifications",
        ],
    );
    let (host, port) = service.mqtt.clone();
    let (listener, mut events) =
        rumqttc::v5::AsyncClient::new(rumqttc::v5::MqttOptions::new("listener", host, port), 16);
    listener
        .subscribe(
            "telemark/v1/+/notifications",
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        )
        .await
        .unwrap();
    let heard = tokio::spawn(async move {
        loop {
            if let Ok(rumqttc::v5::Event::Incoming(rumqttc::v5::mqttbytes::v5::Packet::Publish(
                p,
            ))) = events.poll().await
            {
                return (
                    String::from_utf8_lossy(&p.topic).to_string(),
                    p.payload.to_vec(),
                );
            }
        }
    });
    let (id, mut engine) = provision(&service, "hooked").await;
    let answer = client()
        .post(service.url(telemark_http::exchange::PATH))
        .body(next_frame(&mut engine, Instant::from_millis(1_000)))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    for _ in 0..100 {
        if posts.lock().unwrap().len() >= 2 {
            break;
        }
        tokio::time::sleep(RealDuration::from_millis(100)).await;
    }
    let posts = posts.lock().unwrap().clone();
    assert!(posts.len() >= 2, "{posts:?}");
    let header = |i: usize, name: &str| posts[i].0[name].to_str().unwrap().to_string();
    assert_eq!(posts[0].1, posts[1].1, "the same notification again");
    assert_eq!(
        header(0, "x-telemark-delivery"),
        header(1, "x-telemark-delivery")
    );
    let body: Value = serde_json::from_str(&posts[1].1).unwrap();
    assert_eq!(
        (body["type"].as_str(), body["device"].as_u64()),
        (Some("offline"), Some(id))
    );
    for (i, (_, text)) in posts.iter().enumerate().take(2) {
        let timestamp: u64 = header(i, "x-telemark-timestamp").parse().unwrap();
        assert_eq!(
            header(i, "x-telemark-signature"),
            telemark_cloud::notify::signature(SECRET.as_bytes(), timestamp, text.as_bytes())
        );
    }
    let (topic, payload) = tokio::time::timeout(RealDuration::from_secs(10), heard)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(topic, format!("telemark/v1/{id}/notifications"));
    assert_eq!(
        payload,
        posts[1].1.as_bytes(),
        "the same notification on the broker"
    );
    let log = get(&service.url("/v1/deliveries")).await;
    let attempts: Vec<(u64, bool, Option<u64>)> = log["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["sink"].as_str().unwrap().starts_with("webhook "))
        .map(|d| {
            (
                d["attempt"].as_u64().unwrap(),
                d["delivered"].as_bool().unwrap(),
                d["status"].as_u64(),
            )
        })
        .collect();
    assert_eq!(
        attempts.get(..2),
        Some(&[(2, true, Some(204)), (1, false, Some(500))][..]),
        "{log}"
    );
    service.terminate();
}

/// Rules from the config file and through the API, for devices the
/// service knows; a rule that makes no sense is refused with its reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_come_from_the_config_file_and_the_api() {
    let config = std::env::temp_dir().join(format!("telemark-rules-{}.toml", std::process::id()));
    std::fs::write(
        &config,
        "[[rule]]\nname = \"boiler-hot\"\n\
         when = { device = 257, channel = 1, above = 85.0, for_s = 300 }\n\
         then = { device = 258, command = \"set_output\", output = 2, value = 0 }\n",
    )
    .unwrap();
    let key = "ab".repeat(32);
    let service = Service::start_with(
        "rules",
        &[
            "--config",
            config.to_str().unwrap(),
            "--key",
            &format!("257:1:{key}"),
            "--key",
            &format!("258:1:{key}"),
        ],
    );
    let rules = get(&service.url("/v1/rules")).await;
    assert_eq!(rules["rules"][0]["name"], "boiler-hot", "{rules}");
    assert_eq!(rules["rules"][0]["when"]["above"], 85.0, "{rules}");
    let url = service.url("/v1/rules");
    let cold = json!({
        "name": "boiler-cold",
        "when": {"device": 257, "channel": 1, "below": 5.0, "for_s": 600},
        "then": {"device": 257, "command": "reboot"},
    });
    let (status, made) = call(reqwest::Method::POST, &url, Some(cold)).await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    let both = json!({
        "name": "confused",
        "when": {"device": 257, "channel": 1, "above": 5.0, "below": 1.0, "for_s": 0},
        "then": {"device": 257, "command": "ping"},
    });
    let (status, problem) = call(reqwest::Method::POST, &url, Some(both)).await;
    assert!(status.is_client_error(), "{status} {problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("one of above or below"),
        "{problem}"
    );
    let stranger = json!({
        "name": "stranger",
        "when": {"device": 999, "channel": 1, "above": 5.0, "for_s": 0},
        "then": {"device": 257, "command": "ping"},
    });
    let (status, _) = call(reqwest::Method::POST, &url, Some(stranger)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let id = made["id"].as_i64().unwrap();
    let gone = service.url(&format!("/v1/rules/{id}"));
    assert_eq!(
        call(reqwest::Method::DELETE, &gone, None).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        call(reqwest::Method::DELETE, &gone, None).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(get(&url).await["rules"].as_array().unwrap().len(), 1);
    service.terminate();
    let _ = std::fs::remove_file(config);
}

/// A device over its rate is answered 429 with Retry-After and counted,
/// and served again once its bucket fills; the service answers meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_floods_is_throttled_and_counted() {
    let service = Service::start_with("flood", &["--device-rate", "1", "--device-burst", "3"]);
    let (_, mut engine) = provision(&service, "chatty").await;
    let post = |frame: Vec<u8>| {
        client()
            .post(service.url(telemark_http::exchange::PATH))
            .body(frame)
            .send()
    };
    let mut statuses = Vec::new();
    for k in 0..3u64 {
        let now = Instant::from_millis(1_000 + k);
        let answer = post(next_frame(&mut engine, now)).await.unwrap();
        statuses.push(answer.status().as_u16());
        let mut response = answer.bytes().await.unwrap().to_vec();
        assert!(engine.on_frame(now, &mut response).is_ok());
    }
    // The bucket is empty: this frame, sent again and again, is not taken.
    let frame = next_frame(&mut engine, Instant::from_millis(2_000));
    let mut retry_after = None;
    for _ in 0..3 {
        let answer = post(frame.clone()).await.unwrap();
        statuses.push(answer.status().as_u16());
        retry_after = answer.headers().get("retry-after").cloned();
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429, 429]);
    assert_eq!(retry_after.unwrap().to_str().unwrap(), "1");
    let health = client().get(service.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let metrics = metrics(&service).await;
    let throttled = statuses.iter().filter(|&&s| s == 429).count();
    assert!(
        metrics.contains(&format!("telemark_frames_throttled_total {throttled}")),
        "{metrics}"
    );
    tokio::time::sleep(RealDuration::from_millis(1_100)).await;
    let answer = post(frame).await.unwrap();
    assert_eq!(
        answer.status(),
        StatusCode::OK,
        "a token again after a second"
    );
    service.terminate();
}

/// `/openapi.json` documents the routes: each documented operation is
/// routed (not the fallback's 404, not 405).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_is_served_and_names_routed_operations() {
    let service = Service::start("openapi");
    let doc = client()
        .get(service.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(doc["openapi"], "3.0.3");
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 20, "{}", paths.len());
    for (path, ops) in paths {
        for method in ops.as_object().unwrap().keys() {
            let url = service.url(&path.replace("{id}", "1"));
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let answer = client()
                .request(method.clone(), &url)
                .bearer_auth(TOKEN)
                .send()
                .await
                .unwrap();
            let status = answer.status();
            let text = answer.text().await.unwrap();
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            assert!(
                !text.contains("no such resource"),
                "{method} {path}: not routed"
            );
        }
    }
    service.terminate();
}

/// A service given a certificate (and `flags`), with its PKI, an HTTPS
/// client that trusts it, the API's base URL and the folder of its PEM
/// files.
struct Secure {
    pki: telemark_transport_testkit::pki::Pki,
    service: Service,
    https: reqwest::Client,
    base: String,
    dir: std::path::PathBuf,
}

impl Secure {
    fn start(test: &str, flags: &[&str]) -> Secure {
        let pki = telemark_transport_testkit::pki::Pki::new("127.0.0.1", 1);
        let dir = std::env::temp_dir().join(format!("telemark-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, &pki.server_pem).unwrap();
        std::fs::write(&key, &pki.server_key_pem).unwrap();
        let mut all = vec![
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ];
        all.extend_from_slice(flags);
        let service = Service::start_with(test, &all);
        let base = format!("https://{}", service.cloud.address("http"));
        let https = reqwest::Client::builder()
            .tls_backend_preconfigured(pki.stranger_config())
            .build()
            .unwrap();
        Secure {
            pki,
            service,
            https,
            base,
            dir,
        }
    }

    /// A device created over HTTPS, and its engine.
    async fn provision(&self, name: &str) -> (u64, Engine) {
        let made = self
            .https
            .post(format!("{}/v1/devices", self.base))
            .bearer_auth(TOKEN)
            .json(&json!({ "name": name }))
            .send()
            .await
            .unwrap();
        assert_eq!(made.status(), StatusCode::CREATED);
        engine_of(&made.json::<Value>().await.unwrap())
    }

    fn stop(self) {
        self.service.terminate();
        let _ = std::fs::remove_dir_all(self.dir);
    }
}

/// Given a certificate, the API and the HTTP ingest are served over
/// HTTPS only: a device posts through telemark-http's TLS link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_and_the_ingest_serve_https_with_a_certificate() {
    let secure = Secure::start("tls", &[]);
    let (pki, service, https, base) = (&secure.pki, &secure.service, &secure.https, &secure.base);
    let (id, mut engine) = secure.provision("secure").await;
    let mut config = telemark_http::host::HostConfig::new(vec![format!("{base}/v1/up")]);
    config.tls = Some(pki.stranger_config());
    let mut link = telemark_http::host::HostLink::new(config).unwrap();
    let mut boiler = Boiler::new(3);
    run_until(
        &mut engine,
        &mut link,
        &mut boiler,
        Instant::from_millis(3_600_000),
    )
    .await;
    let d: Value = https
        .get(format!("{base}/v1/devices/{id}"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        d["readings"].as_u64(),
        Some(u64::from(engine.counters().sampled)),
        "{d}"
    );
    let plain = client().get(service.url("/healthz")).send().await;
    assert!(
        plain.map_or(true, |r| !r.status().is_success()),
        "plain HTTP is not served"
    );
    secure.stop();
}

/// Given a certificate, a serial line it listens for takes TLS only (a
/// bridge such as ser2net carries the UART over it): a frame sent over TLS
/// is answered after its commit and stored; the same line spoken in plain
/// TCP gets no answer, and nothing of it is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serial_line_takes_tls_with_a_certificate() {
    use std::io::{Read, Write};
    let secure = Secure::start("line-tls", &["--line", "127.0.0.1:0"]);
    let (pki, https, base) = (&secure.pki, &secure.https, &secure.base);
    let line = secure.service.cloud.lines().pop().expect("a line bound");
    let (id, mut engine) = secure.provision("on-a-bridge").await;
    let readings = || {
        let (https, url) = (https.clone(), format!("{base}/v1/devices/{id}"));
        async move {
            let d: Value = https
                .get(url)
                .bearer_auth(TOKEN)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            d["readings"].as_u64().unwrap()
        }
    };

    let client = std::sync::Arc::new(pki.stranger_config());
    let (line_addr, tls_client) = (line.clone(), client.clone());
    let (engine_back, answered) = tokio::task::spawn_blocking(move || {
        let now = Instant::from_millis(1_000);
        let frame = next_frame(&mut engine, now);
        let mut framed = vec![0u8; frame.len() * 2 + 8];
        let n = telemark_serial::encode(&frame, &mut framed).unwrap();
        let name = "127.0.0.1".try_into().unwrap();
        let tls = rustls::ClientConnection::new(tls_client, name).unwrap();
        let tcp = std::net::TcpStream::connect(&line_addr).unwrap();
        tcp.set_read_timeout(Some(RealDuration::from_secs(10)))
            .unwrap();
        let mut stream = rustls::StreamOwned::new(tls, tcp);
        stream.write_all(&framed[..n]).unwrap();
        let mut rx: telemark_serial::Deframer<1024> = telemark_serial::Deframer::new();
        let mut byte = [0u8; 1];
        let mut answer = loop {
            assert_eq!(stream.read(&mut byte).unwrap(), 1, "the line closed");
            if let Some(Ok(f)) = rx.push(byte[0]) {
                break f.to_vec();
            }
        };
        let answered = engine.on_frame(now, &mut answer).is_ok();
        (engine, answered)
    })
    .await
    .unwrap();
    assert!(answered, "the service's answer over TLS opens");
    let stored = readings().await;
    assert!(stored > 0, "nothing stored from the TLS line");

    // Plain TCP: the handshake fails at the first bytes, and the line is
    // closed with nothing stored.
    let mut engine = engine_back;
    tokio::task::spawn_blocking(move || {
        let frame = next_frame(&mut engine, Instant::from_millis(2_000));
        let mut framed = vec![0u8; frame.len() * 2 + 8];
        let n = telemark_serial::encode(&frame, &mut framed).unwrap();
        let mut tcp = std::net::TcpStream::connect(&line).unwrap();
        tcp.set_read_timeout(Some(RealDuration::from_secs(10)))
            .unwrap();
        tcp.write_all(&framed[..n]).unwrap();
        let mut rest = Vec::new();
        let _ = tcp.read_to_end(&mut rest);
        let mut rx: telemark_serial::Deframer<1024> = telemark_serial::Deframer::new();
        assert!(
            !rest.iter().any(|&b| matches!(rx.push(b), Some(Ok(_)))),
            "a plain line got an answer"
        );
    })
    .await
    .unwrap();
    assert_eq!(readings().await, stored, "a plain frame was stored");
    secure.stop();
}

/// Devices reach the embedded broker over TLS with client certificates:
/// a device's frames are stored; one whose certificate names another
/// device is cut off at its first PUBLISH to that device's topic, and
/// nothing of it is stored; one with no certificate gets no further than
/// the handshake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_reach_the_broker_over_tls_as_their_certificates_say() {
    use rumqttc::{TlsConfiguration, Transport};
    use telemark_mqtt::host::{HostConfig, HostLink};
    let pki = telemark_transport_testkit::pki::Pki::new("127.0.0.1", 257);
    let dir = std::env::temp_dir().join(format!("telemark-mqtt-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, pem) in [
        ("ca.pem", &pki.ca_pem),
        ("server.pem", &pki.server_pem),
        ("server.key", &pki.server_key_pem),
    ] {
        std::fs::write(dir.join(name), pem).unwrap();
    }
    let file = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let (own, other) = ("ab".repeat(32), "cd".repeat(32));
    let service = Service::start_with(
        "mqtt-tls",
        &[
            "--mqtt-tls-cert",
            &file("server.pem"),
            "--mqtt-tls-key",
            &file("server.key"),
            "--mqtt-client-ca",
            &file("ca.pem"),
            "--key",
            &format!("257:1:{own}"),
            "--key",
            &format!("258:1:{other}"),
        ],
    );
    let tls =
        |config| Transport::tls_with_config(TlsConfiguration::Rustls(std::sync::Arc::new(config)));
    let link_as = |device: u64, transport: Transport| {
        let mut config = HostConfig::new(device, vec![service.mqtt.clone()]);
        config.transport = transport;
        config.mtu = MTU;
        HostLink::new(config).unwrap()
    };
    let readings = |id: u64| {
        let url = service.url(&format!("/v1/devices/{id}"));
        async move { get(&url).await["readings"].as_u64().unwrap() }
    };
    // Device 257 with its own certificate.
    let mut engine = engine_for(257, 1, &own);
    let mut link = link_as(257, tls(pki.device_config()));
    run_mqtt(&mut engine, &mut link, 4, Instant::from_millis(3_600_000)).await;
    link.power(false).await.unwrap();
    assert_eq!(readings(257).await, u64::from(engine.counters().sampled));
    assert!(engine.counters().sampled >= 60);
    // Device 258's frames under device 257's certificate.
    let mut impostor = engine_for(258, 1, &other);
    let mut link = link_as(258, tls(pki.device_config()));
    let mut boiler = Boiler::new(5);
    let (mut now, started) = (Instant::ZERO, std::time::Instant::now());
    while link.counters().drops == 0 && started.elapsed() < RealDuration::from_secs(20) {
        let wake =
            telemark_core::transport::step_async(&mut impostor, &mut link, now, &mut boiler).await;
        now = wake.max(now + telemark_core::time::Duration::from_secs(1));
        tokio::time::sleep(RealDuration::from_millis(5)).await;
    }
    assert_eq!(readings(258).await, 0, "frames under another's certificate");
    assert!(link.counters().drops >= 1, "{:?}", link.counters());
    // Device 257 subscribing to device 258's downlink: cut off too.
    let mut options = rumqttc::v5::MqttOptions::new("eavesdropper", "127.0.0.1", service.mqtt.1);
    options.set_transport(tls(pki.device_config()));
    let (client, mut events) = rumqttc::v5::AsyncClient::new(options, 8);
    client
        .subscribe(
            "telemark/v1/258/down",
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        )
        .await
        .unwrap();
    let cut = tokio::time::timeout(RealDuration::from_secs(10), async {
        let mut connected = false;
        loop {
            match events.poll().await {
                Ok(rumqttc::v5::Event::Incoming(rumqttc::v5::mqttbytes::v5::Packet::ConnAck(
                    _,
                ))) => connected = true,
                Ok(rumqttc::v5::Event::Incoming(rumqttc::v5::mqttbytes::v5::Packet::SubAck(_))) => {
                    return Err("subscribed to another device's downlink");
                }
                Ok(_) => {}
                Err(_) if connected => return Ok(()),
                Err(_) => return Err("no connection at all"),
            }
        }
    })
    .await;
    assert_eq!(cut, Ok(Ok(())));
    // No certificate: no connection.
    let mut stranger = link_as(258, tls(pki.stranger_config()));
    assert!(stranger.power(true).await.is_err());
    service.terminate();
    let _ = std::fs::remove_dir_all(dir);
}

/// Every bad request is a problem+json with a detail; the service keeps
/// serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_a_clear_problem() {
    let service = Service::start("bad");
    let (id, _) = provision(&service, "valve").await;
    let c = client();
    let expect = |status: StatusCode, what: &'static str| {
        move |r: reqwest::Response| async move {
            assert_eq!(r.status(), status, "{what}");
            let kind = r.headers()[reqwest::header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .to_string();
            assert_eq!(kind, "application/problem+json", "{what}");
            let v: Value = r.json().await.unwrap();
            assert_eq!(
                v["status"].as_u64(),
                Some(u64::from(status.as_u16())),
                "{what}"
            );
            assert!(!v["detail"].as_str().unwrap().is_empty(), "{what}");
            v
        }
    };
    let devices = service.url("/v1/devices");
    expect(StatusCode::UNAUTHORIZED, "no token")(c.get(&devices).send().await.unwrap()).await;
    expect(StatusCode::UNAUTHORIZED, "a wrong token")(
        c.get(&devices).bearer_auth("nope").send().await.unwrap(),
    )
    .await;
    let post = |body: &'static str| {
        c.post(&devices)
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(body)
    };
    expect(StatusCode::BAD_REQUEST, "not JSON")(post("{\"name\":").send().await.unwrap()).await;
    expect(StatusCode::UNPROCESSABLE_ENTITY, "an unknown field")(
        post("{\"name\":\"x\",\"admin\":true}")
            .send()
            .await
            .unwrap(),
    )
    .await;
    expect(StatusCode::UNPROCESSABLE_ENTITY, "an empty name")(
        post("{\"name\":\" \"}").send().await.unwrap(),
    )
    .await;
    let v = expect(StatusCode::CONFLICT, "a name taken")(
        post("{\"name\":\"valve\"}").send().await.unwrap(),
    )
    .await;
    assert!(v["detail"].as_str().unwrap().contains("valve"));
    let huge = format!("{{\"name\":\"{}\"}}", "x".repeat(100_000));
    expect(StatusCode::PAYLOAD_TOO_LARGE, "a huge body")(
        c.post(&devices)
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(huge)
            .send()
            .await
            .unwrap(),
    )
    .await;
    let get = |path: String| c.get(service.url(&path)).bearer_auth(TOKEN).send();
    expect(StatusCode::BAD_REQUEST, "a bad id")(get("/v1/devices/abc".into()).await.unwrap()).await;
    expect(StatusCode::NOT_FOUND, "an unknown device")(
        get("/v1/devices/12345".into()).await.unwrap(),
    )
    .await;
    expect(StatusCode::BAD_REQUEST, "from after to")(
        get(format!("/v1/devices/{id}/readings?from=10&to=5"))
            .await
            .unwrap(),
    )
    .await;
    expect(StatusCode::BAD_REQUEST, "points=0")(
        get(format!("/v1/devices/{id}/readings?points=0"))
            .await
            .unwrap(),
    )
    .await;
    expect(StatusCode::BAD_REQUEST, "a channel out of range")(
        get(format!("/v1/devices/{id}/readings?channel=70000"))
            .await
            .unwrap(),
    )
    .await;
    expect(StatusCode::BAD_REQUEST, "an unknown query key")(
        get(format!("/v1/devices/{id}/readings?chanel=1"))
            .await
            .unwrap(),
    )
    .await;
    let command = |body: Value| {
        c.post(service.url(&format!("/v1/devices/{id}/commands")))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
    };
    expect(StatusCode::BAD_REQUEST, "an unknown command")(
        command(json!({"command": "explode"})).await.unwrap(),
    )
    .await;
    expect(StatusCode::BAD_REQUEST, "a command that expires at once")(
        command(json!({"command": "ping", "ttl_s": 0}))
            .await
            .unwrap(),
    )
    .await;
    let queued = command(json!({"command": "flush", "ttl_s": 600}))
        .await
        .unwrap();
    assert_eq!(queued.status(), StatusCode::CREATED);
    let queued: Value = queued.json().await.unwrap();
    assert_eq!(
        queued["expires_ms"].as_i64().unwrap() - queued["queued_ms"].as_i64().unwrap(),
        600_000,
        "{queued}"
    );
    expect(StatusCode::BAD_REQUEST, "set_output without a value")(
        command(json!({"command": "set_output", "output": 1}))
            .await
            .unwrap(),
    )
    .await;
    expect(StatusCode::UNPROCESSABLE_ENTITY, "an output out of range")(
        command(json!({"command": "set_output", "output": 300, "value": 1}))
            .await
            .unwrap(),
    )
    .await;
    let config = |body: Value| {
        c.put(service.url(&format!("/v1/devices/{id}/config")))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
    };
    expect(StatusCode::BAD_REQUEST, "config not hex")(config(json!({"cbor": "zz"})).await.unwrap())
        .await;
    let v = expect(
        StatusCode::UNPROCESSABLE_ENTITY,
        "config the device refuses",
    )(config(json!({"cbor": "a10063"})).await.unwrap())
    .await;
    assert!(v["detail"].as_str().unwrap().contains("refuse"), "{v}");
    // {0: 5, 10: 2}: well formed, but there is no store policy 2. The
    // device's own validator refuses it, with the code and key its config
    // report would carry.
    let v = expect(
        StatusCode::UNPROCESSABLE_ENTITY,
        "a setting the device refuses",
    )(config(json!({"cbor": "a200050a02"})).await.unwrap())
    .await;
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("config key 10 out of range"),
        "{v}"
    );
    assert_eq!(v["config"], json!({"code": 5, "detail": 10}), "{v}");
    expect(StatusCode::BAD_REQUEST, "a frame that is none")(
        c.post(service.url(telemark_http::exchange::PATH))
            .body("junk")
            .send()
            .await
            .unwrap(),
    )
    .await;
    expect(StatusCode::NOT_FOUND, "rotating a device that is not")(
        c.post(service.url("/v1/devices/12345/rotate"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap(),
    )
    .await;
    expect(StatusCode::NOT_FOUND, "no such path")(get("/v2/nothing".into()).await.unwrap()).await;
    // Still serving.
    let (status, v) = call(
        reqwest::Method::PUT,
        &service.url(&format!("/v1/devices/{id}/config")),
        Some(json!({"cbor": "a2000401190384"})),
    )
    .await;
    assert_eq!(
        (status, v["version"].as_u64()),
        (StatusCode::OK, Some(4)),
        "{v}"
    );
    let (status, v) = call(
        reqwest::Method::GET,
        &service.url(&format!("/v1/devices/{id}/config")),
        None,
    )
    .await;
    assert_eq!(
        (status, v["state"].as_str()),
        (StatusCode::OK, Some("pending")),
        "{v}"
    );
}

/// `device add` provisions before the service starts; the service serves
/// the device with the key the command printed.
#[test]
fn device_add_prints_what_the_firmware_needs() {
    let data = std::env::temp_dir().join(format!("telemark-cloud-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_telemark-cloud"))
            .args(args)
            .arg("--data")
            .arg(&data)
            .output()
            .unwrap()
    };
    let added = run(&["device", "add", "--name", "boiler-7"]);
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    let v: Value = serde_json::from_slice(&added.stdout).unwrap();
    let id = v["id"].as_u64().unwrap();
    assert_eq!(v["key"].as_str().unwrap().len(), 64);
    assert_eq!(
        v["keys_line"],
        format!("{id} 1 {}", v["key"].as_str().unwrap())
    );
    let again = run(&["device", "add", "--name", "boiler-7"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("boiler-7"));
    let listed = run(&["device", "list"]);
    assert_eq!(
        String::from_utf8_lossy(&listed.stdout),
        format!("{id}\tboiler-7\tactive\n")
    );
    assert!(run(&["device", "revoke", &id.to_string()]).status.success());
    let listed = run(&["device", "list"]);
    assert!(String::from_utf8_lossy(&listed.stdout).contains("revoked"));
    let unknown = run(&["device", "frobnicate"]);
    assert_eq!(unknown.status.code(), Some(2));
    let _ = std::fs::remove_dir_all(&data);
}

/// A frame published on the topic of another device is refused and
/// counted, and stores nothing: the topic must name the frame's device.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_on_another_devices_topic_is_refused() {
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::{AsyncClient, MqttOptions};
    let service = Service::start("topic");
    let (a, mut engine) = provision(&service, "a").await;
    let (b, _) = provision(&service, "b").await;
    let frame = next_frame(&mut engine, Instant::from_millis(60_000));
    let (host, port) = service.mqtt.clone();
    let (client, mut events) = AsyncClient::new(MqttOptions::new("intruder", host, port), 16);
    let topics = telemark_mqtt::Topics::new("telemark", b).unwrap();
    client
        .publish(topics.up(), QoS::AtLeastOnce, false, frame.clone())
        .await
        .unwrap();
    let metric = |text: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix("telemark_wrong_device_total "))
            .and_then(|v| v.parse::<u64>().ok())
    };
    let mut counted = None;
    for _ in 0..100 {
        let _ = tokio::time::timeout(RealDuration::from_millis(50), events.poll()).await;
        let text = client_text(&service.url("/metrics")).await;
        counted = metric(&text);
        if counted == Some(1) {
            break;
        }
    }
    assert_eq!(counted, Some(1), "the frame was refused and counted");
    for id in [a, b] {
        let d = get(&service.url(&format!("/v1/devices/{id}"))).await;
        assert_eq!(d["readings"].as_u64(), Some(0), "{d}");
    }
    // On its own topic, the same frame is stored.
    let own = telemark_mqtt::Topics::new("telemark", a).unwrap();
    client
        .publish(own.up(), QoS::AtLeastOnce, false, frame)
        .await
        .unwrap();
    let mut stored = 0;
    for _ in 0..100 {
        let _ = tokio::time::timeout(RealDuration::from_millis(50), events.poll()).await;
        let d = get(&service.url(&format!("/v1/devices/{a}"))).await;
        stored = d["readings"].as_u64().unwrap_or(0);
        if stored > 0 {
            break;
        }
    }
    assert!(stored > 0, "the frame on its own topic is stored");
}

async fn client_text(url: &str) -> String {
    client()
        .get(url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Calls `method path` with `token`; the status and the JSON answer.
async fn as_token(
    token: &str,
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = client().request(method, url).bearer_auth(token);
    if let Some(b) = body {
        request = request.json(&b);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Tokens with roles, scoped to groups that nest: each sees and commands
/// its group's devices and no others, and does only what its role allows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scoped_token_sees_and_commands_its_group_and_no_other() {
    use reqwest::Method;
    let service = Service::start("access");
    let url = |p: &str| service.url(p);
    let root = |m: Method, p: &str, b: Option<Value>| {
        let u = url(p);
        async move { call(m, &u, b).await }
    };
    let (status, acme) = root(Method::POST, "/v1/groups", Some(json!({"name": "acme"}))).await;
    assert_eq!(status, StatusCode::CREATED, "{acme}");
    let acme = acme["id"].as_i64().unwrap();
    let (_, plant) = root(
        Method::POST,
        "/v1/groups",
        Some(json!({"name": "acme/plant-2", "parent": acme})),
    )
    .await;
    let plant = plant["id"].as_i64().unwrap();
    let (_, other) = root(Method::POST, "/v1/groups", Some(json!({"name": "other"}))).await;
    let other = other["id"].as_i64().unwrap();
    let (status, _) = root(
        Method::POST,
        "/v1/groups",
        Some(json!({"name": "orphan", "parent": 999})),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "a parent that is not");
    let (_, mine) = root(
        Method::POST,
        "/v1/devices",
        Some(json!({"name": "boiler", "group": plant})),
    )
    .await;
    let mine = mine["device"]["id"].as_u64().unwrap();
    let (_, theirs) = root(
        Method::POST,
        "/v1/devices",
        Some(json!({"name": "pump", "group": other})),
    )
    .await;
    let theirs = theirs["device"]["id"].as_u64().unwrap();

    let token = |role: &'static str, group: i64| {
        let url = url("/v1/tokens");
        async move {
            let (status, v) = call(
                Method::POST,
                &url,
                Some(json!({"name": format!("{role}@{group}"), "role": role, "group": group})),
            )
            .await;
            assert_eq!(status, StatusCode::CREATED, "{v}");
            assert!(v["token"].as_str().unwrap().starts_with("tm_"));
            (
                v["id"].as_i64().unwrap(),
                v["token"].as_str().unwrap().to_string(),
            )
        }
    };
    let (_, reader) = token("read", acme).await;
    let (operator_id, operator) = token("operate", acme).await;
    let (_, admin) = token("admin", plant).await;

    // A reader of acme sees the device of acme/plant-2, not the other.
    let (status, list) = as_token(&reader, Method::GET, &url("/v1/devices"), None).await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<u64> = list["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [mine]);
    let (_, groups) = as_token(&reader, Method::GET, &url("/v1/groups"), None).await;
    assert_eq!(
        groups["groups"].as_array().unwrap().len(),
        2,
        "acme and its plant: {groups}"
    );
    let ping = json!({"command": "ping"});
    let cases = [
        (
            &reader,
            Method::GET,
            format!("/v1/devices/{theirs}"),
            None,
            StatusCode::NOT_FOUND,
            "another group's device does not exist for a reader",
        ),
        (
            &reader,
            Method::GET,
            format!("/v1/devices/{theirs}/readings"),
            None,
            StatusCode::NOT_FOUND,
            "nor its readings",
        ),
        (
            &reader,
            Method::POST,
            format!("/v1/devices/{mine}/commands"),
            Some(ping.clone()),
            StatusCode::FORBIDDEN,
            "a reader sends no command",
        ),
        (
            &operator,
            Method::POST,
            format!("/v1/devices/{mine}/commands"),
            Some(ping.clone()),
            StatusCode::CREATED,
            "an operator commands its device",
        ),
        (
            &operator,
            Method::POST,
            format!("/v1/devices/{theirs}/commands"),
            Some(ping),
            StatusCode::NOT_FOUND,
            "not another group's",
        ),
        (
            &operator,
            Method::POST,
            "/v1/devices".into(),
            Some(json!({"name": "x"})),
            StatusCode::FORBIDDEN,
            "an operator adds no device",
        ),
        (
            &admin,
            Method::POST,
            "/v1/devices".into(),
            Some(json!({"name": "y", "group": other})),
            StatusCode::FORBIDDEN,
            "an admin of the plant adds nothing elsewhere",
        ),
        (
            &admin,
            Method::PUT,
            format!("/v1/devices/{mine}/group"),
            Some(json!({"group": other})),
            StatusCode::FORBIDDEN,
            "nor moves a device out",
        ),
        (
            &admin,
            Method::POST,
            "/v1/tokens".into(),
            Some(json!({"name": "z", "role": "admin"})),
            StatusCode::FORBIDDEN,
            "a scoped admin makes no token",
        ),
        (
            &admin,
            Method::POST,
            "/v1/groups".into(),
            Some(json!({"name": "z"})),
            StatusCode::FORBIDDEN,
            "nor a group",
        ),
    ];
    for (token, method, path, body, want, what) in cases {
        let (status, v) = as_token(token, method, &url(&path), body).await;
        assert_eq!(status, want, "{what}: {v}");
    }
    // An admin of the plant adds into it.
    let (status, v) = as_token(
        &admin,
        Method::POST,
        &url("/v1/devices"),
        Some(json!({"name": "valve"})),
    )
    .await;
    assert_eq!(
        (status, v["device"]["group"].as_i64()),
        (StatusCode::CREATED, Some(plant)),
        "{v}"
    );

    // The root moves the other device into acme: now the reader sees it.
    let (status, _) = root(
        Method::PUT,
        &format!("/v1/devices/{theirs}/group"),
        Some(json!({"group": acme})),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = as_token(
        &reader,
        Method::GET,
        &url(&format!("/v1/devices/{theirs}")),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    // Tokens are listed without their secrets; a revoked one opens nothing.
    let (_, listed) = root(Method::GET, "/v1/tokens", None).await;
    let listed = listed["tokens"].as_array().unwrap();
    assert_eq!(listed.len(), 3);
    assert!(listed
        .iter()
        .all(|t| t.get("token").is_none() && t.get("digest").is_none()));
    let (status, _) = root(Method::DELETE, &format!("/v1/tokens/{operator_id}"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = as_token(&operator, Method::GET, &url("/v1/devices"), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = root(Method::DELETE, "/v1/tokens/999", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = root(
        Method::POST,
        "/v1/tokens",
        Some(json!({"name": "q", "role": "superuser"})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "no such role");
}

/// A client that acts as Home Assistant: every message on its discovery
/// prefix and the devices' Home Assistant topics, with its retain flag,
/// as it arrives.
struct Watcher {
    client: rumqttc::v5::AsyncClient,
    seen: std::sync::Arc<std::sync::Mutex<Vec<(String, String, bool)>>>,
}

impl Watcher {
    async fn start(broker: &(String, u16), name: &str) -> Watcher {
        let filters = ["homeassistant/#", "telemark/v1/+/ha/#"];
        use rumqttc::v5::mqttbytes::v5::Packet;
        use rumqttc::v5::{Event, MqttOptions};
        let options = MqttOptions::new(name, broker.0.clone(), broker.1);
        let (client, mut events) = rumqttc::v5::AsyncClient::new(options, 64);
        for f in filters {
            client
                .subscribe(f, rumqttc::v5::mqttbytes::QoS::AtLeastOnce)
                .await
                .unwrap();
        }
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let into = seen.clone();
        tokio::spawn(async move {
            while let Ok(event) = events.poll().await {
                if let Event::Incoming(Packet::Publish(p)) = event {
                    let topic = String::from_utf8_lossy(&p.topic).into_owned();
                    let payload = String::from_utf8_lossy(&p.payload).into_owned();
                    into.lock().unwrap().push((topic, payload, p.retain));
                }
            }
        });
        Watcher { client, seen }
    }

    /// The payloads seen on `topic`, with their retain flags.
    fn on(&self, topic: &str) -> Vec<(String, bool)> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _, _)| t == topic)
            .map(|(_, p, r)| (p.clone(), *r))
            .collect()
    }

    /// Waits up to 10 s for `done` to hold of what was seen.
    async fn wait(&self, what: &str, done: impl Fn(&Watcher) -> bool) {
        for _ in 0..100 {
            if done(self) {
                return;
            }
            tokio::time::sleep(RealDuration::from_millis(100)).await;
        }
        panic!("{what}: seen {:#?}", self.seen.lock().unwrap());
    }
}

/// With `--home-assistant` a device's channels are announced for Home
/// Assistant's MQTT discovery, retained, with the classes and units of
/// what the device reported; its states and availability follow; Home
/// Assistant's birth message brings everything again; a revoked device's
/// entities are removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn home_assistant_discovers_the_devices_channels() {
    let service = Service::start_with("home-assistant", &["--home-assistant"]);
    let (id, mut engine) = provision(&service, "boiler-ha").await;
    let (status, v) = call(
        reqwest::Method::PUT,
        &service.url(&format!("/v1/devices/{id}/outputs")),
        Some(json!({"outputs": [{"output": 1, "name": "burner"}]})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    // A switch for the named output: Home Assistant turns it on before
    // the device is heard, and the command waits for it.
    let switch = format!("homeassistant/switch/telemark_{id}_out1/config");
    let switched = format!("telemark/v1/{id}/ha/output/1/state");
    let live = Watcher::start(&service.mqtt, "home-assistant-live").await;
    live.wait("the switch's config", |ha| !ha.on(&switch).is_empty())
        .await;
    let s: Value = serde_json::from_str(&live.on(&switch)[0].0).unwrap();
    assert_eq!(
        (&s["name"], &s["command_topic"], &s["state_topic"]),
        (
            &json!("burner"),
            &json!(format!("telemark/v1/{id}/ha/output/1/set")),
            &json!(switched)
        ),
        "{s}"
    );
    live.client
        .publish(
            format!("telemark/v1/{id}/ha/output/1/set"),
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            false,
            "ON",
        )
        .await
        .unwrap();
    let commands = service.url(&format!("/v1/devices/{id}/commands"));
    for _ in 0..100 {
        if get(&commands).await["commands"]
            .as_array()
            .is_some_and(|c| !c.is_empty())
        {
            break;
        }
        tokio::time::sleep(RealDuration::from_millis(100)).await;
    }
    assert!(
        live.on(&switched).is_empty(),
        "the switch followed the request, not the device"
    );

    let mut config = telemark_mqtt::host::HostConfig::new(id, vec![service.mqtt.clone()]);
    config.mtu = MTU;
    let mut link = telemark_mqtt::host::HostLink::new(config).unwrap();
    let boiler = run_mqtt(&mut engine, &mut link, 11, Instant::from_millis(3_600_000)).await;
    assert_eq!(
        boiler.last_output,
        Some((1, 1)),
        "the switch reached the device"
    );
    live.wait("the switch on, as the device said", |ha| {
        ha.on(&switched).last().is_some_and(|(p, _)| p == "ON")
    })
    .await;

    // Home Assistant starts after the device: it finds everything retained.
    let sensor = format!("homeassistant/sensor/telemark_{id}_1/config");
    let counter = format!("homeassistant/sensor/telemark_{id}_2/config");
    let alert = format!("homeassistant/binary_sensor/telemark_{id}_1_alert/config");
    let state = format!("telemark/v1/{id}/ha/state");
    let availability = format!("telemark/v1/{id}/ha/availability");
    let ha = Watcher::start(&service.mqtt, "home-assistant").await;
    let topics = [
        &sensor,
        &counter,
        &alert,
        &state,
        &availability,
        &switch,
        &switched,
    ];
    ha.wait("every retained topic", |ha| {
        topics
            .iter()
            .all(|t| ha.on(t).iter().any(|(_, retained)| *retained))
    })
    .await;
    let config = |topic: &str| -> Value { serde_json::from_str(&ha.on(topic)[0].0).unwrap() };
    let c = config(&sensor);
    assert_eq!(c["unique_id"], format!("telemark_{id}_1"), "{c}");
    assert_eq!(
        (
            &c["device_class"],
            &c["state_class"],
            &c["unit_of_measurement"]
        ),
        (&json!("temperature"), &json!("measurement"), &json!("°C")),
        "{c}"
    );
    assert_eq!(c["state_topic"], state);
    assert_eq!(c["value_template"], "{{ value_json.ch1 }}");
    assert_eq!(c["availability_topic"], availability);
    assert_eq!(
        c["device"]["identifiers"],
        json!([format!("telemark_{id}")])
    );
    assert_eq!(c["device"]["name"], "boiler-ha");
    assert!(c["device"]["model"].is_string() && c["device"]["sw_version"].is_string());
    assert_eq!(c["origin"]["name"], "telemark-cloud");
    let g = config(&counter);
    assert_eq!(g["state_class"], "total_increasing", "{g}");
    assert!(
        g.get("device_class").is_none(),
        "a pulse count has no class: {g}"
    );
    let a = config(&alert);
    assert_eq!(
        (&a["device_class"], &a["value_template"]),
        (&json!("problem"), &json!("{{ value_json.ch1_alert }}")),
        "{a}"
    );
    assert_eq!(ha.on(&availability)[0].0, "online");
    // The state is the latest reading of each channel, in its unit.
    let s: Value = serde_json::from_str(&ha.on(&state)[0].0).unwrap();
    let flow = s["ch1"].as_f64().unwrap();
    assert!((10.0..=90.0).contains(&flow), "flow {flow} °C: {s}");
    assert!(s["ch2"].as_f64().unwrap() >= 1.0, "{s}");
    assert!(s["ch1_alert"] == "ON" || s["ch1_alert"] == "OFF", "{s}");

    // Home Assistant restarts: its birth message brings the configs again.
    let before = ha.on(&sensor).len();
    ha.client
        .publish(
            "homeassistant/status",
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            false,
            "online",
        )
        .await
        .unwrap();
    ha.wait("discovery published again on the birth message", |ha| {
        ha.on(&sensor).len() > before && ha.on(&availability).len() > 1
    })
    .await;

    // A revoked device's entities go: its configs are published empty.
    let (status, _) = call(
        reqwest::Method::POST,
        &service.url(&format!("/v1/devices/{id}/revoke")),
        None,
    )
    .await;
    assert!(status.is_success(), "{status}");
    ha.wait("empty configs for a revoked device", |ha| {
        [&sensor, &counter, &alert, &switch]
            .iter()
            .all(|t| ha.on(t).last().is_some_and(|(p, _)| p.is_empty()))
    })
    .await;
    service.terminate();
}

/// `GET /v1/stream` carries every record as it is stored: each reading the
/// device took comes through once, with its Unix time, and the reports as
/// what to read again. A device the caller cannot see is not found, and a
/// stream still open does not hold up the service's stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_carries_every_record_as_it_is_stored() {
    let service = Service::start("stream");
    let who = get(&service.url("/v1/whoami")).await;
    assert_eq!(who, json!({"role": "admin", "scope": null}));
    let (id, mut engine) = provision(&service, "streamed").await;
    let (status, _) = call(
        reqwest::Method::GET,
        &service.url("/v1/stream?device=424242"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let mut stream = client()
        .get(service.url(&format!("/v1/stream?device={id}")))
        .bearer_auth(TOKEN)
        .timeout(RealDuration::from_secs(120))
        .send()
        .await
        .unwrap();
    assert_eq!(
        stream.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let mut config = telemark_mqtt::host::HostConfig::new(id, vec![service.mqtt.clone()]);
    config.mtu = MTU;
    let mut link = telemark_mqtt::host::HostLink::new(config).unwrap();
    run_mqtt(&mut engine, &mut link, 5, Instant::from_millis(3_600_000)).await;
    let sampled = u64::from(engine.counters().sampled);

    let (mut text, mut readings, mut reports) = (String::new(), 0u64, Vec::new());
    while readings < sampled {
        let chunk = tokio::time::timeout(RealDuration::from_secs(10), stream.chunk())
            .await
            .expect("the stream went quiet before every reading came")
            .unwrap()
            .expect("the stream ended");
        text.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = text.find("\n\n") {
            let event: String = text.drain(..end + 2).collect();
            let Some(data) = event.lines().find_map(|l| l.strip_prefix("data: ")) else {
                continue;
            };
            let v: Value = serde_json::from_str(data).unwrap();
            assert_eq!(v["device"], id, "{v}");
            match v["type"].as_str() {
                Some("readings") => {
                    for r in v["readings"].as_array().unwrap() {
                        assert!(r["unix_ms"].as_i64().is_some(), "{r}");
                        readings += 1;
                    }
                }
                Some("report") => reports.push(v["report"].as_str().unwrap().to_string()),
                other => panic!("an event of type {other:?}: {v}"),
            }
        }
    }
    assert_eq!(readings, sampled, "each reading once");
    assert!(reports.iter().any(|r| r == "channel"), "{reports:?}");
    assert!(reports.iter().any(|r| r == "config"), "{reports:?}");
    // Still open: the service stops all the same, and cleanly.
    service.terminate();
    drop(stream);
}
