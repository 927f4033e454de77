//! report stage (issue 8): the study's comparison table in SAEBench's terms,
//! seed-aware verdicts, plots, feature dashboards and time per stage, as one
//! offline folder (report.html, report.md and PNGs beside them).
//!
//! `collect` reads the train, compete and bench artifacts into a plain
//! [`ReportData`]; `render` writes the page from it (tests build one by hand).

pub mod collect;
pub mod html;
pub mod plots;

use crate::config::Config;
pub use crate::config::ReportConfig;
use crate::pipeline::stage::{Registry, Stage, Unit};
use crate::pipeline::stage::{StageInput, StageOutput};
use crate::pipeline::store::TableEntry;
use anyhow::{Context, Result};
use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// The part of the config the report's key hashes.
pub fn key_config(cfg: &Config) -> Value {
    serde_json::to_value(&cfg.report).expect("serialisable")
}

// ---------------------------------------------------------------- the data

/// One SAE variant and its settings (the train manifest's `config["sae"]`).
#[derive(Debug, Clone, PartialEq)]
pub struct VariantInfo {
    pub name: String,
    /// "topk" or "relu_l1".
    pub kind: String,
    pub d_sae: u64,
    pub k: u64,
    pub l1_coeff: f64,
    /// "none", "uniform" or "guided".
    pub ortho: String,
    pub lambda: f64,
    pub tau: f64,
    pub seed: u64,
}

impl VariantInfo {
    /// The settings without the seed: variants that differ only by seed share it.
    pub fn group_key(&self) -> String {
        let mut s = format!("{}|d_sae {}", self.kind, self.d_sae);
        if self.kind == "relu_l1" {
            s += &format!("|l1 {:.6}", self.l1_coeff);
        } else {
            s += &format!("|k {}", self.k);
        }
        s += &format!("|{}", self.ortho);
        if self.ortho != "none" {
            s += &format!("|lambda {:.6}", self.lambda);
        }
        if self.ortho == "guided" {
            s += &format!("|tau {:.6}", self.tau);
        }
        s
    }

    /// The settings in words, e.g. "TopK k 32, guided τ 0.1 λ 0.1".
    pub fn describe(&self) -> String {
        let base = if self.kind == "relu_l1" {
            format!("ReLU+L1 (l1 {})", num(self.l1_coeff))
        } else {
            format!("TopK k {}", self.k)
        };
        match self.ortho.as_str() {
            "guided" => format!("{base}, guided τ {} λ {}", num(self.tau), num(self.lambda)),
            "uniform" => format!("{base}, uniform λ {}", num(self.lambda)),
            _ => base,
        }
    }

    fn sort_key(&self) -> (u8, String, i64, i64, u64) {
        let rank = match (self.ortho.as_str(), self.kind.as_str()) {
            ("none", "topk") => 0,
            ("none", _) => 1,
            ("uniform", _) => 2,
            _ => 3,
        };
        (
            rank,
            self.kind.clone(),
            (self.tau * 1e6).round() as i64,
            (self.lambda * 1e6).round() as i64,
            self.seed,
        )
    }
}

/// A metric value with `digits` decimals, fewer for large values (MSE on
/// unscaled activations runs into the hundreds): 4 significant digits at most
/// above 10.
pub fn fmt_metric(v: f64, digits: usize) -> String {
    let a = v.abs();
    let d = if a >= 1000.0 {
        0
    } else if a >= 100.0 {
        1
    } else if a >= 10.0 {
        2
    } else {
        digits
    };
    format!("{:.*}", d.min(digits), v)
}

/// A number as short as it reads well (0.1, 0.05, 32).
pub fn num(v: f64) -> String {
    let s = format!("{:.4}", v);
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.to_string()
    }
}

/// One point of a training curve.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CurvePoint {
    pub tokens: f64,
    pub mse: f64,
    pub l0: f64,
    pub dead_fraction: f64,
}

