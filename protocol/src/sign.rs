//! Signer side of FROST signing.
//!
//! Round 1: generate nonces, send commitments to the coordinator. Round 2: check
//! the coordinator's signing package carries our unaltered commitment and exactly
//! the message (and tweak) this node approved, then sign. The nonces are *moved out*
//! of the machine by signing and zeroized (invariant 1): any later, different signing
//! package for the same session is refused with [`ProtocolError::NonceReused`].
//!
//! A presigned session ([`Signer::presigned`], see [`crate::presign`]) starts with
//! nonces taken from the node's pool instead of round 1: it answers one
//! [`Payload::PresignedSign`] with its share, after the same round-2 checks plus
//! the presigned id and the message the envelope carries.

use std::sync::Arc;

use frost_core::{
    round1::{self, SigningCommitments, SigningNonces},
    round2, SigningPackage,
};
use rand_core::CryptoRngCore;

#[cfg(feature = "round2-cache")]
use crate::round2_cache::{self, Round2Cache};
use crate::{
    error::{Fault, ProtocolError},
    identity::NodeIdentity,
    ids::{NodeId, SessionId},
    inbox::{Admit, Inbox, InboxStats},
    key::KeyShare,
    machine::{Input, Output, Status, TimerId, Timestamp},
    presign::pool::{NoncesInner, PresignedNonces, Taken},
    suite::{identifier, Ciphersuite, Suite},
    wire::{Envelope, Payload, Round},
};

/// What is being signed: the message and, for secp256k1-tr, an optional merkle root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignTarget {
    /// Bytes to sign.
    pub message: Vec<u8>,
    /// BIP341 script-tree merkle root (secp256k1-tr only).
    pub tweak: Option<[u8; 32]>,
}

/// Parameters of one signing session, as approved by this node.
#[derive(Debug, Clone)]
pub struct SignerConfig {
    /// Session id chosen by the coordinator.
    pub session: SessionId,
    /// The coordinator: the only node this session accepts packages from.
    pub coordinator: NodeId,
    /// What this node approved to sign (after its own policy checks).
    pub target: SignTarget,
    /// Milliseconds until the session gives up on the coordinator.
    pub timeout_ms: u64,
}

/// What a signer session ends with: the share it contributed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareSent {
    /// Serialized signature share (public once sent).
    pub share: Vec<u8>,
}

/// A signer state machine for any supported ciphersuite.
pub struct Signer {
    inner: Inner,
}

crate::suite::suite_inner!(Session);

impl Signer {
    /// Creates a signer session for `share`.
    ///
    /// # Security
    /// Holds the secret key share for the session's lifetime (zeroized on drop).
    pub fn new(
        identity: Arc<NodeIdentity>,
        share: &KeyShare,
        config: SignerConfig,
    ) -> Result<Self, ProtocolError> {
        let inner =
            crate::suite::new_inner!(share.public.suite, Session::new(identity, share, config)?);
        Ok(Self { inner })
    }

    /// Creates a presigned signer session for `share`, holding `nonces` taken from
    /// the node's [`NoncePool`](crate::presign::NoncePool) for the
    /// [`Payload::PresignedSign`] that named them. Its one input is that message
    /// (`Input::Message`): it runs the checks of round 2 (tweak; its commitment
    /// unaltered in the package; the approved message, in the envelope and in the
    /// package; every signer a member; the package decodes), checks that the
    /// envelope's `(epoch, index)` are those of `nonces`, and answers
    /// [`Payload::SignShare`] and `Output::Done` like [`Signer::new`]'s session.
    /// `Input::Start` is refused with [`ProtocolError::InvalidState`] (a driver
    /// bug; fatal, so the nonces are dropped). The session arms no timer.
    ///
    /// # Security
    /// The nonces are consumed by the one signature or dropped (zeroized) with the
    /// session, or on any fatal refusal. A second, different package is refused:
    /// [`ProtocolError::NonceReused`] after the signature, or
    /// [`ProtocolError::Equivocation`] by the coordinator after a refused first
    /// package. Fails (dropping the nonces) if they belong to another key or suite.
    pub fn presigned(
        identity: Arc<NodeIdentity>,
        share: &KeyShare,
        config: SignerConfig,
        nonces: PresignedNonces,
    ) -> Result<Self, ProtocolError> {
        if nonces.key() != share.public.key_id || nonces.suite() != share.public.suite {
            return Err(ProtocolError::InvalidParameters(format!(
                "presigned nonces of key {} ({}) given for key {} ({})",
                nonces.key(),
                nonces.suite(),
                share.public.key_id,
                share.public.suite
            )));
        }
        let id = (nonces.epoch(), nonces.index());
        let inner = match nonces.inner {
            NoncesInner::Secp256k1(t) => {
                Inner::Secp256k1(Session::presigned(identity, share, config, t, id)?)
            }
            NoncesInner::Secp256k1Tr(t) => {
                Inner::Secp256k1Tr(Session::presigned(identity, share, config, t, id)?)
            }
            NoncesInner::Ed25519(t) => {
                Inner::Ed25519(Session::presigned(identity, share, config, t, id)?)
            }
        };
        Ok(Self { inner })
    }

