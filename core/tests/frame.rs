//! The frame envelope: round trips, MTU limits, and corruption caught by the CRC.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use proptest::prelude::*;
use telemark_core::frame::{
    FrameError, FrameWriteError, FrameWriter, RecordsFrame, FRAME_OVERHEAD_MAX,
};
use telemark_core::model::Severity;
use telemark_core::store::{Lane, Record, RecordMeta, Seq};

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

proptest! {
    #[test]
    fn frames_round_trip_within_the_mtu(
        device in any::<u64>(),
        records in prop::collection::vec(record(), 1..12),
        mtu in 40usize..600,
    ) {
        let mut buf = vec![0u8; mtu];
        let mut w = FrameWriter::new(&mut buf, device).unwrap();
        let mut sent = Vec::new();
        for r in &records {
            match w.push(&to_record(r)) {
                Ok(()) => sent.push(to_record(r)),
                Err(FrameWriteError::Full) => break,
                Err(e) => panic!("{e}"),
            }
        }
        if sent.is_empty() {
            prop_assert_eq!(w.finish(), Err(FrameWriteError::Empty));
            return Ok(());
        }
        let len = w.finish().unwrap();
        prop_assert!(len <= mtu);
        let frame = RecordsFrame::parse(&buf[..len]).unwrap();
        prop_assert_eq!(frame.device(), device);
        prop_assert_eq!(frame.records().collect::<Vec<_>>(), sent);
    }

    #[test]
    fn any_single_corruption_is_caught(
        records in prop::collection::vec(record(), 1..4),
        at in any::<usize>(),
        flip in 1u8..=255,
    ) {
        let mut buf = vec![0u8; 1024];
        let mut w = FrameWriter::new(&mut buf, 7).unwrap();
        for r in &records {
            w.push(&to_record(r)).unwrap();
        }
        let len = w.finish().unwrap();
        buf[at % len] ^= flip;
        prop_assert_eq!(RecordsFrame::parse(&buf[..len]).err(), Some(FrameError::Crc));
        prop_assert!(RecordsFrame::parse(&buf[..at % len]).is_err());
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(frame) = RecordsFrame::parse(&bytes) {
            prop_assert_eq!(frame.records().count(), frame.len());
        }
    }
}

#[test]
fn a_record_that_does_not_fit_leaves_the_frame_intact() {
    let mut buf = [0u8; 48];
    let mut w = FrameWriter::new(&mut buf, 1).unwrap();
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
    w.push(&small).unwrap();
    assert_eq!(w.push(&big), Err(FrameWriteError::Full));
    let len = w.finish().unwrap();
    let frame = RecordsFrame::parse(&buf[..len]).unwrap();
    assert_eq!(frame.records().map(|r| r.seq).collect::<Vec<_>>(), [Seq(1)]);
    assert!(len <= 10 + 4 + 12 + FRAME_OVERHEAD_MAX);
}

#[test]
fn other_versions_and_kinds_are_refused_by_name() {
    let mut buf = [0u8; 64];
    let mut w = FrameWriter::new(&mut buf, 1).unwrap();
    w.push(&Record {
        seq: Seq(1),
        meta: RecordMeta::routine(1),
        payload: b"x",
    })
    .unwrap();
    let len = w.finish().unwrap();
    let reseal = |bytes: &mut [u8]| {
        let n = bytes.len() - 4;
        let crc = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC).checksum(&bytes[..n]);
        bytes[n..].copy_from_slice(&crc.to_le_bytes());
    };
    let mut v2 = buf;
    v2[0] = 2;
    reseal(&mut v2[..len]);
    assert_eq!(
        RecordsFrame::parse(&v2[..len]).err(),
        Some(FrameError::Version(2))
    );
    let mut k9 = buf;
    k9[1] = 9;
    reseal(&mut k9[..len]);
    assert_eq!(
        RecordsFrame::parse(&k9[..len]).err(),
        Some(FrameError::Kind(9))
    );
}

#[test]
fn the_crc_is_crc32_iso_hdlc() {
    // The check value the wire format document gives.
    assert_eq!(
        crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC).checksum(b"123456789"),
        0xCBF4_3926
    );
}
