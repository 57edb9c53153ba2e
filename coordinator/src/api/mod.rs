//! The HTTP API (axum): keys, signature jobs, netting rounds, health, metrics and the
//! OpenAPI document.
//!
//! Every error is an `application/problem+json` [`Problem`] with a stable `type` URI.

// A `Problem` is built at most once per failed HTTP request and becomes the response;
// boxing it would only add an allocation.
#![allow(clippy::result_large_err)]

pub mod auth;
pub mod lifecycle;
pub(crate) mod metrics;
pub mod model;
pub mod netting;
pub mod openapi;
pub mod problem;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    body::Bytes,
    extract::{
        rejection::QueryRejection, DefaultBodyLimit, FromRequest, MatchedPath, Path, Query,
        Request, State,
    },
    http::{header, HeaderMap, HeaderValue, Method, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
    Router,
};
use quorate_protocol::{request::SignedRequest, KeyId};
use rand_core::{OsRng, RngCore};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use self::{
    auth::{token_matches, NonceCache, NonceError, RateLimiter},
    metrics::{JobLabels, Metrics, RequestLabels},
    model::{CreateKeyBody, Health, Job, JobResult, JobStatus, KeyList, KeyView, SignBody},
    problem::{Problem, ProblemKind},
};
use crate::{
    backend::{now_ms, Backend},
    settings::ServiceSettings,
    store::{Created, Store},
    types::KeyRecord,
};

/// Longest accepted `Idempotency-Key` header.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;
/// `timeout_ms` used for `wait=true` when none is given.
pub const DEFAULT_WAIT_MS: u64 = 30_000;

/// Shared state of the API.
pub struct ApiState<B> {
    backend: Arc<B>,
    store: Arc<Store>,
    settings: ServiceSettings,
    metrics: Metrics,
    nonces: Mutex<NonceCache>,
    limiter: Mutex<RateLimiter>,
    waiters: Mutex<HashMap<String, watch::Receiver<Option<Job>>>>,
    /// Idempotency scopes being admitted right now (see [`ScopeClaim`]).
    claims: ClaimTable,
    /// Group commit of finished jobs (`None` if its thread could not start: each
    /// job is then stored on its own).
    writer: Option<crate::store::JobWriter>,
}

type ClaimTable = Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>;

/// Longest a request waits for an identical one (same client and Idempotency-Key)
/// to finish admission. Admission does not wait for signing, so this is generous.
const CLAIM_WAIT: Duration = Duration::from_secs(10);

/// Exclusive claim of an idempotency scope during admission: the scope is bound to
/// a job *before* the request's nonce is consumed, and a concurrent identical retry
/// waits here, then finds the binding and answers with the same job instead of
/// `replayed-request`.
struct ScopeClaim<'a> {
    table: &'a ClaimTable,
    scope: String,
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

impl<'a> ScopeClaim<'a> {
    async fn acquire(table: &'a ClaimTable, scope: &str) -> Result<Self, Problem> {
        let lock = table
            .lock()
            .map_err(|_| Problem::new(ProblemKind::Internal, "claim table poisoned"))?
            .entry(scope.to_owned())
            .or_default()
            .clone();
        let guard = tokio::time::timeout(CLAIM_WAIT, lock.lock_owned())
            .await
            .map_err(|_| {
                Problem::new(
                    ProblemKind::Unavailable,
                    "a request with this Idempotency-Key is still being admitted; retry",
                )
            })?;
        Ok(Self {
            table,
            scope: scope.to_owned(),
            _guard: guard,
        })
    }
}

impl Drop for ScopeClaim<'_> {
    fn drop(&mut self) {
        if let Ok(mut t) = self.table.lock() {
            // The table and this claim's guard hold one reference each; more means
            // someone is waiting, and they will clean up after themselves.
            if t.get(&self.scope)
                .is_some_and(|l| Arc::strong_count(l) <= 2)
            {
                t.remove(&self.scope);
            }
        }
    }
}

impl<B> core::fmt::Debug for ApiState<B> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ApiState")
            .field("clients", &self.settings.clients.len())
            .finish_non_exhaustive()
    }
}

