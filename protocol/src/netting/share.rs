//! Party side: Shamir-share every input value over the Ristretto255 scalar field
//! with Pedersen VSS commitments, seal each node's shares to it, sign the bundle.
//!
//! For every value `x_e` the party draws `f_e(z) = x_e + a_{e,1} z + … + a_{e,t−1}
//! z^{t−1}` and a blinding polynomial `g_e(z) = b_{e,0} + … + b_{e,t−1} z^{t−1}`;
//! node `j` (its roster index) receives `(f_e(j), g_e(j))`. Every coefficient pair is
//! committed (`C_{e,k} = a_{e,k}·G + b_{e,k}·H`, with `a_{e,0} = x_e`), so each
//! node's share of each value — and of every linear combination of values — can be
//! checked on its own: `f(j)·G + g(j)·H == Σ_k j^k C_k`. Commitments are computed
//! with constant-time fixed-base tables for `G` and `H`; nodes check all their
//! shares of a bundle with one multiscalar multiplication (see `verify`).
//!
//! Share box plaintext: for each value in order, `f_e(j)` ‖ `g_e(j)`, 32-byte
//! canonical little-endian scalars (64 bytes per value).

use curve25519_dalek::Scalar;
use ed25519_dalek::{Signer as _, SigningKey};
use rand_core::CryptoRngCore;
use zeroize::Zeroizing;

use super::{
    amount,
    bundle::{box_aad, box_digest, BundleHeader, InputBundle},
    input::PartyInput,
    pedersen,
    round::RoundSpec,
};
use crate::{error::ProtocolError, seal};

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
    for v in values.iter() {
        coeffs.push(amount::to_scalar(*v));
        blinds.push(Scalar::random(&mut *rng));
        for _ in 1..t {
            coeffs.push(Scalar::random(&mut *rng));
            blinds.push(Scalar::random(&mut *rng));
        }
    }
    let commitments: Vec<[u8; 32]> = coeffs
        .iter()
        .zip(blinds.iter())
        .map(|(a, b)| pedersen::commit(a, b).compress().to_bytes())
        .collect();

    let members = spec.committee.members();
    let mut boxes = Vec::with_capacity(members.len());
    let mut plain = Zeroizing::new(Vec::with_capacity(count * 64));
    for m in members {
        let x = Scalar::from(u64::from(m.index));
        plain.clear();
        for e in 0..count {
            let (f, g) = eval(&coeffs[e * t..(e + 1) * t], &blinds[e * t..(e + 1) * t], &x);
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
        commitments,
        box_digests: members
            .iter()
            .zip(&boxes)
            .map(|(m, b)| box_digest(&m.node, b))
            .collect(),
        signature: Vec::new(),
    };
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
