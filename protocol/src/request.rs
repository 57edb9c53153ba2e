//! Client signing requests (invariant 4).
//!
//! An exchange states what it wants signed in a [`SigningRequest`] and signs its
//! canonical encoding with its Ed25519 client key. The coordinator forwards the
//! [`SignedRequest`] verbatim inside [`Payload::SignRequest`](crate::Payload); every
//! node decodes it, verifies the client signature and approvals, applies its own
//! policy, and only then creates a [`Signer`](crate::Signer) for exactly the
//! messages the client signed. A coordinator can therefore delay a request but not
//! forge or alter one.
//!
//! A request's [`RequestBody`] says what is signed: opaque `raw` messages (which a
//! client's node policy must allow explicitly), or a Bitcoin PSBT whose sighashes
//! every node derives itself ([`crate::psbt`]), so policy sees the real
//! transaction. [`SigningRequest::targets`] gives the messages either way.

use ed25519_dalek::{Signer as _, SigningKey, Verifier as _, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{
    error::ProtocolError,
    ids::KeyId,
    key::GroupPublic,
    psbt::{self, PsbtRequest, TransactionSummary},
    sign::SignTarget,
    suite::Ciphersuite,
};

/// Encoding version of requests: 2 (version 1, without [`RequestBody`], is refused).
pub const REQUEST_VERSION: u16 = 2;
/// Largest encoded signed request accepted.
pub const MAX_REQUEST_SIZE: usize = 64 * 1024;
/// Most approvals one signed request may carry.
pub const MAX_APPROVALS: usize = 32;
/// Most messages one request may ask to sign.
pub const MAX_MESSAGES: usize = 256;
/// Longest message one request may ask to sign (bytes).
pub const MAX_MESSAGE_LEN: usize = 16 * 1024;
/// Longest [`Purpose::asset`] (bytes): 0 to 32 of `A–Z a–z 0–9 . _ - :`.
pub const MAX_ASSET_LEN: usize = 32;
/// Longest [`Purpose::destination`] (bytes of printable UTF-8).
pub const MAX_DESTINATION_LEN: usize = 256;
/// Longest [`Purpose::memo`] (bytes of printable UTF-8).
pub const MAX_MEMO_LEN: usize = 1024;

const DOMAIN: &[u8] = b"quorate/request/v1\0";
const APPROVAL_DOMAIN: &[u8] = b"quorate/approval/v1\0";

/// What the transfer is for; evaluated by node policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Purpose {
    /// Asset code, e.g. `BTC`.
    pub asset: String,
    /// Amount in the asset's minor units.
    pub amount: u64,
    /// Destination address or account.
    pub destination: String,
    /// Free text for the audit trail.
    pub memo: String,
}

/// What a request asks to sign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestBody {
    /// Opaque messages (postcard variant 0): nodes see only the client's declared
    /// [`Purpose`], so a client's policy must allow them (`allow_raw`).
    Raw {
        /// Messages to sign (a batch shares one policy decision).
        messages: Vec<Vec<u8>>,
        /// Optional Taproot merkle root (secp256k1-tr keys only).
        tweak: Option<[u8; 32]>,
    },
    /// A Bitcoin transaction (variant 1): nodes parse the PSBT, derive the BIP341
    /// sighash of each input to sign, and apply policy to the parsed outputs.
    BitcoinPsbt(PsbtRequest),
}

impl RequestBody {
    /// `raw` or `bitcoin_psbt`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Raw { .. } => "raw",
            Self::BitcoinPsbt(_) => "bitcoin_psbt",
        }
    }

    /// Number of messages signed: raw messages, or inputs to sign.
    pub fn len(&self) -> usize {
        match self {
            Self::Raw { messages, .. } => messages.len(),
            Self::BitcoinPsbt(p) => p.inputs.len(),
        }
    }

    /// Whether nothing is asked (refused by `validate`).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A client's statement of what it wants signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigningRequest {
    /// Encoding version ([`REQUEST_VERSION`]).
    pub version: u16,
    /// The requesting client's Ed25519 public key.
    pub client: [u8; 32],
    /// Key to sign with.
    pub key_id: KeyId,
    /// What to sign.
    pub body: RequestBody,
    /// What it is for (for a PSBT, the client's declaration, recorded; policy
    /// reads the parsed transaction instead).
    pub purpose: Purpose,
    /// Unix time in milliseconds after which nodes refuse it.
    pub expires_at_ms: u64,
    /// Client-chosen unique value; nodes refuse a nonce they have seen (replay).
    pub nonce: [u8; 16],
}

