//! Policy on PSBT requests sees the parsed transaction, not the declaration.

use std::collections::BTreeMap;

use bitcoin::{
    absolute::LockTime,
    hashes::Hash,
    key::{Keypair, Secp256k1, TweakedPublicKey},
    psbt::{Psbt, PsbtSighashType},
    secp256k1::SecretKey,
    transaction::Version,
    Address, Amount, Network, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Txid,
    Witness,
};
use ed25519_dalek::SigningKey;
use quorate_protocol::{
    ids::KeyId,
    key::GroupPublic,
    psbt::{BitcoinNetwork, PsbtRequest},
    request::{Purpose, RequestBody, SignedRequest, SigningRequest, REQUEST_VERSION},
    suite::Ciphersuite,
};

use crate::policy::{Decision, PolicyEngine, Rule};

const KEY: KeyId = KeyId([7; 16]);
const NOW: u64 = 1_800_000_000_000 + 10 * 3_600_000;

struct Fixture {
    client: SigningKey,
    group: GroupPublic,
    own: ScriptBuf,
    engine: PolicyEngine,
    nonce: u8,
}

fn script_of(byte: u8) -> ScriptBuf {
    let secp = Secp256k1::new();
    let (x, _) = Keypair::from_secret_key(&secp, &SecretKey::from_slice(&[byte; 32]).expect("sk"))
        .x_only_public_key();
    ScriptBuf::new_p2tr(&secp, x, None)
}

fn address(script: &ScriptBuf) -> String {
    Address::from_script(script, Network::Regtest)
        .expect("address")
        .to_string()
}

fn fixture(extra: &str) -> Fixture {
    let client = SigningKey::from_bytes(&[3; 32]);
    let secp = Secp256k1::new();
    let (x, _) = Keypair::from_secret_key(&secp, &SecretKey::from_slice(&[0x42; 32]).expect("sk"))
        .x_only_public_key();
    let mut vk = vec![0x02];
    vk.extend_from_slice(&x.serialize());
    let text = format!(
        r#"
version = 1

[clients.desk]
public_key = "{client}"
keys = ["*"]
destinations = ["{allowed}"]
{extra}

[clients.desk.limits.BTC]
per_request = 100000
per_window = 150000
"#,
        client = hex::encode(client.verifying_key().to_bytes()),
        allowed = address(&script_of(9)),
    );
    Fixture {
        client,
        group: GroupPublic {
            suite: Ciphersuite::Secp256k1Tr,
            key_id: KEY,
            threshold: 2,
            members: BTreeMap::new(),
            verifying_key: vk,
            public_key_package: Vec::new(),
        },
        own: ScriptBuf::new_p2tr_tweaked(TweakedPublicKey::dangerous_assume_tweaked(x)),
        engine: PolicyEngine::new(crate::policy::Policy::from_toml(&text).expect("policy")),
        nonce: 0,
    }
}

const BITCOIN: &str = r#"[clients.desk.bitcoin]
network = "regtest"
max_fee = 5000
max_fee_rate = 20"#;

impl Fixture {
    /// A PSBT spending one 200 000 sat output of the key.
    fn psbt(&self, outputs: &[(u64, ScriptBuf)]) -> Psbt {
        let tx = Transaction {
            version: Version::TWO,
            lock_time: LockTime::ZERO,
            input: vec![TxIn {
                previous_output: OutPoint {
                    txid: Txid::from_byte_array([1; 32]),
                    vout: 0,
                },
                script_sig: ScriptBuf::new(),
                sequence: Sequence::MAX,
                witness: Witness::new(),
            }],
            output: outputs
                .iter()
                .map(|(v, s)| TxOut {
                    value: Amount::from_sat(*v),
                    script_pubkey: s.clone(),
                })
                .collect(),
        };
        let mut p = Psbt::from_unsigned_tx(tx).expect("psbt");
        p.inputs[0].witness_utxo = Some(TxOut {
            value: Amount::from_sat(200_000),
            script_pubkey: self.own.clone(),
        });
        p
    }

    fn request(&mut self, body: RequestBody, declared: u64) -> SignedRequest {
        self.nonce += 1;
        SigningRequest {
            version: REQUEST_VERSION,
            client: self.client.verifying_key().to_bytes(),
            key_id: KEY,
            body,
            purpose: Purpose {
                asset: "BTC".into(),
                amount: declared,
                destination: address(&script_of(9)),
                memo: String::new(),
            },
            expires_at_ms: NOW + 60_000,
            nonce: [self.nonce; 16],
        }
        .sign(&self.client)
    }

    fn psbt_request(&mut self, p: &Psbt, network: BitcoinNetwork) -> SignedRequest {
        self.request(
            RequestBody::BitcoinPsbt(PsbtRequest {
                psbt: p.serialize(),
                network,
                inputs: vec![0],
            }),
            1,
        )
    }

