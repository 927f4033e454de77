//! compete's tables: the column helpers, the writer that records each table
//! in the stage's output, and the builders of compete_latents, compete_pairs
//! and compete_summary.

use super::{Cosines, EvalRows};
use crate::config::CompeteConfig;
use crate::pipeline::store::TableEntry;
use anyhow::Result;
use arrow::array::{ArrayRef, Float32Array, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{Field, Schema};
use coact::competition::{pair_cosines, random_pairs, FiringIndex, LatentStats, Pair};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// The |cos| above which a pair counts as aligned in compete_summary.
const COS_SHARE: f64 = 0.3;

/// Writes each table as `<name>.parquet` in the output folder and records it
/// for the stage's manifest.
pub(super) struct TableWriter<'a> {
    out: &'a Path,
    pub(super) tables: BTreeMap<String, TableEntry>,
}

impl<'a> TableWriter<'a> {
    pub(super) fn new(out: &'a Path) -> Self {
        TableWriter {
            out,
            tables: BTreeMap::new(),
        }
    }

    pub(super) fn put(&mut self, name: &str, batch: RecordBatch) -> Result<()> {
        let file = format!("{name}.parquet");
        let rows = crate::artifacts::parquet_io::write_all(&self.out.join(&file), &[batch])?;
        self.tables.insert(
            name.to_string(),
            TableEntry {
                files: vec![file],
                rows,
            },
        );
        Ok(())
    }
}

/// compete_latents: one row per latent and configured tau.
pub(super) fn latents(unit: &str, stats: &[LatentStats], cos: &Cosines) -> Result<RecordBatch> {
    let rows_n = stats.len() * cos.competitors.len();
    let mut latent = Vec::with_capacity(rows_n);
    let mut tau = Vec::with_capacity(rows_n);
    let mut fired = Vec::with_capacity(rows_n);
    let mut freq = Vec::with_capacity(rows_n);
    let mut mean = Vec::with_capacity(rows_n);
    let mut max = Vec::with_capacity(rows_n);
    let mut count = Vec::with_capacity(rows_n);
    let (mut mdc, mut madc, mut mdcc, mut madcc) = (vec![], vec![], vec![], vec![]);
    for c in &cos.competitors {
        for (i, s) in stats.iter().enumerate() {
            latent.push(i as i64);
            tau.push(c.tau);
            fired.push(s.fired as i64);
            freq.push(s.frequency);
            mean.push(s.mean_activation);
            max.push(s.max_activation.map(|v| v as f64));
            count.push(c.count[i] as i64);
            mdc.push(finite(cos.max_dec[i]));
            madc.push(finite(cos.max_abs_dec[i]));
            mdcc.push(c.max_cos[i]);
            madcc.push(c.max_abs_cos[i]);
        }
    }
    batch(vec![
        col_str("variant", unit, rows_n),
        col_i64("latent", latent),
        col_f64("tau", tau),
        col_i64("n_fired", fired),
        col_f64("frequency", freq),
        col_opt_f64("mean_activation", mean),
        col_opt_f64("max_activation", max),
        col_i64("competitors", count),
        col_opt_f64("max_dec_cos", mdc),
        col_opt_f64("max_abs_dec_cos", madc),
        col_opt_f64("max_dec_cos_competitor", mdcc),
        col_opt_f64("max_abs_dec_cos_competitor", madcc),
    ])
}

/// compete_pairs: every kept pair with its counts and cosines.
pub(super) fn pairs(
    unit: &str,
    index: &FiringIndex,
    pairs: &[Pair],
    cos: &Cosines,
) -> Result<RecordBatch> {
    let n_of = |l: u32| index.n()[l as usize] as i64;
    batch(vec![
        col_str("variant", unit, pairs.len()),
        col_i64("i", pairs.iter().map(|p| p.i as i64).collect()),
        col_i64("j", pairs.iter().map(|p| p.j as i64).collect()),
        col_i64(
            "cofirings",
            pairs.iter().map(|p| p.cofirings as i64).collect(),
        ),
        col_i64("n_i", pairs.iter().map(|p| n_of(p.i)).collect()),
        col_i64("n_j", pairs.iter().map(|p| n_of(p.j)).collect()),
        col_f64("c_ij", pairs.iter().map(|p| p.c).collect()),
        col_f64("dec_cos", cos.dec_cos.clone()),
        col_f64("enc_cos", cos.enc_cos.clone()),
    ])
}

