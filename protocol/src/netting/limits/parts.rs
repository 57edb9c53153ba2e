//! Limit-check step messages are larger than one wire message (a 1000-comparison
//! run sends about 4 MiB per node in step 1), so they travel as numbered parts: the
//! postcard encoding of a [`NodeStep`](super::step::NodeStep) or
//! [`KingStep`](super::step::KingStep) cut into pieces of at most [`PART_BYTES`].
//! The receiver reassembles them (bounded by what the job can need) and decodes.

use super::{king::expected, Job, BITS};
use crate::error::ProtocolError;

/// Largest part (leaves room for the envelope under the 256 KiB message cap).
pub const PART_BYTES: usize = 192 * 1024;

/// Cuts an encoding into `(index, count, bytes)` parts.
pub fn split(bytes: &[u8]) -> Vec<(u32, u32, Vec<u8>)> {
    let chunks: Vec<&[u8]> = if bytes.is_empty() {
        vec![&[][..]]
    } else {
        bytes.chunks(PART_BYTES).collect()
    };
    let count = chunks.len() as u32;
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, c)| (i as u32, count, c.to_vec()))
        .collect()
}

/// Most bytes any step's message of `job` can encode to (node or king side, for a
/// committee of `n`), with slack for lengths and boxes.
pub fn max_message_bytes(job: &Job, n: usize) -> usize {
    let most = (0..super::STEPS)
        .map(|s| {
            let (p, o) = expected(job, s);
            // The king's answer to the bit check also carries a root per square.
            p + o
                + if s == super::node::steps::BIT_CHECK {
                    job.inputs * BITS
                } else {
                    0
                }
        })
        .max()
        .unwrap_or(0);
    // Step 0: a node sends one 48-byte box per (set it owns, other member); the
    // largest set count of any allowed threshold bounds it.
    let d = n.saturating_sub(1) / 2;
    let boxes = super::prss::set_count(n, d).saturating_mul(n) * 80;
    34 * most + boxes + 128 * n * n + 4096
}

/// Reassembles one message from its parts.
#[derive(Debug)]
pub struct Assembler {
    parts: Vec<Option<Vec<u8>>>,
    bytes: usize,
    max_bytes: usize,
}

impl Assembler {
    /// An assembler accepting at most `max_bytes` in all.
    pub fn new(max_bytes: usize) -> Self {
        Self {
            parts: Vec::new(),
            bytes: 0,
            max_bytes,
        }
    }

    /// Adds a part; returns the whole encoding once every part is in. A repeated
    /// identical part is ignored; a different one, a count that changes or exceeds
    /// the bound, or a part too large is refused.
    pub fn add(
        &mut self,
        index: u32,
        count: u32,
        bytes: Vec<u8>,
    ) -> Result<Option<Vec<u8>>, ProtocolError> {
        let bad = |m: &str| {
            Err(ProtocolError::Malformed(match m {
                "count" => "limit-check part count out of bounds or changed",
                "size" => "limit-check part too large",
                _ => "limit-check part differs from an earlier copy",
            }))
        };
        let max_parts = self.max_bytes.div_ceil(PART_BYTES).max(1);
        if count == 0 || count as usize > max_parts || index >= count {
            return bad("count");
        }
        if self.parts.is_empty() {
            self.parts = vec![None; count as usize];
        } else if self.parts.len() != count as usize {
            return bad("count");
        }
        if bytes.len() > PART_BYTES || self.bytes + bytes.len() > self.max_bytes {
            return bad("size");
        }
        match &self.parts[index as usize] {
            Some(prev) if *prev == bytes => return Ok(None),
            Some(_) => return bad("differs"),
            None => {}
        }
        self.bytes += bytes.len();
        self.parts[index as usize] = Some(bytes);
        if self.parts.iter().all(Option::is_some) {
            let whole = self
                .parts
                .iter_mut()
                .flat_map(|p| p.take().unwrap_or_default())
                .collect();
            self.parts.clear();
            self.bytes = 0;
            return Ok(Some(whole));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_reassemble_in_any_order_and_bad_parts_are_refused() {
        let data: Vec<u8> = (0..(PART_BYTES * 2 + 17)).map(|i| i as u8).collect();
        let parts = split(&data);
        assert_eq!(parts.len(), 3);
        let mut a = Assembler::new(data.len());
        assert_eq!(a.add(2, 3, parts[2].2.clone()).expect("part"), None);
        assert_eq!(a.add(2, 3, parts[2].2.clone()).expect("duplicate"), None);
        assert!(a.add(2, 3, vec![1]).is_err());
        assert_eq!(a.add(0, 3, parts[0].2.clone()).expect("part"), None);
        assert_eq!(
            a.add(1, 3, parts[1].2.clone()).expect("part"),
            Some(data.clone())
        );
        let mut small = Assembler::new(PART_BYTES);
        assert!(
            small.add(0, 3, vec![0]).is_err(),
            "more parts than the bound allows"
        );
        assert_eq!(split(&[]).len(), 1);
    }
}
