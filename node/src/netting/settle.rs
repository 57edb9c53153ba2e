//! The checks before this node signs a round's settlement batch (`SettleRequest`).
//!
//! The daemon has already admitted the signing session (roster coordinator, fresh
//! session id, capacity). Then, in order: the round is held here; the envelope's
//! key and suite are the round's; the round is closed here; the round's client is
//! still allowed netting on the key by the policy in force; this node's policy
//! signs settlements with the round's key (`[netting] settlement_keys`,
//! `settlement_not_allowed`); fewer than n − t + 1 settlement sessions were started
//! for the round (`too_many_attempts`, counted in the round's keystore record so a
//! restart does not reset it); the node rebuilds the batch itself from the views
//! and its own commitments (invariant 10) and its message must be the one asked for
//! (`settlement_mismatch`). The attempt is stored and `settlement_approved`
//! {round, session} with `message` is audited before the daemon starts the signer,
//! whose share is released only after its `share_contributed` record.

use quorate_protocol::{
    netting::{PublicOutputs, RoundId},
    Envelope, KeyId,
};
use rand_core::OsRng;
use serde_json::json;

use super::{admit, store, Code, Ctx, Netting, NettingError};
use crate::{audit::AuditKind, recovery::message_hash};

/// A settlement this node agreed to sign: what the signer signs and what its
/// audit records cite.
#[derive(Debug, Clone)]
pub struct SettleApproved {
    /// The key to sign with (the round's).
    pub key_id: KeyId,
    /// The 32-byte settlement message.
    pub message: Vec<u8>,
    /// Cited as the request: the round definition's digest (what the client signed).
    pub request_hash: [u8; 32],
    /// SHA-256 of the message.
    pub message_hash: [u8; 32],
}

impl Netting {
    /// Checks a settlement signing request (module docs); on success the attempt
    /// is counted, stored and audited.
    pub fn on_settle(
        &mut self,
        ctx: &mut Ctx<'_>,
        env: &Envelope,
        id: &RoundId,
        views: &[PublicOutputs],
        message: &[u8],
    ) -> Result<SettleApproved, NettingError> {
        if *ctx.audit_failed {
            return Err(NettingError::audit_unavailable());
        }
        admit::from_coordinator(ctx.roster, env)?;
        let state = self.state.clone();
        let live = self.live(id)?;
        let spec = live.spec().clone();
        let key = admit::held_key(ctx, &spec)?;
        if env.key != spec.key || env.suite != key.suite {
            return Err(NettingError::refused(
                Code::InvalidRound,
                format!("envelope key or suite does not match round {id}"),
            ));
        }
        if live.closed.is_none() {
            return Err(NettingError::refused(
                Code::InvalidRound,
                format!("round {id} is not closed here yet"),
            ));
        }
        // The creating client must still be allowed (a reload may have revoked it).
        let client = ctx.policy.client_by_key(&live.authorization.client);
        if !client.is_some_and(|c| c.netting && c.keys.contains(&spec.key)) {
            return Err(NettingError::refused(
                Code::NotAuthorized,
                format!(
                    "round {id}'s client {} may no longer run netting rounds on key {}",
                    hex::encode(live.authorization.client),
                    spec.key
                ),
            ));
        }
        if !ctx.policy.settlement_allowed(&spec.key) {
            return Err(NettingError::refused(
                Code::SettlementNotAllowed,
                format!(
                    "this node's policy does not sign settlements with key {}",
                    spec.key
                ),
            ));
        }
        let bound = u32::try_from(key.members.len())
            .unwrap_or(u32::MAX)
            .saturating_sub(u32::from(key.threshold))
            .saturating_add(1);
        if live.settle_attempts >= bound {
            return Err(NettingError::refused(
                Code::TooManyAttempts,
                format!(
                    "round {id}'s settlement was already signed in {bound} sessions (n − t + 1)"
                ),
            ));
        }
        let (batch, culprits) = live.round.settlement(views, &mut OsRng).map_err(|e| {
            NettingError::refused(Code::SettlementMismatch, format!("round {id}: {e}"))
        })?;
        if !culprits.is_empty() {
            tracing::warn!(round = %id, ?culprits, "nodes whose public outputs failed verification");
        }
        let built = batch.message();
        if message != built.as_slice() {
            return Err(NettingError::refused(
                Code::SettlementMismatch,
                format!("the message is not the settlement batch this node builds for round {id}"),
            ));
        }
        let attempt = live.settle_attempts + 1;
        store::put_settle_attempts(&state, live, attempt)?;
        live.settle_attempts = attempt;
        ctx.record(
            AuditKind::SettlementApproved {
                round: id.to_string(),
                session: env.session,
            },
            json!({
                "message": hex::encode(built),
                "attempt": attempt,
                "key_id": spec.key.to_string(),
            }),
        )?;
        tracing::info!(round = %id, session = %env.session, attempt, "settlement approved");
        Ok(SettleApproved {
            key_id: spec.key,
            message: built.to_vec(),
            request_hash: spec.digest(),
            message_hash: message_hash(&built),
        })
    }
}
