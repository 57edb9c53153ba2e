//! JSON bodies of the HTTP API, shared by the server, the store and the client.
//!
//! Binary values (ids, keys, signatures, messages) are lowercase hex strings.

use quorate_protocol::{
    request::{RequestBody, SigningRequest},
    Ciphersuite, GroupPublic, NodeId,
};
use serde::{Deserialize, Serialize};

use crate::{
    api::problem::Problem,
    types::{Attempt, KeyRecord, KeySpec, Participants, SignResult},
};

/// Body of `POST /v1/keys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyBody {
    /// `secp256k1`, `secp256k1-tr` or `ed25519`.
    pub ciphersuite: Ciphersuite,
    /// Minimum number of signers (≥ 2).
    pub threshold: u16,
    /// Who holds shares.
    pub participants: ParticipantsBody,
    /// Data residency: the roster segments the key's shares may live in (absent or
    /// empty: any). Every participant must be in one of them; nodes check it too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub segments: Vec<String>,
}

/// Who holds shares of a new key (exactly one member).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ParticipantsBody {
    /// Exactly these nodes (node ids, 32 bytes hex).
    Nodes(Vec<String>),
    /// Any `n` healthy nodes spanning at least `min_segments` distinct segments.
    Spanning {
        /// Number of participants.
        n: usize,
        /// Minimum number of distinct network segments.
        min_segments: usize,
    },
}

impl CreateKeyBody {
    /// Converts to the engine's [`KeySpec`]; `Err((field, message))` on a bad node id.
    pub fn to_spec(&self) -> Result<KeySpec, (String, String)> {
        let participants = match &self.participants {
            ParticipantsBody::Nodes(ids) => Participants::Nodes(
                ids.iter()
                    .enumerate()
                    .map(|(i, s)| {
                        NodeId::from_hex(s)
                            .map_err(|e| (format!("participants.nodes[{i}]"), e.to_string()))
                    })
                    .collect::<Result<_, _>>()?,
            ),
            ParticipantsBody::Spanning { n, min_segments } => Participants::Spanning {
                n: *n,
                min_segments: *min_segments,
            },
        };
        if self.segments.len() > 255 || self.segments.iter().any(|s| s.is_empty() || s.len() > 64) {
            return Err((
                "segments".into(),
                "at most 255 segment names of 1 to 64 bytes".into(),
            ));
        }
        Ok(KeySpec {
            ciphersuite: self.ciphersuite,
            threshold: self.threshold,
            participants,
            segments: self.segments.clone(),
        })
    }

    /// From an engine [`KeySpec`].
    pub fn from_spec(spec: &KeySpec) -> Self {
        Self {
            ciphersuite: spec.ciphersuite,
            threshold: spec.threshold,
            participants: match &spec.participants {
                Participants::Nodes(n) => {
                    ParticipantsBody::Nodes(n.iter().map(ToString::to_string).collect())
                }
                Participants::Spanning { n, min_segments } => ParticipantsBody::Spanning {
                    n: *n,
                    min_segments: *min_segments,
                },
            },
            segments: spec.segments.clone(),
        }
    }
}

/// A participant of a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantView {
    /// Node id (hex).
    pub node: String,
    /// FROST participant index (1-based).
    pub index: u16,
    /// The participant's verifying share, serialized by frost-core (hex), when decodable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verifying_share: Option<String>,
}

/// The group public key in the suite's native encodings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicKeyView {
    /// Compressed SEC1 point, 33 bytes (secp256k1 and secp256k1-tr).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compressed: Option<String>,
    /// BIP340 x-only key, 32 bytes (secp256k1-tr: the Taproot output key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x_only: Option<String>,
    /// Ed25519 public key, 32 bytes (ed25519).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ed25519: Option<String>,
}

/// A committee member's key attestation (see the README's "Key attestations").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttestationView {
    /// The attesting node id (hex, 32 bytes).
    pub node: String,
    /// Ed25519 signature over `"quorate/key-attestation/v1\0" ‖ postcard(AttestedKey)`
    /// (hex, 64 bytes).
    pub signature: String,
}

