//! The daemon's refresh/reshare dispatch: admission (see `crate::lifecycle::admit`),
//! the machine's events, and the coordinator's finish proof. The decisions live in
//! `crate::lifecycle`; this file wires them to the keystore, audit log and network.

use quorate_protocol::{
    lifecycle::{verify_finish, OperationKind, Reshare, ReshareConfig, ReshareEvent},
    local::Party,
    wire::frame::Ack,
    Envelope, GroupPublic, Input, KeyId, KeyShare, NodeId, Payload, SessionId,
};
use serde_json::json;

use super::{reject, unix_ms, Node};
use crate::{
    audit::AuditKind,
    keystore::{LifecycleRecord, StoredKey},
    lifecycle::admit::{self, Context},
};

impl Node {
    /// A coordinator starts an operator-approved refresh or reshare: session
    /// admission, every lifecycle check, the node's own floors, a once-only session
    /// claim and a durable record of the start, then the machine.
    pub(super) fn on_reshare_start(&mut self, env: Envelope) -> Ack {
        match self.admit_reshare_start(env) {
            Ok(ack) | Err(ack) => ack,
        }
    }

    fn admit_reshare_start(&mut self, env: Envelope) -> Result<Ack, Ack> {
        self.admit_coordinator_session(&env, "start a key lifecycle operation")?;
        if self.lifecycle.is_running(&env.key) {
            return Err(reject(
                "session_exists",
                format!("a refresh or reshare of key {} is already running", env.key),
            ));
        }
        let held = self.keys.get(&env.key);
        let ctx = Context {
            me: self.identity.node_id(),
            roster: &self.roster,
            approvers: self.policy.policy().lifecycle(),
            held,
            generation: self.lifecycle.generation(&env.key),
            now_unix: unix_ms() / 1000,
        };
        let admitted = admit::admit_start(&ctx, &env, self.limits.session_timeout_ms)?;
        let config = admitted.config;
        self.check_dkg_spread(config.threshold, &config.committee)?;
        let dealer_share = config
            .dealers
            .contains(&self.identity.node_id())
            .then(|| held.map(|k| k.share.clone()))
            .flatten();
        let machine = Reshare::new(self.identity.clone(), config.clone(), dealer_share.as_ref())
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
        let record = LifecycleRecord {
            generation: config.generation,
            start: env.encode(),
            pending: None,
            confirmed: false,
        };
        self.keystore
            .put_lifecycle(&env.key, &record)
            .map_err(|e| reject("keystore_unavailable", e.to_string()))?;
        let op = &admitted.operation.operation;
        self.record_or_refuse(
            AuditKind::LifecycleStarted {
                key_id: env.key,
                session: env.session,
            },
            json!({
                "kind": op.kind.name(),
                "generation": config.generation,
                "threshold": config.threshold,
                "committee": config.committee.nodes().map(|n| n.to_string()).collect::<Vec<_>>(),
                "dealers": config.dealers.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
                "segments": op.segments,
                "approved_by": admitted.approved_by,
                "operation_digest": hex::encode(op.digest()),
            }),
        )?;
        tracing::info!(key = %env.key, session = %env.session, kind = op.kind.name(),
            generation = config.generation, t = config.threshold, n = config.committee.len(),
            "lifecycle run started");
        self.lifecycle.started(env.key, env.session, record);
        let kind = match op.kind {
            OperationKind::Refresh => "refresh",
            OperationKind::Reshare => "reshare",
        };
        self.start_session(
            env.session,
            Party::Reshare(machine),
            kind,
            (env.sender, env.key),
            None,
            Input::Start,
        );
        crate::lifecycle::crash_point("reshare:started");
        Ok(Ack::Accepted)
    }

