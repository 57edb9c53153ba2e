//! What a PSBT request signs and pays: the BIP341 sighash of every input to sign,
//! and the outputs, fee and size policy evaluates.

use bitcoin::{
    hashes::Hash,
    key::{Secp256k1, TweakedPublicKey, XOnlyPublicKey},
    sighash::{Prevouts, SighashCache, TapSighashType},
    Address, Amount, ScriptBuf, TxOut,
};
use serde::{Deserialize, Serialize};

use super::{invalid, parse::parse, x_only_key, PsbtRequest, MAX_OUTPUTS, MAX_SHOWN_SCRIPT};
use crate::error::ProtocolError;

/// One input this request signs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputToSign {
    /// Input index in the transaction.
    pub index: u32,
    /// The BIP341 key-path sighash: the 32-byte message signed.
    pub sighash: [u8; 32],
    /// The script-tree merkle root the key is tweaked with (`tap_merkle_root`),
    /// `None` when the output key is the group key itself.
    pub tweak: Option<[u8; 32]>,
    /// The sighash type (BIP341 byte: 0x00 default, 0x01 all, …).
    pub sighash_type: u8,
    /// Value of the spent output (satoshis).
    pub value: u64,
}

impl InputToSign {
    /// The sighash type's policy name: `default`, `all`, `none`, `single`,
    /// `all_anyonecanpay`, `none_anyonecanpay`, `single_anyonecanpay`.
    pub fn sighash_name(&self) -> &'static str {
        sighash_name(self.sighash_type)
    }
}

/// The policy name of a BIP341 sighash type byte.
pub fn sighash_name(byte: u8) -> &'static str {
    match byte {
        0x00 => "default",
        0x01 => "all",
        0x02 => "none",
        0x03 => "single",
        0x81 => "all_anyonecanpay",
        0x82 => "none_anyonecanpay",
        0x83 => "single_anyonecanpay",
        _ => "invalid",
    }
}

/// One output of the transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputSummary {
    /// Output index.
    pub index: u32,
    /// Satoshis.
    pub value: u64,
    /// The address for the request's network; for a script with no address form
    /// (OP_RETURN, non-standard) `script:<hex>` up to 83 bytes, else
    /// `script-sha256:<hex of its SHA-256>`.
    pub destination: String,
    /// Pays this key's own key-path output (change): not counted as outflow.
    pub change: bool,
}

/// What a PSBT request signs and what the transaction does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransactionSummary {
    /// PSBT version (0 or 2).
    pub psbt_version: u32,
    /// Transaction id (display hex).
    pub txid: String,
    /// The inputs to sign, in request order.
    pub inputs: Vec<InputToSign>,
    /// Every output.
    pub outputs: Vec<OutputSummary>,
    /// Sum of every spent output (satoshis).
    pub input_total: u64,
    /// Sum of every output.
    pub output_total: u64,
    /// `input_total − output_total`.
    pub fee: u64,
    /// Virtual size of the signed transaction (vbytes), counting only what the
    /// signatures commit to plus a key-path witness per input signed here: other
    /// inputs' scriptSigs and witnesses can be replaced after signing and count as
    /// empty, so this is a lower bound and the fee rate can only be overstated.
    pub vsize: u64,
    /// What leaves this key: the inputs signed here minus the change they pay
    /// back (so the fee they fund counts too). Change counts only when every
    /// input signed here commits to every output (`default`, `all`,
    /// `all_anyonecanpay`); with `none` or `single` outputs can be replaced after
    /// signing, so the inputs' whole value counts.
    pub outflow: u64,
    /// Sum of the outputs that are not change (what the listed destinations
    /// receive, as the PSBT shows them).
    pub paid_out: u64,
}

impl TransactionSummary {
    /// The messages signed, with their tweaks, in request order.
    pub fn targets(&self) -> impl Iterator<Item = ([u8; 32], Option<[u8; 32]>)> + '_ {
        self.inputs.iter().map(|i| (i.sighash, i.tweak))
    }
}

fn amount_sum<'a>(
    field: &str,
    values: impl Iterator<Item = &'a Amount>,
) -> Result<u64, ProtocolError> {
    let mut total = Amount::ZERO;
    for (i, v) in values.enumerate() {
        if *v > Amount::MAX_MONEY {
            return Err(invalid(
                format!("{field}[{i}]"),
                format!("{} sat is more than 21 million BTC", v.to_sat()),
            ));
        }
        total = total
            .checked_add(*v)
            .filter(|t| *t <= Amount::MAX_MONEY)
            .ok_or_else(|| invalid(field, "amounts overflow (more than 21 million BTC)"))?;
    }
    Ok(total.to_sat())
}

