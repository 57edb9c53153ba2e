//! The hybrid KEM that backups are encrypted to: ML-KEM-768 (FIPS 203) and X25519,
//! combined X-Wing style with HKDF-SHA256, so that a key-encryption key is exposed
//! only to someone who breaks *both*.
//!
//! # Combiner
//!
//! For a recipient with X25519 public key `pk_X` and ML-KEM-768 encapsulation key
//! `ek_M`, the sender draws a fresh X25519 key `(e, ct_X = e·G)` and encapsulates to
//! `ek_M`, giving `(ct_M, ss_M)`; `ss_X = X25519(e, pk_X)` (refused when it is the
//! all-zero output of a low-order point). The key-encryption key is
//!
//! ```text
//! prk = HKDF-Extract(salt = "quorate/backup/hybrid-kem/v1", ikm = ss_M ‖ ss_X)
//! kek = HKDF-Expand(prk, info = "quorate/backup/hybrid-kem/v1/kek\0"
//!                                ‖ ct_M (1088) ‖ ct_X (32) ‖ ek_M (1184) ‖ pk_X (32), 32)
//! ```
//!
//! Both shared secrets are extracted together (as TLS 1.3's hybrid key exchange
//! does), so the output is pseudorandom as long as either secret is unknown; and, as
//! in X-Wing, the X25519 ciphertext and public key are bound into the output (X25519
//! alone is not binding to them). The ML-KEM ciphertext and key are bound too, which
//! X-Wing can omit because ML-KEM is ciphertext-binding; binding them costs nothing
//! here and keeps the combiner secure without relying on that property. Each field
//! has a fixed length, so the concatenation is unambiguous.
//!
//! ML-KEM decapsulation never fails (a tampered ciphertext gives an unrelated,
//! implicitly rejected secret), so a wrong key or an altered encapsulation shows only
//! as a different `kek`, which the AEAD that uses it detects.

use std::fmt;

use hkdf::Hkdf;
use ml_kem::{
    kem::{Decapsulate, DecapsulationKey, Encapsulate, EncapsulationKey},
    EncodedSizeUser, KemCore, MlKem768, MlKem768Params,
};
use rand_core::CryptoRngCore;
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

use super::BackupError;

/// Length of an X25519 public key, secret key or ephemeral key.
pub const X25519_LEN: usize = 32;
/// Length of an ML-KEM-768 encapsulation (public) key.
pub const ML_KEM_EK_LEN: usize = 1184;
/// Length of an ML-KEM-768 decapsulation (secret) key in the FIPS 203 encoding.
pub const ML_KEM_DK_LEN: usize = 2400;
/// Length of an ML-KEM-768 ciphertext.
pub const ML_KEM_CT_LEN: usize = 1088;
/// Length of an encoded [`RecoveryPublicKey`]: X25519 key ‖ ML-KEM-768 key.
pub const PUBLIC_KEY_LEN: usize = X25519_LEN + ML_KEM_EK_LEN;
/// Length of an encoded [`RecoverySecretKey`]: X25519 secret ‖ ML-KEM-768 secret.
pub const SECRET_KEY_LEN: usize = X25519_LEN + ML_KEM_DK_LEN;
/// Length of an encoded [`Encapsulation`]: X25519 ephemeral key ‖ ML-KEM ciphertext.
pub const ENCAPSULATION_LEN: usize = X25519_LEN + ML_KEM_CT_LEN;

const COMBINER_SALT: &[u8] = b"quorate/backup/hybrid-kem/v1";
const COMBINER_INFO: &[u8] = b"quorate/backup/hybrid-kem/v1/kek\0";
const FINGERPRINT_DOMAIN: &[u8] = b"quorate/recovery-key/v1\0";

type Dk = DecapsulationKey<MlKem768Params>;
type Ek = EncapsulationKey<MlKem768Params>;

/// A recovery public key: what backups are encrypted to. Public.
#[derive(Clone, PartialEq, Eq)]
pub struct RecoveryPublicKey {
    x25519: [u8; X25519_LEN],
    /// Canonical FIPS 203 encoding (checked by [`Self::from_bytes`]).
    ml_kem: Vec<u8>,
}

