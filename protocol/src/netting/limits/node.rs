//! One node's side of a limit-check run: a state machine fed with the king's
//! answers, returning the node's next message. No I/O and no clock; the caller
//! passes the cryptographic generator the set keys are drawn from.
//!
//! Step by step (counts for `N` inputs, `V` of them in verdict groups, `G` verdict
//! groups, `S` inputs in sum groups, `H` sum groups, `m = 64`). "Signed" openings
//! are relayed by the king to every node with the sender's signature and opened
//! by each node itself; the others are reconstructed by the king and re-checked
//! at step 16.
//!
//! | step | node sends | king answers |
//! | --- | --- | --- |
//! | 0 | set-key boxes | the boxes addressed to the node |
//! | 1 | products `ρ·x` (N), `ρ·u` (Nm), `ρ'·u` (Nm), `u·u` (Nm), `ρ·r''` (N), `ρ·R` (V); key digests | `e` per product |
//! | 2 | products `(ρ'u)·u` (Nm) | `e` |
//! | 3 | signed openings: bit coin `χ'`, `ρ'` | signed shares |
//! | 4 | signed `T' = Σ α'(ρ'z − ρ'·z)`; openings `u²` (Nm) | signed shares; opened `q`; roots |
//! | 5 | signed square coin `χ_q` | signed shares |
//! | 6 | signed `σ_q = Σ β_q·[u²]` | signed shares |
//! | 7 | openings `c = a + r` (N) | opened `c` |
//! | 8–13 | tree level products (`N·level_products(w)`, `w = 64 … 2`) | `e` |
//! | 14 | products `y_g, ρy_g` (2G), `x·s, ρx·s` (2S) | `e` |
//! | 15 | signed coin `χ`, `ρ` | signed shares |
//! | 16 | signed `T`, `σ` and transcript digest | signed shares |
//! | 17 | signed `y_g` (G), `Σ|x|` (H) | signed shares |
//!
//! The random bits' products are MAC-checked under their own key `ρ'` (steps 3–4)
//! and the announced squares against the shares (steps 5–6) before any bit is
//! used, so nothing derived from a tampered bit is ever opened.

use rand_chacha::ChaCha8Rng;
use rand_core::{CryptoRngCore, RngCore, SeedableRng};
use sha2::{Digest, Sha256};

use super::{
    compare::{self, Wire},
    field::F,
    king::checked,
    open::Opener,
    prss::Prss,
    setup,
    step::{signed_digest, KingStep, NodeStep},
    Job, Params, Verdicts, BITS, MASK_BITS, STEPS,
};
use crate::{error::ProtocolError, identity::NodeIdentity, NodeId};

const TAG_RHO: u64 = 1;
const TAG_U: u64 = 2;
const TAG_HIGH: u64 = 3;
const TAG_VERDICT: u64 = 4;
const TAG_COIN: u64 = 5;
const TAG_RHO_BITS: u64 = 6;
const TAG_COIN_BITS: u64 = 7;
const TAG_COIN_SQUARES: u64 = 8;
const TAG_MASK: u64 = 0x100;
const TAG_REDUCE: u64 = 0x200;

/// Step numbers.
pub mod steps {
    /// Key setup.
    pub const SETUP: u8 = 0;
    /// Input and bit products.
    pub const PRODUCTS: u8 = 1;
    /// The bits' MAC products.
    pub const BIT_MACS: u8 = 2;
    /// Bit check: coin and `ρ'`.
    pub const BIT_COIN: u8 = 3;
    /// Bit check `T'`; squares opened.
    pub const BIT_CHECK: u8 = 4;
    /// Square check coin.
    pub const SQUARE_COIN: u8 = 5;
    /// Square check `σ_q`.
    pub const SQUARE_CHECK: u8 = 6;
    /// Masked inputs opened.
    pub const MASK: u8 = 7;
    /// First tree level.
    pub const TREE: u8 = 8;
    /// Verdict and sum products.
    pub const OUTPUTS: u8 = 14;
    /// Final coin and `ρ`.
    pub const COIN: u8 = 15;
    /// Final checks.
    pub const CHECK: u8 = 16;
    /// Outputs opened.
    pub const FINAL: u8 = 17;
}

