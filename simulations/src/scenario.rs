//! The scenario file: a TOML document describing the committee, the network, the
//! faults, the workload and (optionally) a parameter sweep.
//!
//! Every table rejects unknown fields, so a typo is an error that names the field
//! instead of a silently ignored setting. [`Scenario::validate`] then checks that
//! the values make sense together.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use crate::spec::{CommitteeSpec, KeySetup};
use crate::{
    cost::CostTable,
    error::SimError,
    spec::{ByzantineSpec, LatencySpec},
};
pub use crate::{
    limits_spec::{LimitCosts, LimitsSpec},
    netting_spec::{NettingCosts, NettingSpec, Positions},
    reshare_spec::ReshareSpec,
};

/// A complete simulation description.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name, used in output file names.
    pub name: String,
    /// Free text shown in reports.
    #[serde(default)]
    pub description: String,
    /// Master seed (overridable from the command line).
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Who signs.
    pub committee: CommitteeSpec,
    /// Links between nodes.
    #[serde(default)]
    pub network: NetworkSpec,
    /// Signing sessions and the retry loop.
    #[serde(default)]
    pub signing: SigningSpec,
    /// DKG sessions.
    #[serde(default)]
    pub dkg: DkgSpec,
    /// What arrives when.
    pub workload: WorkloadSpec,
    /// Computation charged in virtual time.
    #[serde(default)]
    pub cpu: CpuSpec,
    /// Crashes and pauses.
    #[serde(default)]
    pub faults: Vec<FaultSpec>,
    /// Byzantine signers.
    #[serde(default)]
    pub byzantine: Option<ByzantineSpec>,
    /// MPC netting rounds (a workload of their own, alongside `[workload]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netting: Option<NettingSpec>,
    /// Resharing runs (`[workload] kind = "reshare"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reshare: Option<ReshareSpec>,
    /// Runs the scenario once per value of one parameter.
    #[serde(default)]
    pub sweep: Option<SweepSpec>,
}

fn default_seed() -> u64 {
    1
}

/// Network model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    /// One-way latency of links not covered by a segment.
    #[serde(default = "default_latency")]
    pub latency: LatencySpec,
    /// Extra uniform delay in `[0, jitter_ms]` on every message.
    #[serde(default)]
    pub jitter_ms: f64,
    /// Independent loss probability per message.
    #[serde(default)]
    pub loss: f64,
    /// Probability a message is delivered twice.
    #[serde(default)]
    pub duplicate: f64,
    /// Probability a message is held back by `reorder_ms` (so later ones overtake it).
    #[serde(default)]
    pub reorder: f64,
    /// Hold-back of reordered messages.
    #[serde(default)]
    pub reorder_ms: f64,
    /// Uplink bandwidth of every node in Mbit/s (0 = unlimited). Messages are
    /// serialized onto the uplink one after another, at their real encoded size.
    #[serde(default)]
    pub bandwidth_mbps: f64,
    /// Each node's clock is offset by a uniform value in `[-clock_skew_ms, clock_skew_ms]`.
    #[serde(default)]
    pub clock_skew_ms: f64,
    /// Each node's clock runs fast or slow by up to this many parts per million.
    #[serde(default)]
    pub clock_drift_ppm: f64,
    /// Per-segment overrides (a latency matrix between regions).
    #[serde(default)]
    pub segments: Vec<SegmentSpec>,
    /// Scheduled partitions.
    #[serde(default)]
    pub partitions: Vec<PartitionSpec>,
}

fn default_latency() -> LatencySpec {
    LatencySpec::Constant { ms: 10.0 }
}

impl Default for NetworkSpec {
    fn default() -> Self {
        Self {
            latency: default_latency(),
            jitter_ms: 0.0,
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_ms: 0.0,
            bandwidth_mbps: 0.0,
            clock_skew_ms: 0.0,
            clock_drift_ppm: 0.0,
            segments: Vec::new(),
            partitions: Vec::new(),
        }
    }
}

