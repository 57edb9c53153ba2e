//! Append-only, hash-chained, signed audit log (JSON lines).
//!
//! Every entry carries its sequence number, time, the writing node's id, a typed
//! [`AuditKind`], free-form details, the previous entry's hash, its own hash and an
//! Ed25519 signature by the node identity over that hash. Editing, deleting or
//! reordering entries breaks a hash, the chain or a signature, and [`verify`] reports
//! the first bad line. [`AuditLog::open`] verifies the existing log before appending
//! and refuses a log that does not verify (fail closed); an append that fails leaves
//! the log unusable, and the caller must not sign (security invariant 6: no signature
//! without an audit record).
//!
//! Deleting entries from the *end* of the log leaves a valid, shorter chain; detect
//! it by comparing [`VerifyReport::entries`] and [`VerifyReport::last_hash`] with a
//! value anchored elsewhere (e.g. exported to an auditor). The format is described
//! in the crate README.
//!
//! # Group commit
//!
//! An entry is *durable* once the log file has been synced past it and, for a log
//! opened with [`AuditLog::open_anchored`], the keystore's anchor has moved to it.
//! [`AuditLog::append`] makes each entry durable before it returns (one sync and one
//! anchor update per entry). To share that cost, [`AuditLog::append_deferred`]
//! builds, signs and writes an entry without syncing or anchoring it: the entry is
//! *written but not durable* (it is in the file, and a crash of the process keeps
//! it, but a crash of the host may lose it). [`AuditLog::commit`] then makes every
//! entry written since the last commit durable with one sync and one anchor update
//! (to the last of them); [`AuditLog::append`] commits pending entries along with
//! its own.
//!
//! The contract: **nothing that depends on a record may leave the node before
//! `commit()` returns `Ok`** — no signature share, no reply, no message to a peer.
//! A deferred append that returns `Ok` only reserves the entry's place in the
//! chain. If `commit` fails, the log is closed for appends (as after a failed
//! [`AuditLog::append`]) and every entry since the last successful commit must be
//! treated as not recorded: do not act on any of them. Entries that were written but
//! never committed (the node stopped or crashed in between) are accepted by the next
//! open when they are on disk and verify, exactly like entries whose anchor update
//! failed; they are synced and anchored before that open returns.

use std::{
    fmt,
    fs::{File, OpenOptions},
    io::{self, BufRead, BufReader, Read, Seek, Write},
    path::{Path, PathBuf},
};

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use quorate_protocol::{
    ids::{KeyId, NodeId, SessionId},
    suite::Ciphersuite,
    NodeIdentity,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::{
    keystore::{AuditAnchor, KeystoreError, StateStore},
    policy::Rule,
};

/// Entry format version.
pub const AUDIT_VERSION: u16 = 1;
/// Longest line accepted (bytes, without the newline).
pub const MAX_LINE: usize = 256 * 1024;

const HASH_DOMAIN: &[u8] = b"quorate/audit/v1\0";
const SIG_DOMAIN: &[u8] = b"quorate/audit-signature/v1\0";

/// Errors of the audit log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// File-system error.
    #[error("audit log {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Another writer holds the log.
    #[error("audit log {path} is locked by another writer")]
    Locked {
        /// The path.
        path: PathBuf,
    },
    /// The existing log does not verify; refusing to append to it.
    #[error("audit log {path} does not verify at line {line}: {reason}; refusing to append")]
    Invalid {
        /// The path.
        path: PathBuf,
        /// First bad line (1-based).
        line: usize,
        /// Why.
        reason: BadReason,
    },
    /// Writing an entry failed; the log is closed for appends. Do not sign.
    #[error("audit log {path}: write failed ({source}); no further entries will be written")]
    WriteFailed {
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// An earlier write failed; the log refuses appends until reopened and verified.
    #[error("audit log {path} is closed after an earlier write failure")]
    Poisoned {
        /// The path.
        path: PathBuf,
    },
    /// The details cannot be recorded faithfully.
    #[error("audit details rejected: {0}")]
    Details(String),
    /// The log ends before the entry the keystore anchored: entries were cut from
    /// the end, or the log was replaced by an older copy. Refusing to start.
    #[error(
        "audit log {path} is shorter than its anchor: the keystore expects an entry with seq \
         {expected_seq} but the log holds {found_entries} entries (seq 0..{found_entries}); it \
         was truncated or rolled back; refusing to start"
    )]
    Truncated {
        /// The path.
        path: PathBuf,
        /// The anchored seq.
        expected_seq: u64,
        /// Entries found (the last seq found is one less).
        found_entries: u64,
    },
    /// The log holds an entry at the anchored seq, but not the anchored one.
    #[error(
        "audit log {path} does not contain the anchored entry: seq {seq} should have hash \
         {expected} but has {found}; the log was replaced or rolled back; refusing to start"
    )]
    AnchorMismatch {
        /// The path.
        path: PathBuf,
        /// The anchored seq.
        seq: u64,
        /// Anchored hash (hex).
        expected: String,
        /// Hash found (hex).
        found: String,
    },
    /// Reading or writing the anchor in the keystore failed. After an append this
    /// closes the log for appends: do not sign.
    #[error("audit log {path}: anchor in the keystore: {source}")]
    Anchor {
        /// The log.
        path: PathBuf,
        /// The keystore error.
        #[source]
        source: KeystoreError,
    },
    /// The policy-state snapshot in the keystore is unusable or does not bind to
    /// this log.
    #[error("audit snapshot: {0}")]
    Snapshot(String),
    /// A line could not be read while exporting.
    #[error("audit log line {line}: {reason}")]
    BadLine {
        /// Line (1-based).
        line: usize,
        /// Why.
        reason: String,
    },
}

mod hex_id {
    //! Serde as lowercase hex for the protocol's id newtypes.
    use super::{KeyId, NodeId, SessionId};
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub(super) trait HexId: Sized {
        fn to_hex(&self) -> String;
        fn parse(s: &str) -> Option<Self>;
    }
    macro_rules! impl_hex_id {
        ($($t:ty),*) => {$(
            impl HexId for $t {
                fn to_hex(&self) -> String {
                    self.to_string()
                }
                fn parse(s: &str) -> Option<Self> {
                    <$t>::from_hex(s).ok()
                }
            }
        )*};
    }
    impl_hex_id!(NodeId, KeyId, SessionId);

    pub(super) fn serialize<T: HexId, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_hex())
    }
    pub(super) fn deserialize<'de, T: HexId, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
        let s = String::deserialize(d)?;
        T::parse(&s).ok_or_else(|| D::Error::custom("bad hex id"))
    }

    pub(super) mod vec {
        use super::HexId;
        use serde::{de::Error, ser::SerializeSeq, Deserialize, Deserializer, Serializer};

        pub(in super::super) fn serialize<T: HexId, S: Serializer>(
            v: &[T],
            s: S,
        ) -> Result<S::Ok, S::Error> {
            let mut seq = s.serialize_seq(Some(v.len()))?;
            for item in v {
                seq.serialize_element(&item.to_hex())?;
            }
            seq.end()
        }
        pub(in super::super) fn deserialize<'de, T: HexId, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Vec<T>, D::Error> {
            Vec::<String>::deserialize(d)?
                .iter()
                .map(|s| T::parse(s).ok_or_else(|| D::Error::custom("bad hex id")))
                .collect()
        }
    }
}

