//! MPC netting rounds as a workload, driving the real sans-IO netting code of
//! `quorate_protocol::netting` over the simulated links.
//!
//! Per round: every party deals its bundle (`share::deal`) and sends each node its
//! header and sealed box, and the coordinator the header; each node checks and
//! keeps the bundle (`NodeRound::accept_bundle`) and acknowledges it to the
//! coordinator; at the cut-off the coordinator closes the round on the bundles at
//! least `t` nodes acknowledged; each node computes and signs its outputs
//! (`NodeRound::close`), sending one sealed message to every party and its public
//! shares to the coordinator; every party opens and verifies its result
//! (`result::open_result`) once every node answered or the deadline passed; the
//! coordinator builds the settlement batch (`session::settle`) and has it
//! threshold-signed through the simulated FROST retry loop, each signer rebuilding
//! the batch itself (`NodeRound::settlement`) from the `SettleRequest`.
//!
//! Parties are network endpoints that are not nodes (their own CPUs, in
//! `party_regions`). CPU is charged from [`NettingCosts`]. All randomness comes from
//! the scenario seed's netting stream.
//!
//! Rounds with `[netting.limits]` check collateral and limits between close and
//! outputs ([`limits`]): each node holds its outputs until the MPC's verdict says
//! every party is covered.

mod cover;
mod limits;

use std::collections::{BTreeMap, BTreeSet};

use curve25519_dalek::{RistrettoPoint, Scalar};
use ed25519_dalek::SigningKey;
use quorate_protocol::{
    netting::{
        open::{self, NodeOutputs, PartyOutputs, PublicOutputs},
        outputs,
        result::{open_result, Published},
        round::{Bounds, Instrument, InstrumentKind, LimitSettings, Party, RoundId, RoundSpec},
        session::{settle, Admitted, NodeRound},
        share::deal,
        verify::{self, Accepted},
        BundleHeader, PartyInput, PartyResult, Position, SettlementBatch,
    },
    seal::SealedBox,
    Committee, Envelope, KeyId, NodeId, Payload, SignTarget,
};
use rand_chacha::ChaCha20Rng;
use rand_core::RngCore;
use sha2::{Digest, Sha256};

use super::{Event, World};
use crate::{
    engine::{ms_to_us, s_to_us, Micros},
    error::SimError,
    link::{Fate, Network},
    netting_spec::{NettingCosts, NettingSpec, Positions},
    node::{Liveness, Work},
    random::{self, Stream},
    report::{NettingRoundReport, NettingSummary, PhaseReport, TrafficReport},
    robust::{Outcome, Request},
    scenario::Scenario,
    topology::Topology,
};

/// The phases of a round, in order (report names).
const PHASES: [&str; 7] = [
    "dealing",
    "delivery",
    "acceptance",
    "close",
    "outputs",
    "opening",
    "settlement",
];
const DELIVERY: usize = 1;
const ACCEPTANCE: usize = 2;
const CLOSE: usize = 3;
const OUTPUTS: usize = 4;
const SETTLEMENT: usize = 6;
/// The limit-check phase's counters (reported on their own, not in [`PHASES`]).
const LIMITS: usize = 7;
/// Phase counters: the seven phases and the limit checks.
const COUNTERS: usize = 8;

/// Extra bytes of an acknowledgement beyond its postcard body: the node's
/// Ed25519 signature.
const ACK_SIGNATURE: usize = 64;

/// A netting message on the simulated network.
#[derive(Debug, Clone)]
pub(crate) enum NetMsg {
    /// Party → node: the bundle header and the node's sealed shares.
    Bundle {
        round: usize,
        header: BundleHeader,
        sealed: SealedBox,
    },
    /// Party → coordinator: the bundle header (for the commitments).
    Header { round: usize, header: BundleHeader },
    /// Node → coordinator: it holds this bundle.
    Ack {
        round: usize,
        party: u32,
        digest: [u8; 32],
    },
    /// Coordinator → node: close on these inputs.
    Close {
        round: usize,
        inputs: Vec<Option<[u8; 32]>>,
    },
    /// Node → coordinator: its signed public output shares.
    Public {
        round: usize,
        outputs: PublicOutputs,
    },
    /// Node → party: its signed, sealed shares of the party's outputs.
    Party { round: usize, outputs: PartyOutputs },
    /// Limit checks, either way: `LimitStart`, `LimitPart` or `LimitResult`.
    Limit { round: usize, payload: Payload },
}

/// One round in memory, for tests: what went in and what came out.
#[derive(Debug, Clone, PartialEq)]
pub struct NettingRound {
    /// The round definition.
    pub spec: RoundSpec,
    /// Every party's positions (all parties submit).
    pub inputs: Vec<Option<PartyInput>>,
    /// Each party's verified result (`None`: not a participant, or it could not open).
    pub results: Vec<Option<PartyResult>>,
    /// The settlement batch the coordinator built, if it did.
    pub batch: Option<SettlementBatch>,
}

/// Earliest start and latest end of a phase.
#[derive(Debug, Clone, Copy, Default)]
struct Span {
    start: Option<Micros>,
    end: Option<Micros>,
}

impl Span {
    fn begin(&mut self, t: Micros) {
        self.start = Some(self.start.map_or(t, |s| s.min(t)));
    }
    fn finish(&mut self, t: Micros) {
        self.end = Some(self.end.map_or(t, |e| e.max(t)));
    }
}

struct PartyKeys {
    sign: SigningKey,
    seal: x25519_dalek::StaticSecret,
}

