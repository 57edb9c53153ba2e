//! The limit-check phase of a limit-checked round, over the simulated links.
//!
//! At the cut-off the coordinator closes the round and creates the king
//! (`KingLimits`, attempt 1). Each node closes (`NodeRound::close`), holds its
//! outputs and starts attempt 1 itself (`NodeLimits::start`), sending its step-0
//! parts to the coordinator; every step the king collects every node's parts and
//! answers each node with its own parts (`KingLimits::on_part`), 14 round trips in
//! all; each node ends with a signed `LimitResult` to the coordinator and, when its
//! verdict says covered, releases the outputs it held. The coordinator decides
//! once `t` valid verdicts of the attempt state the same: covered starts the
//! result deadline and lets the settlement go ahead, not covered ends the round
//! (`not-covered`, never settled).
//!
//! The king needs every node's message each step, so a lost part, a silent or a
//! crashed node stalls the attempt: after `attempt_timeout_ms` the coordinator
//! sends `LimitStart` with the next attempt (fresh keys) to every node, and after
//! `attempts` it gives up (`limits-failed`). An aborted attempt (a node named by
//! the MPC's checks) restarts at once.
//!
//! CPU: a node's start costs `node_setup_us`; producing step `s`'s message (or the
//! result, `s` = 14) costs `node_us_per_input[s] × comparisons`, the king's answer
//! to step `s` `king_us_per_input[s] × comparisons` ([`LimitCosts`]).
//!
//! [`LimitCosts`]: crate::scenario::LimitCosts

use std::collections::{BTreeMap, BTreeSet};

use quorate_protocol::{
    netting::{
        limits::{
            run::{KingLimits, NodeLimits},
            verdict::LimitVerdict,
            Job, Stats,
        },
        open::{self, NodeOutputs},
    },
    Payload,
};

use super::{cover::Truth, NetMsg, RoundState, Span, LIMITS};
use crate::{
    engine::{ms_to_us, Micros},
    sim::{Event, World},
};

/// A round's limit-check state (shared by the simulated coordinator and nodes;
/// each side reads only its own parts).
pub(crate) struct LimitsState {
    job: Job,
    participants: Vec<bool>,
    inputs_digest: [u8; 32],
    /// The plaintext truth (`None`: an input did not encode).
    pub(super) truth: Option<Truth>,
    /// Coordinator: current attempt, its king and when it started.
    attempt: u32,
    king: Option<KingLimits>,
    /// Costs of every attempt so far (finished attempts and the current one's
    /// king once it ends).
    stats: Stats,
    /// Coordinator: valid verdicts of the current attempt, per member position.
    pub(super) verdicts: BTreeMap<usize, LimitVerdict>,
    /// Coordinator: the decision (covered) and when.
    pub(super) decided: Option<(bool, Micros)>,
    pub(super) failures: Vec<String>,
    /// Nodes: their runs, held outputs, attempts asked for before they closed.
    nodes: BTreeMap<usize, NodeLimits>,
    held: BTreeMap<usize, NodeOutputs>,
    requested: BTreeMap<usize, u32>,
    failed_nodes: BTreeSet<(usize, u32)>,
    /// First node start to last node verdict.
    pub(super) span: Span,
}

