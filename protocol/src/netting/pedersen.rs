//! Pedersen commitments over Ristretto255: `C = v·G + b·H`.
//!
//! `G` is the Ristretto basepoint; `H` is hashed to the group from a fixed string
//! (`RistrettoPoint::from_uniform_bytes(SHA-512("quorate/netting/pedersen-h/v1"))`),
//! so nobody knows `log_G H` and a commitment binds its value. Commitments are
//! computed with precomputed constant-time fixed-base tables for both generators;
//! verification is one variable-time multiscalar multiplication per batch.

use std::sync::OnceLock;

use curve25519_dalek::{
    constants::RISTRETTO_BASEPOINT_TABLE,
    ristretto::{CompressedRistretto, RistrettoBasepointTable},
    traits::{Identity, VartimeMultiscalarMul},
    RistrettoPoint, Scalar,
};
use sha2::{Digest, Sha512};

/// Domain string hashed to the second generator.
pub const H_DOMAIN: &[u8] = b"quorate/netting/pedersen-h/v1";

struct Tables {
    h: RistrettoPoint,
    h_table: RistrettoBasepointTable,
}

fn tables() -> &'static Tables {
    static T: OnceLock<Tables> = OnceLock::new();
    T.get_or_init(|| {
        let wide: [u8; 64] = Sha512::digest(H_DOMAIN).into();
        let h = RistrettoPoint::from_uniform_bytes(&wide);
        Tables {
            h,
            h_table: RistrettoBasepointTable::create(&h),
        }
    })
}

/// `SHA-512(domain ‖ parts…) mod ℓ`: a scalar derived from public data (the
/// Fiat–Shamir and batching weights of this module's checks).
pub(crate) fn hash_to_scalar(domain: &[u8], parts: &[&[u8]]) -> Scalar {
    let mut h = Sha512::new();
    h.update(domain);
    for p in parts {
        h.update(p);
    }
    Scalar::from_bytes_mod_order_wide(&h.finalize().into())
}

/// The second generator `H`.
pub fn h() -> RistrettoPoint {
    tables().h
}

/// `v·G + b·H`, constant time in `v` and `b`.
///
/// # Security
/// `v` and `b` are secret (a party's amount and blinding); both multiplications use
/// constant-time fixed-base tables.
pub fn commit(v: &Scalar, b: &Scalar) -> RistrettoPoint {
    RISTRETTO_BASEPOINT_TABLE * v + &tables().h_table * b
}

/// Commits to many `(v, b)` pairs and compresses them with one batched inversion:
/// each is computed as `2·((v/2)·G + (b/2)·H)` so `double_and_compress_batch`
/// applies.
///
/// # Security
/// Same as [`commit`]: constant time in the secret scalars.
pub fn commit_compressed_batch(values: &[Scalar], blinds: &[Scalar]) -> Vec<[u8; 32]> {
    let half = Scalar::from(2u64).invert();
    let points: Vec<RistrettoPoint> = values
        .iter()
        .zip(blinds)
        .map(|(v, b)| commit(&(v * half), &(b * half)))
        .collect();
    RistrettoPoint::double_and_compress_batch(&points)
        .into_iter()
        .map(|c| c.to_bytes())
        .collect()
}

/// Checks `Σ scalars[i]·points[i] + g·G + h·H == 0` in variable time (public data).
pub fn vartime_is_zero(
    g: &Scalar,
    h_coeff: &Scalar,
    scalars: impl IntoIterator<Item = Scalar>,
    points: impl IntoIterator<Item = RistrettoPoint>,
) -> bool {
    // Collected: dalek's multiscalar multiplication checks exact iterator lengths.
    let s: Vec<Scalar> = scalars.into_iter().chain([*g, *h_coeff]).collect();
    let p: Vec<RistrettoPoint> = points
        .into_iter()
        .chain([curve25519_dalek::constants::RISTRETTO_BASEPOINT_POINT, h()])
        .collect();
    if s.len() != p.len() {
        return false;
    }
    let sum = RistrettoPoint::vartime_multiscalar_mul(s, p);
    sum == RistrettoPoint::identity()
}

/// Decompresses a received commitment, refusing non-canonical encodings and the
/// identity (invariant 8).
pub fn decompress(bytes: &[u8; 32]) -> Option<RistrettoPoint> {
    let p = CompressedRistretto(*bytes).decompress()?;
    (p != RistrettoPoint::identity()).then_some(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commitments_are_homomorphic_and_checkable() {
        let (a, b) = (Scalar::from(7u64), Scalar::from(11u64));
        let (ra, rb) = (Scalar::from(3u64), Scalar::from(5u64));
        let sum = commit(&a, &ra) + commit(&b, &rb);
        assert_eq!(sum, commit(&(a + b), &(ra + rb)));
        assert!(vartime_is_zero(&(a + b), &(ra + rb), [-Scalar::ONE], [sum]));
        assert!(!vartime_is_zero(&(a + b), &ra, [-Scalar::ONE], [sum]));
    }

    #[test]
    fn batch_compression_matches_one_by_one() {
        let v = [Scalar::from(3u64), -Scalar::from(9u64)];
        let b = [Scalar::from(5u64), Scalar::from(8u64)];
        let batch = commit_compressed_batch(&v, &b);
        for i in 0..2 {
            assert_eq!(batch[i], commit(&v[i], &b[i]).compress().to_bytes());
        }
    }

    #[test]
    fn decompress_refuses_identity_and_garbage() {
        assert!(decompress(&[0u8; 32]).is_none());
        assert!(decompress(&[0xff; 32]).is_none());
        let p = commit(&Scalar::ONE, &Scalar::ONE).compress().to_bytes();
        assert!(decompress(&p).is_some());
    }
}
