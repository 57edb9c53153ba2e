//! Recovery key files: the public key backups are encrypted to (JSON, shareable) and
//! the secret key sealed under a passphrase with the keystore's Argon2id +
//! ChaCha20-Poly1305 scheme (JSON, mode 0600). Formats: `node/README.md`, "Backups".

use std::{
    fs::{self, OpenOptions},
    io::{self, Write},
    path::Path,
};

use chacha20poly1305::{aead::AeadInPlace, ChaCha20Poly1305, KeyInit, Nonce};
use rand_core::CryptoRngCore;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{
    hybrid::{RecoveryPublicKey, RecoverySecretKey, SECRET_KEY_LEN},
    BackupError,
};
use crate::keystore::{derive_passphrase_key, KdfParams, Passphrase};

/// `format` of a recovery public key file.
pub const PUBLIC_FORMAT: &str = "quorate-recovery-public-key";
/// `format` of a recovery secret key file.
pub const SECRET_FORMAT: &str = "quorate-recovery-secret-key";
/// Version of both key file formats.
pub const KEY_FILE_VERSION: u32 = 1;
/// Largest key file read (either kind).
pub const MAX_KEY_FILE: u64 = 16 * 1024;
const SECRET_AAD_DOMAIN: &[u8] = b"quorate/recovery-secret/v1\0";
const SALT_LEN: usize = 16;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PublicFile {
    format: String,
    version: u32,
    fingerprint: String,
    x25519: String,
    ml_kem_768: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretFile {
    format: String,
    version: u32,
    fingerprint: String,
    kdf: KdfFile,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    insecure_test_kdf: bool,
    salt: String,
    nonce: String,
    sealed: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KdfFile {
    algorithm: String,
    version: u32,
    m_cost_kib: u32,
    t_cost: u32,
    p_cost: u32,
}

fn malformed(what: &str, reason: impl std::fmt::Display) -> BackupError {
    BackupError::Malformed(format!("{what}: {reason}"))
}

fn hex_exact<const N: usize>(what: &str, field: &str, text: &str) -> Result<[u8; N], BackupError> {
    let mut out = [0u8; N];
    hex::decode_to_slice(text, &mut out)
        .map_err(|_| malformed(what, format!("{field} is not {N} bytes of hex")))?;
    Ok(out)
}

impl RecoveryPublicKey {
    /// The public key file (JSON, one line plus newline).
    pub fn to_file_text(&self) -> String {
        let bytes = self.to_bytes();
        let file = PublicFile {
            format: PUBLIC_FORMAT.into(),
            version: KEY_FILE_VERSION,
            fingerprint: hex::encode(self.fingerprint()),
            x25519: hex::encode(&bytes[..32]),
            ml_kem_768: hex::encode(&bytes[32..]),
        };
        // Strings and integers only: encoding cannot fail.
        let mut text = serde_json::to_string(&file).unwrap_or_default();
        text.push('\n');
        text
    }

    /// Parses a public key file; checks the keys (see [`Self::from_bytes`]) and that
    /// `fingerprint` is theirs, so a damaged or edited file is refused.
    pub fn from_file_text(text: &str) -> Result<Self, BackupError> {
        const WHAT: &str = "recovery public key file";
        let f: PublicFile = serde_json::from_str(text).map_err(|e| malformed(WHAT, e))?;
        if f.format != PUBLIC_FORMAT {
            return Err(malformed(
                WHAT,
                format!("format is {:?}, not {PUBLIC_FORMAT:?}", f.format),
            ));
        }
        if f.version != KEY_FILE_VERSION {
            return Err(BackupError::UnsupportedVersion {
                what: WHAT,
                version: f.version,
            });
        }
        let mut bytes = hex::decode(&f.x25519).map_err(|_| malformed(WHAT, "x25519 is not hex"))?;
        bytes.extend(
            hex::decode(&f.ml_kem_768).map_err(|_| malformed(WHAT, "ml_kem_768 is not hex"))?,
        );
        let key = Self::from_bytes(&bytes)?;
        let claimed: [u8; 32] = hex_exact(WHAT, "fingerprint", &f.fingerprint)?;
        if claimed != key.fingerprint() {
            return Err(BackupError::RecoveryKey(
                "the fingerprint in the public key file is not the fingerprint of its keys \
                 (the file was damaged or edited)"
                    .into(),
            ));
        }
        Ok(key)
    }

    /// Reads a public key file (at most [`MAX_KEY_FILE`] bytes).
    pub fn load(path: &Path) -> Result<Self, BackupError> {
        Self::from_file_text(&read_bounded(path)?)
    }
}

fn secret_aad(
    fingerprint: &[u8; 32],
    salt: &[u8; SALT_LEN],
    kdf: &KdfParams,
    test: bool,
) -> Vec<u8> {
    let mut aad = Vec::with_capacity(SECRET_AAD_DOMAIN.len() + 32 + SALT_LEN + 13);
    aad.extend_from_slice(SECRET_AAD_DOMAIN);
    aad.extend_from_slice(fingerprint);
    aad.extend_from_slice(salt);
    aad.extend_from_slice(&kdf.m_cost_kib.to_be_bytes());
    aad.extend_from_slice(&kdf.t_cost.to_be_bytes());
    aad.extend_from_slice(&kdf.p_cost.to_be_bytes());
    aad.push(u8::from(test));
    aad
}

impl RecoverySecretKey {
    /// The sealed secret key file: the secret key encrypted with ChaCha20-Poly1305
    /// under Argon2id(`passphrase`, fresh salt, `kdf`). Refuses KDF parameters below
    /// the keystore's floor unless they are the test preset
    /// ([`KdfParams::insecure_for_tests`], marked in the file).
    ///
    /// # Security
    /// The plaintext secret and the derived key are zeroized. `rng` (salt, nonce)
    /// must be cryptographically secure.
    pub fn seal_to_file_text(
        &self,
        passphrase: &Passphrase,
        kdf: KdfParams,
        rng: &mut impl CryptoRngCore,
    ) -> Result<String, BackupError> {
        let test = kdf == KdfParams::insecure_for_tests();
        let mut salt = [0u8; SALT_LEN];
        rng.fill_bytes(&mut salt);
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill_bytes(&mut nonce);
        let key = derive_passphrase_key(passphrase, &salt, &kdf, test)?;
        let fingerprint = self.public().fingerprint();
        let mut buf = Zeroizing::new(Vec::with_capacity(SECRET_KEY_LEN + TAG_LEN));
        buf.extend_from_slice(&self.to_secret_bytes());
        ChaCha20Poly1305::new((&*key).into())
            .encrypt_in_place(
                Nonce::from_slice(&nonce),
                &secret_aad(&fingerprint, &salt, &kdf, test),
                &mut *buf,
            )
            .map_err(|_| BackupError::Internal("encryption failed"))?;
        let file = SecretFile {
            format: SECRET_FORMAT.into(),
            version: KEY_FILE_VERSION,
            fingerprint: hex::encode(fingerprint),
            kdf: KdfFile {
                algorithm: "argon2id".into(),
                version: 0x13,
                m_cost_kib: kdf.m_cost_kib,
                t_cost: kdf.t_cost,
                p_cost: kdf.p_cost,
            },
            insecure_test_kdf: test,
            salt: hex::encode(salt),
            nonce: hex::encode(nonce),
            sealed: hex::encode(&*buf),
        };
        let mut text = serde_json::to_string(&file).unwrap_or_default();
        text.push('\n');
        Ok(text)
    }

    /// Opens a sealed secret key file with `passphrase`.
    ///
    /// # Security
    /// Returns the secret key (zeroized on drop). A wrong passphrase and an edited
    /// file both fail authentication and cannot be told apart:
    /// [`BackupError::WrongRecoveryPassphrase`].
    pub fn open_file_text(text: &str, passphrase: &Passphrase) -> Result<Self, BackupError> {
        const WHAT: &str = "recovery secret key file";
        let f: SecretFile = serde_json::from_str(text).map_err(|e| malformed(WHAT, e))?;
        if f.format != SECRET_FORMAT {
            return Err(malformed(
                WHAT,
                format!("format is {:?}, not {SECRET_FORMAT:?}", f.format),
            ));
        }
        if f.version != KEY_FILE_VERSION {
            return Err(BackupError::UnsupportedVersion {
                what: WHAT,
                version: f.version,
            });
        }
        if f.kdf.algorithm != "argon2id" || f.kdf.version != 0x13 {
            return Err(malformed(
                WHAT,
                format!("unsupported KDF {} v{}", f.kdf.algorithm, f.kdf.version),
            ));
        }
        let kdf = KdfParams {
            m_cost_kib: f.kdf.m_cost_kib,
            t_cost: f.kdf.t_cost,
            p_cost: f.kdf.p_cost,
        };
        let fingerprint: [u8; 32] = hex_exact(WHAT, "fingerprint", &f.fingerprint)?;
        let salt: [u8; SALT_LEN] = hex_exact(WHAT, "salt", &f.salt)?;
        let nonce: [u8; NONCE_LEN] = hex_exact(WHAT, "nonce", &f.nonce)?;
        let mut buf = Zeroizing::new(
            hex::decode(&f.sealed).map_err(|_| malformed(WHAT, "sealed is not hex"))?,
        );
        if buf.len() != SECRET_KEY_LEN + TAG_LEN {
            return Err(malformed(
                WHAT,
                format!(
                    "sealed is {} bytes, not {}",
                    buf.len(),
                    SECRET_KEY_LEN + TAG_LEN
                ),
            ));
        }
        let key = derive_passphrase_key(passphrase, &salt, &kdf, f.insecure_test_kdf)?;
        ChaCha20Poly1305::new((&*key).into())
            .decrypt_in_place(
                Nonce::from_slice(&nonce),
                &secret_aad(&fingerprint, &salt, &kdf, f.insecure_test_kdf),
                &mut *buf,
            )
            .map_err(|_| BackupError::WrongRecoveryPassphrase)?;
        let secret = Self::from_secret_bytes(&buf)?;
        if secret.public().fingerprint() != fingerprint {
            return Err(BackupError::RecoveryKey(
                "the sealed secret does not belong to the fingerprint in its file".into(),
            ));
        }
        Ok(secret)
    }

    /// Reads and opens a sealed secret key file (at most [`MAX_KEY_FILE`] bytes).
    ///
    /// # Security
    /// As [`Self::open_file_text`].
    pub fn load(path: &Path, passphrase: &Passphrase) -> Result<Self, BackupError> {
        let text = Zeroizing::new(read_bounded(path)?);
        Self::open_file_text(&text, passphrase)
    }
}

fn read_bounded(path: &Path) -> Result<String, BackupError> {
    let io_err = |source| BackupError::Io {
        path: path.to_path_buf(),
        source,
    };
    let len = fs::metadata(path).map_err(io_err)?.len();
    if len > MAX_KEY_FILE {
        return Err(BackupError::TooLarge {
            what: "recovery key file",
            len,
            max: MAX_KEY_FILE,
        });
    }
    fs::read_to_string(path).map_err(io_err)
}

/// Creates `path` (refusing an existing file) with `mode` and writes `bytes`,
/// synced. On failure after creating it, removes it.
pub(crate) fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), BackupError> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path).map_err(|source| {
        if source.kind() == io::ErrorKind::AlreadyExists {
            BackupError::AlreadyExists {
                path: path.to_path_buf(),
            }
        } else {
            BackupError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    })?;
    let written = file.write_all(bytes).and_then(|()| file.sync_all());
    if let Err(source) = written {
        drop(file);
        let _ = fs::remove_file(path);
        return Err(BackupError::Io {
            path: path.to_path_buf(),
            source,
        });
    }
    Ok(())
}

