//! MPC netting on real nodes over loopback libp2p, driven by a raw coordinator
//! peer that speaks the wire protocol itself: DKG for the settlement key, round,
//! bundles dealt by three parties, close, the nodes' signed outputs opened by every
//! party against the plaintext reference, and the settlement batch threshold-signed.
//! Plus the refusals (each on its own, the round goes on) and a restart.
//!
//! Every wait is on an event (an answer or an inbound message), never a sleep.

use std::{
    collections::VecDeque,
    net::TcpListener,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use ed25519_dalek::SigningKey;
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
    netting::{
        input::{PartyInput, Position},
        reference,
        result::{open_result, Published},
        session::settle,
        share::deal,
        verify, Bounds, BundleHeader, InputBundle, Instrument, InstrumentKind, Party, PartyOutputs,
        PublicOutputs, RoundId, RoundSpec,
    },
    wire::frame::{Ack, Frame},
    Aggregator, Ciphersuite, Committee, Envelope, GroupPublic, Input, KeyId, NodeId, NodeIdentity,
    Output, Payload, SessionId, SignTarget, Timestamp,
};
use rand_chacha::{rand_core::SeedableRng, ChaCha20Rng};
use rand_core::{OsRng, RngCore};

/// The tests of this file share one process; each runs alone.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());

/// Longest wait for any one event (generous: the machine is small and shared).
const WAIT: Duration = Duration::from_secs(120);

fn free_port() -> u16 {
    let mut taken = HANDED_OUT.lock().expect("ports");
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    let (low, high) = (10_000u16, ephemeral_low.max(11_000));
    let mut rng = ChaCha20Rng::seed_from_u64(u64::from(std::process::id()) ^ unix_secs());
    loop {
        let port = low + (rng.next_u32() % u32::from(high - low)) as u16;
        let free = TcpListener::bind(("127.0.0.1", port)).is_ok();
        if free && !taken.contains(&port) {
            taken.push(port);
            return port;
        }
    }
}

fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn addr(port: u16) -> String {
    format!("/ip4/127.0.0.1/tcp/{port}")
}

struct Net {
    dir: tempfile::TempDir,
    ids: Vec<NodeIdentity>,
    coordinator: Arc<NodeIdentity>,
    /// Registered with `netting = true`.
    clearing: SigningKey,
    /// Registered without netting.
    exchange: SigningKey,
    roster_text: String,
    ports: Vec<u16>,
    coord_port: u16,
    /// Nodes whose policy signs no settlements.
    no_settlement: Vec<usize>,
    /// Per node: more `[netting]` lines (transfer limits).
    netting_extra: Vec<String>,
    /// More policy text after the clients (further clients).
    clients_extra: String,
    /// Every node's limits.
    limits: LimitsConfig,
    /// Per node: its metrics (shared atomics, read by the tests).
    metrics: Vec<Metrics>,
}

impl Net {
    fn new(n: usize, seed: u64) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let ids: Vec<_> = (0..n).map(|_| NodeIdentity::generate(&mut rng)).collect();
        let coordinator = Arc::new(NodeIdentity::generate(&mut rng));
        let clearing = SigningKey::generate(&mut rng);
        let exchange = SigningKey::generate(&mut rng);
        let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let coord_port = free_port();
        let mut roster = String::new();
        for (i, id) in ids.iter().enumerate() {
            let p = id.public();
            roster.push_str(&format!(
                "[[nodes]]\nname = \"node{}\"\nnode_id = \"{}\"\nseal_key = \"{}\"\nindex = {}\nsegment = \"seg{i}\"\naddresses = [\"{}\"]\n\n",
                i + 1,
                p.node,
                hex::encode(p.seal_key),
                i + 1,
                addr(ports[i])
            ));
        }
        roster.push_str(&format!(
            "[[coordinators]]\nname = \"coord\"\nnode_id = \"{}\"\naddresses = [\"{}\"]\n",
            coordinator.node_id(),
            addr(coord_port)
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
            clearing,
            exchange,
            roster_text: roster,
            ports,
            coord_port,
            no_settlement: Vec::new(),
            netting_extra: vec![String::new(); n],
            clients_extra: String::new(),
            limits: LimitsConfig {
                session_timeout_ms: 60_000,
                shutdown_grace_ms: 200,
                ..LimitsConfig::default()
            },
            metrics: (0..n).map(|_| Metrics::default()).collect(),
        }
    }

    fn policy(&self, i: usize) -> Policy {
        let netting = if self.no_settlement.contains(&i) {
            String::new()
        } else {
            format!(
                "[netting]\nsettlement_keys = [\"*\"]\n{}\n",
                self.netting_extra[i]
            )
        };
        Policy::from_toml(&format!(
            "version = 1\n{netting}\
             [clients.clearing]\npublic_key = \"{}\"\nkeys = [\"*\"]\nnetting = true\n\
             [clients.exchange]\npublic_key = \"{}\"\nkeys = [\"*\"]\nallow_raw = true\n\
             [clients.exchange.limits.BTC]\nper_request = 1\nper_window = 1\n{}",
            hex::encode(self.clearing.verifying_key().to_bytes()),
            hex::encode(self.exchange.verifying_key().to_bytes()),
            self.clients_extra,
        ))
        .expect("policy")
    }

