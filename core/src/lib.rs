#![doc = include_str!("../README.md")]
#![cfg_attr(not(any(test, feature = "std")), no_std)]
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )
)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod bytes;
pub mod channel;
pub mod codec;
pub mod config;
pub mod engine;
pub mod model;
pub mod profile;
pub mod rules;
pub mod sensor;
pub mod stager;
pub mod store;
pub mod time;
pub mod transport;
pub mod uplink;
pub mod wire;

/// The workspace README's quickstart, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct WorkspaceReadmeDoctests;
