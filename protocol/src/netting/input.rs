//! A party's plaintext input: positions and cash obligations per (counterparty,
//! instrument), and its CSV form.
//!
//! CSV (UTF-8, comma-separated, one header line, `#` comments and blank lines
//! ignored):
//!
//! ```text
//! counterparty,instrument,quantity,cash
//! desk-b,BTC-FUT-DEC,25,0
//! desk-c,ETH-CALL-3000,-4,-1500
//! ```
//!
//! `quantity` and `cash` are signed integers in minor units (i64); `cash` may be left
//! empty (0). Each (counterparty, instrument) pair appears at most once.
//!
//! Rounds with limit checks take two more kinds of row, whose first column is a
//! reserved word (party names cannot start with `*`), the second an asset and the
//! third a non-negative amount in minor units (`cash` empty):
//!
//! ```text
//! *collateral,USD,5000000,
//! *limit,USD,1000000,
//! ```
//!
//! Each appears at most once per asset; an asset without them has 0.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::round::RoundSpec;
use crate::error::ProtocolError;

/// Longest positions CSV accepted.
pub const MAX_CSV_BYTES: usize = 8 << 20;

/// One position of a party against one counterparty.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct Position {
    /// Counterparty's party name.
    pub counterparty: String,
    /// Instrument name.
    pub instrument: String,
    /// Signed quantity (positive: long), minor units.
    pub quantity: i64,
    /// Fixed cash obligation (positive: the party receives), minor units.
    pub cash: i64,
}

impl core::fmt::Debug for Position {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "Position({} / {}, <secret>)",
            self.counterparty, self.instrument
        )
    }
}

/// A party's collateral and credit limit in one asset (limit-checked rounds).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct Cover {
    /// Asset name.
    pub asset: String,
    /// Collateral posted, minor units (`0..=max_cover`).
    pub collateral: i64,
    /// Credit limit granted, minor units (`0..=max_cover`).
    pub limit: i64,
}

impl core::fmt::Debug for Cover {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Cover({}, <secret>)", self.asset)
    }
}

/// A party's whole input for one round. Secret: zeroized on drop, never printed.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct PartyInput {
    /// Positions; pairs not listed are zero.
    pub positions: Vec<Position>,
    /// Collateral and limits per asset (limit-checked rounds); assets not listed
    /// have 0.
    #[serde(default)]
    pub cover: Vec<Cover>,
}

impl core::fmt::Debug for PartyInput {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "PartyInput({} positions, {} cover rows, <secret>)",
            self.positions.len(),
            self.cover.len()
        )
    }
}

