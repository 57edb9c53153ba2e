//! One row of load: `concurrency` clients, each submitting client-signed requests
//! of `messages` messages through the public API (`wait=true`), checking every
//! signature against the attested key, until the row's count or duration is done.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use ed25519_dalek::SigningKey;
use hdrhistogram::Histogram;
use quorate_coordinator::client::{verify_job, AttestedKey, Client, RequestBuilder, SignOptions};
use quorate_protocol::KeyId;
use rand_core::{OsRng, RngCore};

/// How much load a row puts on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Load {
    /// Clients submitting at once (each waits for its answer before the next).
    pub(crate) concurrency: usize,
    /// Messages per request.
    pub(crate) messages: usize,
    /// Requests to send in all (ignored with `duration`).
    pub(crate) requests: u64,
    /// Run for this long instead of a count.
    pub(crate) duration: Option<Duration>,
    /// Lifetime of each request (its `expires_at`).
    pub(crate) ttl: Duration,
}

/// What a row measured.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// Wall time of the row.
    pub(crate) elapsed: Duration,
    /// Requests that came back signed and verified.
    pub(crate) ok_requests: u64,
    /// Signatures verified.
    pub(crate) signatures: u64,
    /// Latency of each successful request, µs.
    pub(crate) latency_us: Histogram<u64>,
    /// Failed requests by cause (problem type, `http`, `verify`, `timeout`).
    pub(crate) errors: BTreeMap<String, u64>,
    /// Signatures each node contributed a share to (node id hex).
    pub(crate) shares_by_node: BTreeMap<String, u64>,
}

struct Shared {
    latency: Histogram<u64>,
    errors: BTreeMap<String, u64>,
    shares_by_node: BTreeMap<String, u64>,
    ok: u64,
    signatures: u64,
}

/// Runs one row. `progress` is told every finished signature.
pub(crate) async fn run(
    api: &Client,
    key: &AttestedKey,
    client: &SigningKey,
    load: Load,
    progress: &indicatif::ProgressBar,
) -> anyhow::Result<Outcome> {
    let key_id = KeyId::from_hex(key.key_id())?;
    let shared = Arc::new(Mutex::new(Shared {
        latency: Histogram::new_with_bounds(1, 600_000_000, 3)?,
        errors: BTreeMap::new(),
        shares_by_node: BTreeMap::new(),
        ok: 0,
        signatures: 0,
    }));
    let issued = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = load.duration.map(|d| started + d);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..load.concurrency {
        let (api, key, client, shared, issued, progress) = (
            api.clone(),
            key.clone(),
            client.clone(),
            shared.clone(),
            issued.clone(),
            progress.clone(),
        );
        tasks.spawn(async move {
            loop {
                match deadline {
                    Some(d) if Instant::now() >= d => break,
                    None if issued.fetch_add(1, Ordering::Relaxed) >= load.requests => break,
                    _ => {}
                }
                let result = one_request(&api, &key, key_id, &client, load).await;
                let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
                match result {
                    Ok((latency, signers)) => {
                        let _ = s.latency.record(latency.as_micros().max(1) as u64);
                        s.ok += 1;
                        s.signatures += load.messages as u64;
                        for n in signers {
                            *s.shares_by_node.entry(n).or_default() += 1;
                        }
                        progress.inc(load.messages as u64);
                    }
                    Err(cause) => *s.errors.entry(cause).or_default() += 1,
                }
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r?;
    }
    let elapsed = started.elapsed();
    let s = Arc::try_unwrap(shared)
        .map_err(|_| anyhow::anyhow!("load tasks still running"))?
        .into_inner()
        .unwrap_or_else(|p| p.into_inner());
    Ok(Outcome {
        elapsed,
        ok_requests: s.ok,
        signatures: s.signatures,
        latency_us: s.latency,
        errors: s.errors,
        shares_by_node: s.shares_by_node,
    })
}

/// Submits one request and checks its signatures. On success: the latency and the
/// signers of every message's successful attempt; on failure: the cause's name.
async fn one_request(
    api: &Client,
    key: &AttestedKey,
    key_id: KeyId,
    client: &SigningKey,
    load: Load,
) -> Result<(Duration, Vec<String>), String> {
    let messages: Vec<Vec<u8>> = (0..load.messages)
        .map(|_| {
            let mut m = vec![0u8; 32];
            OsRng.fill_bytes(&mut m);
            m
        })
        .collect();
    let signed = RequestBuilder::new(key_id)
        .messages(messages)
        .purpose("BENCH", 1, "bench", "quorate bench")
        .expires_in(load.ttl)
        .sign(client);
    let started = Instant::now();
    let wait = SignOptions::wait(Duration::from_secs(30));
    let mut job = api
        .sign(key.key_id(), &signed, wait)
        .await
        .map_err(|e| cause(&e))?;
    if job.status == quorate_coordinator::api::model::JobStatus::Pending {
        job = api
            .poll_until_done(&job.id, Duration::from_millis(20), Duration::from_secs(60))
            .await
            .map_err(|e| cause(&e))?;
    }
    let latency = started.elapsed();
    verify_job(key, &signed.request, &job).map_err(|e| match e.problem() {
        Some(p) => p.type_uri.clone(),
        None => "verify".into(),
    })?;
    let signers = job
        .result
        .iter()
        .flat_map(|r| r.attempts.iter())
        .filter(|a| a.outcome == "signed")
        .flat_map(|a| a.signers.iter().cloned())
        .collect();
    Ok((latency, signers))
}

fn cause(e: &quorate_coordinator::client::ClientError) -> String {
    use quorate_coordinator::client::ClientError as E;
    match e {
        E::Problem(p) => p.type_uri.clone(),
        E::Http(_) => "http".into(),
        E::Timeout(_) => "timeout".into(),
        other => format!("client: {other}"),
    }
}
