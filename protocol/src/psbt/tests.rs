//! PSBT analysis and finishing against rust-bitcoin's consensus verification.

use bitcoin::{
    absolute::LockTime,
    consensus,
    hashes::Hash,
    key::{Keypair, Secp256k1, TapTweak, TweakedPublicKey, XOnlyPublicKey},
    secp256k1::{Message, SecretKey},
    taproot::TapNodeHash,
    transaction::Version,
    Amount, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Txid, Witness,
};

use super::*;

struct Fixture {
    keypair: Keypair,
    /// The "group key" as frost-core serializes it (33 bytes, even Y).
    group: Vec<u8>,
    prevouts: Vec<TxOut>,
}

fn fixture(values: &[u64]) -> Fixture {
    let secp = Secp256k1::new();
    let sk = SecretKey::from_slice(&[0x42; 32]).expect("key");
    let keypair = Keypair::from_secret_key(&secp, &sk);
    let (x, _) = keypair.x_only_public_key();
    let mut group = vec![0x02];
    group.extend_from_slice(&x.serialize());
    let script = ScriptBuf::new_p2tr_tweaked(TweakedPublicKey::dangerous_assume_tweaked(x));
    Fixture {
        keypair,
        group,
        prevouts: values
            .iter()
            .map(|v| TxOut {
                value: Amount::from_sat(*v),
                script_pubkey: script.clone(),
            })
            .collect(),
    }
}

fn other_script(byte: u8) -> ScriptBuf {
    let secp = Secp256k1::new();
    let sk = SecretKey::from_slice(&[byte; 32]).expect("key");
    let (x, _) = Keypair::from_secret_key(&secp, &sk).x_only_public_key();
    ScriptBuf::new_p2tr(&secp, x, None)
}

fn unsigned_tx(inputs: usize, outputs: Vec<TxOut>) -> Transaction {
    Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: (0..inputs)
            .map(|i| TxIn {
                previous_output: OutPoint {
                    txid: Txid::from_byte_array([i as u8 + 1; 32]),
                    vout: i as u32,
                },
                script_sig: ScriptBuf::new(),
                sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
                witness: Witness::new(),
            })
            .collect(),
        output: outputs,
    }
}

fn v0(f: &Fixture, outputs: Vec<TxOut>) -> bitcoin::psbt::Psbt {
    let mut p = bitcoin::psbt::Psbt::from_unsigned_tx(unsigned_tx(f.prevouts.len(), outputs))
        .expect("psbt");
    for (i, o) in f.prevouts.iter().enumerate() {
        p.inputs[i].witness_utxo = Some(o.clone());
    }
    p
}

fn request(psbt: Vec<u8>, inputs: Vec<u32>) -> PsbtRequest {
    PsbtRequest {
        psbt,
        network: BitcoinNetwork::Regtest,
        inputs,
    }
}

fn sign_all(f: &Fixture, summary: &TransactionSummary) -> Vec<Vec<u8>> {
    let secp = Secp256k1::new();
    summary
        .inputs
        .iter()
        .map(|i| {
            let kp = match i.tweak {
                None => f.keypair,
                Some(root) => f
                    .keypair
                    .tap_tweak(&secp, Some(TapNodeHash::from_byte_array(root)))
                    .to_keypair(),
            };
            let msg = Message::from_digest(i.sighash);
            secp.sign_schnorr_no_aux_rand(&msg, &kp)
                .serialize()
                .to_vec()
        })
        .collect()
}

fn verifies(f: &Fixture, tx_bytes: &[u8]) {
    verify_key_path_spends(
        tx_bytes,
        &f.prevouts,
        &(0..f.prevouts.len() as u32).collect::<Vec<_>>(),
    )
    .expect("every input's key-path spend verifies");
}

