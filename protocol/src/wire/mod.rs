//! Wire format: signed envelopes, their payloads and the size-capped codec.
//!
//! Every protocol message is an [`Envelope`] binding the payload to its context
//! (version, ciphersuite, key id, session id, round, sender) under the sender's
//! Ed25519 signature (invariant 2). Encoding is postcard; decoding checks the size
//! cap before touching the bytes and rejects trailing data.

mod envelope;
pub mod frame;
mod payload;

pub use envelope::{Envelope, Header, MAX_MESSAGE_SIZE, PROTOCOL_VERSION};
pub use payload::{EchoEntry, Payload, Round};
