//! `quorate devnet`: a local network of real processes on loopback.
//!
//! Generates node identities (sealed keystores), a roster spanning several segments,
//! a client key and a policy into a data directory; starts every node and a
//! coordinator as separate `quorate` processes; waits until all are healthy; prints
//! the coordinator URL and copy-paste commands. `--demo` then runs a DKG for every
//! ciphersuite through the HTTP API, signs, and verifies, then nets three demo
//! desks' positions (`devnet_netting`). Ctrl-C stops everything.
//! A second run reuses the data directory (keys survive) unless `--fresh`.

use std::{
    fmt::Write as _,
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context};
use quorate_coordinator::{
    api::model::{CreateKeyBody, ParticipantsBody},
    client::{verify_job, verify_key, Client, RequestBuilder, SignOptions},
    config::CoordinatorConfig,
};
use quorate_node::keystore::{KdfParams, Keystore, Passphrase};
use quorate_protocol::{Ciphersuite, KeyId, NodeIdentity};
use rand_core::{OsRng, RngCore};

/// Options of `quorate devnet`.
#[derive(clap::Args)]
pub(crate) struct DevnetArgs {
    /// Number of signer nodes.
    #[arg(long, default_value_t = 5)]
    pub(crate) nodes: usize,
    /// Signatures need this many nodes.
    #[arg(long, default_value_t = 3)]
    pub(crate) threshold: u16,
    /// Number of network segments the nodes are spread over.
    #[arg(long, default_value_t = 3)]
    pub(crate) segments: usize,
    /// Data directory (identities, keystores, configs, logs, audit logs).
    #[arg(long, default_value = "devnet-data")]
    pub(crate) data_dir: PathBuf,
    /// Delete the data directory first (new identities, no keys).
    #[arg(long)]
    pub(crate) fresh: bool,
    /// First port: the coordinator's libp2p port; nodes use the next ones and
    /// admin ports at +100.
    #[arg(long, default_value_t = 7400)]
    pub(crate) base_port: u16,
    /// Coordinator HTTP port.
    #[arg(long, default_value_t = 8080)]
    pub(crate) http_port: u16,
    /// Run DKG for every ciphersuite, sign and verify, and print the results.
    #[arg(long)]
    pub(crate) demo: bool,
    /// Exit after startup (and the demo) instead of waiting for Ctrl-C.
    #[arg(long)]
    pub(crate) exit: bool,
}

struct Layout {
    dir: PathBuf,
    n: usize,
    base_port: u16,
    http_port: u16,
}

impl Layout {
    fn node_port(&self, i: usize) -> u16 {
        self.base_port + 1 + i as u16
    }
    fn admin_port(&self, i: usize) -> u16 {
        self.base_port + 101 + i as u16
    }
    fn ports(&self) -> Vec<(u16, String)> {
        let mut p = vec![
            (self.base_port, "coordinator libp2p".to_string()),
            (self.http_port, "coordinator HTTP".into()),
        ];
        for i in 0..self.n {
            p.push((self.node_port(i), format!("node{} libp2p", i + 1)));
            p.push((self.admin_port(i), format!("node{} admin", i + 1)));
        }
        p
    }
}

pub(crate) fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    std::io::Write::write_all(&mut f, contents.as_bytes())?;
    Ok(())
}

fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