/// A variant's row of compete_summary at the report's histogram tau.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CompetitionSummary {
    pub tau: f64,
    pub competing_pairs: Option<f64>,
    pub mean_abs_cos_competing: Option<f64>,
    pub mean_abs_cos_random: Option<f64>,
    pub share_cos_over_0_3: Option<f64>,
    pub share_random_cos_over_0_3: Option<f64>,
    pub latents_without_competitor: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ContextRow {
    pub activation: f64,
    /// Text with the firing token marked «like this».
    pub context: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Competitor {
    pub latent: i64,
    pub c_ij: f64,
    pub dec_cos: f64,
    pub cofirings: Option<f64>,
}

/// One latent of a feature dashboard.
#[derive(Debug, Clone, PartialEq)]
pub struct LatentCard {
    pub latent: i64,
    /// Why it was chosen: "competing" or "random".
    pub reason: String,
    pub frequency: Option<f64>,
    pub max_act: Option<f64>,
    pub contexts: Vec<ContextRow>,
    pub competitors: Vec<Competitor>,
}

/// A competing pair with one context where both latents fire.
#[derive(Debug, Clone, PartialEq)]
pub struct PairExample {
    pub i: i64,
    pub j: i64,
    pub c_ij: f64,
    pub dec_cos: Option<f64>,
    pub act_i: Option<f64>,
    pub act_j: Option<f64>,
    /// Text with the token marked «like this».
    pub context: String,
}

/// One artifact's time, from its manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Timing {
    pub stage: String,
    pub unit: Option<String>,
    pub elapsed_s: f64,
}

/// The `values` key of SCR's mean A_oracle - A_biased (its denominator).
pub const SCR_GAP: &str = "scr_oracle_minus_biased";
/// Below this gap the page warns that SCR is dominated by noise.
pub const SCR_GAP_WARN: f64 = 0.05;

/// Everything the report shows, read from the artifacts (or built by hand).
#[derive(Debug, Clone, Default)]
pub struct ReportData {
    pub study: String,
    pub variants: Vec<VariantInfo>,
    /// variant -> metric key (see [`METRICS`], plus every core metric by its
    /// bench_core name) -> value.
    pub values: BTreeMap<String, BTreeMap<String, f64>>,
    /// Benchmarks (and compete) that did not run at all: name -> why.
    pub not_run: BTreeMap<String, String>,
    /// Accuracy of the dense probe on the model's activations (sparse
    /// probing's reference, the same for every variant).
    pub dense_probe: Option<f64>,
    pub train_curves: BTreeMap<String, Vec<CurvePoint>>,
    /// variant -> letter -> absorption fraction.
    pub absorption_letters: BTreeMap<String, BTreeMap<String, f64>>,
    /// variant -> decoder cosines of the pairs with c_ij >= histogram_tau.
    pub competing_cos: BTreeMap<String, Vec<f64>>,
    pub competition: BTreeMap<String, CompetitionSummary>,
    pub dashboards: BTreeMap<String, Vec<LatentCard>>,
    /// variant -> its top competing pairs, an example context each.
    pub pair_examples: BTreeMap<String, Vec<PairExample>>,
    pub timings: Vec<Timing>,
    /// Problems met while reading the inputs (shown on the page).
    pub notes: Vec<String>,
}

// ---------------------------------------------------------------- metrics

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    Higher,
    Lower,
    /// Not a quality (L0 is held by k).
    Neither,
}

pub struct MetricDef {
    pub key: &'static str,
    /// Column header.
    pub label: &'static str,
    pub better: Better,
    /// The benchmark it comes from (for "not run").
    pub source: &'static str,
    pub digits: usize,
    pub help: &'static str,
}

