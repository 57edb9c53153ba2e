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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Committee {
    members: Vec<Member>,
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
