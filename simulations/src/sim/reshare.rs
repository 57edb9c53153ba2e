//! Resharing runs: the key's old members that deal and the new committee run the
//! real `Reshare` machines over the simulated links, charged the reshare steps'
//! CPU; the run succeeds when every participant finished (every new member holds
//! a new share and every participant saw all confirmations of the unchanged group
//! key) and fails when a participant aborts or its deadline names a culprit.
//!
//! Every run starts from the committee's initial key (generation 0 → 1): runs are
//! independent repetitions, and their new shares are reported in
//! [`ReshareRecord`]s, not written back to the nodes' keystores. As in DKG runs,
//! no coordinator traffic is modelled (all participants start at once).

use std::collections::{BTreeMap, BTreeSet};

use quorate_protocol::{
    ids::SessionId,
    lifecycle::{Reshare, ReshareConfig, ReshareEvent},
    local::{Outcome as PartyOutcome, Party},
    Committee, GroupPublic, Input, KeyShare, Member, NodeId, ProtocolError,
};
use rand_core::RngCore;

use super::{
    signing::{fault_name, is_timeout},
    Owner, World,
};
use crate::{
    engine::Micros,
    node::{Liveness, Role, Session, Work},
    report::SessionRecord,
    robust::Outcome,
};

/// A resharing run in one committee.
pub(crate) struct ReshareRun {
    pub id: u64,
    pub committee: usize,
    pub config: ReshareConfig,
    /// Node indices of every participant (dealers and new members), ascending.
    pub participants: Vec<usize>,
    /// Node indices of the new members, in new-committee order.
    pub members: Vec<usize>,
    pub started: Micros,
    pub done: BTreeSet<usize>,
    pub resolved: BTreeSet<usize>,
    pub blamed: BTreeMap<usize, String>,
    pub last_fault: Option<String>,
    pub last_timeout: bool,
    pub last_done: Micros,
    pub finished: Option<(Micros, Outcome)>,
    pub messages: u64,
    pub bytes: u64,
    /// New shares, by node index.
    pub shares: BTreeMap<usize, KeyShare>,
}

/// One resharing run's result in memory, for checks against the old key.
#[derive(Debug, Clone)]
pub struct ReshareRecord {
    /// Session number (as in `RunResult::sessions`).
    pub id: u64,
    /// Committee index.
    pub committee: usize,
    /// Outcome name (`signed` when every participant finished).
    pub outcome: &'static str,
    /// The key's public data before the run.
    pub old: GroupPublic,
    /// The new threshold.
    pub threshold: u16,
    /// Labels of the new committee's members, in committee order.
    pub members: Vec<String>,
    /// The new share of each member that derived one: (label, share), in
    /// committee order.
    pub shares: Vec<(String, KeyShare)>,
}

impl PartialEq for ReshareRecord {
    /// Equal records hold byte-identical shares (`KeyShare` has no `PartialEq`).
    fn eq(&self, other: &Self) -> bool {
        let encoded = |r: &Self| -> Vec<(String, Vec<u8>)> {
            r.shares
                .iter()
                .map(|(l, s)| (l.clone(), postcard::to_allocvec(s).unwrap_or_default()))
                .collect()
        };
        self.id == other.id
            && self.committee == other.committee
            && self.outcome == other.outcome
            && self.old == other.old
            && self.threshold == other.threshold
            && self.members == other.members
            && encoded(self) == encoded(other)
    }
}

fn ms(t: Micros) -> f64 {
    t as f64 / 1_000.0
}

