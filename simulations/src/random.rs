//! Seeded randomness: one ChaCha20 generator per purpose, all derived from the
//! scenario seed, so that (say) network sampling does not shift when a byzantine
//! node draws an extra random number.

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

/// Independent sub-streams of one seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Identities and key setup.
    Setup = 1,
    /// Nonces and everything the protocol machines draw.
    Protocol = 2,
    /// Link latency, loss, duplication.
    Network = 3,
    /// Request arrivals.
    Workload = 4,
    /// Byzantine choices and fault placement.
    Adversary = 5,
    /// Signer-subset selection in the retry loop.
    Selection = 6,
    /// Netting rounds: party keys, positions, dealing, node outputs, openings
    /// and the netting adversary (only drawn when a scenario has `[netting]`).
    Netting = 7,
}

/// The generator for `stream` of `seed`.
pub fn stream(seed: u64, stream: Stream) -> ChaCha20Rng {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    rng.set_stream(stream as u64);
    rng
}

/// Uniform in [0, 1).
pub fn unit(rng: &mut impl RngCore) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// True with probability `p`.
pub fn chance(rng: &mut impl RngCore, p: f64) -> bool {
    p > 0.0 && unit(rng) < p
}

/// Standard normal (Box–Muller).
pub fn normal(rng: &mut impl RngCore) -> f64 {
    let u1 = unit(rng).max(f64::MIN_POSITIVE);
    let u2 = unit(rng);
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Exponential with the given rate (mean `1 / rate`).
pub fn exponential(rng: &mut impl RngCore, rate: f64) -> f64 {
    -(1.0 - unit(rng)).ln() / rate
}

/// Uniform integer in `0..n` (`n > 0`).
pub fn below(rng: &mut impl RngCore, n: usize) -> usize {
    ((unit(rng) * n as f64) as usize).min(n.saturating_sub(1))
}

/// Fisher–Yates shuffle.
pub fn shuffle<T>(rng: &mut impl RngCore, items: &mut [T]) {
    for i in (1..items.len()).rev() {
        let j = below(rng, i + 1);
        items.swap(i, j);
    }
}
