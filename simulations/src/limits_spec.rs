//! The `[netting.limits]` table: limit-checked netting rounds (the round's
//! `LimitSettings`, how the seeded collateral and credit limits are generated, the
//! attempt timeout and the limit-check CPU cost model).
//!
//! Depends only on `error`, so `netting_spec` can hold it without a cycle.

use serde::{Deserialize, Serialize};

use crate::error::SimError;

/// Limit-check CPU costs (µs of virtual time), charged unless `[cpu] model =
/// "none"` and multiplied by `[cpu] scale`: per step, per comparison of the job
/// (`Job::inputs`: `P·A` limit checks, plus `P·A + P·(P − 1)·A` with efficiency).
///
/// Defaults measured with `cargo run --release -p quorate-sim --example
/// limits_costs -- 1000` (every node and the king of one 1000-comparison job, 5
/// nodes at t = 3, one thread of the 2-core development host, each call timed):
/// a node spends about 0.32 ms and the king about 0.40 ms per comparison per run
/// (18 steps), the king's step 4 (a square root per random bit, over both cores)
/// 0.29 ms of it. Measured 2026-12-02 after the signed-relay and bit-check
/// revision of the protocol.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitCosts {
    /// A node's `NodeLimits::start` (PRSS set keys, the step-0 message), per run.
    #[serde(default = "default_setup")]
    pub node_setup_us: f64,
    /// A node producing step `s`'s message (index `s`, 0–17) or its result (18),
    /// per comparison.
    #[serde(default = "default_node")]
    pub node_us_per_input: Vec<f64>,
    /// The king answering step `s` (index `s`, 0–17), per comparison.
    #[serde(default = "default_king")]
    pub king_us_per_input: Vec<f64>,
}

/// Entries of `node_us_per_input` (steps 0–17 and the result).
pub const NODE_COST_STEPS: usize = quorate_protocol::netting::limits::STEPS as usize + 1;
/// Entries of `king_us_per_input` (steps 0–17).
pub const KING_COST_STEPS: usize = quorate_protocol::netting::limits::STEPS as usize;

fn default_setup() -> f64 {
    380.0
}
fn default_node() -> Vec<f64> {
    vec![
        0.0, 96.7, 38.1, 3.8, 9.0, 5.9, 4.2, 17.3, 49.8, 31.8, 15.8, 7.8, 3.9, 1.2, 0.42, 0.03,
        13.4, 0.28, 0.29,
    ]
}
fn default_king() -> Vec<f64> {
    vec![
        0.31, 40.7, 10.6, 0.31, 294.7, 0.30, 0.30, 0.63, 25.7, 11.3, 5.8, 2.8, 1.5, 0.64, 0.30,
        0.29, 0.31, 0.32,
    ]
}

impl Default for LimitCosts {
    fn default() -> Self {
        Self {
            node_setup_us: default_setup(),
            node_us_per_input: default_node(),
            king_us_per_input: default_king(),
        }
    }
}

impl LimitCosts {
    /// Every figure multiplied by `s`.
    pub fn scaled(&self, s: f64) -> Self {
        Self {
            node_setup_us: self.node_setup_us * s,
            node_us_per_input: self.node_us_per_input.iter().map(|v| v * s).collect(),
            king_us_per_input: self.king_us_per_input.iter().map(|v| v * s).collect(),
        }
    }

    /// A node producing step `step`'s message (or its result) for `inputs`
    /// comparisons.
    pub fn node_us(&self, step: u8, inputs: usize) -> f64 {
        let setup = if step == 0 { self.node_setup_us } else { 0.0 };
        setup
            + self
                .node_us_per_input
                .get(usize::from(step))
                .copied()
                .unwrap_or(0.0)
                * inputs as f64
    }

    /// The king answering step `step` for `inputs` comparisons.
    pub fn king_us(&self, step: u8, inputs: usize) -> f64 {
        self.king_us_per_input
            .get(usize::from(step))
            .copied()
            .unwrap_or(0.0)
            * inputs as f64
    }
}

