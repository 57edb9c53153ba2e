//! Coordinator side of FROST signing, with cheater detection.
//!
//! The aggregator holds no secret: it asks the chosen signers to take part
//! (forwarding the client's signed request verbatim), collects their commitments,
//! sends each the signing package, verifies every signature share against the
//! signer's verifying share and aggregates. Invalid shares abort the attempt naming
//! *all* culprits; missing signers are named when the deadline fires. Retrying with
//! another subset (ROAST-style) is the caller's loop: each attempt is a new session.
//!
//! A presigned attempt ([`Aggregator::presigned`], see [`crate::presign`]) skips the
//! commitment round: it builds the signing package from commitments the signers
//! registered ahead of time and sends each signer one [`Payload::PresignedSign`];
//! share collection, verification and blame are the same.

use std::{collections::BTreeMap, sync::Arc};

use frost_core::{round1::SigningCommitments, round2::SignatureShare, SigningPackage};
use rand_core::CryptoRngCore;

use crate::{
    error::{Fault, ProtocolError},
    identity::NodeIdentity,
    ids::{NodeId, SessionId},
    inbox::{Admit, Inbox, InboxStats},
    key::{GroupPublic, SignatureBytes},
    machine::{Input, Output, Status, TimerId, Timestamp},
    presign::{decode_commitment, PresignRef},
    sign::SignTarget,
    suite::{identifier, Suite},
    window::WindowCertificate,
    wire::{Envelope, Payload, Round},
};

/// Parameters of one signing attempt.
#[derive(Debug, Clone)]
pub struct AggregatorConfig {
    /// Fresh session id for this attempt.
    pub session: SessionId,
    /// The signers asked to take part (at least the threshold, all members of the key).
    pub signers: Vec<NodeId>,
    /// What to sign.
    pub target: SignTarget,
    /// The client's signed request, forwarded to signers for their own checks.
    pub request: Vec<u8>,
    /// Milliseconds until silent signers are named and the attempt aborts.
    pub timeout_ms: u64,
}

/// A coordinator-side signing state machine for any supported ciphersuite.
pub struct Aggregator {
    inner: Inner,
}

crate::suite::suite_inner!(Session);

impl Aggregator {
    /// Creates an attempt to sign with the key described by `public`.
    pub fn new(
        identity: Arc<NodeIdentity>,
        public: &GroupPublic,
        config: AggregatorConfig,
    ) -> Result<Self, ProtocolError> {
        let inner = crate::suite::new_inner!(public.suite, Session::new(identity, public, config)?);
        Ok(Self { inner })
    }

    /// Creates an attempt whose signers are asked with `start` instead of the
    /// client's `SignRequest`: a [`Payload::SettleRequest`], for payloads a node
    /// builds and checks itself (netting settlements). `config.request` is unused.
    pub fn with_request_payload(
        identity: Arc<NodeIdentity>,
        public: &GroupPublic,
        config: AggregatorConfig,
        start: Payload,
    ) -> Result<Self, ProtocolError> {
        if !matches!(start, Payload::SettleRequest { .. }) {
            return Err(ProtocolError::InvalidParameters(
                "only a SettleRequest can replace the client request".into(),
            ));
        }
        let mut me = Self::new(identity, public, config)?;
        crate::suite::with_inner!(&mut me.inner, s => s.start = Some(start));
        Ok(me)
    }

    /// Creates a one-round attempt from presigned commitments: `commitments` holds
    /// exactly one [`PresignRef`] per signer of `config.signers` (from
    /// [`PresignBook::take_set`](crate::presign::PresignBook::take_set)). On
    /// `Input::Start` it decodes them (a commitment that does not decode canonically
    /// aborts naming its node), builds the signing package and sends each signer a
    /// [`Payload::PresignedSign`] with `config.request` verbatim and the signer's own
    /// `(epoch, index)`, and arms the deadline; then it collects and verifies shares
    /// like [`Aggregator::new`]'s attempt (invalid shares name every culprit, the
    /// deadline names the silent).
    pub fn presigned(
        identity: Arc<NodeIdentity>,
        public: &GroupPublic,
        config: AggregatorConfig,
        commitments: BTreeMap<NodeId, PresignRef>,
    ) -> Result<Self, ProtocolError> {
        let mut me = Self::new(identity, public, config)?;
        crate::suite::with_inner!(&mut me.inner, s => {
            if !commitments.keys().eq(s.ids.keys()) {
                return Err(ProtocolError::InvalidParameters(
                    "presigned commitments must name exactly the chosen signers".into(),
                ));
            }
            s.presigned = Some(commitments);
        });
        Ok(me)
    }

