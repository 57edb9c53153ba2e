//! The bench's results: one row per load, the in-process baseline, ratios; printed
//! as a table or written as JSON (`--json`).

use std::{collections::BTreeMap, path::Path};

use serde::Serialize;

use super::{baseline::Baseline, load::Outcome};

/// CPU of one process over one row.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ProcessCpu {
    /// `coordinator`, `node1`, …, or `bench` (this process).
    pub(crate) name: String,
    /// CPU seconds used during the row.
    pub(crate) cpu_seconds: f64,
    /// CPU ms per signature of the row.
    pub(crate) ms_per_signature: f64,
    /// Signatures this node contributed a share to (nodes only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) shares: Option<u64>,
    /// CPU ms per share contributed (nodes that signed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) ms_per_share: Option<f64>,
    /// Resident memory at the end of the row, bytes.
    pub(crate) rss_bytes: u64,
}

/// One row.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Row {
    /// Concurrent clients.
    pub(crate) concurrency: usize,
    /// Messages per request.
    pub(crate) messages: usize,
    /// Requests signed and verified.
    pub(crate) requests: u64,
    /// Signatures verified.
    pub(crate) signatures: u64,
    /// Wall seconds.
    pub(crate) seconds: f64,
    /// Signatures per second.
    pub(crate) signatures_per_second: f64,
    /// Throughput over the in-process limit.
    pub(crate) ratio_to_limit: f64,
    /// Request latency, ms.
    pub(crate) latency_ms: Latency,
    /// Failed requests by cause.
    pub(crate) errors: BTreeMap<String, u64>,
    /// Every metered process.
    pub(crate) cpu: Vec<ProcessCpu>,
    /// Coordinator CPU per signature over frost-core's aggregation + verification.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) coordinator_ratio: Option<f64>,
    /// Highest node CPU per share over frost-core's round 1 + round 2.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) signer_ratio: Option<f64>,
}

/// Latency percentiles, ms.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Latency {
    pub(crate) p50: f64,
    pub(crate) p90: f64,
    pub(crate) p99: f64,
    pub(crate) max: f64,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Report {
    /// quorate version.
    pub(crate) version: String,
    /// Key signed with.
    pub(crate) key_id: String,
    /// In-process frost-core on this machine, same suite, t and n: the mean of
    /// `baseline_runs`, what the ratios use.
    pub(crate) baseline: Baseline,
    /// The baseline measured before the rows and after them.
    pub(crate) baseline_runs: [Baseline; 2],
    /// One per load.
    pub(crate) rows: Vec<Row>,
}

impl Row {
    /// Builds a row from a load outcome and the CPU readings around it.
    pub(crate) fn new(
        outcome: &Outcome,
        concurrency: usize,
        messages: usize,
        cpu: Vec<ProcessCpu>,
        baseline: &Baseline,
    ) -> Self {
        let seconds = outcome.elapsed.as_secs_f64();
        let rate = outcome.signatures as f64 / seconds.max(1e-9);
        let ms = |q: f64| outcome.latency_us.value_at_quantile(q) as f64 / 1000.0;
        let coordinator_ratio = cpu
            .iter()
            .find(|p| p.name == "coordinator")
            .filter(|_| outcome.signatures > 0)
            .map(|p| p.ms_per_signature * 1000.0 / baseline.aggregate_us);
        let signer_ratio = cpu
            .iter()
            .filter_map(|p| p.ms_per_share)
            .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))))
            .map(|ms| ms * 1000.0 / baseline.signer_us);
        Self {
            concurrency,
            messages,
            requests: outcome.ok_requests,
            signatures: outcome.signatures,
            seconds,
            signatures_per_second: rate,
            ratio_to_limit: rate / baseline.limit_per_second,
            latency_ms: Latency {
                p50: ms(0.5),
                p90: ms(0.9),
                p99: ms(0.99),
                max: outcome.latency_us.max() as f64 / 1000.0,
            },
            errors: outcome.errors.clone(),
            cpu,
            coordinator_ratio,
            signer_ratio,
        }
    }
}

impl Report {
    /// The human-readable table.
    pub(crate) fn table(&self) -> String {
        use std::fmt::Write as _;
        let b = &self.baseline;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "in-process frost-core, {} {}-of-{}: {:.0} signatures/s on {} threads (before the load {:.0}, after it {:.0}); one signer's round 1 + round 2 {:.0} µs, aggregation + verification {:.0} µs, a whole signature {:.0} µs",
            b.suite,
            b.threshold,
            b.n,
            b.limit_per_second,
            b.threads,
            self.baseline_runs[0].limit_per_second,
            self.baseline_runs[1].limit_per_second,
            b.signer_us,
            b.aggregate_us,
            b.signature_us
        );
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "| clients | msgs/req | signatures/s | of limit | p50 ms | p90 ms | p99 ms | max ms | coordinator ms/sig | signer ms/share (max) | errors |"
        );
        let _ = writeln!(
            out,
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
        );
        for r in &self.rows {
            let coord = r
                .cpu
                .iter()
                .find(|p| p.name == "coordinator")
                .map(|p| {
                    format!(
                        "{:.2} ({:.1}×)",
                        p.ms_per_signature,
                        r.coordinator_ratio.unwrap_or(0.0)
                    )
                })
                .unwrap_or_else(|| "—".into());
            let signer = r
                .cpu
                .iter()
                .filter_map(|p| p.ms_per_share)
                .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))))
                .map(|v| format!("{v:.2} ({:.1}×)", r.signer_ratio.unwrap_or(0.0)))
                .unwrap_or_else(|| "—".into());
            let errors: u64 = r.errors.values().sum();
            let _ = writeln!(
                out,
                "| {} | {} | {:.0} | {:.0} % | {:.1} | {:.1} | {:.1} | {:.1} | {coord} | {signer} | {errors} |",
                r.concurrency,
                r.messages,
                r.signatures_per_second,
                r.ratio_to_limit * 100.0,
                r.latency_ms.p50,
                r.latency_ms.p90,
                r.latency_ms.p99,
                r.latency_ms.max,
            );
        }
        for r in &self.rows {
            let _ = writeln!(
                out,
                "\n{} clients × {} messages: {} signatures in {:.1} s",
                r.concurrency, r.messages, r.signatures, r.seconds
            );
            for p in &r.cpu {
                let shares = match (p.shares, p.ms_per_share) {
                    (Some(s), Some(ms)) => format!(", {s} shares, {ms:.2} ms/share"),
                    (Some(s), None) => format!(", {s} shares"),
                    _ => String::new(),
                };
                let _ = writeln!(
                    out,
                    "  {:<12} {:>7.2} CPU s  {:>6.2} ms/signature{shares}  RSS {:.1} MB",
                    p.name,
                    p.cpu_seconds,
                    p.ms_per_signature,
                    p.rss_bytes as f64 / 1e6
                );
            }
            for (cause, count) in &r.errors {
                let _ = writeln!(out, "  error {cause}: {count}");
            }
        }
        out
    }
}

/// Prints a report: the table on stdout, and the JSON to `json` (`-`: stdout, the
/// table then goes to stderr).
pub(crate) fn emit(
    table: &str,
    report: &impl Serialize,
    json: Option<&Path>,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let text = serde_json::to_string_pretty(report)?;
    match json {
        Some(p) if p.as_os_str() == "-" => {
            eprintln!("{table}");
            println!("{text}");
        }
        Some(p) => {
            std::fs::write(p, text + "\n").with_context(|| format!("writing {}", p.display()))?;
            println!("{table}");
            println!("JSON report written to {}", p.display());
        }
        None => println!("{table}"),
    }
    Ok(())
}
