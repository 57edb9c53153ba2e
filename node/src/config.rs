//! `node.toml`: the one configuration file of a signer node.
//!
//! ```toml
//! keystore = "/var/lib/quorate/keystore.redb"
//! passphrase = { env = "QUORATE_PASSPHRASE" }   # or { file = "/run/secrets/quorate" }, or "admin"
//! roster = "/etc/quorate/roster.toml"
//! roster_authority = "<hex Ed25519 key>"        # optional: require roster.toml.sig
//! policy = "/etc/quorate/policy.toml"
//! audit_log = "/var/lib/quorate/audit.jsonl"
//! listen = ["/ip4/0.0.0.0/tcp/7400", "/ip4/0.0.0.0/udp/7400/quic-v1"]
//! admin = "127.0.0.1:9400"                      # /health, /metrics, POST /unseal
//! routing = "direct"                            # or "via-coordinator" (segmented)
//! log_format = "pretty"                         # or "json"
//!
//! [limits]
//! max_sessions = 64
//! session_timeout_ms = 30000
//! max_pending_messages = 1024
//! max_pending_per_peer = 128
//! max_pending_bytes = 16777216          # 16 MiB of early messages in all
//! max_pending_bytes_per_peer = 2097152  # 2 MiB of them from one sender
//! shutdown_grace_ms = 10000
//! min_dkg_threshold = 2                 # refuse a DkgStart below this threshold
//! min_dkg_segments = 1                  # ... or spanning fewer roster segments
//! max_connections_per_peer = 2     # libp2p connection limits
//! max_connections_incoming = 256
//! max_connections_outgoing = 256
//! max_pending_incoming = 64
//! max_pending_outgoing = 64
//! max_netting_rounds = 16               # netting rounds held at once
//! netting_retention_secs = 86400        # a round is forgotten this long after its cut-off
//! max_netting_horizon_secs = 604800     # refuse a round whose cut-off is further away
//! max_netting_rounds_per_client = 4     # rounds held at once per creating client
//! presign_pool_size = 64                # presigned nonces per (coordinator, key); 0 = off
//! presign_refill_below = 32             # top the pool up when fewer are held
//! presign_lifetime_secs = 300           # a presigned nonce is dropped unused after this
//! ```

use std::{net::SocketAddr, path::PathBuf};

use serde::{Deserialize, Serialize};

/// Where the keystore passphrase comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PassphraseConfig {
    /// From an environment variable.
    Env(String),
    /// From a file (one trailing newline is ignored).
    File(PathBuf),
    /// Start sealed; an operator unseals through `POST /unseal` on the admin address.
    #[serde(rename = "admin")]
    Admin,
}

/// How messages to other signer nodes travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Routing {
    /// Straight to the peer (nodes can reach each other).
    #[default]
    Direct,
    /// Relayed through the session's coordinator (segmented deployments). Secret
    /// payloads are sealed end to end, so the relay learns nothing.
    ViaCoordinator,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable.
    #[default]
    Pretty,
    /// One JSON object per line.
    Json,
}

/// Bounds on the daemon's work (invariant 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Concurrent protocol sessions.
    pub max_sessions: usize,
    /// Deadline of one session.
    pub session_timeout_ms: u64,
    /// Messages buffered for sessions that have not started here yet.
    pub max_pending_messages: usize,
    /// Of those, how many one sender may hold (one noisy peer cannot fill the buffer).
    pub max_pending_per_peer: usize,
    /// Encoded bytes of all buffered early messages.
    pub max_pending_bytes: usize,
    /// Encoded bytes of buffered early messages from one sender.
    pub max_pending_bytes_per_peer: usize,
    /// How long shutdown waits for running sessions.
    pub shutdown_grace_ms: u64,
    /// Lowest threshold this node takes part in a DKG for.
    pub min_dkg_threshold: u16,
    /// Fewest distinct roster segments a DKG committee must span.
    pub min_dkg_segments: usize,
    /// libp2p: established connections per peer (more are refused).
    pub max_connections_per_peer: u32,
    /// libp2p: established inbound connections in all.
    pub max_connections_incoming: u32,
    /// libp2p: established outbound connections in all.
    pub max_connections_outgoing: u32,
    /// libp2p: inbound connections still handshaking.
    pub max_pending_incoming: u32,
    /// libp2p: outbound connections still handshaking.
    pub max_pending_outgoing: u32,
    /// Netting rounds held at once (open or closed, until forgotten).
    pub max_netting_rounds: usize,
    /// Seconds after a round's cut-off until it is forgotten (memory and keystore).
    pub netting_retention_secs: u64,
    /// Longest time from now to a new round's cut-off, seconds: a round cannot hold
    /// a slot for longer than this plus the retention period.
    pub max_netting_horizon_secs: u64,
    /// Netting rounds held at once that one client created (open or closed, until
    /// forgotten), so one client cannot take every slot.
    pub max_netting_rounds_per_client: usize,
    /// Presigned nonces held in memory per (coordinator, key) for one-round
    /// signing (0 turns presigning off; at most 256).
    pub presign_pool_size: usize,
    /// The pool is topped up (and the new commitments offered) once fewer than
    /// this many are held.
    pub presign_refill_below: usize,
    /// Seconds a presigned nonce stays usable; then it is dropped unused.
    pub presign_lifetime_secs: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_sessions: 64,
            session_timeout_ms: 30_000,
            max_pending_messages: 1024,
            max_pending_per_peer: 128,
            max_pending_bytes: 16 * 1024 * 1024,
            max_pending_bytes_per_peer: 2 * 1024 * 1024,
            shutdown_grace_ms: 10_000,
            min_dkg_threshold: 2,
            min_dkg_segments: 1,
            max_connections_per_peer: 2,
            max_connections_incoming: 256,
            max_connections_outgoing: 256,
            max_pending_incoming: 64,
            max_pending_outgoing: 64,
            max_netting_rounds: 16,
            netting_retention_secs: 86_400,
            max_netting_horizon_secs: 7 * 86_400,
            max_netting_rounds_per_client: 4,
            presign_pool_size: 64,
            presign_refill_below: 32,
            presign_lifetime_secs: 300,
        }
    }
}

