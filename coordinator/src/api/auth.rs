//! Client registry, replay cache, per-client rate limits and the admin token check.
//!
//! These checks give clients fast, clear errors; nodes re-check the client signature,
//! expiry, nonce and their own policy themselves (invariant 4).

use std::{
    collections::{BTreeMap, HashMap},
    time::Instant,
};

use sha2::{Digest, Sha256};

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

/// Seen `(client, nonce)` pairs until their request expires. Bounded: when full
/// after dropping expired entries, new requests are refused until entries expire.
#[derive(Debug)]
pub(crate) struct NonceCache {
    cap: usize,
    seen: HashMap<([u8; 32], [u8; 16]), u64>,
    by_expiry: BTreeMap<(u64, [u8; 32], [u8; 16]), ()>,
}

/// Why a nonce was not accepted.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum NonceError {
    Replayed,
    Full,
}

impl NonceCache {
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            cap,
            seen: HashMap::new(),
            by_expiry: BTreeMap::new(),
        }
    }

    /// Records the nonce, or says why not.
    pub(crate) fn check_and_insert(
        &mut self,
        client: [u8; 32],
        nonce: [u8; 16],
        expires_at_ms: u64,
        now_ms: u64,
    ) -> Result<(), NonceError> {
        while let Some((&(exp, c, n), _)) = self.by_expiry.iter().next() {
            if exp > now_ms {
                break;
            }
            self.by_expiry.remove(&(exp, c, n));
            self.seen.remove(&(c, n));
        }
        if self.seen.contains_key(&(client, nonce)) {
            return Err(NonceError::Replayed);
        }
        if self.seen.len() >= self.cap {
            return Err(NonceError::Full);
        }
        self.seen.insert((client, nonce), expires_at_ms);
        self.by_expiry.insert((expires_at_ms, client, nonce), ());
        Ok(())
    }

    /// Forgets a nonce (the request was refused before it reached any node).
    pub(crate) fn remove(&mut self, client: [u8; 32], nonce: [u8; 16]) {
        if let Some(exp) = self.seen.remove(&(client, nonce)) {
            self.by_expiry.remove(&(exp, client, nonce));
        }
    }
}

/// Per-client token buckets.
#[derive(Debug, Default)]
pub(crate) struct RateLimiter {
    buckets: HashMap<[u8; 32], (f64, Instant)>,
}

impl RateLimiter {
    /// Takes one token; `Err(ms until one is available)` when empty.
    pub(crate) fn take(
        &mut self,
        client: [u8; 32],
        per_minute: u32,
        now: Instant,
    ) -> Result<(), u64> {
        let cap = f64::from(per_minute.max(1));
        let rate_per_ms = cap / 60_000.0;
        let (tokens, last) = self.buckets.entry(client).or_insert((cap, now));
        let elapsed = now.saturating_duration_since(*last).as_secs_f64() * 1000.0;
        *tokens = (*tokens + elapsed * rate_per_ms).min(cap);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            // Truncation is fine: the value is a small positive wait in ms.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let wait = ((1.0 - *tokens) / rate_per_ms).ceil() as u64;
            Err(wait.max(1))
        }
    }
}

/// Compares a presented bearer token with the configured one without leaking where
/// they differ (both are hashed first, then compared in constant time).
pub(crate) fn token_matches(presented: &str, expected: &str) -> bool {
    let a = Sha256::digest(presented.as_bytes());
    let b = Sha256::digest(expected.as_bytes());
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonce_cache_detects_replay_and_expires() {
        let mut c = NonceCache::new(2);
        assert_eq!(c.check_and_insert([1; 32], [1; 16], 100, 0), Ok(()));
        assert_eq!(
            c.check_and_insert([1; 32], [1; 16], 100, 50),
            Err(NonceError::Replayed)
        );
        // Another client may use the same nonce.
        assert_eq!(c.check_and_insert([2; 32], [1; 16], 200, 50), Ok(()));
        assert_eq!(
            c.check_and_insert([3; 32], [1; 16], 200, 50),
            Err(NonceError::Full)
        );
        // After expiry the first entry is dropped, making room.
        assert_eq!(c.check_and_insert([3; 32], [1; 16], 300, 150), Ok(()));
    }

    #[test]
    fn token_bucket_limits_and_refills() {
        let mut r = RateLimiter::default();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(r.take([1; 32], 3, t0).is_ok());
        }
        let wait = r.take([1; 32], 3, t0).expect_err("empty");
        assert!(wait > 0 && wait <= 20_000, "{wait}");
        assert!(r
            .take([1; 32], 3, t0 + std::time::Duration::from_secs(21))
            .is_ok());
    }

    #[test]
    fn token_compare() {
        assert!(token_matches("abc", "abc"));
        assert!(!token_matches("abd", "abc"));
        assert!(!token_matches("", "abc"));
    }
}
