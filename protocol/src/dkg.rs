//! Distributed key generation (no dealer): frost-core's three DKG parts wrapped into
//! a sans-IO state machine with
//!
//! 1. session/round binding of every message (signed [`Envelope`]s),
//! 2. an **echo round** after round 1: each participant broadcasts, for every
//!    sender, the hash of the round-1 message it received together with that
//!    sender's signature. Two validly signed, different hashes for one sender prove
//!    it equivocated; an entry whose signature does not verify names the echoer as
//!    a forger (invariant 5),
//! 3. round-2 shares **sealed end-to-end** to the recipient's X25519 key, bound to
//!    the context, so an untrusted relay may carry them (invariant 3),
//! 4. culprit identification for bad proofs of knowledge and bad shares,
//! 5. a **confirmation round** in which everyone checks all derived the same group key.
//!
//! Messages may arrive in any order (early messages of later rounds are buffered).

use std::{collections::BTreeMap, sync::Arc};

use frost_core::keys::dkg::{self, round1, round2};
use rand_core::CryptoRngCore;
use sha2::{Digest, Sha256};

use crate::{
    committee::Committee,
    echo,
    error::{Fault, ProtocolError},
    identity::NodeIdentity,
    ids::{KeyId, NodeId, SessionId},
    inbox::{Admit, Inbox, InboxStats},
    key::KeyShare,
    machine::{Input, Output, Status, TimerId, Timestamp},
    seal::{self, SealedBox},
    suite::{identifier, Ciphersuite, Suite},
    wire::{EchoEntry, Envelope, Payload, Round},
};

/// Parameters of one DKG run; every participant must use the same values.
#[derive(Debug, Clone)]
pub struct DkgConfig {
    /// Ciphersuite of the new key.
    pub suite: Ciphersuite,
    /// Id of the new key.
    pub key_id: KeyId,
    /// Session id of this run.
    pub session: SessionId,
    /// Minimum number of signers of the new key.
    pub threshold: u16,
    /// All participants.
    pub committee: Committee,
    /// Milliseconds from start until missing participants are named and the run aborts.
    /// Local: not part of [`DkgConfig::params_hash`].
    pub timeout_ms: u64,
    /// The coordinator that started the run (blamed when participants' parameters
    /// differ). Runs without a coordinator (tests, simulator) name any fixed id.
    pub coordinator: NodeId,
    /// The coordinator's signed `DkgStart` envelope this run was started by. Sent in
    /// round 1 as proof of the sender's parameters: a participant whose parameters
    /// differ from ours either proves the coordinator signed two different starts or
    /// is itself blamed. `None` (tests, simulator): a difference blames
    /// `coordinator` unproven.
    pub start: Option<Envelope>,
}

const PARAMS_DOMAIN: &[u8] = b"quorate/dkg-params/v1\0";

impl DkgConfig {
    /// SHA-256 over `"quorate/dkg-params/v1\0" ‖ postcard((suite, key_id, session,
    /// threshold, committee, coordinator))`: what every DKG payload carries in its
    /// `params` field. Two participants whose coordinator gave them different
    /// parameters for one session find out from the first message they exchange,
    /// before any content check could blame the sender.
    pub fn params_hash(&self) -> [u8; 32] {
        params_hash(
            self.suite,
            self.key_id,
            self.session,
            self.threshold,
            &self.committee,
            self.coordinator,
        )
    }
}

fn params_hash(
    suite: Ciphersuite,
    key_id: KeyId,
    session: SessionId,
    threshold: u16,
    committee: &Committee,
    coordinator: NodeId,
) -> [u8; 32] {
    let fields = (suite, key_id, session, threshold, committee, coordinator);
    let mut h = Sha256::new();
    h.update(PARAMS_DOMAIN);
    // Fixed-size fields and a validated committee: encoding cannot fail.
    h.update(postcard::to_allocvec(&fields).unwrap_or_default());
    h.finalize().into()
}

/// What a DKG participant ends with.
#[derive(Debug, Clone)]
pub struct DkgOutput {
    /// This node's share of the new key (secret).
    pub share: KeyShare,
}

/// A DKG participant state machine for any supported ciphersuite.
pub struct Dkg {
    inner: Inner,
}

crate::suite::suite_inner!(Session);

impl Dkg {
    /// Creates this node's participant for `config`.
    pub fn new(identity: Arc<NodeIdentity>, config: DkgConfig) -> Result<Self, ProtocolError> {
        let inner = crate::suite::new_inner!(config.suite, Session::new(identity, config)?);
        Ok(Self { inner })
    }

