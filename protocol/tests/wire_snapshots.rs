//! Snapshots of every wire type's encoding. A change here is a wire-format change:
//! bump `PROTOCOL_VERSION` or keep the old encoding.

use quorate_protocol::{
    seal::SealedBox,
    wire::{EchoEntry, Header, PROTOCOL_VERSION},
    Ciphersuite, Envelope, KeyId, NodeId, NodeIdentity, Payload, Round, SessionId,
};
use rand_chacha::{rand_core::SeedableRng, ChaCha20Rng};

fn identity() -> NodeIdentity {
    NodeIdentity::generate(&mut ChaCha20Rng::seed_from_u64(7))
}

fn envelope(payload: Payload) -> Envelope {
    Envelope::seal(
        &identity(),
        Ciphersuite::Secp256k1Tr,
        KeyId([0x11; 16]),
        SessionId([0x22; 32]),
        payload,
    )
}

fn window_approval() -> quorate_protocol::window::WindowApproval {
    quorate_protocol::window::WindowStatement {
        version: quorate_protocol::window::WINDOW_STATEMENT_VERSION,
        request_hash: [0x23; 32],
        key_id: KeyId([0x11; 16]),
        node: identity().node_id(),
        asset: "BTC".into(),
        amount: 50_000,
        required_quorum: 5,
        expires_at_ms: 1_700_000_000_000,
    }
    .sign(&identity())
    .expect("own statement")
}

fn committee() -> quorate_protocol::Committee {
    let mut rng = ChaCha20Rng::seed_from_u64(8);
    let ids: Vec<_> = (0..3)
        .map(|_| std::sync::Arc::new(NodeIdentity::generate(&mut rng)))
        .collect();
    quorate_protocol::local::committee_of(&ids).expect("committee")
}

fn netting_spec() -> quorate_protocol::netting::RoundSpec {
    use quorate_protocol::netting::*;
    let party = |n: u8| Party {
        name: format!("desk-{n}"),
        sign_key: ed25519_dalek::SigningKey::from_bytes(&[n; 32])
            .verifying_key()
            .to_bytes(),
        seal_key: x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from([n + 0x40; 32]))
            .to_bytes(),
    };
    RoundSpec {
        id: RoundId([0x31; 16]),
        parties: vec![party(1), party(2)],
        instruments: vec![Instrument {
            name: "BTC-FUT".into(),
            kind: InstrumentKind::Future,
            asset: "USD".into(),
            multiplier: 10,
            price_move: -3,
            premium: 0,
        }],
        cutoff: 1_700_000_000,
        key: KeyId([0x11; 16]),
        committee: committee(),
        threshold: 2,
        bounds: Bounds::default(),
        limits: None,
    }
}

fn netting_payloads() -> Vec<(&'static str, Payload)> {
    use quorate_protocol::netting::{round::RoundAuthorization, *};
    let sealed = SealedBox {
        ephemeral: [0x41; 32],
        ciphertext: vec![0x42; 20],
    };
    let public = PublicOutputs {
        round: RoundId([0x31; 16]),
        spec_digest: [0x32; 32],
        inputs_digest: [0x33; 32],
        node: NodeId([0x34; 32]),
        public: vec![0x35; 64],
        signature: vec![0x36; 64],
    };
    vec![
        (
            "netting_round",
            Payload::NettingRound {
                spec: netting_spec(),
                authorization: RoundAuthorization {
                    client: [0x37; 32],
                    signature: vec![0x38; 64],
                },
            },
        ),
        (
            "netting_bundle",
            Payload::NettingBundle {
                header: BundleHeader {
                    round: RoundId([0x31; 16]),
                    spec_digest: [0x32; 32],
                    party: 1,
                    signed_at: 1_699_999_000,
                    commitments: vec![],
                    commitments_digest: [0x39; 32],
                    nets: vec![[0x3f; 32]; 2],
                    blocks: vec![[0x40; 32]; 2],
                    box_digests: vec![[0x3a; 32]; 3],
                    signature: vec![0x3b; 64],
                },
                sealed: sealed.clone(),
            },
        ),
        (
            "netting_close",
            Payload::NettingClose {
                round: RoundId([0x31; 16]),
                inputs: vec![Some([0x3c; 32]), None],
            },
        ),
        (
            "netting_public",
            Payload::NettingPublic {
                outputs: public.clone(),
            },
        ),
        (
            "netting_party",
            Payload::NettingParty {
                outputs: PartyOutputs {
                    round: RoundId([0x31; 16]),
                    spec_digest: [0x32; 32],
                    inputs_digest: [0x33; 32],
                    node: NodeId([0x34; 32]),
                    party: 0,
                    sealed: sealed.clone(),
                    signature: vec![0x3d; 64],
                },
            },
        ),
        (
            "settle_request",
            Payload::SettleRequest {
                round: RoundId([0x31; 16]),
                views: vec![public],
                message: vec![0x3e; 32],
            },
        ),
        (
            "limit_start",
            Payload::LimitStart {
                round: RoundId([0x31; 16]),
                attempt: 2,
            },
        ),
        (
            "limit_part",
            Payload::LimitPart {
                round: RoundId([0x31; 16]),
                attempt: 1,
                step: 3,
                part: 1,
                parts: 4,
                bytes: vec![0x51; 12],
            },
        ),
        (
            "limit_result",
            Payload::LimitResult {
                verdict: limits::verdict::LimitVerdict {
                    round: RoundId([0x31; 16]),
                    spec_digest: [0x32; 32],
                    inputs_digest: [0x33; 32],
                    node: NodeId([0x34; 32]),
                    attempt: 1,
                    covered: false,
                    failed: vec!["desk-2".into()],
                    volumes: vec![limits::verdict::AssetVolume {
                        asset: "USD".into(),
                        gross: Some(1500),
                        net: None,
                    }],
                    signature: vec![0x36; 64],
                },
                bits: vec![limits::verdict::LimitBits {
                    round: RoundId([0x31; 16]),
                    spec_digest: [0x32; 32],
                    inputs_digest: [0x33; 32],
                    node: NodeId([0x34; 32]),
                    party: 2,
                    attempt: 1,
                    sealed: sealed.clone(),
                    signature: vec![0x37; 64],
                }],
            },
        ),
    ]
}

