//! What a robust signing job remembers across attempts, shared by client signing
//! jobs (`task`) and netting settlements (`netting::settle`): the nodes excluded
//! from further attempts, their refusals, and a record of every attempt.

use std::collections::BTreeSet;

use quorate_protocol::NodeId;

use crate::{error::CoordinatorError, types::Attempt};

/// Attempts, exclusions and refusals of one job.
#[derive(Debug, Default)]
pub(super) struct Retries {
    /// Every attempt, in order.
    pub(super) attempts: Vec<Attempt>,
    /// Nodes blamed or refusing: not chosen again.
    pub(super) excluded: BTreeSet<NodeId>,
    /// `(node, reason)` of every refusal.
    pub(super) refusals: Vec<(NodeId, String)>,
}

impl Retries {
    /// Records a failed attempt: its blamed nodes and the refusing node are
    /// excluded from the next.
    pub(super) fn failed(
        &mut self,
        signers: Vec<NodeId>,
        outcome: &str,
        blamed: Vec<NodeId>,
        refused: Option<(NodeId, String)>,
    ) {
        self.excluded.extend(blamed.iter().copied());
        let mut refused_list = Vec::new();
        if let Some((node, reason)) = refused {
            self.excluded.insert(node);
            self.refusals.push((node, reason.clone()));
            refused_list.push((node, reason));
        }
        self.attempts.push(Attempt {
            signers,
            outcome: outcome.into(),
            blamed,
            refused: refused_list,
        });
    }

    /// A late refusal from an earlier attempt: remembered for the next choice.
    /// True when the node was not excluded yet.
    pub(super) fn late_refusal(&mut self, node: NodeId, reason: String) -> bool {
        let new = self.excluded.insert(node);
        if new {
            self.refusals.push((node, reason));
        }
        new
    }

    /// Why the job cannot continue: refusals whose reason starts with one of
    /// `policy_prefixes` take precedence (they say what to fix), otherwise too few
    /// reachable signers.
    pub(super) fn give_up(
        &self,
        available: usize,
        needed: usize,
        policy_prefixes: &[&str],
    ) -> CoordinatorError {
        if self
            .refusals
            .iter()
            .any(|(_, r)| policy_prefixes.iter().any(|p| r.starts_with(p)))
        {
            CoordinatorError::Refused {
                refusals: self.refusals.clone(),
                attempts: self.attempts.clone(),
            }
        } else {
            CoordinatorError::NotEnoughSigners {
                available,
                needed,
                attempts: self.attempts.clone(),
            }
        }
    }
}
