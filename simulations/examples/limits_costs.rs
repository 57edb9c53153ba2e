//! Measures the limit-check MPC's CPU cost per step on this host, for the
//! simulator's `[netting.costs]` limit figures:
//! `cargo run --release -p quorate-sim --example limits_costs -- [comparisons]`.
//!
//! Runs every node and the king of one job (5 nodes, t = 3, one verdict group per
//! 20 inputs) in one thread, timing each node's `NodeMpc::start`/`handle` and the
//! king's `receive` per step, and prints per step the products and openings a node
//! sends (`king::expected`) next to the median node time and the king's time, then
//! both per comparison: the `[netting.limits.costs]` table.

use std::time::Instant;

use quorate_protocol::{
    netting::limits::{field::F, king, local, node::NodeMpc, Job, Params},
    Committee, Member, NodeIdentity,
};
use rand_chacha::{
    rand_core::{RngCore, SeedableRng},
    ChaCha20Rng,
};

fn main() {
    let inputs: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let mut ids: Vec<NodeIdentity> = (0..5).map(|_| NodeIdentity::generate(&mut rng)).collect();
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
    let params = Params::from_committee(&committee, 3, [7; 32]).expect("params");
    let job = Job {
        inputs,
        verdicts: (0..inputs.div_ceil(20))
            .map(|g| ((g * 20) as u32..((g + 1) * 20).min(inputs) as u32).collect())
            .collect(),
        sums: Vec::new(),
    };
    let values: Vec<F> = (0..inputs)
        .map(|_| F::from_i128(i128::from(rng.next_u64() as i64) >> 8))
        .collect();
    let shares = local::share(&params, &values, &mut rng);
    let mut king = king::King::new(params.clone(), job.clone()).expect("king");
    let mut nodes = Vec::new();
    let mut msgs = Vec::new();
    let mut node_us = vec![Vec::new()];
    for (i, (id, s)) in ids.iter().zip(shares).enumerate() {
        let t0 = Instant::now();
        let (n, m) =
            NodeMpc::start(params.clone(), job.clone(), i, id, s, &mut rng).expect("start");
        node_us[0].push(t0.elapsed().as_secs_f64() * 1e6);
        nodes.push(n);
        msgs.push(m);
    }
    let mut king_us = Vec::new();
    loop {
        let t0 = Instant::now();
        let mut answers = None;
        for m in msgs.drain(..) {
            answers = king.receive(m).expect("king");
        }
        king_us.push(t0.elapsed().as_secs_f64() * 1e6);
        let answers = answers.expect("answers");
        let mut times = Vec::new();
        let mut done = false;
        for ((n, a), id) in nodes.iter_mut().zip(&answers).zip(&ids) {
            let t0 = Instant::now();
            let r = n.handle(id, a).expect("node");
            times.push(t0.elapsed().as_secs_f64() * 1e6);
            match r {
                Ok(m) => msgs.push(m),
                Err(_) => done = true,
            }
        }
        node_us.push(times);
        if done {
            break;
        }
    }
    println!("{inputs} comparisons, 5 nodes t=3; step: products openings | node µs (median) | king µs (answering that step)");
    let per = |v: f64| (v / inputs as f64 * 1000.0).round() / 1000.0;
    let mut node_per = Vec::new();
    let mut king_per = Vec::new();
    for (s, times) in node_us.iter_mut().enumerate() {
        times.sort_by(f64::total_cmp);
        let med = times[times.len() / 2];
        let (p, o) = king::expected(&job, s as u8);
        let k = king_us.get(s).copied();
        println!(
            "{s:>2}: {p:>8} {o:>8} | {med:>10.0} | {:>10.0}",
            k.unwrap_or(0.0)
        );
        node_per.push(if s == 0 { 0.0 } else { per(med) });
        king_per.extend(k.map(per));
    }
    println!(
        "[netting.limits.costs] for this host:\nnode_setup_us = {:.0}\nnode_us_per_input = {node_per:?}\nking_us_per_input = {king_per:?}\n({} steps)",
        node_us[0][node_us[0].len() / 2],
        king.stats().steps
    );
}
