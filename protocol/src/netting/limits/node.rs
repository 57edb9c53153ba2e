//! One node's side of a limit-check run: a state machine fed with the king's
//! answers, returning the node's next message. No I/O, no clock, no OS randomness
//! (keys come from the node identity and the run's session).
//!
//! Step by step (counts for `N` inputs, `V` of them in verdict groups, `G` verdict
//! groups, `S` inputs in sum groups, `H` sum groups, `m = 64`):
//!
//! | step | node sends | king answers |
//! | --- | --- | --- |
//! | 0 | set-key boxes | the boxes addressed to the node |
//! | 1 | products `ρ·x` (N), `ρ·u` (Nm), `u·u` (Nm), `ρ·r''` (N), `ρ·R` (V) | `e` per product |
//! | 2 | products `(ρu)·u` (Nm); openings `u²` (Nm) | `e`; opened `q`; roots |
//! | 3 | openings `c = a + r` (N) | opened `c` |
//! | 4–9 | tree level products (`N·level_products(w)`, `w = 64 … 2`) | `e` |
//! | 10 | products `y_g, ρy_g` (2G), `x·s, ρx·s` (2S) | `e` |
//! | 11 | openings coin `χ`, `ρ` | all shares |
//! | 12 | openings `T`, `σ`; transcript digest | all shares and digests |
//! | 13 | openings `y_g` (G), `Σ|x|` (H) | all shares |

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};

use super::{
    compare::{self, Wire},
    field::F,
    open::Opener,
    prss::Prss,
    setup,
    step::{KingStep, NodeStep},
    Job, Params, Verdicts, BITS, MASK_BITS, STEPS,
};
use crate::{error::ProtocolError, identity::NodeIdentity, NodeId};

const TAG_RHO: u64 = 1;
const TAG_U: u64 = 2;
const TAG_HIGH: u64 = 3;
const TAG_VERDICT: u64 = 4;
const TAG_COIN: u64 = 5;
const TAG_MASK: u64 = 0x100;
const TAG_REDUCE: u64 = 0x200;

/// What a finished run gives a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The opened verdicts and sums (same at every honest node).
    pub verdicts: Verdicts,
    /// This node's shares of every input's bit `s_k` (to be revealed to the
    /// input's owner only).
    pub bits: Vec<F>,
}

/// One node's run.
pub struct NodeMpc {
    params: Params,
    job: Job,
    me: usize,
    opener: Opener,
    step: u8,
    pending: Option<setup::Pending>,
    prss: Option<Prss>,
    /// R shares of the products in flight.
    reduce: Vec<F>,
    /// (value, MAC) shares of every product output, for the final check.
    macs: Vec<(F, F)>,
    /// (share, announced value) of every value opened in steps 2–3.
    opened: Vec<(F, F)>,
    transcript: Sha256,
    rho: F,
    x: Vec<Wire>,
    u: Vec<Wire>,
    uu: Vec<F>,
    high: Vec<Wire>,
    vr: Vec<Wire>,
    a: Vec<Wire>,
    r_low: Vec<Wire>,
    c_low: Vec<u64>,
    lt: Vec<Wire>,
    eq: Vec<Wire>,
    width: usize,
    s: Vec<Wire>,
    check: Option<F>,
    my_last: Vec<F>,
    verdicts: Vec<F>,
    sums: Vec<F>,
}

impl core::fmt::Debug for NodeMpc {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "NodeMpc(position {}, step {}, <secret>)",
            self.me, self.step
        )
    }
}

fn abort(step: u8, reason: impl Into<String>, culprits: Vec<NodeId>) -> ProtocolError {
    ProtocolError::LimitCheckAborted {
        step,
        reason: reason.into(),
        culprits,
    }
}

