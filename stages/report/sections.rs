//! What report.html and report.md both show, computed once: the quoted
//! reference table and the seed rule, the comparison table's columns and
//! cells, seed spreads, the time table, verdict sentences, the SCR warning
//! and why a plot is missing. `html` and `markdown` only lay them out.

use super::plots::Plot;
use super::{Better, Group, Metric, MetricDef, Outcome, ReportData, Timing};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// SPEC.md's reference table (gemma-2-2b, layer 12 resid_post, 18432
/// latents, ~10M tokens), quoted as it stands there.
pub const REFERENCE_HEADER: &[&str] = &[
    "run",
    "k",
    "lambda",
    "absorption (lower better)",
    "expl. var",
    "KL score",
    "CE score",
    "MSE",
    "cossim",
];
pub const REFERENCE_ROWS: &[[&str; 9]] = &[
    [
        "TopK baseline",
        "320",
        "0",
        "0.0113",
        "0.777",
        "0.991",
        "0.992",
        "1.41",
        "0.930",
    ],
    [
        "ReLU+L1 standard",
        "L0 49",
        "-",
        "0.0065",
        "0.293",
        "0.720",
        "0.714",
        "4.44",
        "0.762",
    ],
    [
        "guided, tau 0.1",
        "160",
        "0.1",
        "0.0165",
        "0.727",
        "0.987",
        "0.987",
        "1.73",
        "0.914",
    ],
    [
        "guided, tau 0.1",
        "120",
        "0.2",
        "0.0246",
        "0.711",
        "0.985",
        "0.984",
        "1.83",
        "0.910",
    ],
];
pub const REFERENCE_TITLE: &str =
    "Reference figures: gemma-2-2b, quoted from SPEC.md — another model and scale";
pub const REFERENCE_NOTE: &str = "gemma-2-2b, layer 12 resid_post, 18432 latents, ~10M training tokens. \
    Quoted from SPEC.md for orientation only: a different model, layer, dictionary size, k and \
    training budget, so none of these numbers is comparable with the table above. \
    Those runs changed k and lambda together; this study holds k fixed and varies one thing at a time.";

pub const SEED_RULE: &str =
    "Seed spread is the range (minimum to maximum) of a metric over the seeds \
    of one setting. Guided orthogonality \"beats\" another setting on a metric only when the two \
    ranges do not overlap and guided's lies on the better side: every guided seed is better than \
    every seed of the other (ranges that touch count as overlapping). When the ranges overlap, the \
    verdict is \"no difference beyond seed noise\". A verdict needs at least 2 seeds on each side; \
    with one seed there is no spread to compare against.";

pub fn fmt_val(m: &MetricDef, v: f64) -> String {
    super::fmt_metric(v, m.digits)
}

pub fn arrow(b: Better) -> &'static str {
    match b {
        Better::Higher => "↑ higher is better",
        Better::Lower => "↓ lower is better",
        Better::Neither => "held by k",
    }
}

/// The best value of a metric among the variants (None for L0 or no data).
pub fn best_value(data: &ReportData, m: &MetricDef) -> Option<f64> {
    let vals = data
        .variants
        .iter()
        .filter_map(|v| data.value(&v.name, m.key));
    match m.better {
        Better::Higher => vals.fold(None, |a: Option<f64>, v| Some(a.map_or(v, |a| a.max(v)))),
        Better::Lower => vals.fold(None, |a: Option<f64>, v| Some(a.map_or(v, |a| a.min(v)))),
        Better::Neither => None,
    }
}

pub fn is_best(best: Option<f64>, v: f64) -> bool {
    best.is_some_and(|b| (b - v).abs() <= 1e-12 * b.abs().max(1.0))
}

/// Columns shown: every metric that some variant has, and every benchmark's
/// metrics even when not run (they read "not run").
pub fn shown_metrics(data: &ReportData) -> Vec<Metric> {
    data.metrics
        .iter()
        .copied()
        .filter(|m| {
            data.not_run.contains_key(m.bench)
                || data
                    .variants
                    .iter()
                    .any(|v| data.value(&v.name, m.key).is_some())
                || m.bench != "core"
        })
        .collect()
}

pub fn missing_cell(data: &ReportData, m: &Metric) -> &'static str {
    if data.not_run.contains_key(m.bench) {
        "not run"
    } else {
        "—"
    }
}

