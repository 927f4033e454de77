//! compete: competition thresholds and the examples the report shows.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompeteConfig {
    /// Competition thresholds: a pair (i, j) competes at tau when
    /// `c_ij >= tau` and `C_ij >= min_cofirings`. Each in [0, 1], at least
    /// one, no repeats; compete_pairs keeps the pairs of the smallest.
    #[serde(default = "default_taus")]
    pub taus: Vec<f64>,
    /// Fewest co-firings for a pair to compete (>= 1): pairs seen once or
    /// twice would otherwise flood the tables through rare latents.
    #[serde(default = "default_min_cofirings")]
    pub min_cofirings: u64,
    /// Seed of the random pairs (the baseline of compete_summary) and of the
    /// random dashboard latents; the same for every variant.
    #[serde(default)]
    pub random_seed: u64,
    /// Top competing pairs per variant (by c_ij, ties by co-firings) whose
    /// contexts go into compete_examples.
    #[serde(default = "default_example_pairs")]
    pub example_pairs: usize,
    /// Contexts per example pair (tokens where both fire, the highest
    /// min(act_i, act_j) first).
    #[serde(default = "default_examples_per_pair")]
    pub examples_per_pair: usize,
    /// Tokens on each side of the firing token in a context (<= 64).
    #[serde(default = "default_context_window")]
    pub context_window: usize,
    /// Latents per reason ('competing': the most competitors at the smallest
    /// tau; 'random': alive latents drawn with random_seed) in
    /// compete_top_contexts.
    #[serde(default = "default_dashboard_latents")]
    pub dashboard_latents: usize,
    /// Top-activating contexts per dashboard latent.
    #[serde(default = "default_top_contexts")]
    pub top_contexts: usize,
}

fn default_taus() -> Vec<f64> {
    vec![0.05, 0.1, 0.2, 0.5]
}
fn default_min_cofirings() -> u64 {
    3
}
fn default_example_pairs() -> usize {
    20
}
fn default_examples_per_pair() -> usize {
    3
}
fn default_context_window() -> usize {
    8
}
fn default_dashboard_latents() -> usize {
    8
}
fn default_top_contexts() -> usize {
    5
}

impl Default for CompeteConfig {
    fn default() -> Self {
        Self {
            taus: default_taus(),
            min_cofirings: default_min_cofirings(),
            random_seed: 0,
            example_pairs: default_example_pairs(),
            examples_per_pair: default_examples_per_pair(),
            context_window: default_context_window(),
            dashboard_latents: default_dashboard_latents(),
            top_contexts: default_top_contexts(),
        }
    }
}

impl CompeteConfig {
    pub fn validate(&self) -> Result<()> {
        if self.taus.is_empty() {
            bail!("compete.taus: empty; expected at least one threshold in [0, 1], e.g. [0.05, 0.1, 0.2, 0.5]");
        }
        for (k, &t) in self.taus.iter().enumerate() {
            if !(t.is_finite() && (0.0..=1.0).contains(&t)) {
                bail!("compete.taus[{k}] = {t}: expected a threshold in [0, 1]");
            }
            if self.taus[..k].contains(&t) {
                bail!("compete.taus[{k}] = {t}: listed twice");
            }
        }
        if self.min_cofirings == 0 {
            bail!("compete.min_cofirings = 0: expected an integer >= 1");
        }
        if self.context_window > 64 {
            bail!(
                "compete.context_window = {}: expected at most 64 tokens on each side",
                self.context_window
            );
        }
        Ok(())
    }

    pub fn tau_min(&self) -> f64 {
        self.taus.iter().copied().fold(f64::INFINITY, f64::min)
    }
}
