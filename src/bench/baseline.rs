//! The in-process limit: what the same signatures cost in bare frost-core on this
//! machine, measured in the same run as the network (issue 12's yardstick).
//!
//! Keys come from a real in-memory DKG (`quorate_protocol::local::run_dkg`, no
//! dealer) of throwaway identities; the shares never leave this function. One
//! signature is `t` × `round1::commit`, the signing package, `t` × `round2::sign`
//! and `frost_core::aggregate`, which verifies the aggregate signature (the check a
//! coordinator makes before answering; shares are checked one by one only when it
//! fails). The limit runs that loop on every core at once.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use anyhow::Context;
use frost_core::{keys::KeyPackage, round1, round2, SigningPackage};
use quorate_protocol::{local, suite::Suite, Ciphersuite, KeyShare};
use rand_core::{OsRng, RngCore};
use serde::Serialize;

/// What the in-process measurement found.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Baseline {
    /// Ciphersuite.
    pub(crate) suite: Ciphersuite,
    /// Signers per signature.
    pub(crate) threshold: u16,
    /// Key holders.
    pub(crate) n: usize,
    /// One signer's round 1 + round 2, µs (mean).
    pub(crate) signer_us: f64,
    /// Aggregation with verification, µs (mean).
    pub(crate) aggregate_us: f64,
    /// One whole signature on one thread, µs (mean).
    pub(crate) signature_us: f64,
    /// Threads of the limit run.
    pub(crate) threads: usize,
    /// Signatures per second with every thread signing.
    pub(crate) limit_per_second: f64,
}

impl Baseline {
    /// The mean of two runs (the run before the load and the run after it).
    pub(crate) fn mean(a: &Self, b: &Self) -> Self {
        let avg = |x: f64, y: f64| (x + y) / 2.0;
        Self {
            signer_us: avg(a.signer_us, b.signer_us),
            aggregate_us: avg(a.aggregate_us, b.aggregate_us),
            signature_us: avg(a.signature_us, b.signature_us),
            limit_per_second: avg(a.limit_per_second, b.limit_per_second),
            ..a.clone()
        }
    }
}

/// Measures the baseline for `suite` at `threshold`-of-`n` for about `seconds`
/// (split between the single-thread cost breakdown and the all-threads limit).
pub(crate) fn measure(
    suite: Ciphersuite,
    threshold: u16,
    n: usize,
    seconds: f64,
) -> anyhow::Result<Baseline> {
    let ids = local::identities(n, &mut OsRng);
    let shares = local::run_dkg(&ids, suite, threshold, &mut OsRng)
        .context("in-memory DKG for the baseline")?;
    let signers: Vec<KeyShare> = shares.into_iter().take(usize::from(threshold)).collect();
    let threads = std::thread::available_parallelism().map_or(1, |p| p.get());
    let half = Duration::from_secs_f64(seconds / 2.0);
    let (signer_us, aggregate_us, signature_us) = dispatch(suite, |f| f.breakdown(&signers, half))?;
    let limit_per_second = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| scope.spawn(|| dispatch(suite, |f| f.count(&signers, half))))
            .collect();
        let mut total = 0.0;
        for h in handles {
            let count = h
                .join()
                .map_err(|_| anyhow::anyhow!("baseline thread panicked"))??;
            total += count;
        }
        anyhow::Ok(total / half.as_secs_f64())
    })?;
    Ok(Baseline {
        suite,
        threshold,
        n,
        signer_us,
        aggregate_us,
        signature_us,
        threads,
        limit_per_second,
    })
}

/// The measurements, per suite type.
struct Fns<C>(std::marker::PhantomData<C>);

