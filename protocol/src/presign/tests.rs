//! Presigning: pools, the book, one-round signing for every suite, and what a
//! malicious coordinator can try against the node side (pool + signer).

use std::{collections::BTreeMap, sync::Arc};

use frost_core::{round1, SigningPackage};
use rand_chacha::{rand_core::SeedableRng, ChaCha20Rng};

use super::*;
use crate::{
    aggregate::{Aggregator, AggregatorConfig},
    error::Fault,
    identity::NodeIdentity,
    ids::{KeyId, NodeId, SessionId},
    key::{KeyShare, SignatureBytes},
    local,
    machine::{Input, Output, Status, TimerId, Timestamp},
    sign::{ShareSent, SignTarget, Signer, SignerConfig},
    suite::Ciphersuite,
    wire::{Envelope, Payload, Round, MAX_MESSAGE_SIZE},
    ProtocolError,
};

const POOL: PoolConfig = PoolConfig {
    size: 4,
    refill_below: 2,
    lifetime_ms: 60_000,
};

const T0: Timestamp = Timestamp(1_000);

fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

fn sends<T>(outs: Vec<Output<T>>) -> Vec<(NodeId, Envelope)> {
    outs.into_iter()
        .filter_map(|o| match o {
            Output::Send { to, msg } => Some((to, msg)),
            _ => None,
        })
        .collect()
}

fn offer_of(payload: Payload) -> Offer {
    Offer::try_from(payload).expect("a presign offer")
}

fn presign_id(env: &Envelope) -> ([u8; 16], u64) {
    match &env.payload {
        Payload::PresignedSign { epoch, index, .. } => (*epoch, *index),
        other => panic!("expected PresignedSign, got {:?}", other.round()),
    }
}

/// A 3-of-5 key (real in-memory DKG), a coordinator, one pool per node (each
/// registered with the book) and the coordinator's book.
struct Cluster {
    ids: Vec<Arc<NodeIdentity>>,
    shares: Vec<KeyShare>,
    coordinator: Arc<NodeIdentity>,
    pools: Vec<NoncePool>,
    book: PresignBook,
    rng: ChaCha20Rng,
}

impl Cluster {
    fn new(suite: Ciphersuite, seed: u64) -> Self {
        Self::with(suite, seed, POOL, BookConfig::default())
    }

    fn with(suite: Ciphersuite, seed: u64, pool: PoolConfig, book: BookConfig) -> Self {
        let mut rng = rng(seed);
        let ids = local::identities(5, &mut rng);
        let shares = local::run_dkg(&ids, suite, 3, &mut rng).expect("dkg");
        let coordinator = Arc::new(NodeIdentity::generate(&mut rng));
        let pools = shares
            .iter()
            .map(|s| NoncePool::new(s, random_epoch(&mut rng), pool).expect("pool"))
            .collect();
        let mut me = Self {
            ids,
            shares,
            coordinator,
            pools,
            book: PresignBook::new(book).expect("book"),
            rng,
        };
        for i in 0..5 {
            me.refill(i, T0);
        }
        me
    }

    fn key(&self) -> KeyId {
        self.shares[0].public.key_id
    }

    fn suite(&self) -> Ciphersuite {
        self.shares[0].public.suite
    }

    fn node(&self, i: usize) -> NodeId {
        self.ids[i].node_id()
    }

    fn index_of(&self, node: NodeId) -> usize {
        self.ids
            .iter()
            .position(|id| id.node_id() == node)
            .expect("a member")
    }

    /// Refills node `i`'s pool and files the offer; returns how many were offered.
    fn refill(&mut self, i: usize, now: Timestamp) -> usize {
        let Some(payload) = self.pools[i].refill(now, &mut self.rng) else {
            return 0;
        };
        let (key, suite, node) = (self.key(), self.suite(), self.node(i));
        self.book
            .offer(key, suite, node, offer_of(payload), now)
            .expect("honest offer accepted")
    }

    fn signer_config(&self, session: SessionId, target: &SignTarget) -> SignerConfig {
        SignerConfig {
            session,
            coordinator: self.coordinator.node_id(),
            target: target.clone(),
            timeout_ms: 60_000,
        }
    }

    fn aggregator(
        &self,
        session: SessionId,
        target: &SignTarget,
        refs: BTreeMap<NodeId, PresignRef>,
    ) -> Aggregator {
        Aggregator::presigned(
            self.coordinator.clone(),
            &self.shares[0].public,
            AggregatorConfig {
                session,
                signers: refs.keys().copied().collect(),
                target: target.clone(),
                request: b"client request".to_vec(),
                timeout_ms: 30_000,
            },
            refs,
        )
        .expect("aggregator")
    }

    /// What a node's driver does with a `PresignedSign`: take the named nonces
    /// from its pool (after policy, here: approve `target`), start a presigned
    /// signer and feed it the envelope.
    fn node_signs(
        &mut self,
        i: usize,
        env: Envelope,
        target: &SignTarget,
        now: Timestamp,
    ) -> Result<(Signer, Vec<Output<ShareSent>>), ProtocolError> {
        let (epoch, index) = presign_id(&env);
        let nonces = self.pools[i].take(epoch, index, now)?;
        let config = self.signer_config(env.session, target);
        let mut signer = Signer::presigned(self.ids[i].clone(), &self.shares[i], config, nonces)?;
        let outs = signer.handle(now, Input::Message(env), &mut self.rng)?;
        Ok((signer, outs))
    }

    /// A whole one-round signature by the nodes at `who`.
    fn sign(
        &mut self,
        who: &[usize],
        target: &SignTarget,
        session: SessionId,
        now: Timestamp,
    ) -> Result<SignatureBytes, ProtocolError> {
        let signers: Vec<NodeId> = who.iter().map(|i| self.node(*i)).collect();
        let refs = self
            .book
            .take_set(self.key(), &signers, now)
            .ok_or(ProtocolError::InvalidState("no presigned set"))?;
        let mut agg = self.aggregator(session, target, refs);
        let requests = sends(agg.handle(now, Input::Start, &mut self.rng)?);
        // One request per signer, each naming that signer's own commitment.
        assert_eq!(requests.len(), who.len());
        let mut result = None;
        for (to, env) in requests {
            assert_eq!(env.round, Round::PresignedSign);
            let i = self.index_of(to);
            let (_, outs) = self.node_signs(i, env, target, now)?;
            for (_, share) in sends(outs) {
                assert_eq!(share.round, Round::SignShare);
                for o in agg.handle(now, Input::Message(share), &mut self.rng)? {
                    if let Output::Done(sig) = o {
                        result = Some(sig);
                    }
                }
            }
        }
        result.ok_or(ProtocolError::InvalidState("no signature"))
    }
}

fn target(tag: &str, tweak: Option<[u8; 32]>) -> SignTarget {
    use sha2::Digest;
    SignTarget {
        message: sha2::Sha256::digest(tag.as_bytes()).to_vec(),
        tweak,
    }
}

// ------------------------------------------------------------ one-round signing