/// What happened. Serialized as an object with a snake_case `type` tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum AuditKind {
    /// The node started (audit log opened).
    NodeStarted,
    /// A keystore was created.
    KeystoreInitialized,
    /// The keystore was unsealed.
    Unsealed,
    /// A DKG finished and the share was stored.
    KeyGenerated {
        /// Key id.
        #[serde(with = "hex_id")]
        key_id: KeyId,
        /// Ciphersuite.
        suite: Ciphersuite,
    },
    /// A client signing request arrived.
    RequestReceived {
        /// SHA-256 request hash (hex), as signed by the client.
        request_hash: String,
    },
    /// Policy evaluated a request.
    PolicyDecision {
        /// Whether it was allowed.
        allowed: bool,
        /// The refusing rule (absent when allowed).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rule: Option<Rule>,
    },
    /// A signing session was started for an allowed request (first or retry);
    /// `details` carries `message_hash`, `attempt` (for that message) and `key_id`.
    SignAttempt {
        /// Session.
        #[serde(with = "hex_id")]
        session: SessionId,
        /// SHA-256 request hash (hex).
        request_hash: String,
    },
    /// This node approved a request for the window (its policy allowed it and
    /// reserved the amount) and signed the approval; `details` carries `key_id`,
    /// `asset`, `amount`, `required_quorum` and `coordinator`. Committed before the
    /// approval is sent.
    WindowApproved {
        /// SHA-256 request hash (hex).
        request_hash: String,
    },
    /// This node contributed a signature share; committed (written, synced and
    /// anchored) before the share is sent. `details` carries `request_hash` and
    /// `message_hash`.
    ShareContributed {
        /// Key id.
        #[serde(with = "hex_id")]
        key_id: KeyId,
        /// Session.
        #[serde(with = "hex_id")]
        session: SessionId,
    },
    /// A session was aborted.
    SessionAborted {
        /// Session.
        #[serde(with = "hex_id")]
        session: SessionId,
        /// Nodes blamed (may be empty: timeout).
        #[serde(with = "hex_id::vec")]
        culprits: Vec<NodeId>,
    },
    /// This node took part in an operator-approved refresh or reshare (details:
    /// kind, generation, committee, threshold, dealers, approvers).
    LifecycleStarted {
        /// Key id.
        #[serde(with = "hex_id")]
        key_id: KeyId,
        /// Session.
        #[serde(with = "hex_id")]
        session: SessionId,
    },
    /// A refresh or reshare finished here: the new generation replaced the old
    /// share, or (a member that left) the old share was deleted (details: role,
    /// threshold, participants, group key).
    KeyReshared {
        /// Key id.
        #[serde(with = "hex_id")]
        key_id: KeyId,
        /// The generation now in force.
        generation: u64,
    },
    /// This node derived and stored (pending) its share of a refresh or reshare and
    /// is about to confirm it (details: generation).
    ShareConfirmed {
        /// Key id.
        #[serde(with = "hex_id")]
        key_id: KeyId,
        /// Session.
        #[serde(with = "hex_id")]
        session: SessionId,
    },
    /// This node's lost share was repaired by helpers and stored (details:
    /// session, participants).
    KeyRepaired {
        /// Key id.
        #[serde(with = "hex_id")]
        key_id: KeyId,
        /// The generation of the repaired share.
        generation: u64,
    },
    /// The coordinator aborted a refresh or reshare before it committed: a pending
    /// share was dropped, the old generation stays (details: reason).
    LifecycleAborted {
        /// Key id.
        #[serde(with = "hex_id")]
        key_id: KeyId,
        /// Session.
        #[serde(with = "hex_id")]
        session: SessionId,
    },
    /// A new policy was loaded.
    PolicyReloaded,
    /// A policy reload failed; the old policy stays in force.
    PolicyReloadFailed,
    /// A peer was quarantined.
    PeerQuarantined {
        /// The peer.
        #[serde(with = "hex_id")]
        peer: NodeId,
    },
    /// The node is shutting down.
    NodeStopped,
    /// At open, a torn final line after the anchored entry (a write interrupted by a
    /// crash before it was synced, so never acted on) was cut away.
    TornTailRepaired {
        /// Bytes removed.
        removed_bytes: u64,
    },
    /// A client-authorised netting round was accepted; `details` carries `client`
    /// (key hex), `client_name`, `spec_digest`, `key_id`, `parties` and `cutoff`.
    NettingRoundAccepted {
        /// Round id (hex).
        round: String,
    },
    /// A party's input bundle was verified and kept; `details` carries `party`
    /// (name) and `digest` (bundle digest hex).
    NettingBundleAccepted {
        /// Round id (hex).
        round: String,
    },
    /// A party's input bundle was refused; `details` carries `party` (name or
    /// `#index`), `reason` (`netting:<code>`) and `detail`.
    NettingBundleRefused {
        /// Round id (hex).
        round: String,
    },
    /// A round was closed and this node's outputs signed; `details` carries
    /// `inputs_digest` and `participants`.
    NettingClosed {
        /// Round id (hex).
        round: String,
    },
    /// This node agreed to sign a round's settlement batch, before its signer
    /// started; `details` carries `message` (hex), `attempt` and `key_id`.
    SettlementApproved {
        /// Round id (hex).
        round: String,
        /// The signing session.
        #[serde(with = "hex_id")]
        session: SessionId,
    },
    /// This node refused to sign a round's settlement batch by its policy's
    /// limits; `details` carries `rule` (`settlement_limit`), `detail` (naming
    /// party, asset, amount and limit; the batch is public) and `session`.
    SettlementRefused {
        /// Round id (hex).
        round: String,
    },
    /// A limit-check attempt started on a closed round; `details` carries
    /// `attempt`, `inputs_digest` and `comparisons`.
    LimitCheckStarted {
        /// Round id (hex).
        round: String,
    },
    /// A limit check finished and this node signed its verdict; `details` carries
    /// `attempt`, `covered`, `failed` (party names, when the round reveals them)
    /// and `verdict_digest`. Public outputs are released only after `covered`.
    LimitVerdict {
        /// Round id (hex).
        round: String,
    },
    /// A limit-check attempt stopped; `details` carries `attempt`, `step`,
    /// `reason` and `culprits` (node ids hex, as far as identified).
    LimitCheckAborted {
        /// Round id (hex).
        round: String,
    },
}

/// One entry, as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Format version ([`AUDIT_VERSION`]).
    pub version: u16,
    /// Sequence number, from 0.
    pub seq: u64,
    /// Unix time, ms.
    pub time_ms: u64,
    /// The writing node.
    #[serde(with = "hex_id")]
    pub node: NodeId,
    /// What happened.
    pub kind: AuditKind,
    /// Free-form details (integers and strings; no floating point).
    pub details: Value,
    /// Hash of the previous entry (zeros for the first).
    #[serde(with = "hex::serde")]
    pub prev_hash: [u8; 32],
    /// SHA-256 over the domain and the canonical encoding of all other fields.
    #[serde(with = "hex::serde")]
    pub hash: [u8; 32],
    /// Ed25519 signature by `node` over the signature domain and `hash`.
    #[serde(with = "hex::serde")]
    pub signature: [u8; 64],
}

/// Canonical JSON: object keys sorted, no whitespace, serde_json's escaping.
fn canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                if let Some(inner) = map.get(k) {
                    canonical(inner, out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

fn canonical_string(v: &Value) -> String {
    let mut s = String::new();
    canonical(v, &mut s);
    s
}

/// Hash of an entry object without its `hash` and `signature` members.
fn entry_hash(obj: &Map<String, Value>) -> [u8; 32] {
    let mut body = obj.clone();
    body.remove("hash");
    body.remove("signature");
    let mut h = Sha256::new();
    h.update(HASH_DOMAIN);
    h.update(canonical_string(&Value::Object(body)).as_bytes());
    h.finalize().into()
}

fn signed_message(hash: &[u8; 32]) -> Vec<u8> {
    let mut m = SIG_DOMAIN.to_vec();
    m.extend_from_slice(hash);
    m
}

fn check_details(v: &Value) -> Result<(), AuditError> {
    match v {
        Value::Number(n) if !(n.is_u64() || n.is_i64()) => Err(AuditError::Details(
            "floating-point numbers are not allowed (they do not re-encode exactly)".into(),
        )),
        Value::Array(items) => items.iter().try_for_each(check_details),
        Value::Object(map) => map.values().try_for_each(check_details),
        _ => Ok(()),
    }
}

impl AuditError {
    /// True when the log itself failed (I/O, closed after a failed write): the node
    /// must stop signing (invariant 6). False when only the record was refused
    /// ([`AuditError::Details`]): that one request is refused, the node goes on.
    pub fn is_log_failure(&self) -> bool {
        !matches!(self, Self::Details(_))
    }
}

/// Why an entry is bad.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BadReason {
    /// Not a JSON object with the required fields.
    Malformed(String),
    /// Unknown format version.
    UnsupportedVersion(u16),
    /// The stored hash does not match the content (the entry was edited).
    BadHash,
    /// The signature does not verify under the entry's node id.
    BadSignature,
    /// `prev_hash` is not the previous entry's hash (deleted, inserted or reordered).
    BrokenChain,
    /// The sequence number is not the next one.
    SeqGap {
        /// Expected.
        expected: u64,
        /// Found.
        found: u64,
    },
    /// Written by another node than expected (or than earlier entries).
    WrongNode {
        /// Expected.
        expected: NodeId,
        /// Found.
        found: NodeId,
    },
}

impl fmt::Display for BadReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed(why) => write!(f, "malformed entry: {why}"),
            Self::UnsupportedVersion(v) => write!(f, "unsupported entry version {v}"),
            Self::BadHash => f.write_str("bad hash: the entry was altered"),
            Self::BadSignature => f.write_str("bad signature"),
            Self::BrokenChain => f.write_str(
                "broken chain: prev_hash does not match the previous entry (entry deleted, inserted or reordered)",
            ),
            Self::SeqGap { expected, found } => {
                write!(f, "sequence gap: expected seq {expected}, found {found}")
            }
            Self::WrongNode { expected, found } => {
                write!(f, "wrong node: expected {expected}, found {found}")
            }
        }
    }
}

/// The first bad entry of a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadEntry {
    /// Line number (1-based).
    pub line: usize,
    /// The entry's seq, if it could be read.
    pub seq: Option<u64>,
    /// Why.
    pub reason: BadReason,
}

/// Result of verifying a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Entries that verified (all of them when `first_bad` is `None`).
    pub entries: u64,
    /// The node that wrote the log (from the first entry).
    pub node: Option<NodeId>,
    /// Hash of the last good entry.
    pub last_hash: Option<[u8; 32]>,
    /// Time of the last good entry.
    pub last_time_ms: Option<u64>,
    /// The first bad entry, if any.
    pub first_bad: Option<BadEntry>,
}

impl VerifyReport {
    /// Whether the whole log verified.
    pub fn is_valid(&self) -> bool {
        self.first_bad.is_none()
    }
}

#[derive(Deserialize)]
struct Core {
    version: u16,
    seq: u64,
    time_ms: u64,
    node: String,
    prev_hash: String,
    hash: String,
    signature: String,
}

fn hex_array<const N: usize>(s: &str, what: &str) -> Result<[u8; N], BadReason> {
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out)
        .map_err(|_| BadReason::Malformed(format!("{what} is not {N} bytes of hex")))?;
    Ok(out)
}

/// A line checked on its own (hash, signature); chain checks need the previous one.
struct Checked {
    seq: u64,
    time_ms: u64,
    node: NodeId,
    prev_hash: [u8; 32],
    hash: [u8; 32],
}

