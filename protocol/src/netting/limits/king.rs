//! The king's side (run by the coordinator): collect every node's message for a
//! step, reduce products (`e = Σ_i λ_i w_i` over all `n` points), open values
//! robustly, supply square roots, relay shares for the nodes' own checks. It
//! holds no share of anything secret: every value it sees is masked by a PRSS
//! random it does not know.
//!
//! A node whose message has the wrong shape, or whose opening share is off the
//! polynomial where it alone explains the mismatch, is named (its messages are
//! signed, so the blame can be shown).

use super::{
    compare,
    field::{lagrange_at_zero, F},
    open::Opener,
    step::{KingStep, NodeStep},
    Job, Params, Stats, Verdicts, BITS, STEPS,
};
use crate::{error::ProtocolError, NodeId};

/// Field elements a node sends for each step (`products`, `openings`).
pub fn expected(job: &Job, step: u8) -> (usize, usize) {
    let n = job.inputs;
    let nm = n * BITS;
    let nv = job.verdict_inputs().len();
    let g = job.verdicts.len();
    let s = job.sum_inputs().len();
    let h = job.sums.len();
    match step {
        1 => (2 * n + 2 * nm + nv, 0),
        2 => (nm, nm),
        3 => (0, n),
        4..=9 => {
            let width = BITS >> (step - 4);
            (n * compare::level_products(width), 0)
        }
        10 => (2 * g + 2 * s, 0),
        11 | 12 => (0, 2),
        13 => (0, g + h),
        _ => (0, 0),
    }
}

/// The king's run.
#[derive(Debug)]
pub struct King {
    params: Params,
    job: Job,
    opener: Opener,
    lambda: Vec<F>,
    step: u8,
    inbox: Vec<Option<NodeStep>>,
    stats: Stats,
    verdicts: Option<Verdicts>,
}

fn abort(step: u8, reason: impl Into<String>, culprits: Vec<NodeId>) -> ProtocolError {
    ProtocolError::LimitCheckAborted {
        step,
        reason: reason.into(),
        culprits,
    }
}

impl King {
    /// A king for one run.
    pub fn new(params: Params, job: Job) -> Result<Self, ProtocolError> {
        super::check_committee(params.n(), usize::from(params.threshold))?;
        job.validate()?;
        let xs = params.xs();
        let n = params.n();
        Ok(Self {
            opener: Opener::new(&xs, params.d()),
            lambda: lagrange_at_zero(&xs),
            step: 0,
            inbox: vec![None; n],
            stats: Stats::default(),
            verdicts: None,
            params,
            job,
        })
    }

    /// The step being collected.
    pub fn step(&self) -> u8 {
        self.step
    }

    /// Costs so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The verdicts, once step 13 was answered.
    pub fn verdicts(&self) -> Option<&Verdicts> {
        self.verdicts.as_ref()
    }

    /// Positions whose message for the current step has not arrived.
    pub fn waiting_for(&self) -> Vec<NodeId> {
        (0..self.params.n())
            .filter(|&i| self.inbox[i].is_none())
            .map(|i| self.params.nodes[i])
            .collect()
    }

    /// Takes one node's message. When every node's message for the step is in,
    /// returns the answer for each position (in committee order).
    pub fn receive(&mut self, msg: NodeStep) -> Result<Option<Vec<KingStep>>, ProtocolError> {
        let from = usize::from(msg.from);
        let step = self.step;
        if from >= self.params.n() {
            return Err(abort(
                step,
                format!("message from unknown position {from}"),
                Vec::new(),
            ));
        }
        let node = self.params.nodes[from];
        if msg.step != step {
            return Err(abort(
                step,
                format!("node sent step {} while step {step} runs", msg.step),
                vec![node],
            ));
        }
        if let Some(prev) = &self.inbox[from] {
            return if *prev == msg {
                Ok(None)
            } else {
                Err(abort(
                    step,
                    "node sent two different messages for one step",
                    vec![node],
                ))
            };
        }
        let (p, o) = expected(&self.job, step);
        let shape_ok = msg.products.len() == p
            && msg.openings.len() == o
            && (step == 0 || msg.boxes.is_empty())
            && (step == 12) == msg.transcript.is_some()
            && msg.boxes.iter().all(|b| usize::from(b.from) == from);
        if !shape_ok {
            return Err(abort(
                step,
                format!("node's step-{step} message has the wrong shape"),
                vec![node],
            ));
        }
        self.stats.scalars_in += (p + o) as u64;
        self.stats.bytes_in += postcard::to_allocvec(&msg)
            .map(|b| b.len() as u64)
            .unwrap_or(0);
        self.inbox[from] = Some(msg);
        if self.inbox.iter().any(Option::is_none) {
            return Ok(None);
        }
        let msgs: Vec<NodeStep> = self
            .inbox
            .iter_mut()
            .map(|m| m.take().unwrap_or_default())
            .collect();
        let out = self.answer(&msgs)?;
        self.stats.steps += 1;
        self.step += 1;
        for o in &out {
            self.stats.bytes_out += postcard::to_allocvec(o)
                .map(|b| b.len() as u64)
                .unwrap_or(0);
        }
        if let Some(o) = out.first() {
            self.stats.scalars_out += (o.products.len()
                + o.openings.len()
                + o.roots.len()
                + o.shares.iter().map(Vec::len).sum::<usize>())
                as u64;
        }
        Ok(Some(out))
    }

