//! MPC netting benchmark: 50 parties × 20 assets, every pair trading in every asset,
//! 5 nodes at threshold 3 — each step on its own, the whole round end to end on the
//! machine's two cores, and the plaintext computation of the same round (the
//! baseline), in the same run.
//!
//! `cargo bench -p quorate-protocol --bench netting`
//!
//! Per-step figures are single-threaded; multiply by how often a round runs the step
//! (printed in each name) for its share of the total. `end_to_end_2_threads` runs
//! every party's dealing, every node's checks and outputs, every party's result
//! verification, the settlement opening (by every node) and the FROST signature,
//! spread over two threads as separate processes on this 2-core machine would be.

use std::{sync::Arc, time::Duration};

use criterion::{criterion_group, criterion_main, Criterion};
use curve25519_dalek::RistrettoPoint;
use ed25519_dalek::SigningKey;
use quorate_protocol::{
    local,
    netting::{
        input::{PartyInput, Position},
        open::NodeOutputs,
        reference,
        result::{open_result, Published},
        round::{Bounds, Instrument, InstrumentKind, Party, RoundId, RoundSpec},
        session::{settle, NodeRound},
        share::deal,
        verify, BundleHeader, InputBundle, PartyOutputs,
    },
    Ciphersuite, KeyShare, NodeIdentity, SignTarget,
};
use rand_chacha::{rand_core::SeedableRng, ChaCha20Rng};

const PARTIES: usize = 50;
const ASSETS: usize = 20;
const NODES: usize = 5;
const T: u16 = 3;

struct Round {
    spec: RoundSpec,
    keys: Vec<SigningKey>,
    seals: Vec<x25519_dalek::StaticSecret>,
    nodes: Vec<Arc<NodeIdentity>>,
    shares: Vec<KeyShare>,
    inputs: Vec<PartyInput>,
}

fn setup() -> Round {
    let mut rng = ChaCha20Rng::seed_from_u64(42);
    let nodes = local::identities(NODES, &mut rng);
    let shares = local::run_dkg(&nodes, Ciphersuite::Secp256k1Tr, T, &mut rng).expect("dkg");
    let committee = local::committee_of(&nodes).expect("committee");
    let keys: Vec<SigningKey> = (0..PARTIES)
        .map(|_| SigningKey::generate(&mut rng))
        .collect();
    let seals: Vec<x25519_dalek::StaticSecret> = (0..PARTIES)
        .map(|_| x25519_dalek::StaticSecret::random_from_rng(&mut rng))
        .collect();
    let spec = RoundSpec {
        id: RoundId([9; 16]),
        parties: (0..PARTIES)
            .map(|p| Party {
                name: format!("desk-{p:02}"),
                sign_key: keys[p].verifying_key().to_bytes(),
                seal_key: x25519_dalek::PublicKey::from(&seals[p]).to_bytes(),
            })
            .collect(),
        instruments: (0..ASSETS)
            .map(|a| Instrument {
                name: format!("FUT-{a:02}"),
                kind: InstrumentKind::Future,
                asset: format!("ASSET-{a:02}"),
                multiplier: 10,
                price_move: (a as i64) * 7 - 60,
                premium: 0,
            })
            .collect(),
        cutoff: u64::MAX,
        key: shares[0].public.key_id,
        committee,
        threshold: T,
        bounds: Bounds::default(),
        limits: None,
    };
    spec.validate().expect("valid");
    // Every ordered pair trades every instrument; books mirror each other.
    let mut inputs: Vec<PartyInput> = (0..PARTIES).map(|_| PartyInput::default()).collect();
    for p in 0..PARTIES {
        for q in p + 1..PARTIES {
            for a in 0..ASSETS {
                let qty = ((p * 31 + q * 17 + a * 7) % 2001) as i64 - 1000;
                let cash = ((p * 13 + q * 5 + a) % 501) as i64 - 250;
                for (me, other, s) in [(p, q, 1), (q, p, -1)] {
                    inputs[me].positions.push(Position {
                        counterparty: spec.parties[other].name.clone(),
                        instrument: spec.instruments[a].name.clone(),
                        quantity: s * qty,
                        cash: s * cash,
                    });
                }
            }
        }
    }
    Round {
        spec,
        keys,
        seals,
        nodes,
        shares,
        inputs,
    }
}

fn deal_all(r: &Round, parties: std::ops::Range<usize>, seed: u64) -> Vec<InputBundle> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    parties
        .map(|p| deal(&r.spec, p, &r.keys[p], &r.inputs[p], 1, &mut rng).expect("deal"))
        .collect()
}

/// One node: accept every bundle, close, return its outputs.
fn node_work(r: &Round, j: usize, bundles: &[InputBundle]) -> (NodeRound, NodeOutputs) {
    let mut round = NodeRound::new(r.spec.clone()).expect("round");
    for b in bundles {
        let (h, bx) = b.for_node(j).expect("box");
        round
            .accept_bundle(1, &r.nodes[j], &h, &bx)
            .expect("accept");
    }
    let expected: Vec<_> = bundles.iter().map(|b| Some(b.header.digest())).collect();
    let out = round.close(&r.nodes[j], &expected).expect("close");
    (round, out)
}

