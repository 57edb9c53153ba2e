//! Embedded (redb) store for key records, jobs and idempotency keys.
//!
//! Holds public data only: key records (group public keys), job states and results,
//! and idempotency keys. No key material is ever stored here.
//!
//! On [`Store::open`], jobs left `pending` by a previous process are marked `failed`
//! with a `coordinator-restarted` problem, and expired idempotency keys are pruned.

use std::path::{Path, PathBuf};

use quorate_protocol::KeyId;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::{
    api::{
        model::{Job, JobStatus},
        problem::{Problem, ProblemKind},
    },
    backend::now_ms,
    error::CoordinatorError,
    types::KeyRecord,
};

const KEYS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("coordinator_keys");
const JOBS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("coordinator_jobs");
const IDEMPOTENCY: TableDefinition<'_, &str, &[u8]> =
    TableDefinition::new("coordinator_idempotency");

/// How long an idempotency key is remembered.
pub const IDEMPOTENCY_TTL_MS: u64 = 24 * 60 * 60 * 1000;
/// Most idempotency keys remembered; the oldest are forgotten first beyond this.
pub const MAX_IDEMPOTENCY_KEYS: u64 = 100_000;

/// What an idempotency key is bound to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    /// The job the first request created.
    pub job_id: String,
    /// SHA-256 of the first request's body (hex).
    pub body_hash: String,
    /// When it was first seen.
    pub created_at_ms: u64,
}

/// Result of [`Store::create_job`].
#[derive(Debug, Clone, PartialEq)]
pub enum Created {
    /// The job was stored.
    New,
    /// The idempotency key was already bound; nothing was stored.
    Existing(IdempotencyRecord),
}

/// The coordinator's embedded database.
#[derive(Debug)]
pub struct Store {
    db: Database,
    path: PathBuf,
    interrupted: usize,
}

fn storage(path: &Path, e: impl std::fmt::Display) -> CoordinatorError {
    CoordinatorError::Storage(format!("{}: {e}", path.display()))
}

