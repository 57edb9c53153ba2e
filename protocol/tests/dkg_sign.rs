//! Full DKG + signing for every ciphersuite and several (t, n), verified
//! independently.

mod common;

use common::{bip341_tweak, message, setup, verify_bip340_under, verify_independently};
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

fn hex32(s: &str) -> [u8; 32] {
    hex::decode(s).expect("hex").try_into().expect("32 bytes")
}

/// The independent tweak itself, against published vectors: BIP86's first key-path
/// address (no script tree) and BIP341's `wallet-test-vectors.json` scriptPubKey
/// cases 0 (no script tree) and 1 (one leaf, whose hash is the merkle root).
#[test]
fn independent_bip341_tweak_reproduces_bip86_and_bip341_vectors() {
    // BIP86, m/86'/0'/0'/0/0.
    let (_, q) = bip341_tweak(
        &hex32("cc8a4bc64d897bddc5fbc2f670f7a8ba0b386779106cf1223c6fc5d7cd6fc115"),
        None,
    )
    .expect("tweak");
    assert_eq!(
        hex::encode(q),
        "a60869f0dbcf1dc659c9cecbaf8050135ea9e8cdc487053f1dc6880949dc684c"
    );
    // BIP341 scriptPubKey[0].
    let (t, q) = bip341_tweak(
        &hex32("d6889cb081036e0faefa3a35157ad71086b123b2b144b649798b494c300a961d"),
        None,
    )
    .expect("tweak");
    assert_eq!(
        hex::encode(t),
        "b86e7be8f39bab32a6f2c0443abbc210f0edac0e2c53d501b36b64437d9c6c70"
    );
    assert_eq!(
        hex::encode(q),
        "53a1f6e454df1aa2776a2814a721372d6258050de330b3c6d10ee8f4e0dda343"
    );
    // BIP341 scriptPubKey[1].
    let (t, q) = bip341_tweak(
        &hex32("187791b6f712a8ea41c8ecdd0ee77fab3e85263b37e1ec18a3651926b3a6cf27"),
        Some(&hex32(BIP341_ONE_LEAF_ROOT)),
    )
    .expect("tweak");
    assert_eq!(
        hex::encode(t),
        "cbd8679ba636c1110ea247542cfbd964131a6be84f873f7f3b62a777528ed001"
    );
    assert_eq!(
        hex::encode(q),
        "147c9c57132f6e7ecddba9800bb0c4449251c92a1e60371ee77557b6620f3ea3"
    );
}

/// Merkle root of BIP341 wallet vector scriptPubKey[1] (a single leaf).
const BIP341_ONE_LEAF_ROOT: &str =
    "5b75adecf53548f3ec6ad7d78383bf84cc57b55a3127c72b9a2481752dd88b21";

/// A script-tree signature verifies (libsecp256k1) under the BIP341 output key
/// computed from the spec with the group key as internal key — not merely under
/// the key frost's own tweak code reports — and under neither the untweaked key
/// nor the output key of another root.
#[test]
fn taproot_script_tree_tweak_signs_under_tweaked_output_key() {
    let (ids, shares, mut rng) = setup(5, 3, Ciphersuite::Secp256k1Tr, 77);
    let coordinator = Arc::new(NodeIdentity::generate(&mut rng));
    let internal: [u8; 32] = shares[0].public.verifying_key[1..]
        .try_into()
        .expect("SEC1 compressed group key");
    for merkle_root in [hex32(BIP341_ONE_LEAF_ROOT), [7u8; 32]] {
        let msg = message(&format!("script path {}", hex::encode(merkle_root)));
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
        let (_, expected) = bip341_tweak(&internal, Some(&merkle_root)).expect("tweak");
        assert_eq!(
            sig.verifying_key[1..],
            expected,
            "the reported key is the BIP341 output key"
        );
        assert_eq!(
            Ok(sig.verifying_key.clone()),
            shares[0]
                .public
                .output_key(Some(&merkle_root))
                .map_err(|e| e.to_string()),
        );
        verify_bip340_under(&expected, &msg, &sig.signature)
            .expect("libsecp256k1 accepts under the independently tweaked key");
        assert!(
            verify_bip340_under(&internal, &msg, &sig.signature).is_err(),
            "not a signature under the untweaked group key"
        );
        let (_, other) = bip341_tweak(&internal, Some(&[0u8; 32])).expect("tweak");
        assert!(
            verify_bip340_under(&other, &msg, &sig.signature).is_err(),
            "not a signature under another root's output key"
        );
    }
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
