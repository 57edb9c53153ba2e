//! Resharing and refresh: the group key stays, shares and committees change, and a
//! cheating dealer is named.

mod common;

use std::sync::Arc;

use common::{message, rng, setup, verify_independently};
use frost_core::keys::{KeyPackage, PublicKeyPackage, SigningShare};
use quorate_protocol::{
    lifecycle::{
        public_package, share_aad, verify_finish, ApprovedOperation, Operation, OperationKind,
        Reshare, ReshareConfig, ReshareEvent,
    },
    local::{self, Net, Outcome, Party},
    seal, Ciphersuite, Committee, Envelope, Fault, Input, KeyShare, Member, NodeId, NodeIdentity,
    Payload, ProtocolError, Round, SessionId, SignTarget,
};
use rand_chacha::ChaCha20Rng;
use rand_core::RngCore;

fn member(id: &Arc<NodeIdentity>, index: u16) -> Member {
    let p = id.public();
    Member {
        node: p.node,
        index,
        seal_key: p.seal_key,
    }
}

fn sign(
    signers: Vec<(Arc<NodeIdentity>, KeyShare)>,
    tag: &str,
    rng: &mut ChaCha20Rng,
) -> Result<quorate_protocol::SignatureBytes, ProtocolError> {
    let coordinator = Arc::new(NodeIdentity::generate(rng));
    local::run_signing(
        &coordinator,
        signers,
        SignTarget {
            message: message(tag),
            tweak: None,
        },
        rng,
    )
}

/// 3-of-5 → 4-of-7: old members 1–3 stay (with their roster indices), 4 and 5 are
/// replaced, four newcomers join with indices 6–9. Dealers are members 2–4 (one of
/// them leaves). The new committee alone signs under the unchanged key.
fn reshare_3_of_5_to_4_of_7(suite: Ciphersuite, seed: u64) {
    let (old_ids, old_shares, mut rng) = setup(5, 3, suite, seed);
    let newcomers = local::identities(4, &mut rng);
    let mut members: Vec<Member> = (0..3).map(|i| member(&old_ids[i], i as u16 + 1)).collect();
    members.extend(
        newcomers
            .iter()
            .enumerate()
            .map(|(i, id)| member(id, i as u16 + 6)),
    );
    let committee = Committee::new(members).expect("committee");
    let dealers: Vec<_> = (1..4)
        .map(|i| (old_ids[i].clone(), old_shares[i].clone()))
        .collect();
    // Members 1 and 3 stay but do not deal; they are newcomers to the machine.
    let joining: Vec<Arc<NodeIdentity>> = vec![old_ids[0].clone()]
        .into_iter()
        .chain(newcomers.iter().cloned())
        .collect();
    let new_shares =
        local::run_reshare(&dealers, &joining, &committee, 4, &mut rng).expect("reshare");
    assert_eq!(new_shares.len(), 7);
    for s in &new_shares {
        assert_eq!(s.public.verifying_key, old_shares[0].public.verifying_key);
        assert_eq!(s.public.threshold, 4);
        assert_eq!(s.public, new_shares[0].public, "one new public key package");
        assert_eq!(s.public.members.len(), 7);
    }
    let holders: Vec<Arc<NodeIdentity>> = committee
        .nodes()
        .map(|n| {
            old_ids
                .iter()
                .chain(&newcomers)
                .find(|id| id.node_id() == n)
                .expect("identity")
                .clone()
        })
        .collect();
    // Only newcomers sign: no old member takes part.
    let newcomer_signers: Vec<_> = holders
        .iter()
        .cloned()
        .zip(new_shares.iter().cloned())
        .skip(3)
        .collect();
    let sig = sign(newcomer_signers, "after reshare", &mut rng).expect("new committee signs");
    assert_eq!(sig.verifying_key, old_shares[0].public.verifying_key);
    verify_independently(&sig, &message("after reshare")).expect("independent verifier");
    // Three new shares are below the new threshold.
    let three: Vec<_> = holders
        .iter()
        .cloned()
        .zip(new_shares.iter().cloned())
        .take(3)
        .collect();
    assert!(sign(three, "too few", &mut rng).is_err());
    // Old and new generations do not mix: two old shares with two new ones fail.
    let mixed = vec![
        (old_ids[3].clone(), old_shares[3].clone()),
        (old_ids[4].clone(), old_shares[4].clone()),
        (holders[5].clone(), new_shares[5].clone()),
        (holders[6].clone(), new_shares[6].clone()),
    ];
    let mixed_err = sign_mixed(mixed, &mut rng);
    assert!(mixed_err.is_err(), "old and new shares never combine");
}

