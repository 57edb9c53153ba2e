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

use crate::policy::Rule;

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
    /// This node contributed a signature share; written and synced before the share
    /// is sent. `details` carries `request_hash` and `message_hash`.
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

/// Reads one line of at most [`MAX_LINE`] bytes; `Ok(None)` at end of file.
fn read_line(reader: &mut impl BufRead, buf: &mut Vec<u8>) -> io::Result<Option<()>> {
    buf.clear();
    let n = reader
        .by_ref()
        .take(MAX_LINE as u64 + 2)
        .read_until(b'\n', buf)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
    }
    Ok(Some(()))
}

/// Verifies a log read from `reader`. `expected_node`, if given, must have written
/// every entry; otherwise every entry must be by the first entry's node.
pub fn verify_reader(
    mut reader: impl BufRead,
    expected_node: Option<NodeId>,
) -> Result<VerifyReport, io::Error> {
    let mut report = VerifyReport {
        entries: 0,
        node: None,
        last_hash: None,
        last_time_ms: None,
        first_bad: None,
    };
    let mut buf = Vec::new();
    let mut line_no = 0usize;
    while read_line(&mut reader, &mut buf)?.is_some() {
        line_no += 1;
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
    }
    Ok(report)
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
}

impl fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditLog")
            .field("path", &self.path)
            .field("node", &self.node)
            .field("next_seq", &self.next_seq)
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
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
        let path = path.as_ref().to_path_buf();
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
        let report = verify_reader(BufReader::new(&mut file), Some(node)).map_err(io_err)?;
        if let Some(bad) = report.first_bad {
            return Err(AuditError::Invalid {
                path,
                line: bad.line,
                reason: bad.reason,
            });
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
                file.write_all(b"\n")
                    .and_then(|()| file.sync_data())
                    .map_err(io_err)?;
            }
        }
        Ok(Self {
            path,
            file,
            signing: audit_signing_key(identity),
            node,
            next_seq: report.entries,
            prev_hash: report.last_hash.unwrap_or([0; 32]),
            poisoned: false,
        })
    }

    /// Test hook: later appends write to `file` instead (e.g. `/dev/full`, to see what
    /// the node does when its disk fails).
    #[cfg(test)]
    pub(crate) fn redirect_writes_for_test(&mut self, file: File) {
        self.file = file;
    }

    /// The log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The next sequence number.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Hash of the last entry (zeros if empty).
    pub fn last_hash(&self) -> [u8; 32] {
        self.prev_hash
    }

    /// Appends an entry stamped with the system clock, and syncs it to disk before
    /// returning. An error means the entry may not be recorded: the caller must not
    /// sign.
    pub fn append(&mut self, kind: AuditKind, details: Value) -> Result<AuditEntry, AuditError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        self.append_at(now, kind, details)
    }

    /// Appends an entry with a caller-supplied time (Unix ms). As [`Self::append`].
    pub fn append_at(
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
        let written = self
            .file
            .write_all(line.as_bytes())
            .and_then(|()| self.file.sync_data());
        if let Err(source) = written {
            self.poisoned = true;
            return Err(AuditError::WriteFailed {
                path: self.path.clone(),
                source,
            });
        }
        self.next_seq += 1;
        self.prev_hash = entry.hash;
        Ok(entry)
    }
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
}
