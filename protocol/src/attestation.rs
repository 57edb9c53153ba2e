//! Key attestations: a committee member's signature, with its roster identity key,
//! over the public data of a key it helped generate (DESIGN §1, invariant 9).
//!
//! A client trusts a group key only when **every** committee member has attested
//! exactly the key data it was handed, each under the node id its pinned roster
//! lists for that member. A coordinator relays attestations but cannot make one.
//!
//! Byte format (postcard; varint = unsigned LEB128):
//!
//! ```text
//! message   = "quorate/key-attestation/v1\0" ‖ postcard(AttestedKey)
//! signature = Ed25519-Sign(node identity secret, message)       (RFC 8032, 64 bytes)
//!
//! AttestedKey:
//!   version        varint u16 = 1
//!   key_id         16 raw bytes
//!   suite          varint: 0 = secp256k1, 1 = secp256k1-tr, 2 = ed25519
//!   threshold      varint u16
//!   members        varint count, then per member in ascending index order:
//!                    node (32 raw bytes) ‖ index (varint u16)
//!                    ‖ verifying_share (varint length ‖ frost-core serialization)
//!   verifying_key  varint length ‖ frost-core serialization of the group key
//! ```

use serde::{Deserialize, Serialize};

use crate::{
    dispatch,
    error::ProtocolError,
    identity::{self, NodeIdentity},
    ids::{KeyId, NodeId},
    key::GroupPublic,
    roster::Roster,
    suite::Ciphersuite,
};

/// Domain separator of attestation messages (with its trailing NUL byte).
pub const ATTESTATION_DOMAIN: &[u8] = b"quorate/key-attestation/v1\0";

/// Version of the [`AttestedKey`] layout.
pub const ATTESTATION_VERSION: u16 = 1;

/// One committee member as attested.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttestedMember {
    /// The member's node id (Ed25519 identity key).
    pub node: NodeId,
    /// Its FROST participant index.
    pub index: u16,
    /// Its verifying share, serialized by frost-core.
    pub verifying_share: Vec<u8>,
}

/// What a key attestation signs: the public data of one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttestedKey {
    /// Layout version ([`ATTESTATION_VERSION`]).
    pub version: u16,
    /// Key id.
    pub key_id: KeyId,
    /// Ciphersuite.
    pub suite: Ciphersuite,
    /// Minimum number of signers.
    pub threshold: u16,
    /// The committee in ascending index order, with verifying shares.
    pub members: Vec<AttestedMember>,
    /// The group verifying key, serialized by frost-core.
    pub verifying_key: Vec<u8>,
}

/// A committee member's signature over an [`AttestedKey`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyAttestation {
    /// Who attests (must be a committee member).
    pub node: NodeId,
    /// Ed25519 signature over [`AttestedKey::message`].
    pub signature: ed25519_dalek::Signature,
}

impl AttestedKey {
    /// The attested form of a key's public data. Decodes the public key package and
    /// refuses it unless its group key is `public.verifying_key` and it holds a
    /// verifying share for every member, so attesting this body also attests the
    /// package a verifier will use.
    pub fn from_public(public: &GroupPublic) -> Result<Self, ProtocolError> {
        let mut members = dispatch!(public.suite, C => {
            let pkp = public.package::<C>()?;
            let vk = pkp
                .verifying_key()
                .serialize()
                .map_err(|e| ProtocolError::Crypto(e.to_string()))?;
            if vk != public.verifying_key {
                return Err(ProtocolError::Attestation(
                    "public key package holds another group key".into(),
                ));
            }
            if pkp.verifying_shares().len() != public.members.len() {
                return Err(ProtocolError::Attestation(
                    "public key package has shares of non-members".into(),
                ));
            }
            let mut out = Vec::with_capacity(public.members.len());
            for (node, index) in &public.members {
                let id = frost_core::Identifier::<C>::try_from(*index)
                    .map_err(|_| ProtocolError::Malformed("participant index"))?;
                let share = pkp.verifying_shares().get(&id).ok_or_else(|| {
                    ProtocolError::Attestation(format!("no verifying share for index {index}"))
                })?;
                out.push(AttestedMember {
                    node: *node,
                    index: *index,
                    verifying_share: share
                        .serialize()
                        .map_err(|e| ProtocolError::Crypto(e.to_string()))?,
                });
            }
            out
        });
        members.sort_by_key(|m| m.index);
        Ok(Self {
            version: ATTESTATION_VERSION,
            key_id: public.key_id,
            suite: public.suite,
            threshold: public.threshold,
            members,
            verifying_key: public.verifying_key.clone(),
        })
    }

    /// The exact bytes a member signs: [`ATTESTATION_DOMAIN`] ‖ postcard(self).
    pub fn message(&self) -> Vec<u8> {
        let mut out = ATTESTATION_DOMAIN.to_vec();
        // Serializing plain integers, byte arrays and vectors into a Vec cannot fail.
        out.extend(postcard::to_allocvec(self).unwrap_or_default());
        out
    }

