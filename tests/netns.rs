//! Segments as Linux network namespaces: nodes in three segment namespaces, each
//! linked by a veth pair only to a core namespace holding the coordinator (no
//! forwarding), so nodes in different segments cannot reach each other. DKG and
//! signing must work through the coordinator relay, and cutting a segment's link
//! must make the coordinator sign with nodes elsewhere.
//!
//! Needs root and `ip netns`; without them the test prints why it skipped.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use quorate_coordinator::config::CoordinatorConfig;
use quorate_node::keystore::{KdfParams, Keystore, Passphrase};
use quorate_protocol::NodeIdentity;

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn ip_ok(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

struct Namespaces(Vec<String>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in &self.0 {
            ip(&["netns", "del", ns]);
        }
    }
}

struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
        }
        for c in &mut self.0 {
            let _ = c.wait();
        }
    }
}

fn in_ns(ns: &str, dir: &Path, log: &str, args: &[&str]) -> Child {
    let log = std::fs::File::create(dir.join(log)).expect("log");
    Command::new("ip")
        .args(["netns", "exec", ns, env!("CARGO_BIN_EXE_quorate")])
        .args(args)
        .current_dir(dir)
        .env("QUORATE_ADMIN_TOKEN", "netns-test-token")
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("spawn in namespace")
}

fn client(ns: &str, dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            env!("CARGO_BIN_EXE_quorate"),
            "client",
            "--url",
            "http://127.0.0.1:8080",
            "--roster",
            "roster.toml",
        ])
        .args(args)
        .current_dir(dir)
        .env("QUORATE_ADMIN_TOKEN", "netns-test-token")
        .output()
        .expect("client")
}

