//! Presigned nonces: one-round signing from round-1 commitments registered ahead
//! of time.
//!
//! FROST's round 1 (nonce commitments) does not depend on the message, so it can be
//! done before a request arrives. Each node keeps, per (coordinator, key), an
//! in-memory [`NoncePool`] of fresh nonces and sends the coordinator their
//! commitments in a [`Payload::PresignOffer`](crate::Payload::PresignOffer); the
//! coordinator files them in its [`PresignBook`]. An online signature is then one
//! round trip instead of two:
//!
//! ```text
//! node ──PresignOffer{epoch, first, commitments, lifetime_ms}──▶ coordinator   (ahead of time)
//!                                                     PresignBook::offer
//! client request arrives:                             PresignBook::take_set → Aggregator::presigned
//! coordinator ──PresignedSign{request, message, tweak, package, epoch, index}──▶ each signer
//!   node: policy on `request`, NoncePool::take(epoch, index) → Signer::presigned → SignShare
//! coordinator ◀──SignShare── each signer;  Aggregator verifies every share, aggregates
//! ```
//!
//! A node refuses a request naming nonces it does not hold
//! ([`ProtocolError::PresignUnknown`](crate::ProtocolError::PresignUnknown),
//! [`ProtocolError::PresignUsed`](crate::ProtocolError::PresignUsed)); the
//! coordinator then drops what it holds for that node
//! ([`PresignBook::forget_epoch`], [`PresignBook::forget`]) and retries the
//! request, presigned with other signers or with the two-round protocol
//! ([`crate::Aggregator::new`]). When a coordinator runs short of commitments for
//! a node it simply signs in two rounds.
//!
//! # Ids
//! A presigned nonce is named by `(epoch, index)`. The epoch is 16 random bytes
//! drawn by the node for each pool it creates ([`random_epoch`]); a restarted node
//! (or a node reconnecting to a coordinator, which should start a new pool) has a
//! new epoch, so no id of an earlier pool can name a nonce of the new one. Indices
//! count up from 0 within an epoch and are never reissued. Offers carry a relative
//! lifetime, not a deadline, so the two sides need no common clock; the book stops
//! using a commitment [`BookConfig::safety_margin_ms`] before the node drops it,
//! which covers the offer's transit time.
//!
//! # Security
//! - **Single use (invariant 1).** The nonces live only in the node's pool, in
//!   memory; nothing here writes them anywhere or can restore them, and a restarted
//!   node has none. [`NoncePool::take`] removes them (a second take of the same id
//!   fails with `PresignUsed`), [`Signer::presigned`](crate::Signer::presigned)
//!   consumes them with its one signature (a second, different package is refused
//!   with [`NonceReused`](crate::ProtocolError::NonceReused)), and every path that
//!   drops them zeroizes them (frost-core's `SigningNonces` is `ZeroizeOnDrop`).
//! - **The coordinator cannot steer the commitment.** The signer checks that the
//!   signing package carries its own commitment unaltered, that the envelope's
//!   `(epoch, index)` are those of its nonces, that message and tweak are what it
//!   approved, and that every signer in the package is a member of the key — the
//!   same checks as the two-round protocol's round 2. Presigned commitments are
//!   public: knowing them early does not help an attacker, because FROST binds
//!   every nonce to the message and to the whole commitment list.
//! - **Policy is unchanged (invariant 4).** `PresignedSign` forwards the client's
//!   signed request verbatim; the node checks it and its own policy before it takes
//!   nonces from its pool.
//! - **Validated offers (invariant 8).** The book decodes every commitment as the
//!   key's ciphersuite and refuses non-canonical encodings and the identity element,
//!   naming the node ([`ProtocolError::PresignOfferInvalid`](crate::ProtocolError::PresignOfferInvalid)).
//!   It never hands out one commitment twice, refuses offers that repeat indices of
//!   the node's epoch, and keeps out epochs it retired.
//! - **Bounded (invariant 7).** An offer carries at most [`MAX_OFFER`] commitments
//!   (checked by the pool's configuration and by the book), a pool holds at most
//!   its configured size, the book at most [`BookConfig::cap`] per (key, node).
//!
//! Sans-IO like every machine of this crate: time and randomness are passed in.

pub mod book;
pub mod pool;
#[cfg(test)]
mod tests;

use frost_core::round1::SigningCommitments;
use rand_core::CryptoRngCore;

pub use book::{BookConfig, Offer, PresignBook, PresignRef};
pub use pool::{NoncePool, PoolConfig, PoolStats, PresignedNonces};

use crate::suite::Suite;

/// Most commitments one [`Payload::PresignOffer`](crate::Payload::PresignOffer) may
/// carry (and so the largest pool): about 20 KiB of commitments, well under
/// [`MAX_MESSAGE_SIZE`](crate::wire::MAX_MESSAGE_SIZE).
pub const MAX_OFFER: usize = 256;

/// A fresh random pool epoch.
pub fn random_epoch(rng: &mut impl CryptoRngCore) -> [u8; 16] {
    let mut epoch = [0u8; 16];
    rng.fill_bytes(&mut epoch);
    epoch
}

/// Decodes one serialized `SigningCommitments`, accepting only the canonical
/// encoding of valid, non-identity elements of the suite (invariant 8): the decoded
/// value must serialize back to exactly `bytes` (frost-core's decoder ignores
/// trailing bytes).
pub(crate) fn decode_commitment<C: Suite>(bytes: &[u8]) -> Option<SigningCommitments<C>> {
    let commitments = SigningCommitments::<C>::deserialize(bytes).ok()?;
    match commitments.serialize() {
        Ok(again) if again == bytes => Some(commitments),
        _ => None,
    }
}