/// Link parameters between two regions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentSpec {
    /// Source region.
    pub from: String,
    /// Destination region.
    pub to: String,
    /// One-way latency.
    pub latency: LatencySpec,
    /// Loss on this segment (default: the network's).
    #[serde(default)]
    pub loss: Option<f64>,
    /// Also applies from `to` to `from`.
    #[serde(default = "yes")]
    pub symmetric: bool,
}

fn yes() -> bool {
    true
}

/// A partition between two node sets during `[start_s, end_s)`.
///
/// Selectors: `"coordinator"`, `"n7"` (7th node, 1-based, committees in order),
/// `"region:eu"`, `"signers"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionSpec {
    /// Start (virtual seconds).
    pub start_s: f64,
    /// End (virtual seconds); omitted means never heals.
    #[serde(default)]
    pub end_s: Option<f64>,
    /// One side.
    pub a: Vec<String>,
    /// The other side.
    pub b: Vec<String>,
    /// Only messages from `a` to `b` are cut.
    #[serde(default)]
    pub one_way: bool,
}

/// How the coordinator picks signers for an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Selection {
    /// A uniformly random subset of the candidates.
    #[default]
    Random,
    /// The lowest-indexed candidates (deterministic, adversarial when byzantine
    /// nodes are placed first).
    First,
    /// Fastest first: by the coordinator's running estimate of each signer's
    /// commitment round trip (unmeasured signers are tried first; signers
    /// blamed in the last 30 s go last; ties by index).
    Responsive,
}

/// How the coordinator runs a signing request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum SigningStrategy {
    /// Sequential attempts: each a fresh two-round FROST session with `t` signers;
    /// culprits are excluded and the next attempt starts after the previous one
    /// failed (at most `max_attempts`).
    #[default]
    Retry,
    /// ROAST (Ruffing et al., CCS 2022) over presigned nonces: every signer keeps a
    /// `NoncePool` and offers its commitments ahead of time; the coordinator starts
    /// a one-round session with `t` responsive signers whenever it has that many,
    /// concurrently, and a signer whose share checks out is responsive again with
    /// the commitment it sends along with the share. No timeouts (only the safety
    /// deadline `roast_deadline_ms`).
    Roast,
}

/// Signing sessions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningSpec {
    /// Coordinator strategy: `retry` (default) or `roast`.
    #[serde(default)]
    pub strategy: SigningStrategy,
    /// Aggregator deadline per attempt.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// Signer-side deadline (default: twice `timeout_ms`).
    #[serde(default)]
    pub signer_timeout_ms: Option<u64>,
    /// Retry with another subset after a failed attempt (ROAST-style).
    #[serde(default = "yes")]
    pub retry: bool,
    /// Attempt cap (default `n - t + 1`).
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// Subset selection.
    #[serde(default)]
    pub selection: Selection,
    /// Size of the message to sign.
    #[serde(default = "default_message_bytes")]
    pub message_bytes: usize,
    /// Let the simulated signers of one signing package share its public round-2
    /// work (decoded package, binding factors, group commitment, challenge) on the
    /// host. Shares, messages, virtual time and trace hash are identical either way;
    /// only the host run time changes (about 10x for 67-of-100). Off in `calibrate`.
    #[serde(default = "yes")]
    pub share_public_work: bool,
    /// `roast`: presigned nonces each signer's pool holds per key (1..=256). The
    /// pool refills one nonce as soon as one is taken, and offers it with the share.
    #[serde(default = "default_presign_pool")]
    pub presign_pool: usize,
    /// `roast`: lifetime of a presigned nonce (the coordinator's book stops using
    /// it 5 s earlier).
    #[serde(default = "default_presign_lifetime")]
    pub presign_lifetime_ms: u64,
    /// `roast`: every this often a signer drops expired nonces, tops its pool up,
    /// and replaces a pool nothing was taken from since the last time with a new
    /// one (new epoch): its coordinator may have lost track of those nonces (an
    /// offer lost or refused in transit).
    #[serde(default = "default_presign_refresh")]
    pub presign_refresh_ms: u64,
    /// `roast`: safety deadline of a request (ROAST itself needs no timeout); at
    /// the deadline the request ends `timed-out`, naming the signers it still waits for.
    #[serde(default = "default_roast_deadline")]
    pub roast_deadline_ms: u64,
}

