//! bench stage: SAEBench's benchmarks, one file each, one artifact per
//! benchmark and variant (unit `<benchmark>/<variant>`).

pub mod absorption;
pub mod absorption_summary;
pub mod core_eval;
pub mod probing;
pub mod scr_tpp;
pub mod scr_tpp_summary;
pub mod sparse_probing;
pub mod sparse_probing_summary;

use crate::config::Config;
use crate::pipeline::stage::{Registry, Stage, StageInput, StageOutput, Unit};
use anyhow::{anyhow, Result};

/// Runs every selected benchmark on every variant.
pub struct BenchStage;

impl Stage for BenchStage {
    fn name(&self) -> &'static str {
        "bench"
    }
    fn about(&self) -> &'static str {
        "the benchmarks (see below), one artifact per benchmark and variant"
    }
    fn deps(&self) -> &'static [&'static str] {
        &["extract", "train", "letters", "datasets", "external"]
    }
    /// Each unit reads its variant's SAE and the shared inputs (the model,
    /// the eval activations and the reference forwards, made once in the run
    /// cache), and no benchmark's figures depend on the thread count.
    fn concurrent_units(&self) -> bool {
        true
    }
    fn units(&self, cfg: &Config, registry: &Registry) -> Result<Vec<Unit>> {
        let mut units = Vec::new();
        for bench in registry.selected_benchmarks(cfg) {
            // Trained variants, then the external SAEs, each read the same way.
            let saes = cfg
                .variants()
                .into_iter()
                .map(|v| format!("train/{}", v.name))
                .chain(
                    cfg.bench
                        .external
                        .iter()
                        .map(|e| format!("external/{}", e.name)),
                );
            for sae in saes {
                let name = sae.split_once('/').map_or("", |p| p.1).to_string();
                units.push(Unit {
                    unit: Some(format!("{}/{name}", bench.name())),
                    config: bench.key_config(cfg),
                    uses: Some(
                        bench
                            .uses()
                            .iter()
                            .map(|u| u.to_string())
                            .chain([sae])
                            .collect(),
                    ),
                });
            }
        }
        Ok(units)
    }
    /// Runs the benchmark named by the unit `<benchmark>/<variant>`.
    fn run(&self, input: &StageInput) -> Result<StageOutput> {
        let unit = input.unit()?;
        let (name, variant) = unit
            .split_once('/')
            .ok_or_else(|| anyhow!("bench unit {unit}: expected <benchmark>/<variant>"))?;
        let bench = input
            .registry
            .benchmark(name)
            .ok_or_else(|| anyhow!("unknown benchmark {name}"))?;
        bench.run(input, variant)
    }
}
