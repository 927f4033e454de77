//! Reads the train, compete and bench artifacts into a [`ReportData`].
//!
//! Column types are read generically (any integer or float type, any string
//! type), and a table that is missing or unreadable becomes a note on the
//! page rather than a failure: the report shows what there is.

use super::{
    CompetitionSummary, Competitor, ContextRow, CurvePoint, LatentCard, PairExample, ReportConfig,
    ReportData, Timing, VariantInfo,
};
use crate::pipeline::store::{Manifest, Store};
use anyhow::{anyhow, bail, Context, Result};
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// The benchmarks the report reads, with the tables each one writes.
pub const BENCH_TABLES: &[(&str, &[&str])] = &[
    ("core", &["core"]),
    ("absorption", &["absorption"]),
    ("sparse_probing", &["sparse_probing"]),
    ("scr_tpp", &["scr", "tpp"]),
];

/// Reads the artifacts named by `inputs` (the report's planned inputs:
/// `train/<variant>`, `compete/<variant>`, `bench/<benchmark>/<variant>`).
pub fn collect(
    store: &Store,
    inputs: &BTreeMap<String, String>,
    study: &str,
    cfg: &ReportConfig,
) -> Result<ReportData> {
    let mut data = ReportData {
        study: study.to_string(),
        ..Default::default()
    };
    let units = |prefix: &str| -> Vec<(String, String)> {
        inputs
            .iter()
            .filter_map(|(name, key)| {
                name.strip_prefix(prefix)
                    .map(|unit| (unit.to_string(), key.clone()))
            })
            .collect()
    };

    // Variants and their training curves.
    for (variant, key) in units("train/") {
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

    // Competition statistics.
    let compete = units("compete/");
    if compete.is_empty() {
        data.not_run.insert(
            "compete".into(),
            "no compete artifacts; the stage is not built in this version".into(),
        );
    }
    for (variant, key) in compete {
        if let Err(e) = read_compete(store, &key, &variant, cfg, &mut data) {
            data.notes.push(format!("compete/{variant}: {e:#}"));
        }
    }

    // Benchmarks.
    let mut probe_dense: Vec<f64> = Vec::new();
    for (bench, tables) in BENCH_TABLES {
        let runs = units(&format!("bench/{bench}/"));
        if runs.is_empty() {
            data.not_run.insert(
                bench.to_string(),
                format!("no bench/{bench} artifacts; the benchmark is not built in this version"),
            );
            continue;
        }
        for (variant, key) in runs {
            let m = match store.manifest("bench", &key) {
                Ok(m) => m,
                Err(e) => {
                    data.notes.push(format!("bench/{bench}/{variant}: {e:#}"));
                    continue;
                }
            };
            for table in *tables {
                let res = read_table(store, "bench", &key, &m, table).and_then(|batches| {
                    let batches = only_variant(batches, &variant)?;
                    let vals = data.values.entry(variant.clone()).or_default();
                    match *table {
                        "core" => read_core(&batches, vals),
                        "absorption" => {
                            let letters =
                                data.absorption_letters.entry(variant.clone()).or_default();
                            read_absorption(&batches, vals, letters)
                        }
                        "sparse_probing" => read_probing(&batches, vals, &mut probe_dense),
                        "scr" => read_scr(&batches, vals),
                        "tpp" => read_tpp(&batches, vals),
                        _ => Ok(()),
                    }
                });
                if let Err(e) = res {
                    data.notes
                        .push(format!("bench_{table} of {variant}: {e:#}"));
                }
            }
        }
    }
    if !probe_dense.is_empty() {
        data.dense_probe = Some(probe_dense.iter().sum::<f64>() / probe_dense.len() as f64);
    }
    data.absorption_letters.retain(|_, l| !l.is_empty());
    data.timings = timings(store, inputs, &mut data.notes);
    Ok(data)
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
    Ok(VariantInfo {
        name: variant.to_string(),
        kind: t("kind"),
        d_sae: u("d_sae"),
        k: u("k"),
        l1_coeff: f("l1_coeff"),
        ortho: t("ortho"),
        // Older artifacts stored these through f32: round back to 6 digits.
        lambda: round6(f("lambda")),
        tau: round6(f("tau")),
        seed: u("seed"),
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
fn only_variant(batches: Vec<RecordBatch>, variant: &str) -> Result<Vec<RecordBatch>> {
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

// ---------------------------------------------------------------- generic columns

fn column<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a arrow::array::ArrayRef> {
    b.column_by_name(name).ok_or_else(|| {
        anyhow!(
            "no column '{name}' (columns: {})",
            b.schema()
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    })
}

/// Any numeric column as f64.
pub fn f64s(b: &RecordBatch, name: &str) -> Result<Vec<Option<f64>>> {
    let c = cast(column(b, name)?, &DataType::Float64)
        .with_context(|| format!("column '{name}' is not numeric"))?;
    let a = c.as_primitive::<Float64Type>();
    Ok((0..a.len())
        .map(|i| a.is_valid(i).then(|| a.value(i)))
        .collect())
}

/// Any integer (or whole float) column as i64.
pub fn i64s(b: &RecordBatch, name: &str) -> Result<Vec<Option<i64>>> {
    let col = column(b, name)?;
    let c = if col.data_type().is_floating() {
        cast(&cast(col, &DataType::Float64)?, &DataType::Int64)?
    } else {
        cast(col, &DataType::Int64).with_context(|| format!("column '{name}' is not an integer"))?
    };
    let a = c.as_primitive::<Int64Type>();
    Ok((0..a.len())
        .map(|i| a.is_valid(i).then(|| a.value(i)))
        .collect())
}

/// Any string (or dictionary of strings) column.
pub fn strs(b: &RecordBatch, name: &str) -> Result<Vec<Option<String>>> {
    let c = cast(column(b, name)?, &DataType::Utf8)
        .with_context(|| format!("column '{name}' is not text"))?;
    let a = c.as_string::<i32>();
    Ok((0..a.len())
        .map(|i| a.is_valid(i).then(|| a.value(i).to_string()))
        .collect())
}

/// A column that may be absent: all None then.
fn opt_f64s(b: &RecordBatch, name: &str) -> Result<Vec<Option<f64>>> {
    if b.column_by_name(name).is_none() {
        return Ok(vec![None; b.num_rows()]);
    }
    f64s(b, name)
}

fn opt_i64s(b: &RecordBatch, name: &str) -> Result<Vec<Option<i64>>> {
    if b.column_by_name(name).is_none() {
        return Ok(vec![None; b.num_rows()]);
    }
    i64s(b, name)
}

fn opt_strs(b: &RecordBatch, name: &str) -> Result<Vec<Option<String>>> {
    if b.column_by_name(name).is_none() {
        return Ok(vec![None; b.num_rows()]);
    }
    strs(b, name)
}

fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

// ---------------------------------------------------------------- tables

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

fn read_core(batches: &[RecordBatch], vals: &mut BTreeMap<String, f64>) -> Result<()> {
    for b in batches {
        let metric = strs(b, "metric")?;
        let value = f64s(b, "value")?;
        for (m, v) in metric.into_iter().zip(value) {
            if let (Some(m), Some(v)) = (m, v) {
                vals.insert(m, v);
            }
        }
    }
    Ok(())
}

fn read_absorption(
    batches: &[RecordBatch],
    vals: &mut BTreeMap<String, f64>,
    letters: &mut BTreeMap<String, f64>,
) -> Result<()> {
    for b in batches {
        let letter = opt_strs(b, "letter")?;
        let metric = strs(b, "metric")?;
        let value = f64s(b, "value")?;
        for r in 0..b.num_rows() {
            let (Some(m), Some(v)) = (&metric[r], value[r]) else {
                continue;
            };
            match (&letter[r], m.as_str()) {
                (None, "mean_absorption_fraction") => {
                    vals.insert("absorption".into(), v);
                }
                (None, "mean_full_absorption_rate") => {
                    vals.insert("full_absorption".into(), v);
                }
                (None, other) => {
                    vals.insert(format!("absorption_{other}"), v);
                }
                (Some(l), "absorption_fraction") => {
                    letters.insert(l.clone(), v);
                }
                _ => {}
            }
        }
    }
    // Without the overall row, the mean over letters is the same definition.
    if !vals.contains_key("absorption") && !letters.is_empty() {
        let v: Vec<f64> = letters.values().copied().collect();
        vals.insert("absorption".into(), mean(&v).unwrap_or(f64::NAN));
    }
    Ok(())
}

fn read_probing(
    batches: &[RecordBatch],
    vals: &mut BTreeMap<String, f64>,
    dense: &mut Vec<f64>,
) -> Result<()> {
    let mut by_k: BTreeMap<i64, Vec<f64>> = BTreeMap::new();
    for b in batches {
        let k = opt_i64s(b, "k")?;
        let metric = strs(b, "metric")?;
        let value = f64s(b, "value")?;
        for r in 0..b.num_rows() {
            let (Some(m), Some(v)) = (&metric[r], value[r]) else {
                continue;
            };
            match (m.as_str(), k[r]) {
                ("sae_test_accuracy", Some(k)) => by_k.entry(k).or_default().push(v),
                ("llm_test_accuracy", None) => dense.push(v),
                _ => {}
            }
        }
    }
    for k in [1, 2, 5] {
        if let Some(v) = by_k.get(&k).and_then(|v| mean(v)) {
            vals.insert(format!("probe_top{k}"), v);
        }
    }
    Ok(())
}

/// SCR at N = 10 and 20, averaged over datasets and seeds: SAEBench's
/// headline (`scr_metric` rows: the direction SAEBench selects) when the
/// table has it, else the mean of `scr` over both directions.
fn read_scr(batches: &[RecordBatch], vals: &mut BTreeMap<String, f64>) -> Result<()> {
    let mut rows: Vec<(bool, i64, f64)> = Vec::new();
    let (mut oracle, mut biased) = (Vec::new(), Vec::new());
    for b in batches {
        let n = i64s(b, "n")?;
        let metric = strs(b, "metric")?;
        let value = f64s(b, "value")?;
        for r in 0..b.num_rows() {
            match (metric[r].as_deref(), value[r]) {
                (Some("a_oracle"), Some(v)) => oracle.push(v),
                (Some("a_biased"), Some(v)) => biased.push(v),
                _ => {}
            }
            let headline = match metric[r].as_deref() {
                Some("scr_metric") => true,
                Some("scr") => false,
                _ => continue,
            };
            if let (Some(n), Some(v)) = (n[r], value[r]) {
                rows.push((headline, n, v));
            }
        }
    }
    let has_headline = rows.iter().any(|r| r.0);
    for n in [10, 20] {
        let v: Vec<f64> = rows
            .iter()
            .filter(|r| r.1 == n && r.0 == has_headline)
            .map(|r| r.2)
            .collect();
        if let Some(m) = mean(&v) {
            vals.insert(format!("scr_{n}"), m);
        }
    }
    // SCR divides by A_oracle - A_biased: when that gap is tiny the
    // spurious signal is barely decodable and SCR is mostly noise.
    if let (Some(o), Some(b)) = (mean(&oracle), mean(&biased)) {
        vals.insert(super::SCR_GAP.to_string(), o - b);
    }
    Ok(())
}

fn read_tpp(batches: &[RecordBatch], vals: &mut BTreeMap<String, f64>) -> Result<()> {
    let mut by: BTreeMap<(String, i64), Vec<f64>> = BTreeMap::new();
    for b in batches {
        let n = i64s(b, "n")?;
        let metric = strs(b, "metric")?;
        let value = f64s(b, "value")?;
        for r in 0..b.num_rows() {
            if let (Some(m), Some(n), Some(v)) = (&metric[r], n[r], value[r]) {
                by.entry((m.clone(), n)).or_default().push(v);
            }
        }
    }
    for n in [10, 20] {
        if let Some(v) = by.get(&("tpp_total".to_string(), n)).and_then(|v| mean(v)) {
            vals.insert(format!("tpp_{n}"), v);
        }
        for part in ["tpp_intended_drop", "tpp_unintended_drop"] {
            if let Some(v) = by.get(&(part.to_string(), n)).and_then(|v| mean(v)) {
                vals.insert(format!("{part}_{n}"), v);
            }
        }
    }
    Ok(())
}

fn read_compete(
    store: &Store,
    key: &str,
    variant: &str,
    cfg: &ReportConfig,
    data: &mut ReportData,
) -> Result<()> {
    let m = store.manifest("compete", key)?;
    let tau = cfg.histogram_tau;
    let mut table = |name: &str| -> Option<Vec<RecordBatch>> {
        match read_table(store, "compete", key, &m, name).and_then(|b| only_variant(b, variant)) {
            Ok(b) => Some(b),
            Err(e) => {
                data.notes
                    .push(format!("compete_{name} of {variant}: {e:#}"));
                None
            }
        }
    };
    let summary = table("summary");
    let pairs = table("pairs");
    let latents = table("latents");
    let contexts = table("top_contexts");
    let examples = if cfg.dashboard_pairs > 0 {
        table("examples")
    } else {
        None
    };

    if let Some(batches) = summary {
        let mut rows: Vec<CompetitionSummary> = Vec::new();
        for b in &batches {
            let t = f64s(b, "tau")?;
            let cols: Vec<Vec<Option<f64>>> = [
                "competing_pairs",
                "mean_abs_cos_competing",
                "mean_abs_cos_random",
                "share_cos_over_0_3",
                "share_random_cos_over_0_3",
                "latents_without_competitor",
            ]
            .iter()
            .map(|c| opt_f64s(b, c))
            .collect::<Result<_>>()?;
            for r in 0..b.num_rows() {
                let Some(t) = t[r] else { continue };
                rows.push(CompetitionSummary {
                    tau: t,
                    competing_pairs: cols[0][r],
                    mean_abs_cos_competing: cols[1][r],
                    mean_abs_cos_random: cols[2][r],
                    share_cos_over_0_3: cols[3][r],
                    share_random_cos_over_0_3: cols[4][r],
                    latents_without_competitor: cols[5][r],
                });
            }
        }
        // The row at the report's tau, else the nearest one.
        if let Some(best) = rows
            .into_iter()
            .min_by(|a, b| (a.tau - tau).abs().total_cmp(&(b.tau - tau).abs()))
        {
            data.competition.insert(variant.to_string(), best);
        }
    }

    // Pairs: decoder cosines of competing pairs, and each latent's competitors.
    let mut pair_rows: Vec<(i64, i64, f64, f64, Option<f64>)> = Vec::new();
    if let Some(batches) = pairs {
        for b in &batches {
            let i = i64s(b, "i")?;
            let j = i64s(b, "j")?;
            let c = f64s(b, "c_ij")?;
            let d = f64s(b, "dec_cos")?;
            let co = opt_f64s(b, "cofirings")?;
            for r in 0..b.num_rows() {
                if let (Some(i), Some(j), Some(c), Some(d)) = (i[r], j[r], c[r], d[r]) {
                    pair_rows.push((i, j, c, d, co[r]));
                }
            }
        }
        data.competing_cos.insert(
            variant.to_string(),
            pair_rows
                .iter()
                .filter(|p| p.2 >= tau - 1e-12)
                .map(|p| p.3)
                .collect(),
        );
    }

    // One example context per top competing pair, in pair_rank order.
    if let Some(batches) = examples {
        let mut rows: Vec<(i64, PairExample)> = Vec::new();
        for b in &batches {
            let rank = opt_i64s(b, "pair_rank")?;
            let i = i64s(b, "i")?;
            let j = i64s(b, "j")?;
            let c = opt_f64s(b, "c_ij")?;
            let ai = opt_f64s(b, "act_i")?;
            let aj = opt_f64s(b, "act_j")?;
            let ctx = strs(b, "context")?;
            for r in 0..b.num_rows() {
                let (Some(i), Some(j), Some(text)) = (i[r], j[r], &ctx[r]) else {
                    continue;
                };
                let pr = rank[r].unwrap_or(i64::MAX);
                if rows.iter().any(|(rk, p)| *rk == pr && p.i == i && p.j == j) {
                    continue;
                }
                let dec_cos = pair_rows
                    .iter()
                    .find(|p| (p.0 == i && p.1 == j) || (p.0 == j && p.1 == i))
                    .map(|p| p.3);
                rows.push((
                    pr,
                    PairExample {
                        i,
                        j,
                        c_ij: c[r].unwrap_or(f64::NAN),
                        dec_cos,
                        act_i: ai[r],
                        act_j: aj[r],
                        context: text.clone(),
                    },
                ));
            }
        }
        rows.sort_by_key(|r| r.0);
        rows.truncate(cfg.dashboard_pairs);
        data.pair_examples
            .insert(variant.to_string(), rows.into_iter().map(|r| r.1).collect());
    }

    // Per-latent statistics at the report's tau (frequency and max activation
    // do not depend on it; any row will do when that tau is absent).
    let mut stats: BTreeMap<i64, (Option<f64>, Option<f64>, f64)> = BTreeMap::new();
    if let Some(batches) = latents {
        for b in &batches {
            let l = i64s(b, "latent")?;
            let t = opt_f64s(b, "tau")?;
            let f = opt_f64s(b, "frequency")?;
            let mx = opt_f64s(b, "max_act")?;
            for r in 0..b.num_rows() {
                let Some(l) = l[r] else { continue };
                let dist = t[r].map(|t| (t - tau).abs()).unwrap_or(0.0);
                let e = stats.entry(l).or_insert((f[r], mx[r], dist));
                if dist < e.2 {
                    *e = (f[r], mx[r], dist);
                }
            }
        }
    }

    if let Some(batches) = contexts {
        // (latent, reason, (rank, context) rows), in the table's order.
        type Latent = (i64, String, Vec<(i64, ContextRow)>);
        let mut by_latent: Vec<Latent> = Vec::new();
        for b in &batches {
            let l = i64s(b, "latent")?;
            let reason = opt_strs(b, "reason")?;
            let rank = opt_i64s(b, "rank")?;
            let act = opt_f64s(b, "activation")?;
            let ctx = strs(b, "context")?;
            for r in 0..b.num_rows() {
                let (Some(l), Some(c)) = (l[r], &ctx[r]) else {
                    continue;
                };
                let row = ContextRow {
                    activation: act[r].unwrap_or(f64::NAN),
                    context: c.clone(),
                };
                let rk = rank[r].unwrap_or(i64::MAX);
                match by_latent.iter_mut().find(|e| e.0 == l) {
                    Some(e) => e.2.push((rk, row)),
                    None => by_latent.push((
                        l,
                        reason[r].clone().unwrap_or_else(|| "?".into()),
                        vec![(rk, row)],
                    )),
                }
            }
        }
        // Half the latents from the most-competing, the rest random (either
        // fills in when the other runs short).
        let want = cfg.dashboard_latents;
        let competing: Vec<usize> = (0..by_latent.len())
            .filter(|&i| by_latent[i].1 == "competing")
            .collect();
        let others: Vec<usize> = (0..by_latent.len())
            .filter(|&i| by_latent[i].1 != "competing")
            .collect();
        let n_comp = want.div_ceil(2).min(competing.len());
        let n_other = (want - n_comp).min(others.len());
        let n_comp = (want - n_other).min(competing.len());
        let chosen: Vec<usize> = competing[..n_comp]
            .iter()
            .chain(&others[..n_other])
            .copied()
            .collect();
        let mut cards = Vec::new();
        for i in chosen {
            let (latent, reason, mut rows) = by_latent[i].clone();
            rows.sort_by(|a, b| {
                a.0.cmp(&b.0)
                    .then(b.1.activation.total_cmp(&a.1.activation))
            });
            let mut comps: Vec<Competitor> = pair_rows
                .iter()
                .filter(|p| p.0 == latent || p.1 == latent)
                .map(|p| Competitor {
                    latent: if p.0 == latent { p.1 } else { p.0 },
                    c_ij: p.2,
                    dec_cos: p.3,
                    cofirings: p.4,
                })
                .collect();
            comps.sort_by(|a, b| b.c_ij.total_cmp(&a.c_ij));
            comps.truncate(cfg.dashboard_competitors);
            let st = stats.get(&latent);
            cards.push(LatentCard {
                latent,
                reason,
                frequency: st.and_then(|s| s.0),
                max_act: st.and_then(|s| s.1),
                contexts: rows
                    .into_iter()
                    .take(cfg.dashboard_contexts)
                    .map(|r| r.1)
                    .collect(),
                competitors: comps,
            });
        }
        data.dashboards.insert(variant.to_string(), cards);
    }
    Ok(())
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
                });
                queue.extend(m.inputs);
            }
            Err(e) => notes.push(format!("time of {name} ({key}): {e:#}")),
        }
    }
    out
}
