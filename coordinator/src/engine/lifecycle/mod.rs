//! Refresh and resharing runs the coordinator drives (it never holds key
//! material: dealers seal sub-shares to the new members end to end).
//!
//! A run: check the operation (`plan`), record the run in the store, send the signed
//! `ReshareStart` to every participant (dealers and new members), relay their
//! traffic if routing goes through the coordinator, and collect every new member's
//! `ReshareConfirm` and every dealer's `ReshareCommit`. With all of them the run
//! **commits**: the coordinator derives the new public key package from the
//! commitments (its hash must be what every member confirmed), stores the new key
//! record (generation + 1) and the finish proof in one transaction, *then* sends
//! `ReshareFinish` to every participant and every old member — nodes switch
//! generations only on that proof. It then waits for every new member's attested
//! report and answers with the complete record.
//!
//! Before the commit point any refusal, unreachable participant or the deadline
//! fails the run and sends `ReshareAbort` (nodes keep the old generation). Every
//! recipient of a finish or abort is followed up until it acknowledges: the
//! envelope is sent again on reconnect and every [`RESEND`]; late reports complete
//! the stored record's attestations. A restarted coordinator reads its stored runs:
//! committed ones are followed up the same way, uncommitted ones are aborted.

pub(crate) mod plan;
pub(crate) mod repair;

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::{Duration, Instant},
};

use quorate_protocol::{
    lifecycle::{public_package, verify_finish, ApprovedOperation, ReshareConfig},
    AttestedKey, Envelope, GroupPublic, KeyAttestation, KeyId, NodeId, NodeIdentity, Payload,
    SessionId,
};
use tokio::sync::oneshot;

use crate::{
    error::CoordinatorError,
    store::{lifecycle::StoredRun, Store},
    types::KeyRecord,
};

/// Where a run's result goes.
pub(crate) type Reply = oneshot::Sender<Result<KeyRecord, CoordinatorError>>;

/// Interruption tests: in debug builds, the process exits at `step` when
/// `QUORATE_CRASH_AT` names it (as if killed there). Release builds compile this
/// out. Step: `coordinator:committed` (the commit is stored, the finish not sent).
fn crash_point(step: &str) {
    #[cfg(debug_assertions)]
    if std::env::var("QUORATE_CRASH_AT").is_ok_and(|v| v == step) {
        eprintln!("QUORATE_CRASH_AT={step}: exiting here");
        std::process::exit(86);
    }
    #[cfg(not(debug_assertions))]
    let _ = step;
}

/// How often a follow-up is sent again to recipients that have not acknowledged.
pub(crate) const RESEND: Duration = Duration::from_secs(15);

struct Run {
    key: KeyRecord,
    config: ReshareConfig,
    /// The signed start (carried by the finish proof).
    start: Envelope,
    participants: Vec<NodeId>,
    /// Participants and every old member: who gets the finish proof.
    recipients: Vec<NodeId>,
    commits: BTreeMap<NodeId, Vec<Vec<u8>>>,
    confirms: BTreeMap<NodeId, Envelope>,
    reports: BTreeMap<NodeId, KeyAttestation>,
    /// The new record, once committed.
    committed: Option<(KeyRecord, Envelope)>,
    /// Recipients that acknowledged the finish.
    acked: BTreeSet<NodeId>,
    deadline: Instant,
    reply: Option<Reply>,
}

/// A committed run whose recipients have not all acknowledged the finish (or
/// whose members have not all reported), or an aborted run not yet acknowledged.
struct Followup {
    key_id: KeyId,
    env: Envelope,
    unacked: BTreeSet<NodeId>,
    /// Finish follow-ups: the new record and the members still to report.
    record: Option<(KeyRecord, BTreeSet<NodeId>)>,
    /// Every recipient (kept in the store with the sets above).
    recipients: Vec<NodeId>,
    participants: Vec<NodeId>,
    generation: u64,
    sent: Instant,
}

impl Followup {
    fn stored(&self, session: SessionId) -> StoredRun {
        StoredRun {
            key_id: self.key_id,
            session,
            generation: self.generation,
            participants: self.participants.clone(),
            recipients: self.recipients.clone(),
            unreported: self
                .record
                .as_ref()
                .map(|(_, m)| m.iter().copied().collect())
                .unwrap_or_default(),
            unacked: self.unacked.iter().copied().collect(),
            finish: self.record.as_ref().map(|_| self.env.encode()),
            started_at_ms: crate::backend::now_ms(),
        }
    }

