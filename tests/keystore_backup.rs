//! End to end, with the real binary: make recovery keys, back up a keystore holding
//! key shares, lose it, restore into a new keystore with the same identity and see
//! the same `quorate keystore list`; and the refusals an operator can hit (existing
//! keys, another node's keystore, a tampered backup, a wrong recovery passphrase).

use std::{
    path::Path,
    process::{Command, Output},
};

use quorate_node::keystore::{KdfParams, Keystore, Passphrase, StoredKey};
use quorate_protocol::{local, Ciphersuite};
use rand_core::OsRng;

fn quorate(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_quorate"))
        .args(args)
        .current_dir(dir)
        .env("KS_PASS", "node passphrase")
        .env("NEW_PASS", "replacement passphrase")
        .env("RK_PASS", "recovery passphrase")
        .env("WRONG_PASS", "not the recovery passphrase")
        .env_remove("RUST_LOG")
        .output()
        .expect("run quorate")
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(out: &Output, what: &str) -> String {
    let (stdout, stderr) = text(out);
    assert!(
        out.status.success(),
        "{what} failed\nstdout: {stdout}\nstderr: {stderr}"
    );
    stdout
}

fn fails(out: &Output, what: &str, needle: &str) -> String {
    let (stdout, stderr) = text(out);
    assert!(
        !out.status.success(),
        "{what} succeeded\nstdout: {stdout}\nstderr: {stderr}"
    );
    assert!(
        stderr.contains(needle),
        "{what}: expected {needle:?} in\n{stderr}"
    );
    stderr
}

fn fingerprint(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("fingerprint = \""))
        .and_then(|l| l.strip_suffix('"'))
        .unwrap_or_else(|| panic!("no fingerprint in {stdout}"))
        .to_owned()
}

