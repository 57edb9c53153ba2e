//! Key lifecycle on a signer node: operator-approved refresh and resharing of the
//! keys it holds (or joins), with share generations that never mix.
//!
//! - [`policy`]: the `[lifecycle]` approvers of the policy file.
//! - `admit`: the checks on a coordinator's `ReshareStart`.
//! - [`Lifecycle`]: which keys are being reshared now (they are not signed with
//!   until the run ends), each key's generation, and unfinished runs.
//!
//! A run's life on this node (the daemon dispatches, this module decides):
//!
//! 1. `ReshareStart` passes the checks; the session id is claimed once; a
//!    lifecycle record (the signed start) is written; `lifecycle_started` audited.
//! 2. A new member's share arrives from the machine (`ReshareEvent::NewShare`):
//!    it is stored *pending* in the record, durably, before the confirmation leaves.
//! 3. With every member's confirmation (`ReshareEvent::Finished`, or the
//!    coordinator's `ReshareFinish` proof after a crash or timeout) the node
//!    switches in one keystore transaction: the new share replaces the old (or the
//!    old is deleted, for a member that leaves), the generation is recorded,
//!    `key_reshared` audited, and a new member attests the new public data to the
//!    coordinator.
//!
//! Interrupted anywhere, a node keeps its old generation in force; a pending share
//! waits for the proof that every member holds one too.

pub(crate) mod admit;
pub mod policy;

/// Interruption tests: in debug builds, the process exits at `step` when
/// `QUORATE_CRASH_AT` names it (as if killed there: nothing after it runs). Release
/// builds compile this out. Steps: `reshare:started`, `reshare:pending`,
/// `reshare:all-confirmed`, `reshare:switching`, `reshare:switched`.
pub(crate) fn crash_point(step: &str) {
    #[cfg(debug_assertions)]
    if std::env::var("QUORATE_CRASH_AT").is_ok_and(|v| v == step) {
        eprintln!("QUORATE_CRASH_AT={step}: exiting here");
        std::process::exit(86);
    }
    #[cfg(not(debug_assertions))]
    let _ = step;
}

use std::collections::BTreeMap;

use quorate_protocol::{KeyId, SessionId};

use crate::keystore::{Keystore, KeystoreError, LifecycleRecord};

/// Most unfinished runs one key may have here. A run this node confirmed is kept
/// until a finish proof (of it or of a later generation) arrives, because an abort
/// proves nothing; a coordinator that keeps starting and aborting runs is refused
/// at this bound (`too_many_unfinished`) until operators finish or clear them.
pub const MAX_UNFINISHED_RUNS: usize = 4;

/// Lifecycle state of the node's keys.
#[derive(Debug, Default)]
pub(crate) struct Lifecycle {
    running: BTreeMap<KeyId, SessionId>,
    records: BTreeMap<(KeyId, SessionId), LifecycleRecord>,
    generations: BTreeMap<KeyId, u64>,
}

impl Lifecycle {
    /// Loads generations and unfinished runs from the keystore.
    pub(crate) fn load(
        keystore: &Keystore,
        keys: impl Iterator<Item = KeyId>,
    ) -> Result<Self, KeystoreError> {
        let mut generations = BTreeMap::new();
        for key in keys {
            generations.insert(key, keystore.key_generation(&key)?);
        }
        let records = keystore
            .lifecycle_records()?
            .into_iter()
            .map(|(k, s, r)| ((k, s), r))
            .collect();
        Ok(Self {
            running: BTreeMap::new(),
            records,
            generations,
        })
    }

    /// The generation of `key` held here (0 if unknown).
    pub(crate) fn generation(&self, key: &KeyId) -> u64 {
        self.generations.get(key).copied().unwrap_or(0)
    }

    /// Whether a run of `key` is live here (its shares are not signed with).
    pub(crate) fn is_running(&self, key: &KeyId) -> bool {
        self.running.contains_key(key)
    }

    /// A run started.
    pub(crate) fn started(&mut self, key: KeyId, session: SessionId, record: LifecycleRecord) {
        self.running.insert(key, session);
        self.records.insert((key, session), record);
    }

    /// The session of a live run ended (finished or not).
    pub(crate) fn ended(&mut self, session: &SessionId) {
        self.running.retain(|_, s| s != session);
    }

    /// The unfinished run `session` of `key`.
    pub(crate) fn record(&self, key: &KeyId, session: &SessionId) -> Option<&LifecycleRecord> {
        self.records.get(&(*key, *session))
    }

    /// Every unfinished run of `key`.
    pub(crate) fn records_of(
        &self,
        key: &KeyId,
    ) -> impl Iterator<Item = (&SessionId, &LifecycleRecord)> {
        self.records
            .range((*key, SessionId([0; 32]))..=(*key, SessionId([0xff; 32])))
            .map(|((_, s), r)| (s, r))
    }

    /// Replaces the record of run `session` of `key`.
    pub(crate) fn update(&mut self, key: KeyId, session: SessionId, record: LifecycleRecord) {
        self.records.insert((key, session), record);
    }

    /// Whether this node confirmed a new generation of `key` that has neither
    /// finished nor been aborted: it must not sign with the old one meanwhile.
    pub(crate) fn finish_pending(&self, key: &KeyId) -> bool {
        self.records_of(key).any(|(_, r)| r.confirmed && !r.aborted)
    }

    /// The sessions a finish of `key` at `generation` ends: the run itself and
    /// every unfinished run of a generation it reaches.
    pub(crate) fn superseded(&self, key: &KeyId, generation: u64) -> Vec<SessionId> {
        self.records_of(key)
            .filter(|(_, r)| r.generation <= generation)
            .map(|(s, _)| *s)
            .collect()
    }

    /// A run of `key` finished at `generation`; `done` are the records removed.
    pub(crate) fn finished(&mut self, key: KeyId, generation: u64, done: &[SessionId]) {
        for s in done {
            self.records.remove(&(key, *s));
        }
        self.running.remove(&key);
        self.generations.insert(key, generation);
    }

    /// The coordinator aborted run `session` of `key`: dropped if this node had not
    /// confirmed, else kept (marked aborted) for a finish proof that may still come.
    pub(crate) fn aborted(&mut self, key: &KeyId, session: &SessionId) {
        if let Some(r) = self.records.get_mut(&(*key, *session)) {
            if r.confirmed {
                r.aborted = true;
            } else {
                self.records.remove(&(*key, *session));
            }
        }
        if self.running.get(key) == Some(session) {
            self.running.remove(key);
        }
    }

    /// A repaired share of `key` is at `generation`.
    pub(crate) fn set_generation(&mut self, key: KeyId, generation: u64) {
        self.generations.insert(key, generation);
    }

    /// A key this node generated by DKG (generation 0).
    pub(crate) fn generated(&mut self, key: KeyId) {
        self.generations.insert(key, 0);
    }
}
