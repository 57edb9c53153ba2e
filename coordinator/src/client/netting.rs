//! Netting calls of the client: building and authorising a round, dealing and
//! submitting a party's bundle, the creating client's signed close, fetching and
//! verifying a party's own result, and fetching the settlement and verifying its
//! FROST signature under an attested key.
//!
//! ```no_run
//! # async fn demo(
//! #     api: quorate_coordinator::client::Client,
//! #     key: quorate_coordinator::client::AttestedKey,
//! #     roster: quorate_coordinator::protocol::roster::Roster,
//! #     clearing: ed25519_dalek::SigningKey,
//! #     desk_a: (ed25519_dalek::SigningKey, x25519_dalek::StaticSecret),
//! #     desk_b_keys: ([u8; 32], [u8; 32]),
//! #     instrument: quorate_coordinator::protocol::netting::Instrument,
//! #     positions: quorate_coordinator::protocol::netting::PartyInput,
//! # ) -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use quorate_coordinator::client::RoundBuilder;
//!
//! let spec = RoundBuilder::new(&key, &roster)?
//!     .party("desk-a", desk_a.0.verifying_key().to_bytes(), x25519_dalek::PublicKey::from(&desk_a.1).to_bytes())
//!     .party("desk-b", desk_b_keys.0, desk_b_keys.1)
//!     .instrument(instrument)
//!     .cutoff_in(Duration::from_secs(3600))
//!     .build()?;
//! api.create_round(&spec, &clearing).await?;                     // the clearing client
//! api.deal_and_submit(&spec, "desk-a", &desk_a.0, &positions).await?; // each party
//! api.close_round(&spec.id, &clearing, Some(Duration::from_secs(60))).await?;
//! let mine = api.verified_result(&spec, "desk-a", &desk_a.0, &desk_a.1).await?;
//! let batch = api.verified_settlement(&spec, &key).await?;
//! # let _ = (mine, batch); Ok(()) }
//! ```

use std::time::Duration;

use curve25519_dalek::RistrettoPoint;
use ed25519_dalek::{Signer as _, SigningKey};
use quorate_protocol::{
    netting::{
        open::inputs_digest,
        result::{open_result, Published},
        round::{close_message, result_request_message, LimitSettings, RoundAuthorization},
        share::deal,
        verify, Bounds, BundleHeader, InputBundle, Instrument, Party, PartyInput, PartyOutputs,
        PartyResult, RoundId, RoundSpec, SettlementBatch,
    },
    roster::Roster,
    Committee,
};
use rand_core::{OsRng, RngCore};

use super::{verify_signature, AttestedKey, Client, ClientError};
use crate::{
    backend::now_ms,
    netting::{
        model::{
            AuthorizationBody, BundleAnswer, BundleBody, CloseBody, CreateRoundBody, ResultView,
            RoundView, SettlementView,
        },
        record::RoundState,
    },
};

pub(super) fn invalid(e: impl std::fmt::Display) -> ClientError {
    ClientError::Invalid(e.to_string())
}

pub(super) fn verify_err(e: impl std::fmt::Display) -> ClientError {
    ClientError::Verify(e.to_string())
}

/// The committee of an attested key: its members as the pinned `roster` lists them
/// (node id, index, sealing key), refusing a member the roster lists under another
/// index or not at all.
pub fn committee_of(key: &AttestedKey, roster: &Roster) -> Result<Committee, ClientError> {
    let members: Vec<_> = key.public().members.keys().copied().collect();
    let committee = roster.committee(Some(&members)).map_err(invalid)?;
    for (node, index) in &key.public().members {
        if committee.get(node).map(|m| m.index) != Some(*index) {
            return Err(ClientError::Unattested(format!(
                "key member {node} (index {index}) is not a roster signer under that index"
            )));
        }
    }
    Ok(committee)
}

/// Builds a [`RoundSpec`] for an attested settlement key: committee from the
/// pinned roster, threshold the key's, a random round id, default bounds.
#[derive(Debug, Clone)]
pub struct RoundBuilder {
    spec: RoundSpec,
}

impl RoundBuilder {
    /// A round settled by `key`, its committee the key's members from `roster`.
    pub fn new(key: &AttestedKey, roster: &Roster) -> Result<Self, ClientError> {
        let mut id = [0u8; 16];
        OsRng.fill_bytes(&mut id);
        Ok(Self {
            spec: RoundSpec {
                id: RoundId(id),
                parties: Vec::new(),
                instruments: Vec::new(),
                cutoff: now_ms() / 1000 + 3600,
                key: key.public().key_id,
                committee: committee_of(key, roster)?,
                threshold: key.public().threshold,
                bounds: Bounds::default(),
                limits: None,
            },
        })
    }

