//! `quorate client netting …`: a netting round from the shell — party keys, the
//! round definition, a desk's sealed submission, close, the desk's verified result
//! and the verified settlement. Output formatting is in `netting_print`.

use std::{path::PathBuf, time::Duration};

use anyhow::{bail, Context};
use quorate_coordinator::{
    client::{
        committee_of, verify_limit_bits, verify_result, verify_settlement, verify_verdict,
        AttestedKey, Client, ClientError,
    },
    netting::model::{NodeAnswerView, RoundView},
    protocol::{
        netting::{RoundId, RoundSpec},
        roster::Roster,
    },
};

use crate::{
    coordinator_cmd::{read_secret, require_roster},
    netting_files::{self as files, PartyKey, RoundFile},
    netting_print as print,
};

/// `quorate client netting …`
#[derive(clap::Subcommand)]
pub(crate) enum NettingCmd {
    /// Generate a party key file (Ed25519 signing key + X25519 sealing key, mode
    /// 0600) and print its public `sign_key` and `seal_key`.
    PartyKeygen {
        /// Where to write the key file (must not exist).
        #[arg(long)]
        out: PathBuf,
        /// Print the public keys as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Create a round from a round TOML file (needs --roster): builds the
    /// definition against the attested key, authorises it with the client key,
    /// saves it as `<round id>.round.json` and prints the round id and digest.
    Create {
        /// Round TOML file (format in README.md).
        #[arg(long)]
        round_file: PathBuf,
        /// Settlement key id (hex); overrides `key` in the round file.
        #[arg(long)]
        key: Option<String>,
        /// The creating client's secret key file (from `quorate client keygen`).
        #[arg(long)]
        client_key: PathBuf,
        /// Where to save the round definition (default `<round id>.round.json`).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print the round view as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Seal and submit a party's positions (needs --roster). Everything local is
    /// checked first: on bad input nothing is sent.
    Submit {
        /// Round id (hex).
        #[arg(long)]
        round: String,
        /// Round definition (default `<round id>.round.json`).
        #[arg(long)]
        spec: Option<PathBuf>,
        /// Party name.
        #[arg(long)]
        party: String,
        /// Party key file (from `party-keygen`).
        #[arg(long)]
        party_key: PathBuf,
        /// Positions CSV: `counterparty,instrument,quantity,cash`.
        #[arg(long)]
        positions: PathBuf,
        /// Print the coordinator's answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Close a round (signed by the creating client); with --wait, until it is
    /// settled or failed.
    Close {
        /// Round id (hex).
        #[arg(long)]
        round: String,
        /// The creating client's secret key file.
        #[arg(long)]
        client_key: PathBuf,
        /// Wait until the round is final; fails unless it settled.
        #[arg(long)]
        wait: bool,
        /// Longest wait, seconds.
        #[arg(long, default_value_t = 60)]
        timeout_secs: u64,
        /// Print the round view as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a round: state, parties, refusals, checks, culprits.
    Status {
        /// Round id (hex).
        #[arg(long)]
        round: String,
        /// Print the round view as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Fetch a party's result, verify every node's share against the commitments
    /// and print its nets, mismatches and any lying nodes (needs --roster).
    Result {
        /// Round id (hex).
        #[arg(long)]
        round: String,
        /// Round definition (default `<round id>.round.json`).
        #[arg(long)]
        spec: Option<PathBuf>,
        /// Party name.
        #[arg(long)]
        party: String,
        /// Party key file.
        #[arg(long)]
        party_key: PathBuf,
        /// Print the verified result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Fetch the settlement batch and verify its FROST signature under the
    /// attested key (needs --roster); prints the transfers.
    Settlement {
        /// Round id (hex).
        #[arg(long)]
        round: String,
        /// Round definition (default `<round id>.round.json`).
        #[arg(long)]
        spec: Option<PathBuf>,
        /// Print the verified settlement as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn round_id(s: &str) -> anyhow::Result<RoundId> {
    RoundId::from_hex(s.trim()).with_context(|| format!("--round {s:?}"))
}

fn spec_for(round: &RoundId, spec: Option<PathBuf>) -> anyhow::Result<RoundSpec> {
    let path = spec.unwrap_or_else(|| files::default_spec_path(round));
    files::load_spec(&path, round)
}

/// Checks a saved definition against the coordinator (same digest) and the pinned
/// roster (the committee is the attested key's members, the key is the spec's).
async fn checked(
    api: &Client,
    roster: &Roster,
    spec: &RoundSpec,
) -> anyhow::Result<(AttestedKey, RoundView)> {
    let view = api.round(&spec.id).await?;
    if view.spec_digest != hex::encode(spec.digest()) {
        bail!(
            "the coordinator's round {} has another definition (digest {}) than the saved one ({}): refusing",
            spec.id,
            view.spec_digest,
            hex::encode(spec.digest())
        );
    }
    let key = api.get_attested_key(&spec.key.to_string(), roster).await?;
    if key.public().key_id != spec.key || committee_of(&key, roster)? != spec.committee {
        bail!(
            "round {}: its committee is not the members of attested key {} in the pinned roster",
            spec.id,
            spec.key
        );
    }
    eprintln!(
        "round {}: committee of {} nodes = the members of key {} attested under the pinned roster; any {} of them open a value",
        spec.id,
        spec.committee.len(),
        spec.key,
        spec.threshold
    );
    Ok((key, view))
}

/// Runs one netting command.
pub(crate) async fn run(
    api: &Client,
    roster: Option<&Roster>,
    cmd: NettingCmd,
) -> anyhow::Result<()> {
    match cmd {
        NettingCmd::PartyKeygen { out, json } => {
            let key = PartyKey::generate();
            key.write(&out)?;
            print::party_key(&key, json)?;
            eprintln!("party key written to {} (mode 0600)", out.display());
        }
        NettingCmd::Create {
            round_file,
            key,
            client_key,
            out,
            json,
        } => {
            let roster = require_roster(roster, "netting create")?;
            let file = RoundFile::load(&round_file)?;
            let client = read_secret(&client_key)?;
            let key_id = file.key_id(key.as_deref())?;
            let attested = api.get_attested_key(&key_id, &roster).await?;
            let spec = file.build(&attested, &roster)?;
            let path = out.unwrap_or_else(|| files::default_spec_path(&spec.id));
            files::save_spec(&spec, &path)?;
            let view = match api.create_round(&spec, &client).await {
                Ok(v) => v,
                Err(e) => {
                    let _ = std::fs::remove_file(&path);
                    return Err(e).context("creating the round");
                }
            };
            print::created(&view, &path, json)?;
        }
        NettingCmd::Submit {
            round,
            spec,
            party,
            party_key,
            positions,
            json,
        } => {
            let roster = require_roster(roster, "netting submit")?;
            let id = round_id(&round)?;
            // Everything local first: on any error here nothing has been sent.
            let spec = spec_for(&id, spec)?;
            let key = PartyKey::load(&party_key)?;
            let p = spec
                .party_index(&party)
                .with_context(|| format!("round {id} has no party {party:?}"))?;
            let listed = &spec.parties[p];
            if listed.sign_key != key.sign_key() || listed.seal_key != key.seal_key() {
                bail!(
                    "{} is not party {party:?}'s key in round {id} (its sign_key/seal_key differ)",
                    party_key.display()
                );
            }
            let input = files::load_positions(&positions, &spec, p)?;
            checked(api, &roster, &spec).await?;
            match api.deal_and_submit(&spec, &party, &key.sign, &input).await {
                Ok(answer) => print::submitted(&answer, &roster, json)?,
                Err(ClientError::Problem(problem)) => {
                    let nodes: Vec<NodeAnswerView> = problem
                        .extensions
                        .get("nodes")
                        .and_then(|n| serde_json::from_value(n.clone()).ok())
                        .unwrap_or_default();
                    print::node_answers(&nodes, &roster);
                    bail!("{}: {}", problem.title, problem.detail);
                }
                Err(e) => return Err(e.into()),
            }
        }
        NettingCmd::Close {
            round,
            client_key,
            wait,
            timeout_secs,
            json,
        } => {
            let id = round_id(&round)?;
            let client = read_secret(&client_key)?;
            let wait = wait.then(|| Duration::from_secs(timeout_secs));
            let started = std::time::Instant::now();
            let mut view = api.close_round(&id, &client, wait).await?;
            let final_ = ["settled", "conservation_failed", "failed", "not_covered"];
            if let Some(w) = wait {
                // The coordinator caps one wait (60 s by default): poll the rest.
                let left = w.saturating_sub(started.elapsed());
                if !final_.contains(&view.state.as_str()) && !left.is_zero() {
                    view = match api.poll_round(&id, Duration::from_millis(250), left).await {
                        Ok(v) => v,
                        Err(ClientError::Timeout(_)) => api.round(&id).await?,
                        Err(e) => return Err(e.into()),
                    };
                }
            }
            print::round(&view, roster, json)?;
            if wait.is_some() && view.state != "settled" {
                bail!(
                    "round {id} is {} (not settled){}",
                    view.state,
                    view.failure
                        .as_ref()
                        .map(|f| format!(": {}", f.detail))
                        .unwrap_or_default()
                );
            }
        }
        NettingCmd::Status { round, json } => {
            let id = round_id(&round)?;
            let view = api.round(&id).await?;
            print::round(&view, roster, json)?;
            // With a pinned roster and the saved definition, check the limit-check
            // verdict's signatures and quorum ourselves.
            let saved = files::default_spec_path(&id);
            if let (Some(roster), Some(l)) = (roster, &view.limits) {
                if l.covered.is_some() && saved.exists() {
                    let spec = spec_for(&id, None)?;
                    let committee = committee_of(&checked(api, roster, &spec).await?.0, roster)?;
                    let v = verify_verdict(&spec, &committee, &view)?;
                    if !json {
                        println!(
                            "verdict verified: {} nodes' signatures on one statement against the pinned roster (covered: {})",
                            v.signers.len(),
                            v.covered
                        );
                    }
                }
            }
        }
        NettingCmd::Result {
            round,
            spec,
            party,
            party_key,
            json,
        } => {
            let roster = require_roster(roster, "netting result")?;
            let id = round_id(&round)?;
            let spec = spec_for(&id, spec)?;
            let key = PartyKey::load(&party_key)?;
            let p = spec
                .party_index(&party)
                .with_context(|| format!("round {id} has no party {party:?}"))?;
            let (_, view) = checked(api, &roster, &spec).await?;
            let fetched = api.round_result(&id, &party, &key.sign).await?;
            let result = verify_result(&spec, p, &key.seal, &fetched)?;
            let bits = verify_limit_bits(&spec, p, &key.seal, &fetched)?;
            if json {
                // The PartyResult JSON, plus `limits` in limit-checked rounds.
                let mut v = serde_json::to_value(&result)?;
                if let (Some(bits), Some(map)) = (&bits, v.as_object_mut()) {
                    map.insert("limits".into(), serde_json::to_value(bits)?);
                }
                print::json_value(&v)?;
            } else {
                print::result(&result, fetched.outputs.len(), &view, &roster, false)?;
                if let Some(bits) = &bits {
                    print::own_bits(bits);
                }
            }
        }
        NettingCmd::Settlement { round, spec, json } => {
            let roster = require_roster(roster, "netting settlement")?;
            let id = round_id(&round)?;
            let spec = spec_for(&id, spec)?;
            let (key, _) = checked(api, &roster, &spec).await?;
            let view = api.settlement(&id).await?;
            let batch = verify_settlement(&spec, &key, &view)?;
            print::settlement(&batch, &view, &key, json)?;
        }
    }
    Ok(())
}
