//! JSON bodies and views of the netting resource (`/v1/netting/rounds`), shared by
//! the server and the client. Binary values are lowercase hex; `spec` and `batch`
//! are the serde JSON forms of `protocol::netting::RoundSpec` and
//! `SettlementBatch` (byte arrays as arrays of integers 0–255); `bundle`,
//! `outputs` and `headers` are hex of the postcard encodings of the protocol types.

use quorate_protocol::{
    netting::{RoundSpec, SettlementBatch},
    wire::frame::Ack,
};
use serde::{Deserialize, Serialize};

use super::{
    record::{PartyEntry, RoundRecord},
    NodeAck,
};
use crate::api::model::AttemptView;

/// A client's authorisation of a round (`RoundSpec::authorize`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorizationBody {
    /// The client's Ed25519 public key (32 bytes hex); must be registered.
    pub client: String,
    /// Ed25519 signature (64 bytes hex) over
    /// `"quorate/netting/round-auth/v1\0" ‖ RoundSpec::digest()`.
    pub signature: String,
}

/// Body of `POST /v1/netting/rounds`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRoundBody {
    /// The round definition.
    pub spec: RoundSpec,
    /// The creating client's authorisation.
    pub authorization: AuthorizationBody,
}

/// Body of `POST /v1/netting/rounds/{id}/bundles`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleBody {
    /// Hex of `postcard(InputBundle)` (`protocol::netting::share::deal`).
    pub bundle: String,
}

/// Body of `POST /v1/netting/rounds/{id}/close`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloseBody {
    /// The client's clock (Unix ms); within 5 minutes of the coordinator's.
    pub at_ms: u64,
    /// Ed25519 signature (64 bytes hex) by the round's creating client over
    /// `round::close_message(round, at_ms)`.
    pub signature: String,
}

/// Query of `POST /v1/netting/rounds/{id}/close`.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloseQuery {
    /// Wait until the round is settled, conservation-failed or failed.
    #[serde(default)]
    pub wait: bool,
    /// How long to wait (ms; capped by `limits.max_wait_ms`).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// Query of `GET /v1/netting/rounds/{id}/results/{party}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResultQuery {
    /// The party's clock (Unix ms); within 5 minutes of the coordinator's.
    pub at_ms: u64,
    /// Ed25519 signature (64 bytes hex) by the party's `sign_key` over
    /// `round::result_request_message(round, party, at_ms)`.
    pub signature: String,
}

/// One node's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAnswerView {
    /// Node id (hex).
    pub node: String,
    /// `accepted` or `rejected`.
    pub outcome: String,
    /// Stable reason code of a refusal (`netting:bad_bundle`, `policy:…`, `unreachable`, `timeout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What to fix (names the party where it is at fault).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl From<&NodeAck> for NodeAnswerView {
    fn from(a: &NodeAck) -> Self {
        match &a.ack {
            Ack::Accepted => Self {
                node: a.node.to_string(),
                outcome: "accepted".into(),
                reason: None,
                detail: None,
            },
            Ack::Rejected { reason, detail } => Self {
                node: a.node.to_string(),
                outcome: "rejected".into(),
                reason: Some(reason.clone()),
                detail: Some(detail.clone()),
            },
        }
    }
}

/// A committee member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberView {
    /// Node id (hex).
    pub node: String,
    /// Roster index (the evaluation point of its shares).
    pub index: u16,
}

/// One party of a round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartyView {
    /// Party index (position in `spec.parties`).
    pub index: u32,
    /// Party name.
    pub name: String,
    /// A bundle was submitted and at least one node accepted it.
    pub submitted: bool,
    /// Its digest (`BundleHeader::digest`, hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Nodes that accepted it.
    pub accepted_by: usize,
    /// Committee size (a bundle is in the round only when every node accepted it).
    pub nodes: usize,
    /// After close: whether the party is in the nets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub included: Option<bool>,
    /// Nodes' latest refusals of this party's submissions.
    pub refusals: Vec<NodeAnswerView>,
}

/// An asset whose nets did not sum to zero.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImbalanceView {
    /// Asset.
    pub asset: String,
    /// Sum of the nets (decimal string, minor units).
    pub amount: String,
}

/// Public checks of a closed round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChecksView {
    /// Digest of the inputs the round was closed on (`open::inputs_digest`, hex).
    pub inputs_digest: String,
    /// Per party, whether it is in the nets.
    pub participants: Vec<bool>,
    /// Every node's answer to the close.
    pub close: Vec<NodeAnswerView>,
    /// Nodes whose verified public outputs were received.
    pub public_outputs: usize,
    /// Shares needed to open (`spec.threshold`).
    pub threshold: u16,
    /// `ok` or `failed` once the nets were opened and summed per asset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conservation: Option<String>,
    /// The asset that failed conservation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imbalance: Option<ImbalanceView>,
    /// The settlement message (hex, 32 bytes) once the batch is built.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_message: Option<String>,
}

/// Why a round failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureView {
    /// Problem `type` URI of the cause.
    #[serde(rename = "type")]
    pub type_uri: String,
    /// What happened.
    pub detail: String,
}

