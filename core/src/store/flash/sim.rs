//! NOR flash in RAM that can lose power after a given number of bytes: the
//! fault injector the flash store's power-cut tests and fuzz target run on,
//! and a way to test firmware logic against the flash store on a host.

use core::fmt;

use embedded_storage::nor_flash::{
    ErrorType, MultiwriteNorFlash, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};

/// Why a [`SimFlash`] operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum SimFlashError {
    /// The power budget ran out: the operation was cut where it stood, and
    /// the flash stays unpowered until [`SimFlash::power_on`].
    PowerCut,
    /// An offset or length not aligned to the flash's write or erase size.
    NotAligned,
    /// Past the end of the flash.
    OutOfBounds,
}

impl fmt::Display for SimFlashError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SimFlashError::PowerCut => f.write_str("power cut"),
            SimFlashError::NotAligned => f.write_str("not aligned"),
            SimFlashError::OutOfBounds => f.write_str("out of bounds"),
        }
    }
}

impl NorFlashError for SimFlashError {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            SimFlashError::PowerCut => NorFlashErrorKind::Other,
            SimFlashError::NotAligned => NorFlashErrorKind::NotAligned,
            SimFlashError::OutOfBounds => NorFlashErrorKind::OutOfBounds,
        }
    }
}

/// `PAGES` pages of `PAGE` bytes of NOR flash in RAM, written in 4-byte
/// words.
///
/// Like NOR flash, a write can only clear bits (a word may be written more
/// than once, as on the nRF52's NVMC), and only an erase sets a page back to
/// `0xFF`. Writes and erases spend a power budget byte by byte
/// ([`SimFlash::cut_after`]); when it runs out the operation stops at that
/// byte, leaving a torn write or a half-erased page, and every operation
/// fails until [`SimFlash::power_on`]. Erases are counted per page, for
/// wear figures.
///
/// ```
/// use embedded_storage::nor_flash::{NorFlash, ReadNorFlash};
/// use telemark_core::store::SimFlash;
///
/// let mut flash = SimFlash::<256, 4>::new();
/// flash.cut_after(6);
/// assert!(flash.write(0, &[0; 8]).is_err());
/// flash.power_on();
/// let mut back = [0xAA; 8];
/// flash.read(0, &mut back).unwrap();
/// assert_eq!(back, [0, 0, 0, 0, 0, 0, 0xFF, 0xFF]);
/// ```
#[derive(Clone, Debug)]
pub struct SimFlash<const PAGE: usize, const PAGES: usize> {
    pages: [[u8; PAGE]; PAGES],
    erases: [u32; PAGES],
    budget: Option<u64>,
    /// A cut armed for the next write or erase, at this byte of it (modulo
    /// its length).
    cut_next: Option<u64>,
    powered: bool,
    spent: u64,
    read: u64,
}

impl<const PAGE: usize, const PAGES: usize> Default for SimFlash<PAGE, PAGES> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const PAGE: usize, const PAGES: usize> SimFlash<PAGE, PAGES> {
    /// Erased flash with power and no budget.
    pub const fn new() -> Self {
        SimFlash {
            pages: [[0xFF; PAGE]; PAGES],
            erases: [0; PAGES],
            budget: None,
            cut_next: None,
            powered: true,
            spent: 0,
            read: 0,
        }
    }

    /// Flash whose byte `i` is `byte(i)`: garbage, or an image to start from.
    pub fn with_contents(mut byte: impl FnMut(usize) -> u8) -> Self {
        let mut flash = Self::new();
        for (i, b) in flash.pages.iter_mut().flatten().enumerate() {
            *b = byte(i);
        }
        flash
    }

    /// Cuts the power after `bytes` more bytes of writes and erases.
    pub fn cut_after(&mut self, bytes: u64) {
        self.budget = Some(bytes);
    }

    /// Cuts the power inside the next write or erase, at byte `at` of it
    /// (taken modulo its length): a cut at a random byte of a random
    /// operation, whatever the operations' sizes.
    pub fn cut_in_next(&mut self, at: u64) {
        self.cut_next = Some(at);
    }

