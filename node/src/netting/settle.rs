//! The checks before this node signs a round's settlement batch (`SettleRequest`).
//!
//! The daemon has already admitted the signing session (roster coordinator, fresh
//! session id, capacity). Then, in order: the round is held here; the envelope's
//! key and suite are the round's; the round is closed here; the round's client is
//! still allowed netting on the key by the policy in force and, if its policy has
//! `netting_parties`, they still list every party with its key (`not_authorized`);
//! this node's policy signs settlements with the round's key (`[netting]
//! settlement_keys`, `settlement_not_allowed`); fewer than n − t + 1 settlement
//! sessions were started for the round (`too_many_attempts`, counted in the round's
//! keystore record so a restart does not reset it); the node rebuilds the batch
//! itself from the views and its own commitments (invariant 10) and its message
//! must be the one asked for (`settlement_mismatch`); every transfer is within
//! this node's `[netting]` limits (`settlement_limit`, audited as
//! `settlement_refused` {round} with `rule`, `detail` and `session`, at most 8 per
//! round). Committee members named as culprits (their validly signed view carries
//! a public share that fails against the commitments) are counted in
//! `quorate_settlement_culprits_total{label=<node>}`, logged by name and, once the
//! attempt is admitted, quarantined by the daemon (`peer_quarantined`).
//! The attempt is stored and `settlement_approved`
//! {round, session} with `message` is audited before the daemon starts the signer,
//! whose share is released only after its `share_contributed` record.

use quorate_protocol::{
    netting::{PublicOutputs, RoundId, SettlementBatch},
    Envelope, KeyId, NodeId,
};
use rand_core::OsRng;
use serde_json::json;

use super::{admit, store, Code, Ctx, Netting, NettingError, SETTLE_REFUSAL_BUDGET};
use crate::{
    audit::AuditKind,
    metrics::Label,
    policy::{Policy, TransferLimit},
    recovery::message_hash,
};

/// Every transfer of the batch within this node's `[netting]` limits: |amount| at
/// most the asset's `max_transfer` (else `default_max_transfer`); an asset with
/// neither is refused only with `require_limits = true`. The batch is public, so
/// the refusal names party, asset, amount and limit.
fn within_limits(
    policy: &Policy,
    id: &RoundId,
    batch: &SettlementBatch,
) -> Result<(), NettingError> {
    for t in &batch.transfers {
        match policy.settlement_transfer_limit(&t.asset) {
            TransferLimit::Unlimited => {}
            TransferLimit::Max(max) if t.amount.unsigned_abs() <= max => {}
            TransferLimit::Max(max) => {
                return Err(NettingError::refused(
                    Code::SettlementLimit,
                    format!(
                        "round {id}: transfer of {} {} for party {:?} exceeds this node's \
                         limit {max} (|amount|, [netting] max_transfer)",
                        t.amount, t.asset, t.party
                    ),
                ))
            }
            TransferLimit::Unlisted => {
                return Err(NettingError::refused(
                    Code::SettlementLimit,
                    format!(
                        "round {id}: asset {:?} (party {:?}) has no settlement limit here \
                         and [netting] require_limits = true",
                        t.asset, t.party
                    ),
                ))
            }
        }
    }
    Ok(())
}

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
    /// Committee members whose validly signed public shares failed their
    /// commitments: proven misbehaviour, for the daemon to quarantine.
    pub culprits: Vec<NodeId>,
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
        if spec.limits.is_some() && !super::limits::covered(live) {
            return Err(NettingError::refused(
                Code::NotCovered,
                format!(
                    "round {id}'s limit checks have not found every party covered here: it is not settled"
                ),
            ));
        }
        // The creating client must still be allowed (a reload may have revoked it),
        // with the parties its policy lists now.
        let client = ctx
            .policy
            .client_by_key(&live.authorization.client)
            .filter(|c| c.netting && c.keys.contains(&spec.key))
            .ok_or_else(|| {
                NettingError::refused(
                    Code::NotAuthorized,
                    format!(
                        "round {id}'s client {} may no longer run netting rounds on key {}",
                        hex::encode(live.authorization.client),
                        spec.key
                    ),
                )
            })?;
        admit::parties_allowed(client, &spec)?;
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
        let mut proven = Vec::new();
        for c in &culprits {
            // Only committee members get a label: a forged view may name any id.
            if spec.committee.get(c).is_some() {
                proven.push(*c);
                ctx.metrics
                    .settlement_culprits
                    .get_or_create(&Label {
                        label: c.to_string(),
                    })
                    .inc();
                tracing::warn!(round = %id, node = %c, "settlement culprit: this node's signed public share fails its commitment");
            } else {
                tracing::warn!(round = %id, node = %c, "settlement view names a node outside the round's committee");
            }
        }
        let built = batch.message();
        if message != built.as_slice() {
            return Err(NettingError::refused(
                Code::SettlementMismatch,
                format!("the message is not the settlement batch this node builds for round {id}"),
            ));
        }
        if let Err(e) = within_limits(ctx.policy, id, &batch) {
            if live.settle_refusals_recorded < SETTLE_REFUSAL_BUDGET {
                live.settle_refusals_recorded += 1;
                if let NettingError::Refused { code, detail } = &e {
                    ctx.record(
                        AuditKind::SettlementRefused {
                            round: id.to_string(),
                        },
                        json!({
                            "rule": code.name(),
                            "detail": detail,
                            "session": env.session.to_string(),
                        }),
                    )?;
                }
            }
            return Err(e);
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
            culprits: proven,
        })
    }
}