    fn done(&self) -> bool {
        self.unacked.is_empty() && self.record.as_ref().is_none_or(|(_, m)| m.is_empty())
    }
}

/// What to send after an event: one envelope to several nodes.
pub(crate) struct Outgoing {
    /// Recipients.
    pub to: Vec<NodeId>,
    /// The envelope.
    pub env: Envelope,
}

/// The live runs and their follow-ups.
#[derive(Default)]
pub(crate) struct Lifecycle {
    runs: BTreeMap<SessionId, Run>,
    followups: BTreeMap<SessionId, Followup>,
    store: Option<Arc<Store>>,
}

fn abort_envelope(
    identity: &NodeIdentity,
    key: &KeyRecord,
    session: SessionId,
    reason: &str,
) -> Envelope {
    let mut end = reason.len().min(256);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let reason = reason[..end].to_string();
    Envelope::seal(
        identity,
        key.public.suite,
        key.key_id(),
        session,
        Payload::ReshareAbort { reason },
    )
}

impl Lifecycle {
    /// Uses `store` for run records, and follows up the runs a previous process
    /// left: committed ones get their finish proof again, the rest are aborted.
    pub(crate) fn attach(&mut self, store: Arc<Store>, identity: &NodeIdentity) {
        match store.lifecycle_runs() {
            Ok(runs) => {
                for run in runs {
                    let Ok(Some(key)) = store.key(&run.key_id) else {
                        continue;
                    };
                    let (env, record, unacked) = match &run.finish {
                        Some(bytes) => match Envelope::decode(bytes) {
                            Ok(env) => (
                                env,
                                Some((key, run.unreported.iter().copied().collect())),
                                run.unacked.iter().copied().collect(),
                            ),
                            Err(_) => continue,
                        },
                        None => (
                            abort_envelope(
                                identity,
                                &key,
                                run.session,
                                "the coordinator restarted before the run committed",
                            ),
                            None,
                            run.participants.iter().copied().collect(),
                        ),
                    };
                    tracing::info!(key = %run.key_id, session = %run.session,
                        committed = run.finish.is_some(), "following up a lifecycle run from before the restart");
                    let f = Followup {
                        key_id: run.key_id,
                        env,
                        unacked,
                        record,
                        recipients: run.recipients.clone(),
                        participants: run.participants.clone(),
                        generation: run.generation,
                        sent: Instant::now(),
                    };
                    if run.finish.is_none() {
                        let _ = store.put_lifecycle_run(&f.stored(run.session));
                    }
                    self.followups.insert(run.session, f);
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot read lifecycle runs from the store"),
        }
        self.store = Some(store);
    }

    /// Whether `key` has a live run (it is not signed with meanwhile).
    pub(crate) fn busy(&self, key: &KeyId) -> bool {
        self.runs.values().any(|r| r.key.key_id() == *key)
    }

    /// Whether `session` is a live run or a follow-up.
    pub(crate) fn owns(&self, session: &SessionId) -> bool {
        self.runs.contains_key(session) || self.followups.contains_key(session)
    }

    /// The participants of a live run (the nodes it relays between).
    pub(crate) fn participants(&self, session: &SessionId) -> Option<&[NodeId]> {
        self.runs.get(session).map(|r| r.participants.as_slice())
    }

    fn persist(&self, run: &Run) -> Result<(), CoordinatorError> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        let unreported = run
            .config
            .committee
            .nodes()
            .filter(|n| !run.reports.contains_key(n))
            .collect();
        store.put_lifecycle_run(&Self::stored_run(run, unreported))
    }

    fn stored_run(run: &Run, unreported: Vec<NodeId>) -> StoredRun {
        StoredRun {
            key_id: run.config.key_id,
            session: run.config.session,
            generation: run.config.generation,
            participants: run.participants.clone(),
            recipients: run.recipients.clone(),
            unreported,
            unacked: run
                .recipients
                .iter()
                .filter(|n| !run.acked.contains(n))
                .copied()
                .collect(),
            finish: run.committed.as_ref().map(|(_, env)| env.encode()),
            started_at_ms: crate::backend::now_ms(),
        }
    }

    /// Starts a run of `op` on `key` with `plan`: the start envelope to send.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start(
        &mut self,
        identity: &NodeIdentity,
        key: KeyRecord,
        op: ApprovedOperation,
        plan: plan::Plan,
        session: SessionId,
        timeout: Duration,
        reply: Reply,
    ) -> Option<Outgoing> {
        let generation = key.generation + 1;
        let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        let config = ReshareConfig {
            suite: key.public.suite,
            key_id: key.key_id(),
            session,
            old: key.public.clone(),
            dealers: plan.dealers.clone(),
            committee: plan.committee.clone(),
            threshold: op.operation.threshold,
            generation,
            timeout_ms,
            coordinator: identity.node_id(),
        };
        let env = Envelope::seal(
            identity,
            key.public.suite,
            key.key_id(),
            session,
            Payload::ReshareStart {
                operation: op.encode(),
                dealers: plan.dealers,
                old: key.public.clone(),
                committee: plan.committee,
                generation,
                timeout_ms,
            },
        );
        let participants = config.participants();
        let mut recipients = participants.clone();
        recipients.extend(key.public.members.keys().copied());
        recipients.sort();
        recipients.dedup();
        let run = Run {
            key,
            config,
            start: env.clone(),
            participants: participants.clone(),
            recipients,
            commits: BTreeMap::new(),
            confirms: BTreeMap::new(),
            reports: BTreeMap::new(),
            committed: None,
            acked: BTreeSet::new(),
            deadline: Instant::now() + timeout,
            reply: Some(reply),
        };
        if let Err(e) = self.persist(&run) {
            if let Some(r) = run.reply {
                let _ = r.send(Err(e));
            }
            return None;
        }
        tracing::info!(key = %run.config.key_id, %session, kind = op.operation.kind.name(), generation,
            t = run.config.threshold, n = run.config.committee.len(), dealers = run.config.dealers.len(),
            "lifecycle run started");
        self.runs.insert(session, run);
        Some(Outgoing {
            to: participants,
            env,
        })
    }

