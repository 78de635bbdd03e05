//! Everything that crosses the link, and nothing else: record metadata,
//! the sealed envelope, the records frame and the server's response, and
//! the reports a device sends. It depends only on the model and on time
//! (and the byte cursors of the codec), so a server can use it without
//! the engine.
//!
//! - [`record`]: sequence numbers, epochs, lanes, record metadata;
//! - [`seal`]: the frame header and its ChaCha20-Poly1305 seal;
//! - [`frame`]: the records frame, the response (acknowledgement, config,
//!   commands, key rotation);
//! - [`fragment`]: frames in pieces, for links whose packets are smaller
//!   than a frame (LoRa);
//! - [`report`]: alerts, heartbeats, config statuses, command results,
//!   crashes, as record payloads.
//!
//! The bytes are specified in `docs/wire-format.md`, with test vectors.

pub mod fragment;
pub mod frame;
pub mod record;
pub mod report;
pub mod seal;

pub use record::{Epoch, Lane, Record, RecordMeta, Seq, SeqRange};
