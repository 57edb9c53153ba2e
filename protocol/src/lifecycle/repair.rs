//! Share repair: a member that lost its share (same identity, same FROST index)
//! gets it back from `t` helpers without any of them — or the coordinator —
//! learning it, with frost-core's repairable threshold scheme:
//!
//! 1. each helper `i` splits `ζᵢ·sᵢ` (its share weighted by its Lagrange
//!    coefficient at the target's index over the helper set) into random deltas
//!    `δᵢⱼ`, one per helper `j`, and sends each sealed to `j` (`RepairDelta`);
//! 2. each helper `j` sums what it received, `σⱼ = Σᵢ δᵢⱼ`, and sends it sealed to
//!    the target (`RepairSigma`);
//! 3. the target sums the sigmas into its share and checks it against its
//!    verifying share in the key's public key package. A mismatch means a helper
//!    lied; the scheme cannot say which, so the run fails naming every helper.
//!
//! The share is the same share (same generation); no other member's changes.

use std::{collections::BTreeMap, sync::Arc};

use frost_core::keys::repairable::{self, Delta, Sigma};
use rand_core::CryptoRngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::{
    committee::{Committee, Member},
    error::{Fault, ProtocolError},
    identity::NodeIdentity,
    ids::{KeyId, NodeId, SessionId},
    inbox::{Admit, Inbox},
    key::{GroupPublic, KeyShare},
    machine::{Input, Output, Status, TimerId, Timestamp},
    seal::{self, SealedBox},
    suite::{identifier, Ciphersuite, Suite},
    wire::{Envelope, Payload, Round},
};

/// Parameters of one repair; every participant must use the same values.
#[derive(Debug, Clone)]
pub struct RepairConfig {
    /// Ciphersuite of the key.
    pub suite: Ciphersuite,
    /// The key.
    pub key_id: KeyId,
    /// Session id of this run.
    pub session: SessionId,
    /// The key's public data (members, threshold, verifying shares).
    pub public: GroupPublic,
    /// Members that help (roster indices and sealing keys): at least the
    /// threshold, not the target.
    pub helpers: Committee,
    /// The member whose share is repaired.
    pub target: Member,
    /// Milliseconds from start until missing participants are named.
    pub timeout_ms: u64,
    /// The coordinator that started the run.
    pub coordinator: NodeId,
}

const PARAMS_DOMAIN: &[u8] = b"quorate/repair-params/v1\0";

impl RepairConfig {
    /// SHA-256 over `"quorate/repair-params/v1\0" ‖ postcard((suite, key_id, session,
    /// SHA-256(postcard(public)), helpers, target, coordinator))`.
    pub fn params_hash(&self) -> [u8; 32] {
        let public: [u8; 32] =
            Sha256::digest(postcard::to_allocvec(&self.public).unwrap_or_default()).into();
        let fields = (
            self.suite,
            self.key_id,
            self.session,
            public,
            &self.helpers,
            self.target,
            self.coordinator,
        );
        let mut h = Sha256::new();
        h.update(PARAMS_DOMAIN);
        h.update(postcard::to_allocvec(&fields).unwrap_or_default());
        h.finalize().into()
    }
}

/// What a repair participant reports.
#[derive(Debug, Clone)]
pub enum RepairEvent {
    /// A helper sent its sigma to the target.
    Helped,
    /// The target's repaired share (secret), checked against its verifying share.
    Repaired(KeyShare),
}

/// A repair participant (helper or target) for any suite.
pub struct Repair {
    inner: Inner,
}

crate::suite::suite_inner!(Session);

impl Repair {
    /// Creates this node's participant; a helper passes its share.
    ///
    /// # Security
    /// `share` is secret; it is copied into this machine and dropped once used.
    pub fn new(
        identity: Arc<NodeIdentity>,
        config: RepairConfig,
        share: Option<&KeyShare>,
    ) -> Result<Self, ProtocolError> {
        let inner = crate::suite::new_inner!(config.suite, Session::new(identity, config, share)?);
        Ok(Self { inner })
    }