impl fmt::Debug for RecoveryPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RecoveryPublicKey({})", hex::encode(self.fingerprint()))
    }
}

impl RecoveryPublicKey {
    /// Decodes `x25519 (32) ‖ ml_kem_768 (1184)`. Refuses a wrong length and an
    /// ML-KEM key that is not canonical (a coefficient ≥ q: the FIPS 203 §7.2
    /// encapsulation-key check).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, BackupError> {
        if bytes.len() != PUBLIC_KEY_LEN {
            return Err(BackupError::RecoveryKey(format!(
                "a recovery public key is {PUBLIC_KEY_LEN} bytes, not {}",
                bytes.len()
            )));
        }
        let mut x25519 = [0u8; X25519_LEN];
        x25519.copy_from_slice(&bytes[..X25519_LEN]);
        let ml_kem = &bytes[X25519_LEN..];
        let encoded = ml_kem::Encoded::<Ek>::try_from(ml_kem)
            .map_err(|_| BackupError::Internal("ML-KEM key length"))?;
        // Decoding reduces every coefficient mod q; a canonical key re-encodes to itself.
        if Ek::from_bytes(&encoded).as_bytes().as_slice() != ml_kem {
            return Err(BackupError::RecoveryKey(
                "the ML-KEM-768 key is not canonically encoded (FIPS 203 modulus check)".into(),
            ));
        }
        Ok(Self {
            x25519,
            ml_kem: ml_kem.to_vec(),
        })
    }

    /// `x25519 (32) ‖ ml_kem_768 (1184)`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(PUBLIC_KEY_LEN);
        out.extend_from_slice(&self.x25519);
        out.extend_from_slice(&self.ml_kem);
        out
    }

    /// SHA-256("quorate/recovery-key/v1\0" ‖ x25519 ‖ ml_kem_768): names this key in
    /// backups and key files.
    pub fn fingerprint(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(FINGERPRINT_DOMAIN);
        h.update(self.x25519);
        h.update(&self.ml_kem);
        h.finalize().into()
    }

    fn ek(&self) -> Result<Ek, BackupError> {
        let encoded = ml_kem::Encoded::<Ek>::try_from(self.ml_kem.as_slice())
            .map_err(|_| BackupError::Internal("ML-KEM key length"))?;
        Ok(Ek::from_bytes(&encoded))
    }
}

/// A recovery secret key. Never printed; both halves zeroize on drop.
pub struct RecoverySecretKey {
    x25519: x25519_dalek::StaticSecret,
    ml_kem: Dk,
    public: RecoveryPublicKey,
}

impl fmt::Debug for RecoverySecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "RecoverySecretKey({}, <secret>)",
            hex::encode(self.public.fingerprint())
        )
    }
}

impl RecoverySecretKey {
    /// Generates a fresh key pair.
    ///
    /// # Security
    /// `rng` must be cryptographically secure (the OS generator outside tests).
    pub fn generate(rng: &mut impl CryptoRngCore) -> Self {
        let x25519 = x25519_dalek::StaticSecret::random_from_rng(&mut *rng);
        let (ml_kem, _) = MlKem768::generate(rng);
        Self::assemble(x25519, ml_kem)
    }

    fn assemble(x25519: x25519_dalek::StaticSecret, ml_kem: Dk) -> Self {
        let public = RecoveryPublicKey {
            x25519: x25519_dalek::PublicKey::from(&x25519).to_bytes(),
            ml_kem: ml_kem.encapsulation_key().as_bytes().to_vec(),
        };
        Self {
            x25519,
            ml_kem,
            public,
        }
    }

    /// The public half.
    pub fn public(&self) -> &RecoveryPublicKey {
        &self.public
    }