/// Creates identities, keystores, roster, policy and configs (first run only).
fn generate(l: &Layout, segments: usize) -> anyhow::Result<()> {
    let dir = &l.dir;
    // The devnet is its own roster authority: the roster is signed (epoch 1) and
    // every node and the coordinator require the signature.
    let authority = ed25519_dalek::SigningKey::generate(&mut OsRng);
    write_private(
        &dir.join("roster-authority.key"),
        &hex::encode(authority.to_bytes()),
    )?;
    let authority_pub = hex::encode(authority.verifying_key().to_bytes());
    let mut roster = String::from("epoch = 1\n\n");
    let client = ed25519_dalek::SigningKey::generate(&mut OsRng);
    write_private(&dir.join("client.key"), &hex::encode(client.to_bytes()))?;
    let client_pub = hex::encode(client.verifying_key().to_bytes());
    let bench_pub = new_bench_client(dir)?;
    let admin_token = random_hex(16);
    write_private(&dir.join("admin.token"), &admin_token)?;
    for i in 0..l.n {
        let name = format!("node{}", i + 1);
        let pass = random_hex(24);
        write_private(&dir.join(format!("{name}.pass")), &pass)?;
        let identity = NodeIdentity::generate(&mut OsRng);
        Keystore::init(
            dir.join(format!("{name}.keystore")),
            &Passphrase::new(pass)?,
            &identity,
            KdfParams::production(),
            &mut OsRng,
        )?;
        let p = identity.public();
        writeln!(
            roster,
            "[[nodes]]\nname = \"{name}\"\nnode_id = \"{}\"\nseal_key = \"{}\"\nindex = {}\nsegment = \"segment-{}\"\naddresses = [\"/ip4/127.0.0.1/tcp/{}\"]\n",
            p.node,
            hex::encode(p.seal_key),
            i + 1,
            i % segments + 1,
            l.node_port(i)
        )?;
        std::fs::write(
            dir.join(format!("{name}.toml")),
            format!(
                "keystore = \"{name}.keystore\"\npassphrase = {{ file = \"{name}.pass\" }}\nroster = \"roster.toml\"\nroster_authority = \"{authority_pub}\"\npolicy = \"policy.toml\"\naudit_log = \"{name}.audit.jsonl\"\nlisten = [\"/ip4/127.0.0.1/tcp/{}\"]\nadmin = \"127.0.0.1:{}\"\n\n# The devnet's own floor for keys it generates (production defaults: 2 and 1).\n[limits]\nmin_dkg_threshold = 2\nmin_dkg_segments = 1\n",
                l.node_port(i),
                l.admin_port(i)
            ),
        )?;
    }
    let coordinator = NodeIdentity::generate(&mut OsRng);
    CoordinatorConfig::write_identity(&dir.join("coordinator.identity"), &coordinator)?;
    writeln!(
        roster,
        "[[coordinators]]\nname = \"coordinator\"\nnode_id = \"{}\"\naddresses = [\"/ip4/127.0.0.1/tcp/{}\"]",
        coordinator.node_id(),
        l.base_port
    )?;
    let (_, signature) = quorate_protocol::roster::sign_roster(roster.as_bytes(), &authority)?;
    std::fs::write(dir.join("roster.toml"), roster)?;
    std::fs::write(dir.join("roster.toml.sig"), hex::encode(signature))?;
    std::fs::write(
        dir.join("policy.toml"),
        policy_text(&client_pub, Some(&bench_pub)),
    )?;
    std::fs::write(
        dir.join("coordinator.toml"),
        format!(
            "identity_file = \"coordinator.identity\"\nroster = \"roster.toml\"\nroster_authority = \"{authority_pub}\"\nlisten = [\"/ip4/127.0.0.1/tcp/{}\"]\nhttp_listen = \"127.0.0.1:{}\"\nadmin_token_env = \"QUORATE_ADMIN_TOKEN\"\ndata_dir = \"coordinator-data\"\n\n[[clients]]\nname = \"devnet-client\"\npublic_key = \"{client_pub}\"\nrequests_per_minute = 600\n{}",
            l.base_port, l.http_port, bench_coordinator_client(&bench_pub)
        ),
    )?;
    Ok(())
}

/// Creates `bench-client.key`, the load generator's client (`quorate bench`), and
/// returns its public key (hex).
fn new_bench_client(dir: &Path) -> anyhow::Result<String> {
    let bench = ed25519_dalek::SigningKey::generate(&mut OsRng);
    write_private(
        &dir.join("bench-client.key"),
        &hex::encode(bench.to_bytes()),
    )?;
    Ok(hex::encode(bench.verifying_key().to_bytes()))
}

/// The bench client's entry in `coordinator.toml`: no practical rate limit.
fn bench_coordinator_client(bench_pub: &str) -> String {
    format!("\n[[clients]]\nname = \"bench-client\"\npublic_key = \"{bench_pub}\"\nrequests_per_minute = 1000000\n")
}

