//! Netting end to end in memory: dealing, node checks, local netting, openings,
//! results and settlement against the plaintext reference, plus the faults.

use curve25519_dalek::{RistrettoPoint, Scalar};
use ed25519_dalek::SigningKey;
use proptest::prelude::*;
use rand_chacha::{rand_core::SeedableRng, ChaCha20Rng};

use super::{
    bundle::{box_digest, BundleHeader},
    input::{PartyInput, Position},
    open::{NodeOutputs, PartyOutputs},
    reference,
    result::{open_result, Published},
    round::{Bounds, Instrument, InstrumentKind, Party, RoundId, RoundSpec},
    session::{settle, Admitted, NodeRound},
    share::{self, deal},
    verify::accept,
    *,
};
use crate::{committee::Member, error::ProtocolError, ids::KeyId, seal, Committee, NodeIdentity};

pub(crate) struct Fixture {
    pub spec: RoundSpec,
    pub party_keys: Vec<SigningKey>,
    pub party_seal: Vec<x25519_dalek::StaticSecret>,
    pub nodes: Vec<NodeIdentity>,
}

pub(crate) fn fixture(
    rng: &mut ChaCha20Rng,
    parties: usize,
    instruments: &[(&str, &str, i64, i64, i64)],
    n: u16,
    t: u16,
) -> Fixture {
    let nodes: Vec<NodeIdentity> = (0..n).map(|_| NodeIdentity::generate(rng)).collect();
    let committee = Committee::new(
        nodes
            .iter()
            .enumerate()
            .map(|(i, id)| Member {
                node: id.node_id(),
                index: i as u16 + 1,
                seal_key: id.public().seal_key,
            })
            .collect(),
    )
    .expect("committee");
    let party_keys: Vec<SigningKey> = (0..parties).map(|_| SigningKey::generate(rng)).collect();
    let party_seal: Vec<x25519_dalek::StaticSecret> = (0..parties)
        .map(|_| x25519_dalek::StaticSecret::random_from_rng(&mut *rng))
        .collect();
    let spec = RoundSpec {
        id: RoundId([7; 16]),
        parties: (0..parties)
            .map(|p| Party {
                name: format!("desk-{p}"),
                sign_key: party_keys[p].verifying_key().to_bytes(),
                seal_key: x25519_dalek::PublicKey::from(&party_seal[p]).to_bytes(),
            })
            .collect(),
        instruments: instruments
            .iter()
            .map(|(name, asset, mult, mv, prem)| Instrument {
                name: (*name).into(),
                kind: if *prem != 0 {
                    InstrumentKind::Option
                } else {
                    InstrumentKind::Future
                },
                asset: (*asset).into(),
                multiplier: *mult,
                price_move: *mv,
                premium: *prem,
            })
            .collect(),
        cutoff: 1_000,
        key: KeyId([1; 16]),
        committee,
        threshold: t,
        bounds: Bounds::default(),
        limits: None,
    };
    spec.validate().expect("valid spec");
    Fixture {
        spec,
        party_keys,
        party_seal,
        nodes,
    }
}

const INSTRUMENTS: &[(&str, &str, i64, i64, i64)] = &[
    ("BTC-FUT", "USD", 10, -37, 0),
    ("ETH-CALL", "USD", 1, 12, 5),
    ("EUR-SWAP", "EUR", 100, 3, 0),
];

/// Mirrored books: every position of p against q is booked by q as its negation.
fn mirrored(
    spec: &RoundSpec,
    trades: &[(usize, usize, usize, i64, i64)],
) -> Vec<Option<PartyInput>> {
    let mut inputs: Vec<PartyInput> = (0..spec.parties.len())
        .map(|_| PartyInput::default())
        .collect();
    for &(p, q, i, qty, cash) in trades {
        for (me, other, s) in [(p, q, 1), (q, p, -1)] {
            inputs[me].positions.push(Position {
                counterparty: spec.parties[other].name.clone(),
                instrument: spec.instruments[i].name.clone(),
                quantity: s * qty,
                cash: s * cash,
            });
        }
    }
    inputs.into_iter().map(Some).collect()
}

struct Outcome {
    results: Vec<Option<result::PartyResult>>,
    settlement: Result<SettlementBatch, ProtocolError>,
    outputs: Vec<NodeOutputs>,
    bundles: Vec<Option<InputBundle>>,
}

