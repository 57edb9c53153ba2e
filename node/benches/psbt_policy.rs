//! Criterion: what a node spends on a `bitcoin_psbt` request before it signs —
//! parsing the PSBT and computing every input's BIP341 sighash
//! (`quorate_protocol::psbt::analyze`), and the whole policy decision
//! (`PolicyEngine::evaluate`: client signature, parse, sighashes, every rule) — next
//! to bare frost-secp256k1-tr signing of one message at 3-of-5 (three signers'
//! round 1 and round 2, aggregation and verification), in the same run.
//!
//! `cargo bench -p quorate-node --bench psbt_policy`
//!
//! The FROST key comes from frost-core's trusted dealer: benchmark setup only.

use std::{collections::BTreeMap, time::Duration};

use bitcoin::{
    absolute::LockTime,
    hashes::Hash,
    key::{TweakedPublicKey, XOnlyPublicKey},
    psbt::Psbt,
    transaction::Version,
    Amount, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Txid, Witness,
};
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion};
use ed25519_dalek::SigningKey;
use frost_secp256k1_tr as frost;
use quorate_node::policy::{Policy, PolicyEngine};
use quorate_protocol::{
    key::GroupPublic,
    psbt::{analyze, BitcoinNetwork, PsbtRequest},
    request::{Purpose, RequestBody, SigningRequest, REQUEST_VERSION},
    Ciphersuite, KeyId,
};
use rand_chacha::{rand_core::SeedableRng, ChaCha20Rng};

const NOW: u64 = 1_800_000_000_000;

fn psbt(key: XOnlyPublicKey, inputs: usize) -> Psbt {
    let own = ScriptBuf::new_p2tr_tweaked(TweakedPublicKey::dangerous_assume_tweaked(key));
    let payee = XOnlyPublicKey::from_slice(&[0x02; 32]).expect("a point with x = 0x0202…");
    let tx = Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: (0..inputs)
            .map(|i| TxIn {
                previous_output: OutPoint {
                    txid: Txid::from_byte_array([(i % 251) as u8 + 1; 32]),
                    vout: i as u32,
                },
                script_sig: ScriptBuf::new(),
                sequence: Sequence::MAX,
                witness: Witness::new(),
            })
            .collect(),
        output: vec![
            TxOut {
                value: Amount::from_sat(10_000),
                script_pubkey: ScriptBuf::new_p2tr_tweaked(
                    TweakedPublicKey::dangerous_assume_tweaked(payee),
                ),
            },
            TxOut {
                value: Amount::from_sat(inputs as u64 * 20_000 - 11_000),
                script_pubkey: own.clone(),
            },
        ],
    };
    let mut p = Psbt::from_unsigned_tx(tx).expect("psbt");
    for i in &mut p.inputs {
        i.witness_utxo = Some(TxOut {
            value: Amount::from_sat(20_000),
            script_pubkey: own.clone(),
        });
    }
    p
}

fn bench(c: &mut Criterion) {
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let (shares, public) =
        frost::keys::generate_with_dealer(5, 3, frost::keys::IdentifierList::Default, &mut rng)
            .expect("dealer");
    let key_packages: Vec<frost::keys::KeyPackage> = shares
        .into_values()
        .take(3)
        .map(|s| frost::keys::KeyPackage::try_from(s).expect("key package"))
        .collect();
    let vk = public.verifying_key().serialize().expect("vk");
    let x = XOnlyPublicKey::from_slice(&vk[1..]).expect("x-only");
    let group = GroupPublic {
        suite: Ciphersuite::Secp256k1Tr,
        key_id: KeyId([7; 16]),
        threshold: 3,
        members: BTreeMap::new(),
        verifying_key: vk,
        public_key_package: Vec::new(),
    };
    let client = SigningKey::from_bytes(&[3; 32]);
    let policy = Policy::from_toml(&format!(
        "version = 1\n[clients.desk]\npublic_key = \"{}\"\nkeys = [\"*\"]\n\
         [clients.desk.limits.BTC]\nper_request = 100000000\nper_window = 1000000000\n\
         [clients.desk.bitcoin]\nnetwork = \"regtest\"\nmax_fee = 100000\nmax_fee_rate = 100\n",
        hex::encode(client.verifying_key().to_bytes())
    ))
    .expect("policy");

    let mut g = c.benchmark_group("psbt");
    g.measurement_time(Duration::from_secs(4));
    for inputs in [1usize, 16, 64] {
        let req = PsbtRequest {
            psbt: psbt(x, inputs).serialize(),
            network: BitcoinNetwork::Regtest,
            inputs: (0..inputs as u32).collect(),
        };
        g.bench_with_input(BenchmarkId::new("analyze", inputs), &req, |b, req| {
            b.iter(|| analyze(req, &group.verifying_key).expect("analysis"))
        });
        let signed = SigningRequest {
            version: REQUEST_VERSION,
            client: client.verifying_key().to_bytes(),
            key_id: group.key_id,
            body: RequestBody::BitcoinPsbt(req.clone()),
            purpose: Purpose {
                asset: "BTC".into(),
                amount: 0,
                destination: String::new(),
                memo: String::new(),
            },
            expires_at_ms: NOW + 60_000,
            nonce: [1; 16],
        }
        .sign(&client);
        g.bench_with_input(
            BenchmarkId::new("policy_evaluate", inputs),
            &signed,
            |b, signed| {
                b.iter_batched(
                    || PolicyEngine::new(policy.clone()),
                    |mut engine| assert!(engine.evaluate(signed, &group, NOW).is_allow()),
                    BatchSize::SmallInput,
                )
            },
        );
    }
    // Baseline: one message signed by 3 of 5, aggregated and verified.
    let message = [0x5a; 32];
    g.bench_function("frost_sign_3of5_per_message", |b| {
        b.iter(|| {
            let mut nonces = Vec::new();
            let mut commitments = BTreeMap::new();
            for kp in &key_packages {
                let (n, cm) = frost::round1::commit(kp.signing_share(), &mut rng);
                commitments.insert(*kp.identifier(), cm);
                nonces.push(n);
            }
            let package = frost::SigningPackage::new(commitments, &message);
            let mut sig_shares = BTreeMap::new();
            for (kp, n) in key_packages.iter().zip(&nonces) {
                sig_shares.insert(
                    *kp.identifier(),
                    frost::round2::sign(&package, n, kp).expect("share"),
                );
            }
            let sig = frost::aggregate(&package, &sig_shares, &public).expect("aggregate");
            public
                .verifying_key()
                .verify(&message, &sig)
                .expect("verify");
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
