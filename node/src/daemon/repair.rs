//! The daemon's share-repair dispatch: admission (`crate::lifecycle::admit::
//! admit_repair`), the machine, and storing the repaired share. Repair changes no
//! other member's state, so an interrupted repair is simply run again.

use quorate_protocol::{
    lifecycle::{Repair, RepairEvent},
    local::Party,
    wire::frame::Ack,
    Envelope, Input, KeyShare, SessionId,
};
use serde_json::json;

use super::{reject, unix_ms, Node};
use crate::{audit::AuditKind, keystore::StoredKey, lifecycle::admit};

impl Node {
    /// A coordinator starts an operator-approved repair of one member's share.
    pub(super) fn on_repair_start(&mut self, env: Envelope) -> Ack {
        match self.admit_repair_start(env) {
            Ok(ack) | Err(ack) => ack,
        }
    }

    fn admit_repair_start(&mut self, env: Envelope) -> Result<Ack, Ack> {
        self.admit_lifecycle_session(&env, "start a share repair")?;
        let admitted = admit::admit_repair(
            &self.lifecycle_context(&env),
            &env,
            self.limits.session_timeout_ms,
        )?;
        let share = self.keys.get(&env.key).map(|k| k.share.clone());
        let machine = Repair::new(
            self.identity.clone(),
            admitted.config.clone(),
            share.as_ref(),
        )
        .map_err(|e| reject("bad_parameters", e.to_string()))?;
        match self.keystore.claim_lifecycle_run(&env.session) {
            Ok(true) => {}
            Ok(false) => {
                return Err(reject(
                    "session_exists",
                    format!("lifecycle session {} was already used here", env.session),
                ))
            }
            Err(e) => return Err(reject("keystore_unavailable", e.to_string())),
        }
        let op = &admitted.operation.operation;
        self.record_or_refuse(
            AuditKind::LifecycleStarted {
                key_id: env.key,
                session: env.session,
            },
            json!({
                "kind": "repair",
                "generation": op.from_generation,
                "target": admitted.config.target.node.to_string(),
                "helpers": admitted.config.helpers.nodes().map(|n| n.to_string()).collect::<Vec<_>>(),
                "approved_by": admitted.approved_by,
                "operation_digest": hex::encode(op.digest()),
            }),
        )?;
        tracing::info!(key = %env.key, session = %env.session, target = %admitted.config.target.node, "share repair started");
        self.repairs.insert(
            env.session,
            (env.key, op.from_generation, op.segments.clone()),
        );
        self.start_session(
            env.session,
            Party::Repair(machine),
            "repair",
            (env.sender, env.key),
            None,
            Input::Start,
        );
        Ok(Ack::Accepted)
    }

    /// The repair machine's result: a helper is done; the target stores its
    /// repaired share (after a durable `key_repaired` record) and attests it.
    pub(super) fn on_repair_event(&mut self, id: &SessionId, event: RepairEvent) -> bool {
        let Some((key_id, coordinator)) = self.sessions.get(id).map(|s| (s.key_id, s.coordinator))
        else {
            return false;
        };
        let (_, generation, segments) = self.repairs.remove(id).unwrap_or((key_id, 0, Vec::new()));
        if let RepairEvent::Repaired(share) = event {
            if let Err(e) = self.keep_repaired(share, generation, segments, id) {
                tracing::error!(key = %key_id, error = %e, "repaired share not stored");
                self.end_session(id, "keystore_failed", Vec::new());
                return false;
            }
            if let Some(public) = self.keys.get(&key_id).map(|k| k.share.public.clone()) {
                self.report_key(id, coordinator, public);
                self.open_pools_for(&key_id);
            }
        }
        self.end_session(id, "done", Vec::new());
        true
    }

    /// Whether a repair of `key` is live here.
    pub(super) fn repairing(&self, key: &quorate_protocol::KeyId) -> bool {
        self.repairs.values().any(|(k, ..)| k == key)
    }

    fn keep_repaired(
        &mut self,
        share: KeyShare,
        generation: u64,
        segments: Vec<String>,
        session: &SessionId,
    ) -> Result<(), String> {
        let key_id = share.public.key_id;
        let members = share.public.members.len();
        self.record_durably(
            AuditKind::KeyRepaired { key_id, generation },
            json!({ "session": session.to_string(), "participants": members }),
        )
        .map_err(|_| "audit log unavailable".to_string())?;
        let stored = StoredKey {
            share,
            created_at_ms: unix_ms(),
            allowed_segments: segments,
        };
        self.keystore.put_key(&stored).map_err(|e| e.to_string())?;
        self.keystore
            .set_key_generation(&key_id, generation)
            .map_err(|e| e.to_string())?;
        self.lifecycle.set_generation(key_id, generation);
        self.metrics.key_state(
            &key_id.to_string(),
            generation,
            members,
            Some(unix_ms() / 1000),
        );
        self.keys.insert(key_id, stored);
        tracing::info!(key = %key_id, generation, "share repaired and stored");
        Ok(())
    }
}
