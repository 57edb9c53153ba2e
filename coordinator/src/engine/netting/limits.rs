//! The limit phase of a limit-checked close (`spec.limits`): the coordinator is
//! the MPC's king. Once every node delivered its party outputs, each member gets
//! `LimitStart { attempt }`; the nodes' `LimitPart`s go into
//! [`KingLimits::on_part`], whose answers (each node's parts of the next step) are
//! queued per node and sent at most [`MAX_PARTS_IN_FLIGHT`] at a time (the next
//! part leaves when an earlier one is acknowledged). After the last step each node
//! sends `LimitResult { verdict, bits }` and, only if covered, its public outputs.
//!
//! An attempt ends when every member sent a verified result (and, covered, its
//! public outputs), or at its own deadline. An aborted MPC
//! (`ProtocolError::LimitCheckAborted`), a refusal or a deadline with results
//! missing starts the next attempt with a fresh king (all `n` nodes are needed),
//! up to `run::MAX_ATTEMPTS`; every attempt is recorded with the nodes the king
//! waited for.

use std::{
    collections::{BTreeMap, VecDeque},
    time::{Duration, Instant},
};

use quorate_protocol::{
    netting::{
        limits::{
            run::{KingLimits, MAX_ATTEMPTS},
            verdict::{LimitBits, LimitVerdict},
        },
        PublicOutputs, RoundSpec,
    },
    wire::frame::Ack,
    NodeId, Payload, ProtocolError,
};

use crate::netting::limits::{LimitAttempt, LimitsOutcome};

/// Most limit-check messages in flight to one node at once.
pub(super) const MAX_PARTS_IN_FLIGHT: usize = 8;

/// One node's verified result.
type NodeResult = (LimitVerdict, Vec<LimitBits>);

pub(super) struct LimitPhase {
    participants: Vec<bool>,
    inputs_digest: [u8; 32],
    members: Vec<NodeId>,
    timeout: Duration,
    attempt: u32,
    king: Option<KingLimits>,
    deadline: Instant,
    results: BTreeMap<NodeId, NodeResult>,
    queues: BTreeMap<NodeId, VecDeque<Payload>>,
    in_flight: BTreeMap<NodeId, usize>,
    outcome: LimitsOutcome,
    finished: bool,
}

/// Checks a node's `LimitBits` for one party: the node's own, for this round,
/// definition and inputs, a participant, signed by the node.
fn bits_ok(
    spec: &RoundSpec,
    node: &NodeId,
    digest: &[u8; 32],
    participants: &[bool],
    b: &LimitBits,
) -> bool {
    let sig = ed25519_dalek::Signature::from_slice(&b.signature);
    let key = ed25519_dalek::VerifyingKey::from_bytes(node.as_bytes());
    b.node == *node
        && b.round == spec.id
        && b.spec_digest == spec.digest()
        && b.inputs_digest == *digest
        && participants.get(b.party as usize) == Some(&true)
        && matches!((key, sig), (Ok(k), Ok(s)) if !k.is_weak() && k.verify_strict(&b.digest(), &s).is_ok())
}

impl LimitPhase {
    /// A phase for a round closed on `participants` with `inputs_digest`; call
    /// [`LimitPhase::begin`] to send the first attempt's starts.
    pub(super) fn new(
        members: Vec<NodeId>,
        participants: Vec<bool>,
        inputs_digest: [u8; 32],
        timeout: Duration,
    ) -> Self {
        Self {
            participants,
            inputs_digest,
            members,
            timeout,
            attempt: 0,
            king: None,
            deadline: Instant::now() + timeout,
            results: BTreeMap::new(),
            queues: BTreeMap::new(),
            in_flight: BTreeMap::new(),
            outcome: LimitsOutcome::default(),
            finished: false,
        }
    }

    /// A phase that cannot run (a node refused the close, or the party outputs
    /// did not arrive in time): finished with one `refused`/`timeout` record.
    pub(super) fn not_started(
        members: Vec<NodeId>,
        outcome: &str,
        reason: String,
        waited_for: Vec<NodeId>,
    ) -> Self {
        let mut p = Self::new(members, Vec::new(), [0; 32], Duration::ZERO);
        p.outcome.attempts.push(LimitAttempt {
            attempt: 0,
            outcome: outcome.into(),
            step: 0,
            reason,
            culprits: Vec::new(),
            waited_for,
        });
        p.finished = true;
        p
    }