impl<B: Backend> ApiState<B> {
    /// State over a backend, a store and service settings.
    pub fn new(backend: Arc<B>, store: Arc<Store>, settings: ServiceSettings) -> Self {
        let cap = settings.limits.nonce_cache;
        let per_client = settings.limits.nonce_cache_per_client;
        let writer = crate::store::JobWriter::spawn(&store)
            .inspect_err(|e| tracing::warn!(error = %e, "finished jobs are stored one by one"))
            .ok();
        Self {
            writer,
            backend,
            store,
            settings,
            metrics: Metrics::new(),
            nonces: Mutex::new(NonceCache::new(cap, per_client)),
            limiter: Mutex::new(RateLimiter::default()),
            waiters: Mutex::new(HashMap::new()),
            claims: Mutex::new(HashMap::new()),
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }
}

/// Builds the router over `state`.
pub fn router<B: Backend>(state: Arc<ApiState<B>>) -> Router {
    let limit = state.settings.limits.max_body_bytes;
    Router::new()
        .route("/v1/keys", post(create_key::<B>).get(list_keys::<B>))
        .route("/v1/keys/{id}", get(get_key::<B>))
        .route("/v1/keys/{id}/signatures", post(sign::<B>))
        .route("/v1/keys/{id}/refresh", post(lifecycle::refresh::<B>))
        .route("/v1/keys/{id}/reshare", post(lifecycle::reshare::<B>))
        .route("/v1/keys/{id}/repair", post(lifecycle::repair::<B>))
        .route("/v1/jobs/{id}", get(get_job::<B>))
        .route("/v1/netting/rounds", post(netting::create_round::<B>))
        .route("/v1/netting/rounds/{id}", get(netting::get_round::<B>))
        .route(
            "/v1/netting/rounds/{id}/bundles",
            post(netting::submit_bundle::<B>)
                .layer(DefaultBodyLimit::max(netting::BUNDLE_BODY_LIMIT)),
        )
        .route(
            "/v1/netting/rounds/{id}/close",
            post(netting::close_round::<B>),
        )
        .route(
            "/v1/netting/rounds/{id}/results/{party}",
            get(netting::party_result::<B>),
        )
        .route(
            "/v1/netting/rounds/{id}/settlement",
            get(netting::settlement::<B>),
        )
        .route("/health", get(health::<B>))
        .route("/metrics", get(metrics_text::<B>))
        .route("/openapi.json", get(openapi_doc))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(state.clone(), track::<B>))
        .with_state(state)
}

async fn track<B: Backend>(
    State(state): State<Arc<ApiState<B>>>,
    req: Request,
    next: Next,
) -> Response {
    let route = route_label(req.extensions().get::<MatchedPath>());
    let method = method_label(req.method());
    let resp = next.run(req).await;
    state
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            method: method.into(),
            route: route.into(),
            status: resp.status().as_u16(),
        })
        .inc();
    resp
}

/// Route templates of the router: the only `route` label values besides `unmatched`.
pub(crate) const ROUTES: [&str; 16] = [
    "/v1/keys",
    "/v1/keys/{id}",
    "/v1/keys/{id}/signatures",
    "/v1/keys/{id}/refresh",
    "/v1/keys/{id}/reshare",
    "/v1/keys/{id}/repair",
    "/v1/jobs/{id}",
    "/v1/netting/rounds",
    "/v1/netting/rounds/{id}",
    "/v1/netting/rounds/{id}/bundles",
    "/v1/netting/rounds/{id}/close",
    "/v1/netting/rounds/{id}/results/{party}",
    "/v1/netting/rounds/{id}/settlement",
    "/health",
    "/metrics",
    "/openapi.json",
];

/// The `route` label: a route template, never a raw path (bounded label set).
fn route_label(matched: Option<&MatchedPath>) -> &'static str {
    let Some(m) = matched else {
        return "unmatched";
    };
    ROUTES
        .iter()
        .find(|r| **r == m.as_str())
        .copied()
        .unwrap_or("unmatched")
}

