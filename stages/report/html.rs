//! report.html: one self-contained page (inline CSS, images beside it),
//! laid out section by section from what [`super::sections`] computes.

use super::plots::{group_colors, Plot};
use super::sections::*;
use super::{Group, LatentCard, Outcome, PairExample, ReportConfig, ReportData};
use std::collections::BTreeMap;
use std::fmt::Write;

const CSS: &str = include_str!("page.css");

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

pub fn verdict_intro(data: &ReportData) -> String {
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
    let others: Vec<String> = vg
        .against
        .iter()
        .map(|o| {
            let other = desc(&o.other, &o.name);
            match &o.guided {
                Some(g) if o.column.starts_with("Guided on") => {
                    format!("{} against {other}", desc(&Some(g.clone()), "guided"))
                }
                _ => other,
            }
        })
        .collect();
    let k = vg
        .guided
        .as_ref()
        .map(|g| data.variants[g.members[0]].k)
        .unwrap_or(0);
    format!(
        "{}, compared with: {}. Every kind keeps k = {k} latents: per token for TopK, on average over a training batch for the batch kinds (their learned inference threshold gives the L0 in the table).",
        desc(&vg.guided, "Guided orthogonality"),
        others.join("; ")
    )
}

/// What every section reads: the data, the config, the plots drawn, the
/// seed groups and their colours.
struct Page<'a> {
    data: &'a ReportData,
    cfg: &'a ReportConfig,
    plots: &'a [Plot],
    groups: Vec<Group>,
    colors: BTreeMap<String, (u8, u8, u8)>,
}

impl Page<'_> {
    /// The colour dot of a variant's seed group.
    fn swatch(&self, name: &str) -> String {
        group_of(&self.groups, self.data, name)
            .and_then(|g| self.colors.get(&g.key))
            .map(|c| {
                format!(
                    "<span class=\"sw\" style=\"background:{}\"></span>",
                    hex(*c)
                )
            })
            .unwrap_or_default()
    }
}

/// The HTML page.
pub fn page(data: &ReportData, cfg: &ReportConfig, plots: &[Plot]) -> String {
    let p = Page {
        data,
        cfg,
        plots,
        groups: data.groups(),
        colors: group_colors(data),
    };
    let mut h = String::new();
    for section in [
        header,
        verdicts,
        comparison,
        seed_groups,
        reference,
        competition,
        plot_figures,
        dashboards,
        times,
        notes,
    ] {
        section(&mut h, &p);
    }
    h.push_str("</main>\n</body>\n</html>\n");
    h
}

/// The head, the title, the navigation and what did not run.
fn header(h: &mut String, p: &Page) {
    let data = p.data;
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
        p.groups.len(),
        p.groups.iter().filter(|g| g.members.len() > 1).count()
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
}

/// Does guided orthogonality help: the verdicts against the baseline and uniform.
fn verdicts(h: &mut String, p: &Page) {
    let data = p.data;
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
        h.push_str("<div class=\"scroll\"><table class=\"verdicts\">\n<thead><tr><th class=\"name\">Metric</th><th class=\"name\">Direction</th>");
        for o in &data.verdict_groups().against {
            let _ = write!(h, "<th class=\"name\">{}</th>", esc(&o.column));
        }
        h.push_str("</tr></thead>\n<tbody>\n");
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
    let cav = caveats(data);
    if !cav.is_empty() {
        h.push_str("<h3>Sample sizes and caveats</h3>\n<ul class=\"small\">\n");
        for c in cav {
            let _ = writeln!(h, "<li>{}</li>", esc(&c));
        }
        h.push_str("</ul>\n");
    }
}