/// One line of the time table: stage label, artifacts, total seconds, and
/// the longest unit with its seconds (when there are several).
pub type TimeRow = (String, usize, f64, Option<(String, f64)>);

pub fn time_rows(data: &ReportData) -> Vec<TimeRow> {
    let mut by: BTreeMap<(usize, String), Vec<&Timing>> = BTreeMap::new();
    for t in &data.timings {
        let rank = data
            .stages
            .iter()
            .position(|s| *s == t.stage)
            .unwrap_or(data.stages.len());
        // bench splits by benchmark: "bench core", "bench absorption", ...
        let label = match (&t.unit, t.stage.as_str()) {
            (Some(u), "bench") => format!("bench {}", u.split('/').next().unwrap_or(u)),
            (Some(u), "datasets") if !u.is_empty() => "datasets".to_string(),
            _ => t.stage.clone(),
        };
        by.entry((rank, label)).or_default().push(t);
    }
    by.into_iter()
        .map(|((_, label), units)| {
            let total = units.iter().map(|t| t.wall_s).sum();
            let longest = units
                .iter()
                .max_by(|a, b| a.elapsed_s.total_cmp(&b.elapsed_s))
                .filter(|_| units.len() > 1)
                .map(|t| {
                    let name = t.unit.clone().unwrap_or_else(|| t.stage.clone());
                    (name, t.elapsed_s)
                });
            (label, units.len(), total, longest)
        })
        .collect()
}

pub fn fmt_secs(s: f64) -> String {
    if s >= 120.0 {
        format!("{:.1} min", s / 60.0)
    } else {
        format!("{s:.1} s")
    }
}

pub fn outcome_label(o: Outcome) -> (&'static str, &'static str) {
    match o {
        Outcome::Beats => ("beats", "beats beyond seed spread"),
        Outcome::Worse => ("worse", "worse beyond seed spread"),
        Outcome::NoDifference => ("same", "no difference beyond seed noise"),
        Outcome::OneSeed => ("na", "cannot tell (one seed)"),
        Outcome::Missing => ("na", "missing data"),
        Outcome::NotRun => ("na", "not run"),
    }
}

pub fn group_of<'a>(groups: &'a [Group], data: &ReportData, name: &str) -> Option<&'a Group> {
    groups
        .iter()
        .find(|g| g.members.iter().any(|&i| data.variants[i].name == name))
}

/// One plain-words sentence per comparison (guided vs baseline, vs uniform),
/// naming the metrics of each outcome.
pub fn verdict_summary(data: &ReportData) -> Vec<String> {
    let verdicts = data.verdicts();
    let columns = data.verdict_groups().against;
    let mut out = Vec::new();
    for (n, col) in columns.iter().enumerate() {
        let other = &col.name;
        let with = |o: Outcome| -> Vec<&str> {
            verdicts
                .iter()
                .filter(|v| v.against[n].outcome == o)
                .map(|v| v.metric.label)
                .collect()
        };
        let mut parts = Vec::new();
        for (o, words) in [
            (Outcome::Beats, "beats it beyond seed spread on"),
            (Outcome::Worse, "is worse beyond seed spread on"),
            (
                Outcome::NoDifference,
                "shows no difference beyond seed noise on",
            ),
            (Outcome::OneSeed, "cannot tell (fewer than 2 seeds) on"),
            (Outcome::Missing, "has no data to compare on"),
        ] {
            let ms = with(o);
            if !ms.is_empty() {
                parts.push(format!("{words} {}", ms.join(", ")));
            }
        }
        if parts.is_empty() {
            continue;
        }
        let who = match &col.guided {
            Some(g) if col.column.starts_with("Guided on") => g.label.clone(),
            _ => "guided".to_string(),
        };
        out.push(format!("Against {other}, {who} {}.", parts.join("; ")));
    }
    out
}

/// The direction mark of a column header: ↑, ↓ or nothing.
pub fn dir_mark(b: Better) -> &'static str {
    match b {
        Better::Higher => "↑",
        Better::Lower => "↓",
        Better::Neither => "",
    }
}

