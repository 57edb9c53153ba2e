//! Share repairs the coordinator drives: it picks `t` connected helpers, sends the
//! signed `RepairStart` to them and the target, relays their sealed traffic if
//! routing goes through it, and answers once the target attests the key again.
//! Nothing is committed anywhere but on the target, so a failed repair changes
//! nothing and is simply run again.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use quorate_protocol::{
    lifecycle::{ApprovedOperation, OperationKind},
    roster::Roster,
    AttestedKey, Committee, Envelope, GroupPublic, KeyAttestation, Member, NodeId, NodeIdentity,
    Payload, SessionId,
};

use super::{Outgoing, Reply};
use crate::{error::CoordinatorError, types::KeyRecord};

struct Run {
    key: KeyRecord,
    target: NodeId,
    participants: Vec<NodeId>,
    deadline: Instant,
    reply: Option<Reply>,
}

impl Run {
    fn fail(mut self, e: CoordinatorError) {
        tracing::warn!(key = %self.key.key_id(), error = %e, "share repair failed");
        if let Some(r) = self.reply.take() {
            let _ = r.send(Err(e));
        }
    }
}

/// The live repairs.
#[derive(Default)]
pub(crate) struct Repairs {
    runs: BTreeMap<SessionId, Run>,
}

fn invalid(why: impl Into<String>) -> CoordinatorError {
    CoordinatorError::InvalidOperation(why.into())
}

/// The roster's view of `node` as a committee member.
fn member(roster: &Roster, node: &NodeId) -> Result<Member, CoordinatorError> {
    let (index, _, seal_key) = roster
        .by_node(node)
        .and_then(|p| p.signer.clone())
        .ok_or_else(|| invalid(format!("{node} is not a signer in the roster")))?;
    Ok(Member {
        node: *node,
        index,
        seal_key,
    })
}

impl Repairs {
    /// Whether `key` has a live repair.
    pub(crate) fn busy(&self, key: &quorate_protocol::KeyId) -> bool {
        self.runs.values().any(|r| r.key.key_id() == *key)
    }

    /// The participants of a live repair (the nodes it relays between).
    pub(crate) fn participants(&self, session: &SessionId) -> Option<&[NodeId]> {
        self.runs.get(session).map(|r| r.participants.as_slice())
    }

    /// Checks `op` (a repair of `key`) and starts it: the start envelope to send.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start(
        &mut self,
        identity: &NodeIdentity,
        roster: &Roster,
        key: KeyRecord,
        op: ApprovedOperation,
        reachable: impl Fn(&NodeId) -> bool,
        session: SessionId,
        timeout: Duration,
        reply: Reply,
    ) -> Option<Outgoing> {
        let plan = plan(
            roster,
            &key,
            &op,
            crate::backend::now_ms() / 1000,
            reachable,
        );
        let (helpers, target) = match plan {
            Ok(p) => p,
            Err(e) => {
                let _ = reply.send(Err(e));
                return None;
            }
        };
        let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        let env = Envelope::seal(
            identity,
            key.public.suite,
            key.key_id(),
            session,
            Payload::RepairStart {
                operation: op.encode(),
                public: key.public.clone(),
                helpers: helpers.clone(),
                target,
                timeout_ms,
            },
        );
        let participants: Vec<NodeId> = helpers.nodes().chain([target.node]).collect();
        tracing::info!(key = %key.key_id(), %session, target = %target.node, helpers = helpers.len(), "share repair started");
        self.runs.insert(
            session,
            Run {
                key,
                target: target.node,
                participants: participants.clone(),
                deadline: Instant::now() + timeout,
                reply: Some(reply),
            },
        );
        Some(Outgoing {
            to: participants,
            env,
        })
    }

    /// The target's attested report: the repair is done (its attestation replaces
    /// the one in the record). Returns whether the envelope was a repair's.
    pub(crate) fn on_report(
        &mut self,
        session: SessionId,
        from: NodeId,
        public: &GroupPublic,
        attestation: KeyAttestation,
    ) -> bool {
        let Some(run) = self.runs.get(&session) else {
            return false;
        };
        let attested = attestation.node == from
            && AttestedKey::from_public(public)
                .and_then(|body| attestation.verify(&body))
                .is_ok();
        if from != run.target || !attested || *public != run.key.public {
            tracing::warn!(node = %from, "repair report that is not the target's attestation of the key");
            return true;
        }
        let Some(mut run) = self.runs.remove(&session) else {
            return true;
        };
        let mut record = run.key.clone();
        record.attestations.retain(|a| a.node != from);
        record.attestations.push(attestation);
        record
            .attestations
            .sort_by_key(|a| record.public.members.get(&a.node).copied());
        tracing::info!(key = %record.key_id(), target = %from, "share repaired");
        if let Some(r) = run.reply.take() {
            let _ = r.send(Ok(record));
        }
        true
    }

    /// A participant refused or was unreachable: the repair fails naming it.
    pub(crate) fn on_refusal(&mut self, session: SessionId, node: NodeId, reason: String) -> bool {
        let Some(run) = self.runs.remove(&session) else {
            return false;
        };
        run.fail(CoordinatorError::LifecycleRefused {
            refusals: vec![(node, reason)],
        });
        true
    }

    /// `node` disconnected: repairs it takes part in fail now.
    pub(crate) fn on_disconnect(&mut self, node: &NodeId) {
        let lost: Vec<SessionId> = self
            .runs
            .iter()
            .filter(|(_, r)| r.participants.contains(node))
            .map(|(s, _)| *s)
            .collect();
        for s in lost {
            if let Some(run) = self.runs.remove(&s) {
                run.fail(CoordinatorError::LifecycleFailed {
                    reason: format!("participant {node} disconnected during the repair"),
                    culprits: vec![*node],
                });
            }
        }
    }

    /// Repairs past their deadline fail, naming the target (which did not attest).
    pub(crate) fn on_tick(&mut self, now: Instant) {
        let expired: Vec<SessionId> = self
            .runs
            .iter()
            .filter(|(_, r)| r.deadline <= now)
            .map(|(s, _)| *s)
            .collect();
        for s in expired {
            if let Some(run) = self.runs.remove(&s) {
                let target = run.target;
                run.fail(CoordinatorError::LifecycleFailed {
                    reason: "deadline passed before the target attested its repaired share".into(),
                    culprits: vec![target],
                });
            }
        }
    }

    /// Fails every live repair (shutdown).
    pub(crate) fn shutdown(&mut self) {
        for (_, run) in std::mem::take(&mut self.runs) {
            run.fail(CoordinatorError::Shutdown);
        }
    }
}

