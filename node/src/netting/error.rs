//! Netting refusals: `Ack::Rejected { reason: "netting:<code>", detail }`, the
//! detail naming the party, node or field (never a share or a secret amount; the
//! settlement batch is public, so `settlement_limit` names its amount).

use quorate_protocol::{wire::frame::Ack, ProtocolError};

use crate::keystore::KeystoreError;

/// Why a netting message was refused; [`Code::name`] is the stable wire code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Code {
    /// The sender, the client or its policy does not allow this.
    NotAuthorized,
    /// The round definition or the envelope's context is not acceptable here.
    InvalidRound,
    /// No such round here.
    UnknownRound,
    /// The bundle is forged, malformed or a second, different one from its party.
    BadBundle,
    /// The bundle was signed or arrived after the cut-off.
    LateBundle,
    /// The round is closed (or was closed on other inputs).
    Closed,
    /// A close lists other bundles than this node holds.
    InputMismatch,
    /// The settlement this node builds differs from the one it is asked to sign.
    SettlementMismatch,
    /// This node's policy does not sign settlements with the round's key.
    SettlementNotAllowed,
    /// The round's settlement was already signed in n − t + 1 sessions here.
    TooManyAttempts,
    /// A transfer of the settlement batch exceeds this node's limit for its asset
    /// (or its asset has no limit and `require_limits = true`).
    SettlementLimit,
    /// The node holds as many rounds as it is configured to (in all or of the client).
    Busy,
    /// A limit-check message this node cannot take (round without limit checks,
    /// not closed, other attempt, malformed part) or the check aborted.
    LimitCheck,
    /// The round's limit checks have not found every party covered here: no
    /// public outputs and no settlement.
    NotCovered,
}

impl Code {
    /// Stable snake_case name, sent as `netting:<name>`.
    pub fn name(self) -> &'static str {
        match self {
            Self::NotAuthorized => "not_authorized",
            Self::InvalidRound => "invalid_round",
            Self::UnknownRound => "unknown_round",
            Self::BadBundle => "bad_bundle",
            Self::LateBundle => "late_bundle",
            Self::Closed => "closed",
            Self::InputMismatch => "input_mismatch",
            Self::SettlementMismatch => "settlement_mismatch",
            Self::SettlementNotAllowed => "settlement_not_allowed",
            Self::TooManyAttempts => "too_many_attempts",
            Self::SettlementLimit => "settlement_limit",
            Self::Busy => "busy",
            Self::LimitCheck => "limit_check",
            Self::NotCovered => "not_covered",
        }
    }
}

/// A refused netting message, or a local fault that stopped it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NettingError {
    /// The message is refused on its own; the node goes on (invariant 11).
    #[error("netting:{}: {detail}", code.name())]
    Refused {
        /// Why.
        code: Code,
        /// What, naming the party, node or field.
        detail: String,
    },
    /// The audit record the action depends on cannot be written.
    #[error("{reason}: {detail}")]
    Audit {
        /// `audit_unavailable` (the log failed: the node refuses everything) or
        /// `audit_refused` (only this record).
        reason: &'static str,
        /// What failed.
        detail: String,
    },
    /// The keystore cannot be read or written (local fault).
    #[error("keystore_unavailable: {0}")]
    Keystore(#[from] KeystoreError),
    /// A stored record does not decode (local fault; the node does not start).
    #[error("netting record {record:?} does not decode: {reason}")]
    Corrupt {
        /// Record name.
        record: String,
        /// What failed.
        reason: String,
    },
}

impl NettingError {
    /// A refusal with this code.
    pub fn refused(code: Code, detail: impl Into<String>) -> Self {
        Self::Refused {
            code,
            detail: detail.into(),
        }
    }

    pub(super) fn audit_unavailable() -> Self {
        Self::Audit {
            reason: "audit_unavailable",
            detail: "audit log cannot be written; node refuses to act".into(),
        }
    }

    /// The refusal code, if this is a refusal.
    pub fn code(&self) -> Option<Code> {
        match self {
            Self::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The answer to the sender.
    pub fn ack(&self) -> Ack {
        let (reason, detail) = match self {
            Self::Refused { code, detail } => (format!("netting:{}", code.name()), detail.clone()),
            Self::Audit { reason, detail } => ((*reason).to_owned(), detail.clone()),
            Self::Keystore(e) => ("keystore_unavailable".to_owned(), e.to_string()),
            Self::Corrupt { .. } => ("keystore_unavailable".to_owned(), self.to_string()),
        };
        Ack::Rejected { reason, detail }
    }

    /// Maps a protocol error about a bundle to its code (the text names the party).
    pub(super) fn from_bundle(e: &ProtocolError) -> Self {
        let code = match e {
            ProtocolError::LateBundle { .. } => Code::LateBundle,
            _ => Code::BadBundle,
        };
        Self::refused(code, e.to_string())
    }
}
