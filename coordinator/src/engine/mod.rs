//! The coordinator engine: one task owning the libp2p swarm that starts DKGs,
//! drives signing attempts (ROAST-style retries over signer subsets with fresh
//! nonces, at most n − t + 1 attempts per message), and relays envelopes between
//! nodes that cannot reach each other. It holds no key material: it only sees
//! public packages and sealed shares.

mod lifecycle;
mod netting;
mod p2p;
mod retry;
mod select;
mod signing;
mod task;

pub use signing::load::NodeSessions;

use std::sync::Arc;

use quorate_protocol::{request::SignedRequest, roster::Roster, NodeId, NodeIdentity};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use self::netting::NettingCommand;
use crate::{
    error::CoordinatorError,
    netting::{BundleOutcome, CloseOutcome, NodeAck, RoundOpen, SettleOutcome, SettleRequest},
    settings::ConnectionLimits,
    types::{KeyRecord, KeySpec, SignResult},
};

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The coordinator's node identity (signs envelopes; not a key share).
    pub identity: Arc<NodeIdentity>,
    /// The network roster.
    pub roster: Roster,
    /// libp2p listen addresses.
    pub listen: Vec<String>,
    /// Deadline of one signing attempt.
    pub session_timeout_ms: u64,
    /// Deadline of a DKG.
    pub dkg_timeout_ms: u64,
}

/// Netting settings of the engine beyond [`EngineConfig`] (a netting close waits
/// `dkg_timeout_ms` for the nodes' outputs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NettingOptions {
    /// Deadline of one limit-check attempt of a limit-checked round (the MPC with
    /// the coordinator as king; a 50-party, 20-asset round moves about 16 MiB per
    /// node). Default [`DEFAULT_LIMITS_TIMEOUT_MS`].
    pub limits_timeout_ms: u64,
}

/// Default deadline of one limit-check attempt (120 s).
pub const DEFAULT_LIMITS_TIMEOUT_MS: u64 = 120_000;

impl Default for NettingOptions {
    fn default() -> Self {
        Self {
            limits_timeout_ms: DEFAULT_LIMITS_TIMEOUT_MS,
        }
    }
}

/// A signer node as the coordinator sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// Node id.
    pub node: NodeId,
    /// Roster name.
    pub name: String,
    /// Segment label.
    pub segment: String,
    /// Currently connected.
    pub connected: bool,
}

pub(crate) enum Command {
    CreateKey(
        KeySpec,
        oneshot::Sender<Result<KeyRecord, CoordinatorError>>,
    ),
    Sign(
        Box<(KeyRecord, SignedRequest)>,
        oneshot::Sender<Result<SignResult, CoordinatorError>>,
    ),
    Reshare(
        Box<(KeyRecord, quorate_protocol::lifecycle::ApprovedOperation)>,
        oneshot::Sender<Result<KeyRecord, CoordinatorError>>,
    ),
    AttachStore(Arc<crate::store::Store>),
    Nodes(oneshot::Sender<Vec<NodeStatus>>),
    ListenAddrs(oneshot::Sender<Vec<String>>),
    Netting(NettingCommand),
    Shutdown,
}

/// Counters the engine task updates and the handle reads.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// `Frame::Relay` envelopes refused (no live session, sender or recipient not in
    /// its committee, spoofed sender, unknown recipient).
    pub(crate) relays_dropped: std::sync::atomic::AtomicU64,
    /// Signing sessions per signer node, by roster name.
    pub(crate) signer_sessions: signing::load::SharedLoad,
}

/// Handle to the engine task. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    tx: mpsc::Sender<Command>,
    counters: Arc<Counters>,
}

impl Engine {
    /// Starts the engine on the current tokio runtime with default connection limits.
    pub fn spawn(config: EngineConfig) -> Result<Self, CoordinatorError> {
        Self::spawn_with(config, ConnectionLimits::default())
    }

    /// Starts the engine with the given libp2p connection limits.
    pub fn spawn_with(
        config: EngineConfig,
        limits: ConnectionLimits,
    ) -> Result<Self, CoordinatorError> {
        Self::spawn_netting(config, limits, NettingOptions::default())
    }

    /// Starts the engine with connection limits and netting options.
    pub fn spawn_netting(
        config: EngineConfig,
        limits: ConnectionLimits,
        netting: NettingOptions,
    ) -> Result<Self, CoordinatorError> {
        let (tx, rx) = mpsc::channel(256);
        let counters = Arc::new(Counters::default());
        let task = task::Task::new(config, rx, counters.clone(), limits, netting)?;
        tokio::spawn(task.run());
        Ok(Self { tx, counters })
    }

