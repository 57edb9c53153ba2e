//! What a finished limit check produces at a node: a signed [`LimitVerdict`]
//! (public: covered or not, which parties failed where the round allows it, the
//! efficiency volumes) and, per participating party, a signed [`LimitBits`] sealing
//! the node's shares of that party's bits to it. A round that is not covered ends
//! with the verdicts as its signed "not settled" statement; nodes release the
//! public shares of the nets (and sign a settlement) only after a covered verdict.
//!
//! Digests (what nodes sign, Ed25519 by the node identity):
//! - verdict: `SHA-256("quorate/netting/limit-verdict/v1\0" ‖ postcard(verdict with
//!   an empty signature))`;
//! - bits: `SHA-256("quorate/netting/limit-bits/v1\0" ‖ round ‖ spec digest ‖
//!   inputs digest ‖ node ‖ party (u32 BE) ‖ box digest)`; the box plaintext is the
//!   node's 32-byte shares of the party's bits, one per asset in sorted order, with
//!   associated data `"quorate/netting/limit-bits-box/v1\0" ‖ round ‖ inputs digest
//!   ‖ node ‖ party (u32 BE)`.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{field::F, inputs::Layout, node::Outcome, open::Opener};
use crate::{
    error::ProtocolError,
    identity::NodeIdentity,
    ids::NodeId,
    netting::{bundle::box_digest, round::RoundId, RoundSpec},
    seal::{self, SealedBox},
};

/// Netting efficiency in one asset (minor units).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssetVolume {
    /// Asset.
    pub asset: String,
    /// Volume settled bilaterally: `½ Σ_{p≠q} |bilateral_{p,q}|` (`None`: an input
    /// was out of range).
    pub gross: Option<u128>,
    /// Volume settled after multilateral netting: `½ Σ_p |net_p|`.
    pub net: Option<u128>,
}

/// A node's signed verdict on a round's limit checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitVerdict {
    /// Round.
    pub round: RoundId,
    /// Round definition digest.
    pub spec_digest: [u8; 32],
    /// Inputs the checks ran on.
    pub inputs_digest: [u8; 32],
    /// The signing node.
    pub node: NodeId,
    /// Run attempt (each attempt uses fresh keys).
    pub attempt: u32,
    /// Every participating party is covered in every asset.
    pub covered: bool,
    /// Parties not covered, when the round reveals failures (else empty).
    pub failed: Vec<String>,
    /// Efficiency per asset, when the round asks for it (else empty).
    pub volumes: Vec<AssetVolume>,
    /// Ed25519 signature by `node` over [`LimitVerdict::digest`].
    pub signature: Vec<u8>,
}

impl LimitVerdict {
    /// What the node signs.
    pub fn digest(&self) -> [u8; 32] {
        let mut c = self.clone();
        c.signature = Vec::new();
        let mut h = Sha256::new();
        h.update(b"quorate/netting/limit-verdict/v1\0");
        h.update(postcard::to_allocvec(&c).unwrap_or_default());
        h.finalize().into()
    }

    /// Builds and signs this node's verdict from a finished run.
    pub fn produce(
        spec: &RoundSpec,
        layout: &Layout,
        identity: &NodeIdentity,
        inputs_digest: [u8; 32],
        attempt: u32,
        outcome: &Outcome,
    ) -> Self {
        let v = &outcome.verdicts;
        let covered = v.passed.iter().all(|p| *p);
        let failed = if layout.reveal_failures {
            layout
                .parties
                .iter()
                .zip(&v.passed)
                .filter(|(_, ok)| !**ok)
                .map(|(p, _)| spec.parties[*p].name.clone())
                .collect()
        } else {
            Vec::new()
        };
        let volumes = layout
            .assets
            .iter()
            .enumerate()
            .filter(|_| layout.efficiency)
            .map(|(a, asset)| AssetVolume {
                asset: asset.clone(),
                net: v.sums.get(2 * a).copied().flatten().map(|s| s / 2),
                gross: v.sums.get(2 * a + 1).copied().flatten().map(|s| s / 2),
            })
            .collect();
        let mut out = Self {
            round: spec.id,
            spec_digest: spec.digest(),
            inputs_digest,
            node: identity.node_id(),
            attempt,
            covered,
            failed,
            volumes,
            signature: Vec::new(),
        };
        out.signature = identity.sign(&out.digest()).to_bytes().to_vec();
        out
    }

