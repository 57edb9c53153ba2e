//! Turning a finished world into a [`RunResult`].

use std::collections::BTreeSet;

use super::World;
use crate::{
    engine::Micros,
    report::{self, BlameSummary, NodeReport, SessionRecord, Summary},
    robust::Outcome,
};

/// Everything one run produced.
#[derive(Debug, Clone, PartialEq)]
pub struct RunResult {
    /// Aggregates.
    pub summary: Summary,
    /// One record per signing request, DKG run or reshare run, in arrival order.
    pub sessions: Vec<SessionRecord>,
    /// Netting rounds in memory (definitions, inputs, results), for checks
    /// against the plaintext reference; empty without `[netting]`.
    pub netting: Vec<super::NettingRound>,
    /// Reshare runs in memory (the old key and every new share), for checks
    /// against the old key; empty without `[reshare]`.
    pub reshares: Vec<super::ReshareRecord>,
}

fn ms(t: Micros) -> f64 {
    t as f64 / 1_000.0
}

impl World {
    pub(crate) fn result(&self, sweep_point: Option<(String, String)>) -> RunResult {
        let mut sessions = Vec::new();
        let mut named = 0u64;
        let mut correct = 0u64;
        let mut byz_named = BTreeSet::new();
        for r in self.requests.values() {
            let (end, outcome) = r.finished.unwrap_or((self.now, Outcome::Unfinished));
            let good = r.blames.iter().filter(|b| b.correct).count();
            named += r.blames.len() as u64;
            correct += good as u64;
            for b in &r.blames {
                if self.adversary.is_byzantine(b.node) {
                    byz_named.insert(b.node);
                }
            }
            sessions.push(SessionRecord {
                id: r.id,
                kind: if self.netting.as_ref().is_some_and(|n| n.is_settlement(r.id)) {
                    "settle"
                } else {
                    "sign"
                },
                committee: r.committee,
                arrived_ms: ms(r.arrived),
                finished_ms: r.finished.map(|(t, _)| ms(t)),
                latency_ms: (outcome == Outcome::Signed).then(|| ms(end - r.arrived)),
                outcome: outcome.name(),
                attempts: r.attempts,
                signers: r.last_signers.iter().map(|n| self.topo.label(*n)).collect(),
                culprits: r.blames.iter().map(|b| self.topo.label(b.node)).collect(),
                culprits_correct: good as u32,
                fault: r.last_fault.clone(),
                messages: r.messages,
                bytes: r.bytes,
                roast: self.roast_record(r.id),
            });
        }
        for r in self.runs.values() {
            let (end, outcome) = r.finished.unwrap_or((self.now, Outcome::Unfinished));
            let mut good = 0u32;
            for node in r.blamed.keys() {
                let ok = self.adversary.is_byzantine(*node)
                    || self.nodes[*node].down_during(r.started, end);
                if ok {
                    good += 1;
                }
                if self.adversary.is_byzantine(*node) {
                    byz_named.insert(*node);
                }
            }
            named += r.blamed.len() as u64;
            correct += u64::from(good);
            sessions.push(SessionRecord {
                id: r.id,
                kind: "dkg",
                committee: r.committee,
                arrived_ms: ms(r.started),
                finished_ms: r.finished.map(|(t, _)| ms(t)),
                latency_ms: (outcome == Outcome::Signed).then(|| ms(end - r.started)),
                outcome: outcome.name(),
                attempts: 1,
                signers: self
                    .topo
                    .members(r.committee)
                    .map(|n| self.topo.label(n))
                    .collect(),
                culprits: r.blamed.keys().map(|n| self.topo.label(*n)).collect(),
                culprits_correct: good,
                fault: r.last_fault.clone(),
                messages: r.messages,
                bytes: r.bytes,
                roast: None,
            });
        }
        let (reshare_sessions, reshare_named, reshare_correct) = self.reshare_sessions();
        sessions.extend(reshare_sessions);
        named += reshare_named;
        correct += reshare_correct;
        sessions.sort_by_key(|s| s.id);
        let count = |o: Outcome| sessions.iter().filter(|s| s.outcome == o.name()).count() as u64;
        let latencies: Vec<f64> = sessions.iter().filter_map(|s| s.latency_ms).collect();
        let total = sessions.len() as u64;
        let signed = count(Outcome::Signed);
        let window = self.scenario.workload.duration_s.max(1e-9);
        let nodes = (0..self.nodes.len())
            .map(|i| NodeReport {
                label: self.topo.label(i),
                region: self.topo.regions[self.topo.node_region[i]].clone(),
                byzantine: self.adversary.is_byzantine(i),
                stats: self.nodes[i].stats.clone(),
            })
            .collect::<Vec<_>>();
        let (netting, netting_rounds) = self.netting_result();
        let summary = Summary {
            scenario: self.scenario.name.clone(),
            seed: self.scenario.seed,
            sweep_point,
            trace_hash: self.trace.hex(),
            trace_events: self.trace.events(),
            virtual_seconds: ms(self.now) / 1_000.0,
            sessions: total,
            signed,
            aborted: count(Outcome::Aborted),
            timed_out: count(Outcome::TimedOut),
            lost: count(Outcome::Lost),
            unfinished: count(Outcome::Unfinished),
            success_rate: if total == 0 {
                0.0
            } else {
                signed as f64 / total as f64
            },
            latency_ms: report::percentiles(&latencies),
            attempts_mean: if total == 0 {
                0.0
            } else {
                sessions.iter().map(|s| f64::from(s.attempts)).sum::<f64>() / total as f64
            },
            attempts_max: sessions.iter().map(|s| s.attempts).max().unwrap_or(0),
            throughput_per_s: signed as f64 / window,
            messages: nodes.iter().map(|n| n.stats.sent).sum(),
            bytes: nodes.iter().map(|n| n.stats.sent_bytes).sum(),
            dropped: self.dropped,
            blame: BlameSummary {
                named,
                correct,
                accuracy: (named > 0).then(|| correct as f64 / named as f64),
                byzantine: self.adversary.count(),
                byzantine_named: byz_named.len(),
            },
            nodes,
            netting,
            presign: self.presign_report(),
        };
        RunResult {
            summary,
            sessions,
            netting: netting_rounds,
            reshares: self.reshare_records(),
        }
    }
}
