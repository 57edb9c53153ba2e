//! Admission of a `NettingRound`: the named checks it passes, in order, each
//! refusing the round on its own, then the round is stored, held and audited.
//!
//! 1. [`from_coordinator`]: the envelope is a roster coordinator's own.
//! 2. [`valid_spec`]: `RoundSpec::validate` (sizes, names, threshold, overflow).
//! 3. [`authorized`]: the client's signature over the spec digest verifies.
//! 4. [`held_key`]: this node holds a share of `spec.key`.
//! 5. [`netting_client`]: the client is in this node's policy with `netting = true`
//!    and may use the round's key and its suite; with `netting_parties` in its
//!    policy, every party is listed there with its `sign_key` ([`parties_allowed`]).
//! 6. [`envelope_context`]: session = `spec.session()`, key = `spec.key`, suite =
//!    the key's suite (invariant 2).
//! 7. [`committee_is_key`]: the committee is exactly the key's members, with their
//!    FROST indices, and matches the roster (index, seal key); this node is in it;
//!    the opening threshold is at least the key's.
//! 8. [`open_for_bundles`]: the cut-off has not passed and is at most
//!    `limits.max_netting_horizon_secs` (default 7 days) ahead.
//! 9. Same round again: the same definition is accepted (idempotent), another
//!    definition under a used id is refused.
//! 10. At most `limits.max_netting_rounds` rounds are held, and at most
//!     `limits.max_netting_rounds_per_client` of the creating client (`busy`).

use quorate_protocol::{
    netting::{round::RoundAuthorization, session::NodeRound, RoundSpec},
    wire::frame::Ack,
    Envelope, GroupPublic,
};
use serde_json::json;

use super::{store, Code, Ctx, LiveRound, Netting, NettingError};
use crate::{audit::AuditKind, policy::ClientPolicy, roster::Roster};

fn refuse(code: Code, detail: impl Into<String>) -> NettingError {
    NettingError::refused(code, detail)
}

/// Check 1.
pub(super) fn from_coordinator(roster: &Roster, env: &Envelope) -> Result<(), NettingError> {
    if roster.is_coordinator(&env.sender) {
        Ok(())
    } else {
        Err(refuse(
            Code::NotAuthorized,
            format!(
                "only a roster coordinator may send netting messages, not {}",
                env.sender
            ),
        ))
    }
}

/// Check 2.
fn valid_spec(spec: &RoundSpec) -> Result<(), NettingError> {
    spec.validate()
        .map_err(|e| refuse(Code::InvalidRound, format!("round {}: {e}", spec.id)))
}

/// Check 3.
fn authorized(spec: &RoundSpec, auth: &RoundAuthorization) -> Result<(), NettingError> {
    spec.verify_authorization(auth).map_err(|e| {
        refuse(
            Code::NotAuthorized,
            format!(
                "round {}: client {}: {e}",
                spec.id,
                hex::encode(auth.client)
            ),
        )
    })
}

/// Check 4.
fn netting_client<'a>(
    ctx: &'a Ctx<'_>,
    spec: &RoundSpec,
    auth: &RoundAuthorization,
    key: &GroupPublic,
) -> Result<&'a ClientPolicy, NettingError> {
    let client = ctx.policy.client_by_key(&auth.client).ok_or_else(|| {
        refuse(
            Code::NotAuthorized,
            format!(
                "client {} is not registered in this node's policy",
                hex::encode(auth.client)
            ),
        )
    })?;
    if !client.netting {
        return Err(refuse(
            Code::NotAuthorized,
            format!(
                "client {:?} may not create netting rounds (policy: netting = false)",
                client.name
            ),
        ));
    }
    if !client.keys.contains(&spec.key) {
        return Err(refuse(
            Code::NotAuthorized,
            format!("client {:?} may not use key {}", client.name, spec.key),
        ));
    }
    if !client.suites.contains(&key.suite) {
        return Err(refuse(
            Code::NotAuthorized,
            format!("client {:?} may not use {}", client.name, key.suite),
        ));
    }
    parties_allowed(client, spec)?;
    Ok(client)
}

/// Part of [`netting_client`], and again at settlement: with `netting_parties` in
/// the client's policy, every party of the round must be listed there with exactly
/// its `sign_key`.
/// Without it any parties are accepted: the creating client is trusted with the
/// parties' identities.
pub(super) fn parties_allowed(client: &ClientPolicy, spec: &RoundSpec) -> Result<(), NettingError> {
    let Some(allowed) = &client.netting_parties else {
        return Ok(());
    };
    for party in &spec.parties {
        match allowed.get(&party.name) {
            Some(key) if *key == party.sign_key => {}
            Some(_) => {
                return Err(refuse(
                    Code::NotAuthorized,
                    format!(
                        "round {}: party {:?} has another sign_key than client {:?}'s netting_parties lists",
                        spec.id, party.name, client.name
                    ),
                ))
            }
            None => {
                return Err(refuse(
                    Code::NotAuthorized,
                    format!(
                        "round {}: party {:?} is not in client {:?}'s netting_parties",
                        spec.id, party.name, client.name
                    ),
                ))
            }
        }
    }
    Ok(())
}

/// Check 5.
pub(super) fn held_key<'a>(
    ctx: &'a Ctx<'_>,
    spec: &RoundSpec,
) -> Result<&'a GroupPublic, NettingError> {
    ctx.keys
        .get(&spec.key)
        .map(|k| &k.share.public)
        .ok_or_else(|| {
            refuse(
                Code::InvalidRound,
                format!("this node holds no share of key {}", spec.key),
            )
        })
}

