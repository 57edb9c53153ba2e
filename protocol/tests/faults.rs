//! Negative tests: one per bad input or fault of DESIGN.md section 1. Each asserts
//! the exact typed error and, for peer faults, the exact culprit.

mod common;

use std::sync::Arc;

use common::{message, rng, setup};
use quorate_protocol::{
    aggregate::AggregatorConfig,
    byzantine,
    dkg::DkgConfig,
    local::{self, Net, Outcome, Party},
    wire::{MAX_MESSAGE_SIZE, PROTOCOL_VERSION},
    Aggregator, Ciphersuite, Committee, Dkg, Envelope, Fault, Input, KeyId, Member, NodeId,
    NodeIdentity, Payload, ProtocolError, Round, SessionId, SignTarget, TimerId, Timestamp,
};
use rand_chacha::ChaCha20Rng;

const KEY: KeyId = KeyId([9; 16]);
const SESSION: SessionId = SessionId([4; 32]);

fn dkg_net(ids: &[Arc<NodeIdentity>], suite: Ciphersuite, t: u16, rng: &mut ChaCha20Rng) -> Net {
    let committee = local::committee_of(ids).expect("committee");
    let mut net = Net::new();
    for id in ids {
        let config = DkgConfig {
            suite,
            key_id: KEY,
            session: SESSION,
            threshold: t,
            committee: committee.clone(),
            timeout_ms: 1_000,
            coordinator: quorate_protocol::NodeId([0; 32]),
            start: None,
        };
        net.add(
            id.node_id(),
            Party::Dkg(Dkg::new(id.clone(), config).expect("dkg")),
        );
    }
    for id in ids {
        net.input(id.node_id(), Input::Start, rng);
    }
    net
}

fn fatal_errors(net: &Net) -> Vec<(NodeId, ProtocolError)> {
    net.errors
        .iter()
        .filter(|(_, e)| e.is_fatal())
        .cloned()
        .collect()
}

fn assert_nobody_finished_dkg(net: &Net) {
    assert!(
        !net.outcomes.values().any(|o| matches!(o, Outcome::Key(_))),
        "no participant may finish a DKG with a faulty peer"
    );
}

// ---------------------------------------------------------------- DKG faults

#[test]
fn dkg_round1_equivocation_is_caught_by_echo_and_names_sender() {
    let mut rng = rng(1);
    let ids = local::identities(4, &mut rng);
    let mut net = dkg_net(&ids, Ciphersuite::Ed25519, 3, &mut rng);
    let (liar, victim) = (ids[0].clone(), ids[1].node_id());
    let mut brng = common::rng(99);
    net.run(&mut rng, &mut |to, env| {
        if env.sender == liar.node_id() && env.round == Round::DkgRound1 && *to == victim {
            vec![byzantine::equivocate_round1(&liar, &env, 1, 3, 4, &mut brng).expect("forge")]
        } else {
            vec![env]
        }
    });
    let fatal = fatal_errors(&net);
    assert!(!fatal.is_empty());
    for (node, e) in &fatal {
        assert_eq!(
            e,
            &ProtocolError::Equivocation {
                culprit: liar.node_id(),
                round: Round::DkgRound1
            },
            "node {node:?}"
        );
    }
    assert_nobody_finished_dkg(&net);
}

#[test]
fn conflicting_duplicate_is_equivocation_but_identical_duplicate_is_ignored() {
    let mut rng = rng(2);
    let ids = local::identities(3, &mut rng);
    let mut net = dkg_net(&ids, Ciphersuite::Ed25519, 2, &mut rng);
    // Every message delivered twice: the run still completes, without errors.
    net.run(&mut rng, &mut |_, env| vec![env.clone(), env]);
    assert!(net.errors.is_empty(), "{:?}", net.errors);
    assert_eq!(net.outcomes.len(), 3);

    // A different second message for the same (session, round, sender) is equivocation.
    let mut rng = common::rng(3);
    let ids = local::identities(3, &mut rng);
    let mut net = dkg_net(&ids, Ciphersuite::Ed25519, 2, &mut rng);
    let liar = ids[2].clone();
    let mut brng = common::rng(98);
    net.run(&mut rng, &mut |_, env| {
        if env.sender == liar.node_id() && env.round == Round::DkgRound1 {
            let other =
                byzantine::equivocate_round1(&liar, &env, 3, 2, 3, &mut brng).expect("forge");
            vec![env, other]
        } else {
            vec![env]
        }
    });
    let fatal = fatal_errors(&net);
    assert!(fatal.iter().any(|(_, e)| *e
        == ProtocolError::Equivocation {
            culprit: liar.node_id(),
            round: Round::DkgRound1
        }));
    assert_nobody_finished_dkg(&net);
}

#[test]
fn duplicate_delivery_is_counted_and_produces_nothing() {
    let mut rng = rng(4);
    let ids = local::identities(3, &mut rng);
    let committee = local::committee_of(&ids).expect("committee");
    let config = |_: usize| DkgConfig {
        suite: Ciphersuite::Secp256k1,
        key_id: KEY,
        session: SESSION,
        threshold: 2,
        committee: committee.clone(),
        timeout_ms: 1_000,
        coordinator: quorate_protocol::NodeId([0; 32]),
        start: None,
    };
    let mut a = Dkg::new(ids[0].clone(), config(0)).expect("dkg");
    let mut b = Dkg::new(ids[1].clone(), config(1)).expect("dkg");
    let out = a
        .handle(Timestamp(0), Input::Start, &mut rng)
        .expect("start");
    let to_b = out
        .into_iter()
        .find_map(|o| match o {
            quorate_protocol::Output::Send { to, msg } if to == ids[1].node_id() => Some(msg),
            _ => None,
        })
        .expect("round 1 to b");
    b.handle(Timestamp(0), Input::Message(to_b.clone()), &mut rng)
        .expect("first");
    let again = b
        .handle(Timestamp(0), Input::Message(to_b), &mut rng)
        .expect("duplicate is not an error");
    assert!(again.is_empty());
    assert_eq!(b.stats().duplicates, 1);
    assert_eq!(b.stats().accepted, 1);
}

