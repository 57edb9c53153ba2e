//! End-to-end tests of a live devnet (real processes on loopback): a node killed
//! mid-signing, a coordinator restart, and garbage thrown at live ports.

use std::{io::Write, net::TcpStream, path::Path, process::Command, time::Duration};

use quorate_coordinator::{
    api::model::{CreateKeyBody, Job, JobStatus, ParticipantsBody},
    client::{verify_job, Client, RequestBuilder, SignOptions},
};
use quorate_protocol::{request::SignedRequest, Ciphersuite, KeyId};

mod common;

use common::devnet::{exe, Devnet};

/// Each test runs its own devnet; running them one at a time keeps their port
/// blocks from racing and their processes from starving each other.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Submits a signing request, waits for its job to finish and returns it.
async fn sign_until_done(api: &Client, key_id: &str, signed: &SignedRequest) -> Job {
    let job = api
        .sign(key_id, signed, SignOptions::wait(Duration::from_secs(60)))
        .await
        .expect("accepted");
    api.poll_until_done(&job.id, Duration::from_millis(100), Duration::from_secs(90))
        .await
        .expect("job")
}

async fn wait_healthy(url: &str) {
    let http = reqwest::Client::new();
    for _ in 0..300 {
        if let Ok(r) = http.get(format!("{url}/health")).send().await {
            if r.status().is_success() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{url} did not become healthy");
}

fn request(
    net: &Devnet,
    key: &str,
    messages: Vec<Vec<u8>>,
) -> quorate_protocol::request::SignedRequest {
    RequestBuilder::new(KeyId::from_hex(key).expect("key id"))
        .messages(messages)
        .purpose("BTC", 1_000, "bc1qtest", "e2e")
        .expires_in(Duration::from_secs(120))
        .sign(&net.client_key())
}

async fn create_key(api: &Client, suite: Ciphersuite) -> quorate_coordinator::api::model::KeyView {
    api.create_key(&CreateKeyBody {
        ciphersuite: suite,
        threshold: 3,
        participants: ParticipantsBody::Spanning {
            n: 5,
            min_segments: 3,
        },
        segments: Vec::new(),
    })
    .await
    .expect("create key")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_killed_mid_signing_is_routed_around_and_rejoins_after_restart() {
    let _serial = SERIAL.lock().await;
    let mut net = Devnet::start();
    let api = net.api();
    let key = create_key(&api, Ciphersuite::Secp256k1Tr).await;
    // A batch in flight while node 2 dies.
    let msgs: Vec<Vec<u8>> = (0u8..4).map(|i| vec![i; 32]).collect();
    let signed = request(&net, &key.key_id, msgs);
    let job = api
        .sign(&key.key_id, &signed, SignOptions::default())
        .await
        .expect("accepted");
    net.signal("node2", "-KILL");
    let job = api
        .poll_until_done(&job.id, Duration::from_millis(100), Duration::from_secs(90))
        .await
        .expect("job");
    assert_eq!(job.status, JobStatus::Succeeded, "{job:?}");
    verify_job(&net.attested(&key), &signed.request, &job).expect("every signature verifies");

    let shares_before = std::fs::read_to_string(net.data.join("node2.audit.jsonl"))
        .expect("audit")
        .matches("share_contributed")
        .count();
    // Node 2 comes back with its sealed keystore and serves again.
    net.restart("node2", &["node", "--config", "node2.toml"]);
    let admin = std::fs::read_to_string(net.data.join("node2.toml")).expect("cfg");
    let admin_addr = admin
        .lines()
        .find_map(|l| l.strip_prefix("admin = "))
        .expect("admin")
        .trim_matches('"')
        .to_string();
    wait_healthy(&format!("http://{admin_addr}")).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    // With nodes 1, 3, 4, 5 paused, only a quorum that includes node 2 can sign.
    for n in ["node1", "node3"] {
        net.signal(n, "-STOP");
    }
    let signed = request(&net, &key.key_id, vec![vec![9; 32]]);
    let job = sign_until_done(&api, &key.key_id, &signed).await;
    for n in ["node1", "node3"] {
        net.signal(n, "-CONT");
    }
    assert_eq!(job.status, JobStatus::Succeeded, "{job:?}");
    verify_job(&net.attested(&key), &signed.request, &job).expect("verifies");
    let node2_log = std::fs::read_to_string(net.data.join("node2.audit.jsonl")).expect("audit");
    assert!(
        node2_log.matches("share_contributed").count() > shares_before,
        "restarted node 2 signed with its kept share"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_restart_answers_finished_jobs_and_fails_pending_ones() {
    let _serial = SERIAL.lock().await;
    let mut net = Devnet::start();
    let api = net.api();
    let key = create_key(&api, Ciphersuite::Ed25519).await;
    let first = request(&net, &key.key_id, vec![vec![1; 32]]);
    let done = api
        .sign(
            &key.key_id,
            &first,
            SignOptions::wait(Duration::from_secs(30)),
        )
        .await
        .expect("sign");
    assert_eq!(done.status, JobStatus::Succeeded);
    // Freeze every node so the next job stays pending, then kill the coordinator.
    for i in 1..=5 {
        net.signal(&format!("node{i}"), "-STOP");
    }
    let pending = api
        .sign(
            &key.key_id,
            &request(&net, &key.key_id, vec![vec![2; 32]]),
            SignOptions::default(),
        )
        .await
        .expect("accepted");
    tokio::time::sleep(Duration::from_millis(300)).await;
    net.signal("coordinator", "-KILL");
    for i in 1..=5 {
        net.signal(&format!("node{i}"), "-CONT");
    }
    net.restart(
        "coordinator",
        &["coordinator", "--config", "coordinator.toml"],
    );
    wait_healthy(&net.url).await;
    let again = api
        .job(&done.id)
        .await
        .expect("finished job answered after restart");
    assert_eq!(again.status, JobStatus::Succeeded);
    verify_job(&net.attested(&key), &first.request, &again).expect("answered job still verifies");
    let failed = api.job(&pending.id).await.expect("pending job answered");
    assert_eq!(failed.status, JobStatus::Failed, "{failed:?}");
    // And signing works again.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let signed = request(&net, &key.key_id, vec![vec![3; 32]]);
    let job = sign_until_done(&api, &key.key_id, &signed).await;
    verify_job(&net.attested(&key), &signed.request, &job)
        .expect("verifies after coordinator restart");
}

fn throw(addr: &str, bytes: &[u8]) {
    if let Ok(mut s) = TcpStream::connect(addr) {
        let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
        let _ = s.write_all(bytes);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_live_ports_crashes_nothing() {
    let _serial = SERIAL.lock().await;
    let net = Devnet::start();
    let api = net.api();
    let key = create_key(&api, Ciphersuite::Secp256k1).await;
    let node_cfg = std::fs::read_to_string(net.data.join("node1.toml")).expect("cfg");
    let port = node_cfg
        .split("/tcp/")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("port")
        .to_string();
    let p2p = format!("127.0.0.1:{port}");
    let http = net.url.trim_start_matches("http://").to_string();
    let mut seed = 7u64;
    for round in 0..20 {
        let mut junk = vec![0u8; 64 + round * 997];
        for b in junk.iter_mut() {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            *b = (seed >> 33) as u8;
        }
        throw(&p2p, &junk);
        throw(&http, &junk);
    }
    // A multistream header followed by an absurd length, and oversized HTTP.
    throw(&p2p, b"\x13/multistream/1.0.0\n\xff\xff\xff\xff\xff\xff");
    throw(
        &http,
        b"POST /v1/keys HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n{",
    );
    throw(&http, b"GET /\x00\x01 HTTP/9.9\r\n\r\n");
    let http_client = reqwest::Client::new();
    let r = http_client
        .post(format!("{}/v1/keys/{}/signatures", net.url, key.key_id))
        .header("content-type", "application/json")
        .body("{\"signed_request\": 12}")
        .send()
        .await
        .expect("answered");
    assert_eq!(r.status().as_u16(), 400);
    // Everything still works.
    let signed = request(&net, &key.key_id, vec![vec![5; 32]]);
    let job = sign_until_done(&api, &key.key_id, &signed).await;
    verify_job(&net.attested(&key), &signed.request, &job).expect("verifies");
    for i in 1..=5 {
        let pid = net.pid(&format!("node{i}"));
        assert!(
            Path::new(&format!("/proc/{pid}")).exists(),
            "node{i} is still running"
        );
    }
}

fn admin_url(net: &Devnet, node: usize) -> String {
    let cfg = std::fs::read_to_string(net.data.join(format!("node{node}.toml"))).expect("cfg");
    let addr = cfg
        .lines()
        .find_map(|l| l.strip_prefix("admin = "))
        .expect("admin")
        .trim_matches('"')
        .to_string();
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_refusals_and_reloads_show_in_audit_logs_and_metrics() {
    let _serial = SERIAL.lock().await;
    let net = Devnet::start();
    let api = net.api();
    let key = create_key(&api, Ciphersuite::Ed25519).await;
    let over_limit = |amount: u64| {
        RequestBuilder::new(KeyId::from_hex(&key.key_id).expect("key id"))
            .message(vec![4; 32])
            .purpose("BTC", amount, "bc1qtest", "e2e")
            .expires_in(Duration::from_secs(120))
            .sign(&net.client_key())
    };
    // The devnet policy allows 1 BTC (100_000_000 sat) per request.
    let refused = api
        .sign(
            &key.key_id,
            &over_limit(200_000_000),
            SignOptions::wait(Duration::from_secs(30)),
        )
        .await;
    let problem = match refused {
        Ok(job) => job.problem.expect("failed job carries a problem"),
        Err(e) => e.problem().cloned().expect("problem answer"),
    };
    assert!(problem.type_uri.ends_with("policy-refused"), "{problem:?}");
    assert!(problem.detail.contains("amount_limit"), "{problem:?}");
    let http = reqwest::Client::new();
    let mut refusals_seen = 0;
    for i in 1..=5 {
        // A refusal to a later attempt may still be landing after the API answered:
        // wait until the audit log and the metric agree, then they must stay equal.
        let mut last = (0, 0);
        for _ in 0..50 {
            let log = std::fs::read_to_string(net.data.join(format!("node{i}.audit.jsonl")))
                .expect("audit");
            let metrics = http
                .get(format!("{}/metrics", admin_url(&net, i)))
                .send()
                .await
                .expect("metrics")
                .text()
                .await
                .expect("text");
            let audited = log.matches("\"rule\":\"amount_limit\"").count();
            let counted = metrics
                .lines()
                .find_map(|l| {
                    l.strip_prefix("quorate_policy_refusals_total{label=\"amount_limit\"} ")
                })
                .map(|v| v.parse::<usize>().expect("count"))
                .unwrap_or(0);
            last = (audited, counted);
            if audited == counted {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (audited, counted) = last;
        // Every refusal is both audited and counted.
        assert_eq!(counted, audited, "node{i}: refusals counted vs audited");
        if audited > 0 {
            refusals_seen += 1;
        }
    }
    assert!(
        refusals_seen >= 3,
        "every asked node refused and recorded it ({refusals_seen})"
    );

    // Raise the limit and reload with SIGHUP: the same amount now signs.
    let policy = std::fs::read_to_string(net.data.join("policy.toml")).expect("policy");
    std::fs::write(
        net.data.join("policy.toml"),
        policy.replace("per_request = 100_000_000", "per_request = 300_000_000"),
    )
    .expect("write");
    for i in 1..=5 {
        net.signal(&format!("node{i}"), "-HUP");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let signed = over_limit(200_000_000);
    let job = sign_until_done(&api, &key.key_id, &signed).await;
    verify_job(&net.attested(&key), &signed.request, &job).expect("signed after the reload");
    for i in 1..=5 {
        let log =
            std::fs::read_to_string(net.data.join(format!("node{i}.audit.jsonl"))).expect("audit");
        assert!(
            log.contains("policy_reloaded"),
            "node{i} audited the reload"
        );
        let v = Command::new(exe())
            .args(["audit", "verify"])
            .arg(net.data.join(format!("node{i}.audit.jsonl")))
            .output()
            .expect("verify");
        assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
    }
}
