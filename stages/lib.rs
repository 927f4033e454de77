//! coact's pipeline: pipeline.yaml, the artifact store, the stages and SQL.
//! Stages talk to each other only through artifacts under data/.
//!
//! Dependencies point one way: `config` (the schema) <- `pipeline` (store,
//! plan, runner, the `Stage` and `Benchmark` traits) <- `artifacts` (each
//! artifact kind's files, writer and reader) <- the stages and `bench`'s
//! benchmarks <- `registry` (the one list of each) <- main.

pub mod artifacts;
pub mod config;
pub mod pipeline;

pub mod bench;
pub mod compete;
pub mod datasets;
pub mod external;
pub mod extract;
pub mod letters;
pub mod report;
pub mod tokenize;
pub mod train;

pub mod registry;
