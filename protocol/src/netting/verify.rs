//! Node side: open this node's share box and check every share against the party's
//! aggregate commitments with one multiscalar multiplication.
//!
//! Node `j` holds `(s_e, r_e) = (f_e(j), g_e(j))` for every value. It checks, for
//! each counterparty block `q` and each asset `a`,
//!
//! ```text
//! (Σ_{e in q} ρ_e s_e)·G + (Σ_{e in q} ρ_e r_e)·H == Σ_k j^k D_{q,k}
//! (Σ_{e in a} λ_e s_e)·G + (Σ_{e in a} λ_e r_e)·H == Σ_k j^k M_{a,k}
//! ```
//!
//! (`λ_e` the value's coefficient in the net), all folded into one check with
//! weights hashed from the bundle digest and the node id: `(P − 1 + A)·t` points,
//! none of the `E·t` per-value commitments. Because `ρ` is derived after every
//! commitment and sealed box is fixed, shares off their polynomial pass with
//! probability at most about 1/ℓ: when the honest nodes (at least `t`) accept, every
//! value has one sharing of degree `t − 1`, and the net commitments `M` are the
//! commitments of the sharing the nodes will open.

use curve25519_dalek::{RistrettoPoint, Scalar};
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::{
    amount,
    bundle::{box_aad, box_digest, BundleHeader},
    pedersen,
    round::RoundSpec,
    share::block_weights,
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

/// A bundle a node accepted: the party's net commitments and the node's shares.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// Party index.
    pub party: u32,
    /// [`BundleHeader::digest`].
    pub digest: [u8; 32],
    /// Decompressed net commitments `M_{a,k}` (index `a·t + k`).
    pub nets: Vec<RistrettoPoint>,
    /// This node's shares.
    pub shares: ShareVector,
}

pub(crate) fn party_name(spec: &RoundSpec, party: u32) -> String {
    spec.parties
        .get(party as usize)
        .map(|p| p.name.clone())
        .unwrap_or_else(|| format!("#{party}"))
}

fn points(
    spec: &RoundSpec,
    party: u32,
    what: &str,
    list: &[[u8; 32]],
) -> Result<Vec<RistrettoPoint>, ProtocolError> {
    list.iter()
        .enumerate()
        .map(|(i, c)| {
            pedersen::decompress(c).ok_or_else(|| ProtocolError::BadBundle {
                party: party_name(spec, party),
                reason: format!("{what} commitment {i} is not a valid Ristretto255 point"),
            })
        })
        .collect()
}

/// Decompresses a full header's per-value commitments `C_{e,k}`.
pub fn commitments(
    spec: &RoundSpec,
    header: &BundleHeader,
) -> Result<Vec<RistrettoPoint>, ProtocolError> {
    points(spec, header.party, "value", &header.commitments)
}

/// Decompresses a header's net commitments `M_{a,k}`.
pub fn net_points(
    spec: &RoundSpec,
    header: &BundleHeader,
) -> Result<Vec<RistrettoPoint>, ProtocolError> {
    points(spec, header.party, "net", &header.nets)
}

/// Decompresses a header's block commitments `D_{q,k}`.
pub fn block_points(
    spec: &RoundSpec,
    header: &BundleHeader,
) -> Result<Vec<RistrettoPoint>, ProtocolError> {
    points(spec, header.party, "block", &header.blocks)
}

fn fold_weights(digest: &[u8; 32], node: &crate::ids::NodeId, count: usize) -> Vec<Scalar> {
    (0..count as u64)
        .map(|i| {
            pedersen::hash_to_scalar(
                b"quorate/netting/share-check/v1\0",
                &[digest, node.as_bytes(), &i.to_be_bytes()],
            )
        })
        .collect()
}

/// Checks a bundle header (the nodes' copy is enough) and this node's box, and
/// returns the verified shares. Every failure the party caused is
/// [`ProtocolError::BadBundle`] naming it.
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
    let nets = net_points(spec, header)?;
    let blocks = block_points(spec, header)?;
    let t = usize::from(spec.threshold);
    let slots = spec.block_count();
    let n_assets = nets.len() / t;
    let digest = header.digest();
    let fold = fold_weights(&digest, &me, slots + n_assets);
    let (sigma, tau) = fold.split_at(slots);
    let rho = block_weights(&header.core_digest(), count);
    let terms = spec.net_terms();
    let (mut sv, mut sr) = (Scalar::ZERO, Scalar::ZERO);
    for e in 0..count {
        let (asset, c) = terms[e];
        let w = sigma[spec.block_of(e)] * rho[e] + tau[asset] * amount::coefficient(c);
        sv += w * shares.values[e];
        sr += w * shares.blinds[e];
    }
    let x = Scalar::from(u64::from(member.index));
    let mut powers = Vec::with_capacity(t);
    let mut xp = Scalar::ONE;
    for _ in 0..t {
        powers.push(xp);
        xp *= x;
    }
    let scalars = sigma
        .iter()
        .chain(tau)
        .flat_map(|w| powers.iter().map(move |p| -(w * p)));
    let ok = pedersen::vartime_is_zero(&sv, &sr, scalars, blocks.iter().chain(&nets).copied());
    if !ok {
        return Err(fault(
            "this node's shares are inconsistent with the party's commitments".into(),
        ));
    }
    Ok(Accepted {
        party: header.party,
        digest,
        nets,
        shares,
    })
}

