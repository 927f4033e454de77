//! The report's data model: what it reads from the artifacts (or what a
//! test builds by hand), and the comparison table's columns.

use crate::pipeline::benchmark::MetricDef;
use crate::pipeline::stage::Registry;
use coact::sae::Architecture;
use std::collections::BTreeMap;

/// A column of the comparison table: a benchmark's metric, with the
/// benchmark it comes from (for "not run").
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    pub bench: &'static str,
    pub def: &'static MetricDef,
}

impl std::ops::Deref for Metric {
    type Target = MetricDef;
    fn deref(&self) -> &MetricDef {
        self.def
    }
}

/// Every benchmark's metrics, in registry order.
pub fn metrics(registry: &Registry) -> Vec<Metric> {
    registry
        .benchmarks
        .iter()
        .flat_map(|b| {
            b.metrics().iter().map(|def| Metric {
                bench: b.name(),
                def,
            })
        })
        .collect()
}

/// One SAE variant and its settings (the train manifest's `config["sae"]`).
#[derive(Debug, Clone, PartialEq)]
pub struct VariantInfo {
    pub name: String,
    pub kind: Architecture,
    pub d_sae: u64,
    pub k: u64,
    pub l1_coeff: f64,
    /// Matryoshka's group sizes (empty for other kinds).
    pub groups: Vec<u64>,
    /// "none", "uniform", "guided" or "ortsae".
    pub ortho: String,
    pub lambda: f64,
    pub tau: f64,
    /// OrtSAE's chunk count (0 otherwise).
    pub chunks: u64,
    pub seed: u64,
    /// b_dec kept at its init (`b_dec: fixed`) rather than trained.
    pub b_dec_fixed: bool,
    /// An SAE of bench.external (benchmarked, not trained here).
    pub external: bool,
}

impl VariantInfo {
    /// The settings without the seed: variants that differ only by seed share it.
    pub fn group_key(&self) -> String {
        if self.external {
            return format!("external|{}", self.name);
        }
        let mut s = format!("{}|d_sae {}", self.kind.name(), self.d_sae);
        if self.kind == Architecture::ReluL1 {
            s += &format!("|l1 {:.6}", self.l1_coeff);
        } else {
            s += &format!("|k {}", self.k);
        }
        if !self.groups.is_empty() {
            s += &format!("|groups {:?}", self.groups);
        }
        s += &format!("|{}", self.ortho);
        if self.ortho != "none" {
            s += &format!("|lambda {:.6}", self.lambda);
        }
        if self.ortho == "guided" {
            s += &format!("|tau {:.6}", self.tau);
        }
        if self.ortho == "ortsae" {
            s += &format!("|chunks {}", self.chunks);
        }
        if self.b_dec_fixed {
            s += "|b_dec fixed";
        }
        s
    }

    /// The settings in words, e.g. "TopK k 32, guided τ 0.1 λ 0.1".
    pub fn describe(&self) -> String {
        let base = match self.kind {
            Architecture::ReluL1 => format!("ReLU+L1 (l1 {})", num(self.l1_coeff)),
            Architecture::Matryoshka => format!(
                "Matryoshka BatchTopK k {} (groups {})",
                self.k,
                self.groups
                    .iter()
                    .map(|g| g.to_string())
                    .collect::<Vec<_>>()
                    .join("+")
            ),
            Architecture::JumpRelu => self.kind.title().to_string(),
            Architecture::TopK | Architecture::BatchTopK => {
                format!("{} k {}", self.kind.title(), self.k)
            }
        };
        if self.external {
            return format!("{base}, {} latents, external", self.d_sae);
        }
        // Trained is the reference recipe; only the other choice is named.
        let base = if self.b_dec_fixed {
            format!("{base}, b_dec fixed")
        } else {
            base
        };
        match self.ortho.as_str() {
            "guided" => format!("{base}, guided τ {} λ {}", num(self.tau), num(self.lambda)),
            "uniform" => format!("{base}, uniform λ {}", num(self.lambda)),
            "ortsae" => format!("{base}, OrtSAE λ {} K {}", num(self.lambda), self.chunks),
            _ => base,
        }
    }

