//! Pseudo-random secret sharing (Cramer–Damgård–Ishai): once every subset `A` of
//! `n − d` committee positions shares a key `k_A`, each node derives its Shamir
//! share (degree `d = t − 1`) of as many common random values as it needs without
//! further messages:
//!
//! ```text
//! r   = Σ_A PRF(k_A, tag, c)             (never computed by anyone)
//! r_i = Σ_{A ∋ i} f_A(x_i) · PRF(k_A, tag, c),   f_A(x) = Π_{j ∉ A} (x_j − x)/x_j
//! ```
//!
//! `f_A` has degree `d`, `f_A(0) = 1` and vanishes outside `A`, so the `r_i` lie on
//! one degree-`d` polynomial with constant `r`. With at most `d` corrupt nodes one
//! set (the complement of the corrupt ones) is all honest: its key, hence `r`, is
//! unknown to the adversary. *Bounded* randoms read each PRF output as an integer
//! below `2^bits`, so `r < C(n, d)·2^bits` as an integer (the comparison's mask).
//!
//! Set keys are chosen by the set's lowest position and sent to the other members
//! encrypted under pairwise keys (X25519 between node sealing keys, HKDF-SHA256
//! with the round's session): one setup message each way. The same pairwise keys
//! give each pair `(i, j)` a common stream for the degree-reduction masks
//! `m_i = λ_i^{-1} Σ_{j ≠ i} ±PRF(k_ij, tag, c)`, `Σ_i λ_i m_i = 0`.
//!
//! PRF: ChaCha8 keyed with `SHA-256("quorate/netting/prss/v1\0" ‖ key ‖ tag)`,
//! read as consecutive 32-byte (field) or 16-byte (bounded) words.

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::field::{lagrange_at_zero, F};

/// Most PRSS sets a round may need (`C(n, t − 1)`).
pub const MAX_SETS: usize = 4096;

/// The sets of positions (as bit masks over `0..n`) of size `n − d`, in increasing
/// mask order.
pub fn sets(n: usize, d: usize) -> Vec<u64> {
    let size = n - d;
    (0u64..(1u64 << n))
        .filter(|m| m.count_ones() as usize == size)
        .collect()
}

/// Number of sets `C(n, d)`, saturating.
pub fn set_count(n: usize, d: usize) -> usize {
    let mut c: u128 = 1;
    for i in 0..d as u128 {
        c = c * (n as u128 - i) / (i + 1);
        if c > u128::from(u32::MAX) {
            return usize::MAX;
        }
    }
    c as usize
}

/// `f_A(x_i)` for member `i` of set `mask` over evaluation points `xs`.
pub fn set_coefficient(xs: &[F], mask: u64, i: usize) -> F {
    let mut num = F::ONE;
    let mut den = F::ONE;
    for (j, xj) in xs.iter().enumerate() {
        if mask & (1 << j) == 0 {
            num *= *xj - xs[i];
            den *= *xj;
        }
    }
    num * den.invert().unwrap_or_default()
}

pub(crate) fn stream(key: &[u8; 32], tag: u64) -> ChaCha8Rng {
    let mut h = Sha256::new();
    h.update(b"quorate/netting/prss/v1\0");
    h.update(key);
    h.update(tag.to_be_bytes());
    ChaCha8Rng::from_seed(h.finalize().into())
}

/// One node's PRSS state: the keys of its sets with their coefficients, and its
/// pairwise mask keys.
pub struct Prss {
    sets: Vec<(F, Zeroizing<[u8; 32]>)>,
    pairs: Vec<(bool, Zeroizing<[u8; 32]>)>,
    inv_lambda: F,
}

impl core::fmt::Debug for Prss {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "Prss({} sets, {} pairs, <keys>)",
            self.sets.len(),
            self.pairs.len()
        )
    }
}

impl Prss {
    /// Builds the state of position `me` from its set keys (`(mask, key)` for every
    /// set containing `me`) and pairwise keys (`(peer position, key)`).
    ///
    /// # Security
    /// Holds secret keys (zeroized on drop).
    pub fn new(
        xs: &[F],
        me: usize,
        set_keys: Vec<(u64, Zeroizing<[u8; 32]>)>,
        pair_keys: Vec<(usize, Zeroizing<[u8; 32]>)>,
    ) -> Self {
        let sets = set_keys
            .into_iter()
            .map(|(mask, k)| (set_coefficient(xs, mask, me), k))
            .collect();
        let pairs = pair_keys.into_iter().map(|(j, k)| (me < j, k)).collect();
        let lambda = lagrange_at_zero(xs)[me];
        Self {
            sets,
            pairs,
            inv_lambda: lambda.invert().unwrap_or_default(),
        }
    }