fn check_line(line: &[u8]) -> Result<Checked, (Option<u64>, BadReason)> {
    let value: Value = serde_json::from_slice(line)
        .map_err(|e| (None, BadReason::Malformed(format!("not JSON: {e}"))))?;
    let Value::Object(obj) = value else {
        return Err((None, BadReason::Malformed("not a JSON object".into())));
    };
    let core: Core = serde_json::from_value(Value::Object(obj.clone()))
        .map_err(|e| (None, BadReason::Malformed(e.to_string())))?;
    let seq = Some(core.seq);
    if core.version != AUDIT_VERSION {
        return Err((seq, BadReason::UnsupportedVersion(core.version)));
    }
    let node = NodeId::from_hex(&core.node).map_err(|_| {
        (
            seq,
            BadReason::Malformed("node is not 32 bytes of hex".into()),
        )
    })?;
    let prev_hash = hex_array::<32>(&core.prev_hash, "prev_hash").map_err(|r| (seq, r))?;
    let hash = hex_array::<32>(&core.hash, "hash").map_err(|r| (seq, r))?;
    let signature = hex_array::<64>(&core.signature, "signature").map_err(|r| (seq, r))?;
    if entry_hash(&obj) != hash {
        return Err((seq, BadReason::BadHash));
    }
    let sig = Signature::from_bytes(&signature);
    let signed = VerifyingKey::from_bytes(node.as_bytes())
        .map(|k| !k.is_weak() && k.verify_strict(&signed_message(&hash), &sig).is_ok())
        .unwrap_or(false);
    if !signed {
        return Err((seq, BadReason::BadSignature));
    }
    Ok(Checked {
        seq: core.seq,
        time_ms: core.time_ms,
        node,
        prev_hash,
        hash,
    })
}

/// One line as read: its length on disk and whether it ended with a newline.
#[derive(Clone, Copy)]
struct LineRead {
    bytes: u64,
    terminated: bool,
}

/// Reads one line of at most [`MAX_LINE`] bytes; `Ok(None)` at end of file.
fn read_line(reader: &mut impl BufRead, buf: &mut Vec<u8>) -> io::Result<Option<LineRead>> {
    buf.clear();
    let n = reader
        .by_ref()
        .take(MAX_LINE as u64 + 2)
        .read_until(b'\n', buf)?;
    if n == 0 {
        return Ok(None);
    }
    let terminated = buf.last() == Some(&b'\n');
    if terminated {
        buf.pop();
    }
    Ok(Some(LineRead {
        bytes: n as u64,
        terminated,
    }))
}

/// A verification pass with the extra facts opening an anchored log needs.
struct Scan {
    report: VerifyReport,
    /// Bytes up to the end of the last good line.
    good_end: u64,
    /// The first bad line is the last line of the file and has no newline: the
    /// shape of a write interrupted by a crash.
    torn_tail: bool,
    /// Hash and end offset of the entry with the watched seq, if it verified.
    watched: Option<([u8; 32], u64)>,
}

/// Verifies a log read from `reader`. `expected_node`, if given, must have written
/// every entry; otherwise every entry must be by the first entry's node.
pub fn verify_reader(
    reader: impl BufRead,
    expected_node: Option<NodeId>,
) -> Result<VerifyReport, io::Error> {
    Ok(scan(reader, expected_node, None, None)?.report)
}

/// A verified point of the chain to resume verification from: (seq, hash, end
/// offset of that entry's line). The reader must be positioned at the offset.
type Checkpoint = (u64, [u8; 32], u64);

/// Streams the log (one line in memory at a time), verifying as [`verify_reader`],
/// and remembers the hash of entry `watch` and where the good prefix ends.
fn scan(
    mut reader: impl BufRead,
    expected_node: Option<NodeId>,
    watch: Option<u64>,
    start: Option<Checkpoint>,
) -> Result<Scan, io::Error> {
    let mut good_end = 0u64;
    let mut torn_tail = false;
    let mut watched = None;
    let mut report = VerifyReport {
        entries: 0,
        node: None,
        last_hash: None,
        last_time_ms: None,
        first_bad: None,
    };
    let mut line_no = 0usize;
    if let Some((seq, hash, end)) = start {
        // One entry per line: the checkpoint's entry is line seq + 1.
        report.entries = seq + 1;
        report.node = expected_node;
        report.last_hash = Some(hash);
        line_no = usize::try_from(seq + 1).unwrap_or(usize::MAX);
        good_end = end;
        if watch == Some(seq) {
            watched = Some((hash, end));
        }
    }
    let mut buf = Vec::new();
    while let Some(read) = read_line(&mut reader, &mut buf)? {
        line_no += 1;
        torn_tail = !read.terminated && buf.len() <= MAX_LINE;
        let bad = |seq, reason| BadEntry {
            line: line_no,
            seq,
            reason,
        };
        if buf.len() > MAX_LINE {
            report.first_bad = Some(bad(None, BadReason::Malformed("line too long".into())));
            break;
        }
        let checked = match check_line(&buf) {
            Ok(c) => c,
            Err((seq, BadReason::BadSignature)) => {
                // Report a wrong node in preference to a bad signature.
                let node = serde_json::from_slice::<Core>(&buf)
                    .ok()
                    .and_then(|c| NodeId::from_hex(&c.node).ok());
                let want = expected_node.or(report.node);
                let reason = match (want, node) {
                    (Some(expected), Some(found)) if expected != found => {
                        BadReason::WrongNode { expected, found }
                    }
                    _ => BadReason::BadSignature,
                };
                report.first_bad = Some(bad(seq, reason));
                break;
            }
            Err((seq, reason)) => {
                report.first_bad = Some(bad(seq, reason));
                break;
            }
        };
        let want = expected_node.or(report.node);
        if let Some(expected) = want {
            if checked.node != expected {
                report.first_bad = Some(bad(
                    Some(checked.seq),
                    BadReason::WrongNode {
                        expected,
                        found: checked.node,
                    },
                ));
                break;
            }
        }
        let prev = report.last_hash.unwrap_or([0; 32]);
        if checked.prev_hash != prev {
            report.first_bad = Some(bad(Some(checked.seq), BadReason::BrokenChain));
            break;
        }
        if checked.seq != report.entries {
            report.first_bad = Some(bad(
                Some(checked.seq),
                BadReason::SeqGap {
                    expected: report.entries,
                    found: checked.seq,
                },
            ));
            break;
        }
        report.node.get_or_insert(checked.node);
        report.entries += 1;
        report.last_hash = Some(checked.hash);
        report.last_time_ms = Some(checked.time_ms);
        good_end += read.bytes;
        if watch == Some(checked.seq) {
            watched = Some((checked.hash, good_end));
        }
    }
    Ok(Scan {
        torn_tail: torn_tail && report.first_bad.is_some(),
        report,
        good_end,
        watched,
    })
}

/// Verifies the log at `path` end to end (`quorate audit verify`): every entry's
/// hash, signature, node, chain link and sequence number. I/O problems are errors;
/// a bad entry is reported in [`VerifyReport::first_bad`].
pub fn verify(path: &Path, expected_node: Option<NodeId>) -> Result<VerifyReport, AuditError> {
    let io_err = |source| AuditError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io_err)?;
    verify_reader(BufReader::new(file), expected_node).map_err(io_err)
}

/// Writes the entries with `time_ms >= since_ms` to `out`, one JSON line each, as
/// stored (`quorate audit export --since`). Returns the number written. Does not
/// verify; run [`verify`] for that.
pub fn export_to(path: &Path, since_ms: u64, out: &mut impl Write) -> Result<u64, AuditError> {
    let io_err = |source| AuditError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut reader = BufReader::new(File::open(path).map_err(io_err)?);
    let mut buf = Vec::new();
    let mut line = 0usize;
    let mut written = 0u64;
    while read_line(&mut reader, &mut buf).map_err(io_err)?.is_some() {
        line += 1;
        if buf.len() > MAX_LINE {
            return Err(AuditError::BadLine {
                line,
                reason: "line too long".into(),
            });
        }
        let core: Core = serde_json::from_slice(&buf).map_err(|e| AuditError::BadLine {
            line,
            reason: e.to_string(),
        })?;
        if core.time_ms >= since_ms {
            out.write_all(&buf).map_err(io_err)?;
            out.write_all(b"\n").map_err(io_err)?;
            written += 1;
        }
    }
    Ok(written)
}

/// The entries with `time_ms >= since_ms`, as JSON lines (without newlines).
pub fn export(path: &Path, since_ms: u64) -> Result<Vec<String>, AuditError> {
    let mut out = Vec::new();
    export_to(path, since_ms, &mut out)?;
    let text = String::from_utf8(out).map_err(|_| AuditError::BadLine {
        line: 0,
        reason: "not UTF-8".into(),
    })?;
    Ok(text.lines().map(str::to_owned).collect())
}

/// Reads every entry as typed values (does not verify).
pub fn read_entries(path: &Path) -> Result<Vec<AuditEntry>, AuditError> {
    export(path, 0)?
        .iter()
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| AuditError::BadLine {
                line: i + 1,
                reason: e.to_string(),
            })
        })
        .collect()
}

/// An open audit log that this node appends to.
pub struct AuditLog {
    path: PathBuf,
    file: File,
    signing: SigningKey,
    node: NodeId,
    next_seq: u64,
    prev_hash: [u8; 32],
    poisoned: bool,
    /// File length (end of the last entry written, committed or not).
    len: u64,
    /// Where every commit is anchored (the keystore), if opened anchored.
    state: Option<StateStore>,
    /// Entries written since the last successful commit (not durable yet).
    pending: usize,
    /// Durability work done so far.
    stats: AuditStats,
    /// Test hook: every later sync of the log fails.
    #[cfg(test)]
    fail_syncs: bool,
}