    /// Signs this key's data as `identity`.
    ///
    /// # Security
    /// Uses the node's long-term identity key. A node must attest only a key it
    /// derived itself in a finished DKG (the body comes from its own key share's
    /// public data), never data handed to it by a peer or coordinator.
    pub fn sign(&self, identity: &NodeIdentity) -> KeyAttestation {
        KeyAttestation {
            node: identity.node_id(),
            signature: identity.sign(&self.message()),
        }
    }
}

impl KeyAttestation {
    /// Checks this attestation's signature over `body` (strict Ed25519 verification
    /// under the attesting node id).
    pub fn verify(&self, body: &AttestedKey) -> Result<(), ProtocolError> {
        identity::verify(&self.node, &body.message(), &self.signature).map_err(|_| {
            ProtocolError::Attestation(format!(
                "attestation by {} does not verify over this key",
                self.node
            ))
        })
    }
}

/// Attests `public` as `identity` (see [`AttestedKey::sign`]).
///
/// # Security
/// Signs with the node's identity key; call only with the public data of the node's
/// own, freshly derived key share.
pub fn attest(
    identity: &NodeIdentity,
    public: &GroupPublic,
) -> Result<KeyAttestation, ProtocolError> {
    Ok(AttestedKey::from_public(public)?.sign(identity))
}

