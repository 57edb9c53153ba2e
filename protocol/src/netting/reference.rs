//! The plaintext computation a round must agree with, written directly from the
//! cash-flow rule rather than through the output definitions: tests compare the
//! shared computation with it, and the benchmark reports it as the baseline.

use std::collections::BTreeMap;

use super::{input::PartyInput, round::RoundSpec};
use crate::error::ProtocolError;

/// One party's plaintext results.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PlainResult {
    /// (counterparty, asset) → net.
    pub bilateral: BTreeMap<(String, String), i128>,
    /// asset → net.
    pub multilateral: BTreeMap<String, i128>,
    /// (counterparty, instrument) → (quantity sum, cash sum) where non-zero.
    pub mismatches: BTreeMap<(String, String), (i128, i128)>,
}

/// Nets every participating party (`inputs[p]` is `None` for a party that did not
/// submit: it gets no result and is not reconciled against; others' positions
/// against it still count in their nets).
pub fn compute(
    spec: &RoundSpec,
    inputs: &[Option<PartyInput>],
) -> Result<Vec<Option<PlainResult>>, ProtocolError> {
    let mut book: BTreeMap<(usize, usize, usize), (i128, i128)> = BTreeMap::new();
    for (p, input) in inputs.iter().enumerate() {
        let Some(input) = input else { continue };
        for pos in &input.positions {
            let q = spec.party_index(&pos.counterparty).ok_or_else(|| {
                ProtocolError::NettingInput(format!("unknown party {}", pos.counterparty))
            })?;
            let i = spec.instrument_index(&pos.instrument).ok_or_else(|| {
                ProtocolError::NettingInput(format!("unknown instrument {}", pos.instrument))
            })?;
            book.insert((p, q, i), (i128::from(pos.quantity), i128::from(pos.cash)));
        }
    }
    let present = |p: usize| inputs.get(p).is_some_and(Option::is_some);
    let mut out = Vec::with_capacity(inputs.len());
    for p in 0..spec.parties.len() {
        if !present(p) {
            out.push(None);
            continue;
        }
        let mut r = PlainResult::default();
        for a in spec.assets() {
            r.multilateral.insert(a.clone(), 0);
        }
        for q in (0..spec.parties.len()).filter(|&q| q != p) {
            let qn = spec.parties[q].name.clone();
            for a in spec.assets() {
                r.bilateral.insert((qn.clone(), a), 0);
            }
            for (i, inst) in spec.instruments.iter().enumerate() {
                let (qty, cash) = book.get(&(p, q, i)).copied().unwrap_or((0, 0));
                let flow = inst.unit() * qty + cash;
                *r.bilateral
                    .entry((qn.clone(), inst.asset.clone()))
                    .or_default() += flow;
                *r.multilateral.entry(inst.asset.clone()).or_default() += flow;
                let (oq, oc) = book.get(&(q, p, i)).copied().unwrap_or((0, 0));
                if present(q) && (qty + oq != 0 || cash + oc != 0) {
                    r.mismatches
                        .insert((qn.clone(), inst.name.clone()), (qty + oq, cash + oc));
                }
            }
        }
        out.push(Some(r));
    }
    Ok(out)
}
