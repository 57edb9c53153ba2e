//! Limit-checked rounds (`RoundSpec.limits`): what the limit phase of a close
//! produced, and the round's verdict from the nodes' signed [`LimitVerdict`]s.
//!
//! The coordinator is the MPC's *king*: it relays and reconstructs masked values
//! only (`protocol::netting::limits::run::KingLimits`). A round's verdict is the
//! statement (`LimitVerdict::statement`: covered, failed parties, volumes, inputs
//! digest) that a quorum of `max(t, ⌊n/2⌋ + 1)` nodes signed identically; nodes that
//! signed another statement are named. Pure: shared by the engine, the local
//! backend, the API and the client library.

use quorate_protocol::{
    netting::{
        limits::{
            verdict::{AssetVolume, LimitBits, LimitVerdict},
            Stats,
        },
        RoundSpec,
    },
    NodeId,
};
use serde::{Deserialize, Serialize};

/// How one limit-check attempt ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitAttempt {
    /// Attempt number (1, 2, …; at most `run::MAX_ATTEMPTS`).
    pub attempt: u32,
    /// `done` (every node sent its result), `aborted` (the MPC stopped with an
    /// error), `timeout` (the phase deadline passed) or `refused` (a node refused
    /// `LimitStart`/`LimitPart`, or the close).
    pub outcome: String,
    /// The king step the attempt reached.
    pub step: u8,
    /// What happened (empty when done).
    pub reason: String,
    /// Nodes proven at fault (`ProtocolError::LimitCheckAborted.culprits`).
    pub culprits: Vec<NodeId>,
    /// Nodes the king was still waiting for when the attempt ended
    /// (`KingLimits::waiting_for`, or the nodes without a result).
    pub waited_for: Vec<NodeId>,
}

/// What a limit-checked close produced, beside the close itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct LimitsOutcome {
    /// Every node's verified verdict of the last attempt, in committee order.
    pub verdicts: Vec<LimitVerdict>,
    /// Every node's sealed bits for every participating party (each names its
    /// node and party), of the last attempt.
    pub bits: Vec<LimitBits>,
    /// The king's costs of the last attempt.
    pub stats: Stats,
    /// Every attempt, in order.
    pub attempts: Vec<LimitAttempt>,
    /// Nodes whose limit-check messages failed verification (bad verdict or bits,
    /// two different results).
    pub culprits: Vec<NodeId>,
}

impl LimitsOutcome {
    /// The round's verdict from the collected verdicts ([`round_verdict`]).
    pub fn verdict(&self, spec: &RoundSpec) -> Result<RoundVerdict, Disagreement> {
        round_verdict(spec, &self.verdicts)
    }

    /// Why the phase produced no verdict, naming the nodes: the last attempt's
    /// reason, culprits and the nodes waited for.
    pub fn failure(&self) -> String {
        match self.attempts.last() {
            None => "the limit checks did not run".into(),
            Some(a) => {
                let names = |v: &[NodeId]| {
                    if v.is_empty() {
                        "none".to_owned()
                    } else {
                        v.iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                };
                format!(
                    "limit checks failed after {} attempt(s); last attempt {} ({}) at step {}: \
                     {}; culprits: {}; waited for: {}",
                    self.attempts.len(),
                    a.attempt,
                    a.outcome,
                    a.step,
                    a.reason,
                    names(&a.culprits),
                    names(&a.waited_for)
                )
            }
        }
    }
}

/// A round's verdict: the statement a quorum of nodes signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoundVerdict {
    /// Every participating party is covered in every asset.
    pub covered: bool,
    /// Parties not covered (only when `limits.reveal_failures`).
    pub failed: Vec<String>,
    /// Netting efficiency per asset (only when `limits.efficiency`).
    pub volumes: Vec<AssetVolume>,
    /// The inputs digest the checks ran on.
    pub inputs_digest: [u8; 32],
    /// Nodes that signed this statement, in committee order.
    pub signers: Vec<NodeId>,
    /// Nodes that signed another statement (faulty), in committee order.
    pub dissent: Vec<NodeId>,
    /// The attempt the verdicts belong to.
    pub attempt: u32,
}

/// No quorum of identical statements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disagreement {
    /// What the nodes said, grouped by statement.
    pub detail: String,
    /// Every node that sent a verdict.
    pub nodes: Vec<NodeId>,
}

impl std::fmt::Display for Disagreement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail)
    }
}

/// Identical statements needed for a round's verdict: `max(t, ⌊n/2⌋ + 1)`.
pub fn verdict_quorum(spec: &RoundSpec) -> usize {
    usize::from(spec.threshold).max(spec.committee.len() / 2 + 1)
}

/// The statement of at least [`verdict_quorum`] of `verdicts` (one per node; each
/// must already be checked, `LimitVerdict::check`). Verdicts whose statement
/// differs are named in `dissent`; without a quorum the nodes are named by
/// statement in the error.
pub fn round_verdict(
    spec: &RoundSpec,
    verdicts: &[LimitVerdict],
) -> Result<RoundVerdict, Disagreement> {
    let quorum = verdict_quorum(spec);
    let order = |n: &NodeId| spec.committee.nodes().position(|m| m == *n);
    let mut groups: Vec<(&LimitVerdict, Vec<NodeId>)> = Vec::new();
    let mut seen: Vec<NodeId> = Vec::new();
    for v in verdicts {
        if seen.contains(&v.node) || order(&v.node).is_none() {
            continue;
        }
        seen.push(v.node);
        match groups
            .iter_mut()
            .find(|(g, _)| g.statement() == v.statement() && g.attempt == v.attempt)
        {
            Some((_, nodes)) => nodes.push(v.node),
            None => groups.push((v, vec![v.node])),
        }
    }
    let best = groups
        .iter()
        .enumerate()
        .max_by_key(|(_, (_, nodes))| nodes.len())
        .map(|(i, _)| i);
    match best {
        Some(i) if groups[i].1.len() >= quorum => {
            let (v, signers) = &groups[i];
            let mut signers = signers.clone();
            signers.sort_by_key(|n| order(n));
            let mut dissent: Vec<NodeId> = seen
                .iter()
                .filter(|n| !signers.contains(n))
                .copied()
                .collect();
            dissent.sort_by_key(|n| order(n));
            Ok(RoundVerdict {
                covered: v.covered,
                failed: v.failed.clone(),
                volumes: v.volumes.clone(),
                inputs_digest: v.inputs_digest,
                signers,
                dissent,
                attempt: v.attempt,
            })
        }
        _ => {
            let said: Vec<String> = groups
                .iter()
                .map(|(v, nodes)| {
                    format!(
                        "[{}] signed covered={} failed={:?} (attempt {})",
                        nodes
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", "),
                        v.covered,
                        v.failed,
                        v.attempt
                    )
                })
                .collect();
            Err(Disagreement {
                detail: format!(
                    "no {quorum} of the {} nodes signed the same limit verdict ({} verdicts \
                     received): {}",
                    spec.committee.len(),
                    seen.len(),
                    if said.is_empty() {
                        "none".into()
                    } else {
                        said.join("; ")
                    }
                ),
                nodes: seen,
            })
        }
    }
}