/// The `method` label: a standard method, or `other` (a client chooses the method,
/// so its raw text would let anyone add series).
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

fn json_response<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response(),
        Err(e) => {
            Problem::new(ProblemKind::Internal, format!("response encoding: {e}")).into_response()
        }
    }
}

/// A JSON body, parsed with the path of the offending field in errors, plus its raw bytes.
pub struct JsonBody<T> {
    /// The parsed value.
    pub value: T,
    /// The raw body.
    pub raw: Bytes,
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json_ct = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|ct| {
                let essence = ct
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase();
                essence == "application/json" || essence.ends_with("+json")
            })
            .unwrap_or(false);
        if !json_ct {
            return Err(Problem::new(
                ProblemKind::UnsupportedMediaType,
                "expected Content-Type: application/json",
            ));
        }
        let raw = Bytes::from_request(req, state).await.map_err(|r| {
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                Problem::new(ProblemKind::PayloadTooLarge, r.body_text())
            } else {
                Problem::malformed("body", r.body_text())
            }
        })?;
        let mut de = serde_json::Deserializer::from_slice(&raw);
        let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." || path.is_empty() {
                "body".to_owned()
            } else {
                path
            };
            Problem::malformed(field, e.inner().to_string())
        })?;
        de.end()
            .map_err(|e| Problem::malformed("body", e.to_string()))?;
        Ok(Self { value, raw })
    }
}

async fn not_found() -> Problem {
    Problem::new(ProblemKind::NotFound, "no such route; see /openapi.json")
}

async fn method_not_allowed(method: Method) -> Problem {
    Problem::new(
        ProblemKind::MethodNotAllowed,
        format!("method {method} is not allowed on this route; see /openapi.json"),
    )
}

async fn openapi_doc() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        openapi::OPENAPI_JSON,
    )
        .into_response()
}

async fn health<B: Backend>(State(state): State<Arc<ApiState<B>>>) -> Response {
    let keys = match state.store.keys() {
        Ok(k) => k.len(),
        Err(e) => return Problem::from(e).into_response(),
    };
    let pending = state.waiters.lock().map(|w| w.len()).unwrap_or(0);
    let connected_nodes = state.backend.connected_nodes().await;
    json_response(
        StatusCode::OK,
        &Health {
            status: "ok".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            keys,
            pending_jobs: pending,
            connected_nodes,
        },
    )
}

async fn metrics_text<B: Backend>(State(state): State<Arc<ApiState<B>>>) -> Response {
    state
        .metrics
        .sync_relays_dropped(state.backend.relays_dropped());
    state
        .metrics
        .sync_signer_sessions(&state.backend.signer_sessions());
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        )],
        state.metrics.encode(),
    )
        .into_response()
}

fn check_admin(settings: &ServiceSettings, headers: &HeaderMap) -> Result<(), Problem> {
    // An empty token is treated as none: it must never match an empty presented one.
    let Some(expected) = settings
        .admin_token
        .as_deref()
        .filter(|t| !t.trim().is_empty())
    else {
        return Err(Problem::new(
            ProblemKind::Unauthorized,
            "no admin token is configured on this coordinator; key creation is disabled",
        ));
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        Some(t) if !t.is_empty() && token_matches(t, expected) => Ok(()),
        Some(_) => Err(Problem::new(
            ProblemKind::Unauthorized,
            "admin token is wrong",
        )),
        None => Err(Problem::new(
            ProblemKind::Unauthorized,
            "expected Authorization: Bearer <admin token>",
        )),
    }
}

