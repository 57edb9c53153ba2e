//! What a client request's `request_received` audit record holds, and the
//! messages an allowed request lets this node sign.
//!
//! The record is written before the policy decision, so an auditor sees what was
//! asked even when it was refused: the client, key, nonce and expiry; the kind
//! (`raw` or `bitcoin_psbt`); the client's declared purpose; the amount and asset
//! the limits count (for a PSBT the parsed outflow and the `[bitcoin]` asset);
//! the SHA-256 of every message signed with its tweak; and for a PSBT the
//! transaction as parsed (txid, fee, size, every output with its destination).
//! Start-up replay ([`crate::recovery`]) reads `asset`, `amount`,
//! `message_hashes` and `tweaks` back.

use quorate_protocol::{
    request::{RequestBody, SigningRequest},
    SignTarget,
};
use serde_json::{json, Value};

use crate::{policy::Effect, recovery::message_hash};

/// The messages `r` signs: a raw request's messages, or the sighashes of the
/// parsed transaction in `effect` (none when it did not parse: refused anyway).
pub(crate) fn targets(r: &SigningRequest, effect: Option<&Effect>) -> Vec<SignTarget> {
    match (&r.body, effect.and_then(|e| e.transaction.as_ref())) {
        (RequestBody::Raw { messages, tweak }, _) => messages
            .iter()
            .map(|m| SignTarget {
                message: m.clone(),
                tweak: *tweak,
            })
            .collect(),
        (RequestBody::BitcoinPsbt(_), Some(tx)) => tx
            .targets()
            .map(|(m, tweak)| SignTarget {
                message: m.to_vec(),
                tweak,
            })
            .collect(),
        (RequestBody::BitcoinPsbt(_), None) => Vec::new(),
    }
}

/// The `request_received` details of `r` (every field bounded by `validate` and
/// [`quorate_protocol::psbt::MAX_OUTPUTS`]).
pub(crate) fn received(
    r: &SigningRequest,
    effect: Option<&Effect>,
    targets: &[SignTarget],
) -> Value {
    let (asset, amount) = match effect {
        Some(e) => (e.asset.clone(), e.amount),
        None => (r.purpose.asset.clone(), r.purpose.amount),
    };
    let tweak = match &r.body {
        RequestBody::Raw { tweak, .. } => *tweak,
        RequestBody::BitcoinPsbt(_) => None,
    };
    let mut details = json!({
        "client": hex::encode(r.client),
        "key_id": r.key_id.to_string(),
        "kind": r.body.kind(),
        "asset": asset,
        "amount": amount,
        "destination": r.purpose.destination,
        "declared_asset": r.purpose.asset,
        "declared_amount": r.purpose.amount,
        "memo": r.purpose.memo,
        "messages": r.body.len(),
        "nonce": hex::encode(r.nonce),
        "expires_at_ms": r.expires_at_ms,
        "message_hashes": targets.iter().map(|t| hex::encode(message_hash(&t.message))).collect::<Vec<_>>(),
        "tweak": tweak.map(hex::encode),
        "tweaks": targets.iter().map(|t| t.tweak.map(hex::encode)).collect::<Vec<_>>(),
    });
    if let (RequestBody::BitcoinPsbt(p), Some(obj)) = (&r.body, details.as_object_mut()) {
        obj.insert("network".into(), json!(p.network.name()));
        obj.insert("inputs".into(), json!(p.inputs));
        if let Some(tx) = effect.and_then(|e| e.transaction.as_ref()) {
            obj.insert(
                "transaction".into(),
                json!({
                    "psbt_version": tx.psbt_version,
                    "txid": tx.txid,
                    "fee": tx.fee,
                    "vsize": tx.vsize,
                    "input_total": tx.input_total,
                    "outflow": tx.outflow,
                    "paid_out": tx.paid_out,
                    "sighash_types": tx.inputs.iter().map(|i| i.sighash_name()).collect::<Vec<_>>(),
                    "outputs": tx.outputs.iter().map(|o| json!({
                        "index": o.index,
                        "value": o.value,
                        "destination": o.destination,
                        "change": o.change,
                    })).collect::<Vec<_>>(),
                }),
            );
        }
    }
    details
}
