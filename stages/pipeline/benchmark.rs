//! The `Benchmark` trait: one per SAEBench-style evaluation, run by the
//! bench stage once per variant (unit `<benchmark>/<variant>`), and what the
//! report needs of it: its metrics, its tables and how they summarise into
//! per-variant values ([`Summary`]).

use super::stage::{StageInput, StageOutput};
use crate::config::Config;
use anyhow::Result;
use arrow::array::RecordBatch;
use serde_json::Value;
use std::collections::BTreeMap;

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
    /// The report's columns for it, in order (keys of [`Summary::values`]).
    fn metrics(&self) -> &'static [MetricDef];
    /// The tables its artifacts hold that the report summarises.
    fn tables(&self) -> &'static [&'static str];
    /// Adds what table `table` (one variant's rows) says to `into`.
    fn summarise(&self, table: &str, batches: &[RecordBatch], into: &mut Summary) -> Result<()>;
    /// The sample its figures rest on, in words, from an artifact's
    /// manifest summary (the report states it beside the numbers).
    fn sample_size(&self, _summary: &Value) -> Option<String> {
        None
    }
}

/// Which way a metric is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    Higher,
    Lower,
    /// Not a quality (L0 is held by k).
    Neither,
}

/// One metric of the report's comparison table.
#[derive(Debug)]
pub struct MetricDef {
    /// Its key in [`Summary::values`].
    pub key: &'static str,
    /// Column header.
    pub label: &'static str,
    pub better: Better,
    /// Decimals shown.
    pub digits: usize,
    /// Its definition, one line.
    pub help: &'static str,
}

/// What one benchmark's tables say about one variant.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    /// Metric key -> value: the benchmark's [`MetricDef`] keys, and any other
    /// value the report may read by key (every core metric by its name).
    pub values: BTreeMap<String, f64>,
    /// Letter -> absorption fraction (absorption's per-letter plot).
    pub letters: BTreeMap<String, f64>,
    /// Test accuracies of the dense probe on the model's own activations
    /// (sparse probing's reference; the report shows their mean over variants).
    pub dense_probe: Vec<f64>,
}
