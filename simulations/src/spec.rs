//! Scenario-file value types that the scenario and the runtime modules both use:
//! the committee table, latency distributions and the `[byzantine]` table.
//!
//! A leaf module (it uses only `engine` time units, `error` and `random`), so
//! `scenario` on one side and `topology`, `link` and `byzantine` on the other can
//! depend on it without depending on each other in a cycle. The types are
//! re-exported where they were first defined (`scenario`, `link`, `byzantine`).

use quorate_protocol::Ciphersuite;
use rand_core::RngCore;
use serde::{Deserialize, Serialize};

use crate::{
    engine::{ms_to_us, Micros},
    error::SimError,
    random,
};

/// How keys exist before the workload starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum KeySetup {
    /// Trusted-dealer shares (simulator only: fast at any size).
    #[default]
    Dealer,
    /// A real in-memory DKG among the committee (slow for large n).
    Dkg,
}

/// The signing committee(s).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommitteeSpec {
    /// Members per committee.
    pub n: u16,
    /// Signers needed.
    pub threshold: u16,
    /// FROST ciphersuite.
    #[serde(default = "default_suite")]
    pub suite: Ciphersuite,
    /// Independent committees on disjoint nodes (a large network of small groups).
    #[serde(default = "one")]
    pub count: usize,
    /// Regions, assigned to members round-robin (member `i` is in `regions[i % len]`).
    #[serde(default)]
    pub regions: Vec<String>,
    /// Region of the coordinator (default: the first region).
    #[serde(default)]
    pub coordinator_region: Option<String>,
    /// How initial keys are made for signing workloads.
    #[serde(default)]
    pub key_setup: KeySetup,
}

fn default_suite() -> Ciphersuite {
    Ciphersuite::Secp256k1
}

fn one() -> usize {
    1
}

/// A one-way latency distribution (milliseconds).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "dist", rename_all = "kebab-case", deny_unknown_fields)]
pub enum LatencySpec {
    /// Always `ms`.
    Constant {
        /// Latency.
        ms: f64,
    },
    /// Uniform in `[min_ms, max_ms]`.
    Uniform {
        /// Lower bound.
        min_ms: f64,
        /// Upper bound.
        max_ms: f64,
    },
    /// Normal, truncated at zero.
    Normal {
        /// Mean.
        mean_ms: f64,
        /// Standard deviation.
        sd_ms: f64,
    },
    /// Log-normal: `median_ms * exp(sigma * N(0,1))` (heavy right tail).
    LogNormal {
        /// Median.
        median_ms: f64,
        /// Shape.
        sigma: f64,
    },
}

impl LatencySpec {
    pub(crate) fn validate(&self, field: &str) -> Result<(), SimError> {
        let ok = |v: f64| v.is_finite() && v >= 0.0;
        let valid = match *self {
            Self::Constant { ms } => ok(ms),
            Self::Uniform { min_ms, max_ms } => ok(min_ms) && ok(max_ms) && min_ms <= max_ms,
            Self::Normal { mean_ms, sd_ms } => ok(mean_ms) && ok(sd_ms),
            Self::LogNormal { median_ms, sigma } => ok(median_ms) && ok(sigma),
        };
        if valid {
            Ok(())
        } else {
            Err(SimError::invalid(
                field,
                "latencies must be finite and non-negative (and min_ms <= max_ms)",
            ))
        }
    }

    /// Draws one latency in microseconds.
    pub fn sample_us(&self, rng: &mut impl RngCore) -> Micros {
        let ms = match *self {
            Self::Constant { ms } => ms,
            Self::Uniform { min_ms, max_ms } => min_ms + (max_ms - min_ms) * random::unit(rng),
            Self::Normal { mean_ms, sd_ms } => mean_ms + sd_ms * random::normal(rng),
            Self::LogNormal { median_ms, sigma } => median_ms * (sigma * random::normal(rng)).exp(),
        };
        ms_to_us(ms)
    }

    /// Mean latency in milliseconds.
    pub fn mean_ms(&self) -> f64 {
        match *self {
            Self::Constant { ms } => ms,
            Self::Uniform { min_ms, max_ms } => (min_ms + max_ms) / 2.0,
            Self::Normal { mean_ms, .. } => mean_ms,
            Self::LogNormal { median_ms, sigma } => median_ms * (sigma * sigma / 2.0).exp(),
        }
    }
}

/// What a byzantine node does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Behaviour {
    /// Sends a random (invalid) signature share.
    InvalidShare,
    /// Never sends its nonce commitment.
    WithholdCommit,
    /// Commits, then never sends its signature share.
    WithholdShare,
    /// Sends everything late, by `delay_ms` (default: 0.35 × the coordinator's
    /// deadline per message, so with its two messages per attempt an attempt
    /// finishes shortly before the deadline on fast links).
    Delay,
    /// Sends an old message of the same round from an earlier session instead of
    /// the current one.
    Replay,
    /// DKG: sends a different round-1 package to half of the committee.
    DkgEquivocate,
    /// DKG: round-1 proof of knowledge that does not verify.
    DkgBadProof,
    /// DKG: round-2 shares inconsistent with its commitment.
    DkgBadShare,
    /// DKG: sends nothing.
    DkgWithhold,
}

/// How byzantine nodes coordinate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Every byzantine node in a session misbehaves.
    #[default]
    All,
    /// Only one byzantine node per session misbehaves (the others act honestly
    /// until their turn), maximizing the number of failed attempts.
    Coordinated,
}

/// Which members are byzantine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Placement {
    /// Chosen by the seed.
    #[default]
    Random,
    /// The lowest-indexed members.
    First,
    /// The highest-indexed members.
    Last,
}

/// The `[byzantine]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ByzantineSpec {
    /// Byzantine members per committee.
    #[serde(default)]
    pub count: usize,
    /// Or explicit nodes (selectors such as `"n3"`); added to `count`.
    #[serde(default)]
    pub nodes: Vec<String>,
    /// What they do.
    pub behaviour: Behaviour,
    /// How they coordinate.
    #[serde(default)]
    pub strategy: Strategy,
    /// Where they sit in each committee.
    #[serde(default)]
    pub placement: Placement,
    /// Delay for [`Behaviour::Delay`].
    #[serde(default)]
    pub delay_ms: Option<f64>,
}
