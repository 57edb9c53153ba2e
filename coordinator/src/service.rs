//! Running the HTTP service.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use tokio::net::TcpListener;

pub use crate::settings::ServiceSettings;
use crate::{
    api::{self, ApiState},
    backend::Backend,
    error::CoordinatorError,
    store::Store,
};

/// The API router over a backend, a store and settings (what tests mount).
pub fn router<B: Backend>(
    backend: Arc<B>,
    store: Arc<Store>,
    settings: ServiceSettings,
) -> axum::Router {
    api::router(Arc::new(ApiState::new(backend, store, settings)))
}

/// Serves the API on an already bound listener until `shutdown` completes.
pub async fn serve_listener<B: Backend>(
    backend: Arc<B>,
    store: Arc<Store>,
    settings: ServiceSettings,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), CoordinatorError> {
    let app = router(backend, store, settings);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| CoordinatorError::Transport(format!("http server: {e}")))
}

/// Serves the API over TLS on an already bound listener until `shutdown` completes
/// (then in-flight requests get up to 10 s to finish).
pub async fn serve_listener_tls<B: Backend>(
    backend: Arc<B>,
    store: Arc<Store>,
    settings: ServiceSettings,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), CoordinatorError> {
    let app = router(backend, store, settings);
    let listener = listener
        .into_std()
        .map_err(|e| CoordinatorError::Transport(format!("http listener: {e}")))?;
    let handle = axum_server::Handle::new();
    let stopper = handle.clone();
    let stop = tokio::spawn(async move {
        shutdown.await;
        stopper.graceful_shutdown(Some(Duration::from_secs(10)));
    });
    let result = axum_server::from_tcp_rustls(
        listener,
        axum_server::tls_rustls::RustlsConfig::from_config(tls),
    )
    .handle(handle)
    .serve(app.into_make_service())
    .await
    .map_err(|e| CoordinatorError::Transport(format!("https server: {e}")));
    stop.abort();
    result
}

/// Binds `http_addr` and serves the API until `shutdown` completes: over TLS when
/// `tls` is set, plain HTTP otherwise.
pub async fn serve<B: Backend>(
    backend: Arc<B>,
    store: Arc<Store>,
    settings: ServiceSettings,
    http_addr: SocketAddr,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), CoordinatorError> {
    let listener = TcpListener::bind(http_addr)
        .await
        .map_err(|e| CoordinatorError::Transport(format!("http_listen {http_addr}: {e}")))?;
    match tls {
        Some(tls) => {
            tracing::info!(addr = %http_addr, "coordinator HTTPS API listening (TLS)");
            serve_listener_tls(backend, store, settings, listener, tls, shutdown).await
        }
        None => {
            if !http_addr.ip().is_loopback() {
                tracing::warn!(addr = %http_addr, "coordinator HTTP API listening WITHOUT TLS on a non-loopback address: configure [tls]");
            } else {
                tracing::info!(addr = %http_addr, "coordinator HTTP API listening (plain HTTP)");
            }
            serve_listener(backend, store, settings, listener, shutdown).await
        }
    }
}
