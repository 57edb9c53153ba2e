//! quorate signer node daemon.
//!
//! Not built yet (issue 3): the daemon will drive [`quorate_protocol`]'s DKG and
//! signer state machines over libp2p, with a sealed redb keystore, a policy engine
//! and a hash-chained audit log. This crate exists so the workspace has its final
//! shape and dependency direction (node → protocol) from the start.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub use quorate_protocol as protocol;
