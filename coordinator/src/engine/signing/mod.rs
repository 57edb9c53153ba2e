//! Client signing jobs: every message of a request is signed in its own session,
//! up to [`MAX_PARALLEL_MESSAGES`] of them at once; each session retries
//! ROAST-style over signer subsets (fresh nonces, at most n − t + 1 attempts per
//! message, nodes blamed or refusing in one message excluded for the whole job).
//!
//! Signers are picked by [`select::pick`] from the key's connected members with
//! room (at most [`load::MAX_SESSIONS_PER_NODE`] sessions in flight per node; a
//! message waits when no t members have room), least busy first. When every chosen
//! signer has a presigned commitment in the [`presign::Presign`] book the session
//! is one round trip (`Aggregator::presigned`); otherwise it is the two-round
//! protocol.

pub(crate) mod load;
pub(crate) mod presign;
pub(crate) mod window;

use std::{
    collections::{BTreeMap, VecDeque},
    time::{Duration, Instant},
};

use quorate_protocol::{
    aggregate::AggregatorConfig, request::SignedRequest, Aggregator, Envelope, Input, NodeId,
    Output, ProtocolError, SessionId, SignTarget, SignatureBytes, TimerId, Timestamp,
};
use rand_core::{OsRng, RngCore};
use tokio::sync::oneshot;

use super::{
    retry::Retries,
    select::{self, Candidate},
    task::Task,
};
use crate::{
    error::CoordinatorError,
    types::{Attempt, KeyRecord, MessageSignature, SignResult},
};

/// Messages of one request in flight at once.
pub(crate) const MAX_PARALLEL_MESSAGES: usize = 16;

/// Waiting jobs tried in a row without finding room before the rest wait too.
const WAITING_TRIES: usize = 2;

/// The reply channel of a signing job.
pub(crate) type SignReply = oneshot::Sender<Result<SignResult, CoordinatorError>>;

struct AttemptRun {
    session: SessionId,
    aggregator: Aggregator,
    signers: Vec<NodeId>,
    deadline: Instant,
}

#[derive(Default)]
struct MessageRun {
    signature: Option<SignatureBytes>,
    attempts: usize,
    current: Option<AttemptRun>,
}

struct SignJob {
    key: KeyRecord,
    /// `request.encode()`, forwarded to every signer of every attempt.
    encoded: Vec<u8>,
    /// What each message run signs ([`SignedRequest`]'s targets under the key).
    targets: Vec<SignTarget>,
    /// `request.request.hash()`, what window approvals name.
    request_hash: [u8; 32],
    messages: Vec<MessageRun>,
    retries: Retries,
    /// Every session of this job, so late answers to earlier attempts still count.
    sessions: Vec<SessionId>,
    reply: Option<SignReply>,
}

impl SignJob {
    fn in_flight(&self) -> usize {
        self.messages.iter().filter(|m| m.current.is_some()).count()
    }
}

/// What starting an attempt came to.
enum Start {
    Started,
    /// No t members have room now: retry when a session ends.
    NoRoom,
    /// The job ended (given up).
    Ended,
}

/// Every signing job of the engine.
pub(crate) struct Signing {
    jobs: BTreeMap<u64, SignJob>,
    next_job: u64,
    session_job: BTreeMap<SessionId, (u64, usize)>,
    /// Jobs with a message waiting for room on the nodes, oldest first.
    waiting: VecDeque<u64>,
    pub(crate) load: load::Load,
    pub(crate) presign: presign::Presign,
    /// Window certificates of the jobs (`window`).
    pub(crate) window: window::Windows,
    timeout: Duration,
}

impl Signing {
    pub(crate) fn new(load: load::Load, timeout: Duration) -> Self {
        Self {
            jobs: BTreeMap::new(),
            next_job: 0,
            session_job: BTreeMap::new(),
            waiting: VecDeque::new(),
            load,
            presign: presign::Presign::new(),
            window: window::Windows::default(),
            timeout,
        }
    }

    /// Whether `session` is one of a signing job's.
    pub(crate) fn owns(&self, session: &SessionId) -> bool {
        self.session_job.contains_key(session)
    }

    /// Fails every job (engine shutdown).
    pub(crate) fn shutdown(&mut self) {
        for (_, j) in std::mem::take(&mut self.jobs) {
            if let Some(r) = j.reply {
                let _ = r.send(Err(CoordinatorError::Shutdown));
            }
        }
    }
}

fn random_session() -> SessionId {
    let mut s = [0u8; 32];
    OsRng.fill_bytes(&mut s);
    SessionId(s)
}

