//! What the HTTP API needs from whatever actually runs the protocol.
//!
//! The production implementation is the libp2p [`Engine`](crate::Engine). The
//! [`LocalBackend`] runs the same real protocol state machines (DKG and FROST signing,
//! no trusted dealer, no stubs) in memory, for tests and the in-process devnet.

use std::{
    collections::{BTreeSet, HashMap},
    future::Future,
    sync::{Arc, Mutex},
    time::{SystemTime, UNIX_EPOCH},
};

use quorate_protocol::{
    attestation::attest,
    local::{identities, run_dkg, run_signing},
    request::SignedRequest,
    roster::{Roster, RosterError},
    KeyId, KeyShare, NodeId, NodeIdentity, ProtocolError,
};
use rand_core::OsRng;

use crate::{
    error::CoordinatorError,
    netting::{BundleOutcome, CloseOutcome, NodeAck, RoundOpen, SettleOutcome, SettleRequest},
    types::{Attempt, KeyRecord, KeySpec, MessageSignature, Participants, SignResult},
};

mod netting;

fn no_netting() -> CoordinatorError {
    CoordinatorError::Transport("this backend does not run netting rounds".into())
}

/// Runs key generation and signing for the API.
pub trait Backend: Send + Sync + 'static {
    /// Runs a DKG for `spec` and returns the new key's public record.
    fn create_key(
        &self,
        spec: KeySpec,
    ) -> impl Future<Output = Result<KeyRecord, CoordinatorError>> + Send;

    /// Runs an operator-approved refresh or reshare of `key`; returns the new
    /// generation's record.
    fn reshare(
        &self,
        key: KeyRecord,
        operation: quorate_protocol::lifecycle::ApprovedOperation,
    ) -> impl Future<Output = Result<KeyRecord, CoordinatorError>> + Send {
        let _ = (key, operation);
        async {
            Err(CoordinatorError::Transport(
                "this backend does not run key lifecycle operations".into(),
            ))
        }
    }

    /// Signs every message of `request` with `key`.
    fn sign(
        &self,
        key: KeyRecord,
        request: SignedRequest,
    ) -> impl Future<Output = Result<SignResult, CoordinatorError>> + Send;

    /// Roster names of the signer nodes connected now (`GET /health`).
    fn connected_nodes(&self) -> impl Future<Output = Vec<String>> + Send {
        async { Vec::new() }
    }

    /// Relay frames refused so far (outside a live session, or between nodes not in
    /// its committee); exported as `quorate_coordinator_relays_dropped_total`.
    fn relays_dropped(&self) -> u64 {
        0
    }

    /// Signing sessions per signer node by roster name (started, in flight);
    /// exported as `quorate_coordinator_signer_sessions_total{node}` and
    /// `quorate_coordinator_signer_sessions_active{node}`.
    fn signer_sessions(&self) -> Vec<(String, crate::engine::NodeSessions)> {
        Vec::new()
    }

    /// Announces a netting round to its committee; every member's answer, in
    /// committee order.
    fn netting_open(
        &self,
        open: RoundOpen,
    ) -> impl Future<Output = Result<Vec<NodeAck>, CoordinatorError>> + Send {
        let _ = open;
        async { Err(no_netting()) }
    }

    /// Forwards one party's bundle (node at committee position `i` gets
    /// `bundle.boxes[i]`); every member's answer.
    fn netting_bundle(
        &self,
        round: quorate_protocol::netting::RoundId,
        bundle: quorate_protocol::netting::InputBundle,
    ) -> impl Future<Output = Result<BundleOutcome, CoordinatorError>> + Send {
        let _ = (round, bundle);
        async { Err(no_netting()) }
    }

    /// Closes a round on the bundles every member accepted and returns every
    /// member's verified outputs.
    fn netting_close(
        &self,
        round: quorate_protocol::netting::RoundId,
    ) -> impl Future<Output = Result<CloseOutcome, CoordinatorError>> + Send {
        let _ = round;
        async { Err(no_netting()) }
    }

    /// Threshold-signs a closed round's settlement batch.
    fn netting_settle(
        &self,
        request: SettleRequest,
    ) -> impl Future<Output = Result<SettleOutcome, CoordinatorError>> + Send {
        let _ = request;
        async { Err(no_netting()) }
    }
}

/// Current Unix time in milliseconds.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

type Shares = Vec<(Arc<NodeIdentity>, KeyShare)>;