fn one_round(suite: Ciphersuite, tweak: Option<[u8; 32]>, seed: u64) {
    let mut c = Cluster::new(suite, seed);
    let public = c.shares[0].public.clone();
    for (n, who) in [[0usize, 1, 2], [2, 3, 4], [0, 2, 4]].iter().enumerate() {
        let t = target(&format!("presigned {suite} {n}"), tweak);
        let sig = c
            .sign(who, &t, SessionId([n as u8; 32]), T0)
            .expect("one-round signature");
        assert_eq!(sig.suite, suite);
        assert_eq!(
            sig.verifying_key,
            public.output_key(tweak.as_ref()).expect("output key")
        );
        public
            .verify(&t.message, &sig.signature, tweak.as_ref())
            .expect("verifies under the group key");
        assert!(public
            .verify(b"another message", &sig.signature, tweak.as_ref())
            .is_err());
    }
    // Every signature used one nonce per signer.
    let taken: u64 = c.pools.iter().map(|p| p.stats().taken).sum();
    assert_eq!(taken, 9);
}

#[test]
fn one_round_signature_verifies_secp256k1() {
    one_round(Ciphersuite::Secp256k1, None, 1);
}

#[test]
fn one_round_signature_verifies_secp256k1_tr() {
    one_round(Ciphersuite::Secp256k1Tr, None, 2);
}

#[test]
fn one_round_signature_verifies_secp256k1_tr_with_tweak() {
    one_round(Ciphersuite::Secp256k1Tr, Some([0x42; 32]), 3);
}

#[test]
fn one_round_signature_verifies_ed25519() {
    one_round(Ciphersuite::Ed25519, None, 4);
}

#[test]
fn one_round_signature_is_identical_in_shape_to_two_round() {
    // The presigned signature is an ordinary signature: the two-round protocol's
    // verifier (and its output key) accept it, and it has the same size.
    let mut c = Cluster::new(Ciphersuite::Secp256k1Tr, 5);
    let t = target("shape", None);
    let one = c
        .sign(&[1, 2, 3], &t, SessionId([7; 32]), T0)
        .expect("one round");
    let signers = (1..4)
        .map(|i| (c.ids[i].clone(), c.shares[i].clone()))
        .collect();
    let two = local::run_signing(&c.coordinator, signers, t.clone(), &mut c.rng).expect("two");
    assert_eq!(one.verifying_key, two.verifying_key);
    assert_eq!(one.signature.len(), two.signature.len());
}

// ------------------------------------------------------------------------ pool

fn share(suite: Ciphersuite, seed: u64) -> (Vec<KeyShare>, ChaCha20Rng) {
    let mut rng = rng(seed);
    let ids = local::identities(3, &mut rng);
    let shares = local::run_dkg(&ids, suite, 2, &mut rng).expect("dkg");
    (shares, rng)
}

#[test]
fn pool_config_is_validated() {
    let (shares, _) = share(Ciphersuite::Ed25519, 10);
    let bad = [
        PoolConfig { size: 0, ..POOL },
        PoolConfig {
            size: MAX_OFFER + 1,
            refill_below: 1,
            ..POOL
        },
        PoolConfig {
            refill_below: 5,
            ..POOL
        },
        PoolConfig {
            lifetime_ms: 0,
            ..POOL
        },
    ];
    for config in bad {
        assert!(matches!(
            NoncePool::new(&shares[0], [1; 16], config),
            Err(ProtocolError::InvalidParameters(_))
        ));
    }
    let full = PoolConfig {
        size: MAX_OFFER,
        refill_below: MAX_OFFER,
        lifetime_ms: 1,
    };
    NoncePool::new(&shares[0], [1; 16], full).expect("largest pool");
}

#[test]
fn pool_refills_only_below_threshold_and_continues_indices() {
    let (shares, mut rng) = share(Ciphersuite::Secp256k1, 11);
    let mut pool = NoncePool::new(&shares[0], [1; 16], POOL).expect("pool");
    assert_eq!(pool.held(), 0);
    let first = offer_of(pool.refill(T0, &mut rng).expect("an empty pool refills"));
    assert_eq!((first.epoch, first.first), ([1; 16], 0));
    assert_eq!(first.commitments.len(), 4);
    assert_eq!(first.lifetime_ms, POOL.lifetime_ms);
    assert!(pool.refill(T0, &mut rng).is_none(), "full pool");
    pool.take([1; 16], 0, T0).expect("take 0");
    pool.take([1; 16], 2, T0).expect("take 2");
    assert_eq!(pool.held(), 2);
    assert!(
        pool.refill(T0, &mut rng).is_none(),
        "2 held, refill below 2"
    );
    pool.take([1; 16], 1, T0).expect("take 1");
    let more = offer_of(pool.refill(T0, &mut rng).expect("below threshold"));
    assert_eq!(more.first, 4, "indices are never reissued");
    assert_eq!(more.commitments.len(), 3, "only the missing nonces");
    assert_eq!(pool.held(), 4);
    // Every offered commitment is distinct and canonical.
    let all: std::collections::BTreeSet<_> =
        first.commitments.iter().chain(&more.commitments).collect();
    assert_eq!(all.len(), 7);
    assert!(all
        .iter()
        .all(|b| decode_commitment::<frost_secp256k1::Secp256K1Sha256>(b).is_some()));
    let stats = pool.stats();
    assert_eq!((stats.generated, stats.taken), (7, 3));
}

#[test]
fn pool_with_zero_threshold_refills_only_when_empty() {
    let (shares, mut rng) = share(Ciphersuite::Ed25519, 12);
    let config = PoolConfig {
        size: 2,
        refill_below: 0,
        lifetime_ms: 1_000,
    };
    let mut pool = NoncePool::new(&shares[1], [2; 16], config).expect("pool");
    assert!(pool.refill(T0, &mut rng).is_some());
    pool.take([2; 16], 0, T0).expect("take");
    assert!(pool.refill(T0, &mut rng).is_none());
    pool.take([2; 16], 1, T0).expect("take");
    let offer = offer_of(pool.refill(T0, &mut rng).expect("empty"));
    assert_eq!((offer.first, offer.commitments.len()), (2, 2));
}

#[test]
fn pool_refuses_unknown_presign() {
    let (shares, mut rng) = share(Ciphersuite::Secp256k1Tr, 13);
    let mut pool = NoncePool::new(&shares[0], [3; 16], POOL).expect("pool");
    pool.refill(T0, &mut rng).expect("offer");
    assert_eq!(
        pool.take([4; 16], 0, T0).expect_err("other epoch"),
        ProtocolError::PresignUnknown {
            epoch: [4; 16],
            index: 0
        }
    );
    assert_eq!(
        pool.take([3; 16], 4, T0).expect_err("never issued"),
        ProtocolError::PresignUnknown {
            epoch: [3; 16],
            index: 4
        }
    );
    assert_eq!(pool.held(), 4, "nothing consumed");
    assert_eq!(pool.stats().refused, 2);
    assert!(!ProtocolError::PresignUnknown {
        epoch: [0; 16],
        index: 0
    }
    .is_fatal());
}