/// A k-of-m approver's signature over a request hash (four-eyes control).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// Approver's Ed25519 public key.
    pub approver: [u8; 32],
    /// Signature over `APPROVAL_DOMAIN ‖ request hash`.
    pub signature: ed25519_dalek::Signature,
}

/// A request with its client signature and any approvals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedRequest {
    /// The request.
    pub request: SigningRequest,
    /// Client signature over [`SigningRequest::hash`].
    pub signature: ed25519_dalek::Signature,
    /// Approver signatures.
    pub approvals: Vec<Approval>,
}

fn invalid(field: &str, why: String) -> ProtocolError {
    ProtocolError::InvalidRequest(format!("{field}: {why}"))
}

/// Printable UTF-8 of at most `max` bytes: no control characters (C0, DEL, C1),
/// no line or paragraph separators, no bidirectional overrides, no invisible format
/// characters (zero-width spaces and joiners, word joiner, BOM, interlinear
/// annotation, tag characters) that would make two destinations look alike.
fn check_text(field: &str, s: &str, max: usize) -> Result<(), ProtocolError> {
    if s.len() > max {
        return Err(invalid(field, format!("{} bytes; at most {max}", s.len())));
    }
    let bad = |c: char| {
        c.is_control()
            || matches!(
                c,
                '\u{ad}'
                    | '\u{61c}'
                    | '\u{180e}'
                    | '\u{200b}'..='\u{200f}'
                    | '\u{2028}'..='\u{202e}'
                    | '\u{2060}'..='\u{2064}'
                    | '\u{2066}'..='\u{206f}'
                    | '\u{feff}'
                    | '\u{fff9}'..='\u{fffb}'
                    | '\u{e0000}'..='\u{e007f}'
            )
    };
    if let Some((at, c)) = s.char_indices().find(|(_, c)| bad(*c)) {
        return Err(invalid(
            field,
            format!(
                "non-printable character U+{:04X} at byte {at}",
                u32::from(c)
            ),
        ));
    }
    Ok(())
}

impl Purpose {
    /// Checks the bounds: `asset` 0 to [`MAX_ASSET_LEN`] bytes of
    /// `A–Z a–z 0–9 . _ - :`; `destination` (at most [`MAX_DESTINATION_LEN`]) and
    /// `memo` (at most [`MAX_MEMO_LEN`]) printable UTF-8.
    pub fn validate(&self) -> Result<(), ProtocolError> {
        let asset_ok = self.asset.len() <= MAX_ASSET_LEN
            && self
                .asset
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'));
        if !asset_ok {
            return Err(invalid(
                "purpose.asset",
                format!("at most {MAX_ASSET_LEN} characters of A-Z a-z 0-9 . _ - :"),
            ));
        }
        check_text(
            "purpose.destination",
            &self.destination,
            MAX_DESTINATION_LEN,
        )?;
        check_text("purpose.memo", &self.memo, MAX_MEMO_LEN)
    }
}

impl SigningRequest {
    /// SHA-256 over the domain and the canonical (postcard) encoding: what the client
    /// and approvers sign and what audit records cite.
    pub fn hash(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(DOMAIN);
        h.update(postcard::to_allocvec(self).unwrap_or_default());
        h.finalize().into()
    }

    /// Checks shape before anything else looks at a request (client library,
    /// coordinator and node all call it): version; a raw body of 1 to
    /// [`MAX_MESSAGES`] messages of 1 to [`MAX_MESSAGE_LEN`] bytes, or a PSBT body
    /// within [`PsbtRequest::validate`]; [`Purpose`] within its bounds; the whole
    /// signed encoding within [`MAX_REQUEST_SIZE`]. The error names the field and
    /// the bound. (A PSBT's content is checked by [`Self::targets`].)
    pub fn validate(&self) -> Result<(), ProtocolError> {
        if self.version != REQUEST_VERSION {
            return Err(ProtocolError::UnsupportedVersion(self.version));
        }
        match &self.body {
            RequestBody::Raw { messages, .. } => Self::validate_raw(messages)?,
            RequestBody::BitcoinPsbt(p) => p.validate()?,
        }
        self.purpose.validate()?;
        // Signature (64) and an empty approval list (1) on top of the request.
        let len = postcard::to_allocvec(self).map_or(usize::MAX, |b| b.len() + 65);
        if len > MAX_REQUEST_SIZE {
            return Err(invalid(
                "request",
                format!("encodes to {len} bytes; at most {MAX_REQUEST_SIZE}"),
            ));
        }
        Ok(())
    }