#[test]
fn corrupted_round2_share_names_sender() {
    let mut rng = rng(5);
    let ids = local::identities(4, &mut rng);
    let mut net = dkg_net(&ids, Ciphersuite::Secp256k1, 3, &mut rng);
    let cheat = ids[3].clone();
    let victim = ids[0].public();
    let mut brng = common::rng(97);
    net.run(&mut rng, &mut |to, env| {
        if env.sender == cheat.node_id() && env.round == Round::DkgRound2 && *to == victim.node {
            vec![
                byzantine::corrupt_round2_share(&cheat, &env, &victim.seal_key, &mut brng)
                    .expect("forge"),
            ]
        } else {
            vec![env]
        }
    });
    let fatal = fatal_errors(&net);
    assert_eq!(
        fatal,
        vec![(
            victim.node,
            ProtocolError::Aborted {
                culprits: vec![cheat.node_id()],
                fault: Fault::InvalidSecretShare
            }
        )]
    );
}

#[test]
fn undecryptable_round2_share_names_sender() {
    let mut rng = rng(6);
    let ids = local::identities(3, &mut rng);
    let mut net = dkg_net(&ids, Ciphersuite::Ed25519, 2, &mut rng);
    let cheat = ids[1].clone();
    net.run(&mut rng, &mut |_, env| {
        if env.sender == cheat.node_id() {
            if let Payload::DkgRound2 {
                params,
                recipient,
                sealed,
            } = &env.payload
            {
                let mut sealed = sealed.clone();
                sealed.ciphertext[0] ^= 0x80;
                let payload = Payload::DkgRound2 {
                    params: *params,
                    recipient: *recipient,
                    sealed,
                };
                return vec![byzantine::forge(&cheat, &env, payload)];
            }
        }
        vec![env]
    });
    let fatal = fatal_errors(&net);
    assert_eq!(fatal.len(), 2, "both recipients detect it: {fatal:?}");
    for (_, e) in fatal {
        assert_eq!(
            e,
            ProtocolError::Aborted {
                culprits: vec![cheat.node_id()],
                fault: Fault::UndecryptablePayload
            }
        );
    }
}

#[test]
fn bad_proof_of_knowledge_names_sender() {
    let mut rng = rng(7);
    let ids = local::identities(4, &mut rng);
    let mut net = dkg_net(&ids, Ciphersuite::Secp256k1Tr, 2, &mut rng);
    let cheat = ids[2].clone();
    let mut forged: Option<Envelope> = None;
    let mut brng = common::rng(96);
    net.run(&mut rng, &mut |_, env| {
        if env.sender != cheat.node_id() {
            return vec![env];
        }
        match &env.payload {
            // The same bad package to everyone, so the echo round agrees...
            Payload::DkgRound1 { .. } => {
                let f = forged.get_or_insert_with(|| {
                    byzantine::bad_proof_of_knowledge(&cheat, &env, 3, 2, 4, &mut brng)
                        .expect("forge")
                });
                vec![f.clone()]
            }
            // ...and the cheat's own echo row reports the bad package too.
            Payload::DkgEcho { params, entries } => {
                let params = *params;
                let f = forged.as_ref().expect("round 1 came first");
                let mut entries = entries.clone();
                let row = entries
                    .iter_mut()
                    .find(|e| e.sender == cheat.node_id())
                    .expect("own row");
                row.payload_hash = f.payload_hash();
                row.signature = f.signature;
                vec![byzantine::forge(
                    &cheat,
                    &env,
                    Payload::DkgEcho { params, entries },
                )]
            }
            _ => vec![env],
        }
    });
    let honest: Vec<_> = fatal_errors(&net)
        .into_iter()
        .filter(|(n, _)| *n != cheat.node_id())
        .collect();
    assert_eq!(honest.len(), 3, "{honest:?}");
    for (_, e) in honest {
        assert_eq!(
            e,
            ProtocolError::Aborted {
                culprits: vec![cheat.node_id()],
                fault: Fault::InvalidProofOfKnowledge
            }
        );
    }
    assert_nobody_finished_dkg(&net);
}

#[test]
fn forged_echo_entry_names_the_echoer() {
    let mut rng = rng(8);
    let ids = local::identities(3, &mut rng);
    let mut net = dkg_net(&ids, Ciphersuite::Ed25519, 2, &mut rng);
    let liar = ids[0].clone();
    net.run(&mut rng, &mut |_, env| {
        if env.sender == liar.node_id() {
            if let Payload::DkgEcho { params, entries } = &env.payload {
                let mut entries = entries.clone();
                entries[1].payload_hash[0] ^= 1; // claims node 2 sent something it never signed
                let params = *params;
                return vec![byzantine::forge(
                    &liar,
                    &env,
                    Payload::DkgEcho { params, entries },
                )];
            }
        }
        vec![env]
    });
    let fatal = fatal_errors(&net);
    assert!(!fatal.is_empty());
    for (_, e) in fatal {
        assert_eq!(
            e,
            ProtocolError::Aborted {
                culprits: vec![liar.node_id()],
                fault: Fault::ForgedEcho
            }
        );
    }
}

#[test]
fn confirmation_of_a_different_group_key_names_the_participant() {
    let mut rng = rng(9);
    let ids = local::identities(3, &mut rng);
    let mut net = dkg_net(&ids, Ciphersuite::Ed25519, 2, &mut rng);
    let liar = ids[1].clone();
    net.run(&mut rng, &mut |_, env| {
        if env.sender == liar.node_id() {
            if let Payload::DkgConfirm {
                params,
                group_key,
                transcript,
            } = &env.payload
            {
                let mut group_key = group_key.clone();
                group_key[5] ^= 1;
                let payload = Payload::DkgConfirm {
                    params: *params,
                    group_key,
                    transcript: *transcript,
                };
                return vec![byzantine::forge(&liar, &env, payload)];
            }
        }
        vec![env]
    });
    let fatal = fatal_errors(&net);
    assert_eq!(fatal.len(), 2);
    for (_, e) in fatal {
        assert_eq!(
            e,
            ProtocolError::Aborted {
                culprits: vec![liar.node_id()],
                fault: Fault::ConfirmationMismatch
            }
        );
    }
}