fn run(fx: &Fixture, inputs: &[Option<PartyInput>], rng: &mut ChaCha20Rng) -> Outcome {
    let spec = &fx.spec;
    let bundles: Vec<Option<InputBundle>> = inputs
        .iter()
        .enumerate()
        .map(|(p, i)| {
            i.as_ref()
                .map(|i| deal(spec, p, &fx.party_keys[p], i, 10, rng).expect("deal"))
        })
        .collect();
    let mut rounds: Vec<NodeRound> = fx
        .nodes
        .iter()
        .map(|_| NodeRound::new(spec.clone()).expect("round"))
        .collect();
    for (j, (node, round)) in fx.nodes.iter().zip(&mut rounds).enumerate() {
        for b in bundles.iter().flatten() {
            let got = round
                .accept_bundle(20, node, &b.header, &b.boxes[j])
                .expect("accept");
            assert!(matches!(got, Admitted::New(_)));
        }
    }
    let expected: Vec<Option<[u8; 32]>> = bundles
        .iter()
        .map(|b| b.as_ref().map(|b| b.header.digest()))
        .collect();
    let outputs: Vec<NodeOutputs> = fx
        .nodes
        .iter()
        .zip(&mut rounds)
        .map(|(node, round)| round.close(node, &expected).expect("close"))
        .collect();
    let participants: Vec<bool> = bundles.iter().map(Option::is_some).collect();
    let points: Vec<Option<Vec<RistrettoPoint>>> = bundles
        .iter()
        .map(|b| {
            b.as_ref()
                .map(|b| verify::commitments(spec, &b.header).expect("points"))
        })
        .collect();
    let commitments: Vec<Option<&[RistrettoPoint]>> = points.iter().map(|p| p.as_deref()).collect();
    let headers: Vec<Option<&BundleHeader>> = bundles
        .iter()
        .map(|b| b.as_ref().map(|b| &b.header))
        .collect();
    let net_pts: Vec<Option<Vec<RistrettoPoint>>> = bundles
        .iter()
        .map(|b| {
            b.as_ref()
                .map(|b| verify::net_points(spec, &b.header).expect("points"))
        })
        .collect();
    let nets: Vec<Option<&[RistrettoPoint]>> = net_pts.iter().map(|p| p.as_deref()).collect();
    let inputs_digest = outputs[0].public.inputs_digest;
    let results = (0..spec.parties.len())
        .map(|p| {
            participants[p].then(|| {
                let mine: Vec<PartyOutputs> = outputs
                    .iter()
                    .flat_map(|o| o.parties.iter().filter(|x| x.party == p as u32).cloned())
                    .collect();
                open_result(
                    spec,
                    &Published {
                        participants: &participants,
                        inputs_digest,
                        headers: &headers,
                        commitments: &commitments,
                    },
                    p,
                    &fx.party_seal[p],
                    &mine,
                    rng,
                )
                .expect("result")
            })
        })
        .collect();
    let views: Vec<_> = outputs.iter().map(|o| o.public.clone()).collect();
    let settlement = rounds[0].settlement(&views, rng).map(|(b, c)| {
        assert!(c.is_empty(), "honest nodes blamed: {c:?}");
        b
    });
    let alt = settle(spec, &participants, inputs_digest, &nets, &views, rng).map(|(b, _)| b);
    assert_eq!(
        settlement, alt,
        "a node and an outside verifier build the same batch"
    );
    Outcome {
        results,
        settlement,
        outputs,
        bundles,
    }
}

fn check_against_reference(fx: &Fixture, inputs: &[Option<PartyInput>], out: &Outcome) {
    let plain = reference::compute(&fx.spec, inputs).expect("reference");
    for (p, (got, want)) in out.results.iter().zip(&plain).enumerate() {
        let (Some(got), Some(want)) = (got, want) else {
            assert_eq!(got.is_some(), want.is_some());
            continue;
        };
        assert!(got.culprits.is_empty());
        for b in &got.bilateral {
            assert_eq!(
                i128::from(b.net),
                want.bilateral[&(b.counterparty.clone(), b.asset.clone())],
                "party {p} bilateral {b:?}"
            );
        }
        assert_eq!(got.bilateral.len(), want.bilateral.len());
        for (a, v) in &got.multilateral {
            assert_eq!(i128::from(*v), want.multilateral[a], "party {p} asset {a}");
        }
        let mism: Vec<_> = got
            .mismatches
            .iter()
            .map(|m| {
                (
                    (m.counterparty.clone(), m.instrument.clone()),
                    (
                        i128::from(m.quantity_difference),
                        i128::from(m.cash_difference),
                    ),
                )
            })
            .collect();
        assert_eq!(
            mism,
            want.mismatches.clone().into_iter().collect::<Vec<_>>(),
            "party {p}"
        );
    }
}

#[test]
fn netting_matches_plaintext_and_settles_mirrored_books() {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let fx = fixture(&mut rng, 4, INSTRUMENTS, 5, 3);
    let inputs = mirrored(
        &fx.spec,
        &[
            (0, 1, 0, 5, 0),
            (0, 2, 1, -3, 250),
            (1, 3, 2, 7, -12),
            (2, 3, 0, -1, 0),
        ],
    );
    let out = run(&fx, &inputs, &mut rng);
    check_against_reference(&fx, &inputs, &out);
    let batch = out.settlement.expect("settles");
    let plain = reference::compute(&fx.spec, &inputs).expect("reference");
    for t in &batch.transfers {
        let p = fx.spec.party_index(&t.party).expect("party");
        assert_eq!(
            i128::from(t.amount),
            plain[p].as_ref().expect("present").multilateral[&t.asset]
        );
    }
    assert!(batch.transfers.iter().any(|t| t.amount != 0));
    assert_eq!(batch.key, fx.spec.key);
}

#[test]
fn mismatched_books_fail_conservation_and_reach_only_the_two_parties() {
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let fx = fixture(&mut rng, 3, INSTRUMENTS, 5, 3);
    let mut inputs = mirrored(&fx.spec, &[(0, 1, 0, 5, 0), (1, 2, 2, 2, 0)]);
    // desk-1 books 4 instead of -5 against desk-0 on BTC-FUT.
    inputs[1].as_mut().expect("input").positions[0].quantity = 4;
    let out = run(&fx, &inputs, &mut rng);
    check_against_reference(&fx, &inputs, &out);
    assert!(
        matches!(out.settlement, Err(ProtocolError::ConservationFailed { ref asset, .. }) if asset == "USD")
    );
    let r = |p: usize| out.results[p].as_ref().expect("result");
    assert_eq!(r(0).mismatches.len(), 1);
    assert_eq!(r(0).mismatches[0].instrument, "BTC-FUT");
    assert_eq!(r(0).mismatches[0].quantity_difference, 9);
    assert_eq!(r(1).mismatches.len(), 1);
    assert!(
        r(2).mismatches.is_empty(),
        "a third party learns nothing of it"
    );
}