/// Checks a repair operation against the key and the roster and picks `t`
/// reachable helpers (roster order), never the target.
fn plan(
    roster: &Roster,
    key: &KeyRecord,
    op: &ApprovedOperation,
    now_unix: u64,
    reachable: impl Fn(&NodeId) -> bool,
) -> Result<(Committee, Member), CoordinatorError> {
    let o = &op.operation;
    o.validate().map_err(|e| invalid(e.to_string()))?;
    if o.kind != OperationKind::Repair {
        return Err(invalid("not a repair operation"));
    }
    if o.key_id != key.key_id() || o.group_key != key.public.verifying_key {
        return Err(invalid("operation is for another key"));
    }
    if o.from_generation != key.generation {
        return Err(invalid(format!(
            "operation names generation {}; the key is at generation {}",
            o.from_generation, key.generation
        )));
    }
    let members: Vec<NodeId> = key.public.members.keys().copied().collect();
    if members != o.committee || o.threshold != key.public.threshold {
        return Err(invalid("a repair keeps the committee and the threshold"));
    }
    if now_unix >= o.expires_at {
        return Err(invalid(format!("operation expired at {}", o.expires_at)));
    }
    if op.approvals.is_empty() {
        return Err(invalid("operation carries no approvals"));
    }
    let target_id = o
        .target
        .ok_or_else(|| invalid("a repair names its target"))?;
    let target = member(roster, &target_id)?;
    if key.public.members.get(&target_id) != Some(&target.index) {
        return Err(invalid(
            "the target's roster index is not its index in the key",
        ));
    }
    if !o.segments.is_empty() {
        let segment = roster
            .by_node(&target_id)
            .and_then(|p| p.signer.as_ref())
            .map(|s| s.1.clone())
            .unwrap_or_default();
        if !o.segments.contains(&segment) {
            return Err(invalid(format!(
                "residency: the target is in segment {segment:?}, outside {:?}",
                o.segments
            )));
        }
    }
    let needed = usize::from(key.public.threshold);
    let chosen: Vec<Member> = members
        .iter()
        .filter(|n| **n != target_id && reachable(n))
        .take(needed)
        .map(|n| member(roster, n))
        .collect::<Result<_, _>>()?;
    if chosen.len() < needed {
        return Err(CoordinatorError::NotEnoughSigners {
            available: chosen.len(),
            needed,
            attempts: Vec::new(),
        });
    }
    let helpers = Committee::new(chosen).map_err(|e| invalid(e.to_string()))?;
    Ok((helpers, target))
}
