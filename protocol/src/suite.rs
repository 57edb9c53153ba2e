//! Ciphersuites and the one generic code path over them.
//!
//! The suite is chosen at run time ([`Ciphersuite`], carried in key metadata and in
//! every envelope); the state machines are generic over [`Suite`] and the run-time
//! value picks the instantiation with [`dispatch!`](crate::dispatch).

use core::fmt;

use frost_core::{
    keys::{KeyPackage, PublicKeyPackage},
    Identifier,
};
use serde::{Deserialize, Serialize};

use crate::error::ProtocolError;

/// The signature schemes quorate threshold-signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Ciphersuite {
    /// FROST(secp256k1, SHA-256) as specified in RFC 9591.
    Secp256k1,
    /// BIP340 Schnorr / BIP341 Taproot over secp256k1 (x-only keys, even-Y handling,
    /// optional script-tree tweak).
    Secp256k1Tr,
    /// FROST(Ed25519, SHA-512) per RFC 9591; signatures verify as plain Ed25519.
    Ed25519,
}

impl Ciphersuite {
    /// Every supported suite, in a fixed order.
    pub const ALL: [Ciphersuite; 3] = [Self::Secp256k1, Self::Secp256k1Tr, Self::Ed25519];

    /// Stable name used in configuration files, APIs and logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::Secp256k1 => "secp256k1",
            Self::Secp256k1Tr => "secp256k1-tr",
            Self::Ed25519 => "ed25519",
        }
    }
}

impl fmt::Display for Ciphersuite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl core::str::FromStr for Ciphersuite {
    type Err = ProtocolError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| {
                ProtocolError::InvalidParameters(format!(
                    "unknown ciphersuite {s:?}; expected one of secp256k1, secp256k1-tr, ed25519"
                ))
            })
    }
}

/// A FROST ciphersuite quorate supports, with the few suite-specific hooks the
/// generic state machines need.
pub trait Suite: frost_core::Ciphersuite + Send + Sync + 'static {
    /// The run-time tag of this suite.
    const SUITE: Ciphersuite;

    /// Applies a signing-time tweak (Taproot script-tree merkle root) to a key
    /// package. Suites without tweak support refuse a tweak.
    ///
    /// # Security
    /// Handles the signer's secret share; the returned package is as secret as the
    /// input and must be dropped (zeroized) after use.
    fn tweak_key_package(
        key: KeyPackage<Self>,
        tweak: Option<&[u8; 32]>,
    ) -> Result<KeyPackage<Self>, ProtocolError>;

    /// Applies the same tweak to the public key package, so aggregation and
    /// verification use the tweaked (output) key.
    fn tweak_public(
        public: PublicKeyPackage<Self>,
        tweak: Option<&[u8; 32]>,
    ) -> Result<PublicKeyPackage<Self>, ProtocolError>;
}

fn no_tweak<T>(value: T, tweak: Option<&[u8; 32]>, suite: Ciphersuite) -> Result<T, ProtocolError> {
    match tweak {
        None => Ok(value),
        Some(_) => Err(ProtocolError::InvalidParameters(format!(
            "ciphersuite {suite} does not support tweaks"
        ))),
    }
}

impl Suite for frost_secp256k1::Secp256K1Sha256 {
    const SUITE: Ciphersuite = Ciphersuite::Secp256k1;
    fn tweak_key_package(
        key: KeyPackage<Self>,
        tweak: Option<&[u8; 32]>,
    ) -> Result<KeyPackage<Self>, ProtocolError> {
        no_tweak(key, tweak, Self::SUITE)
    }
    fn tweak_public(
        public: PublicKeyPackage<Self>,
        tweak: Option<&[u8; 32]>,
    ) -> Result<PublicKeyPackage<Self>, ProtocolError> {
        no_tweak(public, tweak, Self::SUITE)
    }
}