/// Checks that party `owner`'s block about `counterparty` — the values a
/// counterparty relies on in reconciliation — matches its signed block aggregate:
/// `Σ_{e in block} ρ_e C_{e,k} == D_{block,k}` for every `k`. Without this a party
/// could give nodes shares consistent with `D` but not with `C`, and honest nodes
/// would look like liars. Names the owner when it fails.
pub fn check_block(
    spec: &RoundSpec,
    header: &BundleHeader,
    values: &[RistrettoPoint],
    counterparty: usize,
) -> Result<(), ProtocolError> {
    use curve25519_dalek::traits::VartimeMultiscalarMul;
    let owner = header.party as usize;
    let t = usize::from(spec.threshold);
    let slot = if counterparty < owner {
        counterparty
    } else {
        counterparty - 1
    };
    let bl = spec.block_len();
    let range = slot * bl..(slot + 1) * bl;
    let rho = super::share::block_weights_range(&header.core_digest(), range.clone());
    let blocks = block_points(spec, header)?;
    if values.len() < range.end * t {
        return Err(ProtocolError::BadBundle {
            party: party_name(spec, header.party),
            reason: "header without its per-value commitments".into(),
        });
    }
    for k in 0..t {
        let sum = RistrettoPoint::vartime_multiscalar_mul(
            rho.iter(),
            range.clone().map(|e| values[e * t + k]),
        );
        if sum != blocks[slot * t + k] {
            return Err(ProtocolError::BadBundle {
                party: party_name(spec, header.party),
                reason: format!(
                    "its commitments about {} do not match its signed block aggregate",
                    spec.parties[counterparty].name
                ),
            });
        }
    }
    Ok(())
}

/// Checks, for party `party`, every participating counterparty's block about it
/// ([`check_block`]) in one batched multiscalar multiplication; only when the batch
/// fails is each block checked on its own to name the inconsistent ones. Returns
/// `(counterparty index, reason)` for every counterparty that cannot be relied on
/// (missing header or commitments included).
pub fn check_blocks(
    spec: &RoundSpec,
    headers: &[Option<&BundleHeader>],
    commitments: &[Option<&[RistrettoPoint]>],
    participants: &[bool],
    party: usize,
) -> Vec<(usize, String)> {
    use curve25519_dalek::traits::VartimeMultiscalarMul;
    let t = usize::from(spec.threshold);
    let bl = spec.block_len();
    let mut refused = Vec::new();
    let mut usable = Vec::new();
    for q in 0..spec.parties.len() {
        if q == party || !participants.get(q).copied().unwrap_or(false) {
            continue;
        }
        match (
            headers.get(q).copied().flatten(),
            commitments.get(q).copied().flatten(),
        ) {
            (Some(h), Some(c)) if c.len() == spec.values_per_party() * t => usable.push((q, h, c)),
            _ => refused.push((q, "no header with per-value commitments".to_owned())),
        }
    }
    // One random combination of every (block, k) equation Σ ρ_e C_{e,k} − D_k = 0.
    let mut scalars = Vec::new();
    let mut points = Vec::new();
    let mut blocks_ok = true;
    for (q, h, c) in &usable {
        let slot = if party < *q { party } else { party - 1 };
        let range = slot * bl..(slot + 1) * bl;
        let rho = super::share::block_weights_range(&h.core_digest(), range.clone());
        let Ok(d) = block_points(spec, h) else {
            blocks_ok = false;
            continue;
        };
        let digest = h.digest();
        for k in 0..t {
            let w = pedersen::hash_to_scalar(
                b"quorate/netting/block-batch/v1\0",
                &[
                    &digest,
                    &(*q as u64).to_be_bytes(),
                    &(k as u64).to_be_bytes(),
                    &(party as u64).to_be_bytes(),
                ],
            );
            for (r, e) in rho.iter().zip(range.clone()) {
                scalars.push(w * r);
                points.push(c[e * t + k]);
            }
            scalars.push(-w);
            points.push(d[slot * t + k]);
        }
    }
    let batch_ok = blocks_ok
        && RistrettoPoint::vartime_multiscalar_mul(&scalars, &points)
            == <RistrettoPoint as curve25519_dalek::traits::Identity>::identity();
    if !batch_ok {
        for (q, h, c) in &usable {
            if let Err(e) = check_block(spec, h, c, party) {
                refused.push((*q, e.to_string()));
            }
        }
    }
    refused.sort();
    refused
}
