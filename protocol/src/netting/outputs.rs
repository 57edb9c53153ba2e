//! Local netting on shares: every output of a round is a public linear combination
//! of the parties' input values, so a node computes its share of each output from
//! its input shares alone, and anyone computes the output's commitment from the
//! input commitments.
//!
//! For party `p`:
//! - `Bilateral { counterparty: q, asset: a }` = Σ_{i in a} unit_i·qty_p(q,i) + cash_p(q,i)
//!   for every other party `q` of the round;
//! - `Multilateral { asset: a }` = Σ_q Bilateral(q, a)  (public: it is settled);
//! - `ReconcileQuantity { counterparty: q, instrument: i }` = qty_p(q,i) + qty_q(p,i)
//! - `ReconcileCash { counterparty: q, instrument: i }` = cash_p(q,i) + cash_q(p,i)
//!   for every other party `q` that submitted a bundle (`participants`).
//!
//! The reconciliation differences are zero when both sides booked the trade
//! identically; they are opened to `p` and `q` only. A party's nets count every
//! position it booked, including against a party that submitted nothing (that
//! party's side is then missing, so conservation fails where it traded and the
//! round is not settled; everybody else still gets their results).

use curve25519_dalek::Scalar;
use serde::{Deserialize, Serialize};

use super::{amount, round::RoundSpec, verify::ShareVector};

/// What an output is (and whom it concerns).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OutputKind {
    /// Net with one counterparty in one asset.
    Bilateral {
        /// Counterparty index.
        counterparty: u32,
        /// Asset index into [`RoundSpec::assets`].
        asset: u32,
    },
    /// Net over all counterparties in one asset.
    Multilateral {
        /// Asset index.
        asset: u32,
    },
    /// Sum of both sides' quantities on one instrument (0 when they agree).
    ReconcileQuantity {
        /// Counterparty index.
        counterparty: u32,
        /// Instrument index.
        instrument: u32,
    },
    /// Sum of both sides' cash on one instrument (0 when they agree).
    ReconcileCash {
        /// Counterparty index.
        counterparty: u32,
        /// Instrument index.
        instrument: u32,
    },
}

/// One term `coefficient × value[party][index]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Term {
    /// Party whose value it is.
    pub party: u32,
    /// Index in that party's value vector.
    pub index: u32,
    /// Public coefficient.
    pub coefficient: i128,
}

/// An output as a linear combination of input values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputDef {
    /// Party the output belongs to.
    pub owner: u32,
    /// What it is.
    pub kind: OutputKind,
    /// Its terms.
    pub terms: Vec<Term>,
}

/// Terms of `p`'s net in each asset over the values in `range` of its vector
/// (coefficients from [`RoundSpec::net_terms`]: `unit` for a quantity, 1 for cash).
fn nets_over(
    spec: &RoundSpec,
    terms: &[(usize, i128)],
    p: usize,
    range: std::ops::Range<usize>,
) -> Vec<Vec<Term>> {
    let mut by_asset = vec![Vec::new(); spec.assets().len()];
    for e in range {
        let (asset, coefficient) = terms[e];
        by_asset[asset].push(Term {
            party: p as u32,
            index: e as u32,
            coefficient,
        });
    }
    by_asset
}

/// Party `p`'s multilateral net per asset (its public outputs).
fn multilateral(spec: &RoundSpec, terms: &[(usize, i128)], p: usize) -> Vec<OutputDef> {
    nets_over(spec, terms, p, 0..spec.values_per_party())
        .into_iter()
        .enumerate()
        .map(|(a, terms)| OutputDef {
            owner: p as u32,
            kind: OutputKind::Multilateral { asset: a as u32 },
            terms,
        })
        .collect()
}