impl PartyInput {
    /// Parses the CSV form; errors name the line and column.
    pub fn from_csv(text: &str) -> Result<Self, ProtocolError> {
        if text.len() > MAX_CSV_BYTES {
            return Err(ProtocolError::NettingInput(format!(
                "positions CSV of {} bytes exceeds {MAX_CSV_BYTES}",
                text.len()
            )));
        }
        let mut positions = Vec::new();
        let mut cover: Vec<Cover> = Vec::new();
        let mut cover_seen: Vec<(bool, bool)> = Vec::new();
        let mut header = false;
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let cols: Vec<&str> = line.split(',').map(str::trim).collect();
            if !header {
                if cols != ["counterparty", "instrument", "quantity", "cash"] {
                    return Err(ProtocolError::NettingInput(format!(
                        "line {}: header must be `counterparty,instrument,quantity,cash`",
                        n + 1
                    )));
                }
                header = true;
                continue;
            }
            if cols.len() != 4 {
                return Err(ProtocolError::NettingInput(format!(
                    "line {}: expected 4 columns, found {}",
                    n + 1,
                    cols.len()
                )));
            }
            if let Some(kind) = cols[0].strip_prefix('*') {
                let amount = cols[2]
                    .parse::<i64>()
                    .ok()
                    .filter(|v| *v >= 0)
                    .ok_or_else(|| {
                        ProtocolError::NettingInput(format!(
                            "line {}: {kind} amount {:?} is not a non-negative i64",
                            n + 1,
                            cols[2]
                        ))
                    })?;
                if !cols[3].is_empty() {
                    return Err(ProtocolError::NettingInput(format!(
                        "line {}: a *{kind} row leaves the cash column empty",
                        n + 1
                    )));
                }
                let asset = cols[1].to_owned();
                let i = match cover.iter().position(|c: &Cover| c.asset == asset) {
                    Some(i) => i,
                    None => {
                        cover.push(Cover {
                            asset: asset.clone(),
                            collateral: 0,
                            limit: 0,
                        });
                        cover_seen.push((false, false));
                        cover.len() - 1
                    }
                };
                let (seen_c, seen_l) = &mut cover_seen[i];
                let seen = match kind {
                    "collateral" => {
                        cover[i].collateral = amount;
                        seen_c
                    }
                    "limit" => {
                        cover[i].limit = amount;
                        seen_l
                    }
                    _ => {
                        return Err(ProtocolError::NettingInput(format!(
                            "line {}: unknown row kind *{kind} (expected *collateral or *limit)",
                            n + 1
                        )))
                    }
                };
                if std::mem::replace(seen, true) {
                    return Err(ProtocolError::NettingInput(format!(
                        "line {}: *{kind} for {asset} is listed twice",
                        n + 1
                    )));
                }
                continue;
            }
            let int = |col: &str, v: &str| -> Result<i64, ProtocolError> {
                if v.is_empty() && col == "cash" {
                    return Ok(0);
                }
                v.parse::<i64>().map_err(|_| {
                    ProtocolError::NettingInput(format!(
                        "line {}: {col} {v:?} is not an integer in the i64 range",
                        n + 1
                    ))
                })
            };
            positions.push(Position {
                counterparty: cols[0].to_owned(),
                instrument: cols[1].to_owned(),
                quantity: int("quantity", cols[2])?,
                cash: int("cash", cols[3])?,
            });
        }
        if !header {
            return Err(ProtocolError::NettingInput(
                "positions CSV has no header line".into(),
            ));
        }
        Ok(Self { positions, cover })
    }

    /// The dense value vector of party `party` for `spec` (layout of
    /// [`RoundSpec::value_index`]). Refuses non-members, self-trades, unknown
    /// instruments, duplicates and values outside the round's bounds, naming them.
    ///
    /// # Security
    /// Returns the party's secret amounts in a zeroizing buffer.
    pub fn to_values(
        &self,
        spec: &RoundSpec,
        party: usize,
    ) -> Result<Zeroizing<Vec<i64>>, ProtocolError> {
        let bad = |m: String| Err(ProtocolError::NettingInput(m));
        let mut values = Zeroizing::new(vec![0i64; spec.values_per_party()]);
        let mut seen = BTreeSet::new();
        for pos in &self.positions {
            let Some(cp) = spec.party_index(&pos.counterparty) else {
                return bad(format!(
                    "counterparty {:?} is not a party of round {}",
                    pos.counterparty, spec.id
                ));
            };
            if cp == party {
                return bad(format!(
                    "a position against yourself ({:?})",
                    pos.counterparty
                ));
            }
            let Some(inst) = spec.instrument_index(&pos.instrument) else {
                return bad(format!(
                    "instrument {:?} is not an instrument of round {}",
                    pos.instrument, spec.id
                ));
            };
            if !seen.insert((cp, inst)) {
                return bad(format!(
                    "({}, {}) is listed twice",
                    pos.counterparty, pos.instrument
                ));
            }
            if pos.quantity.unsigned_abs() > spec.bounds.max_abs_quantity.unsigned_abs() {
                return bad(format!(
                    "quantity against {} in {} is outside ±{} (the round's bound)",
                    pos.counterparty, pos.instrument, spec.bounds.max_abs_quantity
                ));
            }
            if pos.cash.unsigned_abs() > spec.bounds.max_abs_cash.unsigned_abs() {
                return bad(format!(
                    "cash against {} in {} is outside ±{} (the round's bound)",
                    pos.counterparty, pos.instrument, spec.bounds.max_abs_cash
                ));
            }
            for (field, v) in [(0, pos.quantity), (1, pos.cash)] {
                if let Some(i) = spec.value_index(party, cp, inst, field) {
                    values[i] = v;
                }
            }
        }
        self.cover_values(spec, &mut values)?;
        Ok(values)
    }

    fn cover_values(&self, spec: &RoundSpec, values: &mut [i64]) -> Result<(), ProtocolError> {
        let bad = |m: String| Err(ProtocolError::NettingInput(m));
        let Some(limits) = spec.limits else {
            if self.cover.is_empty() {
                return Ok(());
            }
            return bad(format!(
                "round {} has no limit checks: collateral and limit rows are not taken",
                spec.id
            ));
        };
        let assets = spec.assets();
        let mut seen = BTreeSet::new();
        for c in &self.cover {
            let Some(a) = assets.iter().position(|x| *x == c.asset) else {
                return bad(format!(
                    "asset {:?} is not settled in round {}",
                    c.asset, spec.id
                ));
            };
            if !seen.insert(a) {
                return bad(format!("cover for {} is listed twice", c.asset));
            }
            for (field, v) in [(0, c.collateral), (1, c.limit)] {
                if !(0..=limits.max_cover).contains(&v) {
                    return bad(format!(
                        "{} in {} must be 0..={} (the round's max_cover)",
                        if field == 0 { "collateral" } else { "limit" },
                        c.asset,
                        limits.max_cover
                    ));
                }
                if let Some(i) = spec.cover_index(a, field) {
                    values[i] = v;
                }
            }
        }
        Ok(())
    }
}
