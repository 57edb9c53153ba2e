//! The devnet's key-lifecycle operators: three approver keys
//! (`operator1.key` … `operator3.key`) and a `[lifecycle]` section in every node's
//! policy requiring two of them, so `quorate client keys propose | approve | apply`
//! work against the devnet out of the box.

use std::path::Path;

use anyhow::Context;
use rand_core::OsRng;

/// Operators the devnet creates.
pub(crate) const OPERATORS: usize = 3;
/// Approvals its nodes require.
pub(crate) const REQUIRED: usize = 2;

/// Creates the operator keys and the policy section if missing (new and older
/// data directories alike).
pub(crate) fn ensure_operators(dir: &Path) -> anyhow::Result<()> {
    let policy = dir.join("policy.toml");
    let text = std::fs::read_to_string(&policy)
        .with_context(|| format!("reading {}", policy.display()))?;
    if text.contains("[lifecycle]") {
        return Ok(());
    }
    let mut approvers = Vec::new();
    for i in 1..=OPERATORS {
        let file = format!("operator{i}.key");
        let path = dir.join(&file);
        if !path.exists() {
            let sk = ed25519_dalek::SigningKey::generate(&mut OsRng);
            super::devnet::write_private(&path, &hex::encode(sk.to_bytes()))?;
        }
        approvers.push(format!(
            "operator{i} = \"{}\"",
            super::devnet::public_of(dir, &file)?
        ));
    }
    let section = format!(
        "\n[lifecycle]\nrequired = {REQUIRED}\napprovers = {{ {} }}\n",
        approvers.join(", ")
    );
    std::fs::write(&policy, format!("{text}{section}"))
        .with_context(|| format!("writing {}", policy.display()))?;
    println!(
        "policy.toml: lifecycle operations need {REQUIRED} of operator1..{OPERATORS} (operatorN.key)"
    );
    Ok(())
}
