//! Admission of incoming envelopes (invariant 2): context binding, membership,
//! signature, duplicate suppression and equivocation detection. Shared by every
//! state machine so the checks are written once.

use std::collections::BTreeMap;

use crate::{
    error::ProtocolError,
    ids::{KeyId, NodeId, SessionId},
    suite::Ciphersuite,
    wire::{Envelope, Round},
};

/// Counters of what an inbox dropped, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InboxStats {
    /// Messages accepted.
    pub accepted: u64,
    /// Identical re-deliveries ignored.
    pub duplicates: u64,
    /// Messages rejected (bad signature, wrong context, unknown sender, wrong round).
    pub rejected: u64,
}

/// Whether an admitted message is new.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    /// First message for its (round, sender).
    New,
    /// Byte-identical to one already accepted: ignore.
    Duplicate,
}

pub(crate) struct Inbox {
    suite: Ciphersuite,
    key: KeyId,
    session: SessionId,
    seen: BTreeMap<(Round, NodeId), [u8; 32]>,
    pub(crate) stats: InboxStats,
}

impl Inbox {
    pub(crate) fn new(suite: Ciphersuite, key: KeyId, session: SessionId) -> Self {
        Self {
            suite,
            key,
            session,
            seen: BTreeMap::new(),
            stats: InboxStats::default(),
        }
    }

    /// Admits `env` if it is bound to this session, comes from an allowed sender for
    /// its round, is validly signed, and is not a conflicting second message.
    pub(crate) fn admit(
        &mut self,
        env: &Envelope,
        allowed_rounds: &[Round],
        sender_allowed: impl Fn(&NodeId) -> bool,
    ) -> Result<Admit, ProtocolError> {
        let result = self.check(env, allowed_rounds, sender_allowed);
        match &result {
            Ok(Admit::New) => self.stats.accepted += 1,
            Ok(Admit::Duplicate) => self.stats.duplicates += 1,
            Err(ProtocolError::Equivocation { .. }) => {}
            Err(_) => self.stats.rejected += 1,
        }
        result
    }

    fn check(
        &mut self,
        env: &Envelope,
        allowed_rounds: &[Round],
        sender_allowed: impl Fn(&NodeId) -> bool,
    ) -> Result<Admit, ProtocolError> {
        if env.version != crate::wire::PROTOCOL_VERSION {
            return Err(ProtocolError::UnsupportedVersion(env.version));
        }
        if env.round != env.payload.round() {
            return Err(ProtocolError::Malformed("round does not match payload"));
        }
        if env.session != self.session {
            return Err(ProtocolError::WrongContext("session id"));
        }
        if env.key != self.key {
            return Err(ProtocolError::WrongContext("key id"));
        }
        if env.suite != self.suite {
            return Err(ProtocolError::WrongContext("ciphersuite"));
        }
        if !sender_allowed(&env.sender) {
            return Err(ProtocolError::UnknownSender(env.sender));
        }
        env.verify()?;
        if !allowed_rounds.contains(&env.round) {
            return Err(ProtocolError::UnexpectedRound { got: env.round });
        }
        let hash = env.payload_hash();
        match self.seen.get(&(env.round, env.sender)) {
            Some(prev) if *prev == hash => Ok(Admit::Duplicate),
            Some(_) => Err(ProtocolError::Equivocation {
                culprit: env.sender,
                round: env.round,
            }),
            None => {
                self.seen.insert((env.round, env.sender), hash);
                Ok(Admit::New)
            }
        }
    }
}
