//! Party side: turn the nodes' signed outputs into the party's own verified result.

use curve25519_dalek::RistrettoPoint;
use rand_core::CryptoRngCore;
use serde::{Deserialize, Serialize};

use super::{
    open::{self, PartyOutputs},
    outputs::{self, OutputKind},
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
    /// Nodes whose output shares failed verification.
    pub culprits: Vec<NodeId>,
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
/// Messages whose signature or context fails are counted
/// against their node.
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
    // The counterparties' commitments about us must match what the nodes checked.
    for (q, (h, c)) in published.headers.iter().zip(commitments).enumerate() {
        if q == party || !participants.get(q).copied().unwrap_or(false) {
            continue;
        }
        let (Some(h), Some(c)) = (h, c) else {
            return Err(ProtocolError::NettingInput(format!(
                "no header for participating party {:?}",
                spec.parties[q].name
            )));
        };
        super::verify::check_block(spec, h, c, party)?;
    }
    let defs = outputs::party_outputs(spec, participants, party);
    let mut forged = Vec::new();
    let valid: Vec<PartyOutputs> = node_outputs
        .iter()
        .filter(|o| {
            let ok = o.check(spec, inputs).is_ok() && o.party == party as u32;
            if !ok {
                forged.push(o.node);
            }
            ok
        })
        .cloned()
        .collect();
    let responses = open::party_responses(spec, party as u32, secret, defs.len(), &valid);
    let mut opening = open::open_verified(spec, &defs, commitments, &responses, rng)?;
    opening.culprits.extend(forged);
    opening.culprits.sort();
    opening.culprits.dedup();
    let assets = spec.assets();
    let name = |q: u32| spec.parties[q as usize].name.clone();
    let mut r = PartyResult {
        party: spec.parties[party].name.clone(),
        bilateral: Vec::new(),
        multilateral: Vec::new(),
        mismatches: Vec::new(),
        culprits: opening.culprits,
    };
    let mut pending: Option<(u32, u32, i64)> = None;
    for (d, v) in defs.iter().zip(opening.values) {
        match d.kind {
            OutputKind::Bilateral {
                counterparty,
                asset,
            } => r.bilateral.push(BilateralNet {
                counterparty: name(counterparty),
                asset: assets[asset as usize].clone(),
                net: v,
            }),
            OutputKind::Multilateral { asset } => {
                r.multilateral.push((assets[asset as usize].clone(), v))
            }
            OutputKind::ReconcileQuantity {
                counterparty,
                instrument,
            } => {
                pending = Some((counterparty, instrument, v));
            }
            OutputKind::ReconcileCash {
                counterparty,
                instrument,
            } => {
                let q = pending.take().map_or(0, |(_, _, q)| q);
                if q != 0 || v != 0 {
                    r.mismatches.push(Mismatch {
                        counterparty: name(counterparty),
                        instrument: spec.instruments[instrument as usize].name.clone(),
                        quantity_difference: q,
                        cash_difference: v,
                    });
                }
            }
        }
    }
    Ok(r)
}
