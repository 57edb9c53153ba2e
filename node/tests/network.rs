//! Several nodes in one test process over real libp2p on loopback: DKG then
//! signing for every ciphersuite, plus the refusals operators must be able to see.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use futures::StreamExt;
use libp2p::{request_response, swarm::SwarmEvent, PeerId, Swarm};
use quorate_coordinator::{
    types::{KeyRecord, KeySpec, Participants},
    CoordinatorError, Engine, EngineConfig,
};
use quorate_node::{
    audit::{self, AuditLog},
    config::{LimitsConfig, Routing},
    daemon::{self, NodeHandle, NodeParts},
    keystore::{KdfParams, Keystore, Passphrase, SealedKeystore},
    metrics::Metrics,
    policy::{Policy, PolicyEngine},
    roster::Roster,
    transport::{self, Behaviour, BehaviourEvent},
};
use quorate_protocol::{
    request::{Purpose, RequestBody, SignedRequest, SigningRequest, REQUEST_VERSION},
    wire::frame::{Ack, Frame},
    Ciphersuite, Envelope, KeyId, NodeId, NodeIdentity, Payload, SessionId,
};
use rand_chacha::{rand_core::SeedableRng, ChaCha20Rng};
use rand_core::RngCore;

/// Ports handed out so far in this process: never hand the same port out twice,
/// even after the probing socket is closed.
static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());

/// The tests of this file share one process; each runs alone so their node and
/// coordinator ports and CPU-heavy phases never interfere.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A free port (TCP and UDP) below the kernel's ephemeral range: a port from
/// `bind(0)` could be taken as some outgoing connection's source port before the
/// node under test binds it.
fn raw_messages(r: &SigningRequest) -> &[Vec<u8>] {
    match &r.body {
        RequestBody::Raw { messages, .. } => messages,
        RequestBody::BitcoinPsbt(_) => &[],
    }
}

fn set_messages(r: &mut SigningRequest, messages: Vec<Vec<u8>>) {
    r.body = RequestBody::Raw {
        messages,
        tweak: None,
    };
}

fn free_port() -> u16 {
    let mut taken = HANDED_OUT.lock().expect("ports");
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    let (low, high) = (10_000u16, ephemeral_low.max(11_000));
    let mut rng = ChaCha20Rng::seed_from_u64(u64::from(std::process::id()) ^ unix_ms());
    loop {
        let port = low + (rng.next_u32() % u32::from(high - low)) as u16;
        let free = TcpListener::bind(("127.0.0.1", port)).is_ok()
            && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok();
        if free && !taken.contains(&port) {
            taken.push(port);
            return port;
        }
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
}

struct Net {
    dir: tempfile::TempDir,
    ids: Vec<NodeIdentity>,
    coordinator: Arc<NodeIdentity>,
    second_coordinator: Arc<NodeIdentity>,
    mallory: Arc<NodeIdentity>,
    client: ed25519_dalek::SigningKey,
    roster_text: String,
    ports: Vec<u16>,
    coord_port: u16,
    quic: bool,
}

impl Net {
    fn new(n: usize, seed: u64) -> Self {
        Self::with_transport(n, seed, false)
    }

    /// `quic`: every node and the coordinator listen on QUIC only.
    fn with_transport(n: usize, seed: u64, quic: bool) -> Self {
        let fmt_addr = move |port: u16| {
            if quic {
                format!("/ip4/127.0.0.1/udp/{port}/quic-v1")
            } else {
                format!("/ip4/127.0.0.1/tcp/{port}")
            }
        };
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let ids: Vec<_> = (0..n).map(|_| NodeIdentity::generate(&mut rng)).collect();
        let coordinator = Arc::new(NodeIdentity::generate(&mut rng));
        let mallory = Arc::new(NodeIdentity::generate(&mut rng));
        let second_coordinator = Arc::new(NodeIdentity::generate(&mut rng));
        let client = ed25519_dalek::SigningKey::generate(&mut rng);
        // One port per node plus one for mallory (a roster signer run by the tests).
        let ports: Vec<u16> = (0..=n).map(|_| free_port()).collect();
        let coord_port = free_port();
        let mut roster = String::new();
        for (i, id) in ids.iter().chain([mallory.as_ref()]).enumerate() {
            let p = id.public();
            let addr = ports
                .get(i)
                .map(|p| format!("\"{}\"", fmt_addr(*p)))
                .unwrap_or_default();
            roster.push_str(&format!(
                "[[nodes]]\nname = \"node{}\"\nnode_id = \"{}\"\nseal_key = \"{}\"\nindex = {}\nsegment = \"seg{}\"\naddresses = [{addr}]\n\n",
                i + 1, p.node, hex::encode(p.seal_key), i + 1, if i == n { "-mallory".to_string() } else { (i % 3).to_string() }
            ));
        }
        roster.push_str(&format!(
            "[[coordinators]]\nname = \"coord\"\nnode_id = \"{}\"\naddresses = [\"{}\"]\n",
            coordinator.node_id(),
            fmt_addr(coord_port)
        ));
        let coord2_port = free_port();
        roster.push_str(&format!(
            "\n[[coordinators]]\nname = \"coord2\"\nnode_id = \"{}\"\naddresses = [\"/ip4/127.0.0.1/tcp/{coord2_port}\"]\n",
            second_coordinator.node_id()
        ));
        let dir = tempfile::tempdir().expect("tmp");
        let pass = Passphrase::new("correct horse").expect("pass");
        for (i, id) in ids.iter().enumerate() {
            Keystore::init(
                dir.path().join(format!("ks{i}.redb")),
                &pass,
                id,
                KdfParams::insecure_for_tests(),
                &mut rng,
            )
            .expect("keystore");
        }
        Self {
            dir,
            ids,
            coordinator,
            second_coordinator,
            mallory,
            client,
            roster_text: roster,
            ports,
            coord_port,
            quic,
        }
    }

    fn addr(&self, port: u16) -> String {
        if self.quic {
            format!("/ip4/127.0.0.1/udp/{port}/quic-v1")
        } else {
            format!("/ip4/127.0.0.1/tcp/{port}")
        }
    }

    fn policy(&self, per_request: u64) -> Policy {
        Policy::from_toml(&format!(
            "version = 1\n[clients.exchange]\npublic_key = \"{}\"\nkeys = [\"*\"]\nallow_raw = true\n[clients.exchange.limits.BTC]\nper_request = {per_request}\nper_window = 1_000_000_000\n",
            hex::encode(self.client.verifying_key().to_bytes())
        ))
        .expect("policy")
    }

    fn audit_path(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("audit{i}.jsonl"))
    }

    fn start(&self, i: usize, routing: Routing, metrics: Metrics) -> NodeHandle {
        let limits = LimitsConfig {
            session_timeout_ms: 10_000,
            ..LimitsConfig::default()
        };
        self.start_with(i, routing, metrics, limits, None)
    }

    /// As [`Self::start`], with these limits and (optionally) a policy file that
    /// `Control::ReloadPolicy` re-reads.
    fn start_with(
        &self,
        i: usize,
        routing: Routing,
        metrics: Metrics,
        limits: LimitsConfig,
        policy_path: Option<PathBuf>,
    ) -> NodeHandle {
        let pass = Passphrase::new("correct horse").expect("pass");
        let ks = SealedKeystore::open(self.dir.path().join(format!("ks{i}.redb")))
            .expect("open")
            .unseal(&pass)
            .expect("unseal");
        let audit =
            AuditLog::open_anchored(self.audit_path(i), ks.identity(), ks.state()).expect("audit");
        daemon::spawn(NodeParts {
            keystore: ks,
            roster: Roster::from_toml(&self.roster_text).expect("roster"),
            policy: PolicyEngine::new(match &policy_path {
                Some(p) => Policy::from_file(p).expect("policy file"),
                None => self.policy(100_000_000),
            }),
            policy_path,
            audit,
            listen: vec![self.addr(self.ports[i]).parse().expect("addr")],
            routing,
            limits,
            metrics,
        })
        .expect("spawn")
    }

    fn request(&self, key: KeyId, messages: Vec<Vec<u8>>, amount: u64) -> SignedRequest {
        let mut nonce = [0u8; 16];
        rand_core::OsRng.fill_bytes(&mut nonce);
        SigningRequest {
            version: REQUEST_VERSION,
            client: self.client.verifying_key().to_bytes(),
            key_id: key,
            body: RequestBody::Raw {
                messages,
                tweak: None,
            },
            purpose: Purpose {
                asset: "BTC".into(),
                amount,
                destination: "bc1qdest".into(),
                memo: String::new(),
            },
            expires_at_ms: unix_ms() + 60_000,
            nonce,
        }
        .sign(&self.client)
    }
}

/// A raw roster peer speaking the transport directly (for spoofing and
/// outsider tests).
struct RawPeer {
    swarm: Swarm<Behaviour>,
    roster: Roster,
}

impl RawPeer {
    fn new(net: &Net, identity: &NodeIdentity) -> Self {
        let roster = Roster::from_toml(&net.roster_text).expect("roster");
        let peers: Vec<PeerId> = roster.peers().iter().map(|p| p.peer_id).collect();
        let mut swarm =
            transport::build_swarm(identity, peers, transport::Limits::default()).expect("swarm");
        for p in roster.peers() {
            for a in &p.addresses {
                swarm.add_peer_address(p.peer_id, a.clone());
            }
        }
        Self { swarm, roster }
    }

    /// Sends one frame and returns the answer (`Err` when the request failed).
    async fn ask(&mut self, to: &NodeId, frame: Frame) -> Result<Ack, String> {
        let peer = self.roster.net(to).expect("in roster").peer_id;
        let id = transport::send(&mut self.swarm, &peer, frame);
        let until = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let event = tokio::time::timeout_at(until, self.swarm.select_next_some())
                .await
                .map_err(|_| "timeout".to_string())?;
            let ev = match event {
                SwarmEvent::Behaviour(BehaviourEvent::Dkg(e))
                | SwarmEvent::Behaviour(BehaviourEvent::Sign(e)) => e,
                _ => continue,
            };
            match ev {
                request_response::Event::Message {
                    message:
                        request_response::Message::Response {
                            response,
                            request_id,
                        },
                    ..
                } if request_id == id => return Ok(response),
                request_response::Event::OutboundFailure {
                    error, request_id, ..
                } if request_id == id => return Err(error.to_string()),
                _ => {}
            }
        }
    }
}