#[test]
fn segments_in_network_namespaces_sign_through_the_coordinator() {
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !is_root {
        println!("SKIPPED segments_in_network_namespaces: needs root to create network namespaces");
        return;
    }
    let tag = std::process::id() % 100_000;
    let core = format!("qcore{tag}");
    if !ip(&["netns", "add", &core]) {
        println!("SKIPPED segments_in_network_namespaces: `ip netns add` is not available here");
        return;
    }
    let mut nss = Namespaces(vec![core.clone()]);
    ip_ok(&["-n", &core, "link", "set", "lo", "up"]);
    // Three segments: 10.77.S.0/24, the core side is .1, the segment side .2.
    for s in 1..=3 {
        let ns = format!("qseg{s}x{tag}");
        ip_ok(&["netns", "add", &ns]);
        nss.0.push(ns.clone());
        let (a, b) = (format!("qc{s}x{tag}"), format!("qs{s}x{tag}"));
        ip_ok(&[
            "link", "add", &a, "netns", &core, "type", "veth", "peer", "name", &b, "netns", &ns,
        ]);
        ip_ok(&[
            "-n",
            &core,
            "addr",
            "add",
            &format!("10.77.{s}.1/24"),
            "dev",
            &a,
        ]);
        ip_ok(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("10.77.{s}.2/24"),
            "dev",
            &b,
        ]);
        for (n, d) in [(&core, &a), (&ns, &b)] {
            ip_ok(&["-n", n, "link", "set", d, "up"]);
        }
        ip_ok(&["-n", &ns, "link", "set", "lo", "up"]);
    }
    // 5 nodes: segment 1 holds nodes 1 and 4, segment 2 nodes 2 and 5, segment 3 node 3.
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let mut roster = String::new();
    let mut rng = rand_core::OsRng;
    for i in 1..=5usize {
        let seg = (i - 1) % 3 + 1;
        let id = NodeIdentity::generate(&mut rng);
        Keystore::init(
            d.join(format!("n{i}.keystore")),
            &Passphrase::new("pw-netns").expect("pw"),
            &id,
            KdfParams::insecure_for_tests(),
            &mut rng,
        )
        .expect("keystore");
        std::fs::write(d.join(format!("n{i}.pass")), "pw-netns").expect("pass");
        let p = id.public();
        roster.push_str(&format!(
            "[[nodes]]\nname = \"n{i}\"\nnode_id = \"{}\"\nseal_key = \"{}\"\nindex = {i}\nsegment = \"seg{seg}\"\naddresses = [\"/ip4/10.77.{seg}.2/tcp/{}\"]\n\n",
            p.node,
            hex::encode(p.seal_key),
            7500 + i
        ));
        std::fs::write(
            d.join(format!("n{i}.toml")),
            format!(
                "keystore = \"n{i}.keystore\"\npassphrase = {{ file = \"n{i}.pass\" }}\nroster = \"roster.toml\"\npolicy = \"policy.toml\"\naudit_log = \"n{i}.audit\"\nlisten = [\"/ip4/10.77.{seg}.2/tcp/{}\"]\nadmin = \"127.0.0.1:{}\"\nrouting = \"via-coordinator\"\n",
                7500 + i,
                7600 + i
            ),
        )
        .expect("node config");
    }
    let coordinator = NodeIdentity::generate(&mut rng);
    CoordinatorConfig::write_identity(&d.join("coordinator.identity"), &coordinator)
        .expect("identity");
    roster.push_str(&format!(
        "[[coordinators]]\nname = \"coordinator\"\nnode_id = \"{}\"\naddresses = [\"/ip4/10.77.1.1/tcp/7500\", \"/ip4/10.77.2.1/tcp/7500\", \"/ip4/10.77.3.1/tcp/7500\"]\n",
        coordinator.node_id()
    ));
    std::fs::write(d.join("roster.toml"), roster).expect("roster");
    let client_key = ed25519_dalek::SigningKey::generate(&mut rng);
    std::fs::write(d.join("client.key"), hex::encode(client_key.to_bytes())).expect("client key");
    let client_pub = hex::encode(client_key.verifying_key().to_bytes());
    std::fs::write(
        d.join("policy.toml"),
        format!("version = 1\n[clients.c]\npublic_key = \"{client_pub}\"\nkeys = [\"*\"]\nallow_raw = true\n[clients.c.limits.BTC]\nper_request = 1000000\nper_window = 100000000\n"),
    )
    .expect("policy");
    std::fs::write(
        d.join("coordinator.toml"),
        format!("identity_file = \"coordinator.identity\"\nroster = \"roster.toml\"\nlisten = [\"/ip4/0.0.0.0/tcp/7500\"]\nhttp_listen = \"127.0.0.1:8080\"\nadmin_token_env = \"QUORATE_ADMIN_TOKEN\"\ndata_dir = \"coord-data\"\nsession_timeout_ms = 5000\n\n[[clients]]\nname = \"c\"\npublic_key = \"{client_pub}\"\nrequests_per_minute = 600\n"),
    )
    .expect("coordinator config");

    let mut procs = Procs(Vec::new());
    procs.0.push(in_ns(
        &core,
        d,
        "coordinator.log",
        &["coordinator", "--config", "coordinator.toml"],
    ));
    for i in 1..=5usize {
        let seg = (i - 1) % 3 + 1;
        procs.0.push(in_ns(
            &format!("qseg{seg}x{tag}"),
            d,
            &format!("n{i}.log"),
            &["node", "--config", &format!("n{i}.toml")],
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let key_json = loop {
        std::thread::sleep(Duration::from_millis(500));
        let out = client(
            &core,
            d,
            &[
                "keys",
                "create",
                "--ciphersuite",
                "secp256k1-tr",
                "--threshold",
                "3",
                "--n",
                "5",
                "--min-segments",
                "3",
            ],
        );
        if out.status.success() {
            break String::from_utf8_lossy(&out.stdout).to_string();
        }
        assert!(
            Instant::now() < deadline,
            "DKG through the relay failed: {}\nlogs: {}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(d.join("coordinator.log")).unwrap_or_default()
        );
    };
    let key: serde_json::Value = serde_json::from_str(&key_json).expect("key json");
    // Node 2 (segment 2) listens: the core reaches it, segment 1 cannot.
    let reach = |ns: &str| {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                ns,
                "bash",
                "-c",
                "exec 3<>/dev/tcp/10.77.2.2/7502",
            ])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    assert!(
        reach(&core),
        "the coordinator's namespace reaches segment 2"
    );
    assert!(
        !reach(&format!("qseg1x{tag}")),
        "segment 1 must not reach segment 2"
    );
    let key_id = key["key_id"].as_str().expect("key id").to_string();

    let sign = |msg: &str| {
        client(
            &core,
            d,
            &[
                "sign",
                "--key",
                &key_id,
                "--client-key",
                "client.key",
                "--message",
                msg,
                "--amount",
                "10",
            ],
        )
    };
    let out = sign(&"11".repeat(32));
    assert!(
        out.status.success(),
        "signing through the relay: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Cut segment 1 (nodes 1 and 4): the coordinator signs with segments 2 and 3.
    ip_ok(&["-n", &core, "link", "set", &format!("qc1x{tag}"), "down"]);
    let out = sign(&"22".repeat(32));
    assert!(
        out.status.success(),
        "signing with segment 1 cut: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let job: serde_json::Value = serde_json::from_slice(&out.stdout).expect("job json");
    let signed_by: Vec<String> = job["result"]["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .filter(|a| a["outcome"] == "signed")
        .flat_map(|a| a["signers"].as_array().cloned().unwrap_or_default())
        .filter_map(|s| s.as_str().map(String::from))
        .collect();
    let roster_text = std::fs::read_to_string(d.join("roster.toml")).expect("roster");
    for s in &signed_by {
        let entry = roster_text
            .split("[[")
            .find(|e| e.contains(s.as_str()))
            .expect("signer in roster");
        assert!(
            !entry.contains("seg1"),
            "a node of the cut segment signed: {entry}"
        );
    }
    drop(procs);
    drop(nss);
}
