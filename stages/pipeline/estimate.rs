//! Time estimates for what `coact run` would build, from the throughput of
//! the artifacts already in the store (made on this machine, by any study
//! sharing the data folder): seconds per token and block for extract,
//! per token and latent for train (per orthogonality kind), per latent for
//! compete and each benchmark, and the median time of the stages whose cost
//! does not follow the config. An artifact kind never built has no estimate,
//! and says so.

use crate::config::variants::{OrthoKind, VariantSettings};
use crate::config::Config;
use crate::pipeline::plan::Planned;
use crate::pipeline::store::{Manifest, Store};
use coact::sae::Architecture;
use std::collections::BTreeMap;

/// Measured rates, by what they scale with.
pub struct Estimator {
    /// Seconds per token per transformer block run (extract).
    extract: Option<f64>,
    /// Seconds per training token per latent, by ortho kind ("" = any).
    train: BTreeMap<String, f64>,
    /// Seconds per latent, by `compete` or `bench/<benchmark>`.
    per_latent: BTreeMap<String, f64>,
    /// Median seconds, by stage.
    flat: BTreeMap<String, f64>,
    /// Tokens in the corpus, as the last tokenize counted them.
    corpus_tokens: Option<f64>,
}

/// A unit's share of a run's wall time on `threads_now` threads: its
/// elapsed time scaled by the threads it ran on (half of them, say, when two
/// ran at once). Manifests without a thread count are taken as whole-machine.
pub(crate) fn wall_share(m: &Manifest, threads_now: usize) -> f64 {
    let threads_now = threads_now.max(1);
    m.elapsed_s * m.threads.unwrap_or(threads_now) as f64 / threads_now as f64
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite() && *x > 0.0);
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

/// A train artifact's latents and ortho kind, from its config.
fn train_shape(m: &Manifest) -> Option<(f64, String)> {
    let s = &m.config["sae"];
    Some((s["d_sae"].as_f64()?, s["ortho"].as_str()?.to_string()))
}

impl Estimator {
    /// Reads every manifest of the store (unreadable ones are skipped).
    pub fn measure(store: &Store, stages: &[&str]) -> Estimator {
        let threads = rayon::current_num_threads();
        let list = |s: &str| store.list(s).unwrap_or_default();
        let trains = list("train");
        let d_sae_of = |key: &str| {
            trains
                .iter()
                .find(|m| m.key == key)
                .and_then(train_shape)
                .map(|s| s.0)
        };
        let extract = median(
            list("extract")
                .iter()
                .filter_map(|m| {
                    let tokens: f64 = m.summary["splits"]
                        .as_object()?
                        .values()
                        .filter_map(|s| s["tokens"].as_f64())
                        .sum();
                    let blocks = m.summary["layer"].as_f64()? + 1.0;
                    Some(wall_share(m, threads) / (tokens * blocks))
                })
                .collect(),
        );
        let mut by_ortho: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for m in &trains {
            let (Some((d_sae, ortho)), Some(steps), Some(batch)) = (
                train_shape(m),
                m.summary["steps"].as_f64(),
                m.summary["batch_size"].as_f64(),
            ) else {
                continue;
            };
            let rate = wall_share(m, threads) / (steps * batch * d_sae);
            by_ortho.entry(ortho).or_default().push(rate);
            by_ortho.entry(String::new()).or_default().push(rate);
        }
        let train = by_ortho
            .into_iter()
            .filter_map(|(k, v)| Some((k, median(v)?)))
            .collect();
        let mut per_latent: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for stage in ["compete", "bench"] {
            for m in list(stage) {
                let Some(d_sae) = m
                    .inputs
                    .iter()
                    .find(|(k, _)| k.starts_with("train/"))
                    .and_then(|(_, key)| d_sae_of(key))
                else {
                    continue;
                };
                per_latent
                    .entry(rate_name(stage, m.unit.as_deref()))
                    .or_default()
                    .push(wall_share(&m, threads) / d_sae);
            }
        }
        let per_latent = per_latent
            .into_iter()
            .filter_map(|(k, v)| Some((k, median(v)?)))
            .collect();
        let flat = stages
            .iter()
            .filter_map(|s| {
                Some((
                    s.to_string(),
                    median(list(s).iter().map(|m| wall_share(m, threads)).collect())?,
                ))
            })
            .collect();
        let corpus_tokens = list("tokenize")
            .iter()
            .max_by_key(|m| m.created_unix)
            .and_then(|m| m.summary["corpus_tokens"].as_f64());
        Estimator {
            extract,
            train,
            per_latent,
            flat,
            corpus_tokens,
        }
    }

    /// The train split's tokens: `tokenize.train_tokens`, or (null) the rest
    /// of the corpus as the last tokenize counted it.
    fn train_tokens(&self, cfg: &Config) -> Option<f64> {
        let t = &cfg.tokenize;
        Some(match t.train_tokens {
            Some(n) => n as f64,
            None => (self.corpus_tokens? - t.eval_tokens as f64).max(0.0),
        })
    }

