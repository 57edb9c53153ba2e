//! The echo round shared by the DKG and resharing (invariant 5): after a broadcast
//! round, each receiver broadcasts, for every sender, the hash of the message it
//! received with that sender's envelope signature. Two validly signed, different
//! hashes for one sender prove it equivocated; a row whose signature does not
//! verify names the echoer as a forger.

use std::collections::BTreeMap;

use crate::{
    error::{Fault, ProtocolError},
    identity,
    ids::{KeyId, NodeId, SessionId},
    suite::Ciphersuite,
    wire::{EchoEntry, Header, Round, PROTOCOL_VERSION},
};

/// What one broadcast round's messages are bound to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Context {
    pub suite: Ciphersuite,
    pub key: KeyId,
    pub session: SessionId,
    /// The echoed (broadcast) round.
    pub round: Round,
}

/// One received broadcast message, as echoed.
#[derive(Debug, Clone)]
pub(crate) struct Heard {
    /// SHA-256 of its payload encoding.
    pub hash: [u8; 32],
    /// Its sender's envelope signature.
    pub signature: ed25519_dalek::Signature,
}

/// Our echo: one row per sender in `order` (every one must have been heard).
pub(crate) fn entries(
    order: impl Iterator<Item = NodeId>,
    heard: &BTreeMap<NodeId, Heard>,
) -> Result<Vec<EchoEntry>, ProtocolError> {
    order
        .map(|sender| {
            let h = heard.get(&sender).ok_or(ProtocolError::InvalidState(
                "echo before every message arrived",
            ))?;
            Ok(EchoEntry {
                sender,
                payload_hash: h.hash,
                signature: h.signature,
            })
        })
        .collect()
}

/// A received echo covers exactly the senders of `order`, in that order.
pub(crate) fn covers(entries: &[EchoEntry], order: impl Iterator<Item = NodeId>) -> bool {
    let order: Vec<NodeId> = order.collect();
    entries.len() == order.len() && entries.iter().zip(order).all(|(e, n)| e.sender == n)
}

/// Compares every echo with what we heard.
pub(crate) fn check(
    ctx: Context,
    echoes: &BTreeMap<NodeId, Vec<EchoEntry>>,
    heard: &BTreeMap<NodeId, Heard>,
) -> Result<(), ProtocolError> {
    for (echoer, rows) in echoes {
        for row in rows {
            let ours = heard
                .get(&row.sender)
                .ok_or_else(|| ProtocolError::aborted(*echoer, Fault::ForgedEcho))?;
            if row.payload_hash == ours.hash {
                continue;
            }
            let header = Header {
                version: PROTOCOL_VERSION,
                suite: ctx.suite,
                key: ctx.key,
                session: ctx.session,
                round: ctx.round,
                sender: row.sender,
            };
            let digest = header.signing_digest(&row.payload_hash);
            return if identity::verify(&row.sender, &digest, &row.signature).is_ok() {
                // Two different messages for one round, both signed by the sender.
                Err(ProtocolError::Equivocation {
                    culprit: row.sender,
                    round: ctx.round,
                })
            } else {
                Err(ProtocolError::aborted(*echoer, Fault::ForgedEcho))
            };
        }
    }
    Ok(())
}