#[test]
fn wrong_session_is_dropped_and_silent_peer_is_named_at_deadline() {
    let mut rng = rng(10);
    let ids = local::identities(3, &mut rng);
    let mut net = dkg_net(&ids, Ciphersuite::Ed25519, 2, &mut rng);
    let stray = ids[2].clone();
    net.run(&mut rng, &mut |_, env| {
        if env.sender == stray.node_id() {
            // Validly signed, but bound to another session.
            vec![Envelope::seal(
                &stray,
                env.suite,
                env.key,
                SessionId([5; 32]),
                env.payload,
            )]
        } else {
            vec![env]
        }
    });
    assert!(net
        .errors
        .iter()
        .all(|(_, e)| *e == ProtocolError::WrongContext("session id")));
    assert_eq!(net.errors.len(), 4, "two messages to each of two peers");
    assert!(
        fatal_errors(&net).is_empty(),
        "a stray message does not end the session"
    );
    net.input(
        ids[0].node_id(),
        Input::Timeout(TimerId::Deadline),
        &mut rng,
    );
    assert_eq!(
        net.errors.last().map(|(_, e)| e.clone()),
        Some(ProtocolError::Aborted {
            culprits: vec![stray.node_id()],
            fault: Fault::Timeout
        })
    );
}

#[test]
fn wrong_key_and_suite_are_rejected() {
    let mut rng = rng(11);
    let ids = local::identities(3, &mut rng);
    let mut net = dkg_net(&ids, Ciphersuite::Ed25519, 2, &mut rng);
    let stray = ids[2].clone();
    let mut flip = false;
    net.run(&mut rng, &mut |_, env| {
        if env.sender == stray.node_id() && env.round == Round::DkgRound1 {
            flip = !flip;
            if flip {
                vec![Envelope::seal(
                    &stray,
                    env.suite,
                    KeyId([1; 16]),
                    env.session,
                    env.payload,
                )]
            } else {
                vec![Envelope::seal(
                    &stray,
                    Ciphersuite::Secp256k1,
                    env.key,
                    env.session,
                    env.payload,
                )]
            }
        } else {
            vec![env]
        }
    });
    let errs: Vec<_> = net.errors.iter().map(|(_, e)| e.clone()).collect();
    assert!(errs.contains(&ProtocolError::WrongContext("key id")));
    assert!(errs.contains(&ProtocolError::WrongContext("ciphersuite")));
}

#[test]
fn wrong_round_is_rejected() {
    let mut rng = rng(12);
    let ids = local::identities(3, &mut rng);
    let committee = local::committee_of(&ids).expect("committee");
    let mut dkg = Dkg::new(
        ids[0].clone(),
        DkgConfig {
            suite: Ciphersuite::Ed25519,
            key_id: KEY,
            session: SESSION,
            threshold: 2,
            committee,
            timeout_ms: 1,
            coordinator: quorate_protocol::NodeId([0; 32]),
            start: None,
        },
    )
    .expect("dkg");
    // A signing-round message inside a DKG session.
    let share = Envelope::seal(
        &ids[1],
        Ciphersuite::Ed25519,
        KEY,
        SESSION,
        Payload::SignShare { share: vec![1; 32] },
    );
    assert_eq!(
        dkg.handle(Timestamp(0), Input::Message(share), &mut rng)
            .expect_err("rejected"),
        ProtocolError::UnexpectedRound {
            got: Round::SignShare
        }
    );
    // A round field that disagrees with the payload.
    let mut env = Envelope::seal(
        &ids[1],
        Ciphersuite::Ed25519,
        KEY,
        SESSION,
        Payload::DkgRound1 {
            params: [0; 32],
            start: Vec::new(),
            package: vec![],
        },
    );
    env.round = Round::DkgEcho;
    assert_eq!(
        dkg.handle(Timestamp(0), Input::Message(env.clone()), &mut rng)
            .expect_err("rejected"),
        ProtocolError::Malformed("round does not match payload")
    );
    assert_eq!(
        Envelope::decode(&env.encode()).expect_err("rejected"),
        ProtocolError::Malformed("round does not match payload")
    );
}

#[test]
fn spoofed_sender_is_rejected() {
    let mut rng = rng(13);
    let ids = local::identities(3, &mut rng);
    let mut net = dkg_net(&ids, Ciphersuite::Ed25519, 2, &mut rng);
    let (impostor, victim) = (ids[1].clone(), ids[2].node_id());
    net.run(&mut rng, &mut |_, env| {
        if env.sender == victim && env.round == Round::DkgRound1 {
            // Signed by the impostor, claiming to be the victim.
            let mut forged = Envelope::seal(
                &impostor,
                env.suite,
                env.key,
                env.session,
                env.payload.clone(),
            );
            forged.sender = victim;
            vec![forged]
        } else {
            vec![env]
        }
    });
    assert!(!net.errors.is_empty());
    assert!(net
        .errors
        .iter()
        .all(|(_, e)| *e == ProtocolError::BadSignature { claimed: victim }));
    // The transport-level check catches the same thing before any crypto.
    let env = Envelope::seal(
        &impostor,
        Ciphersuite::Ed25519,
        KEY,
        SESSION,
        Payload::DkgRound1 {
            params: [0; 32],
            start: Vec::new(),
            package: vec![],
        },
    );
    assert_eq!(
        env.check_sender(&victim),
        Err(ProtocolError::SenderMismatch {
            authenticated: victim,
            claimed: impostor.node_id()
        })
    );
    assert_eq!(env.check_sender(&impostor.node_id()), Ok(()));
}

