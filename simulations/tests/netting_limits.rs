//! Limit-checked netting rounds: the signed verdicts agree with the plaintext
//! truth of the generated collateral, uncovered rounds are never settled, the
//! MPC's costs are reported, a stalled check retries and then fails, and the run
//! is deterministic.

mod common;

use std::path::Path;

use quorate_sim::{RunResult, Scenario};

fn shipped() -> Scenario {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/netting-limits-5x3.toml");
    Scenario::load(&path).unwrap_or_else(|e| panic!("netting-limits-5x3: {e}"))
}

/// The shipped scenario cut to its first two rounds (one covered, one not).
fn small() -> Scenario {
    let mut s = shipped();
    s.netting.as_mut().expect("netting").rounds = 2;
    s
}

fn check_verdicts(r: &RunResult) {
    let n = r.summary.netting.as_ref().expect("netting summary");
    assert_eq!(n.verdict_disagreements, 0, "{n:#?}");
    assert_eq!(n.limit_checked, n.rounds);
    assert!(n.results_match_reference);
    for d in &n.detail {
        let l = d.limits.as_ref().expect("limits report");
        assert_eq!(l.covered, Some(l.plaintext_covered), "round {}", d.round);
        assert_eq!(l.failed, l.plaintext_failed, "round {}", d.round);
        assert_eq!(l.volumes, l.plaintext_volumes, "round {}", d.round);
        assert!(!l.volumes.is_empty(), "efficiency volumes are opened");
        assert!(l.verdicts >= 3 && l.disagreements == 0, "{l:?}");
        assert_eq!(
            (l.attempts, l.steps),
            (1, u32::from(quorate_protocol::netting::limits::STEPS)),
            "{l:?}"
        );
        assert!(l.products > 0 && l.openings > 0, "{l:?}");
        assert!(l.bytes_in > 10_000 && l.bytes_out > 10_000, "{l:?}");
        assert!(
            l.wire_bytes > l.bytes_in,
            "envelopes carry the parts: {l:?}"
        );
        assert!(l.ms.is_some_and(|ms| ms > 0.0), "{l:?}");
        if l.plaintext_covered {
            assert!(
                d.settled,
                "round {}: {:?} {:?}",
                d.round, d.outcome, d.fault
            );
            assert_eq!(d.parties_opened, d.participants);
            assert!(d.transfers > 0);
        } else {
            assert_eq!(d.outcome, "not-covered");
            assert!(!d.settled && d.settlement_message.is_none());
            assert_eq!(d.parties_opened, 0, "outputs stay with the nodes");
            assert!(!l.failed.is_empty(), "reveal_failures names the parties");
        }
    }
    let settled = n.detail.iter().filter(|d| d.settled).count() as u32;
    assert_eq!(settled, n.covered);
    let settle = r.sessions.iter().filter(|s| s.kind == "settle").count() as u32;
    assert_eq!(settle, n.covered, "only covered rounds are signed");
}

#[test]
fn limit_verdicts_match_the_plaintext_and_only_covered_rounds_settle() {
    let s = small();
    let a = common::run(&s);
    check_verdicts(&a);
    let n = a.summary.netting.as_ref().expect("netting");
    assert_eq!(
        (n.rounds, n.covered),
        (2, 1),
        "one covered, one not: {n:#?}"
    );
    let b = common::run(&s);
    assert_eq!(a.summary.trace_hash, b.summary.trace_hash);
    assert_eq!(a, b, "same seed, same results");
}

#[test]
fn a_silent_node_stalls_the_check_which_retries_then_fails_unsettled() {
    let mut s = small();
    let spec = s.netting.as_mut().expect("netting");
    spec.rounds = 1;
    spec.parties = 3;
    spec.silent = vec!["n5".into()];
    let limits = spec.limits.as_mut().expect("limits");
    limits.attempt_timeout_ms = 2_000.0;
    limits.attempts = 2;
    let r = common::run(&s);
    let d = &r.summary.netting.as_ref().expect("netting").detail[0];
    assert_eq!(d.outcome, "limits-failed", "{d:#?}");
    assert!(!d.settled);
    let l = d.limits.as_ref().expect("limits");
    assert_eq!((l.attempts, l.covered, l.steps), (2, None, 0), "{l:?}");
    assert_eq!(l.failures.len(), 2, "{l:?}");
    assert!(
        l.failures
            .iter()
            .all(|f| f.contains("step 0 waiting for n5")),
        "{l:?}"
    );
}

#[test]
fn limit_settings_are_checked_and_name_the_field() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/netting-limits-5x3.toml"),
    )
    .expect("scenario");
    let e = Scenario::from_toml(&text.replace("threshold = 3", "threshold = 4"), "<test>")
        .expect_err("2(t-1) >= n");
    assert!(e.to_string().contains("netting.limits"), "{e}");
    let e = Scenario::from_toml(&text.replace("attempts = 2", "attempts = 4"), "<test>")
        .expect_err("too many attempts");
    assert!(e.to_string().contains("netting.limits.attempts"), "{e}");
    let e = Scenario::from_toml(
        &text.replace("limit_ratio = 0.0", "limit_ration = 0.0"),
        "<test>",
    )
    .expect_err("typo");
    assert!(e.to_string().contains("limit_ration"), "{e}");
}
