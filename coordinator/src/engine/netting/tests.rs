//! The engine's netting rounds driven without a network: every committee member is
//! simulated with the real `NodeRound` and FROST `Signer`, answering each envelope
//! the way the node daemon does (the integration contract).

use std::{sync::Arc, time::Duration};

use ed25519_dalek::SigningKey;
use quorate_protocol::{
    local::{committee_of, identities, run_dkg},
    machine::Input,
    netting::{
        input::Cover, limits::run::NodeLimits, round::LimitSettings, session::NodeRound,
        share::deal, Instrument, InstrumentKind, PartyInput, Position, PublicOutputs, RoundId,
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
    /// The running limit-check attempt.
    limits: Option<NodeLimits>,
    /// Public outputs withheld until a covered verdict (limit-checked rounds).
    held_public: Option<PublicOutputs>,
    /// Stop answering limit-check parts from step 2 on in attempts up to this one.
    stall_until_attempt: u32,
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

/// The limit phase deadline of the test engine.
const LIMITS_TIMEOUT_MS: u64 = 300;

fn world(refuse_close: usize, refuse_settle: usize) -> (World, KeyRecord) {
    let ids = identities(3, &mut OsRng);
    let coordinator = Arc::new(NodeIdentity::generate(&mut OsRng));
    let shares = run_dkg(&ids, Ciphersuite::Ed25519, 2, &mut OsRng).expect("dkg");
    let key = KeyRecord {
        public: shares[0].public.clone(),
        attestations: Vec::new(),
        created_at_ms: 0,
        generation: 0,
    };
    let netting = Netting::new(
        coordinator.clone(),
        roster(&ids, &coordinator),
        Timeouts {
            ack: Duration::from_secs(5),
            close: Duration::from_secs(5),
            sign: Duration::from_secs(5),
            limits: Duration::from_millis(LIMITS_TIMEOUT_MS),
        },
    );
    let candidates = ids
        .iter()
        .enumerate()
        .map(|(i, n)| Candidate {
            node: n.node_id(),
            segment: format!("s{i}"),
            connected: true,
            load: (0, 0),
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
            limits: None,
            held_public: None,
            stall_until_attempt: 0,
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
                let limited = r.spec().limits.is_some();
                match r.close(&self.id, &inputs) {
                    Ok(out) => {
                        let mut envs = Vec::new();
                        if limited {
                            // Withheld until a covered verdict.
                            self.held_public = Some(out.public);
                        } else {
                            envs.push(seal(Payload::NettingPublic {
                                outputs: out.public,
                            }));
                        }
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
            Payload::LimitStart { attempt, .. } => {
                let Some(r) = &self.round else {
                    return (reject("netting:unknown_round", String::new()), vec![]);
                };
                match NodeLimits::start(r, &self.id, attempt, &mut rand_core::OsRng) {
                    Ok((l, parts)) => {
                        self.limits = Some(l);
                        (Ack::Accepted, parts.into_iter().map(seal).collect())
                    }
                    Err(e) => (reject("netting:limits", e.to_string()), vec![]),
                }
            }
            Payload::LimitPart {
                attempt,
                step,
                part,
                parts,
                bytes,
                ..
            } => {
                if attempt <= self.stall_until_attempt && step >= 2 {
                    // A node that stops answering mid-MPC.
                    return (Ack::Accepted, vec![]);
                }
                let spec = self.round.as_ref().expect("round").spec().clone();
                let l = self.limits.as_mut().expect("limits started");
                assert_eq!(l.attempt(), attempt, "parts of the running attempt");
                let back = match l.on_part(
                    &spec,
                    &self.id,
                    (step, part, parts),
                    bytes,
                    &mut rand_core::OsRng,
                ) {
                    Ok(b) => b,
                    Err(e) => return (reject("netting:limits", e.to_string()), vec![]),
                };
                let mut envs = Vec::new();
                for p in back {
                    let covered =
                        matches!(&p, Payload::LimitResult { verdict, .. } if verdict.covered);
                    envs.push(seal(p));
                    if covered {
                        if let Some(outputs) = self.held_public.clone() {
                            envs.push(seal(Payload::NettingPublic { outputs }));
                        }
                    }
                }
                (Ack::Accepted, envs)
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

// ------------------------------------------------------------------ limits

/// desk-0 is long 4 F against desk-1: desk-1 owes 80 USD. desk-1 declares
/// `collateral` USD of collateral and no limit.
fn limited_close(w: &mut World, key: &KeyRecord, collateral: i64) -> LimitedRound {
    let parties = [
        SigningKey::generate(&mut OsRng),
        SigningKey::generate(&mut OsRng),
    ];
    let mut spec = spec_of(key, &w.nodes, &parties);
    spec.limits = Some(LimitSettings {
        max_cover: 1_000_000,
        reveal_failures: true,
        efficiency: true,
    });
    spec.validate().expect("a limit-checked spec");
    let (tx, mut rx) = oneshot::channel();
    w.netting.on_command(
        NettingCommand::Open(
            Box::new(RoundOpen {
                spec: spec.clone(),
                authorization: spec.authorize(&SigningKey::generate(&mut OsRng)),
                key: key.clone(),
            }),
            tx,
        ),
        &w.candidates,
    );
    w.pump();
    rx.try_recv().expect("answered").expect("announced");
    let mut headers = vec![None, None];
    for (p, (k, cp, q)) in [(&parties[0], "desk-1", 4), (&parties[1], "desk-0", -4)]
        .into_iter()
        .enumerate()
    {
        let mut i = input(cp, q);
        if p == 1 {
            i.cover.push(Cover {
                asset: "USD".into(),
                collateral,
                limit: 0,
            });
        }
        let bundle = deal(&spec, p, k, &i, 0, &mut OsRng).expect("deal");
        headers[p] = Some(bundle.header.clone());
        let (tx, mut rx) = oneshot::channel();
        w.netting.on_command(
            NettingCommand::Bundle(Box::new((spec.id, bundle)), tx),
            &w.candidates,
        );
        w.pump();
        rx.try_recv().expect("answered").expect("forwarded");
    }
    let (tx, rx) = oneshot::channel();
    w.netting
        .on_command(NettingCommand::Close(spec.id, tx), &w.candidates);
    w.pump();
    LimitedRound { spec, headers, rx }
}

struct LimitedRound {
    spec: RoundSpec,
    headers: Vec<Option<quorate_protocol::netting::BundleHeader>>,
    rx: oneshot::Receiver<Result<crate::netting::CloseOutcome, crate::CoordinatorError>>,
}

/// Ticks the engine (and delivers what it sends) until the close answers.
fn tick_until_closed(w: &mut World, r: &mut LimitedRound) -> crate::netting::CloseOutcome {
    for _ in 0..100 {
        match r.rx.try_recv() {
            Ok(out) => return out.expect("closed"),
            Err(oneshot::error::TryRecvError::Empty) => {}
            Err(e) => panic!("close dropped: {e}"),
        }
        std::thread::sleep(Duration::from_millis(LIMITS_TIMEOUT_MS / 3));
        w.netting.on_tick(&w.candidates);
        w.pump();
    }
    panic!("the close did not finish");
}

fn settle_command(
    w: &mut World,
    spec: &RoundSpec,
    views: &[PublicOutputs],
    message: [u8; 32],
) -> Result<crate::netting::SettleOutcome, crate::CoordinatorError> {
    let (tx, mut rx) = oneshot::channel();
    w.netting.on_command(
        NettingCommand::Settle(
            Box::new(SettleRequest {
                round: spec.id,
                views: views.to_vec(),
                message,
            }),
            tx,
        ),
        &w.candidates,
    );
    w.pump();
    rx.try_recv().expect("answered")
}

#[test]
fn a_covered_limit_round_ends_with_a_covered_verdict_and_is_settled() {
    let (mut w, key) = world(0, 0);
    let mut r = limited_close(&mut w, &key, 100);
    let close = tick_until_closed(&mut w, &mut r);
    let limits = close.limits.as_ref().expect("limits outcome");
    assert_eq!(limits.verdicts.len(), 3);
    let verdict = limits.verdict(&r.spec).expect("quorum verdict");
    assert!(verdict.covered);
    assert!(verdict.failed.is_empty());
    assert_eq!(verdict.signers.len(), 3);
    assert_eq!(verdict.volumes.len(), 1);
    assert_eq!(verdict.volumes[0].net, Some(80));
    // Two parties, three nodes: one sealed bits message per (party, node).
    assert_eq!(limits.bits.len(), 6);
    assert_eq!(limits.attempts.len(), 1);
    assert_eq!(limits.attempts[0].outcome, "done");
    assert!(limits.stats.steps > 0 && limits.stats.bytes_in > 0 && limits.stats.bytes_out > 0);
    // Public outputs are released after the covered verdict.
    assert_eq!(close.public.len(), 3);
    assert!(close.culprits.is_empty());

    let (batch, _) = settle_round(
        &r.spec,
        &r.headers,
        &close.inputs,
        &close.public,
        &mut OsRng,
    )
    .expect("batch");
    let signed = settle_command(&mut w, &r.spec, &close.public, batch.message()).expect("signed");
    key.public
        .verify(&batch.message(), &signed.signature.signature, None)
        .expect("signature verifies");
}

#[test]
fn an_uncovered_limit_round_ends_not_covered_and_its_settlement_is_refused() {
    let (mut w, key) = world(0, 0);
    let mut r = limited_close(&mut w, &key, 10);
    let close = tick_until_closed(&mut w, &mut r);
    let limits = close.limits.as_ref().expect("limits outcome");
    let verdict = limits.verdict(&r.spec).expect("quorum verdict");
    assert!(!verdict.covered);
    assert_eq!(verdict.failed, vec!["desk-1".to_owned()]);
    assert!(close.public.is_empty(), "no public shares without cover");
    let refused = settle_command(&mut w, &r.spec, &[], [0; 32]).expect_err("refused");
    assert!(
        matches!(&refused, crate::CoordinatorError::RoundConflict(m) if m.contains("not covered")),
        "{refused:?}"
    );
}

#[test]
fn a_node_stalling_mid_mpc_times_out_the_attempt_and_the_retry_names_it() {
    let (mut w, key) = world(0, 0);
    let stalled = w.nodes[2].id.node_id();
    w.nodes[2].stall_until_attempt = 1;
    let mut r = limited_close(&mut w, &key, 100);
    let close = tick_until_closed(&mut w, &mut r);
    let limits = close.limits.as_ref().expect("limits outcome");
    assert_eq!(limits.attempts.len(), 2, "{:?}", limits.attempts);
    let first = &limits.attempts[0];
    assert_eq!(first.outcome, "timeout");
    assert_eq!(first.waited_for, vec![stalled]);
    assert!(first.step >= 2, "{first:?}");
    assert_eq!(limits.attempts[1].outcome, "done");
    assert!(limits.verdict(&r.spec).expect("verdict").covered);
}

#[test]
fn a_node_stalling_in_every_attempt_fails_the_phase_naming_it() {
    let (mut w, key) = world(0, 0);
    let stalled = w.nodes[1].id.node_id();
    w.nodes[1].stall_until_attempt = u32::MAX;
    let mut r = limited_close(&mut w, &key, 100);
    let close = tick_until_closed(&mut w, &mut r);
    let limits = close.limits.as_ref().expect("limits outcome");
    assert_eq!(limits.attempts.len(), 3);
    assert!(limits
        .attempts
        .iter()
        .all(|a| a.outcome == "timeout" && a.waited_for == vec![stalled]));
    assert!(limits.verdict(&r.spec).is_err());
    assert!(limits.failure().contains(&stalled.to_string()));
    assert!(close.public.is_empty());
    assert!(settle_command(&mut w, &r.spec, &[], [0; 32]).is_err());
}
