//! A cache of the public part of FROST round 2, for hosts that run many signers of
//! one signing package in a single process (the simulator).
//!
//! Every signer of a signing package decodes the same package, derives the same
//! binding factors, group commitment and challenge, and only then does a few scalar
//! operations with its own nonces and share. On one host running 67 simulated
//! signers that public part is 67 identical copies of the same work and dominates a
//! simulation's run time. A [`Round2Cache`] given to each of those signers (see
//! [`Signer::with_round2_cache`](crate::Signer::with_round2_cache)) lets the first
//! one compute it and the others reuse it.
//!
//! Only public values are cached, keyed by a digest of everything they are derived
//! from (suite, group key, tweak, package bytes), so a hit returns exactly what the
//! signer would have computed. The signer's own checks (its unaltered commitment,
//! the approved message and tweak, committee members) and its nonce handling are
//! the same with or without a cache. Signer nodes do not use one: a node sees each
//! package once, so it signs with `frost_core::round2::sign` directly. The cached
//! path produces byte-identical shares; `tests/round2_cache.rs` checks that for
//! every suite.

use std::{
    any::Any,
    borrow::Cow,
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
};

use frost_core::{
    keys::KeyPackage, round1::SigningNonces, round2::SignatureShare, BindingFactorList, Challenge,
    GroupCommitment, SigningPackage,
};
use sha2::{Digest, Sha256};

use crate::{error::ProtocolError, suite::Suite};

/// How many packages a cache remembers (oldest forgotten first).
pub const DEFAULT_CAPACITY: usize = 256;

/// Shared, bounded cache of per-package public round-2 values. Cloning shares it.
#[derive(Clone)]
pub struct Round2Cache {
    inner: Arc<Mutex<Entries>>,
}

struct Entries {
    capacity: usize,
    map: HashMap<[u8; 32], Arc<dyn Any + Send + Sync>>,
    order: VecDeque<[u8; 32]>,
    hits: u64,
    misses: u64,
}

impl Default for Round2Cache {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }
}

impl core::fmt::Debug for Round2Cache {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let (hits, misses) = self.counts();
        f.debug_struct("Round2Cache")
            .field("hits", &hits)
            .field("misses", &misses)
            .finish()
    }
}

/// The public values every signer of one package derives identically.
pub(crate) struct Public<C: Suite> {
    /// The decoded signing package.
    pub package: SigningPackage<C>,
    /// False if a suite hook rewrote the package (then nothing here applies).
    usable: bool,
    bindings: BindingFactorList<C>,
    commitment: GroupCommitment<C>,
    challenge: Challenge<C>,
}

