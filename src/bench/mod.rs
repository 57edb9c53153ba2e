//! `quorate bench`: the load generator. Drives a network through the public HTTP
//! API with real client-signed requests (every signature checked against the
//! attested key), meters every local quorate process from `/proc`, and measures the
//! in-process frost-core limit of the same signatures on the same machine in the
//! same run, so each figure comes with its ratio to what the cryptography allows.

mod baseline;
mod lifecycle;
mod load;
mod procstat;
mod report;
mod target;

use std::{path::PathBuf, time::Duration};

use anyhow::Context;
use quorate_coordinator::{
    api::model::{CreateKeyBody, ParticipantsBody},
    client::{verify_key, AttestedKey},
};
use quorate_protocol::Ciphersuite;

use self::{
    load::Load,
    report::{ProcessCpu, Report, Row},
    target::Target,
};

/// Options of `quorate bench` (the signing load) and its `lifecycle` mode.
#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct BenchArgs {
    /// Another measurement instead of the signing load.
    #[command(subcommand)]
    pub(crate) mode: Option<BenchMode>,
    /// Which network, and how to reach it.
    #[command(flatten)]
    pub(crate) net: NetArgs,
    /// Ciphersuite of the key created for the bench.
    #[arg(long, default_value = "secp256k1")]
    pub(crate) ciphersuite: Ciphersuite,
    /// Sign with this existing key instead of creating one.
    #[arg(long)]
    pub(crate) key: Option<String>,
    /// Concurrent clients, one row each (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,8,16,64")]
    pub(crate) concurrency: Vec<usize>,
    /// Messages per request (comma-separated; each value > 1 adds one row at
    /// concurrency 1).
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub(crate) messages: Vec<usize>,
    /// Signatures per row.
    #[arg(long, default_value_t = 1000)]
    pub(crate) signatures: u64,
    /// Run each row this many seconds instead of --signatures.
    #[arg(long)]
    pub(crate) seconds: Option<f64>,
    /// Requests sent before the first row (not measured).
    #[arg(long, default_value_t = 50)]
    pub(crate) warmup: u64,
    /// Seconds spent measuring the in-process baseline.
    #[arg(long, default_value_t = 4.0)]
    pub(crate) baseline_seconds: f64,
    /// Lifetime of each request, seconds.
    #[arg(long, default_value_t = 10)]
    pub(crate) ttl: u64,
    /// Write the report as JSON to this file (`-` for standard output).
    #[arg(long)]
    pub(crate) json: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    pub(crate) quiet: bool,
}

/// Measurements other than the signing load.
#[derive(clap::Subcommand)]
pub(crate) enum BenchMode {
    /// Key lifecycle: reshare a key between two committees through the API
    /// (operator-approved operations), next to a fresh DKG of the new committee,
    /// alternating, `--runs` times; prints median and min/max seconds.
    Lifecycle(lifecycle::LifecycleArgs),
}

/// Which network a bench drives (shared by the signing load and `lifecycle`).
#[derive(clap::Args)]
pub(crate) struct NetArgs {
    /// Start a devnet of its own (in a temporary directory, removed afterwards,
    /// unless --data-dir) and bench it: one command gives the table.
    #[arg(long, conflicts_with = "devnet_dir")]
    pub(crate) spawn_devnet: bool,
    /// With --spawn-devnet: the data directory to use (wiped first, kept after).
    #[arg(long, requires = "spawn_devnet")]
    pub(crate) data_dir: Option<PathBuf>,
    /// Bench a running devnet: URL, admin token, bench client key, roster and
    /// process ids are read from its data directory.
    #[arg(long)]
    pub(crate) devnet_dir: Option<PathBuf>,
    /// Coordinator API URL (any network; with --client-key and --roster).
    #[arg(long, env = "QUORATE_URL")]
    pub(crate) url: Option<String>,
    /// Admin token (creating keys and lifecycle operations need it; the signing
    /// load does not with --key).
    #[arg(long, env = "QUORATE_ADMIN_TOKEN", hide_env_values = true)]
    pub(crate) admin_token: Option<String>,
    /// File with the client's Ed25519 secret key (hex): a client registered with
    /// the coordinator and allowed by every node's policy to sign one unit of the
    /// `BENCH` asset per request (`--asset` to change). Not used by `lifecycle`.
    #[arg(long)]
    pub(crate) client_key: Option<PathBuf>,
    /// Pinned roster (key attestations are checked against it).
    #[arg(long, env = "QUORATE_ROSTER")]
    pub(crate) roster: Option<PathBuf>,
    /// A local process to meter, `NAME=PID` (repeatable; `coordinator` and
    /// `node1`… are recognised). Devnets are metered without it.
    #[arg(long = "pid", value_parser = parse_pid)]
    pub(crate) pids: Vec<(String, u32)>,
    /// Signer nodes (of the spawned devnet, and of the bench key) [default: 5;
    /// lifecycle: the larger of the two committees].
    #[arg(long)]
    pub(crate) nodes: Option<usize>,
    /// Signatures need this many nodes (the bench key; the spawned devnet).
    #[arg(long, default_value_t = 3)]
    pub(crate) threshold: u16,
    /// With --spawn-devnet: coordinator libp2p port (nodes use the next ones).
    #[arg(long, default_value_t = 7700)]
    pub(crate) base_port: u16,
    /// With --spawn-devnet: coordinator HTTP port.
    #[arg(long, default_value_t = 8280)]
    pub(crate) http_port: u16,
}

