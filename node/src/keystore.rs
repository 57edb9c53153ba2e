//! Sealed keystore: the node identity and every key share, in one redb file, each
//! record encrypted with ChaCha20-Poly1305 under a key derived with Argon2id from an
//! operator passphrase.
//!
//! The file is opened *sealed* ([`SealedKeystore::open`]): its header (format,
//! keystore id, node id, KDF parameters, salt) and record names are readable, nothing
//! secret is. [`SealedKeystore::unseal`] derives the key, checks the sealed canary
//! (a wrong passphrase gives [`KeystoreError::WrongPassphrase`]) and then
//! authenticates *every* record before returning a [`Keystore`], so a tampered or
//! corrupt record is reported at unseal time as [`KeystoreError::Corrupt`] naming the
//! record, and the node fails closed. Records are bound to their name and to the
//! keystore (AEAD associated data), so they cannot be swapped between names or files.
//!
//! The on-disk format is described in the crate README.

use std::{
    fmt,
    fs::{self, OpenOptions},
    io,
    path::{Path, PathBuf},
    sync::Arc,
};

use argon2::{Algorithm, Argon2, Version};
use chacha20poly1305::{aead::AeadInPlace, ChaCha20Poly1305, KeyInit, Nonce};
use quorate_protocol::{
    ids::{KeyId, NodeId, SessionId},
    key::{GroupPublic, KeyShare},
    suite::Ciphersuite,
    NodeIdentity,
};
use rand_core::{CryptoRngCore, OsRng};
use redb::{
    backends::FileBackend, Database, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    TableDefinition,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Version of the keystore file format written by this code.
pub const FORMAT_VERSION: u32 = 1;

const META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("quorate_meta");
const RECORDS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("quorate_records");

const HEADER_KEY: &str = "header";
const HEADER_HASH_KEY: &str = "header_sha256";
const CANARY_RECORD: &str = "canary";
const IDENTITY_RECORD: &str = "identity";
const KEY_PREFIX: &str = "key/";
/// Records of DKG runs this node started: `dkg-session/<hex>` and `dkg-key/<hex>`.
const DKG_SESSION_PREFIX: &str = "dkg-session/";
const DKG_KEY_PREFIX: &str = "dkg-key/";
/// A key's share generation (u64 big-endian; absent: 0, the DKG's).
const KEY_GENERATION_PREFIX: &str = "key-gen/";
/// A key's unfinished lifecycle run ([`LifecycleRecord`]).
const LIFECYCLE_PREFIX: &str = "lifecycle/";
/// A lifecycle session id used here (refused a second time).
const LIFECYCLE_SESSION_PREFIX: &str = "lifecycle-session/";
const AUDIT_ANCHOR_RECORD: &str = "audit_anchor";
const AUDIT_SNAPSHOT_RECORD: &str = "audit_snapshot";
const ROSTER_EPOCH_RECORD: &str = "roster_epoch";
/// Netting rounds this node accepted: `netting-round/<round id hex>`.
pub const NETTING_ROUND_PREFIX: &str = "netting-round/";
/// Netting bundles this node accepted: `netting-bundle/<round id hex>/<party index>`.
pub const NETTING_BUNDLE_PREFIX: &str = "netting-bundle/";
/// Plaintext length of the `audit_anchor` record.
const ANCHOR_LEN: usize = 8 + 32 + 8;

const CANARY_PLAINTEXT: &[u8] = b"quorate keystore canary v1";
const AAD_DOMAIN: &[u8] = b"quorate/keystore/v1\0";
const RECORD_VERSION: u8 = 1;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const SALT_LEN: usize = 16;
/// Largest sealed record accepted (checked before decryption allocates).
const MAX_RECORD_LEN: usize = 1 << 20;
/// Largest plaintext of a netting record (the sealed record stays within 1 MiB).
pub const MAX_NETTING_RECORD: usize = MAX_RECORD_LEN - 1 - NONCE_LEN - TAG_LEN;
/// Largest policy-snapshot plaintext sealed or accepted (`audit_snapshot`).
pub const MAX_SNAPSHOT_LEN: usize = 128 << 20;
/// Largest header accepted.
const MAX_HEADER_LEN: usize = 4096;
/// Largest passphrase file read.
const MAX_PASSPHRASE_FILE: u64 = 4096;

/// Errors of the keystore. Never carries secret material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeystoreError {
    /// `init` refuses to touch an existing file.
    #[error("keystore {path} already exists; refusing to overwrite it")]
    AlreadyExists {
        /// The path.
        path: PathBuf,
    },
    /// No keystore at this path.
    #[error("no keystore at {path}")]
    NotFound {
        /// The path.
        path: PathBuf,
    },
    /// The file is a database but not a quorate keystore (no header).
    #[error("{path} is not a quorate keystore: {reason}")]
    NotAKeystore {
        /// The path.
        path: PathBuf,
        /// What is missing.
        reason: String,
    },
    /// Another process (or this one) holds the keystore open.
    #[error("keystore {path} is in use by another process")]
    Locked {
        /// The path.
        path: PathBuf,
    },
    /// The passphrase does not open this keystore (the sealed canary did not
    /// authenticate). Also what a tampered header looks like: without the key, the
    /// two cannot be told apart.
    #[error("wrong passphrase for this keystore")]
    WrongPassphrase,
    /// A record (or the database file itself) failed authentication or decoding.
    #[error("keystore record {record:?} is corrupt or has been tampered with: {reason}")]
    Corrupt {
        /// Record name (`identity`, `key/<key id>`, `header`, or `database` for the file).
        record: String,
        /// What failed.
        reason: String,
    },
    /// The file was written by a newer format.
    #[error("unsupported keystore format version {0} (this build reads {FORMAT_VERSION})")]
    UnsupportedFormat(u32),
    /// KDF parameters out of range.
    #[error("invalid Argon2id parameters: {0}")]
    BadKdfParams(String),
    /// The passphrase could not be obtained or is unusable.
    #[error("passphrase: {0}")]
    Passphrase(String),
    /// `put_key` refuses to replace an existing key.
    #[error("key {0} is already in the keystore; refusing to overwrite it")]
    KeyExists(KeyId),
    /// File-system error.
    #[error("keystore {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Any other database error.
    #[error("keystore database error: {0}")]
    Database(String),
    /// A record is larger than the keystore holds (refused before anything is written).
    #[error("keystore record {record:?} of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// Record name.
        record: String,
        /// Its plaintext length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Encryption or encoding failed (a local bug, not an input fault).
    #[error("keystore internal error: {0}")]
    Internal(&'static str),
}

type Result<T, E = KeystoreError> = std::result::Result<T, E>;

fn db_error(path: &Path, e: impl Into<redb::Error>) -> KeystoreError {
    match e.into() {
        redb::Error::DatabaseAlreadyOpen => KeystoreError::Locked {
            path: path.to_path_buf(),
        },
        redb::Error::Corrupted(reason) => KeystoreError::Corrupt {
            record: "database".into(),
            reason,
        },
        redb::Error::Io(source)
            if matches!(
                source.kind(),
                io::ErrorKind::UnexpectedEof | io::ErrorKind::InvalidData
            ) =>
        {
            KeystoreError::Corrupt {
                record: "database".into(),
                reason: format!("file is truncated or not a database ({source})"),
            }
        }
        redb::Error::Io(source) => KeystoreError::Io {
            path: path.to_path_buf(),
            source,
        },
        redb::Error::TableDoesNotExist(table) => KeystoreError::NotAKeystore {
            path: path.to_path_buf(),
            reason: format!("table {table} is missing"),
        },
        other => KeystoreError::Database(other.to_string()),
    }
}

fn corrupt(record: &str, reason: impl Into<String>) -> KeystoreError {
    KeystoreError::Corrupt {
        record: record.to_owned(),
        reason: reason.into(),
    }
}

/// Argon2id cost parameters, stored in the keystore header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Memory cost in KiB.
    pub m_cost_kib: u32,
    /// Number of passes.
    pub t_cost: u32,
    /// Degree of parallelism.
    pub p_cost: u32,
}

impl KdfParams {
    /// Largest memory cost accepted from a file (2 GiB), so a tampered header cannot
    /// make unseal allocate without bound.
    pub const MAX_M_COST_KIB: u32 = 2 * 1024 * 1024;
    /// Largest pass count accepted from a file.
    pub const MAX_T_COST: u32 = 64;
    /// Largest parallelism accepted from a file.
    pub const MAX_P_COST: u32 = 16;

    /// Production parameters: 64 MiB, 3 passes, 1 lane (OWASP's Argon2id baseline is
    /// weaker; unseal takes a fraction of a second).
    pub const fn production() -> Self {
        Self {
            m_cost_kib: 64 * 1024,
            t_cost: 3,
            p_cost: 1,
        }
    }

    /// Smallest memory cost accepted for a real keystore (19 MiB, OWASP's Argon2id
    /// floor), at `init` and at unseal.
    pub const MIN_M_COST_KIB: u32 = 19 * 1024;
    /// Smallest pass count accepted for a real keystore.
    pub const MIN_T_COST: u32 = 2;

    /// Tiny parameters for tests (64 KiB, 1 pass). Never use for a real keystore: a
    /// keystore made with them is marked `"insecure_test_kdf":true` in its header,
    /// and unsealing it logs a warning.
    pub const fn insecure_for_tests() -> Self {
        Self {
            m_cost_kib: 64,
            t_cost: 1,
            p_cost: 1,
        }
    }

    /// Whether these parameters are below the documented floor
    /// ([`Self::MIN_M_COST_KIB`], [`Self::MIN_T_COST`]).
    pub const fn is_below_floor(&self) -> bool {
        self.m_cost_kib < Self::MIN_M_COST_KIB || self.t_cost < Self::MIN_T_COST
    }

    /// Refuses parameters below the floor unless the keystore is marked as made with
    /// the test-only KDF ([`Self::insecure_for_tests`]), which only logs a warning.
    fn check_floor(&self, insecure_test_kdf: bool) -> Result<()> {
        if !self.is_below_floor() {
            return Ok(());
        }
        if insecure_test_kdf && *self == Self::insecure_for_tests() {
            tracing::warn!(
                m_cost_kib = self.m_cost_kib,
                t_cost = self.t_cost,
                "keystore uses the insecure test-only KDF; never use it for real keys"
            );
            return Ok(());
        }
        Err(KeystoreError::BadKdfParams(format!(
            "m_cost_kib={} t_cost={} is below the minimum (m ≥ {} KiB, t ≥ {}); only the \
             test-only preset may be weaker",
            self.m_cost_kib,
            self.t_cost,
            Self::MIN_M_COST_KIB,
            Self::MIN_T_COST
        )))
    }

    fn validate(&self) -> Result<argon2::Params> {
        if self.m_cost_kib > Self::MAX_M_COST_KIB
            || self.t_cost == 0
            || self.t_cost > Self::MAX_T_COST
            || self.p_cost == 0
            || self.p_cost > Self::MAX_P_COST
        {
            return Err(KeystoreError::BadKdfParams(format!(
                "m_cost_kib={} t_cost={} p_cost={} (limits: m ≤ {}, 1 ≤ t ≤ {}, 1 ≤ p ≤ {})",
                self.m_cost_kib,
                self.t_cost,
                self.p_cost,
                Self::MAX_M_COST_KIB,
                Self::MAX_T_COST,
                Self::MAX_P_COST
            )));
        }
        argon2::Params::new(self.m_cost_kib, self.t_cost, self.p_cost, Some(32))
            .map_err(|e| KeystoreError::BadKdfParams(e.to_string()))
    }
}