impl Suite for frost_ed25519::Ed25519Sha512 {
    const SUITE: Ciphersuite = Ciphersuite::Ed25519;
    fn tweak_key_package(
        key: KeyPackage<Self>,
        tweak: Option<&[u8; 32]>,
    ) -> Result<KeyPackage<Self>, ProtocolError> {
        no_tweak(key, tweak, Self::SUITE)
    }
    fn tweak_public(
        public: PublicKeyPackage<Self>,
        tweak: Option<&[u8; 32]>,
    ) -> Result<PublicKeyPackage<Self>, ProtocolError> {
        no_tweak(public, tweak, Self::SUITE)
    }
}

impl Suite for frost_secp256k1_tr::Secp256K1Sha256TR {
    const SUITE: Ciphersuite = Ciphersuite::Secp256k1Tr;
    // The DKG output is already the BIP341 key-path output key (frost-secp256k1-tr's
    // `post_dkg` commits to an unspendable script path). A merkle root given here
    // tweaks that key further for script-tree spends.
    fn tweak_key_package(
        key: KeyPackage<Self>,
        tweak: Option<&[u8; 32]>,
    ) -> Result<KeyPackage<Self>, ProtocolError> {
        use frost_secp256k1_tr::keys::Tweak;
        Ok(match tweak {
            None => key,
            Some(root) => key.tweak(Some(root)),
        })
    }
    fn tweak_public(
        public: PublicKeyPackage<Self>,
        tweak: Option<&[u8; 32]>,
    ) -> Result<PublicKeyPackage<Self>, ProtocolError> {
        use frost_secp256k1_tr::keys::Tweak;
        Ok(match tweak {
            None => public,
            Some(root) => public.tweak(Some(root)),
        })
    }
}

/// Converts a participant index to the suite's FROST identifier (non-zero).
pub(crate) fn identifier<C: Suite>(index: u16) -> Result<Identifier<C>, ProtocolError> {
    Identifier::try_from(index).map_err(|_| {
        ProtocolError::InvalidParameters(format!(
            "participant index {index} is not a valid identifier"
        ))
    })
}

/// Runs a generic expression with the concrete FROST ciphersuite type for a
/// run-time [`Ciphersuite`]: `dispatch!(suite, C => expr)`.
#[macro_export]
macro_rules! dispatch {
    ($suite:expr, $c:ident => $body:expr) => {
        match $suite {
            $crate::Ciphersuite::Secp256k1 => {
                type $c = ::frost_secp256k1::Secp256K1Sha256;
                $body
            }
            $crate::Ciphersuite::Secp256k1Tr => {
                type $c = ::frost_secp256k1_tr::Secp256K1Sha256TR;
                $body
            }
            $crate::Ciphersuite::Ed25519 => {
                type $c = ::frost_ed25519::Ed25519Sha512;
                $body
            }
        }
    };
}

/// Declares `enum Inner`: one variant per suite holding `$session<C>` (the generic
/// session of a state machine), so each machine's public type dispatches at run time
/// to one generic implementation.
macro_rules! suite_inner {
    ($session:ident) => {
        enum Inner {
            Secp256k1($session<::frost_secp256k1::Secp256K1Sha256>),
            Secp256k1Tr($session<::frost_secp256k1_tr::Secp256K1Sha256TR>),
            Ed25519($session<::frost_ed25519::Ed25519Sha512>),
        }
    };
}

/// Builds the `Inner` variant for a run-time suite from a generic constructor.
macro_rules! new_inner {
    ($suite:expr, $ctor:expr) => {
        match $suite {
            $crate::Ciphersuite::Secp256k1 => Inner::Secp256k1($ctor),
            $crate::Ciphersuite::Secp256k1Tr => Inner::Secp256k1Tr($ctor),
            $crate::Ciphersuite::Ed25519 => Inner::Ed25519($ctor),
        }
    };
}

/// Runs `$body` with `$s` bound to the generic session inside an `Inner`.
macro_rules! with_inner {
    ($inner:expr, $s:ident => $body:expr) => {
        match $inner {
            Inner::Secp256k1($s) => $body,
            Inner::Secp256k1Tr($s) => $body,
            Inner::Ed25519($s) => $body,
        }
    };
}

pub(crate) use {new_inner, suite_inner, with_inner};
