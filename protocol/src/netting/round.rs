//! A netting round's public definition: parties, instruments, marks, bounds, the
//! node committee that holds the shares, and the key that signs the settlement.
//!
//! Cash-flow rule (public and linear): each instrument has a per-unit cash flow for
//! the round, `unit = multiplier × (price_move − premium)`, and a party's flow
//! against one counterparty on one instrument is `unit × quantity + cash`, positive
//! when the party receives. Futures: `price_move` is the settlement-price change,
//! `premium` is 0. Options (premium-style margining): `price_move` is the change of
//! the option's mark, `premium` the premium per unit paid by the long side on new
//! trades. Swaps: `price_move` is the floating fixing minus the fixed rate, per unit
//! of notional, `premium` is 0; `cash` carries fixed coupons and fees.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{error::ProtocolError, ids::KeyId, Committee};

/// Most parties in one round.
pub const MAX_PARTIES: usize = 256;
/// Most instruments in one round.
pub const MAX_INSTRUMENTS: usize = 256;
/// Most secret values one party shares (2 per counterparty and instrument).
pub const MAX_VALUES_PER_PARTY: usize = 1 << 16;
/// Longest party, instrument or asset name.
pub const MAX_NAME: usize = 64;

/// A round id: 16 random bytes chosen by the round's creator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RoundId(pub [u8; 16]);

impl core::fmt::Display for RoundId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl RoundId {
    /// Parses the 32-hex-digit form.
    pub fn from_hex(s: &str) -> Result<Self, ProtocolError> {
        let mut out = [0u8; 16];
        hex::decode_to_slice(s, &mut out)
            .map_err(|_| ProtocolError::Malformed("round id must be 16 bytes of hex"))?;
        Ok(Self(out))
    }
}

/// One participant of a round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Party {
    /// Unique name (`[A-Za-z0-9._-]`, 1–64 bytes).
    pub name: String,
    /// Ed25519 public key that signs the party's bundles and result requests.
    pub sign_key: [u8; 32],
    /// X25519 public key the nodes seal the party's results to.
    pub seal_key: [u8; 32],
}

/// What kind of contract an instrument is (documents how its mark is read).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstrumentKind {
    /// Futures: variation margin on the settlement-price move.
    Future,
    /// Options: premium and change of mark.
    Option,
    /// Swaps: floating minus fixed per unit notional, coupons as cash.
    Swap,
}

/// One instrument and its public mark for the round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instrument {
    /// Unique name (`[A-Za-z0-9._-]`, 1–64 bytes).
    pub name: String,
    /// Contract kind.
    pub kind: InstrumentKind,
    /// Asset the instrument settles in (`[A-Za-z0-9._-]`, 1–64 bytes).
    pub asset: String,
    /// Contract multiplier (non-zero).
    pub multiplier: i64,
    /// Price move (futures, options) or floating minus fixed (swaps), minor units.
    pub price_move: i64,
    /// Premium per unit paid by the long side (options only; 0 otherwise).
    pub premium: i64,
}

impl Instrument {
    /// Cash flow per unit of quantity: `multiplier × (price_move − premium)`.
    pub fn unit(&self) -> i128 {
        i128::from(self.multiplier) * (i128::from(self.price_move) - i128::from(self.premium))
    }
}

/// Public bounds every input value must respect; they make the overflow check
/// possible before anything is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bounds {
    /// Largest |quantity| of one (counterparty, instrument) position.
    pub max_abs_quantity: i64,
    /// Largest |cash| of one (counterparty, instrument) obligation.
    pub max_abs_cash: i64,
}

impl Default for Bounds {
    fn default() -> Self {
        Self {
            max_abs_quantity: 1_000_000_000,
            max_abs_cash: 1_000_000_000_000,
        }
    }
}

/// A round's limit and collateral checks: every party also shares, per asset, its
/// collateral and credit limit, and the round settles only when
/// `net + collateral + limit ≥ 0` for every (party, asset), decided on shares
/// ([`super::limits`]) so that nobody learns the nets, collateral or limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitSettings {
    /// Largest collateral or limit one party may declare per asset (`0..=2^62`).
    pub max_cover: i64,
    /// When not all are covered, the verdict also names the parties that failed
    /// (otherwise it says only "not covered").
    pub reveal_failures: bool,
    /// Also open netting efficiency per asset: gross (bilateral) and net
    /// (multilateral) volume, as aggregates only. Costs `P·(P − 1)·A` more
    /// comparisons.
    pub efficiency: bool,
}

