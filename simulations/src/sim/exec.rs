//! Executing work on a node: feeding the state machines, charging CPU, and
//! carrying out their outputs (sends through the network and the adversary,
//! timers on the node's own clock, results).

use std::time::Instant;

use quorate_protocol::{
    ids::SessionId,
    lifecycle::ReshareEvent,
    local::{Outcome as PartyOutcome, Party},
    sign::SignerConfig,
    Envelope, Input, Output, Payload, ProtocolError, Round, SignTarget, Signer, TimerId, Timestamp,
};
use sha2::{Digest, Sha256};

use super::{Event, Owner, Sample, World};
use crate::{
    byzantine::{DkgContext, Target},
    cost::Op,
    engine::Micros,
    link::Fate,
    node::{Role, Session},
};

/// What kind of input a step was (known before the input is consumed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InputKind {
    Start,
    Message(Round),
    Timeout,
}

/// The cost ops a state-machine call performed, from its role, input and result.
pub(crate) fn classify(
    role: Role,
    input: InputKind,
    result: &Result<Vec<Output<PartyOutcome>>, ProtocolError>,
) -> Vec<Op> {
    let mut ops = Vec::new();
    let sends = |round: Round| {
        result.as_ref().is_ok_and(|outs| {
            outs.iter()
                .any(|o| matches!(o, Output::Send { msg, .. } if msg.round == round))
        })
    };
    let done = result
        .as_ref()
        .is_ok_and(|outs| outs.iter().any(|o| matches!(o, Output::Done(_))));
    match (role, input) {
        (_, InputKind::Timeout) => {}
        (Role::Signer, InputKind::Start) => ops.push(Op::SignerCommit),
        (Role::Signer, InputKind::Message(Round::SignPackage)) => ops.push(Op::SignerShare),
        (Role::Signer, InputKind::Message(Round::PresignedSign)) => ops.push(Op::SignerPresigned),
        (Role::Signer, InputKind::Message(_)) => {}
        (Role::Aggregator { .. }, InputKind::Start) => {
            if sends(Round::PresignedSign) {
                ops.push(Op::AggPresignedStart);
            } else {
                ops.push(Op::AggStart);
            }
        }
        (Role::Aggregator { .. }, InputKind::Message(Round::SignCommit)) => {
            ops.push(Op::AggCommit);
            if sends(Round::SignPackage) {
                ops.push(Op::AggPackage);
            }
        }
        (Role::Aggregator { .. }, InputKind::Message(Round::SignShare)) => {
            ops.push(Op::AggShare);
            let cheaters = matches!(
                result,
                Err(ProtocolError::Aborted {
                    fault: quorate_protocol::Fault::InvalidSignatureShare,
                    ..
                })
            );
            if done || cheaters {
                ops.push(Op::AggFinal);
            }
        }
        (Role::Aggregator { .. }, InputKind::Message(_)) => {}
        (Role::Dkg { .. }, InputKind::Start) => ops.push(Op::DkgStart),
        (Role::Dkg { .. }, InputKind::Message(round)) => {
            match round {
                Round::DkgRound1 => ops.push(Op::DkgRound1),
                Round::DkgEcho => ops.push(Op::DkgEchoRecv),
                Round::DkgRound2 => ops.push(Op::DkgRound2Recv),
                Round::DkgConfirm => ops.push(Op::DkgConfirm),
                _ => {}
            }
            if sends(Round::DkgEcho) {
                ops.push(Op::DkgEcho);
            }
            if sends(Round::DkgRound2) {
                ops.push(Op::DkgRound2);
            }
            if sends(Round::DkgConfirm) {
                ops.push(Op::DkgFinish);
            }
            if let Err(ProtocolError::Aborted { fault, .. }) = result {
                match fault {
                    quorate_protocol::Fault::InvalidProofOfKnowledge => ops.push(Op::DkgRound2),
                    quorate_protocol::Fault::InvalidSecretShare => ops.push(Op::DkgFinish),
                    _ => {}
                }
            }
        }
        (Role::Reshare { .. }, InputKind::Start) => {
            // A dealer deals at its start; a new member only sets its deadline.
            if sends(Round::ReshareCommit) {
                ops.push(Op::ReshareDeal);
            }
        }
        (Role::Reshare { .. }, InputKind::Message(round)) => {
            match round {
                Round::ReshareCommit => ops.push(Op::ReshareCommitRecv),
                Round::ReshareEcho => ops.push(Op::ReshareEchoRecv),
                Round::ReshareShare => ops.push(Op::ReshareShareRecv),
                Round::ReshareConfirm => ops.push(Op::ReshareConfirmRecv),
                _ => {}
            }
            if sends(Round::ReshareEcho) {
                ops.push(Op::ReshareEcho);
            }
            if sends(Round::ReshareConfirm) {
                ops.push(Op::ReshareFinish);
            }
            if let Err(ProtocolError::Aborted { fault, .. }) = result {
                match fault {
                    quorate_protocol::Fault::UnboundReshare => ops.push(Op::ReshareEcho),
                    quorate_protocol::Fault::InvalidSecretShare => ops.push(Op::ReshareFinish),
                    _ => {}
                }
            }
        }
    }
    ops
}