    /// Attaches a window certificate ([`crate::window`]) to the `SignRequest` or
    /// `PresignedSign` every signer of this attempt is sent. Call before
    /// `Input::Start`; without it the attempt carries an empty certificate.
    pub fn with_certificate(mut self, certificate: WindowCertificate) -> Self {
        crate::suite::with_inner!(&mut self.inner, s => s.certificate = certificate);
        self
    }

    /// Feeds one input.
    pub fn handle(
        &mut self,
        now: Timestamp,
        input: Input,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Vec<Output<SignatureBytes>>, ProtocolError> {
        let _ = rng;
        crate::suite::with_inner!(&mut self.inner, s => s.handle(now, input))
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
    Commit,
    Share,
    Finished,
}

struct Session<C: Suite> {
    identity: Arc<NodeIdentity>,
    public: GroupPublic,
    pkp: frost_core::keys::PublicKeyPackage<C>,
    config: AggregatorConfig,
    ids: BTreeMap<NodeId, frost_core::Identifier<C>>,
    inbox: Inbox,
    phase: Phase,
    status: Status,
    commitments: BTreeMap<NodeId, SigningCommitments<C>>,
    package: Option<SigningPackage<C>>,
    shares: BTreeMap<NodeId, SignatureShare<C>>,
    start: Option<Payload>,
    /// Presigned commitments per signer: the attempt has no commitment round.
    presigned: Option<BTreeMap<NodeId, PresignRef>>,
    /// Window approvals attached to every `SignRequest` / `PresignedSign`.
    certificate: WindowCertificate,
}

impl<C: Suite> Session<C> {
    fn new(
        identity: Arc<NodeIdentity>,
        public: &GroupPublic,
        config: AggregatorConfig,
    ) -> Result<Self, ProtocolError> {
        let mut ids = BTreeMap::new();
        for node in &config.signers {
            let index = public.members.get(node).ok_or_else(|| {
                ProtocolError::InvalidParameters(format!(
                    "signer {node} does not hold a share of this key"
                ))
            })?;
            if ids.insert(*node, identifier::<C>(*index)?).is_some() {
                return Err(ProtocolError::InvalidParameters(format!(
                    "signer {node} listed twice"
                )));
            }
        }
        if ids.len() < usize::from(public.threshold) {
            return Err(ProtocolError::InvalidParameters(format!(
                "{} signers chosen but the key needs {}",
                ids.len(),
                public.threshold
            )));
        }
        let pkp = C::tweak_public(public.package::<C>()?, config.target.tweak.as_ref())?;
        Ok(Self {
            inbox: Inbox::new(C::SUITE, public.key_id, config.session),
            identity,
            public: public.clone(),
            pkp,
            config,
            ids,
            phase: Phase::Idle,
            status: Status::Running,
            commitments: BTreeMap::new(),
            package: None,
            shares: BTreeMap::new(),
            start: None,
            presigned: None,
            certificate: WindowCertificate::default(),
        })
    }

    fn envelope(&self, payload: Payload) -> Envelope {
        Envelope::seal(
            &self.identity,
            C::SUITE,
            self.public.key_id,
            self.config.session,
            payload,
        )
    }

    fn handle(
        &mut self,
        now: Timestamp,
        input: Input,
    ) -> Result<Vec<Output<SignatureBytes>>, ProtocolError> {
        if self.status != Status::Running {
            return Ok(Vec::new());
        }
        let result = self.step(now, input);
        if let Err(e) = &result {
            if e.is_fatal() {
                self.status = Status::Failed;
                self.phase = Phase::Finished;
            }
        }
        result
    }

    fn step(
        &mut self,
        now: Timestamp,
        input: Input,
    ) -> Result<Vec<Output<SignatureBytes>>, ProtocolError> {
        let mut out = Vec::new();
        match input {
            Input::Start => {
                if self.phase != Phase::Idle {
                    return Err(ProtocolError::InvalidState("aggregator already started"));
                }
                out.push(Output::SetTimer {
                    timer: TimerId::Deadline,
                    at: now.plus_ms(self.config.timeout_ms),
                });
                if let Some(refs) = &self.presigned {
                    // The commitment round happened ahead of time: `advance` below
                    // builds the package and sends each signer its `PresignedSign`.
                    for (node, r) in refs {
                        let c = decode_commitment::<C>(&r.commitments)
                            .ok_or_else(|| ProtocolError::aborted(*node, Fault::InvalidElement))?;
                        self.commitments.insert(*node, c);
                    }
                } else {
                    let payload = self.start.clone().unwrap_or_else(|| Payload::SignRequest {
                        request: self.config.request.clone(),
                        message: self.config.target.message.clone(),
                        tweak: self.config.target.tweak,
                        certificate: self.certificate.clone(),
                    });
                    let env = self.envelope(payload);
                    for node in self.ids.keys() {
                        out.push(Output::Send {
                            to: *node,
                            msg: env.clone(),
                        });
                    }
                }
                self.phase = Phase::Commit;
            }
            Input::Timeout(TimerId::Deadline) => {
                let missing: Vec<NodeId> = self
                    .ids
                    .keys()
                    .filter(|n| match self.phase {
                        Phase::Idle | Phase::Commit => !self.commitments.contains_key(n),
                        _ => !self.shares.contains_key(n),
                    })
                    .copied()
                    .collect();
                return Err(ProtocolError::Aborted {
                    culprits: missing,
                    fault: Fault::Timeout,
                });
            }
            Input::Message(env) => {
                let ids = &self.ids;
                let rounds: &[Round] = if self.presigned.is_some() {
                    &[Round::SignShare]
                } else {
                    &[Round::SignCommit, Round::SignShare]
                };
                if self.inbox.admit(&env, rounds, |n| ids.contains_key(n))? == Admit::Duplicate {
                    return Ok(out);
                }
                let sender = env.sender;
                match env.payload {
                    Payload::SignCommit { commitments } => {
                        let c = SigningCommitments::<C>::deserialize(&commitments)
                            .map_err(|_| ProtocolError::aborted(sender, Fault::InvalidElement))?;
                        self.commitments.insert(sender, c);
                    }
                    Payload::SignShare { share } => {
                        if self.phase != Phase::Share {
                            return Err(ProtocolError::UnexpectedRound { got: env.round });
                        }
                        let s = SignatureShare::<C>::deserialize(&share)
                            .map_err(|_| ProtocolError::aborted(sender, Fault::InvalidElement))?;
                        self.shares.insert(sender, s);
                    }
                    _ => return Err(ProtocolError::UnexpectedRound { got: env.round }),
                }
            }
        }
        self.advance(&mut out)?;
        Ok(out)
    }

    fn advance(&mut self, out: &mut Vec<Output<SignatureBytes>>) -> Result<(), ProtocolError> {
        if self.phase == Phase::Commit && self.commitments.len() == self.ids.len() {
            let map = self
                .commitments
                .iter()
                .map(|(node, c)| (self.ids[node], *c))
                .collect();
            let package = SigningPackage::new(map, &self.config.target.message);
            let bytes = package
                .serialize()
                .map_err(|e| ProtocolError::Crypto(e.to_string()))?;
            if let Some(refs) = &self.presigned {
                for (node, r) in refs {
                    let env = self.envelope(Payload::PresignedSign {
                        request: self.config.request.clone(),
                        message: self.config.target.message.clone(),
                        tweak: self.config.target.tweak,
                        package: bytes.clone(),
                        epoch: r.epoch,
                        index: r.index,
                        certificate: self.certificate.clone(),
                    });
                    out.push(Output::Send {
                        to: *node,
                        msg: env,
                    });
                }
            } else {
                let env = self.envelope(Payload::SignPackage {
                    package: bytes,
                    tweak: self.config.target.tweak,
                });
                for node in self.ids.keys() {
                    out.push(Output::Send {
                        to: *node,
                        msg: env.clone(),
                    });
                }
            }
            self.package = Some(package);
            self.phase = Phase::Share;
        }
        if self.phase == Phase::Share && self.shares.len() == self.ids.len() {
            let package = self
                .package
                .as_ref()
                .ok_or(ProtocolError::InvalidState("shares without a package"))?;
            let shares = self
                .shares
                .iter()
                .map(|(node, s)| (self.ids[node], *s))
                .collect();
            let signature = frost_core::aggregate_custom(
                package,
                &shares,
                &self.pkp,
                frost_core::CheaterDetection::AllCheaters,
            )
            .map_err(|e| {
                let mut culprits: Vec<NodeId> = e
                    .culprits()
                    .iter()
                    .filter_map(|id| self.ids.iter().find(|(_, i)| *i == id).map(|(n, _)| *n))
                    .collect();
                culprits.sort();
                if culprits.is_empty() {
                    ProtocolError::Crypto(e.to_string())
                } else {
                    ProtocolError::Aborted {
                        culprits,
                        fault: Fault::InvalidSignatureShare,
                    }
                }
            })?;
            // No second verification here: `aggregate_custom` returns a signature only
            // after verifying it under the group key (tweaked for secp256k1-tr), and
            // otherwise checks every share and names the culprits (frost-core 3,
            // `aggregate_custom` / `detect_cheater`).
            let crypto = |e: frost_core::Error<C>| ProtocolError::Crypto(e.to_string());
            self.phase = Phase::Finished;
            self.status = Status::Done;
            out.push(Output::Done(SignatureBytes {
                suite: C::SUITE,
                signature: signature.serialize().map_err(crypto)?,
                verifying_key: self.pkp.verifying_key().serialize().map_err(crypto)?,
            }));
        }
        Ok(())
    }
}
