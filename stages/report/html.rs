//! report.html (one self-contained page, inline CSS, images beside it) and
//! report.md (the same tables and verdicts, images linked).

use super::plots::{group_colors, Plot};
use super::{Better, Group, Metric, MetricDef, Outcome, ReportConfig, ReportData};
use std::collections::BTreeMap;
use std::fmt::Write;

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
const REFERENCE_NOTE: &str = "gemma-2-2b, layer 12 resid_post, 18432 latents, ~10M training tokens. \
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

pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// A context with its firing token marked «like this», escaped, the mark as <mark>.
pub fn highlight(context: &str) -> String {
    let e = esc(context);
    let opens = e.matches('«').count();
    let closes = e.matches('»').count();
    if opens == 0 || opens != closes {
        return e;
    }
    // Tokens carry their leading space; it stays outside the highlight.
    let mut out = String::with_capacity(e.len() + 16);
    let mut rest = e.as_str();
    while let Some(start) = rest.find('«') {
        out.push_str(&rest[..start]);
        let after = &rest[start + '«'.len_utf8()..];
        let Some(end) = after.find('»') else {
            out.push_str(after);
            return out;
        };
        let token = &after[..end];
        let trimmed = token.trim_start();
        out.push_str(&token[..token.len() - trimmed.len()]);
        out.push_str("<mark>");
        out.push_str(trimmed);
        out.push_str("</mark>");
        rest = &after[end + '»'.len_utf8()..];
    }
    out.push_str(rest);
    out
}

fn hex(c: (u8, u8, u8)) -> String {
    format!("#{:02x}{:02x}{:02x}", c.0, c.1, c.2)
}

fn fmt_val(m: &MetricDef, v: f64) -> String {
    super::fmt_metric(v, m.digits)
}

fn arrow(b: Better) -> &'static str {
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

fn is_best(best: Option<f64>, v: f64) -> bool {
    best.is_some_and(|b| (b - v).abs() <= 1e-12 * b.abs().max(1.0))
}

/// Columns shown: every metric that some variant has, and every benchmark's
/// metrics even when not run (they read "not run").
fn shown_metrics(data: &ReportData) -> Vec<Metric> {
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

fn missing_cell(data: &ReportData, m: &Metric) -> &'static str {
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
    let mut by: BTreeMap<(usize, String), Vec<(String, f64)>> = BTreeMap::new();
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
        by.entry((rank, label)).or_default().push((
            t.unit.clone().unwrap_or_else(|| t.stage.clone()),
            t.elapsed_s,
        ));
    }
    by.into_iter()
        .map(|((_, label), units)| {
            let total = units.iter().map(|u| u.1).sum();
            let longest = units
                .iter()
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .filter(|_| units.len() > 1)
                .cloned();
            (label, units.len(), total, longest)
        })
        .collect()
}

fn fmt_secs(s: f64) -> String {
    if s >= 120.0 {
        format!("{:.1} min", s / 60.0)
    } else {
        format!("{s:.1} s")
    }
}

fn outcome_label(o: Outcome) -> (&'static str, &'static str) {
    match o {
        Outcome::Beats => ("beats", "beats beyond seed spread"),
        Outcome::Worse => ("worse", "worse beyond seed spread"),
        Outcome::NoDifference => ("same", "no difference beyond seed noise"),
        Outcome::OneSeed => ("na", "cannot tell (one seed)"),
        Outcome::Missing => ("na", "missing data"),
        Outcome::NotRun => ("na", "not run"),
    }
}

fn group_of<'a>(groups: &'a [Group], data: &ReportData, name: &str) -> Option<&'a Group> {
    groups
        .iter()
        .find(|g| g.members.iter().any(|&i| data.variants[i].name == name))
}

/// One plain-words sentence per comparison (guided vs baseline, vs uniform),
/// naming the metrics of each outcome.
pub fn verdict_summary(data: &ReportData) -> Vec<String> {
    let verdicts = data.verdicts();
    let mut out = Vec::new();
    for (n, other) in ["the TopK baseline", "uniform orthogonality"]
        .iter()
        .enumerate()
    {
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
        out.push(format!("Against {other}, guided {}.", parts.join("; ")));
    }
    out
}

