//! Limit checks on a real netting round: parties deal positions with collateral
//! and limits, nodes accept and close, the MPC runs over wire parts, and the
//! verdicts, volumes and each party's own bits agree with the plaintext.

use rand_chacha::{rand_core::SeedableRng, ChaCha20Rng};

use super::{
    inputs::Layout,
    local,
    verdict::{open_bits, LimitBits, LimitVerdict},
};
use crate::{
    identity::NodeIdentity,
    netting::{
        input::{Cover, PartyInput, Position},
        round::LimitSettings,
        session::NodeRound,
        share::deal,
        tests::{fixture, Fixture},
    },
};

const INSTRUMENTS: &[(&str, &str, i64, i64, i64)] = &[
    ("BTC-FUT", "USD", 10, -37, 0),
    ("EUR-SWAP", "EUR", 100, 3, 0),
];

fn limited(reveal: bool) -> Fixture {
    let mut rng = ChaCha20Rng::seed_from_u64(41);
    let mut fx = fixture(&mut rng, 3, INSTRUMENTS, 5, 3);
    fx.spec.limits = Some(LimitSettings {
        max_cover: 1 << 40,
        reveal_failures: reveal,
        efficiency: true,
    });
    fx.spec.validate().expect("valid");
    fx
}

/// desk-0 long 50 BTC-FUT against desk-1 (loses 50·10·37 = 18500 USD), desk-2
/// pays desk-1 4 EUR-SWAP (receives 4·300 = 1200 EUR from... see signs).
fn inputs(fx: &Fixture, cover0_usd: i64) -> Vec<PartyInput> {
    let s = &fx.spec;
    let pos = |cp: usize, i: usize, q: i64| Position {
        counterparty: s.parties[cp].name.clone(),
        instrument: s.instruments[i].name.clone(),
        quantity: q,
        cash: 0,
    };
    let cover = |asset: &str, c: i64, l: i64| Cover {
        asset: asset.into(),
        collateral: c,
        limit: l,
    };
    vec![
        PartyInput {
            positions: vec![pos(1, 0, 50)],
            cover: vec![cover("USD", cover0_usd, 500)],
        },
        PartyInput {
            positions: vec![pos(0, 0, -50), pos(2, 1, -4)],
            cover: vec![cover("EUR", 2000, 0)],
        },
        PartyInput {
            positions: vec![pos(1, 1, 4)],
            cover: vec![],
        },
    ]
}

struct Run {
    verdicts: Vec<LimitVerdict>,
    bits: Vec<Vec<LimitBits>>,
    inputs_digest: [u8; 32],
    steps: u32,
}

fn run(fx: &Fixture, inputs: &[PartyInput]) -> Run {
    let mut rng = ChaCha20Rng::seed_from_u64(9);
    let spec = &fx.spec;
    let bundles: Vec<_> = inputs
        .iter()
        .enumerate()
        .map(|(p, i)| deal(spec, p, &fx.party_keys[p], i, 10, &mut rng).expect("deal"))
        .collect();
    let mut rounds: Vec<NodeRound> = fx
        .nodes
        .iter()
        .map(|_| NodeRound::new(spec.clone()).expect("round"))
        .collect();
    for (j, (node, round)) in fx.nodes.iter().zip(&mut rounds).enumerate() {
        for b in &bundles {
            round
                .accept_bundle(20, node, &b.header, &b.boxes[j])
                .expect("accept");
        }
    }
    let expected: Vec<Option<[u8; 32]>> = bundles.iter().map(|b| Some(b.header.digest())).collect();
    for (node, round) in fx.nodes.iter().zip(&mut rounds) {
        round.close(node, &expected).expect("close");
    }
    let digest = rounds[0].closed().expect("closed").1;
    let refs: Vec<(&NodeIdentity, &NodeRound)> = fx.nodes.iter().zip(&rounds).collect();
    let (results, stats) = local::run_round(spec, &refs, 1, &mut rng).expect("limit checks");
    let (verdicts, bits): (Vec<_>, Vec<_>) = results.into_iter().unzip();
    Run {
        verdicts,
        bits,
        inputs_digest: digest,
        steps: stats.steps,
    }
}