struct RoundState {
    spec: RoundSpec,
    inputs: Vec<Option<PartyInput>>,
    start: Micros,
    /// Headers as dealt (what parties fetch to verify their results).
    dealt: Vec<Option<BundleHeader>>,
    /// Per member position: the node's round.
    node_rounds: Vec<NodeRound>,
    /// Liars: a copy of what they accepted, to compute their lies from.
    shadow: BTreeMap<usize, Vec<Option<Accepted>>>,
    closed: BTreeSet<usize>,
    /// Coordinator: headers received, acknowledgements per party and digest.
    headers: Vec<Option<BundleHeader>>,
    acks: Vec<BTreeMap<[u8; 32], BTreeSet<usize>>>,
    /// Coordinator: the close it sent.
    inputs_listed: Option<Vec<Option<[u8; 32]>>>,
    /// Coordinator: the listed parties' net commitments (from their headers).
    nets: Vec<Option<Vec<RistrettoPoint>>>,
    views: BTreeMap<usize, PublicOutputs>,
    /// Parties: messages received per node position, result.
    party_msgs: Vec<BTreeMap<usize, PartyOutputs>>,
    party_done: Vec<bool>,
    results: Vec<Option<PartyResult>>,
    named_by_parties: BTreeMap<usize, u32>,
    /// Coordinator: settlement.
    settle_started: bool,
    batch: Option<SettlementBatch>,
    settle_culprits: Vec<usize>,
    request: Option<u64>,
    signing: Option<Outcome>,
    refused: Vec<String>,
    fault: Option<String>,
    outcome: Option<&'static str>,
    finished: Option<Micros>,
    spans: [Span; COUNTERS],
    messages: [u64; COUNTERS],
    bytes: [u64; COUNTERS],
    /// The limit-check phase (created at close, for rounds with limits).
    limits: Option<Box<limits::LimitsState>>,
    /// Endpoint → (sent msgs, sent bytes, received msgs, received bytes).
    traffic: BTreeMap<usize, [u64; 4]>,
}

/// The netting workload's state.
pub(crate) struct Netting {
    spec: NettingSpec,
    costs: Option<NettingCosts>,
    /// Limit-check CPU costs (scaled), when charged.
    limit_costs: Option<crate::scenario::LimitCosts>,
    rng: ChaCha20Rng,
    parties: Vec<PartyKeys>,
    first_party: usize,
    /// Node index of committee member position `j`.
    members: Vec<usize>,
    liars: BTreeSet<usize>,
    silent: BTreeSet<usize>,
    rounds: Vec<RoundState>,
    by_id: BTreeMap<RoundId, usize>,
    /// Settlement signing request → round.
    requests: BTreeMap<u64, usize>,
    payloads: BTreeMap<u64, Payload>,
}

fn bundle_cutoff_s(start: Micros, cutoff_ms: f64) -> u64 {
    (start + ms_to_us(cutoff_ms)).div_ceil(1_000_000)
}

/// Mirrored books for one round: every position of p against q is booked by q as
/// its negation, so conservation holds and reconciliation finds nothing.
fn positions(spec: &NettingSpec, round: &RoundSpec, rng: &mut ChaCha20Rng) -> Vec<PartyInput> {
    let mut inputs: Vec<PartyInput> = (0..spec.parties).map(|_| PartyInput::default()).collect();
    let signed = |rng: &mut ChaCha20Rng, max: i64| -> i64 {
        let span = (2 * max + 1) as usize;
        random::below(rng, span) as i64 - max
    };
    for p in 0..spec.parties {
        for q in p + 1..spec.parties {
            for i in 0..spec.instruments {
                if spec.positions == Positions::Sparse && !random::chance(rng, spec.density) {
                    continue;
                }
                let qty = signed(rng, spec.max_quantity);
                let cash = signed(rng, spec.max_cash);
                for (me, other, s) in [(p, q, 1), (q, p, -1)] {
                    inputs[me].positions.push(Position {
                        counterparty: round.parties[other].name.clone(),
                        instrument: round.instruments[i].name.clone(),
                        quantity: s * qty,
                        cash: s * cash,
                    });
                }
            }
        }
    }
    inputs
}

