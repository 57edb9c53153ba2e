//! The netting resource: `/v1/netting/rounds` (create, status), bundles, close,
//! per-party results and the signed settlement. Each handler is a pipeline of
//! named checks; the close, settlement and signing run in a task (see `run`).
//!
//! The coordinator holds public data only: a party's bundle is forwarded (each
//! node gets its own sealed box) and only its party-signed header is kept.

mod limits;
mod run;

use std::{sync::Arc, time::Duration};

use axum::{
    extract::{rejection::QueryRejection, Path, Query, State},
    http::{header, HeaderValue, StatusCode},
    response::Response,
};
use ed25519_dalek::{Signature, VerifyingKey};
use quorate_protocol::{
    netting::{
        bundle::box_digest,
        round::{close_message, result_request_message, RoundAuthorization},
        InputBundle, RoundId, RoundSpec,
    },
    wire::MAX_MESSAGE_SIZE,
    ProtocolError,
};
use serde_json::json;

use super::{
    json_response, load_key,
    problem::{Problem, ProblemKind},
    ApiState, JsonBody, DEFAULT_WAIT_MS,
};
use crate::{
    backend::{now_ms, Backend},
    netting::{
        bundle_reason,
        model::{
            AuthorizationBody, BundleAnswer, BundleBody, CloseBody, CloseQuery, CreateRoundBody,
            NodeAnswerView, ResultQuery, ResultView, RoundView, SettlementView,
        },
        record::{RoundRecord, RoundState},
        RoundOpen, MAX_CLOCK_SKEW_MS,
    },
    types::KeyRecord,
};

/// Largest body of `POST /v1/netting/rounds/{id}/bundles` (hex of the postcard
/// `InputBundle`).
pub const BUNDLE_BODY_LIMIT: usize = 16 * 1024 * 1024;

// ------------------------------------------------------------------ checks

fn parse_round_id(id: &str) -> Result<RoundId, Problem> {
    RoundId::from_hex(id).map_err(|_| Problem::malformed("id", "a round id is 16 bytes of hex"))
}

fn hex_array<const N: usize>(field: &str, s: &str) -> Result<[u8; N], Problem> {
    let mut out = [0u8; N];
    hex::decode_to_slice(s.trim(), &mut out)
        .map_err(|_| Problem::malformed(field, format!("{N} bytes of hex")))?;
    Ok(out)
}

fn parse_authorization(a: &AuthorizationBody) -> Result<RoundAuthorization, Problem> {
    Ok(RoundAuthorization {
        client: hex_array::<32>("authorization.client", &a.client)?,
        signature: hex_array::<64>("authorization.signature", &a.signature)?.to_vec(),
    })
}

fn registered_client<B>(state: &ApiState<B>, client: &[u8; 32]) -> Result<(), Problem> {
    match state.settings.clients.get(client) {
        Some(_) => Ok(()),
        None => Err(Problem::new(
            ProblemKind::UnregisteredClient,
            format!(
                "client key {} is not registered with this coordinator",
                hex::encode(client)
            ),
        )),
    }
}

/// Longest time from now to a new round's cut-off, seconds (7 days; nodes refuse
/// a round beyond their `limits.max_netting_horizon_secs`, by default the same).
pub const MAX_CUTOFF_HORIZON_SECS: u64 = 7 * 24 * 3600;

fn check_spec(spec: &RoundSpec, now_secs: u64) -> Result<(), Problem> {
    spec.validate()
        .map_err(|e| Problem::new(ProblemKind::InvalidRound, format!("spec: {e}")))?;
    limits::check_limits(spec)?;
    check_cutoff(spec.cutoff, now_secs)
}

/// The cut-off is in the future and at most [`MAX_CUTOFF_HORIZON_SECS`] ahead (a
/// round holds a slot on every node until then, and for the retention after).
fn check_cutoff(cutoff: u64, now_secs: u64) -> Result<(), Problem> {
    if cutoff <= now_secs {
        return Err(Problem::new(
            ProblemKind::InvalidRound,
            format!(
                "spec.cutoff {cutoff} is not in the future (now {now_secs}); choose a later cut-off"
            ),
        ));
    }
    if cutoff - now_secs > MAX_CUTOFF_HORIZON_SECS {
        return Err(Problem::new(
            ProblemKind::InvalidRound,
            format!(
                "spec.cutoff {cutoff} is more than {MAX_CUTOFF_HORIZON_SECS} s (7 days) ahead \
                 (now {now_secs}); choose an earlier cut-off"
            ),
        ));
    }
    Ok(())
}

