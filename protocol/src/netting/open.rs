//! Openings: each node's signed output message, and reconstruction from any `t`
//! shares that match the outputs' homomorphic commitments, naming every node whose
//! shares do not.
//!
//! A node's [`NodeOutputs`] are one signed [`PartyOutputs`] per participating
//! party (its shares of that party's private outputs, sealed to the party's X25519
//! key) and one signed [`PublicOutputs`] (its shares of the multilateral nets, in
//! the clear). Byte formats:
//!
//! ```text
//! share record = value share (32, canonical LE scalar) ‖ blinding share (32)
//! party box    = seal(party seal_key, aad, share record per party output)
//! aad          = "quorate/netting/output-shares/v1\0" ‖ round id ‖ spec digest
//!                ‖ inputs digest ‖ node id ‖ party index (u32)
//! ```
//!
//! Opening: an output `o = Σ λ_e x_e` has coefficient commitments
//! `Com_k(o) = Σ λ_e C_{e,k}`. With random weights `w_o`, the verifier computes
//! `T_k = Σ_o w_o·Com_k(o)` once (`t` multiscalar multiplications over the input
//! commitments) and checks each node `j` on its own:
//! `(Σ_o w_o s_{o,j})·G + (Σ_o w_o r_{o,j})·H == Σ_k j^k T_k`. A node whose shares
//! fail is named; the values open by Lagrange interpolation from any `t` nodes that
//! pass, so up to `n − t` lying or silent nodes cannot stop or alter an opening.

use curve25519_dalek::{RistrettoPoint, Scalar};
use rand_core::CryptoRngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{
    amount,
    bundle::box_digest,
    outputs::{self, OutputDef},
    pedersen,
    round::{RoundId, RoundSpec},
    verify::{Accepted, ShareVector},
};
use crate::{
    error::ProtocolError,
    identity::NodeIdentity,
    ids::NodeId,
    seal::{self, SealedBox},
};

/// A node's shares of the public outputs (the multilateral nets), signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicOutputs {
    /// Round.
    pub round: RoundId,
    /// Round definition digest.
    pub spec_digest: [u8; 32],
    /// [`inputs_digest`] of the bundles the node computed on.
    pub inputs_digest: [u8; 32],
    /// The node.
    pub node: NodeId,
    /// Share records of [`outputs::public_outputs`], concatenated.
    pub public: Vec<u8>,
    /// Ed25519 signature by the node over [`PublicOutputs::digest`].
    pub signature: Vec<u8>,
}

/// A node's shares of one party's private outputs, sealed to the party, signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartyOutputs {
    /// Round.
    pub round: RoundId,
    /// Round definition digest.
    pub spec_digest: [u8; 32],
    /// Inputs digest.
    pub inputs_digest: [u8; 32],
    /// The node.
    pub node: NodeId,
    /// The party (index).
    pub party: u32,
    /// Share records of [`outputs::party_outputs`], sealed to the party.
    pub sealed: SealedBox,
    /// Ed25519 signature by the node over [`PartyOutputs::digest`].
    pub signature: Vec<u8>,
}

/// Everything one node produces when a round closes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeOutputs {
    /// Public openings.
    pub public: PublicOutputs,
    /// One sealed message per participating party.
    pub parties: Vec<PartyOutputs>,
}

/// Digest of the inputs a round is computed on: per party, whether it submitted and
/// its bundle digest.
pub fn inputs_digest(spec: &RoundSpec, bundles: &[Option<[u8; 32]>]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"quorate/netting/inputs/v1\0");
    h.update(spec.digest());
    h.update((bundles.len() as u32).to_be_bytes());
    for b in bundles {
        match b {
            Some(d) => {
                h.update([1]);
                h.update(d);
            }
            None => h.update([0]),
        }
    }
    h.finalize().into()
}

fn output_aad(spec: &RoundSpec, inputs: &[u8; 32], node: &NodeId, party: u32) -> Vec<u8> {
    let mut aad = b"quorate/netting/output-shares/v1\0".to_vec();
    aad.extend_from_slice(&spec.id.0);
    aad.extend_from_slice(&spec.digest());
    aad.extend_from_slice(inputs);
    aad.extend_from_slice(node.as_bytes());
    aad.extend_from_slice(&party.to_be_bytes());
    aad
}

fn records(shares: &[(Scalar, Scalar)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(shares.len() * 64);
    for (v, b) in shares {
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b.as_bytes());
    }
    out
}

