//! A refresh interrupted at every step leaves every node with one usable,
//! consistent generation: a devnet node is made to exit (as if killed) at each
//! step of a refresh, and the coordinator right after its commit point; after the
//! restart the key is fully attested at one generation on the coordinator and on
//! every node, and signs.
//!
//! The exits come from `QUORATE_CRASH_AT`, honoured by debug builds only (the test
//! runs the debug binary).

use std::{
    path::Path,
    time::{Duration, Instant},
};

use quorate_coordinator::{
    api::model::{CreateKeyBody, KeyView, ParticipantsBody},
    client::Client,
};
use quorate_protocol::{
    lifecycle::{ApprovedOperation, Operation, OperationKind},
    roster::Roster,
    Ciphersuite, KeyId, NodeId,
};

mod common;

use common::devnet::Devnet;

fn secret(path: &Path) -> ed25519_dalek::SigningKey {
    let text = std::fs::read_to_string(path).expect("key file");
    let mut sk = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut sk).expect("hex");
    ed25519_dalek::SigningKey::from_bytes(&sk)
}

/// A refresh of `key` approved by two of the devnet's operators.
fn refresh(net: &Devnet, key: &KeyView, nonce: u8) -> ApprovedOperation {
    let mut committee: Vec<NodeId> = key
        .participants
        .iter()
        .map(|p| NodeId::from_hex(&p.node).expect("node id"))
        .collect();
    committee.sort();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let operation = Operation {
        key_id: KeyId::from_hex(&key.key_id).expect("key id"),
        kind: OperationKind::Refresh,
        from_generation: key.generation,
        group_key: hex::decode(&key.verifying_key).expect("hex"),
        committee,
        threshold: key.threshold,
        segments: Vec::new(),
        expires_at: now + 600,
        nonce: [nonce; 16],
        target: None,
    };
    let approvals = ["operator1.key", "operator2.key"]
        .iter()
        .map(|f| operation.approve(&secret(&net.data.join(f))))
        .collect();
    ApprovedOperation {
        operation,
        approvals,
    }
}

/// Polls `check` until it returns `Some` or `timeout` passes (then panics naming
/// `what` and the last state seen).
async fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut check: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    while Instant::now() < deadline {
        match check().await {
            Ok(v) => return v,
            Err(state) => last = state,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}; last seen: {last}");
}