/// `GET /v1/keys/{id}` and the `POST /v1/keys` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyView {
    /// Key id (16 bytes hex).
    pub key_id: String,
    /// Ciphersuite.
    pub ciphersuite: Ciphersuite,
    /// Minimum number of signers.
    pub threshold: u16,
    /// Group verifying key as frost-core serializes it (hex).
    pub verifying_key: String,
    /// Native encodings of the group key.
    pub public_key: PublicKeyView,
    /// Participants in index order.
    pub participants: Vec<ParticipantView>,
    /// Serialized frost-core `PublicKeyPackage` (hex), for verifiers that want it whole.
    pub public_key_package: String,
    /// Unix ms when the key was generated.
    pub created_at_ms: u64,
    /// Every committee member's attestation of this key, in index order. Clients
    /// must verify them against their pinned roster before trusting the key.
    pub attestations: Vec<AttestationView>,
    /// Share generation: 0 from the DKG, + 1 per refresh or reshare (absent from
    /// older coordinators: 0).
    #[serde(default)]
    pub generation: u64,
    /// The network-wide rolling-window bound for every window quorum `q` from `t`
    /// to `n` ([`quorate_protocol::window::bounds`]; absent from older
    /// coordinators: empty).
    #[serde(default)]
    pub window_bounds: Vec<quorate_protocol::window::WindowBound>,
}

fn native(suite: Ciphersuite, vk: &[u8]) -> PublicKeyView {
    let mut v = PublicKeyView {
        compressed: None,
        x_only: None,
        ed25519: None,
    };
    match suite {
        Ciphersuite::Secp256k1 => v.compressed = Some(hex::encode(vk)),
        Ciphersuite::Secp256k1Tr => match vk.len() {
            33 => {
                v.compressed = Some(hex::encode(vk));
                v.x_only = vk.get(1..).map(hex::encode);
            }
            32 => {
                // BIP340 keys have even Y.
                let mut c = vec![0x02];
                c.extend_from_slice(vk);
                v.compressed = Some(hex::encode(c));
                v.x_only = Some(hex::encode(vk));
            }
            _ => v.compressed = Some(hex::encode(vk)),
        },
        Ciphersuite::Ed25519 => v.ed25519 = Some(hex::encode(vk)),
    }
    v
}

fn verifying_shares(public: &GroupPublic) -> Vec<(u16, String)> {
    fn decode<C: frost_core::Ciphersuite>(
        pkp: &[u8],
        indices: &[u16],
    ) -> Option<Vec<(u16, String)>> {
        let pkp = frost_core::keys::PublicKeyPackage::<C>::deserialize(pkp).ok()?;
        let mut out = Vec::new();
        for &i in indices {
            let id = frost_core::Identifier::<C>::try_from(i).ok()?;
            let share = pkp.verifying_shares().get(&id)?;
            out.push((i, hex::encode(share.serialize().ok()?)));
        }
        Some(out)
    }
    let indices: Vec<u16> = public.members.values().copied().collect();
    let pkp = &public.public_key_package;
    match public.suite {
        Ciphersuite::Secp256k1 => decode::<frost_secp256k1::Secp256K1Sha256>(pkp, &indices),
        Ciphersuite::Secp256k1Tr => decode::<frost_secp256k1_tr::Secp256K1Sha256TR>(pkp, &indices),
        Ciphersuite::Ed25519 => decode::<frost_ed25519::Ed25519Sha512>(pkp, &indices),
    }
    .unwrap_or_default()
}

impl KeyView {
    /// Builds the view of a key record.
    pub fn from_record(record: &KeyRecord) -> Self {
        let p = &record.public;
        let shares = verifying_shares(p);
        let mut participants: Vec<ParticipantView> = p
            .members
            .iter()
            .map(|(node, index)| ParticipantView {
                node: node.to_string(),
                index: *index,
                verifying_share: shares
                    .iter()
                    .find(|(i, _)| i == index)
                    .map(|(_, s)| s.clone()),
            })
            .collect();
        participants.sort_by_key(|p| p.index);
        Self {
            key_id: p.key_id.to_string(),
            ciphersuite: p.suite,
            threshold: p.threshold,
            verifying_key: hex::encode(&p.verifying_key),
            public_key: native(p.suite, &p.verifying_key),
            participants,
            public_key_package: hex::encode(&p.public_key_package),
            created_at_ms: record.created_at_ms,
            generation: record.generation,
            window_bounds: quorate_protocol::window::bounds(
                u16::try_from(p.members.len()).unwrap_or(u16::MAX),
                p.threshold,
            ),
            attestations: record
                .attestations
                .iter()
                .map(|a| AttestationView {
                    node: a.node.to_string(),
                    signature: hex::encode(a.signature.to_bytes()),
                })
                .collect(),
        }
    }
}

/// `GET /v1/keys`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyList {
    /// Every key, in creation order.
    pub keys: Vec<KeyView>,
}