#[test]
fn retransmitted_parts_change_nothing_and_blame_nobody() {
    // Five desks: step messages span several parts, and every part (and every
    // answer part) arrives twice, also after its message was complete.
    let mut rng = ChaCha20Rng::seed_from_u64(12);
    let mut fx = fixture(&mut rng, 5, INSTRUMENTS, 5, 3);
    fx.spec.limits = Some(LimitSettings {
        max_cover: 1 << 40,
        reveal_failures: true,
        efficiency: true,
    });
    fx.spec.validate().expect("valid");
    let spec = &fx.spec;
    let bundles: Vec<_> = (0..5)
        .map(|p| {
            deal(
                spec,
                p,
                &fx.party_keys[p],
                &PartyInput::default(),
                10,
                &mut rng,
            )
            .expect("deal")
        })
        .collect();
    let expected: Vec<Option<[u8; 32]>> = bundles.iter().map(|b| Some(b.header.digest())).collect();
    let rounds: Vec<NodeRound> = fx
        .nodes
        .iter()
        .enumerate()
        .map(|(j, id)| {
            let mut round = NodeRound::new(spec.clone()).expect("round");
            for b in &bundles {
                round
                    .accept_bundle(20, id, &b.header, &b.boxes[j])
                    .expect("accept");
            }
            round.close(id, &expected).expect("close");
            round
        })
        .collect();
    let layout = Layout::new(spec, &[true; 5]).expect("layout");
    let job = layout.job();
    assert!(
        super::parts::max_message_bytes(&job, 5) > 2 * super::parts::PART_BYTES,
        "the round must need several parts per message"
    );
    let refs: Vec<(&NodeIdentity, &NodeRound)> = fx.nodes.iter().zip(&rounds).collect();
    let (results, stats) = local::run_round_with(spec, &refs, 1, &mut rng, true)
        .expect("retransmissions are idempotent");
    assert_eq!(stats.steps, u32::from(super::STEPS));
    assert!(
        results.iter().all(|(v, _)| v.covered),
        "all-zero books are covered"
    );
}

fn plain(fx: &Fixture, inputs: &[PartyInput]) -> Vec<i128> {
    let values: Vec<Vec<i64>> = inputs
        .iter()
        .enumerate()
        .map(|(p, i)| i.to_values(&fx.spec, p).expect("values").to_vec())
        .collect();
    Layout::new(&fx.spec, &[true, true, true])
        .expect("layout")
        .plain_inputs(&fx.spec, &values)
}

#[test]
fn covered_round_verdict_volumes_and_own_bits_match_plaintext() {
    let fx = limited(true);
    let inputs = inputs(&fx, 20_000);
    let x = plain(&fx, &inputs);
    // desk-0 USD: net −18500 + 20000 + 500 ≥ 0.
    assert!(x[..6].iter().all(|v| *v >= 0), "{x:?}");
    let r = run(&fx, &inputs);
    assert_eq!(r.steps, u32::from(super::STEPS));
    for v in &r.verdicts {
        v.check(&fx.spec).expect("signed");
        assert!(v.covered);
        assert!(v.failed.is_empty());
        assert_eq!(v.statement(), r.verdicts[0].statement());
    }
    // Volumes: USD gross = net = 18500; EUR gross = net = 1200.
    let vol = &r.verdicts[0].volumes;
    assert_eq!(vol.len(), 2);
    assert_eq!(
        (vol[1].asset.as_str(), vol[1].gross, vol[1].net),
        ("USD", Some(18_500), Some(18_500))
    );
    assert_eq!(
        (vol[0].asset.as_str(), vol[0].gross, vol[0].net),
        ("EUR", Some(1_200), Some(1_200))
    );
    for p in 0..3 {
        let all: Vec<LimitBits> = r.bits.iter().map(|b| b[p].clone()).collect();
        let own = open_bits(&fx.spec, p, &fx.party_seal[p], &r.inputs_digest, &all).expect("open");
        assert!(own.iter().all(|b| b.covered == Some(true)));
        // Another party cannot open them.
        assert!(open_bits(
            &fx.spec,
            p,
            &fx.party_seal[(p + 1) % 3],
            &r.inputs_digest,
            &all
        )
        .is_err());
    }
}

