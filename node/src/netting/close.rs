//! Closing a round (`NettingClose`) and delivering this node's signed outputs.
//!
//! Checks, in order: a roster coordinator sent it; the round is held here; the
//! envelope's context is the round's; a round already closed on the same inputs
//! re-sends its cached outputs (idempotent), on other inputs it is `closed`; every
//! bundle digest listed must be the one this node holds for that party
//! (`input_mismatch`, naming the first party that differs). A bundle held here but
//! listed `None` (another node refused it or never got it) is left out of the
//! computation, so one node's extra bundle cannot make every node refuse the close;
//! `netting_closed` names such parties in `left_out`. Then `netting_closed` is
//! audited and the closing inputs are stored (a restart closes the round again on
//! them) before the outputs are computed; they go to the coordinator: one
//! `NettingPublic` and one `NettingParty` per participating party, each its own
//! envelope (session = `spec.session()`, key = `spec.key`, suite = the key's). A
//! limit-checked round sends `NettingPublic` only after its limit checks found
//! every party covered (`limits`).

use quorate_protocol::{
    netting::{open, NodeOutputs, RoundId, RoundSpec},
    wire::frame::Ack,
    Ciphersuite, Envelope, NodeIdentity, Payload,
};
use serde_json::json;

use super::{admit, store, Closed, Code, Ctx, Handled, Netting, NettingError};
use crate::audit::AuditKind;

/// The envelopes carrying `outputs` to the coordinator. A limit-checked round's
/// public outputs are withheld until this node's verdict is covered (`limits`).
fn envelopes(
    identity: &NodeIdentity,
    spec: &RoundSpec,
    suite: Ciphersuite,
    outputs: &NodeOutputs,
    release_public: bool,
) -> Vec<Envelope> {
    let seal = |payload| Envelope::seal(identity, suite, spec.key, spec.session(), payload);
    release_public
        .then(|| {
            seal(Payload::NettingPublic {
                outputs: outputs.public.clone(),
            })
        })
        .into_iter()
        .chain(
            outputs
                .parties
                .iter()
                .map(|p| seal(Payload::NettingParty { outputs: p.clone() })),
        )
        .collect()
}

impl Netting {
    /// Closes a round on the coordinator's inputs and returns the outputs to send.
    pub(super) fn on_close(
        &mut self,
        ctx: &mut Ctx<'_>,
        env: &Envelope,
        id: &RoundId,
        inputs: &[Option<[u8; 32]>],
    ) -> Result<Handled, NettingError> {
        admit::from_coordinator(ctx.roster, env)?;
        let state = self.state.clone();
        let live = self.live(id)?;
        let spec = live.spec().clone();
        let suite = admit::held_key(ctx, &spec)?.suite;
        admit::envelope_context(&spec, admit::held_key(ctx, &spec)?, env)?;
        if let Some(closed) = &live.closed {
            if closed.inputs == inputs {
                let release = spec.limits.is_none() || super::limits::covered(live);
                return Ok(Handled {
                    ack: Ack::Accepted,
                    deliver: envelopes(ctx.identity, &spec, suite, &closed.outputs, release),
                });
            }
            return Err(NettingError::refused(
                Code::Closed,
                format!("round {id} was already closed on other inputs"),
            ));
        }
        let held = live.round.held();
        if held.len() != inputs.len() {
            return Err(NettingError::refused(
                Code::InputMismatch,
                format!(
                    "close lists {} parties, round {id} has {}",
                    inputs.len(),
                    held.len()
                ),
            ));
        }
        // A bundle listed `None` is left out even if held here (another node refused
        // it or never got it: one node's extra bundle must not stop every node's
        // close); only a listed digest this node does not hold refuses the close.
        if let Some(p) = (0..held.len()).find(|&p| inputs[p].is_some() && held[p] != inputs[p]) {
            let why = if held[p].is_some() {
                "another bundle than this node holds"
            } else {
                "a bundle this node does not hold"
            };
            return Err(NettingError::refused(
                Code::InputMismatch,
                format!(
                    "close lists {why} for party {:?} of round {id}",
                    spec.parties[p].name
                ),
            ));
        }
        let left_out: Vec<&str> = (0..held.len())
            .filter(|&p| inputs[p].is_none() && held[p].is_some())
            .map(|p| spec.parties[p].name.as_str())
            .collect();
        let inputs_digest = open::inputs_digest(&spec, inputs);
        ctx.record(
            AuditKind::NettingClosed {
                round: id.to_string(),
            },
            json!({
                "inputs_digest": hex::encode(inputs_digest),
                "participants": inputs.iter().filter(|i| i.is_some()).count(),
                "left_out": left_out,
            }),
        )?;
        if !left_out.is_empty() {
            tracing::warn!(round = %id, ?left_out, "closing without bundles this node holds (listed as absent)");
        }
        store::put_round_closing(&state, live, inputs)?;
        let outputs = match live.round.close(ctx.identity, inputs) {
            Ok(o) => o,
            Err(e) => {
                // Undo the stored close so a restart does not try it again.
                if let Err(undo) = store::put_round(&state, live) {
                    tracing::error!(round = %id, error = %undo, "cannot undo the stored close");
                }
                return Err(NettingError::refused(Code::InputMismatch, e.to_string()));
            }
        };
        live.closed = Some(Closed {
            inputs: inputs.to_vec(),
            outputs,
        });
        tracing::info!(round = %id, "netting round closed; outputs sent");
        let deliver = live
            .closed
            .as_ref()
            .map(|c| {
                envelopes(
                    ctx.identity,
                    &spec,
                    suite,
                    &c.outputs,
                    spec.limits.is_none(),
                )
            })
            .unwrap_or_default();
        Ok(Handled {
            ack: Ack::Accepted,
            deliver,
        })
    }
}
