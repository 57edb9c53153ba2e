//! The limit phase in the local backend: every local node runs its real
//! `NodeLimits` and the coordinator's `KingLimits` answers them, over the same
//! `LimitPart`/`LimitResult` payloads the network carries (no envelopes: the nodes
//! are in-process). Attempts are retried like the engine does.

use std::sync::Arc;

use quorate_protocol::{
    netting::{
        limits::run::{KingLimits, NodeLimits, MAX_ATTEMPTS},
        session::NodeRound,
        RoundSpec,
    },
    NodeIdentity, Payload, ProtocolError,
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
    let (participants, digest) = nodes
        .first()
        .and_then(|(_, r)| r.closed())
        .ok_or(ProtocolError::InvalidState("limit checks before close"))?;
    let mut king = KingLimits::new(spec, participants, &digest, attempt)?;
    let mut limits = Vec::with_capacity(nodes.len());
    let mut inbox: Vec<(usize, Payload)> = Vec::new();
    for (i, (id, round)) in nodes.iter().enumerate() {
        let (n, parts) = NodeLimits::start(round, id, attempt, &mut rand_core::OsRng)?;
        limits.push(n);
        inbox.extend(parts.into_iter().map(|p| (i, p)));
    }
    let mut results = vec![None; nodes.len()];
    while !inbox.is_empty() {
        let mut answers = Vec::new();
        for (i, p) in inbox.drain(..) {
            match p {
                Payload::LimitPart {
                    step,
                    part,
                    parts,
                    bytes,
                    ..
                } => {
                    let from = nodes[i].0.node_id();
                    if let Some(a) = king.on_part(spec, &from, step, part, parts, bytes)? {
                        answers = a;
                    }
                }
                Payload::LimitResult { verdict, bits } => results[i] = Some((verdict, bits)),
                _ => return Err(ProtocolError::InvalidState("unexpected limit payload")),
            }
        }
        for (node, parts) in answers {
            let i = nodes
                .iter()
                .position(|(id, _)| id.node_id() == node)
                .ok_or(ProtocolError::UnknownSender(node))?;
            for p in parts {
                let Payload::LimitPart {
                    step,
                    part,
                    parts,
                    bytes,
                    ..
                } = p
                else {
                    continue;
                };
                let back = limits[i].on_part(
                    spec,
                    &nodes[i].0,
                    (step, part, parts),
                    bytes,
                    &mut rand_core::OsRng,
                )?;
                inbox.extend(back.into_iter().map(|b| (i, b)));
            }
        }
    }
    outcome.stats = king.stats();
    for r in results.into_iter().flatten() {
        outcome.verdicts.push(r.0);
        outcome.bits.extend(r.1);
    }
    Ok(())
}
