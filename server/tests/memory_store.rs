//! The memory store passes the conformance suite, and the server refuses
//! what it must, counting each cause.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use telemark_core::codec::{BlockCodec, CompactCodec};
use telemark_core::model::{ChannelId, Reading, Value};
use telemark_core::time::Instant;
use telemark_core::wire::frame::FrameWriter;
use telemark_core::wire::seal::{FrameKind, Header, Key, Sealing};
use telemark_core::wire::{Epoch, Record, RecordMeta, Seq};
use telemark_server::{
    conformance, Batch, Committed, EpochState, Keyring, MemoryStore, Outbox, ReceiveError,
    RecordKey, Refusal, Server, Store, Unavailable,
};

#[test]
fn the_memory_store_conforms() {
    conformance::run(MemoryStore::new);
}

const DEVICE: u64 = 42;

fn key() -> Key {
    Key::from_bytes([0x42; 32])
}

fn server() -> Server {
    let mut keyring = Keyring::new();
    keyring.insert(DEVICE, 1, key());
    Server::new(keyring)
}

fn frame(device: u64, sealing: &Sealing, counter: u32, records: &[(u32, u16, &[u8])]) -> Vec<u8> {
    let header = Header::new(FrameKind::Records, device, Epoch(1), counter, sealing);
    let mut buf = vec![0u8; 1024];
    let mut w = FrameWriter::new(&mut buf, &header, Instant::from_millis(1_000), sealing).unwrap();
    for &(seq, readings, payload) in records {
        let r = Record {
            seq: Seq(seq),
            meta: RecordMeta::routine(readings),
            payload,
        };
        w.push(&r, None).unwrap();
    }
    let n = w.finish(sealing).unwrap();
    buf.truncate(n);
    buf
}

fn refusal(
    r: Result<telemark_server::Received, ReceiveError<telemark_server::Unavailable>>,
) -> Refusal {
    match r {
        Err(ReceiveError::Refused(r)) => r,
        other => panic!("not refused: {other:?}"),
    }
}

fn block(n: usize) -> Vec<u8> {
    let readings: Vec<Reading> = (0..n)
        .map(|i| {
            Reading::new(
                ChannelId(1),
                Instant::from_millis(i as u64),
                Value::Scaled(7),
            )
        })
        .collect();
    let mut out = vec![0u8; 4096];
    let len = CompactCodec.encode(&readings, &mut out).unwrap();
    out.truncate(len);
    out
}

#[test]
fn a_block_that_decodes_to_more_than_it_declares_is_refused_and_stores_nothing() {
    let mut server = server();
    let mut store = MemoryStore::new();
    // 65,535 identical readings compress to a handful of bytes.
    let bomb = block(65_535);
    assert!(bomb.len() < 64, "the bomb is {} bytes", bomb.len());
    let s = Sealing::key(1, key());
    let r = server.receive(&mut store, &frame(DEVICE, &s, 1, &[(1, 1, &bomb)]), 0);
    assert!(matches!(
        refusal(r),
        Refusal::InvalidBlock { seq: Seq(1), .. }
    ));
    assert_eq!(server.counters().refused.invalid_block, 1);
    assert!(store.records().is_empty());
    assert_eq!(
        store.commits(),
        0,
        "nothing committed, nothing acknowledged"
    );
    // Declared honestly, but over the frame's budget: refused too.
    let mut small = Server::with_limits(
        {
            let mut k = Keyring::new();
            k.insert(DEVICE, 1, key());
            k
        },
        telemark_server::Limits {
            readings_per_frame: 1000,
            ..Default::default()
        },
    );
    let honest = block(5_000);
    let r = small.receive(&mut store, &frame(DEVICE, &s, 2, &[(2, 5_000, &honest)]), 0);
    assert!(matches!(refusal(r), Refusal::InvalidBlock { .. }));
}

