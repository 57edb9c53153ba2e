//! One live round in the engine: the announcement, bundle forwarding, the close
//! and the collection of every node's outputs.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use quorate_protocol::{
    netting::{
        open::inputs_digest, round::RoundAuthorization, InputBundle, PartyOutputs, PublicOutputs,
        RoundSpec,
    },
    roster::Roster,
    wire::frame::Ack,
    Ciphersuite, Envelope, GroupPublic, KeyId, NodeId, NodeIdentity, Payload,
};

use super::{limits::LimitPhase, settle::SettleJob, Reply, Step, Tag};
use crate::{
    error::CoordinatorError,
    netting::{inputs_held_by_all, BundleOutcome, CloseOutcome, NodeAck, RoundOpen, SettleRequest},
};

/// Most bundle submissions of one round in flight at once.
const MAX_BUNDLES_IN_FLIGHT: usize = 256;
/// How long after its cut-off an open round that was never closed is kept.
const OPEN_AFTER_CUTOFF_SECS: u64 = 24 * 60 * 60;

/// Checks that the round's committee is exactly the key's members, each a signer of
/// the roster under the same index and sealing key.
pub(super) fn check_committee(open: &RoundOpen, roster: &Roster) -> Result<(), CoordinatorError> {
    let bad = |m: String| Err(CoordinatorError::InvalidRound(m));
    let public = &open.key.public;
    let members = open.spec.committee.members();
    if members.len() != public.members.len() {
        return bad(format!(
            "the committee has {} members, key {} has {}",
            members.len(),
            public.key_id,
            public.members.len()
        ));
    }
    for m in members {
        if public.members.get(&m.node) != Some(&m.index) {
            return bad(format!(
                "committee member {} (index {}) is not a member of key {} under that index",
                m.node, m.index, public.key_id
            ));
        }
        let in_roster = roster
            .by_node(&m.node)
            .and_then(|p| p.signer.as_ref())
            .is_some_and(|(index, _, seal)| *index == m.index && *seal == m.seal_key);
        if !in_roster {
            return bad(format!(
                "committee member {} does not match the roster (index or seal_key)",
                m.node
            ));
        }
    }
    Ok(())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Answers collected from every member until a deadline.
struct Collect<R> {
    acks: BTreeMap<NodeId, Ack>,
    deadline: Instant,
    reply: R,
}

struct BundleOp {
    party: u32,
    digest: [u8; 32],
    collect: Collect<Reply<BundleOutcome>>,
}

struct CloseOp {
    inputs: Vec<Option<[u8; 32]>>,
    inputs_digest: [u8; 32],
    acks: BTreeMap<NodeId, Ack>,
    public: BTreeMap<NodeId, PublicOutputs>,
    parties: BTreeMap<(u32, NodeId), PartyOutputs>,
    culprits: Vec<NodeId>,
    deadline: Instant,
    reply: Reply<CloseOutcome>,
    /// Limit-checked rounds: the limit phase, once the party outputs are in.
    limits: Option<LimitPhase>,
}

pub(super) struct LiveRound {
    spec: RoundSpec,
    public: GroupPublic,
    members: Vec<NodeId>,
    digests: Vec<Option<[u8; 32]>>,
    held: Vec<Vec<NodeId>>,
    announce: Option<Collect<Reply<Vec<NodeAck>>>>,
    bundles: BTreeMap<u64, BundleOp>,
    next_op: u64,
    closing: bool,
    close_waiting: Option<Reply<CloseOutcome>>,
    close: Option<CloseOp>,
    closed_at: Option<Instant>,
    settle: Option<SettleJob>,
    done: bool,
    /// Deadline of one limit-check attempt.
    limits_timeout: Duration,
    /// Limit-checked rounds, after close: whether a quorum verdict said covered.
    limits_covered: Option<bool>,
}

impl LiveRound {
    pub(super) fn new(spec: RoundSpec, public: GroupPublic, limits_timeout: Duration) -> Self {
        let n = spec.parties.len();
        Self {
            members: spec.committee.nodes().collect(),
            digests: vec![None; n],
            held: vec![Vec::new(); n],
            spec,
            public,
            announce: None,
            bundles: BTreeMap::new(),
            next_op: 0,
            closing: false,
            close_waiting: None,
            close: None,
            closed_at: None,
            settle: None,
            done: false,
            limits_timeout,
            limits_covered: None,
        }
    }

    pub(super) fn spec(&self) -> &RoundSpec {
        &self.spec
    }

    pub(super) fn envelope(&self, identity: &NodeIdentity, payload: Payload) -> Envelope {
        Envelope::seal(
            identity,
            self.public.suite,
            self.spec.key,
            self.spec.session(),
            payload,
        )
    }

    fn tag(&self, step: Step, node: NodeId) -> Tag {
        Tag {
            round: self.spec.id,
            step,
            node,
        }
    }

    fn send_all(
        &self,
        env: impl Fn(usize) -> Envelope,
        step: Step,
        outbox: &mut Vec<(NodeId, Envelope, Tag)>,
    ) {
        for (i, m) in self.members.iter().enumerate() {
            outbox.push((*m, env(i), self.tag(step, *m)));
        }
    }

    fn ordered(&self, acks: &BTreeMap<NodeId, Ack>) -> Vec<NodeAck> {
        self.members
            .iter()
            .map(|m| NodeAck {
                node: *m,
                ack: acks.get(m).cloned().unwrap_or(Ack::Rejected {
                    reason: "timeout".into(),
                    detail: format!("{m} did not answer in time"),
                }),
            })
            .collect()
    }

    // ------------------------------------------------------------ announce

    pub(super) fn announce(
        &mut self,
        identity: &NodeIdentity,
        authorization: &RoundAuthorization,
        reply: Reply<Vec<NodeAck>>,
        deadline: Instant,
        outbox: &mut Vec<(NodeId, Envelope, Tag)>,
    ) {
        if self.announce.is_some() {
            let _ = reply.send(Err(CoordinatorError::Busy(format!(
                "round {} is being announced; retry",
                self.spec.id
            ))));
            return;
        }
        let env = self.envelope(
            identity,
            Payload::NettingRound {
                spec: self.spec.clone(),
                authorization: authorization.clone(),
            },
        );
        self.send_all(|_| env.clone(), Step::Announce, outbox);
        self.announce = Some(Collect {
            acks: BTreeMap::new(),
            deadline,
            reply,
        });
    }

    pub(super) fn on_announce_ack(&mut self, node: NodeId, ack: Ack) {
        if let Some(c) = &mut self.announce {
            c.acks.entry(node).or_insert(ack);
            if c.acks.len() == self.members.len() {
                self.finish_announce();
            }
        }
    }

    fn finish_announce(&mut self) {
        if let Some(c) = self.announce.take() {
            let acks = self.ordered(&c.acks);
            let _ = c.reply.send(Ok(acks));
        }
    }

    // ------------------------------------------------------------ bundles

    pub(super) fn bundle(
        &mut self,
        identity: &NodeIdentity,
        bundle: InputBundle,
        reply: Reply<BundleOutcome>,
        deadline: Instant,
        outbox: &mut Vec<(NodeId, Envelope, Tag)>,
    ) {
        let refuse = |reply: Reply<BundleOutcome>, e| {
            let _ = reply.send(Err(e));
        };
        if self.closing {
            return refuse(
                reply,
                CoordinatorError::RoundConflict(format!(
                    "round {} is closed; bundles are no longer accepted",
                    self.spec.id
                )),
            );
        }
        if self.bundles.len() >= MAX_BUNDLES_IN_FLIGHT {
            return refuse(
                reply,
                CoordinatorError::Busy(format!(
                    "{MAX_BUNDLES_IN_FLIGHT} bundles of this round are being forwarded; retry"
                )),
            );
        }
        let party = bundle.header.party;
        if party as usize >= self.spec.parties.len() || bundle.boxes.len() != self.members.len() {
            return refuse(
                reply,
                CoordinatorError::InvalidRound(format!(
                    "bundle for party index {party} with {} boxes does not fit the round",
                    bundle.boxes.len()
                )),
            );
        }
        let op = self.next_op;
        self.next_op += 1;
        let header = bundle.header;
        let boxes = bundle.boxes;
        let digest = header.digest();
        let envs: Vec<Envelope> = boxes
            .into_iter()
            .map(|sealed| {
                self.envelope(
                    identity,
                    Payload::NettingBundle {
                        header: header.for_nodes(),
                        sealed,
                    },
                )
            })
            .collect();
        self.send_all(|i| envs[i].clone(), Step::Bundle(op), outbox);
        self.bundles.insert(
            op,
            BundleOp {
                party,
                digest,
                collect: Collect {
                    acks: BTreeMap::new(),
                    deadline,
                    reply,
                },
            },
        );
    }

    pub(super) fn on_bundle_ack(&mut self, op: u64, node: NodeId, ack: Ack) {
        let complete = match self.bundles.get_mut(&op) {
            Some(b) => {
                b.collect.acks.entry(node).or_insert(ack);
                b.collect.acks.len() == self.members.len()
            }
            None => false,
        };
        if complete {
            self.finish_bundle(op);
        }
    }

    fn finish_bundle(&mut self, op: u64) {
        let Some(b) = self.bundles.remove(&op) else {
            return;
        };
        let acks = self.ordered(&b.collect.acks);
        let p = b.party as usize;
        for a in acks.iter().filter(|a| a.is_accepted()) {
            if self.digests[p].is_none() {
                self.digests[p] = Some(b.digest);
            }
            if self.digests[p] == Some(b.digest) && !self.held[p].contains(&a.node) {
                self.held[p].push(a.node);
            }
        }
        let _ = b.collect.reply.send(Ok(BundleOutcome {
            party: b.party,
            digest: b.digest,
            acks,
        }));
    }

    // ------------------------------------------------------------ close

    pub(super) fn close(
        &mut self,
        identity: &NodeIdentity,
        reply: Reply<CloseOutcome>,
        deadline: Instant,
        outbox: &mut Vec<(NodeId, Envelope, Tag)>,
    ) {
        if self.closing {
            let _ = reply.send(Err(CoordinatorError::RoundConflict(format!(
                "round {} is already closed",
                self.spec.id
            ))));
            return;
        }
        self.closing = true;
        self.close_waiting = Some(reply);
        self.start_waiting_close(identity, deadline, outbox);
    }

    /// Sends the close once no bundle is in flight any more.
    pub(super) fn start_waiting_close(
        &mut self,
        identity: &NodeIdentity,
        deadline: Instant,
        outbox: &mut Vec<(NodeId, Envelope, Tag)>,
    ) {
        if !self.bundles.is_empty() {
            return;
        }
        let Some(reply) = self.close_waiting.take() else {
            return;
        };
        let inputs = inputs_held_by_all(&self.digests, &self.held, &self.members);
        let env = self.envelope(
            identity,
            Payload::NettingClose {
                round: self.spec.id,
                inputs: inputs.clone(),
            },
        );
        self.send_all(|_| env.clone(), Step::Close, outbox);
        self.close = Some(CloseOp {
            inputs_digest: inputs_digest(&self.spec, &inputs),
            inputs,
            acks: BTreeMap::new(),
            public: BTreeMap::new(),
            parties: BTreeMap::new(),
            culprits: Vec::new(),
            deadline,
            reply,
            limits: None,
        });
    }

    pub(super) fn on_close_ack(&mut self, node: NodeId, ack: Ack) {
        if let Some(c) = &mut self.close {
            c.acks.entry(node).or_insert(ack);
        }
        self.check_close();
    }

    fn context_ok(&self, suite: Ciphersuite, key: KeyId) -> bool {
        suite == self.public.suite && key == self.spec.key
    }

    pub(super) fn on_public(
        &mut self,
        sender: NodeId,
        suite: Ciphersuite,
        key: KeyId,
        outputs: PublicOutputs,
    ) {
        let context = self.context_ok(suite, key);
        let spec = &self.spec;
        let Some(c) = &mut self.close else {
            return;
        };
        let valid =
            context && outputs.node == sender && outputs.check(spec, &c.inputs_digest).is_ok();
        match c.public.get(&sender) {
            _ if !valid => blame(&mut c.culprits, sender, "public outputs fail verification"),
            Some(prev) if *prev != outputs => {
                blame(&mut c.culprits, sender, "two different public outputs")
            }
            Some(_) => {}
            None => {
                c.public.insert(sender, outputs);
            }
        }
        self.check_close();
    }

    pub(super) fn on_party(
        &mut self,
        sender: NodeId,
        suite: Ciphersuite,
        key: KeyId,
        outputs: PartyOutputs,
    ) {
        let context = self.context_ok(suite, key);
        let spec = &self.spec;
        let Some(c) = &mut self.close else {
            return;
        };
        let listed = c
            .inputs
            .get(outputs.party as usize)
            .is_some_and(Option::is_some);
        let valid = context
            && listed
            && outputs.node == sender
            && outputs.check(spec, &c.inputs_digest).is_ok();
        let slot = (outputs.party, sender);
        match c.parties.get(&slot) {
            _ if !valid => blame(&mut c.culprits, sender, "party outputs fail verification"),
            Some(prev) if *prev != outputs => {
                blame(&mut c.culprits, sender, "two different party outputs")
            }
            Some(_) => {}
            None => {
                c.parties.insert(slot, outputs);
            }
        }
        self.check_close();
    }

    /// Finishes the close when every member refused it or sent all its outputs.
    /// A limit-checked round waits for the party outputs only, then runs its limit
    /// phase; the close finishes when that phase does.
    fn check_close(&mut self) {
        let limits = self.spec.limits.is_some();
        let Some(c) = &mut self.close else {
            return;
        };
        let wanted = c.inputs.iter().filter(|d| d.is_some()).count();
        let parties_in = |m: &NodeId| c.parties.keys().filter(|(_, n)| n == m).count() == wanted;
        let refused = |m: &NodeId| matches!(c.acks.get(m), Some(Ack::Rejected { .. }));
        if !limits {
            let complete = self
                .members
                .iter()
                .all(|m| refused(m) || (c.public.contains_key(m) && parties_in(m)));
            if complete {
                self.finish_close();
            }
            return;
        }
        if c.limits.is_none() && self.members.iter().all(|m| refused(m) || parties_in(m)) {
            let refusing: Vec<NodeId> = self
                .members
                .iter()
                .filter(|m| refused(m))
                .copied()
                .collect();
            c.limits = Some(if refusing.is_empty() {
                let mut phase = LimitPhase::new(
                    self.members.clone(),
                    c.inputs.iter().map(Option::is_some).collect(),
                    c.inputs_digest,
                    self.limits_timeout,
                );
                phase.begin(&self.spec);
                phase
            } else {
                LimitPhase::not_started(
                    self.members.clone(),
                    "refused",
                    "limit checks need every committee node; some refused the close".into(),
                    refusing,
                )
            });
        }
        let done = c
            .limits
            .as_ref()
            .is_some_and(|p| p.finished() || p.complete(&c.public));
        if done {
            if let Some(p) = &mut c.limits {
                p.succeed();
            }
            self.finish_close();
        }
    }

    // ------------------------------------------------------------ limits

    /// A node's answer to a `LimitStart` or `LimitPart` of attempt `attempt`.
    pub(super) fn on_limit_ack(&mut self, node: NodeId, attempt: u32, ack: Ack) {
        let spec = &self.spec;
        if let Some(p) = self.close.as_mut().and_then(|c| c.limits.as_mut()) {
            p.on_ack(spec, node, attempt, ack);
        }
        self.check_close();
    }

    /// A member's limit-check envelope (`LimitPart` or `LimitResult`).
    pub(super) fn on_limit_payload(
        &mut self,
        sender: NodeId,
        suite: Ciphersuite,
        key: KeyId,
        payload: Payload,
    ) {
        if !self.context_ok(suite, key) || !self.members.contains(&sender) {
            tracing::debug!(%sender, "limit-check message out of context dropped");
            return;
        }
        let spec = &self.spec;
        let Some(p) = self.close.as_mut().and_then(|c| c.limits.as_mut()) else {
            return;
        };
        match payload {
            Payload::LimitPart {
                round,
                attempt,
                step,
                part,
                parts,
                bytes,
            } if round == spec.id => p.on_part(spec, sender, attempt, step, part, parts, bytes),
            Payload::LimitResult { verdict, bits } => p.on_result(spec, sender, verdict, bits),
            _ => tracing::debug!(%sender, "limit-check payload of another round dropped"),
        }
        self.check_close();
    }

    /// Queues what the limit phase may send now.
    pub(super) fn limit_sends(
        &mut self,
        identity: &NodeIdentity,
        outbox: &mut Vec<(NodeId, Envelope, Tag)>,
    ) {
        let Some(p) = self.close.as_mut().and_then(|c| c.limits.as_mut()) else {
            return;
        };
        let attempt = p.attempt();
        let sends = p.take_sends();
        for (node, payload) in sends {
            let env = self.envelope(identity, payload);
            outbox.push((node, env, self.tag(Step::Limits(attempt), node)));
        }
    }

    fn finish_close(&mut self) {
        let Some(c) = self.close.take() else {
            return;
        };
        let acks = self.ordered(&c.acks);
        let mut parties = vec![Vec::new(); self.spec.parties.len()];
        for ((p, _), o) in c.parties {
            if let Some(v) = parties.get_mut(p as usize) {
                v.push(o);
            }
        }
        let mut culprits = c.culprits;
        let mut public: Vec<PublicOutputs> = c.public.into_values().collect();
        let limits = self.spec.limits.map(|_| {
            let outcome = match c.limits {
                Some(mut p) => {
                    p.succeed();
                    p.into_outcome()
                }
                None => LimitPhase::not_started(
                    self.members.clone(),
                    "timeout",
                    "the party outputs were not all in before the close deadline".into(),
                    Vec::new(),
                )
                .into_outcome(),
            };
            let covered = outcome.verdict(&self.spec).is_ok_and(|v| v.covered);
            self.limits_covered = Some(covered);
            if !covered {
                // Nets' public shares exist only for a covered round.
                public.clear();
            }
            culprits.extend_from_slice(&outcome.culprits);
            outcome
        });
        culprits.sort();
        culprits.dedup();
        self.closed_at = Some(Instant::now());
        let _ = c.reply.send(Ok(CloseOutcome {
            inputs: c.inputs,
            acks,
            public,
            parties,
            culprits,
            limits,
        }));
    }

    // ------------------------------------------------------------ settle

    /// Starts the settlement job; false (and the reply answered) when the round
    /// is not closed or already signing.
    pub(super) fn settle(
        &mut self,
        req: SettleRequest,
        reply: Reply<super::SettleOutcome>,
    ) -> bool {
        if self.closed_at.is_none() {
            let _ = reply.send(Err(CoordinatorError::RoundConflict(format!(
                "round {} has not finished closing",
                self.spec.id
            ))));
            return false;
        }
        if self.settle.is_some() {
            let _ = reply.send(Err(CoordinatorError::RoundConflict(format!(
                "round {} is already being signed",
                self.spec.id
            ))));
            return false;
        }
        if self.spec.limits.is_some() && self.limits_covered != Some(true) {
            let _ = reply.send(Err(CoordinatorError::RoundConflict(format!(
                "round {} is not settled: its limits are not covered (no covered verdict \
                 of a quorum of nodes)",
                self.spec.id
            ))));
            return false;
        }
        self.settle = Some(SettleJob::new(req, reply));
        true
    }

    // ------------------------------------------------------------ time

    /// Fires expired deadlines; true when a settlement attempt failed and the next
    /// one should start.
    pub(super) fn on_tick(
        &mut self,
        now: Instant,
        identity: &NodeIdentity,
        close_deadline: Instant,
        outbox: &mut Vec<(NodeId, Envelope, Tag)>,
    ) -> bool {
        if self.announce.as_ref().is_some_and(|c| c.deadline <= now) {
            self.finish_announce();
        }
        let due: Vec<u64> = self
            .bundles
            .iter()
            .filter(|(_, b)| b.collect.deadline <= now)
            .map(|(op, _)| *op)
            .collect();
        for op in due {
            self.finish_bundle(op);
        }
        self.start_waiting_close(identity, close_deadline, outbox);
        let spec = &self.spec;
        let limits_running = match self.close.as_mut().and_then(|c| c.limits.as_mut()) {
            Some(p) => {
                p.on_tick(spec, now);
                true
            }
            None => false,
        };
        if limits_running {
            self.check_close();
        } else if self.close.as_ref().is_some_and(|c| c.deadline <= now) {
            self.finish_close();
        }
        self.settle_tick(now, outbox)
    }

    fn busy(&self) -> bool {
        self.announce.is_some()
            || !self.bundles.is_empty()
            || self.close_waiting.is_some()
            || self.close.is_some()
            || self.settle.is_some()
    }

    /// Whether nothing is pending and the round has sat idle long enough to forget:
    /// closed but never settled, or open long past its cut-off.
    pub(super) fn idle_since(&self) -> Option<Instant> {
        if self.busy() {
            return None;
        }
        match self.closed_at {
            Some(t) => Some(t),
            None if unix_now() > self.spec.cutoff.saturating_add(OPEN_AFTER_CUTOFF_SECS) => {
                Some(Instant::now() - super::LINGER)
            }
            None => None,
        }
    }

    pub(super) fn is_done(&self) -> bool {
        self.done
    }

    /// Answers every pending reply with [`CoordinatorError::Shutdown`].
    pub(super) fn abort(self) {
        if let Some(c) = self.announce {
            let _ = c.reply.send(Err(CoordinatorError::Shutdown));
        }
        for (_, b) in self.bundles {
            let _ = b.collect.reply.send(Err(CoordinatorError::Shutdown));
        }
        if let Some(r) = self.close_waiting {
            let _ = r.send(Err(CoordinatorError::Shutdown));
        }
        if let Some(c) = self.close {
            let _ = c.reply.send(Err(CoordinatorError::Shutdown));
        }
        if let Some(s) = self.settle {
            s.abort();
        }
    }
}

fn blame(culprits: &mut Vec<NodeId>, node: NodeId, what: &str) {
    tracing::warn!(%node, what, "netting outputs refused");
    if !culprits.contains(&node) {
        culprits.push(node);
    }
}

impl LiveRound {
    /// Starts the next settlement signing attempt; returns its session.
    pub(super) fn next_attempt(
        &mut self,
        identity: &std::sync::Arc<NodeIdentity>,
        candidates: &[crate::engine::select::Candidate],
        timeout: std::time::Duration,
        outbox: &mut Vec<(NodeId, Envelope, Tag)>,
    ) -> Option<quorate_protocol::SessionId> {
        let round = self.spec.id;
        let public = self.public.clone();
        let job = self.settle.as_mut()?;
        let session = job.next_attempt(round, identity, &public, candidates, timeout, outbox);
        self.reap_settle();
        session
    }

    /// A signer's envelope of a settlement session; true to start the next attempt.
    pub(super) fn on_sign_message(
        &mut self,
        env: Envelope,
        outbox: &mut Vec<(NodeId, Envelope, Tag)>,
    ) -> bool {
        let round = self.spec.id;
        let Some(job) = self.settle.as_mut() else {
            return false;
        };
        let retry = job.on_message(round, env, outbox);
        self.reap_settle();
        retry
    }

    /// A signer's refusal; true to start the next attempt.
    pub(super) fn on_sign_refusal(
        &mut self,
        session: quorate_protocol::SessionId,
        node: NodeId,
        reason: String,
    ) -> bool {
        let Some(job) = self.settle.as_mut() else {
            return false;
        };
        job.on_refusal(session, node, reason)
    }

    fn settle_tick(&mut self, now: Instant, outbox: &mut Vec<(NodeId, Envelope, Tag)>) -> bool {
        let round = self.spec.id;
        let Some(job) = self.settle.as_mut() else {
            return false;
        };
        let retry = job.on_tick(round, now, outbox);
        self.reap_settle();
        retry
    }

    /// A finished settlement job ends the round's life in the engine.
    fn reap_settle(&mut self) {
        if self.settle.as_ref().is_some_and(SettleJob::finished) {
            self.settle = None;
            self.done = true;
        }
    }
}