async fn create_key<B: Backend>(
    State(state): State<Arc<ApiState<B>>>,
    headers: HeaderMap,
    body: Result<JsonBody<CreateKeyBody>, Problem>,
) -> Result<Response, Problem> {
    check_admin(&state.settings, &headers)?;
    let body = body?.value;
    let spec = body
        .to_spec()
        .map_err(|(field, msg)| Problem::malformed(field, msg))?;
    let started = Instant::now();
    let record = state
        .backend
        .create_key(spec)
        .await
        .map_err(Problem::from)?;
    state
        .metrics
        .dkg_seconds
        .observe(started.elapsed().as_secs_f64());
    state.store.put_key(&record).map_err(Problem::from)?;
    let view = KeyView::from_record(&record);
    let mut resp = json_response(StatusCode::CREATED, &view);
    if let Ok(loc) = HeaderValue::from_str(&format!("/v1/keys/{}", view.key_id)) {
        resp.headers_mut().insert(header::LOCATION, loc);
    }
    Ok(resp)
}

async fn list_keys<B: Backend>(State(state): State<Arc<ApiState<B>>>) -> Result<Response, Problem> {
    let keys = state.store.keys().map_err(Problem::from)?;
    Ok(json_response(
        StatusCode::OK,
        &KeyList {
            keys: keys.iter().map(KeyView::from_record).collect(),
        },
    ))
}

fn parse_key_id(id: &str) -> Result<KeyId, Problem> {
    KeyId::from_hex(id).map_err(|e| Problem::malformed("id", e.to_string()))
}

fn load_key<B: Backend>(state: &ApiState<B>, key_id: &KeyId) -> Result<KeyRecord, Problem> {
    state
        .store
        .key(key_id)
        .map_err(Problem::from)?
        .ok_or_else(|| Problem::new(ProblemKind::UnknownKey, format!("no key {key_id}")))
}

async fn get_key<B: Backend>(
    State(state): State<Arc<ApiState<B>>>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let key_id = parse_key_id(&id)?;
    let record = load_key(&state, &key_id)?;
    Ok(json_response(
        StatusCode::OK,
        &KeyView::from_record(&record),
    ))
}

async fn get_job<B: Backend>(
    State(state): State<Arc<ApiState<B>>>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let mut b = [0u8; 16];
    hex::decode_to_slice(&id, &mut b)
        .map_err(|_| Problem::malformed("id", "a job id is 16 bytes of hex"))?;
    let job = state
        .store
        .job(&id.to_ascii_lowercase())
        .map_err(Problem::from)?
        .ok_or_else(|| Problem::new(ProblemKind::NotFound, format!("no job {id}")))?;
    Ok(json_response(StatusCode::OK, &job))
}

/// Query of `POST /v1/keys/{id}/signatures`.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignQuery {
    /// Wait for the result (up to `timeout_ms`).
    #[serde(default)]
    pub wait: bool,
    /// How long to wait, in ms (capped by the configured `max_wait_ms`).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

fn job_location(id: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!("/v1/jobs/{id}")).ok()
}

fn job_response(job: &Job) -> Response {
    let mut resp = match job.status {
        JobStatus::Pending => json_response(StatusCode::ACCEPTED, job),
        JobStatus::Succeeded => json_response(StatusCode::OK, job),
        JobStatus::Failed => match &job.problem {
            Some(p) => p.clone().with("job_id", json!(job.id)).into_response(),
            None => json_response(StatusCode::OK, job),
        },
    };
    if let Some(loc) = job_location(&job.id) {
        resp.headers_mut().insert(header::LOCATION, loc);
    }
    resp
}

fn reject<B>(state: &ApiState<B>, reason: &str, p: Problem) -> Problem {
    state.metrics.reject(reason);
    p
}

