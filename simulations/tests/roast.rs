//! `strategy = "roast"`: ROAST over presigned nonces (small committees; the
//! 67-of-100 runs are measurements, see the README).

mod common;

use quorate_sim::{PresignReport, RunResult, Scenario};

/// `n`-of-`t` under ROAST with constant `latency_ms` links and no CPU cost; the
/// first request arrives once the presign offers are in.
fn roast(n: u16, t: u16, latency_ms: f64, count: u32, extra: &str) -> Scenario {
    common::scenario(&format!(
        r#"
name = "roast"
seed = 3
[committee]
n = {n}
threshold = {t}
[network]
latency = {{ dist = "constant", ms = {latency_ms} }}
[signing]
strategy = "roast"
selection = "random"
[cpu]
model = "none"
[workload]
kind = "fixed-rate"
rate_per_s = 2.0
count = {count}
start_s = 1.0
duration_s = 100.0
drain_s = 20.0
{extra}
"#
    ))
}

fn byzantine(behaviour: &str, strategy: &str, count: u16) -> String {
    format!(
        r#"
[byzantine]
count = {count}
behaviour = "{behaviour}"
strategy = "{strategy}"
placement = "random"
"#
    )
}

fn presign(r: &RunResult) -> &PresignReport {
    r.summary
        .presign
        .as_ref()
        .expect("roast runs report presigning")
}

/// The ROAST invariants every run must keep.
fn check_bounds(r: &RunResult, n: u16, t: u16) {
    let (n, t) = (u32::from(n), u32::from(t));
    for rec in &r.sessions {
        let roast = rec.roast.as_ref().expect("roast record");
        assert!(
            roast.max_concurrent <= n - t + 1,
            "{} concurrent sessions: {rec:?}",
            roast.max_concurrent
        );
        if let Some(rounds) = roast.rounds {
            assert!(rounds <= 2 * (n - t) + 3, "{rounds} rounds: {rec:?}");
        }
        assert_eq!(roast.sessions, rec.attempts);
        // The round bound is a property of ROAST here, never a limit hit.
        assert_eq!(roast.round_capped, 0, "{rec:?}");
    }
    let p = presign(r);
    assert_eq!(p.reused, 0, "a commitment was handed out twice: {p:?}");
    assert_eq!(p.pool_refused, 0, "a pool refused a take: {p:?}");
    assert_eq!(p.signer_refusals, 0, "{p:?}");
    // Every nonce a pool handed out for a signature was one the book handed out
    // (some requests' last `PresignedSign`s may still be in flight when the run
    // ends); nonces dropped as lost in transit count as taken too.
    assert!(
        p.pool_taken - p.orphans_dropped <= p.commitments_used,
        "{p:?}"
    );
    assert!(p.commitments_used <= p.commitments_filed, "{p:?}");
}

#[test]
fn roast_signs_in_one_round_trip_without_faults() {
    let r = common::run(&roast(5, 3, 20.0, 6, ""));
    assert_eq!(r.summary.signed, 6, "{:?}", r.summary);
    for rec in &r.sessions {
        // PresignedSign out, SignShare back: two hops.
        assert_eq!(rec.latency_ms, Some(40.0), "{rec:?}");
        assert_eq!(rec.roast.as_ref().and_then(|x| x.rounds), Some(3));
        assert!(rec.culprits.is_empty());
    }
    check_bounds(&r, 5, 3);
    let p = presign(&r);
    assert_eq!(p.offers_refused, 0, "{p:?}");
    // Every member offered a full pool at start, then one commitment per share
    // (the last few may still be in flight when the run ends).
    assert!(p.commitments_filed >= 5 * 4, "{p:?}");
    assert!(p.pool_generated >= p.commitments_filed, "{p:?}");
    assert!(p.commitments_filed + 5 >= 5 * 4 + p.pool_taken, "{p:?}");
}

#[test]
fn roast_signs_with_up_to_n_minus_t_byzantine_signers() {
    let (n, t) = (7u16, 4u16);
    for behaviour in ["invalid-share", "withhold-share"] {
        for strategy in ["all", "coordinated"] {
            for f in 1..=(n - t) {
                let s = roast(n, t, 20.0, 4, &byzantine(behaviour, strategy, f));
                let r = common::run(&s);
                let what = format!("{behaviour} {strategy} f = {f}");
                assert_eq!(r.summary.signed, 4, "{what}: {:?}", r.summary);
                check_bounds(&r, n, t);
                for rec in &r.sessions {
                    let roast = rec.roast.as_ref().expect("roast record");
                    // Nobody honest is ever marked malicious.
                    assert_eq!(rec.culprits_correct as usize, rec.culprits.len(), "{what}");
                    // ROAST needs no timeout: f + 1 sessions of one round trip.
                    let latency = rec.latency_ms.expect("signed");
                    assert!(
                        latency <= f64::from(f + 1) * 40.0,
                        "{what}: {latency} ms {rec:?}"
                    );
                    if behaviour == "withhold-share" {
                        assert!(roast.malicious.is_empty(), "{what}: {rec:?}");
                    }
                }
                if behaviour == "invalid-share" {
                    assert_eq!(r.summary.blame.accuracy.unwrap_or(1.0), 1.0, "{what}");
                }
            }
        }
    }
}

