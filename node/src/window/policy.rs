//! `window_quorum` in a client's asset limits: how many members of a key's
//! committee must approve a request for the window before this node signs it.
//!
//! ```toml
//! [clients.exchange-a.limits.BTC]
//! per_request = 50_000_000
//! per_window = 200_000_000
//! window_quorum = "all"        # or an integer 1..=255; absent: no certificate
//! ```

use serde::Deserialize;

use crate::policy::PolicyError;

/// The value as written: an integer or the string `"all"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum QuorumFile {
    /// `window_quorum = 4`.
    Count(i64),
    /// `window_quorum = "all"`.
    Word(String),
}

/// A validated window quorum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowQuorum {
    /// This many distinct committee members (1 to 255).
    Count(u16),
    /// Every member of the key's committee (`"all"`).
    All,
}

impl WindowQuorum {
    /// The approvals needed for a key with `members` committee members. A
    /// [`WindowQuorum::Count`] above `members` can never be met (the policy
    /// refuses such requests: rule `window_quorum`).
    pub fn needed(self, members: usize) -> usize {
        match self {
            Self::Count(q) => usize::from(q),
            Self::All => members,
        }
    }

    /// As written in the policy file (for messages).
    pub fn describe(self) -> String {
        match self {
            Self::Count(q) => q.to_string(),
            Self::All => "\"all\"".into(),
        }
    }
}

pub(crate) fn validate(
    client: &str,
    field: &str,
    file: Option<QuorumFile>,
) -> Result<Option<WindowQuorum>, PolicyError> {
    let invalid = |reason: String| PolicyError::Invalid {
        client: Some(client.to_owned()),
        field: format!("{field}.window_quorum"),
        reason,
    };
    match file {
        None => Ok(None),
        Some(QuorumFile::Word(w)) if w == "all" => Ok(Some(WindowQuorum::All)),
        Some(QuorumFile::Word(w)) => Err(invalid(format!(
            "{w:?} is not a quorum; write an integer 1 to 255 or \"all\""
        ))),
        Some(QuorumFile::Count(q)) => match u16::try_from(q) {
            Ok(q @ 1..=255) => Ok(Some(WindowQuorum::Count(q))),
            _ => Err(invalid(format!(
                "{q} is out of range; write an integer 1 to 255 or \"all\" (omit it for no certificate)"
            ))),
        },
    }
}
