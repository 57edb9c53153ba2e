//! Resharing (and refresh, its special case): a key's old members hand the same
//! group secret to a new committee with a new threshold, so the group public key —
//! and every address derived from it — stays the same.
//!
//! Each dealer `i` of a set `D` of at least the old threshold of old members
//! weights its old share by its Lagrange coefficient over `D`, `w_i = λ_i·s_i`
//! (so `Σ w_i` is the group secret), deals `w_i` with a fresh polynomial `f_i` of
//! degree `t′ − 1`, and
//!
//! 1. broadcasts the Feldman commitment `C_i = (a_{i,k}·G)_k`
//!    (`ReshareCommit`). Every new member checks `C_{i,0} = λ_i·Y_i` against the
//!    dealer's old verifying share `Y_i`: a dealer cannot deal anything but its
//!    share of this key (`Fault::UnboundReshare` names it);
//! 2. new members echo the commitments they received (`ReshareEcho`, the DKG's
//!    echo machinery: two signed, different commitments prove equivocation);
//! 3. sends `f_i(j)` sealed end-to-end to each new member `j` (`ReshareShare`);
//!    `j` checks it against `C_i` (`Fault::InvalidSecretShare` names the dealer),
//!    sums its new share `s′_j = Σ_i f_i(j)`, derives the new verifying shares
//!    from `Σ_i C_i`, and checks the group key is unchanged;
//! 4. new members broadcast the group key and a hash of the new public key package
//!    (`ReshareConfirm`, also to the coordinator). A participant that holds every
//!    new member's matching confirmation finishes.
//!
//! The new member emits [`ReshareEvent::NewShare`] *before* its confirmation in
//! the same output batch: the caller persists the share (as a pending generation)
//! before anything after it is sent. [`ReshareEvent::Finished`] carries the signed
//! confirmations, proof for any participant that missed them that the new
//! generation is complete everywhere.

use std::{collections::BTreeMap, sync::Arc};

use frost_core::{
    keys::{KeyPackage, PublicKeyPackage},
    Identifier,
};
use rand_core::CryptoRngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::math::{self, Element, Scalar};
use crate::{
    committee::Committee,
    echo,
    error::{Fault, ProtocolError},
    identity::NodeIdentity,
    ids::{KeyId, NodeId, SessionId},
    inbox::{Admit, Inbox, InboxStats},
    key::{GroupPublic, KeyShare},
    machine::{Input, Output, Status, TimerId, Timestamp},
    seal::{self, SealedBox},
    suite::{identifier, Ciphersuite, Suite},
    wire::{EchoEntry, Envelope, Payload, Round},
};

/// Parameters of one resharing run; every participant must use the same values.
#[derive(Debug, Clone)]
pub struct ReshareConfig {
    /// Ciphersuite of the key.
    pub suite: Ciphersuite,
    /// The key.
    pub key_id: KeyId,
    /// Session id of this run.
    pub session: SessionId,
    /// Public data of the generation being replaced.
    pub old: GroupPublic,
    /// Old members that deal: distinct, sorted, at least the old threshold.
    pub dealers: Vec<NodeId>,
    /// The new committee.
    pub committee: Committee,
    /// The new threshold.
    pub threshold: u16,
    /// Generation number of the new shares.
    pub generation: u64,
    /// Milliseconds from start until missing participants are named.
    /// Local: not part of [`ReshareConfig::params_hash`].
    pub timeout_ms: u64,
    /// The coordinator that started the run (receives confirmations).
    pub coordinator: NodeId,
}

const PARAMS_DOMAIN: &[u8] = b"quorate/reshare-params/v1\0";

impl ReshareConfig {
    /// SHA-256 over `"quorate/reshare-params/v1\0" ‖ postcard((suite, key_id,
    /// session, SHA-256(postcard(old)), dealers, committee, threshold, generation,
    /// coordinator))`, carried by every resharing payload.
    pub fn params_hash(&self) -> [u8; 32] {
        let old: [u8; 32] =
            Sha256::digest(postcard::to_allocvec(&self.old).unwrap_or_default()).into();
        let fields = (
            self.suite,
            self.key_id,
            self.session,
            old,
            &self.dealers,
            &self.committee,
            self.threshold,
            self.generation,
            self.coordinator,
        );
        let mut h = Sha256::new();
        h.update(PARAMS_DOMAIN);
        h.update(postcard::to_allocvec(&fields).unwrap_or_default());
        h.finalize().into()
    }

