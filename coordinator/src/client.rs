//! Typed async client for the coordinator's HTTP API: request building and client
//! signing, key management, key attestation checks against a pinned roster, signature
//! jobs, local signature verification, and netting rounds ([`netting`]).
//!
//! ```no_run
//! # async fn demo(client_key: ed25519_dalek::SigningKey) -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use quorate_coordinator::client::{Client, RequestBuilder, SignOptions};
//! use quorate_coordinator::protocol::roster::Roster;
//!
//! // The roster you pinned (and its `.sig`, checked under the authority key).
//! let authority = [0u8; 32]; // the network's roster authority key
//! let roster = Roster::load("roster.toml".as_ref(), Some(&authority))?;
//! let api = Client::new("http://127.0.0.1:8080")?;
//! let key = api.get_attested_key("5b0e…c4", &roster).await?;
//! let signed = RequestBuilder::new(key.public().key_id)
//!     .message([7u8; 32])
//!     .purpose("BTC", 50_000, "bc1q…", "payout 42")
//!     .expires_in(Duration::from_secs(300))
//!     .sign(&client_key);
//! let job = api
//!     .sign(key.key_id(), &signed, SignOptions::wait(Duration::from_secs(30)))
//!     .await?;
//! let job = api.poll_until_done(&job.id, Duration::from_millis(200), Duration::from_secs(60)).await?;
//! quorate_coordinator::client::verify_job(&key, &signed.request, &job)?;
//! # Ok(()) }
//! ```

use std::{collections::BTreeMap, time::Duration};

use ed25519_dalek::SigningKey;
use quorate_protocol::{
    attestation::verify_attestations,
    psbt::{BitcoinNetwork, PsbtRequest},
    request::{Purpose, RequestBody, SignedRequest, SigningRequest, REQUEST_VERSION},
    roster::Roster,
    Ciphersuite, GroupPublic, KeyAttestation, KeyId, NodeId,
};
use rand_core::{OsRng, RngCore};
use reqwest::{header, Response, StatusCode};
use serde::de::DeserializeOwned;

pub mod netting;
pub mod netting_limits;

pub use netting::{
    check_own_transfers, committee_of, verify_result, verify_settlement, RoundBuilder,
};
pub use netting_limits::{verify_limit_bits, verify_verdict};

use crate::{
    api::{
        model::{CreateKeyBody, Health, Job, JobStatus, KeyList, KeyView, SignBody},
        problem::{Problem, PROBLEM_CONTENT_TYPE},
    },
    backend::now_ms,
    types::KeyRecord,
};

/// What the client can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The server answered with a problem document.
    #[error("{} ({}): {}", .0.title, .0.type_uri, .0.detail)]
    Problem(Box<Problem>),
    /// Connection or protocol failure.
    #[error("http: {0}")]
    Http(String),
    /// An answer did not decode.
    #[error("unexpected response: {0}")]
    Decode(String),
    /// A signature or key did not verify locally.
    #[error("verification failed: {0}")]
    Verify(String),
    /// A key's attestations are missing, do not verify against the pinned roster,
    /// or disagree with the key data the coordinator returned.
    #[error("key is not attested: {0}")]
    Unattested(String),
    /// A TLS option (CA or client certificate) could not be used.
    #[error("tls: {0}")]
    Tls(String),
    /// The job did not finish in time.
    #[error("job {0} did not finish in time")]
    Timeout(String),
    /// The request breaks a bound of the request format; it was not sent.
    #[error("request not sent: {0}")]
    Invalid(String),
}

impl ClientError {
    /// The problem, if the server sent one.
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            Self::Problem(p) => Some(p),
            _ => None,
        }
    }
}

fn http(e: reqwest::Error) -> ClientError {
    ClientError::Http(e.to_string())
}

/// Builds a [`SigningRequest`] with a random nonce and an expiry.
#[derive(Debug, Clone)]
pub struct RequestBuilder {
    key_id: KeyId,
    messages: Vec<Vec<u8>>,
    tweak: Option<[u8; 32]>,
    psbt: Option<PsbtRequest>,
    purpose: Purpose,
    ttl: Duration,
}

