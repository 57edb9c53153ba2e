//! Signing a round's settlement batch: each attempt is an
//! `Aggregator::with_request_payload` session whose signers are asked with a
//! `SettleRequest` (they rebuild the batch themselves and check its message); on a
//! timeout, blame or refusal the next attempt uses another subset with fresh
//! nonces, at most n − t + 1 attempts. Refusals (`netting:…`, `policy:…`) are kept
//! and reported.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use quorate_protocol::{
    aggregate::AggregatorConfig, netting::RoundId, Aggregator, Envelope, Fault, GroupPublic, Input,
    NodeId, NodeIdentity, Output, Payload, ProtocolError, SessionId, SignTarget, SignatureBytes,
    TimerId, Timestamp,
};
use rand_core::{OsRng, RngCore};

use super::{Reply, Step, Tag};
use crate::{
    engine::select::{self, Candidate},
    error::CoordinatorError,
    netting::{SettleOutcome, SettleRequest},
    types::Attempt,
};

struct Run {
    session: SessionId,
    aggregator: Aggregator,
    signers: Vec<NodeId>,
    deadline: Instant,
}

pub(crate) struct SettleJob {
    req: SettleRequest,
    retries: super::super::retry::Retries,
    tries: usize,
    current: Option<Run>,
    sessions: Vec<SessionId>,
    reply: Option<Reply<SettleOutcome>>,
}

/// What feeding an attempt did.
enum Step2 {
    Going,
    Signed(SignatureBytes),
    Failed(&'static str, Vec<NodeId>),
}

impl SettleJob {
    pub(super) fn new(req: SettleRequest, reply: Reply<SettleOutcome>) -> Self {
        Self {
            req,
            retries: Default::default(),
            tries: 0,
            current: None,
            sessions: Vec::new(),
            reply: Some(reply),
        }
    }

    /// Whether the job has answered (signed or given up).
    pub(super) fn finished(&self) -> bool {
        self.reply.is_none()
    }

    fn finish(&mut self, result: Result<SettleOutcome, CoordinatorError>) {
        self.current = None;
        if let Some(r) = self.reply.take() {
            let _ = r.send(result);
        }
    }

    fn give_up(&mut self, available: usize, needed: usize) {
        let err = self
            .retries
            .give_up(available, needed, &["policy:", "netting:"]);
        self.finish(Err(err));
    }

    /// Starts the next attempt (or gives up); returns the new session.
    pub(super) fn next_attempt(
        &mut self,
        round: RoundId,
        identity: &Arc<NodeIdentity>,
        public: &GroupPublic,
        candidates: &[Candidate],
        timeout: Duration,
        outbox: &mut Vec<(NodeId, Envelope, Tag)>,
    ) -> Option<SessionId> {
        if self.finished() || self.current.is_some() {
            return None;
        }
        let t = usize::from(public.threshold);
        let n = public.members.len();
        if self.tries > n.saturating_sub(t) {
            self.give_up(n.saturating_sub(self.retries.excluded.len()), t);
            return None;
        }
        let eligible: Vec<Candidate> = candidates
            .iter()
            .filter(|c| {
                // Only nodes that closed (sent verified public outputs) can rebuild
                // the batch and sign it.
                public.members.contains_key(&c.node)
                    && !self.retries.excluded.contains(&c.node)
                    && self.req.views.iter().any(|v| v.node == c.node)
            })
            .cloned()
            .collect();
        let Some(signers) = select::pick(&eligible, t) else {
            self.give_up(eligible.len(), t);
            return None;
        };
        let mut s = [0u8; 32];
        OsRng.fill_bytes(&mut s);
        let session = SessionId(s);
        let start = Payload::SettleRequest {
            round,
            views: self.req.views.clone(),
            message: self.req.message.to_vec(),
        };
        let config = AggregatorConfig {
            session,
            signers: signers.clone(),
            target: SignTarget {
                message: self.req.message.to_vec(),
                tweak: None,
            },
            request: Vec::new(),
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        };
        let mut aggregator =
            match Aggregator::with_request_payload(identity.clone(), public, config, start) {
                Ok(a) => a,
                Err(e) => {
                    self.finish(Err(CoordinatorError::InvalidRound(format!(
                        "settlement signing cannot start: {e}"
                    ))));
                    return None;
                }
            };
        let first = aggregator.handle(Timestamp(0), Input::Start, &mut OsRng);
        self.tries += 1;
        self.sessions.push(session);
        self.current = Some(Run {
            session,
            aggregator,
            signers,
            deadline: Instant::now() + timeout,
        });
        tracing::debug!(%round, %session, "settlement signing attempt started");
        let step = self.absorb(round, first, outbox);
        self.conclude(step);
        Some(session)
    }

