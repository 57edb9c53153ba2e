//! The shipped scenarios parse and expand, and the command-line entry point
//! writes its reports and plots.

mod common;

use std::path::Path;

use common::temp_dir;
use quorate_sim::{
    cli,
    scenario::{Scenario, SigningStrategy},
    sweep,
};

fn shipped(name: &str) -> Scenario {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios")
        .join(name);
    Scenario::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn shipped_scenarios_are_valid_and_expand() {
    let wan = shipped("wan-3of5.toml");
    assert_eq!((wan.committee.n, wan.committee.threshold), (5, 3));
    let roast = shipped("roast-67of100.toml");
    let points = sweep::expand(&roast, roast.sweep.as_ref().expect("sweep")).expect("expand");
    assert_eq!(points.first().map(|p| p.label.as_str()), Some("0"));
    assert_eq!(
        points
            .last()
            .and_then(|p| p.scenario.byzantine.as_ref())
            .map(|b| b.count),
        Some(33)
    );
    assert_eq!(roast.max_attempts(), 34);
    // ROAST proper: the same network and adversary under the roast strategy.
    let proper = shipped("roast-proper-67of100.toml");
    assert_eq!(proper.signing.strategy, SigningStrategy::Roast);
    assert_eq!(roast.signing.strategy, SigningStrategy::Retry);
    assert_eq!(proper.network, roast.network);
    assert_eq!(proper.byzantine, roast.byzantine);
    assert_eq!(proper.sweep, roast.sweep);
    let small = shipped("roast-7of10.toml");
    assert_eq!((small.committee.n, small.committee.threshold), (10, 7));
    assert_eq!(small.signing.strategy, SigningStrategy::Roast);
    let dkg = shipped("dkg-scaling.toml");
    let points = sweep::expand(&dkg, dkg.sweep.as_ref().expect("sweep")).expect("expand");
    let sizes: Vec<u16> = points.iter().map(|p| p.scenario.committee.n).collect();
    assert_eq!(sizes, vec![5, 10, 25, 50, 100]);
    // Resharing 67-of-100 → 70-of-105 next to a DKG of the new committee on the
    // same network and CPU table.
    let reshare = shipped("reshare-67of100-to-70of105.toml");
    let r = reshare.reshare.as_ref().expect("[reshare]");
    assert_eq!((r.from_threshold, r.from_n), (67, 100));
    assert_eq!(
        (reshare.committee.threshold, r.new_n(&reshare.committee)),
        (70, 105)
    );
    assert_eq!(r.dealer_count(), 100);
    let baseline = shipped("dkg-70of105.toml");
    assert_eq!(
        (baseline.committee.threshold, baseline.committee.n),
        (70, 105)
    );
    assert_eq!(baseline.network, reshare.network);
    assert_eq!(baseline.cpu, reshare.cpu);
}

#[test]
fn sweep_of_an_unknown_field_is_an_error() {
    let wan = shipped("wan-3of5.toml");
    let spec = sweep::parse_cli("network.lost=0,0.1").expect("parse");
    let e = sweep::expand(&wan, &spec).expect_err("unknown field");
    assert!(e.to_string().contains("lost"), "{e}");
}

#[test]
fn cli_runs_a_sweep_and_writes_outputs() {
    let dir = temp_dir("cli");
    let scenario = dir.join("tiny.toml");
    std::fs::write(&scenario, common::TINY).expect("write scenario");
    let out = dir.join("out");
    let summaries = cli::run(cli::SimArgs {
        scenario: scenario.clone(),
        seed: Some(9),
        out: out.clone(),
        sweep: Some("network.loss=0,0.2".into()),
        no_sweep: false,
        quiet: true,
        png: false,
    })
    .expect("run");
    assert_eq!(summaries.len(), 2);
    assert!(summaries.iter().all(|s| s.seed == 9));
    assert_eq!(summaries[0].success_rate, 1.0);
    for f in [
        "sweep.json",
        "sweep.csv",
        "sweep-success.svg",
        "sweep-latency.svg",
    ] {
        assert!(out.join("tiny").join(f).is_file(), "{f} missing");
    }
    for f in [
        "summary.json",
        "sessions.csv",
        "latency-cdf.svg",
        "throughput.svg",
        "config.toml",
    ] {
        assert!(
            out.join("tiny/network.loss=0.2").join(f).is_file(),
            "{f} missing"
        );
    }
    let svg = std::fs::read_to_string(out.join("tiny/sweep-success.svg")).expect("svg");
    assert!(svg.contains("<svg") && svg.contains("success rate"));
    // The expanded configuration written next to the results parses back.
    let again = Scenario::load(&out.join("tiny/network.loss=0.2/config.toml")).expect("config");
    assert_eq!(again.network.loss, 0.2);
    let _ = std::fs::remove_dir_all(&dir);
}