/// The comparison table: one row per variant, the best of each column marked.
fn comparison(h: &mut String, p: &Page) {
    let data = p.data;
    let table = comparison_table(data, &p.groups);
    if let Some(w) = scr_noise_warning(data) {
        let _ = writeln!(h, "<p class=\"notrun\"><b>{}</b></p>", esc(&w));
    }
    h.push_str("<h2 id=\"comparison\">Comparison across variants</h2>\n");
    h.push_str("<p>One row per trained SAE. Column headers say which way is better; the best value of each column is marked <span style=\"background:var(--best);color:var(--bestfg);font-weight:700;padding:0 4px\">★</span> (all tied values are marked). Hover a header for its definition. Rows of the same setting at different seeds are adjacent and share a colour dot.</p>\n");
    h.push_str("<div class=\"scroll\"><table class=\"cmp\" id=\"comparison-table\">\n<thead><tr><th class=\"name\">Variant</th><th>Seed</th>");
    for m in &table.metrics {
        let _ = write!(h, "<th title=\"{}\">{}</th>", esc(m.help), esc(m.label));
    }
    h.push_str("</tr>\n<tr class=\"dir\"><th class=\"name\"></th><th></th>");
    for m in &table.metrics {
        let _ = write!(h, "<th>{}</th>", dir_mark(m.better));
    }
    h.push_str("</tr></thead>\n<tbody>\n");
    for (i, starts_group, cells) in &table.rows {
        let v = &data.variants[*i];
        let cls = if *starts_group {
            " class=\"groupstart\""
        } else {
            ""
        };
        let _ = write!(
            h,
            "<tr{cls} data-variant=\"{}\"><td class=\"name\" title=\"{}\">{}{}</td><td>{}</td>",
            esc(&v.name),
            esc(&v.describe()),
            p.swatch(&v.name),
            esc(&v.name),
            v.seed
        );
        for (m, cell) in table.metrics.iter().zip(cells) {
            let (class, text) = match cell {
                Cell::Value { text, best } => {
                    (if *best { " class=\"best\"" } else { "" }, text.as_str())
                }
                Cell::Missing(why) => (" class=\"na\"", *why),
            };
            let _ = write!(
                h,
                "<td data-variant=\"{}\" data-metric=\"{}\"{class}>{text}</td>",
                esc(&v.name),
                m.key,
            );
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</tbody></table></div>\n");
    if let Some(d) = data.dense_probe {
        let _ = writeln!(
            h,
            "<p class=\"small muted\">Sparse probing's dense reference: a logistic-regression probe on the model's own activations reaches {d:.3} test accuracy (mean over datasets and tasks).</p>"
        );
    }
}

/// The settings trained at several seeds: each metric's mean and seed range.
fn seed_groups(h: &mut String, p: &Page) {
    let data = p.data;
    let multi = multi_seed(&p.groups);
    if multi.is_empty() {
        return;
    }
    // One row per metric, one column per setting: fits however many metrics.
    h.push_str("<h3>Settings trained at several seeds: mean and seed range</h3>\n<p class=\"small muted\">Each cell: the mean over seeds, then the range (minimum – maximum) over seeds.</p>\n");
    h.push_str("<div class=\"scroll\"><table class=\"cmp seeds\">\n<thead><tr><th class=\"name\">Metric</th>");
    for g in &multi {
        let _ = write!(
            h,
            "<th>{}{} <span class=\"muted\">({} seeds)</span><br><span class=\"small muted\">{}</span></th>",
            p.swatch(&data.variants[g.members[0]].name),
            esc(&g.label),
            g.members.len(),
            esc(&data.variants[g.members[0]].describe())
        );
    }
    h.push_str("</tr></thead>\n<tbody>\n");
    for m in &shown_metrics(data) {
        let _ = write!(
            h,
            "<tr><td class=\"name\" title=\"{}\">{} <span class=\"muted small\">{}</span></td>",
            esc(m.help),
            esc(m.label),
            dir_mark(m.better)
        );
        for g in &multi {
            match spread_cell(data, g, m) {
                Ok([mean, min, max]) => {
                    let _ = write!(
                        h,
                        "<td>{mean} <span class=\"small muted\">({min} – {max})</span></td>"
                    );
                }
                Err(why) => {
                    let _ = write!(h, "<td class=\"na\">{why}</td>");
                }
            }
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</tbody></table></div>\n");
}

/// SPEC.md's reference figures (another model and scale).
fn reference(h: &mut String, _: &Page) {
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
}

/// Mean |decoder cosine| of co-firing pairs by c_ij, one row per setting:
/// whether a kind's push (OrtSAE's uniform one, guided's targeted one)
/// separates the pairs that co-fire most.
fn cos_by_c_table(h: &mut String, p: &Page) {
    let rows = cos_by_c_rows(p.data, &p.groups);
    if rows.is_empty() {
        return;
    }
    h.push_str("<p>Every setting's co-firing pairs, binned by c_ij: per bin the mean |cos| of their decoder directions and, in brackets, the pairs per seed. Lower |cos| in the right-hand bins means the dictionary separates the latents that compete most.</p>\n");
    h.push_str("<div class=\"scroll\"><table>\n<thead><tr><th class=\"name\">Setting</th>");
    let b = super::data::C_BINS;
    for w in b.windows(2) {
        let _ = write!(h, "<th>c_ij {:.2} to {:.2}</th>", w[0], w[1].min(1.0));
    }
    h.push_str("</tr></thead>\n<tbody>\n");
    for (label, cells) in rows {
        let _ = write!(h, "<tr><td class=\"name\">{}</td>", esc(&label));
        for c in cells {
            match c {
                Some((n, cos)) => {
                    let _ = write!(
                        h,
                        "<td>{cos:.3} <span class=\"detail\">({n:.0})</span></td>"
                    );
                }
                None => h.push_str("<td>—</td>"),
            }
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</tbody></table></div>\n");
}

/// The competition summary at the report's tau.
fn competition(h: &mut String, p: &Page) {
    let data = p.data;
    let cfg = p.cfg;
    h.push_str("<h2 id=\"competition\">Competition on the eval tokens</h2>\n");
    cos_by_c_table(h, p);
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
                p.swatch(&v.name),
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
}

/// The plots, and why any is missing.
fn plot_figures(h: &mut String, p: &Page) {
    let data = p.data;
    let plots = p.plots;
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
}

/// The feature dashboards: per variant, its top competing pairs and a card
/// per chosen latent, the verdicts' guided and baseline variants open.
fn dashboards(h: &mut String, p: &Page) {
    let data = p.data;
    h.push_str("<h2 id=\"dashboards\">Feature dashboards</h2>\n");
    if data.dashboards.is_empty() {
        let why = data
            .not_run
            .get("compete")
            .cloned()
            .unwrap_or_else(|| "no compete_top_contexts rows".into());
        let _ = writeln!(h, "<p class=\"notrun\">Not run: {}.</p>", esc(&why));
        return;
    }
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
        let _ = writeln!(
            h,
            "<details{}><summary>{}{} <span class=\"muted small\">({}; {} latents)</span></summary>",
            if open.contains(&v.name.as_str()) { " open" } else { "" },
            p.swatch(&v.name),
            esc(&v.name),
            esc(&v.describe()),
            cards.len()
        );
        if let Some(pairs) = data.pair_examples.get(&v.name).filter(|p| !p.is_empty()) {
            pair_table(h, pairs);
        }
        for c in cards {
            latent_card(h, c);
        }
        h.push_str("</details>\n");
    }
}

/// A variant's top competing pairs, a context where both fire each.
fn pair_table(h: &mut String, pairs: &[PairExample]) {
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

/// One latent: its top contexts beside its strongest competitors.
fn latent_card(h: &mut String, c: &LatentCard) {
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

/// Time per stage, and every artifact's time.
fn times(h: &mut String, p: &Page) {
    let data = p.data;
    h.push_str("<h2 id=\"time\">Time per stage</h2>\n");
    h.push_str("<p class=\"small muted\">From each artifact's manifest: the wall time of the run that made it (an artifact served from the cache keeps the time of its original run). A stage's total counts each unit at its share of the threads (two units at once count half their time each), so it is the stage's share of the run's wall time; a unit's own time is its elapsed time. The report's own time is in its manifest.</p>\n");
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
}

/// Definitions, the seed rule, warnings and problems reading the inputs.
fn notes(h: &mut String, p: &Page) {
    let data = p.data;
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
    h.push_str("</ul>\n");
    if !data.notes.is_empty() {
        h.push_str("<h3>Problems reading the inputs</h3>\n<ul class=\"small notrun\">\n");
        for n in &data.notes {
            let _ = writeln!(h, "<li>{}</li>", esc(n));
        }
        h.push_str("</ul>\n");
    }
}
