//! Results: a JSON summary (percentiles from an HDR histogram, blame accuracy,
//! per-node traffic) and one CSV row per session.

use std::{collections::BTreeMap, fmt::Write as _, path::Path};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::{error::SimError, node::NodeStats};

/// One signing request, DKG run or reshare run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SessionRecord {
    /// Sequence number.
    pub id: u64,
    /// `sign`, `dkg`, `reshare` or `settle` (a netting round's settlement batch).
    pub kind: &'static str,
    /// Committee index.
    pub committee: usize,
    /// Arrival (virtual ms).
    pub arrived_ms: f64,
    /// End (virtual ms), if it ended.
    pub finished_ms: Option<f64>,
    /// `finished_ms - arrived_ms` for successful sessions.
    pub latency_ms: Option<f64>,
    /// Outcome name (`signed`, `aborted`, `timed-out`, `lost`, `unfinished`).
    pub outcome: &'static str,
    /// Attempts used (1 for DKG and reshare runs).
    pub attempts: u32,
    /// Signers of the last attempt (all members for DKG, every dealer and new
    /// member for a reshare), as node labels.
    pub signers: Vec<String>,
    /// Culprits named, as node labels.
    pub culprits: Vec<String>,
    /// Culprits that really were faulty.
    pub culprits_correct: u32,
    /// Fault of the last failure.
    pub fault: Option<String>,
    /// Messages sent for this session.
    pub messages: u64,
    /// Bytes sent for this session.
    pub bytes: u64,
    /// ROAST figures (signing requests under `strategy = "roast"` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub roast: Option<RoastRecord>,
}

/// ROAST figures of one signing request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoastRecord {
    /// Sessions started (also `attempts`).
    pub sessions: u32,
    /// Most sessions running at once (started, some signer not answered yet):
    /// at most n − t + 1.
    pub max_concurrent: u32,
    /// Rounds to the signature, counted as causal message depth (offers are
    /// round 1, each session adds two): at most 2(n − t) + 3; `null` if unsigned.
    pub rounds: Option<u32>,
    /// Signers marked malicious for the request (invalid shares), as node labels.
    pub malicious: Vec<String>,
    /// Sessions not started because they would have exceeded the round bound.
    pub round_capped: u32,
}

/// Presigning counters of a run under `strategy = "roast"`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PresignReport {
    /// `PresignOffer` envelopes the coordinator admitted or refused.
    pub offers: u64,
    /// Commitments filed in the coordinator's book.
    pub commitments_filed: u64,
    /// Offers the book (or the envelope check) refused.
    pub offers_refused: u64,
    /// Commitments the book handed out for sessions.
    pub commitments_used: u64,
    /// Handed-out commitments whose `(node, epoch, index)` had been handed out
    /// before: must be 0.
    pub reused: u64,
    /// Nonces the signers' pools generated (over all epochs).
    pub pool_generated: u64,
    /// Nonces taken from the pools for a signature.
    pub pool_taken: u64,
    /// Nonces that expired unused.
    pub pool_expired: u64,
    /// `NoncePool::take` calls refused (unknown, used or expired ids).
    pub pool_refused: u64,
    /// `PresignedSign`s a signer refused because its pool did not hand out the
    /// named nonces.
    pub signer_refusals: u64,
    /// Nonces signers dropped because their coordinator had asked for later ones
    /// more than a second before (their offer or `PresignedSign` was lost or
    /// refused in transit); they count as taken in `pool_taken`.
    pub orphans_dropped: u64,
    /// ROAST sessions started, all requests.
    pub sessions: u64,
    /// Most sessions of one request running at once.
    pub max_concurrent: u32,
    /// Most rounds any signed request took.
    pub max_rounds: Option<u32>,
}

/// Latency percentiles (ms).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Percentiles {
    /// Fastest.
    pub min: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Slowest.
    pub max: f64,
    /// Arithmetic mean.
    pub mean: f64,
}

/// Who was blamed and whether rightly.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BlameSummary {
    /// Culprit namings (one per culprit per failed attempt or DKG run).
    pub named: u64,
    /// Namings of nodes that really were faulty (byzantine, or down at the time).
    pub correct: u64,
    /// `correct / named`; `null` when nobody was named.
    pub accuracy: Option<f64>,
    /// Byzantine nodes in the run.
    pub byzantine: usize,
    /// Distinct byzantine nodes named at least once.
    pub byzantine_named: usize,
}

/// One node's line in the summary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeReport {
    /// Label (`n1`…, `coordinator`).
    pub label: String,
    /// Region name.
    pub region: String,
    /// True for byzantine nodes.
    pub byzantine: bool,
    /// Counters.
    #[serde(flatten)]
    pub stats: NodeStats,
}