    /// Signing sessions per signer node (by roster name): started so far and in
    /// flight now.
    pub fn signer_sessions(&self) -> Vec<(String, NodeSessions)> {
        let map = self
            .counters
            .signer_sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        map.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    /// Relay envelopes refused so far: only envelopes of a live session this
    /// coordinator runs, between two members of its committee, are relayed.
    pub fn relays_dropped(&self) -> u64 {
        self.counters
            .relays_dropped
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, CoordinatorError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(make(tx))
            .await
            .map_err(|_| CoordinatorError::Shutdown)?;
        rx.await.map_err(|_| CoordinatorError::Shutdown)
    }

    /// Runs a DKG among the chosen nodes and returns the new key's public record.
    pub async fn create_key(&self, spec: KeySpec) -> Result<KeyRecord, CoordinatorError> {
        self.call(|tx| Command::CreateKey(spec, tx)).await?
    }

    /// Runs an operator-approved refresh or reshare of `key` and returns the new
    /// generation's record (same group key, new committee and shares).
    pub async fn reshare(
        &self,
        key: KeyRecord,
        operation: quorate_protocol::lifecycle::ApprovedOperation,
    ) -> Result<KeyRecord, CoordinatorError> {
        self.call(|tx| Command::Reshare(Box::new((key, operation)), tx))
            .await?
    }

    /// Gives the engine the store: refresh and reshare runs are recorded in it
    /// (and runs a previous process left are finished or aborted).
    pub async fn attach_store(&self, store: Arc<crate::store::Store>) {
        let _ = self.tx.send(Command::AttachStore(store)).await;
    }

    /// Signs every message of a client's signed request with `key`.
    pub async fn sign(
        &self,
        key: KeyRecord,
        request: SignedRequest,
    ) -> Result<SignResult, CoordinatorError> {
        request
            .verify_client()
            .map_err(|e| CoordinatorError::BadClientSignature(e.to_string()))?;
        if request.request.key_id != key.key_id() {
            return Err(CoordinatorError::BadRequest(
                "request names another key".into(),
            ));
        }
        self.call(|tx| Command::Sign(Box::new((key, request)), tx))
            .await?
    }

    /// Announces a netting round to its committee (`Payload::NettingRound`) and
    /// returns every member's answer, in committee order.
    pub async fn netting_open(&self, open: RoundOpen) -> Result<Vec<NodeAck>, CoordinatorError> {
        self.call(|tx| Command::Netting(NettingCommand::Open(Box::new(open), tx)))
            .await?
    }

    /// Forwards one party's bundle: the node at committee position `i` gets
    /// `bundle.boxes[i]` with the header.
    pub async fn netting_bundle(
        &self,
        round: quorate_protocol::netting::RoundId,
        bundle: quorate_protocol::netting::InputBundle,
    ) -> Result<BundleOutcome, CoordinatorError> {
        self.call(|tx| Command::Netting(NettingCommand::Bundle(Box::new((round, bundle)), tx)))
            .await?
    }

    /// Closes a round on the bundles every node accepted and collects every node's
    /// verified outputs (waits for bundles in flight first).
    pub async fn netting_close(
        &self,
        round: quorate_protocol::netting::RoundId,
    ) -> Result<CloseOutcome, CoordinatorError> {
        self.call(|tx| Command::Netting(NettingCommand::Close(round, tx)))
            .await?
    }

    /// Threshold-signs a closed round's settlement batch (retrying over signer
    /// subsets, at most n − t + 1 attempts).
    pub async fn netting_settle(
        &self,
        request: SettleRequest,
    ) -> Result<SettleOutcome, CoordinatorError> {
        self.call(|tx| Command::Netting(NettingCommand::Settle(Box::new(request), tx)))
            .await?
    }

    /// Signer nodes and whether they are connected.
    pub async fn nodes(&self) -> Vec<NodeStatus> {
        self.call(Command::Nodes).await.unwrap_or_default()
    }

    /// Addresses the engine listens on.
    pub async fn listen_addrs(&self) -> Vec<String> {
        self.call(Command::ListenAddrs).await.unwrap_or_default()
    }

    /// Stops the engine; running jobs fail with [`CoordinatorError::Shutdown`].
    pub async fn shutdown(&self) {
        let _ = self.tx.send(Command::Shutdown).await;
    }
}

impl crate::backend::Backend for Engine {
    fn create_key(
        &self,
        spec: KeySpec,
    ) -> impl std::future::Future<Output = Result<KeyRecord, CoordinatorError>> + Send {
        Engine::create_key(self, spec)
    }

    async fn connected_nodes(&self) -> Vec<String> {
        self.nodes()
            .await
            .into_iter()
            .filter(|n| n.connected)
            .map(|n| n.name)
            .collect()
    }

    fn reshare(
        &self,
        key: KeyRecord,
        operation: quorate_protocol::lifecycle::ApprovedOperation,
    ) -> impl std::future::Future<Output = Result<KeyRecord, CoordinatorError>> + Send {
        Engine::reshare(self, key, operation)
    }

    fn sign(
        &self,
        key: KeyRecord,
        request: SignedRequest,
    ) -> impl std::future::Future<Output = Result<SignResult, CoordinatorError>> + Send {
        Engine::sign(self, key, request)
    }

    fn relays_dropped(&self) -> u64 {
        Engine::relays_dropped(self)
    }

    fn signer_sessions(&self) -> Vec<(String, NodeSessions)> {
        Engine::signer_sessions(self)
    }

    fn netting_open(
        &self,
        open: RoundOpen,
    ) -> impl std::future::Future<Output = Result<Vec<NodeAck>, CoordinatorError>> + Send {
        Engine::netting_open(self, open)
    }

    fn netting_bundle(
        &self,
        round: quorate_protocol::netting::RoundId,
        bundle: quorate_protocol::netting::InputBundle,
    ) -> impl std::future::Future<Output = Result<BundleOutcome, CoordinatorError>> + Send {
        Engine::netting_bundle(self, round, bundle)
    }

    fn netting_close(
        &self,
        round: quorate_protocol::netting::RoundId,
    ) -> impl std::future::Future<Output = Result<CloseOutcome, CoordinatorError>> + Send {
        Engine::netting_close(self, round)
    }

    fn netting_settle(
        &self,
        request: SettleRequest,
    ) -> impl std::future::Future<Output = Result<SettleOutcome, CoordinatorError>> + Send {
        Engine::netting_settle(self, request)
    }
}
