//! Coordinator side of presigning: the commitments each node has registered, per
//! key. Sans-IO and secret-free: it holds only public commitments.
//!
//! Per (key, node) the book keeps the node's latest epoch, the highest index seen
//! in it and a queue of unused commitments with the time the book stops using
//! them. It hands each commitment out at most once ([`PresignBook::take`],
//! [`PresignBook::take_set`]); the node's pool enforces single use on its side
//! independently, so a book that is wrong (or a coordinator that lies) can make a
//! signature fail but never make a node reuse a nonce.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::{decode_commitment, MAX_OFFER};
use crate::{
    dispatch,
    error::ProtocolError,
    ids::{KeyId, NodeId},
    machine::Timestamp,
    suite::Ciphersuite,
    wire::Payload,
};

/// Epochs per (key, node) remembered after they were replaced or forgotten, so a
/// replayed offer of an old epoch cannot displace the current one.
const RETIRED_EPOCHS: usize = 8;

/// Bounds and timing of a book.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BookConfig {
    /// Most unused commitments kept per (key, node); the oldest are dropped first
    /// beyond it. At least 1.
    pub cap: usize,
    /// Milliseconds before the end of an offer's lifetime (counted from when the
    /// book received it) at which the book stops using its commitments, so it never
    /// picks one the node has already dropped. Must exceed the offer's transit time.
    pub safety_margin_ms: u64,
}

impl Default for BookConfig {
    fn default() -> Self {
        Self {
            cap: MAX_OFFER,
            safety_margin_ms: 5_000,
        }
    }
}

/// The fields of a [`Payload::PresignOffer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// The node pool's epoch.
    pub epoch: [u8; 16],
    /// Index of the first commitment.
    pub first: u64,
    /// Serialized `SigningCommitments`, for indices `first`, `first + 1`, ….
    pub commitments: Vec<Vec<u8>>,
    /// Lifetime in milliseconds from when the node made the offer.
    pub lifetime_ms: u64,
}

impl TryFrom<Payload> for Offer {
    type Error = ProtocolError;
    fn try_from(payload: Payload) -> Result<Self, ProtocolError> {
        match payload {
            Payload::PresignOffer {
                epoch,
                first,
                commitments,
                lifetime_ms,
            } => Ok(Self {
                epoch,
                first,
                commitments,
                lifetime_ms,
            }),
            other => Err(ProtocolError::UnexpectedRound { got: other.round() }),
        }
    }
}

/// One presigned commitment handed out for a signature: what
/// [`Aggregator::presigned`](crate::Aggregator::presigned) needs per signer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresignRef {
    /// The node pool's epoch.
    pub epoch: [u8; 16],
    /// The commitment's index in that epoch.
    pub index: u64,
    /// Serialized `SigningCommitments` (validated when offered).
    pub commitments: Vec<u8>,
}

#[derive(Debug, Clone)]
struct Entry {
    index: u64,
    commitments: Vec<u8>,
    expires_at: Timestamp,
}

#[derive(Debug, Clone, Default)]
struct NodeEntries {
    epoch: [u8; 16],
    /// One past the highest index seen in `epoch`: a later offer must start here
    /// or above.
    next: u64,
    queue: VecDeque<Entry>,
    retired: VecDeque<[u8; 16]>,
}

impl NodeEntries {
    fn prune(&mut self, now: Timestamp) {
        self.queue.retain(|e| now < e.expires_at);
    }

    fn retire(&mut self) {
        self.queue.clear();
        if !self.retired.contains(&self.epoch) {
            if self.retired.len() == RETIRED_EPOCHS {
                self.retired.pop_front();
            }
            self.retired.push_back(self.epoch);
        }
    }
}

/// The coordinator's record of presigned commitments (no secrets).
#[derive(Debug, Clone, Default)]
pub struct PresignBook {
    config: BookConfig,
    nodes: BTreeMap<(KeyId, NodeId), NodeEntries>,
}

impl PresignBook {
    /// An empty book.
    pub fn new(config: BookConfig) -> Result<Self, ProtocolError> {
        if config.cap == 0 {
            return Err(ProtocolError::InvalidParameters(
                "presign book cap must be at least 1".into(),
            ));
        }
        Ok(Self {
            config,
            nodes: BTreeMap::new(),
        })
    }