impl NodeMpc {
    /// Starts a run at committee position `me` with this node's shares `inputs`
    /// (one per job input) and returns the step-0 message.
    ///
    /// # Security
    /// Holds the node's shares of secret inputs and derives its PRSS keys from its
    /// identity; nothing secret leaves except as the protocol's masked values.
    pub fn start(
        params: Params,
        job: Job,
        me: usize,
        identity: &NodeIdentity,
        inputs: Vec<F>,
    ) -> Result<(Self, NodeStep), ProtocolError> {
        super::check_committee(params.n(), usize::from(params.threshold))?;
        job.validate()?;
        if inputs.len() != job.inputs || me >= params.n() {
            return Err(ProtocolError::InvalidParameters(
                "limit check inputs do not match the job".into(),
            ));
        }
        if params.nodes[me] != identity.node_id() {
            return Err(ProtocolError::InvalidParameters(
                "this node is not at that committee position".into(),
            ));
        }
        let (pending, boxes) = setup::start(&params, me, identity)?;
        let opener = Opener::new(&params.xs(), params.d());
        let node = Self {
            opener,
            me,
            step: 0,
            pending: Some(pending),
            prss: None,
            reduce: Vec::new(),
            macs: Vec::new(),
            opened: Vec::new(),
            transcript: Sha256::new(),
            rho: F::ZERO,
            x: inputs
                .into_iter()
                .map(|v| Wire { v, mac: F::ZERO })
                .collect(),
            u: Vec::new(),
            uu: Vec::new(),
            high: Vec::new(),
            vr: Vec::new(),
            a: Vec::new(),
            r_low: Vec::new(),
            c_low: Vec::new(),
            lt: Vec::new(),
            eq: Vec::new(),
            width: BITS,
            s: Vec::new(),
            check: None,
            my_last: Vec::new(),
            verdicts: Vec::new(),
            sums: Vec::new(),
            params,
            job,
        };
        let msg = NodeStep {
            step: 0,
            from: me as u16,
            boxes,
            ..Default::default()
        };
        Ok((node, msg))
    }

    /// The step this node waits to have answered.
    pub fn step(&self) -> u8 {
        self.step
    }

    /// Feeds the king's answer to the current step; returns the next message, or
    /// the outcome after step 13.
    pub fn handle(&mut self, king: &KingStep) -> Result<Result<NodeStep, Outcome>, ProtocolError> {
        if king.step != self.step {
            return Err(abort(
                self.step,
                format!("the coordinator answered step {} instead", king.step),
                Vec::new(),
            ));
        }
        if self.step > 0 {
            self.transcript.update(king.broadcast_digest());
        }
        let step = self.step;
        let out = match step {
            0 => self.after_setup(king),
            1 => self.after_first(king),
            2 => self.after_squares(king),
            3 => self.after_mask(king),
            4..=9 => self.after_level(king),
            10 => self.after_outputs(king),
            11 => self.after_coin(king),
            12 => self.after_checks(king),
            13 => return self.finish(king).map(Err),
            _ => return Err(ProtocolError::InvalidState("limit check already finished")),
        }?;
        self.step += 1;
        debug_assert!(self.step < STEPS);
        Ok(Ok(out))
    }

    fn prss(&self) -> Result<&Prss, ProtocolError> {
        self.prss
            .as_ref()
            .ok_or(ProtocolError::InvalidState("no PRSS keys"))
    }

    fn msg(&mut self, products: Vec<F>, openings: Vec<F>) -> NodeStep {
        self.my_last = openings.clone();
        NodeStep {
            step: self.step + 1,
            from: self.me as u16,
            products,
            openings,
            ..Default::default()
        }
    }

    /// Masks local degree-2d products for the king: `w = z − R + m`.
    fn reduce(&mut self, z: Vec<F>) -> Result<Vec<F>, ProtocolError> {
        let step = u64::from(self.step + 1);
        let prss = self.prss()?;
        let r = prss.random(TAG_REDUCE + step, z.len());
        let m = prss.masks(TAG_MASK + step, z.len());
        let w = z
            .iter()
            .zip(&r)
            .zip(&m)
            .map(|((z, r), m)| *z - *r + *m)
            .collect();
        self.reduce = r;
        Ok(w)
    }

    /// `[xy] = e + [R]` for the products in flight.
    fn reduced(&mut self, king: &KingStep) -> Result<Vec<F>, ProtocolError> {
        if king.products.len() != self.reduce.len() {
            return Err(abort(
                self.step,
                format!(
                    "the coordinator returned {} products, {} were sent",
                    king.products.len(),
                    self.reduce.len()
                ),
                Vec::new(),
            ));
        }
        Ok(king
            .products
            .iter()
            .zip(&self.reduce)
            .map(|(e, r)| *e + *r)
            .collect())
    }

