//! A node's long-term identity: an Ed25519 key that signs every envelope it sends
//! and an X25519 key that others seal secret payloads to.

use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use rand_core::CryptoRngCore;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use crate::{error::ProtocolError, ids::NodeId};

/// The secret half of a node identity. Never printed; both keys zeroize themselves
/// on drop (ed25519-dalek and x25519-dalek `zeroize` features).
#[derive(Clone)]
pub struct NodeIdentity {
    signing: SigningKey,
    sealing: x25519_dalek::StaticSecret,
}

impl core::fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "NodeIdentity({:?}, <secret>)", self.node_id())
    }
}

/// The public half, as it appears in a roster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicIdentity {
    /// Ed25519 public key; also the node id.
    pub node: NodeId,
    /// X25519 public key that secret payloads are sealed to.
    pub seal_key: [u8; 32],
}

impl NodeIdentity {
    /// Generates a fresh identity.
    ///
    /// # Security
    /// `rng` must be a cryptographically secure generator (the OS generator in
    /// production; seeded generators only in tests and the simulator).
    pub fn generate(rng: &mut impl CryptoRngCore) -> Self {
        let signing = SigningKey::generate(rng);
        let sealing = x25519_dalek::StaticSecret::random_from_rng(&mut *rng);
        Self { signing, sealing }
    }

    /// Rebuilds an identity from its 64-byte secret encoding (see [`Self::to_secret_bytes`]).
    ///
    /// # Security
    /// The input is secret key material; the caller should zeroize its copy.
    pub fn from_secret_bytes(bytes: &[u8; 64]) -> Self {
        let mut sign = [0u8; 32];
        let mut seal = [0u8; 32];
        sign.copy_from_slice(&bytes[..32]);
        seal.copy_from_slice(&bytes[32..]);
        let me = Self {
            signing: SigningKey::from_bytes(&sign),
            sealing: x25519_dalek::StaticSecret::from(seal),
        };
        sign.zeroize();
        seal.zeroize();
        me
    }

    /// The 64-byte secret encoding (Ed25519 seed ‖ X25519 secret), for a sealed keystore.
    ///
    /// # Security
    /// Returns secret key material in a zeroizing buffer; seal it before it leaves memory.
    pub fn to_secret_bytes(&self) -> Zeroizing<[u8; 64]> {
        let mut out = Zeroizing::new([0u8; 64]);
        out[..32].copy_from_slice(&self.signing.to_bytes());
        out[32..].copy_from_slice(self.sealing.as_bytes());
        out
    }

    /// This node's id (its Ed25519 public key).
    pub fn node_id(&self) -> NodeId {
        NodeId(self.signing.verifying_key().to_bytes())
    }

    /// The public identity to publish in a roster.
    pub fn public(&self) -> PublicIdentity {
        PublicIdentity {
            node: self.node_id(),
            seal_key: x25519_dalek::PublicKey::from(&self.sealing).to_bytes(),
        }
    }

    pub(crate) fn sign(&self, digest: &[u8]) -> ed25519_dalek::Signature {
        self.signing.sign(digest)
    }

    /// A secret 32-byte seed for `context`, derived from the identity key with
    /// HKDF-SHA256: deterministic per (identity, context), unpredictable to others.
    ///
    /// # Security
    /// The seed is secret; use it only to seed a generator for this context.
    pub(crate) fn derive_seed(&self, context: &[u8]) -> Zeroizing<[u8; 32]> {
        let seed = Zeroizing::new(self.signing.to_bytes());
        let hk =
            hkdf::Hkdf::<sha2::Sha256>::new(Some(b"quorate/identity-derive/v1"), seed.as_ref());
        let mut out = Zeroizing::new([0u8; 32]);
        // 32 bytes is always a valid HKDF-SHA256 output length.
        let _ = hk.expand(context, out.as_mut());
        out
    }

    /// A secret 32-byte key shared with the node whose sealing key is `peer`:
    /// HKDF-SHA256 over the X25519 Diffie–Hellman secret of the two sealing keys,
    /// with `context` and both public keys (in sorted order) as info. Both nodes
    /// derive the same key; nobody else can. `None` when `peer` is a low-order point.
    ///
    /// # Security
    /// The key is secret; use it only for `context`.
    pub(crate) fn pairwise_key(
        &self,
        peer: &[u8; 32],
        context: &[u8],
    ) -> Option<Zeroizing<[u8; 32]>> {
        let shared = self
            .sealing
            .diffie_hellman(&x25519_dalek::PublicKey::from(*peer));
        if !shared.was_contributory() {
            return None;
        }
        let me = x25519_dalek::PublicKey::from(&self.sealing).to_bytes();
        let (lo, hi) = if me <= *peer {
            (me, *peer)
        } else {
            (*peer, me)
        };
        let hk = hkdf::Hkdf::<sha2::Sha256>::new(Some(b"quorate/pairwise/v1"), shared.as_bytes());
        let mut info = context.to_vec();
        info.extend_from_slice(&lo);
        info.extend_from_slice(&hi);
        let mut out = Zeroizing::new([0u8; 32]);
        let _ = hk.expand(&info, out.as_mut());
        Some(out)
    }

    pub(crate) fn sealing_secret(&self) -> &x25519_dalek::StaticSecret {
        &self.sealing
    }

    /// Opens a box sealed to this node's X25519 key with associated data `aad`
    /// (`None` when it was not sealed to us in this context or was altered).
    ///
    /// # Security
    /// Returns the secret plaintext in a zeroizing buffer.
    pub fn open_sealed(
        &self,
        aad: &[u8],
        sealed: &crate::seal::SealedBox,
    ) -> Option<Zeroizing<Vec<u8>>> {
        crate::seal::open(&self.sealing, aad, sealed)
    }
}

/// Verifies an Ed25519 signature by `node` (strict: rejects small-order keys and
/// malleable signatures).
pub(crate) fn verify(
    node: &NodeId,
    digest: &[u8],
    signature: &ed25519_dalek::Signature,
) -> Result<(), ProtocolError> {
    let key = VerifyingKey::from_bytes(node.as_bytes())
        .map_err(|_| ProtocolError::BadSignature { claimed: *node })?;
    if key.is_weak() {
        return Err(ProtocolError::BadSignature { claimed: *node });
    }
    // verify_strict also rejects non-canonical and small-order R: one check suffices.
    key.verify_strict(digest, signature)
        .map_err(|_| ProtocolError::BadSignature { claimed: *node })
}