fn verdict_intro(data: &ReportData) -> String {
    let vg = data.verdict_groups();
    let desc = |g: &Option<Group>, what: &str| match g {
        Some(g) => format!(
            "{what} <b>{}</b> ({}, {} seed{})",
            esc(&g.label),
            esc(&data.variants[g.members[0]].describe()),
            g.members.len(),
            if g.members.len() == 1 { "" } else { "s" }
        ),
        None => format!("{what}: <i>not in this study</i>"),
    };
    format!(
        "{}, compared with {} and with {}.",
        desc(&vg.guided, "Guided orthogonality"),
        desc(&vg.baseline, "the TopK baseline"),
        desc(&vg.uniform, "uniform orthogonality"),
    )
}

const CSS: &str = r#"
:root { --fg:#1d1d1f; --muted:#666; --line:#dcdce0; --best:#e3f4e1; --bestfg:#17622a; --head:#f4f5f7; }
* { box-sizing: border-box; }
body { font: 15px/1.5 -apple-system, "Segoe UI", "DejaVu Sans", Helvetica, Arial, sans-serif; color: var(--fg); margin: 0; background: #fafafa; }
main { max-width: 1560px; margin: 0 auto; padding: 24px 24px 64px; background: #fff; }
h1 { font-size: 28px; margin: 0 0 4px; }
h2 { font-size: 21px; margin: 40px 0 10px; padding-bottom: 4px; border-bottom: 2px solid var(--line); }
h3 { font-size: 17px; margin: 24px 0 8px; }
p, li { max-width: 980px; }
.muted { color: var(--muted); }
.small { font-size: 13px; }
nav { margin: 12px 0 8px; font-size: 14px; }
nav a { margin-right: 14px; color: #0b5cad; text-decoration: none; }
.scroll { overflow-x: auto; border: 1px solid var(--line); border-radius: 6px; }
table { border-collapse: collapse; font-size: 13.5px; }
th, td { padding: 4px 6px; border-bottom: 1px solid var(--line); text-align: right; white-space: nowrap; vertical-align: top; }
th { background: var(--head); font-weight: 600; white-space: normal; }
table.cmp { font-size: 12.5px; }
table.seeds th { text-align: left; }
td.name, th.name, td.text, th.text { text-align: left; }
td.text { white-space: normal; min-width: 260px; }
tr.dir th { font-weight: 400; font-size: 12px; color: var(--muted); background: #fbfbfc; }
tr.groupstart td { border-top: 2px solid #c8c8cc; }
td.best { background: var(--best); color: var(--bestfg); font-weight: 700; position: relative; }
td.best::after { content: "★"; font-size: 8px; position: absolute; top: 1px; right: 2px; }
td.na { color: #aaa; }
.sw { display: inline-block; width: 11px; height: 11px; border-radius: 50%; margin-right: 6px; vertical-align: -1px; }
table.verdicts td { white-space: normal; text-align: left; max-width: 520px; }
.tag { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12.5px; font-weight: 600; margin-bottom: 2px; }
.tag.beats { background: #d8f0d4; color: #17622a; }
.tag.worse { background: #fbdad7; color: #8a1c12; }
.tag.same { background: #ececef; color: #444; }
.tag.na { background: #fff4d6; color: #7a5a00; }
.detail { display: block; font-size: 12.5px; color: var(--muted); }
.def { background: #f5f8fc; border-left: 4px solid #8fb3dc; padding: 8px 14px; font-size: 14px; max-width: 980px; }
.ref { background: #fffaf0; border: 1px dashed #d2b46c; border-radius: 6px; padding: 4px 14px 14px; margin-top: 8px; }
figure { margin: 18px 0 30px; }
figure img { max-width: 100%; border: 1px solid var(--line); border-radius: 4px; }
figcaption { font-size: 13.5px; color: var(--muted); max-width: 980px; }
details { margin: 8px 0; border: 1px solid var(--line); border-radius: 6px; padding: 6px 12px; }
details > summary { cursor: pointer; font-weight: 600; }
details > summary .muted { font-weight: 400; }
.card { border-top: 1px solid var(--line); padding: 10px 0 6px; }
.card h4 { margin: 0 0 4px; font-size: 15px; }
.ctx { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 12.5px; white-space: pre-wrap; word-break: break-word; }
ol.ctxs { margin: 4px 0 8px; padding-left: 26px; }
ol.ctxs li { margin: 2px 0; max-width: none; }
mark { background: #ffe27a; padding: 0 2px; border-radius: 2px; font-weight: 700; }
.act { color: var(--muted); font-size: 12px; margin-right: 6px; }
.grid2 { display: grid; grid-template-columns: minmax(0, 3fr) minmax(0, 2fr); gap: 18px; }
.notrun { color: #7a5a00; }
"#;

/// The HTML page.
pub fn page(data: &ReportData, cfg: &ReportConfig, plots: &[Plot]) -> String {
    let mut h = String::new();
    let groups = data.groups();
    let colors = group_colors(data);
    let swatch = |name: &str| {
        group_of(&groups, data, name)
            .and_then(|g| colors.get(&g.key))
            .map(|c| {
                format!(
                    "<span class=\"sw\" style=\"background:{}\"></span>",
                    hex(*c)
                )
            })
            .unwrap_or_default()
    };
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>coact report: {}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n",
        esc(&data.study)
    );
    let _ = write!(
        h,
        "<h1>coact report: {}</h1>\n<p class=\"muted\">{} SAE variants in {} settings \
         ({} trained at several seeds). Sparse autoencoders with sparsity-guided orthogonality, \
         benchmarked in SAEBench's terms.</p>\n",
        esc(&data.study),
        data.variants.len(),
        groups.len(),
        groups.iter().filter(|g| g.members.len() > 1).count()
    );
    h.push_str(
        "<nav><a href=\"#verdicts\">Verdicts</a><a href=\"#comparison\">Comparison</a>\
         <a href=\"#reference\">Reference (gemma-2-2b)</a><a href=\"#competition\">Competition</a>\
         <a href=\"#plots\">Plots</a><a href=\"#dashboards\">Feature dashboards</a>\
         <a href=\"#time\">Time per stage</a><a href=\"#notes\">Notes</a></nav>\n",
    );
    if !data.not_run.is_empty() {
        h.push_str("<p class=\"notrun\"><b>Not run:</b> ");
        let parts: Vec<String> = data
            .not_run
            .iter()
            .map(|(k, why)| format!("{} ({})", esc(k), esc(why)))
            .collect();
        h.push_str(&parts.join("; "));
        h.push_str(". Their columns read “not run”.</p>\n");
    }

    // Verdicts.
    h.push_str("<h2 id=\"verdicts\">Does guided orthogonality help?</h2>\n");
    let _ = writeln!(h, "<p>{}</p>", verdict_intro(data));
    h.push_str("<ul class=\"summary\">\n");
    for line in verdict_summary(data) {
        let _ = writeln!(h, "<li>{}</li>", esc(&line));
    }
    h.push_str("</ul>\n");
    let _ = writeln!(
        h,
        "<p class=\"def\"><b>How to read this.</b> {}</p>",
        esc(SEED_RULE)
    );
    // Metrics whose benchmark did not run get one line, not a table row each.
    let (unrun, verdicts): (Vec<_>, Vec<_>) = data
        .verdicts()
        .into_iter()
        .partition(|v| v.against.iter().all(|c| c.outcome == Outcome::NotRun));
    if !unrun.is_empty() {
        let names: Vec<&str> = unrun.iter().map(|v| v.metric.label).collect();
        let _ = writeln!(
            h,
            "<p class=\"notrun\">No verdict, the benchmark did not run: {}.</p>",
            esc(&names.join(", "))
        );
    }
    if !verdicts.is_empty() {
        h.push_str("<div class=\"scroll\"><table class=\"verdicts\">\n<thead><tr><th class=\"name\">Metric</th><th class=\"name\">Direction</th><th class=\"name\">Guided vs the TopK baseline</th><th class=\"name\">Guided vs uniform orthogonality</th></tr></thead>\n<tbody>\n");
    }
    for v in &verdicts {
        let _ = write!(
            h,
            "<tr><td class=\"name\"><b>{}</b></td><td class=\"name\">{}</td>",
            esc(v.metric.label),
            arrow(v.metric.better)
        );
        for c in &v.against {
            let (cls, label) = outcome_label(c.outcome);
            let _ = write!(
                h,
                "<td data-metric=\"{}\" data-against=\"{}\"><span class=\"tag {cls}\">{label}</span><span class=\"detail\">{}</span></td>",
                v.metric.key,
                esc(&c.other),
                esc(&c.detail)
            );
        }
        h.push_str("</tr>\n");
    }
    if !verdicts.is_empty() {
        h.push_str("</tbody></table></div>\n");
    }

    // Comparison table.
    let metrics = shown_metrics(data);
    if let Some(w) = scr_noise_warning(data) {
        let _ = writeln!(h, "<p class=\"notrun\"><b>{}</b></p>", esc(&w));
    }
    h.push_str("<h2 id=\"comparison\">Comparison across variants</h2>\n");
    h.push_str("<p>One row per trained SAE. Column headers say which way is better; the best value of each column is marked <span style=\"background:var(--best);color:var(--bestfg);font-weight:700;padding:0 4px\">★</span> (all tied values are marked). Hover a header for its definition. Rows of the same setting at different seeds are adjacent and share a colour dot.</p>\n");
    h.push_str("<div class=\"scroll\"><table class=\"cmp\" id=\"comparison-table\">\n<thead><tr><th class=\"name\">Variant</th><th>Seed</th>");
    for m in &metrics {
        let _ = write!(h, "<th title=\"{}\">{}</th>", esc(m.help), esc(m.label));
    }
    h.push_str("</tr>\n<tr class=\"dir\"><th class=\"name\"></th><th></th>");
    for m in &metrics {
        let d = match m.better {
            Better::Higher => "↑",
            Better::Lower => "↓",
            Better::Neither => "",
        };
        let _ = write!(h, "<th>{d}</th>");
    }
    h.push_str("</tr></thead>\n<tbody>\n");
    let bests: Vec<Option<f64>> = metrics.iter().map(|m| best_value(data, m)).collect();
    for g in &groups {
        for (n, &i) in g.members.iter().enumerate() {
            let v = &data.variants[i];
            let cls = if n == 0 { " class=\"groupstart\"" } else { "" };
            let _ = write!(
                h,
                "<tr{cls} data-variant=\"{}\"><td class=\"name\" title=\"{}\">{}{}</td><td>{}</td>",
                esc(&v.name),
                esc(&v.describe()),
                swatch(&v.name),
                esc(&v.name),
                v.seed
            );
            for (m, best) in metrics.iter().zip(&bests) {
                match data.value(&v.name, m.key) {
                    Some(x) => {
                        let b = if is_best(*best, x) {
                            " class=\"best\""
                        } else {
                            ""
                        };
                        let _ = write!(
                            h,
                            "<td data-variant=\"{}\" data-metric=\"{}\"{b}>{}</td>",
                            esc(&v.name),
                            m.key,
                            fmt_val(m, x)
                        );
                    }
                    None => {
                        let _ = write!(
                            h,
                            "<td data-variant=\"{}\" data-metric=\"{}\" class=\"na\">{}</td>",
                            esc(&v.name),
                            m.key,
                            missing_cell(data, m)
                        );
                    }
                }
            }
            h.push_str("</tr>\n");
        }
    }
    h.push_str("</tbody></table></div>\n");
    if let Some(d) = data.dense_probe {
        let _ = writeln!(
            h,
            "<p class=\"small muted\">Sparse probing's dense reference: a logistic-regression probe on the model's own activations reaches {d:.3} test accuracy (mean over datasets and tasks).</p>"
        );
    }

    // Seed groups.
    let multi: Vec<&Group> = groups.iter().filter(|g| g.members.len() > 1).collect();
    if !multi.is_empty() {
        // One row per metric, one column per setting: fits however many metrics.
        h.push_str("<h3>Settings trained at several seeds: mean and seed range</h3>\n<p class=\"small muted\">Each cell: the mean over seeds, then the range (minimum – maximum) over seeds.</p>\n");
        h.push_str("<div class=\"scroll\"><table class=\"cmp seeds\">\n<thead><tr><th class=\"name\">Metric</th>");
        for g in &multi {
            let _ = write!(
                h,
                "<th>{}{} <span class=\"muted\">({} seeds)</span><br><span class=\"small muted\">{}</span></th>",
                swatch(&data.variants[g.members[0]].name),
                esc(&g.label),
                g.members.len(),
                esc(&data.variants[g.members[0]].describe())
            );
        }
        h.push_str("</tr></thead>\n<tbody>\n");
        for m in &metrics {
            let _ = write!(
                h,
                "<tr><td class=\"name\" title=\"{}\">{} <span class=\"muted small\">{}</span></td>",
                esc(m.help),
                esc(m.label),
                match m.better {
                    Better::Higher => "↑",
                    Better::Lower => "↓",
                    Better::Neither => "",
                }
            );
            for g in &multi {
                match data.spread(g, m.key) {
                    Some(s) => {
                        let _ = write!(
                            h,
                            "<td>{} <span class=\"small muted\">({} – {})</span></td>",
                            fmt_val(m, s.mean),
                            fmt_val(m, s.min),
                            fmt_val(m, s.max)
                        );
                    }
                    None => {
                        let _ = write!(h, "<td class=\"na\">{}</td>", missing_cell(data, m));
                    }
                }
            }
            h.push_str("</tr>\n");
        }
        h.push_str("</tbody></table></div>\n");
    }

    // Reference.
    let _ = write!(
        h,
        "<h2 id=\"reference\">{}</h2>\n<div class=\"ref\">\n<p class=\"small\">{}</p>\n<table>\n<thead><tr>",
        esc(REFERENCE_TITLE),
        esc(REFERENCE_NOTE)
    );
    for (n, c) in REFERENCE_HEADER.iter().enumerate() {
        let cls = if n == 0 { " class=\"name\"" } else { "" };
        let _ = write!(h, "<th{cls}>{}</th>", esc(c));
    }
    h.push_str("</tr></thead>\n<tbody>\n");
    for row in REFERENCE_ROWS {
        h.push_str("<tr>");
        for (n, c) in row.iter().enumerate() {
            let cls = if n == 0 { " class=\"name\"" } else { "" };
            let _ = write!(h, "<td{cls}>{}</td>", esc(c));
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</tbody></table>\n</div>\n");

    // Competition summary.
    h.push_str("<h2 id=\"competition\">Competition on the eval tokens</h2>\n");
    if data.competition.is_empty() {
        let why = data
            .not_run
            .get("compete")
            .cloned()
            .unwrap_or_else(|| "no compete_summary rows".into());
        let _ = writeln!(h, "<p class=\"notrun\">Not run: {}.</p>", esc(&why));
    } else {
        let _ = writeln!(
            h,
            "<p>Pairs of latents compete when they co-fire: c_ij = C_ij / min(n_i, n_j) ≥ τ, here τ = {} (the row of compete_summary nearest to it). A guided penalty should lower the decoder cosines of competing pairs relative to random pairs.</p>",
            super::num(cfg.histogram_tau)
        );
        h.push_str("<div class=\"scroll\"><table>\n<thead><tr><th class=\"name\">Variant</th><th>τ</th><th>Competing pairs</th><th>Mean |cos|, competing</th><th>Mean |cos|, random</th><th>Share |cos| &gt; 0.3, competing</th><th>Share |cos| &gt; 0.3, random</th><th>Latents without a competitor</th></tr></thead>\n<tbody>\n");
        let o = |x: Option<f64>, d: usize| x.map_or("—".to_string(), |x| format!("{x:.d$}"));
        for i in data.ordered() {
            let v = &data.variants[i];
            let Some(c) = data.competition.get(&v.name) else {
                continue;
            };
            let _ = writeln!(
                h,
                "<tr><td class=\"name\">{}{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                swatch(&v.name),
                esc(&v.name),
                super::num(c.tau),
                o(c.competing_pairs, 0),
                o(c.mean_abs_cos_competing, 3),
                o(c.mean_abs_cos_random, 3),
                o(c.share_cos_over_0_3, 3),
                o(c.share_random_cos_over_0_3, 3),
                o(c.latents_without_competitor, 0)
            );
        }
        h.push_str("</tbody></table></div>\n");
    }

    // Plots.
    h.push_str("<h2 id=\"plots\">Plots</h2>\n");
    if plots.is_empty() {
        h.push_str("<p class=\"notrun\">No plot could be drawn from the available data.</p>\n");
    }
    for p in plots {
        let _ = writeln!(
            h,
            "<figure><img src=\"{}\" alt=\"{}\"><figcaption><b>{}.</b> {}</figcaption></figure>",
            esc(&p.file),
            esc(&p.title),
            esc(&p.title),
            esc(&p.caption)
        );
    }
    let missing_plots = missing_plot_notes(data, plots);
    if !missing_plots.is_empty() {
        h.push_str("<ul class=\"small notrun\">");
        for m in missing_plots {
            let _ = write!(h, "<li>{}</li>", esc(&m));
        }
        h.push_str("</ul>\n");
    }

    // Dashboards.
    h.push_str("<h2 id=\"dashboards\">Feature dashboards</h2>\n");
    if data.dashboards.is_empty() {
        let why = data
            .not_run
            .get("compete")
            .cloned()
            .unwrap_or_else(|| "no compete_top_contexts rows".into());
        let _ = writeln!(h, "<p class=\"notrun\">Not run: {}.</p>", esc(&why));
    } else {
        h.push_str("<p>Per variant, a few latents: the most-competing ones and a random few, as the compete stage chose them. For each, its top-activating eval contexts with the firing token <mark>highlighted</mark>, and its strongest competitors (by c_ij) with their decoder cosine.</p>\n");
        let vg = data.verdict_groups();
        let open: Vec<&str> = [vg.guided.as_ref(), vg.baseline.as_ref()]
            .into_iter()
            .flatten()
            .map(|g| data.variants[g.members[0]].name.as_str())
            .collect();
        for i in data.ordered() {
            let v = &data.variants[i];
            let Some(cards) = data.dashboards.get(&v.name) else {
                continue;
            };
            let pairs = data.pair_examples.get(&v.name).filter(|p| !p.is_empty());
            let _ = writeln!(
                h,
                "<details{}><summary>{}{} <span class=\"muted small\">({}; {} latents)</span></summary>",
                if open.contains(&v.name.as_str()) { " open" } else { "" },
                swatch(&v.name),
                esc(&v.name),
                esc(&v.describe()),
                cards.len()
            );
            if let Some(pairs) = pairs {
                h.push_str("<h4>Top competing pairs, with a context where both fire</h4><table><thead><tr><th class=\"name\">Pair</th><th>c_ij</th><th>dec. cos</th><th>act i / act j</th><th class=\"name\">Context</th></tr></thead><tbody>");
                let o = |x: Option<f64>| x.map_or("—".to_string(), |x| format!("{x:.2}"));
                for p in pairs {
                    let _ = write!(
                        h,
                        "<tr><td class=\"name\">{} &amp; {}</td><td>{:.3}</td><td>{}</td><td>{} / {}</td><td class=\"text\"><span class=\"ctx\">{}</span></td></tr>",
                        p.i,
                        p.j,
                        p.c_ij,
                        p.dec_cos.map_or("—".to_string(), |x| format!("{x:.3}")),
                        o(p.act_i),
                        o(p.act_j),
                        highlight(&p.context)
                    );
                }
                h.push_str("</tbody></table>");
            }
            for c in cards {
                let mut stats = Vec::new();
                if let Some(f) = c.frequency {
                    stats.push(format!("fires on {:.3}% of tokens", f * 100.0));
                }
                if let Some(m) = c.max_act {
                    stats.push(format!("max activation {m:.2}"));
                }
                let _ = write!(
                    h,
                    "<div class=\"card\"><h4>latent {} <span class=\"tag {}\">{}</span> <span class=\"muted small\">{}</span></h4><div class=\"grid2\"><div><ol class=\"ctxs\">",
                    c.latent,
                    if c.reason == "competing" { "worse" } else { "same" },
                    esc(&c.reason),
                    esc(&stats.join(", "))
                );
                for ctx in &c.contexts {
                    let _ = write!(
                        h,
                        "<li><span class=\"act\">{:.2}</span><span class=\"ctx\">{}</span></li>",
                        ctx.activation,
                        highlight(&ctx.context)
                    );
                }
                h.push_str("</ol></div><div>");
                if c.competitors.is_empty() {
                    h.push_str("<p class=\"small muted\">No competitor recorded.</p>");
                } else {
                    h.push_str("<table><thead><tr><th class=\"name\">Competitor</th><th>c_ij</th><th>dec. cos</th><th>co-firings</th></tr></thead><tbody>");
                    for k in &c.competitors {
                        let _ = write!(
                            h,
                            "<tr><td class=\"name\">latent {}</td><td>{:.3}</td><td>{:.3}</td><td>{}</td></tr>",
                            k.latent,
                            k.c_ij,
                            k.dec_cos,
                            k.cofirings.map_or("—".into(), |x| format!("{x:.0}"))
                        );
                    }
                    h.push_str("</tbody></table>");
                }
                h.push_str("</div></div></div>\n");
            }
            h.push_str("</details>\n");
        }
    }

    // Time per stage.
    h.push_str("<h2 id=\"time\">Time per stage</h2>\n");
    h.push_str("<p class=\"small muted\">From each artifact's manifest: the wall time of the run that made it (an artifact served from the cache keeps the time of its original run). The report's own time is in its manifest.</p>\n");
    let rows = time_rows(data);
    if rows.is_empty() {
        h.push_str("<p class=\"notrun\">No manifest times found.</p>\n");
    } else {
        h.push_str("<table>\n<thead><tr><th class=\"name\">Stage</th><th>Artifacts</th><th>Total</th><th class=\"name\">Longest unit</th></tr></thead>\n<tbody>\n");
        let mut total = 0.0;
        for (label, n, secs, longest) in &rows {
            total += secs;
            let _ = writeln!(
                h,
                "<tr><td class=\"name\">{}</td><td>{n}</td><td>{}</td><td class=\"name\">{}</td></tr>",
                esc(label),
                fmt_secs(*secs),
                longest
                    .as_ref()
                    .map_or(String::new(), |(u, s)| format!("{} ({})", esc(u), fmt_secs(*s)))
            );
        }
        let _ = writeln!(
            h,
            "<tr><td class=\"name\"><b>all</b></td><td>{}</td><td><b>{}</b></td><td></td></tr>",
            data.timings.len(),
            fmt_secs(total)
        );
        h.push_str("</tbody></table>\n");
        h.push_str("<details><summary>Every artifact</summary><table><thead><tr><th class=\"name\">Stage</th><th class=\"name\">Unit</th><th>Time</th></tr></thead><tbody>");
        for t in &data.timings {
            let _ = write!(
                h,
                "<tr><td class=\"name\">{}</td><td class=\"name\">{}</td><td>{}</td></tr>",
                esc(&t.stage),
                esc(t.unit.as_deref().unwrap_or("")),
                fmt_secs(t.elapsed_s)
            );
        }
        h.push_str("</tbody></table></details>\n");
    }

    // Notes.
    h.push_str("<h2 id=\"notes\">Notes and definitions</h2>\n<ul class=\"small\">\n");
    for m in &data.metrics {
        let _ = writeln!(
            h,
            "<li><b>{}</b> ({}): {}.</li>",
            esc(m.label),
            arrow(m.better),
            esc(m.help)
        );
    }
    h.push_str("<li>Sparse probing: mean test accuracy over datasets, tasks and seeds. SCR: SAEBench's headline (scr_metric, the direction it selects per dataset pair), mean over dataset pairs and seeds; without scr_metric rows, the mean of both directions. TPP: total metric (own-class drop minus mean other-class drop), mean over datasets and seeds.</li>\n");
    let _ = writeln!(h, "<li>{}</li>", esc(SEED_RULE));
    if let Some(w) = scr_noise_warning(data) {
        let _ = writeln!(h, "<li class=\"notrun\"><b>{}</b></li>", esc(&w));
    }
    h.push_str("</ul>\n");
    if !data.notes.is_empty() {
        h.push_str("<h3>Problems reading the inputs</h3>\n<ul class=\"small notrun\">\n");
        for n in &data.notes {
            let _ = writeln!(h, "<li>{}</li>", esc(n));
        }
        h.push_str("</ul>\n");
    }
    h.push_str("</main>\n</body>\n</html>\n");
    h
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

/// Why a plot is absent, for each plot the data did not allow.
fn missing_plot_notes(data: &ReportData, plots: &[Plot]) -> Vec<String> {
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

/// report.md: the same tables and verdicts, images linked.
pub fn markdown(data: &ReportData, cfg: &ReportConfig, plots: &[Plot]) -> String {
    let _ = cfg;
    let mut m = String::new();
    let groups = data.groups();
    let mdesc = |s: &str| s.replace('|', "\\|");
    let _ = writeln!(m, "# coact report: {}\n", data.study);
    let _ = writeln!(
        m,
        "{} SAE variants in {} settings. The HTML page (report.html) has the plots inline and the feature dashboards.\n",
        data.variants.len(),
        groups.len()
    );
    for (k, why) in &data.not_run {
        let _ = writeln!(m, "- **Not run:** {k} ({why})");
    }
    if !data.not_run.is_empty() {
        m.push('\n');
    }
    m.push_str("## Does guided orthogonality help?\n\n");
    let intro = verdict_intro(data)
        .replace("<b>", "**")
        .replace("</b>", "**")
        .replace("<i>", "*")
        .replace("</i>", "*");
    let _ = writeln!(m, "{intro}\n\n> {SEED_RULE}\n");
    for line in verdict_summary(data) {
        let _ = writeln!(m, "**{line}**\n");
    }
    for v in data.verdicts() {
        let _ = writeln!(m, "- **{}** ({}):", v.metric.label, arrow(v.metric.better));
        for c in &v.against {
            let (_, label) = outcome_label(c.outcome);
            let _ = writeln!(m, "  - vs {}: **{label}** ({})", c.other, c.detail);
        }
    }
    if let Some(w) = scr_noise_warning(data) {
        let _ = writeln!(m, "\n> **{w}**");
    }
    m.push_str("\n## Comparison across variants\n\nBest value per column in **bold** with ★.\n\n");
    let metrics = shown_metrics(data);
    m.push_str("| Variant | Setting | Seed |");
    for x in &metrics {
        let d = match x.better {
            Better::Higher => " ↑",
            Better::Lower => " ↓",
            Better::Neither => "",
        };
        let _ = write!(m, " {}{d} |", x.label);
    }
    m.push_str("\n|---|---|---:|");
    for _ in &metrics {
        m.push_str("---:|");
    }
    m.push('\n');
    let bests: Vec<Option<f64>> = metrics.iter().map(|x| best_value(data, x)).collect();
    for g in &groups {
        for &i in &g.members {
            let v = &data.variants[i];
            let _ = write!(m, "| {} | {} | {} |", v.name, mdesc(&v.describe()), v.seed);
            for (x, best) in metrics.iter().zip(&bests) {
                match data.value(&v.name, x.key) {
                    Some(val) if is_best(*best, val) => {
                        let _ = write!(m, " **{}** ★ |", fmt_val(x, val));
                    }
                    Some(val) => {
                        let _ = write!(m, " {} |", fmt_val(x, val));
                    }
                    None => {
                        let _ = write!(m, " {} |", missing_cell(data, x));
                    }
                }
            }
            m.push('\n');
        }
    }
    let multi: Vec<&Group> = groups.iter().filter(|g| g.members.len() > 1).collect();
    if !multi.is_empty() {
        m.push_str("\n### Settings at several seeds: mean [min, max] over seeds\n\n| Metric |");
        for g in &multi {
            let _ = write!(m, " {} ({} seeds) |", g.label, g.members.len());
        }
        m.push_str("\n|---|");
        for _ in &multi {
            m.push_str("---:|");
        }
        m.push('\n');
        for x in &metrics {
            let _ = write!(m, "| {} |", x.label);
            for g in &multi {
                match data.spread(g, x.key) {
                    Some(s) => {
                        let _ = write!(
                            m,
                            " {} [{}, {}] |",
                            fmt_val(x, s.mean),
                            fmt_val(x, s.min),
                            fmt_val(x, s.max)
                        );
                    }
                    None => {
                        let _ = write!(m, " {} |", missing_cell(data, x));
                    }
                }
            }
            m.push('\n');
        }
    }
    let _ = writeln!(m, "\n## {REFERENCE_TITLE}\n\n{REFERENCE_NOTE}\n");
    let _ = writeln!(m, "| {} |", REFERENCE_HEADER.join(" | "));
    let _ = writeln!(m, "|{}", "---|".repeat(REFERENCE_HEADER.len()));
    for row in REFERENCE_ROWS {
        let _ = writeln!(m, "| {} |", row.join(" | "));
    }
    m.push_str("\n## Plots\n\n");
    for p in plots {
        let _ = writeln!(
            m,
            "### {}\n\n![{}]({})\n\n{}\n",
            p.title, p.title, p.file, p.caption
        );
    }
    for n in missing_plot_notes(data, plots) {
        let _ = writeln!(m, "- {n}");
    }
    m.push_str("\n## Time per stage\n\n| Stage | Artifacts | Total | Longest unit |\n|---|---:|---:|---|\n");
    let mut total = 0.0;
    for (label, n, secs, longest) in time_rows(data) {
        total += secs;
        let _ = writeln!(
            m,
            "| {label} | {n} | {} | {} |",
            fmt_secs(secs),
            longest.map_or(String::new(), |(u, s)| format!("{u} ({})", fmt_secs(s)))
        );
    }
    let _ = writeln!(
        m,
        "| **all** | {} | **{}** | |",
        data.timings.len(),
        fmt_secs(total)
    );
    if !data.notes.is_empty() {
        m.push_str("\n## Problems reading the inputs\n\n");
        for n in &data.notes {
            let _ = writeln!(m, "- {n}");
        }
    }
    m
}
