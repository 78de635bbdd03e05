//! The faults of one device's link, and the generator that rolls them.

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
