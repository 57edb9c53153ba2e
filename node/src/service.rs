//! `quorate node`: loads the configuration, unseals the keystore (from an env var or
//! file, or through `POST /unseal` on the local admin address), serves `/health`
//! and `/metrics`, runs the daemon, and handles SIGTERM/SIGINT (graceful shutdown)
//! and SIGHUP (policy reload).

use std::{
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    extract::State,
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use serde_json::json;
use tokio::sync::{mpsc, oneshot, watch, Mutex};

use crate::{
    audit::{AuditKind, AuditLog},
    config::{NodeConfig, PassphraseConfig},
    daemon::{self, Control, NodeParts},
    keystore::{Keystore, KeystoreError, Passphrase, SealedKeystore},
    metrics::Metrics,
    policy::{Policy, PolicyEngine},
    roster::Roster,
};

/// Longest delay between unseal attempts after repeated wrong passphrases.
pub const MAX_UNSEAL_BACKOFF: Duration = Duration::from_secs(300);

/// Bounds `/unseal` attempts: after the `n`th consecutive wrong passphrase the next
/// attempt is refused (429, `Retry-After`) for `min(2^(n-1) s, 300 s)`.
#[derive(Debug, Default, Clone)]
pub struct UnsealThrottle {
    failures: u32,
    not_before: Option<Instant>,
}

impl UnsealThrottle {
    /// `Err(wait)` while attempts are refused.
    pub fn check(&self, now: Instant) -> Result<(), Duration> {
        match self.not_before {
            Some(t) if t > now => Err(t - now),
            _ => Ok(()),
        }
    }

    /// Records a wrong passphrase at `now`; returns the delay before the next attempt.
    pub fn record_failure(&mut self, now: Instant) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let exp = self.failures.saturating_sub(1).min(16);
        let wait = Duration::from_secs(1u64 << exp).min(MAX_UNSEAL_BACKOFF);
        self.not_before = Some(now + wait);
        wait
    }

    /// Consecutive wrong passphrases so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

/// What one unseal attempt came to.
enum UnsealOutcome {
    Unsealed,
    /// Wrong; (consecutive failures, delay before the next attempt).
    WrongPassphrase(u32, Duration),
    /// Refused without trying: still inside the backoff (an attempt queued by a
    /// caller that did not wait for its answer).
    Throttled(Duration),
    /// Any other failure (corrupt keystore, weak KDF): the node stops, fail closed.
    Failed(String),
}

type Attempt = (Passphrase, oneshot::Sender<UnsealOutcome>);

#[derive(Default)]
struct UnsealGate {
    /// `Some` while the node waits for a passphrase.
    attempts: Option<mpsc::Sender<Attempt>>,
    /// Shared with the unseal loop, which records failures itself, so a caller that
    /// hangs up mid-attempt cannot skip the backoff.
    throttle: Arc<std::sync::Mutex<UnsealThrottle>>,
}

impl UnsealGate {
    fn throttle(&self) -> std::sync::MutexGuard<'_, UnsealThrottle> {
        // The throttle holds no invariant a panic could break: use it regardless.
        self.throttle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[derive(Clone)]
struct AdminState {
    metrics: Metrics,
    status: Arc<Mutex<serde_json::Value>>,
    unseal: Arc<Mutex<UnsealGate>>,
}

fn admin_router(state: AdminState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics_handler))
        .route("/unseal", post(unseal))
        .with_state(state)
}

async fn health(State(s): State<AdminState>) -> (StatusCode, Json<serde_json::Value>) {
    let status = s.status.lock().await.clone();
    let code = if status["status"] == "ok" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(status))
}

