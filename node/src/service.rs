//! `quorate node`: loads the configuration, unseals the keystore (from an env var or
//! file, or through `POST /unseal` on the local admin address), serves `/health`
//! and `/metrics`, runs the daemon, and handles SIGTERM/SIGINT (graceful shutdown)
//! and SIGHUP (policy reload).

use std::sync::Arc;

use axum::{
    extract::State,
    http::StatusCode,
    routing::{get, post},
    Json, Router,
};
use serde_json::json;
use tokio::sync::{watch, Mutex};

use crate::{
    audit::{AuditKind, AuditLog},
    config::{NodeConfig, PassphraseConfig},
    daemon::{self, Control, NodeParts},
    keystore::{Keystore, Passphrase, SealedKeystore},
    metrics::Metrics,
    policy::{Policy, PolicyEngine},
    roster::Roster,
};

#[derive(Clone)]
struct AdminState {
    metrics: Metrics,
    status: Arc<Mutex<serde_json::Value>>,
    unseal: Arc<Mutex<Option<tokio::sync::oneshot::Sender<Passphrase>>>>,
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

async fn unseal(
    State(s): State<AdminState>,
    body: String,
) -> (StatusCode, Json<serde_json::Value>) {
    let Some(tx) = s.unseal.lock().await.take() else {
        return (
            StatusCode::CONFLICT,
            Json(json!({ "error": "not waiting for a passphrase" })),
        );
    };
    match Passphrase::new(body.trim_end_matches('\n').to_string()) {
        Ok(p) => {
            let _ = tx.send(p);
            (StatusCode::ACCEPTED, Json(json!({ "status": "unsealing" })))
        }
        Err(e) => {
            *s.unseal.lock().await = Some(tx);
            (
                StatusCode::BAD_REQUEST,
                Json(json!({ "error": e.to_string() })),
            )
        }
    }
}

/// Runs a node until SIGTERM/SIGINT. Returns an error (and does not sign) when
/// the keystore, roster, policy or audit log is unusable: fail closed.
pub async fn run(config: NodeConfig) -> Result<(), String> {
    let metrics = Metrics::default();
    let status = Arc::new(Mutex::new(json!({ "status": "sealed" })));
    let unseal_slot = Arc::new(Mutex::new(None));
    let admin_state = AdminState {
        metrics: metrics.clone(),
        status: status.clone(),
        unseal: unseal_slot.clone(),
    };
    let app = Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics_handler))
        .route("/unseal", post(unseal))
        .with_state(admin_state);
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
    let passphrase = match &config.passphrase {
        PassphraseConfig::Env(var) => Passphrase::from_env(var).map_err(|e| e.to_string())?,
        PassphraseConfig::File(path) => Passphrase::from_file(path).map_err(|e| e.to_string())?,
        PassphraseConfig::Admin => {
            let (tx, rx) = tokio::sync::oneshot::channel();
            *unseal_slot.lock().await = Some(tx);
            tracing::info!(admin = %config.admin, "sealed: waiting for POST /unseal");
            rx.await.map_err(|_| "unseal channel closed".to_string())?
        }
    };
    let keystore: Keystore = sealed.unseal(&passphrase).map_err(|e| e.to_string())?;
    drop(passphrase);
    let mut audit =
        AuditLog::open(&config.audit_log, keystore.identity()).map_err(|e| e.to_string())?;
    audit
        .append(
            AuditKind::Unsealed,
            json!({ "keystore": config.keystore.display().to_string() }),
        )
        .map_err(|e| format!("audit log unusable, refusing to run: {e}"))?;
    let roster =
        Roster::load(&config.roster, config.authority().as_ref()).map_err(|e| e.to_string())?;
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
