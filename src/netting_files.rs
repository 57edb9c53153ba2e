//! Files of `quorate client netting`: the party key file, the round TOML, the saved
//! round definition (`<round id>.round.json`) and the positions CSV check. The
//! formats are documented in README.md ("Netting: file formats").

use std::{
    io::Write as _,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use anyhow::{bail, Context};
use quorate_coordinator::{
    client::{AttestedKey, RoundBuilder},
    protocol::{
        netting::{Bounds, Instrument, InstrumentKind, PartyInput, RoundId, RoundSpec},
        roster::Roster,
    },
};
use serde::Deserialize;
use zeroize::Zeroizing;

/// Version line of a party key file.
const PARTY_KEY_VERSION: u32 = 1;

/// A party's two keys: Ed25519 (signs bundles and result requests) and X25519
/// (the nodes seal the party's results to it).
pub(crate) struct PartyKey {
    pub(crate) sign: ed25519_dalek::SigningKey,
    pub(crate) seal: x25519_dalek::StaticSecret,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PartyKeyFile {
    version: u32,
    sign_secret: String,
    seal_secret: String,
    sign_key: String,
    seal_key: String,
}

impl Drop for PartyKeyFile {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.sign_secret);
        zeroize::Zeroize::zeroize(&mut self.seal_secret);
    }
}

fn hex32(what: &str, s: &str) -> anyhow::Result<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s.trim(), &mut out)
        .with_context(|| format!("{what} must be 32 bytes of hex (64 hex digits)"))?;
    Ok(out)
}

impl PartyKey {
    /// A fresh random key pair.
    pub(crate) fn generate() -> Self {
        Self {
            sign: ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng),
            seal: x25519_dalek::StaticSecret::random_from_rng(rand_core::OsRng),
        }
    }

    /// Public Ed25519 key.
    pub(crate) fn sign_key(&self) -> [u8; 32] {
        self.sign.verifying_key().to_bytes()
    }

    /// Public X25519 key.
    pub(crate) fn seal_key(&self) -> [u8; 32] {
        x25519_dalek::PublicKey::from(&self.seal).to_bytes()
    }

    /// Writes the key file (mode 0600; refuses to overwrite).
    pub(crate) fn write(&self, path: &Path) -> anyhow::Result<()> {
        let text = Zeroizing::new(format!(
            "# quorate netting party key: SECRET, keep it mode 0600.\n\
             # The round creator needs only sign_key and seal_key.\n\
             version = {PARTY_KEY_VERSION}\n\
             sign_secret = \"{}\"\n\
             seal_secret = \"{}\"\n\
             sign_key = \"{}\"\n\
             seal_key = \"{}\"\n",
            hex::encode(self.sign.to_bytes()),
            hex::encode(self.seal.to_bytes()),
            hex::encode(self.sign_key()),
            hex::encode(self.seal_key()),
        ));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .with_context(|| {
                format!(
                    "cannot create {} (it must not exist yet: a key is never overwritten)",
                    path.display()
                )
            })?;
        f.write_all(text.as_bytes())?;
        Ok(())
    }

    /// Reads a key file, checking the public keys match the secrets.
    pub(crate) fn load(path: &Path) -> anyhow::Result<Self> {
        let text = Zeroizing::new(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading party key {}", path.display()))?,
        );
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.permissions().mode() & 0o077 != 0 {
                eprintln!(
                    "WARNING: party key {} is readable by others (chmod 600 it)",
                    path.display()
                );
            }
        }
        let file: PartyKeyFile = toml::from_str(&text)
            .with_context(|| format!("party key {} is not a party key file", path.display()))?;
        if file.version != PARTY_KEY_VERSION {
            bail!(
                "party key {}: version {} (this build reads {PARTY_KEY_VERSION})",
                path.display(),
                file.version
            );
        }
        let sign = Zeroizing::new(hex32("sign_secret", &file.sign_secret)?);
        let seal = Zeroizing::new(hex32("seal_secret", &file.seal_secret)?);
        let key = Self {
            sign: ed25519_dalek::SigningKey::from_bytes(&sign),
            seal: x25519_dalek::StaticSecret::from(*seal),
        };
        if hex32("sign_key", &file.sign_key)? != key.sign_key()
            || hex32("seal_key", &file.seal_key)? != key.seal_key()
        {
            bail!(
                "party key {}: sign_key/seal_key do not match the secrets",
                path.display()
            );
        }
        Ok(key)
    }
}