    fn validate_raw(messages: &[Vec<u8>]) -> Result<(), ProtocolError> {
        if messages.is_empty() || messages.len() > MAX_MESSAGES {
            return Err(invalid(
                "body.messages",
                format!(
                    "{} messages; a request carries 1 to {MAX_MESSAGES}",
                    messages.len()
                ),
            ));
        }
        if let Some(i) = messages.iter().position(Vec::is_empty) {
            return Err(invalid(
                &format!("body.messages[{i}]"),
                "empty message".into(),
            ));
        }
        if let Some(i) = messages.iter().position(|m| m.len() > MAX_MESSAGE_LEN) {
            return Err(invalid(
                &format!("body.messages[{i}]"),
                format!("{} bytes; at most {MAX_MESSAGE_LEN}", messages[i].len()),
            ));
        }
        Ok(())
    }

    /// For a PSBT body, the parsed transaction ([`psbt::analyze`]) under `key`,
    /// which must be a secp256k1-tr key; `None` for a raw body.
    pub fn transaction(
        &self,
        key: &GroupPublic,
    ) -> Result<Option<TransactionSummary>, ProtocolError> {
        let RequestBody::BitcoinPsbt(p) = &self.body else {
            return Ok(None);
        };
        if key.suite != Ciphersuite::Secp256k1Tr {
            return Err(invalid(
                "body",
                format!(
                    "bitcoin_psbt requests need a secp256k1-tr key; key {} is {}",
                    key.key_id, key.suite
                ),
            ));
        }
        psbt::analyze(p, &key.verifying_key).map(Some)
    }

    /// The messages this request signs with `key`, in order, each with its tweak:
    /// a raw body's messages (with the request's tweak), or the BIP341 sighash of
    /// each PSBT input to sign (with that input's script-tree tweak).
    pub fn targets(&self, key: &GroupPublic) -> Result<Vec<SignTarget>, ProtocolError> {
        match (&self.body, self.transaction(key)?) {
            (RequestBody::Raw { messages, tweak }, _) => Ok(messages
                .iter()
                .map(|m| SignTarget {
                    message: m.clone(),
                    tweak: *tweak,
                })
                .collect()),
            (_, Some(tx)) => Ok(tx
                .targets()
                .map(|(m, tweak)| SignTarget {
                    message: m.to_vec(),
                    tweak,
                })
                .collect()),
            (_, None) => Err(ProtocolError::InvalidState(
                "PSBT body without a transaction",
            )),
        }
    }

    /// Signs as the client.
    ///
    /// # Security
    /// Uses the client's secret key; the caller keeps it.
    pub fn sign(self, client: &SigningKey) -> SignedRequest {
        let signature = client.sign(&self.hash());
        SignedRequest {
            request: self,
            signature,
            approvals: Vec::new(),
        }
    }
}

impl SignedRequest {
    /// Adds an approver's signature.
    ///
    /// # Security
    /// Uses the approver's secret key; the caller keeps it.
    pub fn approve(&mut self, approver: &SigningKey) {
        let mut msg = APPROVAL_DOMAIN.to_vec();
        msg.extend_from_slice(&self.request.hash());
        self.approvals.push(Approval {
            approver: approver.verifying_key().to_bytes(),
            signature: approver.sign(&msg),
        });
    }

    /// Verifies the shape (including at most [`MAX_APPROVALS`] approvals) and the
    /// client's signature (strict Ed25519).
    pub fn verify_client(&self) -> Result<(), ProtocolError> {
        self.request.validate()?;
        if self.approvals.len() > MAX_APPROVALS {
            return Err(invalid(
                "approvals",
                format!(
                    "{} approvals; at most {MAX_APPROVALS}",
                    self.approvals.len()
                ),
            ));
        }
        let key = VerifyingKey::from_bytes(&self.request.client)
            .map_err(|_| ProtocolError::Malformed("client key is not an Ed25519 point"))?;
        key.verify_strict(&self.request.hash(), &self.signature)
            .map_err(|_| ProtocolError::Malformed("client signature does not verify"))
    }

