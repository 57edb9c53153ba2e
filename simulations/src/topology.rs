//! Where nodes are: committee membership, regions, labels and node selectors.
//!
//! Node indices: committee `c`'s member `i` (0-based) is node `c * n + i`; the
//! coordinator is the last node. Labels are `n1`, `n2`, … (1-based) and
//! `coordinator`.

use std::ops::Range;

use crate::spec::CommitteeSpec;

/// The static layout of a run.
#[derive(Debug, Clone)]
pub struct Topology {
    /// Members per committee.
    pub n: usize,
    /// Committees.
    pub count: usize,
    /// Distinct region names in order of first appearance (`["default"]` when
    /// the scenario lists none).
    pub regions: Vec<String>,
    /// Region index of every node.
    pub node_region: Vec<usize>,
}

impl Topology {
    /// Lays out the nodes of a scenario's `committee` table.
    pub fn new(committee: &CommitteeSpec) -> Self {
        let n = usize::from(committee.n);
        let count = committee.count;
        let listed = &committee.regions;
        let mut regions: Vec<String> = Vec::new();
        for r in listed {
            if !regions.contains(r) {
                regions.push(r.clone());
            }
        }
        if regions.is_empty() {
            regions.push("default".to_string());
        }
        let region_of = |name: &String| regions.iter().position(|x| x == name).unwrap_or(0);
        let mut node_region: Vec<usize> = (0..n * count)
            .map(|i| {
                listed
                    .get((i % n) % listed.len().max(1))
                    .map_or(0, region_of)
            })
            .collect();
        let coord = committee.coordinator_region.as_ref().map_or(0, region_of);
        node_region.push(coord);
        Self {
            n,
            count,
            regions,
            node_region,
        }
    }

    /// Total nodes including the coordinator.
    pub fn len(&self) -> usize {
        self.node_region.len()
    }

    /// Never empty (there is always a coordinator).
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The coordinator's node index.
    pub fn coordinator(&self) -> usize {
        self.n * self.count
    }

    /// Node indices of committee `c`.
    pub fn members(&self, c: usize) -> Range<usize> {
        c * self.n..(c + 1) * self.n
    }

    /// Committee of a signer node.
    pub fn committee_of(&self, node: usize) -> Option<usize> {
        (node < self.coordinator()).then(|| node / self.n)
    }

    /// Human label of a node.
    pub fn label(&self, node: usize) -> String {
        if node == self.coordinator() {
            "coordinator".to_string()
        } else {
            format!("n{}", node + 1)
        }
    }

    /// Resolves a selector to node indices.
    pub fn select(&self, selector: &str) -> Result<Vec<usize>, String> {
        if selector == "coordinator" {
            return Ok(vec![self.coordinator()]);
        }
        if selector == "signers" {
            return Ok((0..self.coordinator()).collect());
        }
        if let Some(region) = selector.strip_prefix("region:") {
            let r = self
                .regions
                .iter()
                .position(|x| x == region)
                .ok_or_else(|| format!("unknown region {region:?} in selector {selector:?}"))?;
            return Ok((0..self.len())
                .filter(|i| self.node_region[*i] == r)
                .collect());
        }
        if let Some(num) = selector.strip_prefix('n') {
            if let Ok(k) = num.parse::<usize>() {
                if k >= 1 && k <= self.coordinator() {
                    return Ok(vec![k - 1]);
                }
                return Err(format!(
                    "node {selector:?} does not exist (signers are n1..n{})",
                    self.coordinator()
                ));
            }
        }
        Err(format!(
            "unknown node selector {selector:?} (use \"coordinator\", \"signers\", \"n3\" or \"region:NAME\")"
        ))
    }
}

/// Checks a selector against a scenario's committee without building anything else.
pub fn check_selector(selector: &str, committee: &CommitteeSpec) -> Result<(), String> {
    Topology::new(committee).select(selector).map(|_| ())
}
