//! report.md: the same tables and verdicts as report.html, laid out in
//! Markdown from what [`super::sections`] computes, images linked.

use super::html::verdict_intro;
use super::plots::Plot;
use super::sections::*;
use super::{Group, ReportConfig, ReportData};
use std::fmt::Write;

/// report.md.
pub fn markdown(data: &ReportData, cfg: &ReportConfig, plots: &[Plot]) -> String {
    let _ = cfg;
    let mut m = String::new();
    let groups = data.groups();
    header(&mut m, data, &groups);
    verdicts(&mut m, data);
    comparison(&mut m, data, &groups);
    seed_groups(&mut m, data, &groups);
    reference(&mut m);
    plot_links(&mut m, data, plots);
    times(&mut m, data);
    if !data.notes.is_empty() {
        m.push_str("\n## Problems reading the inputs\n\n");
        for n in &data.notes {
            let _ = writeln!(m, "- {n}");
        }
    }
    m
}

/// A table cell's text with its pipes escaped.
fn cell_text(s: &str) -> String {
    s.replace('|', "\\|")
}

/// The title, the size of the study and what did not run.
fn header(m: &mut String, data: &ReportData, groups: &[Group]) {
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
}

/// The verdicts: the summary sentences, then each metric's comparisons.
fn verdicts(m: &mut String, data: &ReportData) {
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
    let cav = caveats(data);
    if !cav.is_empty() {
        m.push_str("\n### Sample sizes and caveats\n\n");
        for c in cav {
            let _ = writeln!(m, "- {c}");
        }
    }
    let rows = cos_by_c_rows(data, &data.groups());
    if !rows.is_empty() {
        m.push_str("\n### Mean |decoder cosine| of co-firing pairs, by c_ij (pairs per seed in brackets)\n\n| Setting |");
        for w in super::data::C_BINS.windows(2) {
            let _ = write!(m, " c_ij {:.2} to {:.2} |", w[0], w[1].min(1.0));
        }
        m.push_str("\n|---|");
        m.push_str(&"---|".repeat(super::data::C_BINS.len() - 1));
        m.push('\n');
        for (label, cells) in rows {
            let _ = write!(m, "| {label} |");
            for c in cells {
                match c {
                    Some((n, cos)) => {
                        let _ = write!(m, " {cos:.3} ({n:.0}) |");
                    }
                    None => m.push_str(" — |"),
                }
            }
            m.push('\n');
        }
    }
}

/// The comparison table, the best of each column in bold with ★.
fn comparison(m: &mut String, data: &ReportData, groups: &[Group]) {
    m.push_str("\n## Comparison across variants\n\nBest value per column in **bold** with ★.\n\n");
    let table = comparison_table(data, groups);
    m.push_str("| Variant | Setting | Seed |");
    for x in &table.metrics {
        let d = dir_mark(x.better);
        let d = if d.is_empty() {
            String::new()
        } else {
            format!(" {d}")
        };
        let _ = write!(m, " {}{d} |", x.label);
    }
    m.push_str("\n|---|---|---:|");
    for _ in &table.metrics {
        m.push_str("---:|");
    }
    m.push('\n');
    for (i, _, cells) in &table.rows {
        let v = &data.variants[*i];
        let _ = write!(
            m,
            "| {} | {} | {} |",
            v.name,
            cell_text(&v.describe()),
            v.seed
        );
        for cell in cells {
            let _ = match cell {
                Cell::Value { text, best: true } => write!(m, " **{text}** ★ |"),
                Cell::Value { text, best: false } => write!(m, " {text} |"),
                Cell::Missing(why) => write!(m, " {why} |"),
            };
        }
        m.push('\n');
    }
}

/// The settings at several seeds: mean [min, max] of each metric.
fn seed_groups(m: &mut String, data: &ReportData, groups: &[Group]) {
    let multi = multi_seed(groups);
    if multi.is_empty() {
        return;
    }
    m.push_str("\n### Settings at several seeds: mean [min, max] over seeds\n\n| Metric |");
    for g in &multi {
        let _ = write!(m, " {} ({} seeds) |", g.label, g.members.len());
    }
    m.push_str("\n|---|");
    for _ in &multi {
        m.push_str("---:|");
    }
    m.push('\n');
    for x in &shown_metrics(data) {
        let _ = write!(m, "| {} |", x.label);
        for g in &multi {
            let _ = match spread_cell(data, g, x) {
                Ok([mean, min, max]) => write!(m, " {mean} [{min}, {max}] |"),
                Err(why) => write!(m, " {why} |"),
            };
        }
        m.push('\n');
    }
}

/// SPEC.md's reference figures.
fn reference(m: &mut String) {
    let _ = writeln!(m, "\n## {REFERENCE_TITLE}\n\n{REFERENCE_NOTE}\n");
    let _ = writeln!(m, "| {} |", REFERENCE_HEADER.join(" | "));
    let _ = writeln!(m, "|{}", "---|".repeat(REFERENCE_HEADER.len()));
    for row in REFERENCE_ROWS {
        let _ = writeln!(m, "| {} |", row.join(" | "));
    }
}

/// The plots, linked, and why any is missing.
fn plot_links(m: &mut String, data: &ReportData, plots: &[Plot]) {
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
}

/// Time per stage.
fn times(m: &mut String, data: &ReportData) {
    m.push_str("\n## Time per stage\n\nA stage's total counts each unit at its share of the threads (two units at once count half their time each); the longest unit's time is its own.\n\n| Stage | Artifacts | Total | Longest unit |\n|---|---:|---:|---|\n");
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
}
