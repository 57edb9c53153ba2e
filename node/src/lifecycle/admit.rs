//! The checks a node runs on a coordinator's `ReshareStart` before it takes part,
//! one named function per rule. Each refusal is an [`Ack`] whose reason says which
//! rule refused (the coordinator reports it to the API caller).

use std::collections::BTreeSet;

use quorate_protocol::{
    lifecycle::{ApprovedOperation, OperationKind, ReshareConfig},
    wire::frame::Ack,
    Committee, Envelope, GroupPublic, NodeId, Payload,
};

use super::policy::LifecycleApprovers;
use crate::{keystore::StoredKey, roster::Roster};

fn reject(reason: &str, detail: impl Into<String>) -> Ack {
    Ack::Rejected {
        reason: reason.into(),
        detail: detail.into(),
    }
}

/// What the node knows when it checks a start.
pub(crate) struct Context<'a> {
    /// This node.
    pub me: NodeId,
    /// The roster (committee members must match it).
    pub roster: &'a Roster,
    /// Who may approve.
    pub approvers: &'a LifecycleApprovers,
    /// This node's share of the key, if it holds one.
    pub held: Option<&'a StoredKey>,
    /// The generation of that share (0 if none is held).
    pub generation: u64,
    /// Unix seconds now.
    pub now_unix: u64,
}

/// A start that passed every check.
pub(crate) struct Admitted {
    /// The run's parameters.
    pub config: ReshareConfig,
    /// The approved operation.
    pub operation: ApprovedOperation,
    /// Names of the approvers whose signatures counted.
    pub approved_by: Vec<String>,
}

/// Runs every check on `env` (a `ReshareStart` from a roster coordinator).
pub(crate) fn admit_start(
    ctx: &Context<'_>,
    env: &Envelope,
    session_timeout_ms: u64,
) -> Result<Admitted, Ack> {
    let Payload::ReshareStart {
        operation,
        dealers,
        old,
        committee,
        generation,
        timeout_ms,
    } = &env.payload
    else {
        return Err(reject("malformed", "not a reshare start"));
    };
    if *generation == 0 {
        return Err(reject("malformed", "generation 0 is the DKG's"));
    }
    let op =
        ApprovedOperation::decode(operation).map_err(|e| reject("malformed", e.to_string()))?;
    let approved_by = check_approvals(ctx, &op)?;
    check_operation_matches(env, &op, old, committee, *generation)?;
    check_committee_in_roster(ctx.roster, committee)?;
    check_residency(ctx.roster, committee, &op.operation.segments)?;
    check_own_share(ctx, old, dealers, &op)?;
    let config = config_of(
        env,
        &op,
        (*timeout_ms).min(session_timeout_ms.saturating_mul(4)),
    )
    .ok_or_else(|| reject("malformed", "not a reshare start"))?;
    Ok(Admitted {
        config,
        operation: op,
        approved_by,
    })
}

/// The run parameters a `ReshareStart` and its operation give (`None`: not a start).
pub(crate) fn config_of(
    env: &Envelope,
    op: &ApprovedOperation,
    timeout_ms: u64,
) -> Option<ReshareConfig> {
    let Payload::ReshareStart {
        dealers,
        old,
        committee,
        generation,
        ..
    } = &env.payload
    else {
        return None;
    };
    Some(ReshareConfig {
        suite: env.suite,
        key_id: env.key,
        session: env.session,
        old: old.clone(),
        dealers: dealers.clone(),
        committee: committee.clone(),
        threshold: op.operation.threshold,
        generation: *generation,
        timeout_ms,
        coordinator: env.sender,
    })
}

/// Rebuilds a run's parameters from its stored, coordinator-signed start (to check
/// a finish proof after the session ended or the node restarted).
pub(crate) fn config_from_start(start: &[u8]) -> Result<ReshareConfig, String> {
    let env = Envelope::decode(start).map_err(|e| e.to_string())?;
    env.verify().map_err(|e| e.to_string())?;
    let Payload::ReshareStart { operation, .. } = &env.payload else {
        return Err("stored start is not a reshare start".into());
    };
    let op = ApprovedOperation::decode(operation).map_err(|e| e.to_string())?;
    config_of(&env, &op, 0).ok_or_else(|| "stored start is not a reshare start".into())
}

