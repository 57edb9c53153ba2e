//! Property tests: any (t, n) up to 10, any signer subset of size >= t, any message
//! gives a signature every verifier accepts.

mod common;

use std::sync::Arc;

use proptest::prelude::*;
use quorate_protocol::{local, Ciphersuite, NodeIdentity, SignTarget};

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
    fn fewer_than_threshold_signers_cannot_sign(
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

    #[test]
    fn envelope_decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = quorate_protocol::Envelope::decode(&bytes);
    }
}