/// The result of one run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// Scenario name.
    pub scenario: String,
    /// Seed used.
    pub seed: u64,
    /// Swept parameter and its value for this run, if part of a sweep.
    pub sweep_point: Option<(String, String)>,
    /// SHA-256 over every delivered message and outcome.
    pub trace_hash: String,
    /// Events in the trace.
    pub trace_events: u64,
    /// Virtual time simulated (s).
    pub virtual_seconds: f64,
    /// Sessions (signing requests and DKG runs).
    pub sessions: u64,
    /// Successful ones.
    pub signed: u64,
    /// Gave up after provable faults.
    pub aborted: u64,
    /// Gave up after a deadline.
    pub timed_out: u64,
    /// Lost with a crashed coordinator.
    pub lost: u64,
    /// Still running at the end.
    pub unfinished: u64,
    /// `signed / sessions`.
    pub success_rate: f64,
    /// Latency of successful sessions (ms).
    pub latency_ms: Option<Percentiles>,
    /// Mean attempts per session.
    pub attempts_mean: f64,
    /// Most attempts any session needed.
    pub attempts_max: u32,
    /// Successful sessions per virtual second of the arrival window.
    pub throughput_per_s: f64,
    /// Messages sent in total.
    pub messages: u64,
    /// Bytes sent in total.
    pub bytes: u64,
    /// Messages lost to loss, partitions or down nodes.
    pub dropped: u64,
    /// Blame accuracy.
    pub blame: BlameSummary,
    /// Per-node traffic and CPU.
    pub nodes: Vec<NodeReport>,
    /// Netting rounds (only with a `[netting]` table).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub netting: Option<NettingSummary>,
    /// Presigning and ROAST counters (only with `strategy = "roast"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presign: Option<PresignReport>,
}

/// One phase of a netting round: when it ran (ms after the round started) and
/// the messages it sent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PhaseReport {
    /// `dealing`, `delivery`, `acceptance`, `close`, `outputs`, `opening`, `settlement`.
    pub phase: &'static str,
    /// First moment of the phase.
    pub start_ms: Option<f64>,
    /// Last moment of the phase.
    pub end_ms: Option<f64>,
    /// `end_ms - start_ms`.
    pub ms: Option<f64>,
    /// Messages sent in the phase.
    pub messages: u64,
    /// Bytes sent in the phase.
    pub bytes: u64,
}

/// One endpoint's netting traffic in a round.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrafficReport {
    /// Node label or party name.
    pub label: String,
    /// Messages sent.
    pub sent: u64,
    /// Bytes sent.
    pub sent_bytes: u64,
    /// Messages delivered to it.
    pub received: u64,
    /// Bytes delivered to it.
    pub received_bytes: u64,
}

/// One netting round.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NettingRoundReport {
    /// Round number (0-based).
    pub round: u32,
    /// Start (virtual ms).
    pub started_ms: f64,
    /// End (virtual ms), if it ended.
    pub finished_ms: Option<f64>,
    /// `settled`, `signing-failed`, `opening-failed`, `conservation-failed`,
    /// `too-few-inputs`, `unfinished` or `not-started`.
    pub outcome: String,
    /// True when the settlement batch was signed.
    pub settled: bool,
    /// Start to the later of the last party result and the settlement signature.
    pub latency_ms: Option<f64>,
    /// Parties in the round.
    pub parties: usize,
    /// Parties whose bundles the round closed on.
    pub participants: usize,
    /// Secret values each party shares.
    pub values_per_party: usize,
    /// Commitments in each bundle (`values × t`).
    pub commitments_per_bundle: usize,
    /// The seven phases.
    pub phases: Vec<PhaseReport>,
    /// Messages sent (all phases, the settlement signing included).
    pub messages: u64,
    /// Bytes sent (all phases, the settlement signing included).
    pub bytes: u64,
    /// Netting traffic per node and party (without the settlement signing).
    pub traffic: Vec<TrafficReport>,
    /// Nodes named by any party or by the settlement opening.
    pub culprits: Vec<String>,
    /// True when every culprit is a configured liar.
    pub culprits_correct: bool,
    /// Per culprit, how many parties named it.
    pub named_by_parties: BTreeMap<String, u32>,
    /// Culprits the coordinator's settlement opening named.
    pub named_by_settlement: Vec<String>,
    /// Nodes whose public outputs never reached the coordinator (silent, down, lost).
    pub unanswered: Vec<String>,
    /// Parties that opened a verified result.
    pub parties_opened: usize,
    /// True when every opened result equals `netting::reference::compute`.
    pub results_match_reference: bool,
    /// Transfers in the settlement batch.
    pub transfers: usize,
    /// The 32-byte message the network signs (hex).
    pub settlement_message: Option<String>,
    /// Attempts of the settlement signing.
    pub signing_attempts: u32,
    /// Signers of its last attempt.
    pub signers: Vec<String>,
    /// Bundles or closes refused, parties that could not open (with the reason).
    pub refused: Vec<String>,
    /// Why the round did not settle.
    pub fault: Option<String>,
    /// The limit-check phase (rounds with `[netting.limits]` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limits: Option<LimitsReport>,
}

