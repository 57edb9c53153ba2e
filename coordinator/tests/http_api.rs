//! The coordinator's HTTP API end to end over a real server on 127.0.0.1 with the
//! in-memory LocalBackend (real DKG, real FROST signatures).

mod common;

use std::time::Duration;

use common::{assert_problem, Server};
use quorate_coordinator::{
    api::{model::JobStatus, problem::ProblemKind},
    client::{verify_job, RequestBuilder, SignOptions},
    protocol::{Ciphersuite, KeyId},
};
use serde_json::json;

#[tokio::test]
async fn every_ciphersuite_creates_signs_batches_and_verifies() {
    let server = Server::start(600).await;
    for suite in Ciphersuite::ALL {
        let key = server.create_key(suite).await;
        assert_eq!(key.ciphersuite, suite);
        assert_eq!(key.threshold, 2);
        assert_eq!(key.participants.len(), 3);
        assert_eq!(
            key.participants.iter().map(|p| p.index).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert!(
            key.participants.iter().all(|p| p.verifying_share.is_some()),
            "verifying shares decoded"
        );
        // Native encodings.
        let pk = &key.public_key;
        match suite {
            Ciphersuite::Secp256k1 => {
                let c = hex::decode(pk.compressed.as_ref().expect("compressed")).expect("hex");
                assert_eq!(c.len(), 33);
                assert!(c[0] == 2 || c[0] == 3);
                assert!(pk.x_only.is_none() && pk.ed25519.is_none());
            }
            Ciphersuite::Secp256k1Tr => {
                let x = hex::decode(pk.x_only.as_ref().expect("x-only")).expect("hex");
                assert_eq!(x.len(), 32);
                let c = hex::decode(pk.compressed.as_ref().expect("compressed")).expect("hex");
                assert_eq!(&c[1..], x.as_slice());
            }
            Ciphersuite::Ed25519 => {
                let k = hex::decode(pk.ed25519.as_ref().expect("ed25519")).expect("hex");
                assert_eq!(k.len(), 32);
            }
        }
        // GET /v1/keys/{id} gives the same view.
        let fetched = server.api.get_key(&key.key_id).await.expect("get key");
        assert_eq!(fetched, key);

        // A batch of three 32-byte messages, synchronously.
        let msgs: [&[u8]; 3] = [&[1u8; 32], &[2u8; 32], &[3u8; 32]];
        let signed = server.request(&key, &msgs);
        let job = server
            .api
            .sign(
                &key.key_id,
                &signed,
                SignOptions::wait(Duration::from_secs(60)),
            )
            .await
            .expect("sign");
        assert_eq!(job.status, JobStatus::Succeeded, "{job:?}");
        let result = job.result.as_ref().expect("result");
        assert_eq!(result.signatures.len(), 3);
        assert!(!result.attempts.is_empty());
        assert_eq!(result.attempts[0].outcome, "signed");
        verify_job(&server.attested(&key), &signed.request, &job).expect("signatures verify");

        // Verification is not vacuous: a flipped bit or a swapped message is caught.
        let mut bad = job.clone();
        let sigs = &mut bad.result.as_mut().expect("result").signatures;
        let mut raw = hex::decode(&sigs[1].signature).expect("hex");
        let last = raw.len() - 1;
        raw[last] ^= 1;
        sigs[1].signature = hex::encode(raw);
        assert!(verify_job(&server.attested(&key), &signed.request, &bad).is_err());
        let mut swapped = job.clone();
        swapped
            .result
            .as_mut()
            .expect("result")
            .signatures
            .swap(0, 2);
        assert!(verify_job(&server.attested(&key), &signed.request, &swapped).is_err());
    }
    let keys = server.api.list_keys().await.expect("list");
    assert_eq!(keys.len(), 3);
    server.stop().await;
}

#[tokio::test]
async fn taproot_tweak_signs_under_the_tweaked_output_key() {
    let server = Server::start(600).await;
    let key = server.create_key(Ciphersuite::Secp256k1Tr).await;
    let key_id = KeyId::from_hex(&key.key_id).expect("id");
    let signed = RequestBuilder::new(key_id)
        .message([9u8; 32])
        .tweak([5u8; 32])
        .purpose("BTC", 1, "bc1p", "")
        .sign(&server.client_key);
    let job = server
        .api
        .sign(
            &key.key_id,
            &signed,
            SignOptions::wait(Duration::from_secs(60)),
        )
        .await
        .expect("sign");
    verify_job(&server.attested(&key), &signed.request, &job).expect("verifies under tweaked key");
    let sig = &job.result.as_ref().expect("result").signatures[0];
    assert_ne!(sig.verifying_key, key.verifying_key, "tweaked key differs");
    server.stop().await;
}

#[tokio::test]
async fn async_job_is_polled_to_completion() {
    let server = Server::start(600).await;
    let key = server.create_key(Ciphersuite::Ed25519).await;
    let signed = server.request(&key, &[b"hello"]);
    let (status, headers, body) = server.submit(&key.key_id, &signed, "", None).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "pending");
    let id = body["id"].as_str().expect("job id").to_owned();
    assert_eq!(
        headers.get("location").and_then(|v| v.to_str().ok()),
        Some(format!("/v1/jobs/{id}").as_str())
    );
    let job = server
        .api
        .poll_until_done(&id, Duration::from_millis(20), Duration::from_secs(60))
        .await
        .expect("poll");
    assert_eq!(job.status, JobStatus::Succeeded);
    assert_eq!(job.request_hash, hex::encode(signed.request.hash()));
    verify_job(&server.attested(&key), &signed.request, &job).expect("verify");
    // Unknown and malformed job ids.
    assert_problem(
        &server
            .get_raw(&format!("/v1/jobs/{}", "00".repeat(16)))
            .await,
        404,
        "not-found",
    );
    assert_problem(
        &server.get_raw("/v1/jobs/xyz").await,
        400,
        "malformed-input",
    );
    server.stop().await;
}

