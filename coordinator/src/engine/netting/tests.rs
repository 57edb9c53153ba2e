//! The engine's netting rounds driven without a network: every committee member is
//! simulated with the real `NodeRound` and FROST `Signer`, answering each envelope
//! the way the node daemon does (the integration contract).

use std::{sync::Arc, time::Duration};

use ed25519_dalek::SigningKey;
use quorate_protocol::{
    local::{committee_of, identities, run_dkg},
    machine::Input,
    netting::{
        session::NodeRound, share::deal, Instrument, InstrumentKind, PartyInput, Position, RoundId,
        RoundSpec,
    },
    roster::Roster,
    sign::SignerConfig,
    wire::frame::Ack,
    Ciphersuite, Envelope, KeyShare, NodeIdentity, Output, Payload, SignTarget, Signer, Timestamp,
};
use rand_core::OsRng;
use tokio::sync::oneshot;

use super::{Netting, NettingCommand, Timeouts};
use crate::{
    engine::select::Candidate,
    netting::{settle::settle_round, RoundOpen, SettleRequest},
    types::KeyRecord,
};

struct Node {
    id: Arc<NodeIdentity>,
    share: KeyShare,
    round: Option<NodeRound>,
    signer: Option<Signer>,
    /// Refuse every close (a faulty node).
    refuse_close: bool,
    /// Refuse settlement signing (node policy).
    refuse_settle: bool,
}

struct World {
    netting: Netting,
    nodes: Vec<Node>,
    candidates: Vec<Candidate>,
    coordinator: Arc<NodeIdentity>,
}

fn roster(nodes: &[Arc<NodeIdentity>], coordinator: &NodeIdentity) -> Roster {
    let mut text = String::new();
    for (i, n) in (1u16..).zip(nodes) {
        text.push_str(&format!(
            "[[nodes]]\nname = \"n{i}\"\nnode_id = \"{}\"\nseal_key = \"{}\"\nindex = {i}\nsegment = \"s{i}\"\n\n",
            n.node_id(),
            hex::encode(n.public().seal_key),
        ));
    }
    text.push_str(&format!(
        "[[coordinators]]\nname = \"c\"\nnode_id = \"{}\"\n",
        coordinator.node_id()
    ));
    Roster::from_toml(&text).expect("roster")
}

fn world(refuse_close: usize, refuse_settle: usize) -> (World, KeyRecord) {
    let ids = identities(3, &mut OsRng);
    let coordinator = Arc::new(NodeIdentity::generate(&mut OsRng));
    let shares = run_dkg(&ids, Ciphersuite::Ed25519, 2, &mut OsRng).expect("dkg");
    let key = KeyRecord {
        public: shares[0].public.clone(),
        attestations: Vec::new(),
        created_at_ms: 0,
    };
    let netting = Netting::new(
        coordinator.clone(),
        roster(&ids, &coordinator),
        Timeouts {
            ack: Duration::from_secs(5),
            close: Duration::from_secs(5),
            sign: Duration::from_secs(5),
        },
    );
    let candidates = ids
        .iter()
        .enumerate()
        .map(|(i, n)| Candidate {
            node: n.node_id(),
            segment: format!("s{i}"),
            connected: true,
        })
        .collect();
    let nodes = ids
        .iter()
        .zip(shares)
        .enumerate()
        .map(|(i, (id, share))| Node {
            id: id.clone(),
            share,
            round: None,
            signer: None,
            refuse_close: i < refuse_close,
            refuse_settle: i < refuse_settle,
        })
        .collect();
    (
        World {
            netting,
            nodes,
            candidates,
            coordinator,
        },
        key,
    )
}

