//! A node's state for one round, driven by the daemon: accept bundles until the
//! cut-off, compute and sign outputs on close, and build the settlement batch from
//! every node's verified public openings. No I/O and no clock: the caller passes
//! the time and persists what [`NodeRound::accept_bundle`] returns.

use curve25519_dalek::RistrettoPoint;
use rand_core::CryptoRngCore;

use super::{
    bundle::BundleHeader,
    open::{self, NodeOutputs, PublicOutputs},
    outputs,
    round::RoundSpec,
    settlement::SettlementBatch,
    verify::{self, Accepted},
};
use crate::{error::ProtocolError, identity::NodeIdentity, seal::SealedBox};

/// What a bundle submission did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admitted {
    /// First bundle of this party: verified and kept.
    New([u8; 32]),
    /// The same bundle again (a retry): nothing changes.
    Duplicate([u8; 32]),
}

/// One node's view of one round.
#[derive(Debug)]
pub struct NodeRound {
    spec: RoundSpec,
    accepted: Vec<Option<Accepted>>,
    closed: Option<(Vec<bool>, [u8; 32])>,
}

impl NodeRound {
    /// Starts a round after validating its definition.
    pub fn new(spec: RoundSpec) -> Result<Self, ProtocolError> {
        spec.validate()?;
        let n = spec.parties.len();
        Ok(Self {
            spec,
            accepted: (0..n).map(|_| None).collect(),
            closed: None,
        })
    }

    /// The definition.
    pub fn spec(&self) -> &RoundSpec {
        &self.spec
    }

    /// Verifies and keeps a party's bundle. A second, different bundle from the
    /// same party is refused naming it; the same bundle again is a no-op; a bundle
    /// arriving after the cut-off or after close is refused.
    ///
    /// # Security
    /// Opens the node's shares of the party's secret inputs (kept in zeroizing memory).
    pub fn accept_bundle(
        &mut self,
        now_unix: u64,
        identity: &NodeIdentity,
        header: &BundleHeader,
        sealed: &SealedBox,
    ) -> Result<Admitted, ProtocolError> {
        let name = verify::party_name(&self.spec, header.party);
        if let Some(Some(prev)) = self.accepted.get(header.party as usize) {
            return if prev.digest == header.digest() {
                Ok(Admitted::Duplicate(prev.digest))
            } else {
                Err(ProtocolError::BadBundle {
                    party: name,
                    reason: "a second, different bundle for this round".into(),
                })
            };
        }
        if self.closed.is_some() || now_unix > self.spec.cutoff {
            return Err(ProtocolError::LateBundle {
                party: name,
                signed_at: now_unix,
                cutoff: self.spec.cutoff,
            });
        }
        let acc = verify::accept(&self.spec, identity, header, sealed)?;
        let digest = acc.digest;
        self.accepted[header.party as usize] = Some(acc);
        Ok(Admitted::New(digest))
    }

    /// Bundle digests held, per party.
    pub fn held(&self) -> Vec<Option<[u8; 32]>> {
        self.accepted
            .iter()
            .map(|a| a.as_ref().map(|a| a.digest))
            .collect()
    }

    /// Closes the round on the inputs the coordinator lists (`expected[p]`: the
    /// bundle digest it saw from party `p`, if any) and returns this node's signed
    /// outputs. Refuses when this node holds other bundles than listed, naming the
    /// first party that differs, so every node computes on the same inputs.
    pub fn close(
        &mut self,
        identity: &NodeIdentity,
        expected: &[Option<[u8; 32]>],
    ) -> Result<NodeOutputs, ProtocolError> {
        let held = self.held();
        if expected.len() != held.len() {
            return Err(ProtocolError::NettingInput(
                "close lists another number of parties".into(),
            ));
        }
        // A bundle listed `None` is left out even if this node holds it (another
        // node refused or never got it); one listed but not held, or held with
        // another digest, refuses the close.
        if let Some(p) = (0..held.len()).find(|&p| expected[p].is_some() && held[p] != expected[p])
        {
            return Err(ProtocolError::NettingInput(format!(
                "close lists other inputs for party {:?} than this node holds",
                self.spec.parties[p].name
            )));
        }
        for (p, e) in expected.iter().enumerate() {
            if e.is_none() {
                self.accepted[p] = None;
            }
        }
        let refs: Vec<Option<&Accepted>> = self.accepted.iter().map(Option::as_ref).collect();
        // Sealing randomness is derived from the identity and the inputs, so a
        // repeated close re-sends identical messages.
        let out = NodeOutputs::produce(&self.spec, identity, &refs)?;
        self.closed = Some((
            refs.iter().map(Option::is_some).collect(),
            out.public.inputs_digest,
        ));
        Ok(out)
    }

