//! Netting state in the sealed keystore, restored at start-up.
//!
//! Records (postcard, sealed like every keystore record):
//!
//! ```text
//! netting-round/<round id hex>             RoundRecord  { version 1, spec, authorization,
//!                                                         closed: Option<inputs>, settle_attempts }
//! netting-bundle/<round id hex>/<party>    BundleRecord { version 1, header, sealed box }
//! ```
//!
//! The bundle's box stays sealed to the node's X25519 key, so the record holds no
//! share in the clear beyond the keystore's own encryption. A bundle record larger
//! than the keystore's 1 MiB record cap is refused before anything is written. At
//! start-up every round is rebuilt by re-accepting its stored bundles as of their
//! signing time (`accept_bundle` with `now = header.signed_at`), and a closed round
//! is closed again on its stored inputs.

use std::collections::BTreeMap;

use quorate_protocol::{
    netting::{round::RoundAuthorization, session::NodeRound, BundleHeader, RoundId, RoundSpec},
    seal::SealedBox,
    NodeIdentity,
};
use serde::{Deserialize, Serialize};

use super::{Closed, Code, LiveRound, NettingError};
use crate::keystore::{
    StateStore, MAX_NETTING_RECORD, NETTING_BUNDLE_PREFIX, NETTING_ROUND_PREFIX,
};

const RECORD_VERSION: u8 = 1;

#[derive(Serialize, Deserialize)]
struct RoundRecord {
    version: u8,
    spec: RoundSpec,
    authorization: RoundAuthorization,
    closed: Option<Vec<Option<[u8; 32]>>>,
    settle_attempts: u32,
}

#[derive(Serialize, Deserialize)]
struct BundleRecord {
    version: u8,
    header: BundleHeader,
    sealed: SealedBox,
}

fn round_name(id: &RoundId) -> String {
    format!("{NETTING_ROUND_PREFIX}{id}")
}

fn bundle_name(id: &RoundId, party: u32) -> String {
    format!("{NETTING_BUNDLE_PREFIX}{id}/{party}")
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, NettingError> {
    postcard::to_allocvec(value).map_err(|e| NettingError::Corrupt {
        record: "netting".into(),
        reason: format!("does not encode: {e}"),
    })
}

fn write_round(
    state: &StateStore,
    live: &LiveRound,
    closed: Option<Vec<Option<[u8; 32]>>>,
    settle_attempts: u32,
) -> Result<(), NettingError> {
    let record = RoundRecord {
        version: RECORD_VERSION,
        spec: live.spec().clone(),
        authorization: live.authorization.clone(),
        closed,
        settle_attempts,
    };
    state.put_netting(&round_name(&live.spec().id), encode(&record)?)?;
    Ok(())
}

/// Stores a round as it is now.
pub(super) fn put_round(state: &StateStore, live: &LiveRound) -> Result<(), NettingError> {
    let closed = live.closed.as_ref().map(|c| c.inputs.clone());
    write_round(state, live, closed, live.settle_attempts)
}

/// Stores a round as closed on `inputs`.
pub(super) fn put_round_closing(
    state: &StateStore,
    live: &LiveRound,
    inputs: &[Option<[u8; 32]>],
) -> Result<(), NettingError> {
    write_round(state, live, Some(inputs.to_vec()), live.settle_attempts)
}

/// Stores a round with `attempts` settlement sessions started.
pub(super) fn put_settle_attempts(
    state: &StateStore,
    live: &LiveRound,
    attempts: u32,
) -> Result<(), NettingError> {
    let closed = live.closed.as_ref().map(|c| c.inputs.clone());
    write_round(state, live, closed, attempts)
}

/// Encodes a bundle record, refusing one the keystore cannot hold (`bad_bundle`).
pub(super) fn bundle_record(
    header: &BundleHeader,
    sealed: &SealedBox,
) -> Result<Vec<u8>, NettingError> {
    let bytes = encode(&BundleRecord {
        version: RECORD_VERSION,
        header: header.clone(),
        sealed: sealed.clone(),
    })?;
    if bytes.len() > MAX_NETTING_RECORD {
        return Err(NettingError::refused(
            Code::BadBundle,
            format!(
                "bundle of party index {} is {} bytes; the keystore holds at most {MAX_NETTING_RECORD} bytes per record",
                header.party,
                bytes.len()
            ),
        ));
    }
    Ok(bytes)
}

/// Stores an encoded bundle record.
pub(super) fn put_bundle(
    state: &StateStore,
    id: &RoundId,
    party: u32,
    record: Vec<u8>,
) -> Result<(), NettingError> {
    state.put_netting(&bundle_name(id, party), record)?;
    Ok(())
}

fn corrupt(name: &str, reason: impl Into<String>) -> NettingError {
    NettingError::Corrupt {
        record: name.to_owned(),
        reason: reason.into(),
    }
}

/// Rebuilds every stored round. A record that does not decode is a local fault
/// (the node does not start); a stored bundle that no longer verifies, or a close
/// that no longer succeeds, is logged and left out (the round goes on without it).
pub(super) fn restore(
    state: &StateStore,
    identity: &NodeIdentity,
) -> Result<BTreeMap<RoundId, LiveRound>, NettingError> {
    let mut records: BTreeMap<RoundId, RoundRecord> = BTreeMap::new();
    let mut bundles: BTreeMap<RoundId, Vec<BundleRecord>> = BTreeMap::new();
    for (name, plain) in state.netting_records()? {
        if let Some(hex_id) = name.strip_prefix(NETTING_ROUND_PREFIX) {
            let r: RoundRecord =
                postcard::from_bytes(&plain).map_err(|e| corrupt(&name, e.to_string()))?;
            if r.version != RECORD_VERSION || r.spec.id.to_string() != hex_id {
                return Err(corrupt(&name, "version or round id does not match"));
            }
            records.insert(r.spec.id, r);
        } else if let Some(rest) = name.strip_prefix(NETTING_BUNDLE_PREFIX) {
            let b: BundleRecord =
                postcard::from_bytes(&plain).map_err(|e| corrupt(&name, e.to_string()))?;
            if b.version != RECORD_VERSION
                || rest != format!("{}/{}", b.header.round, b.header.party)
            {
                return Err(corrupt(&name, "version, round or party does not match"));
            }
            bundles.entry(b.header.round).or_default().push(b);
        }
    }
    let mut rounds = BTreeMap::new();
    for (id, r) in records {
        let mut round = match NodeRound::new(r.spec) {
            Ok(round) => round,
            Err(e) => {
                tracing::error!(round = %id, error = %e, "stored netting round no longer validates; left out");
                continue;
            }
        };
        for b in bundles.remove(&id).unwrap_or_default() {
            if let Err(e) = round.accept_bundle(b.header.signed_at, identity, &b.header, &b.sealed)
            {
                tracing::error!(round = %id, party = b.header.party, error = %e, "stored netting bundle no longer verifies; left out");
            }
        }
        let closed = r.closed.and_then(|inputs| match round.close(identity, &inputs) {
            Ok(outputs) => Some(Closed { inputs, outputs }),
            Err(e) => {
                tracing::error!(round = %id, error = %e, "stored netting close no longer succeeds; round left open");
                None
            }
        });
        rounds.insert(
            id,
            LiveRound {
                round,
                authorization: r.authorization,
                closed,
                settle_attempts: r.settle_attempts,
                refusals_recorded: 0,
                settle_refusals_recorded: 0,
                limits: None,
            },
        );
    }
    for id in bundles.keys() {
        tracing::warn!(round = %id, "netting bundles without their round record ignored");
    }
    Ok(rounds)
}
