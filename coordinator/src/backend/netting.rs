//! Netting in the in-memory [`LocalBackend`]: every committee member is a local
//! identity running the real `protocol::netting::session::NodeRound`, so the whole
//! HTTP flow (announce, bundles, close, outputs, limit checks, settlement signing)
//! runs without a network. **Tests and the in-process devnet only**, like the rest
//! of the backend.

mod limits;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{SystemTime, UNIX_EPOCH},
};

use quorate_protocol::{
    local::run_signing,
    netting::{session::NodeRound, InputBundle, RoundId, RoundSpec},
    NodeId, NodeIdentity, SignTarget,
};
use rand_core::OsRng;

use super::{LocalBackend, Shares};
use crate::{
    error::CoordinatorError,
    netting::{
        bundle_reason, inputs_held_by_all, BundleOutcome, CloseOutcome, NodeAck, RoundOpen,
        SettleOutcome, SettleRequest, MAX_LIVE_ROUNDS,
    },
    types::Attempt,
};

/// One round as the local nodes hold it.
struct LocalRound {
    spec: RoundSpec,
    threshold: usize,
    /// Committee order: each member's identity, key share and round state.
    nodes: Vec<(Arc<NodeIdentity>, NodeRound)>,
    shares: Shares,
    digests: Vec<Option<[u8; 32]>>,
    held: Vec<Vec<NodeId>>,
    closed: bool,
}

/// The local nodes' rounds.
#[derive(Clone, Default)]
pub(super) struct LocalRounds(Arc<Mutex<HashMap<RoundId, LocalRound>>>);

impl LocalRounds {
    fn with<T>(
        &self,
        round: &RoundId,
        f: impl FnOnce(&mut LocalRound) -> Result<T, CoordinatorError>,
    ) -> Result<T, CoordinatorError> {
        let mut map = self
            .0
            .lock()
            .map_err(|_| CoordinatorError::Storage("local netting rounds poisoned".into()))?;
        let r = map.get_mut(round).ok_or_else(|| {
            CoordinatorError::UnknownRound(format!("round {round} is not live in this backend"))
        })?;
        f(r)
    }
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, CoordinatorError> + Send + 'static,
) -> Result<T, CoordinatorError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| CoordinatorError::Transport(format!("netting task failed: {e}")))?
}

impl LocalBackend {
    /// What a node checks of an announcement that this backend can: the
    /// authorisation, that the nodes hold the key, and that the committee is the
    /// key's members with their sealing keys.
    fn local_members(&self, open: &RoundOpen) -> Result<Shares, CoordinatorError> {
        open.spec
            .verify_authorization(&open.authorization)
            .map_err(|e| CoordinatorError::BadClientSignature(e.to_string()))?;
        let shares = self.shares(&open.spec.key)?;
        let members = open.spec.committee.members();
        if members.len() != shares.len() {
            return Err(CoordinatorError::InvalidRound(format!(
                "the committee has {} members, key {} has {}",
                members.len(),
                open.spec.key,
                shares.len()
            )));
        }
        members
            .iter()
            .map(|m| {
                shares
                    .iter()
                    .find(|(id, share)| {
                        id.node_id() == m.node
                            && id.public().seal_key == m.seal_key
                            && share.public.members.get(&m.node) == Some(&m.index)
                    })
                    .cloned()
                    .ok_or_else(|| {
                        CoordinatorError::InvalidRound(format!(
                            "committee member {} (index {}) does not hold key {} with that \
                             index and seal_key",
                            m.node, m.index, open.spec.key
                        ))
                    })
            })
            .collect()
    }

