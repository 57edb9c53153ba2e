//! Group commit of finished jobs: a writer thread stores every job that finished
//! while its previous transaction was committing in one transaction, so under load
//! many jobs share one sync, and no async task blocks on the disk.

use std::sync::{mpsc, Arc, Weak};

use tokio::sync::oneshot;

use super::Store;
use crate::{api::model::Job, error::CoordinatorError};

/// Jobs queued for the writer at most; a caller beyond it waits for room.
const QUEUE: usize = 1024;
/// Jobs stored in one transaction at most.
const BATCH: usize = 256;

type Reply = oneshot::Sender<Result<(), CoordinatorError>>;

/// Handle to the writer thread (it ends when every handle is dropped).
#[derive(Clone)]
pub(crate) struct JobWriter {
    tx: mpsc::SyncSender<(Job, Reply)>,
}

impl std::fmt::Debug for JobWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JobWriter")
    }
}

impl JobWriter {
    /// Starts the writer for `store`. The thread holds the store only while it
    /// commits, so dropping the store's last owner closes the database at once.
    pub(crate) fn spawn(store: &Arc<Store>) -> Result<Self, CoordinatorError> {
        let store: Weak<Store> = Arc::downgrade(store);
        let (tx, rx) = mpsc::sync_channel::<(Job, Reply)>(QUEUE);
        std::thread::Builder::new()
            .name("job-writer".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    while batch.len() < BATCH {
                        match rx.try_recv() {
                            Ok(next) => batch.push(next),
                            Err(_) => break,
                        }
                    }
                    let (jobs, replies): (Vec<Job>, Vec<Reply>) = batch.into_iter().unzip();
                    let result = match store.upgrade() {
                        Some(store) => store.put_jobs(&jobs),
                        None => Err(CoordinatorError::Storage("the store is closed".into())),
                    };
                    for r in replies {
                        let _ = r.send(result.as_ref().map(|_| ()).map_err(|e| {
                            CoordinatorError::Storage(format!("storing finished jobs: {e}"))
                        }));
                    }
                }
            })
            .map_err(|e| CoordinatorError::Storage(format!("cannot start the job writer: {e}")))?;
        Ok(Self { tx })
    }

    /// Stores `job` (with whatever else finished meanwhile) and returns once it is
    /// durable.
    pub(crate) async fn put(&self, job: Job) -> Result<(), CoordinatorError> {
        let (reply, done) = oneshot::channel();
        let stopped = || CoordinatorError::Storage("the job writer stopped".into());
        match self.tx.try_send((job, reply)) {
            Ok(()) => {}
            Err(mpsc::TrySendError::Disconnected(_)) => return Err(stopped()),
            Err(mpsc::TrySendError::Full(item)) => {
                // A full queue: wait for room off the async threads.
                let tx = self.tx.clone();
                let sent = tokio::task::spawn_blocking(move || tx.send(item).is_ok())
                    .await
                    .map_err(|e| CoordinatorError::Storage(format!("job writer: {e}")))?;
                if !sent {
                    return Err(stopped());
                }
            }
        }
        done.await
            .map_err(|_| CoordinatorError::Storage("the job writer stopped".into()))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::model::JobStatus;

    fn job(id: &str) -> Job {
        Job {
            id: id.into(),
            key_id: "00".repeat(16),
            client: "11".repeat(32),
            request_hash: "22".repeat(32),
            messages: 1,
            status: JobStatus::Succeeded,
            // Finished now: a job finished long ago is past its retention and the
            // next write's pruning would remove it.
            created_at_ms: crate::backend::now_ms(),
            finished_at_ms: Some(crate::backend::now_ms()),
            result: None,
            problem: None,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn finished_jobs_written_together_are_all_stored() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Arc::new(Store::open(dir.path().join("s.redb")).expect("store"));
        let writer = JobWriter::spawn(&store).expect("writer");
        let puts: Vec<_> = (0..50)
            .map(|i| {
                let w = writer.clone();
                tokio::spawn(async move { w.put(job(&format!("{i:032x}"))).await })
            })
            .collect();
        for p in puts {
            p.await.expect("task").expect("stored");
        }
        for i in 0..50 {
            let got = store
                .job(&format!("{i:032x}"))
                .expect("read")
                .expect("stored");
            assert_eq!(got.status, JobStatus::Succeeded);
        }
    }
}
