//! The long steps of a round: announcing it, and close → settlement batch →
//! threshold signature (in a task, so `GET` shows `closing` and `settling`).
//! Every step's outcome is stored before the next starts.

use std::{sync::Arc, time::Duration};

use quorate_protocol::{
    netting::{open::inputs_digest, RoundId},
    ProtocolError,
};
use rand_core::OsRng;
use serde_json::json;

use crate::{
    api::{
        problem::{Problem, ProblemKind},
        ApiState,
    },
    backend::{now_ms, Backend},
    error::CoordinatorError,
    netting::{
        record::{CloseRecord, RoundRecord, RoundState},
        settle::settle_round,
        CloseOutcome, NodeAck, RoundOpen, SettleRequest,
    },
};

/// Whether a stored round may be announced again (same spec posted again): it
/// failed before anything was submitted, for a reason other than a restart.
pub(super) fn may_reannounce(r: &RoundRecord) -> bool {
    r.state == RoundState::Failed
        && r.close.is_none()
        && r.failure
            .as_ref()
            .is_some_and(|f| f.kind != "coordinator-restarted")
}

fn refusals_json(acks: &[NodeAck]) -> serde_json::Value {
    json!(acks
        .iter()
        .filter_map(|a| a.refusal().map(|(r, d)| json!({
            "node": a.node.to_string(), "reason": r, "detail": d
        })))
        .collect::<Vec<_>>())
}

/// Announces the round to its committee and stores every node's answer; a refusal
/// by any node fails the round (every node must hold every bundle).
pub(super) async fn announce<B: Backend>(
    state: &ApiState<B>,
    open: RoundOpen,
) -> Result<RoundRecord, Problem> {
    let id = open.spec.id;
    let result = state.backend.netting_open(open).await;
    let now = now_ms();
    let (problem, acks) = match result {
        Err(e) => (Some(Problem::from(&e)), Vec::new()),
        Ok(acks) => {
            let refused: Vec<String> = acks
                .iter()
                .filter_map(|a| a.refusal().map(|(r, d)| format!("{}: {r}: {d}", a.node)))
                .collect();
            let p = (!refused.is_empty()).then(|| {
                Problem::new(
                    ProblemKind::RoundRefused,
                    format!(
                        "committee nodes refused round {id}: {} (a round needs every \
                         committee node; fix their netting policy or reachability and post \
                         the same round again)",
                        refused.join("; ")
                    ),
                )
                .with("refusals", refusals_json(&acks))
            });
            (p, acks)
        }
    };
    let stored = state
        .store
        .update_round(&id, |r| {
            r.announcement = acks;
            r.updated_at_ms = now;
            match &problem {
                Some(p) => {
                    let kind = p.kind().map_or("internal", |k| k.slug());
                    r.fail(kind, p.detail.clone(), now);
                }
                None => {
                    r.state = RoundState::Open;
                    r.failure = None;
                }
            }
            true
        })
        .map_err(Problem::from)?
        .ok_or_else(|| Problem::new(ProblemKind::Internal, "round vanished from the store"))?;
    match problem {
        Some(p) => Err(p.with("round", json!(id.to_string()))),
        None => Ok(stored),
    }
}

/// Moves an open round to `closing`; false when it is not open (already closing,
/// or finished: the close is then idempotent).
pub(super) fn begin_close<B>(state: &ApiState<B>, id: &RoundId) -> Result<bool, Problem> {
    let mut moved = false;
    state
        .store
        .update_round(id, |r| {
            if r.state != RoundState::Open {
                return false;
            }
            r.state = RoundState::Closing;
            r.updated_at_ms = now_ms();
            moved = true;
            true
        })
        .map_err(Problem::from)?;
    Ok(moved)
}

