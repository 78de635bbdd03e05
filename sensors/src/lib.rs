#![doc = include_str!("../README.md")]
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod analog;
pub mod bme280;
pub mod per_channel;
pub mod pulse;
pub mod replay;
pub mod sht4x;
pub mod synthetic;

/// The kind of sensor fault an I2C error is: a missing acknowledge, or a
/// bus failure.
pub(crate) fn i2c_fault(
    kind: embedded_hal::i2c::ErrorKind,
) -> telemark_core::sensor::SensorErrorKind {
    use embedded_hal::i2c::ErrorKind;
    use telemark_core::sensor::SensorErrorKind;
    match kind {
        ErrorKind::NoAcknowledge(_) => SensorErrorKind::Nack,
        _ => SensorErrorKind::Bus,
    }
}

/// The driver-writing guide, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../../docs/writing-a-sensor-driver.md")]
pub struct DriverGuideDoctests;
