//! The crate's one error type.
//!
//! Errors fall in three groups, which callers treat differently:
//! - **message rejections** (`TooLarge`, `Malformed`, `BadSignature`, `UnknownSender`,
//!   `WrongContext`, `UnexpectedRound`, …): the message is dropped and counted, the
//!   session continues;
//! - **peer faults** (`Equivocation`, `Aborted`): the session is over and the error
//!   names the culprits ([`ProtocolError::culprits`]);
//! - **local refusals and bugs** (`NonceReused`, `RequestMismatch`, `InvalidParameters`,
//!   `InvalidState`, `Crypto`): nothing a peer can be blamed for;
//! - **presigning** ([`crate::presign`]): a node's pool refuses an id it never issued
//!   (`PresignUnknown`) or one already consumed or expired (`PresignUsed`); a
//!   coordinator's book refuses an offer with invalid content (`PresignOfferInvalid`,
//!   blaming the node) or one repeating indices it already saw (`PresignOfferStale`,
//!   nobody blamed: a duplicate delivery looks the same). None of them is fatal: the
//!   request or offer is refused on its own (invariant 11);
//! - **window certificates** ([`crate::window`]): `CertificateForged` (an approval
//!   that does not verify under the member it names) and `CertificateShort` (too few
//!   valid approvals); neither is fatal, the request is refused on its own;
//! - **`Attestation`**: a key's attestations are missing, do not verify or disagree
//!   with its data (a verifier's refusal to trust the key).

use crate::{ids::NodeId, wire::Round};

/// What a peer did wrong, carried by [`ProtocolError::Aborted`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Fault {
    /// A DKG round-1 proof of knowledge did not verify.
    #[error("invalid proof of knowledge")]
    InvalidProofOfKnowledge,
    /// A DKG round-2 share did not match the sender's commitment.
    #[error("invalid secret share")]
    InvalidSecretShare,
    /// A sealed payload could not be opened although its envelope was validly signed.
    #[error("sealed payload does not open")]
    UndecryptablePayload,
    /// A payload held a malformed, non-canonical or identity group element or scalar.
    #[error("invalid group element or scalar")]
    InvalidElement,
    /// An echo entry carried a signature that the named sender never made.
    #[error("forged echo entry")]
    ForgedEcho,
    /// The participant confirmed a different group key than ours.
    #[error("confirmed a different group key")]
    ConfirmationMismatch,
    /// A signature share did not verify against the signer's verifying share.
    #[error("invalid signature share")]
    InvalidSignatureShare,
    /// The participant sent nothing for the current round before the deadline.
    #[error("no message before the deadline")]
    Timeout,
    /// A DKG message under other parameters than ours that the sender cannot back
    /// with the coordinator's signed start (missing, forged or other parameters), or
    /// that contradicts its own round 1.
    #[error("DKG parameters not backed by the coordinator's signed start")]
    UnbackedParameters,
    /// The signing package omitted or altered the signer's own commitment.
    #[error("signing package does not carry our commitment")]
    CommitmentAltered,
    /// A resharing dealer's commitment does not open to its Lagrange-weighted old
    /// verifying share (it dealt something other than its share of the key).
    #[error("reshare commitment not bound to the dealer's old share")]
    UnboundReshare,
}