impl World {
    /// Feeds `input` to `node`'s session; charges its cost; carries out the
    /// outputs at the end of the computation. Returns the cost (µs).
    pub(super) fn step(&mut self, node: usize, session: SessionId, input: Input) -> Micros {
        self.step_after(node, session, input, 0)
    }

    /// [`World::step`] for a node that has already worked `offset` µs on the same
    /// input: the machine sees that later time and its outputs leave after both.
    pub(super) fn step_after(
        &mut self,
        node: usize,
        session: SessionId,
        input: Input,
        offset: Micros,
    ) -> Micros {
        let kind = match &input {
            Input::Start => InputKind::Start,
            Input::Message(env) => InputKind::Message(env.round),
            Input::Timeout(_) => InputKind::Timeout,
        };
        let local = Timestamp(self.nodes[node].clock.local_ms(self.now + offset));
        let Some(s) = self.nodes[node].sessions.get_mut(&session) else {
            return 0;
        };
        let (role, k) = (s.role, s.k);
        let timer = self.measure.is_some().then(Instant::now);
        let result = s.party.handle(local, input, &mut self.rng_proto);
        let elapsed = timer.map(|t| t.elapsed() + std::mem::take(&mut self.join_extra));
        let ops = classify(role, kind, &result);
        if let (Some(samples), Some(elapsed)) = (self.measure.as_mut(), elapsed) {
            samples.push(Sample {
                ops: ops.clone(),
                k,
                elapsed,
            });
        }
        let cost = match &self.costs {
            Some(t) => t.charge(&ops, k, 1.0),
            None => 0,
        };
        let done = self.now + offset + cost;
        match result {
            Ok(outs) => self.apply(node, session, role, outs, done),
            Err(e) => self.failed(node, session, role, &e, done),
        }
        cost
    }

    fn apply(
        &mut self,
        node: usize,
        session: SessionId,
        role: Role,
        outs: Vec<Output<PartyOutcome>>,
        done: Micros,
    ) {
        for o in outs {
            match o {
                Output::Send { to, msg } => self.send(node, &to, msg, done),
                Output::SetTimer { timer, at } => {
                    let n = &self.nodes[node];
                    let when = n.clock.global_at(at.0, done);
                    let epoch = n.epoch;
                    self.events.push(
                        when,
                        Event::Timer {
                            node,
                            epoch,
                            session,
                            timer,
                        },
                    );
                }
                Output::Done(outcome) => self.succeeded(node, session, role, outcome, done),
            }
        }
    }

    fn close_session(&mut self, node: usize, session: SessionId) {
        let n = &mut self.nodes[node];
        n.sessions.remove(&session);
        n.finished.insert(session);
    }

    fn succeeded(
        &mut self,
        node: usize,
        session: SessionId,
        role: Role,
        outcome: PartyOutcome,
        done: Micros,
    ) {
        // A resharing participant reports its new share before it finishes: the
        // session stays open until `Finished`.
        if let (Role::Reshare { run }, PartyOutcome::Reshare(event)) = (role, &outcome) {
            let finished = matches!(event, ReshareEvent::Finished { .. });
            if finished {
                self.close_session(node, session);
            }
            self.reshare_event(run, node, outcome, done);
            return;
        }
        self.close_session(node, session);
        match (role, outcome) {
            (Role::Aggregator { request }, _) => self.attempt_succeeded(request, session, done),
            (Role::Dkg { run }, PartyOutcome::Key(key)) => {
                self.nodes[node].keys.insert(key.public.key_id, key);
                self.dkg_member_done(run, node, done);
            }
            _ => {}
        }
    }

