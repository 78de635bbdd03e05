//! A [`Connect`] over embassy-net TCP (feature `embassy-net`): what a
//! firmware on embassy-net gives [`Runner::run`](crate::Runner::run).
//!
//! ```no_run
//! use embassy_net::Stack;
//! use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;
//! use telemark_mqtt::embassy_net::Tcp;
//! use telemark_mqtt::Runner;
//!
//! // The MQTT task: the socket's buffers are static in a firmware.
//! async fn mqtt(
//!     stack: Stack<'static>,
//!     mut runner: Runner<'static, CriticalSectionRawMutex, 256>,
//!     rx: &'static mut [u8],
//!     tx: &'static mut [u8],
//! ) -> ! {
//!     runner.run(&mut Tcp::new(stack, rx, tx)).await
//! }
//! ```

use core::net::SocketAddr;

use embassy_net::tcp::{ConnectError, TcpSocket};
use embassy_net::Stack;
use embassy_time::Duration;

use crate::Connect;

/// Dials brokers over embassy-net TCP, one connection at a time, in the
/// buffers it holds. IPv4 endpoints only.
pub struct Tcp<'a> {
    stack: Stack<'a>,
    rx: &'a mut [u8],
    tx: &'a mut [u8],
    timeout: Duration,
}

impl<'a> Tcp<'a> {
    /// Connections on `stack`, with socket buffers `rx` and `tx` (1 KiB
    /// each carries frames of 256 bytes with room to spare), and a 30 s
    /// bound on a write the broker never takes.
    pub fn new(stack: Stack<'a>, rx: &'a mut [u8], tx: &'a mut [u8]) -> Self {
        Tcp {
            stack,
            rx,
            tx,
            timeout: Duration::from_secs(30),
        }
    }
}

impl Connect for Tcp<'_> {
    type Io<'b>
        = TcpSocket<'b>
    where
        Self: 'b;
    type Error = ConnectError;

    async fn connect(&mut self, endpoint: SocketAddr) -> Result<TcpSocket<'_>, ConnectError> {
        let SocketAddr::V4(endpoint) = endpoint else {
            return Err(ConnectError::NoRoute);
        };
        let mut socket = TcpSocket::new(self.stack, self.rx, self.tx);
        // A broker that stops answering mid-session is found by the MQTT
        // keepalive; this bounds a write that never drains.
        socket.set_timeout(Some(self.timeout));
        socket.connect(endpoint).await?;
        Ok(socket)
    }
}