/// A BIP370 PSBT with one input (witness_utxo of `f`) and one output, written
/// out field by field from the BIP's key types.
fn v2_psbt(f: &Fixture, value: u64, to: &ScriptBuf) -> Vec<u8> {
    fn pair(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
        out.push(key.len() as u8);
        out.extend_from_slice(key);
        out.push(value.len() as u8);
        out.extend_from_slice(value);
    }
    let mut p = b"psbt\xff".to_vec();
    pair(&mut p, &[0x02], &2u32.to_le_bytes()); // PSBT_GLOBAL_TX_VERSION
    pair(&mut p, &[0x04], &[1]); // PSBT_GLOBAL_INPUT_COUNT
    pair(&mut p, &[0x05], &[1]); // PSBT_GLOBAL_OUTPUT_COUNT
    pair(&mut p, &[0xfb], &2u32.to_le_bytes()); // PSBT_GLOBAL_VERSION
    p.push(0);
    pair(&mut p, &[0x01], &consensus::serialize(&f.prevouts[0])); // WITNESS_UTXO
    pair(&mut p, &[0x0e], &[1; 32]); // PSBT_IN_PREVIOUS_TXID
    pair(&mut p, &[0x0f], &0u32.to_le_bytes()); // PSBT_IN_OUTPUT_INDEX
    p.push(0);
    pair(&mut p, &[0x03], &value.to_le_bytes()); // PSBT_OUT_AMOUNT
    pair(&mut p, &[0x04], to.as_bytes()); // PSBT_OUT_SCRIPT
    p.push(0);
    p
}

fn pay(value: u64, script: ScriptBuf) -> TxOut {
    TxOut {
        value: Amount::from_sat(value),
        script_pubkey: script,
    }
}