#[test]
fn pool_refuses_used_presign() {
    let (shares, mut rng) = share(Ciphersuite::Secp256k1, 14);
    let mut pool = NoncePool::new(&shares[0], [5; 16], POOL).expect("pool");
    pool.refill(T0, &mut rng).expect("offer");
    let nonces = pool.take([5; 16], 1, T0).expect("first take");
    assert_eq!((nonces.epoch(), nonces.index()), ([5; 16], 1));
    assert_eq!(
        pool.take([5; 16], 1, T0).expect_err("second take"),
        ProtocolError::PresignUsed { index: 1 }
    );
    drop(nonces);
    assert_eq!(
        pool.take([5; 16], 1, T0)
            .expect_err("still used after the nonces dropped"),
        ProtocolError::PresignUsed { index: 1 }
    );
    let stats = pool.stats();
    assert_eq!((stats.taken, stats.refused), (1, 2));
}

#[test]
fn restarted_pool_refuses_the_old_epochs_ids() {
    let (shares, mut rng) = share(Ciphersuite::Ed25519, 15);
    let old_epoch = random_epoch(&mut rng);
    let mut old = NoncePool::new(&shares[0], old_epoch, POOL).expect("pool");
    let offered = offer_of(old.refill(T0, &mut rng).expect("offer"));
    drop(old); // the node restarts: its nonces are gone with the process
    let new_epoch = random_epoch(&mut rng);
    assert_ne!(new_epoch, old_epoch);
    let mut new = NoncePool::new(&shares[0], new_epoch, POOL).expect("pool");
    let fresh = offer_of(new.refill(T0, &mut rng).expect("offer"));
    assert_eq!(fresh.first, 0, "a new epoch counts from 0 again");
    assert_ne!(fresh.commitments, offered.commitments);
    for index in 0..4 {
        assert!(matches!(
            new.take(old_epoch, index, T0),
            Err(ProtocolError::PresignUnknown { .. })
        ));
    }
    new.take(new_epoch, 0, T0)
        .expect("the new epoch's ids work");
}

#[test]
fn pool_expires_nonces_after_their_lifetime() {
    let (shares, mut rng) = share(Ciphersuite::Secp256k1, 16);
    let config = PoolConfig {
        size: 3,
        refill_below: 3,
        lifetime_ms: 1_000,
    };
    let mut pool = NoncePool::new(&shares[0], [6; 16], config).expect("pool");
    pool.refill(T0, &mut rng).expect("offer");
    pool.take([6; 16], 0, T0.plus_ms(999)).expect("still alive");
    assert_eq!(
        pool.take([6; 16], 1, T0.plus_ms(1_000))
            .expect_err("expired"),
        ProtocolError::PresignUsed { index: 1 }
    );
    assert_eq!(pool.expire(T0.plus_ms(999)), 0);
    assert_eq!(pool.held(), 1);
    assert_eq!(pool.expire(T0.plus_ms(1_000)), 1);
    assert_eq!(pool.held(), 0);
    let stats = pool.stats();
    assert_eq!((stats.taken, stats.expired, stats.refused), (1, 2, 1));
    // A refill after expiry offers fresh indices with a new lifetime.
    let offer = offer_of(pool.refill(T0.plus_ms(5_000), &mut rng).expect("offer"));
    assert_eq!((offer.first, offer.commitments.len()), (3, 3));
    pool.take([6; 16], 3, T0.plus_ms(5_999))
        .expect("new lifetime");
}

#[test]
fn presigned_nonces_are_secret_and_zeroize() {
    fn zeroize_on_drop<T: zeroize::ZeroizeOnDrop>() {}
    zeroize_on_drop::<frost_core::round1::SigningNonces<frost_secp256k1::Secp256K1Sha256>>();
    zeroize_on_drop::<frost_core::round1::SigningNonces<frost_secp256k1_tr::Secp256K1Sha256TR>>();
    zeroize_on_drop::<frost_core::round1::SigningNonces<frost_ed25519::Ed25519Sha512>>();
    zeroize_on_drop::<frost_core::keys::KeyPackage<frost_ed25519::Ed25519Sha512>>();
    let (shares, mut rng) = share(Ciphersuite::Ed25519, 17);
    let mut pool = NoncePool::new(&shares[0], [7; 16], POOL).expect("pool");
    let offer = offer_of(pool.refill(T0, &mut rng).expect("offer"));
    let nonces = pool.take([7; 16], 2, T0).expect("take");
    assert_eq!(nonces.suite(), Ciphersuite::Ed25519);
    assert_eq!(nonces.key(), shares[0].public.key_id);
    assert_eq!(nonces.commitments().expect("public"), offer.commitments[2]);
    let debug = format!("{nonces:?}");
    assert!(debug.contains("<secret>"), "{debug}");
}

#[test]
fn largest_offer_fits_in_one_message() {
    for suite in Ciphersuite::ALL {
        let (shares, mut rng) = share(suite, 18);
        let config = PoolConfig {
            size: MAX_OFFER,
            refill_below: 1,
            lifetime_ms: 1,
        };
        let mut pool = NoncePool::new(&shares[0], [8; 16], config).expect("pool");
        let payload = pool.refill(T0, &mut rng).expect("offer");
        let identity = NodeIdentity::generate(&mut rng);
        let env = Envelope::seal(&identity, suite, pool.key(), SessionId([0; 32]), payload);
        let bytes = env.encode();
        assert!(
            bytes.len() < MAX_MESSAGE_SIZE / 8,
            "{suite}: {}",
            bytes.len()
        );
        assert_eq!(Envelope::decode(&bytes).expect("decodes"), env);
    }
}

// ------------------------------------------------------------------------ book

const NODE: NodeId = NodeId([0xaa; 32]);
const OTHER: NodeId = NodeId([0xbb; 32]);
const KEY: KeyId = KeyId([0xcc; 16]);

/// `n` valid commitments of suite `C` (serialized).
fn commitments<C: crate::suite::Suite>(n: usize, rng: &mut ChaCha20Rng) -> Vec<Vec<u8>> {
    use frost_core::{Field, Group};
    (0..n)
        .map(|_| {
            let scalar = <<C::Group as Group>::Field>::random(&mut *rng);
            let bytes = <<C::Group as Group>::Field>::serialize(&scalar);
            let secret =
                frost_core::keys::SigningShare::<C>::deserialize(bytes.as_ref()).expect("share");
            round1::commit(&secret, &mut *rng)
                .1
                .serialize()
                .expect("serialize")
        })
        .collect()
}

fn secp(n: usize, rng: &mut ChaCha20Rng) -> Vec<Vec<u8>> {
    commitments::<frost_secp256k1::Secp256K1Sha256>(n, rng)
}

fn offer(epoch: u8, first: u64, commitments: Vec<Vec<u8>>) -> Offer {
    Offer {
        epoch: [epoch; 16],
        first,
        commitments,
        lifetime_ms: 60_000,
    }
}

fn book() -> PresignBook {
    PresignBook::new(BookConfig::default()).expect("book")
}

