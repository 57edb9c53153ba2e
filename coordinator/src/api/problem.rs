//! RFC 9457 problem details (`application/problem+json`) with stable `type` URIs.

use axum::{
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::{error::CoordinatorError, types::Attempt};

/// Base of every problem `type` URI.
pub const PROBLEM_BASE: &str = "https://quorate.dev/problems/";

/// Media type of problem responses.
pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// Every cause the API reports, each with a stable `type` URI, title and status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProblemKind {
    /// Body, path, query or header is not what the schema says (400); `errors` names the field.
    MalformedInput,
    /// The key specification cannot be satisfied (400).
    InvalidKeySpec,
    /// Missing or wrong admin bearer token (401).
    Unauthorized,
    /// The client signature does not verify (401).
    BadClientSignature,
    /// The client key is not registered with this coordinator (403).
    UnregisteredClient,
    /// A signer refused by policy (403); `refusals` names node and rule.
    PolicyRefused,
    /// Unknown key id (404).
    UnknownKey,
    /// Unknown job id or route (404).
    NotFound,
    /// The method is not allowed on this route (405).
    MethodNotAllowed,
    /// The request was already submitted (same client nonce) (409).
    ReplayedRequest,
    /// Body larger than the limit (413).
    PayloadTooLarge,
    /// Body is not `application/json` (415).
    UnsupportedMediaType,
    /// Same `Idempotency-Key` with a different body (422).
    IdempotencyConflict,
    /// `expires_at_ms` has passed or is too far in the future (422).
    ExpiredRequest,
    /// Too many requests from this client (429); see `Retry-After`.
    RateLimited,
    /// Storage or another local failure (500).
    Internal,
    /// Key generation aborted (502); `culprits` names blamed nodes.
    DkgFailed,
    /// Fewer reachable signers than the threshold (503).
    NotEnoughSigners,
    /// The coordinator cannot reach the network or is shutting down (503).
    Unavailable,
    /// The coordinator restarted while the job was running (503).
    CoordinatorRestarted,
    /// A netting round definition cannot be used (400): fails validation, its cut-off
    /// has passed, or its committee is not the settlement key's members.
    InvalidRound,
    /// Committee nodes refused to take part in a netting round (403); `refusals`.
    RoundRefused,
    /// Unknown netting round (404).
    UnknownRound,
    /// The request does not fit the round's state, or the id is taken by another
    /// definition (409); `state`.
    RoundConflict,
    /// The round's settlement is not signed (yet) (409); `state`.
    RoundNotSettled,
    /// Nodes refused a party's bundle (422); `party`, `nodes`.
    BundleRefused,
    /// A netting round could not be completed by the nodes (502); `culprits`.
    NettingFailed,
    /// A limit-checked round is not settled because its limits are not covered
    /// (409); `failed` names the parties where the round reveals them.
    LimitsNotCovered,
    /// A lifecycle operation does not fit the key or the roster (400): generation,
    /// group key, committee, residency, expiry or approvals; the detail names the rule.
    InvalidOperation,
    /// Nodes refused a refresh or reshare (403); `refusals` names node and rule.
    LifecycleRefused,
    /// A refresh or reshare did not complete (502); `culprits` names blamed nodes.
    LifecycleFailed,
    /// The key is being refreshed or reshared (409); retry when the run ends.
    KeyBusy,
    /// A `bitcoin_psbt` request whose PSBT does not parse, or one of whose inputs
    /// to sign this key cannot sign (422); `errors[].field` names the field and
    /// index (`psbt.input[1].witness_utxo`).
    InvalidTransaction,
    /// Too few committee members approved the request for the window (403):
    /// `need`, `approved`, `refused` (node and reason) and `unanswered`.
    WindowCertificateFailed,
}

impl ProblemKind {
    /// Every kind, for documentation and tests.
    pub const ALL: [ProblemKind; 34] = [
        Self::MalformedInput,
        Self::InvalidKeySpec,
        Self::Unauthorized,
        Self::BadClientSignature,
        Self::UnregisteredClient,
        Self::PolicyRefused,
        Self::UnknownKey,
        Self::NotFound,
        Self::MethodNotAllowed,
        Self::ReplayedRequest,
        Self::PayloadTooLarge,
        Self::UnsupportedMediaType,
        Self::IdempotencyConflict,
        Self::ExpiredRequest,
        Self::RateLimited,
        Self::Internal,
        Self::DkgFailed,
        Self::NotEnoughSigners,
        Self::Unavailable,
        Self::CoordinatorRestarted,
        Self::InvalidRound,
        Self::RoundRefused,
        Self::UnknownRound,
        Self::RoundConflict,
        Self::RoundNotSettled,
        Self::BundleRefused,
        Self::NettingFailed,
        Self::LimitsNotCovered,
        Self::InvalidOperation,
        Self::LifecycleRefused,
        Self::LifecycleFailed,
        Self::KeyBusy,
        Self::InvalidTransaction,
        Self::WindowCertificateFailed,
    ];

