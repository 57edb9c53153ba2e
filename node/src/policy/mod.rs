//! Per-client signing policy, evaluated by every node on every request
//! (security invariant 4: nodes enforce policy themselves).
//!
//! A [`Policy`] is parsed from TOML (format in the crate README) and validated as a
//! whole: unknown fields, bad keys and contradictory limits are errors naming the
//! client and field. A [`PolicyEngine`] holds the policy plus the state policy needs
//! across requests — rolling-window usage per client and asset, and the request
//! nonces seen (for replay protection) until their requests expire. Only an
//! [`Decision::Allow`] records usage and the nonce. [`PolicyEngine::reload`] swaps the
//! policy and keeps that state; a policy that fails to parse leaves the old one in
//! force.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque},
    fmt,
    path::{Path, PathBuf},
};

use ed25519_dalek::VerifyingKey;
use quorate_protocol::{
    ids::KeyId,
    key::GroupPublic,
    psbt::TransactionSummary,
    request::{SignedRequest, SigningRequest},
    suite::Ciphersuite,
};
use serde::{Deserialize, Serialize};

pub mod bitcoin;

pub use bitcoin::{BitcoinPolicy, Effect};

/// Policy file format version.
pub const POLICY_VERSION: u32 = 1;
/// Default bound on remembered request nonces.
pub const DEFAULT_MAX_TRACKED_NONCES: usize = 100_000;
/// Default bound on remembered request nonces of one client (its share of the
/// replay cache: one client's flood cannot fill the cache for the others).
pub const DEFAULT_MAX_TRACKED_NONCES_PER_CLIENT: usize = 10_000;
/// Default longest request lifetime (expiry minus now), seconds.
pub const DEFAULT_MAX_LIFETIME_SECS: u64 = 900;
/// Default rolling window, hours.
pub const DEFAULT_WINDOW_HOURS: u32 = 24;
/// Longest allowed request lifetime, seconds (7 days).
pub const MAX_LIFETIME_SECS_LIMIT: u64 = 7 * 24 * 3600;
/// Longest rolling window, hours (30 days).
pub const MAX_WINDOW_HOURS: u32 = 720;

const HOUR_MS: u64 = 3_600_000;

/// Errors loading a policy.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The file is not valid TOML or does not match the schema (the message names
    /// the line, column and key).
    #[error("policy does not parse: {0}")]
    Parse(String),
    /// A value is out of range or inconsistent.
    #[error("policy: {}{field}: {reason}", client.as_ref().map(|c| format!("client {c:?}: ")).unwrap_or_default())]
    Invalid {
        /// The client the problem is in, if any.
        client: Option<String>,
        /// The offending field.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// The file could not be read.
    #[error("policy file {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// The policy rule a request was refused by. The snake_case [`Rule::name`] is stable:
/// metrics labels and audit records use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Rule {
    /// The client key is not in the registry.
    UnknownClient,
    /// The request is malformed (version, message count).
    Malformed,
    /// The client signature does not verify.
    BadClientSignature,
    /// The request has expired.
    Expired,
    /// The request's expiry is further away than the client's maximum lifetime.
    LifetimeTooLong,
    /// The request nonce was seen before.
    Replay,
    /// The replay cache is full; refusing rather than forgetting nonces.
    ReplayCacheFull,
    /// The key offered for signing is not the key the client named.
    KeyMismatch,
    /// The client may not use this key.
    KeyNotAllowed,
    /// The client may not use this ciphersuite.
    SuiteNotAllowed,
    /// No limits are configured for this asset for this client.
    AssetNotAllowed,
    /// The amount exceeds the per-request limit.
    AmountLimit,
    /// The amount would exceed the rolling-window limit.
    WindowLimit,
    /// The asset's `window_quorum` exceeds the key's committee: no window
    /// certificate can ever be met.
    WindowQuorum,
    /// The destination is not on the allowlist.
    Destination,
    /// Not enough valid approvals.
    Approvals,
    /// Outside the allowed UTC hours.
    TimeWindow,
    /// The key signs netting settlement batches here (`[netting] settlement_keys`)
    /// and so takes no client signing request: a client allowed opaque messages
    /// must not get a settlement key's signature over a settlement-looking hash.
    SettlementKeyReserved,
    /// A raw (opaque message) request from a client whose policy lacks
    /// `allow_raw = true`.
    RawNotAllowed,
    /// A `bitcoin_psbt` request from a client without a `[bitcoin]` section.
    PsbtNotAllowed,
    /// The request's Bitcoin network is not the client's policy network.
    Network,
    /// The PSBT does not parse, or an input to sign cannot be signed (no
    /// `witness_utxo`, not this key, bad amounts); the detail names field and index.
    Transaction,
    /// An input's sighash type is not in the client's `sighash_types`.
    SighashType,
    /// The transaction's fee exceeds `max_fee`.
    Fee,
    /// The transaction's fee rate exceeds `max_fee_rate`.
    FeeRate,
}

impl Rule {
    /// Every rule, in evaluation order.
    pub const ALL: [Rule; 25] = [
        Self::UnknownClient,
        Self::Malformed,
        Self::BadClientSignature,
        Self::Expired,
        Self::LifetimeTooLong,
        Self::Replay,
        Self::KeyMismatch,
        Self::SettlementKeyReserved,
        Self::KeyNotAllowed,
        Self::SuiteNotAllowed,
        Self::RawNotAllowed,
        Self::PsbtNotAllowed,
        Self::Network,
        Self::Transaction,
        Self::SighashType,
        Self::Fee,
        Self::FeeRate,
        Self::AssetNotAllowed,
        Self::AmountLimit,
        Self::WindowQuorum,
        Self::WindowLimit,
        Self::Destination,
        Self::TimeWindow,
        Self::Approvals,
        Self::ReplayCacheFull,
    ];

    /// Stable snake_case name (metrics label, audit record).
    pub fn name(self) -> &'static str {
        match self {
            Self::UnknownClient => "unknown_client",
            Self::Malformed => "malformed",
            Self::BadClientSignature => "bad_client_signature",
            Self::Expired => "expired",
            Self::LifetimeTooLong => "lifetime_too_long",
            Self::Replay => "replay",
            Self::ReplayCacheFull => "replay_cache_full",
            Self::KeyMismatch => "key_mismatch",
            Self::KeyNotAllowed => "key_not_allowed",
            Self::SuiteNotAllowed => "suite_not_allowed",
            Self::AssetNotAllowed => "asset_not_allowed",
            Self::AmountLimit => "amount_limit",
            Self::WindowLimit => "window_limit",
            Self::WindowQuorum => "window_quorum",
            Self::Destination => "destination",
            Self::Approvals => "approvals",
            Self::TimeWindow => "time_window",
            Self::SettlementKeyReserved => "settlement_key_reserved",
            Self::RawNotAllowed => "raw_not_allowed",
            Self::PsbtNotAllowed => "psbt_not_allowed",
            Self::Network => "network",
            Self::Transaction => "transaction",
            Self::SighashType => "sighash_type",
            Self::Fee => "fee",
            Self::FeeRate => "fee_rate",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The outcome of evaluating one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Sign. Usage and the nonce have been recorded.
    Allow {
        /// The client's registered name.
        client: String,
    },
    /// Do not sign.
    Refuse {
        /// Which rule.
        rule: Rule,
        /// Human-readable detail (no secrets; safe to return to the coordinator).
        detail: String,
    },
}

impl Decision {
    /// Whether the request may be signed.
    pub fn is_allow(&self) -> bool {
        matches!(self, Self::Allow { .. })
    }