async fn connected(api_url: &str) -> Vec<String> {
    let health: serde_json::Value = match reqwest::get(format!("{api_url}/health")).await {
        Ok(r) => r.json().await.unwrap_or_default(),
        Err(_) => return Vec::new(),
    };
    health["connected_nodes"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until the coordinator has seen `node` go (after a kill), so that a later
/// "connected" is the restarted process and not the dead one's stale connection.
async fn wait_disconnected(net: &Devnet, node: &str) {
    wait_for(
        &format!("the coordinator to see {node} gone"),
        Duration::from_secs(60),
        async || {
            let c = connected(&net.url).await;
            if c.iter().any(|n| n == node) {
                Err(format!("connected: {c:?}"))
            } else {
                Ok(())
            }
        },
    )
    .await;
}

async fn wait_all_connected(net: &Devnet) {
    wait_for(
        "every node connected to the coordinator",
        Duration::from_secs(60),
        async || {
            let c = connected(&net.url).await;
            if c.len() == 5 {
                Ok(())
            } else {
                Err(format!("connected: {c:?}"))
            }
        },
    )
    .await;
}

/// The generation a node's metrics report for `key`.
async fn node_generation(net: &Devnet, node: &str, key: &str) -> Option<u64> {
    let text = reqwest::get(format!("http://{}/metrics", net.admin_addr(node)))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let needle = format!("quorate_key_generation{{label=\"{key}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&needle))
        .and_then(|v| v.trim().parse().ok())
}

/// Waits until the coordinator's record is at `generation`, attested by every
/// member, and every node reports that generation.
async fn wait_consistent(net: &Devnet, api: &Client, key_id: &str, generation: u64) -> KeyView {
    wait_for(
        &format!("key {key_id} at generation {generation} everywhere"),
        Duration::from_secs(90),
        async || {
            let view = api.get_key(key_id).await.map_err(|e| e.to_string())?;
            if view.generation != generation || view.attestations.len() != view.participants.len() {
                return Err(format!(
                    "coordinator: generation {}, {} of {} attestations",
                    view.generation,
                    view.attestations.len(),
                    view.participants.len()
                ));
            }
            for i in 1..=5 {
                let node = format!("node{i}");
                let g = node_generation(net, &node, key_id).await;
                if g != Some(generation) {
                    return Err(format!("{node}: generation {g:?}"));
                }
            }
            Ok(view)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_interrupted_at_every_step_leaves_one_consistent_generation() {
    let mut net = Devnet::start();
    let api = net.api();
    let roster = Roster::load(&net.data.join("roster.toml"), None).expect("roster");
    let members: Vec<String> = roster
        .signers()
        .take(5)
        .map(|p| p.node.to_string())
        .collect();
    let key = api
        .create_key(&CreateKeyBody {
            ciphersuite: Ciphersuite::Ed25519,
            threshold: 3,
            participants: ParticipantsBody::Nodes(members),
            segments: Vec::new(),
        })
        .await
        .expect("create key");
    wait_all_connected(&net).await;
    net.sign_and_verify(&api, &key, "before").await;
    let node_args = ["node", "--config", "node2.toml"];
    // (step where node2 exits, whether the run commits: `None` when either is
    // right — at `all-confirmed` node2 may exit before its own confirmation left)
    let steps = [
        ("reshare:started", Some(false)),
        ("reshare:pending", Some(false)),
        ("reshare:all-confirmed", None),
        ("reshare:switching", Some(true)),
        ("reshare:switched", Some(true)),
    ];
    let mut generation = 0;
    let mut aborts = 0;
    for (i, (step, expected)) in steps.into_iter().enumerate() {
        eprintln!("== node2 exits at {step}");
        net.signal("node2", "-KILL");
        net.wait_last_exit(Duration::from_secs(10));
        wait_disconnected(&net, "node2").await;
        net.restart_with_env("node2", &node_args, &[("QUORATE_CRASH_AT", step)]);
        wait_all_connected(&net).await;
        let current = api.get_key(&key.key_id).await.expect("key");
        let op = refresh(&net, &current, i as u8 + 1);
        let client = api.clone();
        let call = tokio::spawn(async move { client.lifecycle(&op).await });
        let status = net.wait_last_exit(Duration::from_secs(60));
        assert!(status.is_some(), "node2 did not exit at {step}");
        net.restart("node2", &node_args);
        let answer = call.await.expect("task");
        eprintln!(
            "   answer: {:?}",
            answer
                .as_ref()
                .map(|v| v.generation)
                .map_err(ToString::to_string)
        );
        if let Some(commits) = expected {
            assert_eq!(
                answer.is_ok(),
                commits,
                "{step}: {:?}",
                answer.as_ref().err().map(ToString::to_string)
            );
        }
        match answer {
            Ok(view) => {
                assert_eq!(view.generation, generation + 1, "{step}");
                generation += 1;
            }
            Err(err) => {
                let text = err.to_string();
                assert!(
                    text.contains("disconnected") || text.contains("unreachable"),
                    "{step}: {text}"
                );
                aborts += 1;
                // node2 learns of the abort when it reconnects and drops its record.
                wait_for(
                    &format!("node2's lifecycle_aborted after {step}"),
                    Duration::from_secs(60),
                    async || {
                        let log = std::fs::read_to_string(net.data.join("node2.audit.jsonl"))
                            .unwrap_or_default();
                        let n = log.matches("\"lifecycle_aborted\"").count();
                        if n >= aborts {
                            Ok(())
                        } else {
                            Err(format!("{n} aborts logged"))
                        }
                    },
                )
                .await;
                // An abort proves nothing: a share node2 had confirmed is kept
                // (sealed) for a finish proof that may still come.
                if step == "reshare:pending" {
                    let log = std::fs::read_to_string(net.data.join("node2.audit.jsonl"))
                        .unwrap_or_default();
                    let last = log
                        .lines()
                        .rfind(|l| l.contains("\"lifecycle_aborted\""))
                        .unwrap_or_default();
                    assert!(last.contains("\"pending_share_kept\":true"), "{last}");
                }
            }
        }
        let view = wait_consistent(&net, &api, &key.key_id, generation).await;
        assert_eq!(view.verifying_key, key.verifying_key);
        net.sign_and_verify(&api, &view, step).await;
    }

    eprintln!("== coordinator exits at its commit point");
    net.signal("coordinator", "-KILL");
    let coordinator_args = ["coordinator", "--config", "coordinator.toml"];
    net.restart_with_env(
        "coordinator",
        &coordinator_args,
        &[("QUORATE_CRASH_AT", "coordinator:committed")],
    );
    wait_all_connected(&net).await;
    let current = api.get_key(&key.key_id).await.expect("key");
    let op = refresh(&net, &current, 99);
    let answer = api.lifecycle(&op).await;
    assert!(answer.is_err(), "the coordinator exited before answering");
    assert!(
        net.wait_last_exit(Duration::from_secs(30)).is_some(),
        "coordinator exited"
    );
    net.restart("coordinator", &coordinator_args);
    let view = wait_consistent(&net, &api, &key.key_id, generation + 1).await;
    net.sign_and_verify(&api, &view, "after coordinator restart")
        .await;
}