impl Store {
    /// Opens (creating if needed) the store at `path`, fails jobs left pending by a
    /// previous process and prunes expired idempotency keys.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, CoordinatorError> {
        let path = path.as_ref().to_path_buf();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| storage(parent, e))?;
        }
        let db = Database::create(&path).map_err(|e| storage(&path, e))?;
        let mut me = Self {
            db,
            path,
            interrupted: 0,
        };
        me.interrupted = me.recover()?;
        Ok(me)
    }

    fn err(&self, e: impl std::fmt::Display) -> CoordinatorError {
        storage(&self.path, e)
    }

    /// Creates the tables, fails pending jobs, prunes idempotency keys.
    fn recover(&self) -> Result<usize, CoordinatorError> {
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        let mut failed = 0;
        {
            txn.open_table(KEYS).map_err(|e| self.err(e))?;
            let mut jobs = txn.open_table(JOBS).map_err(|e| self.err(e))?;
            let mut pending = Vec::new();
            for item in jobs.iter().map_err(|e| self.err(e))? {
                let (_, v) = item.map_err(|e| self.err(e))?;
                let job: Job = serde_json::from_slice(v.value()).map_err(|e| self.err(e))?;
                if job.status == JobStatus::Pending {
                    pending.push(job);
                }
            }
            let now = now_ms();
            for mut job in pending {
                job.status = JobStatus::Failed;
                job.finished_at_ms = Some(now);
                job.problem = Some(Problem::new(
                    ProblemKind::CoordinatorRestarted,
                    "coordinator restarted while the job was running; the request was not \
                     completed and may be resubmitted with a new nonce",
                ));
                let bytes = serde_json::to_vec(&job).map_err(|e| self.err(e))?;
                jobs.insert(job.id.as_str(), bytes.as_slice())
                    .map_err(|e| self.err(e))?;
                failed += 1;
            }
            let mut idem = txn.open_table(IDEMPOTENCY).map_err(|e| self.err(e))?;
            prune_idempotency(&mut idem, now, &self.path)?;
        }
        txn.commit().map_err(|e| self.err(e))?;
        Ok(failed)
    }

    /// Jobs that were pending when the store was opened and have been marked failed.
    pub fn interrupted_jobs(&self) -> usize {
        self.interrupted
    }

    /// Stores a key record (replacing one with the same id).
    pub fn put_key(&self, record: &KeyRecord) -> Result<(), CoordinatorError> {
        let bytes = postcard::to_allocvec(record).map_err(|e| self.err(e))?;
        let name = record.key_id().to_string();
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut t = txn.open_table(KEYS).map_err(|e| self.err(e))?;
            t.insert(name.as_str(), bytes.as_slice())
                .map_err(|e| self.err(e))?;
        }
        txn.commit().map_err(|e| self.err(e))
    }

    /// One key record.
    pub fn key(&self, key_id: &KeyId) -> Result<Option<KeyRecord>, CoordinatorError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = txn.open_table(KEYS).map_err(|e| self.err(e))?;
        let v = t
            .get(key_id.to_string().as_str())
            .map_err(|e| self.err(e))?;
        v.map(|v| self.decode_key(v.value())).transpose()
    }

    /// Decodes a key record; records written before key attestations existed decode
    /// with none (clients refuse such keys: they are not attested).
    fn decode_key(&self, bytes: &[u8]) -> Result<KeyRecord, CoordinatorError> {
        #[derive(serde::Deserialize)]
        struct Unattested {
            public: quorate_protocol::GroupPublic,
            created_at_ms: u64,
        }
        postcard::from_bytes::<KeyRecord>(bytes).or_else(|e| {
            postcard::from_bytes::<Unattested>(bytes)
                .map(|old| KeyRecord {
                    public: old.public,
                    attestations: Vec::new(),
                    created_at_ms: old.created_at_ms,
                })
                .map_err(|_| self.err(e))
        })
    }

    /// Every key record, oldest first.
    pub fn keys(&self) -> Result<Vec<KeyRecord>, CoordinatorError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = txn.open_table(KEYS).map_err(|e| self.err(e))?;
        let mut out: Vec<KeyRecord> = Vec::new();
        for item in t.iter().map_err(|e| self.err(e))? {
            let (_, v) = item.map_err(|e| self.err(e))?;
            out.push(self.decode_key(v.value())?);
        }
        out.sort_by_key(|k| (k.created_at_ms, k.key_id()));
        Ok(out)
    }

    /// Stores a new job, binding `idempotency` `(scope, body_hash)` to it atomically.
    /// If the scope is already bound, nothing is stored and the binding is returned.
    pub fn create_job(
        &self,
        job: &Job,
        idempotency: Option<(&str, &str)>,
    ) -> Result<Created, CoordinatorError> {
        let bytes = serde_json::to_vec(job).map_err(|e| self.err(e))?;
        let now = now_ms();
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            if let Some((scope, body_hash)) = idempotency {
                let mut idem = txn.open_table(IDEMPOTENCY).map_err(|e| self.err(e))?;
                let existing = idem
                    .get(scope)
                    .map_err(|e| self.err(e))?
                    .map(|v| serde_json::from_slice::<IdempotencyRecord>(v.value()))
                    .transpose()
                    .map_err(|e| self.err(e))?;
                if let Some(rec) = existing.filter(|r| now < r.created_at_ms + IDEMPOTENCY_TTL_MS) {
                    return Ok(Created::Existing(rec));
                }
                let rec = IdempotencyRecord {
                    job_id: job.id.clone(),
                    body_hash: body_hash.to_owned(),
                    created_at_ms: now,
                };
                let rb = serde_json::to_vec(&rec).map_err(|e| self.err(e))?;
                idem.insert(scope, rb.as_slice()).map_err(|e| self.err(e))?;
                if idem.len().map_err(|e| self.err(e))? > MAX_IDEMPOTENCY_KEYS {
                    prune_idempotency(&mut idem, now, &self.path)?;
                }
            }
            let mut t = txn.open_table(JOBS).map_err(|e| self.err(e))?;
            t.insert(job.id.as_str(), bytes.as_slice())
                .map_err(|e| self.err(e))?;
        }
        txn.commit().map_err(|e| self.err(e))?;
        Ok(Created::New)
    }

    /// The live binding of an idempotency scope, if any.
    pub fn idempotency(&self, scope: &str) -> Result<Option<IdempotencyRecord>, CoordinatorError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = txn.open_table(IDEMPOTENCY).map_err(|e| self.err(e))?;
        let v = t.get(scope).map_err(|e| self.err(e))?;
        let rec = v
            .map(|v| serde_json::from_slice::<IdempotencyRecord>(v.value()))
            .transpose()
            .map_err(|e| self.err(e))?;
        let now = now_ms();
        Ok(rec.filter(|r| now < r.created_at_ms + IDEMPOTENCY_TTL_MS))
    }

    /// Stores (replaces) a job.
    pub fn put_job(&self, job: &Job) -> Result<(), CoordinatorError> {
        let bytes = serde_json::to_vec(job).map_err(|e| self.err(e))?;
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut t = txn.open_table(JOBS).map_err(|e| self.err(e))?;
            t.insert(job.id.as_str(), bytes.as_slice())
                .map_err(|e| self.err(e))?;
        }
        txn.commit().map_err(|e| self.err(e))
    }

    /// One job.
    pub fn job(&self, id: &str) -> Result<Option<Job>, CoordinatorError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = txn.open_table(JOBS).map_err(|e| self.err(e))?;
        let v = t.get(id).map_err(|e| self.err(e))?;
        v.map(|v| serde_json::from_slice(v.value()).map_err(|e| self.err(e)))
            .transpose()
    }
}

/// Removes expired idempotency keys, then the oldest beyond [`MAX_IDEMPOTENCY_KEYS`].
fn prune_idempotency(
    t: &mut redb::Table<'_, &'static str, &'static [u8]>,
    now: u64,
    path: &Path,
) -> Result<(), CoordinatorError> {
    let mut entries: Vec<(String, u64)> = Vec::new();
    for item in t.iter().map_err(|e| storage(path, e))? {
        let (k, v) = item.map_err(|e| storage(path, e))?;
        let created = serde_json::from_slice::<IdempotencyRecord>(v.value())
            .map(|r| r.created_at_ms)
            .unwrap_or(0);
        entries.push((k.value().to_owned(), created));
    }
    entries.sort_by_key(|(_, c)| *c);
    let excess = entries
        .len()
        .saturating_sub(usize::try_from(MAX_IDEMPOTENCY_KEYS).unwrap_or(usize::MAX));
    for (i, (k, created)) in entries.iter().enumerate() {
        if i < excess || now >= created + IDEMPOTENCY_TTL_MS {
            t.remove(k.as_str()).map_err(|e| storage(path, e))?;
        }
    }
    Ok(())
}
