//! Limit-check MPC benchmark: 50 parties × 20 assets = 1000 comparisons
//! ("net + collateral + limit ≥ 0"), 5 nodes at threshold 3, every node and the king
//! in one process with the nodes spread over the machine's two cores, including
//! key setup, the multiplication (MAC) check, the opening check and the verdicts;
//! next to the plaintext check of the same values (the baseline), in the same run.
//!
//! `cargo bench -p quorate-protocol --bench limits`
//!
//! Prints the run's steps, products, openings and bytes per comparison once.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use quorate_protocol::{
    netting::limits::{self, field::F, local, Job, Params},
    Committee, Member, NodeIdentity,
};
use rand_chacha::{
    rand_core::{RngCore, SeedableRng},
    ChaCha20Rng,
};

const PARTIES: usize = 50;
const ASSETS: usize = 20;
const NODES: usize = 5;
const T: u16 = 3;

struct Setup {
    params: Params,
    ids: Vec<NodeIdentity>,
    job: Job,
    values: Vec<i128>,
    shares: Vec<Vec<F>>,
}

fn setup() -> Setup {
    let mut rng = ChaCha20Rng::seed_from_u64(17);
    let mut ids: Vec<NodeIdentity> = (0..NODES)
        .map(|_| NodeIdentity::generate(&mut rng))
        .collect();
    let members: Vec<Member> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| Member {
            node: id.node_id(),
            index: i as u16 + 1,
            seal_key: id.public().seal_key,
        })
        .collect();
    let committee = Committee::new(members).expect("committee");
    ids.sort_by_key(|id| committee.get(&id.node_id()).map(|m| m.index));
    let params = Params::from_committee(&committee, T, [3; 32]).expect("params");
    // One verdict group per party (the clearing house may learn who failed).
    let job = Job {
        inputs: PARTIES * ASSETS,
        verdicts: (0..PARTIES)
            .map(|p| ((p * ASSETS) as u32..((p + 1) * ASSETS) as u32).collect())
            .collect(),
        sums: Vec::new(),
    };
    let values: Vec<i128> = (0..PARTIES * ASSETS)
        .map(|_| i128::from(rng.next_u64() as i64) >> 8)
        .collect();
    let f: Vec<F> = values.iter().map(|v| F::from_i128(*v)).collect();
    let shares = local::share(&params, &f, &mut rng);
    Setup {
        params,
        ids,
        job,
        values,
        shares,
    }
}

fn plaintext(values: &[i128]) -> Vec<bool> {
    values
        .chunks(ASSETS)
        .map(|p| p.iter().all(|v| *v >= 0))
        .collect()
}

fn bench(c: &mut Criterion) {
    let s = setup();
    let t0 = Instant::now();
    let (outcomes, stats) = local::run(
        &s.params,
        &s.job,
        &s.ids,
        s.shares.clone(),
        2,
        &mut rand_core::OsRng,
    )
    .expect("run");
    let took = t0.elapsed();
    assert_eq!(outcomes[0].verdicts.passed, plaintext(&s.values));
    let n = s.job.inputs as f64;
    eprintln!(
        "limits: {} comparisons, {} nodes t={}: first run {:.2} s ({:.0} comparisons/s); {} steps; per comparison {:.1} products, {:.1} openings, {:.1} KiB from nodes, {:.1} KiB to nodes; committee check {:?}",
        s.job.inputs,
        NODES,
        T,
        took.as_secs_f64(),
        n / took.as_secs_f64(),
        stats.steps,
        stats.products as f64 / n,
        stats.openings as f64 / n,
        stats.bytes_in as f64 / n / 1024.0,
        stats.bytes_out as f64 / n / 1024.0,
        limits::check_committee(NODES, T.into()).is_ok(),
    );
    let mut g = c.benchmark_group("limits_50x20");
    g.sample_size(10).measurement_time(Duration::from_secs(30));
    g.bench_function("mpc_1000_comparisons_2_threads", |b| {
        b.iter(|| {
            local::run(
                &s.params,
                &s.job,
                &s.ids,
                s.shares.clone(),
                2,
                &mut rand_core::OsRng,
            )
            .expect("run")
        })
    });
    g.bench_function("plaintext_baseline", |b| b.iter(|| plaintext(&s.values)));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
