//! The devnet's netting material and demo round: three demo desks (party key files
//! and mirrored positions CSVs), a round TOML, and `devnet --demo`'s round —
//! create, submit every desk's bundle, close, every desk verifies its result
//! against the plaintext reference, and the settlement signature is verified.
//! Everything lands in `<data dir>/netting/` so the CLI steps can be rerun by hand.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, ensure, Context};
use quorate_coordinator::{
    client::{AttestedKey, Client},
    protocol::{
        netting::{reference, PartyInput, PartyResult},
        roster::Roster,
    },
};

use crate::netting_files::{self as files, PartyKey, RoundFile};

/// The demo desks.
pub(crate) const DESKS: [&str; 3] = ["desk-a", "desk-b", "desk-c"];

/// `(name, kind, asset, multiplier, price_move, premium)` of the demo instruments.
const INSTRUMENTS: [(&str, &str, &str, i64, i64, i64); 3] = [
    ("BTC-FUT-DEC", "future", "USD", 1, 1_200, 0),
    ("ETH-CALL-3000", "option", "USD", 10, 35, 20),
    ("EUR-IRS-5Y", "swap", "EUR", 1, 3, 0),
];

/// Mirrored positions: every (counterparty, instrument) booking is the negative
/// of the counterparty's, so nothing mismatches and every asset conserves.
fn positions_csv(desk: &str) -> &'static str {
    match desk {
        "desk-a" => {
            "# desk-a's positions (minor units; cash positive = desk-a receives)\n\
             counterparty,instrument,quantity,cash\n\
             desk-b,BTC-FUT-DEC,25,0\n\
             desk-b,ETH-CALL-3000,-4,-1500\n\
             desk-c,BTC-FUT-DEC,-10,0\n\
             desk-c,EUR-IRS-5Y,1000000,-2500\n"
        }
        "desk-b" => {
            "# desk-b's positions\n\
             counterparty,instrument,quantity,cash\n\
             desk-a,BTC-FUT-DEC,-25,0\n\
             desk-a,ETH-CALL-3000,4,1500\n\
             desk-c,ETH-CALL-3000,6,\n"
        }
        _ => {
            "# desk-c's positions\n\
             counterparty,instrument,quantity,cash\n\
             desk-a,BTC-FUT-DEC,10,0\n\
             desk-a,EUR-IRS-5Y,-1000000,2500\n\
             desk-b,ETH-CALL-3000,-6,0\n"
        }
    }
}

/// The netting files of a devnet data directory.
pub(crate) fn netting_dir(dir: &Path) -> PathBuf {
    dir.join("netting")
}

/// Writes the demo desks' key files, positions CSVs and the round TOML into
/// `<dir>/netting/` unless they are there already.
pub(crate) fn ensure_material(dir: &Path) -> anyhow::Result<()> {
    let nd = netting_dir(dir);
    let round_file = nd.join("round.toml");
    if round_file.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(&nd).with_context(|| format!("cannot create {}", nd.display()))?;
    let mut toml = String::from(
        "# The devnet's demo netting round (format: README.md, \"Netting: file formats\").\n\
         # The settlement key is not fixed here: pass --key <key id> to\n\
         # `quorate client netting create`, or add `key = \"<key id>\"` at the top.\n\
         cutoff_in_secs = 3600\n",
    );
    for desk in DESKS {
        let path = nd.join(format!("{desk}.party"));
        let key = if path.exists() {
            PartyKey::load(&path)?
        } else {
            let k = PartyKey::generate();
            k.write(&path)?;
            k
        };
        write!(
            toml,
            "\n[[parties]]\nname = \"{desk}\"\nsign_key = \"{}\"\nseal_key = \"{}\"\n",
            hex::encode(key.sign_key()),
            hex::encode(key.seal_key())
        )?;
        std::fs::write(nd.join(format!("{desk}.csv")), positions_csv(desk))?;
    }
    for (name, kind, asset, multiplier, price_move, premium) in INSTRUMENTS {
        write!(
            toml,
            "\n[[instruments]]\nname = \"{name}\"\nkind = \"{kind}\"\nasset = \"{asset}\"\nmultiplier = {multiplier}\nprice_move = {price_move}\npremium = {premium}\n"
        )?;
    }
    std::fs::write(&round_file, toml)?;
    Ok(())
}

/// A verified result as maps without zero entries, for comparing with
/// `reference::compute`.
type Nets = (
    BTreeMap<(String, String), i128>,
    BTreeMap<String, i128>,
    BTreeMap<(String, String), (i128, i128)>,
);

