//! The simulator against the real service: `telemark-cloud` started on
//! free ports with a data directory of its own, and `telemark-sim
//! --server` driving its fleet through the embedded MQTT broker, the HTTP
//! ingest and CoAP, each device provisioned through the API and every
//! reading it produced accounted for against the API's counts.
//!
//! The service is the binary `cargo test --workspace` builds for
//! telemark-cloud's own tests, beside this one.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;
use telemark_transport_testkit::cloud::Cloud;

const TOKEN: &str = "sim-test-admin-token";

/// The service, started from the binary beside the simulator's.
fn start(test: &str) -> Cloud {
    let sim = PathBuf::from(env!("CARGO_BIN_EXE_telemark-sim"));
    let binary = sim.with_file_name("telemark-cloud");
    assert!(
        binary.exists(),
        "{} is not built: `cargo build -p telemark-cloud` (or `cargo test --workspace`) builds it",
        binary.display()
    );
    Cloud::start(&binary, test, TOKEN)
}

/// Runs the simulator against the service: its exit code, its JSON line
/// and its standard error.
fn simulate(cloud: &Cloud, server: &str, token: &str, args: &[&str]) -> (i32, Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_telemark-sim"))
        .args(["--server", server, "--token", token, "--json"])
        .arg("--api")
        .arg(format!("http://{}", cloud.address("http")))
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report = serde_json::from_str(stdout.trim()).unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), report, stderr)
}

/// What a run must show: no violation, every device's config applied and
/// command answered, and readings stored.
fn accounted(report: &Value, devices: u64, stderr: &str) {
    assert_eq!(report["invariant_violations"], 0, "{report}\n{stderr}");
    assert_eq!(report["configs_applied"], devices, "{report}");
    assert_eq!(report["commands_answered"], devices, "{report}");
    let produced = report["readings_produced"].as_u64().unwrap();
    let delivered = report["readings_delivered"].as_u64().unwrap();
    // Two days of a reading every 5 and every 15 minutes, per device.
    assert!(produced >= devices * 2 * (288 + 96), "{report}");
    assert!(delivered > 0 && delivered <= produced, "{report}");
}

#[test]
fn a_fleet_reports_to_the_service_over_mqtt_http_and_coap() {
    let service = start("fleet");
    let mqtt = format!("mqtt://{}", service.address("mqtt"));
    let (code, report, stderr) = simulate(
        &service,
        &mqtt,
        TOKEN,
        &[
            "--devices",
            "100",
            "--days",
            "2",
            "--loss",
            "0.1",
            "--seed",
            "1",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(report["server"], "mqtt");
    accounted(&report, 100, &stderr);
    // Frames lost and duplicated on the way, and answers lost: the
    // service saw copies and resends, and stored each reading once.
    assert!(
        report["duplicates_received"].as_u64().unwrap() > 0,
        "{report}"
    );

    for scheme in ["http", "coap"] {
        let server = format!("{scheme}://{}", service.address(scheme));
        let (code, report, stderr) = simulate(
            &service,
            &server,
            TOKEN,
            &[
                "--devices",
                "10",
                "--days",
                "2",
                "--loss",
                "0.2",
                "--seed",
                "2",
            ],
        );
        assert_eq!(code, 0, "{scheme}: {stderr}");
        assert_eq!(report["server"], scheme);
        accounted(&report, 10, &stderr);
    }
    service.terminate();
}

#[test]
fn the_simulator_needs_a_token_the_service_takes() {
    let service = start("token");
    let mqtt = format!("mqtt://{}", service.address("mqtt"));
    let (code, _, stderr) = simulate(&service, &mqtt, "not-the-token", &["--devices", "1"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("401"), "{stderr}");
    service.terminate();
}
