//! Identities and initial key shares.
//!
//! Signing workloads need keys before they start. By default a trusted dealer
//! splits a fresh key (fast at any size; the simulator is the one place besides
//! tests where a dealer exists). `key_setup = "dkg"` runs the real DKG in memory
//! instead (slow for large committees: O(n²) verifications per participant).

use std::{collections::BTreeMap, sync::Arc};

use frost_core::keys::{IdentifierList, KeyPackage};
use quorate_protocol::{
    dispatch, local, Ciphersuite, Committee, KeyId, KeyShare, NodeIdentity, ProtocolError,
};
use rand_chacha::ChaCha20Rng;
use rand_core::RngCore;

use crate::{
    error::SimError,
    scenario::{KeySetup, Scenario},
    topology::Topology,
};

/// One committee's public layout and (for signing workloads) its key shares.
pub(crate) struct CommitteeKeys {
    pub committee: Committee,
    /// Share of member `i`, in member order (for a reshare workload, of the
    /// first `from_n` members only).
    pub shares: Vec<KeyShare>,
}

/// Identities of every node and the committees' keys.
pub(crate) struct Setup {
    pub identities: Vec<Arc<NodeIdentity>>,
    pub committees: Vec<CommitteeKeys>,
}

/// Generates identities (and keys, if the workload signs).
pub(crate) fn build(
    scenario: &Scenario,
    topology: &Topology,
    rng: &mut ChaCha20Rng,
) -> Result<Setup, SimError> {
    let identities = local::identities(topology.len(), rng);
    let mut committees = Vec::with_capacity(topology.count);
    for c in 0..topology.count {
        let ids = &identities[topology.members(c)];
        let committee = local::committee_of(ids)?;
        let shares = if scenario.needs_keys() {
            let suite = scenario.committee.suite;
            // A reshare workload's key belongs to the old committee: the first
            // `from_n` members, at the old threshold.
            let (holders, t) = match &scenario.reshare {
                Some(r) => (&ids[..usize::from(r.from_n)], r.from_threshold),
                None => (ids, scenario.committee.threshold),
            };
            match scenario.committee.key_setup {
                KeySetup::Dealer => dealer_shares(holders, suite, t, rng)?,
                KeySetup::Dkg => local::run_dkg(holders, suite, t, rng)?,
            }
        } else {
            Vec::new()
        };
        committees.push(CommitteeKeys { committee, shares });
    }
    Ok(Setup {
        identities,
        committees,
    })
}

fn crypto<E: std::fmt::Display>(e: E) -> SimError {
    SimError::Protocol(ProtocolError::Crypto(e.to_string()))
}

/// Trusted-dealer shares of a fresh key for `ids` (member `i` gets index `i + 1`).
pub(crate) fn dealer_shares(
    ids: &[Arc<NodeIdentity>],
    suite: Ciphersuite,
    threshold: u16,
    rng: &mut ChaCha20Rng,
) -> Result<Vec<KeyShare>, SimError> {
    let n = u16::try_from(ids.len()).map_err(|_| SimError::invalid("committee.n", "too large"))?;
    let mut key = [0u8; 16];
    rng.fill_bytes(&mut key);
    let key_id = KeyId(key);
    let members: BTreeMap<_, u16> = ids
        .iter()
        .zip(1..=n)
        .map(|(id, i)| (id.node_id(), i))
        .collect();
    dispatch!(suite, C => {
        let (secrets, public) = frost_core::keys::generate_with_dealer::<C, _>(
            n,
            threshold,
            IdentifierList::Default,
            &mut *rng,
        )
        .map_err(crypto)?;
        let mut out = Vec::with_capacity(ids.len());
        for i in 1..=n {
            let ident = frost_core::Identifier::<C>::try_from(i).map_err(crypto)?;
            let secret = secrets
                .get(&ident)
                .ok_or_else(|| crypto("dealer produced no share"))?;
            let package = KeyPackage::<C>::try_from(secret.clone()).map_err(crypto)?;
            out.push(KeyShare::from_frost(key_id, members.clone(), i, &package, &public)?);
        }
        Ok(out)
    })
}