async fn started(net: &Net, routing: Routing) -> (Vec<NodeHandle>, Vec<Metrics>, Engine) {
    if std::env::var("RUST_LOG").is_ok() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .try_init();
    }
    let metrics: Vec<Metrics> = net.ids.iter().map(|_| Metrics::default()).collect();
    let nodes: Vec<NodeHandle> = (0..net.ids.len())
        .map(|i| net.start(i, routing, metrics[i].clone()))
        .collect();
    let engine = Engine::spawn(EngineConfig {
        identity: net.coordinator.clone(),
        roster: quorate_protocol::roster::Roster::from_toml(&net.roster_text).expect("roster"),
        listen: vec![net.addr(net.coord_port)],
        session_timeout_ms: 3_000,
        dkg_timeout_ms: 20_000,
    })
    .expect("engine");
    tokio::time::sleep(Duration::from_millis(300)).await;
    (nodes, metrics, engine)
}

fn node_ids(net: &Net) -> Vec<NodeId> {
    net.ids.iter().map(|i| i.node_id()).collect()
}

async fn dkg(engine: &Engine, nodes: &[NodeId], suite: Ciphersuite, t: u16) -> KeyRecord {
    engine
        .create_key(KeySpec {
            ciphersuite: suite,
            threshold: t,
            participants: Participants::Nodes(nodes.to_vec()),
            segments: Vec::new(),
        })
        .await
        .inspect(|key| {
            // Every member's attestation came with the key, and each verifies.
            let body = quorate_protocol::AttestedKey::from_public(&key.public).expect("body");
            assert_eq!(key.attestations.len(), nodes.len(), "one per member");
            for a in &key.attestations {
                a.verify(&body).expect("attestation verifies");
            }
        })
        .unwrap_or_else(|e| panic!("{suite} DKG: {e}"))
}