    /// The refusing rule, if refused.
    pub fn rule(&self) -> Option<Rule> {
        match self {
            Self::Allow { .. } => None,
            Self::Refuse { rule, .. } => Some(*rule),
        }
    }
}

/// Longest refusal detail kept (bytes): details can quote client input (a PSBT
/// decoder's error names the offending key), and they go to the audit log, the
/// refused cache and the coordinator.
pub const MAX_DETAIL_LEN: usize = 1024;

fn refuse(rule: Rule, detail: impl Into<String>) -> Decision {
    let mut detail = detail.into();
    if detail.len() > MAX_DETAIL_LEN {
        let mut end = MAX_DETAIL_LEN;
        while !detail.is_char_boundary(end) {
            end -= 1;
        }
        detail.truncate(end);
        detail.push('…');
    }
    Decision::Refuse { rule, detail }
}

// ---------------------------------------------------------------------------
// File schema

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    version: u32,
    max_tracked_nonces: Option<usize>,
    max_tracked_nonces_per_client: Option<usize>,
    netting: Option<NettingFile>,
    lifecycle: Option<crate::lifecycle::policy::LifecycleFile>,
    #[serde(default)]
    clients: BTreeMap<String, ClientFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NettingFile {
    #[serde(default)]
    settlement_keys: Vec<String>,
    #[serde(default)]
    max_transfer: BTreeMap<String, i64>,
    default_max_transfer: Option<i64>,
    #[serde(default)]
    require_limits: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientFile {
    public_key: String,
    keys: Vec<String>,
    suites: Option<Vec<Ciphersuite>>,
    destinations: Option<Vec<String>>,
    max_lifetime_secs: Option<u64>,
    window_hours: Option<u32>,
    hours_utc: Option<HoursFile>,
    #[serde(default)]
    limits: BTreeMap<String, LimitFile>,
    approvals: Option<ApprovalsFile>,
    #[serde(default)]
    netting: bool,
    netting_parties: Option<BTreeMap<String, String>>,
    #[serde(default)]
    allow_raw: bool,
    bitcoin: Option<bitcoin::BitcoinFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HoursFile {
    from: u8,
    to: u8,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitFile {
    per_request: u64,
    per_window: u64,
    window_quorum: Option<crate::window::policy::QuorumFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApprovalsFile {
    required: usize,
    approvers: BTreeMap<String, String>,
}

// ---------------------------------------------------------------------------
// Validated policy

/// Which keys a client may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySet {
    /// Any key (`keys = ["*"]`).
    All,
    /// Only these.
    Only(BTreeSet<KeyId>),
}

impl KeySet {
    /// Whether `key` is in the set.
    pub fn contains(&self, key: &KeyId) -> bool {
        match self {
            Self::All => true,
            Self::Only(ids) => ids.contains(key),
        }
    }

    /// Parses `["*"]` or a list of hex key ids; errors name `field`.
    fn parse(client: Option<&str>, field: &str, list: &[String]) -> Result<Self, PolicyError> {
        if list.iter().any(|k| k == "*") {
            if list.len() != 1 {
                return Err(invalid(
                    client,
                    field,
                    "\"*\" cannot be combined with key ids",
                ));
            }
            return Ok(Self::All);
        }
        let mut set = BTreeSet::new();
        for k in list {
            let id = KeyId::from_hex(k).map_err(|_| {
                invalid(
                    client,
                    field,
                    format!("{k:?} is not a key id (16 bytes of hex)"),
                )
            })?;
            set.insert(id);
        }
        Ok(Self::Only(set))
    }
}

/// Limits for one asset, in its minor units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AssetLimit {
    /// Largest amount in one request.
    pub per_request: u64,
    /// Largest total of allowed requests within the rolling window.
    pub per_window: u64,
    /// Window approvals of the key's committee a request needs before this node
    /// signs it (`None`: no certificate; see [`crate::window`]).
    pub window_quorum: Option<crate::window::policy::WindowQuorum>,
}

/// k-of-m approvals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approvals {
    /// k.
    pub required: usize,
    /// The m approvers: name → Ed25519 public key.
    pub approvers: BTreeMap<String, [u8; 32]>,
}

/// Allowed hours, UTC: `from` inclusive to `to` exclusive, wrapping past midnight
/// when `from > to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoursUtc {
    /// First allowed hour (0–23).
    pub from: u8,
    /// First hour no longer allowed (0–24).
    pub to: u8,
}

impl HoursUtc {
    fn contains(&self, hour: u8) -> bool {
        if self.from < self.to {
            (self.from..self.to).contains(&hour)
        } else {
            hour >= self.from || hour < self.to
        }
    }
}

/// One registered client and its rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientPolicy {
    /// Registered name.
    pub name: String,
    /// Ed25519 client key.
    pub public_key: [u8; 32],
    /// Keys it may use.
    pub keys: KeySet,
    /// Ciphersuites it may use.
    pub suites: BTreeSet<Ciphersuite>,
    /// Destination allowlist (`None`: any destination).
    pub destinations: Option<BTreeSet<String>>,
    /// Longest request lifetime (expiry − now), ms.
    pub max_lifetime_ms: u64,
    /// Rolling window length, ms.
    pub window_ms: u64,
    /// Allowed hours (`None`: any time).
    pub hours_utc: Option<HoursUtc>,
    /// Limits per asset; an asset not listed is refused.
    pub limits: BTreeMap<String, AssetLimit>,
    /// Required approvals (`None`: none).
    pub approvals: Option<Approvals>,
    /// May create netting rounds on its allowed keys and suites (`netting = true`).
    pub netting: bool,
    /// The parties its rounds may name: party name → Ed25519 `sign_key`
    /// (`netting_parties`). `None`: any parties (the client is trusted with the
    /// parties' identities).
    pub netting_parties: Option<BTreeMap<String, [u8; 32]>>,
    /// May send raw (opaque message) requests (`allow_raw = true`): nodes then
    /// see only its declared purpose.
    pub allow_raw: bool,
    /// May send `bitcoin_psbt` requests under these rules (`[bitcoin]`).
    pub bitcoin: Option<BitcoinPolicy>,
}

/// How large a settlement transfer of one asset this node signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferLimit {
    /// At most this |amount| (minor units).
    Max(u64),
    /// No limit (no `max_transfer` entry, no `default_max_transfer`, and
    /// `require_limits = false`).
    Unlimited,
    /// No limit is configured and `require_limits = true`: refused.
    Unlisted,
}

/// `[netting]` limits on the settlement batches this node signs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct SettlementLimits {
    max_transfer: BTreeMap<String, u64>,
    default_max_transfer: Option<u64>,
    require_limits: bool,
}

/// A validated policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    clients: BTreeMap<String, ClientPolicy>,
    by_key: HashMap<[u8; 32], String>,
    max_tracked_nonces: usize,
    max_tracked_nonces_per_client: usize,
    /// Keys this node signs netting settlement batches with (`None`: none).
    settlement_keys: Option<KeySet>,
    /// Per-asset bounds on settlement transfers.
    settlement_limits: SettlementLimits,
    /// Who approves refresh and resharing (`[lifecycle]`).
    lifecycle: crate::lifecycle::policy::LifecycleApprovers,
}

fn invalid(client: Option<&str>, field: &str, reason: impl Into<String>) -> PolicyError {
    PolicyError::Invalid {
        client: client.map(str::to_owned),
        field: field.to_owned(),
        reason: reason.into(),
    }
}

fn parse_ed25519(client: &str, field: &str, s: &str) -> Result<[u8; 32], PolicyError> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).map_err(|_| {
        invalid(
            Some(client),
            field,
            "must be a 32-byte Ed25519 public key in hex (64 characters)",
        )
    })?;
    let key = VerifyingKey::from_bytes(&out)
        .map_err(|_| invalid(Some(client), field, "is not a valid Ed25519 public key"))?;
    if key.is_weak() {
        return Err(invalid(Some(client), field, "is a weak (small-order) key"));
    }
    Ok(out)
}

impl Policy {
    /// Who approves lifecycle operations on this node's keys.
    pub fn lifecycle(&self) -> &crate::lifecycle::policy::LifecycleApprovers {
        &self.lifecycle
    }

    /// Parses and validates a policy file's text.
    pub fn from_toml(text: &str) -> Result<Self, PolicyError> {
        let file: PolicyFile =
            toml::from_str(text).map_err(|e| PolicyError::Parse(e.to_string()))?;
        Self::validate(file)
    }