    fn audit_path(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("audit{i}.jsonl"))
    }

    fn start(&self, i: usize) -> NodeHandle {
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
            policy: PolicyEngine::new(self.policy(i)),
            policy_path: None,
            audit,
            listen: vec![addr(self.ports[i]).parse().expect("addr")],
            routing: Routing::Direct,
            limits: self.limits,
            metrics: self.metrics[i].clone(),
        })
        .expect("spawn")
    }

    fn node_ids(&self) -> Vec<NodeId> {
        self.ids.iter().map(NodeIdentity::node_id).collect()
    }

    fn audit_kinds(&self, i: usize) -> String {
        audit::read_entries(&self.audit_path(i))
            .expect("audit")
            .into_iter()
            .map(|e| serde_json::to_string(&e.kind).expect("json"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// A roster coordinator speaking the transport directly: answers every inbound
/// frame `Accepted` and keeps its envelope in an inbox.
struct Coord {
    identity: Arc<NodeIdentity>,
    swarm: Swarm<Behaviour>,
    roster: Roster,
    inbox: VecDeque<Envelope>,
    /// Rejections of frames sent without waiting (`send`), for diagnostics.
    rejections: Vec<(String, String)>,
    epoch: Instant,
}

impl Coord {
    async fn new(net: &Net) -> Self {
        let roster = Roster::from_toml(&net.roster_text).expect("roster");
        let peers: Vec<PeerId> = roster.peers().iter().map(|p| p.peer_id).collect();
        let mut swarm =
            transport::build_swarm(&net.coordinator, peers, transport::Limits::default())
                .expect("swarm");
        for p in roster.peers() {
            for a in &p.addresses {
                swarm.add_peer_address(p.peer_id, a.clone());
            }
        }
        swarm
            .listen_on(addr(net.coord_port).parse().expect("addr"))
            .expect("listen");
        let mut me = Self {
            identity: net.coordinator.clone(),
            swarm,
            roster,
            inbox: VecDeque::new(),
            rejections: Vec::new(),
            epoch: Instant::now(),
        };
        // Listening before anyone dials us.
        loop {
            if let SwarmEvent::NewListenAddr { .. } = me.swarm.select_next_some().await {
                break;
            }
        }
        me
    }

    fn seal(
        &self,
        suite: Ciphersuite,
        key: KeyId,
        session: SessionId,
        payload: Payload,
    ) -> Envelope {
        Envelope::seal(&self.identity, suite, key, session, payload)
    }

    /// Handles one swarm event; returns the answer to one of our requests, if it was one.
    async fn step(
        &mut self,
        until: tokio::time::Instant,
    ) -> Result<Option<(request_response::OutboundRequestId, Result<Ack, String>)>, String> {
        let event = tokio::time::timeout_at(until, self.swarm.select_next_some())
            .await
            .map_err(|_| "timed out waiting for the network".to_string())?;
        let (family, ev) = match event {
            SwarmEvent::Behaviour(BehaviourEvent::Dkg(e)) => ("dkg", e),
            SwarmEvent::Behaviour(BehaviourEvent::Sign(e)) => ("sign", e),
            _ => return Ok(None),
        };
        match ev {
            request_response::Event::Message {
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                self.inbox.push_back(request.envelope().clone());
                let rr = if family == "dkg" {
                    &mut self.swarm.behaviour_mut().dkg
                } else {
                    &mut self.swarm.behaviour_mut().sign
                };
                let _ = rr.send_response(channel, Ack::Accepted);
                Ok(None)
            }
            request_response::Event::Message {
                message:
                    request_response::Message::Response {
                        response,
                        request_id,
                    },
                ..
            } => Ok(Some((request_id, Ok(response)))),
            request_response::Event::OutboundFailure {
                error, request_id, ..
            } => Ok(Some((request_id, Err(error.to_string())))),
            _ => Ok(None),
        }
    }

    fn send(&mut self, to: &NodeId, env: Envelope) -> request_response::OutboundRequestId {
        let peer = self.roster.net(to).expect("in roster").peer_id;
        transport::send(&mut self.swarm, &peer, Frame::Deliver(env))
    }

    /// Sends one envelope and returns the answer. A delivery failure (a connection
    /// to a restarted node closing under the request) is retried a few times.
    async fn ask(&mut self, to: &NodeId, env: Envelope) -> Ack {
        let until = tokio::time::Instant::now() + WAIT;
        for _ in 0..5 {
            let id = self.send(to, env.clone());
            loop {
                match self.step(until).await.expect("answer") {
                    Some((rid, Ok(ack))) if rid == id => return ack,
                    Some((rid, Err(e))) if rid == id => {
                        eprintln!("delivery to {to} failed ({e}); sending again");
                        break;
                    }
                    Some((_, Ok(Ack::Rejected { reason, detail }))) => {
                        self.rejections.push((reason, detail))
                    }
                    _ => {}
                }
            }
        }
        panic!("could not deliver to {to}");
    }

    /// The first inbox envelope matching `pred` (waiting for it if needed).
    async fn expect(&mut self, what: &str, pred: impl Fn(&Envelope) -> bool) -> Envelope {
        let until = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(i) = self.inbox.iter().position(&pred) {
                return self.inbox.remove(i).expect("present");
            }
            if let Err(e) = self.step(until).await {
                panic!(
                    "waiting for {what}: {e}; rejections so far: {:?}",
                    self.rejections
                );
            }
        }
    }

    /// Runs a DKG for a fresh key on every node and returns its public data.
    async fn dkg(&mut self, net: &Net, suite: Ciphersuite, t: u16) -> GroupPublic {
        let committee = self
            .roster
            .committee(Some(&net.node_ids()))
            .expect("committee");
        let mut key = [0u8; 16];
        OsRng.fill_bytes(&mut key);
        let key = KeyId(key);
        let session = random_session();
        for node in net.node_ids() {
            let env = self.seal(
                suite,
                key,
                session,
                Payload::DkgStart {
                    threshold: t,
                    committee: committee.clone(),
                    timeout_ms: 60_000,
                    segments: Vec::new(),
                },
            );
            assert_eq!(self.ask(&node, env).await, Ack::Accepted);
        }
        let mut public = None;
        for _ in net.node_ids() {
            let env = self
                .expect("DkgComplete", |e| {
                    e.session == session && matches!(e.payload, Payload::DkgComplete { .. })
                })
                .await;
            if let Payload::DkgComplete { public: p, .. } = env.payload {
                assert!(
                    public.as_ref().is_none_or(|q| *q == p),
                    "nodes derived the same key"
                );
                public = Some(p);
            }
        }
        public.expect("key")
    }

    /// Drives a settlement signing attempt (signers asked with a `SettleRequest`).
    async fn sign_settlement(
        &mut self,
        public: &GroupPublic,
        signers: Vec<NodeId>,
        start: Payload,
        message: Vec<u8>,
    ) -> Vec<u8> {
        let session = random_session();
        let mut agg = Aggregator::with_request_payload(
            self.identity.clone(),
            public,
            AggregatorConfig {
                session,
                signers,
                target: SignTarget {
                    message,
                    tweak: None,
                },
                request: Vec::new(),
                timeout_ms: 60_000,
            },
            start,
        )
        .expect("aggregator");
        let mut input = Input::Start;
        loop {
            let now = Timestamp(self.epoch.elapsed().as_millis() as u64);
            for out in agg.handle(now, input, &mut OsRng).expect("aggregator step") {
                match out {
                    Output::Send { to, msg } => {
                        self.send(&to, msg);
                    }
                    Output::Done(sig) => return sig.signature,
                    _ => {}
                }
            }
            let env = self
                .expect("signing message", |e| e.session == session)
                .await;
            input = Input::Message(env);
        }
    }
}

fn random_session() -> SessionId {
    let mut s = [0u8; 32];
    OsRng.fill_bytes(&mut s);
    SessionId(s)
}

fn rejected(ack: &Ack, want: &str) -> String {
    match ack {
        Ack::Rejected { reason, detail } if reason == want => detail.clone(),
        other => panic!("expected {want}, got {other:?}"),
    }
}

/// The parties' signing keys `Round::new(.., seed)` makes (same RNG steps).
fn party_keys(seed: u64) -> Vec<SigningKey> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    rng.fill_bytes(&mut [0u8; 16]);
    (0..3).map(|_| SigningKey::generate(&mut rng)).collect()
}

/// The audit details of every `kind` entry of node `i`'s log.
fn audit_details(net: &Net, i: usize, kind: &str) -> Vec<serde_json::Value> {
    audit::read_entries(&net.audit_path(i))
        .expect("audit")
        .into_iter()
        .filter(|e| serde_json::to_value(&e.kind).expect("json")["type"] == serde_json::json!(kind))
        .map(|e| e.details)
        .collect()
}

/// Three parties, two instruments in two assets, on the key's committee.
struct Round {
    spec: RoundSpec,
    party_keys: Vec<SigningKey>,
    party_seal: Vec<x25519_dalek::StaticSecret>,
    inputs: Vec<Option<PartyInput>>,
}

impl Round {
    fn new(committee: Committee, key: &GroupPublic, seed: u64) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let mut id = [0u8; 16];
        rng.fill_bytes(&mut id);
        let party_keys: Vec<SigningKey> = (0..3).map(|_| SigningKey::generate(&mut rng)).collect();
        let party_seal: Vec<x25519_dalek::StaticSecret> = (0..3)
            .map(|_| x25519_dalek::StaticSecret::random_from_rng(&mut rng))
            .collect();
        let spec = RoundSpec {
            id: RoundId(id),
            parties: (0..3)
                .map(|p| Party {
                    name: format!("desk-{}", ["a", "b", "c"][p]),
                    sign_key: party_keys[p].verifying_key().to_bytes(),
                    seal_key: x25519_dalek::PublicKey::from(&party_seal[p]).to_bytes(),
                })
                .collect(),
            instruments: vec![
                Instrument {
                    name: "BTC-FUT".into(),
                    kind: InstrumentKind::Future,
                    asset: "USD".into(),
                    multiplier: 10,
                    price_move: -37,
                    premium: 0,
                },
                Instrument {
                    name: "EUR-SWAP".into(),
                    kind: InstrumentKind::Swap,
                    asset: "EUR".into(),
                    multiplier: 100,
                    price_move: 3,
                    premium: 0,
                },
            ],
            cutoff: unix_secs() + 3600,
            key: key.key_id,
            committee,
            threshold: key.threshold,
            bounds: Bounds::default(),
            limits: None,
        };
        spec.validate().expect("valid spec");
        // Mirrored books (every trade booked by both sides), so nets conserve.
        let trades = [
            (0usize, 1usize, 0usize, 25i64, 100i64),
            (1, 2, 1, -4, 50),
            (0, 2, 0, 7, -3),
        ];
        let mut inputs: Vec<PartyInput> = (0..3).map(|_| PartyInput::default()).collect();
        for (p, q, i, qty, cash) in trades {
            for (me, other, s) in [(p, q, 1), (q, p, -1)] {
                inputs[me].positions.push(Position {
                    counterparty: spec.parties[other].name.clone(),
                    instrument: spec.instruments[i].name.clone(),
                    quantity: s * qty,
                    cash: s * cash,
                });
            }
        }
        Self {
            spec,
            party_keys,
            party_seal,
            inputs: inputs.into_iter().map(Some).collect(),
        }
    }

    fn deal(&self, p: usize) -> InputBundle {
        let input = self.inputs[p].as_ref().expect("input");
        deal(
            &self.spec,
            p,
            &self.party_keys[p],
            input,
            unix_secs(),
            &mut OsRng,
        )
        .expect("deal")
    }

    fn env(&self, coord: &Coord, suite: Ciphersuite, payload: Payload) -> Envelope {
        coord.seal(suite, self.spec.key, self.spec.session(), payload)
    }

    fn announce(&self, coord: &Coord, suite: Ciphersuite, client: &SigningKey) -> Envelope {
        self.env(
            coord,
            suite,
            Payload::NettingRound {
                spec: self.spec.clone(),
                authorization: self.spec.authorize(client),
            },
        )
    }

    fn bundle_for(
        &self,
        coord: &Coord,
        suite: Ciphersuite,
        b: &InputBundle,
        position: usize,
    ) -> Envelope {
        let (header, sealed) = b.for_node(position).expect("box");
        self.env(coord, suite, Payload::NettingBundle { header, sealed })
    }

    fn close(&self, coord: &Coord, suite: Ciphersuite, inputs: Vec<Option<[u8; 32]>>) -> Envelope {
        self.env(
            coord,
            suite,
            Payload::NettingClose {
                round: self.spec.id,
                inputs,
            },
        )
    }
}

