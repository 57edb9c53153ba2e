//! Window certificates: what counts, what is refused, and the bound.

use std::collections::BTreeMap;

use rand_chacha::{rand_core::SeedableRng, ChaCha20Rng};

use super::*;
use crate::{Ciphersuite, GroupPublic, KeyId, NodeId, NodeIdentity, ProtocolError};

const HASH: [u8; 32] = [0x51; 32];
const KEY: KeyId = KeyId([0x52; 16]);

fn identities(n: usize, seed: u64) -> Vec<NodeIdentity> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    (0..n).map(|_| NodeIdentity::generate(&mut rng)).collect()
}

fn key_of(members: &[NodeIdentity], t: u16) -> GroupPublic {
    GroupPublic {
        suite: Ciphersuite::Ed25519,
        key_id: KEY,
        threshold: t,
        members: members
            .iter()
            .enumerate()
            .map(|(i, id)| (id.node_id(), u16::try_from(i + 1).expect("index")))
            .collect::<BTreeMap<NodeId, u16>>(),
        verifying_key: Vec::new(),
        public_key_package: Vec::new(),
    }
}

fn approve(id: &NodeIdentity, hash: [u8; 32], key: KeyId) -> WindowApproval {
    WindowStatement {
        version: WINDOW_STATEMENT_VERSION,
        request_hash: hash,
        key_id: key,
        node: id.node_id(),
        asset: "BTC".into(),
        amount: 40,
        required_quorum: 5,
        expires_at_ms: 1_000,
    }
    .sign(id)
    .expect("own statement")
}

fn certificate(approvals: Vec<WindowApproval>) -> WindowCertificate {
    WindowCertificate { approvals }
}

#[test]
fn counts_distinct_committee_members_with_valid_approvals() {
    let ids = identities(5, 1);
    let key = key_of(&ids, 3);
    let all = certificate(ids.iter().map(|id| approve(id, HASH, KEY)).collect());
    let counted = all.verify(&HASH, &key, 5).expect("five of five");
    let mut want: Vec<NodeId> = ids.iter().map(NodeIdentity::node_id).collect();
    want.sort();
    assert_eq!(counted, want);
    // Four are not five.
    let four = certificate(all.approvals[..4].to_vec());
    assert_eq!(
        four.verify(&HASH, &key, 5),
        Err(ProtocolError::CertificateShort { have: 4, need: 5 })
    );
    assert_eq!(four.verify(&HASH, &key, 4).expect("four").len(), 4);
}

#[test]
fn duplicate_approvals_count_once() {
    let ids = identities(5, 2);
    let key = key_of(&ids, 3);
    let one = approve(&ids[0], HASH, KEY);
    let cert = certificate(vec![
        one.clone(),
        one.clone(),
        one,
        approve(&ids[1], HASH, KEY),
    ]);
    assert_eq!(
        cert.verify(&HASH, &key, 3),
        Err(ProtocolError::CertificateShort { have: 2, need: 3 })
    );
}

#[test]
fn approvals_of_non_members_do_not_count() {
    let ids = identities(5, 3);
    let outsiders = identities(3, 4);
    let key = key_of(&ids[..3], 2);
    let mut approvals: Vec<WindowApproval> =
        outsiders.iter().map(|id| approve(id, HASH, KEY)).collect();
    approvals.push(approve(&ids[0], HASH, KEY));
    assert_eq!(
        certificate(approvals).verify(&HASH, &key, 2),
        Err(ProtocolError::CertificateShort { have: 1, need: 2 })
    );
}

#[test]
fn a_forged_approval_is_refused_naming_the_node() {
    let ids = identities(3, 5);
    let key = key_of(&ids, 2);
    let mut forged = approve(&ids[1], HASH, KEY);
    // The coordinator raises the amount of node 1's genuine approval.
    forged.statement.amount += 1;
    let cert = certificate(vec![
        approve(&ids[0], HASH, KEY),
        forged,
        approve(&ids[2], HASH, KEY),
    ]);
    assert_eq!(
        cert.verify(&HASH, &key, 2),
        Err(ProtocolError::CertificateForged {
            node: ids[1].node_id()
        })
    );
    // Node 0's approval re-labelled as node 2's.
    let mut relabelled = approve(&ids[0], HASH, KEY);
    relabelled.statement.node = ids[2].node_id();
    assert_eq!(
        certificate(vec![relabelled]).verify(&HASH, &key, 1),
        Err(ProtocolError::CertificateForged {
            node: ids[2].node_id()
        })
    );
}