    /// Fails a live run before its commit point: the caller gets `e`, participants
    /// an abort (followed up until they reconnect).
    fn abort(
        &mut self,
        session: SessionId,
        e: CoordinatorError,
        identity: &NodeIdentity,
    ) -> Option<Outgoing> {
        let mut run = self.runs.remove(&session)?;
        tracing::warn!(key = %run.config.key_id, error = %e, "lifecycle run failed; aborting it on every participant");
        let env = abort_envelope(identity, &run.key, session, &e.to_string());
        if let Some(r) = run.reply.take() {
            let _ = r.send(Err(e));
        }
        let f = Followup {
            key_id: run.config.key_id,
            env: env.clone(),
            unacked: run.participants.iter().copied().collect(),
            record: None,
            recipients: run.participants.clone(),
            participants: run.participants.clone(),
            generation: run.config.generation,
            sent: Instant::now(),
        };
        if let Some(store) = &self.store {
            if let Err(e) = store.put_lifecycle_run(&f.stored(session)) {
                tracing::error!(error = %e, "cannot store the abort follow-up");
            }
        }
        self.followups.insert(session, f);
        Some(Outgoing {
            to: run.participants,
            env,
        })
    }

    /// A dealer's commitment (the coordinator derives the new public key package
    /// from them).
    pub(crate) fn on_commit(&mut self, env: Envelope, identity: &NodeIdentity) -> Option<Outgoing> {
        let session = env.session;
        let run = self.runs.get_mut(&session)?;
        let Payload::ReshareCommit { commitment, .. } = env.payload else {
            return None;
        };
        if !run.config.dealers.contains(&env.sender)
            || commitment.len() != usize::from(run.config.threshold)
        {
            return None;
        }
        run.commits.entry(env.sender).or_insert(commitment);
        self.try_commit(session, identity)
    }

    /// A new member's confirmation.
    pub(crate) fn on_confirm(
        &mut self,
        env: Envelope,
        identity: &NodeIdentity,
    ) -> Option<Outgoing> {
        let session = env.session;
        let run = self.runs.get_mut(&session)?;
        if run.config.committee.get(&env.sender).is_none() || run.committed.is_some() {
            return None;
        }
        run.confirms.entry(env.sender).or_insert(env);
        self.try_commit(session, identity)
    }