/// Signs with shares of possibly different generations, using the first share's
/// public data (the aggregator checks every share against it).
fn sign_mixed(
    signers: Vec<(Arc<NodeIdentity>, KeyShare)>,
    rng: &mut ChaCha20Rng,
) -> Result<quorate_protocol::SignatureBytes, ProtocolError> {
    sign(signers, "mixed", rng)
}

#[test]
fn reshare_3_of_5_to_4_of_7_keeps_the_key_secp256k1() {
    reshare_3_of_5_to_4_of_7(Ciphersuite::Secp256k1, 1);
}

#[test]
fn reshare_3_of_5_to_4_of_7_keeps_the_key_secp256k1_tr() {
    reshare_3_of_5_to_4_of_7(Ciphersuite::Secp256k1Tr, 2);
}

#[test]
fn reshare_3_of_5_to_4_of_7_keeps_the_key_ed25519() {
    reshare_3_of_5_to_4_of_7(Ciphersuite::Ed25519, 3);
}

#[test]
fn refresh_changes_every_share_but_not_the_key() {
    let (ids, shares, mut rng) = setup(5, 3, Ciphersuite::Secp256k1Tr, 4);
    let committee = local::committee_of(&ids).expect("committee");
    let dealers: Vec<_> = ids.iter().cloned().zip(shares.iter().cloned()).collect();
    let fresh = local::run_reshare(&dealers, &[], &committee, 3, &mut rng).expect("refresh");
    assert_eq!(
        fresh[0].public.verifying_key,
        shares[0].public.verifying_key
    );
    assert_eq!(fresh[0].public.members, shares[0].public.members);
    assert_ne!(
        fresh[0].public.public_key_package, shares[0].public.public_key_package,
        "new verifying shares"
    );
    let signers: Vec<_> = ids
        .iter()
        .cloned()
        .zip(fresh.iter().cloned())
        .skip(2)
        .collect();
    let sig = sign(signers, "refreshed", &mut rng).expect("refreshed shares sign");
    verify_independently(&sig, &message("refreshed")).expect("verifies");
    // A refreshed share with two old ones: fails.
    let mixed = vec![
        (ids[0].clone(), fresh[0].clone()),
        (ids[1].clone(), shares[1].clone()),
        (ids[2].clone(), shares[2].clone()),
    ];
    assert!(sign_mixed(mixed, &mut rng).is_err());
}

fn config(
    old: &KeyShare,
    dealers: &[Arc<NodeIdentity>],
    committee: &Committee,
    threshold: u16,
) -> ReshareConfig {
    let mut d: Vec<NodeId> = dealers.iter().map(|i| i.node_id()).collect();
    d.sort();
    ReshareConfig {
        suite: old.public.suite,
        key_id: old.public.key_id,
        session: SessionId([9; 32]),
        old: old.public.clone(),
        dealers: d,
        committee: committee.clone(),
        threshold,
        generation: 1,
        timeout_ms: 60_000,
        coordinator: NodeId([0; 32]),
    }
}

/// A refresh net of `ids` (all deal, all receive) where dealer `cheat` uses
/// `cheat_share` instead of its real share.
fn refresh_net(
    ids: &[Arc<NodeIdentity>],
    shares: &[KeyShare],
    cfg: &ReshareConfig,
    cheat: Option<(usize, KeyShare)>,
    rng: &mut ChaCha20Rng,
) -> Net {
    let mut net = Net::new();
    for (i, id) in ids.iter().enumerate() {
        let share = match &cheat {
            Some((c, s)) if *c == i => s.clone(),
            _ => shares[i].clone(),
        };
        let m = Reshare::new(id.clone(), cfg.clone(), Some(&share)).expect("machine");
        net.add(id.node_id(), Party::Reshare(m));
    }
    for id in ids {
        net.input(id.node_id(), Input::Start, rng);
    }
    net
}