#[test]
fn a_party_without_a_bundle_is_left_out_and_the_round_goes_on() {
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let fx = fixture(&mut rng, 4, INSTRUMENTS, 4, 3);
    // desk-3 traded nothing: the others settle without it.
    let mut inputs = mirrored(&fx.spec, &[(0, 1, 0, 5, 10), (1, 2, 2, -6, 0)]);
    inputs[3] = None;
    let out = run(&fx, &inputs, &mut rng);
    check_against_reference(&fx, &inputs, &out);
    assert!(out.results[3].is_none());
    let batch = out.settlement.expect("remaining books balance");
    assert!(batch.transfers.iter().all(|t| t.party != "desk-3"));
    // desk-3 traded but stayed away: everyone else still gets a verified result,
    // and the round is not settled (its side of the USD trades is missing).
    let mut inputs = mirrored(&fx.spec, &[(0, 1, 0, 5, 10), (0, 3, 1, 2, 0)]);
    inputs[3] = None;
    let out = run(&fx, &inputs, &mut rng);
    check_against_reference(&fx, &inputs, &out);
    assert!(out.results[..3].iter().all(Option::is_some));
    assert!(
        matches!(out.settlement, Err(ProtocolError::ConservationFailed { ref asset, .. }) if asset == "USD")
    );
}

fn tamper_share_box(fx: &Fixture, bundle: &mut InputBundle, node: usize, rng: &mut ChaCha20Rng) {
    let m = fx.spec.committee.members()[node];
    let aad = bundle::box_aad(&fx.spec, bundle.header.party, &m.node);
    let mut plain = fx.nodes[node]
        .open_sealed(&aad, &bundle.boxes[node])
        .expect("opens")
        .to_vec();
    let mut s = [0u8; 32];
    s.copy_from_slice(&plain[..32]);
    let bumped = Scalar::from_canonical_bytes(s).expect("canonical") + Scalar::ONE;
    plain[..32].copy_from_slice(bumped.as_bytes());
    bundle.boxes[node] = seal::seal(rng, &m.seal_key, &aad, &plain).expect("seal");
    bundle.header.box_digests[node] = box_digest(&m.node, &bundle.boxes[node]);
    // The party re-signs: a consistent-looking but dishonest bundle.
    let p = bundle.header.party as usize;
    use ed25519_dalek::Signer as _;
    bundle.header.signature = fx.party_keys[p]
        .sign(&bundle.header.digest())
        .to_bytes()
        .to_vec();
}

#[test]
fn node_names_the_party_that_sent_inconsistent_shares() {
    let mut rng = ChaCha20Rng::seed_from_u64(4);
    let fx = fixture(&mut rng, 3, INSTRUMENTS, 5, 3);
    let inputs = mirrored(&fx.spec, &[(0, 1, 0, 5, 0)]);
    let corrupt = share::Corrupt {
        share_of_node: Some(2),
        commitment: None,
        ..Default::default()
    };
    let b = share::deal_with(
        &fx.spec,
        1,
        &fx.party_keys[1],
        inputs[1].as_ref().expect("input"),
        5,
        &mut rng,
        corrupt,
    )
    .expect("deal");
    let (h, bx) = b.for_node(2).expect("box");
    let err = accept(&fx.spec, &fx.nodes[2], &h, &bx).expect_err("refused");
    assert!(
        matches!(err, ProtocolError::BadBundle { ref party, .. } if party == "desk-1"),
        "{err}"
    );
    // The other nodes' shares are consistent and accepted.
    for j in [0, 1, 3, 4] {
        let (h, bx) = b.for_node(j).expect("box");
        accept(&fx.spec, &fx.nodes[j], &h, &bx).expect("accepted");
    }
    // A box re-sealed after signing no longer matches the signed digest.
    let mut b2 = b.clone();
    tamper_share_box(&fx, &mut b2, 0, &mut rng);
    let (h, bx) = b2.for_node(0).expect("box");
    assert!(matches!(
        accept(&fx.spec, &fx.nodes[0], &h, &bx),
        Err(ProtocolError::BadBundle { .. })
    ));
}

#[test]
fn a_counterparty_names_a_party_whose_commitments_contradict_what_nodes_checked() {
    let mut rng = ChaCha20Rng::seed_from_u64(12);
    let fx = fixture(&mut rng, 3, INSTRUMENTS, 5, 3);
    let inputs = mirrored(&fx.spec, &[(0, 1, 0, 5, 0), (1, 2, 1, 3, 0)]);
    // desk-1 publishes a wrong C for its first value about desk-0 (BTC-FUT qty):
    // nodes, which check M and D only, accept; desk-0 must not blame them.
    let e = fx.spec.value_index(1, 0, 0, 0).expect("index");
    let corrupt = share::Corrupt {
        share_of_node: None,
        commitment: Some(e),
        ..Default::default()
    };
    let bad = share::deal_with(
        &fx.spec,
        1,
        &fx.party_keys[1],
        inputs[1].as_ref().expect("input"),
        5,
        &mut rng,
        corrupt,
    )
    .expect("deal");
    let mut bundles: Vec<InputBundle> = (0..3)
        .map(|p| {
            deal(
                &fx.spec,
                p,
                &fx.party_keys[p],
                inputs[p].as_ref().expect("input"),
                5,
                &mut rng,
            )
            .expect("deal")
        })
        .collect();
    bundles[1] = bad;
    let mut outs = Vec::new();
    for (j, node) in fx.nodes.iter().enumerate() {
        let mut round = NodeRound::new(fx.spec.clone()).expect("round");
        for b in &bundles {
            let (h, bx) = b.for_node(j).expect("box");
            round
                .accept_bundle(10, node, &h, &bx)
                .expect("nodes accept");
        }
        let expected: Vec<_> = bundles.iter().map(|b| Some(b.header.digest())).collect();
        outs.push(round.close(node, &expected).expect("close"));
    }
    let pts: Vec<Option<Vec<RistrettoPoint>>> = bundles
        .iter()
        .map(|b| Some(verify::commitments(&fx.spec, &b.header).expect("points")))
        .collect();
    let commitments: Vec<Option<&[RistrettoPoint]>> = pts.iter().map(|p| p.as_deref()).collect();
    let headers: Vec<Option<&BundleHeader>> = bundles.iter().map(|b| Some(&b.header)).collect();
    let participants = vec![true; 3];
    let published = Published {
        participants: &participants,
        inputs_digest: outs[0].public.inputs_digest,
        headers: &headers,
        commitments: &commitments,
    };
    let mine: Vec<PartyOutputs> = outs.iter().map(|o| o.parties[0].clone()).collect();
    let r = open_result(&fx.spec, &published, 0, &fx.party_seal[0], &mine, &mut rng)
        .expect("own nets still open");
    assert!(
        r.culprits.is_empty(),
        "no honest node is blamed: {:?}",
        r.culprits
    );
    assert_eq!(r.refused_counterparties.len(), 1);
    assert_eq!(r.refused_counterparties[0].counterparty, "desk-1");
    assert!(r.mismatches.iter().all(|m| m.counterparty != "desk-1"));
    let plain = reference::compute(&fx.spec, &inputs).expect("reference");
    for (a, v) in &r.multilateral {
        assert_eq!(
            i128::from(*v),
            plain[0].as_ref().expect("p0").multilateral[a]
        );
    }
    // desk-2, whose block from desk-1 is intact, still opens its whole result.
    let mine: Vec<PartyOutputs> = outs.iter().map(|o| o.parties[2].clone()).collect();
    let r =
        open_result(&fx.spec, &published, 2, &fx.party_seal[2], &mine, &mut rng).expect("opens");
    assert!(r.culprits.is_empty() && r.refused_counterparties.is_empty());
}