/// What a finished run gives a node.
#[derive(Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The opened verdicts and sums (same at every honest node).
    pub verdicts: Verdicts,
    /// This node's shares of every input's bit `s_k` (to be revealed to the
    /// input's owner only).
    pub bits: Vec<F>,
}

impl core::fmt::Debug for Outcome {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "Outcome({:?}, {} bit shares, <secret>)",
            self.verdicts,
            self.bits.len()
        )
    }
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
    key_digests: Vec<(u64, [u8; 32])>,
    /// R shares of the products in flight.
    reduce: Vec<F>,
    /// (value, MAC) shares of every product output under `ρ`, for the final check.
    macs: Vec<(F, F)>,
    /// (value, MAC) shares of the bits' products under `ρ'`.
    bit_macs: Vec<(F, F)>,
    /// (share, announced value) of every masked input opened in step 7.
    opened: Vec<(F, F)>,
    transcript: Sha256,
    rho: F,
    rho_bits: F,
    x: Vec<Wire>,
    u: Vec<Wire>,
    u_bits_mac: Vec<F>,
    uu: Vec<F>,
    squares: Vec<F>,
    roots: Vec<F>,
    square_check: Option<F>,
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
    my_transcript: Option<[u8; 32]>,
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

impl Drop for NodeMpc {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        // Shares of secrets: overwritten before the memory is freed.
        for v in [
            &mut self.uu,
            &mut self.u_bits_mac,
            &mut self.reduce,
            &mut self.verdicts,
            &mut self.sums,
        ] {
            v.zeroize();
        }
        for v in [
            &mut self.x,
            &mut self.u,
            &mut self.high,
            &mut self.vr,
            &mut self.a,
            &mut self.r_low,
            &mut self.lt,
            &mut self.eq,
            &mut self.s,
        ] {
            v.zeroize();
        }
        for (v, m) in self
            .macs
            .iter_mut()
            .chain(self.bit_macs.iter_mut())
            .chain(self.opened.iter_mut())
        {
            v.zeroize();
            m.zeroize();
        }
        self.rho.zeroize();
        self.rho_bits.zeroize();
    }
}

impl Drop for Outcome {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.bits);
    }
}

fn abort(step: u8, reason: impl Into<String>, culprits: Vec<NodeId>) -> ProtocolError {
    ProtocolError::LimitCheckAborted {
        step,
        reason: reason.into(),
        culprits,
    }
}

fn coin_rng(label: &[u8], session: &[u8; 32], coin: F) -> ChaCha8Rng {
    let mut seed = Sha256::new();
    seed.update(label);
    seed.update(session);
    seed.update(coin.to_bytes());
    ChaCha8Rng::from_seed(seed.finalize().into())
}

fn word(rng: &mut ChaCha8Rng) -> F {
    let mut w = [0u8; 32];
    rng.fill_bytes(&mut w);
    F::from_random_bytes(w)
}

impl NodeMpc {
    /// Starts a run at committee position `me` with this node's shares `inputs`
    /// (one per job input) and returns the step-0 message.
    ///
    /// # Security
    /// Holds the node's shares of secret inputs; draws its PRSS set keys from
    /// `rng`, which must be cryptographically secure and is never replayed (a
    /// re-run must not repeat a mask). Nothing secret leaves except as the
    /// protocol's masked values.
    pub fn start(
        params: Params,
        job: Job,
        me: usize,
        identity: &NodeIdentity,
        inputs: Vec<F>,
        rng: &mut impl CryptoRngCore,
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
        let (pending, boxes) = setup::start(&params, me, identity, rng)?;
        let opener = Opener::new(&params.xs(), params.d());
        let mut node = Self {
            opener,
            me,
            step: 0,
            pending: Some(pending),
            prss: None,
            key_digests: Vec::new(),
            reduce: Vec::new(),
            macs: Vec::new(),
            bit_macs: Vec::new(),
            opened: Vec::new(),
            transcript: Sha256::new(),
            rho: F::ZERO,
            rho_bits: F::ZERO,
            x: inputs
                .into_iter()
                .map(|v| Wire { v, mac: F::ZERO })
                .collect(),
            u: Vec::new(),
            u_bits_mac: Vec::new(),
            uu: Vec::new(),
            squares: Vec::new(),
            roots: Vec::new(),
            square_check: None,
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
            my_transcript: None,
            verdicts: Vec::new(),
            sums: Vec::new(),
            params,
            job,
        };
        let mut msg = NodeStep {
            step: 0,
            from: me as u16,
            boxes,
            ..Default::default()
        };
        node.sign(identity, &mut msg);
        Ok((node, msg))
    }

