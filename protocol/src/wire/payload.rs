//! Message payloads, one variant per protocol round.

use serde::{Deserialize, Serialize};

use crate::{ids::NodeId, seal::SealedBox};

/// The protocol step a message belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Round {
    /// DKG round 1: commitments and proof of knowledge, broadcast.
    DkgRound1,
    /// DKG echo: what each participant received in round 1, broadcast.
    DkgEcho,
    /// DKG round 2: a secret share sealed to one recipient.
    DkgRound2,
    /// DKG confirmation: the group key each participant derived.
    DkgConfirm,
    /// Signing: the coordinator asks a signer to take part.
    SignRequest,
    /// Signing round 1: a signer's nonce commitments.
    SignCommit,
    /// Signing round 2 request: the coordinator's signing package.
    SignPackage,
    /// Signing round 2 answer: a signature share.
    SignShare,
    /// A coordinator asks the committee to run a DKG.
    DkgStart,
    /// A participant reports the finished key's public data to the coordinator.
    DkgComplete,
    /// Netting: a coordinator announces a client-authorised round.
    NettingRound,
    /// Netting: one party's bundle header and this node's sealed shares.
    NettingBundle,
    /// Netting: the coordinator closes a round on the listed inputs.
    NettingClose,
    /// Netting: a node's signed shares of the public outputs.
    NettingPublic,
    /// Netting: a node's signed, sealed shares of one party's outputs.
    NettingParty,
    /// Netting: the coordinator asks a signer to sign a round's settlement batch.
    SettleRequest,
    /// Limit checks: the coordinator starts an attempt of a closed round's MPC.
    LimitStart,
    /// Limit checks: one part of a step message (either direction).
    LimitPart,
    /// Limit checks: a node's signed verdict and sealed bits.
    LimitResult,
    /// Presigning: a node registers fresh round-1 commitments with a coordinator.
    PresignOffer,
    /// Presigning: the coordinator's one-round signing request naming the
    /// recipient's presigned commitment.
    PresignedSign,
    /// Lifecycle: a coordinator starts an operator-approved reshare (or refresh).
    ReshareStart,
    /// Resharing: a dealer's Feldman commitment, broadcast.
    ReshareCommit,
    /// Resharing: what each new member received from the dealers, broadcast.
    ReshareEcho,
    /// Resharing: a dealer's sub-share, sealed to one new member.
    ReshareShare,
    /// Resharing: the group key and transcript a new member derived.
    ReshareConfirm,
    /// Lifecycle: the coordinator's proof that every new member confirmed.
    ReshareFinish,
    /// Lifecycle: the coordinator ends a run that did not commit.
    ReshareAbort,
    /// Repair: a coordinator starts an operator-approved share repair.
    RepairStart,
    /// Repair: a helper's delta, sealed to another helper.
    RepairDelta,
    /// Repair: a helper's sigma, sealed to the member being repaired.
    RepairSigma,
    /// Window limits: a coordinator asks a committee member to approve a request
    /// for the window (policy passed, amount reserved).
    WindowApprove,
    /// Window limits: a member's signed approval, back to the coordinator.
    WindowApproved,
}

/// One row of a DKG echo: what `sender`'s round-1 message hashed to, with the
/// sender's own envelope signature over it. Two rows for one sender with different
/// hashes and valid signatures prove that sender equivocated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EchoEntry {
    /// Whose round-1 message this row describes.
    pub sender: NodeId,
    /// SHA-256 of that message's payload encoding.
    pub payload_hash: [u8; 32],
    /// The sender's envelope signature, re-verifiable from the hash.
    pub signature: ed25519_dalek::Signature,
}

