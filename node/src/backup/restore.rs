//! Restoring a backup: decrypt and authenticate it, check every share against its
//! group's verifying share and against the target node, then write the shares.

use std::{fmt, fs, path::Path};

use frost_core::{
    keys::{KeyPackage, PublicKeyPackage, VerifyingShare},
    Identifier,
};
use quorate_protocol::{suite::Suite, KeyId, KeyShare, NodeId, NodeIdentity};
use rand_core::CryptoRngCore;

use super::{
    format::{decode_payload, BackupFile, BackupHeader},
    hybrid::RecoverySecretKey,
    BackupError,
};
use crate::keystore::{KdfParams, KeySummary, Keystore, Passphrase, StoredKey};

/// A backup decrypted and authenticated: the node identity and its key shares.
pub struct OpenedBackup {
    /// The public header (authenticated).
    pub header: BackupHeader,
    identity: NodeIdentity,
    keys: Vec<StoredKey>,
}

impl fmt::Debug for OpenedBackup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenedBackup")
            .field("node_id", &self.header.node_id)
            .field("key_ids", &self.header.key_ids)
            .field("secrets", &"<secret>")
            .finish()
    }
}

impl OpenedBackup {
    /// Public metadata of the shares in the backup.
    pub fn summaries(&self) -> Vec<KeySummary> {
        self.keys.iter().map(StoredKey::summary).collect()
    }

    /// The backed-up node identity.
    ///
    /// # Security
    /// Secret key material (its `Debug` shows only the node id).
    pub fn identity(&self) -> &NodeIdentity {
        &self.identity
    }
}

/// Decodes `bytes`, decrypts them with `secret` and checks that the payload agrees
/// with the header (node id of the identity, key ids in order, no duplicates).
///
/// # Security
/// On success the returned value holds the node identity and every share in memory
/// (zeroized on drop). Every failure names what failed: not a recipient, a key wrap
/// or payload that does not authenticate, a payload that contradicts its header.
pub fn open_backup(bytes: &[u8], secret: &RecoverySecretKey) -> Result<OpenedBackup, BackupError> {
    let file = BackupFile::decode(bytes)?;
    let plain = file.open(secret)?;
    let (identity, keys) = decode_payload(&plain)?;
    drop(plain);
    let header = file.header;
    if identity.node_id() != header.node_id {
        return Err(BackupError::Inconsistent(format!(
            "the payload holds the identity of node {}, the header names node {}",
            identity.node_id(),
            header.node_id
        )));
    }
    let ids: Vec<KeyId> = keys.iter().map(StoredKey::key_id).collect();
    if ids != header.key_ids {
        return Err(BackupError::Inconsistent(
            "the payload's key ids are not the header's".into(),
        ));
    }
    for (i, id) in ids.iter().enumerate() {
        if ids[..i].contains(id) {
            return Err(BackupError::Inconsistent(format!("key {id} appears twice")));
        }
    }
    Ok(OpenedBackup {
        header,
        identity,
        keys,
    })
}

/// Reads (at most [`super::format::MAX_BACKUP_FILE`] bytes) and opens a backup file.
///
/// # Security
/// As [`open_backup`].
pub fn open_backup_file(
    path: &Path,
    secret: &RecoverySecretKey,
) -> Result<OpenedBackup, BackupError> {
    open_backup(&super::read_backup_bytes(path)?, secret)
}

/// Checks a share before it is accepted:
///
/// - the key package and the public key package decode for the key's suite;
/// - the key package is for the share's index;
/// - its signing share × G is its verifying share, and equals the verifying share the
///   group's public key package holds for that index;
/// - the key package's group key is the public key package's, which is the key's
///   `verifying_key`; both thresholds are the key's;
/// - the package holds one verifying share per member, every member's index has
///   one, and no two members share an index;
/// - `node` is a member, with the share's index.
///
/// # Security
/// Decodes the secret signing share to check it; the decoded package zeroizes on drop.
pub fn check_share(key: &StoredKey, node: &NodeId) -> Result<(), BackupError> {
    let share = &key.share;
    let invalid = |reason: String| BackupError::InvalidShare {
        key_id: key.key_id(),
        reason,
    };
    quorate_protocol::dispatch!(share.public.suite, C => check_share_for::<C>(share))
        .map_err(invalid)?;
    match share.public.members.get(node) {
        Some(i) if *i == share.index => Ok(()),
        Some(i) => Err(BackupError::ShareNotForNode {
            key_id: key.key_id(),
            node: *node,
            reason: format!("the share is index {}, the node is member {i}", share.index),
        }),
        None => Err(BackupError::ShareNotForNode {
            key_id: key.key_id(),
            node: *node,
            reason: "the node is not a member of the key's committee".into(),
        }),
    }
}