    /// The resharing machine's events. A new share is made durable (pending) before
    /// the confirmation that follows it leaves; `false` stops the step's release.
    pub(super) fn on_reshare_event(&mut self, id: &SessionId, event: ReshareEvent) -> bool {
        let Some(key_id) = self.sessions.get(id).map(|s| s.key_id) else {
            return false;
        };
        match event {
            ReshareEvent::NewShare(share) => {
                if let Err(e) = self.keep_pending(&key_id, share) {
                    tracing::error!(key = %key_id, error = %e, "new share not stored: leaving the run");
                    self.end_session(id, "keystore_failed", Vec::new());
                    return false;
                }
                crate::lifecycle::crash_point("reshare:pending");
                true
            }
            // Every member confirmed to us too, but the switch waits for the
            // coordinator's finish proof: it is the one commit point, stored
            // before it is sent, so no node switches on a run the coordinator
            // could still abort.
            ReshareEvent::Finished { .. } => {
                tracing::info!(key = %key_id, session = %id, "every member confirmed; waiting for the coordinator's finish");
                crate::lifecycle::crash_point("reshare:all-confirmed");
                self.end_session(id, "done", Vec::new());
                true
            }
        }
    }

    fn keep_pending(&mut self, key_id: &KeyId, share: KeyShare) -> Result<(), String> {
        let mut record = self
            .lifecycle
            .record(key_id)
            .cloned()
            .ok_or("no lifecycle record")?;
        let config = admit::config_from_start(&record.start)?;
        let segments = operation_segments(&record.start);
        record.pending = Some(StoredKey {
            share,
            created_at_ms: unix_ms(),
            allowed_segments: segments,
        });
        record.confirmed = true;
        debug_assert_eq!(config.key_id, *key_id);
        self.keystore
            .put_lifecycle(key_id, &record)
            .map_err(|e| e.to_string())?;
        self.lifecycle.update(*key_id, record);
        Ok(())
    }

    /// The coordinator's proof that every new member confirmed (for a node that
    /// missed the end of the run): checked against the stored start, then the run
    /// finishes here as it would have in the session.
    pub(super) fn on_reshare_finish(&mut self, env: Envelope) -> Ack {
        if !self.roster.is_coordinator(&env.sender) {
            return reject(
                "not_coordinator",
                "only a roster coordinator may finish a run",
            );
        }
        let Payload::ReshareFinish { confirms } = &env.payload else {
            return reject("malformed", "not a reshare finish");
        };
        let Some(record) = self.lifecycle.record(&env.key).cloned() else {
            // Finished already (or never ran here): idempotent. A member reports
            // its generation again, in case the report was lost (a crash after the
            // switch).
            if let Some(key) = self.keys.get(&env.key) {
                let public = key.share.public.clone();
                self.report_key(&env.session, env.sender, public);
                return Ack::Accepted;
            }
            return if self.lifecycle.generation(&env.key) > 0 {
                Ack::Accepted
            } else {
                reject(
                    "unknown_run",
                    format!("no unfinished run of key {}", env.key),
                )
            };
        };
        let config: ReshareConfig = match admit::config_from_start(&record.start) {
            Ok(c) => c,
            Err(e) => return reject("keystore_unavailable", e),
        };
        if config.session != env.session {
            return reject(
                "unknown_run",
                format!("the unfinished run of key {} is another session", env.key),
            );
        }
        if let Err(e) = verify_finish(&config, confirms) {
            return reject("bad_proof", e.to_string());
        }
        self.finish_run(env.key, record.generation, &env.session);
        if self.sessions.contains_key(&env.session) {
            self.end_session(&env.session, "done", Vec::new());
        }
        Ack::Accepted
    }

