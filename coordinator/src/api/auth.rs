//! Client registry, replay cache, per-client rate limits and the admin token check.
//!
//! These checks give clients fast, clear errors; nodes re-check the client signature,
//! expiry, nonce and their own policy themselves (invariant 4).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    time::Instant,
};

use sha2::{Digest, Sha256};

pub use crate::settings::{ClientInfo, ClientRegistry};

/// Seen `(client, nonce)` pairs until their request expires. Bounded twice: in all
/// (`cap`) and per client (`per_client`), so one client's flood is refused on its own
/// while the others keep working. When full after dropping expired entries, new
/// requests are refused until entries expire (nothing live is forgotten).
#[derive(Debug)]
pub(crate) struct NonceCache {
    cap: usize,
    per_client: usize,
    seen: HashMap<([u8; 32], [u8; 16]), u64>,
    by_expiry: BTreeMap<(u64, [u8; 32], [u8; 16]), ()>,
    /// Each client's live `(expiry, nonce)`: its count, and its earliest expiry
    /// for `Retry-After`, without looking at other clients' entries.
    of_client: HashMap<[u8; 32], BTreeSet<(u64, [u8; 16])>>,
}

/// Why a nonce was not accepted.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum NonceError {
    Replayed,
    /// The cache of all clients is full.
    Full,
    /// This client holds its whole quota of live nonces; retry after the given
    /// time (Unix ms) when its oldest one expires.
    ClientQuota {
        live: usize,
        free_at_ms: u64,
    },
}

impl NonceCache {
    pub(crate) fn new(cap: usize, per_client: usize) -> Self {
        Self {
            cap,
            per_client,
            seen: HashMap::new(),
            by_expiry: BTreeMap::new(),
            of_client: HashMap::new(),
        }
    }

    fn forget(&mut self, client: [u8; 32], nonce: [u8; 16], expires_at_ms: u64) {
        if let Some(set) = self.of_client.get_mut(&client) {
            set.remove(&(expires_at_ms, nonce));
            if set.is_empty() {
                self.of_client.remove(&client);
            }
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
            if self.seen.remove(&(c, n)).is_some() {
                self.forget(c, n, exp);
            }
        }
        if self.seen.contains_key(&(client, nonce)) {
            return Err(NonceError::Replayed);
        }
        let mine = self.of_client.get(&client);
        let live = mine.map_or(0, BTreeSet::len);
        if live >= self.per_client {
            let free_at_ms = mine
                .and_then(BTreeSet::first)
                .map_or(now_ms, |(exp, _)| *exp);
            return Err(NonceError::ClientQuota { live, free_at_ms });
        }
        if self.seen.len() >= self.cap {
            return Err(NonceError::Full);
        }
        self.seen.insert((client, nonce), expires_at_ms);
        self.by_expiry.insert((expires_at_ms, client, nonce), ());
        self.of_client
            .entry(client)
            .or_default()
            .insert((expires_at_ms, nonce));
        Ok(())
    }

    /// Live nonces of `client`.
    #[cfg(test)]
    pub(crate) fn live(&self, client: &[u8; 32]) -> usize {
        self.of_client.get(client).map_or(0, BTreeSet::len)
    }

    /// Forgets a nonce (the request was refused before it reached any node).
    pub(crate) fn remove(&mut self, client: [u8; 32], nonce: [u8; 16]) {
        if let Some(exp) = self.seen.remove(&(client, nonce)) {
            self.by_expiry.remove(&(exp, client, nonce));
            self.forget(client, nonce, exp);
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
/// An empty token on either side never matches.
pub(crate) fn token_matches(presented: &str, expected: &str) -> bool {
    if presented.trim().is_empty() || expected.trim().is_empty() {
        return false;
    }
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
        let mut c = NonceCache::new(2, 2);
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
    fn one_clients_nonce_quota_leaves_room_for_others() {
        let mut c = NonceCache::new(10, 3);
        for i in 0..3u8 {
            assert_eq!(
                c.check_and_insert([1; 32], [i; 16], 100 + u64::from(i), 0),
                Ok(())
            );
        }
        // The flooding client is refused on its own, told when room frees up ...
        assert_eq!(
            c.check_and_insert([1; 32], [9; 16], 500, 0),
            Err(NonceError::ClientQuota {
                live: 3,
                free_at_ms: 100
            })
        );
        // ... while another client keeps working.
        assert_eq!(c.check_and_insert([2; 32], [9; 16], 500, 0), Ok(()));
        assert_eq!(c.live(&[1; 32]), 3);
        // A refused-before-nodes request gives its slot back.
        c.remove([1; 32], [0; 16]);
        assert_eq!(c.live(&[1; 32]), 2);
        assert_eq!(c.check_and_insert([1; 32], [9; 16], 500, 0), Ok(()));
        // Expiry frees the quota too.
        assert_eq!(c.check_and_insert([1; 32], [8; 16], 500, 102), Ok(()));
        assert_eq!(c.live(&[1; 32]), 2);
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

    #[test]
    fn empty_tokens_never_match() {
        assert!(!token_matches("", ""));
        assert!(!token_matches(" ", " "));
        assert!(!token_matches("\t", "\t"));
    }
}
