//! The `[lifecycle]` section of the policy file: which operators may approve
//! refresh and resharing of this node's keys, and how many must.
//!
//! ```toml
//! [lifecycle]
//! required = 2                      # k of the approvers below
//! approvers = { alice = "<hex Ed25519 public key>", bob = "…", carol = "…" }
//! ```
//!
//! Without the section the node refuses every lifecycle operation.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::policy::PolicyError;

/// The section as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LifecycleFile {
    required: usize,
    approvers: BTreeMap<String, String>,
}

/// Validated lifecycle approvers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LifecycleApprovers {
    /// Approvals required (0: lifecycle operations are refused).
    pub required: usize,
    /// Name → Ed25519 public key.
    pub approvers: BTreeMap<String, [u8; 32]>,
}

impl LifecycleApprovers {
    /// The approver keys.
    pub fn keys(&self) -> Vec<[u8; 32]> {
        self.approvers.values().copied().collect()
    }

    /// Names of the approvers among `keys`.
    pub fn names_of(&self, keys: &[[u8; 32]]) -> Vec<String> {
        self.approvers
            .iter()
            .filter(|(_, k)| keys.contains(k))
            .map(|(n, _)| n.clone())
            .collect()
    }
}

fn invalid(field: &str, reason: impl Into<String>) -> PolicyError {
    PolicyError::Invalid {
        client: None,
        field: field.to_owned(),
        reason: reason.into(),
    }
}

pub(crate) fn validate(file: Option<LifecycleFile>) -> Result<LifecycleApprovers, PolicyError> {
    let Some(file) = file else {
        return Ok(LifecycleApprovers::default());
    };
    if file.required == 0 {
        return Err(invalid(
            "lifecycle.required",
            "must be at least 1 (omit [lifecycle] to refuse every lifecycle operation)",
        ));
    }
    if file.required > file.approvers.len() {
        return Err(invalid(
            "lifecycle.required",
            format!(
                "requires {} approvals but only {} approvers are listed",
                file.required,
                file.approvers.len()
            ),
        ));
    }
    let mut approvers = BTreeMap::new();
    for (name, hex_key) in file.approvers {
        let field = format!("lifecycle.approvers.{name}");
        let mut key = [0u8; 32];
        hex::decode_to_slice(&hex_key, &mut key).map_err(|_| {
            invalid(
                &field,
                "must be a 32-byte Ed25519 public key in hex (64 characters)",
            )
        })?;
        let vk = ed25519_dalek::VerifyingKey::from_bytes(&key)
            .map_err(|_| invalid(&field, "is not a valid Ed25519 public key"))?;
        if vk.is_weak() {
            return Err(invalid(&field, "is a weak (small-order) key"));
        }
        if approvers.values().any(|k| *k == key) {
            return Err(invalid(&field, "the same key is listed twice"));
        }
        approvers.insert(name, key);
    }
    Ok(LifecycleApprovers {
        required: file.required,
        approvers,
    })
}
