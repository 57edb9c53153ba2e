//! Limit checks of a closed round (`LimitStart`, `LimitPart`): this node's side of
//! the MPC that decides whether every party is covered, run with the coordinator as
//! king ([`quorate_protocol::netting::limits`]).
//!
//! Checks, in order: a roster coordinator sent it; the round is held here, has
//! limit checks and is closed; the envelope's context is the round's; the attempt
//! is the current one (a higher attempt, up to `MAX_ATTEMPTS`, replaces an aborted
//! or stalled one; a lower one is refused). `limit_check_started` is audited before
//! an attempt's first message leaves, `limit_verdict` before the verdict does, and
//! `limit_check_aborted` when an attempt stops. The round's public outputs (the
//! shares of the nets a settlement opens) leave only after this node's own verdict
//! says every party is covered; a settlement is refused otherwise (`settle`).

use quorate_protocol::{
    netting::{
        limits::run::{NodeLimits, MAX_ATTEMPTS},
        RoundId, RoundSpec,
    },
    wire::frame::Ack,
    Ciphersuite, Envelope, NodeIdentity, Payload, ProtocolError,
};
use serde_json::json;

use super::{admit, Code, Ctx, Handled, LiveRound, Netting, NettingError};
use crate::audit::AuditKind;

fn seal_all(
    identity: &NodeIdentity,
    spec: &RoundSpec,
    suite: Ciphersuite,
    payloads: Vec<Payload>,
) -> Vec<Envelope> {
    payloads
        .into_iter()
        .map(|p| Envelope::seal(identity, suite, spec.key, spec.session(), p))
        .collect()
}

/// Whether this node's finished limit check found every party covered, on the
/// inputs the round was closed on.
pub(super) fn covered(live: &LiveRound) -> bool {
    let closed = live.round.closed().map(|(_, d)| d);
    live.limits
        .as_ref()
        .and_then(NodeLimits::result)
        .is_some_and(|(v, _)| v.covered && Some(v.inputs_digest) == closed)
}

/// The result payloads to (re-)send: the verdict and bits, then the public
/// outputs when covered.
fn finished(live: &LiveRound) -> Vec<Payload> {
    let Some((verdict, bits)) = live.limits.as_ref().and_then(NodeLimits::result) else {
        return Vec::new();
    };
    let mut out = vec![Payload::LimitResult {
        verdict: verdict.clone(),
        bits: bits.clone(),
    }];
    if covered(live) {
        if let Some(c) = &live.closed {
            out.push(Payload::NettingPublic {
                outputs: c.outputs.public.clone(),
            });
        }
    }
    out
}

fn refused(detail: impl Into<String>) -> NettingError {
    NettingError::refused(Code::LimitCheck, detail.into())
}

impl Netting {
    /// Admission shared by both messages: coordinator, round, limits, closed,
    /// context. Returns the round's spec and suite.
    fn limit_round(
        &mut self,
        ctx: &mut Ctx<'_>,
        env: &Envelope,
        id: &RoundId,
    ) -> Result<(RoundSpec, Ciphersuite), NettingError> {
        admit::from_coordinator(ctx.roster, env)?;
        let live = self.live(id)?;
        let spec = live.spec().clone();
        let key = admit::held_key(ctx, &spec)?;
        admit::envelope_context(&spec, key, env)?;
        if spec.limits.is_none() {
            return Err(refused(format!("round {id} has no limit checks")));
        }
        if live.closed.is_none() {
            return Err(refused(format!("round {id} is not closed here yet")));
        }
        Ok((spec, key.suite))
    }