/// The comparison table's columns, in order.
pub const METRICS: &[MetricDef] = &[
    MetricDef {
        key: "l0",
        label: "L0",
        better: Better::Neither,
        source: "core",
        digits: 1,
        help: "mean active latents per token",
    },
    MetricDef {
        key: "mse",
        label: "MSE",
        better: Better::Lower,
        source: "core",
        digits: 4,
        help: "per-token squared error of the reconstruction (SAEBench: SSE / tokens)",
    },
    MetricDef {
        key: "explained_variance",
        label: "Expl. var.",
        better: Better::Higher,
        source: "core",
        digits: 3,
        help: "explained variance about the mean (corrected, SAELens PR #665)",
    },
    MetricDef {
        key: "explained_variance_legacy",
        label: "Expl. var. (legacy)",
        better: Better::Higher,
        source: "core",
        digits: 3,
        help: "SAEBench's legacy per-token formula (variance about zero)",
    },
    MetricDef {
        key: "ce_loss_score",
        label: "CE score",
        better: Better::Higher,
        source: "core",
        digits: 3,
        help: "(CE_zero - CE_sae) / (CE_zero - CE_orig), SAE spliced in",
    },
    MetricDef {
        key: "kl_div_score",
        label: "KL score",
        better: Better::Higher,
        source: "core",
        digits: 3,
        help: "(KL_zero - KL_sae) / KL_zero",
    },
    MetricDef {
        key: "absorption",
        label: "Absorption",
        better: Better::Lower,
        source: "absorption",
        digits: 4,
        help: "mean absorption fraction over letters (first-letter task)",
    },
    MetricDef {
        key: "full_absorption",
        label: "Full absorption",
        better: Better::Lower,
        source: "absorption",
        digits: 4,
        help: "mean full-absorption rate over letters",
    },
    MetricDef {
        key: "probe_top1",
        label: "Probe top-1",
        better: Better::Higher,
        source: "sparse_probing",
        digits: 3,
        help: "sparse-probing test accuracy with the top 1 latent",
    },
    MetricDef {
        key: "probe_top2",
        label: "Probe top-2",
        better: Better::Higher,
        source: "sparse_probing",
        digits: 3,
        help: "sparse-probing test accuracy with the top 2 latents",
    },
    MetricDef {
        key: "probe_top5",
        label: "Probe top-5",
        better: Better::Higher,
        source: "sparse_probing",
        digits: 3,
        help: "sparse-probing test accuracy with the top 5 latents",
    },
    MetricDef {
        key: "scr_10",
        label: "SCR@10",
        better: Better::Higher,
        source: "scr_tpp",
        digits: 3,
        help: "spurious-correlation removal, top 10 latents ablated",
    },
    MetricDef {
        key: "scr_20",
        label: "SCR@20",
        better: Better::Higher,
        source: "scr_tpp",
        digits: 3,
        help: "spurious-correlation removal, top 20 latents ablated",
    },
    MetricDef {
        key: "tpp_10",
        label: "TPP@10",
        better: Better::Higher,
        source: "scr_tpp",
        digits: 3,
        help: "targeted probe perturbation, top 10 latents ablated",
    },
    MetricDef {
        key: "tpp_20",
        label: "TPP@20",
        better: Better::Higher,
        source: "scr_tpp",
        digits: 3,
        help: "targeted probe perturbation, top 20 latents ablated",
    },
    MetricDef {
        key: "mean_max_dec_cos",
        label: "Mean max dec. cos",
        better: Better::Lower,
        source: "core",
        digits: 3,
        help: "mean over latents of the largest decoder cosine to another latent",
    },
    MetricDef {
        key: "frac_dead",
        label: "Dead",
        better: Better::Lower,
        source: "core",
        digits: 3,
        help: "fraction of latents that never fired on the eval tokens",
    },
];

pub fn metric(key: &str) -> Option<&'static MetricDef> {
    METRICS.iter().find(|m| m.key == key)
}

// ---------------------------------------------------------------- groups and verdicts

/// Variants that differ only by seed.
#[derive(Debug, Clone)]
pub struct Group {
    pub label: String,
    pub key: String,
    /// Indices into `ReportData::variants`, lowest seed first.
    pub members: Vec<usize>,
}

/// Seed statistics of one metric over a group's members that have it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    pub n: usize,
    pub mean: f64,
    pub min: f64,
    pub max: f64,
}

