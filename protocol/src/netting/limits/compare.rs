//! The comparison's local arithmetic (no messages): random bits from opened
//! squares, the masked input, the leaves and combine rule of the bitwise
//! less-than tree, and the final bit. Every shared value travels with its MAC
//! share `[ρ·v]` ([`Wire`]); constants use `[ρ]` as the MAC of 1.
//!
//! For comparison `k` with public `c' = c mod 2^m` and shared mask bits `b_j`,
//! positions `p = 0..m` are bits `j = m − 1 − p` (most significant first):
//!
//! ```text
//! leaf:    lt = (1 − c_j)·b_j            eq = 1 − c_j − b_j + 2·c_j·b_j
//! combine: LT = LT_hi + EQ_hi·LT_lo      EQ = EQ_hi·EQ_lo
//! result:  [c' < r'] = LT over all m bits
//! bit:     s = 2^{-m}·(a − c' + r') − [c' < r'],   a = x + 2^m
//! ```

use super::{field::F, BITS};

/// A share and its MAC share.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Wire {
    /// `[v]_i`.
    pub v: F,
    /// `[ρ·v]_i`.
    pub mac: F,
}

impl zeroize::DefaultIsZeroes for Wire {}

impl Wire {
    /// `self + o`.
    pub fn plus(self, o: Wire) -> Wire {
        Wire {
            v: self.v + o.v,
            mac: self.mac + o.mac,
        }
    }
    /// `self − o`.
    pub fn minus(self, o: Wire) -> Wire {
        Wire {
            v: self.v - o.v,
            mac: self.mac - o.mac,
        }
    }
    /// `c·self` for a public `c`.
    pub fn scale(self, c: F) -> Wire {
        Wire {
            v: self.v * c,
            mac: self.mac * c,
        }
    }
    /// `self + c` for a public `c` (`rho` is this node's share of `ρ`).
    pub fn add_const(self, c: F, rho: F) -> Wire {
        Wire {
            v: self.v + c,
            mac: self.mac + c * rho,
        }
    }
}

/// `2^j` for `j ≤ BITS`.
pub fn powers() -> Vec<F> {
    (0..=BITS as u32).map(F::pow2).collect()
}

/// A bit from `u` and a root `s` of the opened `u²` (`inv = s^{-1}`):
/// `b = (u·s^{-1} + 1)/2`.
pub fn bit(u: Wire, inv: F, half: F, rho: F) -> Wire {
    u.scale(inv).add_const(F::ONE, rho).scale(half)
}

/// Leaf `(lt, eq)` of bit `b` against public bit `cb`.
pub fn leaf(b: Wire, cb: bool, rho: F) -> (Wire, Wire) {
    if cb {
        (Wire::default(), b)
    } else {
        (
            b,
            Wire {
                v: F::ONE - b.v,
                mac: rho - b.mac,
            },
        )
    }
}

/// The comparison bit from `a`, public `c' = c mod 2^m`, `r' = Σ 2^j b_j` and
/// `lt = [c' < r']`.
pub fn result(a: Wire, c_low: u64, r_low: Wire, lt: Wire, inv_2m: F, rho: F) -> Wire {
    a.add_const(-F::from_i128(i128::from(c_low)), rho)
        .plus(r_low)
        .scale(inv_2m)
        .minus(lt)
}

/// Products of one tree level per comparison for `width` nodes: 4 per combine
/// below the top, 2 at the top (`EQ` of the whole range is not needed).
pub fn level_products(width: usize) -> usize {
    if width > 2 {
        (width / 2) * 4
    } else {
        2
    }
}

/// Tree levels (`log2 m`).
pub fn levels() -> usize {
    BITS.trailing_zeros() as usize
}

/// The plaintext of what the MPC computes, for tests and the reference: `1` when
/// `x ≥ 0`, for `x` in `[−2^m, 2^m)`.
pub fn plain(x: i128) -> bool {
    x >= 0
}