impl World {
    /// A reshare run arrives: the committee's key moves from its first `from_n`
    /// members to its last `to_n`, dealt by the first `dealers`.
    pub(super) fn new_reshare(&mut self, committee: usize) {
        let (Some(spec), Some(old)) = (
            self.scenario.reshare.clone(),
            self.publics.get(committee).cloned().flatten(),
        ) else {
            return;
        };
        let all: Vec<usize> = self.topo.members(committee).collect();
        let to_n = usize::from(spec.new_n(&self.scenario.committee));
        let dealer_nodes = &all[..usize::from(spec.dealer_count())];
        let members = all[all.len() - to_n..].to_vec();
        let new_committee: Vec<Member> = members
            .iter()
            .filter_map(|m| self.committees[committee].get(&self.nodes[*m].id).cloned())
            .collect();
        let new_committee = match Committee::new(new_committee) {
            Ok(c) => c,
            Err(e) => {
                self.trace.note(self.now, &format!("reshare refused: {e}"));
                return;
            }
        };
        let mut dealers: Vec<NodeId> = dealer_nodes.iter().map(|d| self.nodes[*d].id).collect();
        dealers.sort();
        let mut participants: Vec<usize> = dealer_nodes.iter().chain(&members).copied().collect();
        participants.sort();
        participants.dedup();
        let id = self.fresh_id();
        let mut session = [0u8; 32];
        self.rng_proto.fill_bytes(&mut session);
        let session = SessionId(session);
        let config = ReshareConfig {
            suite: old.suite,
            key_id: old.key_id,
            session,
            old,
            dealers,
            committee: new_committee,
            threshold: self.scenario.committee.threshold,
            generation: 1,
            timeout_ms: spec.timeout_ms,
            coordinator: NodeId([0; 32]),
        };
        self.reshares.insert(
            id,
            ReshareRun {
                id,
                committee,
                config,
                participants: participants.clone(),
                members,
                started: self.now,
                done: BTreeSet::new(),
                resolved: BTreeSet::new(),
                blamed: BTreeMap::new(),
                last_fault: None,
                last_timeout: false,
                last_done: self.now,
                finished: None,
                messages: 0,
                bytes: 0,
                shares: BTreeMap::new(),
            },
        );
        self.open += 1;
        self.owners.insert(session, Owner::Reshare(id));
        for p in participants {
            if self.nodes[p].liveness == Liveness::Crashed {
                if let Some(r) = self.reshares.get_mut(&id) {
                    r.resolved.insert(p);
                    r.last_fault.get_or_insert_with(|| "member crashed".into());
                    r.last_timeout = true;
                }
                continue;
            }
            self.nodes[p]
                .queue
                .push_back(Work::StartReshare { run: id });
            self.pump(p);
        }
        self.check_reshare(id, self.now);
    }

    /// A participant creates its machine (a dealer with its old share) and starts.
    pub(super) fn start_reshare(&mut self, node: usize, id: u64) -> Micros {
        let Some(run) = self.reshares.get(&id) else {
            return 0;
        };
        let config = run.config.clone();
        let session = config.session;
        let k = config.committee.len();
        let me = self.nodes[node].id;
        let old_share = if config.dealers.contains(&me) {
            self.nodes[node].keys.get(&config.key_id).cloned()
        } else {
            None
        };
        match Reshare::new(
            self.nodes[node].identity.clone(),
            config,
            old_share.as_ref(),
        ) {
            Ok(machine) => {
                self.nodes[node].sessions.insert(
                    session,
                    Session {
                        party: Party::Reshare(machine),
                        role: Role::Reshare { run: id },
                        k,
                    },
                );
                self.step(node, session, Input::Start)
            }
            Err(e) => {
                self.reshare_member_failed(id, node, &e, self.now);
                0
            }
        }
    }

    /// A participant's machine reported a new share or its completion.
    pub(super) fn reshare_event(
        &mut self,
        id: u64,
        node: usize,
        outcome: PartyOutcome,
        at: Micros,
    ) {
        let Some(r) = self.reshares.get_mut(&id) else {
            return;
        };
        match outcome {
            PartyOutcome::Reshare(ReshareEvent::NewShare(share)) => {
                r.shares.insert(node, share);
            }
            PartyOutcome::Reshare(ReshareEvent::Finished { .. }) => {
                r.done.insert(node);
                r.resolved.insert(node);
                r.last_done = r.last_done.max(at);
                self.check_reshare(id, at);
            }
            _ => {}
        }
    }

    pub(super) fn reshare_member_failed(
        &mut self,
        id: u64,
        node: usize,
        error: &ProtocolError,
        at: Micros,
    ) {
        let culprits: Vec<usize> = error
            .culprits()
            .iter()
            .filter_map(|c| self.index.get(c).copied())
            .collect();
        if let Some(r) = self.reshares.get_mut(&id) {
            r.resolved.insert(node);
            let fault = fault_name(error);
            for c in culprits {
                r.blamed.entry(c).or_insert_with(|| fault.clone());
            }
            if r.last_fault.is_none() || !is_timeout(error) {
                r.last_timeout = is_timeout(error);
                r.last_fault = Some(fault);
            }
        }
        self.check_reshare(id, at);
    }

