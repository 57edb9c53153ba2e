//! What a netting round compares, as public linear maps of the parties' shared
//! values (so every node derives its input shares locally):
//!
//! 1. per participating party `p` (round order) and asset `a` (sorted):
//!    `net_{p,a} + collateral_{p,a} + limit_{p,a}` — the limit checks;
//! 2. with `efficiency`: `net_{p,a}` per (p, a), then `bilateral_{p,q,a}` (p's own
//!    view of its net against `q`) per ordered pair of participants and asset.
//!
//! Verdict groups: one per participating party when the round reveals failures,
//! else one group of every limit check. Sum groups (efficiency), per asset in
//! order: `Σ_p |net_{p,a}|` then `Σ_{p≠q} |bilateral_{p,q,a}|`; the published
//! volumes are half of each (every transfer is counted from both sides).

use curve25519_dalek::Scalar;

use super::{field::F, Job};
use crate::netting::{amount, round::RoundSpec, verify::ShareVector};

/// The comparison layout of one closed round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Participating party indices, in round order.
    pub parties: Vec<usize>,
    /// Settlement assets, sorted.
    pub assets: Vec<String>,
    /// Whether the round reveals which parties failed.
    pub reveal_failures: bool,
    /// Whether efficiency inputs follow the limit checks.
    pub efficiency: bool,
}

impl Layout {
    /// For a round with limit checks and its participants (`None` without limits).
    pub fn new(spec: &RoundSpec, participants: &[bool]) -> Option<Self> {
        let l = spec.limits?;
        Some(Self {
            parties: (0..spec.parties.len())
                .filter(|&p| participants.get(p) == Some(&true))
                .collect(),
            assets: spec.assets(),
            reveal_failures: l.reveal_failures,
            efficiency: l.efficiency,
        })
    }

    /// Number of limit checks (`P·A`).
    pub fn checks(&self) -> usize {
        self.parties.len() * self.assets.len()
    }

    /// The input index of party `p`'s (position in [`Self::parties`]) check in asset `a`.
    pub fn check_index(&self, p: usize, a: usize) -> usize {
        p * self.assets.len() + a
    }

    fn pairs(&self) -> Vec<(usize, usize)> {
        let n = self.parties.len();
        (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .collect()
    }

    /// The MPC job.
    pub fn job(&self) -> Job {
        let a = self.assets.len();
        let checks = self.checks();
        let verdicts = if self.reveal_failures {
            (0..self.parties.len())
                .map(|p| (0..a).map(|x| self.check_index(p, x) as u32).collect())
                .collect()
        } else {
            vec![(0..checks as u32).collect()]
        };
        let mut sums = Vec::new();
        let mut inputs = checks;
        if self.efficiency {
            let pairs = self.pairs().len();
            let nets = checks;
            for x in 0..a {
                sums.push(
                    (0..self.parties.len())
                        .map(|p| (checks + p * a + x) as u32)
                        .collect(),
                );
                sums.push(
                    (0..pairs)
                        .map(|q| (checks + nets + q * a + x) as u32)
                        .collect(),
                );
            }
            inputs += nets + pairs * a;
        }
        Job {
            inputs,
            verdicts,
            sums,
        }
    }

    /// This node's input shares from its verified shares of every party's values
    /// (indexed by party; every participant must be present).
    ///
    /// # Security
    /// Reads the node's secret shares; returns shares of secret values.
    pub fn node_inputs(&self, spec: &RoundSpec, shares: &[Option<&ShareVector>]) -> Option<Vec<F>> {
        let values: Vec<&[Scalar]> = self
            .parties
            .iter()
            .map(|&p| {
                shares
                    .get(p)
                    .copied()
                    .flatten()
                    .map(|s| s.values.as_slice())
            })
            .collect::<Option<_>>()?;
        Some(self.inputs(spec, &values))
    }

    /// The same maps over plaintext values (the reference and tests).
    pub fn plain_inputs(&self, spec: &RoundSpec, values: &[Vec<i64>]) -> Vec<i128> {
        let scalars: Vec<Vec<Scalar>> = values
            .iter()
            .map(|v| v.iter().map(|x| amount::to_scalar(*x)).collect())
            .collect();
        let refs: Vec<&[Scalar]> = scalars.iter().map(Vec::as_slice).collect();
        self.inputs(spec, &refs)
            .into_iter()
            .map(|f| {
                let s = f.to_scalar();
                let neg = (-s).to_bytes();
                let pos = s.to_bytes();
                if pos[16..].iter().all(|b| *b == 0) {
                    i128::from_le_bytes(pos[..16].try_into().unwrap_or_default())
                } else {
                    -i128::from_le_bytes(neg[..16].try_into().unwrap_or_default())
                }
            })
            .collect()
    }

    fn inputs(&self, spec: &RoundSpec, values: &[&[Scalar]]) -> Vec<F> {
        let terms = spec.net_terms();
        let a = self.assets.len();
        let bl = spec.block_len();
        let net = |v: &[Scalar], range: core::ops::Range<usize>| -> Vec<Scalar> {
            let mut out = vec![Scalar::ZERO; a];
            for e in range {
                let (asset, c) = terms[e];
                if c != 0 {
                    out[asset] += amount::coefficient(c) * v[e];
                }
            }
            out
        };
        let nets: Vec<Vec<Scalar>> = values
            .iter()
            .map(|v| net(v, 0..spec.cover_start()))
            .collect();
        let mut out = Vec::with_capacity(self.checks());
        for (v, n) in values.iter().zip(&nets) {
            for (x, net_x) in n.iter().enumerate() {
                let mut s = *net_x;
                for field in 0..2 {
                    if let Some(e) = spec.cover_index(x, field) {
                        s += v[e];
                    }
                }
                out.push(F::from_scalar(&s));
            }
        }
        if self.efficiency {
            for n in &nets {
                out.extend(n.iter().map(F::from_scalar));
            }
            for (i, j) in self.pairs() {
                let (p, q) = (self.parties[i], self.parties[j]);
                let slot = if q < p { q } else { q - 1 };
                let b = net(values[i], slot * bl..(slot + 1) * bl);
                out.extend(b.iter().map(F::from_scalar));
            }
        }
        out
    }
}