#[cfg(test)]
mod tests {
    use quorate_protocol::netting::Transfer;

    use super::*;

    fn batch(transfers: &[(&str, &str, i64)]) -> SettlementBatch {
        SettlementBatch {
            round: RoundId([1; 16]),
            spec_digest: [2; 32],
            inputs_digest: [3; 32],
            key: KeyId([4; 16]),
            transfers: transfers
                .iter()
                .map(|(party, asset, amount)| Transfer {
                    party: (*party).into(),
                    asset: (*asset).into(),
                    amount: *amount,
                })
                .collect(),
        }
    }

    fn policy(netting: &str) -> Policy {
        Policy::from_toml(&format!(
            "version = 1\n[netting]\nsettlement_keys = [\"*\"]\n{netting}\n"
        ))
        .expect("policy")
    }

    fn refusal(r: Result<(), NettingError>) -> String {
        match r {
            Err(NettingError::Refused {
                code: Code::SettlementLimit,
                detail,
            }) => detail,
            other => panic!("expected settlement_limit, got {other:?}"),
        }
    }

    #[test]
    fn transfers_are_bounded_per_asset_by_absolute_amount() {
        let id = RoundId([1; 16]);
        let b = batch(&[
            ("desk-a", "USD", 500),
            ("desk-b", "USD", -500),
            ("desk-a", "EUR", 7),
        ]);
        // No limits at all: everything signs (the default).
        within_limits(&policy(""), &id, &b).expect("unlimited");
        // |amount| at the limit passes; one above is refused naming party and asset.
        within_limits(&policy("max_transfer = { USD = 500 }"), &id, &b).expect("at the limit");
        let p = policy("max_transfer = { USD = 499 }");
        let detail = refusal(within_limits(&p, &id, &b));
        assert!(
            detail.contains("desk-a") && detail.contains("USD") && detail.contains("499"),
            "{detail}"
        );
        // A negative transfer counts by its absolute value.
        let neg = batch(&[("desk-b", "USD", -501)]);
        let detail = refusal(within_limits(
            &policy("max_transfer = { USD = 500 }"),
            &id,
            &neg,
        ));
        assert!(detail.contains("desk-b"), "{detail}");
        let min = batch(&[("desk-b", "USD", i64::MIN)]);
        refusal(within_limits(
            &policy(&format!("max_transfer = {{ USD = {} }}", i64::MAX)),
            &id,
            &min,
        ));
        // The default applies to unlisted assets.
        let p = policy("max_transfer = { USD = 1000 }\ndefault_max_transfer = 6");
        let detail = refusal(within_limits(&p, &id, &b));
        assert!(
            detail.contains("EUR") && detail.contains("desk-a"),
            "{detail}"
        );
        // require_limits: an asset with no limit and no default is refused.
        let p = policy("max_transfer = { USD = 1000 }\nrequire_limits = true");
        let detail = refusal(within_limits(&p, &id, &b));
        assert!(
            detail.contains("EUR") && detail.contains("require_limits"),
            "{detail}"
        );
        let p = policy("max_transfer = { USD = 1000, EUR = 7 }\nrequire_limits = true");
        within_limits(&p, &id, &b).expect("every asset listed");
    }
}
