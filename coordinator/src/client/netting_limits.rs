//! Limit-checked rounds in the client: opening a party's own limit bits from its
//! result, and verifying the round's verdict (every node's signed
//! `LimitVerdict` against the pinned committee, and a quorum of identical
//! statements). Nothing the coordinator says about limits is taken on its word.

use quorate_protocol::{
    netting::{
        limits::verdict::{open_bits, LimitBits, LimitVerdict, OwnBit},
        PartyResult, RoundSpec,
    },
    Committee,
};

use super::{
    netting::{from_postcard, invalid, party_index, verify_err, verify_result},
    AttestedKey, Client, ClientError,
};
use crate::netting::{
    limits::{round_verdict, RoundVerdict},
    model::{ResultView, RoundView},
};

/// Opens the party's own limit bits from a fetched result: every node's
/// `LimitBits` is checked (signature by a committee member, round, party, inputs
/// digest of the verified headers) by `limits::verdict::open_bits`, which needs
/// `2t − 1` of them and names nodes whose shares are inconsistent. `Ok(None)` for
/// a round without limits. Call after [`verify_result`] (it checks `inputs_digest`
/// against the party-signed headers).
///
/// # Security
/// `seal_secret` is the party's X25519 key; the bits are private to the party.
pub fn verify_limit_bits(
    spec: &RoundSpec,
    party: usize,
    seal_secret: &x25519_dalek::StaticSecret,
    view: &ResultView,
) -> Result<Option<Vec<OwnBit>>, ClientError> {
    if spec.limits.is_none() {
        return Ok(None);
    }
    let mut digest = [0u8; 32];
    hex::decode_to_slice(&view.inputs_digest, &mut digest)
        .map_err(|_| ClientError::Decode("inputs_digest is not 32 bytes of hex".into()))?;
    let bits = view
        .limit_bits
        .iter()
        .map(|b| from_postcard::<LimitBits>("limit_bits", b))
        .collect::<Result<Vec<_>, _>>()?;
    open_bits(spec, party, seal_secret, &digest, &bits)
        .map(Some)
        .map_err(verify_err)
}

/// Verifies a round's `limits` section: the round's committee must be the
/// `committee` the client pinned (from its roster, see
/// [`super::committee_of`]); every listed verdict must decode, match its view and
/// pass `LimitVerdict::check` (signature by that committee member, this round and
/// definition); and a quorum of `max(t, ⌊n/2⌋ + 1)` identical statements decides.
/// Returns the verdict (covered, failed parties, volumes, signers, dissenters).
pub fn verify_verdict(
    spec: &RoundSpec,
    committee: &Committee,
    view: &RoundView,
) -> Result<RoundVerdict, ClientError> {
    if spec.limits.is_none() {
        return Err(invalid(format!("round {} has no limit checks", spec.id)));
    }
    if &spec.committee != committee {
        return Err(verify_err(
            "the round's committee is not the pinned committee",
        ));
    }
    if view.id != spec.id.to_string() {
        return Err(verify_err("the view is of another round"));
    }
    let limits = view
        .limits
        .as_ref()
        .ok_or_else(|| ClientError::Decode("the round view has no limits section".into()))?;
    let mut verdicts = Vec::with_capacity(limits.verdicts.len());
    for v in &limits.verdicts {
        let verdict: LimitVerdict = from_postcard("limits.verdicts.encoding", &v.encoding)?;
        if verdict.node.to_string() != v.node || verdict.covered != v.covered {
            return Err(verify_err(format!(
                "verdict listed for {} does not match its encoding",
                v.node
            )));
        }
        verdict
            .check(spec)
            .map_err(|e| verify_err(format!("the verdict of {} does not verify: {e}", v.node)))?;
        verdicts.push(verdict);
    }
    round_verdict(spec, &verdicts).map_err(verify_err)
}

impl Client {
    /// Fetches the party's result and verifies and opens it ([`verify_result`]),
    /// and for a limit-checked round also opens its own limit bits
    /// ([`verify_limit_bits`]; `None` without limits).
    ///
    /// # Security
    /// `seal_secret` is the party's X25519 key.
    pub async fn verified_result_with_limits(
        &self,
        spec: &RoundSpec,
        party: &str,
        sign_key: &ed25519_dalek::SigningKey,
        seal_secret: &x25519_dalek::StaticSecret,
    ) -> Result<(PartyResult, Option<Vec<OwnBit>>), ClientError> {
        let p = party_index(spec, party)?;
        let view = self.round_result(&spec.id, party, sign_key).await?;
        let result = verify_result(spec, p, seal_secret, &view)?;
        let bits = verify_limit_bits(spec, p, seal_secret, &view)?;
        Ok((result, bits))
    }

    /// Fetches the round and verifies its limit verdict ([`verify_verdict`])
    /// against the committee of the attested key in the pinned `roster`.
    pub async fn verified_verdict(
        &self,
        spec: &RoundSpec,
        key: &AttestedKey,
        roster: &quorate_protocol::roster::Roster,
    ) -> Result<RoundVerdict, ClientError> {
        let committee = super::committee_of(key, roster)?;
        let view = self.round(&spec.id).await?;
        verify_verdict(spec, &committee, &view)
    }
}
