//! With constant latency and no loss, signing latency is exactly the number of
//! one-way hops (request, commit, package, share) times the latency, plus the
//! CPU time charged on the critical path.

mod common;

use quorate_sim::{Cost, CostTable};

#[test]
fn constant_latency_no_cpu_is_four_hops() {
    for latency in [10.0, 50.0, 76.5] {
        let r = common::run(&common::scenario(&common::basic(latency, 5)));
        assert_eq!(r.summary.signed, 5, "{:?}", r.summary);
        for s in &r.sessions {
            assert_eq!(s.latency_ms, Some(4.0 * latency), "{s:?}");
            assert_eq!(s.attempts, 1);
        }
    }
}

#[test]
fn constant_latency_with_cpu_adds_the_critical_path() {
    let latency = 50.0;
    let t = 3.0;
    let mut table = CostTable::default();
    let c = |us: f64, per: f64| Cost {
        base_us: us,
        per_k_us: per,
        per_k2_us: 0.0,
    };
    table.agg_start = c(100.0, 1.0);
    table.signer_commit = c(300.0, 0.0);
    table.agg_commit = c(50.0, 0.0);
    table.agg_package = c(70.0, 5.0);
    table.signer_share = c(400.0, 20.0);
    table.agg_share = c(60.0, 0.0);
    table.agg_final = c(500.0, 10.0);
    let mut s = common::scenario(&common::basic(latency, 4));
    s.cpu.model = quorate_sim::scenario::CpuModel::Inline;
    s.cpu.table = Some(table);
    let r = common::run(&s);
    // Signers work in parallel; the coordinator admits t commitments and t shares
    // one after another, building the package after the last commitment and
    // aggregating after the last share.
    let cpu_us = (100.0 + t)
        + 300.0
        + t * 50.0
        + (70.0 + 5.0 * t)
        + (400.0 + 20.0 * t)
        + t * 60.0
        + (500.0 + 10.0 * t);
    let expected = 4.0 * latency + cpu_us / 1000.0;
    assert_eq!(r.summary.signed, 4);
    for s in &r.sessions {
        let got = s.latency_ms.expect("signed");
        assert!(
            (got - expected).abs() < 1e-9,
            "got {got} expected {expected}"
        );
    }
}
