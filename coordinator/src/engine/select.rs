//! Segment-aware choice of signers and DKG participants, spreading the load.
//!
//! The rule, in order: (1) as many distinct segments as possible (round-robin over
//! segments); (2) connected nodes before unconnected ones; (3) within a segment, and
//! between segments when fewer signers than segments are needed, the node with the
//! fewest signing sessions in flight, then the fewest assigned so far, then the
//! lowest node id. So a 3-of-5 key's sessions rotate over all five nodes when idle
//! and go to the least busy ones under load, while every session still spans the
//! most segments it can.

use std::collections::{BTreeMap, BTreeSet};

use quorate_protocol::NodeId;

/// A candidate with what selection looks at.
#[derive(Debug, Clone)]
pub(crate) struct Candidate {
    pub(crate) node: NodeId,
    pub(crate) segment: String,
    pub(crate) connected: bool,
    /// `(sessions in flight, sessions assigned so far)`: lower is picked first.
    pub(crate) load: (u64, u64),
}

impl Candidate {
    /// Lower is picked first; ties keep the input (roster) order.
    fn rank(&self) -> (bool, (u64, u64)) {
        (!self.connected, self.load)
    }
}

/// Picks `k` candidates by the rule above; deterministic for a given input. `None`
/// if fewer than `k`.
pub(crate) fn pick(candidates: &[Candidate], k: usize) -> Option<Vec<NodeId>> {
    if candidates.len() < k {
        return None;
    }
    let mut by_segment: BTreeMap<&str, Vec<&Candidate>> = BTreeMap::new();
    for c in candidates {
        by_segment.entry(c.segment.as_str()).or_default().push(c);
    }
    for v in by_segment.values_mut() {
        v.sort_by_key(|c| c.rank());
    }
    // Segments whose best node ranks first come first (ties: by segment name).
    let mut segments: Vec<Vec<&Candidate>> = by_segment.into_values().collect();
    segments.sort_by_key(|v| v.first().map(|c| c.rank()));
    let mut chosen = Vec::with_capacity(k);
    let mut round = 0;
    while chosen.len() < k {
        let mut progressed = false;
        for seg in &segments {
            if chosen.len() == k {
                break;
            }
            if let Some(c) = seg.get(round) {
                chosen.push(c.node);
                progressed = true;
            }
        }
        if !progressed {
            break;
        }
        round += 1;
    }
    // Prefer connected overall: swap an unconnected pick for a connected leftover.
    let picked: BTreeSet<NodeId> = chosen.iter().copied().collect();
    let mut spare: Vec<&Candidate> = candidates
        .iter()
        .filter(|c| c.connected && !picked.contains(&c.node))
        .collect();
    spare.sort_by_key(|c| std::cmp::Reverse(c.rank()));
    for slot in chosen.iter_mut() {
        let unconnected = candidates.iter().any(|c| c.node == *slot && !c.connected);
        if unconnected {
            if let Some(c) = spare.pop() {
                *slot = c.node;
            }
        }
    }
    (chosen.len() == k).then_some(chosen)
}

/// Number of distinct segments among `nodes`.
pub(crate) fn segments_spanned(candidates: &[Candidate], nodes: &[NodeId]) -> usize {
    candidates
        .iter()
        .filter(|c| nodes.contains(&c.node))
        .map(|c| c.segment.as_str())
        .collect::<BTreeSet<_>>()
        .len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(i: u8, seg: &str, connected: bool) -> Candidate {
        Candidate {
            node: NodeId([i; 32]),
            segment: seg.into(),
            connected,
            load: (0, 0),
        }
    }

    #[test]
    fn spreads_across_segments_and_prefers_connected() {
        let c = vec![
            cand(1, "a", true),
            cand(2, "a", true),
            cand(3, "b", true),
            cand(4, "b", false),
            cand(5, "c", true),
        ];
        let p = pick(&c, 3).expect("three");
        assert_eq!(segments_spanned(&c, &p), 3);
        assert!(
            !p.contains(&NodeId([4; 32])),
            "unconnected node avoided: {p:?}"
        );
        assert!(pick(&c, 6).is_none());
        assert_eq!(pick(&c, 5).expect("all").len(), 5);
    }

    /// 3-of-5 over three segments (2 + 2 + 1 nodes), sessions assigned one after the
    /// other: every node gets its share and every session spans all three segments.
    #[test]
    fn sessions_rotate_over_every_node_and_keep_spanning_segments() {
        let mut c = vec![
            cand(1, "a", true),
            cand(2, "b", true),
            cand(3, "c", true),
            cand(4, "a", true),
            cand(5, "b", true),
        ];
        let mut count: BTreeMap<NodeId, u64> = BTreeMap::new();
        for _ in 0..100 {
            let p = pick(&c, 3).expect("three");
            assert_eq!(segments_spanned(&c, &p), 3, "{p:?}");
            for n in &p {
                *count.entry(*n).or_default() += 1;
                if let Some(x) = c.iter_mut().find(|x| x.node == *n) {
                    x.load.1 += 1;
                }
            }
        }
        // Node 3 is alone in segment c: in every session. The other four share the
        // remaining 200 places evenly.
        assert_eq!(count[&NodeId([3; 32])], 100);
        for i in [1u8, 2, 4, 5] {
            assert_eq!(count[&NodeId([i; 32])], 50, "{count:?}");
        }
    }

    #[test]
    fn the_least_busy_node_of_a_segment_is_picked() {
        let mut c = vec![cand(1, "a", true), cand(2, "a", true), cand(3, "b", true)];
        c[0].load = (5, 10);
        c[1].load = (1, 50);
        let p = pick(&c, 2).expect("two");
        assert!(
            p.contains(&NodeId([2; 32])) && p.contains(&NodeId([3; 32])),
            "{p:?}"
        );
    }
}
