//! The server half of the protocol: a records frame in, a committed batch
//! and the response out.

use std::collections::HashMap;
use std::fmt;

use telemark_core::codec::{CompactCodec, DecodeError};
use telemark_core::model::Reading;
use telemark_core::transport::MAX_DOWNLINK;
use telemark_core::wire::frame::{RecordsFrame, ResponseWriter, MAX_ACK_RANGES};
use telemark_core::wire::report::Report;
use telemark_core::wire::seal::{open, Direction, FrameError, FrameKind, Header, Key, Sealing};
use telemark_core::wire::{Epoch, Lane, Seq, SeqRange};

use crate::keyring::Keyring;
use crate::outbox::{KeyState, Outbox, OutboxChange, Retired, Sent};
use crate::store::{
    Batch, Committed, Conflict, Contents, EpochState, NewRecord, PendingResponse, RecordKey, Store,
    TimedReading,
};

/// Bounds on what one frame may make the server do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Readings one frame may decode to, all its blocks together.
    pub readings_per_frame: usize,
    /// Largest response a device takes (its receive buffer).
    pub downlink_mtu: usize,
}

impl Default for Limits {
    /// 65,536 readings a frame; the core's `MAX_DOWNLINK` (256 bytes) down.
    fn default() -> Self {
        Limits {
            readings_per_frame: 65_536,
            downlink_mtu: MAX_DOWNLINK,
        }
    }
}

/// Why a frame was refused. Nothing of it was stored or acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// Not a frame: too short, or a field out of range.
    Malformed,
    /// A frame version this server does not read.
    UnsupportedVersion(u8),
    /// A response, or a kind this server does not read.
    NotRecords,
    /// No such device in the keyring.
    UnknownDevice(u64),
    /// The device has no key of that id: the device id does not match
    /// the key.
    UnknownKey {
        /// The device the frame claims.
        device: u64,
        /// The key id it names.
        key: u8,
    },
    /// A key the device moved away from (a rotation finished): the old
    /// key may be the one an attacker holds.
    RetiredKey {
        /// The device the frame claims.
        device: u64,
        /// The key id it names.
        key: u8,
    },
    /// The tag does not verify: forged, tampered or corrupted.
    BadTag,
    /// Unauthenticated, from a device not allowed to send so.
    Unauthenticated(u64),
    /// A frame counter of this boot seen before, or too old to tell.
    Replayed,
    /// A block that does not decode to exactly the readings it declares,
    /// or a frame decoding to more than [`Limits::readings_per_frame`].
    InvalidBlock {
        /// The record.
        seq: Seq,
        /// Why.
        error: DecodeError,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Malformed => f.write_str("malformed frame"),
            Refusal::UnsupportedVersion(v) => write!(f, "unsupported frame version {v}"),
            Refusal::NotRecords => f.write_str("not a records frame"),
            Refusal::UnknownDevice(d) => write!(f, "unknown device {d}"),
            Refusal::UnknownKey { device, key } => {
                write!(f, "device {device} has no key {key}")
            }
            Refusal::RetiredKey { device, key } => {
                write!(f, "device {device} moved away from key {key}")
            }
            Refusal::BadTag => f.write_str("authentication failed"),
            Refusal::Unauthenticated(d) => {
                write!(
                    f,
                    "unauthenticated frame from device {d}, which must seal its frames"
                )
            }
            Refusal::Replayed => f.write_str("replayed frame"),
            Refusal::InvalidBlock { seq, error } => write!(f, "record {seq}: {error}"),
        }
    }
}

impl std::error::Error for Refusal {}

/// Why [`Server::receive`] did not acknowledge a frame.
#[derive(Debug)]
pub enum ReceiveError<E> {
    /// The frame was refused (and counted).
    Refused(Refusal),
    /// The store failed: nothing was acknowledged; the device sends again.
    Store(E),
}

