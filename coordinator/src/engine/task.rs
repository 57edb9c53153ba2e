//! The engine's event loop.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use futures::StreamExt;
use libp2p::{request_response, swarm::SwarmEvent, PeerId, Swarm};
use quorate_protocol::{
    roster::Roster,
    wire::frame::{Ack, Frame},
    AttestedKey, Envelope, GroupPublic, KeyAttestation, KeyId, NodeId, NodeIdentity, Payload,
    SessionId,
};
use rand_core::{OsRng, RngCore};
use tokio::sync::{mpsc, oneshot};

use super::{
    lifecycle::Lifecycle,
    netting::{Netting, Tag, Timeouts},
    p2p::{self, Behaviour, BehaviourEvent},
    select::{self, Candidate},
    signing::{load::Load, Signing},
    Command, EngineConfig, NodeStatus,
};
use crate::{
    error::CoordinatorError,
    types::{KeyRecord, KeySpec, Participants},
};

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn random_session() -> SessionId {
    let mut s = [0u8; 32];
    OsRng.fill_bytes(&mut s);
    SessionId(s)
}

struct DkgRun {
    participants: Vec<NodeId>,
    reports: BTreeMap<NodeId, (GroupPublic, KeyAttestation)>,
    deadline: Instant,
    reply: Option<oneshot::Sender<Result<KeyRecord, CoordinatorError>>>,
}

pub(crate) struct Task {
    pub(super) identity: std::sync::Arc<NodeIdentity>,
    roster: Roster,
    swarm: Swarm<Behaviour>,
    rx: mpsc::Receiver<Command>,
    dkg_timeout: Duration,
    connected: BTreeSet<PeerId>,
    dkgs: BTreeMap<SessionId, DkgRun>,
    pub(super) signing: Signing,
    /// libp2p peer id of every roster member (computed once: it decodes a point).
    peers: BTreeMap<NodeId, PeerId>,
    /// The roster member behind each peer id.
    nodes: BTreeMap<PeerId, NodeId>,
    outbound: BTreeMap<request_response::OutboundRequestId, (SessionId, NodeId)>,
    netting: Netting,
    /// Live refresh and reshare runs.
    lifecycle: Lifecycle,
    /// Live share repairs.
    repairs: super::lifecycle::repair::Repairs,
    counters: std::sync::Arc<super::Counters>,
}

impl Task {
    pub(crate) fn new(
        config: EngineConfig,
        rx: mpsc::Receiver<Command>,
        counters: std::sync::Arc<super::Counters>,
        limits: crate::settings::ConnectionLimits,
        options: super::NettingOptions,
    ) -> Result<Self, CoordinatorError> {
        let me = config.identity.node_id();
        if !config.roster.is_coordinator(&me) {
            return Err(CoordinatorError::Transport(format!(
                "this coordinator ({me}) is not in the roster"
            )));
        }
        let mut allowed = Vec::new();
        for p in config.roster.peers() {
            if p.node == me {
                continue;
            }
            let id = p2p::peer_id(&p.node)
                .ok_or_else(|| CoordinatorError::Transport(format!("{}: bad node id", p.name)))?;
            allowed.push(id);
        }
        let mut swarm =
            p2p::build(&config.identity, &allowed, limits).map_err(CoordinatorError::Transport)?;
        for p in config.roster.peers() {
            let Some(id) = p2p::peer_id(&p.node) else {
                continue;
            };
            for a in &p.addresses {
                let addr = a.parse().map_err(|e| {
                    CoordinatorError::Transport(format!("{}: address {a}: {e}", p.name))
                })?;
                swarm.add_peer_address(id, addr);
            }
        }
        for a in &config.listen {
            let addr = a
                .parse()
                .map_err(|e| CoordinatorError::Transport(format!("listen {a}: {e}")))?;
            swarm
                .listen_on(addr)
                .map_err(|e| CoordinatorError::Transport(format!("listen {a}: {e}")))?;
        }
        let peers: BTreeMap<NodeId, PeerId> = config
            .roster
            .peers()
            .iter()
            .filter_map(|p| Some((p.node, p2p::peer_id(&p.node)?)))
            .collect();
        let names = config
            .roster
            .signers()
            .map(|p| (p.node, p.name.clone()))
            .collect();
        let netting = Netting::new(
            config.identity.clone(),
            config.roster.clone(),
            Timeouts {
                ack: Duration::from_millis(config.session_timeout_ms),
                close: Duration::from_millis(config.dkg_timeout_ms),
                sign: Duration::from_millis(config.session_timeout_ms),
                limits: Duration::from_millis(options.limits_timeout_ms),
            },
        );
        Ok(Self {
            netting,
            identity: config.identity,
            roster: config.roster,
            swarm,
            rx,
            dkg_timeout: Duration::from_millis(config.dkg_timeout_ms),
            connected: BTreeSet::new(),
            dkgs: BTreeMap::new(),
            peers: peers.clone(),
            nodes: peers.iter().map(|(n, p)| (*p, *n)).collect(),
            signing: Signing::new(
                Load::new(names, counters.signer_sessions.clone()),
                Duration::from_millis(config.session_timeout_ms),
            ),
            outbound: BTreeMap::new(),
            lifecycle: Lifecycle::default(),
            repairs: Default::default(),
            counters,
        })
    }

