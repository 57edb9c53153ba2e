//! Runs a scenario without the `quorate` binary:
//! `cargo run -p quorate-sim --example sim -- simulations/scenarios/wan-3of5.toml --out sim-out`.

use clap::Parser;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: quorate_sim::cli::SimArgs,
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = quorate_sim::cli::run(cli.args) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
