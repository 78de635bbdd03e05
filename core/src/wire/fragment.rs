//! Frames carried in pieces over a link whose packets are smaller than the
//! smallest frame: LoRa at its slowest data rates (51 bytes), BLE
//! advertising, some NB-IoT non-IP paths.
//!
//! Every report the engine makes must fit one frame ([`min_mtu`]: 114 bytes
//! or more), so on such a link each frame travels as up to
//! [`MAX_FRAGMENTS`] fragments, each one byte of header and a piece of the
//! frame, and the other end puts it back together before opening it. This
//! is the no-acknowledgement mode of RFC 8724's fragmentation (SCHC, as
//! LoRaWAN uses it, RFC 9011): a lost fragment loses its frame, which the
//! engine's own end-to-end acknowledgement resends, so the link needs no
//! second retry loop. A frame put together wrongly (pieces of two frames)
//! fails its seal: nothing unauthenticated gets past the envelope.
//!
//! | bits of the header byte | meaning |
//! | --- | --- |
//! | 7-5 | tag: the frame's number modulo 8, so pieces of two frames never mix |
//! | 4-1 | index of the piece, from 0 |
//! | 0 | set on the frame's last piece |
//!
//! Every piece but the last carries exactly `link_mtu - 1` bytes of frame,
//! so both ends agree on where a piece goes from its index alone, in any
//! order of arrival.
//!
//! ```
//! use telemark_core::wire::fragment::{Fragments, Reassembler};
//!
//! let frame: Vec<u8> = (0..120).collect();
//! let mut rx: Reassembler<256> = Reassembler::new(51).unwrap();
//! let pieces: Vec<Vec<u8>> = Fragments::new(&frame, 51, 5).unwrap().map(|f| f.to_vec()).collect();
//! assert_eq!(pieces.len(), 3);
//! assert!(pieces.iter().all(|p| p.len() <= 51));
//! // They may arrive in any order.
//! assert_eq!(rx.push(&pieces[2]), Ok(None));
//! assert_eq!(rx.push(&pieces[0]), Ok(None));
//! assert_eq!(rx.push(&pieces[1]), Ok(Some(&frame[..])));
//! ```
//!
//! [`min_mtu`]: crate::engine::min_mtu

use core::fmt;

/// Most pieces one frame is cut into (the index has 4 bits).
pub const MAX_FRAGMENTS: usize = 16;
/// Bytes of header in front of each piece.
pub const FRAGMENT_HEADER: usize = 1;

/// Why a frame could not be cut, or a piece was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum FragmentError {
    /// The link's packets are too small to carry a header and a byte.
    MtuTooSmall,
    /// The frame needs more than [`MAX_FRAGMENTS`] pieces, or is empty.
    FrameSize,
    /// A piece with no header, a piece of the wrong size, or one past the
    /// frame's last.
    Malformed,
    /// The frame would not fit the reassembly buffer.
    TooLong,
}

impl fmt::Display for FragmentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FragmentError::MtuTooSmall => "link packets too small to carry a piece of a frame",
            FragmentError::FrameSize => "frame empty, or longer than 16 pieces of the link",
            FragmentError::Malformed => "malformed fragment",
            FragmentError::TooLong => "fragmented frame longer than the reassembly buffer",
        })
    }
}

/// Bytes of frame a piece carries on a link of `link_mtu`.
fn chunk(link_mtu: usize) -> Result<usize, FragmentError> {
    match link_mtu.checked_sub(FRAGMENT_HEADER) {
        Some(c) if c > 0 => Ok(c),
        _ => Err(FragmentError::MtuTooSmall),
    }
}

/// The largest frame a link of `link_mtu` carries in pieces.
///
/// ```
/// assert_eq!(telemark_core::wire::fragment::max_frame(51), 800);
/// ```
pub fn max_frame(link_mtu: usize) -> usize {
    chunk(link_mtu).map_or(0, |c| c * MAX_FRAGMENTS)
}

