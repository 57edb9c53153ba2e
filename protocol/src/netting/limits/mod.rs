//! Limit and collateral checks on secret shares: for every (party, asset) the nodes
//! compute a shared bit `s = [net + collateral + limit ≥ 0]` without anyone seeing
//! the operands, reveal each party's bits to that party only, and open one
//! "all covered" verdict (and, where the round allows, which parties failed).
//!
//! Honest-majority MPC over the Shamir sharings the parties dealt (degree
//! `d = t − 1`, the Ristretto255 scalar field), driven by a *king* (the
//! coordinator) that reconstructs masked values:
//!
//! - **Randomness** ([`prss`]): pseudo-random secret sharing from keys shared by
//!   every set of `n − d` nodes; one setup message each way, then no messages.
//! - **Multiplication** ([`node`], [`king`]): each node sends `w_i = x_i·y_i − R_i
//!   + m_i` (its degree-`2d` product share, minus its share of a PRSS random `R`,
//!   plus a mask cancelling under the Lagrange weights); the king interpolates
//!   `e = xy − R` from all `n` points and broadcasts it; the product's share is `e + R_i`. A
//!   degree-`2d` polynomial needs `2d + 1` points, hence **`2(t − 1) < n`**
//!   ([`check_committee`]).
//! - **Deviation check** (Chida et al., CRYPTO 2018): every wire `z` carries
//!   `[ρ·z]` for a secret random `ρ`; products are computed twice (`x·y` and
//!   `(ρx)·y`). At the end a jointly random coin fixes weights `α`, `ρ` is opened
//!   and `T = Σ α_k (ρz_k − ρ·z_k)` must open to 0: a node (or the king) that added
//!   any error to any product makes `T ≠ 0` except with probability about
//!   `products/ℓ`. Every opening is re-checked with all `n` shares folded under
//!   jointly random weights `β` (an inconsistent share is named where one
//!   position explains it), and nodes compare digests of everything the king
//!   broadcast. Outputs are released only after all three pass.
//! - **Random bits** ([`compare`]): `b = (u/√(u²) + 1)/2` for a PRSS random `u`
//!   (Damgård et al., TCC 2006); the king supplies the root, nodes check it and
//!   check `u²` itself before using it.
//! - **Comparison** ([`compare`]): `a = x + 2^m` is masked with
//!   `r = Σ_j 2^j b_j + 2^m·r''` (`m` = [`BITS`] random bits, `r''` a bounded PRSS
//!   random of [`MASK_BITS`] bits per set: statistical hiding `2^-62`), `c = a + r`
//!   is opened, and `[c mod 2^m < r']` is a log-depth tree over the bits; then
//!   `s = 2^{-m}(a − (c mod 2^m) + r') − [c mod 2^m < r']`. For inputs outside
//!   `[−2^m, 2^m)` the same formula yields a value that is not a bit, so an
//!   out-of-range collateral can never pass as covered.
//! - **Verdicts** ([`node`]): `y = Σ_k R_k (1 − s_k)` for PRSS randoms `R_k` is 0
//!   exactly when every `s_k = 1` and uniformly random otherwise: one product and
//!   one opening reveal one bit.
//!
//! Costs per comparison (`m = 64`): `8m − 3 = 509` products, `m + 1 = 65`
//! openings; [`STEPS`] = 18 king round trips for the whole batch. [`Stats`]
//! counts them.
//!
//! Everything another node relies on is signed by the node that produced it:
//! the king relays the nodes' signed shares of every checked opening (coins, `ρ`,
//! the check values, the verdicts) and each node opens them itself, so a king
//! cannot invent another node's share or transcript digest. The random bits are
//! MAC-checked under their own key `ρ'` and the announced squares checked against
//! the shares before any bit is used (steps 3–6), so no value masked with a
//! tampered bit is ever opened. Set keys are drawn fresh at every start, so no
//! re-run repeats a mask.

pub mod compare;
pub mod field;
pub mod inputs;
pub mod king;
pub mod local;
pub mod node;
pub mod open;
pub mod parts;
pub mod prss;
pub mod run;
pub mod setup;
pub mod step;
pub mod verdict;

#[cfg(test)]
mod round_tests;
#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

use crate::{error::ProtocolError, ids::NodeId};

/// Bits of the comparison mask: inputs must lie in `[−2^BITS, 2^BITS)`.
pub const BITS: usize = 64;
/// Statistical masking bits of each PRSS set's share of the high mask part.
pub const MASK_BITS: u32 = 64;
/// King round trips of one run: setup (0), products (1–2), random-bit checks (3–6),
/// masked inputs (7), the comparison tree (8–13), verdict products (14), coin and
/// `ρ` (15), checks (16), outputs (17).
pub const STEPS: u8 = 18;
/// Most comparisons in one run (a run's largest message is about 4.3 KiB per
/// comparison per node).
pub const MAX_INPUTS: usize = 1 << 14;
/// Largest committee the limit checks take (PRSS keeps one key per set).
pub const MAX_NODES: usize = 16;