    /// Every participant: dealers and new members, each once, sorted.
    pub fn participants(&self) -> Vec<NodeId> {
        let mut all: Vec<NodeId> = self
            .dealers
            .iter()
            .copied()
            .chain(self.committee.nodes())
            .collect();
        all.sort();
        all.dedup();
        all
    }
}

/// What a resharing participant reports.
#[derive(Debug, Clone)]
pub enum ReshareEvent {
    /// This node's share of the new generation (secret). Persist it, as pending,
    /// before sending the outputs that follow it.
    NewShare(KeyShare),
    /// Every new member confirmed the same group key and public key package: the
    /// new generation is complete and old shares may be deleted.
    Finished {
        /// SHA-256 of the new serialized public key package.
        transcript: [u8; 32],
        /// Every new member's signed `ReshareConfirm`, in committee order.
        confirms: Vec<Envelope>,
    },
}

/// A resharing participant (dealer, new member, or both) for any suite.
pub struct Reshare {
    inner: Inner,
}

crate::suite::suite_inner!(Session);

impl Reshare {
    /// Creates this node's participant. A dealer passes its share of the old
    /// generation.
    ///
    /// # Security
    /// `old_share` is secret; it is copied into this machine, which drops it once
    /// dealt.
    pub fn new(
        identity: Arc<NodeIdentity>,
        config: ReshareConfig,
        old_share: Option<&KeyShare>,
    ) -> Result<Self, ProtocolError> {
        let inner =
            crate::suite::new_inner!(config.suite, Session::new(identity, config, old_share)?);
        Ok(Self { inner })
    }

