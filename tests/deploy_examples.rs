//! The deployment examples in deploy/ stay valid: they parse with the real loaders.

use std::path::Path;

fn deploy(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(name)
}

#[test]
fn example_roster_node_and_coordinator_configs_load() {
    let roster = quorate_protocol::roster::Roster::from_toml(
        &std::fs::read_to_string(deploy("roster.example.toml")).expect("read"),
    )
    .expect("example roster is valid");
    assert_eq!(roster.signers().count(), 5);
    assert_eq!(roster.epoch(), 1);
    assert_eq!(roster.coordinators().count(), 1);
    let segments: std::collections::BTreeSet<_> = roster
        .signers()
        .filter_map(|p| p.signer.as_ref().map(|s| s.1.clone()))
        .collect();
    assert_eq!(segments.len(), 3);
    quorate_node::roster::Roster::from_toml(
        &std::fs::read_to_string(deploy("roster.example.toml")).expect("read"),
    )
    .expect("addresses parse as multiaddrs");
    let node = quorate_node::config::NodeConfig::load(&deploy("node.example.toml"))
        .expect("example node config is valid");
    assert!(node.authority().is_some());
    quorate_coordinator::config::CoordinatorConfig::load(deploy("coordinator.example.toml"))
        .expect("example coordinator config is valid");
    let unit = std::fs::read_to_string(deploy("quorate-node.service")).expect("unit");
    assert!(unit.contains("ExecStart=/usr/local/bin/quorate node --config /etc/quorate/node.toml"));
}
