//! The sparse_probing benchmark.

use crate::config::Config;
use crate::runner::{StageInput, StageOutput};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SparseProbingConfig {}

/// The part of the config a sparse_probing artifact's key hashes.
pub fn key_config(cfg: &Config) -> Value {
    serde_json::to_value(&cfg.bench.sparse_probing).expect("serialisable")
}

pub fn run(_input: &StageInput, _variant: &str) -> Result<StageOutput> {
    bail!("the sparse_probing benchmark is not built yet")
}
