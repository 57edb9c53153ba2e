//! Byzantine signers: wrappers around honest nodes' outgoing messages.
//!
//! A byzantine node runs the honest state machine; the simulator rewrites what
//! it sends with the protocol crate's fault constructors (validly signed but
//! malicious messages), withholds it, delays it, or replays an older message.
//! With [`Strategy::Coordinated`] the byzantine nodes collude: in each attempt
//! only one of them misbehaves, which forces the most retries.

use std::collections::{BTreeMap, BTreeSet};

use quorate_protocol::{
    byzantine as faults, ids::SessionId, wire::Round, Envelope, NodeIdentity, Payload,
};
use rand_core::CryptoRngCore;

use crate::engine::Micros;
pub use crate::spec::{Behaviour, ByzantineSpec, Placement, Strategy};

/// DKG parameters a byzantine rewrite needs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DkgContext {
    pub index: u16,
    pub threshold: u16,
    pub n: u16,
}

/// Everything about the recipient a rewrite may need.
pub(crate) struct Target<'a> {
    /// Recipient node index.
    pub node: usize,
    /// Recipient sealing key.
    pub seal_key: &'a [u8; 32],
}

/// The adversary: which nodes are byzantine and what they do.
pub(crate) struct Adversary {
    pub behaviour: Behaviour,
    strategy: Strategy,
    delay_us: Micros,
    byzantine: Vec<bool>,
    /// Per session, the byzantine nodes that misbehave in it.
    active: BTreeMap<SessionId, BTreeSet<usize>>,
    /// Last honest envelope per (node, round), replay material.
    replay: BTreeMap<(usize, Round), Envelope>,
    /// Per (node, session), the consistent fake round-1 message.
    fake_round1: BTreeMap<(usize, SessionId), Envelope>,
}

impl Adversary {
    pub(crate) fn new(spec: Option<&ByzantineSpec>, byzantine: Vec<bool>, timeout_ms: u64) -> Self {
        let behaviour = spec.map_or(Behaviour::InvalidShare, |s| s.behaviour);
        let delay_ms = spec
            .and_then(|s| s.delay_ms)
            .unwrap_or(timeout_ms as f64 * 0.35);
        Self {
            behaviour,
            strategy: spec.map_or(Strategy::All, |s| s.strategy),
            delay_us: crate::engine::ms_to_us(delay_ms),
            byzantine,
            active: BTreeMap::new(),
            replay: BTreeMap::new(),
            fake_round1: BTreeMap::new(),
        }
    }

    /// True when `node` is byzantine.
    pub(crate) fn is_byzantine(&self, node: usize) -> bool {
        self.byzantine.get(node).copied().unwrap_or(false)
    }

    /// Byzantine node count.
    pub(crate) fn count(&self) -> usize {
        self.byzantine.iter().filter(|b| **b).count()
    }

    /// Decides who misbehaves in a new session among `participants`.
    pub(crate) fn on_session(&mut self, session: SessionId, participants: &[usize]) {
        let mut bad = participants
            .iter()
            .copied()
            .filter(|n| self.is_byzantine(*n));
        let active: BTreeSet<usize> = match self.strategy {
            Strategy::All => bad.collect(),
            Strategy::Coordinated => bad.next().into_iter().collect(),
        };
        if !active.is_empty() {
            self.active.insert(session, active);
        }
    }

    /// Forgets a finished session.
    pub(crate) fn end_session(&mut self, session: &SessionId) {
        self.active.remove(session);
    }

    /// True when `node` misbehaves in `session`.
    pub(crate) fn active(&self, node: usize, session: &SessionId) -> bool {
        self.active.get(session).is_some_and(|s| s.contains(&node))
    }

    /// Rewrites one outgoing message of an active byzantine node: what is sent,
    /// each with an extra delay.
    pub(crate) fn tamper(
        &mut self,
        node: usize,
        identity: &NodeIdentity,
        env: Envelope,
        target: &Target<'_>,
        dkg: Option<DkgContext>,
        rng: &mut impl CryptoRngCore,
    ) -> Vec<(Envelope, Micros)> {
        let round = env.round;
        let result = match (self.behaviour, &env.payload) {
            (Behaviour::InvalidShare, Payload::SignShare { .. }) => {
                faults::corrupt_signature_share(identity, &env, rng).ok()
            }
            // Under ROAST the commitment for the next session travels with the share.
            (Behaviour::WithholdCommit, Payload::SignCommit { .. })
            | (Behaviour::WithholdCommit, Payload::PresignOffer { .. })
            | (Behaviour::WithholdShare, Payload::SignShare { .. }) => None,
            (Behaviour::Delay, _) => return vec![(env, self.delay_us)],
            (Behaviour::Replay, _) => {
                let old = self.replay.insert((node, round), env.clone());
                match old {
                    Some(o) if o.session != env.session => Some(o),
                    _ => None,
                }
            }
            (Behaviour::DkgEquivocate, Payload::DkgRound1 { .. }) => {
                if target.node & 1 == 0 {
                    Some(env)
                } else {
                    self.fake_round1(node, identity, &env, dkg, rng, false)
                }
            }
            (Behaviour::DkgBadProof, Payload::DkgRound1 { .. }) => {
                self.fake_round1(node, identity, &env, dkg, rng, true)
            }
            (Behaviour::DkgBadShare, Payload::DkgRound2 { .. }) => {
                faults::corrupt_round2_share(identity, &env, target.seal_key, rng).ok()
            }
            (Behaviour::DkgWithhold, _) => None,
            _ => Some(env),
        };
        result.into_iter().map(|e| (e, 0)).collect()
    }

    fn fake_round1(
        &mut self,
        node: usize,
        identity: &NodeIdentity,
        env: &Envelope,
        dkg: Option<DkgContext>,
        rng: &mut impl CryptoRngCore,
        bad_proof: bool,
    ) -> Option<Envelope> {
        let key = (node, env.session);
        if let Some(e) = self.fake_round1.get(&key) {
            return Some(e.clone());
        }
        let ctx = dkg?;
        let fake = if bad_proof {
            faults::bad_proof_of_knowledge(identity, env, ctx.index, ctx.threshold, ctx.n, rng)
        } else {
            faults::equivocate_round1(identity, env, ctx.index, ctx.threshold, ctx.n, rng)
        }
        .ok()?;
        self.fake_round1.insert(key, fake.clone());
        Some(fake)
    }
}