/// A round's limit checks: what the nodes signed against the plaintext truth of
/// the generated inputs, and what the MPC cost.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LimitsReport {
    /// The verdict `t` nodes signed alike (`None`: no decision).
    pub covered: Option<bool>,
    /// The plaintext truth: every participant's `net + collateral + limit ≥ 0`.
    pub plaintext_covered: bool,
    /// Parties the signed verdict names (with `reveal_failures`).
    pub failed: Vec<String>,
    /// Parties not covered in plaintext.
    pub plaintext_failed: Vec<String>,
    /// Gross and net volume per asset the verdict opened (with `efficiency`).
    pub volumes: Vec<quorate_protocol::netting::limits::verdict::AssetVolume>,
    /// The same volumes in plaintext.
    pub plaintext_volumes: Vec<quorate_protocol::netting::limits::verdict::AssetVolume>,
    /// Valid signed verdicts the coordinator received (last attempt).
    pub verdicts: u32,
    /// Signed verdicts whose statement differs from the plaintext (must be 0).
    pub disagreements: u32,
    /// Attempts started.
    pub attempts: u32,
    /// Attempts that aborted or timed out, with the reason.
    pub failures: Vec<String>,
    /// King round trips (steps answered), all attempts.
    pub steps: u32,
    /// Products reduced by the king.
    pub products: u64,
    /// Values opened.
    pub openings: u64,
    /// Field elements the king received (all nodes).
    pub scalars_in: u64,
    /// Field elements the king sent to each node.
    pub scalars_out: u64,
    /// Step-message bytes the king received (postcard, all nodes).
    pub bytes_in: u64,
    /// Step-message bytes the king sent (postcard, every recipient).
    pub bytes_out: u64,
    /// Messages on the wire in the phase (signed envelopes of the parts, results
    /// and restarts).
    pub messages: u64,
    /// Their bytes on the wire.
    pub wire_bytes: u64,
    /// First node starting the check (ms after the round started).
    pub start_ms: Option<f64>,
    /// Last node finishing it (its verdict signed, outputs released).
    pub end_ms: Option<f64>,
    /// `end_ms - start_ms`: the latency the check added before outputs go out.
    pub ms: Option<f64>,
    /// When the coordinator had `t` matching verdicts (ms after the round started).
    pub decided_ms: Option<f64>,
}

/// All netting rounds of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NettingSummary {
    /// Rounds.
    pub rounds: u32,
    /// Rounds whose settlement was signed.
    pub settled: u32,
    /// Latency of settled rounds (ms).
    pub latency_ms: Option<Percentiles>,
    /// Messages of all rounds.
    pub messages: u64,
    /// Bytes of all rounds.
    pub bytes: u64,
    /// Every node named in any round.
    pub culprits: Vec<String>,
    /// Configured liars.
    pub liars: Vec<String>,
    /// Configured silent nodes.
    pub silent: Vec<String>,
    /// True when every round's results equal the plaintext reference.
    pub results_match_reference: bool,
    /// Rounds whose limits were checked (a verdict was signed).
    pub limit_checked: u32,
    /// Rounds the signed verdict found covered.
    pub covered: u32,
    /// Signed verdicts that differ from the plaintext, all rounds (must be 0).
    pub verdict_disagreements: u32,
    /// Per round.
    pub detail: Vec<NettingRoundReport>,
}

/// Percentiles of latencies (ms) through an HDR histogram (µs, 3 significant digits).
pub fn percentiles(latencies_ms: &[f64]) -> Option<Percentiles> {
    if latencies_ms.is_empty() {
        return None;
    }
    let mut h = Histogram::<u64>::new_with_bounds(1, 1_000_000_000_000, 3).ok()?;
    for l in latencies_ms {
        h.saturating_record((l * 1_000.0).round().max(1.0) as u64);
    }
    let q = |p: f64| h.value_at_quantile(p) as f64 / 1_000.0;
    Some(Percentiles {
        min: h.min() as f64 / 1_000.0,
        p50: q(0.5),
        p90: q(0.9),
        p99: q(0.99),
        max: h.max() as f64 / 1_000.0,
        mean: latencies_ms.iter().sum::<f64>() / latencies_ms.len() as f64,
    })
}

