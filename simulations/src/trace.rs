//! The trace hash: SHA-256 over every delivered message (time, sender,
//! recipient, digest of the encoded envelope) and every session outcome. Two
//! runs with the same scenario and seed produce the same hash; any divergence in
//! timing or content changes it.

use sha2::{Digest, Sha256};

use crate::engine::Micros;

/// Running trace digest.
#[derive(Clone, Default)]
pub struct Trace {
    hasher: Sha256,
    events: u64,
}

impl Trace {
    /// A delivery of the message whose encoding hashes to `digest`.
    pub fn delivered(&mut self, time: Micros, from: usize, to: usize, digest: &[u8; 32]) {
        self.hasher.update(b"D");
        self.hasher.update(time.to_le_bytes());
        self.hasher.update((from as u64).to_le_bytes());
        self.hasher.update((to as u64).to_le_bytes());
        self.hasher.update(digest);
        self.events += 1;
    }

    /// Any other recorded event (outcomes, faults), as text.
    pub fn note(&mut self, time: Micros, what: &str) {
        self.hasher.update(b"N");
        self.hasher.update(time.to_le_bytes());
        self.hasher.update((what.len() as u64).to_le_bytes());
        self.hasher.update(what.as_bytes());
        self.events += 1;
    }

    /// Events hashed so far.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// The hex digest so far.
    pub fn hex(&self) -> String {
        hex::encode(self.hasher.clone().finalize())
    }
}
