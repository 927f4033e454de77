//! Gemma forward pass (gemma-2 and gemma-3) with a residual-stream hook.
//!
//! candle-transformers' Gemma models only return final-position logits and keep
//! their layers private, so coact carries its own forward, built from candle-nn
//! parts. It serves two callers:
//!
//! * extraction: [`Gemma::resid_post`] runs blocks `0..=layer` and stops there
//!   (no later layers, no 262k-token unembedding), returning the residual stream
//!   after block `layer` (TransformerLens' `blocks.{layer}.hook_resid_post`,
//!   see [`hook_name`]);
//! * evaluation: [`Gemma::logits`] runs the whole model and can replace the
//!   residual after one block by any function of it (an SAE's reconstruction,
//!   a zero ablation, ...). This module knows nothing of SAEs.
//!
//! Inputs are packed token sequences `[B, T]` (u32, no padding, BOS first if
//! the caller wants one): attention is causal, plus the sliding window on the
//! local layers.
//!
//! Weights come from a GGUF file (the offline default, gemma-3-270m), a local
//! Hugging Face folder (`config.json` + `*.safetensors`), or a model id on the
//! Hugging Face hub (fetched into the HF cache, `HF_HOME` respected); see
//! [`ModelSource`].
//!
//! Files: `config.rs` (hyper-parameters from config.json or GGUF metadata),
//! `load.rs` (the three loaders), `model.rs` (the forward), `ops.rs` (the
//! small numerical pieces as candle ops: Gemma RMSNorm, softcap, rope, masked
//! softmax, GeGLU), `attention.rs` (the attention core, fused on CPU),
//! `fused.rs` (the fused CPU row kernels: norms with their residual adds,
//! GeGLU, softcap), `simd.rs` (vectorised exp/tanh and ISA dispatch),
//! `linear.rs` (the projections through [`crate::linalg`]).

mod attention;
mod config;
mod fused;
mod linear;
mod load;
mod model;
pub mod ops;
pub(crate) mod simd;

pub use config::{Activation, Arch, GemmaConfig};
pub use load::{LoadOptions, WeightFormat};
pub use model::{Gemma, Kernels, Splice, UnembedWeight};

use std::path::PathBuf;

/// Where a model's weights come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A `.gguf` file (llama.cpp layout; architecture `gemma3` or `gemma2`).
    Gguf(PathBuf),
    /// A local folder in the Hugging Face layout: `config.json` plus
    /// `model.safetensors` or sharded `model-0000N-of-0000M.safetensors` with
    /// `model.safetensors.index.json`.
    Safetensors(PathBuf),
    /// A Hugging Face model id such as `google/gemma-2-2b`, fetched with
    /// hf-hub's sync API into the HF cache (`HF_HOME`, `HF_ENDPOINT` and
    /// `HF_HUB_OFFLINE` respected). Files already in the cache load offline.
    Hub {
        repo: String,
        revision: Option<String>,
    },
}

impl ModelSource {
    /// Guesses the kind of source from a string: an existing path ending in
    /// `.gguf` is a GGUF file, an existing folder is a safetensors checkpoint,
    /// anything else is taken as a hub model id (`org/name`, optionally
    /// `org/name@revision`).
    pub fn parse(s: &str) -> Self {
        let path = PathBuf::from(s);
        if s.to_ascii_lowercase().ends_with(".gguf") {
            return ModelSource::Gguf(path);
        }
        if path.is_dir() {
            return ModelSource::Safetensors(path);
        }
        match s.split_once('@') {
            Some((repo, rev)) => ModelSource::Hub {
                repo: repo.to_string(),
                revision: Some(rev.to_string()),
            },
            None => ModelSource::Hub {
                repo: s.to_string(),
                revision: None,
            },
        }
    }
}

impl std::fmt::Display for ModelSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModelSource::Gguf(p) => write!(f, "GGUF file {}", p.display()),
            ModelSource::Safetensors(p) => write!(f, "safetensors folder {}", p.display()),
            ModelSource::Hub { repo, revision } => match revision {
                Some(r) => write!(f, "hub model {repo}@{r}"),
                None => write!(f, "hub model {repo}"),
            },
        }
    }
}

/// The TransformerLens / SAELens name of the residual stream after block
/// `layer`: `blocks.{layer}.hook_resid_post`.
pub fn hook_name(layer: usize) -> String {
    format!("blocks.{layer}.hook_resid_post")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hook_names_follow_transformer_lens() {
        assert_eq!(hook_name(12), "blocks.12.hook_resid_post");
        assert_eq!(hook_name(0), "blocks.0.hook_resid_post");
    }

    #[test]
    fn parse_guesses_the_source_kind() {
        assert_eq!(
            ModelSource::parse("data/raw/x.gguf"),
            ModelSource::Gguf("data/raw/x.gguf".into())
        );
        assert_eq!(
            ModelSource::parse("google/gemma-2-2b"),
            ModelSource::Hub {
                repo: "google/gemma-2-2b".into(),
                revision: None
            }
        );
        assert_eq!(
            ModelSource::parse("google/gemma-2-2b@main"),
            ModelSource::Hub {
                repo: "google/gemma-2-2b".into(),
                revision: Some("main".into())
            }
        );
        let dir = std::env::temp_dir();
        assert_eq!(
            ModelSource::parse(dir.to_str().unwrap()),
            ModelSource::Safetensors(dir)
        );
    }
}
