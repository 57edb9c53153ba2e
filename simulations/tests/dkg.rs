//! DKG workloads run the real DKG machines; byzantine members are named.

mod common;

fn dkg(byzantine: &str) -> quorate_sim::Scenario {
    common::scenario(&format!(
        r#"
name = "dkg"
[committee]
n = 4
threshold = 3
[network]
latency = {{ dist = "constant", ms = 25.0 }}
[dkg]
timeout_ms = 3000
[cpu]
model = "none"
[workload]
kind = "dkg"
rate_per_s = 0.1
count = 2
duration_s = 100.0
{byzantine}
"#
    ))
}

#[test]
fn honest_dkg_completes_in_four_rounds() {
    let r = common::run(&dkg(""));
    assert_eq!(r.summary.signed, 2, "{:?}", r.summary);
    for rec in &r.sessions {
        assert_eq!(rec.kind, "dkg");
        // round 1, echo, round 2, confirmation: four one-way hops.
        assert_eq!(rec.latency_ms, Some(100.0));
        // n(n-1) messages per round.
        assert_eq!(rec.messages, 4 * 12);
    }
}

#[test]
fn dkg_faults_name_the_culprit() {
    for behaviour in [
        "dkg-equivocate",
        "dkg-bad-proof",
        "dkg-bad-share",
        "dkg-withhold",
    ] {
        let r = common::run(&dkg(&format!(
            "[byzantine]\nnodes = [\"n3\"]\nbehaviour = \"{behaviour}\""
        )));
        assert_eq!(r.summary.signed, 0, "{behaviour}");
        for rec in &r.sessions {
            assert_eq!(rec.culprits, vec!["n3".to_string()], "{behaviour}: {rec:?}");
        }
        assert_eq!(r.summary.blame.accuracy, Some(1.0), "{behaviour}");
    }
}
