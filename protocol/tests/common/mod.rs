//! Shared test helpers: seeded RNGs, identity sets and independent verifiers.
#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;

use quorate_protocol::{local, Ciphersuite, KeyShare, NodeIdentity, SignatureBytes};
use rand_chacha::{rand_core::SeedableRng, ChaCha20Rng};

pub fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

pub fn setup(
    n: usize,
    t: u16,
    suite: Ciphersuite,
    seed: u64,
) -> (Vec<Arc<NodeIdentity>>, Vec<KeyShare>, ChaCha20Rng) {
    let mut rng = rng(seed);
    let ids = local::identities(n, &mut rng);
    let shares = local::run_dkg(&ids, suite, t, &mut rng).expect("dkg");
    (ids, shares, rng)
}

/// Verifies with an implementation independent of frost-core where one exists:
/// libsecp256k1 (BIP340) for secp256k1-tr, ed25519-dalek strict for Ed25519; the
/// RFC 9591 secp256k1 suite has no other implementation, so frost-core's verifier
/// checks it.
pub fn verify_independently(sig: &SignatureBytes, message: &[u8]) -> Result<(), String> {
    match sig.suite {
        Ciphersuite::Secp256k1Tr => {
            use secp256k1::{schnorr, Message, XOnlyPublicKey, SECP256K1};
            assert_eq!(sig.verifying_key.len(), 33, "SEC1 compressed key");
            let key =
                XOnlyPublicKey::from_slice(&sig.verifying_key[1..]).map_err(|e| e.to_string())?;
            let s = schnorr::Signature::from_slice(&sig.signature).map_err(|e| e.to_string())?;
            let msg = Message::from_digest_slice(message).map_err(|e| e.to_string())?;
            SECP256K1
                .verify_schnorr(&s, &msg, &key)
                .map_err(|e| e.to_string())
        }
        Ciphersuite::Ed25519 => {
            let key_bytes: [u8; 32] = sig
                .verifying_key
                .as_slice()
                .try_into()
                .map_err(|_| "key length")?;
            let key =
                ed25519_dalek::VerifyingKey::from_bytes(&key_bytes).map_err(|e| e.to_string())?;
            let s =
                ed25519_dalek::Signature::from_slice(&sig.signature).map_err(|e| e.to_string())?;
            key.verify_strict(message, &s).map_err(|e| e.to_string())
        }
        Ciphersuite::Secp256k1 => {
            let key = frost_secp256k1::VerifyingKey::deserialize(&sig.verifying_key)
                .map_err(|e| e.to_string())?;
            let s = frost_secp256k1::Signature::deserialize(&sig.signature)
                .map_err(|e| e.to_string())?;
            key.verify(message, &s).map_err(|e| e.to_string())
        }
    }
}

/// A 32-byte message (BIP340 via libsecp256k1 0.29 signs 32-byte digests).
pub fn message(tag: &str) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(tag.as_bytes()).to_vec()
}

/// BIP341 taproot tweak computed from the spec with libsecp256k1 point arithmetic
/// (no frost code): `t = hash_TapTweak(P ‖ merkle_root)` (just `P` without a
/// script tree), where `hash_TapTweak(x) = SHA256(SHA256("TapTweak") ‖
/// SHA256("TapTweak") ‖ x)`; fails if `t ≥ n`; `Q = lift_x(P) + t·G` with `lift_x`
/// the even-Y point. Returns (`t`, x-only `Q`).
pub fn bip341_tweak(
    internal_x_only: &[u8; 32],
    merkle_root: Option<&[u8; 32]>,
) -> Result<([u8; 32], [u8; 32]), String> {
    use secp256k1::{Parity, PublicKey, SecretKey, XOnlyPublicKey, SECP256K1};
    use sha2::{Digest, Sha256};
    let tag = Sha256::digest(b"TapTweak");
    let mut h = Sha256::new();
    h.update(tag);
    h.update(tag);
    h.update(internal_x_only);
    if let Some(root) = merkle_root {
        h.update(root);
    }
    let t: [u8; 32] = h.finalize().into();
    let t_scalar = SecretKey::from_slice(&t).map_err(|e| format!("tweak ≥ n: {e}"))?;
    let p = XOnlyPublicKey::from_slice(internal_x_only).map_err(|e| e.to_string())?;
    let p_even = PublicKey::from_x_only_public_key(p, Parity::Even);
    let q = p_even
        .combine(&PublicKey::from_secret_key(SECP256K1, &t_scalar))
        .map_err(|e| e.to_string())?;
    Ok((t, q.x_only_public_key().0.serialize()))
}

/// BIP340 verification by libsecp256k1 under an x-only key given by the caller.
pub fn verify_bip340_under(
    x_only_key: &[u8; 32],
    message: &[u8],
    signature: &[u8],
) -> Result<(), String> {
    use secp256k1::{schnorr, Message, XOnlyPublicKey, SECP256K1};
    let key = XOnlyPublicKey::from_slice(x_only_key).map_err(|e| e.to_string())?;
    let s = schnorr::Signature::from_slice(signature).map_err(|e| e.to_string())?;
    let msg = Message::from_digest_slice(message).map_err(|e| e.to_string())?;
    SECP256K1
        .verify_schnorr(&s, &msg, &key)
        .map_err(|e| e.to_string())
}