#[test]
fn unknown_sender_is_rejected() {
    let mut rng = rng(14);
    let ids = local::identities(3, &mut rng);
    let outsider = NodeIdentity::generate(&mut rng);
    let committee = local::committee_of(&ids).expect("committee");
    let mut dkg = Dkg::new(
        ids[0].clone(),
        DkgConfig {
            suite: Ciphersuite::Ed25519,
            key_id: KEY,
            session: SESSION,
            threshold: 2,
            committee,
            timeout_ms: 1,
            coordinator: quorate_protocol::NodeId([0; 32]),
            start: None,
        },
    )
    .expect("dkg");
    let env = Envelope::seal(
        &outsider,
        Ciphersuite::Ed25519,
        KEY,
        SESSION,
        Payload::DkgRound1 {
            params: [0; 32],
            start: Vec::new(),
            package: vec![],
        },
    );
    assert_eq!(
        dkg.handle(Timestamp(0), Input::Message(env), &mut rng)
            .expect_err("rejected"),
        ProtocolError::UnknownSender(outsider.node_id())
    );
    assert_eq!(dkg.stats().rejected, 1);
}

#[test]
fn round2_share_addressed_to_another_node_is_rejected() {
    let mut rng = rng(15);
    let ids = local::identities(3, &mut rng);
    let mut net = dkg_net(&ids, Ciphersuite::Ed25519, 2, &mut rng);
    let target = ids[2].node_id();
    let mut redirected = Vec::new();
    net.run(&mut rng, &mut |to, env| {
        if let Payload::DkgRound2 { recipient, .. } = &env.payload {
            if *recipient == target && env.sender != ids[1].node_id() {
                redirected.push(env.clone()); // also show it to node 1
            }
        }
        let _ = to;
        vec![env]
    });
    let mut dkg = Dkg::new(
        ids[1].clone(),
        DkgConfig {
            suite: Ciphersuite::Ed25519,
            key_id: KEY,
            session: SESSION,
            threshold: 2,
            committee: local::committee_of(&ids).expect("committee"),
            timeout_ms: 1,
            coordinator: quorate_protocol::NodeId([0; 32]),
            start: None,
        },
    )
    .expect("dkg");
    let env = redirected.pop().expect("a share for node 2");
    assert_eq!(
        dkg.handle(Timestamp(0), Input::Message(env), &mut rng)
            .expect_err("rejected"),
        ProtocolError::WrongContext("round-2 share for another node")
    );
}

// ------------------------------------------------------------ element validation

/// Encodings that must never be accepted as group elements: the identity and a
/// non-canonical (out-of-field) encoding, per suite.
fn bad_elements(suite: Ciphersuite) -> Vec<Vec<u8>> {
    match suite {
        Ciphersuite::Ed25519 => {
            let mut identity = vec![0u8; 32];
            identity[0] = 1;
            // y = p (2^255 - 19) is a non-canonical encoding of y = 0.
            let mut non_canonical = vec![0xffu8; 32];
            non_canonical[0] = 0xed;
            non_canonical[31] = 0x7f;
            vec![identity, non_canonical]
        }
        _ => {
            let identity = vec![0u8; 33];
            let mut non_canonical = vec![0xffu8; 33]; // x >= p
            non_canonical[0] = 0x02;
            vec![identity, non_canonical]
        }
    }
}

fn element_len(suite: Ciphersuite) -> usize {
    if suite == Ciphersuite::Ed25519 {
        32
    } else {
        33
    }
}

#[test]
fn identity_and_non_canonical_elements_in_dkg_are_rejected_with_culprit() {
    for suite in Ciphersuite::ALL {
        for bad in bad_elements(suite) {
            let mut rng = rng(16);
            let ids = local::identities(3, &mut rng);
            let mut net = dkg_net(&ids, suite, 2, &mut rng);
            let cheat = ids[0].clone();
            let len = element_len(suite);
            net.run(&mut rng, &mut |_, env| {
                if env.sender == cheat.node_id() {
                    if let Payload::DkgRound1 {
                        params,
                        start,
                        package,
                    } = &env.payload
                    {
                        // Replace the second coefficient commitment with the bad encoding.
                        let mut p = package.clone();
                        let pos = commitment_position(suite, &p);
                        p[pos..pos + len].copy_from_slice(&bad);
                        return vec![byzantine::forge(
                            &cheat,
                            &env,
                            Payload::DkgRound1 {
                                params: *params,
                                start: start.clone(),
                                package: p,
                            },
                        )];
                    }
                }
                vec![env]
            });
            let fatal = fatal_errors(&net);
            assert_eq!(fatal.len(), 2, "{suite}: {fatal:?}");
            for (_, e) in fatal {
                assert_eq!(
                    e,
                    ProtocolError::Aborted {
                        culprits: vec![cheat.node_id()],
                        fault: Fault::InvalidElement
                    },
                    "{suite}"
                );
            }
        }
    }
}

/// Position of `needle` in `haystack` (exactly once).
fn position(haystack: &[u8], needle: &[u8]) -> usize {
    let hits: Vec<usize> = haystack
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(hits.len(), 1, "element occurs exactly once");
    hits[0]
}

/// Where the second coefficient commitment of a round-1 package is encoded.
fn commitment_position(suite: Ciphersuite, package: &[u8]) -> usize {
    quorate_protocol::dispatch!(suite, C => {
        let p = frost_core::keys::dkg::round1::Package::<C>::deserialize(package).expect("package");
        let elements = p.commitment().serialize().expect("ser");
        position(package, &elements[1])
    })
}