    /// This node's shares of `count` uniformly random values for `tag`.
    pub fn random(&self, tag: u64, count: usize) -> Vec<F> {
        let mut out = vec![F::ZERO; count];
        let mut w = [0u8; 32];
        for (coef, key) in &self.sets {
            let mut rng = stream(key, tag);
            for o in out.iter_mut() {
                rng.fill_bytes(&mut w);
                *o += *coef * F::from_random_bytes(w);
            }
        }
        out
    }

    /// This node's shares of `count` random integers below `C(n, d)·2^bits`.
    pub fn bounded(&self, tag: u64, count: usize, bits: u32) -> Vec<F> {
        let mut out = vec![F::ZERO; count];
        let mut w = [0u8; 16];
        for (coef, key) in &self.sets {
            let mut rng = stream(key, tag);
            for o in out.iter_mut() {
                rng.fill_bytes(&mut w);
                *o += *coef * F::bounded_from_bytes(w, bits);
            }
        }
        out
    }

    /// This node's degree-reduction masks `m_i` for `count` products.
    pub fn masks(&self, tag: u64, count: usize) -> Vec<F> {
        let mut out = vec![F::ZERO; count];
        let mut w = [0u8; 32];
        for (plus, key) in &self.pairs {
            let mut rng = stream(key, tag);
            for o in out.iter_mut() {
                rng.fill_bytes(&mut w);
                let v = F::from_random_bytes(w);
                if *plus {
                    *o += v;
                } else {
                    *o -= v;
                }
            }
        }
        for o in out.iter_mut() {
            *o *= self.inv_lambda;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(n: usize, d: usize) -> Vec<Prss> {
        let xs: Vec<F> = (1..=n as u64).map(|i| F::from_u64(i * 3)).collect();
        let all = sets(n, d);
        (0..n)
            .map(|me| {
                let sk = all
                    .iter()
                    .filter(|m| *m & (1 << me) != 0)
                    .map(|m| (*m, Zeroizing::new([*m as u8; 32])))
                    .collect();
                let pk = (0..n)
                    .filter(|j| *j != me)
                    .map(|j| {
                        let (a, b) = (me.min(j), me.max(j));
                        (j, Zeroizing::new([(a * 16 + b) as u8 + 100; 32]))
                    })
                    .collect();
                Prss::new(&xs, me, sk, pk)
            })
            .collect()
    }

    #[test]
    fn prss_shares_lie_on_one_polynomial_and_masks_cancel() {
        let (n, d) = (5, 2);
        assert_eq!(sets(n, d).len(), set_count(n, d));
        let xs: Vec<F> = (1..=n as u64).map(|i| F::from_u64(i * 3)).collect();
        let ps = keys(n, d);
        let shares: Vec<Vec<F>> = ps.iter().map(|p| p.random(7, 4)).collect();
        let bounded: Vec<Vec<F>> = ps.iter().map(|p| p.bounded(8, 4, 64)).collect();
        let masks: Vec<Vec<F>> = ps.iter().map(|p| p.masks(9, 4)).collect();
        let lam = lagrange_at_zero(&xs);
        let lam3 = lagrange_at_zero(&xs[..3]);
        for c in 0..4 {
            // Any d+1 points give the same value as all n: degree d.
            let all: F = (0..n).fold(F::ZERO, |a, i| a + lam[i] * shares[i][c]);
            let three: F = (0..3).fold(F::ZERO, |a, i| a + lam3[i] * shares[i][c]);
            assert_eq!(all, three);
            let b: F = (0..3).fold(F::ZERO, |a, i| a + lam3[i] * bounded[i][c]);
            assert!(b.fits_u128() && b.low_u128() < 10u128 << 64);
            let m: F = (0..n).fold(F::ZERO, |a, i| a + lam[i] * masks[i][c]);
            assert_eq!(m, F::ZERO);
            assert_ne!(masks[0][c], F::ZERO);
        }
    }
}