impl Task {
    /// A client's signed request for `key` (already verified by the handle).
    pub(crate) fn start_sign_job(
        &mut self,
        key: KeyRecord,
        request: SignedRequest,
        reply: SignReply,
    ) {
        let targets = match request.request.targets(&key.public) {
            Ok(t) => t,
            Err(e) => {
                let _ = reply.send(Err(CoordinatorError::BadRequest(e.to_string())));
                return;
            }
        };
        self.signing.presign.know(&key.public);
        let id = self.signing.next_job;
        self.signing.next_job += 1;
        let messages = targets.iter().map(|_| MessageRun::default()).collect();
        self.signing.jobs.insert(
            id,
            SignJob {
                encoded: request.encode(),
                request_hash: request.request.hash(),
                targets,
                key,
                messages,
                retries: Retries::default(),
                sessions: Vec::new(),
                reply: Some(reply),
            },
        );
        // Behind the jobs already waiting for room.
        if self.signing.waiting.is_empty() {
            self.pump_job(id);
        } else {
            self.signing.waiting.push_back(id);
            self.pump_waiting();
        }
    }

    /// Starts attempts for the job's unsigned, idle messages while it has fewer
    /// than [`MAX_PARALLEL_MESSAGES`] in flight.
    fn pump_job(&mut self, id: u64) {
        loop {
            let Some(job) = self.signing.jobs.get(&id) else {
                return;
            };
            if job.messages.iter().all(|m| m.signature.is_some()) {
                self.finish_job(id, Ok(()));
                return;
            }
            // Messages wait while window approvals are collected.
            if self.signing.window.collecting(id) {
                return;
            }
            if job.in_flight() >= MAX_PARALLEL_MESSAGES {
                return;
            }
            let Some(m) = job
                .messages
                .iter()
                .position(|m| m.signature.is_none() && m.current.is_none())
            else {
                return;
            };
            match self.start_attempt(id, m) {
                Start::Started => {}
                Start::Ended => return,
                Start::NoRoom => {
                    if !self.signing.waiting.contains(&id) {
                        self.signing.waiting.push_back(id);
                    }
                    return;
                }
            }
        }
    }

    /// Gives jobs waiting for room another chance (after a session ended), oldest
    /// first, until [`WAITING_TRIES`] of them in a row still find no room (the
    /// nodes are full: the rest keep their place without being tried).
    fn pump_waiting(&mut self) {
        let mut waiting = std::mem::take(&mut self.signing.waiting);
        let mut still_full = 0;
        while let Some(id) = waiting.pop_front() {
            self.pump_job(id);
            if self.signing.waiting.contains(&id) {
                still_full += 1;
                if still_full == WAITING_TRIES {
                    break;
                }
            } else {
                still_full = 0;
            }
        }
        // Those not tried stay behind the ones just re-queued, in their order.
        for id in waiting {
            if !self.signing.waiting.contains(&id) {
                self.signing.waiting.push_back(id);
            }
        }
    }

    /// The key's members not excluded from the job, as selection candidates.
    fn job_candidates(&self, job: &SignJob) -> Vec<Candidate> {
        let members: Vec<NodeId> = job
            .key
            .public
            .members
            .keys()
            .filter(|m| !job.retries.excluded.contains(m))
            .copied()
            .collect();
        self.candidates(Some(&members))
    }

