//! Live netting rounds of the engine: announcing rounds, forwarding each party's
//! bundle (node at committee position `i` gets `bundle.boxes[i]`), closing on the
//! inputs every node accepted, collecting the nodes' signed outputs, and signing
//! the settlement batch with retries over signer subsets.
//!
//! Sans-IO towards the task: methods queue envelopes in an outbox the task sends
//! (reporting each request id back with [`Netting::sent`]); acknowledgements,
//! envelopes and ticks come in through [`Netting::on_ack`],
//! [`Netting::on_envelope`] and [`Netting::on_tick`]. Every wait has a deadline.
//!
//! A limit-checked round (`spec.limits`) runs its limit phase inside the close
//! (see `limits`): the coordinator is the MPC's king.

mod limits;
mod round;
mod settle;

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use libp2p::request_response::OutboundRequestId;
use quorate_protocol::{
    netting::RoundId, roster::Roster, wire::frame::Ack, Envelope, NodeId, NodeIdentity, Payload,
    SessionId,
};
use tokio::sync::oneshot;

use self::round::LiveRound;
use super::select::Candidate;
use crate::{
    error::CoordinatorError,
    netting::{
        BundleOutcome, CloseOutcome, NodeAck, RoundOpen, SettleOutcome, SettleRequest,
        MAX_LIVE_ROUNDS,
    },
};

/// Replies of the netting commands.
pub(crate) type Reply<T> = oneshot::Sender<Result<T, CoordinatorError>>;

/// The netting commands of the engine.
pub(crate) enum NettingCommand {
    /// Announce a round to its committee.
    Open(Box<RoundOpen>, Reply<Vec<NodeAck>>),
    /// Forward one party's bundle.
    Bundle(
        Box<(RoundId, quorate_protocol::netting::InputBundle)>,
        Reply<BundleOutcome>,
    ),
    /// Close on the inputs every node accepted and collect the outputs.
    Close(RoundId, Reply<CloseOutcome>),
    /// Sign the settlement batch.
    Settle(Box<SettleRequest>, Reply<SettleOutcome>),
}

/// Which step an outbound request belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    Announce,
    Bundle(u64),
    Close,
    /// `LimitStart` / `LimitPart` of a limit-check attempt.
    Limits(u32),
    Sign(SessionId),
}

/// An outbound message's context.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tag {
    pub(crate) round: RoundId,
    pub(crate) step: Step,
    pub(crate) node: NodeId,
}

/// Deadlines of the netting steps.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    /// Waiting for node acknowledgements (announce, bundle).
    pub(crate) ack: Duration,
    /// Waiting for every node's outputs after close.
    pub(crate) close: Duration,
    /// One settlement signing attempt.
    pub(crate) sign: Duration,
    /// One limit-check attempt of a limit-checked close.
    pub(crate) limits: Duration,
}

/// How long a closed round waits for its settlement request, and an open one past
/// its cut-off, before the engine forgets it.
const LINGER: Duration = Duration::from_secs(600);

pub(crate) struct Netting {
    identity: Arc<NodeIdentity>,
    roster: Roster,
    timeouts: Timeouts,
    rounds: BTreeMap<RoundId, LiveRound>,
    /// Round session and settlement signing sessions → round.
    sessions: BTreeMap<SessionId, RoundId>,
    requests: BTreeMap<OutboundRequestId, Tag>,
    outbox: Vec<(NodeId, Envelope, Tag)>,
}

impl Netting {
    pub(crate) fn new(identity: Arc<NodeIdentity>, roster: Roster, timeouts: Timeouts) -> Self {
        Self {
            identity,
            roster,
            timeouts,
            rounds: BTreeMap::new(),
            sessions: BTreeMap::new(),
            requests: BTreeMap::new(),
            outbox: Vec::new(),
        }
    }

    /// Envelopes to send now.
    pub(crate) fn take_outbox(&mut self) -> Vec<(NodeId, Envelope, Tag)> {
        std::mem::take(&mut self.outbox)
    }

