//! Share repair: a member that lost its share gets the same share back from t
//! helpers, checked against its verifying share; a lying helper makes the repair
//! fail rather than hand out a wrong share.

mod common;

use std::sync::Arc;

use common::{message, setup, verify_independently};
use quorate_protocol::{
    lifecycle::{Repair, RepairConfig, RepairEvent},
    local::{self, Net, Outcome, Party},
    seal, Ciphersuite, Committee, Envelope, Fault, Input, KeyShare, Member, NodeIdentity, Payload,
    ProtocolError, Round, SessionId, SignTarget,
};

fn member(id: &Arc<NodeIdentity>, index: u16) -> Member {
    let p = id.public();
    Member {
        node: p.node,
        index,
        seal_key: p.seal_key,
    }
}

/// Repair of member 2 (index 2) of a 3-of-5 key by members 3, 4, 5.
fn repair_net(
    ids: &[Arc<NodeIdentity>],
    shares: &[KeyShare],
    rng: &mut rand_chacha::ChaCha20Rng,
) -> (Net, RepairConfig) {
    let helpers =
        Committee::new((2..5).map(|i| member(&ids[i], i as u16 + 1)).collect()).expect("helpers");
    let config = RepairConfig {
        suite: shares[0].public.suite,
        key_id: shares[0].public.key_id,
        session: SessionId([5; 32]),
        public: shares[0].public.clone(),
        helpers,
        target: member(&ids[1], 2),
        timeout_ms: 60_000,
        coordinator: quorate_protocol::NodeId([0; 32]),
    };
    let mut net = Net::new();
    for i in 1..5 {
        let share = (i != 1).then(|| &shares[i]);
        let m = Repair::new(ids[i].clone(), config.clone(), share).expect("machine");
        net.add(ids[i].node_id(), Party::Repair(m));
    }
    for id in &ids[1..5] {
        net.input(id.node_id(), Input::Start, rng);
    }
    (net, config)
}

fn repair_restores_the_lost_share(suite: Ciphersuite, seed: u64) {
    let (ids, shares, mut rng) = setup(5, 3, suite, seed);
    let (mut net, _) = repair_net(&ids, &shares, &mut rng);
    net.run_clean(&mut rng);
    assert!(
        net.errors.iter().all(|(_, e)| !e.is_fatal()),
        "{:?}",
        net.errors
    );
    let Some(Outcome::Repair(RepairEvent::Repaired(repaired))) =
        net.outcomes.get(&ids[1].node_id())
    else {
        panic!("the target repaired its share: {:?}", net.outcomes.keys())
    };
    assert_eq!(
        repaired.public, shares[1].public,
        "same generation, same public data"
    );
    assert_eq!(repaired.index, 2);
    // The repaired share signs with two others under the group key.
    let coordinator = Arc::new(NodeIdentity::generate(&mut rng));
    let signers = vec![
        (ids[0].clone(), shares[0].clone()),
        (ids[1].clone(), repaired.clone()),
        (ids[3].clone(), shares[3].clone()),
    ];
    let msg = message("repaired");
    let sig = local::run_signing(
        &coordinator,
        signers,
        SignTarget {
            message: msg.clone(),
            tweak: None,
        },
        &mut rng,
    )
    .expect("the repaired share signs");
    verify_independently(&sig, &msg).expect("verifies");
}

#[test]
fn repair_restores_the_lost_share_secp256k1() {
    repair_restores_the_lost_share(Ciphersuite::Secp256k1, 21);
}

#[test]
fn repair_restores_the_lost_share_secp256k1_tr() {
    repair_restores_the_lost_share(Ciphersuite::Secp256k1Tr, 22);
}

#[test]
fn repair_restores_the_lost_share_ed25519() {
    repair_restores_the_lost_share(Ciphersuite::Ed25519, 23);
}

#[test]
fn a_helper_sending_a_wrong_sigma_fails_the_repair_instead_of_a_wrong_share() {
    let (ids, shares, mut rng) = setup(5, 3, Ciphersuite::Secp256k1, 24);
    let (mut net, config) = repair_net(&ids, &shares, &mut rng);
    let cheat = ids[3].clone();
    let target = ids[1].public();
    let mut brng = common::rng(99);
    net.run(&mut rng, &mut |to, env| {
        if env.sender == cheat.node_id() && env.round == Round::RepairSigma && *to == target.node {
            let Payload::RepairSigma { params, .. } = env.payload else {
                unreachable!()
            };
            let mut aad = b"quorate/repair-sigma/v1".to_vec();
            aad.extend_from_slice(config.suite.name().as_bytes());
            aad.extend_from_slice(config.key_id.as_bytes());
            aad.extend_from_slice(config.session.as_bytes());
            aad.extend_from_slice(cheat.node_id().as_bytes());
            aad.extend_from_slice(target.node.as_bytes());
            let mut one = [0u8; 32];
            one[31] = 1;
            let sealed = seal::seal(&mut brng, &target.seal_key, &aad, &one).expect("seal");
            vec![Envelope::seal(
                &cheat,
                env.suite,
                env.key,
                env.session,
                Payload::RepairSigma {
                    params,
                    recipient: target.node,
                    sealed,
                },
            )]
        } else {
            vec![env]
        }
    });
    let fatal: Vec<_> = net.errors.iter().filter(|(_, e)| e.is_fatal()).collect();
    assert_eq!(fatal.len(), 1, "{:?}", net.errors);
    assert_eq!(fatal[0].0, target.node);
    assert!(matches!(
        &fatal[0].1,
        ProtocolError::Aborted { fault: Fault::InvalidSecretShare, culprits } if culprits.len() == 3
    ));
    assert!(!matches!(
        net.outcomes.get(&target.node),
        Some(Outcome::Repair(RepairEvent::Repaired(_)))
    ));
}

#[test]
fn repair_parameters_are_checked() {
    let (ids, shares, mut rng) = setup(5, 3, Ciphersuite::Ed25519, 25);
    let (_, config) = repair_net(&ids, &shares, &mut rng);
    // Too few helpers.
    let mut few = config.clone();
    few.helpers =
        Committee::new((3..5).map(|i| member(&ids[i], i as u16 + 1)).collect()).expect("two");
    assert!(Repair::new(ids[3].clone(), few, Some(&shares[3])).is_err());
    // The target as a helper, or under another index.
    let mut wrong = config.clone();
    wrong.target = member(&ids[1], 4);
    assert!(Repair::new(ids[1].clone(), wrong, None).is_err());
    // A helper without its share, an outsider.
    assert!(Repair::new(ids[2].clone(), config.clone(), None).is_err());
    assert!(Repair::new(ids[0].clone(), config, Some(&shares[0])).is_err());
}
