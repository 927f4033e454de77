//! compete stage (issue 5): per-variant co-firing statistics on the eval split.

use crate::config::Config;
use crate::runner::{StageInput, StageOutput};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompeteConfig {}

impl CompeteConfig {
    pub fn validate(&self) -> Result<()> {
        Ok(())
    }
}

/// The part of the config a compete artifact's key hashes.
pub fn key_config(cfg: &Config) -> Value {
    serde_json::to_value(&cfg.compete).expect("serialisable")
}

pub fn run(_input: &StageInput) -> Result<StageOutput> {
    bail!("compete is not built yet (issue 5)")
}
