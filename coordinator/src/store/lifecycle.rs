//! Refresh and reshare runs in the store, so a coordinator restart can finish or
//! abort what it started: one record per key with a live or unsettled run — the
//! participants, and once the run committed (every new member confirmed) the finish
//! proof sent to them. Public data only.

use quorate_protocol::{KeyId, NodeId, SessionId};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::Store;
use crate::error::CoordinatorError;

pub(super) const RUNS: TableDefinition<'_, &str, &[u8]> =
    TableDefinition::new("coordinator_lifecycle_runs");

/// A run as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredRun {
    /// The key.
    pub key_id: KeyId,
    /// The run's session.
    pub session: SessionId,
    /// Generation the run produces.
    pub generation: u64,
    /// Dealers and new members.
    pub participants: Vec<NodeId>,
    /// Nodes the finish proof goes to (participants and every old member).
    pub recipients: Vec<NodeId>,
    /// New members that have not yet attested the new generation.
    pub unreported: Vec<NodeId>,
    /// Recipients that have not yet acknowledged the finish (or abort).
    pub unacked: Vec<NodeId>,
    /// The encoded `ReshareFinish` envelope once the run committed; `None`: not
    /// committed (a restarted coordinator aborts it).
    pub finish: Option<Vec<u8>>,
    /// Unix ms when the run started.
    pub started_at_ms: u64,
}

fn name(key: &KeyId, session: &SessionId) -> String {
    format!("{key}/{session}")
}

impl Store {
    /// Writes (or replaces) a run record (one per key and session).
    pub fn put_lifecycle_run(&self, run: &StoredRun) -> Result<(), CoordinatorError> {
        let bytes = postcard::to_allocvec(run).map_err(|e| self.err(e))?;
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut t = txn.open_table(RUNS).map_err(|e| self.err(e))?;
            t.insert(name(&run.key_id, &run.session).as_str(), bytes.as_slice())
                .map_err(|e| self.err(e))?;
        }
        txn.commit().map_err(|e| self.err(e))
    }

    /// The commit point of a run, in one transaction: the key's new record and the
    /// run record holding the finish proof. A crash leaves both or neither.
    pub fn commit_lifecycle_run(
        &self,
        record: &crate::types::KeyRecord,
        run: &StoredRun,
    ) -> Result<(), CoordinatorError> {
        let key_bytes = postcard::to_allocvec(record).map_err(|e| self.err(e))?;
        let run_bytes = postcard::to_allocvec(run).map_err(|e| self.err(e))?;
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut keys = txn.open_table(super::KEYS).map_err(|e| self.err(e))?;
            keys.insert(record.key_id().to_string().as_str(), key_bytes.as_slice())
                .map_err(|e| self.err(e))?;
            let mut t = txn.open_table(RUNS).map_err(|e| self.err(e))?;
            t.insert(
                name(&run.key_id, &run.session).as_str(),
                run_bytes.as_slice(),
            )
            .map_err(|e| self.err(e))?;
        }
        txn.commit().map_err(|e| self.err(e))
    }

    /// Every stored run.
    pub fn lifecycle_runs(&self) -> Result<Vec<StoredRun>, CoordinatorError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = match txn.open_table(RUNS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(self.err(e)),
        };
        let mut out = Vec::new();
        for item in t.iter().map_err(|e| self.err(e))? {
            let (_, v) = item.map_err(|e| self.err(e))?;
            out.push(postcard::from_bytes(v.value()).map_err(|e| self.err(e))?);
        }
        Ok(out)
    }

    /// Removes a run record.
    pub fn remove_lifecycle_run(
        &self,
        key_id: &KeyId,
        session: &SessionId,
    ) -> Result<(), CoordinatorError> {
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut t = txn.open_table(RUNS).map_err(|e| self.err(e))?;
            t.remove(name(key_id, session).as_str())
                .map_err(|e| self.err(e))?;
        }
        txn.commit().map_err(|e| self.err(e))
    }
}
