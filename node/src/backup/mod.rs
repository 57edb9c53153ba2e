//! Encrypted backups of a node's key shares and identity (`quorate keystore backup`
//! / `restore`).
//!
//! A backup is encrypted to one or more *recovery keys*, each a hybrid key pair of
//! ML-KEM-768 and X25519 ([`hybrid`]): a random data key encrypts the payload once
//! with ChaCha20-Poly1305, and is wrapped to each recipient under a key that only
//! someone who breaks both ML-KEM-768 and X25519 (or holds the recovery secret key)
//! can derive. So a backup stays confidential against a future quantum adversary
//! who records it today. The payload holds the node identity and the selected key
//! shares, never a signing nonce (nonces live only in memory, DESIGN §1.1).
//!
//! Restore ([`restore`]) authenticates everything (the header, the key wrap and the
//! payload; the header's hash is bound into every AEAD as associated data), then
//! checks every share against its group's verifying share and against the target
//! node before anything is written. File formats: `node/README.md`, "Backups".

pub mod format;
pub mod hybrid;
pub mod recovery_key;
pub mod restore;

#[cfg(test)]
mod tests;

use std::{fs, io, path::Path, path::PathBuf};

use quorate_protocol::{KeyId, NodeId};
use rand_core::CryptoRngCore;

pub use format::{BackupHeader, FORMAT_VERSION, MAX_BACKUP_FILE};
pub use hybrid::{RecoveryPublicKey, RecoverySecretKey};
pub use recovery_key::create_recovery_key_files;
pub use restore::{
    check_share, open_backup, open_backup_file, restore_into, restore_new, OpenedBackup,
    RestoreOptions, RestoreReport,
};

use crate::keystore::{Keystore, KeystoreError, StoredKey};

/// Errors of backups, restores and recovery keys. Never carries secret material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// The keystore refused (wrong passphrase, locked, a write failed, …).
    #[error(transparent)]
    Keystore(#[from] KeystoreError),
    /// File-system error.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// An output file exists; nothing is overwritten.
    #[error("{path} already exists; refusing to overwrite it")]
    AlreadyExists {
        /// The path.
        path: PathBuf,
    },
    /// Something exceeds its limit (checked before it is read or allocated).
    #[error("{what} of {len} exceeds the limit of {max}")]
    TooLarge {
        /// What.
        what: &'static str,
        /// Its size (bytes or count).
        len: u64,
        /// The limit.
        max: u64,
    },
    /// A backup or key file does not decode.
    #[error("{0}")]
    Malformed(String),
    /// Written by a newer format.
    #[error("unsupported {what} version {version}")]
    UnsupportedVersion {
        /// Which file or part.
        what: &'static str,
        /// The version found.
        version: u32,
    },
    /// A recovery public key is unusable.
    #[error("recovery key: {0}")]
    RecoveryKey(String),
    /// The recovery secret key file does not open: a wrong passphrase, or the file
    /// was edited (the two cannot be told apart).
    #[error("wrong passphrase for the recovery key (or its file was altered)")]
    WrongRecoveryPassphrase,
    /// No recovery key was given to encrypt to.
    #[error("a backup needs at least one recovery public key")]
    NoRecipients,
    /// The same recovery key was given twice.
    #[error("recovery key {fingerprint} is given twice")]
    DuplicateRecipient {
        /// Its fingerprint (hex).
        fingerprint: String,
    },
    /// The backup is not encrypted to this recovery key.
    #[error(
        "this backup is not encrypted to recovery key {fingerprint}; its recipients are {}",
        recipients.join(", ")
    )]
    NotARecipient {
        /// The recovery key's fingerprint (hex).
        fingerprint: String,
        /// The backup's recipients (hex fingerprints).
        recipients: Vec<String>,
    },
    /// The data key wrapped to this recovery key does not authenticate.
    #[error(
        "the key wrap for recovery key {fingerprint} does not authenticate: the backup's \
         header or its key wrap was altered or damaged"
    )]
    WrapDoesNotOpen {
        /// The recovery key's fingerprint (hex).
        fingerprint: String,
    },
    /// The payload does not authenticate under the unwrapped data key.
    #[error("the backup's payload does not authenticate: the file was altered or damaged")]
    PayloadCorrupt,
    /// The decrypted payload contradicts its authenticated header, or does not decode.
    #[error("backup is inconsistent: {0}")]
    Inconsistent(String),
    /// The backup is of another node than the keystore's.
    #[error(
        "this backup is of node {backup}; it cannot be restored into the keystore of node \
         {keystore}"
    )]
    NodeMismatch {
        /// The backup's node.
        backup: NodeId,
        /// The keystore's node.
        keystore: NodeId,
    },
    /// A share is not this node's share of its key.
    #[error("key {key_id}: not a share of node {node}: {reason}")]
    ShareNotForNode {
        /// The key.
        key_id: KeyId,
        /// The node restored into.
        node: NodeId,
        /// What does not match.
        reason: String,
    },
    /// A share fails the check against its group's verifying share.
    #[error("key {key_id}: the share fails its verifying-share check: {reason}")]
    InvalidShare {
        /// The key.
        key_id: KeyId,
        /// What failed.
        reason: String,
    },
    /// Keys of the backup are already in the keystore.
    #[error(
        "key(s) {} already in the keystore; refusing to overwrite (restore other keys, or \
         allow overwriting)",
        key_ids.join(", ")
    )]
    KeysExist {
        /// The key ids (hex).
        key_ids: Vec<String>,
    },
    /// A key in the keystore has the same id but another group key or suite.
    #[error(
        "key {key_id} in the keystore is another key (other group key or suite) than the \
         backup's; refusing to replace it"
    )]
    DifferentKey {
        /// The key.
        key_id: KeyId,
    },
    /// The backup's share is of an older generation than the one in the keystore
    /// (a refresh or reshare ran since the backup was taken).
    #[error(
        "key {key_id}: the backup holds generation {backup}, the keystore generation \
         {keystore}; an older share is never restored over a newer one"
    )]
    StaleGeneration {
        /// The key.
        key_id: KeyId,
        /// Generation in the backup.
        backup: u64,
        /// Generation in the keystore.
        keystore: u64,
    },
    /// A requested key is not there.
    #[error("key {key_id} is not in the {place}")]
    UnknownKey {
        /// The key.
        key_id: KeyId,
        /// `keystore` or `backup`.
        place: &'static str,
    },
    /// A local bug, not an input fault.
    #[error("backup internal error: {0}")]
    Internal(&'static str),
}