/// A cell of the comparison table.
pub enum Cell {
    /// A value, formatted, and whether it is the column's best.
    Value { text: String, best: bool },
    /// No value: "not run" or "—".
    Missing(&'static str),
}

/// The comparison table: its columns, and per variant (in group order) its
/// index in `data.variants`, whether it starts a seed group, and its cells.
pub struct ComparisonTable {
    pub metrics: Vec<Metric>,
    pub rows: Vec<(usize, bool, Vec<Cell>)>,
}

pub fn comparison_table(data: &ReportData, groups: &[Group]) -> ComparisonTable {
    let metrics = shown_metrics(data);
    let bests: Vec<Option<f64>> = metrics.iter().map(|m| best_value(data, m)).collect();
    let mut rows = Vec::new();
    for g in groups {
        for (n, &i) in g.members.iter().enumerate() {
            let name = &data.variants[i].name;
            let cells = metrics
                .iter()
                .zip(&bests)
                .map(|(m, best)| match data.value(name, m.key) {
                    Some(x) => Cell::Value {
                        text: fmt_val(m, x),
                        best: is_best(*best, x),
                    },
                    None => Cell::Missing(missing_cell(data, m)),
                })
                .collect();
            rows.push((i, n == 0, cells));
        }
    }
    ComparisonTable { metrics, rows }
}

/// A metric's seed spread over a group, formatted: mean, min, max; or the
/// missing cell's text.
pub fn spread_cell(data: &ReportData, g: &Group, m: &Metric) -> Result<[String; 3], &'static str> {
    match data.spread(g, m.key) {
        Some(s) => Ok([fmt_val(m, s.mean), fmt_val(m, s.min), fmt_val(m, s.max)]),
        None => Err(missing_cell(data, m)),
    }
}

/// The groups trained at several seeds.
pub fn multi_seed(groups: &[Group]) -> Vec<&Group> {
    groups.iter().filter(|g| g.members.len() > 1).collect()
}

/// A warning when SCR's denominator (A_oracle - A_biased, mean over the
/// variants) is so small that SCR mostly measures noise.
pub fn scr_noise_warning(data: &ReportData) -> Option<String> {
    let gaps: Vec<f64> = data
        .values
        .values()
        .filter_map(|v| v.get(super::SCR_GAP).copied())
        .collect();
    if gaps.is_empty() {
        return None;
    }
    let gap = gaps.iter().sum::<f64>() / gaps.len() as f64;
    (gap < super::SCR_GAP_WARN).then(|| {
        format!(
            "SCR divides by A_oracle - A_biased, which averages {gap:.3} here (below {}): the probes barely \
             tell the spurious attribute apart on these data, so SCR is dominated by noise and its verdicts \
             say little. A dataset where both attributes are decodable (e.g. bias_in_bios) gives a meaningful SCR.",
            super::SCR_GAP_WARN
        )
    })
}

/// Above this fraction of latents never active on the eval split, most of
/// a dictionary is unused.
pub const MOSTLY_DEAD: f64 = 0.5;

/// A warning when trained SAEs leave most of their latents dead: which
/// settings (the seeds' range) and, from their training logs, whether the
/// latents died late (the lowest dead fraction after the first quarter of
/// training against the last).
pub fn dead_latent_warning(data: &ReportData) -> Option<String> {
    let range = |v: &[f64]| {
        let (lo, hi) = v
            .iter()
            .fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
        if v.len() > 1 {
            format!("{lo:.2}-{hi:.2}")
        } else {
            format!("{lo:.2}")
        }
    };
    let (mut settings, mut lows, mut ends) = (Vec::new(), Vec::new(), Vec::new());
    for g in data.groups() {
        let members: Vec<&str> = g
            .members
            .iter()
            .map(|&i| &data.variants[i])
            .filter(|v| !v.external)
            .map(|v| v.name.as_str())
            .collect();
        let dead: Vec<f64> = members
            .iter()
            .filter_map(|n| data.values.get(*n)?.get("frac_dead").copied())
            .collect();
        if dead.iter().all(|&f| f <= MOSTLY_DEAD) {
            continue;
        }
        settings.push(format!("{} ({})", g.label, range(&dead)));
        for c in members.iter().filter_map(|n| data.train_curves.get(*n)) {
            if let (Some(low), Some(last)) = (
                c[c.len() / 4..]
                    .iter()
                    .map(|p| p.dead_fraction)
                    .reduce(f64::min),
                c.last(),
            ) {
                lows.push(low);
                ends.push(last.dead_fraction);
            }
        }
    }
    if settings.is_empty() {
        return None;
    }
    let mut w = format!(
        "Most latents never fire on the eval split in {}: the per-latent benchmarks (absorption, probing, \
         SCR, TPP) see only the live ones, and the Dead column says what this training budget keeps alive \
         as much as what a penalty does.",
        settings.join(", ")
    );
    if !lows.is_empty() {
        let _ = write!(
            w,
            " In their training logs the dead fraction falls to {} after the first quarter of training \
             and ends at {}{}",
            range(&lows),
            range(&ends),
            if ends.iter().zip(&lows).any(|(e, l)| e - l > 0.25) {
                ": the latents die late in training."
            } else {
                "."
            }
        );
    }
    Some(w)
}

