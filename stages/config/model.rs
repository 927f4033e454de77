//! model: the language model, its tokenizer and the studied layer.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelSourceKind {
    /// A local GGUF file (`path`).
    Gguf,
    /// A local folder with config.json and *.safetensors (`path`).
    Safetensors,
    /// A Hugging Face model id (`hf_id`), fetched into the HF cache.
    Hf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Recorded in artifacts and SAELens cfg.json (e.g. gemma-3-270m).
    pub name: String,
    pub source: ModelSourceKind,
    #[serde(default)]
    pub path: Option<PathBuf>,
    #[serde(default)]
    pub hf_id: Option<String>,
    #[serde(default)]
    pub revision: Option<String>,
    /// A tokenizer.json path, or `hf` for the tokenizer.json of `hf_id`.
    pub tokenizer: String,
    #[serde(default = "default_bos")]
    pub bos_token: String,
    /// The block whose resid_post is studied (0-based).
    pub layer: usize,
}

fn default_bos() -> String {
    "<bos>".into()
}
