//! The conformance suite every [`Store`] backend runs: records named by
//! (device, epoch, seq), byte-identical repeats dropped, conflicts kept,
//! replay windows and outboxes that outlive the server, all through a real
//! [`Server`] and sealed frames.
//!
//! ```
//! use telemark_server::{conformance, MemoryStore};
//! conformance::run(MemoryStore::new);
//! ```
//!
//! Each check panics with what the backend got wrong.

use telemark_core::codec::{BlockCodec, CompactCodec};
use telemark_core::model::{ChannelId, Reading, Severity, Value};
use telemark_core::time::Instant;
use telemark_core::wire::frame::{Command, FrameWriter, Item, Response};
use telemark_core::wire::report::{KeyStatus, Report};
use telemark_core::wire::seal::{open, Direction, FrameKind, Header, Key, Sealing};
use telemark_core::wire::{Epoch, Record, RecordMeta, Seq};

use crate::intake::{ReceiveError, Refusal, Server};
use crate::keyring::Keyring;
use crate::store::{Contents, RecordKey, Store};

const DEVICE: u64 = 0xC0FFEE;
const RECEIVED: u64 = 1_700_000_000_000;

fn sealing() -> Sealing {
    Sealing::key(1, Key::from_bytes([0x33; 32]))
}

fn server() -> Server {
    let mut keyring = Keyring::new();
    keyring.insert(DEVICE, 1, Key::from_bytes([0x33; 32]));
    Server::new(keyring)
}

fn block(first: u64, n: u64) -> Vec<u8> {
    let readings: Vec<Reading> = (0..n)
        .map(|i| {
            let t = Instant::from_millis(first + i * 1_000);
            Reading::new(ChannelId(1), t, Value::Scaled(100 + i as i32))
        })
        .collect();
    let mut out = vec![0u8; 1024];
    let len = CompactCodec.encode(&readings, &mut out).unwrap_or(0);
    out.truncate(len);
    out
}

/// A sealed records frame: (seq, readings, payload) blocks, each numbered
/// in `epoch`, sent in `epoch` at `uptime` as frame `counter`.
fn frame(epoch: Epoch, counter: u32, uptime: u64, blocks: &[(u32, u16, &[u8])]) -> Vec<u8> {
    sealed_frame(&sealing(), epoch, counter, uptime, blocks)
}

/// [`frame`] sealed with `s`.
fn sealed_frame(
    s: &Sealing,
    epoch: Epoch,
    counter: u32,
    uptime: u64,
    blocks: &[(u32, u16, &[u8])],
) -> Vec<u8> {
    let header = Header::new(FrameKind::Records, DEVICE, epoch, counter, s);
    let mut buf = vec![0u8; 2048];
    let Ok(mut w) = FrameWriter::new(&mut buf, &header, Instant::from_millis(uptime), s) else {
        panic!("frame header does not fit");
    };
    for &(seq, readings, payload) in blocks {
        let record = Record {
            seq: Seq(seq),
            meta: RecordMeta::routine(readings),
            payload,
        };
        assert!(w.push(&record, None).is_ok(), "record does not fit");
    }
    let n = w.finish(s).unwrap_or(0);
    buf.truncate(n);
    buf
}

fn alert_frame(epoch: Epoch, counter: u32, seq: u32, report: Report) -> Vec<u8> {
    sealed_alert_frame(&sealing(), epoch, counter, seq, report)
}

/// [`alert_frame`] sealed with `s`.
fn sealed_alert_frame(
    s: &Sealing,
    epoch: Epoch,
    counter: u32,
    seq: u32,
    report: Report,
) -> Vec<u8> {
    let header = Header::new(FrameKind::Records, DEVICE, epoch, counter, s);
    let mut payload = [0u8; 64];
    let len = report.encode(&mut payload).unwrap_or(0);
    let mut buf = vec![0u8; 256];
    let Ok(mut w) = FrameWriter::new(&mut buf, &header, Instant::from_millis(10), s) else {
        panic!("frame header does not fit");
    };
    let record = Record {
        seq: Seq(seq),
        meta: RecordMeta::alert(Severity::Info, 1),
        payload: payload.get(..len).unwrap_or_default(),
    };
    assert!(w.push(&record, None).is_ok());
    let n = w.finish(s).unwrap_or(0);
    buf.truncate(n);
    buf
}

fn items(response: &[u8]) -> Vec<String> {
    sealed_items(&sealing(), response)
}