/// `[[parties]]` of a round file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PartyEntry {
    name: String,
    sign_key: String,
    seal_key: String,
}

/// `[[instruments]]` of a round file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InstrumentEntry {
    name: String,
    kind: InstrumentKind,
    asset: String,
    multiplier: i64,
    price_move: i64,
    #[serde(default)]
    premium: i64,
}

/// `[bounds]` of a round file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BoundsEntry {
    max_abs_quantity: Option<i64>,
    max_abs_cash: Option<i64>,
}

/// `[limits]` of a round file: limit and collateral checks.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsEntry {
    max_cover: i64,
    #[serde(default)]
    reveal_failures: bool,
    #[serde(default)]
    efficiency: bool,
}

/// A round file (`create --round-file`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RoundFile {
    key: Option<String>,
    id: Option<String>,
    threshold: Option<u16>,
    cutoff: Option<u64>,
    cutoff_in_secs: Option<u64>,
    bounds: Option<BoundsEntry>,
    limits: Option<LimitsEntry>,
    #[serde(default)]
    parties: Vec<PartyEntry>,
    #[serde(default)]
    instruments: Vec<InstrumentEntry>,
}

impl RoundFile {
    /// Parses a round file.
    pub(crate) fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading round file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("round file {}", path.display()))
    }

    /// The settlement key id: `--key` if given, else the file's `key`.
    pub(crate) fn key_id(&self, flag: Option<&str>) -> anyhow::Result<String> {
        flag.map(str::to_owned)
            .or_else(|| self.key.clone())
            .context("no settlement key: set `key = \"<key id>\"` in the round file or pass --key")
    }

    /// Builds the validated spec against the attested key and the pinned roster.
    pub(crate) fn build(&self, key: &AttestedKey, roster: &Roster) -> anyhow::Result<RoundSpec> {
        let mut b = RoundBuilder::new(key, roster)?;
        if let Some(id) = &self.id {
            b = b.id(RoundId::from_hex(id).context("round file `id`")?);
        }
        if let Some(t) = self.threshold {
            b = b.threshold(t);
        }
        match (self.cutoff, self.cutoff_in_secs) {
            (Some(_), Some(_)) => bail!("round file: set `cutoff` or `cutoff_in_secs`, not both"),
            (Some(at), None) => b = b.cutoff(at),
            (None, Some(s)) => b = b.cutoff_in(std::time::Duration::from_secs(s)),
            (None, None) => {}
        }
        if let Some(bounds) = &self.bounds {
            let d = Bounds::default();
            b = b.bounds(Bounds {
                max_abs_quantity: bounds.max_abs_quantity.unwrap_or(d.max_abs_quantity),
                max_abs_cash: bounds.max_abs_cash.unwrap_or(d.max_abs_cash),
            });
        }
        if let Some(l) = &self.limits {
            b = b.limits(quorate_protocol::netting::round::LimitSettings {
                max_cover: l.max_cover,
                reveal_failures: l.reveal_failures,
                efficiency: l.efficiency,
            });
        }
        for p in &self.parties {
            let sign = hex32(&format!("party {:?} sign_key", p.name), &p.sign_key)?;
            let seal = hex32(&format!("party {:?} seal_key", p.name), &p.seal_key)?;
            b = b.party(p.name.clone(), sign, seal);
        }
        for i in &self.instruments {
            b = b.instrument(Instrument {
                name: i.name.clone(),
                kind: i.kind,
                asset: i.asset.clone(),
                multiplier: i.multiplier,
                price_move: i.price_move,
                premium: i.premium,
            });
        }
        b.build().context("round definition")
    }
}