fn fatal(net: &Net) -> Vec<(NodeId, ProtocolError)> {
    net.errors
        .iter()
        .filter(|(_, e)| e.is_fatal())
        .cloned()
        .collect()
}

/// A share with the right public data but another secret.
fn forged_share(real: &KeyShare, rng: &mut ChaCha20Rng) -> KeyShare {
    type C = frost_secp256k1::Secp256K1Sha256;
    let pkp = PublicKeyPackage::<C>::deserialize(&real.public.public_key_package).expect("pkp");
    let kp = real.key_package::<C>().expect("kp");
    let mut bytes = [0u8; 32];
    rng.fill_bytes(&mut bytes);
    bytes[0] &= 0x7f;
    let fake = KeyPackage::<C>::new(
        *kp.identifier(),
        SigningShare::deserialize(&bytes).expect("scalar"),
        *kp.verifying_share(),
        *kp.verifying_key(),
        *kp.min_signers(),
    );
    KeyShare::from_frost(
        real.public.key_id,
        real.public.members.clone(),
        real.index,
        &fake,
        &pkp,
    )
    .expect("share")
}

#[test]
fn dealer_dealing_anything_but_its_share_is_named() {
    let (ids, shares, mut rng) = setup(4, 3, Ciphersuite::Secp256k1, 5);
    let committee = local::committee_of(&ids).expect("committee");
    let cfg = config(&shares[0], &ids, &committee, 3);
    let fake = forged_share(&shares[2], &mut rng);
    assert_eq!(fake.public, shares[2].public);
    let mut net = refresh_net(&ids, &shares, &cfg, Some((2, fake)), &mut rng);
    net.run_clean(&mut rng);
    let errors = fatal(&net);
    assert!(!errors.is_empty());
    for (_, e) in &errors {
        assert_eq!(
            *e,
            ProtocolError::Aborted {
                culprits: vec![ids[2].node_id()],
                fault: Fault::UnboundReshare
            }
        );
    }
    assert!(net.new_shares.is_empty(), "nobody derived a share");
}

#[test]
fn sub_share_off_the_commitment_names_the_dealer() {
    let (ids, shares, mut rng) = setup(4, 3, Ciphersuite::Ed25519, 6);
    let committee = local::committee_of(&ids).expect("committee");
    let cfg = config(&shares[0], &ids, &committee, 3);
    let mut net = refresh_net(&ids, &shares, &cfg, None, &mut rng);
    let cheat = ids[1].clone();
    let victim = ids[3].public();
    let mut brng = common::rng(77);
    let cfg2 = cfg.clone();
    net.run(&mut rng, &mut |to, env| {
        if env.sender == cheat.node_id() && env.round == Round::ReshareShare && *to == victim.node {
            // The dealer itself seals a wrong value (validly signed): a scalar of 1.
            let mut one = [0u8; 32];
            one[0] = 1;
            let sealed = seal::seal(
                &mut brng,
                &victim.seal_key,
                &share_aad(&cfg2, &cheat.node_id(), &victim.node),
                &one,
            )
            .expect("seal");
            let Payload::ReshareShare { params, .. } = env.payload else {
                unreachable!()
            };
            vec![Envelope::seal(
                &cheat,
                env.suite,
                env.key,
                env.session,
                Payload::ReshareShare {
                    params,
                    recipient: victim.node,
                    sealed,
                },
            )]
        } else {
            vec![env]
        }
    });
    assert_eq!(
        fatal(&net),
        vec![(
            victim.node,
            ProtocolError::Aborted {
                culprits: vec![cheat.node_id()],
                fault: Fault::InvalidSecretShare
            }
        )]
    );
    assert!(!net.new_shares.contains_key(&victim.node));
}

