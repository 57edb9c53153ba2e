//! `quorate`: the one command-line front end. Thin: parses arguments and calls into
//! the crates.
#![forbid(unsafe_code)]

mod devnet;

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
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Devnet(args) => devnet::run(&args),
    }
}
