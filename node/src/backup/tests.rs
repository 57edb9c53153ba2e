//! Backups end to end within the crate: round trips, and every refusal of restore.

use std::path::{Path, PathBuf};

use frost_core::keys::{KeyPackage, PublicKeyPackage, VerifyingShare};
use frost_ed25519::Ed25519Sha512 as Ed;
use quorate_protocol::{local, Ciphersuite, KeyShare, NodeIdentity};
use rand_chacha::{rand_core::SeedableRng, ChaCha20Rng};

use super::{format::*, *};
use crate::keystore::{KdfParams, KeystoreId, Passphrase, SealedKeystore};

fn pass(s: &str) -> Passphrase {
    Passphrase::new(s).expect("non-empty")
}

fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

/// Three nodes and one DKG per suite: (identities, shares[node][suite]).
fn network(seed: u64) -> (Vec<NodeIdentity>, Vec<Vec<StoredKey>>) {
    let mut r = rng(seed);
    let ids = local::identities(3, &mut r);
    let mut per_node: Vec<Vec<StoredKey>> = vec![Vec::new(); 3];
    for suite in Ciphersuite::ALL {
        let shares = local::run_dkg(&ids, suite, 2, &mut r).expect("dkg");
        for (i, share) in shares.into_iter().enumerate() {
            per_node[i].push(StoredKey {
                share,
                created_at_ms: 1_700_000_000_000 + i as u64,
                allowed_segments: vec![format!("seg-{i}")],
            });
        }
    }
    (ids.iter().map(|i| (**i).clone()).collect(), per_node)
}

fn keystore(path: &Path, identity: &NodeIdentity, keys: &[StoredKey]) -> Keystore {
    let ks = Keystore::init(
        path,
        &pass("node pass"),
        identity,
        KdfParams::insecure_for_tests(),
        &mut rng(50),
    )
    .expect("init");
    for k in keys {
        ks.put_key(k).expect("put");
    }
    ks
}

fn encoded(k: &StoredKey) -> Vec<u8> {
    postcard::to_allocvec(k).expect("encode")
}

/// A backup of `keys` under `identity` with a header naming `header_node`, made
/// without the checks `create_backup` does (what an attacker or a bug could write).
fn forge(
    identity: &NodeIdentity,
    keys: &[StoredKey],
    header_node: NodeId,
    header_keys: Vec<KeyId>,
    recipients: &[RecoveryPublicKey],
) -> Vec<u8> {
    let payload = encode_payload(identity, keys).expect("payload");
    let mut header = BackupHeader {
        node_id: header_node,
        keystore_id: KeystoreId([7; 16]),
        created_at_ms: 1,
        roster_epoch: 0,
        generations: vec![0; header_keys.len()],
        key_ids: header_keys,
        recipients: Vec::new(),
    };
    seal(&mut header, payload, recipients, &mut rng(60)).expect("seal")
}

fn new_path(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}

