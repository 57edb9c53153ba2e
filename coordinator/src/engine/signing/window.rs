//! Window certificates for client signing jobs (issue 14), collected lazily.
//!
//! A job's first attempt goes out without a certificate, as any other. When a
//! signer refuses it with `window:certificate_missing` or
//! `window:certificate_short` — its policy sets a `window_quorum` for the client
//! and asset; the refusal's detail says how many (`window_quorum=<q>`, the
//! coordinator has no copy of node policy) — the attempt ends without excluding
//! anyone or using up one of the message's attempts, and the coordinator asks
//! every member of the key's committee at once to approve the request for the
//! window (`WindowApprove`, one session per collection, answered by
//! `WindowApproved`). Each approval is checked (the member's own signature over
//! this request hash and key) and kept. Once `q` members approved, the
//! certificate is kept with the job and attached to every later `SignRequest` /
//! `PresignedSign` of it, across the retry loop; more approvals arriving later are
//! added. When every member answered (or the collection's deadline passed) with
//! fewer than `q`, the job fails with [`CoordinatorError::WindowCertificate`]
//! naming who refused and who did not answer.
//!
//! Bounded: one collection at a time per job, one approval per member (at most
//! 255), one deadline (the signing timeout).

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Instant,
};

use quorate_protocol::{
    window::{self as proto, WindowApproval, WindowCertificate},
    Envelope, NodeId, Payload, SessionId,
};
use rand_core::{OsRng, RngCore};

use super::super::task::Task;
use crate::{error::CoordinatorError, types::Attempt};

/// One job's certificate: the approvals held, the quorum signers asked for, and a
/// running collection.
#[derive(Debug, Default)]
struct JobWindow {
    /// Valid approvals by member.
    approvals: BTreeMap<NodeId, WindowApproval>,
    /// The largest quorum a signer or approver named.
    need: u16,
    /// The collection running now, if any.
    collecting: Option<Collection>,
    /// Every collection session of the job (late answers still count).
    sessions: Vec<SessionId>,
}

#[derive(Debug)]
struct Collection {
    asked: BTreeSet<NodeId>,
    refused: BTreeMap<NodeId, String>,
    deadline: Instant,
}

impl JobWindow {
    fn certificate(&self) -> WindowCertificate {
        WindowCertificate {
            approvals: self.approvals.values().cloned().collect(),
        }
    }

    fn complete(&self) -> bool {
        self.need > 0 && self.approvals.len() >= usize::from(self.need)
    }
}

/// The window state of every signing job.
#[derive(Debug, Default)]
pub(crate) struct Windows {
    jobs: BTreeMap<u64, JobWindow>,
    /// Collection session → job.
    sessions: BTreeMap<SessionId, u64>,
}

impl Windows {
    /// Whether job `id` is collecting approvals now (its messages wait).
    pub(crate) fn collecting(&self, id: u64) -> bool {
        self.jobs.get(&id).is_some_and(|j| j.collecting.is_some())
    }

    /// The certificate to attach to job `id`'s attempts (empty: none needed yet).
    pub(crate) fn certificate(&self, id: u64) -> WindowCertificate {
        self.jobs
            .get(&id)
            .map(JobWindow::certificate)
            .unwrap_or_default()
    }

    /// The job ended.
    pub(crate) fn forget(&mut self, id: u64) {
        if let Some(j) = self.jobs.remove(&id) {
            for s in j.sessions {
                self.sessions.remove(&s);
            }
        }
    }
}

/// Why a collection ended.
enum Ended {
    /// Enough approvals.
    Certified,
    /// Everyone answered or the deadline passed with too few.
    Short(CoordinatorError),
}

impl Task {
    /// A refusal that concerns window certificates: of a collection's
    /// `WindowApprove`, or a signer asking for a certificate. True when handled
    /// here (the caller does nothing more with it).
    pub(crate) fn window_refusal(
        &mut self,
        session: SessionId,
        node: NodeId,
        reason: &str,
        detail: &str,
    ) -> bool {
        if let Some(id) = self.signing.window.sessions.get(&session).copied() {
            let text = if detail.is_empty() {
                reason.to_owned()
            } else {
                format!("{reason}: {detail}")
            };
            tracing::info!(%node, reason = %text, "window approval refused");
            if let Some(c) = self
                .signing
                .window
                .jobs
                .get_mut(&id)
                .and_then(|j| j.collecting.as_mut())
            {
                c.refused.insert(node, reason.to_owned());
            }
            self.check_collection(id);
            return true;
        }
        let wants_certificate = reason == proto::REASON_CERTIFICATE_MISSING
            || reason == proto::REASON_CERTIFICATE_SHORT;
        if !wants_certificate {
            return false;
        }
        let Some((id, m)) = self.signing.session_job.get(&session).copied() else {
            return false;
        };
        let Some(members) = self
            .signing
            .jobs
            .get(&id)
            .map(|j| j.key.public.members.len())
        else {
            return false;
        };
        let quorum =
            proto::quorum_from_detail(detail).unwrap_or(u16::try_from(members).unwrap_or(u16::MAX));
        let held = self
            .signing
            .window
            .jobs
            .get(&id)
            .map_or(0, |w| w.approvals.len());
        if held >= usize::from(quorum) {
            // The certificate holds that many already: this signer counts them
            // differently. An ordinary refusal (it is excluded), never a loop.
            return false;
        }
        tracing::info!(%session, %node, quorum, "signer asks for a window certificate");
        self.window_attempt_paused(id, m, session, node, reason);
        let w = self.signing.window.jobs.entry(id).or_default();
        w.need = w.need.max(quorum);
        if w.collecting.is_none() && !w.complete() {
            self.start_collection(id);
        }
        // The messages restart (with the certificate) when the collection ends.
        if !self.signing.window.collecting(id) {
            self.pump_job(id);
        }
        true
    }

