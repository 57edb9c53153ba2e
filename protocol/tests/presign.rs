//! One-round (presigned) signing through the public API for every ciphersuite,
//! verified by independent verifiers: nodes' pools offer commitments, the
//! coordinator's book picks a set, the aggregator sends one `PresignedSign` per
//! signer and each node answers with one share.

mod common;

use std::sync::Arc;

use common::{message, setup, verify_independently};
use quorate_protocol::{
    aggregate::AggregatorConfig,
    presign::{random_epoch, BookConfig, NoncePool, Offer, PoolConfig, PresignBook},
    sign::SignerConfig,
    Aggregator, Ciphersuite, Input, NodeIdentity, Output, Payload, SessionId, SignTarget,
    SignatureBytes, Signer, Timestamp,
};

fn one_round(suite: Ciphersuite, tweak: Option<[u8; 32]>, seed: u64) -> (SignatureBytes, Vec<u8>) {
    let (ids, shares, mut rng) = setup(5, 3, suite, seed);
    let coordinator = Arc::new(NodeIdentity::generate(&mut rng));
    let public = shares[0].public.clone();
    let now = Timestamp(0);
    let config = PoolConfig {
        size: 8,
        refill_below: 4,
        lifetime_ms: 600_000,
    };
    let mut book = PresignBook::new(BookConfig::default()).expect("book");
    let mut pools: Vec<NoncePool> = shares
        .iter()
        .map(|s| NoncePool::new(s, random_epoch(&mut rng), config).expect("pool"))
        .collect();
    for (i, pool) in pools.iter_mut().enumerate() {
        let offer = Offer::try_from(pool.refill(now, &mut rng).expect("offer")).expect("offer");
        book.offer(public.key_id, suite, ids[i].node_id(), offer, now)
            .expect("accepted");
    }
    // Signers 1, 3, 4.
    let chosen = [1usize, 3, 4];
    let signers: Vec<_> = chosen.iter().map(|i| ids[*i].node_id()).collect();
    let refs = book
        .take_set(public.key_id, &signers, now)
        .expect("a presigned set");
    let target = SignTarget {
        message: message(&format!("presigned {suite} {tweak:?}")),
        tweak,
    };
    let session = SessionId([seed as u8; 32]);
    let mut agg = Aggregator::presigned(
        coordinator.clone(),
        &public,
        AggregatorConfig {
            session,
            signers: signers.clone(),
            target: target.clone(),
            request: b"signed client request".to_vec(),
            timeout_ms: 10_000,
        },
        refs,
    )
    .expect("aggregator");
    let mut signature = None;
    for out in agg.handle(now, Input::Start, &mut rng).expect("start") {
        let Output::Send { to, msg } = out else {
            continue;
        };
        let i = ids
            .iter()
            .position(|id| id.node_id() == to)
            .expect("member");
        let Payload::PresignedSign { epoch, index, .. } = &msg.payload else {
            panic!("expected PresignedSign");
        };
        let nonces = pools[i].take(*epoch, *index, now).expect("nonces");
        let mut signer = Signer::presigned(
            ids[i].clone(),
            &shares[i],
            SignerConfig {
                session: msg.session,
                coordinator: coordinator.node_id(),
                target: target.clone(),
                timeout_ms: 10_000,
            },
            nonces,
        )
        .expect("signer");
        for o in signer
            .handle(now, Input::Message(msg), &mut rng)
            .expect("sign")
        {
            if let Output::Send { msg: share, .. } = o {
                for a in agg
                    .handle(now, Input::Message(share), &mut rng)
                    .expect("share")
                {
                    if let Output::Done(sig) = a {
                        signature = Some(sig);
                    }
                }
            }
        }
    }
    let sig = signature.expect("a signature after one round trip");
    assert_eq!(
        sig.verifying_key,
        public.output_key(tweak.as_ref()).expect("key")
    );
    public
        .verify(&target.message, &sig.signature, tweak.as_ref())
        .expect("frost verifier accepts");
    (sig, target.message)
}

#[test]
fn presigned_signature_verifies_independently_secp256k1() {
    let (sig, msg) = one_round(Ciphersuite::Secp256k1, None, 1);
    verify_independently(&sig, &msg).expect("independent verifier");
}

#[test]
fn presigned_signature_verifies_independently_secp256k1_tr() {
    let (sig, msg) = one_round(Ciphersuite::Secp256k1Tr, None, 2);
    verify_independently(&sig, &msg).expect("libsecp256k1 BIP340");
}

#[test]
fn presigned_signature_verifies_independently_secp256k1_tr_tweaked() {
    let (sig, msg) = one_round(Ciphersuite::Secp256k1Tr, Some([0x24; 32]), 3);
    verify_independently(&sig, &msg).expect("libsecp256k1 BIP340 under the tweaked key");
}

#[test]
fn presigned_signature_verifies_independently_ed25519() {
    let (sig, msg) = one_round(Ciphersuite::Ed25519, None, 4);
    verify_independently(&sig, &msg).expect("ed25519-dalek strict");
    assert!(verify_independently(&sig, &message("other")).is_err());
}