#[test]
fn backup_round_trips_into_a_new_keystore_for_every_suite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ids, keys) = network(1);
    let ks = keystore(&new_path(&dir, "a.redb"), &ids[0], &keys[0]);
    ks.state().set_roster_epoch(5).expect("epoch");
    let r1 = RecoverySecretKey::generate(&mut rng(2));
    let r2 = RecoverySecretKey::generate(&mut rng(3));
    let (header, bytes) = create_backup(
        &ks,
        &[r1.public().clone(), r2.public().clone()],
        &[],
        &mut rng(4),
    )
    .expect("backup");
    assert_eq!(header.node_id, ids[0].node_id());
    assert_eq!(header.keystore_id, ks.keystore_id());
    assert_eq!(header.roster_epoch, 5);
    assert_eq!(header.key_ids.len(), 3);
    assert_eq!(
        header.recipients,
        vec![r1.public().fingerprint(), r2.public().fingerprint()]
    );
    assert_eq!(BackupFile::decode(&bytes).expect("decode").header, header);
    // No share and no identity secret in the file.
    let hex_file = hex::encode(&bytes);
    assert!(!hex_file.contains(&hex::encode(&ids[0].to_secret_bytes()[..32])));
    let signing = hex::encode(
        keys[0][2]
            .share
            .key_package::<Ed>()
            .expect("ed25519")
            .signing_share()
            .serialize(),
    );
    assert!(!hex_file.contains(&signing));

    for r in [&r1, &r2] {
        let opened = open_backup(&bytes, r).expect("open");
        assert_eq!(opened.header, header);
        let path = new_path(
            &dir,
            &format!("b-{}.redb", hex::encode(&r.public().fingerprint()[..4])),
        );
        let (restored, report) = restore_new(
            &path,
            &pass("new pass"),
            KdfParams::insecure_for_tests(),
            &opened,
            &RestoreOptions::default(),
            &mut rng(5),
        )
        .expect("restore");
        assert_eq!(report.node_id, ids[0].node_id());
        assert_eq!(report.restored.len(), 3);
        assert!(report.replaced.is_empty());
        assert_eq!(report.roster_epoch, 5);
        drop(restored);
        let back = SealedKeystore::open(&path)
            .expect("open")
            .unseal(&pass("new pass"))
            .expect("unseal");
        assert_eq!(back.identity().public(), ids[0].public());
        assert_ne!(back.keystore_id(), ks.keystore_id(), "a new keystore");
        assert_eq!(back.state().roster_epoch().expect("epoch"), 5);
        let got: Vec<Vec<u8>> = back.keys().expect("keys").iter().map(encoded).collect();
        let want: Vec<Vec<u8>> = ks.keys().expect("keys").iter().map(encoded).collect();
        assert_eq!(got, want, "every share, byte for byte");
    }
}

