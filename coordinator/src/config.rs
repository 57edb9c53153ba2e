//! `coordinator.toml`: the coordinator's configuration.
//!
//! ```toml
//! # 64 bytes hex: Ed25519 seed ‖ X25519 secret of the coordinator's libp2p/protocol
//! # identity. This is NOT a key share: the coordinator never holds key material; the
//! # identity only authenticates the coordinator's protocol messages to nodes.
//! identity_file = "coordinator.identity"
//! roster = "roster.toml"
//! roster_authority = "<32-byte Ed25519 public key hex>"   # optional
//! listen = ["/ip4/0.0.0.0/tcp/7100"]                      # libp2p
//! http_listen = "127.0.0.1:8080"
//! admin_token_env = "QUORATE_ADMIN_TOKEN"                  # or admin_token = "…"
//! data_dir = "coordinator-data"
//! session_timeout_ms = 30000
//! dkg_timeout_ms = 60000                  # also: a netting close waits this for outputs
//! netting_limits_timeout_ms = 120000      # one limit-check attempt (MPC, king = coordinator)
//!
//! [limits]
//! max_body_bytes = 262144
//! max_wait_ms = 60000
//! max_request_lifetime_ms = 3600000
//! nonce_cache = 100000
//! nonce_cache_per_client = 10000
//! idempotency_keys_per_client = 100000
//! idempotency_retention_ms = 86400000    # 24 h
//! job_retention_ms = 604800000           # 7 days (finished jobs)
//!
//! [connections]               # libp2p; all optional
//! max_per_peer = 2
//! max_incoming = 256
//! max_outgoing = 256
//! max_pending_incoming = 64
//! max_pending_outgoing = 64
//!
//! [[clients]]
//! name = "exchange-a"
//! public_key = "<32-byte Ed25519 public key hex>"
//! requests_per_minute = 120
//!
//! [tls]                              # optional; without it: plain HTTP
//! cert = "api.crt"                   # PEM chain, leaf first
//! key = "api.key"                    # PEM private key
//! client_ca = "clients-ca.crt"       # optional: require client certificates
//! ```
//!
//! Relative paths are resolved against the directory of the configuration file.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use quorate_protocol::NodeIdentity;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

pub use crate::settings::Limits;
use crate::{
    error::CoordinatorError,
    settings::{ClientInfo, ClientRegistry, ConnectionLimits, ServiceSettings},
};

/// A registered client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// Display name (logs, metrics).
    pub name: String,
    /// Ed25519 public key, 32 bytes hex.
    pub public_key: String,
    /// Signature requests per minute (token bucket, burst of the same size).
    #[serde(default = "default_rpm")]
    pub requests_per_minute: u32,
}

fn default_rpm() -> u32 {
    60
}
fn default_session_timeout() -> u64 {
    30_000
}
fn default_dkg_timeout() -> u64 {
    60_000
}

fn default_limits_timeout() -> u64 {
    crate::engine::DEFAULT_LIMITS_TIMEOUT_MS
}

/// `[tls]`: serve the HTTP API over TLS (rustls).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain of the API, leaf first.
    pub cert: PathBuf,
    /// PEM private key of the certificate (PKCS#8, SEC1 or PKCS#1).
    pub key: PathBuf,
    /// PEM CA bundle: when set, clients must present a certificate chaining to it.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
}

