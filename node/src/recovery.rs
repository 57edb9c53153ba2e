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
//!
//! [`restore_from_log`] does the same from a compact snapshot: the replay state
//! (pending requests, allowed requests still inside the longest possible window or
//! with a live nonce or approval) at an entry (seq, hash, end offset), sealed in the
//! keystore. Start-up reads the snapshot, checks it binds to the open log's chain
//! (the entry after its offset has its seq + 1 and its hash as `prev_hash`, or it is
//! the log's last entry), replays only the entries after it, and writes a new
//! snapshot at the end of the log. The log is read one line at a time.

use std::{
    collections::BTreeMap,
    fs::File,
    io::{BufRead, BufReader, Read, Seek, SeekFrom},
    path::Path,
};

use quorate_protocol::KeyId;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::{
    audit::{AuditEntry, AuditError, AuditKind, AuditLog, MAX_LINE},
    policy::{PolicyEngine, MAX_WINDOW_HOURS},
};

/// Version byte of the snapshot encoding.
pub const SNAPSHOT_VERSION: u8 = 2;
const HOUR_MS: u64 = 3_600_000;

/// SHA-256 of a message to sign, as recorded in approvals and the audit log.
pub fn message_hash(message: &[u8]) -> [u8; 32] {
    Sha256::digest(message).into()
}

/// A request this node allowed: what later sessions of the same request may sign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// SHA-256 of each message of the request.
    pub message_hashes: Vec<[u8; 32]>,
    /// The Taproot tweak each message is signed with (parallel to
    /// `message_hashes`).
    pub tweaks: Vec<Option<[u8; 32]>>,
    /// The key the request names.
    pub key_id: KeyId,
    /// The request's expiry (Unix ms).
    pub expires_at_ms: u64,
    /// Signing sessions started here, per message hash (each recorded as a
    /// `sign_attempt` audit entry, so the count survives restarts).
    pub attempts: BTreeMap<[u8; 32], u32>,
    /// A PSBT request's parsed transaction, kept so retries do not parse it again
    /// (memory only: after a restart it is parsed at the first retry).
    #[serde(skip)]
    pub transaction: Option<std::sync::Arc<quorate_protocol::psbt::TransactionSummary>>,
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Received {
    client: [u8; 32],
    asset: String,
    amount: u64,
    nonce: Option<([u8; 16], u64)>,
    approval: Option<Approval>,
}

/// An allowed request, as replayed into the engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Allowed {
    request_hash: Option<[u8; 32]>,
    time_ms: u64,
    received: Received,
}

/// What replaying the log so far has produced; the body of a snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct ReplayState {
    /// `request_received` entries still waiting for their decision.
    pending: BTreeMap<String, Received>,
    /// Allowed requests, oldest first.
    allowed: Vec<Allowed>,
}

impl ReplayState {
    fn apply(&mut self, entry: &AuditEntry) {
        match &entry.kind {
            AuditKind::RequestReceived { request_hash } => {
                if let Some(r) = received(&entry.details) {
                    self.pending.insert(request_hash.clone(), r);
                }
            }
            AuditKind::PolicyDecision { allowed, .. } => {
                let hash = entry.details.get("request_hash").and_then(Value::as_str);
                let Some(r) = hash.and_then(|h| self.pending.remove(h)) else {
                    return;
                };
                if *allowed {
                    let mut request_hash = [0u8; 32];
                    let hash_ok =
                        hash.is_some_and(|h| hex::decode_to_slice(h, &mut request_hash).is_ok());
                    self.allowed.push(Allowed {
                        request_hash: hash_ok.then_some(request_hash),
                        time_ms: entry.time_ms,
                        received: r,
                    });
                }
            }
            AuditKind::SignAttempt { request_hash, .. } => {
                let (Some(request), Some(message)) = (
                    hex32(&Value::String(request_hash.clone())),
                    entry.details.get("message_hash").and_then(hex32),
                ) else {
                    return;
                };
                // Retries follow their request closely: search from the newest.
                let approval = self
                    .allowed
                    .iter_mut()
                    .rev()
                    .find(|a| a.request_hash == Some(request))
                    .and_then(|a| a.received.approval.as_mut());
                if let Some(a) = approval {
                    *a.attempts.entry(message).or_insert(0) += 1;
                }
            }
            _ => {}
        }
    }

