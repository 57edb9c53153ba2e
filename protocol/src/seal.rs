//! End-to-end sealing of secret payloads to a node's X25519 key (invariant 3).
//!
//! An ephemeral X25519 key agrees a secret with the recipient's static key; HKDF-SHA256
//! over that secret and both public keys gives a one-time ChaCha20-Poly1305 key. The
//! associated data binds the box to its context (suite, key, session, round, sender,
//! recipient), so a box cannot be replayed into another session or redirected.

use chacha20poly1305::{aead::Aead, aead::Payload as AeadPayload, ChaCha20Poly1305, KeyInit};
use hkdf::Hkdf;
use rand_core::CryptoRngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::error::ProtocolError;

const SEAL_INFO: &[u8] = b"quorate/seal/v1";

/// A payload sealed to one recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedBox {
    /// The sender's ephemeral X25519 public key.
    pub ephemeral: [u8; 32],
    /// ChaCha20-Poly1305 ciphertext with its 16-byte tag.
    pub ciphertext: Vec<u8>,
}

fn derive_key(
    shared: &x25519_dalek::SharedSecret,
    ephemeral: &[u8; 32],
    recipient: &[u8; 32],
) -> Zeroizing<[u8; 32]> {
    let mut salt = [0u8; 64];
    salt[..32].copy_from_slice(ephemeral);
    salt[32..].copy_from_slice(recipient);
    let hk = Hkdf::<Sha256>::new(Some(&salt), shared.as_bytes());
    let mut key = Zeroizing::new([0u8; 32]);
    // 32 bytes is always a valid HKDF-SHA256 output length.
    let _ = hk.expand(SEAL_INFO, key.as_mut());
    key
}

/// Seals `plaintext` to `recipient` with associated data `aad`.
///
/// # Security
/// `plaintext` is secret; this function does not keep a copy. `rng` must be
/// cryptographically secure: the ephemeral key is what makes the AEAD key one-time.
pub fn seal(
    rng: &mut impl CryptoRngCore,
    recipient: &[u8; 32],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<SealedBox, ProtocolError> {
    let eph = x25519_dalek::EphemeralSecret::random_from_rng(&mut *rng);
    let eph_pub = x25519_dalek::PublicKey::from(&eph).to_bytes();
    let shared = eph.diffie_hellman(&x25519_dalek::PublicKey::from(*recipient));
    if !shared.was_contributory() {
        return Err(ProtocolError::InvalidParameters(
            "recipient sealing key is a low-order point".into(),
        ));
    }
    let key = derive_key(&shared, &eph_pub, recipient);
    let cipher = ChaCha20Poly1305::new(&chacha20poly1305::Key::from(*key));
    let ciphertext = cipher
        .encrypt(
            &[0u8; 12].into(),
            AeadPayload {
                msg: plaintext,
                aad,
            },
        )
        .map_err(|_| ProtocolError::Crypto("AEAD encryption failed".into()))?;
    Ok(SealedBox {
        ephemeral: eph_pub,
        ciphertext,
    })
}

/// Opens a box sealed to `secret`; `None` when it was not sealed to us with this `aad`
/// or was altered.
///
/// # Security
/// Returns the secret plaintext in a zeroizing buffer.
pub fn open(
    secret: &x25519_dalek::StaticSecret,
    aad: &[u8],
    sealed: &SealedBox,
) -> Option<Zeroizing<Vec<u8>>> {
    let shared = secret.diffie_hellman(&x25519_dalek::PublicKey::from(sealed.ephemeral));
    if !shared.was_contributory() {
        return None;
    }
    let me = x25519_dalek::PublicKey::from(secret).to_bytes();
    let key = derive_key(&shared, &sealed.ephemeral, &me);
    let cipher = ChaCha20Poly1305::new(&chacha20poly1305::Key::from(*key));
    cipher
        .decrypt(
            &[0u8; 12].into(),
            AeadPayload {
                msg: &sealed.ciphertext,
                aad,
            },
        )
        .ok()
        .map(Zeroizing::new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::{rand_core::SeedableRng, ChaCha20Rng};

    #[test]
    fn sealed_box_opens_only_for_recipient_and_context() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let alice = x25519_dalek::StaticSecret::random_from_rng(&mut rng);
        let mallory = x25519_dalek::StaticSecret::random_from_rng(&mut rng);
        let alice_pub = x25519_dalek::PublicKey::from(&alice).to_bytes();
        let sealed = seal(&mut rng, &alice_pub, b"ctx", b"share").expect("seal");
        assert_eq!(
            open(&alice, b"ctx", &sealed).as_deref().map(|v| &v[..]),
            Some(&b"share"[..])
        );
        assert!(open(&mallory, b"ctx", &sealed).is_none());
        assert!(open(&alice, b"other ctx", &sealed).is_none());
        let mut flipped = sealed.clone();
        flipped.ciphertext[0] ^= 1;
        assert!(open(&alice, b"ctx", &flipped).is_none());
    }

    #[test]
    fn seal_refuses_low_order_recipient_key() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        assert!(seal(&mut rng, &[0u8; 32], b"", b"x").is_err());
    }
}
