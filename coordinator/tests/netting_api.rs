//! The netting resource end to end over a real HTTP server with the in-memory
//! LocalBackend (real netting protocol on local node identities, real FROST
//! signing of the settlement), through the client library.

mod common;

use std::time::Duration;

use common::{assert_problem, Server};
use ed25519_dalek::{Signer as _, SigningKey};
use quorate_coordinator::{
    client::{check_own_transfers, verify_result, verify_settlement, AttestedKey, RoundBuilder},
    protocol::{
        netting::{
            round::{close_message, result_request_message},
            share::deal,
            Instrument, InstrumentKind, PartyInput, Position, RoundSpec,
        },
        Ciphersuite,
    },
};
use rand_core::OsRng;
use serde_json::json;
use x25519_dalek::StaticSecret;

struct Desk {
    name: &'static str,
    sign: SigningKey,
    seal: StaticSecret,
}

fn desk(name: &'static str) -> Desk {
    Desk {
        name,
        sign: SigningKey::generate(&mut OsRng),
        seal: StaticSecret::random_from_rng(OsRng),
    }
}

fn future() -> Instrument {
    Instrument {
        name: "BTC-FUT-DEC".into(),
        kind: InstrumentKind::Future,
        asset: "USD".into(),
        multiplier: 1,
        price_move: 100,
        premium: 0,
    }
}

fn spec_for(key: &AttestedKey, server: &Server, desks: &[Desk]) -> RoundSpec {
    let mut b = RoundBuilder::new(key, &server.roster()).expect("builder");
    for d in desks {
        b = b.party(
            d.name,
            d.sign.verifying_key().to_bytes(),
            x25519_dalek::PublicKey::from(&d.seal).to_bytes(),
        );
    }
    b.instrument(future())
        .cutoff_in(Duration::from_secs(3600))
        .build()
        .expect("spec")
}

fn position(cp: &str, quantity: i64, cash: i64) -> PartyInput {
    PartyInput {
        positions: vec![Position {
            counterparty: cp.into(),
            instrument: "BTC-FUT-DEC".into(),
            quantity,
            cash,
        }],
        cover: Vec::new(),
    }
}

async fn setup() -> (Server, AttestedKey) {
    let server = Server::start(600).await;
    let key = server.create_key(Ciphersuite::Ed25519).await;
    let attested = server.attested(&key);
    (server, attested)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
}