#[test]
fn limit_check_steps_are_stable() {
    use quorate_protocol::netting::limits::{
        field::F,
        step::{KingStep, NodeStep, SetKeyBox, Signed},
    };
    let node = NodeStep {
        step: 12,
        from: 1,
        boxes: vec![SetKeyBox {
            set: 0b10110,
            from: 1,
            to: 2,
            ciphertext: vec![0x61; 48],
        }],
        key_digests: vec![(0b10110, [0x64; 32])],
        products: vec![F::from_u64(7)],
        openings: vec![-F::ONE],
        transcript: Some([0x62; 32]),
        signature: vec![0x65; 64],
    };
    let king = KingStep {
        step: 2,
        boxes: Vec::new(),
        products: vec![F::from_u64(9)],
        openings: vec![F::from_u64(4)],
        roots: vec![F::from_u64(2)],
        signed: vec![Signed {
            openings: vec![F::ONE],
            transcript: Some([0x63; 32]),
            key_digests: vec![(0b10110, [0x67; 32])],
            signature: vec![0x66; 64],
        }],
    };
    insta::assert_snapshot!(
        "limit_steps",
        format!(
            "node\n{}\nking\n{}\nking transcript digest {}",
            hex_lines(&postcard::to_allocvec(&node).expect("encode")),
            hex_lines(&postcard::to_allocvec(&king).expect("encode")),
            hex::encode(king.broadcast_digest())
        )
    );
}

fn hex_lines(bytes: &[u8]) -> String {
    bytes
        .chunks(32)
        .map(hex::encode)
        .collect::<Vec<_>>()
        .join("\n")
}

