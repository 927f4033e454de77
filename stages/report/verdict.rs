//! Seed-aware verdicts: variants grouped by setting (seeds together), each
//! metric's spread over a group's seeds, and guided orthogonality compared
//! with the TopK baseline and uniform orthogonality beyond seed spread.

use super::data::{fmt_metric, Metric, ReportData, VariantInfo};
use crate::pipeline::benchmark::Better;
use coact::sae::Architecture;

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
                .filter(|g| {
                    let v = &self.variants[g.members[0]];
                    !v.external && pred(v)
                })
                .max_by_key(|g| {
                    let v = &self.variants[g.members[0]];
                    let same = like.is_some_and(|l| l.d_sae == v.d_sae && l.k == v.k);
                    // Most seeds, then matching sizes, then the earliest in display order.
                    (g.members.len(), same, std::cmp::Reverse(g.members[0]))
                })
                .cloned()
        };
        // Guided on TopK, the study's question; guided on another kind only
        // when there is none on TopK.
        let guided = pick(
            &|v| v.ortho == "guided" && v.kind == Architecture::TopK,
            None,
        )
        .or_else(|| pick(&|v| v.ortho == "guided", None));
        let like = guided.as_ref().map(|g| self.variants[g.members[0]].clone());
        let baseline = pick(
            &|v| v.ortho == "none" && v.kind == Architecture::TopK,
            like.as_ref(),
        );
        let uniform = pick(&|v| v.ortho == "uniform", like.as_ref());
        // Every other kind, and OrtSAE, when the study has them.
        let mut against = vec![
            Opponent::new("the TopK baseline", guided.clone(), baseline.clone()),
            Opponent::new("uniform orthogonality", guided.clone(), uniform.clone()),
        ];
        // Every trained kind but TopK, the baseline.
        let others: Vec<(Architecture, &str)> = Architecture::ALL
            .into_iter()
            .filter(|&a| a.trainable() && a != Architecture::TopK)
            .map(|a| (a, a.title()))
            .collect();
        for &(kind, name) in &others {
            if let Some(o) = pick(&|v| v.ortho == "none" && v.kind == kind, like.as_ref()) {
                against.push(Opponent::new(name, guided.clone(), Some(o)));
            }
        }
        let ortsae = pick(&|v| v.ortho == "ortsae", like.as_ref());
        if let Some(o) = &ortsae {
            against.push(Opponent::new("OrtSAE", guided.clone(), Some(o.clone())));
        }
        // Guided on top of another kind, against that kind alone and against
        // OrtSAE on the same kind (the like-for-like orthogonal comparison).
        for &(kind, name) in &others {
            let on = pick(&|v| v.ortho == "guided" && v.kind == kind, like.as_ref());
            if let Some(on) = on.filter(|g| Some(&g.key) != guided.as_ref().map(|g| &g.key)) {
                let lk = self.variants[on.members[0]].clone();
                let plain = pick(&|v| v.ortho == "none" && v.kind == kind, Some(&lk));
                let mut o = Opponent::new(name, Some(on.clone()), plain);
                o.column = format!("Guided on {name} vs {name} alone");
                against.push(o);
                let same_base = pick(&|v| v.ortho == "ortsae" && v.kind == kind, Some(&lk));
                if let Some(ort) = same_base {
                    let mut o = Opponent::new(&format!("OrtSAE on {name}"), Some(on), Some(ort));
                    o.column = format!("Guided on {name} vs OrtSAE on {name}");
                    against.push(o);
                }
            }
        }
        VerdictGroups {
            guided,
            baseline,
            uniform,
            against,
        }
    }

    /// Plain-words verdicts for every metric with a direction.
    pub fn verdicts(&self) -> Vec<MetricVerdict> {
        let vg = self.verdict_groups();
        self.metrics
            .iter()
            .copied()
            .filter(|m| m.better != Better::Neither)
            .map(|m| {
                let against = vg
                    .against
                    .iter()
                    .map(|o| self.compare(m, o.guided.as_ref(), o.other.as_ref(), &o.name))
                    .collect();
                MetricVerdict { metric: m, against }
            })
            .collect()
    }

    fn compare(
        &self,
        m: Metric,
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
        if let Some(why) = self.not_run.get(m.bench) {
            let text = format!("{} was not run: {why}", m.bench);
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
    /// The comparisons of the verdict table, in column order: the baseline
    /// and uniform always, then each other kind and OrtSAE the study has,
    /// then guided on another kind against that kind.
    pub against: Vec<Opponent>,
}

/// One column of verdicts: a guided group against another group.
#[derive(Debug, Clone)]
pub struct Opponent {
    /// The other side in words ("the TopK baseline", "OrtSAE").
    pub name: String,
    /// The column's title.
    pub column: String,
    pub guided: Option<Group>,
    pub other: Option<Group>,
}

impl Opponent {
    fn new(name: &str, guided: Option<Group>, other: Option<Group>) -> Opponent {
        let short = name.strip_prefix("the ").unwrap_or(name);
        Opponent {
            name: name.to_string(),
            column: format!("Guided vs {short}"),
            guided,
            other,
        }
    }
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
    pub metric: Metric,
    pub against: Vec<Comparison>,
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::registry::REGISTRY;

    pub(in crate::report) fn v(name: &str, ortho: &str, tau: f64, seed: u64) -> VariantInfo {
        VariantInfo {
            name: name.into(),
            kind: Architecture::TopK,
            d_sae: 64,
            k: 4,
            l1_coeff: 0.0,
            ortho: ortho.into(),
            lambda: if ortho == "none" { 0.0 } else { 0.1 },
            tau,
            seed,
            groups: Vec::new(),
            chunks: 0,
            b_dec_fixed: false,
            external: false,
        }
    }

    /// Hand-built data with the registry's metrics.
    pub(in crate::report) fn data(variants: Vec<VariantInfo>) -> ReportData {
        ReportData {
            variants,
            ..ReportData::new("test", &REGISTRY)
        }
    }

    #[test]
    fn groups_join_seeds_and_strip_the_seed_suffix() {
        let data = data(vec![
            v("guided-tau0.1-seed1", "guided", 0.1, 1),
            v("topk", "none", 0.0, 0),
            v("guided-tau0.1", "guided", 0.1, 0),
            v("guided-tau0.5", "guided", 0.5, 0),
            v("topk-seed1", "none", 0.0, 1),
        ]);
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
        let mut data = data(vec![
            v("topk", "none", 0.0, 0),
            v("topk-seed1", "none", 0.0, 1),
            v("guided", "guided", 0.1, 0),
            v("guided-seed1", "guided", 0.1, 1),
        ]);
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

    fn of_kind(mut v: VariantInfo, kind: Architecture) -> VariantInfo {
        v.kind = kind;
        v
    }

    #[test]
    fn guided_is_compared_with_every_other_kind_and_guided_on_a_kind_with_that_kind() {
        let mut ext = v("scope", "none", 0.0, 0);
        ext.external = true;
        let mut ort = of_kind(v("ortsae", "ortsae", 0.0, 0), Architecture::BatchTopK);
        ort.chunks = 4;
        let data = data(vec![
            v("topk", "none", 0.0, 0),
            of_kind(v("batchtopk", "none", 0.0, 0), Architecture::BatchTopK),
            of_kind(
                v("batchtopk-seed1", "none", 0.0, 1),
                Architecture::BatchTopK,
            ),
            of_kind(v("matryoshka", "none", 0.0, 0), Architecture::Matryoshka),
            ort,
            v("guided", "guided", 0.1, 0),
            of_kind(
                v("guided-batchtopk", "guided", 0.1, 0),
                Architecture::BatchTopK,
            ),
            ext,
        ]);
        let vg = data.verdict_groups();
        // Guided on TopK is the guided side, even with guided on BatchTopK there.
        assert_eq!(vg.guided.as_ref().unwrap().label, "guided");
        let cols: Vec<(&str, &str, Option<&str>)> = vg
            .against
            .iter()
            .map(|o| {
                (
                    o.column.as_str(),
                    o.guided.as_ref().unwrap().label.as_str(),
                    o.other.as_ref().map(|g| g.label.as_str()),
                )
            })
            .collect();
        assert_eq!(
            cols,
            [
                ("Guided vs TopK baseline", "guided", Some("topk")),
                ("Guided vs uniform orthogonality", "guided", None),
                ("Guided vs BatchTopK", "guided", Some("batchtopk")),
                (
                    "Guided vs Matryoshka BatchTopK",
                    "guided",
                    Some("matryoshka")
                ),
                ("Guided vs OrtSAE", "guided", Some("ortsae")),
                (
                    "Guided on BatchTopK vs BatchTopK alone",
                    "guided-batchtopk",
                    Some("batchtopk")
                ),
                (
                    "Guided on BatchTopK vs OrtSAE on BatchTopK",
                    "guided-batchtopk",
                    Some("ortsae")
                ),
            ]
        );
        // An external SAE is in the tables but never a side of a verdict.
        assert!(vg
            .against
            .iter()
            .all(|o| o.other.as_ref().is_none_or(|g| g.label != "scope")));
        assert_eq!(data.verdicts()[0].against.len(), 7);
    }

    #[test]
    fn caveats_state_sample_sizes_and_the_absorption_width_rule() {
        let mut d = data(vec![v("topk", "none", 0.0, 0)]);
        assert!(crate::report::sections::caveats(&d).is_empty());
        d.samples.insert("core".into(), "CE over 8 tokens".into());
        d.values
            .entry("topk".into())
            .or_default()
            .insert("absorption".into(), 0.1);
        let c = crate::report::sections::caveats(&d);
        assert_eq!(c[0], "core: CE over 8 tokens.");
        assert!(
            c[1].contains("widest SAE trained here has 64 latents"),
            "{c:?}"
        );
        d.variants[0].d_sae = 16384;
        assert_eq!(crate::report::sections::caveats(&d).len(), 1);
    }

    #[test]
    fn the_dead_latent_warning_names_mostly_dead_settings_and_when_they_died() {
        use crate::report::data::CurvePoint;
        use crate::report::sections::dead_latent_warning;
        let mut d = data(vec![
            v("topk", "none", 0.0, 0),
            v("topk-seed1", "none", 0.0, 1),
            v("guided-tau0.1", "guided", 0.1, 0),
        ]);
        let mut dead = |name: &str, f: f64| {
            d.values
                .entry(name.into())
                .or_default()
                .insert("frac_dead".into(), f);
        };
        dead("topk", 0.62);
        dead("topk-seed1", 0.4);
        dead("guided-tau0.1", 0.5);
        let w = dead_latent_warning(&d).expect("topk is mostly dead");
        assert!(w.contains("in topk (0.40-0.62):"), "{w}");
        assert!(!w.contains("guided"), "{w}");
        assert!(!w.contains("training logs"), "{w}");
        // Curves: low after the first quarter, high at the end.
        let curve = |fs: &[f64]| -> Vec<CurvePoint> {
            fs.iter()
                .enumerate()
                .map(|(i, &f)| CurvePoint {
                    tokens: i as f64,
                    mse: 0.0,
                    l0: 4.0,
                    dead_fraction: f,
                })
                .collect()
        };
        d.train_curves
            .insert("topk".into(), curve(&[0.9, 0.3, 0.01, 0.05, 0.4, 0.65]));
        d.train_curves.insert(
            "topk-seed1".into(),
            curve(&[0.0, 0.02, 0.03, 0.2, 0.3, 0.4]),
        );
        let w = dead_latent_warning(&d).unwrap();
        assert!(
            w.contains("falls to 0.01-0.02 after the first quarter of training and ends at 0.40-0.65: the latents die late"),
            "{w}"
        );
        d.values
            .get_mut("topk")
            .unwrap()
            .insert("frac_dead".into(), 0.3);
        assert!(dead_latent_warning(&d).is_none());
    }

    #[test]
    fn co_firing_pairs_are_binned_by_c_and_pooled_over_seeds() {
        let mut d = data(vec![
            v("topk", "none", 0.0, 0),
            v("topk-seed1", "none", 0.0, 1),
        ]);
        let a = crate::report::compete::cos_bins(&[
            (0, 1, 0.05, 0.2, None),
            (0, 2, 0.15, -0.4, None),
            (1, 2, 1.0, 0.6, None),
        ]);
        assert_eq!(a.iter().map(|b| b.pairs).collect::<Vec<_>>(), [1, 1, 0, 1]);
        assert!((a[1].mean_abs_cos - 0.4).abs() < 1e-12);
        let b = crate::report::compete::cos_bins(&[(3, 4, 0.12, 0.0, None)]);
        d.cos_by_c.insert("topk".into(), a);
        d.cos_by_c.insert("topk-seed1".into(), b);
        let rows = crate::report::sections::cos_by_c_rows(&d, &d.groups());
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].0, "topk");
        // Bin 0.1-0.2: |cos| 0.4 and 0.0 over two seeds, one pair each.
        assert_eq!(rows[0].1[1], Some((1.0, 0.2)));
        assert_eq!(rows[0].1[2], None);
        assert_eq!(rows[0].1[3], Some((0.5, 0.6)));
    }
}
