//! Prometheus metrics of the HTTP API.

use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

/// Labels of `quorate_coordinator_http_requests`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    pub(crate) method: String,
    pub(crate) route: String,
    pub(crate) status: u16,
}

/// Labels of `quorate_coordinator_jobs`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct JobLabels {
    pub(crate) outcome: String,
}

/// Labels of `quorate_coordinator_client_rejections`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct RejectLabels {
    pub(crate) reason: String,
}

/// Labels of the per-node signing session metrics.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct NodeLabels {
    pub(crate) node: String,
}

/// The API's metrics.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    pub(crate) requests: Family<RequestLabels, Counter>,
    pub(crate) jobs: Family<JobLabels, Counter>,
    pub(crate) rejections: Family<RejectLabels, Counter>,
    pub(crate) pending: Gauge,
    pub(crate) signing_seconds: Histogram,
    pub(crate) dkg_seconds: Histogram,
    /// Mirrors the backend's count of refused relay frames (synced on scrape).
    pub(crate) relays_dropped: Counter,
    /// Signing sessions started per signer node (synced on scrape).
    pub(crate) signer_sessions: Family<NodeLabels, Counter>,
    /// Signing sessions in flight per signer node (synced on scrape).
    pub(crate) signer_sessions_active: Family<NodeLabels, Gauge>,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("quorate_coordinator");
        let requests = Family::<RequestLabels, Counter>::default();
        let jobs = Family::<JobLabels, Counter>::default();
        let rejections = Family::<RejectLabels, Counter>::default();
        let pending = Gauge::default();
        let buckets = [
            0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
        ];
        let signing_seconds = Histogram::new(buckets);
        let dkg_seconds = Histogram::new(buckets);
        let relays_dropped = Counter::default();
        registry.register(
            "http_requests",
            "HTTP requests by method, route and status",
            requests.clone(),
        );
        registry.register("jobs", "Signing jobs finished, by outcome", jobs.clone());
        registry.register(
            "client_rejections",
            "Signature requests rejected before reaching nodes, by reason",
            rejections.clone(),
        );
        registry.register("pending_jobs", "Signing jobs running", pending.clone());
        registry.register(
            "signing_seconds",
            "Time from accepting a signing job to its end",
            signing_seconds.clone(),
        );
        registry.register(
            "dkg_seconds",
            "Time to run a key generation",
            dkg_seconds.clone(),
        );
        registry.register(
            "relays_dropped",
            "Relay frames refused: no live session of this coordinator, or sender or \
             recipient not in its committee",
            relays_dropped.clone(),
        );
        let signer_sessions = Family::<NodeLabels, Counter>::default();
        let signer_sessions_active = Family::<NodeLabels, Gauge>::default();
        registry.register(
            "signer_sessions",
            "Signing sessions started per signer node (roster name): selection spreads \
             them over every eligible node",
            signer_sessions.clone(),
        );
        registry.register(
            "signer_sessions_active",
            "Signing sessions in flight per signer node (roster name)",
            signer_sessions_active.clone(),
        );
        Self {
            registry,
            relays_dropped,
            signer_sessions,
            signer_sessions_active,
            requests,
            jobs,
            rejections,
            pending,
            signing_seconds,
            dkg_seconds,
        }
    }

    pub(crate) fn reject(&self, reason: &str) {
        self.rejections
            .get_or_create(&RejectLabels {
                reason: reason.into(),
            })
            .inc();
    }

    /// Brings `relays_dropped` up to the backend's count.
    pub(crate) fn sync_relays_dropped(&self, total: u64) {
        let seen = self.relays_dropped.get();
        if total > seen {
            self.relays_dropped.inc_by(total - seen);
        }
    }

    /// Brings the per-node session metrics up to the backend's counts.
    pub(crate) fn sync_signer_sessions(&self, nodes: &[(String, crate::engine::NodeSessions)]) {
        for (node, s) in nodes {
            let labels = NodeLabels { node: node.clone() };
            let c = self.signer_sessions.get_or_create(&labels);
            let seen = c.get();
            if s.total > seen {
                c.inc_by(s.total - seen);
            }
            self.signer_sessions_active
                .get_or_create(&labels)
                .set(i64::try_from(s.active).unwrap_or(i64::MAX));
        }
    }

    pub(crate) fn encode(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signer_sessions_are_exported_per_node() {
        let m = Metrics::new();
        let s = |total, active| crate::engine::NodeSessions { total, active };
        m.sync_signer_sessions(&[("node1".into(), s(5, 2)), ("node2".into(), s(3, 0))]);
        m.sync_signer_sessions(&[("node1".into(), s(9, 1))]);
        let text = m.encode();
        assert!(
            text.contains("quorate_coordinator_signer_sessions_total{node=\"node1\"} 9"),
            "{text}"
        );
        assert!(
            text.contains("quorate_coordinator_signer_sessions_total{node=\"node2\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("quorate_coordinator_signer_sessions_active{node=\"node1\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn relays_dropped_follows_the_backend_count() {
        let m = Metrics::new();
        assert!(m
            .encode()
            .contains("quorate_coordinator_relays_dropped_total 0"));
        m.sync_relays_dropped(3);
        assert!(m
            .encode()
            .contains("quorate_coordinator_relays_dropped_total 3"));
        // Never goes back, and catches up in one step.
        m.sync_relays_dropped(2);
        m.sync_relays_dropped(7);
        assert!(
            m.encode()
                .contains("quorate_coordinator_relays_dropped_total 7"),
            "{}",
            m.encode()
        );
    }
}