/// The coordinator's configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoordinatorConfig {
    /// File holding the coordinator identity: 64 bytes as hex (not a key share).
    pub identity_file: PathBuf,
    /// Roster file.
    pub roster: PathBuf,
    /// Ed25519 public key (hex) the roster must be signed by, if any.
    #[serde(default)]
    pub roster_authority: Option<String>,
    /// libp2p listen multiaddresses.
    #[serde(default)]
    pub listen: Vec<String>,
    /// HTTP listen address.
    pub http_listen: String,
    /// Admin bearer token for `POST /v1/keys` (prefer `admin_token_env`).
    #[serde(default)]
    pub admin_token: Option<String>,
    /// Name of an environment variable holding the admin token.
    #[serde(default)]
    pub admin_token_env: Option<String>,
    /// Directory of the embedded store.
    pub data_dir: PathBuf,
    /// Signing session timeout.
    #[serde(default = "default_session_timeout")]
    pub session_timeout_ms: u64,
    /// DKG timeout.
    #[serde(default = "default_dkg_timeout")]
    pub dkg_timeout_ms: u64,
    /// Deadline of one limit-check attempt of a limit-checked netting round (at
    /// most 3 attempts); the close itself waits `dkg_timeout_ms` for the outputs.
    #[serde(default = "default_limits_timeout")]
    pub netting_limits_timeout_ms: u64,
    /// HTTP limits.
    #[serde(default)]
    pub limits: Limits,
    /// libp2p connection limits.
    #[serde(default)]
    pub connections: ConnectionLimits,
    /// Registered clients.
    #[serde(default)]
    pub clients: Vec<ClientConfig>,
    /// TLS on the HTTP API; plain HTTP when absent (loopback and devnets only).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

fn cfg(msg: impl Into<String>) -> CoordinatorError {
    CoordinatorError::Config(msg.into())
}

