//! Refresh and resharing runs the coordinator drives (it never holds key
//! material: dealers seal sub-shares to the new members end to end).
//!
//! A run: check the operation (`plan`), send the signed `ReshareStart` to every
//! participant (dealers and new members), relay their traffic if routing goes
//! through the coordinator, collect every new member's `ReshareConfirm` — the
//! commit point — and send them all back as `ReshareFinish` (so a node that missed
//! the end can finish too), then wait for every new member's attested report of
//! the new public data and answer with the new key record (generation + 1). Any
//! refusal before the commit point names the node and the rule; nodes then keep
//! the old generation.

pub(crate) mod plan;

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use quorate_protocol::{
    lifecycle::{verify_finish, ApprovedOperation, ReshareConfig},
    AttestedKey, Envelope, GroupPublic, KeyAttestation, KeyId, NodeId, NodeIdentity, Payload,
    SessionId,
};
use tokio::sync::oneshot;

use crate::{error::CoordinatorError, types::KeyRecord};

/// Where a run's result goes.
pub(crate) type Reply = oneshot::Sender<Result<KeyRecord, CoordinatorError>>;

struct Run {
    key: KeyRecord,
    config: ReshareConfig,
    participants: Vec<NodeId>,
    confirms: BTreeMap<NodeId, Envelope>,
    reports: BTreeMap<NodeId, (GroupPublic, KeyAttestation)>,
    finish: Option<Envelope>,
    deadline: Instant,
    reply: Option<Reply>,
}

impl Run {
    fn fail(mut self, e: CoordinatorError) {
        tracing::warn!(key = %self.key.key_id(), error = %e, "lifecycle run failed");
        if let Some(r) = self.reply.take() {
            let _ = r.send(Err(e));
        }
    }
}

/// What to send after an event.
pub(crate) struct Outgoing {
    /// Envelope and recipients.
    pub to: Vec<NodeId>,
    /// The envelope.
    pub env: Envelope,
}

/// The live runs.
#[derive(Default)]
pub(crate) struct Lifecycle {
    runs: BTreeMap<SessionId, Run>,
}

impl Lifecycle {
    /// Whether `key` has a live run (it is not signed with meanwhile).
    pub(crate) fn busy(&self, key: &KeyId) -> bool {
        self.runs.values().any(|r| r.key.key_id() == *key)
    }

    /// Whether `session` is a live run.
    pub(crate) fn owns(&self, session: &SessionId) -> bool {
        self.runs.contains_key(session)
    }

    /// The participants of a live run (the nodes it relays between).
    pub(crate) fn participants(&self, session: &SessionId) -> Option<&[NodeId]> {
        self.runs.get(session).map(|r| r.participants.as_slice())
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
    ) -> Outgoing {
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
        tracing::info!(key = %key.key_id(), %session, kind = op.operation.kind.name(), generation,
            t = config.threshold, n = config.committee.len(), dealers = config.dealers.len(),
            "lifecycle run started");
        self.runs.insert(
            session,
            Run {
                key,
                config,
                participants: participants.clone(),
                confirms: BTreeMap::new(),
                reports: BTreeMap::new(),
                finish: None,
                deadline: Instant::now() + timeout,
                reply: Some(reply),
            },
        );
        Outgoing {
            to: participants,
            env,
        }
    }