    /// Feeds one input.
    ///
    /// # Security
    /// Generates and consumes the session's signing nonces. A nonce never leaves this
    /// machine and is used at most once.
    pub fn handle(
        &mut self,
        now: Timestamp,
        input: Input,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Vec<Output<ShareSent>>, ProtocolError> {
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

    /// Shares the public part of round 2 with other signers of the same packages in
    /// this process (see [`Round2Cache`]); signer nodes never need this (it exists
    /// only with the crate's `round2-cache` feature).
    #[cfg(feature = "round2-cache")]
    pub fn with_round2_cache(mut self, cache: Round2Cache) -> Self {
        crate::suite::with_inner!(&mut self.inner, s => s.cache = Some(cache));
        self
    }
}

struct Session<C: Suite> {
    identity: Arc<NodeIdentity>,
    key: frost_core::keys::KeyPackage<C>,
    share_public: crate::key::GroupPublic,
    members: std::collections::BTreeSet<frost_core::Identifier<C>>,
    config: SignerConfig,
    inbox: Inbox,
    status: Status,
    nonces: Option<SigningNonces<C>>,
    commitments: Option<SigningCommitments<C>>,
    /// `(epoch, index)` of presigned nonces: the session accepts only the
    /// `PresignedSign` naming them.
    presign: Option<([u8; 16], u64)>,
    used: bool,
    #[cfg(feature = "round2-cache")]
    cache: Option<Round2Cache>,
}

impl<C: Suite> Session<C> {
    fn new(
        identity: Arc<NodeIdentity>,
        share: &KeyShare,
        config: SignerConfig,
    ) -> Result<Self, ProtocolError> {
        if config.target.tweak.is_some() && C::SUITE != Ciphersuite::Secp256k1Tr {
            return Err(ProtocolError::InvalidParameters(format!(
                "ciphersuite {} does not support tweaks",
                C::SUITE
            )));
        }
        let members = share
            .public
            .members
            .values()
            .map(|i| identifier::<C>(*i))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            members,
            key: share.key_package::<C>()?,
            inbox: Inbox::new(C::SUITE, share.public.key_id, config.session),
            share_public: share.public.clone(),
            identity,
            config,
            status: Status::Running,
            nonces: None,
            commitments: None,
            presign: None,
            used: false,
            #[cfg(feature = "round2-cache")]
            cache: None,
        })
    }

    fn presigned(
        identity: Arc<NodeIdentity>,
        share: &KeyShare,
        config: SignerConfig,
        taken: Taken<C>,
        id: ([u8; 16], u64),
    ) -> Result<Self, ProtocolError> {
        let mut session = Self::new(identity, share, config)?;
        session.nonces = Some(taken.nonces);
        session.commitments = Some(taken.commitments);
        session.presign = Some(id);
        Ok(session)
    }

    fn envelope(&self, payload: Payload) -> Envelope {
        Envelope::seal(
            &self.identity,
            C::SUITE,
            self.share_public.key_id,
            self.config.session,
            payload,
        )
    }

