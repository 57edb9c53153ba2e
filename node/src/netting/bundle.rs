//! A party's input bundle (`NettingBundle`): the header and this node's sealed box.
//!
//! Checks, in order: a roster coordinator sent it; the round is held here; the
//! envelope's context is the round's; the same bundle again is accepted
//! (idempotent, also after close); a second, different bundle from the party is
//! `bad_bundle`; after close `closed`; after the cut-off `late_bundle`; a record
//! larger than the keystore holds `bad_bundle`; then the bundle is verified
//! (signature, shape, this node's shares against the commitments). Only a bundle
//! that passes is stored (header and box, still sealed to this node) and then kept
//! in the round, so memory and keystore agree. Refusals of a held round's bundle are
//! audited (`netting_bundle_refused`, bounded per round); the round goes on.

use quorate_protocol::{
    netting::{session::Admitted, verify, BundleHeader},
    seal::SealedBox,
    wire::frame::Ack,
    Envelope,
};
use serde_json::json;

use super::{admit, store, Code, Ctx, Netting, NettingError};
use crate::audit::AuditKind;

impl Netting {
    /// Verifies, stores and keeps a party's bundle.
    pub(super) fn on_bundle(
        &mut self,
        ctx: &mut Ctx<'_>,
        env: &Envelope,
        header: &BundleHeader,
        sealed: &SealedBox,
    ) -> Result<Ack, NettingError> {
        admit::from_coordinator(ctx.roster, env)?;
        let state = self.state.clone();
        let live = self.live(&header.round)?;
        let spec = live.spec().clone();
        let key = admit::held_key(ctx, &spec)?;
        admit::envelope_context(&spec, key, env)?;
        let party = spec
            .parties
            .get(header.party as usize)
            .map_or_else(|| format!("#{}", header.party), |p| p.name.clone());
        let digest = header.digest();
        let checked = (|| {
            let held = live.round.held();
            match held.get(header.party as usize) {
                None => {
                    return Err(NettingError::refused(
                        Code::BadBundle,
                        format!(
                            "bundle for party index {} of a {}-party round",
                            header.party,
                            spec.parties.len()
                        ),
                    ))
                }
                Some(Some(d)) if *d == digest => return Ok(false),
                Some(Some(_)) => {
                    return Err(NettingError::refused(
                        Code::BadBundle,
                        format!(
                            "party {party:?} already has another bundle in round {}",
                            spec.id
                        ),
                    ))
                }
                Some(None) => {}
            }
            if live.closed.is_some() {
                return Err(NettingError::refused(
                    Code::Closed,
                    format!(
                        "round {} is closed; bundle of party {party:?} refused",
                        spec.id
                    ),
                ));
            }
            if ctx.now_unix > spec.cutoff {
                return Err(NettingError::refused(
                    Code::LateBundle,
                    format!(
                        "bundle of party {party:?} arrived at {} after the cut-off {}",
                        ctx.now_unix, spec.cutoff
                    ),
                ));
            }
            let record = store::bundle_record(header, sealed)?;
            verify::accept(&spec, ctx.identity, header, sealed)
                .map_err(|e| NettingError::from_bundle(&e))?;
            store::put_bundle(&state, &spec.id, header.party, record)?;
            Ok(true)
        })();
        let refused = |live: &mut super::LiveRound, ctx: &mut Ctx<'_>, e: &NettingError| {
            let Some(code) = e.code() else { return };
            if live.refusals_recorded >= live.refusal_budget() {
                return;
            }
            live.refusals_recorded += 1;
            // Best effort: a failure of the log latches the node inside `record`.
            let _ = ctx.record(
                AuditKind::NettingBundleRefused {
                    round: spec.id.to_string(),
                },
                json!({
                    "party": party,
                    "reason": format!("netting:{}", code.name()),
                    "detail": match e { NettingError::Refused { detail, .. } => detail.clone(), _ => String::new() },
                }),
            );
        };
        match checked {
            Ok(false) => Ok(Ack::Accepted),
            Ok(true) => {
                match live
                    .round
                    .accept_bundle(ctx.now_unix, ctx.identity, header, sealed)
                {
                    Ok(Admitted::New(_) | Admitted::Duplicate(_)) => {}
                    Err(e) => {
                        // Verified a moment ago: only a bug gets here. Keep memory and
                        // keystore apart rather than crash; the close will name it.
                        tracing::error!(round = %spec.id, party = %party, error = %e, "verified bundle not kept");
                        let e = NettingError::from_bundle(&e);
                        refused(live, ctx, &e);
                        return Err(e);
                    }
                }
                ctx.record(
                    AuditKind::NettingBundleAccepted {
                        round: spec.id.to_string(),
                    },
                    json!({ "party": party, "digest": hex::encode(digest) }),
                )?;
                tracing::info!(round = %spec.id, party = %party, "netting bundle accepted");
                Ok(Ack::Accepted)
            }
            Err(e) => {
                if matches!(e, NettingError::Refused { .. }) {
                    refused(live, ctx, &e);
                }
                Err(e)
            }
        }
    }
}