impl ReportData {
    /// Variants in display order: TopK baselines, other kinds, uniform, then
    /// guided by tau and lambda; seeds together.
    pub fn ordered(&self) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..self.variants.len()).collect();
        idx.sort_by(|&a, &b| {
            let (va, vb) = (&self.variants[a], &self.variants[b]);
            va.sort_key()
                .cmp(&vb.sort_key())
                .then(va.name.cmp(&vb.name))
        });
        idx
    }

    pub fn groups(&self) -> Vec<Group> {
        let mut groups: Vec<Group> = Vec::new();
        for i in self.ordered() {
            let key = self.variants[i].group_key();
            match groups.iter_mut().find(|g| g.key == key) {
                Some(g) => g.members.push(i),
                None => groups.push(Group {
                    label: String::new(),
                    key,
                    members: vec![i],
                }),
            }
        }
        for g in &mut groups {
            g.members
                .sort_by_key(|&i| (self.variants[i].seed, self.variants[i].name.clone()));
            g.label = strip_seed(&self.variants[g.members[0]].name);
        }
        groups
    }

    pub fn value(&self, variant: &str, metric: &str) -> Option<f64> {
        self.values
            .get(variant)
            .and_then(|m| m.get(metric))
            .copied()
            .filter(|v| v.is_finite())
    }

    pub fn spread(&self, g: &Group, metric: &str) -> Option<Spread> {
        let vals: Vec<f64> = g
            .members
            .iter()
            .filter_map(|&i| self.value(&self.variants[i].name, metric))
            .collect();
        if vals.is_empty() {
            return None;
        }
        Some(Spread {
            n: vals.len(),
            mean: vals.iter().sum::<f64>() / vals.len() as f64,
            min: vals.iter().cloned().fold(f64::INFINITY, f64::min),
            max: vals.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
        })
    }

    /// The groups the verdicts compare: guided (the ortho = guided group with
    /// the most seeds), the TopK baseline and uniform orthogonality (each the
    /// group with the most seeds, preferring guided's d_sae and k).
    pub fn verdict_groups(&self) -> VerdictGroups {
        let groups = self.groups();
        let pick = |pred: &dyn Fn(&VariantInfo) -> bool, like: Option<&VariantInfo>| {
            groups
                .iter()
                .filter(|g| pred(&self.variants[g.members[0]]))
                .max_by_key(|g| {
                    let v = &self.variants[g.members[0]];
                    let same = like.is_some_and(|l| l.d_sae == v.d_sae && l.k == v.k);
                    // Most seeds, then matching sizes, then the earliest in display order.
                    (g.members.len(), same, std::cmp::Reverse(g.members[0]))
                })
                .cloned()
        };
        let guided = pick(&|v| v.ortho == "guided", None);
        let like = guided.as_ref().map(|g| self.variants[g.members[0]].clone());
        let baseline = pick(&|v| v.ortho == "none" && v.kind == "topk", like.as_ref());
        let uniform = pick(&|v| v.ortho == "uniform", like.as_ref());
        VerdictGroups {
            guided,
            baseline,
            uniform,
        }
    }

    /// Plain-words verdicts for every metric with a direction.
    pub fn verdicts(&self) -> Vec<MetricVerdict> {
        let vg = self.verdict_groups();
        METRICS
            .iter()
            .filter(|m| m.better != Better::Neither)
            .map(|m| {
                let against = [
                    ("the TopK baseline", &vg.baseline),
                    ("uniform orthogonality", &vg.uniform),
                ]
                .into_iter()
                .map(|(name, other)| self.compare(m, vg.guided.as_ref(), other.as_ref(), name))
                .collect();
                MetricVerdict { metric: m, against }
            })
            .collect()
    }

    fn compare(
        &self,
        m: &MetricDef,
        guided: Option<&Group>,
        other: Option<&Group>,
        other_name: &str,
    ) -> Comparison {
        let missing = |what: String| Comparison {
            other: other_name.to_string(),
            outcome: Outcome::Missing,
            detail: what.clone(),
            text: what,
        };
        let Some(g) = guided else {
            return missing(format!(
                "no guided variant in the study: cannot compare with {other_name}"
            ));
        };
        let Some(o) = other else {
            return missing(format!("{other_name} is not in the study: no comparison"));
        };
        if let Some(why) = self.not_run.get(m.source) {
            let text = format!("{} was not run: {why}", m.source);
            return Comparison {
                other: other_name.to_string(),
                outcome: Outcome::NotRun,
                detail: text.clone(),
                text,
            };
        }
        let (Some(a), Some(b)) = (self.spread(g, m.key), self.spread(o, m.key)) else {
            let lacking = if self.spread(g, m.key).is_none() {
                &g.label
            } else {
                &o.label
            };
            return missing(format!(
                "missing data: {} has no value for {lacking}, so no comparison with {other_name}",
                m.label
            ));
        };
        // One digit more than the table, to show what separates the ranges.
        let f = |x: f64| fmt_metric(x, m.digits + 1);
        let fmt = |s: &Spread| {
            if s.n == 1 {
                format!("{} seed, {}", s.n, f(s.mean))
            } else {
                format!(
                    "{} seeds, mean {}, range {} to {}",
                    s.n,
                    f(s.mean),
                    f(s.min),
                    f(s.max)
                )
            }
        };
        let both = format!("{} ({}) vs {} ({})", g.label, fmt(&a), o.label, fmt(&b));
        let short = |s: &Spread| {
            if s.n == 1 {
                format!("{} (1 seed)", f(s.mean))
            } else {
                format!("{} to {} ({} seeds)", f(s.min), f(s.max), s.n)
            }
        };
        let detail = format!("{}: {}; {}: {}", g.label, short(&a), o.label, short(&b));
        if a.n < 2 || b.n < 2 {
            return Comparison {
                other: other_name.to_string(),
                outcome: Outcome::OneSeed,
                detail,
                text: format!(
                    "cannot tell against {other_name}: needs at least 2 seeds on each side to measure seed spread; {both}"
                ),
            };
        }
        let guided_better = match m.better {
            Better::Higher => a.min > b.max,
            Better::Lower => a.max < b.min,
            Better::Neither => false,
        };
        let guided_worse = match m.better {
            Better::Higher => a.max < b.min,
            Better::Lower => a.min > b.max,
            Better::Neither => false,
        };
        let (outcome, text) = if guided_better {
            (
                Outcome::Beats,
                format!("guided beats {other_name} beyond seed spread: {both}"),
            )
        } else if guided_worse {
            (
                Outcome::Worse,
                format!("guided is worse than {other_name} beyond seed spread: {both}"),
            )
        } else {
            (
                Outcome::NoDifference,
                format!("no difference beyond seed noise against {other_name}: the seed ranges overlap; {both}"),
            )
        };
        Comparison {
            other: other_name.to_string(),
            outcome,
            detail,
            text,
        }
    }
}