#[test]
fn selected_keys_only_and_unknown_keys_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ids, keys) = network(11);
    let ks = keystore(&new_path(&dir, "a.redb"), &ids[0], &keys[0]);
    let r = RecoverySecretKey::generate(&mut rng(2));
    let pk = [r.public().clone()];
    let one = keys[0][1].key_id();
    let (header, bytes) = create_backup(&ks, &pk, &[one], &mut rng(4)).expect("backup");
    assert_eq!(header.key_ids, vec![one]);
    let unknown = KeyId([0xee; 16]);
    assert!(matches!(
        create_backup(&ks, &pk, &[unknown], &mut rng(4)),
        Err(BackupError::UnknownKey { key_id, place: "keystore" }) if key_id == unknown
    ));
    assert!(matches!(
        create_backup(&ks, &[], &[], &mut rng(4)),
        Err(BackupError::NoRecipients)
    ));
    assert!(matches!(
        create_backup(&ks, &[pk[0].clone(), pk[0].clone()], &[], &mut rng(4)),
        Err(BackupError::DuplicateRecipient { .. })
    ));
    let opened = open_backup(&bytes, &r).expect("open");
    assert_eq!(opened.summaries().len(), 1);
    let err = restore_new(
        &new_path(&dir, "b.redb"),
        &pass("p"),
        KdfParams::insecure_for_tests(),
        &opened,
        &RestoreOptions {
            keys: vec![keys[0][0].key_id()],
            overwrite: false,
        },
        &mut rng(5),
    )
    .expect_err("not in the backup");
    assert!(
        matches!(
            err,
            BackupError::UnknownKey {
                place: "backup",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!new_path(&dir, "b.redb").exists(), "nothing created");
}

/// Replaces `len` bytes at `at` with `with(old)`.
fn edit(bytes: &[u8], at: usize, f: impl FnOnce(&mut [u8])) -> Vec<u8> {
    let mut out = bytes.to_vec();
    f(&mut out[at..]);
    out
}

#[test]
fn tampered_backups_are_refused_naming_what_failed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ids, keys) = network(21);
    let ks = keystore(&new_path(&dir, "a.redb"), &ids[0], &keys[0]);
    let r = RecoverySecretKey::generate(&mut rng(2));
    let (_, bytes) = create_backup(&ks, &[r.public().clone()], &[], &mut rng(4)).expect("backup");
    open_backup(&bytes, &r).expect("the untouched backup opens");
    let header_len = u32::from_be_bytes(bytes[8..12].try_into().expect("4")) as usize;
    let header = std::str::from_utf8(&bytes[12..12 + header_len]).expect("json");
    let stanza = 12 + header_len;
    let payload = stanza + STANZA_LEN + 12 + 4;

    // Header fields, kept well-formed: only the hash binding can catch these.
    let epoch_at = 12 + header.find("\"roster_epoch\":0").expect("epoch") + 15;
    let created_at = 12 + header.find("\"created_at_ms\":").expect("created") + 16;
    let key_at = 12 + header.find("\"key_ids\":[\"").expect("key ids") + 12;
    for (what, at) in [
        ("roster_epoch", epoch_at),
        ("created_at_ms", created_at),
        ("key id", key_at),
    ] {
        let bad = edit(&bytes, at, |b| {
            b[0] = if b[0] == b'1' { b'2' } else { b'1' }
        });
        let err = open_backup(&bad, &r).expect_err(what);
        assert!(
            matches!(err, BackupError::WrapDoesNotOpen { .. }),
            "{what}: {err:?}"
        );
        assert!(err.to_string().contains("header"), "{err}");
    }
    // The ML-KEM ciphertext, the X25519 ephemeral key and the wrapped key: each
    // alone breaks the unwrap (either KEM half matters).
    for (what, at) in [
        ("x25519 ephemeral", stanza + 32 + 5),
        ("ML-KEM ciphertext", stanza + 64 + 100),
        ("ML-KEM ciphertext end", stanza + 64 + 1087),
        ("wrapped key", stanza + 64 + 1088 + 3),
    ] {
        let bad = edit(&bytes, at, |b| b[0] ^= 0x04);
        let err = open_backup(&bad, &r).expect_err(what);
        assert!(
            matches!(
                err,
                BackupError::WrapDoesNotOpen { .. } | BackupError::Malformed(_)
            ),
            "{what}: {err:?}"
        );
    }
    // The payload and its nonce.
    for (what, at) in [
        ("payload nonce", stanza + STANZA_LEN + 2),
        ("payload", payload + 40),
        ("tag", bytes.len() - 1),
    ] {
        let bad = edit(&bytes, at, |b| b[0] ^= 0x80);
        let err = open_backup(&bad, &r).expect_err(what);
        assert!(
            matches!(err, BackupError::PayloadCorrupt),
            "{what}: {err:?}"
        );
    }
    // Structure.
    let err = open_backup(&bytes[..bytes.len() - 1], &r).expect_err("truncated");
    assert!(matches!(err, BackupError::Malformed(_)), "{err:?}");
    let mut longer = bytes.clone();
    longer.push(0);
    let err = open_backup(&longer, &r).expect_err("trailing");
    assert!(
        matches!(&err, BackupError::Malformed(m) if m.contains("after the payload")),
        "{err:?}"
    );
    let err = open_backup(&edit(&bytes, 0, |b| b[0] = b'X'), &r).expect_err("magic");
    assert!(
        matches!(&err, BackupError::Malformed(m) if m.contains("magic")),
        "{err:?}"
    );
    let err = open_backup(&edit(&bytes, 8, |b| b[0] = 0xff), &r).expect_err("header length");
    assert!(matches!(err, BackupError::Malformed(_)), "{err:?}");
    // A stanza naming another recipient than the header.
    let err = open_backup(&edit(&bytes, stanza, |b| b[0] ^= 1), &r).expect_err("stanza");
    assert!(
        matches!(&err, BackupError::Malformed(m) if m.contains("stanza 0")),
        "{err:?}"
    );
}