    /// Feeds one input.
    ///
    /// # Security
    /// Handles a helper's share and the deltas and sigmas (secret shares of the
    /// target's share); they live only inside this machine.
    pub fn handle(
        &mut self,
        now: Timestamp,
        input: Input,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Vec<Output<RepairEvent>>, ProtocolError> {
        crate::suite::with_inner!(&mut self.inner, s => s.handle(now, input, rng))
    }

    /// Current status.
    pub fn status(&self) -> Status {
        crate::suite::with_inner!(&self.inner, s => s.status)
    }
}

const ROUNDS: [Round; 2] = [Round::RepairDelta, Round::RepairSigma];

struct Session<C: Suite> {
    identity: Arc<NodeIdentity>,
    me: NodeId,
    config: RepairConfig,
    inbox: Inbox,
    params: [u8; 32],
    status: Status,
    started: bool,
    share: Option<KeyShare>,
    own_delta: Option<Zeroizing<Vec<u8>>>,
    deltas: BTreeMap<NodeId, SealedBox>,
    sigmas: BTreeMap<NodeId, SealedBox>,
    helped: bool,
    _suite: core::marker::PhantomData<C>,
}

impl<C: Suite> Session<C> {
    fn new(
        identity: Arc<NodeIdentity>,
        config: RepairConfig,
        share: Option<&KeyShare>,
    ) -> Result<Self, ProtocolError> {
        let bad = ProtocolError::InvalidParameters;
        let me = identity.node_id();
        let p = &config.public;
        if p.suite != config.suite || p.key_id != config.key_id {
            return Err(bad("public data is of another key".into()));
        }
        if config.helpers.len() < usize::from(p.threshold) {
            return Err(bad(format!(
                "{} helpers; the threshold is {}",
                config.helpers.len(),
                p.threshold
            )));
        }
        let is_member = |m: &Member| p.members.get(&m.node) == Some(&m.index);
        if !config.helpers.members().iter().all(is_member) || !is_member(&config.target) {
            return Err(bad(
                "helpers and target must be members under their indices".into(),
            ));
        }
        if config.helpers.get(&config.target.node).is_some() {
            return Err(bad("the target cannot help itself".into()));
        }
        let share = if config.helpers.get(&me).is_some() {
            let s = share.ok_or_else(|| bad("a helper needs its share".into()))?;
            if s.public != *p {
                return Err(bad("our share is of another generation".into()));
            }
            Some(s.clone())
        } else if me == config.target.node {
            None
        } else {
            return Err(bad("this node takes no part in the repair".into()));
        };
        Ok(Self {
            inbox: Inbox::new(config.suite, config.key_id, config.session),
            params: config.params_hash(),
            identity,
            me,
            config,
            status: Status::Running,
            started: false,
            share,
            own_delta: None,
            deltas: BTreeMap::new(),
            sigmas: BTreeMap::new(),
            helped: false,
            _suite: core::marker::PhantomData,
        })
    }