    /// Distinct approvers among `allowed` whose signatures verify.
    pub fn valid_approvers(&self, allowed: &[[u8; 32]]) -> Vec<[u8; 32]> {
        let mut msg = APPROVAL_DOMAIN.to_vec();
        msg.extend_from_slice(&self.request.hash());
        // At most MAX_APPROVALS signature checks (verify_client refuses more).
        let mut ok: Vec<[u8; 32]> = self
            .approvals
            .iter()
            .take(MAX_APPROVALS)
            .filter(|a| allowed.contains(&a.approver))
            .filter(|a| {
                VerifyingKey::from_bytes(&a.approver)
                    .map(|k| k.verify(&msg, &a.signature).is_ok())
                    .unwrap_or(false)
            })
            .map(|a| a.approver)
            .collect();
        ok.sort();
        ok.dedup();
        ok
    }

    /// Canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Decodes with a size cap and no trailing bytes; does not verify.
    pub fn decode(bytes: &[u8]) -> Result<Self, ProtocolError> {
        if bytes.len() > MAX_REQUEST_SIZE {
            return Err(ProtocolError::TooLarge {
                len: bytes.len(),
                max: MAX_REQUEST_SIZE,
            });
        }
        let (req, rest): (Self, _) = postcard::take_from_bytes(bytes)
            .map_err(|_| ProtocolError::Malformed("signed request does not decode"))?;
        if !rest.is_empty() {
            return Err(ProtocolError::Malformed("trailing bytes after request"));
        }
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::{rand_core::SeedableRng, ChaCha20Rng};

    fn messages(r: &mut SigningRequest) -> &mut Vec<Vec<u8>> {
        match &mut r.body {
            RequestBody::Raw { messages, .. } => messages,
            RequestBody::BitcoinPsbt(_) => unreachable!("raw fixtures"),
        }
    }

    fn request(client: &SigningKey) -> SigningRequest {
        SigningRequest {
            version: REQUEST_VERSION,
            client: client.verifying_key().to_bytes(),
            key_id: KeyId([1; 16]),
            body: RequestBody::Raw {
                messages: vec![vec![7; 32]],
                tweak: None,
            },
            purpose: Purpose {
                asset: "BTC".into(),
                amount: 50_000_000,
                destination: "bc1qexample".into(),
                memo: String::new(),
            },
            expires_at_ms: 1_000,
            nonce: [9; 16],
        }
    }

    #[test]
    fn altered_request_fails_client_verification() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let client = SigningKey::generate(&mut rng);
        let signed = request(&client).sign(&client);
        signed.verify_client().expect("valid");
        let decoded = SignedRequest::decode(&signed.encode()).expect("decode");
        assert_eq!(decoded, signed);
        for alter in [
            |r: &mut SigningRequest| r.purpose.amount += 1,
            |r: &mut SigningRequest| r.purpose.destination.push('x'),
            |r: &mut SigningRequest| messages(r)[0][0] ^= 1,
            |r: &mut SigningRequest| r.expires_at_ms += 1,
        ] {
            let mut bad = signed.clone();
            alter(&mut bad.request);
            assert_eq!(
                bad.verify_client(),
                Err(ProtocolError::Malformed("client signature does not verify"))
            );
        }
    }