    fn failed(
        &mut self,
        node: usize,
        session: SessionId,
        role: Role,
        error: &ProtocolError,
        done: Micros,
    ) {
        if !error.is_fatal() {
            self.nodes[node].stats.rejected += 1;
            return;
        }
        self.close_session(node, session);
        match role {
            Role::Aggregator { request } if self.is_roast(request) => {
                self.roast_session_failed(request, session, error);
            }
            Role::Aggregator { request } => self.attempt_failed(request, session, error, done),
            Role::Dkg { run } => self.dkg_member_failed(run, node, error, done),
            Role::Reshare { run } => self.reshare_member_failed(run, node, error, done),
            Role::Signer => {}
        }
    }

    /// Sends `env` from `from` at `at`, through the adversary (if `from` is an
    /// active byzantine node) and the network.
    pub(super) fn send(
        &mut self,
        from: usize,
        to: &quorate_protocol::NodeId,
        env: Envelope,
        at: Micros,
    ) {
        let Some(&to) = self.index.get(to) else {
            return;
        };
        let session = env.session;
        let msgs = if self.adversary.active(from, &session) {
            let dkg = self.dkg_context(from, &session);
            let seal_key = self
                .topo
                .committee_of(to)
                .and_then(|c| self.committees[c].get(&self.nodes[to].id))
                .map_or([0u8; 32], |m| m.seal_key);
            let identity = self.nodes[from].identity.clone();
            let target = Target {
                node: to,
                seal_key: &seal_key,
            };
            self.adversary
                .tamper(from, &identity, env, &target, dkg, &mut self.rng_adv)
        } else {
            vec![(env, 0)]
        };
        for (env, extra) in msgs {
            let bytes = env.encode();
            let size = bytes.len();
            let digest: [u8; 32] = Sha256::digest(&bytes).into();
            let stats = &mut self.nodes[from].stats;
            stats.sent += 1;
            stats.sent_bytes += size as u64;
            self.account(&env.session, size);
            match self
                .net
                .transmit(from, to, size, at + extra, &mut self.rng_net)
            {
                Fate::Dropped(_) => self.dropped += 1,
                Fate::Delivered(times) => {
                    let last = times.len() - 1;
                    let mut env = Some(env);
                    for (i, t) in times.into_iter().enumerate() {
                        let e = if i == last { env.take() } else { env.clone() };
                        if let Some(e) = e {
                            self.events.push(
                                t,
                                Event::Deliver {
                                    from,
                                    to,
                                    env: Box::new(e),
                                    digest,
                                    size,
                                },
                            );
                        }
                    }
                }
            }
        }
    }

    fn account(&mut self, session: &SessionId, size: usize) {
        match self.owners.get(session) {
            Some(Owner::Request(id)) => {
                if let Some(r) = self.requests.get_mut(id) {
                    r.messages += 1;
                    r.bytes += size as u64;
                }
            }
            Some(Owner::Dkg(id)) => {
                if let Some(r) = self.runs.get_mut(id) {
                    r.messages += 1;
                    r.bytes += size as u64;
                }
            }
            Some(Owner::Reshare(id)) => {
                if let Some(r) = self.reshares.get_mut(id) {
                    r.messages += 1;
                    r.bytes += size as u64;
                }
            }
            None => {}
        }
    }

    fn dkg_context(&self, node: usize, session: &SessionId) -> Option<DkgContext> {
        let Some(Owner::Dkg(run)) = self.owners.get(session) else {
            return None;
        };
        let run = self.runs.get(run)?;
        let member = run.config.committee.get(&self.nodes[node].id)?;
        Some(DkgContext {
            index: member.index,
            threshold: run.config.threshold,
            n: u16::try_from(run.config.committee.len()).ok()?,
        })
    }

    pub(super) fn on_timeout(&mut self, node: usize, session: SessionId, timer: TimerId) -> Micros {
        self.step(node, session, Input::Timeout(timer))
    }

    pub(super) fn on_message(&mut self, node: usize, from: usize, env: Envelope) -> Micros {
        let session = env.session;
        if node == self.topo.coordinator() {
            match env.round {
                Round::SignCommit => self.observe_commit(from, &session),
                Round::PresignOffer if self.presign.is_some() => return self.on_offer(env),
                Round::SignShare => {
                    if let Some(id) = self.roast_request_of(&session) {
                        return self.roast_share(id, env);
                    }
                }
                _ => {}
            }
        }
        if self.nodes[node].sessions.contains_key(&session) {
            return self.step(node, session, Input::Message(env));
        }
        if matches!(env.payload, Payload::SignRequest { .. }) {
            return self.join_signing(node, env);
        }
        if matches!(env.payload, Payload::SettleRequest { .. }) {
            return self.join_settlement(node, env);
        }
        if matches!(env.payload, Payload::PresignedSign { .. }) {
            return self.join_presigned(node, env);
        }
        self.nodes[node].stats.stale += 1;
        0
    }

