//! A main loop sleeps on `wait_input` until a byte arrives, and the frame
//! that byte starts is received whole afterwards: waiting takes nothing.
#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::task::Poll;

use embassy_futures::{block_on, poll_once};
use telemark_core::transport::AsyncTransport;
use telemark_serial::{encode, overhead, SerialTransport};

/// A UART's receive buffer, as embassy's buffered UARTs expose it.
#[derive(Default)]
struct Line {
    rx: VecDeque<u8>,
}

impl embedded_io_async::ErrorType for Line {
    type Error = Infallible;
}

impl embedded_io_async::Read for Line {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, Infallible> {
        let n = buf.len().min(self.rx.len());
        for (d, s) in buf.iter_mut().zip(self.rx.drain(..n)) {
            *d = s;
        }
        Ok(n)
    }
}

impl embedded_io_async::BufRead for Line {
    async fn fill_buf(&mut self) -> Result<&[u8], Infallible> {
        if self.rx.is_empty() {
            // Nothing received: a real UART's future waits for its interrupt.
            core::future::pending::<()>().await;
        }
        Ok(self.rx.as_slices().0)
    }

    fn consume(&mut self, amt: usize) {
        self.rx.drain(..amt.min(self.rx.len()));
    }
}

impl embedded_io_async::ReadReady for Line {
    fn read_ready(&mut self) -> Result<bool, Infallible> {
        Ok(!self.rx.is_empty())
    }
}

impl embedded_io_async::Write for Line {
    async fn write(&mut self, buf: &[u8]) -> Result<usize, Infallible> {
        Ok(buf.len())
    }

    async fn flush(&mut self) -> Result<(), Infallible> {
        Ok(())
    }
}

#[test]
fn waiting_for_input_sleeps_on_a_quiet_line_and_takes_no_byte() {
    let mut serial: SerialTransport<Line, 64> = SerialTransport::new(Line::default());
    assert!(
        matches!(poll_once(serial.wait_input()), Poll::Pending),
        "a quiet line keeps the loop asleep"
    );

    let mut wire = [0u8; 64];
    let n = encode(b"ack", &mut wire).unwrap();
    assert!(n <= 3 + overhead(3));
    let mut serial = SerialTransport::<_, 64>::new(Line {
        rx: wire[..n].iter().copied().collect(),
    });
    assert!(matches!(
        poll_once(serial.wait_input()),
        Poll::Ready(Ok(()))
    ));
    // Woken twice, still nothing taken.
    assert!(matches!(
        poll_once(serial.wait_input()),
        Poll::Ready(Ok(()))
    ));
    let mut buf = [0u8; 64];
    let got = block_on(serial.receive(&mut buf)).unwrap();
    assert_eq!(got.map(|n| &buf[..n]), Some(&b"ack"[..]));
    assert!(matches!(poll_once(serial.wait_input()), Poll::Pending));
}
