//! End-to-end: the real `quorate` binary's devnet produces a verified signature for
//! every ciphersuite.

use std::process::Command;

#[test]
fn devnet_signs_and_verifies_with_every_ciphersuite() {
    let out = Command::new(env!("CARGO_BIN_EXE_quorate"))
        .args(["devnet", "--nodes", "4", "--threshold", "3"])
        .output()
        .expect("run quorate devnet");
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
}

#[test]
fn devnet_rejects_impossible_threshold_with_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_quorate"))
        .args(["devnet", "--nodes", "3", "--threshold", "4"])
        .output()
        .expect("run quorate devnet");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--threshold must be between 2 and --nodes (3)"),
        "{stderr}"
    );
}