    /// The last path segment of the `type` URI.
    pub fn slug(self) -> &'static str {
        match self {
            Self::MalformedInput => "malformed-input",
            Self::InvalidKeySpec => "invalid-key-spec",
            Self::Unauthorized => "unauthorized",
            Self::BadClientSignature => "bad-client-signature",
            Self::UnregisteredClient => "unregistered-client",
            Self::PolicyRefused => "policy-refused",
            Self::UnknownKey => "unknown-key",
            Self::NotFound => "not-found",
            Self::MethodNotAllowed => "method-not-allowed",
            Self::ReplayedRequest => "replayed-request",
            Self::PayloadTooLarge => "payload-too-large",
            Self::UnsupportedMediaType => "unsupported-media-type",
            Self::IdempotencyConflict => "idempotency-conflict",
            Self::ExpiredRequest => "expired-request",
            Self::RateLimited => "rate-limited",
            Self::Internal => "internal",
            Self::DkgFailed => "dkg-failed",
            Self::NotEnoughSigners => "not-enough-signers",
            Self::Unavailable => "unavailable",
            Self::CoordinatorRestarted => "coordinator-restarted",
            Self::InvalidRound => "invalid-round",
            Self::RoundRefused => "round-refused",
            Self::UnknownRound => "unknown-round",
            Self::RoundConflict => "round-conflict",
            Self::RoundNotSettled => "round-not-settled",
            Self::BundleRefused => "bundle-refused",
            Self::NettingFailed => "netting-failed",
            Self::LimitsNotCovered => "limits-not-covered",
            Self::InvalidOperation => "invalid-operation",
            Self::LifecycleRefused => "lifecycle-refused",
            Self::LifecycleFailed => "lifecycle-failed",
            Self::KeyBusy => "key-busy",
            Self::InvalidTransaction => "invalid-transaction",
            Self::WindowCertificateFailed => "window-certificate-failed",
        }
    }

    /// The HTTP status.
    pub fn status(self) -> StatusCode {
        match self {
            Self::MalformedInput | Self::InvalidKeySpec | Self::InvalidRound => {
                StatusCode::BAD_REQUEST
            }
            Self::RoundRefused | Self::LifecycleRefused | Self::WindowCertificateFailed => {
                StatusCode::FORBIDDEN
            }
            Self::InvalidOperation => StatusCode::BAD_REQUEST,
            Self::LifecycleFailed => StatusCode::BAD_GATEWAY,
            Self::KeyBusy => StatusCode::CONFLICT,
            Self::InvalidTransaction => StatusCode::UNPROCESSABLE_ENTITY,
            Self::UnknownRound => StatusCode::NOT_FOUND,
            Self::RoundConflict | Self::RoundNotSettled | Self::LimitsNotCovered => {
                StatusCode::CONFLICT
            }
            Self::BundleRefused => StatusCode::UNPROCESSABLE_ENTITY,
            Self::NettingFailed => StatusCode::BAD_GATEWAY,
            Self::Unauthorized | Self::BadClientSignature => StatusCode::UNAUTHORIZED,
            Self::UnregisteredClient | Self::PolicyRefused => StatusCode::FORBIDDEN,
            Self::UnknownKey | Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::ReplayedRequest => StatusCode::CONFLICT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::IdempotencyConflict | Self::ExpiredRequest => StatusCode::UNPROCESSABLE_ENTITY,
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Self::DkgFailed => StatusCode::BAD_GATEWAY,
            Self::NotEnoughSigners | Self::Unavailable | Self::CoordinatorRestarted => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    /// Short human-readable summary (stable per kind).
    pub fn title(self) -> &'static str {
        match self {
            Self::MalformedInput => "Malformed input",
            Self::InvalidKeySpec => "Invalid key specification",
            Self::Unauthorized => "Admin authorization required",
            Self::BadClientSignature => "Client signature does not verify",
            Self::UnregisteredClient => "Client key is not registered",
            Self::PolicyRefused => "Refused by signer policy",
            Self::UnknownKey => "Unknown key",
            Self::NotFound => "Not found",
            Self::MethodNotAllowed => "Method not allowed",
            Self::ReplayedRequest => "Request nonce already used",
            Self::PayloadTooLarge => "Payload too large",
            Self::UnsupportedMediaType => "Unsupported media type",
            Self::IdempotencyConflict => "Idempotency key reused with a different body",
            Self::ExpiredRequest => "Request expired",
            Self::RateLimited => "Rate limit exceeded",
            Self::Internal => "Internal error",
            Self::DkgFailed => "Key generation failed",
            Self::NotEnoughSigners => "Not enough reachable signers",
            Self::Unavailable => "Coordinator unavailable",
            Self::CoordinatorRestarted => "Coordinator restarted while the job was running",
            Self::InvalidRound => "Invalid netting round",
            Self::RoundRefused => "Nodes refused the netting round",
            Self::UnknownRound => "Unknown netting round",
            Self::RoundConflict => "Not possible in the round's state",
            Self::RoundNotSettled => "Settlement not signed yet",
            Self::BundleRefused => "Bundle refused",
            Self::NettingFailed => "Netting round failed",
            Self::LimitsNotCovered => "Round not settled: limits not covered",
            Self::InvalidOperation => "Invalid lifecycle operation",
            Self::LifecycleRefused => "Nodes refused the lifecycle operation",
            Self::LifecycleFailed => "Lifecycle operation failed",
            Self::KeyBusy => "Key is being refreshed or reshared",
            Self::InvalidTransaction => "Transaction cannot be signed",
            Self::WindowCertificateFailed => {
                "Too few committee members approved the request for the window"
            }
        }
    }

    /// The full `type` URI.
    pub fn type_uri(self) -> String {
        format!("{PROBLEM_BASE}{}", self.slug())
    }
}

