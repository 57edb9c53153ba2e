//! Party side: Shamir-share every input value over the Ristretto255 scalar field
//! with Pedersen VSS commitments, seal each node's shares to it, sign the bundle.
//!
//! For every value `x_e` the party draws `f_e(z) = x_e + a_{e,1} z + … + a_{e,t−1}
//! z^{t−1}` and a blinding polynomial `g_e(z) = b_{e,0} + … + b_{e,t−1} z^{t−1}`;
//! node `j` (its roster index) receives `(f_e(j), g_e(j))`. Every coefficient pair is
//! committed (`C_{e,k} = a_{e,k}·G + b_{e,k}·H`, with `a_{e,0} = x_e`), so each
//! node's share of each value — and of every linear combination of values — can be
//! checked on its own: `f(j)·G + g(j)·H == Σ_k j^k C_k`. Commitments are computed
//! with constant-time fixed-base tables for `G` and `H` and compressed in one batch
//! (one field inversion for all of them).
//!
//! Two kinds of aggregate commitments, computed from the coefficients (not from the
//! points, so they cost `2t` fixed-base multiplications each):
//! - `M_{a,k}`: the polynomial of the party's multilateral net in asset `a` (the
//!   public output), so the settlement opening is checked against `A·t` points;
//! - `D_{q,k}`: for each counterparty block `q` (the `2·I` values about one
//!   counterparty), `Σ_{e in q} ρ_e f_e` with weights `ρ_e` hashed from the core
//!   digest, which fixes every commitment and every sealed box first.
//!
//! A node checks its shares against `M` and `D` only (`verify`), `(P − 1 + A)·t`
//! points instead of `E·t`; a counterparty that relies on block `q`'s `C`s checks
//! them against `D_q` (`result`).
//!
//! Share box plaintext: for each value in order, `f_e(j)` ‖ `g_e(j)`, 32-byte
//! canonical little-endian scalars (64 bytes per value).

use curve25519_dalek::Scalar;
use ed25519_dalek::{Signer as _, SigningKey};
use rand_core::CryptoRngCore;
use zeroize::Zeroizing;

use super::{
    amount,
    bundle::{box_aad, box_digest, commitments_digest, BundleHeader, InputBundle},
    input::PartyInput,
    pedersen,
    round::RoundSpec,
};
use crate::{error::ProtocolError, seal};

/// The block weights `ρ_e` of a bundle (from its core digest), for every value.
pub(crate) fn block_weights(core: &[u8; 32], count: usize) -> Vec<Scalar> {
    block_weights_range(core, 0..count)
}

/// The block weights `ρ_e` for the values in `range` only.
pub(crate) fn block_weights_range(core: &[u8; 32], range: core::ops::Range<usize>) -> Vec<Scalar> {
    (range.start as u64..range.end as u64)
        .map(|e| pedersen::hash_to_scalar(b"quorate/netting/rho/v1\0", &[core, &e.to_be_bytes()]))
        .collect()
}

/// Builds, seals and signs party `party`'s bundle for `input`.
///
/// # Security
/// Handles the party's secret amounts and sharing polynomials; all are held in
/// zeroizing buffers and dropped before return. `rng` must be cryptographically
/// secure: the polynomial coefficients and blindings hide the amounts.
pub fn deal(
    spec: &RoundSpec,
    party: usize,
    sign_key: &SigningKey,
    input: &PartyInput,
    signed_at: u64,
    rng: &mut impl CryptoRngCore,
) -> Result<InputBundle, ProtocolError> {
    deal_with(
        spec,
        party,
        sign_key,
        input,
        signed_at,
        rng,
        Corrupt::default(),
    )
}

/// Test hook: how a dishonest party deviates while keeping everything signed.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Corrupt {
    /// Add 1 to this committee position's share of value 0.
    pub share_of_node: Option<usize>,
    /// Publish a wrong `C_{e,0}` for this value (everything else consistent).
    pub commitment: Option<usize>,
    /// Share 2^100 (outside i64, ignoring the bounds) as this value.
    pub huge_value: Option<usize>,
}