#[test]
fn coordinated_invalid_shares_cost_one_round_trip_each() {
    // f = n − t colluding signers, one exposed per session: the worst case, at
    // most f + 1 waves of one round trip, each exposing one of them.
    let (n, t, f) = (10u16, 7u16, 3u16);
    let r = common::run(&roast(
        n,
        t,
        25.0,
        5,
        &byzantine("invalid-share", "coordinated", f),
    ));
    assert_eq!(r.summary.signed, 5, "{:?}", r.summary);
    check_bounds(&r, n, t);
    assert_eq!(r.summary.blame.accuracy, Some(1.0));
    for rec in &r.sessions {
        let roast = rec.roast.as_ref().expect("roast record");
        let rounds = roast.rounds.expect("signed");
        // One wave of one round trip per round pair after the offers.
        let waves = (rounds - 1) / 2;
        assert!(waves <= u32::from(f) + 1, "{rec:?}");
        assert_eq!(rec.latency_ms, Some(f64::from(waves) * 50.0), "{rec:?}");
        assert!(roast.malicious.len() <= usize::from(f), "{rec:?}");
        assert!(roast.malicious.len() as u32 >= waves - 1, "{rec:?}");
        let mut culprits = rec.culprits.clone();
        culprits.sort();
        let mut malicious = roast.malicious.clone();
        malicious.sort();
        assert_eq!(culprits, malicious, "{rec:?}");
    }
    // With every byzantine signer in the first session only one of them is
    // exposed per session, so some request needs all f + 1 waves.
    let worst = r
        .sessions
        .iter()
        .filter_map(|s| s.roast.as_ref().and_then(|x| x.rounds))
        .max();
    assert!(worst.is_some_and(|w| w > 3), "{worst:?}");
}

#[test]
fn sessions_run_concurrently_but_never_more_than_n_minus_t_plus_one() {
    // Silent signers keep their sessions running forever; with n − t of them
    // every session but the last has one, so up to n − t + 1 run at once.
    let (n, t) = (6u16, 3u16);
    let r = common::run(&roast(
        n,
        t,
        10.0,
        6,
        &byzantine("withhold-share", "coordinated", n - t),
    ));
    assert_eq!(r.summary.signed, 6, "{:?}", r.summary);
    check_bounds(&r, n, t);
    let most = r
        .sessions
        .iter()
        .filter_map(|s| s.roast.as_ref().map(|x| x.max_concurrent))
        .max()
        .unwrap_or(0);
    assert!(most > 1, "sessions should overlap: {most}");
}

#[test]
fn no_presigned_commitment_is_used_twice() {
    // Busy workload (requests overlapping), loss, duplication and reordering:
    // the book hands out every (node, epoch, index) once and no pool refuses.
    let s = common::scenario(
        r#"
name = "roast-busy"
seed = 5
[committee]
n = 5
threshold = 3
[network]
latency = { dist = "uniform", min_ms = 5.0, max_ms = 40.0 }
duplicate = 0.05
reorder = 0.1
reorder_ms = 15.0
[signing]
strategy = "roast"
presign_pool = 2
roast_deadline_ms = 3000
[cpu]
model = "default"
[workload]
kind = "poisson"
rate_per_s = 20.0
start_s = 0.5
duration_s = 5.0
drain_s = 5.0
[byzantine]
count = 1
behaviour = "invalid-share"
"#,
    );
    let r = common::run(&s);
    assert!(r.summary.sessions > 50, "{:?}", r.summary);
    assert_eq!(r.summary.signed, r.summary.sessions, "{:?}", r.summary);
    check_bounds(&r, 5, 3);
    let p = presign(&r);
    assert!(p.commitments_used > 150, "{p:?}");
}

#[test]
fn crashed_signers_need_no_timeout_and_restart_with_a_new_epoch() {
    let s = roast(
        5,
        3,
        20.0,
        10,
        r#"
[[faults]]
kind = "crash"
nodes = ["n1", "n2"]
at_s = 2.2
until_s = 3.7
"#,
    );
    let r = common::run(&s);
    assert_eq!(r.summary.signed, 10, "{:?}", r.summary);
    for rec in &r.sessions {
        // At most one session per crashed signer stalls: three waves at most.
        assert!(rec.latency_ms.expect("signed") <= 120.0, "{rec:?}");
    }
    let p = presign(&r);
    // The restarted nodes offered a whole new pool (new epoch), which the book
    // accepted; nothing of the old epochs was used again.
    assert_eq!(p.offers_refused, 0, "{p:?}");
    assert_eq!(p.reused, 0, "{p:?}");
    let used_after: usize = r
        .sessions
        .iter()
        .filter(|s| s.arrived_ms > 4000.0)
        .filter(|s| s.signers.iter().any(|x| x == "n1" || x == "n2"))
        .count();
    assert!(used_after > 0, "restarted signers are used again");
}