/// What a message carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Payload {
    /// DKG round 1 package (frost-core encoding).
    DkgRound1 {
        /// [`DkgConfig::params_hash`](crate::dkg::DkgConfig::params_hash) of the sender's run.
        params: [u8; 32],
        /// The coordinator's signed `DkgStart` envelope the sender runs under (encoded;
        /// empty in runs without a coordinator): proof of `params`.
        start: Vec<u8>,
        /// Serialized `frost_core::keys::dkg::round1::Package`.
        package: Vec<u8>,
    },
    /// Echo of all round-1 messages received, ordered by sender index.
    DkgEcho {
        /// [`DkgConfig::params_hash`](crate::dkg::DkgConfig::params_hash) of the sender's run.
        params: [u8; 32],
        /// One entry per committee member, including the echoing node.
        entries: Vec<EchoEntry>,
    },
    /// A round-2 secret share, sealed end-to-end to `recipient`.
    DkgRound2 {
        /// [`DkgConfig::params_hash`](crate::dkg::DkgConfig::params_hash) of the sender's run.
        params: [u8; 32],
        /// The only node able to open the box.
        recipient: NodeId,
        /// Sealed `frost_core::keys::dkg::round2::Package`.
        sealed: SealedBox,
    },
    /// The group key this participant derived, with a hash of the whole public key package.
    DkgConfirm {
        /// [`DkgConfig::params_hash`](crate::dkg::DkgConfig::params_hash) of the sender's run.
        params: [u8; 32],
        /// Serialized group verifying key.
        group_key: Vec<u8>,
        /// SHA-256 of the serialized public key package.
        transcript: [u8; 32],
    },
    /// Asks a signer to take part in signing `message`.
    SignRequest {
        /// The client's signed request, forwarded verbatim for the node's own checks.
        request: Vec<u8>,
        /// Bytes to sign.
        message: Vec<u8>,
        /// Optional Taproot merkle root.
        tweak: Option<[u8; 32]>,
        /// Window approvals of the request ([`crate::window`]); empty when the
        /// coordinator attaches none (required where the signer's policy sets a
        /// `window_quorum` for the request's client and asset).
        certificate: crate::window::WindowCertificate,
    },
    /// A signer's round-1 nonce commitments.
    SignCommit {
        /// Serialized `frost_core::round1::SigningCommitments`.
        commitments: Vec<u8>,
    },
    /// The coordinator's signing package.
    SignPackage {
        /// Serialized `frost_core::SigningPackage`.
        package: Vec<u8>,
        /// Optional Taproot merkle root.
        tweak: Option<[u8; 32]>,
    },
    /// A signature share.
    SignShare {
        /// Serialized `frost_core::round2::SignatureShare`.
        share: Vec<u8>,
    },
    /// Asks every committee member to run a DKG for the envelope's key id, suite and
    /// session (sent by a coordinator listed in the roster).
    DkgStart {
        /// Minimum number of signers of the new key.
        threshold: u16,
        /// Participants.
        committee: crate::committee::Committee,
        /// Deadline in milliseconds from start.
        timeout_ms: u64,
        /// Data residency: the roster segments the key's shares may live in (empty:
        /// any). Each participant refuses a committee member outside them and keeps
        /// them with its share.
        segments: Vec<String>,
    },
    /// The public data of the key a DKG produced, as this participant derived it.
    DkgComplete {
        /// Group public data (verifying key and verifying shares).
        public: crate::key::GroupPublic,
        /// The participant's signature over that data with its identity key
        /// ([`crate::attestation`]), relayed to clients by the coordinator.
        attestation: crate::attestation::KeyAttestation,
    },
    /// A netting round, with the authorising client's signature over its digest.
    NettingRound {
        /// The round definition.
        spec: crate::netting::RoundSpec,
        /// The creating client's authorisation.
        authorization: crate::netting::round::RoundAuthorization,
    },
    /// One party's bundle: the public header and the recipient node's sealed box.
    NettingBundle {
        /// The party-signed header.
        header: crate::netting::BundleHeader,
        /// This node's shares, sealed to it.
        sealed: SealedBox,
    },
    /// Close a round on these inputs: per party, the bundle digest the coordinator
    /// holds (`None`: no bundle).
    NettingClose {
        /// Round.
        round: crate::netting::RoundId,
        /// Per party, in round order.
        inputs: Vec<Option<[u8; 32]>>,
    },
    /// A node's signed shares of the public outputs.
    NettingPublic {
        /// The outputs.
        outputs: crate::netting::PublicOutputs,
    },
    /// A node's signed shares of one party's private outputs (sealed to the party).
    NettingParty {
        /// The outputs.
        outputs: crate::netting::PartyOutputs,
    },
    /// Asks a signer to sign a round's settlement batch, which it rebuilds from the
    /// nodes' public outputs; `message` must equal the batch's message.
    SettleRequest {
        /// Round.
        round: crate::netting::RoundId,
        /// Every node's public outputs the coordinator received.
        views: Vec<crate::netting::PublicOutputs>,
        /// The 32-byte settlement message ([`crate::netting::SettlementBatch::message`]).
        message: Vec<u8>,
    },
    /// Start (or restart, with a higher attempt) a closed round's limit checks.
    LimitStart {
        /// Round.
        round: crate::netting::RoundId,
        /// Attempt (1, 2, …; each attempt derives fresh keys).
        attempt: u32,
    },
    /// One part of a limit-check step message: a node's
    /// [`crate::netting::limits::step::NodeStep`] to the coordinator, or the
    /// coordinator's [`crate::netting::limits::step::KingStep`] to a node, in
    /// postcard, cut at [`crate::netting::limits::parts::PART_BYTES`].
    LimitPart {
        /// Round.
        round: crate::netting::RoundId,
        /// Attempt.
        attempt: u32,
        /// Step the message belongs to.
        step: u8,
        /// Part index.
        part: u32,
        /// Number of parts.
        parts: u32,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// A node's verdict and its sealed shares of every party's bits.
    LimitResult {
        /// The signed verdict.
        verdict: crate::netting::limits::verdict::LimitVerdict,
        /// Per participating party.
        bits: Vec<crate::netting::limits::verdict::LimitBits>,
    },
    /// Node → coordinator: round-1 commitments of nonces the node holds in its
    /// in-memory pool ([`crate::presign::pool::NoncePool`]) for the envelope's key, for
    /// one-round signing later. At most [`crate::presign::MAX_OFFER`] commitments.
    PresignOffer {
        /// The pool's epoch: random per pool (a restarted node starts a new one), so
        /// ids of a previous pool can never name this pool's nonces.
        epoch: [u8; 16],
        /// Index of the first commitment; the others follow as `first + 1`, ….
        first: u64,
        /// Serialized `frost_core::round1::SigningCommitments`, one per index.
        commitments: Vec<Vec<u8>>,
        /// Milliseconds (from when the node made the offer) after which the node
        /// drops these nonces; the coordinator stops using them earlier.
        lifetime_ms: u64,
    },
    /// Coordinator → one signer: a complete one-round signing request that uses the
    /// recipient's presigned commitment `(epoch, index)` (one envelope per signer).
    PresignedSign {
        /// The client's signed request, forwarded verbatim for the node's own checks.
        request: Vec<u8>,
        /// Bytes to sign.
        message: Vec<u8>,
        /// Optional Taproot merkle root.
        tweak: Option<[u8; 32]>,
        /// Serialized `frost_core::SigningPackage`: every chosen signer's presigned
        /// commitment and the message.
        package: Vec<u8>,
        /// Epoch of the recipient's pool the commitment comes from.
        epoch: [u8; 16],
        /// Index of the recipient's commitment in that epoch.
        index: u64,
        /// Window approvals of the request, as in `SignRequest`.
        certificate: crate::window::WindowCertificate,
    },
    /// Coordinator → every participant (dealers and new members): run the
    /// approved operation. Old shares stay in use until the run finishes.
    ReshareStart {
        /// Encoded [`ApprovedOperation`](crate::lifecycle::ApprovedOperation).
        operation: Vec<u8>,
        /// The old members that deal (at least the old threshold), sorted.
        dealers: Vec<NodeId>,
        /// Public data of the generation being replaced.
        old: crate::key::GroupPublic,
        /// The new committee with roster indices and sealing keys.
        committee: crate::committee::Committee,
        /// Generation number of the new shares.
        generation: u64,
        /// Milliseconds until missing participants are named and the run aborts.
        timeout_ms: u64,
    },
    /// Dealer → every other participant and the coordinator: the Feldman
    /// commitment to the dealer's
    /// resharing polynomial, whose constant term is the dealer's Lagrange-weighted
    /// old share.
    ReshareCommit {
        /// [`ReshareConfig::params_hash`](crate::lifecycle::ReshareConfig::params_hash).
        params: [u8; 32],
        /// Serialized group elements, one per coefficient (new threshold many).
        commitment: Vec<Vec<u8>>,
    },
    /// New member → every other participant: echo of the dealers' commitments.
    ReshareEcho {
        /// As in `ReshareCommit`.
        params: [u8; 32],
        /// One entry per dealer, in dealer order.
        entries: Vec<EchoEntry>,
    },
    /// Dealer → one new member: the dealer's polynomial at the member's index.
    ReshareShare {
        /// As in `ReshareCommit`.
        params: [u8; 32],
        /// The only node able to open the box.
        recipient: NodeId,
        /// The sealed scalar (canonical encoding).
        sealed: SealedBox,
    },
    /// New member → every other participant and the coordinator.
    ReshareConfirm {
        /// As in `ReshareCommit`.
        params: [u8; 32],
        /// Serialized group verifying key (unchanged by resharing).
        group_key: Vec<u8>,
        /// SHA-256 of the new serialized public key package.
        transcript: [u8; 32],
    },
    /// Coordinator → every participant: every new member's signed confirmation,
    /// so a participant that missed the end of the run can finish it.
    ReshareFinish {
        /// The coordinator's signed `ReshareStart` of the run (encoded), so an old
        /// member that took no part can check the proof and retire its share.
        start: Vec<u8>,
        /// The new serialized `frost_core::keys::PublicKeyPackage`, whose SHA-256
        /// every confirmation's transcript is.
        public_key_package: Vec<u8>,
        /// Encoded `ReshareConfirm` envelopes, one per new member.
        confirms: Vec<Vec<u8>>,
    },
    /// Coordinator → every participant: the run did not commit (it never held
    /// every member's confirmation); participants drop its pending shares and keep
    /// the old generation.
    ReshareAbort {
        /// Why (at most 256 bytes of UTF-8).
        reason: String,
    },
    /// Coordinator → helpers and the target: repair the target's share.
    RepairStart {
        /// Encoded [`ApprovedOperation`](crate::lifecycle::ApprovedOperation) of
        /// kind `repair` naming the target.
        operation: Vec<u8>,
        /// The key's public data (the generation in force).
        public: crate::key::GroupPublic,
        /// The helpers (at least the threshold) with roster indices and sealing keys.
        helpers: crate::committee::Committee,
        /// The member whose share is repaired.
        target: crate::committee::Member,
        /// Milliseconds until missing participants are named.
        timeout_ms: u64,
    },
    /// Helper → helper: one delta of the sender's weighted share.
    RepairDelta {
        /// [`RepairConfig::params_hash`](crate::lifecycle::RepairConfig::params_hash).
        params: [u8; 32],
        /// The only node able to open the box.
        recipient: NodeId,
        /// The sealed scalar.
        sealed: SealedBox,
    },
    /// Helper → target: the sum of the deltas the helper received.
    RepairSigma {
        /// As in `RepairDelta`.
        params: [u8; 32],
        /// The target.
        recipient: NodeId,
        /// The sealed scalar.
        sealed: SealedBox,
    },
    /// Coordinator → one committee member: approve the client's request for the
    /// window (the member runs its policy on it, which reserves the amount, and
    /// answers [`Payload::WindowApproved`] in the same session).
    WindowApprove {
        /// The client's signed request, forwarded verbatim for the node's own checks.
        request: Vec<u8>,
    },
    /// Member → coordinator: its signed approval of the request.
    WindowApproved {
        /// The approval.
        approval: crate::window::WindowApproval,
    },
}