    /// Drops what can no longer matter at `now_ms` (or later): allowed requests
    /// outside their client's window in `engine`'s policy (the longest window any
    /// policy may set for clients it does not know) whose nonce and approval have
    /// expired, as the engine itself forgets them; pending requests that have
    /// expired (or carry no expiry).
    fn prune(&mut self, now_ms: u64, engine: &PolicyEngine) {
        let window = |client: &[u8; 32]| {
            engine
                .policy()
                .client_by_key(client)
                .map_or(u64::from(MAX_WINDOW_HOURS) * HOUR_MS, |c| c.window_ms)
        };
        self.allowed.retain(|a| {
            a.time_ms > now_ms.saturating_sub(window(&a.received.client))
                || a.received.nonce.is_some_and(|(_, exp)| exp >= now_ms)
                || a.received
                    .approval
                    .as_ref()
                    .is_some_and(|p| p.expires_at_ms > now_ms)
        });
        self.pending
            .retain(|_, r| r.nonce.is_some_and(|(_, exp)| exp >= now_ms));
    }

    fn restore(&self, engine: &mut PolicyEngine, now_ms: u64) -> (Restored, Approvals) {
        let mut restored = Restored::default();
        let mut approvals = Approvals::new();
        for a in &self.allowed {
            let r = &a.received;
            let live = r.nonce.is_some_and(|(_, exp)| exp >= now_ms);
            engine.restore_allowed(r.client, &r.asset, r.amount, a.time_ms, r.nonce, now_ms);
            restored.allowed += 1;
            restored.nonces += usize::from(live);
            if let (Some(hash), Some(p)) = (a.request_hash, &r.approval) {
                if p.expires_at_ms > now_ms {
                    approvals.insert(hash, p.clone());
                }
            }
        }
        (restored, approvals)
    }
}

/// A snapshot: the replay state after the entry `seq` (hash `hash`, ending at byte
/// `end_offset` of the log).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Snapshot {
    seq: u64,
    hash: [u8; 32],
    end_offset: u64,
    state: ReplayState,
}

/// Length of the fixed snapshot header: version ‖ seq ‖ hash ‖ end offset.
const SNAPSHOT_HEADER_LEN: usize = 1 + 8 + 32 + 8;

impl Snapshot {
    /// `SNAPSHOT_VERSION` (u8) ‖ seq (u64 BE) ‖ hash (32) ‖ end_offset (u64 BE) ‖
    /// postcard(`ReplayState`).
    fn encode(&self) -> Result<Vec<u8>, AuditError> {
        let mut out = Vec::with_capacity(SNAPSHOT_HEADER_LEN + 64);
        out.push(SNAPSHOT_VERSION);
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.hash);
        out.extend_from_slice(&self.end_offset.to_be_bytes());
        postcard::to_extend(&self.state, out)
            .map_err(|e| AuditError::Snapshot(format!("does not encode: {e}")))
    }

    fn decode(bytes: &[u8]) -> Result<Self, AuditError> {
        let (seq, hash, end_offset) = snapshot_checkpoint(bytes)
            .ok_or_else(|| AuditError::Snapshot("unknown version or short header".into()))?;
        let state = postcard::from_bytes(&bytes[SNAPSHOT_HEADER_LEN..])
            .map_err(|e| AuditError::Snapshot(format!("does not decode: {e}")))?;
        Ok(Self {
            seq,
            hash,
            end_offset,
            state,
        })
    }
}