    fn after_setup(&mut self, king: &KingStep) -> Result<NodeStep, ProtocolError> {
        let pending = self
            .pending
            .take()
            .ok_or(ProtocolError::InvalidState("setup twice"))?;
        let prss = setup::finish(&self.params, self.me, pending, &king.boxes)?;
        let n = self.x.len();
        let nm = n * BITS;
        self.rho = prss.random(TAG_RHO, 1)[0];
        let u = prss.random(TAG_U, nm);
        let high = prss.bounded(TAG_HIGH, n, MASK_BITS);
        let nv = self.job.verdict_inputs().len();
        let vr = prss.random(TAG_VERDICT, nv);
        self.prss = Some(prss);
        let rho = self.rho;
        let mut z = Vec::with_capacity(2 * n + 2 * nm + nv);
        z.extend(self.x.iter().map(|w| rho * w.v));
        z.extend(u.iter().map(|v| rho * *v));
        z.extend(u.iter().map(|v| *v * *v));
        z.extend(high.iter().map(|v| rho * *v));
        z.extend(vr.iter().map(|v| rho * *v));
        self.u = u.into_iter().map(|v| Wire { v, mac: F::ZERO }).collect();
        self.high = high.into_iter().map(|v| Wire { v, mac: F::ZERO }).collect();
        self.vr = vr.into_iter().map(|v| Wire { v, mac: F::ZERO }).collect();
        let w = self.reduce(z)?;
        Ok(self.msg(w, Vec::new()))
    }

    fn after_first(&mut self, king: &KingStep) -> Result<NodeStep, ProtocolError> {
        let e = self.reduced(king)?;
        let n = self.x.len();
        let nm = n * BITS;
        let mut it = e.into_iter();
        for w in self.x.iter_mut().chain(self.u.iter_mut()) {
            w.mac = it.next().unwrap_or_default();
        }
        self.uu = it.by_ref().take(nm).collect();
        for w in self.high.iter_mut().chain(self.vr.iter_mut()) {
            w.mac = it.next().unwrap_or_default();
        }
        for w in self
            .x
            .iter()
            .chain(&self.u)
            .chain(&self.high)
            .chain(&self.vr)
        {
            self.macs.push((w.v, w.mac));
        }
        let z: Vec<F> = self.u.iter().map(|w| w.mac * w.v).collect();
        let w = self.reduce(z)?;
        let uu = self.uu.clone();
        Ok(self.msg(w, uu))
    }

    fn after_squares(&mut self, king: &KingStep) -> Result<NodeStep, ProtocolError> {
        let uu_mac = self.reduced(king)?;
        let nm = self.u.len();
        if king.openings.len() != nm || king.roots.len() != nm {
            return Err(abort(
                2,
                "the coordinator returned the wrong number of squares or roots",
                Vec::new(),
            ));
        }
        for (v, m) in self.uu.iter().zip(&uu_mac) {
            self.macs.push((*v, *m));
        }
        for (s, q) in self.uu.iter().zip(&king.openings) {
            self.opened.push((*s, *q));
        }
        if king
            .roots
            .iter()
            .zip(&king.openings)
            .any(|(r, q)| *r == F::ZERO || *r * *r != *q)
        {
            return Err(abort(
                2,
                "a root the coordinator returned does not square to the opened value",
                Vec::new(),
            ));
        }
        let inv =
            F::batch_invert(&king.roots).ok_or_else(|| abort(2, "a root is zero", Vec::new()))?;
        let half = F::from_u64(2).invert().unwrap_or_default();
        let rho = self.rho;
        let bits: Vec<Wire> = self
            .u
            .iter()
            .zip(&inv)
            .map(|(u, i)| compare::bit(*u, *i, half, rho))
            .collect();
        let pw = compare::powers();
        let n = self.x.len();
        self.r_low = Vec::with_capacity(n);
        self.a = Vec::with_capacity(n);
        let mut openings = Vec::with_capacity(n);
        for k in 0..n {
            let mut r = Wire::default();
            for j in 0..BITS {
                r = r.plus(bits[k * BITS + j].scale(pw[j]));
            }
            let a = self.x[k].add_const(pw[BITS], rho);
            let c = a.plus(r).plus(self.high[k].scale(pw[BITS]));
            self.r_low.push(r);
            self.a.push(a);
            openings.push(c.v);
        }
        self.u = bits;
        self.uu = Vec::new();
        self.reduce = Vec::new();
        Ok(self.msg(Vec::new(), openings))
    }

    fn after_mask(&mut self, king: &KingStep) -> Result<NodeStep, ProtocolError> {
        let n = self.x.len();
        if king.openings.len() != n {
            return Err(abort(
                3,
                "the coordinator returned the wrong number of masked inputs",
                Vec::new(),
            ));
        }
        // Our shares of c, recomputed, and the announced values.
        for k in 0..n {
            let c = self.a[k]
                .plus(self.r_low[k])
                .plus(self.high[k].scale(F::pow2(BITS as u32)));
            self.opened.push((c.v, king.openings[k]));
        }
        self.c_low = king.openings.iter().map(|c| c.low_u128() as u64).collect();
        let rho = self.rho;
        self.lt = Vec::with_capacity(n * BITS);
        self.eq = Vec::with_capacity(n * BITS);
        for k in 0..n {
            for p in 0..BITS {
                let j = BITS - 1 - p;
                let cb = (self.c_low[k] >> j) & 1 == 1;
                let (lt, eq) = compare::leaf(self.u[k * BITS + j], cb, rho);
                self.lt.push(lt);
                self.eq.push(eq);
            }
        }
        self.width = BITS;
        let z = self.level_products();
        let w = self.reduce(z)?;
        Ok(self.msg(w, Vec::new()))
    }