    /// After close: which parties took part and the inputs digest.
    pub fn closed(&self) -> Option<(&[bool], [u8; 32])> {
        self.closed.as_ref().map(|(p, d)| (p.as_slice(), *d))
    }

    /// This node's verified shares per party (`None`: no bundle, or left out).
    pub fn shares(&self) -> Vec<Option<&verify::ShareVector>> {
        self.accepted
            .iter()
            .map(|a| a.as_ref().map(|a| &a.shares))
            .collect()
    }

    /// Verifies the nodes' public openings, opens the multilateral nets and builds
    /// the settlement batch (conservation checked). Names nodes whose shares fail.
    pub fn settlement(
        &self,
        views: &[PublicOutputs],
        rng: &mut impl CryptoRngCore,
    ) -> Result<(SettlementBatch, Vec<crate::NodeId>), ProtocolError> {
        let (participants, inputs) = self
            .closed
            .clone()
            .ok_or(ProtocolError::InvalidState("settlement before close"))?;
        let nets: Vec<Option<&[RistrettoPoint]>> = self
            .accepted
            .iter()
            .map(|a| a.as_ref().map(|a| a.nets.as_slice()))
            .collect();
        settle(&self.spec, &participants, inputs, &nets, views, rng)
    }
}

/// Verifies public openings against the parties' net commitments (`nets[p]`, from
/// [`verify::net_points`]) and builds the batch; used by nodes and by anyone
/// holding the headers.
pub fn settle(
    spec: &RoundSpec,
    participants: &[bool],
    inputs: [u8; 32],
    nets: &[Option<&[RistrettoPoint]>],
    views: &[PublicOutputs],
    rng: &mut impl CryptoRngCore,
) -> Result<(SettlementBatch, Vec<crate::NodeId>), ProtocolError> {
    // Views that are not validly signed by a committee member for this round
    // prove nothing and blame nobody: they are ignored. A validly signed view of
    // other inputs shows the coordinator closed the round differently at different
    // nodes: refused, naming that node. A quorum of more than half the committee
    // (and at least t) must have computed on these inputs, so two disjoint groups
    // of nodes cannot each sign a different batch for one round.
    let mut valid: Vec<PublicOutputs> = Vec::new();
    for v in views {
        if v.check_signed(spec).is_err() {
            continue;
        }
        if v.inputs_digest != inputs {
            return Err(ProtocolError::InputsDiffer { node: v.node });
        }
        if !valid.iter().any(|w| w.node == v.node) {
            valid.push(v.clone());
        }
    }
    let quorum = usize::from(spec.threshold).max(spec.committee.len() / 2 + 1);
    if valid.len() < quorum {
        return Err(ProtocolError::OpeningFailed {
            reason: format!(
                "{} nodes' outputs for these inputs, a settlement needs {quorum} (more than half the committee and at least t)",
                valid.len()
            ),
            culprits: Vec::new(),
        });
    }
    // Each public output is checked against its net commitment directly: a
    // definition with one term, index = the asset, over the `M` vector.
    let defs: Vec<outputs::OutputDef> = outputs::public_outputs(spec, participants)
        .into_iter()
        .map(|d| {
            let asset = match d.kind {
                outputs::OutputKind::Multilateral { asset } => asset,
                _ => 0,
            };
            outputs::OutputDef {
                terms: vec![outputs::Term {
                    party: d.owner,
                    index: asset,
                    coefficient: 1,
                }],
                ..d
            }
        })
        .collect();
    let responses = open::public_responses(spec, defs.len(), &valid);
    let opening = open::open_verified(spec, &defs, nets, &responses, rng)?;
    let mut values = Vec::with_capacity(defs.len());
    for (v, d) in opening.values.iter().zip(&defs) {
        values.push(v.ok_or_else(|| ProtocolError::NettingOverflow {
            asset: open::describe(spec, d),
        })?);
    }
    let batch = SettlementBatch::build(spec, participants, inputs, &values)?;
    Ok((batch, opening.culprits))
}