/// Counters of the durability work of an open [`AuditLog`] (for metrics and tests).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuditStats {
    /// Successful commits that made at least one entry durable (each
    /// [`AuditLog::append`] is one, a [`AuditLog::commit`] with nothing pending is
    /// none).
    pub commits: u64,
    /// Syncs of the log file issued since it was opened, failed ones included
    /// (by commits, and by the open itself when it repairs or anchors the log).
    pub syncs: u64,
    /// Anchor updates written to the keystore since the log was opened (by commits,
    /// and by the open itself when it moves the anchor to the end of the log).
    pub anchor_updates: u64,
}

impl fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditLog")
            .field("path", &self.path)
            .field("node", &self.node)
            .field("next_seq", &self.next_seq)
            .field("pending", &self.pending)
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

/// Whether `offset` is within the file and just after a newline (or 0).
fn at_line_boundary(file: &mut File, offset: u64) -> io::Result<bool> {
    if offset == 0 {
        return Ok(true);
    }
    if file.metadata()?.len() < offset {
        return Ok(false);
    }
    let mut last = [0u8; 1];
    file.seek(io::SeekFrom::Start(offset - 1))?;
    file.read_exact(&mut last)?;
    Ok(last[0] == b'\n')
}

/// The Ed25519 key the node identity signs with, for audit signatures.
///
/// # Security
/// Copies the identity's Ed25519 secret seed (the first 32 bytes of
/// [`NodeIdentity::to_secret_bytes`]) into a `SigningKey`, which zeroizes itself on
/// drop; the intermediate buffer is zeroizing too. Audit signatures are domain
/// separated (`quorate/audit-signature/v1`) from every protocol signature by the
/// same key.
fn audit_signing_key(identity: &NodeIdentity) -> SigningKey {
    let secret = identity.to_secret_bytes();
    let mut seed = zeroize::Zeroizing::new([0u8; 32]);
    seed.copy_from_slice(&secret[..32]);
    SigningKey::from_bytes(&seed)
}

impl AuditLog {
    /// Opens (creating if absent) the log at `path` for appending as `identity`.
    /// Takes an exclusive lock, verifies the existing entries (all must be by this
    /// node) and resumes the chain after the last one. Refuses with
    /// [`AuditError::Invalid`] if the log does not verify: fail closed.
    ///
    /// # Security
    /// Derives the node's Ed25519 signing key from `identity` (see the module docs);
    /// it is held in memory, zeroized on drop, and used only for audit signatures.
    pub fn open(path: impl AsRef<Path>, identity: &NodeIdentity) -> Result<Self, AuditError> {
        Self::open_inner(path.as_ref(), identity, None)
    }

    /// As [`Self::open`], and anchors the log in the keystore: the log must contain
    /// the entry recorded in `state` (same seq and hash), else it was truncated or
    /// rolled back and the open fails ([`AuditError::Truncated`],
    /// [`AuditError::AnchorMismatch`]). A torn final line (no newline, does not
    /// verify) *after* the anchored entry is the unsynced tail of a crashed write:
    /// it is cut away and a `torn_tail_repaired` entry is appended. A torn line at
    /// or before the anchor, or a bad line anywhere else, is refused. Complete
    /// entries after the anchored one (written but never committed, or whose anchor
    /// update failed) are accepted: the file is synced and the anchor moved to the
    /// last of them before this returns. Every later commit ([`Self::append`], or
    /// [`Self::commit`] after deferred appends) moves the anchor to the last entry
    /// written before it returns. When the keystore holds a policy snapshot (see
    /// `recovery`) at or before the anchored entry, verification resumes at the
    /// snapshot's entry instead of the start (the prefix is checked by [`verify`]);
    /// a snapshot beyond the anchor (taken over entries that were never committed)
    /// is not trusted as a starting point, and the whole log is verified.
    ///
    /// # Security
    /// As [`Self::open`]. The anchor is sealed in the keystore, so only this node
    /// can move it; rolling back the keystore file *and* the log together to an
    /// older consistent pair is not detected (that needs state outside the host).
    pub fn open_anchored(
        path: impl AsRef<Path>,
        identity: &NodeIdentity,
        state: StateStore,
    ) -> Result<Self, AuditError> {
        Self::open_inner(path.as_ref(), identity, Some(state))
    }

