//! Runs of the whole limit-check MPC in process: n nodes and a king.

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

use super::{
    field::F,
    king::{self, King},
    node::{NodeMpc, Outcome},
    open::Opener,
    step::{KingStep, NodeStep},
    Job, Params, Stats, BITS,
};
use crate::{committee::Member, error::ProtocolError, identity::NodeIdentity, Committee};

struct Net {
    params: Params,
    ids: Vec<NodeIdentity>,
}

fn net(n: usize, t: u16) -> Net {
    let mut rng = ChaCha20Rng::seed_from_u64(n as u64 * 31 + u64::from(t));
    let ids: Vec<NodeIdentity> = (0..n).map(|_| NodeIdentity::generate(&mut rng)).collect();
    let members = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let p = id.public();
            Member {
                node: p.node,
                index: [1u16, 2, 4, 7, 9, 11, 12][i],
                seal_key: p.seal_key,
            }
        })
        .collect();
    let committee = Committee::new(members).expect("test setup");
    let ids = committee
        .members()
        .iter()
        .map(|m| {
            let i = ids
                .iter()
                .position(|id| id.node_id() == m.node)
                .expect("test setup");
            NodeIdentity::from_secret_bytes(&ids[i].to_secret_bytes())
        })
        .collect();
    Net {
        params: Params::from_committee(&committee, t, [9; 32]).expect("test setup"),
        ids,
    }
}

/// Degree-d Shamir shares of each value, per position.
fn share(params: &Params, values: &[F], rng: &mut ChaCha20Rng) -> Vec<Vec<F>> {
    let d = usize::from(params.threshold) - 1;
    let xs = params.xs();
    let mut out = vec![Vec::with_capacity(values.len()); xs.len()];
    for v in values {
        let coeffs: Vec<F> = std::iter::once(*v)
            .chain((0..d).map(|_| {
                let mut b = [0u8; 32];
                rng.fill_bytes(&mut b);
                F::from_random_bytes(b)
            }))
            .collect();
        for (i, x) in xs.iter().enumerate() {
            let y = coeffs.iter().rev().fold(F::ZERO, |acc, c| acc * *x + *c);
            out[i].push(y);
        }
    }
    out
}

#[derive(Default)]
struct Tamper {
    /// (step, position): add 1 to this node's first product of that step.
    product: Option<(u8, usize)>,
    /// (step, position): add 1 to this node's first opening share of that step.
    opening: Option<(u8, usize)>,
    /// (step, position): change an opening share without re-signing.
    unsigned: Option<(u8, usize)>,
    /// step: the king changes the first share it relays of position 1.
    king_relay: Option<u8>,
    /// The king announces another square (with a matching root) for bit 0.
    king_square: bool,
    /// The king gives position 0 the other (odd) root of square 0.
    king_odd_root: bool,
    /// This position reports (and signs) another set-key digest at step 1.
    key_digest: Option<usize>,
    /// step: the king adds 1 to its first product answer.
    king_product: Option<u8>,
    /// step: the king sends position 0 a different first product answer.
    king_split: Option<u8>,
}