    /// Starts (or restarts with a higher attempt) the round's limit checks.
    pub(super) fn on_limit_start(
        &mut self,
        ctx: &mut Ctx<'_>,
        env: &Envelope,
        id: &RoundId,
        attempt: u32,
    ) -> Result<Handled, NettingError> {
        let (spec, suite) = self.limit_round(ctx, env, id)?;
        let live = self.live(id)?;
        match &live.limits {
            Some(l) if l.attempt() == attempt => {
                // A repeated start: the result again if finished, else nothing new.
                return Ok(Handled {
                    ack: Ack::Accepted,
                    deliver: seal_all(ctx.identity, &spec, suite, finished(live)),
                });
            }
            Some(l) if l.attempt() > attempt => {
                return Err(refused(format!(
                    "attempt {attempt} is older than attempt {} of round {id}",
                    l.attempt()
                )));
            }
            Some(l) if l.result().is_some() => {
                return Err(refused(format!(
                    "round {id}'s limit checks already finished in attempt {}",
                    l.attempt()
                )));
            }
            _ => {}
        }
        if attempt == 0 || attempt > MAX_ATTEMPTS {
            return Err(refused(format!(
                "attempt {attempt} is outside 1..={MAX_ATTEMPTS}"
            )));
        }
        let (participants, inputs_digest) = live
            .round
            .closed()
            .map(|(p, d)| (p.iter().filter(|x| **x).count(), d))
            .unwrap_or_default();
        ctx.record(
            AuditKind::LimitCheckStarted {
                round: id.to_string(),
            },
            json!({
                "attempt": attempt,
                "inputs_digest": hex::encode(inputs_digest),
                "comparisons": participants * spec.assets().len(),
            }),
        )?;
        let live = self.live(id)?;
        let (run, first) =
            NodeLimits::start(&live.round, ctx.identity, attempt, &mut rand_core::OsRng)
                .map_err(|e| refused(e.to_string()))?;
        live.limits = Some(run);
        tracing::info!(round = %id, attempt, "limit checks started");
        Ok(Handled {
            ack: Ack::Accepted,
            deliver: seal_all(ctx.identity, &spec, suite, first),
        })
    }

    /// One part of the coordinator's answer to a step.
    pub(super) fn on_limit_part(
        &mut self,
        ctx: &mut Ctx<'_>,
        env: &Envelope,
        id: &RoundId,
        attempt: u32,
        (step, part, parts): (u8, u32, u32),
        bytes: &[u8],
    ) -> Result<Handled, NettingError> {
        let (spec, suite) = self.limit_round(ctx, env, id)?;
        let live = self.live(id)?;
        let Some(run) = live.limits.as_mut().filter(|l| l.attempt() == attempt) else {
            return Err(refused(format!(
                "no limit-check attempt {attempt} of round {id} runs here"
            )));
        };
        let was_done = run.result().is_some();
        let was_failed = run.failure().is_some();
        let out = run.on_part(
            &spec,
            ctx.identity,
            (step, part, parts),
            bytes.to_vec(),
            &mut rand_core::OsRng,
        );
        match out {
            Ok(payloads) => {
                if !was_done {
                    if let Some((v, _)) = run.result() {
                        let details = json!({
                            "attempt": attempt,
                            "covered": v.covered,
                            "failed": v.failed,
                            "verdict_digest": hex::encode(v.digest()),
                        });
                        let covered = v.covered;
                        ctx.record(
                            AuditKind::LimitVerdict {
                                round: id.to_string(),
                            },
                            details,
                        )?;
                        tracing::info!(round = %id, attempt, covered, "limit checks finished");
                    }
                }
                let live = self.live(id)?;
                let payloads = if live.limits.as_ref().is_some_and(|l| l.result().is_some()) {
                    finished(live)
                } else {
                    payloads
                };
                Ok(Handled {
                    ack: Ack::Accepted,
                    deliver: seal_all(ctx.identity, &spec, suite, payloads),
                })
            }
            Err(e) => {
                if !was_failed && run.failure().is_some() {
                    let (step, culprits) = match &e {
                        ProtocolError::LimitCheckAborted { step, culprits, .. } => (
                            *step,
                            culprits.iter().map(|c| hex::encode(c.as_bytes())).collect(),
                        ),
                        _ => (step, Vec::new()),
                    };
                    ctx.record(
                        AuditKind::LimitCheckAborted {
                            round: id.to_string(),
                        },
                        json!({
                            "attempt": attempt,
                            "step": step,
                            "reason": e.to_string(),
                            "culprits": culprits,
                        }),
                    )?;
                    tracing::warn!(round = %id, attempt, error = %e, "limit checks aborted");
                }
                Err(refused(e.to_string()))
            }
        }
    }
}