#[test]
fn dealer_sending_two_commitments_is_caught_by_the_echo() {
    let (ids, shares, mut rng) = setup(4, 2, Ciphersuite::Secp256k1, 7);
    let committee = local::committee_of(&ids).expect("committee");
    let cfg = config(&shares[0], &ids, &committee, 2);
    let mut net = refresh_net(&ids, &shares, &cfg, None, &mut rng);
    let cheat = ids[0].clone();
    let victim = ids[2].node_id();
    net.run(&mut rng, &mut |to, env| {
        if env.sender == cheat.node_id() && env.round == Round::ReshareCommit && *to == victim {
            // Same constant term (it passes the binding check), another slope.
            let Payload::ReshareCommit { params, commitment } = env.payload else {
                unreachable!()
            };
            let mut other = commitment.clone();
            other[1] = commitment[0].clone();
            vec![Envelope::seal(
                &cheat,
                env.suite,
                env.key,
                env.session,
                Payload::ReshareCommit {
                    params,
                    commitment: other,
                },
            )]
        } else {
            vec![env]
        }
    });
    let errors = fatal(&net);
    assert!(!errors.is_empty());
    for (_, e) in &errors {
        assert_eq!(
            *e,
            ProtocolError::Equivocation {
                culprit: cheat.node_id(),
                round: Round::ReshareCommit
            }
        );
    }
    assert!(net.new_shares.is_empty(), "no share before the echo passed");
}

#[test]
fn too_few_dealers_or_outsiders_are_refused_at_start() {
    let (ids, shares, mut rng) = setup(5, 3, Ciphersuite::Secp256k1, 8);
    let committee = local::committee_of(&ids).expect("committee");
    let two = config(&shares[0], &ids[..2], &committee, 3);
    assert!(matches!(
        Reshare::new(ids[0].clone(), two, Some(&shares[0])),
        Err(ProtocolError::InvalidParameters(_))
    ));
    let cfg = config(&shares[0], &ids[..3], &committee, 3);
    let outsider = Arc::new(NodeIdentity::generate(&mut rng));
    assert!(Reshare::new(outsider, cfg.clone(), None).is_err());
    // A dealer must bring its share, of this generation.
    assert!(Reshare::new(ids[0].clone(), cfg.clone(), None).is_err());
    let (_, other_key, _) = setup(5, 3, Ciphersuite::Secp256k1, 9);
    assert!(Reshare::new(ids[0].clone(), cfg.clone(), Some(&other_key[0])).is_err());
    let mut low = cfg;
    low.threshold = 1;
    assert!(Reshare::new(ids[0].clone(), low, Some(&shares[0])).is_err());
}

#[test]
fn finish_proof_is_every_members_confirmation_of_this_run() {
    let (ids, shares, mut rng) = setup(3, 2, Ciphersuite::Ed25519, 10);
    let committee = local::committee_of(&ids).expect("committee");
    let cfg = config(&shares[0], &ids, &committee, 2);
    let mut net = refresh_net(&ids, &shares, &cfg, None, &mut rng);
    // What reaches the coordinator (not a party here): the dealers' commitments.
    let mut commits = std::collections::BTreeMap::new();
    net.run(&mut rng, &mut |to, env| {
        if *to == cfg.coordinator {
            if let Payload::ReshareCommit { commitment, .. } = &env.payload {
                commits.insert(env.sender, commitment.clone());
            }
        }
        vec![env]
    });
    assert!(fatal(&net).is_empty());
    assert_eq!(commits.len(), 3, "every dealer tells the coordinator");
    let Some(Outcome::Reshare(ReshareEvent::Finished {
        transcript,
        confirms,
    })) = net.outcomes.get(&ids[0].node_id())
    else {
        panic!("finished")
    };
    let bytes: Vec<Vec<u8>> = confirms.iter().map(Envelope::encode).collect();
    // The coordinator's package, from the commitments, is what members derived.
    let package = public_package(&cfg, &commits).expect("package");
    assert_eq!(
        package,
        net.new_shares[&ids[0].node_id()].public.public_key_package
    );
    assert_eq!(
        verify_finish(&cfg, &package, &bytes).expect("proof"),
        *transcript
    );
    // One missing, from another run, out of order, or another package: refused.
    assert!(verify_finish(&cfg, &package, &bytes[1..]).is_err());
    let mut other = cfg.clone();
    other.session = SessionId([8; 32]);
    assert!(verify_finish(&other, &package, &bytes).is_err());
    let mut swapped = bytes.clone();
    swapped.swap(0, 1);
    assert!(verify_finish(&cfg, &package, &swapped).is_err());
    assert!(verify_finish(&cfg, &shares[0].public.public_key_package, &bytes).is_err());
    // A dealer's commitment that is not bound to its old share is named.
    let mut bad = commits.clone();
    let first = *bad.keys().next().expect("dealer");
    let second = bad.values().nth(1).expect("other").clone();
    bad.insert(first, second);
    assert!(matches!(
        public_package(&cfg, &bad),
        Err(ProtocolError::Aborted { culprits, fault: Fault::UnboundReshare }) if culprits == vec![first]
    ));
}