    /// The current attempt.
    pub(super) fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Whether the phase has ended (success or every attempt used).
    pub(super) fn finished(&self) -> bool {
        self.finished
    }

    /// Starts the next attempt: a fresh king and `LimitStart` queued to every member.
    pub(super) fn begin(&mut self, spec: &RoundSpec) {
        self.attempt += 1;
        self.results.clear();
        self.queues.clear();
        self.in_flight.clear();
        self.deadline = Instant::now() + self.timeout;
        match KingLimits::new(spec, &self.participants, &self.inputs_digest, self.attempt) {
            Ok(k) => self.king = Some(k),
            Err(e) => {
                // A local fault (the spec validated): no attempt can do better.
                self.record("refused", 0, e.to_string(), Vec::new(), Vec::new());
                self.finished = true;
                return;
            }
        }
        tracing::info!(round = %spec.id, attempt = self.attempt, "limit checks started");
        for m in &self.members {
            self.queues
                .entry(*m)
                .or_default()
                .push_back(Payload::LimitStart {
                    round: spec.id,
                    attempt: self.attempt,
                });
        }
    }

    fn record(
        &mut self,
        outcome: &str,
        step: u8,
        reason: String,
        culprits: Vec<NodeId>,
        waited_for: Vec<NodeId>,
    ) {
        self.outcome.attempts.push(LimitAttempt {
            attempt: self.attempt,
            outcome: outcome.into(),
            step,
            reason,
            culprits,
            waited_for,
        });
    }

    /// Ends the current attempt with a failure and starts the next one, if any.
    fn fail(&mut self, spec: &RoundSpec, outcome: &str, reason: String, culprits: Vec<NodeId>) {
        let (step, mut waited) = match &self.king {
            Some(k) => (k.step(), k.waiting_for()),
            None => (0, Vec::new()),
        };
        if let Some(k) = &self.king {
            self.outcome.stats = k.stats();
        }
        if waited.is_empty() {
            // Past the last step: the nodes without a result.
            waited = self
                .members
                .iter()
                .filter(|m| !self.results.contains_key(m))
                .copied()
                .collect();
        }
        tracing::warn!(
            round = %spec.id, attempt = self.attempt, step, outcome, %reason,
            ?culprits, waited_for = ?waited, "limit-check attempt failed"
        );
        self.record(outcome, step, reason, culprits, waited);
        self.king = None;
        if self.attempt < MAX_ATTEMPTS {
            self.begin(spec);
        } else {
            self.queues.clear();
            self.finished = true;
        }
    }

    /// A node's acknowledgement of a limit message of attempt `attempt`.
    pub(super) fn on_ack(&mut self, spec: &RoundSpec, node: NodeId, attempt: u32, ack: Ack) {
        if attempt != self.attempt || self.finished {
            return;
        }
        if let Some(n) = self.in_flight.get_mut(&node) {
            *n = n.saturating_sub(1);
        }
        if let Ack::Rejected { reason, detail } = ack {
            let why = format!("{node} refused a limit-check message: {reason}: {detail}");
            self.fail(spec, "refused", why, Vec::new());
        }
    }

