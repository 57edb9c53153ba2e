//! Byzantine behaviours for fault-injection tests and the simulator.
//!
//! Each function takes an honest message and the misbehaving sender's identity and
//! returns a validly *signed* but malicious message — what a compromised node could
//! send. Honest code never calls these, and the module exists only with the crate's
//! `byzantine` feature (the simulator's; signer nodes are built without it).

use frost_core::keys::dkg::{round1, round2};
use frost_core::keys::SigningShare;
use rand_core::CryptoRngCore;

use crate::{
    dispatch,
    dkg::share_aad,
    error::ProtocolError,
    identity::NodeIdentity,
    seal,
    suite::identifier,
    wire::{Envelope, Payload},
};

fn resign(identity: &NodeIdentity, env: &Envelope, payload: Payload) -> Envelope {
    Envelope::seal(identity, env.suite, env.key, env.session, payload)
}

/// A second, different round-1 package from the same sender (equivocation).
pub fn equivocate_round1(
    identity: &NodeIdentity,
    env: &Envelope,
    index: u16,
    threshold: u16,
    n: u16,
    rng: &mut impl CryptoRngCore,
) -> Result<Envelope, ProtocolError> {
    let package = dispatch!(env.suite, C => {
        let (_, p) = frost_core::keys::dkg::part1::<C, _>(identifier::<C>(index)?, n, threshold, &mut *rng)
            .map_err(|e| ProtocolError::Crypto(e.to_string()))?;
        p.serialize().map_err(|e| ProtocolError::Crypto(e.to_string()))?
    });
    Ok(with_round1_package(identity, env, package))
}

/// `env` (an honest round-1 message) re-signed with another `package` but its own
/// `params` and `start`, so a byzantine variant fails on its content, not on its
/// parameters.
fn with_round1_package(identity: &NodeIdentity, env: &Envelope, package: Vec<u8>) -> Envelope {
    let (params, start) = match &env.payload {
        Payload::DkgRound1 { params, start, .. } => (*params, start.clone()),
        _ => ([0; 32], Vec::new()),
    };
    resign(
        identity,
        env,
        Payload::DkgRound1 {
            params,
            start,
            package,
        },
    )
}

/// The same round-1 commitments with a proof of knowledge that does not verify.
pub fn bad_proof_of_knowledge(
    identity: &NodeIdentity,
    env: &Envelope,
    index: u16,
    threshold: u16,
    n: u16,
    rng: &mut impl CryptoRngCore,
) -> Result<Envelope, ProtocolError> {
    let Payload::DkgRound1 { package, .. } = &env.payload else {
        return Err(ProtocolError::InvalidParameters(
            "not a round-1 message".into(),
        ));
    };
    let package = dispatch!(env.suite, C => {
        let honest = round1::Package::<C>::deserialize(package)
            .map_err(|_| ProtocolError::Malformed("round-1 package"))?;
        let (_, other) = frost_core::keys::dkg::part1::<C, _>(identifier::<C>(index)?, n, threshold, &mut *rng)
            .map_err(|e| ProtocolError::Crypto(e.to_string()))?;
        round1::Package::<C>::new(honest.commitment().clone(), *other.proof_of_knowledge())
            .serialize()
            .map_err(|e| ProtocolError::Crypto(e.to_string()))?
    });
    Ok(with_round1_package(identity, env, package))
}

/// A round-2 share replaced by a random scalar, sealed correctly to the recipient:
/// decryptable, but inconsistent with the sender's commitment.
pub fn corrupt_round2_share(
    identity: &NodeIdentity,
    env: &Envelope,
    recipient_seal_key: &[u8; 32],
    rng: &mut impl CryptoRngCore,
) -> Result<Envelope, ProtocolError> {
    let Payload::DkgRound2 {
        params, recipient, ..
    } = &env.payload
    else {
        return Err(ProtocolError::InvalidParameters(
            "not a round-2 message".into(),
        ));
    };
    let plain = dispatch!(env.suite, C => {
        let share = SigningShare::<C>::deserialize(&scalar_bytes::<C>(&random_scalar::<C>(rng)))
            .map_err(|e| ProtocolError::Crypto(e.to_string()))?;
        round2::Package::<C>::new(share)
            .serialize()
            .map_err(|e| ProtocolError::Crypto(e.to_string()))?
    });
    let aad = share_aad(env.suite, &env.key, &env.session, &env.sender, recipient);
    let sealed = seal::seal(rng, recipient_seal_key, &aad, &plain)?;
    Ok(resign(
        identity,
        env,
        Payload::DkgRound2 {
            params: *params,
            recipient: *recipient,
            sealed,
        },
    ))
}

/// A signature share replaced by a random scalar.
pub fn corrupt_signature_share(
    identity: &NodeIdentity,
    env: &Envelope,
    rng: &mut impl CryptoRngCore,
) -> Result<Envelope, ProtocolError> {
    let share = dispatch!(env.suite, C => {
        let bytes = scalar_bytes::<C>(&random_scalar::<C>(rng));
        frost_core::round2::SignatureShare::<C>::deserialize(&bytes)
            .map_err(|e| ProtocolError::Crypto(e.to_string()))?
            .serialize()
    });
    Ok(resign(identity, env, Payload::SignShare { share }))
}

/// Re-signs `payload` as `identity` in `env`'s context (replay, spoofing and
/// wrong-context experiments build on this).
pub fn forge(identity: &NodeIdentity, env: &Envelope, payload: Payload) -> Envelope {
    resign(identity, env, payload)
}

fn random_scalar<C: frost_core::Ciphersuite>(
    rng: &mut impl CryptoRngCore,
) -> frost_core::Scalar<C> {
    use frost_core::{Field, Group};
    <<C as frost_core::Ciphersuite>::Group as Group>::Field::random(rng)
}

fn scalar_bytes<C: frost_core::Ciphersuite>(s: &frost_core::Scalar<C>) -> Vec<u8> {
    use frost_core::{Field, Group};
    <<C as frost_core::Ciphersuite>::Group as Group>::Field::serialize(s)
        .as_ref()
        .to_vec()
}