async fn sign<B: Backend>(
    State(state): State<Arc<ApiState<B>>>,
    Path(id): Path<String>,
    query: Result<Query<SignQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Result<JsonBody<SignBody>, Problem>,
) -> Result<Response, Problem> {
    let key_id = parse_key_id(&id)?;
    let Query(query) = query.map_err(|r| Problem::malformed("query", r.body_text()))?;
    let body = body?;
    let bytes = hex::decode(body.value.signed_request.trim())
        .map_err(|e| Problem::malformed("signed_request", format!("not hex: {e}")))?;
    let signed = SignedRequest::decode(&bytes)
        .map_err(|e| Problem::malformed("signed_request", e.to_string()))?;
    if signed.request.key_id != key_id {
        return Err(Problem::malformed(
            "signed_request",
            format!(
                "the request is for key {}, but the path names key {key_id}",
                signed.request.key_id
            ),
        ));
    }
    let idem_key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => {
            let s = v
                .to_str()
                .ok()
                .filter(|s| !s.is_empty() && s.len() <= MAX_IDEMPOTENCY_KEY_LEN)
                .ok_or_else(|| {
                    Problem::malformed("Idempotency-Key", "1 to 255 visible ASCII characters")
                })?;
            Some(s.to_owned())
        }
    };
    let record = load_key(&state, &key_id)?;
    signed
        .request
        .validate()
        .map_err(|e| Problem::malformed("signed_request", e.to_string()))?;
    signed.verify_client().map_err(|e| {
        reject(
            &state,
            "bad_signature",
            Problem::new(ProblemKind::BadClientSignature, e.to_string()),
        )
    })?;
    let client_key = signed.request.client;
    let client = state
        .settings
        .clients
        .get(&client_key)
        .cloned()
        .ok_or_else(|| {
            reject(
                &state,
                "unregistered",
                Problem::new(
                    ProblemKind::UnregisteredClient,
                    format!("client key {} is not registered", hex::encode(client_key)),
                ),
            )
        })?;
    let client_hex = hex::encode(client_key);
    let body_hash = hex::encode(Sha256::digest(&bytes));
    let scope = idem_key.as_ref().map(|k| format!("{client_hex}:{k}"));

    // Claim the idempotency scope before anything is consumed (rate token, nonce):
    // an identical retry, concurrent or later, gets the job the first one created.
    let claim = match &scope {
        Some(scope) => Some(ScopeClaim::acquire(&state.claims, scope).await?),
        None => None,
    };
    // An idempotent retry returns the job the first request created.
    if let Some(scope) = &scope {
        if let Some(rec) = state.store.idempotency(scope).map_err(Problem::from)? {
            // Release before a possible wait, so further retries are not held up.
            drop(claim);
            return existing_job(&state, &rec, &body_hash, query).await;
        }
    }

    let wait = state
        .limiter
        .lock()
        .map_err(|_| Problem::new(ProblemKind::Internal, "rate limiter poisoned"))?
        .take(client_key, client.requests_per_minute, Instant::now());
    if let Err(ms) = wait {
        return Err(reject(
            &state,
            "rate_limited",
            Problem::new(
                ProblemKind::RateLimited,
                format!(
                    "client {} may send {} signature requests per minute",
                    client.name, client.requests_per_minute
                ),
            )
            .with("retry_after_ms", json!(ms)),
        ));
    }
    // A PSBT is parsed here too (after the client is known and within its rate):
    // nodes would refuse what does not parse, each naming the same field. Off the
    // async threads: a 60 KiB PSBT of 256 tweaked inputs takes milliseconds.
    let parsed = {
        let (request, public) = (signed.request.clone(), record.public.clone());
        tokio::task::spawn_blocking(move || request.targets(&public).map(|_| ()))
            .await
            .map_err(|e| Problem::new(ProblemKind::Internal, e.to_string()))?
    };
    parsed.map_err(|e| {
        let detail = match e {
            quorate_protocol::ProtocolError::InvalidRequest(m) => m,
            other => other.to_string(),
        };
        reject(
            &state,
            "invalid_transaction",
            Problem::invalid_transaction(detail),
        )
    })?;

    let now = now_ms();
    if signed.request.expires_at_ms <= now {
        return Err(reject(
            &state,
            "expired",
            Problem::new(
                ProblemKind::ExpiredRequest,
                format!(
                    "the request expired at {} ms; now is {now} ms",
                    signed.request.expires_at_ms
                ),
            ),
        ));
    }
    let max_life = state.settings.limits.max_request_lifetime_ms;
    if signed.request.expires_at_ms > now.saturating_add(max_life) {
        return Err(reject(
            &state,
            "expiry_too_far",
            Problem::malformed(
                "signed_request.expires_at_ms",
                format!("at most {max_life} ms in the future"),
            ),
        ));
    }
    let nonce = signed.request.nonce;
    let seen = state
        .nonces
        .lock()
        .map_err(|_| Problem::new(ProblemKind::Internal, "nonce cache poisoned"))?
        .check_and_insert(client_key, nonce, signed.request.expires_at_ms, now);
    match seen {
        Ok(()) => {}
        Err(NonceError::Replayed) => {
            return Err(reject(
                &state,
                "replayed",
                Problem::new(
                    ProblemKind::ReplayedRequest,
                    format!(
                        "nonce {} was already used by this client; sign a new request \
                         (or resend with the same Idempotency-Key to get the first job)",
                        hex::encode(nonce)
                    ),
                ),
            ))
        }
        Err(NonceError::ClientQuota { live, free_at_ms }) => {
            return Err(reject(
                &state,
                "nonce_quota",
                Problem::new(
                    ProblemKind::RateLimited,
                    format!(
                        "client {} has {live} live requests in the replay cache, its quota \
                         (limits.nonce_cache_per_client); retry when one expires",
                        client.name
                    ),
                )
                .with("quota", json!("limits.nonce_cache_per_client"))
                .with(
                    "retry_after_ms",
                    json!(free_at_ms.saturating_sub(now).max(1)),
                ),
            ))
        }
        Err(NonceError::Full) => {
            return Err(reject(
                &state,
                "nonce_cache_full",
                Problem::new(
                    ProblemKind::RateLimited,
                    "too many live requests; retry later",
                )
                .with("retry_after_ms", json!(1000)),
            ))
        }
    }

    let mut id_bytes = [0u8; 16];
    OsRng.fill_bytes(&mut id_bytes);
    let job = Job {
        id: hex::encode(id_bytes),
        key_id: key_id.to_string(),
        client: client_hex,
        request_hash: hex::encode(signed.request.hash()),
        messages: signed.request.body.len(),
        status: JobStatus::Pending,
        created_at_ms: now,
        finished_at_ms: None,
        result: None,
        problem: None,
    };
    // The store syncs its write: off the async threads.
    let created = {
        let (store, job, scope, hash) = (
            state.store.clone(),
            job.clone(),
            scope.clone(),
            body_hash.clone(),
        );
        tokio::task::spawn_blocking(move || {
            store.create_job(&job, scope.as_deref().map(|s| (s, hash.as_str())))
        })
        .await
        .unwrap_or_else(|e| Err(crate::error::CoordinatorError::Storage(e.to_string())))
    };
    match created {
        Ok(Created::New) => {}
        Ok(Created::Existing(rec)) => {
            // Lost a race with an identical idempotent request.
            if let Ok(mut n) = state.nonces.lock() {
                n.remove(client_key, nonce);
            }
            drop(claim);
            return existing_job(&state, &rec, &body_hash, query).await;
        }
        Ok(Created::QuotaExceeded { live }) => {
            if let Ok(mut n) = state.nonces.lock() {
                n.remove(client_key, nonce);
            }
            return Err(reject(
                &state,
                "idempotency_quota",
                Problem::new(
                    ProblemKind::RateLimited,
                    format!(
                        "client {} holds {live} live idempotency keys, its quota \
                         (limits.idempotency_keys_per_client); retry without an \
                         Idempotency-Key or when older keys expire",
                        client.name
                    ),
                )
                .with("quota", json!("limits.idempotency_keys_per_client"))
                .with("retry_after_ms", json!(60_000)),
            ));
        }
        Err(e) => {
            if let Ok(mut n) = state.nonces.lock() {
                n.remove(client_key, nonce);
            }
            return Err(Problem::from(e));
        }
    }
    // The scope is bound now; identical retries find the binding.
    drop(claim);
    let rx = spawn_job(state.clone(), job.clone(), record, signed)?;
    if query.wait {
        return Ok(wait_for(&state, rx, &job, query).await);
    }
    Ok(job_response(&job))
}

