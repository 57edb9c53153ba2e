//! `quorate client keys propose | approve | inspect | apply`: operator-approved
//! refresh and resharing.
//!
//! An operation file is one line of hex: the postcard encoding of an
//! `ApprovedOperation` (protocol/README.md, "Lifecycle operations"). `propose`
//! writes it with no approvals, each operator's `approve` adds one signature,
//! `apply` submits it; nodes check the approvals against their own policies.

use std::{
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, Context};
use quorate_coordinator::{api::model::KeyView, client::Client};
use quorate_protocol::{
    lifecycle::{ApprovedOperation, Operation, OperationKind},
    roster::Roster,
    KeyId, NodeId,
};
use rand_core::RngCore;

/// Lifecycle subcommands of `quorate client keys`.
#[derive(clap::Subcommand)]
pub(crate) enum LifecycleCmd {
    /// Write an operation for operators to approve (refresh: same committee and
    /// threshold; reshare: --member … and --threshold; repair: --member TARGET).
    Propose {
        /// Key id (hex).
        #[arg(long)]
        key: String,
        /// refresh, reshare or repair.
        #[arg(long, value_parser = parse_kind)]
        kind: OperationKind,
        /// New committee member: roster name or node id (repeat; reshare only).
        #[arg(long = "member")]
        members: Vec<String>,
        /// New threshold (reshare only).
        #[arg(long)]
        threshold: Option<u16>,
        /// Allowed roster segments of the key after the operation (repeat; none: any).
        #[arg(long = "segment")]
        segments: Vec<String>,
        /// Seconds until nodes refuse the operation (at most 30 days).
        #[arg(long, default_value_t = 3600)]
        expires_in: u64,
        /// The generation the operation starts from (default: the key's current
        /// one); later ones pre-approve a schedule (see `schedule`).
        #[arg(long)]
        from_generation: Option<u64>,
        /// Operation file to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// Print what an operation file asks for and who approved it.
    Inspect {
        /// Operation file.
        #[arg(long)]
        op: PathBuf,
    },
    /// Add an operator's approval (Ed25519 over the operation digest) in place.
    Approve {
        /// Operation file.
        #[arg(long)]
        op: PathBuf,
        /// The operator's secret key file (32 bytes hex, from `quorate client keygen`).
        #[arg(long)]
        approver_key: PathBuf,
    },
    /// Apply a pre-approved schedule: every `--interval`, for each key, the one
    /// operation file in `--dir` that starts from the key's current generation (and
    /// has not expired) is applied. Operators approve the files in advance, one per
    /// generation, so the schedule runs one step per interval in order and a file
    /// cannot be applied out of turn.
    Schedule {
        /// Directory of operation files (`*.op`).
        #[arg(long)]
        dir: PathBuf,
        /// Seconds between passes.
        #[arg(long, default_value_t = 86_400)]
        interval: u64,
        /// One pass, then exit.
        #[arg(long)]
        once: bool,
        /// Admin bearer token.
        #[arg(long, env = "QUORATE_ADMIN_TOKEN")]
        admin_token: String,
    },
    /// Submit an approved operation (POST /v1/keys/{id}/refresh or /reshare) and
    /// wait for the new generation.
    Apply {
        /// Operation file.
        #[arg(long)]
        op: PathBuf,
        /// Admin bearer token.
        #[arg(long, env = "QUORATE_ADMIN_TOKEN")]
        admin_token: String,
    },
}

fn parse_kind(s: &str) -> Result<OperationKind, String> {
    match s {
        "refresh" => Ok(OperationKind::Refresh),
        "reshare" => Ok(OperationKind::Reshare),
        "repair" => Ok(OperationKind::Repair),
        other => Err(format!("{other:?}: expected refresh, reshare or repair")),
    }
}

/// Reads an operation file (one line of hex).
pub(crate) fn read_op(path: &Path) -> anyhow::Result<ApprovedOperation> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let bytes = hex::decode(text.trim())
        .with_context(|| format!("{}: not an operation file (hex)", path.display()))?;
    ApprovedOperation::decode(&bytes)
        .with_context(|| format!("{}: not an operation", path.display()))
}

