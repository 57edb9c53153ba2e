//! The signed input bundle a party sends: Pedersen VSS commitments, the aggregate
//! commitments nodes check their shares against, and one sealed share box per node,
//! signed with the party's Ed25519 key.
//!
//! Byte formats (all hashes SHA-256, integers big-endian, `‖` concatenation, points
//! compressed Ristretto255, 32 bytes):
//!
//! ```text
//! commitments digest = H("quorate/netting/commitments/v1\0" ‖ count (u32) ‖ C_{e,k} …)
//!     C_{e,k} value-major: C_{0,0..t−1}, C_{1,0..t−1}, …
//! core   = H("quorate/netting/bundle-core/v1\0" ‖ round id (16) ‖ spec digest (32)
//!            ‖ party index (u32) ‖ signed_at (u64) ‖ commitments digest (32)
//!            ‖ net count (u32) ‖ M_{a,k} … ‖ box count (u32) ‖ box digests (32 each))
//! digest = H("quorate/netting/bundle/v1\0" ‖ core ‖ block count (u32) ‖ D_{q,k} …)
//! box digest = H("quorate/netting/box/v1\0" ‖ node id (32) ‖ ephemeral (32) ‖ ciphertext)
//! signature  = Ed25519(party sign_key, digest)
//! ```
//!
//! Nodes receive a [`BundleHeader::for_nodes`] copy without the per-value
//! commitments (their digest is signed) and only their own [`SealedBox`]: a node
//! checks its shares against the aggregates `M` and `D` alone. Parties and the
//! coordinator keep the full header; a party checks a counterparty's `D` block
//! against its `C`s before trusting them (`result`).

use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::round::{RoundId, RoundSpec};
use crate::{error::ProtocolError, ids::NodeId, seal::SealedBox};

/// The public part of a party's bundle.
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
    /// (index `e·t + k`; `a_{e,0}` is the value). Empty in the copy sent to nodes.
    pub commitments: Vec<[u8; 32]>,
    /// Digest of `commitments` (see the module docs); what the signature covers.
    pub commitments_digest: [u8; 32],
    /// `M_{a,k}`: per asset (sorted) and coefficient, the commitment to the
    /// polynomial of the party's multilateral net in that asset (index `a·t + k`).
    pub nets: Vec<[u8; 32]>,
    /// `D_{q,k}`: per counterparty slot and coefficient, the commitment to the
    /// `ρ`-weighted sum of that counterparty block's polynomials (index `slot·t + k`).
    pub blocks: Vec<[u8; 32]>,
    /// One digest per committee member, in committee order, of its sealed box.
    pub box_digests: Vec<[u8; 32]>,
    /// Ed25519 signature by the party over [`BundleHeader::digest`].
    pub signature: Vec<u8>,
}

/// A full bundle as the party submits it (header plus every node's box).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputBundle {
    /// Public part, with the per-value commitments.
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

/// Digest of a per-value commitment list.
pub fn commitments_digest(commitments: &[[u8; 32]]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"quorate/netting/commitments/v1\0");
    h.update((commitments.len() as u32).to_be_bytes());
    for c in commitments {
        h.update(c);
    }
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
    /// The Fiat–Shamir input for the block weights `ρ`: everything fixed before the
    /// block aggregates (commitments, nets, every sealed box).
    pub fn core_digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"quorate/netting/bundle-core/v1\0");
        h.update(self.round.0);
        h.update(self.spec_digest);
        h.update(self.party.to_be_bytes());
        h.update(self.signed_at.to_be_bytes());
        h.update(self.commitments_digest);
        h.update((self.nets.len() as u32).to_be_bytes());
        for m in &self.nets {
            h.update(m);
        }
        h.update((self.box_digests.len() as u32).to_be_bytes());
        for d in &self.box_digests {
            h.update(d);
        }
        h.finalize().into()
    }

    /// The digest the party signs; identifies the bundle everywhere.
    pub fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"quorate/netting/bundle/v1\0");
        h.update(self.core_digest());
        h.update((self.blocks.len() as u32).to_be_bytes());
        for d in &self.blocks {
            h.update(d);
        }
        h.finalize().into()
    }

    /// The copy sent to nodes: without the per-value commitments.
    pub fn for_nodes(&self) -> Self {
        Self {
            commitments: Vec::new(),
            ..self.clone()
        }
    }

    /// Checks shape against the round (sizes, party, spec, cut-off) and the
    /// party's signature; the per-value commitments may be absent (a node's copy)
    /// but must match their digest when present. Errors name the party.
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
        let t = usize::from(spec.threshold);
        let want = spec.values_per_party() * t;
        if !self.commitments.is_empty() {
            if self.commitments.len() != want {
                return Err(fault(format!(
                    "{} commitments, the round needs {want} (t per value)",
                    self.commitments.len()
                )));
            }
            if commitments_digest(&self.commitments) != self.commitments_digest {
                return Err(fault("commitments do not match their signed digest".into()));
            }
        }
        if self.nets.len() != spec.assets().len() * t {
            return Err(fault(format!(
                "{} net commitments, the round needs {} (t per asset)",
                self.nets.len(),
                spec.assets().len() * t
            )));
        }
        if self.blocks.len() != spec.block_count() * t {
            return Err(fault(format!(
                "{} block commitments, the round needs {} (t per counterparty)",
                self.blocks.len(),
                spec.block_count() * t
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
            .map_err(|_| fault("signature does not verify under the party's key".into()))
    }

    /// [`Self::check`], and that the per-value commitments are present (what a
    /// party or the coordinator needs).
    pub fn check_full(&self, spec: &RoundSpec) -> Result<(), ProtocolError> {
        self.check(spec)?;
        if self.commitments.is_empty() {
            return Err(ProtocolError::BadBundle {
                party: super::verify::party_name(spec, self.party),
                reason: "header without its per-value commitments".into(),
            });
        }
        Ok(())
    }
}

impl InputBundle {
    /// What node `position` (committee order) receives: the nodes' header copy and
    /// its box.
    pub fn for_node(&self, position: usize) -> Option<(BundleHeader, SealedBox)> {
        Some((self.header.for_nodes(), self.boxes.get(position)?.clone()))
    }
}
