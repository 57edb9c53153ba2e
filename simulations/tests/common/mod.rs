//! Helpers shared by the simulator tests.
#![allow(dead_code)]

use quorate_sim::{RunOptions, RunResult, Scenario};

/// The smallest signing scenario: 2-of-3, ten requests, uniform 5–15 ms links.
pub(crate) const TINY: &str = r#"
name = "tiny"
[committee]
n = 3
threshold = 2
[network]
latency = { dist = "uniform", min_ms = 5.0, max_ms = 15.0 }
[workload]
kind = "fixed-rate"
rate_per_s = 5.0
count = 10
duration_s = 10.0
"#;

/// A fresh, empty directory under the system temp dir for test `name`.
pub(crate) fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("quorate-sim-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

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