/// Waits for every node's outputs of `round`: its public outputs and one party
/// message per participating party.
async fn collect_outputs(
    coord: &mut Coord,
    round: &Round,
    nodes: &[NodeId],
    parties: usize,
) -> (Vec<PublicOutputs>, Vec<PartyOutputs>) {
    let session = round.spec.session();
    let mut public = Vec::new();
    let mut party = Vec::new();
    for node in nodes {
        let env = coord
            .expect("NettingPublic", |e| {
                e.session == session
                    && e.sender == *node
                    && matches!(e.payload, Payload::NettingPublic { .. })
            })
            .await;
        if let Payload::NettingPublic { outputs } = env.payload {
            public.push(outputs);
        }
        for _ in 0..parties {
            let env = coord
                .expect("NettingParty", |e| {
                    e.session == session
                        && e.sender == *node
                        && matches!(e.payload, Payload::NettingParty { .. })
                })
                .await;
            if let Payload::NettingParty { outputs } = env.payload {
                party.push(outputs);
            }
        }
    }
    (public, party)
}

async fn setup(net: &Net) -> (Vec<NodeHandle>, Coord, GroupPublic, Committee) {
    if std::env::var("RUST_LOG").is_ok() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .try_init();
    }
    let nodes: Vec<NodeHandle> = (0..net.ids.len()).map(|i| net.start(i)).collect();
    for h in &nodes {
        // Listening before the coordinator dials.
        let until = Instant::now() + WAIT;
        while h.listen_addrs().await.is_empty() {
            assert!(Instant::now() < until, "node never listened");
            tokio::task::yield_now().await;
        }
    }
    let mut coord = Coord::new(net).await;
    let key = coord.dkg(net, Ciphersuite::Ed25519, 2).await;
    let committee = coord
        .roster
        .committee(Some(&net.node_ids()))
        .expect("committee");
    (nodes, coord, key, committee)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_round_opens_to_the_reference_and_its_settlement_is_signed() {
    let _serial = SERIAL.lock().await;
    let net = Net::new(3, 11);
    let (nodes, mut coord, key, committee) = setup(&net).await;
    let suite = key.suite;
    let ids = net.node_ids();
    let round = Round::new(committee, &key, 1);

    for node in &ids {
        let ack = coord
            .ask(node, round.announce(&coord, suite, &net.clearing))
            .await;
        assert_eq!(ack, Ack::Accepted);
    }
    // The same round again is idempotent.
    let again = coord
        .ask(&ids[0], round.announce(&coord, suite, &net.clearing))
        .await;
    assert_eq!(again, Ack::Accepted);

    let bundles: Vec<InputBundle> = (0..3).map(|p| round.deal(p)).collect();
    for b in &bundles {
        for (pos, node) in ids.iter().enumerate() {
            let ack = coord
                .ask(node, round.bundle_for(&coord, suite, b, pos))
                .await;
            assert_eq!(ack, Ack::Accepted, "party {} at node {pos}", b.header.party);
        }
    }
    // A retry of a bundle is accepted, nothing new.
    let retry = coord
        .ask(&ids[1], round.bundle_for(&coord, suite, &bundles[0], 1))
        .await;
    assert_eq!(retry, Ack::Accepted);

    let inputs: Vec<Option<[u8; 32]>> = bundles.iter().map(|b| Some(b.header.digest())).collect();
    for node in &ids {
        let ack = coord
            .ask(node, round.close(&coord, suite, inputs.clone()))
            .await;
        assert_eq!(ack, Ack::Accepted);
    }
    let (views, party_outputs) = collect_outputs(&mut coord, &round, &ids, 3).await;
    assert_eq!(views.len(), 3);
    assert_eq!(party_outputs.len(), 9);

    // Every party opens its result from the nodes' messages; it equals the
    // plaintext reference.
    let spec = &round.spec;
    let participants = vec![true; 3];
    let points: Vec<Option<Vec<_>>> = bundles
        .iter()
        .map(|b| Some(verify::commitments(spec, &b.header).expect("points")))
        .collect();
    let commitments: Vec<Option<&[_]>> = points.iter().map(|p| p.as_deref()).collect();
    let headers: Vec<Option<&BundleHeader>> = bundles.iter().map(|b| Some(&b.header)).collect();
    let net_pts: Vec<Option<Vec<_>>> = bundles
        .iter()
        .map(|b| Some(verify::net_points(spec, &b.header).expect("points")))
        .collect();
    let nets: Vec<Option<&[_]>> = net_pts.iter().map(|p| p.as_deref()).collect();
    let inputs_digest = views[0].inputs_digest;
    let plain = reference::compute(spec, &round.inputs).expect("reference");
    for (p, want) in plain.iter().enumerate() {
        let mine: Vec<PartyOutputs> = party_outputs
            .iter()
            .filter(|o| o.party == p as u32)
            .cloned()
            .collect();
        assert_eq!(mine.len(), 3, "one message per node for party {p}");
        let got = open_result(
            spec,
            &Published {
                participants: &participants,
                inputs_digest,
                headers: &headers,
                commitments: &commitments,
            },
            p,
            &round.party_seal[p],
            &mine,
            &mut OsRng,
        )
        .expect("result opens");
        let want = want.as_ref().expect("participant");
        assert!(
            got.culprits.is_empty(),
            "honest nodes blamed: {:?}",
            got.culprits
        );
        assert_eq!(got.bilateral.len(), want.bilateral.len());
        for b in &got.bilateral {
            assert_eq!(
                i128::from(b.net),
                want.bilateral[&(b.counterparty.clone(), b.asset.clone())],
                "party {p} bilateral {b:?}"
            );
        }
        assert_eq!(got.multilateral.len(), want.multilateral.len());
        for (asset, net) in &got.multilateral {
            assert_eq!(
                i128::from(*net),
                want.multilateral[asset],
                "party {p} {asset}"
            );
        }
        assert!(got.mismatches.is_empty() && want.mismatches.is_empty());
    }

    // A repeated close with the same inputs re-sends the same public outputs.
    let ack = coord
        .ask(&ids[2], round.close(&coord, suite, inputs.clone()))
        .await;
    assert_eq!(ack, Ack::Accepted);
    let (again, _) = collect_outputs(&mut coord, &round, &ids[2..], 3).await;
    assert_eq!(again[0], views[2]);

    // Settlement: the coordinator builds the batch from the views; the nodes
    // rebuild it themselves and threshold-sign exactly its message.
    let (batch, culprits) = settle(
        spec,
        &participants,
        inputs_digest,
        &nets,
        &views,
        &mut OsRng,
    )
    .expect("batch");
    assert!(culprits.is_empty());
    let message = batch.message().to_vec();
    let request = Payload::SettleRequest {
        round: spec.id,
        views: views.clone(),
        message: message.clone(),
    };
    let signature = coord
        .sign_settlement(&key, ids[..2].to_vec(), request, message.clone())
        .await;
    key.verify(&message, &signature, None)
        .expect("settlement signature verifies");

    // A request whose message is not the batch is refused, naming the round.
    let wrong = coord.seal(
        suite,
        key.key_id,
        random_session(),
        Payload::SettleRequest {
            round: spec.id,
            views,
            message: vec![0; 32],
        },
    );
    let detail = rejected(
        &coord.ask(&ids[2], wrong).await,
        "netting:settlement_mismatch",
    );
    assert!(detail.contains(&spec.id.to_string()), "{detail}");

    for h in nodes {
        h.stop().await.expect("stop");
    }
    for i in 0..3 {
        let report = audit::verify(&net.audit_path(i), Some(net.ids[i].node_id())).expect("verify");
        assert!(report.first_bad.is_none(), "{report:?}");
        let kinds = net.audit_kinds(i);
        assert_eq!(
            kinds.matches("netting_round_accepted").count(),
            1,
            "{kinds}"
        );
        assert_eq!(
            kinds.matches("netting_bundle_accepted").count(),
            3,
            "{kinds}"
        );
        assert_eq!(kinds.matches("netting_closed").count(), 1, "{kinds}");
        if i < 2 {
            assert_eq!(kinds.matches("settlement_approved").count(), 1, "{kinds}");
            assert_eq!(kinds.matches("share_contributed").count(), 1, "{kinds}");
        }
        // Nothing of the shares or amounts reaches the log.
        let text = std::fs::read_to_string(net.audit_path(i)).expect("log");
        assert!(!text.contains("\"amount\""), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rounds_and_bundles_are_refused_alone_and_the_round_goes_on() {
    let _serial = SERIAL.lock().await;
    let mut net = Net::new(3, 12);
    net.no_settlement = vec![2];
    let (nodes, mut coord, key, committee) = setup(&net).await;
    let suite = key.suite;
    let ids = net.node_ids();
    let round = Round::new(committee, &key, 2);

    // A client without `netting = true` cannot create a round.
    let ack = coord
        .ask(&ids[0], round.announce(&coord, suite, &net.exchange))
        .await;
    let detail = rejected(&ack, "netting:not_authorized");
    assert!(detail.contains("exchange"), "{detail}");
    // A bundle for a round the node does not hold.
    let b0 = round.deal(0);
    let ack = coord
        .ask(&ids[0], round.bundle_for(&coord, suite, &b0, 0))
        .await;
    rejected(&ack, "netting:unknown_round");

    for node in &ids {
        let ack = coord
            .ask(node, round.announce(&coord, suite, &net.clearing))
            .await;
        assert_eq!(ack, Ack::Accepted);
    }

    // A bundle with a bad signature is refused naming the party.
    let mut forged = round.deal(1);
    forged.header.signature[0] ^= 1;
    let ack = coord
        .ask(&ids[0], round.bundle_for(&coord, suite, &forged, 0))
        .await;
    let detail = rejected(&ack, "netting:bad_bundle");
    assert!(detail.contains("desk-b"), "{detail}");

    // Another node's box (its digest is signed for that node) is refused here.
    let b1 = round.deal(1);
    let ack = coord
        .ask(&ids[0], round.bundle_for(&coord, suite, &b1, 1))
        .await;
    let detail = rejected(&ack, "netting:bad_bundle");
    assert!(detail.contains("desk-b"), "{detail}");

    // The round goes on: every party's good bundle is accepted everywhere.
    let bundles: Vec<InputBundle> = [b0, b1, round.deal(2)].into();
    for b in &bundles {
        for (pos, node) in ids.iter().enumerate() {
            let ack = coord
                .ask(node, round.bundle_for(&coord, suite, b, pos))
                .await;
            assert_eq!(ack, Ack::Accepted);
        }
    }
    // A second, different bundle from the same party is refused naming it.
    let other = round.deal(2);
    let ack = coord
        .ask(&ids[1], round.bundle_for(&coord, suite, &other, 1))
        .await;
    let detail = rejected(&ack, "netting:bad_bundle");
    assert!(detail.contains("desk-c"), "{detail}");

    // A close listing another bundle than the node holds names the party (a
    // bundle listed `None` is not a mismatch: it is left out, see
    // `a_held_bundle_listed_absent_is_left_out_and_settlement_limits_hold`).
    let mut wrong = bundles
        .iter()
        .map(|b| Some(b.header.digest()))
        .collect::<Vec<_>>();
    wrong[2] = Some(other.header.digest());
    let ack = coord.ask(&ids[0], round.close(&coord, suite, wrong)).await;
    let detail = rejected(&ack, "netting:input_mismatch");
    assert!(detail.contains("desk-c"), "{detail}");

    let inputs: Vec<Option<[u8; 32]>> = bundles.iter().map(|b| Some(b.header.digest())).collect();
    for node in &ids {
        let ack = coord
            .ask(node, round.close(&coord, suite, inputs.clone()))
            .await;
        assert_eq!(ack, Ack::Accepted);
    }
    let (views, _) = collect_outputs(&mut coord, &round, &ids, 3).await;
    assert_eq!(views.len(), 3);

    // Settlement: a node whose policy lists no settlement keys refuses; another
    // signs a round's batch in at most n − t + 1 = 2 sessions.
    let spec = &round.spec;
    let net_pts: Vec<Option<Vec<_>>> = bundles
        .iter()
        .map(|b| Some(verify::net_points(spec, &b.header).expect("points")))
        .collect();
    let nets: Vec<Option<&[_]>> = net_pts.iter().map(|p| p.as_deref()).collect();
    let (batch, _) = settle(
        spec,
        &[true; 3],
        views[0].inputs_digest,
        &nets,
        &views,
        &mut OsRng,
    )
    .expect("batch");
    let settle_request = |coord: &Coord| {
        coord.seal(
            suite,
            key.key_id,
            random_session(),
            Payload::SettleRequest {
                round: spec.id,
                views: views.clone(),
                message: batch.message().to_vec(),
            },
        )
    };
    let ack = coord.ask(&ids[2], settle_request(&coord)).await;
    rejected(&ack, "netting:settlement_not_allowed");
    for _ in 0..2 {
        assert_eq!(
            coord.ask(&ids[0], settle_request(&coord)).await,
            Ack::Accepted
        );
    }
    let ack = coord.ask(&ids[0], settle_request(&coord)).await;
    rejected(&ack, "netting:too_many_attempts");

    // After close: another bundle is refused, a retry of a kept one is still
    // fine, and a close on other inputs is refused.
    let ack = coord
        .ask(&ids[0], round.bundle_for(&coord, suite, &other, 0))
        .await;
    rejected(&ack, "netting:bad_bundle");
    let ack = coord
        .ask(&ids[0], round.bundle_for(&coord, suite, &bundles[0], 0))
        .await;
    assert_eq!(ack, Ack::Accepted);
    let ack = coord
        .ask(&ids[0], round.close(&coord, suite, vec![None; 3]))
        .await;
    rejected(&ack, "netting:closed");

    // A settlement request for an unknown round, from a coordinator, is refused alone.
    let unknown = coord.seal(
        suite,
        key.key_id,
        random_session(),
        Payload::SettleRequest {
            round: RoundId([0xee; 16]),
            views,
            message: vec![0; 32],
        },
    );
    rejected(&coord.ask(&ids[0], unknown).await, "netting:unknown_round");

    // The node still serves: a fresh DKG runs.
    let _ = coord.dkg(&net, Ciphersuite::Ed25519, 2).await;

    for h in nodes {
        h.stop().await.expect("stop");
    }
    let kinds = net.audit_kinds(0);
    assert!(kinds.contains("netting_bundle_refused"), "{kinds}");
    let log = std::fs::read_to_string(net.audit_path(0)).expect("log");
    assert!(
        log.contains("netting:bad_bundle") && log.contains("desk-b"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_after_close_is_refused_as_closed() {
    let _serial = SERIAL.lock().await;
    let net = Net::new(3, 13);
    let (nodes, mut coord, key, committee) = setup(&net).await;
    let suite = key.suite;
    let ids = net.node_ids();
    let round = Round::new(committee, &key, 3);
    for node in &ids {
        assert_eq!(
            coord
                .ask(node, round.announce(&coord, suite, &net.clearing))
                .await,
            Ack::Accepted
        );
    }
    let bundles: Vec<InputBundle> = (0..2).map(|p| round.deal(p)).collect();
    for b in &bundles {
        for (pos, node) in ids.iter().enumerate() {
            assert_eq!(
                coord
                    .ask(node, round.bundle_for(&coord, suite, b, pos))
                    .await,
                Ack::Accepted
            );
        }
    }
    let mut inputs: Vec<Option<[u8; 32]>> =
        bundles.iter().map(|b| Some(b.header.digest())).collect();
    inputs.push(None);
    for node in &ids {
        assert_eq!(
            coord
                .ask(node, round.close(&coord, suite, inputs.clone()))
                .await,
            Ack::Accepted
        );
    }
    // Two participants: one party message each per node.
    let _ = collect_outputs(&mut coord, &round, &ids, 2).await;
    let late = round.deal(2);
    let ack = coord
        .ask(&ids[0], round.bundle_for(&coord, suite, &late, 0))
        .await;
    let detail = rejected(&ack, "netting:closed");
    assert!(detail.contains("desk-c"), "{detail}");
    for h in nodes {
        h.stop().await.expect("stop");
    }
    let log = std::fs::read_to_string(net.audit_path(0)).expect("log");
    assert!(log.contains("netting:closed"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_rounds_and_accepted_bundles() {
    let _serial = SERIAL.lock().await;
    let net = Net::new(3, 14);
    let (mut nodes, mut coord, key, committee) = setup(&net).await;
    let suite = key.suite;
    let ids = net.node_ids();
    let round = Round::new(committee, &key, 4);
    for node in &ids {
        assert_eq!(
            coord
                .ask(node, round.announce(&coord, suite, &net.clearing))
                .await,
            Ack::Accepted
        );
    }
    let bundles: Vec<InputBundle> = (0..3).map(|p| round.deal(p)).collect();
    for b in &bundles {
        for (pos, node) in ids.iter().enumerate() {
            assert_eq!(
                coord
                    .ask(node, round.bundle_for(&coord, suite, b, pos))
                    .await,
                Ack::Accepted
            );
        }
    }
    // Restart node 0.
    let first = nodes.remove(0);
    first.stop().await.expect("stop");
    nodes.insert(0, net.start(0));
    let until = Instant::now() + WAIT;
    while nodes[0].listen_addrs().await.is_empty() {
        assert!(Instant::now() < until, "node never listened");
        tokio::task::yield_now().await;
    }
    // It still holds the round and every bundle: a different bundle from a party
    // is refused as a second one.
    let other = round.deal(1);
    let ack = coord
        .ask(&ids[0], round.bundle_for(&coord, suite, &other, 0))
        .await;
    let detail = rejected(&ack, "netting:bad_bundle");
    assert!(detail.contains("desk-b"), "{detail}");
    // And it closes on them with the others.
    let inputs: Vec<Option<[u8; 32]>> = bundles.iter().map(|b| Some(b.header.digest())).collect();
    for node in &ids {
        assert_eq!(
            coord
                .ask(node, round.close(&coord, suite, inputs.clone()))
                .await,
            Ack::Accepted
        );
    }
    let (views, _) = collect_outputs(&mut coord, &round, &ids, 3).await;
    assert!(views
        .iter()
        .all(|v| v.inputs_digest == views[0].inputs_digest));
    for h in nodes {
        h.stop().await.expect("stop");
    }
    let kinds = net.audit_kinds(0);
    assert_eq!(
        kinds.matches("netting_bundle_accepted").count(),
        3,
        "{kinds}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_bundle_listed_absent_is_left_out_and_settlement_limits_hold() {
    let _serial = SERIAL.lock().await;
    let mut net = Net::new(3, 15);
    // Node 1 signs only listed assets (both are); node 2 signs no USD transfer.
    net.netting_extra = vec![
        "default_max_transfer = 1_000_000_000_000".into(),
        "require_limits = true\nmax_transfer = { USD = 1_000_000_000_000, EUR = 1_000_000_000_000 }"
            .into(),
        "max_transfer = { USD = 0 }".into(),
    ];
    let (nodes, mut coord, key, committee) = setup(&net).await;
    let suite = key.suite;
    let ids = net.node_ids();
    let mut round = Round::new(committee, &key, 5);
    // desk-a and desk-b book only their trade with each other, so the batch
    // without desk-c conserves.
    for input in round.inputs[..2].iter_mut().flatten() {
        input.positions.retain(|p| p.counterparty != "desk-c");
    }
    for node in &ids {
        let ack = coord
            .ask(node, round.announce(&coord, suite, &net.clearing))
            .await;
        assert_eq!(ack, Ack::Accepted);
    }
    // desk-a and desk-b reach every node; desk-c's bundle reaches node 0 only (as
    // if nodes 1 and 2 had refused it or never got it).
    let bundles: Vec<InputBundle> = (0..3).map(|p| round.deal(p)).collect();
    for b in &bundles[..2] {
        for (pos, node) in ids.iter().enumerate() {
            let ack = coord
                .ask(node, round.bundle_for(&coord, suite, b, pos))
                .await;
            assert_eq!(ack, Ack::Accepted);
        }
    }
    let ack = coord
        .ask(&ids[0], round.bundle_for(&coord, suite, &bundles[2], 0))
        .await;
    assert_eq!(ack, Ack::Accepted);

    // A close listing a bundle a node does not hold is refused naming the party.
    let all: Vec<Option<[u8; 32]>> = bundles.iter().map(|b| Some(b.header.digest())).collect();
    let detail = rejected(
        &coord
            .ask(&ids[1], round.close(&coord, suite, all.clone()))
            .await,
        "netting:input_mismatch",
    );
    assert!(
        detail.contains("desk-c") && detail.contains("does not hold"),
        "{detail}"
    );

    // The close lists desk-c as absent: every node closes, node 0 without the
    // bundle it holds.
    let mut inputs = all;
    inputs[2] = None;
    for node in &ids {
        let ack = coord
            .ask(node, round.close(&coord, suite, inputs.clone()))
            .await;
        assert_eq!(ack, Ack::Accepted);
    }
    let (views, party_outputs) = collect_outputs(&mut coord, &round, &ids, 2).await;
    assert_eq!(
        party_outputs.len(),
        6,
        "two participants, one message per node each"
    );
    assert!(
        views
            .iter()
            .all(|v| v.inputs_digest == views[0].inputs_digest),
        "every node computed on the same inputs"
    );
    // A repeated close re-sends node 0's outputs (idempotent, desk-c still out).
    let ack = coord
        .ask(&ids[0], round.close(&coord, suite, inputs.clone()))
        .await;
    assert_eq!(ack, Ack::Accepted);
    let (again, _) = collect_outputs(&mut coord, &round, &ids[..1], 2).await;
    assert_eq!(again[0], views[0]);

    // The batch over the two participants.
    let spec = &round.spec;
    let participants = [true, true, false];
    let net_pts: Vec<Option<Vec<_>>> = bundles
        .iter()
        .zip(participants)
        .map(|(b, p)| p.then(|| verify::net_points(spec, &b.header).expect("points")))
        .collect();
    let nets: Vec<Option<&[_]>> = net_pts.iter().map(|p| p.as_deref()).collect();
    let (batch, culprits) = settle(
        spec,
        &participants,
        views[0].inputs_digest,
        &nets,
        &views,
        &mut OsRng,
    )
    .expect("batch");
    assert!(culprits.is_empty());
    assert!(
        batch.transfers.iter().all(|t| t.party != "desk-c"),
        "{:?}",
        batch.transfers
    );
    let usd = batch
        .transfers
        .iter()
        .find(|t| t.asset == "USD" && t.amount != 0)
        .expect("a USD transfer")
        .clone();
    let message = batch.message().to_vec();

    // Node 2's limit refuses the batch, naming party and asset; audited.
    let request = |views: Vec<PublicOutputs>| Payload::SettleRequest {
        round: spec.id,
        views,
        message: message.clone(),
    };
    let refused = coord.seal(suite, key.key_id, random_session(), request(views.clone()));
    let detail = rejected(
        &coord.ask(&ids[2], refused).await,
        "netting:settlement_limit",
    );
    assert!(
        detail.contains("USD") && detail.contains(&usd.party),
        "{detail}"
    );

    // Nodes 0 and 1 sign even though node 2's view carries a wrong public share
    // (validly signed by node 2, so it proves node 2 wrong); they name node 2.
    let mut forged = views.clone();
    let bad = forged
        .iter_mut()
        .find(|v| v.node == ids[2])
        .expect("node 2's view");
    bad.public[0] ^= 1;
    let node2_key = {
        let secret = net.ids[2].to_secret_bytes();
        let mut seed = [0u8; 32];
        seed.copy_from_slice(&secret[..32]);
        SigningKey::from_bytes(&seed)
    };
    bad.signature = ed25519_dalek::Signer::sign(&node2_key, &bad.digest())
        .to_bytes()
        .to_vec();
    let signature = coord
        .sign_settlement(&key, ids[..2].to_vec(), request(forged), message.clone())
        .await;
    key.verify(&message, &signature, None)
        .expect("settlement signature verifies");
    let culprit = format!(
        "quorate_settlement_culprits_total{{label=\"{}\"}} 1",
        ids[2]
    );
    for m in &net.metrics[..2] {
        let text = m.render();
        assert!(text.contains(&culprit), "{text}");
    }

    for h in nodes {
        h.stop().await.expect("stop");
    }
    let closed = audit_details(&net, 0, "netting_closed");
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0]["left_out"], serde_json::json!(["desk-c"]));
    assert_eq!(closed[0]["participants"], serde_json::json!(2));
    for i in 1..3 {
        let closed = audit_details(&net, i, "netting_closed");
        assert_eq!(closed[0]["left_out"], serde_json::json!([]));
    }
    let refusals = audit_details(&net, 2, "settlement_refused");
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    // The nodes that signed quarantined node 2 on the evidence of its signed share.
    for i in 0..2 {
        let q = audit_details(&net, i, "peer_quarantined");
        assert_eq!(q.len(), 1, "{q:?}");
        assert!(
            q[0]["reason"]
                .as_str()
                .is_some_and(|r| r.contains("public share")),
            "{q:?}"
        );
    }
    assert_eq!(refusals[0]["rule"], serde_json::json!("settlement_limit"));
    let text = refusals[0]["detail"].as_str().expect("detail");
    assert!(text.contains(&usd.party) && text.contains("USD"), "{text}");
    assert!(net.audit_kinds(2).matches("settlement_approved").count() == 0);
    for i in 0..2 {
        assert_eq!(net.audit_kinds(i).matches("settlement_approved").count(), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rounds_are_bounded_by_pinned_parties_horizon_and_per_client_count() {
    let _serial = SERIAL.lock().await;
    let mut net = Net::new(3, 16);
    // `pinned` may only name round 5's parties, with their keys.
    let pinned = SigningKey::generate(&mut ChaCha20Rng::seed_from_u64(1600));
    let keys = party_keys(5);
    net.clients_extra = format!(
        "[clients.pinned]\npublic_key = \"{}\"\nkeys = [\"*\"]\nnetting = true\n\
         netting_parties = {{ \"desk-a\" = \"{}\", \"desk-b\" = \"{}\", \"desk-c\" = \"{}\" }}\n",
        hex::encode(pinned.verifying_key().to_bytes()),
        hex::encode(keys[0].verifying_key().to_bytes()),
        hex::encode(keys[1].verifying_key().to_bytes()),
        hex::encode(keys[2].verifying_key().to_bytes()),
    );
    net.limits.max_netting_rounds_per_client = 2;
    let (nodes, mut coord, key, committee) = setup(&net).await;
    let suite = key.suite;
    let ids = net.node_ids();
    let node = ids[0];

    // Pinned parties: exactly the listed keys are accepted.
    let good = Round::new(committee.clone(), &key, 5);
    let ack = coord
        .ask(&node, good.announce(&coord, suite, &pinned))
        .await;
    assert_eq!(ack, Ack::Accepted);
    // Other keys under the listed names: refused naming the first party.
    let other_keys = Round::new(committee.clone(), &key, 6);
    let detail = rejected(
        &coord
            .ask(&node, other_keys.announce(&coord, suite, &pinned))
            .await,
        "netting:not_authorized",
    );
    assert!(
        detail.contains("desk-a") && detail.contains("sign_key"),
        "{detail}"
    );
    // A party not listed at all.
    let mut unlisted = Round::new(committee.clone(), &key, 5);
    unlisted.spec.id = RoundId([0x51; 16]);
    unlisted.spec.parties[2].name = "desk-z".into();
    let detail = rejected(
        &coord
            .ask(&node, unlisted.announce(&coord, suite, &pinned))
            .await,
        "netting:not_authorized",
    );
    assert!(
        detail.contains("desk-z") && detail.contains("netting_parties"),
        "{detail}"
    );
    // Without netting_parties (the clearing client) any parties are accepted.
    let first = Round::new(committee.clone(), &key, 7);
    let ack = coord
        .ask(&node, first.announce(&coord, suite, &net.clearing))
        .await;
    assert_eq!(ack, Ack::Accepted);

    // A cut-off more than 7 days ahead is refused.
    let mut far = Round::new(committee.clone(), &key, 8);
    far.spec.cutoff = unix_secs() + 8 * 86_400;
    let detail = rejected(
        &coord
            .ask(&node, far.announce(&coord, suite, &net.clearing))
            .await,
        "netting:invalid_round",
    );
    assert!(detail.contains("max_netting_horizon_secs"), "{detail}");

    // Per client: its second round fits, its third is busy; another client's
    // round is still accepted, and a re-announce of a held round is fine.
    let second = Round::new(committee.clone(), &key, 9);
    let ack = coord
        .ask(&node, second.announce(&coord, suite, &net.clearing))
        .await;
    assert_eq!(ack, Ack::Accepted);
    let third = Round::new(committee.clone(), &key, 10);
    let detail = rejected(
        &coord
            .ask(&node, third.announce(&coord, suite, &net.clearing))
            .await,
        "netting:busy",
    );
    assert!(
        detail.contains("clearing") && detail.contains("max_netting_rounds_per_client"),
        "{detail}"
    );
    let ack = coord
        .ask(&node, first.announce(&coord, suite, &net.clearing))
        .await;
    assert_eq!(ack, Ack::Accepted);
    let mut pinned_second = Round::new(committee.clone(), &key, 5);
    pinned_second.spec.id = RoundId([0x52; 16]);
    let ack = coord
        .ask(&node, pinned_second.announce(&coord, suite, &pinned))
        .await;
    assert_eq!(ack, Ack::Accepted);

    let _ = coord.dkg(&net, Ciphersuite::Ed25519, 2).await;

    for h in nodes {
        h.stop().await.expect("stop");
    }
    assert_eq!(
        audit_details(&net, 0, "netting_round_accepted").len(),
        4,
        "{}",
        net.audit_kinds(0)
    );
}

/// Runs the limit checks of a closed round with the test coordinator as king:
/// `LimitStart` to every node, then every step's parts back and forth until each
/// node delivered its `LimitResult`. Returns the verdicts and bits by node.
async fn run_limit_checks(
    coord: &mut Coord,
    round: &Round,
    suite: Ciphersuite,
    nodes: &[NodeId],
    inputs_digest: [u8; 32],
) -> Vec<(
    quorate_protocol::netting::limits::verdict::LimitVerdict,
    Vec<quorate_protocol::netting::limits::verdict::LimitBits>,
)> {
    use quorate_protocol::netting::limits::run::KingLimits;
    let spec = &round.spec;
    let session = spec.session();
    let participants = vec![true; spec.parties.len()];
    let mut king = KingLimits::new(spec, &participants, &inputs_digest, 1).expect("king");
    for node in nodes {
        let start = round.env(
            coord,
            suite,
            Payload::LimitStart {
                round: spec.id,
                attempt: 1,
            },
        );
        assert_eq!(coord.ask(node, start).await, Ack::Accepted);
    }
    let mut results = vec![None; nodes.len()];
    while results.iter().any(Option::is_none) {
        let env = coord
            .expect(
                &format!(
                    "a limit-check message (king at step {}, waiting for {:?})",
                    king.step(),
                    king.waiting_for()
                ),
                |e| {
                    e.session == session
                        && matches!(
                            e.payload,
                            Payload::LimitPart { .. } | Payload::LimitResult { .. }
                        )
                },
            )
            .await;
        let pos = nodes.iter().position(|n| *n == env.sender).expect("member");
        match env.payload {
            Payload::LimitResult { verdict, bits } => results[pos] = Some((verdict, bits)),
            Payload::LimitPart {
                step,
                part,
                parts,
                bytes,
                ..
            } => {
                let Some(answers) = king
                    .on_part(spec, &env.sender, step, part, parts, bytes)
                    .expect("king step")
                else {
                    continue;
                };
                for (to, payloads) in answers {
                    for p in payloads {
                        let env = round.env(coord, suite, p);
                        assert_eq!(coord.ask(&to, env).await, Ack::Accepted, "part to {to}");
                    }
                }
            }
            _ => unreachable!(),
        }
    }
    results.into_iter().map(|r| r.expect("result")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_checked_round_releases_nets_only_when_covered_and_never_settles_uncovered() {
    use quorate_protocol::netting::{
        input::Cover, limits::verdict::open_bits, round::LimitSettings,
    };
    let _serial = SERIAL.lock().await;
    let net = Net::new(3, 21);
    let (_nodes, mut coord, key, committee) = setup(&net).await;
    let suite = key.suite;
    let ids = net.node_ids();
    // desk-a's USD net is −11743, desk-b's EUR net −1150 (see Round::new's trades).
    for (seed, a_cover, want_covered) in [(31u64, 11_743i64, true), (32, 11_742, false)] {
        let mut round = Round::new(committee.clone(), &key, seed);
        round.spec.limits = Some(LimitSettings {
            max_cover: 1 << 40,
            reveal_failures: true,
            efficiency: true,
        });
        round.spec.validate().expect("valid limit-checked round");
        let cover = |asset: &str, collateral: i64, limit: i64| Cover {
            asset: asset.into(),
            collateral,
            limit,
        };
        round.inputs[0].as_mut().expect("a").cover = vec![cover("USD", a_cover - 1_000, 1_000)];
        round.inputs[1].as_mut().expect("b").cover = vec![cover("EUR", 1_150, 0)];
        for node in &ids {
            let ack = coord
                .ask(node, round.announce(&coord, suite, &net.clearing))
                .await;
            assert_eq!(ack, Ack::Accepted);
        }
        let bundles: Vec<InputBundle> = (0..3).map(|p| round.deal(p)).collect();
        for b in &bundles {
            for (pos, node) in ids.iter().enumerate() {
                let ack = coord
                    .ask(node, round.bundle_for(&coord, suite, b, pos))
                    .await;
                assert_eq!(ack, Ack::Accepted);
            }
        }
        let inputs: Vec<Option<[u8; 32]>> =
            bundles.iter().map(|b| Some(b.header.digest())).collect();
        for node in &ids {
            let ack = coord
                .ask(node, round.close(&coord, suite, inputs.clone()))
                .await;
            assert_eq!(ack, Ack::Accepted);
        }
        let session = round.spec.session();
        for node in &ids {
            for _ in 0..3 {
                coord
                    .expect("NettingParty", |e| {
                        e.session == session
                            && e.sender == *node
                            && matches!(e.payload, Payload::NettingParty { .. })
                    })
                    .await;
            }
        }
        assert!(
            !coord.inbox.iter().any(|e| e.session == session && matches!(e.payload, Payload::NettingPublic { .. })),
            "public outputs of a limit-checked round left before its verdict"
        );
        let digest = quorate_protocol::netting::open::inputs_digest(&round.spec, &inputs);
        let results = run_limit_checks(&mut coord, &round, suite, &ids, digest).await;
        for (v, _) in &results {
            v.check(&round.spec).expect("signed verdict");
            assert_eq!(v.covered, want_covered, "seed {seed}");
            assert_eq!(v.statement(), results[0].0.statement());
            let failed: Vec<String> = if want_covered {
                vec![]
            } else {
                vec!["desk-a".into()]
            };
            assert_eq!(v.failed, failed);
        }
        // desk-a opens its own bits.
        let bits: Vec<_> = results.iter().map(|(_, b)| b[0].clone()).collect();
        let own =
            open_bits(&round.spec, 0, &round.party_seal[0], &digest, &bits).expect("own bits");
        let usd = own.iter().find(|b| b.asset == "USD").expect("USD bit");
        assert_eq!(usd.covered, Some(want_covered));
        if want_covered {
            for node in &ids {
                coord
                    .expect("NettingPublic after a covered verdict", |e| {
                        e.session == session
                            && e.sender == *node
                            && matches!(e.payload, Payload::NettingPublic { .. })
                    })
                    .await;
            }
        } else {
            assert!(!coord.inbox.iter().any(
                |e| e.session == session && matches!(e.payload, Payload::NettingPublic { .. })
            ));
            let req = round.env(
                &coord,
                suite,
                Payload::SettleRequest {
                    round: round.spec.id,
                    views: Vec::new(),
                    message: vec![0; 32],
                },
            );
            let ack = coord.ask(&ids[0], req).await;
            assert!(
                rejected(&ack, "netting:not_covered").contains("not settled"),
                "{ack:?}"
            );
        }
        let kinds = net.audit_kinds(0);
        assert!(
            kinds.contains("limit_check_started") && kinds.contains("limit_verdict"),
            "{kinds}"
        );
    }
}