    /// The coordinator ends a run that did not commit: its pending share (if any)
    /// is dropped and the old generation stays in force.
    pub(super) fn on_reshare_abort(&mut self, env: Envelope) -> Ack {
        if !self.roster.is_coordinator(&env.sender) {
            return reject(
                "not_coordinator",
                "only a roster coordinator may abort a run",
            );
        }
        let Payload::ReshareAbort { reason } = &env.payload else {
            return reject("malformed", "not a reshare abort");
        };
        let ours = self.lifecycle.record(&env.key).and_then(|r| {
            admit::config_from_start(&r.start)
                .ok()
                .filter(|c| c.session == env.session && c.coordinator == env.sender)
        });
        if ours.is_none() {
            // Finished, aborted already, or never here: idempotent.
            return Ack::Accepted;
        }
        if self.sessions.contains_key(&env.session) {
            self.end_session(&env.session, "aborted", Vec::new());
        }
        if let Err(e) = self.keystore.remove_lifecycle(&env.key) {
            return reject("keystore_unavailable", e.to_string());
        }
        self.lifecycle.aborted(&env.key);
        let mut reason = reason.clone();
        reason.truncate(256);
        self.record(
            AuditKind::LifecycleAborted {
                key_id: env.key,
                session: env.session,
            },
            json!({ "reason": reason }),
        );
        tracing::warn!(key = %env.key, session = %env.session, %reason, "lifecycle run aborted by the coordinator; old generation stays");
        Ack::Accepted
    }

    /// Switches `key_id` to `generation` in one keystore transaction (new share in,
    /// or old share out for a member that leaves), audits it, and has a new member
    /// attest the new public data to the coordinator.
    fn finish_run(&mut self, key_id: KeyId, generation: u64, session: &SessionId) {
        let Some(record) = self.lifecycle.record(&key_id).cloned() else {
            return;
        };
        let me = self.identity.node_id();
        let config = match admit::config_from_start(&record.start) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(key = %key_id, error = %e, "stored start unreadable");
                return;
            }
        };
        let member = config.committee.get(&me).is_some();
        if member && record.pending.is_none() {
            tracing::error!(key = %key_id, "run finished but this member holds no new share");
            return;
        }
        let new = if member {
            record.pending.as_ref()
        } else {
            None
        };
        crate::lifecycle::crash_point("reshare:switching");
        if let Err(e) = self.keystore.finish_lifecycle(&key_id, generation, new) {
            tracing::error!(key = %key_id, error = %e, "cannot switch generations: the old one stays");
            return;
        }
        crate::lifecycle::crash_point("reshare:switched");
        self.lifecycle.finished(key_id, generation);
        let role = match new {
            Some(key) => {
                self.keys.insert(key_id, key.clone());
                "member"
            }
            None => {
                self.keys.remove(&key_id);
                self.presign.close_key(&key_id, &self.metrics);
                "retired"
            }
        };
        self.metrics.key_state(
            &key_id.to_string(),
            generation,
            config.committee.len(),
            Some(unix_ms() / 1000),
        );
        self.record(
            AuditKind::KeyReshared { key_id, generation },
            json!({
                "role": role,
                "session": session.to_string(),
                "threshold": config.threshold,
                "participants": config.committee.len(),
                "group_key": hex::encode(&config.old.verifying_key),
            }),
        );
        tracing::info!(key = %key_id, generation, role, "lifecycle run finished");
        if let Some(key) = new {
            let public = key.share.public.clone();
            self.report_key(session, config.coordinator, public);
            self.open_pools_for(&key_id);
        }
    }

    /// Tells the coordinator the public data of a key generation this node now
    /// holds, attested with its identity key for clients (invariant 9).
    pub(super) fn report_key(
        &mut self,
        session: &SessionId,
        coordinator: NodeId,
        public: GroupPublic,
    ) {
        match quorate_protocol::attestation::attest(&self.identity, &public) {
            Ok(attestation) => {
                let report = Envelope::seal(
                    &self.identity,
                    public.suite,
                    public.key_id,
                    *session,
                    Payload::DkgComplete {
                        public,
                        attestation,
                    },
                );
                self.route(session, coordinator, report);
            }
            Err(e) => tracing::error!(error = %e, key = %public.key_id, "cannot attest key"),
        }
    }
}

/// The residency rule the stored start's approved operation sets.
fn operation_segments(start: &[u8]) -> Vec<String> {
    Envelope::decode(start)
        .ok()
        .and_then(|env| match env.payload {
            Payload::ReshareStart { operation, .. } => {
                quorate_protocol::lifecycle::ApprovedOperation::decode(&operation).ok()
            }
            _ => None,
        })
        .map(|op| op.operation.segments)
        .unwrap_or_default()
}