async fn metrics_handler(
    State(s): State<AdminState>,
) -> ([(&'static str, &'static str); 1], String) {
    (
        [(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.render(),
    )
}

fn retry_after(code: StatusCode, wait: Duration, body: serde_json::Value) -> Response {
    // Round up: a client that waits exactly Retry-After seconds must be let in.
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    (code, [(header::RETRY_AFTER, secs.to_string())], Json(body)).into_response()
}

fn too_many(wait: Duration) -> Response {
    retry_after(
        StatusCode::TOO_MANY_REQUESTS,
        wait,
        json!({ "error": "too many wrong passphrases; retry later" }),
    )
}

/// `POST /unseal`: one attempt at a time; a wrong passphrase answers 403 and the
/// node stays sealed, later attempts back off exponentially (429 + `Retry-After`).
///
/// # Security
/// The body is the passphrase; it is moved into a zeroizing [`Passphrase`] and
/// never logged. Attempts are throttled so the admin port cannot be used to guess
/// the passphrase quickly.
async fn unseal(State(s): State<AdminState>, body: String) -> Response {
    let body = zeroize::Zeroizing::new(body);
    // One attempt at a time: a second caller does not queue behind the KDF.
    let Ok(mut gate) = s.unseal.try_lock() else {
        return retry_after(
            StatusCode::TOO_MANY_REQUESTS,
            Duration::from_secs(1),
            json!({ "error": "an unseal attempt is in progress" }),
        );
    };
    let Some(tx) = gate.attempts.clone() else {
        return (
            StatusCode::CONFLICT,
            Json(json!({ "error": "not waiting for a passphrase" })),
        )
            .into_response();
    };
    let throttled = gate.throttle().check(Instant::now());
    if let Err(wait) = throttled {
        return too_many(wait);
    }
    let passphrase = match Passphrase::new(body.trim_end_matches('\n').to_string()) {
        Ok(p) => p,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({ "error": e.to_string() })),
            )
                .into_response()
        }
    };
    let (reply_tx, reply_rx) = oneshot::channel();
    if tx.send((passphrase, reply_tx)).await.is_err() {
        gate.attempts = None;
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "error": "the node is no longer waiting for a passphrase" })),
        )
            .into_response();
    }
    match reply_rx.await {
        Ok(UnsealOutcome::Unsealed) => {
            gate.attempts = None;
            (StatusCode::OK, Json(json!({ "status": "unsealed" }))).into_response()
        }
        Ok(UnsealOutcome::WrongPassphrase(failures, wait)) => retry_after(
            StatusCode::FORBIDDEN,
            wait,
            json!({
                "error": "wrong passphrase; the node stays sealed",
                "failures": failures,
                "retry_after_secs": wait.as_secs(),
            }),
        ),
        Ok(UnsealOutcome::Throttled(wait)) => too_many(wait),
        Ok(UnsealOutcome::Failed(reason)) => {
            gate.attempts = None;
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({ "error": reason })),
            )
                .into_response()
        }
        Err(_) => {
            gate.attempts = None;
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "error": "the node stopped while unsealing" })),
            )
                .into_response()
        }
    }
}

