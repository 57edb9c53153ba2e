//! The `[reshare]` table: resharing runs as a workload (`[workload] kind =
//! "reshare"`). The scenario's committee holds every node that takes part: the
//! key's old committee is its first `from_n` members at `from_threshold`, the new
//! committee its last `to_n` members at `committee.threshold` (members keep their
//! index, as nodes keep their roster index). `3-of-5 → 4-of-7` with two members
//! replaced is `committee.n = 9`, `threshold = 4`, `from_n = 5`, `from_threshold =
//! 3`, `to_n = 7`.
//!
//! Depends only on `error` and `spec`, so `scenario` can re-export it without a
//! cycle.

use serde::{Deserialize, Serialize};

use crate::{error::SimError, spec::CommitteeSpec};

/// Resharing runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReshareSpec {
    /// Size of the key's committee before the reshare: the first `from_n` members.
    pub from_n: u16,
    /// Threshold of the key before the reshare.
    pub from_threshold: u16,
    /// Size of the new committee: the last `to_n` members (default `committee.n`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_n: Option<u16>,
    /// Old members that deal: the first `dealers` of the old committee (default
    /// all `from_n`, as the coordinator picks every reachable old member).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dealers: Option<u16>,
    /// Deadline of a run (each participant's `ReshareConfig::timeout_ms`).
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
}

fn default_timeout() -> u64 {
    60_000
}

impl ReshareSpec {
    /// Size of the new committee.
    pub fn new_n(&self, committee: &CommitteeSpec) -> u16 {
        self.to_n.unwrap_or(committee.n)
    }

    /// Number of dealers.
    pub fn dealer_count(&self) -> u16 {
        self.dealers.unwrap_or(self.from_n)
    }

    /// Checks the table against the committee; errors name the field.
    pub fn validate(&self, committee: &CommitteeSpec) -> Result<(), SimError> {
        let n = committee.n;
        if self.from_n < 2 || self.from_n > n {
            return Err(SimError::invalid(
                "reshare.from_n",
                format!("must be between 2 and committee.n = {n}"),
            ));
        }
        if self.from_threshold < 2 || self.from_threshold > self.from_n {
            return Err(SimError::invalid(
                "reshare.from_threshold",
                format!("must be between 2 and reshare.from_n = {}", self.from_n),
            ));
        }
        let to_n = self.new_n(committee);
        if to_n < 2 || to_n > n {
            return Err(SimError::invalid(
                "reshare.to_n",
                format!("must be between 2 and committee.n = {n}"),
            ));
        }
        if committee.threshold > to_n {
            return Err(SimError::invalid(
                "committee.threshold",
                format!("the new threshold exceeds the new committee (reshare.to_n = {to_n})"),
            ));
        }
        if usize::from(self.from_n) + usize::from(to_n) < usize::from(n) {
            return Err(SimError::invalid(
                "reshare.to_n",
                format!(
                    "members n{}..=n{} would be in neither committee: committee.n counts every node that takes part",
                    self.from_n + 1,
                    n - to_n
                ),
            ));
        }
        let d = self.dealer_count();
        if d < self.from_threshold || d > self.from_n {
            return Err(SimError::invalid(
                "reshare.dealers",
                format!(
                    "must be between reshare.from_threshold = {} and reshare.from_n = {}",
                    self.from_threshold, self.from_n
                ),
            ));
        }
        if self.timeout_ms == 0 {
            return Err(SimError::invalid("reshare.timeout_ms", "must be positive"));
        }
        Ok(())
    }
}