    /// `x25519 secret (32) ‖ ML-KEM-768 decapsulation key (2400, FIPS 203 encoding)`.
    ///
    /// # Security
    /// Secret key material in a zeroizing buffer; seal it before it leaves memory.
    pub fn to_secret_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(SECRET_KEY_LEN));
        out.extend_from_slice(self.x25519.as_bytes());
        let mut dk = self.ml_kem.as_bytes();
        out.extend_from_slice(&dk);
        dk.as_mut_slice().zeroize();
        out
    }

    /// Rebuilds a key from [`Self::to_secret_bytes`]. The public half is recomputed
    /// from the secret (the ML-KEM encapsulation key is part of its encoding).
    ///
    /// # Security
    /// The input is secret; the caller should zeroize its copy. Only authenticated
    /// bytes should be passed (the sealed key file is): FIPS 203 decapsulation keys
    /// carry no integrity check of their own.
    pub fn from_secret_bytes(bytes: &[u8]) -> Result<Self, BackupError> {
        if bytes.len() != SECRET_KEY_LEN {
            return Err(BackupError::RecoveryKey(format!(
                "a recovery secret key is {SECRET_KEY_LEN} bytes, not {}",
                bytes.len()
            )));
        }
        let mut x = Zeroizing::new([0u8; X25519_LEN]);
        x.copy_from_slice(&bytes[..X25519_LEN]);
        let x25519 = x25519_dalek::StaticSecret::from(*x);
        let mut encoded = ml_kem::Encoded::<Dk>::try_from(&bytes[X25519_LEN..])
            .map_err(|_| BackupError::Internal("ML-KEM secret length"))?;
        let ml_kem = Dk::from_bytes(&encoded);
        encoded.as_mut_slice().zeroize();
        let key = Self::assemble(x25519, ml_kem);
        // The embedded encapsulation key must itself be canonical.
        RecoveryPublicKey::from_bytes(&key.public.to_bytes())?;
        Ok(key)
    }
}

/// What the sender transmits for one recipient: the X25519 ephemeral public key and
/// the ML-KEM-768 ciphertext.
#[derive(Clone, PartialEq, Eq)]
pub struct Encapsulation {
    /// X25519 ephemeral public key (`ct_X`).
    pub x25519_ephemeral: [u8; X25519_LEN],
    /// ML-KEM-768 ciphertext (`ct_M`), [`ML_KEM_CT_LEN`] bytes.
    pub ml_kem_ciphertext: Vec<u8>,
}

impl fmt::Debug for Encapsulation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Encapsulation").finish_non_exhaustive()
    }
}

impl Encapsulation {
    /// `x25519_ephemeral (32) ‖ ml_kem_ciphertext (1088)`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(ENCAPSULATION_LEN);
        out.extend_from_slice(&self.x25519_ephemeral);
        out.extend_from_slice(&self.ml_kem_ciphertext);
        out
    }

    /// Decodes [`Self::to_bytes`] (length checked).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, BackupError> {
        if bytes.len() != ENCAPSULATION_LEN {
            return Err(BackupError::Malformed(format!(
                "an encapsulation is {ENCAPSULATION_LEN} bytes, not {}",
                bytes.len()
            )));
        }
        let mut x25519_ephemeral = [0u8; X25519_LEN];
        x25519_ephemeral.copy_from_slice(&bytes[..X25519_LEN]);
        Ok(Self {
            x25519_ephemeral,
            ml_kem_ciphertext: bytes[X25519_LEN..].to_vec(),
        })
    }
}

/// Encapsulates a fresh 32-byte key-encryption key to `recipient`.
///
/// # Security
/// Returns the secret key in a zeroizing buffer; use it for one AEAD key wrap only.
/// `rng` must be cryptographically secure. Refuses a recipient whose X25519 key is a
/// low-order point (the Diffie–Hellman output would be all zeros).
pub fn encapsulate(
    recipient: &RecoveryPublicKey,
    rng: &mut impl CryptoRngCore,
) -> Result<(Encapsulation, Zeroizing<[u8; 32]>), BackupError> {
    let ephemeral = x25519_dalek::StaticSecret::random_from_rng(&mut *rng);
    let ct_x = x25519_dalek::PublicKey::from(&ephemeral).to_bytes();
    let ss_x = ephemeral.diffie_hellman(&x25519_dalek::PublicKey::from(recipient.x25519));
    if !ss_x.was_contributory() {
        return Err(BackupError::RecoveryKey(
            "the recovery key's X25519 half is a low-order point".into(),
        ));
    }
    let (ct_m, mut ss_m) = recipient
        .ek()?
        .encapsulate(rng)
        .map_err(|()| BackupError::Internal("ML-KEM encapsulation failed"))?;
    let kek = combine(
        ss_m.as_slice(),
        ss_x.as_bytes(),
        ct_m.as_slice(),
        &ct_x,
        &recipient.ml_kem,
        &recipient.x25519,
    );
    ss_m.as_mut_slice().zeroize();
    Ok((
        Encapsulation {
            x25519_ephemeral: ct_x,
            ml_kem_ciphertext: ct_m.to_vec(),
        },
        kek,
    ))
}