    pub(super) fn local_open(&self, open: RoundOpen) -> Result<Vec<NodeAck>, CoordinatorError> {
        let shares = self.local_members(&open)?;
        let acks: Vec<NodeAck> = shares
            .iter()
            .map(|(id, _)| NodeAck::accepted(id.node_id()))
            .collect();
        let mut map = self
            .rounds
            .0
            .lock()
            .map_err(|_| CoordinatorError::Storage("local netting rounds poisoned".into()))?;
        if let Some(r) = map.get(&open.spec.id) {
            return if r.spec == open.spec {
                Ok(acks)
            } else {
                Err(CoordinatorError::RoundConflict(format!(
                    "round {} exists with another definition",
                    open.spec.id
                )))
            };
        }
        if map.len() >= MAX_LIVE_ROUNDS {
            return Err(CoordinatorError::Busy(format!(
                "{MAX_LIVE_ROUNDS} netting rounds are live"
            )));
        }
        let nodes = shares
            .iter()
            .map(|(id, _)| {
                NodeRound::new(open.spec.clone())
                    .map(|r| (id.clone(), r))
                    .map_err(|e| CoordinatorError::InvalidRound(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let n = open.spec.parties.len();
        map.insert(
            open.spec.id,
            LocalRound {
                threshold: usize::from(open.key.public.threshold),
                spec: open.spec,
                nodes,
                shares,
                digests: vec![None; n],
                held: vec![Vec::new(); n],
                closed: false,
            },
        );
        Ok(acks)
    }

    pub(super) async fn local_bundle(
        &self,
        round: RoundId,
        bundle: InputBundle,
    ) -> Result<BundleOutcome, CoordinatorError> {
        let rounds = self.rounds.clone();
        blocking(move || {
            rounds.with(&round, |r| {
                let header = &bundle.header;
                let p = header.party as usize;
                if p >= r.spec.parties.len() || bundle.boxes.len() != r.nodes.len() {
                    return Err(CoordinatorError::InvalidRound(
                        "bundle does not fit the round".into(),
                    ));
                }
                let digest = header.digest();
                let now = unix_secs();
                let mut acks = Vec::with_capacity(r.nodes.len());
                for ((id, node), sealed) in r.nodes.iter_mut().zip(&bundle.boxes) {
                    let ack = match node.accept_bundle(now, id, header, sealed) {
                        Ok(_) => NodeAck::accepted(id.node_id()),
                        Err(e) => NodeAck::rejected(id.node_id(), bundle_reason(&e), e.to_string()),
                    };
                    acks.push(ack);
                }
                for a in acks.iter().filter(|a| a.is_accepted()) {
                    if r.digests[p].is_none() {
                        r.digests[p] = Some(digest);
                    }
                    if r.digests[p] == Some(digest) && !r.held[p].contains(&a.node) {
                        r.held[p].push(a.node);
                    }
                }
                Ok(BundleOutcome {
                    party: header.party,
                    digest,
                    acks,
                })
            })
        })
        .await
    }

    pub(super) async fn local_close(
        &self,
        round: RoundId,
    ) -> Result<CloseOutcome, CoordinatorError> {
        let rounds = self.rounds.clone();
        blocking(move || {
            rounds.with(&round, |r| {
                if r.closed {
                    return Err(CoordinatorError::RoundConflict(format!(
                        "round {round} is already closed"
                    )));
                }
                r.closed = true;
                let members: Vec<NodeId> = r.nodes.iter().map(|(id, _)| id.node_id()).collect();
                let inputs = inputs_held_by_all(&r.digests, &r.held, &members);
                let mut out = CloseOutcome {
                    inputs: inputs.clone(),
                    parties: vec![Vec::new(); r.spec.parties.len()],
                    ..CloseOutcome::default()
                };
                let mut public = Vec::new();
                for (id, node) in &mut r.nodes {
                    match node.close(id, &inputs) {
                        Ok(o) => {
                            out.acks.push(NodeAck::accepted(id.node_id()));
                            public.push(o.public);
                            for po in o.parties {
                                if let Some(v) = out.parties.get_mut(po.party as usize) {
                                    v.push(po);
                                }
                            }
                        }
                        Err(e) => out.acks.push(NodeAck::rejected(
                            id.node_id(),
                            "netting:closed",
                            e.to_string(),
                        )),
                    }
                }
                if r.spec.limits.is_some() {
                    // Nodes release the public shares of the nets only after a
                    // covered verdict.
                    let limits = limits::run(&r.spec, &r.nodes);
                    if limits.verdict(&r.spec).is_ok_and(|v| v.covered) {
                        out.public = public;
                    }
                    out.limits = Some(limits);
                } else {
                    out.public = public;
                }
                Ok(out)
            })
        })
        .await
    }

    pub(super) async fn local_settle(
        &self,
        request: SettleRequest,
    ) -> Result<SettleOutcome, CoordinatorError> {
        let rounds = self.rounds.clone();
        let coordinator = self.coordinator.clone();
        blocking(move || {
            let chosen = rounds.with(&request.round, |r| {
                if !r.closed {
                    return Err(CoordinatorError::RoundConflict(
                        "round is not closed".into(),
                    ));
                }
                // What every signer does before contributing: rebuild the batch from
                // the views and sign only its message.
                let mut refusals = Vec::new();
                for (id, node) in r.nodes.iter().take(r.threshold) {
                    match node.settlement(&request.views, &mut OsRng) {
                        Ok((batch, _)) if batch.message() == request.message => {}
                        Ok(_) => {
                            refusals.push((id.node_id(), "netting:settlement_mismatch".into()))
                        }
                        Err(e) => refusals.push((id.node_id(), format!("netting:settlement: {e}"))),
                    }
                }
                if !refusals.is_empty() {
                    return Err(CoordinatorError::Refused {
                        refusals,
                        attempts: Vec::new(),
                    });
                }
                Ok(r.shares
                    .iter()
                    .take(r.threshold)
                    .cloned()
                    .collect::<Shares>())
            })?;
            let signers: Vec<NodeId> = chosen.iter().map(|(id, _)| id.node_id()).collect();
            let target = SignTarget {
                message: request.message.to_vec(),
                tweak: None,
            };
            let signature = run_signing(&coordinator, chosen, target, &mut OsRng)
                .map_err(|e| CoordinatorError::Transport(format!("settlement signing: {e}")))?;
            // The round's work is over: forget it.
            if let Ok(mut map) = rounds.0.lock() {
                map.remove(&request.round);
            }
            Ok(SettleOutcome {
                signature,
                attempts: vec![Attempt {
                    signers,
                    outcome: "signed".into(),
                    blamed: Vec::new(),
                    refused: Vec::new(),
                }],
            })
        })
        .await
    }
}