fn close_all(fx: &Fixture, bundles: &[InputBundle]) -> Vec<NodeOutputs> {
    fx.nodes
        .iter()
        .enumerate()
        .map(|(j, node)| {
            let mut round = NodeRound::new(fx.spec.clone()).expect("round");
            for b in bundles {
                let (h, bx) = b.for_node(j).expect("box");
                round.accept_bundle(10, node, &h, &bx).expect("accept");
            }
            let expected: Vec<_> = bundles.iter().map(|b| Some(b.header.digest())).collect();
            round.close(node, &expected).expect("close")
        })
        .collect()
}

#[test]
fn an_out_of_bounds_counterparty_value_is_a_mismatch_and_own_nets_still_open() {
    let mut rng = ChaCha20Rng::seed_from_u64(13);
    let fx = fixture(&mut rng, 3, INSTRUMENTS, 5, 3);
    let inputs = mirrored(&fx.spec, &[(0, 1, 0, 5, 0)]);
    let e = fx.spec.value_index(1, 0, 0, 0).expect("index");
    let corrupt = share::Corrupt {
        huge_value: Some(e),
        ..Default::default()
    };
    let mut bundles: Vec<InputBundle> = (0..3)
        .map(|p| {
            deal(
                &fx.spec,
                p,
                &fx.party_keys[p],
                inputs[p].as_ref().expect("input"),
                5,
                &mut rng,
            )
            .expect("deal")
        })
        .collect();
    bundles[1] = share::deal_with(
        &fx.spec,
        1,
        &fx.party_keys[1],
        inputs[1].as_ref().expect("input"),
        5,
        &mut rng,
        corrupt,
    )
    .expect("deal");
    let outs = close_all(&fx, &bundles);
    let pts: Vec<Option<Vec<RistrettoPoint>>> = bundles
        .iter()
        .map(|b| Some(verify::commitments(&fx.spec, &b.header).expect("points")))
        .collect();
    let commitments: Vec<Option<&[RistrettoPoint]>> = pts.iter().map(|p| p.as_deref()).collect();
    let headers: Vec<Option<&BundleHeader>> = bundles.iter().map(|b| Some(&b.header)).collect();
    let participants = vec![true; 3];
    let published = Published {
        participants: &participants,
        inputs_digest: outs[0].public.inputs_digest,
        headers: &headers,
        commitments: &commitments,
    };
    let mine: Vec<PartyOutputs> = outs.iter().map(|o| o.parties[0].clone()).collect();
    let r =
        open_result(&fx.spec, &published, 0, &fx.party_seal[0], &mine, &mut rng).expect("opens");
    let m = r
        .mismatches
        .iter()
        .find(|m| m.counterparty == "desk-1")
        .expect("flagged");
    assert!(m.out_of_range && m.instrument == "BTC-FUT");
    assert_eq!(
        r.multilateral.iter().find(|(a, _)| a == "USD").map(|x| x.1),
        Some(5 * 10 * -37)
    );
    // desk-1's own multilateral net is outside i64: the settlement refuses, naming the asset.
    let views: Vec<_> = outs.iter().map(|o| o.public.clone()).collect();
    let nets_pts: Vec<Option<Vec<RistrettoPoint>>> = bundles
        .iter()
        .map(|b| Some(verify::net_points(&fx.spec, &b.header).expect("points")))
        .collect();
    let nets: Vec<Option<&[RistrettoPoint]>> = nets_pts.iter().map(|p| p.as_deref()).collect();
    let err = settle(
        &fx.spec,
        &participants,
        outs[0].public.inputs_digest,
        &nets,
        &views,
        &mut rng,
    )
    .expect_err("overflow");
    assert!(
        matches!(err, ProtocolError::NettingOverflow { ref asset } if asset == "USD"),
        "{err}"
    );
}