    /// Reads, parses and validates a policy file.
    pub fn from_file(path: &Path) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text)
    }

    fn validate(file: PolicyFile) -> Result<Self, PolicyError> {
        if file.version != POLICY_VERSION {
            return Err(invalid(
                None,
                "version",
                format!(
                    "unsupported version {} (expected {POLICY_VERSION})",
                    file.version
                ),
            ));
        }
        let max_tracked_nonces = file
            .max_tracked_nonces
            .unwrap_or(DEFAULT_MAX_TRACKED_NONCES);
        if max_tracked_nonces == 0 {
            return Err(invalid(None, "max_tracked_nonces", "must be at least 1"));
        }
        let max_tracked_nonces_per_client = file
            .max_tracked_nonces_per_client
            .unwrap_or(DEFAULT_MAX_TRACKED_NONCES_PER_CLIENT.min(max_tracked_nonces));
        if max_tracked_nonces_per_client == 0 {
            return Err(invalid(
                None,
                "max_tracked_nonces_per_client",
                "must be at least 1",
            ));
        }
        let (settlement_keys, settlement_limits) = match file.netting {
            None => (None, SettlementLimits::default()),
            Some(n) => {
                let keys = if n.settlement_keys.is_empty() {
                    None
                } else {
                    Some(KeySet::parse(
                        None,
                        "netting.settlement_keys",
                        &n.settlement_keys,
                    )?)
                };
                let limit = |field: String, v: i64| {
                    u64::try_from(v).map_err(|_| {
                        invalid(
                            None,
                            &field,
                            format!("{v} is negative; a limit is a largest |amount|"),
                        )
                    })
                };
                let mut max_transfer = BTreeMap::new();
                for (asset, v) in n.max_transfer {
                    if asset.is_empty() {
                        return Err(invalid(
                            None,
                            "netting.max_transfer",
                            "an asset name is empty",
                        ));
                    }
                    let v = limit(format!("netting.max_transfer.{asset}"), v)?;
                    max_transfer.insert(asset, v);
                }
                let default_max_transfer = n
                    .default_max_transfer
                    .map(|v| limit("netting.default_max_transfer".into(), v))
                    .transpose()?;
                (
                    keys,
                    SettlementLimits {
                        max_transfer,
                        default_max_transfer,
                        require_limits: n.require_limits,
                    },
                )
            }
        };
        let lifecycle = crate::lifecycle::policy::validate(file.lifecycle)?;
        let mut clients = BTreeMap::new();
        let mut by_key: HashMap<[u8; 32], String> = HashMap::new();
        for (name, c) in file.clients {
            let client = Self::validate_client(&name, c)?;
            if let Some(other) = by_key.insert(client.public_key, name.clone()) {
                return Err(invalid(
                    Some(&name),
                    "public_key",
                    format!("the same key is registered for client {other:?}"),
                ));
            }
            clients.insert(name, client);
        }
        Ok(Self {
            clients,
            by_key,
            max_tracked_nonces,
            max_tracked_nonces_per_client,
            settlement_keys,
            settlement_limits,
            lifecycle,
        })
    }

    fn validate_client(name: &str, c: ClientFile) -> Result<ClientPolicy, PolicyError> {
        let n = Some(name);
        if name.is_empty() {
            return Err(invalid(None, "clients", "a client name is empty"));
        }
        let public_key = parse_ed25519(name, "public_key", &c.public_key)?;

        let keys = if c.keys.is_empty() {
            return Err(invalid(
                n,
                "keys",
                "is empty; list key ids or [\"*\"] for all keys",
            ));
        } else {
            KeySet::parse(n, "keys", &c.keys)?
        };

        let suites: BTreeSet<Ciphersuite> = match c.suites {
            None => Ciphersuite::ALL.into_iter().collect(),
            Some(list) if list.is_empty() => {
                return Err(invalid(
                    n,
                    "suites",
                    "is empty; omit it to allow every suite",
                ))
            }
            Some(list) => list.into_iter().collect(),
        };

        let destinations =
            match c.destinations {
                None => None,
                Some(list) if list.is_empty() => return Err(invalid(
                    n,
                    "destinations",
                    "is empty (every request would be refused); omit it to allow any destination",
                )),
                Some(list) => {
                    if list.iter().any(String::is_empty) {
                        return Err(invalid(n, "destinations", "contains an empty destination"));
                    }
                    Some(list.into_iter().collect())
                }
            };

        let lifetime = c.max_lifetime_secs.unwrap_or(DEFAULT_MAX_LIFETIME_SECS);
        if lifetime == 0 || lifetime > MAX_LIFETIME_SECS_LIMIT {
            return Err(invalid(
                n,
                "max_lifetime_secs",
                format!("must be 1 to {MAX_LIFETIME_SECS_LIMIT}"),
            ));
        }
        let window_hours = c.window_hours.unwrap_or(DEFAULT_WINDOW_HOURS);
        if window_hours == 0 || window_hours > MAX_WINDOW_HOURS {
            return Err(invalid(
                n,
                "window_hours",
                format!("must be 1 to {MAX_WINDOW_HOURS}"),
            ));
        }

        let hours_utc = match c.hours_utc {
            None => None,
            Some(h) => {
                if h.from > 23 || h.to > 24 {
                    return Err(invalid(n, "hours_utc", "from must be 0–23 and to 0–24"));
                }
                if h.from == h.to || (h.from == 0 && h.to == 24) {
                    return Err(invalid(
                        n,
                        "hours_utc",
                        "from and to describe an empty or full day; omit hours_utc to allow any time",
                    ));
                }
                Some(HoursUtc {
                    from: h.from,
                    to: h.to,
                })
            }
        };

        // A netting-only client signs nothing through requests, so it needs no limits.
        if c.limits.is_empty() && !c.netting {
            return Err(invalid(
                n,
                "limits",
                "no asset limits (every request would be refused); add [clients.<name>.limits.<ASSET>]",
            ));
        }
        let mut limits = BTreeMap::new();
        for (asset, l) in c.limits {
            let field = format!("limits.{asset}");
            if asset.is_empty() {
                return Err(invalid(n, "limits", "an asset name is empty"));
            }
            if l.per_request == 0 {
                return Err(invalid(n, &field, "per_request must be positive"));
            }
            if l.per_request > l.per_window {
                return Err(invalid(
                    n,
                    &field,
                    format!(
                        "per_request ({}) exceeds per_window ({})",
                        l.per_request, l.per_window
                    ),
                ));
            }
            let window_quorum = crate::window::policy::validate(name, &field, l.window_quorum)?;
            limits.insert(
                asset,
                AssetLimit {
                    per_request: l.per_request,
                    per_window: l.per_window,
                    window_quorum,
                },
            );
        }

        let approvals = match c.approvals {
            None => None,
            Some(a) => {
                if a.required == 0 {
                    return Err(invalid(
                        n,
                        "approvals.required",
                        "must be at least 1 (omit [approvals] for none)",
                    ));
                }
                if a.required > a.approvers.len() {
                    return Err(invalid(
                        n,
                        "approvals.required",
                        format!(
                            "requires {} approvals but only {} approvers are listed",
                            a.required,
                            a.approvers.len()
                        ),
                    ));
                }
                let mut approvers = BTreeMap::new();
                let mut seen = HashSet::new();
                for (who, hex_key) in a.approvers {
                    let field = format!("approvals.approvers.{who}");
                    let key = parse_ed25519(name, &field, &hex_key)?;
                    if key == public_key {
                        return Err(invalid(
                            n,
                            &field,
                            "is the client's own key; approvals must come from other keys",
                        ));
                    }
                    if !seen.insert(key) {
                        return Err(invalid(n, &field, "the same key is listed twice"));
                    }
                    approvers.insert(who, key);
                }
                Some(Approvals {
                    required: a.required,
                    approvers,
                })
            }
        };

        let netting_parties = match c.netting_parties {
            None => None,
            Some(_) if !c.netting => {
                return Err(invalid(
                    n,
                    "netting_parties",
                    "is set but netting = false (the client creates no rounds)",
                ))
            }
            Some(list) if list.is_empty() => {
                return Err(invalid(
                    n,
                    "netting_parties",
                    "is empty (every round would be refused); omit it to allow any parties",
                ))
            }
            Some(list) => {
                let mut parties = BTreeMap::new();
                for (party, hex_key) in list {
                    let field = format!("netting_parties.{party}");
                    let valid_name = !party.is_empty()
                        && party.len() <= 64
                        && party
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
                    if !valid_name {
                        return Err(invalid(
                            n,
                            &field,
                            "a party name is 1-64 characters of [A-Za-z0-9._-]",
                        ));
                    }
                    let key = parse_ed25519(name, &field, &hex_key)?;
                    parties.insert(party, key);
                }
                Some(parties)
            }
        };

        let bitcoin = c
            .bitcoin
            .map(|b| BitcoinPolicy::parse(name, b))
            .transpose()?;
        if let Some(b) = bitcoin.as_ref().filter(|b| !limits.contains_key(&b.asset)) {
            return Err(invalid(
                n,
                "bitcoin.asset",
                format!(
                    "{:?} has no [clients.{name}.limits.{}] (every transaction would be refused)",
                    b.asset, b.asset
                ),
            ));
        }
        Ok(ClientPolicy {
            allow_raw: c.allow_raw,
            bitcoin,
            name: name.to_owned(),
            public_key,
            keys,
            suites,
            destinations,
            max_lifetime_ms: lifetime * 1000,
            window_ms: u64::from(window_hours) * HOUR_MS,
            hours_utc,
            limits,
            approvals,
            netting: c.netting,
            netting_parties,
        })
    }

    /// The registered clients, by name.
    pub fn clients(&self) -> &BTreeMap<String, ClientPolicy> {
        &self.clients
    }

    /// The client registered with this Ed25519 key.
    pub fn client_by_key(&self, key: &[u8; 32]) -> Option<&ClientPolicy> {
        self.by_key.get(key).and_then(|n| self.clients.get(n))
    }

    /// Whether this node signs netting settlement batches with `key`
    /// (`[netting] settlement_keys`; none by default).
    pub fn settlement_allowed(&self, key: &KeyId) -> bool {
        self.settlement_keys
            .as_ref()
            .is_some_and(|keys| keys.contains(key))
    }

    /// Whether `key` is reserved for settlement batches, so no client request may
    /// sign with it: a key listed by id in `[netting] settlement_keys`. `["*"]`
    /// lets every key sign settlements and reserves none (a client allowed opaque
    /// messages on a key could then obtain a signature over a settlement-shaped
    /// hash: list settlement keys by id in production).
    pub fn settlement_key_reserved(&self, key: &KeyId) -> bool {
        matches!(&self.settlement_keys, Some(KeySet::Only(keys)) if keys.contains(key))
    }

    /// The largest settlement transfer of `asset` this node signs
    /// (`[netting] max_transfer`, `default_max_transfer`, `require_limits`).
    pub fn settlement_transfer_limit(&self, asset: &str) -> TransferLimit {
        let l = &self.settlement_limits;
        match l
            .max_transfer
            .get(asset)
            .copied()
            .or(l.default_max_transfer)
        {
            Some(max) => TransferLimit::Max(max),
            None if l.require_limits => TransferLimit::Unlisted,
            None => TransferLimit::Unlimited,
        }
    }

    /// Bound on remembered request nonces.
    pub fn max_tracked_nonces(&self) -> usize {
        self.max_tracked_nonces
    }

    /// Bound on remembered request nonces of one client.
    pub fn max_tracked_nonces_per_client(&self) -> usize {
        self.max_tracked_nonces_per_client
    }
}