#[tokio::test]
async fn a_round_settles_and_every_party_verifies_its_result_and_the_signature() {
    let (server, key) = setup().await;
    let desks = [desk("desk-a"), desk("desk-b"), desk("desk-c")];
    let spec = spec_for(&key, &server, &desks);
    let view = server
        .api
        .create_round(&spec, &server.client_key)
        .await
        .expect("create");
    assert_eq!(view.state, "open");
    assert_eq!(view.announcement.len(), 3);
    assert!(view.announcement.iter().all(|a| a.outcome == "accepted"));
    // The same spec again is idempotent.
    let again = server
        .api
        .create_round(&spec, &server.client_key)
        .await
        .expect("again");
    assert_eq!(again.id, view.id);

    // a is long 5 against b, b short 5 against a; c trades nothing but pays a fee
    // to a (cash), booked on both sides.
    let inputs = [
        PartyInput {
            positions: vec![
                Position {
                    counterparty: "desk-b".into(),
                    instrument: "BTC-FUT-DEC".into(),
                    quantity: 5,
                    cash: 0,
                },
                Position {
                    counterparty: "desk-c".into(),
                    instrument: "BTC-FUT-DEC".into(),
                    quantity: 0,
                    cash: 7,
                },
            ],
            cover: Vec::new(),
        },
        position("desk-a", -5, 0),
        position("desk-a", 0, -7),
    ];
    for (d, input) in desks.iter().zip(&inputs) {
        let answer = server
            .api
            .deal_and_submit(&spec, d.name, &d.sign, input)
            .await
            .expect("bundle");
        assert!(answer.accepted_by_all, "{answer:?}");
        assert_eq!(answer.party, d.name);
    }
    // Resending a bundle is safe.
    let round = server.api.round(&spec.id).await.expect("round");
    assert!(round
        .parties
        .iter()
        .all(|p| p.submitted && p.accepted_by == 3));

    // No settlement before the round is settled.
    let early = server
        .get_raw(&format!("/v1/netting/rounds/{}/settlement", spec.id))
        .await;
    assert_problem(&early, 409, "round-not-settled");
    assert_eq!(early.2["state"], "open");

    let closed = server
        .api
        .close_round(&spec.id, &server.client_key, Some(Duration::from_secs(60)))
        .await
        .expect("close");
    assert_eq!(closed.state, "settled", "{closed:?}");
    let checks = closed.checks.as_ref().expect("checks");
    assert_eq!(checks.participants, vec![true, true, true]);
    assert_eq!(checks.public_outputs, 3);
    assert_eq!(checks.conservation.as_deref(), Some("ok"));
    assert!(closed.culprits.is_empty());

    // Each party opens its own nets, verified against the party-signed headers.
    let expected = [500 + 7, -500, -7];
    let mut results = Vec::new();
    for (d, want) in desks.iter().zip(expected) {
        let result = server
            .api
            .verified_result(&spec, d.name, &d.sign, &d.seal)
            .await
            .expect("result");
        assert_eq!(
            result.multilateral,
            vec![("USD".to_owned(), want)],
            "{}",
            d.name
        );
        assert!(result.culprits.is_empty());
        assert!(result.mismatches.is_empty(), "{:?}", result.mismatches);
        results.push(result);
    }
    // Another party's key cannot open a's result.
    let view = server
        .api
        .round_result(&spec.id, "desk-a", &desks[0].sign)
        .await
        .expect("fetch");
    assert!(verify_result(&spec, 0, &desks[1].seal, &view).is_err());

    let batch = server
        .api
        .verified_settlement(&spec, &key)
        .await
        .expect("settlement verifies");
    let amounts: Vec<i64> = batch.transfers.iter().map(|t| t.amount).collect();
    assert_eq!(amounts, expected.to_vec());
    // Every desk finds exactly its verified net in the settlement; a batch that
    // pays a desk anything else is refused.
    for r in &results {
        check_own_transfers(&batch, r).expect("own transfers");
    }
    let mut other = batch.clone();
    other.transfers[0].amount += 1;
    assert!(check_own_transfers(&other, &results[0]).is_err());
    let mut moved = batch.clone();
    moved.transfers[1].party = moved.transfers[0].party.clone();
    assert!(
        check_own_transfers(&moved, &results[1]).is_err(),
        "desk-b missing"
    );
    assert!(
        check_own_transfers(&moved, &results[0]).is_err(),
        "desk-a twice"
    );
    // A tampered signature is refused.
    let mut settlement = server.api.settlement(&spec.id).await.expect("settlement");
    let mut sig = hex::decode(&settlement.signature).expect("hex");
    sig[0] ^= 1;
    settlement.signature = hex::encode(sig);
    assert!(verify_settlement(&spec, &key, &settlement).is_err());

    // Closing again is idempotent; bundles are refused after close.
    let again = server
        .api
        .close_round(&spec.id, &server.client_key, None)
        .await
        .expect("close again");
    assert_eq!(again.state, "settled");
    let late = deal(
        &spec,
        0,
        &desks[0].sign,
        &inputs[0],
        now_ms() / 1000,
        &mut OsRng,
    )
    .expect("deal");
    let err = server
        .api
        .submit_bundle(&spec.id, &late)
        .await
        .expect_err("closed");
    assert_eq!(err.problem().expect("problem").status, 409);

    // Everything is answered after a restart.
    let (dir, client_key) = server.stop().await;
    let server = Server::start_in(dir, 600, Some(client_key)).await;
    let after = server
        .api
        .round(&spec.id)
        .await
        .expect("round after restart");
    assert_eq!(after.state, "settled");
    verify_settlement(
        &spec,
        &key,
        &server.api.settlement(&spec.id).await.expect("settlement"),
    )
    .expect("still verifies");
    let result = server
        .api
        .verified_result(&spec, "desk-b", &desks[1].sign, &desks[1].seal)
        .await
        .expect("result after restart");
    assert_eq!(result.multilateral, vec![("USD".to_owned(), -500)]);
    server.stop().await;
}