async fn existing_job<B: Backend>(
    state: &Arc<ApiState<B>>,
    rec: &crate::store::IdempotencyRecord,
    body_hash: &str,
    query: SignQuery,
) -> Result<Response, Problem> {
    if rec.body_hash != body_hash {
        return Err(reject(
            state,
            "idempotency_conflict",
            Problem::new(
                ProblemKind::IdempotencyConflict,
                "this Idempotency-Key was used with a different request body",
            )
            .with("job_id", json!(rec.job_id)),
        ));
    }
    let job = state
        .store
        .job(&rec.job_id)
        .map_err(Problem::from)?
        .ok_or_else(|| {
            Problem::new(ProblemKind::Internal, "idempotency key names a missing job")
        })?;
    let rx = state
        .waiters
        .lock()
        .ok()
        .and_then(|w| w.get(&job.id).cloned());
    match rx {
        Some(rx) if query.wait && job.status == JobStatus::Pending => {
            Ok(wait_for(state, rx, &job, query).await)
        }
        _ => Ok(job_response(&job)),
    }
}

async fn wait_for<B: Backend>(
    state: &ApiState<B>,
    mut rx: watch::Receiver<Option<Job>>,
    job: &Job,
    query: SignQuery,
) -> Response {
    let ms = query
        .timeout_ms
        .unwrap_or(DEFAULT_WAIT_MS)
        .min(state.settings.limits.max_wait_ms);
    let done = tokio::time::timeout(Duration::from_millis(ms), rx.wait_for(Option::is_some)).await;
    match done {
        Ok(Ok(finished)) => match finished.as_ref() {
            Some(j) => job_response(j),
            None => job_response(job),
        },
        // Timed out, or the task ended without reporting: answer from the store.
        _ => match state.store.job(&job.id) {
            Ok(Some(j)) => job_response(&j),
            _ => job_response(job),
        },
    }
}

