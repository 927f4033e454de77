//! Reads the train, compete and bench artifacts into a [`ReportData`].
//!
//! Column types are read generically (any integer or float type, any string
//! type), and a table that is missing or unreadable becomes a note on the
//! page rather than a failure: the report shows what there is. Each
//! benchmark summarises its own tables ([`Benchmark::summarise`]).

use super::{CurvePoint, ReportConfig, ReportData, Timing, VariantInfo};
use crate::artifacts::columns::opt_f64s;
pub use crate::artifacts::columns::{f64s, i64s, strs};
use crate::pipeline::benchmark::{Benchmark, Summary};
use crate::pipeline::estimate::wall_share;
use crate::pipeline::stage::Registry;
use crate::pipeline::store::{Manifest, Store};
use anyhow::{anyhow, bail, Result};
use arrow::array::RecordBatch;
use coact::sae::Architecture;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// The report's planned inputs of one stage: (unit, key) for every input
/// named `<prefix><unit>`.
fn units(inputs: &BTreeMap<String, String>, prefix: &str) -> Vec<(String, String)> {
    inputs
        .iter()
        .filter_map(|(name, key)| {
            name.strip_prefix(prefix)
                .map(|unit| (unit.to_string(), key.clone()))
        })
        .collect()
}

/// Reads the artifacts named by `inputs` (the report's planned inputs:
/// `train/<variant>`, `compete/<variant>`, `bench/<benchmark>/<variant>`),
/// the benchmarks in `registry` order.
pub fn collect(
    store: &Store,
    inputs: &BTreeMap<String, String>,
    study: &str,
    cfg: &ReportConfig,
    registry: &Registry,
) -> Result<ReportData> {
    let mut data = ReportData::new(study, registry);
    read_train(store, inputs, &mut data)?;

    // Competition statistics.
    let compete = units(inputs, "compete/");
    if compete.is_empty() {
        data.not_run.insert(
            "compete".into(),
            "no compete artifacts; the stage is not built in this version".into(),
        );
    }
    for (variant, key) in compete {
        if let Err(e) = super::compete::read_compete(store, &key, &variant, cfg, &mut data) {
            data.notes.push(format!("compete/{variant}: {e:#}"));
        }
    }

    let mut dense_probe: Vec<f64> = Vec::new();
    for bench in registry.benchmarks {
        read_benchmark(store, inputs, *bench, &mut data, &mut dense_probe);
    }
    if !dense_probe.is_empty() {
        data.dense_probe = Some(dense_probe.iter().sum::<f64>() / dense_probe.len() as f64);
    }
    data.timings = timings(store, inputs, &mut data.notes);
    Ok(data)
}

/// Variants and their training curves.
fn read_train(
    store: &Store,
    inputs: &BTreeMap<String, String>,
    data: &mut ReportData,
) -> Result<()> {
    for (variant, key) in units(inputs, "train/") {
        let m = store.manifest("train", &key)?;
        data.variants.push(variant_info(&variant, &m)?);
        match read_table(store, "train", &key, &m, "log").and_then(|b| train_curve(&b, &variant)) {
            Ok(c) => {
                data.train_curves.insert(variant.clone(), c);
            }
            Err(e) => data.notes.push(format!("train_log of {variant}: {e:#}")),
        }
    }
    if data.variants.is_empty() {
        bail!("the report needs trained variants: the plan gives it no train/<variant> input");
    }
    for (name, key) in units(inputs, "external/") {
        let m = store.manifest("external", &key)?;
        data.variants.push(external_info(&name, &m)?);
    }
    Ok(())
}

/// An SAE of bench.external as a variant of the tables (no training curve,
/// never a side of the verdicts).
fn external_info(name: &str, m: &Manifest) -> Result<VariantInfo> {
    let s = &m.summary;
    let kind = s["kind"]
        .as_str()
        .and_then(Architecture::from_name)
        .ok_or_else(|| anyhow!("external/{name} ({}): its summary has no kind", m.key))?;
    let k = s["sae_kind"]
        .as_object()
        .and_then(|o| o.values().next())
        .and_then(|v| v["k"].as_u64())
        .unwrap_or(0);
    Ok(VariantInfo {
        name: name.to_string(),
        kind,
        d_sae: s["d_sae"].as_u64().unwrap_or(0),
        k,
        l1_coeff: 0.0,
        groups: Vec::new(),
        ortho: "none".into(),
        lambda: 0.0,
        tau: 0.0,
        chunks: 0,
        seed: 0,
        b_dec_fixed: false,
        external: true,
    })
}

/// One benchmark's artifacts, each variant's tables summarised by the
/// benchmark into `data` (values and letters) and `dense_probe`.
fn read_benchmark(
    store: &Store,
    inputs: &BTreeMap<String, String>,
    bench: &dyn Benchmark,
    data: &mut ReportData,
    dense_probe: &mut Vec<f64>,
) {
    let name = bench.name();
    let runs = units(inputs, &format!("bench/{name}/"));
    if runs.is_empty() {
        data.not_run.insert(
            name.to_string(),
            format!("no bench/{name} artifacts; the benchmark is not built in this version"),
        );
        return;
    }
    for (variant, key) in runs {
        let m = match store.manifest("bench", &key) {
            Ok(m) => m,
            Err(e) => {
                data.notes.push(format!("bench/{name}/{variant}: {e:#}"));
                continue;
            }
        };
        if let Some(s) = bench.sample_size(&m.summary) {
            data.samples.entry(name.to_string()).or_insert(s);
        }
        let mut summary = Summary::default();
        let mut read_any = false;
        for table in bench.tables() {
            let res = read_table(store, "bench", &key, &m, table).and_then(|batches| {
                let batches = only_variant(batches, &variant)?;
                read_any = true;
                bench.summarise(table, &batches, &mut summary)
            });
            if let Err(e) = res {
                data.notes
                    .push(format!("bench_{table} of {variant}: {e:#}"));
            }
        }
        if read_any {
            data.values
                .entry(variant.clone())
                .or_default()
                .extend(summary.values);
        }
        if !summary.letters.is_empty() {
            data.absorption_letters
                .entry(variant.clone())
                .or_default()
                .extend(summary.letters);
        }
        dense_probe.extend(summary.dense_probe);
    }
}

