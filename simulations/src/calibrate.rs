//! Measures the real cost of every protocol operation on this host and fits the
//! cost model (`base + per_k·k + per_k2·k²`) to it.
//!
//! Small simulations with free computation run the real state machines while
//! every call is timed with [`std::time::Instant`]; calls that performed one op
//! give that op's cost directly, calls that performed two (e.g. admitting the
//! last commitment *and* building the package) give the second by difference.
//! Run it from an optimized build: debug builds measure debug code.

use std::{collections::BTreeMap, path::Path};

use crate::{
    cost::{Cost, CostTable, Op},
    error::SimError,
    scenario::Scenario,
    sim,
};

fn scenario(n: u16, t: u16, kind: &str, count: u32, strategy: &str) -> Result<Scenario, SimError> {
    Scenario::from_toml(
        &format!(
            r#"
name = "calibrate"
seed = 1
[committee]
n = {n}
threshold = {t}
[network]
latency = {{ dist = "constant", ms = 1 }}
[signing]
strategy = "{strategy}"
[cpu]
model = "none"
[workload]
kind = "{kind}"
rate_per_s = 0.5
count = {count}
duration_s = 1000.0
"#
        ),
        "<calibrate>",
    )
}

/// A reshare scenario: `from_t`-of-`from_n` (the first members) to `t`-of-`n`
/// (every member), every old member dealing.
fn reshare_scenario(from_n: u16, from_t: u16, n: u16, t: u16) -> Result<Scenario, SimError> {
    Scenario::from_toml(
        &format!(
            r#"
name = "calibrate"
seed = 1
[committee]
n = {n}
threshold = {t}
[network]
latency = {{ dist = "constant", ms = 1 }}
[cpu]
model = "none"
[workload]
kind = "reshare"
rate_per_s = 0.5
count = 2
duration_s = 1000.0
[reshare]
from_n = {from_n}
from_threshold = {from_t}
"#
        ),
        "<calibrate>",
    )
}

/// Signing sizes `(n, t)` and signings measured at each.
const SIGNING: [(u16, u16, u32); 4] = [(5, 3, 8), (15, 10, 4), (40, 27, 3), (100, 67, 2)];
/// DKG sizes `(n, t)`.
const DKG: [(u16, u16); 3] = [(4, 3), (8, 6), (16, 11)];
/// Reshare sizes `(from_n, from_t, n, t)`: a committee growing by one member at
/// about the thresholds of 67-of-100 → 70-of-105 (`k` = n = 7, 11, 16, as for DKG).
const RESHARE: [(u16, u16, u16, u16); 3] = [(6, 4, 7, 5), (10, 7, 11, 8), (15, 10, 16, 11)];

/// Timing points: op → k → microseconds of each call.
type Points = BTreeMap<Op, BTreeMap<usize, Vec<f64>>>;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        0.0
    } else {
        v[v.len() / 2]
    }
}

fn collect(samples: &[sim::Sample], points: &mut Points) {
    for s in samples.iter().filter(|s| s.ops.len() == 1) {
        points
            .entry(s.ops[0])
            .or_default()
            .entry(s.k)
            .or_default()
            .push(s.elapsed.as_secs_f64() * 1e6);
    }
    let mut singles: BTreeMap<(Op, usize), f64> = BTreeMap::new();
    for (op, by_k) in points.iter() {
        for (k, v) in by_k {
            singles.insert((*op, *k), median(&mut v.clone()));
        }
    }
    for s in samples.iter().filter(|s| s.ops.len() == 2) {
        let base = singles.get(&(s.ops[0], s.k)).copied().unwrap_or(0.0);
        let us = (s.elapsed.as_secs_f64() * 1e6 - base).max(0.0);
        points
            .entry(s.ops[1])
            .or_default()
            .entry(s.k)
            .or_default()
            .push(us);
    }
}

/// Least-squares fit of `y = Σ c_j k^p_j` for the given powers.
fn fit(points: &[(f64, f64)], powers: &[i32]) -> Option<Vec<f64>> {
    let m = powers.len();
    if points.len() < m {
        return None;
    }
    let mut a = vec![vec![0.0; m + 1]; m];
    for (k, y) in points {
        let row: Vec<f64> = powers.iter().map(|p| k.powi(*p)).collect();
        for i in 0..m {
            for j in 0..m {
                a[i][j] += row[i] * row[j];
            }
            a[i][m] += row[i] * y;
        }
    }
    for col in 0..m {
        let pivot = (col..m).max_by(|x, y| a[*x][col].abs().total_cmp(&a[*y][col].abs()))?;
        a.swap(col, pivot);
        if a[col][col].abs() < 1e-12 {
            return None;
        }
        let pivot_row = a[col].clone();
        for (r, row) in a.iter_mut().enumerate() {
            if r != col {
                let f = row[col] / pivot_row[col];
                for (x, p) in row.iter_mut().zip(&pivot_row).skip(col) {
                    *x -= f * p;
                }
            }
        }
    }
    Some((0..m).map(|i| a[i][m] / a[i][i]).collect())
}

