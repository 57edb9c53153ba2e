//! Identifier newtypes: node identities, key ids and session ids are distinct types
//! so one can never be passed where another is expected.

use core::fmt;

use serde::{Deserialize, Serialize};

macro_rules! hex_id {
    ($(#[$meta:meta])* $name:ident, $len:expr) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub struct $name(pub [u8; $len]);

        impl $name {
            /// The raw bytes.
            pub fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }

            /// Parses the lowercase or uppercase hex form written by `Display`.
            pub fn from_hex(s: &str) -> Result<Self, crate::ProtocolError> {
                let mut out = [0u8; $len];
                hex::decode_to_slice(s, &mut out).map_err(|_| {
                    crate::ProtocolError::Malformed(concat!(
                        stringify!($name),
                        " must be ",
                        stringify!($len),
                        " bytes of hex"
                    ))
                })?;
                Ok(Self(out))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&hex::encode(self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                // Short form keeps logs readable; Display gives the full value.
                write!(f, "{}({}…)", stringify!($name), &hex::encode(&self.0[..4]))
            }
        }
    };
}

hex_id!(
    /// A node's identity: its Ed25519 public key, which verifies every envelope it sends.
    NodeId,
    32
);
hex_id!(
    /// Identifies a group key (one DKG outcome) across the network.
    KeyId,
    16
);
hex_id!(
    /// Identifies one protocol run (a DKG or a signing attempt). Chosen by the
    /// initiator; every message of the run carries it.
    SessionId,
    32
);
