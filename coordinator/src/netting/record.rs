//! What the coordinator stores about a netting round: public data only (the spec,
//! the authorisation, party-signed headers, node answers, node-signed outputs —
//! party outputs are sealed to their party —, the batch and its signature).

use quorate_protocol::{
    netting::{
        round::RoundAuthorization, BundleHeader, PartyOutputs, PublicOutputs, RoundSpec,
        SettlementBatch,
    },
    NodeId, SignatureBytes,
};
use serde::{Deserialize, Serialize};

use super::NodeAck;
use crate::types::Attempt;

/// Where a round is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoundState {
    /// Announced to every node; bundles are accepted until close or the cut-off.
    Open,
    /// Closed on the listed inputs; collecting the nodes' outputs.
    Closing,
    /// Outputs collected; building and signing the settlement batch.
    Settling,
    /// The batch is signed (`GET …/settlement`).
    Settled,
    /// The opened nets do not sum to zero for an asset: nothing was signed.
    ConservationFailed,
    /// The round cannot go on; see `failure`.
    Failed,
    /// A limit-checked round whose verdict is "not covered": nothing is settled;
    /// the nodes' signed verdicts are the round's "not settled" statement.
    NotCovered,
}

impl RoundState {
    /// The lowercase name used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Closing => "closing",
            Self::Settling => "settling",
            Self::Settled => "settled",
            Self::ConservationFailed => "conservation_failed",
            Self::Failed => "failed",
            Self::NotCovered => "not_covered",
        }
    }

    /// Whether the round has ended (nothing more will change).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Settled | Self::ConservationFailed | Self::Failed | Self::NotCovered
        )
    }
}

/// Why a round failed: a problem `type` slug and what happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// Problem slug (`round-refused`, `coordinator-restarted`, `not-enough-signers`, …).
    pub kind: String,
    /// What happened, naming nodes and parties.
    pub detail: String,
}

/// The close of a round, as the coordinator ran it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct CloseRecord {
    /// `NettingClose.inputs`: per party, the bundle digest every node accepted.
    pub inputs: Vec<Option<[u8; 32]>>,
    /// `open::inputs_digest(spec, inputs)`.
    pub inputs_digest: [u8; 32],
    /// Every committee member's answer to the close.
    pub acks: Vec<NodeAck>,
    /// Verified public outputs, one per node that sent them.
    pub public: Vec<PublicOutputs>,
    /// Nodes whose outputs failed verification (at receipt or in the opening).
    pub culprits: Vec<NodeId>,
}

impl CloseRecord {
    /// Per party, whether it is in the round's nets.
    pub fn participants(&self) -> Vec<bool> {
        self.inputs.iter().map(Option::is_some).collect()
    }
}

/// A stored round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoundRecord {
    /// The definition.
    pub spec: RoundSpec,
    /// The creating client's authorisation (its `client` may close the round).
    pub authorization: RoundAuthorization,
    /// State.
    pub state: RoundState,
    /// Unix ms of creation.
    pub created_at_ms: u64,
    /// Unix ms of the last change.
    pub updated_at_ms: u64,
    /// Every committee member's answer to the announcement.
    pub announcement: Vec<NodeAck>,
    /// The close, once run.
    pub close: Option<CloseRecord>,
    /// The settlement batch, once built.
    pub batch: Option<SettlementBatch>,
    /// The asset whose nets did not sum to zero, and by how much.
    pub imbalance: Option<(String, i128)>,
    /// The batch signature, once signed.
    pub signature: Option<SignatureBytes>,
    /// Settlement signing attempts.
    pub attempts: Vec<Attempt>,
    /// Why the round failed.
    pub failure: Option<Failure>,
}

impl RoundRecord {
    /// A new open round.
    pub fn new(spec: RoundSpec, authorization: RoundAuthorization, now_ms: u64) -> Self {
        Self {
            spec,
            authorization,
            state: RoundState::Open,
            created_at_ms: now_ms,
            updated_at_ms: now_ms,
            announcement: Vec::new(),
            close: None,
            batch: None,
            imbalance: None,
            signature: None,
            attempts: Vec::new(),
            failure: None,
        }
    }

    /// Marks the round failed.
    pub fn fail(&mut self, kind: &str, detail: impl Into<String>, now_ms: u64) {
        self.state = RoundState::Failed;
        self.failure = Some(Failure {
            kind: kind.into(),
            detail: detail.into(),
        });
        self.updated_at_ms = now_ms;
    }
}

/// What the coordinator holds about one party of a round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PartyEntry {
    /// The party-signed header of its bundle (the first one any node accepted).
    pub header: Option<BundleHeader>,
    /// Nodes that accepted that bundle.
    pub held: Vec<NodeId>,
    /// Each node's latest refusal of a submission: `(node, reason, detail)`.
    pub refusals: Vec<(NodeId, String, String)>,
    /// The nodes' outputs for this party (sealed to it), after close.
    pub outputs: Vec<PartyOutputs>,
}

impl PartyEntry {
    /// Folds one submission's answers in: acceptances join `held` (and clear that
    /// node's refusal), refusals replace the node's previous one.
    pub fn merge(&mut self, header: &BundleHeader, acks: &[NodeAck]) {
        let digest = header.digest();
        match &self.header {
            Some(h) if h.digest() != digest => return,
            Some(_) => {}
            None => {
                if !acks.iter().any(NodeAck::is_accepted) {
                    // Keep refusals only: nobody holds this bundle.
                    self.record_refusals(acks);
                    return;
                }
                self.header = Some(header.clone());
            }
        }
        for a in acks {
            if a.is_accepted() && !self.held.contains(&a.node) {
                self.held.push(a.node);
                self.refusals.retain(|(n, _, _)| *n != a.node);
            }
        }
        self.record_refusals(acks);
    }

    fn record_refusals(&mut self, acks: &[NodeAck]) {
        for a in acks {
            if let Some((reason, detail)) = a.refusal() {
                if self.held.contains(&a.node) {
                    continue;
                }
                self.refusals.retain(|(n, _, _)| *n != a.node);
                self.refusals.push((a.node, reason.into(), detail.into()));
            }
        }
    }
}