#[test]
fn book_never_hands_out_a_commitment_twice() {
    let mut rng = rng(20);
    let mut book = book();
    let cs = secp(4, &mut rng);
    let s = Ciphersuite::Secp256k1;
    assert_eq!(book.offer(KEY, s, NODE, offer(1, 0, cs.clone()), T0), Ok(4));
    assert_eq!(book.available(KEY, NODE, T0), 4);
    let mut seen = Vec::new();
    while let Some(r) = book.take(KEY, NODE, T0) {
        assert_eq!(r.epoch, [1; 16]);
        assert_eq!(r.commitments, cs[r.index as usize]);
        seen.push(r.index);
    }
    assert_eq!(seen, vec![0, 1, 2, 3], "oldest first, each once");
    assert_eq!(book.available(KEY, NODE, T0), 0);
    // The same offer again (a duplicate delivery, a replay) does not put them back.
    assert!(matches!(
        book.offer(KEY, s, NODE, offer(1, 0, cs.clone()), T0),
        Err(ProtocolError::PresignOfferStale { node: NODE, .. })
    ));
    assert!(book.take(KEY, NODE, T0).is_none());
    assert!(
        book.take(KEY, OTHER, T0).is_none(),
        "other nodes hold nothing"
    );
}

#[test]
fn book_replaces_entries_on_new_epoch() {
    let mut rng = rng(21);
    let mut book = book();
    let s = Ciphersuite::Secp256k1;
    book.offer(KEY, s, NODE, offer(1, 0, secp(4, &mut rng)), T0)
        .expect("epoch 1");
    book.offer(KEY, s, OTHER, offer(9, 0, secp(2, &mut rng)), T0)
        .expect("other node");
    let fresh = secp(2, &mut rng);
    assert_eq!(
        book.offer(KEY, s, NODE, offer(2, 0, fresh.clone()), T0),
        Ok(2)
    );
    assert_eq!(book.available(KEY, NODE, T0), 2, "epoch 1 entries are gone");
    let r = book.take(KEY, NODE, T0).expect("epoch 2");
    assert_eq!(
        (r.epoch, r.index, r.commitments),
        ([2; 16], 0, fresh[0].clone())
    );
    assert_eq!(book.available(KEY, OTHER, T0), 2, "other nodes untouched");
    // A replayed offer of the replaced epoch cannot displace the current one.
    assert!(matches!(
        book.offer(KEY, s, NODE, offer(1, 4, secp(1, &mut rng)), T0),
        Err(ProtocolError::PresignOfferStale { .. })
    ));
    assert_eq!(book.available(KEY, NODE, T0), 1);
}

#[test]
fn book_refuses_overlapping_indices() {
    let mut rng = rng(22);
    let mut book = book();
    let s = Ciphersuite::Secp256k1;
    book.offer(KEY, s, NODE, offer(1, 0, secp(4, &mut rng)), T0)
        .expect("0..4");
    for first in [0, 2, 3] {
        let err = book
            .offer(KEY, s, NODE, offer(1, first, secp(2, &mut rng)), T0)
            .expect_err("overlap");
        assert!(matches!(
            err,
            ProtocolError::PresignOfferStale { node: NODE, .. }
        ));
        assert!(
            err.culprits().is_empty(),
            "a duplicate is not proof of fault"
        );
        assert!(!err.is_fatal());
    }
    assert_eq!(book.available(KEY, NODE, T0), 4, "unchanged");
    book.offer(KEY, s, NODE, offer(1, 4, secp(2, &mut rng)), T0)
        .expect("continues after the highest index");
    book.offer(KEY, s, NODE, offer(1, 10, secp(1, &mut rng)), T0)
        .expect("a gap (a lost offer) is fine");
    assert!(book
        .offer(KEY, s, NODE, offer(1, 9, secp(1, &mut rng)), T0)
        .is_err());
    // The same index of another key is independent.
    book.offer(KeyId([1; 16]), s, NODE, offer(1, 0, secp(1, &mut rng)), T0)
        .expect("other key");
    assert_eq!(book.available(KEY, NODE, T0), 7);
}

#[test]
fn book_rejects_invalid_commitment_naming_node() {
    let mut rng = rng(23);
    let mut book = book();
    let s = Ciphersuite::Secp256k1;
    let good = secp(1, &mut rng).remove(0);
    let mut trailing = good.clone();
    trailing.push(0);
    let ed = commitments::<frost_ed25519::Ed25519Sha512>(1, &mut rng).remove(0);
    let tr = commitments::<frost_secp256k1_tr::Secp256K1Sha256TR>(1, &mut rng).remove(0);
    let mut identity = good.clone();
    // Header (5 bytes), then the hiding commitment: SEC1 encodings start 02/03;
    // a zero byte is the identity's encoding (or garbage): never a valid element.
    identity[5..38].fill(0);
    let bad: Vec<(&str, Vec<Vec<u8>>)> = vec![
        ("garbage", vec![good.clone(), vec![1, 2, 3]]),
        ("trailing byte", vec![trailing]),
        ("ed25519 commitment", vec![ed]),
        ("secp256k1-tr commitment", vec![tr]),
        ("identity element", vec![identity]),
        ("empty", vec![]),
        ("too many", vec![good.clone(); MAX_OFFER + 1]),
    ];
    for (what, cs) in bad {
        let err = book
            .offer(KEY, s, NODE, offer(1, 0, cs), T0)
            .expect_err(what);
        assert!(
            matches!(&err, ProtocolError::PresignOfferInvalid { node, .. } if *node == NODE),
            "{what}: {err:?}"
        );
        assert_eq!(err.culprits(), vec![NODE], "{what}");
    }
    let zero_life = Offer {
        lifetime_ms: 0,
        ..offer(1, 0, vec![good.clone()])
    };
    assert!(book.offer(KEY, s, NODE, zero_life, T0).is_err());
    assert!(book
        .offer(KEY, s, NODE, offer(1, u64::MAX, vec![good.clone()]), T0)
        .is_err());
    assert_eq!(
        book.available(KEY, NODE, T0),
        0,
        "an invalid offer adds nothing"
    );
    // A valid offer still works after the refusals (nothing was recorded).
    assert_eq!(book.offer(KEY, s, NODE, offer(1, 0, vec![good]), T0), Ok(1));
}

#[test]
fn book_take_set_is_all_or_nothing() {
    let mut rng = rng(24);
    let mut book = book();
    let s = Ciphersuite::Secp256k1;
    let third = NodeId([0xdd; 32]);
    book.offer(KEY, s, NODE, offer(1, 0, secp(2, &mut rng)), T0)
        .expect("node");
    book.offer(KEY, s, OTHER, offer(2, 0, secp(1, &mut rng)), T0)
        .expect("other");
    assert!(book.take_set(KEY, &[NODE, OTHER, third], T0).is_none());
    assert_eq!(book.available(KEY, NODE, T0), 2, "nothing consumed");
    assert_eq!(book.available(KEY, OTHER, T0), 1, "nothing consumed");
    assert!(book.take_set(KEY, &[NODE, NODE], T0).is_none(), "duplicate");
    assert!(book.take_set(KEY, &[], T0).is_none());
    let set = book
        .take_set(KEY, &[OTHER, NODE], T0)
        .expect("both have one");
    assert_eq!(set.len(), 2);
    assert_eq!((set[&NODE].epoch, set[&NODE].index), ([1; 16], 0));
    assert_eq!((set[&OTHER].epoch, set[&OTHER].index), ([2; 16], 0));
    assert!(
        book.take_set(KEY, &[OTHER, NODE], T0).is_none(),
        "other is empty"
    );
    assert_eq!(book.available(KEY, NODE, T0), 1);
}

