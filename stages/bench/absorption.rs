//! The absorption benchmark (SAEBench's `absorption_first_letter`; lower is
//! better), one unit per variant: `absorption/<variant>`.
//!
//! Reads the letters stage's artifact (the model's activations at the word
//! position of every first-letter prompt, and the ground-truth letter
//! probes) and the variant's SAE; runs the k-sparse probes and the
//! absorption calculator of `coact::metrics::absorption` (which documents
//! the method and where coact differs from SAEBench). The model never runs
//! here.
//!
//! Outputs:
//! - table `absorption` (`bench_absorption`), long format: variant, letter
//!   (null for the overall rows), metric, value. Per letter:
//!   `absorption_fraction`, `full_absorption_rate`, `probe_f1`, `num_words`
//!   (test words of the letter the ground-truth probe detects),
//!   `num_full_absorption`, `num_split_features`, `left_out` (1 when the
//!   letter is not in the means; absorption rows only for letters kept).
//!   Overall: `mean_absorption_fraction`, `mean_full_absorption_rate`,
//!   `letters_used`, `mean_num_split_features`, `std_absorption_fraction`,
//!   `std_full_absorption_rate`.
//! - table `absorption_latents` (`bench_absorption_latents`): variant,
//!   letter, rank (1-based), latent, k_sparse_f1 (test F1 of the probe on
//!   the top `rank` latents), is_main.
//! - `eval_results.json`: SAEBench's output shape (eval_type_id
//!   "absorption_first_letter", eval_config, eval_result_metrics.mean,
//!   eval_result_details per letter kept) plus a `coact` section.

use crate::artifacts::letters::{read_probes, read_words};
use crate::config::Config;
use crate::pipeline::benchmark::Benchmark;
use crate::pipeline::stage::{StageInput, StageOutput};
use crate::pipeline::store::TableEntry;
use anyhow::{bail, Result};
use arrow::array::{Array, BooleanArray, Float64Array, Int32Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use coact::metrics::absorption::{evaluate, AbsorptionReport, LETTERS};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The part of the config an absorption artifact's key hashes: the
/// benchmark's own settings (the prompts and ground-truth probes reach it
/// through the letters artifact's key, one of its inputs).
pub fn key_config(cfg: &Config) -> Value {
    let a = &cfg.bench.absorption;
    json!({
        "max_k": a.max_k,
        "f1_jump": a.f1_jump,
        "k_sparse_l1": a.k_sparse_l1,
        "min_probe_f1": a.min_probe_f1,
        "min_letters": a.min_letters,
        "probe_max_iter": a.probe_max_iter,
    })
}

fn letter_str(l: u8) -> String {
    (LETTERS[l as usize] as char).to_string()
}
/// The `absorption` benchmark.
pub struct Absorption;

impl Benchmark for Absorption {
    fn name(&self) -> &'static str {
        "absorption"
    }
    fn about(&self) -> &'static str {
        "feature absorption on the first-letter task"
    }
    fn uses(&self) -> &'static [&'static str] {
        &["letters"]
    }
    fn key_config(&self, cfg: &Config) -> Value {
        key_config(cfg)
    }
    fn run(&self, input: &StageInput, variant: &str) -> Result<StageOutput> {
        run(input, variant)
    }
    fn metrics(&self) -> &'static [crate::pipeline::benchmark::MetricDef] {
        super::absorption_summary::METRIC_DEFS
    }
    fn tables(&self) -> &'static [&'static str] {
        super::absorption_summary::TABLES
    }
    fn sample_size(&self, s: &serde_json::Value) -> Option<String> {
        let left = s["letters_left_out"].as_array().map_or(0, |a| a.len());
        Some(format!(
            "{} first letters with a usable probe ({left} left out for a weak probe or too few words)",
            s["letters_used"].as_u64()?
        ))
    }
    fn summarise(
        &self,
        _table: &str,
        batches: &[arrow::array::RecordBatch],
        into: &mut crate::pipeline::benchmark::Summary,
    ) -> Result<()> {
        super::absorption_summary::summarise(batches, into)
    }
}

