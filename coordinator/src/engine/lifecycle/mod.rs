//! Refresh and resharing runs the coordinator drives (it never holds key
//! material: dealers seal sub-shares to the new members end to end).
//!
//! A run: check the operation (`plan`), record the run in the store, send the signed
//! `ReshareStart` to every participant (dealers and new members), relay their
//! traffic if routing goes through the coordinator, and collect every new member's
//! `ReshareConfirm`. With all of them the run **commits**: the coordinator stores
//! the new key record (generation + 1, the public key package the confirmations
//! carry) and the finish proof, *then* sends `ReshareFinish` to every participant —
//! nodes switch generations only on that proof. It then waits for every new
//! member's attested report and answers with the complete record.
//!
//! Before the commit point any refusal, unreachable participant or the deadline
//! fails the run and sends `ReshareAbort` (nodes drop its pending shares and keep
//! the old generation). After it, members that have not finished are followed up:
//! the proof is sent again whenever a participant reconnects, late reports complete
//! the stored record's attestations. A restarted coordinator reads its stored runs:
//! committed ones are followed up the same way, uncommitted ones are aborted.

pub(crate) mod plan;

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::{Duration, Instant},
};

use quorate_protocol::{
    lifecycle::{verify_finish, ApprovedOperation, ReshareConfig},
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

/// How long a committed run's stragglers, or an abort's recipients, are followed up.
const FOLLOW_UP: Duration = Duration::from_secs(24 * 3600);

struct Run {
    key: KeyRecord,
    config: ReshareConfig,
    participants: Vec<NodeId>,
    confirms: BTreeMap<NodeId, Envelope>,
    reports: BTreeMap<NodeId, KeyAttestation>,
    /// The new record, once committed.
    committed: Option<(KeyRecord, Envelope)>,
    deadline: Instant,
    reply: Option<Reply>,
}

/// A committed run with members that have not reported, or an aborted run.
struct Followup {
    session: SessionId,
    env: Envelope,
    participants: Vec<NodeId>,
    /// Finish follow-ups: the new record and the members still to report.
    record: Option<(KeyRecord, BTreeSet<NodeId>)>,
    until: Instant,
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
    followups: BTreeMap<KeyId, Followup>,
    store: Option<Arc<Store>>,
}

fn abort_envelope(
    identity: &NodeIdentity,
    key: &KeyRecord,
    session: SessionId,
    reason: &str,
) -> Envelope {
    let mut reason = reason.to_string();
    reason.truncate(256);
    while !reason.is_char_boundary(reason.len()) {
        reason.pop();
    }
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
                    let followup = match &run.finish {
                        Some(bytes) => match Envelope::decode(bytes) {
                            Ok(env) => Followup {
                                session: run.session,
                                env,
                                participants: run.participants.clone(),
                                record: Some((key, run.unreported.iter().copied().collect())),
                                until: Instant::now() + FOLLOW_UP,
                            },
                            Err(_) => continue,
                        },
                        None => Followup {
                            session: run.session,
                            env: abort_envelope(
                                identity,
                                &key,
                                run.session,
                                "the coordinator restarted before the run committed",
                            ),
                            participants: run.participants.clone(),
                            record: None,
                            until: Instant::now() + FOLLOW_UP,
                        },
                    };
                    tracing::info!(key = %run.key_id, session = %run.session,
                        committed = run.finish.is_some(), "following up a lifecycle run from before the restart");
                    self.followups.insert(run.key_id, followup);
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
        self.runs.contains_key(session) || self.followups.values().any(|f| f.session == *session)
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
        store.put_lifecycle_run(&StoredRun {
            key_id: run.config.key_id,
            session: run.config.session,
            generation: run.config.generation,
            participants: run.participants.clone(),
            unreported,
            finish: run.committed.as_ref().map(|(_, env)| env.encode()),
            started_at_ms: crate::backend::now_ms(),
        })
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
        let run = Run {
            key,
            config,
            participants: participants.clone(),
            confirms: BTreeMap::new(),
            reports: BTreeMap::new(),
            committed: None,
            deadline: Instant::now() + timeout,
            reply: Some(reply),
        };
        if let Err(e) = self.persist(&run) {
            if let Some(r) = run.reply {
                let _ = r.send(Err(e));
            }
            return None;
        }
        // An abort follow-up of this key is superseded (the new run's start
        // replaces the nodes' records); a finish follow-up goes on.
        if self
            .followups
            .get(&run.config.key_id)
            .is_some_and(|f| f.record.is_none())
        {
            self.followups.remove(&run.config.key_id);
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
        self.followups.insert(
            run.config.key_id,
            Followup {
                session,
                env: env.clone(),
                participants: run.participants.clone(),
                record: None,
                until: Instant::now() + FOLLOW_UP,
            },
        );
        Some(Outgoing {
            to: run.participants,
            env,
        })
    }

    /// A new member's confirmation. With every member's, the run commits: the new
    /// record and the finish proof are stored, then the proof goes to every
    /// participant.
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
        if run.confirms.len() < run.config.committee.len() {
            return None;
        }
        let confirms: Vec<Vec<u8>> = run
            .config
            .committee
            .nodes()
            .filter_map(|n| run.confirms.get(&n).map(Envelope::encode))
            .collect();
        let package = match verify_finish(&run.config, &confirms) {
            Ok((_, package)) => package,
            Err(e) => {
                let culprits = run.config.committee.nodes().collect();
                return self.abort(
                    session,
                    CoordinatorError::LifecycleFailed {
                        reason: format!("confirmations disagree: {e}"),
                        culprits,
                    },
                    identity,
                );
            }
        };
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
            public_key_package: package,
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
            Payload::ReshareFinish { confirms },
        );
        run.committed = Some((record.clone(), finish.clone()));
        let stored = match &self.store {
            Some(store) => store.put_key(&record),
            None => Ok(()),
        };
        let stored = stored.and_then(|()| {
            self.runs
                .get(&session)
                .map_or(Ok(()), |run| self.persist(run))
        });
        if let Err(e) = stored {
            if let Some(run) = self.runs.get_mut(&session) {
                run.committed = None;
            }
            return self.abort(session, e, identity);
        }
        let run = self.runs.get(&session)?;
        tracing::info!(key = %run.config.key_id, %session, generation = run.config.generation,
            "every new member confirmed: generation committed");
        crash_point("coordinator:committed");
        Some(Outgoing {
            to: run.participants.clone(),
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
        let f = self.followups.get_mut(&key_id)?;
        let (record, missing) = f.record.as_mut()?;
        if f.session != session || record.public != *public || !missing.remove(&from) {
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
        if missing.is_empty() {
            let public = record.public.clone();
            if let Some(store) = &self.store {
                let _ = store.remove_lifecycle_run(&key_id, &session);
            }
            self.followups.remove(&key_id);
            return Some(public);
        }
        None
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
            if missing.is_empty() {
                let _ = store.remove_lifecycle_run(&run.config.key_id, &run.config.session);
            } else {
                let _ = self.persist(&run);
            }
        }
        if !missing.is_empty() {
            tracing::warn!(key = %record.key_id(), missing = missing.len(),
                "generation committed; some members have not attested it yet (followed up)");
            self.followups.insert(
                record.key_id(),
                Followup {
                    session: run.config.session,
                    env: finish,
                    participants: run.participants.clone(),
                    record: Some((record.clone(), missing)),
                    until: Instant::now() + FOLLOW_UP,
                },
            );
        }
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
        self.followups.retain(|_, f| f.until > now);
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
        (done, out)
    }

    /// What to send `node` now that it (re)connected: the finish proof of every
    /// committed run (live or followed up) and the abort of every aborted run it
    /// takes part in.
    pub(crate) fn on_connect(&self, node: &NodeId) -> Vec<Envelope> {
        let live = self
            .runs
            .values()
            .filter(|r| r.participants.contains(node))
            .filter_map(|r| r.committed.as_ref().map(|(_, env)| env.clone()));
        let followed = self
            .followups
            .values()
            .filter(|f| f.participants.contains(node))
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
