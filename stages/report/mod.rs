//! report stage: the study's comparison table in SAEBench's terms,
//! seed-aware verdicts, plots, feature dashboards and time per stage, as one
//! offline folder (report.html, report.md and PNGs beside them).
//!
//! `collect` reads the train, compete and bench artifacts into a plain
//! [`ReportData`] (the benchmarks summarise their own tables, see
//! [`crate::pipeline::benchmark::Benchmark::summarise`]); `render` writes the
//! page from it (tests build one by hand).

pub mod collect;
pub mod comparison;
pub mod compete;
pub mod data;
pub mod html;
pub mod markdown;
pub mod plots;
pub mod sections;
pub mod verdict;

pub use crate::config::ReportConfig;
pub use crate::pipeline::benchmark::{Better, MetricDef};
pub use data::*;
pub use verdict::*;

use crate::config::Config;
use crate::pipeline::stage::{Registry, Stage, Unit};
use crate::pipeline::stage::{StageInput, StageOutput};
use crate::pipeline::store::TableEntry;
use anyhow::{Context, Result};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;

/// The part of the config the report's key hashes.
pub fn key_config(cfg: &Config) -> Value {
    serde_json::to_value(&cfg.report).expect("serialisable")
}

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
    let md = markdown::markdown(data, cfg, &plots);
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
        &["train", "external", "compete", "bench"]
    }
    /// 3: the comparison's columns follow the benchmark registry; 4: verdict columns for every kind, sample sizes and caveats, the
    /// c_ij-binned cosine table, external SAEs as rows; 5: the time table's
    /// totals count each unit at its share of the threads.
    fn format_version(&self) -> u32 {
        5
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
    let data = collect::collect(
        input.store,
        &input.planned.inputs,
        &input.cfg.study,
        &rcfg,
        input.registry,
    )?;
    let rendered = render(&data, &rcfg, input.out_dir)?;
    let rows = comparison::write_comparison(&data, &input.out_dir.join("comparison.parquet"))?;
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

#[cfg(test)]
mod tests {
    use super::*;

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
