//! `window_quorum` in policy, and the certificate check on a node.

use std::collections::BTreeMap;

use ed25519_dalek::SigningKey;
use quorate_protocol::{
    request::{Purpose, SignedRequest, SigningRequest, REQUEST_VERSION},
    window::{WindowCertificate, WindowStatement, REASON_CERTIFICATE_FORGED},
    Ciphersuite, GroupPublic, KeyId, NodeId, NodeIdentity,
};
use rand_chacha::{rand_core::SeedableRng, ChaCha20Rng};

use super::{policy::WindowQuorum, required, Windows};
use crate::policy::{Decision, Policy, PolicyEngine, Rule};

const KEY: KeyId = KeyId([3; 16]);

fn client() -> SigningKey {
    SigningKey::from_bytes(&[9; 32])
}

fn policy(quorum: &str) -> Result<Policy, crate::policy::PolicyError> {
    Policy::from_toml(&format!(
        "version = 1\n[clients.ex]\npublic_key = \"{}\"\nkeys = [\"*\"]\nallow_raw = true\n\
         [clients.ex.limits.BTC]\nper_request = 100\nper_window = 100\n{quorum}\n",
        hex::encode(client().verifying_key().to_bytes())
    ))
}

fn members(n: usize) -> Vec<NodeIdentity> {
    let mut rng = ChaCha20Rng::seed_from_u64(4);
    (0..n).map(|_| NodeIdentity::generate(&mut rng)).collect()
}

fn key(ids: &[NodeIdentity]) -> GroupPublic {
    GroupPublic {
        suite: Ciphersuite::Ed25519,
        key_id: KEY,
        threshold: 2,
        members: ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.node_id(), u16::try_from(i + 1).expect("index")))
            .collect::<BTreeMap<NodeId, u16>>(),
        verifying_key: Vec::new(),
        public_key_package: Vec::new(),
    }
}

fn request(amount: u64, now: u64) -> SignedRequest {
    SigningRequest {
        version: REQUEST_VERSION,
        client: client().verifying_key().to_bytes(),
        key_id: KEY,
        body: quorate_protocol::request::RequestBody::Raw {
            messages: vec![vec![1; 32]],
            tweak: None,
        },
        purpose: Purpose {
            asset: "BTC".into(),
            amount,
            destination: "bc1q".into(),
            memo: String::new(),
        },
        expires_at_ms: now + 60_000,
        nonce: [u8::try_from(amount % 256).expect("byte"); 16],
    }
    .sign(&client())
}

#[test]
fn window_quorum_parses_counts_and_all_and_refuses_the_rest() {
    let limit = |p: Policy| p.clients()["ex"].limits["BTC"].window_quorum;
    assert_eq!(limit(policy("").expect("none")), None);
    assert_eq!(
        limit(policy("window_quorum = 4").expect("count")),
        Some(WindowQuorum::Count(4))
    );
    assert_eq!(
        limit(policy("window_quorum = \"all\"").expect("all")),
        Some(WindowQuorum::All)
    );
    for bad in [
        "window_quorum = 0",
        "window_quorum = 256",
        "window_quorum = -1",
        "window_quorum = \"most\"",
    ] {
        let err = policy(bad).expect_err(bad).to_string();
        assert!(err.contains("limits.BTC.window_quorum"), "{bad}: {err}");
    }
}

#[test]
fn a_quorum_above_the_committee_is_refused_by_policy_before_anything_is_reserved() {
    let ids = members(3);
    let mut engine = PolicyEngine::new(policy("window_quorum = 4").expect("policy"));
    let now = 1_700_000_000_000;
    let d = engine.evaluate(&request(10, now), &key(&ids), now);
    assert_eq!(d.rule(), Some(Rule::WindowQuorum), "{d:?}");
    assert_eq!(
        engine.window_usage(&client().verifying_key().to_bytes(), "BTC", now),
        0
    );
    // "all" always fits the key; 3 of 3 is fine too.
    let mut engine = PolicyEngine::new(policy("window_quorum = 3").expect("policy"));
    assert!(matches!(
        engine.evaluate(&request(11, now), &key(&ids), now),
        Decision::Allow { .. }
    ));
}

#[test]
fn required_quorum_resolves_all_to_the_committee_size() {
    let r = request(10, 0);
    let p = policy("window_quorum = \"all\"").expect("policy");
    assert_eq!(required(&p, &r.request, 5), Some(5));
    let p = policy("window_quorum = 2").expect("policy");
    assert_eq!(required(&p, &r.request, 5), Some(2));
    assert_eq!(required(&policy("").expect("policy"), &r.request, 5), None);
}

#[test]
fn a_node_checks_certificates_and_remembers_one_that_held() {
    let ids = members(3);
    let public = key(&ids);
    let signed = request(10, 0);
    let hash = signed.request.hash();
    let approval = |id: &NodeIdentity| {
        WindowStatement::for_request(&signed.request, id.node_id(), 3)
            .sign(id)
            .expect("own")
    };
    let mut w = Windows::default();
    let empty = WindowCertificate::default();
    let missing = w
        .check(&signed.request, &hash, &public, 3, &empty)
        .expect_err("missing");
    assert_eq!(missing.reason, "window:certificate_missing");
    assert!(
        missing.detail.starts_with("window_quorum=3 have=0; "),
        "{}",
        missing.detail
    );
    let two = WindowCertificate {
        approvals: ids[..2].iter().map(approval).collect(),
    };
    let short = w
        .check(&signed.request, &hash, &public, 3, &two)
        .expect_err("short");
    assert_eq!(short.reason, "window:certificate_short");
    assert!(
        short.detail.starts_with("window_quorum=3 have=2; "),
        "{}",
        short.detail
    );
    let mut forged = approval(&ids[2]);
    forged.statement.amount = 1;
    let mut bad = two.clone();
    bad.approvals.push(forged);
    let refusal = w
        .check(&signed.request, &hash, &public, 3, &bad)
        .expect_err("forged");
    assert_eq!(refusal.reason, REASON_CERTIFICATE_FORGED);
    assert!(
        refusal.detail.contains(&ids[2].node_id().to_string()),
        "{}",
        refusal.detail
    );
    let all = WindowCertificate {
        approvals: ids.iter().map(approval).collect(),
    };
    w.check(&signed.request, &hash, &public, 3, &all)
        .expect("three of three");
    // Verified once for this request: later messages and retries may omit it.
    w.check(&signed.request, &hash, &public, 3, &empty)
        .expect("remembered");
    // Forgotten once the request expired.
    w.expire(signed.request.expires_at_ms + 1);
    assert!(w.check(&signed.request, &hash, &public, 3, &empty).is_err());
}

#[test]
fn an_approval_is_recorded_once_per_request() {
    let mut w = Windows::default();
    assert!(w.first_approval([1; 32], 100));
    assert!(!w.first_approval([1; 32], 100));
    w.expire(101);
    assert!(w.first_approval([1; 32], 100));
}