    /// Files `node`'s offer for `key`, whose ciphersuite is `suite` (take it from
    /// the key's public data, not from the envelope). The caller has admitted the
    /// offer's envelope (signature, authenticated sender) and checked that `node`
    /// holds a share of `key`. Returns how many commitments were added.
    ///
    /// The offer is refused whole, leaving the book unchanged, when it is invalid —
    /// empty, over [`MAX_OFFER`], zero lifetime, indices past `u64::MAX`, or a
    /// commitment that does not decode canonically as `suite`
    /// ([`ProtocolError::PresignOfferInvalid`], naming the node) — or stale: its
    /// epoch is one the book retired, or it repeats indices already seen in the
    /// node's current epoch ([`ProtocolError::PresignOfferStale`]). An offer in a
    /// new epoch replaces everything the book held for the node and key.
    pub fn offer(
        &mut self,
        key: KeyId,
        suite: Ciphersuite,
        node: NodeId,
        offer: Offer,
        now: Timestamp,
    ) -> Result<usize, ProtocolError> {
        let invalid = |reason: String| ProtocolError::PresignOfferInvalid { node, reason };
        let stale = |reason: String| ProtocolError::PresignOfferStale { node, reason };
        let count = offer.commitments.len();
        if count == 0 {
            return Err(invalid("empty offer".into()));
        }
        if count > MAX_OFFER {
            return Err(invalid(format!(
                "{count} commitments exceed the limit of {MAX_OFFER}"
            )));
        }
        if offer.lifetime_ms == 0 {
            return Err(invalid("zero lifetime".into()));
        }
        // `count` ≤ MAX_OFFER, so the cast is exact.
        let Some(next) = offer.first.checked_add(count as u64) else {
            return Err(invalid("indices overflow".into()));
        };
        if let Some(known) = self.nodes.get(&(key, node)) {
            if known.retired.contains(&offer.epoch) {
                return Err(stale("epoch was retired".into()));
            }
            if known.epoch == offer.epoch && offer.first < known.next {
                return Err(stale(format!(
                    "first index {} repeats indices below {} already offered",
                    offer.first, known.next
                )));
            }
        }
        for (i, bytes) in offer.commitments.iter().enumerate() {
            let valid = dispatch!(suite, C => decode_commitment::<C>(bytes).is_some());
            if !valid {
                return Err(invalid(format!(
                    "commitment {i} (index {}) is not a canonical {suite} commitment",
                    offer.first.saturating_add(i as u64)
                )));
            }
        }
        let entries = self
            .nodes
            .entry((key, node))
            .or_insert_with(|| NodeEntries {
                epoch: offer.epoch,
                ..NodeEntries::default()
            });
        if entries.epoch != offer.epoch {
            // A new pool at the node (it restarted): the old epoch's nonces are gone.
            entries.retire();
            entries.epoch = offer.epoch;
        }
        entries.next = next;
        let expires_at = now.plus_ms(
            offer
                .lifetime_ms
                .saturating_sub(self.config.safety_margin_ms),
        );
        for (i, commitments) in offer.commitments.into_iter().enumerate() {
            entries.queue.push_back(Entry {
                index: offer.first + i as u64,
                commitments,
                expires_at,
            });
        }
        while entries.queue.len() > self.config.cap {
            entries.queue.pop_front();
        }
        Ok(count)
    }

    /// Removes and returns `node`'s oldest unexpired commitment for `key` (dropping
    /// the expired ones). Never returns one commitment twice.
    pub fn take(&mut self, key: KeyId, node: NodeId, now: Timestamp) -> Option<PresignRef> {
        let entries = self.nodes.get_mut(&(key, node))?;
        entries.prune(now);
        let entry = entries.queue.pop_front()?;
        Some(PresignRef {
            epoch: entries.epoch,
            index: entry.index,
            commitments: entry.commitments,
        })
    }

    /// One commitment for each of `signers` (distinct), or `None` — consuming
    /// nothing — when any of them has none (or a signer is listed twice).
    pub fn take_set(
        &mut self,
        key: KeyId,
        signers: &[NodeId],
        now: Timestamp,
    ) -> Option<BTreeMap<NodeId, PresignRef>> {
        let distinct: BTreeSet<NodeId> = signers.iter().copied().collect();
        if distinct.len() != signers.len() || signers.is_empty() {
            return None;
        }
        if signers.iter().any(|n| self.available(key, *n, now) == 0) {
            return None;
        }
        let mut set = BTreeMap::new();
        for node in signers {
            set.insert(*node, self.take(key, *node, now)?);
        }
        Some(set)
    }

    /// Unexpired commitments held for `node` and `key`.
    pub fn available(&self, key: KeyId, node: NodeId, now: Timestamp) -> usize {
        self.nodes
            .get(&(key, node))
            .map_or(0, |e| e.queue.iter().filter(|x| now < x.expires_at).count())
    }

    /// Drops every commitment of `node` (it disconnected, or refused a presigned
    /// request). The node's epochs stay known, so replays of its old offers are
    /// still refused; its next offer (same epoch, later indices, or a new epoch) is
    /// accepted.
    pub fn forget(&mut self, node: NodeId) {
        for ((_, n), entries) in self.nodes.iter_mut() {
            if *n == node {
                entries.queue.clear();
            }
        }
    }

    /// Drops `node`'s commitments for `key` if they are of `epoch`, and retires the
    /// epoch (its offers are refused from now on): use when the node answered that
    /// it does not know the epoch (it restarted).
    pub fn forget_epoch(&mut self, key: KeyId, node: NodeId, epoch: [u8; 16]) {
        if let Some(entries) = self.nodes.get_mut(&(key, node)) {
            if entries.epoch == epoch {
                entries.retire();
            }
        }
    }

    /// Drops every expired commitment; returns how many.
    pub fn expire(&mut self, now: Timestamp) -> usize {
        let mut dropped = 0;
        for entries in self.nodes.values_mut() {
            let before = entries.queue.len();
            entries.prune(now);
            dropped += before - entries.queue.len();
        }
        dropped
    }

    /// The configuration.
    pub fn config(&self) -> BookConfig {
        self.config
    }
}