/// Body of `POST /v1/keys/{id}/signatures`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignBody {
    /// Hex of `SignedRequest::encode()` (postcard), at most 64 KiB decoded.
    pub signed_request: String,
}

/// State of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Still running.
    Pending,
    /// Every message was signed; see `result`.
    Succeeded,
    /// Gave up; see `problem`.
    Failed,
}

/// A node's refusal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusalView {
    /// Node id (hex).
    pub node: String,
    /// Reason, e.g. `policy:amount_limit`.
    pub reason: String,
}

/// One signing attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptView {
    /// Signers asked (hex node ids).
    pub signers: Vec<String>,
    /// `signed`, `blamed`, `timeout` or `refused`.
    pub outcome: String,
    /// Signers proven faulty or silent.
    pub blamed: Vec<String>,
    /// Signers that refused.
    pub refused: Vec<RefusalView>,
}

impl From<&Attempt> for AttemptView {
    fn from(a: &Attempt) -> Self {
        Self {
            signers: a.signers.iter().map(ToString::to_string).collect(),
            outcome: a.outcome.clone(),
            blamed: a.blamed.iter().map(ToString::to_string).collect(),
            refused: a
                .refused
                .iter()
                .map(|(n, r)| RefusalView {
                    node: n.to_string(),
                    reason: r.clone(),
                })
                .collect(),
        }
    }
}

/// A signature over one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureView {
    /// The message (hex).
    pub message: String,
    /// The signature (hex): 64 bytes for ed25519 and secp256k1-tr (BIP340), 65 for secp256k1.
    pub signature: String,
    /// The key it verifies under (hex, frost-core serialization; tweaked if a tweak was used).
    pub verifying_key: String,
}

/// Result of a succeeded job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobResult {
    /// One signature per message, in request order.
    pub signatures: Vec<SignatureView>,
    /// Every attempt made (ROAST-style retries), with blame.
    pub attempts: Vec<AttemptView>,
    /// `bitcoin_psbt` requests: the PSBT (same version, hex of its binary
    /// serialization) with `tap_key_sig` set on every input signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub psbt: Option<String>,
    /// `bitcoin_psbt` requests whose every input is signed here or already final:
    /// the signed transaction, network serialization (hex), ready to broadcast.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction: Option<String>,
}

impl JobResult {
    /// The result of `request`: its signatures and attempts and, for a PSBT
    /// request, the signed PSBT and transaction.
    pub fn of(r: &SignResult, request: &SigningRequest) -> Result<Self, String> {
        let mut out = Self::from(r);
        if let RequestBody::BitcoinPsbt(p) = &request.body {
            let sigs: Vec<Vec<u8>> = r
                .signatures
                .iter()
                .map(|s| s.signature.signature.clone())
                .collect();
            let done = quorate_protocol::psbt::finish(p, &sigs).map_err(|e| e.to_string())?;
            out.psbt = Some(hex::encode(done.psbt));
            out.transaction = done.transaction.map(hex::encode);
        }
        Ok(out)
    }
}

impl From<&SignResult> for JobResult {
    fn from(r: &SignResult) -> Self {
        Self {
            signatures: r
                .signatures
                .iter()
                .map(|s| SignatureView {
                    message: hex::encode(&s.message),
                    signature: hex::encode(&s.signature.signature),
                    verifying_key: hex::encode(&s.signature.verifying_key),
                })
                .collect(),
            attempts: r.attempts.iter().map(AttemptView::from).collect(),
            psbt: None,
            transaction: None,
        }
    }
}

/// A signing job (`GET /v1/jobs/{id}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// Job id (16 bytes hex).
    pub id: String,
    /// Key id (hex).
    pub key_id: String,
    /// Client public key (hex).
    pub client: String,
    /// Hash of the client's request (`SigningRequest::hash`, hex): what audit records cite.
    pub request_hash: String,
    /// Number of messages in the request.
    pub messages: usize,
    /// `pending`, `succeeded` or `failed`.
    pub status: JobStatus,
    /// Unix ms when the job was accepted.
    pub created_at_ms: u64,
    /// Unix ms when it finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at_ms: Option<u64>,
    /// Signatures and attempts (succeeded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<JobResult>,
    /// Why it failed (failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<Problem>,
}

/// `GET /health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// `ok`.
    pub status: String,
    /// Crate version.
    pub version: String,
    /// Keys known.
    pub keys: usize,
    /// Jobs running in this process.
    pub pending_jobs: usize,
    /// Roster names of the signer nodes the coordinator is connected to now
    /// (absent from older coordinators).
    #[serde(default)]
    pub connected_nodes: Vec<String>,
}