fn operation(committee: Vec<NodeId>, threshold: u16) -> Operation {
    let mut committee = committee;
    committee.sort();
    Operation {
        key_id: quorate_protocol::KeyId([1; 16]),
        kind: OperationKind::Reshare,
        from_generation: 0,
        group_key: vec![2; 33],
        committee,
        threshold,
        segments: vec!["eu".into()],
        expires_at: 1_000,
        nonce: [3; 16],
        target: None,
    }
}

#[test]
fn operation_needs_a_quorum_of_this_nodes_approvers() {
    let mut r = rng(11);
    let keys: Vec<ed25519_dalek::SigningKey> = (0..3)
        .map(|_| ed25519_dalek::SigningKey::generate(&mut r))
        .collect();
    let allowed: Vec<[u8; 32]> = keys.iter().map(|k| k.verifying_key().to_bytes()).collect();
    let nodes: Vec<NodeId> = local::identities(4, &mut r)
        .iter()
        .map(|i| i.node_id())
        .collect();
    let op = operation(nodes.clone(), 3);
    let one = ApprovedOperation {
        approvals: vec![op.approve(&keys[0])],
        operation: op.clone(),
    };
    assert!(one.verify(&allowed, 2, 10).is_err(), "one of two");
    let twice = ApprovedOperation {
        approvals: vec![op.approve(&keys[0]), op.approve(&keys[0])],
        operation: op.clone(),
    };
    assert!(twice.verify(&allowed, 2, 10).is_err(), "one approver twice");
    let two = ApprovedOperation {
        approvals: vec![op.approve(&keys[0]), op.approve(&keys[2])],
        operation: op.clone(),
    };
    two.verify(&allowed, 2, 10).expect("two of three");
    assert!(two.verify(&allowed, 2, 1_000).is_err(), "expired");
    let mut forever = two.clone();
    forever.operation.expires_at = u64::MAX;
    forever.approvals = vec![
        forever.operation.approve(&keys[0]),
        forever.operation.approve(&keys[2]),
    ];
    assert!(
        forever.verify(&allowed, 2, 10).is_err(),
        "lifetime over 30 days"
    );
    assert!(
        two.verify(&allowed[..1], 2, 10).is_err(),
        "not this node's approvers"
    );
    assert!(
        two.verify(&allowed, 0, 10).is_err(),
        "no approvers configured"
    );
    // The coordinator cannot lower the threshold or change the committee.
    let mut lowered = two.clone();
    lowered.operation.threshold = 2;
    assert!(lowered.verify(&allowed, 2, 10).is_err());
    let mut elsewhere = two.clone();
    elsewhere.operation.segments = vec![];
    assert!(
        elsewhere.verify(&allowed, 2, 10).is_err(),
        "residency is approved too"
    );
    let mut moved = two.clone();
    moved.operation.committee[0] = NodeId([0xee; 32]);
    moved.operation.committee.sort();
    assert!(moved.verify(&allowed, 2, 10).is_err());
    let decoded = ApprovedOperation::decode(&two.encode()).expect("decode");
    assert_eq!(decoded, two);
    let mut long = two.encode();
    long.push(0);
    assert!(ApprovedOperation::decode(&long).is_err());
    assert!(
        operation(nodes, 5).validate().is_err(),
        "threshold above size"
    );
}
