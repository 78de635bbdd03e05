//! telemark-cloud: the service users deploy, on a Raspberry Pi next to a
//! meter or on a VM for a fleet.
//!
//! With no flags, `telemark-cloud` starts everything it needs, with
//! nothing installed:
//! - an MQTT 5 broker ([`telemark_mqtt_broker`]), which devices with
//!   `telemark-mqtt` publish to;
//! - SQLite in a data directory ([`SqliteStore`]);
//! - the HTTP API ([`api`]), and the HTTP ingest;
//! - CoAP on UDP ([`coap`]);
//! - and, when asked, serial lines ([`mod@line`]): a UART, or TCP sockets
//!   carrying one.
//!
//! With `--database postgres://…` it keeps its state in PostgreSQL
//! ([`PgStore`]); with `--broker mqtt://…` it uses another broker.
//!
//! Every listener hands its frames to the [`Hub`]: the server half of the
//! protocol ([`telemark_server`]) over the store. A frame's records are
//! stored in one transaction, and only after the commit is the response
//! sent, so a device frees a record only once it is stored.
//!
//! ```
//! use telemark_cloud::{Hub, SqliteStore};
//!
//! let mut hub = Hub::new(Box::new(SqliteStore::in_memory()?))?;
//! let boiler = hub.add_device("boiler-1", 1_700_000_000_000)?;
//! // What the firmware needs: its id, its key's id and its key.
//! println!("{}", boiler.keys_line());
//! assert_eq!(hub.store().devices()?.len(), 1);
//! // Bytes that are no frame are refused, and nothing is stored.
//! assert!(hub.receive(b"junk", 1_700_000_000_000).is_none());
//! assert_eq!(hub.store().reading_count(boiler.device.id)?, 0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod access;
pub mod api;
pub mod cluster;
pub mod coap;
pub mod conformance;
pub mod dashboard;
pub mod downsample;
pub mod home_assistant;
mod hub;
pub mod line;
pub mod mqtt;
pub mod mqtt_gate;
pub mod notify;
pub mod openapi;
mod postgres;
pub mod rules;
pub mod settings;
pub mod silence;
mod sqlite;
mod store;
pub mod stream;
pub mod throttle;
pub mod tls;

pub use hub::{
    Answer, Arrival, Figures, Hub, HubError, HubHandle, NotAcknowledged, Provisioned, Stored,
    COMMIT_BOUNDS, DEFAULT_COMMAND_TTL_MS, KEY_REFRESH_MS, MAX_GROUP,
};
pub use mqtt::{Broker, MqttError};
pub use postgres::PgStore;
pub use sqlite::{SqliteStore, SCHEMA_VERSION};
pub use store::{
    AlertRow, ChannelRow, CloudStore, CommandRow, DeliveryRow, Device, DeviceKey, EventRow,
    HealthRow, NotificationRow, OutputRow, ReadingQuery, ReportedConfig, Span, StoreError,
    StoredReading,
};

use std::time::{SystemTime, UNIX_EPOCH};

/// A name of a device, group or rule, trimmed: 1 to 64 characters,
/// none of them a control character; `None` for another.
///
/// ```
/// assert_eq!(telemark_cloud::name_of("  boiler-1 "), Some("boiler-1"));
/// assert_eq!(telemark_cloud::name_of("   "), None);
/// assert_eq!(telemark_cloud::name_of("a\tb"), None);
/// assert!(telemark_cloud::name_of(&"é".repeat(64)).is_some());
/// ```
pub fn name_of(name: &str) -> Option<&str> {
    let name = name.trim();
    let count = name.chars().count();
    ((1..=64).contains(&count) && !name.chars().any(char::is_control)).then_some(name)
}

/// The time now, Unix ms.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