/// Check 6 (also for every later message of the round).
pub(super) fn envelope_context(
    spec: &RoundSpec,
    key: &GroupPublic,
    env: &Envelope,
) -> Result<(), NettingError> {
    let field = if env.session != spec.session() {
        "session"
    } else if env.key != spec.key {
        "key"
    } else if env.suite != key.suite {
        "suite"
    } else {
        return Ok(());
    };
    Err(refuse(
        Code::InvalidRound,
        format!("envelope {field} does not match round {}", spec.id),
    ))
}

/// Check 7.
fn committee_is_key(
    ctx: &Ctx<'_>,
    spec: &RoundSpec,
    key: &GroupPublic,
) -> Result<(), NettingError> {
    let members = spec.committee.members();
    if members.len() != key.members.len() {
        return Err(refuse(
            Code::InvalidRound,
            format!(
                "committee has {} members, key {} has {}",
                members.len(),
                spec.key,
                key.members.len()
            ),
        ));
    }
    for m in members {
        if key.members.get(&m.node) != Some(&m.index) {
            return Err(refuse(
                Code::InvalidRound,
                format!(
                    "committee member {} (index {}) is not a member of key {}",
                    m.node, m.index, spec.key
                ),
            ));
        }
        let in_roster = ctx
            .roster
            .by_node(&m.node)
            .and_then(|p| p.signer.as_ref())
            .is_some_and(|(index, _, seal)| *index == m.index && *seal == m.seal_key);
        if !in_roster {
            return Err(refuse(
                Code::InvalidRound,
                format!("committee member {} does not match the roster", m.node),
            ));
        }
    }
    let me = ctx.identity.node_id();
    if spec.committee.get(&me).is_none() {
        return Err(refuse(
            Code::InvalidRound,
            format!("this node ({me}) is not in round {}'s committee", spec.id),
        ));
    }
    if spec.threshold < key.threshold {
        return Err(refuse(
            Code::InvalidRound,
            format!(
                "threshold {} is below key {}'s threshold {}",
                spec.threshold, spec.key, key.threshold
            ),
        ));
    }
    Ok(())
}

/// Check 8.
fn open_for_bundles(
    spec: &RoundSpec,
    now_unix: u64,
    horizon_secs: u64,
) -> Result<(), NettingError> {
    if spec.cutoff < now_unix {
        return Err(refuse(
            Code::InvalidRound,
            format!(
                "round {}: cutoff {} has passed (now {now_unix})",
                spec.id, spec.cutoff
            ),
        ));
    }
    let latest = now_unix.saturating_add(horizon_secs);
    if spec.cutoff > latest {
        return Err(refuse(
            Code::InvalidRound,
            format!(
                "round {}: cutoff {} is more than {horizon_secs} s ahead (now {now_unix}; \
                 limits.max_netting_horizon_secs)",
                spec.id, spec.cutoff
            ),
        ));
    }
    Ok(())
}

impl Netting {
    /// Admits a client-authorised round (checks in the module docs).
    pub(super) fn on_round(
        &mut self,
        ctx: &mut Ctx<'_>,
        env: &Envelope,
        spec: &RoundSpec,
        auth: &RoundAuthorization,
    ) -> Result<Ack, NettingError> {
        from_coordinator(ctx.roster, env)?;
        valid_spec(spec)?;
        authorized(spec, auth)?;
        let key = held_key(ctx, spec)?;
        let client = netting_client(ctx, spec, auth, key)?.name.clone();
        envelope_context(spec, key, env)?;
        committee_is_key(ctx, spec, key)?;
        if let Some(live) = self.rounds.get(&spec.id) {
            return if live.spec() == spec {
                Ok(Ack::Accepted)
            } else {
                Err(refuse(
                    Code::InvalidRound,
                    format!(
                        "round id {} is already used with another definition",
                        spec.id
                    ),
                ))
            };
        }
        open_for_bundles(spec, ctx.now_unix, self.horizon_secs)?;
        if self.rounds.len() >= self.max_rounds {
            return Err(refuse(
                Code::Busy,
                format!(
                    "this node holds {} netting rounds (limit)",
                    self.rounds.len()
                ),
            ));
        }
        let of_client = self
            .rounds
            .values()
            .filter(|r| r.authorization.client == auth.client)
            .count();
        if of_client >= self.max_rounds_per_client {
            return Err(refuse(
                Code::Busy,
                format!(
                    "this node holds {of_client} netting rounds of client {client:?} \
                     (limits.max_netting_rounds_per_client = {})",
                    self.max_rounds_per_client
                ),
            ));
        }
        let round =
            NodeRound::new(spec.clone()).map_err(|e| refuse(Code::InvalidRound, e.to_string()))?;
        let live = LiveRound {
            round,
            authorization: auth.clone(),
            closed: None,
            settle_attempts: 0,
            refusals_recorded: 0,
            settle_refusals_recorded: 0,
            limits: None,
        };
        ctx.record(
            AuditKind::NettingRoundAccepted {
                round: spec.id.to_string(),
            },
            json!({
                "client": hex::encode(auth.client),
                "client_name": client,
                "spec_digest": hex::encode(spec.digest()),
                "key_id": spec.key.to_string(),
                "parties": spec.parties.len(),
                "cutoff": spec.cutoff,
            }),
        )?;
        store::put_round(&self.state, &live)?;
        tracing::info!(round = %spec.id, key = %spec.key, parties = spec.parties.len(), %client, "netting round accepted");
        self.rounds.insert(spec.id, live);
        Ok(Ack::Accepted)
    }
}
