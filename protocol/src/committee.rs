//! The participants of a key: who they are, their FROST indices and sealing keys.

use serde::{Deserialize, Serialize};

use crate::{error::ProtocolError, ids::NodeId};

/// One participant of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Node identity (Ed25519 public key).
    pub node: NodeId,
    /// FROST participant index (the identifier), non-zero and unique in the committee.
    pub index: u16,
    /// X25519 public key secret payloads are sealed to.
    pub seal_key: [u8; 32],
}

/// A validated set of participants: non-zero, distinct indices; distinct node ids;
/// valid Ed25519 node keys. Kept sorted by index.
///
/// Decoding validates too (invariant 8): a received committee must already be in
/// canonical order (strictly increasing indices) and pass [`Committee::new`], so a
/// committee that decodes is one every honest node reads the same way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "CommitteeWire")]
pub struct Committee {
    members: Vec<Member>,
}

/// The encoding of a [`Committee`] (same shape), checked on the way in.
#[derive(Deserialize)]
struct CommitteeWire {
    members: Vec<Member>,
}

impl TryFrom<CommitteeWire> for Committee {
    type Error = String;

    fn try_from(w: CommitteeWire) -> Result<Self, String> {
        if w.members.windows(2).any(|p| p[0].index >= p[1].index) {
            return Err("committee members are not in strictly increasing index order".into());
        }
        Committee::new(w.members).map_err(|e| e.to_string())
    }
}

impl Committee {
    /// Validates and builds a committee (invariant 8: identifiers non-zero and distinct).
    pub fn new(mut members: Vec<Member>) -> Result<Self, ProtocolError> {
        if members.len() < 2 {
            return Err(ProtocolError::InvalidParameters(
                "a committee needs at least 2 members".into(),
            ));
        }
        if members.len() > usize::from(u16::MAX) {
            return Err(ProtocolError::InvalidParameters(
                "committee too large".into(),
            ));
        }
        members.sort_by_key(|m| m.index);
        for (i, m) in members.iter().enumerate() {
            if m.index == 0 {
                return Err(ProtocolError::InvalidParameters(format!(
                    "node {} has participant index 0; indices start at 1",
                    m.node
                )));
            }
            if i > 0 && members[i - 1].index == m.index {
                return Err(ProtocolError::InvalidParameters(format!(
                    "participant index {} is used twice",
                    m.index
                )));
            }
            if members[..i].iter().any(|o| o.node == m.node) {
                return Err(ProtocolError::InvalidParameters(format!(
                    "node {} appears twice",
                    m.node
                )));
            }
            match ed25519_dalek::VerifyingKey::from_bytes(m.node.as_bytes()) {
                Ok(k) if !k.is_weak() => {}
                _ => {
                    return Err(ProtocolError::InvalidParameters(format!(
                        "node id {} is not a valid Ed25519 public key",
                        m.node
                    )))
                }
            }
        }
        Ok(Self { members })
    }

    /// Members, sorted by index.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Always false for a validated committee; provided for API symmetry.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The member with this node id.
    pub fn get(&self, node: &NodeId) -> Option<&Member> {
        self.members.iter().find(|m| &m.node == node)
    }

    /// The member with this FROST index.
    pub fn by_index(&self, index: u16) -> Option<&Member> {
        self.members.iter().find(|m| m.index == index)
    }

    /// Node ids, in index order.
    pub fn nodes(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.members.iter().map(|m| m.node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::NodeIdentity;
    use rand_chacha::{rand_core::SeedableRng, ChaCha20Rng};

    fn members(n: u16) -> Vec<Member> {
        let mut rng = ChaCha20Rng::seed_from_u64(9);
        (1..=n)
            .map(|index| Member {
                node: NodeIdentity::generate(&mut rng).node_id(),
                index,
                seal_key: [index as u8; 32],
            })
            .collect()
    }

    fn decode(members: Vec<Member>) -> Result<Committee, postcard::Error> {
        // Encode through the wire shape so invalid committees can be produced.
        #[derive(Serialize)]
        struct W {
            members: Vec<Member>,
        }
        postcard::from_bytes(&postcard::to_allocvec(&W { members }).expect("encode"))
    }

    #[test]
    fn committee_decodes_only_when_valid_and_canonical() {
        let good = Committee::new(members(3)).expect("valid");
        let bytes = postcard::to_allocvec(&good).expect("encode");
        assert_eq!(
            postcard::from_bytes::<Committee>(&bytes).expect("decode"),
            good
        );

        let mut unsorted = members(3);
        unsorted.swap(0, 2);
        assert!(decode(unsorted).is_err(), "unsorted committee decoded");
        let mut dup_index = members(3);
        dup_index[1].index = 1;
        assert!(decode(dup_index).is_err(), "duplicate index decoded");
        let mut zero = members(3);
        zero[0].index = 0;
        assert!(decode(zero).is_err(), "index 0 decoded");
        let mut dup_node = members(3);
        dup_node[2].node = dup_node[0].node;
        assert!(decode(dup_node).is_err(), "duplicate node decoded");
        assert!(decode(members(1)).is_err(), "one-member committee decoded");
    }
}