/// Every node's policy: the devnet client may sign raw messages and regtest
/// transactions (PSBT) with every key and create netting rounds, and every node
/// signs netting settlement batches with every key. The bench client
/// (`quorate bench`) may sign raw messages with every key for the `BENCH` asset
/// only, one unit per request.
fn policy_text(client_pub: &str, bench_pub: Option<&str>) -> String {
    let mut text = format!(
        "version = 1\n\n[netting]\nsettlement_keys = [\"*\"]\n\n[clients.devnet-client]\npublic_key = \"{client_pub}\"\nkeys = [\"*\"]\nallow_raw = true\nnetting = true\n\n[clients.devnet-client.limits.BTC]\nper_request = 100_000_000\nper_window = 1_000_000_000\n{DEVNET_BITCOIN}"
    );
    if let Some(bench) = bench_pub {
        text.push_str(&bench_policy_client(bench));
    }
    text
}

/// The bench client's policy: every key, one unit of `BENCH` per request.
fn bench_policy_client(bench_pub: &str) -> String {
    format!(
        "\n[clients.bench-client]\npublic_key = \"{bench_pub}\"\nkeys = [\"*\"]\nallow_raw = true\n\n[clients.bench-client.limits.BENCH]\nper_request = 1\nper_window = 1_000_000_000_000\n"
    )
}

/// The devnet client's `bitcoin_psbt` rules: regtest transactions, default
/// sighash only, fee at most 0.01 BTC and 1 000 sat/vB.
const DEVNET_BITCOIN: &str = "\n[clients.devnet-client.bitcoin]\nnetwork = \"regtest\"\nmax_fee = 1_000_000\nmax_fee_rate = 1000\n";

/// A policy from before typed requests: raw requests allowed explicitly
/// (`allow_raw`, what they were allowed implicitly) and the devnet client's
/// `[bitcoin]` rules added.
fn upgrade_for_psbt(policy: &Path) -> anyhow::Result<()> {
    let mut text =
        std::fs::read_to_string(policy).with_context(|| format!("reading {}", policy.display()))?;
    let before = text.clone();
    if !text.contains("allow_raw") {
        text = text.replace("keys = [\"*\"]\n", "keys = [\"*\"]\nallow_raw = true\n");
    }
    if !text.contains("[clients.devnet-client.bitcoin]") {
        text.push_str(DEVNET_BITCOIN);
    }
    if text != before {
        std::fs::write(policy, text)?;
        println!(
            "policy.toml: allow_raw = true for the devnet clients, regtest PSBTs for devnet-client"
        );
    }
    Ok(())
}

/// The public key (hex) of the Ed25519 key in a `*.key` file of the data directory.
pub(crate) fn public_of(dir: &Path, file: &str) -> anyhow::Result<String> {
    let key = std::fs::read_to_string(dir.join(file))?;
    let mut sk = [0u8; 32];
    hex::decode_to_slice(key.trim(), &mut sk).with_context(|| file.to_string())?;
    let public = ed25519_dalek::SigningKey::from_bytes(&sk).verifying_key();
    Ok(hex::encode(public.to_bytes()))
}

/// A data directory from before netting: enables it in the policy (rewritten from
/// the client key) and writes the demo desks' files.
fn upgrade_for_netting(dir: &Path) -> anyhow::Result<()> {
    let policy = dir.join("policy.toml");
    let text = std::fs::read_to_string(&policy)
        .with_context(|| format!("reading {}", policy.display()))?;
    if !text.contains("[netting]") {
        let client = public_of(dir, "client.key")?;
        std::fs::write(&policy, policy_text(&client, None))?;
        println!("policy.toml: netting enabled for devnet-client (settlement_keys = [\"*\"])");
    }
    if !dir.join("bench-client.key").exists() {
        // A data directory from before `quorate bench`: its client is appended to
        // the coordinator's clients and to the policy (the rest is left as it is).
        let bench = new_bench_client(dir)?;
        let coordinator = dir.join("coordinator.toml");
        let mut toml = std::fs::read_to_string(&coordinator)?;
        toml.push_str(&bench_coordinator_client(&bench));
        std::fs::write(&coordinator, toml)?;
        let mut text = std::fs::read_to_string(&policy)?;
        text.push_str(&bench_policy_client(&bench));
        std::fs::write(&policy, text)?;
        println!("coordinator.toml, policy.toml: bench-client added (quorate bench)");
    }
    upgrade_for_psbt(&policy)?;
    crate::devnet_netting::ensure_material(dir)
}

struct Children(Vec<(String, Child)>);

