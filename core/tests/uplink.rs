//! The uplink state machine: scheduling, frames, retries, and end-to-end
//! delivery over a link that loses, duplicates and delays frames.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::collections::{BTreeMap, VecDeque};

use proptest::prelude::*;
use telemark_core::frame::{write_ack, RecordsFrame};
use telemark_core::model::Severity;
use telemark_core::store::{FullPolicy, Lane, RamStore, RecordMeta, RecordStore, Seq, SeqRange};
use telemark_core::time::{Duration, Instant};
use telemark_core::uplink::{Uplink, UplinkAction, UplinkConfig};

type Store = RamStore<256, 2048>;
const DEVICE: u64 = 0xD1;

fn config(mtu: u16) -> UplinkConfig {
    UplinkConfig::new(DEVICE, mtu, Duration::from_mins(15))
}

fn at(ms: u64) -> Instant {
    Instant::from_millis(ms)
}

fn ack(seqs: &[Seq], server_time: u64) -> Vec<u8> {
    let ranges: Vec<SeqRange> = seqs.iter().map(|&s| SeqRange::single(s)).collect();
    let mut buf = vec![0u8; 16 + 12 * ranges.len()];
    let n = write_ack(&mut buf, DEVICE, Some(server_time), &ranges).unwrap();
    buf.truncate(n);
    buf
}

fn sent_seqs(frame: &[u8]) -> Vec<Seq> {
    RecordsFrame::parse(frame)
        .unwrap()
        .records()
        .map(|r| r.seq)
        .collect()
}

#[test]
fn routine_data_waits_for_the_report_interval() {
    let mut store = Store::new(FullPolicy::EvictOldest);
    let mut up = Uplink::new(config(128));
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
    let mut up = Uplink::new(config(64));
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
    let mut up = Uplink::new(config(48));
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
                assert!(n <= 48);
                let got = sent_seqs(&buf[..n]);
                assert!(!got.is_empty());
                up.on_frame(at(1), &ack(&got, 1_700_000_000_000), &mut store)
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
    let mut up = Uplink::new(cfg);
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
fn frames_for_other_devices_and_garbage_are_refused_and_counted() {
    let mut store = Store::new(FullPolicy::EvictOldest);
    let seq = store.push(RecordMeta::routine(1), b"a").unwrap();
    let mut up = Uplink::new(config(64));
    let mut other = [0u8; 32];
    let n = write_ack(&mut other, DEVICE + 1, None, &[SeqRange::single(seq)]).unwrap();
    assert!(up.on_frame(at(0), &other[..n], &mut store).is_err());
    assert!(up.on_frame(at(0), b"\x01\x01garbage", &mut store).is_err());
    assert_eq!(store.len(), 1, "nothing freed");
    assert_eq!(up.counters().bad_frames, 2);
}

/// The server: stores records durably, once each, and acknowledges them.
#[derive(Default)]
struct Server {
    stored: BTreeMap<u32, Vec<u8>>,
    duplicates: usize,
}

impl Server {
    fn receive(&mut self, frame: &[u8]) -> Option<Vec<u8>> {
        let frame = RecordsFrame::parse(frame).ok()?;
        let mut seqs = Vec::new();
        for r in frame.records() {
            if self.stored.insert(r.seq.0, r.payload.to_vec()).is_some() {
                self.duplicates += 1;
            }
            seqs.push(r.seq);
        }
        Some(ack(&seqs, 1_700_000_000_000))
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
        let mut up = Uplink::new(config(96));
        let mut link = Link { rng: seed, loss, dup, delay_ms };
        let mut server = Server::default();
        let mut buf = [0u8; 96];
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
                    let _ = up.on_frame(now, &bytes, &mut store);
                }
            }
            while let Some(action) = up.poll(now, &mut store, &mut buf) {
                if let UplinkAction::Send(n) = action {
                    prop_assert!(n <= 96);
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
