//! A coordinator's bundle of window approvals for one request, checked by every
//! signer before it contributes.

use std::collections::BTreeSet;

use serde::{Deserialize, Deserializer, Serialize};

use super::approval::{WindowApproval, WINDOW_STATEMENT_VERSION};
use crate::{error::ProtocolError, ids::NodeId, key::GroupPublic};

/// Most approvals one certificate carries (a committee has at most 255 members).
pub const MAX_CERTIFICATE_APPROVALS: usize = 255;

/// Window approvals of one request (empty: no certificate). At most
/// [`MAX_CERTIFICATE_APPROVALS`], refused on decode before more are read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowCertificate {
    /// The approvals, in any order.
    #[serde(deserialize_with = "bounded_approvals")]
    pub approvals: Vec<WindowApproval>,
}

fn bounded_approvals<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<WindowApproval>, D::Error> {
    struct Bounded;
    impl<'de> serde::de::Visitor<'de> for Bounded {
        type Value = Vec<WindowApproval>;
        fn expecting(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            write!(f, "at most {MAX_CERTIFICATE_APPROVALS} window approvals")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            if seq
                .size_hint()
                .is_some_and(|n| n > MAX_CERTIFICATE_APPROVALS)
            {
                return Err(serde::de::Error::invalid_length(
                    seq.size_hint().unwrap_or_default(),
                    &self,
                ));
            }
            let mut out = Vec::new();
            while let Some(a) = seq.next_element()? {
                if out.len() == MAX_CERTIFICATE_APPROVALS {
                    return Err(serde::de::Error::invalid_length(out.len() + 1, &self));
                }
                out.push(a);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(Bounded)
}

impl WindowCertificate {
    /// Whether no approval is attached.
    pub fn is_empty(&self) -> bool {
        self.approvals.is_empty()
    }

    /// Counts the distinct members of `key`'s committee with a valid approval of
    /// `request_hash` under `key`'s id, and requires at least `quorum` of them.
    ///
    /// - an approval naming a member whose signature does not verify is a forgery:
    ///   `CertificateForged` naming that node (whoever assembled the certificate
    ///   tampered with it);
    /// - a valid approval of another request or key, of another statement version,
    ///   or by a node outside the committee does not count;
    /// - a member approving twice counts once.
    ///
    /// Returns the counted members in ascending order, or `CertificateShort` with
    /// the count and `quorum`. At most [`MAX_CERTIFICATE_APPROVALS`] signature
    /// checks.
    pub fn verify(
        &self,
        request_hash: &[u8; 32],
        key: &GroupPublic,
        quorum: u16,
    ) -> Result<Vec<NodeId>, ProtocolError> {
        if self.approvals.len() > MAX_CERTIFICATE_APPROVALS {
            return Err(ProtocolError::Malformed(
                "window certificate holds more than 255 approvals",
            ));
        }
        let mut counted = BTreeSet::new();
        for a in &self.approvals {
            let s = &a.statement;
            if !key.members.contains_key(&s.node) {
                continue;
            }
            if a.verify_signature().is_err() {
                return Err(ProtocolError::CertificateForged { node: s.node });
            }
            if s.version != WINDOW_STATEMENT_VERSION
                || &s.request_hash != request_hash
                || s.key_id != key.key_id
            {
                continue;
            }
            counted.insert(s.node);
        }
        if counted.len() < usize::from(quorum) {
            return Err(ProtocolError::CertificateShort {
                have: counted.len(),
                need: usize::from(quorum),
            });
        }
        Ok(counted.into_iter().collect())
    }
}