#[test]
fn uncovered_party_fails_the_round_and_is_named_only_when_the_round_allows() {
    for reveal in [true, false] {
        let fx = limited(reveal);
        // desk-0 USD: −18500 + 17999 + 500 = −1.
        let inputs = inputs(&fx, 17_999);
        assert_eq!(plain(&fx, &inputs)[1], -1);
        let r = run(&fx, &inputs);
        for v in &r.verdicts {
            assert!(!v.covered);
            let want: Vec<String> = if reveal {
                vec!["desk-0".into()]
            } else {
                Vec::new()
            };
            assert_eq!(v.failed, want);
        }
        let all: Vec<LimitBits> = r.bits.iter().map(|b| b[0].clone()).collect();
        let own = open_bits(&fx.spec, 0, &fx.party_seal[0], &r.inputs_digest, &all).expect("open");
        let usd = own.iter().find(|b| b.asset == "USD").expect("usd");
        assert_eq!(usd.covered, Some(false));
        // Fewer than 2t - 1 nodes' bits cannot be checked.
        assert!(open_bits(&fx.spec, 0, &fx.party_seal[0], &r.inputs_digest, &all[..4]).is_err());
    }
}

#[test]
fn cover_rows_parse_and_are_refused_where_they_do_not_belong() {
    let csv = "counterparty,instrument,quantity,cash\ndesk-1,BTC-FUT,5,\n*collateral,USD,700,\n*limit,USD,30,\n";
    let input = PartyInput::from_csv(csv).expect("csv");
    assert_eq!(input.cover.len(), 1);
    assert_eq!((input.cover[0].collateral, input.cover[0].limit), (700, 30));
    let fx = limited(false);
    let v = input.to_values(&fx.spec, 0).expect("values");
    let assets = fx.spec.assets();
    let usd = assets.iter().position(|a| a == "USD").expect("usd");
    assert_eq!(v[fx.spec.cover_index(usd, 0).expect("index")], 700);
    assert_eq!(v[fx.spec.cover_index(usd, 1).expect("index")], 30);
    for bad in [
        "counterparty,instrument,quantity,cash\n*collateral,USD,-1,\n",
        "counterparty,instrument,quantity,cash\n*collateral,USD,1,\n*collateral,USD,2,\n",
        "counterparty,instrument,quantity,cash\n*haircut,USD,1,\n",
        "counterparty,instrument,quantity,cash\n*limit,USD,1,5\n",
    ] {
        assert!(PartyInput::from_csv(bad).is_err(), "{bad}");
    }
    let over =
        PartyInput::from_csv("counterparty,instrument,quantity,cash\n*limit,USD,2000000000000,\n")
            .expect("csv");
    assert!(over.to_values(&fx.spec, 0).is_err(), "above max_cover");
    let unknown = PartyInput::from_csv("counterparty,instrument,quantity,cash\n*limit,JPY,1,\n")
        .expect("csv");
    assert!(
        unknown.to_values(&fx.spec, 0).is_err(),
        "asset not in the round"
    );
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let plain_fx = fixture(&mut rng, 3, INSTRUMENTS, 5, 3);
    assert!(
        input.to_values(&plain_fx.spec, 0).is_err(),
        "round without limit checks"
    );
    let mut small = fixture(&mut rng, 3, INSTRUMENTS, 3, 3);
    small.spec.limits = fx.spec.limits;
    let err = small.spec.validate().expect_err("2(t-1) >= n").to_string();
    assert!(err.contains("2(t-1) < n"), "{err}");
}