    #[test]
    fn approvals_count_distinct_allowed_valid_signers_only() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let client = SigningKey::generate(&mut rng);
        let (a, b, outsider) = (
            SigningKey::generate(&mut rng),
            SigningKey::generate(&mut rng),
            SigningKey::generate(&mut rng),
        );
        let allowed = [a.verifying_key().to_bytes(), b.verifying_key().to_bytes()];
        let mut signed = request(&client).sign(&client);
        signed.approve(&a);
        signed.approve(&a);
        signed.approve(&outsider);
        assert_eq!(signed.valid_approvers(&allowed), vec![allowed[0]]);
        signed.approve(&b);
        assert_eq!(signed.valid_approvers(&allowed).len(), 2);
        // Approvals do not carry over to an altered request.
        signed.request.purpose.amount = 1;
        assert!(signed.valid_approvers(&allowed).is_empty());
    }

    #[test]
    fn malformed_requests_are_refused() {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let client = SigningKey::generate(&mut rng);
        let mut r = request(&client);
        messages(&mut r).clear();
        assert!(r.sign(&client).verify_client().is_err());
        let mut r = request(&client);
        *messages(&mut r) = vec![vec![1; MAX_MESSAGE_LEN + 1]];
        assert!(r.validate().is_err());
        assert!(matches!(
            SignedRequest::decode(&vec![0; MAX_REQUEST_SIZE + 1]),
            Err(ProtocolError::TooLarge { .. })
        ));
        let mut bytes = request(&client).sign(&client).encode();
        bytes.push(0);
        assert!(SignedRequest::decode(&bytes).is_err());
    }

    #[test]
    fn purpose_fields_are_refused_over_their_bounds_and_with_control_characters() {
        let mut rng = ChaCha20Rng::seed_from_u64(4);
        let client = SigningKey::generate(&mut rng);
        let at = |f: fn(&mut Purpose)| {
            let mut r = request(&client);
            f(&mut r.purpose);
            r.validate()
        };
        // At each bound: accepted.
        assert_eq!(at(|p| p.asset = "A".repeat(MAX_ASSET_LEN)), Ok(()));
        assert_eq!(
            at(|p| p.destination = "d".repeat(MAX_DESTINATION_LEN)),
            Ok(())
        );
        assert_eq!(at(|p| p.memo = "é".repeat(MAX_MEMO_LEN / 2)), Ok(()));
        assert_eq!(at(|p| p.destination.clear()), Ok(()));
        assert_eq!(
            at(|p| p.asset.clear()),
            Ok(()),
            "no declared asset: policy decides"
        );
        // One over, or not printable: refused, naming the field.
        for (f, field) in [
            (
                (|p: &mut Purpose| p.asset = "A".repeat(MAX_ASSET_LEN + 1)) as fn(&mut Purpose),
                "purpose.asset",
            ),
            (|p| p.asset = "BTC ".into(), "purpose.asset"),
            (
                |p| p.destination = "d".repeat(MAX_DESTINATION_LEN + 1),
                "purpose.destination",
            ),
            (
                |p| p.destination = "\u{1}".repeat(45_000),
                "purpose.destination",
            ),
            (
                |p| p.destination = "bc1q\nforged line".into(),
                "purpose.destination",
            ),
            (|p| p.memo = "m".repeat(MAX_MEMO_LEN + 1), "purpose.memo"),
            (|p| p.memo = "pay \u{202e}evil".into(), "purpose.memo"),
            (|p| p.memo = "\u{7f}".into(), "purpose.memo"),
            (
                |p| p.destination = "bc1q\u{200b}abc".into(),
                "purpose.destination",
            ),
            (
                |p| p.destination = "bc1q\u{feff}abc".into(),
                "purpose.destination",
            ),
            (
                |p| p.destination = "bc1q\u{e0041}".into(),
                "purpose.destination",
            ),
        ] {
            match at(f) {
                Err(ProtocolError::InvalidRequest(m)) => {
                    assert!(m.starts_with(field), "{m} should name {field}")
                }
                other => panic!("expected a refusal naming {field}, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_request_too_large_to_send_is_refused_by_validate() {
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        let client = SigningKey::generate(&mut rng);
        let mut r = request(&client);
        *messages(&mut r) = vec![vec![1; MAX_MESSAGE_LEN]; 3];
        assert_eq!(r.validate(), Ok(()));
        *messages(&mut r) = vec![vec![1; MAX_MESSAGE_LEN]; 4];
        match r.validate() {
            Err(ProtocolError::InvalidRequest(m)) => assert!(m.starts_with("request:"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn more_than_the_approval_bound_is_refused() {
        let mut rng = ChaCha20Rng::seed_from_u64(6);
        let client = SigningKey::generate(&mut rng);
        let approver = SigningKey::generate(&mut rng);
        let mut signed = request(&client).sign(&client);
        for _ in 0..MAX_APPROVALS {
            signed.approve(&approver);
        }
        assert_eq!(signed.verify_client(), Ok(()));
        let allowed = [approver.verifying_key().to_bytes()];
        assert_eq!(signed.valid_approvers(&allowed), allowed.to_vec());
        signed.approve(&approver);
        match signed.verify_client() {
            Err(ProtocolError::InvalidRequest(m)) => assert!(m.starts_with("approvals:"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}
