//! Window approvals on a signer node (issue 14): network-wide rolling-window limits.
//!
//! A client's asset limit may set `window_quorum` ([`policy`]). A request under
//! such a limit is signed here only with a **window certificate**: signed
//! approvals of at least that many distinct members of the key's committee for
//! exactly this request ([`quorate_protocol::window`]). A member approves a
//! request only after its own policy allowed it — the decision that reserves the
//! amount in its rolling window — so every signed amount has been reserved at `q`
//! members, and the network as a whole signs at most
//! `(n − t + 1)/(q − t + 1)` windows.
//!
//! On this node (the daemon dispatches, `daemon/window.rs`):
//!
//! - `WindowApprove`: the request passes the checks of a first-sight signing
//!   request (client authenticated before anything is written, `request_received`,
//!   `policy_decision`, which reserves the amount) or, when allowed before, the
//!   re-check (which counts nothing again); then the node signs a
//!   [`WindowStatement`](quorate_protocol::window::WindowStatement), records
//!   `window_approved` (request hash, asset, amount, quorum) and sends the
//!   approval — held, like every frame, until the records are durable. A repeated
//!   approve of the same request re-sends the approval without a new record.
//! - `SignRequest` / `PresignedSign`: after the policy decision and before the
//!   attempt is counted or a signer exists, [`required`] names the quorum and the
//!   certificate must hold it (`Windows::check`): refused
//!   `window:certificate_missing`, `window:certificate_short` (have / need) or
//!   `window:certificate_forged` (naming the node), and nothing is written.
//!
//! Reservations are never released early: they lapse with the rolling window. A
//! coordinator's word that a request failed proves nothing (a malicious one could
//! have it signed elsewhere), so releasing on it would break the bound.

pub mod policy;

use std::collections::BTreeMap;

use quorate_protocol::{
    request::SigningRequest,
    window::{self as proto, WindowCertificate},
    GroupPublic, ProtocolError,
};

use crate::policy::{AssetLimit, Policy};
use policy::WindowQuorum;

/// Requests remembered as certified or approved (each at most this many).
const CAPACITY: usize = 65_536;

/// The `window_quorum` policy rule: a quorum larger than the key's committee can
/// never be met, so such a request is refused before anything is reserved.
pub(crate) fn quorum_rule(limit: &AssetLimit, key: &GroupPublic) -> Result<(), String> {
    match limit.window_quorum {
        Some(q @ WindowQuorum::Count(_)) if q.needed(key.members.len()) > key.members.len() => {
            Err(format!(
                "window_quorum = {} but key {} has a committee of {}: no window certificate \
                 can ever be met",
                q.describe(),
                key.key_id,
                key.members.len()
            ))
        }
        _ => Ok(()),
    }
}

/// The approvals `request` needs under `policy` for a key of `members` members
/// (`None`: its client and asset set no `window_quorum`, or the client is unknown).
/// The asset is the one the limits count: the declared one of a raw request, the
/// client's `[bitcoin]` asset for a PSBT.
pub fn required(policy: &Policy, request: &SigningRequest, members: usize) -> Option<u16> {
    let client = policy.client_by_key(&request.client)?;
    let asset = match (&request.body, &client.bitcoin) {
        (quorate_protocol::request::RequestBody::BitcoinPsbt(_), Some(b)) => &b.asset,
        _ => &request.purpose.asset,
    };
    let q = client.limits.get(asset)?.window_quorum?;
    Some(u16::try_from(q.needed(members)).unwrap_or(u16::MAX))
}

/// Why a signing request's certificate is refused: the `Ack` reason and detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// `window:certificate_missing`, `window:certificate_short` or
    /// `window:certificate_forged`.
    pub reason: &'static str,
    /// Starts with `window_quorum=<q> have=<h>; ` for missing and short.
    pub detail: String,
}

/// What this node remembers about window certificates, in memory (bounded; each
/// entry forgotten when its request expires).
#[derive(Debug, Default)]
pub(crate) struct Windows {
    /// Request hash → (valid approvals counted, request expiry).
    certified: BTreeMap<[u8; 32], (usize, u64)>,
    /// Request hash → request expiry, for requests this node approved since start.
    approved: BTreeMap<[u8; 32], u64>,
}

impl Windows {
    /// Checks the certificate of a signing request for `key` that needs `quorum`
    /// approvals (a certificate verified before for this request counts again).
    pub(crate) fn check(
        &mut self,
        request: &SigningRequest,
        hash: &[u8; 32],
        key: &GroupPublic,
        quorum: u16,
        certificate: &WindowCertificate,
    ) -> Result<(), Refusal> {
        let need = usize::from(quorum);
        if self
            .certified
            .get(hash)
            .is_some_and(|(have, _)| *have >= need)
        {
            return Ok(());
        }
        if certificate.is_empty() {
            return Err(Refusal {
                reason: proto::REASON_CERTIFICATE_MISSING,
                detail: format!(
                    "{}this request needs approvals of {quorum} members of key {}'s committee \
                     (window_quorum); none attached",
                    proto::quorum_detail(quorum, 0),
                    key.key_id
                ),
            });
        }
        match certificate.verify(hash, key, quorum) {
            Ok(nodes) => {
                bounded_insert(
                    &mut self.certified,
                    *hash,
                    (nodes.len(), request.expires_at_ms),
                );
                Ok(())
            }
            Err(ProtocolError::CertificateShort { have, need }) => Err(Refusal {
                reason: proto::REASON_CERTIFICATE_SHORT,
                detail: format!(
                    "{}{have} valid approvals of distinct committee members for this request; \
                     {need} needed",
                    proto::quorum_detail(quorum, have)
                ),
            }),
            Err(ProtocolError::CertificateForged { node }) => Err(Refusal {
                reason: proto::REASON_CERTIFICATE_FORGED,
                detail: format!("the approval claiming node {node} does not verify"),
            }),
            Err(e) => Err(Refusal {
                reason: proto::REASON_CERTIFICATE_FORGED,
                detail: e.to_string(),
            }),
        }
    }

    /// Notes that this node approves `hash` now: true the first time since start
    /// (the approval is then recorded), false for a repeat.
    pub(crate) fn first_approval(&mut self, hash: [u8; 32], expires_at_ms: u64) -> bool {
        if self.approved.contains_key(&hash) {
            return false;
        }
        bounded_insert(&mut self.approved, hash, expires_at_ms);
        true
    }

    /// Forgets requests that expired before `now_ms`.
    pub(crate) fn expire(&mut self, now_ms: u64) {
        self.certified.retain(|_, (_, e)| *e >= now_ms);
        self.approved.retain(|_, e| *e >= now_ms);
    }
}

/// Inserts, evicting the entry that expires first when full.
fn bounded_insert<V: Copy + Expiry>(map: &mut BTreeMap<[u8; 32], V>, key: [u8; 32], value: V) {
    if map.len() >= CAPACITY && !map.contains_key(&key) {
        if let Some(first) = map.iter().min_by_key(|(_, v)| v.expiry()).map(|(k, _)| *k) {
            map.remove(&first);
        }
    }
    map.insert(key, value);
}

trait Expiry {
    fn expiry(&self) -> u64;
}

impl Expiry for u64 {
    fn expiry(&self) -> u64 {
        *self
    }
}

impl Expiry for (usize, u64) {
    fn expiry(&self) -> u64 {
        self.1
    }
}

#[cfg(test)]
mod tests;
