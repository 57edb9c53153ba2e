//! The coordinator's side of MPC netting, shared by the engine, the in-memory
//! backend, the store, the HTTP API and the client library.
//!
//! The coordinator never sees a position: it forwards each party's sealed share
//! boxes to the nodes, lists the bundles every node accepted when the round closes,
//! collects the nodes' signed (and, for parties, sealed) outputs, rebuilds the
//! settlement batch from the public openings and the party-signed headers it holds,
//! and has the network threshold-sign it. See `protocol::netting` for the
//! cryptography and byte formats.
//!
//! Files: `record` (what the store keeps per round and party), `model` (JSON bodies
//! and views of the HTTP API), `settle` (inputs list and settlement batch, pure),
//! `limits` (the limit phase's outcome and the round's verdict, pure).

pub mod limits;
pub mod limits_model;
pub mod model;
pub mod record;
pub mod settle;

use quorate_protocol::{
    netting::{round::RoundAuthorization, PartyOutputs, PublicOutputs, RoundId, RoundSpec},
    wire::frame::Ack,
    NodeId, ProtocolError, SignatureBytes,
};
use serde::{Deserialize, Serialize};

use crate::types::{Attempt, KeyRecord};

/// Longest a client's `at_ms` (close and result requests) may be from the
/// coordinator's clock.
pub const MAX_CLOCK_SKEW_MS: u64 = 5 * 60 * 1000;
/// Most rounds one engine (or local backend) runs at once; more are refused.
pub const MAX_LIVE_ROUNDS: usize = 64;

/// One node's answer to one netting message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAck {
    /// The node.
    pub node: NodeId,
    /// `Accepted`, or `Rejected { reason, detail }` (`netting:<code>`, `policy:<rule>`,
    /// `unreachable`, `timeout`).
    pub ack: Ack,
}

impl NodeAck {
    /// An acceptance.
    pub fn accepted(node: NodeId) -> Self {
        Self {
            node,
            ack: Ack::Accepted,
        }
    }

    /// A refusal.
    pub fn rejected(node: NodeId, reason: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            node,
            ack: Ack::Rejected {
                reason: reason.into(),
                detail: detail.into(),
            },
        }
    }

    /// Whether the node accepted.
    pub fn is_accepted(&self) -> bool {
        matches!(self.ack, Ack::Accepted)
    }

    /// `(reason, detail)` of a refusal.
    pub fn refusal(&self) -> Option<(&str, &str)> {
        match &self.ack {
            Ack::Accepted => None,
            Ack::Rejected { reason, detail } => Some((reason, detail)),
        }
    }
}

/// What a backend needs to announce a round.
#[derive(Debug, Clone)]
pub struct RoundOpen {
    /// The round definition (already validated by the API).
    pub spec: RoundSpec,
    /// The creating client's authorisation, forwarded to every node.
    pub authorization: RoundAuthorization,
    /// The settlement key (`spec.key`).
    pub key: KeyRecord,
}

/// What one bundle submission did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleOutcome {
    /// The party's index.
    pub party: u32,
    /// The bundle digest (`BundleHeader::digest`).
    pub digest: [u8; 32],
    /// Every committee member's answer to this submission, in committee order.
    pub acks: Vec<NodeAck>,
}

/// What closing a round produced.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CloseOutcome {
    /// Per party, the bundle digest every committee node accepted (`None` otherwise):
    /// what `NettingClose` listed.
    pub inputs: Vec<Option<[u8; 32]>>,
    /// Every committee member's answer to the close, in committee order.
    pub acks: Vec<NodeAck>,
    /// The verified public outputs received, one per node at most.
    pub public: Vec<PublicOutputs>,
    /// Per party index, the verified party outputs received, one per node at most.
    pub parties: Vec<Vec<PartyOutputs>>,
    /// Nodes that sent outputs failing their signature or context check, or two
    /// different outputs for one slot.
    pub culprits: Vec<NodeId>,
    /// Limit-checked rounds (`spec.limits`): the limit phase (verdicts, bits,
    /// costs, attempts). `public` then holds only outputs released after a covered
    /// verdict.
    pub limits: Option<limits::LimitsOutcome>,
}

/// What signing a settlement batch produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettleOutcome {
    /// The FROST signature over the batch message.
    pub signature: SignatureBytes,
    /// Every signing attempt.
    pub attempts: Vec<Attempt>,
}

/// What a backend is asked to sign at the end of a round.
#[derive(Debug, Clone)]
pub struct SettleRequest {
    /// Round.
    pub round: RoundId,
    /// The public outputs the batch was built from (forwarded to the signers, who
    /// rebuild the batch themselves).
    pub views: Vec<PublicOutputs>,
    /// The 32-byte batch message.
    pub message: [u8; 32],
}

/// The `netting:<code>` reason a node gives for a protocol error about a bundle.
pub fn bundle_reason(e: &ProtocolError) -> &'static str {
    match e {
        ProtocolError::LateBundle { .. } => "netting:late_bundle",
        _ => "netting:bad_bundle",
    }
}

/// Per party, the digest of the bundle every one of `members` holds, given per party
/// the digest submitted and the nodes that accepted it.
pub fn inputs_held_by_all(
    digests: &[Option<[u8; 32]>],
    held: &[Vec<NodeId>],
    members: &[NodeId],
) -> Vec<Option<[u8; 32]>> {
    digests
        .iter()
        .enumerate()
        .map(|(p, d)| {
            let all = held
                .get(p)
                .is_some_and(|h| members.iter().all(|m| h.contains(m)));
            d.filter(|_| all)
        })
        .collect()
}
