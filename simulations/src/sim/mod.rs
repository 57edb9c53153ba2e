//! The simulation world: nodes, network, adversary and the event loop.

mod dkg;
mod exec;
pub(crate) mod netting;
mod reshare;
mod roast;
mod share_check;
mod signing;
mod summary;

use std::{collections::BTreeMap, time::Duration};

use quorate_protocol::{
    dkg::DkgConfig, ids::SessionId, Committee, Envelope, GroupPublic, NodeId, Round2Cache, TimerId,
};
use rand_chacha::ChaCha20Rng;

use crate::{
    byzantine::{Adversary, Placement},
    cost::{CostTable, Op},
    engine::{s_to_us, EventQueue, Micros},
    error::SimError,
    link::Network,
    node::{Liveness, SimNode, Work},
    random::{self, Stream},
    robust::{Outcome, Request},
    scenario::{FaultKind, Scenario, Selection},
    setup,
    topology::Topology,
    trace::Trace,
    workload::{self, Arrival},
};

pub use netting::NettingRound;
pub use reshare::ReshareRecord;
pub(crate) use roast::PRESIGN_MARGIN_MS;
pub use summary::RunResult;

/// A timed measurement of one state-machine call (calibration mode).
#[derive(Debug, Clone)]
pub(crate) struct Sample {
    pub ops: Vec<Op>,
    pub k: usize,
    pub elapsed: Duration,
}

#[derive(Debug, Clone, Copy)]
enum Change {
    Crash,
    Restart,
    Pause,
    Resume,
}

#[derive(Debug)]
enum Event {
    Arrival(Arrival),
    Deliver {
        from: usize,
        to: usize,
        env: Box<Envelope>,
        digest: [u8; 32],
        size: usize,
    },
    Timer {
        node: usize,
        epoch: u32,
        session: SessionId,
        timer: TimerId,
    },
    Free(usize),
    Fault {
        node: usize,
        change: Change,
    },
    /// A netting round starts (its parties deal).
    NettingStart(usize),
    NettingDeliver {
        from: usize,
        to: usize,
        msg: Box<netting::NetMsg>,
        digest: [u8; 32],
        size: usize,
    },
    /// A netting round's cut-off.
    NettingClose(usize),
    /// A netting round's result deadline.
    NettingDeadline(usize),
    /// A limit-check attempt's timeout.
    NettingLimitsTimeout {
        round: usize,
        attempt: u32,
    },
    /// ROAST: a member tops its nonce pools up (first at time 0, then every
    /// `presign_refresh_ms`, per incarnation `epoch`).
    PresignRefresh {
        node: usize,
        epoch: u32,
    },
    /// ROAST: a request's safety deadline.
    RoastDeadline(u64),
}

/// Which request, DKG run or reshare run a session belongs to.
#[derive(Debug, Clone, Copy)]
enum Owner {
    Request(u64),
    Dkg(u64),
    Reshare(u64),
}

/// A DKG run in one committee.
pub(crate) struct DkgRun {
    pub id: u64,
    pub committee: usize,
    pub config: DkgConfig,
    pub started: Micros,
    pub done: std::collections::BTreeSet<usize>,
    pub resolved: std::collections::BTreeSet<usize>,
    pub blamed: BTreeMap<usize, String>,
    pub last_fault: Option<String>,
    pub last_timeout: bool,
    pub last_done: Micros,
    pub finished: Option<(Micros, Outcome)>,
    pub messages: u64,
    pub bytes: u64,
}

/// Internal world knobs.
#[derive(Debug, Clone, Default)]
pub(crate) struct WorldOptions {
    /// Time every state-machine call with the host clock (for `calibrate`).
    pub measure: bool,
}