    /// A participant crashed: its reshare sessions are gone.
    pub(super) fn reshare_member_lost(&mut self, node: usize) {
        let now = self.now;
        let ids: Vec<u64> = self
            .reshares
            .iter()
            .filter(|(_, r)| {
                r.finished.is_none()
                    && r.participants.contains(&node)
                    && !r.resolved.contains(&node)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            if let Some(r) = self.reshares.get_mut(&id) {
                r.resolved.insert(node);
                if r.last_fault.is_none() {
                    r.last_fault = Some("member crashed".into());
                    r.last_timeout = true;
                }
            }
            self.check_reshare(id, now);
        }
    }

    fn check_reshare(&mut self, id: u64, at: Micros) {
        let Some(r) = self.reshares.get(&id) else {
            return;
        };
        if r.finished.is_some() || !r.participants.iter().all(|p| r.resolved.contains(p)) {
            return;
        }
        let complete = r.participants.iter().all(|p| r.done.contains(p))
            && r.members.iter().all(|m| r.shares.contains_key(m));
        let outcome = if complete {
            Outcome::Signed
        } else if r.last_timeout || r.last_fault.is_none() {
            Outcome::TimedOut
        } else {
            Outcome::Aborted
        };
        let at = if outcome == Outcome::Signed {
            r.last_done
        } else {
            at
        };
        self.finish_reshare(id, outcome, at);
    }

    fn finish_reshare(&mut self, id: u64, outcome: Outcome, at: Micros) {
        let Some(r) = self.reshares.get_mut(&id) else {
            return;
        };
        if r.finished.is_some() {
            return;
        }
        r.finished = Some((at, outcome));
        self.open = self.open.saturating_sub(1);
        self.trace
            .note(at, &format!("reshare {id} {}", outcome.name()));
    }

    /// Ends every reshare run still in flight as unfinished.
    pub(super) fn finish_open_reshares(&mut self, end: Micros) {
        let open: Vec<u64> = self
            .reshares
            .iter()
            .filter(|(_, r)| r.finished.is_none())
            .map(|(id, _)| *id)
            .collect();
        for id in open {
            self.finish_reshare(id, Outcome::Unfinished, end);
        }
    }

    /// Session records of the reshare runs, with the culprit namings and how many
    /// of them were right (the node was down during the run).
    pub(super) fn reshare_sessions(&self) -> (Vec<SessionRecord>, u64, u64) {
        let mut out = Vec::new();
        let (mut named, mut correct) = (0u64, 0u64);
        for r in self.reshares.values() {
            let (end, outcome) = r.finished.unwrap_or((self.now, Outcome::Unfinished));
            let good = r
                .blamed
                .keys()
                .filter(|n| self.nodes[**n].down_during(r.started, end))
                .count() as u32;
            named += r.blamed.len() as u64;
            correct += u64::from(good);
            out.push(SessionRecord {
                id: r.id,
                kind: "reshare",
                committee: r.committee,
                arrived_ms: ms(r.started),
                finished_ms: r.finished.map(|(t, _)| ms(t)),
                latency_ms: (outcome == Outcome::Signed).then(|| ms(end - r.started)),
                outcome: outcome.name(),
                attempts: 1,
                signers: r.participants.iter().map(|n| self.topo.label(*n)).collect(),
                culprits: r.blamed.keys().map(|n| self.topo.label(*n)).collect(),
                culprits_correct: good,
                fault: r.last_fault.clone(),
                messages: r.messages,
                bytes: r.bytes,
                roast: None,
            });
        }
        (out, named, correct)
    }

    /// The reshare runs' new shares, for checks against the old key.
    pub(super) fn reshare_records(&self) -> Vec<ReshareRecord> {
        self.reshares
            .values()
            .map(|r| {
                let outcome = r.finished.map_or(Outcome::Unfinished, |(_, o)| o);
                ReshareRecord {
                    id: r.id,
                    committee: r.committee,
                    outcome: outcome.name(),
                    old: r.config.old.clone(),
                    threshold: r.config.threshold,
                    members: r.members.iter().map(|m| self.topo.label(*m)).collect(),
                    shares: r
                        .members
                        .iter()
                        .filter_map(|m| r.shares.get(m).map(|s| (self.topo.label(*m), s.clone())))
                        .collect(),
                }
            })
            .collect()
    }
}