impl Drop for Children {
    fn drop(&mut self) {
        for (_, c) in &mut self.0 {
            // SIGTERM for a graceful stop, then wait (bounded).
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        for (name, c) in &mut self.0 {
            loop {
                match c.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(50))
                    }
                    _ => {
                        eprintln!("{name} did not stop in time; killing it");
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                }
            }
        }
    }
}

fn spawn(
    exe: &Path,
    dir: &Path,
    name: &str,
    args: &[&str],
    admin_token: &str,
) -> anyhow::Result<Child> {
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs)?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(logs.join(format!("{name}.log")))?;
    let child = Command::new(exe)
        .args(args)
        .current_dir(dir)
        .env("QUORATE_ADMIN_TOKEN", admin_token)
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info,libp2p=warn".into()),
        )
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("cannot start {name}"))?;
    // Pid files let operators (and the end-to-end tests) signal one process.
    std::fs::write(logs.join(format!("{name}.pid")), child.id().to_string())?;
    Ok(child)
}

async fn healthy(http: &reqwest::Client, addr: SocketAddr) -> bool {
    matches!(
        http.get(format!("http://{addr}/health")).timeout(Duration::from_millis(500)).send().await,
        Ok(r) if r.status().is_success()
    )
}

/// A running devnet: its processes (stopped, gracefully, on drop), where they are
/// and how to talk to them.
pub(crate) struct Running {
    children: Children,
    /// Coordinator API base URL.
    pub(crate) url: String,
    /// Canonical data directory.
    pub(crate) dir: PathBuf,
    /// The coordinator's admin token.
    pub(crate) admin_token: String,
}

impl Running {
    /// `(name, pid)` of every process: `node1`…`nodeN`, then `coordinator`.
    pub(crate) fn pids(&self) -> Vec<(String, u32)> {
        self.children
            .0
            .iter()
            .map(|(name, c)| (name.clone(), c.id()))
            .collect()
    }
}

/// Generates (first run) or reuses the data directory, starts every node and the
/// coordinator, and waits until all answer `/health`.
pub(crate) async fn start(args: &DevnetArgs) -> anyhow::Result<Running> {
    ensure!(
        (2..=50).contains(&args.nodes),
        "--nodes must be between 2 and 50"
    );
    ensure!(
        args.threshold >= 2 && usize::from(args.threshold) <= args.nodes,
        "--threshold must be between 2 and --nodes ({})",
        args.nodes
    );
    ensure!(
        args.segments >= 1 && args.segments <= args.nodes,
        "--segments must be between 1 and --nodes"
    );
    let l = Layout {
        dir: args.data_dir.clone(),
        n: args.nodes,
        base_port: args.base_port,
        http_port: args.http_port,
    };
    for (port, what) in l.ports() {
        if TcpListener::bind(("127.0.0.1", port)).is_err() {
            bail!("port {port} ({what}) is busy: stop what uses it or pick other ports with --base-port / --http-port");
        }
    }
    if args.fresh && l.dir.exists() {
        std::fs::remove_dir_all(&l.dir)
            .with_context(|| format!("cannot remove {}", l.dir.display()))?;
    }
    let first_run = !l.dir.join("roster.toml").exists();
    if first_run {
        std::fs::create_dir_all(&l.dir)
            .with_context(|| format!("cannot create data directory {}", l.dir.display()))?;
        let probe = l.dir.join(".write-test");
        std::fs::write(&probe, b"")
            .with_context(|| format!("data directory {} is not writable", l.dir.display()))?;
        let _ = std::fs::remove_file(probe);
        println!(
            "generating {} node identities, roster, client key and policy in {}",
            l.n,
            l.dir.display()
        );
        generate(&l, args.segments)?;
        crate::devnet_netting::ensure_material(&l.dir)?;
        crate::devnet_lifecycle::ensure_operators(&l.dir)?;
    } else {
        let nodes_in_dir = (0..)
            .take_while(|i| l.dir.join(format!("node{}.toml", i + 1)).exists())
            .count();
        ensure!(
            nodes_in_dir == l.n,
            "{} holds a {nodes_in_dir}-node network; use --nodes {nodes_in_dir} or --fresh",
            l.dir.display()
        );
        println!(
            "reusing {} (keys survive; --fresh starts over)",
            l.dir.display()
        );
        upgrade_for_netting(&l.dir)?;
        crate::devnet_lifecycle::ensure_operators(&l.dir)?;
    }
    let dir = std::fs::canonicalize(&l.dir)?;
    let exe = std::env::current_exe()?;
    let admin_token = std::fs::read_to_string(dir.join("admin.token"))?
        .trim()
        .to_string();
    let mut children = Children(Vec::new());
    for i in 0..l.n {
        let name = format!("node{}", i + 1);
        let cfg = format!("{name}.toml");
        children.0.push((
            name.clone(),
            spawn(&exe, &dir, &name, &["node", "--config", &cfg], &admin_token)?,
        ));
    }
    children.0.push((
        "coordinator".into(),
        spawn(
            &exe,
            &dir,
            "coordinator",
            &["coordinator", "--config", "coordinator.toml"],
            &admin_token,
        )?,
    ));
    let url = format!("http://127.0.0.1:{}", l.http_port);
    wait_healthy(&l, &dir, &mut children).await?;
    Ok(Running {
        children,
        url,
        dir,
        admin_token,
    })
}

