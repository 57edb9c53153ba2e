//! Node side of presigning: an in-memory pool of round-1 nonces for one key and one
//! coordinator.
//!
//! [`NoncePool::refill`] tops the pool up and returns the
//! [`Payload::PresignOffer`] announcing the new commitments; [`NoncePool::take`]
//! hands out the nonces a `PresignedSign` names, exactly once, for
//! [`Signer::presigned`](crate::Signer::presigned).
//!
//! # Security
//! The pool never writes anything: nonces exist only in this value's memory, are
//! never serialized, and are gone when the process ends (invariant 1). There is no
//! way to export or restore them; a restarted node starts a new pool with a new
//! epoch. Taken nonces are moved out of the pool; expired ones are dropped. Every
//! drop zeroizes them (frost-core's `SigningNonces` is `ZeroizeOnDrop`). The pool
//! holds the node's key package (to hedge nonce generation with the signing share,
//! as frost-core does) and zeroizes it on drop.

use std::collections::BTreeMap;

use frost_core::{
    keys::KeyPackage,
    round1::{self, SigningCommitments, SigningNonces},
};
use rand_core::CryptoRngCore;

use super::MAX_OFFER;
use crate::{
    error::ProtocolError,
    ids::KeyId,
    key::KeyShare,
    machine::Timestamp,
    suite::{Ciphersuite, Suite},
    wire::Payload,
};

/// How a pool is sized and refreshed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolConfig {
    /// Nonces the pool holds when full (1..=[`MAX_OFFER`]).
    pub size: usize,
    /// [`NoncePool::refill`] tops up once fewer than this many are held (at most
    /// `size`; 0 refills only an empty pool).
    pub refill_below: usize,
    /// Milliseconds a nonce stays usable after it was generated (> 0).
    pub lifetime_ms: u64,
}

impl PoolConfig {
    /// Checks the bounds documented on the fields.
    pub fn validate(&self) -> Result<(), ProtocolError> {
        if self.size == 0 || self.size > MAX_OFFER {
            return Err(ProtocolError::InvalidParameters(format!(
                "pool size {} outside 1..={MAX_OFFER}",
                self.size
            )));
        }
        if self.refill_below > self.size {
            return Err(ProtocolError::InvalidParameters(format!(
                "refill threshold {} exceeds the pool size {}",
                self.refill_below, self.size
            )));
        }
        if self.lifetime_ms == 0 {
            return Err(ProtocolError::InvalidParameters(
                "nonce lifetime must be positive".into(),
            ));
        }
        Ok(())
    }
}

/// Counters of a pool, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Nonces generated (and offered).
    pub generated: u64,
    /// Nonces handed out by [`NoncePool::take`].
    pub taken: u64,
    /// Nonces dropped unused because their lifetime ended.
    pub expired: u64,
    /// [`NoncePool::take`] calls refused (unknown, used or expired ids).
    pub refused: u64,
}

/// Nonces taken from a pool for one signature: the input of
/// [`Signer::presigned`](crate::Signer::presigned).
///
/// # Security
/// Secret. Tagged with its ciphersuite, key and `(epoch, index)`; not `Clone`,
/// not serializable, and its `Debug` shows no secret. Dropping it (signed or not)
/// zeroizes the nonces.
pub struct PresignedNonces {
    key: KeyId,
    epoch: [u8; 16],
    index: u64,
    pub(crate) inner: NoncesInner,
}

/// One nonce pair with its commitment, for suite `C`.
pub(crate) struct Taken<C: Suite> {
    pub(crate) nonces: SigningNonces<C>,
    pub(crate) commitments: SigningCommitments<C>,
}

/// [`PresignedNonces`]'s suite-tagged content.
pub(crate) enum NoncesInner {
    Secp256k1(Taken<frost_secp256k1::Secp256K1Sha256>),
    Secp256k1Tr(Taken<frost_secp256k1_tr::Secp256K1Sha256TR>),
    Ed25519(Taken<frost_ed25519::Ed25519Sha512>),
}

/// Wraps a concrete suite's taken nonces (one impl per suite, so the generic pool
/// code can produce the suite-tagged value inside `with_inner!`).
pub(crate) trait IntoNonces: Sized {
    fn into_nonces(self, key: KeyId, epoch: [u8; 16], index: u64) -> PresignedNonces;
}

