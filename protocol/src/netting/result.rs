//! Party side: turn the nodes' signed outputs into the party's own verified result.

use curve25519_dalek::RistrettoPoint;
use rand_core::CryptoRngCore;
use serde::{Deserialize, Serialize};

use super::{
    open::{self, PartyOutputs},
    outputs::{self, OutputDef, OutputKind},
    round::RoundSpec,
};
use crate::{error::ProtocolError, ids::NodeId};

/// A bilateral net.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BilateralNet {
    /// Counterparty.
    pub counterparty: String,
    /// Asset.
    pub asset: String,
    /// Net (positive: the party receives).
    pub net: i64,
}

/// A reconciliation mismatch: both sides' bookings of one instrument do not cancel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mismatch {
    /// Counterparty.
    pub counterparty: String,
    /// Instrument.
    pub instrument: String,
    /// Our quantity plus theirs (0 when they agree).
    pub quantity_difference: i64,
    /// Our cash plus theirs.
    pub cash_difference: i64,
    /// The difference opened outside the i64 range: the counterparty booked a
    /// value outside the round's bounds (both differences are then reported as 0).
    #[serde(default)]
    pub out_of_range: bool,
}

/// A counterparty whose bundle could not be relied on for reconciliation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedCounterparty {
    /// Counterparty.
    pub counterparty: String,
    /// Why (e.g. its commitments contradict what the nodes checked).
    pub reason: String,
}

/// A party's verified result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartyResult {
    /// Party name.
    pub party: String,
    /// Bilateral nets per counterparty and asset.
    pub bilateral: Vec<BilateralNet>,
    /// Multilateral net per asset.
    pub multilateral: Vec<(String, i64)>,
    /// Reconciliation mismatches (only the two counterparties ever see these).
    pub mismatches: Vec<Mismatch>,
    /// Nodes whose validly signed output shares failed verification.
    pub culprits: Vec<NodeId>,
    /// Counterparties whose bundles are provably inconsistent: reconciliation with
    /// them is skipped (our own nets do not depend on them).
    #[serde(default)]
    pub refused_counterparties: Vec<RefusedCounterparty>,
}

/// The public data of a closed round a party verifies its result against.
#[derive(Debug, Clone, Copy)]
pub struct Published<'a> {
    /// Which parties' bundles the round was computed on.
    pub participants: &'a [bool],
    /// Digest of those bundles (`open::inputs_digest`).
    pub inputs_digest: [u8; 32],
    /// Per party, its full header (signature already checked with
    /// [`super::BundleHeader::check_full`]).
    pub headers: &'a [Option<&'a super::BundleHeader>],
    /// Per party, the decompressed per-value commitments of that header.
    pub commitments: &'a [Option<&'a [RistrettoPoint]>],
}

/// Opens and verifies party `party`'s result from the nodes' messages for it.
///
/// Only messages validly signed by a committee node for this round, these inputs
/// and this party count; anything else is ignored (it proves nothing about the
/// node it names). A node whose signed shares fail is named. A counterparty whose
/// commitments about us contradict its signed block aggregate is refused (its
/// reconciliation outputs are skipped) while our own nets still open.
///
/// # Security
/// `secret` is the party's X25519 key.
pub fn open_result(
    spec: &RoundSpec,
    published: &Published<'_>,
    party: usize,
    secret: &x25519_dalek::StaticSecret,
    node_outputs: &[PartyOutputs],
    rng: &mut impl CryptoRngCore,
) -> Result<PartyResult, ProtocolError> {
    let (participants, inputs, commitments) = (
        published.participants,
        &published.inputs_digest,
        published.commitments,
    );
    let refused =
        super::verify::check_blocks(spec, published.headers, commitments, participants, party);
    let defs = outputs::party_outputs(spec, participants, party);
    let keep: Vec<bool> = defs
        .iter()
        .map(|d| match d.kind {
            OutputKind::ReconcileQuantity { counterparty, .. }
            | OutputKind::ReconcileCash { counterparty, .. } => {
                !refused.iter().any(|(q, _)| *q == counterparty as usize)
            }
            _ => true,
        })
        .collect();
    let valid: Vec<PartyOutputs> = node_outputs
        .iter()
        .filter(|o| o.check(spec, inputs).is_ok() && o.party == party as u32)
        .cloned()
        .collect();
    let kept_defs: Vec<OutputDef> = defs
        .iter()
        .zip(&keep)
        .filter(|(_, k)| **k)
        .map(|(d, _)| d.clone())
        .collect();
    let responses: Vec<open::Response> =
        open::party_responses(spec, party as u32, secret, defs.len(), &valid)
            .into_iter()
            .map(|mut r| {
                r.shares = r.shares.map(|s| {
                    s.into_iter()
                        .zip(&keep)
                        .filter(|(_, k)| **k)
                        .map(|(x, _)| x)
                        .collect()
                });
                r
            })
            .collect();
    let opening = open::open_verified(spec, &kept_defs, commitments, &responses, rng)?;
    let assets = spec.assets();
    let name = |q: u32| spec.parties[q as usize].name.clone();
    let mut r = PartyResult {
        party: spec.parties[party].name.clone(),
        bilateral: Vec::new(),
        multilateral: Vec::new(),
        mismatches: Vec::new(),
        culprits: opening.culprits,
        refused_counterparties: refused
            .into_iter()
            .map(|(q, reason)| RefusedCounterparty {
                counterparty: name(q as u32),
                reason,
            })
            .collect(),
    };
    let own = |d: &OutputDef, v: Option<i64>| {
        v.ok_or_else(|| ProtocolError::NettingOverflow {
            asset: open::describe(spec, d),
        })
    };
    let mut pending: Option<Option<i64>> = None;
    for (d, v) in kept_defs.iter().zip(opening.values) {
        match d.kind {
            OutputKind::Bilateral {
                counterparty,
                asset,
            } => r.bilateral.push(BilateralNet {
                counterparty: name(counterparty),
                asset: assets[asset as usize].clone(),
                net: own(d, v)?,
            }),
            OutputKind::Multilateral { asset } => r
                .multilateral
                .push((assets[asset as usize].clone(), own(d, v)?)),
            OutputKind::ReconcileQuantity { .. } => pending = Some(v),
            OutputKind::ReconcileCash {
                counterparty,
                instrument,
            } => {
                let q = pending.take().flatten();
                let out_of_range = q.is_none() || v.is_none();
                let (q, c) = (q.unwrap_or(0), v.unwrap_or(0));
                if out_of_range || q != 0 || c != 0 {
                    r.mismatches.push(Mismatch {
                        counterparty: name(counterparty),
                        instrument: spec.instruments[instrument as usize].name.clone(),
                        quantity_difference: if out_of_range { 0 } else { q },
                        cash_difference: if out_of_range { 0 } else { c },
                        out_of_range,
                    });
                }
            }
        }
    }
    Ok(r)
}
