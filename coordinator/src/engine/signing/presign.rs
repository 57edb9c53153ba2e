//! The coordinator's presigned commitments: a [`PresignBook`] fed by the nodes'
//! `PresignOffer`s, for keys whose members it knows.
//!
//! The engine learns a key (suite and members) when it generates it or is first
//! asked to sign with it. An offer for a key it does not know yet (a coordinator
//! restarted: nodes offer as soon as they connect) is parked, the latest per
//! (key, node), at most [`MAX_PARKED_KEYS`] keys per node, and filed when the key
//! becomes known; an offer from a node that is not a member of the key is refused.
//! Nothing here is secret: commitments are public.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Instant,
};

use quorate_protocol::{
    presign::{BookConfig, Offer, PresignBook, PresignRef},
    Ciphersuite, GroupPublic, KeyId, NodeId, Payload, ProtocolError, Timestamp,
};

/// Keys per node whose offers wait for the key to become known.
pub(crate) const MAX_PARKED_KEYS: usize = 64;

/// Book, known keys and parked offers.
pub(crate) struct Presign {
    book: PresignBook,
    keys: BTreeMap<KeyId, (Ciphersuite, BTreeSet<NodeId>)>,
    parked: BTreeMap<NodeId, BTreeMap<KeyId, (Offer, Instant)>>,
    epoch: Instant,
}

impl Presign {
    pub(crate) fn new() -> Self {
        Self {
            // The default config is valid (cap 256).
            book: PresignBook::new(BookConfig::default()).unwrap_or_default(),
            keys: BTreeMap::new(),
            parked: BTreeMap::new(),
            epoch: Instant::now(),
        }
    }

    fn now(&self) -> Timestamp {
        Timestamp(u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    /// The key is known from here on; offers parked for it are filed.
    pub(crate) fn know(&mut self, public: &GroupPublic) {
        let members = public.members.keys().copied().collect();
        if self
            .keys
            .insert(public.key_id, (public.suite, members))
            .is_some()
        {
            return;
        }
        let waiting: Vec<(NodeId, (Offer, Instant))> = self
            .parked
            .iter_mut()
            .filter_map(|(node, offers)| offers.remove(&public.key_id).map(|o| (*node, o)))
            .collect();
        for (node, (mut offer, parked_at)) in waiting {
            // The node's clock for these nonces started when it offered them.
            let waited = u64::try_from(parked_at.elapsed().as_millis()).unwrap_or(u64::MAX);
            offer.lifetime_ms = offer.lifetime_ms.saturating_sub(waited);
            if offer.lifetime_ms == 0 {
                continue;
            }
            if let Err(e) = self.file(public.key_id, node, offer) {
                tracing::warn!(%node, error = %e, "parked presign offer refused");
            }
        }
    }

    /// A node's `PresignOffer` for `key` (the envelope verified, `node` its
    /// authenticated sender). Returns the commitments filed (0 when parked).
    pub(crate) fn offer(
        &mut self,
        key: KeyId,
        node: NodeId,
        payload: Payload,
    ) -> Result<usize, ProtocolError> {
        let offer = Offer::try_from(payload)?;
        if self.keys.contains_key(&key) {
            return self.file(key, node, offer);
        }
        let parked = self.parked.entry(node).or_default();
        if parked.len() >= MAX_PARKED_KEYS && !parked.contains_key(&key) {
            return Err(ProtocolError::PresignOfferStale {
                node,
                reason: format!("offers for {MAX_PARKED_KEYS} unknown keys already wait"),
            });
        }
        parked.insert(key, (offer, Instant::now()));
        Ok(0)
    }

    fn file(&mut self, key: KeyId, node: NodeId, offer: Offer) -> Result<usize, ProtocolError> {
        let Some((suite, members)) = self.keys.get(&key) else {
            return Ok(0);
        };
        if !members.contains(&node) {
            return Err(ProtocolError::PresignOfferInvalid {
                node,
                reason: format!("not a member of key {key}"),
            });
        }
        let (suite, now) = (*suite, self.now());
        self.book.offer(key, suite, node, offer, now)
    }

    /// Commitments usable now for `node` and `key`.
    pub(crate) fn available(&self, key: KeyId, node: &NodeId) -> usize {
        self.book.available(key, *node, self.now())
    }

    /// One commitment for each signer, or none taken at all.
    pub(crate) fn take_set(
        &mut self,
        key: KeyId,
        signers: &[NodeId],
    ) -> Option<BTreeMap<NodeId, PresignRef>> {
        let now = self.now();
        self.book.take_set(key, signers, now)
    }

    /// The node refused a presigned request (it restarted, or lost its pool) or
    /// disconnected: nothing it offered earlier is used again.
    pub(crate) fn forget(&mut self, node: &NodeId) {
        self.book.forget(*node);
        self.parked.remove(node);
    }

    /// Drops expired commitments.
    pub(crate) fn expire(&mut self) {
        let now = self.now();
        self.book.expire(now);
    }
}
