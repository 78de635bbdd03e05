//! Why the chip reset, from the flags its reset controller latched.
//!
//! Each family keeps the causes of the last reset in a register until
//! software clears them: `RCC_CSR` on the STM32F4, `POWER.RESETREAS` on the
//! nRF52. The firmware reads the register once at start-up, clears it (so
//! the next reset is not reported with this one's flags), and gives the
//! engine the [`ResetReason`] these functions name. A crash record taken
//! from [`crate::crash::take`] wins over the flags: the handlers reset the
//! chip by software, which the register alone would call a software reset.
//!
//! ```
//! use telemark_core::wire::report::ResetReason;
//! use telemark_cortex_m::reset;
//!
//! // The independent watchdog fired (IWDGRSTF, with PINRSTF set by the
//! // reset pulse on NRST).
//! let csr = 1 << 29 | 1 << 26;
//! assert_eq!(reset::stm32f4(csr, false), ResetReason::Watchdog);
//! // The panic handler recorded a crash, then reset by software.
//! assert_eq!(reset::stm32f4(1 << 28 | 1 << 26, true), ResetReason::Crash);
//! // nRF52: no flag at all is the power-on (or brown-out) reset.
//! assert_eq!(reset::nrf52(0, false), ResetReason::PowerOn);
//! ```

use telemark_core::wire::report::ResetReason;

/// `RCC_CSR` flags of the STM32F4 family (RM0090, 7.3.21).
mod csr {
    pub const LPWRRSTF: u32 = 1 << 31;
    pub const WWDGRSTF: u32 = 1 << 30;
    pub const IWDGRSTF: u32 = 1 << 29;
    pub const SFTRSTF: u32 = 1 << 28;
    pub const PORRSTF: u32 = 1 << 27;
    pub const PINRSTF: u32 = 1 << 26;
    pub const BORRSTF: u32 = 1 << 25;
}

/// The bit of `RCC_CSR` that clears the reset flags when written with 1.
pub const STM32F4_CSR_RMVF: u32 = 1 << 24;

/// The reset reason of an STM32F4 from its `RCC_CSR`; `crashed` when a
/// crash record was found.
///
/// Every reset drives the NRST pin, so PINRSTF is set with any cause and
/// means the pin only when nothing else is set; a power-on also sets
/// BORRSTF, so PORRSTF is read before it.
pub fn stm32f4(csr: u32, crashed: bool) -> ResetReason {
    use csr::*;
    if crashed {
        ResetReason::Crash
    } else if csr & (IWDGRSTF | WWDGRSTF) != 0 {
        ResetReason::Watchdog
    } else if csr & SFTRSTF != 0 {
        ResetReason::Software
    } else if csr & PORRSTF != 0 {
        ResetReason::PowerOn
    } else if csr & BORRSTF != 0 {
        ResetReason::BrownOut
    } else if csr & LPWRRSTF != 0 {
        // Entering Standby or Stop with nRST_STDBY/nRST_STOP cleared in
        // the option bytes: a deliberate low-power reset, not a fault.
        ResetReason::Software
    } else if csr & PINRSTF != 0 {
        ResetReason::Pin
    } else {
        ResetReason::Unknown
    }
}

/// `POWER.RESETREAS` flags of the nRF52 family (nRF52840 PS, 5.3.7.11).
mod resetreas {
    pub const RESETPIN: u32 = 1 << 0;
    pub const DOG: u32 = 1 << 1;
    pub const SREQ: u32 = 1 << 2;
    pub const LOCKUP: u32 = 1 << 3;
    pub const OFF: u32 = 1 << 16;
    pub const LPCOMP: u32 = 1 << 17;
    pub const DIF: u32 = 1 << 18;
    pub const NFC: u32 = 1 << 19;
    pub const VBUS: u32 = 1 << 20;
}

/// Every flag of `POWER.RESETREAS`: written back, it clears them.
pub const NRF52_RESETREAS_ALL: u32 = 0x001F_000F;

/// The reset reason of an nRF52 from its `POWER.RESETREAS`; `crashed`
/// when a crash record was found.
///
/// The register names no flag after a power-on or a brown-out reset (the
/// on-chip reset generator), which this calls [`ResetReason::PowerOn`]:
/// the chip cannot tell the two apart. A CPU lockup (a fault inside the
/// fault handler) is a crash even without a record.
pub fn nrf52(resetreas: u32, crashed: bool) -> ResetReason {
    use resetreas::*;
    if crashed || resetreas & LOCKUP != 0 {
        ResetReason::Crash
    } else if resetreas & DOG != 0 {
        ResetReason::Watchdog
    } else if resetreas & SREQ != 0 {
        ResetReason::Software
    } else if resetreas & RESETPIN != 0 {
        ResetReason::Pin
    } else if resetreas & (OFF | LPCOMP | NFC | VBUS) != 0 {
        // A wake-up from System OFF, which the firmware entered itself.
        ResetReason::Software
    } else if resetreas & DIF != 0 {
        // A debugger woke the chip.
        ResetReason::Unknown
    } else {
        ResetReason::PowerOn
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stm32f4_names_the_cause_behind_the_pin_flag() {
        use csr::*;
        // What RM0090 says each reset sets: the cause and the pin flag.
        let cases = [
            (PORRSTF | BORRSTF | PINRSTF, ResetReason::PowerOn),
            (BORRSTF | PINRSTF, ResetReason::BrownOut),
            (IWDGRSTF | PINRSTF, ResetReason::Watchdog),
            (WWDGRSTF | PINRSTF, ResetReason::Watchdog),
            (SFTRSTF | PINRSTF, ResetReason::Software),
            (LPWRRSTF | PINRSTF, ResetReason::Software),
            (PINRSTF, ResetReason::Pin),
            (0, ResetReason::Unknown),
        ];
        for (flags, reason) in cases {
            assert_eq!(stm32f4(flags, false), reason, "{flags:#010x}");
            assert_eq!(stm32f4(flags, true), ResetReason::Crash, "{flags:#010x}");
        }
        assert_eq!(STM32F4_CSR_RMVF & (PINRSTF | BORRSTF), 0);
    }

    #[test]
    fn nrf52_reads_no_flag_as_power_on_and_lockup_as_a_crash() {
        use resetreas::*;
        let cases = [
            (0, ResetReason::PowerOn),
            (RESETPIN, ResetReason::Pin),
            (DOG, ResetReason::Watchdog),
            (SREQ, ResetReason::Software),
            (LOCKUP, ResetReason::Crash),
            (OFF, ResetReason::Software),
            (VBUS, ResetReason::Software),
            (DIF, ResetReason::Unknown),
            (DOG | RESETPIN, ResetReason::Watchdog),
        ];
        for (flags, reason) in cases {
            assert_eq!(nrf52(flags, false), reason, "{flags:#010x}");
        }
        assert_eq!(nrf52(SREQ, true), ResetReason::Crash);
        let all = RESETPIN | DOG | SREQ | LOCKUP | OFF | LPCOMP | DIF | NFC | VBUS;
        assert_eq!(NRF52_RESETREAS_ALL, all);
    }
}
