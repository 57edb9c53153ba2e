//! DKG runs: every member runs the real DKG machine; the run succeeds when all
//! members hold a share and fails when an honest member aborts.

use quorate_protocol::{
    dkg::DkgConfig, ids::SessionId, local::Party, Dkg, Input, KeyId, ProtocolError,
};
use rand_core::RngCore;

use super::{
    signing::{fault_name, is_timeout},
    DkgRun, Owner, World,
};
use crate::{
    engine::Micros,
    node::{Liveness, Role, Session, Work},
    robust::Outcome,
};

impl World {
    pub(super) fn new_dkg(&mut self, committee: usize) {
        let id = self.fresh_id();
        let mut session = [0u8; 32];
        self.rng_proto.fill_bytes(&mut session);
        let mut key = [0u8; 16];
        self.rng_proto.fill_bytes(&mut key);
        let session = SessionId(session);
        let config = DkgConfig {
            suite: self.scenario.committee.suite,
            key_id: KeyId(key),
            session,
            threshold: self.scenario.committee.threshold,
            committee: self.committees[committee].clone(),
            timeout_ms: self.scenario.dkg.timeout_ms,
            coordinator: quorate_protocol::NodeId([0; 32]),
            start: None,
        };
        let members: Vec<usize> = self.topo.members(committee).collect();
        self.runs.insert(
            id,
            DkgRun {
                id,
                committee,
                config,
                started: self.now,
                done: Default::default(),
                resolved: Default::default(),
                blamed: Default::default(),
                last_fault: None,
                last_timeout: false,
                last_done: self.now,
                finished: None,
                messages: 0,
                bytes: 0,
            },
        );
        self.open += 1;
        self.owners.insert(session, Owner::Dkg(id));
        self.adversary.on_session(session, &members);
        for m in members {
            if self.nodes[m].liveness == Liveness::Crashed {
                if let Some(r) = self.runs.get_mut(&id) {
                    r.resolved.insert(m);
                }
                continue;
            }
            self.nodes[m].queue.push_back(Work::StartDkg { run: id });
            self.pump(m);
        }
        self.check_run(id, self.now);
    }

    pub(super) fn start_dkg(&mut self, node: usize, id: u64) -> Micros {
        let Some(run) = self.runs.get(&id) else {
            return 0;
        };
        let session = run.config.session;
        let k = run.config.committee.len();
        match Dkg::new(self.nodes[node].identity.clone(), run.config.clone()) {
            Ok(dkg) => {
                self.nodes[node].sessions.insert(
                    session,
                    Session {
                        party: Party::Dkg(dkg),
                        role: Role::Dkg { run: id },
                        k,
                    },
                );
                self.step(node, session, Input::Start)
            }
            Err(e) => {
                self.dkg_member_failed(id, node, &e, self.now);
                0
            }
        }
    }

    pub(super) fn dkg_member_done(&mut self, id: u64, node: usize, at: Micros) {
        if let Some(r) = self.runs.get_mut(&id) {
            r.done.insert(node);
            r.resolved.insert(node);
            r.last_done = r.last_done.max(at);
        }
        self.check_run(id, at);
    }

    pub(super) fn dkg_member_failed(
        &mut self,
        id: u64,
        node: usize,
        error: &ProtocolError,
        at: Micros,
    ) {
        let honest = !self.adversary.is_byzantine(node);
        let culprits: Vec<usize> = error
            .culprits()
            .iter()
            .filter_map(|c| self.index.get(c).copied())
            .collect();
        if let Some(r) = self.runs.get_mut(&id) {
            r.resolved.insert(node);
            if honest {
                let fault = fault_name(error);
                for c in culprits {
                    r.blamed.entry(c).or_insert_with(|| fault.clone());
                }
                if r.last_fault.is_none() || !is_timeout(error) {
                    r.last_timeout = is_timeout(error);
                    r.last_fault = Some(fault);
                }
            }
        }
        self.check_run(id, at);
    }

    /// A member crashed: its DKG sessions are gone.
    pub(super) fn dkg_member_lost(&mut self, node: usize) {
        let now = self.now;
        let ids: Vec<u64> = self
            .runs
            .iter()
            .filter(|(_, r)| {
                r.finished.is_none()
                    && r.config.committee.get(&self.nodes[node].id).is_some()
                    && !r.resolved.contains(&node)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            if let Some(r) = self.runs.get_mut(&id) {
                r.resolved.insert(node);
                if r.last_fault.is_none() {
                    r.last_fault = Some("member crashed".into());
                    r.last_timeout = true;
                }
            }
            self.check_run(id, now);
        }
    }

    fn check_run(&mut self, id: u64, at: Micros) {
        let Some(r) = self.runs.get(&id) else {
            return;
        };
        if r.finished.is_some() {
            return;
        }
        let members: Vec<usize> = self.topo.members(r.committee).collect();
        let all_resolved = members
            .iter()
            .all(|m| r.resolved.contains(m) || self.adversary.active(*m, &r.config.session));
        if !all_resolved {
            return;
        }
        let outcome = if members.iter().all(|m| r.done.contains(m)) {
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
        self.finish_run(id, outcome, at);
    }

    pub(super) fn finish_run(&mut self, id: u64, outcome: Outcome, at: Micros) {
        let Some(r) = self.runs.get_mut(&id) else {
            return;
        };
        if r.finished.is_some() {
            return;
        }
        r.finished = Some((at, outcome));
        let session = r.config.session;
        self.adversary.end_session(&session);
        self.open = self.open.saturating_sub(1);
        self.trace.note(at, &format!("dkg {id} {}", outcome.name()));
    }
}