#[test]
fn a_wrong_recovery_key_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ids, keys) = network(31);
    let ks = keystore(&new_path(&dir, "a.redb"), &ids[0], &keys[0]);
    let r = RecoverySecretKey::generate(&mut rng(2));
    let wrong = RecoverySecretKey::generate(&mut rng(3));
    let (_, bytes) = create_backup(&ks, &[r.public().clone()], &[], &mut rng(4)).expect("backup");
    let err = open_backup(&bytes, &wrong).expect_err("wrong key");
    let text = err.to_string();
    assert!(matches!(err, BackupError::NotARecipient { .. }), "{err:?}");
    assert!(
        text.contains(&hex::encode(wrong.public().fingerprint())),
        "{text}"
    );
    assert!(
        text.contains(&hex::encode(r.public().fingerprint())),
        "{text}"
    );

    // Relabelling the stanza (and header) with the wrong key's fingerprint does not
    // help it: the wrap is bound to the right key and to the original header.
    let header_len = u32::from_be_bytes(bytes[8..12].try_into().expect("4")) as usize;
    let right = hex::encode(r.public().fingerprint());
    let other = hex::encode(wrong.public().fingerprint());
    let header = std::str::from_utf8(&bytes[12..12 + header_len])
        .expect("json")
        .replace(&right, &other);
    let mut relabelled = bytes[..12].to_vec();
    relabelled.extend_from_slice(header.as_bytes());
    relabelled.extend_from_slice(&wrong.public().fingerprint());
    relabelled.extend_from_slice(&bytes[12 + header_len + 32..]);
    let err = open_backup(&relabelled, &wrong).expect_err("relabelled");
    assert!(
        matches!(err, BackupError::WrapDoesNotOpen { .. }),
        "{err:?}"
    );
}

/// Ed25519 share of node 0 in `keys`, rebuilt with `f` applied to its key package.
fn edited_share(
    key: &StoredKey,
    f: impl FnOnce(&KeyPackage<Ed>, &PublicKeyPackage<Ed>) -> KeyPackage<Ed>,
) -> StoredKey {
    let share = &key.share;
    let kp = share.key_package::<Ed>().expect("ed25519");
    let pkp = PublicKeyPackage::<Ed>::deserialize(&share.public.public_key_package).expect("pkp");
    let bad = f(&kp, &pkp);
    StoredKey {
        share: KeyShare::from_frost(
            share.public.key_id,
            share.public.members.clone(),
            share.index,
            &bad,
            &pkp,
        )
        .expect("share"),
        created_at_ms: key.created_at_ms,
        allowed_segments: key.allowed_segments.clone(),
    }
}