/// A quorum of this node's own lifecycle approvers signed the operation, which has
/// not expired.
fn check_approvals(ctx: &Context<'_>, op: &ApprovedOperation) -> Result<Vec<String>, Ack> {
    let keys = ctx.approvers.keys();
    op.verify(&keys, ctx.approvers.required, ctx.now_unix)
        .map_err(|e| reject("not_approved", e.to_string()))?;
    Ok(ctx.approvers.names_of(&op.valid_approvers(&keys)))
}

/// The coordinator's start is the approved operation: same key, committee,
/// threshold, group key and generation; a refresh keeps committee and threshold.
fn check_operation_matches(
    env: &Envelope,
    op: &ApprovedOperation,
    old: &GroupPublic,
    committee: &Committee,
    generation: u64,
) -> Result<(), Ack> {
    let o = &op.operation;
    if o.kind == OperationKind::Repair {
        return Err(reject(
            "operation_mismatch",
            "a repair operation does not start a refresh or reshare",
        ));
    }
    let mismatch = |what: &str| {
        reject(
            "operation_mismatch",
            format!("the start's {what} differs from the approved operation's"),
        )
    };
    if o.key_id != env.key || old.key_id != env.key || old.suite != env.suite {
        return Err(mismatch("key"));
    }
    let mut nodes: Vec<NodeId> = committee.nodes().collect();
    nodes.sort();
    if nodes != o.committee {
        return Err(mismatch("committee"));
    }
    if o.group_key != old.verifying_key {
        return Err(mismatch("group key"));
    }
    if o.from_generation.checked_add(1) != Some(generation) {
        return Err(mismatch("generation"));
    }
    if o.kind == OperationKind::Refresh {
        let same_members = committee
            .members()
            .iter()
            .map(|m| (m.node, m.index))
            .collect::<std::collections::BTreeMap<_, _>>()
            == old.members;
        if !same_members || o.threshold != old.threshold {
            return Err(reject(
                "operation_mismatch",
                "a refresh keeps the committee and the threshold; use a reshare to change them",
            ));
        }
    }
    Ok(())
}

/// Every member is a roster signer with the index and sealing key the committee
/// gives it: a coordinator may choose members, not invent them.
pub(crate) fn check_committee_in_roster(roster: &Roster, committee: &Committee) -> Result<(), Ack> {
    for m in committee.members() {
        let ok = roster
            .by_node(&m.node)
            .and_then(|p| p.signer.as_ref())
            .is_some_and(|(index, _, seal)| *index == m.index && *seal == m.seal_key);
        if !ok {
            return Err(reject(
                "bad_committee",
                format!("member {} does not match the roster", m.node),
            ));
        }
    }
    Ok(())
}

/// Data residency: with allowed segments set, every member's roster segment is
/// one of them.
pub(crate) fn check_residency(
    roster: &Roster,
    committee: &Committee,
    segments: &[String],
) -> Result<(), Ack> {
    if segments.is_empty() {
        return Ok(());
    }
    for m in committee.members() {
        let segment = roster
            .by_node(&m.node)
            .and_then(|p| p.signer.as_ref())
            .map(|(_, s, _)| s.as_str())
            .unwrap_or_default();
        if !segments.iter().any(|s| s == segment) {
            return Err(reject(
                "residency",
                format!(
                    "member {} is in segment {segment:?}, outside the key's allowed segments {segments:?}",
                    m.node
                ),
            ));
        }
    }
    Ok(())
}

