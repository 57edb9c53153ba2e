//! Criterion benchmarks of key resharing next to a fresh DKG of the new committee,
//! in the same group of the same run (host CPU, one thread, in-memory network).
//!
//! `cargo bench -p quorate-protocol --bench reshare`
//!
//! For each size pair `t-of-n → t′-of-n′`: nodes 1..=n hold a secp256k1 key from a
//! real DKG run outside the timed loop; the new committee is the last n′ of the
//! max(n, n′) nodes (with roster-style indices: node i has index i). Timed:
//!
//! - `reshare`: `local::run_reshare` with every old member dealing (as the
//!   coordinator does when all are reachable): commitments, echo, sealed
//!   sub-shares, checks, new shares and confirmations of every participant;
//! - `dkg`: `local::run_dkg` of the new committee at t′ (rounds 1, echo, 2 and
//!   confirmation of all n′ participants).
//!
//! Each iteration reshares the same generation-0 key, so iterations are
//! independent. 67-of-100 → 70-of-105 takes minutes per iteration on a 2-core
//! host (both a reshare and a DKG are O(n²·t) group operations over all
//! participants), too long for criterion's ten samples: it runs only with
//! `QUORATE_BENCH_LARGE=1`; the simulator's `reshare-67of100-to-70of105` scenario
//! measures it once instead (BENCHMARKS.md, "Key lifecycle").

use std::{sync::Arc, time::Duration};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode};
use quorate_protocol::{local, Ciphersuite, Committee, KeyShare, Member, NodeIdentity};
use rand_chacha::{rand_core::SeedableRng, ChaCha20Rng};

const SUITE: Ciphersuite = Ciphersuite::Secp256k1;

/// `(t, n, t′, n′)`.
const PAIRS: [(u16, usize, u16, usize); 2] = [(3, 5, 4, 7), (7, 10, 11, 15)];
const LARGE: (u16, usize, u16, usize) = (67, 100, 70, 105);

fn member(id: &Arc<NodeIdentity>, index: usize) -> Member {
    let p = id.public();
    Member {
        node: p.node,
        index: u16::try_from(index).expect("small index"),
        seal_key: p.seal_key,
    }
}

struct Fixture {
    dealers: Vec<(Arc<NodeIdentity>, KeyShare)>,
    newcomers: Vec<Arc<NodeIdentity>>,
    committee: Committee,
    new_ids: Vec<Arc<NodeIdentity>>,
}

fn fixture(t: u16, n: usize, new_n: usize, rng: &mut ChaCha20Rng) -> Fixture {
    let total = n.max(new_n);
    let ids = local::identities(total, rng);
    let shares = local::run_dkg(&ids[..n], SUITE, t, rng).expect("dkg of the old committee");
    let first_new = total - new_n;
    let committee = Committee::new((first_new..total).map(|i| member(&ids[i], i + 1)).collect())
        .expect("committee");
    Fixture {
        dealers: ids[..n].iter().cloned().zip(shares).collect(),
        newcomers: ids[n.max(first_new)..].to_vec(),
        committee,
        new_ids: ids[first_new..].to_vec(),
    }
}

fn bench_pair(c: &mut Criterion, (t, n, new_t, new_n): (u16, usize, u16, usize), large: bool) {
    let mut rng = ChaCha20Rng::seed_from_u64((u64::from(t) << 32) | n as u64);
    let f = fixture(t, n, new_n, &mut rng);
    // The reshare the bench times works: the new shares keep the group key.
    let check = local::run_reshare(&f.dealers, &f.newcomers, &f.committee, new_t, &mut rng)
        .expect("reshare");
    assert_eq!(check.len(), new_n);
    assert!(check.iter().all(
        |s| s.public.verifying_key == f.dealers[0].1.public.verifying_key
            && s.public.threshold == new_t
    ));
    let mut g = c.benchmark_group(format!("lifecycle/{t}-of-{n} to {new_t}-of-{new_n}"));
    if large {
        g.sampling_mode(SamplingMode::Flat)
            .sample_size(10)
            .warm_up_time(Duration::from_millis(1))
            .measurement_time(Duration::from_secs(1));
    } else if new_n > 10 {
        g.sampling_mode(SamplingMode::Flat)
            .sample_size(10)
            .measurement_time(Duration::from_secs(8));
    } else {
        g.sample_size(20).measurement_time(Duration::from_secs(8));
    }
    g.bench_function(BenchmarkId::from_parameter("reshare"), |b| {
        b.iter(|| {
            local::run_reshare(&f.dealers, &f.newcomers, &f.committee, new_t, &mut rng)
                .expect("reshare")
        })
    });
    g.bench_function(
        BenchmarkId::from_parameter(format!("dkg {new_t}-of-{new_n}")),
        |b| b.iter(|| local::run_dkg(&f.new_ids, SUITE, new_t, &mut rng).expect("dkg")),
    );
    g.finish();
}

fn bench_lifecycle(c: &mut Criterion) {
    for pair in PAIRS {
        bench_pair(c, pair, false);
    }
    if std::env::var_os("QUORATE_BENCH_LARGE").is_some_and(|v| v == "1") {
        bench_pair(c, LARGE, true);
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1));
    targets = bench_lifecycle
}
criterion_main!(benches);
