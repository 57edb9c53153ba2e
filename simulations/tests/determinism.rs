//! Same scenario + seed ⇒ identical trace hash and results; different seeds ⇒
//! different traces.

mod common;

const RICH: &str = r#"
name = "rich"
[committee]
n = 5
threshold = 3
regions = ["eu", "us"]
[network]
latency = { dist = "log-normal", median_ms = 20.0, sigma = 0.5 }
jitter_ms = 5.0
loss = 0.02
duplicate = 0.05
reorder = 0.1
reorder_ms = 30.0
bandwidth_mbps = 10.0
clock_skew_ms = 40.0
clock_drift_ppm = 100.0
[[network.segments]]
from = "eu"
to = "us"
latency = { dist = "normal", mean_ms = 45.0, sd_ms = 5.0 }
[signing]
timeout_ms = 800
[cpu]
model = "default"
[workload]
kind = "poisson"
rate_per_s = 4.0
duration_s = 8.0
drain_s = 10.0
[byzantine]
count = 1
behaviour = "invalid-share"
[[faults]]
kind = "crash"
count = 1
at_s = 2.0
until_s = 5.0
"#;

#[test]
fn same_seed_same_trace_and_results() {
    for seed in [1u64, 2, 3, 42] {
        let mut s = common::scenario(RICH);
        s.seed = seed;
        let a = common::run(&s);
        let b = common::run(&s);
        assert!(a.summary.sessions > 10, "{:?}", a.summary);
        assert!(a.summary.trace_events > 100);
        assert_eq!(a.summary.trace_hash, b.summary.trace_hash, "seed {seed}");
        assert_eq!(a, b, "seed {seed}: results differ");
    }
}

#[test]
fn different_seeds_different_traces() {
    let mut hashes = std::collections::BTreeSet::new();
    for seed in [1u64, 2, 3, 4] {
        let mut s = common::scenario(RICH);
        s.seed = seed;
        hashes.insert(common::run(&s).summary.trace_hash);
    }
    assert_eq!(hashes.len(), 4);
}

#[test]
fn sharing_public_round2_work_changes_no_result() {
    for (suite, seed) in [("secp256k1", 1u64), ("secp256k1-tr", 2), ("ed25519", 3)] {
        let text = RICH.replace(
            "threshold = 3",
            &format!("threshold = 3\nsuite = \"{suite}\""),
        );
        let mut shared = common::scenario(&text);
        shared.seed = seed;
        assert!(shared.signing.share_public_work, "on by default");
        let mut alone = shared.clone();
        alone.signing.share_public_work = false;
        let a = common::run(&shared);
        let b = common::run(&alone);
        assert!(a.summary.signed > 5, "{suite}: {:?}", a.summary);
        assert_eq!(a.summary.trace_hash, b.summary.trace_hash, "{suite}");
        assert_eq!(a, b, "{suite}: results differ");
    }
}
