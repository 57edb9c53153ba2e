//! Scalar and group arithmetic of resharing, over frost-core's public traits only
//! (no `internals` feature: signer builds must not carry it).
//!
//! Indices are FROST identifiers `1..=65535`, the scalars `i`; polynomials are
//! coefficient vectors, lowest degree first.

use frost_core::{
    keys::{
        CoefficientCommitment, SigningShare, VerifiableSecretSharingCommitment, VerifyingShare,
    },
    Field, Group,
};

use crate::error::ProtocolError;

/// A scalar of suite `C`.
pub(crate) type Scalar<C> =
    <<<C as frost_core::Ciphersuite>::Group as Group>::Field as Field>::Scalar;
/// A group element of suite `C`.
pub(crate) type Element<C> = <<C as frost_core::Ciphersuite>::Group as Group>::Element;

type F<C> = <<C as frost_core::Ciphersuite>::Group as Group>::Field;
type G<C> = <C as frost_core::Ciphersuite>::Group;

fn crypto(what: &str) -> ProtocolError {
    ProtocolError::Crypto(format!("reshare arithmetic: {what}"))
}

/// The scalar `i` (double and add over the bits of `index`).
pub(crate) fn index_scalar<C: frost_core::Ciphersuite>(index: u16) -> Scalar<C> {
    let one = F::<C>::one();
    let mut acc = F::<C>::zero();
    for bit in (0..16).rev() {
        acc = acc + acc;
        if index >> bit & 1 == 1 {
            acc = acc + one;
        }
    }
    acc
}

/// Lagrange coefficient of `index` for interpolating at zero over `set` (which
/// contains `index`; all distinct and non-zero).
pub(crate) fn lagrange_at_zero<C: frost_core::Ciphersuite>(
    index: u16,
    set: &[u16],
) -> Result<Scalar<C>, ProtocolError> {
    let xi = index_scalar::<C>(index);
    let mut num = F::<C>::one();
    let mut den = F::<C>::one();
    for &j in set.iter().filter(|j| **j != index) {
        let xj = index_scalar::<C>(j);
        num = num * xj;
        den = den * (xj - xi);
    }
    let inv = F::<C>::invert(&den).map_err(|_| crypto("duplicate index in the dealer set"))?;
    Ok(num * inv)
}

/// `f(x)` for coefficients `coeffs` (Horner).
pub(crate) fn evaluate<C: frost_core::Ciphersuite>(coeffs: &[Scalar<C>], index: u16) -> Scalar<C> {
    let x = index_scalar::<C>(index);
    coeffs
        .iter()
        .rev()
        .fold(F::<C>::zero(), |acc, c| acc * x + *c)
}

/// `Σ_k C_k · x^k`: the public image of `f(x)` under a Feldman commitment.
pub(crate) fn evaluate_commitment<C: frost_core::Ciphersuite>(
    commitment: &[Element<C>],
    index: u16,
) -> Element<C> {
    let x = index_scalar::<C>(index);
    commitment
        .iter()
        .rev()
        .fold(G::<C>::identity(), |acc, c| acc * x + *c)
}

/// The generator times `s`.
pub(crate) fn base_mul<C: frost_core::Ciphersuite>(s: &Scalar<C>) -> Element<C> {
    G::<C>::generator() * *s
}

/// A signing share's scalar.
///
/// # Security
/// Returns a secret scalar; the caller keeps it only as long as it computes with it.
pub(crate) fn share_scalar<C: frost_core::Ciphersuite>(
    share: &SigningShare<C>,
) -> Result<Scalar<C>, ProtocolError> {
    scalar_from_bytes::<C>(&share.serialize())
}

/// A scalar from its canonical encoding.
pub(crate) fn scalar_from_bytes<C: frost_core::Ciphersuite>(
    bytes: &[u8],
) -> Result<Scalar<C>, ProtocolError> {
    let ser = <F<C> as Field>::Serialization::try_from(bytes)
        .map_err(|_| ProtocolError::Malformed("scalar length"))?;
    F::<C>::deserialize(&ser).map_err(|_| ProtocolError::Malformed("scalar is not canonical"))
}

/// The canonical encoding of a scalar.
///
/// # Security
/// The bytes are as secret as the scalar; callers wrap them in `Zeroizing`.
pub(crate) fn scalar_bytes<C: frost_core::Ciphersuite>(s: &Scalar<C>) -> Vec<u8> {
    F::<C>::serialize(s).as_ref().to_vec()
}

/// A signing share holding `s`.
///
/// # Security
/// Copies the secret into a `SigningShare` (which the caller must zeroize or move
/// into a `KeyPackage`, which does).
pub(crate) fn signing_share<C: frost_core::Ciphersuite>(
    s: &Scalar<C>,
) -> Result<SigningShare<C>, ProtocolError> {
    let bytes = zeroize::Zeroizing::new(scalar_bytes::<C>(s));
    SigningShare::deserialize(&bytes).map_err(|_| crypto("signing share encoding"))
}

/// A verifying share's element.
pub(crate) fn verifying_element<C: frost_core::Ciphersuite>(
    share: &VerifyingShare<C>,
) -> Result<Element<C>, ProtocolError> {
    let bytes = share
        .serialize()
        .map_err(|_| crypto("verifying share encoding"))?;
    let ser = <G<C> as Group>::Serialization::try_from(bytes.as_slice())
        .map_err(|_| crypto("verifying share length"))?;
    G::<C>::deserialize(&ser).map_err(|_| crypto("verifying share is not a point"))
}

/// A verifying share holding `e`.
pub(crate) fn verifying_share<C: frost_core::Ciphersuite>(
    e: &Element<C>,
) -> Result<VerifyingShare<C>, ProtocolError> {
    let bytes = G::<C>::serialize(e).map_err(|_| crypto("element is the identity"))?;
    VerifyingShare::deserialize(bytes.as_ref()).map_err(|_| crypto("verifying share encoding"))
}

/// The elements of a Feldman commitment, decoded and validated (canonical, not the
/// identity, in the prime-order group: invariant 8).
pub(crate) fn decode_commitment<C: frost_core::Ciphersuite>(
    coefficients: &[Vec<u8>],
) -> Result<Vec<Element<C>>, ProtocolError> {
    coefficients
        .iter()
        .map(|c| {
            CoefficientCommitment::<C>::deserialize(c)
                .map(|cc| cc.value())
                .map_err(|_| ProtocolError::Malformed("commitment coefficient"))
        })
        .collect()
}

/// Encodes commitment elements (each must be a valid, non-identity element).
pub(crate) fn encode_commitment<C: frost_core::Ciphersuite>(
    elements: &[Element<C>],
) -> Result<Vec<Vec<u8>>, ProtocolError> {
    elements
        .iter()
        .map(|e| {
            G::<C>::serialize(e)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| crypto("commitment coefficient is the identity"))
        })
        .collect()
}

/// The frost-core commitment of summed elements (for `PublicKeyPackage::from_commitment`).
pub(crate) fn vss_commitment<C: frost_core::Ciphersuite>(
    elements: &[Element<C>],
) -> Result<VerifiableSecretSharingCommitment<C>, ProtocolError> {
    VerifiableSecretSharingCommitment::deserialize(encode_commitment::<C>(elements)?)
        .map_err(|_| crypto("group commitment encoding"))
}
