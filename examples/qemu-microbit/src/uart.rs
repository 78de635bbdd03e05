//! The nRF51's UART, polled, as an embedded-io serial port.
//!
//! QEMU's model needs no pin setup; on silicon, set PSELTXD/PSELRXD to the
//! board's pins (the micro:bit's USB bridge: P0.24 TX, P0.25 RX) and
//! BAUDRATE first.

use core::convert::Infallible;
use core::ptr;

const BASE: usize = 0x4000_2000;
const STARTRX: *mut u32 = BASE as *mut u32;
const STARTTX: *mut u32 = (BASE + 0x008) as *mut u32;
const RXDRDY: *mut u32 = (BASE + 0x108) as *mut u32;
const TXDRDY: *mut u32 = (BASE + 0x11C) as *mut u32;
const ENABLE: *mut u32 = (BASE + 0x500) as *mut u32;
const RXD: *mut u32 = (BASE + 0x518) as *mut u32;
const TXD: *mut u32 = (BASE + 0x51C) as *mut u32;

fn read(reg: *mut u32) -> u32 {
    // SAFETY: `reg` is one of the UART's registers, always mapped on the
    // nRF51; only this driver touches the UART.
    unsafe { ptr::read_volatile(reg) }
}

fn write(reg: *mut u32, value: u32) {
    // SAFETY: as for `read`; the values written are the documented ones.
    unsafe { ptr::write_volatile(reg, value) }
}

/// The UART, owned by the firmware's serial transport.
pub struct Uart(());

impl Uart {
    /// Enables the UART and starts both directions.
    pub fn take() -> Self {
        write(ENABLE, 4);
        write(STARTRX, 1);
        write(STARTTX, 1);
        Uart(())
    }

    /// A byte is waiting: the firmware's idle loop wakes for it.
    pub fn has_input() -> bool {
        read(RXDRDY) != 0
    }
}

impl embedded_io::ErrorType for Uart {
    type Error = Infallible;
}

impl embedded_io::ReadReady for Uart {
    fn read_ready(&mut self) -> Result<bool, Infallible> {
        Ok(Self::has_input())
    }
}

impl embedded_io::Read for Uart {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Infallible> {
        let mut n = 0;
        for slot in buf.iter_mut() {
            // Block for the first byte only, as embedded-io asks.
            while n == 0 && !Self::has_input() {}
            if !Self::has_input() {
                break;
            }
            // Clear the event before reading: the next byte sets it again.
            write(RXDRDY, 0);
            *slot = read(RXD) as u8;
            n += 1;
        }
        Ok(n)
    }
}

impl embedded_io::Write for Uart {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Infallible> {
        for &b in buf {
            write(TXDRDY, 0);
            write(TXD, u32::from(b));
            while read(TXDRDY) == 0 {}
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<(), Infallible> {
        Ok(())
    }
}