fn check_authorization(spec: &RoundSpec, auth: &RoundAuthorization) -> Result<(), Problem> {
    spec.verify_authorization(auth).map_err(|_| {
        Problem::new(
            ProblemKind::BadClientSignature,
            "authorization.signature does not verify under authorization.client over \
             \"quorate/netting/round-auth/v1\\0\" ‖ spec digest; sign the spec exactly as sent",
        )
    })
}

/// The committee must be exactly the key's members under their indices.
fn check_committee(spec: &RoundSpec, key: &KeyRecord) -> Result<(), Problem> {
    let bad = |m: String| Err(Problem::new(ProblemKind::InvalidRound, m));
    let members = &key.public.members;
    if spec.committee.len() != members.len() {
        return bad(format!(
            "spec.committee has {} members, key {} has {}: list exactly the key's members",
            spec.committee.len(),
            key.key_id(),
            members.len()
        ));
    }
    for m in spec.committee.members() {
        if members.get(&m.node) != Some(&m.index) {
            return bad(format!(
                "spec.committee member {} (index {}) is not a member of key {} under that index",
                m.node,
                m.index,
                key.key_id()
            ));
        }
    }
    Ok(())
}

fn load_round<B>(state: &ApiState<B>, id: &RoundId) -> Result<RoundRecord, Problem> {
    state
        .store
        .round(id)
        .map_err(Problem::from)?
        .ok_or_else(|| Problem::new(ProblemKind::UnknownRound, format!("no netting round {id}")))
}

fn check_state(record: &RoundRecord, want: RoundState, what: &str) -> Result<(), Problem> {
    if record.state == want {
        return Ok(());
    }
    Err(Problem::new(
        ProblemKind::RoundConflict,
        format!(
            "{what} needs the round to be {}; round {} is {}",
            want.as_str(),
            record.spec.id,
            record.state.as_str()
        ),
    )
    .with("state", json!(record.state.as_str())))
}

/// `|now − at_ms| ≤ 5 min`.
fn check_clock(field: &str, at_ms: u64, now: u64) -> Result<(), Problem> {
    if now.abs_diff(at_ms) > MAX_CLOCK_SKEW_MS {
        return Err(Problem::new(
            ProblemKind::ExpiredRequest,
            format!(
                "{field} {at_ms} is more than {MAX_CLOCK_SKEW_MS} ms from the coordinator's \
                 clock ({now} ms); sign again with the current time"
            ),
        ));
    }
    Ok(())
}

fn check_signature(
    key: &[u8; 32],
    message: &[u8],
    signature: &str,
    who: &str,
) -> Result<(), Problem> {
    let sig = hex_array::<64>("signature", signature)?;
    let ok = VerifyingKey::from_bytes(key)
        .map(|k| {
            k.verify_strict(message, &Signature::from_bytes(&sig))
                .is_ok()
        })
        .unwrap_or(false);
    if ok {
        Ok(())
    } else {
        Err(Problem::new(
            ProblemKind::BadClientSignature,
            format!("signature does not verify under {who}'s key"),
        ))
    }
}

fn decode_bundle(body: &BundleBody) -> Result<InputBundle, Problem> {
    let bytes = hex::decode(body.bundle.trim())
        .map_err(|e| Problem::malformed("bundle", format!("not hex: {e}")))?;
    match postcard::take_from_bytes::<InputBundle>(&bytes) {
        Ok((b, [])) => Ok(b),
        Ok(_) => Err(Problem::malformed(
            "bundle",
            "trailing bytes after the InputBundle",
        )),
        Err(e) => Err(Problem::malformed(
            "bundle",
            format!("not a postcard InputBundle: {e}"),
        )),
    }
}

fn bundle_refused(spec: &RoundSpec, party: u32, reason: &str, detail: String) -> Problem {
    let name = spec
        .parties
        .get(party as usize)
        .map_or_else(|| format!("#{party}"), |p| p.name.clone());
    Problem::new(ProblemKind::BundleRefused, detail)
        .with("party", json!(name))
        .with("reason", json!(reason))
}

