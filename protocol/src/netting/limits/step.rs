//! The messages of the limit-check MPC: what a node sends the king (the
//! coordinator) in each step, and what the king sends back. The king only
//! reconstructs masked values and relays; it learns nothing it could not compute
//! from public values, and whatever it gets wrong the nodes' final checks catch.
//!
//! Encoding: postcard; every [`F`](super::field::F) is 32 canonical little-endian
//! bytes (non-canonical refused). Vectors are in the order the protocol defines
//! for that step (see `protocol/NETTING.md`, "Limit checks").

use serde::{Deserialize, Serialize};

use super::field::F;

/// A PRSS set key encrypted from the set's lowest position to another member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetKeyBox {
    /// The set (bit mask over committee positions).
    pub set: u64,
    /// Sender position.
    pub from: u16,
    /// Recipient position.
    pub to: u16,
    /// ChaCha20-Poly1305 ciphertext of the 32-byte key (48 bytes).
    pub ciphertext: Vec<u8>,
}

/// A node's message for one step.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NodeStep {
    /// Step number (0 = setup).
    pub step: u8,
    /// Sender position in the committee.
    pub from: u16,
    /// Step 0: set keys for the other members.
    pub boxes: Vec<SetKeyBox>,
    /// Masked degree-`2d` shares `w_i = z_i − R_i + m_i` of this step's products.
    pub products: Vec<F>,
    /// Shares of the values this step opens.
    pub openings: Vec<F>,
    /// Step 12: SHA-256 of every broadcast king step this node received.
    pub transcript: Option<[u8; 32]>,
}

/// The king's answer to one step (broadcast, except `boxes`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct KingStep {
    /// Step number it answers.
    pub step: u8,
    /// Step 0: the set-key boxes addressed to the recipient (per recipient).
    pub boxes: Vec<SetKeyBox>,
    /// `e = xy − R` per product.
    pub products: Vec<F>,
    /// Opened values (steps 2 and 3).
    pub openings: Vec<F>,
    /// Step 2: a square root of every opened `q`.
    pub roots: Vec<F>,
    /// Steps 11–13: every node's shares of the opened values, by position
    /// (each node checks them itself).
    pub shares: Vec<Vec<F>>,
    /// Step 12: every node's transcript digest, by position.
    pub transcripts: Vec<[u8; 32]>,
}

impl KingStep {
    /// The bytes a node hashes into its transcript (everything but `boxes`, which
    /// differ per recipient).
    pub fn broadcast_bytes(&self) -> Vec<u8> {
        let mut c = self.clone();
        c.boxes.clear();
        postcard::to_allocvec(&c).unwrap_or_default()
    }
}
