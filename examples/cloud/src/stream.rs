//! What the service stores, as it stores it: the events of
//! `GET /v1/stream`, server-sent events a page or a script follows live.
//!
//! Each event is one stored record, sent once it is committed, as JSON:
//!
//! - a block: `{"device": ID, "type": "readings", "readings": [{"channel":
//!   1, "unix_ms": 1765000000000, "value": 6123}]}`, values as the readings
//!   API gives them (a scaled channel's in steps of its `scale`);
//! - a report: `{"device": ID, "type": "report", "report": KIND}`, KIND one
//!   of `alert`, `heartbeat`, `config`, `command`, `key`, `channel`,
//!   `crash` or `unknown`: the resource to read again.
//!
//! A client too slow to take them loses the oldest and is told how many
//! (an event `lagged` with the count); it reads the resources again.

use std::sync::Arc;

use telemark_core::wire::report::Report;
use tokio::sync::broadcast;

use crate::hub::Stored;
use crate::store::number;

/// Events kept for a client that falls behind.
pub const BACKLOG: usize = 1024;

/// One event: the device it is about, and its JSON.
pub type Event = Arc<(u64, String)>;

/// The JSON of what was stored for `device`.
pub fn event(device: u64, stored: &Stored) -> String {
    let body = match stored {
        Stored::Readings(readings) => {
            let readings: Vec<_> = readings
                .iter()
                .map(|t| {
                    serde_json::json!({
                        "channel": t.reading.channel.0,
                        "unix_ms": t.unix_ms,
                        "value": number(t.reading.value),
                    })
                })
                .collect();
            serde_json::json!({"device": device, "type": "readings", "readings": readings})
        }
        Stored::Report(report) => {
            let kind = match report {
                Report::Alert(_) => "alert",
                Report::Heartbeat(_) => "heartbeat",
                Report::ConfigStatus { .. } => "config",
                Report::CommandResult { .. } => "command",
                Report::KeyStatus { .. } => "key",
                Report::Channel { .. } => "channel",
                Report::Crash { .. } => "crash",
            };
            serde_json::json!({"device": device, "type": "report", "report": kind})
        }
        Stored::Undecodable => {
            serde_json::json!({"device": device, "type": "report", "report": "unknown"})
        }
    };
    body.to_string()
}

/// A sender of events, and the watcher that feeds it from the hub
/// ([`crate::Hub::watch`]). With no client listening, events go nowhere.
pub fn channel() -> (
    broadcast::Sender<Event>,
    impl FnMut(u64, telemark_core::wire::Epoch, telemark_core::wire::Seq, &Stored) + Send + 'static,
) {
    let (events, _) = broadcast::channel(BACKLOG);
    let sender = events.clone();
    let watcher = move |device, _, _, stored: &Stored| {
        if sender.receiver_count() > 0 {
            let _ = sender.send(Arc::new((device, event(device, stored))));
        }
    };
    (events, watcher)
}