/// Why a plot is absent, for each plot the data did not allow.
pub fn missing_plot_notes(data: &ReportData, plots: &[Plot]) -> Vec<String> {
    let has = |f: &str| plots.iter().any(|p| p.file == f);
    let mut out = Vec::new();
    if !has("metrics_vs_tau.png") {
        out.push("Metrics against tau: needs benchmark results for guided variants at two or more tau values.".to_string());
    }
    if !has("metrics_vs_lambda.png") {
        out.push("Metrics against lambda: needs benchmark results for guided variants at two or more lambda values.".to_string());
    }
    if !has("l0_vs_quality.png") {
        out.push(format!(
            "L0 against explained variance and CE score: needs the core benchmark{}.",
            if data.not_run.contains_key("core") {
                " (not run)"
            } else {
                ""
            }
        ));
    }
    if !has("absorption_letters.png") {
        out.push(format!(
            "Absorption per letter: needs the absorption benchmark{}.",
            if data.not_run.contains_key("absorption") {
                " (not run)"
            } else {
                ""
            }
        ));
    }
    if !has("dec_cos_competing.png") {
        out.push(format!(
            "Decoder-cosine histograms: need compete_pairs{}.",
            if data.not_run.contains_key("compete") {
                " (compete not run)"
            } else {
                ""
            }
        ));
    }
    if !has("training_curves.png") {
        out.push("Training curves: no train_log rows.".to_string());
    }
    out
}

/// SAEBench's maintainers' rule of thumb for when absorption means much:
/// SAEs of at least this many latents (on models of 1B+ parameters).
pub const ABSORPTION_MIN_WIDTH: u64 = 16384;

/// What each benchmark's figures rest on and where this study is too small
/// for one to mean much, from the data.
pub fn caveats(data: &ReportData) -> Vec<String> {
    let mut out: Vec<String> = data
        .samples
        .iter()
        .map(|(bench, s)| format!("{bench}: {s}."))
        .collect();
    let widest = data
        .variants
        .iter()
        .filter(|v| !v.external)
        .map(|v| v.d_sae)
        .max();
    let has_absorption = data.values.values().any(|m| m.contains_key("absorption"));
    if let Some(f) = widest.filter(|&f| has_absorption && f < ABSORPTION_MIN_WIDTH) {
        out.push(format!(
            "Absorption is weak evidence at this scale: SAEBench's maintainers note that it needs wide SAEs \
             ({ABSORPTION_MIN_WIDTH}+ latents) on larger models (1B+ parameters) to separate architectures; \
             the widest SAE trained here has {f} latents."
        ));
    }
    out.extend(dead_latent_warning(data));
    out.extend(scr_noise_warning(data));
    out
}

/// A setting's label and, per c_ij bin, (pairs per seed, mean |cos|).
pub type CosRow = (String, Vec<Option<(f64, f64)>>);

/// One row per setting (seeds pooled): its label and, per c_ij bin, the
/// co-firing pairs per seed and their mean |decoder cosine|.
pub fn cos_by_c_rows(data: &ReportData, groups: &[Group]) -> Vec<CosRow> {
    let bins = super::data::C_BINS.len() - 1;
    groups
        .iter()
        .filter_map(|g| {
            let members: Vec<&Vec<super::data::CosBin>> = g
                .members
                .iter()
                .filter_map(|&i| data.cos_by_c.get(&data.variants[i].name))
                .collect();
            if members.is_empty() {
                return None;
            }
            let cells = (0..bins)
                .map(|b| {
                    let pairs: usize = members.iter().map(|m| m[b].pairs).sum();
                    (pairs > 0).then(|| {
                        let cos = members
                            .iter()
                            .map(|m| m[b].mean_abs_cos * m[b].pairs as f64)
                            .sum::<f64>()
                            / pairs as f64;
                        (pairs as f64 / members.len() as f64, cos)
                    })
                })
                .collect();
            Some((g.label.clone(), cells))
        })
        .collect()
}
