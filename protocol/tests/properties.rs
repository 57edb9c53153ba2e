//! Property tests: any (t, n) up to 10, any signer subset of size >= t, any message
//! gives a signature every verifier accepts; t - 1 key holders with a made-up
//! share for the missing one (a correctly counted set) are refused by the
//! signature-share check, which names exactly that share's sender.

mod common;

use std::sync::Arc;

use proptest::prelude::*;
use quorate_protocol::{
    aggregate::AggregatorConfig,
    byzantine,
    local::{self, Net, Outcome, Party},
    Aggregator, Ciphersuite, Fault, Input, NodeIdentity, ProtocolError, Round, SessionId,
    SignTarget,
};

fn suite() -> impl Strategy<Value = Ciphersuite> {
    prop_oneof![
        Just(Ciphersuite::Secp256k1),
        Just(Ciphersuite::Secp256k1Tr),
        Just(Ciphersuite::Ed25519)
    ]
}

/// (t, n, signer subset as a bitmask of at least t members of n).
fn params() -> impl Strategy<Value = (u16, usize, Vec<usize>)> {
    (2usize..=10)
        .prop_flat_map(|n| (2..=n as u16, Just(n)))
        .prop_flat_map(|(t, n)| {
            (
                Just(t),
                Just(n),
                proptest::sample::subsequence((0..n).collect::<Vec<_>>(), usize::from(t)..=n),
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn any_threshold_subset_and_message_signs(
        suite in suite(),
        (t, n, subset) in params(),
        msg in proptest::array::uniform32(any::<u8>()),
        seed in any::<u64>(),
    ) {
        let (ids, shares, mut rng) = common::setup(n, t, suite, seed);
        let coordinator = Arc::new(NodeIdentity::generate(&mut rng));
        let signers = subset.iter().map(|&i| (ids[i].clone(), shares[i].clone())).collect();
        let sig = local::run_signing(&coordinator, signers, SignTarget { message: msg.to_vec(), tweak: None }, &mut rng)
            .expect("signing");
        prop_assert!(common::verify_independently(&sig, &msg).is_ok());
        prop_assert!(shares[0].public.verify(&msg, &sig.signature, None).is_ok());
    }

    #[test]
    fn fewer_than_threshold_signers_are_refused_before_signing(
        suite in suite(),
        n in 3usize..=6,
        seed in any::<u64>(),
    ) {
        let t = u16::try_from(n).expect("small") - 1;
        let (ids, shares, mut rng) = common::setup(n, t, suite, seed);
        let coordinator = Arc::new(NodeIdentity::generate(&mut rng));
        let signers: Vec<_> = ids.iter().cloned().zip(shares.iter().cloned()).take(usize::from(t) - 1).collect();
        let target = SignTarget { message: vec![1], tweak: None };
        let result = local::run_signing(&coordinator, signers, target, &mut rng);
        prop_assert!(result.is_err());
    }

    /// The cryptographic negative case: exactly t shares arrive (the count check
    /// passes), t - 1 from holders of the key and one made up in place of the
    /// missing holder's (a random scalar, in a validly signed message). No signature
    /// comes out, and the share check names that sender and no one else.
    #[test]
    fn threshold_minus_one_holders_with_a_made_up_share_cannot_sign(
        suite in suite(),
        (t, n, subset) in params(),
        forged_at in any::<proptest::sample::Index>(),
        msg in proptest::array::uniform32(any::<u8>()),
        seed in any::<u64>(),
    ) {
        let (ids, shares, mut rng) = common::setup(n, t, suite, seed);
        let coordinator = Arc::new(NodeIdentity::generate(&mut rng));
        let subset = &subset[..usize::from(t)];
        let missing = ids[subset[forged_at.index(subset.len())]].clone();
        let signers: Vec<_> = subset.iter().map(|&i| (ids[i].clone(), shares[i].clone())).collect();
        let aggregator = Aggregator::new(
            coordinator.clone(),
            &shares[0].public,
            AggregatorConfig {
                session: SessionId([3; 32]),
                signers: signers.iter().map(|(id, _)| id.node_id()).collect(),
                target: SignTarget { message: msg.to_vec(), tweak: None },
                request: Vec::new(),
                timeout_ms: 60_000,
            },
        )
        .expect("aggregator");
        let mut net = Net::new();
        net.signers(signers);
        net.add(coordinator.node_id(), Party::Aggregator(aggregator));
        net.input(coordinator.node_id(), Input::Start, &mut rng);
        let mut forge_rng = common::rng(seed ^ 1);
        let mut shares_seen = 0;
        net.run(&mut rng, &mut |_, env| {
            if env.round != Round::SignShare {
                return vec![env];
            }
            shares_seen += 1;
            if env.sender == missing.node_id() {
                vec![byzantine::corrupt_signature_share(&missing, &env, &mut forge_rng).expect("forge")]
            } else {
                vec![env]
            }
        });
        prop_assert_eq!(shares_seen, usize::from(t), "a correctly counted set of shares");
        prop_assert!(!matches!(net.outcomes.get(&coordinator.node_id()), Some(Outcome::Signature(_))));
        let fatal: Vec<_> = net.errors.iter().filter(|(_, e)| e.is_fatal()).cloned().collect();
        prop_assert_eq!(
            fatal,
            vec![(
                coordinator.node_id(),
                ProtocolError::Aborted { culprits: vec![missing.node_id()], fault: Fault::InvalidSignatureShare },
            )]
        );
    }

    #[test]
    fn envelope_decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = quorate_protocol::Envelope::decode(&bytes);
    }
}