/// compete_summary: one row per tau, competing pairs' decoder cosines
/// against a random baseline; also each row as JSON for the stage summary's
/// `by_tau`.
pub(super) fn summary(
    unit: &str,
    cc: &CompeteConfig,
    eval: &EvalRows,
    pairs: &[Pair],
    cos: &Cosines,
    (f, dead): (usize, usize),
) -> Result<(RecordBatch, Vec<Value>)> {
    let d = eval.d;
    let mut summary_rows = Vec::new();
    let mut cols: Vec<Vec<Option<f64>>> = vec![vec![]; 4];
    let (mut tau, mut competing, mut random_n, mut without) = (vec![], vec![], vec![], vec![]);
    for (t, c) in cc.taus.iter().zip(&cos.competitors) {
        let competing_cos: Vec<f64> = pairs
            .iter()
            .zip(&cos.dec_cos)
            .filter(|(p, _)| p.c >= *t)
            .map(|(_, &c)| c.abs())
            .collect();
        let rnd: Vec<f64> = pair_cosines(
            &cos.dec,
            d,
            &random_pairs(f, competing_cos.len(), tau_seed(cc.random_seed, *t)),
        )
        .into_iter()
        .map(f64::abs)
        .collect();
        let mean = |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
        let share = |v: &[f64]| {
            (!v.is_empty())
                .then(|| v.iter().filter(|&&c| c > COS_SHARE).count() as f64 / v.len() as f64)
        };
        let no_comp = c.count.iter().filter(|&&k| k == 0).count();
        cols[0].push(mean(&competing_cos));
        cols[1].push(mean(&rnd));
        cols[2].push(share(&competing_cos));
        cols[3].push(share(&rnd));
        tau.push(*t);
        competing.push(competing_cos.len() as i64);
        random_n.push(rnd.len() as i64);
        without.push(no_comp as i64);
        summary_rows.push(json!({
            "tau": t,
            "competing_pairs": competing_cos.len(),
            "mean_abs_cos_competing": mean(&competing_cos),
            "mean_abs_cos_random": mean(&rnd),
            "share_cos_over_0_3": share(&competing_cos),
            "share_random_cos_over_0_3": share(&rnd),
            "latents_without_competitor": no_comp,
        }));
    }
    let k = cc.taus.len();
    let n = eval.rows.len();
    let table = batch(vec![
        col_str("variant", unit, k),
        col_f64("tau", tau),
        col_i64("d_sae", vec![f as i64; k]),
        col_i64("eval_tokens", vec![n as i64; k]),
        col_i64("dead_latents", vec![dead as i64; k]),
        col_i64("competing_pairs", competing),
        col_i64("random_pairs", random_n),
        col_opt_f64("mean_abs_cos_competing", cols[0].clone()),
        col_opt_f64("mean_abs_cos_random", cols[1].clone()),
        col_opt_f64("share_cos_over_0_3", cols[2].clone()),
        col_opt_f64("share_random_cos_over_0_3", cols[3].clone()),
        col_i64("latents_without_competitor", without),
    ])?;
    Ok((table, summary_rows))
}

/// The random baseline's seed for a threshold: the config's seed mixed with
/// tau's bits, so that adding a tau leaves the others' pairs unchanged.
fn tau_seed(seed: u64, tau: f64) -> u64 {
    seed ^ tau.to_bits().wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

pub(super) type Column = (&'static str, ArrayRef, bool);

pub(super) fn col_str(name: &'static str, value: &str, n: usize) -> Column {
    (name, Arc::new(StringArray::from(vec![value; n])), false)
}
pub(super) fn col_i64(name: &'static str, v: Vec<i64>) -> Column {
    (name, Arc::new(Int64Array::from(v)), false)
}
pub(super) fn col_f64(name: &'static str, v: Vec<f64>) -> Column {
    (name, Arc::new(Float64Array::from(v)), false)
}
pub(super) fn col_f32(name: &'static str, v: Vec<f32>) -> Column {
    (name, Arc::new(Float32Array::from(v)), false)
}
pub(super) fn col_opt_f64(name: &'static str, v: Vec<Option<f64>>) -> Column {
    (name, Arc::new(Float64Array::from(v)), true)
}

pub(super) fn batch(columns: Vec<Column>) -> Result<RecordBatch> {
    let schema = Schema::new(
        columns
            .iter()
            .map(|(name, a, nullable)| Field::new(*name, a.data_type().clone(), *nullable))
            .collect::<Vec<_>>(),
    );
    Ok(RecordBatch::try_new(
        Arc::new(schema),
        columns.into_iter().map(|(_, a, _)| a).collect(),
    )?)
}