    pub(crate) async fn run(mut self) {
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm(event),
                cmd = self.rx.recv() => match cmd {
                    Some(Command::Shutdown) | None => break,
                    Some(c) => self.on_command(c),
                },
                _ = tick.tick() => self.on_tick(),
            }
        }
        for (_, d) in std::mem::take(&mut self.dkgs) {
            if let Some(r) = d.reply {
                let _ = r.send(Err(CoordinatorError::Shutdown));
            }
        }
        self.signing.shutdown();
        self.netting.shutdown();
        self.lifecycle.shutdown();
        self.repairs.shutdown();
    }

    /// Signers of the roster (`among` only, if given) with what selection needs.
    pub(super) fn candidates(&self, among: Option<&[NodeId]>) -> Vec<Candidate> {
        self.roster
            .signers()
            .filter(|p| among.is_none_or(|a| a.contains(&p.node)))
            .map(|p| Candidate {
                node: p.node,
                segment: p.signer.as_ref().map(|s| s.1.clone()).unwrap_or_default(),
                connected: self.is_connected(&p.node),
                load: self.signing.load.of(&p.node),
            })
            .collect()
    }

    /// Whether `node` has a connection now.
    fn is_connected(&self, node: &NodeId) -> bool {
        self.peers
            .get(node)
            .is_some_and(|id| self.connected.contains(id))
    }

    /// Sends a session's envelope, remembering the request so that a refusal or a
    /// failure to deliver reaches the session.
    pub(super) fn send_tracked_envelope(&mut self, to: NodeId, msg: Envelope) {
        let session = msg.session;
        if let Some(id) = self.send(&to, Frame::Deliver(msg)) {
            self.outbound.insert(id, (session, to));
        }
    }

    fn send(&mut self, to: &NodeId, frame: Frame) -> Option<request_response::OutboundRequestId> {
        let peer = *self.peers.get(to)?;
        Some(p2p::send(&mut self.swarm, &peer, frame))
    }

    /// Sends what the netting rounds queued (answers may queue more).
    fn flush_netting(&mut self) {
        loop {
            let out = self.netting.take_outbox();
            if out.is_empty() {
                return;
            }
            for (to, env, tag) in out {
                match self.send(&to, Frame::Deliver(env)) {
                    Some(id) => self.netting.sent(id, tag),
                    None => self.netting_ack(
                        tag,
                        Ack::Rejected {
                            reason: "unreachable".into(),
                            detail: format!("{to} has no libp2p peer id"),
                        },
                    ),
                }
            }
        }
    }

    fn netting_ack(&mut self, tag: Tag, ack: Ack) {
        let candidates = self.candidates(None);
        self.netting.on_ack(tag, ack, &candidates);
    }

    // ------------------------------------------------------------------ commands

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::CreateKey(spec, reply) => {
                if let Err(e) = self.start_dkg(spec, reply) {
                    tracing::warn!(error = %e, "DKG not started");
                }
            }
            Command::Sign(boxed, reply) => {
                let (key, request) = *boxed;
                if self.lifecycle.busy(&key.key_id()) {
                    let _ = reply.send(Err(CoordinatorError::KeyBusy(key.key_id())));
                    return;
                }
                self.start_sign_job(key, request, reply);
            }
            Command::Reshare(boxed, reply) => {
                let (key, op) = *boxed;
                if self.lifecycle.busy(&key.key_id()) || self.repairs.busy(&key.key_id()) {
                    let _ = reply.send(Err(CoordinatorError::KeyBusy(key.key_id())));
                    return;
                }
                if op.operation.kind == quorate_protocol::lifecycle::OperationKind::Repair {
                    self.start_repair(key, op, reply);
                } else {
                    self.start_reshare(key, op, reply);
                }
            }
            Command::AttachStore(store) => {
                self.lifecycle.attach(store, &self.identity);
                // Every participant of a follow-up gets it now (dialled if need be).
                let nodes: Vec<NodeId> = self.nodes.values().copied().collect();
                for node in nodes {
                    for env in self.lifecycle.on_connect(&node) {
                        self.send_tracked_envelope(node, env);
                    }
                }
            }
            Command::Nodes(reply) => {
                let nodes = self
                    .roster
                    .signers()
                    .map(|p| NodeStatus {
                        node: p.node,
                        name: p.name.clone(),
                        segment: p.signer.as_ref().map(|s| s.1.clone()).unwrap_or_default(),
                        connected: self.is_connected(&p.node),
                    })
                    .collect();
                let _ = reply.send(nodes);
            }
            Command::ListenAddrs(reply) => {
                let _ = reply.send(self.swarm.listeners().map(|a| a.to_string()).collect());
            }
            Command::Netting(c) => {
                let candidates = self.candidates(None);
                self.netting.on_command(c, &candidates);
                self.flush_netting();
            }
            Command::Shutdown => {}
        }
    }

    fn start_dkg(
        &mut self,
        spec: KeySpec,
        reply: oneshot::Sender<Result<KeyRecord, CoordinatorError>>,
    ) -> Result<(), String> {
        let fail = |reply: oneshot::Sender<Result<KeyRecord, CoordinatorError>>, msg: String| {
            let _ = reply.send(Err(CoordinatorError::InvalidSpec(msg.clone())));
            Err(msg)
        };
        let participants = match &spec.participants {
            Participants::Nodes(nodes) => {
                if let Some(n) = nodes.iter().find(|n| {
                    self.roster
                        .by_node(n)
                        .and_then(|p| p.signer.as_ref())
                        .is_none()
                }) {
                    return fail(
                        reply,
                        format!("participant {n} is not a signer in the roster"),
                    );
                }
                nodes.clone()
            }
            Participants::Spanning { n, min_segments } => {
                // Only nodes in the allowed segments are candidates.
                let c: Vec<Candidate> = self
                    .candidates(None)
                    .into_iter()
                    .filter(|c| spec.segments.is_empty() || spec.segments.contains(&c.segment))
                    .collect();
                let Some(chosen) = select::pick(&c, *n) else {
                    return fail(
                        reply,
                        format!("{n} participants requested but the roster has {}", c.len()),
                    );
                };
                if select::segments_spanned(&c, &chosen) < *min_segments {
                    return fail(
                        reply,
                        format!("cannot span {min_segments} segments with {n} nodes"),
                    );
                }
                chosen
            }
        };
        let committee = match self.roster.committee(Some(&participants)) {
            Ok(c) => c,
            Err(e) => return fail(reply, e.to_string()),
        };
        if !spec.segments.is_empty() {
            for m in committee.members() {
                let segment = self
                    .roster
                    .by_node(&m.node)
                    .and_then(|p| p.signer.as_ref())
                    .map(|s| s.1.clone())
                    .unwrap_or_default();
                if !spec.segments.contains(&segment) {
                    return fail(
                        reply,
                        format!(
                            "residency: participant {} is in segment {segment:?}, outside the allowed segments {:?}",
                            m.node, spec.segments
                        ),
                    );
                }
            }
        }
        if spec.threshold < 2 || usize::from(spec.threshold) > committee.len() {
            return fail(
                reply,
                format!(
                    "threshold {} must be between 2 and {}",
                    spec.threshold,
                    committee.len()
                ),
            );
        }
        let mut key = [0u8; 16];
        OsRng.fill_bytes(&mut key);
        let session = random_session();
        let env = Envelope::seal(
            &self.identity,
            spec.ciphersuite,
            KeyId(key),
            session,
            Payload::DkgStart {
                threshold: spec.threshold,
                committee,
                timeout_ms: u64::try_from(self.dkg_timeout.as_millis()).unwrap_or(u64::MAX),
                segments: spec.segments.clone(),
            },
        );
        for n in &participants {
            if let Some(id) = self.send(n, Frame::Deliver(env.clone())) {
                self.outbound.insert(id, (session, *n));
            }
        }
        tracing::info!(%session, suite = %spec.ciphersuite, t = spec.threshold, n = participants.len(), "DKG started");
        self.dkgs.insert(
            session,
            DkgRun {
                participants,
                reports: BTreeMap::new(),
                deadline: Instant::now() + self.dkg_timeout,
                reply: Some(reply),
            },
        );
        Ok(())
    }

    /// Checks an approved operation and starts its run (the start goes to every
    /// participant; a refusal or an unreachable node fails the run).
    fn start_reshare(
        &mut self,
        key: KeyRecord,
        op: quorate_protocol::lifecycle::ApprovedOperation,
        reply: oneshot::Sender<Result<KeyRecord, CoordinatorError>>,
    ) {
        let plan =
            match super::lifecycle::plan::plan(&self.roster, &key, &op, unix_ms() / 1000, |n| {
                self.is_connected(n)
            }) {
                Ok(p) => p,
                Err(e) => {
                    let _ = reply.send(Err(e));
                    return;
                }
            };
        let session = random_session();
        let out = self.lifecycle.start(
            &self.identity,
            key,
            op,
            plan,
            session,
            self.dkg_timeout,
            reply,
        );
        self.send_lifecycle(out);
    }

    /// Checks a repair operation and starts it.
    fn start_repair(
        &mut self,
        key: KeyRecord,
        op: quorate_protocol::lifecycle::ApprovedOperation,
        reply: oneshot::Sender<Result<KeyRecord, CoordinatorError>>,
    ) {
        let session = random_session();
        let connected: BTreeSet<NodeId> = self
            .nodes
            .iter()
            .filter(|(p, _)| self.connected.contains(p))
            .map(|(_, n)| *n)
            .collect();
        let out = self.repairs.start(
            &self.identity,
            &self.roster,
            key,
            op,
            |n| connected.contains(n),
            session,
            self.dkg_timeout,
            reply,
        );
        self.send_lifecycle(out);
    }

    /// Sends a lifecycle envelope to its recipients (refusals reach the run).
    fn send_lifecycle(&mut self, out: Option<super::lifecycle::Outgoing>) {
        if let Some(out) = out {
            for n in &out.to {
                self.send_tracked_envelope(*n, out.env.clone());
            }
        }
    }

    // ------------------------------------------------------------------ network

    fn on_swarm(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                self.connected.insert(peer_id);
                // Lifecycle follow-ups: a finish proof or abort it may have missed.
                if let Some(node) = self.nodes.get(&peer_id).copied() {
                    for env in self.lifecycle.on_connect(&node) {
                        self.send_tracked_envelope(node, env);
                    }
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => {
                self.connected.remove(&peer_id);
                // A node reconnecting starts a new pool: what it offered is void.
                if let Some(node) = self.nodes.get(&peer_id).copied() {
                    self.signing.presign.forget(&node);
                    self.repairs.on_disconnect(&node);
                    for out in self.lifecycle.on_disconnect(&node, &self.identity) {
                        self.send_lifecycle(Some(out));
                    }
                }
            }
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "coordinator listening")
            }
            SwarmEvent::Behaviour(BehaviourEvent::Dkg(e)) => self.on_rr(e, true),
            SwarmEvent::Behaviour(BehaviourEvent::Sign(e)) => self.on_rr(e, false),
            _ => {}
        }
    }

    fn on_rr(&mut self, event: request_response::Event<Frame, Ack>, dkg: bool) {
        match event {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                let ack = self.on_frame(&peer, request);
                let rr = if dkg {
                    &mut self.swarm.behaviour_mut().dkg
                } else {
                    &mut self.swarm.behaviour_mut().sign
                };
                let _ = rr.send_response(channel, ack);
            }
            request_response::Event::Message {
                message:
                    request_response::Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                if let Some(tag) = self.netting.answered(&request_id) {
                    self.netting_ack(tag, response);
                    self.flush_netting();
                    return;
                }
                let sent = self.outbound.remove(&request_id);
                if let (Some((session, node)), Ack::Accepted) = (sent, &response) {
                    if self.lifecycle.owns(&session) {
                        self.lifecycle.on_ack(session, node);
                    }
                }
                if let (Some((session, node)), Ack::Rejected { reason, detail }) = (sent, response)
                {
                    tracing::warn!(%node, %reason, %detail, "node refused");
                    if self
                        .repairs
                        .on_refusal(session, node, format!("{reason}: {detail}"))
                    {
                        return;
                    }
                    if self.lifecycle.owns(&session) {
                        let (_, out) = self.lifecycle.on_refusal(
                            session,
                            node,
                            format!("{reason}: {detail}"),
                            &self.identity,
                        );
                        self.send_lifecycle(out);
                        return;
                    }
                    if self.window_refusal(session, node, &reason, &detail) {
                        return;
                    }
                    self.on_refusal(session, node, reason);
                }
            }
            request_response::Event::OutboundFailure {
                request_id, error, ..
            } => {
                if let Some(tag) = self.netting.answered(&request_id) {
                    tracing::warn!(node = %tag.node, %error, "node unreachable (netting)");
                    let reason = match error {
                        request_response::OutboundFailure::Timeout => "timeout",
                        _ => "unreachable",
                    };
                    let ack = Ack::Rejected {
                        reason: reason.into(),
                        detail: format!("{}: {error}", tag.node),
                    };
                    self.netting_ack(tag, ack);
                    self.flush_netting();
                    return;
                }
                if let Some((session, node)) = self.outbound.remove(&request_id) {
                    tracing::warn!(%node, %error, "node unreachable");
                    self.on_refusal(session, node, format!("unreachable: {error}"));
                }
            }
            _ => {}
        }
    }

    fn on_frame(&mut self, peer: &PeerId, frame: Frame) -> Ack {
        let Some(from) = self.nodes.get(peer).copied() else {
            return Ack::Rejected {
                reason: "unknown_peer".into(),
                detail: "not in the roster".into(),
            };
        };
        match frame {
            Frame::Relay { to, envelope } => {
                if envelope.sender != from {
                    return self.drop_relay("sender_mismatch", "relay only your own envelopes");
                }
                let sealed_to = match &envelope.payload {
                    Payload::DkgRound2 { recipient, .. }
                    | Payload::ReshareShare { recipient, .. }
                    | Payload::RepairDelta { recipient, .. }
                    | Payload::RepairSigma { recipient, .. } => Some(*recipient),
                    _ => None,
                };
                if let Err(reason) = relay_check(
                    self.relay_members(&envelope.session),
                    &from,
                    &to,
                    sealed_to.as_ref(),
                ) {
                    let detail = format!(
                        "session {} is not a live DKG of this coordinator with both \
                         {from} and {to} in its committee",
                        envelope.session
                    );
                    return self.drop_relay(reason, &detail);
                }
                if self
                    .roster
                    .by_node(&to)
                    .and_then(|p| p.signer.as_ref())
                    .is_none()
                {
                    return self.drop_relay("unknown_recipient", &format!("{to} is not a signer"));
                }
                self.send(&to, Frame::Deliver(envelope));
                Ack::Accepted
            }
            Frame::Deliver(env) => {
                if env.sender != from {
                    return Ack::Rejected {
                        reason: "sender_mismatch".into(),
                        detail: "envelope sender is not the peer".into(),
                    };
                }
                // A client signing session's commitments and shares go to its
                // aggregator, whose inbox verifies the envelope signature (and drops
                // and counts what fails): verifying here too would double the
                // hottest Ed25519 check. Everything else is verified here.
                let session_verifies = matches!(
                    env.payload,
                    Payload::SignCommit { .. } | Payload::SignShare { .. }
                ) && self.signing.owns(&env.session);
                if !session_verifies {
                    if let Err(e) = env.verify() {
                        return Ack::Rejected {
                            reason: "bad_signature".into(),
                            detail: e.to_string(),
                        };
                    }
                }
                self.on_envelope(env);
                Ack::Accepted
            }
        }
    }

    /// The committee of a live DKG this coordinator runs: the only sessions whose
    /// members talk to each other (signers talk to the coordinator alone), so the only
    /// ones it relays for.
    fn relay_members(&self, session: &SessionId) -> Option<&[NodeId]> {
        self.dkgs
            .get(session)
            .map(|d| d.participants.as_slice())
            .or_else(|| self.lifecycle.participants(session))
            .or_else(|| self.repairs.participants(session))
    }

    /// Refuses to relay an envelope, counting it.
    fn drop_relay(&mut self, reason: &'static str, detail: &str) -> Ack {
        self.counters
            .relays_dropped
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::warn!(reason, detail, "relay refused");
        Ack::Rejected {
            reason: reason.into(),
            detail: detail.into(),
        }
    }

    fn on_envelope(&mut self, env: Envelope) {
        if let Payload::DkgComplete {
            public,
            attestation,
        } = &env.payload
        {
            let (public, attestation) = (public.clone(), attestation.clone());
            if self
                .repairs
                .on_report(env.session, env.sender, &public, attestation.clone())
            {
                return;
            }
            if self.lifecycle.owns(&env.session) {
                if let Some(p) =
                    self.lifecycle
                        .on_report(env.session, env.sender, public, attestation)
                {
                    self.signing.presign.know(&p);
                }
                return;
            }
            self.on_dkg_report(env.session, env.sender, public, attestation);
            return;
        }
        if matches!(env.payload, Payload::ReshareConfirm { .. }) {
            let out = self.lifecycle.on_confirm(env, &self.identity);
            self.send_lifecycle(out);
            return;
        }
        if matches!(env.payload, Payload::ReshareCommit { .. }) {
            let out = self.lifecycle.on_commit(env, &self.identity);
            self.send_lifecycle(out);
            return;
        }
        // Netting rounds (and their settlement signing sessions): the sender is the
        // authenticated peer and the envelope verified (on_frame); the round checks
        // the sender is in its committee and the outputs' own signatures.
        if self.netting.owns(&env) {
            let candidates = self.candidates(None);
            self.netting.on_envelope(env, &candidates);
            self.flush_netting();
            return;
        }
        if matches!(env.payload, Payload::PresignOffer { .. }) {
            let (key, node) = (env.key, env.sender);
            if self
                .roster
                .by_node(&node)
                .and_then(|p| p.signer.as_ref())
                .is_none()
            {
                tracing::warn!(%node, "presign offer from a peer that is not a signer");
                return;
            }
            match self.signing.presign.offer(key, node, env.payload) {
                Ok(filed) => tracing::debug!(%node, %key, filed, "presign offer"),
                Err(e) => tracing::warn!(%node, %key, error = %e, "presign offer refused"),
            }
            return;
        }
        if matches!(env.payload, Payload::WindowApproved { .. }) {
            self.on_window_approved(env);
            return;
        }
        if self.signing.owns(&env.session) {
            self.on_signing_envelope(env);
        }
    }

    // ------------------------------------------------------------------ DKG

    fn on_dkg_report(
        &mut self,
        session: SessionId,
        from: NodeId,
        public: GroupPublic,
        attestation: KeyAttestation,
    ) {
        let Some(run) = self.dkgs.get_mut(&session) else {
            return;
        };
        if !run.participants.contains(&from) {
            return;
        }
        // A report is only kept with its sender's own valid attestation of exactly
        // this data; clients will check the same (invariant 9).
        let attested = attestation.node == from
            && AttestedKey::from_public(&public)
                .and_then(|body| attestation.verify(&body))
                .is_ok();
        if !attested {
            tracing::warn!(node = %from, "DKG report without a valid attestation");
            let Some(run) = self.dkgs.remove(&session) else {
                return;
            };
            if let Some(r) = run.reply {
                let _ = r.send(Err(CoordinatorError::DkgFailed {
                    reason: format!("{from} sent a key report without a valid attestation"),
                    culprits: vec![from],
                }));
            }
            return;
        }
        run.reports.insert(from, (public, attestation));
        if run.reports.len() < run.participants.len() {
            return;
        }
        let Some(run) = self.dkgs.remove(&session) else {
            return;
        };
        let first = run.reports.values().next().map(|(p, _)| p.clone());
        let result = match first {
            Some(p) if run.reports.values().all(|(r, _)| *r == p) => {
                tracing::info!(key = %p.key_id, suite = %p.suite, "key generated");
                self.signing.presign.know(&p);
                let mut attestations: Vec<KeyAttestation> =
                    run.reports.into_values().map(|(_, a)| a).collect();
                attestations.sort_by_key(|a| p.members.get(&a.node).copied());
                Ok(KeyRecord {
                    public: p,
                    attestations,
                    created_at_ms: unix_ms(),
                    generation: 0,
                })
            }
            _ => Err(CoordinatorError::DkgFailed {
                reason: "participants reported different group keys".into(),
                culprits: Vec::new(),
            }),
        };
        if let Some(r) = run.reply {
            let _ = r.send(result);
        }
    }

    fn on_refusal(&mut self, session: SessionId, node: NodeId, reason: String) {
        if self.repairs.on_refusal(session, node, reason.clone()) {
            return;
        }
        let (owned, out) = self
            .lifecycle
            .on_refusal(session, node, reason.clone(), &self.identity);
        if owned {
            self.send_lifecycle(out);
            return;
        }
        if let Some(run) = self.dkgs.remove(&session) {
            if let Some(r) = run.reply {
                let _ = r.send(Err(CoordinatorError::DkgFailed {
                    reason: format!("{node} refused: {reason}"),
                    culprits: vec![node],
                }));
            }
            return;
        }
        self.on_signing_refusal(session, node, reason);
    }

    fn on_tick(&mut self) {
        self.repairs.on_tick(Instant::now());
        let (done, out) = self.lifecycle.on_tick(Instant::now(), &self.identity);
        for p in done {
            self.signing.presign.know(&p);
        }
        for o in out {
            self.send_lifecycle(Some(o));
        }
        let candidates = self.candidates(None);
        self.netting.on_tick(&candidates);
        self.flush_netting();
        let now = Instant::now();
        let expired: Vec<SessionId> = self
            .dkgs
            .iter()
            .filter(|(_, d)| d.deadline <= now)
            .map(|(s, _)| *s)
            .collect();
        for s in expired {
            if let Some(run) = self.dkgs.remove(&s) {
                let missing: Vec<NodeId> = run
                    .participants
                    .iter()
                    .filter(|p| !run.reports.contains_key(p))
                    .copied()
                    .collect();
                if let Some(r) = run.reply {
                    let _ = r.send(Err(CoordinatorError::DkgFailed {
                        reason: "deadline passed".into(),
                        culprits: missing,
                    }));
                }
            }
        }
        self.signing_tick();
    }
}

