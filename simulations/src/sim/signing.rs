//! Signing requests on the coordinator: the retry loop around aggregator attempts.

use quorate_protocol::{
    aggregate::AggregatorConfig, ids::SessionId, local::Party, Aggregator, Fault, Input,
    ProtocolError, SignTarget,
};
use rand_core::RngCore;

use super::{Owner, World};
use crate::{
    engine::Micros,
    node::{Role, Session, Work},
    robust::{self, Attempt, Blame, Outcome, Request},
};

/// How long responsive selection avoids a blamed signer.
pub(super) const PENALTY_US: Micros = 30_000_000;

/// Short name of what went wrong, for reports.
pub(crate) fn fault_name(error: &ProtocolError) -> String {
    match error {
        ProtocolError::Aborted { fault, .. } => fault.to_string(),
        ProtocolError::Equivocation { round, .. } => format!("equivocation in {round:?}"),
        other => other.to_string(),
    }
}

/// True when the error is a deadline rather than a provable fault.
pub(crate) fn is_timeout(error: &ProtocolError) -> bool {
    matches!(
        error,
        ProtocolError::Aborted {
            fault: Fault::Timeout,
            ..
        }
    )
}

impl World {
    pub(super) fn new_request(&mut self, committee: usize) {
        let id = self.fresh_id();
        let mut message = vec![0u8; self.scenario.signing.message_bytes];
        self.rng_msg.fill_bytes(&mut message);
        self.requests
            .insert(id, Request::new(id, committee, message, self.now));
        self.open += 1;
        let coordinator = self.topo.coordinator();
        if self.nodes[coordinator].liveness == crate::node::Liveness::Crashed {
            self.finish_request(id, Outcome::Lost, self.now);
            return;
        }
        self.nodes[coordinator]
            .queue
            .push_back(Work::StartAttempt { request: id });
        self.pump(coordinator);
    }

    /// Starts the next attempt of `request` on the coordinator.
    pub(super) fn start_attempt(&mut self, id: u64) -> Micros {
        let selection = self.selection();
        let t = self.scenario.committee.threshold as usize;
        let Some(req) = self.requests.get(&id) else {
            return 0;
        };
        if req.finished.is_some() {
            return 0;
        }
        // Netting settlements ask with their own payload: always the retry loop.
        let settlement = self.netting.as_ref().and_then(|n| n.payload(id)).is_some();
        if self.roast_mode() && !settlement {
            return self.roast_begin(id);
        }
        let Some(req) = self.requests.get(&id) else {
            return 0;
        };
        let c = req.committee;
        let members: Vec<usize> = self.topo.members(c).collect();
        // Responsive selection: by round-trip estimate, unmeasured signers first,
        // recently blamed signers last.
        let now = self.now;
        let scores: Vec<i64> = members
            .iter()
            .map(|m| {
                let n = &self.nodes[*m];
                if n.penalty_until > now {
                    i64::MIN / 2
                } else {
                    -(n.rtt_us.unwrap_or(0.0) as i64)
                }
            })
            .collect();
        let Some(signers) = robust::choose(
            &members,
            &req.excluded,
            t,
            selection,
            &scores,
            &mut self.rng_sel,
        ) else {
            let outcome = req.give_up_outcome();
            self.finish_request(id, outcome, self.now);
            return 0;
        };
        let Some(public) = self.publics[c].clone() else {
            self.finish_request(id, Outcome::Aborted, self.now);
            return 0;
        };
        let mut session = [0u8; 32];
        self.rng_proto.fill_bytes(&mut session);
        let session = SessionId(session);
        let config = AggregatorConfig {
            session,
            signers: signers.iter().map(|s| self.nodes[*s].id).collect(),
            target: SignTarget {
                message: req.message.clone(),
                tweak: None,
            },
            request: Vec::new(),
            timeout_ms: self.scenario.signing.timeout_ms,
        };
        let coordinator = self.topo.coordinator();
        let identity = self.nodes[coordinator].identity.clone();
        let made = match self.netting.as_ref().and_then(|n| n.payload(id)) {
            Some(start) => {
                Aggregator::with_request_payload(identity, &public, config, start.clone())
            }
            None => Aggregator::new(identity, &public, config),
        };
        let aggregator = match made {
            Ok(a) => a,
            Err(e) => {
                if let Some(r) = self.requests.get_mut(&id) {
                    r.last_fault = Some(e.to_string());
                }
                self.finish_request(id, Outcome::Aborted, self.now);
                return 0;
            }
        };
        self.nodes[coordinator].sessions.insert(
            session,
            Session {
                party: Party::Aggregator(aggregator),
                role: Role::Aggregator { request: id },
                k: signers.len(),
            },
        );
        self.owners.insert(session, Owner::Request(id));
        self.adversary.on_session(session, &signers);
        if let Some(r) = self.requests.get_mut(&id) {
            r.attempts += 1;
            r.last_signers = signers.clone();
            r.current = Some(Attempt {
                session,
                signers,
                started: self.now,
            });
        }
        self.step(coordinator, session, Input::Start)
    }

