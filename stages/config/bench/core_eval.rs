//! bench.core: SAEBench's core metrics (reconstruction, CE/KL with the SAE spliced in).

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// How the CE / KL sequences are chosen from the eval split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CeSelection {
    /// The first `ce_sequences` eval sequences (in seq_id order).
    #[default]
    First,
    /// `ce_sequences` eval sequences drawn without replacement with `seed`.
    Seeded,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoreConfig {
    /// Whole eval sequences run through the model for the CE and KL scores
    /// (per variant each costs the blocks after the layer and the logits of
    /// its tokens, ~0.3 s for 128 tokens on the default study's CPU, plus the
    /// original and zero-ablated forwards shared by all variants). Capped at
    /// the eval split's sequence count.
    #[serde(default = "default_ce_sequences")]
    pub ce_sequences: usize,
    /// `first` (the first ce_sequences eval sequences) or `seeded` (a sample
    /// drawn with `seed`).
    #[serde(default)]
    pub ce_selection: CeSelection,
    /// Seed of the `seeded` selection.
    #[serde(default)]
    pub seed: u64,
    /// Sequences per forward pass of the CE / KL runs. Memory: the
    /// activations of those sequences, plus for a softcapped model (gemma-2)
    /// the original's log-probabilities (128 MiB per 128-token sequence with
    /// a 256k vocabulary) and one 128-row logits buffer.
    #[serde(default = "default_forward_batch_size")]
    pub forward_batch_size: usize,
    /// SAEBench's `batch_size_prompts`: consecutive eval sequences per batch
    /// for the batch-dependent figures (`mse`, `explained_variance_legacy`,
    /// `relative_reconstruction_bias`). SAEBench's default is 16.
    #[serde(default = "default_batch_size_prompts")]
    pub batch_size_prompts: usize,
    /// Keep the original residual at BOS in the SAE splice (SAEBench's
    /// `exclude_special_tokens_from_reconstruction`, on in its documented
    /// runs); false splices the reconstruction at every position.
    #[serde(default = "default_true")]
    pub exclude_special_tokens_from_reconstruction: bool,
    /// MiB of the original forward's results kept in memory from one core
    /// unit to the next within a run, so that later variants skip the
    /// unspliced forward; 0 recomputes it per unit. That is ~5 KiB per
    /// counted token for a model with linear logits (gemma-3), the
    /// log-probabilities (1 MiB per token with a 256k vocabulary) for a
    /// softcapped one (gemma-2). Changes the cost, never the results.
    #[serde(default = "default_keep_original_mib")]
    pub keep_original_mib: usize,
}

fn default_ce_sequences() -> usize {
    8
}
fn default_forward_batch_size() -> usize {
    8
}
fn default_batch_size_prompts() -> usize {
    16
}
fn default_keep_original_mib() -> usize {
    1536
}
fn default_true() -> bool {
    true
}

impl Default for CoreConfig {
    fn default() -> Self {
        Self {
            ce_sequences: default_ce_sequences(),
            ce_selection: CeSelection::default(),
            seed: 0,
            forward_batch_size: default_forward_batch_size(),
            batch_size_prompts: default_batch_size_prompts(),
            exclude_special_tokens_from_reconstruction: true,
            keep_original_mib: default_keep_original_mib(),
        }
    }
}

impl CoreConfig {
    pub fn validate(&self) -> Result<()> {
        if self.ce_sequences == 0 {
            bail!("bench.core.ce_sequences = 0: expected at least 1 eval sequence for the CE and KL scores");
        }
        if self.forward_batch_size == 0 {
            bail!(
                "bench.core.forward_batch_size = 0: expected at least 1 sequence per forward pass"
            );
        }
        if self.batch_size_prompts == 0 {
            bail!("bench.core.batch_size_prompts = 0: expected at least 1 sequence per batch (SAEBench uses 16)");
        }
        Ok(())
    }
}