#[test]
fn book_is_capped_per_key_and_node() {
    let mut rng = rng(25);
    let mut book = PresignBook::new(BookConfig {
        cap: 3,
        safety_margin_ms: 0,
    })
    .expect("book");
    assert!(PresignBook::new(BookConfig {
        cap: 0,
        safety_margin_ms: 0
    })
    .is_err());
    let s = Ciphersuite::Secp256k1;
    book.offer(KEY, s, NODE, offer(1, 0, secp(2, &mut rng)), T0)
        .expect("2");
    book.offer(KEY, s, NODE, offer(1, 2, secp(2, &mut rng)), T0)
        .expect("2 more");
    assert_eq!(book.available(KEY, NODE, T0), 3);
    assert_eq!(
        book.take(KEY, NODE, T0).map(|r| r.index),
        Some(1),
        "oldest dropped"
    );
}

#[test]
fn book_expires_before_the_node_does() {
    // The node keeps its nonces for `lifetime_ms`; the book stops using them a
    // safety margin earlier, so it never picks one the node has dropped.
    let mut c = Cluster::with(
        Ciphersuite::Ed25519,
        26,
        PoolConfig {
            size: 2,
            refill_below: 1,
            lifetime_ms: 10_000,
        },
        BookConfig {
            cap: 16,
            safety_margin_ms: 3_000,
        },
    );
    let (key, node) = (c.key(), c.node(0));
    assert_eq!(c.book.available(key, node, T0.plus_ms(6_999)), 2);
    assert_eq!(c.book.available(key, node, T0.plus_ms(7_000)), 0);
    assert!(c.book.take(key, node, T0.plus_ms(7_000)).is_none());
    assert!(c
        .book
        .take_set(key, &[c.node(1), c.node(2), c.node(3)], T0.plus_ms(7_000))
        .is_none());
    // What the book hands out just before its expiry the node still holds.
    let r = c
        .book
        .take(key, c.node(1), T0.plus_ms(6_999))
        .expect("alive");
    c.pools[1]
        .take(r.epoch, r.index, T0.plus_ms(6_999))
        .expect("the node still holds it");
    assert_eq!(c.book.expire(T0.plus_ms(7_000)), 2 * 5 - 2 - 1);
    // After both sides expired, a refill re-registers fresh nonces.
    assert_eq!(c.pools[0].expire(T0.plus_ms(10_000)), 2);
    assert_eq!(c.refill(0, T0.plus_ms(10_000)), 2);
    assert_eq!(c.book.available(key, node, T0.plus_ms(10_000)), 2);
    let r = c.book.take(key, node, T0.plus_ms(10_000)).expect("fresh");
    assert_eq!(r.index, 2, "the pool continued its indices");
}

#[test]
fn book_forgets_nodes_and_epochs() {
    let mut rng = rng(27);
    let mut book = book();
    let s = Ciphersuite::Secp256k1;
    book.offer(KEY, s, NODE, offer(1, 0, secp(2, &mut rng)), T0)
        .expect("node");
    book.offer(KeyId([2; 16]), s, NODE, offer(3, 0, secp(2, &mut rng)), T0)
        .expect("node, other key");
    book.offer(KEY, s, OTHER, offer(2, 0, secp(2, &mut rng)), T0)
        .expect("other");
    book.forget(NODE);
    assert_eq!(book.available(KEY, NODE, T0), 0);
    assert_eq!(book.available(KeyId([2; 16]), NODE, T0), 0);
    assert_eq!(book.available(KEY, OTHER, T0), 2);
    // A reconnected node's old offers stay refused; its next ones are accepted.
    assert!(book
        .offer(KEY, s, NODE, offer(1, 0, secp(2, &mut rng)), T0)
        .is_err());
    book.offer(KEY, s, NODE, offer(1, 2, secp(2, &mut rng)), T0)
        .expect("continuing");
    // The node says it does not know epoch 1 (it restarted): retire it for good.
    book.forget_epoch(KEY, NODE, [9; 16]);
    assert_eq!(book.available(KEY, NODE, T0), 2, "another epoch: no effect");
    book.forget_epoch(KEY, NODE, [1; 16]);
    assert_eq!(book.available(KEY, NODE, T0), 0);
    assert!(book
        .offer(KEY, s, NODE, offer(1, 9, secp(1, &mut rng)), T0)
        .is_err());
    book.offer(KEY, s, NODE, offer(4, 0, secp(1, &mut rng)), T0)
        .expect("new epoch");
    assert_eq!(book.available(KEY, NODE, T0), 1);
}

#[test]
fn book_offer_parses_only_presign_offers() {
    assert!(matches!(
        Offer::try_from(Payload::SignShare { share: vec![] }),
        Err(ProtocolError::UnexpectedRound {
            got: Round::SignShare
        })
    ));
}

// ------------------------------------------------- malicious coordinator, node side

/// A cluster with the aggregator's `PresignedSign` requests for signers 0, 1, 2.
fn requests(c: &mut Cluster, t: &SignTarget, session: SessionId) -> Vec<(NodeId, Envelope)> {
    let signers = [c.node(0), c.node(1), c.node(2)];
    let refs = c.book.take_set(c.key(), &signers, T0).expect("set");
    let mut agg = c.aggregator(session, t, refs);
    sends(agg.handle(T0, Input::Start, &mut c.rng).expect("start"))
}

fn request_for(reqs: &[(NodeId, Envelope)], node: NodeId) -> Envelope {
    reqs.iter()
        .find(|(to, _)| *to == node)
        .map(|(_, e)| e.clone())
        .expect("a request for the node")
}

/// `env` with its payload's package replaced by `package` (re-signed by the
/// coordinator, as a malicious coordinator would).
fn with_package(c: &Cluster, env: &Envelope, package: Vec<u8>) -> Envelope {
    let Payload::PresignedSign {
        request,
        message,
        tweak,
        epoch,
        index,
        ..
    } = env.payload.clone()
    else {
        panic!("not a PresignedSign")
    };
    let payload = Payload::PresignedSign {
        request,
        message,
        tweak,
        package,
        epoch,
        index,
        certificate: Default::default(),
    };
    Envelope::seal(&c.coordinator, env.suite, env.key, env.session, payload)
}

fn reseal(c: &Cluster, env: &Envelope, payload: Payload) -> Envelope {
    Envelope::seal(&c.coordinator, env.suite, env.key, env.session, payload)
}

type C1 = frost_secp256k1::Secp256K1Sha256;

fn package_of(env: &Envelope) -> SigningPackage<C1> {
    let Payload::PresignedSign { package, .. } = &env.payload else {
        panic!("not a PresignedSign")
    };
    SigningPackage::<C1>::deserialize(package).expect("package")
}