    /// Ends message `m`'s current attempt if it is `session`: nobody excluded, no
    /// attempt used up (the signer asked for something the coordinator can get).
    fn window_attempt_paused(
        &mut self,
        id: u64,
        m: usize,
        session: SessionId,
        node: NodeId,
        reason: &str,
    ) {
        let Some(job) = self.signing.jobs.get_mut(&id) else {
            return;
        };
        let current = job.messages[m]
            .current
            .as_ref()
            .is_some_and(|r| r.session == session);
        if !current {
            return;
        }
        let Some(run) = job.messages[m].current.take() else {
            return;
        };
        self.signing.load.ended(&run.signers);
        job.messages[m].attempts = job.messages[m].attempts.saturating_sub(1);
        job.retries.attempts.push(Attempt {
            signers: run.signers,
            outcome: "certificate_required".into(),
            blamed: Vec::new(),
            refused: vec![(node, reason.to_owned())],
        });
    }

    /// Asks every committee member without an approval yet to approve job `id`'s
    /// request for the window.
    fn start_collection(&mut self, id: u64) {
        let Some(job) = self.signing.jobs.get(&id) else {
            return;
        };
        let held: BTreeSet<NodeId> = self
            .signing
            .window
            .jobs
            .get(&id)
            .map(|w| w.approvals.keys().copied().collect())
            .unwrap_or_default();
        let asked: BTreeSet<NodeId> = job
            .key
            .public
            .members
            .keys()
            .filter(|n| !held.contains(n))
            .copied()
            .collect();
        let mut s = [0u8; 32];
        OsRng.fill_bytes(&mut s);
        let session = SessionId(s);
        let env = Envelope::seal(
            &self.identity,
            job.key.public.suite,
            job.key.public.key_id,
            session,
            Payload::WindowApprove {
                request: job.encoded.clone(),
            },
        );
        let deadline = Instant::now() + self.signing.timeout;
        tracing::info!(%session, asked = asked.len(), "collecting window approvals");
        let w = self.signing.window.jobs.entry(id).or_default();
        w.sessions.push(session);
        w.collecting = Some(Collection {
            asked: asked.clone(),
            refused: BTreeMap::new(),
            deadline,
        });
        self.signing.window.sessions.insert(session, id);
        for node in asked {
            self.send_tracked_envelope(node, env.clone());
        }
        self.check_collection(id);
    }

    /// A member's `WindowApproved` (the envelope verified, from its sender).
    pub(crate) fn on_window_approved(&mut self, env: Envelope) {
        let Some(id) = self.signing.window.sessions.get(&env.session).copied() else {
            return;
        };
        let Payload::WindowApproved { approval } = env.payload else {
            return;
        };
        let Some(job) = self.signing.jobs.get(&id) else {
            return;
        };
        let key = &job.key.public;
        if !key.members.contains_key(&env.sender) {
            tracing::warn!(node = %env.sender, "window approval from a non-member");
            return;
        }
        if let Err(e) = approval.verify_for(&job.request_hash, &key.key_id, &env.sender) {
            tracing::warn!(node = %env.sender, error = %e, "window approval does not verify; ignored");
            return;
        }
        let Some(w) = self.signing.window.jobs.get_mut(&id) else {
            return;
        };
        w.need = w.need.max(approval.statement.required_quorum);
        w.approvals.insert(env.sender, approval);
        self.check_collection(id);
    }

    /// Ends job `id`'s collection when it has enough approvals, or everyone asked
    /// answered, or its deadline passed.
    fn check_collection(&mut self, id: u64) {
        let Some(w) = self.signing.window.jobs.get(&id) else {
            return;
        };
        let Some(c) = &w.collecting else {
            return;
        };
        let answered = c
            .asked
            .iter()
            .all(|n| w.approvals.contains_key(n) || c.refused.contains_key(n));
        let ended = if w.complete() {
            Ended::Certified
        } else if answered || Instant::now() >= c.deadline {
            let approved: Vec<NodeId> = w.approvals.keys().copied().collect();
            let refused: Vec<(NodeId, String)> =
                c.refused.iter().map(|(n, r)| (*n, r.clone())).collect();
            let unanswered: Vec<NodeId> = c
                .asked
                .iter()
                .filter(|n| !w.approvals.contains_key(n) && !c.refused.contains_key(n))
                .copied()
                .collect();
            Ended::Short(CoordinatorError::WindowCertificate {
                need: w.need,
                approved,
                refused,
                unanswered,
            })
        } else {
            return;
        };
        // The session stays mapped while the job lives: late approvals still count.
        if let Some(w) = self.signing.window.jobs.get_mut(&id) {
            w.collecting = None;
        }
        match ended {
            Ended::Certified => {
                tracing::info!(job = id, "window certificate complete");
                self.pump_job(id);
            }
            Ended::Short(err) => {
                tracing::warn!(job = id, error = %err, "window certificate short; job fails");
                self.finish_job(id, Err(err));
            }
        }
    }

    /// Deadlines of running collections.
    pub(crate) fn window_tick(&mut self) {
        let now = Instant::now();
        let due: Vec<u64> = self
            .signing
            .window
            .jobs
            .iter()
            .filter(|(_, w)| w.collecting.as_ref().is_some_and(|c| c.deadline <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.check_collection(id);
        }
    }
}