/// Whether an envelope from `from` to `to` may be relayed, given the committee of
/// its session (`None`: no live DKG of this coordinator): only between two distinct
/// members of a live DKG's committee, and a sealed share (`sealed_to`) only to the
/// node it is sealed to.
fn relay_check(
    members: Option<&[NodeId]>,
    from: &NodeId,
    to: &NodeId,
    sealed_to: Option<&NodeId>,
) -> Result<(), &'static str> {
    let Some(members) = members else {
        return Err("no_live_session");
    };
    if !members.contains(from) {
        return Err("sender_not_in_session");
    }
    if !members.contains(to) || from == to {
        return Err("recipient_not_in_session");
    }
    if sealed_to.is_some_and(|r| r != to) {
        return Err("recipient_mismatch");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(i: u8) -> NodeId {
        NodeIdentity::from_secret_bytes(&[i; 64]).node_id()
    }

    #[test]
    fn relays_only_between_members_of_a_live_session() {
        let (a, b, c) = (node(1), node(2), node(3));
        let committee = [a, b];
        assert_eq!(relay_check(Some(&committee), &a, &b, None), Ok(()));
        assert_eq!(relay_check(Some(&committee), &b, &a, None), Ok(()));
        assert_eq!(relay_check(None, &a, &b, None), Err("no_live_session"));
        assert_eq!(
            relay_check(Some(&committee), &c, &a, None),
            Err("sender_not_in_session")
        );
        assert_eq!(
            relay_check(Some(&committee), &a, &c, None),
            Err("recipient_not_in_session")
        );
        assert_eq!(
            relay_check(Some(&committee), &a, &a, None),
            Err("recipient_not_in_session")
        );
        // A share sealed to b goes to b only.
        assert_eq!(relay_check(Some(&committee), &a, &b, Some(&b)), Ok(()));
        let three = [a, b, c];
        assert_eq!(
            relay_check(Some(&three), &a, &c, Some(&b)),
            Err("recipient_mismatch")
        );
    }
}