    fn answer(&mut self, msgs: &[NodeStep]) -> Result<Vec<KingStep>, ProtocolError> {
        let step = self.step;
        let n = self.params.n();
        let mut base = KingStep {
            step,
            ..Default::default()
        };
        if step == 0 {
            return Ok((0..n)
                .map(|to| KingStep {
                    step: 0,
                    boxes: msgs
                        .iter()
                        .flat_map(|m| m.boxes.iter().filter(|b| usize::from(b.to) == to).cloned())
                        .collect(),
                    ..Default::default()
                })
                .collect());
        }
        // Products: interpolate the degree-2d masked shares at 0.
        let count = msgs[0].products.len();
        base.products = (0..count)
            .map(|p| (0..n).fold(F::ZERO, |acc, i| acc + self.lambda[i] * msgs[i].products[p]))
            .collect();
        self.stats.products += count as u64;
        match step {
            2 | 3 => {
                base.openings = self.open(step, msgs)?;
                self.stats.openings += base.openings.len() as u64;
                if step == 2 {
                    base.roots = roots(&base.openings).ok_or_else(|| {
                        abort(2, "an opened square is zero or not a square: a product was tampered with (not attributable)", Vec::new())
                    })?;
                }
            }
            11..=13 => {
                let opened = self.open(step, msgs)?;
                if step == 12 && opened[0] != F::ZERO {
                    // The nodes see the same and abort; say so early.
                    return Err(abort(12, "the multiplication check failed: a product was tampered with (not attributable)", Vec::new()));
                }
                if step == 13 {
                    let g = self.job.verdicts.len();
                    self.verdicts = Some(Verdicts {
                        passed: opened[..g].iter().map(|y| *y == F::ZERO).collect(),
                        sums: opened[g..]
                            .iter()
                            .map(|s| s.fits_u128().then(|| s.low_u128()))
                            .collect(),
                    });
                }
                base.shares = msgs.iter().map(|m| m.openings.clone()).collect();
                if step == 12 {
                    base.transcripts = msgs
                        .iter()
                        .map(|m| m.transcript.unwrap_or_default())
                        .collect();
                }
            }
            _ => {}
        }
        debug_assert!(step < STEPS);
        Ok(vec![base; n])
    }

    fn open(&self, step: u8, msgs: &[NodeStep]) -> Result<Vec<F>, ProtocolError> {
        let count = msgs[0].openings.len();
        let mut col = vec![F::ZERO; msgs.len()];
        (0..count)
            .map(|i| {
                for (c, m) in col.iter_mut().zip(msgs) {
                    *c = m.openings[i];
                }
                self.opener.open(&col).map_err(|culprits| {
                    abort(
                        step,
                        format!("opening {i}: the shares are not on one polynomial"),
                        culprits.into_iter().map(|p| self.params.nodes[p]).collect(),
                    )
                })
            })
            .collect()
    }
}

/// A square root of every value (`None` when one is zero or not a square). The
/// king's largest cost (one exponentiation per random bit), so large batches are
/// split over the machine's cores; the result does not depend on how.
pub fn roots(qs: &[F]) -> Option<Vec<F>> {
    let one = |q: &F| if *q == F::ZERO { None } else { q.sqrt() };
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    if threads < 2 || qs.len() < 4096 {
        return qs.iter().map(one).collect();
    }
    let per = qs.len().div_ceil(threads);
    std::thread::scope(|s| {
        let parts: Vec<_> = qs
            .chunks(per)
            .map(|c| s.spawn(move || c.iter().map(one).collect::<Option<Vec<F>>>()))
            .collect();
        let mut out = Vec::with_capacity(qs.len());
        for p in parts {
            out.extend(p.join().ok()??);
        }
        Some(out)
    })
}
