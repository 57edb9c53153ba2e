//! Putting the aggregated signatures into the PSBT and extracting the
//! transaction.

use bitcoin::{consensus, secp256k1::schnorr, sighash::TapSighashType, taproot, Witness};

use super::{
    invalid,
    parse::{parse, AnyPsbt},
    v2, PsbtRequest,
};
use crate::error::ProtocolError;

/// A PSBT with this key's signatures, and the transaction when it is complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    /// The request's PSBT (same version) with `tap_key_sig` set on every input
    /// signed here.
    pub psbt: Vec<u8>,
    /// The network-serialized signed transaction, when every input is signed
    /// here or already carries a final witness or script.
    pub transaction: Option<Vec<u8>>,
}

/// Fills in `signatures` (64-byte BIP340 signatures, one per input of
/// `req.inputs`, in that order; each input's sighash type is read from the PSBT as
/// [`super::analyze`] did).
pub fn finish(req: &PsbtRequest, signatures: &[Vec<u8>]) -> Result<Finished, ProtocolError> {
    if signatures.len() != req.inputs.len() {
        return Err(ProtocolError::InvalidParameters(format!(
            "{} signatures for {} inputs",
            signatures.len(),
            req.inputs.len()
        )));
    }
    let parsed = parse(&req.psbt)?;
    let mut tx = parsed.tx.clone();
    let mut sigs = Vec::with_capacity(signatures.len());
    for (&index, sig) in req.inputs.iter().zip(signatures) {
        let i = index as usize;
        let f = parsed
            .inputs
            .get(i)
            .ok_or_else(|| invalid("body.inputs", format!("input {i} does not exist")))?;
        let sighash_type = f
            .sighash_type
            .and_then(|t| u8::try_from(t).ok())
            .map_or(
                Ok(TapSighashType::Default),
                TapSighashType::from_consensus_u8,
            )
            .map_err(|e| invalid(format!("psbt.input[{i}].sighash_type"), e))?;
        let signature = schnorr::Signature::from_slice(sig)
            .map_err(|e| ProtocolError::InvalidParameters(format!("input {i}: signature: {e}")))?;
        sigs.push((
            i,
            taproot::Signature {
                signature,
                sighash_type,
            },
        ));
    }
    // Complete when every input is signed here or already final.
    let complete = parsed.inputs.iter().enumerate().all(|(i, f)| {
        sigs.iter().any(|(k, _)| *k == i)
            || f.final_script_witness.is_some()
            || f.final_script_sig.is_some()
    });
    if complete {
        for (i, f) in parsed.inputs.iter().enumerate() {
            let txin = &mut tx.input[i];
            if let Some((_, s)) = sigs.iter().find(|(k, _)| *k == i) {
                txin.witness = Witness::p2tr_key_spend(s);
            } else {
                txin.witness = f.final_script_witness.clone().unwrap_or_default();
                txin.script_sig = f.final_script_sig.clone().unwrap_or_default();
            }
        }
    }
    let psbt = match parsed.psbt {
        AnyPsbt::V0 => {
            let mut p = parsed.v0;
            for (i, s) in &sigs {
                p.inputs[*i].tap_key_sig = Some(*s);
            }
            p.serialize()
        }
        AnyPsbt::V2(maps) => {
            let raw: Vec<(usize, Vec<u8>)> = sigs.iter().map(|(i, s)| (*i, s.to_vec())).collect();
            v2::add_tap_key_sigs(maps, &raw)
        }
    };
    Ok(Finished {
        psbt,
        transaction: complete.then(|| consensus::serialize(&tx)),
    })
}
