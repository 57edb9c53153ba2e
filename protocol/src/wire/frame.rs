//! Transport framing shared by the node and the coordinator.
//!
//! Each request on a stream is one [`Frame`], answered by one [`Ack`]. On the wire a
//! frame is a 4-byte big-endian length followed by its postcard encoding; the length
//! is checked against the cap *before* any buffer is allocated (invariant 7). The
//! async helpers use only the `futures-io` traits, so any runtime's streams work
//! (libp2p substreams in the daemons) and no runtime is pulled into this crate.

use futures_util::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use serde::{Deserialize, Serialize};

use super::{Envelope, MAX_MESSAGE_SIZE};
use crate::{error::ProtocolError, ids::NodeId};

/// Largest frame accepted: one envelope plus relay header.
pub const MAX_FRAME_SIZE: usize = MAX_MESSAGE_SIZE + 1024;
/// Largest acknowledgement accepted.
pub const MAX_ACK_SIZE: usize = 4096;

/// What one peer asks another to take.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Frame {
    /// An envelope for the receiving node itself.
    Deliver(Envelope),
    /// An envelope the receiver (a coordinator) should forward to `to`. Secret
    /// payloads inside are sealed end to end, so the relay learns nothing.
    Relay {
        /// Final recipient.
        to: NodeId,
        /// The sender's signed envelope, forwarded unchanged.
        envelope: Envelope,
    },
}

/// The answer to a frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ack {
    /// Taken for processing.
    Accepted,
    /// Refused before processing, with a stable reason code and a human detail.
    Rejected {
        /// Stable machine-readable reason (`policy:<rule>`, `sealed`, `busy`, …).
        reason: String,
        /// What to fix.
        detail: String,
    },
}

impl Frame {
    /// The envelope carried.
    pub fn envelope(&self) -> &Envelope {
        match self {
            Self::Deliver(e) | Self::Relay { envelope: e, .. } => e,
        }
    }
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_allocvec(value).unwrap_or_default()
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, ProtocolError> {
    let (v, rest) = postcard::take_from_bytes(bytes)
        .map_err(|_| ProtocolError::Malformed("frame does not decode"))?;
    if !rest.is_empty() {
        return Err(ProtocolError::Malformed("trailing bytes after frame"));
    }
    Ok(v)
}

async fn read_prefixed<R: AsyncRead + Unpin>(io: &mut R, max: usize) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            ProtocolError::TooLarge { len, max },
        ));
    }
    let mut buf = vec![0u8; len];
    io.read_exact(&mut buf).await?;
    Ok(buf)
}

async fn write_prefixed<W: AsyncWrite + Unpin>(io: &mut W, bytes: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(bytes.len())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "frame too large"))?;
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(bytes).await?;
    io.close().await
}

fn invalid(e: ProtocolError) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, e)
}

/// Reads one length-prefixed frame (cap [`MAX_FRAME_SIZE`]); the envelope inside is
/// decoded with its own checks but not signature-verified.
pub async fn read_frame<R: AsyncRead + Unpin>(io: &mut R) -> std::io::Result<Frame> {
    let bytes = read_prefixed(io, MAX_FRAME_SIZE).await?;
    let frame: Frame = decode(&bytes).map_err(invalid)?;
    // Re-check the inner envelope exactly as a standalone decode would.
    let env = frame.envelope();
    if env.version != super::PROTOCOL_VERSION {
        return Err(invalid(ProtocolError::UnsupportedVersion(env.version)));
    }
    if env.round != env.payload.round() {
        return Err(invalid(ProtocolError::Malformed(
            "round does not match payload",
        )));
    }
    Ok(frame)
}

/// Writes one length-prefixed frame and closes the write side.
pub async fn write_frame<W: AsyncWrite + Unpin>(io: &mut W, frame: &Frame) -> std::io::Result<()> {
    write_prefixed(io, &encode(frame)).await
}

/// Reads one acknowledgement (cap [`MAX_ACK_SIZE`]).
pub async fn read_ack<R: AsyncRead + Unpin>(io: &mut R) -> std::io::Result<Ack> {
    let bytes = read_prefixed(io, MAX_ACK_SIZE).await?;
    decode(&bytes).map_err(invalid)
}

/// Writes one acknowledgement and closes the write side.
pub async fn write_ack<W: AsyncWrite + Unpin>(io: &mut W, ack: &Ack) -> std::io::Result<()> {
    write_prefixed(io, &encode(ack)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Ciphersuite, KeyId, NodeIdentity, Payload, SessionId};
    use futures_util::io::Cursor;
    use rand_chacha::{rand_core::SeedableRng, ChaCha20Rng};

    fn block_on<F: core::future::Future>(f: F) -> F::Output {
        futures_executor::block_on(f)
    }

    #[test]
    fn frame_round_trips_and_oversize_is_refused_before_allocation() {
        let id = NodeIdentity::generate(&mut ChaCha20Rng::seed_from_u64(1));
        let env = Envelope::seal(
            &id,
            Ciphersuite::Ed25519,
            KeyId([1; 16]),
            SessionId([2; 32]),
            Payload::SignShare { share: vec![3; 32] },
        );
        let frame = Frame::Relay {
            to: id.node_id(),
            envelope: env,
        };
        let mut buf = Cursor::new(Vec::new());
        block_on(write_frame(&mut buf, &frame)).expect("write");
        let mut rd = Cursor::new(buf.into_inner());
        assert_eq!(block_on(read_frame(&mut rd)).expect("read"), frame);

        // A length prefix of 4 GiB − 1 with no body: refused from the prefix alone.
        let mut huge = Cursor::new(vec![0xff, 0xff, 0xff, 0xff]);
        let err = block_on(read_frame(&mut huge)).expect_err("too large");
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("exceeds"), "{err}");

        // Random bytes of a plausible length: a decode error, not a panic.
        let mut junk = vec![0, 0, 0, 16];
        junk.extend_from_slice(&[0xAB; 16]);
        assert!(block_on(read_frame(&mut Cursor::new(junk))).is_err());

        let ack = Ack::Rejected {
            reason: "policy:amount_limit".into(),
            detail: "over 1 BTC".into(),
        };
        let mut buf = Cursor::new(Vec::new());
        block_on(write_ack(&mut buf, &ack)).expect("write");
        assert_eq!(
            block_on(read_ack(&mut Cursor::new(buf.into_inner()))).expect("read"),
            ack
        );
    }
}