fn default_timeout() -> u64 {
    2_000
}

fn default_presign_pool() -> usize {
    4
}

fn default_presign_lifetime() -> u64 {
    120_000
}

fn default_presign_refresh() -> u64 {
    10_000
}

fn default_roast_deadline() -> u64 {
    60_000
}

fn default_message_bytes() -> usize {
    32
}

impl Default for SigningSpec {
    fn default() -> Self {
        Self {
            strategy: SigningStrategy::Retry,
            timeout_ms: default_timeout(),
            signer_timeout_ms: None,
            retry: true,
            max_attempts: None,
            selection: Selection::Random,
            message_bytes: default_message_bytes(),
            share_public_work: true,
            presign_pool: default_presign_pool(),
            presign_lifetime_ms: default_presign_lifetime(),
            presign_refresh_ms: default_presign_refresh(),
            roast_deadline_ms: default_roast_deadline(),
        }
    }
}

/// DKG sessions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DkgSpec {
    /// Deadline of a DKG run.
    #[serde(default = "default_dkg_timeout")]
    pub timeout_ms: u64,
}

fn default_dkg_timeout() -> u64 {
    60_000
}

impl Default for DkgSpec {
    fn default() -> Self {
        Self {
            timeout_ms: default_dkg_timeout(),
        }
    }
}

/// Arrival process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WorkloadKind {
    /// Signing requests every `1 / rate_per_s` seconds.
    FixedRate,
    /// Signing requests with exponential inter-arrival times.
    Poisson,
    /// `burst_size` signing requests at once every `burst_interval_s`.
    Burst,
    /// DKG runs, one every `1 / rate_per_s` seconds.
    Dkg,
    /// Poisson signing plus a DKG every `dkg_every_s`.
    Mixed,
    /// No signing or DKG arrivals: only the `[netting]` rounds (and their
    /// settlement signatures).
    Netting,
    /// Resharing runs (the `[reshare]` table), one every `1 / rate_per_s` seconds,
    /// each moving the committee's initial key to the new committee.
    Reshare,
}

/// What arrives when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadSpec {
    /// Arrival process.
    pub kind: WorkloadKind,
    /// Arrivals per second.
    #[serde(default = "default_rate")]
    pub rate_per_s: f64,
    /// Stop after this many arrivals.
    #[serde(default)]
    pub count: Option<u64>,
    /// First arrival (virtual seconds).
    #[serde(default)]
    pub start_s: f64,
    /// Arrivals stop after this long (virtual seconds).
    #[serde(default = "default_duration")]
    pub duration_s: f64,
    /// Extra time to let the last sessions finish.
    #[serde(default = "default_drain")]
    pub drain_s: f64,
    /// Requests per burst.
    #[serde(default = "default_burst")]
    pub burst_size: u32,
    /// Time between bursts.
    #[serde(default = "default_burst_interval")]
    pub burst_interval_s: f64,
    /// Mixed workloads: time between DKG runs.
    #[serde(default = "default_dkg_every")]
    pub dkg_every_s: f64,
}

fn default_rate() -> f64 {
    1.0
}
fn default_duration() -> f64 {
    60.0
}
fn default_drain() -> f64 {
    120.0
}
fn default_burst() -> u32 {
    10
}
fn default_burst_interval() -> f64 {
    10.0
}
fn default_dkg_every() -> f64 {
    60.0
}