#[test]
fn backup_restore_into_a_new_keystore_gives_the_same_keys_and_refusals_are_clear() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();

    // A node's keystore holding two key shares (an Ed25519 and a Taproot key).
    let ids = local::identities(3, &mut OsRng);
    let mut secrets = vec![hex::encode(&ids[0].to_secret_bytes()[..32])];
    let ks = Keystore::init(
        d.join("node.redb"),
        &Passphrase::new("node passphrase").expect("pass"),
        &ids[0],
        KdfParams::insecure_for_tests(),
        &mut OsRng,
    )
    .expect("init");
    for suite in [Ciphersuite::Ed25519, Ciphersuite::Secp256k1Tr] {
        let share = local::run_dkg(&ids, suite, 2, &mut OsRng)
            .expect("dkg")
            .remove(0);
        if suite == Ciphersuite::Ed25519 {
            let kp = share
                .key_package::<frost_ed25519::Ed25519Sha512>()
                .expect("ed25519");
            secrets.push(hex::encode(kp.signing_share().serialize()));
        }
        ks.put_key(&StoredKey {
            share,
            created_at_ms: 1_700_000_000_000,
            allowed_segments: vec!["vault-a".into()],
        })
        .expect("put");
    }
    drop(ks);
    let mut transcript = String::new();
    let mut run = |args: &[&str]| {
        let out = quorate(args, d);
        let (o, e) = text(&out);
        transcript.push_str(&o);
        transcript.push_str(&e);
        out
    };

    // Two recovery keys (say, two custody officers); either can restore.
    let out = run(&[
        "keystore",
        "recovery-key",
        "new",
        "--out",
        "officer1.key",
        "--passphrase-env",
        "RK_PASS",
        "--insecure-fast-kdf",
    ]);
    let fp1 = fingerprint(&ok(&out, "recovery-key new"));
    let out = run(&[
        "keystore",
        "recovery-key",
        "new",
        "--out",
        "officer2.key",
        "--passphrase-env",
        "RK_PASS",
        "--insecure-fast-kdf",
    ]);
    let fp2 = fingerprint(&ok(&out, "recovery-key new"));
    assert_ne!(fp1, fp2);
    let out = run(&["keystore", "recovery-key", "show", "officer2.key.pub"]);
    assert_eq!(fingerprint(&ok(&out, "recovery-key show")), fp2);
    let out = run(&[
        "keystore",
        "recovery-key",
        "new",
        "--out",
        "officer1.key",
        "--passphrase-env",
        "RK_PASS",
    ]);
    fails(
        &out,
        "recovery-key new over an existing file",
        "already exists",
    );

    let before = ok(
        &run(&[
            "keystore",
            "list",
            "node.redb",
            "--passphrase-env",
            "KS_PASS",
        ]),
        "list",
    );
    assert_eq!(before.lines().count(), 2, "{before}");

    let out = run(&[
        "keystore",
        "backup",
        "node.redb",
        "--to",
        "officer1.key.pub",
        "--to",
        "officer2.key.pub",
        "--out",
        "node.qbk",
        "--passphrase-env",
        "KS_PASS",
    ]);
    let printed = ok(&out, "backup");
    assert!(
        printed.contains(&fp1) && printed.contains(&fp2),
        "{printed}"
    );
    let out = run(&[
        "keystore",
        "backup",
        "node.redb",
        "--to",
        "officer1.key.pub",
        "--out",
        "node.qbk",
        "--passphrase-env",
        "KS_PASS",
    ]);
    fails(&out, "backup over an existing file", "already exists");

    let info: serde_json::Value = serde_json::from_str(&ok(
        &run(&["keystore", "backup-info", "node.qbk"]),
        "backup-info",
    ))
    .expect("json");
    assert_eq!(info["node_id"], ids[0].node_id().to_string());
    assert_eq!(info["key_ids"].as_array().expect("ids").len(), 2);
    assert_eq!(info["recipients"], serde_json::json!([fp1, fp2]));

    // The disk is lost.
    std::fs::remove_file(d.join("node.redb")).expect("rm");

    // A tampered backup, or a wrong passphrase, restores nothing.
    let mut bytes = std::fs::read(d.join("node.qbk")).expect("read");
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(d.join("tampered.qbk"), &bytes).expect("write");
    let restore_new = |backup: &str, key: &str, pass_env: &str| {
        vec![
            "keystore".to_owned(),
            "restore".into(),
            "new.redb".into(),
            "--backup".into(),
            backup.into(),
            "--recovery-key".into(),
            key.into(),
            "--create".into(),
            "--insecure-fast-kdf".into(),
            "--passphrase-env".into(),
            "NEW_PASS".into(),
            "--recovery-passphrase-env".into(),
            pass_env.into(),
        ]
    };
    let args = restore_new("tampered.qbk", "officer2.key", "RK_PASS");
    let out = run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    fails(
        &out,
        "restore of a tampered backup",
        "payload does not authenticate",
    );
    assert!(!d.join("new.redb").exists(), "nothing created");
    let args = restore_new("node.qbk", "officer2.key", "WRONG_PASS");
    let out = run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    fails(
        &out,
        "restore with a wrong passphrase",
        "wrong passphrase for the recovery key",
    );
    assert!(!d.join("new.redb").exists(), "nothing created");

    // Restore with the second officer's key into a new keystore.
    let args = restore_new("node.qbk", "officer2.key", "RK_PASS");
    let out = run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let printed = ok(&out, "restore --create");
    assert_eq!(printed.matches("restored key").count(), 2, "{printed}");

    let after = ok(
        &run(&[
            "keystore",
            "list",
            "new.redb",
            "--passphrase-env",
            "NEW_PASS",
        ]),
        "list restored",
    );
    assert_eq!(after, before, "the same key summary");
    let status: serde_json::Value =
        serde_json::from_str(&ok(&run(&["keystore", "status", "new.redb"]), "status"))
            .expect("json");
    assert_eq!(
        status["node_id"],
        ids[0].node_id().to_string(),
        "same node identity"
    );

    // Restoring again into it: refused (keys exist) unless told to overwrite.
    let again = [
        "keystore",
        "restore",
        "new.redb",
        "--backup",
        "node.qbk",
        "--recovery-key",
        "officer1.key",
        "--passphrase-env",
        "NEW_PASS",
        "--recovery-passphrase-env",
        "RK_PASS",
    ];
    let out = run(&again);
    fails(
        &out,
        "restore over existing keys",
        "already in the keystore",
    );
    let mut overwrite = again.to_vec();
    overwrite.push("--overwrite");
    let printed = ok(&run(&overwrite), "restore --overwrite");
    assert_eq!(printed.matches("(replaced)").count(), 2, "{printed}");
    assert_eq!(
        ok(
            &run(&[
                "keystore",
                "list",
                "new.redb",
                "--passphrase-env",
                "NEW_PASS"
            ]),
            "list"
        ),
        before
    );

    // Another node's keystore refuses this node's backup.
    ok(
        &run(&[
            "keystore",
            "init",
            "other.redb",
            "--passphrase-env",
            "KS_PASS",
            "--insecure-fast-kdf",
        ]),
        "init other node",
    );
    let out = run(&[
        "keystore",
        "restore",
        "other.redb",
        "--backup",
        "node.qbk",
        "--recovery-key",
        "officer1.key",
        "--passphrase-env",
        "KS_PASS",
        "--recovery-passphrase-env",
        "RK_PASS",
    ]);
    let err = fails(
        &out,
        "restore into another node",
        "cannot be restored into the keystore of node",
    );
    assert!(err.contains(&ids[0].node_id().to_string()), "{err}");
    let list = ok(
        &run(&[
            "keystore",
            "list",
            "other.redb",
            "--passphrase-env",
            "KS_PASS",
        ]),
        "list other",
    );
    assert!(list.is_empty(), "nothing restored: {list}");

    // Nothing secret was ever printed.
    for s in &secrets {
        assert!(!transcript.contains(s.as_str()), "a secret was printed");
    }
}