#[test]
fn unknown_devices_keys_bad_tags_and_unauthenticated_frames_are_refused_by_cause() {
    let mut server = server();
    let mut store = MemoryStore::new();
    let b = block(3);
    let good = Sealing::key(1, key());
    let r = server.receive(&mut store, &frame(DEVICE + 1, &good, 1, &[(1, 3, &b)]), 0);
    assert_eq!(refusal(r), Refusal::UnknownDevice(DEVICE + 1));
    let r = server.receive(
        &mut store,
        &frame(DEVICE, &Sealing::key(2, key()), 1, &[(1, 3, &b)]),
        0,
    );
    assert_eq!(
        refusal(r),
        Refusal::UnknownKey {
            device: DEVICE,
            key: 2
        }
    );
    let wrong = Sealing::key(1, Key::from_bytes([0x66; 32]));
    let r = server.receive(&mut store, &frame(DEVICE, &wrong, 1, &[(1, 3, &b)]), 0);
    assert_eq!(refusal(r), Refusal::BadTag);
    let mut tampered = frame(DEVICE, &good, 1, &[(1, 3, &b)]);
    let last = tampered.len() - 20;
    tampered[last] ^= 1;
    assert_eq!(
        refusal(server.receive(&mut store, &tampered, 0)),
        Refusal::BadTag
    );
    let r = server.receive(
        &mut store,
        &frame(DEVICE, &Sealing::Unauthenticated, 1, &[(1, 3, &b)]),
        0,
    );
    assert_eq!(refusal(r), Refusal::Unauthenticated(DEVICE));
    let c = server.counters().refused;
    assert_eq!(
        (
            c.unknown_device,
            c.unknown_key,
            c.bad_tag,
            c.unauthenticated
        ),
        (1, 1, 2, 1)
    );
    assert!(store.records().is_empty());
    // The same frame, once allowed by name, goes through.
    server.keyring_mut().allow_unauthenticated(DEVICE);
    let plain = frame(DEVICE, &Sealing::Unauthenticated, 1, &[(1, 3, &b)]);
    assert!(server.receive(&mut store, &plain, 0).is_ok());
    // And replayed, it is refused.
    assert_eq!(
        refusal(server.receive(&mut store, &plain, 0)),
        Refusal::Replayed
    );
}

#[test]
fn a_store_that_fails_gets_nothing_acknowledged_and_the_resend_is_stored() {
    let mut server = server();
    let mut store = MemoryStore::new();
    let s = Sealing::key(1, key());
    let b = block(3);
    store.set_failing(true);
    assert!(matches!(
        server.receive(&mut store, &frame(DEVICE, &s, 1, &[(1, 3, &b)]), 0),
        Err(ReceiveError::Store(_))
    ));
    assert_eq!(server.counters().store_failures, 1);
    assert_eq!(
        server.counters().frames,
        0,
        "only committed work is counted"
    );
    store.set_failing(false);
    // The device resends the record in its next frame.
    let r = server
        .receive(&mut store, &frame(DEVICE, &s, 2, &[(1, 3, &b)]), 0)
        .unwrap();
    assert_eq!(r.batch.records.len(), 1);
    assert_eq!(server.counters().records, 1);
}

#[test]
fn a_group_the_store_fails_acknowledges_none_of_its_frames() {
    let mut server = server();
    let mut store = MemoryStore::new();
    let s = Sealing::key(1, key());
    let b = block(3);
    let (one, two) = (
        frame(DEVICE, &s, 1, &[(1, 3, &b)]),
        frame(DEVICE, &s, 2, &[(2, 3, &b)]),
    );
    let forged = frame(
        DEVICE,
        &Sealing::key(1, Key::from_bytes([0xEE; 32])),
        3,
        &[(3, 3, &b)],
    );
    store.set_failing(true);
    let group = [(&one[..], 0), (&forged[..], 0), (&two[..], 0)];
    assert!(server.receive_group(&mut store, &group).is_err());
    assert!(store.records().is_empty());
    assert_eq!(
        server.counters().frames,
        0,
        "only committed work is counted"
    );
    assert_eq!(server.counters().store_failures, 3);
    store.set_failing(false);
    // Sent again, the group commits in one transaction; the forged frame
    // is refused on its own.
    let before = store.commits();
    let results = server.receive_group(&mut store, &group).unwrap();
    assert_eq!(store.commits(), before + 1, "one transaction for the group");
    assert!(results[0].is_ok() && results[2].is_ok());
    assert_eq!(results[1].as_ref().err(), Some(&Refusal::BadTag));
    assert_eq!(store.records().len(), 2);
    assert_eq!(server.counters().frames, 2);
}

