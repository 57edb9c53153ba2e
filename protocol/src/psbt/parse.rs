//! PSBT version 0 (rust-bitcoin) and version 2 (psbt-v2) into one shape: the
//! unsigned transaction and the per-input fields signing needs.

use bitcoin::{
    key::XOnlyPublicKey, taproot::TapNodeHash, OutPoint, ScriptBuf, Transaction, TxOut, Witness,
};

use super::{
    invalid,
    v2::{self, V2Maps},
};
use crate::error::ProtocolError;

/// Either version, as decoded: a version 2 PSBT keeps its original maps (for
/// writing signatures back) and is read through its version 0 form.
pub(super) enum AnyPsbt {
    V0,
    V2(V2Maps),
}

/// The fields of one input that signing and policy read.
#[derive(Debug, Clone)]
pub(super) struct InputFields {
    pub(super) witness_utxo: Option<TxOut>,
    /// The spent output from `non_witness_utxo`, if present and its txid matches.
    pub(super) non_witness_prevout: Option<TxOut>,
    /// Raw PSBT sighash type, if set.
    pub(super) sighash_type: Option<u32>,
    pub(super) tap_internal_key: Option<XOnlyPublicKey>,
    pub(super) tap_merkle_root: Option<TapNodeHash>,
    pub(super) final_script_witness: Option<Witness>,
    pub(super) final_script_sig: Option<ScriptBuf>,
}

/// A decoded PSBT: its version, the version 0 form, the unsigned transaction and
/// the input fields.
pub(super) struct Parsed {
    pub(super) psbt: AnyPsbt,
    pub(super) v0: bitcoin::psbt::Psbt,
    pub(super) tx: Transaction,
    pub(super) inputs: Vec<InputFields>,
}

impl Parsed {
    /// PSBT version: 0 or 2.
    pub(super) fn version(&self) -> u32 {
        match self.psbt {
            AnyPsbt::V0 => 0,
            AnyPsbt::V2(_) => 2,
        }
    }
}

fn prevout_of(tx: Option<&Transaction>, outpoint: &OutPoint) -> Option<TxOut> {
    let tx = tx?;
    if tx.compute_txid() != outpoint.txid {
        return None;
    }
    tx.output.get(usize::try_from(outpoint.vout).ok()?).cloned()
}

/// Decodes `bytes` as BIP174 (version 0) or BIP370 (version 2, when its global
/// map says so).
pub(super) fn parse(bytes: &[u8]) -> Result<Parsed, ProtocolError> {
    if v2::is_v2(bytes) {
        let maps = v2::read(bytes)?;
        let v0 = bitcoin::psbt::Psbt::deserialize(&v2::to_v0(&maps)?).map_err(|e| {
            invalid(
                "body.psbt",
                format!("does not parse as a BIP370 (version 2) PSBT: {e}"),
            )
        })?;
        return Ok(from_v0(v0, AnyPsbt::V2(maps)));
    }
    let v0 = bitcoin::psbt::Psbt::deserialize(bytes).map_err(|e| {
        invalid(
            "body.psbt",
            format!("does not parse as a PSBT (BIP174): {e}"),
        )
    })?;
    Ok(from_v0(v0, AnyPsbt::V0))
}

fn from_v0(p: bitcoin::psbt::Psbt, psbt: AnyPsbt) -> Parsed {
    let tx = p.unsigned_tx.clone();
    let inputs = p
        .inputs
        .iter()
        .zip(&tx.input)
        .map(|(i, txin)| InputFields {
            witness_utxo: i.witness_utxo.clone(),
            non_witness_prevout: prevout_of(i.non_witness_utxo.as_ref(), &txin.previous_output),
            sighash_type: i.sighash_type.map(|t| t.to_u32()),
            tap_internal_key: i.tap_internal_key,
            tap_merkle_root: i.tap_merkle_root,
            final_script_witness: i.final_script_witness.clone(),
            final_script_sig: i.final_script_sig.clone(),
        })
        .collect();
    Parsed {
        psbt,
        v0: p,
        tx,
        inputs,
    }
}
