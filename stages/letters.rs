//! letters stage (issue 6): the model's activations for the first-letter
//! prompts of the absorption benchmark, shared by every variant.

use crate::config::Config;
use crate::runner::{StageInput, StageOutput};
use anyhow::{bail, Result};
use serde_json::Value;

/// The part of the config a letters artifact's key hashes.
pub fn key_config(cfg: &Config) -> Value {
    serde_json::to_value(&cfg.bench.absorption).expect("serialisable")
}

pub fn run(_input: &StageInput) -> Result<StageOutput> {
    bail!("letters is not built yet (issue 6)")
}