/// The best-fitting model with non-negative coefficients through the medians.
fn model(by_k: &BTreeMap<usize, Vec<f64>>) -> Cost {
    let pts: Vec<(f64, f64)> = by_k
        .iter()
        .map(|(k, v)| (*k as f64, median(&mut v.clone())))
        .collect();
    let round = |x: f64| (x * 100.0).round() / 100.0;
    let mut best: Option<(f64, Cost)> = None;
    for powers in [&[0, 1, 2][..], &[0, 1], &[0, 2], &[1, 2], &[0], &[1], &[2]] {
        let Some(c) = fit(&pts, powers) else {
            continue;
        };
        if c.iter().any(|x| *x < 0.0) {
            continue;
        }
        let mut cost = Cost::default();
        for (p, v) in powers.iter().zip(c) {
            match p {
                0 => cost.base_us = round(v),
                1 => cost.per_k_us = round(v),
                _ => cost.per_k2_us = round(v),
            }
        }
        let sse: f64 = pts
            .iter()
            .map(|(k, y)| (cost.at(*k as usize) - y).powi(2))
            .sum();
        if best.as_ref().is_none_or(|(b, _)| sse < *b * 0.999) {
            best = Some((sse, cost));
        }
    }
    best.map(|(_, c)| c).unwrap_or_default()
}

/// The ops only ROAST runs perform (their runs calibrate nothing else, so the
/// two-round ops keep their own measurements).
const ROAST_OPS: [Op; 6] = [
    Op::PresignRefill,
    Op::SignerPresigned,
    Op::AggOffer,
    Op::AggPresignedStart,
    Op::AggCheckSetup,
    Op::AggShareCheck,
];

fn measure(s: &Scenario, points: &mut Points) -> Result<(), SimError> {
    let mut world = sim::World::new(s, None, &sim::WorldOptions { measure: true })?;
    world.run(&mut |_, _| {});
    let mut samples = world.samples();
    if s.signing.strategy == crate::scenario::SigningStrategy::Roast {
        samples.retain(|x| x.ops.iter().all(|op| ROAST_OPS.contains(op)));
    }
    collect(&samples, points);
    Ok(())
}

/// Measures every op on this host and returns the fitted table; `progress` is
/// told what is being measured.
pub fn measure_table(progress: &mut dyn FnMut(&str)) -> Result<CostTable, SimError> {
    let mut points = Points::new();
    for (n, t, count) in SIGNING {
        progress(&format!("signing {t}-of-{n} ({count} signatures)"));
        measure(&scenario(n, t, "fixed-rate", count, "retry")?, &mut points)?;
    }
    for (n, t, count) in SIGNING {
        progress(&format!("ROAST signing {t}-of-{n} ({count} signatures)"));
        measure(&scenario(n, t, "fixed-rate", count, "roast")?, &mut points)?;
    }
    for (n, t) in DKG {
        progress(&format!("DKG n = {n}"));
        measure(&scenario(n, t, "dkg", 1, "retry")?, &mut points)?;
    }
    for (from_n, from_t, n, t) in RESHARE {
        progress(&format!(
            "reshare {from_t}-of-{from_n} to {t}-of-{n} (2 runs)"
        ));
        measure(&reshare_scenario(from_n, from_t, n, t)?, &mut points)?;
    }
    let mut table = CostTable::default();
    for op in Op::ALL {
        if let Some(by_k) = points.get(&op) {
            *table.get_mut(op) = model(by_k);
        }
    }
    Ok(table)
}

/// Measures and writes the table to `out`.
pub fn calibrate_to(out: &Path, progress: &mut dyn FnMut(&str)) -> Result<CostTable, SimError> {
    let table = measure_table(progress)?;
    table.save(out)?;
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_recovers_a_quadratic() {
        let pts: Vec<(f64, f64)> = [3.0, 10.0, 30.0, 67.0]
            .iter()
            .map(|k| (*k, 5.0 + 2.0 * k + 0.5 * k * k))
            .collect();
        let c = fit(&pts, &[0, 1, 2]).expect("fit");
        assert!(
            (c[0] - 5.0).abs() < 1e-6 && (c[1] - 2.0).abs() < 1e-6 && (c[2] - 0.5).abs() < 1e-6
        );
    }

    #[test]
    fn model_falls_back_to_non_negative_terms() {
        let by_k: BTreeMap<usize, Vec<f64>> =
            [(3, vec![100.0]), (10, vec![101.0]), (30, vec![99.0])]
                .into_iter()
                .collect();
        let c = model(&by_k);
        assert!(
            c.base_us >= 0.0 && c.per_k_us >= 0.0 && c.per_k2_us >= 0.0,
            "{c:?}"
        );
        assert!((c.at(10) - 100.0).abs() < 2.0, "{c:?}");
    }
}
