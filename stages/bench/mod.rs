//! bench stage: SAEBench's benchmarks, one file each, one artifact per
//! benchmark and variant (unit `<benchmark>/<variant>`).

pub mod absorption;
pub mod core;
pub mod scr_tpp;
pub mod sparse_probing;

use crate::config::Config;
use crate::runner::{StageInput, StageOutput};
use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A benchmark: its name (the unit prefix), the stages it reads besides its
/// variant's SAE, the part of the config its key hashes, and how it runs.
pub struct Benchmark {
    pub name: &'static str,
    pub uses: &'static [&'static str],
    pub key_config: fn(&Config) -> Value,
    pub run: fn(&StageInput, &str) -> Result<StageOutput>,
}

pub const BENCHMARKS: &[Benchmark] = &[
    Benchmark {
        name: "core",
        uses: &["extract"],
        key_config: core::key_config,
        run: core::run,
    },
    Benchmark {
        name: "absorption",
        uses: &["letters"],
        key_config: absorption::key_config,
        run: absorption::run,
    },
    Benchmark {
        name: "sparse_probing",
        uses: &["datasets"],
        key_config: sparse_probing::key_config,
        run: sparse_probing::run,
    },
    Benchmark {
        name: "scr_tpp",
        uses: &["datasets"],
        key_config: scr_tpp::key_config,
        run: scr_tpp::run,
    },
];

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BenchConfig {
    /// Which benchmarks run (names of [`BENCHMARKS`]; default: all of them).
    /// Only the selected ones get `<benchmark>/<variant>` units.
    #[serde(default = "default_benchmarks")]
    pub benchmarks: Vec<String>,
    #[serde(default)]
    pub core: core::CoreConfig,
    #[serde(default)]
    pub absorption: absorption::AbsorptionConfig,
    #[serde(default)]
    pub datasets: Vec<crate::datasets::DatasetConfig>,
    #[serde(default)]
    pub sparse_probing: sparse_probing::SparseProbingConfig,
    #[serde(default)]
    pub scr_tpp: scr_tpp::ScrTppConfig,
}

fn default_benchmarks() -> Vec<String> {
    BENCHMARKS.iter().map(|b| b.name.to_string()).collect()
}

impl Default for BenchConfig {
    fn default() -> Self {
        Self {
            benchmarks: default_benchmarks(),
            core: Default::default(),
            absorption: Default::default(),
            datasets: Default::default(),
            sparse_probing: Default::default(),
            scr_tpp: Default::default(),
        }
    }
}

impl BenchConfig {
    pub fn validate(&self) -> Result<()> {
        let names: Vec<&str> = BENCHMARKS.iter().map(|b| b.name).collect();
        for (i, n) in self.benchmarks.iter().enumerate() {
            if !names.contains(&n.as_str()) {
                bail!(
                    "bench.benchmarks[{i}] = '{n}': unknown benchmark; expected some of {}",
                    names.join(", ")
                );
            }
            if self.benchmarks[..i].contains(n) {
                bail!("bench.benchmarks[{i}] = '{n}': listed twice");
            }
        }
        self.core.validate()?;
        self.absorption.validate()?;
        crate::datasets::validate(&self.datasets)?;
        self.sparse_probing.validate()?;
        self.scr_tpp.validate()?;
        Ok(())
    }

    /// The selected benchmarks, in [`BENCHMARKS`] order.
    pub fn selected(&self) -> impl Iterator<Item = &'static Benchmark> + '_ {
        BENCHMARKS
            .iter()
            .filter(|b| self.benchmarks.iter().any(|n| n == b.name))
    }
}

/// Runs the benchmark named by the unit `<benchmark>/<variant>`.
pub fn run(input: &StageInput) -> Result<StageOutput> {
    let unit = input
        .planned
        .unit
        .as_deref()
        .context("bench runs per unit")?;
    let (name, variant) = unit
        .split_once('/')
        .ok_or_else(|| anyhow!("bench unit {unit}: expected <benchmark>/<variant>"))?;
    match BENCHMARKS.iter().find(|b| b.name == name) {
        Some(b) => (b.run)(input, variant),
        None => bail!("unknown benchmark {name}"),
    }
}
