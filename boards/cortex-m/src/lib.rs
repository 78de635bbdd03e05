#![doc = include_str!("../README.md")]
#![cfg_attr(not(test), no_std)]

pub mod crash;
pub mod reset;
#[cfg(all(target_arch = "arm", target_os = "none"))]
pub mod stack;
#[cfg(feature = "embassy-time-driver")]
pub mod time_driver;
pub mod uptime;