    fn open_inner(
        path: &Path,
        identity: &NodeIdentity,
        state: Option<StateStore>,
    ) -> Result<Self, AuditError> {
        let path = path.to_path_buf();
        let io_err = |source| AuditError::Io {
            path: path.clone(),
            source,
        };
        let mut options = OpenOptions::new();
        options.read(true).append(true).create(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o640);
        }
        let mut file = options.open(&path).map_err(io_err)?;
        file.try_lock().map_err(|e| match e {
            std::fs::TryLockError::WouldBlock => AuditError::Locked { path: path.clone() },
            std::fs::TryLockError::Error(source) => io_err(source),
        })?;
        file.rewind().map_err(io_err)?;
        let node = identity.node_id();
        let anchor_err = |source| AuditError::Anchor {
            path: path.clone(),
            source,
        };
        let anchor = match &state {
            Some(st) => st.audit_anchor().map_err(anchor_err)?,
            None => None,
        };
        // Resume verification at the snapshot (a point verified at an earlier start
        // and sealed in the keystore) when the file still has a line boundary there;
        // otherwise verify from the start.
        let checkpoint = match &state {
            Some(st) => st
                .audit_snapshot()
                .map_err(anchor_err)?
                .and_then(|b| crate::recovery::snapshot_checkpoint(&b)),
            None => None,
        };
        // Only a snapshot of durable entries (at or before the anchor) is a safe
        // starting point: one taken over entries that were never committed may
        // describe a tail that a crash of the host has since lost, and resuming
        // there would also skip the anchored entry.
        let checkpoint = match checkpoint {
            Some(cp)
                if anchor.is_some_and(|a| cp.0 <= a.seq)
                    && at_line_boundary(&mut file, cp.2).map_err(io_err)? =>
            {
                Some(cp)
            }
            _ => None,
        };
        file.seek(io::SeekFrom::Start(checkpoint.map_or(0, |c| c.2)))
            .map_err(io_err)?;
        let scanned = scan(
            BufReader::new(&mut file),
            Some(node),
            anchor.map(|a| a.seq),
            checkpoint,
        )
        .map_err(io_err)?;
        let report = scanned.report;
        let mut repaired = None;
        let mut syncs = 0u64;
        if let Some(bad) = report.first_bad {
            // Only the unsynced tail may be cut: a torn last line after the anchored
            // entry (or, before any anchor exists, in an otherwise empty log).
            let after_anchor = match anchor {
                Some(a) => a.seq < report.entries,
                None => state.is_some() && report.entries == 0,
            };
            if !(scanned.torn_tail && after_anchor) {
                return Err(AuditError::Invalid {
                    path,
                    line: bad.line,
                    reason: bad.reason,
                });
            }
            let len = file.metadata().map_err(io_err)?.len();
            syncs += 1;
            file.set_len(scanned.good_end)
                .and_then(|()| file.sync_all())
                .map_err(io_err)?;
            let removed = len - scanned.good_end;
            tracing::warn!(
                path = %path.display(),
                removed_bytes = removed,
                after_seq = report.entries.checked_sub(1),
                "audit log: cut a torn final line (a write interrupted before it was synced)"
            );
            repaired = Some(removed);
        }
        if let Some(a) = anchor {
            if report.entries <= a.seq {
                return Err(AuditError::Truncated {
                    path,
                    expected_seq: a.seq,
                    found_entries: report.entries,
                });
            }
            match scanned.watched {
                Some((hash, end)) if hash == a.hash && end == a.end_offset => {}
                found => {
                    return Err(AuditError::AnchorMismatch {
                        path,
                        seq: a.seq,
                        expected: hex::encode(a.hash),
                        found: found.map_or_else(|| "none".into(), |(h, _)| hex::encode(h)),
                    })
                }
            }
        }
        // A complete last entry without its newline (edited by hand): terminate it so
        // the next entry starts on its own line. A torn entry never gets here: it
        // does not verify.
        let len = file.metadata().map_err(io_err)?.len();
        if len > 0 {
            let mut last = [0u8; 1];
            file.seek(io::SeekFrom::End(-1)).map_err(io_err)?;
            file.read_exact(&mut last).map_err(io_err)?;
            if last[0] != b'\n' {
                syncs += 1;
                file.write_all(b"\n")
                    .and_then(|()| file.sync_data())
                    .map_err(io_err)?;
            }
        }
        let len = file.metadata().map_err(io_err)?.len();
        let mut log = Self {
            path,
            file,
            signing: audit_signing_key(identity),
            node,
            next_seq: report.entries,
            prev_hash: report.last_hash.unwrap_or([0; 32]),
            poisoned: false,
            len,
            state,
            pending: 0,
            stats: AuditStats {
                syncs,
                ..AuditStats::default()
            },
            #[cfg(test)]
            fail_syncs: false,
        };
        // Bring the anchor up to the end of the log (entries written after the last
        // commit or whose anchor update failed, or a log anchored for the first
        // time). Such entries may never have been synced (a crash between a write
        // and its commit): sync them first, so the anchor never points past what
        // is durable.
        if let Some(last) = report
            .entries
            .checked_sub(1)
            .filter(|_| log.state.is_some())
        {
            let current = AuditAnchor {
                seq: last,
                hash: log.prev_hash,
                end_offset: log.len,
            };
            if anchor != Some(current) {
                log.sync_file().map_err(|source| AuditError::Io {
                    path: log.path.clone(),
                    source,
                })?;
                log.write_anchor(&current)?;
            }
        }
        if let Some(removed_bytes) = repaired {
            log.append(
                AuditKind::TornTailRepaired { removed_bytes },
                Value::Object(Map::new()),
            )?;
        }
        Ok(log)
    }

    /// The anchor store, when the log was opened anchored.
    ///
    /// State sealed there that refers to a point of the log (the policy snapshot of
    /// `recovery`) must be taken at a durable point: only when [`Self::pending`] is
    /// 0, i.e. after a successful [`Self::commit`]. (An open does not resume
    /// verification at a snapshot beyond the anchor.)
    pub fn state(&self) -> Option<&StateStore> {
        self.state.as_ref()
    }

    /// Test hook: later appends write to `file` instead (e.g. `/dev/full`, to see what
    /// the node does when its disk fails).
    #[cfg(test)]
    pub(crate) fn redirect_writes_for_test(&mut self, file: File) {
        self.file = file;
    }

    /// Test hook: every later sync of the log file fails (writes still succeed), to
    /// see what a failed commit does.
    #[cfg(test)]
    pub(crate) fn fail_syncs_for_test(&mut self) {
        self.fail_syncs = true;
    }

    /// The log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The next sequence number (after every entry written, committed or not).
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Length of the log file: the end of the last entry written, committed or not.
    pub fn end_offset(&self) -> u64 {
        self.len
    }

    /// Hash of the last entry written, committed or not (zeros if empty).
    pub fn last_hash(&self) -> [u8; 32] {
        self.prev_hash
    }

    /// Entries written since the last successful [`Self::commit`]: written but not
    /// durable. Nothing that depends on them may leave the node yet. After a failed
    /// commit they stay counted here (they are not durable, and never will be by
    /// this handle: the log is closed for appends).
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// Counters of commits, syncs and anchor updates since the log was opened.
    pub fn stats(&self) -> AuditStats {
        self.stats
    }

    /// Appends an entry stamped with the system clock and commits it, together with
    /// every pending entry written before it ([`Self::append_deferred`]), before
    /// returning: the file is synced and, when anchored, the anchor moved to it.
    /// An error means the entry (and every pending one) may not be recorded: the
    /// caller must not sign, nor act on any of them. When the entry is refused
    /// ([`AuditError::Details`]) nothing is written and pending entries stay
    /// pending.
    pub fn append(&mut self, kind: AuditKind, details: Value) -> Result<AuditEntry, AuditError> {
        self.append_at(now_ms(), kind, details)
    }

    /// Appends an entry with a caller-supplied time (Unix ms). As [`Self::append`].
    pub fn append_at(
        &mut self,
        time_ms: u64,
        kind: AuditKind,
        details: Value,
    ) -> Result<AuditEntry, AuditError> {
        let entry = self.append_deferred_at(time_ms, kind, details)?;
        self.commit()?;
        Ok(entry)
    }

    /// Writes an entry stamped with the system clock *without* making it durable:
    /// it is built, signed and written to the file, and takes its place in the
    /// chain (seq, hash), but the file is not synced and the anchor does not move.
    /// It becomes durable at the next successful [`Self::commit`] (or
    /// [`Self::append`]).
    ///
    /// Nothing that depends on the entry may leave the node before that commit
    /// returns `Ok`. An error is as for [`Self::append`]; a failed write closes the
    /// log for appends, and pending entries written before it are then not durable
    /// either.
    pub fn append_deferred(
        &mut self,
        kind: AuditKind,
        details: Value,
    ) -> Result<AuditEntry, AuditError> {
        self.append_deferred_at(now_ms(), kind, details)
    }

    /// As [`Self::append_deferred`], with a caller-supplied time (Unix ms).
    pub fn append_deferred_at(
        &mut self,
        time_ms: u64,
        kind: AuditKind,
        details: Value,
    ) -> Result<AuditEntry, AuditError> {
        if self.poisoned {
            return Err(AuditError::Poisoned {
                path: self.path.clone(),
            });
        }
        check_details(&details)?;
        let mut entry = AuditEntry {
            version: AUDIT_VERSION,
            seq: self.next_seq,
            time_ms,
            node: self.node,
            kind,
            details,
            prev_hash: self.prev_hash,
            hash: [0; 32],
            signature: [0; 64],
        };
        let Value::Object(obj) = serde_json::to_value(&entry)
            .map_err(|e| AuditError::Details(format!("entry does not encode: {e}")))?
        else {
            return Err(AuditError::Details("entry is not an object".into()));
        };
        entry.hash = entry_hash(&obj);
        entry.signature = self.signing.sign(&signed_message(&entry.hash)).to_bytes();
        let value = serde_json::to_value(&entry)
            .map_err(|e| AuditError::Details(format!("entry does not encode: {e}")))?;
        let mut line = canonical_string(&value);
        if line.len() > MAX_LINE {
            return Err(AuditError::Details(format!(
                "entry is {} bytes; the limit is {MAX_LINE}",
                line.len()
            )));
        }
        line.push('\n');
        if let Err(source) = self.file.write_all(line.as_bytes()) {
            self.poisoned = true;
            return Err(AuditError::WriteFailed {
                path: self.path.clone(),
                source,
            });
        }
        self.next_seq += 1;
        self.prev_hash = entry.hash;
        self.len += line.len() as u64;
        self.pending += 1;
        Ok(entry)
    }

    /// Makes every pending entry durable: one sync of the log file and, when
    /// anchored, one anchor update to the last entry written (its seq, hash and end
    /// offset). Does nothing when nothing is pending.
    ///
    /// Only once this returns `Ok` may anything that depends on those entries leave
    /// the node. On error the log is closed for appends ([`AuditError::WriteFailed`]
    /// when the sync failed, [`AuditError::Anchor`] when the anchor update did; then
    /// [`AuditError::Poisoned`] on every later call) and every entry written since
    /// the last successful commit must be treated as not recorded: do not sign, and
    /// do not act on any of them. The next open accepts those of them that reached
    /// the disk.
    pub fn commit(&mut self) -> Result<(), AuditError> {
        if self.poisoned {
            return Err(AuditError::Poisoned {
                path: self.path.clone(),
            });
        }
        // The last pending entry (pending entries imply a last entry).
        let Some(seq) = self.next_seq.checked_sub(1).filter(|_| self.pending > 0) else {
            return Ok(());
        };
        if let Err(source) = self.sync_file() {
            self.poisoned = true;
            return Err(AuditError::WriteFailed {
                path: self.path.clone(),
                source,
            });
        }
        let anchor = AuditAnchor {
            seq,
            hash: self.prev_hash,
            end_offset: self.len,
        };
        if let Err(e) = self.write_anchor(&anchor) {
            // The entries are on disk (the next open re-anchors them), but a node
            // that cannot anchor its log must not act: fail closed.
            self.poisoned = true;
            return Err(e);
        }
        self.pending = 0;
        self.stats.commits += 1;
        Ok(())
    }

    /// Syncs the log file's data, counting it.
    fn sync_file(&mut self) -> io::Result<()> {
        self.stats.syncs += 1;
        #[cfg(test)]
        if self.fail_syncs {
            return Err(io::Error::other("sync failure injected by a test"));
        }
        self.file.sync_data()
    }

    /// Moves the anchor in the keystore (if anchored), counting it.
    fn write_anchor(&mut self, anchor: &AuditAnchor) -> Result<(), AuditError> {
        let Some(st) = &self.state else {
            return Ok(());
        };
        st.set_audit_anchor(anchor)
            .map_err(|source| AuditError::Anchor {
                path: self.path.clone(),
                source,
            })?;
        self.stats.anchor_updates += 1;
        Ok(())
    }
}

