//! Settings shared by the HTTP API, the service and the configuration file.
//!
//! A leaf module (it imports nothing else of this crate), so `api`, `config` and
//! `service` all depend on it instead of on each other.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// A registered client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientInfo {
    /// Display name.
    pub name: String,
    /// Ed25519 public key.
    pub public_key: [u8; 32],
    /// Signature requests per minute (and burst size).
    pub requests_per_minute: u32,
}

/// Clients allowed to request signatures.
#[derive(Debug, Clone, Default)]
pub struct ClientRegistry {
    clients: HashMap<[u8; 32], ClientInfo>,
}

impl ClientRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a client; refuses a duplicate key.
    pub fn add(&mut self, info: ClientInfo) -> Result<(), String> {
        if self.clients.contains_key(&info.public_key) {
            return Err(format!(
                "client key {} registered twice",
                hex::encode(info.public_key)
            ));
        }
        self.clients.insert(info.public_key, info);
        Ok(())
    }

    /// The client with this key.
    pub fn get(&self, key: &[u8; 32]) -> Option<&ClientInfo> {
        self.clients.get(key)
    }

    /// Number of clients.
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    /// Whether no client is registered.
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }
}

/// Request limits of the HTTP API (`[limits]` in `coordinator.toml`).
///
/// The retention and idempotency-quota fields are enforced by the store: open it
/// with `Store::open_with(path, StoreOptions::from(&limits))` (as `run` does).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request body accepted (bytes); larger bodies get `payload-too-large`.
    pub max_body_bytes: usize,
    /// Longest `timeout_ms` a `wait=true` request may ask for.
    pub max_wait_ms: u64,
    /// Furthest in the future a request's `expires_at_ms` may be (bounds the nonce cache).
    pub max_request_lifetime_ms: u64,
    /// Most client nonces remembered for replay detection (all clients together).
    pub nonce_cache: usize,
    /// Most live nonces one client may hold in the replay cache; beyond it that
    /// client's new requests are refused (`rate-limited`) while others keep working.
    pub nonce_cache_per_client: usize,
    /// Most live idempotency keys one client may hold; beyond it that client's new
    /// idempotency keys are refused (`rate-limited`) while others keep working.
    pub idempotency_keys_per_client: u64,
    /// How long an idempotency key is remembered after it was first used.
    pub idempotency_retention_ms: u64,
    /// How long a finished (succeeded or failed) job is kept after it finished; at
    /// least `idempotency_retention_ms`. Pending jobs are never pruned.
    pub job_retention_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 256 * 1024,
            max_wait_ms: 60_000,
            max_request_lifetime_ms: 60 * 60 * 1000,
            nonce_cache: 100_000,
            nonce_cache_per_client: 10_000,
            idempotency_keys_per_client: 100_000,
            idempotency_retention_ms: 24 * 60 * 60 * 1000,
            job_retention_ms: 7 * 24 * 60 * 60 * 1000,
        }
    }
}

/// What the HTTP service needs besides the backend and the store.
#[derive(Debug, Clone, Default)]
pub struct ServiceSettings {
    /// Clients allowed to request signatures.
    pub clients: ClientRegistry,
    /// Bearer token for admin operations (`POST /v1/keys`); `None` disables them.
    /// An empty or whitespace-only token never matches (key creation stays disabled).
    pub admin_token: Option<String>,
    /// Request limits.
    pub limits: Limits,
}

/// libp2p connection limits of the coordinator (`[connections]` in
/// `coordinator.toml`). Connections beyond them are refused before any protocol
/// traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectionLimits {
    /// Established connections per peer.
    pub max_per_peer: u32,
    /// Established inbound connections in all.
    pub max_incoming: u32,
    /// Established outbound connections in all.
    pub max_outgoing: u32,
    /// Inbound connections still handshaking.
    pub max_pending_incoming: u32,
    /// Outbound connections still handshaking.
    pub max_pending_outgoing: u32,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_per_peer: 2,
            max_incoming: 256,
            max_outgoing: 256,
            max_pending_incoming: 64,
            max_pending_outgoing: 64,
        }
    }
}
