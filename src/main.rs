//! `quorate`: the one command-line front end. Thin: parses arguments and calls into
//! the crates.
#![forbid(unsafe_code)]

mod backup_cmd;
#[cfg(feature = "sim")]
mod bench;
mod coordinator_cmd;
mod devnet;
mod devnet_lifecycle;
mod devnet_limits;
mod devnet_netting;
mod lifecycle_cmd;
mod netting_cmd;
mod netting_files;
mod netting_print;
mod node_cmd;
mod psbt_cmd;

use clap::{Parser, Subcommand};

/// Threshold-signing network for digital-asset custody.
#[derive(Parser)]
#[command(name = "quorate", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a local network: DKG and signing for every ciphersuite, verified.
    Devnet(devnet::DevnetArgs),
    /// Run a signer node.
    Node(node_cmd::NodeArgs),
    /// Create, inspect, back up and restore sealed keystores.
    #[command(subcommand)]
    Keystore(node_cmd::KeystoreCmd),
    /// Verify and export audit logs.
    #[command(subcommand)]
    Audit(node_cmd::AuditCmd),
    /// Roster authority: create its key, sign and verify rosters.
    #[command(subcommand)]
    Roster(node_cmd::RosterCmd),
    /// Run the coordinator (HTTP API for exchanges + libp2p engine).
    Coordinator(coordinator_cmd::CoordinatorArgs),
    /// Talk to a coordinator: keys, signing, verification, netting.
    Client(coordinator_cmd::ClientArgs),
    /// Load generator: drive a network through its HTTP API, meter every process,
    /// compare with the in-process frost-core limit.
    #[cfg(feature = "sim")]
    Bench(Box<bench::BenchArgs>),
    /// Run the deterministic network simulator on a scenario file.
    #[cfg(feature = "sim")]
    Sim(quorate_sim::cli::SimArgs),
    /// Measure crypto costs on this host and write a simulator cost table.
    #[cfg(feature = "sim")]
    SimCalibrate {
        /// Output TOML file.
        #[arg(long, default_value = "costs.toml")]
        out: std::path::PathBuf,
    },
}

/// Installs the tracing subscriber (pretty or JSON), honouring `RUST_LOG`.
pub(crate) fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,libp2p=warn"));
    if json {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Devnet(args) => devnet::run(&args),
        Command::Node(args) => node_cmd::node(&args),
        Command::Keystore(cmd) => node_cmd::keystore(cmd),
        Command::Audit(cmd) => node_cmd::audit(cmd),
        Command::Roster(cmd) => node_cmd::roster(cmd),
        Command::Coordinator(args) => coordinator_cmd::coordinator(&args),
        Command::Client(args) => coordinator_cmd::client(args),
        #[cfg(feature = "sim")]
        Command::Bench(args) => bench::run(&args),
        #[cfg(feature = "sim")]
        Command::Sim(args) => {
            quorate_sim::cli::run(args)?;
            Ok(())
        }
        #[cfg(feature = "sim")]
        Command::SimCalibrate { out } => {
            quorate_sim::cli::calibrate(&out)?;
            println!("cost table written to {}", out.display());
            Ok(())
        }
    }
}
