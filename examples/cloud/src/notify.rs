//! Notifications: what the service tells the outside world as it happens.
//! An alert stored, a command answered, a rule that fired, a device gone
//! offline or recovered: each becomes a JSON notification kept in the store, and
//! each webhook is sent them in order, over HTTP POST, signed with HMAC,
//! retried with backoff until it takes one (a 2xx answer), every attempt
//! kept in the delivery log (`GET /v1/deliveries`).
//!
//! A webhook's place in the notifications is kept in the store too, so a
//! restarted service goes on where it stopped and a webhook that was down
//! gets what it missed. A new webhook starts with what comes next.
//!
//! Each POST carries:
//! - `X-Telemark-Delivery`: the notification's id, the same on a retry,
//!   for the receiver to drop a copy it already took;
//! - `X-Telemark-Timestamp`: Unix seconds when it was sent;
//! - `X-Telemark-Signature`: `sha256=` and the hex HMAC-SHA256, under the
//!   webhook's secret, of the timestamp, a `.` and the body. A receiver
//!   computes the same and compares, and refuses an old timestamp.
//!
//! ```
//! use telemark_cloud::notify::signature;
//! let sig = signature(b"secret", 1_700_000_000, br#"{"type":"offline"}"#);
//! assert!(sig.starts_with("sha256=") && sig.len() == 7 + 64);
//! ```

use std::time::Duration;

use hmac::{Hmac, Mac};
use rumqttc::v5::mqttbytes::QoS;
use serde_json::{json, Value};
use sha2::Sha256;
use telemark_core::wire::report::Report;
use telemark_server::Contents;
use tokio::sync::watch;

use crate::hub::HubHandle;
use crate::store::{number, DeliveryRow, NotificationRow, StoreError};

/// Where notifications are posted, and the secret that signs them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Webhook {
    /// `http://` or `https://` URL.
    pub url: String,
    /// The HMAC key.
    pub secret: String,
}

impl Webhook {
    /// Its name in the store: `webhook ` and its URL.
    pub fn sink(&self) -> String {
        format!("webhook {}", self.url)
    }
}

/// How long a webhook that failed is left before the next attempt: from
/// `first`, doubled at each failure, up to `most`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// After the first failure.
    pub first: Duration,
    /// The longest wait.
    pub most: Duration,
}

impl Default for Backoff {
    /// One second, doubled up to five minutes.
    fn default() -> Self {
        Backoff {
            first: Duration::from_secs(1),
            most: Duration::from_secs(300),
        }
    }
}

/// The notification a stored record makes, if it makes one: an alert, or
/// a command's result.
pub fn of_record(device: u64, received_ms: i64, contents: &Contents) -> Option<Value> {
    let Contents::Report { report, unix_ms } = contents else {
        return None;
    };
    match report {
        Report::Alert(a) => Some(json!({
            "type": "alert",
            "device": device,
            "unix_ms": unix_ms.unwrap_or(received_ms),
            "channel": a.channel.0,
            "kind": format!("{:?}", a.kind),
            "severity": format!("{:?}", a.severity),
            "value": a.value.map(number),
        })),
        Report::CommandResult { id, status, value } => Some(json!({
            "type": "command_result",
            "device": device,
            "unix_ms": received_ms,
            "command": id,
            "status": status,
            "value": value,
        })),
        _ => None,
    }
}

/// The notification of an event (`offline`, `recovered`).
pub fn of_event(device: u64, kind: &str, unix_ms: i64, detail: &str) -> Value {
    json!({"type": kind, "device": device, "unix_ms": unix_ms, "detail": detail})
}

/// `sha256=` and the hex HMAC-SHA256 under `secret` of `timestamp_s`, a
/// `.` and `body`.
pub fn signature(secret: &[u8], timestamp_s: u64, body: &[u8]) -> String {
    // HMAC takes a key of any length.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(timestamp_s.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let tag: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={tag}")
}

/// A store call on the hub's thread; `Unavailable` if the hub is gone.
async fn on_hub<T: Send + 'static>(
    hub: &HubHandle,
    f: impl FnOnce(&mut crate::Hub) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    hub.call(f)
        .await
        .unwrap_or_else(|| Err(StoreError::Unavailable("the hub has stopped".into())))
}

/// Where notifications go.
pub enum Sink {
    /// A webhook, and the client that posts to it.
    Webhook(Webhook, reqwest::Client),
    /// An MQTT broker, through the client of [`mqtt_sink`]: each
    /// notification published at QoS 1 on `{prefix}/v1/{device}/notifications`.
    Mqtt(rumqttc::v5::AsyncClient, String),
}

