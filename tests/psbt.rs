//! End to end: a Bitcoin transaction spending P2TR outputs of a devnet key is
//! signed through the API and the CLI from its PSBT — every node derives the
//! sighashes itself — and the finished transaction's inputs verify under
//! libsecp256k1 from the transaction alone. Bad PSBTs are refused naming the
//! input, by the coordinator and (for what only node policy knows) by every
//! node, audited.

use std::{process::Command, time::Duration};

use bitcoin::{
    absolute::LockTime,
    base64::{engine::general_purpose::STANDARD, Engine as _},
    consensus,
    hashes::Hash,
    key::{Secp256k1, TapTweak, TweakedPublicKey, XOnlyPublicKey},
    psbt::Psbt,
    secp256k1::{schnorr, Message},
    sighash::{Prevouts, SighashCache, TapSighashType},
    taproot::TapNodeHash,
    transaction::Version,
    Address, Amount, Network, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Txid,
    Witness,
};
use quorate_coordinator::{
    api::model::{CreateKeyBody, JobStatus, ParticipantsBody},
    client::{verify_job, ClientError, RequestBuilder, SignOptions},
};
use quorate_protocol::{psbt::BitcoinNetwork, Ciphersuite, KeyId};

mod common;

use common::devnet::{exe, Devnet};

/// The group key's x-only output key.
fn output_key(view: &quorate_coordinator::api::model::KeyView) -> XOnlyPublicKey {
    let x = hex::decode(view.public_key.x_only.as_deref().expect("x-only key")).expect("hex");
    XOnlyPublicKey::from_slice(&x).expect("x-only")
}

/// A key that is not the group key.
fn other_key() -> XOnlyPublicKey {
    let secp = Secp256k1::new();
    let sk = bitcoin::secp256k1::SecretKey::from_slice(&[0x79; 32]).expect("secret key");
    bitcoin::key::Keypair::from_secret_key(&secp, &sk)
        .x_only_public_key()
        .0
}

/// Spends a key-path output (input 0) and a script-tree output (input 1, the key
/// tweaked by a merkle root) of the key; pays 70 000 sat to another address and
/// the change back to the key.
fn spend(key: XOnlyPublicKey) -> (Psbt, Vec<TxOut>) {
    let secp = Secp256k1::new();
    let root = TapNodeHash::from_byte_array([0x5a; 32]);
    let (tweaked, _) = key.tap_tweak(&secp, Some(root));
    let own = ScriptBuf::new_p2tr_tweaked(TweakedPublicKey::dangerous_assume_tweaked(key));
    let prevouts = vec![
        TxOut {
            value: Amount::from_sat(60_000),
            script_pubkey: own.clone(),
        },
        TxOut {
            value: Amount::from_sat(50_000),
            script_pubkey: ScriptBuf::new_p2tr_tweaked(tweaked),
        },
    ];
    let payee = Address::p2tr(&secp, other_key(), None, Network::Regtest).script_pubkey();
    let tx = Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: (0..2u8)
            .map(|i| TxIn {
                previous_output: OutPoint {
                    txid: Txid::from_byte_array([i + 1; 32]),
                    vout: u32::from(i),
                },
                script_sig: ScriptBuf::new(),
                sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
                witness: Witness::new(),
            })
            .collect(),
        output: vec![
            TxOut {
                value: Amount::from_sat(70_000),
                script_pubkey: payee,
            },
            TxOut {
                value: Amount::from_sat(39_000),
                script_pubkey: own,
            },
        ],
    };
    let mut p = Psbt::from_unsigned_tx(tx).expect("psbt");
    for (i, o) in prevouts.iter().enumerate() {
        p.inputs[i].witness_utxo = Some(o.clone());
    }
    p.inputs[1].tap_internal_key = Some(key);
    p.inputs[1].tap_merkle_root = Some(root);
    (p, prevouts)
}

