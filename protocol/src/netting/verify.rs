//! Node side: open this node's share box and check every share against the party's
//! commitments with one random-linear-combination check.
//!
//! Node `j` holds `(s_e, r_e) = (f_e(j), g_e(j))`. With the bundle's weights `ρ_e`
//! it checks
//!
//! ```text
//! (Σ ρ_e s_e)·G + (Σ ρ_e r_e)·H  ==  Σ ρ_e C_e + Σ_{k=1}^{t−1} j^k D_k
//! ```
//!
//! as one multiscalar multiplication over the `E + t − 1` commitments. Because `ρ`
//! is derived after every commitment and sealed box is fixed, a bundle in which any
//! honest node's share of any value is off its committed polynomial passes with
//! probability at most 1/ℓ; when all honest nodes (at least `t`) accept, every
//! value has one well-defined sharing consistent with its commitment `C_e`.

use curve25519_dalek::{RistrettoPoint, Scalar};
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::{
    bundle::{box_aad, box_digest, BundleHeader},
    pedersen,
    round::RoundSpec,
    share::weights,
};
use crate::{error::ProtocolError, identity::NodeIdentity, seal::SealedBox};

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
    /// Decompressed value commitments `C_e`.
    pub commitments: Vec<RistrettoPoint>,
    /// This node's shares.
    pub shares: ShareVector,
}

/// Decompresses a header's value commitments, naming the party on a bad point.
pub fn commitments(spec: &RoundSpec, header: &BundleHeader) -> Result<Vec<RistrettoPoint>, ProtocolError> {
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
            ProtocolError::NettingInput(format!("this node is not in round {}'s committee", spec.id))
        })?;
    let fault = |reason: String| ProtocolError::BadBundle {
        party: party_name(spec, header.party),
        reason,
    };
    if header.box_digests[position] != box_digest(&me, sealed) {
        return Err(fault("this node's share box does not match the signed digest".into()));
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
    let aggregate: Vec<RistrettoPoint> = header
        .aggregate
        .iter()
        .map(|d| pedersen::decompress(d))
        .collect::<Option<_>>()
        .ok_or_else(|| fault("an aggregate commitment is not a valid point".into()))?;
    let rho = weights(&header.core_digest(), count);
    let mut sv = Scalar::ZERO;
    let mut sr = Scalar::ZERO;
    for e in 0..count {
        sv += rho[e] * shares.values[e];
        sr += rho[e] * shares.blinds[e];
    }
    let x = Scalar::from(u64::from(member.index));
    let mut powers = Vec::with_capacity(aggregate.len());
    let mut xp = x;
    for _ in 0..aggregate.len() {
        powers.push(-xp);
        xp *= x;
    }
    let ok = pedersen::vartime_is_zero(
        &sv,
        &sr,
        rho.iter().map(|r| -r).chain(powers),
        points.iter().copied().chain(aggregate),
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