/// "guided-tau0.1-seed2" -> "guided-tau0.1".
pub fn strip_seed(name: &str) -> String {
    if let Some(pos) = name.rfind("-seed") {
        let tail = &name[pos + 5..];
        if !tail.is_empty() && tail.chars().all(|c| c.is_ascii_digit()) {
            return name[..pos].to_string();
        }
    }
    name.to_string()
}

#[derive(Debug, Clone)]
pub struct VerdictGroups {
    pub guided: Option<Group>,
    pub baseline: Option<Group>,
    pub uniform: Option<Group>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Guided's seed range lies entirely on the better side.
    Beats,
    /// Guided's seed range lies entirely on the worse side.
    Worse,
    /// The seed ranges overlap.
    NoDifference,
    /// Fewer than 2 seeds on a side.
    OneSeed,
    /// A side has no value for the metric.
    Missing,
    /// The metric's benchmark did not run at all.
    NotRun,
}

#[derive(Debug, Clone)]
pub struct Comparison {
    pub other: String,
    pub outcome: Outcome,
    /// The whole verdict as a sentence.
    pub text: String,
    /// The two seed ranges (or why there is no verdict), short.
    pub detail: String,
}

pub struct MetricVerdict {
    pub metric: &'static MetricDef,
    pub against: Vec<Comparison>,
}

// ---------------------------------------------------------------- the stage

/// What `render` wrote.
#[derive(Debug, Clone, Default)]
pub struct Rendered {
    /// Files written, relative to the output folder.
    pub files: Vec<String>,
    /// PNG plots among them.
    pub plots: Vec<String>,
}

/// Writes report.html, report.md and the PNG plots into `out_dir`.
pub fn render(data: &ReportData, cfg: &ReportConfig, out_dir: &Path) -> Result<Rendered> {
    plots::use_font(&cfg.font)?;
    let plots = plots::draw_all(data, cfg, out_dir)?;
    let html = html::page(data, cfg, &plots);
    std::fs::write(out_dir.join("report.html"), html)
        .with_context(|| format!("writing {}", out_dir.join("report.html").display()))?;
    let md = html::markdown(data, cfg, &plots);
    std::fs::write(out_dir.join("report.md"), md)
        .with_context(|| format!("writing {}", out_dir.join("report.md").display()))?;
    let mut files = vec!["report.html".to_string(), "report.md".to_string()];
    files.extend(plots.iter().map(|p| p.file.clone()));
    Ok(Rendered {
        files,
        plots: plots.iter().map(|p| p.file.clone()).collect(),
    })
}

/// The comparison report (Markdown, HTML, plots, comparison table).
pub struct Report;

impl Stage for Report {
    fn name(&self) -> &'static str {
        "report"
    }
    fn about(&self) -> &'static str {
        "the comparison report: report.md, report.html, plots"
    }
    fn deps(&self) -> &'static [&'static str] {
        &["train", "compete", "bench"]
    }
    fn format_version(&self) -> u32 {
        2
    }
    fn units(&self, cfg: &Config, _: &Registry) -> Result<Vec<Unit>> {
        Ok(Unit::single(key_config(cfg)))
    }
    fn run(&self, input: &StageInput) -> Result<StageOutput> {
        run(input)
    }
}