fn parse_records(bytes: &[u8], count: usize) -> Option<Vec<(Scalar, Scalar)>> {
    if bytes.len() != count * 64 {
        return None;
    }
    bytes
        .chunks_exact(64)
        .map(|c| {
            let mut a = [0u8; 32];
            let mut b = [0u8; 32];
            a.copy_from_slice(&c[..32]);
            b.copy_from_slice(&c[32..]);
            let v = Option::<Scalar>::from(Scalar::from_canonical_bytes(a))?;
            let r = Option::<Scalar>::from(Scalar::from_canonical_bytes(b))?;
            Some((v, r))
        })
        .collect()
}

/// Checks that a message is signed by the committee member it names, for this
/// round and definition (its inputs digest is compared separately).
fn check_signed(
    spec: &RoundSpec,
    (round, spec_digest, node): (&RoundId, &[u8; 32], &NodeId),
    digest: &[u8; 32],
    signature: &[u8],
) -> Result<(), ProtocolError> {
    if spec.committee.get(node).is_none() {
        return Err(ProtocolError::UnknownSender(*node));
    }
    if round != &spec.id || spec_digest != &spec.digest() {
        return Err(ProtocolError::WrongContext(
            "netting outputs of another round",
        ));
    }
    let sig = ed25519_dalek::Signature::from_slice(signature)
        .map_err(|_| ProtocolError::BadSignature { claimed: *node })?;
    crate::identity::verify(node, digest, &sig)
}

fn check_context(
    spec: &RoundSpec,
    inputs: &[u8; 32],
    (round, spec_digest, their_inputs, node): (&RoundId, &[u8; 32], &[u8; 32], &NodeId),
    digest: &[u8; 32],
    signature: &[u8],
) -> Result<(), ProtocolError> {
    check_signed(spec, (round, spec_digest, node), digest, signature)?;
    if their_inputs != inputs {
        return Err(ProtocolError::WrongContext(
            "netting outputs of other inputs",
        ));
    }
    Ok(())
}

impl PublicOutputs {
    /// `H("quorate/netting/public-outputs/v1\0" ‖ round ‖ spec digest ‖ inputs digest
    /// ‖ node ‖ H(public))`, what the node signs.
    pub fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"quorate/netting/public-outputs/v1\0");
        h.update(self.round.0);
        h.update(self.spec_digest);
        h.update(self.inputs_digest);
        h.update(self.node.as_bytes());
        h.update(Sha256::digest(&self.public));
        h.finalize().into()
    }

    /// Checks the node's signature and that the message is for this round and inputs.
    pub fn check(&self, spec: &RoundSpec, inputs: &[u8; 32]) -> Result<(), ProtocolError> {
        let ctx = (
            &self.round,
            &self.spec_digest,
            &self.inputs_digest,
            &self.node,
        );
        check_context(spec, inputs, ctx, &self.digest(), &self.signature)
    }

    /// Checks only that the named committee member signed it for this round
    /// (whatever inputs it computed on).
    pub fn check_signed(&self, spec: &RoundSpec) -> Result<(), ProtocolError> {
        let ctx = (&self.round, &self.spec_digest, &self.node);
        check_signed(spec, ctx, &self.digest(), &self.signature)
    }
}

impl PartyOutputs {
    /// `H("quorate/netting/party-outputs/v1\0" ‖ round ‖ spec digest ‖ inputs digest
    /// ‖ node ‖ party (u32) ‖ box digest)`, what the node signs.
    pub fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"quorate/netting/party-outputs/v1\0");
        h.update(self.round.0);
        h.update(self.spec_digest);
        h.update(self.inputs_digest);
        h.update(self.node.as_bytes());
        h.update(self.party.to_be_bytes());
        h.update(box_digest(&self.node, &self.sealed));
        h.finalize().into()
    }

    /// Checks the node's signature and that the message is for this round and inputs.
    pub fn check(&self, spec: &RoundSpec, inputs: &[u8; 32]) -> Result<(), ProtocolError> {
        let ctx = (
            &self.round,
            &self.spec_digest,
            &self.inputs_digest,
            &self.node,
        );
        check_context(spec, inputs, ctx, &self.digest(), &self.signature)
    }
}