impl Netting {
    /// Party keys, instruments, every round's definition and positions; the
    /// parties' network endpoints.
    pub(super) fn new(
        scenario: &Scenario,
        topo: &Topology,
        committee: &Committee,
        key: KeyId,
        index: &BTreeMap<NodeId, usize>,
        net: &mut Network,
        starts: &[Micros],
    ) -> Result<Self, SimError> {
        let Some(spec) = scenario.netting.clone() else {
            return Err(SimError::invalid("netting", "missing"));
        };
        let mut rng = random::stream(scenario.seed, Stream::Netting);
        let parties: Vec<PartyKeys> = (0..spec.parties)
            .map(|_| PartyKeys {
                sign: SigningKey::generate(&mut rng),
                seal: x25519_dalek::StaticSecret::random_from_rng(&mut rng),
            })
            .collect();
        let region = |name: &String| topo.regions.iter().position(|r| r == name).unwrap_or(0);
        let coord_region = topo.node_region[topo.coordinator()];
        let regions: Vec<usize> = (0..spec.parties)
            .map(|p| {
                spec.party_regions
                    .get(p % spec.party_regions.len().max(1))
                    .map_or(coord_region, region)
            })
            .collect();
        let first_party = net.add_endpoints(&regions);
        let instruments: Vec<Instrument> = (0..spec.instruments)
            .map(|i| Instrument {
                name: format!("FUT-{i:02}"),
                kind: InstrumentKind::Future,
                asset: format!("ASSET-{:02}", i % spec.assets),
                multiplier: 1 + random::below(&mut rng, 10) as i64,
                price_move: random::below(&mut rng, 201) as i64 - 100,
                premium: 0,
            })
            .collect();
        let members: Vec<usize> = committee
            .members()
            .iter()
            .filter_map(|m| index.get(&m.node).copied())
            .collect();
        let select = |list: &[String], field: &str| -> Result<BTreeSet<usize>, SimError> {
            let mut out = BTreeSet::new();
            for s in list {
                out.extend(topo.select(s).map_err(|r| SimError::invalid(field, r))?);
            }
            Ok(out)
        };
        let liars = select(&spec.liars, "netting.liars")?;
        let silent = select(&spec.silent, "netting.silent")?;
        let t = spec.threshold(&scenario.committee);
        let mut rounds = Vec::new();
        let mut by_id = BTreeMap::new();
        for &start in starts {
            let mut id = [0u8; 16];
            rng.fill_bytes(&mut id);
            let round = RoundSpec {
                id: RoundId(id),
                parties: parties
                    .iter()
                    .enumerate()
                    .map(|(p, k)| Party {
                        name: format!("party-{p:02}"),
                        sign_key: k.sign.verifying_key().to_bytes(),
                        seal_key: x25519_dalek::PublicKey::from(&k.seal).to_bytes(),
                    })
                    .collect(),
                instruments: instruments.clone(),
                cutoff: bundle_cutoff_s(start, spec.cutoff_ms),
                key,
                committee: committee.clone(),
                threshold: t,
                bounds: Bounds {
                    max_abs_quantity: spec.max_quantity,
                    max_abs_cash: spec.max_cash,
                },
                limits: spec.limits.as_ref().map(|l| LimitSettings {
                    max_cover: l.max_cover,
                    reveal_failures: l.reveal_failures,
                    efficiency: l.efficiency,
                }),
            };
            let node_rounds = members
                .iter()
                .map(|_| NodeRound::new(round.clone()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| SimError::invalid("netting", e.to_string()))?;
            let mut inputs = positions(&spec, &round, &mut rng);
            if let Some(l) = &spec.limits {
                cover::add_cover(l, &round, &mut inputs, &mut rng);
            }
            let inputs = inputs.into_iter().map(Some).collect();
            by_id.insert(round.id, rounds.len());
            let n = spec.parties;
            rounds.push(RoundState {
                spec: round,
                inputs,
                start,
                dealt: vec![None; n],
                node_rounds,
                shadow: BTreeMap::new(),
                closed: BTreeSet::new(),
                headers: vec![None; n],
                acks: vec![BTreeMap::new(); n],
                inputs_listed: None,
                nets: Vec::new(),
                views: BTreeMap::new(),
                party_msgs: vec![BTreeMap::new(); n],
                party_done: vec![false; n],
                results: vec![None; n],
                named_by_parties: BTreeMap::new(),
                settle_started: false,
                batch: None,
                settle_culprits: Vec::new(),
                request: None,
                signing: None,
                refused: Vec::new(),
                fault: None,
                outcome: None,
                finished: None,
                spans: [Span::default(); COUNTERS],
                messages: [0; COUNTERS],
                bytes: [0; COUNTERS],
                limits: None,
                traffic: BTreeMap::new(),
            });
        }
        let costs = (scenario.cpu.model != crate::scenario::CpuModel::None).then(|| {
            let s = scenario.cpu.scale.unwrap_or(1.0);
            let c = &spec.costs;
            NettingCosts {
                deal_us_per_commitment: c.deal_us_per_commitment * s,
                verify_us_per_commitment: c.verify_us_per_commitment * s,
                outputs_us_per_value: c.outputs_us_per_value * s,
                result_us_per_share: c.result_us_per_share * s,
                settle_us_per_share: c.settle_us_per_share * s,
            }
        });
        let limit_costs = costs
            .as_ref()
            .and(spec.limits.as_ref())
            .map(|l| l.costs.scaled(scenario.cpu.scale.unwrap_or(1.0)));
        Ok(Self {
            spec,
            costs,
            limit_costs,
            rng,
            parties,
            first_party,
            members,
            liars,
            silent,
            rounds,
            by_id,
            requests: BTreeMap::new(),
            payloads: BTreeMap::new(),
        })
    }

    /// Round start times of a scenario's `[netting]` table.
    pub(super) fn starts(spec: &NettingSpec) -> Vec<Micros> {
        (0..spec.rounds)
            .map(|r| s_to_us(spec.start_s + spec.every_s * f64::from(r)))
            .collect()
    }

    fn cost(&self, f: impl Fn(&NettingCosts) -> f64, units: usize) -> Micros {
        self.costs
            .as_ref()
            .map_or(0, |c| (f(c) * units as f64).round() as Micros)
    }

    fn position(&self, node: usize) -> Option<usize> {
        self.members.iter().position(|m| *m == node)
    }

    /// The `SettleRequest` a settlement signing request starts its attempts with.
    pub(super) fn payload(&self, request: u64) -> Option<&Payload> {
        self.payloads.get(&request)
    }

    /// True when `request` signs a settlement batch.
    pub(super) fn is_settlement(&self, request: u64) -> bool {
        self.requests.contains_key(&request)
    }
}

/// A liar's outputs: computed honestly on shares it altered, and validly signed.
fn lie(
    spec: &RoundSpec,
    identity: &quorate_protocol::NodeIdentity,
    accepted: &[Option<Accepted>],
    rng: &mut ChaCha20Rng,
) -> Option<NodeOutputs> {
    let mut altered: Vec<Option<Accepted>> = accepted.to_vec();
    for a in altered.iter_mut().flatten() {
        for v in a.shares.values.iter_mut() {
            *v += Scalar::random(&mut *rng);
        }
    }
    let refs: Vec<Option<&Accepted>> = altered.iter().map(Option::as_ref).collect();
    NodeOutputs::produce(spec, identity, &refs).ok()
}

impl World {
    fn nt(&mut self) -> &mut Netting {
        self.netting.as_mut().expect("netting workload")
    }

    fn round_mut(&mut self, round: usize) -> &mut RoundState {
        &mut self.nt().rounds[round]
    }

    /// Sends a netting message from endpoint `from` to endpoint `to` at `at`,
    /// counting it in `phase`.
    fn net_send(&mut self, from: usize, to: usize, msg: NetMsg, at: Micros, phase: usize) {
        let (bytes, extra) = self.encode(from, &msg);
        let size = bytes.len() + extra;
        let digest: [u8; 32] = Sha256::digest(&bytes).into();
        let round = msg_round(&msg);
        if from < self.nodes.len() {
            let s = &mut self.nodes[from].stats;
            s.sent += 1;
            s.sent_bytes += size as u64;
        }
        let r = self.round_mut(round);
        r.messages[phase] += 1;
        r.bytes[phase] += size as u64;
        let t = r.traffic.entry(from).or_default();
        t[0] += 1;
        t[1] += size as u64;
        match self.net.transmit(from, to, size, at, &mut self.rng_net) {
            Fate::Dropped(_) => self.dropped += 1,
            Fate::Delivered(times) => {
                for time in times {
                    self.events.push(
                        time,
                        Event::NettingDeliver {
                            from,
                            to,
                            msg: Box::new(msg.clone()),
                            digest,
                            size,
                        },
                    );
                }
            }
        }
    }