impl Sink {
    /// Its name in the store: `webhook URL`, or `mqtt PREFIX`.
    pub fn name(&self) -> String {
        match self {
            Sink::Webhook(hook, _) => hook.sink(),
            Sink::Mqtt(_, prefix) => format!("mqtt {prefix}"),
        }
    }

    /// One attempt at delivering `n`: the HTTP status and what went
    /// wrong, if anything.
    async fn send(&self, n: &NotificationRow, now_ms: u64) -> (Option<u16>, Option<String>) {
        match self {
            Sink::Webhook(hook, client) => {
                let timestamp = now_ms / 1000;
                let signed = signature(hook.secret.as_bytes(), timestamp, n.body.as_bytes());
                let sent = client
                    .post(&hook.url)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .header("X-Telemark-Delivery", n.id.to_string())
                    .header("X-Telemark-Timestamp", timestamp.to_string())
                    .header("X-Telemark-Signature", signed)
                    .body(n.body.clone())
                    .send()
                    .await;
                match sent {
                    Ok(answer) if answer.status().is_success() => {
                        (Some(answer.status().as_u16()), None)
                    }
                    Ok(answer) => (
                        Some(answer.status().as_u16()),
                        Some(format!("answered {}", answer.status())),
                    ),
                    Err(e) => (None, Some(e.to_string())),
                }
            }
            Sink::Mqtt(client, prefix) => {
                let device = serde_json::from_str::<Value>(&n.body)
                    .ok()
                    .and_then(|v| v["device"].as_u64());
                let Some(device) = device else {
                    return (None, Some("a notification of no device".into()));
                };
                let topic = format!("{prefix}/v1/{device}/notifications");
                let published = client
                    .publish(topic, QoS::AtLeastOnce, false, n.body.clone().into_bytes())
                    .await;
                (None, published.err().map(|e| e.to_string()))
            }
        }
    }
}

/// The MQTT client notifications are published through, to `broker`,
/// under client id `{client_id}-notifications`: its session is kept, so
/// what was published while the broker was away goes when it is back.
/// The client's connection runs until `stop` says so.
pub fn mqtt_sink(broker: &crate::Broker, mut stop: watch::Receiver<bool>) -> Sink {
    let options = broker.options_as(&format!("{}-notifications", broker.client_id));
    let (client, mut events) = rumqttc::v5::AsyncClient::new(options, 64);
    tokio::spawn(async move {
        loop {
            let failed = tokio::select! {
                event = events.poll() => event.is_err(),
                _ = stop.wait_for(|&stop| stop) => return,
            };
            // A broker away is dialled again; what waits is kept.
            if failed {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    });
    Sink::Mqtt(client, broker.prefix.clone())
}

/// Sends `sink` every notification, in order, until `stop` says so. A
/// store that fails is waited out like a sink that does.
pub async fn deliver(
    hub: HubHandle,
    sink: Sink,
    backoff: Backoff,
    mut stop: watch::Receiver<bool>,
) {
    let name = sink.name();
    let mut wait = backoff.first;
    loop {
        if *stop.borrow() {
            return;
        }
        let next = {
            let name = name.clone();
            on_hub(&hub, move |h| {
                // Instances that share a database: the one that leads
                // delivers.
                if !h.leads() {
                    return Ok(Vec::new());
                }
                let cursor = h.store().sink_cursor(&name)?;
                h.store().notifications_after(cursor, 64)
            })
            .await
        };
        let batch = match next {
            Ok(batch) => batch,
            Err(e) => {
                tracing::warn!(sink = %name, error = %e, "notifications not read");
                Vec::new()
            }
        };
        if batch.is_empty() {
            let _ = tokio::time::timeout(Duration::from_millis(500), stop.changed()).await;
            continue;
        }
        for n in batch {
            let mut attempt = 1;
            loop {
                let now_ms = crate::unix_ms();
                let (status, error) = sink.send(&n, now_ms).await;
                let row = DeliveryRow {
                    sink: name.clone(),
                    notification: n.id,
                    attempt,
                    unix_ms: i64::try_from(now_ms).unwrap_or(i64::MAX),
                    status,
                    delivered: error.is_none(),
                    error,
                };
                let delivered = row.delivered;
                if let Err(e) = on_hub(&hub, move |h| h.store().log_delivery(&row)).await {
                    tracing::warn!(sink = %name, error = %e, "delivery not logged");
                }
                if delivered {
                    wait = backoff.first;
                    break;
                }
                let stopped = tokio::time::timeout(wait, stop.changed()).await;
                wait = (wait * 2).min(backoff.most);
                if *stop.borrow() || matches!(stopped, Ok(Err(_))) {
                    return;
                }
                attempt += 1;
            }
        }
    }
}