/// One offending field of a malformed input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    /// JSON path (`signed_request`, `participants.nodes[1]`), query parameter or header name.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

/// A problem details object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Problem {
    /// Stable URI naming the cause.
    #[serde(rename = "type")]
    pub type_uri: String,
    /// Short summary of the cause.
    pub title: String,
    /// HTTP status.
    pub status: u16,
    /// What happened in this instance.
    pub detail: String,
    /// Offending fields (malformed input).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// Further members specific to the kind (`refusals`, `attempts`, `culprits`,
    /// `retry_after_ms`, `job_id`, …).
    #[serde(flatten)]
    pub extensions: Map<String, Value>,
}

impl Problem {
    /// A problem of `kind` with `detail`.
    pub fn new(kind: ProblemKind, detail: impl Into<String>) -> Self {
        Self {
            type_uri: kind.type_uri(),
            title: kind.title().into(),
            status: kind.status().as_u16(),
            detail: detail.into(),
            errors: Vec::new(),
            extensions: Map::new(),
        }
    }

    /// A malformed-input problem naming `field`.
    pub fn malformed(field: impl Into<String>, message: impl Into<String>) -> Self {
        let field = field.into();
        let message = message.into();
        let mut p = Self::new(ProblemKind::MalformedInput, format!("{field}: {message}"));
        p.errors.push(FieldError { field, message });
        p
    }

    /// An invalid-transaction problem from a PSBT refusal (`field: why`).
    pub fn invalid_transaction(message: impl Into<String>) -> Self {
        let message = message.into();
        let mut p = Self::new(ProblemKind::InvalidTransaction, message.clone());
        if let Some((field, why)) = message.split_once(": ") {
            p.errors.push(FieldError {
                field: field.into(),
                message: why.into(),
            });
        }
        p
    }

    /// Adds an extension member.
    pub fn with(mut self, name: &str, value: Value) -> Self {
        self.extensions.insert(name.into(), value);
        self
    }

    /// The kind, if the `type` is one of ours.
    pub fn kind(&self) -> Option<ProblemKind> {
        ProblemKind::ALL
            .into_iter()
            .find(|k| k.type_uri() == self.type_uri)
    }

    /// The HTTP status as a [`StatusCode`].
    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let retry = self
            .extensions
            .get("retry_after_ms")
            .and_then(Value::as_u64)
            .map(|ms| ms.div_ceil(1000).max(1));
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut resp = (status, body).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(PROBLEM_CONTENT_TYPE),
        );
        if let Some(secs) = retry {
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        resp
    }
}

/// JSON view of an attempt (ids as hex).
pub fn attempt_json(a: &Attempt) -> Value {
    json!({
        "signers": a.signers.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "outcome": a.outcome,
        "blamed": a.blamed.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "refused": a.refused.iter().map(|(n, r)| json!({"node": n.to_string(), "reason": r})).collect::<Vec<_>>(),
    })
}

