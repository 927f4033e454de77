//! SAEBench's metric definitions, as plain functions of arrays: the core
//! reconstruction and sparsity metrics, the absorption calculator, and the
//! probing / SCR / TPP formulas. The pipeline's bench stage feeds them.

pub mod absorption;
pub mod core;
pub mod probing;
