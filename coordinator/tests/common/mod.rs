//! A coordinator HTTP server over the in-memory [`LocalBackend`] (real DKG, real FROST
//! signing) on 127.0.0.1 with an OS-chosen port.
#![allow(dead_code, unreachable_pub)]

use std::{sync::Arc, time::Duration};

use ed25519_dalek::SigningKey;
use quorate_coordinator::{
    api::{
        auth::{ClientInfo, ClientRegistry},
        model::{CreateKeyBody, KeyView, ParticipantsBody},
    },
    backend::LocalBackend,
    client::{verify_key, AttestedKey, Client, RequestBuilder},
    config::Limits,
    protocol::{request::SignedRequest, roster::Roster, Ciphersuite, KeyId},
    service::{serve_listener, ServiceSettings},
    store::{Store, StoreOptions},
};
use rand_core::OsRng;
use serde_json::Value;
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

pub const ADMIN: &str = "test-admin-token";

pub struct Server {
    pub base: String,
    pub api: Client,
    pub backend: Arc<LocalBackend>,
    pub client_key: SigningKey,
    pub dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Server {
    pub async fn start(requests_per_minute: u32) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_in(dir, requests_per_minute, None).await
    }

    pub async fn start_in(
        dir: tempfile::TempDir,
        requests_per_minute: u32,
        client_key: Option<SigningKey>,
    ) -> Self {
        Self::start_custom(dir, requests_per_minute, client_key, |_| {}).await
    }

    /// Like [`Server::start_in`], with `adjust` changing the settings (limits, admin
    /// token, more clients) before the server starts.
    pub async fn start_custom(
        dir: tempfile::TempDir,
        requests_per_minute: u32,
        client_key: Option<SigningKey>,
        adjust: impl FnOnce(&mut ServiceSettings),
    ) -> Self {
        let backend = Arc::new(LocalBackend::new(4));
        let client_key = client_key.unwrap_or_else(|| SigningKey::generate(&mut OsRng));
        let mut clients = ClientRegistry::new();
        clients
            .add(ClientInfo {
                name: "exchange-a".into(),
                public_key: client_key.verifying_key().to_bytes(),
                requests_per_minute,
            })
            .expect("register");
        let mut settings = ServiceSettings {
            clients,
            admin_token: Some(ADMIN.into()),
            limits: Limits::default(),
        };
        adjust(&mut settings);
        // Retention and the idempotency quota are the store's, as in `run`.
        let store = Arc::new(
            Store::open_with(
                dir.path().join("coordinator.redb"),
                StoreOptions::from(&settings.limits),
            )
            .expect("store"),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let (stop, rx) = oneshot::channel::<()>();
        let b = backend.clone();
        let task = tokio::spawn(async move {
            serve_listener(b, store, settings, listener, async {
                let _ = rx.await;
            })
            .await
            .expect("serve");
        });
        let api = Client::new(base.clone())
            .expect("client")
            .with_admin_token(ADMIN);
        Self {
            base,
            api,
            backend,
            client_key,
            dir,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops the server and waits until it (and its store handle) is gone.
    pub async fn stop(mut self) -> (tempfile::TempDir, SigningKey) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), t)
                .await
                .expect("server stops")
                .expect("server task");
        }
        (self.dir, self.client_key)
    }

    pub async fn create_key(&self, suite: Ciphersuite) -> KeyView {
        self.api
            .create_key(&CreateKeyBody {
                ciphersuite: suite,
                threshold: 2,
                participants: ParticipantsBody::Spanning {
                    n: 3,
                    min_segments: 2,
                },
                segments: Vec::new(),
            })
            .await
            .expect("create key")
    }

    /// The client's pinned roster: the local backend's nodes.
    pub fn roster(&self) -> Roster {
        self.backend.roster().expect("roster")
    }

    /// The key, verified against the pinned roster.
    pub fn attested(&self, key: &KeyView) -> AttestedKey {
        verify_key(key, &self.roster()).expect("key attested by every member")
    }

    pub fn request(&self, key: &KeyView, messages: &[&[u8]]) -> SignedRequest {
        let key_id = KeyId::from_hex(&key.key_id).expect("key id");
        RequestBuilder::new(key_id)
            .messages(messages.iter().map(|m| m.to_vec()))
            .purpose("BTC", 50_000, "bc1qexample", "test")
            .sign(&self.client_key)
    }

    /// POSTs a raw body; returns status, headers and the JSON answer.
    pub async fn post_raw(
        &self,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
        headers: &[(&str, &str)],
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let mut req = self
            .api
            .http()
            .post(format!("{}{path}", self.base))
            .header("content-type", content_type)
            .body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.expect("send");
        split(resp).await
    }

    pub async fn get_raw(&self, path: &str) -> (u16, reqwest::header::HeaderMap, Value) {
        let resp = self
            .api
            .http()
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("send");
        split(resp).await
    }

    /// Submits `signed` for `key` with optional idempotency key and query.
    pub async fn submit(
        &self,
        key: &str,
        signed: &SignedRequest,
        query: &str,
        idempotency: Option<&str>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let body = serde_json::to_vec(&serde_json::json!({
            "signed_request": hex::encode(signed.encode()),
        }))
        .expect("json");
        let mut headers = Vec::new();
        if let Some(k) = idempotency {
            headers.push(("Idempotency-Key", k));
        }
        self.post_raw(
            &format!("/v1/keys/{key}/signatures{query}"),
            "application/json",
            body,
            &headers,
        )
        .await
    }
}

pub async fn split(resp: reqwest::Response) -> (u16, reqwest::header::HeaderMap, Value) {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.expect("body");
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, headers, value)
}

/// Asserts a problem+json answer with the given status and `type` slug.
pub fn assert_problem(answer: &(u16, reqwest::header::HeaderMap, Value), status: u16, slug: &str) {
    let (s, h, v) = answer;
    assert_eq!(*s, status, "status; body: {v}");
    assert_eq!(
        h.get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/problem+json"),
        "content type; body: {v}"
    );
    assert_eq!(
        v["type"].as_str(),
        Some(format!("https://quorate.dev/problems/{slug}").as_str()),
        "problem type; body: {v}"
    );
    assert_eq!(v["status"].as_u64(), Some(u64::from(status)));
    assert!(v["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(v["detail"].as_str().is_some_and(|t| !t.is_empty()));
}