impl Node {
    /// What the daemon does with one envelope: the ack, and envelopes it sends back.
    fn handle(&mut self, env: Envelope, coordinator: &NodeIdentity) -> (Ack, Vec<Envelope>) {
        let reject = |reason: &str, detail: String| Ack::Rejected {
            reason: reason.into(),
            detail,
        };
        let (suite, key, session) = (env.suite, env.key, env.session);
        let seal = |payload| Envelope::seal(&self.id, suite, key, session, payload);
        match env.payload {
            Payload::NettingRound {
                spec,
                authorization,
            } => {
                if spec.verify_authorization(&authorization).is_err() {
                    return (reject("netting:bad_authorization", "no".into()), vec![]);
                }
                self.round = Some(NodeRound::new(spec).expect("round"));
                (Ack::Accepted, vec![])
            }
            Payload::NettingBundle { header, sealed } => {
                let Some(r) = &mut self.round else {
                    return (reject("netting:unknown_round", String::new()), vec![]);
                };
                match r.accept_bundle(0, &self.id, &header, &sealed) {
                    Ok(_) => (Ack::Accepted, vec![]),
                    Err(e) => (reject("netting:bad_bundle", e.to_string()), vec![]),
                }
            }
            Payload::NettingClose { inputs, .. } => {
                if self.refuse_close {
                    return (reject("netting:closed", "refusing".into()), vec![]);
                }
                let r = self.round.as_mut().expect("round");
                match r.close(&self.id, &inputs) {
                    Ok(out) => {
                        let mut envs = vec![seal(Payload::NettingPublic {
                            outputs: out.public,
                        })];
                        envs.extend(
                            out.parties
                                .into_iter()
                                .map(|outputs| seal(Payload::NettingParty { outputs })),
                        );
                        (Ack::Accepted, envs)
                    }
                    Err(e) => (reject("netting:closed", e.to_string()), vec![]),
                }
            }
            Payload::SettleRequest { views, message, .. } => {
                if self.refuse_settle {
                    return (
                        reject("policy:settlement_keys", "not allowed".into()),
                        vec![],
                    );
                }
                let r = self.round.as_ref().expect("round");
                let batch = match r.settlement(&views, &mut OsRng) {
                    Ok((b, _)) => b,
                    Err(e) => return (reject("netting:not_closed", e.to_string()), vec![]),
                };
                if batch.message().to_vec() != message {
                    return (reject("netting:settlement_mismatch", String::new()), vec![]);
                }
                let mut signer = Signer::new(
                    self.id.clone(),
                    &self.share,
                    SignerConfig {
                        session,
                        coordinator: coordinator.node_id(),
                        target: SignTarget {
                            message,
                            tweak: None,
                        },
                        timeout_ms: 5_000,
                    },
                )
                .expect("signer");
                let out = signer
                    .handle(Timestamp(0), Input::Start, &mut OsRng)
                    .expect("start");
                self.signer = Some(signer);
                (Ack::Accepted, sends(out))
            }
            Payload::SignPackage { .. } => {
                let s = self.signer.as_mut().expect("signer");
                let out = s
                    .handle(Timestamp(0), Input::Message(env), &mut OsRng)
                    .expect("package");
                (Ack::Accepted, sends(out))
            }
            _ => (reject("unexpected", String::new()), vec![]),
        }
    }
}

fn sends<T>(out: Vec<Output<T>>) -> Vec<Envelope> {
    out.into_iter()
        .filter_map(|o| match o {
            Output::Send { msg, .. } => Some(msg),
            _ => None,
        })
        .collect()
}

impl World {
    /// Delivers everything the engine queued, and the answers, until quiet.
    fn pump(&mut self) {
        loop {
            let out = self.netting.take_outbox();
            if out.is_empty() {
                return;
            }
            for (to, env, tag) in out {
                assert!(env.verify().is_ok(), "engine envelopes are signed");
                let node = self
                    .nodes
                    .iter_mut()
                    .find(|n| n.id.node_id() == to)
                    .expect("member");
                let (ack, back) = node.handle(env, &self.coordinator);
                self.netting.on_ack(tag, ack, &self.candidates);
                for e in back {
                    self.netting.on_envelope(e, &self.candidates);
                }
            }
        }
    }
}

fn spec_of(key: &KeyRecord, nodes: &[Node], parties: &[SigningKey]) -> RoundSpec {
    let ids: Vec<Arc<NodeIdentity>> = nodes.iter().map(|n| n.id.clone()).collect();
    RoundSpec {
        id: RoundId([3; 16]),
        parties: parties
            .iter()
            .enumerate()
            .map(|(i, k)| quorate_protocol::netting::Party {
                name: format!("desk-{i}"),
                sign_key: k.verifying_key().to_bytes(),
                seal_key: x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from([9; 32]))
                    .to_bytes(),
            })
            .collect(),
        instruments: vec![Instrument {
            name: "F".into(),
            kind: InstrumentKind::Future,
            asset: "USD".into(),
            multiplier: 2,
            price_move: 10,
            premium: 0,
        }],
        cutoff: u64::MAX / 2,
        key: key.key_id(),
        committee: committee_of(&ids).expect("committee"),
        threshold: 2,
        bounds: Default::default(),
        limits: None,
    }
}

fn input(cp: &str, q: i64) -> PartyInput {
    PartyInput {
        positions: vec![Position {
            counterparty: cp.into(),
            instrument: "F".into(),
            quantity: q,
            cash: 0,
        }],
        cover: Vec::new(),
    }
}