/// Where the hiding nonce commitment is encoded.
fn hiding_position(suite: Ciphersuite, commitments: &[u8]) -> usize {
    quorate_protocol::dispatch!(suite, C => {
        let c = frost_core::round1::SigningCommitments::<C>::deserialize(commitments).expect("commitments");
        position(commitments, &c.hiding().serialize().expect("ser"))
    })
}

#[test]
fn identity_and_non_canonical_nonce_commitments_are_rejected_with_culprit() {
    for suite in Ciphersuite::ALL {
        for bad in bad_elements(suite) {
            let (ids, shares, mut rng) = setup(3, 2, suite, 17);
            let coordinator = Arc::new(NodeIdentity::generate(&mut rng));
            let cheat = ids[1].clone();
            let len = element_len(suite);
            let mut net = signing_net(&coordinator, &ids, &shares, b"m".to_vec(), &mut rng);
            net.run(&mut rng, &mut |_, env| {
                if env.sender == cheat.node_id() {
                    if let Payload::SignCommit { commitments } = &env.payload {
                        let mut c = commitments.clone();
                        let pos = hiding_position(suite, &c);
                        c[pos..pos + len].copy_from_slice(&bad);
                        return vec![byzantine::forge(
                            &cheat,
                            &env,
                            Payload::SignCommit { commitments: c },
                        )];
                    }
                }
                vec![env]
            });
            assert_eq!(
                fatal_errors(&net),
                vec![(
                    coordinator.node_id(),
                    ProtocolError::Aborted {
                        culprits: vec![cheat.node_id()],
                        fault: Fault::InvalidElement
                    }
                )],
                "{suite}"
            );
        }
    }
}

#[test]
fn zero_and_duplicate_identifiers_are_rejected() {
    let mut rng = rng(18);
    let ids = local::identities(3, &mut rng);
    let member = |i: usize, index: u16| {
        let p = ids[i].public();
        Member {
            node: p.node,
            index,
            seal_key: p.seal_key,
        }
    };
    let err = Committee::new(vec![member(0, 0), member(1, 1)]).expect_err("zero index");
    assert!(
        matches!(err, ProtocolError::InvalidParameters(ref m) if m.contains("index 0")),
        "{err}"
    );
    let err = Committee::new(vec![member(0, 1), member(1, 1)]).expect_err("duplicate index");
    assert!(
        matches!(err, ProtocolError::InvalidParameters(ref m) if m.contains("used twice")),
        "{err}"
    );
    let err = Committee::new(vec![member(0, 1), member(0, 2)]).expect_err("duplicate node");
    assert!(
        matches!(err, ProtocolError::InvalidParameters(ref m) if m.contains("appears twice")),
        "{err}"
    );
    let mut weak = member(2, 3);
    weak.node = NodeId([0; 32]);
    weak.node.0[0] = 1; // the Ed25519 identity point: a weak key
    let err = Committee::new(vec![member(0, 1), weak]).expect_err("weak node key");
    assert!(
        matches!(err, ProtocolError::InvalidParameters(ref m) if m.contains("Ed25519")),
        "{err}"
    );
    Committee::new(vec![member(0, 7), member(1, 3)]).expect("sparse indices are fine");
}

#[test]
fn threshold_outside_committee_is_rejected() {
    let mut rng = rng(19);
    let ids = local::identities(3, &mut rng);
    for t in [0u16, 1, 4] {
        let config = DkgConfig {
            suite: Ciphersuite::Ed25519,
            key_id: KEY,
            session: SESSION,
            threshold: t,
            committee: local::committee_of(&ids).expect("committee"),
            timeout_ms: 1,
            coordinator: quorate_protocol::NodeId([0; 32]),
            start: None,
        };
        assert!(
            matches!(
                Dkg::new(ids[0].clone(), config),
                Err(ProtocolError::InvalidParameters(_))
            ),
            "t = {t}"
        );
    }
}

// ---------------------------------------------------------------- codec

#[test]
fn oversized_message_is_refused_before_decoding() {
    let bytes = vec![0u8; MAX_MESSAGE_SIZE + 1];
    assert_eq!(
        Envelope::decode(&bytes),
        Err(ProtocolError::TooLarge {
            len: MAX_MESSAGE_SIZE + 1,
            max: MAX_MESSAGE_SIZE
        })
    );
    let mut rng = rng(20);
    let id = NodeIdentity::generate(&mut rng);
    let env = Envelope::seal(
        &id,
        Ciphersuite::Ed25519,
        KEY,
        SESSION,
        Payload::SignShare {
            share: vec![7; 100],
        },
    );
    let encoded = env.encode();
    assert_eq!(
        Envelope::decode_with_limit(&encoded, encoded.len() - 1),
        Err(ProtocolError::TooLarge {
            len: encoded.len(),
            max: encoded.len() - 1
        })
    );
}

#[test]
fn truncated_trailing_and_unknown_version_messages_are_refused() {
    let mut rng = rng(21);
    let id = NodeIdentity::generate(&mut rng);
    let env = Envelope::seal(
        &id,
        Ciphersuite::Ed25519,
        KEY,
        SESSION,
        Payload::SignShare { share: vec![7; 32] },
    );
    let encoded = env.encode();
    assert_eq!(Envelope::decode(&encoded).expect("round trip"), env);
    for cut in [1, 10, encoded.len() / 2, encoded.len() - 1] {
        assert_eq!(
            Envelope::decode(&encoded[..cut]),
            Err(ProtocolError::Malformed("envelope does not decode")),
            "cut at {cut}"
        );
    }
    let mut trailing = encoded.clone();
    trailing.push(0);
    assert_eq!(
        Envelope::decode(&trailing),
        Err(ProtocolError::Malformed("trailing bytes after envelope"))
    );
    let mut future = env.clone();
    future.version = PROTOCOL_VERSION + 1;
    assert_eq!(
        Envelope::decode(&future.encode()),
        Err(ProtocolError::UnsupportedVersion(PROTOCOL_VERSION + 1))
    );
    // A flipped payload bit decodes but no longer verifies.
    let mut flipped = env.clone();
    if let Payload::SignShare { share } = &mut flipped.payload {
        share[0] ^= 1;
    }
    assert_eq!(
        flipped.verify(),
        Err(ProtocolError::BadSignature {
            claimed: id.node_id()
        })
    );
}

