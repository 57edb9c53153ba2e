//! A closed netting round's limit checks as the daemon and the coordinator run
//! them: [`NodeLimits`] wraps a node's [`NodeMpc`] with the round's layout, the
//! wire parts and the signed results; [`KingLimits`] wraps the [`King`] with one
//! reassembler per node. Both speak [`Payload`]s.
//!
//! Run session: `SHA-256("quorate/netting/limits/session/v1\0" ‖ round session ‖
//! inputs digest ‖ attempt (u32 BE))`, so every attempt derives fresh keys and
//! masks (an aborted attempt's openings never combine with a later one's).

use sha2::{Digest, Sha256};

use super::{
    inputs::Layout,
    king::King,
    node::NodeMpc,
    parts::{self, Assembler},
    step::{KingStep, NodeStep},
    verdict::{LimitBits, LimitVerdict},
    Params, Stats, Verdicts,
};
use crate::{
    error::ProtocolError,
    identity::NodeIdentity,
    netting::{round::RoundSpec, session::NodeRound},
    wire::Payload,
    NodeId,
};

/// Most attempts per round (each after an abort).
pub const MAX_ATTEMPTS: u32 = 3;

fn session(spec: &RoundSpec, inputs_digest: &[u8; 32], attempt: u32) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"quorate/netting/limits/session/v1\0");
    h.update(spec.session().0);
    h.update(inputs_digest);
    h.update(attempt.to_be_bytes());
    h.finalize().into()
}

fn payloads<T: serde::Serialize>(
    spec: &RoundSpec,
    attempt: u32,
    step: u8,
    msg: &T,
) -> Vec<Payload> {
    let bytes = postcard::to_allocvec(msg).unwrap_or_default();
    parts::split(&bytes)
        .into_iter()
        .map(|(part, count, bytes)| Payload::LimitPart {
            round: spec.id,
            attempt,
            step,
            part,
            parts: count,
            bytes,
        })
        .collect()
}

/// The parameters of an attempt.
fn params(
    spec: &RoundSpec,
    inputs_digest: &[u8; 32],
    attempt: u32,
) -> Result<Params, ProtocolError> {
    Params::from_committee(
        &spec.committee,
        spec.threshold,
        session(spec, inputs_digest, attempt),
    )
}

/// A node's limit-check attempt for one closed round.
pub struct NodeLimits {
    attempt: u32,
    mpc: NodeMpc,
    layout: Layout,
    inputs_digest: [u8; 32],
    inbox: Assembler,
    result: Option<(LimitVerdict, Vec<LimitBits>)>,
    failed: Option<ProtocolError>,
}

impl core::fmt::Debug for NodeLimits {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "NodeLimits(attempt {}, {:?})", self.attempt, self.mpc)
    }
}

impl NodeLimits {
    /// Starts attempt `attempt` on a closed round; returns the step-0 parts.
    ///
    /// # Security
    /// Derives this node's input shares from its secret shares of the round. `rng`
    /// must be cryptographically secure: the run's set keys and the sealing of the
    /// results are drawn from it (fresh at every start).
    pub fn start(
        round: &NodeRound,
        identity: &NodeIdentity,
        attempt: u32,
        rng: &mut impl rand_core::CryptoRngCore,
    ) -> Result<(Self, Vec<Payload>), ProtocolError> {
        let spec = round.spec();
        if attempt == 0 || attempt > MAX_ATTEMPTS {
            return Err(ProtocolError::InvalidRequest(format!(
                "limit-check attempt {attempt} is outside 1..={MAX_ATTEMPTS}"
            )));
        }
        let (participants, inputs_digest) = round
            .closed()
            .ok_or(ProtocolError::InvalidState("limit checks before close"))?;
        let layout = Layout::new(spec, participants).ok_or_else(|| {
            ProtocolError::InvalidRequest("this round has no limit checks".into())
        })?;
        let inputs =
            layout
                .node_inputs(spec, &round.shares())
                .ok_or(ProtocolError::InvalidState(
                    "a participant's shares are missing",
                ))?;
        let params = params(spec, &inputs_digest, attempt)?;
        let me = spec
            .committee
            .members()
            .iter()
            .position(|m| m.node == identity.node_id())
            .ok_or(ProtocolError::UnknownSender(identity.node_id()))?;
        let job = layout.job();
        let max = parts::max_message_bytes(&job, params.n());
        let (mpc, first) = NodeMpc::start(params, job, me, identity, inputs, rng)?;
        let out = payloads(spec, attempt, 0, &first);
        Ok((
            Self {
                attempt,
                mpc,
                layout,
                inputs_digest,
                inbox: Assembler::new(max),
                result: None,
                failed: None,
            },
            out,
        ))
    }

    /// The attempt number.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The signed results, once finished.
    pub fn result(&self) -> Option<&(LimitVerdict, Vec<LimitBits>)> {
        self.result.as_ref()
    }

    /// Why this attempt stopped, if it did.
    pub fn failure(&self) -> Option<&ProtocolError> {
        self.failed.as_ref()
    }

