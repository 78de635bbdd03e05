//! Crash capture: a record in no-init RAM, written by the panic and
//! HardFault handlers, read once after the reset.
//!
//! The record is nine words and a 32-byte text, guarded by a magic word
//! and a check word, so the random contents of RAM after a power-on are
//! not taken for a crash.
#![allow(unsafe_code)]

use core::fmt::{self, Write};
use core::mem::MaybeUninit;
use core::panic::PanicInfo;
use core::ptr::{addr_of, addr_of_mut};
use core::sync::atomic::{AtomicU32, Ordering};

use cortex_m_rt::ExceptionFrame;
use telemark_core::wire::report::{Crash, CrashKind, CRASH_TEXT};

const MAGIC: u32 = 0x7E1E_C0DE;
const WORDS: usize = 7 + CRASH_TEXT / 4;

/// The record: magic, kind, pc, lr, status, uptime, text length, text,
/// then a check word over all of them.
#[repr(C)]
struct Slot {
    words: [u32; WORDS],
    check: u32,
}

#[unsafe(link_section = ".uninit.telemark_crash")]
static mut SLOT: MaybeUninit<Slot> = MaybeUninit::uninit();

static UPTIME_MS: AtomicU32 = AtomicU32::new(0);

/// Tells crash capture the current uptime; call it from the main loop.
pub fn set_uptime(ms: u32) {
    UPTIME_MS.store(ms, Ordering::Relaxed);
}

fn check(words: &[u32; WORDS]) -> u32 {
    words.iter().fold(0x5A5A_5A5A, |acc, w| {
        acc.rotate_left(5) ^ w.wrapping_mul(0x9E37_79B9)
    })
}

/// Text of a crash, cut to [`CRASH_TEXT`] bytes.
struct Text {
    bytes: [u8; CRASH_TEXT],
    len: usize,
}

impl Write for Text {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            let mut utf8 = [0u8; 4];
            let encoded = c.encode_utf8(&mut utf8).as_bytes();
            let end = self.len + encoded.len();
            match self.bytes.get_mut(self.len..end) {
                Some(dst) => dst.copy_from_slice(encoded),
                None => return Err(fmt::Error),
            }
            self.len = end;
        }
        Ok(())
    }
}

impl Text {
    const EMPTY: Text = Text {
        bytes: [0; CRASH_TEXT],
        len: 0,
    };

    /// `file:line`, with the file's name only and the line in decimal,
    /// written without `core::fmt`.
    fn location(&mut self, file: &str, line: u32) {
        let _ = self.write_str(file.rsplit('/').next().unwrap_or_default());
        let _ = self.write_char(':');
        let mut digits = [0u8; 10];
        let (mut rest, mut n) = (line, 0);
        while let Some(d) = digits.get_mut(n) {
            *d = b'0' + (rest % 10) as u8;
            n += 1;
            rest /= 10;
            if rest == 0 {
                break;
            }
        }
        for d in digits.iter().take(n).rev() {
            let _ = self.write_char(char::from(*d));
        }
    }
}

fn save(kind: CrashKind, pc: u32, lr: u32, status: u32, text: &Text) {
    let mut words = [0u32; WORDS];
    let head = [
        MAGIC,
        kind as u32,
        pc,
        lr,
        status,
        UPTIME_MS.load(Ordering::Relaxed),
        text.len as u32,
    ];
    for (w, h) in words.iter_mut().zip(head) {
        *w = h;
    }
    for (w, chunk) in words.iter_mut().skip(head.len()).zip(text.bytes.chunks(4)) {
        let mut b = [0u8; 4];
        b.iter_mut().zip(chunk).for_each(|(d, s)| *d = *s);
        *w = u32::from_le_bytes(b);
    }
    let slot = Slot {
        check: check(&words),
        words,
    };
    // SAFETY: `SLOT` is only touched here and in `take`. A panic or fault
    // handler runs with nothing else of the firmware going on (it never
    // returns), and `take` runs at start-up before any handler can; a
    // volatile write keeps the record from being optimised away.
    unsafe { addr_of_mut!(SLOT).cast::<Slot>().write_volatile(slot) };
}

/// Records a panic: its location and message, cut to 32 bytes.
pub fn record_panic(info: &PanicInfo<'_>) {
    let mut text = located(info);
    if text.len > 0 {
        let _ = text.write_char(' ');
    }
    let _ = write!(text, "{}", info.message());
    save(CrashKind::Panic, 0, 0, 0, &text);
}