#[tokio::test]
async fn nets_that_do_not_conserve_are_not_signed() {
    let (server, key) = setup().await;
    let desks = [desk("desk-a"), desk("desk-b")];
    let spec = spec_for(&key, &server, &desks);
    server
        .api
        .create_round(&spec, &server.client_key)
        .await
        .expect("create");
    // Both book themselves long: both nets are +500.
    for d in &desks {
        let cp = if d.name == "desk-a" {
            "desk-b"
        } else {
            "desk-a"
        };
        server
            .api
            .deal_and_submit(&spec, d.name, &d.sign, &position(cp, 5, 0))
            .await
            .expect("bundle");
    }
    let view = server
        .api
        .close_round(&spec.id, &server.client_key, Some(Duration::from_secs(60)))
        .await
        .expect("close");
    assert_eq!(view.state, "conservation_failed", "{view:?}");
    let checks = view.checks.expect("checks");
    assert_eq!(checks.conservation.as_deref(), Some("failed"));
    let imbalance = checks.imbalance.expect("imbalance");
    assert_eq!(
        (imbalance.asset.as_str(), imbalance.amount.as_str()),
        ("USD", "1000")
    );
    let answer = server
        .get_raw(&format!("/v1/netting/rounds/{}/settlement", spec.id))
        .await;
    assert_problem(&answer, 409, "round-not-settled");
    assert_eq!(answer.2["state"], "conservation_failed");
    // Each party still learns its result, with the reconciliation mismatch.
    let r = server
        .api
        .verified_result(&spec, "desk-a", &desks[0].sign, &desks[0].seal)
        .await
        .expect("result");
    assert_eq!(r.mismatches.len(), 1, "{r:?}");
    assert_eq!(r.mismatches[0].quantity_difference, 10);
    server.stop().await;
}