fn run_with(
    net: &Net,
    job: &Job,
    values: &[F],
    tamper: &Tamper,
) -> Result<(Vec<Outcome>, Stats, Vec<F>), ProtocolError> {
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let shares = share(&net.params, values, &mut rng);
    let n = net.params.n();
    let mut king = King::new(net.params.clone(), job.clone())?;
    let mut nodes = Vec::new();
    let mut msgs: Vec<NodeStep> = Vec::new();
    for (i, (id, share)) in net.ids.iter().zip(shares).enumerate() {
        let (node, m) = NodeMpc::start(net.params.clone(), job.clone(), i, id, share, &mut rng)?;
        nodes.push(node);
        msgs.push(m);
    }
    let mut outcomes: Vec<Option<Outcome>> = vec![None; n];
    loop {
        let mut answers: Option<Vec<KingStep>> = None;
        for mut m in msgs.drain(..) {
            let pos = usize::from(m.from);
            if tamper.product == Some((m.step, pos)) {
                m.products[0] += F::ONE;
            }
            if tamper.opening == Some((m.step, pos)) {
                // A deviating node signs what it sends.
                m.openings[0] += F::ONE;
                let k = king::checked(job, m.step);
                let d = super::step::signed_digest(
                    &net.params.session,
                    m.step,
                    m.from,
                    &m.openings[..k],
                    m.transcript,
                    &m.key_digests,
                );
                m.signature = net.ids[pos].sign(&d).to_bytes().to_vec();
            }
            if m.step == super::node::steps::PRODUCTS && tamper.key_digest == Some(pos) {
                m.key_digests[0].1[0] ^= 1;
                let d = super::step::signed_digest(
                    &net.params.session,
                    m.step,
                    m.from,
                    &[],
                    None,
                    &m.key_digests,
                );
                m.signature = net.ids[pos].sign(&d).to_bytes().to_vec();
            }
            if tamper.unsigned == Some((m.step, pos)) {
                m.openings[0] += F::ONE;
            }
            answers = king.receive(m)?;
        }
        let mut answers = answers.expect("every node sent");
        let step = answers[0].step;
        if tamper.king_product == Some(step) {
            for a in answers.iter_mut() {
                a.products[0] += F::ONE;
            }
        }
        if tamper.king_relay == Some(step) {
            for a in answers.iter_mut() {
                a.signed[1].openings[0] += F::ONE;
            }
        }
        if tamper.king_square && step == super::node::steps::BIT_CHECK {
            for a in answers.iter_mut() {
                a.roots[0] = king::canonical_root(a.roots[0] + F::ONE);
                a.openings[0] = a.roots[0] * a.roots[0];
            }
        }
        if tamper.king_odd_root && step == super::node::steps::BIT_CHECK {
            answers[0].roots[0] = -answers[0].roots[0];
        }
        if tamper.king_split == Some(step) {
            answers[0].products[0] += F::ONE;
        }
        for (i, a) in answers.iter().enumerate() {
            match nodes[i].handle(&net.ids[i], a)? {
                Ok(m) => msgs.push(m),
                Err(o) => outcomes[i] = Some(o),
            }
        }
        if outcomes.iter().all(Option::is_some) {
            break;
        }
    }
    let outcomes: Vec<Outcome> = outcomes.into_iter().map(Option::unwrap).collect();
    let opener = Opener::new(&net.params.xs(), net.params.d());
    let bits = (0..job.inputs)
        .map(|k| {
            opener
                .open(&outcomes.iter().map(|o| o.bits[k]).collect::<Vec<_>>())
                .expect("test setup")
        })
        .collect();
    Ok((outcomes, king.stats(), bits))
}

fn run(net: &Net, job: &Job, values: &[i128]) -> (Vec<Outcome>, Stats, Vec<F>) {
    let v: Vec<F> = values.iter().map(|x| F::from_i128(*x)).collect();
    run_with(net, job, &v, &Tamper::default()).expect("test setup")
}

fn one_group(n: usize) -> Job {
    Job {
        inputs: n,
        verdicts: vec![(0..n as u32).collect()],
        sums: vec![(0..n as u32).collect()],
    }
}

#[test]
fn comparisons_agree_with_plaintext_on_edge_values() {
    let net = net(5, 3);
    let lim = 1i128 << 64;
    let values = vec![
        0,
        1,
        -1,
        i128::from(i64::MAX),
        i128::from(i64::MIN),
        i128::from(i64::MAX) + i128::from(i64::MAX),
        lim - 1,
        -lim,
        -lim + 1,
        12345,
        -98765,
        // net + collateral + limit exactly at the limit
        -500 + 200 + 300,
    ];
    let job = one_group(values.len());
    let (outcomes, _, bits) = run(&net, &job, &values);
    for (x, b) in values.iter().zip(&bits) {
        let want = if *x >= 0 { F::ONE } else { F::ZERO };
        assert_eq!(*b, want, "x = {x}");
    }
    let gross: i128 = values.iter().map(|x| x.abs()).sum();
    for o in &outcomes {
        assert_eq!(o.verdicts.passed, vec![false]);
        assert_eq!(o.verdicts.sums, vec![Some(gross as u128)]);
    }
}

#[test]
fn comparisons_agree_with_plaintext_on_random_values() {
    let net = net(5, 3);
    let mut rng = ChaCha20Rng::seed_from_u64(77);
    let values: Vec<i128> = (0..24)
        .map(|i| {
            let v = i128::from(rng.next_u64() as i64);
            if i % 3 == 0 {
                v >> (rng.next_u32() % 60)
            } else {
                v
            }
        })
        .collect();
    let (_, _, bits) = run(&net, &one_group(values.len()), &values);
    for (x, b) in values.iter().zip(&bits) {
        assert_eq!(*b == F::ONE, *x >= 0, "x = {x}");
        assert!(*b == F::ONE || *b == F::ZERO);
    }
}

#[test]
fn all_covered_verdict_reveals_one_bit_per_group() {
    let net = net(5, 3);
    let job = Job {
        inputs: 4,
        verdicts: vec![vec![0, 1], vec![2, 3]],
        sums: vec![],
    };
    let (o, _, _) = run(&net, &job, &[5, 0, 7, -1]);
    assert!(o.iter().all(|o| o.verdicts.passed == vec![true, false]));
    let (o, _, _) = run(&net, &job, &[5, 0, 7, 1]);
    assert!(o.iter().all(|o| o.verdicts.passed == vec![true, true]));
}