/// An operator passphrase. Zeroized on drop, never printed.
#[derive(Clone)]
pub struct Passphrase(Zeroizing<String>);

impl fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Passphrase(<secret>)")
    }
}

impl Passphrase {
    /// Wraps a passphrase; refuses an empty one.
    ///
    /// # Security
    /// Takes ownership of the secret; the copy inside is zeroized on drop. The caller
    /// should not keep other copies.
    pub fn new(secret: impl Into<String>) -> Result<Self> {
        let secret = Zeroizing::new(secret.into());
        if secret.is_empty() {
            return Err(KeystoreError::Passphrase("the passphrase is empty".into()));
        }
        Ok(Self(secret))
    }

    /// Reads the passphrase from environment variable `var`.
    ///
    /// # Security
    /// Environment variables are visible to the process's owner (and `/proc`); prefer
    /// a file readable only by the node's user, or the interactive prompt.
    pub fn from_env(var: &str) -> Result<Self> {
        match std::env::var(var) {
            Ok(v) => Self::new(v),
            Err(std::env::VarError::NotPresent) => Err(KeystoreError::Passphrase(format!(
                "environment variable {var} is not set"
            ))),
            Err(std::env::VarError::NotUnicode(_)) => Err(KeystoreError::Passphrase(format!(
                "environment variable {var} is not valid UTF-8"
            ))),
        }
    }

    /// Reads the passphrase from a file: its whole content minus one trailing newline
    /// (`\n` or `\r\n`). Files larger than 4 KiB are refused.
    ///
    /// # Security
    /// The file should be readable only by the node's user.
    pub fn from_file(path: &Path) -> Result<Self> {
        let io_err = |source| KeystoreError::Io {
            path: path.to_path_buf(),
            source,
        };
        let len = fs::metadata(path).map_err(io_err)?.len();
        if len > MAX_PASSPHRASE_FILE {
            return Err(KeystoreError::Passphrase(format!(
                "passphrase file {} is larger than {MAX_PASSPHRASE_FILE} bytes",
                path.display()
            )));
        }
        let mut text = Zeroizing::new(fs::read_to_string(path).map_err(io_err)?);
        if text.ends_with('\n') {
            text.pop();
            if text.ends_with('\r') {
                text.pop();
            }
        }
        Self::new(std::mem::take(&mut *text))
    }

    /// Prompts on the terminal without echo.
    ///
    /// # Security
    /// Reads from the controlling terminal; nothing is echoed or logged.
    pub fn prompt(prompt: &str) -> Result<Self> {
        let text = rpassword::prompt_password(prompt)
            .map_err(|e| KeystoreError::Passphrase(format!("cannot read from terminal: {e}")))?;
        Self::new(text)
    }

    /// Prompts twice (for `keystore init`) and refuses if the entries differ.
    ///
    /// # Security
    /// As [`Self::prompt`].
    pub fn prompt_confirmed(prompt: &str) -> Result<Self> {
        let first = Self::prompt(prompt)?;
        let second = Self::prompt("Repeat passphrase: ")?;
        if first.0.as_bytes() != second.0.as_bytes() {
            return Err(KeystoreError::Passphrase("the entries do not match".into()));
        }
        Ok(first)
    }

    fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// Where the CLI gets a passphrase from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PassphraseSource {
    /// An environment variable.
    Env(String),
    /// A file.
    File(PathBuf),
    /// The terminal.
    Prompt,
}

impl PassphraseSource {
    /// Obtains the passphrase.
    ///
    /// # Security
    /// See [`Passphrase::from_env`], [`Passphrase::from_file`], [`Passphrase::prompt`].
    pub fn read(&self) -> Result<Passphrase> {
        match self {
            Self::Env(var) => Passphrase::from_env(var),
            Self::File(path) => Passphrase::from_file(path),
            Self::Prompt => Passphrase::prompt("Keystore passphrase: "),
        }
    }
}

/// Identifies one keystore file (random, chosen at `init`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeystoreId(pub [u8; 16]);

impl fmt::Display for KeystoreId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for KeystoreId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeystoreId({self})")
    }
}

/// The `header` meta record (JSON). Everything in it is public.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    format: u32,
    keystore_id: String,
    node_id: String,
    created_at_ms: u64,
    kdf: KdfHeader,
    salt: String,
    /// Present (and `true`) only in keystores made with
    /// [`KdfParams::insecure_for_tests`]; absent otherwise, so production headers are
    /// unchanged.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    insecure_test_kdf: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KdfHeader {
    algorithm: String,
    version: u32,
    m_cost_kib: u32,
    t_cost: u32,
    p_cost: u32,
}

/// The parsed, checked header.
#[derive(Debug, Clone)]
struct Meta {
    keystore_id: KeystoreId,
    node_id: NodeId,
    created_at_ms: u64,
    kdf: KdfParams,
    salt: [u8; SALT_LEN],
    /// Made with the test-only KDF preset (header `insecure_test_kdf`).
    insecure_test_kdf: bool,
    /// SHA-256 of the header bytes; bound into every record's associated data.
    header_hash: [u8; 32],
}

impl Meta {
    fn encode(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(&Header {
            format: FORMAT_VERSION,
            keystore_id: self.keystore_id.to_string(),
            node_id: self.node_id.to_string(),
            created_at_ms: self.created_at_ms,
            kdf: KdfHeader {
                algorithm: "argon2id".into(),
                version: 0x13,
                m_cost_kib: self.kdf.m_cost_kib,
                t_cost: self.kdf.t_cost,
                p_cost: self.kdf.p_cost,
            },
            salt: hex::encode(self.salt),
            insecure_test_kdf: self.insecure_test_kdf,
        })
        .map_err(|_| KeystoreError::Internal("header does not encode"))
    }

    fn decode(bytes: &[u8], stored_hash: &[u8]) -> Result<Self> {
        if bytes.len() > MAX_HEADER_LEN {
            return Err(corrupt(HEADER_KEY, "header is too large"));
        }
        let header_hash: [u8; 32] = Sha256::digest(bytes).into();
        if stored_hash != header_hash {
            return Err(corrupt(HEADER_KEY, "header checksum does not match"));
        }
        let h: Header = serde_json::from_slice(bytes)
            .map_err(|e| corrupt(HEADER_KEY, format!("header does not decode: {e}")))?;
        if h.format != FORMAT_VERSION {
            return Err(KeystoreError::UnsupportedFormat(h.format));
        }
        if h.kdf.algorithm != "argon2id" || h.kdf.version != 0x13 {
            return Err(corrupt(
                HEADER_KEY,
                format!("unsupported KDF {} v{}", h.kdf.algorithm, h.kdf.version),
            ));
        }
        let mut id = [0u8; 16];
        hex::decode_to_slice(&h.keystore_id, &mut id)
            .map_err(|_| corrupt(HEADER_KEY, "keystore_id is not 16 bytes of hex"))?;
        let node_id = NodeId::from_hex(&h.node_id)
            .map_err(|_| corrupt(HEADER_KEY, "node_id is not 32 bytes of hex"))?;
        let mut salt = [0u8; SALT_LEN];
        hex::decode_to_slice(&h.salt, &mut salt)
            .map_err(|_| corrupt(HEADER_KEY, "salt is not 16 bytes of hex"))?;
        let kdf = KdfParams {
            m_cost_kib: h.kdf.m_cost_kib,
            t_cost: h.kdf.t_cost,
            p_cost: h.kdf.p_cost,
        };
        kdf.validate()?;
        Ok(Self {
            keystore_id: KeystoreId(id),
            node_id,
            created_at_ms: h.created_at_ms,
            kdf,
            salt,
            insecure_test_kdf: h.insecure_test_kdf,
            header_hash,
        })
    }
}

/// Derives the record key.
///
/// # Security
/// Returns the keystore's master key in a zeroizing buffer; argon2's working memory
/// is zeroized by its `zeroize` feature.
fn derive_key(
    passphrase: &Passphrase,
    salt: &[u8],
    kdf: &KdfParams,
) -> Result<Zeroizing<[u8; 32]>> {
    let params = kdf.validate()?;
    let mut key = Zeroizing::new([0u8; 32]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(passphrase.as_bytes(), salt, key.as_mut())
        .map_err(|e| KeystoreError::BadKdfParams(e.to_string()))?;
    Ok(key)
}

/// Seals and opens records under the derived key.
struct Sealer {
    cipher: ChaCha20Poly1305,
    keystore_id: KeystoreId,
    header_hash: [u8; 32],
}

impl Sealer {
    fn new(key: &Zeroizing<[u8; 32]>, meta: &Meta) -> Self {
        Self {
            cipher: ChaCha20Poly1305::new((&**key).into()),
            keystore_id: meta.keystore_id,
            header_hash: meta.header_hash,
        }
    }

    fn aad(&self, record: &str) -> Vec<u8> {
        let mut aad = Vec::with_capacity(AAD_DOMAIN.len() + 16 + 32 + 4 + record.len());
        aad.extend_from_slice(AAD_DOMAIN);
        aad.extend_from_slice(&self.keystore_id.0);
        aad.extend_from_slice(&self.header_hash);
        aad.extend_from_slice(&(record.len() as u32).to_be_bytes());
        aad.extend_from_slice(record.as_bytes());
        aad
    }

    /// Encrypts `plaintext` (consumed; its buffer is zeroized) for `record`.
    ///
    /// # Security
    /// A fresh random nonce per call from `rng`, which must be cryptographically secure.
    fn seal(
        &self,
        record: &str,
        mut plaintext: Zeroizing<Vec<u8>>,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill_bytes(&mut nonce);
        self.cipher
            .encrypt_in_place(
                Nonce::from_slice(&nonce),
                &self.aad(record),
                &mut *plaintext,
            )
            .map_err(|_| KeystoreError::Internal("encryption failed"))?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + plaintext.len());
        out.push(RECORD_VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&plaintext);
        Ok(out)
    }

    /// Authenticates and decrypts a record.
    ///
    /// # Security
    /// Returns secret plaintext in a zeroizing buffer.
    fn open(&self, record: &str, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let max = if record == AUDIT_SNAPSHOT_RECORD {
            MAX_SNAPSHOT_LEN + 1 + NONCE_LEN + TAG_LEN
        } else {
            MAX_RECORD_LEN
        };
        if sealed.len() < 1 + NONCE_LEN + TAG_LEN || sealed.len() > max {
            return Err(corrupt(record, "sealed record has an impossible length"));
        }
        if sealed[0] != RECORD_VERSION {
            return Err(corrupt(
                record,
                format!("unknown record version {}", sealed[0]),
            ));
        }
        let nonce = Nonce::from_slice(&sealed[1..1 + NONCE_LEN]);
        let mut buf = Zeroizing::new(sealed[1 + NONCE_LEN..].to_vec());
        self.cipher
            .decrypt_in_place(nonce, &self.aad(record), &mut *buf)
            .map_err(|_| corrupt(record, "authentication failed"))?;
        Ok(buf)
    }
}