    /// A node's part of a step message (sender authenticated, context checked).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_part(
        &mut self,
        spec: &RoundSpec,
        from: NodeId,
        attempt: u32,
        step: u8,
        part: u32,
        parts: u32,
        bytes: Vec<u8>,
    ) {
        if attempt != self.attempt || self.finished {
            tracing::debug!(round = %spec.id, %from, attempt, "limit part of another attempt dropped");
            return;
        }
        let Some(king) = &mut self.king else {
            return;
        };
        match king.on_part(spec, &from, step, part, parts, bytes) {
            Ok(None) => {}
            Ok(Some(answers)) => {
                tracing::debug!(round = %spec.id, step, "limit step answered");
                for (node, payloads) in answers {
                    self.queues.entry(node).or_default().extend(payloads);
                }
            }
            Err(e) => {
                let culprits = match &e {
                    ProtocolError::LimitCheckAborted { culprits, .. } => culprits.clone(),
                    // A part that does not fit (size, count, a different copy).
                    ProtocolError::Malformed(_) => vec![from],
                    other => other.culprits(),
                };
                self.fail(spec, "aborted", e.to_string(), culprits);
            }
        }
    }

    /// A node's signed result (sender authenticated, context checked).
    pub(super) fn on_result(
        &mut self,
        spec: &RoundSpec,
        from: NodeId,
        verdict: LimitVerdict,
        bits: Vec<LimitBits>,
    ) {
        if verdict.attempt != self.attempt || self.finished {
            return;
        }
        let wanted = self.participants.iter().filter(|p| **p).count();
        let mut parties: Vec<u32> = bits.iter().map(|b| b.party).collect();
        parties.sort_unstable();
        parties.dedup();
        let king_covered = self
            .king
            .as_ref()
            .and_then(KingLimits::verdicts)
            .map(|v| v.passed.iter().all(|p| *p));
        let valid = verdict.node == from
            && verdict.check(spec).is_ok()
            && verdict.inputs_digest == self.inputs_digest
            && king_covered.is_none_or(|c| c == verdict.covered)
            && parties.len() == wanted
            && bits.len() == wanted
            && bits
                .iter()
                .all(|b| bits_ok(spec, &from, &self.inputs_digest, &self.participants, b));
        match self.results.get(&from) {
            _ if !valid => self.blame(from, "limit result fails verification"),
            Some(prev) if prev.0 != verdict || prev.1 != bits => {
                self.blame(from, "two different limit results")
            }
            Some(_) => {}
            None => {
                self.results.insert(from, (verdict, bits));
            }
        }
    }

    fn blame(&mut self, node: NodeId, what: &str) {
        tracing::warn!(%node, what, "limit-check message refused");
        if !self.outcome.culprits.contains(&node) {
            self.outcome.culprits.push(node);
        }
    }

    /// Whether every member sent its result and, where covered, its public outputs.
    pub(super) fn complete(&self, public: &BTreeMap<NodeId, PublicOutputs>) -> bool {
        self.members.iter().all(|m| match self.results.get(m) {
            Some((v, _)) => !v.covered || public.contains_key(m),
            None => false,
        })
    }

    /// Fires the attempt's deadline: with every result in, the phase ends (missing
    /// public outputs are the close's business); otherwise the next attempt starts.
    pub(super) fn on_tick(&mut self, spec: &RoundSpec, now: Instant) {
        if self.finished || now < self.deadline {
            return;
        }
        if self.members.iter().all(|m| self.results.contains_key(m)) {
            self.succeed();
        } else {
            let reason = format!("no complete answer within {} ms", self.timeout.as_millis());
            self.fail(spec, "timeout", reason, Vec::new());
        }
    }

    /// Ends the phase with the current attempt's results.
    pub(super) fn succeed(&mut self) {
        if self.finished {
            return;
        }
        let step = self.king.as_ref().map_or(0, KingLimits::step);
        if let Some(k) = &self.king {
            self.outcome.stats = k.stats();
        }
        self.record("done", step, String::new(), Vec::new(), Vec::new());
        self.finished = true;
        self.queues.clear();
        self.king = None;
    }

    /// Messages to send now, within each node's in-flight budget.
    pub(super) fn take_sends(&mut self) -> Vec<(NodeId, Payload)> {
        let mut out = Vec::new();
        for (node, q) in &mut self.queues {
            let n = self.in_flight.entry(*node).or_default();
            while *n < MAX_PARTS_IN_FLIGHT {
                let Some(p) = q.pop_front() else { break };
                *n += 1;
                out.push((*node, p));
            }
        }
        out
    }

    /// The outcome, in committee order (call once finished).
    pub(super) fn into_outcome(mut self) -> LimitsOutcome {
        let mut results = std::mem::take(&mut self.results);
        for m in &self.members {
            if let Some((v, b)) = results.remove(m) {
                self.outcome.verdicts.push(v);
                self.outcome.bits.extend(b);
            }
        }
        self.outcome.culprits.sort();
        self.outcome
    }
}