// ---------------------------------------------------------------------------
// Engine

type NonceKey = ([u8; 32], [u8; 16]);
/// (client key, asset).
type UsageKey = ([u8; 32], String);
/// Allowed (time ms, amount), oldest first.
type UsageLog = VecDeque<(u64, u64)>;

/// A policy plus the state it needs across requests.
#[derive(Debug)]
pub struct PolicyEngine {
    policy: Policy,
    /// Allowed amounts per (client key, asset): (time, amount), oldest first.
    usage: HashMap<UsageKey, UsageLog>,
    nonces: HashSet<NonceKey>,
    /// (expiry, client, nonce): forgets nonces once their request has expired.
    nonce_expiry: BTreeSet<(u64, [u8; 32], [u8; 16])>,
    /// Remembered nonces per client (for the per-client quota).
    nonces_per_client: HashMap<[u8; 32], usize>,
}

impl PolicyEngine {
    /// An engine with empty state.
    pub fn new(policy: Policy) -> Self {
        Self {
            policy,
            usage: HashMap::new(),
            nonces: HashSet::new(),
            nonce_expiry: BTreeSet::new(),
            nonces_per_client: HashMap::new(),
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Replaces the policy; usage and nonce state are kept.
    pub fn reload(&mut self, policy: Policy) {
        self.policy = policy;
    }

    /// Parses `text` and, if valid, replaces the policy. On error the old policy stays
    /// in force and the error is returned.
    pub fn reload_toml(&mut self, text: &str) -> Result<(), PolicyError> {
        self.reload(Policy::from_toml(text)?);
        Ok(())
    }

    /// Reads `path` and, if valid, replaces the policy (SIGHUP). On error the old
    /// policy stays in force and the error is returned.
    pub fn reload_file(&mut self, path: &Path) -> Result<(), PolicyError> {
        self.reload(Policy::from_file(path)?);
        Ok(())
    }

    /// Number of remembered request nonces.
    pub fn tracked_nonces(&self) -> usize {
        self.nonces.len()
    }

    /// Amount of `asset` allowed for the client with key `client` within its current
    /// rolling window ending at `now_ms`.
    pub fn window_usage(&self, client: &[u8; 32], asset: &str, now_ms: u64) -> u64 {
        let window = self
            .policy
            .client_by_key(client)
            .map(|c| c.window_ms)
            .unwrap_or(0);
        self.usage
            .get(&(*client, asset.to_owned()))
            .map(|q| Self::sum_since(q, now_ms.saturating_sub(window)))
            .unwrap_or(0)
    }

    fn sum_since(q: &UsageLog, start_exclusive: u64) -> u64 {
        q.iter()
            .filter(|(t, _)| *t > start_exclusive)
            .fold(0u64, |acc, (_, a)| acc.saturating_add(*a))
    }

    fn forget_expired(&mut self, now_ms: u64) {
        while let Some(&first) = self.nonce_expiry.first() {
            if first.0 >= now_ms {
                break;
            }
            self.nonce_expiry.remove(&first);
            if self.nonces.remove(&(first.1, first.2)) {
                if let Some(n) = self.nonces_per_client.get_mut(&first.1) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        self.nonces_per_client.remove(&first.1);
                    }
                }
            }
        }
    }

    fn remember_nonce(&mut self, client: [u8; 32], nonce: [u8; 16], expires_at_ms: u64) {
        if self.nonces.insert((client, nonce)) {
            self.nonce_expiry.insert((expires_at_ms, client, nonce));
            *self.nonces_per_client.entry(client).or_default() += 1;
        }
    }

    /// Re-records a request this node allowed at `at_ms` (replayed from its audit log
    /// at start-up): its amount counts against the client's rolling window and its
    /// nonce, if known and unexpired at `now_ms`, is refused as a replay. Entries
    /// must be given oldest first.
    pub fn restore_allowed(
        &mut self,
        client: [u8; 32],
        asset: &str,
        amount: u64,
        at_ms: u64,
        nonce: Option<([u8; 16], u64)>,
        now_ms: u64,
    ) {
        if let Some((nonce, expires_at_ms)) = nonce {
            if expires_at_ms >= now_ms {
                self.remember_nonce(client, nonce, expires_at_ms);
            }
        }
        // A client since removed or with a shorter window keeps at most the longest
        // window's worth; evaluation filters by the window in force anyway.
        let window_ms = self
            .policy
            .client_by_key(&client)
            .map_or(u64::from(MAX_WINDOW_HOURS) * HOUR_MS, |c| c.window_ms);
        if at_ms > now_ms.saturating_sub(window_ms) && amount > 0 {
            self.usage
                .entry((client, asset.to_owned()))
                .or_default()
                .push_back((at_ms, amount));
        }
    }

    /// Decides whether to contribute to signing `req` with `key` at `now_ms` (Unix ms):
    /// [`Self::authenticate`], then [`Self::evaluate_authenticated`].
    pub fn evaluate(&mut self, req: &SignedRequest, key: &GroupPublic, now_ms: u64) -> Decision {
        if let Err(refused) = self.authenticate(req) {
            return refused;
        }
        self.evaluate_authenticated(req, key, now_ms)
    }

    /// Who is asking, checked before anything about a request is recorded: the client
    /// is registered, the request is well-formed (every bound of
    /// [`SigningRequest::validate`]) and the client's signature verifies. Returns the
    /// client's registered name, or the refusal.
    pub fn authenticate(&self, req: &SignedRequest) -> Result<String, Decision> {
        let r: &SigningRequest = &req.request;
        let Some(client) = self.policy.client_by_key(&r.client) else {
            return Err(refuse(
                Rule::UnknownClient,
                format!("client key {} is not registered", hex::encode(r.client)),
            ));
        };
        if let Err(e) = r.validate() {
            return Err(refuse(Rule::Malformed, e.to_string()));
        }
        if req.verify_client().is_err() {
            return Err(refuse(
                Rule::BadClientSignature,
                format!("signature of client {:?} does not verify", client.name),
            ));
        }
        Ok(client.name.clone())
    }

    /// The rules after [`Self::authenticate`] (which the caller has run), in order:
    /// expiry, lifetime, replay, key match, settlement key reserved, key and suite allowed, asset, per-request
    /// limit, destination, hours, approvals, rolling-window limit, replay-cache room.
    /// Only an allow records the nonce and the amount.
    pub fn evaluate_authenticated(
        &mut self,
        req: &SignedRequest,
        key: &GroupPublic,
        now_ms: u64,
    ) -> Decision {
        self.evaluate_parsed(req, key, now_ms, None)
    }

    /// [`Self::evaluate_authenticated`] with the request's transaction already
    /// parsed (`SigningRequest::transaction` under `key`), so it is not parsed again.
    pub fn evaluate_parsed(
        &mut self,
        req: &SignedRequest,
        key: &GroupPublic,
        now_ms: u64,
        parsed: Option<&TransactionSummary>,
    ) -> Decision {
        self.forget_expired(now_ms);
        let r: &SigningRequest = &req.request;
        let Some(client) = self.policy.client_by_key(&r.client) else {
            return refuse(
                Rule::UnknownClient,
                format!("client key {} is not registered", hex::encode(r.client)),
            );
        };
        if let Err(refused) = Self::lifetime_rules(client, r, now_ms) {
            return refused;
        }
        let nonce_key = (r.client, r.nonce);
        if self.nonces.contains(&nonce_key) {
            return refuse(
                Rule::Replay,
                format!("request nonce {} was already used", hex::encode(r.nonce)),
            );
        }
        let (limit, p) = match Self::static_rules(&self.policy, client, req, key, now_ms, parsed) {
            Ok(ok) => ok,
            Err(refused) => return refused,
        };
        let usage_key = (r.client, p.asset.clone());
        let window_start = now_ms.saturating_sub(client.window_ms);
        let used = self
            .usage
            .get(&usage_key)
            .map(|q| Self::sum_since(q, window_start))
            .unwrap_or(0);
        match used.checked_add(p.amount) {
            Some(total) if total <= limit.per_window => {}
            _ => {
                return refuse(
                    Rule::WindowLimit,
                    format!(
                        "{} {} on top of {used} used in the last {} h exceeds {}",
                        p.amount,
                        p.asset,
                        client.window_ms / HOUR_MS,
                        limit.per_window
                    ),
                )
            }
        }
        if self.nonces.len() >= self.policy.max_tracked_nonces {
            return refuse(
                Rule::ReplayCacheFull,
                format!(
                    "{} unexpired request nonces are tracked; refusing until some expire",
                    self.nonces.len()
                ),
            );
        }
        let of_client = self.nonces_per_client.get(&r.client).copied().unwrap_or(0);
        if of_client >= self.policy.max_tracked_nonces_per_client {
            return refuse(
                Rule::ReplayCacheFull,
                format!(
                    "client {:?} holds {of_client} unexpired request nonces \
                     (max_tracked_nonces_per_client = {}); refusing its requests until \
                     some expire",
                    client.name, self.policy.max_tracked_nonces_per_client
                ),
            );
        }

        // Allowed: record the nonce and the amount.
        let name = client.name.clone();
        let window_ms = client.window_ms;
        self.remember_nonce(nonce_key.0, nonce_key.1, r.expires_at_ms);
        let q = self.usage.entry(usage_key).or_default();
        while q
            .front()
            .is_some_and(|(t, _)| *t <= now_ms.saturating_sub(window_ms))
        {
            q.pop_front();
        }
        q.push_back((now_ms, p.amount));
        Decision::Allow { client: name }
    }

