//! Building the settlement batch from what the coordinator holds (pure): the
//! party-signed headers of the listed inputs give the net commitments, the nodes'
//! public outputs the shares of the nets.

use curve25519_dalek::RistrettoPoint;
use quorate_protocol::{
    netting::{open, session, verify, BundleHeader, PublicOutputs, RoundSpec, SettlementBatch},
    NodeId, ProtocolError,
};
use rand_core::CryptoRngCore;

/// The net commitments of every listed input, from its header (`None` for a party
/// not listed). Errors when a listed header is missing or differs from its digest.
pub fn commitments(
    spec: &RoundSpec,
    headers: &[Option<BundleHeader>],
    inputs: &[Option<[u8; 32]>],
) -> Result<Vec<Option<Vec<RistrettoPoint>>>, ProtocolError> {
    inputs
        .iter()
        .enumerate()
        .map(|(p, d)| {
            let Some(d) = d else { return Ok(None) };
            let header = headers
                .get(p)
                .and_then(Option::as_ref)
                .filter(|h| h.digest() == *d)
                .ok_or_else(|| {
                    ProtocolError::NettingInput(format!(
                        "no header with the listed digest for party {:?}",
                        spec.parties.get(p).map_or("?", |x| x.name.as_str())
                    ))
                })?;
            verify::net_points(spec, header).map(Some)
        })
        .collect()
}

/// Verifies the public outputs against the listed inputs' net commitments and builds
/// the batch (conservation checked), naming nodes whose shares fail.
pub fn settle_round(
    spec: &RoundSpec,
    headers: &[Option<BundleHeader>],
    inputs: &[Option<[u8; 32]>],
    views: &[PublicOutputs],
    rng: &mut impl CryptoRngCore,
) -> Result<(SettlementBatch, Vec<NodeId>), ProtocolError> {
    let points = commitments(spec, headers, inputs)?;
    let refs: Vec<Option<&[RistrettoPoint]>> = points.iter().map(|c| c.as_deref()).collect();
    let participants: Vec<bool> = inputs.iter().map(Option::is_some).collect();
    let digest = open::inputs_digest(spec, inputs);
    session::settle(spec, &participants, digest, &refs, views, rng)
}