pub fn run(input: &StageInput, variant: &str) -> Result<StageOutput> {
    let cfg = input.cfg;
    let ac = &cfg.bench.absorption;
    let started = std::time::Instant::now();
    let letters = input.artifact("letters")?;
    let letters_key = &letters.key;
    let words = read_words(&letters.dir)?;
    let probes = read_probes(&letters.dir)?;
    let trained = input.variant_sae(variant)?;
    let sae = &trained.sae;
    if sae.cfg.d_in != words.d {
        bail!(
            "variant {variant}: the SAE reads {} dimensions but the letters artifact holds {}-dimensional activations",
            sae.cfg.d_in,
            words.d
        );
    }
    let report = evaluate(
        sae,
        &words.x_train,
        &words.y_train,
        &words.x_test,
        &words.y_test,
        &probes,
        &ac.settings(),
    )?;

    let (metrics_batch, n_metrics) = metrics_table(variant, &report)?;
    let (latents_batch, n_latents) = latents_table(variant, &report)?;
    crate::artifacts::parquet_io::write_all(
        &input.out_dir.join("absorption.parquet"),
        &[metrics_batch],
    )?;
    crate::artifacts::parquet_io::write_all(
        &input.out_dir.join("absorption_latents.parquet"),
        &[latents_batch],
    )?;
    let left_out: Vec<Value> = report
        .letters
        .iter()
        .filter_map(|l| {
            l.left_out.map(|why| {
                json!({ "letter": letter_str(l.letter), "reason": why.as_str(), "probe_f1": l.probe_f1 })
            })
        })
        .collect();
    let evaluable = report.letters_used >= ac.min_letters;
    let letters_manifest = input.store.manifest("letters", letters_key)?;
    let train_manifest = input
        .artifact(&format!("{}/{variant}", trained.stage))?
        .manifest;
    let eval_json = json!({
        "eval_type_id": "absorption_first_letter",
        "eval_config": {
            "model_name": cfg.model.name,
            "random_seed": ac.seed,
            "f1_jump_threshold": ac.f1_jump,
            "max_k_value": ac.max_k,
            "prompt_template": ac.template,
            "prompt_token_pos": letters_manifest.summary.get("prompt_token_pos").cloned().unwrap_or(Value::Null),
            "llm_batch_size": ac.batch_size,
            "llm_dtype": "float32",
            "k_sparse_probe_l1_decay": ac.k_sparse_l1,
            "min_GT_probe_f1": ac.min_probe_f1,
            "min_feats_for_eval": ac.min_letters,
        },
        "eval_id": input.planned.key,
        "datetime_epoch_millis": crate::pipeline::store::now_unix() * 1000,
        "eval_result_metrics": {
            "mean": {
                "mean_absorption_fraction_score": json_f64(report.mean_absorption_fraction),
                "mean_full_absorption_score": json_f64(report.mean_full_absorption_rate),
                "mean_num_split_features": json_f64(report.mean_num_split_features),
                "std_dev_absorption_fraction_score": json_f64(report.std_absorption_fraction),
                "std_dev_full_absorption_score": json_f64(report.std_full_absorption_rate),
                "std_dev_num_split_features": json_f64(report.std_num_split_features),
            }
        },
        "eval_result_details": report.letters.iter().filter(|l| l.left_out.is_none()).map(|l| json!({
            "first_letter": letter_str(l.letter),
            "mean_absorption_fraction": l.absorption_fraction,
            "full_absorption_rate": l.full_absorption_rate,
            "num_full_absorption": l.num_full_absorption,
            "num_probe_true_positives": l.num_words,
            "num_split_features": l.main_latents.len(),
        })).collect::<Vec<_>>(),
        "sae_bench_commit_hash": null,
        "sae_lens_id": variant,
        "sae_lens_release_id": cfg.study,
        "sae_lens_version": null,
        "sae_cfg_dict": trained.cfg_json,
        "coact": {
            "variant": variant,
            "sae": train_manifest.config.get("sae").cloned().unwrap_or(Value::Null),
            "letters_used": report.letters_used,
            "letters_left_out": left_out,
            "evaluable": evaluable,
            "train_words": words.y_train.len(),
            "test_words": words.y_test.len(),
        },
    });
    std::fs::write(
        input.out_dir.join("eval_results.json"),
        serde_json::to_string_pretty(&eval_json)?,
    )?;
    if !evaluable {
        input.progress.note(format!(
            "absorption/{variant}: only {} letters have a ground-truth probe F1 above {} (SAEBench wants {}); the result is marked not evaluable",
            report.letters_used, ac.min_probe_f1, ac.min_letters
        ));
    }
    Ok(StageOutput {
        tables: BTreeMap::from([
            (
                "absorption".to_string(),
                TableEntry {
                    files: vec!["absorption.parquet".into()],
                    rows: n_metrics,
                },
            ),
            (
                "absorption_latents".to_string(),
                TableEntry {
                    files: vec!["absorption_latents.parquet".into()],
                    rows: n_latents,
                },
            ),
        ]),
        summary: json!({
            "variant": variant,
            "mean_absorption_fraction": json_f64(report.mean_absorption_fraction),
            "mean_full_absorption_rate": json_f64(report.mean_full_absorption_rate),
            "mean_num_split_features": json_f64(report.mean_num_split_features),
            "letters_used": report.letters_used,
            "letters_left_out": left_out,
            "evaluable": evaluable,
            "seconds": started.elapsed().as_secs_f64(),
        }),
    })
}