/// `GET /v1/netting/rounds/{id}` (and the answer of create and close).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoundView {
    /// Round id (16 bytes hex).
    pub id: String,
    /// `open`, `closing`, `settling`, `settled`, `conservation_failed`, `failed`
    /// or `not_covered` (limit-checked rounds).
    pub state: String,
    /// Settlement key id (hex).
    pub key_id: String,
    /// Creating client's key (hex).
    pub client: String,
    /// `RoundSpec::digest` (hex).
    pub spec_digest: String,
    /// Bundle cut-off (Unix seconds).
    pub cutoff: u64,
    /// Shares needed to open a value.
    pub threshold: u16,
    /// Unix ms of creation.
    pub created_at_ms: u64,
    /// Unix ms of the last change.
    pub updated_at_ms: u64,
    /// The committee, in index order.
    pub committee: Vec<MemberView>,
    /// Every node's answer to the announcement.
    pub announcement: Vec<NodeAnswerView>,
    /// Every party.
    pub parties: Vec<PartyView>,
    /// After close.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checks: Option<ChecksView>,
    /// Nodes proven faulty (outputs failing verification).
    pub culprits: Vec<String>,
    /// Settlement signing attempts.
    pub attempts: Vec<AttemptView>,
    /// Why the round failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<FailureView>,
    /// Limit-checked rounds (`spec.limits`): settings, the round's verdict and
    /// the nodes' signed verdicts, costs and attempts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<super::limits_model::LimitsView>,
}

impl RoundView {
    /// The view of a stored round and its parties (`parties[p]`, default when absent).
    pub fn build(record: &RoundRecord, parties: &[PartyEntry]) -> Self {
        let spec = &record.spec;
        let n = spec.committee.len();
        let close = record.close.as_ref();
        let party_views = spec
            .parties
            .iter()
            .enumerate()
            .map(|(p, party)| {
                let e = parties.get(p).cloned().unwrap_or_default();
                PartyView {
                    index: p as u32,
                    name: party.name.clone(),
                    submitted: e.header.is_some(),
                    digest: e.header.as_ref().map(|h| hex::encode(h.digest())),
                    accepted_by: e.held.len(),
                    nodes: n,
                    included: close.map(|c| c.inputs.get(p).is_some_and(Option::is_some)),
                    refusals: e
                        .refusals
                        .iter()
                        .map(|(node, reason, detail)| NodeAnswerView {
                            node: node.to_string(),
                            outcome: "rejected".into(),
                            reason: Some(reason.clone()),
                            detail: Some(detail.clone()),
                        })
                        .collect(),
                }
            })
            .collect();
        let checks = close.map(|c| ChecksView {
            inputs_digest: hex::encode(c.inputs_digest),
            participants: c.participants(),
            close: c.acks.iter().map(NodeAnswerView::from).collect(),
            public_outputs: c.public.len(),
            threshold: spec.threshold,
            conservation: if record.imbalance.is_some() {
                Some("failed".into())
            } else {
                record.batch.as_ref().map(|_| "ok".into())
            },
            imbalance: record.imbalance.as_ref().map(|(asset, s)| ImbalanceView {
                asset: asset.clone(),
                amount: s.to_string(),
            }),
            batch_message: record.batch.as_ref().map(|b| hex::encode(b.message())),
        });
        Self {
            id: spec.id.to_string(),
            state: record.state.as_str().into(),
            key_id: spec.key.to_string(),
            client: hex::encode(record.authorization.client),
            spec_digest: hex::encode(spec.digest()),
            cutoff: spec.cutoff,
            threshold: spec.threshold,
            created_at_ms: record.created_at_ms,
            updated_at_ms: record.updated_at_ms,
            committee: spec
                .committee
                .members()
                .iter()
                .map(|m| MemberView {
                    node: m.node.to_string(),
                    index: m.index,
                })
                .collect(),
            announcement: record
                .announcement
                .iter()
                .map(NodeAnswerView::from)
                .collect(),
            parties: party_views,
            checks,
            culprits: close
                .map(|c| c.culprits.iter().map(ToString::to_string).collect())
                .unwrap_or_default(),
            attempts: record.attempts.iter().map(AttemptView::from).collect(),
            failure: record.failure.as_ref().map(|f| FailureView {
                type_uri: format!("{}{}", crate::api::problem::PROBLEM_BASE, f.kind),
                detail: f.detail.clone(),
            }),
            limits: super::limits_model::LimitsView::build(spec, None),
        }
    }
}

/// The answer of `POST /v1/netting/rounds/{id}/bundles`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleAnswer {
    /// Round id (hex).
    pub round: String,
    /// Party name.
    pub party: String,
    /// Party index.
    pub index: u32,
    /// Bundle digest (hex).
    pub digest: String,
    /// Every node holds this bundle now: it will be in the round when it closes.
    pub accepted_by_all: bool,
    /// Every node's answer to this submission, in committee order.
    pub nodes: Vec<NodeAnswerView>,
}

/// `GET /v1/netting/rounds/{id}/results/{party}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultView {
    /// Hex of `postcard(PartyOutputs)`, one per node that sent them.
    pub outputs: Vec<String>,
    /// Hex of `postcard(BundleHeader)` of every participating party, in party order.
    pub headers: Vec<String>,
    /// Per party, whether it is in the nets.
    pub participants: Vec<bool>,
    /// `open::inputs_digest` of the close (hex).
    pub inputs_digest: String,
    /// Limit-checked rounds: hex of `postcard(LimitBits)` for this party, one per
    /// node that sent its result (open with `limits::verdict::open_bits`; at least
    /// `2t − 1` are needed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub limit_bits: Vec<String>,
}

/// `GET /v1/netting/rounds/{id}/settlement`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettlementView {
    /// The batch.
    pub batch: SettlementBatch,
    /// Hex of `postcard(batch)` (`SettlementBatch::encode`).
    pub encoding: String,
    /// Hex of `SettlementBatch::message`: SHA-256 over the domain and the encoding.
    pub message: String,
    /// Hex of the FROST signature over `message` under the key (no tweak).
    pub signature: String,
    /// Key id (hex).
    pub key_id: String,
}
