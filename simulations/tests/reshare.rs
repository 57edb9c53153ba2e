//! Reshare workloads run the real `Reshare` machines: 3-of-5 → 4-of-7 with two
//! members replaced keeps the group key (the new committee alone signs under it,
//! three new shares do not), same seed ⇒ same trace and the same shares, the run
//! takes exactly three hops, CPU is charged, and a crashed member ends the run at
//! its deadline.

mod common;

use std::collections::BTreeMap;

use frost_core::{aggregate, keys::PublicKeyPackage, round1, round2, SigningPackage};
use frost_secp256k1::Secp256K1Sha256 as C;
use quorate_sim::{ReshareRecord, RunResult, Scenario};
use rand_chacha::{rand_core::SeedableRng, ChaCha20Rng};

/// 9 nodes: the key's committee is n1..n5 (3-of-5), the new one n3..n9 (4-of-7):
/// n1 and n2 leave, n6..n9 join, every old member deals.
fn reshare(cpu: &str, latency_ms: f64, extra: &str) -> Scenario {
    common::scenario(&format!(
        r#"
name = "reshare-3of5-to-4of7"
seed = 5
[committee]
n = 9
threshold = 4
[network]
latency = {{ dist = "constant", ms = {latency_ms} }}
[cpu]
model = "{cpu}"
[workload]
kind = "reshare"
rate_per_s = 1.0
count = 2
duration_s = 10.0
drain_s = 30.0
[reshare]
from_n = 5
from_threshold = 3
to_n = 7
timeout_ms = 3000
{extra}
"#
    ))
}

