//! coact's pipeline: pipeline.yaml, the artifact store, the stages and SQL.
//! Stages talk to each other only through artifacts under data/.

pub mod bench;
pub mod clean;
pub mod compete;
pub mod config;
pub mod corpus;
pub mod datasets;
pub mod digest;
pub mod extract;
pub mod fingerprint;
pub mod letters;
pub mod lock;
pub mod parquet_io;
pub mod plan;
pub mod progress;
pub mod query;
pub mod report;
pub mod runner;
pub mod status;
pub mod store;
pub mod tokenize;
pub mod train;
pub mod variants;
pub mod verify;