/// A key share with its node-local metadata, as stored (sealed) in the keystore.
#[derive(Clone, Serialize, Deserialize)]
pub struct StoredKey {
    /// The share and the group's public data (key id, suite, threshold, members,
    /// group public key).
    pub share: KeyShare,
    /// Creation time, Unix milliseconds.
    pub created_at_ms: u64,
    /// Network segments this key may be used from (empty: any).
    pub allowed_segments: Vec<String>,
}

impl fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredKey")
            .field("key_id", &self.share.public.key_id)
            .field("suite", &self.share.public.suite)
            .field("threshold", &self.share.public.threshold)
            .field("index", &self.share.index)
            .field("created_at_ms", &self.created_at_ms)
            .field("allowed_segments", &self.allowed_segments)
            .field("share", &"<secret>")
            .finish()
    }
}

impl StoredKey {
    /// The key id.
    pub fn key_id(&self) -> KeyId {
        self.share.public.key_id
    }

    /// The group's public data.
    pub fn public(&self) -> &GroupPublic {
        &self.share.public
    }

    /// Public metadata for listings (`quorate keystore list`).
    pub fn summary(&self) -> KeySummary {
        let p = &self.share.public;
        KeySummary {
            key_id: p.key_id.to_string(),
            suite: p.suite,
            threshold: p.threshold,
            participants: p.members.len(),
            index: self.share.index,
            verifying_key: hex::encode(&p.verifying_key),
            created_at_ms: self.created_at_ms,
            allowed_segments: self.allowed_segments.clone(),
        }
    }

    fn record_name(key_id: &KeyId) -> String {
        format!("{KEY_PREFIX}{key_id}")
    }
}

/// Public metadata of a stored key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeySummary {
    /// Key id (hex).
    pub key_id: String,
    /// Ciphersuite.
    pub suite: Ciphersuite,
    /// Signing threshold.
    pub threshold: u16,
    /// Number of participants.
    pub participants: usize,
    /// This node's FROST index.
    pub index: u16,
    /// Group verifying key (hex).
    pub verifying_key: String,
    /// Creation time, Unix milliseconds.
    pub created_at_ms: u64,
    /// Allowed segments.
    pub allowed_segments: Vec<String>,
}

/// What `quorate keystore status` shows; available while sealed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeystoreStatus {
    /// The file.
    pub path: PathBuf,
    /// A valid header is present.
    pub initialized: bool,
    /// Whether this handle is sealed.
    pub sealed: bool,
    /// Format version.
    pub format: u32,
    /// Keystore id (hex).
    pub keystore_id: String,
    /// The node id recorded at init (hex; authenticated against the sealed identity
    /// at unseal).
    pub node_id: String,
    /// Creation time, Unix milliseconds.
    pub created_at_ms: u64,
    /// Argon2id parameters.
    pub kdf: KdfParams,
    /// Made with the insecure test-only KDF preset.
    pub insecure_test_kdf: bool,
    /// Number of sealed records (canary, identity and keys).
    pub records: usize,
    /// Key ids present (from record names; hex).
    pub key_ids: Vec<String>,
}

/// Shared by the sealed and unsealed handles.
struct Store {
    db: Arc<Database>,
    path: PathBuf,
    meta: Meta,
}

impl Store {
    fn open(path: &Path) -> Result<Self> {
        if !path.exists() {
            return Err(KeystoreError::NotFound {
                path: path.to_path_buf(),
            });
        }
        let db = Database::builder()
            .set_check_integrity_on_open(true)
            .open(path)
            .map_err(|e| db_error(path, e))?;
        let txn = db.begin_read().map_err(|e| db_error(path, e))?;
        let meta_table = txn.open_table(META).map_err(|e| db_error(path, e))?;
        let get = |name: &str| -> Result<Vec<u8>> {
            meta_table
                .get(name)
                .map_err(|e| db_error(path, e))?
                .map(|g| g.value().to_vec())
                .ok_or_else(|| KeystoreError::NotAKeystore {
                    path: path.to_path_buf(),
                    reason: format!("meta record {name} is missing"),
                })
        };
        let header = get(HEADER_KEY)?;
        let hash = get(HEADER_HASH_KEY)?;
        let meta = Meta::decode(&header, &hash)?;
        drop(meta_table);
        drop(txn);
        Ok(Self {
            db: Arc::new(db),
            path: path.to_path_buf(),
            meta,
        })
    }

    fn err(&self, e: impl Into<redb::Error>) -> KeystoreError {
        db_error(&self.path, e)
    }

    /// Every record as (name, sealed bytes).
    fn records(&self) -> Result<Vec<(String, Vec<u8>)>> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = txn.open_table(RECORDS).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for item in table.iter().map_err(|e| self.err(e))? {
            let (k, v) = item.map_err(|e| self.err(e))?;
            out.push((k.value().to_owned(), v.value().to_vec()));
        }
        Ok(out)
    }

    fn record(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = txn.open_table(RECORDS).map_err(|e| self.err(e))?;
        let value = table.get(name).map_err(|e| self.err(e))?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    fn status(&self, sealed: bool) -> Result<KeystoreStatus> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = txn.open_table(RECORDS).map_err(|e| self.err(e))?;
        let records = usize::try_from(table.len().map_err(|e| self.err(e))?)
            .map_err(|_| KeystoreError::Internal("record count overflows"))?;
        let mut key_ids = Vec::new();
        for item in table.range(KEY_PREFIX..).map_err(|e| self.err(e))? {
            let (k, _) = item.map_err(|e| self.err(e))?;
            match k.value().strip_prefix(KEY_PREFIX) {
                Some(id) => key_ids.push(id.to_owned()),
                None => break,
            }
        }
        Ok(KeystoreStatus {
            path: self.path.clone(),
            initialized: true,
            sealed,
            format: FORMAT_VERSION,
            keystore_id: self.meta.keystore_id.to_string(),
            node_id: self.meta.node_id.to_string(),
            created_at_ms: self.meta.created_at_ms,
            kdf: self.meta.kdf,
            insecure_test_kdf: self.meta.insecure_test_kdf,
            records,
            key_ids,
        })
    }
}

/// A keystore opened but not unsealed: public status only.
pub struct SealedKeystore {
    store: Store,
}

impl fmt::Debug for SealedKeystore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedKeystore")
            .field("path", &self.store.path)
            .field("keystore_id", &self.store.meta.keystore_id)
            .finish()
    }
}

impl SealedKeystore {
    /// Opens an existing keystore without the passphrase. Checks the database's
    /// integrity and the header; secrets stay sealed. Holds the file lock until
    /// dropped.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Ok(Self {
            store: Store::open(path.as_ref())?,
        })
    }

    /// Public status (works while sealed).
    pub fn status(&self) -> Result<KeystoreStatus> {
        self.store.status(true)
    }

    /// The keystore id.
    pub fn keystore_id(&self) -> KeystoreId {
        self.store.meta.keystore_id
    }

    /// The node id recorded in the header (authenticated only by [`Self::unseal`]).
    pub fn node_id(&self) -> NodeId {
        self.store.meta.node_id
    }

    /// Derives the key from `passphrase`, checks it against the sealed canary, then
    /// authenticates and decodes every record. Fails closed: any record that does not
    /// authenticate makes the whole unseal fail with [`KeystoreError::Corrupt`].
    ///
    /// # Security
    /// On success the returned [`Keystore`] holds the decrypted node identity and the
    /// derived key in memory (both zeroized on drop). Key shares are decrypted on
    /// demand and zeroized when the returned values are dropped.
    pub fn unseal(self, passphrase: &Passphrase) -> Result<Keystore> {
        let store = self.store;
        store.meta.kdf.check_floor(store.meta.insecure_test_kdf)?;
        let key = derive_key(passphrase, &store.meta.salt, &store.meta.kdf)?;
        let sealer = Sealer::new(&key, &store.meta);
        drop(key);

        let canary = store
            .record(CANARY_RECORD)?
            .ok_or_else(|| corrupt(CANARY_RECORD, "record is missing"))?;
        let plain = sealer
            .open(CANARY_RECORD, &canary)
            .map_err(|_| KeystoreError::WrongPassphrase)?;
        if plain.as_slice() != CANARY_PLAINTEXT {
            return Err(corrupt(CANARY_RECORD, "unexpected content"));
        }

        let sealed_identity = store
            .record(IDENTITY_RECORD)?
            .ok_or_else(|| corrupt(IDENTITY_RECORD, "record is missing"))?;
        let identity = decode_identity(&sealer.open(IDENTITY_RECORD, &sealed_identity)?)?;
        if identity.node_id() != store.meta.node_id {
            return Err(corrupt(
                IDENTITY_RECORD,
                "identity does not match the node id in the header",
            ));
        }

        let ks = Keystore {
            store,
            sealer: Arc::new(sealer),
            identity,
        };
        // Authenticate every record now, so tampering is reported at unseal.
        for (name, sealed) in ks.store.records()? {
            match name.as_str() {
                CANARY_RECORD | IDENTITY_RECORD => {}
                AUDIT_ANCHOR_RECORD => {
                    AuditAnchor::decode(&ks.sealer.open(&name, &sealed)?)?;
                }
                AUDIT_SNAPSHOT_RECORD => {
                    ks.sealer.open(&name, &sealed)?;
                }
                ROSTER_EPOCH_RECORD => {
                    decode_epoch(&ks.sealer.open(&name, &sealed)?)?;
                }
                n if n.starts_with(KEY_PREFIX) => {
                    ks.decode_key(n, &sealed)?;
                }
                n if n.starts_with(KEY_GENERATION_PREFIX) => {
                    decode_generation(n, &ks.sealer.open(n, &sealed)?)?;
                }
                n if n.starts_with(LIFECYCLE_PREFIX) => {
                    LifecycleRecord::decode(n, &ks.sealer.open(n, &sealed)?)?;
                }
                n if n.starts_with(DKG_SESSION_PREFIX)
                    || n.starts_with(DKG_KEY_PREFIX)
                    || n.starts_with(LIFECYCLE_SESSION_PREFIX)
                    || n.starts_with(NETTING_ROUND_PREFIX)
                    || n.starts_with(NETTING_BUNDLE_PREFIX) =>
                {
                    ks.sealer.open(n, &sealed)?;
                }
                other => return Err(corrupt(other, "unexpected record")),
            }
        }
        Ok(ks)
    }
}

/// The last audit-log entry the keystore vouches for (sealed record
/// `audit_anchor`): written after every append, checked when the log is opened, so
/// a log cut short or replaced by an older copy is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditAnchor {
    /// Sequence number of the entry.
    pub seq: u64,
    /// Its hash.
    pub hash: [u8; 32],
    /// Length of the log file up to and including that entry's newline.
    pub end_offset: u64,
}