impl LimitsState {
    /// The attempts started.
    pub(super) fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Costs of all attempts (the current king's included).
    pub(super) fn stats(&self) -> Stats {
        let mut s = self.stats;
        if let Some(k) = &self.king {
            add(&mut s, k.stats());
        }
        s
    }
}

fn add(total: &mut Stats, s: Stats) {
    total.steps += s.steps;
    total.products += s.products;
    total.openings += s.openings;
    total.scalars_in += s.scalars_in;
    total.scalars_out += s.scalars_out;
    total.bytes_in += s.bytes_in;
    total.bytes_out += s.bytes_out;
}

/// False while a limit-checked round has no covered decision (its settlement
/// must wait, and never happens when not covered).
pub(super) fn may_settle(r: &RoundState) -> bool {
    r.spec.limits.is_none()
        || r.limits
            .as_ref()
            .is_some_and(|l| matches!(l.decided, Some((true, _))))
}

/// The step a batch of outgoing payloads is for (`STEPS` for a result).
fn out_step(out: &[Payload]) -> u8 {
    match out.first() {
        Some(Payload::LimitPart { step, .. }) => *step,
        _ => quorate_protocol::netting::limits::STEPS,
    }
}

impl World {
    fn limits_mut(&mut self, round: usize) -> Option<&mut LimitsState> {
        self.round_mut(round).limits.as_deref_mut()
    }

    fn node_step_cost(&self, job: &Job, step: u8) -> Micros {
        let nt = self.netting.as_ref().expect("netting");
        nt.limit_costs
            .as_ref()
            .map_or(0, |c| c.node_us(step, job.inputs).round() as Micros)
    }

    /// The coordinator closed a limit-checked round: the plaintext truth, the
    /// king of attempt 1 and its timeout.
    pub(super) fn king_start(&mut self, round: usize) {
        let r = self.round_mut(round);
        let Some(inputs) = r.inputs_listed.clone() else {
            return;
        };
        let participants: Vec<bool> = inputs.iter().map(Option::is_some).collect();
        let inputs_digest = open::inputs_digest(&r.spec, &inputs);
        let Some(layout) =
            quorate_protocol::netting::limits::inputs::Layout::new(&r.spec, &participants)
        else {
            return;
        };
        let truth = Truth::compute(&r.spec, &r.inputs, &participants);
        r.limits = Some(Box::new(LimitsState {
            job: layout.job(),
            participants,
            inputs_digest,
            truth,
            attempt: 0,
            king: None,
            stats: Stats::default(),
            verdicts: BTreeMap::new(),
            decided: None,
            failures: Vec::new(),
            nodes: BTreeMap::new(),
            held: BTreeMap::new(),
            requested: BTreeMap::new(),
            failed_nodes: BTreeSet::new(),
            span: Span::default(),
        }));
        self.king_attempt(round, false);
    }

    /// The coordinator starts its next attempt (`announce`: tell the nodes with
    /// `LimitStart`; attempt 1 starts at each node's close).
    fn king_attempt(&mut self, round: usize, announce: bool) {
        let now = self.now;
        let max = self.nt().spec.limits.as_ref().map_or(1, |l| l.attempts);
        let timeout = self
            .nt()
            .spec
            .limits
            .as_ref()
            .map_or(0.0, |l| l.attempt_timeout_ms);
        let r = self.round_mut(round);
        let spec = r.spec.clone();
        let Some(l) = r.limits.as_deref_mut() else {
            return;
        };
        if let Some(k) = l.king.take() {
            add(&mut l.stats, k.stats());
        }
        if l.attempt >= max {
            let reason = l.failures.last().cloned().unwrap_or_default();
            r.fault = Some(format!("limit checks failed: {reason}"));
            self.netting_finish(round, "limits-failed", now);
            return;
        }
        l.attempt += 1;
        l.verdicts.clear();
        let attempt = l.attempt;
        match KingLimits::new(&spec, &l.participants, &l.inputs_digest, attempt) {
            Ok(k) => l.king = Some(k),
            Err(e) => {
                r.fault = Some(format!("limit checks: {e}"));
                self.netting_finish(round, "limits-failed", now);
                return;
            }
        }
        self.events.push(
            now + ms_to_us(timeout),
            Event::NettingLimitsTimeout { round, attempt },
        );
        if announce {
            let coordinator = self.topo.coordinator();
            for node in self.nt().members.clone() {
                let payload = Payload::LimitStart {
                    round: spec.id,
                    attempt,
                };
                let msg = NetMsg::Limit { round, payload };
                self.net_send(coordinator, node, msg, now, LIMITS);
            }
        }
    }

