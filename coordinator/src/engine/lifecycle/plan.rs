//! The coordinator's checks on an approved lifecycle operation before it starts a
//! run: the operation fits the key record and the roster, residency holds, and
//! enough old members are reachable to deal. Nodes check all of it again (and
//! the approvals against their own policies); these checks give the API caller a
//! clear error before any node is asked.

use quorate_protocol::{
    lifecycle::{ApprovedOperation, OperationKind},
    roster::Roster,
    Committee, NodeId,
};

use crate::{error::CoordinatorError, types::KeyRecord};

/// What a run needs besides the operation.
pub(crate) struct Plan {
    /// Old members that deal (reachable ones, sorted).
    pub dealers: Vec<NodeId>,
    /// The new committee from the roster.
    pub committee: Committee,
}

fn invalid(why: impl Into<String>) -> CoordinatorError {
    CoordinatorError::InvalidOperation(why.into())
}

/// Checks `op` against `key` and the roster and picks the dealers among the old
/// members `reachable` says are connected.
pub(crate) fn plan(
    roster: &Roster,
    key: &KeyRecord,
    op: &ApprovedOperation,
    now_unix: u64,
    reachable: impl Fn(&NodeId) -> bool,
) -> Result<Plan, CoordinatorError> {
    let o = &op.operation;
    o.validate().map_err(|e| invalid(e.to_string()))?;
    if o.key_id != key.key_id() {
        return Err(invalid(format!(
            "operation is for key {}, not {}",
            o.key_id,
            key.key_id()
        )));
    }
    if o.from_generation != key.generation {
        return Err(invalid(format!(
            "operation starts from generation {}; the key is at generation {}",
            o.from_generation, key.generation
        )));
    }
    if o.group_key != key.public.verifying_key {
        return Err(invalid("operation names another group key"));
    }
    if now_unix >= o.expires_at {
        return Err(invalid(format!(
            "operation expired at {} (now {now_unix})",
            o.expires_at
        )));
    }
    if op.approvals.is_empty() {
        return Err(invalid(
            "operation carries no approvals; nodes require a quorum of their operators",
        ));
    }
    for n in &o.committee {
        if roster.by_node(n).and_then(|p| p.signer.as_ref()).is_none() {
            return Err(invalid(format!(
                "committee member {n} is not a signer in the roster"
            )));
        }
    }
    let committee = roster
        .committee(Some(&o.committee))
        .map_err(|e| invalid(e.to_string()))?;
    check_residency(roster, &committee, &o.segments)?;
    if o.kind == OperationKind::Refresh {
        let members: std::collections::BTreeMap<NodeId, u16> = committee
            .members()
            .iter()
            .map(|m| (m.node, m.index))
            .collect();
        if members != key.public.members || o.threshold != key.public.threshold {
            return Err(invalid(
                "a refresh keeps the committee and the threshold; use a reshare to change them",
            ));
        }
    }
    let mut dealers: Vec<NodeId> = key
        .public
        .members
        .keys()
        .copied()
        .filter(|n| reachable(n))
        .collect();
    dealers.sort();
    let needed = usize::from(key.public.threshold);
    if dealers.len() < needed {
        return Err(CoordinatorError::NotEnoughSigners {
            available: dealers.len(),
            needed,
            attempts: Vec::new(),
        });
    }
    Ok(Plan { dealers, committee })
}

/// Data residency: every member's roster segment is an allowed one.
fn check_residency(
    roster: &Roster,
    committee: &Committee,
    segments: &[String],
) -> Result<(), CoordinatorError> {
    if segments.is_empty() {
        return Ok(());
    }
    for m in committee.members() {
        let segment = roster
            .by_node(&m.node)
            .and_then(|p| p.signer.as_ref())
            .map(|s| s.1.as_str())
            .unwrap_or_default();
        if !segments.iter().any(|s| s == segment) {
            return Err(invalid(format!(
                "residency: member {} is in segment {segment:?}, outside the allowed segments {segments:?}",
                m.node
            )));
        }
    }
    Ok(())
}