/// What every node would check of the bundle's public part, so a bad bundle is
/// refused at once, naming the party: shape, party signature, cut-off, one sealed
/// box per committee member matching the signed box digests, and frame size.
fn check_bundle(spec: &RoundSpec, bundle: &InputBundle) -> Result<(), Problem> {
    let h = &bundle.header;
    h.check_full(spec).map_err(|e| match &e {
        ProtocolError::BadBundle { .. } | ProtocolError::LateBundle { .. } => {
            bundle_refused(spec, h.party, bundle_reason(&e), e.to_string())
        }
        _ => Problem::malformed("bundle", e.to_string()),
    })?;
    let members = spec.committee.members();
    if bundle.boxes.len() != members.len() {
        return Err(bundle_refused(
            spec,
            h.party,
            "netting:bad_bundle",
            format!(
                "{} sealed boxes for a {}-node committee",
                bundle.boxes.len(),
                members.len()
            ),
        ));
    }
    for (i, (m, b)) in members.iter().zip(&bundle.boxes).enumerate() {
        if box_digest(&m.node, b) != h.box_digests[i] {
            return Err(bundle_refused(
                spec,
                h.party,
                "netting:bad_bundle",
                format!(
                    "sealed box {i} (node {}) does not match its signed digest",
                    m.node
                ),
            ));
        }
        // Nodes get the header without the per-value commitments, and their box.
        let size = postcard::to_allocvec(&(h.for_nodes(), b)).map_or(usize::MAX, |v| v.len());
        if size.saturating_add(1024) > MAX_MESSAGE_SIZE {
            return Err(Problem::new(
                ProblemKind::PayloadTooLarge,
                format!(
                    "the nodes' header and node {i}'s box are {size} bytes; one node message \
                     holds at most {MAX_MESSAGE_SIZE}: use fewer instruments or parties per round"
                ),
            ));
        }
    }
    Ok(())
}

fn view_of<B>(state: &ApiState<B>, record: &RoundRecord) -> Result<RoundView, Problem> {
    let parties = state
        .store
        .parties(&record.spec.id, record.spec.parties.len())
        .map_err(Problem::from)?;
    let mut view = RoundView::build(record, &parties);
    view.limits = limits::view(state, record)?;
    Ok(view)
}

fn round_response(status: StatusCode, view: &RoundView) -> Response {
    let mut resp = json_response(status, view);
    if let Ok(loc) = HeaderValue::from_str(&format!("/v1/netting/rounds/{}", view.id)) {
        resp.headers_mut().insert(header::LOCATION, loc);
    }
    resp
}

// ------------------------------------------------------------------ handlers

/// `POST /v1/netting/rounds`.
pub(super) async fn create_round<B: Backend>(
    State(state): State<Arc<ApiState<B>>>,
    body: Result<JsonBody<CreateRoundBody>, Problem>,
) -> Result<Response, Problem> {
    let body = body?.value;
    let auth = parse_authorization(&body.authorization)?;
    registered_client(&state, &auth.client)?;
    let now = now_ms();
    check_spec(&body.spec, now / 1000)?;
    check_authorization(&body.spec, &auth)?;
    let key = load_key(&state, &body.spec.key)?;
    check_committee(&body.spec, &key)?;
    let record = RoundRecord::new(body.spec, auth, now);
    let existing = state.store.create_round(&record).map_err(Problem::from)?;
    let status = match existing {
        None => StatusCode::CREATED,
        Some(old) if old.spec != record.spec => {
            return Err(Problem::new(
                ProblemKind::RoundConflict,
                format!(
                    "round id {} is taken by another definition; choose a new random id",
                    record.spec.id
                ),
            )
            .with("state", json!(old.state.as_str())))
        }
        Some(old) if !run::may_reannounce(&old) => {
            return Ok(round_response(StatusCode::OK, &view_of(&state, &old)?))
        }
        Some(_) => StatusCode::OK,
    };
    let record = run::announce(
        &state,
        RoundOpen {
            spec: record.spec,
            authorization: record.authorization,
            key,
        },
    )
    .await?;
    Ok(round_response(status, &view_of(&state, &record)?))
}