/// One piece of a frame: its header byte and the bytes it carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fragment<'a> {
    /// The header byte.
    pub header: u8,
    /// The piece of the frame.
    pub body: &'a [u8],
}

impl Fragment<'_> {
    /// Bytes of the piece on the link.
    pub fn len(&self) -> usize {
        FRAGMENT_HEADER + self.body.len()
    }

    /// Never: a piece carries at least its header.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Writes the piece into `out`; its length, or `None` if `out` is short.
    pub fn write(&self, out: &mut [u8]) -> Option<usize> {
        let (head, rest) = out.split_first_mut()?;
        *head = self.header;
        rest.get_mut(..self.body.len())?.copy_from_slice(self.body);
        Some(self.len())
    }

    /// The piece as one vector.
    #[cfg(feature = "std")]
    pub fn to_vec(&self) -> std::vec::Vec<u8> {
        let mut v = std::vec![self.header];
        v.extend_from_slice(self.body);
        v
    }
}

/// The pieces of one frame, in order.
#[derive(Clone, Debug)]
pub struct Fragments<'a> {
    rest: &'a [u8],
    chunk: usize,
    tag: u8,
    index: u8,
}

impl<'a> Fragments<'a> {
    /// Cuts `frame` for a link of `link_mtu`, under `tag` (a counter the
    /// sender advances at every frame; its low 3 bits are sent).
    pub fn new(frame: &'a [u8], link_mtu: usize, tag: u8) -> Result<Self, FragmentError> {
        let chunk = chunk(link_mtu)?;
        if frame.is_empty() || frame.len() > chunk * MAX_FRAGMENTS {
            return Err(FragmentError::FrameSize);
        }
        Ok(Fragments {
            rest: frame,
            chunk,
            tag: tag & 7,
            index: 0,
        })
    }
}

impl<'a> Iterator for Fragments<'a> {
    type Item = Fragment<'a>;

    fn next(&mut self) -> Option<Fragment<'a>> {
        if self.rest.is_empty() {
            return None;
        }
        let (body, rest) = self.rest.split_at(self.chunk.min(self.rest.len()));
        self.rest = rest;
        let last = u8::from(rest.is_empty());
        let header = self.tag << 5 | (self.index & 0xf) << 1 | last;
        self.index += 1;
        Some(Fragment { header, body })
    }
}

/// What a [`Reassembler`] did, for the link's health report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ReassemblyCounters {
    /// Frames put back together.
    pub frames: u32,
    /// Frames abandoned with pieces missing (the next frame's piece came).
    pub incomplete: u32,
    /// Pieces that arrived twice.
    pub duplicates: u32,
    /// Pieces refused as malformed or too long.
    pub refused: u32,
}

/// Puts frames back together from their pieces, one frame at a time, in a
/// buffer of `N` bytes; no allocation.
#[derive(Clone, Debug)]
pub struct Reassembler<const N: usize> {
    buf: [u8; N],
    chunk: usize,
    /// The frame being put together: its tag and the pieces it has.
    tag: Option<u8>,
    have: u16,
    /// Pieces and bytes of the frame, once its last piece came.
    end: Option<(u8, usize)>,
    /// The frame last completed, by tag, pieces and bytes: a late copy of
    /// one of its pieces (same tag, same bytes, still in the buffer) is a
    /// duplicate, not the start of a new frame. A new frame under a
    /// recycled tag differs in its bytes, and starts over.
    done: Option<(u8, u8, usize)>,
    counters: ReassemblyCounters,
}

impl<const N: usize> Reassembler<N> {
    /// A reassembler for a link of `link_mtu`.
    pub fn new(link_mtu: usize) -> Result<Self, FragmentError> {
        Ok(Reassembler {
            buf: [0; N],
            chunk: chunk(link_mtu)?,
            tag: None,
            have: 0,
            end: None,
            done: None,
            counters: ReassemblyCounters::default(),
        })
    }

    /// What it did so far.
    pub fn counters(&self) -> ReassemblyCounters {
        self.counters
    }