impl NodeOutputs {
    /// Computes, seals and signs this node's outputs. Deterministic for a given
    /// node, round and inputs (the sealing randomness is derived from the node's
    /// identity key and the inputs digest), so a node that restarts and closes again
    /// sends byte-identical messages and is never mistaken for an equivocator.
    ///
    /// # Security
    /// Reads the node's secret input shares; the private output shares leave only
    /// sealed to their owner. The public shares are of values the round publishes.
    pub fn produce(
        spec: &RoundSpec,
        identity: &NodeIdentity,
        accepted: &[Option<&Accepted>],
    ) -> Result<Self, ProtocolError> {
        let participants: Vec<bool> = accepted.iter().map(Option::is_some).collect();
        let digests: Vec<Option<[u8; 32]>> = accepted.iter().map(|a| a.map(|a| a.digest)).collect();
        let inputs = inputs_digest(spec, &digests);
        let mut context = b"quorate/netting/output-sealing/v1\0".to_vec();
        context.extend_from_slice(&inputs);
        let seed = identity.derive_seed(&context);
        let rng = &mut <rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::from_seed(*seed);
        let shares: Vec<Option<&ShareVector>> =
            accepted.iter().map(|a| a.map(|a| &a.shares)).collect();
        let node = identity.node_id();
        let spec_digest = spec.digest();
        let mut parties = Vec::new();
        for (p, party) in spec.parties.iter().enumerate() {
            if !participants[p] {
                continue;
            }
            let defs = outputs::party_outputs(spec, &participants, p);
            let plain = zeroize::Zeroizing::new(records(&outputs::evaluate(&defs, &shares)));
            let aad = output_aad(spec, &inputs, &node, p as u32);
            let mut msg = PartyOutputs {
                round: spec.id,
                spec_digest,
                inputs_digest: inputs,
                node,
                party: p as u32,
                sealed: seal::seal(rng, &party.seal_key, &aad, &plain)?,
                signature: Vec::new(),
            };
            msg.signature = identity.sign(&msg.digest()).to_bytes().to_vec();
            parties.push(msg);
        }
        let mut public = PublicOutputs {
            round: spec.id,
            spec_digest,
            inputs_digest: inputs,
            node,
            public: records(&outputs::evaluate(
                &outputs::public_outputs(spec, &participants),
                &shares,
            )),
            signature: Vec::new(),
        };
        public.signature = identity.sign(&public.digest()).to_bytes().to_vec();
        Ok(Self { public, parties })
    }
}

/// Opened values with the nodes whose shares failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opening {
    /// The values, in the order of the output definitions (`None`: the opened
    /// field element is outside the i64 range — a dealer shared something out of
    /// bounds).
    pub values: Vec<Option<i64>>,
    /// Nodes whose shares were missing, malformed or off the committed polynomial.
    pub culprits: Vec<NodeId>,
}

/// One node's shares of a list of outputs (`None`: missing or malformed).
pub struct Response {
    /// The node.
    pub node: NodeId,
    /// Its evaluation point (roster index).
    pub index: u16,
    /// Its `(value, blinding)` shares, one per output.
    pub shares: Option<Vec<(Scalar, Scalar)>>,
}

fn lagrange(xs: &[Scalar], at: &Scalar) -> Vec<Scalar> {
    (0..xs.len())
        .map(|i| {
            let mut num = Scalar::ONE;
            let mut den = Scalar::ONE;
            for j in 0..xs.len() {
                if i != j {
                    num *= at - xs[j];
                    den *= xs[i] - xs[j];
                }
            }
            num * den.invert()
        })
        .collect()
}