    /// Restores power, with no budget and no cut armed.
    pub fn power_on(&mut self) {
        self.powered = true;
        self.budget = None;
        self.cut_next = None;
    }

    /// An operation of `len` bytes begins: a cut armed for it takes effect.
    fn begin(&mut self, len: usize) {
        if let Some(at) = self.cut_next.take() {
            self.budget = Some(at % (len as u64).max(1));
        }
    }

    /// True after a cut, until [`SimFlash::power_on`].
    pub fn is_cut(&self) -> bool {
        !self.powered
    }

    /// Bytes written and erased so far, over all power cycles.
    pub fn spent(&self) -> u64 {
        self.spent
    }

    /// Bytes read so far, over all power cycles: what a store's operations
    /// cost in flash reads.
    pub fn read_bytes(&self) -> u64 {
        self.read
    }

    /// Erases of each page so far.
    pub fn erase_counts(&self) -> &[u32; PAGES] {
        &self.erases
    }

    /// Spends one byte of the budget; false (and power off) if none is left.
    fn spend(&mut self) -> bool {
        match &mut self.budget {
            Some(0) => {
                self.powered = false;
                false
            }
            Some(n) => {
                *n -= 1;
                self.spent += 1;
                true
            }
            None => {
                self.spent += 1;
                true
            }
        }
    }

    fn check(&self, offset: u32, len: usize, align: usize) -> Result<(), SimFlashError> {
        if !self.powered {
            return Err(SimFlashError::PowerCut);
        }
        let offset = offset as usize;
        if !offset.is_multiple_of(align) || !len.is_multiple_of(align) {
            return Err(SimFlashError::NotAligned);
        }
        match offset.checked_add(len) {
            Some(end) if end <= PAGE * PAGES => Ok(()),
            _ => Err(SimFlashError::OutOfBounds),
        }
    }

    fn byte_mut(&mut self, at: usize) -> Option<&mut u8> {
        self.pages.get_mut(at / PAGE)?.get_mut(at % PAGE)
    }
}

impl<const PAGE: usize, const PAGES: usize> ErrorType for SimFlash<PAGE, PAGES> {
    type Error = SimFlashError;
}

impl<const PAGE: usize, const PAGES: usize> ReadNorFlash for SimFlash<PAGE, PAGES> {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        self.check(offset, bytes.len(), 1)?;
        self.read += bytes.len() as u64;
        for (i, out) in bytes.iter_mut().enumerate() {
            let at = offset as usize + i;
            *out = self
                .pages
                .get(at / PAGE)
                .and_then(|p| p.get(at % PAGE))
                .copied()
                .unwrap_or(0xFF);
        }
        Ok(())
    }

    fn capacity(&self) -> usize {
        PAGE * PAGES
    }
}

impl<const PAGE: usize, const PAGES: usize> NorFlash for SimFlash<PAGE, PAGES> {
    const WRITE_SIZE: usize = 4;
    const ERASE_SIZE: usize = PAGE;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        let len = (to as usize)
            .checked_sub(from as usize)
            .ok_or(SimFlashError::OutOfBounds)?;
        self.check(from, len, PAGE)?;
        self.begin(len);
        for page in (from as usize / PAGE)..(to as usize / PAGE) {
            for at in 0..PAGE {
                if !self.spend() {
                    return Err(SimFlashError::PowerCut);
                }
                if let Some(b) = self.byte_mut(page * PAGE + at) {
                    *b = 0xFF;
                }
            }
            if let Some(n) = self.erases.get_mut(page) {
                *n += 1;
            }
        }
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        self.check(offset, bytes.len(), 4)?;
        self.begin(bytes.len());
        for (i, &new) in bytes.iter().enumerate() {
            if !self.spend() {
                return Err(SimFlashError::PowerCut);
            }
            if let Some(b) = self.byte_mut(offset as usize + i) {
                *b &= new;
            }
        }
        Ok(())
    }
}

impl<const PAGE: usize, const PAGES: usize> MultiwriteNorFlash for SimFlash<PAGE, PAGES> {}