/// Waits (at most 60 s) until every node's admin port and the coordinator answer
/// `/health`, failing early with the log tail of a process that exited.
async fn wait_healthy(l: &Layout, dir: &Path, children: &mut Children) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let mut up = vec![false; l.n + 1];
    let deadline = Instant::now() + Duration::from_secs(60);
    while up.iter().any(|u| !u) {
        for (name, c) in &mut children.0 {
            if let Ok(Some(status)) = c.try_wait() {
                let log = dir.join("logs").join(format!("{name}.log"));
                bail!(
                    "{name} exited ({status}); the end of {}:\n{}",
                    log.display(),
                    log_tail(&log, 15)
                );
            }
        }
        for (i, is_up) in up.iter_mut().enumerate() {
            if *is_up {
                continue;
            }
            let (name, addr) = if i < l.n {
                (
                    format!("node{}", i + 1),
                    SocketAddr::from(([127, 0, 0, 1], l.admin_port(i))),
                )
            } else {
                (
                    "coordinator".to_string(),
                    SocketAddr::from(([127, 0, 0, 1], l.http_port)),
                )
            };
            if healthy(&http, addr).await {
                *is_up = true;
                println!("  {name:<12} up");
            }
        }
        if Instant::now() > deadline {
            let waiting: Vec<String> = (0..=l.n)
                .filter(|i| !up[*i])
                .map(|i| {
                    if i < l.n {
                        format!("node{}", i + 1)
                    } else {
                        "coordinator".into()
                    }
                })
                .collect();
            bail!(
                "still waiting for {} after 60 s; see the logs in {}",
                waiting.join(", "),
                dir.join("logs").display()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Give libp2p a moment to connect the coordinator to every node.
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(())
}

pub(crate) fn run(args: &DevnetArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let net = rt.block_on(async {
        let net = start(args).await?;
        let (url, dir) = (&net.url, net.dir.display());
        println!("\nquorate devnet is up: {} nodes in {} segments, threshold {}", args.nodes, args.segments, args.threshold);
        println!("coordinator API  {url}   (OpenAPI: {url}/openapi.json)");
        println!("data and logs    {dir}");
        println!("transport        plain HTTP on loopback (no TLS: a devnet only; configure [tls] in coordinator.toml for anything else)");
        println!("\ntry:");
        println!("  export QUORATE_URL={url} QUORATE_ADMIN_TOKEN=$(cat {dir}/admin.token) QUORATE_ROSTER={dir}/roster.toml");
        println!("  quorate client keys create --ciphersuite secp256k1-tr --threshold {} --n {} --min-segments {}", args.threshold, args.nodes, args.segments);
        println!("  quorate client --roster {dir}/roster.toml sign --key <key id> --client-key {dir}/client.key --message $(printf 'hello' | sha256sum | cut -c1-64)");
        println!("  curl -s {url}/v1/keys");
        println!("  quorate bench --devnet-dir {dir}");
        println!("  netting desks' files in {} (README.md, \"Netting guide for a desk\")", crate::devnet_netting::netting_dir(&net.dir).display());
        if args.demo {
            demo(&net.url, &net.admin_token, &net.dir, args).await?;
        }
        if !args.exit {
            println!("\nCtrl-C stops the network.");
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                r = tokio::signal::ctrl_c() => r?,
                _ = term.recv() => {}
            }
        }
        anyhow::Ok(net)
    })?;
    println!("stopping…");
    drop(net);
    Ok(())
}

async fn demo(url: &str, admin_token: &str, dir: &Path, args: &DevnetArgs) -> anyhow::Result<()> {
    let api = Client::new(url.to_string())?.with_admin_token(admin_token.to_string());
    let text = std::fs::read_to_string(dir.join("client.key"))?;
    let mut sk = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut sk).context("client.key")?;
    let client = ed25519_dalek::SigningKey::from_bytes(&sk);
    let roster = quorate_protocol::roster::Roster::load(&dir.join("roster.toml"), None)?;
    let message: [u8; 32] = {
        use sha2::Digest;
        sha2::Sha256::digest(b"quorate devnet demo: withdraw 0.5 BTC").into()
    };
    println!(
        "\ndemo: DKG and a signature for every ciphersuite (message {})",
        hex::encode(message)
    );
    let mut settlement_key = None;
    for suite in Ciphersuite::ALL {
        let started = Instant::now();
        let key = api
            .create_key(&CreateKeyBody {
                ciphersuite: suite,
                threshold: args.threshold,
                participants: ParticipantsBody::Spanning {
                    n: args.nodes,
                    min_segments: args.segments.min(args.nodes),
                },
                segments: Vec::new(),
            })
            .await
            .with_context(|| format!("{suite}: key generation"))?;
        let dkg_ms = started.elapsed().as_millis();
        // A client trusts the key only once every member attested it (pinned roster).
        let attested =
            verify_key(&key, &roster).with_context(|| format!("{suite}: attestations"))?;
        let key_id = KeyId::from_hex(&key.key_id)?;
        let signed = RequestBuilder::new(key_id)
            .message(message.to_vec())
            .purpose("BTC", 50_000_000, "bc1qdevnetdemo", "devnet demo")
            .expires_in(Duration::from_secs(120))
            .sign(&client);
        let started = Instant::now();
        let job = api
            .sign(
                &key.key_id,
                &signed,
                SignOptions::wait(Duration::from_secs(30)),
            )
            .await?;
        let job = api
            .poll_until_done(&job.id, Duration::from_millis(100), Duration::from_secs(60))
            .await?;
        let sign_ms = started.elapsed().as_millis();
        verify_job(&attested, &signed.request, &job)
            .with_context(|| format!("{suite}: verification"))?;
        if suite == Ciphersuite::Secp256k1Tr {
            settlement_key = Some(attested.clone());
        }
        let sig = job
            .result
            .as_ref()
            .and_then(|r| r.signatures.first())
            .map(|s| s.signature.clone())
            .unwrap_or_default();
        println!(
            "{:<13} key {}  DKG {dkg_ms:>5} ms  sign {sign_ms:>4} ms  signature verified\n              signature {sig}",
            suite.name(),
            key.key_id
        );
    }
    let key = settlement_key.context("no secp256k1-tr key for the netting demo")?;
    crate::devnet_netting::demo(&api, dir, &roster, &client, &key).await?;
    crate::devnet_limits::demo(&api, dir, &roster, &client, &key).await
}