#[test]
fn approvals_of_another_request_or_key_do_not_count() {
    let ids = identities(3, 6);
    let key = key_of(&ids, 2);
    let cert = certificate(vec![
        approve(&ids[0], HASH, KEY),
        approve(&ids[1], [0x99; 32], KEY),
        approve(&ids[2], HASH, KeyId([0x98; 16])),
    ]);
    assert_eq!(
        cert.verify(&HASH, &key, 2),
        Err(ProtocolError::CertificateShort { have: 1, need: 2 })
    );
    // The same approvals certify the other request for what they are.
    assert_eq!(
        cert.verify(&[0x99; 32], &key, 1).expect("one"),
        vec![ids[1].node_id()]
    );
}

#[test]
fn a_node_signs_only_statements_naming_itself() {
    let ids = identities(2, 7);
    let mut s = approve(&ids[0], HASH, KEY).statement;
    s.node = ids[1].node_id();
    assert!(s.sign(&ids[0]).is_err());
}

#[test]
fn coordinator_check_of_one_approval() {
    let ids = identities(2, 8);
    let a = approve(&ids[0], HASH, KEY);
    a.verify_for(&HASH, &KEY, &ids[0].node_id()).expect("valid");
    assert!(a.verify_for(&HASH, &KEY, &ids[1].node_id()).is_err());
    assert!(a.verify_for(&[0; 32], &KEY, &ids[0].node_id()).is_err());
    let mut tampered = a;
    tampered.statement.required_quorum = 1;
    assert!(tampered.verify_for(&HASH, &KEY, &ids[0].node_id()).is_err());
}

#[test]
fn certificates_over_the_bound_are_refused_on_decode() {
    let ids = identities(1, 9);
    let one = approve(&ids[0], HASH, KEY);
    let at_bound = certificate(vec![one.clone(); MAX_CERTIFICATE_APPROVALS]);
    let bytes = postcard::to_allocvec(&at_bound).expect("encode");
    let back: WindowCertificate = postcard::from_bytes(&bytes).expect("255 decode");
    assert_eq!(back, at_bound);
    let over = certificate(vec![one; MAX_CERTIFICATE_APPROVALS + 1]);
    let bytes = postcard::to_allocvec(&over).expect("encode");
    assert!(postcard::from_bytes::<WindowCertificate>(&bytes).is_err());
    assert!(over.verify(&HASH, &key_of(&ids, 1), 1).is_err());
}

#[test]
fn bound_multiple_follows_the_formula() {
    // 3-of-5: q = n gives exactly one window, q = t the n − t + 1 of today.
    assert_eq!(worst_case_multiple(5, 3, 5), Some((3, 3)));
    assert_eq!(worst_case_multiple(5, 3, 3), Some((3, 1)));
    assert_eq!(worst_case_multiple(5, 3, 4), Some((3, 2)));
    // Below t the signers' own reservations are what counts.
    assert_eq!(worst_case_multiple(5, 3, 1), Some((3, 1)));
    // A quorum above n can never be met.
    assert_eq!(worst_case_multiple(5, 3, 6), None);
    let b = bounds(5, 3);
    let qs: Vec<u16> = b.iter().map(|b| b.window_quorum).collect();
    assert_eq!(qs, vec![3, 4, 5]);
    let multiples: Vec<f64> = b.iter().map(|b| b.multiple).collect();
    assert_eq!(multiples, vec![3.0, 1.5, 1.0]);
    assert_eq!(b[2].multiple_all_honest, 1.0);
    assert!(bounds(2, 3).is_empty());
}

#[test]
fn refusal_details_carry_the_quorum() {
    let d = format!("{}need more", quorum_detail(5, 2));
    assert_eq!(quorum_from_detail(&d), Some(5));
    assert_eq!(quorum_from_detail("policy says no"), None);
}