    /// Starts the next attempt for message `m` of job `id`.
    fn start_attempt(&mut self, id: u64, m: usize) -> Start {
        let Some(job) = self.signing.jobs.get(&id) else {
            return Start::Ended;
        };
        let public = job.key.public.clone();
        let key_id = public.key_id;
        let t = usize::from(public.threshold);
        let n = public.members.len();
        // At most n − t + 1 attempts per message.
        if job.messages[m].attempts > n.saturating_sub(t) {
            let err = job
                .retries
                .give_up(n - job.retries.excluded.len(), t, &["policy:"]);
            self.finish_job(id, Err(err));
            return Start::Ended;
        }
        let candidates = self.job_candidates(job);
        let with_room: Vec<Candidate> = candidates
            .iter()
            .filter(|c| self.signing.load.has_room(&c.node))
            .cloned()
            .collect();
        // The usual choice (segments, then load); presigned when every chosen
        // signer holds a commitment, or when as many segments can be spanned by
        // signers that all do; otherwise two rounds with the usual choice.
        let Some(best) = select::pick(&candidates, t) else {
            let err = job.retries.give_up(candidates.len(), t, &["policy:"]);
            self.finish_job(id, Err(err));
            return Start::Ended;
        };
        // Busy nodes make a message wait rather than sign from fewer segments.
        let usual = match select::pick(&with_room, t) {
            Some(u)
                if select::segments_spanned(&candidates, &u)
                    >= select::segments_spanned(&candidates, &best) =>
            {
                u
            }
            _ => return Start::NoRoom,
        };
        let presign = &self.signing.presign;
        let holding: Vec<Candidate> = with_room
            .iter()
            .filter(|c| presign.available(key_id, &c.node) > 0)
            .cloned()
            .collect();
        let signers = if usual.iter().all(|n| presign.available(key_id, n) > 0) {
            usual
        } else {
            match select::pick(&holding, t) {
                Some(p)
                    if select::segments_spanned(&with_room, &p)
                        >= select::segments_spanned(&with_room, &usual) =>
                {
                    p
                }
                _ => usual,
            }
        };
        let commitments = self.signing.presign.take_set(key_id, &signers);
        let session = random_session();
        let config = AggregatorConfig {
            session,
            signers: signers.clone(),
            target: job.targets[m].clone(),
            request: job.encoded.clone(),
            timeout_ms: u64::try_from(self.signing.timeout.as_millis()).unwrap_or(u64::MAX),
        };
        let presigned = commitments.is_some();
        let aggregator = match commitments {
            Some(c) => Aggregator::presigned(self.identity.clone(), &public, config, c),
            None => Aggregator::new(self.identity.clone(), &public, config),
        };
        let mut aggregator = match aggregator {
            Ok(a) => a.with_certificate(self.signing.window.certificate(id)),
            Err(e) => {
                self.finish_job(id, Err(CoordinatorError::BadRequest(e.to_string())));
                return Start::Ended;
            }
        };
        let outputs = aggregator.handle(Timestamp(0), Input::Start, &mut OsRng);
        self.signing.load.started(&signers);
        if let Some(job) = self.signing.jobs.get_mut(&id) {
            job.sessions.push(session);
            let run = &mut job.messages[m];
            run.attempts += 1;
            run.current = Some(AttemptRun {
                session,
                aggregator,
                signers,
                deadline: Instant::now() + self.signing.timeout,
            });
        }
        self.signing.session_job.insert(session, (id, m));
        tracing::debug!(%session, message = m, presigned, "signing attempt started");
        self.on_aggregator_result(id, m, outputs);
        Start::Started
    }

    /// An envelope of a signing session (verified, from its authenticated sender).
    pub(crate) fn on_signing_envelope(&mut self, env: Envelope) {
        let Some((id, m)) = self.signing.session_job.get(&env.session).copied() else {
            return;
        };
        let result = {
            let Some(run) = self
                .signing
                .jobs
                .get_mut(&id)
                .and_then(|j| j.messages[m].current.as_mut())
            else {
                return;
            };
            if run.session != env.session {
                return;
            }
            run.aggregator
                .handle(Timestamp(0), Input::Message(env), &mut OsRng)
        };
        self.on_aggregator_result(id, m, result);
    }

    fn on_aggregator_result(
        &mut self,
        id: u64,
        m: usize,
        result: Result<Vec<Output<SignatureBytes>>, ProtocolError>,
    ) {
        match result {
            Ok(outputs) => {
                for o in outputs {
                    match o {
                        Output::Send { to, msg } => self.send_tracked_envelope(to, msg),
                        Output::Done(sig) => self.attempt_succeeded(id, m, sig),
                        Output::SetTimer { .. } => {}
                    }
                }
            }
            Err(e) if e.is_fatal() => {
                let outcome = match &e {
                    ProtocolError::Aborted {
                        fault: quorate_protocol::Fault::Timeout,
                        ..
                    } => "timeout",
                    _ => "blamed",
                };
                self.attempt_failed(id, m, outcome, e.culprits(), None);
            }
            Err(e) => tracing::debug!(error = %e, "message dropped"),
        }
    }

    fn attempt_succeeded(&mut self, id: u64, m: usize, sig: SignatureBytes) {
        let Some(job) = self.signing.jobs.get_mut(&id) else {
            return;
        };
        let Some(run) = job.messages[m].current.take() else {
            return;
        };
        self.signing.load.ended(&run.signers);
        job.retries.attempts.push(Attempt {
            signers: run.signers,
            outcome: "signed".into(),
            blamed: Vec::new(),
            refused: Vec::new(),
        });
        job.messages[m].signature = Some(sig);
        // Jobs waiting for room go first, then this one refills.
        self.pump_waiting();
        self.pump_job(id);
    }

