//! bench.sparse_probing: k-sparse probes on the top-k mean-difference latents.

use super::check_fraction;
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SparseProbingConfig {
    /// Numbers of latents (and of residual channels) the sparse probes use.
    #[serde(default = "default_ks")]
    pub ks: Vec<usize>,
    /// Probe seeds 0..seeds: each balances classes and subsamples train anew.
    #[serde(default = "default_seeds")]
    pub seeds: usize,
    /// Share of each balanced train side a seed keeps.
    #[serde(default = "default_train_fraction")]
    pub train_fraction: f64,
    /// sklearn's inverse L2 strength C of every probe (SAEBench: 1).
    #[serde(default = "default_c")]
    pub c: f64,
    /// Also fit a probe on all latents (SAEBench's optional
    /// sae_test_accuracy; k null in the table). Off by default: it is the
    /// slowest part of the benchmark (~1 s per probe on this CPU).
    #[serde(default)]
    pub all_latents: bool,
}

fn default_ks() -> Vec<usize> {
    vec![1, 2, 5]
}
fn default_seeds() -> usize {
    3
}
fn default_train_fraction() -> f64 {
    0.8
}
fn default_c() -> f64 {
    1.0
}

impl Default for SparseProbingConfig {
    fn default() -> Self {
        Self {
            ks: default_ks(),
            seeds: default_seeds(),
            train_fraction: default_train_fraction(),
            c: default_c(),
            all_latents: false,
        }
    }
}

impl SparseProbingConfig {
    pub fn validate(&self) -> Result<()> {
        let key = "bench.sparse_probing";
        if self.ks.is_empty() || self.ks.contains(&0) {
            bail!(
                "{key}.ks = {:?}: expected a non-empty list of positive numbers of latents",
                self.ks
            );
        }
        if self.seeds == 0 {
            bail!("{key}.seeds = 0: expected at least 1 probe seed");
        }
        check_fraction(&format!("{key}.train_fraction"), self.train_fraction)?;
        if !(self.c.is_finite() && self.c > 0.0) {
            bail!(
                "{key}.c = {}: expected a positive inverse regularisation strength",
                self.c
            );
        }
        Ok(())
    }
}
