//! Running the HTTP service.

use std::{future::Future, net::SocketAddr, sync::Arc};

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

/// Binds `http_addr` and serves the API until `shutdown` completes.
pub async fn serve<B: Backend>(
    backend: Arc<B>,
    store: Arc<Store>,
    settings: ServiceSettings,
    http_addr: SocketAddr,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), CoordinatorError> {
    let listener = TcpListener::bind(http_addr)
        .await
        .map_err(|e| CoordinatorError::Transport(format!("http_listen {http_addr}: {e}")))?;
    tracing::info!(addr = %http_addr, "coordinator HTTP API listening");
    serve_listener(backend, store, settings, listener, shutdown).await
}
