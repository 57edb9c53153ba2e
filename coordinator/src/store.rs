//! Embedded (redb) store for key records, jobs, idempotency keys and netting rounds.
//!
//! Holds public data only: key records (group public keys), job states and results,
//! and idempotency keys. No key material is ever stored here.
//!
//! On [`Store::open`], jobs left `pending` by a previous process are marked `failed`
//! with a `coordinator-restarted` problem, and the expiry indexes are rebuilt.
//!
//! Idempotency keys expire [`StoreOptions::idempotency_retention_ms`] after they were
//! bound, finished jobs [`StoreOptions::job_retention_ms`] after they finished;
//! pending jobs never expire. Both are indexed by `(expiry, id)`, so pruning takes
//! the expired entries off the front of an index: an insert removes at most
//! [`PRUNE_BATCH`] expired entries and never scans live ones.

use std::path::{Path, PathBuf};

use quorate_protocol::KeyId;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::{
    api::{
        model::{Job, JobStatus},
        problem::{Problem, ProblemKind},
    },
    backend::now_ms,
    error::CoordinatorError,
    settings::Limits,
    types::KeyRecord,
};

pub mod lifecycle;
mod netting;
mod writer;

/// Page cache of the store's database.
const CACHE_BYTES: usize = 16 * 1024 * 1024;

pub(crate) use writer::JobWriter;

const KEYS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("coordinator_keys");
const JOBS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("coordinator_jobs");
const IDEMPOTENCY: TableDefinition<'_, &str, &[u8]> =
    TableDefinition::new("coordinator_idempotency");
/// `(expiry ms, scope)` of every idempotency binding.
const IDEMPOTENCY_EXPIRY: TableDefinition<'_, (u64, &str), ()> =
    TableDefinition::new("coordinator_idempotency_expiry");
/// Live idempotency bindings per client (the part of the scope before `:`).
const IDEMPOTENCY_PER_CLIENT: TableDefinition<'_, &str, u64> =
    TableDefinition::new("coordinator_idempotency_per_client");
/// `(expiry ms, job id)` of every finished job.
const JOB_EXPIRY: TableDefinition<'_, (u64, &str), ()> =
    TableDefinition::new("coordinator_job_expiry");

/// Default time an idempotency key is remembered (24 hours).
pub const IDEMPOTENCY_TTL_MS: u64 = 24 * 60 * 60 * 1000;
/// Default time a finished job is kept (7 days).
pub const JOB_RETENTION_MS: u64 = 7 * 24 * 60 * 60 * 1000;
/// Default bound on one client's live idempotency keys.
pub const IDEMPOTENCY_KEYS_PER_CLIENT: u64 = 100_000;
/// Most expired index entries one insert removes (amortised pruning: each insert
/// adds one entry, so a batch larger than one keeps up).
pub const PRUNE_BATCH: usize = 16;

/// Retention and quotas of the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    /// How long an idempotency key is remembered after it was bound.
    pub idempotency_retention_ms: u64,
    /// How long a finished job is kept after it finished (never less than the
    /// idempotency retention, so a live idempotency key always names a job).
    pub job_retention_ms: u64,
    /// Most live idempotency keys one client may hold.
    pub idempotency_keys_per_client: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            idempotency_retention_ms: IDEMPOTENCY_TTL_MS,
            job_retention_ms: JOB_RETENTION_MS,
            idempotency_keys_per_client: IDEMPOTENCY_KEYS_PER_CLIENT,
        }
    }
}

impl From<&Limits> for StoreOptions {
    fn from(l: &Limits) -> Self {
        Self {
            idempotency_retention_ms: l.idempotency_retention_ms,
            job_retention_ms: l.job_retention_ms,
            idempotency_keys_per_client: l.idempotency_keys_per_client,
        }
    }
}

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
    /// The client already holds its quota of live idempotency keys; nothing was
    /// stored.
    QuotaExceeded {
        /// The client's live keys.
        live: u64,
    },
}