// ---------------------------------------------------------------- signing faults

fn signing_net(
    coordinator: &Arc<NodeIdentity>,
    ids: &[Arc<NodeIdentity>],
    shares: &[quorate_protocol::KeyShare],
    msg: Vec<u8>,
    rng: &mut ChaCha20Rng,
) -> Net {
    let t = usize::from(shares[0].public.threshold);
    let signers: Vec<_> = ids
        .iter()
        .cloned()
        .zip(shares.iter().cloned())
        .take(t)
        .collect();
    let agg = Aggregator::new(
        coordinator.clone(),
        &shares[0].public,
        AggregatorConfig {
            session: SESSION,
            signers: signers.iter().map(|(i, _)| i.node_id()).collect(),
            target: SignTarget {
                message: msg,
                tweak: None,
            },
            request: b"client request".to_vec(),
            timeout_ms: 1_000,
        },
    )
    .expect("aggregator");
    let mut net = Net::new();
    net.signers(signers);
    net.add(coordinator.node_id(), Party::Aggregator(agg));
    net.input(coordinator.node_id(), Input::Start, rng);
    net
}

fn repackage(
    env: &Envelope,
    edit: impl FnOnce(
        &mut std::collections::BTreeMap<
            frost_ed25519::Identifier,
            frost_ed25519::round1::SigningCommitments,
        >,
    ) -> Vec<u8>,
) -> Payload {
    let Payload::SignPackage { package, tweak } = &env.payload else {
        panic!("not a package")
    };
    let pkg = frost_ed25519::SigningPackage::deserialize(package).expect("package");
    let mut map = pkg.signing_commitments().clone();
    let msg = edit(&mut map);
    let msg = if msg.is_empty() {
        pkg.message().clone()
    } else {
        msg
    };
    Payload::SignPackage {
        package: frost_ed25519::SigningPackage::new(map, &msg)
            .serialize()
            .expect("ser"),
        tweak: *tweak,
    }
}

#[test]
fn corrupted_signature_shares_name_every_culprit() {
    let (ids, shares, mut rng) = setup(5, 4, Ciphersuite::Secp256k1, 22);
    let coordinator = Arc::new(NodeIdentity::generate(&mut rng));
    let cheats = [ids[1].clone(), ids[3].clone()];
    let mut net = signing_net(&coordinator, &ids, &shares, message("pay"), &mut rng);
    let mut brng = common::rng(95);
    net.run(
        &mut rng,
        &mut |_, env| match cheats.iter().find(|c| c.node_id() == env.sender) {
            Some(c) if env.round == Round::SignShare => {
                vec![byzantine::corrupt_signature_share(c, &env, &mut brng).expect("forge")]
            }
            _ => vec![env],
        },
    );
    let mut culprits: Vec<NodeId> = cheats.iter().map(|c| c.node_id()).collect();
    culprits.sort();
    assert_eq!(
        fatal_errors(&net),
        vec![(
            coordinator.node_id(),
            ProtocolError::Aborted {
                culprits,
                fault: Fault::InvalidSignatureShare
            }
        )]
    );
    assert!(!net.outcomes.contains_key(&coordinator.node_id()));
}

#[test]
fn reused_nonce_is_refused_and_identical_package_is_idempotent() {
    let (ids, shares, mut rng) = setup(3, 2, Ciphersuite::Ed25519, 23);
    let coordinator = Arc::new(NodeIdentity::generate(&mut rng));
    let signer = ids[0].node_id();
    let mut net = signing_net(
        &coordinator,
        &ids,
        &shares,
        b"transfer 1".to_vec(),
        &mut rng,
    );
    let coord = coordinator.clone();
    net.run(&mut rng, &mut |to, env| {
        if *to == signer && env.round == Round::SignPackage {
            // The same package again (idempotent), then a different one for the
            // same commitments: a second signature with the same nonces.
            let second = byzantine::forge(
                &coord,
                &env,
                repackage(&env, |_| b"transfer 1, again".to_vec()),
            );
            vec![env.clone(), env, second]
        } else {
            vec![env]
        }
    });
    assert_eq!(
        fatal_errors(&net),
        vec![(signer, ProtocolError::NonceReused)]
    );
    // The honest first signature still completed.
    assert!(matches!(
        net.outcomes.get(&coordinator.node_id()),
        Some(Outcome::Signature(_))
    ));
}

#[test]
fn package_missing_or_altering_own_commitment_is_refused() {
    for alter in [false, true] {
        let (ids, shares, mut rng) = setup(3, 2, Ciphersuite::Ed25519, 24);
        let coordinator = Arc::new(NodeIdentity::generate(&mut rng));
        let victim = ids[0].node_id();
        let victim_id = frost_ed25519::Identifier::try_from(1u16).expect("id");
        let other_id = frost_ed25519::Identifier::try_from(2u16).expect("id");
        let mut net = signing_net(&coordinator, &ids, &shares, b"m".to_vec(), &mut rng);
        let coord = coordinator.clone();
        net.run(&mut rng, &mut |to, env| {
            if *to == victim && env.round == Round::SignPackage {
                let payload = repackage(&env, |map| {
                    if alter {
                        let other = map[&other_id];
                        map.insert(victim_id, other);
                    } else {
                        map.remove(&victim_id);
                    }
                    Vec::new()
                });
                vec![byzantine::forge(&coord, &env, payload)]
            } else {
                vec![env]
            }
        });
        assert!(
            fatal_errors(&net).contains(&(
                victim,
                ProtocolError::Aborted {
                    culprits: vec![coordinator.node_id()],
                    fault: Fault::CommitmentAltered
                }
            )),
            "alter = {alter}: {:?}",
            net.errors
        );
    }
}