/// Where a round's definition is saved by default: `<round id>.round.json`.
pub(crate) fn default_spec_path(round: &RoundId) -> PathBuf {
    PathBuf::from(format!("{round}.round.json"))
}

/// Writes a round definition (serde JSON of `RoundSpec`); refuses to overwrite.
pub(crate) fn save_spec(spec: &RoundSpec, path: &Path) -> anyhow::Result<()> {
    let json = serde_json::to_string_pretty(spec)?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("cannot create {} (does it exist?)", path.display()))?;
    f.write_all(json.as_bytes())?;
    f.write_all(b"\n")?;
    Ok(())
}

/// Reads a saved round definition and checks it is round `round` and valid.
pub(crate) fn load_spec(path: &Path, round: &RoundId) -> anyhow::Result<RoundSpec> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "reading round definition {} (the file `netting create` saved; pass --spec)",
            path.display()
        )
    })?;
    let spec: RoundSpec = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a round definition", path.display()))?;
    if spec.id != *round {
        bail!("{} defines round {}, not {round}", path.display(), spec.id);
    }
    spec.validate()
        .with_context(|| format!("round definition {}", path.display()))?;
    Ok(spec)
}

/// Reads and checks a positions CSV for party `party` of `spec`: the format
/// (`PartyInput::from_csv`), then every counterparty and instrument by line and
/// column, then bounds and duplicates (`PartyInput::to_values`).
///
/// # Security
/// Returns the party's secret positions.
pub(crate) fn load_positions(
    path: &Path,
    spec: &RoundSpec,
    party: usize,
) -> anyhow::Result<PartyInput> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .with_context(|| format!("reading positions {}", path.display()))?,
    );
    let where_ = path.display();
    let input = PartyInput::from_csv(&text).with_context(|| format!("positions {where_}"))?;
    check_names(&text, spec, party).with_context(|| format!("positions {where_}"))?;
    input
        .to_values(spec, party)
        .with_context(|| format!("positions {where_}"))?;
    Ok(input)
}

