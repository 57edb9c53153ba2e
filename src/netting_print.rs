//! What `quorate client netting …` prints: one readable summary per command, or
//! JSON with `--json`.

use std::path::Path;

use quorate_coordinator::{
    client::AttestedKey,
    netting::model::{BundleAnswer, NodeAnswerView, RoundView, SettlementView},
    protocol::{
        netting::{PartyResult, SettlementBatch},
        roster::Roster,
        NodeId,
    },
};

use crate::netting_files::PartyKey;

/// `name (id…)` of a node, from the roster when it is pinned.
fn node_name(node: &str, roster: Option<&Roster>) -> String {
    let name = NodeId::from_hex(node)
        .ok()
        .and_then(|id| roster.and_then(|r| r.by_node(&id)).map(|p| p.name.clone()));
    match name {
        Some(n) => format!("{n} ({})", &node[..node.len().min(16)]),
        None => node.to_string(),
    }
}

fn json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

pub(crate) fn party_key(key: &PartyKey, as_json: bool) -> anyhow::Result<()> {
    let (sign, seal) = (hex::encode(key.sign_key()), hex::encode(key.seal_key()));
    if as_json {
        return json(&serde_json::json!({ "sign_key": sign, "seal_key": seal }));
    }
    println!("sign_key = \"{sign}\"");
    println!("seal_key = \"{seal}\"");
    Ok(())
}

pub(crate) fn created(view: &RoundView, spec_file: &Path, as_json: bool) -> anyhow::Result<()> {
    eprintln!("round definition saved to {}", spec_file.display());
    if as_json {
        return json(view);
    }
    println!("round {}", view.id);
    println!("spec_digest {}", view.spec_digest);
    println!(
        "state {}, {} parties, cutoff {} (Unix s), key {}",
        view.state,
        view.parties.len(),
        view.cutoff,
        view.key_id
    );
    Ok(())
}

/// Per-node outcome lines.
pub(crate) fn node_answers(nodes: &[NodeAnswerView], roster: &Roster) {
    for n in nodes {
        let why = match (&n.reason, &n.detail) {
            (Some(r), Some(d)) => format!("  {r}: {d}"),
            (Some(r), None) => format!("  {r}"),
            _ => String::new(),
        };
        println!(
            "  {:<28} {}{why}",
            node_name(&n.node, Some(roster)),
            n.outcome
        );
    }
}

pub(crate) fn submitted(
    answer: &BundleAnswer,
    roster: &Roster,
    as_json: bool,
) -> anyhow::Result<()> {
    if as_json {
        return json(answer);
    }
    println!(
        "bundle of {} for round {} (digest {}):",
        answer.party, answer.round, answer.digest
    );
    node_answers(&answer.nodes, roster);
    if answer.accepted_by_all {
        println!("accepted by all {} nodes", answer.nodes.len());
    } else {
        println!(
            "NOT accepted by every node: the party is in the round only if all hold its bundle at close; resubmit (it is safe)"
        );
    }
    Ok(())
}

pub(crate) fn round(
    view: &RoundView,
    roster: Option<&Roster>,
    as_json: bool,
) -> anyhow::Result<()> {
    if as_json {
        return json(view);
    }
    println!("round {}  state {}", view.id, view.state);
    println!(
        "key {}  threshold {}  cutoff {} (Unix s)  spec_digest {}",
        view.key_id, view.threshold, view.cutoff, view.spec_digest
    );
    println!("parties:");
    for p in &view.parties {
        let included = match p.included {
            Some(true) => "  in the nets",
            Some(false) => "  NOT in the nets",
            None => "",
        };
        println!(
            "  {:<16} {}  accepted by {}/{}{included}",
            p.name,
            if p.submitted {
                "submitted"
            } else {
                "not submitted"
            },
            p.accepted_by,
            p.nodes
        );
        for r in &p.refusals {
            println!(
                "    refused by {}: {} {}",
                node_name(&r.node, roster),
                r.reason.as_deref().unwrap_or(""),
                r.detail.as_deref().unwrap_or("")
            );
        }
    }
    if let Some(c) = &view.checks {
        println!(
            "checks: inputs_digest {}  public outputs {}/{} needed  conservation {}",
            c.inputs_digest,
            c.public_outputs,
            c.threshold,
            c.conservation.as_deref().unwrap_or("pending")
        );
        if let Some(i) = &c.imbalance {
            println!("  imbalance: {} sums to {}", i.asset, i.amount);
        }
    }
    culprits(&view.culprits, roster);
    if !view.attempts.is_empty() {
        let outcomes: Vec<&str> = view.attempts.iter().map(|a| a.outcome.as_str()).collect();
        println!("settlement signing attempts: {}", outcomes.join(", "));
    }
    if let Some(f) = &view.failure {
        println!("failure: {} ({})", f.detail, f.type_uri);
    }
    Ok(())
}

fn culprits(nodes: &[String], roster: Option<&Roster>) {
    if nodes.is_empty() {
        println!("culprits: none");
    } else {
        let named: Vec<String> = nodes.iter().map(|n| node_name(n, roster)).collect();
        println!(
            "culprits (outputs failed verification): {}",
            named.join(", ")
        );
    }
}

fn signed(v: i64) -> String {
    if v > 0 {
        format!("+{v}")
    } else {
        v.to_string()
    }
}

pub(crate) fn result(
    result: &PartyResult,
    outputs: usize,
    view: &RoundView,
    roster: &Roster,
    as_json: bool,
) -> anyhow::Result<()> {
    if as_json {
        return json(result);
    }
    println!(
        "result of {} in round {}: opened from {outputs} nodes' outputs, every share checked against the commitments",
        result.party, view.id
    );
    println!("bilateral nets (positive: you receive):");
    for b in &result.bilateral {
        println!("  {:<16} {:<8} {}", b.counterparty, b.asset, signed(b.net));
    }
    println!("multilateral nets:");
    for (asset, net) in &result.multilateral {
        println!("  {asset:<8} {}", signed(*net));
    }
    if result.mismatches.is_empty() {
        println!("mismatches: none (every counterparty booked the mirror of your positions)");
    } else {
        println!("mismatches (your booking plus theirs; 0 when they agree):");
        for m in &result.mismatches {
            println!(
                "  {:<16} {:<16} quantity {}  cash {}",
                m.counterparty,
                m.instrument,
                signed(m.quantity_difference),
                signed(m.cash_difference)
            );
        }
    }
    let lying: Vec<String> = result.culprits.iter().map(ToString::to_string).collect();
    culprits(&lying, Some(roster));
    Ok(())
}

pub(crate) fn settlement(
    batch: &SettlementBatch,
    view: &SettlementView,
    key: &AttestedKey,
    as_json: bool,
) -> anyhow::Result<()> {
    if as_json {
        return json(view);
    }
    println!(
        "settlement of round {}: {} transfers; FROST signature verified under attested key {} ({})",
        batch.round,
        batch.transfers.len(),
        batch.key,
        key.public().suite.name()
    );
    println!("message   {}", view.message);
    println!("signature {}", view.signature);
    println!("transfers (positive: paid to the party):");
    for t in &batch.transfers {
        println!("  {:<16} {:<8} {}", t.party, t.asset, signed(t.amount));
    }
    Ok(())
}