fn attempts_json(attempts: &[Attempt]) -> Value {
    Value::Array(attempts.iter().map(attempt_json).collect())
}

impl From<&CoordinatorError> for Problem {
    fn from(e: &CoordinatorError) -> Self {
        let detail = e.to_string();
        match e {
            CoordinatorError::InvalidSpec(_) => Problem::new(ProblemKind::InvalidKeySpec, detail),
            CoordinatorError::NotEnoughSigners {
                available,
                needed,
                attempts,
            } => Problem::new(ProblemKind::NotEnoughSigners, detail)
                .with("available", json!(available))
                .with("needed", json!(needed))
                .with("attempts", attempts_json(attempts)),
            CoordinatorError::Refused { refusals, attempts } => {
                Problem::new(ProblemKind::PolicyRefused, detail)
                    .with(
                        "refusals",
                        Value::Array(
                            refusals
                                .iter()
                                .map(|(n, r)| json!({"node": n.to_string(), "reason": r}))
                                .collect(),
                        ),
                    )
                    .with("attempts", attempts_json(attempts))
            }
            CoordinatorError::DkgFailed { culprits, .. } => {
                Problem::new(ProblemKind::DkgFailed, detail).with(
                    "culprits",
                    json!(culprits.iter().map(ToString::to_string).collect::<Vec<_>>()),
                )
            }
            CoordinatorError::BadRequest(m) => Problem::malformed("signed_request", m.clone()),
            CoordinatorError::Transport(_) | CoordinatorError::Shutdown => {
                Problem::new(ProblemKind::Unavailable, detail)
            }
            CoordinatorError::Storage(_) | CoordinatorError::Config(_) => {
                Problem::new(ProblemKind::Internal, detail)
            }
            CoordinatorError::UnknownKey(_) => Problem::new(ProblemKind::UnknownKey, detail),
            CoordinatorError::BadClientSignature(_) => {
                Problem::new(ProblemKind::BadClientSignature, detail)
            }
            CoordinatorError::ExpiredRequest { .. } => {
                Problem::new(ProblemKind::ExpiredRequest, detail)
            }
            CoordinatorError::InvalidRound(_) => Problem::new(ProblemKind::InvalidRound, detail),
            CoordinatorError::UnknownRound(_) => Problem::new(ProblemKind::UnknownRound, detail),
            CoordinatorError::RoundConflict(_) => Problem::new(ProblemKind::RoundConflict, detail),
            CoordinatorError::InvalidOperation(_) => {
                Problem::new(ProblemKind::InvalidOperation, detail)
            }
            CoordinatorError::LifecycleRefused { refusals } => {
                Problem::new(ProblemKind::LifecycleRefused, detail).with(
                    "refusals",
                    Value::Array(
                        refusals
                            .iter()
                            .map(|(n, r)| json!({"node": n.to_string(), "reason": r}))
                            .collect(),
                    ),
                )
            }
            CoordinatorError::LifecycleFailed { culprits, .. } => {
                Problem::new(ProblemKind::LifecycleFailed, detail).with(
                    "culprits",
                    json!(culprits.iter().map(ToString::to_string).collect::<Vec<_>>()),
                )
            }
            CoordinatorError::KeyBusy(_) => {
                Problem::new(ProblemKind::KeyBusy, detail).with("retry_after_ms", json!(5000))
            }
            CoordinatorError::WindowCertificate {
                need,
                approved,
                refused,
                unanswered,
            } => Problem::new(ProblemKind::WindowCertificateFailed, detail)
                .with("need", json!(need))
                .with(
                    "approved",
                    json!(approved.iter().map(ToString::to_string).collect::<Vec<_>>()),
                )
                .with(
                    "refused",
                    Value::Array(
                        refused
                            .iter()
                            .map(|(n, r)| json!({"node": n.to_string(), "reason": r}))
                            .collect(),
                    ),
                )
                .with(
                    "unanswered",
                    json!(unanswered
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()),
                ),
            CoordinatorError::Busy(_) => {
                Problem::new(ProblemKind::Unavailable, detail).with("retry_after_ms", json!(1000))
            }
            #[allow(unreachable_patterns)]
            _ => Problem::new(ProblemKind::Internal, detail),
        }
    }
}

impl From<CoordinatorError> for Problem {
    fn from(e: CoordinatorError) -> Self {
        Self::from(&e)
    }
}
