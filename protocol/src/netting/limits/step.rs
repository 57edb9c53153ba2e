//! The messages of the limit-check MPC: what a node sends the king (the
//! coordinator) in each step, and what the king sends back. The king only
//! reconstructs masked values and relays; it learns nothing it could not compute
//! from public values, and whatever it gets wrong the nodes' final checks catch.
//!
//! Encoding: postcard; every [`F`] is 32 canonical little-endian
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
    /// Step 1: `(set, H("quorate/netting/limits/set-key-check/v1\0" ‖ session ‖ u64
    /// set ‖ key))` for every set containing the sender, in set order, so the king
    /// sees whether every member holds the same set key.
    pub key_digests: Vec<(u64, [u8; 32])>,
    /// Masked degree-`2d` shares `w_i = z_i − R_i + m_i` of this step's products.
    pub products: Vec<F>,
    /// Shares of the values this step opens.
    pub openings: Vec<F>,
    /// Step 16: SHA-256 chain of every broadcast king step this node received.
    pub transcript: Option<[u8; 32]>,
    /// Ed25519 signature by the node over [`signed_digest`] of its checked openings
    /// (the prefix the king relays to every node) and transcript.
    pub signature: Vec<u8>,
}

/// A node's signed checked openings, as the king relays them to every node.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Signed {
    /// The checked prefix of the node's openings.
    pub openings: Vec<F>,
    /// Its transcript digest (step 16).
    pub transcript: Option<[u8; 32]>,
    /// Its set-key digests (step 1).
    pub key_digests: Vec<(u64, [u8; 32])>,
    /// Its signature.
    pub signature: Vec<u8>,
}

/// What a node signs for a step: `H("quorate/netting/limits/node-step/v1\0" ‖
/// session ‖ u8 step ‖ u16 from ‖ u64 count ‖ canonical openings ‖ transcript (0
/// or 1 ‖ 32 bytes) ‖ u64 count ‖ (u64 set ‖ 32-byte digest) per key digest)`.
pub fn signed_digest(
    session: &[u8; 32],
    step: u8,
    from: u16,
    openings: &[F],
    transcript: Option<[u8; 32]>,
    key_digests: &[(u64, [u8; 32])],
) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"quorate/netting/limits/node-step/v1\0");
    h.update(session);
    h.update([step]);
    h.update(from.to_be_bytes());
    h.update((openings.len() as u64).to_be_bytes());
    for o in openings {
        h.update(o.to_bytes());
    }
    match transcript {
        Some(t) => {
            h.update([1]);
            h.update(t);
        }
        None => h.update([0]),
    }
    h.update((key_digests.len() as u64).to_be_bytes());
    for (set, d) in key_digests {
        h.update(set.to_be_bytes());
        h.update(d);
    }
    h.finalize().into()
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
    /// Step 4: a square root of every opened `q`.
    pub roots: Vec<F>,
    /// Checked steps: every node's signed checked openings, by position (each
    /// node verifies the signatures and opens them itself).
    pub signed: Vec<Signed>,
}

fn varint_len(mut v: usize) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

fn scalars_len(v: &[F]) -> usize {
    varint_len(v.len()) + 32 * v.len()
}

fn boxes_len(b: &[SetKeyBox]) -> usize {
    varint_len(b.len())
        + b.iter()
            .map(|x| {
                varint_len(x.set as usize)
                    + varint_len(usize::from(x.from))
                    + varint_len(usize::from(x.to))
                    + varint_len(x.ciphertext.len())
                    + x.ciphertext.len()
            })
            .sum::<usize>()
}

fn signed_len(s: &Signed) -> usize {
    varint_len(s.key_digests.len())
        + s.key_digests
            .iter()
            .map(|(m, _)| varint_len(*m as usize) + 32)
            .sum::<usize>()
        + scalars_len(&s.openings)
        + 1
        + s.transcript.map_or(0, |_| 32)
        + varint_len(s.signature.len())
        + s.signature.len()
}

impl NodeStep {
    /// Length of the postcard encoding, without encoding.
    pub fn encoded_len(&self) -> usize {
        1 + varint_len(usize::from(self.from))
            + boxes_len(&self.boxes)
            + varint_len(self.key_digests.len())
            + self
                .key_digests
                .iter()
                .map(|(m, _)| varint_len(*m as usize) + 32)
                .sum::<usize>()
            + scalars_len(&self.products)
            + scalars_len(&self.openings)
            + 1
            + self.transcript.map_or(0, |_| 32)
            + varint_len(self.signature.len())
            + self.signature.len()
    }
}

impl KingStep {
    /// Length of the postcard encoding, without encoding.
    pub fn encoded_len(&self) -> usize {
        1 + boxes_len(&self.boxes)
            + scalars_len(&self.products)
            + scalars_len(&self.openings)
            + scalars_len(&self.roots)
            + varint_len(self.signed.len())
            + self.signed.iter().map(signed_len).sum::<usize>()
    }

    /// What a node hashes into its transcript: SHA-256 over the step and every
    /// broadcast vector's length and elements (Montgomery limbs, little-endian);
    /// `boxes` (per recipient) and `signed` (verified by signature) are left out.
    pub fn broadcast_digest(&self) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(b"quorate/netting/limits/transcript/v1\0");
        h.update([self.step]);
        for v in [&self.products, &self.openings, &self.roots] {
            h.update((v.len() as u64).to_be_bytes());
            for x in v {
                h.update(x.montgomery_bytes());
            }
        }
        h.finalize().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_len_matches_postcard() {
        let n = NodeStep {
            step: 12,
            from: 300,
            boxes: vec![SetKeyBox {
                set: 0b11100,
                from: 2,
                to: 4,
                ciphertext: vec![7; 48],
            }],
            key_digests: vec![(0b11100, [4; 32]), (300, [5; 32])],
            products: vec![F::from_u64(5); 200],
            openings: vec![F::ONE; 3],
            transcript: Some([1; 32]),
            signature: vec![9; 64],
        };
        assert_eq!(
            n.encoded_len(),
            postcard::to_allocvec(&n).expect("encode").len()
        );
        let k = KingStep {
            step: 2,
            boxes: Vec::new(),
            products: vec![F::from_u64(9); 130],
            openings: vec![F::ONE; 2],
            roots: vec![F::ONE; 2],
            signed: vec![
                Signed {
                    openings: vec![F::ONE; 2],
                    transcript: Some([3; 32]),
                    key_digests: vec![(7, [2; 32])],
                    signature: vec![8; 64]
                };
                5
            ],
        };
        assert_eq!(
            k.encoded_len(),
            postcard::to_allocvec(&k).expect("encode").len()
        );
        let back: KingStep =
            postcard::from_bytes(&postcard::to_allocvec(&k).expect("encode")).expect("decode");
        assert_eq!(back, k);
    }
}