impl RequestBuilder {
    /// A request for `key_id`, expiring 5 minutes after it is built.
    pub fn new(key_id: KeyId) -> Self {
        Self {
            key_id,
            messages: Vec::new(),
            tweak: None,
            psbt: None,
            purpose: Purpose {
                asset: String::new(),
                amount: 0,
                destination: String::new(),
                memo: String::new(),
            },
            ttl: Duration::from_secs(300),
        }
    }

    /// Adds a message to sign.
    pub fn message(mut self, message: impl Into<Vec<u8>>) -> Self {
        self.messages.push(message.into());
        self
    }

    /// Adds several messages (a batch shares one policy decision).
    pub fn messages<M: Into<Vec<u8>>>(mut self, messages: impl IntoIterator<Item = M>) -> Self {
        self.messages.extend(messages.into_iter().map(Into::into));
        self
    }

    /// Sign a Bitcoin transaction instead of raw messages: the inputs `inputs` of
    /// `psbt` (BIP174 or BIP370 binary), for `network`. Nodes derive the sighashes
    /// and apply policy to the parsed transaction; messages and tweak set on this
    /// builder are not sent.
    pub fn psbt(mut self, psbt: Vec<u8>, network: BitcoinNetwork, inputs: Vec<u32>) -> Self {
        self.psbt = Some(PsbtRequest {
            psbt,
            network,
            inputs,
        });
        self
    }

    /// Taproot script-tree merkle root (secp256k1-tr keys only).
    pub fn tweak(mut self, merkle_root: [u8; 32]) -> Self {
        self.tweak = Some(merkle_root);
        self
    }

    /// What the transfer is for (evaluated by node policy).
    pub fn purpose(
        mut self,
        asset: impl Into<String>,
        amount: u64,
        destination: impl Into<String>,
        memo: impl Into<String>,
    ) -> Self {
        self.purpose = Purpose {
            asset: asset.into(),
            amount,
            destination: destination.into(),
            memo: memo.into(),
        };
        self
    }

    /// How long the request stays valid.
    pub fn expires_in(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// The unsigned request for `client` (its Ed25519 public key), with a fresh random
    /// nonce and `expires_at_ms = now + ttl`.
    pub fn build(self, client: [u8; 32]) -> SigningRequest {
        let mut nonce = [0u8; 16];
        OsRng.fill_bytes(&mut nonce);
        let ttl = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        SigningRequest {
            version: REQUEST_VERSION,
            client,
            key_id: self.key_id,
            body: match self.psbt {
                Some(p) => RequestBody::BitcoinPsbt(p),
                None => RequestBody::Raw {
                    messages: self.messages,
                    tweak: self.tweak,
                },
            },
            purpose: self.purpose,
            expires_at_ms: now_ms().saturating_add(ttl),
            nonce,
        }
    }

    /// Builds and signs with the client key.
    pub fn sign(self, client: &SigningKey) -> SignedRequest {
        self.build(client.verifying_key().to_bytes()).sign(client)
    }
}

/// How to submit a signature request.
#[derive(Debug, Clone, Default)]
pub struct SignOptions {
    /// Wait up to this long for the result (`wait=true&timeout_ms=…`).
    pub wait: Option<Duration>,
    /// `Idempotency-Key` header.
    pub idempotency_key: Option<String>,
}

impl SignOptions {
    /// Synchronous: wait up to `timeout`.
    pub fn wait(timeout: Duration) -> Self {
        Self {
            wait: Some(timeout),
            idempotency_key: None,
        }
    }