    /// With every member's confirmation and every dealer's commitment, the run
    /// commits: the new record and the finish proof are stored in one transaction,
    /// then the proof goes to every participant and old member.
    fn try_commit(&mut self, session: SessionId, identity: &NodeIdentity) -> Option<Outgoing> {
        let run = self.runs.get(&session)?;
        if run.committed.is_some()
            || run.confirms.len() < run.config.committee.len()
            || run.commits.len() < run.config.dealers.len()
        {
            return None;
        }
        let confirms: Vec<Vec<u8>> = run
            .config
            .committee
            .nodes()
            .filter_map(|n| run.confirms.get(&n).map(Envelope::encode))
            .collect();
        let package = match public_package(&run.config, &run.commits) {
            Ok(p) => p,
            Err(e) => {
                let culprits = e.culprits();
                return self.abort(
                    session,
                    CoordinatorError::LifecycleFailed {
                        reason: format!("a dealer's commitment is invalid: {e}"),
                        culprits,
                    },
                    identity,
                );
            }
        };
        if let Err(e) = verify_finish(&run.config, &package, &confirms) {
            return self.abort(
                session,
                CoordinatorError::LifecycleFailed {
                    reason: format!("confirmations do not match the dealers' commitments: {e}"),
                    culprits: Vec::new(),
                },
                identity,
            );
        }
        let public = GroupPublic {
            suite: run.config.suite,
            key_id: run.config.key_id,
            threshold: run.config.threshold,
            members: run
                .config
                .committee
                .members()
                .iter()
                .map(|m| (m.node, m.index))
                .collect(),
            verifying_key: run.config.old.verifying_key.clone(),
            public_key_package: package.clone(),
        };
        let record = KeyRecord {
            public,
            attestations: Vec::new(),
            created_at_ms: run.key.created_at_ms,
            generation: run.config.generation,
        };
        let finish = Envelope::seal(
            identity,
            run.config.suite,
            run.config.key_id,
            session,
            Payload::ReshareFinish {
                start: run.start.encode(),
                public_key_package: package,
                confirms,
            },
        );
        let recipients = run.recipients.clone();
        if let Some(run) = self.runs.get_mut(&session) {
            run.committed = Some((record.clone(), finish.clone()));
        }
        let stored = match (&self.store, self.runs.get(&session)) {
            (Some(store), Some(run)) => {
                let members = run.config.committee.nodes().collect();
                store.commit_lifecycle_run(&record, &Self::stored_run(run, members))
            }
            _ => Ok(()),
        };
        if let Err(e) = stored {
            if let Some(run) = self.runs.get_mut(&session) {
                run.committed = None;
            }
            return self.abort(session, e, identity);
        }
        tracing::info!(key = %record.key_id(), %session, generation = record.generation,
            "every new member confirmed: generation committed");
        crash_point("coordinator:committed");
        Some(Outgoing {
            to: recipients,
            env: finish,
        })
    }

    /// A new member's attested report of the new public data (live run or
    /// follow-up). Returns the new public data once every member reported.
    pub(crate) fn on_report(
        &mut self,
        session: SessionId,
        from: NodeId,
        public: GroupPublic,
        attestation: KeyAttestation,
    ) -> Option<GroupPublic> {
        let attested = attestation.node == from
            && AttestedKey::from_public(&public)
                .and_then(|body| attestation.verify(&body))
                .is_ok();
        if !attested {
            tracing::warn!(node = %from, "lifecycle report without a valid attestation");
            return None;
        }
        if let Some(run) = self.runs.get_mut(&session) {
            let (record, _) = run.committed.as_ref()?;
            if record.public != public || run.config.committee.get(&from).is_none() {
                tracing::warn!(node = %from, "lifecycle report of other public data");
                return None;
            }
            run.reports.insert(from, attestation);
            if run.reports.len() < run.config.committee.len() {
                let _ = self.persist(self.runs.get(&session)?);
                return None;
            }
            let run = self.runs.remove(&session)?;
            return Some(self.complete(run));
        }
        self.on_late_report(session, from, &public, attestation)
    }

