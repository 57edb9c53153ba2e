//! The results of a DKG: a node's secret key share and the group's public data.

use std::collections::BTreeMap;

use frost_core::{
    keys::{KeyPackage, PublicKeyPackage},
    Signature, VerifyingKey,
};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::{
    dispatch,
    error::ProtocolError,
    ids::{KeyId, NodeId},
    suite::{Ciphersuite, Suite},
};

/// Public data of a group key: what a coordinator and verifiers need.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupPublic {
    /// Ciphersuite.
    pub suite: Ciphersuite,
    /// Key id.
    pub key_id: KeyId,
    /// Minimum number of signers.
    pub threshold: u16,
    /// Participants and their FROST indices.
    pub members: BTreeMap<NodeId, u16>,
    /// Serialized group verifying key (for secp256k1-tr: the BIP341 output key).
    pub verifying_key: Vec<u8>,
    /// Serialized `frost_core::keys::PublicKeyPackage` (verifying shares).
    pub public_key_package: Vec<u8>,
}

/// A finished signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureBytes {
    /// Ciphersuite.
    pub suite: Ciphersuite,
    /// Serialized signature: 64 bytes (Ed25519 R‖s; BIP340 x(R)‖s) or 65 (SEC1 R‖s).
    pub signature: Vec<u8>,
    /// Serialized verifying key the signature verifies under (tweaked if a tweak was used).
    pub verifying_key: Vec<u8>,
}

impl GroupPublic {
    pub(crate) fn package<C: Suite>(&self) -> Result<PublicKeyPackage<C>, ProtocolError> {
        PublicKeyPackage::<C>::deserialize(&self.public_key_package)
            .map_err(|_| ProtocolError::Malformed("public key package"))
    }

    /// The verifying key signatures made with `tweak` verify under.
    pub fn output_key(&self, tweak: Option<&[u8; 32]>) -> Result<Vec<u8>, ProtocolError> {
        dispatch!(self.suite, C => {
            let pkp = C::tweak_public(self.package::<C>()?, tweak)?;
            pkp.verifying_key()
                .serialize()
                .map_err(|e| ProtocolError::Crypto(e.to_string()))
        })
    }

    /// Verifies a signature with frost-core's verifier for this suite.
    pub fn verify(
        &self,
        message: &[u8],
        signature: &[u8],
        tweak: Option<&[u8; 32]>,
    ) -> Result<(), ProtocolError> {
        dispatch!(self.suite, C => {
            let key = VerifyingKey::<C>::deserialize(&self.output_key(tweak)?)
                .map_err(|_| ProtocolError::Malformed("verifying key"))?;
            let sig = Signature::<C>::deserialize(signature)
                .map_err(|_| ProtocolError::Malformed("signature"))?;
            key.verify(message, &sig)
                .map_err(|_| ProtocolError::Crypto("signature does not verify".into()))
        })
    }
}

/// A node's share of a group key. Secret: zeroized on drop, never printed.
#[derive(Clone, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct KeyShare {
    /// The group's public data.
    #[zeroize(skip)]
    pub public: GroupPublic,
    /// This node's FROST index.
    #[zeroize(skip)]
    pub index: u16,
    key_package: Vec<u8>,
}

impl core::fmt::Debug for KeyShare {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("KeyShare")
            .field("key_id", &self.public.key_id)
            .field("suite", &self.public.suite)
            .field("index", &self.index)
            .field("key_package", &"<secret>")
            .finish()
    }
}

impl KeyShare {
    /// Wraps a FROST key package and its public package.
    ///
    /// # Security
    /// Copies the signing share into this value, which zeroizes it on drop.
    pub fn from_frost<C: Suite>(
        key_id: KeyId,
        members: BTreeMap<NodeId, u16>,
        index: u16,
        key_package: &KeyPackage<C>,
        public: &PublicKeyPackage<C>,
    ) -> Result<Self, ProtocolError> {
        let crypto = |e: frost_core::Error<C>| ProtocolError::Crypto(e.to_string());
        Ok(Self {
            public: GroupPublic {
                suite: C::SUITE,
                key_id,
                threshold: *key_package.min_signers(),
                members,
                verifying_key: public.verifying_key().serialize().map_err(crypto)?,
                public_key_package: public.serialize().map_err(crypto)?,
            },
            index,
            key_package: key_package.serialize().map_err(crypto)?,
        })
    }

    /// The FROST key package.
    ///
    /// # Security
    /// Returns the secret signing share; the caller must not log or persist it
    /// unsealed. `KeyPackage` zeroizes itself on drop.
    pub fn key_package<C: Suite>(&self) -> Result<KeyPackage<C>, ProtocolError> {
        if self.public.suite != C::SUITE {
            return Err(ProtocolError::InvalidParameters(format!(
                "key share is {}, not {}",
                self.public.suite,
                C::SUITE
            )));
        }
        KeyPackage::<C>::deserialize(&self.key_package)
            .map_err(|_| ProtocolError::Malformed("key package"))
    }
}