    /// Checks the signature, the signer's membership and the round.
    pub fn check(&self, spec: &RoundSpec) -> Result<(), ProtocolError> {
        if spec.committee.get(&self.node).is_none() {
            return Err(ProtocolError::UnknownSender(self.node));
        }
        if self.round != spec.id || self.spec_digest != spec.digest() {
            return Err(ProtocolError::WrongContext(
                "a limit verdict of another round",
            ));
        }
        let sig = ed25519_dalek::Signature::from_slice(&self.signature)
            .map_err(|_| ProtocolError::BadSignature { claimed: self.node })?;
        crate::identity::verify(&self.node, &self.digest(), &sig)
    }

    /// The statement itself (everything but who signed it), for comparing nodes.
    pub fn statement(&self) -> (bool, &[String], &[AssetVolume], [u8; 32]) {
        (
            self.covered,
            &self.failed,
            &self.volumes,
            self.inputs_digest,
        )
    }
}

/// A node's shares of one party's bits, sealed to the party, signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitBits {
    /// Round.
    pub round: RoundId,
    /// Round definition digest.
    pub spec_digest: [u8; 32],
    /// Inputs digest.
    pub inputs_digest: [u8; 32],
    /// The node.
    pub node: NodeId,
    /// Party index.
    pub party: u32,
    /// Run attempt (a desk opens bits of one attempt only).
    pub attempt: u32,
    /// The shares, sealed to the party's `seal_key`.
    pub sealed: SealedBox,
    /// Ed25519 signature by `node` over [`LimitBits::digest`].
    pub signature: Vec<u8>,
}

fn bits_aad(
    round: &RoundId,
    inputs: &[u8; 32],
    node: &NodeId,
    party: u32,
    attempt: u32,
) -> Vec<u8> {
    let mut a = b"quorate/netting/limit-bits-box/v1\0".to_vec();
    a.extend_from_slice(&round.0);
    a.extend_from_slice(inputs);
    a.extend_from_slice(node.as_bytes());
    a.extend_from_slice(&party.to_be_bytes());
    a.extend_from_slice(&attempt.to_be_bytes());
    a
}

impl LimitBits {
    /// What the node signs.
    pub fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"quorate/netting/limit-bits/v1\0");
        h.update(self.round.0);
        h.update(self.spec_digest);
        h.update(self.inputs_digest);
        h.update(self.node.as_bytes());
        h.update(self.party.to_be_bytes());
        h.update(self.attempt.to_be_bytes());
        h.update(box_digest(&self.node, &self.sealed));
        h.finalize().into()
    }

    /// Seals and signs this node's shares of every participant's bits (the caller
    /// keeps them: a repeated delivery re-sends the same messages).
    ///
    /// # Security
    /// The shares leave only sealed to their owner; `rng` must be cryptographically
    /// secure (fresh sealing randomness for every attempt's different shares).
    pub fn produce(
        spec: &RoundSpec,
        layout: &Layout,
        identity: &NodeIdentity,
        inputs_digest: [u8; 32],
        attempt: u32,
        outcome: &Outcome,
        rng: &mut impl rand_core::CryptoRngCore,
    ) -> Result<Vec<Self>, ProtocolError> {
        let node = identity.node_id();
        let a = layout.assets.len();
        let mut out = Vec::with_capacity(layout.parties.len());
        for (i, &p) in layout.parties.iter().enumerate() {
            let mut plain = zeroize::Zeroizing::new(Vec::with_capacity(32 * a));
            for x in 0..a {
                let s = outcome.bits.get(layout.check_index(i, x)).ok_or(
                    ProtocolError::InvalidState("outcome shorter than its layout"),
                )?;
                plain.extend_from_slice(&s.to_bytes());
            }
            let aad = bits_aad(&spec.id, &inputs_digest, &node, p as u32, attempt);
            let mut msg = Self {
                round: spec.id,
                spec_digest: spec.digest(),
                inputs_digest,
                node,
                party: p as u32,
                attempt,
                sealed: seal::seal(&mut *rng, &spec.parties[p].seal_key, &aad, &plain)?,
                signature: Vec::new(),
            };
            msg.signature = identity.sign(&msg.digest()).to_bytes().to_vec();
            out.push(msg);
        }
        Ok(out)
    }
}

/// One asset's outcome for a party.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnBit {
    /// Asset.
    pub asset: String,
    /// `Some(true)`: `net + collateral + limit ≥ 0`; `Some(false)`: not covered;
    /// `None`: the value was outside the comparison's range (an input out of bounds).
    pub covered: Option<bool>,
}

