#![doc = include_str!("../README.md")]
#![cfg_attr(not(test), no_std)]

mod regs;

use core::cell::Cell;
use core::sync::atomic::{AtomicBool, Ordering};
use core::task::Context;

use critical_section::Mutex;
use embassy_net_driver::{Capabilities, HardwareAddress, LinkState};
use embassy_sync::waitqueue::AtomicWaker;

use regs::Reg;
pub use regs::{Registers, MPS2_BASE};

/// Largest Ethernet frame the driver carries, without its CRC.
pub const MAX_FRAME: usize = 1514;
/// Frame buffers: a frame rounded up to whole FIFO words.
const BUFFER: usize = 1516;

/// What `BYTE_TEST` reads on a LAN9118 whose bus is wired right.
const BYTE_TEST: u32 = 0x8765_4321;

// HW_CFG, PMT_CTRL
const HW_CFG_SRST: u32 = 1 << 0;
const PMT_CTRL_READY: u32 = 1 << 0;
// INT_STS, INT_EN
const INT_RSFL: u32 = 1 << 3;
const INT_PHY: u32 = 1 << 18;
// IRQ_CFG: enabled, active high, push-pull.
const IRQ_CFG_ON: u32 = (1 << 8) | (1 << 4) | (1 << 0);
// TX_CFG: transmitter on; a full status FIFO is not an error (the driver
// drains it after each frame anyway).
const TX_CFG_ON: u32 = (1 << 1) | (1 << 2);
// TX command A: first and last segment of a frame.
const TX_FIRST: u32 = 1 << 13;
const TX_LAST: u32 = 1 << 12;
// RX status
const RX_ERROR: u32 = 1 << 15;
// MAC_CSR_CMD
const CSR_BUSY: u32 = 1 << 31;
const CSR_READ: u32 = 1 << 30;
// MAC registers
const MAC_CR: u8 = 1;
const MAC_ADDRH: u8 = 2;
const MAC_ADDRL: u8 = 3;
const MAC_MII_ACC: u8 = 6;
const MAC_MII_DATA: u8 = 7;
const MAC_CR_TXEN: u32 = 1 << 3;
const MAC_CR_RXEN: u32 = 1 << 2;
const MAC_CR_FDPX: u32 = 1 << 20;
// MII_ACC: the internal PHY is at address 1.
const MII_BUSY: u32 = 1 << 0;
const MII_WRITE: u32 = 1 << 1;
const PHY_ADDR: u32 = 1 << 11;
// PHY registers
const PHY_BCR: u32 = 0;
const PHY_BSR: u32 = 1;
const PHY_ANAR: u32 = 4;
const PHY_ANLPAR: u32 = 5;
const PHY_INT_SOURCE: u32 = 29;
const PHY_INT_MASK: u32 = 30;
const BCR_AUTONEG: u32 = (1 << 12) | (1 << 9);
const BSR_LINK: u32 = 1 << 2;
const AN_FULL_DUPLEX: u32 = (1 << 8) | (1 << 6);
const PHY_INT_LINK: u32 = (1 << 4) | (1 << 6);

/// Register polls before a busy bit that never clears is an error.
const SPINS: u32 = 100_000;

static REGS: Mutex<Cell<Option<Registers>>> = Mutex::new(Cell::new(None));
static RX_WAKER: AtomicWaker = AtomicWaker::new();
static LINK_WAKER: AtomicWaker = AtomicWaker::new();
static LINK_CHANGED: AtomicBool = AtomicBool::new(true);

/// Why the chip could not be brought up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// `BYTE_TEST` did not read `0x87654321`: no LAN9118 at that address,
    /// or a bus wired with the wrong width or byte order. Holds what it read.
    NotFound(u32),
    /// The chip did not finish its soft reset, or its PHY never said ready.
    NotReady,
    /// A MAC or PHY register access stayed busy.
    Busy,
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Error::NotFound(v) => write!(f, "no LAN9118 answers (BYTE_TEST read {v:#010x})"),
            Error::NotReady => f.write_str("the LAN9118 did not come out of reset"),
            Error::Busy => f.write_str("a LAN9118 MAC or PHY register stayed busy"),
        }
    }
}

/// What the driver counted since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Frames received.
    pub rx_frames: u32,
    /// Frames the chip flagged with an error, or too short or too long,
    /// dropped.
    pub rx_dropped: u32,
    /// Frames sent.
    pub tx_frames: u32,
    /// Frames dropped because the transmit FIFO stayed full.
    pub tx_dropped: u32,
}

