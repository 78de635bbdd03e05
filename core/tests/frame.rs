//! The sealed envelope and the records frame: round trips, MTU limits, and
//! every tampered byte, wrong key and wrong direction refused.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use proptest::prelude::*;
use telemark_core::model::Severity;
use telemark_core::time::Instant;
use telemark_core::wire::frame::{frame_overhead, FrameWriter, RecordsFrame, RECORD_HEADER_MAX};
use telemark_core::wire::seal::{
    open, Direction, FrameError, FrameKind, FrameWriteError, Header, Key, Sealing,
};
use telemark_core::wire::{Epoch, Lane, Record, RecordMeta, Seq};

fn record() -> impl Strategy<Value = (u32, bool, u8, u16, bool, Vec<u8>)> {
    (
        any::<u32>(),
        any::<bool>(),
        0u8..3,
        0u16..16_000,
        any::<bool>(),
        prop::collection::vec(any::<u8>(), 0..80),
    )
}

fn to_record(
    (seq, alert, sev, readings, decimated, payload): &(u32, bool, u8, u16, bool, Vec<u8>),
) -> Record<'_> {
    Record {
        seq: Seq(*seq),
        meta: RecordMeta {
            lane: if *alert { Lane::Alert } else { Lane::Routine },
            severity: Severity::from_bits(*sev).unwrap(),
            readings: *readings,
            decimated: *decimated,
        },
        payload,
    }
}

fn sealing(k: u8) -> Sealing {
    Sealing::key(1, Key::from_bytes([k; 32]))
}