pub(crate) fn deal_with(
    spec: &RoundSpec,
    party: usize,
    sign_key: &SigningKey,
    input: &PartyInput,
    signed_at: u64,
    rng: &mut impl CryptoRngCore,
    corrupt: Corrupt,
) -> Result<InputBundle, ProtocolError> {
    let info = spec
        .parties
        .get(party)
        .ok_or_else(|| ProtocolError::NettingInput(format!("no party index {party}")))?;
    if sign_key.verifying_key().to_bytes() != info.sign_key {
        return Err(ProtocolError::NettingInput(format!(
            "the signing key is not party {:?}'s key in round {}",
            info.name, spec.id
        )));
    }
    if signed_at > spec.cutoff {
        return Err(ProtocolError::LateBundle {
            party: info.name.clone(),
            signed_at,
            cutoff: spec.cutoff,
        });
    }
    let values = input.to_values(spec, party)?;
    let t = usize::from(spec.threshold);
    let count = values.len();
    // coeffs[e*t + k]: a_{e,0} = x_e, then random; blinds likewise.
    let mut coeffs = Zeroizing::new(Vec::with_capacity(count * t));
    let mut blinds = Zeroizing::new(Vec::with_capacity(count * t));
    for (e, v) in values.iter().enumerate() {
        if corrupt.huge_value == Some(e) {
            coeffs.push(Scalar::from(1u128 << 100));
        } else {
            coeffs.push(amount::to_scalar(*v));
        }
        blinds.push(Scalar::random(&mut *rng));
        for _ in 1..t {
            coeffs.push(Scalar::random(&mut *rng));
            blinds.push(Scalar::random(&mut *rng));
        }
    }
    let mut commitments = pedersen::commit_compressed_batch(&coeffs, &blinds);
    if let Some(e) = corrupt.commitment {
        commitments[e * t] = pedersen::commit(&(coeffs[e * t] + Scalar::ONE), &blinds[e * t])
            .compress()
            .to_bytes();
    }
    let terms = spec.net_terms();
    let n_assets = spec.assets().len();
    let mut nets = Vec::with_capacity(n_assets * t);
    for a in 0..n_assets {
        for k in 0..t {
            let (mut v, mut b) = (Scalar::ZERO, Scalar::ZERO);
            for (e, (asset, c)) in terms.iter().enumerate() {
                if *asset == a {
                    let c = amount::coefficient(*c);
                    v += c * coeffs[e * t + k];
                    b += c * blinds[e * t + k];
                }
            }
            nets.push(pedersen::commit(&v, &b).compress().to_bytes());
        }
    }

    let members = spec.committee.members();
    let mut boxes = Vec::with_capacity(members.len());
    let mut plain = Zeroizing::new(Vec::with_capacity(count * 64));
    for (pos, m) in members.iter().enumerate() {
        let x = Scalar::from(u64::from(m.index));
        plain.clear();
        for e in 0..count {
            let (mut f, g) = eval(&coeffs[e * t..(e + 1) * t], &blinds[e * t..(e + 1) * t], &x);
            if e == 0 && corrupt.share_of_node == Some(pos) {
                f += Scalar::ONE;
            }
            plain.extend_from_slice(f.as_bytes());
            plain.extend_from_slice(g.as_bytes());
        }
        let aad = box_aad(spec, party as u32, &m.node);
        boxes.push(seal::seal(rng, &m.seal_key, &aad, &plain)?);
    }

    let mut header = BundleHeader {
        round: spec.id,
        spec_digest: spec.digest(),
        party: party as u32,
        signed_at,
        commitments_digest: commitments_digest(&commitments),
        commitments,
        nets,
        blocks: Vec::new(),
        box_digests: members
            .iter()
            .zip(&boxes)
            .map(|(m, b)| box_digest(&m.node, b))
            .collect(),
        signature: Vec::new(),
    };
    let rho = block_weights(&header.core_digest(), count);
    for q in 0..spec.block_count() {
        for k in 0..t {
            let (mut v, mut b) = (Scalar::ZERO, Scalar::ZERO);
            for e in spec.block_range(q) {
                v += rho[e] * coeffs[e * t + k];
                b += rho[e] * blinds[e * t + k];
            }
            header
                .blocks
                .push(pedersen::commit(&v, &b).compress().to_bytes());
        }
    }
    header.signature = sign_key.sign(&header.digest()).to_bytes().to_vec();
    Ok(InputBundle { header, boxes })
}

/// Evaluates a value polynomial and its blinding polynomial at `x` (Horner).
fn eval(f: &[Scalar], g: &[Scalar], x: &Scalar) -> (Scalar, Scalar) {
    let mut a = Scalar::ZERO;
    let mut b = Scalar::ZERO;
    for k in (0..f.len()).rev() {
        a = a * x + f[k];
        b = b * x + g[k];
    }
    (a, b)
}
