//! What operators approve: one lifecycle operation on one key, signed by a k-of-m
//! quorum of approver keys. Every node checks the quorum against its own policy
//! before taking part, so a compromised coordinator cannot move a key to a
//! committee it chose, nor lower its threshold.
//!
//! Byte format (postcard, documented in protocol/README.md "Lifecycle"):
//! the digest an approver signs is
//! `SHA-256("quorate/lifecycle-op/v1\0" ‖ postcard(Operation))`.

use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{
    error::ProtocolError,
    ids::{KeyId, NodeId},
    request::Approval,
};

const OPERATION_DOMAIN: &[u8] = b"quorate/lifecycle-op/v1\0";

/// Most approvals an operation may carry (bounds signature checks).
pub const MAX_OPERATION_APPROVALS: usize = 16;
/// Largest new committee an operation may name.
pub const MAX_COMMITTEE: usize = 255;
/// Largest encoded approved operation.
pub const MAX_OPERATION_SIZE: usize = 16 * 1024;
/// Longest an approved operation may stay valid (`expires_at − now`): 30 days, so
/// a leaked approval does not stay usable for years.
pub const MAX_OPERATION_LIFETIME_SECS: u64 = 30 * 24 * 3600;

/// Which lifecycle operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperationKind {
    /// New shares for the same committee and threshold.
    Refresh,
    /// New shares for a new committee and/or threshold.
    Reshare,
    /// A member that lost its share gets it back from `t` helpers.
    Repair,
}

impl OperationKind {
    /// Lower-case name (`refresh`, `reshare`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Refresh => "refresh",
            Self::Reshare => "reshare",
            Self::Repair => "repair",
        }
    }
}

/// One lifecycle operation, as approved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    /// The key.
    pub key_id: KeyId,
    /// What to do.
    pub kind: OperationKind,
    /// The generation the operation starts from (the key's current one).
    pub from_generation: u64,
    /// Serialized group verifying key, which the operation keeps.
    pub group_key: Vec<u8>,
    /// The new committee, sorted by node id.
    pub committee: Vec<NodeId>,
    /// The new threshold.
    pub threshold: u16,
    /// Data residency after the operation: the roster segments the key's shares may
    /// live in (empty: any). Every node refuses a committee member outside them.
    pub segments: Vec<String>,
    /// Unix seconds after which nodes refuse the operation.
    pub expires_at: u64,
    /// Approver-chosen unique value.
    pub nonce: [u8; 16],
    /// The member whose share a repair restores (`None` for refresh and reshare).
    pub target: Option<NodeId>,
}

impl Operation {
    /// What approvers sign.
    pub fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(OPERATION_DOMAIN);
        h.update(postcard::to_allocvec(self).unwrap_or_default());
        h.finalize().into()
    }

    /// Checks the shape: a sorted committee of distinct nodes of at most
    /// [`MAX_COMMITTEE`], a threshold between 2 and its size; a refresh names the
    /// committee and threshold it keeps (checked by nodes against the key).
    pub fn validate(&self) -> Result<(), ProtocolError> {
        let bad = |why: String| ProtocolError::InvalidParameters(format!("operation: {why}"));
        if self.committee.len() < 2 || self.committee.len() > MAX_COMMITTEE {
            return Err(bad(format!(
                "committee of {} nodes; between 2 and {MAX_COMMITTEE}",
                self.committee.len()
            )));
        }
        if self.committee.windows(2).any(|w| w[0] >= w[1]) {
            return Err(bad(
                "committee is not sorted by node id without repeats".into()
            ));
        }
        if self.segments.len() > MAX_COMMITTEE
            || self.segments.iter().any(|s| s.is_empty() || s.len() > 64)
        {
            return Err(bad("segments: at most 255 names of 1 to 64 bytes".into()));
        }
        match (self.kind, self.target) {
            (OperationKind::Repair, Some(t)) if self.committee.contains(&t) => {}
            (OperationKind::Repair, _) => {
                return Err(bad(
                    "a repair names its target, a member of the committee".into()
                ))
            }
            (_, Some(_)) => return Err(bad("only a repair names a target".into())),
            (_, None) => {}
        }
        if self.threshold < 2 || usize::from(self.threshold) > self.committee.len() {
            return Err(bad(format!(
                "threshold {} must be between 2 and the committee size {}",
                self.threshold,
                self.committee.len()
            )));
        }
        Ok(())
    }

    /// An approver's signature over [`Self::digest`].
    ///
    /// # Security
    /// Uses the approver's secret key; the caller keeps it.
    pub fn approve(&self, approver: &SigningKey) -> Approval {
        Approval {
            approver: approver.verifying_key().to_bytes(),
            signature: approver.sign(&self.digest()),
        }
    }
}

