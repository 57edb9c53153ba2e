//! JSON views of a limit-checked round (`spec.limits`): the `limits` section of
//! `GET /v1/netting/rounds/{id}`. Node ids and signatures are lowercase hex;
//! `encoding` is hex of `postcard(LimitVerdict)` (what a client verifies);
//! volumes are decimal strings (u128 minor units do not fit a JSON number safely).

use quorate_protocol::netting::{
    limits::{verdict::LimitVerdict, Stats},
    round::LimitSettings,
    RoundSpec,
};
use serde::{Deserialize, Serialize};

use super::limits::{verdict_quorum, LimitAttempt, LimitsOutcome};

/// Netting efficiency in one asset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeView {
    /// Asset.
    pub asset: String,
    /// Bilateral (gross) volume, decimal string of minor units; `null` when an
    /// input was out of range.
    pub gross: Option<String>,
    /// Multilateral (net) volume, decimal string; `null` likewise.
    pub net: Option<String>,
}

/// One node's signed verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitVerdictView {
    /// The signing node (hex).
    pub node: String,
    /// Attempt the verdict belongs to.
    pub attempt: u32,
    /// The node's statement: every participant covered in every asset.
    pub covered: bool,
    /// Parties not covered, by name (only with `reveal_failures`).
    pub failed: Vec<String>,
    /// Ed25519 signature by the node over `LimitVerdict::digest` (hex, 64 bytes).
    pub signature: String,
    /// Hex of `postcard(LimitVerdict)`: the signed verdict itself.
    pub encoding: String,
}

impl From<&LimitVerdict> for LimitVerdictView {
    fn from(v: &LimitVerdict) -> Self {
        Self {
            node: v.node.to_string(),
            attempt: v.attempt,
            covered: v.covered,
            failed: v.failed.clone(),
            signature: hex::encode(&v.signature),
            encoding: hex::encode(postcard::to_allocvec(v).unwrap_or_default()),
        }
    }
}

/// One limit-check attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitAttemptView {
    /// Attempt number (0: the phase did not start).
    pub attempt: u32,
    /// `done`, `aborted`, `timeout` or `refused`.
    pub outcome: String,
    /// King step reached (0–13).
    pub step: u8,
    /// What happened (empty when done).
    pub reason: String,
    /// Nodes proven at fault (hex).
    pub culprits: Vec<String>,
    /// Nodes the coordinator was waiting for when the attempt ended (hex).
    pub waited_for: Vec<String>,
}

impl From<&LimitAttempt> for LimitAttemptView {
    fn from(a: &LimitAttempt) -> Self {
        let hex = |v: &[quorate_protocol::NodeId]| v.iter().map(ToString::to_string).collect();
        Self {
            attempt: a.attempt,
            outcome: a.outcome.clone(),
            step: a.step,
            reason: a.reason.clone(),
            culprits: hex(&a.culprits),
            waited_for: hex(&a.waited_for),
        }
    }
}

/// The `limits` section of a round view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitsView {
    /// The round's `spec.limits`.
    pub settings: LimitSettings,
    /// `pending` (not closed yet), `covered`, `not_covered` or `failed` (no quorum
    /// verdict; see `error`).
    pub state: String,
    /// The round's verdict, once a quorum of nodes signed one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub covered: Option<bool>,
    /// Parties not covered (with `reveal_failures`; else empty).
    pub failed: Vec<String>,
    /// Netting efficiency per asset (with `efficiency`; else empty).
    pub volumes: Vec<VolumeView>,
    /// Identical statements needed: `max(t, floor(n/2) + 1)`.
    pub quorum: usize,
    /// Nodes that signed the round's verdict (hex).
    pub signers: Vec<String>,
    /// Nodes that signed another statement (hex).
    pub dissent: Vec<String>,
    /// Every node's signed verdict of the last attempt.
    pub verdicts: Vec<LimitVerdictView>,
    /// The king's costs of the last attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<Stats>,
    /// Every attempt.
    pub attempts: Vec<LimitAttemptView>,
    /// Nodes whose limit-check messages failed verification (hex).
    pub culprits: Vec<String>,
    /// Why there is no verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl LimitsView {
    /// The section of a limit-checked round (`None` without `spec.limits`).
    pub fn build(spec: &RoundSpec, outcome: Option<&LimitsOutcome>) -> Option<Self> {
        let settings = spec.limits?;
        let mut view = Self {
            settings,
            state: "pending".into(),
            covered: None,
            failed: Vec::new(),
            volumes: Vec::new(),
            quorum: verdict_quorum(spec),
            signers: Vec::new(),
            dissent: Vec::new(),
            verdicts: Vec::new(),
            stats: None,
            attempts: Vec::new(),
            culprits: Vec::new(),
            error: None,
        };
        let Some(o) = outcome else {
            return Some(view);
        };
        view.verdicts = o.verdicts.iter().map(LimitVerdictView::from).collect();
        view.stats = Some(o.stats);
        view.attempts = o.attempts.iter().map(LimitAttemptView::from).collect();
        view.culprits = o.culprits.iter().map(ToString::to_string).collect();
        match o.verdict(spec) {
            Ok(v) => {
                view.state = if v.covered { "covered" } else { "not_covered" }.into();
                view.covered = Some(v.covered);
                view.failed = v.failed;
                view.volumes = v
                    .volumes
                    .iter()
                    .map(|a| VolumeView {
                        asset: a.asset.clone(),
                        gross: a.gross.map(|x| x.to_string()),
                        net: a.net.map(|x| x.to_string()),
                    })
                    .collect();
                view.signers = v.signers.iter().map(ToString::to_string).collect();
                view.dissent = v.dissent.iter().map(ToString::to_string).collect();
            }
            Err(d) => {
                view.state = "failed".into();
                view.error = Some(if o.verdicts.is_empty() {
                    o.failure()
                } else {
                    d.detail
                });
            }
        }
        Some(view)
    }
}