/// Signs with the given new shares through frost-core and verifies the signature
/// under the *old* group key.
fn sign_with(record: &ReshareRecord, labels: &[&str], rng: &mut ChaCha20Rng) -> Result<(), String> {
    let shares: Vec<_> = record
        .shares
        .iter()
        .filter(|(l, _)| labels.contains(&l.as_str()))
        .map(|(_, s)| s)
        .collect();
    assert_eq!(shares.len(), labels.len(), "every named member has a share");
    let public = PublicKeyPackage::<C>::deserialize(&shares[0].public.public_key_package)
        .map_err(|e| e.to_string())?;
    let packages: Vec<_> = shares
        .iter()
        .map(|s| s.key_package::<C>().map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    let message = b"after the reshare".as_slice();
    let mut nonces = Vec::new();
    let mut commitments = BTreeMap::new();
    for kp in &packages {
        let (n, c) = round1::commit(kp.signing_share(), rng);
        commitments.insert(*kp.identifier(), c);
        nonces.push(n);
    }
    let package = SigningPackage::new(commitments, message);
    let mut sig_shares = BTreeMap::new();
    for (kp, n) in packages.iter().zip(&nonces) {
        sig_shares.insert(
            *kp.identifier(),
            round2::sign(&package, n, kp).map_err(|e| e.to_string())?,
        );
    }
    let signature = aggregate(&package, &sig_shares, &public).map_err(|e| e.to_string())?;
    let old_key = frost_core::VerifyingKey::<C>::deserialize(&record.old.verifying_key)
        .map_err(|e| e.to_string())?;
    old_key
        .verify(message, &signature)
        .map_err(|e| e.to_string())
}

fn check_keeps_the_key(r: &RunResult) {
    assert_eq!(r.summary.sessions, 2, "{:?}", r.summary);
    assert_eq!(r.summary.signed, 2, "{:?}", r.sessions);
    assert_eq!(r.reshares.len(), 2);
    let members: Vec<String> = (3..=9).map(|i| format!("n{i}")).collect();
    let mut rng = ChaCha20Rng::seed_from_u64(11);
    for rec in &r.reshares {
        assert_eq!(rec.outcome, "signed");
        assert_eq!(rec.members, members);
        assert_eq!(rec.old.threshold, 3);
        assert_eq!(rec.old.members.len(), 5);
        let labels: Vec<&str> = rec.shares.iter().map(|(l, _)| l.as_str()).collect();
        assert_eq!(labels, members, "every new member has a share");
        for (label, share) in &rec.shares {
            assert_eq!(
                share.public.verifying_key, rec.old.verifying_key,
                "{label}: the group key is unchanged"
            );
            assert_eq!(share.public.threshold, 4, "{label}");
            assert_eq!(share.public.members.len(), 7, "{label}");
            assert_eq!(
                share.public, rec.shares[0].1.public,
                "{label}: one new key package"
            );
            assert_ne!(
                share.public.public_key_package, rec.old.public_key_package,
                "{label}: new verifying shares"
            );
        }
        // The newcomers alone sign under the old key; three new shares do not.
        sign_with(rec, &["n6", "n7", "n8", "n9"], &mut rng).expect("4 new shares sign");
        sign_with(rec, &["n3", "n5", "n9", "n4"], &mut rng).expect("any 4 sign");
        assert!(sign_with(rec, &["n6", "n7", "n8"], &mut rng).is_err());
    }
    // The two runs reshared the same key with fresh randomness.
    assert_ne!(
        r.reshares[0].shares[0].1.public.public_key_package,
        r.reshares[1].shares[0].1.public.public_key_package
    );
}

#[test]
fn reshare_3_of_5_to_4_of_7_keeps_the_group_key_and_is_deterministic() {
    let s = reshare("default", 20.0, "");
    let a = common::run(&s);
    check_keeps_the_key(&a);
    let b = common::run(&s);
    assert_eq!(a.summary.trace_hash, b.summary.trace_hash);
    assert_eq!(a, b, "same seed: same sessions, summary and new shares");
    let mut other = s.clone();
    other.seed = 6;
    let c = common::run(&other);
    check_keeps_the_key(&c);
    assert_ne!(a.summary.trace_hash, c.summary.trace_hash);
}

#[test]
fn reshare_takes_three_hops_and_the_cpu_it_is_charged() {
    // Commitments and sealed sub-shares (one hop), echoes (two), confirmations
    // (three); no CPU cost: exactly 3 × 20 ms.
    let free = common::run(&reshare("none", 20.0, ""));
    assert_eq!(free.summary.signed, 2);
    for rec in &free.sessions {
        assert_eq!(rec.kind, "reshare");
        assert_eq!(rec.latency_ms, Some(60.0), "{rec:?}");
        // 5 dealers' commitments to the 8 other participants, their sub-shares
        // to the 7 new members but themselves (n3..n5 deal to themselves), 7 × 6
        // echoes, 7 confirmations to the 8 other participants.
        assert_eq!(rec.messages, 5 * 8 + (5 * 7 - 3) + 7 * 6 + 7 * 8, "{rec:?}");
        assert_eq!(rec.signers.len(), 9);
    }
    // The built-in table charges the reshare steps: the run takes longer, and
    // every participant spent CPU on it.
    let charged = common::run(&reshare("default", 20.0, ""));
    for rec in &charged.sessions {
        let latency = rec.latency_ms.expect("finished");
        assert!(latency > 60.0 + 1.0, "{rec:?}");
    }
    for node in &charged.summary.nodes[..9] {
        assert!(node.stats.cpu_us > 0, "{}: {:?}", node.label, node.stats);
    }
}

#[test]
fn a_crashed_new_member_stops_the_run_at_the_deadline() {
    let r = common::run(&reshare(
        "none",
        20.0,
        "[[faults]]\nkind = \"crash\"\nnodes = [\"n8\"]\nat_s = 0.0",
    ));
    assert_eq!(r.summary.signed, 0, "{:?}", r.sessions);
    for rec in &r.sessions {
        assert_eq!(rec.outcome, "timed-out", "{rec:?}");
        // The new members wait for n8's echo and name it; n1 and n2, dealers
        // that leave, see only that no new member confirmed and name all seven.
        let members: Vec<String> = (3..=9).map(|i| format!("n{i}")).collect();
        assert_eq!(rec.culprits, members, "{rec:?}");
        assert_eq!(rec.culprits_correct, 1, "only n8 was down");
    }
    let rec = &r.reshares[0];
    assert_eq!(rec.outcome, "timed-out");
    assert!(
        rec.shares.is_empty(),
        "nobody derived a share without n8's echo"
    );
}

#[test]
fn reshare_tables_name_their_fields() {
    let text = |extra: &str, reshare: &str| {
        format!(
            "name = \"x\"\n[committee]\nn = 9\nthreshold = 4\n[workload]\nkind = \"{extra}\"\n{reshare}"
        )
    };
    let err = |t: String| match Scenario::from_toml(&t, "t.toml") {
        Ok(_) => panic!("accepted: {t}"),
        Err(e) => e.to_string(),
    };
    let table = "[reshare]\nfrom_n = 5\nfrom_threshold = 3\nto_n = 7\n";
    assert!(Scenario::from_toml(&text("reshare", table), "t.toml").is_ok());
    assert!(err(text("reshare", "")).contains("workload.kind"));
    assert!(err(text("dkg", table)).contains("reshare"));
    let gap = "[reshare]\nfrom_n = 4\nfrom_threshold = 3\nto_n = 4\n";
    let e = err(text("reshare", gap));
    assert!(e.contains("reshare.to_n") && e.contains("neither"), "{e}");
    let e = err(text(
        "reshare",
        &table.replace("from_threshold = 3", "from_threshold = 6"),
    ));
    assert!(e.contains("reshare.from_threshold"), "{e}");
    let e = err(text("reshare", &format!("{table}dealers = 2\n")));
    assert!(e.contains("reshare.dealers"), "{e}");
    let e = err(text(
        "reshare",
        &table.replace("to_n = 7", "to_n = 7\nto_threshold = 4"),
    ));
    assert!(e.contains("to_threshold"), "{e}");
}