pub(crate) struct World {
    scenario: Scenario,
    topo: Topology,
    now: Micros,
    end: Micros,
    events: EventQueue<Event>,
    nodes: Vec<SimNode>,
    index: BTreeMap<NodeId, usize>,
    committees: Vec<Committee>,
    publics: Vec<Option<GroupPublic>>,
    net: Network,
    costs: Option<CostTable>,
    rng_proto: ChaCha20Rng,
    rng_net: ChaCha20Rng,
    rng_adv: ChaCha20Rng,
    rng_sel: ChaCha20Rng,
    rng_msg: ChaCha20Rng,
    adversary: Adversary,
    requests: BTreeMap<u64, Request>,
    runs: BTreeMap<u64, DkgRun>,
    reshares: BTreeMap<u64, reshare::ReshareRun>,
    owners: BTreeMap<SessionId, Owner>,
    next_id: u64,
    open: usize,
    arrivals_left: usize,
    trace: Trace,
    dropped: u64,
    measure: Option<Vec<Sample>>,
    /// Host time spent admitting a request before its signer started (calibration).
    join_extra: Duration,
    /// Public round-2 work shared by the signers of one package (host time only).
    round2_cache: Option<Round2Cache>,
    /// The `[netting]` workload, if any.
    netting: Option<Box<netting::Netting>>,
    /// The coordinator's presign book and the ROAST requests (`strategy = "roast"`).
    presign: Option<Box<roast::Presign>>,
}

impl World {
    pub(crate) fn new(
        scenario: &Scenario,
        costs: Option<CostTable>,
        options: &WorldOptions,
    ) -> Result<Self, SimError> {
        scenario.validate()?;
        let seed = scenario.seed;
        let topo = Topology::new(&scenario.committee);
        let mut rng_setup = random::stream(seed, Stream::Setup);
        let setup = setup::build(scenario, &topo, &mut rng_setup)?;
        let mut rng_net = random::stream(seed, Stream::Network);
        let clocks = Network::clocks(scenario, topo.len(), &mut rng_net);
        let mut nodes: Vec<SimNode> = setup
            .identities
            .iter()
            .zip(clocks)
            .map(|(id, clock)| SimNode::new(id.clone(), clock))
            .collect();
        let mut publics = Vec::new();
        let mut committees = Vec::new();
        for (c, keys) in setup.committees.into_iter().enumerate() {
            publics.push(keys.shares.first().map(|s| s.public.clone()));
            for (node, share) in topo.members(c).zip(keys.shares) {
                nodes[node].keys.insert(share.public.key_id, share);
            }
            committees.push(keys.committee);
        }
        let index = nodes.iter().enumerate().map(|(i, n)| (n.id, i)).collect();
        let mut rng_adv = random::stream(seed, Stream::Adversary);
        let byzantine = Self::place_byzantine(scenario, &topo, &mut rng_adv)?;
        let adversary = Adversary::new(
            scenario.byzantine.as_ref(),
            byzantine,
            scenario.signing.timeout_ms,
        );
        let mut net = Network::new(scenario, &topo)?;
        let w = &scenario.workload;
        let mut end = s_to_us(w.start_s + w.duration_s + w.drain_s);
        let mut netting_starts = Vec::new();
        let netting = match (&scenario.netting, publics.first().cloned().flatten()) {
            (Some(spec), Some(public)) => {
                netting_starts = netting::Netting::starts(spec);
                end = end.max(s_to_us(spec.last_start_s() + w.drain_s));
                Some(Box::new(netting::Netting::new(
                    scenario,
                    &topo,
                    &committees[0],
                    public.key_id,
                    &index,
                    &mut net,
                    &netting_starts,
                )?))
            }
            (Some(_), None) => {
                return Err(SimError::invalid(
                    "netting",
                    "the settlement key of committee 0 is missing",
                ))
            }
            _ => None,
        };
        let mut world = Self {
            scenario: scenario.clone(),
            topo,
            now: 0,
            end,
            events: EventQueue::default(),
            nodes,
            index,
            committees,
            publics,
            net,
            costs,
            rng_proto: random::stream(seed, Stream::Protocol),
            rng_net,
            rng_adv,
            rng_sel: random::stream(seed, Stream::Selection),
            rng_msg: random::stream(seed, Stream::Workload),
            adversary,
            requests: BTreeMap::new(),
            runs: BTreeMap::new(),
            reshares: BTreeMap::new(),
            owners: BTreeMap::new(),
            next_id: 0,
            open: 0,
            arrivals_left: 0,
            trace: Trace::default(),
            dropped: 0,
            measure: options.measure.then(Vec::new),
            join_extra: Duration::ZERO,
            // Calibration times each signer's own work, so it never shares it.
            round2_cache: (scenario.signing.share_public_work && !options.measure)
                .then(Round2Cache::default),
            netting,
            presign: (scenario.signing.strategy == crate::scenario::SigningStrategy::Roast)
                .then(|| Box::new(roast::Presign::new())),
        };
        world.schedule_presigning();
        for (round, t) in netting_starts.into_iter().enumerate() {
            world.events.push(t, Event::NettingStart(round));
            world.arrivals_left += 1;
        }
        let mut rng_work = random::stream(seed, Stream::Workload);
        for (t, a) in workload::arrivals(&scenario.workload, world.topo.count, &mut rng_work) {
            world.events.push(t, Event::Arrival(a));
            world.arrivals_left += 1;
        }
        world.schedule_faults()?;
        Ok(world)
    }