/// The driver: an [`embassy_net_driver::Driver`] for `embassy-net`.
///
/// Call [`on_interrupt`] from the chip's interrupt handler; the driver
/// needs no polling besides.
pub struct Lan9118 {
    regs: Registers,
    mac: [u8; 6],
    link: LinkState,
    counters: Counters,
    rx: [u8; BUFFER],
    tx: [u8; BUFFER],
}

impl Lan9118 {
    /// Resets the chip and brings it up with address `mac`: the PHY
    /// autonegotiating, the MAC filtering on `mac` and broadcast, and the
    /// chip's interrupt line enabled (active high) for received frames
    /// and link changes. Unmask the line in the interrupt controller once
    /// this returns.
    pub fn new(regs: Registers, mac: [u8; 6]) -> Result<Self, Error> {
        let found = regs.read(Reg::ByteTest);
        if found != BYTE_TEST {
            return Err(Error::NotFound(found));
        }
        regs.write(Reg::HwCfg, HW_CFG_SRST);
        spin(|| regs.read(Reg::HwCfg) & HW_CFG_SRST == 0).ok_or(Error::NotReady)?;
        spin(|| regs.read(Reg::PmtCtrl) & PMT_CTRL_READY != 0).ok_or(Error::NotReady)?;
        let chip = Lan9118 {
            regs,
            mac,
            link: LinkState::Down,
            counters: Counters::default(),
            rx: [0; BUFFER],
            tx: [0; BUFFER],
        };
        let [a, b, c, d, e, f] = mac;
        chip.mac_write(MAC_ADDRL, u32::from_le_bytes([a, b, c, d]))?;
        chip.mac_write(MAC_ADDRH, u32::from_le_bytes([e, f, 0, 0]))?;
        chip.phy_write(PHY_INT_MASK, PHY_INT_LINK)?;
        chip.phy_write(PHY_BCR, BCR_AUTONEG)?;
        chip.mac_write(MAC_CR, MAC_CR_TXEN | MAC_CR_RXEN)?;
        regs.write(Reg::TxCfg, TX_CFG_ON);
        regs.write(Reg::RxCfg, 0);
        regs.write(Reg::IntSts, u32::MAX);
        regs.write(Reg::IntEn, INT_RSFL | INT_PHY);
        regs.write(Reg::IrqCfg, IRQ_CFG_ON);
        critical_section::with(|cs| REGS.borrow(cs).set(Some(regs)));
        LINK_CHANGED.store(true, Ordering::Release);
        Ok(chip)
    }

    /// The chip's `ID_REV`: its part number in the high half (`0x0118`
    /// for a LAN9118), its revision in the low.
    pub fn id_rev(&self) -> u32 {
        self.regs.read(Reg::IdRev)
    }