#[test]
fn node_refuses_two_packages_for_one_presign_id() {
    let mut c = Cluster::new(Ciphersuite::Secp256k1, 30);
    let t = target("double", None);
    let session = SessionId([1; 32]);
    let reqs = requests(&mut c, &t, session);
    let env = request_for(&reqs, c.node(0));
    // A second package for the same id: node 1's commitment swapped for another
    // node-1 commitment the coordinator still had (the binding changes).
    let spare = c.book.take(c.key(), c.node(1), T0).expect("spare");
    let mut map = package_of(&env).signing_commitments().clone();
    let id1 = frost_core::Identifier::<C1>::try_from(2u16).expect("id");
    map.insert(
        id1,
        round1::SigningCommitments::<C1>::deserialize(&spare.commitments).expect("c"),
    );
    let other = with_package(
        &c,
        &env,
        SigningPackage::new(map, &t.message)
            .serialize()
            .expect("ser"),
    );
    let (mut signer, outs) = c.node_signs(0, env.clone(), &t, T0).expect("first package");
    assert_eq!(sends(outs).len(), 1, "one share");
    // The same signer session refuses the second package…
    assert_eq!(
        signer
            .handle(T0, Input::Message(other.clone()), &mut c.rng)
            .expect_err("second package"),
        ProtocolError::NonceReused
    );
    // …and a fresh session for it cannot get the nonces from the pool.
    assert_eq!(
        c.node_signs(0, other, &t, T0).err().expect("second take"),
        ProtocolError::PresignUsed {
            index: presign_id(&env).1
        }
    );
    // A byte-identical redelivery is a harmless duplicate.
    assert!(signer
        .handle(T0, Input::Message(env), &mut c.rng)
        .expect("duplicate")
        .is_empty());
}

#[test]
fn node_refuses_another_nodes_presign_id() {
    let mut c = Cluster::new(Ciphersuite::Ed25519, 31);
    let t = target("borrowed id", None);
    let reqs = requests(&mut c, &t, SessionId([2; 32]));
    // The coordinator sends node 0 the request meant for node 1 (node 1's id and
    // commitment), re-addressed: node 0's pool never issued that id.
    let for_1 = request_for(&reqs, c.node(1));
    let err = c
        .node_signs(0, for_1.clone(), &t, T0)
        .err()
        .expect("not ours");
    assert!(
        matches!(err, ProtocolError::PresignUnknown { .. }),
        "{err:?}"
    );
    // Node 0's id with node 1's commitment in node 0's place in the package.
    let for_0 = request_for(&reqs, c.node(0));
    let Payload::PresignedSign { package, .. } = &for_0.payload else {
        panic!()
    };
    type E = frost_ed25519::Ed25519Sha512;
    let pkg = SigningPackage::<E>::deserialize(package).expect("pkg");
    let mut map = pkg.signing_commitments().clone();
    let (id0, id1) = (
        frost_core::Identifier::<E>::try_from(1u16).expect("id"),
        frost_core::Identifier::<E>::try_from(2u16).expect("id"),
    );
    let theirs = map[&id1];
    map.insert(id0, theirs);
    let forged = with_package(
        &c,
        &for_0,
        SigningPackage::new(map, &t.message)
            .serialize()
            .expect("ser"),
    );
    let err = c.node_signs(0, forged, &t, T0).err().expect("altered");
    assert_eq!(
        err,
        ProtocolError::Aborted {
            culprits: vec![c.coordinator.node_id()],
            fault: Fault::CommitmentAltered
        }
    );
    // The nonces were consumed by the refused attempt: the honest request now
    // fails too (fail closed; the coordinator retries with fresh nonces).
    assert!(matches!(
        c.node_signs(0, for_0, &t, T0),
        Err(ProtocolError::PresignUsed { .. })
    ));
}

#[test]
fn node_refuses_a_presign_id_reused_in_a_second_session() {
    let mut c = Cluster::new(Ciphersuite::Secp256k1Tr, 32);
    let t = target("first session", None);
    let reqs = requests(&mut c, &t, SessionId([3; 32]));
    let env = request_for(&reqs, c.node(2));
    c.node_signs(2, env.clone(), &t, T0).expect("signed once");
    // Same id, another session and another message.
    let t2 = target("second session", None);
    let Payload::PresignedSign {
        request,
        tweak,
        package,
        epoch,
        index,
        ..
    } = env.payload.clone()
    else {
        panic!()
    };
    let replay = Envelope::seal(
        &c.coordinator,
        env.suite,
        env.key,
        SessionId([4; 32]),
        Payload::PresignedSign {
            request,
            message: t2.message.clone(),
            tweak,
            package,
            epoch,
            index,
            certificate: Default::default(),
        },
    );
    assert_eq!(
        c.node_signs(2, replay, &t2, T0).err().expect("reused id"),
        ProtocolError::PresignUsed { index }
    );
}

#[test]
fn signer_refuses_a_package_altering_or_omitting_its_commitment() {
    let mut c = Cluster::new(Ciphersuite::Secp256k1, 33);
    let t = target("altered", None);
    let reqs = requests(&mut c, &t, SessionId([5; 32]));
    let coordinator = c.coordinator.node_id();
    let id = |i: u16| frost_core::Identifier::<C1>::try_from(i).expect("id");
    // Node 0: its commitment replaced by a fresh one.
    let env0 = request_for(&reqs, c.node(0));
    let mut map = package_of(&env0).signing_commitments().clone();
    let fresh = commitments::<C1>(1, &mut c.rng).remove(0);
    map.insert(
        id(1),
        round1::SigningCommitments::<C1>::deserialize(&fresh).expect("c"),
    );
    let altered = with_package(
        &c,
        &env0,
        SigningPackage::new(map, &t.message)
            .serialize()
            .expect("ser"),
    );
    let (epoch, index) = presign_id(&env0);
    let nonces = c.pools[0].take(epoch, index, T0).expect("take");
    let config = c.signer_config(env0.session, &t);
    let mut signer =
        Signer::presigned(c.ids[0].clone(), &c.shares[0], config, nonces).expect("signer");
    assert_eq!(
        signer
            .handle(T0, Input::Message(altered), &mut c.rng)
            .expect_err("altered"),
        ProtocolError::aborted(coordinator, Fault::CommitmentAltered)
    );
    assert_eq!(signer.status(), Status::Failed);
    // Fail closed: the nonces are gone, even the honest package is refused — as
    // the coordinator's second, different package for the session (equivocation,
    // as in the two-round protocol), and the pool will not hand them out again.
    assert_eq!(
        signer
            .handle(T0, Input::Message(env0.clone()), &mut c.rng)
            .expect_err("after failure"),
        ProtocolError::Equivocation {
            culprit: coordinator,
            round: Round::PresignedSign
        }
    );
    assert_eq!(
        c.node_signs(0, env0, &t, T0).err().expect("taken"),
        ProtocolError::PresignUsed { index }
    );
    // Node 1: its commitment left out (the package still has t = 3 signers).
    let env1 = request_for(&reqs, c.node(1));
    let mut map = package_of(&env1).signing_commitments().clone();
    map.remove(&id(2));
    let fresh = commitments::<C1>(1, &mut c.rng).remove(0);
    map.insert(
        id(4),
        round1::SigningCommitments::<C1>::deserialize(&fresh).expect("c"),
    );
    let omitted = with_package(
        &c,
        &env1,
        SigningPackage::new(map, &t.message)
            .serialize()
            .expect("ser"),
    );
    assert_eq!(
        c.node_signs(1, omitted, &t, T0).err().expect("omitted"),
        ProtocolError::aborted(coordinator, Fault::CommitmentAltered)
    );
}