    /// The bytes on the wire: node and coordinator messages as their real signed
    /// envelopes, party messages as postcard bodies.
    fn encode(&self, from: usize, msg: &NetMsg) -> (Vec<u8>, usize) {
        let spec = &self.netting.as_ref().expect("netting").rounds[msg_round(msg)].spec;
        let envelope = |payload: Payload| {
            Envelope::seal(
                &self.nodes[from].identity,
                self.scenario.committee.suite,
                spec.key,
                spec.session(),
                payload,
            )
            .encode()
        };
        match msg {
            NetMsg::Bundle { header, sealed, .. } => (body(&(header, sealed)), 0),
            NetMsg::Header { header, .. } => (body(header), 0),
            NetMsg::Ack { party, digest, .. } => (body(&(spec.id, *party, *digest)), ACK_SIGNATURE),
            NetMsg::Close { inputs, .. } => (
                envelope(Payload::NettingClose {
                    round: spec.id,
                    inputs: inputs.clone(),
                }),
                0,
            ),
            NetMsg::Public { outputs, .. } => (
                envelope(Payload::NettingPublic {
                    outputs: outputs.clone(),
                }),
                0,
            ),
            NetMsg::Party { outputs, .. } => (
                envelope(Payload::NettingParty {
                    outputs: outputs.clone(),
                }),
                0,
            ),
            NetMsg::Limit { payload, .. } => (envelope(payload.clone()), 0),
        }
    }

    /// A round starts: every party deals and sends its bundle.
    pub(super) fn netting_start(&mut self, round: usize) {
        self.arrivals_left -= 1;
        self.open += 1;
        let now = self.now;
        let coordinator = self.topo.coordinator();
        self.trace
            .note(now, &format!("netting round {round} start"));
        let parties = self.nt().parties.len();
        for p in 0..parties {
            let nt = self.nt();
            let r = &nt.rounds[round];
            let Some(input) = r.inputs[p].clone() else {
                continue;
            };
            let spec = r.spec.clone();
            let signed_at = now / 1_000_000;
            let bundle = match deal(
                &spec,
                p,
                &nt.parties[p].sign,
                &input,
                signed_at,
                &mut nt.rng,
            ) {
                Ok(b) => b,
                Err(e) => {
                    nt.rounds[round].refused.push(format!("party-{p:02}: {e}"));
                    continue;
                }
            };
            let commitments = spec.values_per_party() * usize::from(spec.threshold);
            let cost = self.nt().cost(|c| c.deal_us_per_commitment, commitments);
            let done = now + cost;
            let endpoint = self.nt().first_party + p;
            let r = self.round_mut(round);
            r.dealt[p] = Some(bundle.header.clone());
            r.spans[0].begin(now);
            r.spans[0].finish(done);
            r.spans[DELIVERY].begin(done);
            let members = self.nt().members.clone();
            for (j, &node) in members.iter().enumerate() {
                let Some((header, sealed)) = bundle.for_node(j) else {
                    continue;
                };
                let msg = NetMsg::Bundle {
                    round,
                    header,
                    sealed,
                };
                self.net_send(endpoint, node, msg, done, DELIVERY);
            }
            let msg = NetMsg::Header {
                round,
                header: bundle.header,
            };
            self.net_send(endpoint, coordinator, msg, done, DELIVERY);
        }
        let close_at = now + ms_to_us(self.nt().spec.cutoff_ms);
        self.events.push(close_at, Event::NettingClose(round));
    }

    /// A netting message arrived at endpoint `to`.
    pub(super) fn netting_deliver(
        &mut self,
        from: usize,
        to: usize,
        msg: Box<NetMsg>,
        digest: &[u8; 32],
        size: usize,
    ) {
        self.trace.delivered(self.now, from, to, digest);
        let now = self.now;
        let round = msg_round(&msg);
        let r = self.round_mut(round);
        let t = r.traffic.entry(to).or_default();
        t[2] += 1;
        t[3] += size as u64;
        if to >= self.nodes.len() {
            let party = to - self.nt().first_party;
            self.party_receive(party, *msg);
            return;
        }
        let node = &mut self.nodes[to];
        if node.liveness == Liveness::Crashed {
            node.stats.dropped_down += 1;
            self.dropped += 1;
            return;
        }
        node.stats.received += 1;
        node.stats.received_bytes += size as u64;
        let r = self.round_mut(round);
        match &*msg {
            NetMsg::Bundle { .. } => {
                r.spans[DELIVERY].finish(now);
                r.spans[ACCEPTANCE].begin(now);
            }
            NetMsg::Close { .. } => {
                r.spans[CLOSE].finish(now);
                r.spans[OUTPUTS].begin(now);
            }
            _ => {}
        }
        self.nodes[to].queue.push_back(Work::Netting { from, msg });
        self.pump(to);
    }

    /// The cut-off: the coordinator closes the round.
    pub(super) fn netting_close_due(&mut self, round: usize) {
        let coordinator = self.topo.coordinator();
        if self.nodes[coordinator].liveness == Liveness::Crashed {
            self.round_mut(round).fault = Some("coordinator down at the cut-off".into());
            return;
        }
        self.nodes[coordinator]
            .queue
            .push_back(Work::NettingClose { round });
        self.pump(coordinator);
    }

    /// Work on a node's CPU; returns its cost.
    pub(super) fn netting_work(&mut self, node: usize, from: usize, msg: NetMsg) -> Micros {
        if node == self.topo.coordinator() {
            if let NetMsg::Limit { round, payload } = msg {
                return self.king_receive(from, round, payload);
            }
            self.coordinator_receive(from, msg);
            return 0;
        }
        let Some(pos) = self.nt().position(node) else {
            return 0;
        };
        match msg {
            NetMsg::Bundle {
                round,
                header,
                sealed,
            } => self.accept(node, pos, round, &header, &sealed),
            NetMsg::Close { round, inputs } => self.node_close(node, pos, round, &inputs),
            NetMsg::Limit { round, payload } => self.limits_node_receive(node, pos, round, payload),
            _ => 0,
        }
    }

