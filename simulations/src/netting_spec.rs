//! The `[netting]` table: MPC netting rounds as a workload (parties, instruments,
//! positions, rounds, the node committee's threshold, netting faults and the
//! netting CPU cost model).
//!
//! Depends only on `error`, `limits_spec`, `spec` and `topology` (for selectors), so `scenario`
//! can re-export it without a cycle.

use serde::{Deserialize, Serialize};

use crate::{error::SimError, limits_spec::LimitsSpec, spec::CommitteeSpec};

/// How many (pair, instrument) positions the parties hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Positions {
    /// Every pair of parties trades every instrument.
    #[default]
    Dense,
    /// Each (pair, instrument) trades with probability `density`.
    Sparse,
}

/// Netting CPU costs (µs of virtual time), charged unless `[cpu] model = "none"`
/// and multiplied by `[cpu] scale`. Defaults are the measured costs of
/// `protocol/benches/netting.rs` on the 2-core development host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NettingCosts {
    /// A party's `deal`, per commitment (`values × t`): Pedersen commitments and sealing.
    #[serde(default = "default_deal")]
    pub deal_us_per_commitment: f64,
    /// A node's batched share check of one bundle, per commitment in it.
    #[serde(default = "default_verify")]
    pub verify_us_per_commitment: f64,
    /// A node's close (local netting, sealing and signing its outputs), per input
    /// value it holds (all parties' values): 220 ms for 50 parties × 20 assets
    /// (98 000 values).
    #[serde(default = "default_outputs")]
    pub outputs_us_per_value: f64,
    /// A party's `open_result`, per output share it verifies (its outputs × the
    /// nodes that answered): 6 ms per 1000.
    #[serde(default = "default_result")]
    pub result_us_per_share: f64,
    /// Building the settlement batch (`settle`: verifying the public openings), per
    /// public output share (nets × nodes that answered), at the coordinator and at
    /// each signer that rebuilds the batch. Not measured separately: the same
    /// opening check as a party's result, so the same rate.
    #[serde(default = "default_result")]
    pub settle_us_per_share: f64,
}

fn default_deal() -> f64 {
    40.0
}
fn default_verify() -> f64 {
    11.0
}
fn default_outputs() -> f64 {
    220_000.0 / 98_000.0
}
fn default_result() -> f64 {
    6.0
}

impl Default for NettingCosts {
    fn default() -> Self {
        Self {
            deal_us_per_commitment: default_deal(),
            verify_us_per_commitment: default_verify(),
            outputs_us_per_value: default_outputs(),
            result_us_per_share: default_result(),
            settle_us_per_share: default_result(),
        }
    }
}

/// Netting rounds run by the coordinator with committee 0's members as the nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NettingSpec {
    /// Parties (2–256); each is a client endpoint on the network.
    pub parties: usize,
    /// Instruments (futures with seeded multipliers and price moves).
    #[serde(default = "default_instruments")]
    pub instruments: usize,
    /// Assets the instruments settle in (instrument `i` in asset `i % assets`).
    #[serde(default = "one")]
    pub assets: usize,
    /// Dense or sparse positions (mirrored books, seeded).
    #[serde(default)]
    pub positions: Positions,
    /// Probability a (pair, instrument) trades, for `positions = "sparse"`.
    #[serde(default = "default_density")]
    pub density: f64,
    /// Largest |quantity| of a position.
    #[serde(default = "default_max_quantity")]
    pub max_quantity: i64,
    /// Largest |cash| of a position.
    #[serde(default = "default_max_cash")]
    pub max_cash: i64,
    /// Rounds.
    #[serde(default = "one")]
    pub rounds: u32,
    /// First round starts (virtual seconds).
    #[serde(default)]
    pub start_s: f64,
    /// Time between round starts (virtual seconds).
    #[serde(default = "default_every")]
    pub every_s: f64,
    /// The coordinator closes a round this long after it starts.
    #[serde(default = "default_cutoff")]
    pub cutoff_ms: f64,
    /// After the close, parties and the coordinator wait at most this long for
    /// every node's outputs, then open from what arrived.
    #[serde(default = "default_result_timeout")]
    pub result_timeout_ms: f64,
    /// Shares needed to open a value (default: `committee.threshold`).
    #[serde(default)]
    pub threshold: Option<u16>,
    /// Region of each party, round-robin (default: the coordinator's region).
    #[serde(default)]
    pub party_regions: Vec<String>,
    /// Nodes (selectors) that lie about their output shares: validly signed
    /// outputs computed on altered shares, to the parties and to the coordinator.
    #[serde(default)]
    pub liars: Vec<String>,
    /// Nodes (selectors) that accept bundles but never send outputs nor sign the
    /// settlement.
    #[serde(default)]
    pub silent: Vec<String>,
    /// CPU cost model.
    #[serde(default)]
    pub costs: NettingCosts,
    /// Limit and collateral checks on every round (`[netting.limits]`; absent:
    /// rounds settle without them).
    #[serde(default)]
    pub limits: Option<LimitsSpec>,
}