/// The system clock as Unix ms (0 before 1970, saturating far in the future).
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::{rand_core::SeedableRng, ChaCha20Rng};
    use serde_json::json;

    fn identity(seed: u64) -> NodeIdentity {
        NodeIdentity::generate(&mut ChaCha20Rng::seed_from_u64(seed))
    }

    /// Writes five entries at times 1000, 2000, … and returns the path.
    fn sample(dir: &tempfile::TempDir, id: &NodeIdentity) -> PathBuf {
        let path = dir.path().join("audit.jsonl");
        let mut log = AuditLog::open(&path, id).expect("open");
        let kinds = [
            AuditKind::Unsealed,
            AuditKind::RequestReceived {
                request_hash: hex::encode([1u8; 32]),
            },
            AuditKind::PolicyDecision {
                allowed: false,
                rule: Some(Rule::AmountLimit),
            },
            AuditKind::ShareContributed {
                key_id: KeyId([2; 16]),
                session: SessionId([3; 32]),
            },
            AuditKind::SessionAborted {
                session: SessionId([4; 32]),
                culprits: vec![identity(77).node_id()],
            },
        ];
        for (i, kind) in kinds.into_iter().enumerate() {
            log.append_at(
                1000 * (i as u64 + 1),
                kind,
                json!({ "amount": 100 + i, "client": "exchange-a", "i": i }),
            )
            .expect("append");
        }
        path
    }

    fn lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .expect("read")
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn write_lines(path: &Path, lines: &[String]) {
        let mut text = lines.join("\n");
        text.push('\n');
        std::fs::write(path, text).expect("write");
    }

    fn first_bad(path: &Path, node: Option<NodeId>) -> BadEntry {
        verify(path, node)
            .expect("readable")
            .first_bad
            .expect("must be reported")
    }

    #[test]
    fn clean_log_verifies() {
        let dir = tempfile::tempdir().expect("tempdir");
        let id = identity(1);
        let path = sample(&dir, &id);
        let report = verify(&path, Some(id.node_id())).expect("verify");
        assert!(report.is_valid(), "{report:?}");
        assert_eq!(report.entries, 5);
        assert_eq!(report.node, Some(id.node_id()));
        assert_eq!(report.last_time_ms, Some(5000));
        let entries = read_entries(&path).expect("entries");
        assert_eq!(entries.len(), 5);
        assert_eq!(
            entries[2].kind,
            AuditKind::PolicyDecision {
                allowed: false,
                rule: Some(Rule::AmountLimit)
            }
        );
        assert_eq!(report.last_hash, Some(entries[4].hash));
        for pair in entries.windows(2) {
            assert_eq!(pair[1].prev_hash, pair[0].hash);
        }
        // The kind is stored with its stable names.
        assert!(lines(&path)[2].contains(r#""rule":"amount_limit""#));
        assert!(lines(&path)[2].contains(r#""type":"policy_decision""#));
    }

    #[test]
    fn edited_entry_is_caught() {
        let dir = tempfile::tempdir().expect("tempdir");
        let id = identity(2);
        let path = sample(&dir, &id);
        let mut l = lines(&path);
        assert!(l[2].contains(r#""amount":102"#));
        l[2] = l[2].replace(r#""amount":102"#, r#""amount":9102"#);
        write_lines(&path, &l);
        let bad = first_bad(&path, None);
        assert_eq!(bad.line, 3);
        assert_eq!(bad.reason, BadReason::BadHash);
        assert_eq!(bad.seq, Some(2));
    }

    #[test]
    fn edited_entry_with_recomputed_hash_is_caught_by_signature() {
        let dir = tempfile::tempdir().expect("tempdir");
        let id = identity(3);
        let path = sample(&dir, &id);
        let mut l = lines(&path);
        let Value::Object(mut obj) = serde_json::from_str::<Value>(&l[1]).expect("json") else {
            panic!("object")
        };
        obj.insert("time_ms".into(), json!(1));
        let hash = entry_hash(&obj);
        obj.insert("hash".into(), json!(hex::encode(hash)));
        l[1] = canonical_string(&Value::Object(obj));
        write_lines(&path, &l);
        let bad = first_bad(&path, Some(id.node_id()));
        assert_eq!((bad.line, bad.reason), (2, BadReason::BadSignature));
    }

    #[test]
    fn deleted_entry_is_caught() {
        let dir = tempfile::tempdir().expect("tempdir");
        let id = identity(4);
        let path = sample(&dir, &id);
        let mut l = lines(&path);
        l.remove(2);
        write_lines(&path, &l);
        let bad = first_bad(&path, Some(id.node_id()));
        assert_eq!((bad.line, bad.reason), (3, BadReason::BrokenChain));
        // Deleting the first entry is caught on line 1.
        let mut l = lines(&path);
        l.remove(0);
        write_lines(&path, &l);
        let bad = first_bad(&path, Some(id.node_id()));
        assert_eq!((bad.line, bad.reason), (1, BadReason::BrokenChain));
    }

    #[test]
    fn reordered_entries_are_caught() {
        let dir = tempfile::tempdir().expect("tempdir");
        let id = identity(5);
        let path = sample(&dir, &id);
        let mut l = lines(&path);
        l.swap(3, 4);
        write_lines(&path, &l);
        let bad = first_bad(&path, None);
        assert_eq!((bad.line, bad.reason), (4, BadReason::BrokenChain));
        assert_eq!(bad.seq, Some(4));
    }

    #[test]
    fn log_of_another_node_is_caught() {
        let dir = tempfile::tempdir().expect("tempdir");
        let writer = identity(6);
        let other = identity(7);
        let path = sample(&dir, &writer);
        assert!(verify(&path, None).expect("verify").is_valid());
        let bad = first_bad(&path, Some(other.node_id()));
        assert_eq!(bad.line, 1);
        assert_eq!(
            bad.reason,
            BadReason::WrongNode {
                expected: other.node_id(),
                found: writer.node_id()
            }
        );
        // Another node cannot open it for appending either.
        let err = AuditLog::open(&path, &other).expect_err("foreign log");
        assert!(
            matches!(
                err,
                AuditError::Invalid {
                    line: 1,
                    reason: BadReason::WrongNode { .. },
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn spliced_entry_from_another_node_is_caught() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = identity(8);
        let b = identity(9);
        let path_a = sample(&dir, &a);
        let dir_b = tempfile::tempdir().expect("tempdir");
        let path_b = sample(&dir_b, &b);
        let mut l = lines(&path_a);
        l[0] = lines(&path_b)[0].clone();
        write_lines(&path_a, &l);
        // Without an expected node the first entry sets the node; line 2 then breaks.
        let bad = first_bad(&path_a, None);
        assert_eq!(bad.line, 2);
        assert!(matches!(bad.reason, BadReason::WrongNode { .. }), "{bad:?}");
    }

    #[test]
    fn resume_after_reopen_continues_the_chain() {
        let dir = tempfile::tempdir().expect("tempdir");
        let id = identity(10);
        let path = sample(&dir, &id);
        let last = read_entries(&path).expect("entries")[4].hash;
        let mut log = AuditLog::open(&path, &id).expect("reopen");
        assert_eq!(log.next_seq(), 5);
        assert_eq!(log.last_hash(), last);
        let e = log
            .append(AuditKind::PolicyReloaded, json!({ "file": "policy.toml" }))
            .expect("append");
        assert_eq!(e.seq, 5);
        assert_eq!(e.prev_hash, last);
        drop(log);
        let report = verify(&path, Some(id.node_id())).expect("verify");
        assert!(report.is_valid(), "{report:?}");
        assert_eq!(report.entries, 6);
    }

    #[test]
    fn open_refuses_a_tampered_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let id = identity(11);
        let path = sample(&dir, &id);
        let mut l = lines(&path);
        l[1] = l[1].replace("exchange-a", "exchange-b");
        write_lines(&path, &l);
        let before = std::fs::read(&path).expect("read");
        let err = AuditLog::open(&path, &id).expect_err("fail closed");
        assert!(
            matches!(
                err,
                AuditError::Invalid {
                    line: 2,
                    reason: BadReason::BadHash,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(
            std::fs::read(&path).expect("read"),
            before,
            "nothing appended"
        );
        // A torn final line (crash mid-write) is refused too.
        let dir2 = tempfile::tempdir().expect("tempdir");
        let path2 = sample(&dir2, &id);
        let mut text = std::fs::read_to_string(&path2).expect("read");
        text.push_str("{\"version\":1,\"seq\":5");
        std::fs::write(&path2, text).expect("write");
        assert!(matches!(
            AuditLog::open(&path2, &id),
            Err(AuditError::Invalid {
                line: 6,
                reason: BadReason::Malformed(_),
                ..
            })
        ));
    }

    #[test]
    fn seq_gap_is_caught() {
        // Only the key holder can produce this (a buggy or compromised writer): a
        // correctly chained and signed entry whose seq skips ahead.
        let dir = tempfile::tempdir().expect("tempdir");
        let id = identity(16);
        let path = sample(&dir, &id);
        let entries = read_entries(&path).expect("entries");
        let mut forged = entries[4].clone();
        forged.seq = 7;
        forged.prev_hash = entries[4].hash;
        let Value::Object(obj) = serde_json::to_value(&forged).expect("json") else {
            panic!("object")
        };
        forged.hash = entry_hash(&obj);
        forged.signature = audit_signing_key(&id)
            .sign(&signed_message(&forged.hash))
            .to_bytes();
        let mut l = lines(&path);
        l.push(canonical_string(
            &serde_json::to_value(&forged).expect("json"),
        ));
        write_lines(&path, &l);
        let bad = first_bad(&path, Some(id.node_id()));
        assert_eq!(bad.line, 6);
        assert_eq!(
            bad.reason,
            BadReason::SeqGap {
                expected: 5,
                found: 7
            }
        );
    }

    #[test]
    fn missing_final_newline_is_terminated_before_appending() {
        let dir = tempfile::tempdir().expect("tempdir");
        let id = identity(17);
        let path = sample(&dir, &id);
        let mut text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text.pop(), Some('\n'));
        std::fs::write(&path, &text).expect("write");
        let mut log = AuditLog::open(&path, &id).expect("open");
        log.append(AuditKind::NodeStopped, Value::Null)
            .expect("append");
        drop(log);
        let report = verify(&path, Some(id.node_id())).expect("verify");
        assert!(report.is_valid(), "{report:?}");
        assert_eq!(report.entries, 6);
    }

    #[test]
    fn second_writer_is_locked_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        let id = identity(12);
        let path = dir.path().join("audit.jsonl");
        let _log = AuditLog::open(&path, &id).expect("open");
        assert!(matches!(
            AuditLog::open(&path, &id),
            Err(AuditError::Locked { .. })
        ));
    }

    #[test]
    fn floats_in_details_are_rejected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let id = identity(13);
        let path = dir.path().join("audit.jsonl");
        let mut log = AuditLog::open(&path, &id).expect("open");
        assert!(matches!(
            log.append(AuditKind::Unsealed, json!({ "x": [1, { "y": 0.5 }] })),
            Err(AuditError::Details(_))
        ));
        assert_eq!(log.next_seq(), 0);
        log.append(AuditKind::Unsealed, json!({ "x": [-1, "s", null, true] }))
            .expect("integers are fine");
        assert!(verify(&path, Some(id.node_id()))
            .expect("verify")
            .is_valid());
    }

    #[test]
    fn unicode_and_escapes_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let id = identity(14);
        let path = dir.path().join("audit.jsonl");
        let mut log = AuditLog::open(&path, &id).expect("open");
        log.append(
            AuditKind::Unsealed,
            json!({ "memo": "zürich \"quoted\"\nline\u{0007}", "z": 1, "a": { "b": 2, "a": 1 } }),
        )
        .expect("append");
        assert!(verify(&path, Some(id.node_id()))
            .expect("verify")
            .is_valid());
        assert_eq!(lines(&path).len(), 1, "one line per entry");
    }

    #[test]
    fn export_filters_by_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let id = identity(15);
        let path = sample(&dir, &id);
        let all = export(&path, 0).expect("export");
        assert_eq!(all, lines(&path));
        let recent = export(&path, 3000).expect("export");
        assert_eq!(recent.len(), 3);
        assert_eq!(recent[0], lines(&path)[2]);
        assert!(export(&path, 99_999).expect("export").is_empty());
        let mut out = Vec::new();
        assert_eq!(export_to(&path, 4500, &mut out).expect("export"), 1);
        assert_eq!(
            String::from_utf8(out).expect("utf8"),
            format!("{}\n", lines(&path)[4])
        );
    }

    /// A keystore (test KDF) and an anchored log with five entries, closed again.
    fn anchored(dir: &tempfile::TempDir, seed: u64) -> (PathBuf, crate::keystore::Keystore) {
        use crate::keystore::{KdfParams, Keystore, Passphrase};
        let id = identity(seed);
        let ks = Keystore::init(
            dir.path().join("ks.redb"),
            &Passphrase::new("p").expect("pass"),
            &id,
            KdfParams::insecure_for_tests(),
            &mut ChaCha20Rng::seed_from_u64(seed + 1000),
        )
        .expect("keystore");
        let path = dir.path().join("audit.jsonl");
        let mut log = AuditLog::open_anchored(&path, ks.identity(), ks.state()).expect("open");
        for i in 0..5u64 {
            log.append_at(1000 + i, AuditKind::Unsealed, json!({ "i": i }))
                .expect("append");
        }
        (path, ks)
    }

    fn reopen(path: &Path, ks: &crate::keystore::Keystore) -> Result<AuditLog, AuditError> {
        AuditLog::open_anchored(path, ks.identity(), ks.state())
    }

    #[test]
    fn every_append_moves_the_anchor() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, ks) = anchored(&dir, 20);
        let anchor = ks.state().audit_anchor().expect("read").expect("anchored");
        let entries = read_entries(&path).expect("entries");
        assert_eq!(anchor.seq, 4);
        assert_eq!(anchor.hash, entries[4].hash);
        assert_eq!(
            anchor.end_offset,
            std::fs::metadata(&path).expect("meta").len()
        );
        let mut log = reopen(&path, &ks).expect("reopen");
        let e = log
            .append(AuditKind::NodeStopped, Value::Null)
            .expect("append");
        let anchor = ks.state().audit_anchor().expect("read").expect("anchored");
        assert_eq!((anchor.seq, anchor.hash), (5, e.hash));
    }

    #[test]
    fn truncated_tail_is_refused_naming_expected_and_found_seq() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, ks) = anchored(&dir, 21);
        let l = lines(&path);
        write_lines(&path, &l[..3]);
        assert!(
            verify(&path, None).expect("verify").is_valid(),
            "still a valid chain"
        );
        let err = reopen(&path, &ks).expect_err("truncated");
        assert!(
            matches!(
                err,
                AuditError::Truncated {
                    expected_seq: 4,
                    found_entries: 3,
                    ..
                }
            ),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains("seq 4") && msg.contains("3 entries"), "{msg}");
        // An emptied log is refused as well.
        std::fs::write(&path, "").expect("write");
        assert!(matches!(
            reopen(&path, &ks),
            Err(AuditError::Truncated {
                found_entries: 0,
                ..
            })
        ));
    }

    #[test]
    fn rollback_to_an_older_copy_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, ks) = anchored(&dir, 22);
        let old = std::fs::read(&path).expect("read");
        let mut log = reopen(&path, &ks).expect("reopen");
        for _ in 0..3 {
            log.append(AuditKind::PolicyReloaded, Value::Null)
                .expect("append");
        }
        drop(log);
        std::fs::write(&path, &old).expect("restore old copy");
        let err = reopen(&path, &ks).expect_err("rolled back");
        assert!(
            matches!(
                err,
                AuditError::Truncated {
                    expected_seq: 7,
                    found_entries: 5,
                    ..
                }
            ),
            "{err:?}"
        );
        // An old copy grown back to the anchored length with other entries (signed
        // by the same key, written without the anchor) does not contain the anchor.
        let mut forked = AuditLog::open(&path, ks.identity()).expect("unanchored");
        for _ in 0..3 {
            forked
                .append(AuditKind::NodeStopped, Value::Null)
                .expect("append");
        }
        drop(forked);
        let err = reopen(&path, &ks).expect_err("forked");
        assert!(
            matches!(err, AuditError::AnchorMismatch { seq: 7, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn torn_unsynced_tail_is_repaired_and_the_log_opens() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, ks) = anchored(&dir, 23);
        let torn = "{\"details\":{},\"hash\":\"00";
        let mut text = std::fs::read_to_string(&path).expect("read");
        text.push_str(torn);
        std::fs::write(&path, &text).expect("write");
        // Unanchored, the log is refused as before (nothing tells the tail apart).
        assert!(matches!(
            AuditLog::open(&path, ks.identity()),
            Err(AuditError::Invalid { line: 6, .. })
        ));
        let log = reopen(&path, &ks).expect("repaired");
        assert_eq!(log.next_seq(), 6, "five entries and the repair record");
        drop(log);
        let report = verify(&path, Some(ks.node_id())).expect("verify");
        assert!(report.is_valid(), "{report:?}");
        let entries = read_entries(&path).expect("entries");
        assert_eq!(
            entries[5].kind,
            AuditKind::TornTailRepaired {
                removed_bytes: torn.len() as u64
            }
        );
        let anchor = ks.state().audit_anchor().expect("read").expect("anchored");
        assert_eq!((anchor.seq, anchor.hash), (5, entries[5].hash));
    }

    #[test]
    fn torn_line_at_or_before_the_anchor_is_refused() {
        // In the middle: a cut line followed by good lines.
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, ks) = anchored(&dir, 24);
        let mut l = lines(&path);
        l[2].truncate(40);
        write_lines(&path, &l);
        let before = std::fs::read(&path).expect("read");
        assert!(matches!(
            reopen(&path, &ks),
            Err(AuditError::Invalid { line: 3, .. })
        ));
        assert_eq!(std::fs::read(&path).expect("read"), before, "nothing cut");
        // At the end, but it is the anchored (synced) entry itself.
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, ks) = anchored(&dir, 25);
        let mut text = std::fs::read_to_string(&path).expect("read");
        text.truncate(text.len() - 30);
        std::fs::write(&path, &text).expect("write");
        let err = reopen(&path, &ks).expect_err("anchored entry torn");
        assert!(
            matches!(
                err,
                AuditError::Invalid {
                    line: 5,
                    reason: BadReason::Malformed(_),
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            text,
            "nothing cut"
        );
    }

    #[test]
    fn empty_and_garbage_logs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("empty.jsonl");
        std::fs::write(&path, "").expect("write");
        let report = verify(&path, None).expect("verify");
        assert!(report.is_valid());
        assert_eq!(report.entries, 0);
        std::fs::write(&path, "not json\n").expect("write");
        assert!(matches!(
            first_bad(&path, None),
            BadEntry {
                line: 1,
                reason: BadReason::Malformed(_),
                ..
            }
        ));
        assert!(matches!(
            verify(&dir.path().join("missing"), None),
            Err(AuditError::Io { .. })
        ));
    }

    fn anchor_of(ks: &crate::keystore::Keystore) -> AuditAnchor {
        ks.state().audit_anchor().expect("read").expect("anchored")
    }

    #[test]
    fn deferred_appends_share_one_sync_and_one_anchor() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, ks) = anchored(&dir, 30);
        let mut log = reopen(&path, &ks).expect("reopen");
        let before = log.stats();
        let anchored_before = anchor_of(&ks);
        let mut last = None;
        for i in 0..7u64 {
            let e = log
                .append_deferred_at(2000 + i, AuditKind::PolicyReloaded, json!({ "i": i }))
                .expect("deferred");
            assert_eq!(e.seq, 5 + i);
            last = Some(e);
        }
        let last = last.expect("written");
        assert_eq!(log.pending(), 7);
        assert_eq!(log.next_seq(), 12, "seq advances at write time");
        assert_eq!(log.last_hash(), last.hash);
        assert_eq!(
            log.end_offset(),
            std::fs::metadata(&path).expect("meta").len(),
            "written, and counted in the length"
        );
        assert_eq!(log.stats(), before, "no sync, no anchor update yet");
        assert_eq!(anchor_of(&ks), anchored_before, "anchor did not move");

        log.commit().expect("commit");
        let after = log.stats();
        assert_eq!(after.syncs - before.syncs, 1, "one sync for seven entries");
        assert_eq!(after.anchor_updates - before.anchor_updates, 1);
        assert_eq!(after.commits - before.commits, 1);
        assert_eq!(log.pending(), 0);
        let anchor = anchor_of(&ks);
        assert_eq!((anchor.seq, anchor.hash), (11, last.hash));
        assert_eq!(
            anchor.end_offset,
            std::fs::metadata(&path).expect("meta").len()
        );
        let report = verify(&path, Some(ks.node_id())).expect("verify");
        assert!(report.is_valid(), "{report:?}");
        assert_eq!(report.entries, 12);
        assert_eq!(report.last_hash, Some(last.hash));
    }

    #[test]
    fn append_commits_pending_entries_with_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, ks) = anchored(&dir, 31);
        let mut log = reopen(&path, &ks).expect("reopen");
        let before = log.stats();
        for _ in 0..3 {
            log.append_deferred(AuditKind::PolicyReloaded, Value::Null)
                .expect("deferred");
        }
        let e = log
            .append(AuditKind::NodeStopped, Value::Null)
            .expect("append");
        assert_eq!(e.seq, 8);
        assert_eq!(log.pending(), 0, "the append committed the batch");
        let after = log.stats();
        assert_eq!(after.syncs - before.syncs, 1);
        assert_eq!(after.anchor_updates - before.anchor_updates, 1);
        assert_eq!(after.commits - before.commits, 1);
        let anchor = anchor_of(&ks);
        assert_eq!((anchor.seq, anchor.hash), (8, e.hash));
        assert_eq!(anchor.end_offset, log.end_offset());
        // An append alone is one sync and one anchor update, as before.
        log.append(AuditKind::NodeStopped, Value::Null)
            .expect("append");
        assert_eq!(log.stats().syncs - after.syncs, 1);
        assert_eq!(log.stats().anchor_updates - after.anchor_updates, 1);
        // Unanchored, the append syncs the batch too.
        let dir = tempfile::tempdir().expect("tempdir");
        let id = identity(32);
        let path = dir.path().join("audit.jsonl");
        let mut log = AuditLog::open(&path, &id).expect("open");
        log.append_deferred(AuditKind::Unsealed, Value::Null)
            .expect("deferred");
        log.append(AuditKind::NodeStopped, Value::Null)
            .expect("append");
        assert_eq!((log.pending(), log.stats().syncs), (0, 1));
        assert_eq!(log.stats().anchor_updates, 0);
        assert!(verify(&path, Some(id.node_id()))
            .expect("verify")
            .is_valid());
    }

    #[test]
    fn commit_without_pending_entries_does_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, ks) = anchored(&dir, 33);
        let mut log = reopen(&path, &ks).expect("reopen");
        let before = log.stats();
        let anchor = anchor_of(&ks);
        log.commit().expect("commit");
        log.commit().expect("commit again");
        assert_eq!(log.stats(), before);
        assert_eq!(anchor_of(&ks), anchor);
        // Nor after the pending entries were committed.
        log.append_deferred(AuditKind::PolicyReloaded, Value::Null)
            .expect("deferred");
        log.commit().expect("commit");
        let committed = log.stats();
        log.commit().expect("nothing pending");
        assert_eq!(log.stats(), committed);
        // A fresh unanchored log: nothing to sync.
        let path = dir.path().join("other.jsonl");
        let mut log = AuditLog::open(&path, &identity(34)).expect("open");
        log.commit().expect("commit");
        assert_eq!(log.stats(), AuditStats::default());
    }

    #[test]
    fn uncommitted_entries_survive_reopen_when_on_disk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, ks) = anchored(&dir, 35);
        let mut log = reopen(&path, &ks).expect("reopen");
        let mut last = None;
        for i in 0..3u64 {
            last = Some(
                log.append_deferred_at(3000 + i, AuditKind::PolicyReloaded, json!({ "i": i }))
                    .expect("deferred"),
            );
        }
        let last = last.expect("written");
        drop(log); // no commit: as if the process died between write and commit
        assert_eq!(anchor_of(&ks).seq, 4, "never anchored");

        let mut log = reopen(&path, &ks).expect("accepted after the anchor");
        assert_eq!(log.next_seq(), 8);
        assert_eq!(log.last_hash(), last.hash);
        assert_eq!(log.pending(), 0);
        // Synced before the anchor was moved to them.
        assert_eq!((log.stats().syncs, log.stats().anchor_updates), (1, 1));
        let anchor = anchor_of(&ks);
        assert_eq!((anchor.seq, anchor.hash), (7, last.hash));
        assert_eq!(anchor.end_offset, log.end_offset());
        let e = log
            .append(AuditKind::NodeStopped, Value::Null)
            .expect("append");
        assert_eq!((e.seq, e.prev_hash), (8, last.hash));
        drop(log);
        let report = verify(&path, Some(ks.node_id())).expect("verify");
        assert!(report.is_valid(), "{report:?}");
        assert_eq!(report.entries, 9);
    }

    #[test]
    fn torn_line_after_uncommitted_entries_is_cut() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, ks) = anchored(&dir, 36);
        let mut log = reopen(&path, &ks).expect("reopen");
        for _ in 0..2 {
            log.append_deferred(AuditKind::PolicyReloaded, Value::Null)
                .expect("deferred");
        }
        drop(log);
        let torn = "{\"details\":null,\"has";
        let mut text = std::fs::read_to_string(&path).expect("read");
        text.push_str(torn);
        std::fs::write(&path, &text).expect("write");
        let log = reopen(&path, &ks).expect("repaired");
        assert_eq!(
            log.next_seq(),
            8,
            "five, two uncommitted and the repair record"
        );
        drop(log);
        let entries = read_entries(&path).expect("entries");
        assert_eq!(
            entries[7].kind,
            AuditKind::TornTailRepaired {
                removed_bytes: torn.len() as u64
            }
        );
        assert!(verify(&path, Some(ks.node_id()))
            .expect("verify")
            .is_valid());
        assert_eq!(anchor_of(&ks).hash, entries[7].hash);
    }

    #[test]
    fn failed_commit_poisons_the_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, ks) = anchored(&dir, 37);
        let mut log = reopen(&path, &ks).expect("reopen");
        let anchor = anchor_of(&ks);
        for _ in 0..2 {
            log.append_deferred(AuditKind::PolicyReloaded, Value::Null)
                .expect("deferred");
        }
        log.fail_syncs_for_test();
        let err = log.commit().expect_err("sync fails");
        assert!(matches!(err, AuditError::WriteFailed { .. }), "{err:?}");
        assert!(err.is_log_failure());
        assert_eq!(log.pending(), 2, "still not durable");
        assert_eq!(log.stats().commits, 0);
        assert_eq!(anchor_of(&ks), anchor, "anchor not moved past them");
        assert!(matches!(log.commit(), Err(AuditError::Poisoned { .. })));
        assert!(matches!(
            log.append_deferred(AuditKind::NodeStopped, Value::Null),
            Err(AuditError::Poisoned { .. })
        ));
        assert!(matches!(
            log.append(AuditKind::NodeStopped, Value::Null),
            Err(AuditError::Poisoned { .. })
        ));
        assert_eq!(log.next_seq(), 7);
        drop(log);
        // The entries did reach the file; a reopen verifies and accepts them.
        let log = reopen(&path, &ks).expect("reopen");
        assert_eq!(log.next_seq(), 7);

        // An append whose sync fails is refused the same way.
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, ks) = anchored(&dir, 38);
        let mut log = reopen(&path, &ks).expect("reopen");
        log.fail_syncs_for_test();
        assert!(matches!(
            log.append(AuditKind::NodeStopped, Value::Null),
            Err(AuditError::WriteFailed { .. })
        ));
        assert_eq!(anchor_of(&ks).seq, 4);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn failed_deferred_write_poisons_the_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, ks) = anchored(&dir, 39);
        let mut log = reopen(&path, &ks).expect("reopen");
        log.append_deferred(AuditKind::PolicyReloaded, Value::Null)
            .expect("deferred");
        log.redirect_writes_for_test(
            OpenOptions::new()
                .write(true)
                .open("/dev/full")
                .expect("/dev/full"),
        );
        assert!(matches!(
            log.append_deferred(AuditKind::NodeStopped, Value::Null),
            Err(AuditError::WriteFailed { .. })
        ));
        assert_eq!((log.next_seq(), log.pending()), (6, 1));
        assert!(matches!(log.commit(), Err(AuditError::Poisoned { .. })));
    }

    #[test]
    fn open_ignores_a_snapshot_taken_over_uncommitted_entries() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, ks) = anchored(&dir, 40);
        let mut log = reopen(&path, &ks).expect("reopen");
        for _ in 0..2 {
            log.append_deferred(AuditKind::PolicyReloaded, Value::Null)
                .expect("deferred");
        }
        // A policy snapshot at the end of the log, beyond the anchor (a caller
        // that took it without committing first).
        let mut engine = crate::policy::PolicyEngine::new(
            crate::policy::Policy::from_toml("version = 1\n").expect("policy"),
        );
        crate::recovery::restore_from_log(&log, &mut engine, 10_000).expect("snapshot");
        let snap = ks.state().audit_snapshot().expect("read").expect("written");
        let checkpoint = crate::recovery::snapshot_checkpoint(&snap).expect("header");
        assert_eq!(checkpoint.0, 6);
        assert!(checkpoint.0 > anchor_of(&ks).seq);
        drop(log);
        // Resuming verification there would skip the anchored entry; the open
        // verifies from the start instead and accepts the entries as written.
        let log = reopen(&path, &ks).expect("opens");
        assert_eq!(log.next_seq(), 7);
        assert_eq!(anchor_of(&ks).seq, 6);
    }
}
