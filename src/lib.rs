//! coact's engine: the science, usable as a library without the pipeline.
//!
//! Nothing here reads pipeline.yaml or the artifact store: the stages in
//! `stages/` translate configuration into calls on these modules.

pub mod hub;
pub mod lm;
pub mod rng;
pub mod sae;
pub mod text;