    /// The frames counted so far.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    fn mac_wait(&self) -> Result<(), Error> {
        spin(|| self.regs.read(Reg::MacCsrCmd) & CSR_BUSY == 0).ok_or(Error::Busy)
    }

    fn mac_read(&self, reg: u8) -> Result<u32, Error> {
        self.mac_wait()?;
        self.regs
            .write(Reg::MacCsrCmd, CSR_BUSY | CSR_READ | u32::from(reg));
        self.mac_wait()?;
        Ok(self.regs.read(Reg::MacCsrData))
    }

    fn mac_write(&self, reg: u8, value: u32) -> Result<(), Error> {
        self.mac_wait()?;
        self.regs.write(Reg::MacCsrData, value);
        self.regs.write(Reg::MacCsrCmd, CSR_BUSY | u32::from(reg));
        self.mac_wait()
    }

    fn mii_wait(&self) -> Result<(), Error> {
        for _ in 0..SPINS {
            if self.mac_read(MAC_MII_ACC)? & MII_BUSY == 0 {
                return Ok(());
            }
        }
        Err(Error::Busy)
    }

    fn phy_read(&self, reg: u32) -> Result<u32, Error> {
        self.mii_wait()?;
        self.mac_write(MAC_MII_ACC, PHY_ADDR | reg << 6 | MII_BUSY)?;
        self.mii_wait()?;
        Ok(self.mac_read(MAC_MII_DATA)? & 0xFFFF)
    }

    fn phy_write(&self, reg: u32, value: u32) -> Result<(), Error> {
        self.mii_wait()?;
        self.mac_write(MAC_MII_DATA, value)?;
        self.mac_write(MAC_MII_ACC, PHY_ADDR | reg << 6 | MII_WRITE | MII_BUSY)?;
        self.mii_wait()
    }

    /// Reads the link from the PHY, acknowledges its interrupt, and sets
    /// the MAC's duplex to what autonegotiation agreed.
    fn read_link(&mut self) -> Result<LinkState, Error> {
        self.phy_read(PHY_INT_SOURCE)?;
        let up = self.phy_read(PHY_BSR)? & BSR_LINK != 0;
        if up {
            let common = self.phy_read(PHY_ANAR)? & self.phy_read(PHY_ANLPAR)?;
            let mut cr = self.mac_read(MAC_CR)? & !MAC_CR_FDPX;
            if common & AN_FULL_DUPLEX != 0 {
                cr |= MAC_CR_FDPX;
            }
            self.mac_write(MAC_CR, cr)?;
        }
        Ok(if up { LinkState::Up } else { LinkState::Down })
    }

    /// Pops the next good frame into `rx`, dropping (and counting) those
    /// the chip flagged or that do not fit; its length, or `None` when the
    /// receive FIFO is empty.
    fn pop_frame(&mut self) -> Option<usize> {
        loop {
            if fifo_level(self.regs.read(Reg::RxFifoInf)) == 0 {
                return None;
            }
            let status = RxStatus(self.regs.read(Reg::RxStatus));
            let len = status.frame_len();
            let keep = !status.error() && (14..=MAX_FRAME).contains(&len);
            let mut at = 0;
            for _ in 0..status.words() {
                let word = self.regs.read(Reg::RxData).to_le_bytes();
                if keep {
                    if let Some(slot) = self.rx.get_mut(at..at + 4) {
                        slot.copy_from_slice(&word);
                    }
                }
                at += 4;
            }
            if keep {
                self.counters.rx_frames += 1;
                return Some(len);
            }
            self.counters.rx_dropped += 1;
        }
    }
}

/// Services the chip's interrupt: wakes the receiver for frames in the
/// FIFO, and the link watcher for a PHY event. Call it from the handler of
/// the chip's interrupt line (`EthernetInterrupt`, IRQ 13, on the MPS2
/// boards).
pub fn on_interrupt() {
    critical_section::with(|cs| {
        let Some(regs) = REGS.borrow(cs).get() else {
            return;
        };
        let enabled = regs.read(Reg::IntEn);
        let pending = regs.read(Reg::IntSts) & enabled;
        if pending & INT_RSFL != 0 {
            regs.write(Reg::IntSts, INT_RSFL);
            RX_WAKER.wake();
        }
        if pending & INT_PHY != 0 {
            // The PHY holds its line until its source register is read,
            // which takes MII cycles: mask it here, and let `link_state`
            // read it and unmask.
            regs.write(Reg::IntEn, enabled & !INT_PHY);
            LINK_CHANGED.store(true, Ordering::Release);
            LINK_WAKER.wake();
        }
    });
}

/// Polls `done` until it holds, at most [`SPINS`] times.
fn spin(mut done: impl FnMut() -> bool) -> Option<()> {
    (0..SPINS).any(|_| done()).then_some(())
}

/// Entries in the RX status FIFO, from `RX_FIFO_INF`.
fn fifo_level(rx_fifo_inf: u32) -> u32 {
    (rx_fifo_inf >> 16) & 0xFF
}

/// One word of the RX status FIFO.
#[derive(Clone, Copy, Debug)]
struct RxStatus(u32);

impl RxStatus {
    /// Bytes of the frame as the chip stored it, its 4-byte CRC included.
    fn stored_len(self) -> usize {
        ((self.0 >> 16) & 0x3FFF) as usize
    }
    /// The frame without its CRC.
    fn frame_len(self) -> usize {
        self.stored_len().saturating_sub(4)
    }
    /// FIFO words the frame takes (with no offset, 4-byte end alignment).
    fn words(self) -> usize {
        self.stored_len().div_ceil(4)
    }
    fn error(self) -> bool {
        self.0 & RX_ERROR != 0
    }
}

/// TX command words A and B for a frame of `len` bytes sent whole.
fn tx_commands(len: usize, tag: u16) -> (u32, u32) {
    let len = len as u32 & 0x7FF;
    (TX_FIRST | TX_LAST | len, u32::from(tag) << 16 | len)
}