    /// Sets the round id (random by default).
    pub fn id(mut self, id: RoundId) -> Self {
        self.spec.id = id;
        self
    }

    /// Adds a party: its name, Ed25519 signing key and X25519 sealing key.
    pub fn party(
        mut self,
        name: impl Into<String>,
        sign_key: [u8; 32],
        seal_key: [u8; 32],
    ) -> Self {
        self.spec.parties.push(Party {
            name: name.into(),
            sign_key,
            seal_key,
        });
        self
    }

    /// Adds an instrument with its mark.
    pub fn instrument(mut self, instrument: Instrument) -> Self {
        self.spec.instruments.push(instrument);
        self
    }

    /// Bundles signed or received after this time (Unix seconds) are refused.
    pub fn cutoff(mut self, unix_secs: u64) -> Self {
        self.spec.cutoff = unix_secs;
        self
    }

    /// Cut-off `ttl` from now (default: one hour).
    pub fn cutoff_in(mut self, ttl: Duration) -> Self {
        self.spec.cutoff = now_ms() / 1000 + ttl.as_secs();
        self
    }

    /// Shares needed to open a value (default: the key's threshold).
    pub fn threshold(mut self, t: u16) -> Self {
        self.spec.threshold = t;
        self
    }

    /// Input bounds.
    pub fn bounds(mut self, bounds: Bounds) -> Self {
        self.spec.bounds = bounds;
        self
    }

    /// Makes the round limit-checked: it settles only if
    /// `net + collateral + limit ≥ 0` for every party and asset (parties declare
    /// collateral and limit in `PartyInput.cover`). Needs `2(t − 1) < n`.
    pub fn limits(mut self, limits: LimitSettings) -> Self {
        self.spec.limits = Some(limits);
        self
    }

    /// The validated spec ([`RoundSpec::validate`]).
    pub fn build(self) -> Result<RoundSpec, ClientError> {
        self.spec.validate().map_err(invalid)?;
        Ok(self.spec)
    }
}

pub(super) fn party_index(spec: &RoundSpec, party: &str) -> Result<usize, ClientError> {
    spec.party_index(party)
        .ok_or_else(|| invalid(format!("round {} has no party {party:?}", spec.id)))
}

fn unhex(field: &str, s: &str) -> Result<Vec<u8>, ClientError> {
    hex::decode(s).map_err(|_| ClientError::Decode(format!("{field} is not hex")))
}

pub(super) fn from_postcard<T: serde::de::DeserializeOwned>(
    field: &str,
    s: &str,
) -> Result<T, ClientError> {
    let bytes = unhex(field, s)?;
    postcard::from_bytes(&bytes).map_err(|e| ClientError::Decode(format!("{field}: {e}")))
}

/// Verifies a fetched result and opens the party's own outputs: every header must
/// pass [`BundleHeader::check`] (the party signatures) and list the participants
/// in order, the inputs digest is recomputed from them, and
/// `protocol::netting::result::open_result` checks every node's signature and
/// share against the commitments, naming lying nodes in `culprits`.
///
/// # Security
/// `seal_secret` is the party's X25519 key; the opened values are its private nets.
pub fn verify_result(
    spec: &RoundSpec,
    party: usize,
    seal_secret: &x25519_dalek::StaticSecret,
    view: &ResultView,
) -> Result<PartyResult, ClientError> {
    if view.participants.len() != spec.parties.len() {
        return Err(verify_err("participants do not list every party"));
    }
    let listed: Vec<usize> = (0..spec.parties.len())
        .filter(|&p| view.participants[p])
        .collect();
    if view.headers.len() != listed.len() || !view.participants.get(party).copied().unwrap_or(false)
    {
        return Err(verify_err(
            "headers do not match the participants (or the party is not one)",
        ));
    }
    let mut digests = vec![None; spec.parties.len()];
    let mut points: Vec<Option<Vec<RistrettoPoint>>> = vec![None; spec.parties.len()];
    let mut headers: Vec<Option<BundleHeader>> = vec![None; spec.parties.len()];
    for (h, &p) in view.headers.iter().zip(&listed) {
        let header: BundleHeader = from_postcard("headers", h)?;
        if header.party as usize != p {
            return Err(verify_err(format!(
                "header of party index {} listed as {p}",
                header.party
            )));
        }
        header.check_full(spec).map_err(verify_err)?;
        points[p] = Some(verify::commitments(spec, &header).map_err(verify_err)?);
        digests[p] = Some(header.digest());
        headers[p] = Some(header);
    }
    let digest = inputs_digest(spec, &digests);
    if hex::encode(digest) != view.inputs_digest {
        return Err(verify_err("inputs_digest does not match the headers"));
    }
    let outputs = view
        .outputs
        .iter()
        .map(|o| from_postcard::<PartyOutputs>("outputs", o))
        .collect::<Result<Vec<_>, _>>()?;
    let refs: Vec<Option<&[RistrettoPoint]>> = points.iter().map(|c| c.as_deref()).collect();
    let header_refs: Vec<Option<&BundleHeader>> = headers.iter().map(Option::as_ref).collect();
    let published = Published {
        participants: &view.participants,
        inputs_digest: digest,
        headers: &header_refs,
        commitments: &refs,
    };
    open_result(spec, &published, party, seal_secret, &outputs, &mut OsRng).map_err(verify_err)
}

