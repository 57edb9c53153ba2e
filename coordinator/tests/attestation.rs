//! Clients trust a key only with every committee member's attestation, checked
//! against a pinned roster (DESIGN §1, invariant 9). A tampering proxy between the
//! client and a real coordinator alters `GET /v1/keys/{id}` answers byte by byte.

mod common;

use std::time::Duration;

use axum::{extract::Path, routing::get, Json, Router};
use common::Server;
use quorate_coordinator::{
    client::{verify_job, Client, ClientError, SignOptions},
    protocol::{roster::Roster, Ciphersuite, NodeIdentity},
};
use rand_core::OsRng;
use serde_json::Value;
use tokio::net::TcpListener;

/// Starts a proxy that answers `GET /v1/keys/{id}` with the real answer passed
/// through `alter`; returns a client of the proxy.
async fn tampering_proxy(server: &Server, alter: fn(&mut Value)) -> Client {
    let upstream = server.base.clone();
    let app = Router::new().route(
        "/v1/keys/{id}",
        get(move |Path(id): Path<String>| {
            let upstream = upstream.clone();
            async move {
                let mut v: Value = reqwest::get(format!("{upstream}/v1/keys/{id}"))
                    .await
                    .expect("upstream")
                    .json()
                    .await
                    .expect("json");
                alter(&mut v);
                Json(v)
            }
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Client::new(base).expect("client")
}

/// Flips the lowest bit of the hex digit at `pos` of a hex string.
fn flip_hex(s: &str, pos: usize) -> String {
    let mut bytes = hex::decode(s).expect("hex");
    bytes[pos] ^= 1;
    hex::encode(bytes)
}

fn unattested(r: Result<impl std::fmt::Debug, ClientError>) -> String {
    match r {
        Err(ClientError::Unattested(m)) => m,
        other => panic!("expected an unattested-key refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn client_verifies_key_attested_by_every_member() {
    let server = Server::start(600).await;
    let roster = server.roster();
    for suite in Ciphersuite::ALL {
        let key = server.create_key(suite).await;
        assert_eq!(key.attestations.len(), 3, "one attestation per member");
        let attested = server
            .api
            .get_attested_key(&key.key_id, &roster)
            .await
            .expect("attested");
        assert_eq!(attested.view(), &key);
        // verify_job accepts signatures under the attested key.
        let signed = server.request(&key, &[&[9u8; 32]]);
        let job = server
            .api
            .sign(
                &key.key_id,
                &signed,
                SignOptions::wait(Duration::from_secs(60)),
            )
            .await
            .expect("sign");
        verify_job(&attested, &signed.request, &job).expect("verifies");
    }
    // The list carries attestations too.
    let list = server.api.list_keys().await.expect("list");
    assert!(list.iter().all(|k| k.attestations.len() == 3));
}

#[tokio::test]
async fn client_refuses_key_whose_attestation_is_altered_by_one_byte() {
    let server = Server::start(600).await;
    let key = server.create_key(Ciphersuite::Secp256k1Tr).await;
    let roster = server.roster();
    let proxy = tampering_proxy(&server, |v| {
        let s = v["attestations"][1]["signature"].as_str().expect("sig");
        v["attestations"][1]["signature"] = Value::String(flip_hex(s, 20));
    })
    .await;
    let m = unattested(proxy.get_attested_key(&key.key_id, &roster).await);
    assert!(m.contains("does not verify"), "{m}");
}

#[tokio::test]
async fn client_refuses_key_whose_group_key_is_altered_by_one_byte() {
    let server = Server::start(600).await;
    let key = server.create_key(Ciphersuite::Ed25519).await;
    let roster = server.roster();
    // Only the advertised key changes: it disagrees with the package.
    let proxy = tampering_proxy(&server, |v| {
        let s = v["verifying_key"].as_str().expect("vk");
        v["verifying_key"] = Value::String(flip_hex(s, 5));
    })
    .await;
    unattested(proxy.get_attested_key(&key.key_id, &roster).await);
    // The advertised native key changes.
    let proxy = tampering_proxy(&server, |v| {
        let s = v["public_key"]["ed25519"].as_str().expect("ed25519");
        v["public_key"]["ed25519"] = Value::String(flip_hex(s, 31));
    })
    .await;
    unattested(proxy.get_attested_key(&key.key_id, &roster).await);
    // A verifying share changes.
    let proxy = tampering_proxy(&server, |v| {
        let s = v["participants"][0]["verifying_share"]
            .as_str()
            .expect("share");
        v["participants"][0]["verifying_share"] = Value::String(flip_hex(s, 3));
    })
    .await;
    unattested(proxy.get_attested_key(&key.key_id, &roster).await);
    // The threshold changes.
    let proxy = tampering_proxy(&server, |v| {
        v["threshold"] = Value::from(3);
    })
    .await;
    unattested(proxy.get_attested_key(&key.key_id, &roster).await);
}

#[tokio::test]
async fn client_refuses_key_attested_by_fewer_than_all_members() {
    let server = Server::start(600).await;
    let key = server.create_key(Ciphersuite::Secp256k1).await;
    let roster = server.roster();
    let proxy = tampering_proxy(&server, |v| {
        v["attestations"].as_array_mut().expect("array").truncate(2);
    })
    .await;
    let m = unattested(proxy.get_attested_key(&key.key_id, &roster).await);
    assert!(m.contains("2 of 3"), "{m}");
    // No attestations at all.
    let proxy = tampering_proxy(&server, |v| {
        v["attestations"] = Value::Array(Vec::new());
    })
    .await;
    unattested(proxy.get_attested_key(&key.key_id, &roster).await);
}

#[tokio::test]
async fn client_refuses_key_when_its_pinned_roster_lists_other_nodes() {
    let server = Server::start(600).await;
    let key = server.create_key(Ciphersuite::Secp256k1).await;
    // The coordinator's nodes are not the ones the client pinned.
    let mut text = String::new();
    for i in 1..=3 {
        let id = NodeIdentity::generate(&mut OsRng).public();
        text.push_str(&format!(
            "[[nodes]]\nname = \"n{i}\"\nnode_id = \"{}\"\nseal_key = \"{}\"\nindex = {i}\nsegment = \"s{i}\"\n",
            id.node,
            hex::encode(id.seal_key)
        ));
    }
    let other = Roster::from_toml(&text).expect("roster");
    let m = unattested(server.api.get_attested_key(&key.key_id, &other).await);
    assert!(m.contains("not a signer"), "{m}");
}

/// unsigned LEB128, as postcard writes lengths and integers.
fn varint(mut n: u64, out: &mut Vec<u8>) {
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

#[tokio::test]
async fn attestations_verify_from_the_documented_json_fields_alone() {
    // What a non-Rust integrator does from coordinator/README.md: rebuild the
    // message from the JSON fields and check each signature with plain Ed25519.
    let server = Server::start(600).await;
    for suite in Ciphersuite::ALL {
        let key = server.create_key(suite).await;
        let v: Value = server.get_raw(&format!("/v1/keys/{}", key.key_id)).await.2;
        let mut msg = b"quorate/key-attestation/v1\0".to_vec();
        varint(1, &mut msg);
        msg.extend(hex::decode(v["key_id"].as_str().expect("id")).expect("hex"));
        let suite_tag = match v["ciphersuite"].as_str().expect("suite") {
            "secp256k1" => 0,
            "secp256k1-tr" => 1,
            "ed25519" => 2,
            other => panic!("suite {other}"),
        };
        varint(suite_tag, &mut msg);
        varint(v["threshold"].as_u64().expect("t"), &mut msg);
        let participants = v["participants"].as_array().expect("participants");
        varint(participants.len() as u64, &mut msg);
        for p in participants {
            msg.extend(hex::decode(p["node"].as_str().expect("node")).expect("hex"));
            varint(p["index"].as_u64().expect("index"), &mut msg);
            let share = hex::decode(p["verifying_share"].as_str().expect("share")).expect("hex");
            varint(share.len() as u64, &mut msg);
            msg.extend(share);
        }
        let vk = hex::decode(v["verifying_key"].as_str().expect("vk")).expect("hex");
        varint(vk.len() as u64, &mut msg);
        msg.extend(vk);

        let attestations = v["attestations"].as_array().expect("attestations");
        assert_eq!(attestations.len(), participants.len());
        for (a, p) in attestations.iter().zip(participants) {
            assert_eq!(a["node"], p["node"], "index order");
            let node: [u8; 32] = hex::decode(a["node"].as_str().expect("node"))
                .expect("hex")
                .try_into()
                .expect("32 bytes");
            let sig: [u8; 64] = hex::decode(a["signature"].as_str().expect("sig"))
                .expect("hex")
                .try_into()
                .expect("64 bytes");
            let key = ed25519_dalek::VerifyingKey::from_bytes(&node).expect("key");
            let sig = ed25519_dalek::Signature::from_bytes(&sig);
            key.verify_strict(&msg, &sig)
                .expect("documented message verifies");
            let mut other = msg.clone();
            let last = other.len() - 1;
            other[last] ^= 1;
            assert!(key.verify_strict(&other, &sig).is_err());
        }
    }
}
