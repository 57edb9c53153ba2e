//! End-to-end key lifecycle on a live 9-node devnet, through the CLI and the API:
//! an under-approved reshare is refused by the nodes (naming the rule), a 3-of-5
//! key moves to 4-of-7 with two members replaced and signs with the new committee
//! under the same group key, the members that left delete their shares, and a
//! refresh moves the key to the next generation.

use std::{path::Path, process::Command};

use quorate_coordinator::api::model::{CreateKeyBody, ParticipantsBody};
use quorate_protocol::{roster::Roster, Ciphersuite, NodeId};

mod common;

use common::devnet::{exe, Devnet};

fn roster(net: &Devnet) -> Roster {
    Roster::load(&net.data.join("roster.toml"), None).expect("roster")
}

fn node_id(roster: &Roster, name: &str) -> NodeId {
    roster
        .signers()
        .find(|p| p.name == name)
        .map(|p| p.node)
        .expect("roster name")
}

/// Runs `quorate client --url … --roster … keys <args>`; returns (ok, stdout+stderr).
fn keys_cli(net: &Devnet, args: &[&str]) -> (bool, String) {
    let token = std::fs::read_to_string(net.data.join("admin.token")).expect("token");
    let out = Command::new(exe())
        .args(["client", "--url", &net.url, "--roster"])
        .arg(net.data.join("roster.toml"))
        .arg("keys")
        .args(args)
        .current_dir(&net.data)
        .env("QUORATE_ADMIN_TOKEN", token.trim())
        .output()
        .expect("run quorate client");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn approve(net: &Devnet, op: &Path, operator: &str) {
    let (ok, out) = keys_cli(
        net,
        &[
            "approve",
            "--op",
            op.to_str().expect("path"),
            "--approver-key",
            &format!("{operator}.key"),
        ],
    );
    assert!(ok, "approve as {operator}: {out}");
}

fn audit_types(net: &Devnet, node: &str) -> String {
    std::fs::read_to_string(net.data.join(format!("{node}.audit.jsonl"))).expect("audit log")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reshare_3_of_5_to_4_of_7_with_two_members_replaced_then_refresh() {
    let net = Devnet::start_nodes(9);
    let api = net.api();
    let r = roster(&net);
    let old: Vec<String> = (1..=5).map(|i| format!("node{i}")).collect();
    let key = api
        .create_key(&CreateKeyBody {
            ciphersuite: Ciphersuite::Secp256k1Tr,
            threshold: 3,
            participants: ParticipantsBody::Nodes(
                old.iter().map(|n| node_id(&r, n).to_string()).collect(),
            ),
            segments: Vec::new(),
        })
        .await
        .expect("create key");
    assert_eq!(key.generation, 0);
    net.sign_and_verify(&api, &key, "before").await;

    // Data residency on DKG: members outside the allowed segments are refused,
    // members inside them get a key (the devnet puts node1, node4, node7 in
    // segment-1).
    let in_one: Vec<String> = ["node1", "node4", "node7"]
        .iter()
        .map(|n| node_id(&r, n).to_string())
        .collect();
    let mut outside = in_one.clone();
    outside[2] = node_id(&r, "node2").to_string();
    let err = api
        .create_key(&CreateKeyBody {
            ciphersuite: Ciphersuite::Ed25519,
            threshold: 2,
            participants: ParticipantsBody::Nodes(outside),
            segments: vec!["segment-1".into()],
        })
        .await
        .expect_err("a member outside the segments");
    assert!(err.to_string().contains("residency"), "{err}");
    let resident = api
        .create_key(&CreateKeyBody {
            ciphersuite: Ciphersuite::Ed25519,
            threshold: 2,
            participants: ParticipantsBody::Nodes(in_one),
            segments: vec!["segment-1".into()],
        })
        .await
        .expect("a key inside segment-1");
    assert_eq!(resident.participants.len(), 3);

    // Propose 4-of-7: node4 and node5 leave, node6..node9 join.
    let op = net.data.join("reshare.op");
    let new: Vec<String> = [
        "node1", "node2", "node3", "node6", "node7", "node8", "node9",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut args = vec![
        "propose".to_string(),
        "--key".into(),
        key.key_id.clone(),
        "--kind".into(),
        "reshare".into(),
        "--threshold".into(),
        "4".into(),
        "--out".into(),
        op.display().to_string(),
    ];
    for m in &new {
        args.push("--member".into());
        args.push(m.clone());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, out) = keys_cli(&net, &args);
    assert!(ok, "propose: {out}");
    assert!(out.contains("4-of-7"), "{out}");

    // One approval of the two every node requires: the nodes refuse, naming the rule.
    approve(&net, &op, "operator1");
    let (ok, out) = keys_cli(&net, &["apply", "--op", op.to_str().expect("path")]);
    assert!(!ok, "an under-approved reshare must fail: {out}");
    assert!(out.contains("not_approved"), "{out}");
    let still = api.get_key(&key.key_id).await.expect("key");
    assert_eq!(still.generation, 0, "nothing changed");
    net.sign_and_verify(&api, &still, "still old").await;

    // A second operator approves: the reshare runs.
    approve(&net, &op, "operator2");
    let (ok, out) = keys_cli(&net, &["apply", "--op", op.to_str().expect("path")]);
    assert!(ok, "apply: {out}");
    let moved = api.get_key(&key.key_id).await.expect("key");
    assert_eq!(moved.generation, 1);
    assert_eq!(moved.threshold, 4);
    assert_eq!(moved.participants.len(), 7);
    assert_eq!(moved.verifying_key, key.verifying_key, "no funds move");
    let members: Vec<String> = moved.participants.iter().map(|p| p.node.clone()).collect();
    for name in &new {
        assert!(
            members.contains(&node_id(&r, name).to_string()),
            "{name} joined"
        );
    }
    // The new committee alone signs, under the same key.
    let signers = net.sign_and_verify(&api, &moved, "after reshare").await;
    assert_eq!(signers.len(), 4);
    for leaver in ["node4", "node5"] {
        let id = node_id(&r, leaver).to_string();
        assert!(!signers.contains(&id), "{leaver} no longer signs");
        // The finish reaches leavers in parallel with the members' reports that
        // end the API call: wait (bounded) for their record.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let log = audit_types(&net, leaver);
            if log.contains("\"key_reshared\"") && log.contains("\"retired\"") {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "waited 60 s for {leaver}'s key_reshared (retired) record: {log}"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
    for joiner in ["node6", "node9"] {
        let log = audit_types(&net, joiner);
        assert!(log.contains("\"lifecycle_started\""), "{joiner}");
        assert!(
            log.contains("\"key_reshared\"") && log.contains("\"member\""),
            "{joiner}"
        );
    }

    // Refresh the new committee: same members and threshold, next generation.
    let refresh = net.data.join("refresh.op");
    let (ok, out) = keys_cli(
        &net,
        &[
            "propose",
            "--key",
            &key.key_id,
            "--kind",
            "refresh",
            "--out",
            refresh.to_str().expect("path"),
        ],
    );
    assert!(ok, "propose refresh: {out}");
    approve(&net, &refresh, "operator2");
    approve(&net, &refresh, "operator3");
    let (ok, out) = keys_cli(&net, &["apply", "--op", refresh.to_str().expect("path")]);
    assert!(ok, "refresh: {out}");
    let fresh = api.get_key(&key.key_id).await.expect("key");
    assert_eq!(fresh.generation, 2);
    assert_eq!(fresh.verifying_key, key.verifying_key);
    assert_ne!(
        fresh.public_key_package, moved.public_key_package,
        "new shares"
    );
    net.sign_and_verify(&api, &fresh, "after refresh").await;
    // A pre-approved schedule: refreshes from generations 2 and 3, approved now,
    // applied one per pass.
    let plan = net.data.join("schedule");
    std::fs::create_dir_all(&plan).expect("dir");
    for g in ["2", "3"] {
        let file = plan.join(format!("refresh-from-{g}.op"));
        let (ok, out) = keys_cli(
            &net,
            &[
                "propose",
                "--key",
                &key.key_id,
                "--kind",
                "refresh",
                "--from-generation",
                g,
                "--out",
                file.to_str().expect("path"),
            ],
        );
        assert!(ok, "propose scheduled refresh: {out}");
        approve(&net, &file, "operator1");
        approve(&net, &file, "operator3");
    }
    let dir = plan.to_str().expect("path");
    for expected in [3, 4] {
        let (ok, out) = keys_cli(&net, &["schedule", "--dir", dir, "--once"]);
        assert!(
            ok && out.contains(&format!("generation {expected}")),
            "{out}"
        );
        assert_eq!(
            api.get_key(&key.key_id).await.expect("key").generation,
            expected
        );
    }
    let (ok, out) = keys_cli(&net, &["schedule", "--dir", dir, "--once"]);
    assert!(ok && out.contains("nothing due"), "{out}");
    let scheduled = api.get_key(&key.key_id).await.expect("key");
    net.sign_and_verify(&api, &scheduled, "after the schedule")
        .await;
    // The same approved operation cannot run twice (it starts from generation 1).
    let (ok, out) = keys_cli(&net, &["apply", "--op", op.to_str().expect("path")]);
    assert!(!ok && out.contains("generation"), "{out}");
}
