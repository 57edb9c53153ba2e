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