    /// Records the request id of a sent envelope.
    pub(crate) fn sent(&mut self, id: OutboundRequestId, tag: Tag) {
        self.requests.insert(id, tag);
    }

    /// Takes the context of a request's answer, if it is a netting request.
    pub(crate) fn answered(&mut self, id: &OutboundRequestId) -> Option<Tag> {
        self.requests.remove(id)
    }

    /// Whether an envelope belongs to a netting round or settlement session.
    pub(crate) fn owns(&self, env: &Envelope) -> bool {
        self.sessions.contains_key(&env.session)
    }

    pub(crate) fn on_command(&mut self, cmd: NettingCommand, candidates: &[Candidate]) {
        let now = Instant::now();
        match cmd {
            NettingCommand::Open(open, reply) => self.open(*open, reply, now),
            NettingCommand::Bundle(b, reply) => {
                let (round, bundle) = *b;
                match self.rounds.get_mut(&round) {
                    Some(r) => {
                        let deadline = now + self.timeouts.ack;
                        r.bundle(&self.identity, bundle, reply, deadline, &mut self.outbox)
                    }
                    None => {
                        let _ = reply.send(Err(not_live(&round)));
                    }
                }
            }
            NettingCommand::Close(round, reply) => match self.rounds.get_mut(&round) {
                Some(r) => {
                    let deadline = now + self.timeouts.close;
                    r.close(&self.identity, reply, deadline, &mut self.outbox)
                }
                None => {
                    let _ = reply.send(Err(not_live(&round)));
                }
            },
            NettingCommand::Settle(req, reply) => {
                let round = req.round;
                match self.rounds.get_mut(&round) {
                    Some(r) => {
                        let started = r.settle(*req, reply);
                        if started {
                            self.next_attempt(round, candidates);
                        }
                    }
                    None => {
                        let _ = reply.send(Err(not_live(&round)));
                    }
                }
            }
        }
    }

    fn open(&mut self, open: RoundOpen, reply: Reply<Vec<NodeAck>>, now: Instant) {
        let id = open.spec.id;
        if let Some(r) = self.rounds.get_mut(&id) {
            if r.spec() != &open.spec {
                let _ = reply.send(Err(CoordinatorError::RoundConflict(format!(
                    "round {id} is live with another definition"
                ))));
                return;
            }
            // The same spec again: nodes answer an identical announcement Accepted.
            r.announce(
                &self.identity,
                &open.authorization,
                reply,
                now + self.timeouts.ack,
                &mut self.outbox,
            );
            return;
        }
        if self.rounds.len() >= MAX_LIVE_ROUNDS {
            let _ = reply.send(Err(CoordinatorError::Busy(format!(
                "{MAX_LIVE_ROUNDS} netting rounds are live; retry when one ends"
            ))));
            return;
        }
        if let Err(e) = round::check_committee(&open, &self.roster) {
            let _ = reply.send(Err(e));
            return;
        }
        let mut r = LiveRound::new(open.spec, open.key.public, self.timeouts.limits);
        r.announce(
            &self.identity,
            &open.authorization,
            reply,
            now + self.timeouts.ack,
            &mut self.outbox,
        );
        self.sessions.insert(r.spec().session(), id);
        self.rounds.insert(id, r);
    }

    /// A node's answer to a netting request.
    pub(crate) fn on_ack(&mut self, tag: Tag, ack: Ack, candidates: &[Candidate]) {
        let Some(r) = self.rounds.get_mut(&tag.round) else {
            return;
        };
        match tag.step {
            Step::Announce => r.on_announce_ack(tag.node, ack),
            Step::Bundle(op) => {
                r.on_bundle_ack(op, tag.node, ack);
                let deadline = Instant::now() + self.timeouts.close;
                r.start_waiting_close(&self.identity, deadline, &mut self.outbox);
            }
            Step::Close => r.on_close_ack(tag.node, ack),
            Step::Limits(attempt) => r.on_limit_ack(tag.node, attempt, ack),
            Step::Sign(session) => {
                if let Ack::Rejected { reason, .. } = ack {
                    if r.on_sign_refusal(session, tag.node, reason) {
                        self.next_attempt(tag.round, candidates);
                    }
                }
            }
        }
        self.finish(tag.round);
    }