/// Reconstructs `defs` from node responses, checking every node's shares against
/// the outputs' commitments (computed from the input commitments
/// `commitments[party]`, `t` per value): a node whose shares fail is named, and the
/// values open from any `t` nodes whose shares pass.
pub fn open_verified(
    spec: &RoundSpec,
    defs: &[OutputDef],
    commitments: &[Option<&[RistrettoPoint]>],
    responses: &[Response],
    rng: &mut impl CryptoRngCore,
) -> Result<Opening, ProtocolError> {
    use curve25519_dalek::traits::VartimeMultiscalarMul;
    let t = usize::from(spec.threshold);
    let mut culprits: Vec<NodeId> = Vec::new();
    let weights: Vec<Scalar> = defs.iter().map(|_| Scalar::random(&mut *rng)).collect();
    let mut coeffs: Vec<Vec<Scalar>> = commitments
        .iter()
        .map(|c| vec![Scalar::ZERO; c.map_or(0, |c| c.len() / t)])
        .collect();
    outputs::fold_commitment_weights(defs, &weights, &mut coeffs);
    // T_k = Σ_o w_o·Com_k(o): the weighted output commitment, coefficient k.
    let targets: Vec<RistrettoPoint> = (0..t)
        .map(|k| {
            let (s, p): (Vec<Scalar>, Vec<RistrettoPoint>) = coeffs
                .iter()
                .zip(commitments)
                .filter_map(|(c, pts)| {
                    pts.map(|pts| {
                        c.iter()
                            .enumerate()
                            .filter(|(_, m)| **m != Scalar::ZERO)
                            .map(move |(e, m)| (*m, pts[e * t + k]))
                    })
                })
                .flatten()
                .unzip();
            RistrettoPoint::vartime_multiscalar_mul(s, p)
        })
        .collect();
    let mut good: Vec<(Scalar, &Vec<(Scalar, Scalar)>)> = Vec::new();
    for r in responses {
        let shares = match &r.shares {
            Some(s)
                if s.len() == defs.len()
                    && spec.committee.get(&r.node).map(|m| m.index) == Some(r.index) =>
            {
                s
            }
            _ => {
                culprits.push(r.node);
                continue;
            }
        };
        let x = Scalar::from(u64::from(r.index));
        let (mut wv, mut wb) = (Scalar::ZERO, Scalar::ZERO);
        for (w, (v, b)) in weights.iter().zip(shares) {
            wv += w * v;
            wb += w * b;
        }
        let mut xp = Scalar::ONE;
        let mut powers = Vec::with_capacity(t);
        for _ in 0..t {
            powers.push(-xp);
            xp *= x;
        }
        if pedersen::vartime_is_zero(&wv, &wb, powers, targets.iter().copied()) {
            if !good.iter().any(|(gx, _)| *gx == x) {
                good.push((x, shares));
            }
        } else {
            culprits.push(r.node);
        }
    }
    culprits.sort();
    culprits.dedup();
    if good.len() < t {
        return Err(ProtocolError::OpeningFailed {
            reason: format!("{} nodes' shares verify, {t} needed", good.len()),
            culprits,
        });
    }
    let xs: Vec<Scalar> = good[..t].iter().map(|(x, _)| *x).collect();
    let l0 = lagrange(&xs, &Scalar::ZERO);
    let mut values = Vec::with_capacity(defs.len());
    for o in 0..defs.len() {
        let mut v = Scalar::ZERO;
        for (k, (_, s)) in good[..t].iter().enumerate() {
            v += l0[k] * s[o].0;
        }
        values.push(amount::to_i64(&v));
    }
    Ok(Opening { values, culprits })
}

/// The asset an output is in (for errors).
pub(crate) fn describe(spec: &RoundSpec, d: &OutputDef) -> String {
    let assets = spec.assets();
    match &d.kind {
        outputs::OutputKind::Bilateral { asset, .. }
        | outputs::OutputKind::Multilateral { asset } => {
            assets.get(*asset as usize).cloned().unwrap_or_default()
        }
        outputs::OutputKind::ReconcileQuantity { instrument, .. }
        | outputs::OutputKind::ReconcileCash { instrument, .. } => spec
            .instruments
            .get(*instrument as usize)
            .map(|i| i.asset.clone())
            .unwrap_or_default(),
    }
}

/// Reads the public share records of each node's outputs into responses.
pub fn public_responses(spec: &RoundSpec, defs: usize, outputs: &[PublicOutputs]) -> Vec<Response> {
    outputs
        .iter()
        .map(|o| Response {
            node: o.node,
            index: spec.committee.get(&o.node).map_or(0, |m| m.index),
            shares: parse_records(&o.public, defs),
        })
        .collect()
}

/// Opens party `party`'s sealed messages (one per node, already checked with
/// [`PartyOutputs::check`]) into responses.
///
/// # Security
/// `secret` is the party's X25519 key; the opened shares are of its private results.
pub fn party_responses(
    spec: &RoundSpec,
    party: u32,
    secret: &x25519_dalek::StaticSecret,
    defs: usize,
    outputs: &[PartyOutputs],
) -> Vec<Response> {
    outputs
        .iter()
        .map(|o| {
            let aad = output_aad(spec, &o.inputs_digest, &o.node, party);
            let shares = (o.party == party)
                .then(|| seal::open(secret, &aad, &o.sealed))
                .flatten()
                .and_then(|plain| parse_records(&plain, defs));
            Response {
                node: o.node,
                index: spec.committee.get(&o.node).map_or(0, |m| m.index),
                shares,
            }
        })
        .collect()
}