impl<E: fmt::Display> fmt::Display for ReceiveError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReceiveError::Refused(r) => write!(f, "refused: {r}"),
            ReceiveError::Store(e) => write!(f, "not stored: {e}"),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for ReceiveError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReceiveError::Refused(r) => Some(r),
            ReceiveError::Store(e) => Some(e),
        }
    }
}

/// Why [`Server::rotate_key`] did not start a rotation.
#[derive(Debug)]
pub enum RotateError<E> {
    /// No such device in the keyring.
    UnknownDevice(u64),
    /// The device seals with a key of this id now: a new key needs a new
    /// id (the device refuses another key under the id in force).
    IdInUse(u8),
    /// The store failed; nothing changed.
    Store(E),
}

impl<E: fmt::Display> fmt::Display for RotateError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RotateError::UnknownDevice(d) => write!(f, "unknown device {d}"),
            RotateError::IdInUse(id) => {
                write!(f, "key id {id} is in use: a new key needs a new id")
            }
            RotateError::Store(e) => write!(f, "not saved: {e}"),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for RotateError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RotateError::Store(e) => Some(e),
            _ => None,
        }
    }
}

/// Frames refused, by cause.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Refusals {
    /// [`Refusal::Malformed`] and [`Refusal::NotRecords`].
    pub malformed: u64,
    /// [`Refusal::UnsupportedVersion`].
    pub unsupported_version: u64,
    /// [`Refusal::UnknownDevice`].
    pub unknown_device: u64,
    /// [`Refusal::UnknownKey`].
    pub unknown_key: u64,
    /// [`Refusal::RetiredKey`].
    pub retired_key: u64,
    /// [`Refusal::BadTag`].
    pub bad_tag: u64,
    /// [`Refusal::Unauthenticated`].
    pub unauthenticated: u64,
    /// [`Refusal::Replayed`].
    pub replayed: u64,
    /// [`Refusal::InvalidBlock`].
    pub invalid_block: u64,
}

impl Refusals {
    /// All refusals.
    pub fn total(&self) -> u64 {
        self.malformed
            + self.unsupported_version
            + self.unknown_device
            + self.unknown_key
            + self.retired_key
            + self.bad_tag
            + self.unauthenticated
            + self.replayed
            + self.invalid_block
    }
}

/// What the server did. Stored work is counted only once committed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Frames committed and answered.
    pub frames: u64,
    /// New records stored.
    pub records: u64,
    /// Readings in them.
    pub readings: u64,
    /// Records received again, byte for byte, and not stored again.
    pub duplicates: u64,
    /// Records whose name was taken by another payload: kept and counted.
    pub conflicts: u64,
    /// Frames the store failed to commit (not acknowledged).
    pub store_failures: u64,
    /// Frames refused, by cause.
    pub refused: Refusals,
}

/// A frame stored: the batch as committed, and the response to send back.
#[derive(Debug)]
pub struct Received {
    /// What was committed.
    pub batch: Batch,
    /// The sealed response: the acknowledgement and what the outbox holds.
    pub response: Vec<u8>,
    /// What of the outbox the response carried (what did not fit goes
    /// with a later one).
    pub sent: Sent,
}

/// Frames of a group of `n` that were not refused, of those `prepared`
/// so far: none of them is acknowledged when the group fails.
fn unrefused(n: usize, prepared: &[Result<Prepared, Refusal>]) -> usize {
    n.saturating_sub(prepared.iter().filter(|p| p.is_err()).count())
}

/// A frame opened and checked, its batch built, not yet committed.
struct Prepared {
    batch: Batch,
    outbox: Outbox,
    sealing: Sealing,
    received_unix_ms: u64,
}

/// The server half of the protocol, over the host's keyring. See the
/// crate docs.
#[derive(Debug)]
pub struct Server {
    keyring: Keyring,
    limits: Limits,
    counters: Counters,
}

impl Server {
    /// A server accepting the devices of `keyring`.
    pub fn new(keyring: Keyring) -> Self {
        Server::with_limits(keyring, Limits::default())
    }

    /// A server with other bounds.
    pub fn with_limits(keyring: Keyring, limits: Limits) -> Self {
        Server {
            keyring,
            limits,
            counters: Counters::default(),
        }
    }

