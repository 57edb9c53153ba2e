//! Node side of MPC netting: the live rounds this node holds, keyed by round id,
//! and the handlers the daemon's dispatcher calls for the netting payloads.
//!
//! Files follow the flow: `admit` (the named checks a `NettingRound` passes),
//! `bundle` (a party's input bundle), `close` (closing a round and delivering this
//! node's signed outputs), `settle` (the checks before a settlement batch is
//! signed), `store` (keystore records, restored at start-up) and `error` (the
//! `netting:<code>` refusals).
//!
//! Every refusal concerns one round or one bundle only (invariant 11): nothing a
//! client, party or coordinator sends stops the node serving other rounds or
//! requests. Only a local fault (audit log, keystore) is reported as such. No
//! share or amount ever appears in a log line, audit record or error.

mod admit;
mod bundle;
mod close;
mod error;
mod limits;
mod settle;
mod store;

use std::collections::BTreeMap;

use quorate_protocol::{
    netting::{
        limits::run::NodeLimits, round::RoundAuthorization, session::NodeRound, NodeOutputs,
        RoundId, RoundSpec,
    },
    wire::frame::Ack,
    Envelope, KeyId, NodeIdentity, Payload,
};
use serde_json::Value;

use crate::{
    audit::{AuditKind, AuditLog},
    config::LimitsConfig,
    keystore::{StateStore, StoredKey},
    metrics::Metrics,
    policy::Policy,
    roster::Roster,
};

pub use error::{Code, NettingError};
pub use settle::SettleApproved;

/// What the daemon lends a handler: read access to its identity, roster, policy
/// and keys, and the audit log (whose failure latches the node, invariant 6).
pub struct Ctx<'a> {
    /// This node.
    pub identity: &'a NodeIdentity,
    /// Roster (coordinators, members).
    pub roster: &'a Roster,
    /// Policy in force.
    pub policy: &'a Policy,
    /// Keys this node holds shares of.
    pub keys: &'a BTreeMap<KeyId, StoredKey>,
    /// Audit log.
    pub audit: &'a mut AuditLog,
    /// Set when the log itself fails: the node refuses everything from then on.
    pub audit_failed: &'a mut bool,
    /// Wall-clock time, Unix seconds.
    pub now_unix: u64,
    /// Threat signals (settlement culprits).
    pub metrics: &'a Metrics,
}

impl Ctx<'_> {
    /// Appends a record an action depends on; on error the action must not happen.
    fn record(&mut self, kind: AuditKind, details: Value) -> Result<(), NettingError> {
        if *self.audit_failed {
            return Err(NettingError::audit_unavailable());
        }
        match self.audit.append(kind, details) {
            Ok(_) => Ok(()),
            Err(e) if e.is_log_failure() => {
                tracing::error!(error = %e, "audit log write failed: refusing to act from now on");
                *self.audit_failed = true;
                Err(NettingError::audit_unavailable())
            }
            Err(e) => Err(NettingError::Audit {
                reason: "audit_refused",
                detail: format!("this netting message cannot be recorded: {e}"),
            }),
        }
    }
}

/// What a handler produced: the answer to the sender, and envelopes to deliver to
/// it afterwards (this node's outputs after a close).
#[derive(Debug)]
pub struct Handled {
    /// The answer.
    pub ack: Ack,
    /// Envelopes for the sending coordinator, each its own `Frame::Deliver`.
    pub deliver: Vec<Envelope>,
}

impl Handled {
    fn ack(ack: Ack) -> Self {
        Self {
            ack,
            deliver: Vec::new(),
        }
    }
}

/// A round after close: the inputs it was closed on and this node's signed outputs
/// (re-sent on a repeated close with the same inputs).
struct Closed {
    inputs: Vec<Option<[u8; 32]>>,
    outputs: NodeOutputs,
}

/// One round this node holds.
struct LiveRound {
    round: NodeRound,
    authorization: RoundAuthorization,
    closed: Option<Closed>,
    /// Settlement signing sessions started for this round (bounded by n − t + 1,
    /// persisted before each starts).
    settle_attempts: u32,
    /// `netting_bundle_refused` records written for this round (bounded, so a
    /// coordinator replaying bad bundles cannot fill the disk).
    refusals_recorded: u32,
    /// `settlement_refused` records written for this round (bounded likewise).
    settle_refusals_recorded: u32,
    /// The limit-check attempt in progress or finished (limit-checked rounds).
    limits: Option<NodeLimits>,
}