#[test]
fn a_share_that_does_not_match_its_verifying_share_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ids, keys) = network(41);
    let (_, other_net) = network(42);
    let r = RecoverySecretKey::generate(&mut rng(2));
    let mine = &keys[0][2];
    let theirs = keys[1][2].share.key_package::<Ed>().expect("ed25519");
    let foreign_vk = *other_net[0][2]
        .share
        .key_package::<Ed>()
        .expect("ed")
        .verifying_key();
    assert_eq!(mine.public().suite, Ciphersuite::Ed25519);

    let cases: Vec<(&str, StoredKey, &str)> = vec![
        (
            "another member's signing share under our verifying share",
            edited_share(mine, |kp, _| {
                KeyPackage::new(
                    *kp.identifier(),
                    *theirs.signing_share(),
                    *kp.verifying_share(),
                    *kp.verifying_key(),
                    *kp.min_signers(),
                )
            }),
            "not the key package's verifying share",
        ),
        (
            "a self-consistent package that is not the group's share for our index",
            edited_share(mine, |kp, _| {
                let s = *theirs.signing_share();
                KeyPackage::new(
                    *kp.identifier(),
                    s,
                    VerifyingShare::from(s),
                    *kp.verifying_key(),
                    *kp.min_signers(),
                )
            }),
            "not the group's verifying share",
        ),
        (
            "a key package for another group key",
            edited_share(mine, |kp, _| {
                KeyPackage::new(
                    *kp.identifier(),
                    *kp.signing_share(),
                    *kp.verifying_share(),
                    foreign_vk,
                    *kp.min_signers(),
                )
            }),
            "group key",
        ),
    ];
    for (what, bad, reason) in cases {
        let bytes = forge(
            &ids[0],
            std::slice::from_ref(&bad),
            ids[0].node_id(),
            vec![bad.key_id()],
            &[r.public().clone()],
        );
        let opened = open_backup(&bytes, &r).expect("authentic, just wrong");
        let path = new_path(&dir, "new.redb");
        let err = restore_new(
            &path,
            &pass("p"),
            KdfParams::insecure_for_tests(),
            &opened,
            &RestoreOptions::default(),
            &mut rng(5),
        )
        .expect_err(what);
        assert!(
            matches!(&err, BackupError::InvalidShare { key_id, reason: r } if *key_id == bad.key_id() && r.contains(reason)),
            "{what}: {err:?}"
        );
        assert!(err.to_string().contains(&bad.key_id().to_string()), "{err}");
        assert!(!path.exists(), "{what}: nothing created");
        // Into an existing keystore of the node, too; nothing is written.
        let ks_path = new_path(&dir, "existing.redb");
        let ks = keystore(&ks_path, &ids[0], &[]);
        let err = restore_into(&ks, &opened, &RestoreOptions::default()).expect_err(what);
        assert!(
            matches!(err, BackupError::InvalidShare { .. }),
            "{what}: {err:?}"
        );
        assert!(ks.keys().expect("keys").is_empty());
        // And a keystore holding such a share refuses to back it up.
        ks.put_key(&bad).expect("put does not check");
        let err = create_backup(&ks, &[r.public().clone()], &[], &mut rng(6)).expect_err(what);
        assert!(
            matches!(err, BackupError::InvalidShare { .. }),
            "{what}: {err:?}"
        );
        drop(ks);
        std::fs::remove_file(&ks_path).expect("rm");
    }
    // The untouched share passes the same check.
    check_share(mine, &ids[0].node_id()).expect("valid share");
    for k in &keys[0] {
        check_share(k, &ids[0].node_id()).expect("every suite");
    }
}

