//! `coact query`: SQL (DataFusion) over every Parquet table of the fresh
//! artifacts, each registered as `<stage>_<table>`.

use crate::config::Config;
use crate::pipeline::plan::status;
use crate::pipeline::plan::State;
use crate::pipeline::stage::Registry;
use crate::pipeline::store::Store;
use anyhow::{anyhow, Result};
use arrow::array::RecordBatch;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Json,
}

/// A table name and the Parquet files behind it.
pub struct TableSource {
    pub name: String,
    pub files: Vec<PathBuf>,
    pub rows: u64,
}

/// Tables of the fresh artifacts of every stage, by name.
pub fn fresh_tables(cfg: &Config, registry: &Registry) -> Result<Vec<TableSource>> {
    let store = Store::new(cfg.data_dir());
    let mut tables: BTreeMap<String, TableSource> = BTreeMap::new();
    for (p, state) in status(cfg, &store, registry)? {
        let stage = p.stage;
        if let State::Damaged(damage) = &state {
            eprintln!(
                "warning: {stage} {} is damaged ({}): its tables are left out; `coact run {stage}` rebuilds it",
                p.key,
                crate::pipeline::verify::summary(damage)
            );
        }
        if state != State::Fresh {
            continue;
        }
        let m = store.manifest(stage, &p.key)?;
        let dir = store.artifact_dir(stage, &p.key);
        for (table, entry) in &m.tables {
            let name = format!("{stage}_{table}");
            let t = tables.entry(name.clone()).or_insert(TableSource {
                name,
                files: vec![],
                rows: 0,
            });
            t.files.extend(entry.files.iter().map(|f| dir.join(f)));
            t.rows += entry.rows;
        }
    }
    Ok(tables.into_values().collect())
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .map_err(|e| anyhow!("cannot start the query runtime: {e}"))
}

async fn context(tables: &[TableSource]) -> Result<SessionContext> {
    let ctx = SessionContext::new();
    for t in tables {
        let paths: Vec<String> = t
            .files
            .iter()
            .map(|f| std::path::absolute(f).map(|p| p.to_string_lossy().to_string()))
            .collect::<std::io::Result<_>>()?;
        let df = ctx
            .read_parquet(paths, ParquetReadOptions::default())
            .await
            .map_err(|e| anyhow!("table {}: {e}", t.name))?;
        ctx.register_table(t.name.as_str(), df.into_view())?;
    }
    Ok(ctx)
}

/// Runs `sql` over `tables`; an error lists the tables that exist.
pub fn run_sql(tables: &[TableSource], sql: &str) -> Result<Vec<RecordBatch>> {
    let names = || {
        if tables.is_empty() {
            "none yet (run `coact run` first)".to_string()
        } else {
            tables
                .iter()
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    runtime()?.block_on(async {
        let ctx = context(tables).await?;
        let df = ctx
            .sql(sql)
            .await
            .map_err(|e| anyhow!("query failed: {e}\navailable tables: {}", names()))?;
        let schema = df.schema().inner().clone();
        let mut batches = df
            .collect()
            .await
            .map_err(|e| anyhow!("query failed: {e}"))?;
        // An empty result still has columns (and a CSV header).
        if batches.is_empty() {
            batches.push(RecordBatch::new_empty(schema));
        }
        Ok(batches)
    })
}

/// Column names and types of each table, for `coact query --tables`.
pub fn describe(tables: &[TableSource]) -> Result<String> {
    if tables.is_empty() {
        return Ok("no tables yet (run `coact run` first)\n".into());
    }
    runtime()?.block_on(async {
        let ctx = context(tables).await?;
        let mut out = String::new();
        for t in tables {
            let df = ctx.table(t.name.as_str()).await?;
            out.push_str(&format!("{} ({} rows)\n", t.name, t.rows));
            for f in df.schema().fields() {
                out.push_str(&format!("  {:<24} {}\n", f.name(), f.data_type()));
            }
        }
        Ok(out)
    })
}

pub fn format(batches: &[RecordBatch], format: Format) -> Result<String> {
    match format {
        Format::Table => {
            Ok(arrow::util::pretty::pretty_format_batches(batches)?.to_string() + "\n")
        }
        Format::Csv => {
            let mut buf = Vec::new();
            {
                let mut w = arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(&mut buf);
                for b in batches {
                    w.write(b)?;
                }
            }
            Ok(String::from_utf8(buf)?)
        }
        Format::Json => {
            let mut w = arrow::json::ArrayWriter::new(Vec::new());
            let refs: Vec<&RecordBatch> = batches.iter().collect();
            w.write_batches(&refs)?;
            w.finish()?;
            let mut s = String::from_utf8(w.into_inner())?;
            if s.is_empty() {
                s = "[]".into();
            }
            Ok(s + "\n")
        }
    }
}
