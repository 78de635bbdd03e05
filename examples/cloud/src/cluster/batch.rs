//! A stream message: the frames a front-end took while its last
//! message was being confirmed, each with the path it came by and when.
//!
//! One message carries many frames so that the stream's replication, its
//! consumer's delivery and its acknowledgement are paid once for them
//! all. The layout, every integer little-endian:
//!
//! ```text
//! version (1 byte, 1)
//! then for each frame:
//!   path device present (1 byte: 0 or 1)
//!   path device         (8 bytes, 0 when absent)
//!   received, Unix ms   (8 bytes)
//!   frame length        (4 bytes)
//!   frame               (that many bytes)
//! ```
//!
//! Only front-ends write them, but a worker reads whatever the stream
//! holds: [`decode`] answers a message it cannot read with an error, and
//! the worker terminates that message.

use crate::hub::Arrival;

/// The layout's version, the message's first byte.
const VERSION: u8 = 1;

/// The bytes an entry takes besides its frame.
const ENTRY_HEADER: usize = 1 + 8 + 8 + 4;

/// The bytes `arrival` adds to a batch.
pub fn size_of(arrival: &Arrival) -> usize {
    ENTRY_HEADER + arrival.frame.len()
}

/// The message for `arrivals`, in their order.
pub fn encode(arrivals: &[Arrival]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + arrivals.iter().map(size_of).sum::<usize>());
    out.push(VERSION);
    for a in arrivals {
        out.push(u8::from(a.device.is_some()));
        out.extend_from_slice(&a.device.unwrap_or(0).to_le_bytes());
        out.extend_from_slice(&a.received_unix_ms.to_le_bytes());
        // A frame is far below 4 GiB: the listeners bound it.
        let len = u32::try_from(a.frame.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&a.frame);
    }
    out
}

/// Why a message is not a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchError {
    /// The message is empty, or holds no frame.
    Empty,
    /// A layout this build does not know.
    Version(u8),
    /// The message ends inside the entry of a frame.
    Truncated {
        /// The frame's place in the message, from 0.
        index: usize,
    },
    /// A frame's path device is said neither present nor absent.
    Flag {
        /// The frame's place in the message, from 0.
        index: usize,
        /// The flag it has.
        flag: u8,
    },
}

impl std::fmt::Display for BatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BatchError::Empty => f.write_str("a batch with no frame"),
            BatchError::Version(v) => {
                write!(f, "a batch of layout {v} (this build reads {VERSION})")
            }
            BatchError::Truncated { index } => write!(f, "a batch cut off in its frame {index}"),
            BatchError::Flag { index, flag } => {
                write!(f, "frame {index} of a batch: path flag {flag}, not 0 or 1")
            }
        }
    }
}

impl std::error::Error for BatchError {}

/// The frames of `message`, in the order they were taken.
pub fn decode(message: &[u8]) -> Result<Vec<Arrival>, BatchError> {
    let (&version, mut rest) = message.split_first().ok_or(BatchError::Empty)?;
    if version != VERSION {
        return Err(BatchError::Version(version));
    }
    let mut arrivals = Vec::new();
    while !rest.is_empty() {
        let index = arrivals.len();
        let cut = BatchError::Truncated { index };
        let (head, tail) = rest.split_at_checked(ENTRY_HEADER).ok_or(cut.clone())?;
        let (flag, head) = head.split_at(1);
        let (path, head) = head.split_at(8);
        let (received, len) = head.split_at(8);
        let le64 = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap_or([0; 8]));
        let len = u32::from_le_bytes(len.try_into().unwrap_or([0; 4]));
        let len = usize::try_from(len).map_err(|_| cut.clone())?;
        let (frame, tail) = tail.split_at_checked(len).ok_or(cut)?;
        let device = match flag.first().copied().unwrap_or(0) {
            0 => None,
            1 => Some(le64(path)),
            flag => return Err(BatchError::Flag { index, flag }),
        };
        arrivals.push(Arrival {
            device,
            frame: frame.to_vec(),
            received_unix_ms: le64(received),
        });
        rest = tail;
    }
    if arrivals.is_empty() {
        return Err(BatchError::Empty);
    }
    Ok(arrivals)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arrival(device: Option<u64>, frame: &[u8], at: u64) -> Arrival {
        Arrival {
            device,
            frame: frame.to_vec(),
            received_unix_ms: at,
        }
    }

    fn same(a: &[Arrival], b: &[Arrival]) -> bool {
        a.len() == b.len()
            && a.iter().zip(b).all(|(x, y)| {
                (x.device, &x.frame, x.received_unix_ms) == (y.device, &y.frame, y.received_unix_ms)
            })
    }

    #[test]
    fn frames_come_back_in_their_order_with_their_paths() {
        let sent = [
            arrival(Some(7), b"\x02first", 1_700_000_000_000),
            arrival(None, b"", 1_700_000_000_001),
            arrival(Some(u64::MAX), &[0xff; 300], 0),
        ];
        let message = encode(&sent);
        assert_eq!(message.len(), 1 + sent.iter().map(size_of).sum::<usize>());
        assert!(same(&decode(&message).unwrap(), &sent));
    }

    #[test]
    fn a_message_that_is_not_a_batch_is_named_so() {
        assert_eq!(decode(b"").unwrap_err(), BatchError::Empty);
        assert_eq!(decode(&[VERSION]).unwrap_err(), BatchError::Empty);
        assert_eq!(decode(&[2, 0]).unwrap_err(), BatchError::Version(2));
        let mut message = encode(&[arrival(Some(1), b"abc", 5), arrival(None, b"de", 6)]);
        message.pop();
        assert_eq!(
            decode(&message).unwrap_err(),
            BatchError::Truncated { index: 1 }
        );
        message[1] = 2;
        assert_eq!(
            decode(&message).unwrap_err(),
            BatchError::Flag { index: 0, flag: 2 }
        );
    }

    proptest! {
        #[test]
        fn any_batch_reads_back(
            entries in proptest::collection::vec(
                (proptest::option::of(any::<u64>()), proptest::collection::vec(any::<u8>(), 0..64), any::<u64>()),
                1..20,
            )
        ) {
            let sent: Vec<Arrival> = entries.iter().map(|(d, f, at)| arrival(*d, f, *at)).collect();
            prop_assert!(same(&decode(&encode(&sent)).unwrap(), &sent));
        }

        #[test]
        fn any_bytes_are_read_or_refused_without_a_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..200)
        ) {
            if let Ok(arrivals) = decode(&bytes) {
                // What reads as a batch is read to its last byte.
                prop_assert_eq!(1 + arrivals.iter().map(size_of).sum::<usize>(), bytes.len());
            }
        }
    }
}