    /// Re-checks a request this node allowed earlier, when the coordinator starts
    /// another session for it: the client must still authenticate and the current
    /// policy (after any reload) must still allow it — every rule except replay, the
    /// lifetime bound and the rolling window, which were applied (and counted) when it
    /// was first allowed.
    pub fn recheck(&self, req: &SignedRequest, key: &GroupPublic, now_ms: u64) -> Decision {
        self.recheck_parsed(req, key, now_ms, None)
    }

    /// [`Self::recheck`] with the request's transaction already parsed (kept with
    /// the approval), so a retry does not parse the PSBT again.
    pub fn recheck_parsed(
        &self,
        req: &SignedRequest,
        key: &GroupPublic,
        now_ms: u64,
        parsed: Option<&TransactionSummary>,
    ) -> Decision {
        let name = match self.authenticate(req) {
            Ok(name) => name,
            Err(refused) => return refused,
        };
        let r = &req.request;
        if let Err(refused) = Self::expiry_rule(r, now_ms) {
            return refused;
        }
        let Some(client) = self.policy.client_by_key(&r.client) else {
            return refuse(Rule::UnknownClient, "client is no longer registered");
        };
        match Self::static_rules(&self.policy, client, req, key, now_ms, parsed) {
            Ok(_) => Decision::Allow { client: name },
            Err(refused) => refused,
        }
    }

    fn expiry_rule(r: &SigningRequest, now_ms: u64) -> Result<(), Decision> {
        if now_ms > r.expires_at_ms {
            return Err(refuse(
                Rule::Expired,
                format!("expired at {} ms, now {now_ms} ms", r.expires_at_ms),
            ));
        }
        Ok(())
    }

    fn lifetime_rules(
        client: &ClientPolicy,
        r: &SigningRequest,
        now_ms: u64,
    ) -> Result<(), Decision> {
        Self::expiry_rule(r, now_ms)?;
        let lifetime = r.expires_at_ms - now_ms;
        if lifetime > client.max_lifetime_ms {
            return Err(refuse(
                Rule::LifetimeTooLong,
                format!(
                    "expires in {lifetime} ms; at most {} ms allowed",
                    client.max_lifetime_ms
                ),
            ));
        }
        Ok(())
    }

    /// What `req` does for its client under the policy in force ([`Effect`]):
    /// the declaration of a raw request, or the parsed transaction of a PSBT
    /// request; the refusal if the client may not send it or it does not parse.
    pub fn effect(
        &self,
        req: &SigningRequest,
        key: &GroupPublic,
        parsed: Option<&TransactionSummary>,
    ) -> Result<Effect, Decision> {
        let Some(client) = self.policy.client_by_key(&req.client) else {
            return Err(refuse(
                Rule::UnknownClient,
                format!("client key {} is not registered", hex::encode(req.client)),
            ));
        };
        bitcoin::effect(client, req, key, parsed)
    }

