#![doc = include_str!("../README.md")]
#![cfg_attr(not(any(test, feature = "std")), no_std)]
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

use core::fmt;

#[cfg(feature = "std")]
mod tcp;
#[cfg(feature = "std")]
pub use tcp::TcpLine;

use embedded_io::{Read, ReadReady, Write};
use telemark_core::transport::Transport;

/// The byte that ends every frame, and that never appears inside one.
pub const DELIMITER: u8 = 0x00;
/// Bytes a frame adds to its payload at most: the CRC (2), the delimiter
/// (1), and COBS's one byte per 254.
pub const fn overhead(payload: usize) -> usize {
    2 + 1 + (payload + 2) / 254 + 1
}

const CRC16: crc::Crc<u16> = crc::Crc::<u16>::new(&crc::CRC_16_IBM_3740);

/// Why a frame could not be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameTooLarge;

impl fmt::Display for FrameTooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("frame does not fit the buffer")
    }
}

/// Frames `payload` into `out`: COBS of the payload and its CRC-16
/// (little endian), then the delimiter. Returns the bytes written.
pub fn encode(payload: &[u8], out: &mut [u8]) -> Result<usize, FrameTooLarge> {
    let crc = CRC16.checksum(payload).to_le_bytes();
    let n = {
        let mut enc = cobs::CobsEncoder::new(out);
        enc.push(payload).map_err(|_| FrameTooLarge)?;
        enc.push(&crc).map_err(|_| FrameTooLarge)?;
        enc.finalize()
    };
    *out.get_mut(n).ok_or(FrameTooLarge)? = DELIMITER;
    Ok(n + 1)
}

/// Why bytes between two delimiters were not a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeframeError {
    /// Longer than the deframer's buffer; skipped up to the next delimiter.
    TooLong,
    /// Not valid COBS.
    Cobs,
    /// Shorter than a CRC.
    Short,
    /// The CRC does not match: corrupted on the line.
    Crc,
}

impl fmt::Display for DeframeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DeframeError::TooLong => "frame longer than the buffer",
            DeframeError::Cobs => "invalid COBS encoding",
            DeframeError::Short => "frame shorter than its CRC",
            DeframeError::Crc => "CRC mismatch",
        })
    }
}

/// Counts of what a deframer saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeframeCounters {
    /// Frames delivered.
    pub frames: u32,
    /// Frames refused, of every kind.
    pub errors: u32,
}

/// Reassembles frames from a byte stream, one byte at a time, in a buffer
/// of `N` bytes (the longest encoded frame it accepts). Garbage, a frame cut
/// short or one too long only costs that frame: the deframer resynchronises
/// at the next delimiter.
pub struct Deframer<const N: usize> {
    buf: [u8; N],
    len: usize,
    overflow: bool,
    counters: DeframeCounters,
}

impl<const N: usize> Default for Deframer<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Deframer<N> {
    /// An empty deframer.
    pub const fn new() -> Self {
        Deframer {
            buf: [0; N],
            len: 0,
            overflow: false,
            counters: DeframeCounters {
                frames: 0,
                errors: 0,
            },
        }
    }

    /// What it saw so far.
    pub fn counters(&self) -> DeframeCounters {
        self.counters
    }

    /// Takes one byte; at a delimiter, returns the frame it ended (its
    /// payload, valid until the next call) or why it was not one.
    pub fn push(&mut self, byte: u8) -> Option<Result<&[u8], DeframeError>> {
        if byte != DELIMITER {
            match self.buf.get_mut(self.len) {
                Some(slot) => {
                    *slot = byte;
                    self.len += 1;
                }
                None => self.overflow = true,
            }
            return None;
        }
        let (len, overflow) = (self.len, self.overflow);
        self.len = 0;
        self.overflow = false;
        if len == 0 && !overflow {
            // Delimiters between frames (or a line kept idle with them).
            return None;
        }
        let result = if overflow {
            Err(DeframeError::TooLong)
        } else {
            self.decode(len)
        };
        match result {
            Ok(body) => {
                self.counters.frames = self.counters.frames.saturating_add(1);
                Some(Ok(self.buf.get(..body).unwrap_or_default()))
            }
            Err(e) => {
                self.counters.errors = self.counters.errors.saturating_add(1);
                Some(Err(e))
            }
        }
    }

    /// Decodes the `len` bytes received in place; returns the payload length.
    fn decode(&mut self, len: usize) -> Result<usize, DeframeError> {
        let encoded = self.buf.get_mut(..len).ok_or(DeframeError::TooLong)?;
        let n = cobs::decode_in_place(encoded).map_err(|_| DeframeError::Cobs)?;
        let body_len = n.checked_sub(2).ok_or(DeframeError::Short)?;
        let decoded = self.buf.get(..n).ok_or(DeframeError::Cobs)?;
        let (body, crc) = decoded.split_at(body_len);
        let crc = u16::from_le_bytes(crc.try_into().map_err(|_| DeframeError::Short)?);
        if CRC16.checksum(body) != crc {
            return Err(DeframeError::Crc);
        }
        Ok(body_len)
    }
}

