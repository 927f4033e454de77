//! The pipeline's core: the artifact store, the plan (content keys), the
//! runner, and the commands over them. It knows stages and benchmarks only
//! through the [`stage::Stage`] and [`benchmark::Benchmark`] traits and the
//! registry it is handed.

pub mod benchmark;
pub mod cache;
pub mod clean;
pub mod digest;
pub mod estimate;
pub mod fingerprint;
pub mod lock;
pub mod plan;
pub mod progress;
pub mod query;
pub mod runner;
pub mod stage;
pub mod status;
pub mod store;
pub mod verify;