fn spawn_job<B: Backend>(
    state: Arc<ApiState<B>>,
    mut job: Job,
    record: KeyRecord,
    signed: SignedRequest,
) -> Result<watch::Receiver<Option<Job>>, Problem> {
    let (tx, rx) = watch::channel(None);
    state
        .waiters
        .lock()
        .map_err(|_| Problem::new(ProblemKind::Internal, "job table poisoned"))?
        .insert(job.id.clone(), rx.clone());
    state.metrics.pending.inc();
    tokio::spawn(async move {
        let started = Instant::now();
        let request = signed.request.clone();
        let outcome = state.backend.sign(record, signed).await;
        state
            .metrics
            .signing_seconds
            .observe(started.elapsed().as_secs_f64());
        job.finished_at_ms = Some(now_ms());
        let label = match outcome {
            Ok(result) => match JobResult::of(&result, &request) {
                Ok(r) => {
                    job.status = JobStatus::Succeeded;
                    job.result = Some(r);
                    "succeeded".to_owned()
                }
                Err(e) => {
                    tracing::error!(job = %job.id, error = %e, "signed, but the PSBT could not be finished");
                    job.status = JobStatus::Failed;
                    job.problem = Some(Problem::new(
                        ProblemKind::Internal,
                        format!("every input was signed but the PSBT could not be finished: {e}"),
                    ));
                    "internal".to_owned()
                }
            },
            Err(e) => {
                let problem = Problem::from(&e);
                let label = problem
                    .kind()
                    .map(|k| k.slug().to_owned())
                    .unwrap_or_else(|| "failed".into());
                job.status = JobStatus::Failed;
                job.problem = Some(problem);
                label
            }
        };
        let stored = match &state.writer {
            Some(w) => w.put(job.clone()).await,
            None => state.store.put_job(&job),
        };
        if let Err(e) = stored {
            tracing::error!(job = %job.id, error = %e, "could not store finished job");
        }
        state
            .metrics
            .jobs
            .get_or_create(&JobLabels { outcome: label })
            .inc();
        state.metrics.pending.dec();
        let id = job.id.clone();
        let _ = tx.send(Some(job));
        if let Ok(mut w) = state.waiters.lock() {
            w.remove(&id);
        }
    });
    Ok(rx)
}