#[test]
fn outputs_are_deterministic_and_a_settlement_needs_one_set_of_inputs_from_a_majority() {
    let mut rng = ChaCha20Rng::seed_from_u64(14);
    let fx = fixture(&mut rng, 3, INSTRUMENTS, 5, 3);
    let inputs = mirrored(&fx.spec, &[(0, 1, 0, 5, 0), (1, 2, 2, 1, 0)]);
    let bundles: Vec<InputBundle> = (0..3)
        .map(|p| {
            deal(
                &fx.spec,
                p,
                &fx.party_keys[p],
                inputs[p].as_ref().expect("input"),
                5,
                &mut rng,
            )
            .expect("deal")
        })
        .collect();
    // A node that closes twice (a restart) sends byte-identical outputs.
    let a = close_all(&fx, &bundles);
    let b = close_all(&fx, &bundles);
    assert_eq!(a, b);
    let participants = vec![true; 3];
    let nets_pts: Vec<Option<Vec<RistrettoPoint>>> = bundles
        .iter()
        .map(|b| Some(verify::net_points(&fx.spec, &b.header).expect("points")))
        .collect();
    let nets: Vec<Option<&[RistrettoPoint]>> = nets_pts.iter().map(|p| p.as_deref()).collect();
    let inputs_digest = a[0].public.inputs_digest;
    let mut views: Vec<_> = a.iter().map(|o| o.public.clone()).collect();
    // Only two nodes' views: below the quorum of three.
    let err = settle(
        &fx.spec,
        &participants,
        inputs_digest,
        &nets,
        &views[..2],
        &mut rng,
    )
    .expect_err("quorum");
    assert!(matches!(err, ProtocolError::OpeningFailed { .. }), "{err}");
    // A node that validly signed outputs of other inputs (closed without desk-2).
    let mut round = NodeRound::new(fx.spec.clone()).expect("round");
    for bd in &bundles[..2] {
        let (h, bx) = bd.for_node(4).expect("box");
        round
            .accept_bundle(10, &fx.nodes[4], &h, &bx)
            .expect("accept");
    }
    let other = round
        .close(
            &fx.nodes[4],
            &[
                Some(bundles[0].header.digest()),
                Some(bundles[1].header.digest()),
                None,
            ],
        )
        .expect("close");
    views[4] = other.public;
    let err = settle(
        &fx.spec,
        &participants,
        inputs_digest,
        &nets,
        &views,
        &mut rng,
    )
    .expect_err("differs");
    assert!(
        matches!(err, ProtocolError::InputsDiffer { node } if node == fx.nodes[4].node_id()),
        "{err}"
    );
    // Garbage claiming to be a node is ignored, not blamed.
    let mut forged = a[0].public.clone();
    forged.signature[0] ^= 1;
    views[4] = forged;
    let (_, culprits) = settle(
        &fx.spec,
        &participants,
        inputs_digest,
        &nets,
        &views,
        &mut rng,
    )
    .expect("settles");
    assert!(culprits.is_empty());
}

#[test]
fn round_definitions_with_low_order_seal_keys_or_i128_overflow_are_refused() {
    let mut rng = ChaCha20Rng::seed_from_u64(15);
    let mut fx = fixture(&mut rng, 3, INSTRUMENTS, 5, 3);
    let good = fx.spec.clone();
    fx.spec.parties[1].seal_key = [0u8; 32];
    assert!(fx
        .spec
        .validate()
        .expect_err("low-order seal key")
        .to_string()
        .contains("seal_key"));
    let mut spec = good;
    spec.bounds.max_abs_quantity = i64::MAX / 2;
    for i in &mut spec.instruments {
        i.asset = "USD".into();
        i.multiplier = i64::MAX;
        i.price_move = 1;
        i.premium = 0;
        i.kind = InstrumentKind::Future;
    }
    assert!(matches!(
        spec.validate(),
        Err(ProtocolError::NettingOverflow { .. })
    ));
}

#[test]
fn bundles_with_bad_signatures_late_or_for_another_round_are_refused() {
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let fx = fixture(&mut rng, 3, INSTRUMENTS, 5, 3);
    let input = mirrored(&fx.spec, &[(0, 1, 0, 5, 0)])[0]
        .clone()
        .expect("input");
    let b = deal(&fx.spec, 0, &fx.party_keys[0], &input, 5, &mut rng).expect("deal");
    let mut forged = b.header.clone();
    forged.signature[0] ^= 1;
    assert!(matches!(
        accept(&fx.spec, &fx.nodes[0], &forged, &b.boxes[0]),
        Err(ProtocolError::BadBundle { .. })
    ));
    // Signed by another party's key.
    assert!(deal(&fx.spec, 0, &fx.party_keys[1], &input, 5, &mut rng).is_err());
    // A non-member index.
    let mut stranger = b.header.clone();
    stranger.party = 9;
    assert!(matches!(
        accept(&fx.spec, &fx.nodes[0], &stranger, &b.boxes[0]),
        Err(ProtocolError::NettingInput(_))
    ));
    // Late: signed after the cut-off, and submitted after it.
    assert!(matches!(
        deal(&fx.spec, 0, &fx.party_keys[0], &input, 5_000, &mut rng),
        Err(ProtocolError::LateBundle { .. })
    ));
    let mut round = NodeRound::new(fx.spec.clone()).expect("round");
    assert!(matches!(
        round.accept_bundle(5_000, &fx.nodes[0], &b.header, &b.boxes[0]),
        Err(ProtocolError::LateBundle { .. })
    ));
    // Replay is idempotent; a different second bundle names the party.
    assert!(matches!(
        round.accept_bundle(10, &fx.nodes[0], &b.header, &b.boxes[0]),
        Ok(Admitted::New(_))
    ));
    assert!(matches!(
        round.accept_bundle(10, &fx.nodes[0], &b.header, &b.boxes[0]),
        Ok(Admitted::Duplicate(_))
    ));
    let other = deal(&fx.spec, 0, &fx.party_keys[0], &input, 6, &mut rng).expect("deal");
    assert!(matches!(
        round.accept_bundle(10, &fx.nodes[0], &other.header, &other.boxes[0]),
        Err(ProtocolError::BadBundle { ref party, .. }) if party == "desk-0"
    ));
    // A box meant for another node.
    assert!(matches!(
        accept(&fx.spec, &fx.nodes[0], &b.header, &b.boxes[1]),
        Err(ProtocolError::BadBundle { .. })
    ));
    // Another round's definition.
    let mut spec2 = fx.spec.clone();
    spec2.id = RoundId([8; 16]);
    assert!(matches!(
        accept(&spec2, &fx.nodes[0], &b.header, &b.boxes[0]),
        Err(ProtocolError::BadBundle { .. })
    ));
}