pub fn run(input: &StageInput) -> Result<StageOutput> {
    let mut rcfg = input.cfg.report.clone();
    rcfg.font = input.cfg.resolve(&rcfg.font);
    // The font first, so that a missing one fails before any work.
    plots::use_font(&rcfg.font)?;
    let data = collect::collect(input.store, &input.planned.inputs, &input.cfg.study, &rcfg)?;
    let rendered = render(&data, &rcfg, input.out_dir)?;
    let rows = write_comparison(&data, &input.out_dir.join("comparison.parquet"))?;
    let verdicts: Vec<Value> = data
        .verdicts()
        .iter()
        .flat_map(|v| {
            v.against.iter().map(|c| {
                json!({
                    "metric": v.metric.key,
                    "against": c.other,
                    "outcome": format!("{:?}", c.outcome),
                })
            })
        })
        .collect();
    input.progress.note(format!(
        "report: {} variants, {} plots -> {}",
        data.variants.len(),
        rendered.plots.len(),
        input
            .store
            .artifact_dir("report", &input.planned.key)
            .join("report.html")
            .display()
    ));
    let mut tables = BTreeMap::new();
    if rows > 0 {
        tables.insert(
            "comparison".to_string(),
            TableEntry {
                files: vec!["comparison.parquet".into()],
                rows,
            },
        );
    }
    Ok(StageOutput {
        tables,
        summary: json!({
            "variants": data.variants.len(),
            "files": rendered.files,
            "not_run": data.not_run,
            "notes": data.notes,
            "verdicts": verdicts,
        }),
    })
}

