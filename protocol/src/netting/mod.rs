//! MPC netting of derivative obligations (sans-IO).
//!
//! A round ([`round::RoundSpec`]) fixes parties, instruments with their public marks,
//! bounds, the node committee and the settlement key. Each party Shamir-shares its
//! positions to the nodes with Pedersen commitments ([`share::deal`]); each node
//! checks its shares with one batched check ([`verify::accept`]); nodes compute
//! every output locally as a public linear combination of shares
//! ([`outputs`]); each node signs its output shares, sealed per owner
//! ([`open::NodeOutputs`]); owners and nodes reconstruct from any `t` shares that
//! match the homomorphic commitments and name the nodes that lied
//! ([`open::open_verified`], [`result::open_result`]); the public multilateral nets
//! become the [`settlement::SettlementBatch`] the network threshold-signs.
//!
//! Files follow the steps: `round` (definition), `input` (plaintext positions and
//! CSV), `amount` (i64 ↔ field), `pedersen` (commitments), `share` (party: deal),
//! `bundle` (signed bundle format), `verify` (node: accept), `outputs` (local
//! netting), `open` (node outputs, verified opening), `result` (party result),
//! `settlement` (batch), `reference` (plaintext baseline).

pub mod amount;
pub mod bundle;
pub mod input;
pub mod limits;
pub mod open;
pub mod outputs;
pub mod pedersen;
pub mod reference;
pub mod result;
pub mod round;
pub mod session;
pub mod settlement;
pub mod share;
pub mod verify;

pub use bundle::{BundleHeader, InputBundle};
pub use input::{PartyInput, Position};
pub use open::{NodeOutputs, PartyOutputs, PublicOutputs};
pub use result::PartyResult;
pub use round::{Bounds, Instrument, InstrumentKind, Party, RoundId, RoundSpec};
pub use settlement::{SettlementBatch, Transfer};
pub use verify::Accepted;
#[cfg(test)]
mod tests;