fn points(r: &Round, bundles: &[InputBundle]) -> Vec<Option<Vec<RistrettoPoint>>> {
    bundles
        .iter()
        .map(|b| Some(verify::commitments(&r.spec, &b.header).expect("points")))
        .collect()
}

struct Public<'a> {
    headers: Vec<Option<&'a BundleHeader>>,
    points: Vec<Option<Vec<RistrettoPoint>>>,
    nets: Vec<Option<Vec<RistrettoPoint>>>,
}

fn public<'a>(r: &Round, bundles: &'a [InputBundle]) -> Public<'a> {
    Public {
        headers: bundles.iter().map(|b| Some(&b.header)).collect(),
        points: points(r, bundles),
        nets: bundles
            .iter()
            .map(|b| Some(verify::net_points(&r.spec, &b.header).expect("points")))
            .collect(),
    }
}

fn party_result(r: &Round, p: usize, public: &Public<'_>, outs: &[NodeOutputs], seed: u64) {
    let pts: Vec<Option<&[RistrettoPoint]>> = public.points.iter().map(|p| p.as_deref()).collect();
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let participants = vec![true; PARTIES];
    let mine: Vec<PartyOutputs> = outs.iter().map(|o| o.parties[p].clone()).collect();
    let published = Published {
        participants: &participants,
        inputs_digest: outs[0].public.inputs_digest,
        headers: &public.headers,
        commitments: &pts,
    };
    let res = open_result(&r.spec, &published, p, &r.seals[p], &mine, &mut rng).expect("result");
    assert!(res.culprits.is_empty() && res.mismatches.is_empty());
}

fn sign(r: &Round, message: [u8; 32]) {
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let coordinator = Arc::new(NodeIdentity::generate(&mut rng));
    let signers = r
        .nodes
        .iter()
        .cloned()
        .zip(r.shares.iter().cloned())
        .take(usize::from(T))
        .collect();
    local::run_signing(
        &coordinator,
        signers,
        SignTarget {
            message: message.to_vec(),
            tweak: None,
        },
        &mut rng,
    )
    .expect("signature");
}