/// [`items`] of a response sealed with `s`.
fn sealed_items(s: &Sealing, response: &[u8]) -> Vec<String> {
    let mut bytes = response.to_vec();
    let Ok((header, body)) = open(&mut bytes, s, Direction::Down) else {
        panic!("the response does not open with the device's key");
    };
    let Ok(r) = Response::parse(&header, body) else {
        panic!("the response does not parse");
    };
    r.items()
        .map(|i| match i {
            Item::Config(c) => format!("config {c:02x?}"),
            Item::Command { id, command } => format!("command {id} {command:?}"),
            Item::Key { id, .. } => format!("key {id}"),
        })
        .collect()
}

fn receive<S: Store>(server: &mut Server, store: &mut S, frame: &[u8]) -> crate::Received {
    match server.receive(store, frame, RECEIVED) {
        Ok(r) => r,
        Err(e) => panic!("frame not received: {e}"),
    }
}

/// Runs every check, each on a fresh store from `fresh`.
pub fn run<S: Store>(mut fresh: impl FnMut() -> S) {
    records_are_stored_once_with_unix_times(&mut fresh());
    conflicts_are_kept(&mut fresh());
    epochs_name_records_apart(&mut fresh());
    replays_are_refused_after_a_restart(&mut fresh());
    the_outbox_is_sent_until_settled(&mut fresh());
    keys_rotate_and_retire(&mut fresh());
    groups_commit_together(&mut fresh());
}

/// New records are stored with their readings on the server's clock;
/// a byte-identical repeat is a duplicate and stores nothing.
pub fn records_are_stored_once_with_unix_times<S: Store>(store: &mut S) {
    let mut server = server();
    let b = block(5_000, 4);
    // Sent at uptime 60 s, received at RECEIVED: uptime 0 was 60 s before.
    let r = receive(
        &mut server,
        store,
        &frame(Epoch(1), 1, 60_000, &[(1, 4, &b)]),
    );
    assert_eq!(r.batch.records.len(), 1, "one new record");
    let Some(Contents::Readings(readings)) = r.batch.records.first().map(|r| &r.contents) else {
        panic!("the block did not decode to readings");
    };
    assert_eq!(
        readings.first().and_then(|r| r.unix_ms),
        Some(RECEIVED as i64 - 60_000 + 5_000),
        "reading times mapped through the frame's uptime"
    );
    let key = RecordKey {
        device: DEVICE,
        epoch: Epoch(1),
        seq: Seq(1),
    };
    assert_eq!(
        store.stored_payload(key).ok().flatten().as_deref(),
        Some(&b[..]),
        "the store returns the payload it committed"
    );
    let again = receive(
        &mut server,
        store,
        &frame(Epoch(1), 2, 61_000, &[(1, 4, &b)]),
    );
    assert_eq!(again.batch.records.len(), 0, "a repeat is not stored again");
    assert_eq!(again.batch.duplicates, 1);
    assert!(!again.response.is_empty(), "a repeat is acknowledged again");
}

/// A record whose name is taken by another payload is kept and counted,
/// and the stored one stays.
pub fn conflicts_are_kept<S: Store>(store: &mut S) {
    let mut server = server();
    let first = block(0, 3);
    let other = block(9_000, 3);
    receive(
        &mut server,
        store,
        &frame(Epoch(1), 1, 10_000, &[(7, 3, &first)]),
    );
    let r = receive(
        &mut server,
        store,
        &frame(Epoch(1), 2, 20_000, &[(7, 3, &other)]),
    );
    assert_eq!(r.batch.conflicts.len(), 1, "the conflict is reported");
    assert_eq!(server.counters().conflicts, 1);
    let key = RecordKey {
        device: DEVICE,
        epoch: Epoch(1),
        seq: Seq(7),
    };
    assert_eq!(
        store.stored_payload(key).ok().flatten().as_deref(),
        Some(&first[..]),
        "the first payload stays"
    );
}