/// Records a panic by its location alone (`file:line`), without its
/// message: a handler that calls this instead of [`record_panic`] links no
/// formatting code, so firmware built for the least flash keeps none.
pub fn record_panic_location(info: &PanicInfo<'_>) {
    save(CrashKind::Panic, 0, 0, 0, &located(info));
}

/// A crash text holding the panic's location, if it has one.
fn located(info: &PanicInfo<'_>) -> Text {
    let mut text = Text::EMPTY;
    if let Some(at) = info.location() {
        text.location(at.file(), at.line());
    }
    text
}

/// Records a HardFault: the faulting pc and lr from the exception frame,
/// and the configurable fault status register.
pub fn record_fault(frame: &ExceptionFrame) {
    let text = Text::EMPTY;
    save(
        CrashKind::HardFault,
        frame.pc(),
        frame.lr(),
        fault_status(),
        &text,
    );
}

/// CFSR: why the processor faulted (0 where the core has none).
fn fault_status() -> u32 {
    #[cfg(has_cfsr)]
    {
        const CFSR: *const u32 = 0xE000_ED28 as *const u32;
        // SAFETY: CFSR is an always-readable System Control Block register
        // on ARMv7-M and ARMv8-M; reading it has no side effect.
        unsafe { CFSR.read_volatile() }
    }
    #[cfg(not(has_cfsr))]
    {
        0
    }
}

/// The crash recorded before the last reset, if any; the record is
/// cleared, so each crash is reported once.
pub fn take() -> Option<Crash> {
    // SAFETY: see `save`: nothing else touches `SLOT` while the firmware
    // starts. Every bit pattern is a valid `[u32; N]`, so reading RAM that
    // was never written (after a power-on) is defined; the magic and check
    // words tell a record from noise.
    let slot = unsafe { addr_of!(SLOT).cast::<Slot>().read_volatile() };
    let mut cleared = [0u32; WORDS];
    cleared[0] = !MAGIC;
    // SAFETY: as above.
    unsafe {
        addr_of_mut!(SLOT).cast::<Slot>().write_volatile(Slot {
            words: cleared,
            check: 0,
        })
    };
    let w = slot.words;
    if w[0] != MAGIC || slot.check != check(&w) {
        return None;
    }
    let kind = match w[1] {
        0 => CrashKind::Panic,
        1 => CrashKind::HardFault,
        _ => return None,
    };
    let mut bytes = [0u8; CRASH_TEXT];
    for (dst, word) in bytes.chunks_mut(4).zip(w.iter().skip(7)) {
        dst.copy_from_slice(&word.to_le_bytes());
    }
    let len = (w[6] as usize).min(CRASH_TEXT);
    let text = core::str::from_utf8(&bytes[..len]).unwrap_or("");
    Some(Crash::new(kind, w[2], w[3], w[4], w[5], text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_crash_is_taken_once() {
        set_uptime(86_400_123);
        let mut text = Text::EMPTY;
        let _ = write!(text, "main.rs:42 attempt to add with overflow, and more");
        assert_eq!(text.len, CRASH_TEXT);
        save(CrashKind::HardFault, 0x0800_0F00, 0x0800_0A01, 0x100, &text);
        let crash = take().expect("record");
        assert_eq!(crash.kind, CrashKind::HardFault);
        assert_eq!(
            (crash.pc, crash.lr, crash.status),
            (0x0800_0F00, 0x0800_0A01, 0x100)
        );
        assert_eq!(crash.uptime_ms, 86_400_123);
        assert_eq!(crash.text(), "main.rs:42 attempt to add with o");
        assert_eq!(take(), None);
    }

    #[test]
    fn a_location_is_written_as_its_display_would_be() {
        for (file, line) in [
            ("src/main.rs", 42),
            ("lib.rs", 0),
            ("a/b/engine.rs", u32::MAX),
        ] {
            let mut text = Text::EMPTY;
            text.location(file, line);
            let name = file.rsplit('/').next().unwrap_or_default();
            let written = core::str::from_utf8(&text.bytes[..text.len]).unwrap();
            assert_eq!(written, format!("{name}:{line}"));
        }
    }
}
