//! The uplink state machine: scheduling, frames, retries, and end-to-end
//! delivery over a link that loses, duplicates and delays frames.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::collections::{BTreeMap, VecDeque};

use proptest::prelude::*;
use telemark_core::model::Severity;
use telemark_core::store::{FullPolicy, Lane, RamStore, RecordMeta, RecordStore, Seq, SeqRange};
use telemark_core::time::{Duration, Instant};
use telemark_core::uplink::{Uplink, UplinkAction, UplinkConfig};
use telemark_core::wire::frame::{RecordsFrame, ResponseWriter};
use telemark_core::wire::seal::{open, Direction, FrameError, FrameKind, Header, Key, Sealing};
use telemark_core::wire::Epoch;

type Store = RamStore<256, 2048>;
const DEVICE: u64 = 0xD1;

fn config(mtu: u16) -> UplinkConfig {
    UplinkConfig::new(DEVICE, mtu, Duration::from_mins(15))
}

fn at(ms: u64) -> Instant {
    Instant::from_millis(ms)
}

const EPOCH: Epoch = Epoch(0xE0);

fn sealing() -> Sealing {
    Sealing::key(1, Key::from_bytes([0x5a; 32]))
}

fn uplink(config: UplinkConfig) -> Uplink {
    Uplink::new(config, sealing(), EPOCH)
}

/// The counter and sequence numbers of a records frame.
fn opened(frame: &[u8]) -> (u32, Vec<Seq>) {
    let mut bytes = frame.to_vec();
    let (header, body) = open(&mut bytes, &sealing(), Direction::Up).unwrap();
    let records = RecordsFrame::parse(&header, body).unwrap();
    (
        header.counter,
        records.records().map(|r| r.record.seq).collect(),
    )
}

fn sent_seqs(frame: &[u8]) -> Vec<Seq> {
    opened(frame).1
}

/// A response to frame `counter` acknowledging `seqs`, sealed with `sealing`.
fn response_with(
    sealing: &Sealing,
    device: u64,
    counter: u32,
    seqs: &[Seq],
    server_time: u64,
) -> Vec<u8> {
    let ranges: Vec<SeqRange> = seqs.iter().map(|&s| SeqRange::single(s)).collect();
    let header = Header::new(FrameKind::Response, device, EPOCH, counter, sealing);
    let mut buf = vec![0u8; 64 + 12 * ranges.len()];
    let w = ResponseWriter::new(&mut buf, &header, Some(server_time), &ranges, sealing).unwrap();
    let n = w.finish(sealing).unwrap();
    buf.truncate(n);
    buf
}

/// The server's answer to `frame`: every record in it acknowledged.
fn ack(frame: &[u8], server_time: u64) -> Vec<u8> {
    let (counter, seqs) = opened(frame);
    response_with(&sealing(), DEVICE, counter, &seqs, server_time)
}

#[test]
fn routine_data_waits_for_the_report_interval() {
    let mut store = Store::new(FullPolicy::EvictOldest);
    let mut up = uplink(config(128));
    let mut buf = [0u8; 128];
    store.push(RecordMeta::routine(10), &[1; 20]).unwrap();
    assert_eq!(up.poll(at(1_000), &mut store, &mut buf), None);
    assert_eq!(up.deadline(at(1_000), &mut store), Some(at(15 * 60_000)));
    assert_eq!(up.poll(at(15 * 60_000 - 1), &mut store, &mut buf), None);
    assert_eq!(
        up.poll(at(15 * 60_000), &mut store, &mut buf),
        Some(UplinkAction::RadioOn)
    );
    assert!(matches!(
        up.poll(at(15 * 60_000), &mut store, &mut buf),
        Some(UplinkAction::Send(_))
    ));
    assert_eq!(up.counters().wakeups, 1);
}

