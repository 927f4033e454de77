//! report stage (issue 8): the study's comparison table, plots and dashboards.

use crate::config::Config;
use crate::runner::{StageInput, StageOutput};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportConfig {}

impl ReportConfig {
    pub fn validate(&self) -> Result<()> {
        Ok(())
    }
}

/// The part of the config the report's key hashes.
pub fn key_config(cfg: &Config) -> Value {
    serde_json::to_value(&cfg.report).expect("serialisable")
}

pub fn run(_input: &StageInput) -> Result<StageOutput> {
    bail!("report is not built yet (issue 8)")
}