fn variant_info(variant: &str, m: &Manifest) -> Result<VariantInfo> {
    let s = &m.config["sae"];
    if !s.is_object() {
        bail!(
            "train/{variant} ({}): its manifest has no config.sae settings",
            m.key
        );
    }
    let f = |k: &str| s[k].as_f64().unwrap_or(0.0);
    let u = |k: &str| s[k].as_u64().unwrap_or(0);
    let t = |k: &str| s[k].as_str().unwrap_or("").to_string();
    let kind = Architecture::from_name(&t("kind")).ok_or_else(|| {
        anyhow!(
            "train/{variant} ({}): config.sae.kind = {}: expected one of {}",
            m.key,
            s["kind"],
            Architecture::ALL.map(Architecture::name).join(", ")
        )
    })?;
    Ok(VariantInfo {
        name: variant.to_string(),
        kind,
        d_sae: u("d_sae"),
        k: u("k"),
        l1_coeff: f("l1_coeff"),
        groups: s["groups"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_u64()).collect())
            .unwrap_or_default(),
        ortho: t("ortho"),
        // Older artifacts stored these through f32: round back to 6 digits.
        lambda: round6(f("lambda")),
        tau: round6(f("tau")),
        chunks: u("chunks"),
        // Absent before the setting existed: trained.
        b_dec_fixed: s["b_dec"].as_str() == Some("fixed"),
        seed: u("seed"),
        external: false,
    })
}

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// Every batch of a table an artifact's manifest lists.
pub fn read_table(
    store: &Store,
    stage: &str,
    key: &str,
    m: &Manifest,
    table: &str,
) -> Result<Vec<RecordBatch>> {
    let entry = m.tables.get(table).ok_or_else(|| {
        anyhow!(
            "{stage}/{key} has no table '{table}' (it has: {})",
            m.tables.keys().cloned().collect::<Vec<_>>().join(", ")
        )
    })?;
    let dir = store.artifact_dir(stage, key);
    let mut out = Vec::new();
    for f in &entry.files {
        out.extend(crate::artifacts::parquet_io::read_all(&dir.join(f))?);
    }
    Ok(out)
}

/// Keeps the rows of one variant when the table has a variant column.
pub(super) fn only_variant(batches: Vec<RecordBatch>, variant: &str) -> Result<Vec<RecordBatch>> {
    let mut out = Vec::new();
    for b in batches {
        if b.column_by_name("variant").is_none() {
            out.push(b);
            continue;
        }
        let names = strs(&b, "variant")?;
        let mask: arrow::array::BooleanArray = names
            .iter()
            .map(|n| Some(n.as_deref() == Some(variant)))
            .collect();
        out.push(arrow::compute::filter_record_batch(&b, &mask)?);
    }
    Ok(out)
}

fn train_curve(batches: &[RecordBatch], variant: &str) -> Result<Vec<CurvePoint>> {
    let mut out = Vec::new();
    for b in only_variant(batches.to_vec(), variant)? {
        let tokens = f64s(&b, "tokens")?;
        let mse = f64s(&b, "mse")?;
        let l0 = opt_f64s(&b, "l0")?;
        let dead = opt_f64s(&b, "dead_fraction")?;
        for r in 0..b.num_rows() {
            if let (Some(t), Some(m)) = (tokens[r], mse[r]) {
                out.push(CurvePoint {
                    tokens: t,
                    mse: m,
                    l0: l0[r].unwrap_or(f64::NAN),
                    dead_fraction: dead[r].unwrap_or(f64::NAN),
                });
            }
        }
    }
    out.sort_by(|a, b| a.tokens.total_cmp(&b.tokens));
    Ok(out)
}

/// Every artifact upstream of the report, with its time, found by walking
/// the manifests' inputs (tokenize and extract through train, letters and
/// datasets through bench).
fn timings(
    store: &Store,
    inputs: &BTreeMap<String, String>,
    notes: &mut Vec<String>,
) -> Vec<Timing> {
    let mut seen: BTreeSet<(String, String)> = BTreeSet::new();
    let mut queue: VecDeque<(String, String)> =
        inputs.iter().map(|(n, k)| (n.clone(), k.clone())).collect();
    let mut out = Vec::new();
    while let Some((name, key)) = queue.pop_front() {
        let stage = name.split('/').next().unwrap_or(&name).to_string();
        if !seen.insert((stage.clone(), key.clone())) {
            continue;
        }
        match store.manifest(&stage, &key) {
            Ok(m) => {
                out.push(Timing {
                    stage,
                    unit: m.unit.clone(),
                    elapsed_s: m.elapsed_s,
                    wall_s: wall_share(&m, rayon::current_num_threads()),
                });
                queue.extend(m.inputs);
            }
            Err(e) => notes.push(format!("time of {name} ({key}): {e:#}")),
        }
    }
    out
}
