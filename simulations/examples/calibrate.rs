//! Measures protocol costs on this host:
//! `cargo run --release -p quorate-sim --example calibrate -- costs.toml`.

fn main() {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "costs.toml".into());
    match quorate_sim::cli::calibrate(std::path::Path::new(&out)) {
        Ok(table) => println!("{}", toml::to_string_pretty(&table).unwrap_or_default()),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