/// NaN (no letter kept) as JSON null.
fn json_f64(v: f64) -> Value {
    if v.is_finite() {
        json!(v)
    } else {
        Value::Null
    }
}

fn metrics_table(variant: &str, r: &AbsorptionReport) -> Result<(RecordBatch, u64)> {
    let mut letter: Vec<Option<String>> = Vec::new();
    let mut metric: Vec<&str> = Vec::new();
    let mut value: Vec<f64> = Vec::new();
    let mut push = |l: Option<String>, m: &'static str, v: f64| {
        letter.push(l);
        metric.push(m);
        value.push(v);
    };
    for l in &r.letters {
        let s = Some(letter_str(l.letter));
        push(s.clone(), "probe_f1", l.probe_f1);
        push(s.clone(), "num_words", l.num_words as f64);
        push(
            s.clone(),
            "left_out",
            if l.left_out.is_some() { 1.0 } else { 0.0 },
        );
        if l.left_out.is_none() {
            push(s.clone(), "absorption_fraction", l.absorption_fraction);
            push(s.clone(), "full_absorption_rate", l.full_absorption_rate);
            push(
                s.clone(),
                "num_full_absorption",
                l.num_full_absorption as f64,
            );
            push(s, "num_split_features", l.main_latents.len() as f64);
        }
    }
    push(None, "mean_absorption_fraction", r.mean_absorption_fraction);
    push(
        None,
        "mean_full_absorption_rate",
        r.mean_full_absorption_rate,
    );
    push(None, "letters_used", r.letters_used as f64);
    push(None, "mean_num_split_features", r.mean_num_split_features);
    push(None, "std_absorption_fraction", r.std_absorption_fraction);
    push(None, "std_full_absorption_rate", r.std_full_absorption_rate);
    let n = value.len();
    let schema = Schema::new(vec![
        Field::new("variant", DataType::Utf8, false),
        Field::new("letter", DataType::Utf8, true),
        Field::new("metric", DataType::Utf8, false),
        Field::new("value", DataType::Float64, false),
    ]);
    let batch = RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(StringArray::from(vec![variant; n])),
            Arc::new(StringArray::from(letter)),
            Arc::new(StringArray::from(metric)),
            Arc::new(Float64Array::from(value)),
        ],
    )?;
    Ok((batch, n as u64))
}

fn latents_table(variant: &str, r: &AbsorptionReport) -> Result<(RecordBatch, u64)> {
    let (mut letter, mut rank, mut latent, mut f1, mut main) =
        (vec![], vec![], vec![], vec![], vec![]);
    for l in &r.letters {
        for (i, &lat) in l.ranking.iter().enumerate() {
            letter.push(letter_str(l.letter));
            rank.push(i as i32 + 1);
            latent.push(lat as i32);
            f1.push(l.k_sparse_f1.get(i).copied().unwrap_or(f64::NAN));
            main.push(i < l.main_latents.len());
        }
    }
    let n = letter.len();
    let schema = Schema::new(vec![
        Field::new("variant", DataType::Utf8, false),
        Field::new("letter", DataType::Utf8, false),
        Field::new("rank", DataType::Int32, false),
        Field::new("latent", DataType::Int32, false),
        Field::new("k_sparse_f1", DataType::Float64, false),
        Field::new("is_main", DataType::Boolean, false),
    ]);
    let batch = RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(StringArray::from(vec![variant; n])),
            Arc::new(StringArray::from(letter)),
            Arc::new(Int32Array::from(rank)),
            Arc::new(Int32Array::from(latent)),
            Arc::new(Float64Array::from(f1)),
            Arc::new(BooleanArray::from(main)),
        ],
    )?;
    debug_assert!(batch.column(0).len() == n);
    Ok((batch, n as u64))
}