/// Generates a recovery key pair and writes the sealed secret to `secret_path`
/// (mode 0600) and the public key to `public_path` (mode 0644). Refuses to
/// overwrite either file; nothing is left behind on failure.
///
/// # Security
/// The secret is written only sealed under `passphrase`. `rng` must be
/// cryptographically secure.
pub fn create_recovery_key_files(
    secret_path: &Path,
    public_path: &Path,
    passphrase: &Passphrase,
    kdf: KdfParams,
    rng: &mut impl CryptoRngCore,
) -> Result<RecoveryPublicKey, BackupError> {
    for p in [secret_path, public_path] {
        if p.exists() {
            return Err(BackupError::AlreadyExists {
                path: p.to_path_buf(),
            });
        }
    }
    let key = RecoverySecretKey::generate(rng);
    let sealed = key.seal_to_file_text(passphrase, kdf, rng)?;
    write_new(secret_path, sealed.as_bytes(), 0o600)?;
    if let Err(e) = write_new(public_path, key.public().to_file_text().as_bytes(), 0o644) {
        let _ = fs::remove_file(secret_path);
        return Err(e);
    }
    Ok(key.public().clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::{rand_core::SeedableRng, ChaCha20Rng};

    fn pass(s: &str) -> Passphrase {
        Passphrase::new(s).expect("non-empty")
    }

    #[test]
    fn secret_file_round_trips_and_refuses_wrong_passphrase_and_edits() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let sk = RecoverySecretKey::generate(&mut rng);
        let text = sk
            .seal_to_file_text(
                &pass("recover me"),
                KdfParams::insecure_for_tests(),
                &mut rng,
            )
            .expect("seal");
        // No secret in the file.
        let secret_hex = hex::encode(&sk.to_secret_bytes()[..]);
        assert!(!text.contains(&secret_hex[..64]));
        let back = RecoverySecretKey::open_file_text(&text, &pass("recover me")).expect("open");
        assert_eq!(back.public(), sk.public());
        assert!(matches!(
            RecoverySecretKey::open_file_text(&text, &pass("wrong")),
            Err(BackupError::WrongRecoveryPassphrase)
        ));
        // Any edit of what the seal binds fails.
        let v: serde_json::Value = serde_json::from_str(&text).expect("json");
        let salt = v["salt"].as_str().expect("salt").to_owned();
        let sealed = v["sealed"].as_str().expect("sealed").to_owned();
        let fp = v["fingerprint"].as_str().expect("fp").to_owned();
        let flip = |s: &str| {
            let mut b = hex::decode(s).expect("hex");
            b[0] ^= 1;
            hex::encode(b)
        };
        for edited in [
            text.replace(&salt, &flip(&salt)),
            text.replace(&sealed, &flip(&sealed)),
            text.replace(&fp, &flip(&fp)),
        ] {
            assert_ne!(edited, text);
            assert!(matches!(
                RecoverySecretKey::open_file_text(&edited, &pass("recover me")),
                Err(BackupError::WrongRecoveryPassphrase)
            ));
        }
        // Weakening the KDF below the floor is refused before anything is derived.
        let weak = text.replace("\"t_cost\":1", "\"t_cost\":2");
        assert!(matches!(
            RecoverySecretKey::open_file_text(&weak, &pass("recover me")),
            Err(BackupError::Keystore(crate::KeystoreError::BadKdfParams(_)))
        ));
        // Weak parameters that are not the test preset are refused when sealing.
        assert!(sk
            .seal_to_file_text(
                &pass("p"),
                KdfParams {
                    m_cost_kib: 1024,
                    t_cost: 1,
                    p_cost: 1
                },
                &mut rng
            )
            .is_err());
    }

    #[test]
    fn public_file_round_trips_and_refuses_a_wrong_fingerprint() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let sk = RecoverySecretKey::generate(&mut rng);
        let text = sk.public().to_file_text();
        assert_eq!(
            RecoveryPublicKey::from_file_text(&text).expect("parse"),
            *sk.public()
        );
        let v: serde_json::Value = serde_json::from_str(&text).expect("json");
        let x = v["x25519"].as_str().expect("x25519").to_owned();
        let mut b = hex::decode(&x).expect("hex");
        b[5] ^= 1;
        let edited = text.replace(&x, &hex::encode(b));
        assert!(matches!(
            RecoveryPublicKey::from_file_text(&edited),
            Err(BackupError::RecoveryKey(m)) if m.contains("fingerprint")
        ));
        assert!(RecoveryPublicKey::from_file_text("{}").is_err());
    }

    #[test]
    fn key_files_are_created_once_with_private_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let secret = dir.path().join("rk");
        let public = dir.path().join("rk.pub");
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let pk = create_recovery_key_files(
            &secret,
            &public,
            &pass("p"),
            KdfParams::insecure_for_tests(),
            &mut rng,
        )
        .expect("create");
        assert_eq!(RecoveryPublicKey::load(&public).expect("load"), pk);
        let sk = RecoverySecretKey::load(&secret, &pass("p")).expect("load");
        assert_eq!(*sk.public(), pk);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&secret).expect("meta").permissions().mode();
            assert_eq!(mode & 0o077, 0, "secret file is private: {mode:o}");
        }
        let err = create_recovery_key_files(
            &secret,
            &dir.path().join("other.pub"),
            &pass("p"),
            KdfParams::insecure_for_tests(),
            &mut rng,
        )
        .expect_err("exists");
        assert!(matches!(err, BackupError::AlreadyExists { .. }), "{err:?}");
        assert!(!dir.path().join("other.pub").exists());
    }
}
