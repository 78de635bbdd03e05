//! The dashboard in a real browser: headless Chromium, driven by
//! playwright-core (`tests/browser/dashboard.mjs`), against a running
//! `telemark-cloud` fed by the fleet simulator, with one more device live
//! on the real engine over MQTT while the page is open, to see its
//! readings arrive and its commands reach it.
//!
//! It needs Chromium (`apt-get install chromium`) and the npm packages of
//! `tests/browser` (`npm ci` there), which `scripts/check.sh` installs,
//! and the simulator's binary beside this one (`cargo build -p
//! telemark-sim`); so it is ignored by a bare `cargo test` and run by the
//! check with `--ignored`. Screenshots go to `target/dashboard/`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration as RealDuration;

use serde_json::{json, Value};
use telemark_core::channel::ChannelSpec;
use telemark_core::config::EngineConfig;
use telemark_core::engine::{Boot, Engine};
use telemark_core::stager::StagerConfig;
use telemark_core::store::{FullPolicy, RamStore};
use telemark_core::time::{Duration, Instant};
use telemark_core::transport::step_async;
use telemark_core::uplink::UplinkConfig;
use telemark_core::wire::report::ResetReason;
use telemark_core::wire::seal::{Key, Sealing};
use telemark_core::wire::Epoch;
use telemark_qemu_app::{Boiler, FLOW, GAS, MTU};
use telemark_transport_testkit::cloud::Cloud;

const TOKEN: &str = "dashboard-test-admin-token";

/// The live device: the demo boiler's channels sampled every second and
/// sent every two, so that the page sees readings arrive while it is open.
type Live = Engine<RamStore<256, 4096>, 2, 32, MTU>;

fn live_engine(id: u64, key_id: u8, key: &str) -> Live {
    let channels = [
        ChannelSpec {
            period: Duration::from_secs(1),
            ..FLOW
        },
        ChannelSpec {
            period: Duration::from_secs(1),
            ..GAS
        },
    ];
    let mut uplink = UplinkConfig::new(id, MTU as u16, Duration::from_secs(2));
    uplink.ack_timeout = Duration::from_secs(5);
    uplink.max_backoff = Duration::from_secs(10);
    let config = EngineConfig {
        uplink,
        stager: StagerConfig::new(32, 190, Duration::from_secs(2)),
        heartbeat: Duration::from_secs(30),
    };
    let boot = Boot {
        reset_reason: ResetReason::PowerOn,
        epoch: Epoch(0xDA5B),
        sealing: Sealing::key(key_id, Key::from_hex(key).unwrap()),
    };
    Engine::new(
        &channels,
        RamStore::new(FullPolicy::EvictOldest),
        config,
        boot,
    )
    .unwrap()
}

/// Runs the live device in real time until `stop`; what its boiler was told.
async fn run_live(
    id: u64,
    mut engine: Live,
    mqtt: (String, u16),
    stop: Arc<AtomicBool>,
) -> Option<(u8, u32)> {
    let mut config = telemark_mqtt::host::HostConfig::new(id, vec![mqtt]);
    config.mtu = MTU;
    let mut link = telemark_mqtt::host::HostLink::new(config).unwrap();
    let mut boiler = Boiler::new(7);
    let start = std::time::Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::from_millis(start.elapsed().as_millis() as u64);
        let wake = step_async(&mut engine, &mut link, now, &mut boiler).await;
        let wait = wake.saturating_since(now).as_millis().clamp(10, 200);
        tokio::select! {
            () = link.wait_input() => {}
            () = tokio::time::sleep(RealDuration::from_millis(wait)) => {}
        }
    }
    boiler.last_output
}

async fn call(method: reqwest::Method, url: &str, body: Value) -> Value {
    let answer = reqwest::Client::new()
        .request(method, url)
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = answer.status();
    let v: Value = answer.json().await.unwrap();
    assert!(status.is_success(), "{url}: {status} {v}");
    v
}

fn browser_suite() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium and tests/browser's npm packages: scripts/check.sh installs them and runs it"]
async fn the_dashboard_in_a_real_browser() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_telemark-cloud"));
    let sim = binary.with_file_name("telemark-sim");
    assert!(
        sim.exists(),
        "{} is not built: `cargo build -p telemark-sim` builds it",
        sim.display()
    );
    assert!(
        browser_suite()
            .join("node_modules/playwright-core")
            .exists(),
        "playwright-core is missing: `npm ci` in {}",
        browser_suite().display()
    );
    let service = Cloud::start(&binary, "dashboard", TOKEN);
    let http = format!("http://{}", service.address("http"));
    let mqtt: std::net::SocketAddr = service.address("mqtt").parse().unwrap();

    // A day of a fleet, from the simulator.
    let fed = Command::new(&sim)
        .args([
            "--devices",
            "3",
            "--days",
            "1",
            "--loss",
            "0.1",
            "--seed",
            "5",
        ])
        .args(["--server", &format!("mqtt://{mqtt}"), "--api", &http])
        .args(["--token", TOKEN, "--json"])
        .output()
        .unwrap();
    assert!(
        fed.status.success(),
        "{}",
        String::from_utf8_lossy(&fed.stderr)
    );
    let report: Value = serde_json::from_slice(&fed.stdout).unwrap();
    assert_eq!(report["invariant_violations"], 0, "{report}");

    // The live device, with a named output, and a token that reads only.
    let made = call(
        reqwest::Method::POST,
        &format!("{http}/v1/devices"),
        json!({"name": "boiler-live"}),
    )
    .await;
    let live = made["device"]["id"].as_u64().unwrap();
    let engine = live_engine(
        live,
        made["key_id"].as_u64().unwrap() as u8,
        made["key"].as_str().unwrap(),
    );
    call(
        reqwest::Method::PUT,
        &format!("{http}/v1/devices/{live}/outputs"),
        json!({"outputs": [{"output": 1, "name": "burner"}]}),
    )
    .await;
    let reader = call(
        reqwest::Method::POST,
        &format!("{http}/v1/tokens"),
        json!({"name": "wall-screen", "role": "read"}),
    )
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let device = tokio::spawn(run_live(
        live,
        engine,
        (mqtt.ip().to_string(), mqtt.port()),
        stop.clone(),
    ));

    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/dashboard");
    std::fs::create_dir_all(&shots).unwrap();
    let suite = browser_suite();
    let (url, read_token) = (http.clone(), reader["token"].as_str().unwrap().to_string());
    let browser = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(suite.join("dashboard.mjs"))
            .env("DASHBOARD_URL", url)
            .env("ADMIN_TOKEN", TOKEN)
            .env("READ_TOKEN", read_token)
            .env("LIVE_DEVICE", live.to_string())
            .env("SCREENSHOTS", shots)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    let told = device.await.unwrap();
    let out = String::from_utf8_lossy(&browser.stdout);
    let err = String::from_utf8_lossy(&browser.stderr);
    println!("{out}");
    assert!(
        browser.status.success(),
        "the browser suite failed:\n{out}\n{err}"
    );
    assert_eq!(
        told,
        Some((1, 1)),
        "the button's command reached the live device"
    );
    service.terminate();
}
