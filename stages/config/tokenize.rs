//! tokenize: sequence length, split sizes and seed.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenizeConfig {
    /// Tokens per sequence, BOS included.
    pub context_size: usize,
    /// Eval split size in tokens (rounded down to whole sequences).
    pub eval_tokens: u64,
    /// Train split size in tokens; absent or null: every remaining document.
    #[serde(default)]
    pub train_tokens: Option<u64>,
    /// Seed of the document-level split.
    #[serde(default)]
    pub seed: u64,
}