/// Runs `f` with the frost-core ciphersuite type of `suite`.
fn dispatch<T>(
    suite: Ciphersuite,
    f: impl FnOnce(&dyn Measure) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    match suite {
        Ciphersuite::Secp256k1 => f(&Fns::<frost_secp256k1::Secp256K1Sha256>(Default::default())),
        Ciphersuite::Secp256k1Tr => f(&Fns::<frost_secp256k1_tr::Secp256K1Sha256TR>(
            Default::default(),
        )),
        Ciphersuite::Ed25519 => f(&Fns::<frost_ed25519::Ed25519Sha512>(Default::default())),
    }
}

trait Measure {
    /// Mean µs of (signer round 1 + round 2, aggregation, whole signature) over `for_`.
    fn breakdown(&self, signers: &[KeyShare], for_: Duration) -> anyhow::Result<(f64, f64, f64)>;
    /// Signatures completed in `for_`.
    fn count(&self, signers: &[KeyShare], for_: Duration) -> anyhow::Result<f64>;
}

/// Time spent in each part of one signature.
#[derive(Default)]
struct Parts {
    signers: Duration,
    aggregate: Duration,
}

impl<C: Suite> Fns<C> {
    fn keys(
        signers: &[KeyShare],
    ) -> anyhow::Result<(Vec<KeyPackage<C>>, frost_core::keys::PublicKeyPackage<C>)> {
        let packages = signers
            .iter()
            .map(|s| s.key_package::<C>())
            .collect::<Result<Vec<_>, _>>()?;
        let bytes = &signers
            .first()
            .context("no signers")?
            .public
            .public_key_package;
        let public = frost_core::keys::PublicKeyPackage::<C>::deserialize(bytes)
            .map_err(|e| anyhow::anyhow!("public key package: {e}"))?;
        Ok((packages, public))
    }

    /// One signature, timing its parts.
    fn sign_once(
        keys: &[KeyPackage<C>],
        public: &frost_core::keys::PublicKeyPackage<C>,
        parts: &mut Parts,
    ) -> anyhow::Result<()> {
        let mut message = [0u8; 32];
        OsRng.fill_bytes(&mut message);
        let started = Instant::now();
        let mut nonces = Vec::with_capacity(keys.len());
        let mut commitments = BTreeMap::new();
        for k in keys {
            let (n, c) = round1::commit(k.signing_share(), &mut OsRng);
            nonces.push(n);
            commitments.insert(*k.identifier(), c);
        }
        let package = SigningPackage::new(commitments, &message);
        let mut shares = BTreeMap::new();
        for (k, n) in keys.iter().zip(&nonces) {
            let share = round2::sign(&package, n, k).map_err(|e| anyhow::anyhow!("sign: {e}"))?;
            shares.insert(*k.identifier(), share);
        }
        let signed = Instant::now();
        frost_core::aggregate(&package, &shares, public)
            .map_err(|e| anyhow::anyhow!("aggregate: {e}"))?;
        parts.signers += signed - started;
        parts.aggregate += signed.elapsed();
        Ok(())
    }
}

impl<C: Suite> Measure for Fns<C> {
    fn breakdown(&self, signers: &[KeyShare], for_: Duration) -> anyhow::Result<(f64, f64, f64)> {
        let (keys, public) = Self::keys(signers)?;
        let mut parts = Parts::default();
        let started = Instant::now();
        let mut count = 0u32;
        while count < 10 || started.elapsed() < for_ {
            Self::sign_once(&keys, &public, &mut parts)?;
            count += 1;
        }
        let total = started.elapsed().as_secs_f64() * 1e6 / f64::from(count);
        let per = |d: Duration| d.as_secs_f64() * 1e6 / f64::from(count);
        Ok((
            per(parts.signers) / keys.len() as f64,
            per(parts.aggregate),
            total,
        ))
    }

    fn count(&self, signers: &[KeyShare], for_: Duration) -> anyhow::Result<f64> {
        let (keys, public) = Self::keys(signers)?;
        let mut parts = Parts::default();
        let started = Instant::now();
        let mut count = 0u64;
        while started.elapsed() < for_ {
            Self::sign_once(&keys, &public, &mut parts)?;
            count += 1;
        }
        Ok(count as f64)
    }
}
