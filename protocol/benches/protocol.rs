//! Criterion benchmarks of the raw protocol, each quorate state-machine step next to
//! the bare frost-core operation it wraps (the baseline), in the same run.
//!
//! `cargo bench -p quorate-protocol --bench protocol`
//!
//! Keys for the signing benchmarks come from frost-core's trusted dealer: benchmark
//! setup only (the product has no dealer code path). DKG benchmarks run the real
//! dealerless DKG of every participant over the in-memory network.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion};
use frost_core::{keys, round1, round2, SigningPackage};
use quorate_protocol::{
    aggregate::AggregatorConfig,
    local,
    presign::{NoncePool, PoolConfig, MAX_OFFER},
    sign::SignerConfig,
    suite::Suite,
    Aggregator, Envelope, Input, KeyShare, NodeIdentity, Output, SessionId, SignTarget, Signer,
    Timestamp,
};
use rand_chacha::{rand_core::SeedableRng, ChaCha20Rng};

const MESSAGE: [u8; 32] = [0x5a; 32];

struct Fixture<C: Suite> {
    ids: Vec<Arc<NodeIdentity>>,
    coordinator: Arc<NodeIdentity>,
    shares: Vec<KeyShare>,
    key_packages: Vec<keys::KeyPackage<C>>,
    public: keys::PublicKeyPackage<C>,
}

fn fixture<C: Suite>(t: u16, n: u16, rng: &mut ChaCha20Rng) -> Fixture<C> {
    let ids = local::identities(usize::from(n), rng);
    let coordinator = Arc::new(NodeIdentity::generate(rng));
    let (secret_shares, public) =
        keys::generate_with_dealer::<C, _>(n, t, keys::IdentifierList::Default, &mut *rng)
            .expect("dealer");
    let members: BTreeMap<_, _> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.node_id(), u16::try_from(i + 1).expect("small")))
        .collect();
    let mut key_packages = Vec::new();
    let mut shares = Vec::new();
    for (i, (_, ss)) in secret_shares.into_iter().enumerate() {
        let kp = keys::KeyPackage::<C>::try_from(ss).expect("key package");
        let index = u16::try_from(i + 1).expect("small");
        shares.push(
            KeyShare::from_frost(
                quorate_protocol::KeyId([1; 16]),
                members.clone(),
                index,
                &kp,
                &public,
            )
            .expect("share"),
        );
        key_packages.push(kp);
    }
    Fixture {
        ids,
        coordinator,
        shares,
        key_packages,
        public,
    }
}

fn send_to(outs: Vec<Output<impl Sized>>) -> Vec<(quorate_protocol::NodeId, Envelope)> {
    outs.into_iter()
        .filter_map(|o| match o {
            Output::Send { to, msg } => Some((to, msg)),
            _ => None,
        })
        .collect()
}

fn signer_config(f: &Fixture<impl Suite>) -> SignerConfig {
    SignerConfig {
        session: SessionId([3; 32]),
        coordinator: f.coordinator.node_id(),
        target: SignTarget {
            message: MESSAGE.to_vec(),
            tweak: None,
        },
        timeout_ms: 60_000,
    }
}

/// Drives an aggregator and `t` signers up to the point where all signature shares
/// are in flight; returns the aggregator and the share envelopes.
fn shares_in_flight<C: Suite>(
    f: &Fixture<C>,
    t: usize,
    rng: &mut ChaCha20Rng,
) -> (Aggregator, Vec<Envelope>) {
    let now = Timestamp(0);
    let mut agg = Aggregator::new(
        f.coordinator.clone(),
        &f.shares[0].public,
        AggregatorConfig {
            session: SessionId([3; 32]),
            signers: f.ids[..t].iter().map(|i| i.node_id()).collect(),
            target: SignTarget {
                message: MESSAGE.to_vec(),
                tweak: None,
            },
            request: Vec::new(),
            timeout_ms: 60_000,
        },
    )
    .expect("aggregator");
    agg.handle(now, Input::Start, rng).expect("start");
    let mut signers = BTreeMap::new();
    let mut packages = Vec::new();
    for i in 0..t {
        let mut s = Signer::new(f.ids[i].clone(), &f.shares[i], signer_config(f)).expect("signer");
        for (_, env) in send_to(s.handle(now, Input::Start, rng).expect("commit")) {
            packages.extend(send_to(
                agg.handle(now, Input::Message(env), rng)
                    .expect("commit in"),
            ));
        }
        signers.insert(f.ids[i].node_id(), s);
    }
    let mut share_envs = Vec::new();
    for (to, env) in packages {
        let s = signers.get_mut(&to).expect("signer");
        share_envs.extend(
            send_to(s.handle(now, Input::Message(env), rng).expect("sign"))
                .into_iter()
                .map(|(_, e)| e),
        );
    }
    (agg, share_envs)
}

