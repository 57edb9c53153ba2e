//! Command-line entry points for `quorate sim` (the binary wires these in).

use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};

use crate::{
    calibrate::calibrate_to,
    cost::CostTable,
    error::SimError,
    plot::{self, LineChart},
    report::{self, Summary},
    scenario::Scenario,
    sweep, RunOptions, RunResult,
};

/// Arguments of `quorate sim`.
#[derive(clap::Args, Debug, Clone)]
pub struct SimArgs {
    /// Scenario file (TOML), e.g. simulations/scenarios/wan-3of5.toml.
    pub scenario: PathBuf,
    /// Override the scenario's seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Directory for reports and plots (a sub-directory per scenario is created).
    #[arg(long, default_value = "sim-out")]
    pub out: PathBuf,
    /// Sweep one parameter, `PARAM=V1,V2,...` (e.g. `network.loss=0,0.05,0.1`);
    /// replaces the scenario's own `[sweep]`.
    #[arg(long, value_name = "PARAM=VALUES")]
    pub sweep: Option<String>,
    /// Ignore the scenario's `[sweep]` and run it once.
    #[arg(long, conflicts_with = "sweep")]
    pub no_sweep: bool,
    /// Print only the final summary lines (no configuration dump, no progress bar).
    #[arg(long)]
    pub quiet: bool,
    /// Also write every plot as PNG next to its SVG. Needs a TrueType font:
    /// QUORATE_SIM_FONT=/path/to/font.ttf, or DejaVu Sans (Debian:
    /// fonts-dejavu-core). Without one, everything else is still written and
    /// the run then fails with an error saying so.
    #[arg(long)]
    pub png: bool,
}

fn progress_bar(quiet: bool, label: &str) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(1_000);
    if let Ok(style) = ProgressStyle::with_template("{prefix} [{bar:40}] {msg} (elapsed {elapsed})")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(label.to_string());
    bar
}

fn run_one(
    scenario: &Scenario,
    options: &RunOptions,
    quiet: bool,
    label: &str,
) -> Result<RunResult, SimError> {
    let bar = progress_bar(quiet, label);
    let started = std::time::Instant::now();
    let result = crate::run_with_progress(scenario, options, &mut |now, end| {
        if end > 0.0 {
            bar.set_position(((now / end).min(1.0) * 1_000.0) as u64);
        }
        bar.set_message(format!("{now:.0}/{end:.0} virtual s"));
    })?;
    bar.finish_and_clear();
    let s = &result.summary;
    let lat = s
        .latency_ms
        .as_ref()
        .map(|l| {
            format!(
                "p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms",
                l.p50, l.p90, l.p99
            )
        })
        .unwrap_or_else(|| "no successful session".into());
    eprintln!(
        "{label}: {}/{} ok ({:.1}%), {lat}, attempts mean {:.2} max {}, {} msgs, wall {:.1}s",
        s.signed,
        s.sessions,
        s.success_rate * 100.0,
        s.attempts_mean,
        s.attempts_max,
        s.messages,
        started.elapsed().as_secs_f64()
    );
    if let Some(n) = &s.netting {
        eprintln!("{label}: {}", netting_line(n));
    }
    eprintln!("{label}: seed {} trace hash {}", s.seed, s.trace_hash);
    Ok(result)
}

/// The one-line text summary of a run's netting rounds.
pub fn netting_line(n: &report::NettingSummary) -> String {
    let lat = n
        .latency_ms
        .as_ref()
        .map(|l| format!("latency p50 {:.1} ms, max {:.1} ms", l.p50, l.max))
        .unwrap_or_else(|| "no settled round".into());
    let culprits = if n.culprits.is_empty() {
        "none".to_string()
    } else {
        n.culprits.join(" ")
    };
    format!(
        "netting {}/{} rounds settled, {lat}, {} msgs, {} bytes, culprits {culprits}, results {} the plaintext reference",
        n.settled,
        n.rounds,
        n.messages,
        n.bytes,
        if n.results_match_reference { "match" } else { "DIFFER from" }
    )
}