macro_rules! into_nonces {
    ($c:ty, $variant:ident) => {
        impl IntoNonces for Taken<$c> {
            fn into_nonces(self, key: KeyId, epoch: [u8; 16], index: u64) -> PresignedNonces {
                PresignedNonces {
                    key,
                    epoch,
                    index,
                    inner: NoncesInner::$variant(self),
                }
            }
        }
    };
}
into_nonces!(frost_secp256k1::Secp256K1Sha256, Secp256k1);
into_nonces!(frost_secp256k1_tr::Secp256K1Sha256TR, Secp256k1Tr);
into_nonces!(frost_ed25519::Ed25519Sha512, Ed25519);

impl PresignedNonces {
    /// The ciphersuite of the nonces.
    pub fn suite(&self) -> Ciphersuite {
        match &self.inner {
            NoncesInner::Secp256k1(_) => Ciphersuite::Secp256k1,
            NoncesInner::Secp256k1Tr(_) => Ciphersuite::Secp256k1Tr,
            NoncesInner::Ed25519(_) => Ciphersuite::Ed25519,
        }
    }

    /// The key whose pool issued them.
    pub fn key(&self) -> KeyId {
        self.key
    }

    /// The issuing pool's epoch.
    pub fn epoch(&self) -> [u8; 16] {
        self.epoch
    }

    /// Their index in that epoch.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// The serialized public commitments (as offered).
    pub fn commitments(&self) -> Result<Vec<u8>, ProtocolError> {
        fn encode<C: Suite>(t: &Taken<C>) -> Result<Vec<u8>, ProtocolError> {
            t.commitments
                .serialize()
                .map_err(|e| ProtocolError::Crypto(e.to_string()))
        }
        match &self.inner {
            NoncesInner::Secp256k1(t) => encode(t),
            NoncesInner::Secp256k1Tr(t) => encode(t),
            NoncesInner::Ed25519(t) => encode(t),
        }
    }
}

impl core::fmt::Debug for PresignedNonces {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PresignedNonces")
            .field("suite", &self.suite())
            .field("key", &self.key)
            .field("epoch", &hex::encode(self.epoch))
            .field("index", &self.index)
            .field("nonces", &"<secret>")
            .finish()
    }
}

/// A node's pool of presigned nonces for one key (and one coordinator), for any
/// supported ciphersuite.
///
/// # Security
/// Memory only: see the [module docs](self). Holds the node's key package for the
/// pool's lifetime (zeroized on drop).
pub struct NoncePool {
    inner: Inner,
}

crate::suite::suite_inner!(Pool);

impl NoncePool {
    /// An empty pool for `share` under `epoch` (draw a fresh one per pool with
    /// [`random_epoch`](super::random_epoch)); call [`NoncePool::refill`] to fill it.
    pub fn new(
        share: &KeyShare,
        epoch: [u8; 16],
        config: PoolConfig,
    ) -> Result<Self, ProtocolError> {
        config.validate()?;
        let inner = crate::suite::new_inner!(share.public.suite, Pool::new(share, epoch, config)?);
        Ok(Self { inner })
    }

    /// Drops expired nonces, then, when fewer than `refill_below` remain (or none),
    /// generates nonces up to the configured size and returns the
    /// [`Payload::PresignOffer`] announcing them (to send, sealed under the key's
    /// suite and id, to the pool's coordinator; the book ignores the envelope's
    /// session id). `None` when no refill is due. Offered nonces count as issued at
    /// once: an offer lost in transit only leaves nonces that expire unused.
    ///
    /// # Security
    /// Generates secret nonces from `rng` (hedged with the signing share); they stay
    /// in the pool.
    pub fn refill(&mut self, now: Timestamp, rng: &mut impl CryptoRngCore) -> Option<Payload> {
        crate::suite::with_inner!(&mut self.inner, p => p.refill(now, rng))
    }

    /// Removes and returns the nonces `(epoch, index)`, for one signature.
    ///
    /// Errors: [`ProtocolError::PresignUnknown`] when the epoch is not this pool's
    /// or the index was never issued; [`ProtocolError::PresignUsed`] when it was
    /// issued but already taken or has expired. On error nothing usable is consumed
    /// (an expired nonce the call finds is dropped, as [`NoncePool::expire`] would).
    pub fn take(
        &mut self,
        epoch: [u8; 16],
        index: u64,
        now: Timestamp,
    ) -> Result<PresignedNonces, ProtocolError> {
        crate::suite::with_inner!(&mut self.inner, p => {
            let key = p.key_id;
            p.take(epoch, index, now).map(|t| t.into_nonces(key, epoch, index))
        })
    }

    /// Drops (zeroizes) every nonce whose lifetime has ended; returns how many.
    pub fn expire(&mut self, now: Timestamp) -> usize {
        crate::suite::with_inner!(&mut self.inner, p => p.expire(now))
    }

