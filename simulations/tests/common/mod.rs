//! Helpers shared by the simulator tests.
#![allow(dead_code)]

use quorate_sim::{RunOptions, RunResult, Scenario};

/// Parses a scenario from TOML text (panics with the error on failure).
pub(crate) fn scenario(text: &str) -> Scenario {
    Scenario::from_toml(text, "<test>").unwrap_or_else(|e| panic!("scenario: {e}"))
}

/// Runs a scenario with default options.
pub(crate) fn run(s: &Scenario) -> RunResult {
    quorate_sim::run(s, &RunOptions::default()).unwrap_or_else(|e| panic!("run: {e}"))
}

/// A 3-of-5 signing scenario with constant latency and no CPU cost.
pub(crate) fn basic(latency_ms: f64, count: u64) -> String {
    format!(
        r#"
name = "basic"
seed = 7
[committee]
n = 5
threshold = 3
[network]
latency = {{ dist = "constant", ms = {latency_ms} }}
[cpu]
model = "none"
[workload]
kind = "fixed-rate"
rate_per_s = 1.0
count = {count}
duration_s = 1000.0
"#
    )
}
