#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod aggregate;
pub mod attestation;
#[cfg(feature = "byzantine")]
pub mod byzantine;
pub mod committee;
pub mod dkg;
mod echo;
pub mod error;
pub mod identity;
pub mod ids;
pub mod inbox;
pub mod key;
pub mod lifecycle;
pub mod local;
pub mod machine;
pub mod netting;
pub mod presign;
pub mod psbt;
pub mod request;
pub mod roster;
#[cfg(feature = "round2-cache")]
pub mod round2_cache;
pub mod seal;
pub mod sign;
pub mod suite;
pub mod window;
pub mod wire;

pub use aggregate::Aggregator;
pub use attestation::{AttestedKey, KeyAttestation};
pub use committee::{Committee, Member};
pub use dkg::Dkg;
pub use error::{Fault, ProtocolError};
pub use identity::NodeIdentity;
pub use ids::{KeyId, NodeId, SessionId};
pub use key::{GroupPublic, KeyShare, SignatureBytes};
pub use machine::{Input, Output, TimerId, Timestamp};
#[cfg(feature = "round2-cache")]
pub use round2_cache::Round2Cache;
pub use sign::{SignTarget, Signer};
pub use suite::Ciphersuite;
pub use wire::{Envelope, Payload, Round};
