//! The signer daemon: one event loop owning the swarm, the protocol sessions, the
//! keystore, the policy engine and the audit log.
//!
//! Every inbound frame is checked in this order: the peer is in the roster (the
//! allowlist already closed anyone else), the envelope's sender is the
//! authenticated peer (or the peer is a roster coordinator relaying a signed
//! envelope), then the protocol machine's own checks run. A signing request is
//! decoded from the client's signed statement, checked against this node's policy
//! and recorded in the audit log *before* a signer is created; if the audit record
//! cannot be written the node refuses (fail closed).

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use futures::StreamExt;
use libp2p::{request_response, swarm::SwarmEvent, Multiaddr, PeerId, Swarm};
use quorate_protocol::{
    dkg::DkgConfig,
    local::{Outcome, Party},
    request::SignedRequest,
    sign::SignerConfig,
    wire::frame::{Ack, Frame},
    Committee, Dkg, Envelope, Fault, Input, KeyId, NodeId, NodeIdentity, Output, Payload,
    ProtocolError, SessionId, SignTarget, Signer, TimerId, Timestamp,
};
use rand_core::OsRng;
use serde_json::json;
use tokio::sync::{mpsc, watch};

mod lifecycle;
mod repair;
mod window;

use crate::{
    audit::{AuditKind, AuditLog},
    config::{LimitsConfig, Routing},
    keystore::{Keystore, StoredKey},
    metrics::{Label, Metrics, SessionLabels},
    netting::{self, Netting},
    policy::{Decision, PolicyEngine},
    recovery::{message_hash, Approval},
    roster::Roster,
    transport::{self, Behaviour, BehaviourEvent},
};

/// What the daemon needs to run (already unsealed and loaded).
pub struct NodeParts {
    /// Unsealed keystore.
    pub keystore: Keystore,
    /// Roster.
    pub roster: Roster,
    /// Policy engine.
    pub policy: PolicyEngine,
    /// Policy file, re-read on reload.
    pub policy_path: Option<std::path::PathBuf>,
    /// Audit log.
    pub audit: AuditLog,
    /// Listen addresses.
    pub listen: Vec<Multiaddr>,
    /// Routing mode.
    pub routing: Routing,
    /// Limits.
    pub limits: LimitsConfig,
    /// Metrics (shared with the admin server).
    pub metrics: Metrics,
}

/// Control messages into a running daemon.
#[derive(Debug)]
pub enum Control {
    /// Re-read the policy file (SIGHUP).
    ReloadPolicy,
    /// Report the listening addresses.
    ListenAddrs(tokio::sync::oneshot::Sender<Vec<Multiaddr>>),
    /// Report the public data of every key this node holds a share of.
    Keys(tokio::sync::oneshot::Sender<Vec<quorate_protocol::GroupPublic>>),
}

/// Handle to a running daemon.
pub struct NodeHandle {
    /// Node id.
    pub node_id: NodeId,
    /// Control channel.
    pub control: mpsc::Sender<Control>,
    /// Set to true to shut down gracefully.
    pub shutdown: watch::Sender<bool>,
    /// The daemon task.
    pub task: tokio::task::JoinHandle<Result<(), String>>,
}

impl NodeHandle {
    /// Addresses the node listens on (after startup).
    pub async fn listen_addrs(&self) -> Vec<Multiaddr> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.control.send(Control::ListenAddrs(tx)).await.is_err() {
            return Vec::new();
        }
        tokio::time::timeout(Duration::from_secs(5), rx)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default()
    }

    /// Public data of the keys this node holds shares of.
    pub async fn keys(&self) -> Vec<quorate_protocol::GroupPublic> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.control.send(Control::Keys(tx)).await.is_err() {
            return Vec::new();
        }
        tokio::time::timeout(Duration::from_secs(5), rx)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default()
    }

    /// Requests graceful shutdown and waits for the daemon to finish.
    pub async fn stop(self) -> Result<(), String> {
        let _ = self.shutdown.send(true);
        self.task.await.map_err(|e| e.to_string())?
    }
}

struct Session {
    party: Party,
    kind: &'static str,
    coordinator: NodeId,
    key_id: KeyId,
    /// Signing sessions: the client request and the message they sign.
    request: Option<SignContext>,
    started: Instant,
    deadline: Option<Instant>,
}

/// What a signing session signs, cited by its audit records.
#[derive(Debug, Clone, Copy)]
struct SignContext {
    request_hash: [u8; 32],
    message_hash: [u8; 32],
}

/// Approved client requests: the policy decision is made once per request and
/// reused by its messages and by retries with fresh sessions.
struct Node {
    identity: Arc<NodeIdentity>,
    keystore: Keystore,
    keys: BTreeMap<KeyId, StoredKey>,
    roster: Roster,
    policy: PolicyEngine,
    policy_path: Option<std::path::PathBuf>,
    audit: AuditLog,
    audit_failed: bool,
    swarm: Swarm<Behaviour>,
    routing: Routing,
    limits: LimitsConfig,
    metrics: Metrics,
    sessions: BTreeMap<SessionId, Session>,
    finished: BTreeSet<SessionId>,
    /// Messages for sessions not started here yet (with their encoded sizes), with
    /// when the first arrived.
    pending: BTreeMap<SessionId, (Instant, VecDeque<(Envelope, usize)>)>,
    pending_count: usize,
    pending_bytes: usize,
    /// Per sender: buffered messages and their bytes.
    pending_by_sender: BTreeMap<NodeId, (usize, usize)>,
    approvals: BTreeMap<[u8; 32], Approval>,
    /// Requests refused by policy recently, by request hash: the same request again
    /// is refused from here, without another audit record (a coordinator replaying
    /// one refused request cannot fill the disk). Bounded, entries live 60 s.
    refused: RefusedCache,
    quarantined: BTreeSet<NodeId>,
    /// Netting rounds held (restored from the keystore at start-up).
    netting: Netting,
    /// Frames in flight, kept until answered so a failed send can be retried.
    in_flight: BTreeMap<request_response::OutboundRequestId, (PeerId, Frame, u32)>,
    /// Frames waiting to be re-sent after a failure (bounded backoff).
    resend: Vec<(Instant, PeerId, Frame, u32)>,
    epoch: Instant,
    shutting_down: bool,
    /// Presigned nonce pools, per connected coordinator and key (memory only).
    presign: crate::presign::Pools,
    /// Frames produced while audit records were pending: sent after the group
    /// commit (bounded by [`MAX_BATCH`] events per commit).
    held: Vec<(PeerId, Frame, u32)>,
    /// Key generations, live and unfinished refresh/reshare runs.
    lifecycle: crate::lifecycle::Lifecycle,
    /// Allowed segments of live DKGs (kept with the new share).
    dkg_segments: BTreeMap<SessionId, Vec<String>>,
    /// Live repairs: the generation and allowed segments the operation names.
    repairs: BTreeMap<SessionId, (KeyId, u64, Vec<String>)>,
    /// When the coordinators were last dialled (reconnects after a coordinator
    /// restart, at most every [`COORDINATOR_REDIAL`]).
    coordinator_dial: Instant,
    /// Window certificates verified and window approvals given (memory only).
    window: crate::window::Windows,
}

/// How often a node re-dials a roster coordinator it is not connected to.
const COORDINATOR_REDIAL: Duration = Duration::from_secs(2);

/// How often a frame whose delivery failed is re-sent (backoff 200, 400, 800 … ms).
const MAX_RESENDS: u32 = 5;

/// Events handled before one group commit of the audit log: what is ready when the
/// first arrives, at most this many.
const MAX_BATCH: usize = 64;

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn reject(reason: &str, detail: impl Into<String>) -> Ack {
    Ack::Rejected {
        reason: reason.into(),
        detail: detail.into(),
    }
}