#[test]
fn bad_positions_are_refused_with_what_to_fix() {
    let mut rng = ChaCha20Rng::seed_from_u64(6);
    let fx = fixture(&mut rng, 3, INSTRUMENTS, 5, 3);
    let cases = [
        (
            "counterparty,instrument,quantity,cash\ndesk-9,BTC-FUT,1,0\n",
            "not a party",
        ),
        (
            "counterparty,instrument,quantity,cash\ndesk-1,NOPE,1,0\n",
            "not an instrument",
        ),
        (
            "counterparty,instrument,quantity,cash\ndesk-0,BTC-FUT,1,0\n",
            "yourself",
        ),
        (
            "counterparty,instrument,quantity,cash\ndesk-1,BTC-FUT,1,0\ndesk-1,BTC-FUT,2,0\n",
            "twice",
        ),
        (
            "counterparty,instrument,quantity,cash\ndesk-1,BTC-FUT,99999999999999,0\n",
            "bound",
        ),
    ];
    for (csv, want) in cases {
        let input = PartyInput::from_csv(csv).expect("parses");
        let err = deal(&fx.spec, 0, &fx.party_keys[0], &input, 5, &mut rng).expect_err(want);
        assert!(err.to_string().contains(want), "{err} should say {want}");
    }
    let err = PartyInput::from_csv(
        "counterparty,instrument,quantity,cash\ndesk-1,BTC-FUT,9223372036854775808,0\n",
    )
    .expect_err("outside i64");
    assert!(
        err.to_string().contains("line 2") && err.to_string().contains("i64"),
        "{err}"
    );
    assert!(PartyInput::from_csv("a,b\n").is_err());
    let ok = PartyInput::from_csv(
        "# desk-0\ncounterparty,instrument,quantity,cash\n\ndesk-1,BTC-FUT,-3,\n",
    )
    .expect("ok");
    assert_eq!(ok.positions[0].quantity, -3);
    assert_eq!(ok.positions[0].cash, 0);
}

#[test]
fn a_round_whose_nets_could_overflow_is_refused_naming_the_asset() {
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let mut fx = fixture(&mut rng, 3, INSTRUMENTS, 5, 3);
    fx.spec.instruments[2].multiplier = i64::MAX / 4;
    fx.spec.instruments[2].price_move = 2;
    let err = fx.spec.validate().expect_err("overflow");
    assert!(
        matches!(err, ProtocolError::NettingOverflow { ref asset } if asset == "EUR"),
        "{err}"
    );
}

fn lie_in_party_outputs(fx: &Fixture, out: &mut PartyOutputs, node: usize, rng: &mut ChaCha20Rng) {
    // The node re-seals a share off by one, and signs it: a validly signed lie.
    let spec = &fx.spec;
    let mut aad = b"quorate/netting/output-shares/v1\0".to_vec();
    aad.extend_from_slice(&spec.id.0);
    aad.extend_from_slice(&spec.digest());
    aad.extend_from_slice(&out.inputs_digest);
    aad.extend_from_slice(out.node.as_bytes());
    aad.extend_from_slice(&out.party.to_be_bytes());
    let mut plain = seal::open(&fx.party_seal[out.party as usize], &aad, &out.sealed)
        .expect("opens")
        .to_vec();
    let mut s = [0u8; 32];
    s.copy_from_slice(&plain[..32]);
    let bumped = Scalar::from_canonical_bytes(s).expect("canonical") + Scalar::ONE;
    plain[..32].copy_from_slice(bumped.as_bytes());
    out.sealed = seal::seal(
        rng,
        &spec.parties[out.party as usize].seal_key,
        &aad,
        &plain,
    )
    .expect("seal");
    out.signature = fx.nodes[node].sign(&out.digest()).to_bytes().to_vec();
}

#[test]
fn a_party_names_the_node_that_lied_about_its_output_share_and_still_opens() {
    let mut rng = ChaCha20Rng::seed_from_u64(8);
    let fx = fixture(&mut rng, 3, INSTRUMENTS, 5, 3);
    let inputs = mirrored(&fx.spec, &[(0, 1, 0, 5, 3), (0, 2, 2, -2, 0)]);
    let out = run(&fx, &inputs, &mut rng);
    let participants = vec![true; 3];
    let points: Vec<Option<Vec<RistrettoPoint>>> = out
        .bundles
        .iter()
        .map(|b| {
            b.as_ref()
                .map(|b| verify::commitments(&fx.spec, &b.header).expect("points"))
        })
        .collect();
    let commitments: Vec<Option<&[RistrettoPoint]>> = points.iter().map(|p| p.as_deref()).collect();
    let headers: Vec<Option<&BundleHeader>> = out
        .bundles
        .iter()
        .map(|b| b.as_ref().map(|b| &b.header))
        .collect();
    let inputs_digest = out.outputs[0].public.inputs_digest;
    for liar in [0usize, 3] {
        let mut mine: Vec<PartyOutputs> = out
            .outputs
            .iter()
            .map(|o| {
                o.parties
                    .iter()
                    .find(|x| x.party == 0)
                    .cloned()
                    .expect("party 0")
            })
            .collect();
        lie_in_party_outputs(&fx, &mut mine[liar], liar, &mut rng);
        let r = open_result(
            &fx.spec,
            &Published {
                participants: &participants,
                inputs_digest,
                headers: &headers,
                commitments: &commitments,
            },
            0,
            &fx.party_seal[0],
            &mine,
            &mut rng,
        )
        .expect("opens from the honest shares");
        assert_eq!(r.culprits, vec![fx.nodes[liar].node_id()]);
        assert_eq!(
            Some(&r),
            out.results[0]
                .as_ref()
                .map(|h| {
                    let mut h = h.clone();
                    h.culprits = r.culprits.clone();
                    h
                })
                .as_ref()
        );
    }
    // A message with a forged signature proves nothing about the node it names:
    // ignored, nobody blamed, and the result opens from the others.
    let mut mine: Vec<PartyOutputs> = out.outputs.iter().map(|o| o.parties[0].clone()).collect();
    mine[1].signature[3] ^= 1;
    let r = open_result(
        &fx.spec,
        &Published {
            participants: &participants,
            inputs_digest,
            headers: &headers,
            commitments: &commitments,
        },
        0,
        &fx.party_seal[0],
        &mine,
        &mut rng,
    )
    .expect("opens");
    assert!(r.culprits.is_empty());
}