#[tokio::test]
async fn bad_requests_are_refused_naming_what_to_fix() {
    let (server, key) = setup().await;
    let desks = [desk("desk-a"), desk("desk-b")];
    let spec = spec_for(&key, &server, &desks);
    let unknown = "00".repeat(16);
    for path in [
        format!("/v1/netting/rounds/{unknown}"),
        format!("/v1/netting/rounds/{unknown}/settlement"),
    ] {
        assert_problem(&server.get_raw(&path).await, 404, "unknown-round");
    }
    assert_problem(
        &server.get_raw("/v1/netting/rounds/xyz").await,
        400,
        "malformed-input",
    );
    let post = |path: String, body: serde_json::Value| {
        let s = &server;
        async move {
            s.post_raw(
                &path,
                "application/json",
                serde_json::to_vec(&body).expect("json"),
                &[],
            )
            .await
        }
    };
    assert_problem(
        &post(
            format!("/v1/netting/rounds/{unknown}/bundles"),
            json!({"bundle": "00"}),
        )
        .await,
        404,
        "unknown-round",
    );
    assert_problem(
        &post(
            format!("/v1/netting/rounds/{unknown}/close"),
            json!({"at_ms": now_ms(), "signature": "00".repeat(64)}),
        )
        .await,
        404,
        "unknown-round",
    );

    // Creation: malformed, unregistered client, bad authorisation, invalid spec,
    // committee mismatch.
    let auth = spec.authorize(&server.client_key);
    let body = |spec: &RoundSpec, client: [u8; 32], sig: &[u8]| json!({"spec": spec, "authorization": {"client": hex::encode(client), "signature": hex::encode(sig)}});
    assert_problem(
        &post("/v1/netting/rounds".into(), json!({"spec": 1})).await,
        400,
        "malformed-input",
    );
    let stranger = SigningKey::generate(&mut OsRng);
    let sauth = spec.authorize(&stranger);
    assert_problem(
        &post(
            "/v1/netting/rounds".into(),
            body(&spec, sauth.client, &sauth.signature),
        )
        .await,
        403,
        "unregistered-client",
    );
    assert_problem(
        &post(
            "/v1/netting/rounds".into(),
            body(&spec, auth.client, &sauth.signature),
        )
        .await,
        401,
        "bad-client-signature",
    );
    let mut one_party = spec.clone();
    one_party.parties.truncate(1);
    let a1 = one_party.authorize(&server.client_key);
    let answer = post(
        "/v1/netting/rounds".into(),
        body(&one_party, a1.client, &a1.signature),
    )
    .await;
    assert_problem(&answer, 400, "invalid-round");
    assert!(answer.2["detail"]
        .as_str()
        .expect("detail")
        .contains("parties"));
    let mut past = spec.clone();
    past.cutoff = 1;
    let ap = past.authorize(&server.client_key);
    assert_problem(
        &post(
            "/v1/netting/rounds".into(),
            body(&past, ap.client, &ap.signature),
        )
        .await,
        400,
        "invalid-round",
    );
    let other_key = server.create_key(Ciphersuite::Secp256k1).await;
    let mut wrong_key = spec.clone();
    wrong_key.key = quorate_coordinator::protocol::KeyId::from_hex(&other_key.key_id).expect("id");
    let mut members: Vec<_> = wrong_key.committee.members().to_vec();
    members[0].index = 9;
    wrong_key.committee =
        quorate_coordinator::protocol::Committee::new(members).expect("committee");
    let aw = wrong_key.authorize(&server.client_key);
    let answer = post(
        "/v1/netting/rounds".into(),
        body(&wrong_key, aw.client, &aw.signature),
    )
    .await;
    assert_problem(&answer, 400, "invalid-round");
    assert!(answer.2["detail"]
        .as_str()
        .expect("detail")
        .contains("committee"));

    // A real round, then another definition under the same id.
    server
        .api
        .create_round(&spec, &server.client_key)
        .await
        .expect("create");
    let mut other = spec.clone();
    other.cutoff += 1;
    let ao = other.authorize(&server.client_key);
    assert_problem(
        &post(
            "/v1/netting/rounds".into(),
            body(&other, ao.client, &ao.signature),
        )
        .await,
        409,
        "round-conflict",
    );

    // Bundles: not hex, not a bundle, signed by another key (names the party).
    let bundles = format!("/v1/netting/rounds/{}/bundles", spec.id);
    assert_problem(
        &post(bundles.clone(), json!({"bundle": "zz"})).await,
        400,
        "malformed-input",
    );
    assert_problem(
        &post(bundles.clone(), json!({"bundle": "0001"})).await,
        400,
        "malformed-input",
    );
    assert_problem(
        &server
            .post_raw(&bundles, "text/plain", b"x".to_vec(), &[])
            .await,
        415,
        "unsupported-media-type",
    );
    let mut forged = deal(
        &spec,
        0,
        &desks[0].sign,
        &position("desk-b", 1, 0),
        now_ms() / 1000,
        &mut OsRng,
    )
    .expect("deal");
    forged.header.signature = desks[1]
        .sign
        .sign(&forged.header.digest())
        .to_bytes()
        .to_vec();
    let answer = post(
        bundles.clone(),
        json!({"bundle": hex::encode(postcard::to_allocvec(&forged).expect("encode"))}),
    )
    .await;
    assert_problem(&answer, 422, "bundle-refused");
    assert_eq!(answer.2["party"], "desk-a");
    assert_eq!(answer.2["reason"], "netting:bad_bundle");
    // A swapped box is caught against the signed box digests.
    let mut swapped = deal(
        &spec,
        1,
        &desks[1].sign,
        &position("desk-a", -1, 0),
        now_ms() / 1000,
        &mut OsRng,
    )
    .expect("deal");
    swapped.boxes.swap(0, 1);
    let answer = post(
        bundles.clone(),
        json!({"bundle": hex::encode(postcard::to_allocvec(&swapped).expect("encode"))}),
    )
    .await;
    assert_problem(&answer, 422, "bundle-refused");
    assert_eq!(answer.2["party"], "desk-b");
    // The round goes on for everyone else: a good bundle is accepted.
    let ok = server
        .api
        .deal_and_submit(&spec, "desk-a", &desks[0].sign, &position("desk-b", 1, 0))
        .await
        .expect("good bundle");
    assert!(ok.accepted_by_all);
    // A second, different bundle of the same party is refused, naming it.
    let second = deal(
        &spec,
        0,
        &desks[0].sign,
        &position("desk-b", 2, 0),
        now_ms() / 1000,
        &mut OsRng,
    )
    .expect("deal");
    let err = server
        .api
        .submit_bundle(&spec.id, &second)
        .await
        .expect_err("second bundle");
    let p = err.problem().expect("problem");
    assert_eq!(p.status, 422);
    assert_eq!(p.extensions["party"], "desk-a");

    // Close: by another client, with a stale time, with a bad signature.
    let close = format!("/v1/netting/rounds/{}/close", spec.id);
    let at = now_ms();
    let by_stranger = stranger.sign(&close_message(&spec.id, at));
    assert_problem(
        &post(
            close.clone(),
            json!({"at_ms": at, "signature": hex::encode(by_stranger.to_bytes())}),
        )
        .await,
        401,
        "bad-client-signature",
    );
    let stale = at - 10 * 60 * 1000;
    let sig = server.client_key.sign(&close_message(&spec.id, stale));
    assert_problem(
        &post(
            close.clone(),
            json!({"at_ms": stale, "signature": hex::encode(sig.to_bytes())}),
        )
        .await,
        422,
        "expired-request",
    );
    assert_problem(
        &post(close.clone(), json!({"at_ms": at, "signature": "nothex"})).await,
        400,
        "malformed-input",
    );
    assert_problem(
        &post(close.clone(), json!({"at_ms": at})).await,
        400,
        "malformed-input",
    );

    // Results: before close, with another party's signature, unknown party.
    let result = |party: &str, signer: &SigningKey, at: u64| {
        let sig = signer.sign(&result_request_message(&spec.id, party, at));
        format!(
            "/v1/netting/rounds/{}/results/{party}?at_ms={at}&signature={}",
            spec.id,
            hex::encode(sig.to_bytes())
        )
    };
    let answer = server
        .get_raw(&result("desk-a", &desks[0].sign, now_ms()))
        .await;
    assert_problem(&answer, 409, "round-conflict");
    assert_eq!(answer.2["state"], "open");
    assert_problem(
        &server
            .get_raw(&result("desk-a", &desks[1].sign, now_ms()))
            .await,
        401,
        "bad-client-signature",
    );
    assert_problem(
        &server
            .get_raw(&result("desk-a", &desks[0].sign, now_ms() - 6 * 60 * 1000))
            .await,
        422,
        "expired-request",
    );
    assert_problem(
        &server
            .get_raw(&result("desk-z", &desks[0].sign, now_ms()))
            .await,
        404,
        "not-found",
    );
    assert_problem(
        &server
            .get_raw(&format!("/v1/netting/rounds/{}/results/desk-a", spec.id))
            .await,
        400,
        "malformed-input",
    );

    // desk-b never got a bundle in: the round settles without it.
    let view = server
        .api
        .close_round(&spec.id, &server.client_key, Some(Duration::from_secs(60)))
        .await
        .expect("close");
    // Only one participant: its net is 0 against nobody, and it still settles.
    assert_eq!(
        view.checks.as_ref().expect("checks").participants,
        vec![true, false]
    );
    assert_eq!(view.parties[1].included, Some(false));
    let answer = server
        .get_raw(&result("desk-b", &desks[1].sign, now_ms()))
        .await;
    assert_problem(&answer, 409, "round-conflict");
    server.stop().await;
}