fn nets_of(r: &PartyResult) -> Nets {
    let bilateral = r
        .bilateral
        .iter()
        .filter(|b| b.net != 0)
        .map(|b| ((b.counterparty.clone(), b.asset.clone()), i128::from(b.net)))
        .collect();
    let multilateral = r
        .multilateral
        .iter()
        .filter(|(_, n)| *n != 0)
        .map(|(a, n)| (a.clone(), i128::from(*n)))
        .collect();
    let mismatches = r
        .mismatches
        .iter()
        .filter(|m| m.quantity_difference != 0 || m.cash_difference != 0)
        .map(|m| {
            (
                (m.counterparty.clone(), m.instrument.clone()),
                (
                    i128::from(m.quantity_difference),
                    i128::from(m.cash_difference),
                ),
            )
        })
        .collect();
    (bilateral, multilateral, mismatches)
}

fn plain_nets(r: &reference::PlainResult) -> Nets {
    (
        r.bilateral
            .iter()
            .filter(|(_, v)| **v != 0)
            .map(|(k, v)| (k.clone(), *v))
            .collect(),
        r.multilateral
            .iter()
            .filter(|(_, v)| **v != 0)
            .map(|(k, v)| (k.clone(), *v))
            .collect(),
        r.mismatches
            .iter()
            .filter(|(_, v)| **v != (0, 0))
            .map(|(k, v)| (k.clone(), *v))
            .collect(),
    )
}

/// `devnet --demo`'s netting round under `key` (an attested secp256k1-tr key).
pub(crate) async fn demo(
    api: &Client,
    dir: &Path,
    roster: &Roster,
    client: &ed25519_dalek::SigningKey,
    key: &AttestedKey,
) -> anyhow::Result<()> {
    let nd = netting_dir(dir);
    println!(
        "\ndemo: MPC netting of {} desks over {} instruments, settled by key {}",
        DESKS.len(),
        INSTRUMENTS.len(),
        key.public().key_id
    );
    let spec = RoundFile::load(&nd.join("round.toml"))?.build(key, roster)?;
    let spec_path = nd.join(files::default_spec_path(&spec.id));
    files::save_spec(&spec, &spec_path)?;
    api.create_round(&spec, client)
        .await
        .context("netting: creating the round")?;
    let mut inputs: Vec<Option<PartyInput>> = vec![None; spec.parties.len()];
    let mut keys = Vec::new();
    for desk in DESKS {
        let p = spec.party_index(desk).context("demo desk missing")?;
        let party = PartyKey::load(&nd.join(format!("{desk}.party")))?;
        let input = files::load_positions(&nd.join(format!("{desk}.csv")), &spec, p)?;
        let answer = api
            .deal_and_submit(&spec, desk, &party.sign, &input)
            .await
            .with_context(|| format!("netting: {desk}'s bundle"))?;
        ensure!(
            answer.accepted_by_all,
            "netting: {desk}'s bundle not held by every node: {:?}",
            answer.nodes
        );
        inputs[p] = Some(input);
        keys.push((desk, p, party));
    }
    let view = api
        .close_round(&spec.id, client, Some(Duration::from_secs(60)))
        .await
        .context("netting: close")?;
    if view.state != "settled" {
        bail!(
            "netting round {} ended {}: {}",
            spec.id,
            view.state,
            view.failure.map(|f| f.detail).unwrap_or_default()
        );
    }
    let expected = reference::compute(&spec, &inputs)?;
    let mut results = Vec::new();
    for (desk, p, party) in &keys {
        let result = api
            .verified_result(&spec, desk, &party.sign, &party.seal)
            .await
            .with_context(|| format!("netting: {desk}'s result"))?;
        let plain = expected
            .get(*p)
            .and_then(Option::as_ref)
            .context("reference has no result")?;
        ensure!(
            result.culprits.is_empty() && nets_of(&result) == plain_nets(plain),
            "netting: {desk}'s verified result {result:?} differs from the plaintext reference {plain:?}"
        );
        results.push(result);
    }
    let batch = api
        .verified_settlement(&spec, key)
        .await
        .context("netting: settlement")?;
    for result in &results {
        quorate_coordinator::client::check_own_transfers(&batch, result)
            .with_context(|| format!("netting: {}'s transfers in the settlement", result.party))?;
    }
    for t in &batch.transfers {
        let want = spec
            .party_index(&t.party)
            .and_then(|p| {
                expected
                    .get(p)?
                    .as_ref()?
                    .multilateral
                    .get(&t.asset)
                    .copied()
            })
            .unwrap_or(0);
        ensure!(
            i128::from(t.amount) == want,
            "netting: settlement pays {} {} {}, the reference nets {want}",
            t.party,
            t.amount,
            t.asset
        );
    }
    println!(
        "netting round {} settled: {} transfers, every party verified its result, settlement signature verified",
        spec.id,
        batch.transfers.len()
    );
    println!(
        "              files to rerun it by hand (README.md, \"Netting guide for a desk\"): {}",
        nd.display()
    );
    println!(
        "              party keys {{desk-a,desk-b,desk-c}}.party, positions *.csv, round.toml, this round's definition {}",
        spec_path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default()
    );
    Ok(())
}