    /// Sets the idempotency key.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }
}

/// How the client connects: TLS trust and identity, timeout.
#[derive(Clone, Default)]
pub struct ClientOptions {
    /// PEM CA bundle to trust for `https://` URLs. When set, **only** these CAs are
    /// trusted (the built-in web roots are not); otherwise the built-in roots are.
    pub ca_cert_pem: Option<Vec<u8>>,
    /// PEM client certificate chain and its PKCS#8 private key in one buffer, for a
    /// coordinator that requires client certificates.
    pub client_identity_pem: Option<zeroize::Zeroizing<Vec<u8>>>,
    /// Whole-request timeout (default 300 s).
    pub timeout: Option<Duration>,
}

impl core::fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ClientOptions")
            .field("ca_cert_pem", &self.ca_cert_pem.as_ref().map(|c| c.len()))
            .field(
                "client_identity_pem",
                &self.client_identity_pem.as_ref().map(|_| "<secret>"),
            )
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl ClientOptions {
    /// Trust only the CA(s) in this PEM file.
    pub fn ca_cert_file(mut self, path: impl AsRef<std::path::Path>) -> Result<Self, ClientError> {
        let p = path.as_ref();
        self.ca_cert_pem =
            Some(std::fs::read(p).map_err(|e| ClientError::Tls(format!("{}: {e}", p.display())))?);
        Ok(self)
    }

    /// Present the client certificate chain and PKCS#8 key in this PEM file.
    ///
    /// # Security
    /// Reads a TLS private key into memory (zeroized on drop).
    pub fn client_identity_file(
        mut self,
        path: impl AsRef<std::path::Path>,
    ) -> Result<Self, ClientError> {
        let p = path.as_ref();
        self.client_identity_pem =
            Some(zeroize::Zeroizing::new(std::fs::read(p).map_err(|e| {
                ClientError::Tls(format!("{}: {e}", p.display()))
            })?));
        Ok(self)
    }
}

/// A client of one coordinator.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    admin_token: Option<String>,
}

impl Client {
    /// A client of the coordinator at `base_url` (e.g. `https://coordinator:8443`),
    /// trusting the built-in web roots for `https://`.
    pub fn new(base_url: impl Into<String>) -> Result<Self, ClientError> {
        Self::with_options(base_url, ClientOptions::default())
    }