#[test]
fn roast_is_deterministic() {
    let text = r#"
name = "roast-rich"
[committee]
n = 7
threshold = 4
regions = ["eu", "us"]
[network]
latency = { dist = "log-normal", median_ms = 20.0, sigma = 0.5 }
jitter_ms = 5.0
loss = 0.01
duplicate = 0.05
reorder = 0.1
reorder_ms = 30.0
bandwidth_mbps = 10.0
clock_skew_ms = 40.0
[signing]
strategy = "roast"
roast_deadline_ms = 2000
[cpu]
model = "default"
[workload]
kind = "poisson"
rate_per_s = 4.0
duration_s = 6.0
drain_s = 5.0
[byzantine]
count = 2
behaviour = "invalid-share"
strategy = "coordinated"
[[faults]]
kind = "crash"
count = 1
at_s = 2.0
until_s = 4.0
"#;
    let mut hashes = std::collections::BTreeSet::new();
    for seed in [1u64, 2] {
        let mut s = common::scenario(text);
        s.seed = seed;
        let a = common::run(&s);
        let b = common::run(&s);
        assert!(a.summary.sessions > 10, "{:?}", a.summary);
        assert_eq!(a.summary.trace_hash, b.summary.trace_hash, "seed {seed}");
        assert_eq!(a, b, "seed {seed}: results differ");
        hashes.insert(a.summary.trace_hash);
    }
    assert_eq!(hashes.len(), 2, "different seeds, different traces");
}

#[test]
fn roast_beats_the_retry_loop_with_colluding_signers() {
    let (n, t, f) = (10u16, 7u16, 3u16);
    let byz = byzantine("invalid-share", "coordinated", f);
    let fast = common::run(&roast(n, t, 25.0, 3, &byz));
    let mut slow = roast(n, t, 25.0, 3, &byz);
    slow.signing.strategy = quorate_sim::scenario::SigningStrategy::Retry;
    let slow = common::run(&slow);
    assert_eq!(fast.summary.signed, 3);
    assert_eq!(slow.summary.signed, 3);
    assert!(slow.summary.presign.is_none());
    let max = |r: &RunResult| r.summary.latency_ms.as_ref().map_or(0.0, |l| l.max);
    assert!(max(&fast) < max(&slow), "{} vs {}", max(&fast), max(&slow));
}

#[test]
fn share_checks_hold_in_every_suite() {
    // The per-share check must accept every honest share and reject every
    // corrupted one, in each suite (secp256k1-tr negates keys for even y).
    for suite in ["secp256k1", "secp256k1-tr", "ed25519"] {
        let mut s = roast(5, 3, 10.0, 4, &byzantine("invalid-share", "coordinated", 2));
        s.committee.suite = suite.parse().expect("suite");
        let r = common::run(&s);
        assert_eq!(r.summary.signed, 4, "{suite}: {:?}", r.summary);
        assert_eq!(r.summary.blame.accuracy, Some(1.0), "{suite}");
        assert!(r.summary.blame.named > 0, "{suite}: someone was caught");
        check_bounds(&r, 5, 3);
    }
}

#[test]
fn nonces_lost_in_transit_are_replaced() {
    // Loss and reordering lose offers (the book refuses one that arrives after a
    // later one) and `PresignedSign`s: signers drop the nonces their coordinator
    // skipped and offer new ones, so the book does not run dry.
    let s = common::scenario(
        r#"
name = "roast-lossy"
seed = 2
[committee]
n = 7
threshold = 4
[network]
latency = { dist = "log-normal", median_ms = 20.0, sigma = 0.5 }
loss = 0.01
reorder = 0.1
reorder_ms = 30.0
[signing]
strategy = "roast"
roast_deadline_ms = 2000
[cpu]
model = "default"
[workload]
kind = "poisson"
rate_per_s = 4.0
duration_s = 25.0
drain_s = 5.0
[byzantine]
count = 1
behaviour = "invalid-share"
"#,
    );
    let r = common::run(&s);
    let p = presign(&r);
    assert!(p.offers_refused > 0 && p.orphans_dropped > 0, "{p:?}");
    assert_eq!(p.reused, 0, "{p:?}");
    assert!(r.summary.success_rate > 0.95, "{:?}", r.summary);
}