fn write_op(path: &Path, op: &ApprovedOperation) -> anyhow::Result<()> {
    std::fs::write(path, format!("{}\n", hex::encode(op.encode())))
        .with_context(|| format!("writing {}", path.display()))
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A member given as roster name or node id.
fn resolve_member(s: &str, roster: Option<&Roster>) -> anyhow::Result<NodeId> {
    if let Ok(id) = NodeId::from_hex(s) {
        return Ok(id);
    }
    let roster = roster.with_context(|| {
        format!("member {s:?} is not a node id; pass --roster to name members by roster name")
    })?;
    roster
        .signers()
        .find(|p| p.name == s)
        .map(|p| p.node)
        .with_context(|| format!("no signer named {s:?} in the roster"))
}

fn describe(op: &ApprovedOperation, roster: Option<&Roster>) {
    let o = &op.operation;
    let name = |n: &NodeId| {
        roster
            .and_then(|r| r.by_node(n))
            .map(|p| p.name.clone())
            .unwrap_or_else(|| n.to_string())
    };
    println!("operation  {} of key {}", o.kind.name(), o.key_id);
    println!("from       generation {}", o.from_generation);
    println!("group key  {}", hex::encode(&o.group_key));
    println!(
        "committee  {}-of-{}: {}",
        o.threshold,
        o.committee.len(),
        o.committee.iter().map(name).collect::<Vec<_>>().join(", ")
    );
    println!(
        "segments   {}",
        if o.segments.is_empty() {
            "any".to_string()
        } else {
            o.segments.join(", ")
        }
    );
    if let Some(t) = &o.target {
        println!("target     {}", name(t));
    }
    println!("expires    {} (unix seconds)", o.expires_at);
    println!("digest     {}", hex::encode(o.digest()));
    println!("approvals  {}", op.approvals.len());
    for a in &op.approvals {
        println!("  {}", hex::encode(a.approver));
    }
}

/// Runs a lifecycle subcommand.
pub(crate) async fn run(
    client: Client,
    roster: Option<&Roster>,
    cmd: LifecycleCmd,
) -> anyhow::Result<()> {
    match cmd {
        LifecycleCmd::Propose {
            key,
            kind,
            members,
            threshold,
            segments,
            expires_in,
            from_generation,
            out,
        } => {
            if out.exists() {
                bail!("{} exists; refusing to overwrite it", out.display());
            }
            let roster_ref = crate::coordinator_cmd::require_roster(roster, "propose")?;
            let attested = client.get_attested_key(&key, &roster_ref).await?;
            let view: &KeyView = attested.view();
            let current = view
                .participants
                .iter()
                .map(|p| NodeId::from_hex(&p.node))
                .collect::<Result<Vec<_>, _>>()?;
            let mut target = None;
            let (committee, threshold) = match kind {
                OperationKind::Refresh => {
                    if !members.is_empty() || threshold.is_some() {
                        bail!("a refresh keeps the committee and threshold: drop --member/--threshold");
                    }
                    (current, view.threshold)
                }
                OperationKind::Repair => {
                    if members.len() != 1 || threshold.is_some() {
                        bail!("a repair names the one member to repair: --member NAME, no --threshold");
                    }
                    target = Some(resolve_member(&members[0], roster)?);
                    (current, view.threshold)
                }
                OperationKind::Reshare => {
                    let threshold = threshold.context("a reshare needs --threshold")?;
                    if members.is_empty() {
                        bail!("a reshare needs the new committee: --member NAME (repeat)");
                    }
                    (
                        members
                            .iter()
                            .map(|m| resolve_member(m, roster))
                            .collect::<anyhow::Result<Vec<_>>>()?,
                        threshold,
                    )
                }
            };
            let mut committee = committee;
            committee.sort();
            committee.dedup();
            let mut nonce = [0u8; 16];
            rand_core::OsRng.fill_bytes(&mut nonce);
            let operation = Operation {
                key_id: KeyId::from_hex(&key)?,
                kind,
                from_generation: from_generation.unwrap_or(view.generation),
                group_key: hex::decode(&view.verifying_key)?,
                committee,
                threshold,
                segments,
                expires_at: now_unix() + expires_in,
                nonce,
                target,
            };
            operation.validate()?;
            let op = ApprovedOperation {
                operation,
                approvals: Vec::new(),
            };
            write_op(&out, &op)?;
            describe(&op, roster);
            eprintln!(
                "wrote {}; operators approve it with `quorate client keys approve`",
                out.display()
            );
        }
        LifecycleCmd::Inspect { op } => describe(&read_op(&op)?, roster),
        LifecycleCmd::Approve { op, approver_key } => {
            let mut approved = read_op(&op)?;
            let sk = crate::coordinator_cmd::read_secret(&approver_key)?;
            let me = sk.verifying_key().to_bytes();
            if approved.approvals.iter().any(|a| a.approver == me) {
                bail!("this approver already approved the operation");
            }
            describe(&approved, roster);
            approved.approvals.push(approved.operation.approve(&sk));
            write_op(&op, &approved)?;
            eprintln!("approved as {}", hex::encode(me));
        }
        LifecycleCmd::Schedule {
            dir,
            interval,
            once,
            admin_token,
        } => {
            let client = client.with_admin_token(admin_token);
            loop {
                schedule_pass(&client, roster, &dir).await?;
                if once {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_secs(interval)).await;
            }
        }
        LifecycleCmd::Apply { op, admin_token } => {
            let approved = read_op(&op)?;
            let view = client
                .with_admin_token(admin_token)
                .lifecycle(&approved)
                .await?;
            println!("{}", serde_json::to_string_pretty(&view)?);
            match roster {
                Some(r) => {
                    quorate_coordinator::client::verify_key(&view, r)?;
                    eprintln!(
                        "key {} now at generation {}, attested by all {} members of the pinned roster",
                        view.key_id,
                        view.generation,
                        view.participants.len()
                    );
                }
                None => eprintln!(
                    "WARNING: generation {} of key {} NOT verified (no --roster)",
                    view.generation, view.key_id
                ),
            }
        }
    }
    Ok(())
}

/// One pass of `schedule`: per key, the operation file due now (starting from the
/// key's current generation, unexpired) is applied; at most one per key.
async fn schedule_pass(client: &Client, roster: Option<&Roster>, dir: &Path) -> anyhow::Result<()> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "op"))
        .collect();
    files.sort();
    let mut done: Vec<KeyId> = Vec::new();
    let now = now_unix();
    for path in files {
        let op = match read_op(&path) {
            Ok(op) => op,
            Err(e) => {
                eprintln!("{}: skipped: {e:#}", path.display());
                continue;
            }
        };
        let o = &op.operation;
        // Repairs keep the generation: they are applied by hand, never scheduled.
        if o.kind == OperationKind::Repair || done.contains(&o.key_id) || now >= o.expires_at {
            continue;
        }
        let view = match client.get_key(&o.key_id.to_string()).await {
            Ok(v) => v,
            Err(e) => {
                eprintln!("{}: key {}: {e}", path.display(), o.key_id);
                continue;
            }
        };
        if view.generation != o.from_generation {
            continue;
        }
        done.push(o.key_id);
        match client.lifecycle(&op).await {
            Ok(view) => {
                if let Some(r) = roster {
                    if let Err(e) = quorate_coordinator::client::verify_key(&view, r) {
                        eprintln!(
                            "{}: the new generation is NOT attested: {e}",
                            path.display()
                        );
                    }
                }
                println!(
                    "{}: {} of key {} applied: generation {}",
                    path.display(),
                    o.kind.name(),
                    view.key_id,
                    view.generation
                );
            }
            Err(e) => eprintln!("{}: {} failed: {e}", path.display(), o.kind.name()),
        }
    }
    if done.is_empty() {
        println!("nothing due");
    }
    Ok(())
}