    pub(super) fn attempt_succeeded(&mut self, id: u64, session: SessionId, done: Micros) {
        self.adversary.end_session(&session);
        self.roast_succeeded(id, &session);
        self.finish_request(id, Outcome::Signed, done);
    }

    pub(super) fn attempt_failed(
        &mut self,
        id: u64,
        session: SessionId,
        error: &ProtocolError,
        done: Micros,
    ) {
        self.adversary.end_session(&session);
        let max_attempts = self.scenario.max_attempts();
        let culprits: Vec<usize> = error
            .culprits()
            .iter()
            .filter_map(|c| self.index.get(c).copied())
            .collect();
        let faulty: Vec<bool> = culprits.iter().map(|c| self.netting_faulty(*c)).collect();
        let Some(req) = self.requests.get_mut(&id) else {
            return;
        };
        let started = req.current.take().map_or(req.arrived, |a| a.started);
        let fault = fault_name(error);
        for (c, faulty) in culprits.into_iter().zip(faulty) {
            let correct = self.adversary.is_byzantine(c)
                || self.nodes[c].down_during(started, done)
                || faulty;
            req.blames.push(Blame {
                node: c,
                fault: fault.clone(),
                correct,
            });
            req.excluded.insert(c);
            // Responsive selection avoids a blamed signer for a while.
            let n = &mut self.nodes[c];
            n.blamed += 1;
            n.penalty_until = done + PENALTY_US;
        }
        req.last_fault = Some(fault);
        req.last_timeout = is_timeout(error);
        if req.attempts < max_attempts {
            let coordinator = self.topo.coordinator();
            self.nodes[coordinator]
                .queue
                .push_front(Work::StartAttempt { request: id });
        } else {
            let outcome = req.give_up_outcome();
            self.finish_request(id, outcome, done);
        }
    }

    /// The coordinator received `from`'s commitment for `session`: update its
    /// round-trip estimate.
    pub(super) fn observe_commit(
        &mut self,
        from: usize,
        session: &quorate_protocol::ids::SessionId,
    ) {
        let Some(super::Owner::Request(id)) = self.owners.get(session) else {
            return;
        };
        let Some(started) = self
            .requests
            .get(id)
            .and_then(|r| r.current.as_ref())
            .filter(|a| a.session == *session)
            .map(|a| a.started)
        else {
            return;
        };
        let sample = self.now.saturating_sub(started) as f64;
        let n = &mut self.nodes[from];
        n.rtt_us = Some(n.rtt_us.map_or(sample, |old| 0.5 * old + 0.5 * sample));
    }

    pub(super) fn finish_request(&mut self, id: u64, outcome: Outcome, at: Micros) {
        let Some(req) = self.requests.get_mut(&id) else {
            return;
        };
        if req.finished.is_some() {
            return;
        }
        req.finished = Some((at, outcome));
        if let Some(a) = req.current.take() {
            self.adversary.end_session(&a.session);
        }
        self.open = self.open.saturating_sub(1);
        self.trace.note(
            at,
            &format!("request {id} {} {}", outcome.name(), req.attempts),
        );
        self.roast_finish(id);
        self.settlement_signed(id, outcome, at);
    }

    /// The coordinator crashed: every request in flight is lost.
    pub(super) fn coordinator_lost(&mut self) {
        self.finish_open_requests(Outcome::Lost);
        self.presign_coordinator_lost();
    }
}