fn end_to_end(r: &Round) {
    let half = PARTIES / 2;
    let bundles: Vec<InputBundle> = std::thread::scope(|s| {
        let a = s.spawn(|| deal_all(r, 0..half, 1));
        let b = s.spawn(|| deal_all(r, half..PARTIES, 2));
        let mut v = a.join().expect("thread");
        v.extend(b.join().expect("thread"));
        v
    });
    let results: Vec<(NodeRound, NodeOutputs)> = std::thread::scope(|s| {
        let a = s.spawn(|| {
            (0..3)
                .map(|j| node_work(r, j, &bundles))
                .collect::<Vec<_>>()
        });
        let b = s.spawn(|| {
            (3..NODES)
                .map(|j| node_work(r, j, &bundles))
                .collect::<Vec<_>>()
        });
        let mut v = a.join().expect("thread");
        v.extend(b.join().expect("thread"));
        v
    });
    let outs: Vec<NodeOutputs> = results.iter().map(|(_, o)| o.clone()).collect();
    let views: Vec<_> = outs.iter().map(|o| o.public.clone()).collect();
    let batches: Vec<[u8; 32]> = std::thread::scope(|s| {
        let handles: Vec<_> = results
            .chunks(3)
            .map(|chunk| {
                let views = &views;
                s.spawn(move || {
                    let mut rng = ChaCha20Rng::seed_from_u64(5);
                    chunk
                        .iter()
                        .map(|(round, _)| {
                            round
                                .settlement(views, &mut rng)
                                .expect("settle")
                                .0
                                .message()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("thread"))
            .collect()
    });
    assert!(batches.windows(2).all(|w| w[0] == w[1]));
    let public = public(r, &bundles);
    std::thread::scope(|s| {
        let refs = &public;
        let outs = &outs;
        let a = s.spawn(move || (0..half).for_each(|p| party_result(r, p, refs, outs, p as u64)));
        let b =
            s.spawn(move || (half..PARTIES).for_each(|p| party_result(r, p, refs, outs, p as u64)));
        a.join().expect("thread");
        b.join().expect("thread");
    });
    sign(r, batches[0]);
}

fn primitives(c: &mut Criterion) {
    use curve25519_dalek::{traits::VartimeMultiscalarMul, Scalar};
    use quorate_protocol::netting::pedersen;
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let a = Scalar::random(&mut rng);
    let b = Scalar::random(&mut rng);
    let p = pedersen::commit(&a, &b);
    let cp = p.compress();
    let pts: Vec<RistrettoPoint> = (0..5880u64)
        .map(|i| pedersen::commit(&Scalar::from(i), &b))
        .collect();
    let sc: Vec<Scalar> = (0..5880).map(|_| Scalar::random(&mut rng)).collect();
    let mut g = c.benchmark_group("netting_primitives");
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    g.bench_function("pedersen commit (2 fixed-base mults)", |bch| {
        bch.iter(|| pedersen::commit(&a, &b))
    });
    g.bench_function("compress", |bch| bch.iter(|| p.compress()));
    g.bench_function("decompress", |bch| bch.iter(|| cp.decompress()));
    g.bench_function("vartime msm 5880 points", |bch| {
        bch.iter(|| RistrettoPoint::vartime_multiscalar_mul(&sc, &pts))
    });
    g.bench_function("double_and_compress_batch 5880", |bch| {
        bch.iter(|| RistrettoPoint::double_and_compress_batch(&pts))
    });
    g.finish();
}

fn bench(c: &mut Criterion) {
    let r = setup();
    let bundles = deal_all(&r, 0..PARTIES, 1);
    let (round0, _) = node_work(&r, 0, &bundles);
    let outs: Vec<NodeOutputs> = (0..NODES).map(|j| node_work(&r, j, &bundles).1).collect();
    let views: Vec<_> = outs.iter().map(|o| o.public.clone()).collect();
    let public = public(&r, &bundles);
    let nets: Vec<Option<&[RistrettoPoint]>> = public.nets.iter().map(|p| p.as_deref()).collect();
    let participants = vec![true; PARTIES];
    let inputs_digest = outs[0].public.inputs_digest;
    let message = round0
        .settlement(&views, &mut ChaCha20Rng::seed_from_u64(3))
        .expect("settles")
        .0
        .message();
    let bundle_bytes = postcard::to_allocvec(&bundles[0]).expect("encode").len();
    let node_message = postcard::to_allocvec(&bundles[0].for_node(0).expect("box"))
        .expect("encode")
        .len();
    let node_bytes: usize = outs[0]
        .parties
        .iter()
        .map(|p| postcard::to_allocvec(p).expect("encode").len())
        .sum::<usize>()
        + postcard::to_allocvec(&outs[0].public)
            .expect("encode")
            .len();
    eprintln!(
        "netting round: {PARTIES} parties x {ASSETS} assets, {} values per party, {} commitments per bundle; bundle {} bytes (one node's part {} bytes), one node's outputs {} bytes",
        r.spec.values_per_party(),
        bundles[0].header.commitments.len(),
        bundle_bytes,
        node_message,
        node_bytes
    );

    let mut g = c.benchmark_group("netting_50x20_3of5");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    g.bench_function("plaintext_reference (baseline, whole round)", |b| {
        let inputs: Vec<Option<PartyInput>> = r.inputs.iter().cloned().map(Some).collect();
        b.iter(|| reference::compute(&r.spec, &inputs).expect("reference"))
    });
    g.bench_function("deal: commitments+sealing, one party (x50)", |b| {
        let mut rng = ChaCha20Rng::seed_from_u64(11);
        b.iter(|| deal(&r.spec, 0, &r.keys[0], &r.inputs[0], 1, &mut rng).expect("deal"))
    });
    g.bench_function("share verification: one bundle at one node (x250)", |b| {
        let (h, bx) = bundles[0].for_node(0).expect("box");
        b.iter(|| verify::accept(&r.spec, &r.nodes[0], &h, &bx).expect("accept"))
    });
    g.bench_function("netting+outputs: one node, whole round (x5)", |b| {
        let expected: Vec<_> = bundles.iter().map(|b| Some(b.header.digest())).collect();
        b.iter_batched(
            || {
                let mut round = NodeRound::new(r.spec.clone()).expect("round");
                for bd in &bundles {
                    let (h, bx) = bd.for_node(0).expect("box");
                    round
                        .accept_bundle(1, &r.nodes[0], &h, &bx)
                        .expect("accept");
                }
                round
            },
            |mut round| round.close(&r.nodes[0], &expected).expect("close"),
            criterion::BatchSize::LargeInput,
        )
    });
    g.bench_function(
        "settlement opening: verify 5 nodes' public shares (x5 nodes + coordinator)",
        |b| {
            let mut rng = ChaCha20Rng::seed_from_u64(13);
            b.iter(|| {
                settle(
                    &r.spec,
                    &participants,
                    inputs_digest,
                    &nets,
                    &views,
                    &mut rng,
                )
                .expect("settle")
            })
        },
    );
    g.bench_function(
        "party result: open and verify one party's outputs (x50)",
        |b| b.iter(|| party_result(&r, 0, &public, &outs, 14)),
    );
    g.bench_function("settlement signature: FROST secp256k1-tr 3-of-5", |b| {
        b.iter(|| sign(&r, message))
    });
    g.bench_function("end_to_end_2_threads (whole round)", |b| {
        b.iter(|| end_to_end(&r))
    });
    g.finish();
}

criterion_group!(benches, primitives, bench);
criterion_main!(benches);
