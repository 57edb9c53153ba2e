//! Crashes, byzantine signers and partitions.

mod common;

use quorate_sim::Scenario;

fn crash_scenario(seed: u64) -> Scenario {
    common::scenario(&format!(
        r#"
name = "crash"
seed = {seed}
[committee]
n = 9
threshold = 4
[network]
latency = {{ dist = "uniform", min_ms = 10.0, max_ms = 40.0 }}
[signing]
timeout_ms = 300
selection = "random"
[cpu]
model = "default"
[workload]
kind = "fixed-rate"
rate_per_s = 2.0
count = 25
duration_s = 1000.0
[[faults]]
kind = "crash"
count = 5
at_s = 0.0
"#
    ))
}

#[test]
fn robust_signing_survives_n_minus_t_crashes() {
    for seed in [1u64, 2, 3] {
        let r = common::run(&crash_scenario(seed));
        let s = &r.summary;
        assert_eq!(s.signed, s.sessions, "seed {seed}: {s:?}");
        assert!(
            s.attempts_max <= 9 - 4 + 1,
            "seed {seed}: {} attempts",
            s.attempts_max
        );
        assert!(s.attempts_max > 1, "crashed signers must have cost retries");
        // Crashed nodes named on timeout are rightly blamed.
        assert_eq!(s.blame.accuracy, Some(1.0));
    }
}

#[test]
fn without_retries_crashes_make_sessions_fail() {
    let mut s = crash_scenario(1);
    s.signing.retry = false;
    let r = common::run(&s);
    assert!(r.summary.success_rate < 0.5, "{:?}", r.summary.success_rate);
    assert!(r.summary.timed_out > 0);
}

fn byzantine(behaviour: &str, strategy: &str, nodes: &str, n: u16, t: u16) -> Scenario {
    common::scenario(&format!(
        r#"
name = "byz"
[committee]
n = {n}
threshold = {t}
[network]
latency = {{ dist = "constant", ms = 20.0 }}
[signing]
timeout_ms = 400
selection = "first"
[cpu]
model = "none"
[workload]
kind = "fixed-rate"
count = 10
duration_s = 100.0
[byzantine]
nodes = [{nodes}]
behaviour = "{behaviour}"
strategy = "{strategy}"
"#
    ))
}

#[test]
fn invalid_share_is_blamed_and_retry_succeeds() {
    let r = common::run(&byzantine("invalid-share", "all", "\"n1\"", 5, 3));
    let s = &r.summary;
    assert_eq!(s.success_rate, 1.0, "{s:?}");
    assert_eq!(s.blame.accuracy, Some(1.0));
    assert_eq!(s.blame.byzantine_named, 1);
    for rec in &r.sessions {
        assert_eq!(rec.attempts, 2, "{rec:?}");
        assert_eq!(rec.culprits, vec!["n1".to_string()]);
        assert_eq!(rec.fault.as_deref(), Some("invalid signature share"));
        // Two attempts at 4 hops each, the first ending when the bad share is found.
        assert_eq!(rec.latency_ms, Some(8.0 * 20.0));
    }
}

#[test]
fn coordinated_byzantine_signers_fail_one_attempt_each() {
    let r = common::run(&byzantine(
        "invalid-share",
        "coordinated",
        "\"n1\", \"n2\", \"n3\"",
        7,
        4,
    ));
    let s = &r.summary;
    assert_eq!(s.success_rate, 1.0, "{s:?}");
    assert_eq!(s.blame.accuracy, Some(1.0));
    for rec in &r.sessions {
        assert_eq!(rec.attempts, 4, "{rec:?}");
        assert_eq!(rec.culprits, vec!["n1", "n2", "n3"]);
    }
}

#[test]
fn withheld_shares_are_blamed_on_timeout() {
    let r = common::run(&byzantine("withhold-share", "all", "\"n2\"", 5, 3));
    let s = &r.summary;
    assert_eq!(s.success_rate, 1.0, "{s:?}");
    assert_eq!(s.blame.accuracy, Some(1.0));
    for rec in &r.sessions {
        assert_eq!(rec.culprits, vec!["n2".to_string()]);
        assert!(
            rec.latency_ms.expect("signed") > 400.0,
            "waited for the deadline"
        );
    }
}

#[test]
fn partition_heals_and_progress_resumes() {
    let r = common::run(&common::scenario(
        r#"
name = "partition"
[committee]
n = 5
threshold = 3
[network]
latency = { dist = "constant", ms = 20.0 }
[[network.partitions]]
start_s = 10.0
end_s = 20.0
a = ["coordinator"]
b = ["signers"]
[signing]
timeout_ms = 1000
[cpu]
model = "none"
[workload]
kind = "fixed-rate"
rate_per_s = 1.0
duration_s = 40.0
"#,
    ));
    assert_eq!(r.sessions.len(), 40);
    for rec in &r.sessions {
        let t = rec.arrived_ms / 1000.0;
        if !(9.5..20.0).contains(&t) {
            assert_eq!(rec.outcome, "signed", "{rec:?}");
        } else if (10.0..18.0).contains(&t) {
            assert_ne!(rec.outcome, "signed", "{rec:?}");
        }
    }
    // Honest nodes cut off by the partition were named: not their fault.
    assert!(r.summary.blame.accuracy.expect("blames") < 1.0);
}

#[test]
fn paused_signer_delays_but_does_not_fail() {
    let r = common::run(&common::scenario(
        r#"
name = "pause"
[committee]
n = 3
threshold = 3
[network]
latency = { dist = "constant", ms = 10.0 }
[signing]
timeout_ms = 5000
[cpu]
model = "none"
[workload]
kind = "fixed-rate"
count = 3
duration_s = 10.0
[[faults]]
kind = "pause"
nodes = ["n2"]
at_s = 0.5
until_s = 1.5
"#,
    ));
    assert_eq!(r.summary.signed, 3);
    // The request at t = 1 s waits until n2 resumes at 1.5 s.
    let second = &r.sessions[1];
    assert!(second.latency_ms.expect("signed") > 500.0, "{second:?}");
    assert_eq!(r.sessions[2].latency_ms, Some(40.0));
}

#[test]
fn delayed_signer_slows_signing_without_blame() {
    let r = common::run(&byzantine("delay", "all", "\"n1\"", 5, 3));
    let s = &r.summary;
    assert_eq!(s.success_rate, 1.0, "{s:?}");
    assert_eq!(s.blame.named, 0);
    for rec in &r.sessions {
        // Commitment and share each held back by 0.35 × 400 ms.
        assert_eq!(rec.latency_ms, Some(4.0 * 20.0 + 2.0 * 140.0), "{rec:?}");
    }
}

#[test]
fn replayed_messages_do_not_count_and_are_blamed() {
    let r = common::run(&byzantine("replay", "all", "\"n1\"", 5, 3));
    let s = &r.summary;
    assert_eq!(s.success_rate, 1.0, "{s:?}");
    assert_eq!(s.blame.accuracy, Some(1.0));
    for rec in &r.sessions {
        assert_eq!(rec.culprits, vec!["n1".to_string()], "{rec:?}");
    }
    let coordinator = s.nodes.last().expect("coordinator");
    assert!(
        coordinator.stats.stale > 0,
        "old-session messages arrived and were dropped"
    );
}
