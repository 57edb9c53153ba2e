#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod byzantine;
pub mod calibrate;
pub mod cli;
pub mod cost;
pub mod engine;
pub mod error;
pub mod limits_spec;
pub mod link;
pub mod netting_spec;
mod node;
pub mod plot;
pub mod random;
pub mod report;
pub mod reshare_spec;
pub mod robust;
pub mod scenario;
mod setup;
mod sim;
pub mod spec;
pub mod sweep;
pub mod topology;
pub mod trace;
pub mod workload;

use std::path::PathBuf;

pub use cost::{Cost, CostTable, Op};
pub use error::SimError;
pub use node::NodeStats;
pub use report::{
    LimitsReport, NettingRoundReport, NettingSummary, PresignReport, RoastRecord, SessionRecord,
    Summary,
};
pub use scenario::Scenario;
pub use sim::{NettingRound, ReshareRecord, RunResult};

/// Knobs of one run that are not part of the scenario.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Directory that relative paths in the scenario (the cost file) are resolved against.
    pub base_dir: Option<PathBuf>,
    /// Swept parameter and value, recorded in the summary.
    pub sweep_point: Option<(String, String)>,
}

/// The cost table a scenario asks for (`None` when computation is free).
pub fn cost_table(
    scenario: &Scenario,
    options: &RunOptions,
) -> Result<Option<CostTable>, SimError> {
    use scenario::CpuModel;
    let table = match scenario.cpu.model {
        CpuModel::None => return Ok(None),
        CpuModel::Default => CostTable::builtin(),
        CpuModel::Inline => scenario.cpu.table.clone().unwrap_or_default(),
        CpuModel::File => {
            let file = scenario
                .cpu
                .file
                .as_ref()
                .ok_or_else(|| SimError::invalid("cpu.file", "missing"))?;
            let path = match &options.base_dir {
                Some(dir) if file.is_relative() => dir.join(file),
                _ => file.clone(),
            };
            CostTable::load(&path)?
        }
    };
    Ok(Some(match scenario.cpu.scale {
        Some(s) => table.scaled(s),
        None => table,
    }))
}

/// Runs one scenario to the end and returns its results.
pub fn run(scenario: &Scenario, options: &RunOptions) -> Result<RunResult, SimError> {
    run_with_progress(scenario, options, &mut |_, _| {})
}

/// [`run`], calling `progress(now_s, end_s)` every few thousand events.
pub fn run_with_progress(
    scenario: &Scenario,
    options: &RunOptions,
    progress: &mut dyn FnMut(f64, f64),
) -> Result<RunResult, SimError> {
    let costs = cost_table(scenario, options)?;
    let mut world = sim::World::new(scenario, costs, &sim::WorldOptions::default())?;
    world.run(&mut |now, end| progress(now as f64 / 1e6, end as f64 / 1e6));
    Ok(world.result(options.sweep_point.clone()))
}