/// Writes one run's reports and plots into `dir` (the plots as SVG, and as PNG
/// too with `formats.png`, after everything else).
pub fn write_run(
    dir: &Path,
    scenario: &Scenario,
    result: &RunResult,
    formats: plot::Formats,
) -> Result<(), SimError> {
    report::write(&dir.join("config.toml"), &scenario.to_toml())?;
    report::write(
        &dir.join("summary.json"),
        &report::to_json(&result.summary)?,
    )?;
    report::write(
        &dir.join("sessions.csv"),
        &report::sessions_csv(&result.sessions),
    )?;
    if let Some(n) = &result.summary.netting {
        report::write(&dir.join("netting.csv"), &report::netting_csv(&n.detail))?;
    }
    let latencies: Vec<f64> = result
        .sessions
        .iter()
        .filter_map(|s| s.latency_ms)
        .collect();
    let bin = (scenario.workload.duration_s / 60.0).clamp(1.0, 600.0);
    plot::save_all(
        dir,
        &[
            (
                "latency-cdf",
                LineChart::latency_cdf(
                    &format!("{}: latency CDF", scenario.name),
                    &[("latency".to_string(), latencies)],
                ),
            ),
            (
                "throughput",
                LineChart::throughput(
                    &format!("{}: throughput ({bin:.0} s bins)", scenario.name),
                    &plot::throughput_series(&result.sessions, bin),
                ),
            ),
        ],
        formats,
    )
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.=".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Output formats for `--png`: PNG only when its font loads; otherwise the
/// error, reported after everything else is written (checked up front so a
/// long run is not lost to a missing font at the end).
fn plot_formats(png: bool) -> (plot::Formats, Option<SimError>) {
    if !png {
        return (plot::Formats::default(), None);
    }
    match plot::png_font() {
        Ok(_) => (plot::Formats { png: true }, None),
        Err(e) => {
            eprintln!("warning: {e}\nwarning: writing reports and SVG plots only, then failing");
            (plot::Formats::default(), Some(e))
        }
    }
}

/// `quorate sim <scenario>`: runs the scenario (or its sweep), writes reports
/// and plots under `--out`, and returns one summary per run.
///
/// With `--png` and no usable font, the runs and all other outputs still
/// happen, then [`SimError::Font`] is returned.
pub fn run(args: SimArgs) -> Result<Vec<Summary>, SimError> {
    let mut scenario = Scenario::load(&args.scenario)?;
    if let Some(seed) = args.seed {
        scenario.seed = seed;
    }
    let sweep_spec = match (&args.sweep, args.no_sweep) {
        (Some(s), _) => Some(sweep::parse_cli(s)?),
        (None, false) => scenario.sweep.clone(),
        (None, true) => None,
    };
    let options = RunOptions {
        base_dir: args.scenario.parent().map(Path::to_path_buf),
        sweep_point: None,
    };
    let dir = args.out.join(sanitize(&scenario.name));
    let (formats, png_error) = plot_formats(args.png);
    if !args.quiet {
        eprintln!(
            "quorate-sim: scenario {} (seed {}) from {}",
            scenario.name,
            scenario.seed,
            args.scenario.display()
        );
        eprintln!("--- expanded configuration ---\n{}---", scenario.to_toml());
    }
    let Some(spec) = sweep_spec else {
        let result = run_one(&scenario, &options, args.quiet, &scenario.name)?;
        write_run(&dir, &scenario, &result, formats)?;
        eprintln!("reports and plots in {}", dir.display());
        return png_error.map_or(Ok(vec![result.summary]), Err);
    };
    let points = sweep::expand(&scenario, &spec)?;
    let mut results = Vec::with_capacity(points.len());
    for p in &points {
        let label = format!("{}={}", p.param, p.label);
        let opts = RunOptions {
            sweep_point: Some((p.param.clone(), p.label.clone())),
            ..options.clone()
        };
        let result = run_one(&p.scenario, &opts, args.quiet, &label)?;
        write_run(&dir.join(sanitize(&label)), &p.scenario, &result, formats)?;
        results.push(result);
    }
    sweep::write_outputs(&dir, &points, &results, formats)?;
    eprintln!("sweep reports and plots in {}", dir.display());
    png_error.map_or(Ok(results.into_iter().map(|r| r.summary).collect()), Err)
}

/// `quorate sim-calibrate --out FILE`: measures this host's protocol costs and
/// writes a cost file that scenarios can use with `[cpu] model = "file"`.
pub fn calibrate(out: &Path) -> Result<CostTable, SimError> {
    let table = calibrate_to(out, &mut |what| eprintln!("calibrate: measuring {what}"))?;
    eprintln!("calibrate: wrote {}", out.display());
    Ok(table)
}
