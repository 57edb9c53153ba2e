//! Segment-aware choice of signers and DKG participants.

use std::collections::{BTreeMap, BTreeSet};

use quorate_protocol::NodeId;

/// A candidate with what selection looks at.
#[derive(Debug, Clone)]
pub(crate) struct Candidate {
    pub(crate) node: NodeId,
    pub(crate) segment: String,
    pub(crate) connected: bool,
}

/// Picks `k` candidates, spreading over as many segments as possible and preferring
/// connected nodes; deterministic for a given input order. `None` if fewer than `k`.
pub(crate) fn pick(candidates: &[Candidate], k: usize) -> Option<Vec<NodeId>> {
    if candidates.len() < k {
        return None;
    }
    // Group by segment, connected first within each segment.
    let mut by_segment: BTreeMap<&str, Vec<&Candidate>> = BTreeMap::new();
    for c in candidates {
        by_segment.entry(c.segment.as_str()).or_default().push(c);
    }
    for v in by_segment.values_mut() {
        v.sort_by_key(|c| !c.connected);
    }
    // Segments with a connected node first.
    let mut segments: Vec<Vec<&Candidate>> = by_segment.into_values().collect();
    segments.sort_by_key(|v| !v.first().is_some_and(|c| c.connected));
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
}
