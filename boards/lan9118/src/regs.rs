//! The register block: every access to the chip is a volatile read or
//! write of one of these registers, and this module is the only place
//! that touches memory-mapped I/O.
#![allow(unsafe_code)]

/// The registers of the chip's system control block, by offset from its
/// base. Only these can be read or written, so every access stays inside
/// the block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub(crate) enum Reg {
    RxData = 0x00,
    TxData = 0x20,
    RxStatus = 0x40,
    TxStatus = 0x48,
    IdRev = 0x50,
    IrqCfg = 0x54,
    IntSts = 0x58,
    IntEn = 0x5C,
    ByteTest = 0x64,
    RxCfg = 0x6C,
    TxCfg = 0x70,
    HwCfg = 0x74,
    RxFifoInf = 0x7C,
    TxFifoInf = 0x80,
    PmtCtrl = 0x84,
    MacCsrCmd = 0xA4,
    MacCsrData = 0xA8,
}

/// The register block of one LAN9118 (or LAN9220, which shares its
/// layout), at the address the board maps it to.
#[derive(Clone, Copy, Debug)]
pub struct Registers {
    base: usize,
}

/// Where the Arm MPS2 boards (and QEMU's `mps2-an385` and `mps2-an386`)
/// map the chip.
pub const MPS2_BASE: usize = 0x4020_0000;

impl Registers {
    /// The register block at `base`.
    ///
    /// # Safety
    ///
    /// `base` must be the address at which the board maps a LAN9118's
    /// register block (256 bytes, word-aligned), and nothing else may
    /// access that block while the driver built on it lives: the driver
    /// reads FIFOs, whose reads have side effects.
    pub const unsafe fn new(base: usize) -> Self {
        Registers { base }
    }

    pub(crate) fn read(self, reg: Reg) -> u32 {
        let addr = (self.base + reg as usize) as *const u32;
        // SAFETY: `new`'s contract makes `base` the chip's word-aligned
        // register block, exclusively ours; `reg` is one of its registers,
        // at most 0xA8 bytes in, so `addr` is an aligned device register.
        unsafe { core::ptr::read_volatile(addr) }
    }

    pub(crate) fn write(self, reg: Reg, value: u32) {
        let addr = (self.base + reg as usize) as *mut u32;
        // SAFETY: as in `read`: an aligned register of the block that
        // `new`'s caller gave to this driver alone.
        unsafe { core::ptr::write_volatile(addr, value) }
    }
}
