//! One module per kind of artifact (and per raw input the stages share):
//! each owns its file names, its schema, its writer and its reader, so a
//! stage never reads another stage's files by name.

pub mod activations;
pub mod columns;
pub mod corpus;
pub mod datasets;
pub mod letters;
pub mod model;
pub mod parquet_io;
pub mod sae;
pub mod tokens;