#[test]
fn signer_refuses_what_it_did_not_approve() {
    let mut c = Cluster::new(Ciphersuite::Secp256k1Tr, 34);
    let t = target("approved", Some([1; 32]));
    let reqs = requests(&mut c, &t, SessionId([6; 32]));
    let take_signer = |c: &mut Cluster, i: usize, env: &Envelope| {
        let (epoch, index) = presign_id(env);
        let nonces = c.pools[i].take(epoch, index, T0).expect("take");
        let config = c.signer_config(env.session, &t);
        Signer::presigned(c.ids[i].clone(), &c.shares[i], config, nonces).expect("signer")
    };
    // The envelope's message differs from what the node approved.
    let env = request_for(&reqs, c.node(0));
    let Payload::PresignedSign {
        request,
        tweak,
        package,
        epoch,
        index,
        ..
    } = env.payload.clone()
    else {
        panic!()
    };
    let mut s = take_signer(&mut c, 0, &env);
    let other_message = reseal(
        &c,
        &env,
        Payload::PresignedSign {
            request: request.clone(),
            message: b"something else".to_vec(),
            tweak,
            package: package.clone(),
            epoch,
            index,
            certificate: Default::default(),
        },
    );
    assert_eq!(
        s.handle(T0, Input::Message(other_message), &mut c.rng)
            .expect_err("message"),
        ProtocolError::RequestMismatch("message differs from the approved request")
    );
    // Another tweak.
    let env = request_for(&reqs, c.node(1));
    let mut s = take_signer(&mut c, 1, &env);
    let Payload::PresignedSign {
        request,
        message,
        package,
        epoch,
        index,
        ..
    } = env.payload.clone()
    else {
        panic!()
    };
    let no_tweak = reseal(
        &c,
        &env,
        Payload::PresignedSign {
            request,
            message,
            tweak: None,
            package,
            epoch,
            index,
            certificate: Default::default(),
        },
    );
    assert_eq!(
        s.handle(T0, Input::Message(no_tweak), &mut c.rng)
            .expect_err("tweak"),
        ProtocolError::RequestMismatch("tweak differs from the approved request")
    );
    // The envelope's message is right but the package signs something else.
    let env = request_for(&reqs, c.node(2));
    let mut s = take_signer(&mut c, 2, &env);
    type Tr = frost_secp256k1_tr::Secp256K1Sha256TR;
    let Payload::PresignedSign { package, .. } = &env.payload else {
        panic!()
    };
    let pkg = SigningPackage::<Tr>::deserialize(package).expect("pkg");
    let other = SigningPackage::new(pkg.signing_commitments().clone(), b"other bytes");
    let swapped = with_package(&c, &env, other.serialize().expect("ser"));
    assert_eq!(
        s.handle(T0, Input::Message(swapped), &mut c.rng)
            .expect_err("package message"),
        ProtocolError::RequestMismatch("message differs from the approved request")
    );
}

#[test]
fn signer_checks_the_envelopes_presign_id() {
    let mut c = Cluster::new(Ciphersuite::Ed25519, 35);
    let t = target("id check", None);
    let reqs = requests(&mut c, &t, SessionId([7; 32]));
    let env = request_for(&reqs, c.node(0));
    let (epoch, index) = presign_id(&env);
    // The driver took other nonces than the envelope names.
    let wrong = c.pools[0].take(epoch, index + 1, T0).expect("other nonces");
    let config = c.signer_config(env.session, &t);
    let mut s = Signer::presigned(c.ids[0].clone(), &c.shares[0], config, wrong).expect("signer");
    assert_eq!(
        s.handle(T0, Input::Message(env), &mut c.rng)
            .expect_err("id"),
        ProtocolError::RequestMismatch("presigned id differs from this session's nonces")
    );
    assert_eq!(s.status(), Status::Failed);
}

#[test]
fn presigned_signer_refuses_start_and_the_two_round_package() {
    let mut c = Cluster::new(Ciphersuite::Secp256k1, 36);
    let t = target("rounds", None);
    let reqs = requests(&mut c, &t, SessionId([8; 32]));
    let env = request_for(&reqs, c.node(0));
    let (epoch, index) = presign_id(&env);
    let make = |c: &mut Cluster, index: u64| {
        let nonces = c.pools[0].take(epoch, index, T0).expect("take");
        let config = c.signer_config(env.session, &t);
        Signer::presigned(c.ids[0].clone(), &c.shares[0], config, nonces).expect("signer")
    };
    // A SignPackage (two-round) envelope is not admitted; the session carries on.
    let mut s = make(&mut c, index);
    let Payload::PresignedSign { package, .. } = env.payload.clone() else {
        panic!()
    };
    let two_round = reseal(
        &c,
        &env,
        Payload::SignPackage {
            package,
            tweak: None,
        },
    );
    assert_eq!(
        s.handle(T0, Input::Message(two_round), &mut c.rng)
            .expect_err("round"),
        ProtocolError::UnexpectedRound {
            got: Round::SignPackage
        }
    );
    assert_eq!(s.status(), Status::Running);
    let outs = s
        .handle(T0, Input::Message(env.clone()), &mut c.rng)
        .expect("sign");
    assert!(outs.iter().any(|o| matches!(o, Output::Done(_))));
    // Start is a driver bug: refused, and the session fails closed.
    let mut s = make(&mut c, index + 1);
    assert!(matches!(
        s.handle(T0, Input::Start, &mut c.rng),
        Err(ProtocolError::InvalidState(_))
    ));
    assert_eq!(s.status(), Status::Failed);
    // A presigned envelope is not admitted by a two-round signer either.
    let mut two = Signer::new(
        c.ids[0].clone(),
        &c.shares[0],
        c.signer_config(env.session, &t),
    )
    .expect("signer");
    two.handle(T0, Input::Start, &mut c.rng).expect("commit");
    assert!(matches!(
        two.handle(T0, Input::Message(env), &mut c.rng),
        Err(ProtocolError::UnexpectedRound {
            got: Round::PresignedSign
        })
    ));
}

#[test]
fn presigned_nonces_of_another_key_are_refused() {
    let mut c = Cluster::new(Ciphersuite::Secp256k1, 37);
    let (other_shares, _) = share(Ciphersuite::Secp256k1, 38);
    let mut other = NoncePool::new(&other_shares[0], [9; 16], POOL).expect("pool");
    other.refill(T0, &mut c.rng).expect("offer");
    let nonces = other.take([9; 16], 0, T0).expect("take");
    let t = target("x", None);
    let config = c.signer_config(SessionId([9; 32]), &t);
    assert!(matches!(
        Signer::presigned(c.ids[0].clone(), &c.shares[0], config, nonces),
        Err(ProtocolError::InvalidParameters(_))
    ));
    // Nonces of another suite are refused the same way.
    let (ed, mut r) = share(Ciphersuite::Ed25519, 39);
    let mut ed_pool = NoncePool::new(&ed[0], [9; 16], POOL).expect("pool");
    ed_pool.refill(T0, &mut r).expect("offer");
    let nonces = ed_pool.take([9; 16], 0, T0).expect("take");
    let config = c.signer_config(SessionId([9; 32]), &t);
    assert!(Signer::presigned(c.ids[0].clone(), &c.shares[0], config, nonces).is_err());
}

