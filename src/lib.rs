//! coact's engine: the science, usable as a library without the pipeline.
//!
//! Nothing here reads pipeline.yaml or the artifact store: the stages in
//! `stages/` translate configuration into calls on these modules.

pub mod competition;
pub mod hub;
pub mod linalg;
pub mod lm;
pub mod metrics;
pub mod probe;
pub mod rng;
pub mod sae;
pub mod text;
