//! Parameter sweeps: the scenario runs once per value of one field, and the
//! results are summarized in one table and one set of plots per sweep.

use std::path::Path;

use crate::{
    error::SimError,
    plot::{self, LineChart},
    report::{self, Summary},
    scenario::{Scenario, SweepSpec},
    RunResult,
};

/// One point of a sweep.
#[derive(Debug, Clone)]
pub struct SweepPoint {
    /// The swept field.
    pub param: String,
    /// The value, as written in TOML.
    pub label: String,
    /// The value as a number, when it is one (for a table: its first number).
    pub x: Option<f64>,
    /// Axis label for `x` (`param`, or `param.key` for a table value).
    pub x_label: String,
    /// The scenario with the value applied.
    pub scenario: Scenario,
}

/// Parses `PARAM=V1,V2,…` from the command line (each value is read as TOML,
/// falling back to a string).
pub fn parse_cli(text: &str) -> Result<SweepSpec, SimError> {
    let (param, values) = text
        .split_once('=')
        .ok_or_else(|| SimError::invalid("--sweep", "expected PARAM=V1,V2,..."))?;
    let values: Vec<toml::Value> = values
        .split(',')
        .map(|v| {
            let v = v.trim();
            toml::from_str::<toml::Table>(&format!("v = {v}"))
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or_else(|| toml::Value::String(v.to_string()))
        })
        .collect();
    if param.trim().is_empty() || values.is_empty() {
        return Err(SimError::invalid("--sweep", "expected PARAM=V1,V2,..."));
    }
    Ok(SweepSpec {
        param: param.trim().to_string(),
        values,
    })
}

fn label(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn number(v: &toml::Value) -> Option<f64> {
    match v {
        toml::Value::Integer(i) => Some(*i as f64),
        toml::Value::Float(f) => Some(*f),
        _ => None,
    }
}

/// The number a value is plotted at, and the key it came from for tables.
fn coordinate(v: &toml::Value) -> (Option<f64>, Option<String>) {
    if let toml::Value::Table(t) = v {
        return t
            .iter()
            .find_map(|(k, v)| number(v).map(|x| (Some(x), Some(k.clone()))))
            .unwrap_or((None, None));
    }
    (number(v), None)
}

/// The scenarios of `spec` applied to `base` (each validated).
pub fn expand(base: &Scenario, spec: &SweepSpec) -> Result<Vec<SweepPoint>, SimError> {
    let mut plain = base.clone();
    plain.sweep = None;
    let seed = plain.seed;
    plain.seed = 0;
    let tree = toml::Value::try_from(&plain).map_err(|e| SimError::Serialize(e.to_string()))?;
    let mut points = Vec::new();
    for value in &spec.values {
        let mut t = tree.clone();
        set_path(&mut t, &spec.param, value.clone())?;
        let mut scenario: Scenario =
            t.try_into().map_err(|e: toml::de::Error| SimError::Parse {
                path: format!("sweep {} = {}", spec.param, label(value)),
                message: e.to_string(),
            })?;
        scenario.seed = seed;
        scenario.validate()?;
        let (x, key) = coordinate(value);
        points.push(SweepPoint {
            param: spec.param.clone(),
            label: label(value),
            x,
            x_label: key.map_or_else(|| spec.param.clone(), |k| format!("{}.{k}", spec.param)),
            scenario,
        });
    }
    Ok(points)
}

fn set_path(tree: &mut toml::Value, path: &str, value: toml::Value) -> Result<(), SimError> {
    let bad = || SimError::invalid("sweep.param", format!("{path:?} is not a field path"));
    let parts: Vec<&str> = path.split('.').collect();
    let (last, parents) = parts.split_last().ok_or_else(bad)?;
    let mut cur = tree;
    for p in parents {
        let table = cur.as_table_mut().ok_or_else(bad)?;
        cur = table
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    }
    cur.as_table_mut()
        .ok_or_else(bad)?
        .insert(last.to_string(), value);
    Ok(())
}

/// One row of the sweep table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SweepRow {
    /// Swept value.
    pub value: String,
    /// Its summary.
    pub summary: Summary,
}