/// CPU cost model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum CpuModel {
    /// Computation is free (pure network study).
    None,
    /// The built-in cost table.
    #[default]
    Default,
    /// A cost file written by `quorate sim-calibrate` (`file`).
    File,
    /// The `table` given inline.
    Inline,
}

/// Computation charged in virtual time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CpuSpec {
    /// Which table.
    #[serde(default)]
    pub model: CpuModel,
    /// Cost file (relative to the scenario file) for `model = "file"`.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// Inline table for `model = "inline"`.
    #[serde(default)]
    pub table: Option<CostTable>,
    /// Multiplies every cost (e.g. 3.0 for slow HSM-backed hosts).
    #[serde(default)]
    pub scale: Option<f64>,
}

/// Node fault kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// The node stops and loses its memory (sessions, nonces); its keystore
    /// survives. Restarts at `until_s` if given.
    Crash,
    /// The node stops processing; messages and timers queue up and are handled
    /// at `until_s`.
    Pause,
}

/// A scheduled node fault.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    /// What happens.
    pub kind: FaultKind,
    /// Affected nodes (selectors as in partitions).
    #[serde(default)]
    pub nodes: Vec<String>,
    /// Or: this many signers of the first committee, chosen by the seed among
    /// honest members.
    #[serde(default)]
    pub count: Option<usize>,
    /// When (virtual seconds).
    #[serde(default)]
    pub at_s: f64,
    /// Restart / resume (virtual seconds); omitted means never.
    #[serde(default)]
    pub until_s: Option<f64>,
}

/// A parameter sweep: the scenario runs once per value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepSpec {
    /// Dotted path of the swept field, e.g. `byzantine.count` or `network.loss`.
    pub param: String,
    /// Values, in order.
    pub values: Vec<toml::Value>,
}

impl Scenario {
    /// Parses and validates scenario text (`origin` names it in errors).
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, SimError> {
        let scenario: Self = toml::from_str(text).map_err(|e| SimError::Parse {
            path: origin.to_string(),
            message: e.to_string(),
        })?;
        scenario.validate()?;
        Ok(scenario)
    }

    /// Reads, parses and validates a scenario file.
    pub fn load(path: &Path) -> Result<Self, SimError> {
        let text = std::fs::read_to_string(path).map_err(|source| SimError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text, &path.display().to_string())
    }

    /// Renders the scenario (with defaults filled in) as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }

    /// Total nodes: all committee members plus the coordinator.
    pub fn node_count(&self) -> usize {
        usize::from(self.committee.n) * self.committee.count + 1
    }

    /// Attempt cap of the retry loop.
    pub fn max_attempts(&self) -> u32 {
        if !self.signing.retry {
            return 1;
        }
        self.signing.max_attempts.unwrap_or_else(|| {
            u32::from(self.committee.n.saturating_sub(self.committee.threshold)) + 1
        })
    }

    /// True when the workload signs or reshares (and so needs keys before it starts).
    pub fn needs_keys(&self) -> bool {
        !matches!(self.workload.kind, WorkloadKind::Dkg) || self.netting.is_some()
    }

