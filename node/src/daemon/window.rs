//! The daemon's window-approval dispatch (`crate::window`): approving a request
//! for the window, and the certificate check of signing requests.

use quorate_protocol::{
    request::SignedRequest,
    window::{WindowCertificate, WindowStatement},
    wire::frame::{Ack, Frame},
    Envelope, Payload,
};
use serde_json::json;

use super::{reject, Node};
use crate::{audit::AuditKind, keystore::StoredKey};

impl Node {
    /// A coordinator asks this node to approve a client request for the window.
    pub(super) fn on_window_approve(&mut self, env: Envelope) -> Ack {
        match self.admit_window_approve(&env) {
            Ok(ack) | Err(ack) => ack,
        }
    }

    /// The checks of a first-sight signing request (or the re-check of one allowed
    /// before: nothing is reserved twice), then the signed approval, recorded and
    /// sent to the coordinator once the records are durable.
    fn admit_window_approve(&mut self, env: &Envelope) -> Result<Ack, Ack> {
        if !self.roster.is_coordinator(&env.sender) {
            return Err(reject(
                "not_coordinator",
                "only a roster coordinator may ask for window approvals",
            ));
        }
        if self.shutting_down {
            return Err(reject("shutting_down", "node is shutting down"));
        }
        if self.audit_failed {
            return Err(reject(
                "audit_unavailable",
                "audit log cannot be written; node refuses to act",
            ));
        }
        let Payload::WindowApprove { request } = &env.payload else {
            return Err(reject("malformed", "not a window approval request"));
        };
        let signed = SignedRequest::decode(request)
            .map_err(|e| reject("malformed_request", e.to_string()))?;
        let key = self.key_for_request(env, &signed)?;
        let hash = signed.request.hash();
        self.admit_client_request(&signed, &key, hash)?;
        let members = key.share.public.members.len();
        let quorum =
            crate::window::required(self.policy.policy(), &signed.request, members).unwrap_or(0);
        let r = &signed.request;
        // What this node's limits counted (the policy just allowed it).
        let parsed = self.parsed_transaction(&signed, &key, &hash);
        let (asset, amount) = match self.policy.effect(r, &key.share.public, parsed.as_deref()) {
            Ok(e) => (e.asset, e.amount),
            Err(_) => (r.purpose.asset.clone(), r.purpose.amount),
        };
        let approval = WindowStatement::for_request(r, self.identity.node_id(), quorum)
            .counting(asset.clone(), amount)
            .sign(&self.identity)
            .map_err(|e| reject("internal", e.to_string()))?;
        if self.window.first_approval(hash, r.expires_at_ms) {
            self.record_or_refuse(
                AuditKind::WindowApproved {
                    request_hash: hex::encode(hash),
                },
                json!({
                    "key_id": r.key_id.to_string(),
                    "asset": asset,
                    "amount": amount,
                    "required_quorum": quorum,
                    "coordinator": env.sender.to_string(),
                }),
            )?;
        }
        let Some(peer) = self.roster.net(&env.sender).map(|p| p.peer_id) else {
            return Err(reject("unknown_peer", "coordinator has no address"));
        };
        let answer = Envelope::seal(
            &self.identity,
            env.suite,
            env.key,
            env.session,
            Payload::WindowApproved { approval },
        );
        // Held until the batch's records (decision, approval) are durable.
        self.send_tracked(peer, Frame::Deliver(answer), 0);
        Ok(Ack::Accepted)
    }

    /// A signing request under a `window_quorum` needs a certificate holding it;
    /// refused (nothing written) otherwise.
    pub(super) fn check_window_certificate(
        &mut self,
        signed: &SignedRequest,
        key: &StoredKey,
        hash: &[u8; 32],
        certificate: &WindowCertificate,
    ) -> Result<(), Ack> {
        let public = &key.share.public;
        let Some(quorum) =
            crate::window::required(self.policy.policy(), &signed.request, public.members.len())
        else {
            return Ok(());
        };
        self.window
            .check(&signed.request, hash, public, quorum, certificate)
            .map_err(|refusal| {
                tracing::warn!(reason = refusal.reason, detail = %refusal.detail, "signing request refused: window certificate");
                reject(refusal.reason, refusal.detail)
            })
    }
}