    /// A client with TLS options (custom CA, client certificate): rustls, never the
    /// platform's OpenSSL.
    pub fn with_options(
        base_url: impl Into<String>,
        options: ClientOptions,
    ) -> Result<Self, ClientError> {
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(options.timeout.unwrap_or(Duration::from_secs(300)));
        if let Some(pem) = &options.ca_cert_pem {
            let cas = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| ClientError::Tls(format!("CA certificate: {e}")))?;
            if cas.is_empty() {
                return Err(ClientError::Tls("CA file holds no certificate".into()));
            }
            builder = builder.tls_built_in_root_certs(false);
            for ca in cas {
                builder = builder.add_root_certificate(ca);
            }
        }
        if let Some(pem) = &options.client_identity_pem {
            let id = reqwest::Identity::from_pem(pem)
                .map_err(|e| ClientError::Tls(format!("client certificate: {e}")))?;
            builder = builder.identity(id);
        }
        let http = builder.build().map_err(http)?;
        Ok(Self {
            http,
            base: base_url.into().trim_end_matches('/').to_owned(),
            admin_token: None,
        })
    }

    /// Sets the admin bearer token used by [`Client::create_key`].
    pub fn with_admin_token(mut self, token: impl Into<String>) -> Self {
        self.admin_token = Some(token.into());
        self
    }

    /// The base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn decode<T: DeserializeOwned>(resp: Response) -> Result<T, ClientError> {
        let status = resp.status();
        let is_problem = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with(PROBLEM_CONTENT_TYPE));
        let bytes = resp.bytes().await.map_err(http)?;
        if is_problem || !status.is_success() {
            return Err(match serde_json::from_slice::<Problem>(&bytes) {
                Ok(p) => ClientError::Problem(Box::new(p)),
                Err(_) => ClientError::Decode(format!(
                    "status {status}: {}",
                    String::from_utf8_lossy(&bytes)
                )),
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// `POST /v1/keys`: runs a DKG (admin).
    pub async fn create_key(&self, body: &CreateKeyBody) -> Result<KeyView, ClientError> {
        let mut req = self.http.post(self.url("/v1/keys")).json(body);
        if let Some(t) = &self.admin_token {
            req = req.bearer_auth(t);
        }
        Self::decode(req.send().await.map_err(http)?).await
    }

    /// `POST /v1/keys/{id}/refresh` or `/reshare` (by the operation's kind) with an
    /// approved operation; waits for the run and returns the new generation's key.
    pub async fn lifecycle(
        &self,
        operation: &quorate_protocol::lifecycle::ApprovedOperation,
    ) -> Result<KeyView, ClientError> {
        let o = &operation.operation;
        let path = format!("/v1/keys/{}/{}", o.key_id, o.kind.name());
        let body = crate::api::lifecycle::LifecycleBody {
            operation: hex::encode(operation.encode()),
        };
        let mut req = self.http.post(self.url(&path)).json(&body);
        if let Some(t) = &self.admin_token {
            req = req.bearer_auth(t);
        }
        Self::decode(req.send().await.map_err(http)?).await
    }

    /// `GET /v1/keys`.
    pub async fn list_keys(&self) -> Result<Vec<KeyView>, ClientError> {
        let list: KeyList = Self::decode(
            self.http
                .get(self.url("/v1/keys"))
                .send()
                .await
                .map_err(http)?,
        )
        .await?;
        Ok(list.keys)
    }

    /// `GET /v1/keys/{id}`.
    pub async fn get_key(&self, key_id: &str) -> Result<KeyView, ClientError> {
        let resp = self
            .http
            .get(self.url(&format!("/v1/keys/{key_id}")))
            .send()
            .await
            .map_err(http)?;
        Self::decode(resp).await
    }

    /// `GET /v1/keys/{id}`, then [`verify_key`] against the pinned `roster`: the only
    /// way to obtain a key [`verify_job`] accepts.
    pub async fn get_attested_key(
        &self,
        key_id: &str,
        roster: &Roster,
    ) -> Result<AttestedKey, ClientError> {
        let view = self.get_key(key_id).await?;
        if !view.key_id.eq_ignore_ascii_case(key_id) {
            return Err(ClientError::Unattested(format!(
                "asked for key {key_id}, got {}",
                view.key_id
            )));
        }
        verify_key(&view, roster)
    }

    /// `POST /v1/keys/{id}/signatures`: submits a client-signed request. Returns the
    /// job (finished if `wait` was given and it finished in time); a failed job comes
    /// back as [`ClientError::Problem`] with a `job_id` member.
    pub async fn sign(
        &self,
        key_id: &str,
        request: &SignedRequest,
        options: SignOptions,
    ) -> Result<Job, ClientError> {
        // Refuse locally what every coordinator and node would refuse, naming the field.
        request
            .request
            .validate()
            .map_err(|e| ClientError::Invalid(e.to_string()))?;
        let mut url = self.url(&format!("/v1/keys/{key_id}/signatures"));
        if let Some(w) = options.wait {
            url.push_str(&format!("?wait=true&timeout_ms={}", w.as_millis()));
        }
        let mut req = self.http.post(url).json(&SignBody {
            signed_request: hex::encode(request.encode()),
        });
        if let Some(k) = &options.idempotency_key {
            req = req.header("Idempotency-Key", k);
        }
        Self::decode(req.send().await.map_err(http)?).await
    }

    /// `GET /v1/jobs/{id}`.
    pub async fn job(&self, id: &str) -> Result<Job, ClientError> {
        let resp = self
            .http
            .get(self.url(&format!("/v1/jobs/{id}")))
            .send()
            .await
            .map_err(http)?;
        Self::decode(resp).await
    }

    /// Polls a job every `interval` until it is no longer pending or `timeout` passes.
    pub async fn poll_until_done(
        &self,
        id: &str,
        interval: Duration,
        timeout: Duration,
    ) -> Result<Job, ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let job = self.job(id).await?;
            if job.status != JobStatus::Pending {
                return Ok(job);
            }
            if tokio::time::Instant::now() + interval > deadline {
                return Err(ClientError::Timeout(id.to_owned()));
            }
            tokio::time::sleep(interval).await;
        }
    }

    /// `GET /health`.
    pub async fn health(&self) -> Result<Health, ClientError> {
        Self::decode(
            self.http
                .get(self.url("/health"))
                .send()
                .await
                .map_err(http)?,
        )
        .await
    }

    /// `GET /openapi.json`.
    pub async fn openapi(&self) -> Result<serde_json::Value, ClientError> {
        Self::decode(
            self.http
                .get(self.url("/openapi.json"))
                .send()
                .await
                .map_err(http)?,
        )
        .await
    }

    /// Raw access for callers that need a response's status and headers.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }
}

/// Whether `status` is a success the API uses for jobs (200 finished, 202 pending).
pub fn is_job_status(status: StatusCode) -> bool {
    status == StatusCode::OK || status == StatusCode::ACCEPTED
}

fn unhex(field: &str, s: &str) -> Result<Vec<u8>, ClientError> {
    hex::decode(s).map_err(|_| ClientError::Decode(format!("{field} is not hex")))
}