/// One sequence number in two epochs names two records: a device whose
/// numbering restarted loses nothing.
pub fn epochs_name_records_apart<S: Store>(store: &mut S) {
    let mut server = server();
    let before = block(0, 2);
    let after = block(0, 3);
    receive(
        &mut server,
        store,
        &frame(Epoch(10), 1, 5_000, &[(1, 2, &before)]),
    );
    let r = receive(
        &mut server,
        store,
        &frame(Epoch(11), 1, 5_000, &[(1, 3, &after)]),
    );
    assert_eq!(
        r.batch.records.len(),
        1,
        "seq 1 of a new epoch is a new record"
    );
    assert_eq!(r.batch.conflicts.len(), 0);
    for (epoch, payload) in [(Epoch(10), &before), (Epoch(11), &after)] {
        let key = RecordKey {
            device: DEVICE,
            epoch,
            seq: Seq(1),
        };
        assert_eq!(
            store.stored_payload(key).ok().flatten().as_ref(),
            Some(payload),
            "epoch {epoch} keeps its own record"
        );
    }
}

/// The replay window is stored: a server started anew on the same store
/// refuses a frame it answered before.
pub fn replays_are_refused_after_a_restart<S: Store>(store: &mut S) {
    let b = block(0, 2);
    let captured = frame(Epoch(3), 5, 1_000, &[(1, 2, &b)]);
    receive(&mut server(), store, &captured);
    let mut restarted = server();
    match restarted.receive(store, &captured, RECEIVED) {
        Err(ReceiveError::Refused(Refusal::Replayed)) => {}
        other => panic!("a replay after a restart was not refused: {other:?}"),
    }
    // Frames within the window, not yet seen, still go through.
    receive(
        &mut restarted,
        store,
        &frame(Epoch(3), 4, 1_100, &[(2, 2, &b)]),
    );
    receive(
        &mut restarted,
        store,
        &frame(Epoch(3), 6, 1_200, &[(3, 2, &b)]),
    );
    assert_eq!(restarted.counters().refused.replayed, 1);
}

/// A config and a command ride every response until the device's
/// reports settle them; what is settled stays settled across a restart.
pub fn the_outbox_is_sent_until_settled<S: Store>(store: &mut S) {
    let cbor = [0xa2, 0x00, 0x02, 0x01, 0x19, 0x03, 0x84];
    assert!(
        store.set_config(DEVICE, 2, &cbor).is_ok(),
        "set_config failed"
    );
    assert!(
        store.queue_command(DEVICE, 9, Command::Ping).is_ok(),
        "queue_command failed"
    );
    assert!(store.queue_command(DEVICE, 9, Command::Reboot).is_ok());
    let mut server = server();
    let b = block(0, 1);
    let r = receive(
        &mut server,
        store,
        &frame(Epoch(4), 1, 1_000, &[(1, 1, &b)]),
    );
    assert_eq!(
        items(&r.response),
        [format!("config {cbor:02x?}"), "command 9 Ping".to_string()],
        "the config and the first command of id 9 go down"
    );
    assert_eq!(
        (r.sent.config, r.sent.commands.as_slice(), r.sent.key),
        (Some(2), &[9][..], None),
        "what went down is told"
    );
    let applied = Report::ConfigStatus {
        version: 2,
        code: 0,
        detail: 0,
    };
    let r = receive(&mut server, store, &alert_frame(Epoch(4), 2, 2, applied));
    assert_eq!(items(&r.response), ["command 9 Ping".to_string()]);
    let answered = Report::CommandResult {
        id: 9,
        status: 0,
        value: 1,
    };
    let mut restarted = self::server();
    let r = receive(
        &mut restarted,
        store,
        &alert_frame(Epoch(4), 3, 3, answered),
    );
    assert!(
        items(&r.response).is_empty(),
        "nothing left: {:?}",
        items(&r.response)
    );
    assert_eq!(r.sent, crate::Sent::default());
    let outbox = store.outbox(DEVICE).ok().unwrap_or_default();
    assert!(
        outbox.pending().is_empty(),
        "the store kept the outbox settled"
    );
}

