#![doc = include_str!("../README.md")]
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod analog;
pub mod bme280;
pub mod pulse;
pub mod replay;
pub mod sht4x;
pub mod synthetic;

/// The driver-writing guide, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../../docs/writing-a-sensor-driver.md")]
pub struct DriverGuideDoctests;