    fn handle(
        &mut self,
        now: Timestamp,
        input: Input,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Vec<Output<RepairEvent>>, ProtocolError> {
        if self.status != Status::Running {
            return Ok(Vec::new());
        }
        let result = self.step(now, input, rng);
        if let Err(e) = &result {
            if e.is_fatal() {
                self.status = Status::Failed;
                self.share = None;
                self.own_delta = None;
                self.deltas.clear();
                self.sigmas.clear();
            }
        }
        result
    }

    fn step(
        &mut self,
        now: Timestamp,
        input: Input,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Vec<Output<RepairEvent>>, ProtocolError> {
        let mut out = Vec::new();
        match input {
            Input::Start => {
                if self.started {
                    return Err(ProtocolError::InvalidState("repair already started"));
                }
                self.started = true;
                out.push(Output::SetTimer {
                    timer: TimerId::Deadline,
                    at: now.plus_ms(self.config.timeout_ms),
                });
                if self.share.is_some() {
                    self.deal(rng, &mut out)?;
                }
            }
            Input::Message(env) => {
                let (recipient, params) = match &env.payload {
                    Payload::RepairDelta {
                        recipient, params, ..
                    }
                    | Payload::RepairSigma {
                        recipient, params, ..
                    } => (*recipient, *params),
                    _ => return Err(ProtocolError::UnexpectedRound { got: env.round }),
                };
                if recipient != self.me {
                    return Err(ProtocolError::WrongContext(
                        "repair message for another node",
                    ));
                }
                // Before admission: a message under other parameters must not make
                // the sender's right one look like equivocation.
                if params != self.params {
                    return Err(ProtocolError::WrongContext("repair parameters differ"));
                }
                let helpers = &self.config.helpers;
                let me = self.me;
                if self
                    .inbox
                    .admit(&env, &ROUNDS, |n| *n != me && helpers.get(n).is_some())?
                    == Admit::Duplicate
                {
                    return Ok(out);
                }
                match env.payload {
                    Payload::RepairDelta { sealed, .. } if self.share.is_some() || self.helped => {
                        self.deltas.insert(env.sender, sealed);
                    }
                    Payload::RepairSigma { sealed, .. } if self.me == self.config.target.node => {
                        self.sigmas.insert(env.sender, sealed);
                    }
                    _ => return Err(ProtocolError::UnexpectedRound { got: env.round }),
                }
            }
            Input::Timeout(TimerId::Deadline) => return Err(self.timeout_error()),
        }
        self.advance(rng, &mut out)?;
        Ok(out)
    }

    fn envelope(&self, payload: Payload) -> Envelope {
        Envelope::seal(
            &self.identity,
            self.config.suite,
            self.config.key_id,
            self.config.session,
            payload,
        )
    }

    fn aad(&self, what: &[u8], from: &NodeId, to: &NodeId) -> Vec<u8> {
        let mut aad = what.to_vec();
        aad.extend_from_slice(self.config.suite.name().as_bytes());
        aad.extend_from_slice(self.config.key_id.as_bytes());
        aad.extend_from_slice(self.config.session.as_bytes());
        aad.extend_from_slice(from.as_bytes());
        aad.extend_from_slice(to.as_bytes());
        aad
    }

    /// Part 1: our weighted share split into one delta per helper.
    fn deal(
        &mut self,
        rng: &mut impl CryptoRngCore,
        out: &mut Vec<Output<RepairEvent>>,
    ) -> Result<(), ProtocolError> {
        let share = self
            .share
            .take()
            .ok_or(ProtocolError::InvalidState("dealing without a share"))?;
        let package = share.key_package::<C>()?;
        let ids = self
            .config
            .helpers
            .members()
            .iter()
            .map(|m| identifier::<C>(m.index))
            .collect::<Result<Vec<_>, _>>()?;
        let target = identifier::<C>(self.config.target.index)?;
        let deltas = repairable::repair_share_part1(&ids, &package, &mut *rng, target)
            .map_err(|e| ProtocolError::Crypto(e.to_string()))?;
        for m in self.config.helpers.members() {
            let delta = deltas
                .get(&identifier::<C>(m.index)?)
                .ok_or(ProtocolError::InvalidState("no delta for a helper"))?;
            let bytes = Zeroizing::new(delta.serialize());
            if m.node == self.me {
                self.own_delta = Some(bytes);
                continue;
            }
            let aad = self.aad(b"quorate/repair-delta/v1", &self.me, &m.node);
            let sealed = seal::seal(rng, &m.seal_key, &aad, &bytes)?;
            out.push(Output::Send {
                to: m.node,
                msg: self.envelope(Payload::RepairDelta {
                    params: self.params,
                    recipient: m.node,
                    sealed,
                }),
            });
        }
        self.helped = true;
        Ok(())
    }

    fn advance(
        &mut self,
        rng: &mut impl CryptoRngCore,
        out: &mut Vec<Output<RepairEvent>>,
    ) -> Result<(), ProtocolError> {
        let others = self
            .config
            .helpers
            .nodes()
            .filter(|n| *n != self.me)
            .count();
        if self.own_delta.is_some() && self.deltas.len() == others {
            // Part 2: the sum of the deltas we hold goes to the target.
            let mut deltas = Vec::with_capacity(others + 1);
            if let Some(own) = self.own_delta.take() {
                deltas.push(
                    Delta::<C>::deserialize(&own)
                        .map_err(|_| ProtocolError::InvalidState("own delta"))?,
                );
            }
            for (from, sealed) in std::mem::take(&mut self.deltas) {
                let aad = self.aad(b"quorate/repair-delta/v1", &from, &self.me);
                let plain = seal::open(self.identity.sealing_secret(), &aad, &sealed)
                    .ok_or_else(|| ProtocolError::aborted(from, Fault::UndecryptablePayload))?;
                deltas.push(
                    Delta::<C>::deserialize(&plain)
                        .map_err(|_| ProtocolError::aborted(from, Fault::InvalidElement))?,
                );
            }
            let sigma = Zeroizing::new(repairable::repair_share_part2(&deltas).serialize());
            let target = self.config.target;
            let aad = self.aad(b"quorate/repair-sigma/v1", &self.me, &target.node);
            let sealed = seal::seal(rng, &target.seal_key, &aad, &sigma)?;
            out.push(Output::Send {
                to: target.node,
                msg: self.envelope(Payload::RepairSigma {
                    params: self.params,
                    recipient: target.node,
                    sealed,
                }),
            });
            self.status = Status::Done;
            out.push(Output::Done(RepairEvent::Helped));
        }
        if self.me == self.config.target.node && self.sigmas.len() == self.config.helpers.len() {
            self.finish(out)?;
        }
        Ok(())
    }

    /// Part 3: the target sums the sigmas and checks the result.
    fn finish(&mut self, out: &mut Vec<Output<RepairEvent>>) -> Result<(), ProtocolError> {
        let mut sigmas = Vec::with_capacity(self.sigmas.len());
        for (from, sealed) in std::mem::take(&mut self.sigmas) {
            let aad = self.aad(b"quorate/repair-sigma/v1", &from, &self.me);
            let plain = seal::open(self.identity.sealing_secret(), &aad, &sealed)
                .ok_or_else(|| ProtocolError::aborted(from, Fault::UndecryptablePayload))?;
            sigmas.push(
                Sigma::<C>::deserialize(&plain)
                    .map_err(|_| ProtocolError::aborted(from, Fault::InvalidElement))?,
            );
        }
        let public = self.config.public.package::<C>()?;
        let id = identifier::<C>(self.config.target.index)?;
        let package = repairable::repair_share_part3(&sigmas, id, &public)
            .map_err(|e| ProtocolError::Crypto(e.to_string()))?;
        if public.verifying_shares().get(&id) != Some(package.verifying_share()) {
            // A helper sent a wrong delta or sigma; the scheme cannot say which.
            return Err(ProtocolError::Aborted {
                culprits: self.config.helpers.nodes().collect(),
                fault: Fault::InvalidSecretShare,
            });
        }
        let share = KeyShare::from_frost(
            self.config.key_id,
            self.config.public.members.clone(),
            self.config.target.index,
            &package,
            &public,
        )?;
        self.status = Status::Done;
        out.push(Output::Done(RepairEvent::Repaired(share)));
        Ok(())
    }

    fn timeout_error(&self) -> ProtocolError {
        let missing: Vec<NodeId> = if self.me == self.config.target.node {
            self.config
                .helpers
                .nodes()
                .filter(|n| !self.sigmas.contains_key(n))
                .collect()
        } else {
            self.config
                .helpers
                .nodes()
                .filter(|n| *n != self.me && !self.deltas.contains_key(n))
                .collect()
        };
        if missing.is_empty() {
            return ProtocolError::InvalidState("deadline passed with nothing missing");
        }
        ProtocolError::Aborted {
            culprits: missing,
            fault: Fault::Timeout,
        }
    }
}
