//! Results: a JSON summary (percentiles from an HDR histogram, blame accuracy,
//! per-node traffic) and one CSV row per session.

use std::{fmt::Write as _, path::Path};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::{error::SimError, node::NodeStats};

/// One signing request or DKG run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SessionRecord {
    /// Sequence number.
    pub id: u64,
    /// `sign` or `dkg`.
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
    /// Attempts used (1 for DKG).
    pub attempts: u32,
    /// Signers of the last attempt (all members for DKG), as node labels.
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
    let mut out = String::from(
        "id,kind,committee,arrived_ms,finished_ms,latency_ms,outcome,attempts,signers,culprits,culprits_correct,fault,messages,bytes\n",
    );
    for r in records {
        let _ = writeln!(
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
    }
    out
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