    fn level_products(&self) -> Vec<F> {
        let n = self.x.len();
        let w = self.width;
        let mut z = Vec::with_capacity(n * compare::level_products(w));
        for k in 0..n {
            for q in 0..w / 2 {
                let hi = self.eq[k * w + 2 * q];
                let lo_lt = self.lt[k * w + 2 * q + 1];
                z.push(hi.v * lo_lt.v);
                z.push(hi.mac * lo_lt.v);
                if w > 2 {
                    let lo_eq = self.eq[k * w + 2 * q + 1];
                    z.push(hi.v * lo_eq.v);
                    z.push(hi.mac * lo_eq.v);
                }
            }
        }
        z
    }

    fn after_level(&mut self, king: &KingStep) -> Result<NodeStep, ProtocolError> {
        let e = self.reduced(king)?;
        let n = self.x.len();
        let w = self.width;
        let per = compare::level_products(w);
        let half = w / 2;
        let mut lt = Vec::with_capacity(n * half);
        let mut eq = Vec::with_capacity(n * half);
        for k in 0..n {
            let base = &e[k * per..(k + 1) * per];
            for q in 0..half {
                let p = if w > 2 {
                    &base[q * 4..q * 4 + 4]
                } else {
                    &base[..2]
                };
                let prod_lt = Wire { v: p[0], mac: p[1] };
                self.macs.push((p[0], p[1]));
                lt.push(self.lt[k * w + 2 * q].plus(prod_lt));
                if w > 2 {
                    self.macs.push((p[2], p[3]));
                    eq.push(Wire { v: p[2], mac: p[3] });
                }
            }
        }
        self.lt = lt;
        self.eq = eq;
        self.width = half;
        if half > 1 {
            let z = self.level_products();
            let w = self.reduce(z)?;
            return Ok(self.msg(w, Vec::new()));
        }
        // Tree done: the comparison bits, then the output products.
        let inv_2m = F::pow2(BITS as u32).invert().unwrap_or_default();
        let rho = self.rho;
        self.s = (0..n)
            .map(|k| {
                compare::result(
                    self.a[k],
                    self.c_low[k],
                    self.r_low[k],
                    self.lt[k],
                    inv_2m,
                    rho,
                )
            })
            .collect();
        let mut z = Vec::new();
        let verdict_inputs = self.job.verdict_inputs();
        for g in &self.job.verdicts {
            let (mut y, mut ym) = (F::ZERO, F::ZERO);
            for &k in g {
                let k = k as usize;
                let pos = verdict_inputs.binary_search(&k).unwrap_or(0);
                let r = self.vr[pos];
                let miss = F::ONE - self.s[k].v;
                y += r.v * miss;
                ym += r.mac * miss;
            }
            z.push(y);
            z.push(ym);
        }
        for k in self.job.sum_inputs() {
            z.push(self.x[k].v * self.s[k].v);
            z.push(self.x[k].mac * self.s[k].v);
        }
        let w = self.reduce(z)?;
        Ok(self.msg(w, Vec::new()))
    }

    fn after_outputs(&mut self, king: &KingStep) -> Result<NodeStep, ProtocolError> {
        let e = self.reduced(king)?;
        for p in e.chunks(2) {
            if let [v, m] = p {
                self.macs.push((*v, *m));
            }
        }
        let g = self.job.verdicts.len();
        self.verdicts = e[..2 * g].chunks(2).map(|p| p[0]).collect();
        let sum_inputs = self.job.sum_inputs();
        let mut abs = vec![Wire::default(); self.x.len()];
        for (i, &k) in sum_inputs.iter().enumerate() {
            let xs = Wire {
                v: e[2 * g + 2 * i],
                mac: e[2 * g + 2 * i + 1],
            };
            abs[k] = xs.scale(F::from_u64(2)).minus(self.x[k]);
        }
        self.sums = self
            .job
            .sums
            .iter()
            .map(|h| h.iter().fold(F::ZERO, |acc, &k| acc + abs[k as usize].v))
            .collect();
        let coin = self.prss()?.random(TAG_COIN, 1)[0];
        Ok(self.msg(Vec::new(), vec![coin, self.rho]))
    }