    /// Checks values against each other; errors name the field.
    pub fn validate(&self) -> Result<(), SimError> {
        let c = &self.committee;
        if c.n < 2 {
            return Err(SimError::invalid("committee.n", "needs at least 2 members"));
        }
        if c.threshold < 2 || c.threshold > c.n {
            return Err(SimError::invalid(
                "committee.threshold",
                format!("must be between 2 and committee.n = {}", c.n),
            ));
        }
        if c.count == 0 {
            return Err(SimError::invalid("committee.count", "must be at least 1"));
        }
        if let Some(r) = &c.coordinator_region {
            if !c.regions.contains(r) {
                return Err(SimError::invalid(
                    "committee.coordinator_region",
                    format!("region {r:?} is not listed in committee.regions"),
                ));
            }
        }
        let net = &self.network;
        net.latency.validate("network.latency")?;
        for (name, p) in [
            ("network.loss", net.loss),
            ("network.duplicate", net.duplicate),
            ("network.reorder", net.reorder),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(SimError::invalid(name, "must be a probability in [0, 1]"));
            }
        }
        for (name, v) in [
            ("network.jitter_ms", net.jitter_ms),
            ("network.reorder_ms", net.reorder_ms),
            ("network.bandwidth_mbps", net.bandwidth_mbps),
            ("network.clock_skew_ms", net.clock_skew_ms),
            ("network.clock_drift_ppm", net.clock_drift_ppm),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(SimError::invalid(
                    name,
                    "must be a finite, non-negative number",
                ));
            }
        }
        let known = |r: &String| c.regions.contains(r) || (c.regions.is_empty() && r == "default");
        for (i, s) in net.segments.iter().enumerate() {
            for r in [&s.from, &s.to] {
                if !known(r) {
                    return Err(SimError::invalid(
                        format!("network.segments[{i}]"),
                        format!("region {r:?} is not listed in committee.regions"),
                    ));
                }
            }
            s.latency
                .validate(&format!("network.segments[{i}].latency"))?;
            if let Some(p) = s.loss {
                if !(0.0..=1.0).contains(&p) {
                    return Err(SimError::invalid(
                        format!("network.segments[{i}].loss"),
                        "must be a probability in [0, 1]",
                    ));
                }
            }
        }
        for (i, p) in net.partitions.iter().enumerate() {
            if p.end_s.is_some_and(|e| e < p.start_s) {
                return Err(SimError::invalid(
                    format!("network.partitions[{i}].end_s"),
                    "ends before it starts",
                ));
            }
            for s in p.a.iter().chain(&p.b) {
                crate::topology::check_selector(s, &self.committee)
                    .map_err(|r| SimError::invalid(format!("network.partitions[{i}]"), r))?;
            }
        }
        if self.signing.timeout_ms == 0 {
            return Err(SimError::invalid("signing.timeout_ms", "must be positive"));
        }
        let sg = &self.signing;
        if sg.presign_pool == 0 || sg.presign_pool > quorate_protocol::presign::MAX_OFFER {
            return Err(SimError::invalid(
                "signing.presign_pool",
                format!(
                    "must be between 1 and {}",
                    quorate_protocol::presign::MAX_OFFER
                ),
            ));
        }
        if sg.presign_lifetime_ms <= 2 * crate::sim::PRESIGN_MARGIN_MS {
            return Err(SimError::invalid(
                "signing.presign_lifetime_ms",
                format!(
                    "must exceed {} ms (twice the book's safety margin)",
                    2 * crate::sim::PRESIGN_MARGIN_MS
                ),
            ));
        }
        if sg.presign_refresh_ms == 0 {
            return Err(SimError::invalid(
                "signing.presign_refresh_ms",
                "must be positive",
            ));
        }
        if sg.roast_deadline_ms == 0 {
            return Err(SimError::invalid(
                "signing.roast_deadline_ms",
                "must be positive",
            ));
        }
        if self.max_attempts() == 0 {
            return Err(SimError::invalid(
                "signing.max_attempts",
                "must be at least 1",
            ));
        }
        let w = &self.workload;
        if !(w.rate_per_s.is_finite() && w.rate_per_s > 0.0) {
            return Err(SimError::invalid("workload.rate_per_s", "must be positive"));
        }
        for (name, v) in [
            ("workload.start_s", w.start_s),
            ("workload.duration_s", w.duration_s),
            ("workload.drain_s", w.drain_s),
            ("workload.burst_interval_s", w.burst_interval_s),
            ("workload.dkg_every_s", w.dkg_every_s),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(SimError::invalid(
                    name,
                    "must be a finite, non-negative number",
                ));
            }
        }
        if w.kind == WorkloadKind::Burst && (w.burst_size == 0 || w.burst_interval_s <= 0.0) {
            return Err(SimError::invalid(
                "workload.burst_size",
                "bursts need burst_size >= 1 and burst_interval_s > 0",
            ));
        }
        match self.cpu.model {
            CpuModel::File if self.cpu.file.is_none() => {
                return Err(SimError::invalid(
                    "cpu.file",
                    "model = \"file\" needs a file",
                ))
            }
            CpuModel::Inline if self.cpu.table.is_none() => {
                return Err(SimError::invalid(
                    "cpu.table",
                    "model = \"inline\" needs a table",
                ))
            }
            _ => {}
        }
        if let Some(s) = self.cpu.scale {
            if !(s.is_finite() && s >= 0.0) {
                return Err(SimError::invalid("cpu.scale", "must be non-negative"));
            }
        }
        for (i, f) in self.faults.iter().enumerate() {
            if f.nodes.is_empty() && f.count.is_none() {
                return Err(SimError::invalid(
                    format!("faults[{i}]"),
                    "name `nodes` or give a `count`",
                ));
            }
            for s in &f.nodes {
                crate::topology::check_selector(s, &self.committee)
                    .map_err(|r| SimError::invalid(format!("faults[{i}].nodes"), r))?;
            }
            if f.until_s.is_some_and(|u| u < f.at_s) {
                return Err(SimError::invalid(
                    format!("faults[{i}].until_s"),
                    "before at_s",
                ));
            }
        }
        if let Some(b) = &self.byzantine {
            self.validate_byzantine(b)?;
        }
        match &self.netting {
            Some(n) => n.validate(&self.committee)?,
            None if w.kind == WorkloadKind::Netting => {
                return Err(SimError::invalid(
                    "workload.kind",
                    "kind = \"netting\" needs a [netting] table",
                ))
            }
            None => {}
        }
        self.validate_reshare()?;
        if let Some(s) = &self.sweep {
            if s.values.is_empty() {
                return Err(SimError::invalid(
                    "sweep.values",
                    "needs at least one value",
                ));
            }
        }
        Ok(())
    }
}