/// Names the line and column of a counterparty or instrument the round lacks
/// (the CSV is already known to parse).
fn check_names(text: &str, spec: &RoundSpec, party: usize) -> anyhow::Result<()> {
    let mut header = false;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if !header {
            header = true;
            continue;
        }
        let cols: Vec<&str> = line.split(',').map(str::trim).collect();
        let (cp, inst) = (cols.first().copied(), cols.get(1).copied());
        let line_no = n + 1;
        if cp.is_some_and(|c| c.starts_with('*')) {
            // A collateral or limit row: its second column is an asset.
            let assets = spec.assets();
            if let Some(a) = inst.filter(|a| !assets.iter().any(|x| x == a)) {
                bail!(
                    "line {line_no}, column 2 (asset): {a:?} is not settled in round {} (assets: {})",
                    spec.id,
                    assets.join(", ")
                );
            }
            continue;
        }
        match cp.map(|c| (c, spec.party_index(c))) {
            Some((c, None)) => {
                let names: Vec<&str> = spec.parties.iter().map(|p| p.name.as_str()).collect();
                bail!(
                    "line {line_no}, column 1 (counterparty): {c:?} is not a party of round {} (parties: {})",
                    spec.id,
                    names.join(", ")
                );
            }
            Some((c, Some(p))) if p == party => {
                bail!("line {line_no}, column 1 (counterparty): {c:?} is yourself");
            }
            _ => {}
        }
        if let Some(i) = inst {
            if spec.instrument_index(i).is_none() {
                let names: Vec<&str> = spec.instruments.iter().map(|x| x.name.as_str()).collect();
                bail!(
                    "line {line_no}, column 2 (instrument): {i:?} is not an instrument of round {} (instruments: {})",
                    spec.id,
                    names.join(", ")
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn party_key_round_trips_with_mode_0600_and_never_overwrites() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("desk.party");
        let key = PartyKey::generate();
        key.write(&path).expect("write");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let back = PartyKey::load(&path).expect("load");
        assert_eq!(back.sign_key(), key.sign_key());
        assert_eq!(back.seal_key(), key.seal_key());
        assert!(key.write(&path).is_err());
        // A tampered public key is refused.
        let text = std::fs::read_to_string(&path).expect("read");
        let other = hex::encode(PartyKey::generate().seal_key());
        let edited = text.replace(&hex::encode(key.seal_key()), &other);
        std::fs::write(&path, edited).expect("write");
        assert!(PartyKey::load(&path).is_err());
    }

    #[test]
    fn round_file_rejects_unknown_fields_and_both_cutoffs() {
        let bad: Result<RoundFile, _> = toml::from_str("keyid = \"00\"\n");
        assert!(bad.is_err());
        let f: RoundFile = toml::from_str(
            "cutoff = 1\ncutoff_in_secs = 2\n[[instruments]]\nname = \"X\"\nkind = \"future\"\nasset = \"USD\"\nmultiplier = 1\nprice_move = 2\n",
        )
        .expect("parse");
        assert_eq!(f.instruments[0].premium, 0);
        assert!(f.key_id(None).is_err());
        assert_eq!(f.key_id(Some("ab")).expect("flag"), "ab");
    }

    #[test]
    fn round_file_takes_a_limits_table_and_refuses_unknown_limit_fields() {
        let f: RoundFile =
            toml::from_str("[limits]\nmax_cover = 1000000\nreveal_failures = true\n")
                .expect("parse");
        let l = f.limits.expect("limits");
        assert_eq!(
            (l.max_cover, l.reveal_failures, l.efficiency),
            (1_000_000, true, false)
        );
        let bad: Result<RoundFile, _> = toml::from_str("[limits]\nmax_cover = 1\nhaircut = 2\n");
        assert!(bad.is_err());
        let missing: Result<RoundFile, _> = toml::from_str("[limits]\nreveal_failures = true\n");
        assert!(missing.is_err(), "max_cover is required");
    }

    fn limited_spec() -> RoundSpec {
        use quorate_coordinator::protocol::{
            netting::{round::LimitSettings, Bounds, InstrumentKind, Party},
            Committee, KeyId, Member, NodeIdentity,
        };
        let members = (1..=5u16)
            .map(|i| {
                let id = NodeIdentity::generate(&mut rand_core::OsRng);
                Member {
                    node: id.node_id(),
                    index: i,
                    seal_key: id.public().seal_key,
                }
            })
            .collect();
        let party = |name: &str| {
            let k = PartyKey::generate();
            Party {
                name: name.into(),
                sign_key: k.sign_key(),
                seal_key: k.seal_key(),
            }
        };
        let spec = RoundSpec {
            id: RoundId([3; 16]),
            parties: vec![party("desk-a"), party("desk-b")],
            instruments: vec![Instrument {
                name: "BTC-FUT".into(),
                kind: InstrumentKind::Future,
                asset: "USD".into(),
                multiplier: 1,
                price_move: 10,
                premium: 0,
            }],
            cutoff: u64::MAX / 2,
            key: KeyId([1; 16]),
            committee: Committee::new(members).expect("committee"),
            threshold: 3,
            bounds: Bounds::default(),
            limits: Some(LimitSettings {
                max_cover: 1_000_000,
                reveal_failures: false,
                efficiency: false,
            }),
        };
        spec.validate().expect("valid");
        spec
    }

    #[test]
    fn cover_rows_pass_the_name_check_and_an_unknown_asset_is_named_by_line() {
        let spec = limited_spec();
        let ok = "counterparty,instrument,quantity,cash\ndesk-b,BTC-FUT,3,\n*collateral,USD,500,\n*limit,USD,20,\n";
        check_names(ok, &spec, 0).expect("cover rows are not counterparties");
        let input = quorate_coordinator::protocol::netting::PartyInput::from_csv(ok).expect("csv");
        input.to_values(&spec, 0).expect("values");
        let bad = "counterparty,instrument,quantity,cash\n*collateral,JPY,500,\n";
        let err = check_names(bad, &spec, 0)
            .expect_err("unknown asset")
            .to_string();
        assert!(
            err.contains("line 2, column 2 (asset)") && err.contains("USD"),
            "{err}"
        );
    }
}