impl LimitsConfig {
    /// The presign pools' configuration; `None` when presigning is off.
    pub fn presign(&self) -> Option<quorate_protocol::presign::PoolConfig> {
        (self.presign_pool_size > 0).then(|| quorate_protocol::presign::PoolConfig {
            size: self.presign_pool_size,
            refill_below: self.presign_refill_below,
            lifetime_ms: self.presign_lifetime_secs.saturating_mul(1000),
        })
    }
}

/// The node configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Keystore file.
    pub keystore: PathBuf,
    /// Passphrase source.
    pub passphrase: PassphraseConfig,
    /// Roster file.
    pub roster: PathBuf,
    /// Roster authority public key (hex); when set the roster must carry a valid `.sig`.
    #[serde(default)]
    pub roster_authority: Option<String>,
    /// Policy file.
    pub policy: PathBuf,
    /// Audit log file.
    pub audit_log: PathBuf,
    /// libp2p listen addresses.
    pub listen: Vec<String>,
    /// Local admin HTTP address.
    pub admin: SocketAddr,
    /// Message routing.
    #[serde(default)]
    pub routing: Routing,
    /// Log format.
    #[serde(default)]
    pub log_format: LogFormat,
    /// Limits.
    #[serde(default)]
    pub limits: LimitsConfig,
}

/// A configuration problem, naming the file and field.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Unreadable file.
    #[error("cannot read config {path}: {source}")]
    Io {
        /// File.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Bad TOML or field.
    #[error("config {path}: {message}")]
    Invalid {
        /// File.
        path: String,
        /// What is wrong.
        message: String,
    },
}

impl NodeConfig {
    /// Reads and validates a config file. Relative paths are resolved against the
    /// config file's directory.
    pub fn load(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let invalid = |message: String| ConfigError::Invalid {
            path: path.display().to_string(),
            message,
        };
        let mut cfg: Self = toml::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        let base = path.parent().unwrap_or(std::path::Path::new("."));
        for p in [
            &mut cfg.keystore,
            &mut cfg.roster,
            &mut cfg.policy,
            &mut cfg.audit_log,
        ] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        if let PassphraseConfig::File(p) = &mut cfg.passphrase {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        if cfg.listen.is_empty() {
            return Err(invalid("listen: at least one address is needed".into()));
        }
        for a in &cfg.listen {
            a.parse::<libp2p::Multiaddr>()
                .map_err(|e| invalid(format!("listen: {a:?} is not a multiaddr: {e}")))?;
        }
        if let Some(a) = &cfg.roster_authority {
            let mut k = [0u8; 32];
            hex::decode_to_slice(a, &mut k)
                .map_err(|_| invalid("roster_authority must be 32 bytes of hex".into()))?;
        }
        if cfg.limits.max_sessions == 0 || cfg.limits.session_timeout_ms == 0 {
            return Err(invalid(
                "limits: max_sessions and session_timeout_ms must be positive".into(),
            ));
        }
        if let Some(pool) = cfg.limits.presign() {
            pool.validate().map_err(|e| {
                invalid(format!(
                    "limits: presign_pool_size (1..=256), presign_refill_below (at most the \
                     pool size) and presign_lifetime_secs (> 0): {e}"
                ))
            })?;
        }
        Ok(cfg)
    }

    /// The roster authority key, if configured.
    pub fn authority(&self) -> Option<[u8; 32]> {
        self.roster_authority.as_ref().and_then(|a| {
            let mut k = [0u8; 32];
            hex::decode_to_slice(a, &mut k).ok().map(|()| k)
        })
    }
}