impl Scenario {
    /// The `[reshare]` table and the workload kind go together; reshare runs model
    /// no byzantine members and no netting.
    fn validate_reshare(&self) -> Result<(), SimError> {
        let kind = self.workload.kind == WorkloadKind::Reshare;
        match &self.reshare {
            Some(r) if kind => r.validate(&self.committee)?,
            Some(_) => {
                return Err(SimError::invalid(
                    "reshare",
                    "the [reshare] table needs [workload] kind = \"reshare\"",
                ))
            }
            None if kind => {
                return Err(SimError::invalid(
                    "workload.kind",
                    "kind = \"reshare\" needs a [reshare] table",
                ))
            }
            None => return Ok(()),
        }
        if self.byzantine.is_some() {
            return Err(SimError::invalid(
                "byzantine",
                "byzantine behaviours are not modelled in reshare runs",
            ));
        }
        if self.netting.is_some() {
            return Err(SimError::invalid(
                "netting",
                "netting rounds do not run next to reshare runs",
            ));
        }
        Ok(())
    }

    /// The `[byzantine]` table against the committee.
    fn validate_byzantine(&self, b: &ByzantineSpec) -> Result<(), SimError> {
        if b.count > usize::from(self.committee.n) {
            return Err(SimError::invalid(
                "byzantine.count",
                format!("{} exceeds committee.n = {}", b.count, self.committee.n),
            ));
        }
        for s in &b.nodes {
            crate::topology::check_selector(s, &self.committee)
                .map_err(|r| SimError::invalid("byzantine.nodes", r))?;
        }
        if let Some(d) = b.delay_ms {
            if !(d.is_finite() && d >= 0.0) {
                return Err(SimError::invalid(
                    "byzantine.delay_ms",
                    "must be non-negative",
                ));
            }
        }
        Ok(())
    }
}
