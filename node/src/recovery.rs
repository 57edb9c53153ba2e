//! Rebuilding policy state from the node's own audit log at start-up.
//!
//! Rolling-window usage and the request nonces seen are policy state: if a restart
//! forgot them, restarting a node would reset its value limits and let an old
//! request be replayed. Every request the node allowed is already in its audit log
//! (`request_received` with client, asset, amount, nonce and expiry, then a
//! `policy_decision` with `allowed: true`, written before any share), and the log is
//! hash-chained, signed and verified when it is opened. So the log is the record:
//! [`restore_policy_state`] replays it into a fresh [`PolicyEngine`].

use std::{collections::HashMap, path::Path};

use serde_json::Value;

use crate::{
    audit::{self, AuditError, AuditKind},
    policy::PolicyEngine,
};

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
    Some(Received {
        client: hex32(details.get("client")?)?,
        asset: details.get("asset")?.as_str()?.to_owned(),
        amount: details.get("amount")?.as_u64()?,
        nonce,
    })
}

/// Replays the allowed requests recorded in the audit log at `path` into `engine`
/// (as of `now_ms`, Unix ms). Entries written before nonces were recorded restore
/// usage only.
pub fn restore_policy_state(
    path: &Path,
    engine: &mut PolicyEngine,
    now_ms: u64,
) -> Result<Restored, AuditError> {
    let mut pending: HashMap<String, Received> = HashMap::new();
    let mut restored = Restored::default();
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
                }
            }
            _ => {}
        }
    }
    Ok(restored)
}