/// Recovers the key-encryption key of `enc` with `secret`. A wrong key or an
/// altered encapsulation gives a different key (detected by the AEAD that uses it),
/// except that an ephemeral X25519 key of low order is refused outright.
///
/// # Security
/// Returns the secret key in a zeroizing buffer.
pub fn decapsulate(
    secret: &RecoverySecretKey,
    enc: &Encapsulation,
) -> Result<Zeroizing<[u8; 32]>, BackupError> {
    let ct_m = ml_kem::Ciphertext::<MlKem768>::try_from(enc.ml_kem_ciphertext.as_slice()).map_err(
        |_| {
            BackupError::Malformed(format!(
                "ML-KEM-768 ciphertext is {} bytes, not {ML_KEM_CT_LEN}",
                enc.ml_kem_ciphertext.len()
            ))
        },
    )?;
    let ss_x = secret
        .x25519
        .diffie_hellman(&x25519_dalek::PublicKey::from(enc.x25519_ephemeral));
    if !ss_x.was_contributory() {
        return Err(BackupError::Malformed(
            "the X25519 ephemeral key is a low-order point".into(),
        ));
    }
    let mut ss_m = secret
        .ml_kem
        .decapsulate(&ct_m)
        .map_err(|()| BackupError::Internal("ML-KEM decapsulation failed"))?;
    let kek = combine(
        ss_m.as_slice(),
        ss_x.as_bytes(),
        ct_m.as_slice(),
        &enc.x25519_ephemeral,
        &secret.public.ml_kem,
        &secret.public.x25519,
    );
    ss_m.as_mut_slice().zeroize();
    Ok(kek)
}

