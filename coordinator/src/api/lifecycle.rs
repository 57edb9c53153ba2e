//! `POST /v1/keys/{id}/refresh`, `/reshare` and `/repair`: operator-approved
//! lifecycle operations. The handler is a pipeline of named checks; the run itself
//! is the engine's, and every node checks the approvals again against its own
//! policy (a compromised coordinator cannot move a key to a committee it chose).

use std::sync::Arc;

use axum::{
    extract::{Path, State},
    http::StatusCode,
    response::Response,
};
use quorate_protocol::lifecycle::{ApprovedOperation, OperationKind, MAX_OPERATION_SIZE};
use serde::{Deserialize, Serialize};

use super::{
    check_admin, json_response, load_key, model::KeyView, parse_key_id, problem::Problem, ApiState,
    JsonBody,
};
use crate::backend::Backend;

/// Body of `POST /v1/keys/{id}/refresh` and `/reshare`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LifecycleBody {
    /// The approved operation: hex of its postcard encoding (protocol/README.md,
    /// "Lifecycle operations"), as `quorate lifecycle approve` writes it.
    pub operation: String,
}

/// `POST /v1/keys/{id}/refresh`.
pub(super) async fn refresh<B: Backend>(
    state: State<Arc<ApiState<B>>>,
    headers: axum::http::HeaderMap,
    path: Path<String>,
    body: Result<JsonBody<LifecycleBody>, Problem>,
) -> Result<Response, Problem> {
    run(state, headers, path, body, OperationKind::Refresh).await
}

/// `POST /v1/keys/{id}/repair`.
pub(super) async fn repair<B: Backend>(
    state: State<Arc<ApiState<B>>>,
    headers: axum::http::HeaderMap,
    path: Path<String>,
    body: Result<JsonBody<LifecycleBody>, Problem>,
) -> Result<Response, Problem> {
    run(state, headers, path, body, OperationKind::Repair).await
}

/// `POST /v1/keys/{id}/reshare`.
pub(super) async fn reshare<B: Backend>(
    state: State<Arc<ApiState<B>>>,
    headers: axum::http::HeaderMap,
    path: Path<String>,
    body: Result<JsonBody<LifecycleBody>, Problem>,
) -> Result<Response, Problem> {
    run(state, headers, path, body, OperationKind::Reshare).await
}

async fn run<B: Backend>(
    State(state): State<Arc<ApiState<B>>>,
    headers: axum::http::HeaderMap,
    Path(id): Path<String>,
    body: Result<JsonBody<LifecycleBody>, Problem>,
    kind: OperationKind,
) -> Result<Response, Problem> {
    check_admin(&state.settings, &headers)?;
    let key_id = parse_key_id(&id)?;
    let operation = decode_operation(&body?.value)?;
    check_kind(&operation, kind)?;
    check_key(&operation, &key_id)?;
    let record = load_key(&state, &key_id)?;
    let new = state
        .backend
        .reshare(record, operation)
        .await
        .map_err(Problem::from)?;
    state.store.put_key(&new).map_err(Problem::from)?;
    Ok(json_response(StatusCode::OK, &KeyView::from_record(&new)))
}

/// The `operation` field: hex, at most [`MAX_OPERATION_SIZE`] bytes, decoding.
fn decode_operation(body: &LifecycleBody) -> Result<ApprovedOperation, Problem> {
    if body.operation.len() > 2 * MAX_OPERATION_SIZE {
        return Err(Problem::malformed(
            "operation",
            format!("longer than {MAX_OPERATION_SIZE} bytes"),
        ));
    }
    let bytes = hex::decode(&body.operation)
        .map_err(|e| Problem::malformed("operation", format!("not hex: {e}")))?;
    ApprovedOperation::decode(&bytes).map_err(|e| Problem::malformed("operation", e.to_string()))
}

/// The route names the operation's kind.
fn check_kind(op: &ApprovedOperation, kind: OperationKind) -> Result<(), Problem> {
    if op.operation.kind != kind {
        return Err(Problem::malformed(
            "operation",
            format!(
                "is a {} operation; POST it to /v1/keys/{{id}}/{}",
                op.operation.kind.name(),
                op.operation.kind.name()
            ),
        ));
    }
    Ok(())
}

/// The path names the operation's key.
fn check_key(op: &ApprovedOperation, key: &quorate_protocol::KeyId) -> Result<(), Problem> {
    if op.operation.key_id != *key {
        return Err(Problem::malformed(
            "operation",
            format!("is for key {}, not {key}", op.operation.key_id),
        ));
    }
    Ok(())
}