impl KeyView {
    /// Rebuilds the group public data from this view.
    pub fn to_group_public(&self) -> Result<GroupPublic, ClientError> {
        let key_id =
            KeyId::from_hex(&self.key_id).map_err(|e| ClientError::Decode(e.to_string()))?;
        let mut members = BTreeMap::new();
        for p in &self.participants {
            let node = NodeId::from_hex(&p.node).map_err(|e| ClientError::Decode(e.to_string()))?;
            members.insert(node, p.index);
        }
        Ok(GroupPublic {
            suite: self.ciphersuite,
            key_id,
            threshold: self.threshold,
            members,
            verifying_key: unhex("verifying_key", &self.verifying_key)?,
            public_key_package: unhex("public_key_package", &self.public_key_package)?,
        })
    }
}

/// A key whose every committee member attested exactly the data returned, checked
/// against a pinned roster by [`verify_key`]. Only this type is accepted by
/// [`verify_job`]: nothing the coordinator says about a key is taken on its word.
#[derive(Debug, Clone, PartialEq)]
pub struct AttestedKey {
    view: KeyView,
    public: GroupPublic,
}

impl AttestedKey {
    /// The key as the coordinator returned it (every field checked).
    pub fn view(&self) -> &KeyView {
        &self.view
    }

    /// The attested group public data.
    pub fn public(&self) -> &GroupPublic {
        &self.public
    }

    /// The key id (hex).
    pub fn key_id(&self) -> &str {
        &self.view.key_id
    }
}

fn attestation_of(a: &crate::api::model::AttestationView) -> Result<KeyAttestation, ClientError> {
    let node = NodeId::from_hex(&a.node).map_err(|e| ClientError::Decode(e.to_string()))?;
    let mut sig = [0u8; 64];
    hex::decode_to_slice(&a.signature, &mut sig)
        .map_err(|_| ClientError::Decode("attestation signature is not 64 bytes of hex".into()))?;
    Ok(KeyAttestation {
        node,
        signature: ed25519_dalek::Signature::from_bytes(&sig),
    })
}

/// Verifies a key returned by the coordinator against a pinned `roster` (load it with
/// [`Roster::load`], with the roster authority key where you have one):
///
/// - every field of the view (group key, native encodings, participants and their
///   verifying shares) must be exactly what its `public_key_package` implies;
/// - every committee member must be a signer of the roster under the same FROST
///   index, and must have exactly one attestation, verifying (strict Ed25519) under
///   its roster node id, over this key's [`AttestedKey`](quorate_protocol::AttestedKey)
///   body; attestations by anyone else are refused.
///
/// A key attested by fewer than all members, or whose attestations disagree with the
/// data returned, is refused with [`ClientError::Unattested`].
pub fn verify_key(view: &KeyView, roster: &Roster) -> Result<AttestedKey, ClientError> {
    let public = view.to_group_public()?;
    let attestations = view
        .attestations
        .iter()
        .map(attestation_of)
        .collect::<Result<Vec<_>, _>>()?;
    let record = KeyRecord {
        public: public.clone(),
        attestations: attestations.clone(),
        created_at_ms: view.created_at_ms,
        generation: view.generation,
    };
    let mut expected = KeyView::from_record(&record);
    if view.window_bounds.is_empty() {
        // An older coordinator: no bounds in its answer (they follow from n and t).
        expected.window_bounds.clear();
    }
    if expected != *view {
        return Err(ClientError::Unattested(
            "key fields disagree with the key's public key package".into(),
        ));
    }
    verify_attestations(&public, &attestations, roster)
        .map_err(|e| ClientError::Unattested(e.to_string()))?;
    Ok(AttestedKey {
        view: view.clone(),
        public,
    })
}

