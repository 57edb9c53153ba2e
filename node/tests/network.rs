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
    request::{Purpose, SignedRequest, SigningRequest, REQUEST_VERSION},
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
            "version = 1\n[clients.exchange]\npublic_key = \"{}\"\nkeys = [\"*\"]\n[clients.exchange.limits.BTC]\nper_request = {per_request}\nper_window = 1_000_000_000\n",
            hex::encode(self.client.verifying_key().to_bytes())
        ))
        .expect("policy")
    }

    fn audit_path(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("audit{i}.jsonl"))
    }

    fn start(&self, i: usize, routing: Routing, metrics: Metrics) -> NodeHandle {
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
            policy: PolicyEngine::new(self.policy(100_000_000)),
            policy_path: None,
            audit,
            listen: vec![self.addr(self.ports[i]).parse().expect("addr")],
            routing,
            limits: LimitsConfig {
                session_timeout_ms: 10_000,
                ..LimitsConfig::default()
            },
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
            messages,
            tweak: None,
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
        })
        .await
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_keys_and_signs_with_fresh_nonces() {
    let _serial = SERIAL.lock().await;
    let net = Net::new(3, 4);
    let ids = node_ids(&net);
    let (nodes, _, engine) = started(&net, Routing::Direct).await;
    let key = dkg(&engine, &ids, Ciphersuite::Secp256k1, 3).await;
    let msg = vec![3; 32];
    let first_request = net.request(key.key_id(), vec![msg.clone()], 1);
    let first = engine
        .sign(key.clone(), first_request.clone())
        .await
        .expect("sign");
    engine.shutdown().await;
    for h in nodes {
        h.stop().await.expect("stop");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Restart every node from its sealed keystore.
    let (nodes, _, engine) = started(&net, Routing::Direct).await;
    assert!(
        nodes[0]
            .keys()
            .await
            .iter()
            .any(|k| k.key_id == key.key_id()),
        "key survived restart"
    );
    let second = engine
        .sign(key.clone(), net.request(key.key_id(), vec![msg.clone()], 1))
        .await
        .expect("sign after restart");
    key.public
        .verify(&msg, &second.signatures[0].signature.signature, None)
        .expect("verifies");
    // Same message, same signers: fresh nonces give a different signature.
    assert_ne!(
        first.signatures[0].signature.signature,
        second.signatures[0].signature.signature
    );
    // Policy state was rebuilt from each node's audit log: a coordinator retry of the
    // request allowed before the restart is still a retry (same messages, no new
    // usage), while a new request reusing its nonce is a replay.
    engine
        .sign(key.clone(), first_request.clone())
        .await
        .expect("retry of an approved request after restart");
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
}

/// A roster signer that runs the real protocol machines but corrupts every
/// signature share it sends (what a compromised node could do).
struct Cheater {
    identity: Arc<NodeIdentity>,
    peer: RawPeer,
    sessions: std::collections::BTreeMap<SessionId, quorate_protocol::local::Party>,
    shares: std::collections::BTreeMap<KeyId, quorate_protocol::KeyShare>,
}

impl Cheater {
    fn spawn(net: &Net) -> tokio::sync::oneshot::Sender<()> {
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
        };
        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = &mut rx => break,
                    ev = me.peer.swarm.select_next_some() => me.on_event(ev),
                }
            }
        });
        tx
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
        let mut rng = rand_core::OsRng;
        let now = quorate_protocol::Timestamp(0);
        let outputs = match &env.payload {
            Payload::DkgStart {
                threshold,
                committee,
                timeout_ms,
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
                    if matches!(msg.payload, Payload::SignShare { .. }) {
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
    let stop = Cheater::spawn(&net);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut members = node_ids(&net);
    members.push(net.mallory.node_id());
    let key = dkg(&engine, &members, Ciphersuite::Secp256k1, 3).await;
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
    // The cheater is alone in its segment, so the segment-spreading choice asks it first.
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
