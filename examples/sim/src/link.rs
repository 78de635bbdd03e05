//! The faults of one device's link, the generator that rolls them, and
//! the pieces frames travel in on a link of small packets.

use telemark_core::wire::fragment::{Fragments, Reassembler};

/// A small deterministic generator (xorshift64*).
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 bits.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [0, n).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// The faults of one device's link.
pub struct Link {
    /// Chance a frame is lost.
    pub loss: f64,
    /// Chance a frame arrives twice.
    pub dup: f64,
    /// Longest delay of a frame, ms (a duplicate: twice that).
    pub max_delay_ms: u64,
    /// Periods when frames vanish although the link is up (server restarts).
    pub partitions: Vec<(u64, u64)>,
    /// Periods with no network at all: the radio cannot attach.
    pub outages: Vec<(u64, u64)>,
}

impl Link {
    /// True while frames vanish.
    pub fn partitioned(&self, t: u64) -> bool {
        self.partitions
            .iter()
            .chain(&self.outages)
            .any(|&(a, b)| a <= t && t < b)
    }

    /// True while there is no network.
    pub fn down(&self, t: u64) -> bool {
        self.outages.iter().any(|&(a, b)| a <= t && t < b)
    }

    /// Arrival times of the copies of a frame sent at `t`.
    pub fn carry(&self, t: u64, rng: &mut Rng, healed: bool) -> Vec<u64> {
        if healed {
            return vec![t + 200];
        }
        if self.partitioned(t) {
            return Vec::new();
        }
        let mut out = Vec::new();
        if rng.unit() >= self.loss {
            out.push(t + 50 + rng.below(self.max_delay_ms));
        }
        if rng.unit() < self.dup {
            out.push(t + 50 + rng.below(self.max_delay_ms * 2));
        }
        out
    }
}

/// One direction of a link whose packets are smaller than a frame: the
/// sender cuts each frame into pieces (`wire::fragment`), each travels on
/// its own, and the receiver puts them back together. Without a link MTU,
/// frames travel whole.
pub struct Pieces {
    link_mtu: Option<usize>,
    tag: u8,
    rx: Option<Reassembler<512>>,
    /// Pieces sent.
    pub sent: u64,
}

impl Pieces {
    pub fn new(link_mtu: Option<usize>) -> Self {
        Pieces {
            link_mtu,
            tag: 0,
            rx: link_mtu.and_then(|m| Reassembler::new(m).ok()),
            sent: 0,
        }
    }

    /// What goes on air for `frame`.
    pub fn cut(&mut self, frame: &[u8]) -> Vec<Vec<u8>> {
        let Some(mtu) = self.link_mtu else {
            return vec![frame.to_vec()];
        };
        self.tag = self.tag.wrapping_add(1);
        let pieces: Vec<Vec<u8>> = Fragments::new(frame, mtu, self.tag)
            .map(|f| f.map(|p| p.to_vec()).collect())
            .unwrap_or_default();
        self.sent += pieces.len() as u64;
        pieces
    }

    /// The frame `packet` completes, if any.
    pub fn join(&mut self, packet: &[u8]) -> Option<Vec<u8>> {
        match &mut self.rx {
            None => Some(packet.to_vec()),
            Some(rx) => rx.push(packet).ok().flatten().map(<[u8]>::to_vec),
        }
    }

    /// The sender rebooted: its tags begin again, from where the board's
    /// entropy says.
    pub fn sender_rebooted(&mut self, entropy: u64) {
        self.tag = entropy as u8;
    }

    /// The receiver rebooted: the frame it had half received is gone.
    pub fn receiver_rebooted(&mut self) {
        if let Some(rx) = &mut self.rx {
            rx.reset();
        }
    }

    /// Frames abandoned with pieces missing.
    pub fn incomplete(&self) -> u64 {
        self.rx
            .as_ref()
            .map_or(0, |rx| u64::from(rx.counters().incomplete))
    }
}