/// The combiner (module docs).
///
/// # Security
/// Takes both shared secrets; the input key material is zeroized after extraction.
fn combine(
    ss_m: &[u8],
    ss_x: &[u8; 32],
    ct_m: &[u8],
    ct_x: &[u8; 32],
    ek_m: &[u8],
    pk_x: &[u8; 32],
) -> Zeroizing<[u8; 32]> {
    let mut ikm = Zeroizing::new([0u8; 64]);
    ikm[..32].copy_from_slice(ss_m);
    ikm[32..].copy_from_slice(ss_x);
    let hk = Hkdf::<Sha256>::new(Some(COMBINER_SALT), ikm.as_ref());
    let mut kek = Zeroizing::new([0u8; 32]);
    // 32 bytes is always a valid HKDF-SHA256 output length.
    let _ = hk.expand_multi_info(&[COMBINER_INFO, ct_m, ct_x, ek_m, pk_x], kek.as_mut());
    kek
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::{rand_core::SeedableRng, ChaCha20Rng};

    fn rng(seed: u64) -> ChaCha20Rng {
        ChaCha20Rng::seed_from_u64(seed)
    }

    #[test]
    fn round_trip_gives_the_same_key_and_sizes_are_the_documented_ones() {
        let sk = RecoverySecretKey::generate(&mut rng(1));
        let (enc, kek) = encapsulate(sk.public(), &mut rng(2)).expect("encapsulate");
        assert_eq!(enc.to_bytes().len(), ENCAPSULATION_LEN);
        assert_eq!(enc.ml_kem_ciphertext.len(), ML_KEM_CT_LEN);
        assert_eq!(sk.public().to_bytes().len(), PUBLIC_KEY_LEN);
        assert_eq!(sk.to_secret_bytes().len(), SECRET_KEY_LEN);
        let back = decapsulate(&sk, &enc).expect("decapsulate");
        assert_eq!(*kek, *back);
        // Through the encodings too.
        let enc2 = Encapsulation::from_bytes(&enc.to_bytes()).expect("decode");
        let sk2 = RecoverySecretKey::from_secret_bytes(&sk.to_secret_bytes()).expect("decode");
        assert_eq!(sk2.public(), sk.public());
        assert_eq!(*decapsulate(&sk2, &enc2).expect("decapsulate"), *kek);
        // A second encapsulation is fresh.
        let (enc3, kek3) = encapsulate(sk.public(), &mut rng(3)).expect("encapsulate");
        assert_ne!(enc3, enc);
        assert_ne!(*kek3, *kek);
    }

    #[test]
    fn wrong_recipient_key_gives_another_key() {
        let sk = RecoverySecretKey::generate(&mut rng(1));
        let other = RecoverySecretKey::generate(&mut rng(9));
        let (enc, kek) = encapsulate(sk.public(), &mut rng(2)).expect("encapsulate");
        assert_ne!(*decapsulate(&other, &enc).expect("decapsulates"), *kek);
    }

    #[test]
    fn flipping_a_byte_of_either_ciphertext_changes_the_key() {
        let sk = RecoverySecretKey::generate(&mut rng(1));
        let (enc, kek) = encapsulate(sk.public(), &mut rng(2)).expect("encapsulate");
        for i in [0, 1, 500, ML_KEM_CT_LEN - 1] {
            let mut bad = enc.clone();
            bad.ml_kem_ciphertext[i] ^= 0x01;
            let got = decapsulate(&sk, &bad).expect("ML-KEM rejects implicitly");
            assert_ne!(*got, *kek, "ML-KEM ciphertext byte {i}");
        }
        for i in [0, 17, 31] {
            let mut bad = enc.clone();
            bad.x25519_ephemeral[i] ^= 0x02;
            match decapsulate(&sk, &bad) {
                Ok(got) => assert_ne!(*got, *kek, "X25519 ephemeral byte {i}"),
                Err(e) => assert!(matches!(e, BackupError::Malformed(_)), "{e:?}"),
            }
        }
        // A low-order ephemeral key is refused outright.
        let mut zero = enc.clone();
        zero.x25519_ephemeral = [0; 32];
        assert!(matches!(
            decapsulate(&sk, &zero),
            Err(BackupError::Malformed(_))
        ));
    }

    /// Breaking one half is not enough: a secret key holding the right X25519 secret
    /// with another ML-KEM secret (an adversary who broke X25519 only), or the right
    /// ML-KEM secret with another X25519 secret (one who broke ML-KEM only), derives
    /// another key.
    #[test]
    fn either_half_alone_is_insufficient() {
        let sk = RecoverySecretKey::generate(&mut rng(1));
        let other = RecoverySecretKey::generate(&mut rng(5));
        let (enc, kek) = encapsulate(sk.public(), &mut rng(2)).expect("encapsulate");
        let bytes = sk.to_secret_bytes();
        let other_bytes = other.to_secret_bytes();
        let x_only = RecoverySecretKey {
            x25519: x25519_dalek::StaticSecret::from(
                <[u8; 32]>::try_from(&bytes[..32]).expect("32"),
            ),
            ml_kem: other_dk(&other_bytes),
            public: sk.public().clone(),
        };
        let m_only = RecoverySecretKey {
            x25519: x25519_dalek::StaticSecret::from(
                <[u8; 32]>::try_from(&other_bytes[..32]).expect("32"),
            ),
            ml_kem: other_dk(&bytes),
            public: sk.public().clone(),
        };
        // Sanity: the full key with the same public binding works.
        let full = RecoverySecretKey {
            x25519: x25519_dalek::StaticSecret::from(
                <[u8; 32]>::try_from(&bytes[..32]).expect("32"),
            ),
            ml_kem: other_dk(&bytes),
            public: sk.public().clone(),
        };
        assert_eq!(*decapsulate(&full, &enc).expect("full"), *kek);
        assert_ne!(*decapsulate(&x_only, &enc).expect("x only"), *kek);
        assert_ne!(*decapsulate(&m_only, &enc).expect("m only"), *kek);

        // At the combiner: the right value of one shared secret with any other value
        // of the other gives another key.
        let ct_m = enc.ml_kem_ciphertext.as_slice();
        let pk = sk.public();
        let ss_m = [7u8; 32];
        let ss_x = [9u8; 32];
        let good = combine(
            &ss_m,
            &ss_x,
            ct_m,
            &enc.x25519_ephemeral,
            &pk.ml_kem,
            &pk.x25519,
        );
        for (m, x) in [
            ([0u8; 32], ss_x),
            (ss_m, [0u8; 32]),
            ([8u8; 32], ss_x),
            (ss_m, [8u8; 32]),
        ] {
            let k = combine(&m, &x, ct_m, &enc.x25519_ephemeral, &pk.ml_kem, &pk.x25519);
            assert_ne!(*k, *good);
        }
        // And every public input is bound.
        let mut ct_m2 = ct_m.to_vec();
        ct_m2[3] ^= 1;
        let mut ek2 = pk.ml_kem.clone();
        ek2[3] ^= 1;
        let mut ctx2 = enc.x25519_ephemeral;
        ctx2[0] ^= 1;
        let mut pkx2 = pk.x25519;
        pkx2[0] ^= 1;
        for k in [
            combine(
                &ss_m,
                &ss_x,
                &ct_m2,
                &enc.x25519_ephemeral,
                &pk.ml_kem,
                &pk.x25519,
            ),
            combine(&ss_m, &ss_x, ct_m, &ctx2, &pk.ml_kem, &pk.x25519),
            combine(&ss_m, &ss_x, ct_m, &enc.x25519_ephemeral, &ek2, &pk.x25519),
            combine(&ss_m, &ss_x, ct_m, &enc.x25519_ephemeral, &pk.ml_kem, &pkx2),
        ] {
            assert_ne!(*k, *good);
        }
    }

    fn other_dk(secret: &[u8]) -> Dk {
        let encoded = ml_kem::Encoded::<Dk>::try_from(&secret[32..]).expect("2400");
        Dk::from_bytes(&encoded)
    }

    #[test]
    fn public_keys_are_checked() {
        let sk = RecoverySecretKey::generate(&mut rng(1));
        let bytes = sk.public().to_bytes();
        assert_eq!(
            RecoveryPublicKey::from_bytes(&bytes).expect("valid"),
            *sk.public()
        );
        assert!(RecoveryPublicKey::from_bytes(&bytes[..PUBLIC_KEY_LEN - 1]).is_err());
        // A coefficient ≥ q (0xfff in the first 12 bits) fails the modulus check.
        let mut bad = bytes.clone();
        bad[X25519_LEN] = 0xff;
        bad[X25519_LEN + 1] |= 0x0f;
        assert!(matches!(
            RecoveryPublicKey::from_bytes(&bad),
            Err(BackupError::RecoveryKey(m)) if m.contains("modulus")
        ));
        // A low-order X25519 key is refused when encapsulating.
        let mut low = bytes;
        low[..32].copy_from_slice(&[0u8; 32]);
        let low = RecoveryPublicKey::from_bytes(&low).expect("decodes");
        assert!(matches!(
            encapsulate(&low, &mut rng(3)),
            Err(BackupError::RecoveryKey(_))
        ));
        // Different keys, different fingerprints.
        let other = RecoverySecretKey::generate(&mut rng(2));
        assert_ne!(sk.public().fingerprint(), other.public().fingerprint());
    }

    #[test]
    fn debug_shows_no_secret() {
        let sk = RecoverySecretKey::generate(&mut rng(1));
        let secret = hex::encode(&sk.to_secret_bytes()[..32]);
        let text = format!("{sk:?}");
        assert!(!text.contains(&secret), "{text}");
        assert!(text.contains("<secret>"));
    }
}
