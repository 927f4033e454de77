//! The one list of stages and the one list of benchmarks. Adding either is
//! one line here (and its own files); the plan, the runner, `coact --help`,
//! `coact status` and the report read these lists.

use crate::bench;
use crate::pipeline::benchmark::Benchmark;
use crate::pipeline::stage::{Registry, Stage};

/// In dependency order (each stage after the stages it reads).
pub static STAGES: &[&dyn Stage] = &[
    &crate::tokenize::Tokenize,
    &crate::extract::Extract,
    &crate::train::Train,
    &crate::compete::Compete,
    &crate::letters::Letters,
    &crate::datasets::Datasets,
    &crate::external::External,
    &bench::BenchStage,
    &crate::report::Report,
];

/// In report order.
pub static BENCHMARKS: &[&dyn Benchmark] = &[
    &bench::core_eval::Core,
    &bench::absorption::Absorption,
    &bench::sparse_probing::SparseProbing,
    &bench::scr_tpp::ScrTpp,
];

pub static REGISTRY: Registry = Registry {
    stages: STAGES,
    benchmarks: BENCHMARKS,
};