    /// The keys it accepts.
    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// The keyring, to add and remove devices and keys.
    pub fn keyring_mut(&mut self) -> &mut Keyring {
        &mut self.keyring
    }

    /// What the server did so far.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    fn refuse<E>(&mut self, r: Refusal) -> ReceiveError<E> {
        let c = &mut self.counters.refused;
        match r {
            Refusal::Malformed | Refusal::NotRecords => c.malformed += 1,
            Refusal::UnsupportedVersion(_) => c.unsupported_version += 1,
            Refusal::UnknownDevice(_) => c.unknown_device += 1,
            Refusal::UnknownKey { .. } => c.unknown_key += 1,
            Refusal::RetiredKey { .. } => c.retired_key += 1,
            Refusal::BadTag => c.bad_tag += 1,
            Refusal::Unauthenticated(_) => c.unauthenticated += 1,
            Refusal::Replayed => c.replayed += 1,
            Refusal::InvalidBlock { .. } => c.invalid_block += 1,
        }
        ReceiveError::Refused(r)
    }

    /// Takes a records frame that arrived at `received_unix_ms`: verifies
    /// it against the keyring and the replay window, classifies each
    /// record as new, duplicate or conflict, decodes new blocks within
    /// bounds, maps their times to Unix ms, commits it all through
    /// `store` in one batch, and only then builds the response.
    pub fn receive<S: Store>(
        &mut self,
        store: &mut S,
        frame: &[u8],
        received_unix_ms: u64,
    ) -> Result<Received, ReceiveError<S::Error>> {
        let prepared = match self.prepare(store, frame, received_unix_ms) {
            Ok(p) => p,
            Err(ReceiveError::Store(e)) => return Err(self.store_failed(e)),
            Err(refused) => return Err(refused),
        };
        let committed = match store.commit(&prepared.batch) {
            Ok(c) => c,
            Err(e) => return Err(self.store_failed(e)),
        };
        Ok(self.answer(prepared, committed))
    }

    /// Takes several frames, in order, and commits them together: the
    /// batch of each frame is staged ([`Store::stage`]) where the frames
    /// after it see it, and the group is made durable in one transaction
    /// ([`Store::commit_group`]), one sync to disk for them all. Each
    /// frame is accepted or refused as [`Server::receive`] would in turn.
    ///
    /// Either the group is committed, and each frame has its response or
    /// its refusal, or the store failed, and no frame of the group is
    /// acknowledged: their devices send them again.
    pub fn receive_group<S: Store>(
        &mut self,
        store: &mut S,
        frames: &[(&[u8], u64)],
    ) -> Result<Vec<Result<Received, Refusal>>, S::Error> {
        if let Err(e) = store.begin_group() {
            return Err(self.group_failed(store, e, frames.len()));
        }
        // The devices of the keyring the frames name, held at once, in
        // ascending order: two groups that share devices never deadlock.
        let mut devices: Vec<u64> = frames
            .iter()
            .filter_map(|&(frame, _)| self.header_of(frame).ok().map(|h| h.device))
            .collect();
        devices.sort_unstable();
        devices.dedup();
        if let Err(e) = store.claim_all(&devices) {
            return Err(self.group_failed(store, e, frames.len()));
        }
        let mut prepared = Vec::with_capacity(frames.len());
        for &(frame, received_unix_ms) in frames {
            match self.prepare(store, frame, received_unix_ms) {
                Ok(p) => {
                    if let Err(e) = store.stage(&p.batch) {
                        let lost = unrefused(frames.len(), &prepared);
                        return Err(self.group_failed(store, e, lost));
                    }
                    prepared.push(Ok(p));
                }
                Err(ReceiveError::Refused(r)) => prepared.push(Err(r)),
                Err(ReceiveError::Store(e)) => {
                    let lost = unrefused(frames.len(), &prepared);
                    return Err(self.group_failed(store, e, lost));
                }
            }
        }
        if let Err(e) = store.commit_group() {
            let lost = unrefused(frames.len(), &prepared);
            return Err(self.group_failed(store, e, lost));
        }
        Ok(prepared
            .into_iter()
            .map(|p| {
                p.map(|p| {
                    let committed = p.batch.committed();
                    self.answer(p, committed)
                })
            })
            .collect())
    }

    /// Aborts the group; its `frames` not refused are counted as store
    /// failures.
    fn group_failed<S: Store>(&mut self, store: &mut S, e: S::Error, frames: usize) -> S::Error {
        store.abort_group();
        self.counters.store_failures += frames as u64;
        e
    }

    /// The answer to a frame whose batch `committed` holds: its response
    /// and the counters.
    fn answer(&mut self, p: Prepared, committed: Committed) -> Received {
        let (response, sent) = self.respond(committed, &p.outbox, &p.sealing, p.received_unix_ms);
        let batch = p.batch;
        let c = &mut self.counters;
        c.frames += 1;
        c.records += batch.records.len() as u64;
        c.readings += batch.readings() as u64;
        c.duplicates += u64::from(batch.duplicates);
        c.conflicts += batch.conflicts.len() as u64;
        Received {
            batch,
            response,
            sent,
        }
    }

    /// Everything [`Server::receive`] does before the commit: the frame
    /// opened and checked, its batch built.
    fn prepare<S: Store>(
        &mut self,
        store: &mut S,
        frame: &[u8],
        received_unix_ms: u64,
    ) -> Result<Prepared, ReceiveError<S::Error>> {
        let mut bytes = frame.to_vec();
        let header = match self.header_of(&bytes) {
            Ok(header) => header,
            Err(r) => return Err(self.refuse(r)),
        };
        // Only a device of the keyring costs the store a read.
        store.claim(header.device).map_err(ReceiveError::Store)?;
        let mut outbox = store.outbox(header.device).map_err(ReceiveError::Store)?;
        let sealing = match self.sealing_for(&header, &outbox) {
            Ok(sealing) => sealing,
            Err(r) => return Err(self.refuse(r)),
        };
        let body = match open(&mut bytes, &sealing, Direction::Up) {
            Ok((_, body)) => body,
            Err(FrameError::BadTag) => return Err(self.refuse(Refusal::BadTag)),
            Err(_) => return Err(self.refuse(Refusal::Malformed)),
        };
        let Ok(records) = RecordsFrame::parse(&header, body) else {
            return Err(self.refuse(Refusal::Malformed));
        };
        let device = header.device;
        let mut state = store
            .epoch_state(device, header.epoch)
            .map_err(ReceiveError::Store)?
            .unwrap_or_default();
        if !state.accepts(header.counter) {
            return Err(self.refuse(Refusal::Replayed));
        }
        state.accept(header.counter);
        let uptime = i64::try_from(records.uptime().as_millis()).unwrap_or(i64::MAX);
        state.anchor_unix_ms = i64::try_from(received_unix_ms)
            .ok()
            .and_then(|r| r.checked_sub(uptime));

        let mut batch = Batch {
            device,
            epoch: header.epoch,
            counter: header.counter,
            state,
            received_unix_ms,
            records: Vec::new(),
            conflicts: Vec::new(),
            duplicates: 0,
            outbox: Vec::new(),
            response: PendingResponse {
                counter: header.counter,
                key_id: header.key_id,
                unauthenticated: header.unauthenticated,
                ranges: Vec::new(),
            },
        };
        // The first frame sealed with the key the device was sent.
        if let Some(k) = &outbox.key {
            if k.state == KeyState::Pending && !header.unauthenticated && k.id == header.key_id {
                let change = OutboxChange::KeyInUse { id: k.id };
                outbox.apply(&change);
                batch.outbox.push(change);
            }
        }
        // Anchors of the earlier boots the frame's records were numbered in.
        let mut anchors: HashMap<Epoch, EpochState> = HashMap::new();
        anchors.insert(header.epoch, state);
        let mut budget = self.limits.readings_per_frame;
        let mut acked: Vec<Seq> = Vec::new();
        for framed in records.records() {
            let (epoch, record) = (framed.epoch, framed.record);
            let key = RecordKey {
                device,
                epoch,
                seq: record.seq,
            };
            if let std::collections::hash_map::Entry::Vacant(slot) = anchors.entry(epoch) {
                let s = store
                    .epoch_state(device, epoch)
                    .map_err(ReceiveError::Store)?
                    .unwrap_or_default();
                slot.insert(s);
            }
            let stored = store.stored_payload(key).map_err(ReceiveError::Store)?;
            let in_batch = batch
                .records
                .iter()
                .find(|r| r.epoch == epoch && r.seq == record.seq)
                .map(|r| r.payload.clone());
            acked.push(record.seq);
            match stored.or(in_batch) {
                Some(p) if p == record.payload => batch.duplicates += 1,
                Some(_) => batch.conflicts.push(Conflict {
                    epoch,
                    seq: record.seq,
                    payload: record.payload.to_vec(),
                }),
                None => {
                    let anchor = anchors.get(&epoch).copied().unwrap_or_default();
                    let contents = match decode(&record, anchor, &mut budget) {
                        Ok(c) => c,
                        Err(error) => {
                            return Err(self.refuse(Refusal::InvalidBlock {
                                seq: record.seq,
                                error,
                            }))
                        }
                    };
                    if let Contents::Report { report, .. } = &contents {
                        if let Some(change) = outbox.settled_by(report) {
                            outbox.apply(&change);
                            batch.outbox.push(change);
                        }
                    }
                    batch.records.push(NewRecord {
                        epoch,
                        seq: record.seq,
                        lane: record.meta.lane,
                        severity: record.meta.severity,
                        decimated: record.meta.decimated,
                        declared: record.meta.readings,
                        payload: record.payload.to_vec(),
                        contents,
                    });
                }
            }
        }
        batch.response.ranges = ranges(acked);
        Ok(Prepared {
            batch,
            outbox,
            sealing,
            received_unix_ms,
        })
    }

    /// Starts moving `device` to key `key` of id `id`, through `store`'s
    /// outbox: the key goes down (sealed with the device's current key)
    /// with each response until a frame sealed with it arrives. From that
    /// frame on, the device's earlier keys are retired and refused
    /// ([`Refusal::RetiredKey`]). A device that cannot keep the key (a
    /// RAM store) refuses it, and keeps its key.
    pub fn rotate_key<S: Store>(
        &self,
        store: &mut S,
        device: u64,
        id: u8,
        key: Key,
    ) -> Result<(), RotateError<S::Error>> {
        let keys = self
            .keyring
            .device(device)
            .ok_or(RotateError::UnknownDevice(device))?;
        let outbox = store.outbox(device).map_err(RotateError::Store)?;
        let in_use = match outbox.key_in_use() {
            Some(current) => current == id,
            None => keys.sealing(id).is_some(),
        };
        if in_use {
            return Err(RotateError::IdInUse(id));
        }
        store.set_key(device, id, &key).map_err(RotateError::Store)
    }

    fn store_failed<E>(&mut self, e: E) -> ReceiveError<E> {
        self.counters.store_failures += 1;
        ReceiveError::Store(e)
    }

    /// The clear header of a records frame from a device of the keyring.
    fn header_of(&self, bytes: &[u8]) -> Result<Header, Refusal> {
        let header = match Header::parse(bytes) {
            Ok((h, _)) => h,
            Err(FrameError::Version(v)) => return Err(Refusal::UnsupportedVersion(v)),
            Err(_) => return Err(Refusal::Malformed),
        };
        if header.kind != FrameKind::Records {
            return Err(Refusal::NotRecords);
        }
        if self.keyring.device(header.device).is_none() {
            return Err(Refusal::UnknownDevice(header.device));
        }
        Ok(header)
    }

    /// The sealing `header` names: the key a rotation decides (see
    /// [`Outbox::key_for`]), else the keyring's.
    fn sealing_for(&self, header: &Header, outbox: &Outbox) -> Result<Sealing, Refusal> {
        let keys = self
            .keyring
            .device(header.device)
            .ok_or(Refusal::UnknownDevice(header.device))?;
        if header.unauthenticated {
            return if keys.allows_unauthenticated() {
                Ok(Sealing::Unauthenticated)
            } else {
                Err(Refusal::Unauthenticated(header.device))
            };
        }
        match outbox.key_for(header.key_id) {
            Some(Ok(key)) => Ok(Sealing::key(header.key_id, key.clone())),
            Some(Err(Retired)) => Err(Refusal::RetiredKey {
                device: header.device,
                key: header.key_id,
            }),
            None => keys.sealing(header.key_id).ok_or(Refusal::UnknownKey {
                device: header.device,
                key: header.key_id,
            }),
        }
    }

    /// The response to a committed batch: its acknowledgement, the
    /// server's clock (the frame's arrival), and as much of the outbox as
    /// fits the device.
    fn respond(
        &self,
        committed: Committed,
        outbox: &Outbox,
        sealing: &Sealing,
        now: u64,
    ) -> (Vec<u8>, Sent) {
        let pending = committed.response;
        let mut sent = Sent::default();
        let header = Header::new(
            FrameKind::Response,
            committed.device,
            committed.epoch,
            pending.counter,
            sealing,
        );
        let mut buf = vec![0u8; self.limits.downlink_mtu.max(64)];
        let ranges = pending
            .ranges
            .get(..pending.ranges.len().min(MAX_ACK_RANGES))
            .unwrap_or_default();
        let Ok(mut w) = ResponseWriter::new(&mut buf, &header, Some(now), ranges, sealing) else {
            return (Vec::new(), sent);
        };
        for item in outbox.pending() {
            // What does not fit goes with a later response.
            if w.push(&item).is_err() {
                break;
            }
            sent.note(&item, outbox);
        }
        match w.finish(sealing) {
            Ok(n) => {
                buf.truncate(n);
                (buf, sent)
            }
            Err(_) => (Vec::new(), Sent::default()),
        }
    }
}

