//! Prometheus metrics and threat signals, served on the local admin address.

use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

/// Label: one string.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Label {
    /// Value.
    pub label: String,
}

/// Labels of session counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SessionLabels {
    /// `dkg` or `sign`.
    pub kind: String,
    /// `done`, `failed`, `timeout`.
    pub outcome: String,
}

/// Labels of traffic counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TrafficLabels {
    /// Protocol family.
    pub family: String,
    /// `in` or `out`.
    pub direction: String,
}

/// All node metrics. Cheap to clone (shared atomics).
#[derive(Clone)]
pub struct Metrics {
    /// Sessions by kind and outcome.
    pub sessions: Family<SessionLabels, Counter>,
    /// Sessions running now.
    pub active_sessions: Gauge,
    /// Session duration by kind.
    pub session_seconds: Family<Label, Histogram>,
    /// Messages by family and direction.
    pub messages: Family<TrafficLabels, Counter>,
    /// Bytes by family and direction.
    pub bytes: Family<TrafficLabels, Counter>,
    /// Policy refusals by rule.
    pub policy_refusals: Family<Label, Counter>,
    /// Dropped inbound messages by reason.
    pub rejected_messages: Family<Label, Counter>,
    /// Connections refused because the peer is not in the roster.
    pub rejected_peers: Counter,
    /// Provably invalid contributions, by peer.
    pub invalid_shares: Family<Label, Counter>,
    /// Equivocations detected, by peer.
    pub equivocations: Family<Label, Counter>,
    /// Settlement culprits: committee nodes whose signed public shares failed
    /// against the commitments when this node rebuilt a settlement batch, by node.
    pub settlement_culprits: Family<Label, Counter>,
    /// Presigned nonces held now (all pools).
    pub presign_held: Gauge,
    /// Presigned nonces by what became of them (`generated`, `used`, `expired`,
    /// `refused` requests naming nonces not held, `discarded` with their pool).
    pub presign: Family<Label, Counter>,
    /// Share generation held, per key (0: the DKG's; +1 per refresh or reshare).
    pub key_generation: Family<Label, Gauge>,
    /// Unix seconds of the last finished refresh or reshare, per key.
    pub key_last_lifecycle: Family<Label, Gauge>,
    /// Committee size of the generation held, per key.
    pub key_participants: Family<Label, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            sessions: Family::default(),
            active_sessions: Gauge::default(),
            session_seconds: Family::new_with_constructor(|| {
                Histogram::new([
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                ])
            }),
            messages: Family::default(),
            bytes: Family::default(),
            policy_refusals: Family::default(),
            rejected_messages: Family::default(),
            rejected_peers: Counter::default(),
            invalid_shares: Family::default(),
            equivocations: Family::default(),
            settlement_culprits: Family::default(),
            presign_held: Gauge::default(),
            presign: Family::default(),
            key_generation: Family::default(),
            key_last_lifecycle: Family::default(),
            key_participants: Family::default(),
        }
    }
}

impl Metrics {
    /// Renders the Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut r = Registry::with_prefix("quorate");
        r.register(
            "sessions",
            "Protocol sessions by kind and outcome",
            self.sessions.clone(),
        );
        r.register(
            "active_sessions",
            "Sessions running now",
            self.active_sessions.clone(),
        );
        r.register(
            "session_seconds",
            "Session duration",
            self.session_seconds.clone(),
        );
        r.register("messages", "Protocol messages", self.messages.clone());
        r.register("bytes", "Protocol bytes", self.bytes.clone());
        r.register(
            "policy_refusals",
            "Requests refused by policy, by rule",
            self.policy_refusals.clone(),
        );
        r.register(
            "rejected_messages",
            "Inbound messages dropped, by reason",
            self.rejected_messages.clone(),
        );
        r.register(
            "rejected_peers",
            "Connections refused: peer not in roster",
            self.rejected_peers.clone(),
        );
        r.register(
            "invalid_shares",
            "Provably invalid contributions, by peer",
            self.invalid_shares.clone(),
        );
        r.register(
            "equivocations",
            "Equivocations detected, by peer",
            self.equivocations.clone(),
        );
        r.register(
            "settlement_culprits",
            "Settlement culprits (signed public shares that fail), by node",
            self.settlement_culprits.clone(),
        );
        r.register(
            "presign_held",
            "Presigned nonces held in memory now (all coordinators and keys)",
            self.presign_held.clone(),
        );
        r.register(
            "presign_nonces",
            "Presigned nonces: generated, used, expired, discarded (pool dropped on \
             disconnect), refused (requests naming nonces not held)",
            self.presign.clone(),
        );
        r.register(
            "key_generation",
            "Share generation held, by key (0 from the DKG, +1 per refresh or reshare)",
            self.key_generation.clone(),
        );
        r.register(
            "key_last_lifecycle_timestamp_seconds",
            "Unix time of the key's last finished refresh or reshare",
            self.key_last_lifecycle.clone(),
        );
        r.register(
            "key_participants",
            "Committee size of the key generation held",
            self.key_participants.clone(),
        );
        let mut out = String::new();
        // Encoding into a String cannot fail.
        let _ = encode(&mut out, &r);
        out
    }

    /// Sets a key's lifecycle gauges.
    pub fn key_state(
        &self,
        key: &str,
        generation: u64,
        participants: usize,
        finished_unix: Option<u64>,
    ) {
        let l = Label { label: key.into() };
        self.key_generation
            .get_or_create(&l)
            .set(i64::try_from(generation).unwrap_or(i64::MAX));
        self.key_participants
            .get_or_create(&l)
            .set(i64::try_from(participants).unwrap_or(i64::MAX));
        if let Some(t) = finished_unix {
            self.key_last_lifecycle
                .get_or_create(&l)
                .set(i64::try_from(t).unwrap_or(i64::MAX));
        }
    }

    /// Counts one dropped message.
    pub fn reject(&self, reason: &str) {
        self.rejected_messages
            .get_or_create(&Label {
                label: reason.into(),
            })
            .inc();
    }

    /// Counts traffic.
    pub fn traffic(&self, family: &str, direction: &str, bytes: usize) {
        let l = TrafficLabels {
            family: family.into(),
            direction: direction.into(),
        };
        self.messages.get_or_create(&l).inc();
        self.bytes.get_or_create(&l).inc_by(bytes as u64);
    }
}
