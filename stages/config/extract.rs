//! extract: the forward's batch, stored dtype, shard size and arithmetic.

use anyhow::Result;
use coact::linalg::Compute;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExtractDtype {
    F32,
    F16,
}

/// `compute:` of extract and train: the arithmetic of the large products
/// (see coact::linalg). `auto` is bf16 where the CPU has bf16 hardware
/// (AVX512-BF16 or AMX) and bf16 products measure clearly faster than f32
/// there (measured once per machine, remembered in the user's cache folder),
/// else f32.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ComputeSetting {
    #[default]
    Auto,
    F32,
    Bf16,
}

impl ComputeSetting {
    /// What this setting means on this machine; `key` names it in errors
    /// and in the note printed when `auto` falls back to f32.
    pub fn resolve(self, key: &str) -> Result<Compute> {
        let requested = match self {
            ComputeSetting::Auto => None,
            ComputeSetting::F32 => Some(Compute::F32),
            ComputeSetting::Bf16 => Some(Compute::Bf16),
        };
        let (c, note) = coact::linalg::resolve(requested, key)?;
        if let Some(n) = note {
            // Once per process: plans resolve the keys many times, and every
            // `auto` key (extract's, train's) resolves the same way.
            static SAID: std::sync::Once = std::sync::Once::new();
            let why = n.split_once(" = ").map_or(n.as_str(), |(_, w)| w);
            SAID.call_once(|| {
                crate::pipeline::progress::process_note(format!("note: compute = {why}"))
            });
        }
        Ok(c)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtractConfig {
    /// Sequences per forward pass.
    #[serde(default = "default_extract_batch")]
    pub batch_size: usize,
    /// Stored activation type.
    #[serde(default = "default_extract_dtype")]
    pub dtype: ExtractDtype,
    /// Tokens (rows) per Parquet shard.
    #[serde(default = "default_shard_tokens")]
    pub shard_tokens: usize,
    /// The forward's linear layers (and, for every stage that runs the
    /// model, the unembedding): auto, f32 or bf16.
    #[serde(default)]
    pub compute: ComputeSetting,
}

fn default_extract_batch() -> usize {
    8
}
fn default_extract_dtype() -> ExtractDtype {
    ExtractDtype::F32
}
fn default_shard_tokens() -> usize {
    65536
}

impl Default for ExtractConfig {
    fn default() -> Self {
        Self {
            batch_size: default_extract_batch(),
            dtype: default_extract_dtype(),
            shard_tokens: default_shard_tokens(),
            compute: ComputeSetting::Auto,
        }
    }
}