/// Party `p`'s private outputs, in delivery order: bilateral nets (counterparty-
/// major, then asset), multilateral nets per asset, then per counterparty and
/// instrument the quantity and cash reconciliation differences.
pub fn party_outputs(spec: &RoundSpec, participants: &[bool], p: usize) -> Vec<OutputDef> {
    let terms = spec.net_terms();
    let bl = spec.block_len();
    let owner = p as u32;
    let mut out = Vec::new();
    for slot in 0..spec.parties.len() - 1 {
        let q = spec.counterparty(p, slot) as u32;
        for (a, terms) in nets_over(spec, &terms, p, slot * bl..(slot + 1) * bl)
            .into_iter()
            .enumerate()
        {
            out.push(OutputDef {
                owner,
                kind: OutputKind::Bilateral {
                    counterparty: q,
                    asset: a as u32,
                },
                terms,
            });
        }
    }
    out.extend(multilateral(spec, &terms, p));
    let present = (0..spec.parties.len())
        .filter(|&q| q != p && participants.get(q).copied().unwrap_or(false));
    for q in present {
        for i in 0..spec.instruments.len() {
            for field in 0..2 {
                let (counterparty, instrument) = (q as u32, i as u32);
                let kind = if field == 0 {
                    OutputKind::ReconcileQuantity {
                        counterparty,
                        instrument,
                    }
                } else {
                    OutputKind::ReconcileCash {
                        counterparty,
                        instrument,
                    }
                };
                let mine = spec.value_index(p, q, i, field).unwrap_or(0) as u32;
                let theirs = spec.value_index(q, p, i, field).unwrap_or(0) as u32;
                out.push(OutputDef {
                    owner,
                    kind,
                    terms: vec![
                        Term {
                            party: owner,
                            index: mine,
                            coefficient: 1,
                        },
                        Term {
                            party: counterparty,
                            index: theirs,
                            coefficient: 1,
                        },
                    ],
                });
            }
        }
    }
    out
}

/// The public outputs: every participant's multilateral net per asset (party-major),
/// which the settlement batch carries.
pub fn public_outputs(spec: &RoundSpec, participants: &[bool]) -> Vec<OutputDef> {
    let terms = spec.net_terms();
    (0..spec.parties.len())
        .filter(|&p| participants.get(p).copied().unwrap_or(false))
        .flat_map(|p| multilateral(spec, &terms, p))
        .collect()
}

/// Evaluates outputs on one node's shares (`shares[party]`, `None` for parties
/// without a bundle): the node's `(value, blinding)` share of each output.
pub fn evaluate(defs: &[OutputDef], shares: &[Option<&ShareVector>]) -> Vec<(Scalar, Scalar)> {
    defs.iter()
        .map(|d| {
            let mut v = Scalar::ZERO;
            let mut b = Scalar::ZERO;
            for t in &d.terms {
                if let Some(Some(s)) = shares.get(t.party as usize) {
                    let c = amount::coefficient(t.coefficient);
                    v += c * s.values[t.index as usize];
                    b += c * s.blinds[t.index as usize];
                }
            }
            (v, b)
        })
        .collect()
}

/// Evaluates outputs on plaintext values (the reference; `values[party]`).
pub fn evaluate_plain(defs: &[OutputDef], values: &[Option<&[i64]>]) -> Vec<i128> {
    defs.iter()
        .map(|d| {
            d.terms
                .iter()
                .map(|t| match values.get(t.party as usize) {
                    Some(Some(v)) => t.coefficient * i128::from(v[t.index as usize]),
                    _ => 0,
                })
                .sum()
        })
        .collect()
}

/// Accumulates `weight × commitment(output)` into per-input-value coefficients,
/// so a batch of output commitments costs one multiscalar multiplication over the
/// input commitments (`coeffs[party][index]`).
pub(crate) fn fold_commitment_weights(
    defs: &[OutputDef],
    weights: &[Scalar],
    coeffs: &mut [Vec<Scalar>],
) {
    for (d, w) in defs.iter().zip(weights) {
        for t in &d.terms {
            if let Some(row) = coeffs.get_mut(t.party as usize) {
                if let Some(c) = row.get_mut(t.index as usize) {
                    *c += w * amount::coefficient(t.coefficient);
                }
            }
        }
    }
}