/// Starts the daemon on the current tokio runtime.
pub fn spawn(parts: NodeParts) -> Result<NodeHandle, String> {
    let identity = Arc::new(parts.keystore.identity().clone());
    let me = identity.node_id();
    if parts
        .roster
        .by_node(&me)
        .and_then(|p| p.signer.as_ref())
        .is_none()
    {
        return Err(format!("this node ({me}) is not a signer in the roster"));
    }
    let allowed = parts
        .roster
        .peers()
        .iter()
        .filter(|p| p.node != me)
        .map(|p| p.peer_id)
        .collect::<Vec<_>>();
    let mut swarm =
        transport::build_swarm(&identity, allowed, transport::Limits::from(&parts.limits))?;
    for p in parts.roster.peers() {
        for a in &p.addresses {
            swarm.add_peer_address(p.peer_id, a.clone());
        }
    }
    for a in &parts.listen {
        swarm
            .listen_on(a.clone())
            .map_err(|e| format!("cannot listen on {a}: {e}"))?;
    }
    // Reach the coordinators at start: a restarted node gets its presign pools
    // opened and any lifecycle finish or abort it missed without waiting for the
    // coordinator's next request.
    for c in parts.roster.data().coordinators() {
        if let Some(peer) = parts.roster.net(&c.node).map(|p| p.peer_id) {
            transport::dial_fresh_port(&mut swarm, &peer);
        }
    }
    let keys: BTreeMap<KeyId, StoredKey> = parts
        .keystore
        .keys()
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|k| (k.key_id(), k))
        .collect();
    let lifecycle = crate::lifecycle::Lifecycle::load(&parts.keystore, keys.keys().copied())
        .map_err(|e| format!("cannot read key generations from the keystore: {e}"))?;
    for (id, key) in &keys {
        parts.metrics.key_state(
            &id.to_string(),
            lifecycle.generation(id),
            key.share.public.members.len(),
            None,
        );
    }
    // Window usage and request nonces survive restarts: replay them from the log.
    let mut policy = parts.policy;
    let (restored, approvals) =
        crate::recovery::restore_from_log(&parts.audit, &mut policy, unix_ms())
            .map_err(|e| format!("cannot restore policy state from the audit log: {e}"))?;
    if restored.allowed > 0 {
        tracing::info!(
            allowed = restored.allowed,
            live_nonces = restored.nonces,
            "policy state restored from the audit log"
        );
    }
    let netting = Netting::load(parts.keystore.state(), &identity, &parts.limits)
        .map_err(|e| format!("cannot restore netting rounds from the keystore: {e}"))?;
    let (control_tx, control_rx) = mpsc::channel(16);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut node = Node {
        identity,
        keystore: parts.keystore,
        keys,
        roster: parts.roster,
        policy,
        policy_path: parts.policy_path,
        audit: parts.audit,
        audit_failed: false,
        swarm,
        routing: parts.routing,
        limits: parts.limits,
        metrics: parts.metrics,
        sessions: BTreeMap::new(),
        finished: BTreeSet::new(),
        pending: BTreeMap::new(),
        pending_count: 0,
        pending_bytes: 0,
        pending_by_sender: BTreeMap::new(),
        approvals,
        refused: RefusedCache::default(),
        quarantined: BTreeSet::new(),
        netting,
        in_flight: BTreeMap::new(),
        resend: Vec::new(),
        epoch: Instant::now(),
        shutting_down: false,
        presign: crate::presign::Pools::new(parts.limits.presign()),
        held: Vec::new(),
        lifecycle,
        repairs: BTreeMap::new(),
        dkg_segments: BTreeMap::new(),
        coordinator_dial: Instant::now(),
        window: Default::default(),
    };
    node.record(AuditKind::NodeStarted, json!({ "keys": node.keys.len() }));
    node.commit_audit();
    let task = tokio::spawn(async move { node.run(control_rx, shutdown_rx).await });
    Ok(NodeHandle {
        node_id: me,
        control: control_tx,
        shutdown: shutdown_tx,
        task,
    })
}

impl Node {
    fn now(&self) -> Timestamp {
        Timestamp(u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    /// Writes an audit record about the node itself (start, reload, quarantine, …).
    /// A failure of the log latches the node into refusing to sign.
    fn record(&mut self, kind: AuditKind, details: serde_json::Value) -> bool {
        self.record_or_refuse(kind, details).is_ok()
    }

    /// Writes an audit record an action depends on: on error the action must not
    /// happen. Only a failure of the log itself (I/O) latches the node into refusing
    /// everything (invariant 6); a record the log refuses (details it cannot hold)
    /// refuses this one action with the reason, and the node serves others
    /// (invariant 11).
    ///
    /// The record is written at once and made durable by the next group commit
    /// ([`Self::commit_audit`], at the end of the batch of events it belongs to):
    /// every frame this node sends meanwhile is held until then, so nothing that
    /// depends on a record leaves the node before the record is durable.
    /// [`Self::record_or_refuse`], then synced at once: for records that must be
    /// durable before an effect that is not a message (a keystore change).
    fn record_durably(&mut self, kind: AuditKind, details: serde_json::Value) -> Result<(), Ack> {
        if self.audit_failed {
            return Err(reject(
                "audit_unavailable",
                "audit log cannot be written; node refuses to act",
            ));
        }
        self.record_or_refuse(kind, details)?;
        if let Err(e) = self.audit.commit() {
            tracing::error!(error = %e, "audit log commit failed: refusing to act from now on");
            self.audit_failed = true;
            return Err(reject("audit_unavailable", "audit log cannot be written"));
        }
        Ok(())
    }

    fn record_or_refuse(&mut self, kind: AuditKind, details: serde_json::Value) -> Result<(), Ack> {
        match self.audit.append_deferred(kind, details) {
            Ok(_) => Ok(()),
            Err(e) if e.is_log_failure() => {
                tracing::error!(error = %e, "audit log write failed: refusing to sign from now on");
                self.audit_failed = true;
                Err(reject("audit_unavailable", "audit log cannot be written"))
            }
            Err(e) => {
                tracing::warn!(error = %e, "audit record refused; refusing this request only");
                Err(reject(
                    "audit_refused",
                    format!("this request cannot be recorded: {e}"),
                ))
            }
        }
    }

    async fn run(
        &mut self,
        mut control: mpsc::Receiver<Control>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), String> {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let mut grace_until: Option<Instant> = None;
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => {
                    self.on_swarm_event(event);
                    // Group commit: what else is ready joins this batch.
                    for _ in 1..MAX_BATCH {
                        match futures::FutureExt::now_or_never(self.swarm.select_next_some()) {
                            Some(event) => self.on_swarm_event(event),
                            None => break,
                        }
                    }
                }
                _ = tick.tick() => self.on_tick(),
                Some(c) = control.recv() => self.on_control(c),
                changed = shutdown.changed(), if grace_until.is_none() => {
                    if changed.is_err() || *shutdown.borrow() {
                        tracing::info!(sessions = self.sessions.len(), "shutting down: refusing new sessions");
                        self.shutting_down = true;
                        grace_until = Some(Instant::now() + Duration::from_millis(self.limits.shutdown_grace_ms));
                    }
                }
            }
            self.commit_audit();
            if let Some(until) = grace_until {
                if self.sessions.is_empty() || Instant::now() >= until {
                    let aborted: Vec<SessionId> = self.sessions.keys().copied().collect();
                    for s in aborted {
                        self.end_session(&s, "aborted_shutdown", Vec::new());
                    }
                    self.record(AuditKind::NodeStopped, json!({}));
                    self.commit_audit();
                    return Ok(());
                }
            }
        }
    }