// ------------------------------------------------------------------ aggregator

#[test]
fn aggregator_names_a_signer_sending_a_bad_share() {
    let mut c = Cluster::new(Ciphersuite::Secp256k1Tr, 40);
    let t = target("cheater", None);
    let session = SessionId([10; 32]);
    let signers = [c.node(0), c.node(1), c.node(2)];
    let refs = c.book.take_set(c.key(), &signers, T0).expect("set");
    let mut agg = c.aggregator(session, &t, refs);
    let reqs = sends(agg.handle(T0, Input::Start, &mut c.rng).expect("start"));
    let mut shares = BTreeMap::new();
    for (to, env) in reqs {
        let i = c.index_of(to);
        let (_, outs) = c.node_signs(i, env, &t, T0).expect("sign");
        let (_, share) = sends(outs).remove(0);
        shares.insert(to, share);
    }
    // Node 1 sends node 0's (valid, but not its own) share, validly signed.
    let Payload::SignShare { share } = shares[&c.node(0)].payload.clone() else {
        panic!()
    };
    let bad = Envelope::seal(
        &c.ids[1],
        Ciphersuite::Secp256k1Tr,
        c.key(),
        session,
        Payload::SignShare { share },
    );
    shares.insert(c.node(1), bad);
    let mut result = Ok(Vec::new());
    for (_, env) in shares {
        result = agg.handle(T0, Input::Message(env), &mut c.rng);
        if result.is_err() {
            break;
        }
    }
    assert_eq!(
        result.expect_err("cheater"),
        ProtocolError::Aborted {
            culprits: vec![c.node(1)],
            fault: Fault::InvalidSignatureShare
        }
    );
    assert_eq!(agg.status(), Status::Failed);
}

#[test]
fn aggregator_names_silent_signers_at_the_deadline() {
    let mut c = Cluster::new(Ciphersuite::Ed25519, 41);
    let t = target("silent", None);
    let session = SessionId([11; 32]);
    let signers = [c.node(1), c.node(3), c.node(4)];
    let refs = c.book.take_set(c.key(), &signers, T0).expect("set");
    let mut agg = c.aggregator(session, &t, refs);
    let outs = agg.handle(T0, Input::Start, &mut c.rng).expect("start");
    assert!(outs.iter().any(|o| matches!(
        o,
        Output::SetTimer { timer: TimerId::Deadline, at } if *at == T0.plus_ms(30_000)
    )));
    let reqs = sends(outs);
    let (to, env) = reqs[0].clone();
    let (_, share) = c.node_signs(c.index_of(to), env, &t, T0).expect("sign");
    for (_, s) in sends(share) {
        agg.handle(T0, Input::Message(s), &mut c.rng)
            .expect("share");
    }
    let mut silent: Vec<NodeId> = reqs[1..].iter().map(|(n, _)| *n).collect();
    silent.sort();
    assert_eq!(
        agg.handle(
            T0.plus_ms(30_000),
            Input::Timeout(TimerId::Deadline),
            &mut c.rng
        )
        .expect_err("deadline"),
        ProtocolError::Aborted {
            culprits: silent,
            fault: Fault::Timeout
        }
    );
}

#[test]
fn aggregator_checks_its_presigned_commitments() {
    let mut c = Cluster::new(Ciphersuite::Secp256k1, 42);
    let t = target("agg", None);
    let signers = [c.node(0), c.node(1), c.node(2)];
    let refs = c.book.take_set(c.key(), &signers, T0).expect("set");
    let config = |signers: Vec<NodeId>| AggregatorConfig {
        session: SessionId([12; 32]),
        signers,
        target: t.clone(),
        request: Vec::new(),
        timeout_ms: 1_000,
    };
    // The commitments must name exactly the chosen signers.
    let mut fewer = refs.clone();
    fewer.remove(&c.node(2));
    assert!(matches!(
        Aggregator::presigned(
            c.coordinator.clone(),
            &c.shares[0].public,
            config(signers.to_vec()),
            fewer
        ),
        Err(ProtocolError::InvalidParameters(_))
    ));
    let more = vec![c.node(0), c.node(1), c.node(2), c.node(3)];
    assert!(Aggregator::presigned(
        c.coordinator.clone(),
        &c.shares[0].public,
        config(more),
        refs.clone()
    )
    .is_err());
    // An undecodable commitment (not from the book) names its node at start.
    let mut broken = refs.clone();
    if let Some(r) = broken.get_mut(&c.node(1)) {
        r.commitments.push(0);
    }
    let mut agg = Aggregator::presigned(
        c.coordinator.clone(),
        &c.shares[0].public,
        config(signers.to_vec()),
        broken,
    )
    .expect("aggregator");
    assert_eq!(
        agg.handle(T0, Input::Start, &mut c.rng)
            .expect_err("bad commitment"),
        ProtocolError::aborted(c.node(1), Fault::InvalidElement)
    );
    // A presigned attempt has no commitment round.
    let mut agg = Aggregator::presigned(
        c.coordinator.clone(),
        &c.shares[0].public,
        config(signers.to_vec()),
        refs,
    )
    .expect("aggregator");
    let reqs = sends(agg.handle(T0, Input::Start, &mut c.rng).expect("start"));
    for (to, env) in &reqs {
        let Payload::PresignedSign {
            request,
            message,
            tweak,
            ..
        } = &env.payload
        else {
            panic!()
        };
        assert!(request.is_empty());
        assert_eq!((message, tweak), (&t.message, &None));
        assert_eq!(env.sender, c.coordinator.node_id());
        assert!(signers.contains(to));
    }
    let commit = Envelope::seal(
        &c.ids[0],
        Ciphersuite::Secp256k1,
        c.key(),
        SessionId([12; 32]),
        Payload::SignCommit {
            commitments: vec![1, 2, 3],
        },
    );
    assert_eq!(
        agg.handle(T0, Input::Message(commit), &mut c.rng)
            .expect_err("no commit round"),
        ProtocolError::UnexpectedRound {
            got: Round::SignCommit
        }
    );
    assert_eq!(agg.status(), Status::Running);
}

#[test]
fn aggregator_forwards_the_client_request_verbatim_with_each_signers_id() {
    let mut c = Cluster::new(Ciphersuite::Secp256k1, 43);
    let t = target("verbatim", None);
    let signers = [c.node(2), c.node(3), c.node(4)];
    let refs = c.book.take_set(c.key(), &signers, T0).expect("set");
    let expected: BTreeMap<NodeId, ([u8; 16], u64)> =
        refs.iter().map(|(n, r)| (*n, (r.epoch, r.index))).collect();
    let mut agg = c.aggregator(SessionId([13; 32]), &t, refs);
    let reqs = sends(agg.handle(T0, Input::Start, &mut c.rng).expect("start"));
    assert_eq!(reqs.len(), 3);
    let mut packages = std::collections::BTreeSet::new();
    for (to, env) in reqs {
        let Payload::PresignedSign {
            request, package, ..
        } = &env.payload
        else {
            panic!()
        };
        assert_eq!(request, b"client request");
        assert_eq!(presign_id(&env), expected[&to], "the signer's own id");
        packages.insert(package.clone());
    }
    assert_eq!(packages.len(), 1, "every signer gets the same package");
}