/// The coordinator's embedded database.
#[derive(Debug)]
pub struct Store {
    db: Database,
    path: PathBuf,
    options: StoreOptions,
    interrupted: usize,
}

fn storage(path: &Path, e: impl std::fmt::Display) -> CoordinatorError {
    CoordinatorError::Storage(format!("{}: {e}", path.display()))
}

impl Store {
    /// Opens (creating if needed) the store at `path` with default retention, fails
    /// jobs left pending by a previous process and prunes expired entries.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, CoordinatorError> {
        Self::open_with(path, StoreOptions::default())
    }

    /// Like [`Store::open`], with the given retention and quotas.
    pub fn open_with(
        path: impl AsRef<Path>,
        options: StoreOptions,
    ) -> Result<Self, CoordinatorError> {
        let options = StoreOptions {
            job_retention_ms: options
                .job_retention_ms
                .max(options.idempotency_retention_ms),
            ..options
        };
        let path = path.as_ref().to_path_buf();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| storage(parent, e))?;
        }
        // redb caches pages up to its cache size (1 GiB by default): the job table
        // grows with the retention period, so without a bound the coordinator's
        // memory would grow with it (1.5 KB per signature in a 100 000-signature run).
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(&path)
            .map_err(|e| storage(&path, e))?;
        let mut me = Self {
            db,
            path,
            options,
            interrupted: 0,
        };
        me.interrupted = me.recover()?;
        Ok(me)
    }

    fn err(&self, e: impl std::fmt::Display) -> CoordinatorError {
        storage(&self.path, e)
    }

    /// Creates the tables, fails pending jobs, rebuilds the expiry indexes (with the
    /// retention in force now) and prunes expired entries. The one full scan.
    fn recover(&self) -> Result<usize, CoordinatorError> {
        let now = now_ms();
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        let mut failed = 0;
        {
            txn.open_table(KEYS).map_err(|e| self.err(e))?;
            let mut jobs = txn.open_table(JOBS).map_err(|e| self.err(e))?;
            let mut all = Vec::new();
            for item in jobs.iter().map_err(|e| self.err(e))? {
                let (_, v) = item.map_err(|e| self.err(e))?;
                let job: Job = serde_json::from_slice(v.value()).map_err(|e| self.err(e))?;
                all.push(job);
            }
            txn.delete_table(JOB_EXPIRY).map_err(|e| self.err(e))?;
            let mut job_exp = txn.open_table(JOB_EXPIRY).map_err(|e| self.err(e))?;
            for mut job in all {
                if job.status == JobStatus::Pending {
                    job.status = JobStatus::Failed;
                    job.finished_at_ms = Some(now);
                    job.problem = Some(Problem::new(
                        ProblemKind::CoordinatorRestarted,
                        "coordinator restarted while the job was running; the request was \
                         not completed and may be resubmitted with a new nonce",
                    ));
                    let bytes = serde_json::to_vec(&job).map_err(|e| self.err(e))?;
                    jobs.insert(job.id.as_str(), bytes.as_slice())
                        .map_err(|e| self.err(e))?;
                    failed += 1;
                }
                let exp = self.job_expiry(&job);
                job_exp
                    .insert((exp, job.id.as_str()), ())
                    .map_err(|e| self.err(e))?;
            }
            let mut idem = txn.open_table(IDEMPOTENCY).map_err(|e| self.err(e))?;
            let mut bound = Vec::new();
            for item in idem.iter().map_err(|e| self.err(e))? {
                let (k, v) = item.map_err(|e| self.err(e))?;
                let created = serde_json::from_slice::<IdempotencyRecord>(v.value())
                    .map(|r| r.created_at_ms)
                    .unwrap_or(0);
                bound.push((k.value().to_owned(), created));
            }
            txn.delete_table(IDEMPOTENCY_EXPIRY)
                .map_err(|e| self.err(e))?;
            txn.delete_table(IDEMPOTENCY_PER_CLIENT)
                .map_err(|e| self.err(e))?;
            let mut idem_exp = txn
                .open_table(IDEMPOTENCY_EXPIRY)
                .map_err(|e| self.err(e))?;
            let mut per_client = txn
                .open_table(IDEMPOTENCY_PER_CLIENT)
                .map_err(|e| self.err(e))?;
            for (scope, created) in bound {
                let exp = created.saturating_add(self.options.idempotency_retention_ms);
                if exp <= now {
                    idem.remove(scope.as_str()).map_err(|e| self.err(e))?;
                    continue;
                }
                idem_exp
                    .insert((exp, scope.as_str()), ())
                    .map_err(|e| self.err(e))?;
                let client = client_of(&scope);
                let n = per_client
                    .get(client)
                    .map_err(|e| self.err(e))?
                    .map_or(0, |v| v.value());
                per_client.insert(client, n + 1).map_err(|e| self.err(e))?;
            }
            while prune_jobs(&mut job_exp, &mut jobs, now, &self.path)? == PRUNE_BATCH {}
        }
        let rounds = netting::recover_rounds(&txn, now, &self.path)?;
        if rounds > 0 {
            tracing::warn!(
                rounds,
                "netting rounds left live by the previous process marked failed"
            );
        }
        txn.commit().map_err(|e| self.err(e))?;
        Ok(failed)
    }

    fn job_expiry(&self, job: &Job) -> u64 {
        job.finished_at_ms
            .unwrap_or(job.created_at_ms)
            .saturating_add(self.options.job_retention_ms)
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
        #[derive(serde::Deserialize)]
        struct FirstGeneration {
            public: quorate_protocol::GroupPublic,
            attestations: Vec<quorate_protocol::KeyAttestation>,
            created_at_ms: u64,
        }
        if let Ok(r) = postcard::from_bytes::<KeyRecord>(bytes) {
            return Ok(r);
        }
        // Records written before lifecycle operations existed: generation 0.
        if let Ok(old) = postcard::from_bytes::<FirstGeneration>(bytes) {
            return Ok(KeyRecord {
                public: old.public,
                attestations: old.attestations,
                created_at_ms: old.created_at_ms,
                generation: 0,
            });
        }
        postcard::from_bytes::<Unattested>(bytes)
            .map(|old| KeyRecord {
                public: old.public,
                attestations: Vec::new(),
                created_at_ms: old.created_at_ms,
                generation: 0,
            })
            .map_err(|e| self.err(e))
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
    /// If the scope is already bound, nothing is stored and the binding is returned;
    /// if the scope's client (the part before `:`) holds its quota of live keys,
    /// nothing is stored either. Removes at most [`PRUNE_BATCH`] expired entries.
    pub fn create_job(
        &self,
        job: &Job,
        idempotency: Option<(&str, &str)>,
    ) -> Result<Created, CoordinatorError> {
        self.create_job_at(job, idempotency, now_ms())
    }

    /// [`Store::create_job`] at time `now` (Unix ms).
    pub(crate) fn create_job_at(
        &self,
        job: &Job,
        idempotency: Option<(&str, &str)>,
        now: u64,
    ) -> Result<Created, CoordinatorError> {
        let bytes = serde_json::to_vec(job).map_err(|e| self.err(e))?;
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut idem = txn.open_table(IDEMPOTENCY).map_err(|e| self.err(e))?;
            let mut idem_exp = txn
                .open_table(IDEMPOTENCY_EXPIRY)
                .map_err(|e| self.err(e))?;
            let mut per_client = txn
                .open_table(IDEMPOTENCY_PER_CLIENT)
                .map_err(|e| self.err(e))?;
            prune_idempotency(&mut idem_exp, &mut idem, &mut per_client, now, &self.path)?;
            if let Some((scope, body_hash)) = idempotency {
                let existing = idem
                    .get(scope)
                    .map_err(|e| self.err(e))?
                    .map(|v| serde_json::from_slice::<IdempotencyRecord>(v.value()))
                    .transpose()
                    .map_err(|e| self.err(e))?;
                if let Some(rec) = existing {
                    if self.idempotency_live(&rec, now) {
                        return Ok(Created::Existing(rec));
                    }
                    // Expired but not yet pruned: unbind it first.
                    let exp = rec
                        .created_at_ms
                        .saturating_add(self.options.idempotency_retention_ms);
                    idem_exp.remove((exp, scope)).map_err(|e| self.err(e))?;
                    idem.remove(scope).map_err(|e| self.err(e))?;
                    add_client(&mut per_client, client_of(scope), -1, &self.path)?;
                }
                let client = client_of(scope);
                let live = per_client
                    .get(client)
                    .map_err(|e| self.err(e))?
                    .map_or(0, |v| v.value());
                if live >= self.options.idempotency_keys_per_client {
                    return Ok(Created::QuotaExceeded { live });
                }
                let rec = IdempotencyRecord {
                    job_id: job.id.clone(),
                    body_hash: body_hash.to_owned(),
                    created_at_ms: now,
                };
                let rb = serde_json::to_vec(&rec).map_err(|e| self.err(e))?;
                idem.insert(scope, rb.as_slice()).map_err(|e| self.err(e))?;
                let exp = now.saturating_add(self.options.idempotency_retention_ms);
                idem_exp.insert((exp, scope), ()).map_err(|e| self.err(e))?;
                add_client(&mut per_client, client, 1, &self.path)?;
            }
            let mut t = txn.open_table(JOBS).map_err(|e| self.err(e))?;
            let mut job_exp = txn.open_table(JOB_EXPIRY).map_err(|e| self.err(e))?;
            prune_jobs(&mut job_exp, &mut t, now, &self.path)?;
            t.insert(job.id.as_str(), bytes.as_slice())
                .map_err(|e| self.err(e))?;
            if job.status != JobStatus::Pending {
                job_exp
                    .insert((self.job_expiry(job), job.id.as_str()), ())
                    .map_err(|e| self.err(e))?;
            }
        }
        txn.commit().map_err(|e| self.err(e))?;
        Ok(Created::New)
    }

    fn idempotency_live(&self, rec: &IdempotencyRecord, now: u64) -> bool {
        now < rec
            .created_at_ms
            .saturating_add(self.options.idempotency_retention_ms)
    }

    /// The live binding of an idempotency scope, if any.
    pub fn idempotency(&self, scope: &str) -> Result<Option<IdempotencyRecord>, CoordinatorError> {
        self.idempotency_at(scope, now_ms())
    }

    /// [`Store::idempotency`] at time `now` (Unix ms).
    pub(crate) fn idempotency_at(
        &self,
        scope: &str,
        now: u64,
    ) -> Result<Option<IdempotencyRecord>, CoordinatorError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = txn.open_table(IDEMPOTENCY).map_err(|e| self.err(e))?;
        let v = t.get(scope).map_err(|e| self.err(e))?;
        let rec = v
            .map(|v| serde_json::from_slice::<IdempotencyRecord>(v.value()))
            .transpose()
            .map_err(|e| self.err(e))?;
        Ok(rec.filter(|r| self.idempotency_live(r, now)))
    }

    /// Stores (replaces) a job; a finished job starts its retention. Removes at most
    /// [`PRUNE_BATCH`] expired jobs.
    pub fn put_job(&self, job: &Job) -> Result<(), CoordinatorError> {
        self.put_job_at(job, now_ms())
    }

    /// [`Store::put_job`] at time `now` (Unix ms).
    pub(crate) fn put_job_at(&self, job: &Job, now: u64) -> Result<(), CoordinatorError> {
        self.put_jobs_at(std::slice::from_ref(job), now)
    }

    /// Stores (replaces) every job of `jobs` in one transaction (one sync): the
    /// group commit of [`JobWriter`].
    pub(crate) fn put_jobs(&self, jobs: &[Job]) -> Result<(), CoordinatorError> {
        self.put_jobs_at(jobs, now_ms())
    }

    fn put_jobs_at(&self, jobs: &[Job], now: u64) -> Result<(), CoordinatorError> {
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut t = txn.open_table(JOBS).map_err(|e| self.err(e))?;
            let mut job_exp = txn.open_table(JOB_EXPIRY).map_err(|e| self.err(e))?;
            prune_jobs(&mut job_exp, &mut t, now, &self.path)?;
            for job in jobs {
                let bytes = serde_json::to_vec(job).map_err(|e| self.err(e))?;
                t.insert(job.id.as_str(), bytes.as_slice())
                    .map_err(|e| self.err(e))?;
                if job.status != JobStatus::Pending {
                    job_exp
                        .insert((self.job_expiry(job), job.id.as_str()), ())
                        .map_err(|e| self.err(e))?;
                }
            }
        }
        txn.commit().map_err(|e| self.err(e))
    }

    /// Removes expired idempotency keys and finished jobs at `now`, in batches of
    /// [`PRUNE_BATCH`] until none is left; returns how many entries were removed.
    pub fn prune(&self) -> Result<usize, CoordinatorError> {
        self.prune_at(now_ms())
    }

    /// [`Store::prune`] at time `now` (Unix ms).
    pub(crate) fn prune_at(&self, now: u64) -> Result<usize, CoordinatorError> {
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        let mut removed = 0;
        {
            let mut idem = txn.open_table(IDEMPOTENCY).map_err(|e| self.err(e))?;
            let mut idem_exp = txn
                .open_table(IDEMPOTENCY_EXPIRY)
                .map_err(|e| self.err(e))?;
            let mut per_client = txn
                .open_table(IDEMPOTENCY_PER_CLIENT)
                .map_err(|e| self.err(e))?;
            loop {
                let n =
                    prune_idempotency(&mut idem_exp, &mut idem, &mut per_client, now, &self.path)?;
                removed += n;
                if n < PRUNE_BATCH {
                    break;
                }
            }
            let mut jobs = txn.open_table(JOBS).map_err(|e| self.err(e))?;
            let mut job_exp = txn.open_table(JOB_EXPIRY).map_err(|e| self.err(e))?;
            loop {
                let n = prune_jobs(&mut job_exp, &mut jobs, now, &self.path)?;
                removed += n;
                if n < PRUNE_BATCH {
                    break;
                }
            }
        }
        txn.commit().map_err(|e| self.err(e))?;
        Ok(removed)
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

/// The client part of an idempotency scope (`<client hex>:<key>`).
fn client_of(scope: &str) -> &str {
    scope.split_once(':').map_or(scope, |(c, _)| c)
}

fn add_client(
    t: &mut redb::Table<'_, &'static str, u64>,
    client: &str,
    delta: i64,
    path: &Path,
) -> Result<(), CoordinatorError> {
    let n = t
        .get(client)
        .map_err(|e| storage(path, e))?
        .map_or(0, |v| v.value());
    let n = n.saturating_add_signed(delta);
    if n == 0 {
        t.remove(client).map_err(|e| storage(path, e))?;
    } else {
        t.insert(client, n).map_err(|e| storage(path, e))?;
    }
    Ok(())
}

type ExpiryIndex<'t> = redb::Table<'t, (u64, &'static str), ()>;

/// Takes up to [`PRUNE_BATCH`] entries with expiry `<= now` off the front of
/// `index`, calling `remove` with each id; returns how many. Looks at no live entry
/// beyond the first one.
fn pop_expired(
    index: &mut ExpiryIndex<'_>,
    now: u64,
    path: &Path,
    mut remove: impl FnMut(&str) -> Result<(), CoordinatorError>,
) -> Result<usize, CoordinatorError> {
    let mut n = 0;
    while n < PRUNE_BATCH {
        let first = index.first().map_err(|e| storage(path, e))?.map(|(k, _)| {
            let (exp, id) = k.value();
            (exp, id.to_owned())
        });
        let Some((exp, id)) = first.filter(|(exp, _)| *exp <= now) else {
            break;
        };
        index
            .remove((exp, id.as_str()))
            .map_err(|e| storage(path, e))?;
        remove(&id)?;
        n += 1;
    }
    Ok(n)
}

/// Removes up to [`PRUNE_BATCH`] expired idempotency keys.
fn prune_idempotency(
    index: &mut ExpiryIndex<'_>,
    idem: &mut redb::Table<'_, &'static str, &'static [u8]>,
    per_client: &mut redb::Table<'_, &'static str, u64>,
    now: u64,
    path: &Path,
) -> Result<usize, CoordinatorError> {
    pop_expired(index, now, path, |scope| {
        if idem.remove(scope).map_err(|e| storage(path, e))?.is_some() {
            add_client(per_client, client_of(scope), -1, path)?;
        }
        Ok(())
    })
}

/// Removes up to [`PRUNE_BATCH`] expired finished jobs (pending jobs are never in
/// the index).
fn prune_jobs(
    index: &mut ExpiryIndex<'_>,
    jobs: &mut redb::Table<'_, &'static str, &'static [u8]>,
    now: u64,
    path: &Path,
) -> Result<usize, CoordinatorError> {
    pop_expired(index, now, path, |id| {
        // A job stored again after finishing (not done today) would have a newer
        // entry; only remove it if it is still finished.
        let finished = jobs
            .get(id)
            .map_err(|e| storage(path, e))?
            .and_then(|v| serde_json::from_slice::<Job>(v.value()).ok())
            .is_some_and(|j| j.status != JobStatus::Pending);
        if finished {
            jobs.remove(id).map_err(|e| storage(path, e))?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str, status: JobStatus, at: u64) -> Job {
        Job {
            id: id.into(),
            key_id: "00".repeat(16),
            client: "11".repeat(32),
            request_hash: "22".repeat(32),
            messages: 1,
            status,
            created_at_ms: at,
            finished_at_ms: (status != JobStatus::Pending).then_some(at),
            result: None,
            problem: None,
        }
    }

    fn open(dir: &tempfile::TempDir, options: StoreOptions) -> Store {
        Store::open_with(dir.path().join("c.redb"), options).expect("open")
    }

    fn len(store: &Store, table: TableDefinition<'_, &str, &[u8]>) -> usize {
        let txn = store.db.begin_read().expect("read");
        let t = txn.open_table(table).expect("table");
        t.iter().expect("iter").count()
    }

    fn options(idem: u64, jobs: u64, quota: u64) -> StoreOptions {
        StoreOptions {
            idempotency_retention_ms: idem,
            job_retention_ms: jobs,
            idempotency_keys_per_client: quota,
        }
    }

    #[test]
    fn defaults_match_the_configuration_defaults() {
        assert_eq!(
            StoreOptions::default(),
            StoreOptions::from(&Limits::default())
        );
    }

    #[test]
    fn idempotency_keys_and_finished_jobs_expire_and_pending_jobs_stay() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Retention far in the past relative to the test's clock (now = 10^6 ms).
        let store = open(&dir, options(1_000, 5_000, 100));
        let t = 1_000_000;
        store
            .create_job_at(&job("p1", JobStatus::Pending, t), Some(("c:a", "h")), t)
            .expect("create");
        store
            .create_job_at(&job("s1", JobStatus::Pending, t), Some(("c:b", "h")), t)
            .expect("create");
        store
            .put_job_at(&job("s1", JobStatus::Succeeded, t + 10), t + 10)
            .expect("finish");
        assert_eq!(len(&store, IDEMPOTENCY), 2);
        // Before expiry nothing goes.
        assert_eq!(store.prune_at(t + 999).expect("prune"), 0);
        // Idempotency keys expire after 1 s; the finished job after 5 s from finishing.
        assert_eq!(store.prune_at(t + 1_000).expect("prune"), 2);
        assert_eq!(len(&store, IDEMPOTENCY), 0);
        assert!(store.job("s1").expect("job").is_some());
        assert_eq!(store.prune_at(t + 5_010).expect("prune"), 1);
        assert!(
            store.job("s1").expect("job").is_none(),
            "finished job pruned"
        );
        // A pending job is never pruned.
        assert_eq!(store.prune_at(u64::MAX).expect("prune"), 0);
        assert!(store.job("p1").expect("job").is_some(), "pending job kept");
        // The expired key can be bound again.
        assert_eq!(
            store
                .create_job_at(
                    &job("p2", JobStatus::Pending, t + 6_000),
                    Some(("c:a", "h2")),
                    t + 6_000
                )
                .expect("create"),
            Created::New
        );
    }

    #[test]
    fn an_insert_prunes_a_bounded_batch_from_the_front_of_the_index() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(&dir, options(1_000, 1_000, 10_000));
        let t = 1_000_000;
        // 40 keys bound one ms apart, then 200 much later.
        for i in 0..40u64 {
            let scope = format!("c:old{i}");
            store
                .create_job_at(
                    &job(&format!("o{i}"), JobStatus::Pending, t + i),
                    Some((&scope, "h")),
                    t + i,
                )
                .expect("create");
        }
        for i in 0..200u64 {
            let scope = format!("c:new{i}");
            store
                .create_job_at(
                    &job(&format!("n{i}"), JobStatus::Pending, t + 500),
                    Some((&scope, "h")),
                    t + 500,
                )
                .expect("create");
        }
        assert_eq!(len(&store, IDEMPOTENCY), 240);
        // At t + 1030 the first 31 old keys have expired. One insert removes one batch
        // of them, oldest first, and leaves the rest for later inserts: it does not
        // walk the table.
        store
            .create_job_at(
                &job("x", JobStatus::Pending, t + 1_030),
                Some(("c:x", "h")),
                t + 1_030,
            )
            .expect("create");
        assert_eq!(len(&store, IDEMPOTENCY), 240 + 1 - PRUNE_BATCH);
        assert!(store.idempotency_at("c:old0", t).expect("read").is_none());
        let survivor = format!("c:old{PRUNE_BATCH}");
        assert!(store.idempotency_at(&survivor, t).expect("read").is_some());
        // The next inserts take the rest of the expired ones, never a live one.
        store
            .create_job_at(
                &job("y", JobStatus::Pending, t + 1_030),
                Some(("c:y", "h")),
                t + 1_030,
            )
            .expect("create");
        store
            .create_job_at(
                &job("z", JobStatus::Pending, t + 1_030),
                Some(("c:z", "h")),
                t + 1_030,
            )
            .expect("create");
        assert_eq!(len(&store, IDEMPOTENCY), 240 + 3 - 31);
        assert!(store.idempotency_at("c:old31", t).expect("read").is_some());
    }

    #[test]
    fn one_clients_idempotency_quota_does_not_refuse_another() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(&dir, options(1_000, 1_000, 2));
        let t = 1_000_000;
        for i in 0..2 {
            let created = store
                .create_job_at(
                    &job(&format!("a{i}"), JobStatus::Pending, t),
                    Some((&format!("a:{i}"), "h")),
                    t,
                )
                .expect("create");
            assert_eq!(created, Created::New);
        }
        let refused = store
            .create_job_at(&job("a9", JobStatus::Pending, t), Some(("a:9", "h")), t)
            .expect("create");
        assert_eq!(refused, Created::QuotaExceeded { live: 2 });
        assert!(store.job("a9").expect("job").is_none(), "nothing stored");
        // Another client is unaffected; a request without a key too.
        assert_eq!(
            store
                .create_job_at(&job("b0", JobStatus::Pending, t), Some(("b:0", "h")), t)
                .expect("create"),
            Created::New
        );
        assert_eq!(
            store
                .create_job_at(&job("a10", JobStatus::Pending, t), None, t)
                .expect("create"),
            Created::New
        );
        // Expiry frees the quota, and reopening recounts it.
        drop(store);
        let store = open(&dir, options(1_000, 1_000, 2));
        let later = t + 1_000;
        assert_eq!(
            store
                .create_job_at(
                    &job("a11", JobStatus::Pending, later),
                    Some(("a:11", "h")),
                    later
                )
                .expect("create"),
            Created::New
        );
    }
}