/// The (seq, hash, end offset) a snapshot was taken at, read from its fixed
/// header without decoding the state (the audit log starts verifying there).
pub(crate) fn snapshot_checkpoint(bytes: &[u8]) -> Option<(u64, [u8; 32], u64)> {
    if bytes.len() < SNAPSHOT_HEADER_LEN || bytes[0] != SNAPSHOT_VERSION {
        return None;
    }
    let seq = u64::from_be_bytes(bytes[1..9].try_into().ok()?);
    let hash: [u8; 32] = bytes[9..41].try_into().ok()?;
    let end = u64::from_be_bytes(bytes[41..49].try_into().ok()?);
    Some((seq, hash, end))
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
        // Per-message tweaks (PSBT inputs) or, in older records, one for all.
        let tweaks = match details.get("tweaks") {
            Some(list) => list
                .as_array()?
                .iter()
                .map(|t| match t {
                    Value::Null => Some(None),
                    t => hex32(t).map(Some),
                })
                .collect::<Option<Vec<_>>>()?,
            None => {
                let tweak = match details.get("tweak")? {
                    Value::Null => None,
                    t => Some(hex32(t)?),
                };
                vec![tweak; message_hashes.len()]
            }
        };
        if tweaks.len() != message_hashes.len() {
            return None;
        }
        Some(Approval {
            message_hashes,
            tweaks,
            key_id: KeyId::from_hex(details.get("key_id")?.as_str()?).ok()?,
            expires_at_ms: details.get("expires_at_ms")?.as_u64()?,
            attempts: BTreeMap::new(),
            transaction: None,
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

/// Streams the entries of the log at `path` from byte `offset` to `f`.
fn for_each_entry(
    path: &Path,
    offset: u64,
    mut f: impl FnMut(AuditEntry) -> Result<(), AuditError>,
) -> Result<(), AuditError> {
    let io_err = |source| AuditError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(io_err)?;
    file.seek(SeekFrom::Start(offset)).map_err(io_err)?;
    let mut reader = BufReader::new(file);
    let mut buf = Vec::new();
    let mut line = 0usize;
    loop {
        buf.clear();
        let n = Read::take(reader.by_ref(), MAX_LINE as u64 + 2)
            .read_until(b'\n', &mut buf)
            .map_err(io_err)?;
        if n == 0 {
            return Ok(());
        }
        line += 1;
        let entry: AuditEntry = serde_json::from_slice(buf.strip_suffix(b"\n").unwrap_or(&buf))
            .map_err(|e| AuditError::BadLine {
                line,
                reason: e.to_string(),
            })?;
        f(entry)?;
    }
}

/// Replays the allowed requests recorded in the audit log at `path` (the whole log,
/// streamed) into `engine` as of `now_ms` (Unix ms), and returns the approvals of
/// those not yet expired. Entries written before nonces and message hashes were
/// recorded restore usage only.
pub fn restore_policy_state(
    path: &Path,
    engine: &mut PolicyEngine,
    now_ms: u64,
) -> Result<(Restored, Approvals), AuditError> {
    let mut state = ReplayState::default();
    for_each_entry(path, 0, |e| {
        state.apply(&e);
        Ok(())
    })?;
    Ok(state.restore(engine, now_ms))
}

/// As [`restore_policy_state`] for an open log, starting from the snapshot sealed
/// in the keystore when the log was opened anchored ([`AuditLog::open_anchored`]):
/// only the entries after the snapshot are read. The snapshot must bind to the
/// log's chain, else this fails (fail closed). Afterwards a new snapshot at the end
/// of the log is sealed, so the next start reads only what was logged since.
pub fn restore_from_log(
    log: &AuditLog,
    engine: &mut PolicyEngine,
    now_ms: u64,
) -> Result<(Restored, Approvals), AuditError> {
    let Some(store) = log.state() else {
        return restore_policy_state(log.path(), engine, now_ms);
    };
    let anchor_err = |source| AuditError::Anchor {
        path: log.path().to_path_buf(),
        source,
    };
    let snapshot = store
        .audit_snapshot()
        .map_err(anchor_err)?
        .filter(|plain| {
            // An older layout (version 1: one tweak per approval) is a cache of
            // the log like any snapshot: replay the log from its start instead.
            let older = plain.first().is_some_and(|v| *v < SNAPSHOT_VERSION);
            if older {
                tracing::warn!(
                    "policy snapshot of an older version; replaying the whole audit log"
                );
            }
            !older
        })
        .map(|plain| Snapshot::decode(&plain))
        .transpose()?;
    let (mut state, offset, mut expect) = match snapshot {
        Some(s) => (s.state, s.end_offset, Some((s.seq, s.hash))),
        None => (ReplayState::default(), 0, None),
    };
    // The snapshot is bound to the chain: the first entry after it continues from
    // its (seq, hash); with nothing after it, it must be the log's last entry.
    for_each_entry(log.path(), offset, |e| {
        if let Some((seq, hash)) = expect.take() {
            if e.seq != seq + 1 || e.prev_hash != hash {
                return Err(AuditError::Snapshot(format!(
                    "snapshot at seq {seq} does not bind to the log: the entry after it has \
                     seq {}",
                    e.seq
                )));
            }
        }
        state.apply(&e);
        Ok(())
    })?;
    if let Some((seq, hash)) = expect {
        if log.next_seq() != seq + 1 || log.last_hash() != hash {
            return Err(AuditError::Snapshot(format!(
                "snapshot at seq {seq} is not in the log (next seq {})",
                log.next_seq()
            )));
        }
    }
    let result = state.restore(engine, now_ms);
    if let Some(last) = log.next_seq().checked_sub(1) {
        state.prune(now_ms, engine);
        let snapshot = Snapshot {
            seq: last,
            hash: log.last_hash(),
            end_offset: log.end_offset(),
            state,
        };
        let bytes = snapshot.encode()?;
        if bytes.len() > crate::keystore::MAX_SNAPSHOT_LEN {
            // Still correct without it: the next start replays from the older
            // snapshot (or the start of the log).
            tracing::warn!(
                bytes = bytes.len(),
                limit = crate::keystore::MAX_SNAPSHOT_LEN,
                "policy snapshot too large to seal; keeping the previous one"
            );
        } else {
            store.set_audit_snapshot(bytes).map_err(anchor_err)?;
        }
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        keystore::{KdfParams, Keystore, Passphrase},
        policy::Policy,
    };
    use rand_chacha::{rand_core::SeedableRng, ChaCha20Rng};
    use serde_json::json;

    const NOW: u64 = 2_000 * HOUR_MS;
    fn client() -> [u8; 32] {
        ed25519_dalek::SigningKey::from_bytes(&[7; 32])
            .verifying_key()
            .to_bytes()
    }

    fn engine() -> PolicyEngine {
        PolicyEngine::new(
            Policy::from_toml(&format!(
                "version = 1\n[clients.a]\npublic_key = \"{}\"\nkeys = [\"*\"]\nallow_raw = true\n\
                 [clients.a.limits.BTC]\nper_request = 1000000\nper_window = 10000000\n",
                hex::encode(client())
            ))
            .expect("policy"),
        )
    }

    /// Logs one request (received + decision) as the daemon does.
    fn request(log: &mut AuditLog, n: u8, at_ms: u64, amount: u64, allowed: bool, ttl_ms: u64) {
        let request_hash = hex::encode([n; 32]);
        log.append_at(
            at_ms,
            AuditKind::RequestReceived {
                request_hash: request_hash.clone(),
            },
            json!({
                "client": hex::encode(client()),
                "key_id": hex::encode([1u8; 16]),
                "asset": "BTC",
                "amount": amount,
                "nonce": hex::encode([n; 16]),
                "expires_at_ms": at_ms + ttl_ms,
                "message_hashes": [hex::encode([n ^ 0xff; 32])],
                "tweak": null,
            }),
        )
        .expect("append");
        log.append_at(
            at_ms,
            AuditKind::PolicyDecision {
                allowed,
                rule: None,
            },
            json!({ "request_hash": request_hash }),
        )
        .expect("append");
    }

    /// What start-up restores, compared between the two paths.
    fn observed(engine: &PolicyEngine, approvals: &Approvals, now: u64) -> (u64, usize, Approvals) {
        (
            engine.window_usage(&client(), "BTC", now),
            engine.tracked_nonces(),
            approvals.clone(),
        )
    }

    fn setup(dir: &tempfile::TempDir) -> (Keystore, std::path::PathBuf) {
        let id = quorate_protocol::NodeIdentity::generate(&mut ChaCha20Rng::seed_from_u64(1));
        let ks = Keystore::init(
            dir.path().join("ks.redb"),
            &Passphrase::new("p").expect("pass"),
            &id,
            KdfParams::insecure_for_tests(),
            &mut ChaCha20Rng::seed_from_u64(2),
        )
        .expect("keystore");
        (ks, dir.path().join("audit.jsonl"))
    }

    #[test]
    fn startup_from_snapshot_restores_the_same_state_as_a_full_replay() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (ks, path) = setup(&dir);
        let mut log = AuditLog::open_anchored(&path, ks.identity(), ks.state()).expect("open");
        // Outside every window and expired; inside the window, expired; live nonce
        // and approval; refused; live again.
        request(&mut log, 1, NOW - 800 * HOUR_MS, 500, true, 60_000);
        request(&mut log, 2, NOW - 2 * HOUR_MS, 300, true, 60_000);
        request(&mut log, 3, NOW - 60_000, 200, true, 600_000);
        request(&mut log, 4, NOW - 50_000, 999, false, 600_000);
        request(&mut log, 5, NOW - 40_000, 100, true, 600_000);

        let mut full = engine();
        let (_, full_approvals) = restore_policy_state(&path, &mut full, NOW).expect("full");
        let mut snap = engine();
        let (_, approvals) = restore_from_log(&log, &mut snap, NOW).expect("first start");
        assert_eq!(
            observed(&snap, &approvals, NOW),
            observed(&full, &full_approvals, NOW)
        );
        assert_eq!(observed(&full, &full_approvals, NOW).0, 600, "2, 3 and 5");
        assert_eq!(full.tracked_nonces(), 2, "3 and 5");
        assert_eq!(full_approvals.len(), 2);

        // The snapshot sits at the end of the log now; a second start reads none of
        // the entries above and still restores the same state.
        let plain = ks.state().audit_snapshot().expect("read").expect("written");
        let s = Snapshot::decode(&plain).expect("decodes");
        assert_eq!((s.seq, s.hash), (9, log.last_hash()));
        assert_eq!(s.end_offset, std::fs::metadata(&path).expect("meta").len());
        assert_eq!(
            s.state.allowed.len(),
            3,
            "the request outside the client's 24 h window is pruned"
        );
        let mut again = engine();
        let (_, approvals) = restore_from_log(&log, &mut again, NOW).expect("second start");
        assert_eq!(
            observed(&again, &approvals, NOW),
            observed(&full, &full_approvals, NOW)
        );
    }

    #[test]
    fn snapshot_plus_later_entries_equals_a_full_replay() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (ks, path) = setup(&dir);
        let mut log = AuditLog::open_anchored(&path, ks.identity(), ks.state()).expect("open");
        request(&mut log, 1, NOW - 3 * HOUR_MS, 400, true, 60_000);
        request(&mut log, 2, NOW - 60_000, 200, true, 600_000);
        restore_from_log(&log, &mut engine(), NOW - 30_000).expect("earlier start");
        // Entries after the snapshot, then a restart.
        request(&mut log, 3, NOW - 20_000, 50, true, 600_000);
        request(&mut log, 4, NOW - 10_000, 70, false, 600_000);
        log.append_at(NOW - 5_000, AuditKind::NodeStopped, Value::Null)
            .expect("append");
        drop(log);
        let log = AuditLog::open_anchored(&path, ks.identity(), ks.state()).expect("reopen");

        let mut full = engine();
        let (_, full_approvals) = restore_policy_state(&path, &mut full, NOW).expect("full");
        let mut snap = engine();
        let (_, approvals) = restore_from_log(&log, &mut snap, NOW).expect("restart");
        assert_eq!(
            observed(&snap, &approvals, NOW),
            observed(&full, &full_approvals, NOW)
        );
        assert_eq!(observed(&full, &full_approvals, NOW).0, 650);
        assert_eq!(full.tracked_nonces(), 2, "2 and 3");
    }

    #[test]
    fn open_verifies_from_the_snapshot_and_still_catches_truncation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (ks, path) = setup(&dir);
        let mut log = AuditLog::open_anchored(&path, ks.identity(), ks.state()).expect("open");
        request(&mut log, 1, NOW - 60_000, 200, true, 600_000);
        request(&mut log, 2, NOW - 50_000, 300, true, 600_000);
        restore_from_log(&log, &mut engine(), NOW).expect("start: snapshot at seq 3");
        request(&mut log, 3, NOW - 40_000, 400, true, 600_000);
        drop(log);
        let lines: Vec<String> = std::fs::read_to_string(&path)
            .expect("read")
            .lines()
            .map(str::to_owned)
            .collect();
        let write = |ls: &[String]| {
            std::fs::write(&path, format!("{}\n", ls.join("\n"))).expect("write");
        };

        // An entry after the snapshot is verified at open.
        let mut edited = lines.clone();
        edited[4] = edited[4].replace("\"amount\":400", "\"amount\":401");
        assert_ne!(edited[4], lines[4]);
        write(&edited);
        assert!(matches!(
            AuditLog::open_anchored(&path, ks.identity(), ks.state()),
            Err(AuditError::Invalid { line: 5, .. })
        ));

        // One before it is not re-read at start-up (its effect is in the sealed
        // snapshot); `quorate audit verify` still reports it.
        let mut edited = lines.clone();
        edited[0] = edited[0].replace("\"amount\":200", "\"amount\":201");
        assert_ne!(edited[0], lines[0]);
        write(&edited);
        let log = AuditLog::open_anchored(&path, ks.identity(), ks.state()).expect("opens");
        drop(log);
        let bad = crate::audit::verify(&path, None)
            .expect("verify")
            .first_bad
            .expect("reported");
        assert_eq!(bad.line, 1);

        // Cut below the snapshot: verification falls back to the start and the
        // anchor catches the truncation.
        write(&lines[..2]);
        assert!(matches!(
            AuditLog::open_anchored(&path, ks.identity(), ks.state()),
            Err(AuditError::Truncated {
                expected_seq: 5,
                found_entries: 2,
                ..
            })
        ));
    }

    #[test]
    fn snapshot_not_bound_to_the_log_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (ks, path) = setup(&dir);
        let mut log = AuditLog::open_anchored(&path, ks.identity(), ks.state()).expect("open");
        request(&mut log, 1, NOW - 60_000, 200, true, 600_000);
        restore_from_log(&log, &mut engine(), NOW).expect("start");
        // A snapshot claiming another hash for its entry (e.g. from another log).
        let plain = ks.state().audit_snapshot().expect("read").expect("written");
        let mut s = Snapshot::decode(&plain).expect("decodes");
        s.hash = [0xaa; 32];
        ks.state()
            .set_audit_snapshot(s.encode().expect("enc"))
            .expect("write");
        let err = restore_from_log(&log, &mut engine(), NOW).expect_err("unbound");
        assert!(matches!(err, AuditError::Snapshot(_)), "{err:?}");
        // Also with entries after it.
        request(&mut log, 2, NOW - 30_000, 10, true, 600_000);
        let err = restore_from_log(&log, &mut engine(), NOW).expect_err("unbound");
        assert!(matches!(err, AuditError::Snapshot(_)), "{err:?}");
    }
}

#[cfg(test)]
mod attempt_tests {
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