/// Verifies one signature over `message` under `key` (with the request's `tweak`):
/// frost-core's verifier for the suite, and in addition an independent one where it
/// exists (ed25519-dalek strict verification for Ed25519; libsecp256k1 BIP340 for
/// secp256k1-tr when the message is a 32-byte digest).
pub fn verify_signature(
    key: &GroupPublic,
    message: &[u8],
    signature: &[u8],
    tweak: Option<&[u8; 32]>,
) -> Result<(), ClientError> {
    key.verify(message, signature, tweak)
        .map_err(|e| ClientError::Verify(e.to_string()))?;
    let output = key
        .output_key(tweak)
        .map_err(|e| ClientError::Verify(e.to_string()))?;
    match key.suite {
        Ciphersuite::Ed25519 => {
            let k: [u8; 32] = output
                .as_slice()
                .try_into()
                .map_err(|_| ClientError::Verify("ed25519 key length".into()))?;
            let vk = ed25519_dalek::VerifyingKey::from_bytes(&k)
                .map_err(|e| ClientError::Verify(e.to_string()))?;
            let sig = ed25519_dalek::Signature::from_slice(signature)
                .map_err(|e| ClientError::Verify(e.to_string()))?;
            vk.verify_strict(message, &sig)
                .map_err(|e| ClientError::Verify(format!("ed25519-dalek: {e}")))
        }
        Ciphersuite::Secp256k1Tr => {
            use secp256k1::{schnorr, Message, XOnlyPublicKey, SECP256K1};
            let x = x_only(&output)?;
            let Ok(msg) = Message::from_digest_slice(message) else {
                // libsecp256k1 0.29 verifies 32-byte digests only; frost-core checked it.
                return Ok(());
            };
            let pk =
                XOnlyPublicKey::from_slice(&x).map_err(|e| ClientError::Verify(e.to_string()))?;
            let sig = schnorr::Signature::from_slice(signature)
                .map_err(|e| ClientError::Verify(e.to_string()))?;
            SECP256K1
                .verify_schnorr(&sig, &msg, &pk)
                .map_err(|e| ClientError::Verify(format!("libsecp256k1 BIP340: {e}")))
        }
        Ciphersuite::Secp256k1 => Ok(()),
    }
}

/// The BIP340 x-only form of a serialized secp256k1 key (33-byte SEC1 or 32-byte x-only).
pub fn x_only(key: &[u8]) -> Result<[u8; 32], ClientError> {
    let x = match key.len() {
        33 => key.get(1..),
        32 => Some(key),
        _ => None,
    };
    x.and_then(|x| x.try_into().ok())
        .ok_or_else(|| ClientError::Verify("not a secp256k1 key".into()))
}

/// Verifies a finished job against the request the client signed and the attested
/// key (see [`verify_key`]): one signature per message, in order, each over exactly
/// the requested message, each verifying under the key's output key for the
/// request's tweak.
pub fn verify_job(
    key: &AttestedKey,
    request: &SigningRequest,
    job: &Job,
) -> Result<(), ClientError> {
    let public = key.public.clone();
    if public.key_id != request.key_id {
        return Err(ClientError::Verify(
            "job key differs from request key".into(),
        ));
    }
    let result = job
        .result
        .as_ref()
        .filter(|_| job.status == JobStatus::Succeeded)
        .ok_or_else(|| ClientError::Verify(format!("job {} has not succeeded", job.id)))?;
    let targets = request
        .targets(&public)
        .map_err(|e| ClientError::Verify(e.to_string()))?;
    if result.signatures.len() != targets.len() {
        return Err(ClientError::Verify(format!(
            "{} signatures for {} messages",
            result.signatures.len(),
            targets.len()
        )));
    }
    for (i, (sig, target)) in result.signatures.iter().zip(&targets).enumerate() {
        let (message, tweak) = (&target.message, target.tweak.as_ref());
        let expected_key = public
            .output_key(tweak)
            .map_err(|e| ClientError::Verify(e.to_string()))?;
        if unhex("message", &sig.message)? != *message {
            return Err(ClientError::Verify(format!(
                "signature {i} is over another message"
            )));
        }
        if unhex("verifying_key", &sig.verifying_key)? != expected_key {
            return Err(ClientError::Verify(format!(
                "signature {i} names another verifying key"
            )));
        }
        let s = unhex("signature", &sig.signature)?;
        verify_signature(&public, message, &s, tweak)
            .map_err(|e| ClientError::Verify(format!("signature {i}: {e}")))?;
    }
    if let (RequestBody::BitcoinPsbt(p), Some(tx)) = (&request.body, &result.transaction) {
        let tx = unhex("transaction", tx)?;
        quorate_protocol::psbt::verify_finished(p, &tx)
            .map_err(|e| ClientError::Verify(format!("transaction: {e}")))?;
    }
    Ok(())
}