/// An operation with its approvals: what a coordinator forwards to nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovedOperation {
    /// The operation.
    pub operation: Operation,
    /// Approver signatures over its digest.
    pub approvals: Vec<Approval>,
}

impl ApprovedOperation {
    /// Canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Decodes with a size cap and no trailing bytes; does not verify.
    pub fn decode(bytes: &[u8]) -> Result<Self, ProtocolError> {
        if bytes.len() > MAX_OPERATION_SIZE {
            return Err(ProtocolError::TooLarge {
                len: bytes.len(),
                max: MAX_OPERATION_SIZE,
            });
        }
        let (op, rest): (Self, _) = postcard::take_from_bytes(bytes)
            .map_err(|_| ProtocolError::Malformed("approved operation does not decode"))?;
        if !rest.is_empty() {
            return Err(ProtocolError::Malformed(
                "trailing bytes after the operation",
            ));
        }
        Ok(op)
    }

    /// Distinct approvers among `allowed` whose signatures verify (strict Ed25519).
    pub fn valid_approvers(&self, allowed: &[[u8; 32]]) -> Vec<[u8; 32]> {
        let digest = self.operation.digest();
        let mut ok: Vec<[u8; 32]> = self
            .approvals
            .iter()
            .take(MAX_OPERATION_APPROVALS)
            .filter(|a| allowed.contains(&a.approver))
            .filter(|a| {
                VerifyingKey::from_bytes(&a.approver)
                    .map(|k| k.verify_strict(&digest, &a.signature).is_ok())
                    .unwrap_or(false)
            })
            .map(|a| a.approver)
            .collect();
        ok.sort();
        ok.dedup();
        ok
    }

    /// Checks shape, expiry and a quorum of `quorum` distinct approvers from
    /// `allowed`; the error says which check failed.
    pub fn verify(
        &self,
        allowed: &[[u8; 32]],
        quorum: usize,
        now_unix: u64,
    ) -> Result<(), ProtocolError> {
        self.operation.validate()?;
        if self.approvals.len() > MAX_OPERATION_APPROVALS {
            return Err(ProtocolError::InvalidParameters(format!(
                "operation carries {} approvals; at most {MAX_OPERATION_APPROVALS}",
                self.approvals.len()
            )));
        }
        if now_unix >= self.operation.expires_at {
            return Err(ProtocolError::InvalidParameters(format!(
                "operation expired at {} (now {now_unix})",
                self.operation.expires_at
            )));
        }
        if self.operation.expires_at - now_unix > MAX_OPERATION_LIFETIME_SECS {
            return Err(ProtocolError::InvalidParameters(format!(
                "operation valid until {}: more than {MAX_OPERATION_LIFETIME_SECS} s from now",
                self.operation.expires_at
            )));
        }
        if quorum == 0 {
            return Err(ProtocolError::InvalidParameters(
                "no lifecycle approvers are configured here: lifecycle operations are refused"
                    .into(),
            ));
        }
        let valid = self.valid_approvers(allowed).len();
        if valid < quorum {
            return Err(ProtocolError::InvalidParameters(format!(
                "operation has {valid} valid approval(s) from this node's approvers; {quorum} required"
            )));
        }
        Ok(())
    }
}