#[tokio::test]
async fn idempotency_key_returns_the_same_job_and_refuses_a_different_body() {
    let server = Server::start(600).await;
    let key = server.create_key(Ciphersuite::Secp256k1).await;
    let signed = server.request(&key, &[&[1u8; 32]]);
    let first = server
        .submit(
            &key.key_id,
            &signed,
            "?wait=true&timeout_ms=60000",
            Some("payout-1"),
        )
        .await;
    assert_eq!(first.0, 200, "{}", first.2);
    let again = server
        .submit(
            &key.key_id,
            &signed,
            "?wait=true&timeout_ms=60000",
            Some("payout-1"),
        )
        .await;
    assert_eq!(again.0, 200, "{}", again.2);
    assert_eq!(first.2["id"], again.2["id"], "same job");
    assert_eq!(first.2["result"], again.2["result"], "same signatures");
    // The same body without the key is a replay (the nonce was used).
    assert_problem(
        &server.submit(&key.key_id, &signed, "", None).await,
        409,
        "replayed-request",
    );
    // Same key, different body.
    let other = server.request(&key, &[&[2u8; 32]]);
    let conflict = server
        .submit(&key.key_id, &other, "", Some("payout-1"))
        .await;
    assert_problem(&conflict, 422, "idempotency-conflict");
    assert_eq!(conflict.2["job_id"], first.2["id"]);
    // A different key with that body is a new job.
    let fresh = server
        .submit(&key.key_id, &other, "", Some("payout-2"))
        .await;
    assert_eq!(fresh.0, 202, "{}", fresh.2);
    assert_ne!(fresh.2["id"], first.2["id"]);
    server.stop().await;
}