    /// The rules that depend only on the request and the current policy: key match,
    /// key not reserved for settlements, key and suite allowed, the request's
    /// [`Effect`] (raw allowed, or the transaction's network, parse, sighash types
    /// and fees), asset and per-request limit, destinations, hours, approvals.
    /// Returns the asset's limits and the effect.
    fn static_rules<'a>(
        policy: &Policy,
        client: &'a ClientPolicy,
        req: &SignedRequest,
        key: &GroupPublic,
        now_ms: u64,
        parsed: Option<&TransactionSummary>,
    ) -> Result<(&'a AssetLimit, Effect), Decision> {
        let r: &SigningRequest = &req.request;
        if key.key_id != r.key_id {
            return Err(refuse(
                Rule::KeyMismatch,
                format!(
                    "request names key {} but key {} was offered",
                    r.key_id, key.key_id
                ),
            ));
        }
        if policy.settlement_key_reserved(&r.key_id) {
            return Err(refuse(
                Rule::SettlementKeyReserved,
                format!(
                    "key {} signs netting settlement batches on this node \
                     ([netting] settlement_keys) and takes no client requests",
                    r.key_id
                ),
            ));
        }
        if let KeySet::Only(ids) = &client.keys {
            if !ids.contains(&r.key_id) {
                return Err(refuse(
                    Rule::KeyNotAllowed,
                    format!("client {:?} may not use key {}", client.name, r.key_id),
                ));
            }
        }
        if !client.suites.contains(&key.suite) {
            return Err(refuse(
                Rule::SuiteNotAllowed,
                format!("client {:?} may not use {}", client.name, key.suite),
            ));
        }
        let p = bitcoin::effect(client, r, key, parsed)?;
        let Some(limit) = client.limits.get(&p.asset) else {
            return Err(refuse(
                Rule::AssetNotAllowed,
                format!("no limits for asset {:?}", p.asset),
            ));
        };
        if p.amount > limit.per_request {
            return Err(refuse(
                Rule::AmountLimit,
                format!(
                    "{} {} exceeds the per-request limit {}",
                    p.amount, p.asset, limit.per_request
                ),
            ));
        }
        crate::window::quorum_rule(limit, key)
            .map_err(|detail| refuse(Rule::WindowQuorum, detail))?;
        if let Some(allowed) = &client.destinations {
            if let Some((from, d)) = p.destinations.iter().find(|(_, d)| !allowed.contains(d)) {
                return Err(refuse(
                    Rule::Destination,
                    format!("destination {d:?} ({from}) is not on the allowlist"),
                ));
            }
        }
        if let Some(hours) = &client.hours_utc {
            let hour = ((now_ms / HOUR_MS) % 24) as u8;
            if !hours.contains(hour) {
                return Err(refuse(
                    Rule::TimeWindow,
                    format!(
                        "hour {hour:02} UTC is outside {:02}–{:02}",
                        hours.from, hours.to
                    ),
                ));
            }
        }
        if let Some(a) = &client.approvals {
            let keys: Vec<[u8; 32]> = a.approvers.values().copied().collect();
            let valid = req.valid_approvers(&keys);
            if valid.len() < a.required {
                let names: Vec<&str> = a
                    .approvers
                    .iter()
                    .filter(|(_, k)| valid.contains(k))
                    .map(|(n, _)| n.as_str())
                    .collect();
                return Err(refuse(
                    Rule::Approvals,
                    format!(
                        "{} of {} required approvals (valid: {})",
                        valid.len(),
                        a.required,
                        if names.is_empty() {
                            "none".to_owned()
                        } else {
                            names.join(", ")
                        }
                    ),
                ));
            }
        }
        Ok((limit, p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;
    use quorate_protocol::request::{Purpose, REQUEST_VERSION};
    use rand_chacha::{rand_core::SeedableRng, ChaCha20Rng};

    const KEY: KeyId = KeyId([7; 16]);
    const OTHER_KEY: KeyId = KeyId([8; 16]);
    /// 2023-11-14 22:13:20 UTC.
    const T0: u64 = 1_700_000_000_000;
    /// 10:00 UTC on the same day.
    const T_DAY: u64 = T0 - (T0 % (24 * HOUR_MS)) + 10 * HOUR_MS;

    struct Fixture {
        client: SigningKey,
        approvers: Vec<SigningKey>,
        outsider: SigningKey,
        engine: PolicyEngine,
        nonce: u8,
    }

    fn keys(seed: u64, n: usize) -> Vec<SigningKey> {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        (0..n).map(|_| SigningKey::generate(&mut rng)).collect()
    }

    fn hexkey(k: &SigningKey) -> String {
        hex::encode(k.verifying_key().to_bytes())
    }

    fn policy_text(client: &SigningKey, approvers: &[SigningKey], extra: &str) -> String {
        format!(
            r#"
version = 1

[clients.exchange-a]
public_key = "{client}"
keys = ["{key}"]
suites = ["secp256k1", "ed25519"]
destinations = ["bc1qgood", "bc1qalso"]
max_lifetime_secs = 600
window_hours = 24
hours_utc = {{ from = 8, to = 20 }}
allow_raw = true
{extra}

[clients.exchange-a.limits.BTC]
per_request = 100
per_window = 250

[clients.exchange-a.approvals]
required = 2

[clients.exchange-a.approvals.approvers]
alice = "{a}"
bob = "{b}"
carol = "{c}"
"#,
            client = hexkey(client),
            key = KEY,
            a = hexkey(&approvers[0]),
            b = hexkey(&approvers[1]),
            c = hexkey(&approvers[2]),
        )
    }

    fn fixture() -> Fixture {
        let mut k = keys(11, 5);
        let outsider = k.pop().expect("key");
        let client = k.remove(0);
        let policy = Policy::from_toml(&policy_text(&client, &k, "")).expect("valid policy");
        Fixture {
            client,
            approvers: k,
            outsider,
            engine: PolicyEngine::new(policy),
            nonce: 0,
        }
    }

    fn group(key_id: KeyId, suite: Ciphersuite) -> GroupPublic {
        GroupPublic {
            suite,
            key_id,
            threshold: 2,
            members: BTreeMap::new(),
            verifying_key: Vec::new(),
            public_key_package: Vec::new(),
        }
    }

    impl Fixture {
        fn unsigned(&mut self, amount: u64, now: u64) -> SigningRequest {
            self.nonce += 1;
            SigningRequest {
                version: REQUEST_VERSION,
                client: self.client.verifying_key().to_bytes(),
                key_id: KEY,
                body: quorate_protocol::request::RequestBody::Raw {
                    messages: vec![vec![1; 32]],
                    tweak: None,
                },
                purpose: Purpose {
                    asset: "BTC".into(),
                    amount,
                    destination: "bc1qgood".into(),
                    memo: "test".into(),
                },
                expires_at_ms: now + 60_000,
                nonce: [self.nonce; 16],
            }
        }

        /// Client-signed and approved by alice and bob.
        fn approve(&self, r: SigningRequest) -> SignedRequest {
            let mut s = r.sign(&self.client);
            s.approve(&self.approvers[0]);
            s.approve(&self.approvers[1]);
            s
        }

        fn request(&mut self, amount: u64, now: u64) -> SignedRequest {
            let r = self.unsigned(amount, now);
            self.approve(r)
        }

        fn eval(&mut self, req: &SignedRequest, now: u64) -> Decision {
            self.engine
                .evaluate(req, &group(KEY, Ciphersuite::Ed25519), now)
        }
    }

    fn assert_refused(d: &Decision, rule: Rule) {
        assert_eq!(d.rule(), Some(rule), "{d:?}");
    }

    #[test]
    fn allows_a_conforming_request() {
        let mut f = fixture();
        let req = f.request(100, T_DAY);
        assert_eq!(
            f.eval(&req, T_DAY),
            Decision::Allow {
                client: "exchange-a".into()
            }
        );
        assert_eq!(f.engine.tracked_nonces(), 1);
        assert_eq!(
            f.engine
                .window_usage(&f.client.verifying_key().to_bytes(), "BTC", T_DAY),
            100
        );
    }

    #[test]
    fn restored_usage_and_nonces_count_like_live_ones() {
        let mut f = fixture();
        let client = f.client.verifying_key().to_bytes();
        let old = f.request(100, T_DAY - 60_000);
        // As replayed from the audit log after a restart: 200 BTC an hour ago (in
        // the window), 100 BTC 25 hours ago (outside), and `old`'s nonce.
        f.engine
            .restore_allowed(client, "BTC", 100, T_DAY - 25 * HOUR_MS, None, T_DAY);
        f.engine.restore_allowed(
            client,
            "BTC",
            200,
            T_DAY - HOUR_MS,
            Some((old.request.nonce, old.request.expires_at_ms)),
            T_DAY,
        );
        assert_eq!(f.engine.window_usage(&client, "BTC", T_DAY), 200);
        assert_refused(&f.eval(&old, T_DAY), Rule::Replay);
        let over = f.request(100, T_DAY);
        assert_refused(&f.eval(&over, T_DAY), Rule::WindowLimit);
        let fits = f.request(50, T_DAY);
        assert!(f.eval(&fits, T_DAY).is_allow());
    }

    #[test]
    fn refuses_unknown_client() {
        let mut f = fixture();
        let mut r = f.unsigned(1, T_DAY);
        r.client = f.outsider.verifying_key().to_bytes();
        let req = r.sign(&f.outsider);
        assert_refused(&f.eval(&req, T_DAY), Rule::UnknownClient);
    }

    #[test]
    fn refuses_bad_client_signature() {
        let mut f = fixture();
        let mut req = f.request(1, T_DAY);
        req.request.purpose.amount = 2; // altered after signing
        assert_refused(&f.eval(&req, T_DAY), Rule::BadClientSignature);
        // Signed by someone else while claiming the client's key.
        let r = f.unsigned(1, T_DAY);
        let forged = r.sign(&f.outsider);
        assert_refused(&f.eval(&forged, T_DAY), Rule::BadClientSignature);
    }

    #[test]
    fn refuses_malformed_request() {
        let mut f = fixture();
        let mut r = f.unsigned(1, T_DAY);
        r.body = quorate_protocol::request::RequestBody::Raw {
            messages: Vec::new(),
            tweak: None,
        };
        let req = f.approve(r);
        assert_refused(&f.eval(&req, T_DAY), Rule::Malformed);
    }

    #[test]
    fn refuses_expired_request() {
        let mut f = fixture();
        let req = f.request(1, T_DAY);
        let d = f.eval(&req, req.request.expires_at_ms + 1);
        assert_refused(&d, Rule::Expired);
        // At exactly the expiry it is still valid.
        assert!(f.eval(&req, req.request.expires_at_ms).is_allow());
    }

    #[test]
    fn refuses_lifetime_too_long() {
        let mut f = fixture();
        let mut r = f.unsigned(1, T_DAY);
        r.expires_at_ms = T_DAY + 600_001;
        let req = f.approve(r);
        assert_refused(&f.eval(&req, T_DAY), Rule::LifetimeTooLong);
        let mut r = f.unsigned(1, T_DAY);
        r.expires_at_ms = T_DAY + 600_000;
        let req = f.approve(r);
        assert!(f.eval(&req, T_DAY).is_allow());
    }

    #[test]
    fn refuses_replay() {
        let mut f = fixture();
        let req = f.request(10, T_DAY);
        assert!(f.eval(&req, T_DAY).is_allow());
        assert_refused(&f.eval(&req, T_DAY + 1), Rule::Replay);
        // A different request reusing the nonce is refused too.
        let mut r = f.unsigned(11, T_DAY);
        r.nonce = req.request.nonce;
        let again = f.approve(r);
        assert_refused(&f.eval(&again, T_DAY + 2), Rule::Replay);
        // The refusals recorded nothing.
        assert_eq!(
            f.engine
                .window_usage(&f.client.verifying_key().to_bytes(), "BTC", T_DAY + 2),
            10
        );
    }

    #[test]
    fn nonces_are_forgotten_after_expiry_and_bounded() {
        let mut k = keys(12, 4);
        let client = k.remove(0);
        let text = policy_text(&client, &k, "")
            .replace("version = 1", "version = 1\nmax_tracked_nonces = 2");
        let mut f = Fixture {
            client,
            approvers: k,
            outsider: keys(13, 1).remove(0),
            engine: PolicyEngine::new(Policy::from_toml(&text).expect("policy")),
            nonce: 0,
        };
        let a = f.request(1, T_DAY);
        let b = f.request(1, T_DAY);
        let c = f.request(1, T_DAY);
        assert!(f.eval(&a, T_DAY).is_allow());
        assert!(f.eval(&b, T_DAY).is_allow());
        assert_refused(&f.eval(&c, T_DAY), Rule::ReplayCacheFull);
        // Once a and b have expired their nonces are dropped and c fits.
        let later = T_DAY + 60_001;
        let c2 = f.request(1, later);
        assert!(f.eval(&c2, later).is_allow());
        assert_eq!(f.engine.tracked_nonces(), 1);
        // Replaying a after expiry is refused as expired.
        assert_refused(&f.eval(&a, later), Rule::Expired);
    }

    #[test]
    fn one_clients_nonce_quota_does_not_refuse_another_client() {
        let mut k = keys(14, 5);
        let a = k.remove(0);
        let b = k.remove(0);
        let second = policy_text(&b, &k, "")
            .replace("version = 1", "")
            .replace("exchange-a", "exchange-b");
        let text = format!("{}{second}", policy_text(&a, &k, "")).replace(
            "version = 1",
            "version = 1\nmax_tracked_nonces = 100\nmax_tracked_nonces_per_client = 2",
        );
        let policy = Policy::from_toml(&text).expect("policy");
        assert_eq!(policy.max_tracked_nonces_per_client(), 2);
        let mut f = Fixture {
            client: a,
            approvers: k,
            outsider: keys(15, 1).remove(0),
            engine: PolicyEngine::new(policy),
            nonce: 0,
        };
        for _ in 0..2 {
            let r = f.request(1, T_DAY);
            assert!(f.eval(&r, T_DAY).is_allow());
        }
        let r = f.request(1, T_DAY);
        let d = f.eval(&r, T_DAY);
        assert_refused(&d, Rule::ReplayCacheFull);
        assert!(
            format!("{d:?}").contains("max_tracked_nonces_per_client"),
            "{d:?}"
        );
        // The other client still signs.
        f.client = b;
        let r = f.request(1, T_DAY);
        assert!(f.eval(&r, T_DAY).is_allow(), "{:?}", f.eval(&r, T_DAY));
        assert_eq!(f.engine.tracked_nonces(), 3);
        // Once the first client's nonces expire, its quota is free again.
        let later = T_DAY + 60_001;
        f.client = keys(14, 1).remove(0);
        let r = f.request(1, later);
        assert!(f.eval(&r, later).is_allow());
    }

    #[test]
    fn refuses_key_mismatch_and_key_not_allowed() {
        let mut f = fixture();
        let req = f.request(1, T_DAY);
        let d = f
            .engine
            .evaluate(&req, &group(OTHER_KEY, Ciphersuite::Ed25519), T_DAY);
        assert_refused(&d, Rule::KeyMismatch);
        let mut r = f.unsigned(1, T_DAY);
        r.key_id = OTHER_KEY;
        let req = f.approve(r);
        let d = f
            .engine
            .evaluate(&req, &group(OTHER_KEY, Ciphersuite::Ed25519), T_DAY);
        assert_refused(&d, Rule::KeyNotAllowed);
    }

    #[test]
    fn refuses_suite_not_allowed() {
        let mut f = fixture();
        let req = f.request(1, T_DAY);
        let d = f
            .engine
            .evaluate(&req, &group(KEY, Ciphersuite::Secp256k1Tr), T_DAY);
        assert_refused(&d, Rule::SuiteNotAllowed);
    }

    #[test]
    fn refuses_unknown_asset_and_amount_over_limit() {
        let mut f = fixture();
        let mut r = f.unsigned(1, T_DAY);
        r.purpose.asset = "ETH".into();
        let req = f.approve(r);
        assert_refused(&f.eval(&req, T_DAY), Rule::AssetNotAllowed);
        let req = f.request(101, T_DAY);
        assert_refused(&f.eval(&req, T_DAY), Rule::AmountLimit);
    }

    #[test]
    fn window_accumulates_and_resets() {
        let mut f = fixture();
        let client = f.client.verifying_key().to_bytes();
        for (i, (amount, now)) in [(100, T_DAY), (100, T_DAY + 1), (50, T_DAY + 1000)]
            .into_iter()
            .enumerate()
        {
            let req = f.request(amount, now);
            assert!(f.eval(&req, now).is_allow(), "request {i}");
        }
        assert_eq!(f.engine.window_usage(&client, "BTC", T_DAY + 1001), 250);
        let req = f.request(1, T_DAY + 10);
        let d = f.eval(&req, T_DAY + 10);
        assert_refused(&d, Rule::WindowLimit);
        // 24 h after the first two requests, their amounts leave the window.
        let next_day = T_DAY + 24 * HOUR_MS + 1;
        assert_eq!(f.engine.window_usage(&client, "BTC", next_day), 50);
        let req = f.request(100, next_day);
        assert!(f.eval(&req, next_day).is_allow());
        let req = f.request(100, next_day + 1);
        assert!(f.eval(&req, next_day + 1).is_allow());
        let req = f.request(1, next_day + 2);
        assert_refused(&f.eval(&req, next_day + 2), Rule::WindowLimit);
    }

    #[test]
    fn refuses_destination_not_on_allowlist() {
        let mut f = fixture();
        let mut r = f.unsigned(1, T_DAY);
        r.purpose.destination = "bc1qevil".into();
        let req = f.approve(r);
        assert_refused(&f.eval(&req, T_DAY), Rule::Destination);
        let mut r = f.unsigned(1, T_DAY);
        r.purpose.destination = "bc1qalso".into();
        let req = f.approve(r);
        assert!(f.eval(&req, T_DAY).is_allow());
    }

    #[test]
    fn refuses_outside_hours() {
        let mut f = fixture();
        let night = T_DAY + 12 * HOUR_MS; // 22:00 UTC
        let req = f.request(1, night);
        let d = f.eval(&req, night);
        assert_refused(&d, Rule::TimeWindow);
        let edge = T_DAY - 2 * HOUR_MS; // 08:00 UTC, first allowed hour
        let req = f.request(1, edge);
        assert!(f.eval(&req, edge).is_allow());
        let end = T_DAY + 10 * HOUR_MS; // 20:00 UTC, first refused hour
        let req = f.request(1, end);
        assert_refused(&f.eval(&req, end), Rule::TimeWindow);
    }

    #[test]
    fn hours_wrap_past_midnight() {
        let h = HoursUtc { from: 22, to: 6 };
        assert!(h.contains(22) && h.contains(23) && h.contains(0) && h.contains(5));
        assert!(!h.contains(6) && !h.contains(12) && !h.contains(21));
    }

    #[test]
    fn refuses_missing_approvals() {
        let mut f = fixture();
        let r = f.unsigned(1, T_DAY);
        let mut req = r.sign(&f.client);
        req.approve(&f.approvers[0]);
        req.approve(&f.approvers[0]); // the same approver twice counts once
        req.approve(&f.outsider); // not an approver
        let d = f.eval(&req, T_DAY);
        assert_refused(&d, Rule::Approvals);
        match &d {
            Decision::Refuse { detail, .. } => {
                assert!(
                    detail.contains("1 of 2") && detail.contains("alice"),
                    "{detail}"
                )
            }
            Decision::Allow { .. } => unreachable!(),
        }
        req.approve(&f.approvers[2]);
        assert!(f.eval(&req, T_DAY).is_allow());
    }

    #[test]
    fn only_allow_records_state() {
        let mut f = fixture();
        let client = f.client.verifying_key().to_bytes();
        let night = T_DAY + 12 * HOUR_MS;
        let req = f.request(100, night);
        assert_refused(&f.eval(&req, night), Rule::TimeWindow);
        assert_eq!(f.engine.tracked_nonces(), 0);
        assert_eq!(f.engine.window_usage(&client, "BTC", night), 0);
        // The same request is not a replay once the time is right.
        let morning = night + 11 * HOUR_MS; // 09:00 next day
        let mut r = req.request.clone();
        r.expires_at_ms = morning + 1000;
        let req = f.approve(r);
        assert!(f.eval(&req, morning).is_allow());
    }

    #[test]
    fn reload_keeps_state() {
        let mut f = fixture();
        let client = f.client.verifying_key().to_bytes();
        let req = f.request(100, T_DAY);
        assert!(f.eval(&req, T_DAY).is_allow());
        let text = policy_text(&f.client, &f.approvers, "")
            .replace("per_window = 250", "per_window = 150");
        f.engine.reload_toml(&text).expect("valid");
        assert_eq!(f.engine.window_usage(&client, "BTC", T_DAY + 1), 100);
        let over = f.request(51, T_DAY + 1);
        assert_refused(&f.eval(&over, T_DAY + 1), Rule::WindowLimit);
        let fits = f.request(50, T_DAY + 2);
        assert!(f.eval(&fits, T_DAY + 2).is_allow());
        assert_refused(&f.eval(&req, T_DAY + 3), Rule::Replay);
    }

    #[test]
    fn malformed_reload_keeps_old_policy() {
        let mut f = fixture();
        let before = f.engine.policy().clone();
        let text = policy_text(&f.client, &f.approvers, "max_amout = 5");
        let err = f.engine.reload_toml(&text).expect_err("unknown field");
        let msg = err.to_string();
        assert!(msg.contains("max_amout"), "{msg}");
        assert_eq!(f.engine.policy(), &before);
        let err = f
            .engine
            .reload_toml("version = 1\n[clients.x\n")
            .expect_err("syntax");
        assert!(matches!(err, PolicyError::Parse(_)));
        assert_eq!(f.engine.policy(), &before);
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("policy.toml");
        std::fs::write(&path, "version = 2\n").expect("write");
        assert!(f.engine.reload_file(&path).is_err());
        assert!(f.engine.reload_file(&dir.path().join("missing")).is_err());
        assert_eq!(f.engine.policy(), &before);
        let req = f.request(1, T_DAY);
        assert!(f.eval(&req, T_DAY).is_allow(), "old policy still in force");
    }

    #[test]
    fn invalid_policies_name_the_problem() {
        let k = keys(14, 4);
        let good = policy_text(&k[0], &k[1..], "");
        Policy::from_toml(&good).expect("baseline is valid");
        let cases: Vec<(String, &str)> = vec![
            (good.replace("version = 1", "version = 9"), "version"),
            (
                good.replace(&hexkey(&k[0]), "abcd"),
                "client \"exchange-a\": public_key",
            ),
            (
                good.replace(&format!("keys = [\"{KEY}\"]"), "keys = []"),
                "client \"exchange-a\": keys",
            ),
            (
                good.replace(&format!("keys = [\"{KEY}\"]"), "keys = [\"*\", \"00\"]"),
                "keys",
            ),
            (
                good.replace(&format!("keys = [\"{KEY}\"]"), "keys = [\"nothex\"]"),
                "nothex",
            ),
            (
                good.replace("[\"secp256k1\", \"ed25519\"]", "[\"rsa\"]"),
                "rsa",
            ),
            (
                good.replace("per_request = 100", "per_request = 300"),
                "limits.BTC",
            ),
            (
                good.replace("required = 2", "required = 4"),
                "approvals.required",
            ),
            (
                good.replace(&hexkey(&k[2]), &hexkey(&k[0])),
                "approvals.approvers.bob",
            ),
            (good.replace("to = 20", "to = 8"), "hours_utc"),
            (
                good.replace("max_lifetime_secs = 600", "max_lifetime_secs = 0"),
                "max_lifetime_secs",
            ),
            (
                good.replace("window_hours = 24", "window_hours = 0"),
                "window_hours",
            ),
            (
                good.replace(
                    "destinations = [\"bc1qgood\", \"bc1qalso\"]",
                    "destinations = []",
                ),
                "destinations",
            ),
            (
                good.replace("per_window = 250", "per_windw = 250"),
                "per_windw",
            ),
        ];
        for (text, needle) in cases {
            assert_ne!(text, good, "case {needle} must change the text");
            let err = Policy::from_toml(&text).expect_err(needle);
            let msg = err.to_string();
            assert!(msg.contains(needle), "expected {needle:?} in {msg:?}");
        }
        // Two clients with one key.
        let dup = format!(
            "{good}\n[clients.exchange-b]\npublic_key = \"{}\"\nkeys = [\"*\"]\n[clients.exchange-b.limits.BTC]\nper_request = 1\nper_window = 1\n",
            hexkey(&k[0])
        );
        let msg = Policy::from_toml(&dup)
            .expect_err("duplicate key")
            .to_string();
        assert!(
            msg.contains("exchange-a") && msg.contains("exchange-b"),
            "{msg}"
        );
    }

    #[test]
    fn rule_names_are_stable_and_distinct() {
        let names: BTreeSet<&str> = Rule::ALL.iter().map(|r| r.name()).collect();
        assert_eq!(names.len(), Rule::ALL.len());
        for r in Rule::ALL {
            assert_eq!(
                serde_json::to_value(r).expect("json"),
                serde_json::Value::String(r.name().into())
            );
            assert_eq!(r.to_string(), r.name());
        }
        assert_eq!(Rule::WindowLimit.name(), "window_limit");
        assert_eq!(Rule::BadClientSignature.name(), "bad_client_signature");
    }

    #[test]
    fn netting_is_off_unless_configured() {
        let k = keys(21, 5);
        let plain = Policy::from_toml(&policy_text(&k[0], &k[1..4], "")).expect("policy");
        assert!(
            !plain.settlement_allowed(&KEY),
            "no [netting]: no settlement signing"
        );
        assert!(plain.clients().values().all(|c| !c.netting));

        let text = format!(
            "version = 1\n[netting]\nsettlement_keys = [\"{KEY}\"]\n\
             [clients.clearing]\npublic_key = \"{}\"\nkeys = [\"*\"]\nnetting = true\n",
            hexkey(&k[4])
        );
        let p = Policy::from_toml(&text).expect("a netting-only client needs no limits");
        assert!(p.settlement_allowed(&KEY));
        assert!(!p.settlement_allowed(&OTHER_KEY));
        let c = p
            .client_by_key(&k[4].verifying_key().to_bytes())
            .expect("client");
        assert!(c.netting && c.keys.contains(&OTHER_KEY));

        assert!(
            p.settlement_key_reserved(&KEY),
            "a key listed by id is reserved"
        );
        assert!(!p.settlement_key_reserved(&OTHER_KEY));
        let all = text.replace(&format!("[\"{KEY}\"]"), "[\"*\"]");
        let all = Policy::from_toml(&all).expect("policy");
        assert!(all.settlement_allowed(&OTHER_KEY));
        assert!(
            !all.settlement_key_reserved(&KEY),
            "[\"*\"] lets every key settle and reserves none"
        );
        let empty = text.replace(&format!("[\"{KEY}\"]"), "[]");
        assert!(!Policy::from_toml(&empty)
            .expect("policy")
            .settlement_allowed(&KEY));

        for (bad, want) in [
            (
                text.replace(&KEY.to_string(), "nothex"),
                "netting.settlement_keys",
            ),
            (
                text.replace("settlement_keys", "signing_keys"),
                "signing_keys",
            ),
            (text.replace("netting = true\n", ""), "limits"),
        ] {
            let err = Policy::from_toml(&bad).expect_err("invalid").to_string();
            assert!(err.contains(want), "{err}");
        }
    }

    #[test]
    fn settlement_keys_are_reserved_from_client_requests() {
        let mut f = fixture();
        let text = policy_text(&f.client, &f.approvers, "")
            .replace(
                "version = 1",
                &format!("version = 1\n[netting]\nsettlement_keys = [\"{OTHER_KEY}\"]"),
            )
            .replace(&format!("keys = [\"{KEY}\"]"), "keys = [\"*\"]");
        f.engine.reload_toml(&text).expect("policy");
        // An unlisted key still signs.
        let req = f.request(1, T_DAY);
        assert!(f.eval(&req, T_DAY).is_allow());
        // The settlement key takes no client request, even for a client allowed
        // every key; the refusal records nothing.
        let mut r = f.unsigned(1, T_DAY);
        r.key_id = OTHER_KEY;
        let req = f.approve(r);
        let d = f
            .engine
            .evaluate(&req, &group(OTHER_KEY, Ciphersuite::Ed25519), T_DAY);
        assert_refused(&d, Rule::SettlementKeyReserved);
        assert!(format!("{d:?}").contains(&OTHER_KEY.to_string()), "{d:?}");
        assert_eq!(f.engine.tracked_nonces(), 1);
        assert_refused(
            &f.engine
                .recheck(&req, &group(OTHER_KEY, Ciphersuite::Ed25519), T_DAY),
            Rule::SettlementKeyReserved,
        );
        // `["*"]` lets every key settle and reserves none.
        let all = text.replace(&format!("[\"{OTHER_KEY}\"]"), "[\"*\"]");
        f.engine.reload_toml(&all).expect("policy");
        let req = f.request(2, T_DAY);
        assert!(f.eval(&req, T_DAY).is_allow());
        assert_eq!(
            Rule::SettlementKeyReserved.name(),
            "settlement_key_reserved"
        );
    }

    #[test]
    fn settlement_transfer_limits_and_netting_parties_parse() {
        let k = keys(22, 3);
        let base = format!(
            "version = 1\n[netting]\nsettlement_keys = [\"{KEY}\"]\nEXTRA\n\
             [clients.clearing]\npublic_key = \"{}\"\nkeys = [\"*\"]\nnetting = true\nPARTIES\n",
            hexkey(&k[0])
        );
        let with =
            |extra: &str, parties: &str| base.replace("EXTRA", extra).replace("PARTIES", parties);
        let p = Policy::from_toml(&with("", "")).expect("policy");
        assert_eq!(p.settlement_transfer_limit("USD"), TransferLimit::Unlimited);
        assert!(p.clients()["clearing"].netting_parties.is_none());

        let p = Policy::from_toml(&with(
            "max_transfer = { USD = 1_000, EUR = 0 }\ndefault_max_transfer = 50",
            &format!(
                "netting_parties = {{ \"desk-a\" = \"{}\", \"desk.b\" = \"{}\" }}",
                hexkey(&k[1]),
                hexkey(&k[2])
            ),
        ))
        .expect("policy");
        assert_eq!(
            p.settlement_transfer_limit("USD"),
            TransferLimit::Max(1_000)
        );
        assert_eq!(p.settlement_transfer_limit("EUR"), TransferLimit::Max(0));
        assert_eq!(p.settlement_transfer_limit("JPY"), TransferLimit::Max(50));
        let parties = p.clients()["clearing"]
            .netting_parties
            .as_ref()
            .expect("parties");
        assert_eq!(parties["desk-a"], k[1].verifying_key().to_bytes());
        assert_eq!(parties.len(), 2);

        let p = Policy::from_toml(&with(
            "max_transfer = { USD = 5 }\nrequire_limits = true",
            "",
        ))
        .expect("policy");
        assert_eq!(p.settlement_transfer_limit("USD"), TransferLimit::Max(5));
        assert_eq!(p.settlement_transfer_limit("EUR"), TransferLimit::Unlisted);

        for (extra, parties, want) in [
            (
                "max_transfer = { USD = -1 }",
                "",
                "netting.max_transfer.USD",
            ),
            (
                "default_max_transfer = -5",
                "",
                "netting.default_max_transfer",
            ),
            ("max_transfers = { USD = 1 }", "", "max_transfers"),
            ("", "netting_parties = {}", "netting_parties"),
            (
                "",
                "netting_parties = { \"desk a\" = \"00\" }",
                "netting_parties.desk a",
            ),
            (
                "",
                "netting_parties = { \"desk-a\" = \"abcd\" }",
                "netting_parties.desk-a",
            ),
        ] {
            let err = Policy::from_toml(&with(extra, parties))
                .expect_err(want)
                .to_string();
            assert!(err.contains(want), "{want}: {err}");
        }
        // netting_parties without netting = true is a contradiction.
        let text = with(
            "",
            &format!("netting_parties = {{ a = \"{}\" }}", hexkey(&k[1])),
        )
        .replace("netting = true\n", "")
            + "[clients.clearing.limits.BTC]\nper_request = 1\nper_window = 1\n";
        let err = Policy::from_toml(&text)
            .expect_err("contradiction")
            .to_string();
        assert!(err.contains("netting_parties"), "{err}");
    }

    #[test]
    fn readme_example_policy_is_valid() {
        let readme = include_str!("../../README.md");
        let start = readme.find("```toml").expect("example in README") + "```toml".len();
        let end = start + readme[start..].find("```").expect("closing fence");
        let policy = Policy::from_toml(&readme[start..end]).expect("README example parses");
        assert!(!policy.clients().is_empty());
        assert_eq!(
            policy.lifecycle().required,
            2,
            "the [lifecycle] example parses"
        );
        assert_eq!(policy.lifecycle().approvers.len(), 2);
    }
}