impl AuditAnchor {
    /// `seq` (u64 BE) ‖ `hash` (32) ‖ `end_offset` (u64 BE): 48 bytes.
    fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Vec::with_capacity(ANCHOR_LEN + TAG_LEN);
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.hash);
        out.extend_from_slice(&self.end_offset.to_be_bytes());
        Zeroizing::new(out)
    }

    fn decode(plain: &[u8]) -> Result<Self> {
        if plain.len() != ANCHOR_LEN {
            return Err(corrupt(AUDIT_ANCHOR_RECORD, "anchor is not 48 bytes"));
        }
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&plain[..8]);
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&plain[8..40]);
        let mut end = [0u8; 8];
        end.copy_from_slice(&plain[40..]);
        Ok(Self {
            seq: u64::from_be_bytes(seq),
            hash,
            end_offset: u64::from_be_bytes(end),
        })
    }
}

fn decode_epoch(plain: &[u8]) -> Result<u64> {
    let bytes: [u8; 8] = plain
        .try_into()
        .map_err(|_| corrupt(ROSTER_EPOCH_RECORD, "epoch is not 8 bytes"))?;
    Ok(u64::from_be_bytes(bytes))
}

/// A handle on the keystore's node-state records (audit anchor, policy snapshot,
/// roster epoch), for the audit log and start-up code. Cloneable; writes are
/// committed (durable) before the setters return.
#[derive(Clone)]
pub struct StateStore {
    db: Arc<Database>,
    sealer: Arc<Sealer>,
    path: PathBuf,
}

impl fmt::Debug for StateStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl StateStore {
    fn err(&self, e: impl Into<redb::Error>) -> KeystoreError {
        db_error(&self.path, e)
    }

    fn get(&self, name: &str) -> Result<Option<Zeroizing<Vec<u8>>>> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = txn.open_table(RECORDS).map_err(|e| self.err(e))?;
        let Some(v) = table.get(name).map_err(|e| self.err(e))? else {
            return Ok(None);
        };
        self.sealer.open(name, v.value()).map(Some)
    }

    fn put(&self, name: &str, plain: Zeroizing<Vec<u8>>) -> Result<()> {
        let sealed = self.sealer.seal(name, plain, &mut OsRng)?;
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut table = txn.open_table(RECORDS).map_err(|e| self.err(e))?;
            table
                .insert(name, sealed.as_slice())
                .map_err(|e| self.err(e))?;
        }
        txn.commit().map_err(|e| self.err(e))
    }

    /// The anchored audit entry, if one was ever written.
    pub fn audit_anchor(&self) -> Result<Option<AuditAnchor>> {
        self.get(AUDIT_ANCHOR_RECORD)?
            .map(|p| AuditAnchor::decode(&p))
            .transpose()
    }

    /// Records `anchor` (sealed, committed).
    pub fn set_audit_anchor(&self, anchor: &AuditAnchor) -> Result<()> {
        self.put(AUDIT_ANCHOR_RECORD, anchor.encode())
    }

    /// The policy-state snapshot's plaintext, if any (see `recovery`).
    ///
    /// # Security
    /// Not secret, but authenticated: only this keystore's key could have sealed it.
    pub fn audit_snapshot(&self) -> Result<Option<Zeroizing<Vec<u8>>>> {
        self.get(AUDIT_SNAPSHOT_RECORD)
    }

    /// Replaces the policy-state snapshot (sealed, committed). Refuses one larger
    /// than [`MAX_SNAPSHOT_LEN`].
    pub fn set_audit_snapshot(&self, plain: Vec<u8>) -> Result<()> {
        if plain.len() > MAX_SNAPSHOT_LEN {
            return Err(KeystoreError::Internal("policy snapshot is too large"));
        }
        self.put(AUDIT_SNAPSHOT_RECORD, Zeroizing::new(plain))
    }

    /// The highest roster epoch this node has accepted (0 if none yet).
    pub fn roster_epoch(&self) -> Result<u64> {
        self.get(ROSTER_EPOCH_RECORD)?
            .map_or(Ok(0), |p| decode_epoch(&p))
    }

    /// Records `epoch` as the highest roster epoch accepted.
    pub fn set_roster_epoch(&self, epoch: u64) -> Result<()> {
        self.put(
            ROSTER_EPOCH_RECORD,
            Zeroizing::new(epoch.to_be_bytes().to_vec()),
        )
    }

    /// Writes (or replaces) a netting record (`name` under [`NETTING_ROUND_PREFIX`]
    /// or [`NETTING_BUNDLE_PREFIX`]), sealed and committed. Refuses a plaintext
    /// larger than [`MAX_NETTING_RECORD`] with [`KeystoreError::TooLarge`].
    ///
    /// # Security
    /// Bundle records hold the node's share box still sealed to its X25519 key.
    pub fn put_netting(&self, name: &str, plain: Vec<u8>) -> Result<()> {
        if !is_netting_record(name) {
            return Err(KeystoreError::Internal("not a netting record name"));
        }
        if plain.len() > MAX_NETTING_RECORD {
            return Err(KeystoreError::TooLarge {
                record: name.to_owned(),
                len: plain.len(),
                max: MAX_NETTING_RECORD,
            });
        }
        self.put(name, Zeroizing::new(plain))
    }

    /// Every netting record (rounds and bundles) as (name, plaintext), in name order.
    pub fn netting_records(&self) -> Result<Vec<(String, Zeroizing<Vec<u8>>)>> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = txn.open_table(RECORDS).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for item in table.range("netting-"..).map_err(|e| self.err(e))? {
            let (k, v) = item.map_err(|e| self.err(e))?;
            let name = k.value();
            if !name.starts_with("netting-") {
                break;
            }
            if is_netting_record(name) {
                out.push((name.to_owned(), self.sealer.open(name, v.value())?));
            }
        }
        Ok(out)
    }

    /// Removes the records of one netting round (its round record and every bundle
    /// record under `netting-bundle/<round hex>/`) in one committed transaction.
    pub fn remove_netting_round(&self, round_hex: &str) -> Result<()> {
        let round = format!("{NETTING_ROUND_PREFIX}{round_hex}");
        let bundles = format!("{NETTING_BUNDLE_PREFIX}{round_hex}/");
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut table = txn.open_table(RECORDS).map_err(|e| self.err(e))?;
            let names: Vec<String> = table
                .range(bundles.as_str()..)
                .map_err(|e| self.err(e))?
                .map(|item| item.map(|(k, _)| k.value().to_owned()))
                .take_while(|n| n.as_ref().map_or(true, |n| n.starts_with(&bundles)))
                .collect::<Result<_, _>>()
                .map_err(|e| self.err(e))?;
            for n in names.iter().map(String::as_str).chain([round.as_str()]) {
                table.remove(n).map_err(|e| self.err(e))?;
            }
        }
        txn.commit().map_err(|e| self.err(e))
    }
}

/// `lifecycle/<key id hex>/<session hex>` → (key id, session).
fn parse_lifecycle_name(name: &str) -> Result<(KeyId, SessionId)> {
    let rest = name
        .strip_prefix(LIFECYCLE_PREFIX)
        .ok_or_else(|| corrupt(name, "not a lifecycle record"))?;
    let (key, session) = rest
        .split_once('/')
        .ok_or_else(|| corrupt(name, "lifecycle record name has no session"))?;
    let key = KeyId::from_hex(key).map_err(|_| corrupt(name, "record name is not a key id"))?;
    let session =
        SessionId::from_hex(session).map_err(|_| corrupt(name, "record name is not a session"))?;
    Ok((key, session))
}

fn decode_generation(name: &str, plain: &[u8]) -> Result<u64> {
    let bytes: [u8; 8] = plain
        .try_into()
        .map_err(|_| corrupt(name, "generation is not 8 bytes"))?;
    Ok(u64::from_be_bytes(bytes))
}

/// A key's unfinished lifecycle run, kept until its proof of completion arrives
/// (or a later run of the same key replaces it): the coordinator's signed
/// `ReshareStart`, from which the run's parameters are rebuilt, and this node's
/// new share once derived (pending: not used for signing until the run finishes).
#[derive(Clone, Serialize, Deserialize)]
pub struct LifecycleRecord {
    /// Generation the run produces.
    pub generation: u64,
    /// The encoded `ReshareStart` envelope.
    pub start: Vec<u8>,
    /// This node's pending new share (a new member, after it derived it).
    pub pending: Option<StoredKey>,
    /// Whether this node has confirmed its share (sent `ReshareConfirm`).
    pub confirmed: bool,
    /// The coordinator aborted the run after this node confirmed: the node signs
    /// with its old generation again but keeps the pending share, which a valid
    /// finish proof for the run still switches in (an abort proves nothing).
    pub aborted: bool,
}

impl fmt::Debug for LifecycleRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LifecycleRecord")
            .field("generation", &self.generation)
            .field("pending", &self.pending.is_some())
            .field("confirmed", &self.confirmed)
            .field("aborted", &self.aborted)
            .finish_non_exhaustive()
    }
}

impl LifecycleRecord {
    fn decode(name: &str, plain: &[u8]) -> Result<Self> {
        postcard::from_bytes(plain).map_err(|_| corrupt(name, "lifecycle record does not decode"))
    }
}

fn is_netting_record(name: &str) -> bool {
    name.starts_with(NETTING_ROUND_PREFIX) || name.starts_with(NETTING_BUNDLE_PREFIX)
}

fn decode_identity(plain: &[u8]) -> Result<NodeIdentity> {
    let bytes: &[u8; 64] = plain
        .try_into()
        .map_err(|_| corrupt(IDENTITY_RECORD, "identity is not 64 bytes"))?;
    Ok(NodeIdentity::from_secret_bytes(bytes))
}

/// An unsealed keystore: the node identity in memory, key shares decrypted on demand.
pub struct Keystore {
    store: Store,
    sealer: Arc<Sealer>,
    identity: NodeIdentity,
}

impl fmt::Debug for Keystore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keystore")
            .field("path", &self.store.path)
            .field("keystore_id", &self.store.meta.keystore_id)
            .field("node_id", &self.identity.node_id())
            .field("secrets", &"<sealed at rest>")
            .finish()
    }
}