#[test]
fn out_of_range_inputs_never_pass() {
    let net = net(5, 3);
    let job = Job {
        inputs: 4,
        verdicts: vec![vec![0], vec![1], vec![2], vec![3]],
        sums: vec![],
    };
    let mut v: Vec<F> = vec![F::pow2(70), -F::pow2(70), F::pow2(200), F::from_u64(3)];
    v[2] += F::from_u64(5);
    let (o, _, bits) = run_with(&net, &job, &v, &Tamper::default()).expect("test setup");
    assert_eq!(o[0].verdicts.passed, vec![false, false, false, true]);
    for b in &bits[..3] {
        assert!(
            *b != F::ZERO && *b != F::ONE,
            "an out-of-range input gave a bit"
        );
    }
}

#[test]
fn three_node_committee_works_and_too_small_committees_are_refused() {
    let net3 = net(3, 2);
    let (_, _, bits) = run(&net3, &one_group(3), &[-3, 0, 4]);
    assert_eq!(bits, vec![F::ZERO, F::ONE, F::ONE]);
    let err = super::check_committee(5, 4)
        .expect_err("must fail")
        .to_string();
    assert!(err.contains("2(t-1) < n"), "{err}");
    assert!(super::check_committee(4, 3).is_err());
    assert!(super::check_committee(7, 4).is_ok());
}

#[test]
fn step_and_message_counts_match_the_documented_protocol() {
    let net = net(5, 3);
    let n_in = 6;
    let job = Job {
        inputs: n_in,
        verdicts: vec![(0..n_in as u32).collect()],
        sums: vec![],
    };
    let (_, stats, _) = run(&net, &job, &[1, 2, 3, -4, 5, 6]);
    let m = BITS as u64;
    assert_eq!(stats.steps, 18);
    // 8m − 3 products per comparison, 2 per verdict group.
    assert_eq!(stats.products, n_in as u64 * (8 * m - 3) + 2);
    assert_eq!(stats.openings, n_in as u64 * (m + 1));
    let per_step: usize = (0..18)
        .map(|s| {
            let (p, o) = king::expected(&job, s);
            p + o
        })
        .sum();
    assert_eq!(stats.scalars_in, 5 * per_step as u64);
}

#[test]
fn deviating_node_in_a_multiplication_is_detected() {
    let net = net(5, 3);
    let job = one_group(3);
    let values: Vec<F> = [4i128, -2, 9].iter().map(|x| F::from_i128(*x)).collect();
    // Step 1 carries input MACs and bit products, step 2 the bits' MACs (checked
    // at step 4, before any bit is used), 9 and 13 the tree, 14 the verdicts.
    for step in [1u8, 2, 9, 13, 14] {
        let t = Tamper {
            product: Some((step, 2)),
            ..Default::default()
        };
        match run_with(&net, &job, &values, &t) {
            Err(ProtocolError::LimitCheckAborted { step: at, .. }) => {
                assert!(at == 4 || at == 16, "step {step}: aborted at {at}")
            }
            other => panic!(
                "tampered product at step {step} was not detected: {:?}",
                other.map(|r| r.2)
            ),
        }
    }
    // The king tampering with a product, or telling one node something else.
    let t = Tamper {
        king_product: Some(10),
        ..Default::default()
    };
    assert!(matches!(
        run_with(&net, &job, &values, &t),
        Err(ProtocolError::LimitCheckAborted { step: 16, .. })
    ));
    let t = Tamper {
        king_product: Some(2),
        ..Default::default()
    };
    assert!(matches!(
        run_with(&net, &job, &values, &t),
        Err(ProtocolError::LimitCheckAborted { step: 4, .. })
    ));
    let t = Tamper {
        king_split: Some(11),
        ..Default::default()
    };
    let err = run_with(&net, &job, &values, &t).expect_err("must fail");
    assert!(
        matches!(err, ProtocolError::LimitCheckAborted { step: 16, .. }),
        "{err}"
    );
    // A share changed after signing is refused naming its sender.
    let t = Tamper {
        unsigned: Some((15, 1)),
        ..Default::default()
    };
    match run_with(&net, &job, &values, &t) {
        Err(ProtocolError::LimitCheckAborted {
            culprits, step: 15, ..
        }) => {
            assert_eq!(culprits, vec![net.params.nodes[1]])
        }
        other => panic!("unsigned change not caught: {:?}", other.map(|r| r.2)),
    }
}