    /// Feeds one input; fatal errors ([`ProtocolError::is_fatal`]) end the run and
    /// name culprits.
    ///
    /// # Security
    /// Handles the dealer's old share, its resharing polynomial and received
    /// sub-shares; they live only inside this machine.
    pub fn handle(
        &mut self,
        now: Timestamp,
        input: Input,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Vec<Output<ReshareEvent>>, ProtocolError> {
        crate::suite::with_inner!(&mut self.inner, s => s.handle(now, input, rng))
    }

    /// Current status.
    pub fn status(&self) -> Status {
        crate::suite::with_inner!(&self.inner, s => s.status)
    }

    /// Inbox counters.
    pub fn stats(&self) -> InboxStats {
        crate::suite::with_inner!(&self.inner, s => s.inbox.stats)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    /// New member: waiting for every dealer's commitment.
    Commits,
    /// New member: waiting for every other new member's echo.
    Echo,
    /// New member: waiting for every dealer's sub-share.
    Shares,
    /// Waiting for every new member's confirmation.
    Confirm,
    Finished,
}

const ROUNDS: [Round; 4] = [
    Round::ReshareCommit,
    Round::ReshareEcho,
    Round::ReshareShare,
    Round::ReshareConfirm,
];

struct Session<C: Suite> {
    identity: Arc<NodeIdentity>,
    me: NodeId,
    config: ReshareConfig,
    participants: Vec<NodeId>,
    inbox: Inbox,
    params: [u8; 32],
    phase: Phase,
    status: Status,
    /// The old generation's public key package.
    old: PublicKeyPackage<C>,
    /// Dealer: the old share, until dealt.
    old_share: Option<KeyShare>,
    commits: BTreeMap<NodeId, Vec<Element<C>>>,
    heard: BTreeMap<NodeId, echo::Heard>,
    echoes: BTreeMap<NodeId, Vec<EchoEntry>>,
    shares: BTreeMap<NodeId, SealedBox>,
    /// Dealer and new member: the sub-share dealt to ourselves.
    own_share: Option<Zeroizing<Vec<u8>>>,
    confirms: BTreeMap<NodeId, Envelope>,
    /// New member: (group key, transcript) derived.
    derived: Option<(Vec<u8>, [u8; 32])>,
}

impl<C: Suite> Session<C> {
    fn new(
        identity: Arc<NodeIdentity>,
        config: ReshareConfig,
        old_share: Option<&KeyShare>,
    ) -> Result<Self, ProtocolError> {
        let bad = |why: String| ProtocolError::InvalidParameters(why);
        let me = identity.node_id();
        let old_pub = &config.old;
        if old_pub.suite != config.suite || old_pub.key_id != config.key_id {
            return Err(bad("old public data is of another key".into()));
        }
        let old = old_pub.package::<C>()?;
        if old
            .verifying_key()
            .serialize()
            .map_err(|e| ProtocolError::Crypto(e.to_string()))?
            != old_pub.verifying_key
        {
            return Err(bad(
                "old public key package disagrees with its group key".into()
            ));
        }
        if config.dealers.windows(2).any(|w| w[0] >= w[1]) {
            return Err(bad("dealers are not sorted without repeats".into()));
        }
        if config.dealers.len() < usize::from(old_pub.threshold) {
            return Err(bad(format!(
                "{} dealers; the old threshold is {}",
                config.dealers.len(),
                old_pub.threshold
            )));
        }
        for d in &config.dealers {
            let index = old_pub
                .members
                .get(d)
                .ok_or_else(|| bad(format!("dealer {d} is not an old member")))?;
            if !old
                .verifying_shares()
                .contains_key(&identifier::<C>(*index)?)
            {
                return Err(bad(format!("no old verifying share for dealer {d}")));
            }
        }
        let n = config.committee.len();
        if config.threshold < 2 || usize::from(config.threshold) > n {
            return Err(bad(format!(
                "threshold {} must be between 2 and the committee size {n}",
                config.threshold
            )));
        }
        for m in config.committee.members() {
            identifier::<C>(m.index)?;
        }
        let participants = config.participants();
        if !participants.contains(&me) {
            return Err(bad("this node takes no part in the reshare".into()));
        }
        let old_share = if config.dealers.contains(&me) {
            let share = old_share.ok_or_else(|| bad("a dealer needs its old share".into()))?;
            if share.public != *old_pub {
                return Err(bad("our old share is of another generation".into()));
            }
            Some(share.clone())
        } else {
            None
        };
        Ok(Self {
            inbox: Inbox::new(config.suite, config.key_id, config.session),
            params: config.params_hash(),
            identity,
            me,
            participants,
            config,
            phase: Phase::Idle,
            status: Status::Running,
            old,
            old_share,
            commits: BTreeMap::new(),
            heard: BTreeMap::new(),
            echoes: BTreeMap::new(),
            shares: BTreeMap::new(),
            own_share: None,
            confirms: BTreeMap::new(),
            derived: None,
        })
    }

    fn is_dealer(&self, node: &NodeId) -> bool {
        self.config.dealers.contains(node)
    }

    fn is_member(&self, node: &NodeId) -> bool {
        self.config.committee.get(node).is_some()
    }

    fn handle(
        &mut self,
        now: Timestamp,
        input: Input,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Vec<Output<ReshareEvent>>, ProtocolError> {
        if self.status != Status::Running {
            return Ok(Vec::new());
        }
        let result = self.step(now, input, rng);
        if let Err(e) = &result {
            if e.is_fatal() {
                self.status = Status::Failed;
                self.phase = Phase::Finished;
                self.old_share = None;
                self.own_share = None;
                self.shares.clear();
            }
        }
        result
    }

    fn step(
        &mut self,
        now: Timestamp,
        input: Input,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Vec<Output<ReshareEvent>>, ProtocolError> {
        let mut out = Vec::new();
        match input {
            Input::Start => {
                if self.phase != Phase::Idle {
                    return Err(ProtocolError::InvalidState("reshare already started"));
                }
                out.push(Output::SetTimer {
                    timer: TimerId::Deadline,
                    at: now.plus_ms(self.config.timeout_ms),
                });
                if self.old_share.is_some() {
                    self.deal(rng, &mut out)?;
                }
                self.phase = if self.is_member(&self.me) {
                    Phase::Commits
                } else {
                    Phase::Confirm
                };
            }
            Input::Message(env) => {
                if let Payload::ReshareShare { recipient, .. } = &env.payload {
                    if *recipient != self.me {
                        return Err(ProtocolError::WrongContext(
                            "reshare share for another node",
                        ));
                    }
                }
                let me = self.me;
                let participants = &self.participants;
                let admit = self
                    .inbox
                    .admit(&env, &ROUNDS, |n| *n != me && participants.contains(n))?;
                if admit == Admit::Duplicate {
                    return Ok(out);
                }
                self.store(env)?;
            }
            Input::Timeout(TimerId::Deadline) => return Err(self.timeout_error()),
        }
        self.advance(&mut out)?;
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

    fn send_to(
        &self,
        to: impl Iterator<Item = NodeId>,
        env: &Envelope,
        out: &mut Vec<Output<ReshareEvent>>,
    ) {
        for node in to.filter(|n| *n != self.me) {
            out.push(Output::Send {
                to: node,
                msg: env.clone(),
            });
        }
    }

    fn old_index(&self, node: &NodeId) -> Result<u16, ProtocolError> {
        self.config
            .old
            .members
            .get(node)
            .copied()
            .ok_or(ProtocolError::InvalidState("dealer without an old index"))
    }

    fn dealer_indices(&self) -> Result<Vec<u16>, ProtocolError> {
        self.config
            .dealers
            .iter()
            .map(|d| self.old_index(d))
            .collect()
    }

    /// `λ_i·Y_i`: what dealer `node`'s commitment must open to at zero.
    fn expected_constant(&self, node: &NodeId) -> Result<Element<C>, ProtocolError> {
        let index = self.old_index(node)?;
        let lambda = math::lagrange_at_zero::<C>(index, &self.dealer_indices()?)?;
        let share = self
            .old
            .verifying_shares()
            .get(&identifier::<C>(index)?)
            .ok_or(ProtocolError::InvalidState(
                "dealer without a verifying share",
            ))?;
        Ok(math::verifying_element::<C>(share)? * lambda)
    }

    fn share_aad(&self, dealer: &NodeId, recipient: &NodeId) -> Vec<u8> {
        share_aad(&self.config, dealer, recipient)
    }

    /// Deals our weighted old share to the new committee.
    fn deal(
        &mut self,
        rng: &mut impl CryptoRngCore,
        out: &mut Vec<Output<ReshareEvent>>,
    ) -> Result<(), ProtocolError> {
        let old = self
            .old_share
            .take()
            .ok_or(ProtocolError::InvalidState("dealing without a share"))?;
        let package: KeyPackage<C> = old.key_package::<C>()?;
        let lambda =
            math::lagrange_at_zero::<C>(self.old_index(&self.me)?, &self.dealer_indices()?)?;
        let weighted = math::share_scalar::<C>(package.signing_share())? * lambda;
        let mut coeffs: Vec<Scalar<C>> = Vec::with_capacity(usize::from(self.config.threshold));
        coeffs.push(weighted);
        for _ in 1..self.config.threshold {
            coeffs.push(
                <<C::Group as frost_core::Group>::Field as frost_core::Field>::random(&mut *rng),
            );
        }
        let commitment: Vec<Element<C>> = coeffs.iter().map(math::base_mul::<C>).collect();
        let env = self.envelope(Payload::ReshareCommit {
            params: self.params,
            commitment: math::encode_commitment::<C>(&commitment)?,
        });
        self.send_to(self.participants.clone().into_iter(), &env, out);
        // The coordinator derives the new public key package from the
        // commitments (it records the generation before anyone switches).
        if !self.participants.contains(&self.config.coordinator) {
            out.push(Output::Send {
                to: self.config.coordinator,
                msg: env.clone(),
            });
        }
        self.heard.insert(
            self.me,
            echo::Heard {
                hash: env.payload_hash(),
                signature: env.signature,
            },
        );
        self.commits.insert(self.me, commitment);
        for m in self.config.committee.members() {
            let value = Zeroizing::new(math::scalar_bytes::<C>(&math::evaluate::<C>(
                &coeffs, m.index,
            )));
            if m.node == self.me {
                self.own_share = Some(value);
                continue;
            }
            let sealed = seal::seal(rng, &m.seal_key, &self.share_aad(&self.me, &m.node), &value)?;
            out.push(Output::Send {
                to: m.node,
                msg: self.envelope(Payload::ReshareShare {
                    params: self.params,
                    recipient: m.node,
                    sealed,
                }),
            });
        }
        Ok(())
    }

    /// Validates a newly admitted message's sender role and content and files it.
    fn store(&mut self, env: Envelope) -> Result<(), ProtocolError> {
        let sender = env.sender;
        let params = match &env.payload {
            Payload::ReshareCommit { params, .. }
            | Payload::ReshareEcho { params, .. }
            | Payload::ReshareShare { params, .. }
            | Payload::ReshareConfirm { params, .. } => *params,
            _ => return Err(ProtocolError::UnexpectedRound { got: env.round }),
        };
        if params != self.params {
            // The sender runs other parameters (the coordinator split us, or the
            // sender is faulty): dropped; if its real message never comes, the
            // deadline names it.
            return Err(ProtocolError::WrongContext("reshare parameters differ"));
        }
        let hash = env.payload_hash();
        let signature = env.signature;
        match &env.payload {
            Payload::ReshareCommit { commitment, .. } => {
                if !self.is_dealer(&sender) {
                    return Err(ProtocolError::UnknownSender(sender));
                }
                if commitment.len() != usize::from(self.config.threshold) {
                    return Err(ProtocolError::aborted(sender, Fault::InvalidElement));
                }
                let elements = math::decode_commitment::<C>(commitment)
                    .map_err(|_| ProtocolError::aborted(sender, Fault::InvalidElement))?;
                self.commits.insert(sender, elements);
                self.heard.insert(sender, echo::Heard { hash, signature });
            }
            Payload::ReshareEcho { entries, .. } => {
                if !self.is_member(&sender) {
                    return Err(ProtocolError::UnknownSender(sender));
                }
                if !echo::covers(entries, self.config.dealers.iter().copied()) {
                    return Err(ProtocolError::aborted(sender, Fault::ForgedEcho));
                }
                self.echoes.insert(sender, entries.clone());
            }
            Payload::ReshareShare { sealed, .. } => {
                if !self.is_dealer(&sender) {
                    return Err(ProtocolError::UnknownSender(sender));
                }
                self.shares.insert(sender, sealed.clone());
            }
            Payload::ReshareConfirm { .. } => {
                if !self.is_member(&sender) {
                    return Err(ProtocolError::UnknownSender(sender));
                }
                self.confirms.insert(sender, env);
            }
            _ => return Err(ProtocolError::UnexpectedRound { got: env.round }),
        }
        Ok(())
    }

    fn other_members(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.config.committee.nodes().filter(move |n| *n != self.me)
    }

    fn advance(&mut self, out: &mut Vec<Output<ReshareEvent>>) -> Result<(), ProtocolError> {
        if self.phase == Phase::Commits
            && self
                .config
                .dealers
                .iter()
                .all(|d| self.commits.contains_key(d))
        {
            for d in &self.config.dealers {
                if self.commits[d][0] != self.expected_constant(d)? {
                    return Err(ProtocolError::aborted(*d, Fault::UnboundReshare));
                }
            }
            let entries = echo::entries(self.config.dealers.iter().copied(), &self.heard)?;
            let env = self.envelope(Payload::ReshareEcho {
                params: self.params,
                entries,
            });
            self.send_to(self.config.committee.nodes(), &env, out);
            self.phase = Phase::Echo;
        }
        if self.phase == Phase::Echo && self.other_members().all(|m| self.echoes.contains_key(&m)) {
            let ctx = echo::Context {
                suite: self.config.suite,
                key: self.config.key_id,
                session: self.config.session,
                round: Round::ReshareCommit,
            };
            echo::check(ctx, &self.echoes, &self.heard)?;
            self.phase = Phase::Shares;
        }
        let all_shares = self
            .config
            .dealers
            .iter()
            .all(|d| *d == self.me || self.shares.contains_key(d));
        if self.phase == Phase::Shares && all_shares {
            self.finish_shares(out)?;
            self.phase = Phase::Confirm;
        }
        if self.phase == Phase::Confirm
            && self
                .config
                .committee
                .nodes()
                .all(|m| self.confirms.contains_key(&m))
        {
            self.finish(out)?;
        }
        Ok(())
    }

    /// Opens and checks every sub-share, derives our new share and the new public
    /// key package, emits the share, then our confirmation.
    fn finish_shares(&mut self, out: &mut Vec<Output<ReshareEvent>>) -> Result<(), ProtocolError> {
        let my = self
            .config
            .committee
            .get(&self.me)
            .map(|m| m.index)
            .ok_or(ProtocolError::InvalidState("not a new member"))?;
        let mut total: Option<Scalar<C>> = None;
        for d in self.config.dealers.clone() {
            let value = if d == self.me {
                self.own_share
                    .take()
                    .ok_or(ProtocolError::InvalidState("own sub-share missing"))?
            } else {
                let plain = seal::open(
                    self.identity.sealing_secret(),
                    &self.share_aad(&d, &self.me),
                    &self.shares[&d],
                )
                .ok_or_else(|| ProtocolError::aborted(d, Fault::UndecryptablePayload))?;
                Zeroizing::new(plain.to_vec())
            };
            let scalar = math::scalar_from_bytes::<C>(&value)
                .map_err(|_| ProtocolError::aborted(d, Fault::InvalidElement))?;
            if math::base_mul::<C>(&scalar) != math::evaluate_commitment::<C>(&self.commits[&d], my)
            {
                return Err(ProtocolError::aborted(d, Fault::InvalidSecretShare));
            }
            total = Some(match total {
                None => scalar,
                Some(t) => t + scalar,
            });
        }
        self.shares.clear();
        let secret = total.ok_or(ProtocolError::InvalidState("no dealers"))?;
        let t = usize::from(self.config.threshold);
        let mut group: Vec<Element<C>> = Vec::with_capacity(t);
        for k in 0..t {
            let sum = self
                .config
                .dealers
                .iter()
                .map(|d| self.commits[d][k])
                .fold(<C::Group as frost_core::Group>::identity(), |a, b| a + b);
            group.push(sum);
        }
        let ids = self
            .config
            .committee
            .members()
            .iter()
            .map(|m| identifier::<C>(m.index))
            .collect::<Result<std::collections::BTreeSet<Identifier<C>>, _>>()?;
        let public =
            PublicKeyPackage::<C>::from_commitment(&ids, &math::vss_commitment::<C>(&group)?)
                .map_err(|e| ProtocolError::Crypto(e.to_string()))?;
        let crypto = |e: frost_core::Error<C>| ProtocolError::Crypto(e.to_string());
        let group_key = public.verifying_key().serialize().map_err(crypto)?;
        if group_key != self.config.old.verifying_key {
            // Every dealer's constant term was checked against its old share, so
            // this is a local bug or inconsistent old public data.
            return Err(ProtocolError::Crypto(
                "reshared group key differs from the old one".into(),
            ));
        }
        let package = KeyPackage::new(
            identifier::<C>(my)?,
            math::signing_share::<C>(&secret)?,
            math::verifying_share::<C>(&math::base_mul::<C>(&secret))?,
            *public.verifying_key(),
            self.config.threshold,
        );
        let members = self
            .config
            .committee
            .members()
            .iter()
            .map(|m| (m.node, m.index))
            .collect();
        let share = KeyShare::from_frost(self.config.key_id, members, my, &package, &public)?;
        let transcript: [u8; 32] = Sha256::digest(&share.public.public_key_package).into();
        out.push(Output::Done(ReshareEvent::NewShare(share)));
        let env = self.envelope(Payload::ReshareConfirm {
            params: self.params,
            group_key: group_key.clone(),
            transcript,
        });
        self.send_to(self.participants.clone().into_iter(), &env, out);
        if !self.participants.contains(&self.config.coordinator) {
            out.push(Output::Send {
                to: self.config.coordinator,
                msg: env.clone(),
            });
        }
        self.confirms.insert(self.me, env);
        self.derived = Some((group_key, transcript));
        Ok(())
    }

    /// Every new member confirmed: all must agree with us (a new member) or with
    /// each other and the old group key (a dealer only).
    fn finish(&mut self, out: &mut Vec<Output<ReshareEvent>>) -> Result<(), ProtocolError> {
        let confirmed = |env: &Envelope| match &env.payload {
            Payload::ReshareConfirm {
                group_key,
                transcript,
                ..
            } => Some((group_key.clone(), *transcript)),
            _ => None,
        };
        let reference = match &self.derived {
            Some(d) => d.clone(),
            None => {
                // A dealer only: the first member's view, whose group key must be ours.
                let first = self
                    .config
                    .committee
                    .nodes()
                    .next()
                    .and_then(|m| self.confirms.get(&m))
                    .and_then(confirmed)
                    .ok_or(ProtocolError::InvalidState("no confirmation"))?;
                (self.config.old.verifying_key.clone(), first.1)
            }
        };
        let mut culprits: Vec<NodeId> = self
            .config
            .committee
            .nodes()
            .filter(|m| self.confirms.get(m).and_then(confirmed).as_ref() != Some(&reference))
            .collect();
        culprits.sort();
        if !culprits.is_empty() {
            return Err(ProtocolError::Aborted {
                culprits,
                fault: Fault::ConfirmationMismatch,
            });
        }
        let confirms = self
            .config
            .committee
            .nodes()
            .filter_map(|m| self.confirms.get(&m).cloned())
            .collect();
        self.phase = Phase::Finished;
        self.status = Status::Done;
        out.push(Output::Done(ReshareEvent::Finished {
            transcript: reference.1,
            confirms,
        }));
        Ok(())
    }

    fn timeout_error(&self) -> ProtocolError {
        let missing: Vec<NodeId> = match self.phase {
            Phase::Idle | Phase::Commits => self
                .config
                .dealers
                .iter()
                .copied()
                .filter(|d| !self.commits.contains_key(d))
                .collect(),
            Phase::Echo => self
                .other_members()
                .filter(|m| !self.echoes.contains_key(m))
                .collect(),
            Phase::Shares => self
                .config
                .dealers
                .iter()
                .copied()
                .filter(|d| *d != self.me && !self.shares.contains_key(d))
                .collect(),
            Phase::Confirm | Phase::Finished => self
                .config
                .committee
                .nodes()
                .filter(|m| !self.confirms.contains_key(m))
                .collect(),
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

/// Checks a coordinator's proof that a run finished: one `ReshareConfirm` per new
/// member of `config`, in committee order, each signed by that member for this
/// session and parameters, all with the old group key and the transcript
/// `SHA-256(public_key_package)`. Returns the transcript.
pub fn verify_finish(
    config: &ReshareConfig,
    public_key_package: &[u8],
    confirms: &[Vec<u8>],
) -> Result<[u8; 32], ProtocolError> {
    let params = config.params_hash();
    let transcript: [u8; 32] = Sha256::digest(public_key_package).into();
    let members: Vec<NodeId> = config.committee.nodes().collect();
    if confirms.len() != members.len() {
        return Err(ProtocolError::InvalidParameters(format!(
            "finish carries {} confirmations for {} members",
            confirms.len(),
            members.len()
        )));
    }
    for (bytes, member) in confirms.iter().zip(&members) {
        let env = Envelope::decode(bytes)?;
        env.verify()?;
        let Payload::ReshareConfirm {
            params: p,
            group_key,
            transcript: t,
        } = &env.payload
        else {
            return Err(ProtocolError::Malformed(
                "finish entry is not a confirmation",
            ));
        };
        if env.sender != *member
            || env.session != config.session
            || env.key != config.key_id
            || env.suite != config.suite
            || *p != params
            || *group_key != config.old.verifying_key
        {
            return Err(ProtocolError::InvalidParameters(format!(
                "confirmation of {} does not belong to this run",
                env.sender
            )));
        }
        if *t != transcript {
            return Err(ProtocolError::InvalidParameters(format!(
                "{} confirmed another public key package",
                env.sender
            )));
        }
    }
    Ok(transcript)
}

/// The new public key package of a run, from every dealer's signed
/// `ReshareCommit` (what the coordinator records at the commit point; members
/// confirm its hash). Each commitment is checked as members check it: `t′` valid
/// elements, the constant term bound to the dealer's old verifying share.
pub fn public_package(
    config: &ReshareConfig,
    commits: &BTreeMap<NodeId, Vec<Vec<u8>>>,
) -> Result<Vec<u8>, ProtocolError> {
    crate::dispatch!(config.suite, C => public_package_of::<C>(config, commits))
}

fn public_package_of<C: Suite>(
    config: &ReshareConfig,
    commits: &BTreeMap<NodeId, Vec<Vec<u8>>>,
) -> Result<Vec<u8>, ProtocolError> {
    let old = config.old.package::<C>()?;
    let indices = config
        .dealers
        .iter()
        .map(|d| {
            config
                .old
                .members
                .get(d)
                .copied()
                .ok_or(ProtocolError::InvalidState("dealer without an old index"))
        })
        .collect::<Result<Vec<u16>, _>>()?;
    let t = usize::from(config.threshold);
    let mut group: Vec<Element<C>> = vec![<C::Group as frost_core::Group>::identity(); t];
    for (d, index) in config.dealers.iter().zip(&indices) {
        let raw = commits.get(d).ok_or(ProtocolError::InvalidState(
            "a dealer's commitment is missing",
        ))?;
        if raw.len() != t {
            return Err(ProtocolError::aborted(*d, Fault::InvalidElement));
        }
        let elements = math::decode_commitment::<C>(raw)
            .map_err(|_| ProtocolError::aborted(*d, Fault::InvalidElement))?;
        let lambda = math::lagrange_at_zero::<C>(*index, &indices)?;
        let share = old
            .verifying_shares()
            .get(&identifier::<C>(*index)?)
            .ok_or(ProtocolError::InvalidState(
                "dealer without a verifying share",
            ))?;
        if elements[0] != math::verifying_element::<C>(share)? * lambda {
            return Err(ProtocolError::aborted(*d, Fault::UnboundReshare));
        }
        for (g, e) in group.iter_mut().zip(&elements) {
            *g = *g + *e;
        }
    }
    let ids = config
        .committee
        .members()
        .iter()
        .map(|m| identifier::<C>(m.index))
        .collect::<Result<std::collections::BTreeSet<Identifier<C>>, _>>()?;
    let public = PublicKeyPackage::<C>::from_commitment(&ids, &math::vss_commitment::<C>(&group)?)
        .map_err(|e| ProtocolError::Crypto(e.to_string()))?;
    public
        .serialize()
        .map_err(|e| ProtocolError::Crypto(e.to_string()))
}

/// Associated data binding a sealed sub-share to its run: `"quorate/reshare-share/v1"
/// ‖ suite name ‖ key id ‖ session ‖ generation (u64 big-endian) ‖ dealer ‖
/// recipient`.
pub fn share_aad(config: &ReshareConfig, dealer: &NodeId, recipient: &NodeId) -> Vec<u8> {
    let mut aad = b"quorate/reshare-share/v1".to_vec();
    aad.extend_from_slice(config.suite.name().as_bytes());
    aad.extend_from_slice(config.key_id.as_bytes());
    aad.extend_from_slice(config.session.as_bytes());
    aad.extend_from_slice(&config.generation.to_be_bytes());
    aad.extend_from_slice(dealer.as_bytes());
    aad.extend_from_slice(recipient.as_bytes());
    aad
}