fn payloads() -> Vec<(&'static str, Payload)> {
    let sig = envelope(Payload::SignShare { share: vec![] }).signature;
    vec![
        (
            "dkg_round1",
            Payload::DkgRound1 {
                params: [0x11; 32],
                start: vec![0x22; 4],
                package: vec![1, 2, 3],
            },
        ),
        (
            "dkg_echo",
            Payload::DkgEcho {
                params: [0x11; 32],
                entries: vec![EchoEntry {
                    sender: identity().node_id(),
                    payload_hash: [0x33; 32],
                    signature: sig,
                }],
            },
        ),
        (
            "dkg_round2",
            Payload::DkgRound2 {
                params: [0x11; 32],
                recipient: identity().node_id(),
                sealed: SealedBox {
                    ephemeral: [0x44; 32],
                    ciphertext: vec![0x55; 20],
                },
            },
        ),
        (
            "dkg_confirm",
            Payload::DkgConfirm {
                params: [0x11; 32],
                group_key: vec![2; 33],
                transcript: [0x66; 32],
            },
        ),
        (
            "sign_request",
            Payload::SignRequest {
                request: b"req".to_vec(),
                message: b"msg".to_vec(),
                tweak: Some([0x77; 32]),
                certificate: quorate_protocol::window::WindowCertificate {
                    approvals: vec![window_approval()],
                },
            },
        ),
        (
            "sign_commit",
            Payload::SignCommit {
                commitments: vec![8; 4],
            },
        ),
        (
            "sign_package",
            Payload::SignPackage {
                package: vec![9; 4],
                tweak: None,
            },
        ),
        ("sign_share", Payload::SignShare { share: vec![10; 4] }),
        (
            "dkg_start",
            Payload::DkgStart {
                threshold: 2,
                committee: committee(),
                timeout_ms: 30_000,
                segments: Vec::new(),
            },
        ),
        (
            "dkg_complete",
            Payload::DkgComplete {
                public: quorate_protocol::GroupPublic {
                    suite: Ciphersuite::Ed25519,
                    key_id: KeyId([0x12; 16]),
                    threshold: 2,
                    members: committee()
                        .members()
                        .iter()
                        .map(|m| (m.node, m.index))
                        .collect(),
                    verifying_key: vec![0x13; 32],
                    public_key_package: vec![0x14; 8],
                },
                attestation: quorate_protocol::KeyAttestation {
                    node: NodeId([0x15; 32]),
                    signature: ed25519_dalek::Signature::from_bytes(&[0x16; 64]),
                },
            },
        ),
        (
            "presign_offer",
            Payload::PresignOffer {
                epoch: [0x17; 16],
                first: 300,
                commitments: vec![vec![0x18; 3], vec![0x19; 2]],
                lifetime_ms: 600_000,
            },
        ),
        (
            "presigned_sign",
            Payload::PresignedSign {
                request: b"req".to_vec(),
                message: b"msg".to_vec(),
                tweak: Some([0x1a; 32]),
                package: vec![0x1b; 4],
                epoch: [0x17; 16],
                index: 301,
                certificate: Default::default(),
            },
        ),
        (
            "reshare_start",
            Payload::ReshareStart {
                operation: vec![0x20; 5],
                dealers: vec![NodeId([0x21; 32])],
                old: quorate_protocol::GroupPublic {
                    suite: Ciphersuite::Secp256k1,
                    key_id: KeyId([0x12; 16]),
                    threshold: 2,
                    members: committee()
                        .members()
                        .iter()
                        .map(|m| (m.node, m.index))
                        .collect(),
                    verifying_key: vec![0x13; 33],
                    public_key_package: vec![0x14; 8],
                },
                committee: committee(),
                generation: 3,
                timeout_ms: 30_000,
            },
        ),
        (
            "reshare_commit",
            Payload::ReshareCommit {
                params: [0x22; 32],
                commitment: vec![vec![0x23; 33], vec![0x24; 33]],
            },
        ),
        (
            "reshare_echo",
            Payload::ReshareEcho {
                params: [0x22; 32],
                entries: vec![quorate_protocol::wire::EchoEntry {
                    sender: NodeId([0x25; 32]),
                    payload_hash: [0x26; 32],
                    signature: sig,
                }],
            },
        ),
        (
            "reshare_share",
            Payload::ReshareShare {
                params: [0x22; 32],
                recipient: NodeId([0x27; 32]),
                sealed: quorate_protocol::seal::SealedBox {
                    ephemeral: [0x28; 32],
                    ciphertext: vec![0x29; 48],
                },
            },
        ),
        (
            "reshare_confirm",
            Payload::ReshareConfirm {
                params: [0x22; 32],
                group_key: vec![0x2a; 33],
                transcript: [0x2b; 32],
            },
        ),
        (
            "reshare_finish",
            Payload::ReshareFinish {
                start: vec![0x2e; 4],
                public_key_package: vec![0x2d; 5],
                confirms: vec![vec![0x2c; 6]],
            },
        ),
        (
            "reshare_abort",
            Payload::ReshareAbort {
                reason: "deadline".into(),
            },
        ),
        (
            "repair_start",
            Payload::RepairStart {
                operation: vec![0x30; 5],
                public: quorate_protocol::GroupPublic {
                    suite: Ciphersuite::Ed25519,
                    key_id: KeyId([0x12; 16]),
                    threshold: 2,
                    members: committee()
                        .members()
                        .iter()
                        .map(|m| (m.node, m.index))
                        .collect(),
                    verifying_key: vec![0x13; 32],
                    public_key_package: vec![0x14; 8],
                },
                helpers: committee(),
                target: committee().members()[0],
                timeout_ms: 30_000,
            },
        ),
        (
            "repair_delta",
            Payload::RepairDelta {
                params: [0x31; 32],
                recipient: NodeId([0x32; 32]),
                sealed: quorate_protocol::seal::SealedBox {
                    ephemeral: [0x33; 32],
                    ciphertext: vec![0x34; 48],
                },
            },
        ),
        (
            "repair_sigma",
            Payload::RepairSigma {
                params: [0x31; 32],
                recipient: NodeId([0x35; 32]),
                sealed: quorate_protocol::seal::SealedBox {
                    ephemeral: [0x36; 32],
                    ciphertext: vec![0x37; 48],
                },
            },
        ),
        (
            "window_approve",
            Payload::WindowApprove {
                request: b"req".to_vec(),
            },
        ),
        (
            "window_approved",
            Payload::WindowApproved {
                approval: window_approval(),
            },
        ),
    ]
}