impl embassy_net_driver::Driver for Lan9118 {
    type RxToken<'a> = RxToken<'a>;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, cx: &mut Context<'_>) -> Option<(RxToken<'_>, TxToken<'_>)> {
        // Registered first: a frame that lands after the FIFO reads empty
        // raises the interrupt, which wakes this waker.
        RX_WAKER.register(cx.waker());
        let len = self.pop_frame()?;
        let rx = RxToken {
            frame: self.rx.get_mut(..len).unwrap_or_default(),
        };
        let tx = TxToken {
            regs: self.regs,
            buffer: &mut self.tx,
            counters: &mut self.counters,
        };
        Some((rx, tx))
    }

    fn transmit(&mut self, _cx: &mut Context<'_>) -> Option<TxToken<'_>> {
        Some(TxToken {
            regs: self.regs,
            buffer: &mut self.tx,
            counters: &mut self.counters,
        })
    }

    fn link_state(&mut self, cx: &mut Context<'_>) -> LinkState {
        LINK_WAKER.register(cx.waker());
        if LINK_CHANGED.swap(false, Ordering::AcqRel) {
            self.link = match self.read_link() {
                Ok(link) => link,
                // An MII that stays busy reads as no link; the next PHY
                // interrupt tries again.
                Err(_) => LinkState::Down,
            };
            critical_section::with(|_| {
                let enabled = self.regs.read(Reg::IntEn);
                self.regs.write(Reg::IntEn, enabled | INT_PHY);
            });
        }
        self.link
    }

    fn capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::default();
        caps.max_transmission_unit = MAX_FRAME;
        caps.max_burst_size = Some(1);
        caps
    }

    fn hardware_address(&self) -> HardwareAddress {
        HardwareAddress::Ethernet(self.mac)
    }
}

/// A received frame, lent to the network stack.
pub struct RxToken<'a> {
    frame: &'a mut [u8],
}

impl embassy_net_driver::RxToken for RxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, f: F) -> R {
        f(self.frame)
    }
}

/// Room for one frame to send.
pub struct TxToken<'a> {
    regs: Registers,
    buffer: &'a mut [u8; BUFFER],
    counters: &'a mut Counters,
}

impl embassy_net_driver::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let len = len.min(MAX_FRAME);
        let frame = self.buffer.get_mut(..len).unwrap_or_default();
        let out = f(frame);
        let regs = self.regs;
        // Command words and data, rounded up to whole words.
        let needed = (len.div_ceil(4) * 4 + 8) as u32;
        if spin(|| regs.read(Reg::TxFifoInf) & 0xFFFF >= needed).is_none() {
            self.counters.tx_dropped += 1;
            return out;
        }
        let (a, b) = tx_commands(len, self.counters.tx_frames as u16);
        regs.write(Reg::TxData, a);
        regs.write(Reg::TxData, b);
        for word in self.buffer.get(..len).unwrap_or_default().chunks(4) {
            let mut bytes = [0u8; 4];
            bytes
                .get_mut(..word.len())
                .unwrap_or_default()
                .copy_from_slice(word);
            regs.write(Reg::TxData, u32::from_le_bytes(bytes));
        }
        // Drain the TX status FIFO, which this driver does not use.
        while (regs.read(Reg::TxFifoInf) >> 16) & 0xFF != 0 {
            regs.read(Reg::TxStatus);
        }
        self.counters.tx_frames += 1;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_word_gives_the_frame_and_its_fifo_words() {
        // A 60-byte frame: 64 bytes stored with its CRC, 16 words.
        let s = RxStatus(64 << 16);
        assert_eq!((s.frame_len(), s.words(), s.error()), (60, 16, false));
        // 61 bytes: 65 stored, the last word partly filled.
        let s = RxStatus(65 << 16 | RX_ERROR);
        assert_eq!((s.frame_len(), s.words(), s.error()), (61, 17, true));
        // A runt that says less than its CRC.
        assert_eq!(RxStatus(2 << 16).frame_len(), 0);
    }

    #[test]
    fn a_whole_frame_is_its_first_and_last_segment() {
        let (a, b) = tx_commands(1514, 7);
        assert_eq!(a, TX_FIRST | TX_LAST | 1514);
        assert_eq!(b, 7 << 16 | 1514);
    }

    #[test]
    fn the_fifo_level_is_the_status_count() {
        assert_eq!(fifo_level(0x0003_0040), 3);
        assert_eq!(fifo_level(0x0000_0040), 0);
    }
}