#[tokio::test]
async fn a_round_live_at_restart_is_failed_with_a_clear_reason() {
    let (server, key) = setup().await;
    let desks = [desk("desk-a"), desk("desk-b")];
    let spec = spec_for(&key, &server, &desks);
    server
        .api
        .create_round(&spec, &server.client_key)
        .await
        .expect("create");
    let (dir, client_key) = server.stop().await;
    let server = Server::start_in(dir, 600, Some(client_key)).await;
    let view = server.api.round(&spec.id).await.expect("round");
    assert_eq!(view.state, "failed");
    let failure = view.failure.expect("failure");
    assert!(
        failure.type_uri.ends_with("/coordinator-restarted"),
        "{failure:?}"
    );
    assert!(failure.detail.contains("new round"), "{}", failure.detail);
    // Posting the same spec again does not revive it.
    let again = server
        .api
        .create_round(&spec, &server.client_key)
        .await
        .expect("answered");
    assert_eq!(again.state, "failed");
    server.stop().await;
}

fn limited_spec(key: &AttestedKey, server: &Server, desks: &[Desk]) -> RoundSpec {
    let mut b = RoundBuilder::new(key, &server.roster()).expect("builder");
    for d in desks {
        b = b.party(
            d.name,
            d.sign.verifying_key().to_bytes(),
            x25519_dalek::PublicKey::from(&d.seal).to_bytes(),
        );
    }
    b.instrument(future())
        .limits(
            quorate_coordinator::protocol::netting::round::LimitSettings {
                max_cover: 1_000_000,
                reveal_failures: true,
                efficiency: true,
            },
        )
        .cutoff_in(Duration::from_secs(3600))
        .build()
        .expect("spec")
}

/// desk-a long 5 against desk-b: desk-b owes 500 USD and declares `collateral`.
async fn limited_round(
    server: &Server,
    key: &AttestedKey,
    collateral: i64,
) -> (RoundSpec, Vec<Desk>) {
    let desks = vec![desk("desk-a"), desk("desk-b")];
    let spec = limited_spec(key, server, &desks);
    server
        .api
        .create_round(&spec, &server.client_key)
        .await
        .expect("create");
    let mut b = position("desk-a", -5, 0);
    b.cover
        .push(quorate_coordinator::protocol::netting::input::Cover {
            asset: "USD".into(),
            collateral,
            limit: 0,
        });
    for (d, input) in desks.iter().zip([position("desk-b", 5, 0), b]) {
        let answer = server
            .api
            .deal_and_submit(&spec, d.name, &d.sign, &input)
            .await
            .expect("bundle");
        assert!(answer.accepted_by_all, "{answer:?}");
    }
    (spec, desks)
}

