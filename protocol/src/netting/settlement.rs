//! The settlement batch: net transfer per participating party and asset, bound to
//! the round, its definition, its inputs and the signing key. Nodes build it
//! themselves from the verified public openings and sign exactly its message.
//!
//! ```text
//! encoding = postcard(SettlementBatch)
//! message  = SHA-256("quorate/netting/settlement/v1\0" ‖ encoding)   (the 32 bytes FROST signs)
//! ```
//!
//! A positive `amount` is paid to the party, a negative one by it. The batch is
//! built only when, per asset, the nets sum to zero (conservation).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{
    outputs::{self, OutputKind},
    round::{RoundId, RoundSpec},
};
use crate::{error::ProtocolError, ids::KeyId};

/// One net transfer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    /// Party name.
    pub party: String,
    /// Asset.
    pub asset: String,
    /// Net amount in minor units (positive: the party receives).
    pub amount: i64,
}

/// What the network signs at the end of a round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettlementBatch {
    /// Round.
    pub round: RoundId,
    /// Round definition digest.
    pub spec_digest: [u8; 32],
    /// Digest of every input bundle the nets come from (`open::inputs_digest`).
    pub inputs_digest: [u8; 32],
    /// The signing key.
    pub key: KeyId,
    /// Net transfers, party-major in round order, assets sorted.
    pub transfers: Vec<Transfer>,
}

impl SettlementBatch {
    /// Builds the batch from the opened public outputs (in
    /// [`outputs::public_outputs`] order) after checking conservation per asset.
    pub fn build(
        spec: &RoundSpec,
        participants: &[bool],
        inputs_digest: [u8; 32],
        nets: &[i64],
    ) -> Result<Self, ProtocolError> {
        let defs = outputs::public_outputs(spec, participants);
        if defs.len() != nets.len() {
            return Err(ProtocolError::InvalidState(
                "nets do not match the public outputs",
            ));
        }
        let assets = spec.assets();
        let mut sums = vec![0i128; assets.len()];
        let mut transfers = Vec::with_capacity(nets.len());
        for (d, &n) in defs.iter().zip(nets) {
            let OutputKind::Multilateral { asset } = d.kind else {
                return Err(ProtocolError::InvalidState("public output is not a net"));
            };
            sums[asset as usize] += i128::from(n);
            transfers.push(Transfer {
                party: spec.parties[d.owner as usize].name.clone(),
                asset: assets[asset as usize].clone(),
                amount: n,
            });
        }
        if let Some((a, s)) = sums.iter().enumerate().find(|(_, s)| **s != 0) {
            return Err(ProtocolError::ConservationFailed {
                asset: assets[a].clone(),
                imbalance: *s,
            });
        }
        Ok(Self {
            round: spec.id,
            spec_digest: spec.digest(),
            inputs_digest,
            key: spec.key,
            transfers,
        })
    }

    /// The canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// The 32-byte message the network signs.
    pub fn message(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"quorate/netting/settlement/v1\0");
        h.update(self.encode());
        h.finalize().into()
    }
}
