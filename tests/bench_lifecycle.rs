//! End-to-end: `quorate bench lifecycle --spawn-devnet` starts its own 4-node
//! devnet, creates a 2-of-3 key by DKG, reshares it to 3-of-4 through the API with
//! operations approved by the devnet's operator keys, runs a DKG of the new
//! committee next to it, and reports both with positive times.

use std::process::Command;

mod common;

#[test]
fn bench_lifecycle_reshares_next_to_a_dkg_and_reports_both() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("net");
    let json = dir.path().join("lifecycle.json");
    let offsets: Vec<u16> = (0..=4).chain(100..=104).collect();
    let base = common::port_block(&offsets).to_string();
    let http = common::port_block(&[0]).to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_quorate"))
        .args(["bench", "lifecycle", "--spawn-devnet", "--data-dir"])
        .arg(&data)
        .args(["--base-port", &base, "--http-port", &http])
        .args(["--nodes", "4", "--from", "2-of-3", "--to", "3-of-4"])
        .args(["--runs", "1", "--quiet", "--json"])
        .arg(&json)
        .output()
        .expect("run quorate bench lifecycle");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench lifecycle failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("| operation | committee |"), "{stdout}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json")).expect("parse");
    assert_eq!(report["from"], "2-of-3");
    assert_eq!(report["to"], "3-of-4");
    // The key went from generation 0 to 1 (one forward reshare, no way back).
    assert_eq!(report["generation"], 1, "{report}");
    assert!(report["setup_dkg_seconds"].as_f64().expect("setup") > 0.0);
    let rows = report["rows"].as_array().expect("rows");
    let ops: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| {
            (
                r["operation"].as_str().expect("operation"),
                r["committee"].as_str().expect("committee"),
            )
        })
        .collect();
    assert_eq!(
        ops,
        vec![("reshare", "2-of-3 -> 3-of-4"), ("dkg", "3-of-4")],
        "{report}"
    );
    for r in rows {
        let seconds = r["seconds"].as_array().expect("seconds");
        assert_eq!(seconds.len(), 1, "{r}");
        assert!(seconds[0].as_f64().expect("s") > 0.0, "{r}");
        assert!(r["median_seconds"].as_f64().expect("median") > 0.0, "{r}");
        assert_eq!(r["min_seconds"], r["max_seconds"], "one run: {r}");
        // The devnet's processes worked for it.
        assert!(r["median_cpu_seconds"].as_f64().expect("cpu") > 0.0, "{r}");
    }
    let processes = report["processes"].as_array().expect("processes");
    assert_eq!(
        processes.len(),
        5,
        "node1..node4 and the coordinator: {report}"
    );
}
