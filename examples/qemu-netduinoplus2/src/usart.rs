//! USART1 of the STM32F405, polled, as an embedded-io serial port.
//!
//! QEMU's model needs no clock or pin setup; on silicon, enable the
//! USART1 and GPIOA clocks in RCC, put PA9/PA10 in alternate function 7 and
//! set BRR for the baud rate first.

use core::convert::Infallible;
use core::ptr;

const BASE: usize = 0x4001_1000;
const SR: *mut u32 = BASE as *mut u32;
const DR: *mut u32 = (BASE + 0x04) as *mut u32;
const CR1: *mut u32 = (BASE + 0x0C) as *mut u32;

const SR_RXNE: u32 = 1 << 5;
const SR_TC: u32 = 1 << 6;
const SR_TXE: u32 = 1 << 7;
const CR1_UE: u32 = 1 << 13;
const CR1_TE: u32 = 1 << 3;
const CR1_RE: u32 = 1 << 2;

fn read(reg: *mut u32) -> u32 {
    // SAFETY: `reg` is one of USART1's registers, always mapped on the
    // STM32F405; reading SR or DR is what this driver does to poll the
    // port, and only this driver touches USART1.
    unsafe { ptr::read_volatile(reg) }
}

fn write(reg: *mut u32, value: u32) {
    // SAFETY: as for `read`; the values written are the documented ones.
    unsafe { ptr::write_volatile(reg, value) }
}

/// USART1, owned by the firmware's serial transport.
pub struct Usart1(());

impl Usart1 {
    /// Enables the transmitter and receiver.
    pub fn take() -> Self {
        write(CR1, CR1_UE | CR1_TE | CR1_RE);
        Usart1(())
    }

    /// A byte is waiting: the firmware's idle loop wakes for it.
    pub fn has_input() -> bool {
        read(SR) & SR_RXNE != 0
    }
}

impl embedded_io::ErrorType for Usart1 {
    type Error = Infallible;
}

impl embedded_io::ReadReady for Usart1 {
    fn read_ready(&mut self) -> Result<bool, Infallible> {
        Ok(Self::has_input())
    }
}

impl embedded_io::Read for Usart1 {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Infallible> {
        let mut n = 0;
        for slot in buf.iter_mut() {
            // Block for the first byte only, as embedded-io asks.
            while n == 0 && !Self::has_input() {}
            if !Self::has_input() {
                break;
            }
            *slot = read(DR) as u8;
            n += 1;
        }
        Ok(n)
    }
}

impl embedded_io::Write for Usart1 {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Infallible> {
        for &b in buf {
            while read(SR) & SR_TXE == 0 {}
            write(DR, u32::from(b));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<(), Infallible> {
        while read(SR) & SR_TC == 0 {}
        Ok(())
    }
}