    fn absorb(
        &mut self,
        round: RoundId,
        result: Result<Vec<Output<SignatureBytes>>, ProtocolError>,
        outbox: &mut Vec<(NodeId, Envelope, Tag)>,
    ) -> Step2 {
        match result {
            Ok(outputs) => {
                for o in outputs {
                    match o {
                        Output::Send { to, msg } => {
                            let tag = Tag {
                                round,
                                step: Step::Sign(msg.session),
                                node: to,
                            };
                            outbox.push((to, msg, tag));
                        }
                        Output::Done(sig) => return Step2::Signed(sig),
                        Output::SetTimer { .. } => {}
                    }
                }
                Step2::Going
            }
            Err(e) if e.is_fatal() => {
                let outcome = match &e {
                    ProtocolError::Aborted {
                        fault: Fault::Timeout,
                        ..
                    } => "timeout",
                    _ => "blamed",
                };
                Step2::Failed(outcome, e.culprits())
            }
            Err(e) => {
                tracing::debug!(error = %e, "settlement signing message dropped");
                Step2::Going
            }
        }
    }

    /// Applies an attempt's step; true when the next attempt should start.
    fn conclude(&mut self, step: Step2) -> bool {
        match step {
            Step2::Going => false,
            Step2::Signed(signature) => {
                if let Some(run) = self.current.take() {
                    self.retries.attempts.push(Attempt {
                        signers: run.signers,
                        outcome: "signed".into(),
                        blamed: Vec::new(),
                        refused: Vec::new(),
                    });
                }
                let attempts = self.retries.attempts.clone();
                self.finish(Ok(SettleOutcome {
                    signature,
                    attempts,
                }));
                false
            }
            Step2::Failed(outcome, blamed) => {
                self.fail_current(outcome, blamed, None);
                true
            }
        }
    }

    fn fail_current(
        &mut self,
        outcome: &str,
        blamed: Vec<NodeId>,
        refused: Option<(NodeId, String)>,
    ) {
        let Some(run) = self.current.take() else {
            return;
        };
        tracing::warn!(session = %run.session, outcome, ?blamed, ?refused, "settlement signing attempt failed");
        self.retries.failed(run.signers, outcome, blamed, refused);
    }

    /// A signer's envelope; true when the next attempt should start.
    pub(super) fn on_message(
        &mut self,
        round: RoundId,
        env: Envelope,
        outbox: &mut Vec<(NodeId, Envelope, Tag)>,
    ) -> bool {
        let result = match &mut self.current {
            Some(run) if run.session == env.session => {
                run.aggregator
                    .handle(Timestamp(0), Input::Message(env), &mut OsRng)
            }
            _ => return false,
        };
        let step = self.absorb(round, result, outbox);
        self.conclude(step)
    }

    /// A signer refused; true when the next attempt should start.
    pub(super) fn on_refusal(&mut self, session: SessionId, node: NodeId, reason: String) -> bool {
        if self.current.as_ref().is_some_and(|r| r.session == session) {
            self.fail_current("refused", Vec::new(), Some((node, reason)));
            return true;
        }
        if self.sessions.contains(&session) && self.retries.late_refusal(node, reason.clone()) {
            tracing::warn!(%node, %reason, "late refusal from an earlier settlement attempt");
        }
        false
    }

    /// Fires the current attempt's deadline; true when the next should start.
    pub(super) fn on_tick(
        &mut self,
        round: RoundId,
        now: Instant,
        outbox: &mut Vec<(NodeId, Envelope, Tag)>,
    ) -> bool {
        let result = match &mut self.current {
            Some(run) if run.deadline <= now => {
                run.aggregator
                    .handle(Timestamp(0), Input::Timeout(TimerId::Deadline), &mut OsRng)
            }
            _ => return false,
        };
        let step = self.absorb(round, result, outbox);
        self.conclude(step)
    }

    pub(super) fn abort(mut self) {
        self.finish(Err(CoordinatorError::Shutdown));
    }
}