    /// A straggler's report after the run's answer: added to the stored record.
    fn on_late_report(
        &mut self,
        session: SessionId,
        from: NodeId,
        public: &GroupPublic,
        attestation: KeyAttestation,
    ) -> Option<GroupPublic> {
        let key_id = public.key_id;
        let f = self.followups.get_mut(&session)?;
        let (record, missing) = f.record.as_mut()?;
        if record.public != *public || !missing.remove(&from) {
            return None;
        }
        record.attestations.push(attestation);
        record
            .attestations
            .sort_by_key(|a| record.public.members.get(&a.node).copied());
        if let Some(store) = &self.store {
            // Only over the same generation (a later run may have replaced it).
            let current = store.key(&key_id).ok().flatten();
            if current.is_some_and(|c| c.generation == record.generation) {
                if let Err(e) = store.put_key(record) {
                    tracing::error!(error = %e, "cannot store a late attestation");
                }
            }
        }
        tracing::info!(key = %key_id, node = %from, missing = missing.len(), "late lifecycle report");
        let public = record.public.clone();
        self.settle(session);
        Some(public)
    }

    /// Answers a run whose members all reported (or whose deadline passed after the
    /// commit point) with its record, stored.
    fn complete(&mut self, mut run: Run) -> GroupPublic {
        let Some((mut record, finish)) = run.committed.take() else {
            return run.key.public.clone();
        };
        let mut attestations: Vec<KeyAttestation> = run.reports.values().cloned().collect();
        attestations.sort_by_key(|a| record.public.members.get(&a.node).copied());
        record.attestations = attestations;
        let missing: BTreeSet<NodeId> = run
            .config
            .committee
            .nodes()
            .filter(|n| !run.reports.contains_key(n))
            .collect();
        if let Some(store) = &self.store {
            if let Err(e) = store.put_key(&record) {
                tracing::error!(error = %e, "cannot store the new generation's attestations");
            }
        }
        if !missing.is_empty() {
            tracing::warn!(key = %record.key_id(), missing = missing.len(),
                "generation committed; some members have not attested it yet (followed up)");
        }
        // Recipients that have not acknowledged the finish, and members that have
        // not reported, are followed up until they have.
        let session = run.config.session;
        let unacked = run
            .recipients
            .iter()
            .filter(|n| !run.acked.contains(n))
            .copied()
            .collect();
        self.followups.insert(
            session,
            Followup {
                key_id: record.key_id(),
                env: finish,
                unacked,
                record: Some((record.clone(), missing)),
                recipients: run.recipients.clone(),
                participants: run.participants.clone(),
                generation: run.config.generation,
                sent: Instant::now(),
            },
        );
        self.settle(session);
        tracing::info!(key = %record.key_id(), generation = record.generation, "lifecycle run finished");
        let public = record.public.clone();
        if let Some(r) = run.reply.take() {
            let _ = r.send(Ok(record));
        }
        public
    }

    /// A participant refused (or was unreachable). Before the commit point the run
    /// fails naming the node and its reason and is aborted; after it, the refusal is
    /// logged (the node finishes from the proof when it can).
    pub(crate) fn on_refusal(
        &mut self,
        session: SessionId,
        node: NodeId,
        reason: String,
        identity: &NodeIdentity,
    ) -> (bool, Option<Outgoing>) {
        let Some(run) = self.runs.get(&session) else {
            return (self.owns(&session), None);
        };
        if run.committed.is_some() {
            tracing::warn!(%node, %reason, "participant refused after the commit point");
            return (true, None);
        }
        let out = self.abort(
            session,
            CoordinatorError::LifecycleRefused {
                refusals: vec![(node, reason)],
            },
            identity,
        );
        (true, out)
    }