    /// An attempt's timeout: if it has not ended, note who the king waits for and
    /// start the next one (or give up).
    pub(crate) fn limits_timeout(&mut self, round: usize, attempt: u32) {
        let finished = self.round_mut(round).finished.is_some();
        let Some(l) = self.limits_mut(round) else {
            return;
        };
        if finished || l.decided.is_some() || l.attempt != attempt {
            return;
        }
        let (step, waiting) = l
            .king
            .as_ref()
            .map_or((0, Vec::new()), |k| (k.step(), k.waiting_for()));
        let waiting: Vec<String> = waiting
            .iter()
            .filter_map(|id| self.index.get(id).map(|n| self.topo.label(*n)))
            .collect();
        let l = self.limits_mut(round).expect("limits");
        l.failures.push(format!(
            "attempt {attempt} timed out at step {step} waiting for {}",
            waiting.join(",")
        ));
        self.king_attempt(round, true);
    }

    /// A node closed a limit-checked round: it holds its outputs and starts the
    /// attempt (the latest one the coordinator asked for, at least 1). Returns the
    /// extra CPU cost.
    pub(super) fn limits_node_start(
        &mut self,
        node: usize,
        pos: usize,
        round: usize,
        out: NodeOutputs,
        at: Micros,
    ) -> Micros {
        let Some(l) = self.limits_mut(round) else {
            return 0;
        };
        l.held.insert(pos, out);
        let attempt = l.requested.get(&pos).copied().unwrap_or(1);
        self.node_attempt(node, pos, round, attempt, at)
    }

    fn node_attempt(
        &mut self,
        node: usize,
        pos: usize,
        round: usize,
        attempt: u32,
        at: Micros,
    ) -> Micros {
        let identity = self.nodes[node].identity.clone();
        let job_inputs = self.limits_mut(round).map_or(0, |l| l.job.inputs);
        let setup = self
            .nt()
            .limit_costs
            .as_ref()
            .map_or(0, |c| c.node_us(0, job_inputs).round() as Micros);
        let label = self.topo.label(node);
        let r = self.round_mut(round);
        // Deterministic per (round, node, attempt): the simulator replays from its seed.
        let mut rng = <rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::seed_from_u64(
            (round as u64) << 32 ^ (pos as u64) << 8 ^ u64::from(attempt),
        );
        let started = NodeLimits::start(&r.node_rounds[pos], &identity, attempt, &mut rng);
        let Some(l) = r.limits.as_deref_mut() else {
            return 0;
        };
        match started {
            Ok((run, parts)) => {
                l.nodes.insert(pos, run);
                l.span.begin(at);
                let coordinator = self.topo.coordinator();
                for payload in parts {
                    let msg = NetMsg::Limit { round, payload };
                    self.net_send(node, coordinator, msg, at + setup, LIMITS);
                }
                setup
            }
            Err(e) => {
                r.refused
                    .push(format!("{label} could not start limit checks: {e}"));
                0
            }
        }
    }

    /// A limit-check message at a node.
    pub(super) fn limits_node_receive(
        &mut self,
        node: usize,
        pos: usize,
        round: usize,
        payload: Payload,
    ) -> Micros {
        if self.nt().silent.contains(&node) {
            return 0;
        }
        let now = self.now;
        match payload {
            Payload::LimitStart { attempt, .. } => {
                let Some(l) = self.limits_mut(round) else {
                    return 0;
                };
                let current = l.nodes.get(&pos).map_or(0, NodeLimits::attempt);
                if attempt <= current {
                    return 0;
                }
                if !l.held.contains_key(&pos) {
                    l.requested.insert(pos, attempt);
                    return 0;
                }
                self.node_attempt(node, pos, round, attempt, now)
            }
            Payload::LimitPart {
                attempt,
                step,
                part,
                parts,
                bytes,
                ..
            } => self.node_part(node, pos, round, (attempt, step, part, parts), bytes),
            _ => 0,
        }
    }

