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

pub(crate) fn json_value(value: &serde_json::Value) -> anyhow::Result<()> {
    json(value)
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
    if let Some(l) = &view.limits {
        limits(l, roster);
    }
    if let Some(f) = &view.failure {
        println!("failure: {} ({})", f.detail, f.type_uri);
    }
    Ok(())
}

/// The limit-check section of a round: the verdict the nodes signed, volumes,
/// costs and attempts.
fn limits(l: &quorate_coordinator::netting::limits_model::LimitsView, roster: Option<&Roster>) {
    let verdict = match l.covered {
        Some(true) => "every party covered: the round may settle".to_string(),
        Some(false) if l.failed.is_empty() => {
            "NOT covered (the round does not reveal which party): not settled".to_string()
        }
        Some(false) => format!("NOT covered by {}: not settled", l.failed.join(", ")),
        None => "no verdict yet".to_string(),
    };
    println!(
        "limit checks: {}  ({verdict}; signed by {}/{} nodes, quorum {})",
        l.state,
        l.signers.len(),
        l.verdicts.len().max(l.signers.len()),
        l.quorum
    );
    for v in &l.volumes {
        println!(
            "  efficiency {:<8} gross {}  net {}",
            v.asset,
            v.gross.as_deref().unwrap_or("out of range"),
            v.net.as_deref().unwrap_or("out of range")
        );
    }
    if let Some(s) = &l.stats {
        println!(
            "  cost: {} round trips, {} products, {} openings, {} bytes from nodes, {} bytes to nodes",
            s.steps, s.products, s.openings, s.bytes_in, s.bytes_out
        );
    }
    for a in &l.attempts {
        let waited: Vec<String> = a.waited_for.iter().map(|n| node_name(n, roster)).collect();
        println!(
            "  attempt {}: {} at step {}{}{}",
            a.attempt,
            a.outcome,
            a.step,
            if a.reason.is_empty() {
                String::new()
            } else {
                format!(" ({})", a.reason)
            },
            if waited.is_empty() {
                String::new()
            } else {
                format!("; waited for {}", waited.join(", "))
            }
        );
    }
    if !l.dissent.is_empty() {
        let named: Vec<String> = l.dissent.iter().map(|n| node_name(n, roster)).collect();
        println!("  nodes that signed another verdict: {}", named.join(", "));
    }
    if let Some(e) = &l.error {
        println!("  error: {e}");
    }
}

/// A party's own limit-check bits.
pub(crate) fn own_bits(bits: &[quorate_coordinator::protocol::netting::limits::verdict::OwnBit]) {
    println!("your limit checks (net + collateral + limit >= 0, opened from every node's sealed shares):");
    for b in bits {
        let what = match b.covered {
            Some(true) => "covered",
            Some(false) => "NOT covered",
            None => "out of range (an input exceeded the round's bounds)",
        };
        println!("  {:<8} {what}", b.asset);
    }
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
