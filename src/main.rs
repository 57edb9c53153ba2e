//! `quorate`: the one command-line front end. Thin: parses arguments and calls into
//! the crates.
#![forbid(unsafe_code)]

mod devnet;
mod node_cmd;

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
    /// Create and inspect sealed keystores.
    #[command(subcommand)]
    Keystore(node_cmd::KeystoreCmd),
    /// Verify and export audit logs.
    #[command(subcommand)]
    Audit(node_cmd::AuditCmd),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Devnet(args) => devnet::run(&args),
        Command::Node(args) => node_cmd::node(&args),
        Command::Keystore(cmd) => node_cmd::keystore(cmd),
        Command::Audit(cmd) => node_cmd::audit(cmd),
    }
}
