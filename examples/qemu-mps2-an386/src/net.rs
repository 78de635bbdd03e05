//! The IP side: the LAN9118's interrupt line, the address plan of QEMU's
//! user network, and the broker's address.

use core::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use cortex_m::interrupt::InterruptNumber;
use embassy_net::{Ipv4Cidr, StaticConfigV4};

/// The board's interrupt lines this firmware uses.
#[derive(Clone, Copy, Debug)]
#[repr(u16)]
pub enum Irq {
    /// The LAN9118's line on the MPS2 boards.
    Ethernet = 13,
}

// SAFETY: 13 is the Ethernet line of the MPS2 FPGA images (AN385, AN386),
// a valid external interrupt of their NVIC.
unsafe impl InterruptNumber for Irq {
    fn number(self) -> u16 {
        self as u16
    }
}

/// A locally administered MAC address for the demo board.
pub const MAC: [u8; 6] = [0x02, 0x74, 0x6d, 0x00, 0x03, 0x86];

/// QEMU's user network: the firmware is 10.0.2.15; the host is 10.0.2.2.
pub fn ip_config() -> embassy_net::Config {
    embassy_net::Config::ipv4_static(StaticConfigV4 {
        address: Ipv4Cidr::new(Ipv4Addr::new(10, 0, 2, 15), 24),
        gateway: Some(Ipv4Addr::new(10, 0, 2, 2)),
        dns_servers: heapless::Vec::new(),
    })
}

/// The broker when none is named: the host's port 1883.
pub const DEFAULT_BROKER: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 0, 2, 2), 1883));

/// The broker named by the last word of `cmdline` (QEMU's `-append`),
/// or [`DEFAULT_BROKER`].
pub fn broker(cmdline: &str) -> SocketAddr {
    cmdline
        .split_whitespace()
        .next_back()
        .and_then(|word| word.parse().ok())
        .unwrap_or(DEFAULT_BROKER)
}
