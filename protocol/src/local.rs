//! An in-memory network that runs the real state machines end to end, with a hook
//! to tamper with messages in flight. Used by tests, benchmarks and the in-process
//! devnet; the simulator has its own timed engine but drives the same [`Party`].
//!
//! Delivery is FIFO and instantaneous; nothing here is timed.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::Arc,
};

use rand_core::CryptoRngCore;

use crate::{
    aggregate::{Aggregator, AggregatorConfig},
    committee::{Committee, Member},
    dkg::{Dkg, DkgConfig},
    error::ProtocolError,
    identity::NodeIdentity,
    ids::{KeyId, NodeId, SessionId},
    key::{KeyShare, SignatureBytes},
    lifecycle::{Repair, RepairEvent, Reshare, ReshareConfig, ReshareEvent},
    machine::{Input, Output, Timestamp},
    sign::{ShareSent, SignTarget, Signer, SignerConfig},
    suite::Ciphersuite,
    wire::{Envelope, Payload},
};

/// Any of the protocol's state machines.
// Parties live in a map, one per node; their size does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Party {
    /// A DKG participant.
    Dkg(Dkg),
    /// A signer.
    Signer(Signer),
    /// A signing coordinator.
    Aggregator(Aggregator),
    /// A resharing participant.
    Reshare(Reshare),
    /// A repair participant.
    Repair(Repair),
}

/// What a party finished with.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// A DKG participant's key share.
    Key(KeyShare),
    /// A signer's contributed share.
    Share(ShareSent),
    /// The coordinator's aggregated signature.
    Signature(SignatureBytes),
    /// A resharing participant's new share or completion.
    Reshare(ReshareEvent),
    /// A repair participant's result.
    Repair(RepairEvent),
}

fn map_outputs<T>(outs: Vec<Output<T>>, f: impl Fn(T) -> Outcome) -> Vec<Output<Outcome>> {
    outs.into_iter()
        .map(|o| match o {
            Output::Send { to, msg } => Output::Send { to, msg },
            Output::SetTimer { timer, at } => Output::SetTimer { timer, at },
            Output::Done(t) => Output::Done(f(t)),
        })
        .collect()
}

impl Party {
    /// Feeds one input to the wrapped machine.
    pub fn handle(
        &mut self,
        now: Timestamp,
        input: Input,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Vec<Output<Outcome>>, ProtocolError> {
        Ok(match self {
            Self::Dkg(m) => map_outputs(m.handle(now, input, rng)?, |d| Outcome::Key(d.share)),
            Self::Signer(m) => map_outputs(m.handle(now, input, rng)?, Outcome::Share),
            Self::Aggregator(m) => map_outputs(m.handle(now, input, rng)?, Outcome::Signature),
            Self::Reshare(m) => map_outputs(m.handle(now, input, rng)?, Outcome::Reshare),
            Self::Repair(m) => map_outputs(m.handle(now, input, rng)?, Outcome::Repair),
        })
    }
}

/// Generates `n` node identities.
pub fn identities(n: usize, rng: &mut impl CryptoRngCore) -> Vec<Arc<NodeIdentity>> {
    (0..n)
        .map(|_| Arc::new(NodeIdentity::generate(rng)))
        .collect()
}

/// A committee of `identities` with indices 1..=n in the given order.
pub fn committee_of(identities: &[Arc<NodeIdentity>]) -> Result<Committee, ProtocolError> {
    Committee::new(
        identities
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let p = id.public();
                Ok(Member {
                    node: p.node,
                    index: u16::try_from(i + 1)
                        .map_err(|_| ProtocolError::InvalidParameters("too many members".into()))?,
                    seal_key: p.seal_key,
                })
            })
            .collect::<Result<Vec<_>, ProtocolError>>()?,
    )
}

/// A message-tampering hook: given the recipient and a message in flight, return
/// what is actually delivered (nothing, the message, or several messages).
pub type Tamper<'a> = dyn FnMut(&NodeId, Envelope) -> Vec<Envelope> + 'a;

/// Signers that join a session when the coordinator's request reaches them.
struct SignerPool {
    shares: BTreeMap<NodeId, (Arc<NodeIdentity>, KeyShare)>,
}