/// A backend that runs the real DKG and FROST signing in memory over a fixed set of
/// local node identities.
///
/// # Security
/// **For tests and the in-process devnet only.** Every key share of every key lives in
/// this process's memory, which is exactly what the production network exists to
/// avoid. It still behaves like the nodes on the request path: it verifies the client
/// signature, refuses expired requests and unknown keys, and signs only the messages
/// the client signed.
pub struct LocalBackend {
    coordinator: Arc<NodeIdentity>,
    nodes: Vec<Arc<NodeIdentity>>,
    keys: Mutex<HashMap<KeyId, Shares>>,
    rounds: netting::LocalRounds,
}

impl core::fmt::Debug for LocalBackend {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("LocalBackend")
            .field("nodes", &self.nodes.len())
            .finish_non_exhaustive()
    }
}

impl LocalBackend {
    /// A backend with `n` fresh node identities and a fresh coordinator identity.
    pub fn new(n: usize) -> Self {
        let mut rng = OsRng;
        let coordinator = Arc::new(NodeIdentity::generate(&mut rng));
        Self::with_identities(coordinator, identities(n, &mut rng))
    }

    /// A backend over the given coordinator and node identities.
    pub fn with_identities(coordinator: Arc<NodeIdentity>, nodes: Vec<Arc<NodeIdentity>>) -> Self {
        Self {
            coordinator,
            nodes,
            keys: Mutex::new(HashMap::new()),
            rounds: netting::LocalRounds::default(),
        }
    }

    /// The local nodes' ids, in index order.
    pub fn node_ids(&self) -> Vec<NodeId> {
        self.nodes.iter().map(|n| n.node_id()).collect()
    }

    /// A roster of the local nodes (FROST index = position + 1, one segment each),
    /// for clients to pin: keys created with `spanning` participants are attested
    /// under these indices.
    pub fn roster(&self) -> Result<Roster, RosterError> {
        let mut text = String::new();
        for (i, n) in (1u16..).zip(&self.nodes) {
            text.push_str(&format!(
                "[[nodes]]\nname = \"local-{i}\"\nnode_id = \"{}\"\nseal_key = \"{}\"\nindex = {i}\nsegment = \"local-{i}\"\n\n",
                n.node_id(),
                hex::encode(n.public().seal_key),
            ));
        }
        Roster::from_toml(&text)
    }

    fn select(
        &self,
        participants: &Participants,
    ) -> Result<Vec<Arc<NodeIdentity>>, CoordinatorError> {
        match participants {
            Participants::Nodes(ids) => {
                let distinct: BTreeSet<_> = ids.iter().collect();
                if distinct.len() != ids.len() {
                    return Err(CoordinatorError::InvalidSpec(
                        "participants: a node is listed twice".into(),
                    ));
                }
                ids.iter()
                    .map(|id| {
                        self.nodes
                            .iter()
                            .find(|n| n.node_id() == *id)
                            .cloned()
                            .ok_or_else(|| {
                                CoordinatorError::InvalidSpec(format!(
                                    "participants: node {id} is not in the roster"
                                ))
                            })
                    })
                    .collect()
            }
            Participants::Spanning { n, min_segments } => {
                // Every local node is its own segment.
                if *min_segments > *n {
                    return Err(CoordinatorError::InvalidSpec(format!(
                        "participants.spanning: min_segments {min_segments} exceeds n {n}"
                    )));
                }
                if *n > self.nodes.len() {
                    return Err(CoordinatorError::NotEnoughSigners {
                        available: self.nodes.len(),
                        needed: *n,
                        attempts: Vec::new(),
                    });
                }
                Ok(self.nodes[..*n].to_vec())
            }
        }
    }

    fn shares(&self, key_id: &KeyId) -> Result<Shares, CoordinatorError> {
        let keys = self
            .keys
            .lock()
            .map_err(|_| CoordinatorError::Storage("local key map poisoned".into()))?;
        keys.get(key_id)
            .cloned()
            .ok_or(CoordinatorError::UnknownKey(*key_id))
    }
}

fn protocol_to_spec(e: ProtocolError) -> CoordinatorError {
    match e {
        ProtocolError::InvalidParameters(m) => CoordinatorError::InvalidSpec(m),
        other => CoordinatorError::DkgFailed {
            reason: other.to_string(),
            culprits: Vec::new(),
        },
    }
}

