//! Limit-checked rounds in the netting resource: the creation check, what the
//! close's limit phase decides (settle, not covered, failed), the `limits` section
//! of the status, the party's sealed bits in its result, and the settlement's
//! `limits-not-covered` refusal.

use quorate_protocol::{
    netting::{limits::inputs::Layout, RoundSpec},
    NodeId,
};
use serde_json::json;

use crate::{
    api::{
        problem::{Problem, ProblemKind},
        ApiState,
    },
    netting::{limits::LimitsOutcome, limits_model::LimitsView, record::RoundRecord},
};

/// A limit-checked round's comparisons must fit one MPC run: every party's
/// check per asset (and with `efficiency` every net and bilateral pair).
pub(super) fn check_limits(spec: &RoundSpec) -> Result<(), Problem> {
    if spec.limits.is_none() {
        return Ok(());
    }
    let all = vec![true; spec.parties.len()];
    let job = Layout::new(spec, &all).map(|l| l.job());
    match job.map(|j| j.validate()) {
        Some(Ok(())) => Ok(()),
        Some(Err(e)) => Err(Problem::new(
            ProblemKind::InvalidRound,
            format!("spec.limits: {e}; use fewer parties or assets, or turn limits.efficiency off"),
        )),
        None => Ok(()),
    }
}

/// The stored limit phase of a round.
pub(super) fn stored<B>(
    state: &ApiState<B>,
    record: &RoundRecord,
) -> Result<Option<LimitsOutcome>, Problem> {
    if record.spec.limits.is_none() {
        return Ok(None);
    }
    state.store.limits(&record.spec.id).map_err(Problem::from)
}

/// The `limits` section of the round's status.
pub(super) fn view<B>(
    state: &ApiState<B>,
    record: &RoundRecord,
) -> Result<Option<LimitsView>, Problem> {
    let outcome = stored(state, record)?;
    Ok(LimitsView::build(&record.spec, outcome.as_ref()))
}

/// This party's sealed bits from every node (hex of `postcard(LimitBits)`).
pub(super) fn party_bits(outcome: Option<&LimitsOutcome>, party: usize) -> Vec<String> {
    outcome
        .map(|o| {
            o.bits
                .iter()
                .filter(|b| b.party as usize == party)
                .filter_map(|b| postcard::to_allocvec(b).ok())
                .map(hex::encode)
                .collect()
        })
        .unwrap_or_default()
}

/// What the limit phase decides for the rest of the close.
pub(super) enum Gate {
    /// Covered by a quorum verdict: settle. Nodes that signed another verdict.
    Settle(Vec<NodeId>),
    /// Not covered by a quorum verdict: nothing is settled.
    NotCovered(Vec<NodeId>),
    /// No quorum verdict: the round fails (detail names the nodes).
    Failed(String),
}

/// The gate of a closed limit-checked round.
pub(super) fn gate(spec: &RoundSpec, outcome: &LimitsOutcome) -> Gate {
    match outcome.verdict(spec) {
        Ok(v) if v.covered => Gate::Settle(v.dissent),
        Ok(v) => Gate::NotCovered(v.dissent),
        Err(_) if outcome.verdicts.is_empty() => Gate::Failed(outcome.failure()),
        Err(d) => Gate::Failed(format!("limit checks: {d}")),
    }
}

/// The settlement of a round whose limits are not covered: 409 naming the
/// failed parties (where the round reveals them).
pub(super) fn not_covered<B>(state: &ApiState<B>, record: &RoundRecord) -> Problem {
    let id = record.spec.id;
    let failed = stored(state, record)
        .ok()
        .flatten()
        .and_then(|o| o.verdict(&record.spec).ok())
        .map(|v| v.failed)
        .unwrap_or_default();
    let who = if failed.is_empty() {
        String::new()
    } else {
        format!(" (not covered: {})", failed.join(", "))
    };
    Problem::new(
        ProblemKind::LimitsNotCovered,
        format!(
            "round {id} is not settled because its limits are not covered{who}: the nodes' \
             signed verdicts (GET /v1/netting/rounds/{id}, `limits`) are its statement"
        ),
    )
    .with("state", json!(record.state.as_str()))
    .with("failed", json!(failed))
}