/// Waits (polling the store) until the round is final or `timeout` passes.
pub(super) async fn wait_final<B>(
    state: &ApiState<B>,
    id: &RoundId,
    timeout: Duration,
) -> Result<RoundRecord, Problem> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let r = state
            .store
            .round(id)
            .map_err(Problem::from)?
            .ok_or_else(|| Problem::new(ProblemKind::UnknownRound, format!("no round {id}")))?;
        if r.state.is_final() || tokio::time::Instant::now() >= deadline {
            return Ok(r);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Stores a change; logs a storage failure (the task has nobody to answer).
fn store_change<B>(state: &ApiState<B>, id: &RoundId, change: impl FnOnce(&mut RoundRecord)) {
    let result = state.store.update_round(id, |r| {
        change(r);
        r.updated_at_ms = now_ms();
        true
    });
    if let Err(e) = result {
        tracing::error!(round = %id, error = %e, "could not store the netting round");
    }
}

fn fail_with<B>(state: &ApiState<B>, id: &RoundId, e: &CoordinatorError) {
    let p = Problem::from(e);
    let kind = p.kind().map_or("internal", |k| k.slug()).to_owned();
    tracing::warn!(round = %id, error = %e, "netting round failed");
    store_change(state, id, |r| {
        if let CoordinatorError::Refused { attempts, .. }
        | CoordinatorError::NotEnoughSigners { attempts, .. } = e
        {
            r.attempts = attempts.clone();
        }
        r.fail(&kind, p.detail.clone(), now_ms());
    });
}

fn fail_netting<B>(state: &ApiState<B>, id: &RoundId, detail: String) {
    tracing::warn!(round = %id, %detail, "netting round failed");
    store_change(state, id, |r| {
        r.fail(ProblemKind::NettingFailed.slug(), detail, now_ms())
    });
}

/// Close → outputs → batch → signature, storing each step.
pub(super) async fn close_and_settle<B: Backend>(state: Arc<ApiState<B>>, id: RoundId) {
    let Ok(Some(record)) = state.store.round(&id) else {
        return;
    };
    let outcome = match state.backend.netting_close(id).await {
        Ok(o) => o,
        Err(e) => return fail_with(&state, &id, &e),
    };
    if let Err(e) = state.store.put_party_outputs(&id, &outcome.parties) {
        return fail_with(&state, &id, &e);
    }
    let gate = match &outcome.limits {
        Some(l) => {
            if let Err(e) = state.store.put_limits(&id, l) {
                return fail_with(&state, &id, &e);
            }
            Some(super::limits::gate(&record.spec, l))
        }
        None if record.spec.limits.is_some() => Some(super::limits::Gate::Failed(
            "the backend ran no limit checks for this limit-checked round".into(),
        )),
        None => None,
    };
    let close = close_record(&record, outcome);
    let t = usize::from(record.spec.threshold);
    let enough = close.public.len() >= t;
    let refused: Vec<String> = close
        .acks
        .iter()
        .filter_map(|a| a.refusal().map(|(r, d)| format!("{}: {r}: {d}", a.node)))
        .collect();
    let views = close.public.clone();
    let inputs = close.inputs.clone();
    store_change(&state, &id, |r| {
        r.close = Some(close);
        r.state = RoundState::Settling;
    });
    match gate {
        None => {}
        Some(super::limits::Gate::Settle(dissent)) => {
            store_change(&state, &id, |r| add_culprits(r, &dissent));
        }
        Some(super::limits::Gate::NotCovered(dissent)) => {
            tracing::info!(round = %id, "limits not covered; nothing is settled");
            return store_change(&state, &id, |r| {
                add_culprits(r, &dissent);
                r.state = RoundState::NotCovered;
            });
        }
        Some(super::limits::Gate::Failed(detail)) => return fail_netting(&state, &id, detail),
    }
    if !enough {
        return fail_netting(
            &state,
            &id,
            format!(
                "{} of {} nodes sent verified public outputs, {t} needed; refusals: {}",
                views.len(),
                record.spec.committee.len(),
                if refused.is_empty() {
                    "none".into()
                } else {
                    refused.join("; ")
                }
            ),
        );
    }
    let headers = match state.store.parties(&id, record.spec.parties.len()) {
        Ok(p) => p.into_iter().map(|e| e.header).collect::<Vec<_>>(),
        Err(e) => return fail_with(&state, &id, &e),
    };
    let spec = record.spec.clone();
    let settled = tokio::task::spawn_blocking(move || {
        settle_round(&spec, &headers, &inputs, &views, &mut OsRng).map(|b| (b, views))
    })
    .await;
    let (batch, culprits, views) = match settled {
        Ok(Ok(((batch, culprits), views))) => (batch, culprits, views),
        Ok(Err(ProtocolError::ConservationFailed { asset, imbalance })) => {
            tracing::warn!(round = %id, %asset, imbalance, "conservation failed; nothing signed");
            return store_change(&state, &id, |r| {
                r.imbalance = Some((asset, imbalance));
                r.state = RoundState::ConservationFailed;
            });
        }
        Ok(Err(e)) => {
            let culprits = e.culprits();
            store_change(&state, &id, |r| add_culprits(r, &culprits));
            return fail_netting(&state, &id, format!("opening the nets failed: {e}"));
        }
        Err(e) => return fail_netting(&state, &id, format!("settlement task failed: {e}")),
    };
    let message = batch.message();
    store_change(&state, &id, |r| {
        add_culprits(r, &culprits);
        r.batch = Some(batch);
    });
    let request = SettleRequest {
        round: id,
        views,
        message,
    };
    let signed = match state.backend.netting_settle(request).await {
        Ok(s) => s,
        Err(e) => return fail_with(&state, &id, &e),
    };
    let key = match state.store.key(&record.spec.key) {
        Ok(Some(k)) => k,
        _ => return fail_netting(&state, &id, "the settlement key is no longer stored".into()),
    };
    if let Err(e) = key
        .public
        .verify(&message, &signed.signature.signature, None)
    {
        return fail_netting(
            &state,
            &id,
            format!("the settlement signature does not verify: {e}"),
        );
    }
    tracing::info!(round = %id, "netting round settled");
    store_change(&state, &id, |r| {
        r.signature = Some(signed.signature);
        r.attempts = signed.attempts;
        r.state = RoundState::Settled;
    });
}

fn close_record(record: &RoundRecord, o: CloseOutcome) -> CloseRecord {
    CloseRecord {
        inputs_digest: inputs_digest(&record.spec, &o.inputs),
        inputs: o.inputs,
        acks: o.acks,
        public: o.public,
        culprits: o.culprits,
    }
}

fn add_culprits(r: &mut RoundRecord, culprits: &[quorate_protocol::NodeId]) {
    if let Some(c) = &mut r.close {
        c.culprits.extend_from_slice(culprits);
        c.culprits.sort();
        c.culprits.dedup();
    }
}