/// A node that holds the key holds exactly the old generation named; a dealer
/// must hold it; the node takes part at all.
fn check_own_share(
    ctx: &Context<'_>,
    old: &GroupPublic,
    dealers: &[NodeId],
    op: &ApprovedOperation,
) -> Result<(), Ack> {
    let participants: BTreeSet<NodeId> = dealers
        .iter()
        .copied()
        .chain(op.operation.committee.iter().copied())
        .collect();
    if !participants.contains(&ctx.me) {
        return Err(reject(
            "not_a_participant",
            "this node neither deals nor joins",
        ));
    }
    match ctx.held {
        Some(key) => {
            if key.share.public != *old {
                return Err(reject(
                    "generation_mismatch",
                    "the start's old public data is not the generation held here",
                ));
            }
            if op.operation.from_generation != ctx.generation {
                return Err(reject(
                    "generation_mismatch",
                    format!(
                        "operation starts from generation {}; this node holds generation {}",
                        op.operation.from_generation, ctx.generation
                    ),
                ));
            }
        }
        None if dealers.contains(&ctx.me) => {
            return Err(reject(
                "unknown_key",
                "asked to deal a key this node does not hold",
            ));
        }
        None => {}
    }
    Ok(())
}

/// A repair start that passed every check.
pub(crate) struct AdmittedRepair {
    /// The run's parameters.
    pub config: quorate_protocol::lifecycle::RepairConfig,
    /// The approved operation.
    pub operation: ApprovedOperation,
    /// Names of the approvers whose signatures counted.
    pub approved_by: Vec<String>,
}

/// Runs every check on a `RepairStart`: approvals, the operation against the
/// start (key, group key, committee and threshold unchanged, the target), helpers
/// and target against the roster, residency of the target, and this node's part
/// (a helper holds exactly this generation; the target does not hold the key).
pub(crate) fn admit_repair(
    ctx: &Context<'_>,
    env: &Envelope,
    session_timeout_ms: u64,
) -> Result<AdmittedRepair, Ack> {
    let Payload::RepairStart {
        operation,
        public,
        helpers,
        target,
        timeout_ms,
    } = &env.payload
    else {
        return Err(reject("malformed", "not a repair start"));
    };
    let op =
        ApprovedOperation::decode(operation).map_err(|e| reject("malformed", e.to_string()))?;
    let approved_by = check_approvals(ctx, &op)?;
    let o = &op.operation;
    let mismatch = |what: &str| {
        reject(
            "operation_mismatch",
            format!("the start's {what} differs from the approved operation's"),
        )
    };
    if o.kind != OperationKind::Repair {
        return Err(mismatch("kind"));
    }
    if o.key_id != env.key || public.key_id != env.key || public.suite != env.suite {
        return Err(mismatch("key"));
    }
    if o.group_key != public.verifying_key {
        return Err(mismatch("group key"));
    }
    let members: Vec<NodeId> = public.members.keys().copied().collect();
    if members != o.committee || o.threshold != public.threshold {
        return Err(mismatch("committee or threshold"));
    }
    if o.target != Some(target.node) {
        return Err(mismatch("target"));
    }
    check_committee_in_roster(ctx.roster, helpers)?;
    let with_target = Committee::new(helpers.members().iter().copied().chain([*target]).collect())
        .map_err(|e| reject("bad_committee", e.to_string()))?;
    check_committee_in_roster(ctx.roster, &with_target)?;
    check_residency(ctx.roster, &with_target, &o.segments)?;
    if ctx.me == target.node {
        if ctx.held.is_some() {
            return Err(reject(
                "key_present",
                format!("this node holds key {}: nothing to repair", env.key),
            ));
        }
    } else if helpers.get(&ctx.me).is_some() {
        match ctx.held {
            Some(k) if k.share.public == *public && ctx.generation == o.from_generation => {}
            _ => {
                return Err(reject(
                    "generation_mismatch",
                    "the start's public data is not the generation held here",
                ))
            }
        }
    } else {
        return Err(reject(
            "not_a_participant",
            "this node neither helps nor is repaired",
        ));
    }
    let config = quorate_protocol::lifecycle::RepairConfig {
        suite: env.suite,
        key_id: env.key,
        session: env.session,
        public: public.clone(),
        helpers: helpers.clone(),
        target: *target,
        timeout_ms: (*timeout_ms).min(session_timeout_ms.saturating_mul(4)),
        coordinator: env.sender,
    };
    Ok(AdmittedRepair {
        config,
        operation: op,
        approved_by,
    })
}