impl Backend for LocalBackend {
    async fn create_key(&self, spec: KeySpec) -> Result<KeyRecord, CoordinatorError> {
        let members = self.select(&spec.participants)?;
        if spec.threshold < 2 || usize::from(spec.threshold) > members.len() {
            return Err(CoordinatorError::InvalidSpec(format!(
                "threshold must be between 2 and the number of participants ({}), got {}",
                members.len(),
                spec.threshold
            )));
        }
        let suite = spec.ciphersuite;
        let threshold = spec.threshold;
        let dkg_members = members.clone();
        let shares = tokio::task::spawn_blocking(move || {
            run_dkg(&dkg_members, suite, threshold, &mut OsRng)
        })
        .await
        .map_err(|e| CoordinatorError::DkgFailed {
            reason: format!("DKG task failed: {e}"),
            culprits: Vec::new(),
        })?
        .map_err(protocol_to_spec)?;
        let public = shares.first().map(|s| s.public.clone()).ok_or_else(|| {
            CoordinatorError::DkgFailed {
                reason: "no shares".into(),
                culprits: Vec::new(),
            }
        })?;
        // Each local node attests the key it derived, as a real node does.
        let attestations = members
            .iter()
            .zip(&shares)
            .map(|(node, share)| attest(node, &share.public))
            .collect::<Result<Vec<_>, _>>()
            .map_err(protocol_to_spec)?;
        let record = KeyRecord {
            public,
            attestations,
            created_at_ms: now_ms(),
            generation: 0,
        };
        let held: Shares = members.into_iter().zip(shares).collect();
        self.keys
            .lock()
            .map_err(|_| CoordinatorError::Storage("local key map poisoned".into()))?
            .insert(record.key_id(), held);
        Ok(record)
    }

    async fn sign(
        &self,
        key: KeyRecord,
        request: SignedRequest,
    ) -> Result<SignResult, CoordinatorError> {
        // What every node does before contributing (invariant 4).
        request
            .verify_client()
            .map_err(|e| CoordinatorError::BadClientSignature(e.to_string()))?;
        let now = now_ms();
        if request.request.expires_at_ms <= now {
            return Err(CoordinatorError::ExpiredRequest {
                expires_at_ms: request.request.expires_at_ms,
                now_ms: now,
            });
        }
        if request.request.key_id != key.key_id() {
            return Err(CoordinatorError::BadRequest(format!(
                "request is for key {}, not {}",
                request.request.key_id,
                key.key_id()
            )));
        }
        let shares = self.shares(&key.key_id())?;
        let t = usize::from(key.public.threshold);
        let chosen: Shares = shares.into_iter().take(t).collect();
        let signers: Vec<NodeId> = chosen.iter().map(|(id, _)| id.node_id()).collect();
        let coordinator = self.coordinator.clone();
        let targets = request
            .request
            .targets(&key.public)
            .map_err(|e| CoordinatorError::BadRequest(e.to_string()))?;
        let result = tokio::task::spawn_blocking(move || {
            let mut signatures = Vec::with_capacity(targets.len());
            let mut attempts = Vec::with_capacity(targets.len());
            for target in targets {
                let message = target.message.clone();
                let signature = run_signing(&coordinator, chosen.clone(), target, &mut OsRng)
                    .map_err(|e| CoordinatorError::BadRequest(format!("signing failed: {e}")))?;
                attempts.push(Attempt {
                    signers: signers.clone(),
                    outcome: "signed".into(),
                    blamed: Vec::new(),
                    refused: Vec::new(),
                });
                signatures.push(MessageSignature { message, signature });
            }
            Ok::<_, CoordinatorError>(SignResult {
                signatures,
                attempts,
            })
        })
        .await
        .map_err(|e| CoordinatorError::Transport(format!("signing task failed: {e}")))??;
        Ok(result)
    }

    async fn netting_open(&self, open: RoundOpen) -> Result<Vec<NodeAck>, CoordinatorError> {
        self.local_open(open)
    }

    async fn netting_bundle(
        &self,
        round: quorate_protocol::netting::RoundId,
        bundle: quorate_protocol::netting::InputBundle,
    ) -> Result<BundleOutcome, CoordinatorError> {
        self.local_bundle(round, bundle).await
    }

    async fn netting_close(
        &self,
        round: quorate_protocol::netting::RoundId,
    ) -> Result<CloseOutcome, CoordinatorError> {
        self.local_close(round).await
    }

    async fn netting_settle(
        &self,
        request: SettleRequest,
    ) -> Result<SettleOutcome, CoordinatorError> {
        self.local_settle(request).await
    }
}