    fn on_control(&mut self, c: Control) {
        match c {
            Control::ReloadPolicy => {
                let Some(path) = self.policy_path.clone() else {
                    return;
                };
                match self.policy.reload_file(&path) {
                    Ok(()) => {
                        tracing::info!(path = %path.display(), "policy reloaded");
                        self.record(
                            AuditKind::PolicyReloaded,
                            json!({ "path": path.display().to_string() }),
                        );
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "policy reload failed; keeping the old policy");
                        self.record(
                            AuditKind::PolicyReloadFailed,
                            json!({ "error": e.to_string() }),
                        );
                    }
                }
            }
            Control::ListenAddrs(tx) => {
                let _ = tx.send(self.swarm.listeners().cloned().collect());
            }
            Control::Keys(tx) => {
                let _ = tx.send(self.keys.values().map(|k| k.share.public.clone()).collect());
            }
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Dkg(e)) => self.on_rr_event(e, "dkg"),
            SwarmEvent::Behaviour(BehaviourEvent::Sign(e)) => self.on_rr_event(e, "sign"),
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
            }
            SwarmEvent::IncomingConnectionError { error, .. } => {
                if matches!(error, libp2p::swarm::ListenError::Denied { .. }) {
                    self.metrics.rejected_peers.inc();
                }
                tracing::debug!(%error, "incoming connection refused");
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                num_established,
                ..
            } => {
                tracing::debug!(%peer_id, "connected");
                if num_established.get() == 1 {
                    self.coordinator_connected(&peer_id);
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => {
                if let Some(c) = self.coordinator_of(&peer_id) {
                    self.presign.close(&c, &self.metrics);
                }
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                let node = peer_id.and_then(|p| self.roster.by_peer_id(&p).map(|n| n.node));
                match node {
                    Some(node) => tracing::warn!(%node, %error, "cannot connect to node"),
                    None => tracing::warn!(?peer_id, %error, "outgoing connection failed"),
                }
            }
            _ => {}
        }
    }

    fn on_rr_event(&mut self, event: request_response::Event<Frame, Ack>, family: &str) {
        match event {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                let size = request.envelope().encode().len();
                self.metrics.traffic(family, "in", size);
                let ack = self.on_frame(&peer, request);
                if let Ack::Rejected { reason, .. } = &ack {
                    self.metrics.reject(reason);
                }
                let rr = match family {
                    "dkg" => &mut self.swarm.behaviour_mut().dkg,
                    _ => &mut self.swarm.behaviour_mut().sign,
                };
                let _ = rr.send_response(channel, ack);
            }
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Response {
                        response: Ack::Rejected { reason, detail },
                        ..
                    },
                ..
            } => {
                tracing::warn!(%peer, ?reason, ?detail, "peer rejected our message");
            }
            request_response::Event::OutboundFailure {
                peer,
                error,
                request_id,
                ..
            } => {
                tracing::warn!(%peer, %error, "sending failed");
                self.metrics.reject("outbound_failure");
                // Reconnect with backoff: a lost protocol message would stall its session.
                if let Some((peer, frame, tries)) = self.in_flight.remove(&request_id) {
                    if tries < MAX_RESENDS && self.resend.len() < self.limits.max_pending_messages {
                        // Jittered, so two nodes retrying each other do not stay in step.
                        let jitter = u64::from(rand_core::RngCore::next_u32(&mut OsRng) % 100);
                        let delay = Duration::from_millis((200 << tries) + jitter);
                        self.resend
                            .push((Instant::now() + delay, peer, frame, tries + 1));
                    }
                }
            }
            request_response::Event::Message {
                message: request_response::Message::Response { request_id, .. },
                ..
            } => {
                self.in_flight.remove(&request_id);
            }
            _ => {}
        }
    }

    fn on_frame(&mut self, peer: &PeerId, frame: Frame) -> Ack {
        let Some(from) = self.roster.by_peer_id(peer).map(|p| p.node) else {
            return reject("unknown_peer", "peer is not in the roster");
        };
        let env = match frame {
            Frame::Deliver(env) => env,
            Frame::Relay { .. } => return reject("not_a_relay", "signer nodes do not relay"),
        };
        // Invariant 2: the envelope's sender is the authenticated peer, unless a roster
        // coordinator relays someone's signed envelope (its signature is checked below).
        if env.sender != from && !self.roster.is_coordinator(&from) {
            tracing::warn!(peer = %from, claimed = %env.sender, "spoofed sender dropped");
            return reject(
                "sender_mismatch",
                format!("envelope claims {} but came from {from}", env.sender),
            );
        }
        if self.quarantined.contains(&env.sender) {
            return reject("quarantined", "sender is quarantined");
        }
        if let Err(e) = env.verify() {
            return reject("bad_signature", e.to_string());
        }
        match &env.payload {
            Payload::DkgStart { .. } => self.on_dkg_start(env),
            Payload::ReshareStart { .. } => self.on_reshare_start(env),
            Payload::ReshareFinish { .. } => self.on_reshare_finish(env),
            Payload::ReshareAbort { .. } => self.on_reshare_abort(env),
            Payload::RepairStart { .. } => self.on_repair_start(env),
            Payload::SignRequest { .. } => self.on_sign_request(env),
            Payload::PresignedSign { .. } => self.on_presigned_sign(env),
            Payload::WindowApprove { .. } => self.on_window_approve(env),
            Payload::NettingRound { .. }
            | Payload::NettingBundle { .. }
            | Payload::NettingClose { .. }
            | Payload::NettingPublic { .. }
            | Payload::NettingParty { .. }
            | Payload::LimitStart { .. }
            | Payload::LimitPart { .. } => self.on_netting(&env),
            Payload::SettleRequest { .. } => self.on_settle_request(env),
            _ => self.on_protocol_message(env),
        }
    }

    /// The netting module's view of this node for one message.
    fn netting_ctx(&mut self) -> (&mut Netting, netting::Ctx<'_>) {
        (
            &mut self.netting,
            netting::Ctx {
                identity: &self.identity,
                roster: &self.roster,
                policy: self.policy.policy(),
                keys: &self.keys,
                audit: &mut self.audit,
                audit_failed: &mut self.audit_failed,
                now_unix: unix_ms() / 1000,
                metrics: &self.metrics,
            },
        )
    }

    /// A netting round, bundle or close (see `netting`); outputs after a close go
    /// to the coordinator that sent it, each in its own envelope.
    fn on_netting(&mut self, env: &Envelope) -> Ack {
        let (netting, mut ctx) = self.netting_ctx();
        let handled = netting.on_message(&mut ctx, env);
        for msg in handled.deliver {
            let session = msg.session;
            self.route(&session, env.sender, msg);
        }
        handled.ack
    }

    /// A coordinator asks this node to sign a round's settlement batch: session
    /// admission, the netting checks (which store the attempt and write
    /// `settlement_approved`), then a signer whose share is released only after its
    /// `share_contributed` record.
    /// Quarantines a peer proven to misbehave (signed evidence), once, audited.
    fn quarantine(&mut self, peer: NodeId, reason: &str) {
        if self.quarantined.insert(peer) {
            self.record(
                AuditKind::PeerQuarantined { peer },
                json!({ "reason": reason }),
            );
            tracing::error!(peer = %peer, "peer quarantined");
        }
    }

    fn on_settle_request(&mut self, env: Envelope) -> Ack {
        if let Err(ack) = self.admit_coordinator_session(&env, "request signatures") {
            return ack;
        }
        let Payload::SettleRequest {
            round,
            views,
            message,
        } = &env.payload
        else {
            return reject("malformed", "not a settle request");
        };
        let (netting, mut ctx) = self.netting_ctx();
        let approved = match netting.on_settle(&mut ctx, &env, round, views, message) {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(round = %round, error = %e, "settlement refused");
                return e.ack();
            }
        };
        for c in &approved.culprits {
            self.quarantine(
                *c,
                &format!("round {round}: its signed public share fails its commitment"),
            );
        }
        let Some(key) = self.keys.get(&approved.key_id) else {
            return reject(
                "unknown_key",
                format!("no share of key {}", approved.key_id),
            );
        };
        let signer = match Signer::new(
            self.identity.clone(),
            &key.share,
            SignerConfig {
                session: env.session,
                coordinator: env.sender,
                target: SignTarget {
                    message: approved.message,
                    tweak: None,
                },
                timeout_ms: self.limits.session_timeout_ms,
            },
        ) {
            Ok(s) => s,
            Err(e) => return reject("bad_parameters", e.to_string()),
        };
        self.start_session(
            env.session,
            Party::Signer(signer),
            "settle",
            (env.sender, env.key),
            Some(SignContext {
                request_hash: approved.request_hash,
                message_hash: approved.message_hash,
            }),
            Input::Start,
        );
        Ack::Accepted
    }

    fn admit_new_session(&self, session: &SessionId) -> Result<(), Ack> {
        if self.shutting_down {
            return Err(reject("shutting_down", "node is shutting down"));
        }
        if self.audit_failed {
            return Err(reject(
                "audit_unavailable",
                "audit log cannot be written; node refuses to act",
            ));
        }
        if self.sessions.contains_key(session) || self.finished.contains(session) {
            return Err(reject("session_exists", "session id already used"));
        }
        if self.sessions.len() >= self.limits.max_sessions {
            return Err(reject(
                "busy",
                format!("{} sessions running", self.sessions.len()),
            ));
        }
        Ok(())
    }

    /// A new session may only be opened by a roster coordinator, and only when
    /// [`Self::admit_new_session`] allows it.
    fn admit_coordinator_session(&self, env: &Envelope, action: &str) -> Result<(), Ack> {
        if !self.roster.is_coordinator(&env.sender) {
            return Err(reject(
                "not_coordinator",
                format!("only a roster coordinator may {action}"),
            ));
        }
        self.admit_new_session(&env.session)
    }

    fn on_dkg_start(&mut self, env: Envelope) -> Ack {
        if let Err(ack) = self.admit_coordinator_session(&env, "start a DKG") {
            return ack;
        }
        let Payload::DkgStart {
            threshold,
            committee,
            timeout_ms,
            segments,
        } = &env.payload
        else {
            return reject("malformed", "not a DKG start");
        };
        if self.keys.contains_key(&env.key) {
            return reject("key_exists", format!("key {} already exists", env.key));
        }
        // The coordinator may choose members, not invent them.
        if let Err(ack) =
            crate::lifecycle::admit::check_committee_in_roster(&self.roster, committee)
        {
            return ack;
        }
        if let Err(ack) =
            crate::lifecycle::admit::check_residency(&self.roster, committee, segments)
        {
            return ack;
        }
        if let Err(ack) = self.check_dkg_spread(*threshold, committee) {
            return ack;
        }
        let config = DkgConfig {
            suite: env.suite,
            key_id: env.key,
            session: env.session,
            threshold: *threshold,
            committee: committee.clone(),
            timeout_ms: (*timeout_ms).min(self.limits.session_timeout_ms.saturating_mul(4)),
            coordinator: env.sender,
            start: Some(env.clone()),
        };
        let dkg = match Dkg::new(self.identity.clone(), config) {
            Ok(d) => d,
            Err(e) => return reject("bad_parameters", e.to_string()),
        };
        // A session id or key id is used once, across restarts.
        match self.keystore.claim_dkg_run(&env.session, &env.key) {
            Ok(true) => {}
            Ok(false) => {
                return reject(
                    "session_exists",
                    format!(
                        "DKG session {} or key id {} was already used here",
                        env.session, env.key
                    ),
                )
            }
            Err(e) => {
                tracing::error!(error = %e, "keystore write failed: refusing the DKG");
                return reject("keystore_unavailable", e.to_string());
            }
        }
        tracing::info!(session = %env.session, key = %env.key, suite = %env.suite, t = threshold, n = committee.len(), "DKG started");
        self.dkg_segments.insert(env.session, segments.clone());
        self.start_session(
            env.session,
            Party::Dkg(dkg),
            "dkg",
            (env.sender, env.key),
            None,
            Input::Start,
        );
        Ack::Accepted
    }

    /// The node's own floor on what it generates keys for: a threshold of at least
    /// `min_dkg_threshold` and a committee spanning `min_dkg_segments` roster segments.
    fn check_dkg_spread(&self, threshold: u16, committee: &Committee) -> Result<(), Ack> {
        if threshold < self.limits.min_dkg_threshold {
            return Err(reject(
                "bad_parameters",
                format!(
                    "threshold {threshold} is below this node's minimum {}",
                    self.limits.min_dkg_threshold
                ),
            ));
        }
        let segments: BTreeSet<&str> = committee
            .members()
            .iter()
            .filter_map(|m| self.roster.by_node(&m.node)?.signer.as_ref())
            .map(|(_, segment, _)| segment.as_str())
            .collect();
        if segments.len() < self.limits.min_dkg_segments {
            return Err(reject(
                "bad_parameters",
                format!(
                    "committee spans {} segment(s); this node requires {}",
                    segments.len(),
                    self.limits.min_dkg_segments
                ),
            ));
        }
        Ok(())
    }

    /// A coordinator asks this node to sign one message of a client request in two
    /// rounds: the request passes [`Self::approve_message`], then a signer is
    /// started that commits fresh nonces.
    fn on_sign_request(&mut self, env: Envelope) -> Ack {
        match self.admit_sign_request(&env) {
            Ok(ack) | Err(ack) => ack,
        }
    }

    fn admit_sign_request(&mut self, env: &Envelope) -> Result<Ack, Ack> {
        let Payload::SignRequest {
            request,
            message,
            tweak,
            certificate,
        } = &env.payload
        else {
            return Err(reject("malformed", "not a sign request"));
        };
        let (key, context) = self.approve_message(env, request, message, tweak, certificate)?;
        let signer = Signer::new(
            self.identity.clone(),
            &key.share,
            self.signer_config(env, message, tweak),
        )
        .map_err(|e| reject("bad_parameters", e.to_string()))?;
        self.start_session(
            env.session,
            Party::Signer(signer),
            "sign",
            (env.sender, env.key),
            Some(context),
            Input::Start,
        );
        Ok(Ack::Accepted)
    }

    /// What a signing session of `env`'s coordinator signs.
    fn signer_config(
        &self,
        env: &Envelope,
        message: &[u8],
        tweak: &Option<[u8; 32]>,
    ) -> SignerConfig {
        SignerConfig {
            session: env.session,
            coordinator: env.sender,
            target: SignTarget {
                message: message.to_vec(),
                tweak: *tweak,
            },
            timeout_ms: self.limits.session_timeout_ms,
        }
    }

    /// A coordinator asks this node to sign one message in one round with nonces it
    /// presigned: the nonces the envelope names are taken from this node's pool for
    /// that coordinator — refused when not held — then the request passes the same
    /// checks as [`Self::on_sign_request`] (so the same audit records), and the
    /// signer answers the package at once.
    fn on_presigned_sign(&mut self, env: Envelope) -> Ack {
        match self.admit_presigned_sign(env) {
            Ok(ack) | Err(ack) => ack,
        }
    }

    fn admit_presigned_sign(&mut self, env: Envelope) -> Result<Ack, Ack> {
        let Payload::PresignedSign {
            request,
            message,
            tweak,
            epoch,
            index,
            certificate,
            ..
        } = &env.payload
        else {
            return Err(reject("malformed", "not a presigned sign request"));
        };
        // Session admission (a repeated session is refused as such, not as used
        // nonces), then the nonces: a request naming nonces this node does not
        // hold costs the client no attempt and writes nothing. Taken here they are
        // dropped (zeroized) if a later check refuses the request.
        self.admit_coordinator_session(&env, "request signatures")?;
        let now = self.now();
        let nonces = self
            .presign
            .take(env.sender, env.key, *epoch, *index, now, &self.metrics)
            .map_err(|e| {
                let reason = match e {
                    ProtocolError::PresignUsed { .. } => "presign_used",
                    _ => "presign_unknown",
                };
                tracing::warn!(coordinator = %env.sender, error = %e, "presigned request refused");
                reject(reason, e.to_string())
            })?;
        let (key, context) = self.approve_message(&env, request, message, tweak, certificate)?;
        let signer = Signer::presigned(
            self.identity.clone(),
            &key.share,
            self.signer_config(&env, message, tweak),
            nonces,
        )
        .map_err(|e| reject("bad_parameters", e.to_string()))?;
        let (session, coordinator, key_id) = (env.session, env.sender, env.key);
        self.start_session(
            session,
            Party::Signer(signer),
            "sign",
            (coordinator, key_id),
            Some(context),
            Input::Message(env),
        );
        self.send_presign_offers();
        Ok(Ack::Accepted)
    }

    /// The checks every signing session of a client request passes, in order, each
    /// refusing it on its own (invariant 11): session admission, decoding, key, then
    /// — on first sight — the client's authentication *before anything is
    /// written*, its bounded audit record and the policy decision, or — on a retry —
    /// a re-check against the current policy; then the window certificate where the
    /// policy asks for one (`window`); then the message and tweak must be the
    /// client's, the per-message attempt bound holds, and a `sign_attempt` record is
    /// written (before the signer exists).
    fn approve_message(
        &mut self,
        env: &Envelope,
        request: &[u8],
        message: &[u8],
        tweak: &Option<[u8; 32]>,
        certificate: &quorate_protocol::window::WindowCertificate,
    ) -> Result<(StoredKey, SignContext), Ack> {
        self.admit_coordinator_session(env, "request signatures")?;
        let signed = SignedRequest::decode(request)
            .map_err(|e| reject("malformed_request", e.to_string()))?;
        let key = self.key_for_request(env, &signed)?;
        let hash = signed.request.hash();
        let context = SignContext {
            request_hash: hash,
            message_hash: message_hash(message),
        };
        // A retry naming a message the approval does not hold is refused before
        // any policy work.
        if self.approvals.contains_key(&hash) {
            self.check_within_approval(env, &context, tweak)?;
        }
        self.admit_client_request(&signed, &key, hash)?;
        self.check_window_certificate(&signed, &key, &hash, certificate)?;
        self.check_within_approval(env, &context, tweak)?;
        self.count_attempt(env, &key, &context)?;
        Ok((key, context))
    }

    /// The policy step every session of a client request passes (signing and
    /// window approval alike): first sight decides and records
    /// ([`Self::decide_new_request`]), a later session re-checks against the
    /// policy in force ([`Self::recheck_approval`]).
    fn admit_client_request(
        &mut self,
        signed: &SignedRequest,
        key: &StoredKey,
        hash: [u8; 32],
    ) -> Result<(), Ack> {
        let now_ms = unix_ms();
        if self.approvals.contains_key(&hash) {
            self.recheck_approval(signed, key, hash, now_ms)
        } else {
            self.decide_new_request(signed, key, hash, now_ms)
        }
    }

    /// The roster coordinator behind a libp2p peer, if it is one.
    fn coordinator_of(&self, peer: &PeerId) -> Option<NodeId> {
        self.roster
            .by_peer_id(peer)
            .map(|p| p.node)
            .filter(|n| self.roster.is_coordinator(n))
    }

    /// A coordinator connected: a new presign pool (new epoch) for every key held,
    /// offered to it.
    fn coordinator_connected(&mut self, peer: &PeerId) {
        let Some(coordinator) = self.coordinator_of(peer) else {
            return;
        };
        let now = self.now();
        let offers: Vec<_> = self
            .keys
            .values()
            .filter_map(|k| {
                self.presign
                    .open(coordinator, &k.share, now, &mut OsRng, &self.metrics)
            })
            .collect();
        for o in offers {
            self.send_offer(o);
        }
    }

    /// A new key: a presign pool for it with every connected coordinator.
    fn open_pools_for(&mut self, key_id: &KeyId) {
        let Some(share) = self.keys.get(key_id).map(|k| k.share.clone()) else {
            return;
        };
        let connected: Vec<NodeId> = self
            .roster
            .peers()
            .iter()
            .filter(|p| self.roster.is_coordinator(&p.node) && self.swarm.is_connected(&p.peer_id))
            .map(|p| p.node)
            .collect();
        let now = self.now();
        for c in connected {
            if let Some(o) = self.presign.open(c, &share, now, &mut OsRng, &self.metrics) {
                self.send_offer(o);
            }
        }
    }

    /// Tops up pools below their threshold and sends the offers.
    fn send_presign_offers(&mut self) {
        let now = self.now();
        for o in self.presign.refill(now, &mut OsRng, &self.metrics) {
            self.send_offer(o);
        }
    }

    fn send_offer(&mut self, o: crate::presign::OfferOut) {
        let Payload::PresignOffer { epoch, first, .. } = &o.payload else {
            return;
        };
        // One session id per offer: its epoch and first index.
        let mut session = [0u8; 32];
        session[..16].copy_from_slice(epoch);
        session[16..24].copy_from_slice(&first.to_be_bytes());
        let env = Envelope::seal(
            &self.identity,
            o.suite,
            o.key,
            SessionId(session),
            o.payload,
        );
        let Some(peer) = self.roster.net(&o.coordinator).map(|p| p.peer_id) else {
            return;
        };
        // Never re-sent: a late copy of an old offer could make the coordinator's
        // book fall back to an epoch this node dropped. A lost offer costs only
        // presigning until the next pool (the coordinator signs in two rounds).
        self.send_tracked(peer, Frame::Deliver(env), MAX_RESENDS);
    }

    /// The key share the request names, which must be the envelope's key and suite.
    fn key_for_request(&self, env: &Envelope, signed: &SignedRequest) -> Result<StoredKey, Ack> {
        let Some(key) = self.keys.get(&signed.request.key_id).cloned() else {
            return Err(reject(
                "unknown_key",
                format!("no share of key {}", signed.request.key_id),
            ));
        };
        if env.key != signed.request.key_id || env.suite != key.share.public.suite {
            return Err(reject(
                "request_mismatch",
                "envelope key or suite differs from the client request",
            ));
        }
        if self.lifecycle.finish_pending(&signed.request.key_id) {
            return Err(reject(
                "finish_pending",
                format!(
                    "this node confirmed a new generation of key {} and waits for the \
                     coordinator's finish proof (or abort) before it signs again",
                    signed.request.key_id
                ),
            ));
        }
        if self.lifecycle.is_running(&signed.request.key_id) {
            return Err(reject(
                "resharing",
                format!(
                    "key {} is being refreshed or reshared; its shares are not used until the run ends",
                    signed.request.key_id
                ),
            ));
        }
        Ok(key)
    }

    /// First sight of a request: authenticate the client before writing anything,
    /// then record the request (every field bounded by `validate`), decide, record
    /// the decision, and remember an allowed request's approval.
    fn decide_new_request(
        &mut self,
        signed: &SignedRequest,
        key: &StoredKey,
        hash: [u8; 32],
        now_ms: u64,
    ) -> Result<(), Ack> {
        // Nothing unauthenticated reaches the log, and a request refused a moment ago
        // is not recorded again: both are answered `policy:<rule>` and counted under
        // `quorate_rejected_messages_total` only, so `quorate_policy_refusals_total`
        // stays equal to the refusals in the audit log.
        if let Err(Decision::Refuse { rule, detail }) = self.policy.authenticate(signed) {
            tracing::warn!(
                rule = rule.name(),
                ?detail,
                "unauthenticated request refused"
            );
            return Err(unrecorded_refusal(rule, detail));
        }
        self.not_refused_recently(&hash, now_ms)?;
        let r = &signed.request;
        // Parsed once; the decision and every later session reuse it.
        let parsed = r
            .transaction(&key.share.public)
            .ok()
            .flatten()
            .map(std::sync::Arc::new);
        let effect = self
            .policy
            .effect(r, &key.share.public, parsed.as_deref())
            .ok();
        let targets = crate::request_record::targets(r, effect.as_ref());
        self.record_or_refuse(
            AuditKind::RequestReceived {
                request_hash: hex::encode(hash),
            },
            crate::request_record::received(r, effect.as_ref(), &targets),
        )?;
        let decision =
            self.policy
                .evaluate_parsed(signed, &key.share.public, now_ms, parsed.as_deref());
        let (allowed, rule, detail) = match &decision {
            Decision::Allow { client } => (true, None, client.clone()),
            Decision::Refuse { rule, detail } => (false, Some(*rule), detail.clone()),
            #[allow(unreachable_patterns)]
            _ => (false, None, "unknown decision".into()),
        };
        self.record_or_refuse(
            AuditKind::PolicyDecision { allowed, rule },
            json!({ "request_hash": hex::encode(hash), "detail": detail }),
        )?;
        if let Some(rule) = rule {
            self.refused.insert(hash, rule, detail.clone(), now_ms);
            return Err(self.refusal(rule, &detail));
        }
        self.approvals.insert(
            hash,
            Approval {
                message_hashes: targets.iter().map(|t| message_hash(&t.message)).collect(),
                tweaks: targets.iter().map(|t| t.tweak).collect(),
                key_id: r.key_id,
                expires_at_ms: r.expires_at_ms,
                attempts: BTreeMap::new(),
                transaction: parsed,
            },
        );
        Ok(())
    }

    /// A request allowed earlier must still pass the current policy (a reload may
    /// have revoked the client, its key or its limits since).
    /// A refusing re-check is recorded (once: repeats within a minute are refused
    /// from the refused cache without a record).
    fn recheck_approval(
        &mut self,
        signed: &SignedRequest,
        key: &StoredKey,
        hash: [u8; 32],
        now_ms: u64,
    ) -> Result<(), Ack> {
        self.not_refused_recently(&hash, now_ms)?;
        let parsed = self.parsed_transaction(signed, key, &hash);
        match self
            .policy
            .recheck_parsed(signed, &key.share.public, now_ms, parsed.as_deref())
        {
            Decision::Refuse { rule, detail } => {
                self.record_or_refuse(
                    AuditKind::PolicyDecision {
                        allowed: false,
                        rule: Some(rule),
                    },
                    json!({ "request_hash": hex::encode(hash), "detail": detail, "recheck": true }),
                )?;
                self.refused.insert(hash, rule, detail.clone(), now_ms);
                Err(self.refusal(rule, &detail))
            }
            _ => Ok(()),
        }
    }

    /// The approved request's parsed transaction: kept with its approval, or
    /// parsed (once after a restart) and kept there.
    fn parsed_transaction(
        &mut self,
        signed: &SignedRequest,
        key: &StoredKey,
        hash: &[u8; 32],
    ) -> Option<std::sync::Arc<quorate_protocol::psbt::TransactionSummary>> {
        let approval = self.approvals.get_mut(hash)?;
        if approval.transaction.is_none() {
            approval.transaction = signed
                .request
                .transaction(&key.share.public)
                .ok()
                .flatten()
                .map(std::sync::Arc::new);
        }
        approval.transaction.clone()
    }

    /// A request refused by policy less than a minute ago is refused again from
    /// memory, without another record.
    fn not_refused_recently(&self, hash: &[u8; 32], now_ms: u64) -> Result<(), Ack> {
        match self.refused.get(hash, now_ms) {
            Some((rule, detail)) => Err(unrecorded_refusal(rule, detail)),
            None => Ok(()),
        }
    }

    /// Counts and logs a policy refusal, and answers it as `policy:<rule>`.
    fn refusal(&mut self, rule: crate::policy::Rule, detail: &str) -> Ack {
        self.metrics
            .policy_refusals
            .get_or_create(&Label {
                label: rule.name().into(),
            })
            .inc();
        tracing::warn!(rule = rule.name(), ?detail, "request refused by policy");
        reject(&format!("policy:{}", rule.name()), detail)
    }

    /// Sign only what the client signed: one of its messages, its tweak, its key.
    fn check_within_approval(
        &self,
        env: &Envelope,
        context: &SignContext,
        tweak: &Option<[u8; 32]>,
    ) -> Result<(), Ack> {
        let Some(approval) = self.approvals.get(&context.request_hash) else {
            return Err(reject("internal", "approval missing"));
        };
        let approved = approval
            .message_hashes
            .iter()
            .zip(&approval.tweaks)
            .any(|(m, t)| *m == context.message_hash && t == tweak);
        if !approved || approval.key_id != env.key {
            return Err(reject(
                "request_mismatch",
                "message or tweak is not part of the client's signed request",
            ));
        }
        Ok(())
    }

    /// Each message of a request is signed in at most `n − t + 1` sessions here (the
    /// coordinator's retry bound), counted across restarts through `sign_attempt`
    /// records, which are written before the signer exists.
    fn count_attempt(
        &mut self,
        env: &Envelope,
        key: &StoredKey,
        context: &SignContext,
    ) -> Result<(), Ack> {
        let public = &key.share.public;
        let bound = u32::try_from(public.members.len())
            .unwrap_or(u32::MAX)
            .saturating_sub(u32::from(public.threshold))
            .saturating_add(1);
        let Some(approval) = self.approvals.get(&context.request_hash) else {
            return Err(reject("internal", "approval missing"));
        };
        let done = approval
            .message_hashes
            .iter()
            .all(|m| approval.attempts.get(m).copied().unwrap_or(0) >= bound);
        if done {
            return Err(reject(
                "request_exhausted",
                format!("every message of this request was already signed in {bound} sessions"),
            ));
        }
        let attempt = approval
            .attempts
            .get(&context.message_hash)
            .copied()
            .unwrap_or(0)
            + 1;
        if attempt > bound {
            return Err(reject(
                "too_many_attempts",
                format!("this message was already signed in {bound} sessions (n − t + 1)"),
            ));
        }
        self.record_or_refuse(
            AuditKind::SignAttempt {
                session: env.session,
                request_hash: hex::encode(context.request_hash),
            },
            json!({
                "message_hash": hex::encode(context.message_hash),
                "attempt": attempt,
                "key_id": env.key.to_string(),
            }),
        )?;
        if let Some(a) = self.approvals.get_mut(&context.request_hash) {
            a.attempts.insert(context.message_hash, attempt);
        }
        Ok(())
    }

    fn start_session(
        &mut self,
        id: SessionId,
        party: Party,
        kind: &'static str,
        (coordinator, key_id): (NodeId, KeyId),
        request: Option<SignContext>,
        first: Input,
    ) {
        self.sessions.insert(
            id,
            Session {
                party,
                kind,
                coordinator,
                key_id,
                request,
                started: Instant::now(),
                deadline: None,
            },
        );
        self.metrics.active_sessions.set(self.sessions.len() as i64);
        self.feed(&id, first);
        if let Some((_, buffered)) = self.pending.remove(&id) {
            self.unbuffer(&buffered);
            for (env, _) in buffered {
                self.feed(&id, Input::Message(env));
            }
        }
    }

    fn on_protocol_message(&mut self, env: Envelope) -> Ack {
        let id = env.session;
        if self.sessions.contains_key(&id) {
            self.feed(&id, Input::Message(env));
            return Ack::Accepted;
        }
        if self.finished.contains(&id) {
            return Ack::Accepted; // late duplicate of a finished session: idempotent
        }
        // A peer may be ahead of us (its DKG start arrived first): buffer, bounded in
        // messages and bytes, in all and per sender.
        let size = env.encode().len();
        if self.pending_count >= self.limits.max_pending_messages
            || self.pending_bytes + size > self.limits.max_pending_bytes
        {
            return reject("busy", "too many buffered messages");
        }
        let (held, bytes) = self
            .pending_by_sender
            .get(&env.sender)
            .copied()
            .unwrap_or((0, 0));
        if held >= self.limits.max_pending_per_peer
            || bytes + size > self.limits.max_pending_bytes_per_peer
        {
            return reject(
                "busy",
                format!(
                    "too many buffered messages from {} ({held} messages, {bytes} bytes)",
                    env.sender
                ),
            );
        }
        self.pending_by_sender
            .insert(env.sender, (held + 1, bytes + size));
        self.pending_count += 1;
        self.pending_bytes += size;
        self.pending
            .entry(id)
            .or_insert_with(|| (Instant::now(), VecDeque::new()))
            .1
            .push_back((env, size));
        Ack::Accepted
    }

    /// Forgets buffered messages in the global and per-sender counts.
    fn unbuffer(&mut self, msgs: &VecDeque<(Envelope, usize)>) {
        self.pending_count -= msgs.len();
        for (env, size) in msgs {
            self.pending_bytes -= size;
            if let Some((held, bytes)) = self.pending_by_sender.get_mut(&env.sender) {
                *held -= 1;
                *bytes -= size;
                if *held == 0 {
                    self.pending_by_sender.remove(&env.sender);
                }
            }
        }
    }

    fn feed(&mut self, id: &SessionId, input: Input) {
        let now = self.now();
        let Some(session) = self.sessions.get_mut(id) else {
            return;
        };
        let result = session.party.handle(now, input, &mut OsRng);
        let request = session.request;
        let key_id = session.key_id;
        match result {
            Ok(outputs) => {
                let record = || share_record(request, key_id, id);
                let outputs = match release(&mut self.audit, record, outputs) {
                    Ok(outputs) => outputs,
                    Err(e) => {
                        if e.is_log_failure() {
                            self.audit_failed = true;
                        }
                        tracing::error!(session = %id, error = %e, "share not sent: its audit record cannot be written");
                        self.end_session(id, "audit_failed", Vec::new());
                        return;
                    }
                };
                for o in outputs {
                    match o {
                        Output::Send { to, msg } => self.route(id, to, msg),
                        Output::SetTimer { at, .. } => {
                            if let Some(s) = self.sessions.get_mut(id) {
                                let delay = at.0.saturating_sub(now.0);
                                s.deadline = Some(Instant::now() + Duration::from_millis(delay));
                            }
                        }
                        Output::Done(outcome) => {
                            // A step whose result could not be kept releases
                            // nothing after it (a reshare confirmation must not
                            // leave before its share is durable).
                            if !self.on_done(id, outcome) {
                                break;
                            }
                        }
                    }
                }
            }
            Err(e) if e.is_fatal() => self.on_fatal(id, &e),
            Err(e) => {
                let reason = match &e {
                    ProtocolError::BadSignature { .. } => "bad_signature",
                    ProtocolError::WrongContext(_) => "wrong_context",
                    ProtocolError::UnknownSender(_) => "unknown_sender",
                    ProtocolError::UnexpectedRound { .. } => "unexpected_round",
                    _ => "invalid_message",
                };
                tracing::debug!(session = %id, error = %e, "message dropped");
                self.metrics.reject(reason);
            }
        }
    }

    fn route(&mut self, session: &SessionId, to: NodeId, msg: Envelope) {
        let coordinator = self.sessions.get(session).map(|s| s.coordinator);
        let direct = self.routing == Routing::Direct || self.roster.is_coordinator(&to);
        let (peer, frame) = match (direct, coordinator) {
            (false, Some(c)) if c != to => (c, Frame::Relay { to, envelope: msg }),
            _ => (to, Frame::Deliver(msg)),
        };
        let Some(peer_id) = self.roster.net(&peer).map(|p| p.peer_id) else {
            tracing::warn!(%peer, "no roster entry to send to");
            return;
        };
        let family = transport::family(&frame).label();
        self.metrics
            .traffic(family, "out", frame.envelope().encode().len());
        self.send_tracked(peer_id, frame, 0);
    }

    /// A session's result; `false` when the rest of the step must not be released.
    fn on_done(&mut self, id: &SessionId, outcome: Outcome) -> bool {
        let Some(session) = self.sessions.get(id) else {
            return false;
        };
        if let Outcome::Reshare(event) = outcome {
            return self.on_reshare_event(id, event);
        }
        if let Outcome::Repair(event) = outcome {
            return self.on_repair_event(id, event);
        }
        let key_id = session.key_id;
        let session_coordinator = session.coordinator;
        match outcome {
            Outcome::Key(share) => {
                let stored = StoredKey {
                    share,
                    created_at_ms: unix_ms(),
                    allowed_segments: self.dkg_segments.remove(id).unwrap_or_default(),
                };
                match self.keystore.put_key(&stored) {
                    Ok(()) => {
                        let suite = stored.share.public.suite;
                        self.lifecycle.generated(key_id);
                        self.metrics.key_state(
                            &key_id.to_string(),
                            0,
                            stored.share.public.members.len(),
                            None,
                        );
                        self.record(
                            AuditKind::KeyGenerated { key_id, suite },
                            json!({
                                "threshold": stored.share.public.threshold,
                                "participants": stored.share.public.members.len(),
                                "group_key": hex::encode(&stored.share.public.verifying_key),
                            }),
                        );
                        tracing::info!(key = %key_id, %suite, "key generated and stored");
                        // Tell the coordinator what we derived (public data only),
                        // attested with our identity key for clients (invariant 9).
                        let public = stored.share.public.clone();
                        self.keys.insert(key_id, stored);
                        self.report_key(id, session_coordinator, public);
                        self.open_pools_for(&key_id);
                    }
                    Err(e) => tracing::error!(error = %e, key = %key_id, "cannot store key share"),
                }
            }
            // Recorded before the share left (see `release`).
            Outcome::Share(_)
            | Outcome::Signature(_)
            | Outcome::Reshare(_)
            | Outcome::Repair(_) => {}
        }
        self.end_session(id, "done", Vec::new());
        true
    }

    fn on_fatal(&mut self, id: &SessionId, e: &ProtocolError) {
        let culprits = e.culprits();
        tracing::warn!(session = %id, error = %e, "session aborted");
        let provable = match e {
            ProtocolError::Equivocation { culprit, .. } => {
                self.metrics
                    .equivocations
                    .get_or_create(&Label {
                        label: culprit.to_string(),
                    })
                    .inc();
                true
            }
            ProtocolError::Aborted { fault, culprits } if *fault != Fault::Timeout => {
                for c in culprits {
                    self.metrics
                        .invalid_shares
                        .get_or_create(&Label {
                            label: c.to_string(),
                        })
                        .inc();
                }
                // A coordinator that alters packages is refused, not quarantined.
                !matches!(fault, Fault::CommitmentAltered)
            }
            _ => false,
        };
        if provable {
            for c in &culprits {
                self.quarantine(*c, &e.to_string());
            }
        }
        let outcome = if matches!(
            e,
            ProtocolError::Aborted {
                fault: Fault::Timeout,
                ..
            }
        ) {
            "timeout"
        } else {
            "failed"
        };
        self.end_session(id, outcome, culprits);
    }

    fn end_session(&mut self, id: &SessionId, outcome: &str, culprits: Vec<NodeId>) {
        let Some(session) = self.sessions.remove(id) else {
            return;
        };
        self.lifecycle.ended(id);
        self.dkg_segments.remove(id);
        self.repairs.remove(id);
        if outcome != "done" {
            self.record(
                AuditKind::SessionAborted {
                    session: *id,
                    culprits,
                },
                json!({ "outcome": outcome, "kind": session.kind }),
            );
        }
        self.finished.insert(*id);
        self.metrics
            .sessions
            .get_or_create(&SessionLabels {
                kind: session.kind.into(),
                outcome: outcome.into(),
            })
            .inc();
        self.metrics
            .session_seconds
            .get_or_create(&Label {
                label: session.kind.into(),
            })
            .observe(session.started.elapsed().as_secs_f64());
        self.metrics.active_sessions.set(self.sessions.len() as i64);
    }

    /// Sends a frame (held until the group commit while audit records are pending),
    /// kept until answered so a failed send can be retried.
    fn send_tracked(&mut self, peer: PeerId, frame: Frame, tries: u32) {
        // Held while records are pending, and behind frames already held (a
        // durable `append` elsewhere in the batch must not let later frames
        // overtake them).
        if self.audit.pending() > 0 || !self.held.is_empty() {
            self.held.push((peer, frame, tries));
            return;
        }
        self.send_now(peer, frame, tries);
    }

    /// Makes the batch's audit records durable (one sync, one anchor update), then
    /// sends the frames held for them. If the log cannot be synced the node fails
    /// closed: the held frames are dropped, never sent.
    fn commit_audit(&mut self) {
        if self.audit.pending() > 0 {
            if let Err(e) = self.audit.commit() {
                if !self.audit_failed {
                    tracing::error!(error = %e, held = self.held.len(), "audit log commit failed: refusing to sign from now on; held messages dropped");
                }
                self.audit_failed = true;
                self.held.clear();
                return;
            }
        }
        for (peer, frame, tries) in std::mem::take(&mut self.held) {
            self.send_now(peer, frame, tries);
        }
    }

    fn send_now(&mut self, peer: PeerId, frame: Frame, tries: u32) {
        let id = transport::send(&mut self.swarm, &peer, frame.clone());
        if self.in_flight.len() < self.limits.max_pending_messages {
            self.in_flight.insert(id, (peer, frame, tries));
        }
    }

    /// Dials every roster coordinator this node is not connected to.
    fn dial_coordinators(&mut self) {
        self.coordinator_dial = Instant::now();
        let peers: Vec<PeerId> = self
            .roster
            .data()
            .coordinators()
            .filter_map(|c| self.roster.net(&c.node).map(|p| p.peer_id))
            .collect();
        for peer in peers {
            transport::dial_fresh_port(&mut self.swarm, &peer);
        }
    }

    fn on_tick(&mut self) {
        let now_i = Instant::now();
        if now_i.duration_since(self.coordinator_dial) >= COORDINATOR_REDIAL {
            self.dial_coordinators();
        }
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.resend)
            .into_iter()
            .partition(|(at, ..)| *at <= now_i);
        self.resend = later;
        for (_, peer, frame, tries) in due {
            self.send_tracked(peer, frame, tries);
        }
        let now = Instant::now();
        let due: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.deadline.is_some_and(|d| d <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            if let Some(s) = self.sessions.get_mut(&id) {
                s.deadline = None;
            }
            self.feed(&id, Input::Timeout(TimerId::Deadline));
            // A machine that does not abort at its deadline is ended here.
            if self.sessions.contains_key(&id) {
                self.end_session(&id, "timeout", Vec::new());
            }
        }
        // Drop buffered messages of sessions that never started here in time.
        let max_age = Duration::from_millis(self.limits.session_timeout_ms);
        let expired: Vec<SessionId> = self
            .pending
            .iter()
            .filter(|(_, (since, _))| since.elapsed() >= max_age)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some((_, msgs)) = self.pending.remove(&id) {
                self.unbuffer(&msgs);
            }
        }
        self.send_presign_offers();
        let now_ms = unix_ms();
        self.approvals.retain(|_, a| a.expires_at_ms > now_ms);
        self.window.expire(now_ms);
        self.netting.expire(now_ms / 1000);
        if self.finished.len() > 100_000 {
            self.finished.clear();
        }
    }
}