/// Largest `max_cover`: collateral + limit + any i64 net stays inside the
/// comparison's range `[−2^64, 2^64)`.
pub const MAX_COVER: i64 = 1 << 62;

/// The public definition of a round; every node and party works from the same one
/// (its [`RoundSpec::digest`] is bound into every bundle, output and settlement).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoundSpec {
    /// Round id.
    pub id: RoundId,
    /// Participants, in this order everywhere (party index = position).
    pub parties: Vec<Party>,
    /// Instruments with their marks, in this order everywhere.
    pub instruments: Vec<Instrument>,
    /// Bundles signed or received after this time (Unix seconds) are refused.
    pub cutoff: u64,
    /// The FROST key that signs the settlement batch.
    pub key: KeyId,
    /// Nodes that hold the shares (their roster indices are the evaluation points).
    pub committee: Committee,
    /// Shares needed to open a value (and at most `threshold − 1` nodes may collude).
    pub threshold: u16,
    /// Input bounds.
    pub bounds: Bounds,
    /// Limit and collateral checks (`None`: the round settles without them).
    pub limits: Option<LimitSettings>,
}

/// Checks a name against `[A-Za-z0-9._-]{1,64}`.
pub(crate) fn check_name(what: &str, name: &str) -> Result<(), ProtocolError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ProtocolError::InvalidParameters(format!(
            "{what} {name:?} must be 1-{MAX_NAME} characters of [A-Za-z0-9._-]"
        )))
    }
}

impl RoundSpec {
    /// Validates the definition: names, sizes, committee and threshold, units, and
    /// that no net the round can form overflows i64 (naming the asset).
    pub fn validate(&self) -> Result<(), ProtocolError> {
        let bad = |m: String| Err(ProtocolError::InvalidParameters(m));
        if self.parties.len() < 2 || self.parties.len() > MAX_PARTIES {
            return bad(format!("a round needs 2-{MAX_PARTIES} parties"));
        }
        if self.instruments.is_empty() || self.instruments.len() > MAX_INSTRUMENTS {
            return bad(format!("a round needs 1-{MAX_INSTRUMENTS} instruments"));
        }
        if self.values_per_party() > MAX_VALUES_PER_PARTY {
            return bad(format!(
                "{} values per party exceeds {MAX_VALUES_PER_PARTY}",
                self.values_per_party()
            ));
        }
        let mut seen = BTreeSet::new();
        for p in &self.parties {
            check_name("party", &p.name)?;
            if !seen.insert(p.name.as_str()) {
                return bad(format!("party {:?} is listed twice", p.name));
            }
            if ed25519_dalek::VerifyingKey::from_bytes(&p.sign_key)
                .map(|k| k.is_weak())
                .unwrap_or(true)
            {
                return bad(format!("party {:?} has an invalid sign_key", p.name));
            }
            let montgomery = curve25519_dalek::montgomery::MontgomeryPoint(p.seal_key);
            if montgomery.to_edwards(0).is_none_or(|e| e.is_small_order()) {
                return bad(format!(
                    "party {:?} has a low-order or invalid seal_key",
                    p.name
                ));
            }
        }
        let mut seen = BTreeSet::new();
        for i in &self.instruments {
            check_name("instrument", &i.name)?;
            check_name("asset", &i.asset)?;
            if !seen.insert(i.name.as_str()) {
                return bad(format!("instrument {:?} is listed twice", i.name));
            }
            if i.multiplier == 0 {
                return bad(format!("instrument {:?} has multiplier 0", i.name));
            }
            if i.kind != InstrumentKind::Option && i.premium != 0 {
                return bad(format!(
                    "instrument {:?}: only options carry a premium",
                    i.name
                ));
            }
            if i64::try_from(i.unit()).is_err() {
                return bad(format!(
                    "instrument {:?}: multiplier × (price_move − premium) overflows i64",
                    i.name
                ));
            }
        }
        let t = usize::from(self.threshold);
        let n = self.committee.len();
        if t < 2 || t > n {
            return bad(format!(
                "threshold {t} must be 2..={n} (the committee size)"
            ));
        }
        let b = self.bounds;
        let limit = i64::MAX / 2;
        if b.max_abs_quantity < 0
            || b.max_abs_cash < 0
            || b.max_abs_quantity > limit
            || b.max_abs_cash > limit
        {
            return bad(format!("bounds must be 0..={limit}"));
        }
        if let Some(l) = self.limits {
            if !(0..=MAX_COVER).contains(&l.max_cover) {
                return bad(format!("limits.max_cover must be 0..={MAX_COVER}"));
            }
            super::limits::check_committee(n, t)?;
        }
        self.check_overflow()
    }