/// Sequence numbers as ranges, consecutive ones merged.
pub fn ranges(mut seqs: Vec<Seq>) -> Vec<SeqRange> {
    seqs.sort_unstable();
    seqs.dedup();
    let mut out: Vec<SeqRange> = Vec::new();
    for s in seqs {
        match out.last_mut() {
            Some(r) if r.last.0.checked_add(1) == Some(s.0) => r.last = s,
            _ => out.push(SeqRange::single(s)),
        }
    }
    out
}

/// Decodes a new record within the frame's reading budget.
fn decode(
    record: &telemark_core::wire::Record<'_>,
    anchor: EpochState,
    budget: &mut usize,
) -> Result<Contents, DecodeError> {
    match record.meta.lane {
        Lane::Routine => {
            let declared = usize::from(record.meta.readings);
            if declared > *budget {
                return Err(DecodeError::BadCount);
            }
            let mut readings: Vec<Reading> = Vec::with_capacity(declared);
            let n = CompactCodec.decode_at_most(record.payload, declared, &mut readings)?;
            if n != declared {
                return Err(DecodeError::BadCount);
            }
            *budget -= n;
            Ok(Contents::Readings(
                readings
                    .into_iter()
                    .map(|reading| TimedReading {
                        unix_ms: anchor.to_unix(reading.time.as_millis()),
                        reading,
                    })
                    .collect(),
            ))
        }
        Lane::Alert => Ok(match Report::decode(record.payload) {
            Ok(report) => {
                let unix_ms = match &report {
                    Report::Alert(a) => anchor.to_unix(a.time.as_millis()),
                    Report::Heartbeat(h) => anchor.to_unix(u64::from(h.uptime_s) * 1000),
                    _ => None,
                };
                Contents::Report { report, unix_ms }
            }
            Err(_) => Contents::Unknown,
        }),
    }
}
