//! NOR flash semantics over 32 KiB of RAM that a reset leaves alone.
//!
//! QEMU does not emulate the STM32F4's flash controller, so this example
//! keeps the flash store's pages in RAM outside what the start-up code
//! initialises: like flash they survive a reset (a crash, a watchdog, a
//! reboot command), unlike flash they do not survive QEMU quitting. On a
//! board, the store goes in internal flash instead (see the embassy
//! examples); nothing else changes.

use core::mem::MaybeUninit;
use core::ptr::addr_of_mut;

use embedded_storage::nor_flash::{
    ErrorType, MultiwriteNorFlash, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};

/// Pages of the store.
pub const PAGE: usize = 1024;
/// Bytes of the store.
pub const SIZE: usize = 32 * PAGE;

#[unsafe(link_section = ".uninit.telemark_store")]
static mut PAGES: MaybeUninit<[u8; SIZE]> = MaybeUninit::uninit();

/// The retained pages, as NOR flash.
pub struct RetainedFlash(&'static mut [u8; SIZE]);

/// An access outside the pages or off the word grid.
#[derive(Debug)]
pub enum Error {
    /// Not aligned to a word (write) or a page (erase).
    NotAligned,
    /// Past the end.
    OutOfBounds,
}

impl NorFlashError for Error {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            Error::NotAligned => NorFlashErrorKind::NotAligned,
            Error::OutOfBounds => NorFlashErrorKind::OutOfBounds,
        }
    }
}

impl RetainedFlash {
    /// The pages; call once, at start-up.
    pub fn take() -> Self {
        // SAFETY: called once, from `main` before anything else runs, so
        // this is the only reference to `PAGES`. The memory is plain RAM:
        // after a power-on it holds arbitrary bytes, which the flash store
        // treats as untrusted (CRC-checked, formatted when unrecognised).
        let pages = unsafe { &mut *addr_of_mut!(PAGES).cast::<[u8; SIZE]>() };
        RetainedFlash(pages)
    }

    fn range(&mut self, offset: u32, len: usize) -> Result<&mut [u8], Error> {
        let start = offset as usize;
        self.0.get_mut(start..start + len).ok_or(Error::OutOfBounds)
    }
}

impl ErrorType for RetainedFlash {
    type Error = Error;
}

impl ReadNorFlash for RetainedFlash {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Error> {
        let len = bytes.len();
        bytes.copy_from_slice(self.range(offset, len)?);
        Ok(())
    }

    fn capacity(&self) -> usize {
        SIZE
    }
}

impl NorFlash for RetainedFlash {
    const WRITE_SIZE: usize = 4;
    const ERASE_SIZE: usize = PAGE;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), Error> {
        if !(from as usize).is_multiple_of(PAGE) || !(to as usize).is_multiple_of(PAGE) || to < from
        {
            return Err(Error::NotAligned);
        }
        self.range(from, (to - from) as usize)?.fill(0xFF);
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Error> {
        if !(offset as usize).is_multiple_of(4) || !bytes.len().is_multiple_of(4) {
            return Err(Error::NotAligned);
        }
        // Like NOR flash, a write only clears bits.
        for (cell, b) in self.range(offset, bytes.len())?.iter_mut().zip(bytes) {
            *cell &= *b;
        }
        Ok(())
    }
}

impl MultiwriteNorFlash for RetainedFlash {}