    fn place_byzantine(
        scenario: &Scenario,
        topo: &Topology,
        rng: &mut ChaCha20Rng,
    ) -> Result<Vec<bool>, SimError> {
        let mut bad = vec![false; topo.len()];
        let Some(spec) = &scenario.byzantine else {
            return Ok(bad);
        };
        for c in 0..topo.count {
            let mut members: Vec<usize> = topo.members(c).collect();
            match spec.placement {
                Placement::First => {}
                Placement::Last => members.reverse(),
                Placement::Random => random::shuffle(rng, &mut members),
            }
            for m in members.into_iter().take(spec.count) {
                bad[m] = true;
            }
        }
        for s in &spec.nodes {
            for m in topo
                .select(s)
                .map_err(|r| SimError::invalid("byzantine.nodes", r))?
            {
                if m != topo.coordinator() {
                    bad[m] = true;
                }
            }
        }
        Ok(bad)
    }

    fn schedule_faults(&mut self) -> Result<(), SimError> {
        for (i, f) in self.scenario.faults.clone().iter().enumerate() {
            let mut targets = Vec::new();
            for s in &f.nodes {
                targets.extend(
                    self.topo
                        .select(s)
                        .map_err(|r| SimError::invalid(format!("faults[{i}].nodes"), r))?,
                );
            }
            if let Some(count) = f.count {
                let mut honest: Vec<usize> = self
                    .topo
                    .members(0)
                    .filter(|m| !self.adversary.is_byzantine(*m) && !targets.contains(m))
                    .collect();
                if count > honest.len() {
                    return Err(SimError::invalid(
                        format!("faults[{i}].count"),
                        format!("only {} honest members to choose from", honest.len()),
                    ));
                }
                random::shuffle(&mut self.rng_adv, &mut honest);
                targets.extend(honest.into_iter().take(count));
            }
            let (down, up) = match f.kind {
                FaultKind::Crash => (Change::Crash, Change::Restart),
                FaultKind::Pause => (Change::Pause, Change::Resume),
            };
            for node in targets {
                self.events
                    .push(s_to_us(f.at_s), Event::Fault { node, change: down });
                if let Some(u) = f.until_s {
                    self.events
                        .push(s_to_us(u), Event::Fault { node, change: up });
                }
            }
        }
        Ok(())
    }