    /// Nonces held (issued, not taken, not yet dropped by [`NoncePool::expire`]).
    pub fn held(&self) -> usize {
        crate::suite::with_inner!(&self.inner, p => p.slots.len())
    }

    /// Counters.
    pub fn stats(&self) -> PoolStats {
        crate::suite::with_inner!(&self.inner, p => p.stats)
    }

    /// This pool's epoch.
    pub fn epoch(&self) -> [u8; 16] {
        crate::suite::with_inner!(&self.inner, p => p.epoch)
    }

    /// The key the pool serves.
    pub fn key(&self) -> KeyId {
        crate::suite::with_inner!(&self.inner, p => p.key_id)
    }

    /// The key's ciphersuite.
    pub fn suite(&self) -> Ciphersuite {
        crate::suite::with_inner!(&self.inner, p => p.suite())
    }

    /// The configuration.
    pub fn config(&self) -> PoolConfig {
        crate::suite::with_inner!(&self.inner, p => p.config)
    }
}

struct Slot<C: Suite> {
    taken: Taken<C>,
    expires_at: Timestamp,
}

struct Pool<C: Suite> {
    key: KeyPackage<C>,
    key_id: KeyId,
    epoch: [u8; 16],
    config: PoolConfig,
    /// Next index to issue: every index below it was issued once.
    next: u64,
    /// Boxed: rebalancing the map moves pointers, never the nonces themselves (a
    /// moved-from copy would be freed without being zeroized).
    slots: BTreeMap<u64, Box<Slot<C>>>,
    stats: PoolStats,
}

impl<C: Suite> Pool<C> {
    fn new(share: &KeyShare, epoch: [u8; 16], config: PoolConfig) -> Result<Self, ProtocolError> {
        Ok(Self {
            key: share.key_package::<C>()?,
            key_id: share.public.key_id,
            epoch,
            config,
            next: 0,
            slots: BTreeMap::new(),
            stats: PoolStats::default(),
        })
    }

    fn suite(&self) -> Ciphersuite {
        C::SUITE
    }

    fn refill(&mut self, now: Timestamp, rng: &mut impl CryptoRngCore) -> Option<Payload> {
        self.expire(now);
        let held = self.slots.len();
        if held >= self.config.refill_below && held > 0 {
            return None;
        }
        let first = self.next;
        let mut commitments = Vec::new();
        let expires_at = now.plus_ms(self.config.lifetime_ms);
        for _ in held..self.config.size {
            let index = self.next;
            // Indices are never reissued; at u64::MAX the epoch is exhausted.
            let Some(next) = index.checked_add(1) else {
                break;
            };
            let (nonces, c) = round1::commit(self.key.signing_share(), rng);
            // Serializing a commitment cannot fail for a valid (non-identity) point;
            // should it, the nonces are dropped and the index stays unissued.
            let Ok(bytes) = c.serialize() else {
                continue;
            };
            self.slots.insert(
                index,
                Box::new(Slot {
                    taken: Taken {
                        nonces,
                        commitments: c,
                    },
                    expires_at,
                }),
            );
            self.next = next;
            self.stats.generated += 1;
            commitments.push(bytes);
        }
        if commitments.is_empty() {
            return None;
        }
        Some(Payload::PresignOffer {
            epoch: self.epoch,
            first,
            commitments,
            lifetime_ms: self.config.lifetime_ms,
        })
    }

    fn take(
        &mut self,
        epoch: [u8; 16],
        index: u64,
        now: Timestamp,
    ) -> Result<Taken<C>, ProtocolError> {
        if epoch != self.epoch || index >= self.next {
            self.stats.refused += 1;
            return Err(ProtocolError::PresignUnknown { epoch, index });
        }
        let Some(slot) = self.slots.remove(&index) else {
            self.stats.refused += 1;
            return Err(ProtocolError::PresignUsed { index });
        };
        if now >= slot.expires_at {
            // Dropped here (zeroized): an expired nonce is never handed out.
            drop(slot);
            self.stats.expired += 1;
            self.stats.refused += 1;
            return Err(ProtocolError::PresignUsed { index });
        }
        self.stats.taken += 1;
        Ok(slot.taken)
    }

    fn expire(&mut self, now: Timestamp) -> usize {
        let before = self.slots.len();
        self.slots.retain(|_, s| now < s.expires_at);
        let dropped = before - self.slots.len();
        self.stats.expired += dropped as u64;
        dropped
    }
}
