//! Independent loss p without retries: the success rate matches
//! (1 − p)^(messages on the critical path) within a binomial confidence bound.
//! A t-signer attempt needs all of: t requests, t commitments, t packages and
//! t shares, i.e. 4t messages.

mod common;

fn success_rate(loss: f64, sessions: u64, seed: u64) -> f64 {
    let text = format!(
        r#"
name = "loss"
seed = {seed}
[committee]
n = 3
threshold = 2
[network]
latency = {{ dist = "uniform", min_ms = 5.0, max_ms = 30.0 }}
loss = {loss}
[signing]
retry = false
timeout_ms = 500
[cpu]
model = "none"
[workload]
kind = "fixed-rate"
rate_per_s = 2.0
count = {sessions}
duration_s = 10000.0
"#
    );
    let r = common::run(&common::scenario(&text));
    assert_eq!(r.summary.sessions, sessions);
    assert_eq!(r.summary.attempts_max, 1, "no retries");
    r.summary.success_rate
}

#[test]
fn success_rate_matches_theory() {
    let n = 800u64;
    let t = 2;
    for (loss, seed) in [(0.05, 11u64), (0.1, 12)] {
        let expected = (1.0f64 - loss).powi(4 * t);
        let sd = (expected * (1.0 - expected) / n as f64).sqrt();
        let got = success_rate(loss, n, seed);
        assert!(
            (got - expected).abs() <= 4.0 * sd,
            "loss {loss}: success {got:.3}, theory {expected:.3} ± {:.3}",
            4.0 * sd
        );
    }
}

#[test]
fn no_loss_means_every_session_succeeds() {
    assert_eq!(success_rate(0.0, 50, 3), 1.0);
}