    /// The step this node waits to have answered.
    pub fn step(&self) -> u8 {
        self.step
    }

    /// Feeds the king's answer to the current step; returns the next message, or
    /// the outcome after step 17.
    pub fn handle(
        &mut self,
        identity: &NodeIdentity,
        king: &KingStep,
    ) -> Result<Result<NodeStep, Outcome>, ProtocolError> {
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
        use steps::*;
        let out = match self.step {
            SETUP => self.after_setup(king),
            PRODUCTS => self.after_products(king),
            BIT_MACS => self.after_bit_macs(king),
            BIT_COIN => self.after_bit_coin(king),
            BIT_CHECK => self.after_bit_check(king),
            SQUARE_COIN => self.after_square_coin(king),
            SQUARE_CHECK => self.after_square_check(king),
            MASK => self.after_mask(king),
            TREE..=13 => self.after_level(king),
            OUTPUTS => self.after_outputs(king),
            COIN => self.after_coin(king),
            CHECK => self.after_checks(king),
            FINAL => return self.finish(king).map(Err),
            _ => return Err(ProtocolError::InvalidState("limit check already finished")),
        };
        let (products, openings) = out?;
        let mut msg = NodeStep {
            step: self.step + 1,
            from: self.me as u16,
            products,
            openings,
            ..Default::default()
        };
        if msg.step == PRODUCTS {
            msg.key_digests = self.key_digests.clone();
        }
        if msg.step == CHECK {
            msg.transcript = Some(self.transcript.clone().finalize().into());
        }
        self.sign(identity, &mut msg);
        self.step += 1;
        debug_assert!(self.step < STEPS);
        Ok(Ok(msg))
    }

    /// Signs the checked prefix of `msg`'s openings and its transcript.
    fn sign(&mut self, identity: &NodeIdentity, msg: &mut NodeStep) {
        let k = checked(&self.job, msg.step).min(msg.openings.len());
        self.my_last = msg.openings[..k].to_vec();
        let digest = signed_digest(
            &self.params.session,
            msg.step,
            msg.from,
            &self.my_last,
            msg.transcript,
            &msg.key_digests,
        );
        if let Some(t) = msg.transcript {
            self.my_transcript = Some(t);
        }
        msg.signature = identity.sign(&digest).to_bytes().to_vec();
    }

