//! Collateral and credit limits for limit-checked rounds, and the plaintext truth
//! of a round's limit checks (what the signed verdicts must agree with).
//!
//! Cover: each party draws one ratio per round, uniform in `collateral_ratio ±
//! collateral_spread` (at least 0), and posts `ratio × shortfall` as collateral and
//! `limit_ratio × shortfall` as its credit limit in every asset, where the
//! shortfall is `−net` when its plaintext multilateral net in that asset is
//! negative (else 0). Values are rounded and capped at `max_cover`.

use quorate_protocol::netting::{
    input::Cover,
    limits::{
        inputs::Layout,
        verdict::{AssetVolume, LimitVerdict},
    },
    reference,
    round::RoundSpec,
    PartyInput,
};
use rand_chacha::ChaCha20Rng;

use crate::{random, scenario::LimitsSpec};

/// Adds every party's cover to its positions (draws from `rng`).
pub(super) fn add_cover(
    spec: &LimitsSpec,
    round: &RoundSpec,
    inputs: &mut [PartyInput],
    rng: &mut ChaCha20Rng,
) {
    let all: Vec<Option<PartyInput>> = inputs.iter().cloned().map(Some).collect();
    let plain = reference::compute(round, &all).unwrap_or_default();
    let assets = round.assets();
    let cap = |v: f64| (v.round().max(0.0) as i64).min(spec.max_cover);
    for (p, input) in inputs.iter_mut().enumerate() {
        let u = random::unit(rng);
        let ratio = (spec.collateral_ratio + spec.collateral_spread * (2.0 * u - 1.0)).max(0.0);
        for asset in &assets {
            let net = plain
                .get(p)
                .and_then(Option::as_ref)
                .and_then(|r| r.multilateral.get(asset))
                .copied()
                .unwrap_or(0);
            let short = (-net).max(0) as f64;
            input.cover.push(Cover {
                asset: asset.clone(),
                collateral: cap(ratio * short),
                limit: cap(spec.limit_ratio * short),
            });
        }
    }
}

/// What a round's limit checks are in plaintext.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Truth {
    /// Every participant covered in every asset.
    pub covered: bool,
    /// Participants not covered in some asset (round order).
    pub failed: Vec<String>,
    /// Gross and net volume per asset (sorted assets).
    pub volumes: Vec<AssetVolume>,
}

impl Truth {
    /// From the generated inputs of the parties the round closed on (`None`
    /// without limits, or when an input does not encode).
    pub(super) fn compute(
        round: &RoundSpec,
        inputs: &[Option<PartyInput>],
        participants: &[bool],
    ) -> Option<Self> {
        let layout = Layout::new(round, participants)?;
        let values: Vec<Vec<i64>> = layout
            .parties
            .iter()
            .map(|&p| {
                let input = inputs.get(p)?.as_ref()?;
                input.to_values(round, p).ok().map(|v| v.to_vec())
            })
            .collect::<Option<_>>()?;
        // Plaintext values through the same public maps the nodes apply to shares.
        let mut layout_eff = layout.clone();
        layout_eff.efficiency = true;
        let x = layout_eff.plain_inputs(round, &values);
        let a = layout.assets.len();
        let checks = layout.checks();
        let failed = layout
            .parties
            .iter()
            .enumerate()
            .filter(|(i, _)| (0..a).any(|k| x[layout.check_index(*i, k)] < 0))
            .map(|(_, &p)| round.parties[p].name.clone())
            .collect::<Vec<_>>();
        let pairs = layout.parties.len() * layout.parties.len().saturating_sub(1);
        let volumes = layout
            .assets
            .iter()
            .enumerate()
            .map(|(k, asset)| {
                let sum = |start: usize, count: usize| -> u128 {
                    (0..count)
                        .map(|i| x[start + i * a + k].unsigned_abs())
                        .sum()
                };
                AssetVolume {
                    asset: asset.clone(),
                    gross: Some(sum(2 * checks, pairs) / 2),
                    net: Some(sum(checks, layout.parties.len()) / 2),
                }
            })
            .collect();
        Some(Self {
            covered: failed.is_empty(),
            failed,
            volumes,
        })
    }

    /// True when a signed verdict states exactly this (what the round reveals).
    pub(super) fn agrees(&self, round: &RoundSpec, verdict: &LimitVerdict) -> bool {
        let Some(l) = round.limits else {
            return false;
        };
        let failed: &[String] = if l.reveal_failures && !self.covered {
            &self.failed
        } else {
            &[]
        };
        let volumes: &[AssetVolume] = if l.efficiency { &self.volumes } else { &[] };
        verdict.covered == self.covered && verdict.failed == failed && verdict.volumes == volumes
    }
}
