//! The link model: latency distributions, jitter, loss, duplication, reordering,
//! uplink bandwidth at real message sizes, scheduled (one- or two-way) partitions,
//! and per-node clock skew and drift.

use rand_core::RngCore;

pub use crate::spec::LatencySpec;
use crate::{
    engine::{ms_to_us, s_to_us, Micros},
    error::SimError,
    random,
    scenario::Scenario,
    topology::Topology,
};

#[derive(Debug, Clone)]
struct Link {
    latency: LatencySpec,
    loss: f64,
}

#[derive(Debug, Clone)]
struct Partition {
    start: Micros,
    end: Micros,
    a: Vec<bool>,
    b: Vec<bool>,
    one_way: bool,
}

/// Why a message was not delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drop {
    /// Random loss.
    Loss,
    /// A partition cut the link.
    Partition,
}

/// What the network does with one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fate {
    /// Not delivered.
    Dropped(Drop),
    /// Delivered at these times (two for a duplicate).
    Delivered(Vec<Micros>),
}

/// A node's clock: `local = global * (1 + drift) + offset`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Clock {
    offset_us: i64,
    drift: f64,
}

impl Clock {
    /// The node's local time in whole milliseconds (what its machines see).
    pub fn local_ms(&self, global: Micros) -> u64 {
        let local = (global as f64 * (1.0 + self.drift)) as i64 + self.offset_us;
        (local.max(0) as u64) / 1_000
    }

    /// The global time at which the local clock reads `ms` (never earlier than `now`).
    pub fn global_at(&self, ms: u64, now: Micros) -> Micros {
        let local_us = (ms as i64).saturating_mul(1_000) - self.offset_us;
        let global = (local_us as f64 / (1.0 + self.drift)).ceil();
        (global.max(0.0) as Micros).max(now)
    }
}

/// The network between all nodes.
#[derive(Debug, Clone)]
pub struct Network {
    node_region: Vec<usize>,
    regions: usize,
    links: Vec<Link>,
    jitter_us: Micros,
    duplicate: f64,
    reorder: f64,
    reorder_us: Micros,
    /// Microseconds per byte on the uplink (0 = unlimited).
    us_per_byte: f64,
    uplink_free: Vec<Micros>,
    partitions: Vec<Partition>,
}

impl Network {
    /// Builds the network of `scenario` over `topology`.
    pub fn new(scenario: &Scenario, topology: &Topology) -> Result<Self, SimError> {
        let spec = &scenario.network;
        let regions = topology.regions.len();
        let mut links = vec![
            Link {
                latency: spec.latency.clone(),
                loss: spec.loss,
            };
            regions * regions
        ];
        let region = |name: &str| topology.regions.iter().position(|r| r == name);
        for (i, seg) in spec.segments.iter().enumerate() {
            let (Some(f), Some(t)) = (region(&seg.from), region(&seg.to)) else {
                return Err(SimError::invalid(
                    format!("network.segments[{i}]"),
                    "unknown region",
                ));
            };
            let link = Link {
                latency: seg.latency.clone(),
                loss: seg.loss.unwrap_or(spec.loss),
            };
            links[f * regions + t] = link.clone();
            if seg.symmetric {
                links[t * regions + f] = link;
            }
        }
        let mut partitions = Vec::new();
        for (i, p) in spec.partitions.iter().enumerate() {
            let side = |sels: &[String]| -> Result<Vec<bool>, SimError> {
                let mut v = vec![false; topology.len()];
                for s in sels {
                    for node in topology
                        .select(s)
                        .map_err(|r| SimError::invalid(format!("network.partitions[{i}]"), r))?
                    {
                        v[node] = true;
                    }
                }
                Ok(v)
            };
            partitions.push(Partition {
                start: s_to_us(p.start_s),
                end: p.end_s.map_or(Micros::MAX, s_to_us),
                a: side(&p.a)?,
                b: side(&p.b)?,
                one_way: p.one_way,
            });
        }
        Ok(Self {
            node_region: topology.node_region.clone(),
            regions,
            links,
            jitter_us: ms_to_us(spec.jitter_ms),
            duplicate: spec.duplicate,
            reorder: spec.reorder,
            reorder_us: ms_to_us(spec.reorder_ms),
            us_per_byte: if spec.bandwidth_mbps > 0.0 {
                8.0 / spec.bandwidth_mbps
            } else {
                0.0
            },
            uplink_free: vec![0; topology.len()],
            partitions,
        })
    }

    /// Adds endpoints that are not nodes (netting parties) in the given regions
    /// (indices into the topology's regions); returns the index of the first.
    /// No partition selects them.
    pub fn add_endpoints(&mut self, regions: &[usize]) -> usize {
        let first = self.node_region.len();
        self.node_region.extend_from_slice(regions);
        self.uplink_free.resize(self.node_region.len(), 0);
        for p in &mut self.partitions {
            p.a.resize(self.node_region.len(), false);
            p.b.resize(self.node_region.len(), false);
        }
        first
    }

    /// Draws every node's clock.
    pub fn clocks(scenario: &Scenario, nodes: usize, rng: &mut impl RngCore) -> Vec<Clock> {
        let skew = scenario.network.clock_skew_ms;
        let drift = scenario.network.clock_drift_ppm;
        (0..nodes)
            .map(|_| {
                if skew == 0.0 && drift == 0.0 {
                    return Clock::default();
                }
                let offset = (random::unit(rng) * 2.0 - 1.0) * skew * 1_000.0;
                let d = (random::unit(rng) * 2.0 - 1.0) * drift * 1e-6;
                Clock {
                    offset_us: offset.round() as i64,
                    drift: d,
                }
            })
            .collect()
    }

    /// True when a partition cuts `from → to` at `now`.
    pub fn cut(&self, from: usize, to: usize, now: Micros) -> bool {
        self.partitions.iter().any(|p| {
            now >= p.start
                && now < p.end
                && ((p.a[from] && p.b[to]) || (!p.one_way && p.b[from] && p.a[to]))
        })
    }

    /// Sends `size` bytes from `from` to `to` at `now`: uplink serialization, then
    /// partition, loss, latency, jitter, reordering and duplication.
    pub fn transmit(
        &mut self,
        from: usize,
        to: usize,
        size: usize,
        now: Micros,
        rng: &mut impl RngCore,
    ) -> Fate {
        let mut depart = now;
        if self.us_per_byte > 0.0 {
            let start = self.uplink_free[from].max(now);
            depart = start + (size as f64 * self.us_per_byte).ceil() as Micros;
            self.uplink_free[from] = depart;
        }
        if self.cut(from, to, now) {
            return Fate::Dropped(Drop::Partition);
        }
        let link = &self.links[self.node_region[from] * self.regions + self.node_region[to]];
        if random::chance(rng, link.loss) {
            return Fate::Dropped(Drop::Loss);
        }
        let mut times = vec![depart + self.one_delay(&link.latency, rng)];
        if random::chance(rng, self.duplicate) {
            times.push(depart + self.one_delay(&link.latency, rng));
        }
        Fate::Delivered(times)
    }

    fn one_delay(&self, latency: &LatencySpec, rng: &mut impl RngCore) -> Micros {
        let mut d = latency.sample_us(rng);
        if self.jitter_us > 0 {
            d += (random::unit(rng) * self.jitter_us as f64) as Micros;
        }
        if random::chance(rng, self.reorder) {
            d += self.reorder_us;
        }
        d
    }
}