/// A policy refusal that writes no audit record (unauthenticated, or repeated):
/// answered `policy:<rule>`, counted only under `quorate_rejected_messages_total`.
fn unrecorded_refusal(rule: crate::policy::Rule, detail: String) -> Ack {
    reject(&format!("policy:{}", rule.name()), detail)
}

/// Recently refused requests (see `Node::refused`).
#[derive(Default)]
struct RefusedCache {
    by_hash: BTreeMap<[u8; 32], (u64, crate::policy::Rule, String)>,
    order: VecDeque<[u8; 32]>,
}

impl RefusedCache {
    const CAPACITY: usize = 4096;
    const TTL_MS: u64 = 60_000;

    fn get(&self, hash: &[u8; 32], now_ms: u64) -> Option<(crate::policy::Rule, String)> {
        self.by_hash
            .get(hash)
            .filter(|(until, ..)| *until > now_ms)
            .map(|(_, rule, detail)| (*rule, detail.clone()))
    }

    fn insert(&mut self, hash: [u8; 32], rule: crate::policy::Rule, detail: String, now_ms: u64) {
        if self.order.len() >= Self::CAPACITY {
            if let Some(old) = self.order.pop_front() {
                self.by_hash.remove(&old);
            }
        }
        if self
            .by_hash
            .insert(hash, (now_ms + Self::TTL_MS, rule, detail))
            .is_none()
        {
            self.order.push_back(hash);
        }
    }
}