    /// Runs until the workload is done (or the time limit), calling `progress`
    /// now and then with the current virtual time and the end time.
    pub(crate) fn run(&mut self, progress: &mut dyn FnMut(Micros, Micros)) {
        let mut steps: u64 = 0;
        while let Some(t) = self.events.peek_time() {
            if t > self.end || (self.open == 0 && self.arrivals_left == 0) {
                break;
            }
            let Some((t, event)) = self.events.pop() else {
                break;
            };
            self.now = t;
            self.handle(event);
            steps += 1;
            if steps & 2047 == 0 {
                progress(self.now, self.end);
            }
        }
        self.finish_open();
        progress(self.end, self.end);
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Arrival(a) => {
                self.arrivals_left -= 1;
                match a {
                    Arrival::Sign { committee } => self.new_request(committee),
                    Arrival::Dkg { committee } => self.new_dkg(committee),
                    Arrival::Reshare { committee } => self.new_reshare(committee),
                }
            }
            Event::Deliver {
                from,
                to,
                env,
                digest,
                size,
            } => {
                self.trace.delivered(self.now, from, to, &digest);
                let node = &mut self.nodes[to];
                if node.liveness == Liveness::Crashed {
                    node.stats.dropped_down += 1;
                    self.dropped += 1;
                    return;
                }
                node.stats.received += 1;
                node.stats.received_bytes += size as u64;
                node.queue.push_back(Work::Message { from, env });
                self.pump(to);
            }
            Event::Timer {
                node,
                epoch,
                session,
                timer,
            } => {
                let n = &mut self.nodes[node];
                if n.epoch != epoch
                    || n.liveness == Liveness::Crashed
                    || !n.sessions.contains_key(&session)
                {
                    return;
                }
                n.queue.push_back(Work::Timeout { session, timer });
                self.pump(node);
            }
            Event::Free(node) => self.pump(node),
            Event::Fault { node, change } => self.fault(node, change),
            Event::NettingStart(round) => self.netting_start(round),
            Event::NettingDeliver {
                from,
                to,
                msg,
                digest,
                size,
            } => self.netting_deliver(from, to, msg, &digest, size),
            Event::NettingClose(round) => self.netting_close_due(round),
            Event::NettingDeadline(round) => self.netting_deadline(round),
            Event::NettingLimitsTimeout { round, attempt } => self.limits_timeout(round, attempt),
            Event::PresignRefresh { node, epoch } => self.presign_refresh(node, epoch),
            Event::RoastDeadline(id) => self.roast_deadline(id),
        }
    }

    fn fault(&mut self, node: usize, change: Change) {
        let label = self.topo.label(node);
        self.trace.note(self.now, &format!("{change:?} {label}"));
        match change {
            Change::Crash => {
                self.nodes[node].crash(self.now);
                if node == self.topo.coordinator() {
                    self.coordinator_lost();
                }
                self.dkg_member_lost(node);
                self.reshare_member_lost(node);
            }
            Change::Pause => self.nodes[node].pause(self.now),
            Change::Restart => {
                self.nodes[node].up(self.now);
                if node == self.topo.coordinator() {
                    self.presign_coordinator_back();
                } else {
                    self.presign_restarted(node);
                }
                self.pump(node);
            }
            Change::Resume => {
                self.nodes[node].up(self.now);
                self.pump(node);
            }
        }
    }

    /// Processes queued work while the node is up and idle.
    fn pump(&mut self, node: usize) {
        loop {
            let n = &mut self.nodes[node];
            if n.liveness != Liveness::Up || n.busy_until > self.now {
                return;
            }
            let Some(work) = n.queue.pop_front() else {
                return;
            };
            let cost = self.process(node, work);
            if cost > 0 {
                let n = &mut self.nodes[node];
                n.busy_until = self.now + cost;
                n.stats.cpu_us += cost;
                self.events.push(self.now + cost, Event::Free(node));
                return;
            }
        }
    }

    fn process(&mut self, node: usize, work: Work) -> Micros {
        match work {
            Work::Message { from, env } => self.on_message(node, from, *env),
            Work::Timeout { session, timer } => self.on_timeout(node, session, timer),
            Work::StartAttempt { request } => self.start_attempt(request),
            Work::Presign => self.presign_work(node),
            Work::StartDkg { run } => self.start_dkg(node, run),
            Work::StartReshare { run } => self.start_reshare(node, run),
            Work::Netting { from, msg } => self.netting_work(node, from, *msg),
            Work::NettingClose { round } => self.coordinator_close(round),
            Work::NettingSettle { round } => self.coordinator_settle(round),
        }
    }

    fn selection(&self) -> Selection {
        self.scenario.signing.selection
    }

    fn fresh_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Ends every request still in flight with `outcome` at the current time.
    pub(super) fn finish_open_requests(&mut self, outcome: Outcome) {
        let open: Vec<u64> = self
            .requests
            .iter()
            .filter(|(_, r)| r.finished.is_none())
            .map(|(id, _)| *id)
            .collect();
        for id in open {
            self.finish_request(id, outcome, self.now);
        }
    }

    fn finish_open(&mut self) {
        let end = self.now;
        self.finish_open_requests(Outcome::Unfinished);
        let open: Vec<u64> = self
            .runs
            .iter()
            .filter(|(_, r)| r.finished.is_none())
            .map(|(id, _)| *id)
            .collect();
        for id in open {
            self.finish_run(id, Outcome::Unfinished, end);
        }
        self.finish_open_reshares(end);
        self.netting_unfinished();
    }

    pub(crate) fn samples(&mut self) -> Vec<Sample> {
        self.measure.take().unwrap_or_default()
    }
}