impl Keystore {
    /// Creates a new keystore at `path` holding `identity`, sealed under `passphrase`.
    /// Refuses if anything exists at `path` (nothing is ever overwritten). The file is
    /// created with mode 0600 on Unix. On failure the partly written file is removed.
    ///
    /// # Security
    /// `rng` (salt, keystore id, record nonces) must be cryptographically secure.
    /// The identity's secret bytes are sealed and the plaintext copy zeroized.
    pub fn init(
        path: impl AsRef<Path>,
        passphrase: &Passphrase,
        identity: &NodeIdentity,
        kdf: KdfParams,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Self> {
        let path = path.as_ref();
        kdf.validate()?;
        kdf.check_floor(kdf == KdfParams::insecure_for_tests())?;
        let mut options = OpenOptions::new();
        options.read(true).write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let file = options.open(path).map_err(|source| {
            if source.kind() == io::ErrorKind::AlreadyExists {
                KeystoreError::AlreadyExists {
                    path: path.to_path_buf(),
                }
            } else {
                KeystoreError::Io {
                    path: path.to_path_buf(),
                    source,
                }
            }
        })?;
        let insecure_test_kdf = kdf.is_below_floor();
        match Self::init_file(
            path,
            file,
            passphrase,
            identity,
            kdf,
            insecure_test_kdf,
            rng,
        ) {
            Ok(ks) => Ok(ks),
            Err(e) => {
                // We created the file (create_new), so it is ours to remove.
                let _ = fs::remove_file(path);
                Err(e)
            }
        }
    }

    fn init_file(
        path: &Path,
        file: fs::File,
        passphrase: &Passphrase,
        identity: &NodeIdentity,
        kdf: KdfParams,
        insecure_test_kdf: bool,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Self> {
        let backend = FileBackend::new(file).map_err(|e| db_error(path, e))?;
        let db = Database::builder()
            .create_with_backend(backend)
            .map_err(|e| db_error(path, e))?;
        let mut id = [0u8; 16];
        rng.fill_bytes(&mut id);
        let mut salt = [0u8; SALT_LEN];
        rng.fill_bytes(&mut salt);
        let mut meta = Meta {
            keystore_id: KeystoreId(id),
            node_id: identity.node_id(),
            created_at_ms: now_ms(),
            kdf,
            salt,
            insecure_test_kdf,
            header_hash: [0; 32],
        };
        let header = meta.encode()?;
        meta.header_hash = Sha256::digest(&header).into();
        let key = derive_key(passphrase, &salt, &kdf)?;
        let sealer = Sealer::new(&key, &meta);
        drop(key);

        let canary = sealer.seal(
            CANARY_RECORD,
            Zeroizing::new(CANARY_PLAINTEXT.to_vec()),
            rng,
        )?;
        let secret = identity.to_secret_bytes();
        let mut plain = Zeroizing::new(Vec::with_capacity(64 + TAG_LEN));
        plain.extend_from_slice(secret.as_ref());
        drop(secret);
        let sealed_identity = sealer.seal(IDENTITY_RECORD, plain, rng)?;

        let txn = db.begin_write().map_err(|e| db_error(path, e))?;
        {
            let mut m = txn.open_table(META).map_err(|e| db_error(path, e))?;
            m.insert(HEADER_KEY, header.as_slice())
                .map_err(|e| db_error(path, e))?;
            m.insert(HEADER_HASH_KEY, meta.header_hash.as_slice())
                .map_err(|e| db_error(path, e))?;
            let mut r = txn.open_table(RECORDS).map_err(|e| db_error(path, e))?;
            r.insert(CANARY_RECORD, canary.as_slice())
                .map_err(|e| db_error(path, e))?;
            r.insert(IDENTITY_RECORD, sealed_identity.as_slice())
                .map_err(|e| db_error(path, e))?;
        }
        txn.commit().map_err(|e| db_error(path, e))?;
        Ok(Self {
            store: Store {
                db: Arc::new(db),
                path: path.to_path_buf(),
                meta,
            },
            sealer: Arc::new(sealer),
            identity: identity.clone(),
        })
    }

    /// The node identity.
    ///
    /// # Security
    /// Secret key material; do not clone it further than needed or log it (its
    /// `Debug` shows only the node id).
    pub fn identity(&self) -> &NodeIdentity {
        &self.identity
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.identity.node_id()
    }

    /// The keystore id.
    pub fn keystore_id(&self) -> KeystoreId {
        self.store.meta.keystore_id
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.store.path
    }

    /// Public status.
    pub fn status(&self) -> Result<KeystoreStatus> {
        self.store.status(false)
    }

    /// The node-state records (audit anchor, policy snapshot, roster epoch).
    pub fn state(&self) -> StateStore {
        StateStore {
            db: self.store.db.clone(),
            sealer: self.sealer.clone(),
            path: self.store.path.clone(),
        }
    }

    /// Seals and stores a key share (durably: the write is committed and synced before
    /// this returns). Refuses to replace an existing key id.
    ///
    /// # Security
    /// The serialized share is zeroized after sealing; the record nonce comes from
    /// the operating system's generator.
    pub fn put_key(&self, key: &StoredKey) -> Result<()> {
        let name = StoredKey::record_name(&key.key_id());
        let len = postcard::experimental::serialized_size(key)
            .map_err(|_| KeystoreError::Internal("key does not encode"))?;
        // Pre-sized so serialization and sealing never reallocate (no stray copies).
        let buf = postcard::to_extend(key, Vec::with_capacity(len + TAG_LEN))
            .map_err(|_| KeystoreError::Internal("key does not encode"))?;
        let sealed = self.sealer.seal(&name, Zeroizing::new(buf), &mut OsRng)?;
        let txn = self.store.db.begin_write().map_err(|e| self.store.err(e))?;
        {
            let mut table = txn.open_table(RECORDS).map_err(|e| self.store.err(e))?;
            if table
                .get(name.as_str())
                .map_err(|e| self.store.err(e))?
                .is_some()
            {
                return Err(KeystoreError::KeyExists(key.key_id()));
            }
            table
                .insert(name.as_str(), sealed.as_slice())
                .map_err(|e| self.store.err(e))?;
        }
        txn.commit().map_err(|e| self.store.err(e))
    }

    /// Records, durably and before the run starts, that this node takes part in the
    /// DKG `session` for `key_id`. Returns `Ok(false)` — and records nothing — when
    /// either was already used by an earlier run (finished or not, before any
    /// restart): a coordinator cannot make this node run a session id or a key id
    /// twice.
    pub fn claim_dkg_run(&self, session: &SessionId, key_id: &KeyId) -> Result<bool> {
        let names = [
            format!("{DKG_SESSION_PREFIX}{session}"),
            format!("{DKG_KEY_PREFIX}{key_id}"),
        ];
        let mut body = Vec::with_capacity(56);
        body.extend_from_slice(session.as_bytes());
        body.extend_from_slice(key_id.as_bytes());
        body.extend_from_slice(&now_ms().to_be_bytes());
        let sealed = names
            .iter()
            .map(|n| {
                self.sealer
                    .seal(n, Zeroizing::new(body.clone()), &mut OsRng)
            })
            .collect::<Result<Vec<_>>>()?;
        let txn = self.store.db.begin_write().map_err(|e| self.store.err(e))?;
        {
            let mut table = txn.open_table(RECORDS).map_err(|e| self.store.err(e))?;
            for n in &names {
                if table
                    .get(n.as_str())
                    .map_err(|e| self.store.err(e))?
                    .is_some()
                {
                    return Ok(false);
                }
            }
            for (n, sealed) in names.iter().zip(&sealed) {
                table
                    .insert(n.as_str(), sealed.as_slice())
                    .map_err(|e| self.store.err(e))?;
            }
        }
        txn.commit().map_err(|e| self.store.err(e))?;
        Ok(true)
    }

    /// Every stored key, decrypted and authenticated, in key-id order.
    ///
    /// # Security
    /// Returns secret shares; they zeroize on drop. Use [`StoredKey::summary`] for
    /// anything displayed.
    pub fn keys(&self) -> Result<Vec<StoredKey>> {
        self.store
            .records()?
            .into_iter()
            .filter(|(name, _)| name.starts_with(KEY_PREFIX))
            .map(|(name, sealed)| self.decode_key(&name, &sealed))
            .collect()
    }

    /// One stored key, if present.
    ///
    /// # Security
    /// As [`Self::keys`].
    pub fn key(&self, key_id: &KeyId) -> Result<Option<StoredKey>> {
        let name = StoredKey::record_name(key_id);
        self.store
            .record(&name)?
            .map(|sealed| self.decode_key(&name, &sealed))
            .transpose()
    }

    fn decode_key(&self, name: &str, sealed: &[u8]) -> Result<StoredKey> {
        let plain = self.sealer.open(name, sealed)?;
        let key: StoredKey = postcard::from_bytes(&plain)
            .map_err(|_| corrupt(name, "key record does not decode"))?;
        if StoredKey::record_name(&key.key_id()) != name {
            return Err(corrupt(name, "key id does not match the record name"));
        }
        Ok(key)
    }

    /// The generation of `key_id`'s shares held here (0: the DKG's).
    pub fn key_generation(&self, key_id: &KeyId) -> Result<u64> {
        let name = format!("{KEY_GENERATION_PREFIX}{key_id}");
        match self.store.record(&name)? {
            None => Ok(0),
            Some(sealed) => decode_generation(&name, &self.sealer.open(&name, &sealed)?),
        }
    }

    /// Records the generation of `key_id`'s share (a restore from backup).
    pub fn set_key_generation(&self, key_id: &KeyId, generation: u64) -> Result<()> {
        let name = format!("{KEY_GENERATION_PREFIX}{key_id}");
        let sealed = self.sealer.seal(
            &name,
            Zeroizing::new(generation.to_be_bytes().to_vec()),
            &mut OsRng,
        )?;
        let txn = self.store.db.begin_write().map_err(|e| self.store.err(e))?;
        {
            let mut table = txn.open_table(RECORDS).map_err(|e| self.store.err(e))?;
            table
                .insert(name.as_str(), sealed.as_slice())
                .map_err(|e| self.store.err(e))?;
        }
        txn.commit().map_err(|e| self.store.err(e))
    }

    /// Records, durably and once, that this node takes part in lifecycle run
    /// `session`: `Ok(false)` when the session id was used before (a coordinator
    /// cannot make this node run one twice).
    pub fn claim_lifecycle_run(&self, session: &SessionId) -> Result<bool> {
        let name = format!("{LIFECYCLE_SESSION_PREFIX}{session}");
        let sealed = self.sealer.seal(
            &name,
            Zeroizing::new(now_ms().to_be_bytes().to_vec()),
            &mut OsRng,
        )?;
        let txn = self.store.db.begin_write().map_err(|e| self.store.err(e))?;
        {
            let mut table = txn.open_table(RECORDS).map_err(|e| self.store.err(e))?;
            if table
                .get(name.as_str())
                .map_err(|e| self.store.err(e))?
                .is_some()
            {
                return Ok(false);
            }
            table
                .insert(name.as_str(), sealed.as_slice())
                .map_err(|e| self.store.err(e))?;
        }
        txn.commit().map_err(|e| self.store.err(e))?;
        Ok(true)
    }

    /// Writes (or replaces) the lifecycle record of `key_id`'s run `session`,
    /// durably (record `lifecycle/<key id>/<session>`).
    ///
    /// # Security
    /// A pending share in the record is sealed like any key record; the plaintext
    /// buffer is zeroized.
    pub fn put_lifecycle(
        &self,
        key_id: &KeyId,
        session: &SessionId,
        record: &LifecycleRecord,
    ) -> Result<()> {
        let name = format!("{LIFECYCLE_PREFIX}{key_id}/{session}");
        let plain = Zeroizing::new(
            postcard::to_allocvec(record)
                .map_err(|_| KeystoreError::Internal("lifecycle record does not encode"))?,
        );
        let sealed = self.sealer.seal(&name, plain, &mut OsRng)?;
        let txn = self.store.db.begin_write().map_err(|e| self.store.err(e))?;
        {
            let mut table = txn.open_table(RECORDS).map_err(|e| self.store.err(e))?;
            table
                .insert(name.as_str(), sealed.as_slice())
                .map_err(|e| self.store.err(e))?;
        }
        txn.commit().map_err(|e| self.store.err(e))
    }

    /// Removes the lifecycle record of `key_id`'s run `session`, durably.
    pub fn remove_lifecycle(&self, key_id: &KeyId, session: &SessionId) -> Result<()> {
        let name = format!("{LIFECYCLE_PREFIX}{key_id}/{session}");
        let txn = self.store.db.begin_write().map_err(|e| self.store.err(e))?;
        {
            let mut table = txn.open_table(RECORDS).map_err(|e| self.store.err(e))?;
            table.remove(name.as_str()).map_err(|e| self.store.err(e))?;
        }
        txn.commit().map_err(|e| self.store.err(e))
    }

    /// Every unfinished lifecycle record, by key id and session.
    ///
    /// # Security
    /// Records may hold pending secret shares (zeroized on drop).
    pub fn lifecycle_records(&self) -> Result<Vec<(KeyId, SessionId, LifecycleRecord)>> {
        self.store
            .records()?
            .into_iter()
            .filter(|(name, _)| name.starts_with(LIFECYCLE_PREFIX))
            .map(|(name, sealed)| {
                let (key, session) = parse_lifecycle_name(&name)?;
                let record = LifecycleRecord::decode(&name, &self.sealer.open(&name, &sealed)?)?;
                Ok((key, session, record))
            })
            .collect()
    }

    /// Ends a lifecycle run of `key_id` at `generation` in one committed
    /// transaction: the new share (if this node holds one) replaces the old one, or
    /// — a member that leaves — the old share is deleted; the generation is
    /// recorded and every lifecycle record of the key in `done` (the finished run
    /// and the runs of generations it supersedes) is removed.
    ///
    /// # Security
    /// Deletes the old share for good: the run's proof of completion must have
    /// been checked before this is called.
    pub fn finish_lifecycle(
        &self,
        key_id: &KeyId,
        generation: u64,
        new: Option<&StoredKey>,
        done: &[SessionId],
    ) -> Result<()> {
        let key_name = StoredKey::record_name(key_id);
        let gen_name = format!("{KEY_GENERATION_PREFIX}{key_id}");
        let sealed_key = match new {
            Some(key) => {
                let buf = Zeroizing::new(
                    postcard::to_allocvec(key)
                        .map_err(|_| KeystoreError::Internal("key does not encode"))?,
                );
                Some(self.sealer.seal(&key_name, buf, &mut OsRng)?)
            }
            None => None,
        };
        let sealed_gen = self.sealer.seal(
            &gen_name,
            Zeroizing::new(generation.to_be_bytes().to_vec()),
            &mut OsRng,
        )?;
        let txn = self.store.db.begin_write().map_err(|e| self.store.err(e))?;
        {
            let mut table = txn.open_table(RECORDS).map_err(|e| self.store.err(e))?;
            match &sealed_key {
                Some(sealed) => {
                    table
                        .insert(key_name.as_str(), sealed.as_slice())
                        .map_err(|e| self.store.err(e))?;
                }
                None => {
                    table
                        .remove(key_name.as_str())
                        .map_err(|e| self.store.err(e))?;
                }
            }
            table
                .insert(gen_name.as_str(), sealed_gen.as_slice())
                .map_err(|e| self.store.err(e))?;
            for session in done {
                let run_name = format!("{LIFECYCLE_PREFIX}{key_id}/{session}");
                table
                    .remove(run_name.as_str())
                    .map_err(|e| self.store.err(e))?;
            }
        }
        txn.commit().map_err(|e| self.store.err(e))
    }

    /// Seals and stores a key share, replacing a share stored under the same key id
    /// (a restore told to overwrite). Returns whether one was replaced. Committed
    /// durably before it returns. [`Self::put_key`] is the refusing variant.
    ///
    /// # Security
    /// As [`Self::put_key`]. The replaced record is gone once this returns.
    pub fn replace_key(&self, key: &StoredKey) -> Result<bool> {
        let name = StoredKey::record_name(&key.key_id());
        let len = postcard::experimental::serialized_size(key)
            .map_err(|_| KeystoreError::Internal("key does not encode"))?;
        let buf = postcard::to_extend(key, Vec::with_capacity(len + TAG_LEN))
            .map_err(|_| KeystoreError::Internal("key does not encode"))?;
        let sealed = self.sealer.seal(&name, Zeroizing::new(buf), &mut OsRng)?;
        let txn = self.store.db.begin_write().map_err(|e| self.store.err(e))?;
        let replaced = {
            let mut table = txn.open_table(RECORDS).map_err(|e| self.store.err(e))?;
            let old = table
                .insert(name.as_str(), sealed.as_slice())
                .map_err(|e| self.store.err(e))?;
            old.is_some()
        };
        txn.commit().map_err(|e| self.store.err(e))?;
        Ok(replaced)
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Derives a 32-byte key from `passphrase` with Argon2id under `kdf` and `salt`, as
/// the keystore derives its record key, for other files sealed under an operator
/// passphrase (backup recovery keys). Refuses parameters out of range, and below the
/// floor unless `insecure_test_kdf` and they are [`KdfParams::insecure_for_tests`].
///
/// # Security
/// Returns the key in a zeroizing buffer.
pub fn derive_passphrase_key(
    passphrase: &Passphrase,
    salt: &[u8],
    kdf: &KdfParams,
    insecure_test_kdf: bool,
) -> Result<Zeroizing<[u8; 32]>> {
    kdf.validate()?;
    kdf.check_floor(insecure_test_kdf)?;
    derive_key(passphrase, salt, kdf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use quorate_protocol::{local, Ciphersuite};
    use rand_chacha::{rand_core::SeedableRng, ChaCha20Rng};

    fn pass(s: &str) -> Passphrase {
        Passphrase::new(s).expect("non-empty")
    }

    fn shares(seed: u64, suite: Ciphersuite) -> (Vec<NodeIdentity>, Vec<KeyShare>) {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let ids = local::identities(3, &mut rng);
        let shares = local::run_dkg(&ids, suite, 2, &mut rng).expect("dkg");
        (ids.iter().map(|i| (**i).clone()).collect(), shares)
    }

    fn stored(share: KeyShare) -> StoredKey {
        StoredKey {
            share,
            created_at_ms: 1_700_000_000_000,
            allowed_segments: vec!["dmz-a".into()],
        }
    }

    fn init(path: &Path, identity: &NodeIdentity) -> Keystore {
        let mut rng = ChaCha20Rng::seed_from_u64(99);
        Keystore::init(
            path,
            &pass("correct horse"),
            identity,
            KdfParams::insecure_for_tests(),
            &mut rng,
        )
        .expect("init")
    }

    /// A keystore holding the identity of node 0 and one ed25519 share.
    fn populated(dir: &tempfile::TempDir) -> (PathBuf, NodeIdentity, StoredKey) {
        let path = dir.path().join("ks.redb");
        let (ids, mut shares) = shares(1, Ciphersuite::Ed25519);
        let ks = init(&path, &ids[0]);
        let key = stored(shares.remove(0));
        ks.put_key(&key).expect("put");
        drop(ks);
        (path, ids[0].clone(), key)
    }

    /// Rewrites one record's bytes through the redb API (an attacker with file access).
    fn tamper_record(path: &Path, record: &str, f: impl FnOnce(&mut Vec<u8>)) {
        let db = Database::open(path).expect("open raw");
        let txn = db.begin_write().expect("txn");
        {
            let mut t = txn.open_table(RECORDS).expect("table");
            let mut value = t
                .get(record)
                .expect("get")
                .expect("record present")
                .value()
                .to_vec();
            f(&mut value);
            t.insert(record, value.as_slice()).expect("insert");
        }
        txn.commit().expect("commit");
    }

    #[test]
    fn round_trip_across_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ks.redb");
        let (ids, shares) = shares(2, Ciphersuite::Secp256k1);
        let ks = init(&path, &ids[1]);
        let first = stored(shares[1].clone());
        ks.put_key(&first).expect("put");
        let (_, more) = self::shares(3, Ciphersuite::Secp256k1Tr);
        let second = stored(more[0].clone());
        ks.put_key(&second).expect("put second");
        let keystore_id = ks.keystore_id();
        drop(ks);

        let sealed = SealedKeystore::open(&path).expect("open");
        let status = sealed.status().expect("status");
        assert!(status.initialized && status.sealed);
        assert_eq!(status.records, 4, "canary, identity, two keys");
        assert_eq!(status.kdf, KdfParams::insecure_for_tests());
        assert_eq!(status.keystore_id, keystore_id.to_string());
        assert_eq!(status.node_id, ids[1].node_id().to_string());
        let mut expected_ids = vec![first.key_id().to_string(), second.key_id().to_string()];
        expected_ids.sort();
        assert_eq!(status.key_ids, expected_ids);

        let ks = sealed.unseal(&pass("correct horse")).expect("unseal");
        assert_eq!(ks.identity().node_id(), ids[1].node_id());
        assert_eq!(
            ks.identity().to_secret_bytes()[..],
            ids[1].to_secret_bytes()[..]
        );
        let keys = ks.keys().expect("keys");
        assert_eq!(keys.len(), 2);
        let got = ks.key(&first.key_id()).expect("key").expect("present");
        assert_eq!(got.share.public, first.share.public);
        assert_eq!(got.share.index, first.share.index);
        assert_eq!(got.created_at_ms, first.created_at_ms);
        assert_eq!(got.allowed_segments, first.allowed_segments);
        // The secret part round-trips too: identical serialization.
        assert_eq!(
            postcard::to_allocvec(&got).expect("enc"),
            postcard::to_allocvec(&first).expect("enc")
        );
        assert!(ks.key(&KeyId([0xee; 16])).expect("lookup").is_none());
        assert!(!ks.status().expect("status").sealed);
    }

    #[test]
    fn dkg_session_and_key_ids_are_claimed_once_across_reopen() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("ks.redb");
        let (ids, _) = shares(77, Ciphersuite::Ed25519);
        let ks = init(&path, &ids[0]);
        let (s1, s2, k1, k2) = (
            SessionId([1; 32]),
            SessionId([2; 32]),
            KeyId([1; 16]),
            KeyId([2; 16]),
        );
        assert!(ks.claim_dkg_run(&s1, &k1).expect("claim"));
        assert!(
            !ks.claim_dkg_run(&s1, &k2).expect("claim"),
            "session reused"
        );
        assert!(!ks.claim_dkg_run(&s2, &k1).expect("claim"), "key id reused");
        drop(ks);
        let ks = SealedKeystore::open(&path)
            .expect("open")
            .unseal(&pass("correct horse"))
            .expect("unseal checks the new records too");
        assert!(
            !ks.claim_dkg_run(&s1, &KeyId([3; 16])).expect("claim"),
            "forgotten at restart"
        );
        assert!(ks.claim_dkg_run(&s2, &k2).expect("claim"));
    }

    #[test]
    fn put_key_refuses_to_overwrite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, _, key) = populated(&dir);
        let ks = SealedKeystore::open(&path)
            .expect("open")
            .unseal(&pass("correct horse"))
            .expect("unseal");
        assert!(matches!(
            ks.put_key(&key),
            Err(KeystoreError::KeyExists(id)) if id == key.key_id()
        ));
        assert_eq!(ks.keys().expect("keys").len(), 1);
    }

    #[test]
    fn netting_records_survive_unseal_and_are_bounded_and_removed_per_round() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, _, _) = populated(&dir);
        let unseal = || {
            SealedKeystore::open(&path)
                .expect("open")
                .unseal(&pass("correct horse"))
                .expect("unseal")
        };
        let ks = unseal();
        let state = ks.state();
        let round = "aa".repeat(16);
        let other = "bb".repeat(16);
        state
            .put_netting(&format!("{NETTING_ROUND_PREFIX}{round}"), b"round".to_vec())
            .expect("round");
        for party in [0, 1, 10] {
            state
                .put_netting(
                    &format!("{NETTING_BUNDLE_PREFIX}{round}/{party}"),
                    vec![party; 8],
                )
                .expect("bundle");
        }
        state
            .put_netting(&format!("{NETTING_ROUND_PREFIX}{other}"), b"other".to_vec())
            .expect("other round");
        assert!(matches!(
            state.put_netting(&format!("{NETTING_BUNDLE_PREFIX}{round}/2"), vec![0; MAX_NETTING_RECORD + 1]),
            Err(KeystoreError::TooLarge { len, .. }) if len == MAX_NETTING_RECORD + 1
        ));
        state
            .put_netting(
                &format!("{NETTING_BUNDLE_PREFIX}{round}/3"),
                vec![0; MAX_NETTING_RECORD],
            )
            .expect("a record at the limit fits");
        assert!(
            state.put_netting("key/00", Vec::new()).is_err(),
            "only netting names"
        );
        drop((ks, state));

