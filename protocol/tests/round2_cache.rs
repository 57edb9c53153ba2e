//! The round-2 cache (used by the simulator) changes nothing a signer sends: for
//! every suite, with and without a Taproot tweak, a signer with the cache produces
//! the byte-identical share `frost_core::round2::sign` produces, a whole signing
//! with a shared cache verifies independently, and a cached package does not let a
//! signer skip its own checks.

mod common;

use std::sync::Arc;

use common::{message, rng, setup, verify_independently};
use quorate_protocol::{
    aggregate::AggregatorConfig,
    machine::Status,
    sign::{ShareSent, SignerConfig},
    Aggregator, Ciphersuite, Envelope, Input, KeyShare, NodeId, NodeIdentity, Output,
    ProtocolError, Round2Cache, SessionId, SignTarget, Signer, Timestamp,
};

fn sends<T>(outputs: Vec<Output<T>>) -> Vec<(NodeId, Envelope)> {
    outputs
        .into_iter()
        .filter_map(|o| match o {
            Output::Send { to, msg } => Some((to, msg)),
            _ => None,
        })
        .collect()
}

struct Run {
    coordinator: Arc<NodeIdentity>,
    ids: Vec<Arc<NodeIdentity>>,
    shares: Vec<KeyShare>,
    target: SignTarget,
    session: SessionId,
}

impl Run {
    fn new(suite: Ciphersuite, tweak: Option<[u8; 32]>, seed: u64) -> Self {
        let (ids, shares, mut r) = setup(5, 3, suite, seed);
        Self {
            coordinator: Arc::new(NodeIdentity::generate(&mut r)),
            ids,
            shares,
            target: SignTarget {
                message: message(&format!("cache {suite} {seed}")),
                tweak,
            },
            session: SessionId([seed as u8; 32]),
        }
    }

    fn signer(&self, i: usize, target: SignTarget, cache: Option<&Round2Cache>) -> Signer {
        let s = Signer::new(
            self.ids[i].clone(),
            &self.shares[i],
            SignerConfig {
                session: self.session,
                coordinator: self.coordinator.node_id(),
                target,
                timeout_ms: 60_000,
            },
        )
        .expect("signer");
        match cache {
            Some(c) => s.with_round2_cache(c.clone()),
            None => s,
        }
    }

    fn aggregator(&self, signers: &[usize]) -> Aggregator {
        Aggregator::new(
            self.coordinator.clone(),
            &self.shares[0].public,
            AggregatorConfig {
                session: self.session,
                signers: signers.iter().map(|i| self.ids[*i].node_id()).collect(),
                target: self.target.clone(),
                request: Vec::new(),
                timeout_ms: 60_000,
            },
        )
        .expect("aggregator")
    }
}

/// Runs signers 0, 2, 4 twice each from the same nonce seed, once without and once
/// with a shared cache, and returns the two shares of every signer.
fn paired_shares(
    suite: Ciphersuite,
    tweak: Option<[u8; 32]>,
    seed: u64,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let run = Run::new(suite, tweak, seed);
    let members = [0usize, 2, 4];
    let cache = Round2Cache::default();
    let now = Timestamp(0);
    let mut r = rng(seed + 1);
    let mut agg = run.aggregator(&members);
    let mut to_signers = sends(agg.handle(now, Input::Start, &mut r).expect("start"));
    let mut plain = Vec::new();
    let mut cached = Vec::new();
    for &i in &members {
        plain.push(run.signer(i, run.target.clone(), None));
        cached.push(run.signer(i, run.target.clone(), Some(&cache)));
    }
    let mut packages = Vec::new();
    for (k, (p, c)) in plain.iter_mut().zip(cached.iter_mut()).enumerate() {
        // Same nonce seed: both signers commit to the same nonces.
        let a = sends(
            p.handle(now, Input::Start, &mut rng(seed * 10 + k as u64))
                .expect("p"),
        );
        let b = sends(
            c.handle(now, Input::Start, &mut rng(seed * 10 + k as u64))
                .expect("c"),
        );
        assert_eq!(a, b, "same commitments");
        for (_, env) in a {
            packages.extend(sends(
                agg.handle(now, Input::Message(env), &mut r)
                    .expect("commit"),
            ));
        }
    }
    to_signers.append(&mut packages);
    let mut out = Vec::new();
    for (k, &i) in members.iter().enumerate() {
        let package = to_signers
            .iter()
            .find(|(to, e)| {
                *to == run.ids[i].node_id() && e.round == quorate_protocol::Round::SignPackage
            })
            .map(|(_, e)| e.clone())
            .expect("package for signer");
        let share = |s: &mut Signer| -> Vec<u8> {
            let outs = s
                .handle(now, Input::Message(package.clone()), &mut rng(99))
                .expect("sign");
            outs.into_iter()
                .find_map(|o| match o {
                    Output::Done(ShareSent { share }) => Some(share),
                    _ => None,
                })
                .expect("share")
        };
        out.push((share(&mut plain[k]), share(&mut cached[k])));
    }
    let (hits, misses) = cache.counts();
    assert_eq!((hits, misses), (2, 1), "one computation, reused twice");
    out
}

