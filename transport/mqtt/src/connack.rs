//! What the broker's CONNACK says about packet size. The MQTT client keeps
//! the broker's Maximum Packet Size to itself, so the runner reads it from
//! the bytes as they pass: the link's MTU follows it.
//!
//! ```
//! use telemark_mqtt::connack::{read, Told};
//! // CONNACK, no session, success, properties: Maximum Packet Size 160.
//! let connack = [0x20, 0x08, 0x00, 0x00, 0x05, 0x27, 0x00, 0x00, 0x00, 0xA0];
//! assert_eq!(read(&connack), Told::Max(Some(160)));
//! assert_eq!(read(&connack[..7]), Told::More);
//! ```

use core::cell::Cell;

use embedded_io_async::{ErrorType, Read, Write};
use heapless::Vec;

/// CONNACK bytes kept for reading: enough for the fixed properties a broker
/// puts before free text.
const KEPT: usize = 128;

/// What the first bytes from the broker told so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Told {
    /// Not a whole CONNACK yet.
    More,
    /// The broker's Maximum Packet Size, if it set one (or `None` when the
    /// bytes are no CONNACK, or the property is not where it can be read).
    Max(Option<u32>),
}

/// A variable byte integer at the front of `bytes`: its value and length.
fn varint(bytes: &[u8]) -> Option<(u32, usize)> {
    let mut value = 0u32;
    for (i, &b) in bytes.iter().take(4).enumerate() {
        value |= u32::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// The properties a CONNACK may carry.
const CONNACK_PROPERTIES: [u8; 17] = [
    0x11, 0x12, 0x13, 0x15, 0x16, 0x1A, 0x1C, 0x1F, 0x21, 0x22, 0x24, 0x25, 0x26, 0x27, 0x28, 0x29,
    0x2A,
];

/// Bytes a CONNACK property's value takes, by its id; `None` for an id a
/// CONNACK does not carry.
fn value_len(id: u8, rest: &[u8]) -> Option<usize> {
    let prefixed = || {
        let [a, b, ..] = rest else { return None };
        Some(2 + usize::from(u16::from_be_bytes([*a, *b])))
    };
    match id {
        0x24 | 0x25 | 0x28 | 0x29 | 0x2A => Some(1),
        0x13 | 0x21 | 0x22 => Some(2),
        0x11 | 0x27 => Some(4),
        // Assigned client id, reason string, response information, server
        // reference, authentication method and data.
        0x12 | 0x1F | 0x1A | 0x1C | 0x15 | 0x16 => prefixed(),
        // A user property: two strings.
        0x26 => {
            let first = prefixed()?;
            let [a, b, ..] = rest.get(first..)? else {
                return None;
            };
            Some(first + 2 + usize::from(u16::from_be_bytes([*a, *b])))
        }
        _ => None,
    }
}

/// Reads the broker's Maximum Packet Size from the first bytes it sent.
pub fn read(bytes: &[u8]) -> Told {
    let Some((&kind, rest)) = bytes.split_first() else {
        return Told::More;
    };
    if kind != 0x20 {
        return Told::Max(None);
    }
    let Some((remaining, n)) = varint(rest) else {
        return if rest.len() < 4 {
            Told::More
        } else {
            Told::Max(None)
        };
    };
    let Some(body) = rest.get(n..) else {
        return Told::More;
    };
    let whole = body.len() >= remaining as usize;
    let body = body.get(..remaining as usize).unwrap_or(body);
    // Flags and reason code, then the properties' length.
    let Some(props) = body.get(2..) else {
        return if whole { Told::Max(None) } else { Told::More };
    };
    let Some((len, n)) = varint(props) else {
        return if whole { Told::Max(None) } else { Told::More };
    };
    let mut props = props.get(n..).unwrap_or_default();
    props = props.get(..len as usize).unwrap_or(props);
    loop {
        let Some((&id, rest)) = props.split_first() else {
            return if whole { Told::Max(None) } else { Told::More };
        };
        if id == 0x27 {
            return match rest.get(..4) {
                Some(&[a, b, c, d]) => Told::Max(Some(u32::from_be_bytes([a, b, c, d]))),
                _ if whole => Told::Max(None),
                _ => Told::More,
            };
        }
        let Some(step) = value_len(id, rest) else {
            return if whole || !CONNACK_PROPERTIES.contains(&id) {
                Told::Max(None)
            } else {
                Told::More
            };
        };
        match rest.get(step..) {
            Some(next) => props = next,
            None if whole => return Told::Max(None),
            None => return Told::More,
        }
    }
}

/// A stream that watches the first bytes it reads for the CONNACK, and
/// puts the broker's Maximum Packet Size in `max` once it is read.
pub(crate) struct Watched<'t, IO> {
    io: IO,
    kept: Vec<u8, KEPT>,
    done: bool,
    max: &'t Cell<Option<u32>>,
}

impl<'t, IO> Watched<'t, IO> {
    pub fn new(io: IO, max: &'t Cell<Option<u32>>) -> Self {
        max.set(None);
        Watched {
            io,
            kept: Vec::new(),
            done: false,
            max,
        }
    }
}

impl<IO: ErrorType> ErrorType for Watched<'_, IO> {
    type Error = IO::Error;
}

