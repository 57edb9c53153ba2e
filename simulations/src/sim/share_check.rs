//! ROAST's per-share check on the coordinator.
//!
//! ROAST verifies every signature share the moment it arrives: a valid share makes
//! its signer responsive again, an invalid one marks it malicious. The protocol's
//! [`Aggregator`](quorate_protocol::Aggregator) checks shares only all together,
//! once the last one is in (FROST aggregation with cheater detection), so the
//! simulated coordinator checks each share itself with frost-core's
//! `verify_signature_share_precomputed`: the session's binding factors, group
//! commitment and challenge are derived once (what `verify_signature_share` derives
//! on every call, with the same suite hooks), and each share then costs a few
//! scalar multiplications. The aggregator still verifies the final signature.

use std::collections::BTreeMap;

use frost_core::{
    keys::{PublicKeyPackage, VerifyingShare},
    round1::SigningCommitments,
    round2::SignatureShare,
    BindingFactorList, Challenge, Ciphersuite, GroupCommitment, Identifier, SigningPackage,
};
use quorate_protocol::{presign::PresignRef, suite::Suite, GroupPublic, NodeId};

/// A key's decoded public key package (verifying shares), decoded once per key.
pub(crate) struct GroupKeys {
    inner: Keys,
}

enum Keys {
    Secp256k1(PublicKeyPackage<frost_secp256k1::Secp256K1Sha256>),
    Secp256k1Tr(PublicKeyPackage<frost_secp256k1_tr::Secp256K1Sha256TR>),
    Ed25519(PublicKeyPackage<frost_ed25519::Ed25519Sha512>),
}

impl GroupKeys {
    /// Decodes `public`'s key package (after the suite's aggregation hook, as
    /// `frost_core::verify_signature_share` applies it).
    pub(crate) fn new(public: &GroupPublic) -> Result<Self, String> {
        fn decode<C: Suite>(public: &GroupPublic) -> Result<PublicKeyPackage<C>, String> {
            let err = |e: frost_core::Error<C>| e.to_string();
            let pkp =
                PublicKeyPackage::<C>::deserialize(&public.public_key_package).map_err(err)?;
            // For secp256k1-tr an even-y key package; the other suites change nothing.
            // The hook ignores the (empty) package and shares for all three suites.
            let package = SigningPackage::new(BTreeMap::new(), &[]);
            let none = BTreeMap::new();
            let (_, _, pkp) = C::pre_aggregate(&package, &none, &pkp).map_err(err)?;
            Ok(pkp.into_owned())
        }
        use quorate_protocol::Ciphersuite as S;
        let inner = match public.suite {
            S::Secp256k1 => Keys::Secp256k1(decode(public)?),
            S::Secp256k1Tr => Keys::Secp256k1Tr(decode(public)?),
            S::Ed25519 => Keys::Ed25519(decode(public)?),
        };
        Ok(Self { inner })
    }
}

/// The values every share check of one session needs, for suite `C`.
struct Check<C: Suite> {
    package: SigningPackage<C>,
    bindings: BindingFactorList<C>,
    commitment: GroupCommitment<C>,
    challenge: Challenge<C>,
    signers: BTreeMap<NodeId, (Identifier<C>, VerifyingShare<C>)>,
}

enum Inner {
    Secp256k1(Check<frost_secp256k1::Secp256K1Sha256>),
    Secp256k1Tr(Check<frost_secp256k1_tr::Secp256K1Sha256TR>),
    Ed25519(Check<frost_ed25519::Ed25519Sha512>),
}

/// Checks the shares of one presigned session as they arrive.
pub(crate) struct ShareCheck {
    inner: Inner,
}

impl ShareCheck {
    /// Prepares the checks of a session signing `message` (no tweak) with the
    /// presigned commitments `refs` under the key `public` (decoded in `keys`).
    pub(crate) fn new(
        public: &GroupPublic,
        keys: &GroupKeys,
        refs: &BTreeMap<NodeId, PresignRef>,
        message: &[u8],
    ) -> Result<Self, String> {
        let inner = match &keys.inner {
            Keys::Secp256k1(k) => Inner::Secp256k1(Check::new(public, k, refs, message)?),
            Keys::Secp256k1Tr(k) => Inner::Secp256k1Tr(Check::new(public, k, refs, message)?),
            Keys::Ed25519(k) => Inner::Ed25519(Check::new(public, k, refs, message)?),
        };
        Ok(Self { inner })
    }

    /// True when `share` (serialized) is `node`'s valid share of this session.
    pub(crate) fn valid(&self, node: &NodeId, share: &[u8]) -> bool {
        match &self.inner {
            Inner::Secp256k1(c) => c.valid(node, share),
            Inner::Secp256k1Tr(c) => c.valid(node, share),
            Inner::Ed25519(c) => c.valid(node, share),
        }
    }
}

impl<C: Suite> Check<C> {
    fn new(
        public: &GroupPublic,
        pkp: &PublicKeyPackage<C>,
        refs: &BTreeMap<NodeId, PresignRef>,
        message: &[u8],
    ) -> Result<Self, String> {
        let err = |e: frost_core::Error<C>| e.to_string();
        let mut ids = BTreeMap::new();
        let mut commitments = BTreeMap::new();
        for (node, r) in refs {
            let index = public
                .members
                .get(node)
                .ok_or_else(|| format!("{node} holds no share of the key"))?;
            let id = Identifier::<C>::try_from(*index).map_err(err)?;
            let c = SigningCommitments::<C>::deserialize(&r.commitments).map_err(err)?;
            ids.insert(*node, id);
            commitments.insert(id, c);
        }
        // As `frost_core::verify_signature_share` (its `pre_aggregate` hook was
        // applied to the key package in `GroupKeys::new`; it leaves packages and
        // shares unchanged in all three suites).
        let package = SigningPackage::new(commitments, message);
        let bindings = frost_core::compute_binding_factor_list(&package, pkp.verifying_key(), &[])
            .map_err(err)?;
        let package = C::pre_commitment_aggregate(&package, &bindings)
            .map_err(err)?
            .into_owned();
        let commitment = frost_core::compute_group_commitment(&package, &bindings).map_err(err)?;
        let challenge = <C as Ciphersuite>::challenge(
            &commitment.clone().to_element(),
            pkp.verifying_key(),
            package.message(),
        )
        .map_err(err)?;
        let mut signers = BTreeMap::new();
        for (node, id) in ids {
            let share = pkp
                .verifying_shares()
                .get(&id)
                .ok_or_else(|| format!("no verifying share for {node}"))?;
            signers.insert(node, (id, *share));
        }
        Ok(Self {
            package,
            bindings,
            commitment,
            challenge,
            signers,
        })
    }

    fn valid(&self, node: &NodeId, share: &[u8]) -> bool {
        let Some((id, verifying)) = self.signers.get(node) else {
            return false;
        };
        let Ok(share) = SignatureShare::<C>::deserialize(share) else {
            return false;
        };
        frost_core::verify_signature_share_precomputed(
            *id,
            &self.package,
            &self.bindings,
            &self.commitment,
            &share,
            verifying,
            self.challenge,
        )
        .is_ok()
    }
}