/// Waits for passphrases from `POST /unseal` until one unseals the keystore at
/// `path`. A wrong passphrase keeps waiting (the handler answers 403 and throttles);
/// any other failure is returned (fail closed).
///
/// # Security
/// Each passphrase is dropped (zeroized) after its attempt; Argon2id runs on a
/// blocking thread so the admin interface keeps answering.
async fn admin_unseal(
    gate: &Arc<Mutex<UnsealGate>>,
    path: &Path,
    mut sealed: SealedKeystore,
) -> Result<Keystore, String> {
    let (tx, mut rx) = mpsc::channel::<Attempt>(1);
    let throttle = {
        let mut g = gate.lock().await;
        g.attempts = Some(tx);
        g.throttle.clone()
    };
    let lock = |t: &std::sync::Mutex<UnsealThrottle>| {
        t.lock()
            .map(|g| g.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    };
    loop {
        let Some((passphrase, reply)) = rx.recv().await else {
            return Err("unseal channel closed".into());
        };
        // Checked here too: the handler's check may predate a failure still running.
        if let Err(wait) = lock(&throttle).check(Instant::now()) {
            let _ = reply.send(UnsealOutcome::Throttled(wait));
            continue;
        }
        let result = tokio::task::spawn_blocking(move || sealed.unseal(&passphrase))
            .await
            .map_err(|e| format!("unseal task failed: {e}"))?;
        match result {
            Ok(keystore) => {
                let _ = reply.send(UnsealOutcome::Unsealed);
                return Ok(keystore);
            }
            Err(KeystoreError::WrongPassphrase) => {
                // `unseal` consumed the handle (and released the file lock): reopen.
                match SealedKeystore::open(path) {
                    Ok(s) => sealed = s,
                    Err(e) => {
                        let msg = e.to_string();
                        let _ = reply.send(UnsealOutcome::Failed(msg.clone()));
                        return Err(msg);
                    }
                }
                let (failures, wait) = {
                    let mut t = throttle
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    let wait = t.record_failure(Instant::now());
                    (t.failures(), wait)
                };
                tracing::warn!(
                    failures,
                    retry_after_secs = wait.as_secs(),
                    "unseal: wrong passphrase; the node stays sealed"
                );
                let _ = reply.send(UnsealOutcome::WrongPassphrase(failures, wait));
            }
            Err(e) => {
                let msg = e.to_string();
                let _ = reply.send(UnsealOutcome::Failed(msg.clone()));
                return Err(msg);
            }
        }
    }
}

/// Runs a node until SIGTERM/SIGINT. Returns an error (and does not sign) when
/// the keystore, roster, policy or audit log is unusable: fail closed.
pub async fn run(config: NodeConfig) -> Result<(), String> {
    let metrics = Metrics::default();
    let status = Arc::new(Mutex::new(json!({ "status": "sealed" })));
    let unseal_gate = Arc::new(Mutex::new(UnsealGate::default()));
    let app = admin_router(AdminState {
        metrics: metrics.clone(),
        status: status.clone(),
        unseal: unseal_gate.clone(),
    });
    let listener = tokio::net::TcpListener::bind(config.admin)
        .await
        .map_err(|e| format!("cannot bind admin address {}: {e}", config.admin))?;
    let (admin_stop_tx, mut admin_stop_rx) = watch::channel(false);
    let admin = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = admin_stop_rx.changed().await;
            })
            .await
    });

    let sealed = SealedKeystore::open(&config.keystore).map_err(|e| e.to_string())?;
    let node_id = sealed.node_id();
    *status.lock().await = json!({ "status": "sealed", "node_id": node_id.to_string() });
    let keystore: Keystore = match &config.passphrase {
        PassphraseConfig::Env(var) => {
            let p = Passphrase::from_env(var).map_err(|e| e.to_string())?;
            sealed.unseal(&p).map_err(|e| e.to_string())?
        }
        PassphraseConfig::File(path) => {
            let p = Passphrase::from_file(path).map_err(|e| e.to_string())?;
            sealed.unseal(&p).map_err(|e| e.to_string())?
        }
        PassphraseConfig::Admin => {
            tracing::info!(admin = %config.admin, "sealed: waiting for POST /unseal");
            admin_unseal(&unseal_gate, &config.keystore, sealed).await?
        }
    };
    let mut audit =
        AuditLog::open_anchored(&config.audit_log, keystore.identity(), keystore.state())
            .map_err(|e| e.to_string())?;
    audit
        .append(
            AuditKind::Unsealed,
            json!({ "keystore": config.keystore.display().to_string() }),
        )
        .map_err(|e| format!("audit log unusable, refusing to run: {e}"))?;
    let roster =
        Roster::load(&config.roster, config.authority().as_ref()).map_err(|e| e.to_string())?;
    roster
        .accept_epoch(&keystore.state())
        .map_err(|e| e.to_string())?;
    let policy = Policy::from_file(&config.policy).map_err(|e| e.to_string())?;
    let listen = config
        .listen
        .iter()
        .map(|a| a.parse().map_err(|e| format!("listen address {a}: {e}")))
        .collect::<Result<Vec<_>, String>>()?;
    let handle = daemon::spawn(NodeParts {
        keystore,
        roster,
        policy: PolicyEngine::new(policy),
        policy_path: Some(config.policy.clone()),
        audit,
        listen,
        routing: config.routing,
        limits: config.limits,
        metrics,
    })?;
    *status.lock().await = json!({ "status": "ok", "node_id": node_id.to_string() });
    tracing::info!(node = %node_id, "node running");

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| e.to_string())?;
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|e| e.to_string())?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            _ = hup.recv() => { let _ = handle.control.send(Control::ReloadPolicy).await; }
        }
    }
    tracing::info!("signal received, shutting down");
    *status.lock().await = json!({ "status": "stopping", "node_id": node_id.to_string() });
    let result = handle.stop().await;
    let _ = admin_stop_tx.send(true);
    let _ = admin.await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keystore::KdfParams;
    use rand_chacha::{rand_core::SeedableRng, ChaCha20Rng};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// POSTs `body` to `path`; returns (status, Retry-After header, body).
    async fn post(
        addr: std::net::SocketAddr,
        path: &str,
        body: &str,
    ) -> (u16, Option<u64>, String) {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await.expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).await.expect("read");
        let status = out[9..12].parse().expect("status");
        let retry = out
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("retry-after: ")
                    .map(str::to_owned)
            })
            .map(|v| v.trim().parse().expect("seconds"));
        let body = out.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
        (status, retry, body)
    }

    #[test]
    fn unseal_backoff_doubles_and_is_capped() {
        let mut t = UnsealThrottle::default();
        let now = Instant::now();
        assert!(t.check(now).is_ok(), "the first attempt is free");
        let waits: Vec<u64> = (0..12).map(|_| t.record_failure(now).as_secs()).collect();
        assert_eq!(&waits[..6], &[1, 2, 4, 8, 16, 32]);
        assert_eq!(*waits.last().expect("some"), MAX_UNSEAL_BACKOFF.as_secs());
        assert!(t.check(now).is_err());
        assert!(t.check(now + MAX_UNSEAL_BACKOFF).is_ok());
    }

    /// A keystore with passphrase "right", an admin server and the unseal loop.
    async fn sealed_node(
        dir: &tempfile::TempDir,
    ) -> (
        std::net::SocketAddr,
        tokio::task::JoinHandle<Result<Keystore, String>>,
        quorate_protocol::NodeIdentity,
    ) {
        let path = dir.path().join("ks.redb");
        let id = quorate_protocol::NodeIdentity::generate(&mut ChaCha20Rng::seed_from_u64(1));
        drop(
            Keystore::init(
                &path,
                &Passphrase::new("right").expect("pass"),
                &id,
                KdfParams::insecure_for_tests(),
                &mut ChaCha20Rng::seed_from_u64(2),
            )
            .expect("init"),
        );
        let gate = Arc::new(Mutex::new(UnsealGate::default()));
        let app = admin_router(AdminState {
            metrics: Metrics::default(),
            status: Arc::new(Mutex::new(json!({ "status": "sealed" }))),
            unseal: gate.clone(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        let sealed = SealedKeystore::open(&path).expect("open");
        let waiter = {
            let gate = gate.clone();
            tokio::spawn(async move { admin_unseal(&gate, &path, sealed).await })
        };
        while gate.lock().await.attempts.is_none() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (addr, waiter, id)
    }

    #[tokio::test]
    async fn hanging_up_mid_attempt_does_not_skip_the_backoff() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (addr, waiter, _) = sealed_node(&dir).await;
        {
            let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
            s.write_all(b"POST /unseal HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nwrong")
                .await
                .expect("write");
            // Dropped without reading the answer.
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (code, retry, _) = post(addr, "/unseal", "right").await;
        assert_eq!((code, retry), (429, Some(1)), "the failure was counted");
        assert!(!waiter.is_finished());
    }

    #[tokio::test]
    async fn wrong_passphrase_answers_403_keeps_node_sealed_and_throttles() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (addr, waiter, id) = sealed_node(&dir).await;
        let (code, retry, body) = post(addr, "/unseal", "wrong\n").await;
        assert_eq!((code, retry), (403, Some(1)), "{body}");
        assert!(body.contains("wrong passphrase"), "{body}");
        assert!(
            !waiter.is_finished(),
            "a wrong passphrase does not stop the node"
        );
        // Even the right passphrase waits out the backoff.
        let (code, retry, _) = post(addr, "/unseal", "right").await;
        assert_eq!(code, 429);
        assert_eq!(retry, Some(1));
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let (code, retry, _) = post(addr, "/unseal", "still wrong").await;
        assert_eq!((code, retry), (403, Some(2)), "the delay doubles");
        tokio::time::sleep(Duration::from_millis(2100)).await;
        let (code, _, body) = post(addr, "/unseal", "right\n").await;
        assert_eq!(code, 200, "{body}");
        let ks = waiter.await.expect("join").expect("unsealed");
        assert_eq!(ks.node_id(), id.node_id());
        let (code, _, _) = post(addr, "/unseal", "right").await;
        assert_eq!(code, 409, "unsealed: not waiting any more");
    }
}
