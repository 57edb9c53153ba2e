//! How busy each signer node is, as this coordinator sees it: signing sessions in
//! flight (bounded per node, so a node is never asked for more sessions than it
//! accepts) and sessions assigned so far (to rotate over idle nodes). Mirrored into
//! the shared counters `/metrics` reads.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use quorate_protocol::NodeId;

/// Most signing sessions this coordinator keeps in flight on one node; below a
/// node's default `limits.max_sessions` (64) so DKGs and netting keep room.
pub(crate) const MAX_SESSIONS_PER_NODE: u64 = 48;

/// Per-node session counts shared with the API (`/metrics`), by roster name.
pub(crate) type SharedLoad = Arc<Mutex<BTreeMap<String, NodeSessions>>>;

/// One node's signing sessions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeSessions {
    /// Sessions started on the node since the coordinator started.
    pub total: u64,
    /// Sessions in flight now.
    pub active: u64,
}

/// The engine's view of node load.
#[derive(Debug, Default)]
pub(crate) struct Load {
    by_node: BTreeMap<NodeId, NodeSessions>,
    names: BTreeMap<NodeId, String>,
    shared: SharedLoad,
}

impl Load {
    pub(crate) fn new(names: BTreeMap<NodeId, String>, shared: SharedLoad) -> Self {
        Self {
            by_node: BTreeMap::new(),
            names,
            shared,
        }
    }

    /// `(in flight, assigned so far)` of `node`, selection's load key.
    pub(crate) fn of(&self, node: &NodeId) -> (u64, u64) {
        let s = self.by_node.get(node).copied().unwrap_or_default();
        (s.active, s.total)
    }

    /// Whether `node` can take another session.
    pub(crate) fn has_room(&self, node: &NodeId) -> bool {
        self.of(node).0 < MAX_SESSIONS_PER_NODE
    }

    /// A session started on each of `nodes`.
    pub(crate) fn started(&mut self, nodes: &[NodeId]) {
        for n in nodes {
            let s = self.by_node.entry(*n).or_default();
            s.active += 1;
            s.total += 1;
        }
        self.publish(nodes);
    }

    /// A session of each of `nodes` ended.
    pub(crate) fn ended(&mut self, nodes: &[NodeId]) {
        for n in nodes {
            if let Some(s) = self.by_node.get_mut(n) {
                s.active = s.active.saturating_sub(1);
            }
        }
        self.publish(nodes);
    }

    fn publish(&self, nodes: &[NodeId]) {
        let mut shared = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        for n in nodes {
            let name = self.names.get(n).cloned().unwrap_or_else(|| n.to_string());
            shared.insert(name, self.by_node.get(n).copied().unwrap_or_default());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_counted_per_node_and_published_by_name() {
        let (a, b) = (NodeId([1; 32]), NodeId([2; 32]));
        let shared = SharedLoad::default();
        let names = [(a, "n1".to_string()), (b, "n2".to_string())].into();
        let mut load = Load::new(names, shared.clone());
        load.started(&[a, b]);
        load.started(&[a]);
        load.ended(&[a]);
        assert_eq!(load.of(&a), (1, 2));
        assert_eq!(load.of(&b), (1, 1));
        let s = shared.lock().expect("lock");
        assert_eq!(
            s["n1"],
            NodeSessions {
                total: 2,
                active: 1
            }
        );
        assert_eq!(
            s["n2"],
            NodeSessions {
                total: 1,
                active: 1
            }
        );
    }

    #[test]
    fn a_node_at_the_cap_has_no_room() {
        let a = NodeId([1; 32]);
        let mut load = Load::default();
        for _ in 0..MAX_SESSIONS_PER_NODE {
            assert!(load.has_room(&a));
            load.started(&[a]);
        }
        assert!(!load.has_room(&a));
        load.ended(&[a]);
        assert!(load.has_room(&a));
    }
}
