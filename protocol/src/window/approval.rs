//! One node's signed statement that a request passed its policy and that the
//! request's amount is reserved in its rolling window.

use serde::{Deserialize, Serialize};

use crate::{
    error::ProtocolError,
    identity::{self, NodeIdentity},
    ids::{KeyId, NodeId},
    request::SigningRequest,
};

/// Domain separator of window approvals (with its trailing NUL byte).
pub const WINDOW_APPROVAL_DOMAIN: &[u8] = b"quorate/window-approval/v1\0";

/// Version of the [`WindowStatement`] layout.
pub const WINDOW_STATEMENT_VERSION: u16 = 1;

/// What a node signs when it approves a request for the window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowStatement {
    /// Layout version ([`WINDOW_STATEMENT_VERSION`]).
    pub version: u16,
    /// [`SigningRequest::hash`] of the client's request.
    pub request_hash: [u8; 32],
    /// The request's key.
    pub key_id: KeyId,
    /// The approving node.
    pub node: NodeId,
    /// The request's asset.
    pub asset: String,
    /// The request's amount, in the asset's minor units.
    pub amount: u64,
    /// The approver's own `window_quorum` for this client and asset (0: none
    /// configured): how coordinators learn how many approvals signers want.
    pub required_quorum: u16,
    /// The request's expiry (Unix ms); the approval means nothing after it.
    pub expires_at_ms: u64,
}

/// A [`WindowStatement`] with the approving node's Ed25519 signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowApproval {
    /// What is approved.
    pub statement: WindowStatement,
    /// Ed25519 signature by `statement.node` over [`WindowStatement::message`].
    pub signature: ed25519_dalek::Signature,
}

impl WindowStatement {
    /// The statement a node makes about `request` (its hash, key, declared asset
    /// and amount, and expiry) with its own `required_quorum`. For a request whose
    /// counted amount is not the declared one (a PSBT's outflow), set it with
    /// [`Self::counting`].
    pub fn for_request(request: &SigningRequest, node: NodeId, required_quorum: u16) -> Self {
        Self {
            version: WINDOW_STATEMENT_VERSION,
            request_hash: request.hash(),
            key_id: request.key_id,
            node,
            asset: request.purpose.asset.clone(),
            amount: request.purpose.amount,
            required_quorum,
            expires_at_ms: request.expires_at_ms,
        }
    }

    /// The asset and amount this node reserved for the request (what its limits
    /// count: a PSBT's parsed outflow under the client's `[bitcoin]` asset).
    pub fn counting(mut self, asset: impl Into<String>, amount: u64) -> Self {
        self.asset = asset.into();
        self.amount = amount;
        self
    }

    /// The exact bytes a node signs: [`WINDOW_APPROVAL_DOMAIN`] ‖ postcard(self).
    pub fn message(&self) -> Vec<u8> {
        let mut out = WINDOW_APPROVAL_DOMAIN.to_vec();
        // Plain integers, byte arrays and a string: serializing cannot fail.
        out.extend(postcard::to_allocvec(self).unwrap_or_default());
        out
    }

    /// Signs as `identity`.
    ///
    /// # Security
    /// Uses the node's long-term identity key. A node must sign a statement only
    /// for a request its own policy allowed, after the reservation is recorded.
    /// The statement must name the signing node.
    pub fn sign(self, identity: &NodeIdentity) -> Result<WindowApproval, ProtocolError> {
        if self.node != identity.node_id() {
            return Err(ProtocolError::InvalidParameters(
                "a window statement is signed by the node it names".into(),
            ));
        }
        let signature = identity.sign(&self.message());
        Ok(WindowApproval {
            statement: self,
            signature,
        })
    }
}

impl WindowApproval {
    /// Checks the signature under the node the statement names (strict Ed25519).
    pub fn verify_signature(&self) -> Result<(), ProtocolError> {
        identity::verify(
            &self.statement.node,
            &self.statement.message(),
            &self.signature,
        )
    }

    /// Whether this is a validly signed approval of `request_hash` under `key_id`
    /// by `node`: what a coordinator checks on each approval it collects.
    pub fn verify_for(
        &self,
        request_hash: &[u8; 32],
        key_id: &KeyId,
        node: &NodeId,
    ) -> Result<(), ProtocolError> {
        let s = &self.statement;
        if s.version != WINDOW_STATEMENT_VERSION {
            return Err(ProtocolError::UnsupportedVersion(s.version));
        }
        if &s.node != node {
            return Err(ProtocolError::WrongContext(
                "window approval of another node",
            ));
        }
        if &s.request_hash != request_hash || &s.key_id != key_id {
            return Err(ProtocolError::WrongContext(
                "window approval of another request or key",
            ));
        }
        self.verify_signature()
    }
}