fn refusal(r: Result<TransactionSummary, ProtocolError>) -> String {
    match r {
        Err(ProtocolError::InvalidRequest(m)) => m,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn psbt_v0_sighashes_are_derived_and_the_finished_transaction_verifies() {
    let f = fixture(&[60_000, 40_000]);
    let own = f.prevouts[0].script_pubkey.clone();
    let p = v0(&f, vec![pay(70_000, other_script(7)), pay(29_000, own)]);
    let req = request(p.serialize(), vec![0, 1]);
    let s = analyze(&req, &f.group).expect("analysis");
    assert_eq!(s.psbt_version, 0);
    assert_eq!(
        (s.input_total, s.output_total, s.fee),
        (100_000, 99_000, 1_000)
    );
    assert_eq!(s.paid_out, 70_000, "change is not paid out");
    assert_eq!(s.outflow, 71_000, "what leaves the key: payment and fee");
    assert!(s.outputs[1].change && !s.outputs[0].change);
    assert!(
        s.outputs[0].destination.starts_with("bcrt1p"),
        "{}",
        s.outputs[0].destination
    );
    assert_eq!(s.inputs.len(), 2);
    assert!(s
        .inputs
        .iter()
        .all(|i| i.tweak.is_none() && i.sighash_name() == "default"));
    assert_ne!(s.inputs[0].sighash, s.inputs[1].sighash);
    let done = finish(&req, &sign_all(&f, &s)).expect("finish");
    let tx = done.transaction.expect("every input signed: complete");
    verifies(&f, &tx);
    let decoded: Transaction = consensus::deserialize(&tx).expect("decodes");
    assert_eq!(
        s.vsize,
        decoded.vsize() as u64,
        "the estimate is the signed size"
    );
    let back = bitcoin::psbt::Psbt::deserialize(&done.psbt).expect("signed psbt");
    assert!(back.inputs.iter().all(|i| i.tap_key_sig.is_some()));
    // One wrong signature: consensus refuses it.
    let mut sigs = sign_all(&f, &s);
    sigs[1][5] ^= 1;
    let bad = finish(&req, &sigs)
        .expect("finish")
        .transaction
        .expect("complete");
    assert!(verify_finished(&req, &tx).is_ok());
    match verify_finished(&req, &bad) {
        Err(ProtocolError::InvalidRequest(m)) => assert!(m.starts_with("input[1]"), "{m}"),
        other => panic!("a bad signature must be named: {other:?}"),
    }
}

#[test]
fn psbt_v2_is_parsed_and_signed_like_v0() {
    let f = fixture(&[50_000]);
    let req = request(v2_psbt(&f, 49_000, &other_script(9)), vec![0]);
    let s = analyze(&req, &f.group).expect("analysis");
    assert_eq!((s.psbt_version, s.fee, s.outflow), (2, 1_000, 50_000));
    let done = finish(&req, &sign_all(&f, &s)).expect("finish");
    verifies(&f, &done.transaction.expect("complete"));
    // Still version 2, with the signature as PSBT_IN_TAP_KEY_SIG and nothing lost.
    let again = analyze(&request(done.psbt.clone(), vec![0]), &f.group).expect("v2 again");
    assert_eq!((again.psbt_version, &again.txid), (2, &s.txid));
    let sig = hex::encode(&sign_all(&f, &s)[0]);
    assert!(hex::encode(&done.psbt).contains(&format!("0113 40{sig}").replace(' ', "")));
    assert_eq!(done.psbt.len(), req.psbt.len() + 3 + 64);
}

#[test]
fn script_tree_outputs_of_the_key_are_signed_with_the_merkle_root_tweak() {
    let mut f = fixture(&[30_000]);
    let secp = Secp256k1::new();
    let (x, _) = f.keypair.x_only_public_key();
    let root = TapNodeHash::from_byte_array([5; 32]);
    let (tweaked, _) = x.tap_tweak(&secp, Some(root));
    f.prevouts[0].script_pubkey = ScriptBuf::new_p2tr_tweaked(tweaked);
    let mut p = v0(&f, vec![pay(29_000, other_script(3))]);
    p.inputs[0].tap_internal_key = Some(x);
    p.inputs[0].tap_merkle_root = Some(root);
    let req = request(p.serialize(), vec![0]);
    let s = analyze(&req, &f.group).expect("analysis");
    assert_eq!(s.inputs[0].tweak, Some([5; 32]));
    verifies(
        &f,
        &finish(&req, &sign_all(&f, &s))
            .expect("finish")
            .transaction
            .expect("tx"),
    );
    // A merkle root that does not produce the spent key is refused.
    p.inputs[0].tap_merkle_root = Some(TapNodeHash::from_byte_array([6; 32]));
    let m = refusal(analyze(&request(p.serialize(), vec![0]), &f.group));
    assert!(m.starts_with("psbt.input[0].tap_merkle_root"), "{m}");
}

#[test]
fn bad_psbts_are_refused_naming_the_field_and_index() {
    let f = fixture(&[10_000, 10_000]);
    let good = v0(&f, vec![pay(19_000, other_script(7))]);
    // Does not parse.
    let m = refusal(analyze(&request(vec![1, 2, 3], vec![0]), &f.group));
    assert!(m.starts_with("body.psbt: does not parse"), "{m}");
    // Input to sign without witness_utxo.
    let mut p = good.clone();
    p.inputs[1].witness_utxo = None;
    let m = refusal(analyze(&request(p.serialize(), vec![0, 1]), &f.group));
    assert!(m.starts_with("psbt.input[1].witness_utxo: missing"), "{m}");
    // An input of another key.
    let mut p = good.clone();
    p.inputs[0].witness_utxo = Some(pay(10_000, other_script(8)));
    let m = refusal(analyze(&request(p.serialize(), vec![0]), &f.group));
    assert!(
        m.starts_with("psbt.input[0].witness_utxo.script_pubkey: spends output key"),
        "{m}"
    );
    // Not Taproot at all.
    let mut p = good.clone();
    p.inputs[0].witness_utxo = Some(pay(10_000, ScriptBuf::new_op_return([1u8; 4])));
    let m = refusal(analyze(&request(p.serialize(), vec![0]), &f.group));
    assert!(m.contains("not a Taproot (P2TR) output"), "{m}");
    // A sighash type that is not a Taproot one.
    let mut p = good.clone();
    p.inputs[1].sighash_type = Some(bitcoin::psbt::PsbtSighashType::from_u32(0x04));
    let m = refusal(analyze(&request(p.serialize(), vec![0, 1]), &f.group));
    assert!(m.starts_with("psbt.input[1].sighash_type: 0x4"), "{m}");
    // An index past the inputs.
    let m = refusal(analyze(&request(good.serialize(), vec![0, 2]), &f.group));
    assert!(
        m.starts_with("body.inputs[1]: input 2 does not exist"),
        "{m}"
    );
    // Indices not strictly increasing.
    let m = refusal(analyze(&request(good.serialize(), vec![1, 1]), &f.group));
    assert!(m.starts_with("body.inputs[1]"), "{m}");
    // Amounts that overflow, and outputs over the inputs.
    let big = v0(
        &f,
        vec![
            pay(Amount::MAX_MONEY.to_sat(), other_script(7)),
            pay(1, other_script(7)),
        ],
    );
    let m = refusal(analyze(&request(big.serialize(), vec![0]), &f.group));
    assert!(m.starts_with("psbt.output.amount: amounts overflow"), "{m}");
    let over = v0(&f, vec![pay(30_000, other_script(7))]);
    let m = refusal(analyze(&request(over.serialize(), vec![0]), &f.group));
    assert!(m.starts_with("psbt: outputs pay 30000 sat"), "{m}");
}

#[test]
fn sighash_types_and_networks_change_what_is_signed_and_shown() {
    let f = fixture(&[10_000]);
    let mut p = v0(&f, vec![pay(9_000, other_script(7))]);
    let default = analyze(&request(p.serialize(), vec![0]), &f.group).expect("default");
    p.inputs[0].sighash_type = Some(bitcoin::psbt::PsbtSighashType::from_u32(0x01));
    let all = analyze(&request(p.serialize(), vec![0]), &f.group).expect("all");
    assert_eq!(all.inputs[0].sighash_name(), "all");
    assert_ne!(default.inputs[0].sighash, all.inputs[0].sighash);
    assert_eq!(
        all.vsize,
        default.vsize + 1,
        "a sighash byte in the witness"
    );
    let s = finish(&request(p.serialize(), vec![0]), &sign_all(&f, &all)).expect("finish");
    verifies(&f, &s.transaction.expect("tx"));
    let mut req = request(p.serialize(), vec![0]);
    req.network = BitcoinNetwork::Mainnet;
    let main = analyze(&req, &f.group).expect("mainnet");
    assert!(
        main.outputs[0].destination.starts_with("bc1p"),
        "{}",
        main.outputs[0].destination
    );
}

#[test]
fn uncommitted_outputs_and_foreign_witnesses_cannot_hide_what_leaves_the_key() {
    let f = fixture(&[10_000, 10_000]);
    let own = f.prevouts[0].script_pubkey.clone();
    // Everything but 1 000 sat back to the key goes to the fee: it still leaves.
    let burn = v0(&f, vec![pay(1_000, own.clone())]);
    let s = analyze(&request(burn.serialize(), vec![0, 1]), &f.group).expect("analysis");
    assert_eq!((s.paid_out, s.fee, s.outflow), (0, 19_000, 19_000));
    // SIGHASH_NONE commits to no output: the change shown cannot be trusted.
    let mut none = v0(&f, vec![pay(1_000, other_script(7)), pay(18_000, own)]);
    none.inputs[1].sighash_type = Some(bitcoin::psbt::PsbtSighashType::from_u32(0x02));
    let s = analyze(&request(none.serialize(), vec![0, 1]), &f.group).expect("analysis");
    assert_eq!(s.outflow, 20_000, "the inputs' whole value counts");
    // Input 1 signed elsewhere with a huge scriptSig, which the signature does not
    // commit to: the size (and so the fee rate) ignores it.
    let p = v0(&f, vec![pay(19_000, other_script(7))]);
    let small = analyze(&request(p.serialize(), vec![0]), &f.group).expect("analysis");
    let mut padded = p.clone();
    padded.inputs[1].final_script_sig = Some(ScriptBuf::from_bytes(vec![0x51; 10_000]));
    let big = analyze(&request(padded.serialize(), vec![0]), &f.group).expect("analysis");
    assert_eq!(small.vsize, big.vsize);
}

#[test]
fn a_partly_signed_transaction_is_not_extracted() {
    let f = fixture(&[10_000, 10_000]);
    let p = v0(&f, vec![pay(19_000, other_script(7))]);
    let req = request(p.serialize(), vec![1]);
    let s = analyze(&req, &f.group).expect("analysis");
    let done = finish(&req, &sign_all(&f, &s)).expect("finish");
    assert!(
        done.transaction.is_none(),
        "input 0 is neither signed nor final"
    );
    let _ = XOnlyPublicKey::from_slice(&f.group[1..]).expect("x-only");
}
