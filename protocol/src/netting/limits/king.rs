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
    node::steps,
    open::Opener,
    step::{signed_digest, KingStep, NodeStep, Signed},
    Job, Params, Stats, Verdicts, BITS, STEPS,
};
use crate::{error::ProtocolError, NodeId};

/// Field elements a node sends for each step (`products`, `openings`).
pub fn expected(job: &Job, step: u8) -> (usize, usize) {
    use steps::*;
    let n = job.inputs;
    let nm = n * BITS;
    let nv = job.verdict_inputs().len();
    let g = job.verdicts.len();
    let s = job.sum_inputs().len();
    let h = job.sums.len();
    match step {
        PRODUCTS => (2 * n + 3 * nm + nv, 0),
        BIT_MACS => (nm, 0),
        BIT_COIN => (0, 2),
        BIT_CHECK => (0, 1 + nm),
        SQUARE_COIN | SQUARE_CHECK => (0, 1),
        MASK => (0, n),
        TREE..=13 => {
            let width = BITS >> (step - TREE);
            (n * compare::level_products(width), 0)
        }
        OUTPUTS => (2 * g + 2 * s, 0),
        COIN | CHECK => (0, 2),
        FINAL => (0, g + h),
        _ => (0, 0),
    }
}

/// How many leading openings of a step are *checked*: signed by the node,
/// relayed by the king to every node and opened by each node itself.
pub fn checked(job: &Job, step: u8) -> usize {
    use steps::*;
    match step {
        BIT_COIN | COIN | CHECK => 2,
        BIT_CHECK | SQUARE_COIN | SQUARE_CHECK => 1,
        FINAL => job.verdicts.len() + job.sums.len(),
        _ => 0,
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

    /// Whether position `pos`'s message for the current step is in.
    pub fn has_message(&self, pos: usize) -> bool {
        self.inbox.get(pos).is_some_and(Option::is_some)
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
            && (step == steps::PRODUCTS || msg.key_digests.is_empty())
            && (step == steps::CHECK) == msg.transcript.is_some()
            && msg.boxes.iter().all(|b| usize::from(b.from) == from);
        if !shape_ok {
            return Err(abort(
                step,
                format!("node's step-{step} message has the wrong shape"),
                vec![node],
            ));
        }
        let k = checked(&self.job, step);
        let digest = signed_digest(
            &self.params.session,
            step,
            msg.from,
            &msg.openings[..k],
            msg.transcript,
            &msg.key_digests,
        );
        let signed = ed25519_dalek::Signature::from_slice(&msg.signature)
            .ok()
            .is_some_and(|sig| crate::identity::verify(&node, &digest, &sig).is_ok());
        if !signed {
            return Err(abort(
                step,
                "node's step message is not signed by it",
                vec![node],
            ));
        }
        self.stats.scalars_in += (p + o) as u64;
        self.stats.bytes_in += msg.encoded_len() as u64;
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
            self.stats.bytes_out += o.encoded_len() as u64;
        }
        if let Some(o) = out.first() {
            self.stats.scalars_out += (o.products.len()
                + o.openings.len()
                + o.roots.len()
                + o.signed.iter().map(|s| s.openings.len()).sum::<usize>())
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
        if step == steps::SETUP {
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
        if step == steps::PRODUCTS {
            self.confirm_keys(msgs)?;
        }
        // Products: interpolate the degree-2d masked shares at 0.
        let count = msgs[0].products.len();
        base.products = (0..count)
            .map(|p| (0..n).fold(F::ZERO, |acc, i| acc + self.lambda[i] * msgs[i].products[p]))
            .collect();
        self.stats.products += count as u64;
        let k = checked(&self.job, step);
        if step == steps::BIT_CHECK || step == steps::MASK {
            base.openings = self.open(step, msgs, k)?;
            self.stats.openings += base.openings.len() as u64;
            if step == steps::BIT_CHECK {
                base.roots = roots(&base.openings).ok_or_else(|| {
                    abort(step, "an opened square is zero or not a square: a product was tampered with (not attributable)", Vec::new())
                })?;
            }
        }
        if k > 0 {
            let opened: Vec<F> = (0..k)
                .map(|i| self.open_one(step, msgs, i))
                .collect::<Result<_, _>>()?;
            if (step == steps::BIT_CHECK || step == steps::CHECK) && opened[0] != F::ZERO {
                // The nodes see the same and abort; say so early.
                return Err(abort(
                    step,
                    "a multiplication check failed: a product was tampered with (not attributable)",
                    Vec::new(),
                ));
            }
            if step == steps::FINAL {
                let g = self.job.verdicts.len();
                self.verdicts = Some(Verdicts {
                    passed: opened[..g].iter().map(|y| *y == F::ZERO).collect(),
                    sums: opened[g..]
                        .iter()
                        .map(|s| s.fits_u128().then(|| s.low_u128()))
                        .collect(),
                });
            }
            base.signed = msgs
                .iter()
                .map(|m| Signed {
                    openings: m.openings[..k].to_vec(),
                    transcript: m.transcript,
                    key_digests: Vec::new(),
                    signature: m.signature.clone(),
                })
                .collect();
        }
        if step == steps::PRODUCTS {
            // Every node checks its own sets' digests itself (the king may be lying).
            base.signed = msgs
                .iter()
                .map(|m| Signed {
                    openings: Vec::new(),
                    transcript: None,
                    key_digests: m.key_digests.clone(),
                    signature: m.signature.clone(),
                })
                .collect();
        }
        debug_assert!(step < STEPS);
        Ok(vec![base; n])
    }

    /// Opens the openings after the checked prefix (the king's reconstruction).
    fn open(&self, step: u8, msgs: &[NodeStep], skip: usize) -> Result<Vec<F>, ProtocolError> {
        let count = msgs[0].openings.len();
        (skip..count)
            .map(|i| self.open_one(step, msgs, i))
            .collect()
    }

    fn open_one(&self, step: u8, msgs: &[NodeStep], i: usize) -> Result<F, ProtocolError> {
        let col: Vec<F> = msgs.iter().map(|m| m.openings[i]).collect();
        self.opener.open(&col).map_err(|culprits| {
            abort(
                step,
                format!("opening {i}: the shares are not on one polynomial"),
                culprits.into_iter().map(|p| self.params.nodes[p]).collect(),
            )
        })
    }

    /// Every member of every PRSS set must report the same key digest; a mismatch
    /// aborts without a name (the set's owner or the member may be lying).
    fn confirm_keys(&self, msgs: &[NodeStep]) -> Result<(), ProtocolError> {
        let n = self.params.n();
        for mask in super::prss::sets(n, self.params.d()) {
            let mut digest: Option<[u8; 32]> = None;
            for (i, m) in msgs.iter().enumerate() {
                if mask & (1 << i) == 0 {
                    continue;
                }
                let d = m
                    .key_digests
                    .iter()
                    .find(|(s, _)| *s == mask)
                    .map(|(_, d)| *d);
                match (digest, d) {
                    (_, None) => {
                        return Err(abort(
                            steps::PRODUCTS,
                            format!("position {i} reports no key for set {mask:#x}"),
                            vec![self.params.nodes[i]],
                        ))
                    }
                    (None, Some(d)) => digest = Some(d),
                    (Some(x), Some(y)) if x != y => {
                        return Err(abort(
                            steps::PRODUCTS,
                            format!("the members of set {mask:#x} hold different set keys (its owner sent different keys, or a member misreports; not attributable)"),
                            Vec::new(),
                        ))
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

/// The even one of `±s` (canonical encoding's lowest bit 0; `ℓ` is odd, so exactly
/// one of the two is even). Every node accepts only this root, so the king cannot
/// give different nodes different signs (which would turn shares of `b` into shares
/// of `1 − b` at some nodes and let `c` reveal the mask).
pub fn canonical_root(s: F) -> F {
    if s.to_bytes()[0] & 1 == 1 {
        -s
    } else {
        s
    }
}

/// A square root of every value (`None` when one is zero or not a square). The
/// king's largest cost (one exponentiation per random bit), so large batches are
/// split over the machine's cores; the result does not depend on how.
pub fn roots(qs: &[F]) -> Option<Vec<F>> {
    let one = |q: &F| {
        if *q == F::ZERO {
            None
        } else {
            q.sqrt().map(canonical_root)
        }
    };
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