    fn open_all(&self, step: u8, king: &KingStep, count: usize) -> Result<Vec<F>, ProtocolError> {
        let n = self.params.n();
        if king.shares.len() != n || king.shares.iter().any(|s| s.len() != count) {
            return Err(abort(
                step,
                "the coordinator relayed a malformed set of shares",
                Vec::new(),
            ));
        }
        (0..count)
            .map(|i| {
                let col: Vec<F> = king.shares.iter().map(|s| s[i]).collect();
                if col[self.me] != self.my_last[i] {
                    return Err(abort(step, "the coordinator relayed a share of this node that it did not send", Vec::new()));
                }
                self.opener.open(&col).map_err(|c| {
                    abort(
                        step,
                        "an opened value's shares are not on one polynomial (as relayed by the coordinator)",
                        c.into_iter().map(|p| self.params.nodes[p]).collect(),
                    )
                })
            })
            .collect()
    }

    fn after_coin(&mut self, king: &KingStep) -> Result<NodeStep, ProtocolError> {
        let v = self.open_all(11, king, 2)?;
        let (coin, rho) = (v[0], v[1]);
        let mut seed = Sha256::new();
        seed.update(b"quorate/netting/limits/check/v1\0");
        seed.update(self.params.session);
        seed.update(coin.to_bytes());
        let mut rng = ChaCha8Rng::from_seed(seed.finalize().into());
        let mut w = [0u8; 32];
        let (mut mac_sum, mut val_sum) = (F::ZERO, F::ZERO);
        for (v, m) in &self.macs {
            rng.fill_bytes(&mut w);
            let alpha = F::from_random_bytes(w);
            mac_sum += alpha * *m;
            val_sum += alpha * *v;
        }
        let t = mac_sum - rho * val_sum;
        let (mut sigma, mut expected) = (F::ZERO, F::ZERO);
        for (share, value) in &self.opened {
            rng.fill_bytes(&mut w);
            let beta = F::from_random_bytes(w);
            sigma += beta * *share;
            expected += beta * *value;
        }
        self.check = Some(expected);
        self.macs = Vec::new();
        self.opened = Vec::new();
        let digest: [u8; 32] = self.transcript.clone().finalize().into();
        let mut msg = self.msg(Vec::new(), vec![t, sigma]);
        msg.transcript = Some(digest);
        Ok(msg)
    }

    fn after_checks(&mut self, king: &KingStep) -> Result<NodeStep, ProtocolError> {
        // The transcript covers the king's answers to steps 1–11, hashed before
        // this answer was added.
        let n = self.params.n();
        let v = self.open_all(12, king, 2)?;
        if king.transcripts.len() != n {
            return Err(abort(
                12,
                "the coordinator relayed a malformed set of transcript digests",
                Vec::new(),
            ));
        }
        let mine = king.transcripts[self.me];
        let differ: Vec<NodeId> = (0..n)
            .filter(|&i| king.transcripts[i] != mine)
            .map(|i| self.params.nodes[i])
            .collect();
        if !differ.is_empty() {
            return Err(abort(
                12,
                format!("the coordinator broadcast different values to different nodes (nodes {differ:?} saw another transcript)"),
                Vec::new(),
            ));
        }
        if v[0] != F::ZERO {
            return Err(abort(
                12,
                "the multiplication check failed: a product was tampered with (by a node or the coordinator; not attributable)",
                Vec::new(),
            ));
        }
        if Some(v[1]) != self.check {
            return Err(abort(
                12,
                "the opening check failed: the coordinator announced an opened value that the nodes' shares do not give",
                Vec::new(),
            ));
        }
        let mut openings = self.verdicts.clone();
        openings.extend_from_slice(&self.sums);
        Ok(self.msg(Vec::new(), openings))
    }

    fn finish(&mut self, king: &KingStep) -> Result<Outcome, ProtocolError> {
        let g = self.job.verdicts.len();
        let h = self.job.sums.len();
        let v = self.open_all(13, king, g + h)?;
        self.step = STEPS;
        Ok(Outcome {
            verdicts: Verdicts {
                passed: v[..g].iter().map(|y| *y == F::ZERO).collect(),
                sums: v[g..]
                    .iter()
                    .map(|s| s.fits_u128().then(|| s.low_u128()))
                    .collect(),
            },
            bits: self.s.iter().map(|w| w.v).collect(),
        })
    }
}
