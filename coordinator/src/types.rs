//! Types shared by the engine, the HTTP API and the client library.

use quorate_protocol::{Ciphersuite, GroupPublic, KeyAttestation, KeyId, NodeId, SignatureBytes};
use serde::{Deserialize, Serialize};

/// Which nodes hold shares of a new key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Participants {
    /// Exactly these nodes.
    Nodes(Vec<NodeId>),
    /// Any `n` healthy nodes spanning at least `min_segments` distinct segments.
    Spanning {
        /// Number of participants.
        n: usize,
        /// Minimum number of distinct segments among them.
        min_segments: usize,
    },
}

/// What `POST /v1/keys` asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeySpec {
    /// Ciphersuite of the new key.
    pub ciphersuite: Ciphersuite,
    /// Minimum number of signers.
    pub threshold: u16,
    /// Who holds shares.
    pub participants: Participants,
    /// Data residency: the roster segments the key's shares may live in (empty: any).
    pub segments: Vec<String>,
}

/// A key the network holds, as the coordinator records it (public data only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// Group public data: suite, key id, threshold, members, verifying key and shares.
    pub public: GroupPublic,
    /// Every committee member's attestation of `public`, in index order (relayed
    /// from the nodes; the coordinator cannot make one).
    pub attestations: Vec<KeyAttestation>,
    /// Unix ms when the DKG finished.
    pub created_at_ms: u64,
    /// Share generation: 0 from the DKG, + 1 per refresh or reshare.
    pub generation: u64,
}

impl KeyRecord {
    /// Key id.
    pub fn key_id(&self) -> KeyId {
        self.public.key_id
    }
}

/// One signing attempt (ROAST-style retries make several).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// Signers asked.
    pub signers: Vec<NodeId>,
    /// `signed`, `blamed`, `timeout`, `refused`.
    pub outcome: String,
    /// Signers proven faulty (invalid shares) or silent in this attempt.
    pub blamed: Vec<NodeId>,
    /// Signers that refused, with their reason (`policy:<rule>`, …).
    pub refused: Vec<(NodeId, String)>,
}

/// A signature over one message of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageSignature {
    /// The message (as signed).
    pub message: Vec<u8>,
    /// The signature and the key it verifies under.
    pub signature: SignatureBytes,
}

/// The result of signing every message of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignResult {
    /// One signature per message, in request order.
    pub signatures: Vec<MessageSignature>,
    /// Every attempt made, for every message, in order.
    pub attempts: Vec<Attempt>,
}