    fn attempt_failed(
        &mut self,
        id: u64,
        m: usize,
        outcome: &str,
        blamed: Vec<NodeId>,
        refused: Option<(NodeId, String)>,
    ) {
        let Some(job) = self.signing.jobs.get_mut(&id) else {
            return;
        };
        let Some(run) = job.messages[m].current.take() else {
            return;
        };
        self.signing.load.ended(&run.signers);
        tracing::warn!(session = %run.session, message = m, outcome, ?blamed, ?refused, "signing attempt failed; retrying with another subset");
        job.retries.failed(run.signers, outcome, blamed, refused);
        self.pump_waiting();
        self.pump_job(id);
    }

    fn presign_attempt_refused(&mut self, id: u64, m: usize, node: NodeId, reason: String) {
        let Some(job) = self.signing.jobs.get_mut(&id) else {
            return;
        };
        let Some(run) = job.messages[m].current.take() else {
            return;
        };
        self.signing.load.ended(&run.signers);
        tracing::info!(session = %run.session, %node, %reason, "presigned attempt refused; retrying");
        job.messages[m].attempts = job.messages[m].attempts.saturating_sub(1);
        job.retries.attempts.push(Attempt {
            signers: run.signers,
            outcome: "refused".into(),
            blamed: Vec::new(),
            refused: vec![(node, reason)],
        });
        self.pump_waiting();
        self.pump_job(id);
    }

    fn finish_job(&mut self, id: u64, result: Result<(), CoordinatorError>) {
        let Some(mut job) = self.signing.jobs.remove(&id) else {
            return;
        };
        self.signing.window.forget(id);
        for run in job.messages.iter_mut().filter_map(|m| m.current.take()) {
            self.signing.load.ended(&run.signers);
        }
        for s in &job.sessions {
            self.signing.session_job.remove(s);
        }
        self.signing.waiting.retain(|w| *w != id);
        let out = result.and_then(|()| {
            let signatures = job
                .messages
                .iter()
                .zip(&job.targets)
                .map(|(run, target)| {
                    run.signature.clone().map(|signature| MessageSignature {
                        message: target.message.clone(),
                        signature,
                    })
                })
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| CoordinatorError::Transport("job ended unsigned".into()))?;
            Ok(SignResult {
                signatures,
                attempts: job.retries.attempts,
            })
        });
        if let Some(r) = job.reply.take() {
            let _ = r.send(out);
        }
        self.pump_waiting();
    }

    /// A node refused (or could not be sent) a signing session's envelope.
    pub(crate) fn on_signing_refusal(&mut self, session: SessionId, node: NodeId, reason: String) {
        if reason.starts_with("presign") || reason.starts_with("unreachable") {
            // Its pool is not what the book holds (restart) or it is gone.
            self.signing.presign.forget(&node);
        }
        if self.window_refusal(session, node, &reason, "") {
            return;
        }
        let Some((id, m)) = self.signing.session_job.get(&session).copied() else {
            return;
        };
        let current = self
            .signing
            .jobs
            .get(&id)
            .and_then(|j| j.messages[m].current.as_ref())
            .is_some_and(|r| r.session == session);
        if current && reason.starts_with("presign") {
            // The node does not hold what the book offered (a restart, an expiry
            // race): not its fault. The message is retried at once — in two rounds
            // with this node, its commitments forgotten — without an exclusion and
            // without using up one of the message's n − t + 1 attempts.
            self.presign_attempt_refused(id, m, node, reason);
        } else if current {
            self.attempt_failed(id, m, "refused", Vec::new(), Some((node, reason)));
        } else if let Some(job) = self.signing.jobs.get_mut(&id) {
            // A late answer from an earlier attempt: remember it for the next choice.
            if job.retries.late_refusal(node, reason.clone()) {
                tracing::warn!(%node, %reason, "late refusal from an earlier attempt");
            }
        }
    }

    /// Deadlines of running attempts; expired commitments; waiting jobs.
    pub(crate) fn signing_tick(&mut self) {
        self.signing.presign.expire();
        self.window_tick();
        let now = Instant::now();
        let due: Vec<(u64, usize)> = self
            .signing
            .jobs
            .iter()
            .flat_map(|(id, j)| {
                j.messages.iter().enumerate().filter_map(move |(m, r)| {
                    r.current
                        .as_ref()
                        .is_some_and(|r| r.deadline <= now)
                        .then_some((*id, m))
                })
            })
            .collect();
        for (id, m) in due {
            let result = match self
                .signing
                .jobs
                .get_mut(&id)
                .and_then(|j| j.messages[m].current.as_mut())
            {
                Some(run) => run.aggregator.handle(
                    Timestamp(0),
                    Input::Timeout(TimerId::Deadline),
                    &mut OsRng,
                ),
                None => continue,
            };
            self.on_aggregator_result(id, m, result);
        }
        self.pump_waiting();
    }
}