impl Round {
    /// Key generation and lifecycle traffic (DKG and refresh/reshare), which
    /// travels on `/quorate/dkg/1`; everything else on `/quorate/sign/1`.
    pub fn is_key_setup(self) -> bool {
        matches!(
            self,
            Self::DkgStart
                | Self::DkgRound1
                | Self::DkgEcho
                | Self::DkgRound2
                | Self::DkgConfirm
                | Self::DkgComplete
                | Self::ReshareStart
                | Self::ReshareCommit
                | Self::ReshareEcho
                | Self::ReshareShare
                | Self::ReshareConfirm
                | Self::ReshareFinish
                | Self::ReshareAbort
                | Self::RepairStart
                | Self::RepairDelta
                | Self::RepairSigma
        )
    }
}

impl Payload {
    /// The round this payload belongs to.
    pub fn round(&self) -> Round {
        match self {
            Self::DkgRound1 { .. } => Round::DkgRound1,
            Self::DkgEcho { .. } => Round::DkgEcho,
            Self::DkgRound2 { .. } => Round::DkgRound2,
            Self::DkgConfirm { .. } => Round::DkgConfirm,
            Self::SignRequest { .. } => Round::SignRequest,
            Self::SignCommit { .. } => Round::SignCommit,
            Self::SignPackage { .. } => Round::SignPackage,
            Self::SignShare { .. } => Round::SignShare,
            Self::DkgStart { .. } => Round::DkgStart,
            Self::DkgComplete { .. } => Round::DkgComplete,
            Self::NettingRound { .. } => Round::NettingRound,
            Self::NettingBundle { .. } => Round::NettingBundle,
            Self::NettingClose { .. } => Round::NettingClose,
            Self::NettingPublic { .. } => Round::NettingPublic,
            Self::NettingParty { .. } => Round::NettingParty,
            Self::SettleRequest { .. } => Round::SettleRequest,
            Self::LimitStart { .. } => Round::LimitStart,
            Self::LimitPart { .. } => Round::LimitPart,
            Self::LimitResult { .. } => Round::LimitResult,
            Self::PresignOffer { .. } => Round::PresignOffer,
            Self::PresignedSign { .. } => Round::PresignedSign,
            Self::ReshareStart { .. } => Round::ReshareStart,
            Self::ReshareCommit { .. } => Round::ReshareCommit,
            Self::ReshareEcho { .. } => Round::ReshareEcho,
            Self::ReshareShare { .. } => Round::ReshareShare,
            Self::ReshareConfirm { .. } => Round::ReshareConfirm,
            Self::ReshareFinish { .. } => Round::ReshareFinish,
            Self::ReshareAbort { .. } => Round::ReshareAbort,
            Self::RepairStart { .. } => Round::RepairStart,
            Self::RepairDelta { .. } => Round::RepairDelta,
            Self::RepairSigma { .. } => Round::RepairSigma,
            Self::WindowApprove { .. } => Round::WindowApprove,
            Self::WindowApproved { .. } => Round::WindowApproved,
        }
    }
}
