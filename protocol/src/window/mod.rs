//! Window approvals: network-wide rolling-window limits (issue 14).
//!
//! A node's rolling-window limit (`per_window` in its policy) bounds what *it*
//! contributes to, but a coordinator that retries a refused request on other signer
//! subsets gets the network as a whole to sign up to `n − t + 1` windows' worth (with
//! `t − 1` compromised nodes). A **window certificate** closes that gap: before a
//! request under a windowed limit is signed, `q` members of the key's committee must
//! each have passed it through their policy — which reserves its amount in that
//! node's window — and signed a [`WindowApproval`] saying so. Every signer checks the
//! certificate ([`WindowCertificate::verify`]) before it contributes a share.
//!
//! Every signed amount then consumes reservations at `q − (t − 1)` or more honest
//! nodes, and the `n − t + 1` (or more) honest nodes hold at most one window `W` each,
//! so the network signs at most [`worst_case_multiple`]`(n, t, q)` =
//! `(n − t + 1)/(q − t + 1)` windows: `q = n` gives exactly `W`, `q = t` is the
//! behaviour without certificates.
//!
//! Byte formats (postcard; varint = unsigned LEB128; `[u8; N]` as N raw bytes):
//!
//! ```text
//! message   = "quorate/window-approval/v1\0" ‖ postcard(WindowStatement)
//! signature = Ed25519-Sign(node identity secret, message)          (64 bytes)
//!
//! WindowStatement:
//!   version          varint u16 = 1
//!   request_hash     32 raw bytes   SigningRequest::hash of the client's request
//!   key_id           16 raw bytes   the request's key
//!   node             32 raw bytes   the approving node (its identity key)
//!   asset            varint length ‖ UTF-8   the request's asset
//!   amount           varint u64     the request's amount (minor units)
//!   required_quorum  varint u16     the approver's own window_quorum (0: none configured)
//!   expires_at_ms    varint u64     the request's expiry (Unix ms)
//! WindowApproval   = statement: WindowStatement ‖ signature: 64 raw bytes
//! WindowCertificate = approvals: varint count (≤ 255) ‖ WindowApproval*
//! ```
//!
//! The sans-IO rules of the crate hold: nothing here reads a clock or a random
//! source; callers pass `now` and the committee.

mod approval;
mod bound;
mod certificate;
#[cfg(test)]
mod tests;

pub use approval::{
    WindowApproval, WindowStatement, WINDOW_APPROVAL_DOMAIN, WINDOW_STATEMENT_VERSION,
};
pub use bound::{bounds, worst_case_multiple, WindowBound};
pub use certificate::{WindowCertificate, MAX_CERTIFICATE_APPROVALS};

/// Refusal reason (in an `Ack::Rejected`) of a signer that needs a certificate for
/// this request and got none. The detail starts with [`quorum_detail`].
pub const REASON_CERTIFICATE_MISSING: &str = "window:certificate_missing";
/// Refusal reason of a signer whose certificate holds fewer valid approvals of
/// distinct committee members than its `window_quorum`. The detail starts with
/// [`quorum_detail`].
pub const REASON_CERTIFICATE_SHORT: &str = "window:certificate_short";
/// Refusal reason of a signer that found an approval in the certificate whose
/// signature does not verify under the node it names (the detail names it).
pub const REASON_CERTIFICATE_FORGED: &str = "window:certificate_forged";

/// The machine-readable start of a certificate refusal's detail:
/// `window_quorum=<q> have=<h>; ` (the coordinator reads `q` with
/// [`quorum_from_detail`]; it has no copy of node policy).
pub fn quorum_detail(quorum: u16, have: usize) -> String {
    format!("window_quorum={quorum} have={have}; ")
}

/// The `q` of a detail that starts with [`quorum_detail`].
pub fn quorum_from_detail(detail: &str) -> Option<u16> {
    let rest = detail.strip_prefix("window_quorum=")?;
    let end = rest.find(|c: char| !c.is_ascii_digit())?;
    rest[..end].parse().ok()
}