    fn accept(
        &mut self,
        node: usize,
        pos: usize,
        round: usize,
        header: &BundleHeader,
        sealed: &SealedBox,
    ) -> Micros {
        let commitments = {
            let spec = &self.nt().rounds[round].spec;
            spec.values_per_party() * usize::from(spec.threshold)
        };
        let cost = self.nt().cost(|c| c.verify_us_per_commitment, commitments);
        let done = self.now + cost;
        let unix = self.nodes[node].clock.local_ms(self.now) / 1_000;
        let identity = self.nodes[node].identity.clone();
        let liar = self.nt().liars.contains(&node);
        let label = self.topo.label(node);
        let r = self.round_mut(round);
        let admitted = r.node_rounds[pos].accept_bundle(unix, &identity, header, sealed);
        match admitted {
            Ok(Admitted::New(digest)) => {
                if liar {
                    let n = r.spec.parties.len();
                    let copy = verify::accept(&r.spec, &identity, header, sealed).ok();
                    let shadow = r.shadow.entry(pos).or_insert_with(|| vec![None; n]);
                    shadow[header.party as usize] = copy;
                }
                r.spans[ACCEPTANCE].finish(done);
                let coordinator = self.topo.coordinator();
                let msg = NetMsg::Ack {
                    round,
                    party: header.party,
                    digest,
                };
                self.net_send(node, coordinator, msg, done, ACCEPTANCE);
            }
            Ok(Admitted::Duplicate(_)) => {}
            Err(e) => {
                r.refused.push(format!("{label} refused a bundle: {e}"));
                self.nodes[node].stats.rejected += 1;
            }
        }
        cost
    }

    fn node_close(
        &mut self,
        node: usize,
        pos: usize,
        round: usize,
        inputs: &[Option<[u8; 32]>],
    ) -> Micros {
        if self.nt().silent.contains(&node) || self.round_mut(round).closed.contains(&pos) {
            return 0;
        }
        let values =
            inputs.iter().flatten().count() * self.round_mut(round).spec.values_per_party();
        let cost = self.nt().cost(|c| c.outputs_us_per_value, values);
        let done = self.now + cost;
        let identity = self.nodes[node].identity.clone();
        let liar = self.nt().liars.contains(&node);
        let nt = self.netting.as_mut().expect("netting");
        let r = &mut nt.rounds[round];
        let out = match r.node_rounds[pos].close(&identity, inputs) {
            Ok(out) if liar => {
                let shadow = r.shadow.get(&pos).cloned().unwrap_or_default();
                lie(&r.spec, &identity, &shadow, &mut nt.rng).unwrap_or(out)
            }
            Ok(out) => out,
            Err(e) => {
                r.refused
                    .push(format!("{} refused the close: {e}", self.topo.label(node)));
                self.nodes[node].stats.rejected += 1;
                return cost;
            }
        };
        r.closed.insert(pos);
        if r.spec.limits.is_some() {
            return cost + self.limits_node_start(node, pos, round, out, done);
        }
        self.release_outputs(node, round, out, done);
        cost
    }

    /// A node sends its outputs: one sealed message per party, its public shares
    /// to the coordinator.
    fn release_outputs(&mut self, node: usize, round: usize, out: NodeOutputs, at: Micros) {
        let r = self.round_mut(round);
        r.spans[OUTPUTS].finish(at);
        r.spans[5].begin(at);
        let first_party = self.nt().first_party;
        let coordinator = self.topo.coordinator();
        for po in out.parties {
            let to = first_party + po.party as usize;
            let msg = NetMsg::Party { round, outputs: po };
            self.net_send(node, to, msg, at, OUTPUTS);
        }
        let msg = NetMsg::Public {
            round,
            outputs: out.public,
        };
        self.net_send(node, coordinator, msg, at, OUTPUTS);
    }

    fn coordinator_receive(&mut self, from: usize, msg: NetMsg) {
        let pos = self.nt().position(from);
        let members = self.nt().members.len();
        match msg {
            NetMsg::Header { round, header } => {
                let p = header.party as usize;
                let r = self.round_mut(round);
                if p < r.headers.len() && header.check_full(&r.spec).is_ok() {
                    r.headers[p] = Some(header);
                }
            }
            NetMsg::Ack {
                round,
                party,
                digest,
            } => {
                if let (Some(pos), Some(acks)) =
                    (pos, self.round_mut(round).acks.get_mut(party as usize))
                {
                    acks.entry(digest).or_default().insert(pos);
                }
            }
            NetMsg::Public { round, outputs } => {
                let Some(pos) = pos else { return };
                let r = self.round_mut(round);
                r.views.insert(pos, outputs);
                if r.views.len() == members && !r.settle_started && limits::may_settle(r) {
                    let coordinator = self.topo.coordinator();
                    self.nodes[coordinator]
                        .queue
                        .push_back(Work::NettingSettle { round });
                }
            }
            _ => {}
        }
    }