#[test]
fn an_alert_wakes_the_radio_at_once_and_goes_first() {
    let mut store = Store::new(FullPolicy::EvictOldest);
    let mut up = uplink(config(64));
    let mut buf = [0u8; 256];
    let block = store.push(RecordMeta::routine(10), &[1; 20]).unwrap();
    assert_eq!(up.poll(at(5), &mut store, &mut buf), None);
    let alert = store
        .push(RecordMeta::alert(Severity::Warning, 1), b"leak")
        .unwrap();
    assert_eq!(
        up.poll(at(6), &mut store, &mut buf),
        Some(UplinkAction::RadioOn)
    );
    let Some(UplinkAction::Send(n)) = up.poll(at(6), &mut store, &mut buf) else {
        panic!()
    };
    assert!(n <= 64, "frame of {n} bytes over a 64-byte MTU");
    assert_eq!(sent_seqs(&buf[..n]), vec![alert, block]);
}

#[test]
fn frames_respect_the_mtu_and_the_session_sends_until_empty() {
    let mut store = Store::new(FullPolicy::EvictOldest);
    let mut up = uplink(config(64));
    let mut buf = [0u8; 512];
    let seqs: Vec<Seq> = (0..6)
        .map(|i| store.push(RecordMeta::routine(i), &[i as u8; 15]).unwrap())
        .collect();
    up.flush_now();
    assert_eq!(
        up.poll(at(0), &mut store, &mut buf),
        Some(UplinkAction::RadioOn)
    );
    let mut delivered = Vec::new();
    loop {
        match up.poll(at(1), &mut store, &mut buf) {
            Some(UplinkAction::Send(n)) => {
                assert!(n <= 64);
                let got = sent_seqs(&buf[..n]);
                assert!(!got.is_empty());
                up.on_frame(at(1), &mut ack(&buf[..n], 1_700_000_000_000), &mut store)
                    .unwrap();
                delivered.extend(got);
            }
            Some(UplinkAction::RadioOff) => break,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(delivered, seqs);
    assert!(store.is_empty());
    assert_eq!(up.counters().acked_records, 6);
    assert!(up.counters().frames_sent >= 3);
    // The acknowledgements taught the device the time.
    assert_eq!(up.clock().to_unix_millis(at(1)), Some(1_700_000_000_000));
}

#[test]
fn unanswered_frames_are_resent_with_growing_bounded_backoff() {
    let mut store = Store::new(FullPolicy::EvictOldest);
    let mut cfg = config(128);
    cfg.max_backoff = Duration::from_secs(60);
    let mut up = uplink(cfg);
    let mut buf = [0u8; 128];
    store
        .push(RecordMeta::alert(Severity::Critical, 1), b"x")
        .unwrap();
    let mut now = at(0);
    assert_eq!(
        up.poll(now, &mut store, &mut buf),
        Some(UplinkAction::RadioOn)
    );
    let mut gaps = Vec::new();
    let mut last_send = now;
    loop {
        match up.poll(now, &mut store, &mut buf) {
            Some(UplinkAction::Send(_)) => {
                gaps.push(now - last_send);
                last_send = now;
            }
            Some(UplinkAction::RadioOff) => break,
            Some(UplinkAction::RadioOn) => panic!("already on"),
            None => {}
        }
        now = up.deadline(now, &mut store).unwrap();
    }
    // Five sends: timeouts of 10, 20, 40 s, then capped at 60 s, each with up to 50 % jitter.
    assert_eq!(gaps.len(), 5);
    let waits: Vec<u64> = gaps[1..].iter().map(|d| d.as_millis()).collect();
    for (wait, base) in waits.iter().zip([10_000u64, 20_000, 40_000, 60_000]) {
        assert!(
            (base..=base * 3 / 2).contains(wait),
            "waited {wait} ms for base {base}"
        );
    }
    assert_eq!(up.counters().retries, 4);
    assert_eq!(up.counters().failed_sessions, 1);
    // The next session waits out a backoff even for an alert.
    let retry_at = up.deadline(now, &mut store).unwrap();
    assert!(retry_at > now);
    assert_eq!(up.poll(now, &mut store, &mut buf), None);
    assert_eq!(
        up.poll(retry_at, &mut store, &mut buf),
        Some(UplinkAction::RadioOn)
    );
}

#[test]
fn a_far_end_that_asks_to_wait_is_left_alone_that_long() {
    let mut store = Store::new(FullPolicy::EvictOldest);
    let mut up = uplink(config(128));
    let mut buf = [0u8; 128];
    store
        .push(RecordMeta::alert(Severity::Critical, 1), b"x")
        .unwrap();
    let now = at(1_000);
    assert_eq!(
        up.poll(now, &mut store, &mut buf),
        Some(UplinkAction::RadioOn)
    );
    assert!(matches!(
        up.poll(now, &mut store, &mut buf),
        Some(UplinkAction::Send(_))
    ));
    // An HTTP 429 with Retry-After: 1800. The first backoff is seconds;
    // the server's wait is what counts, even for a critical alert.
    let wait = Duration::from_mins(30);
    assert_eq!(up.on_link_busy(now, wait), Some(UplinkAction::RadioOff));
    assert!(!up.radio_on());
    assert_eq!(up.counters().failed_sessions, 1);
    assert_eq!(up.deadline(now, &mut store), Some(now + wait));
    assert_eq!(
        up.poll(now + Duration::from_secs(1799), &mut store, &mut buf),
        None
    );
    assert_eq!(
        up.poll(now + wait, &mut store, &mut buf),
        Some(UplinkAction::RadioOn)
    );
    // A wait shorter than the backoff leaves the backoff.
    assert!(matches!(
        up.poll(now + wait, &mut store, &mut buf),
        Some(UplinkAction::Send(_))
    ));
    let later = now + wait;
    up.on_link_busy(later, Duration::from_millis(1));
    assert!(up.deadline(later, &mut store).unwrap() > later + Duration::from_millis(1));
}

/// Sends what is stored and returns the frame.
fn send_one(up: &mut Uplink, store: &mut Store, now: Instant) -> Vec<u8> {
    let mut buf = [0u8; 128];
    up.flush_now();
    loop {
        match up.poll(now, store, &mut buf) {
            Some(UplinkAction::Send(n)) => return buf[..n].to_vec(),
            Some(UplinkAction::RadioOn) => {}
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn frames_for_other_devices_and_garbage_are_refused_and_counted() {
    let mut store = Store::new(FullPolicy::EvictOldest);
    let seq = store.push(RecordMeta::routine(1), b"a").unwrap();
    let mut up = uplink(config(64));
    let frame = send_one(&mut up, &mut store, at(0));
    let (counter, _) = opened(&frame);
    let mut other = response_with(&sealing(), DEVICE + 1, counter, &[seq], 1);
    assert_eq!(
        up.on_frame(at(0), &mut other, &mut store).unwrap_err(),
        FrameError::NotForUs
    );
    assert!(up
        .on_frame(at(0), &mut b"\x02\x01garbage".to_vec(), &mut store)
        .is_err());
    assert_eq!(store.len(), 1, "nothing freed");
    assert_eq!(up.counters().bad_frames, 2);
}

#[test]
fn a_forged_ack_frees_nothing() {
    let mut store = Store::new(FullPolicy::EvictOldest);
    let seq = store
        .push(RecordMeta::alert(Severity::Critical, 1), b"fire")
        .unwrap();
    let mut up = uplink(config(64));
    let frame = send_one(&mut up, &mut store, at(0));
    let (counter, _) = opened(&frame);
    // Right device, epoch and counter, but not the device's key.
    let attacker = Sealing::key(1, Key::from_bytes([0x66; 32]));
    let mut forged = response_with(&attacker, DEVICE, counter, &[seq], 1);
    assert_eq!(
        up.on_frame(at(1), &mut forged, &mut store).unwrap_err(),
        FrameError::BadTag
    );
    // Unauthenticated, as if the link were a bench.
    let mut plain = response_with(&Sealing::Unauthenticated, DEVICE, counter, &[seq], 1);
    assert_eq!(
        up.on_frame(at(1), &mut plain, &mut store).unwrap_err(),
        FrameError::SealingMismatch
    );
    assert_eq!(store.len(), 1, "the alert is still there");
    assert_eq!(up.counters().bad_frames, 2);
    // The real acknowledgement still works.
    up.on_frame(at(2), &mut ack(&frame, 1), &mut store).unwrap();
    assert!(store.is_empty());
}

#[test]
fn a_replayed_or_stale_ack_frees_nothing_and_keeps_the_attempt_count() {
    let mut store = Store::new(FullPolicy::EvictOldest);
    store.push(RecordMeta::routine(1), b"a").unwrap();
    let mut up = uplink(config(64));
    let first = send_one(&mut up, &mut store, at(0));
    let mut captured = ack(&first, 1);
    up.on_frame(at(1), &mut captured.clone(), &mut store)
        .unwrap();
    assert!(store.is_empty());
    // A second record; the captured acknowledgement is replayed.
    store.push(RecordMeta::routine(1), b"b").unwrap();
    let second = send_one(&mut up, &mut store, at(2));
    assert_ne!(
        opened(&first).0,
        opened(&second).0,
        "a new counter per frame"
    );
    assert_eq!(
        up.on_frame(at(3), &mut captured, &mut store).unwrap_err(),
        FrameError::Replayed
    );
    assert_eq!(store.len(), 1);
    assert_eq!(up.counters().replayed, 1);
    // Still waiting for the real answer: the resend comes at its deadline.
    let mut buf = [0u8; 128];
    assert_eq!(up.poll(at(4), &mut store, &mut buf), None);
    // An acknowledgement of a record the frame did not carry frees nothing.
    let (counter, _) = opened(&second);
    let mut wrong = response_with(&sealing(), DEVICE, counter, &[Seq(999)], 1);
    let (info, _) = up.on_frame(at(5), &mut wrong, &mut store).unwrap();
    assert_eq!(info.records, 0);
    assert_eq!(store.len(), 1);
}

#[test]
fn an_ack_frees_only_records_that_were_sent() {
    let mut store = Store::new(FullPolicy::EvictOldest);
    let a = store.push(RecordMeta::routine(1), b"a").unwrap();
    let mut up = uplink(config(64));
    let frame = send_one(&mut up, &mut store, at(0));
    // Stored after the frame went: not in flight.
    let b = store.push(RecordMeta::routine(1), b"b").unwrap();
    let (counter, _) = opened(&frame);
    let mut both = response_with(&sealing(), DEVICE, counter, &[a, b], 1);
    let (info, _) = up.on_frame(at(1), &mut both, &mut store).unwrap();
    assert_eq!(info.records, 1);
    assert_eq!(store.peek(0).unwrap().unwrap().seq, b);
}

/// The server: stores records durably, once each, and acknowledges them.
#[derive(Default)]
struct Server {
    stored: BTreeMap<u32, Vec<u8>>,
    duplicates: usize,
    answered: std::collections::HashSet<u32>,
}

impl Server {
    fn receive(&mut self, frame: &[u8]) -> Option<Vec<u8>> {
        let mut bytes = frame.to_vec();
        let (header, body) = open(&mut bytes, &sealing(), Direction::Up).ok()?;
        // A frame counter answered before is a replay: never answered twice.
        if !self.answered.insert(header.counter) {
            return None;
        }
        let frame = RecordsFrame::parse(&header, body).ok()?;
        let mut seqs = Vec::new();
        for r in frame.records() {
            let r = r.record;
            if self.stored.insert(r.seq.0, r.payload.to_vec()).is_some() {
                self.duplicates += 1;
            }
            seqs.push(r.seq);
        }
        Some(response_with(
            &sealing(),
            DEVICE,
            header.counter,
            &seqs,
            1_700_000_000_000,
        ))
    }
}

struct Link {
    rng: u64,
    loss: f64,
    dup: f64,
    delay_ms: u64,
}

impl Link {
    fn roll(&mut self) -> f64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Copies of a frame that arrive, with their arrival delays.
    fn carry(&mut self) -> Vec<u64> {
        let mut out = Vec::new();
        if self.roll() >= self.loss {
            out.push(self.delay_ms / 2 + (self.roll() * self.delay_ms as f64) as u64);
        }
        if self.roll() < self.dup {
            out.push(self.delay_ms + (self.roll() * self.delay_ms as f64) as u64);
        }
        out
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever the link loses, duplicates or delays, every record pushed is
    /// stored by the server exactly once, and freed on the device only after.
    #[test]
    fn every_record_arrives_once_over_a_lossy_link(
        seed in 1u64..,
        loss in 0.0f64..0.6,
        dup in 0.0f64..0.3,
        delay_ms in 0u64..20_000,
        pushes in prop::collection::vec((any::<bool>(), 1usize..40, 0u64..600_000), 1..60),
    ) {
        let mut store = Store::new(FullPolicy::Refuse);
        let mut up = uplink(config(112));
        let mut link = Link { rng: seed, loss, dup, delay_ms };
        let mut server = Server::default();
        let mut buf = [0u8; 112];
        let mut expected = BTreeMap::new();
        let mut now = at(0);
        let mut pushes: VecDeque<_> = {
            let mut t = 0;
            pushes.into_iter().map(|(alert, len, dt)| { t += dt; (at(t), alert, len) }).collect()
        };
        // Frames in flight either way: (arrival time, to server?, bytes).
        let mut wire: Vec<(Instant, bool, Vec<u8>)> = Vec::new();
        let end = at(60 * 24 * 3_600_000);
        while now < end {
            while pushes.front().is_some_and(|p| p.0 <= now) {
                let (_, alert, len) = pushes.pop_front().unwrap();
                let meta = if alert { RecordMeta::alert(Severity::Warning, 1) } else { RecordMeta::routine(len as u16) };
                let payload: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
                if let Ok(seq) = store.push(meta, &payload) {
                    expected.insert(seq.0, payload);
                }
            }
            // Deliver what has arrived.
            let (arrived, rest): (Vec<_>, Vec<_>) = wire.drain(..).partition(|w| w.0 <= now);
            wire = rest;
            for (_, to_server, bytes) in arrived {
                if to_server {
                    if let Some(reply) = server.receive(&bytes) {
                        for delay in link.carry() {
                            wire.push((now + Duration::from_millis(delay), false, reply.clone()));
                        }
                    }
                } else if up.radio_on() {
                    let _ = up.on_frame(now, &mut bytes.clone(), &mut store);
                }
            }
            while let Some(action) = up.poll(now, &mut store, &mut buf) {
                if let UplinkAction::Send(n) = action {
                    prop_assert!(n <= 112);
                    for delay in link.carry() {
                        wire.push((now + Duration::from_millis(delay), true, buf[..n].to_vec()));
                    }
                    up.on_sent(now);
                }
                if action == UplinkAction::RadioOff {
                    break;
                }
            }
            // Every freed record is on the server already.
            for seq in expected.keys() {
                let still_here = store.iter().any(|r| r.seq.0 == *seq);
                prop_assert!(still_here || server.stored.contains_key(seq), "seq {} freed but not stored", seq);
            }
            let next = [
                up.deadline(now, &mut store),
                wire.iter().map(|w| w.0).min(),
                pushes.front().map(|p| p.0),
            ]
            .into_iter()
            .flatten()
            .min();
            match next {
                Some(t) if t > now => now = t,
                Some(_) => now = now + Duration::from_millis(1),
                None => break,
            }
        }
        prop_assert!(store.is_empty(), "{} records never delivered", store.len());
        prop_assert_eq!(&server.stored, &expected);
        let c = up.counters();
        prop_assert!(c.acked_records as usize <= expected.len());
        prop_assert!(c.frames_sent >= 1);
        let _ = Lane::Alert;
    }
}
