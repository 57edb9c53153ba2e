//! The coordinator crate's error type.

use quorate_protocol::NodeId;

use crate::types::Attempt;

/// Everything the coordinator engine, API and client can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoordinatorError {
    /// The key specification cannot be satisfied or is malformed.
    #[error("invalid key specification: {0}")]
    InvalidSpec(String),
    /// Fewer reachable, non-excluded signers than the threshold.
    #[error("not enough reachable signers: {available} available, {needed} needed")]
    NotEnoughSigners {
        /// Signers still eligible.
        available: usize,
        /// Threshold.
        needed: usize,
        /// Attempts made before giving up.
        attempts: Vec<Attempt>,
    },
    /// Every eligible signer refused (policy), so no quorum is possible.
    #[error("refused by signer policy: {}", .refusals.iter().map(|(n, r)| format!("{n}: {r}")).collect::<Vec<_>>().join(", "))]
    Refused {
        /// Who refused and why.
        refusals: Vec<(NodeId, String)>,
        /// Attempts made.
        attempts: Vec<Attempt>,
    },
    /// The DKG aborted; culprits are named when known.
    #[error("key generation failed: {reason}")]
    DkgFailed {
        /// What happened.
        reason: String,
        /// Participants blamed.
        culprits: Vec<NodeId>,
    },
    /// The signed client request is malformed or its signature does not verify.
    #[error("invalid client request: {0}")]
    BadRequest(String),
    /// Transport setup failed.
    #[error("transport: {0}")]
    Transport(String),
    /// The engine has stopped.
    #[error("coordinator is shutting down")]
    Shutdown,
    /// Storage failure.
    #[error("storage: {0}")]
    Storage(String),
    /// The key id names no key this coordinator (or backend) knows.
    #[error("unknown key {0}")]
    UnknownKey(quorate_protocol::KeyId),
    /// The client signature over the request does not verify, or the client key is
    /// not registered.
    #[error("bad client signature: {0}")]
    BadClientSignature(String),
    /// The request's expiry time has passed.
    #[error("request expired at {expires_at_ms} ms (now {now_ms} ms)")]
    ExpiredRequest {
        /// The request's `expires_at_ms`.
        expires_at_ms: u64,
        /// The time it was checked.
        now_ms: u64,
    },
    /// A netting round definition cannot be used (fails validation, or its
    /// committee is not the settlement key's members); the message says why.
    #[error("invalid netting round: {0}")]
    InvalidRound(String),
    /// No live netting round with this id.
    #[error("unknown netting round {0}")]
    UnknownRound(String),
    /// The operation does not fit the round's state (closed, another definition
    /// under the same id, another bundle for the party).
    #[error("netting round conflict: {0}")]
    RoundConflict(String),
    /// A bound on concurrent work is reached; retry later.
    #[error("busy: {0}")]
    Busy(String),
    /// A lifecycle operation does not fit the key or the roster (the message names
    /// the rule: generation, group key, committee, residency, expiry, approvals).
    #[error("invalid lifecycle operation: {0}")]
    InvalidOperation(String),
    /// Nodes refused to take part in a refresh or reshare (node, rule: detail).
    #[error("lifecycle operation refused: {}", .refusals.iter().map(|(n, r)| format!("{n}: {r}")).collect::<Vec<_>>().join(", "))]
    LifecycleRefused {
        /// Who refused and why.
        refusals: Vec<(NodeId, String)>,
    },
    /// A refresh or reshare did not complete; culprits are named when known.
    #[error("lifecycle run failed: {reason}")]
    LifecycleFailed {
        /// What happened.
        reason: String,
        /// Participants blamed.
        culprits: Vec<NodeId>,
    },
    /// The key is being refreshed or reshared; retry when the run has ended.
    #[error("key {0} is being refreshed or reshared")]
    KeyBusy(quorate_protocol::KeyId),
    /// Fewer members of the key's committee approved the request for the window
    /// than its signers require (`window_quorum` in node policy).
    #[error("window certificate: {} of {need} approvals needed (refused: {}; no answer: {})",
        .approved.len(),
        if .refused.is_empty() { "none".to_owned() } else { .refused.iter().map(|(n, r)| format!("{n}: {r}")).collect::<Vec<_>>().join(", ") },
        if .unanswered.is_empty() { "none".to_owned() } else { .unanswered.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ") })]
    WindowCertificate {
        /// Approvals the signers require.
        need: u16,
        /// Members that approved.
        approved: Vec<NodeId>,
        /// Members that refused, with their reason (`policy:window_limit`, …).
        refused: Vec<(NodeId, String)>,
        /// Members that did not answer in time or could not be reached.
        unanswered: Vec<NodeId>,
    },
    /// Configuration is invalid; the message names the field.
    #[error("configuration: {0}")]
    Config(String),
}