    /// The coordinator closes on every bundle it has the header of and `t` nodes
    /// acknowledged.
    pub(super) fn coordinator_close(&mut self, round: usize) -> Micros {
        let now = self.now;
        let coordinator = self.topo.coordinator();
        let t = usize::from(self.round_mut(round).spec.threshold);
        let r = self.round_mut(round);
        if r.inputs_listed.is_some() {
            return 0;
        }
        let inputs: Vec<Option<[u8; 32]>> = r
            .headers
            .iter()
            .zip(&r.acks)
            .map(|(h, acks)| {
                let d = h.as_ref()?.digest();
                (acks.get(&d).map_or(0, BTreeSet::len) >= t).then_some(d)
            })
            .collect();
        r.nets = r
            .headers
            .iter()
            .zip(&inputs)
            .map(|(h, i)| {
                i.and(h.as_ref())
                    .and_then(|h| verify::net_points(&r.spec, h).ok())
            })
            .collect();
        r.inputs_listed = Some(inputs.clone());
        r.spans[CLOSE].begin(now);
        if inputs.iter().flatten().count() < 2 {
            r.fault = Some("fewer than two bundles held by t nodes at the cut-off".into());
            self.netting_finish(round, "too-few-inputs", now);
            return 0;
        }
        let members = self.nt().members.clone();
        for node in members {
            let msg = NetMsg::Close {
                round,
                inputs: inputs.clone(),
            };
            self.net_send(coordinator, node, msg, now, CLOSE);
        }
        if self.round_mut(round).spec.limits.is_some() {
            // The result deadline starts once the limit checks pass.
            self.king_start(round);
            return 0;
        }
        let deadline = now + ms_to_us(self.nt().spec.result_timeout_ms);
        self.events.push(deadline, Event::NettingDeadline(round));
        0
    }

    /// The result deadline: parties open from what they have; the coordinator
    /// settles from the public outputs it has.
    pub(super) fn netting_deadline(&mut self, round: usize) {
        let parties = self.nt().parties.len();
        for p in 0..parties {
            self.party_open(round, p);
        }
        let coordinator = self.topo.coordinator();
        if !self.round_mut(round).settle_started
            && self.nodes[coordinator].liveness != Liveness::Crashed
        {
            self.nodes[coordinator]
                .queue
                .push_back(Work::NettingSettle { round });
            self.pump(coordinator);
        }
        self.netting_check_done(round);
    }

    fn party_receive(&mut self, party: usize, msg: NetMsg) {
        let NetMsg::Party { round, outputs } = msg else {
            return;
        };
        let node = self.index.get(&outputs.node).copied();
        let Some(pos) = node.and_then(|n| self.nt().position(n)) else {
            return;
        };
        let members = self.nt().members.len();
        let r = self.round_mut(round);
        r.party_msgs[party].insert(pos, outputs);
        if r.party_msgs[party].len() == members {
            self.party_open(round, party);
            self.netting_check_done(round);
        }
    }

    /// Party `p` opens and verifies its result from the messages it has.
    fn party_open(&mut self, round: usize, p: usize) {
        let now = self.now;
        let nt = self.netting.as_mut().expect("netting");
        let r = &mut nt.rounds[round];
        let Some(inputs) = r.inputs_listed.clone() else {
            return;
        };
        if r.party_done[p] || inputs[p].is_none() {
            return;
        }
        r.party_done[p] = true;
        let participants: Vec<bool> = inputs.iter().map(Option::is_some).collect();
        let mine: Vec<PartyOutputs> = r.party_msgs[p].values().cloned().collect();
        let defs = outputs::party_outputs(&r.spec, &participants, p).len();
        // The party fetches every participating party's header for the commitments.
        let points: Vec<Option<Vec<RistrettoPoint>>> = r
            .dealt
            .iter()
            .zip(&inputs)
            .map(|(h, i)| {
                i.and(h.as_ref())
                    .and_then(|h| verify::commitments(&r.spec, h).ok())
            })
            .collect();
        let commitments: Vec<Option<&[RistrettoPoint]>> =
            points.iter().map(|p| p.as_deref()).collect();
        let headers: Vec<Option<&BundleHeader>> = r
            .dealt
            .iter()
            .zip(&inputs)
            .map(|(h, i)| i.and(h.as_ref()))
            .collect();
        let published = Published {
            participants: &participants,
            inputs_digest: open::inputs_digest(&r.spec, &inputs),
            headers: &headers,
            commitments: &commitments,
        };
        let result = open_result(
            &r.spec,
            &published,
            p,
            &nt.parties[p].seal,
            &mine,
            &mut nt.rng,
        );
        let cost = nt.costs.as_ref().map_or(0, |c| {
            (c.result_us_per_share * (defs * mine.len()) as f64).round() as Micros
        });
        let r = &mut nt.rounds[round];
        r.spans[5].finish(now + cost);
        match result {
            Ok(res) => {
                for c in &res.culprits {
                    if let Some(&n) = self.index.get(c) {
                        *r.named_by_parties.entry(n).or_default() += 1;
                    }
                }
                r.results[p] = Some(res);
            }
            Err(e) => r.refused.push(format!("party-{p:02} could not open: {e}")),
        }
    }

    /// The coordinator builds the settlement batch and starts its signing.
    pub(super) fn coordinator_settle(&mut self, round: usize) -> Micros {
        let now = self.now;
        let nt = self.netting.as_mut().expect("netting");
        let r = &mut nt.rounds[round];
        let Some(inputs) = r.inputs_listed.clone() else {
            return 0;
        };
        if r.settle_started || r.finished.is_some() || !limits::may_settle(r) {
            return 0;
        }
        r.settle_started = true;
        r.spans[SETTLEMENT].begin(now);
        let participants: Vec<bool> = inputs.iter().map(Option::is_some).collect();
        let views: Vec<PublicOutputs> = r.views.values().cloned().collect();
        let nets: Vec<Option<&[RistrettoPoint]>> = r.nets.iter().map(|p| p.as_deref()).collect();
        let defs = outputs::public_outputs(&r.spec, &participants).len();
        let built = settle(
            &r.spec,
            &participants,
            open::inputs_digest(&r.spec, &inputs),
            &nets,
            &views,
            &mut nt.rng,
        );
        let cost = nt.costs.as_ref().map_or(0, |c| {
            (c.settle_us_per_share * (defs * views.len()) as f64).round() as Micros
        });
        let (batch, culprits) = match built {
            Ok(b) => b,
            Err(e) => {
                r.fault = Some(format!("settlement: {e}"));
                let outcome = match e {
                    quorate_protocol::ProtocolError::ConservationFailed { .. } => {
                        "conservation-failed"
                    }
                    _ => "opening-failed",
                };
                self.netting_finish(round, outcome, now + cost);
                return cost;
            }
        };
        r.settle_culprits = culprits
            .iter()
            .filter_map(|c| self.index.get(c).copied())
            .collect();
        let message = batch.message();
        let payload = Payload::SettleRequest {
            round: r.spec.id,
            views,
            message: message.to_vec(),
        };
        r.batch = Some(batch);
        let id = self.fresh_id();
        let nt = self.nt();
        nt.rounds[round].request = Some(id);
        nt.requests.insert(id, round);
        nt.payloads.insert(id, payload);
        self.requests
            .insert(id, Request::new(id, 0, message.to_vec(), now + cost));
        self.open += 1;
        let coordinator = self.topo.coordinator();
        self.nodes[coordinator]
            .queue
            .push_back(Work::StartAttempt { request: id });
        cost
    }