#[tokio::test]
async fn a_covered_limit_round_settles_and_parties_open_their_bits_and_the_verdict() {
    let (server, key) = setup().await;
    let (spec, desks) = limited_round(&server, &key, 600).await;
    let closed = server
        .api
        .close_round(&spec.id, &server.client_key, Some(Duration::from_secs(60)))
        .await
        .expect("close");
    assert_eq!(closed.state, "settled", "{closed:?}");
    let limits = closed.limits.as_ref().expect("limits section");
    assert_eq!(limits.state, "covered");
    assert_eq!(limits.verdicts.len(), 3);
    assert_eq!(limits.volumes[0].net.as_deref(), Some("500"));
    assert!(limits.stats.is_some_and(|s| s.steps > 0));

    let verdict = server
        .api
        .verified_verdict(&spec, &key, &server.roster())
        .await
        .expect("verdict verifies");
    assert!(verdict.covered);
    assert_eq!(verdict.signers.len(), 3);
    for d in &desks {
        let (result, bits) = server
            .api
            .verified_result_with_limits(&spec, d.name, &d.sign, &d.seal)
            .await
            .expect("result");
        assert!(result.culprits.is_empty());
        let bits = bits.expect("a limit-checked round has bits");
        assert_eq!(bits.len(), 1);
        assert_eq!(bits[0].covered, Some(true), "{}", d.name);
    }
    server
        .api
        .verified_settlement(&spec, &key)
        .await
        .expect("settlement verifies");
}

#[tokio::test]
async fn an_uncovered_limit_round_is_not_settled_and_says_which_party_failed() {
    let (server, key) = setup().await;
    let (spec, desks) = limited_round(&server, &key, 100).await;
    let closed = server
        .api
        .close_round(&spec.id, &server.client_key, Some(Duration::from_secs(60)))
        .await
        .expect("close");
    assert_eq!(closed.state, "not_covered", "{closed:?}");
    let limits = closed.limits.as_ref().expect("limits section");
    assert_eq!(limits.state, "not_covered");
    assert_eq!(limits.covered, Some(false));
    assert_eq!(limits.failed, vec!["desk-b".to_owned()]);
    assert_eq!(closed.checks.as_ref().expect("checks").public_outputs, 0);

    let settlement = server
        .get_raw(&format!("/v1/netting/rounds/{}/settlement", spec.id))
        .await;
    assert_problem(&settlement, 409, "limits-not-covered");
    assert_eq!(settlement.2["failed"], json!(["desk-b"]));
    assert!(
        !server
            .api
            .verified_verdict(&spec, &key, &server.roster())
            .await
            .expect("verdict verifies")
            .covered
    );
    let (_, bits) = server
        .api
        .verified_result_with_limits(&spec, "desk-b", &desks[1].sign, &desks[1].seal)
        .await
        .expect("result");
    assert_eq!(bits.expect("bits")[0].covered, Some(false));
    let (_, bits) = server
        .api
        .verified_result_with_limits(&spec, "desk-a", &desks[0].sign, &desks[0].seal)
        .await
        .expect("result");
    assert_eq!(bits.expect("bits")[0].covered, Some(true));

    // The verdict, the signed statements and the bits survive a restart.
    let roster = server.roster();
    let (dir, client_key) = server.stop().await;
    let server = Server::start_in(dir, 600, Some(client_key)).await;
    let after = server
        .api
        .round(&spec.id)
        .await
        .expect("round after restart");
    assert_eq!(after.state, "not_covered");
    assert_eq!(after.limits, closed.limits);
    let settlement = server
        .get_raw(&format!("/v1/netting/rounds/{}/settlement", spec.id))
        .await;
    assert_problem(&settlement, 409, "limits-not-covered");
    assert!(
        !server
            .api
            .verified_verdict(&spec, &key, &roster)
            .await
            .expect("verdict verifies after restart")
            .covered
    );
    let (_, bits) = server
        .api
        .verified_result_with_limits(&spec, "desk-b", &desks[1].sign, &desks[1].seal)
        .await
        .expect("result after restart");
    assert_eq!(bits.expect("bits")[0].covered, Some(false));
    server.stop().await;
}