fn audit_kinds(path: &Path) -> Vec<String> {
    audit::read_entries(path)
        .expect("audit")
        .into_iter()
        .map(|e| serde_json::to_string(&e.kind).expect("json"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dkg_and_signing_over_libp2p_for_every_suite() {
    let _serial = SERIAL.lock().await;
    let net = Net::new(5, 1);
    let (nodes, metrics, engine) = started(&net, Routing::Direct).await;
    let ids = node_ids(&net);
    for suite in Ciphersuite::ALL {
        let key = dkg(&engine, &ids, suite, 3).await;
        for h in &nodes {
            let held = h
                .keys()
                .await
                .into_iter()
                .find(|k| k.key_id == key.key_id())
                .expect("key");
            assert_eq!(held, key.public, "every node derived the same group key");
        }
        let msg = vec![0x42; 32];
        let result = engine
            .sign(
                key.clone(),
                net.request(key.key_id(), vec![msg.clone()], 1000),
            )
            .await
            .expect("sign");
        assert_eq!(result.signatures.len(), 1);
        key.public
            .verify(&msg, &result.signatures[0].signature.signature, None)
            .expect("signature verifies");
        assert_eq!(result.attempts.len(), 1, "{:?}", result.attempts);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // 3 signatures x 3 signers = 9 signing sessions across the nodes.
    let done: u64 = metrics
        .iter()
        .flat_map(|m| {
            m.render()
                .lines()
                .filter_map(|l| {
                    l.strip_prefix("quorate_sessions_total{kind=\"sign\",outcome=\"done\"} ")
                        .map(|v| v.parse::<u64>().expect("count"))
                })
                .collect::<Vec<_>>()
        })
        .sum();
    assert_eq!(done, 9);
    engine.shutdown().await;
    for h in nodes {
        h.stop().await.expect("stop");
    }
    for i in 0..5 {
        let report = audit::verify(&net.audit_path(i), Some(net.ids[i].node_id())).expect("verify");
        assert!(report.first_bad.is_none(), "{report:?}");
        let kinds = audit_kinds(&net.audit_path(i)).join("\n");
        assert_eq!(kinds.matches("key_generated").count(), 3, "{kinds}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segmented_nodes_run_dkg_and_sign_through_the_coordinator() {
    let _serial = SERIAL.lock().await;
    let net = Net::new(3, 2);
    let (nodes, _, engine) = started(&net, Routing::ViaCoordinator).await;
    let ids = node_ids(&net);
    let key = dkg(&engine, &ids, Ciphersuite::Secp256k1Tr, 2).await;
    let msg = vec![7; 32];
    let result = engine
        .sign(
            key.clone(),
            net.request(key.key_id(), vec![msg.clone()], 10),
        )
        .await
        .expect("sign");
    key.public
        .verify(&msg, &result.signatures[0].signature.signature, None)
        .expect("verifies");
    engine.shutdown().await;
    for h in nodes {
        h.stop().await.expect("stop");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_node_is_routed_around_and_blamed() {
    let _serial = SERIAL.lock().await;
    let net = Net::new(4, 5);
    let (mut nodes, _, engine) = started(&net, Routing::Direct).await;
    let ids = node_ids(&net);
    let key = dkg(&engine, &ids, Ciphersuite::Ed25519, 2).await;
    // Stop two of the four signers: 2-of-4 still has a quorum.
    let stopped: Vec<NodeId> = vec![nodes[0].node_id, nodes[2].node_id];
    let h2 = nodes.remove(2);
    let h0 = nodes.remove(0);
    h0.stop().await.expect("stop");
    h2.stop().await.expect("stop");
    let msgs = vec![vec![1; 32], vec![2; 32]];
    let result = engine
        .sign(key.clone(), net.request(key.key_id(), msgs.clone(), 10))
        .await
        .expect("sign despite stopped nodes");
    for (m, s) in msgs.iter().zip(&result.signatures) {
        key.public
            .verify(m, &s.signature.signature, None)
            .expect("verifies");
    }
    let signed: Vec<_> = result
        .attempts
        .iter()
        .filter(|a| a.outcome == "signed")
        .collect();
    assert_eq!(signed.len(), 2, "{:?}", result.attempts);
    assert!(signed
        .iter()
        .all(|a| a.signers.iter().all(|s| !stopped.contains(s))));
    engine.shutdown().await;
    for h in nodes {
        h.stop().await.expect("stop");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_typed_audited_and_counted() {
    let _serial = SERIAL.lock().await;
    let net = Net::new(3, 3);
    let (nodes, metrics, engine) = started(&net, Routing::Direct).await;
    let ids = node_ids(&net);
    let key = dkg(&engine, &ids, Ciphersuite::Ed25519, 2).await;
    let msg = vec![1; 32];

    // Over the per-request limit: every node refuses with the rule.
    let err = engine
        .sign(
            key.clone(),
            net.request(key.key_id(), vec![msg.clone()], 500_000_000),
        )
        .await
        .expect_err("over limit");
    match err {
        CoordinatorError::Refused { refusals, .. } => {
            assert!(
                refusals.iter().all(|(_, r)| r == "policy:amount_limit"),
                "{refusals:?}"
            )
        }
        other => panic!("expected a policy refusal, got {other}"),
    }
    // An expired request.
    let mut expired = net.request(key.key_id(), vec![msg.clone()], 10).request;
    expired.expires_at_ms = unix_ms() - 1;
    let err = engine
        .sign(key.clone(), expired.sign(&net.client))
        .await
        .expect_err("expired");
    assert!(
        matches!(err, CoordinatorError::Refused { ref refusals, .. } if refusals.iter().all(|(_, r)| r == "policy:expired")),
        "{err}"
    );
    // A valid request signs.
    engine
        .sign(
            key.clone(),
            net.request(key.key_id(), vec![msg.clone()], 10),
        )
        .await
        .expect("sign");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let all: String = metrics.iter().map(Metrics::render).collect();
    assert!(
        all.contains("quorate_policy_refusals_total{label=\"amount_limit\"} 1"),
        "{all}"
    );

    // A coordinator altering the message: the client never signed it.
    let signed = net.request(key.key_id(), vec![msg.clone()], 10);
    let mut raw = RawPeer::new(&net, &net.coordinator);
    let env = Envelope::seal(
        &net.coordinator,
        Ciphersuite::Ed25519,
        key.key_id(),
        SessionId([7; 32]),
        Payload::SignRequest {
            request: signed.encode(),
            message: vec![2; 32],
            tweak: None,
            certificate: Default::default(),
        },
    );
    engine.shutdown().await;
    let ack = raw.ask(&ids[0], Frame::Deliver(env)).await.expect("answer");
    assert!(
        matches!(ack, Ack::Rejected { ref reason, .. } if reason == "request_mismatch"),
        "{ack:?}"
    );

    // Spoofed sender: a roster member signs an envelope claiming to be node 2.
    let mut mallory = RawPeer::new(&net, &net.mallory);
    let mut forged = Envelope::seal(
        &net.mallory,
        Ciphersuite::Ed25519,
        key.key_id(),
        SessionId([9; 32]),
        Payload::SignShare { share: vec![0; 32] },
    );
    forged.sender = ids[1];
    let ack = mallory
        .ask(&ids[0], Frame::Deliver(forged))
        .await
        .expect("answer");
    assert!(
        matches!(ack, Ack::Rejected { ref reason, .. } if reason == "sender_mismatch"),
        "{ack:?}"
    );

    // Unknown peer: not in the roster, the connection is refused before any traffic.
    let outsider = NodeIdentity::generate(&mut ChaCha20Rng::seed_from_u64(99));
    let mut out = RawPeer::new(&net, &outsider);
    let env = Envelope::seal(
        &outsider,
        Ciphersuite::Ed25519,
        key.key_id(),
        SessionId([8; 32]),
        Payload::SignShare { share: vec![0; 32] },
    );
    assert!(
        out.ask(&ids[0], Frame::Deliver(env)).await.is_err(),
        "outsider must get no answer"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let m = metrics[0].render();
    assert!(
        m.contains("quorate_rejected_messages_total{label=\"sender_mismatch\"} 1"),
        "{m}"
    );
    assert!(!m.contains("quorate_rejected_peers_total 0"), "{m}");

    for h in nodes {
        h.stop().await.expect("stop");
    }
    let kinds: String = (0..3)
        .map(|i| audit_kinds(&net.audit_path(i)).join("\n"))
        .collect();
    assert!(kinds.contains("\"rule\":\"amount_limit\""), "{kinds}");
    assert!(kinds.contains("\"rule\":\"expired\""), "{kinds}");
}

/// Every signer's nonce commitments (serialized) in the secp256k1 signing packages
/// recorded from position `from` on, with the signer's FROST index.
fn recorded_commitments(packages: &Recorded, from: usize) -> Vec<(u16, Vec<u8>)> {
    let packages = packages.lock().expect("recorded packages");
    let mut out = Vec::new();
    for bytes in &packages[from..] {
        let package = frost_secp256k1::SigningPackage::deserialize(bytes).expect("package");
        // The committees here are small: FROST indices 1 to 16 cover them.
        for index in 1..=16u16 {
            let id = frost_secp256k1::Identifier::try_from(index).expect("non-zero index");
            if let Some(c) = package.signing_commitments().get(&id) {
                out.push((index, c.serialize().expect("commitments")));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_keys_and_signs_with_fresh_nonces() {
    let _serial = SERIAL.lock().await;
    let net = Net::new(3, 4);
    let (nodes, _, engine) = started(&net, Routing::Direct).await;
    // Mallory signs faithfully and records every signing package, so the test sees
    // the nonce commitments of the nodes it restarts; with t = n = 4 every member
    // signs every time.
    let (stop_mallory, packages) = Cheater::spawn(&net, false);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut members = node_ids(&net);
    members.push(net.mallory.node_id());
    let key = dkg(&engine, &members, Ciphersuite::Secp256k1, 4).await;
    let msg = vec![3; 32];
    let first_request = net.request(key.key_id(), vec![msg.clone()], 1);
    engine
        .sign(key.clone(), first_request.clone())
        .await
        .expect("sign");
    engine
        .sign(key.clone(), net.request(key.key_id(), vec![msg.clone()], 1))
        .await
        .expect("second sign before restart");
    let recorded_before = packages.lock().expect("recorded").len();
    let before = recorded_commitments(&packages, 0);
    engine.shutdown().await;
    for h in nodes {
        h.stop().await.expect("stop");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Restart every node from its sealed keystore: the same share of the same key.
    let (nodes, _, engine) = started(&net, Routing::Direct).await;
    for h in &nodes {
        let held = h.keys().await;
        assert!(
            held.contains(&key.public),
            "key survived restart unchanged: {held:?}"
        );
    }
    let second = engine
        .sign(key.clone(), net.request(key.key_id(), vec![msg.clone()], 1))
        .await
        .expect("sign after restart");
    key.public
        .verify(&msg, &second.signatures[0].signature.signature, None)
        .expect("verifies under the unchanged group key");
    // Fresh nonces: every restarted node committed to nonces it never committed to
    // before the restart (a nonce restored from disk would repeat its commitment,
    // even if other signers' fresh nonces made the signature differ).
    let after = recorded_commitments(&packages, recorded_before);
    for index in 1..=3u16 {
        let mine_before: Vec<_> = before.iter().filter(|(i, _)| *i == index).collect();
        let mine_after: Vec<_> = after.iter().filter(|(i, _)| *i == index).collect();
        let distinct: std::collections::BTreeSet<_> = mine_before.iter().map(|(_, c)| c).collect();
        assert!(mine_before.len() >= 2, "node {index} signed twice before");
        assert_eq!(
            distinct.len(),
            mine_before.len(),
            "node {index}: a fresh nonce per signature"
        );
        assert!(!mine_after.is_empty(), "node {index} signed after restart");
        for (_, c) in &mine_after {
            assert!(
                !before.iter().any(|(_, b)| b == c),
                "node {index} reused a pre-restart nonce commitment"
            );
        }
    }
    // Policy state was rebuilt from each node's audit log. The request allowed before
    // the restart is still known as allowed, with its attempt count: at 4-of-4 each
    // message is signed in at most n − t + 1 = 1 session, so another session for it
    // is refused as exhausted (not as a replay, which it would be had the approval
    // been forgotten, and not signed again, which it would be had the count reset).
    let err = engine
        .sign(key.clone(), first_request.clone())
        .await
        .expect_err("a fully signed request is not signed again after restart");
    let reasons: Vec<String> = match &err {
        CoordinatorError::Refused { refusals, .. } => {
            refusals.iter().map(|(_, r)| r.clone()).collect()
        }
        CoordinatorError::NotEnoughSigners { attempts, .. } => attempts
            .iter()
            .flat_map(|a| a.refused.iter().map(|(_, r)| r.clone()))
            .collect(),
        other => panic!("expected refusals, got {other}"),
    };
    assert!(
        !reasons.is_empty() && reasons.iter().all(|r| r == "request_exhausted"),
        "{err:?}"
    );
    // A new request reusing its nonce is a replay.
    let mut reused = net.request(key.key_id(), vec![vec![4; 32]], 1).request;
    reused.nonce = first_request.request.nonce;
    let err = engine
        .sign(key.clone(), reused.sign(&net.client))
        .await
        .expect_err("nonce replay after restart");
    assert!(
        matches!(err, CoordinatorError::Refused { ref refusals, .. }
            if !refusals.is_empty() && refusals.iter().all(|(_, r)| r == "policy:replay")),
        "{err}"
    );
    engine.shutdown().await;
    for h in nodes {
        h.stop().await.expect("stop");
    }
    let _ = stop_mallory.send(());
}

/// Signing packages (serialized) a [`Cheater`] received, in arrival order.
type Recorded = Arc<std::sync::Mutex<Vec<Vec<u8>>>>;

/// A roster signer (mallory) that runs the real protocol machines and records every
/// signing package it receives; with `corrupt` it corrupts every signature share it
/// sends (what a compromised node could do), otherwise it signs faithfully.
struct Cheater {
    identity: Arc<NodeIdentity>,
    peer: RawPeer,
    sessions: std::collections::BTreeMap<SessionId, quorate_protocol::local::Party>,
    shares: std::collections::BTreeMap<KeyId, quorate_protocol::KeyShare>,
    corrupt: bool,
    packages: Recorded,
    /// Report the key with an attestation of other data (a forged key claim).
    forge_attestation: bool,
}

impl Cheater {
    fn spawn(net: &Net, corrupt: bool) -> (tokio::sync::oneshot::Sender<()>, Recorded) {
        Self::spawn_with(net, corrupt, false)
    }

    fn spawn_with(
        net: &Net,
        corrupt: bool,
        forge_attestation: bool,
    ) -> (tokio::sync::oneshot::Sender<()>, Recorded) {
        let mut peer = RawPeer::new(net, &net.mallory);
        let port = net.ports[net.ids.len()];
        peer.swarm
            .listen_on(format!("/ip4/127.0.0.1/tcp/{port}").parse().expect("addr"))
            .expect("listen");
        let mut me = Cheater {
            identity: net.mallory.clone(),
            peer,
            sessions: Default::default(),
            shares: Default::default(),
            corrupt,
            packages: Recorded::default(),
            forge_attestation,
        };
        let packages = me.packages.clone();
        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = &mut rx => break,
                    ev = me.peer.swarm.select_next_some() => me.on_event(ev),
                }
            }
        });
        (tx, packages)
    }

    fn on_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        let (SwarmEvent::Behaviour(BehaviourEvent::Dkg(ev))
        | SwarmEvent::Behaviour(BehaviourEvent::Sign(ev))) = event
        else {
            return;
        };
        let request_response::Event::Message {
            message:
                request_response::Message::Request {
                    request, channel, ..
                },
            ..
        } = ev
        else {
            return;
        };
        let family = transport::family(&request);
        let rr = match family {
            transport::Family::Dkg => &mut self.peer.swarm.behaviour_mut().dkg,
            transport::Family::Sign => &mut self.peer.swarm.behaviour_mut().sign,
        };
        let _ = rr.send_response(channel, Ack::Accepted);
        let Frame::Deliver(env) = request else { return };
        if let Payload::SignPackage { package, .. } = &env.payload {
            self.packages
                .lock()
                .expect("recorded packages")
                .push(package.clone());
        }
        let mut rng = rand_core::OsRng;
        let now = quorate_protocol::Timestamp(0);
        let outputs = match &env.payload {
            Payload::DkgStart {
                threshold,
                committee,
                timeout_ms,
                ..
            } => {
                let dkg = quorate_protocol::Dkg::new(
                    self.identity.clone(),
                    quorate_protocol::dkg::DkgConfig {
                        suite: env.suite,
                        key_id: env.key,
                        session: env.session,
                        threshold: *threshold,
                        committee: committee.clone(),
                        timeout_ms: *timeout_ms,
                        coordinator: env.sender,
                        start: Some(env.clone()),
                    },
                )
                .expect("dkg");
                let mut party = quorate_protocol::local::Party::Dkg(dkg);
                let out = party.handle(now, quorate_protocol::Input::Start, &mut rng);
                self.sessions.insert(env.session, party);
                out
            }
            Payload::SignRequest { message, tweak, .. } => {
                let Some(share) = self.shares.get(&env.key) else {
                    return;
                };
                let signer = quorate_protocol::Signer::new(
                    self.identity.clone(),
                    share,
                    quorate_protocol::sign::SignerConfig {
                        session: env.session,
                        coordinator: env.sender,
                        target: quorate_protocol::SignTarget {
                            message: message.clone(),
                            tweak: *tweak,
                        },
                        timeout_ms: 10_000,
                    },
                )
                .expect("signer");
                let mut party = quorate_protocol::local::Party::Signer(signer);
                let out = party.handle(now, quorate_protocol::Input::Start, &mut rng);
                self.sessions.insert(env.session, party);
                out
            }
            _ => match self.sessions.get_mut(&env.session) {
                Some(p) => p.handle(now, quorate_protocol::Input::Message(env.clone()), &mut rng),
                None => return,
            },
        };
        let coordinator = env.sender;
        for o in outputs.unwrap_or_default() {
            match o {
                quorate_protocol::Output::Send { to, mut msg } => {
                    if self.corrupt && matches!(msg.payload, Payload::SignShare { .. }) {
                        msg = quorate_protocol::byzantine::corrupt_signature_share(
                            &self.identity,
                            &msg,
                            &mut rng,
                        )
                        .expect("corrupt");
                    }
                    let peer = self.peer.roster.net(&to).expect("roster").peer_id;
                    transport::send(&mut self.peer.swarm, &peer, Frame::Deliver(msg));
                }
                quorate_protocol::Output::Done(quorate_protocol::local::Outcome::Key(share)) => {
                    let report = Envelope::seal(
                        &self.identity,
                        share.public.suite,
                        share.public.key_id,
                        env.session,
                        Payload::DkgComplete {
                            public: share.public.clone(),
                            attestation: {
                                let mut attested = share.public.clone();
                                if self.forge_attestation {
                                    attested.threshold += 1;
                                }
                                quorate_protocol::attestation::AttestedKey::from_public(&attested)
                                    .expect("body")
                                    .sign(&self.identity)
                            },
                        },
                    );
                    self.shares.insert(share.public.key_id, share);
                    // The DKG coordinator is the sender of the DKG start.
                    let c = self
                        .peer
                        .roster
                        .data()
                        .coordinators()
                        .next()
                        .map(|p| p.node)
                        .unwrap_or(coordinator);
                    let peer = self.peer.roster.net(&c).expect("coordinator").peer_id;
                    transport::send(&mut self.peer.swarm, &peer, Frame::Deliver(report));
                }
                _ => {}
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signer_sending_invalid_shares_is_named_and_excluded() {
    let _serial = SERIAL.lock().await;
    let net = Net::new(4, 6);
    let (nodes, metrics, engine) = started(&net, Routing::Direct).await;
    let (stop, _) = Cheater::spawn(&net, true);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut members = node_ids(&net);
    members.push(net.mallory.node_id());
    // 4-of-5 over four segments: every choice spanning four segments includes the
    // cheater, alone in its segment (three honest nodes holding presigned nonces
    // span only three), so it is asked in the first attempt.
    let key = dkg(&engine, &members, Ciphersuite::Secp256k1, 4).await;
    let msg = vec![0x55; 32];
    let result = engine
        .sign(
            key.clone(),
            net.request(key.key_id(), vec![msg.clone()], 10),
        )
        .await
        .expect("signed after excluding the cheater");
    key.public
        .verify(&msg, &result.signatures[0].signature.signature, None)
        .expect("verifies");
    assert_eq!(
        result.attempts[0].outcome, "blamed",
        "{:?}",
        result.attempts
    );
    assert_eq!(result.attempts[0].blamed, vec![net.mallory.node_id()]);
    let last = result.attempts.last().expect("attempts");
    assert_eq!(last.outcome, "signed");
    assert!(
        !last.signers.contains(&net.mallory.node_id()),
        "cheater excluded from the retry"
    );
    let _ = stop.send(());
    let _ = metrics;
    engine.shutdown().await;
    for h in nodes {
        h.stop().await.expect("stop");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_whose_member_attests_other_data_is_refused_naming_the_member() {
    let _serial = SERIAL.lock().await;
    let net = Net::new(3, 11);
    let (nodes, _metrics, engine) = started(&net, Routing::Direct).await;
    let (stop, _) = Cheater::spawn_with(&net, false, true);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut members = node_ids(&net);
    members.push(net.mallory.node_id());
    let err = engine
        .create_key(KeySpec {
            ciphersuite: Ciphersuite::Ed25519,
            threshold: 2,
            participants: Participants::Nodes(members),
            segments: Vec::new(),
        })
        .await
        .expect_err("a key with a bad attestation is not kept");
    match err {
        quorate_coordinator::CoordinatorError::DkgFailed { culprits, reason } => {
            assert_eq!(culprits, vec![net.mallory.node_id()], "{reason}");
            assert!(reason.contains("attestation"), "{reason}");
        }
        other => panic!("expected DkgFailed, got {other}"),
    }
    let _ = stop.send(());
    engine.shutdown().await;
    for h in nodes {
        h.stop().await.expect("stop");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_coordinators_serve_the_same_nodes() {
    let _serial = SERIAL.lock().await;
    let net = Net::new(3, 7);
    let (nodes, _, first) = started(&net, Routing::Direct).await;
    let second = Engine::spawn(EngineConfig {
        identity: net.second_coordinator.clone(),
        roster: quorate_protocol::roster::Roster::from_toml(&net.roster_text).expect("roster"),
        listen: vec![format!("/ip4/127.0.0.1/tcp/{}", free_port())],
        session_timeout_ms: 3_000,
        dkg_timeout_ms: 20_000,
    })
    .expect("second engine");
    let ids = node_ids(&net);
    let key = dkg(&first, &ids, Ciphersuite::Ed25519, 2).await;
    let other = dkg(&second, &ids, Ciphersuite::Secp256k1Tr, 2).await;
    // Each coordinator signs with both keys, concurrently.
    let m = vec![8u8; 32];
    let (a, b) = tokio::join!(
        second.sign(key.clone(), net.request(key.key_id(), vec![m.clone()], 1)),
        first.sign(
            other.clone(),
            net.request(other.key_id(), vec![m.clone()], 1)
        ),
    );
    key.public
        .verify(
            &m,
            &a.expect("second signs the first's key").signatures[0]
                .signature
                .signature,
            None,
        )
        .expect("verifies");
    other
        .public
        .verify(
            &m,
            &b.expect("first signs the second's key").signatures[0]
                .signature
                .signature,
            None,
        )
        .expect("verifies");
    first.shutdown().await;
    second.shutdown().await;
    for h in nodes {
        h.stop().await.expect("stop");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_transport_carries_dkg_and_signing() {
    let _serial = SERIAL.lock().await;
    let net = Net::with_transport(3, 8, true);
    let (nodes, _, engine) = started(&net, Routing::Direct).await;
    let ids = node_ids(&net);
    let key = dkg(&engine, &ids, Ciphersuite::Ed25519, 2).await;
    let msg = vec![0x51; 32];
    let result = engine
        .sign(key.clone(), net.request(key.key_id(), vec![msg.clone()], 1))
        .await
        .expect("sign over QUIC");
    key.public
        .verify(&msg, &result.signatures[0].signature.signature, None)
        .expect("verifies");
    engine.shutdown().await;
    for h in nodes {
        h.stop().await.expect("stop");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_messages_are_buffered_with_a_bound_per_sender() {
    let _serial = SERIAL.lock().await;
    let net = Net::new(3, 4);
    let (nodes, _metrics, engine) = started(&net, Routing::Direct).await;
    let ids = node_ids(&net);
    let cap = LimitsConfig::default().max_pending_per_peer;
    // Mallory (a roster member) sends messages for sessions node 1 has not started:
    // they are buffered up to the per-sender cap, then refused with a reason.
    let mut mallory = RawPeer::new(&net, &net.mallory);
    for k in 0..=cap {
        let mut session = [0u8; 32];
        session[..8].copy_from_slice(&(k as u64).to_le_bytes());
        let env = Envelope::seal(
            &net.mallory,
            Ciphersuite::Ed25519,
            KeyId([5; 16]),
            SessionId(session),
            Payload::SignShare { share: vec![0; 32] },
        );
        let ack = mallory
            .ask(&ids[0], Frame::Deliver(env))
            .await
            .expect("answer");
        if k < cap {
            assert_eq!(ack, Ack::Accepted, "message {k} buffered");
        } else {
            assert!(
                matches!(&ack, Ack::Rejected { reason, detail }
                    if reason == "busy" && detail.contains(&net.mallory.node_id().to_string())),
                "{ack:?}"
            );
        }
    }
    // Another sender still gets its early messages buffered.
    let mut node2 = RawPeer::new(&net, &net.ids[1]);
    let env = Envelope::seal(
        &net.ids[1],
        Ciphersuite::Ed25519,
        KeyId([5; 16]),
        SessionId([0xee; 32]),
        Payload::SignShare { share: vec![0; 32] },
    );
    let ack = node2
        .ask(&ids[0], Frame::Deliver(env))
        .await
        .expect("answer");
    assert_eq!(ack, Ack::Accepted);
    engine.shutdown().await;
    for n in nodes {
        n.stop().await.expect("stop");
    }
}

/// The review's attack: one signed request whose destination is 45 000 control
/// characters used to latch every node that saw it into refusing all signing
/// (its audit line overflowed, which read as "audit log cannot be written"). Now
/// each node refuses such requests on their own, naming the field, before writing
/// anything; requests at each bound pass validation; and afterwards every node
/// still signs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_fields_are_refused_alone_and_never_silence_a_node() {
    use quorate_protocol::request::{
        MAX_ASSET_LEN, MAX_DESTINATION_LEN, MAX_MEMO_LEN, MAX_MESSAGES,
    };
    let _serial = SERIAL.lock().await;
    let net = Net::new(3, 11);
    let (nodes, _metrics, engine) = started(&net, Routing::Direct).await;
    let ids = node_ids(&net);
    let key = dkg(&engine, &ids, Ciphersuite::Ed25519, 2).await;
    // The second roster coordinator delivers requests straight to the nodes, as a
    // coordinator that skipped (or lost) its own validation would.
    let mut raw = RawPeer::new(&net, &net.second_coordinator);
    let mut session = 0u8;
    let mut ask_all = async |signed: SignedRequest| -> Vec<Ack> {
        let mut acks = Vec::new();
        for node in &ids {
            session += 1;
            let env = Envelope::seal(
                &net.second_coordinator,
                Ciphersuite::Ed25519,
                key.key_id(),
                SessionId([session; 32]),
                Payload::SignRequest {
                    message: raw_messages(&signed.request)[0].clone(),
                    request: signed.encode(),
                    tweak: None,
                    certificate: Default::default(),
                },
            );
            acks.push(raw.ask(node, Frame::Deliver(env)).await.expect("answer"));
        }
        acks
    };
    let with = |f: &dyn Fn(&mut SigningRequest)| {
        let mut r = net.request(key.key_id(), vec![vec![1; 32]], 10).request;
        f(&mut r);
        r.sign(&net.client)
    };
    let over: Vec<(&str, SignedRequest)> = vec![
        (
            "purpose.destination",
            with(&|r| r.purpose.destination = "\u{1}".repeat(45_000)),
        ),
        (
            "purpose.destination",
            with(&|r| r.purpose.destination = "d".repeat(MAX_DESTINATION_LEN + 1)),
        ),
        (
            "purpose.memo",
            with(&|r| r.purpose.memo = "m".repeat(MAX_MEMO_LEN + 1)),
        ),
        (
            "purpose.asset",
            with(&|r| r.purpose.asset = "A".repeat(MAX_ASSET_LEN + 1)),
        ),
        (
            "messages",
            with(&|r| set_messages(r, vec![vec![1; 32]; MAX_MESSAGES + 1])),
        ),
    ];
    for (field, signed) in over {
        for ack in ask_all(signed).await {
            assert!(
                matches!(&ack, Ack::Rejected { reason, detail }
                    if reason == "policy:malformed" && detail.contains(field)),
                "{field}: {ack:?}"
            );
        }
    }
    // At each bound: past validation (asset "AAA…" has no limits here, so policy
    // refuses it by its own rule; the rest are accepted and start a signer).
    let at: Vec<SignedRequest> = vec![
        with(&|r| r.purpose.destination = "d".repeat(MAX_DESTINATION_LEN)),
        with(&|r| r.purpose.memo = "m".repeat(MAX_MEMO_LEN)),
        with(&|r| r.purpose.asset = "A".repeat(MAX_ASSET_LEN)),
        with(&|r| set_messages(r, vec![vec![1; 32]; MAX_MESSAGES])),
    ];
    for signed in at {
        for ack in ask_all(signed).await {
            assert!(
                matches!(&ack, Ack::Accepted)
                    || matches!(&ack, Ack::Rejected { reason, .. } if reason == "policy:asset_not_allowed"),
                "{ack:?}"
            );
        }
    }
    // Every node still serves: a normal request is accepted by each, and one signs.
    for ack in ask_all(net.request(key.key_id(), vec![vec![3; 32]], 10)).await {
        assert_eq!(ack, Ack::Accepted);
    }
    for m in [4u8, 5, 6] {
        engine
            .sign(
                key.clone(),
                net.request(key.key_id(), vec![vec![m; 32]], 10),
            )
            .await
            .expect("a normal request still signs");
    }
    engine.shutdown().await;
    for h in nodes {
        h.stop().await.expect("stop");
    }
    // Nothing the attacker chose reached any audit log: requests refused before
    // authentication write nothing.
    for i in 0..3 {
        let text = std::fs::read_to_string(net.audit_path(i)).expect("audit");
        assert!(!text.contains("\\u0001"), "node {i} logged attacker bytes");
        assert!(
            text.lines().all(|l| l.len() < 64 * 1024),
            "node {i}: long line"
        );
    }
}

/// A `DkgStart` from a roster coordinator, for the roster's signers `members`.
fn dkg_start(
    net: &Net,
    from: &NodeIdentity,
    members: &[NodeId],
    t: u16,
    key: KeyId,
    session: SessionId,
) -> Frame {
    let committee = quorate_protocol::roster::Roster::from_toml(&net.roster_text)
        .expect("roster")
        .committee(Some(members))
        .expect("committee");
    Frame::Deliver(Envelope::seal(
        from,
        Ciphersuite::Ed25519,
        key,
        session,
        Payload::DkgStart {
            threshold: t,
            committee,
            timeout_ms: 500,
            segments: Vec::new(),
        },
    ))
}

fn rejected(ack: &Ack, want: &str) -> bool {
    matches!(ack, Ack::Rejected { reason, .. } if reason == want)
}

/// A coordinator cannot re-run a DKG session id or key id on a node, not even after
/// the node restarted (the ids are claimed in its sealed keystore), and a node
/// refuses DKGs below its own threshold and segment floor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dkg_session_and_key_ids_are_refused_again_after_restart() {
    let _serial = SERIAL.lock().await;
    let net = Net::new(4, 12);
    let ids = node_ids(&net);
    let limits = LimitsConfig {
        min_dkg_threshold: 3,
        min_dkg_segments: 2,
        ..LimitsConfig::default()
    };
    let node = net.start_with(0, Routing::Direct, Metrics::default(), limits, None);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut raw = RawPeer::new(&net, &net.coordinator);
    let (s1, k1) = (SessionId([0x51; 32]), KeyId([0x51; 16]));
    // Below the node's floor: threshold 2 < 3; and (at threshold 3) a committee in
    // one segment < 2 (nodes 1 and 4 of the roster share segment seg0).
    let refused_with = |ack: &Ack, text: &str| {
        matches!(ack, Ack::Rejected { reason, detail }
            if reason == "bad_parameters" && detail.contains(text))
    };
    let ack = raw
        .ask(&ids[0], dkg_start(&net, &net.coordinator, &ids, 2, k1, s1))
        .await
        .expect("answer");
    assert!(refused_with(&ack, "below this node's minimum 3"), "{ack:?}");
    let one_segment = [ids[0], ids[3]];
    let ack = raw
        .ask(
            &ids[0],
            dkg_start(&net, &net.coordinator, &one_segment, 3, k1, s1),
        )
        .await
        .expect("answer");
    assert!(
        refused_with(&ack, "spans 1 segment(s); this node requires 2"),
        "{ack:?}"
    );
    // Within the floor: accepted (it will time out: the others are not running).
    let ack = raw
        .ask(&ids[0], dkg_start(&net, &net.coordinator, &ids, 3, k1, s1))
        .await
        .expect("answer");
    assert_eq!(ack, Ack::Accepted);
    node.stop().await.expect("stop");
    let node = net.start_with(0, Routing::Direct, Metrics::default(), limits, None);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut raw = RawPeer::new(&net, &net.coordinator);
    for (session, key) in [(s1, KeyId([0x52; 16])), (SessionId([0x52; 32]), k1)] {
        let ack = raw
            .ask(
                &ids[0],
                dkg_start(&net, &net.coordinator, &ids, 3, key, session),
            )
            .await
            .expect("answer");
        assert!(rejected(&ack, "session_exists"), "{ack:?}");
    }
    let ack = raw
        .ask(
            &ids[0],
            dkg_start(
                &net,
                &net.coordinator,
                &ids,
                3,
                KeyId([0x53; 16]),
                SessionId([0x53; 32]),
            ),
        )
        .await
        .expect("answer");
    assert_eq!(ack, Ack::Accepted, "fresh ids are still accepted");
    node.stop().await.expect("stop");
}

/// An approval cached for a request does not outlive the policy that allowed it: after
/// a reload that removes the client, the coordinator's next session for the same
/// request is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_approval_is_rechecked_after_a_policy_reload_revokes_the_client() {
    let _serial = SERIAL.lock().await;
    let net = Net::new(3, 13);
    let (nodes, _metrics, engine) = started(&net, Routing::Direct).await;
    let ids = node_ids(&net);
    let key = dkg(&engine, &ids, Ciphersuite::Ed25519, 2).await;
    engine.shutdown().await;
    let mut nodes = nodes.into_iter();
    nodes.next().expect("node 0").stop().await.expect("stop");
    let policy_file = net.dir.path().join("policy0.toml");
    let with_client = format!(
        "version = 1\n[clients.exchange]\npublic_key = \"{}\"\nkeys = [\"*\"]\nallow_raw = true\n[clients.exchange.limits.BTC]\nper_request = 100\nper_window = 1000\n",
        hex::encode(net.client.verifying_key().to_bytes())
    );
    std::fs::write(&policy_file, &with_client).expect("policy");
    let limits = LimitsConfig::default();
    let node = net.start_with(
        0,
        Routing::Direct,
        Metrics::default(),
        limits,
        Some(policy_file.clone()),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut raw = RawPeer::new(&net, &net.second_coordinator);
    let signed = net.request(key.key_id(), vec![vec![9; 32], vec![8; 32]], 10);
    let ask = |session: u8, message: Vec<u8>| {
        Frame::Deliver(Envelope::seal(
            &net.second_coordinator,
            Ciphersuite::Ed25519,
            key.key_id(),
            SessionId([session; 32]),
            Payload::SignRequest {
                request: signed.encode(),
                message,
                tweak: None,
                certificate: Default::default(),
            },
        ))
    };
    let ack = raw
        .ask(&ids[0], ask(0x61, vec![9; 32]))
        .await
        .expect("answer");
    assert_eq!(ack, Ack::Accepted, "allowed under the first policy");
    std::fs::write(&policy_file, "version = 1\n").expect("revoke");
    node.control
        .send(quorate_node::daemon::Control::ReloadPolicy)
        .await
        .expect("reload");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ack = raw
        .ask(&ids[0], ask(0x62, vec![8; 32]))
        .await
        .expect("answer");
    assert!(rejected(&ack, "policy:unknown_client"), "{ack:?}");
    // Asked again: refused from memory, not recorded twice.
    let ack = raw
        .ask(&ids[0], ask(0x63, vec![8; 32]))
        .await
        .expect("answer");
    assert!(rejected(&ack, "policy:unknown_client"), "{ack:?}");
    node.stop().await.expect("stop");
    let rechecks = audit::read_entries(&net.audit_path(0))
        .expect("audit")
        .into_iter()
        .filter(|e| e.details.get("recheck").is_some())
        .count();
    assert_eq!(rechecks, 1, "the refusing re-check is audited once");
    for n in nodes {
        n.stop().await.expect("stop");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_relays_only_within_its_live_sessions() {
    let _serial = SERIAL.lock().await;
    let net = Net::new(3, 6);
    let (nodes, _metrics, engine) = started(&net, Routing::ViaCoordinator).await;
    let ids = node_ids(&net);
    // A relay for a session the coordinator does not run is refused and counted.
    let mut mallory = RawPeer::new(&net, &net.mallory);
    let env = Envelope::seal(
        &net.mallory,
        Ciphersuite::Ed25519,
        KeyId([5; 16]),
        SessionId([0x42; 32]),
        Payload::SignShare { share: vec![0; 32] },
    );
    let coordinator = net.coordinator.node_id();
    let ack = mallory
        .ask(
            &coordinator,
            Frame::Relay {
                to: ids[0],
                envelope: env,
            },
        )
        .await
        .expect("answer");
    assert!(
        matches!(&ack, Ack::Rejected { reason, .. } if reason == "no_live_session"),
        "{ack:?}"
    );
    assert_eq!(engine.relays_dropped(), 1);
    // Relays inside a live DKG still flow: segmented nodes generate a key through it.
    dkg(&engine, &ids, Ciphersuite::Ed25519, 2).await;
    assert_eq!(
        engine.relays_dropped(),
        1,
        "no relay of the DKG was refused"
    );
    engine.shutdown().await;
    for n in nodes {
        n.stop().await.expect("stop");
    }
}

/// Early messages are bounded in bytes as well as in count: a sender whose buffered
/// messages would pass `max_pending_bytes_per_peer` is refused, naming it, while the
/// count bound is far away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_messages_are_bounded_in_bytes_per_sender() {
    let _serial = SERIAL.lock().await;
    let net = Net::new(3, 14);
    let ids = node_ids(&net);
    let limits = LimitsConfig {
        max_pending_bytes_per_peer: 4_000,
        ..LimitsConfig::default()
    };
    let node = net.start_with(0, Routing::Direct, Metrics::default(), limits, None);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut mallory = RawPeer::new(&net, &net.mallory);
    let mut total = 0;
    let mut refused = false;
    for k in 0u8..10 {
        let env = Envelope::seal(
            &net.mallory,
            Ciphersuite::Ed25519,
            KeyId([5; 16]),
            SessionId([k; 32]),
            Payload::SignShare {
                share: vec![0; 1_000],
            },
        );
        let size = env.encode().len();
        let ack = mallory
            .ask(&ids[0], Frame::Deliver(env))
            .await
            .expect("answer");
        if total + size <= 4_000 {
            assert_eq!(ack, Ack::Accepted, "message {k} fits");
            total += size;
        } else {
            assert!(
                matches!(&ack, Ack::Rejected { reason, detail }
                    if reason == "busy" && detail.contains("bytes")
                        && detail.contains(&net.mallory.node_id().to_string())),
                "{ack:?}"
            );
            assert!(k >= 3, "refused by bytes, long before the count bound");
            refused = true;
            break;
        }
    }
    assert!(refused, "the byte bound was never reached");
    node.stop().await.expect("stop");
}

/// Waits for one `PresignOffer` for `key` from each of `nodes` at a raw coordinator
/// (dialling them first), answering every frame it is sent. Panics naming the nodes
/// it still waited for.
async fn offers_at(
    raw: &mut RawPeer,
    nodes: &[NodeId],
    key: KeyId,
) -> std::collections::BTreeMap<NodeId, ([u8; 16], u64, Vec<Vec<u8>>)> {
    for n in nodes {
        // A new connection even if the swarm still believes in an old one (a node
        // that restarted): the node opens its pools when a coordinator connects.
        let peer = raw.roster.net(n).expect("in roster").peer_id;
        let _ = raw.swarm.dial(
            libp2p::swarm::dial_opts::DialOpts::peer_id(peer)
                .condition(libp2p::swarm::dial_opts::PeerCondition::Always)
                .build(),
        );
    }
    let mut got = std::collections::BTreeMap::new();
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    while got.len() < nodes.len() {
        let Ok(event) = tokio::time::timeout_at(until, raw.swarm.select_next_some()).await else {
            let missing: Vec<_> = nodes.iter().filter(|n| !got.contains_key(*n)).collect();
            panic!("no presign offer for {key} from {missing:?} within 10 s");
        };
        let ev = match event {
            SwarmEvent::Behaviour(BehaviourEvent::Dkg(e))
            | SwarmEvent::Behaviour(BehaviourEvent::Sign(e)) => e,
            _ => continue,
        };
        if let request_response::Event::Message {
            message:
                request_response::Message::Request {
                    request, channel, ..
                },
            ..
        } = ev
        {
            let _ = raw
                .swarm
                .behaviour_mut()
                .sign
                .send_response(channel, Ack::Accepted);
            if let Frame::Deliver(env) = request {
                if let Payload::PresignOffer {
                    epoch,
                    first,
                    commitments,
                    ..
                } = env.payload
                {
                    if env.key == key && nodes.contains(&env.sender) {
                        got.entry(env.sender).or_insert((epoch, first, commitments));
                    }
                }
            }
        }
    }
    got
}

/// A coordinator (here a raw peer with the second coordinator's identity) that
/// names presigned nonces twice, names an epoch or index the node never issued, or
/// an id of a pool the node had before it restarted, is refused every time; the
/// first, genuine one-round request is signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presigned_nonces_are_single_use_even_against_a_coordinator_that_tries() {
    let _serial = SERIAL.lock().await;
    let net = Net::new(2, 21);
    let (mut nodes, metrics, engine) = started(&net, Routing::Direct).await;
    let ids = node_ids(&net);
    let key = dkg(&engine, &ids, Ciphersuite::Secp256k1, 2).await;
    engine.shutdown().await;
    let mut raw = RawPeer::new(&net, &net.second_coordinator);
    let offers = offers_at(&mut raw, &ids, key.key_id()).await;
    let message = vec![5u8; 32];
    // A package of both nodes' first presigned commitments.
    let package = |index_of: &dyn Fn(&NodeId) -> usize| {
        let mut commitments = std::collections::BTreeMap::new();
        for n in &ids {
            let (_, _, list) = &offers[n];
            let c = frost_secp256k1::round1::SigningCommitments::deserialize(&list[index_of(n)])
                .expect("commitment");
            let member = key.public.members[n];
            commitments.insert(
                frost_secp256k1::Identifier::try_from(member).expect("id"),
                c,
            );
        }
        frost_secp256k1::SigningPackage::new(commitments, &message)
            .serialize()
            .expect("package")
    };
    // Each ask carries a request of its own, so no attempt bound interferes.
    let ask = |session: u8, epoch: [u8; 16], index: u64, package: Vec<u8>| {
        let signed = net.request(key.key_id(), vec![message.clone()], 1);
        Envelope::seal(
            &net.second_coordinator,
            Ciphersuite::Secp256k1,
            key.key_id(),
            SessionId([session; 32]),
            Payload::PresignedSign {
                request: signed.encode(),
                message: message.clone(),
                tweak: None,
                package,
                epoch,
                index,
                certificate: Default::default(),
            },
        )
    };
    let (epoch, first, _) = offers[&ids[0]].clone();
    let genuine = package(&|_| 0);
    let ack = raw
        .ask(
            &ids[0],
            Frame::Deliver(ask(1, epoch, first, genuine.clone())),
        )
        .await
        .expect("answer");
    assert_eq!(
        ack,
        Ack::Accepted,
        "the first use of a presigned nonce signs"
    );
    // The same nonce again, in a new session: refused.
    let ack = raw
        .ask(
            &ids[0],
            Frame::Deliver(ask(2, epoch, first, genuine.clone())),
        )
        .await
        .expect("answer");
    assert!(rejected(&ack, "presign_used"), "{ack:?}");
    // An epoch this node never had, and an index it never issued.
    let ack = raw
        .ask(
            &ids[0],
            Frame::Deliver(ask(3, [0xEE; 16], first, genuine.clone())),
        )
        .await
        .expect("answer");
    assert!(rejected(&ack, "presign_unknown"), "{ack:?}");
    let ack = raw
        .ask(
            &ids[0],
            Frame::Deliver(ask(4, epoch, first + 10_000, genuine.clone())),
        )
        .await
        .expect("answer");
    assert!(rejected(&ack, "presign_unknown"), "{ack:?}");
    // Restarted, the node holds none of its old nonces: the second one is refused.
    let old = nodes.remove(0);
    old.stop().await.expect("stop");
    let restarted = net.start(0, Routing::Direct, metrics[0].clone());
    // Connected again (the new pool's offer arrived), it has a new epoch …
    let renewed = offers_at(&mut raw, &ids[..1], key.key_id()).await;
    assert_ne!(
        renewed[&ids[0]].0, epoch,
        "a restarted node offers a new epoch"
    );
    // … and refuses the nonces of the old one.
    let second = package(&|_| 1);
    let ack = raw
        .ask(&ids[0], Frame::Deliver(ask(5, epoch, first + 1, second)))
        .await
        .expect("answer");
    assert!(rejected(&ack, "presign_unknown"), "{ack:?}");
    let m = metrics[0].render();
    assert!(
        m.contains("quorate_presign_nonces_total{label=\"refused\"} 4"),
        "{m}"
    );
    restarted.stop().await.expect("stop");
    for h in nodes {
        h.stop().await.expect("stop");
    }
    // Only the genuine request left records: received, allowed, attempted, share.
    let kinds = audit_kinds(&net.audit_path(0)).join("\n");
    assert_eq!(kinds.matches("share_contributed").count(), 1, "{kinds}");
    assert_eq!(kinds.matches("sign_attempt").count(), 1, "{kinds}");
}

/// Through the engine, a 3-of-3 key signs a request of several messages in one
/// round each once the nodes' offers arrived: the nodes count presigned nonces
/// used, none refused, and every signature verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_signs_in_one_round_with_presigned_nonces() {
    let _serial = SERIAL.lock().await;
    let net = Net::new(3, 22);
    let (nodes, metrics, engine) = started(&net, Routing::Direct).await;
    let ids = node_ids(&net);
    let key = dkg(&engine, &ids, Ciphersuite::Ed25519, 3).await;
    // Offers follow the DKG (the coordinator files them once it knows the key).
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    while metrics.iter().any(|m| {
        !m.render()
            .contains("quorate_presign_nonces_total{label=\"generated\"}")
    }) {
        assert!(
            tokio::time::Instant::now() < until,
            "nodes generated no presigned nonces within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let messages: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 32]).collect();
    let result = engine
        .sign(key.clone(), net.request(key.key_id(), messages.clone(), 1))
        .await
        .expect("sign");
    assert_eq!(result.signatures.len(), 5);
    for s in &result.signatures {
        key.public
            .verify(&s.message, &s.signature.signature, None)
            .expect("signature verifies");
    }
    for m in &metrics {
        let text = m.render();
        assert!(
            text.contains("quorate_presign_nonces_total{label=\"used\"} 5"),
            "{text}"
        );
        assert!(!text.contains("label=\"refused\""), "{text}");
    }
    engine.shutdown().await;
    for h in nodes {
        h.stop().await.expect("stop");
    }
}

// ---------------------------------------------------------------------------
// Window certificates (issue 14): network-wide rolling-window limits.

/// A policy with one BTC limit of `per_window` (also the per-request limit) and,
/// when given, `window_quorum = <quorum>` (TOML: `3` or `"all"`).
fn window_policy(net: &Net, per_window: u64, quorum: Option<&str>) -> String {
    format!(
        "version = 1\n[clients.exchange]\npublic_key = \"{}\"\nkeys = [\"*\"]\nallow_raw = true\n[clients.exchange.limits.BTC]\nper_request = {per_window}\nper_window = {per_window}\n{}\n",
        hex::encode(net.client.verifying_key().to_bytes()),
        quorum.map(|q| format!("window_quorum = {q}")).unwrap_or_default()
    )
}

/// Starts node `i` with the policy file `policy{i}.toml` (written from `text` first
/// when given).
fn start_with_policy(net: &Net, i: usize, text: Option<&str>) -> NodeHandle {
    let path = net.dir.path().join(format!("policy{i}.toml"));
    if let Some(text) = text {
        std::fs::write(&path, text).expect("policy file");
    }
    let limits = LimitsConfig {
        session_timeout_ms: 10_000,
        ..LimitsConfig::default()
    };
    net.start_with(i, Routing::Direct, Metrics::default(), limits, Some(path))
}

/// Every node with its own policy, and the real engine (for the DKG, and for the
/// tests that drive an honest coordinator).
async fn started_with_policies(net: &Net, policies: &[String]) -> (Vec<NodeHandle>, Engine) {
    let nodes = policies
        .iter()
        .enumerate()
        .map(|(i, p)| start_with_policy(net, i, Some(p)))
        .collect();
    let engine = Engine::spawn(EngineConfig {
        identity: net.coordinator.clone(),
        roster: quorate_protocol::roster::Roster::from_toml(&net.roster_text).expect("roster"),
        listen: vec![net.addr(net.coord_port)],
        session_timeout_ms: 3_000,
        dkg_timeout_ms: 20_000,
    })
    .expect("engine");
    tokio::time::sleep(Duration::from_millis(300)).await;
    (nodes, engine)
}

/// A scripted coordinator: a raw peer holding a roster coordinator's identity that
/// drives the real protocol machines itself — any signer subset, any certificate,
/// as often as it likes — to see what honest nodes let it get signed.
struct Scripted {
    raw: RawPeer,
    identity: Arc<NodeIdentity>,
    /// Envelopes the nodes delivered to us, not consumed yet.
    inbox: Vec<Envelope>,
    next_session: u8,
}

/// What one scripted signing attempt came to.
#[derive(Debug)]
enum Attempted {
    Signed(quorate_protocol::SignatureBytes),
    Refused(NodeId, String, String),
    Failed(String),
}

impl Scripted {
    fn new(net: &Net) -> Self {
        Self {
            raw: RawPeer::new(net, &net.second_coordinator),
            identity: net.second_coordinator.clone(),
            inbox: Vec::new(),
            next_session: 0,
        }
    }

    fn session(&mut self) -> SessionId {
        self.next_session += 1;
        let mut s = [0xA5; 32];
        s[0] = self.next_session;
        s[1..9].copy_from_slice(&unix_ms().to_be_bytes());
        SessionId(s)
    }

    /// One swarm event: inbound frames are answered `Accepted` and kept; returns
    /// the answer to one of our requests when that is what arrived.
    async fn step(
        &mut self,
        until: tokio::time::Instant,
    ) -> Option<(request_response::OutboundRequestId, Result<Ack, String>)> {
        let event = tokio::time::timeout_at(until, self.raw.swarm.select_next_some())
            .await
            .ok()?;
        let ev = match event {
            SwarmEvent::Behaviour(BehaviourEvent::Dkg(e))
            | SwarmEvent::Behaviour(BehaviourEvent::Sign(e)) => e,
            _ => return None,
        };
        match ev {
            request_response::Event::Message {
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                let _ = self
                    .raw
                    .swarm
                    .behaviour_mut()
                    .sign
                    .send_response(channel, Ack::Accepted);
                if let Frame::Deliver(env) = request {
                    if !matches!(env.payload, Payload::PresignOffer { .. }) {
                        self.inbox.push(env);
                    }
                }
                None
            }
            request_response::Event::Message {
                message:
                    request_response::Message::Response {
                        response,
                        request_id,
                    },
                ..
            } => Some((request_id, Ok(response))),
            request_response::Event::OutboundFailure {
                error, request_id, ..
            } => Some((request_id, Err(error.to_string()))),
            _ => None,
        }
    }

    fn send(&mut self, to: &NodeId, env: Envelope) -> request_response::OutboundRequestId {
        let peer = self.raw.roster.net(to).expect("in roster").peer_id;
        transport::send(&mut self.raw.swarm, &peer, Frame::Deliver(env))
    }

    /// Asks `node` to approve `signed` for the window: its approval, or its refusal
    /// `(reason, detail)`.
    async fn approval(
        &mut self,
        node: &NodeId,
        key: &KeyRecord,
        signed: &SignedRequest,
    ) -> Result<quorate_protocol::window::WindowApproval, (String, String)> {
        let session = self.session();
        let env = Envelope::seal(
            &self.identity,
            key.public.suite,
            key.key_id(),
            session,
            Payload::WindowApprove {
                request: signed.encode(),
            },
        );
        let id = self.send(node, env);
        let until = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(i) = self
                .inbox
                .iter()
                .position(|e| e.session == session && e.sender == *node)
            {
                let env = self.inbox.remove(i);
                let Payload::WindowApproved { approval } = env.payload else {
                    panic!("not an approval: {:?}", env.round);
                };
                return Ok(approval);
            }
            assert!(
                tokio::time::Instant::now() < until,
                "no approval from {node} within 10 s"
            );
            if let Some((rid, answer)) = self.step(until).await {
                if rid == id {
                    match answer {
                        Ok(Ack::Accepted) => {}
                        Ok(Ack::Rejected { reason, detail }) => return Err((reason, detail)),
                        Err(e) => return Err(("unreachable".into(), e)),
                    }
                }
            }
        }
    }

    /// One signing attempt of `signed`'s first message by `signers` with
    /// `certificate`, run by the real aggregator.
    async fn sign(
        &mut self,
        key: &KeyRecord,
        signed: &SignedRequest,
        signers: &[NodeId],
        certificate: quorate_protocol::window::WindowCertificate,
    ) -> Attempted {
        use quorate_protocol::{aggregate::AggregatorConfig, Aggregator, Input, Output, Timestamp};
        let session = self.session();
        let mut aggregator = Aggregator::new(
            self.identity.clone(),
            &key.public,
            AggregatorConfig {
                session,
                signers: signers.to_vec(),
                target: quorate_protocol::SignTarget {
                    message: raw_messages(&signed.request)[0].clone(),
                    tweak: None,
                },
                request: signed.encode(),
                timeout_ms: 5_000,
            },
        )
        .expect("aggregator")
        .with_certificate(certificate);
        let mut sent: std::collections::BTreeMap<request_response::OutboundRequestId, NodeId> =
            std::collections::BTreeMap::new();
        let mut outputs = aggregator
            .handle(Timestamp(0), Input::Start, &mut rand_core::OsRng)
            .expect("start");
        let until = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            for o in std::mem::take(&mut outputs) {
                match o {
                    Output::Send { to, msg } => {
                        let id = self.send(&to, msg);
                        sent.insert(id, to);
                    }
                    Output::Done(sig) => return Attempted::Signed(sig),
                    Output::SetTimer { .. } => {}
                }
            }
            if let Some(i) = self.inbox.iter().position(|e| e.session == session) {
                let env = self.inbox.remove(i);
                match aggregator.handle(Timestamp(0), Input::Message(env), &mut rand_core::OsRng) {
                    Ok(o) => outputs = o,
                    Err(e) if e.is_fatal() => return Attempted::Failed(e.to_string()),
                    Err(_) => {}
                }
                continue;
            }
            if tokio::time::Instant::now() >= until {
                return Attempted::Failed("timeout".into());
            }
            if let Some((rid, answer)) = self.step(until).await {
                if let Some(node) = sent.get(&rid).copied() {
                    match answer {
                        Ok(Ack::Accepted) => {}
                        Ok(Ack::Rejected { reason, detail }) => {
                            return Attempted::Refused(node, reason, detail)
                        }
                        Err(e) => return Attempted::Failed(e),
                    }
                }
            }
        }
    }
}

fn certificate_of(
    approvals: &[quorate_protocol::window::WindowApproval],
) -> quorate_protocol::window::WindowCertificate {
    quorate_protocol::window::WindowCertificate {
        approvals: approvals.to_vec(),
    }
}

/// Distinct request hashes this node contributed a share to.
fn requests_contributed(net: &Net, i: usize) -> std::collections::BTreeSet<String> {
    audit::read_entries(&net.audit_path(i))
        .expect("audit")
        .into_iter()
        .filter(|e| {
            serde_json::to_string(&e.kind)
                .expect("json")
                .contains("share_contributed")
        })
        .filter_map(|e| e.details.get("request_hash")?.as_str().map(str::to_owned))
        .collect()
}

/// With `window_quorum = "all"` on a 3-of-5 key, a malicious coordinator that also
/// controls t − 1 = 2 members (nodes 0 and 1, whose policy lets anything through)
/// retries each request on other signer subsets, reuses approvals across requests
/// and sends many distinct requests: the network signs no more than one window W
/// of the honest nodes' policy ((n − t + 1)/(q − t + 1) = 1), counted both in
/// signatures aggregated and in shares the honest nodes released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_quorum_all_bounds_the_network_to_one_window_against_a_retrying_coordinator() {
    let _serial = SERIAL.lock().await;
    let net = Net::new(5, 31);
    const W: u64 = 100;
    const AMOUNT: u64 = 40;
    let policies: Vec<String> = (0..5)
        .map(|i| {
            let per_window = if i < 2 { 1_000_000_000 } else { W };
            window_policy(&net, per_window, Some("\"all\""))
        })
        .collect();
    let (nodes, engine) = started_with_policies(&net, &policies).await;
    let ids = node_ids(&net);
    let key = dkg(&engine, &ids, Ciphersuite::Ed25519, 3).await;
    engine.shutdown().await;
    let mut c = Scripted::new(&net);
    // Each honest node (2, 3, 4) with the two compromised ones.
    let subsets: [[usize; 3]; 3] = [[0, 1, 2], [0, 1, 3], [0, 1, 4]];
    let pick = |s: &[usize; 3]| s.iter().map(|i| ids[*i]).collect::<Vec<_>>();
    let mut signed_requests = 0u64;
    let mut earlier_approvals = Vec::new();
    for k in 0..6 {
        let request = net.request(key.key_id(), vec![vec![7; 32]], AMOUNT);
        // Today's attack: each request shown to one honest node only, rotating,
        // so that no honest node sees more than its share of them.
        let first = &subsets[k % 3];
        let mut signed = match c
            .sign(&key, &request, &pick(first), Default::default())
            .await
        {
            Attempted::Signed(_) => true,
            Attempted::Refused(_, reason, _) => {
                assert!(
                    reason == "window:certificate_missing" || reason == "policy:window_limit",
                    "{reason}"
                );
                false
            }
            Attempted::Failed(why) => panic!("attempt failed: {why}"),
        };
        if !signed {
            let mut approvals = Vec::new();
            for n in &ids {
                if let Ok(a) = c.approval(n, &key, &request).await {
                    approvals.push(a);
                }
            }
            // Padded with every approval of earlier requests: they must not count.
            let mut padded = approvals.clone();
            padded.extend(earlier_approvals.iter().cloned());
            // And retried on every subset, and once more on the first.
            for s in subsets.iter().chain([first]) {
                if let Attempted::Signed(sig) = c
                    .sign(&key, &request, &pick(s), certificate_of(&padded))
                    .await
                {
                    key.public
                        .verify(&raw_messages(&request.request)[0], &sig.signature, None)
                        .expect("signature verifies");
                    signed = true;
                }
            }
            earlier_approvals.extend(approvals);
        }
        signed_requests += u64::from(signed);
    }
    assert_eq!(
        quorate_protocol::window::worst_case_multiple(5, 3, 5),
        Some((3, 3)),
        "the documented multiple is 1"
    );
    assert!(
        signed_requests * AMOUNT <= W,
        "{signed_requests} requests of {AMOUNT} signed against a window of {W}"
    );
    assert_eq!(
        signed_requests,
        W / AMOUNT,
        "as much as one window allows was signed"
    );
    for h in nodes {
        h.stop().await.expect("stop");
    }
    for i in 2..5 {
        let contributed = requests_contributed(&net, i);
        assert!(
            contributed.len() as u64 * AMOUNT <= W,
            "node {i} released shares for {} requests",
            contributed.len()
        );
    }
}

/// With `window_quorum = t` (2 of a 2-of-3 key) and one member compromised (node 0
/// lets anything through), a malicious coordinator reaches the documented multiple
/// (n − t + 1)/(q − t + 1) = 2 windows of the honest nodes, and no more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_quorum_t_reaches_the_documented_multiple_and_no_more() {
    let _serial = SERIAL.lock().await;
    let net = Net::new(3, 32);
    const W: u64 = 100;
    const AMOUNT: u64 = 50;
    let policies: Vec<String> = (0..3)
        .map(|i| window_policy(&net, if i == 0 { 1_000_000_000 } else { W }, Some("2")))
        .collect();
    let (nodes, engine) = started_with_policies(&net, &policies).await;
    let ids = node_ids(&net);
    let key = dkg(&engine, &ids, Ciphersuite::Ed25519, 2).await;
    engine.shutdown().await;
    let mut c = Scripted::new(&net);
    let mut total = 0u64;
    for _ in 0..7 {
        let request = net.request(key.key_id(), vec![vec![8; 32]], AMOUNT);
        let Ok(mine) = c.approval(&ids[0], &key, &request).await else {
            panic!("the compromised member approves anything");
        };
        for h in [1, 2] {
            let Ok(honest) = c.approval(&ids[h], &key, &request).await else {
                continue;
            };
            let cert = certificate_of(&[mine.clone(), honest]);
            match c.sign(&key, &request, &[ids[0], ids[h]], cert).await {
                Attempted::Signed(_) => {
                    total += AMOUNT;
                    break;
                }
                other => panic!("a certified request was not signed: {other:?}"),
            }
        }
    }
    let (num, den) = quorate_protocol::window::worst_case_multiple(3, 2, 2).expect("bound");
    assert_eq!((num, den), (2, 1));
    assert_eq!(
        total,
        W * u64::from(num) / u64::from(den),
        "the bound is reached exactly"
    );
    for h in nodes {
        h.stop().await.expect("stop");
    }
}

/// Signers refuse a request under `window_quorum` without a certificate, with too
/// few approvals, with an approval of another request, or with a forged approval
/// (naming the node), and release nothing; the full certificate signs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signers_refuse_missing_short_and_forged_window_certificates() {
    let _serial = SERIAL.lock().await;
    let net = Net::new(3, 33);
    let policies: Vec<String> = (0..3)
        .map(|_| window_policy(&net, 1_000, Some("\"all\"")))
        .collect();
    let (nodes, engine) = started_with_policies(&net, &policies).await;
    let ids = node_ids(&net);
    let key = dkg(&engine, &ids, Ciphersuite::Secp256k1, 2).await;
    engine.shutdown().await;
    let mut c = Scripted::new(&net);
    let request = net.request(key.key_id(), vec![vec![9; 32]], 10);
    let other = net.request(key.key_id(), vec![vec![9; 32]], 11);
    let signers = [ids[0], ids[1]];
    let refused = |a: Attempted| match a {
        Attempted::Refused(node, reason, detail) => (node, reason, detail),
        other => panic!("expected a refusal, got {other:?}"),
    };
    let (_, reason, detail) = refused(c.sign(&key, &request, &signers, Default::default()).await);
    assert_eq!(reason, "window:certificate_missing");
    assert!(detail.starts_with("window_quorum=3 have=0; "), "{detail}");
    let mut approvals = Vec::new();
    for n in &ids {
        approvals.push(c.approval(n, &key, &request).await.expect("approved"));
    }
    let (_, reason, detail) = refused(
        c.sign(&key, &request, &signers, certificate_of(&approvals[..2]))
            .await,
    );
    assert_eq!(reason, "window:certificate_short");
    assert!(detail.starts_with("window_quorum=3 have=2; "), "{detail}");
    // Node 2's approval of another request does not stand in for this one.
    let elsewhere = c.approval(&ids[2], &key, &other).await.expect("approved");
    let (_, reason, _) = refused(
        c.sign(
            &key,
            &request,
            &signers,
            certificate_of(&[approvals[0].clone(), approvals[1].clone(), elsewhere]),
        )
        .await,
    );
    assert_eq!(reason, "window:certificate_short");
    // Node 2's approval with the amount lowered: forged, and named.
    let mut forged = approvals[2].clone();
    forged.statement.amount = 1;
    let (_, reason, detail) = refused(
        c.sign(
            &key,
            &request,
            &signers,
            certificate_of(&[approvals[0].clone(), approvals[1].clone(), forged]),
        )
        .await,
    );
    assert_eq!(reason, "window:certificate_forged");
    assert!(detail.contains(&ids[2].to_string()), "{detail}");
    match c
        .sign(&key, &request, &signers, certificate_of(&approvals))
        .await
    {
        Attempted::Signed(sig) => key
            .public
            .verify(&raw_messages(&request.request)[0], &sig.signature, None)
            .expect("verifies"),
        other => panic!("the full certificate signs: {other:?}"),
    }
    for h in nodes {
        h.stop().await.expect("stop");
    }
    for i in 0..2 {
        let kinds = audit_kinds(&net.audit_path(i)).join("\n");
        assert_eq!(kinds.matches("share_contributed").count(), 1, "{kinds}");
        assert_eq!(
            kinds.matches("sign_attempt").count(),
            1,
            "refused certificates use no attempt: {kinds}"
        );
    }
}

/// A reservation made only by a window approval (the node never saw a signing
/// request for it) survives a restart: the window stays used, and approving the
/// same request again counts nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_only_reservation_survives_a_restart_and_is_never_counted_twice() {
    let _serial = SERIAL.lock().await;
    let net = Net::new(3, 34);
    let policies: Vec<String> = (0..3)
        .map(|_| window_policy(&net, 100, Some("\"all\"")))
        .collect();
    let (mut nodes, engine) = started_with_policies(&net, &policies).await;
    let ids = node_ids(&net);
    let key = dkg(&engine, &ids, Ciphersuite::Ed25519, 2).await;
    engine.shutdown().await;
    let mut c = Scripted::new(&net);
    let full = net.request(key.key_id(), vec![vec![1; 32]], 100);
    let first = c.approval(&ids[0], &key, &full).await.expect("approved");
    nodes.remove(0).stop().await.expect("stop");
    let restarted = start_with_policy(&net, 0, None);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A new connection: the old one went with the node.
    drop(c);
    let mut c = Scripted::new(&net);
    let more = net.request(key.key_id(), vec![vec![2; 32]], 1);
    let (reason, _) = c
        .approval(&ids[0], &key, &more)
        .await
        .expect_err("the window is full after the restart");
    assert_eq!(reason, "policy:window_limit");
    let again = c
        .approval(&ids[0], &key, &full)
        .await
        .expect("the reserved request is still approved");
    assert_eq!(again, first, "the same approval, not a second reservation");
    restarted.stop().await.expect("stop");
    for h in nodes {
        h.stop().await.expect("stop");
    }
    let entries = audit::read_entries(&net.audit_path(0)).expect("audit");
    let hash = hex::encode(full.request.hash());
    let received = entries
        .iter()
        .filter(|e| {
            serde_json::to_string(&e.kind)
                .expect("json")
                .contains(&hash)
        })
        .filter(|e| {
            serde_json::to_string(&e.kind)
                .expect("json")
                .contains("request_received")
        })
        .count();
    assert_eq!(received, 1, "decided once, re-checked after the restart");
}

/// The real engine gets a windowed request signed through the lazy path (first
/// attempt refused for want of a certificate, every member asked, certificate
/// attached to the retry), and fails the next request with a typed error naming
/// the member whose window is full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_collects_window_approvals_lazily_and_names_who_refused() {
    let _serial = SERIAL.lock().await;
    let net = Net::new(3, 35);
    let policies: Vec<String> = (0..3)
        .map(|i| window_policy(&net, if i == 2 { 100 } else { 1_000 }, Some("\"all\"")))
        .collect();
    let (nodes, engine) = started_with_policies(&net, &policies).await;
    let ids = node_ids(&net);
    let key = dkg(&engine, &ids, Ciphersuite::Ed25519, 2).await;
    let messages = vec![vec![3; 32], vec![4; 32]];
    let result = engine
        .sign(key.clone(), net.request(key.key_id(), messages.clone(), 60))
        .await
        .expect("signed through the lazy certificate");
    for s in &result.signatures {
        key.public
            .verify(&s.message, &s.signature.signature, None)
            .expect("verifies");
    }
    assert!(
        result
            .attempts
            .iter()
            .any(|a| a.outcome == "certificate_required"),
        "{:?}",
        result.attempts
    );
    let err = engine
        .sign(key.clone(), net.request(key.key_id(), messages, 60))
        .await
        .expect_err("node 2's window is full");
    match err {
        CoordinatorError::WindowCertificate { need, refused, .. } => {
            assert_eq!(need, 3);
            assert!(
                refused
                    .iter()
                    .any(|(n, r)| *n == ids[2] && r == "policy:window_limit"),
                "{refused:?}"
            );
        }
        other => panic!("expected a window certificate failure, got {other}"),
    }
    engine.shutdown().await;
    for h in nodes {
        h.stop().await.expect("stop");
    }
    for i in 0..3 {
        let kinds = audit_kinds(&net.audit_path(i)).join("\n");
        assert!(kinds.contains("window_approved"), "node {i}: {kinds}");
    }
}