/// Verifies that every committee member of `public` attested exactly this key data,
/// against a pinned `roster`: each member must be a signer node of the roster with
/// the same FROST index, each must have exactly one attestation that verifies under
/// its node id, and nobody else may appear. Returns the attested body.
pub fn verify_attestations(
    public: &GroupPublic,
    attestations: &[KeyAttestation],
    roster: &Roster,
) -> Result<AttestedKey, ProtocolError> {
    let body = AttestedKey::from_public(public)?;
    if body.members.len() < 2 || usize::from(body.threshold) > body.members.len() {
        return Err(ProtocolError::Attestation(
            "implausible committee or threshold".into(),
        ));
    }
    for m in &body.members {
        let listed = roster
            .by_node(&m.node)
            .and_then(|p| p.signer.as_ref())
            .map(|(index, _, _)| *index);
        match listed {
            Some(i) if i == m.index => {}
            Some(i) => {
                return Err(ProtocolError::Attestation(format!(
                    "member {} has index {} but the roster says {i}",
                    m.node, m.index
                )))
            }
            None => {
                return Err(ProtocolError::Attestation(format!(
                    "member {} is not a signer in the pinned roster",
                    m.node
                )))
            }
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    for a in attestations {
        if !body.members.iter().any(|m| m.node == a.node) {
            return Err(ProtocolError::Attestation(format!(
                "attestation by {}, who is not a committee member",
                a.node
            )));
        }
        if !seen.insert(a.node) {
            return Err(ProtocolError::Attestation(format!(
                "two attestations by {}",
                a.node
            )));
        }
        a.verify(&body)?;
    }
    let missing: Vec<String> = body
        .members
        .iter()
        .filter(|m| !seen.contains(&m.node))
        .map(|m| m.node.to_string())
        .collect();
    if !missing.is_empty() {
        return Err(ProtocolError::Attestation(format!(
            "{} of {} committee members attested (missing: {})",
            seen.len(),
            body.members.len(),
            missing.join(", ")
        )));
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rand_chacha::{rand_core::SeedableRng, ChaCha20Rng};

    use super::*;
    use crate::local::{identities, run_dkg};

    struct Fixture {
        nodes: Vec<Arc<NodeIdentity>>,
        public: GroupPublic,
        roster: Roster,
    }

    fn roster_of(nodes: &[Arc<NodeIdentity>], public: &GroupPublic) -> Roster {
        let mut text = String::new();
        for (i, n) in (100u16..).zip(nodes) {
            let index = public.members.get(&n.node_id()).copied().unwrap_or(i);
            text.push_str(&format!(
                "[[nodes]]\nname = \"n{index}\"\nnode_id = \"{}\"\nseal_key = \"{}\"\nindex = {index}\nsegment = \"s{index}\"\n",
                n.node_id(),
                hex::encode(n.public().seal_key)
            ));
        }
        Roster::from_toml(&text).expect("roster")
    }

    fn fixture(suite: Ciphersuite) -> Fixture {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let nodes = identities(3, &mut rng);
        let shares = run_dkg(&nodes, suite, 2, &mut rng).expect("dkg");
        let public = shares[0].public.clone();
        let roster = roster_of(&nodes, &public);
        Fixture {
            nodes,
            public,
            roster,
        }
    }

    fn all(f: &Fixture) -> Vec<KeyAttestation> {
        f.nodes
            .iter()
            .map(|n| attest(n, &f.public).expect("attest"))
            .collect()
    }

    #[test]
    fn key_attested_by_every_member_verifies_for_every_suite() {
        for suite in Ciphersuite::ALL {
            let f = fixture(suite);
            let body = verify_attestations(&f.public, &all(&f), &f.roster).expect("verifies");
            assert_eq!(body.verifying_key, f.public.verifying_key);
            assert_eq!(body.members.len(), 3);
            assert!(body.members.windows(2).all(|w| w[0].index < w[1].index));
        }
    }

    #[test]
    fn key_attested_by_fewer_than_all_members_is_refused() {
        let f = fixture(Ciphersuite::Secp256k1Tr);
        let mut atts = all(&f);
        atts.pop();
        let err = verify_attestations(&f.public, &atts, &f.roster).expect_err("refused");
        assert!(err.to_string().contains("2 of 3"), "{err}");
    }

    #[test]
    fn attestation_with_one_flipped_signature_byte_is_refused() {
        let f = fixture(Ciphersuite::Ed25519);
        let mut atts = all(&f);
        let mut bytes = atts[1].signature.to_bytes();
        bytes[10] ^= 1;
        atts[1].signature = ed25519_dalek::Signature::from_bytes(&bytes);
        assert!(verify_attestations(&f.public, &atts, &f.roster).is_err());
    }

    #[test]
    fn attestations_do_not_cover_another_group_key() {
        let f = fixture(Ciphersuite::Secp256k1);
        let other = fixture_with_seed(Ciphersuite::Secp256k1, &f.nodes, 8);
        let atts = all(&f);
        // Same committee, same key id, a different key: the old attestations fail.
        let mut swapped = other.clone();
        swapped.key_id = f.public.key_id;
        assert!(verify_attestations(&swapped, &atts, &f.roster).is_err());
        // A verifying key that disagrees with the package is refused outright.
        let mut vk_only = f.public.clone();
        vk_only.verifying_key = other.verifying_key.clone();
        assert!(AttestedKey::from_public(&vk_only).is_err());
    }

    fn fixture_with_seed(
        suite: Ciphersuite,
        nodes: &[Arc<NodeIdentity>],
        seed: u64,
    ) -> GroupPublic {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        run_dkg(nodes, suite, 2, &mut rng).expect("dkg")[0]
            .public
            .clone()
    }

    #[test]
    fn attestation_over_another_threshold_or_key_id_is_refused() {
        let f = fixture(Ciphersuite::Secp256k1);
        let atts = all(&f);
        let mut t = f.public.clone();
        t.threshold = 3;
        assert!(verify_attestations(&t, &atts, &f.roster).is_err());
        let mut k = f.public.clone();
        k.key_id = KeyId([0xaa; 16]);
        assert!(verify_attestations(&k, &atts, &f.roster).is_err());
    }

    #[test]
    fn attestation_by_a_node_outside_the_pinned_roster_is_refused() {
        let f = fixture(Ciphersuite::Secp256k1);
        let mut rng = ChaCha20Rng::seed_from_u64(99);
        let stranger = NodeIdentity::generate(&mut rng);
        // A roster pinned by the client that does not list the committee.
        let strangers = vec![
            Arc::new(stranger),
            Arc::new(NodeIdentity::generate(&mut rng)),
        ];
        let other_roster = roster_of(&strangers, &f.public);
        let err = verify_attestations(&f.public, &all(&f), &other_roster).expect_err("refused");
        assert!(err.to_string().contains("not a signer"), "{err}");
        // An extra attestation by a non-member is refused too.
        let mut atts = all(&f);
        atts.push(attest(&strangers[0], &f.public).expect("attest"));
        assert!(verify_attestations(&f.public, &atts, &f.roster).is_err());
    }

    #[test]
    fn duplicate_attestation_is_refused() {
        let f = fixture(Ciphersuite::Secp256k1);
        let mut atts = all(&f);
        atts[2] = atts[0].clone();
        assert!(verify_attestations(&f.public, &atts, &f.roster).is_err());
    }

    #[test]
    fn message_layout_matches_the_documented_bytes() {
        let f = fixture(Ciphersuite::Ed25519);
        let body = AttestedKey::from_public(&f.public).expect("body");
        let mut expected = ATTESTATION_DOMAIN.to_vec();
        expected.push(1); // version
        expected.extend_from_slice(&body.key_id.0);
        expected.push(2); // ed25519
        expected.push(2); // threshold
        expected.push(3); // members
        for m in &body.members {
            expected.extend_from_slice(&m.node.0);
            expected.push(u8::try_from(m.index).expect("small"));
            expected.push(u8::try_from(m.verifying_share.len()).expect("short"));
            expected.extend_from_slice(&m.verifying_share);
        }
        expected.push(32);
        expected.extend_from_slice(&body.verifying_key);
        assert_eq!(body.message(), expected);
        assert_eq!(ATTESTATION_DOMAIN.last(), Some(&0));
    }
}