fn check_share_for<C: Suite>(share: &KeyShare) -> Result<(), String> {
    let public = &share.public;
    let kp: KeyPackage<C> = share
        .key_package::<C>()
        .map_err(|e| format!("the key package does not decode: {e}"))?;
    let pkp = PublicKeyPackage::<C>::deserialize(&public.public_key_package)
        .map_err(|_| "the public key package does not decode".to_owned())?;
    let id = Identifier::<C>::try_from(share.index)
        .map_err(|_| format!("index {} is not a FROST identifier", share.index))?;
    if *kp.identifier() != id {
        return Err(format!(
            "the key package belongs to another participant than index {}",
            share.index
        ));
    }
    let derived = VerifyingShare::<C>::from(*kp.signing_share());
    if derived != *kp.verifying_share() {
        return Err("signing share × G is not the key package's verifying share".into());
    }
    match pkp.verifying_shares().get(&id) {
        None => {
            return Err(format!(
                "the group's public key package has no verifying share for index {}",
                share.index
            ))
        }
        Some(vs) if *vs != derived => {
            return Err(format!(
                "signing share × G is not the group's verifying share for index {}",
                share.index
            ))
        }
        Some(_) => {}
    }
    if kp.verifying_key() != pkp.verifying_key() {
        return Err("the key package's group key is not the public key package's".into());
    }
    let vk = pkp
        .verifying_key()
        .serialize()
        .map_err(|e| format!("the group key does not encode: {e}"))?;
    if vk != public.verifying_key {
        return Err("the public key package's group key is not the key's verifying key".into());
    }
    if *kp.min_signers() != public.threshold
        || pkp.min_signers().is_some_and(|m| m != public.threshold)
    {
        return Err(format!(
            "the packages' threshold is not the key's ({})",
            public.threshold
        ));
    }
    if pkp.verifying_shares().len() != public.members.len() {
        return Err("the public key package's verifying shares are not the members'".into());
    }
    let mut seen = std::collections::BTreeSet::new();
    for index in public.members.values() {
        let mid = Identifier::<C>::try_from(*index)
            .map_err(|_| format!("member index {index} is not a FROST identifier"))?;
        if !seen.insert(*index) || !pkp.verifying_shares().contains_key(&mid) {
            return Err(format!(
                "member index {index} is repeated or has no verifying share"
            ));
        }
    }
    Ok(())
}

/// What to restore.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Only these keys (empty: every key in the backup). A key id not in the backup
    /// is refused.
    pub keys: Vec<KeyId>,
    /// Replace a key already in the keystore (only by a share of the same group key
    /// and suite). Without it, an existing key id is refused.
    pub overwrite: bool,
}

/// What a restore did.
#[derive(Debug, Clone)]
pub struct RestoreReport {
    /// The node restored.
    pub node_id: NodeId,
    /// Every key share written, in backup order.
    pub restored: Vec<KeySummary>,
    /// Of those, the ones that replaced a share already in the keystore.
    pub replaced: Vec<KeyId>,
    /// The keystore's roster epoch after the restore (never lowered).
    pub roster_epoch: u64,
}

/// The selected shares, each checked against its verifying share and `node`.
fn selected<'a>(
    backup: &'a OpenedBackup,
    opts: &RestoreOptions,
    node: &NodeId,
) -> Result<Vec<&'a StoredKey>, BackupError> {
    for id in &opts.keys {
        if !backup.header.key_ids.contains(id) {
            return Err(BackupError::UnknownKey {
                key_id: *id,
                place: "backup",
            });
        }
    }
    let keys: Vec<&StoredKey> = backup
        .keys
        .iter()
        .filter(|k| opts.keys.is_empty() || opts.keys.contains(&k.key_id()))
        .collect();
    for k in &keys {
        check_share(k, node)?;
    }
    Ok(keys)
}