    /// Refuses a round whose bilateral or multilateral nets could leave i64 for
    /// inputs within the bounds, naming the first such asset.
    fn check_overflow(&self) -> Result<(), ProtocolError> {
        let cps = (self.parties.len() - 1) as i128;
        for asset in self.assets() {
            let mut per_cp: i128 = 0;
            for i in self.instruments.iter().filter(|i| i.asset == asset) {
                let term = i
                    .unit()
                    .checked_abs()
                    .and_then(|u| u.checked_mul(i128::from(self.bounds.max_abs_quantity)))
                    .and_then(|v| v.checked_add(i128::from(self.bounds.max_abs_cash)));
                per_cp = match term.and_then(|v| per_cp.checked_add(v)) {
                    Some(v) => v,
                    None => return Err(ProtocolError::NettingOverflow { asset }),
                };
            }
            if per_cp.saturating_mul(cps) > i128::from(i64::MAX) {
                return Err(ProtocolError::NettingOverflow { asset });
            }
        }
        Ok(())
    }

    /// Settlement assets, sorted and distinct.
    pub fn assets(&self) -> Vec<String> {
        let set: BTreeSet<&str> = self.instruments.iter().map(|i| i.asset.as_str()).collect();
        set.into_iter().map(str::to_owned).collect()
    }

    /// Index of a party by name.
    pub fn party_index(&self, name: &str) -> Option<usize> {
        self.parties.iter().position(|p| p.name == name)
    }

    /// Index of an instrument by name.
    pub fn instrument_index(&self, name: &str) -> Option<usize> {
        self.instruments.iter().position(|i| i.name == name)
    }

    /// Secret values one party shares: (quantity, cash) per counterparty and
    /// instrument, dense (zero where there is no trade, so the shape reveals nothing).
    pub fn values_per_party(&self) -> usize {
        self.cover_start() + self.cover_len()
    }

    /// Index of the first cover value (after the counterparty blocks).
    pub fn cover_start(&self) -> usize {
        2 * self.parties.len().saturating_sub(1) * self.instruments.len()
    }

    /// Number of cover values: (collateral, limit) per asset when the round has
    /// limit checks, else 0.
    pub fn cover_len(&self) -> usize {
        if self.limits.is_some() {
            2 * self.assets().len()
        } else {
            0
        }
    }

    /// Position of asset `asset`'s collateral (`field` 0) or limit (`field` 1) in a
    /// party's value vector; `None` without limit checks.
    pub fn cover_index(&self, asset: usize, field: usize) -> Option<usize> {
        (self.limits.is_some() && field < 2 && asset < self.assets().len())
            .then(|| self.cover_start() + 2 * asset + field)
    }

    /// Blocks of a party's value vector, each with its own aggregate commitment:
    /// one per counterparty, then the cover block when the round has limit checks.
    pub fn block_count(&self) -> usize {
        self.parties.len().saturating_sub(1) + usize::from(self.limits.is_some())
    }

    /// The block value `e` belongs to.
    pub fn block_of(&self, e: usize) -> usize {
        if e >= self.cover_start() {
            self.parties.len().saturating_sub(1)
        } else {
            e / self.block_len()
        }
    }

    /// The value range of block `q`.
    pub fn block_range(&self, q: usize) -> core::ops::Range<usize> {
        if q + 1 >= self.parties.len() {
            self.cover_start()..self.values_per_party()
        } else {
            q * self.block_len()..(q + 1) * self.block_len()
        }
    }

    /// Position of (counterparty, instrument, field) in party `p`'s value vector;
    /// `field` is 0 for quantity, 1 for cash. `None` when `cp == p`.
    pub fn value_index(
        &self,
        p: usize,
        cp: usize,
        instrument: usize,
        field: usize,
    ) -> Option<usize> {
        if cp == p || cp >= self.parties.len() {
            return None;
        }
        let slot = if cp < p { cp } else { cp - 1 };
        Some((slot * self.instruments.len() + instrument) * 2 + field)
    }