/// Parses the PSBT of `req` and derives, for a secp256k1-tr key whose group
/// verifying key is `group_key`, what it signs and pays. Every refusal names the
/// field and the input or output index.
pub fn analyze(req: &PsbtRequest, group_key: &[u8]) -> Result<TransactionSummary, ProtocolError> {
    req.validate()?;
    let ours = XOnlyPublicKey::from_slice(&x_only_key(group_key)?)
        .map_err(|_| ProtocolError::InvalidParameters("group key is not an x-only key".into()))?;
    let parsed = parse(&req.psbt)?;
    let n = parsed.tx.input.len();
    if parsed.inputs.len() != n {
        return Err(invalid("body.psbt", "input maps do not match the inputs"));
    }
    if let Some(k) = req
        .inputs
        .iter()
        .position(|i| usize::try_from(*i).map_or(true, |i| i >= n))
    {
        return Err(invalid(
            format!("body.inputs[{k}]"),
            format!(
                "input {} does not exist; the transaction has {n}",
                req.inputs[k]
            ),
        ));
    }
    // Every spent output: from witness_utxo, else from a matching non_witness_utxo
    // (only for inputs not signed here).
    let mut prevouts: Vec<TxOut> = Vec::with_capacity(n);
    for (i, f) in parsed.inputs.iter().enumerate() {
        let signed_here = req.inputs.iter().any(|k| *k as usize == i);
        let prevout = match (&f.witness_utxo, &f.non_witness_prevout) {
            (Some(w), _) => w.clone(),
            (None, Some(p)) if !signed_here => p.clone(),
            (None, _) if signed_here => {
                return Err(invalid(
                    format!("psbt.input[{i}].witness_utxo"),
                    "missing; an input to sign needs the output it spends",
                ))
            }
            (None, _) => {
                return Err(invalid(
                    format!("psbt.input[{i}].witness_utxo"),
                    "missing (and no matching non_witness_utxo); the fee and the BIP341 \
                     sighash commit to every spent output",
                ))
            }
        };
        prevouts.push(prevout);
    }
    let input_total = amount_sum(
        "psbt.input.witness_utxo.amount",
        prevouts.iter().map(|p| &p.value),
    )?;
    let output_total = amount_sum(
        "psbt.output.amount",
        parsed.tx.output.iter().map(|o| &o.value),
    )?;
    let fee = input_total.checked_sub(output_total).ok_or_else(|| {
        invalid(
            "psbt",
            format!("outputs pay {output_total} sat, more than the {input_total} sat spent"),
        )
    })?;

    if parsed.tx.output.len() > MAX_OUTPUTS {
        return Err(invalid(
            "psbt",
            format!("{} outputs; at most {MAX_OUTPUTS}", parsed.tx.output.len()),
        ));
    }
    let own_script = ScriptBuf::new_p2tr_tweaked(TweakedPublicKey::dangerous_assume_tweaked(ours));
    let secp = Secp256k1::verification_only();
    let mut cache = SighashCache::new(&parsed.tx);
    let mut inputs = Vec::with_capacity(req.inputs.len());
    let mut witness_weight: u64 = 0;
    for &index in &req.inputs {
        let i = index as usize;
        let (f, prevout) = (&parsed.inputs[i], &prevouts[i]);
        let field = format!("psbt.input[{i}]");
        if !prevout.script_pubkey.is_p2tr() {
            return Err(invalid(
                format!("{field}.witness_utxo.script_pubkey"),
                "not a Taproot (P2TR) output; only key-path spends of this key are signed",
            ));
        }
        let output_key = &prevout.script_pubkey.as_bytes()[2..34];
        let tweak = if output_key == ours.serialize() {
            None
        } else {
            match (f.tap_internal_key, f.tap_merkle_root) {
                (Some(internal), Some(root)) if internal == ours => {
                    let (tweaked, _) = bitcoin::key::TapTweak::tap_tweak(ours, &secp, Some(root));
                    if tweaked.to_x_only_public_key().serialize() != output_key {
                        return Err(invalid(
                            format!("{field}.tap_merkle_root"),
                            "this key tweaked by it is not the spent output's key",
                        ));
                    }
                    Some(root.to_byte_array())
                }
                _ => {
                    return Err(invalid(
                        format!("{field}.witness_utxo.script_pubkey"),
                        format!(
                            "spends output key {}, not this key's {}",
                            hex::encode(output_key),
                            hex::encode(ours.serialize())
                        ),
                    ))
                }
            }
        };
        let raw_type = f.sighash_type.unwrap_or(0);
        let sighash_type = u8::try_from(raw_type)
            .ok()
            .and_then(|b| TapSighashType::from_consensus_u8(b).ok())
            .ok_or_else(|| {
                invalid(
                    format!("{field}.sighash_type"),
                    format!("{raw_type:#x} is not a Taproot sighash type"),
                )
            })?;
        let anyone = matches!(
            sighash_type,
            TapSighashType::AllPlusAnyoneCanPay
                | TapSighashType::NonePlusAnyoneCanPay
                | TapSighashType::SinglePlusAnyoneCanPay
        );
        let sighash = if anyone {
            cache.taproot_key_spend_signature_hash(i, &Prevouts::One(i, prevout), sighash_type)
        } else {
            cache.taproot_key_spend_signature_hash(i, &Prevouts::All(&prevouts), sighash_type)
        }
        .map_err(|e| invalid(format!("{field}.sighash_type"), e))?;
        // Witness: item count, length, 64-byte signature (+1 sighash byte).
        witness_weight += if sighash_type == TapSighashType::Default {
            66
        } else {
            67
        };
        inputs.push(InputToSign {
            index,
            sighash: sighash.to_byte_array(),
            tweak,
            sighash_type: sighash_type as u8,
            value: prevout.value.to_sat(),
        });
    }
    // Segwit marker and flag (2 WU) and one empty-witness byte per other input on
    // top of the unsigned transaction (empty scriptSigs): committed bytes only.
    let others = parsed.tx.input.len().saturating_sub(req.inputs.len()) as u64;
    let weight = parsed.tx.weight().to_wu() + 2 + witness_weight + others;
    let vsize = weight.div_ceil(4);
    let spent_here = inputs.iter().fold(0u64, |a, i| a.saturating_add(i.value));
    let outputs_committed = inputs.iter().all(|i| {
        matches!(
            TapSighashType::from_consensus_u8(i.sighash_type),
            Ok(TapSighashType::Default | TapSighashType::All | TapSighashType::AllPlusAnyoneCanPay)
        )
    });

    let network = req.network.to_bitcoin();
    let mut outputs = Vec::with_capacity(parsed.tx.output.len());
    let mut paid_out: u64 = 0;
    let mut change_total: u64 = 0;
    for (i, o) in parsed.tx.output.iter().enumerate() {
        let change = o.script_pubkey == own_script;
        let script = o.script_pubkey.as_bytes();
        let destination = match Address::from_script(&o.script_pubkey, network) {
            Ok(a) => a.to_string(),
            Err(_) if script.len() <= MAX_SHOWN_SCRIPT => format!("script:{}", hex::encode(script)),
            Err(_) => format!(
                "script-sha256:{}",
                hex::encode(bitcoin::hashes::sha256::Hash::hash(script).to_byte_array())
            ),
        };
        if change {
            change_total = change_total.saturating_add(o.value.to_sat());
        } else {
            paid_out = paid_out.saturating_add(o.value.to_sat());
        }
        outputs.push(OutputSummary {
            index: i as u32,
            value: o.value.to_sat(),
            destination,
            change,
        });
    }
    Ok(TransactionSummary {
        psbt_version: parsed.version(),
        txid: parsed.tx.compute_txid().to_string(),
        inputs,
        outputs,
        input_total,
        output_total,
        fee,
        vsize,
        outflow: if outputs_committed {
            spent_here.saturating_sub(change_total)
        } else {
            spent_here
        },
        paid_out,
    })
}

/// The inputs of `psbt` that spend this key's outputs (the spent output's key is
/// the group key, or the input names the group key as `tap_internal_key`): what
/// a client asks to sign by default.
pub fn inputs_of_key(psbt: &[u8], group_key: &[u8]) -> Result<Vec<u32>, ProtocolError> {
    let ours = x_only_key(group_key)?;
    let parsed = parse(psbt)?;
    Ok(parsed
        .inputs
        .iter()
        .enumerate()
        .filter(|(_, f)| {
            let key_path = f.witness_utxo.as_ref().is_some_and(|w| {
                w.script_pubkey.is_p2tr() && w.script_pubkey.as_bytes()[2..34] == ours
            });
            key_path || f.tap_internal_key.is_some_and(|k| k.serialize() == ours)
        })
        .map(|(i, _)| i as u32)
        .collect())
}