/// A telemark [`Transport`] over a serial line (a UART, a USB CDC port):
/// each frame is written framed, and received frames are reassembled from
/// the bytes the line has ready. `N` bounds an encoded frame.
pub struct SerialTransport<IO, const N: usize> {
    io: IO,
    mtu: usize,
    tx: [u8; N],
    rx: Deframer<N>,
}

impl<IO, const N: usize> SerialTransport<IO, N> {
    /// A transport over `io`; frames of up to `N - overhead(N)` bytes.
    pub fn new(io: IO) -> Self {
        SerialTransport {
            io,
            mtu: N.saturating_sub(overhead(N)),
            tx: [0; N],
            rx: Deframer::new(),
        }
    }

    /// The deframer's counters.
    pub fn counters(&self) -> DeframeCounters {
        self.rx.counters()
    }

    /// The line, back.
    pub fn release(self) -> IO {
        self.io
    }
}

/// Why the serial transport failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SerialError<E> {
    /// The line failed.
    Io(E),
    /// The frame is larger than the MTU.
    TooLarge,
}

impl<IO: Read + Write + ReadReady, const N: usize> Transport for SerialTransport<IO, N> {
    type Error = SerialError<IO::Error>;

    fn mtu(&self) -> usize {
        self.mtu
    }

    /// A serial line has no radio to power; it is always up.
    fn power(&mut self, _on: bool) -> Result<(), Self::Error> {
        Ok(())
    }

    fn send(&mut self, frame: &[u8]) -> Result<(), Self::Error> {
        let n = encode(frame, &mut self.tx).map_err(|_| SerialError::TooLarge)?;
        self.io
            .write_all(self.tx.get(..n).unwrap_or_default())
            .map_err(SerialError::Io)?;
        self.io.flush().map_err(SerialError::Io)
    }

    fn receive(&mut self, buf: &mut [u8]) -> Result<Option<usize>, Self::Error> {
        while self.io.read_ready().map_err(SerialError::Io)? {
            let mut byte = [0u8];
            if self.io.read(&mut byte).map_err(SerialError::Io)? == 0 {
                return Ok(None);
            }
            // Refused frames are counted by the deframer and skipped.
            if let Some(Ok(frame)) = self.rx.push(byte[0]) {
                let dst = buf.get_mut(..frame.len()).ok_or(SerialError::TooLarge)?;
                dst.copy_from_slice(frame);
                return Ok(Some(frame.len()));
            }
        }
        Ok(None)
    }
}

/// Waiting for the line, so firmware can sleep until the engine's
/// deadline and still answer a downlink at once.
#[cfg(feature = "async")]
impl<IO: embedded_io_async::BufRead, const N: usize> SerialTransport<IO, N> {
    /// Waits until the line holds a received byte, without taking it: the
    /// next [`AsyncTransport::receive`] reads it. Cancel-safe, so a main
    /// loop can race it against its timer:
    ///
    /// ```ignore
    /// let wake = step_async(&mut engine, &mut serial, now, &mut board).await;
    /// select(Timer::at(deadline(wake)), serial.wait_input()).await;
    /// ```
    ///
    /// [`AsyncTransport::receive`]: telemark_core::transport::AsyncTransport::receive
    pub async fn wait_input(&mut self) -> Result<(), SerialError<IO::Error>> {
        self.io
            .fill_buf()
            .await
            .map(|_| ())
            .map_err(SerialError::Io)
    }
}

#[cfg(feature = "async")]
impl<IO, const N: usize> telemark_core::transport::AsyncTransport for SerialTransport<IO, N>
where
    IO: embedded_io_async::Read + embedded_io_async::Write + embedded_io_async::ReadReady,
{
    type Error = SerialError<IO::Error>;

    fn mtu(&self) -> usize {
        self.mtu
    }

    async fn power(&mut self, _on: bool) -> Result<(), Self::Error> {
        Ok(())
    }

    async fn send(&mut self, frame: &[u8]) -> Result<(), Self::Error> {
        let n = encode(frame, &mut self.tx).map_err(|_| SerialError::TooLarge)?;
        self.io
            .write_all(self.tx.get(..n).unwrap_or_default())
            .await
            .map_err(SerialError::Io)?;
        self.io.flush().await.map_err(SerialError::Io)
    }

    async fn receive(&mut self, buf: &mut [u8]) -> Result<Option<usize>, Self::Error> {
        while self.io.read_ready().map_err(SerialError::Io)? {
            let mut byte = [0u8];
            if self.io.read(&mut byte).await.map_err(SerialError::Io)? == 0 {
                return Ok(None);
            }
            if let Some(Ok(frame)) = self.rx.push(byte[0]) {
                let dst = buf.get_mut(..frame.len()).ok_or(SerialError::TooLarge)?;
                dst.copy_from_slice(frame);
                return Ok(Some(frame.len()));
            }
        }
        Ok(None)
    }
}
