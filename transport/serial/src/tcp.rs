//! A serial line carried over TCP, for devices simulated on a host: the
//! way QEMU's `-serial tcp:` or a ser2net bridge carries a UART.

use std::io::{ErrorKind, Read as _, Write as _};
use std::net::TcpStream;

/// A TCP socket as an embedded-io serial port, for [`crate::SerialTransport`].
///
/// ```no_run
/// use std::net::TcpStream;
/// use telemark_serial::{SerialTransport, TcpLine};
///
/// let socket = TcpStream::connect("127.0.0.1:4405")?;
/// let link: SerialTransport<TcpLine, 512> = SerialTransport::new(TcpLine::new(socket));
/// # let _ = link;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct TcpLine(TcpStream);

impl TcpLine {
    /// The line over `socket`.
    pub fn new(socket: TcpStream) -> Self {
        TcpLine(socket)
    }

    /// The socket, to shut it down or to set timeouts.
    pub fn socket(&self) -> &TcpStream {
        &self.0
    }
}

fn kind(e: std::io::Error) -> embedded_io::ErrorKind {
    match e.kind() {
        ErrorKind::TimedOut | ErrorKind::WouldBlock => embedded_io::ErrorKind::TimedOut,
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe => {
            embedded_io::ErrorKind::BrokenPipe
        }
        _ => embedded_io::ErrorKind::Other,
    }
}

impl embedded_io::ErrorType for TcpLine {
    type Error = embedded_io::ErrorKind;
}

impl embedded_io::Read for TcpLine {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        self.0.read(buf).map_err(kind)
    }
}

impl embedded_io::ReadReady for TcpLine {
    fn read_ready(&mut self) -> Result<bool, Self::Error> {
        self.0.set_nonblocking(true).map_err(kind)?;
        let ready = match self.0.peek(&mut [0u8]) {
            Ok(n) => Ok(n > 0),
            Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(kind(e)),
        };
        self.0.set_nonblocking(false).map_err(kind)?;
        ready
    }
}

impl embedded_io::Write for TcpLine {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        self.0.write(buf).map_err(kind)
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        self.0.flush().map_err(kind)
    }
}