/// The last `lines` lines of a process log, indented, for an error message.
fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..]
        .iter()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_roster_is_signed_and_every_config_requires_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let l = Layout {
            dir: dir.path().to_path_buf(),
            n: 3,
            base_port: 17000,
            http_port: 17080,
        };
        generate(&l, 2).expect("generate");
        let node = quorate_node::config::NodeConfig::load(&dir.path().join("node1.toml"))
            .expect("node config");
        let authority = node.authority().expect("nodes require a signed roster");
        let coordinator = quorate_coordinator::config::CoordinatorConfig::load(
            dir.path().join("coordinator.toml"),
        )
        .expect("coordinator config");
        assert_eq!(
            coordinator.roster_authority_key().expect("key"),
            Some(authority)
        );
        let path = dir.path().join("roster.toml");
        let roster =
            quorate_protocol::roster::Roster::load(&path, Some(&authority)).expect("signed");
        assert_eq!(roster.epoch(), 1);
        assert_eq!(roster.signers().count(), 3);
        // The signature covers the file: an edit is refused.
        let text = std::fs::read_to_string(&path).expect("read");
        std::fs::write(&path, text.replace("segment-1", "segment-9")).expect("write");
        assert!(quorate_protocol::roster::Roster::load(&path, Some(&authority)).is_err());
    }
}
