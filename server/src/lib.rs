//! The server half of the telemark protocol, sans-IO: no sockets, no
//! database, no clock, no runtime. It takes the bytes of a records frame
//! and the time it arrived, and with the host's [`Store`]:
//!
//! 1. **opens** the frame with the device's key from the [`Keyring`]
//!    (refusing unknown devices, unknown keys, bad tags, unauthenticated
//!    frames not allowed, and replays of a counter already answered, each
//!    counted on its own);
//! 2. **classifies** each record by (device, epoch, seq): new, duplicate
//!    (byte for byte) or conflict (another payload: kept and counted);
//! 3. **decodes** new blocks within bounds (exactly the readings a record
//!    declares, at most [`Limits::readings_per_frame`] a frame), and maps
//!    device times to Unix ms through the uptime the frame carries;
//! 4. **commits** everything in one [`Batch`]; only the [`Committed`]
//!    token the store returns builds the **response**: the
//!    acknowledgement, and the [`Outbox`] (config, commands, a new key)
//!    until the device settles it.
//!
//! The gateway (SQLite), the simulator (memory) and the cloud service all
//! stand on it; each backend passes the same [`conformance`] suite.
//!
//! ```
//! use telemark_core::wire::seal::Key;
//! use telemark_server::{Keyring, MemoryStore, ReceiveError, Refusal, Server};
//!
//! let mut keyring = Keyring::new();
//! keyring.insert(0x101, 1, Key::from_bytes([7; 32]));
//! let mut server = Server::new(keyring);
//! let mut store = MemoryStore::new();
//!
//! // Bytes that are no frame are refused, counted, and store nothing.
//! match server.receive(&mut store, b"\x02\x00\x01junk", 1_700_000_000_000) {
//!     Err(ReceiveError::Refused(Refusal::UnknownDevice(_) | Refusal::Malformed)) => {}
//!     other => panic!("{other:?}"),
//! }
//! assert_eq!(server.counters().refused.total(), 1);
//! assert!(store.records().is_empty());
//! ```

pub mod conformance;
mod intake;
mod keyring;
mod memory;
mod outbox;
mod store;

pub use intake::{
    ranges, Counters, Limits, ReceiveError, Received, Refusal, Refusals, RotateError, Server,
};
pub use keyring::{DeviceKeys, Keyring};
pub use memory::{MemoryStore, Unavailable};
pub use outbox::{
    CommandOutcome, ConfigState, DesiredConfig, KeyRotation, KeyState, Outbox, OutboxChange,
    QueuedCommand, Retired, Sent,
};
pub use store::{
    Batch, Committed, Conflict, Contents, EpochState, NewRecord, RecordKey, Store, TimedReading,
    REPLAY_WINDOW,
};
