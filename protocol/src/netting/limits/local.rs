//! An in-process run of the whole limit-check MPC (every node and the king in one
//! process), for benchmarks, the simulator and tests. `threads` nodes are advanced
//! in parallel per step (scoped threads; the result does not depend on it).

use rand_core::CryptoRngCore;

use super::{
    field::F,
    king::King,
    node::{NodeMpc, Outcome},
    step::{KingStep, NodeStep},
    Job, Params, Stats,
};
use crate::{error::ProtocolError, identity::NodeIdentity};

/// Degree-`t − 1` Shamir shares of each value, per committee position.
///
/// # Security
/// Handles the plaintext values; for tests, benchmarks and simulations only.
pub fn share(params: &Params, values: &[F], rng: &mut impl CryptoRngCore) -> Vec<Vec<F>> {
    let d = params.d();
    let xs = params.xs();
    let mut out = vec![Vec::with_capacity(values.len()); xs.len()];
    let mut b = [0u8; 32];
    for v in values {
        let mut coeffs = vec![*v];
        for _ in 0..d {
            rng.fill_bytes(&mut b);
            coeffs.push(F::from_random_bytes(b));
        }
        for (i, x) in xs.iter().enumerate() {
            out[i].push(coeffs.iter().rev().fold(F::ZERO, |acc, c| acc * *x + *c));
        }
    }
    out
}

/// Runs every node (identities in committee order) and the king to the end.
pub fn run(
    params: &Params,
    job: &Job,
    identities: &[NodeIdentity],
    shares: Vec<Vec<F>>,
    threads: usize,
    rng: &mut impl CryptoRngCore,
) -> Result<(Vec<Outcome>, Stats), ProtocolError> {
    let mut king = King::new(params.clone(), job.clone())?;
    let mut nodes = Vec::with_capacity(identities.len());
    let mut msgs: Vec<NodeStep> = Vec::with_capacity(identities.len());
    for (i, (id, s)) in identities.iter().zip(shares).enumerate() {
        let (node, m) = NodeMpc::start(params.clone(), job.clone(), i, id, s, rng)?;
        nodes.push(node);
        msgs.push(m);
    }
    loop {
        let mut answers: Option<Vec<KingStep>> = None;
        for m in msgs.drain(..) {
            answers = king.receive(m)?;
        }
        let answers = answers.ok_or(ProtocolError::InvalidState("king did not answer"))?;
        let per = nodes.len().div_ceil(threads.max(1));
        let results: Vec<Result<Result<NodeStep, Outcome>, ProtocolError>> =
            std::thread::scope(|s| {
                let handles: Vec<_> = nodes
                    .chunks_mut(per)
                    .zip(answers.chunks(per))
                    .zip(identities.chunks(per))
                    .map(|((ns, as_), ids)| {
                        s.spawn(move || {
                            ns.iter_mut()
                                .zip(as_)
                                .zip(ids)
                                .map(|((n, a), id)| n.handle(id, a))
                                .collect::<Vec<_>>()
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .flat_map(|h| {
                        h.join().unwrap_or_else(|_| {
                            vec![Err(ProtocolError::InvalidState("a node thread panicked"))]
                        })
                    })
                    .collect()
            });
        let mut outcomes = Vec::new();
        for r in results {
            match r? {
                Ok(m) => msgs.push(m),
                Err(o) => outcomes.push(o),
            }
        }
        if !outcomes.is_empty() {
            return Ok((outcomes, king.stats()));
        }
    }
}

/// A node's signed results of one limit-check run.
pub type NodeResults = (super::verdict::LimitVerdict, Vec<super::verdict::LimitBits>);

/// Runs attempt `attempt` of a closed round's limit checks in process: every
/// node's real [`NodeLimits`](super::run::NodeLimits) and the coordinator's
/// [`KingLimits`](super::run::KingLimits), over the same payloads the network
/// carries (no envelopes). Returns every node's results, in `nodes` order, and the
/// king's costs. Used by the coordinator's in-memory backend and by tests.
///
/// # Security
/// Runs every node's secret shares through the MPC in one process: for local
/// backends, tests and simulations only.
pub fn run_round(
    spec: &crate::netting::RoundSpec,
    nodes: &[(&NodeIdentity, &crate::netting::session::NodeRound)],
    attempt: u32,
    rng: &mut impl CryptoRngCore,
) -> Result<(Vec<NodeResults>, Stats), ProtocolError> {
    run_round_with(spec, nodes, attempt, rng, false)
}

/// [`run_round`], optionally delivering every part twice to both sides (a network
/// that retransmits): the outcome must not change.
pub fn run_round_with(
    spec: &crate::netting::RoundSpec,
    nodes: &[(&NodeIdentity, &crate::netting::session::NodeRound)],
    attempt: u32,
    rng: &mut impl CryptoRngCore,
    retransmit: bool,
) -> Result<(Vec<NodeResults>, Stats), ProtocolError> {
    let copies = if retransmit { 2 } else { 1 };
    use super::run::{KingLimits, NodeLimits};
    use crate::wire::Payload;
    let (participants, digest) = nodes
        .first()
        .and_then(|(_, r)| r.closed())
        .ok_or(ProtocolError::InvalidState("limit checks before close"))?;
    let mut king = KingLimits::new(spec, participants, &digest, attempt)?;
    let mut runs = Vec::with_capacity(nodes.len());
    let mut inbox: Vec<(usize, Payload)> = Vec::new();
    for (i, (id, round)) in nodes.iter().enumerate() {
        let (n, parts) = NodeLimits::start(round, id, attempt, rng)?;
        runs.push(n);
        inbox.extend(parts.into_iter().map(|p| (i, p)));
    }
    let mut results: Vec<Option<NodeResults>> = vec![None; nodes.len()];
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
                    for _ in 0..copies {
                        if let Some(a) =
                            king.on_part(spec, &from, step, part, parts, bytes.clone())?
                        {
                            answers = a;
                        }
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
                for _ in 0..copies {
                    let back = runs[i].on_part(
                        spec,
                        nodes[i].0,
                        (step, part, parts),
                        bytes.clone(),
                        rng,
                    )?;
                    inbox.extend(back.into_iter().map(|b| (i, b)));
                }
            }
        }
    }
    let results =
        results
            .into_iter()
            .collect::<Option<Vec<_>>>()
            .ok_or(ProtocolError::InvalidState(
                "a node did not finish its limit checks",
            ))?;
    Ok((results, king.stats()))
}
