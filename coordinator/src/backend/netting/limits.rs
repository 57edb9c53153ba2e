//! The limit phase in the local backend: every local node runs its real
//! `NodeLimits` and the coordinator's `KingLimits` answers them, over the same
//! `LimitPart`/`LimitResult` payloads the network carries (no envelopes: the nodes
//! are in-process). Attempts are retried like the engine does.

use std::sync::Arc;

use quorate_protocol::{
    netting::{
        limits::{local, run::MAX_ATTEMPTS},
        session::NodeRound,
        RoundSpec,
    },
    NodeIdentity, ProtocolError,
};

use crate::netting::limits::{LimitAttempt, LimitsOutcome};

/// Runs the limit checks of a closed round on every local node.
pub(super) fn run(spec: &RoundSpec, nodes: &[(Arc<NodeIdentity>, NodeRound)]) -> LimitsOutcome {
    let mut outcome = LimitsOutcome::default();
    for attempt in 1..=MAX_ATTEMPTS {
        match run_attempt(spec, nodes, attempt, &mut outcome) {
            Ok(()) => {
                outcome.attempts.push(LimitAttempt {
                    attempt,
                    outcome: "done".into(),
                    step: quorate_protocol::netting::limits::STEPS - 1,
                    reason: String::new(),
                    culprits: Vec::new(),
                    waited_for: Vec::new(),
                });
                return outcome;
            }
            Err(e) => {
                outcome.attempts.push(LimitAttempt {
                    attempt,
                    outcome: "aborted".into(),
                    step: 0,
                    reason: e.to_string(),
                    culprits: e.culprits(),
                    waited_for: Vec::new(),
                });
                outcome.verdicts.clear();
                outcome.bits.clear();
            }
        }
    }
    outcome
}

fn run_attempt(
    spec: &RoundSpec,
    nodes: &[(Arc<NodeIdentity>, NodeRound)],
    attempt: u32,
    outcome: &mut LimitsOutcome,
) -> Result<(), ProtocolError> {
    let refs: Vec<(&NodeIdentity, &NodeRound)> =
        nodes.iter().map(|(id, r)| (id.as_ref(), r)).collect();
    let (results, stats) = local::run_round(spec, &refs, attempt, &mut rand_core::OsRng)?;
    outcome.stats = stats;
    for (verdict, bits) in results {
        outcome.verdicts.push(verdict);
        outcome.bits.extend(bits);
    }
    Ok(())
}
