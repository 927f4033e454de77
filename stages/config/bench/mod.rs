//! bench: which benchmarks run, and each benchmark's settings (one file
//! each). The names in `benchmarks` are checked against the registry when
//! the plan is made (the schema does not know the benchmarks).

pub mod absorption;
pub mod core_eval;
pub mod datasets;
pub mod external;
pub mod scr_tpp;
pub mod sparse_probing;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BenchConfig {
    /// Which benchmarks run (by name); absent: every registered one. Only
    /// the selected ones get `<benchmark>/<variant>` units.
    #[serde(default)]
    pub benchmarks: Option<Vec<String>>,
    #[serde(default)]
    pub core: core_eval::CoreConfig,
    #[serde(default)]
    pub absorption: absorption::AbsorptionConfig,
    #[serde(default)]
    pub datasets: Vec<datasets::DatasetConfig>,
    #[serde(default)]
    pub sparse_probing: sparse_probing::SparseProbingConfig,
    #[serde(default)]
    pub scr_tpp: scr_tpp::ScrTppConfig,
    /// SAEs trained elsewhere, benchmarked beside the variants.
    #[serde(default)]
    pub external: Vec<external::ExternalSae>,
}

impl BenchConfig {
    pub fn validate(&self) -> Result<()> {
        self.core.validate()?;
        self.absorption.validate()?;
        datasets::validate(&self.datasets)?;
        self.sparse_probing.validate()?;
        self.scr_tpp.validate()?;
        Ok(())
    }

    /// Whether the benchmark `name` is selected.
    pub fn selects(&self, name: &str) -> bool {
        self.benchmarks
            .as_ref()
            .is_none_or(|list| list.iter().any(|n| n == name))
    }

    /// Checks `benchmarks` against the registered names.
    pub fn check_names(&self, known: &[&str]) -> Result<()> {
        let Some(list) = &self.benchmarks else {
            return Ok(());
        };
        for (i, n) in list.iter().enumerate() {
            if !known.contains(&n.as_str()) {
                bail!(
                    "bench.benchmarks[{i}] = '{n}': unknown benchmark; expected some of {}",
                    known.join(", ")
                );
            }
            if list[..i].contains(n) {
                bail!("bench.benchmarks[{i}] = '{n}': listed twice");
            }
        }
        Ok(())
    }
}

pub(crate) fn check_fraction(key: &str, v: f64) -> Result<()> {
    if !(v > 0.0 && v <= 1.0) {
        bail!("{key} = {v}: expected a fraction in (0, 1]");
    }
    Ok(())
}