fn bench_signing<C: Suite>(c: &mut Criterion, t: u16, n: u16) {
    let mut rng = ChaCha20Rng::seed_from_u64(u64::from(t) << 16 | u64::from(n));
    let f = fixture::<C>(t, n, &mut rng);
    let tu = usize::from(t);
    let label = format!("{}/{t}-of-{n}", C::SUITE);
    let now = Timestamp(0);

    let mut g = c.benchmark_group("round1");
    g.bench_function(BenchmarkId::new("frost-core", &label), |b| {
        b.iter(|| round1::commit(f.key_packages[0].signing_share(), &mut rng))
    });
    g.bench_function(BenchmarkId::new("quorate", &label), |b| {
        b.iter_batched(
            || Signer::new(f.ids[0].clone(), &f.shares[0], signer_config(&f)).expect("signer"),
            |mut s| {
                s.handle(now, Input::Start, &mut ChaCha20Rng::seed_from_u64(1))
                    .expect("commit")
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();

    // A signing package for the first t signers (frost-core baseline).
    let mut nonces = Vec::new();
    let mut commitments = BTreeMap::new();
    for kp in &f.key_packages[..tu] {
        let (nn, cc) = round1::commit(kp.signing_share(), &mut rng);
        commitments.insert(*kp.identifier(), cc);
        nonces.push(nn);
    }
    let package = SigningPackage::new(commitments, &MESSAGE);

    let mut g = c.benchmark_group("round2");
    g.bench_function(BenchmarkId::new("frost-core", &label), |b| {
        b.iter(|| round2::sign(&package, &nonces[0], &f.key_packages[0]).expect("sign"))
    });
    g.bench_function(BenchmarkId::new("quorate", &label), |b| {
        // Setup: a started signer plus the coordinator's package carrying its commitment.
        b.iter_batched(
            || {
                let mut s =
                    Signer::new(f.ids[0].clone(), &f.shares[0], signer_config(&f)).expect("signer");
                let commit = send_to(s.handle(now, Input::Start, &mut rng).expect("commit"));
                let quorate_protocol::Payload::SignCommit { commitments: mine } =
                    &commit[0].1.payload
                else {
                    unreachable!("first output is the commitment")
                };
                let mut map = package.signing_commitments().clone();
                map.insert(
                    *f.key_packages[0].identifier(),
                    round1::SigningCommitments::<C>::deserialize(mine).expect("c"),
                );
                let pkg = SigningPackage::new(map, &MESSAGE).serialize().expect("ser");
                let env = Envelope::seal(
                    &f.coordinator,
                    C::SUITE,
                    f.shares[0].public.key_id,
                    SessionId([3; 32]),
                    quorate_protocol::Payload::SignPackage {
                        package: pkg,
                        tweak: None,
                    },
                );
                (s, env)
            },
            |(mut s, env)| {
                s.handle(now, Input::Message(env), &mut ChaCha20Rng::seed_from_u64(2))
                    .expect("sign")
            },
            BatchSize::SmallInput,
        )
    });
    // Presigned round 2: `Signer::presigned` answering a `PresignedSign` (the whole
    // online work of a node in one-round signing). Setup: nonces taken from the
    // node's pool, the coordinator's package carrying their commitment.
    const EPOCH: [u8; 16] = [7; 16];
    let mut pool = NoncePool::new(
        &f.shares[0],
        EPOCH,
        PoolConfig {
            size: MAX_OFFER,
            refill_below: 1,
            lifetime_ms: u64::MAX,
        },
    )
    .expect("pool");
    let mut next = 0u64;
    g.bench_function(BenchmarkId::new("quorate-presigned", &label), |b| {
        b.iter_batched(
            || {
                if pool.held() == 0 {
                    pool.refill(now, &mut rng).expect("offer");
                }
                let index = next;
                next += 1;
                let nonces = pool.take(EPOCH, index, now).expect("take");
                let mine = nonces.commitments().expect("commitments");
                let mut map = package.signing_commitments().clone();
                map.insert(
                    *f.key_packages[0].identifier(),
                    round1::SigningCommitments::<C>::deserialize(&mine).expect("c"),
                );
                let pkg = SigningPackage::new(map, &MESSAGE).serialize().expect("ser");
                let env = Envelope::seal(
                    &f.coordinator,
                    C::SUITE,
                    f.shares[0].public.key_id,
                    SessionId([3; 32]),
                    quorate_protocol::Payload::PresignedSign {
                        request: Vec::new(),
                        message: MESSAGE.to_vec(),
                        tweak: None,
                        package: pkg,
                        epoch: EPOCH,
                        index,
                        certificate: Default::default(),
                    },
                );
                let s =
                    Signer::presigned(f.ids[0].clone(), &f.shares[0], signer_config(&f), nonces)
                        .expect("signer");
                (s, env)
            },
            |(mut s, env)| {
                s.handle(now, Input::Message(env), &mut ChaCha20Rng::seed_from_u64(2))
                    .expect("sign")
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();

    let shares: BTreeMap<_, _> = f.key_packages[..tu]
        .iter()
        .zip(&nonces)
        .map(|(kp, nn)| {
            (
                *kp.identifier(),
                round2::sign(&package, nn, kp).expect("sign"),
            )
        })
        .collect();
    let mut g = c.benchmark_group("aggregate");
    if t > 10 {
        g.sample_size(10).measurement_time(Duration::from_secs(4));
    }
    g.bench_function(BenchmarkId::new("frost-core", &label), |b| {
        b.iter(|| {
            frost_core::aggregate_custom(
                &package,
                &shares,
                &f.public,
                frost_core::CheaterDetection::AllCheaters,
            )
            .expect("aggregate")
        })
    });
    g.bench_function(BenchmarkId::new("quorate", &label), |b| {
        b.iter_batched(
            || shares_in_flight(&f, tu, &mut rng),
            |(mut agg, envs)| {
                let mut done = false;
                for env in envs {
                    done |= agg
                        .handle(now, Input::Message(env), &mut ChaCha20Rng::seed_from_u64(3))
                        .expect("share")
                        .iter()
                        .any(|o| matches!(o, Output::Done(_)));
                }
                assert!(done);
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

fn bench_dkg(c: &mut Criterion) {
    let mut g = c.benchmark_group("dkg");
    g.sample_size(10).measurement_time(Duration::from_secs(3));
    for suite in quorate_protocol::Ciphersuite::ALL {
        for (t, n) in [(3u16, 5usize), (7, 10)] {
            let mut rng = ChaCha20Rng::seed_from_u64(9);
            let ids = local::identities(n, &mut rng);
            g.bench_function(BenchmarkId::new(suite.name(), format!("{t}-of-{n}")), |b| {
                b.iter(|| local::run_dkg(&ids, suite, t, &mut rng).expect("dkg"))
            });
        }
    }
    g.finish();
}

fn bench_rounds(c: &mut Criterion) {
    for (t, n) in [(3u16, 5u16), (67, 100)] {
        bench_signing::<frost_secp256k1::Secp256K1Sha256>(c, t, n);
        bench_signing::<frost_secp256k1_tr::Secp256K1Sha256TR>(c, t, n);
        bench_signing::<frost_ed25519::Ed25519Sha512>(c, t, n);
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bench_dkg, bench_rounds
}
criterion_main!(benches);
