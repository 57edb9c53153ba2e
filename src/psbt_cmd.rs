//! `quorate client sign --psbt`: reading a PSBT file into a request, and printing
//! the signed PSBT and transaction.

use std::path::Path;

use anyhow::Context;
use bitcoin::base64::{engine::general_purpose::STANDARD, Engine as _};
use quorate_coordinator::{api::model::Job, client::RequestBuilder};
use quorate_protocol::{psbt, GroupPublic};

/// A PSBT from a file: binary (starts with the `psbt\xff` magic), or base64 or
/// hex text.
pub(crate) fn read_psbt(path: &Path) -> anyhow::Result<Vec<u8>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if bytes.starts_with(b"psbt\xff") {
        return Ok(bytes);
    }
    let text = String::from_utf8(bytes)
        .ok()
        .map(|t| t.trim().to_owned())
        .context("the PSBT file is neither binary (psbt magic) nor text")?;
    if let Ok(b) = STANDARD.decode(&text) {
        if b.starts_with(b"psbt\xff") {
            return Ok(b);
        }
    }
    match hex::decode(&text) {
        Ok(b) if b.starts_with(b"psbt\xff") => Ok(b),
        _ => anyhow::bail!(
            "{}: not a PSBT (binary, base64 or hex, starting with the psbt magic)",
            path.display()
        ),
    }
}

/// The request builder for signing `inputs` (default: every input spending
/// `key`'s outputs) of the PSBT at `path` for `network`.
pub(crate) fn request(
    builder: RequestBuilder,
    path: &Path,
    network: Option<&str>,
    inputs: Vec<u32>,
    key: &GroupPublic,
) -> anyhow::Result<RequestBuilder> {
    let network: psbt::BitcoinNetwork = network
        .context("--psbt needs --network (mainnet, testnet, signet or regtest)")?
        .parse()
        .map_err(anyhow::Error::msg)?;
    let bytes = read_psbt(path)?;
    let inputs = if inputs.is_empty() {
        let ours = psbt::inputs_of_key(&bytes, &key.verifying_key)?;
        anyhow::ensure!(
            !ours.is_empty(),
            "no input of {} spends key {}'s outputs; name inputs with --input",
            path.display(),
            key.key_id
        );
        ours
    } else {
        let mut sorted = inputs;
        sorted.sort_unstable();
        sorted.dedup();
        sorted
    };
    Ok(builder.psbt(bytes, network, inputs))
}

/// Prints the signed PSBT (base64) and, if complete, the transaction (hex), one
/// per line.
pub(crate) fn print(job: &Job) -> anyhow::Result<()> {
    let result = job.result.as_ref().context("the job has no result")?;
    let signed = hex::decode(result.psbt.as_deref().context("the job returned no PSBT")?)?;
    println!("{}", STANDARD.encode(signed));
    match &result.transaction {
        Some(tx) => println!("{tx}"),
        None => eprintln!("not every input is signed or final: no transaction extracted"),
    }
    Ok(())
}