    /// Takes one part of the king's answer to the current step. Returns what to
    /// send back: the next step's parts, or the `LimitResult` after the last step
    /// (empty while parts are missing). A protocol failure ends the attempt.
    pub fn on_part(
        &mut self,
        spec: &RoundSpec,
        identity: &NodeIdentity,
        (step, part, count): (u8, u32, u32),
        bytes: Vec<u8>,
        rng: &mut impl rand_core::CryptoRngCore,
    ) -> Result<Vec<Payload>, ProtocolError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if let Some((verdict, bits)) = &self.result {
            // A repeated last answer: send the result again.
            return Ok(vec![Payload::LimitResult {
                verdict: verdict.clone(),
                bits: bits.clone(),
            }]);
        }
        if step + 1 == self.mpc.step() {
            // A retransmission of the step just answered: nothing new.
            return Ok(Vec::new());
        }
        if step != self.mpc.step() {
            return Err(ProtocolError::WrongContext(
                "a limit-check part for another step than this node waits for",
            ));
        }
        let Some(whole) = self.inbox.add(part, count, bytes)? else {
            return Ok(Vec::new());
        };
        let king: KingStep = postcard::from_bytes(&whole)
            .map_err(|_| ProtocolError::Malformed("limit-check king step"))?;
        match self.mpc.handle(identity, &king) {
            Ok(Ok(next)) => Ok(payloads(spec, self.attempt, next.step, &next)),
            Ok(Err(outcome)) => {
                let verdict = LimitVerdict::produce(
                    spec,
                    &self.layout,
                    identity,
                    self.inputs_digest,
                    self.attempt,
                    &outcome,
                );
                let bits = LimitBits::produce(
                    spec,
                    &self.layout,
                    identity,
                    self.inputs_digest,
                    self.attempt,
                    &outcome,
                    rng,
                )?;
                self.result = Some((verdict.clone(), bits.clone()));
                Ok(vec![Payload::LimitResult { verdict, bits }])
            }
            Err(e) => {
                self.failed = Some(e.clone());
                Err(e)
            }
        }
    }
}

/// Each node's answer parts for a completed step.
pub type Answers = Vec<(NodeId, Vec<Payload>)>;

/// The coordinator's side of one attempt.
#[derive(Debug)]
pub struct KingLimits {
    attempt: u32,
    king: King,
    nodes: Vec<NodeId>,
    inboxes: Vec<Assembler>,
    layout: Layout,
}

impl KingLimits {
    /// A king for attempt `attempt` of a round closed on `participants` with
    /// `inputs_digest`.
    pub fn new(
        spec: &RoundSpec,
        participants: &[bool],
        inputs_digest: &[u8; 32],
        attempt: u32,
    ) -> Result<Self, ProtocolError> {
        let layout = Layout::new(spec, participants).ok_or_else(|| {
            ProtocolError::InvalidRequest("this round has no limit checks".into())
        })?;
        let params = params(spec, inputs_digest, attempt)?;
        let job = layout.job();
        let max = parts::max_message_bytes(&job, params.n());
        let nodes = params.nodes.clone();
        Ok(Self {
            attempt,
            inboxes: nodes.iter().map(|_| Assembler::new(max)).collect(),
            king: King::new(params, job)?,
            nodes,
            layout,
        })
    }

    /// The attempt number.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The layout (what was compared).
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The step being collected.
    pub fn step(&self) -> u8 {
        self.king.step()
    }

    /// Nodes whose message for the current step is incomplete.
    pub fn waiting_for(&self) -> Vec<NodeId> {
        self.king.waiting_for()
    }

    /// Costs so far.
    pub fn stats(&self) -> Stats {
        self.king.stats()
    }

    /// The opened verdicts, after the last step.
    pub fn verdicts(&self) -> Option<&Verdicts> {
        self.king.verdicts()
    }

    /// Takes one part from `from`. When every node's message for the step is in,
    /// returns each node's answer parts.
    pub fn on_part(
        &mut self,
        spec: &RoundSpec,
        from: &NodeId,
        step: u8,
        part: u32,
        count: u32,
        bytes: Vec<u8>,
    ) -> Result<Option<Answers>, ProtocolError> {
        let pos = self
            .nodes
            .iter()
            .position(|n| n == from)
            .ok_or(ProtocolError::UnknownSender(*from))?;
        if step != self.king.step() || self.king.has_message(pos) {
            // Late or repeated parts of a step this node already completed are
            // dropped (duplicates are idempotent).
            return Ok(None);
        }
        let Some(whole) = self.inboxes[pos].add(part, count, bytes)? else {
            return Ok(None);
        };
        let msg: NodeStep =
            postcard::from_bytes(&whole).map_err(|_| ProtocolError::LimitCheckAborted {
                step,
                reason: "a node's step message does not decode".into(),
                culprits: vec![*from],
            })?;
        if usize::from(msg.from) != pos {
            return Err(ProtocolError::LimitCheckAborted {
                step,
                reason: "a node's step message claims another position".into(),
                culprits: vec![*from],
            });
        }
        let Some(answers) = self.king.receive(msg)? else {
            return Ok(None);
        };
        Ok(Some(
            self.nodes
                .iter()
                .zip(&answers)
                .map(|(n, a)| (*n, payloads(spec, self.attempt, a.step, a)))
                .collect(),
        ))
    }
}