impl LiveRound {
    fn spec(&self) -> &RoundSpec {
        self.round.spec()
    }

    /// Refusal records allowed per round: a few per party.
    fn refusal_budget(&self) -> u32 {
        u32::try_from(self.spec().parties.len())
            .unwrap_or(u32::MAX)
            .saturating_mul(4)
            .saturating_add(16)
    }
}

/// `settlement_refused` records written per round at most (further refusals are
/// answered but not recorded).
const SETTLE_REFUSAL_BUDGET: u32 = 8;

/// Every netting round this node holds, with their keystore records.
pub struct Netting {
    state: StateStore,
    max_rounds: usize,
    max_rounds_per_client: usize,
    horizon_secs: u64,
    retention_secs: u64,
    rounds: BTreeMap<RoundId, LiveRound>,
}

impl Netting {
    /// Restores the rounds and accepted bundles stored in the keystore (each bundle
    /// re-verified as of its signing time; a closed round is closed again on the
    /// same inputs). Fails only on a local fault (unreadable or undecodable record).
    pub fn load(
        state: StateStore,
        identity: &NodeIdentity,
        limits: &LimitsConfig,
    ) -> Result<Self, NettingError> {
        let rounds = store::restore(&state, identity)?;
        if !rounds.is_empty() {
            tracing::info!(rounds = rounds.len(), "netting rounds restored");
        }
        Ok(Self {
            state,
            max_rounds: limits.max_netting_rounds,
            max_rounds_per_client: limits.max_netting_rounds_per_client,
            horizon_secs: limits.max_netting_horizon_secs,
            retention_secs: limits.netting_retention_secs,
            rounds,
        })
    }

    /// Rounds held.
    pub fn len(&self) -> usize {
        self.rounds.len()
    }

    /// Whether no round is held.
    pub fn is_empty(&self) -> bool {
        self.rounds.is_empty()
    }

    /// Handles a netting payload other than `SettleRequest`.
    pub fn on_message(&mut self, ctx: &mut Ctx<'_>, env: &Envelope) -> Handled {
        if *ctx.audit_failed {
            return Handled::ack(NettingError::audit_unavailable().ack());
        }
        self.expire(ctx.now_unix);
        let result = match &env.payload {
            Payload::NettingRound {
                spec,
                authorization,
            } => self
                .on_round(ctx, env, spec, authorization)
                .map(Handled::ack),
            Payload::NettingBundle { header, sealed } => {
                self.on_bundle(ctx, env, header, sealed).map(Handled::ack)
            }
            Payload::NettingClose { round, inputs } => self.on_close(ctx, env, round, inputs),
            Payload::LimitStart { round, attempt } => {
                self.on_limit_start(ctx, env, round, *attempt)
            }
            Payload::LimitPart {
                round,
                attempt,
                step,
                part,
                parts,
                bytes,
            } => self.on_limit_part(ctx, env, round, *attempt, (*step, *part, *parts), bytes),
            _ => Err(NettingError::refused(
                Code::NotAuthorized,
                format!("a signer node does not take {:?} messages", env.round),
            )),
        };
        result.unwrap_or_else(|e| {
            tracing::warn!(round = ?env.round, error = %e, "netting message refused");
            Handled::ack(e.ack())
        })
    }

    /// Forgets rounds whose cut-off is more than the retention period ago, with
    /// their keystore records. A record that cannot be removed is retried later.
    pub fn expire(&mut self, now_unix: u64) {
        let retention = self.retention_secs;
        let due: Vec<RoundId> = self
            .rounds
            .iter()
            .filter(|(_, r)| r.spec().cutoff.saturating_add(retention) < now_unix)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            match self.state.remove_netting_round(&id.to_string()) {
                Ok(()) => {
                    self.rounds.remove(&id);
                    tracing::info!(round = %id, "netting round forgotten after its retention period");
                }
                Err(e) => {
                    tracing::error!(round = %id, error = %e, "cannot remove netting round records")
                }
            }
        }
    }

    fn live(&mut self, id: &RoundId) -> Result<&mut LiveRound, NettingError> {
        self.rounds.get_mut(id).ok_or_else(|| {
            NettingError::refused(Code::UnknownRound, format!("round {id} is not known here"))
        })
    }
}