    /// A new member's confirmation. With every member's, the run is committed: the
    /// finish proof goes to every participant.
    pub(crate) fn on_confirm(
        &mut self,
        env: Envelope,
        identity: &NodeIdentity,
    ) -> Option<Outgoing> {
        let run = self.runs.get_mut(&env.session)?;
        if run.config.committee.get(&env.sender).is_none() || run.finish.is_some() {
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
        if let Err(e) = verify_finish(&run.config, &confirms) {
            let culprits = run.config.committee.nodes().collect();
            let session = run.config.session;
            if let Some(run) = self.runs.remove(&session) {
                run.fail(CoordinatorError::LifecycleFailed {
                    reason: format!("confirmations disagree: {e}"),
                    culprits,
                });
            }
            return None;
        }
        let finish = Envelope::seal(
            identity,
            run.config.suite,
            run.config.key_id,
            run.config.session,
            Payload::ReshareFinish { confirms },
        );
        tracing::info!(key = %run.config.key_id, session = %run.config.session,
            "every new member confirmed: generation committed");
        run.finish = Some(finish.clone());
        Some(Outgoing {
            to: run.participants.clone(),
            env: finish,
        })
    }

    /// A new member's attested report of the new public data. Returns the new key
    /// record once every member reported (the run is then over).
    pub(crate) fn on_report(
        &mut self,
        session: SessionId,
        from: NodeId,
        public: GroupPublic,
        attestation: KeyAttestation,
    ) -> Option<GroupPublic> {
        let run = self.runs.get_mut(&session)?;
        run.config.committee.get(&from)?;
        let attested = attestation.node == from
            && AttestedKey::from_public(&public)
                .and_then(|body| attestation.verify(&body))
                .is_ok();
        if !attested || public.verifying_key != run.key.public.verifying_key {
            tracing::warn!(node = %from, "reshare report without a valid attestation of the key");
            return None;
        }
        run.reports.insert(from, (public, attestation));
        if run.reports.len() < run.config.committee.len() {
            return None;
        }
        let run = self.runs.remove(&session)?;
        Self::complete(run)
    }

    fn complete(mut run: Run) -> Option<GroupPublic> {
        let first = run.reports.values().next().map(|(p, _)| p.clone());
        let Some(public) = first.filter(|p| run.reports.values().all(|(r, _)| r == p)) else {
            run.fail(CoordinatorError::LifecycleFailed {
                reason: "new members reported different public key packages".into(),
                culprits: Vec::new(),
            });
            return None;
        };
        let mut attestations: Vec<KeyAttestation> = std::mem::take(&mut run.reports)
            .into_values()
            .map(|(_, a)| a)
            .collect();
        attestations.sort_by_key(|a| public.members.get(&a.node).copied());
        let record = KeyRecord {
            public: public.clone(),
            attestations,
            created_at_ms: run.key.created_at_ms,
            generation: run.config.generation,
        };
        tracing::info!(key = %record.key_id(), generation = record.generation, "lifecycle run finished");
        if let Some(r) = run.reply.take() {
            let _ = r.send(Ok(record));
        }
        Some(public)
    }

    /// A participant refused (or was unreachable). Before the commit point the run
    /// fails naming the node and its reason; after it, the refusal is logged (the
    /// node can finish later from the proof).
    pub(crate) fn on_refusal(&mut self, session: SessionId, node: NodeId, reason: String) -> bool {
        let Some(run) = self.runs.get(&session) else {
            return false;
        };
        if run.finish.is_some() {
            tracing::warn!(%node, %reason, "participant refused after the commit point");
            return true;
        }
        if let Some(run) = self.runs.remove(&session) {
            run.fail(CoordinatorError::LifecycleRefused {
                refusals: vec![(node, reason)],
            });
        }
        true
    }

    /// Runs past their deadline end: before the commit point they fail naming the
    /// members that did not confirm; after it the record is returned with the
    /// attestations received (the missing members attest when they finish).
    pub(crate) fn on_tick(&mut self, now: Instant) -> Vec<GroupPublic> {
        let expired: Vec<SessionId> = self
            .runs
            .iter()
            .filter(|(_, r)| r.deadline <= now)
            .map(|(s, _)| *s)
            .collect();
        let mut done = Vec::new();
        for s in expired {
            let Some(run) = self.runs.remove(&s) else {
                continue;
            };
            if run.finish.is_some() && !run.reports.is_empty() {
                let missing: Vec<String> = run
                    .config
                    .committee
                    .nodes()
                    .filter(|n| !run.reports.contains_key(n))
                    .map(|n| n.to_string())
                    .collect();
                tracing::warn!(missing = ?missing, "generation committed; some members have not attested it yet");
                done.extend(Self::complete(run));
                continue;
            }
            let missing: Vec<NodeId> = run
                .config
                .committee
                .nodes()
                .filter(|n| !run.confirms.contains_key(n))
                .collect();
            let reason = if run.finish.is_some() {
                "generation committed but no member attested it before the deadline".to_string()
            } else {
                "deadline passed before every new member confirmed; the old generation stays in force"
                    .to_string()
            };
            run.fail(CoordinatorError::LifecycleFailed {
                reason,
                culprits: missing,
            });
        }
        done
    }

    /// Fails every run (shutdown).
    pub(crate) fn shutdown(&mut self) {
        for (_, run) in std::mem::take(&mut self.runs) {
            run.fail(CoordinatorError::Shutdown);
        }
    }
}