    fn judge(&mut self, p: &Psbt, network: BitcoinNetwork) -> Decision {
        let req = self.psbt_request(p, network);
        self.eval(&req)
    }

    fn eval(&mut self, req: &SignedRequest) -> Decision {
        self.engine.evaluate(req, &self.group, NOW)
    }
}

fn refused(d: &Decision, rule: Rule, detail_has: &str) {
    match d {
        Decision::Refuse { rule: r, detail } => {
            assert_eq!(*r, rule, "{detail}");
            assert!(
                detail.contains(detail_has),
                "{detail:?} should contain {detail_has:?}"
            );
        }
        other => panic!("expected {rule:?}, got {other:?}"),
    }
}

#[test]
fn a_drain_labelled_one_sat_is_refused_by_its_real_outflow() {
    let mut f = fixture(BITCOIN);
    let own = f.own.clone();
    // Pays 90 000 to the allowlisted address, the rest back to the key: allowed.
    let ok = f.psbt(&[(90_000, script_of(9)), (109_000, own.clone())]);
    let req = f.psbt_request(&ok, BitcoinNetwork::Regtest);
    assert!(f.eval(&req).is_allow(), "{:?}", f.eval(&req));
    assert_eq!(
        f.engine.window_usage(&req.request.client, "BTC", NOW),
        91_000,
        "90 000 paid and the 1 000 sat fee leave the key"
    );
    // Declares 1 sat, pays 150 000 to the allowlisted address: the per-request
    // limit sees 150 000.
    let drain = f.psbt(&[(150_000, script_of(9)), (49_000, own.clone())]);
    let req = f.psbt_request(&drain, BitcoinNetwork::Regtest);
    assert_eq!(req.request.purpose.amount, 1);
    refused(&f.eval(&req), Rule::AmountLimit, "151000 BTC");
    // Everything to the fee, nothing paid out, no fee limit set: still 199 000
    // leaving the key, refused by the amount limit.
    let mut no_fee_limits = fixture("[clients.desk.bitcoin]\nnetwork = \"regtest\"");
    let burn = no_fee_limits.psbt(&[(1_000, own.clone())]);
    refused(
        &no_fee_limits.judge(&burn, BitcoinNetwork::Regtest),
        Rule::AmountLimit,
        "199000 BTC",
    );
    // Under the per-request limit but over the window (90 000 used of 150 000).
    let second = f.psbt(&[(70_000, script_of(9)), (129_000, own.clone())]);
    refused(
        &f.judge(&second, BitcoinNetwork::Regtest),
        Rule::WindowLimit,
        "71000 BTC on top of 91000",
    );
    // An output to an address not on the allowlist, named by index.
    let elsewhere = f.psbt(&[
        (10_000, script_of(9)),
        (10_000, script_of(5)),
        (179_000, own),
    ]);
    refused(
        &f.judge(&elsewhere, BitcoinNetwork::Regtest),
        Rule::Destination,
        "(output 1) is not on the allowlist",
    );
}

#[test]
fn raw_requests_need_allow_raw_and_psbt_requests_a_bitcoin_section() {
    let raw = RequestBody::Raw {
        messages: vec![vec![1; 32]],
        tweak: None,
    };
    let mut f = fixture(BITCOIN);
    let req = f.request(raw.clone(), 10);
    refused(&f.eval(&req), Rule::RawNotAllowed, "allow_raw = true");
    let mut f = fixture("allow_raw = true");
    let req = f.request(raw, 10);
    assert!(f.eval(&req).is_allow());
    let p = f.psbt(&[(10_000, script_of(9))]);
    refused(
        &f.judge(&p, BitcoinNetwork::Regtest),
        Rule::PsbtNotAllowed,
        "[bitcoin]",
    );
}