    /// True for a node the `[netting]` table makes lie or stay silent (blaming it
    /// is correct).
    pub(super) fn netting_faulty(&self, node: usize) -> bool {
        self.netting
            .as_ref()
            .is_some_and(|n| n.liars.contains(&node) || n.silent.contains(&node))
    }

    /// A signer received a `SettleRequest`: it rebuilds the batch from the views
    /// with its own round state and signs only that batch's message.
    pub(super) fn join_settlement(&mut self, node: usize, env: Envelope) -> Micros {
        let Payload::SettleRequest {
            round,
            views,
            message,
        } = &env.payload
        else {
            return 0;
        };
        let Some(nt) = self.netting.as_mut() else {
            return 0;
        };
        let (Some(&r), Some(pos)) = (nt.by_id.get(round), nt.position(node)) else {
            self.nodes[node].stats.rejected += 1;
            return 0;
        };
        if nt.silent.contains(&node) {
            return 0;
        }
        let state = &nt.rounds[r];
        let participants: Vec<bool> = state
            .inputs_listed
            .as_ref()
            .map_or_else(Vec::new, |i| i.iter().map(Option::is_some).collect());
        let defs = outputs::public_outputs(&state.spec, &participants).len();
        let rebuilt = state.node_rounds[pos].settlement(views, &mut nt.rng);
        let cost = nt.cost(|c| c.settle_us_per_share, defs * views.len());
        match rebuilt {
            Ok((batch, _)) if batch.message().as_slice() == message.as_slice() => {
                let target = SignTarget {
                    message: message.clone(),
                    tweak: None,
                };
                cost + self.start_signer(node, &env, target, None)
            }
            _ => {
                self.nodes[node].stats.rejected += 1;
                cost
            }
        }
    }

    /// A settlement signing request ended.
    pub(super) fn settlement_signed(&mut self, request: u64, outcome: Outcome, at: Micros) {
        let Some(nt) = self.netting.as_mut() else {
            return;
        };
        let Some(&round) = nt.requests.get(&request) else {
            return;
        };
        let bytes = self.requests.get(&request).map_or(0, |q| q.bytes);
        let messages = self.requests.get(&request).map_or(0, |q| q.messages);
        let r = &mut nt.rounds[round];
        r.signing = Some(outcome);
        r.spans[SETTLEMENT].finish(at);
        r.bytes[SETTLEMENT] = bytes;
        r.messages[SETTLEMENT] = messages;
        self.netting_check_done(round);
    }

    /// Ends the round once every party opened and the settlement signing ended.
    fn netting_check_done(&mut self, round: usize) {
        let r = self.round_mut(round);
        let Some(inputs) = &r.inputs_listed else {
            return;
        };
        let parties_done = inputs
            .iter()
            .zip(&r.party_done)
            .all(|(i, d)| i.is_none() || *d);
        let Some(signing) = r.signing else {
            return;
        };
        if !parties_done || r.finished.is_some() {
            return;
        }
        let end = [r.spans[5].end, r.spans[SETTLEMENT].end]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or(self.now);
        let outcome = if signing == Outcome::Signed {
            "settled"
        } else {
            "signing-failed"
        };
        self.netting_finish(round, outcome, end.max(self.now));
    }

    fn netting_finish(&mut self, round: usize, outcome: &'static str, at: Micros) {
        let r = self.round_mut(round);
        if r.finished.is_some() {
            return;
        }
        r.finished = Some(at);
        r.outcome = Some(outcome);
        self.open = self.open.saturating_sub(1);
        self.trace
            .note(at, &format!("netting round {round} {outcome}"));
    }

    /// Rounds still open at the end of the run.
    pub(super) fn netting_unfinished(&mut self) {
        let Some(nt) = self.netting.as_mut() else {
            return;
        };
        let now = self.now;
        for r in nt.rounds.iter_mut().filter(|r| r.finished.is_none()) {
            if r.start <= now {
                r.outcome = Some("unfinished");
            }
        }
    }