    /// Forgets the frame in progress (a reboot, a new session), counting
    /// it as incomplete if it had pieces.
    pub fn reset(&mut self) {
        if self.have != 0 {
            self.counters.incomplete = self.counters.incomplete.saturating_add(1);
        }
        self.tag = None;
        self.have = 0;
        self.end = None;
        self.done = None;
    }

    /// Takes one piece; the whole frame when this piece completes it.
    pub fn push(&mut self, piece: &[u8]) -> Result<Option<&[u8]>, FragmentError> {
        match self.place(piece) {
            Ok(Some(len)) => Ok(self.buf.get(..len)),
            Ok(None) => Ok(None),
            Err(e) => {
                self.counters.refused = self.counters.refused.saturating_add(1);
                Err(e)
            }
        }
    }

    fn place(&mut self, piece: &[u8]) -> Result<Option<usize>, FragmentError> {
        let (&header, body) = piece.split_first().ok_or(FragmentError::Malformed)?;
        let (tag, index, last) = (header >> 5, (header >> 1) & 0xf, header & 1 == 1);
        let sized = if last {
            !body.is_empty() && body.len() <= self.chunk
        } else {
            body.len() == self.chunk
        };
        if !sized {
            return Err(FragmentError::Malformed);
        }
        let offset = usize::from(index) * self.chunk;
        let end = offset + body.len();
        if end > N {
            return Err(FragmentError::TooLong);
        }
        if self.tag != Some(tag) {
            if let Some((done, count, len)) = self.done {
                let copy = done == tag
                    && index < count
                    && last == (index + 1 == count)
                    && end <= len
                    && self.buf.get(offset..end) == Some(body);
                if copy {
                    self.counters.duplicates = self.counters.duplicates.saturating_add(1);
                    return Ok(None);
                }
            }
            self.reset();
            self.tag = Some(tag);
        }
        let bit = 1u16 << index;
        if self.have & bit != 0 {
            if self.buf.get(offset..end) == Some(body) {
                self.counters.duplicates = self.counters.duplicates.saturating_add(1);
                return Ok(None);
            }
            // The same place with other bytes: a new frame under the tag
            // of one left incomplete (the sender rebooted). Start over.
            self.reset();
            self.tag = Some(tag);
        }
        match self.end {
            // A last piece before the one at `index`, or a second last.
            Some((count, _)) if index >= count || last => return Err(FragmentError::Malformed),
            None if last && self.have >> index != 0 => return Err(FragmentError::Malformed),
            _ => {}
        }
        self.buf
            .get_mut(offset..end)
            .ok_or(FragmentError::TooLong)?
            .copy_from_slice(body);
        self.have |= bit;
        if last {
            self.end = Some((index + 1, end));
        }
        match self.end {
            Some((count, len)) if u32::from(self.have) == (1u32 << count) - 1 => {
                self.counters.frames = self.counters.frames.saturating_add(1);
                self.done = Some((tag, count, len));
                self.tag = None;
                self.have = 0;
                self.end = None;
                Ok(Some(len))
            }
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_piece_past_the_last_or_a_second_last_is_refused() {
        let frame = [7u8; 30];
        let pieces: heapless::Vec<Fragment<'_>, 4> =
            Fragments::new(&frame, 11, 1).unwrap().collect();
        assert_eq!(pieces.len(), 3);
        let mut rx: Reassembler<64> = Reassembler::new(11).unwrap();
        let mut buf = [0u8; 11];
        let n = pieces[2].write(&mut buf).unwrap();
        assert_eq!(rx.push(&buf[..n]), Ok(None));
        // Index 3 of a frame whose last piece is index 2.
        let late = Fragment {
            header: 1 << 5 | 3 << 1,
            body: &[0; 10],
        };
        let n = late.write(&mut buf).unwrap();
        assert_eq!(rx.push(&buf[..n]), Err(FragmentError::Malformed));
        assert_eq!(rx.push(&[]), Err(FragmentError::Malformed));
        assert_eq!(rx.counters().refused, 2);
    }
}