        // Every record authenticates at unseal and reads back.
        let ks = unseal();
        let names: Vec<String> = ks
            .state()
            .netting_records()
            .expect("records")
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names.len(), 6, "{names:?}");
        ks.state().remove_netting_round(&round).expect("remove");
        let left: Vec<(String, Zeroizing<Vec<u8>>)> =
            ks.state().netting_records().expect("records");
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].0, format!("{NETTING_ROUND_PREFIX}{other}"));
        assert_eq!(left[0].1.as_slice(), b"other");
        assert_eq!(ks.keys().expect("keys").len(), 1, "key records untouched");
    }

    #[test]
    fn wrong_passphrase_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, _, _) = populated(&dir);
        let err = SealedKeystore::open(&path)
            .expect("open")
            .unseal(&pass("correct horsf"))
            .expect_err("wrong passphrase");
        assert!(matches!(err, KeystoreError::WrongPassphrase), "{err:?}");
        // The right one still works afterwards.
        SealedKeystore::open(&path)
            .expect("open")
            .unseal(&pass("correct horse"))
            .expect("unseal");
    }

    #[test]
    fn init_refuses_to_overwrite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, id, _) = populated(&dir);
        let before = fs::read(&path).expect("read");
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        let err = Keystore::init(
            &path,
            &pass("other"),
            &id,
            KdfParams::insecure_for_tests(),
            &mut rng,
        )
        .expect_err("must refuse");
        assert!(
            matches!(err, KeystoreError::AlreadyExists { .. }),
            "{err:?}"
        );
        assert_eq!(fs::read(&path).expect("read"), before, "file untouched");
        // An unrelated existing file is not overwritten either.
        let other = dir.path().join("notes.txt");
        fs::write(&other, b"keep me").expect("write");
        assert!(matches!(
            Keystore::init(
                &other,
                &pass("x"),
                &id,
                KdfParams::insecure_for_tests(),
                &mut rng
            ),
            Err(KeystoreError::AlreadyExists { .. })
        ));
        assert_eq!(fs::read(&other).expect("read"), b"keep me");
    }

    #[test]
    fn tampered_identity_record_is_corrupt() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, _, _) = populated(&dir);
        tamper_record(&path, IDENTITY_RECORD, |v| {
            let last = v.len() - 20;
            v[last] ^= 0x01;
        });
        let err = SealedKeystore::open(&path)
            .expect("open")
            .unseal(&pass("correct horse"))
            .expect_err("tampered");
        assert!(
            matches!(&err, KeystoreError::Corrupt { record, .. } if record == IDENTITY_RECORD),
            "{err:?}"
        );
    }

    #[test]
    fn tampered_key_record_fails_unseal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, _, key) = populated(&dir);
        let name = StoredKey::record_name(&key.key_id());
        // Flip a byte of the nonce, then (separately) of the tag.
        for pos in [3usize, usize::MAX] {
            let dir2 = tempfile::tempdir().expect("tempdir");
            let copy = dir2.path().join("ks.redb");
            fs::copy(&path, &copy).expect("copy");
            tamper_record(&copy, &name, |v| {
                let i = if pos == usize::MAX { v.len() - 1 } else { pos };
                v[i] ^= 0x80;
            });
            let err = SealedKeystore::open(&copy)
                .expect("open")
                .unseal(&pass("correct horse"))
                .expect_err("tampered");
            assert!(
                matches!(&err, KeystoreError::Corrupt { record, .. } if *record == name),
                "{err:?}"
            );
        }
    }

    #[test]
    fn records_cannot_be_swapped_between_names_or_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, _, key) = populated(&dir);
        let name = StoredKey::record_name(&key.key_id());
        // Copy the key record under another key id's name.
        let forged = StoredKey::record_name(&KeyId([0x42; 16]));
        {
            let db = Database::open(&path).expect("open raw");
            let txn = db.begin_write().expect("txn");
            {
                let mut t = txn.open_table(RECORDS).expect("table");
                let v = t
                    .get(name.as_str())
                    .expect("get")
                    .expect("some")
                    .value()
                    .to_vec();
                t.insert(forged.as_str(), v.as_slice()).expect("insert");
            }
            txn.commit().expect("commit");
        }
        let err = SealedKeystore::open(&path)
            .expect("open")
            .unseal(&pass("correct horse"))
            .expect_err("swapped");
        assert!(
            matches!(&err, KeystoreError::Corrupt { record, .. } if *record == forged),
            "{err:?}"
        );

        // A record from another keystore with the same passphrase does not open either.
        let dir2 = tempfile::tempdir().expect("tempdir");
        let (other_path, _, _) = populated(&dir2);
        let foreign = {
            let db = Database::open(&other_path).expect("open raw");
            let txn = db.begin_read().expect("txn");
            let t = txn.open_table(RECORDS).expect("table");
            let v = t
                .get(IDENTITY_RECORD)
                .expect("get")
                .expect("some")
                .value()
                .to_vec();
            v
        };
        let dir3 = tempfile::tempdir().expect("tempdir");
        let (third, _, _) = populated(&dir3);
        tamper_record(&third, IDENTITY_RECORD, |v| *v = foreign);
        let err = SealedKeystore::open(&third)
            .expect("open")
            .unseal(&pass("correct horse"))
            .expect_err("foreign record");
        assert!(
            matches!(&err, KeystoreError::Corrupt { record, .. } if record == IDENTITY_RECORD),
            "{err:?}"
        );
    }

    #[test]
    fn flipped_byte_in_file_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, _, key) = populated(&dir);
        // Find the sealed key record's bytes in the raw file and flip one byte of
        // every copy (copy-on-write may leave stale copies around).
        let name = StoredKey::record_name(&key.key_id());
        let sealed = {
            let db = Database::open(&path).expect("open raw");
            let txn = db.begin_read().expect("txn");
            let t = txn.open_table(RECORDS).expect("table");
            let v = t
                .get(name.as_str())
                .expect("get")
                .expect("some")
                .value()
                .to_vec();
            v
        };
        let mut file = fs::read(&path).expect("read");
        let needle = &sealed[1 + NONCE_LEN..1 + NONCE_LEN + 32];
        let hits: Vec<usize> = file
            .windows(needle.len())
            .enumerate()
            .filter(|(_, w)| *w == needle)
            .map(|(i, _)| i)
            .collect();
        assert!(!hits.is_empty(), "ciphertext found in the file");
        for i in hits {
            file[i + 5] ^= 0x10;
        }
        fs::write(&path, &file).expect("write");
        let result = SealedKeystore::open(&path).and_then(|s| s.unseal(&pass("correct horse")));
        let err = result.expect_err("a flipped byte must never yield a key");
        // redb's page checksums or our AEAD catch it; either way it is reported as
        // corruption, not as a wrong passphrase.
        assert!(matches!(err, KeystoreError::Corrupt { .. }), "{err:?}");
    }

    #[test]
    fn truncated_file_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, _, _) = populated(&dir);
        let len = fs::metadata(&path).expect("meta").len();
        for new_len in [len / 2, 100, 0] {
            let copy = dir.path().join(format!("trunc-{new_len}.redb"));
            fs::copy(&path, &copy).expect("copy");
            let f = OpenOptions::new().write(true).open(&copy).expect("open");
            f.set_len(new_len).expect("truncate");
            drop(f);
            let err = SealedKeystore::open(&copy)
                .and_then(|s| s.unseal(&pass("correct horse")))
                .expect_err("truncated");
            assert!(
                matches!(
                    err,
                    KeystoreError::Corrupt { .. } | KeystoreError::NotAKeystore { .. }
                ),
                "truncated to {new_len}: {err:?}"
            );
            assert!(!err.to_string().is_empty());
        }
    }

    #[test]
    fn missing_file_and_foreign_database_are_clear_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(matches!(
            SealedKeystore::open(dir.path().join("nope.redb")),
            Err(KeystoreError::NotFound { .. })
        ));
        let other = dir.path().join("other.redb");
        drop(Database::create(&other).expect("create"));
        let err = SealedKeystore::open(&other).expect_err("not a keystore");
        assert!(matches!(err, KeystoreError::NotAKeystore { .. }), "{err:?}");
        let text = dir.path().join("text");
        fs::write(&text, vec![b'x'; 8192]).expect("write");
        assert!(SealedKeystore::open(&text).is_err());
    }

    /// Rewrites the header JSON with `edit`; recomputes `header_sha256` when
    /// `fix_checksum` (an attacker who knows the format), else keeps the old one.
    fn tamper_header(path: &Path, edit: impl FnOnce(&str) -> String, fix_checksum: bool) {
        let db = Database::open(path).expect("open raw");
        let txn = db.begin_write().expect("txn");
        {
            let mut t = txn.open_table(META).expect("table");
            let v = t
                .get(HEADER_KEY)
                .expect("get")
                .expect("some")
                .value()
                .to_vec();
            let text = String::from_utf8(v).expect("json");
            let edited = edit(&text);
            assert_ne!(edited, text, "the edit changes the header");
            t.insert(HEADER_KEY, edited.as_bytes()).expect("insert");
            if fix_checksum {
                let sum: [u8; 32] = Sha256::digest(edited.as_bytes()).into();
                t.insert(HEADER_HASH_KEY, sum.as_slice()).expect("insert");
            }
        }
        txn.commit().expect("commit");
    }

    #[test]
    fn header_edit_without_checksum_is_corrupt_header() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, _, _) = populated(&dir);
        tamper_header(
            &path,
            |t| t.replace("\"created_at_ms\":", "\"created_at_ms\":1"),
            false,
        );
        let err = SealedKeystore::open(&path).expect_err("checksum");
        assert!(
            matches!(&err, KeystoreError::Corrupt { record, .. } if record == HEADER_KEY),
            "{err:?}"
        );
    }

    #[test]
    fn header_edit_with_recomputed_checksum_fails_unseal() {
        // Each edit keeps the header well-formed and its checksum right, so only the
        // binding of the header hash into every record's associated data (and the
        // KDF inputs) can catch it.
        type Edit = fn(&str) -> String;
        let edits: [(&str, Edit); 3] = [
            ("created_at_ms", |t| {
                t.replace("\"created_at_ms\":", "\"created_at_ms\":1")
            }),
            ("node_id", |t| {
                let start = t.find("\"node_id\":\"").expect("node_id") + 11;
                let mut out = t.to_owned();
                out.replace_range(start..start + 64, &"cd".repeat(32));
                out
            }),
            ("salt", |t| {
                // Another 16 bytes of salt: same length, still hex.
                let start = t.find("\"salt\":\"").expect("salt") + 8;
                let mut out = t.to_owned();
                out.replace_range(start..start + 32, &"ab".repeat(16));
                out
            }),
        ];
        for (field, edit) in edits {
            let dir = tempfile::tempdir().expect("tempdir");
            let (path, _, _) = populated(&dir);
            tamper_header(&path, edit, true);
            let sealed = SealedKeystore::open(&path).expect("checksum matches: opens");
            let err = sealed
                .unseal(&pass("correct horse"))
                .expect_err("edited header must not unseal");
            assert!(
                matches!(err, KeystoreError::WrongPassphrase),
                "{field}: {err:?}"
            );
        }
        // Weakening the KDF of a test-preset keystore is caught by the floor first.
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, _, _) = populated(&dir);
        tamper_header(&path, |t| t.replace("\"t_cost\":1", "\"t_cost\":2"), true);
        let err = SealedKeystore::open(&path)
            .expect("opens")
            .unseal(&pass("correct horse"))
            .expect_err("edited KDF");
        assert!(matches!(err, KeystoreError::BadKdfParams(_)), "{err:?}");
    }

    #[test]
    fn init_refuses_kdf_below_the_floor() {
        let dir = tempfile::tempdir().expect("tempdir");
        let id = NodeIdentity::generate(&mut ChaCha20Rng::seed_from_u64(10));
        for weak in [
            KdfParams {
                m_cost_kib: KdfParams::MIN_M_COST_KIB - 1,
                ..KdfParams::production()
            },
            KdfParams {
                t_cost: 1,
                ..KdfParams::production()
            },
        ] {
            let path = dir.path().join("weak.redb");
            let err = Keystore::init(
                &path,
                &pass("p"),
                &id,
                weak,
                &mut ChaCha20Rng::seed_from_u64(11),
            )
            .expect_err("below the floor");
            assert!(matches!(err, KeystoreError::BadKdfParams(_)), "{err:?}");
            assert!(!path.exists(), "no file left behind");
        }
        // The floor itself is accepted, and its header carries no test marker.
        let path = dir.path().join("floor.redb");
        let floor = KdfParams {
            m_cost_kib: KdfParams::MIN_M_COST_KIB,
            t_cost: KdfParams::MIN_T_COST,
            p_cost: 1,
        };
        let ks = Keystore::init(
            &path,
            &pass("p"),
            &id,
            floor,
            &mut ChaCha20Rng::seed_from_u64(12),
        )
        .expect("floor");
        assert!(!ks.status().expect("status").insecure_test_kdf);
        drop(ks);
        let header = {
            let db = Database::open(&path).expect("raw");
            let txn = db.begin_read().expect("txn");
            let t = txn.open_table(META).expect("table");
            let v = t
                .get(HEADER_KEY)
                .expect("get")
                .expect("some")
                .value()
                .to_vec();
            String::from_utf8(v).expect("utf8")
        };
        assert!(!header.contains("insecure_test_kdf"), "{header}");
        SealedKeystore::open(&path)
            .expect("open")
            .unseal(&pass("p"))
            .expect("unseal at the floor");
    }

    #[test]
    fn weak_kdf_without_test_marker_is_refused_at_unseal() {
        // A keystore sealed under weak parameters whose header does not say it was
        // made with the test preset (as a keystore from before the floor would be):
        // the right passphrase would open it, but unseal refuses.
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ks.redb");
        let id = NodeIdentity::generate(&mut ChaCha20Rng::seed_from_u64(13));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .expect("create");
        drop(
            Keystore::init_file(
                &path,
                file,
                &pass("correct horse"),
                &id,
                KdfParams::insecure_for_tests(),
                false,
                &mut ChaCha20Rng::seed_from_u64(14),
            )
            .expect("init"),
        );
        let sealed = SealedKeystore::open(&path).expect("open");
        assert!(!sealed.status().expect("status").insecure_test_kdf);
        let err = sealed
            .unseal(&pass("correct horse"))
            .expect_err("weak KDF without marker");
        assert!(
            matches!(&err, KeystoreError::BadKdfParams(m) if m.contains("below the minimum")),
            "{err:?}"
        );
        // The test preset made through `init` is marked and unseals (with a warning).
        let dir2 = tempfile::tempdir().expect("tempdir");
        let (marked, _, _) = populated(&dir2);
        let sealed = SealedKeystore::open(&marked).expect("open");
        assert!(sealed.status().expect("status").insecure_test_kdf);
        sealed.unseal(&pass("correct horse")).expect("test preset");
    }

    #[test]
    fn node_state_records_round_trip_and_unseal_accepts_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, _, _) = populated(&dir);
        let ks = SealedKeystore::open(&path)
            .expect("open")
            .unseal(&pass("correct horse"))
            .expect("unseal");
        let st = ks.state();
        assert_eq!(st.audit_anchor().expect("anchor"), None);
        assert_eq!(st.roster_epoch().expect("epoch"), 0);
        let anchor = AuditAnchor {
            seq: 41,
            hash: [9; 32],
            end_offset: 12_345,
        };
        st.set_audit_anchor(&anchor).expect("anchor");
        st.set_roster_epoch(7).expect("epoch");
        // A snapshot larger than the 1 MiB limit of other records.
        let big = vec![0x5a; 3 << 20];
        st.set_audit_snapshot(big.clone()).expect("snapshot");
        assert!(st
            .set_audit_snapshot(vec![0; MAX_SNAPSHOT_LEN + 1])
            .is_err());
        drop((st, ks));
        let ks = SealedKeystore::open(&path)
            .expect("open")
            .unseal(&pass("correct horse"))
            .expect("unseal checks the new records too");
        let st = ks.state();
        assert_eq!(st.audit_anchor().expect("anchor"), Some(anchor));
        assert_eq!(st.roster_epoch().expect("epoch"), 7);
        assert_eq!(
            st.audit_snapshot()
                .expect("snapshot")
                .expect("some")
                .as_slice(),
            big.as_slice()
        );
        drop((st, ks));
        // A tampered anchor fails unseal, naming the record.
        tamper_record(&path, AUDIT_ANCHOR_RECORD, |v| v[20] ^= 1);
        let err = SealedKeystore::open(&path)
            .expect("open")
            .unseal(&pass("correct horse"))
            .expect_err("tampered anchor");
        assert!(
            matches!(&err, KeystoreError::Corrupt { record, .. } if record == AUDIT_ANCHOR_RECORD),
            "{err:?}"
        );
    }

    #[test]
    fn keystore_is_locked_while_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, _, _) = populated(&dir);
        let first = SealedKeystore::open(&path).expect("open");
        let err = SealedKeystore::open(&path).expect_err("locked");
        assert!(matches!(err, KeystoreError::Locked { .. }), "{err:?}");
        drop(first);
        SealedKeystore::open(&path).expect("reopen");
    }

    #[test]
    fn debug_never_shows_secrets() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, id, key) = populated(&dir);
        let ks = SealedKeystore::open(&path)
            .expect("open")
            .unseal(&pass("correct horse"))
            .expect("unseal");
        let secret_hex = hex::encode(&id.to_secret_bytes()[..]);
        let sign_hex = &secret_hex[..64];
        let seal_hex = &secret_hex[64..];
        let signing_share = hex::encode(
            key.share
                .key_package::<frost_ed25519::Ed25519Sha512>()
                .expect("ed25519 share")
                .signing_share()
                .serialize(),
        );
        let p = pass("correct horse");
        for text in [
            format!("{ks:?}"),
            format!("{key:?}"),
            format!("{:?}", ks.keys().expect("keys")),
            format!("{p:?}"),
            format!("{:?}", ks.status().expect("status")),
        ] {
            assert!(!text.contains(sign_hex), "{text}");
            assert!(!text.contains(seal_hex), "{text}");
            assert!(!text.contains(&signing_share), "{text}");
            assert!(!text.contains("correct horse"), "{text}");
        }
        assert!(format!("{key:?}").contains("<secret>"));
    }

    #[test]
    fn passphrase_sources() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("pass");
        fs::write(&file, "from file\n").expect("write");
        let p = PassphraseSource::File(file.clone()).read().expect("file");
        assert_eq!(p.as_bytes(), b"from file");
        fs::write(&file, "crlf\r\n").expect("write");
        assert_eq!(
            Passphrase::from_file(&file).expect("file").as_bytes(),
            b"crlf"
        );
        fs::write(&file, "\n").expect("write");
        assert!(matches!(
            Passphrase::from_file(&file),
            Err(KeystoreError::Passphrase(_))
        ));
        fs::write(&file, vec![b'a'; 5000]).expect("write");
        assert!(Passphrase::from_file(&file).is_err());
        assert!(matches!(
            Passphrase::from_file(&dir.path().join("missing")),
            Err(KeystoreError::Io { .. })
        ));
        // A variable name unique to this test; only read, never set, here.
        assert!(matches!(
            PassphraseSource::Env("QUORATE_TEST_SURELY_UNSET_VAR".into()).read(),
            Err(KeystoreError::Passphrase(m)) if m.contains("QUORATE_TEST_SURELY_UNSET_VAR")
        ));
        let path_var = PassphraseSource::Env("PATH".into())
            .read()
            .expect("PATH is set");
        assert!(!path_var.as_bytes().is_empty());
        assert!(Passphrase::new("").is_err());
    }

    #[test]
    fn kdf_params_are_bounded() {
        assert!(KdfParams::production().validate().is_ok());
        assert!(KdfParams::insecure_for_tests().validate().is_ok());
        for bad in [
            KdfParams {
                m_cost_kib: KdfParams::MAX_M_COST_KIB + 1,
                ..KdfParams::production()
            },
            KdfParams {
                t_cost: 0,
                ..KdfParams::production()
            },
            KdfParams {
                p_cost: 0,
                ..KdfParams::production()
            },
            KdfParams {
                m_cost_kib: 1,
                ..KdfParams::production()
            },
        ] {
            assert!(
                matches!(bad.validate(), Err(KeystoreError::BadKdfParams(_))),
                "{bad:?}"
            );
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let id = NodeIdentity::generate(&mut ChaCha20Rng::seed_from_u64(8));
        let path = dir.path().join("ks.redb");
        let err = Keystore::init(
            &path,
            &pass("p"),
            &id,
            KdfParams {
                t_cost: 0,
                ..KdfParams::insecure_for_tests()
            },
            &mut ChaCha20Rng::seed_from_u64(9),
        )
        .expect_err("bad params");
        assert!(matches!(err, KeystoreError::BadKdfParams(_)));
        assert!(!path.exists(), "no file left behind");
    }
}