    pub(super) fn sort_key(&self) -> (u8, &'static str, i64, i64, u64) {
        let rank = match (self.ortho.as_str(), self.kind) {
            _ if self.external => 5,
            ("none", Architecture::TopK) => 0,
            ("none", _) => 1,
            ("uniform", _) => 2,
            ("ortsae", _) => 3,
            _ => 4,
        };
        (
            rank,
            self.kind.name(),
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

/// Co-firing pairs of one variant with c_ij in `[lo, hi)`: how many, and
/// their mean |decoder cosine|.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CosBin {
    pub lo: f64,
    pub hi: f64,
    pub pairs: usize,
    pub mean_abs_cos: f64,
}

/// The c_ij bins of [`CosBin`]: the compete table starts at its smallest tau.
pub const C_BINS: [f64; 5] = [0.0, 0.1, 0.2, 0.5, 1.0 + 1e-9];

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
    /// Its share of the run's wall time: `elapsed_s` scaled by the share of
    /// the threads it ran on (half for two units at once).
    pub wall_s: f64,
}

/// The `values` key of SCR's mean A_oracle - A_biased (its denominator),
/// which the scr_tpp benchmark's summary writes.
pub use crate::bench::scr_tpp_summary::SCR_GAP;
/// Below this gap the page warns that SCR is dominated by noise.
pub const SCR_GAP_WARN: f64 = 0.05;

/// Everything the report shows, read from the artifacts (or built by hand).
#[derive(Debug, Clone, Default)]
pub struct ReportData {
    pub study: String,
    /// The comparison table's columns: the benchmarks' metrics in registry order.
    pub metrics: Vec<Metric>,
    /// The stages in pipeline order (the time table's order).
    pub stages: Vec<&'static str>,
    pub variants: Vec<VariantInfo>,
    /// variant -> metric key (see [`ReportData::metrics`], plus whatever
    /// else the benchmarks' summaries hold, e.g. every core metric) -> value.
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
    /// Variant -> its co-firing pairs binned by c_ij ([`C_BINS`]).
    pub cos_by_c: BTreeMap<String, Vec<CosBin>>,
    /// Benchmark -> the size of the sample its figures rest on, in words.
    pub samples: BTreeMap<String, String>,
    pub competition: BTreeMap<String, CompetitionSummary>,
    pub dashboards: BTreeMap<String, Vec<LatentCard>>,
    /// variant -> its top competing pairs, an example context each.
    pub pair_examples: BTreeMap<String, Vec<PairExample>>,
    pub timings: Vec<Timing>,
    /// Problems met while reading the inputs (shown on the page).
    pub notes: Vec<String>,
}

impl ReportData {
    /// An empty report of `study` with the registry's metrics and stages.
    pub fn new(study: &str, registry: &Registry) -> ReportData {
        ReportData {
            study: study.to_string(),
            metrics: metrics(registry),
            stages: registry.stage_names(),
            ..Default::default()
        }
    }

    /// The column of metric `key`, if the table has one.
    pub fn metric(&self, key: &str) -> Option<Metric> {
        self.metrics.iter().copied().find(|m| m.key == key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::REGISTRY;

    #[test]
    fn the_columns_are_the_benchmarks_metrics_in_registry_order() {
        let m = metrics(&REGISTRY);
        let benches: Vec<&str> = m.iter().map(|m| m.bench).collect();
        let mut order = benches.clone();
        order.dedup();
        assert_eq!(order, ["core", "absorption", "sparse_probing", "scr_tpp"]);
        let keys: std::collections::BTreeSet<&str> = m.iter().map(|m| m.key).collect();
        assert_eq!(keys.len(), m.len(), "metric keys are unique");
        assert_eq!(m[0].key, "l0");
    }
}
