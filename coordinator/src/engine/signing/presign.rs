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
    presign::{BookConfig, Offer, PresignBook, PresignRef, MAX_OFFER},
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
            // The book checks the whole offer, decoding every commitment.
            return self.file(key, node, offer);
        }
        // Parked undecoded (the suite is not known yet): only its shape is checked.
        check_shape(node, &offer)?;
        self.expire_parked();
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
        // Decoding is the costly part: an offer the book would cap is refused first.
        let held = self.book.available(key, node, now);
        let cap = self.book.config().cap;
        if held + offer.commitments.len() > cap {
            return Err(ProtocolError::PresignOfferStale {
                node,
                reason: format!(
                    "{held} commitments held and {} offered exceed the cap of {cap}",
                    offer.commitments.len()
                ),
            });
        }
        self.book.offer(key, suite, node, offer, now)
    }

    /// Parked offers whose lifetime ended are dropped.
    fn expire_parked(&mut self) {
        for offers in self.parked.values_mut() {
            offers.retain(|_, (o, at)| {
                u64::try_from(at.elapsed().as_millis()).unwrap_or(u64::MAX) < o.lifetime_ms
            });
        }
        self.parked.retain(|_, offers| !offers.is_empty());
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

    /// Drops expired commitments and parked offers.
    pub(crate) fn expire(&mut self) {
        let now = self.now();
        self.book.expire(now);
        self.expire_parked();
    }
}

/// Largest serialized `SigningCommitments` of any suite (two 33-byte SEC1 points
/// and frost-core's header for secp256k1; Ed25519's are smaller), with room.
const MAX_COMMITMENT_BYTES: usize = 96;

/// What can be checked of an offer without its key's suite: at most
/// [`MAX_OFFER`] commitments of plausible size, a lifetime. A parked offer is
/// decoded in full only when its key becomes known.
fn check_shape(node: NodeId, offer: &Offer) -> Result<(), ProtocolError> {
    let invalid = |reason: String| ProtocolError::PresignOfferInvalid { node, reason };
    if offer.commitments.is_empty() || offer.commitments.len() > MAX_OFFER {
        return Err(invalid(format!(
            "{} commitments; an offer carries 1 to {MAX_OFFER}",
            offer.commitments.len()
        )));
    }
    if offer
        .commitments
        .iter()
        .any(|c| c.is_empty() || c.len() > MAX_COMMITMENT_BYTES)
    {
        return Err(invalid(format!(
            "a commitment is empty or longer than {MAX_COMMITMENT_BYTES} bytes"
        )));
    }
    if offer.lifetime_ms == 0 {
        return Err(invalid("zero lifetime".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(count: usize, len: usize) -> Payload {
        Payload::PresignOffer {
            epoch: [1; 16],
            first: 0,
            commitments: vec![vec![2; len]; count],
            lifetime_ms: 60_000,
        }
    }

    #[test]
    fn offers_for_unknown_keys_are_checked_before_they_are_parked_and_bounded() {
        let mut p = Presign::new();
        let node = NodeId([7; 32]);
        assert!(p
            .offer(KeyId([0; 16]), node, offer(MAX_OFFER + 1, 69))
            .is_err());
        assert!(p.offer(KeyId([0; 16]), node, offer(1, 0)).is_err());
        assert!(p
            .offer(KeyId([0; 16]), node, offer(1, MAX_COMMITMENT_BYTES + 1))
            .is_err());
        for k in 0..MAX_PARKED_KEYS {
            let key = KeyId([u8::try_from(k).expect("small"); 16]);
            assert_eq!(p.offer(key, node, offer(4, 69)).expect("parked"), 0);
        }
        let err = p.offer(KeyId([0xFF; 16]), node, offer(4, 69));
        assert!(
            matches!(err, Err(ProtocolError::PresignOfferStale { .. })),
            "{err:?}"
        );
        p.forget(&node);
        assert_eq!(
            p.offer(KeyId([0xFF; 16]), node, offer(4, 69))
                .expect("parked"),
            0
        );
    }
}
