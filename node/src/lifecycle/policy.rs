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

#[cfg(test)]
mod tests {
    use crate::policy::Policy;

    const A: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
    const B: &str = "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c";

    fn parse(section: &str) -> Result<Policy, String> {
        Policy::from_toml(&format!("version = 1\n{section}")).map_err(|e| e.to_string())
    }

    #[test]
    fn lifecycle_approvers_parse_and_default_to_refusing_everything() {
        let none = parse("").expect("no section");
        assert_eq!(none.lifecycle().required, 0);
        let p = parse(&format!(
            "[lifecycle]\nrequired = 2\napprovers = {{ alice = \"{A}\", bob = \"{B}\" }}\n"
        ))
        .expect("valid");
        assert_eq!(p.lifecycle().required, 2);
        assert_eq!(
            p.lifecycle().names_of(&p.lifecycle().keys()),
            ["alice", "bob"]
        );
    }

    #[test]
    fn bad_lifecycle_sections_name_the_field() {
        for (section, field) in [
            (format!("[lifecycle]\nrequired = 0\napprovers = {{ a = \"{A}\" }}"), "lifecycle.required"),
            (format!("[lifecycle]\nrequired = 2\napprovers = {{ a = \"{A}\" }}"), "lifecycle.required"),
            ("[lifecycle]\nrequired = 1\napprovers = { a = \"zz\" }".to_string(), "lifecycle.approvers.a"),
            (format!("[lifecycle]\nrequired = 1\napprovers = {{ a = \"{A}\", b = \"{A}\" }}"), "lifecycle.approvers.b"),
            (
                "[lifecycle]\nrequired = 1\napprovers = { a = \"0000000000000000000000000000000000000000000000000000000000000000\" }".to_string(),
                "lifecycle.approvers.a",
            ),
        ] {
            let err = parse(&section).expect_err(&section);
            assert!(err.contains(field), "{section}: {err}");
        }
    }
}