pub(crate) fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn opt(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.3}")).unwrap_or_default()
}

/// The sessions as CSV text.
pub fn sessions_csv(records: &[SessionRecord]) -> String {
    // ROAST runs add their columns at the end (other runs keep the header as is).
    let roast = records.iter().any(|r| r.roast.is_some());
    let mut out = String::from(
        "id,kind,committee,arrived_ms,finished_ms,latency_ms,outcome,attempts,signers,culprits,culprits_correct,fault,messages,bytes",
    );
    if roast {
        out.push_str(",roast_sessions,max_concurrent,rounds,malicious,round_capped");
    }
    out.push('\n');
    for r in records {
        let _ = write!(
            out,
            "{},{},{},{:.3},{},{},{},{},{},{},{},{},{},{}",
            r.id,
            r.kind,
            r.committee,
            r.arrived_ms,
            opt(r.finished_ms),
            opt(r.latency_ms),
            r.outcome,
            r.attempts,
            csv_field(&r.signers.join(";")),
            csv_field(&r.culprits.join(";")),
            r.culprits_correct,
            csv_field(r.fault.as_deref().unwrap_or("")),
            r.messages,
            r.bytes
        );
        match (&r.roast, roast) {
            (Some(x), _) => {
                let _ = write!(
                    out,
                    ",{},{},{},{},{}",
                    x.sessions,
                    x.max_concurrent,
                    x.rounds.map_or(String::new(), |v| v.to_string()),
                    csv_field(&x.malicious.join(";")),
                    x.round_capped
                );
            }
            (None, true) => out.push_str(",,,,,"),
            (None, false) => {}
        }
        out.push('\n');
    }
    out
}

/// The netting rounds as CSV text: one row per round, per-phase durations (ms) and
/// bytes.
pub fn netting_csv(rounds: &[NettingRoundReport]) -> String {
    let mut out = String::from("round,outcome,settled,started_ms,latency_ms");
    for p in [
        "dealing",
        "delivery",
        "acceptance",
        "close",
        "outputs",
        "opening",
        "settlement",
    ] {
        let _ = write!(out, ",{p}_ms,{p}_bytes");
    }
    out.push_str(",messages,bytes,participants,parties_opened,results_match_reference,culprits,unanswered,signing_attempts");
    out.push_str(",limits,covered,plaintext_covered,verdict_disagreements,limit_attempts,limit_steps,limit_products,limit_openings,limit_bytes_in,limit_bytes_out,limit_wire_bytes,limit_ms\n");
    for r in rounds {
        let _ = write!(
            out,
            "{},{},{},{:.3},{}",
            r.round,
            r.outcome,
            r.settled,
            r.started_ms,
            opt(r.latency_ms)
        );
        for p in &r.phases {
            let _ = write!(out, ",{},{}", opt(p.ms), p.bytes);
        }
        let _ = write!(
            out,
            ",{},{},{},{},{},{},{},{}",
            r.messages,
            r.bytes,
            r.participants,
            r.parties_opened,
            r.results_match_reference,
            csv_field(&r.culprits.join(";")),
            csv_field(&r.unanswered.join(";")),
            r.signing_attempts
        );
        let _ = writeln!(out, "{}", limits_csv(r.limits.as_ref()));
    }
    out
}

/// The limit columns of a `netting.csv` row (empty without limit checks).
fn limits_csv(l: Option<&LimitsReport>) -> String {
    let Some(l) = l else {
        return ",false,,,,,,,,,,,".to_string();
    };
    format!(
        ",true,{},{},{},{},{},{},{},{},{},{},{}",
        l.covered.map(|c| c.to_string()).unwrap_or_default(),
        l.plaintext_covered,
        l.disagreements,
        l.attempts,
        l.steps,
        l.products,
        l.openings,
        l.bytes_in,
        l.bytes_out,
        l.wire_bytes,
        opt(l.ms)
    )
}

pub(crate) fn write(path: &Path, contents: &str) -> Result<(), SimError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| SimError::Write {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    std::fs::write(path, contents).map_err(|source| SimError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Pretty JSON of any report value.
pub fn to_json<T: Serialize>(value: &T) -> Result<String, SimError> {
    serde_json::to_string_pretty(value).map_err(|e| SimError::Serialize(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_known_values() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        let p = percentiles(&v).expect("some");
        assert!((p.p50 - 50.0).abs() < 0.1, "{p:?}");
        assert!((p.p99 - 99.0).abs() < 0.1, "{p:?}");
        assert!((p.mean - 50.5).abs() < 1e-9);
        assert!(percentiles(&[]).is_none());
    }

    #[test]
    fn csv_quotes_commas() {
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("ab"), "ab");
    }
}
