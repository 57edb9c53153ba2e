//! Checking a finished transaction's Taproot key-path spends from scratch: the
//! BIP341 sighash recomputed from the transaction itself (not from the PSBT) and
//! the BIP340 signature checked by libsecp256k1 under the spent output's key.

use bitcoin::{
    consensus::deserialize,
    hashes::Hash,
    key::{Secp256k1, XOnlyPublicKey},
    secp256k1::{schnorr, Message},
    sighash::{Prevouts, SighashCache, TapSighashType},
    Transaction, TxOut,
};

use super::{invalid, parse::parse, PsbtRequest};
use crate::error::ProtocolError;

/// Verifies the finished transaction `tx` of a PSBT request: it is the PSBT's
/// transaction (same txid) and every input of `req.inputs` is a valid key-path
/// spend ([`verify_key_path_spends`]) of the output the PSBT says it spends.
pub fn verify_finished(req: &PsbtRequest, tx: &[u8]) -> Result<(), ProtocolError> {
    let parsed = parse(&req.psbt)?;
    let decoded: Transaction =
        deserialize(tx).map_err(|e| invalid("transaction", format!("does not decode: {e}")))?;
    if decoded.compute_txid() != parsed.tx.compute_txid() {
        return Err(invalid(
            "transaction",
            "is not the PSBT's transaction (txid differs)",
        ));
    }
    let prevouts = parsed
        .inputs
        .iter()
        .enumerate()
        .map(|(i, f)| {
            f.witness_utxo
                .clone()
                .or_else(|| f.non_witness_prevout.clone())
                .ok_or_else(|| invalid(format!("psbt.input[{i}].witness_utxo"), "missing"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    verify_key_path_spends(tx, &prevouts, &req.inputs)
}

/// Verifies the inputs `inputs` of the network-serialized `tx` as key-path spends
/// of `prevouts[i]` (every spent output, in input order): a P2TR output, a
/// one-element witness holding a 64-byte signature (or 65 with a sighash type
/// byte), valid under the output key. The error names the input.
pub fn verify_key_path_spends(
    tx: &[u8],
    prevouts: &[TxOut],
    inputs: &[u32],
) -> Result<(), ProtocolError> {
    let tx: Transaction =
        deserialize(tx).map_err(|e| invalid("transaction", format!("does not decode: {e}")))?;
    if prevouts.len() != tx.input.len() {
        return Err(invalid(
            "prevouts",
            format!("{} for {} inputs", prevouts.len(), tx.input.len()),
        ));
    }
    let secp = Secp256k1::verification_only();
    let mut cache = SighashCache::new(&tx);
    for (i, input) in tx.input.iter().enumerate() {
        if !inputs.iter().any(|k| *k as usize == i) {
            continue;
        }
        let spk = &prevouts[i].script_pubkey;
        if !spk.is_p2tr() {
            return Err(invalid(
                format!("input[{i}]"),
                "does not spend a P2TR output",
            ));
        }
        let key = XOnlyPublicKey::from_slice(&spk.as_bytes()[2..34])
            .map_err(|_| invalid(format!("input[{i}]"), "output key is not on the curve"))?;
        let stack: Vec<&[u8]> = input.witness.iter().collect();
        let [element] = stack.as_slice() else {
            return Err(invalid(
                format!("input[{i}].witness"),
                format!("{} elements; a key-path spend has 1", stack.len()),
            ));
        };
        let (sig, ty) = match element.len() {
            64 => (&element[..], TapSighashType::Default),
            65 if element[64] == 0 => {
                return Err(invalid(
                    format!("input[{i}].witness"),
                    "a 65-byte signature with sighash byte 0x00 (consensus requires 64 bytes for SIGHASH_DEFAULT)",
                ))
            }
            65 => (
                &element[..64],
                TapSighashType::from_consensus_u8(element[64])
                    .map_err(|e| invalid(format!("input[{i}].witness"), e))?,
            ),
            n => {
                return Err(invalid(
                    format!("input[{i}].witness"),
                    format!("{n}-byte signature"),
                ))
            }
        };
        let hash = cache
            .taproot_key_spend_signature_hash(i, &Prevouts::All(prevouts), ty)
            .map_err(|e| invalid(format!("input[{i}]"), e))?;
        let sig = schnorr::Signature::from_slice(sig)
            .map_err(|e| invalid(format!("input[{i}].witness"), e))?;
        secp.verify_schnorr(&sig, &Message::from_digest(hash.to_byte_array()), &key)
            .map_err(|_| invalid(format!("input[{i}]"), "signature does not verify"))?;
    }
    Ok(())
}