    fn node_part(
        &mut self,
        node: usize,
        pos: usize,
        round: usize,
        (attempt, step, part, parts): (u32, u8, u32, u32),
        bytes: Vec<u8>,
    ) -> Micros {
        let now = self.now;
        let identity = self.nodes[node].identity.clone();
        let label = self.topo.label(node);
        let r = self.round_mut(round);
        let spec = r.spec.clone();
        let Some(l) = r.limits.as_deref_mut() else {
            return 0;
        };
        let Some(run) = l.nodes.get_mut(&pos).filter(|n| n.attempt() == attempt) else {
            return 0;
        };
        let mut rng = <rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::seed_from_u64(
            (round as u64) << 40 ^ (pos as u64) << 16 ^ u64::from(attempt) << 8 ^ u64::from(step),
        );
        let out = match run.on_part(&spec, &identity, (step, part, parts), bytes, &mut rng) {
            Ok(out) if out.is_empty() => return 0,
            Ok(out) => out,
            Err(e) => {
                let failed = run.failure().is_some();
                if failed && l.failed_nodes.insert((pos, attempt)) {
                    r.refused
                        .push(format!("{label} aborted limit attempt {attempt}: {e}"));
                } else if !failed {
                    self.nodes[node].stats.rejected += 1;
                }
                return 0;
            }
        };
        let job = l.job.clone();
        let cost = self.node_step_cost(&job, out_step(&out));
        let done = now + cost;
        let coordinator = self.topo.coordinator();
        let mut covered = false;
        for payload in out {
            if let Payload::LimitResult { verdict, .. } = &payload {
                covered = verdict.covered;
                let l = self.limits_mut(round).expect("limits");
                l.span.finish(done);
            }
            let msg = NetMsg::Limit { round, payload };
            self.net_send(node, coordinator, msg, done, LIMITS);
        }
        if covered {
            let held = self.limits_mut(round).and_then(|l| l.held.remove(&pos));
            if let Some(out) = held {
                self.release_outputs(node, round, out, done);
            }
        }
        cost
    }

    /// A limit-check message at the coordinator; returns the king's CPU cost.
    pub(super) fn king_receive(&mut self, from: usize, round: usize, payload: Payload) -> Micros {
        let Some(pos) = self.nt().position(from) else {
            return 0;
        };
        let node_id = self.nodes[from].id;
        match payload {
            Payload::LimitPart {
                attempt,
                step,
                part,
                parts,
                bytes,
                ..
            } => self.king_part(round, node_id, (attempt, step, part, parts), bytes),
            Payload::LimitResult { verdict, .. } => {
                self.king_verdict(round, pos, node_id, verdict);
                0
            }
            _ => 0,
        }
    }

    fn king_part(
        &mut self,
        round: usize,
        from: quorate_protocol::NodeId,
        (attempt, step, part, parts): (u32, u8, u32, u32),
        bytes: Vec<u8>,
    ) -> Micros {
        let now = self.now;
        let costs = self.nt().limit_costs.clone();
        let r = self.round_mut(round);
        let spec = r.spec.clone();
        let Some(l) = r.limits.as_deref_mut() else {
            return 0;
        };
        if l.attempt != attempt || l.decided.is_some() {
            return 0;
        }
        let Some(king) = l.king.as_mut() else {
            return 0;
        };
        let answers = match king.on_part(&spec, &from, step, part, parts, bytes) {
            Ok(Some(a)) => a,
            Ok(None) => return 0,
            Err(e) => {
                l.failures.push(format!("attempt {attempt} aborted: {e}"));
                self.king_attempt(round, true);
                return 0;
            }
        };
        let cost = costs.map_or(0, |c| c.king_us(step, l.job.inputs).round() as Micros);
        let done = now + cost;
        let coordinator = self.topo.coordinator();
        for (id, parts) in answers {
            let Some(&to) = self.index.get(&id) else {
                continue;
            };
            for payload in parts {
                let msg = NetMsg::Limit { round, payload };
                self.net_send(coordinator, to, msg, done, LIMITS);
            }
        }
        cost
    }