/// Every error the protocol core returns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// An encoded message exceeded the size cap; it was not decoded.
    #[error("message of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// Size of the received message.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// Bytes that do not decode as the expected structure.
    #[error("malformed message: {0}")]
    Malformed(&'static str),
    /// The envelope's protocol version is not one we speak.
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u16),
    /// The envelope signature does not verify under the claimed sender's key.
    #[error("envelope signature from {claimed:?} does not verify")]
    BadSignature {
        /// The sender named in the envelope.
        claimed: NodeId,
    },
    /// The authenticated transport peer is not the envelope's sender.
    #[error("envelope claims sender {claimed:?} but arrived from {authenticated:?}")]
    SenderMismatch {
        /// Peer authenticated by the transport.
        authenticated: NodeId,
        /// Sender written in the envelope.
        claimed: NodeId,
    },
    /// The sender is not a member of this session's committee.
    #[error("sender {0:?} is not a participant of this session")]
    UnknownSender(NodeId),
    /// The envelope belongs to another session, key or ciphersuite.
    #[error("message bound to another context ({0})")]
    WrongContext(&'static str),
    /// The envelope's round is not one this session accepts now.
    #[error("unexpected round {got:?}")]
    UnexpectedRound {
        /// Round carried by the message.
        got: Round,
    },
    /// A second, different message for the same (session, round, sender).
    #[error("{culprit:?} equivocated in round {round:?}")]
    Equivocation {
        /// The participant that sent two different messages.
        culprit: NodeId,
        /// Where it happened.
        round: Round,
    },
    /// The session was aborted because of the named peers.
    #[error("session aborted: {fault} by {culprits:?}")]
    Aborted {
        /// Everyone provably (or, for `Timeout`, observably) at fault.
        culprits: Vec<NodeId>,
        /// What they did.
        fault: Fault,
    },
    /// An authenticated DKG message was made under other parameters (threshold,
    /// committee, coordinator, …) than this node's: the coordinator gave the two
    /// participants different `DkgStart`s for one session. Blames the coordinator.
    #[error("coordinator {coordinator:?} gave {peer:?} other DKG parameters than this node")]
    ParametersDiffer {
        /// The coordinator that started the run: the culprit.
        coordinator: NodeId,
        /// The participant whose message showed the difference (not blamed).
        peer: NodeId,
    },
    /// A second signing request for commitments whose nonces were already consumed.
    #[error("nonces for this commitment were already used; refusing to sign again")]
    NonceReused,
    /// The signing package does not sign what this signer approved.
    #[error("signing package does not match the approved request: {0}")]
    RequestMismatch(&'static str),
    /// A client request breaks a bound (field and bound named).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// Caller supplied impossible parameters (threshold, committee, tweak, …).
    #[error("invalid parameters: {0}")]
    InvalidParameters(String),
    /// The machine was driven out of order (a caller bug).
    #[error("invalid state: {0}")]
    InvalidState(&'static str),
    /// A local cryptographic operation failed (never caused by a peer).
    #[error("local crypto failure: {0}")]
    Crypto(String),
    /// Key attestations are missing, do not verify, or disagree with the key data.
    #[error("key attestation: {0}")]
    Attestation(String),
    /// A netting input or round operation was refused by the caller's own checks
    /// (CSV, unknown instrument or counterparty, value outside the round's bounds).
    #[error("netting input: {0}")]
    NettingInput(String),
    /// A party's input bundle is inconsistent or forged: the party is to blame.
    #[error("bundle of party {party:?} refused: {reason}")]
    BadBundle {
        /// The party at fault.
        party: String,
        /// What is wrong.
        reason: String,
    },
    /// A bundle signed after the round's cut-off.
    #[error("bundle of party {party:?} signed at {signed_at} after the cut-off {cutoff}")]
    LateBundle {
        /// The party.
        party: String,
        /// When it signed (Unix seconds).
        signed_at: u64,
        /// The round's cut-off.
        cutoff: u64,
    },
    /// A net in this asset could leave the i64 range; nothing is opened.
    #[error("nets in asset {asset:?} could overflow i64")]
    NettingOverflow {
        /// The asset.
        asset: String,
    },
    /// Fewer than `t` node shares match the commitments; the named nodes' shares
    /// were missing, malformed or off the committed polynomial.
    #[error("opening failed: {reason} (culprits {culprits:?})")]
    OpeningFailed {
        /// What went wrong.
        reason: String,
        /// Nodes proven at fault.
        culprits: Vec<NodeId>,
    },
    /// A presigned signing request names nonces this pool never issued: another
    /// epoch (a previous run of the node, another pool) or an index beyond the last
    /// one offered. Nothing is consumed.
    #[error("presigned nonces {index} of epoch {epoch_hex} were never issued by this pool", epoch_hex = hex::encode(.epoch))]
    PresignUnknown {
        /// The epoch the request named.
        epoch: [u8; 16],
        /// The index the request named.
        index: u64,
    },
    /// A presigned signing request names nonces this pool issued but no longer
    /// holds: already used for a signature, or expired (invariant 1).
    #[error("presigned nonces {index} were already used or have expired; refusing to sign")]
    PresignUsed {
        /// The index the request named.
        index: u64,
    },
    /// A node's presign offer is invalid (too many commitments, a commitment that
    /// does not decode canonically as the key's ciphersuite, zero lifetime, index
    /// overflow): provably the node's fault (invariant 8). The offer is dropped whole.
    #[error("presign offer from {node:?} refused: {reason}")]
    PresignOfferInvalid {
        /// The node that signed the offer: the culprit.
        node: NodeId,
        /// What is wrong.
        reason: String,
    },
    /// A node's presign offer repeats or overlaps indices already seen in its epoch,
    /// or names a retired epoch. Refused without blame (a duplicate or replayed
    /// delivery looks the same); nothing in the book changes.
    #[error("presign offer from {node:?} is stale: {reason}")]
    PresignOfferStale {
        /// The node named in the offer (not blamed).
        node: NodeId,
        /// What repeats.
        reason: String,
    },
    /// A node validly signed outputs computed on other inputs than this node's:
    /// the coordinator closed the round differently at different nodes.
    #[error("node {node:?} computed the round on other inputs than this node (the coordinator closed it differently)")]
    InputsDiffer {
        /// The node whose signed outputs show the other inputs (not at fault).
        node: NodeId,
    },
    /// Per asset the multilateral nets must sum to zero; they do not.
    #[error("conservation check failed in asset {asset:?}: nets sum to {imbalance}")]
    ConservationFailed {
        /// The asset.
        asset: String,
        /// The sum of nets.
        imbalance: i128,
    },
    /// The limit-check MPC stopped: a check failed (a multiplication was tampered
    /// with, an opening was off its polynomial, the coordinator relayed different
    /// values to different nodes) or a message was malformed. Names the nodes
    /// identified, empty when the fault cannot be attributed.
    #[error("limit check aborted at step {step}: {reason} (culprits {culprits:?})")]
    LimitCheckAborted {
        /// Protocol step (see `NETTING.md`, "Limit checks").
        step: u8,
        /// What went wrong.
        reason: String,
        /// Nodes identified as at fault.
        culprits: Vec<NodeId>,
    },
    /// A window certificate holds an approval, naming a committee member, whose
    /// signature does not verify under that member's key ([`crate::window`]). The
    /// node is named, not blamed: whoever assembled the certificate altered it.
    #[error("window approval claiming node {node} does not verify")]
    CertificateForged {
        /// The node the forged approval names.
        node: NodeId,
    },
    /// A window certificate holds fewer valid approvals of distinct committee
    /// members for this request than required ([`crate::window`]).
    #[error("window certificate holds {have} valid approvals of committee members; {need} needed")]
    CertificateShort {
        /// Distinct committee members with a valid approval of this request.
        have: usize,
        /// The quorum required.
        need: usize,
    },
}

impl ProtocolError {
    /// The peers this error blames, empty when nobody is to blame.
    pub fn culprits(&self) -> Vec<NodeId> {
        match self {
            Self::Equivocation { culprit, .. } => vec![*culprit],
            Self::Aborted { culprits, .. } => culprits.clone(),
            Self::ParametersDiffer { coordinator, .. } => vec![*coordinator],
            Self::OpeningFailed { culprits, .. } => culprits.clone(),
            Self::LimitCheckAborted { culprits, .. } => culprits.clone(),
            Self::PresignOfferInvalid { node, .. } => vec![*node],
            _ => Vec::new(),
        }
    }

    /// True when the error ends the session (as opposed to dropping one message).
    ///
    /// The presigning refusals are not fatal: the pool and the book are not
    /// sessions, and a refused id or offer leaves them serving every other request.
    /// (A presigned signer session that gets a package it must refuse fails with
    /// [`ProtocolError::NonceReused`], [`ProtocolError::RequestMismatch`] or
    /// [`ProtocolError::Aborted`], which are.)
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            Self::Equivocation { .. }
                | Self::Aborted { .. }
                | Self::ParametersDiffer { .. }
                | Self::NonceReused
                | Self::RequestMismatch(_)
                | Self::InvalidState(_)
                | Self::Crypto(_)
        )
    }

    pub(crate) fn aborted(culprit: NodeId, fault: Fault) -> Self {
        Self::Aborted {
            culprits: vec![culprit],
            fault,
        }
    }
}
