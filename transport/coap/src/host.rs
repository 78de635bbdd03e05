//! The host side (feature `host`): a tokio UDP socket as the
//! [`ConnectedUdp`] the link runs over, so a Linux device or gateway runs
//! exactly the device's code.
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! use telemark_coap::host::Udp;
//! use telemark_coap::{CoapLink, Config};
//!
//! let udp = Udp::connect("192.168.1.2:5683".parse().unwrap()).await?;
//! let mut buf = [0u8; 512];
//! let link = CoapLink::new(udp, Config::new(), &mut buf, 0x5eed);
//! # let _ = link;
//! # Ok(())
//! # }
//! ```

extern crate std;

use std::io;
use std::net::SocketAddr;

use embedded_nal_async::ConnectedUdp;

/// A UDP socket connected to one server.
pub struct Udp(tokio::net::UdpSocket);

impl Udp {
    /// A socket on an ephemeral port of the right family, connected to
    /// `server`.
    pub async fn connect(server: SocketAddr) -> io::Result<Udp> {
        let local: SocketAddr = if server.is_ipv4() {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = tokio::net::UdpSocket::bind(local).await?;
        socket.connect(server).await?;
        Ok(Udp(socket))
    }
}

impl ConnectedUdp for Udp {
    type Error = io::Error;

    async fn send(&mut self, data: &[u8]) -> Result<(), io::Error> {
        self.0.send(data).await.map(|_| ())
    }

    async fn receive_into(&mut self, buffer: &mut [u8]) -> Result<usize, io::Error> {
        self.0.recv(buffer).await
    }
}