/// Writes `sweep.json`, `sweep.csv` and the sweep plots into `dir` (as SVG,
/// and as PNG too with `formats.png`, after everything else).
pub fn write_outputs(
    dir: &Path,
    points: &[SweepPoint],
    results: &[RunResult],
    formats: plot::Formats,
) -> Result<(), SimError> {
    let Some(first) = points.first() else {
        return Ok(());
    };
    let param = &first.param;
    let rows: Vec<SweepRow> = points
        .iter()
        .zip(results)
        .map(|(p, r)| SweepRow {
            value: p.label.clone(),
            summary: r.summary.clone(),
        })
        .collect();
    report::write(&dir.join("sweep.json"), &report::to_json(&rows)?)?;
    let mut csv = format!(
        "{param},sessions,signed,success_rate,p50_ms,p90_ms,p99_ms,max_ms,attempts_mean,attempts_max,messages,bytes,blame_accuracy,trace_hash\n"
    );
    let f = |v: Option<f64>| v.map(|x| format!("{x:.3}")).unwrap_or_default();
    for r in &rows {
        let s = &r.summary;
        let l = s.latency_ms.as_ref();
        csv.push_str(&format!(
            "{},{},{},{:.4},{},{},{},{},{:.3},{},{},{},{},{}\n",
            report::csv_field(&r.value),
            s.sessions,
            s.signed,
            s.success_rate,
            f(l.map(|l| l.p50)),
            f(l.map(|l| l.p90)),
            f(l.map(|l| l.p99)),
            f(l.map(|l| l.max)),
            s.attempts_mean,
            s.attempts_max,
            s.messages,
            s.bytes,
            f(s.blame.accuracy),
            s.trace_hash
        ));
    }
    report::write(&dir.join("sweep.csv"), &csv)?;
    let xs: Vec<f64> = points
        .iter()
        .enumerate()
        .map(|(i, p)| p.x.unwrap_or(i as f64))
        .collect();
    let name = &first.scenario.name;
    let axis = &first.x_label;
    let success = LineChart::sweep(
        &format!("{name}: success rate vs {axis}"),
        axis,
        "success rate",
        &xs,
        &[(
            "success rate".to_string(),
            results.iter().map(|r| r.summary.success_rate).collect(),
        )],
    );
    let lat = |g: fn(&report::Percentiles) -> f64| -> Vec<f64> {
        results
            .iter()
            .map(|r| r.summary.latency_ms.as_ref().map_or(f64::NAN, g) / 1_000.0)
            .collect()
    };
    let latency = LineChart::sweep(
        &format!("{name}: latency vs {axis}"),
        axis,
        "latency (s)",
        &xs,
        &[
            ("mean".to_string(), lat(|p| p.mean)),
            ("p50".to_string(), lat(|p| p.p50)),
            ("p99".to_string(), lat(|p| p.p99)),
            ("max".to_string(), lat(|p| p.max)),
        ],
    );
    let cdfs: Vec<(String, Vec<f64>)> = points
        .iter()
        .zip(results)
        .map(|(p, r)| {
            (
                format!("{param} = {}", p.label),
                r.sessions.iter().filter_map(|s| s.latency_ms).collect(),
            )
        })
        .collect();
    let cdf = LineChart::latency_cdf(&format!("{name}: latency CDF per {param}"), &cdfs);
    plot::save_all(
        dir,
        &[
            ("sweep-success", success),
            ("sweep-latency", latency),
            ("sweep-latency-cdf", cdf),
        ],
        formats,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_values_parse_as_toml() {
        let s = parse_cli("network.loss=0,0.05, 0.1").expect("parse");
        assert_eq!(s.param, "network.loss");
        assert_eq!(s.values[1], toml::Value::Float(0.05));
        assert_eq!(s.values[0], toml::Value::Integer(0));
        assert!(parse_cli("nothing").is_err());
    }
}
