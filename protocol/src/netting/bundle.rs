//! The signed input bundle a party sends: public Pedersen commitments plus one
//! sealed share box per node, signed with the party's Ed25519 key.
//!
//! Byte formats (all hashes SHA-256, integers big-endian, `‖` concatenation):
//!
//! ```text
//! digest  = H("quorate/netting/bundle/v1\0" ‖ round id (16) ‖ spec digest (32)
//!             ‖ party index (u32) ‖ signed_at (u64) ‖ commitment count (u32)
//!             ‖ commitments (32 each, value-major: C_{e,0..t−1} for e = 0, 1, …)
//!             ‖ box count (u32) ‖ box digests (32 each))
//! box digest = H("quorate/netting/box/v1\0" ‖ node id (32) ‖ ephemeral (32) ‖ ciphertext)
//! signature  = Ed25519(party sign_key, digest)
//! ```
//!
//! A node receives the [`BundleHeader`] and only its own [`SealedBox`]; the box
//! digests of the other nodes let it check the signature without their ciphertexts.

use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::round::{RoundId, RoundSpec};
use crate::{error::ProtocolError, ids::NodeId, seal::SealedBox};

/// The public part of a party's bundle; identical for every node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleHeader {
    /// Round.
    pub round: RoundId,
    /// [`RoundSpec::digest`] of the round the party shared for.
    pub spec_digest: [u8; 32],
    /// The party's index in the round.
    pub party: u32,
    /// When the party signed (Unix seconds); must not be after the cut-off.
    pub signed_at: u64,
    /// `C_{e,k} = a_{e,k}·G + b_{e,k}·H` per value `e` and coefficient `k < t`
    /// (compressed Ristretto, index `e·t + k`; `a_{e,0}` is the value).
    pub commitments: Vec<[u8; 32]>,
    /// One digest per committee member, in committee order, of its sealed box.
    pub box_digests: Vec<[u8; 32]>,
    /// Ed25519 signature by the party over [`BundleHeader::digest`].
    pub signature: Vec<u8>,
}

/// A full bundle as the party submits it (header plus every node's box).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputBundle {
    /// Public part.
    pub header: BundleHeader,
    /// Sealed shares, in committee order.
    pub boxes: Vec<SealedBox>,
}

/// Digest of one node's sealed box.
pub fn box_digest(node: &NodeId, sealed: &SealedBox) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"quorate/netting/box/v1\0");
    h.update(node.as_bytes());
    h.update(sealed.ephemeral);
    h.update(&sealed.ciphertext);
    h.finalize().into()
}

/// Associated data of a party's share box for `node`.
pub(crate) fn box_aad(spec: &RoundSpec, party: u32, node: &NodeId) -> Vec<u8> {
    let mut aad = b"quorate/netting/input-shares/v1\0".to_vec();
    aad.extend_from_slice(&spec.id.0);
    aad.extend_from_slice(&spec.digest());
    aad.extend_from_slice(&party.to_be_bytes());
    aad.extend_from_slice(node.as_bytes());
    aad
}

impl BundleHeader {
    /// The digest the party signs; identifies the bundle everywhere.
    pub fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"quorate/netting/bundle/v1\0");
        h.update(self.round.0);
        h.update(self.spec_digest);
        h.update(self.party.to_be_bytes());
        h.update(self.signed_at.to_be_bytes());
        h.update((self.commitments.len() as u32).to_be_bytes());
        for c in &self.commitments {
            h.update(c);
        }
        h.update((self.box_digests.len() as u32).to_be_bytes());
        for d in &self.box_digests {
            h.update(d);
        }
        h.finalize().into()
    }

    /// Checks shape against the round (sizes, party, spec, cut-off) and the
    /// party's signature. Errors name the party.
    pub fn check(&self, spec: &RoundSpec) -> Result<(), ProtocolError> {
        let party = spec.parties.get(self.party as usize).ok_or_else(|| {
            ProtocolError::NettingInput(format!(
                "bundle for party index {} of a {}-party round",
                self.party,
                spec.parties.len()
            ))
        })?;
        let fault = |reason: String| ProtocolError::BadBundle {
            party: party.name.clone(),
            reason,
        };
        if self.round != spec.id || self.spec_digest != spec.digest() {
            return Err(fault(
                "bundle is for another round or round definition".into(),
            ));
        }
        if self.signed_at > spec.cutoff {
            return Err(ProtocolError::LateBundle {
                party: party.name.clone(),
                signed_at: self.signed_at,
                cutoff: spec.cutoff,
            });
        }
        let want = spec.values_per_party() * usize::from(spec.threshold);
        if self.commitments.len() != want {
            return Err(fault(format!(
                "{} commitments, the round needs {want} (t per value)",
                self.commitments.len()
            )));
        }
        if self.box_digests.len() != spec.committee.len() {
            return Err(fault(format!(
                "{} share boxes for a {}-node committee",
                self.box_digests.len(),
                spec.committee.len()
            )));
        }
        let key = VerifyingKey::from_bytes(&party.sign_key)
            .map_err(|_| fault("party key is invalid".into()))?;
        let sig = Signature::from_slice(&self.signature)
            .map_err(|_| fault("signature is not 64 bytes".into()))?;
        key.verify_strict(&self.digest(), &sig)
            .map_err(|_| fault("signature does not verify under the party's key".into()))?;
        Ok(())
    }
}

impl InputBundle {
    /// The header and the box for committee member `position`, as sent to that node.
    pub fn for_node(&self, position: usize) -> Option<(BundleHeader, SealedBox)> {
        Some((self.header.clone(), self.boxes.get(position)?.clone()))
    }
}