    /// Feeds one input. Message-level rejections return an error without ending the
    /// run; fatal errors ([`ProtocolError::is_fatal`]) end it and name culprits.
    ///
    /// # Security
    /// Handles round-1 secret polynomials and received secret shares; they live only
    /// inside this machine and are zeroized when consumed or dropped.
    pub fn handle(
        &mut self,
        now: Timestamp,
        input: Input,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Vec<Output<DkgOutput>>, ProtocolError> {
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
    Round1,
    Echo,
    Round2,
    Confirm,
    Finished,
}

struct Received1<C: Suite> {
    package: round1::Package<C>,
    heard: echo::Heard,
}

struct Session<C: Suite> {
    identity: Arc<NodeIdentity>,
    me: NodeId,
    config: DkgConfig,
    inbox: Inbox,
    /// [`DkgConfig::params_hash`], carried by and checked on every DKG payload.
    params: [u8; 32],
    phase: Phase,
    status: Status,
    secret1: Option<round1::SecretPackage<C>>,
    secret2: Option<round2::SecretPackage<C>>,
    round1: BTreeMap<NodeId, Received1<C>>,
    echoes: BTreeMap<NodeId, Vec<EchoEntry>>,
    round2: BTreeMap<NodeId, SealedBox>,
    confirms: BTreeMap<NodeId, (Vec<u8>, [u8; 32])>,
    result: Option<(KeyShare, Vec<u8>, [u8; 32])>,
}

const DKG_ROUNDS: [Round; 4] = [
    Round::DkgRound1,
    Round::DkgEcho,
    Round::DkgRound2,
    Round::DkgConfirm,
];

impl<C: Suite> Session<C> {
    fn new(identity: Arc<NodeIdentity>, config: DkgConfig) -> Result<Self, ProtocolError> {
        let me = identity.node_id();
        let n = config.committee.len();
        if config.threshold < 2 || usize::from(config.threshold) > n {
            return Err(ProtocolError::InvalidParameters(format!(
                "threshold {} must be between 2 and the committee size {n}",
                config.threshold
            )));
        }
        if config.committee.get(&me).is_none() {
            return Err(ProtocolError::InvalidParameters(
                "this node is not in the DKG committee".into(),
            ));
        }
        for m in config.committee.members() {
            identifier::<C>(m.index)?;
        }
        Ok(Self {
            inbox: Inbox::new(config.suite, config.key_id, config.session),
            params: config.params_hash(),
            identity,
            me,
            config,
            phase: Phase::Idle,
            status: Status::Running,
            secret1: None,
            secret2: None,
            round1: BTreeMap::new(),
            echoes: BTreeMap::new(),
            round2: BTreeMap::new(),
            confirms: BTreeMap::new(),
            result: None,
        })
    }

    fn handle(
        &mut self,
        now: Timestamp,
        input: Input,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Vec<Output<DkgOutput>>, ProtocolError> {
        if self.status != Status::Running {
            return Ok(Vec::new());
        }
        let result = self.step(now, input, rng);
        if let Err(e) = &result {
            if e.is_fatal() {
                self.fail();
            }
        }
        result
    }

    fn fail(&mut self) {
        self.status = Status::Failed;
        self.phase = Phase::Finished;
        self.secret1 = None;
        self.secret2 = None;
        self.round2.clear();
    }

    fn step(
        &mut self,
        now: Timestamp,
        input: Input,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Vec<Output<DkgOutput>>, ProtocolError> {
        let mut out = Vec::new();
        match input {
            Input::Start => {
                if self.phase != Phase::Idle {
                    return Err(ProtocolError::InvalidState("DKG already started"));
                }
                out.push(Output::SetTimer {
                    timer: TimerId::Deadline,
                    at: now.plus_ms(self.config.timeout_ms),
                });
                self.start(rng, &mut out)?;
            }
            Input::Message(env) => {
                // A share sealed for another node is refused before the inbox records
                // anything: a relay that shows us someone else's share must not make
                // the sender's real share to us look like equivocation.
                if let Payload::DkgRound2 { recipient, .. } = &env.payload {
                    if *recipient != self.me {
                        return Err(ProtocolError::WrongContext(
                            "round-2 share for another node",
                        ));
                    }
                }
                let committee = &self.config.committee;
                let me = self.me;
                let admit = self.inbox.admit(&env, &DKG_ROUNDS, |n| {
                    *n != me && committee.get(n).is_some()
                })?;
                if admit == Admit::Duplicate {
                    return Ok(out);
                }
                self.check_params(&env)?;
                self.store(env)?;
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

    fn broadcast(&self, payload: Payload, out: &mut Vec<Output<DkgOutput>>) -> Envelope {
        let env = self.envelope(payload);
        for node in self.config.committee.nodes().filter(|n| *n != self.me) {
            out.push(Output::Send {
                to: node,
                msg: env.clone(),
            });
        }
        env
    }

    fn my_index(&self) -> u16 {
        self.config.committee.get(&self.me).map_or(0, |m| m.index)
    }

    fn node_of(&self, id: &frost_core::Identifier<C>) -> Option<NodeId> {
        self.config
            .committee
            .members()
            .iter()
            .find(|m| identifier::<C>(m.index).ok().as_ref() == Some(id))
            .map(|m| m.node)
    }

    fn start(
        &mut self,
        rng: &mut impl CryptoRngCore,
        out: &mut Vec<Output<DkgOutput>>,
    ) -> Result<(), ProtocolError> {
        let n = u16::try_from(self.config.committee.len())
            .map_err(|_| ProtocolError::InvalidParameters("committee too large".into()))?;
        let (secret, package) = dkg::part1::<C, _>(
            identifier::<C>(self.my_index())?,
            n,
            self.config.threshold,
            &mut *rng,
        )
        .map_err(|e| ProtocolError::Crypto(e.to_string()))?;
        let bytes = package
            .serialize()
            .map_err(|e| ProtocolError::Crypto(e.to_string()))?;
        let env = self.broadcast(
            Payload::DkgRound1 {
                params: self.params,
                start: self
                    .config
                    .start
                    .as_ref()
                    .map(Envelope::encode)
                    .unwrap_or_default(),
                package: bytes,
            },
            out,
        );
        self.round1.insert(
            self.me,
            Received1 {
                package,
                heard: echo::Heard {
                    hash: env.payload_hash(),
                    signature: env.signature,
                },
            },
        );
        self.secret1 = Some(secret);
        self.phase = Phase::Round1;
        Ok(())
    }

    /// An authenticated message made under other parameters than ours. With start
    /// proofs (nodes): a round-1 message whose coordinator-signed start verifies and
    /// gives the sender's parameters proves the coordinator signed two different
    /// starts (`ParametersDiffer`, the coordinator blamed); a proof that is missing,
    /// forged, from another signer or for other parameters blames the sender
    /// (`UnbackedParameters`), as does a later message whose parameters differ from
    /// the sender's own accepted round 1. A later message before the sender's round 1
    /// is dropped (its round 1 decides). Without proofs (tests, simulator) the
    /// coordinator is blamed unproven.
    fn check_params(&self, env: &Envelope) -> Result<(), ProtocolError> {
        let (params, start) = match &env.payload {
            Payload::DkgRound1 { params, start, .. } => (params, Some(start)),
            Payload::DkgEcho { params, .. }
            | Payload::DkgRound2 { params, .. }
            | Payload::DkgConfirm { params, .. } => (params, None),
            _ => return Err(ProtocolError::UnexpectedRound { got: env.round }),
        };
        if *params == self.params {
            return Ok(());
        }
        let coordinator_split = ProtocolError::ParametersDiffer {
            coordinator: self.config.coordinator,
            peer: env.sender,
        };
        if self.config.start.is_none() {
            return Err(coordinator_split);
        }
        match start {
            Some(proof) if self.proven_params(proof) == Some(*params) => Err(coordinator_split),
            Some(_) => Err(ProtocolError::aborted(
                env.sender,
                Fault::UnbackedParameters,
            )),
            None if self.round1.contains_key(&env.sender) => Err(ProtocolError::aborted(
                env.sender,
                Fault::UnbackedParameters,
            )),
            None => Err(ProtocolError::WrongContext("DKG parameters differ")),
        }
    }

    /// The parameters hash of a `DkgStart` for this session, key and suite signed by
    /// our coordinator, if `bytes` is one.
    fn proven_params(&self, bytes: &[u8]) -> Option<[u8; 32]> {
        let start = Envelope::decode(bytes).ok()?;
        if start.sender != self.config.coordinator
            || start.session != self.config.session
            || start.key != self.config.key_id
            || start.suite != self.config.suite
        {
            return None;
        }
        start.verify().ok()?;
        let Payload::DkgStart {
            threshold,
            committee,
            ..
        } = &start.payload
        else {
            return None;
        };
        Some(params_hash(
            start.suite,
            start.key,
            start.session,
            *threshold,
            committee,
            start.sender,
        ))
    }

    /// Validates a newly admitted message's content and files it by round.
    fn store(&mut self, env: Envelope) -> Result<(), ProtocolError> {
        let sender = env.sender;
        let hash = env.payload_hash();
        match env.payload {
            Payload::DkgRound1 { package, .. } => {
                let package = round1::Package::<C>::deserialize(&package)
                    .map_err(|_| ProtocolError::aborted(sender, Fault::InvalidElement))?;
                if package.commitment().coefficients().len() != usize::from(self.config.threshold) {
                    return Err(ProtocolError::aborted(sender, Fault::InvalidElement));
                }
                self.round1.insert(
                    sender,
                    Received1 {
                        package,
                        heard: echo::Heard {
                            hash,
                            signature: env.signature,
                        },
                    },
                );
            }
            Payload::DkgEcho { entries, .. } => {
                let covers_committee = echo::covers(&entries, self.config.committee.nodes());
                if !covers_committee {
                    return Err(ProtocolError::aborted(sender, Fault::ForgedEcho));
                }
                self.echoes.insert(sender, entries);
            }
            // Addressed to us: checked before admission (see `step`).
            Payload::DkgRound2 { sealed, .. } => {
                self.round2.insert(sender, sealed);
            }
            Payload::DkgConfirm {
                group_key,
                transcript,
                ..
            } => {
                self.confirms.insert(sender, (group_key, transcript));
            }
            _ => return Err(ProtocolError::UnexpectedRound { got: env.round }),
        }
        Ok(())
    }

    fn others(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.config.committee.nodes().filter(move |n| *n != self.me)
    }

    fn advance(
        &mut self,
        rng: &mut impl CryptoRngCore,
        out: &mut Vec<Output<DkgOutput>>,
    ) -> Result<(), ProtocolError> {
        let n = self.config.committee.len();
        if self.phase == Phase::Round1 && self.round1.len() == n {
            let entries = echo::entries(self.config.committee.nodes(), &self.heard())?;
            let params = self.params;
            self.broadcast(Payload::DkgEcho { params, entries }, out);
            self.phase = Phase::Echo;
        }
        if self.phase == Phase::Echo && self.others().all(|o| self.echoes.contains_key(&o)) {
            self.check_echoes()?;
            self.send_round2(rng, out)?;
            self.phase = Phase::Round2;
        }
        if self.phase == Phase::Round2 && self.others().all(|o| self.round2.contains_key(&o)) {
            self.finish_round2(out)?;
            self.phase = Phase::Confirm;
        }
        if self.phase == Phase::Confirm && self.others().all(|o| self.confirms.contains_key(&o)) {
            let (share, group_key, transcript) = self
                .result
                .take()
                .ok_or(ProtocolError::InvalidState("confirmation without a key"))?;
            let mut culprits: Vec<NodeId> = self
                .confirms
                .iter()
                .filter(|(_, (k, t))| *k != group_key || *t != transcript)
                .map(|(node, _)| *node)
                .collect();
            culprits.sort();
            if !culprits.is_empty() {
                return Err(ProtocolError::Aborted {
                    culprits,
                    fault: Fault::ConfirmationMismatch,
                });
            }
            self.phase = Phase::Finished;
            self.status = Status::Done;
            out.push(Output::Done(DkgOutput { share }));
        }
        Ok(())
    }

    /// Compares every echo with what we received (invariant 5).
    fn check_echoes(&self) -> Result<(), ProtocolError> {
        let ctx = echo::Context {
            suite: self.config.suite,
            key: self.config.key_id,
            session: self.config.session,
            round: Round::DkgRound1,
        };
        echo::check(ctx, &self.echoes, &self.heard())
    }

    /// The round-1 messages received, as echoed.
    fn heard(&self) -> BTreeMap<NodeId, echo::Heard> {
        self.round1
            .iter()
            .map(|(node, r)| (*node, r.heard.clone()))
            .collect()
    }

    fn round1_packages(
        &self,
    ) -> Result<BTreeMap<frost_core::Identifier<C>, round1::Package<C>>, ProtocolError> {
        let mut map = BTreeMap::new();
        for m in self.config.committee.members() {
            if m.node != self.me {
                map.insert(
                    identifier::<C>(m.index)?,
                    self.round1[&m.node].package.clone(),
                );
            }
        }
        Ok(map)
    }

    fn seal_aad(&self, sender: &NodeId, recipient: &NodeId) -> Vec<u8> {
        share_aad(
            self.config.suite,
            &self.config.key_id,
            &self.config.session,
            sender,
            recipient,
        )
    }

    fn map_frost_error(&self, e: frost_core::Error<C>, fault: Fault) -> ProtocolError {
        let mut culprits: Vec<NodeId> = e
            .culprits()
            .iter()
            .filter_map(|id| self.node_of(id))
            .collect();
        culprits.sort();
        if culprits.is_empty() {
            ProtocolError::Crypto(e.to_string())
        } else {
            ProtocolError::Aborted { culprits, fault }
        }
    }

    fn send_round2(
        &mut self,
        rng: &mut impl CryptoRngCore,
        out: &mut Vec<Output<DkgOutput>>,
    ) -> Result<(), ProtocolError> {
        let secret = self.secret1.take().ok_or(ProtocolError::InvalidState(
            "round 2 without round-1 secret",
        ))?;
        let (secret2, packages) = dkg::part2(secret, &self.round1_packages()?)
            .map_err(|e| self.map_frost_error(e, Fault::InvalidProofOfKnowledge))?;
        for m in self.config.committee.members() {
            if m.node == self.me {
                continue;
            }
            let package = &packages[&identifier::<C>(m.index)?];
            let plain = zeroize::Zeroizing::new(
                package
                    .serialize()
                    .map_err(|e| ProtocolError::Crypto(e.to_string()))?,
            );
            let sealed = seal::seal(rng, &m.seal_key, &self.seal_aad(&self.me, &m.node), &plain)?;
            out.push(Output::Send {
                to: m.node,
                msg: self.envelope(Payload::DkgRound2 {
                    params: self.params,
                    recipient: m.node,
                    sealed,
                }),
            });
        }
        self.secret2 = Some(secret2);
        Ok(())
    }

    fn finish_round2(&mut self, out: &mut Vec<Output<DkgOutput>>) -> Result<(), ProtocolError> {
        let mut shares = BTreeMap::new();
        for m in self.config.committee.members() {
            if m.node == self.me {
                continue;
            }
            let sealed = &self.round2[&m.node];
            let plain = seal::open(
                self.identity.sealing_secret(),
                &self.seal_aad(&m.node, &self.me),
                sealed,
            )
            .ok_or_else(|| ProtocolError::aborted(m.node, Fault::UndecryptablePayload))?;
            let package = round2::Package::<C>::deserialize(&plain)
                .map_err(|_| ProtocolError::aborted(m.node, Fault::InvalidElement))?;
            shares.insert(identifier::<C>(m.index)?, package);
        }
        let secret2 = self.secret2.take().ok_or(ProtocolError::InvalidState(
            "round 3 without round-2 secret",
        ))?;
        let (key_package, public) = dkg::part3(&secret2, &self.round1_packages()?, &shares)
            .map_err(|e| self.map_frost_error(e, Fault::InvalidSecretShare))?;
        self.round2.clear();
        let members = self
            .config
            .committee
            .members()
            .iter()
            .map(|m| (m.node, m.index))
            .collect();
        let share = KeyShare::from_frost(
            self.config.key_id,
            members,
            self.my_index(),
            &key_package,
            &public,
        )?;
        let group_key = share.public.verifying_key.clone();
        let transcript: [u8; 32] = Sha256::digest(&share.public.public_key_package).into();
        self.broadcast(
            Payload::DkgConfirm {
                params: self.params,
                group_key: group_key.clone(),
                transcript,
            },
            out,
        );
        self.result = Some((share, group_key, transcript));
        Ok(())
    }

    fn timeout_error(&self) -> ProtocolError {
        let missing: Vec<NodeId> = match self.phase {
            Phase::Idle | Phase::Round1 => self
                .others()
                .filter(|o| !self.round1.contains_key(o))
                .collect(),
            Phase::Echo => self
                .others()
                .filter(|o| !self.echoes.contains_key(o))
                .collect(),
            Phase::Round2 => self
                .others()
                .filter(|o| !self.round2.contains_key(o))
                .collect(),
            Phase::Confirm | Phase::Finished => self
                .others()
                .filter(|o| !self.confirms.contains_key(o))
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

/// Associated data binding a sealed round-2 share to its context.
pub(crate) fn share_aad(
    suite: Ciphersuite,
    key: &KeyId,
    session: &SessionId,
    sender: &NodeId,
    recipient: &NodeId,
) -> Vec<u8> {
    let mut aad = b"quorate/dkg-share/v1".to_vec();
    aad.extend_from_slice(suite.name().as_bytes());
    aad.extend_from_slice(key.as_bytes());
    aad.extend_from_slice(session.as_bytes());
    aad.extend_from_slice(sender.as_bytes());
    aad.extend_from_slice(recipient.as_bytes());
    aad
}
