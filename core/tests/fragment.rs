//! Frames in pieces over a lossy, reordering, duplicating link: whatever
//! arrives, the reassembler hands over only whole frames that were sent,
//! and every frame whose pieces all arrived together.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use proptest::prelude::*;
use telemark_core::wire::fragment::{max_frame, FragmentError, Fragments, Reassembler};

const N: usize = 512;

proptest! {
    #[test]
    fn only_sent_frames_come_out_and_complete_ones_always_do(
        mtu in 2usize..80,
        frames in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..400), 1..6),
        // Per piece: dropped, duplicated, and a shuffle key.
        fates in prop::collection::vec((0u8..10, 0u8..10, any::<u16>()), 100..200),
    ) {
        let mut rx: Reassembler<N> = Reassembler::new(mtu).unwrap();
        let mut fate = fates.iter().cycle();
        for (tag, frame) in frames.iter().enumerate() {
            let cut = Fragments::new(frame, mtu, tag as u8);
            if frame.len() > max_frame(mtu) {
                prop_assert_eq!(cut.err(), Some(FragmentError::FrameSize));
                continue;
            }
            let mut pieces: Vec<(u16, Vec<u8>)> = Vec::new();
            let mut complete = true;
            for piece in cut.unwrap() {
                prop_assert!(piece.len() <= mtu);
                let &(drop, dup, key) = fate.next().unwrap();
                if drop == 0 {
                    complete = false;
                    continue;
                }
                pieces.push((key, piece.to_vec()));
                if dup == 0 {
                    pieces.push((key ^ 0x5555, piece.to_vec()));
                }
            }
            pieces.sort_by_key(|p| p.0);
            let mut got = Vec::new();
            for (_, piece) in &pieces {
                match rx.push(piece) {
                    Ok(Some(whole)) => got.push(whole.to_vec()),
                    Ok(None) => {}
                    Err(e) => {
                        // Only a frame longer than the buffer is refused.
                        prop_assert_eq!(e, FragmentError::TooLong);
                        prop_assert!(frame.len() > N);
                    }
                }
            }
            prop_assert!(got.len() <= 1, "one frame came out twice");
            if let Some(whole) = got.first() {
                prop_assert_eq!(whole, frame);
            }
            if complete && frame.len() <= N {
                prop_assert_eq!(got.len(), 1, "a frame whose pieces all came was lost");
            }
        }
    }

    #[test]
    fn pieces_of_two_frames_mixed_never_make_a_wrong_frame(
        a in prop::collection::vec(any::<u8>(), 60..300),
        b in prop::collection::vec(any::<u8>(), 60..300),
        order in prop::collection::vec(any::<u16>(), 32),
    ) {
        let mut rx: Reassembler<N> = Reassembler::new(51).unwrap();
        let mut pieces: Vec<Vec<u8>> = Fragments::new(&a, 51, 0).unwrap().map(|f| f.to_vec()).collect();
        pieces.extend(Fragments::new(&b, 51, 1).unwrap().map(|f| f.to_vec()));
        let mut keyed: Vec<(u16, Vec<u8>)> = order.iter().copied().zip(pieces).collect();
        keyed.sort_by_key(|p| p.0);
        for (_, piece) in &keyed {
            if let Ok(Some(whole)) = rx.push(piece) {
                prop_assert!(whole == a.as_slice() || whole == b.as_slice());
            }
        }
    }

    #[test]
    fn any_bytes_are_refused_or_taken_without_panic(
        pieces in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..60), 0..40),
    ) {
        let mut rx: Reassembler<128> = Reassembler::new(51).unwrap();
        for piece in &pieces {
            if let Ok(Some(whole)) = rx.push(piece) {
                prop_assert!(!whole.is_empty() && whole.len() <= 128);
            }
        }
    }
}

#[test]
fn a_new_frame_under_a_recycled_tag_is_not_taken_for_a_copy() {
    // A device numbers its pieces' tags afresh at every boot.
    let mut rx: Reassembler<256> = Reassembler::new(51).unwrap();
    for frame in [[1u8; 90], [2u8; 90]] {
        let mut out = None;
        for piece in Fragments::new(&frame, 51, 0).unwrap() {
            out = rx.push(&piece.to_vec()).unwrap().map(<[u8]>::to_vec);
        }
        assert_eq!(out.as_deref(), Some(&frame[..]));
    }
    // A late copy of the last frame's first piece is only a duplicate.
    let copy = Fragments::new(&[2u8; 90], 51, 0)
        .unwrap()
        .next()
        .unwrap()
        .to_vec();
    assert_eq!(rx.push(&copy), Ok(None));
    assert_eq!(rx.counters().duplicates, 1);
    assert_eq!(rx.counters().incomplete, 0);
}

#[test]
fn a_lost_piece_abandons_its_frame_and_the_next_frame_still_comes() {
    let first = [1u8; 120];
    let second = [2u8; 70];
    let mut rx: Reassembler<256> = Reassembler::new(51).unwrap();
    let pieces: Vec<Vec<u8>> = Fragments::new(&first, 51, 0)
        .unwrap()
        .map(|f| f.to_vec())
        .collect();
    assert_eq!(rx.push(&pieces[0]), Ok(None));
    assert_eq!(rx.push(&pieces[2]), Ok(None));
    for piece in Fragments::new(&second, 51, 1).unwrap() {
        if let Some(whole) = rx.push(&piece.to_vec()).unwrap() {
            assert_eq!(whole, &second[..]);
        }
    }
    let c = rx.counters();
    assert_eq!((c.frames, c.incomplete), (1, 1));
    assert_eq!(
        Fragments::new(&[], 51, 0).err(),
        Some(FragmentError::FrameSize)
    );
    assert_eq!(
        Reassembler::<8>::new(1).err(),
        Some(FragmentError::MtuTooSmall)
    );
}
