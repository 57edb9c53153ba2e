//! The signed envelope and its codec.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Payload, Round};
use crate::{
    error::ProtocolError,
    identity::{self, NodeIdentity},
    ids::{KeyId, NodeId, SessionId},
    suite::Ciphersuite,
};

/// Wire protocol version carried by every envelope.
/// 2: every DKG payload carries its run's parameter hash; `DkgComplete` carries the
/// sender's key attestation. 3: `SignRequest` and `PresignedSign` carry a window
/// certificate ([`crate::window`]).
pub const PROTOCOL_VERSION: u16 = 3;

/// Largest encoded envelope accepted, checked before decoding (invariant 7).
/// Sized for 100-member committees with room to spare.
pub const MAX_MESSAGE_SIZE: usize = 256 * 1024;

const DOMAIN: &[u8] = b"quorate/envelope/v1\0";

/// The context an envelope is bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Wire version.
    pub version: u16,
    /// Ciphersuite of the key.
    pub suite: Ciphersuite,
    /// The key this session creates or uses.
    pub key: KeyId,
    /// The session.
    pub session: SessionId,
    /// The round.
    pub round: Round,
    /// The sending node.
    pub sender: NodeId,
}

impl Header {
    /// The digest the sender signs: domain ‖ header ‖ SHA-256(payload).
    pub fn signing_digest(&self, payload_hash: &[u8; 32]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(DOMAIN);
        // Header encoding cannot fail: it holds only fixed-size fields.
        h.update(postcard::to_allocvec(self).unwrap_or_default());
        h.update(payload_hash);
        h.finalize().into()
    }
}

/// A protocol message: payload bound to its context and signed by its sender.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Wire version (must be [`PROTOCOL_VERSION`]).
    pub version: u16,
    /// Ciphersuite of the key.
    pub suite: Ciphersuite,
    /// Key id.
    pub key: KeyId,
    /// Session id.
    pub session: SessionId,
    /// Round; must agree with the payload.
    pub round: Round,
    /// Sender's node id.
    pub sender: NodeId,
    /// Content.
    pub payload: Payload,
    /// Sender's Ed25519 signature over [`Header::signing_digest`].
    pub signature: ed25519_dalek::Signature,
}

impl Envelope {
    /// Builds and signs an envelope from `identity`.
    pub fn seal(
        identity: &NodeIdentity,
        suite: Ciphersuite,
        key: KeyId,
        session: SessionId,
        payload: Payload,
    ) -> Self {
        let header = Header {
            version: PROTOCOL_VERSION,
            suite,
            key,
            session,
            round: payload.round(),
            sender: identity.node_id(),
        };
        let signature = identity.sign(&header.signing_digest(&payload_hash(&payload)));
        Self {
            version: header.version,
            suite,
            key,
            session,
            round: header.round,
            sender: header.sender,
            payload,
            signature,
        }
    }

    /// The signed context.
    pub fn header(&self) -> Header {
        Header {
            version: self.version,
            suite: self.suite,
            key: self.key,
            session: self.session,
            round: self.round,
            sender: self.sender,
        }
    }

    /// SHA-256 of the payload encoding.
    pub fn payload_hash(&self) -> [u8; 32] {
        payload_hash(&self.payload)
    }

    /// Checks the sender's signature.
    pub fn verify(&self) -> Result<(), ProtocolError> {
        identity::verify(
            &self.sender,
            &self.header().signing_digest(&self.payload_hash()),
            &self.signature,
        )
    }

    /// Transport-level check: the envelope's sender must be the authenticated peer.
    pub fn check_sender(&self, authenticated: &NodeId) -> Result<(), ProtocolError> {
        if &self.sender == authenticated {
            Ok(())
        } else {
            Err(ProtocolError::SenderMismatch {
                authenticated: *authenticated,
                claimed: self.sender,
            })
        }
    }

    /// Encodes with postcard.
    pub fn encode(&self) -> Vec<u8> {
        // Serializing into a Vec cannot fail for these types.
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Decodes, refusing anything over [`MAX_MESSAGE_SIZE`] before parsing, trailing
    /// bytes, unknown versions and a round that disagrees with the payload. Does not
    /// verify the signature (see [`Envelope::verify`]).
    pub fn decode(bytes: &[u8]) -> Result<Self, ProtocolError> {
        Self::decode_with_limit(bytes, MAX_MESSAGE_SIZE)
    }

    /// [`Envelope::decode`] with an explicit size cap.
    pub fn decode_with_limit(bytes: &[u8], max: usize) -> Result<Self, ProtocolError> {
        if bytes.len() > max {
            return Err(ProtocolError::TooLarge {
                len: bytes.len(),
                max,
            });
        }
        let (env, rest): (Self, _) = postcard::take_from_bytes(bytes)
            .map_err(|_| ProtocolError::Malformed("envelope does not decode"))?;
        if !rest.is_empty() {
            return Err(ProtocolError::Malformed("trailing bytes after envelope"));
        }
        if env.version != PROTOCOL_VERSION {
            return Err(ProtocolError::UnsupportedVersion(env.version));
        }
        if env.round != env.payload.round() {
            return Err(ProtocolError::Malformed("round does not match payload"));
        }
        Ok(env)
    }
}

fn payload_hash(payload: &Payload) -> [u8; 32] {
    Sha256::digest(postcard::to_allocvec(payload).unwrap_or_default()).into()
}