/// `GET /v1/netting/rounds/{id}`.
pub(super) async fn get_round<B: Backend>(
    State(state): State<Arc<ApiState<B>>>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let id = parse_round_id(&id)?;
    let record = load_round(&state, &id)?;
    Ok(json_response(StatusCode::OK, &view_of(&state, &record)?))
}

/// `POST /v1/netting/rounds/{id}/bundles`.
pub(super) async fn submit_bundle<B: Backend>(
    State(state): State<Arc<ApiState<B>>>,
    Path(id): Path<String>,
    body: Result<JsonBody<BundleBody>, Problem>,
) -> Result<Response, Problem> {
    let id = parse_round_id(&id)?;
    let record = load_round(&state, &id)?;
    check_state(&record, RoundState::Open, "submitting a bundle")?;
    let bundle = decode_bundle(&body?.value)?;
    let spec = &record.spec;
    check_bundle(spec, &bundle)?;
    let party = bundle.header.party;
    let digest = bundle.header.digest();
    let held = state.store.party(&id, party).map_err(Problem::from)?;
    if held.header.as_ref().is_some_and(|h| h.digest() != digest) {
        return Err(bundle_refused(
            spec,
            party,
            "netting:bad_bundle",
            format!(
                "party {:?} already has another bundle in round {id}; a party submits one \
                 bundle per round (resend that one to retry)",
                spec.parties[party as usize].name
            ),
        ));
    }
    let header = bundle.header.clone();
    let outcome = state
        .backend
        .netting_bundle(id, bundle)
        .await
        .map_err(Problem::from)?;
    let entry = state
        .store
        .merge_party(&id, party, &header, &outcome.acks)
        .map_err(Problem::from)?;
    let nodes: Vec<NodeAnswerView> = outcome.acks.iter().map(NodeAnswerView::from).collect();
    let answer = BundleAnswer {
        round: id.to_string(),
        party: spec.parties[party as usize].name.clone(),
        index: party,
        digest: hex::encode(digest),
        accepted_by_all: entry.header.as_ref().is_some_and(|h| h.digest() == digest)
            && spec.committee.nodes().all(|n| entry.held.contains(&n)),
        nodes,
    };
    let refusals: Vec<String> = outcome
        .acks
        .iter()
        .filter_map(|a| a.refusal().map(|(r, d)| (a.node, r, d)))
        .filter(|(_, r, _)| r.starts_with("netting:") || r.starts_with("policy:"))
        .map(|(n, r, d)| format!("{n}: {r}: {d}"))
        .collect();
    if !refusals.is_empty() {
        let reason = outcome
            .acks
            .iter()
            .filter_map(|a| a.refusal().map(|(r, _)| r))
            .find(|r| r.starts_with("netting:") || r.starts_with("policy:"))
            .map(str::to_owned)
            .unwrap_or_default();
        return Err(bundle_refused(
            spec,
            party,
            &reason,
            format!(
                "nodes refused the bundle of party {:?}: {}",
                answer.party,
                refusals.join("; ")
            ),
        )
        .with("nodes", json!(answer.nodes))
        .with("digest", json!(answer.digest)));
    }
    Ok(json_response(StatusCode::OK, &answer))
}

/// `POST /v1/netting/rounds/{id}/close`.
pub(super) async fn close_round<B: Backend>(
    State(state): State<Arc<ApiState<B>>>,
    Path(id): Path<String>,
    query: Result<Query<CloseQuery>, QueryRejection>,
    body: Result<JsonBody<CloseBody>, Problem>,
) -> Result<Response, Problem> {
    let id = parse_round_id(&id)?;
    let Query(query) = query.map_err(|r| Problem::malformed("query", r.body_text()))?;
    let body = body?.value;
    let record = load_round(&state, &id)?;
    check_clock("at_ms", body.at_ms, now_ms())?;
    check_signature(
        &record.authorization.client,
        &close_message(&id, body.at_ms),
        &body.signature,
        "the round's creating client",
    )?;
    if run::begin_close(&state, &id)? {
        tokio::spawn(run::close_and_settle(state.clone(), id));
    }
    let record = if query.wait {
        let ms = query
            .timeout_ms
            .unwrap_or(DEFAULT_WAIT_MS)
            .min(state.settings.limits.max_wait_ms);
        run::wait_final(&state, &id, Duration::from_millis(ms)).await?
    } else {
        load_round(&state, &id)?
    };
    Ok(json_response(StatusCode::OK, &view_of(&state, &record)?))
}