/// The memory store, with the claims and reads the server made of it, in
/// order.
struct Watched {
    inner: MemoryStore,
    log: Vec<String>,
}

impl Store for Watched {
    type Error = Unavailable;

    fn epoch_state(
        &mut self,
        device: u64,
        epoch: Epoch,
    ) -> Result<Option<EpochState>, Unavailable> {
        self.log.push(format!("read {device}"));
        self.inner.epoch_state(device, epoch)
    }

    fn stored_payload(&mut self, key: RecordKey) -> Result<Option<Vec<u8>>, Unavailable> {
        self.inner.stored_payload(key)
    }

    fn outbox(&mut self, device: u64) -> Result<Outbox, Unavailable> {
        self.log.push(format!("read {device}"));
        self.inner.outbox(device)
    }

    fn commit(&mut self, batch: &Batch) -> Result<Committed, Unavailable> {
        self.inner.commit(batch)
    }

    fn begin_group(&mut self) -> Result<(), Unavailable> {
        self.inner.begin_group()
    }

    fn stage(&mut self, batch: &Batch) -> Result<(), Unavailable> {
        self.inner.stage(batch)
    }

    fn claim(&mut self, device: u64) -> Result<(), Unavailable> {
        self.log.push(format!("claim {device}"));
        Ok(())
    }

    fn claim_all(&mut self, devices: &[u64]) -> Result<(), Unavailable> {
        self.log.push(format!("claim all {devices:?}"));
        Ok(())
    }

    fn commit_group(&mut self) -> Result<(), Unavailable> {
        self.inner.commit_group()
    }

    fn abort_group(&mut self) {
        self.inner.abort_group();
    }

    fn set_config(&mut self, device: u64, version: u32, cbor: &[u8]) -> Result<(), Unavailable> {
        self.inner.set_config(device, version, cbor)
    }

    fn queue_command(
        &mut self,
        device: u64,
        id: u32,
        command: telemark_core::wire::frame::Command,
    ) -> Result<(), Unavailable> {
        self.inner.queue_command(device, id, command)
    }

    fn set_key(&mut self, device: u64, id: u8, key: &Key) -> Result<(), Unavailable> {
        self.inner.set_key(device, id, key)
    }
}

#[test]
fn a_group_claims_the_devices_of_its_keyring_at_once_in_ascending_order_before_any_read() {
    let mut keyring = Keyring::new();
    keyring.insert(DEVICE, 1, key());
    keyring.insert(7, 1, key());
    let mut server = Server::new(keyring);
    let mut store = Watched {
        inner: MemoryStore::new(),
        log: Vec::new(),
    };
    let s = Sealing::key(1, key());
    let b = block(3);
    let frames = [
        frame(DEVICE, &s, 1, &[(1, 3, &b)]),
        frame(99, &s, 1, &[(1, 3, &b)]),
        frame(7, &s, 1, &[(1, 3, &b)]),
        frame(DEVICE, &s, 2, &[(2, 3, &b)]),
    ];
    let group: Vec<(&[u8], u64)> = frames.iter().map(|f| (&f[..], 0)).collect();
    let results = server.receive_group(&mut store, &group).unwrap();
    assert!(results[0].is_ok() && results[2].is_ok() && results[3].is_ok());
    assert_eq!(results[1].as_ref().err(), Some(&Refusal::UnknownDevice(99)));
    assert_eq!(
        store.log[0],
        format!("claim all [7, {DEVICE}]"),
        "{:?}",
        store.log
    );
    assert!(
        !store.log.iter().any(|l| l.contains("99")),
        "a device the keyring does not know costs the store nothing: {:?}",
        store.log
    );
}
