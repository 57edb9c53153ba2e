//! Full DKG + signing for every ciphersuite and several (t, n), verified
//! independently.

mod common;

use common::{message, setup, verify_independently};
use quorate_protocol::{local, Ciphersuite, NodeIdentity, SignTarget};
use std::sync::Arc;

fn dkg_then_sign(suite: Ciphersuite, t: u16, n: usize, seed: u64) {
    let (ids, shares, mut rng) = setup(n, t, suite, seed);
    // Everyone agrees on the group key and the public package.
    for s in &shares {
        assert_eq!(
            s.public, shares[0].public,
            "all participants derived the same key"
        );
        assert_eq!(s.public.threshold, t);
    }
    let coordinator = Arc::new(NodeIdentity::generate(&mut rng));
    // Sign with the last t participants (not the first, to exercise arbitrary subsets).
    let signers: Vec<_> = ids
        .iter()
        .cloned()
        .zip(shares.iter().cloned())
        .skip(n - usize::from(t))
        .collect();
    let msg = message(&format!("{suite} {t}-of-{n}"));
    let sig = local::run_signing(
        &coordinator,
        signers,
        SignTarget {
            message: msg.clone(),
            tweak: None,
        },
        &mut rng,
    )
    .expect("signing");
    assert_eq!(sig.verifying_key, shares[0].public.verifying_key);
    verify_independently(&sig, &msg).expect("independent verifier accepts");
    shares[0]
        .public
        .verify(&msg, &sig.signature, None)
        .expect("frost verifier accepts");
    // And a different message does not verify.
    assert!(verify_independently(&sig, &message("other")).is_err());
}

macro_rules! suite_tests {
    ($($name:ident: $suite:expr, $t:expr, $n:expr;)*) => {$(
        #[test]
        fn $name() {
            dkg_then_sign($suite, $t, $n, $t as u64 * 100 + $n as u64);
        }
    )*};
}

suite_tests! {
    dkg_and_sign_secp256k1_2_of_3: Ciphersuite::Secp256k1, 2, 3;
    dkg_and_sign_secp256k1_3_of_5: Ciphersuite::Secp256k1, 3, 5;
    dkg_and_sign_secp256k1_5_of_9: Ciphersuite::Secp256k1, 5, 9;
    dkg_and_sign_taproot_2_of_3: Ciphersuite::Secp256k1Tr, 2, 3;
    dkg_and_sign_taproot_3_of_5: Ciphersuite::Secp256k1Tr, 3, 5;
    dkg_and_sign_taproot_5_of_9: Ciphersuite::Secp256k1Tr, 5, 9;
    dkg_and_sign_ed25519_2_of_3: Ciphersuite::Ed25519, 2, 3;
    dkg_and_sign_ed25519_3_of_5: Ciphersuite::Ed25519, 3, 5;
    dkg_and_sign_ed25519_5_of_9: Ciphersuite::Ed25519, 5, 9;
}

#[test]
fn taproot_script_tree_tweak_signs_under_tweaked_output_key() {
    let (ids, shares, mut rng) = setup(5, 3, Ciphersuite::Secp256k1Tr, 77);
    let coordinator = Arc::new(NodeIdentity::generate(&mut rng));
    let merkle_root = [7u8; 32];
    let msg = message("script path");
    let signers: Vec<_> = ids
        .iter()
        .cloned()
        .zip(shares.iter().cloned())
        .take(3)
        .collect();
    let sig = local::run_signing(
        &coordinator,
        signers,
        SignTarget {
            message: msg.clone(),
            tweak: Some(merkle_root),
        },
        &mut rng,
    )
    .expect("signing with tweak");
    let tweaked = shares[0]
        .public
        .output_key(Some(&merkle_root))
        .expect("tweaked key");
    assert_eq!(sig.verifying_key, tweaked);
    assert_ne!(
        tweaked, shares[0].public.verifying_key,
        "tweak changes the key"
    );
    verify_independently(&sig, &msg).expect("libsecp256k1 accepts the tweaked signature");
}

#[test]
fn tweak_is_refused_for_suites_without_taproot() {
    let (ids, shares, mut rng) = setup(3, 2, Ciphersuite::Ed25519, 78);
    let coordinator = Arc::new(NodeIdentity::generate(&mut rng));
    let signers: Vec<_> = ids.iter().cloned().zip(shares.iter().cloned()).collect();
    let err = local::run_signing(
        &coordinator,
        signers,
        SignTarget {
            message: b"m".to_vec(),
            tweak: Some([1; 32]),
        },
        &mut rng,
    )
    .expect_err("tweak refused");
    assert!(
        matches!(err, quorate_protocol::ProtocolError::InvalidParameters(_)),
        "{err:?}"
    );
}