/// Verifies a settlement against the round and an attested key: the encoding is
/// the batch, it is for this round, definition and key, its message is
/// `SettlementBatch::message`, the nets conserve every asset, and the FROST
/// signature verifies under the key (no tweak; see [`verify_signature`]).
pub fn verify_settlement(
    spec: &RoundSpec,
    key: &AttestedKey,
    view: &SettlementView,
) -> Result<SettlementBatch, ClientError> {
    let batch: SettlementBatch = from_postcard("encoding", &view.encoding)?;
    if batch != view.batch {
        return Err(verify_err("encoding differs from batch"));
    }
    if batch.round != spec.id || batch.spec_digest != spec.digest() {
        return Err(verify_err("the batch is for another round or definition"));
    }
    if batch.key != spec.key || key.public().key_id != spec.key {
        return Err(verify_err("the batch names another key"));
    }
    let message = batch.message();
    if unhex("message", &view.message)? != message {
        return Err(verify_err("message is not the batch's message"));
    }
    for asset in spec.assets() {
        let sum: i128 = batch
            .transfers
            .iter()
            .filter(|t| t.asset == asset)
            .map(|t| i128::from(t.amount))
            .sum();
        if sum != 0 {
            return Err(verify_err(format!("nets of {asset} sum to {sum}")));
        }
    }
    let signature = unhex("signature", &view.signature)?;
    verify_signature(key.public(), &message, &signature, None)?;
    Ok(batch)
}

/// Checks a verified settlement against a desk's own verified result: the batch
/// must pay or charge the desk exactly its multilateral net in every asset, and
/// nothing under its name besides. Catches a settlement built on other inputs than
/// the desk's result (a coordinator that closed the round differently elsewhere).
pub fn check_own_transfers(
    batch: &SettlementBatch,
    result: &PartyResult,
) -> Result<(), ClientError> {
    let mine: Vec<_> = batch
        .transfers
        .iter()
        .filter(|t| t.party == result.party)
        .collect();
    for (asset, net) in &result.multilateral {
        let got: Vec<i64> = mine
            .iter()
            .filter(|t| &t.asset == asset)
            .map(|t| t.amount)
            .collect();
        if got != [*net] {
            return Err(verify_err(format!(
                "the settlement gives {} {got:?} in {asset}, its verified net is {net}",
                result.party
            )));
        }
    }
    if mine.len() != result.multilateral.len() {
        return Err(verify_err(format!(
            "the settlement lists {} transfers for {}, its result {} assets",
            mine.len(),
            result.party,
            result.multilateral.len()
        )));
    }
    Ok(())
}

impl Client {
    /// `POST /v1/netting/rounds` with the creating client's authorisation of `spec`.
    pub async fn create_round(
        &self,
        spec: &RoundSpec,
        client_key: &SigningKey,
    ) -> Result<RoundView, ClientError> {
        self.create_round_authorized(spec, &spec.authorize(client_key))
            .await
    }

    /// `POST /v1/netting/rounds` with an authorisation made elsewhere.
    pub async fn create_round_authorized(
        &self,
        spec: &RoundSpec,
        authorization: &RoundAuthorization,
    ) -> Result<RoundView, ClientError> {
        spec.validate().map_err(invalid)?;
        let body = CreateRoundBody {
            spec: spec.clone(),
            authorization: AuthorizationBody {
                client: hex::encode(authorization.client),
                signature: hex::encode(&authorization.signature),
            },
        };
        let req = self.http.post(self.url("/v1/netting/rounds")).json(&body);
        Self::decode(req.send().await.map_err(super::http)?).await
    }

    /// `GET /v1/netting/rounds/{id}`.
    pub async fn round(&self, round: &RoundId) -> Result<RoundView, ClientError> {
        let resp = self
            .http
            .get(self.url(&format!("/v1/netting/rounds/{round}")))
            .send()
            .await
            .map_err(super::http)?;
        Self::decode(resp).await
    }