#[test]
fn deviating_opening_share_names_the_node_where_the_code_allows() {
    // n = 2d + 1: detected, nobody named (two colluders could frame an honest node).
    let net5 = net(5, 3);
    let v: Vec<F> = [4i128, -2].iter().map(|x| F::from_i128(*x)).collect();
    let t = Tamper {
        opening: Some((7, 3)),
        ..Default::default()
    };
    match run_with(&net5, &one_group(2), &v, &t) {
        Err(ProtocolError::LimitCheckAborted {
            culprits, step: 7, ..
        }) => assert!(culprits.is_empty()),
        other => panic!("bad opening share not caught: {:?}", other.map(|r| r.2)),
    }
    let net = net(6, 3);
    let job = one_group(2);
    let values: Vec<F> = [4i128, -2].iter().map(|x| F::from_i128(*x)).collect();
    for step in [4u8, 7, 15, 17] {
        let t = Tamper {
            opening: Some((step, 3)),
            ..Default::default()
        };
        match run_with(&net, &job, &values, &t) {
            Err(ProtocolError::LimitCheckAborted { culprits, .. }) => {
                assert_eq!(culprits, vec![net.params.nodes[3]], "step {step}")
            }
            other => panic!(
                "bad opening share at step {step} not caught: {:?}",
                other.map(|r| r.2)
            ),
        }
    }
}

#[test]
fn roots_of_a_large_batch_square_back_and_a_non_square_is_refused() {
    let mut rng = ChaCha20Rng::seed_from_u64(8);
    let qs: Vec<F> = (0..5000)
        .map(|_| {
            let mut b = [0u8; 32];
            rng.fill_bytes(&mut b);
            let x = F::from_random_bytes(b);
            x * x
        })
        .collect();
    let r = king::roots(&qs).expect("all squares");
    assert!(r.iter().zip(&qs).all(|(s, q)| *s * *s == *q));
    let mut bad = qs.clone();
    let non_square = (2..100u64)
        .map(F::from_u64)
        .find(|x| x.sqrt().is_none())
        .expect("a non-square");
    bad[4321] = non_square;
    assert!(king::roots(&bad).is_none());
    bad[4321] = F::ZERO;
    assert!(king::roots(&bad).is_none());
}

#[test]
fn a_king_cannot_invent_relayed_shares_or_squares() {
    let net = net(5, 3);
    let job = one_group(2);
    let values: Vec<F> = [4i128, -2].iter().map(|x| F::from_i128(*x)).collect();
    // Another node's signed share, changed in the relay: refused by every node.
    for step in [3u8, 16, 17] {
        let t = Tamper {
            king_relay: Some(step),
            ..Default::default()
        };
        match run_with(&net, &job, &values, &t) {
            Err(ProtocolError::LimitCheckAborted {
                step: at,
                reason,
                culprits,
            }) => {
                assert_eq!(at, step);
                assert!(
                    reason.contains("did not sign") && culprits.is_empty(),
                    "{reason}"
                );
            }
            other => panic!(
                "forged relay at step {step} accepted: {:?}",
                other.map(|r| r.2)
            ),
        }
    }
    // Another square with a matching root: caught at the square check, before any
    // masked input is opened.
    let t = Tamper {
        king_square: true,
        ..Default::default()
    };
    match run_with(&net, &job, &values, &t) {
        Err(ProtocolError::LimitCheckAborted { step: 6, .. }) => {}
        other => panic!("forged square accepted: {:?}", other.map(|r| r.2)),
    }
}

#[test]
fn a_king_cannot_split_root_signs_and_set_keys_must_agree() {
    let net = net(5, 3);
    let job = one_group(2);
    let values: Vec<F> = [4i128, -2].iter().map(|x| F::from_i128(*x)).collect();
    // The other root to one node would turn its shares of b into shares of 1 − b
    // and let c reveal the mask: refused at once, before c is opened.
    let t = Tamper {
        king_odd_root: true,
        ..Default::default()
    };
    match run_with(&net, &job, &values, &t) {
        Err(ProtocolError::LimitCheckAborted {
            step: 4, reason, ..
        }) => {
            assert!(reason.contains("canonical"), "{reason}")
        }
        other => panic!("odd root accepted: {:?}", other.map(|r| r.2)),
    }
    // A member holding (or claiming) another set key: aborted at step 1, nobody named.
    let t = Tamper {
        key_digest: Some(2),
        ..Default::default()
    };
    match run_with(&net, &job, &values, &t) {
        Err(ProtocolError::LimitCheckAborted {
            step: 1, culprits, ..
        }) => assert!(culprits.is_empty()),
        other => panic!("set-key mismatch accepted: {:?}", other.map(|r| r.2)),
    }
}