/// A party opens its bits from the nodes' [`LimitBits`]: every message must be
/// signed by a distinct committee member for this round, party and inputs; at
/// least `2t − 1` are needed so that a node lying about its share is detected
/// (`t − 1` colluding nodes cannot move the value without leaving the polynomial).
///
/// # Security
/// Opens boxes with the party's sealing secret.
pub fn open_bits(
    spec: &RoundSpec,
    party: usize,
    seal_secret: &x25519_dalek::StaticSecret,
    inputs_digest: &[u8; 32],
    bits: &[LimitBits],
) -> Result<Vec<OwnBit>, ProtocolError> {
    let assets = spec.assets();
    let t = usize::from(spec.threshold);
    let members = spec.committee.members();
    let mut cols: Vec<(F, Vec<F>)> = Vec::new();
    let mut seen = Vec::new();
    // Every node's bits must come from one attempt: the one most messages are of
    // (a node signing another attempt number cannot shut the others out).
    // Only messages validly signed by a committee member for this round, party and
    // inputs count, one per (node, attempt); forged copies cannot sway the choice.
    let spec_digest = spec.digest();
    let mut valid: Vec<&LimitBits> = Vec::new();
    for b in bits {
        let ok = members.iter().any(|m| m.node == b.node)
            && b.round == spec.id
            && b.spec_digest == spec_digest
            && b.party as usize == party
            && &b.inputs_digest == inputs_digest
            && !valid
                .iter()
                .any(|v| v.node == b.node && v.attempt == b.attempt)
            && ed25519_dalek::Signature::from_slice(&b.signature)
                .is_ok_and(|sig| crate::identity::verify(&b.node, &b.digest(), &sig).is_ok());
        if ok {
            valid.push(b);
        }
    }
    let attempt = valid
        .iter()
        .map(|b| b.attempt)
        .max_by_key(|a| (valid.iter().filter(|b| b.attempt == *a).count(), *a))
        .unwrap_or(0);
    for b in valid.into_iter().filter(|b| b.attempt == attempt) {
        let Some(m) = members.iter().find(|m| m.node == b.node) else {
            continue;
        };
        if seen.contains(&b.node) {
            continue;
        }
        let aad = bits_aad(&spec.id, inputs_digest, &b.node, b.party, b.attempt);
        let plain = seal::open(seal_secret, &aad, &b.sealed).ok_or_else(|| {
            ProtocolError::OpeningFailed {
                reason: "a node's sealed bits do not open".into(),
                culprits: vec![b.node],
            }
        })?;
        if plain.len() != 32 * assets.len() {
            return Err(ProtocolError::OpeningFailed {
                reason: "a node sealed the wrong number of bit shares".into(),
                culprits: vec![b.node],
            });
        }
        let mut v = Vec::with_capacity(assets.len());
        for c in plain.chunks_exact(32) {
            let mut w = [0u8; 32];
            w.copy_from_slice(c);
            v.push(
                F::from_canonical(w).ok_or_else(|| ProtocolError::OpeningFailed {
                    reason: "a node sealed a non-canonical share".into(),
                    culprits: vec![b.node],
                })?,
            );
        }
        seen.push(b.node);
        cols.push((F::from_u64(u64::from(m.index)), v));
    }
    let need = 2 * t - 1;
    if cols.len() < need {
        return Err(ProtocolError::OpeningFailed {
            reason: format!(
                "{} nodes' bits, at least {need} (2t - 1) are needed to detect a lying node",
                cols.len()
            ),
            culprits: Vec::new(),
        });
    }
    let xs: Vec<F> = cols.iter().map(|c| c.0).collect();
    let opener = Opener::new(&xs, t - 1);
    assets
        .iter()
        .enumerate()
        .map(|(a, asset)| {
            let shares: Vec<F> = cols.iter().map(|c| c.1[a]).collect();
            let v = opener
                .open(&shares)
                .map_err(|c| ProtocolError::OpeningFailed {
                    reason: format!(
                        "the nodes' shares of the {asset} bit are not on one polynomial"
                    ),
                    culprits: c.into_iter().map(|i| seen[i]).collect(),
                })?;
            Ok(OwnBit {
                asset: asset.clone(),
                covered: if v == F::ONE {
                    Some(true)
                } else if v == F::ZERO {
                    Some(false)
                } else {
                    None
                },
            })
        })
        .collect()
}