impl Round2Cache {
    /// A cache remembering up to `capacity` packages (at least one).
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Entries {
                capacity: capacity.max(1),
                map: HashMap::new(),
                order: VecDeque::new(),
                hits: 0,
                misses: 0,
            })),
        }
    }

    /// (hits, misses) so far.
    pub fn counts(&self) -> (u64, u64) {
        let e = self.lock();
        (e.hits, e.misses)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        // A panic while holding the lock leaves only complete entries behind.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The public values for a package (decoded with `decode`), computed on a miss.
    /// `key` is the signer's (tweaked) key package; `nonces` are only read by the
    /// suite's `pre_sign` hook, exactly as `round2::sign` would.
    pub(crate) fn public<C: Suite>(
        &self,
        package_bytes: &[u8],
        tweak: Option<&[u8; 32]>,
        key: &KeyPackage<C>,
        nonces: &SigningNonces<C>,
        decode: impl FnOnce(&[u8]) -> Result<SigningPackage<C>, ProtocolError>,
    ) -> Result<Arc<Public<C>>, ProtocolError> {
        let vk = key
            .verifying_key()
            .serialize()
            .map_err(|e| ProtocolError::Crypto(e.to_string()))?;
        let mut h = Sha256::new();
        h.update(b"quorate/round2-cache/v1");
        h.update(C::SUITE.name().as_bytes());
        h.update((vk.len() as u64).to_le_bytes());
        h.update(&vk);
        match tweak {
            Some(t) => {
                h.update([1]);
                h.update(t);
            }
            None => h.update([0]),
        }
        h.update(package_bytes);
        let digest: [u8; 32] = h.finalize().into();
        {
            let mut e = self.lock();
            if let Some(hit) = e.map.get(&digest).cloned() {
                if let Ok(public) = hit.downcast::<Public<C>>() {
                    e.hits += 1;
                    return Ok(public);
                }
            }
            e.misses += 1;
        }
        let package = decode(package_bytes)?;
        let crypto = |e: frost_core::Error<C>| ProtocolError::Crypto(e.to_string());
        let (pre_package, _, key) = C::pre_sign(&package, nonces, key).map_err(crypto)?;
        let usable = matches!(pre_package, Cow::Borrowed(_));
        drop(pre_package);
        let bindings = frost_core::compute_binding_factor_list(&package, key.verifying_key(), &[])
            .map_err(crypto)?;
        let commitment =
            frost_core::compute_group_commitment(&package, &bindings).map_err(crypto)?;
        let challenge = C::challenge(
            &commitment.clone().to_element(),
            key.verifying_key(),
            package.message(),
        )
        .map_err(crypto)?;
        let public = Arc::new(Public {
            package,
            usable,
            bindings,
            commitment,
            challenge,
        });
        let mut e = self.lock();
        if !e.map.contains_key(&digest) {
            if e.order.len() >= e.capacity {
                if let Some(old) = e.order.pop_front() {
                    e.map.remove(&old);
                }
            }
            e.order.push_back(digest);
            e.map.insert(digest, public.clone());
        }
        Ok(public)
    }
}

/// FROST round 2 with the public part taken from `public`: the steps of
/// `frost_core::round2::sign`, in the same order and with the same suite hooks.
/// Returns `None` when a suite hook rewrites the signing package (none of ours
/// does), in which case the cached values do not apply and the caller signs
/// without the cache.
///
/// # Security
/// Uses the signer's nonces and key share; the caller consumes the nonces exactly
/// as with `round2::sign` and checks the package first.
pub(crate) fn sign_with<C: Suite>(
    public: &Public<C>,
    nonces: &SigningNonces<C>,
    key: &KeyPackage<C>,
) -> Result<Option<SignatureShare<C>>, ProtocolError> {
    let crypto = |e: frost_core::Error<C>| ProtocolError::Crypto(e.to_string());
    if !public.usable {
        return Ok(None);
    }
    let (package, nonces, key) = C::pre_sign(&public.package, nonces, key).map_err(crypto)?;
    if matches!(package, Cow::Owned(_)) {
        return Ok(None);
    }
    let (package, nonces, key) = (package.as_ref(), nonces.as_ref(), key.as_ref());
    if package.signing_commitments().len() < usize::from(*key.min_signers()) {
        return Err(ProtocolError::Crypto(
            "signing package has fewer commitments than the threshold".into(),
        ));
    }
    let id = key.identifier();
    if package.signing_commitments().get(id) != Some(nonces.commitments()) {
        return Err(ProtocolError::Crypto(
            "signing package does not carry this signer's commitment".into(),
        ));
    }
    let binding = public
        .bindings
        .get(id)
        .cloned()
        .ok_or_else(|| ProtocolError::Crypto("no binding factor for this signer".into()))?;
    let (package, nonces) =
        C::pre_commitment_sign(package, nonces, &public.bindings).map_err(crypto)?;
    if matches!(package, Cow::Owned(_)) {
        return Ok(None);
    }
    let lambda = frost_core::derive_interpolating_value(id, &package).map_err(crypto)?;
    Ok(Some(C::compute_signature_share(
        &public.commitment,
        &nonces,
        binding,
        lambda,
        key,
        public.challenge,
    )))
}