#[test]
fn psbt_requests_are_refused_by_network_parse_sighash_fee_and_fee_rate() {
    let mut f = fixture(BITCOIN);
    let own = f.own.clone();
    let fine = f.psbt(&[(10_000, script_of(9)), (189_000, own.clone())]);
    refused(
        &f.judge(&fine, BitcoinNetwork::Testnet),
        Rule::Network,
        "the request is for testnet, this node's policy for client \"desk\" is for regtest",
    );
    let garbage = f.request(
        RequestBody::BitcoinPsbt(PsbtRequest {
            psbt: b"psbt\xffgarbage".to_vec(),
            network: BitcoinNetwork::Regtest,
            inputs: vec![0],
        }),
        1,
    );
    refused(
        &f.eval(&garbage),
        Rule::Transaction,
        "body.psbt: does not parse",
    );
    let mut no_utxo = fine.clone();
    no_utxo.inputs[0].witness_utxo = None;
    refused(
        &f.judge(&no_utxo, BitcoinNetwork::Regtest),
        Rule::Transaction,
        "psbt.input[0].witness_utxo: missing",
    );
    let mut all = fine.clone();
    all.inputs[0].sighash_type = Some(PsbtSighashType::from_u32(0x01));
    refused(
        &f.judge(&all, BitcoinNetwork::Regtest),
        Rule::SighashType,
        "psbt.input[0].sighash_type: all is not allowed",
    );
    // 6 000 sat fee: over max_fee.
    let costly = f.psbt(&[(10_000, script_of(9)), (184_000, own.clone())]);
    refused(
        &f.judge(&costly, BitcoinNetwork::Regtest),
        Rule::Fee,
        "fee 6000 sat",
    );
    // 4 000 sat over ~154 vB is about 26 sat/vB: over 20.
    let rate = f.psbt(&[(10_000, script_of(9)), (186_000, own)]);
    refused(
        &f.judge(&rate, BitcoinNetwork::Regtest),
        Rule::FeeRate,
        "more than 20 sat/vB",
    );
    // With `all` allowed, the same request passes the sighash rule.
    let mut g = fixture(&format!(
        "{BITCOIN}\nsighash_types = [\"default\", \"all\"]"
    ));
    let req = g.psbt_request(&all, BitcoinNetwork::Regtest);
    assert!(g.eval(&req).is_allow(), "{:?}", g.eval(&req));
}

#[test]
fn a_bitcoin_section_with_unknown_values_is_refused_at_load() {
    for (extra, field) in [
        (
            "[clients.desk.bitcoin]\nnetwork = \"moon\"",
            "bitcoin.network",
        ),
        (
            "[clients.desk.bitcoin]\nnetwork = \"regtest\"\nsighash_types = [\"every\"]",
            "bitcoin.sighash_types",
        ),
        (
            "[clients.desk.bitcoin]\nnetwork = \"regtest\"\nsighash_types = []",
            "bitcoin.sighash_types",
        ),
        (
            "[clients.desk.bitcoin]\nnetwork = \"regtest\"\nasset = \"XBT\"",
            "bitcoin.asset",
        ),
    ] {
        let text = format!(
            "version = 1\n[clients.desk]\npublic_key = \"{}\"\nkeys = [\"*\"]\n\
             [clients.desk.limits.BTC]\nper_request = 1\nper_window = 1\n{extra}\n",
            hex::encode([0x11; 32])
        );
        let err = crate::policy::Policy::from_toml(&text)
            .expect_err(extra)
            .to_string();
        assert!(err.contains(field), "{err}");
    }
}

#[test]
fn a_psbt_request_needs_the_window_quorum_of_its_bitcoin_asset_whatever_it_declares() {
    let mut f = fixture(BITCOIN);
    let text = f.engine.policy().clone();
    let mut with_quorum = fixture(&format!("{BITCOIN}\n"));
    let toml = format!(
        "version = 1\n[clients.desk]\npublic_key = \"{}\"\nkeys = [\"*\"]\n\
         [clients.desk.limits.BTC]\nper_request = 100000\nper_window = 150000\nwindow_quorum = \"all\"\n{BITCOIN}\n",
        hex::encode(f.client.verifying_key().to_bytes())
    );
    with_quorum.engine =
        PolicyEngine::new(crate::policy::Policy::from_toml(&toml).expect("policy"));
    let p = f.psbt(&[(10_000, script_of(9))]);
    let mut req = f.psbt_request(&p, BitcoinNetwork::Regtest);
    // The client declares another asset: the quorum still comes from [bitcoin].
    req.request.purpose.asset = "NOTHING".into();
    assert_eq!(crate::window::required(&text, &req.request, 5), None);
    assert_eq!(
        crate::window::required(with_quorum.engine.policy(), &req.request, 5),
        Some(5)
    );
}

#[test]
fn a_refusal_quoting_a_huge_psbt_field_is_bounded() {
    let mut f = fixture(BITCOIN);
    // A global key of an unknown-to-v0 type with 40 KB of key data: the decoder's
    // error quotes it.
    let mut psbt = b"psbt\xff".to_vec();
    psbt.extend_from_slice(&[0xfd, 0x41, 0x9c, 0x00]);
    psbt.extend(std::iter::repeat_n(0xab, 40_000));
    psbt.extend_from_slice(&[0x00, 0x00]);
    let req = f.request(
        RequestBody::BitcoinPsbt(PsbtRequest {
            psbt,
            network: BitcoinNetwork::Regtest,
            inputs: vec![0],
        }),
        1,
    );
    match f.eval(&req) {
        Decision::Refuse { rule, detail } => {
            assert_eq!(rule, Rule::Transaction);
            assert!(
                detail.len() <= crate::policy::MAX_DETAIL_LEN + 3,
                "{}",
                detail.len()
            );
            assert!(
                detail.ends_with('…'),
                "the decoder quoted the key and it was cut: {detail}"
            );
        }
        other => panic!("{other:?}"),
    }
}