/// Restores `backup` into the unsealed keystore `ks`, which must hold the same node
/// identity. Every selected share is checked ([`check_share`]) and every conflict
/// with an existing key id is resolved before anything is written; then the shares
/// are written (each durably) and the roster epoch is raised to the backup's if it
/// is higher.
///
/// # Security
/// Refuses a backup of another node ([`BackupError::NodeMismatch`]): a node's shares
/// are usable only under its own identity, and restoring them elsewhere would put
/// two nodes' shares on one host. No secret is logged.
pub fn restore_into(
    ks: &Keystore,
    backup: &OpenedBackup,
    opts: &RestoreOptions,
) -> Result<RestoreReport, BackupError> {
    let mine = ks.identity().public();
    if backup.identity.public() != mine {
        return Err(BackupError::NodeMismatch {
            backup: backup.header.node_id,
            keystore: mine.node,
        });
    }
    let keys = selected(backup, opts, &mine.node)?;
    let generation_of = |id: &KeyId| {
        backup
            .header
            .key_ids
            .iter()
            .position(|k| k == id)
            .and_then(|i| backup.header.generations.get(i).copied())
            .unwrap_or(0)
    };
    for k in &keys {
        let here = ks.key_generation(&k.key_id())?;
        let there = generation_of(&k.key_id());
        if here > there {
            return Err(BackupError::StaleGeneration {
                key_id: k.key_id(),
                backup: there,
                keystore: here,
            });
        }
    }
    let mut existing = Vec::new();
    for k in &keys {
        if let Some(old) = ks.key(&k.key_id())? {
            if old.public().suite != k.public().suite
                || old.public().verifying_key != k.public().verifying_key
            {
                return Err(BackupError::DifferentKey { key_id: k.key_id() });
            }
            existing.push(k.key_id());
        }
    }
    if !existing.is_empty() && !opts.overwrite {
        return Err(BackupError::KeysExist {
            key_ids: existing.iter().map(ToString::to_string).collect(),
        });
    }
    let mut report = RestoreReport {
        node_id: mine.node,
        restored: Vec::with_capacity(keys.len()),
        replaced: Vec::new(),
        roster_epoch: 0,
    };
    for k in keys {
        if existing.contains(&k.key_id()) {
            ks.replace_key(k)?;
            report.replaced.push(k.key_id());
        } else {
            ks.put_key(k)?;
        }
        ks.set_key_generation(&k.key_id(), generation_of(&k.key_id()))?;
        report.restored.push(k.summary());
    }
    let state = ks.state();
    let epoch = state.roster_epoch()?;
    if backup.header.roster_epoch > epoch {
        state.set_roster_epoch(backup.header.roster_epoch)?;
    }
    report.roster_epoch = epoch.max(backup.header.roster_epoch);
    Ok(report)
}

/// Creates a keystore at `path` holding the backed-up node identity, sealed under
/// `passphrase`, and restores the shares into it ([`restore_into`]). The shares are
/// checked before the file is created; if anything fails after, the new file is
/// removed.
///
/// # Security
/// As [`Keystore::init`] and [`restore_into`]. `rng` must be cryptographically secure.
pub fn restore_new(
    path: &Path,
    passphrase: &Passphrase,
    kdf: KdfParams,
    backup: &OpenedBackup,
    opts: &RestoreOptions,
    rng: &mut impl CryptoRngCore,
) -> Result<(Keystore, RestoreReport), BackupError> {
    selected(backup, opts, &backup.header.node_id)?;
    let ks = Keystore::init(path, passphrase, &backup.identity, kdf, rng)?;
    match restore_into(&ks, backup, opts) {
        Ok(report) => Ok((ks, report)),
        Err(e) => {
            drop(ks);
            // Keystore::init created the file (it refuses an existing one): ours to remove.
            let _ = fs::remove_file(path);
            Err(e)
        }
    }
}