    fn handle(
        &mut self,
        now: Timestamp,
        input: Input,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Vec<Output<ShareSent>>, ProtocolError> {
        let result = self.step(now, input, rng);
        if let Err(e) = &result {
            if e.is_fatal() && self.status == Status::Running {
                self.status = Status::Failed;
            }
            if e.is_fatal() {
                // Fail closed: whatever went wrong, these nonces are never used.
                self.nonces = None;
            }
        }
        result
    }

    fn step(
        &mut self,
        now: Timestamp,
        input: Input,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Vec<Output<ShareSent>>, ProtocolError> {
        match input {
            Input::Start => {
                if self.presign.is_some() {
                    return Err(ProtocolError::InvalidState(
                        "a presigned signer is not started; feed it the PresignedSign",
                    ));
                }
                if self.commitments.is_some() || self.used {
                    return Err(ProtocolError::InvalidState("signer already started"));
                }
                let (nonces, commitments) = round1::commit(self.key.signing_share(), rng);
                let bytes = commitments
                    .serialize()
                    .map_err(|e| ProtocolError::Crypto(e.to_string()))?;
                self.nonces = Some(nonces);
                self.commitments = Some(commitments);
                Ok(vec![
                    Output::SetTimer {
                        timer: TimerId::Deadline,
                        at: now.plus_ms(self.config.timeout_ms),
                    },
                    Output::Send {
                        to: self.config.coordinator,
                        msg: self.envelope(Payload::SignCommit { commitments: bytes }),
                    },
                ])
            }
            Input::Timeout(TimerId::Deadline) => {
                if self.status != Status::Running {
                    return Ok(Vec::new());
                }
                Err(ProtocolError::Aborted {
                    culprits: vec![self.config.coordinator],
                    fault: Fault::Timeout,
                })
            }
            Input::Message(env) => {
                let coordinator = self.config.coordinator;
                let round = if self.presign.is_some() {
                    Round::PresignedSign
                } else {
                    Round::SignPackage
                };
                match self.inbox.admit(&env, &[round], |n| *n == coordinator) {
                    Ok(Admit::Duplicate) => return Ok(Vec::new()),
                    Ok(Admit::New) => {}
                    // A second, different package after we signed: refuse (invariant 1).
                    Err(ProtocolError::Equivocation { .. }) if self.used => {
                        return Err(ProtocolError::NonceReused)
                    }
                    Err(e) => return Err(e),
                }
                if self.used || self.status != Status::Running {
                    return Err(ProtocolError::NonceReused);
                }
                let (package, tweak) = match (env.payload, self.presign) {
                    (Payload::SignPackage { package, tweak }, None) => (package, tweak),
                    (
                        Payload::PresignedSign {
                            message,
                            tweak,
                            package,
                            epoch,
                            index,
                            ..
                        },
                        Some(mine),
                    ) => {
                        if (epoch, index) != mine {
                            return Err(ProtocolError::RequestMismatch(
                                "presigned id differs from this session's nonces",
                            ));
                        }
                        if message != self.config.target.message {
                            return Err(ProtocolError::RequestMismatch(
                                "message differs from the approved request",
                            ));
                        }
                        (package, tweak)
                    }
                    _ => return Err(ProtocolError::UnexpectedRound { got: env.round }),
                };
                let share = self.sign(&package, tweak)?;
                self.status = Status::Done;
                Ok(vec![
                    Output::Send {
                        to: self.config.coordinator,
                        msg: self.envelope(Payload::SignShare {
                            share: share.clone(),
                        }),
                    },
                    Output::Done(ShareSent { share }),
                ])
            }
        }
    }

    fn sign(&mut self, bytes: &[u8], tweak: Option<[u8; 32]>) -> Result<Vec<u8>, ProtocolError> {
        if tweak != self.config.target.tweak {
            return Err(ProtocolError::RequestMismatch(
                "tweak differs from the approved request",
            ));
        }
        let coordinator = self.config.coordinator;
        let decode = |b: &[u8]| {
            SigningPackage::<C>::deserialize(b)
                .map_err(|_| ProtocolError::aborted(coordinator, Fault::InvalidElement))
        };
        let key = C::tweak_key_package(self.key.clone(), tweak.as_ref())?;
        // With a cache, the public part of round 2 (decoded package, binding factors,
        // group commitment, challenge) may come from another signer of this package.
        #[cfg(feature = "round2-cache")]
        if let (Some(cache), Some(nonces)) = (&self.cache, &self.nonces) {
            let public = cache.public::<C>(bytes, tweak.as_ref(), &key, nonces, decode)?;
            self.check_package(&public.package)?;
            let nonces = self.take_nonces()?;
            let share = match round2_cache::sign_with(&public, &nonces, &key)? {
                Some(share) => share,
                None => round2::sign(&public.package, &nonces, &key)
                    .map_err(|e| ProtocolError::Crypto(e.to_string()))?,
            };
            drop(nonces);
            return Ok(share.serialize());
        }
        let package = decode(bytes)?;
        self.check_package(&package)?;
        let nonces = self.take_nonces()?;
        let share = round2::sign(&package, &nonces, &key)
            .map_err(|e| ProtocolError::Crypto(e.to_string()))?;
        drop(nonces);
        Ok(share.serialize())
    }

    /// Consumes the nonces: from here on they exist only in the caller's scope.
    fn take_nonces(&mut self) -> Result<SigningNonces<C>, ProtocolError> {
        let nonces = self.nonces.take().ok_or(ProtocolError::NonceReused)?;
        self.used = true;
        Ok(nonces)
    }

    /// Checks a signing package before any nonce is touched: our commitment is in it
    /// unaltered, it signs the message this node approved, and every signer is a
    /// member. (The tweak is checked before the package is looked at.)
    fn check_package(&self, package: &SigningPackage<C>) -> Result<(), ProtocolError> {
        let coordinator = self.config.coordinator;
        let mine = self
            .commitments
            .as_ref()
            .ok_or(ProtocolError::InvalidState(
                "signing package before commitments",
            ))?;
        let me = *self.key.identifier();
        if package.signing_commitments().get(&me) != Some(mine) {
            return Err(ProtocolError::aborted(
                coordinator,
                Fault::CommitmentAltered,
            ));
        }
        if package.message() != &self.config.target.message {
            return Err(ProtocolError::RequestMismatch(
                "message differs from the approved request",
            ));
        }
        if !package
            .signing_commitments()
            .keys()
            .all(|id| self.members.contains(id))
        {
            return Err(ProtocolError::aborted(coordinator, Fault::InvalidElement));
        }
        Ok(())
    }
}