/// `GET /v1/netting/rounds/{id}/results/{party}`.
pub(super) async fn party_result<B: Backend>(
    State(state): State<Arc<ApiState<B>>>,
    Path((id, party)): Path<(String, String)>,
    query: Result<Query<ResultQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    let id = parse_round_id(&id)?;
    let Query(query) = query.map_err(|r| Problem::malformed("query", r.body_text()))?;
    let record = load_round(&state, &id)?;
    let spec = &record.spec;
    let p = spec.party_index(&party).ok_or_else(|| {
        Problem::new(
            ProblemKind::NotFound,
            format!("round {id} has no party {party:?}"),
        )
    })?;
    check_clock("at_ms", query.at_ms, now_ms())?;
    check_signature(
        &spec.parties[p].sign_key,
        &result_request_message(&id, &party, query.at_ms),
        &query.signature,
        &format!("party {party:?}"),
    )?;
    let close = record.close.as_ref().ok_or_else(|| {
        Problem::new(
            ProblemKind::RoundConflict,
            format!(
                "round {id} is {}: results exist once it is closed",
                record.state.as_str()
            ),
        )
        .with("state", json!(record.state.as_str()))
    })?;
    if close.inputs.get(p).is_none_or(Option::is_none) {
        return Err(Problem::new(
            ProblemKind::RoundConflict,
            format!(
                "party {party:?} is not in round {id}'s nets: its bundle was not accepted by \
                 every node before close"
            ),
        )
        .with("state", json!(record.state.as_str())));
    }
    let entries = state
        .store
        .parties(&id, spec.parties.len())
        .map_err(Problem::from)?;
    let headers = close
        .inputs
        .iter()
        .zip(&entries)
        .filter(|(d, _)| d.is_some())
        .map(|(_, e)| {
            e.header
                .as_ref()
                .and_then(|h| postcard::to_allocvec(h).ok())
                .map(hex::encode)
                .ok_or_else(|| Problem::new(ProblemKind::Internal, "a listed header is missing"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let outputs = entries[p]
        .outputs
        .iter()
        .filter_map(|o| postcard::to_allocvec(o).ok())
        .map(hex::encode)
        .collect();
    let limit_bits = limits::party_bits(limits::stored(&state, &record)?.as_ref(), p);
    Ok(json_response(
        StatusCode::OK,
        &ResultView {
            outputs,
            headers,
            participants: close.participants(),
            inputs_digest: hex::encode(close.inputs_digest),
            limit_bits,
        },
    ))
}

/// `GET /v1/netting/rounds/{id}/settlement`.
pub(super) async fn settlement<B: Backend>(
    State(state): State<Arc<ApiState<B>>>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let id = parse_round_id(&id)?;
    let record = load_round(&state, &id)?;
    if record.state == RoundState::NotCovered {
        return Err(limits::not_covered(&state, &record));
    }
    let (Some(batch), Some(sig), RoundState::Settled) =
        (&record.batch, &record.signature, record.state)
    else {
        return Err(Problem::new(
            ProblemKind::RoundNotSettled,
            format!(
                "round {id} is {}: the settlement exists once it is settled",
                record.state.as_str()
            ),
        )
        .with("state", json!(record.state.as_str())));
    };
    Ok(json_response(
        StatusCode::OK,
        &SettlementView {
            batch: batch.clone(),
            encoding: hex::encode(batch.encode()),
            message: hex::encode(batch.message()),
            signature: hex::encode(&sig.signature),
            key_id: record.spec.key.to_string(),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cutoff_must_be_in_the_future_and_within_seven_days() {
        let now = 1_700_000_000;
        for bad in [now - 1, now, now + MAX_CUTOFF_HORIZON_SECS + 1, u64::MAX] {
            let p = check_cutoff(bad, now).expect_err("refused");
            assert!(p.detail.contains("spec.cutoff"), "{p:?}");
            let want = Problem::new(ProblemKind::InvalidRound, String::new());
            assert_eq!(p.type_uri, want.type_uri);
        }
        for good in [now + 1, now + 3600, now + MAX_CUTOFF_HORIZON_SECS] {
            check_cutoff(good, now).expect("accepted");
        }
    }
}