    fn prss(&self) -> Result<&Prss, ProtocolError> {
        self.prss
            .as_ref()
            .ok_or(ProtocolError::InvalidState("no PRSS keys"))
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

    /// The product shares `e + R_i` for the products in flight.
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

    /// Opens the signed shares the king relayed: every signature must be the named
    /// node's over this run, step and values, this node's own entry must be what it
    /// sent, and the shares must lie on one polynomial.
    fn open_signed(&self, king: &KingStep) -> Result<Vec<F>, ProtocolError> {
        let step = self.step;
        let n = self.params.n();
        let count = self.my_last.len();
        if king.signed.len() != n || king.signed.iter().any(|s| s.openings.len() != count) {
            return Err(abort(
                step,
                "the coordinator relayed a malformed set of signed shares",
                Vec::new(),
            ));
        }
        for (i, s) in king.signed.iter().enumerate() {
            let digest = signed_digest(
                &self.params.session,
                step,
                i as u16,
                &s.openings,
                s.transcript,
                &s.key_digests,
            );
            let ok = ed25519_dalek::Signature::from_slice(&s.signature)
                .ok()
                .is_some_and(|sig| {
                    crate::identity::verify(&self.params.nodes[i], &digest, &sig).is_ok()
                });
            if !ok {
                return Err(abort(
                    step,
                    format!(
                        "the coordinator relayed shares of position {i} that node did not sign"
                    ),
                    Vec::new(),
                ));
            }
        }
        if king.signed[self.me].openings != self.my_last
            || (step == steps::PRODUCTS && king.signed[self.me].key_digests != self.key_digests)
        {
            return Err(abort(
                step,
                "the coordinator relayed a share of this node that it did not send",
                Vec::new(),
            ));
        }
        (0..count)
            .map(|k| {
                let col: Vec<F> = king.signed.iter().map(|s| s.openings[k]).collect();
                self.opener.open(&col).map_err(|c| {
                    abort(
                        step,
                        "a signed opening's shares are not on one polynomial",
                        c.into_iter().map(|p| self.params.nodes[p]).collect(),
                    )
                })
            })
            .collect()
    }

    fn after_setup(&mut self, king: &KingStep) -> Result<(Vec<F>, Vec<F>), ProtocolError> {
        let pending = self
            .pending
            .take()
            .ok_or(ProtocolError::InvalidState("setup twice"))?;
        let (prss, digests) = setup::finish(&self.params, self.me, pending, &king.boxes)?;
        let n = self.x.len();
        let nm = n * BITS;
        self.rho = prss.random(TAG_RHO, 1)[0];
        self.rho_bits = prss.random(TAG_RHO_BITS, 1)[0];
        let u = prss.random(TAG_U, nm);
        let high = prss.bounded(TAG_HIGH, n, MASK_BITS);
        let nv = self.job.verdict_inputs().len();
        let vr = prss.random(TAG_VERDICT, nv);
        self.prss = Some(prss);
        self.key_digests = digests;
        let (rho, rb) = (self.rho, self.rho_bits);
        let mut z = Vec::with_capacity(2 * n + 3 * nm + nv);
        z.extend(self.x.iter().map(|w| rho * w.v));
        z.extend(u.iter().map(|v| rho * *v));
        z.extend(u.iter().map(|v| rb * *v));
        z.extend(u.iter().map(|v| *v * *v));
        z.extend(high.iter().map(|v| rho * *v));
        z.extend(vr.iter().map(|v| rho * *v));
        self.u = u.into_iter().map(|v| Wire { v, mac: F::ZERO }).collect();
        self.high = high.into_iter().map(|v| Wire { v, mac: F::ZERO }).collect();
        self.vr = vr.into_iter().map(|v| Wire { v, mac: F::ZERO }).collect();
        Ok((self.reduce(z)?, Vec::new()))
    }

    fn after_products(&mut self, king: &KingStep) -> Result<(Vec<F>, Vec<F>), ProtocolError> {
        self.confirm_keys(king)?;
        let e = self.reduced(king)?;
        let nm = self.u.len();
        let mut it = e.into_iter();
        for w in self.x.iter_mut().chain(self.u.iter_mut()) {
            w.mac = it.next().unwrap_or_default();
        }
        self.u_bits_mac = it.by_ref().take(nm).collect();
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
        for (u, m) in self.u.iter().zip(&self.u_bits_mac) {
            self.bit_macs.push((u.v, *m));
        }
        let z: Vec<F> = self
            .u
            .iter()
            .zip(&self.u_bits_mac)
            .map(|(u, m)| *m * u.v)
            .collect();
        Ok((self.reduce(z)?, Vec::new()))
    }

    /// Every member of every set containing this node must have signed the same
    /// set-key digest as this node (a set owner that sent members different keys
    /// is caught here, before anything depends on the keys; nobody is named).
    fn confirm_keys(&self, king: &KingStep) -> Result<(), ProtocolError> {
        self.open_signed(king)?;
        for (set, mine) in &self.key_digests {
            for i in (0..self.params.n()).filter(|i| set & (1 << i) != 0) {
                let theirs = king.signed[i]
                    .key_digests
                    .iter()
                    .find(|(s, _)| s == set)
                    .map(|(_, d)| d);
                if theirs != Some(mine) {
                    return Err(abort(
                        steps::PRODUCTS,
                        format!("position {i} holds another key for set {set:#x} than this node (its owner sent different keys, or a member misreports; not attributable)"),
                        Vec::new(),
                    ));
                }
            }
        }
        Ok(())
    }

    fn after_bit_macs(&mut self, king: &KingStep) -> Result<(Vec<F>, Vec<F>), ProtocolError> {
        let macs = self.reduced(king)?;
        for (v, m) in self.uu.iter().zip(&macs) {
            self.bit_macs.push((*v, *m));
        }
        self.reduce = Vec::new();
        let coin = self.prss()?.random(TAG_COIN_BITS, 1)[0];
        Ok((Vec::new(), vec![coin, self.rho_bits]))
    }

    fn after_bit_coin(&mut self, king: &KingStep) -> Result<(Vec<F>, Vec<F>), ProtocolError> {
        let v = self.open_signed(king)?;
        let (coin, rho_bits) = (v[0], v[1]);
        let mut rng = coin_rng(
            b"quorate/netting/limits/bit-check/v1\0",
            &self.params.session,
            coin,
        );
        let (mut mac_sum, mut val_sum) = (F::ZERO, F::ZERO);
        for (v, m) in &self.bit_macs {
            let alpha = word(&mut rng);
            mac_sum += alpha * *m;
            val_sum += alpha * *v;
        }
        self.bit_macs = Vec::new();
        let mut openings = Vec::with_capacity(1 + self.uu.len());
        openings.push(mac_sum - rho_bits * val_sum);
        openings.extend_from_slice(&self.uu);
        Ok((Vec::new(), openings))
    }

    fn after_bit_check(&mut self, king: &KingStep) -> Result<(Vec<F>, Vec<F>), ProtocolError> {
        let v = self.open_signed(king)?;
        if v[0] != F::ZERO {
            return Err(abort(
                4,
                "the random bits' multiplication check failed: a product was tampered with (by a node or the coordinator; not attributable)",
                Vec::new(),
            ));
        }
        let nm = self.u.len();
        if king.openings.len() != nm || king.roots.len() != nm {
            return Err(abort(
                4,
                "the coordinator returned the wrong number of squares or roots",
                Vec::new(),
            ));
        }
        if king
            .roots
            .iter()
            .zip(&king.openings)
            .any(|(r, q)| *r == F::ZERO || *r * *r != *q || super::king::canonical_root(*r) != *r)
        {
            return Err(abort(
                4,
                "a root the coordinator returned does not square to the opened value or is not the canonical (even) root",
                Vec::new(),
            ));
        }
        self.squares = king.openings.clone();
        self.roots = king.roots.clone();
        let coin = self.prss()?.random(TAG_COIN_SQUARES, 1)[0];
        Ok((Vec::new(), vec![coin]))
    }

    fn after_square_coin(&mut self, king: &KingStep) -> Result<(Vec<F>, Vec<F>), ProtocolError> {
        let coin = self.open_signed(king)?[0];
        let mut rng = coin_rng(
            b"quorate/netting/limits/square-check/v1\0",
            &self.params.session,
            coin,
        );
        let (mut sigma, mut expected) = (F::ZERO, F::ZERO);
        for (share, q) in self.uu.iter().zip(&self.squares) {
            let beta = word(&mut rng);
            sigma += beta * *share;
            expected += beta * *q;
        }
        self.square_check = Some(expected);
        Ok((Vec::new(), vec![sigma]))
    }

    fn after_square_check(&mut self, king: &KingStep) -> Result<(Vec<F>, Vec<F>), ProtocolError> {
        let sigma = self.open_signed(king)?[0];
        if Some(sigma) != self.square_check {
            return Err(abort(
                6,
                "the coordinator announced squares that the nodes' shares do not give",
                Vec::new(),
            ));
        }
        // The bits' products and the announced squares are verified: derive the bits.
        let inv =
            F::batch_invert(&self.roots).ok_or_else(|| abort(6, "a root is zero", Vec::new()))?;
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
        self.squares = Vec::new();
        self.roots = Vec::new();
        self.reduce = Vec::new();
        Ok((Vec::new(), openings))
    }

    fn after_mask(&mut self, king: &KingStep) -> Result<(Vec<F>, Vec<F>), ProtocolError> {
        let n = self.x.len();
        if king.openings.len() != n {
            return Err(abort(
                7,
                "the coordinator returned the wrong number of masked inputs",
                Vec::new(),
            ));
        }
        let p = F::pow2(BITS as u32);
        for k in 0..n {
            let c = self.a[k].plus(self.r_low[k]).plus(self.high[k].scale(p));
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
        Ok((self.reduce(z)?, Vec::new()))
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

    fn after_level(&mut self, king: &KingStep) -> Result<(Vec<F>, Vec<F>), ProtocolError> {
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
                self.macs.push((p[0], p[1]));
                lt.push(self.lt[k * w + 2 * q].plus(Wire { v: p[0], mac: p[1] }));
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
            return Ok((self.reduce(z)?, Vec::new()));
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
        Ok((self.reduce(z)?, Vec::new()))
    }

    fn after_outputs(&mut self, king: &KingStep) -> Result<(Vec<F>, Vec<F>), ProtocolError> {
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
        Ok((Vec::new(), vec![coin, self.rho]))
    }

    fn after_coin(&mut self, king: &KingStep) -> Result<(Vec<F>, Vec<F>), ProtocolError> {
        let v = self.open_signed(king)?;
        let (coin, rho) = (v[0], v[1]);
        let mut rng = coin_rng(
            b"quorate/netting/limits/check/v1\0",
            &self.params.session,
            coin,
        );
        let (mut mac_sum, mut val_sum) = (F::ZERO, F::ZERO);
        for (v, m) in &self.macs {
            let alpha = word(&mut rng);
            mac_sum += alpha * *m;
            val_sum += alpha * *v;
        }
        let t = mac_sum - rho * val_sum;
        let (mut sigma, mut expected) = (F::ZERO, F::ZERO);
        for (share, value) in &self.opened {
            let beta = word(&mut rng);
            sigma += beta * *share;
            expected += beta * *value;
        }
        self.check = Some(expected);
        self.macs = Vec::new();
        self.opened = Vec::new();
        Ok((Vec::new(), vec![t, sigma]))
    }

    fn after_checks(&mut self, king: &KingStep) -> Result<(Vec<F>, Vec<F>), ProtocolError> {
        // The transcript covers the king's answers to steps 1–15, hashed before
        // this answer was added; every node's digest is signed.
        let n = self.params.n();
        let v = self.open_signed(king)?;
        let mine = self.my_transcript;
        let differ: Vec<usize> = (0..n)
            .filter(|&i| king.signed[i].transcript != mine || mine.is_none())
            .collect();
        if !differ.is_empty() {
            return Err(abort(
                16,
                format!("the coordinator broadcast different values to different nodes (positions {differ:?} saw another transcript)"),
                Vec::new(),
            ));
        }
        if v[0] != F::ZERO {
            return Err(abort(
                16,
                "the multiplication check failed: a product was tampered with (by a node or the coordinator; not attributable)",
                Vec::new(),
            ));
        }
        if Some(v[1]) != self.check {
            return Err(abort(
                16,
                "the opening check failed: the coordinator announced a masked input that the nodes' shares do not give",
                Vec::new(),
            ));
        }
        let mut openings = self.verdicts.clone();
        openings.extend_from_slice(&self.sums);
        Ok((Vec::new(), openings))
    }

    fn finish(&mut self, king: &KingStep) -> Result<Outcome, ProtocolError> {
        let g = self.job.verdicts.len();
        let v = self.open_signed(king)?;
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