fn one<T: From<u8>>() -> T {
    T::from(1)
}
fn default_instruments() -> usize {
    3
}
fn default_density() -> f64 {
    0.3
}
fn default_max_quantity() -> i64 {
    1_000
}
fn default_max_cash() -> i64 {
    10_000
}
fn default_every() -> f64 {
    10.0
}
fn default_cutoff() -> f64 {
    1_000.0
}
fn default_result_timeout() -> f64 {
    2_000.0
}

impl NettingSpec {
    /// The opening threshold.
    pub fn threshold(&self, committee: &CommitteeSpec) -> u16 {
        self.threshold.unwrap_or(committee.threshold)
    }

    /// Virtual second by which the last round has started.
    pub fn last_start_s(&self) -> f64 {
        self.start_s + self.every_s * f64::from(self.rounds.saturating_sub(1))
    }

    /// Checks the table against the committee; errors name the field.
    pub fn validate(&self, committee: &CommitteeSpec) -> Result<(), SimError> {
        if !(2..=256).contains(&self.parties) {
            return Err(SimError::invalid("netting.parties", "must be 2..=256"));
        }
        if !(1..=256).contains(&self.instruments) {
            return Err(SimError::invalid("netting.instruments", "must be 1..=256"));
        }
        if self.assets == 0 || self.assets > self.instruments {
            return Err(SimError::invalid(
                "netting.assets",
                format!(
                    "must be between 1 and netting.instruments = {}",
                    self.instruments
                ),
            ));
        }
        if 2 * (self.parties - 1) * self.instruments > 1 << 16 {
            return Err(SimError::invalid(
                "netting.instruments",
                "2 × (parties − 1) × instruments values per party exceeds 65536",
            ));
        }
        if !(0.0..=1.0).contains(&self.density) {
            return Err(SimError::invalid(
                "netting.density",
                "must be a probability in [0, 1]",
            ));
        }
        for (name, v) in [
            ("netting.max_quantity", self.max_quantity),
            ("netting.max_cash", self.max_cash),
        ] {
            if !(1..=1_000_000_000).contains(&v) {
                return Err(SimError::invalid(name, "must be 1..=1e9"));
            }
        }
        if self.rounds == 0 {
            return Err(SimError::invalid("netting.rounds", "must be at least 1"));
        }
        for (name, v) in [
            ("netting.start_s", self.start_s),
            ("netting.every_s", self.every_s),
            ("netting.cutoff_ms", self.cutoff_ms),
            ("netting.result_timeout_ms", self.result_timeout_ms),
            (
                "netting.costs.deal_us_per_commitment",
                self.costs.deal_us_per_commitment,
            ),
            (
                "netting.costs.verify_us_per_commitment",
                self.costs.verify_us_per_commitment,
            ),
            (
                "netting.costs.outputs_us_per_value",
                self.costs.outputs_us_per_value,
            ),
            (
                "netting.costs.result_us_per_share",
                self.costs.result_us_per_share,
            ),
            (
                "netting.costs.settle_us_per_share",
                self.costs.settle_us_per_share,
            ),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(SimError::invalid(
                    name,
                    "must be a finite, non-negative number",
                ));
            }
        }
        let t = self.threshold(committee);
        if t < 1 || t > committee.n {
            return Err(SimError::invalid(
                "netting.threshold",
                format!("must be between 1 and committee.n = {}", committee.n),
            ));
        }
        if let Some(l) = &self.limits {
            l.validate(usize::from(committee.n), usize::from(t))?;
        }
        for r in &self.party_regions {
            if !committee.regions.contains(r) {
                return Err(SimError::invalid(
                    "netting.party_regions",
                    format!("region {r:?} is not listed in committee.regions"),
                ));
            }
        }
        let topo = crate::topology::Topology::new(committee);
        for (field, list) in [
            ("netting.liars", &self.liars),
            ("netting.silent", &self.silent),
        ] {
            for s in list {
                let nodes = topo.select(s).map_err(|r| SimError::invalid(field, r))?;
                if nodes.iter().any(|n| *n >= topo.n) {
                    return Err(SimError::invalid(
                        field,
                        format!(
                            "{s:?}: netting nodes are committee 0's members (n1..n{})",
                            topo.n
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}
