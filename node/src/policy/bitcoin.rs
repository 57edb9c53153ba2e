//! What a request does, as policy sees it ([`Effect`]), and the
//! `[clients.NAME.bitcoin]` rules for Bitcoin transactions (invariant 10).
//!
//! A `raw` request is taken at the client's word: its declared [`Purpose`]
//! (asset, amount, destination) is all a node can check, so a client's policy must
//! allow such requests explicitly (`allow_raw = true`). A `bitcoin_psbt` request is
//! parsed here: the node derives the sighashes itself, and the amount the limits
//! count is the transaction's real outflow (every output that is not this key's own
//! change), the destinations the allowlist checks are the decoded output addresses,
//! and the fee and fee rate are bounded.
//!
//! [`Purpose`]: quorate_protocol::request::Purpose

use std::collections::BTreeSet;

use quorate_protocol::{
    key::GroupPublic,
    psbt::{BitcoinNetwork, TransactionSummary},
    request::{RequestBody, SigningRequest},
};
use serde::Deserialize;

use super::{invalid, refuse, ClientPolicy, Decision, PolicyError, Rule};

/// The sighash type names a policy may allow.
pub const SIGHASH_TYPES: [&str; 7] = [
    "default",
    "all",
    "none",
    "single",
    "all_anyonecanpay",
    "none_anyonecanpay",
    "single_anyonecanpay",
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BitcoinFile {
    network: String,
    asset: Option<String>,
    sighash_types: Option<Vec<String>>,
    max_fee: Option<u64>,
    max_fee_rate: Option<u64>,
}

/// A client's `[clients.NAME.bitcoin]` section: it may send `bitcoin_psbt`
/// requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BitcoinPolicy {
    /// The network its transactions must be for.
    pub network: BitcoinNetwork,
    /// The `limits` entry a transaction's outflow counts against (default `BTC`).
    pub asset: String,
    /// Sighash types it may sign (default: `default` only).
    pub sighash_types: BTreeSet<String>,
    /// Largest fee, satoshis (`None`: any).
    pub max_fee: Option<u64>,
    /// Largest fee rate, sat/vB (`None`: any).
    pub max_fee_rate: Option<u64>,
}

impl BitcoinPolicy {
    pub(super) fn parse(client: &str, f: BitcoinFile) -> Result<Self, PolicyError> {
        let n = Some(client);
        let network = f
            .network
            .parse()
            .map_err(|e: String| invalid(n, "bitcoin.network", e))?;
        let sighash_types: BTreeSet<String> = match f.sighash_types {
            None => ["default".to_owned()].into_iter().collect(),
            Some(list) if list.is_empty() => {
                return Err(invalid(
                    n,
                    "bitcoin.sighash_types",
                    "is empty; omit it to allow `default` only",
                ))
            }
            Some(list) => list.into_iter().collect(),
        };
        if let Some(bad) = sighash_types
            .iter()
            .find(|t| !SIGHASH_TYPES.contains(&t.as_str()))
        {
            return Err(invalid(
                n,
                "bitcoin.sighash_types",
                format!(
                    "unknown sighash type {bad:?}; one of {}",
                    SIGHASH_TYPES.join(", ")
                ),
            ));
        }
        Ok(Self {
            network,
            asset: f.asset.unwrap_or_else(|| "BTC".into()),
            sighash_types,
            max_fee: f.max_fee,
            max_fee_rate: f.max_fee_rate,
        })
    }
}

/// What a request does, as the amount, destination and asset rules see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effect {
    /// The asset whose limits apply.
    pub asset: String,
    /// The amount counted against them (minor units).
    pub amount: u64,
    /// Each destination, with where it comes from (`purpose.destination` or
    /// `output N`).
    pub destinations: Vec<(String, String)>,
    /// The parsed transaction of a PSBT request.
    pub transaction: Option<TransactionSummary>,
}

/// The [`Effect`] of `req` for `client`: its declaration for a raw request that
/// the client may send, or the parsed transaction of a PSBT request checked
/// against the client's `[bitcoin]` rules (network, parse, sighash types, fee,
/// fee rate), in that order.
/// `parsed` is the request's transaction if the caller already has it (it depends
/// only on the request and the key, so it can be kept with an approval); without
/// it the PSBT is parsed here.
pub(super) fn effect(
    client: &ClientPolicy,
    req: &SigningRequest,
    key: &GroupPublic,
    parsed: Option<&TransactionSummary>,
) -> Result<Effect, Decision> {
    let p = match &req.body {
        RequestBody::Raw { .. } => {
            if !client.allow_raw {
                return Err(refuse(
                    Rule::RawNotAllowed,
                    format!(
                        "client {:?} may not send raw (opaque message) requests; its \
                         policy needs allow_raw = true, or send a typed request \
                         (bitcoin_psbt) that this node parses",
                        client.name
                    ),
                ));
            }
            return Ok(Effect {
                asset: req.purpose.asset.clone(),
                amount: req.purpose.amount,
                destinations: vec![(
                    "purpose.destination".into(),
                    req.purpose.destination.clone(),
                )],
                transaction: None,
            });
        }
        RequestBody::BitcoinPsbt(p) => p,
    };
    let Some(btc) = &client.bitcoin else {
        return Err(refuse(
            Rule::PsbtNotAllowed,
            format!(
                "client {:?} has no [bitcoin] section and may not send bitcoin_psbt requests",
                client.name
            ),
        ));
    };
    if p.network != btc.network {
        return Err(refuse(
            Rule::Network,
            format!(
                "body.network: the request is for {}, this node's policy for client {:?} is for {}",
                p.network, client.name, btc.network
            ),
        ));
    }
    let tx = match parsed {
        Some(tx) => tx.clone(),
        None => match req.transaction(key) {
            Ok(Some(tx)) => tx,
            Ok(None) => return Err(refuse(Rule::Transaction, "no transaction")),
            Err(e) => return Err(refuse(Rule::Transaction, e.to_string())),
        },
    };
    if let Some(i) = tx
        .inputs
        .iter()
        .find(|i| !btc.sighash_types.contains(i.sighash_name()))
    {
        return Err(refuse(
            Rule::SighashType,
            format!(
                "psbt.input[{}].sighash_type: {} is not allowed (allowed: {})",
                i.index,
                i.sighash_name(),
                btc.sighash_types
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    if let Some(max) = btc.max_fee.filter(|max| tx.fee > *max) {
        return Err(refuse(
            Rule::Fee,
            format!("fee {} sat exceeds the limit {max} sat", tx.fee),
        ));
    }
    if let Some(max) = btc.max_fee_rate {
        if tx.fee > max.saturating_mul(tx.vsize) {
            return Err(refuse(
                Rule::FeeRate,
                format!(
                    "fee {} sat over {} vB is more than {max} sat/vB",
                    tx.fee, tx.vsize
                ),
            ));
        }
    }
    Ok(Effect {
        asset: btc.asset.clone(),
        amount: tx.outflow,
        destinations: tx
            .outputs
            .iter()
            .filter(|o| !o.change)
            .map(|o| (format!("output {}", o.index), o.destination.clone()))
            .collect(),
        transaction: Some(tx),
    })
}

#[cfg(test)]
mod tests;