/// The bytes a window approval signs, and the certificate encoding on its own.
#[test]
fn window_approval_bytes_are_stable() {
    let approval = window_approval();
    insta::assert_snapshot!(
        "window_approval_message",
        hex_lines(&approval.statement.message())
    );
    let certificate = quorate_protocol::window::WindowCertificate {
        approvals: vec![approval],
    };
    insta::assert_snapshot!(
        "window_certificate",
        hex_lines(&postcard::to_allocvec(&certificate).expect("encode"))
    );
}

#[test]
fn every_payload_encoding_is_stable() {
    for (name, payload) in payloads().into_iter().chain(netting_payloads()) {
        let env = envelope(payload);
        assert_eq!(Envelope::decode(&env.encode()).expect("round trip"), env);
        env.verify().expect("signature");
        insta::assert_snapshot!(format!("envelope_{name}"), hex_lines(&env.encode()));
    }
}

#[test]
fn netting_digests_are_stable() {
    // Spec digest and the settlement message: what parties and signers hash.
    let spec = netting_spec();
    spec.validate().expect("valid");
    let batch = quorate_protocol::netting::SettlementBatch {
        round: spec.id,
        spec_digest: spec.digest(),
        inputs_digest: [0x33; 32],
        key: spec.key,
        transfers: vec![quorate_protocol::netting::Transfer {
            party: "desk-1".into(),
            asset: "USD".into(),
            amount: -30,
        }],
    };
    insta::assert_snapshot!(
        "netting_digests",
        format!(
            "spec {}\nsession {}\nbatch {}\nmessage {}",
            hex::encode(spec.digest()),
            spec.session(),
            hex::encode(batch.encode()),
            hex::encode(batch.message())
        )
    );
}

#[test]
fn header_and_signing_digest_are_stable() {
    let header = Header {
        version: PROTOCOL_VERSION,
        suite: Ciphersuite::Ed25519,
        key: KeyId([1; 16]),
        session: SessionId([2; 32]),
        round: Round::DkgEcho,
        sender: identity().node_id(),
    };
    insta::assert_snapshot!(
        "header",
        hex_lines(&postcard::to_allocvec(&header).expect("encode"))
    );
    insta::assert_snapshot!(
        "signing_digest",
        hex::encode(header.signing_digest(&[3; 32]))
    );
}

#[test]
fn enum_tags_are_stable() {
    let suites: Vec<u8> = Ciphersuite::ALL
        .iter()
        .flat_map(|s| postcard::to_allocvec(s).expect("encode"))
        .collect();
    assert_eq!(suites, vec![0, 1, 2]);
    let rounds = [
        Round::DkgRound1,
        Round::DkgEcho,
        Round::DkgRound2,
        Round::DkgConfirm,
        Round::SignRequest,
        Round::SignCommit,
        Round::SignPackage,
        Round::SignShare,
        Round::DkgStart,
        Round::DkgComplete,
        Round::NettingRound,
        Round::NettingBundle,
        Round::NettingClose,
        Round::NettingPublic,
        Round::NettingParty,
        Round::SettleRequest,
        Round::LimitStart,
        Round::LimitPart,
        Round::LimitResult,
        Round::PresignOffer,
        Round::PresignedSign,
        Round::ReshareStart,
        Round::ReshareCommit,
        Round::ReshareEcho,
        Round::ReshareShare,
        Round::ReshareConfirm,
        Round::ReshareFinish,
        Round::ReshareAbort,
        Round::RepairStart,
        Round::RepairDelta,
        Round::RepairSigma,
        Round::WindowApprove,
        Round::WindowApproved,
    ];
    let tags: Vec<u8> = rounds
        .iter()
        .flat_map(|r| postcard::to_allocvec(r).expect("encode"))
        .collect();
    assert_eq!(tags, (0..33).collect::<Vec<u8>>());
}

#[test]
fn transport_frames_are_stable() {
    use quorate_protocol::wire::frame::{Ack, Frame};
    let env = envelope(Payload::SignShare { share: vec![1; 4] });
    let relay = Frame::Relay {
        to: identity().node_id(),
        envelope: env,
    };
    insta::assert_snapshot!(
        "frame_relay",
        hex_lines(&postcard::to_allocvec(&relay).expect("encode"))
    );
    let ack = Ack::Rejected {
        reason: "policy:amount_limit".into(),
        detail: "x".into(),
    };
    insta::assert_snapshot!(
        "ack_rejected",
        hex_lines(&postcard::to_allocvec(&ack).expect("encode"))
    );
}