#[test]
fn nodes_name_a_node_whose_public_opening_is_wrong_and_too_many_liars_fail_closed() {
    let mut rng = ChaCha20Rng::seed_from_u64(9);
    let fx = fixture(&mut rng, 3, INSTRUMENTS, 5, 3);
    let inputs = mirrored(&fx.spec, &[(0, 1, 0, 5, 3), (1, 2, 1, 4, 0)]);
    let out = run(&fx, &inputs, &mut rng);
    let participants = vec![true; 3];
    let net_pts: Vec<Option<Vec<RistrettoPoint>>> = out
        .bundles
        .iter()
        .map(|b| {
            b.as_ref()
                .map(|b| verify::net_points(&fx.spec, &b.header).expect("points"))
        })
        .collect();
    let nets: Vec<Option<&[RistrettoPoint]>> = net_pts.iter().map(|p| p.as_deref()).collect();
    let inputs_digest = out.outputs[0].public.inputs_digest;
    let mut views: Vec<_> = out.outputs.iter().map(|o| o.public.clone()).collect();
    let lie = |v: &mut open::PublicOutputs, node: usize| {
        let s = Scalar::from_canonical_bytes(v.public[..32].try_into().expect("32"))
            .expect("canonical")
            + Scalar::ONE;
        v.public[..32].copy_from_slice(s.as_bytes());
        v.signature = fx.nodes[node].sign(&v.digest()).to_bytes().to_vec();
    };
    lie(&mut views[0], 0);
    let (batch, culprits) = settle(
        &fx.spec,
        &participants,
        inputs_digest,
        &nets,
        &views,
        &mut rng,
    )
    .expect("settles");
    assert_eq!(culprits, vec![fx.nodes[0].node_id()]);
    assert_eq!(Some(batch), out.settlement.ok());
    // Two colluding liars whose errors cancel at 0 for some subsets are still named
    // one by one, and nobody honest is.
    lie(&mut views[2], 2);
    let (_, culprits) = settle(
        &fx.spec,
        &participants,
        inputs_digest,
        &nets,
        &views,
        &mut rng,
    )
    .expect("settles");
    let mut want = vec![fx.nodes[0].node_id(), fx.nodes[2].node_id()];
    want.sort();
    assert_eq!(culprits, want);
    lie(&mut views[1], 1);
    let res = settle(
        &fx.spec,
        &participants,
        inputs_digest,
        &nets,
        &views,
        &mut rng,
    );
    let err = res.expect_err("only 2 honest of t = 3");
    assert!(matches!(err, ProtocolError::OpeningFailed { .. }), "{err}");
}