    /// Runs past their deadline: before the commit point they fail naming the
    /// members that did not confirm (and are aborted); after it the record is
    /// answered with the attestations received (stragglers are followed up).
    pub(crate) fn on_tick(
        &mut self,
        now: Instant,
        identity: &NodeIdentity,
    ) -> (Vec<GroupPublic>, Vec<Outgoing>) {
        let mut resend = Vec::new();
        for f in self.followups.values_mut() {
            if !f.unacked.is_empty() && now.duration_since(f.sent) >= RESEND {
                f.sent = now;
                resend.push(Outgoing {
                    to: f.unacked.iter().copied().collect(),
                    env: f.env.clone(),
                });
            }
        }
        let expired: Vec<SessionId> = self
            .runs
            .iter()
            .filter(|(_, r)| r.deadline <= now)
            .map(|(s, _)| *s)
            .collect();
        let mut done = Vec::new();
        let mut out = Vec::new();
        for s in expired {
            let committed = self.runs.get(&s).is_some_and(|r| r.committed.is_some());
            if committed {
                if let Some(run) = self.runs.remove(&s) {
                    done.push(self.complete(run));
                }
                continue;
            }
            let Some(run) = self.runs.get(&s) else {
                continue;
            };
            let missing: Vec<NodeId> = run
                .config
                .committee
                .nodes()
                .filter(|n| !run.confirms.contains_key(n))
                .collect();
            out.extend(
                self.abort(
                    s,
                    CoordinatorError::LifecycleFailed {
                        reason: "deadline passed before every new member confirmed; the old \
                             generation stays in force"
                            .into(),
                        culprits: missing,
                    },
                    identity,
                ),
            );
        }
        out.extend(resend);
        (done, out)
    }

    /// `node` accepted a finish or abort of `session`.
    pub(crate) fn on_ack(&mut self, session: SessionId, node: NodeId) {
        if let Some(run) = self.runs.get_mut(&session) {
            if run.committed.is_some() {
                run.acked.insert(node);
            }
            return;
        }
        let Some(f) = self.followups.get_mut(&session) else {
            return;
        };
        if f.unacked.remove(&node) {
            self.settle(session);
        }
    }

    /// Stores a follow-up's progress, and forgets it once every recipient
    /// acknowledged and every member reported.
    fn settle(&mut self, session: SessionId) {
        let Some(f) = self.followups.get(&session) else {
            return;
        };
        let done = f.done();
        if let Some(store) = &self.store {
            let r = if done {
                store.remove_lifecycle_run(&f.key_id, &session)
            } else {
                store.put_lifecycle_run(&f.stored(session))
            };
            if let Err(e) = r {
                tracing::error!(error = %e, "cannot store a lifecycle follow-up");
            }
        }
        if done {
            tracing::info!(key = %f.key_id, %session, "lifecycle run settled on every node");
            self.followups.remove(&session);
        }
    }

    /// What to send `node` now that it (re)connected: the finish proof of every
    /// committed run (live or followed up) and the abort of every aborted run it
    /// takes part in.
    pub(crate) fn on_connect(&self, node: &NodeId) -> Vec<Envelope> {
        let live = self
            .runs
            .values()
            .filter(|r| r.recipients.contains(node) && !r.acked.contains(node))
            .filter_map(|r| r.committed.as_ref().map(|(_, env)| env.clone()));
        let followed = self
            .followups
            .values()
            .filter(|f| f.unacked.contains(node))
            .map(|f| f.env.clone());
        live.chain(followed).collect()
    }

    /// `node` lost its connection: every live run it takes part in that has not
    /// committed fails now (it cannot finish without every participant) and is
    /// aborted, rather than waiting for the deadline.
    pub(crate) fn on_disconnect(
        &mut self,
        node: &NodeId,
        identity: &NodeIdentity,
    ) -> Vec<Outgoing> {
        let sessions: Vec<SessionId> = self
            .runs
            .iter()
            .filter(|(_, r)| r.committed.is_none() && r.participants.contains(node))
            .map(|(s, _)| *s)
            .collect();
        sessions
            .into_iter()
            .filter_map(|s| {
                self.abort(
                    s,
                    CoordinatorError::LifecycleFailed {
                        reason: format!(
                            "participant {node} disconnected before every new member confirmed; \
                             the old generation stays in force"
                        ),
                        culprits: vec![*node],
                    },
                    identity,
                )
            })
            .collect()
    }

    /// Fails every live run (shutdown); stored runs are followed up at the next start.
    pub(crate) fn shutdown(&mut self) {
        for (_, mut run) in std::mem::take(&mut self.runs) {
            if let Some(r) = run.reply.take() {
                let _ = r.send(Err(CoordinatorError::Shutdown));
            }
        }
    }
}