/// The `share_contributed` record of a signing session's share (`None` for a session
/// that signs no client request).
fn share_record(
    request: Option<SignContext>,
    key_id: KeyId,
    id: &SessionId,
) -> Option<(AuditKind, serde_json::Value)> {
    let context = request?;
    Some((
        AuditKind::ShareContributed {
            key_id,
            session: *id,
        },
        json!({
            "request_hash": hex::encode(context.request_hash),
            "message_hash": hex::encode(context.message_hash),
        }),
    ))
}

/// What one step of a session may release. A step that produces this node's
/// signature share is released only after its `share_contributed` record (request
/// hash, message hash, session) is appended and synced; if that fails, nothing of
/// the step is released and the share never leaves the node (no signature without
/// an audit record).
///
/// `share_record` is called only for a step that produces a share (most steps do
/// not: this is the message path).
fn release(
    audit: &mut AuditLog,
    share_record: impl FnOnce() -> Option<(AuditKind, serde_json::Value)>,
    outputs: Vec<Output<Outcome>>,
) -> Result<Vec<Output<Outcome>>, crate::audit::AuditError> {
    let shares = outputs
        .iter()
        .any(|o| matches!(o, Output::Done(Outcome::Share(_))));
    if shares {
        // A share with nothing to cite is a bug: fail closed rather than send it.
        let (kind, details) = share_record().ok_or_else(|| {
            crate::audit::AuditError::Details("signature share without a signing request".into())
        })?;
        // Durable before the share leaves: the daemon holds every frame until the
        // batch's group commit.
        audit.append_deferred(kind, details)?;
    }
    Ok(outputs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use quorate_protocol::Ciphersuite;
    use rand_chacha::{rand_core::SeedableRng, ChaCha20Rng};

    /// One signer's step that produces its share: the SignShare to the coordinator
    /// and the Done(Share) outcome.
    fn share_step() -> (NodeIdentity, Vec<Output<Outcome>>) {
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        let id = NodeIdentity::generate(&mut rng);
        let share = vec![7; 32];
        let msg = Envelope::seal(
            &id,
            Ciphersuite::Ed25519,
            KeyId([1; 16]),
            SessionId([2; 32]),
            Payload::SignShare {
                share: share.clone(),
            },
        );
        let steps = vec![
            Output::Send {
                to: NodeId([3; 32]),
                msg,
            },
            Output::Done(Outcome::Share(quorate_protocol::sign::ShareSent { share })),
        ];
        (id, steps)
    }

    fn record() -> Option<(AuditKind, serde_json::Value)> {
        Some((
            AuditKind::ShareContributed {
                key_id: KeyId([1; 16]),
                session: SessionId([2; 32]),
            },
            json!({ "request_hash": "aa", "message_hash": "bb" }),
        ))
    }

    #[test]
    fn share_is_released_after_its_audit_record() {
        let dir = tempfile::tempdir().expect("tmp");
        let (id, steps) = share_step();
        let mut audit = AuditLog::open(dir.path().join("a.jsonl"), &id).expect("open");
        let out = release(&mut audit, record, steps).expect("released");
        assert!(out.iter().any(|o| matches!(o, Output::Send { .. })));
        assert_eq!(audit.next_seq(), 1, "the record was written first");
    }

    #[test]
    fn share_is_not_sent_when_the_audit_log_cannot_be_written() {
        let dir = tempfile::tempdir().expect("tmp");
        let (id, steps) = share_step();
        let mut audit = AuditLog::open(dir.path().join("a.jsonl"), &id).expect("open");
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .expect("/dev/full");
        audit.redirect_writes_for_test(full);
        let err = release(&mut audit, record, steps).expect_err("nothing released");
        assert!(err.is_log_failure(), "{err}");
    }

    #[test]
    fn a_share_without_a_request_to_cite_is_not_released() {
        let dir = tempfile::tempdir().expect("tmp");
        let (id, steps) = share_step();
        let mut audit = AuditLog::open(dir.path().join("a.jsonl"), &id).expect("open");
        assert!(release(&mut audit, || None, steps).is_err());
        assert_eq!(audit.next_seq(), 0);
    }

    #[test]
    fn refused_requests_are_remembered_for_a_minute_and_bounded() {
        let mut cache = RefusedCache::default();
        let rule = crate::policy::Rule::AmountLimit;
        cache.insert([1; 32], rule, "too much".into(), 1_000);
        assert_eq!(cache.get(&[1; 32], 2_000), Some((rule, "too much".into())));
        assert_eq!(cache.get(&[1; 32], 1_000 + RefusedCache::TTL_MS), None);
        for i in 0..RefusedCache::CAPACITY as u32 + 10 {
            let mut h = [0u8; 32];
            h[..4].copy_from_slice(&i.to_le_bytes());
            cache.insert(h, rule, String::new(), 1_000);
        }
        assert_eq!(cache.by_hash.len(), RefusedCache::CAPACITY);
        assert_eq!(cache.order.len(), RefusedCache::CAPACITY);
    }

    #[test]
    fn steps_without_a_share_need_no_record() {
        let dir = tempfile::tempdir().expect("tmp");
        let (id, _) = share_step();
        let mut audit = AuditLog::open(dir.path().join("a.jsonl"), &id).expect("open");
        // A signer's round-1 step: its commitments go out, no record is needed.
        let (_, mut steps) = share_step();
        steps.retain(|o| matches!(o, Output::Send { .. }));
        // The record is not even built for such a step (the message path).
        let out = release(
            &mut audit,
            || unreachable!("record built for a non-share step"),
            steps,
        )
        .expect("released");
        assert_eq!(out.len(), 1);
        assert_eq!(audit.next_seq(), 0);
    }
}
