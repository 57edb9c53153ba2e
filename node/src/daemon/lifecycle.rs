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
        self.admit_lifecycle_session(&env, "start a key lifecycle operation")?;
        self.check_unfinished(&env)?;
        let held = self.keys.get(&env.key);
        let admitted = admit::admit_start(
            &self.lifecycle_context(&env),
            &env,
            self.limits.session_timeout_ms,
        )?;
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
            aborted: false,
        };
        self.keystore
            .put_lifecycle(&env.key, &env.session, &record)
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
            OperationKind::Reshare | OperationKind::Repair => "reshare",
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

    /// Session admission for any lifecycle run (refresh, reshare, repair): a roster
    /// coordinator, room for a session, and no other run of the key live here.
    pub(super) fn admit_lifecycle_session(&self, env: &Envelope, action: &str) -> Result<(), Ack> {
        self.admit_coordinator_session(env, action)?;
        if self.lifecycle.is_running(&env.key) || self.repairing(&env.key) {
            return Err(reject(
                "session_exists",
                format!("a lifecycle run of key {} is already running", env.key),
            ));
        }
        Ok(())
    }

    /// What the admission checks need to know about this node and `env`'s key.
    pub(super) fn lifecycle_context(&self, env: &Envelope) -> Context<'_> {
        Context {
            me: self.identity.node_id(),
            roster: &self.roster,
            approvers: self.policy.policy().lifecycle(),
            held: self.keys.get(&env.key),
            generation: self.lifecycle.generation(&env.key),
            now_unix: unix_ms() / 1000,
        }
    }

    /// Unfinished runs of the key stay (an abort proves nothing): a new run is
    /// refused when the same approved operation already ran here (a replay), or
    /// when the key holds [`MAX_UNFINISHED_RUNS`](crate::lifecycle::MAX_UNFINISHED_RUNS).
    fn check_unfinished(&self, env: &Envelope) -> Result<(), Ack> {
        let digest_of = |start: &[u8]| {
            let env = Envelope::decode(start).ok()?;
            let Payload::ReshareStart { operation, .. } = env.payload else {
                return None;
            };
            quorate_protocol::lifecycle::ApprovedOperation::decode(&operation)
                .ok()
                .map(|op| op.operation.digest())
        };
        let Some(new) = digest_of(&env.encode()) else {
            return Err(reject("malformed", "not a reshare start"));
        };
        let runs: Vec<_> = self.lifecycle.records_of(&env.key).collect();
        if runs.iter().any(|(_, r)| digest_of(&r.start) == Some(new)) {
            return Err(reject(
                "operation_replayed",
                "this approved operation already ran here; operators approve a new one",
            ));
        }
        if runs.len() >= crate::lifecycle::MAX_UNFINISHED_RUNS {
            return Err(reject(
                "too_many_unfinished",
                format!(
                    "key {} has {} unfinished runs here; each waits for its finish proof",
                    env.key,
                    runs.len()
                ),
            ));
        }
        Ok(())
    }

    /// The resharing machine's events. A new share is made durable (pending) before
    /// the confirmation that follows it leaves; `false` stops the step's release.
    pub(super) fn on_reshare_event(&mut self, id: &SessionId, event: ReshareEvent) -> bool {
        let Some(key_id) = self.sessions.get(id).map(|s| s.key_id) else {
            return false;
        };
        match event {
            ReshareEvent::NewShare(share) => {
                if let Err(e) = self.keep_pending(&key_id, id, share) {
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

    fn keep_pending(
        &mut self,
        key_id: &KeyId,
        session: &SessionId,
        share: KeyShare,
    ) -> Result<(), String> {
        let mut record = self
            .lifecycle
            .record(key_id, session)
            .cloned()
            .ok_or("no lifecycle record")?;
        record.pending = Some(StoredKey {
            share,
            created_at_ms: unix_ms(),
            allowed_segments: operation_segments(&record.start),
        });
        record.confirmed = true;
        self.record_durably(
            AuditKind::ShareConfirmed {
                key_id: *key_id,
                session: *session,
            },
            json!({ "generation": record.generation }),
        )
        .map_err(|_| "audit log unavailable".to_string())?;
        self.keystore
            .put_lifecycle(key_id, session, &record)
            .map_err(|e| e.to_string())?;
        self.lifecycle.update(*key_id, *session, record);
        Ok(())
    }

    /// A finish proof (from any roster coordinator: it proves itself): checked
    /// against the run's start, then the run finishes here. For a run this node
    /// took no part in (an old member left out), the start in the proof is checked
    /// instead and a member that leaves retires its share. Accepted only once the
    /// switch is durable, so the coordinator knows who still needs the proof.
    pub(super) fn on_reshare_finish(&mut self, env: Envelope) -> Ack {
        if !self.roster.is_coordinator(&env.sender) {
            return reject(
                "not_coordinator",
                "only a roster coordinator may finish a run",
            );
        }
        if self.audit_failed {
            return reject(
                "audit_unavailable",
                "audit log cannot be written; node refuses to act",
            );
        }
        let Payload::ReshareFinish {
            start,
            public_key_package,
            confirms,
        } = &env.payload
        else {
            return reject("malformed", "not a reshare finish");
        };
        let stored = self.lifecycle.record(&env.key, &env.session).cloned();
        let start_bytes = match &stored {
            Some(r) => r.start.clone(),
            None => start.clone(),
        };
        let config: ReshareConfig = match admit::config_from_start(&start_bytes) {
            Ok(c) => c,
            Err(e) => return reject("bad_proof", format!("the run's start: {e}")),
        };
        if config.session != env.session || config.key_id != env.key {
            return reject("bad_proof", "the start is of another run");
        }
        let me = self.identity.node_id();
        let member = config.committee.get(&me).is_some();
        if stored.is_none() {
            // Finished here already: a member attests again (its report may have
            // been lost); a node that retired, or never held the key, acknowledges.
            if self.lifecycle.generation(&env.key) >= config.generation {
                if member {
                    if let Some(key) = self.keys.get(&env.key) {
                        let public = key.share.public.clone();
                        self.report_key(&env.session, env.sender, public);
                    }
                }
                return Ack::Accepted;
            }
            // An old member the run left out: it may only retire.
            let holds_old = self
                .keys
                .get(&env.key)
                .is_some_and(|k| k.share.public == config.old);
            if member || !holds_old {
                return reject(
                    "unknown_run",
                    format!("no unfinished run {} of key {} here", env.session, env.key),
                );
            }
        }
        if let Err(e) = verify_finish(&config, public_key_package, confirms) {
            return reject("bad_proof", e.to_string());
        }
        let result = self.finish_run(&env.key, &env.session, &config, stored.as_ref());
        if self.sessions.contains_key(&env.session) {
            self.end_session(&env.session, "done", Vec::new());
        }
        match result {
            Ok(()) => Ack::Accepted,
            Err(ack) => ack,
        }
    }

    /// The coordinator ends a run that did not commit. A run this node had not
    /// confirmed is dropped; a confirmed one keeps its pending share (an abort
    /// proves nothing: the run may have committed elsewhere) but the node signs
    /// with its old generation again, and a finish proof still switches it in.
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
        if reason.len() > 256 {
            return reject("malformed", "abort reason longer than 256 bytes");
        }
        let Some(record) = self.lifecycle.record(&env.key, &env.session).cloned() else {
            return Ack::Accepted; // finished, aborted already, or never here
        };
        let ours =
            admit::config_from_start(&record.start).is_ok_and(|c| c.coordinator == env.sender);
        if !ours {
            return reject("not_coordinator", "another coordinator started this run");
        }
        if record.aborted {
            return Ack::Accepted;
        }
        if let Err(ack) = self.record_durably(
            AuditKind::LifecycleAborted {
                key_id: env.key,
                session: env.session,
            },
            json!({ "reason": reason, "pending_share_kept": record.confirmed }),
        ) {
            return ack;
        }
        if self.sessions.contains_key(&env.session) {
            self.end_session(&env.session, "aborted", Vec::new());
        }
        let written = if record.confirmed {
            let mut kept = record;
            kept.aborted = true;
            self.keystore.put_lifecycle(&env.key, &env.session, &kept)
        } else {
            self.keystore.remove_lifecycle(&env.key, &env.session)
        };
        if let Err(e) = written {
            return reject("keystore_unavailable", e.to_string());
        }
        self.lifecycle.aborted(&env.key, &env.session);
        tracing::warn!(key = %env.key, session = %env.session, %reason, "lifecycle run aborted by the coordinator; old generation stays");
        Ack::Accepted
    }

    /// Switches the key to the run's generation in one keystore transaction (new
    /// share in, or old share out for a member that leaves), after its audit record
    /// is durable; a new member attests the new public data to the coordinator.
    fn finish_run(
        &mut self,
        key_id: &KeyId,
        session: &SessionId,
        config: &ReshareConfig,
        record: Option<&LifecycleRecord>,
    ) -> Result<(), Ack> {
        let key_id = *key_id;
        let me = self.identity.node_id();
        let member = config.committee.get(&me).is_some();
        let new = if member {
            let pending = record.and_then(|r| r.pending.as_ref());
            if pending.is_none() {
                tracing::error!(key = %key_id, "run finished but this member holds no new share");
                return Err(reject(
                    "no_pending_share",
                    "this member holds no share of the run",
                ));
            }
            pending
        } else {
            None
        };
        let role = if member { "member" } else { "retired" };
        self.record_durably(
            AuditKind::KeyReshared {
                key_id,
                generation: config.generation,
            },
            json!({
                "role": role,
                "session": session.to_string(),
                "threshold": config.threshold,
                "participants": config.committee.len(),
                "group_key": hex::encode(&config.old.verifying_key),
            }),
        )?;
        let mut done = self.lifecycle.superseded(&key_id, config.generation);
        if !done.contains(session) {
            done.push(*session);
        }
        crate::lifecycle::crash_point("reshare:switching");
        if let Err(e) = self
            .keystore
            .finish_lifecycle(&key_id, config.generation, new, &done)
        {
            tracing::error!(key = %key_id, error = %e, "cannot switch generations: the old one stays");
            return Err(reject("keystore_unavailable", e.to_string()));
        }
        crate::lifecycle::crash_point("reshare:switched");
        self.lifecycle.finished(key_id, config.generation, &done);
        match new {
            Some(key) => {
                self.keys.insert(key_id, key.clone());
            }
            None => {
                self.keys.remove(&key_id);
                self.presign.close_key(&key_id, &self.metrics);
            }
        }
        self.metrics.key_state(
            &key_id.to_string(),
            config.generation,
            config.committee.len(),
            Some(unix_ms() / 1000),
        );
        tracing::info!(key = %key_id, generation = config.generation, role, "lifecycle run finished");
        if let Some(key) = new {
            let public = key.share.public.clone();
            self.report_key(session, config.coordinator, public);
            self.open_pools_for(&key_id);
        }
        Ok(())
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
