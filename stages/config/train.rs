//! train: the schedule every variant shares, the base SAE and the variants.

use super::ComputeSetting;
use serde::{Deserialize, Serialize};

/// The train stage: the schedule shared by every variant, the base SAE and
/// the variants (see stages/variants.rs).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Tokens per step.
    #[serde(default = "default_train_batch")]
    pub batch_size: usize,
    /// Passes over the train split.
    #[serde(default = "default_epochs")]
    pub epochs: usize,
    /// None: 2e-4 / sqrt(d_sae / 2^14).
    #[serde(default)]
    pub lr: Option<f64>,
    /// None: min(1000, steps / 10).
    #[serde(default)]
    pub warmup_steps: Option<usize>,
    #[serde(default = "default_decay_frac")]
    pub decay_frac: f64,
    /// A latent that has not fired for this many tokens is dead (AuxK).
    #[serde(default = "default_dead_after")]
    pub dead_after_tokens: u64,
    /// Pairs sampled per step by the uniform orthogonality term.
    #[serde(default = "default_uniform_pairs")]
    pub uniform_pairs: usize,
    /// Steps between checkpoints (a killed run resumes from the last one).
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: usize,
    /// The SAE encoder's product: auto, f32 or bf16 (bf16 chooses the active
    /// latents, their values and every gradient stay f32).
    #[serde(default)]
    pub compute: ComputeSetting,
    pub base: super::variants::VariantSettings,
    pub variants: Vec<super::variants::VariantSpec>,
}

fn default_train_batch() -> usize {
    4096
}
fn default_epochs() -> usize {
    1
}
fn default_decay_frac() -> f64 {
    0.2
}
fn default_dead_after() -> u64 {
    10_000_000
}
fn default_uniform_pairs() -> usize {
    8192
}
fn default_checkpoint_every() -> usize {
    50
}