#[tokio::test]
async fn bad_inputs_get_the_right_problem_and_the_server_keeps_serving() {
    let server = Server::start(600).await;
    let key = server.create_key(Ciphersuite::Ed25519).await;
    let path = format!("/v1/keys/{}/signatures", key.key_id);
    let json = "application/json";

    // Malformed JSON.
    let a = server
        .post_raw(&path, json, b"{\"signed_request\": ".to_vec(), &[])
        .await;
    assert_problem(&a, 400, "malformed-input");
    // Wrong type names the field.
    let a = server
        .post_raw(&path, json, br#"{"signed_request": 5}"#.to_vec(), &[])
        .await;
    assert_problem(&a, 400, "malformed-input");
    assert_eq!(a.2["errors"][0]["field"], "signed_request", "{}", a.2);
    // Unknown member.
    let a = server
        .post_raw(
            &path,
            json,
            br#"{"signed_request": "00", "x": 1}"#.to_vec(),
            &[],
        )
        .await;
    assert_problem(&a, 400, "malformed-input");
    // Not hex, and hex that does not decode as a request.
    let a = server
        .post_raw(&path, json, br#"{"signed_request": "zz"}"#.to_vec(), &[])
        .await;
    assert_problem(&a, 400, "malformed-input");
    assert_eq!(a.2["errors"][0]["field"], "signed_request");
    let a = server
        .post_raw(&path, json, br#"{"signed_request": "0001"}"#.to_vec(), &[])
        .await;
    assert_problem(&a, 400, "malformed-input");
    // Wrong content type.
    let a = server
        .post_raw(&path, "text/plain", b"{}".to_vec(), &[])
        .await;
    assert_problem(&a, 415, "unsupported-media-type");
    // Huge body.
    let huge = format!("{{\"signed_request\": \"{}\"}}", "ab".repeat(300 * 1024));
    let a = server.post_raw(&path, json, huge.into_bytes(), &[]).await;
    assert_problem(&a, 413, "payload-too-large");
    // Bad query.
    let signed = server.request(&key, &[b"m"]);
    let a = server
        .submit(&key.key_id, &signed, "?wait=maybe", None)
        .await;
    assert_problem(&a, 400, "malformed-input");
    // Unknown key (the request names it too), and a malformed key id.
    let ghost = "11".repeat(16);
    let ghost_req = RequestBuilder::new(KeyId::from_hex(&ghost).expect("id"))
        .message(b"m".to_vec())
        .sign(&server.client_key);
    assert_problem(
        &server.submit(&ghost, &ghost_req, "", None).await,
        404,
        "unknown-key",
    );
    assert_problem(
        &server.get_raw(&format!("/v1/keys/{ghost}")).await,
        404,
        "unknown-key",
    );
    assert_problem(
        &server.get_raw("/v1/keys/nothex").await,
        400,
        "malformed-input",
    );
    // Path and request disagree on the key.
    assert_problem(
        &server.submit(&key.key_id, &ghost_req, "", None).await,
        400,
        "malformed-input",
    );
    // The review's attack: a validly signed request whose destination is 45 000
    // control characters is refused as malformed, naming the field; so is a memo
    // over its bound. (Each node refuses it the same way: node/tests/network.rs.)
    for (field, purpose) in [
        (
            "purpose.destination",
            ("BTC", "\u{1}".repeat(45_000), String::new()),
        ),
        (
            "purpose.memo",
            ("BTC", "bc1q".to_string(), "m".repeat(1025)),
        ),
        (
            "purpose.asset",
            ("B T C", "bc1q".to_string(), String::new()),
        ),
    ] {
        let mut r = server.request(&key, &[b"m"]).request;
        r.purpose.asset = purpose.0.into();
        r.purpose.destination = purpose.1;
        r.purpose.memo = purpose.2;
        let a = server
            .submit(&key.key_id, &r.sign(&server.client_key), "", None)
            .await;
        assert_problem(&a, 400, "malformed-input");
        assert!(a.2.to_string().contains(field), "{field}: {}", a.2);
    }
    // Bad client signature: altered after signing.
    let mut altered = server.request(&key, &[b"m"]);
    altered.request.purpose.amount += 1;
    assert_problem(
        &server.submit(&key.key_id, &altered, "", None).await,
        401,
        "bad-client-signature",
    );
    // Expired.
    let key_id = KeyId::from_hex(&key.key_id).expect("id");
    let mut expired = RequestBuilder::new(key_id)
        .message(b"m".to_vec())
        .build(server.client_key.verifying_key().to_bytes());
    expired.expires_at_ms = 1_000;
    let expired = expired.sign(&server.client_key);
    assert_problem(
        &server.submit(&key.key_id, &expired, "", None).await,
        422,
        "expired-request",
    );
    // Replayed nonce.
    let once = server.request(&key, &[b"m"]);
    assert_eq!(server.submit(&key.key_id, &once, "", None).await.0, 202);
    assert_problem(
        &server.submit(&key.key_id, &once, "", None).await,
        409,
        "replayed-request",
    );
    // Unregistered client.
    let stranger = ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng);
    let foreign = RequestBuilder::new(key_id)
        .message(b"m".to_vec())
        .sign(&stranger);
    assert_problem(
        &server.submit(&key.key_id, &foreign, "", None).await,
        403,
        "unregistered-client",
    );
    // Empty message list.
    let empty = RequestBuilder::new(key_id).sign(&server.client_key);
    assert_problem(
        &server.submit(&key.key_id, &empty, "", None).await,
        400,
        "malformed-input",
    );
    // Admin operation without / with a wrong token.
    let spec = br#"{"ciphersuite":"ed25519","threshold":2,"participants":{"spanning":{"n":3,"min_segments":1}}}"#;
    assert_problem(
        &server.post_raw("/v1/keys", json, spec.to_vec(), &[]).await,
        401,
        "unauthorized",
    );
    assert_problem(
        &server
            .post_raw(
                "/v1/keys",
                json,
                spec.to_vec(),
                &[("authorization", "Bearer nope")],
            )
            .await,
        401,
        "unauthorized",
    );
    // Key spec errors name the field.
    let auth = [("authorization", "Bearer test-admin-token")];
    let a = server
        .post_raw("/v1/keys", json, br#"{"ciphersuite":"rsa","threshold":2,"participants":{"spanning":{"n":3,"min_segments":1}}}"#.to_vec(), &auth)
        .await;
    assert_problem(&a, 400, "malformed-input");
    assert_eq!(a.2["errors"][0]["field"], "ciphersuite", "{}", a.2);
    let a = server
        .post_raw(
            "/v1/keys",
            json,
            br#"{"ciphersuite":"ed25519","threshold":2,"participants":{"nodes":["00"]}}"#.to_vec(),
            &auth,
        )
        .await;
    assert_problem(&a, 400, "malformed-input");
    assert_eq!(
        a.2["errors"][0]["field"], "participants.nodes[0]",
        "{}",
        a.2
    );
    let a = server
        .post_raw("/v1/keys", json, br#"{"ciphersuite":"ed25519","threshold":9,"participants":{"spanning":{"n":3,"min_segments":1}}}"#.to_vec(), &auth)
        .await;
    assert_problem(&a, 400, "invalid-key-spec");
    let a = server
        .post_raw("/v1/keys", json, br#"{"ciphersuite":"ed25519","threshold":2,"participants":{"spanning":{"n":9,"min_segments":1}}}"#.to_vec(), &auth)
        .await;
    assert_problem(&a, 503, "not-enough-signers");
    // Unknown route and wrong method.
    assert_problem(&server.get_raw("/v2/nothing").await, 404, "not-found");
    assert_problem(&server.get_raw(&path).await, 405, "method-not-allowed");

    // Still serving: a valid request signs.
    let ok = server.request(&key, &[b"after the storm"]);
    let job = server
        .api
        .sign(&key.key_id, &ok, SignOptions::wait(Duration::from_secs(60)))
        .await
        .expect("valid request still works");
    verify_job(&server.attested(&key), &ok.request, &job).expect("verify");
    let health = server.api.health().await.expect("health");
    assert_eq!(health.status, "ok");

    // Metrics counted what happened.
    let metrics = server
        .api
        .http()
        .get(format!("{}/metrics", server.base))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains(r#"route="/v1/keys/{id}/signatures""#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"status="413""#), "{metrics}");
    assert!(
        metrics.contains(r#"quorate_coordinator_jobs_total{outcome="succeeded"}"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("quorate_coordinator_signing_seconds_bucket"),
        "{metrics}"
    );
    assert!(metrics.contains(r#"reason="replayed""#), "{metrics}");
    server.stop().await;
}

#[tokio::test]
async fn per_client_rate_limit_answers_429_with_retry_after() {
    let server = Server::start(2).await;
    let key = server.create_key(Ciphersuite::Ed25519).await;
    for _ in 0..2 {
        let r = server.request(&key, &[b"m"]);
        assert_eq!(server.submit(&key.key_id, &r, "", None).await.0, 202);
    }
    let r = server.request(&key, &[b"m"]);
    let a = server.submit(&key.key_id, &r, "", None).await;
    assert_problem(&a, 429, "rate-limited");
    let retry: u64 =
        a.1.get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .expect("Retry-After");
    assert!((1..=30).contains(&retry), "{retry}");
    assert!(a.2["retry_after_ms"].as_u64().is_some());
    // The rejected request's nonce was not consumed by the limiter: it is not a replay
    // later (the limit is checked before the nonce is recorded).
    assert_problem(
        &server.submit(&key.key_id, &r, "", None).await,
        429,
        "rate-limited",
    );
    server.stop().await;
}

#[tokio::test]
async fn finished_jobs_and_keys_are_answered_after_a_restart() {
    let server = Server::start(600).await;
    let key = server.create_key(Ciphersuite::Secp256k1Tr).await;
    let signed = server.request(&key, &[&[4u8; 32]]);
    let job = server
        .api
        .sign(
            &key.key_id,
            &signed,
            SignOptions::wait(Duration::from_secs(60)),
        )
        .await
        .expect("sign");
    assert_eq!(job.status, JobStatus::Succeeded);
    // The client's pinned roster is the first run's nodes.
    let attested = server.attested(&key);
    let (dir, client_key) = server.stop().await;

    let server = Server::start_in(dir, 600, Some(client_key)).await;
    let again = server.api.job(&job.id).await.expect("job after restart");
    assert_eq!(again, job);
    assert_eq!(server.api.get_key(&key.key_id).await.expect("key"), key);
    // The stored key still carries its attestations after the restart.
    let reloaded = server.api.get_key(&key.key_id).await.expect("key");
    assert_eq!(reloaded.attestations.len(), 3);
    verify_job(&attested, &signed.request, &again).expect("verify");
    server.stop().await;
}

#[tokio::test]
async fn openapi_document_describes_every_route_and_problem() {
    let server = Server::start(600).await;
    let doc = server.api.openapi().await.expect("openapi");
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().expect("paths");
    for (path, methods) in [
        ("/v1/keys", &["get", "post"][..]),
        ("/v1/keys/{id}", &["get"][..]),
        ("/v1/keys/{id}/signatures", &["post"][..]),
        ("/v1/keys/{id}/refresh", &["post"][..]),
        ("/v1/keys/{id}/reshare", &["post"][..]),
        ("/v1/keys/{id}/repair", &["post"][..]),
        ("/v1/jobs/{id}", &["get"][..]),
        ("/v1/netting/rounds", &["post"][..]),
        ("/v1/netting/rounds/{id}", &["get"][..]),
        ("/v1/netting/rounds/{id}/bundles", &["post"][..]),
        ("/v1/netting/rounds/{id}/close", &["post"][..]),
        ("/v1/netting/rounds/{id}/results/{party}", &["get"][..]),
        ("/v1/netting/rounds/{id}/settlement", &["get"][..]),
        ("/health", &["get"][..]),
        ("/metrics", &["get"][..]),
        ("/openapi.json", &["get"][..]),
    ] {
        let item = paths
            .get(path)
            .unwrap_or_else(|| panic!("{path} documented"));
        for m in methods {
            let op = &item[*m];
            assert!(op.is_object(), "{m} {path} documented");
            assert!(
                op["operationId"].is_string(),
                "{m} {path} has an operationId"
            );
            assert!(op["responses"].is_object(), "{m} {path} has responses");
        }
    }
    assert_eq!(paths.len(), 16, "no undocumented extra paths");
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    for s in [
        "Problem",
        "CreateKeyBody",
        "Key",
        "KeyList",
        "SignBody",
        "Job",
        "Health",
        "SigningRequest",
        "SignedRequest",
        "RoundSpec",
        "CreateRoundBody",
        "Round",
        "BundleBody",
        "BundleAnswer",
        "CloseBody",
        "RoundResult",
        "SettlementBatch",
        "Settlement",
        "LifecycleBody",
    ] {
        assert!(schemas.contains_key(s), "schema {s}");
    }
    // Every problem type is documented.
    let text = serde_json::to_string(&doc).expect("text");
    for kind in ProblemKind::ALL {
        assert!(
            text.contains(&kind.type_uri()),
            "{} documented",
            kind.slug()
        );
    }
    // Every $ref resolves.
    fn refs(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, x) in m {
                    if k == "$ref" {
                        if let Some(s) = x.as_str() {
                            out.push(s.to_owned());
                        }
                    }
                    refs(x, out);
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(!all.is_empty());
    for r in all {
        let ptr = r.strip_prefix('#').expect("local ref");
        assert!(doc.pointer(ptr).is_some(), "unresolved {r}");
    }
    assert_eq!(
        json!(doc["components"]["securitySchemes"]["adminToken"]["scheme"]),
        "bearer"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_failed_job_answers_with_its_problem_and_is_stored_failed() {
    let server = Server::start(600).await;
    // Ed25519 keys take no tweak: the signers cannot sign this request.
    let key = server.create_key(Ciphersuite::Ed25519).await;
    let key_id = KeyId::from_hex(&key.key_id).expect("id");
    let signed = RequestBuilder::new(key_id)
        .message([1u8; 32])
        .tweak([2u8; 32])
        .sign(&server.client_key);
    let answer = server
        .submit(&key.key_id, &signed, "?wait=true&timeout_ms=60000", None)
        .await;
    assert!(answer.0 >= 400, "{}", answer.2);
    let job_id = answer.2["job_id"].as_str().expect("job_id").to_owned();
    let job = server.api.job(&job_id).await.expect("job");
    assert_eq!(job.status, JobStatus::Failed);
    let problem = job.problem.expect("problem");
    assert_eq!(problem.type_uri, answer.2["type"].as_str().expect("type"));
    assert!(job.result.is_none());
    server.stop().await;
}

#[tokio::test]
async fn odd_methods_and_paths_add_no_metric_series() {
    let server = Server::start(600).await;
    let series = |text: &str| {
        text.lines()
            .filter(|l| l.starts_with("quorate_coordinator_http_requests_total{"))
            .map(|l| {
                l.rsplit_once(' ')
                    .map_or(l, |(labels, _)| labels)
                    .to_owned()
            })
            .collect::<std::collections::BTreeSet<_>>()
    };
    let metrics = |server: &Server| {
        let url = format!("{}/metrics", server.base);
        let http = server.api.http().clone();
        async move {
            http.get(url)
                .send()
                .await
                .expect("metrics")
                .text()
                .await
                .expect("text")
        }
    };
    // One of each kind first, so the series that may exist do.
    for (method, path) in [("FROBNICATE", "/health"), ("GET", "/no/such/route")] {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let _ = server
            .api
            .http()
            .request(m, format!("{}{path}", server.base))
            .send()
            .await
            .expect("send");
    }
    let _ = metrics(&server).await;
    let before = series(&metrics(&server).await);
    for i in 0..20 {
        let m = reqwest::Method::from_bytes(format!("WEIRD{i}").as_bytes()).expect("method");
        let answer = server
            .api
            .http()
            .request(m, format!("{}/health", server.base))
            .send()
            .await
            .expect("send");
        assert_eq!(answer.status().as_u16(), 405);
        let answer = server.get_raw(&format!("/v1/random-{i}/x{i}")).await;
        assert_problem(&answer, 404, "not-found");
        let answer = server.get_raw(&format!("/v1/jobs/{i:032x}")).await;
        assert_problem(&answer, 404, "not-found");
    }
    let after_text = metrics(&server).await;
    let after = series(&after_text);
    assert_eq!(
        before.len() + 1,
        after.len(),
        "only /v1/jobs/{{id}} 404 is new: {after:?}"
    );
    assert!(!after_text.contains("WEIRD"), "{after_text}");
    assert!(!after_text.contains("random-"), "{after_text}");
    assert!(after_text.contains("method=\"other\""), "{after_text}");
    assert!(
        after_text.contains("route=\"/v1/jobs/{id}\""),
        "{after_text}"
    );
    server.stop().await;
}

#[tokio::test]
async fn an_empty_admin_token_never_authorises_key_creation() {
    for token in ["", "   "] {
        let dir = tempfile::tempdir().expect("tempdir");
        let server = Server::start_custom(dir, 600, None, |s| {
            s.admin_token = Some(token.into());
        })
        .await;
        let body = br#"{"ciphersuite":"ed25519","threshold":2,"participants":{"spanning":{"n":3,"min_segments":1}}}"#;
        for auth in ["Bearer ", "Bearer   ", "Bearer"] {
            let answer = server
                .post_raw(
                    "/v1/keys",
                    "application/json",
                    body.to_vec(),
                    &[("authorization", auth)],
                )
                .await;
            assert_problem(&answer, 401, "unauthorized");
        }
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_identical_idempotent_requests_all_get_the_one_job() {
    let server = Server::start(6000).await;
    let key = server.create_key(Ciphersuite::Ed25519).await;
    for round in 0..12u8 {
        let signed = server.request(&key, &[&[round; 32]]);
        let idem = format!("race-{round}");
        let answers = futures::future::join_all(
            (0..8).map(|_| server.submit(&key.key_id, &signed, "", Some(&idem))),
        )
        .await;
        let first = &answers[0].2["id"];
        assert!(first.is_string(), "{:?}", answers[0]);
        for (status, _, body) in &answers {
            assert!(
                *status == 200 || *status == 202,
                "round {round}: {status} {body}"
            );
            assert_eq!(&body["id"], first, "round {round}: one job for all");
        }
        // A different body under the same key is a conflict naming that job.
        let other = server.request(&key, &[&[0xee; 32]]);
        let conflict = server.submit(&key.key_id, &other, "", Some(&idem)).await;
        assert_problem(&conflict, 422, "idempotency-conflict");
        assert_eq!(&conflict.2["job_id"], first);
    }
    server.stop().await;
}

/// A second registered client and a request signed by it.
fn second_client() -> (
    ed25519_dalek::SigningKey,
    quorate_coordinator::api::auth::ClientInfo,
) {
    let key = ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng);
    let info = quorate_coordinator::api::auth::ClientInfo {
        name: "exchange-b".into(),
        public_key: key.verifying_key().to_bytes(),
        requests_per_minute: 600,
    };
    (key, info)
}

fn signed_by(
    key: &quorate_coordinator::api::model::KeyView,
    client: &ed25519_dalek::SigningKey,
    message: u8,
) -> quorate_coordinator::protocol::request::SignedRequest {
    RequestBuilder::new(KeyId::from_hex(&key.key_id).expect("key id"))
        .message([message; 32])
        .purpose("BTC", 50_000, "bc1qexample", "test")
        .sign(client)
}

#[tokio::test]
async fn one_clients_nonce_quota_refuses_it_alone() {
    let (b_key, b_info) = second_client();
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start_custom(dir, 600, None, |s| {
        s.limits.nonce_cache_per_client = 2;
        s.clients.add(b_info).expect("register b");
    })
    .await;
    let key = server.create_key(Ciphersuite::Ed25519).await;
    for m in 0..2u8 {
        let answer = server
            .submit(&key.key_id, &server.request(&key, &[&[m; 32]]), "", None)
            .await;
        assert_eq!(answer.0, 202, "{}", answer.2);
    }
    let flood = server
        .submit(&key.key_id, &server.request(&key, &[&[9; 32]]), "", None)
        .await;
    assert_problem(&flood, 429, "rate-limited");
    assert_eq!(flood.2["quota"], "limits.nonce_cache_per_client");
    assert!(flood.1.get("retry-after").is_some(), "{:?}", flood.1);
    assert!(
        flood.2["detail"]
            .as_str()
            .is_some_and(|d| d.contains("nonce_cache_per_client")),
        "{}",
        flood.2
    );
    // The other client keeps working.
    let other = server
        .submit(&key.key_id, &signed_by(&key, &b_key, 1), "", None)
        .await;
    assert_eq!(other.0, 202, "{}", other.2);
    server.stop().await;
}

#[tokio::test]
async fn one_clients_idempotency_key_quota_refuses_it_alone() {
    let (b_key, b_info) = second_client();
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start_custom(dir, 600, None, |s| {
        s.limits.idempotency_keys_per_client = 1;
        s.clients.add(b_info).expect("register b");
    })
    .await;
    let key = server.create_key(Ciphersuite::Ed25519).await;
    let first = server.request(&key, &[&[1; 32]]);
    let answer = server.submit(&key.key_id, &first, "", Some("k1")).await;
    assert_eq!(answer.0, 202, "{}", answer.2);
    // Its retry is still answered from the binding.
    let retry = server.submit(&key.key_id, &first, "", Some("k1")).await;
    assert_eq!(retry.2["id"], answer.2["id"]);
    let second = server.request(&key, &[&[2; 32]]);
    let over = server.submit(&key.key_id, &second, "", Some("k2")).await;
    assert_problem(&over, 429, "rate-limited");
    assert_eq!(over.2["quota"], "limits.idempotency_keys_per_client");
    // The refused request did not burn its nonce: without a key it goes through.
    let plain = server.submit(&key.key_id, &second, "", None).await;
    assert_eq!(plain.0, 202, "{}", plain.2);
    let other = server
        .submit(&key.key_id, &signed_by(&key, &b_key, 1), "", Some("k1"))
        .await;
    assert_eq!(other.0, 202, "{}", other.2);
    server.stop().await;
}