impl CoordinatorConfig {
    /// Reads and validates a configuration file; relative paths are resolved against
    /// its directory.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, CoordinatorError> {
        let path = path.as_ref();
        let text =
            std::fs::read_to_string(path).map_err(|e| cfg(format!("{}: {e}", path.display())))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, base).map_err(|e| match e {
            CoordinatorError::Config(m) => cfg(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Parses and validates configuration text; relative paths are resolved against `base`.
    pub fn parse(text: &str, base: &Path) -> Result<Self, CoordinatorError> {
        let mut c: Self = toml::from_str(text).map_err(|e| cfg(e.to_string()))?;
        for p in [&mut c.identity_file, &mut c.roster, &mut c.data_dir] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        if let Some(t) = &mut c.tls {
            for p in [&mut t.cert, &mut t.key]
                .into_iter()
                .chain(t.client_ca.as_mut())
            {
                if p.is_relative() {
                    *p = base.join(&*p);
                }
            }
        }
        c.http_addr()?;
        c.client_registry()?;
        if let Some(a) = &c.roster_authority {
            let mut b = [0u8; 32];
            hex::decode_to_slice(a, &mut b)
                .map_err(|_| cfg("roster_authority: expected 32 bytes of hex"))?;
        }
        if c.admin_token
            .as_deref()
            .is_some_and(|t| t.trim().is_empty())
        {
            return Err(cfg(
                "admin_token: is empty; set a random token or remove it",
            ));
        }
        if c.admin_token.is_some() && c.admin_token_env.is_some() {
            return Err(cfg(
                "admin_token and admin_token_env are exclusive; set one",
            ));
        }
        if c.netting_limits_timeout_ms < 1000 {
            return Err(cfg(
                "netting_limits_timeout_ms: at least 1000 (one limit-check attempt)",
            ));
        }
        if c.limits.max_body_bytes < 1024 {
            return Err(cfg("limits.max_body_bytes: at least 1024"));
        }
        if c.limits.nonce_cache_per_client == 0 || c.limits.idempotency_keys_per_client == 0 {
            return Err(cfg(
                "limits.nonce_cache_per_client and limits.idempotency_keys_per_client: at least 1",
            ));
        }
        if c.limits.job_retention_ms < c.limits.idempotency_retention_ms {
            return Err(cfg(
                "limits.job_retention_ms: at least limits.idempotency_retention_ms (a live \
                 Idempotency-Key must name a stored job)",
            ));
        }
        Ok(c)
    }

    /// The HTTP listen address.
    pub fn http_addr(&self) -> Result<SocketAddr, CoordinatorError> {
        self.http_listen
            .parse()
            .map_err(|e| cfg(format!("http_listen: {e}")))
    }

    /// The TLS server configuration from `[tls]` (reads the PEM files), if configured.
    pub fn tls_server_config(
        &self,
    ) -> Result<Option<std::sync::Arc<rustls::ServerConfig>>, CoordinatorError> {
        self.tls
            .as_ref()
            .map(|t| crate::tls::load_server_config(&t.cert, &t.key, t.client_ca.as_deref()))
            .transpose()
    }

    /// The roster authority key, if configured.
    pub fn roster_authority_key(&self) -> Result<Option<[u8; 32]>, CoordinatorError> {
        self.roster_authority
            .as_ref()
            .map(|a| {
                let mut b = [0u8; 32];
                hex::decode_to_slice(a, &mut b)
                    .map_err(|_| cfg("roster_authority: expected 32 bytes of hex"))?;
                Ok(b)
            })
            .transpose()
    }

    /// Reads the coordinator identity from `identity_file` (64 bytes hex).
    ///
    /// # Security
    /// The identity authenticates the coordinator's protocol messages; it is not a
    /// key share. Keep the file readable by the coordinator only.
    pub fn identity(&self) -> Result<NodeIdentity, CoordinatorError> {
        let text = Zeroizing::new(std::fs::read_to_string(&self.identity_file).map_err(|e| {
            cfg(format!(
                "identity_file {}: {e}",
                self.identity_file.display()
            ))
        })?);
        let mut bytes = Zeroizing::new([0u8; 64]);
        if hex::decode_to_slice(text.trim(), bytes.as_mut_slice()).is_err() {
            return Err(cfg(format!(
                "identity_file {}: expected 64 bytes of hex",
                self.identity_file.display()
            )));
        }
        Ok(NodeIdentity::from_secret_bytes(&bytes))
    }

    /// Writes a new identity file (hex) for `identity`.
    pub fn write_identity(path: &Path, identity: &NodeIdentity) -> Result<(), CoordinatorError> {
        let secret = identity.to_secret_bytes();
        let text = Zeroizing::new(hex::encode(secret.as_slice()));
        std::fs::write(path, text.as_bytes())
            .map_err(|e| cfg(format!("identity_file {}: {e}", path.display())))
    }

    /// The admin token from `admin_token` or the variable named by `admin_token_env`.
    /// An empty or whitespace-only token is an error (it would be trivially guessed).
    pub fn admin_token(&self) -> Result<Option<String>, CoordinatorError> {
        if let Some(t) = &self.admin_token {
            if t.trim().is_empty() {
                return Err(cfg(
                    "admin_token: is empty; set a random token or remove it",
                ));
            }
            return Ok(Some(t.clone()));
        }
        match &self.admin_token_env {
            None => Ok(None),
            Some(var) => match std::env::var(var) {
                Ok(t) if t.trim().is_empty() => Err(cfg(format!(
                    "admin_token_env: variable {var} is empty; set a random token"
                ))),
                Ok(t) => Ok(Some(t)),
                Err(_) => Err(cfg(format!("admin_token_env: variable {var} is not set"))),
            },
        }
    }

    /// The registered clients.
    pub fn client_registry(&self) -> Result<ClientRegistry, CoordinatorError> {
        let mut reg = ClientRegistry::new();
        for (i, c) in self.clients.iter().enumerate() {
            let mut key = [0u8; 32];
            hex::decode_to_slice(&c.public_key, &mut key)
                .map_err(|_| cfg(format!("clients[{i}].public_key: expected 32 bytes of hex")))?;
            if c.requests_per_minute == 0 {
                return Err(cfg(format!(
                    "clients[{i}].requests_per_minute: must be > 0"
                )));
            }
            reg.add(ClientInfo {
                name: c.name.clone(),
                public_key: key,
                requests_per_minute: c.requests_per_minute,
            })
            .map_err(|e| cfg(format!("clients[{i}]: {e}")))?;
        }
        Ok(reg)
    }

    /// Path of the embedded store.
    pub fn store_path(&self) -> PathBuf {
        self.data_dir.join("coordinator.redb")
    }

    /// Settings of the HTTP service.
    pub fn service_settings(&self) -> Result<ServiceSettings, CoordinatorError> {
        Ok(ServiceSettings {
            clients: self.client_registry()?,
            admin_token: self.admin_token()?,
            limits: self.limits.clone(),
        })
    }
}
