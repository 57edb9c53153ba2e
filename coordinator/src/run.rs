//! `quorate coordinator`: the engine on libp2p plus the HTTP API, from one config file.

use std::{future::Future, sync::Arc};

use crate::{
    config::CoordinatorConfig,
    engine::{Engine, EngineConfig, NettingOptions},
    error::CoordinatorError,
    service,
    store::{Store, StoreOptions},
};

/// Runs the coordinator until `shutdown` completes. Finished jobs survive restarts
/// (embedded store); jobs that were running are reported failed on the next start.
pub async fn run(
    config: CoordinatorConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), CoordinatorError> {
    // Settings first: a bad admin token or client list refuses to start before any
    // network endpoint is opened.
    let settings = config.service_settings()?;
    let identity = Arc::new(config.identity()?);
    let roster = quorate_protocol::roster::Roster::load(
        &config.roster,
        config.roster_authority_key()?.as_ref(),
    )
    .map_err(|e| CoordinatorError::Config(e.to_string()))?;
    let engine = Engine::spawn_netting(
        EngineConfig {
            identity,
            roster,
            listen: config.listen.clone(),
            session_timeout_ms: config.session_timeout_ms,
            dkg_timeout_ms: config.dkg_timeout_ms,
        },
        config.connections,
        NettingOptions {
            limits_timeout_ms: config.netting_limits_timeout_ms,
        },
    )?;
    std::fs::create_dir_all(&config.data_dir).map_err(|e| {
        CoordinatorError::Storage(format!("data_dir {}: {e}", config.data_dir.display()))
    })?;
    let store = Arc::new(Store::open_with(
        config.store_path(),
        StoreOptions::from(&config.limits),
    )?);
    engine.attach_store(store.clone()).await;
    let tls = config.tls_server_config()?;
    let result = service::serve(
        Arc::new(engine.clone()),
        store,
        settings,
        config.http_addr()?,
        tls,
        shutdown,
    )
    .await;
    engine.shutdown().await;
    result
}
