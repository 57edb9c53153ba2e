//! End-to-end: `quorate bench --spawn-devnet` starts its own devnet, drives it
//! through the HTTP API and reports every process, the baseline and the ratios.

use std::process::Command;

mod common;

#[test]
fn bench_drives_its_own_devnet_and_reports_every_process_and_the_baseline() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("net");
    let json = dir.path().join("bench.json");
    let offsets: Vec<u16> = (0..=3).chain(100..=103).collect();
    let base = common::port_block(&offsets).to_string();
    let http = common::port_block(&[0]).to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_quorate"))
        .args(["bench", "--spawn-devnet", "--data-dir"])
        .arg(&data)
        .args(["--base-port", &base, "--http-port", &http])
        .args(["--nodes", "3", "--threshold", "2"])
        .args([
            "--concurrency",
            "1,4",
            "--messages",
            "1,3",
            "--signatures",
            "12",
        ])
        .args([
            "--warmup",
            "2",
            "--baseline-seconds",
            "0.4",
            "--quiet",
            "--json",
        ])
        .arg(&json)
        .output()
        .expect("run quorate bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("| clients | msgs/req |"), "{stdout}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json")).expect("parse");
    assert!(
        report["baseline"]["limit_per_second"]
            .as_f64()
            .expect("limit")
            > 0.0
    );
    let rows = report["rows"].as_array().expect("rows");
    // 1 and 4 clients with one message each, then one client with 3 messages.
    let shape: Vec<(u64, u64)> = rows
        .iter()
        .map(|r| {
            (
                r["concurrency"].as_u64().expect("c"),
                r["messages"].as_u64().expect("m"),
            )
        })
        .collect();
    assert_eq!(shape, vec![(1, 1), (4, 1), (1, 3)]);
    for r in rows {
        let signatures = r["signatures"].as_u64().expect("signatures");
        assert!(signatures >= 12, "{r}");
        assert!(r["errors"].as_object().expect("errors").is_empty(), "{r}");
        assert!(r["latency_ms"]["p50"].as_f64().expect("p50") > 0.0, "{r}");
        let cpu = r["cpu"].as_array().expect("cpu");
        let names: Vec<&str> = cpu
            .iter()
            .map(|p| p["name"].as_str().expect("name"))
            .collect();
        assert_eq!(
            names,
            ["node1", "node2", "node3", "coordinator", "bench"],
            "{r}"
        );
        // Every signature took t = 2 shares, and selection spread them over every
        // node (three segments of one node each, two picked per session in turn).
        let shares: Vec<u64> = cpu.iter().filter_map(|p| p["shares"].as_u64()).collect();
        assert_eq!(shares.iter().sum::<u64>(), 2 * signatures, "{r}");
        assert!(shares.iter().all(|s| *s > 0), "{r}");
        assert!(r["coordinator_ratio"].as_f64().is_some(), "{r}");
    }
}