#[test]
fn a_backup_of_another_node_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ids, keys) = network(51);
    let a = keystore(&new_path(&dir, "a.redb"), &ids[0], &keys[0]);
    let b = keystore(&new_path(&dir, "b.redb"), &ids[1], &[]);
    let r = RecoverySecretKey::generate(&mut rng(2));
    let (_, bytes) = create_backup(&a, &[r.public().clone()], &[], &mut rng(4)).expect("backup");
    let opened = open_backup(&bytes, &r).expect("open");
    let err = restore_into(&b, &opened, &RestoreOptions::default()).expect_err("other node");
    assert!(
        matches!(err, BackupError::NodeMismatch { backup, keystore } if backup == ids[0].node_id() && keystore == ids[1].node_id()),
        "{err:?}"
    );
    assert!(err.to_string().contains(&ids[1].node_id().to_string()));
    assert!(b.keys().expect("keys").is_empty());

    // Node 1's identity with node 0's shares: each share is refused as not node 1's.
    let forged = forge(
        &ids[1],
        &keys[0],
        ids[1].node_id(),
        keys[0].iter().map(StoredKey::key_id).collect(),
        &[r.public().clone()],
    );
    let opened = open_backup(&forged, &r).expect("open");
    let err = restore_into(&b, &opened, &RestoreOptions::default()).expect_err("not its shares");
    assert!(
        matches!(&err, BackupError::ShareNotForNode { node, reason, .. } if *node == ids[1].node_id() && reason.contains("index")),
        "{err:?}"
    );
    let path = new_path(&dir, "c.redb");
    let err = restore_new(
        &path,
        &pass("p"),
        KdfParams::insecure_for_tests(),
        &opened,
        &RestoreOptions::default(),
        &mut rng(5),
    )
    .expect_err("not its shares");
    assert!(
        matches!(err, BackupError::ShareNotForNode { .. }),
        "{err:?}"
    );
    assert!(!path.exists());
    // A share of a committee the node is not in.
    let (_, outsiders) = network(52);
    let forged = forge(
        &ids[0],
        &outsiders[0][..1],
        ids[0].node_id(),
        vec![outsiders[0][0].key_id()],
        &[r.public().clone()],
    );
    let err = restore_into(
        &a,
        &open_backup(&forged, &r).expect("open"),
        &RestoreOptions::default(),
    )
    .expect_err("not a member");
    assert!(
        matches!(&err, BackupError::ShareNotForNode { reason, .. } if reason.contains("not a member")),
        "{err:?}"
    );
    // A header naming another node than the payload's identity.
    let forged = forge(
        &ids[0],
        &keys[0],
        ids[1].node_id(),
        keys[0].iter().map(StoredKey::key_id).collect(),
        &[r.public().clone()],
    );
    let err = open_backup(&forged, &r).expect_err("inconsistent");
    assert!(matches!(err, BackupError::Inconsistent(_)), "{err:?}");
    // Header key ids that are not the payload's.
    let forged = forge(
        &ids[0],
        &keys[0],
        ids[0].node_id(),
        vec![keys[0][0].key_id()],
        &[r.public().clone()],
    );
    let err = open_backup(&forged, &r).expect_err("inconsistent");
    assert!(matches!(err, BackupError::Inconsistent(_)), "{err:?}");
}

#[test]
fn existing_keys_are_replaced_only_when_told_and_only_by_the_same_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ids, keys) = network(61);
    let a = keystore(&new_path(&dir, "a.redb"), &ids[0], &keys[0]);
    let r = RecoverySecretKey::generate(&mut rng(2));
    let (_, bytes) = create_backup(&a, &[r.public().clone()], &[], &mut rng(4)).expect("backup");
    let opened = open_backup(&bytes, &r).expect("open");
    drop(a);
    // A keystore of the same node already holding one of the keys.
    let path = new_path(&dir, "same-node.redb");
    let opts = RestoreOptions {
        keys: vec![keys[0][0].key_id()],
        overwrite: false,
    };
    let (ks, _) = restore_new(
        &path,
        &pass("p"),
        KdfParams::insecure_for_tests(),
        &opened,
        &opts,
        &mut rng(5),
    )
    .expect("one key");
    let err = restore_into(&ks, &opened, &RestoreOptions::default()).expect_err("exists");
    assert!(
        matches!(&err, BackupError::KeysExist { key_ids } if *key_ids == vec![keys[0][0].key_id().to_string()]),
        "{err:?}"
    );
    assert_eq!(ks.keys().expect("keys").len(), 1, "nothing written");
    let report = restore_into(
        &ks,
        &opened,
        &RestoreOptions {
            keys: Vec::new(),
            overwrite: true,
        },
    )
    .expect("overwrite");
    assert_eq!(report.replaced, vec![keys[0][0].key_id()]);
    assert_eq!(report.restored.len(), 3);
    assert_eq!(ks.keys().expect("keys").len(), 3);

    // Another key under the same id is never replaced.
    let mut impostor = network(62).1[0][0].clone();
    impostor.share.public.key_id = keys[0][1].key_id();
    let path2 = new_path(&dir, "impostor.redb");
    let ks2 = keystore(&path2, &ids[0], &[impostor]);
    let err = restore_into(
        &ks2,
        &opened,
        &RestoreOptions {
            keys: Vec::new(),
            overwrite: true,
        },
    )
    .expect_err("different key");
    assert!(
        matches!(err, BackupError::DifferentKey { key_id } if key_id == keys[0][1].key_id()),
        "{err:?}"
    );
    assert_eq!(ks2.keys().expect("keys").len(), 1, "nothing written");
}