/// A sealed frame of `records` from device 7, epoch 5, counter 3.
fn sealed(records: &[Record<'_>], sealing: &Sealing) -> Vec<u8> {
    let header = Header::new(FrameKind::Records, 7, Epoch(5), 3, sealing);
    let mut buf = vec![0u8; 2048];
    let mut w = FrameWriter::new(&mut buf, &header, Instant::from_millis(1_000), sealing).unwrap();
    for r in records {
        w.push(r, None).unwrap();
    }
    let len = w.finish(sealing).unwrap();
    buf.truncate(len);
    buf
}

proptest! {
    #[test]
    fn frames_round_trip_within_the_mtu(
        device in any::<u64>(),
        epoch in any::<u64>(),
        counter in 1u32..(1 << 31),
        records in prop::collection::vec(record(), 1..12),
        mtu in 40usize..600,
        plain in any::<bool>(),
    ) {
        let sealing = if plain { Sealing::Unauthenticated } else { sealing(9) };
        let header = Header::new(FrameKind::Records, device, Epoch(epoch), counter, &sealing);
        let mut buf = vec![0u8; mtu];
        let Ok(mut w) = FrameWriter::new(&mut buf, &header, Instant::from_millis(77), &sealing) else {
            prop_assert!(mtu < frame_overhead(device, &sealing));
            return Ok(());
        };
        let mut sent = Vec::new();
        for r in &records {
            match w.push(&to_record(r), None) {
                Ok(()) => sent.push(to_record(r)),
                Err(FrameWriteError::Full) => break,
                Err(e) => panic!("{e}"),
            }
        }
        if sent.is_empty() {
            prop_assert_eq!(w.finish(&sealing), Err(FrameWriteError::Empty));
            return Ok(());
        }
        let len = w.finish(&sealing).unwrap();
        prop_assert!(len <= mtu);
        let (got, body) = open(&mut buf[..len], &sealing, Direction::Up).unwrap();
        prop_assert_eq!(got, header);
        let frame = RecordsFrame::parse(&got, body).unwrap();
        prop_assert_eq!(frame.uptime(), Instant::from_millis(77));
        prop_assert_eq!(frame.records().map(|r| r.record).collect::<Vec<_>>(), sent);
        prop_assert!(frame.records().all(|r| r.epoch == Epoch(epoch)));
    }

    #[test]
    fn any_tampered_byte_is_refused(
        records in prop::collection::vec(record(), 1..4),
        at in any::<usize>(),
        flip in 1u8..=255,
    ) {
        let records: Vec<_> = records.iter().map(to_record).collect();
        let mut bytes = sealed(&records, &sealing(9));
        let at = at % bytes.len();
        bytes[at] ^= flip;
        // The header is authenticated too: a changed device id, epoch or
        // counter fails the tag, or does not parse.
        prop_assert!(open(&mut bytes, &sealing(9), Direction::Up).is_err());
    }

    #[test]
    fn arbitrary_bytes_never_panic(mut bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let mut copy = bytes.clone();
        if let Ok((header, body)) = open(&mut bytes, &Sealing::Unauthenticated, Direction::Up) {
            if let Ok(frame) = RecordsFrame::parse(&header, body) {
                prop_assert_eq!(frame.records().count(), frame.len());
            }
        }
        prop_assert!(open(&mut copy, &sealing(1), Direction::Up).is_err());
    }
}

#[test]
fn a_frame_sealed_with_another_key_is_refused() {
    let r = Record {
        seq: Seq(1),
        meta: RecordMeta::routine(1),
        payload: b"x",
    };
    let mut forged = sealed(&[r], &sealing(2));
    assert_eq!(
        open(&mut forged, &sealing(9), Direction::Up).unwrap_err(),
        FrameError::BadTag
    );
    // Another key id names another key: refused before any work.
    let other = Sealing::key(2, Key::from_bytes([9; 32]));
    let mut frame = sealed(&[r], &sealing(9));
    assert_eq!(
        open(&mut frame.clone(), &other, Direction::Up).unwrap_err(),
        FrameError::NotForUs
    );
    // A frame of the way up does not open as one of the way down: a
    // records frame sent back to the device is no response.
    assert_eq!(
        open(&mut frame, &sealing(9), Direction::Down).unwrap_err(),
        FrameError::BadTag
    );
}

#[test]
fn sealed_and_unauthenticated_frames_are_never_taken_for_each_other() {
    let r = Record {
        seq: Seq(1),
        meta: RecordMeta::routine(1),
        payload: b"x",
    };
    let mut plain = sealed(&[r], &Sealing::Unauthenticated);
    assert_eq!(
        open(&mut plain, &sealing(9), Direction::Up).unwrap_err(),
        FrameError::SealingMismatch
    );
    let mut locked = sealed(&[r], &sealing(9));
    assert_eq!(
        open(&mut locked, &Sealing::Unauthenticated, Direction::Up).unwrap_err(),
        FrameError::SealingMismatch
    );
}

#[test]
fn a_sealed_body_is_not_in_clear() {
    let r = Record {
        seq: Seq(1),
        meta: RecordMeta::routine(1),
        payload: b"secret reading",
    };
    let bytes = sealed(&[r], &sealing(9));
    assert!(!bytes.windows(6).any(|w| w == b"secret"));
}

#[test]
fn a_record_that_does_not_fit_leaves_the_frame_intact() {
    let s = sealing(9);
    let header = Header::new(FrameKind::Records, 1, Epoch(1), 1, &s);
    let mut buf = [0u8; 80];
    let mut w = FrameWriter::new(&mut buf, &header, Instant::ZERO, &s).unwrap();
    let small = Record {
        seq: Seq(1),
        meta: RecordMeta::routine(3),
        payload: &[9; 10],
    };
    let big = Record {
        seq: Seq(2),
        meta: RecordMeta::routine(3),
        payload: &[9; 40],
    };
    w.push(&small, None).unwrap();
    assert_eq!(w.push(&big, None), Err(FrameWriteError::Full));
    let len = w.finish(&s).unwrap();
    assert!(len <= 10 + RECORD_HEADER_MAX + frame_overhead(1, &s));
    let (header, body) = open(&mut buf[..len], &s, Direction::Up).unwrap();
    let frame = RecordsFrame::parse(&header, body).unwrap();
    assert_eq!(
        frame.records().map(|r| r.record.seq).collect::<Vec<_>>(),
        [Seq(1)]
    );
}

#[test]
fn zero_and_oversized_counters_are_refused() {
    let s = sealing(9);
    let mut buf = [0u8; 64];
    for counter in [0, 1 << 31] {
        let header = Header::new(FrameKind::Records, 1, Epoch(1), counter, &s);
        assert_eq!(
            FrameWriter::new(&mut buf, &header, Instant::ZERO, &s).err(),
            Some(FrameWriteError::Counter)
        );
    }
}

#[test]
fn unknown_kinds_are_refused_by_name() {
    let r = Record {
        seq: Seq(1),
        meta: RecordMeta::routine(1),
        payload: b"x",
    };
    let mut bytes = sealed(&[r], &Sealing::Unauthenticated);
    bytes[1] = 0x80 | 9;
    assert_eq!(
        open(&mut bytes, &Sealing::Unauthenticated, Direction::Up).unwrap_err(),
        FrameError::Kind(9)
    );
}

#[test]
fn the_crc_of_unauthenticated_frames_is_crc32_iso_hdlc() {
    // The check value the wire format document gives.
    assert_eq!(
        crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC).checksum(b"123456789"),
        0xCBF4_3926
    );
}
