//! Rebuilding policy state from the node's own audit log at start-up.
//!
//! Rolling-window usage and the request nonces seen are policy state: if a restart
//! forgot them, restarting a node would reset its value limits and let an old
//! request be replayed. Every request the node allowed is already in its audit log
//! (`request_received` with client, asset, amount, nonce and expiry, then a
//! `policy_decision` with `allowed: true`, written before any share), and the log is
//! hash-chained, signed and verified when it is opened. So the log is the record:
//! [`restore_policy_state`] replays it into a fresh [`PolicyEngine`], and returns the
//! approvals of unexpired allowed requests, so a coordinator's retry of a request
//! allowed before the restart is still recognised as a retry, not a replay.

use std::{
    collections::{BTreeMap, HashMap},
    path::Path,
};

use quorate_protocol::KeyId;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::{
    audit::{self, AuditError, AuditKind},
    policy::PolicyEngine,
};

/// SHA-256 of a message to sign, as recorded in approvals and the audit log.
pub fn message_hash(message: &[u8]) -> [u8; 32] {
    Sha256::digest(message).into()
}

/// A request this node allowed: what later sessions of the same request may sign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    /// SHA-256 of each message of the request.
    pub message_hashes: Vec<[u8; 32]>,
    /// The request's Taproot tweak.
    pub tweak: Option<[u8; 32]>,
    /// The key the request names.
    pub key_id: KeyId,
    /// The request's expiry (Unix ms).
    pub expires_at_ms: u64,
    /// Signing sessions started here, per message hash (each recorded as a
    /// `sign_attempt` audit entry, so the count survives restarts).
    pub attempts: BTreeMap<[u8; 32], u32>,
}

/// Approvals by request hash.
pub type Approvals = BTreeMap<[u8; 32], Approval>;

/// What was restored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Restored {
    /// Allowed requests replayed into the engine.
    pub allowed: usize,
    /// Of those, requests whose nonce was still unexpired (now refused as replays).
    pub nonces: usize,
}

struct Received {
    client: [u8; 32],
    asset: String,
    amount: u64,
    nonce: Option<([u8; 16], u64)>,
    approval: Option<Approval>,
}

fn hex32(v: &Value) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(v.as_str()?, &mut out).ok()?;
    Some(out)
}

fn received(details: &Value) -> Option<Received> {
    let nonce = details.get("nonce").and_then(|n| {
        let mut out = [0u8; 16];
        hex::decode_to_slice(n.as_str()?, &mut out).ok()?;
        Some((out, details.get("expires_at_ms")?.as_u64()?))
    });
    let approval = (|| {
        let message_hashes = details
            .get("message_hashes")?
            .as_array()?
            .iter()
            .map(hex32)
            .collect::<Option<Vec<_>>>()?;
        let tweak = match details.get("tweak")? {
            Value::Null => None,
            t => Some(hex32(t)?),
        };
        Some(Approval {
            message_hashes,
            tweak,
            key_id: KeyId::from_hex(details.get("key_id")?.as_str()?).ok()?,
            expires_at_ms: details.get("expires_at_ms")?.as_u64()?,
            attempts: BTreeMap::new(),
        })
    })();
    Some(Received {
        client: hex32(details.get("client")?)?,
        asset: details.get("asset")?.as_str()?.to_owned(),
        amount: details.get("amount")?.as_u64()?,
        nonce,
        approval,
    })
}

