//! End-to-end: the real `quorate devnet` starts node and coordinator processes on
//! loopback and proves the system works with three verified signatures.

use std::{net::TcpListener, process::Command};

mod common;

fn free_port_block(len: u16) -> u16 {
    let offsets: Vec<u16> = (0..=len).chain(100..=100 + len).collect();
    common::port_block(&offsets)
}

fn devnet(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_quorate"))
        .arg("devnet")
        .args(args)
        .output()
        .expect("run quorate devnet")
}

#[test]
fn devnet_demo_signs_and_verifies_with_every_ciphersuite_and_keys_survive_restart() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("net");
    let base = free_port_block(6);
    let http = free_port_block(0).to_string();
    let base_s = base.to_string();
    let common = [
        "--data-dir",
        data.to_str().expect("utf8"),
        "--base-port",
        &base_s,
        "--http-port",
        &http,
        "--nodes",
        "5",
        "--threshold",
        "3",
        "--segments",
        "2",
    ];
    let out = devnet(&[&common[..], &["--demo", "--exit"]].concat());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "devnet failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for suite in ["secp256k1 ", "secp256k1-tr ", "ed25519 "] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(suite))
            .unwrap_or_else(|| panic!("no line for {suite}: {stdout}"));
        assert!(line.ends_with("signature verified"), "{line}");
    }
    // The netting demo: settled, every desk verified its result and the signature.
    let netting = stdout
        .lines()
        .find(|l| l.starts_with("netting round "))
        .unwrap_or_else(|| panic!("no netting line: {stdout}"));
    assert!(
        netting.ends_with(
            "settled: 6 transfers, every party verified its result, settlement signature verified"
        ),
        "{netting}"
    );
    // The limit-checked demo round: not settled, the short desk named by the
    // nodes' verified verdict, every desk's own bits as the plaintext says.
    let limits = stdout
        .lines()
        .find(|l| l.starts_with("limit-checked round "))
        .unwrap_or_else(|| panic!("no limit-checked line: {stdout}"));
    assert!(
        limits.contains("not settled:")
            && limits.contains("not covered (verdict signed by")
            && limits.ends_with("every desk opened its own bits"),
        "{limits}"
    );
    for f in ["desk-a.party", "desk-a.csv", "round.toml"] {
        assert!(data.join("netting").join(f).exists(), "{f}");
    }
    // Every node's audit log verifies, records three keys (the netting round is
    // settled by the demo's secp256k1-tr key) and the round: three bundles and
    // the close on every node; at least a threshold of nodes approved the
    // settlement (the signers of the attempt).
    let mut approved = 0;
    for i in 1..=5 {
        let log = data.join(format!("node{i}.audit.jsonl"));
        let v = Command::new(env!("CARGO_BIN_EXE_quorate"))
            .args(["audit", "verify"])
            .arg(&log)
            .output()
            .expect("audit");
        assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
        let text = std::fs::read_to_string(&log).expect("log");
        assert_eq!(text.matches("key_generated").count(), 3, "{text}");
        // Two rounds: the settled one and the limit-checked one.
        assert_eq!(
            text.matches("\"netting_bundle_accepted\"").count(),
            6,
            "{text}"
        );
        assert_eq!(text.matches("\"netting_closed\"").count(), 2, "{text}");
        assert_eq!(text.matches("\"limit_verdict\"").count(), 1, "{text}");
        if text.contains("\"settlement_approved\"") {
            approved += 1;
        }
    }
    assert!(
        approved >= 3,
        "only {approved} nodes approved the settlement"
    );
    // A second run reuses the data directory: same identities, keys kept.
    let out = devnet(&[&common[..], &["--exit"]].concat());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("reusing"), "{stdout}");
    let store = std::fs::read_dir(data.join("coordinator-data"))
        .expect("store")
        .count();
    assert!(store > 0);
}

#[test]
fn devnet_reports_busy_ports_and_bad_parameters_clearly() {
    let busy = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = busy.local_addr().expect("addr").port().to_string();
    let dir = tempfile::tempdir().expect("tmp");
    let out = devnet(&[
        "--data-dir",
        dir.path().to_str().expect("utf8"),
        "--http-port",
        &port,
        "--exit",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("port {port} (coordinator HTTP) is busy")),
        "{stderr}"
    );

    let out = devnet(&["--nodes", "3", "--threshold", "4", "--exit"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--threshold must be between 2 and --nodes (3)"),
        "{stderr}"
    );
}
