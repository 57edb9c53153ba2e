//! Bitcoin transactions as signing requests (invariant 10: policy sees what is
//! signed).
//!
//! A [`PsbtRequest`] carries a PSBT (BIP174 version 0 or BIP370 version 2) and the
//! indices of the inputs to sign. Every node — and the coordinator, which needs the
//! messages to run sessions — parses it itself ([`analyze`]): each input to sign
//! must carry its `witness_utxo` and spend this key's Taproot output by the key path
//! (the output key is the group key, or the group key tweaked by the input's
//! `tap_merkle_root` with `tap_internal_key` equal to the group key); the BIP341
//! sighash of each is computed here, and those sighashes are the only messages
//! signed. The [`TransactionSummary`] gives policy the real outputs (destination
//! addresses decoded for the request's network, amounts, change recognised as this
//! key's own output), the fee and the virtual size. [`finish`] puts the aggregated
//! signatures into the PSBT (`tap_key_sig`) and, when every input is signed or
//! already final, extracts the network-serialized transaction.
//!
//! Pure functions over bytes: no clock, no randomness, no I/O.

mod analyze;
mod finish;
mod parse;
mod v2;
mod verify;

pub use analyze::{
    analyze, inputs_of_key, sighash_name, InputToSign, OutputSummary, TransactionSummary,
};
pub use finish::{finish, Finished};
pub use verify::{verify_finished, verify_key_path_spends};

use serde::{Deserialize, Serialize};

use crate::error::ProtocolError;

/// Longest PSBT a request may carry (bytes); the whole signed request is further
/// bounded by [`crate::request::MAX_REQUEST_SIZE`].
pub const MAX_PSBT_LEN: usize = 60 * 1024;
/// Most outputs a transaction may have (every one is shown to policy and audit).
pub const MAX_OUTPUTS: usize = 512;
/// Longest address-less output script shown whole (an OP_RETURN's standard
/// limit); longer ones are shown by hash.
pub const MAX_SHOWN_SCRIPT: usize = 83;
/// Most inputs one request may ask to sign.
pub const MAX_INPUTS: usize = crate::request::MAX_MESSAGES;

/// The Bitcoin network a transaction is for: destination addresses are decoded
/// for it, and a node refuses a request whose network is not its policy's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BitcoinNetwork {
    /// Mainnet (`bc1…`). Postcard variant 0.
    Mainnet,
    /// Testnet (`tb1…`). Variant 1.
    Testnet,
    /// Signet (`tb1…`). Variant 2.
    Signet,
    /// Regtest (`bcrt1…`). Variant 3.
    Regtest,
}

impl BitcoinNetwork {
    /// The lowercase name (`mainnet`, `testnet`, `signet`, `regtest`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Mainnet => "mainnet",
            Self::Testnet => "testnet",
            Self::Signet => "signet",
            Self::Regtest => "regtest",
        }
    }

    /// rust-bitcoin's network.
    pub fn to_bitcoin(self) -> bitcoin::Network {
        match self {
            Self::Mainnet => bitcoin::Network::Bitcoin,
            Self::Testnet => bitcoin::Network::Testnet,
            Self::Signet => bitcoin::Network::Signet,
            Self::Regtest => bitcoin::Network::Regtest,
        }
    }
}

impl std::fmt::Display for BitcoinNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for BitcoinNetwork {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "mainnet" | "bitcoin" => Ok(Self::Mainnet),
            "testnet" => Ok(Self::Testnet),
            "signet" => Ok(Self::Signet),
            "regtest" => Ok(Self::Regtest),
            other => Err(format!(
                "unknown Bitcoin network {other:?}: mainnet, testnet, signet or regtest"
            )),
        }
    }
}

/// The body of a `bitcoin_psbt` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PsbtRequest {
    /// The PSBT, binary serialization (BIP174 v0 or BIP370 v2), 1 to
    /// [`MAX_PSBT_LEN`] bytes.
    pub psbt: Vec<u8>,
    /// The network its addresses are for.
    pub network: BitcoinNetwork,
    /// Indices of the inputs to sign: 1 to [`MAX_INPUTS`], strictly increasing.
    pub inputs: Vec<u32>,
}

impl PsbtRequest {
    /// Checks the shape (lengths and index order); [`analyze`] checks the content.
    pub fn validate(&self) -> Result<(), ProtocolError> {
        if self.psbt.is_empty() || self.psbt.len() > MAX_PSBT_LEN {
            return Err(ProtocolError::InvalidRequest(format!(
                "body.psbt: {} bytes; 1 to {MAX_PSBT_LEN}",
                self.psbt.len()
            )));
        }
        if self.inputs.is_empty() || self.inputs.len() > MAX_INPUTS {
            return Err(ProtocolError::InvalidRequest(format!(
                "body.inputs: {} indices; 1 to {MAX_INPUTS}",
                self.inputs.len()
            )));
        }
        if let Some(k) = self.inputs.windows(2).position(|w| w[0] >= w[1]) {
            return Err(ProtocolError::InvalidRequest(format!(
                "body.inputs[{}]: indices must be strictly increasing",
                k + 1
            )));
        }
        Ok(())
    }
}

/// The x-only output key of a secp256k1-tr group verifying key (frost-core's
/// 33-byte compressed encoding, or 32 bytes x-only).
pub fn x_only_key(verifying_key: &[u8]) -> Result<[u8; 32], ProtocolError> {
    let x = match verifying_key.len() {
        33 => &verifying_key[1..],
        32 => verifying_key,
        _ => {
            return Err(ProtocolError::InvalidParameters(
                "verifying key is not a secp256k1 point".into(),
            ))
        }
    };
    let mut out = [0u8; 32];
    out.copy_from_slice(x);
    Ok(out)
}

fn invalid(field: impl std::fmt::Display, why: impl std::fmt::Display) -> ProtocolError {
    ProtocolError::InvalidRequest(format!("{field}: {why}"))
}

#[cfg(test)]
mod tests;