    /// Counterparty of party `p` at `slot` (0-based, skipping `p`).
    pub fn counterparty(&self, p: usize, slot: usize) -> usize {
        if slot < p {
            slot
        } else {
            slot + 1
        }
    }

    /// For each instrument, the index of its asset in [`Self::assets`].
    pub fn asset_of_instruments(&self) -> Vec<usize> {
        let assets = self.assets();
        self.instruments
            .iter()
            .map(|i| assets.iter().position(|a| *a == i.asset).unwrap_or(0))
            .collect()
    }

    /// For every value of a party's vector, the asset it settles in and its
    /// coefficient in that asset's net (`unit` for a quantity, 1 for cash).
    pub fn net_terms(&self) -> Vec<(usize, i128)> {
        let asset_of = self.asset_of_instruments();
        let per_slot = self.instruments.len() * 2;
        let cover = self.cover_start();
        (0..self.values_per_party())
            .map(|e| {
                if e >= cover {
                    // Collateral and limits are not part of any net.
                    return ((e - cover) / 2, 0);
                }
                let i = (e % per_slot) / 2;
                let c = if e % 2 == 0 {
                    self.instruments[i].unit()
                } else {
                    1
                };
                (asset_of[i], c)
            })
            .collect()
    }

    /// Number of values in one counterparty block (quantity and cash per instrument).
    pub fn block_len(&self) -> usize {
        self.instruments.len() * 2
    }

    /// SHA-256 of the canonical encoding, bound into everything of the round.
    pub fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"quorate/netting/round/v1\0");
        h.update(postcard::to_allocvec(self).unwrap_or_default());
        h.finalize().into()
    }
}

/// A client's signature authorising a round: Ed25519 over
/// `"quorate/netting/round-auth/v1\0" ‖ spec digest`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoundAuthorization {
    /// The client's Ed25519 public key (must be a client in node policy allowed
    /// netting rounds on the round's key).
    pub client: [u8; 32],
    /// The signature.
    pub signature: Vec<u8>,
}

fn auth_message(spec: &RoundSpec) -> Vec<u8> {
    let mut m = b"quorate/netting/round-auth/v1\0".to_vec();
    m.extend_from_slice(&spec.digest());
    m
}

impl RoundSpec {
    /// Signs the round as its creating client.
    pub fn authorize(&self, client: &ed25519_dalek::SigningKey) -> RoundAuthorization {
        use ed25519_dalek::Signer as _;
        RoundAuthorization {
            client: client.verifying_key().to_bytes(),
            signature: client.sign(&auth_message(self)).to_bytes().to_vec(),
        }
    }

    /// Checks a client's authorisation of this round (strict Ed25519).
    pub fn verify_authorization(&self, auth: &RoundAuthorization) -> Result<(), ProtocolError> {
        let bad = || ProtocolError::InvalidRequest("round authorisation does not verify".into());
        let key = ed25519_dalek::VerifyingKey::from_bytes(&auth.client).map_err(|_| bad())?;
        let sig = ed25519_dalek::Signature::from_slice(&auth.signature).map_err(|_| bad())?;
        key.verify_strict(&auth_message(self), &sig)
            .map_err(|_| bad())
    }

    /// The session id every netting envelope of this round carries.
    pub fn session(&self) -> crate::ids::SessionId {
        let mut h = Sha256::new();
        h.update(b"quorate/netting/session/v1\0");
        h.update(self.id.0);
        crate::ids::SessionId(h.finalize().into())
    }
}

/// What a party signs to fetch its result from a coordinator:
/// `"quorate/netting/result-request/v1\0" ‖ round id (16) ‖ party name ‖ 0x00 ‖ at_ms (u64 BE)`.
pub fn result_request_message(round: &RoundId, party: &str, at_ms: u64) -> Vec<u8> {
    let mut m = b"quorate/netting/result-request/v1\0".to_vec();
    m.extend_from_slice(&round.0);
    m.extend_from_slice(party.as_bytes());
    m.push(0);
    m.extend_from_slice(&at_ms.to_be_bytes());
    m
}

/// What the creating client signs to close a round at a coordinator:
/// `"quorate/netting/close/v1\0" ‖ round id (16) ‖ at_ms (u64 BE)`.
pub fn close_message(round: &RoundId, at_ms: u64) -> Vec<u8> {
    let mut m = b"quorate/netting/close/v1\0".to_vec();
    m.extend_from_slice(&round.0);
    m.extend_from_slice(&at_ms.to_be_bytes());
    m
}