/// A key rotation rides every response until a frame sealed with the new
/// key arrives; from then on the old key is refused, across a restart; a
/// device that refuses the next key keeps the one it has.
pub fn keys_rotate_and_retire<S: Store>(store: &mut S) {
    let second = Sealing::key(2, Key::from_bytes([0x44; 32]));
    let third = Key::from_bytes([0x55; 32]);
    let mut server = server();
    assert!(
        server
            .rotate_key(store, DEVICE, 1, Key::from_bytes([0x66; 32]))
            .is_err(),
        "a rotation to the id in force is refused"
    );
    assert!(
        server
            .rotate_key(store, DEVICE, 2, Key::from_bytes([0x44; 32]))
            .is_ok(),
        "set_key failed"
    );
    let b = block(0, 1);
    let epoch = Epoch(5);
    let r = receive(&mut server, store, &frame(epoch, 1, 1_000, &[(1, 1, &b)]));
    assert_eq!(items(&r.response), ["key 2"], "the new key goes down");
    let r = receive(
        &mut server,
        store,
        &sealed_frame(&second, epoch, 2, 2_000, &[(2, 1, &b)]),
    );
    assert!(
        sealed_items(&second, &r.response).is_empty(),
        "a response under the new key, with nothing left to send"
    );

    let mut restarted = self::server();
    match restarted.receive(store, &frame(epoch, 3, 3_000, &[(3, 1, &b)]), RECEIVED) {
        Err(ReceiveError::Refused(Refusal::RetiredKey { key: 1, .. })) => {}
        other => panic!("the retired key was not refused: {other:?}"),
    }
    assert_eq!(restarted.counters().refused.retired_key, 1);
    receive(
        &mut restarted,
        store,
        &sealed_frame(&second, epoch, 4, 4_000, &[(3, 1, &b)]),
    );

    assert!(restarted
        .rotate_key(store, DEVICE, 2, third.clone())
        .is_err());
    assert!(restarted.rotate_key(store, DEVICE, 3, third).is_ok());
    let r = receive(
        &mut restarted,
        store,
        &sealed_frame(&second, epoch, 5, 5_000, &[(4, 1, &b)]),
    );
    assert_eq!(sealed_items(&second, &r.response), ["key 3"]);
    let refused = Report::KeyStatus {
        id: 3,
        status: KeyStatus::NotPersistent,
    };
    let r = receive(
        &mut restarted,
        store,
        &sealed_alert_frame(&second, epoch, 6, 5, refused),
    );
    assert!(
        sealed_items(&second, &r.response).is_empty(),
        "a refused key is sent no more"
    );
    let outbox = store.outbox(DEVICE).ok().unwrap_or_default();
    assert_eq!(outbox.key_in_use(), Some(2), "the device keeps key 2");
    match restarted.receive(store, &frame(epoch, 7, 7_000, &[(6, 1, &b)]), RECEIVED) {
        Err(ReceiveError::Refused(Refusal::RetiredKey { key: 1, .. })) => {}
        other => panic!("key 1 came back: {other:?}"),
    }
}

/// Frames committed as one group ([`Server::receive_group`]): each sees
/// the ones before it (a record they share is a duplicate, a frame sent
/// twice a replay), all are stored once the group commits, and the replay
/// window outlives a restart.
pub fn groups_commit_together<S: Store>(store: &mut S) {
    let mut server = server();
    let (a, b) = (block(5_000, 4), block(9_000, 4));
    let first = frame(Epoch(1), 1, 60_000, &[(0, 4, &a)]);
    let second = frame(Epoch(1), 2, 70_000, &[(0, 4, &a), (1, 4, &b)]);
    let group = [
        (&first[..], RECEIVED),
        (&second[..], RECEIVED),
        (&first[..], RECEIVED),
    ];
    let results = match server.receive_group(store, &group) {
        Ok(r) => r,
        Err(e) => panic!("the group was not committed: {e}"),
    };
    let [Ok(one), Ok(two), Err(again)] = &results[..] else {
        panic!("two frames taken and the repeat refused: {results:?}");
    };
    assert_eq!(one.batch.records.len(), 1);
    assert_eq!(
        (two.batch.records.len(), two.batch.duplicates),
        (1, 1),
        "the second frame sees the first's record"
    );
    assert_eq!(*again, Refusal::Replayed);
    assert!(!one.response.is_empty() && !two.response.is_empty());
    assert!(items(&two.response).is_empty());
    for (seq, payload) in [(0, &a), (1, &b)] {
        let key = RecordKey {
            device: DEVICE,
            epoch: Epoch(1),
            seq: Seq(seq),
        };
        assert_eq!(
            store.stored_payload(key).ok().flatten().as_deref(),
            Some(&payload[..]),
            "record {seq} is stored once the group commits"
        );
    }
    let c = server.counters();
    assert_eq!((c.frames, c.records, c.duplicates), (2, 2, 1));
    assert_eq!(c.refused.replayed, 1);
    // After a restart the group's counters are still replays.
    let mut restarted = self::server();
    match restarted.receive(store, &second, RECEIVED) {
        Err(ReceiveError::Refused(Refusal::Replayed)) => {}
        other => panic!("a frame of a committed group taken again: {other:?}"),
    }
}