#[test]
fn package_for_a_different_message_is_refused() {
    let (ids, shares, mut rng) = setup(3, 2, Ciphersuite::Ed25519, 25);
    let coordinator = Arc::new(NodeIdentity::generate(&mut rng));
    let victim = ids[1].node_id();
    let mut net = signing_net(
        &coordinator,
        &ids,
        &shares,
        b"pay 10 to alice".to_vec(),
        &mut rng,
    );
    let coord = coordinator.clone();
    net.run(&mut rng, &mut |to, env| {
        if *to == victim && env.round == Round::SignPackage {
            vec![byzantine::forge(
                &coord,
                &env,
                repackage(&env, |_| b"pay 10000 to mallory".to_vec()),
            )]
        } else {
            vec![env]
        }
    });
    assert!(fatal_errors(&net).contains(&(
        victim,
        ProtocolError::RequestMismatch("message differs from the approved request")
    )));
    assert!(
        !net.outcomes.contains_key(&coordinator.node_id()),
        "no signature for an altered request"
    );
}

#[test]
fn silent_signer_is_named_at_deadline() {
    let (ids, shares, mut rng) = setup(3, 2, Ciphersuite::Secp256k1Tr, 26);
    let coordinator = Arc::new(NodeIdentity::generate(&mut rng));
    let silent = ids[1].node_id();
    let mut net = signing_net(&coordinator, &ids, &shares, message("m"), &mut rng);
    net.run(&mut rng, &mut |_, env| {
        if env.sender == silent {
            vec![]
        } else {
            vec![env]
        }
    });
    assert!(fatal_errors(&net).is_empty());
    net.input(
        coordinator.node_id(),
        Input::Timeout(TimerId::Deadline),
        &mut rng,
    );
    assert_eq!(
        fatal_errors(&net),
        vec![(
            coordinator.node_id(),
            ProtocolError::Aborted {
                culprits: vec![silent],
                fault: Fault::Timeout
            }
        )]
    );
}

#[test]
fn aggregator_refuses_too_few_or_foreign_signers() {
    let (ids, shares, mut rng) = setup(3, 2, Ciphersuite::Ed25519, 27);
    let coordinator = Arc::new(NodeIdentity::generate(&mut rng));
    let mk = |signers: Vec<NodeId>| {
        Aggregator::new(
            coordinator.clone(),
            &shares[0].public,
            AggregatorConfig {
                session: SESSION,
                signers,
                target: SignTarget {
                    message: vec![1],
                    tweak: None,
                },
                request: vec![],
                timeout_ms: 1,
            },
        )
    };
    assert!(matches!(
        mk(vec![ids[0].node_id()]),
        Err(ProtocolError::InvalidParameters(_))
    ));
    assert!(matches!(
        mk(vec![ids[0].node_id(), coordinator.node_id()]),
        Err(ProtocolError::InvalidParameters(_))
    ));
    assert!(matches!(
        mk(vec![ids[0].node_id(), ids[0].node_id()]),
        Err(ProtocolError::InvalidParameters(_))
    ));
    assert!(mk(vec![ids[0].node_id(), ids[2].node_id()]).is_ok());
}

#[test]
fn key_share_debug_output_hides_the_secret() {
    let (_, shares, _) = setup(3, 2, Ciphersuite::Ed25519, 28);
    let shown = format!("{:?}", shares[0]);
    assert!(shown.contains("<secret>"), "{shown}");
    let secret = shares[0]
        .key_package::<frost_ed25519::Ed25519Sha512>()
        .expect("kp");
    let secret_hex = hex::encode(secret.signing_share().serialize());
    assert!(!shown.contains(&secret_hex));
    let id = NodeIdentity::generate(&mut rng(1));
    assert!(format!("{id:?}").contains("<secret>"));
}

/// A coordinator that sends some participants another threshold, and others another
/// committee, for one session: every abort names the coordinator and nobody else, so
/// no honest participant blames (or would quarantine) another.
#[test]
fn coordinator_sending_two_parameter_sets_blames_only_the_coordinator() {
    let mut rng = rng(41);
    let ids = local::identities(5, &mut rng);
    let coordinator = NodeIdentity::generate(&mut rng).node_id();
    let full = local::committee_of(&ids).expect("committee");
    // Same members, other FROST indices for the last two: what the old code read as
    // shares from the wrong participant.
    let mut shuffled: Vec<Member> = full.members().to_vec();
    let (a, b) = (shuffled[3].index, shuffled[4].index);
    shuffled[3].index = b;
    shuffled[4].index = a;
    let shuffled = Committee::new(shuffled).expect("committee");
    for variant in 0..2 {
        let mut net = Net::new();
        for (i, id) in ids.iter().enumerate() {
            let odd = i >= 3;
            let config = DkgConfig {
                suite: Ciphersuite::Secp256k1,
                key_id: KEY,
                session: SESSION,
                threshold: if odd && variant == 0 { 3 } else { 2 },
                committee: if odd && variant == 1 {
                    shuffled.clone()
                } else {
                    full.clone()
                },
                timeout_ms: 1_000,
                coordinator,
                start: None,
            };
            net.add(
                id.node_id(),
                Party::Dkg(Dkg::new(id.clone(), config).expect("dkg")),
            );
        }
        for id in &ids {
            net.input(id.node_id(), Input::Start, &mut rng);
        }
        net.run(&mut rng, &mut |_, env| vec![env]);
        let fatal = fatal_errors(&net);
        assert!(
            !fatal.is_empty(),
            "variant {variant}: the split went unnoticed"
        );
        for (at, e) in &fatal {
            assert!(
                matches!(e, ProtocolError::ParametersDiffer { .. }),
                "variant {variant}: {at:?} reported {e:?} instead of a parameter mismatch"
            );
            assert_eq!(e.culprits(), vec![coordinator], "variant {variant}");
        }
        assert!(
            net.errors
                .iter()
                .all(|(_, e)| e.culprits().iter().all(|c| *c == coordinator)),
            "variant {variant}: an honest participant was blamed: {:?}",
            net.errors
        );
        assert_nobody_finished_dkg(&net);
    }
}