    /// Polls a round every `interval` until it is settled, conservation-failed,
    /// failed or not covered (limits), or `timeout` passes.
    pub async fn poll_round(
        &self,
        round: &RoundId,
        interval: Duration,
        timeout: Duration,
    ) -> Result<RoundView, ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let view = self.round(round).await?;
            let done = [
                RoundState::Settled,
                RoundState::ConservationFailed,
                RoundState::Failed,
                RoundState::NotCovered,
            ]
            .iter()
            .any(|s| s.as_str() == view.state);
            if done {
                return Ok(view);
            }
            if tokio::time::Instant::now() + interval > deadline {
                return Err(ClientError::Timeout(round.to_string()));
            }
            tokio::time::sleep(interval).await;
        }
    }

    /// `POST /v1/netting/rounds/{id}/bundles`. Resending the same bundle is safe
    /// (nodes that hold it answer accepted again).
    pub async fn submit_bundle(
        &self,
        round: &RoundId,
        bundle: &InputBundle,
    ) -> Result<BundleAnswer, ClientError> {
        let bytes = postcard::to_allocvec(bundle).map_err(invalid)?;
        let req = self
            .http
            .post(self.url(&format!("/v1/netting/rounds/{round}/bundles")))
            .json(&BundleBody {
                bundle: hex::encode(bytes),
            });
        Self::decode(req.send().await.map_err(super::http)?).await
    }

    /// Deals `input` as party `party` (`protocol::netting::share::deal`, signed now
    /// with `sign_key`) and submits the bundle.
    ///
    /// # Security
    /// `input` holds the party's secret positions; only sealed shares leave.
    pub async fn deal_and_submit(
        &self,
        spec: &RoundSpec,
        party: &str,
        sign_key: &SigningKey,
        input: &PartyInput,
    ) -> Result<BundleAnswer, ClientError> {
        let p = party_index(spec, party)?;
        let bundle =
            deal(spec, p, sign_key, input, now_ms() / 1000, &mut OsRng).map_err(invalid)?;
        self.submit_bundle(&spec.id, &bundle).await
    }

    /// `POST /v1/netting/rounds/{id}/close`, signed by the round's creating client
    /// over `round::close_message(round, now)`; with `wait`, the answer comes once
    /// the round is settled (or failed) or the wait is over.
    pub async fn close_round(
        &self,
        round: &RoundId,
        client_key: &SigningKey,
        wait: Option<Duration>,
    ) -> Result<RoundView, ClientError> {
        let at_ms = now_ms();
        let signature = client_key.sign(&close_message(round, at_ms));
        let mut url = self.url(&format!("/v1/netting/rounds/{round}/close"));
        if let Some(w) = wait {
            url.push_str(&format!("?wait=true&timeout_ms={}", w.as_millis()));
        }
        let req = self.http.post(url).json(&CloseBody {
            at_ms,
            signature: hex::encode(signature.to_bytes()),
        });
        Self::decode(req.send().await.map_err(super::http)?).await
    }

    /// `GET /v1/netting/rounds/{id}/results/{party}`, signed by the party over
    /// `round::result_request_message(round, party, now)`. Not verified: see
    /// [`Client::verified_result`].
    pub async fn round_result(
        &self,
        round: &RoundId,
        party: &str,
        sign_key: &SigningKey,
    ) -> Result<ResultView, ClientError> {
        let at_ms = now_ms();
        let signature = sign_key.sign(&result_request_message(round, party, at_ms));
        let url = self.url(&format!(
            "/v1/netting/rounds/{round}/results/{party}?at_ms={at_ms}&signature={}",
            hex::encode(signature.to_bytes())
        ));
        Self::decode(self.http.get(url).send().await.map_err(super::http)?).await
    }

    /// Fetches the party's result and verifies and opens it ([`verify_result`]).
    ///
    /// # Security
    /// `seal_secret` is the party's X25519 key.
    pub async fn verified_result(
        &self,
        spec: &RoundSpec,
        party: &str,
        sign_key: &SigningKey,
        seal_secret: &x25519_dalek::StaticSecret,
    ) -> Result<PartyResult, ClientError> {
        let p = party_index(spec, party)?;
        let view = self.round_result(&spec.id, party, sign_key).await?;
        verify_result(spec, p, seal_secret, &view)
    }

    /// `GET /v1/netting/rounds/{id}/settlement`. Not verified: see
    /// [`Client::verified_settlement`].
    pub async fn settlement(&self, round: &RoundId) -> Result<SettlementView, ClientError> {
        let resp = self
            .http
            .get(self.url(&format!("/v1/netting/rounds/{round}/settlement")))
            .send()
            .await
            .map_err(super::http)?;
        Self::decode(resp).await
    }

    /// Fetches the settlement and verifies it ([`verify_settlement`]) under the
    /// attested key.
    pub async fn verified_settlement(
        &self,
        spec: &RoundSpec,
        key: &AttestedKey,
    ) -> Result<SettlementBatch, ClientError> {
        let view = self.settlement(&spec.id).await?;
        verify_settlement(spec, key, &view)
    }
}