    /// An authenticated envelope (sender checked against the peer, signature
    /// verified) of a netting session.
    pub(crate) fn on_envelope(&mut self, env: Envelope, candidates: &[Candidate]) {
        let Some(round) = self.sessions.get(&env.session).copied() else {
            return;
        };
        let Some(r) = self.rounds.get_mut(&round) else {
            return;
        };
        if env.session == r.spec().session() {
            match env.payload {
                Payload::NettingPublic { outputs } => {
                    r.on_public(env.sender, env.suite, env.key, outputs)
                }
                Payload::NettingParty { outputs } => {
                    r.on_party(env.sender, env.suite, env.key, outputs)
                }
                p @ (Payload::LimitPart { .. } | Payload::LimitResult { .. }) => {
                    r.on_limit_payload(env.sender, env.suite, env.key, p)
                }
                _ => tracing::debug!(round = %round, "unexpected netting payload dropped"),
            }
        } else if r.on_sign_message(env, &mut self.outbox) {
            self.next_attempt(round, candidates);
        }
        self.finish(round);
    }

    pub(crate) fn on_tick(&mut self, candidates: &[Candidate]) {
        let now = Instant::now();
        let ids: Vec<RoundId> = self.rounds.keys().copied().collect();
        for id in ids {
            let retry = match self.rounds.get_mut(&id) {
                Some(r) => {
                    let deadline = now + self.timeouts.close;
                    r.on_tick(now, &self.identity, deadline, &mut self.outbox)
                }
                None => false,
            };
            if retry {
                self.next_attempt(id, candidates);
            }
            let stale = self
                .rounds
                .get(&id)
                .is_some_and(|r| r.idle_since().is_some_and(|t| now >= t + LINGER));
            if stale {
                tracing::info!(round = %id, "forgetting an idle netting round");
                self.remove(id);
            }
            self.finish(id);
        }
    }

    /// Starts the next settlement signing attempt of `round`, if it has a job.
    fn next_attempt(&mut self, round: RoundId, candidates: &[Candidate]) {
        let Some(r) = self.rounds.get_mut(&round) else {
            return;
        };
        let timeout = self.timeouts.sign;
        if let Some(session) = r.next_attempt(&self.identity, candidates, timeout, &mut self.outbox)
        {
            self.sessions.insert(session, round);
        }
        self.finish(round);
    }

    /// Queues the round's limit-check sends (within their in-flight budget) and
    /// forgets the round if its work is over.
    fn finish(&mut self, round: RoundId) {
        if let Some(r) = self.rounds.get_mut(&round) {
            r.limit_sends(&self.identity, &mut self.outbox);
        }
        if self.rounds.get(&round).is_some_and(LiveRound::is_done) {
            self.remove(round);
        }
    }

    fn remove(&mut self, round: RoundId) {
        if let Some(r) = self.rounds.remove(&round) {
            r.abort();
        }
        self.sessions.retain(|_, r| *r != round);
        self.requests.retain(|_, t| t.round != round);
    }

    /// Fails every pending reply (engine shutting down).
    pub(crate) fn shutdown(&mut self) {
        for (_, r) in std::mem::take(&mut self.rounds) {
            r.abort();
        }
    }
}

fn not_live(round: &RoundId) -> CoordinatorError {
    CoordinatorError::UnknownRound(format!(
        "round {round} is not live in this coordinator's engine (it ended, or the \
         coordinator restarted)"
    ))
}

#[cfg(test)]
mod tests;