fn run(refuse_close: usize, refuse_settle: usize) {
    let (mut w, key) = world(refuse_close, refuse_settle);
    let parties = [
        SigningKey::generate(&mut OsRng),
        SigningKey::generate(&mut OsRng),
    ];
    let spec = spec_of(&key, &w.nodes, &parties);
    let client = SigningKey::generate(&mut OsRng);
    let (tx, mut rx) = oneshot::channel();
    w.netting.on_command(
        NettingCommand::Open(
            Box::new(RoundOpen {
                spec: spec.clone(),
                authorization: spec.authorize(&client),
                key: key.clone(),
            }),
            tx,
        ),
        &w.candidates,
    );
    w.pump();
    let acks = rx.try_recv().expect("answered").expect("announced");
    assert!(acks.iter().all(|a| a.is_accepted()));

    let mut headers = vec![None, None];
    for (p, (k, cp, q)) in [(&parties[0], "desk-1", 4), (&parties[1], "desk-0", -4)]
        .into_iter()
        .enumerate()
    {
        let bundle = deal(&spec, p, k, &input(cp, q), 0, &mut OsRng).expect("deal");
        headers[p] = Some(bundle.header.clone());
        let (tx, mut rx) = oneshot::channel();
        w.netting.on_command(
            NettingCommand::Bundle(Box::new((spec.id, bundle)), tx),
            &w.candidates,
        );
        w.pump();
        let out = rx.try_recv().expect("answered").expect("forwarded");
        assert!(out.acks.iter().all(|a| a.is_accepted()), "{out:?}");
    }

    let (tx, mut rx) = oneshot::channel();
    w.netting
        .on_command(NettingCommand::Close(spec.id, tx), &w.candidates);
    w.pump();
    let close = rx.try_recv().expect("answered").expect("closed");
    assert!(close.inputs.iter().all(Option::is_some));
    assert_eq!(close.public.len(), 3 - refuse_close);
    assert_eq!(
        close.acks.iter().filter(|a| !a.is_accepted()).count(),
        refuse_close
    );
    assert!(close.parties.iter().all(|v| v.len() == 3 - refuse_close));
    assert!(close.culprits.is_empty());

    let (batch, culprits) =
        settle_round(&spec, &headers, &close.inputs, &close.public, &mut OsRng).expect("batch");
    assert!(culprits.is_empty());
    assert_eq!(
        batch.transfers.iter().map(|t| t.amount).collect::<Vec<_>>(),
        vec![80, -80]
    );
    let (tx, mut rx) = oneshot::channel();
    w.netting.on_command(
        NettingCommand::Settle(
            Box::new(SettleRequest {
                round: spec.id,
                views: close.public.clone(),
                message: batch.message(),
            }),
            tx,
        ),
        &w.candidates,
    );
    w.pump();
    let signed = rx.try_recv().expect("answered").expect("signed");
    key.public
        .verify(&batch.message(), &signed.signature.signature, None)
        .expect("signature verifies");
    assert_eq!(
        signed.attempts.last().map(|a| a.outcome.as_str()),
        Some("signed")
    );
    for a in &signed.attempts[..signed.attempts.len() - 1] {
        assert_eq!(a.outcome, "refused", "{a:?}");
        assert!(a.refused[0].1.starts_with("policy:"), "{a:?}");
    }
    let refusing = w.nodes[0].id.node_id();
    if refuse_settle > 0 {
        assert_eq!(signed.attempts.len(), 2, "{:?}", signed.attempts);
        assert!(!signed
            .attempts
            .last()
            .expect("attempt")
            .signers
            .contains(&refusing));
    }
    assert!(w.netting.rounds.is_empty(), "a settled round is forgotten");
}

#[test]
fn a_round_is_announced_filled_closed_and_its_settlement_signed() {
    run(0, 0);
}

#[test]
fn a_signer_refusing_the_settlement_is_replaced() {
    // Selection prefers distinct segments in order, so node 0 is asked first.
    run(0, 1);
}

#[test]
fn a_node_refusing_the_close_leaves_enough_outputs_and_signers() {
    run(1, 0);
}

#[test]
fn a_bundle_after_close_and_an_unknown_round_are_refused() {
    let (mut w, key) = world(0, 0);
    let parties = [
        SigningKey::generate(&mut OsRng),
        SigningKey::generate(&mut OsRng),
    ];
    let spec = spec_of(&key, &w.nodes, &parties);
    let bundle = deal(&spec, 0, &parties[0], &input("desk-1", 1), 0, &mut OsRng).expect("deal");
    let (tx, mut rx) = oneshot::channel();
    w.netting.on_command(
        NettingCommand::Bundle(Box::new((spec.id, bundle.clone())), tx),
        &w.candidates,
    );
    assert!(matches!(
        rx.try_recv().expect("answered"),
        Err(crate::CoordinatorError::UnknownRound(_))
    ));
    let (tx, _rx) = oneshot::channel();
    w.netting.on_command(
        NettingCommand::Open(
            Box::new(RoundOpen {
                spec: spec.clone(),
                authorization: spec.authorize(&SigningKey::generate(&mut OsRng)),
                key,
            }),
            tx,
        ),
        &w.candidates,
    );
    w.pump();
    let (tx, _close) = oneshot::channel();
    w.netting
        .on_command(NettingCommand::Close(spec.id, tx), &w.candidates);
    w.pump();
    let (tx, mut rx) = oneshot::channel();
    w.netting.on_command(
        NettingCommand::Bundle(Box::new((spec.id, bundle)), tx),
        &w.candidates,
    );
    assert!(matches!(
        rx.try_recv().expect("answered"),
        Err(crate::CoordinatorError::RoundConflict(_))
    ));
}
