//! bench.scr_tpp: SCR and TPP (ablating latents to remove a spurious signal or one class).

use super::check_fraction;
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScrTppConfig {
    /// Numbers of latents ablated.
    #[serde(default = "default_ns")]
    pub ns: Vec<usize>,
    /// Probe seeds 0..seeds.
    #[serde(default = "default_seeds")]
    pub seeds: usize,
    /// Share of each balanced train side a seed keeps.
    #[serde(default = "default_train_fraction")]
    pub train_fraction: f64,
    /// L1 strength of the probes (mean log-loss + l1 * |w|_1, on the
    /// residual scaled to unit mean squared entry; SAEBench: 1e-3).
    #[serde(default = "default_probe_l1")]
    pub probe_l1: f64,
    /// The two binary tasks SCR correlates: [intended, spurious] (SAEBench's
    /// [profession, gender]); null: [party, era]. Every dataset with both
    /// tasks gets SCR. SCR means something only when both tasks are
    /// decodable from the residual: on the default SOTU dataset, party is
    /// not once era is balanced (its oracle probe scores ~0.51 on
    /// gemma-3-270m, layer 6), so the default pair measures noise there; use
    /// a dataset such as LabHC/bias_in_bios (profession, gender) for SCR.
    #[serde(default)]
    pub scr_tasks: Option<Vec<String>>,
    /// The task whose classes TPP perturbs; null: period. Every dataset with
    /// that task gets TPP.
    #[serde(default)]
    pub tpp_task: Option<String>,
}

fn default_ns() -> Vec<usize> {
    vec![2, 5, 10, 20, 50, 100, 500]
}
fn default_seeds() -> usize {
    3
}
fn default_train_fraction() -> f64 {
    0.8
}
fn default_probe_l1() -> f64 {
    1e-3
}

impl Default for ScrTppConfig {
    fn default() -> Self {
        Self {
            ns: default_ns(),
            seeds: default_seeds(),
            train_fraction: default_train_fraction(),
            probe_l1: default_probe_l1(),
            scr_tasks: None,
            tpp_task: None,
        }
    }
}

impl ScrTppConfig {
    pub fn validate(&self) -> Result<()> {
        let key = "bench.scr_tpp";
        if self.ns.is_empty() || self.ns.contains(&0) {
            bail!(
                "{key}.ns = {:?}: expected a non-empty list of positive numbers of latents",
                self.ns
            );
        }
        if self.seeds == 0 {
            bail!("{key}.seeds = 0: expected at least 1 probe seed");
        }
        check_fraction(&format!("{key}.train_fraction"), self.train_fraction)?;
        if !(self.probe_l1.is_finite() && self.probe_l1 >= 0.0) {
            bail!(
                "{key}.probe_l1 = {}: expected a non-negative L1 strength",
                self.probe_l1
            );
        }
        if let Some(t) = &self.scr_tasks {
            if t.len() != 2 || t[0] == t[1] {
                bail!("{key}.scr_tasks = {t:?}: expected two different task names, [intended, spurious]");
            }
        }
        Ok(())
    }

    pub fn scr_pair(&self) -> (String, String) {
        match &self.scr_tasks {
            Some(t) => (t[0].clone(), t[1].clone()),
            None => ("party".into(), "era".into()),
        }
    }

    pub fn tpp(&self) -> String {
        self.tpp_task.clone().unwrap_or_else(|| "period".into())
    }
}