impl<IO: Read> Read for Watched<'_, IO> {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        let n = self.io.read(buf).await?;
        if !self.done {
            for &b in buf.get(..n).unwrap_or_default() {
                if self.kept.push(b).is_err() {
                    break;
                }
            }
            match read(&self.kept) {
                Told::Max(max) => {
                    self.max.set(max);
                    self.done = true;
                }
                Told::More => self.done = self.kept.is_full(),
            }
        }
        Ok(n)
    }
}

impl<IO: Write> Write for Watched<'_, IO> {
    async fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        self.io.write(buf).await
    }

    async fn flush(&mut self) -> Result<(), Self::Error> {
        self.io.flush().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CONNACK with these properties.
    fn connack(props: &[u8]) -> heapless::Vec<u8, 200> {
        let mut v = heapless::Vec::new();
        let body = 2 + 1 + props.len();
        v.extend_from_slice(&[0x20, body as u8, 0x00, 0x00, props.len() as u8])
            .unwrap();
        v.extend_from_slice(props).unwrap();
        v
    }

    #[test]
    fn the_maximum_packet_size_is_read_wherever_it_stands() {
        let max = [0x27, 0x00, 0x00, 0x01, 0x00];
        assert_eq!(read(&connack(&max)), Told::Max(Some(256)));
        // After a receive maximum, a user property and a reason string.
        let mut props = heapless::Vec::<u8, 64>::new();
        props.extend_from_slice(&[0x21, 0x00, 0x14]).unwrap();
        props
            .extend_from_slice(&[0x26, 0, 1, b'k', 0, 2, b'v', b'v'])
            .unwrap();
        props.extend_from_slice(&[0x1F, 0, 2, b'o', b'k']).unwrap();
        props.extend_from_slice(&max).unwrap();
        let bytes = connack(&props);
        assert_eq!(read(&bytes), Told::Max(Some(256)));
        // Byte by byte, it is known only once its four bytes are in.
        for cut in 0..bytes.len() {
            assert_eq!(read(&bytes[..cut]), Told::More, "at {cut}");
        }
    }

    #[test]
    fn no_property_or_no_connack_tells_none() {
        assert_eq!(read(&connack(&[0x21, 0x00, 0x14])), Told::Max(None));
        assert_eq!(read(&connack(&[])), Told::Max(None));
        assert_eq!(read(&[0x30, 0x02, 0, 0]), Told::Max(None));
        // A property a CONNACK never carries ends the reading.
        assert_eq!(read(&connack(&[0x01, 0x00])), Told::Max(None));
        assert_eq!(read(&[]), Told::More);
        assert_eq!(read(&[0x20, 0xFF, 0xFF, 0xFF, 0xFF]), Told::Max(None));
    }
}
