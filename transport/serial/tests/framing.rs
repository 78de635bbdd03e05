//! Framing over a noisy line: every frame comes through once, whatever
//! garbage, breaks or oversize frames surround it.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::collections::VecDeque;
use std::convert::Infallible;

use proptest::prelude::*;
use telemark_core::transport::Transport;
use telemark_serial::{encode, overhead, DeframeError, Deframer, SerialTransport};

const N: usize = 300;

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; payload.len() + overhead(payload.len())];
    let n = encode(payload, &mut out).unwrap();
    out.truncate(n);
    out
}

/// Bytes that end in a delimiter and are certainly not a valid frame.
fn garbage(mut bytes: Vec<u8>) -> Vec<u8> {
    bytes.retain(|&b| b != 0);
    let mut probe: Deframer<N> = Deframer::new();
    let valid = bytes
        .iter()
        .chain(&[0])
        .any(|&b| matches!(probe.push(b), Some(Ok(_))));
    if valid {
        // Flip the last byte: the CRC no longer matches.
        if let Some(last) = bytes.last_mut() {
            *last = last.wrapping_add(1).max(1);
        }
    }
    bytes.push(0);
    bytes
}

proptest! {
    #[test]
    fn frames_survive_garbage_between_them(
        items in prop::collection::vec(
            (prop::collection::vec(any::<u8>(), 0..200), prop::collection::vec(any::<u8>(), 0..40)),
            1..20,
        ),
    ) {
        let mut line = Vec::new();
        let mut sent = Vec::new();
        for (payload, noise) in &items {
            line.extend(garbage(noise.clone()));
            line.extend(frame(payload));
            sent.push(payload.clone());
        }
        let mut rx: Deframer<N> = Deframer::new();
        let mut got = Vec::new();
        for &b in &line {
            if let Some(Ok(f)) = rx.push(b) {
                got.push(f.to_vec());
            }
        }
        prop_assert_eq!(got, sent);
    }

    #[test]
    fn any_bytes_are_handled_without_panic(bytes in prop::collection::vec(any::<u8>(), 0..1000)) {
        let mut rx: Deframer<64> = Deframer::new();
        for &b in &bytes {
            if let Some(Ok(f)) = rx.push(b) {
                prop_assert!(f.len() <= 64);
            }
        }
    }
}

#[test]
fn an_oversize_frame_is_refused_and_the_next_one_read() {
    let mut rx: Deframer<32> = Deframer::new();
    let mut results = Vec::new();
    for &b in frame(&[7u8; 100]).iter().chain(&frame(b"ok")) {
        if let Some(r) = rx.push(b) {
            results.push(r.map(|f| f.to_vec()));
        }
    }
    assert_eq!(
        results,
        vec![Err(DeframeError::TooLong), Ok(b"ok".to_vec())]
    );
}

#[test]
fn a_corrupted_frame_is_refused_by_its_crc() {
    let mut bytes = frame(b"reading block");
    bytes[3] ^= 0x40;
    if bytes[3] == 0 {
        bytes[3] = 1;
    }
    let mut rx: Deframer<64> = Deframer::new();
    let outcome = bytes
        .iter()
        .find_map(|&b| rx.push(b).map(|r| r.map(<[u8]>::to_vec)));
    assert!(
        matches!(outcome, Some(Err(DeframeError::Crc | DeframeError::Cobs))),
        "{outcome:?}"
    );
}

/// Two ends of a serial line, bytes in flight in each direction.
#[derive(Default)]
struct Line {
    to_device: VecDeque<u8>,
    to_gateway: VecDeque<u8>,
}

struct End<'a> {
    line: &'a std::cell::RefCell<Line>,
    device: bool,
}

impl embedded_io::ErrorType for End<'_> {
    type Error = Infallible;
}

impl embedded_io::Read for End<'_> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Infallible> {
        let mut line = self.line.borrow_mut();
        let q = if self.device {
            &mut line.to_device
        } else {
            &mut line.to_gateway
        };
        let mut n = 0;
        while n < buf.len() {
            match q.pop_front() {
                Some(b) => {
                    buf[n] = b;
                    n += 1;
                }
                None => break,
            }
        }
        Ok(n)
    }
}

impl embedded_io::ReadReady for End<'_> {
    fn read_ready(&mut self) -> Result<bool, Infallible> {
        let line = self.line.borrow();
        Ok(!if self.device {
            &line.to_device
        } else {
            &line.to_gateway
        }
        .is_empty())
    }
}

impl embedded_io::Write for End<'_> {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Infallible> {
        let mut line = self.line.borrow_mut();
        let q = if self.device {
            &mut line.to_gateway
        } else {
            &mut line.to_device
        };
        q.extend(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<(), Infallible> {
        Ok(())
    }
}

#[test]
fn a_transport_at_each_end_carries_frames_both_ways() {
    let line = std::cell::RefCell::new(Line::default());
    let mut device: SerialTransport<_, 256> = SerialTransport::new(End {
        line: &line,
        device: true,
    });
    let mut gateway: SerialTransport<_, 256> = SerialTransport::new(End {
        line: &line,
        device: false,
    });
    assert!(device.mtu() >= 240);
    device.send(b"records frame").unwrap();
    device.send(b"second frame").unwrap();
    let mut buf = [0u8; 256];
    let n = gateway.receive(&mut buf).unwrap().unwrap();
    assert_eq!(&buf[..n], b"records frame");
    let n = gateway.receive(&mut buf).unwrap().unwrap();
    assert_eq!(&buf[..n], b"second frame");
    assert_eq!(gateway.receive(&mut buf).unwrap(), None);
    gateway.send(b"ack").unwrap();
    let n = device.receive(&mut buf).unwrap().unwrap();
    assert_eq!(&buf[..n], b"ack");
    assert!(device.send(&[1u8; 300]).is_err(), "over the MTU");
}
