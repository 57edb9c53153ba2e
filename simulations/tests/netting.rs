//! Netting rounds as a workload: the shipped 5 × 3 scenario settles every round,
//! every party's verified result equals the plaintext reference, the lying node is
//! named by every party and by the settlement opening and nobody honest is, and the
//! run is deterministic.

mod common;

use std::{collections::BTreeMap, path::Path};

use quorate_protocol::netting::reference;
use quorate_sim::{cli, NettingRound, RunResult, Scenario};

fn shipped() -> Scenario {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/netting-5x3.toml");
    Scenario::load(&path).unwrap_or_else(|e| panic!("netting-5x3: {e}"))
}

/// Every opened result equals `reference::compute` on the round's inputs,
/// checked here field by field (not through the simulator's own comparison).
fn check_against_reference(round: &NettingRound) {
    let plain = reference::compute(&round.spec, &round.inputs).expect("reference");
    for (p, (got, want)) in round.results.iter().zip(&plain).enumerate() {
        let got = got
            .as_ref()
            .unwrap_or_else(|| panic!("party {p} opened no result"));
        let want = want.as_ref().expect("every party submits");
        let bilateral: BTreeMap<(String, String), i128> = got
            .bilateral
            .iter()
            .map(|b| ((b.counterparty.clone(), b.asset.clone()), i128::from(b.net)))
            .collect();
        assert_eq!(bilateral, want.bilateral, "party {p} bilateral");
        let multilateral: BTreeMap<String, i128> = got
            .multilateral
            .iter()
            .map(|(a, v)| (a.clone(), i128::from(*v)))
            .collect();
        assert_eq!(multilateral, want.multilateral, "party {p} multilateral");
        assert!(got.mismatches.is_empty() && want.mismatches.is_empty());
    }
    let batch = round.batch.as_ref().expect("a settlement batch");
    assert_eq!(batch.round, round.spec.id);
    for t in &batch.transfers {
        let p = round.spec.party_index(&t.party).expect("party");
        let want = plain[p].as_ref().expect("party").multilateral[&t.asset];
        assert_eq!(i128::from(t.amount), want, "transfer {t:?}");
    }
}

fn check_run(r: &RunResult, liars: &[&str]) {
    let n = r.summary.netting.as_ref().expect("netting summary");
    assert_eq!((n.rounds, n.settled), (3, 3), "{n:#?}");
    assert!(n.results_match_reference);
    assert_eq!(n.culprits, liars);
    assert_eq!(r.netting.len(), 3);
    for round in &r.netting {
        check_against_reference(round);
    }
    for d in &n.detail {
        assert!(
            d.settled,
            "round {}: {:?} {:?}",
            d.round, d.outcome, d.fault
        );
        assert_eq!(d.parties_opened, 5);
        assert!(d.culprits_correct, "round {}: {:?}", d.round, d.culprits);
        assert_eq!(d.culprits, liars, "round {}", d.round);
        for liar in liars {
            assert_eq!(
                d.named_by_parties.get(*liar),
                Some(&5),
                "every party names {liar}"
            );
        }
        assert_eq!(d.named_by_settlement, liars);
        assert!(d.latency_ms.is_some_and(|l| l > 0.0));
        assert!(d.bytes > 0 && d.messages > 0);
        for p in &d.phases {
            assert!(p.ms.is_some_and(|ms| ms > 0.0), "round {} {p:?}", d.round);
            let sends = !matches!(p.phase, "dealing" | "opening");
            assert_eq!(p.bytes > 0, sends, "round {} {p:?}", d.round);
        }
        for t in &d.traffic {
            assert!(t.received_bytes > 0, "{t:?}");
        }
    }
    let settle: Vec<_> = r.sessions.iter().filter(|s| s.kind == "settle").collect();
    assert_eq!(settle.len(), 3);
    assert!(settle.iter().all(|s| s.outcome == "signed"));
    assert_eq!(
        r.summary.blame.accuracy.unwrap_or(1.0),
        1.0,
        "{:?}",
        r.summary.blame
    );
}

#[test]
fn shipped_netting_scenario_settles_names_the_liar_and_is_deterministic() {
    let s = shipped();
    let a = common::run(&s);
    check_run(&a, &["n2"]);
    let d = &a.summary.netting.as_ref().expect("netting").detail[0];
    assert_eq!(d.unanswered, ["n5"], "the silent node never answers");
    let b = common::run(&s);
    assert_eq!(a.summary.trace_hash, b.summary.trace_hash);
    assert_eq!(a, b, "same seed, same results");
    let mut other = s.clone();
    other.seed = 2;
    let c = common::run(&other);
    check_run(&c, &["n2"]);
    assert_ne!(a.summary.trace_hash, c.summary.trace_hash);
}

#[test]
fn honest_round_names_nobody_and_does_not_wait_for_the_deadline() {
    let mut s = shipped();
    let spec = s.netting.as_mut().expect("netting");
    spec.liars.clear();
    spec.silent.clear();
    spec.positions = quorate_sim::scenario::Positions::Sparse;
    spec.density = 0.5;
    let r = common::run(&s);
    check_run(&r, &[]);
    let spec = s.netting.as_ref().expect("netting");
    for d in &r.summary.netting.as_ref().expect("netting").detail {
        assert!(d.unanswered.is_empty());
        assert!(d.latency_ms.expect("settled") < spec.cutoff_ms + spec.result_timeout_ms);
    }
}

#[test]
fn a_crashed_node_and_a_liar_still_leave_t_honest_nodes() {
    let mut s = shipped();
    s.netting.as_mut().expect("netting").silent.clear();
    s.faults = vec![quorate_sim::scenario::FaultSpec {
        kind: quorate_sim::scenario::FaultKind::Crash,
        nodes: vec!["n4".into()],
        count: None,
        at_s: 0.0,
        until_s: None,
    }];
    let r = common::run(&s);
    check_run(&r, &["n2"]);
}

#[test]
fn netting_reports_are_written_and_typos_name_the_field() {
    let dir = common::temp_dir("netting");
    let out = dir.join("out");
    let summaries = cli::run(cli::SimArgs {
        scenario: Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/netting-5x3.toml"),
        seed: None,
        out: out.clone(),
        sweep: None,
        no_sweep: true,
        quiet: true,
        png: false,
    })
    .expect("run");
    assert_eq!(summaries.len(), 1);
    let csv = std::fs::read_to_string(out.join("netting-5x3/netting.csv")).expect("netting.csv");
    assert_eq!(csv.lines().count(), 4, "{csv}");
    assert!(csv.starts_with("round,outcome,settled"));
    let json = std::fs::read_to_string(out.join("netting-5x3/summary.json")).expect("json");
    assert!(json.contains("\"named_by_parties\""));
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/netting-5x3.toml"),
    )
    .expect("scenario");
    let e = Scenario::from_toml(&text.replace("liars =", "liers ="), "<test>").expect_err("typo");
    assert!(e.to_string().contains("liers"), "{e}");
    let e = Scenario::from_toml(&text.replace("assets = 2", "assets = 4"), "<test>")
        .expect_err("more assets than instruments");
    assert!(e.to_string().contains("netting.assets"), "{e}");
}