/// Limit checks on every netting round (the table's presence turns them on).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSpec {
    /// `LimitSettings::max_cover`: largest collateral or limit per party and asset
    /// (generated values are capped at it).
    #[serde(default = "default_max_cover")]
    pub max_cover: i64,
    /// `LimitSettings::reveal_failures`: an uncovered verdict names the parties.
    #[serde(default = "yes")]
    pub reveal_failures: bool,
    /// `LimitSettings::efficiency`: also open gross and net volume per asset.
    #[serde(default)]
    pub efficiency: bool,
    /// Each party draws one ratio per round, uniform in `collateral_ratio ±
    /// collateral_spread` (at least 0), and posts that multiple of its shortfall
    /// (`−net` where its net in an asset is negative) as collateral in every asset.
    #[serde(default = "default_ratio")]
    pub collateral_ratio: f64,
    /// Half-width of the ratio's range.
    #[serde(default = "default_spread")]
    pub collateral_spread: f64,
    /// Credit limit as a multiple of the shortfall: a party is covered in an asset
    /// when its ratio plus this reaches 1 (up to rounding).
    #[serde(default)]
    pub limit_ratio: f64,
    /// The coordinator restarts the check with a fresh attempt when one has not
    /// ended this long after it started (lost parts, a silent or crashed node).
    #[serde(default = "default_timeout")]
    pub attempt_timeout_ms: f64,
    /// Attempts before the round fails with `limits-failed` (at most 3).
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    /// CPU cost model.
    #[serde(default)]
    pub costs: LimitCosts,
}

fn yes() -> bool {
    true
}
fn default_max_cover() -> i64 {
    1 << 40
}
fn default_ratio() -> f64 {
    1.1
}
fn default_spread() -> f64 {
    0.2
}
fn default_timeout() -> f64 {
    10_000.0
}
fn default_attempts() -> u32 {
    2
}

impl LimitsSpec {
    /// Checks the table against the committee (`n` nodes, opening threshold `t`);
    /// errors name the field.
    pub fn validate(&self, n: usize, t: usize) -> Result<(), SimError> {
        quorate_protocol::netting::limits::check_committee(n, t)
            .map_err(|e| SimError::invalid("netting.limits", e.to_string()))?;
        let max = quorate_protocol::netting::round::MAX_COVER;
        if !(0..=max).contains(&self.max_cover) {
            return Err(SimError::invalid(
                "netting.limits.max_cover",
                format!("must be 0..={max}"),
            ));
        }
        let max_attempts = quorate_protocol::netting::limits::run::MAX_ATTEMPTS;
        if !(1..=max_attempts).contains(&self.attempts) {
            return Err(SimError::invalid(
                "netting.limits.attempts",
                format!("must be 1..={max_attempts}"),
            ));
        }
        let c = &self.costs;
        for (name, v, len) in [
            (
                "netting.limits.costs.node_us_per_input",
                &c.node_us_per_input,
                NODE_COST_STEPS,
            ),
            (
                "netting.limits.costs.king_us_per_input",
                &c.king_us_per_input,
                KING_COST_STEPS,
            ),
        ] {
            if v.len() != len {
                return Err(SimError::invalid(name, format!("must list {len} figures")));
            }
        }
        let figures = c.node_us_per_input.iter().chain(&c.king_us_per_input);
        for (name, v) in [
            ("netting.limits.collateral_ratio", self.collateral_ratio),
            ("netting.limits.collateral_spread", self.collateral_spread),
            ("netting.limits.limit_ratio", self.limit_ratio),
            ("netting.limits.attempt_timeout_ms", self.attempt_timeout_ms),
            ("netting.limits.costs.node_setup_us", c.node_setup_us),
        ]
        .into_iter()
        .chain(figures.map(|v| ("netting.limits.costs", *v)))
        {
            if !(v.is_finite() && v >= 0.0) {
                return Err(SimError::invalid(
                    name,
                    "must be a finite, non-negative number",
                ));
            }
        }
        if self.attempt_timeout_ms <= 0.0 {
            return Err(SimError::invalid(
                "netting.limits.attempt_timeout_ms",
                "must be positive",
            ));
        }
        Ok(())
    }
}