/// An in-memory network of parties.
#[derive(Default)]
pub struct Net {
    parties: BTreeMap<NodeId, Party>,
    pool: Option<SignerPool>,
    queue: VecDeque<(NodeId, Envelope)>,
    /// What each party finished with.
    pub outcomes: BTreeMap<NodeId, Outcome>,
    /// New shares reshared parties reported ([`ReshareEvent::NewShare`]).
    pub new_shares: BTreeMap<NodeId, KeyShare>,
    /// Every error any party returned, in order (fatal and message rejections).
    pub errors: Vec<(NodeId, ProtocolError)>,
    /// Messages delivered.
    pub delivered: u64,
    /// Bytes delivered (encoded envelopes).
    pub bytes: u64,
}

impl Net {
    /// An empty network.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a party under `node`.
    pub fn add(&mut self, node: NodeId, party: Party) {
        self.parties.insert(node, party);
    }

    /// Registers key shares whose holders create a [`Signer`] (approving whatever
    /// they are asked) when a signing request reaches them.
    pub fn signers(&mut self, shares: Vec<(Arc<NodeIdentity>, KeyShare)>) {
        self.pool = Some(SignerPool {
            shares: shares
                .into_iter()
                .map(|(id, s)| (id.node_id(), (id, s)))
                .collect(),
        });
    }

    /// Feeds `input` to `node` and queues what it sends.
    pub fn input(&mut self, node: NodeId, input: Input, rng: &mut impl CryptoRngCore) {
        let Some(party) = self.parties.get_mut(&node) else {
            return;
        };
        match party.handle(Timestamp(0), input, rng) {
            Ok(outs) => {
                for o in outs {
                    match o {
                        Output::Send { to, msg } => self.queue.push_back((to, msg)),
                        Output::Done(Outcome::Reshare(ReshareEvent::NewShare(share))) => {
                            self.new_shares.insert(node, share);
                        }
                        Output::Done(d) => {
                            self.outcomes.insert(node, d);
                        }
                        Output::SetTimer { .. } => {}
                    }
                }
            }
            Err(e) => self.errors.push((node, e)),
        }
    }

    /// Delivers queued messages (through `tamper`) until the network is quiet.
    pub fn run(&mut self, rng: &mut impl CryptoRngCore, tamper: &mut Tamper<'_>) {
        while let Some((to, msg)) = self.queue.pop_front() {
            for msg in tamper(&to, msg) {
                self.delivered += 1;
                self.bytes += msg.encode().len() as u64;
                if let Payload::SignRequest { message, tweak, .. } = &msg.payload {
                    self.join_signer(to, &msg, message.clone(), *tweak, rng);
                    continue;
                }
                self.input(to, Input::Message(msg), rng);
            }
        }
    }

    /// [`Net::run`] without tampering.
    pub fn run_clean(&mut self, rng: &mut impl CryptoRngCore) {
        self.run(rng, &mut |_, m| vec![m]);
    }

    fn join_signer(
        &mut self,
        node: NodeId,
        request: &Envelope,
        message: Vec<u8>,
        tweak: Option<[u8; 32]>,
        rng: &mut impl CryptoRngCore,
    ) {
        if self.parties.contains_key(&node) {
            return;
        }
        let Some((identity, share)) = self.pool.as_ref().and_then(|p| p.shares.get(&node)) else {
            return;
        };
        let signer = Signer::new(
            identity.clone(),
            share,
            SignerConfig {
                session: request.session,
                coordinator: request.sender,
                target: SignTarget { message, tweak },
                timeout_ms: 60_000,
            },
        );
        match signer {
            Ok(s) => {
                self.parties.insert(node, Party::Signer(s));
                self.input(node, Input::Start, rng);
            }
            Err(e) => self.errors.push((node, e)),
        }
    }
}

/// Runs a complete DKG among `identities` in memory and returns every share in
/// committee order. This is a real DKG (no dealer): each participant is its own
/// [`Dkg`] machine.
pub fn run_dkg(
    identities: &[Arc<NodeIdentity>],
    suite: Ciphersuite,
    threshold: u16,
    rng: &mut impl CryptoRngCore,
) -> Result<Vec<KeyShare>, ProtocolError> {
    let mut key = [0u8; 16];
    rng.fill_bytes(&mut key);
    let mut session = [0u8; 32];
    rng.fill_bytes(&mut session);
    let committee = committee_of(identities)?;
    let mut net = Net::new();
    for id in identities {
        let dkg = Dkg::new(
            id.clone(),
            DkgConfig {
                suite,
                key_id: KeyId(key),
                session: SessionId(session),
                threshold,
                committee: committee.clone(),
                timeout_ms: 60_000,
                coordinator: crate::ids::NodeId([0; 32]),
                start: None,
            },
        )?;
        net.add(id.node_id(), Party::Dkg(dkg));
    }
    for id in identities {
        net.input(id.node_id(), Input::Start, rng);
    }
    net.run_clean(rng);
    if let Some((_, e)) = net.errors.into_iter().next() {
        return Err(e);
    }
    identities
        .iter()
        .map(|id| match net.outcomes.remove(&id.node_id()) {
            Some(Outcome::Key(k)) => Ok(k),
            _ => Err(ProtocolError::InvalidState("DKG did not finish")),
        })
        .collect()
}