/// Encodings of an amount an observer could search for.
fn encodings(v: i64) -> Vec<Vec<u8>> {
    let mut e = vec![
        v.to_le_bytes().to_vec(),
        v.to_be_bytes().to_vec(),
        v.to_string().into_bytes(),
        hex::encode(v.to_le_bytes()).into_bytes(),
        hex::encode(v.to_be_bytes()).into_bytes(),
        super::amount::to_scalar(v).to_bytes().to_vec(),
    ];
    let mut varint = Vec::new();
    let z = ((v << 1) ^ (v >> 63)) as u64;
    let mut x = z;
    loop {
        let b = (x & 0x7f) as u8;
        x >>= 7;
        if x == 0 {
            varint.push(b);
            break;
        }
        varint.push(b | 0x80);
    }
    e.push(varint);
    e
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn what_one_node_and_the_coordinator_hold_contains_no_plaintext_amount() {
    let mut rng = ChaCha20Rng::seed_from_u64(10);
    let fx = fixture(&mut rng, 3, INSTRUMENTS, 5, 3);
    // Large distinctive amounts so a chance match is negligible.
    let q = 0x3a5c_91e7_i64;
    let c = -0x001b_7e0d_2955_i64;
    let inputs = mirrored(&fx.spec, &[(0, 1, 0, q, c), (1, 2, 2, q + 1, c - 1)]);
    let out = run(&fx, &inputs, &mut rng);
    let mut coordinator = Vec::new();
    for b in out.bundles.iter().flatten() {
        coordinator.extend(postcard::to_allocvec(b).expect("encode"));
    }
    for o in &out.outputs {
        coordinator.extend(postcard::to_allocvec(&o.public).expect("encode"));
        for p in &o.parties {
            coordinator.extend(postcard::to_allocvec(p).expect("encode"));
        }
    }
    // Node 0: headers, its own box, and its opened shares.
    let mut node = Vec::new();
    for b in out.bundles.iter().flatten() {
        node.extend(postcard::to_allocvec(&b.header).expect("encode"));
        node.extend(postcard::to_allocvec(&b.boxes[0]).expect("encode"));
        let acc = accept(&fx.spec, &fx.nodes[0], &b.header, &b.boxes[0]).expect("accept");
        for (s, r) in acc.shares.values.iter().zip(&acc.shares.blinds) {
            node.extend_from_slice(s.as_bytes());
            node.extend_from_slice(r.as_bytes());
        }
    }
    for v in [q, -q, c, -c, q + 1, -(q + 1), c - 1, -(c - 1)] {
        for e in encodings(v) {
            assert!(
                !contains(&coordinator, &e),
                "coordinator data holds {v} as {e:?}"
            );
            assert!(!contains(&node, &e), "node data holds {v} as {e:?}");
        }
    }
}

#[test]
fn any_t_minus_1_shares_are_consistent_with_any_alternative_value() {
    let mut rng = ChaCha20Rng::seed_from_u64(11);
    let fx = fixture(&mut rng, 2, INSTRUMENTS, 5, 3);
    let secret = 123_456_789i64;
    let mut input = PartyInput::default();
    input.positions.push(Position {
        counterparty: "desk-1".into(),
        instrument: "BTC-FUT".into(),
        quantity: secret,
        cash: 0,
    });
    let b = deal(&fx.spec, 0, &fx.party_keys[0], &input, 5, &mut rng).expect("deal");
    let e = fx.spec.value_index(0, 1, 0, 0).expect("index");
    // Shares of t − 1 = 2 colluding nodes (indices 2 and 5).
    let colluders = [1usize, 4];
    let held: Vec<(Scalar, Scalar)> = colluders
        .iter()
        .map(|&j| {
            let acc = accept(&fx.spec, &fx.nodes[j], &b.header, &b.boxes[j]).expect("accept");
            (
                Scalar::from(u64::from(fx.spec.committee.members()[j].index)),
                acc.shares.values[e],
            )
        })
        .collect();
    for alt in [0i64, -1, 1, secret + 1, i64::MIN, i64::MAX] {
        // Interpolate the degree-2 polynomial through (0, alt) and the two shares.
        let pts = [
            (Scalar::ZERO, super::amount::to_scalar(alt)),
            held[0],
            held[1],
        ];
        let eval = |x: Scalar| -> Scalar {
            let mut acc = Scalar::ZERO;
            for (i, (xi, yi)) in pts.iter().enumerate() {
                let mut l = Scalar::ONE;
                for (j, (xj, _)) in pts.iter().enumerate() {
                    if i != j {
                        l *= (x - xj) * (xi - xj).invert();
                    }
                }
                acc += l * yi;
            }
            acc
        };
        // Its coefficients, from three evaluations: f(z) = a0 + a1 z + a2 z².
        let (f0, f1, fm1) = (eval(Scalar::ZERO), eval(Scalar::ONE), eval(-Scalar::ONE));
        let a0 = f0;
        let two_inv = Scalar::from(2u64).invert();
        let a2 = (f1 + fm1 - f0 - f0) * two_inv;
        let a1 = (f1 - fm1) * two_inv;
        let poly = |x: &Scalar| a0 + a1 * x + a2 * x * x;
        assert_eq!(super::amount::to_i64(&poly(&Scalar::ZERO)), Some(alt));
        for (x, y) in &held {
            assert_eq!(
                poly(x),
                *y,
                "the alternative polynomial explains the colluders' shares"
            );
        }
    }
}

/// (p, q, instrument, quantity, cash) booked by both sides.
type Trade = (usize, usize, usize, i64, i64);
/// (p, q, instrument, extra quantity) booked by p only.
type Skew = (usize, usize, usize, i64);

fn portfolio() -> impl Strategy<Value = (usize, Vec<Trade>, Vec<Skew>, Vec<bool>)> {
    (2usize..=5).prop_flat_map(|parties| {
        let trade = (
            0..parties,
            0..parties,
            0..INSTRUMENTS.len(),
            -1_000_000i64..=1_000_000,
            -50_000i64..=50_000,
        );
        let skew = (0..parties, 0..parties, 0..INSTRUMENTS.len(), -5i64..=5);
        (
            Just(parties),
            proptest::collection::vec(trade, 0..10),
            proptest::collection::vec(skew, 0..3),
            proptest::collection::vec(proptest::bool::weighted(0.85), parties),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, .. ProptestConfig::default() })]

    #[test]
    fn shared_netting_equals_the_plaintext_reference(
        (parties, trades, skews, present) in portfolio(),
        seed in any::<u64>(),
    ) {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let fx = fixture(&mut rng, parties, INSTRUMENTS, 5, 3);
        let mut seen = std::collections::BTreeSet::new();
        let trades: Vec<_> = trades
            .into_iter()
            .filter(|(p, q, i, ..)| p != q && seen.insert((*p.min(q), *p.max(q), *i)))
            .collect();
        let mut inputs = mirrored(&fx.spec, &trades);
        // Skew some bookings (mismatches), and drop some parties.
        for (p, q, i, d) in skews {
            if p == q { continue; }
            let name = fx.spec.parties[q].name.clone();
            let inst = fx.spec.instruments[i].name.clone();
            let book = inputs[p].as_mut().expect("input");
            match book.positions.iter_mut().find(|x| x.counterparty == name && x.instrument == inst) {
                Some(x) => x.quantity += d,
                None => book.positions.push(Position { counterparty: name, instrument: inst, quantity: d, cash: 0 }),
            }
        }
        for (p, keep) in present.iter().enumerate() {
            if !keep { inputs[p] = None; }
        }
        let out = run(&fx, &inputs, &mut rng);
        check_against_reference(&fx, &inputs, &out);
        let plain = reference::compute(&fx.spec, &inputs).expect("reference");
        let balanced = fx.spec.assets().iter().all(|a| {
            plain.iter().flatten().map(|r| r.multilateral[a]).sum::<i128>() == 0
        });
        prop_assert_eq!(out.settlement.is_ok(), balanced);
    }
}
