//! Node side: open this node's share box and check every share against the party's
//! commitments with one random-linear-combination check.
//!
//! Node `j` holds `(s_e, r_e) = (f_e(j), g_e(j))`. With weights `ρ_e` derived by
//! hashing the bundle digest (which fixes every commitment and sealed box) and the
//! node's id, it checks
//!
//! ```text
//! (Σ_e ρ_e s_e)·G + (Σ_e ρ_e r_e)·H  ==  Σ_e Σ_k ρ_e j^k C_{e,k}
//! ```
//!
//! as one multiscalar multiplication over the bundle's `E·t` commitments instead of
//! `E` separate checks. If any share is off its committed polynomial the check
//! passes with probability at most 1/ℓ (the party fixed everything before `ρ`).

use curve25519_dalek::{RistrettoPoint, Scalar};
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::{
    bundle::{box_aad, box_digest, BundleHeader},
    pedersen,
    round::RoundSpec,
};
use crate::{error::ProtocolError, identity::NodeIdentity, seal::SealedBox};

/// Weights `ρ_e` for node `node`'s check of the bundle with `digest`.
fn weights(digest: &[u8; 32], node: &crate::ids::NodeId, count: usize) -> Vec<Scalar> {
    use sha2::{Digest, Sha512};
    (0..count as u64)
        .map(|e| {
            let mut h = Sha512::new();
            h.update(b"quorate/netting/share-check/v1\0");
            h.update(digest);
            h.update(node.as_bytes());
            h.update(e.to_be_bytes());
            Scalar::from_bytes_mod_order_wide(&h.finalize().into())
        })
        .collect()
}

/// One node's verified shares of one party's values.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct ShareVector {
    /// `f_e(j)` per value.
    pub values: Vec<Scalar>,
    /// `g_e(j)` per value.
    pub blinds: Vec<Scalar>,
}

impl core::fmt::Debug for ShareVector {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "ShareVector({} values, <secret>)", self.values.len())
    }
}

/// A bundle a node accepted: the party's public commitments and the node's shares.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// Party index.
    pub party: u32,
    /// [`BundleHeader::digest`].
    pub digest: [u8; 32],
    /// Decompressed commitments `C_{e,k}` (index `e·t + k`).
    pub commitments: Vec<RistrettoPoint>,
    /// This node's shares.
    pub shares: ShareVector,
}

/// Decompresses a header's value commitments, naming the party on a bad point.
pub fn commitments(
    spec: &RoundSpec,
    header: &BundleHeader,
) -> Result<Vec<RistrettoPoint>, ProtocolError> {
    header
        .commitments
        .iter()
        .enumerate()
        .map(|(e, c)| {
            pedersen::decompress(c).ok_or_else(|| ProtocolError::BadBundle {
                party: party_name(spec, header.party),
                reason: format!("commitment {e} is not a valid Ristretto255 point"),
            })
        })
        .collect()
}

pub(crate) fn party_name(spec: &RoundSpec, party: u32) -> String {
    spec.parties
        .get(party as usize)
        .map(|p| p.name.clone())
        .unwrap_or_else(|| format!("#{party}"))
}

/// Checks a bundle header and this node's box, and returns the verified shares.
/// Every failure the party caused is [`ProtocolError::BadBundle`] naming it.
///
/// # Security
/// Opens the node's sealed shares of the party's secret values; they are returned
/// in a zeroizing [`ShareVector`] and must not be logged or written in plaintext.
pub fn accept(
    spec: &RoundSpec,
    identity: &NodeIdentity,
    header: &BundleHeader,
    sealed: &SealedBox,
) -> Result<Accepted, ProtocolError> {
    header.check(spec)?;
    let me = identity.node_id();
    let (position, member) = spec
        .committee
        .members()
        .iter()
        .enumerate()
        .find(|(_, m)| m.node == me)
        .ok_or_else(|| {
            ProtocolError::NettingInput(format!(
                "this node is not in round {}'s committee",
                spec.id
            ))
        })?;
    let fault = |reason: String| ProtocolError::BadBundle {
        party: party_name(spec, header.party),
        reason,
    };
    if header.box_digests[position] != box_digest(&me, sealed) {
        return Err(fault(
            "this node's share box does not match the signed digest".into(),
        ));
    }
    let plain = identity
        .open_sealed(&box_aad(spec, header.party, &me), sealed)
        .ok_or_else(|| fault("this node's share box does not open".into()))?;
    let count = spec.values_per_party();
    if plain.len() != count * 64 {
        return Err(fault(format!(
            "share box holds {} bytes, expected {}",
            plain.len(),
            count * 64
        )));
    }
    let mut shares = ShareVector {
        values: Vec::with_capacity(count),
        blinds: Vec::with_capacity(count),
    };
    for (e, chunk) in plain.chunks_exact(64).enumerate() {
        let mut a = [0u8; 32];
        let mut b = [0u8; 32];
        a.copy_from_slice(&chunk[..32]);
        b.copy_from_slice(&chunk[32..]);
        let (Some(s), Some(r)) = (
            Option::<Scalar>::from(Scalar::from_canonical_bytes(a)),
            Option::<Scalar>::from(Scalar::from_canonical_bytes(b)),
        ) else {
            a.zeroize();
            return Err(fault(format!("share {e} is not a canonical scalar")));
        };
        a.zeroize();
        shares.values.push(s);
        shares.blinds.push(r);
    }
    let points = commitments(spec, header)?;
    let t = usize::from(spec.threshold);
    let rho = weights(&header.digest(), &me, count);
    let mut sv = Scalar::ZERO;
    let mut sr = Scalar::ZERO;
    for ((r, v), b) in rho.iter().zip(&shares.values).zip(&shares.blinds) {
        sv += r * v;
        sr += r * b;
    }
    let x = Scalar::from(u64::from(member.index));
    let mut powers = Vec::with_capacity(t);
    let mut xp = Scalar::ONE;
    for _ in 0..t {
        powers.push(xp);
        xp *= x;
    }
    let ok = pedersen::vartime_is_zero(
        &sv,
        &sr,
        rho.iter()
            .flat_map(|r| powers.iter().map(move |p| -(r * p))),
        points.iter().copied(),
    );
    if !ok {
        return Err(fault(
            "this node's shares are inconsistent with the party's commitments".into(),
        ));
    }
    Ok(Accepted {
        party: header.party,
        digest: header.digest(),
        commitments: points,
        shares,
    })
}