/// Replays the allowed requests recorded in the audit log at `path` into `engine`
/// (as of `now_ms`, Unix ms) and returns the approvals of those not yet expired.
/// Entries written before nonces and message hashes were recorded restore usage only.
pub fn restore_policy_state(
    path: &Path,
    engine: &mut PolicyEngine,
    now_ms: u64,
) -> Result<(Restored, Approvals), AuditError> {
    let mut pending: HashMap<String, Received> = HashMap::new();
    let mut restored = Restored::default();
    let mut approvals = Approvals::new();
    for entry in audit::read_entries(path)? {
        match &entry.kind {
            AuditKind::RequestReceived { request_hash } => {
                if let Some(r) = received(&entry.details) {
                    pending.insert(request_hash.clone(), r);
                }
            }
            AuditKind::PolicyDecision { allowed, .. } => {
                let hash = entry.details.get("request_hash").and_then(Value::as_str);
                let Some(r) = hash.and_then(|h| pending.remove(h)) else {
                    continue;
                };
                if *allowed {
                    let live = r.nonce.is_some_and(|(_, exp)| exp >= now_ms);
                    engine.restore_allowed(
                        r.client,
                        &r.asset,
                        r.amount,
                        entry.time_ms,
                        r.nonce,
                        now_ms,
                    );
                    restored.allowed += 1;
                    restored.nonces += usize::from(live);
                    let mut request_hash = [0u8; 32];
                    let hash_ok =
                        hash.is_some_and(|h| hex::decode_to_slice(h, &mut request_hash).is_ok());
                    if let Some(a) = r.approval.filter(|a| hash_ok && a.expires_at_ms > now_ms) {
                        approvals.insert(request_hash, a);
                    }
                }
            }
            AuditKind::SignAttempt { request_hash, .. } => {
                let (Some(request), Some(message)) = (
                    hex32(&Value::String(request_hash.clone())),
                    entry.details.get("message_hash").and_then(hex32),
                ) else {
                    continue;
                };
                if let Some(a) = approvals.get_mut(&request) {
                    *a.attempts.entry(message).or_insert(0) += 1;
                }
            }
            _ => {}
        }
    }
    Ok((restored, approvals))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{audit::AuditLog, policy::Policy};
    use quorate_protocol::NodeIdentity;
    use rand_chacha::{rand_core::SeedableRng, ChaCha20Rng};
    use serde_json::json;

    const NOW: u64 = 1_700_000_000_000;

    fn engine() -> PolicyEngine {
        PolicyEngine::new(Policy::from_toml("version = 1\n").expect("policy"))
    }

    /// Writes one allowed request (two messages) and `attempts` sign attempts for its
    /// first message, plus one for a request never allowed.
    fn log(dir: &tempfile::TempDir, attempts: u32) -> std::path::PathBuf {
        let id = NodeIdentity::generate(&mut ChaCha20Rng::seed_from_u64(3));
        let path = dir.path().join("audit.jsonl");
        let mut audit = AuditLog::open(&path, &id).expect("open");
        let (m1, m2) = (message_hash(b"one"), message_hash(b"two"));
        let request = hex::encode([0xab; 32]);
        audit
            .append_at(
                NOW,
                AuditKind::RequestReceived {
                    request_hash: request.clone(),
                },
                json!({
                    "client": hex::encode([1; 32]), "key_id": KeyId([2; 16]).to_string(),
                    "asset": "BTC", "amount": 5, "nonce": hex::encode([3; 16]),
                    "expires_at_ms": NOW + 60_000,
                    "message_hashes": [hex::encode(m1), hex::encode(m2)], "tweak": null,
                }),
            )
            .expect("append");
        audit
            .append_at(
                NOW,
                AuditKind::PolicyDecision {
                    allowed: true,
                    rule: None,
                },
                json!({ "request_hash": request, "detail": "exchange" }),
            )
            .expect("append");
        for (i, (hash, message)) in (0..attempts)
            .map(|_| (request.clone(), m1))
            .chain([(hex::encode([0xcd; 32]), m1)])
            .enumerate()
        {
            audit
                .append_at(
                    NOW,
                    AuditKind::SignAttempt {
                        session: quorate_protocol::SessionId([i as u8; 32]),
                        request_hash: hash,
                    },
                    json!({ "message_hash": hex::encode(message), "attempt": i + 1 }),
                )
                .expect("append");
        }
        path
    }

    #[test]
    fn sign_attempts_are_counted_per_message_across_restarts() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = log(&dir, 2);
        let mut policy = engine();
        let (restored, approvals) =
            restore_policy_state(&path, &mut policy, NOW + 1).expect("restore");
        assert_eq!(
            restored,
            Restored {
                allowed: 1,
                nonces: 1
            }
        );
        let a = approvals.get(&[0xab; 32]).expect("approval restored");
        assert_eq!(a.attempts.get(&message_hash(b"one")), Some(&2));
        assert_eq!(a.attempts.get(&message_hash(b"two")), None);
        assert_eq!(
            approvals.len(),
            1,
            "attempts of a request never allowed restore nothing"
        );
    }

    #[test]
    fn expired_approvals_are_not_restored() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = log(&dir, 1);
        let (_, approvals) =
            restore_policy_state(&path, &mut engine(), NOW + 120_000).expect("restore");
        assert!(approvals.is_empty());
    }
}
