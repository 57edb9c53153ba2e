//! Presigned nonce pools: one [`NoncePool`] per (coordinator, key), in memory only.
//!
//! When a roster coordinator connects, the node starts a new pool (a new random
//! epoch) for every key it holds and offers the commitments (`PresignOffer`); it
//! tops each pool up once it falls below `presign_refill_below` and drops nonces
//! older than `presign_lifetime_secs`. When the coordinator disconnects its pools
//! are dropped (zeroized): a coordinator that comes back gets new epochs, and a
//! restarted node has no pool at all, so no nonce can be used twice across a crash
//! or a reconnection (invariant 1). A `PresignedSign` naming nonces this node does
//! not hold (another epoch, an index never issued, already used or expired) is
//! refused (`presign_unknown`, `presign_used`) and counted.

use std::collections::BTreeMap;

use quorate_protocol::{
    presign::{random_epoch, NoncePool, PoolConfig, PoolStats, PresignedNonces},
    Ciphersuite, KeyId, KeyShare, NodeId, Payload, ProtocolError, Timestamp,
};
use rand_core::CryptoRngCore;

use crate::metrics::{Label, Metrics};

/// An offer to send: to `coordinator`, for `key` of `suite`.
pub(crate) struct OfferOut {
    pub(crate) coordinator: NodeId,
    pub(crate) key: KeyId,
    pub(crate) suite: Ciphersuite,
    pub(crate) payload: Payload,
}

/// Every pool of the node.
pub(crate) struct Pools {
    config: Option<PoolConfig>,
    pools: BTreeMap<(NodeId, KeyId), NoncePool>,
    /// Stats already counted into the metrics, per pool.
    counted: BTreeMap<(NodeId, KeyId), PoolStats>,
}

impl Pools {
    /// Pools sized by `config` (`None`: presigning off, nothing is ever held).
    pub(crate) fn new(config: Option<PoolConfig>) -> Self {
        Self {
            config,
            pools: BTreeMap::new(),
            counted: BTreeMap::new(),
        }
    }

    /// Starts a pool for `key` with `coordinator` (replacing, and so discarding,
    /// any older one) and returns its first offer.
    ///
    /// # Security
    /// Generates nonces into memory; they never leave the pool except to sign.
    pub(crate) fn open(
        &mut self,
        coordinator: NodeId,
        share: &KeyShare,
        now: Timestamp,
        rng: &mut impl CryptoRngCore,
        metrics: &Metrics,
    ) -> Option<OfferOut> {
        let config = self.config?;
        let key = share.public.key_id;
        self.drop_pool(&(coordinator, key), metrics);
        let mut pool = match NoncePool::new(share, random_epoch(rng), config) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(%key, error = %e, "presign pool not created");
                return None;
            }
        };
        let payload = pool.refill(now, rng)?;
        let suite = pool.suite();
        self.pools.insert((coordinator, key), pool);
        self.sync(metrics);
        Some(OfferOut {
            coordinator,
            key,
            suite,
            payload,
        })
    }

    /// The coordinator disconnected: its pools are dropped.
    pub(crate) fn close(&mut self, coordinator: &NodeId, metrics: &Metrics) {
        let ids: Vec<(NodeId, KeyId)> = self
            .pools
            .keys()
            .filter(|(c, _)| c == coordinator)
            .copied()
            .collect();
        for id in ids {
            self.drop_pool(&id, metrics);
        }
        self.sync(metrics);
    }

    /// This node no longer holds `key`: its pools (every coordinator) are dropped.
    pub(crate) fn close_key(&mut self, key: &KeyId, metrics: &Metrics) {
        let ids: Vec<(NodeId, KeyId)> = self
            .pools
            .keys()
            .filter(|(_, k)| k == key)
            .copied()
            .collect();
        for id in ids {
            self.drop_pool(&id, metrics);
        }
        self.sync(metrics);
    }

    fn drop_pool(&mut self, id: &(NodeId, KeyId), metrics: &Metrics) {
        if let Some(pool) = self.pools.remove(id) {
            self.count(id, pool.stats(), metrics);
            self.counted.remove(id);
            metrics
                .presign
                .get_or_create(&label("discarded"))
                .inc_by(pool.held() as u64);
        }
    }

    /// Takes the nonces `coordinator` named for `key` (refused if not held).
    ///
    /// # Security
    /// Moves the nonces out of the pool: the same id is refused from here on.
    pub(crate) fn take(
        &mut self,
        coordinator: NodeId,
        key: KeyId,
        epoch: [u8; 16],
        index: u64,
        now: Timestamp,
        metrics: &Metrics,
    ) -> Result<PresignedNonces, ProtocolError> {
        let result = match self.pools.get_mut(&(coordinator, key)) {
            Some(pool) => pool.take(epoch, index, now),
            None => Err(ProtocolError::PresignUnknown { epoch, index }),
        };
        if result.is_err() {
            metrics.presign.get_or_create(&label("refused")).inc();
        }
        self.sync(metrics);
        result
    }

    /// Expires old nonces and tops up pools below their threshold: the offers to send.
    pub(crate) fn refill(
        &mut self,
        now: Timestamp,
        rng: &mut impl CryptoRngCore,
        metrics: &Metrics,
    ) -> Vec<OfferOut> {
        let mut out = Vec::new();
        for (&(coordinator, key), pool) in &mut self.pools {
            pool.expire(now);
            if let Some(payload) = pool.refill(now, rng) {
                out.push(OfferOut {
                    coordinator,
                    key,
                    suite: pool.suite(),
                    payload,
                });
            }
        }
        self.sync(metrics);
        out
    }

    fn count(&self, id: &(NodeId, KeyId), stats: PoolStats, metrics: &Metrics) {
        let seen = self.counted.get(id).copied().unwrap_or_default();
        for (name, now, before) in [
            ("generated", stats.generated, seen.generated),
            ("used", stats.taken, seen.taken),
            ("expired", stats.expired, seen.expired),
        ] {
            if now > before {
                metrics
                    .presign
                    .get_or_create(&label(name))
                    .inc_by(now - before);
            }
        }
    }

    /// Brings the metrics up to the pools' counters.
    fn sync(&mut self, metrics: &Metrics) {
        let mut held = 0;
        let stats: Vec<((NodeId, KeyId), PoolStats)> =
            self.pools.iter().map(|(id, p)| (*id, p.stats())).collect();
        for (id, s) in stats {
            self.count(&id, s, metrics);
            self.counted.insert(id, s);
        }
        for p in self.pools.values() {
            held += p.held();
        }
        metrics
            .presign_held
            .set(i64::try_from(held).unwrap_or(i64::MAX));
    }
}

fn label(s: &str) -> Label {
    Label { label: s.into() }
}
