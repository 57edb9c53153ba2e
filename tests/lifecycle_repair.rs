//! End to end: node2's keystore is replaced by a restore of a backup taken before
//! the key existed (same identity, no share); after an operator-approved repair
//! through the CLI, a 4-of-5 key signs with node5 down — so with node2's share.

use std::{path::Path, process::Command, time::Duration};

use quorate_coordinator::api::model::{CreateKeyBody, ParticipantsBody};
use quorate_protocol::{roster::Roster, Ciphersuite};

mod common;

use common::devnet::{exe, Devnet};

fn quorate(net: &Devnet, args: &[&str]) -> (bool, String) {
    let token = std::fs::read_to_string(net.data.join("admin.token")).expect("token");
    let out = Command::new(exe())
        .args(args)
        .current_dir(&net.data)
        .env("QUORATE_ADMIN_TOKEN", token.trim())
        .env("RK_PASS", "recovery passphrase")
        .env_remove("RUST_LOG")
        .output()
        .expect("run quorate");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn client(net: &Devnet, args: &[&str]) -> (bool, String) {
    let roster = net.data.join("roster.toml");
    let mut all = vec![
        "client",
        "--url",
        &net.url,
        "--roster",
        roster.to_str().expect("path"),
        "keys",
    ];
    all.extend_from_slice(args);
    quorate(net, &all)
}

async fn wait_connected(net: &Devnet, node: &str, present: bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let body = match reqwest::get(format!("{}/health", net.url)).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if body.contains(&format!("\"{node}\"")) == present {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "waited 60 s for {node} {} the coordinator: {body}",
            if present { "connected to" } else { "gone from" }
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn stop(net: &mut Devnet, node: &str) {
    net.signal(node, "-KILL");
    net.wait_last_exit(Duration::from_secs(10));
    wait_connected(net, node, false).await;
}

fn ok(step: &str, (ok, out): (bool, String)) -> String {
    assert!(ok, "{step}: {out}");
    out
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_lost_its_share_gets_it_back_and_signs_again() {
    let mut net = Devnet::start();
    let api = net.api();
    let roster = Roster::load(&net.data.join("roster.toml"), None).expect("roster");
    // A backup of node2 with no key in it yet: its identity only.
    ok(
        "recovery key",
        quorate(
            &net,
            &[
                "keystore",
                "recovery-key",
                "new",
                "--out",
                "rk.key",
                "--passphrase-env",
                "RK_PASS",
            ],
        ),
    );
    stop(&mut net, "node2").await;
    ok(
        "backup",
        quorate(
            &net,
            &[
                "keystore",
                "backup",
                "node2.keystore",
                "--to",
                "rk.key.pub",
                "--out",
                "node2-empty.qbk",
                "--passphrase-file",
                "node2.pass",
            ],
        ),
    );
    let node_args = ["node", "--config", "node2.toml"];
    net.restart("node2", &node_args);
    wait_connected(&net, "node2", true).await;

    let members: Vec<String> = roster
        .signers()
        .take(5)
        .map(|p| p.node.to_string())
        .collect();
    let key = api
        .create_key(&CreateKeyBody {
            ciphersuite: Ciphersuite::Secp256k1,
            threshold: 4,
            participants: ParticipantsBody::Nodes(members),
            segments: Vec::new(),
        })
        .await
        .expect("create 4-of-5 key");
    net.sign_and_verify(&api, &key, "before").await;

    // node2's disk is replaced: the restored keystore has its identity, no share.
    stop(&mut net, "node2").await;
    let ks = net.data.join("node2.keystore");
    std::fs::rename(&ks, net.data.join("node2.keystore.lost")).expect("move");
    ok(
        "restore",
        quorate(
            &net,
            &[
                "keystore",
                "restore",
                path(&ks),
                "--create",
                "--backup",
                "node2-empty.qbk",
                "--recovery-key",
                "rk.key",
                "--passphrase-file",
                "node2.pass",
                "--recovery-passphrase-env",
                "RK_PASS",
            ],
        ),
    );
    net.restart("node2", &node_args);
    wait_connected(&net, "node2", true).await;

    // Repair, approved by two operators.
    let op = net.data.join("repair.op");
    ok(
        "propose",
        client(
            &net,
            &[
                "propose",
                "--key",
                &key.key_id,
                "--kind",
                "repair",
                "--member",
                "node2",
                "--out",
                path(&op),
            ],
        ),
    );
    for operator in ["operator1", "operator3"] {
        ok(
            "approve",
            client(
                &net,
                &[
                    "approve",
                    "--op",
                    path(&op),
                    "--approver-key",
                    &format!("{operator}.key"),
                ],
            ),
        );
    }
    let out = ok("apply", client(&net, &["apply", "--op", path(&op)]));
    assert!(out.contains("attested by all 5"), "{out}");
    let repaired = api.get_key(&key.key_id).await.expect("key");
    assert_eq!(
        repaired.public_key_package, key.public_key_package,
        "the same shares"
    );
    assert_eq!(repaired.generation, key.generation);
    let log = std::fs::read_to_string(net.data.join("node2.audit.jsonl")).expect("audit");
    assert!(log.contains("\"key_repaired\""), "node2 audited the repair");
    // The target now holds the key: a second repair is refused by it.
    let again = net.data.join("again.op");
    ok(
        "propose again",
        client(
            &net,
            &[
                "propose",
                "--key",
                &key.key_id,
                "--kind",
                "repair",
                "--member",
                "node2",
                "--out",
                path(&again),
            ],
        ),
    );
    for operator in ["operator1", "operator2"] {
        ok(
            "approve",
            client(
                &net,
                &[
                    "approve",
                    "--op",
                    path(&again),
                    "--approver-key",
                    &format!("{operator}.key"),
                ],
            ),
        );
    }
    let (ok2, out) = client(&net, &["apply", "--op", path(&again)]);
    assert!(!ok2 && out.contains("key_present"), "{out}");
    // With node5 down, any 4 signers include node2: its share is back.
    stop(&mut net, "node5").await;
    let signers = net.sign_and_verify(&api, &repaired, "after repair").await;
    let node2 = roster
        .signers()
        .find(|p| p.name == "node2")
        .expect("node2")
        .node
        .to_string();
    assert!(signers.contains(&node2), "{signers:?}");
}
