//! The `Benchmark` trait: one per SAEBench-style evaluation, run by the
//! bench stage once per variant (unit `<benchmark>/<variant>`).

use super::stage::{StageInput, StageOutput};
use crate::config::Config;
use anyhow::Result;
use serde_json::Value;

pub trait Benchmark: Sync {
    /// The unit prefix and the name in `bench.benchmarks`.
    fn name(&self) -> &'static str;
    /// One line for `coact --help`.
    fn about(&self) -> &'static str;
    /// The stages it reads besides its variant's SAE (`train/<variant>`).
    fn uses(&self) -> &'static [&'static str];
    /// The part of the config its artifacts' keys hash.
    fn key_config(&self, cfg: &Config) -> Value;
    /// Benchmarks `variant` into `input.out_dir`.
    fn run(&self, input: &StageInput, variant: &str) -> Result<StageOutput>;
}