    /// A signing request reached a signer: check it, create a signer session and
    /// commit (what a node daemon does after its policy checks).
    fn join_signing(&mut self, node: usize, env: Envelope) -> Micros {
        let timer = self.measure.is_some().then(Instant::now);
        let Payload::SignRequest { message, tweak, .. } = &env.payload else {
            return 0;
        };
        let target = SignTarget {
            message: message.clone(),
            tweak: *tweak,
        };
        self.start_signer(node, &env, target, timer)
    }

    /// Checks a request to sign `target` (stale session, key, envelope), creates
    /// the signer session and commits.
    pub(super) fn start_signer(
        &mut self,
        node: usize,
        env: &Envelope,
        target: SignTarget,
        timer: Option<Instant>,
    ) -> Micros {
        let n = &mut self.nodes[node];
        if n.finished.contains(&env.session) {
            n.stats.stale += 1;
            return 0;
        }
        let Some(share) = n.keys.get(&env.key) else {
            n.stats.rejected += 1;
            return 0;
        };
        if env.verify().is_err() {
            n.stats.rejected += 1;
            return 0;
        }
        let config = SignerConfig {
            session: env.session,
            coordinator: env.sender,
            target,
            timeout_ms: self
                .scenario
                .signing
                .signer_timeout_ms
                .unwrap_or(self.scenario.signing.timeout_ms.saturating_mul(2)),
        };
        let k = usize::from(share.public.threshold);
        let signer = Signer::new(n.identity.clone(), share, config);
        match signer.map(|s| match &self.round2_cache {
            Some(cache) => s.with_round2_cache(cache.clone()),
            None => s,
        }) {
            Ok(signer) => {
                if let Some(t) = timer {
                    self.join_extra = t.elapsed();
                }
                n.sessions.insert(
                    env.session,
                    Session {
                        party: Party::Signer(signer),
                        role: Role::Signer,
                        k,
                    },
                );
                self.step(node, env.session, Input::Start)
            }
            Err(_) => {
                n.stats.rejected += 1;
                0
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_cost_nothing_and_starts_are_classified() {
        let ok: Result<Vec<Output<PartyOutcome>>, ProtocolError> = Ok(Vec::new());
        assert!(classify(Role::Signer, InputKind::Timeout, &ok).is_empty());
        assert_eq!(
            classify(Role::Signer, InputKind::Start, &ok),
            vec![Op::SignerCommit]
        );
        assert_eq!(
            classify(
                Role::Aggregator { request: 1 },
                InputKind::Message(Round::SignCommit),
                &ok
            ),
            vec![Op::AggCommit]
        );
        assert_eq!(
            classify(Role::Dkg { run: 1 }, InputKind::Start, &ok),
            vec![Op::DkgStart]
        );
        assert_eq!(
            classify(Role::Signer, InputKind::Message(Round::PresignedSign), &ok),
            vec![Op::SignerPresigned]
        );
        // A start that sends no `PresignedSign` is the two-round one.
        assert_eq!(
            classify(Role::Aggregator { request: 1 }, InputKind::Start, &ok),
            vec![Op::AggStart]
        );
        // A reshare member that deals nothing starts for free; admitting a
        // sub-share or a confirmation is its own op.
        let reshare = Role::Reshare { run: 1 };
        assert!(classify(reshare, InputKind::Start, &ok).is_empty());
        assert_eq!(
            classify(reshare, InputKind::Message(Round::ReshareShare), &ok),
            vec![Op::ReshareShareRecv]
        );
        assert_eq!(
            classify(reshare, InputKind::Message(Round::ReshareConfirm), &ok),
            vec![Op::ReshareConfirmRecv]
        );
        let bad_share: Result<Vec<Output<PartyOutcome>>, ProtocolError> =
            Err(ProtocolError::Aborted {
                culprits: Vec::new(),
                fault: quorate_protocol::Fault::InvalidSecretShare,
            });
        assert_eq!(
            classify(reshare, InputKind::Message(Round::ReshareEcho), &bad_share),
            vec![Op::ReshareEchoRecv, Op::ReshareFinish],
            "a rejected sub-share was opened and checked"
        );
    }
}