#[test]
fn opened_backup_debug_shows_no_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ids, keys) = network(71);
    let a = keystore(&new_path(&dir, "a.redb"), &ids[0], &keys[0]);
    let r = RecoverySecretKey::generate(&mut rng(2));
    let (_, bytes) = create_backup(&a, &[r.public().clone()], &[], &mut rng(4)).expect("backup");
    let opened = open_backup(&bytes, &r).expect("open");
    let text = format!("{opened:?} {:?}", opened.summaries());
    assert!(
        !text.contains(&hex::encode(&ids[0].to_secret_bytes()[..32])),
        "{text}"
    );
    let signing = hex::encode(
        keys[0][2]
            .share
            .key_package::<Ed>()
            .expect("ed25519")
            .signing_share()
            .serialize(),
    );
    assert!(!text.contains(&signing), "{text}");
}

#[test]
fn backup_files_are_written_once_and_read_bounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ids, keys) = network(81);
    let a = keystore(&new_path(&dir, "a.redb"), &ids[0], &keys[0]);
    let r = RecoverySecretKey::generate(&mut rng(2));
    let out = new_path(&dir, "node.qbk");
    let header =
        write_backup_file(&a, &[r.public().clone()], &[], &out, &mut rng(4)).expect("write");
    assert_eq!(read_backup_header(&out).expect("header"), header);
    open_backup_file(&out, &r).expect("open");
    let err =
        write_backup_file(&a, &[r.public().clone()], &[], &out, &mut rng(4)).expect_err("exists");
    assert!(matches!(err, BackupError::AlreadyExists { .. }), "{err:?}");
    let big = new_path(&dir, "big.qbk");
    let f = std::fs::File::create(&big).expect("create");
    f.set_len(MAX_BACKUP_FILE + 1).expect("sparse");
    assert!(matches!(
        read_backup_header(&big),
        Err(BackupError::TooLarge { .. })
    ));
}

#[test]
fn generations_travel_with_the_backup_and_an_older_share_is_never_restored_over_a_newer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ids, keys) = network(63);
    let a = keystore(&new_path(&dir, "gen.redb"), &ids[0], &keys[0]);
    let key = keys[0][0].key_id();
    a.set_key_generation(&key, 3).expect("generation");
    let r = RecoverySecretKey::generate(&mut rng(2));
    let (header, bytes) =
        create_backup(&a, &[r.public().clone()], &[key], &mut rng(4)).expect("backup");
    assert_eq!(header.generations, vec![3]);
    let opened = open_backup(&bytes, &r).expect("open");
    assert_eq!(opened.header.generations, vec![3], "authenticated header");
    // Into a new keystore: the generation comes along.
    let (fresh, _) = restore_new(
        &new_path(&dir, "restored.redb"),
        &pass("p"),
        KdfParams::insecure_for_tests(),
        &opened,
        &RestoreOptions::default(),
        &mut rng(5),
    )
    .expect("restore");
    assert_eq!(fresh.key_generation(&key).expect("generation"), 3);
    // The original moved on (a refresh): the older backup is refused over it.
    a.set_key_generation(&key, 4).expect("generation");
    let err = restore_into(
        &a,
        &opened,
        &RestoreOptions {
            keys: Vec::new(),
            overwrite: true,
        },
    )
    .expect_err("stale");
    assert!(
        matches!(err, BackupError::StaleGeneration { key_id, backup: 3, keystore: 4 } if key_id == key),
        "{err:?}"
    );
}
