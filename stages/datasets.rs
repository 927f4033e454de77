//! datasets stage (issue 7): the model's activations for each labelled
//! dataset of the probing benchmarks, shared by every variant.

use crate::config::Config;
use crate::runner::{StageInput, StageOutput};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetConfig {
    pub name: String,
}

/// One artifact per dataset: (unit name, config its key hashes).
pub fn units(cfg: &Config) -> Result<Vec<(String, Value)>> {
    Ok(cfg
        .bench
        .datasets
        .iter()
        .map(|d| {
            (
                d.name.clone(),
                serde_json::to_value(d).expect("serialisable"),
            )
        })
        .collect())
}

pub fn run(_input: &StageInput) -> Result<StageOutput> {
    bail!("datasets is not built yet (issue 7)")
}