/// Makes a backup of the unsealed keystore `ks`: its node identity and its key
/// shares (all of them, or only `keys`), encrypted to every recipient. Each share is
/// checked against its verifying share first ([`check_share`]), so a backup never
/// carries a share that a restore would refuse. Returns the header and the file's
/// bytes.
///
/// # Security
/// The plaintext payload (identity and shares) exists only in zeroizing buffers;
/// the file holds it encrypted. `rng` must be cryptographically secure.
pub fn create_backup(
    ks: &Keystore,
    recipients: &[RecoveryPublicKey],
    keys: &[KeyId],
    rng: &mut impl CryptoRngCore,
) -> Result<(BackupHeader, Vec<u8>), BackupError> {
    if recipients.is_empty() {
        return Err(BackupError::NoRecipients);
    }
    let all = ks.keys()?;
    for id in keys {
        if !all.iter().any(|k| k.key_id() == *id) {
            return Err(BackupError::UnknownKey {
                key_id: *id,
                place: "keystore",
            });
        }
    }
    let chosen: Vec<StoredKey> = all
        .into_iter()
        .filter(|k| keys.is_empty() || keys.contains(&k.key_id()))
        .collect();
    let node = ks.node_id();
    for k in &chosen {
        check_share(k, &node)?;
    }
    let payload = format::encode_payload(ks.identity(), &chosen)?;
    let mut header = BackupHeader {
        node_id: node,
        keystore_id: ks.keystore_id(),
        created_at_ms: now_ms(),
        roster_epoch: ks.state().roster_epoch()?,
        key_ids: chosen.iter().map(StoredKey::key_id).collect(),
        generations: chosen
            .iter()
            .map(|k| ks.key_generation(&k.key_id()))
            .collect::<Result<Vec<_>, _>>()?,
        recipients: Vec::new(),
    };
    drop(chosen);
    let bytes = format::seal(&mut header, payload, recipients, rng)?;
    Ok((header, bytes))
}

/// [`create_backup`], written to a new file `out` (mode 0600; an existing file is
/// refused and a partly written one removed).
///
/// # Security
/// As [`create_backup`].
pub fn write_backup_file(
    ks: &Keystore,
    recipients: &[RecoveryPublicKey],
    keys: &[KeyId],
    out: &Path,
    rng: &mut impl CryptoRngCore,
) -> Result<BackupHeader, BackupError> {
    if out.exists() {
        return Err(BackupError::AlreadyExists {
            path: out.to_path_buf(),
        });
    }
    let (header, bytes) = create_backup(ks, recipients, keys, rng)?;
    recovery_key::write_new(out, &bytes, 0o600)?;
    Ok(header)
}

/// Reads a backup file's bytes, refusing one larger than [`MAX_BACKUP_FILE`] before
/// reading it.
fn read_backup_bytes(path: &Path) -> Result<Vec<u8>, BackupError> {
    let io_err = |source| BackupError::Io {
        path: path.to_path_buf(),
        source,
    };
    let len = fs::metadata(path).map_err(io_err)?.len();
    if len > MAX_BACKUP_FILE {
        return Err(BackupError::TooLarge {
            what: "backup file",
            len,
            max: MAX_BACKUP_FILE,
        });
    }
    fs::read(path).map_err(io_err)
}

/// The public header of a backup file (no recovery key needed; authenticated only
/// when the backup is opened).
pub fn read_backup_header(path: &Path) -> Result<BackupHeader, BackupError> {
    Ok(format::BackupFile::decode(&read_backup_bytes(path)?)?.header)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