/// Signs `target` with the given signers (holders of shares of one key) through a
/// coordinator identity, in memory.
pub fn run_signing(
    coordinator: &Arc<NodeIdentity>,
    signers: Vec<(Arc<NodeIdentity>, KeyShare)>,
    target: SignTarget,
    rng: &mut impl CryptoRngCore,
) -> Result<SignatureBytes, ProtocolError> {
    let public = signers
        .first()
        .map(|(_, s)| s.public.clone())
        .ok_or_else(|| ProtocolError::InvalidParameters("no signers".into()))?;
    let mut session = [0u8; 32];
    rng.fill_bytes(&mut session);
    let aggregator = Aggregator::new(
        coordinator.clone(),
        &public,
        AggregatorConfig {
            session: SessionId(session),
            signers: signers.iter().map(|(id, _)| id.node_id()).collect(),
            target,
            request: Vec::new(),
            timeout_ms: 60_000,
        },
    )?;
    let mut net = Net::new();
    net.signers(signers);
    net.add(coordinator.node_id(), Party::Aggregator(aggregator));
    net.input(coordinator.node_id(), Input::Start, rng);
    net.run_clean(rng);
    if let Some((_, e)) = net.errors.into_iter().next() {
        return Err(e);
    }
    match net.outcomes.remove(&coordinator.node_id()) {
        Some(Outcome::Signature(s)) => Ok(s),
        _ => Err(ProtocolError::InvalidState("signing did not finish")),
    }
}

/// Reshares a key in memory: `dealers` (old members with their old shares, at
/// least the old threshold) hand it to `committee` at `threshold`; `newcomers` are
/// the identities of new members that are not dealers. Returns every new member's
/// share in committee order, after every participant finished.
pub fn run_reshare(
    dealers: &[(Arc<NodeIdentity>, KeyShare)],
    newcomers: &[Arc<NodeIdentity>],
    committee: &Committee,
    threshold: u16,
    rng: &mut impl CryptoRngCore,
) -> Result<Vec<KeyShare>, ProtocolError> {
    let old = dealers
        .first()
        .map(|(_, s)| s.public.clone())
        .ok_or_else(|| ProtocolError::InvalidParameters("no dealers".into()))?;
    let mut session = [0u8; 32];
    rng.fill_bytes(&mut session);
    let mut dealer_ids: Vec<NodeId> = dealers.iter().map(|(id, _)| id.node_id()).collect();
    dealer_ids.sort();
    let config = ReshareConfig {
        suite: old.suite,
        key_id: old.key_id,
        session: SessionId(session),
        old: old.clone(),
        dealers: dealer_ids,
        committee: committee.clone(),
        threshold,
        generation: 1,
        timeout_ms: 60_000,
        coordinator: NodeId([0; 32]),
    };
    let mut net = Net::new();
    let mut identities: BTreeMap<NodeId, Arc<NodeIdentity>> = BTreeMap::new();
    for (id, share) in dealers {
        let m = Reshare::new(id.clone(), config.clone(), Some(share))?;
        net.add(id.node_id(), Party::Reshare(m));
        identities.insert(id.node_id(), id.clone());
    }
    for id in newcomers {
        let m = Reshare::new(id.clone(), config.clone(), None)?;
        net.add(id.node_id(), Party::Reshare(m));
        identities.insert(id.node_id(), id.clone());
    }
    for node in identities.keys() {
        net.input(*node, Input::Start, rng);
    }
    net.run_clean(rng);
    if let Some((_, e)) = net.errors.into_iter().next() {
        return Err(e);
    }
    for node in identities.keys() {
        if !matches!(
            net.outcomes.get(node),
            Some(Outcome::Reshare(ReshareEvent::Finished { .. }))
        ) {
            return Err(ProtocolError::InvalidState("reshare did not finish"));
        }
    }
    committee
        .nodes()
        .map(|n| {
            net.new_shares
                .remove(&n)
                .ok_or(ProtocolError::InvalidState("new member without a share"))
        })
        .collect()
}