macro_rules! identical {
    ($($name:ident: $suite:expr, $tweak:expr, $seed:expr;)*) => {$(
        #[test]
        fn $name() {
            // Several seeds, so both parities of the group commitment (BIP340 nonce
            // negation) occur for secp256k1-tr.
            for seed in $seed..$seed + 6 {
                for (plain, cached) in paired_shares($suite, $tweak, seed) {
                    assert_eq!(plain, cached, "cached round 2 gives frost's share");
                }
            }
        }
    )*};
}

identical! {
    cached_share_equals_frost_share_secp256k1: Ciphersuite::Secp256k1, None, 10;
    cached_share_equals_frost_share_ed25519: Ciphersuite::Ed25519, None, 20;
    cached_share_equals_frost_share_secp256k1_tr: Ciphersuite::Secp256k1Tr, None, 30;
    cached_share_equals_frost_share_secp256k1_tr_tweaked: Ciphersuite::Secp256k1Tr, Some([7u8; 32]), 40;
}

#[test]
fn signing_with_a_shared_cache_verifies_for_every_suite() {
    for (k, suite) in Ciphersuite::ALL.into_iter().enumerate() {
        let run = Run::new(suite, None, 40 + k as u64);
        let members = [1usize, 2, 3];
        let cache = Round2Cache::default();
        let now = Timestamp(0);
        let mut r = rng(7);
        let mut agg = run.aggregator(&members);
        let mut queue = sends(agg.handle(now, Input::Start, &mut r).expect("start"));
        let mut signers: Vec<Signer> = members
            .iter()
            .map(|&i| run.signer(i, run.target.clone(), Some(&cache)))
            .collect();
        for s in &mut signers {
            queue.extend(sends(s.handle(now, Input::Start, &mut r).expect("start")));
        }
        let mut signature = None;
        while let Some((to, env)) = queue.pop() {
            if env.round == quorate_protocol::Round::SignRequest {
                continue; // the node's business (policy), not the signer machine's
            }
            if let Some(k) = members.iter().position(|&i| run.ids[i].node_id() == to) {
                queue.extend(sends(
                    signers[k]
                        .handle(now, Input::Message(env), &mut r)
                        .expect("signer"),
                ));
            } else {
                for o in agg.handle(now, Input::Message(env), &mut r).expect("agg") {
                    match o {
                        Output::Send { to, msg } => queue.push((to, msg)),
                        Output::Done(sig) => signature = Some(sig),
                        Output::SetTimer { .. } => {}
                    }
                }
            }
        }
        assert!(signers.iter().all(|s| s.status() == Status::Done));
        let sig = signature.expect("signature");
        verify_independently(&sig, &run.target.message).expect("verifies");
        assert_eq!(cache.counts(), (2, 1), "{suite}");
    }
}

#[test]
fn cached_package_for_another_message_is_still_refused() {
    // Signer 0 approved message A; the package (already in the cache from a signer
    // that approved it) signs message A. Signer 1 approved message B and must refuse
    // the same package even though its public values are cached.
    let run = Run::new(Ciphersuite::Secp256k1, None, 60);
    let members = [0usize, 1, 2];
    let cache = Round2Cache::default();
    let now = Timestamp(0);
    let mut r = rng(3);
    let mut agg = run.aggregator(&members);
    agg.handle(now, Input::Start, &mut r).expect("start");
    let mut s0 = run.signer(0, run.target.clone(), Some(&cache));
    let other = SignTarget {
        message: message("something else"),
        tweak: None,
    };
    let mut s1 = run.signer(1, other, Some(&cache));
    let mut s2 = run.signer(2, run.target.clone(), Some(&cache));
    let mut packages = Vec::new();
    for s in [&mut s0, &mut s1, &mut s2] {
        for (_, env) in sends(s.handle(now, Input::Start, &mut r).expect("start")) {
            packages.extend(sends(
                agg.handle(now, Input::Message(env), &mut r).expect("c"),
            ));
        }
    }
    let package_for = |i: usize| {
        packages
            .iter()
            .find(|(to, _)| *to == run.ids[i].node_id())
            .map(|(_, e)| e.clone())
            .expect("package")
    };
    s0.handle(now, Input::Message(package_for(0)), &mut r)
        .expect("signer 0 signs");
    let refused = s1.handle(now, Input::Message(package_for(1)), &mut r);
    assert!(
        matches!(refused, Err(ProtocolError::RequestMismatch(_))),
        "{refused:?}"
    );
    assert_eq!(cache.counts(), (1, 1), "the refusal came after a cache hit");
}