    fn king_verdict(
        &mut self,
        round: usize,
        pos: usize,
        from: quorate_protocol::NodeId,
        verdict: LimitVerdict,
    ) {
        let now = self.now;
        let result_timeout = self.nt().spec.result_timeout_ms;
        let members = self.nt().members.len();
        let r = self.round_mut(round);
        let t = usize::from(r.spec.threshold);
        let valid = verdict.check(&r.spec).is_ok() && verdict.node == from;
        let Some(l) = r.limits.as_deref_mut() else {
            return;
        };
        if !valid || verdict.attempt != l.attempt || verdict.inputs_digest != l.inputs_digest {
            r.refused
                .push(format!("an invalid limit verdict from {from}"));
            return;
        }
        let same = l
            .verdicts
            .values()
            .filter(|v| v.statement() == verdict.statement())
            .count()
            + 1;
        let covered = verdict.covered;
        l.verdicts.insert(pos, verdict);
        if l.decided.is_some() || same < t || r.finished.is_some() {
            return;
        }
        l.decided = Some((covered, now));
        if let Some(k) = l.king.take() {
            add(&mut l.stats, k.stats());
        }
        if !covered {
            r.fault = Some("the signed limit verdict: not covered".into());
            self.netting_finish(round, "not-covered", now);
            return;
        }
        let full = r.views.len() == members && !r.settle_started;
        self.events.push(
            now + ms_to_us(result_timeout),
            Event::NettingDeadline(round),
        );
        if full {
            let coordinator = self.topo.coordinator();
            self.nodes[coordinator]
                .queue
                .push_back(crate::node::Work::NettingSettle { round });
        }
    }
}

impl LimitsState {
    /// The round's limit report (`rel`: virtual time to ms after the round start).
    pub(super) fn report(
        &self,
        r: &RoundState,
        rel: &dyn Fn(Option<Micros>) -> Option<f64>,
    ) -> crate::report::LimitsReport {
        let stats = self.stats();
        let truth = self.truth.as_ref();
        let decided = self
            .decided
            .and_then(|(c, _)| self.verdicts.values().find(|v| v.covered == c));
        let (start, end) = (rel(self.span.start), rel(self.span.end));
        crate::report::LimitsReport {
            covered: self.decided.map(|(c, _)| c),
            plaintext_covered: truth.is_some_and(|t| t.covered),
            failed: decided.map_or_else(Vec::new, |v| v.failed.clone()),
            plaintext_failed: truth.map_or_else(Vec::new, |t| t.failed.clone()),
            volumes: decided.map_or_else(Vec::new, |v| v.volumes.clone()),
            plaintext_volumes: truth
                .filter(|_| r.spec.limits.is_some_and(|l| l.efficiency))
                .map_or_else(Vec::new, |t| t.volumes.clone()),
            verdicts: self.verdicts.len() as u32,
            disagreements: self
                .verdicts
                .values()
                .filter(|v| !truth.is_some_and(|t| t.agrees(&r.spec, v)))
                .count() as u32,
            attempts: self.attempts(),
            failures: self.failures.clone(),
            steps: stats.steps,
            products: stats.products,
            openings: stats.openings,
            scalars_in: stats.scalars_in,
            scalars_out: stats.scalars_out,
            bytes_in: stats.bytes_in,
            bytes_out: stats.bytes_out,
            messages: r.messages[LIMITS],
            wire_bytes: r.bytes[LIMITS],
            start_ms: start,
            end_ms: end,
            ms: start.zip(end).map(|(a, b)| b - a),
            decided_ms: rel(self.decided.map(|(_, at)| at)),
        }
    }
}