/// Refuses a committee too small for degree reduction: a product of two degree-
/// `t − 1` sharings has degree `2(t − 1)` and `2(t − 1) + 1` points are needed to
/// reduce it, so limit checks need `2(t − 1) < n`.
pub fn check_committee(n: usize, t: usize) -> Result<(), ProtocolError> {
    let d = t.saturating_sub(1);
    if 2 * d >= n {
        return Err(ProtocolError::InvalidParameters(format!(
            "limit checks multiply shares: with threshold {t} a product has degree {} and needs {} nodes to be reduced, the committee has {n} (need 2(t-1) < n, e.g. t <= {})",
            2 * d,
            2 * d + 1,
            n.div_ceil(2)
        )));
    }
    if n > MAX_NODES || prss::set_count(n, d) > prss::MAX_SETS {
        return Err(ProtocolError::InvalidParameters(format!(
            "limit checks keep one key per set of {} of the {n} nodes: at most {MAX_NODES} nodes and {} sets ({} here)",
            n - d,
            prss::MAX_SETS,
            prss::set_count(n, d)
        )));
    }
    Ok(())
}

/// The public shape of one run: how many inputs, which verdicts and aggregates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// Number of shared inputs `x_k` (each compared with 0).
    pub inputs: usize,
    /// Groups of inputs whose "every `s_k = 1`" bit is opened (disjoint).
    pub verdicts: Vec<Vec<u32>>,
    /// Groups of inputs whose `Σ |x_k|` is opened.
    pub sums: Vec<Vec<u32>>,
}

impl Job {
    /// Checks indices and sizes.
    pub fn validate(&self) -> Result<(), ProtocolError> {
        let bad = |m: &str| Err(ProtocolError::InvalidParameters(m.to_string()));
        if self.inputs == 0 || self.inputs > MAX_INPUTS {
            return bad("a limit check needs 1..=16384 comparisons");
        }
        let mut seen = vec![false; self.inputs];
        for g in &self.verdicts {
            for &k in g {
                let k = k as usize;
                if k >= self.inputs || seen[k] {
                    return bad("verdict groups must be disjoint input indices");
                }
                seen[k] = true;
            }
        }
        if self
            .sums
            .iter()
            .flatten()
            .any(|&k| k as usize >= self.inputs)
        {
            return bad("sum groups must list input indices");
        }
        Ok(())
    }

    /// Inputs that appear in some verdict group, in order.
    pub(crate) fn verdict_inputs(&self) -> Vec<usize> {
        let mut v: Vec<usize> = self
            .verdicts
            .iter()
            .flatten()
            .map(|&k| k as usize)
            .collect();
        v.sort_unstable();
        v
    }

    /// Inputs that appear in some sum group, in order, deduplicated.
    pub(crate) fn sum_inputs(&self) -> Vec<usize> {
        let mut v: Vec<usize> = self.sums.iter().flatten().map(|&k| k as usize).collect();
        v.sort_unstable();
        v.dedup();
        v
    }
}

/// The committee as the MPC sees it: evaluation points (roster indices) and node ids,
/// in committee order, with the threshold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    /// Roster index of each position (the Shamir evaluation point).
    pub points: Vec<u16>,
    /// Node id of each position.
    pub nodes: Vec<NodeId>,
    /// Sealing key of each position.
    pub seal_keys: Vec<[u8; 32]>,
    /// Threshold `t` (sharing degree `t − 1`).
    pub threshold: u16,
    /// Binds every key and message to one run (round session and attempt).
    pub session: [u8; 32],
}

impl Params {
    /// From a committee.
    pub fn from_committee(
        committee: &crate::Committee,
        threshold: u16,
        session: [u8; 32],
    ) -> Result<Self, ProtocolError> {
        let m = committee.members();
        check_committee(m.len(), usize::from(threshold))?;
        Ok(Self {
            points: m.iter().map(|m| m.index).collect(),
            nodes: m.iter().map(|m| m.node).collect(),
            seal_keys: m.iter().map(|m| m.seal_key).collect(),
            threshold,
            session,
        })
    }

    pub(crate) fn n(&self) -> usize {
        self.points.len()
    }

    pub(crate) fn d(&self) -> usize {
        usize::from(self.threshold) - 1
    }

    pub(crate) fn xs(&self) -> Vec<field::F> {
        self.points
            .iter()
            .map(|&i| field::F::from_u64(u64::from(i)))
            .collect()
    }
}

/// What one run cost, counted by the king.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// King round trips (steps answered).
    pub steps: u32,
    /// Products reduced.
    pub products: u64,
    /// Values opened in steps 2–3 (bits and masked inputs).
    pub openings: u64,
    /// Field elements received from nodes (all nodes together).
    pub scalars_in: u64,
    /// Field elements broadcast to each node.
    pub scalars_out: u64,
    /// Bytes of all node messages (postcard).
    pub bytes_in: u64,
    /// Bytes of all king messages (postcard, every recipient counted).
    pub bytes_out: u64,
}

/// What a run revealed, as every honest node (and the king) sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdicts {
    /// Per verdict group: every input in it was `≥ 0` (and in range).
    pub passed: Vec<bool>,
    /// Per sum group: `Σ |x_k|` (`None` when it left 128 bits: some input was out
    /// of range).
    pub sums: Vec<Option<u128>>,
}
