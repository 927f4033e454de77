//! The sparse probing benchmark (SAEBench's sparse_probing): can a handful
//! of latents carry a label the model's residual carries?
//!
//! Per dataset (`datasets/*` artifacts) and task: binary tasks get one probe
//! (positive = the task's first class), tasks with more classes one
//! one-vs-rest probe per class (task name `<task>=<class>`). Inputs are
//! mean-pooled over each piece's non-BOS tokens: the SAE latents (each token
//! encoded, then averaged) and the raw residual. Per seed:
//! * classes are balanced as SAEBench's `prepare_probe_data` does (all
//!   positives, as many negatives drawn evenly from the other classes, the
//!   larger side cut to the smaller), on train and on test, and the seed
//!   keeps `train_fraction` of each balanced train side: coact's probes are
//!   deterministic, so the seed's subsample is its only noise source, as in
//!   SAEBench's sklearn probes;
//! * `sae_test_accuracy` at k: the k latents with the largest |mean_pos -
//!   mean_neg| on train, logistic regression (L2, sklearn's C = `c`, SAEBench
//!   uses C = 1) on those, test accuracy; k null: all latents;
//! * `llm_test_accuracy` at k null: the dense probe on the residual
//!   (SAEBench trains it unregularised on a GPU with early stopping on the
//!   test set; coact fits the same L2 probe as the others, on the residual
//!   scaled to unit mean squared entry, and never looks at the test set);
//!   at k: the same top-k rule on residual channels (SAEBench's
//!   llm_top_k_test_accuracy).
//!
//! Output: table `sparse_probing` (bench_sparse_probing: variant, dataset,
//! task, k, seed, metric, value) and `sparse_probing.json` shaped like
//! SAEBench's output (means over seeds; the spread is in
//! eval_result_unstructured).

use super::probing::{
    dataset_inputs, encode_dataset, problems, saebench_json, Encoded, MetricTable, Problem, Sample,
};
use crate::config::bench::sparse_probing::SparseProbingConfig;
use crate::config::Config;
use crate::pipeline::benchmark::Benchmark;
use crate::pipeline::cache::stage_key;
use crate::pipeline::stage::{StageInput, StageOutput};
use anyhow::Result;
use coact::metrics::probing as pm;
use coact::probe::{fit_probe, Penalty};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

/// The part of the config a sparse_probing artifact's key hashes.
pub fn key_config(cfg: &Config) -> Value {
    serde_json::to_value(&cfg.bench.sparse_probing).expect("serialisable")
}

/// The `sparse_probing` benchmark.
pub struct SparseProbing;

impl Benchmark for SparseProbing {
    fn name(&self) -> &'static str {
        "sparse_probing"
    }
    fn about(&self) -> &'static str {
        "k-sparse probes on the latents that best separate each task"
    }
    fn uses(&self) -> &'static [&'static str] {
        &["datasets"]
    }
    fn key_config(&self, cfg: &Config) -> Value {
        key_config(cfg)
    }
    fn run(&self, input: &StageInput, variant: &str) -> Result<StageOutput> {
        run(input, variant)
    }
    fn metrics(&self) -> &'static [crate::pipeline::benchmark::MetricDef] {
        super::sparse_probing_summary::METRIC_DEFS
    }
    fn tables(&self) -> &'static [&'static str] {
        super::sparse_probing_summary::TABLES
    }
    fn summarise(
        &self,
        _table: &str,
        batches: &[arrow::array::RecordBatch],
        into: &mut crate::pipeline::benchmark::Summary,
    ) -> Result<()> {
        super::sparse_probing_summary::summarise(batches, into)
    }
}

/// Accuracies per (dataset, SAEBench metric label), per problem, per seed.
type Accuracies = BTreeMap<(String, String), BTreeMap<String, Vec<f64>>>;

/// What a run gathers over datasets, problems and seeds.
struct Tally<'a> {
    variant: &'a str,
    rows: MetricTable,
    acc: Accuracies,
    /// Problems a seed could not sample (`dataset/problem`).
    skipped: Vec<String>,
    dataset_names: Vec<String>,
    /// Seconds loading and encoding, on residual probes, on latent probes.
    t_encode: f64,
    t_llm: f64,
    t_sae: f64,
}

impl Tally<'_> {
    /// One accuracy: a table row and a seed of its SAEBench metric.
    fn record(
        &mut self,
        dataset: &str,
        problem: &str,
        seed: usize,
        metric: &str,
        k: Option<usize>,
        v: f64,
    ) {
        self.rows.push(
            &[self.variant, dataset, problem],
            &[k.map(|k| k as i64), Some(seed as i64)],
            metric,
            v,
        );
        let label = match k {
            Some(k) => format!("{}_top_{k}_test_accuracy", &metric[..3]),
            None => metric.to_string(),
        };
        self.acc
            .entry((dataset.to_string(), label))
            .or_default()
            .entry(problem.to_string())
            .or_default()
            .push(v);
    }
}