impl NetArgs {
    /// Signer nodes, `--nodes` or `default`.
    pub(crate) fn nodes_or(&self, default: usize) -> usize {
        self.nodes.unwrap_or(default)
    }
}

fn parse_pid(s: &str) -> Result<(String, u32), String> {
    let (name, pid) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected NAME=PID"))?;
    let pid = pid
        .parse()
        .map_err(|_| format!("{s:?}: {pid:?} is not a process id"))?;
    Ok((name.to_string(), pid))
}

/// Runs the bench.
pub(crate) fn run(args: &BenchArgs) -> anyhow::Result<()> {
    if let Some(BenchMode::Lifecycle(l)) = &args.mode {
        return lifecycle::run(l);
    }
    anyhow::ensure!(
        args.concurrency.iter().all(|c| (1..=1024).contains(c)),
        "--concurrency values must be between 1 and 1024"
    );
    anyhow::ensure!(
        args.messages
            .iter()
            .all(|m| (1..=quorate_protocol::request::MAX_MESSAGES).contains(m)),
        "--messages values must be between 1 and {} (a request's most)",
        quorate_protocol::request::MAX_MESSAGES
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = rt.block_on(bench(args))?;
    report::emit(&report.table(), &report, args.json.as_deref())
}

async fn bench(args: &BenchArgs) -> anyhow::Result<Report> {
    let target = Target::connect(&args.net, args.net.nodes_or(5), true).await?;
    let client = target
        .client
        .clone()
        .context("the signing load needs a client key")?;
    let key = bench_key(args, &target).await?;
    let public = key.public();
    let (suite, t, n) = (public.suite, public.threshold, public.members.len());
    eprintln!(
        "key {} ({suite}, {t}-of-{n}); measuring the in-process limit for {:.0} s",
        key.key_id(),
        args.baseline_seconds
    );
    // Nothing else runs on this (single-threaded) runtime meanwhile, and the
    // network is idle: the baseline has the machine to itself. It is measured
    // before and after the rows, and the rows are compared with the mean, so a
    // machine whose load changes during the run shows it as two different runs.
    let before = baseline::measure(suite, t, n, args.baseline_seconds / 2.0)?;
    let names = node_ids(&target);
    let loads = loads(args);
    if args.warmup > 0 {
        let warm = Load {
            concurrency: 4,
            messages: 1,
            requests: args.warmup,
            duration: None,
            ttl: Duration::from_secs(args.ttl),
        };
        load::run(
            &target.api,
            &key,
            &client,
            warm,
            &indicatif::ProgressBar::hidden(),
        )
        .await?;
    }
    let mut measured = Vec::new();
    for l in loads {
        let bar = progress(args, &l);
        let before = readings(&target);
        let outcome = load::run(&target.api, &key, &client, l, &bar).await?;
        let after = readings(&target);
        bar.finish_and_clear();
        let cpu = cpu_rows(&before, &after, &outcome, &names);
        eprintln!(
            "{} clients × {} messages: {:.0} signatures/s, p50 {:.1} ms",
            l.concurrency,
            l.messages,
            outcome.signatures as f64 / outcome.elapsed.as_secs_f64().max(1e-9),
            outcome.latency_us.value_at_quantile(0.5) as f64 / 1000.0
        );
        measured.push((l, outcome, cpu));
    }
    let after = baseline::measure(suite, t, n, args.baseline_seconds / 2.0)?;
    let baseline = baseline::Baseline::mean(&before, &after);
    let rows = measured
        .into_iter()
        .map(|(l, outcome, cpu)| Row::new(&outcome, l.concurrency, l.messages, cpu, &baseline))
        .collect();
    Ok(Report {
        version: env!("CARGO_PKG_VERSION").into(),
        key_id: key.key_id().to_string(),
        baseline,
        baseline_runs: [before, after],
        rows,
    })
}

/// The key to sign with: `--key`, or a new one spanning the nodes.
async fn bench_key(args: &BenchArgs, target: &Target) -> anyhow::Result<AttestedKey> {
    if let Some(id) = &args.key {
        return target
            .api
            .get_attested_key(id, &target.roster)
            .await
            .with_context(|| format!("key {id}"));
    }
    let signers = target.roster.signers().count();
    let view = target
        .api
        .create_key(&CreateKeyBody {
            ciphersuite: args.ciphersuite,
            threshold: args.net.threshold,
            participants: ParticipantsBody::Spanning {
                n: args.net.nodes_or(5).min(signers),
                min_segments: 1,
            },
            segments: Vec::new(),
        })
        .await
        .context("creating the bench key (needs the admin token; or pass --key)")?;
    Ok(verify_key(&view, &target.roster)?)
}

/// The rows: every concurrency with one message per request, then one row per
/// larger `--messages` value at concurrency 1.
fn loads(args: &BenchArgs) -> Vec<Load> {
    let ttl = Duration::from_secs(args.ttl);
    let duration = args.seconds.map(Duration::from_secs_f64);
    let mut out = Vec::new();
    for &m in &args.messages {
        let concurrencies: Vec<usize> = if m == 1 {
            args.concurrency.clone()
        } else {
            vec![1]
        };
        for c in concurrencies {
            out.push(Load {
                concurrency: c,
                messages: m,
                requests: args.signatures.div_ceil(m as u64),
                duration,
                ttl,
            });
        }
    }
    out
}

fn progress(args: &BenchArgs, l: &Load) -> indicatif::ProgressBar {
    if args.quiet {
        return indicatif::ProgressBar::hidden();
    }
    let bar = match l.duration {
        Some(_) => indicatif::ProgressBar::new_spinner(),
        None => indicatif::ProgressBar::new(l.requests * l.messages as u64),
    };
    let style = indicatif::ProgressStyle::with_template(
        "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} signatures ({per_sec})",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_prefix(format!("{} clients × {} msgs", l.concurrency, l.messages));
    bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    bar
}

/// Roster name → node id (hex), for the nodes' share counts.
fn node_ids(target: &Target) -> Vec<(String, String)> {
    target
        .roster
        .signers()
        .map(|p| (p.name.clone(), p.node.to_string()))
        .collect()
}

fn readings(target: &Target) -> Vec<(String, Option<procstat::Reading>)> {
    let mut out: Vec<_> = target
        .processes
        .iter()
        .map(|(name, pid)| (name.clone(), procstat::read(&pid.to_string())))
        .collect();
    out.push(("bench".into(), procstat::read("self")));
    out
}

fn cpu_rows(
    before: &[(String, Option<procstat::Reading>)],
    after: &[(String, Option<procstat::Reading>)],
    outcome: &load::Outcome,
    names: &[(String, String)],
) -> Vec<ProcessCpu> {
    let sigs = outcome.signatures.max(1) as f64;
    before
        .iter()
        .zip(after)
        .filter_map(|((name, b), (_, a))| {
            let (b, a) = ((*b)?, (*a)?);
            let cpu = (a.cpu_seconds - b.cpu_seconds).max(0.0);
            let shares = names
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, id)| outcome.shares_by_node.get(id).copied().unwrap_or(0));
            Some(ProcessCpu {
                name: name.clone(),
                cpu_seconds: cpu,
                ms_per_signature: cpu * 1000.0 / sigs,
                shares,
                ms_per_share: shares.filter(|s| *s > 0).map(|s| cpu * 1000.0 / s as f64),
                rss_bytes: a.rss_bytes,
            })
        })
        .collect()
}
