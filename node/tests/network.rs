//! Several nodes in one test process over real libp2p on loopback: DKG then
//! signing for every ciphersuite, plus the refusals operators must be able to see.

use std::{
    collections::BTreeMap,
    net::TcpListener,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use futures::StreamExt;
use libp2p::{request_response, swarm::SwarmEvent, PeerId, Swarm};
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
    aggregate::AggregatorConfig,
    request::{Purpose, SignedRequest, SigningRequest, REQUEST_VERSION},
    wire::frame::{Ack, Frame},
    Aggregator, Ciphersuite, Envelope, GroupPublic, Input, KeyId, NodeId, NodeIdentity, Output,
    Payload, SessionId, SignTarget, SignatureBytes, Timestamp,
};
use rand_chacha::{rand_core::SeedableRng, ChaCha20Rng};
use rand_core::RngCore;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
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
    mallory: Arc<NodeIdentity>,
    client: ed25519_dalek::SigningKey,
    roster_text: String,
    ports: Vec<u16>,
    coord_port: u16,
}

impl Net {
    fn new(n: usize, seed: u64) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let ids: Vec<_> = (0..n).map(|_| NodeIdentity::generate(&mut rng)).collect();
        let coordinator = Arc::new(NodeIdentity::generate(&mut rng));
        let mallory = Arc::new(NodeIdentity::generate(&mut rng));
        let client = ed25519_dalek::SigningKey::generate(&mut rng);
        let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let coord_port = free_port();
        let mut roster = String::new();
        for (i, id) in ids.iter().chain([mallory.as_ref()]).enumerate() {
            let p = id.public();
            let addr = ports
                .get(i)
                .map(|p| format!("\"/ip4/127.0.0.1/tcp/{p}\""))
                .unwrap_or_default();
            roster.push_str(&format!(
                "[[nodes]]\nname = \"node{}\"\nnode_id = \"{}\"\nseal_key = \"{}\"\nindex = {}\nsegment = \"seg{}\"\naddresses = [{addr}]\n\n",
                i + 1, p.node, hex::encode(p.seal_key), i + 1, i % 3
            ));
        }
        roster.push_str(&format!(
            "[[coordinators]]\nname = \"coord\"\nnode_id = \"{}\"\naddresses = [\"/ip4/127.0.0.1/tcp/{coord_port}\"]\n",
            coordinator.node_id()
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
            mallory,
            client,
            roster_text: roster,
            ports,
            coord_port,
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
        let audit = AuditLog::open(self.audit_path(i), ks.identity()).expect("audit");
        daemon::spawn(NodeParts {
            keystore: ks,
            roster: Roster::from_toml(&self.roster_text).expect("roster"),
            policy: PolicyEngine::new(self.policy(100_000_000)),
            policy_path: None,
            audit,
            listen: vec![format!("/ip4/127.0.0.1/tcp/{}", self.ports[i])
                .parse()
                .expect("addr")],
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

/// A test coordinator speaking the real transport: starts DKGs, drives an
/// aggregator, relays envelopes between segmented nodes.
struct Coordinator {
    identity: Arc<NodeIdentity>,
    swarm: Swarm<Behaviour>,
    roster: Roster,
    /// Requests sent in the current attempt: acks of earlier attempts are ignored.
    sent: std::collections::BTreeSet<request_response::OutboundRequestId>,
}

enum Outcome {
    Signed(SignatureBytes),
    Refused(String),
}

impl Coordinator {
    fn new(net: &Net, identity: Arc<NodeIdentity>, port: u16) -> Self {
        let roster = Roster::from_toml(&net.roster_text).expect("roster");
        let peers: Vec<PeerId> = roster.peers().iter().map(|p| p.peer_id).collect();
        let mut swarm =
            transport::build_swarm(&identity, peers, transport::Limits::default()).expect("swarm");
        for p in roster.peers() {
            for a in &p.addresses {
                swarm.add_peer_address(p.peer_id, a.clone());
            }
        }
        swarm
            .listen_on(format!("/ip4/127.0.0.1/tcp/{port}").parse().expect("addr"))
            .expect("listen");
        Self {
            identity,
            swarm,
            roster,
            sent: Default::default(),
        }
    }

    fn peer(&self, node: &NodeId) -> PeerId {
        self.roster.net(node).expect("in roster").peer_id
    }

    fn send(&mut self, to: &NodeId, frame: Frame) {
        let peer = self.peer(to);
        let id = transport::send(&mut self.swarm, &peer, frame);
        self.sent.insert(id);
    }

    /// Pumps the swarm: relays, answers, and hands envelopes for us and acks to `f`.
    async fn pump<T>(
        &mut self,
        deadline: Duration,
        mut f: impl FnMut(&mut Self, Event) -> Option<T>,
    ) -> Option<T> {
        let until = tokio::time::Instant::now() + deadline;
        loop {
            let event = tokio::time::timeout_at(until, self.swarm.select_next_some())
                .await
                .ok()?;
            let ev = match event {
                SwarmEvent::Behaviour(BehaviourEvent::Dkg(e))
                | SwarmEvent::Behaviour(BehaviourEvent::Sign(e)) => e,
                _ => continue,
            };
            match ev {
                request_response::Event::Message {
                    message:
                        request_response::Message::Request {
                            request, channel, ..
                        },
                    ..
                } => {
                    let family = transport::family(&request);
                    let rr = match family {
                        transport::Family::Dkg => &mut self.swarm.behaviour_mut().dkg,
                        transport::Family::Sign => &mut self.swarm.behaviour_mut().sign,
                    };
                    let _ = rr.send_response(channel, Ack::Accepted);
                    match request {
                        Frame::Relay { to, envelope } => self.send(&to, Frame::Deliver(envelope)),
                        Frame::Deliver(env) => {
                            if let Some(t) = f(self, Event::Envelope(env)) {
                                return Some(t);
                            }
                        }
                    }
                }
                request_response::Event::Message {
                    message:
                        request_response::Message::Response {
                            response,
                            request_id,
                        },
                    ..
                } => {
                    if !self.sent.contains(&request_id) {
                        continue;
                    }
                    if let Some(t) = f(self, Event::Ack(response)) {
                        return Some(t);
                    }
                }
                request_response::Event::OutboundFailure {
                    error, request_id, ..
                } => {
                    if !self.sent.contains(&request_id) {
                        continue;
                    }
                    if let Some(t) = f(self, Event::Failure(error.to_string())) {
                        return Some(t);
                    }
                }
                _ => {}
            }
        }
    }

    async fn dkg(
        &mut self,
        nodes: &[NodeHandle],
        committee_ids: &[NodeId],
        suite: Ciphersuite,
        t: u16,
    ) -> KeyId {
        let mut key = [0u8; 16];
        rand_core::OsRng.fill_bytes(&mut key);
        let mut session = [0u8; 32];
        rand_core::OsRng.fill_bytes(&mut session);
        let committee = self
            .roster
            .committee(Some(committee_ids))
            .expect("committee");
        let env = Envelope::seal(
            &self.identity,
            suite,
            KeyId(key),
            SessionId(session),
            Payload::DkgStart {
                threshold: t,
                committee,
                timeout_ms: 20_000,
            },
        );
        for n in committee_ids {
            self.send(n, Frame::Deliver(env.clone()));
        }
        // Keep relaying until every node reports the key.
        let key_id = KeyId(key);
        for _ in 0..200 {
            self.pump(Duration::from_millis(100), |_, _| None::<()>)
                .await;
            let mut all = true;
            for h in nodes.iter().filter(|h| committee_ids.contains(&h.node_id)) {
                all &= h.keys().await.iter().any(|k| k.key_id == key_id);
            }
            if all {
                return key_id;
            }
        }
        panic!("DKG {suite} did not finish");
    }

    async fn sign(
        &mut self,
        public: &GroupPublic,
        signers: &[NodeId],
        message: Vec<u8>,
        request: &SignedRequest,
    ) -> Outcome {
        let mut session = [0u8; 32];
        rand_core::OsRng.fill_bytes(&mut session);
        let mut agg = Aggregator::new(
            self.identity.clone(),
            public,
            AggregatorConfig {
                session: SessionId(session),
                signers: signers.to_vec(),
                target: SignTarget {
                    message,
                    tweak: None,
                },
                request: request.encode(),
                timeout_ms: 10_000,
            },
        )
        .expect("aggregator");
        self.sent.clear();
        let mut rng = rand_core::OsRng;
        let outs = agg
            .handle(Timestamp(0), Input::Start, &mut rng)
            .expect("start");
        self.dispatch(outs);
        let mut agg = Some(agg);
        self.pump(Duration::from_secs(20), |me, ev| match ev {
            Event::Envelope(env) => {
                let a = agg.as_mut()?;
                match a.handle(Timestamp(0), Input::Message(env), &mut rand_core::OsRng) {
                    Ok(outs) => {
                        let mut done = None;
                        for o in outs {
                            match o {
                                Output::Send { to, msg } => me.send(&to, Frame::Deliver(msg)),
                                Output::Done(sig) => done = Some(Outcome::Signed(sig)),
                                Output::SetTimer { .. } => {}
                            }
                        }
                        done
                    }
                    Err(e) if e.is_fatal() => Some(Outcome::Refused(e.to_string())),
                    Err(_) => None,
                }
            }
            Event::Ack(Ack::Rejected { reason, .. }) => Some(Outcome::Refused(reason)),
            Event::Ack(Ack::Accepted) => None,
            Event::Failure(e) => Some(Outcome::Refused(format!("transport: {e}"))),
        })
        .await
        .unwrap_or(Outcome::Refused("timeout".into()))
    }

    fn dispatch<T>(&mut self, outs: Vec<Output<T>>) {
        for o in outs {
            if let Output::Send { to, msg } = o {
                self.send(&to, Frame::Deliver(msg));
            }
        }
    }
}

enum Event {
    Envelope(Envelope),
    Ack(Ack),
    Failure(String),
}

async fn started(net: &Net, routing: Routing) -> (Vec<NodeHandle>, Vec<Metrics>, Coordinator) {
    let metrics: Vec<Metrics> = net.ids.iter().map(|_| Metrics::default()).collect();
    let nodes: Vec<NodeHandle> = (0..net.ids.len())
        .map(|i| net.start(i, routing, metrics[i].clone()))
        .collect();
    let coord = Coordinator::new(net, net.coordinator.clone(), net.coord_port);
    tokio::time::sleep(Duration::from_millis(300)).await;
    (nodes, metrics, coord)
}

fn node_ids(net: &Net) -> Vec<NodeId> {
    net.ids.iter().map(|i| i.node_id()).collect()
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
    let net = Net::new(5, 1);
    let (nodes, metrics, mut coord) = started(&net, Routing::Direct).await;
    let ids = node_ids(&net);
    for suite in Ciphersuite::ALL {
        let key_id = coord.dkg(&nodes, &ids, suite, 3).await;
        let public = nodes[0]
            .keys()
            .await
            .into_iter()
            .find(|k| k.key_id == key_id)
            .expect("key");
        for h in &nodes[1..] {
            let other = h
                .keys()
                .await
                .into_iter()
                .find(|k| k.key_id == key_id)
                .expect("key");
            assert_eq!(other, public, "every node derived the same group key");
        }
        let msg = vec![0x42; 32];
        let req = net.request(key_id, vec![msg.clone()], 1000);
        match coord.sign(&public, &ids[1..4], msg.clone(), &req).await {
            Outcome::Signed(sig) => public
                .verify(&msg, &sig.signature, None)
                .expect("signature verifies"),
            Outcome::Refused(r) => panic!("{suite}: refused: {r}"),
        }
    }
    let m = metrics[1].render();
    assert!(
        m.contains("quorate_sessions_total{kind=\"sign\",outcome=\"done\"} 3"),
        "{m}"
    );
    for h in nodes {
        h.stop().await.expect("stop");
    }
    for i in 0..5 {
        let report = audit::verify(&net.audit_path(i), Some(net.ids[i].node_id())).expect("verify");
        assert!(report.first_bad.is_none(), "{report:?}");
    }
    let kinds = audit_kinds(&net.audit_path(1)).join("\n");
    assert_eq!(kinds.matches("key_generated").count(), 3, "{kinds}");
    assert_eq!(kinds.matches("share_contributed").count(), 3, "{kinds}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segmented_nodes_run_dkg_and_sign_through_the_coordinator() {
    let net = Net::new(3, 2);
    let (nodes, _, mut coord) = started(&net, Routing::ViaCoordinator).await;
    let ids = node_ids(&net);
    let key_id = coord.dkg(&nodes, &ids, Ciphersuite::Secp256k1Tr, 2).await;
    let public = nodes[0]
        .keys()
        .await
        .into_iter()
        .find(|k| k.key_id == key_id)
        .expect("key");
    let msg = vec![7; 32];
    let req = net.request(key_id, vec![msg.clone()], 10);
    match coord.sign(&public, &ids[..2], msg.clone(), &req).await {
        Outcome::Signed(sig) => public.verify(&msg, &sig.signature, None).expect("verifies"),
        Outcome::Refused(r) => panic!("refused: {r}"),
    }
    for h in nodes {
        h.stop().await.expect("stop");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_typed_audited_and_counted() {
    let net = Net::new(3, 3);
    let (nodes, metrics, mut coord) = started(&net, Routing::Direct).await;
    let ids = node_ids(&net);
    let key_id = coord.dkg(&nodes, &ids, Ciphersuite::Ed25519, 2).await;
    let public = nodes[0]
        .keys()
        .await
        .into_iter()
        .find(|k| k.key_id == key_id)
        .expect("key");

    // Over the per-request limit.
    let msg = vec![1; 32];
    let big = net.request(key_id, vec![msg.clone()], 500_000_000);
    match coord.sign(&public, &ids[..2], msg.clone(), &big).await {
        Outcome::Refused(r) => assert_eq!(r, "policy:amount_limit"),
        Outcome::Signed(_) => panic!("signed over the limit"),
    }
    // A coordinator altering the message: the client never signed it.
    let req = net.request(key_id, vec![msg.clone()], 10);
    match coord.sign(&public, &ids[..2], vec![2; 32], &req).await {
        Outcome::Refused(r) => assert_eq!(r, "request_mismatch"),
        Outcome::Signed(_) => panic!("signed an altered message"),
    }
    // Replay of a fully used request with a new session: the first use signs...
    let ok = net.request(key_id, vec![msg.clone()], 10);
    assert!(matches!(
        coord.sign(&public, &ids[..2], msg.clone(), &ok).await,
        Outcome::Signed(_)
    ));
    // ...and an expired request is refused.
    let mut expired = net.request(key_id, vec![msg.clone()], 10).request;
    expired.expires_at_ms = unix_ms() - 1;
    let expired = expired.sign(&net.client);
    match coord.sign(&public, &ids[..2], msg.clone(), &expired).await {
        Outcome::Refused(r) => assert_eq!(r, "policy:expired"),
        Outcome::Signed(_) => panic!("signed an expired request"),
    }
    let m = metrics[0].render();
    assert!(
        m.contains("quorate_policy_refusals_total{label=\"amount_limit\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("quorate_rejected_messages_total{label=\"request_mismatch\"}"),
        "{m}"
    );

    // Spoofed sender: a roster member signs an envelope claiming to be node 2.
    let mut mallory = Coordinator::new(&net, net.mallory.clone(), free_port());
    let mut forged = Envelope::seal(
        &net.mallory,
        Ciphersuite::Ed25519,
        key_id,
        SessionId([9; 32]),
        Payload::SignShare { share: vec![0; 32] },
    );
    forged.sender = ids[1];
    mallory.send(&ids[0], Frame::Deliver(forged));
    let ack = mallory
        .pump(Duration::from_secs(10), |_, ev| match ev {
            Event::Ack(a) => Some(a),
            Event::Failure(e) => panic!("{e}"),
            _ => None,
        })
        .await;
    assert!(
        matches!(ack, Some(Ack::Rejected { ref reason, .. }) if reason == "sender_mismatch"),
        "{ack:?}"
    );

    // Unknown peer: not in the roster, the connection is refused before any traffic.
    let outsider = Arc::new(NodeIdentity::generate(&mut ChaCha20Rng::seed_from_u64(99)));
    let mut out = Coordinator::new(&net, outsider.clone(), free_port());
    let env = Envelope::seal(
        &outsider,
        Ciphersuite::Ed25519,
        key_id,
        SessionId([8; 32]),
        Payload::SignShare { share: vec![0; 32] },
    );
    out.send(&ids[0], Frame::Deliver(env));
    let failure = out
        .pump(Duration::from_secs(10), |_, ev| match ev {
            Event::Failure(e) => Some(e),
            Event::Ack(a) => panic!("outsider got an answer: {a:?}"),
            _ => None,
        })
        .await;
    assert!(failure.is_some(), "outsider's request must fail");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let m = metrics[0].render();
    assert!(!m.contains("quorate_rejected_peers_total 0"), "{m}");

    for h in nodes {
        h.stop().await.expect("stop");
    }
    let kinds = audit_kinds(&net.audit_path(0)).join("\n");
    assert!(kinds.contains("\"rule\":\"amount_limit\""), "{kinds}");
    assert!(kinds.contains("\"rule\":\"expired\""), "{kinds}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_keys_and_signs_with_fresh_nonces() {
    let net = Net::new(3, 4);
    let ids = node_ids(&net);
    let (nodes, _, mut coord) = started(&net, Routing::Direct).await;
    let key_id = coord.dkg(&nodes, &ids, Ciphersuite::Secp256k1, 2).await;
    let public = nodes[0]
        .keys()
        .await
        .into_iter()
        .find(|k| k.key_id == key_id)
        .expect("key");
    let msg = vec![3; 32];
    let first = match coord
        .sign(
            &public,
            &ids[..2],
            msg.clone(),
            &net.request(key_id, vec![msg.clone()], 1),
        )
        .await
    {
        Outcome::Signed(s) => s,
        Outcome::Refused(r) => panic!("{r}"),
    };
    for h in nodes {
        h.stop().await.expect("stop");
    }
    drop(coord);
    // Restart from the sealed keystores.
    let (nodes, _, mut coord) = started(&net, Routing::Direct).await;
    assert!(
        nodes[0].keys().await.iter().any(|k| k.key_id == key_id),
        "key survived restart"
    );
    let second = match coord
        .sign(
            &public,
            &ids[..2],
            msg.clone(),
            &net.request(key_id, vec![msg.clone()], 1),
        )
        .await
    {
        Outcome::Signed(s) => s,
        Outcome::Refused(r) => panic!("{r}"),
    };
    public
        .verify(&msg, &second.signature, None)
        .expect("verifies");
    // Same message, same signers: different nonces give a different signature.
    assert_ne!(
        first.signature, second.signature,
        "nonces are never reused across restarts"
    );
    for h in nodes {
        h.stop().await.expect("stop");
    }
    let _ = BTreeMap::<u8, u8>::new();
}