pub fn run(input: &StageInput, variant: &str) -> Result<StageOutput> {
    let sp = &input.cfg.bench.sparse_probing;
    let sae = input.variant_sae(variant)?;
    let started = Instant::now();
    let mut tally = Tally {
        variant,
        rows: MetricTable::new(&["variant", "dataset", "task"], &["k", "seed"]),
        acc: BTreeMap::new(),
        skipped: Vec::new(),
        dataset_names: Vec::new(),
        t_encode: 0.0,
        t_llm: 0.0,
        t_sae: 0.0,
    };
    for (_, key) in dataset_inputs(input)? {
        let t0 = Instant::now();
        let enc = encode_dataset(input, &sae, &key)?;
        tally.t_encode += t0.elapsed().as_secs_f64();
        tally.dataset_names.push(enc.data.name.clone());
        for task in &enc.data.tasks {
            for prob in problems(&enc.data, task, false) {
                for seed in 0..sp.seeds {
                    probe_seed(
                        input,
                        &enc,
                        sae.sae.cfg.d_sae,
                        &key,
                        &prob,
                        seed,
                        &mut tally,
                    )?;
                }
            }
        }
    }
    if !tally.skipped.is_empty() {
        tally.skipped.sort();
        tally.skipped.dedup();
        input.progress.note(format!(
            "sparse_probing/{variant}: too few pieces of a class in train or test, left out: {}",
            tally.skipped.join(", ")
        ));
    }
    let out = saebench_json(
        input,
        variant,
        "sparse_probing",
        saebench_results(input, sp, &tally),
        &sae.cfg_json,
    );
    std::fs::write(
        input.out_dir.join("sparse_probing.json"),
        serde_json::to_string_pretty(&out)?,
    )?;
    let n_rows = tally.rows.len();
    let (name, entry) = tally.rows.write(input.out_dir, "sparse_probing")?;
    let (t_encode, t_llm, t_sae) = (tally.t_encode, tally.t_llm, tally.t_sae);
    input.progress.note(format!(
        "sparse_probing/{variant}: {n_rows} rows in {:.1} s (load and encode {t_encode:.1} s, residual probes {t_llm:.1} s, latent probes {t_sae:.1} s)",
        started.elapsed().as_secs_f64()
    ));
    Ok(StageOutput {
        tables: BTreeMap::from([(name, entry)]),
        summary: json!({
            "metrics": out["eval_result_metrics"],
            "skipped": tally.skipped,
            "seconds": {"load_and_encode": t_encode, "residual_probes": t_llm, "latent_probes": t_sae},
        }),
    })
}

/// One seed of one problem (`f` latents): the residual probes (cached for the run: they
/// do not depend on the SAE), then the latent probes.
fn probe_seed(
    input: &StageInput,
    enc: &Encoded,
    f: usize,
    key: &str,
    prob: &Problem,
    seed: usize,
    tally: &mut Tally,
) -> Result<()> {
    let sp = &input.cfg.bench.sparse_probing;
    let data = &enc.data;
    let salt = format!("sparse_probing/{}/{}", data.name, prob.name);
    let Some(s) = prob.sample(seed, &salt, sp.train_fraction) else {
        tally.skipped.push(format!("{}/{}", data.name, prob.name));
        return Ok(());
    };
    let pen = Penalty::sklearn_l2(sp.c, s.train_y.len());
    let t1 = Instant::now();
    let cache_key = format!(
        "sparse_probing/llm/{key}/{}/{seed}/{}/{}/{:?}",
        prob.name, sp.train_fraction, sp.c, sp.ks
    );
    let llm = input
        .cache
        .get_or_try_insert(&stage_key("bench", &cache_key), || {
            residual_accuracies(&data.pooled, data.d_model, &s, pen, &sp.ks)
        })?;
    for &(k, a) in llm.iter() {
        tally.record(&data.name, &prob.name, seed, "llm_test_accuracy", k, a);
    }
    tally.t_llm += t1.elapsed().as_secs_f64();
    let t1 = Instant::now();
    for (k, a) in latent_accuracies(&enc.latents, f, &s, pen, sp)? {
        tally.record(&data.name, &prob.name, seed, "sae_test_accuracy", k, a);
    }
    tally.t_sae += t1.elapsed().as_secs_f64();
    Ok(())
}