/// A relay (the coordinator) shows B the share A sealed for C, then delivers A's
/// genuine share for B. The misdirected one is refused without being recorded, so
/// the genuine one is not mistaken for equivocation (which would have had B
/// quarantine honest A), and the DKG completes for everyone.
#[test]
fn misdirected_round2_share_does_not_frame_its_sender_as_an_equivocator() {
    let mut rng = rng(42);
    let ids = local::identities(3, &mut rng);
    let (a, c, b) = (ids[0].node_id(), ids[1].node_id(), ids[2].node_id());
    let mut net = dkg_net(&ids, Ciphersuite::Ed25519, 2, &mut rng);
    let mut stolen: Option<Envelope> = None;
    let mut shown = false;
    net.run(&mut rng, &mut |to, env| {
        if let Payload::DkgRound2 { recipient, .. } = &env.payload {
            if env.sender == a && *recipient == c {
                stolen = Some(env.clone());
            }
            if env.sender == a && *recipient == b && *to == b {
                if let Some(s) = stolen.clone() {
                    shown = true;
                    return vec![s, env];
                }
            }
        }
        vec![env]
    });
    assert!(shown, "the misdirected share was delivered first");
    assert!(
        net.errors
            .iter()
            .all(|(_, e)| !matches!(e, ProtocolError::Equivocation { .. })),
        "{:?}",
        net.errors
    );
    assert!(fatal_errors(&net).is_empty(), "{:?}", net.errors);
    let keys = net
        .outcomes
        .values()
        .filter(|o| matches!(o, Outcome::Key(_)))
        .count();
    assert_eq!(keys, 3, "every participant finished");
}

/// Nodes that run with the coordinator's signed `DkgStart` as proof: `starts[i]` is
/// what participant `i` was started with.
fn dkg_net_with_starts(
    ids: &[Arc<NodeIdentity>],
    coordinator: &NodeIdentity,
    starts: &[(u16, Committee)],
    rng: &mut ChaCha20Rng,
) -> Net {
    let mut net = Net::new();
    for (id, (t, committee)) in ids.iter().zip(starts) {
        let start = Envelope::seal(
            coordinator,
            Ciphersuite::Secp256k1,
            KEY,
            SESSION,
            Payload::DkgStart {
                threshold: *t,
                committee: committee.clone(),
                timeout_ms: 1_000,
                segments: Vec::new(),
            },
        );
        let config = DkgConfig {
            suite: Ciphersuite::Secp256k1,
            key_id: KEY,
            session: SESSION,
            threshold: *t,
            committee: committee.clone(),
            timeout_ms: 1_000,
            coordinator: coordinator.node_id(),
            start: Some(start),
        };
        net.add(
            id.node_id(),
            Party::Dkg(Dkg::new(id.clone(), config).expect("dkg")),
        );
    }
    for id in ids {
        net.input(id.node_id(), Input::Start, rng);
    }
    net
}

/// With start proofs, a member that claims other parameters than the coordinator
/// signed for it is named itself — the honest coordinator is not blamed.
#[test]
fn member_claiming_other_dkg_parameters_is_blamed_not_the_coordinator() {
    let mut rng = rng(43);
    let ids = local::identities(4, &mut rng);
    let coordinator = NodeIdentity::generate(&mut rng);
    let committee = local::committee_of(&ids).expect("committee");
    let starts = vec![(3, committee); 4];
    let mut net = dkg_net_with_starts(&ids, &coordinator, &starts, &mut rng);
    let liar = ids[3].clone();
    net.run(&mut rng, &mut |_, env| {
        if env.sender == liar.node_id() {
            if let Payload::DkgRound1 { start, package, .. } = &env.payload {
                let payload = Payload::DkgRound1 {
                    params: [0x99; 32],
                    start: start.clone(),
                    package: package.clone(),
                };
                return vec![byzantine::forge(&liar, &env, payload)];
            }
        }
        vec![env]
    });
    let fatal = fatal_errors(&net);
    assert!(!fatal.is_empty());
    for (_, e) in &fatal {
        assert_eq!(
            *e,
            ProtocolError::Aborted {
                culprits: vec![liar.node_id()],
                fault: Fault::UnbackedParameters
            }
        );
    }
    assert_nobody_finished_dkg(&net);
}

/// With start proofs, a coordinator that signed two different starts for one
/// session is proven at fault by the first round-1 message across the split.
#[test]
fn coordinator_signing_two_starts_is_proven_and_blamed() {
    let mut rng = rng(44);
    let ids = local::identities(5, &mut rng);
    let coordinator = NodeIdentity::generate(&mut rng);
    let committee = local::committee_of(&ids).expect("committee");
    let starts: Vec<(u16, Committee)> = (0..5)
        .map(|i| (if i < 3 { 2 } else { 3 }, committee.clone()))
        .collect();
    let mut net = dkg_net_with_starts(&ids, &coordinator, &starts, &mut rng);
    net.run(&mut rng, &mut |_, env| vec![env]);
    let fatal = fatal_errors(&net);
    assert!(!fatal.is_empty(), "the split went unnoticed");
    for (at, e) in &fatal {
        assert!(
            matches!(e, ProtocolError::ParametersDiffer { .. }),
            "{at:?}: {e:?}"
        );
        assert_eq!(e.culprits(), vec![coordinator.node_id()]);
    }
    assert!(
        net.errors
            .iter()
            .all(|(_, e)| e.culprits().iter().all(|c| *c == coordinator.node_id())),
        "{:?}",
        net.errors
    );
    assert_nobody_finished_dkg(&net);
}