    /// Seconds to build `p` under `cfg`, if anything comparable was measured.
    pub fn seconds(&self, cfg: &Config, p: &Planned) -> Option<f64> {
        let t = &cfg.tokenize;
        let variant = |name: &str| cfg.variants().into_iter().find(|v| v.name == name);
        match p.stage {
            "extract" => {
                let tokens = t.eval_tokens as f64 + self.train_tokens(cfg)?;
                Some(self.extract? * tokens * (cfg.model.layer as f64 + 1.0))
            }
            "train" => {
                let v = variant(p.unit.as_deref()?)?;
                let ortho = serde_json::to_value(v.settings.ortho).ok()?;
                let rate = self
                    .train
                    .get(ortho.as_str().unwrap_or(""))
                    .or_else(|| self.train.get(""))?;
                Some(
                    rate * self.train_tokens(cfg)?
                        * cfg.train.epochs as f64
                        * v.settings.d_sae as f64,
                )
            }
            "compete" | "bench" => {
                let unit = p.unit.as_deref()?;
                let name = unit.rsplit('/').next()?;
                let d_sae = variant(name).map(|v| v.settings.d_sae as f64)?;
                Some(self.per_latent.get(&rate_name(p.stage, Some(unit)))? * d_sae)
            }
            s => self.flat.get(s).copied(),
        }
    }

    /// The order in which to start `units` (indices) when several run at
    /// once: dearest first by [`Estimator::start_costs`], ties in plan order.
    pub fn start_order(&self, cfg: &Config, units: &[&Planned]) -> Vec<usize> {
        let costs = self.start_costs(cfg, units);
        let mut order: Vec<usize> = (0..units.len()).collect();
        order.sort_by(|&a, &b| costs[b].total_cmp(&costs[a]));
        order
    }

    /// Each unit's cost relative to the others of its stage, for starting
    /// the dearest first when units run at once (the last one then does not
    /// run alone for long): measured seconds where every unit has an
    /// estimate, else a prior from its shape (train: latents times the
    /// kind's and penalty's unit time relative to TopK's, as the default
    /// study measured them on 2-core machines; any other stage: all equal).
    fn start_costs(&self, cfg: &Config, units: &[&Planned]) -> Vec<f64> {
        let measured: Option<Vec<f64>> = units.iter().map(|p| self.seconds(cfg, p)).collect();
        if let Some(s) = measured {
            return s;
        }
        let variants = cfg.variants();
        units
            .iter()
            .map(|p| {
                let v = (p.stage == "train")
                    .then(|| {
                        let name = p.unit.as_deref()?;
                        variants.iter().find(|v| v.name == name)
                    })
                    .flatten();
                v.map_or(1.0, |v| v.settings.d_sae as f64 * train_prior(&v.settings))
            })
            .collect()
    }
}

/// A train unit's time relative to TopK's at the same width and tokens.
fn train_prior(s: &VariantSettings) -> f64 {
    let batch_kind = matches!(s.kind, Architecture::BatchTopK | Architecture::Matryoshka);
    let kind = match s.kind {
        Architecture::TopK => 1.0,
        Architecture::BatchTopK => 1.05,
        Architecture::Matryoshka | Architecture::ReluL1 => 1.1,
        _ => 1.0,
    };
    // Guided on a batch kind has more pairs: its busiest tokens keep more
    // than k latents.
    let ortho = match s.ortho {
        OrthoKind::None | OrthoKind::Uniform => 1.0,
        OrthoKind::Guided if batch_kind => 1.45,
        OrthoKind::Guided => 1.05,
        OrthoKind::Ortsae => 1.3,
    };
    kind * ortho
}

/// `compete`, or `bench/<benchmark>` for a bench unit `<benchmark>/<variant>`.
fn rate_name(stage: &str, unit: Option<&str>) -> String {
    match (stage, unit.and_then(|u| u.split_once('/'))) {
        ("bench", Some((bench, _))) => format!("bench/{bench}"),
        _ => stage.to_string(),
    }
}

/// "45 s", "12 min", "1.4 h".
pub fn human(s: f64) -> String {
    if s < 90.0 {
        format!("{s:.0} s")
    } else if s < 5400.0 {
        format!("{:.0} min", s / 60.0)
    } else {
        format!("{:.1} h", s / 3600.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_unit_that_ran_on_half_the_threads_counts_half_its_time() {
        let mut m: Manifest = serde_json::from_value(serde_json::json!({
            "stage": "train", "key": "k", "format_version": 1, "inputs": {},
            "config": {}, "coact_version": "0", "created_unix": 0,
            "elapsed_s": 120.0, "files": [], "tables": {}
        }))
        .unwrap();
        assert_eq!(m.threads, None);
        assert_eq!(wall_share(&m, 2), 120.0);
        m.threads = Some(1);
        assert_eq!(wall_share(&m, 2), 60.0);
        m.threads = Some(4);
        assert_eq!(wall_share(&m, 4), 120.0);
    }

    #[test]
    fn medians_ignore_non_positive_values_and_humans_read_the_units() {
        assert_eq!(median(vec![3.0, 0.0, 1.0, 2.0, f64::NAN]), Some(2.0));
        assert_eq!(median(vec![0.0]), None);
        assert_eq!(human(45.2), "45 s");
        assert_eq!(human(720.0), "12 min");
        assert_eq!(human(7200.0), "2.0 h");
        assert_eq!(rate_name("bench", Some("core/topk")), "bench/core");
        assert_eq!(rate_name("compete", Some("topk")), "compete");
    }
}