/// Test accuracy of a probe on the top-k columns (by mean difference on
/// train) of `x` ([rows, dim]), for each k.
fn top_k_accuracies(
    xtr: &[f32],
    xte: &[f32],
    dim: usize,
    s: &Sample,
    pen: Penalty,
    ks: &[usize],
) -> Result<Vec<(Option<usize>, f64)>> {
    let mut out = Vec::with_capacity(ks.len());
    for &k in ks {
        let cols = pm::top_k_mean_difference(xtr, dim, &s.train_y, k.min(dim));
        let p = fit_probe(
            &pm::gather_columns(xtr, dim, &cols),
            cols.len(),
            &s.train_y,
            pen,
            false,
        )?;
        out.push((
            Some(k),
            p.accuracy(&pm::gather_columns(xte, dim, &cols), &s.test_y),
        ));
    }
    Ok(out)
}

/// The probes on the model's residual ([pieces, dm]): dense (k None, on
/// the residual scaled to unit mean squared entry), then top-k channels.
fn residual_accuracies(
    pooled: &[f32],
    dm: usize,
    s: &Sample,
    pen: Penalty,
    ks: &[usize],
) -> Result<Vec<(Option<usize>, f64)>> {
    let xtr = pm::gather_rows(pooled, dm, &s.train);
    let xte = pm::gather_rows(pooled, dm, &s.test);
    let dense = fit_probe(&xtr, dm, &s.train_y, pen, true)?;
    let mut out = vec![(None, dense.accuracy(&xte, &s.test_y))];
    out.extend(top_k_accuracies(&xtr, &xte, dm, s, pen, ks)?);
    Ok(out)
}

/// The probes on the SAE's latents ([pieces, f]): all latents (k None,
/// with `all_latents`), then the top-k latents.
fn latent_accuracies(
    latents: &[f32],
    f: usize,
    s: &Sample,
    pen: Penalty,
    sp: &SparseProbingConfig,
) -> Result<Vec<(Option<usize>, f64)>> {
    let ftr = pm::gather_rows(latents, f, &s.train);
    let fte = pm::gather_rows(latents, f, &s.test);
    let mut out = Vec::new();
    if sp.all_latents {
        let p = fit_probe(&ftr, f, &s.train_y, pen, true)?;
        out.push((None, p.accuracy(&fte, &s.test_y)));
    }
    out.extend(top_k_accuracies(&ftr, &fte, f, s, pen, &sp.ks)?);
    Ok(out)
}

/// SAEBench's shape: per dataset, the mean over its probes (classes) of
/// each seed-mean; overall, the mean over datasets.
fn saebench_results(input: &StageInput, sp: &SparseProbingConfig, tally: &Tally) -> Value {
    let acc = &tally.acc;
    let mut details: BTreeMap<String, serde_json::Map<String, Value>> = BTreeMap::new();
    let mut unstructured = serde_json::Map::new();
    for ((dataset, label), per_problem) in acc {
        let means: Vec<f64> = per_problem.values().map(|v| pm::mean_std(v).0).collect();
        let d = details.entry(dataset.clone()).or_default();
        d.insert(label.clone(), json!(pm::mean_std(&means).0));
        let u = unstructured
            .entry(dataset.clone())
            .or_insert_with(|| json!({}));
        u[label] = per_problem
            .iter()
            .map(|(p, v)| {
                let (m, s) = pm::mean_std(v);
                (p.clone(), json!({"mean": m, "std": s, "seeds": v}))
            })
            .collect::<serde_json::Map<_, _>>()
            .into();
    }
    let mut llm = serde_json::Map::new();
    let mut saem = serde_json::Map::new();
    let labels: BTreeSet<&String> = acc.keys().map(|(_, l)| l).collect();
    for label in labels {
        let vals: Vec<f64> = details
            .values()
            .filter_map(|d| d.get(label.as_str()).and_then(Value::as_f64))
            .collect();
        let m = json!(pm::mean_std(&vals).0);
        if label.starts_with("llm") {
            llm.insert(label.clone(), m);
        } else {
            saem.insert(label.clone(), m);
        }
    }
    json!({
        "eval_config": {
            "dataset_names": tally.dataset_names,
            "k_values": sp.ks,
            "seeds": sp.seeds,
            "train_fraction": sp.train_fraction,
            "c": sp.c,
            "all_latents": sp.all_latents,
            "model_name": input.cfg.model.name,
        },
        "eval_result_metrics": {"llm": llm, "sae": saem},
        "eval_result_details": details
            .into_iter()
            .map(|(name, mut m)| {
                m.insert("dataset_name".into(), json!(name));
                Value::Object(m)
            })
            .collect::<Vec<_>>(),
        "eval_result_unstructured": unstructured,
    })
}