/// Independent of quorate: each input's BIP341 sighash from the transaction and
/// the spent outputs, its witness a single 64-byte BIP340 signature, checked by
/// libsecp256k1 under the spent output's key.
fn check_spends(tx_hex: &str, prevouts: &[TxOut]) {
    let tx: Transaction = consensus::deserialize(&hex::decode(tx_hex).expect("hex")).expect("tx");
    let secp = Secp256k1::verification_only();
    let mut cache = SighashCache::new(&tx);
    for (i, input) in tx.input.iter().enumerate() {
        let witness: Vec<&[u8]> = input.witness.iter().collect();
        assert_eq!(
            witness.len(),
            1,
            "input {i}: a key-path witness is one signature"
        );
        let sig = schnorr::Signature::from_slice(witness[0]).expect("64-byte signature");
        let hash = cache
            .taproot_key_spend_signature_hash(i, &Prevouts::All(prevouts), TapSighashType::Default)
            .expect("sighash");
        let key =
            XOnlyPublicKey::from_slice(&prevouts[i].script_pubkey.as_bytes()[2..34]).expect("key");
        secp.verify_schnorr(&sig, &Message::from_digest(hash.to_byte_array()), &key)
            .unwrap_or_else(|e| panic!("input {i} does not verify: {e}"));
    }
    assert_eq!(tx.compute_txid().to_string().len(), 64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_psbt_is_signed_by_the_network_and_the_finished_transaction_verifies() {
    let net = Devnet::start();
    let api = net.api();
    let view = api
        .create_key(&CreateKeyBody {
            ciphersuite: Ciphersuite::Secp256k1Tr,
            threshold: 3,
            participants: ParticipantsBody::Spanning {
                n: 5,
                min_segments: 3,
            },
            segments: Vec::new(),
        })
        .await
        .expect("create key");
    let attested = net.attested(&view);
    let key_id = KeyId::from_hex(&view.key_id).expect("id");
    let (psbt, prevouts) = spend(output_key(&view));

    // Through the client library.
    let signed = RequestBuilder::new(key_id)
        .psbt(psbt.serialize(), BitcoinNetwork::Regtest, vec![0, 1])
        .purpose("BTC", 0, "", "e2e psbt")
        .expires_in(Duration::from_secs(120))
        .sign(&net.client_key());
    let job = api
        .sign(
            &view.key_id,
            &signed,
            SignOptions::wait(Duration::from_secs(60)),
        )
        .await
        .expect("accepted");
    let job = api
        .poll_until_done(&job.id, Duration::from_millis(100), Duration::from_secs(90))
        .await
        .expect("finished");
    assert_eq!(job.status, JobStatus::Succeeded, "{job:?}");
    verify_job(&attested, &signed.request, &job).expect("signatures and transaction verify");
    let result = job.result.as_ref().expect("result");
    check_spends(
        result
            .transaction
            .as_deref()
            .expect("complete: every input ours"),
        &prevouts,
    );
    let back = Psbt::deserialize(&hex::decode(result.psbt.as_deref().expect("psbt")).expect("hex"))
        .expect("signed psbt");
    assert!(back.inputs.iter().all(|i| i.tap_key_sig.is_some()));

    // Every signer recorded the parsed transaction, not the declaration.
    let audit: String = (1..=5)
        .map(|n| {
            std::fs::read_to_string(net.data.join(format!("node{n}.audit.jsonl")))
                .unwrap_or_default()
        })
        .collect();
    let txid = psbt.unsigned_tx.compute_txid().to_string();
    assert!(audit.contains(&txid), "the audit log names txid {txid}");
    assert!(
        audit.contains("\"outflow\":71000"),
        "outflow (payment and fee) recorded"
    );

    // Through the CLI, from a base64 file; inputs found by key.
    let file = net.data.join("spend.psbt");
    std::fs::write(&file, STANDARD.encode(psbt.serialize())).expect("write psbt");
    let out = Command::new(exe())
        .args(["client", "--url", &net.url, "--roster"])
        .arg(net.data.join("roster.toml"))
        .args(["sign", "--key", &view.key_id, "--client-key"])
        .arg(net.data.join("client.key"))
        .arg("--psbt")
        .arg(&file)
        .args(["--network", "regtest"])
        .env_remove("RUST_LOG")
        .output()
        .expect("run quorate client sign");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "signed PSBT and transaction: {stdout}");
    let cli_psbt = Psbt::deserialize(&STANDARD.decode(lines[0]).expect("base64")).expect("psbt");
    assert!(cli_psbt.inputs.iter().all(|i| i.tap_key_sig.is_some()));
    check_spends(lines[1], &prevouts);

    // An input of another key: the coordinator refuses it before any node is asked.
    let mut foreign = psbt.clone();
    foreign.inputs[0].witness_utxo = Some(TxOut {
        value: Amount::from_sat(60_000),
        script_pubkey: Address::p2tr(&Secp256k1::new(), other_key(), None, Network::Regtest)
            .script_pubkey(),
    });
    let bad = RequestBuilder::new(key_id)
        .psbt(foreign.serialize(), BitcoinNetwork::Regtest, vec![0, 1])
        .sign(&net.client_key());
    match api
        .sign(
            &view.key_id,
            &bad,
            SignOptions::wait(Duration::from_secs(30)),
        )
        .await
    {
        Err(ClientError::Problem(p)) => {
            assert_eq!(p.status, 422, "{p:?}");
            assert!(p.type_uri.ends_with("/invalid-transaction"), "{p:?}");
            assert!(
                p.detail
                    .starts_with("psbt.input[0].witness_utxo.script_pubkey: spends output key"),
                "{p:?}"
            );
        }
        other => panic!("expected invalid-transaction, got {other:?}"),
    }

    // The wrong network: only node policy knows the devnet is regtest. Every
    // asked node refuses (policy:network), audited; nothing is signed.
    let testnet = RequestBuilder::new(key_id)
        .psbt(psbt.serialize(), BitcoinNetwork::Testnet, vec![0, 1])
        .sign(&net.client_key());
    match api
        .sign(
            &view.key_id,
            &testnet,
            SignOptions::wait(Duration::from_secs(60)),
        )
        .await
    {
        Err(ClientError::Problem(p)) => {
            assert!(p.type_uri.ends_with("/policy-refused"), "{p:?}");
            let refusals = p.extensions.get("refusals").expect("refusals").to_string();
            assert!(refusals.contains("policy:network"), "{refusals}");
            assert!(
                !refusals.contains("policy:")
                    || refusals.matches("policy:").count()
                        == refusals.matches("policy:network").count(),
                "{refusals}"
            );
        }
        other => panic!("expected policy-refused, got {other:?}"),
    }
    let hash = hex::encode(testnet.request.hash());
    let refused_in_audit = (1..=5).any(|n| {
        std::fs::read_to_string(net.data.join(format!("node{n}.audit.jsonl")))
            .unwrap_or_default()
            .lines()
            .any(|l| {
                l.contains("\"policy_decision\"") && l.contains("\"network\"") && l.contains(&hash)
            })
    });
    assert!(
        refused_in_audit,
        "a node's audit log records the network refusal of {hash}"
    );
}