/// The comparison table as a long Parquet table (variant, seed group, metric,
/// value, and the group's seed mean, min, max and count), for SQL.
fn write_comparison(data: &ReportData, path: &Path) -> Result<u64> {
    let mut variant = Vec::new();
    let mut group = Vec::new();
    let mut metric_col = Vec::new();
    let mut value = Vec::new();
    let (mut mean, mut min, mut max, mut n) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for g in data.groups() {
        for m in METRICS {
            let s = data.spread(&g, m.key);
            for &i in &g.members {
                let name = &data.variants[i].name;
                let Some(v) = data.value(name, m.key) else {
                    continue;
                };
                variant.push(name.clone());
                group.push(g.label.clone());
                metric_col.push(m.key.to_string());
                value.push(v);
                mean.push(s.map(|s| s.mean));
                min.push(s.map(|s| s.min));
                max.push(s.map(|s| s.max));
                n.push(s.map(|s| s.n as i64));
            }
        }
    }
    if variant.is_empty() {
        return Ok(0);
    }
    let columns: Vec<(&str, ArrayRef, bool)> = vec![
        ("variant", Arc::new(StringArray::from(variant)), false),
        ("group", Arc::new(StringArray::from(group)), false),
        ("metric", Arc::new(StringArray::from(metric_col)), false),
        ("value", Arc::new(Float64Array::from(value)), false),
        ("group_mean", Arc::new(Float64Array::from(mean)), true),
        ("group_min", Arc::new(Float64Array::from(min)), true),
        ("group_max", Arc::new(Float64Array::from(max)), true),
        ("group_seeds", Arc::new(Int64Array::from(n)), true),
    ];
    let schema = Schema::new(
        columns
            .iter()
            .map(|(name, a, nullable)| Field::new(*name, a.data_type().clone(), *nullable))
            .collect::<Vec<_>>(),
    );
    let batch = RecordBatch::try_new(
        Arc::new(schema),
        columns.into_iter().map(|(_, a, _)| a).collect(),
    )?;
    debug_assert!(batch.schema().field(0).data_type() == &DataType::Utf8);
    crate::artifacts::parquet_io::write_all(path, &[batch])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(name: &str, ortho: &str, tau: f64, seed: u64) -> VariantInfo {
        VariantInfo {
            name: name.into(),
            kind: "topk".into(),
            d_sae: 64,
            k: 4,
            l1_coeff: 0.0,
            ortho: ortho.into(),
            lambda: if ortho == "none" { 0.0 } else { 0.1 },
            tau,
            seed,
        }
    }

    #[test]
    fn groups_join_seeds_and_strip_the_seed_suffix() {
        let data = ReportData {
            variants: vec![
                v("guided-tau0.1-seed1", "guided", 0.1, 1),
                v("topk", "none", 0.0, 0),
                v("guided-tau0.1", "guided", 0.1, 0),
                v("guided-tau0.5", "guided", 0.5, 0),
                v("topk-seed1", "none", 0.0, 1),
            ],
            ..Default::default()
        };
        let g = data.groups();
        let labels: Vec<&str> = g.iter().map(|g| g.label.as_str()).collect();
        assert_eq!(labels, ["topk", "guided-tau0.1", "guided-tau0.5"]);
        assert_eq!(g[1].members.len(), 2);
        let vg = data.verdict_groups();
        assert_eq!(vg.guided.unwrap().label, "guided-tau0.1");
        assert_eq!(vg.baseline.unwrap().label, "topk");
        assert!(vg.uniform.is_none());
        assert_eq!(strip_seed("a-seed12"), "a");
        assert_eq!(strip_seed("a-seedx"), "a-seedx");
    }

    #[test]
    fn lower_is_better_metrics_beat_only_below_the_other_range() {
        let mut data = ReportData {
            variants: vec![
                v("topk", "none", 0.0, 0),
                v("topk-seed1", "none", 0.0, 1),
                v("guided", "guided", 0.1, 0),
                v("guided-seed1", "guided", 0.1, 1),
            ],
            ..Default::default()
        };
        let set = |d: &mut ReportData, name: &str, m: &str, x: f64| {
            d.values.entry(name.into()).or_default().insert(m.into(), x);
        };
        for (n, x) in [
            ("topk", 0.3),
            ("topk-seed1", 0.32),
            ("guided", 0.2),
            ("guided-seed1", 0.25),
        ] {
            set(&mut data, n, "absorption", x);
        }
        for (n, x) in [
            ("topk", 0.8),
            ("topk-seed1", 0.9),
            ("guided", 0.85),
            ("guided-seed1", 0.95),
        ] {
            set(&mut data, n, "ce_loss_score", x);
        }
        for (n, x) in [
            ("topk", 0.1),
            ("topk-seed1", 0.1),
            ("guided", 0.2),
            ("guided-seed1", 0.3),
        ] {
            set(&mut data, n, "mse", x);
        }
        let verdicts = data.verdicts();
        let get = |k: &str| verdicts.iter().find(|v| v.metric.key == k).unwrap().against[0].clone();
        assert_eq!(get("absorption").outcome, Outcome::Beats);
        assert_eq!(get("ce_loss_score").outcome, Outcome::NoDifference);
        assert_eq!(get("mse").outcome, Outcome::Worse);
        assert_eq!(get("kl_div_score").outcome, Outcome::Missing);
        assert!(get("kl_div_score").text.contains("missing data"));
    }

    #[test]
    fn the_comparison_table_carries_group_spreads() {
        let mut data = ReportData {
            variants: vec![v("topk", "none", 0.0, 0), v("topk-seed1", "none", 0.0, 1)],
            ..Default::default()
        };
        for (n, x) in [("topk", 0.9), ("topk-seed1", 0.8)] {
            data.values
                .entry(n.into())
                .or_default()
                .insert("ce_loss_score".into(), x);
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.parquet");
        assert_eq!(write_comparison(&data, &path).unwrap(), 2);
        let b = &crate::artifacts::parquet_io::read_all(&path).unwrap()[0];
        assert_eq!(
            collect::strs(b, "group").unwrap(),
            [Some("topk".to_string()), Some("topk".to_string())]
        );
        assert_eq!(collect::f64s(b, "group_min").unwrap()[0], Some(0.8));
        assert_eq!(collect::i64s(b, "group_seeds").unwrap()[1], Some(2));
        // Nothing measured: no table.
        let empty = ReportData {
            variants: data.variants.clone(),
            ..Default::default()
        };
        assert_eq!(write_comparison(&empty, &path).unwrap(), 0);
    }

    #[test]
    fn validation_names_the_key() {
        let c = ReportConfig {
            histogram_tau: 2.0,
            ..Default::default()
        };
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("report.histogram_tau = 2"));
        let c = ReportConfig {
            histogram_bins: 1,
            ..Default::default()
        };
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("report.histogram_bins"));
        ReportConfig::default().validate().unwrap();
    }
}
