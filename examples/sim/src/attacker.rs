//! An attacker on the link: it captures what goes by, replays it, tampers
//! with it, forges frames and acknowledgements with a key of its own, and
//! speaks for devices it is not.

use telemark_core::time::Instant;
use telemark_core::wire::frame::{FrameWriter, ResponseWriter};
use telemark_core::wire::seal::{FrameKind, Header, Key, Sealing};
use telemark_core::wire::{Epoch, Record, RecordMeta, Seq, SeqRange};

use crate::link::Rng;

/// What the attacker tried.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Attack {
    /// A records frame the server stored, sent again.
    Replay,
    /// A records frame with one byte changed.
    Tamper,
    /// A records frame for the device, sealed with the attacker's key.
    Forge,
    /// A records frame for a device id the server does not know.
    OtherDevice,
    /// A records frame naming a key id the device does not have.
    OtherKey,
}

/// What the attacker tried on the way down.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DownAttack {
    /// A response the device accepted before, sent again.
    Replay,
    /// An acknowledgement of everything, sealed with the attacker's key.
    ForgedAck,
    /// A response with one byte changed.
    Tamper,
}

/// The attacker of one device's link.
pub struct Attacker {
    key: Key,
    /// Records frames the server stored.
    pub stored_frames: Vec<Vec<u8>>,
    /// Responses the device accepted.
    pub accepted_responses: Vec<Vec<u8>>,
}

impl Attacker {
    /// An attacker with a key of its own.
    pub fn new(rng: &mut Rng) -> Self {
        let mut key = [0u8; 32];
        for b in key.iter_mut() {
            *b = rng.next() as u8;
        }
        Attacker {
            key: Key::from_bytes(key),
            stored_frames: Vec::new(),
            accepted_responses: Vec::new(),
        }
    }

    fn records_frame(&self, device: u64, epoch: Epoch, counter: u32, sealing: &Sealing) -> Vec<u8> {
        let header = Header::new(FrameKind::Records, device, epoch, counter.max(1), sealing);
        let mut buf = vec![0u8; 256];
        let payload = [0x02u8, 0x01, 0x00];
        let Ok(mut w) = FrameWriter::new(&mut buf, &header, Instant::from_millis(1), sealing)
        else {
            return Vec::new();
        };
        let record = Record {
            seq: Seq(1),
            meta: RecordMeta::routine(1),
            payload: &payload,
        };
        let _ = w.push(&record, None);
        let n = w.finish(sealing).unwrap_or(0);
        buf.truncate(n);
        buf
    }

    /// A frame for the server, beside a real `frame` of `device` in `epoch`.
    pub fn up(&self, rng: &mut Rng, device: u64, epoch: Epoch, frame: &[u8]) -> (Attack, Vec<u8>) {
        let counter = 1 + rng.below(1000) as u32;
        match rng.below(5) {
            0 if !self.stored_frames.is_empty() => {
                let i = rng.below(self.stored_frames.len() as u64) as usize;
                (
                    Attack::Replay,
                    self.stored_frames.get(i).cloned().unwrap_or_default(),
                )
            }
            0 | 1 => {
                let mut tampered = frame.to_vec();
                if !tampered.is_empty() {
                    let at = rng.below(tampered.len() as u64) as usize;
                    if let Some(b) = tampered.get_mut(at) {
                        *b ^= 1 << rng.below(8);
                    }
                }
                (Attack::Tamper, tampered)
            }
            2 => {
                let forged = Sealing::key(1, self.key.clone());
                (
                    Attack::Forge,
                    self.records_frame(device, epoch, counter, &forged),
                )
            }
            3 => {
                let forged = Sealing::key(1, self.key.clone());
                let other = device ^ 0x8000_0000_0000;
                (
                    Attack::OtherDevice,
                    self.records_frame(other, epoch, counter, &forged),
                )
            }
            _ => {
                let forged = Sealing::key(9, self.key.clone());
                (
                    Attack::OtherKey,
                    self.records_frame(device, epoch, counter, &forged),
                )
            }
        }
    }

    /// A frame for the device, beside a real `response`: the device is
    /// waiting for the answer to frame `counter` of `epoch`, whose records
    /// are `seqs`.
    pub fn down(
        &self,
        rng: &mut Rng,
        device: u64,
        epoch: Epoch,
        counter: u32,
        response: &[u8],
    ) -> (DownAttack, Vec<u8>) {
        match rng.below(3) {
            0 if !self.accepted_responses.is_empty() => {
                let i = rng.below(self.accepted_responses.len() as u64) as usize;
                (
                    DownAttack::Replay,
                    self.accepted_responses.get(i).cloned().unwrap_or_default(),
                )
            }
            0 | 1 => {
                let forged = Sealing::key(1, self.key.clone());
                let header =
                    Header::new(FrameKind::Response, device, epoch, counter.max(1), &forged);
                let everything = [SeqRange::new(Seq(0), Seq(u32::MAX))];
                let mut buf = vec![0u8; 128];
                let n = ResponseWriter::new(&mut buf, &header, Some(0), &everything, &forged)
                    .and_then(|w| w.finish(&forged))
                    .unwrap_or(0);
                buf.truncate(n);
                (DownAttack::ForgedAck, buf)
            }
            _ => {
                let mut tampered = response.to_vec();
                if !tampered.is_empty() {
                    let at = rng.below(tampered.len() as u64) as usize;
                    if let Some(b) = tampered.get_mut(at) {
                        *b ^= 1 << rng.below(8);
                    }
                }
                (DownAttack::Tamper, tampered)
            }
        }
    }
}