    /// The netting part of the run's results.
    pub(super) fn netting_result(&self) -> (Option<NettingSummary>, Vec<NettingRound>) {
        let Some(nt) = self.netting.as_ref() else {
            return (None, Vec::new());
        };
        let label = |e: usize| {
            if e >= nt.first_party {
                format!("party-{:02}", e - nt.first_party)
            } else {
                self.topo.label(e)
            }
        };
        let ms = |t: Micros| t as f64 / 1_000.0;
        let mut detail = Vec::new();
        let mut rounds = Vec::new();
        for (i, r) in nt.rounds.iter().enumerate() {
            let rel = |t: Option<Micros>| t.map(|t| ms(t.saturating_sub(r.start)));
            let phases = PHASES
                .iter()
                .enumerate()
                .map(|(k, name)| {
                    let s = r.spans[k];
                    PhaseReport {
                        phase: name,
                        start_ms: rel(s.start),
                        end_ms: rel(s.end),
                        ms: s.start.zip(s.end).map(|(a, b)| ms(b.saturating_sub(a))),
                        messages: r.messages[k],
                        bytes: r.bytes[k],
                    }
                })
                .collect();
            let mut culprits: BTreeSet<usize> = r.named_by_parties.keys().copied().collect();
            culprits.extend(r.settle_culprits.iter().copied());
            let plain = quorate_protocol::netting::reference::compute(&r.spec, &r.inputs).ok();
            let matches = plain.as_ref().is_some_and(|plain| {
                r.results
                    .iter()
                    .zip(plain)
                    .all(|(got, want)| match (got, want) {
                        (Some(g), Some(w)) => result_matches(g, w),
                        (None, _) => true,
                        (Some(_), None) => false,
                    })
            });
            let request = r.request.and_then(|id| self.requests.get(&id));
            let unanswered = r.inputs_listed.as_ref().map_or_else(Vec::new, |_| {
                nt.members
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| !r.views.contains_key(j))
                    .map(|(_, n)| self.topo.label(*n))
                    .collect()
            });
            let participants = r
                .inputs_listed
                .as_ref()
                .map_or(0, |i| i.iter().flatten().count());
            detail.push(NettingRoundReport {
                round: i as u32,
                started_ms: ms(r.start),
                finished_ms: r.finished.map(ms),
                outcome: r.outcome.unwrap_or("not-started").to_string(),
                settled: r.outcome == Some("settled"),
                latency_ms: (r.outcome == Some("settled"))
                    .then(|| r.finished.map(|f| ms(f - r.start)))
                    .flatten(),
                parties: r.spec.parties.len(),
                participants,
                values_per_party: r.spec.values_per_party(),
                commitments_per_bundle: r.spec.values_per_party() * usize::from(r.spec.threshold),
                phases,
                messages: r.messages.iter().sum(),
                bytes: r.bytes.iter().sum(),
                traffic: r
                    .traffic
                    .iter()
                    .map(|(e, t)| TrafficReport {
                        label: label(*e),
                        sent: t[0],
                        sent_bytes: t[1],
                        received: t[2],
                        received_bytes: t[3],
                    })
                    .collect(),
                culprits_correct: culprits.iter().all(|c| nt.liars.contains(c)),
                culprits: culprits.iter().map(|c| self.topo.label(*c)).collect(),
                named_by_parties: r
                    .named_by_parties
                    .iter()
                    .map(|(n, k)| (self.topo.label(*n), *k))
                    .collect(),
                named_by_settlement: r
                    .settle_culprits
                    .iter()
                    .map(|n| self.topo.label(*n))
                    .collect(),
                unanswered,
                parties_opened: r.results.iter().flatten().count(),
                results_match_reference: matches,
                transfers: r.batch.as_ref().map_or(0, |b| b.transfers.len()),
                settlement_message: r.batch.as_ref().map(|b| hex::encode(b.message())),
                signing_attempts: request.map_or(0, |q| q.attempts),
                signers: request.map_or_else(Vec::new, |q| {
                    q.last_signers.iter().map(|n| self.topo.label(*n)).collect()
                }),
                refused: r.refused.clone(),
                fault: r.fault.clone(),
                limits: r.limits.as_deref().map(|l| l.report(r, &rel)),
            });
            rounds.push(NettingRound {
                spec: r.spec.clone(),
                inputs: r.inputs.clone(),
                results: r.results.clone(),
                batch: r.batch.clone(),
            });
        }
        let latencies: Vec<f64> = detail.iter().filter_map(|d| d.latency_ms).collect();
        let mut culprits: BTreeSet<String> = BTreeSet::new();
        for d in &detail {
            culprits.extend(d.culprits.iter().cloned());
        }
        let summary = NettingSummary {
            rounds: detail.len() as u32,
            settled: detail.iter().filter(|d| d.settled).count() as u32,
            latency_ms: crate::report::percentiles(&latencies),
            messages: detail.iter().map(|d| d.messages).sum(),
            bytes: detail.iter().map(|d| d.bytes).sum(),
            culprits: culprits.into_iter().collect(),
            liars: nt.liars.iter().map(|n| self.topo.label(*n)).collect(),
            silent: nt.silent.iter().map(|n| self.topo.label(*n)).collect(),
            results_match_reference: detail.iter().all(|d| d.results_match_reference),
            limit_checked: detail
                .iter()
                .filter(|d| d.limits.as_ref().is_some_and(|l| l.covered.is_some()))
                .count() as u32,
            covered: detail
                .iter()
                .filter(|d| d.limits.as_ref().is_some_and(|l| l.covered == Some(true)))
                .count() as u32,
            verdict_disagreements: detail
                .iter()
                .filter_map(|d| d.limits.as_ref())
                .map(|l| l.disagreements)
                .sum(),
            detail,
        };
        (Some(summary), rounds)
    }
}

/// True when a party's verified result equals its plaintext reference.
pub(crate) fn result_matches(
    got: &PartyResult,
    want: &quorate_protocol::netting::reference::PlainResult,
) -> bool {
    let bilateral = got.bilateral.len() == want.bilateral.len()
        && got.bilateral.iter().all(|b| {
            want.bilateral
                .get(&(b.counterparty.clone(), b.asset.clone()))
                == Some(&i128::from(b.net))
        });
    let multilateral = got.multilateral.len() == want.multilateral.len()
        && got
            .multilateral
            .iter()
            .all(|(a, v)| want.multilateral.get(a) == Some(&i128::from(*v)));
    let mismatches = got.mismatches.len() == want.mismatches.len()
        && got.mismatches.iter().all(|m| {
            want.mismatches
                .get(&(m.counterparty.clone(), m.instrument.clone()))
                == Some(&(
                    i128::from(m.quantity_difference),
                    i128::from(m.cash_difference),
                ))
        });
    bilateral && multilateral && mismatches
}

fn msg_round(msg: &NetMsg) -> usize {
    match msg {
        NetMsg::Bundle { round, .. }
        | NetMsg::Header { round, .. }
        | NetMsg::Ack { round, .. }
        | NetMsg::Close { round, .. }
        | NetMsg::Public { round, .. }
        | NetMsg::Party { round, .. }
        | NetMsg::Limit { round, .. } => *round,
    }
}

/// The postcard encoding of a message body.
fn body<T: serde::Serialize>(v: &T) -> Vec<u8> {
    postcard::to_allocvec(v).unwrap_or_default()
}
