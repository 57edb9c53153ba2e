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

impl NodeStep {
    /// Length of the postcard encoding, without encoding.
    pub fn encoded_len(&self) -> usize {
        1 + varint_len(usize::from(self.from))
            + boxes_len(&self.boxes)
            + scalars_len(&self.products)
            + scalars_len(&self.openings)
            + 1
            + self.transcript.map_or(0, |_| 32)
    }
}

impl KingStep {
    /// Length of the postcard encoding, without encoding.
    pub fn encoded_len(&self) -> usize {
        1 + boxes_len(&self.boxes)
            + scalars_len(&self.products)
            + scalars_len(&self.openings)
            + scalars_len(&self.roots)
            + varint_len(self.shares.len())
            + self.shares.iter().map(|s| scalars_len(s)).sum::<usize>()
            + varint_len(self.transcripts.len())
            + 32 * self.transcripts.len()
    }

    /// What a node hashes into its transcript: SHA-256 over the step and every
    /// broadcast field's length and elements (Montgomery limbs, little-endian),
    /// excluding `boxes` (they differ per recipient).
    pub fn broadcast_digest(&self) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(b"quorate/netting/limits/transcript/v1\0");
        h.update([self.step]);
        for v in [&self.products, &self.openings, &self.roots]
            .into_iter()
            .chain(self.shares.iter())
        {
            h.update((v.len() as u64).to_be_bytes());
            for x in v {
                h.update(x.montgomery_bytes());
            }
        }
        for t in &self.transcripts {
            h.update(t);
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
            products: vec![F::from_u64(5); 200],
            openings: vec![F::ONE; 3],
            transcript: Some([1; 32]),
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
            shares: vec![vec![F::ONE; 2]; 5],
            transcripts: vec![[3; 32]; 5],
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
