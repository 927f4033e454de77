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

use crate::config::Config;
use crate::datasets::{DatasetData, TaskData};
use crate::pipeline::benchmark::Benchmark;
use crate::pipeline::stage::{StageInput, StageOutput};
use crate::pipeline::store::TableEntry;
use anyhow::{anyhow, bail, Context, Result};
use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use coact::metrics::probing as pm;
use coact::probe::{fit_probe, Penalty};
use coact::rng::SplitMix64;
use coact::sae::Sae;
use serde_json::{json, Value};
use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};

/// The part of the config a sparse_probing artifact's key hashes.
pub fn key_config(cfg: &Config) -> Value {
    serde_json::to_value(&cfg.bench.sparse_probing).expect("serialisable")
}

// ---------------------------------------------------------------------------
// Shared with scr_tpp.rs.

/// The variant's SAE and its cfg.json.
pub(crate) fn load_variant_sae(input: &StageInput, variant: &str) -> Result<(Sae, Value)> {
    let key = input
        .planned
        .inputs
        .get(&format!("train/{variant}"))
        .with_context(|| format!("no train/{variant} input"))?;
    let dir = input.store.artifact_dir("train", key);
    let (sae, _) = coact::sae::load_saelens(&dir)
        .map_err(|e| anyhow!("train/{variant} ({}): {e:#}", dir.display()))?;
    let cfg_json: Value = std::fs::read_to_string(dir.join(coact::sae::CFG_FILE))
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(Value::Null);
    Ok((sae, cfg_json))
}

/// The datasets artifacts this unit reads: (name, key), in name order.
pub(crate) fn dataset_keys(input: &StageInput) -> Result<Vec<(String, String)>> {
    let keys: Vec<(String, String)> = input
        .planned
        .inputs
        .iter()
        .filter_map(|(n, k)| {
            n.strip_prefix("datasets/")
                .map(|d| (d.to_string(), k.clone()))
        })
        .collect();
    if keys.is_empty() {
        bail!(
            "no labelled datasets: bench.datasets is empty and the corpus labels neither party nor year \
             (corpus.label_columns); add an entry to bench.datasets, or drop this benchmark from bench.benchmarks"
        );
    }
    Ok(keys)
}

/// Results shared by the units of one `coact run`: a dataset's
/// activations, a variant's mean-pooled latents (sparse_probing and scr_tpp
/// both need them) and the probes on the model's residual (the same for
/// every variant). Each is a deterministic function of its key, so reusing
/// it changes no result, only the time.
pub(crate) fn memo<T: Any + Send + Sync>(
    key: String,
    make: impl FnOnce() -> Result<T>,
) -> Result<Arc<T>> {
    static MEMO: OnceLock<Mutex<HashMap<String, Arc<dyn Any + Send + Sync>>>> = OnceLock::new();
    let map = MEMO.get_or_init(Default::default);
    if let Some(v) = map.lock().unwrap().get(&key) {
        if let Ok(v) = v.clone().downcast::<T>() {
            return Ok(v);
        }
    }
    let v = Arc::new(make()?);
    map.lock()
        .unwrap()
        .insert(key, v.clone() as Arc<dyn Any + Send + Sync>);
    Ok(v)
}

/// A dataset with the variant's mean-pooled latents.
pub(crate) struct Encoded {
    pub data: Arc<DatasetData>,
    /// [pieces, d_sae].
    pub latents: Arc<Vec<f32>>,
}

pub(crate) fn encode_dataset(
    input: &StageInput,
    sae: &Sae,
    variant: &str,
    key: &str,
) -> Result<Encoded> {
    let data = memo(format!("datasets/{key}"), || {
        crate::datasets::load(input.store, key, true)
    })?;
    if data.d_model != sae.cfg.d_in {
        bail!(
            "datasets/{}: activations of width {} but the SAE reads {}",
            data.name,
            data.d_model,
            sae.cfg.d_in
        );
    }
    let train_key = &input.planned.inputs[&format!("train/{variant}")];
    let latents = memo(format!("latents/{train_key}/{key}"), || {
        pm::mean_pool_latents(sae, &data.tokens, &data.offsets)
    })?;
    Ok(Encoded { data, latents })
}

/// One binary probing problem: the positive class's pieces and the other
/// classes' pieces, per split.
pub(crate) struct Problem {
    /// `task` for binary tasks, `task=class` for one-vs-rest.
    pub name: String,
    pub train_pos: Vec<usize>,
    pub train_neg: Vec<Vec<usize>>,
    pub test_pos: Vec<usize>,
    pub test_neg: Vec<Vec<usize>>,
}

/// The binary problems of a task: one when it has two classes, one per class
/// (one-vs-rest) otherwise. `one_vs_rest` forces one per class.
pub(crate) fn problems(data: &DatasetData, task: &TaskData, one_vs_rest: bool) -> Vec<Problem> {
    let m = task.classes.len();
    let members = |test: bool, c: usize| -> Vec<usize> {
        (0..data.pieces())
            .filter(|&p| data.is_test[p] == test && task.labels[p] == Some(c))
            .collect()
    };
    let positives: Vec<usize> = if m == 2 && !one_vs_rest {
        vec![0]
    } else {
        (0..m).collect()
    };
    positives
        .into_iter()
        .map(|c| Problem {
            name: if m == 2 && !one_vs_rest {
                task.name.clone()
            } else {
                format!("{}={}", task.name, task.classes[c])
            },
            train_pos: members(false, c),
            train_neg: (0..m)
                .filter(|&o| o != c)
                .map(|o| members(false, o))
                .collect(),
            test_pos: members(true, c),
            test_neg: (0..m)
                .filter(|&o| o != c)
                .map(|o| members(true, o))
                .collect(),
        })
        .collect()
}

/// A seed's sample of a problem: train rows and labels, test rows and labels.
pub(crate) type Sample = (Vec<usize>, Vec<bool>, Vec<usize>, Vec<bool>);

/// A seed's rng for one problem: independent streams per (seed, problem).
pub(crate) fn problem_rng(seed: usize, salt: &str) -> SplitMix64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in salt.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    SplitMix64::new(h ^ (seed as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

impl Problem {
    /// (train, test) rows and labels for a seed; None when a side is empty.
    pub fn sample(&self, seed: usize, salt: &str, fraction: f64) -> Option<Sample> {
        let mut rng = problem_rng(seed, salt);
        let neg: Vec<&[usize]> = self.train_neg.iter().map(|v| v.as_slice()).collect();
        let train = pm::balanced_sample(&self.train_pos, &neg, fraction, &mut rng);
        let neg: Vec<&[usize]> = self.test_neg.iter().map(|v| v.as_slice()).collect();
        let test = pm::balanced_sample(&self.test_pos, &neg, 1.0, &mut rng);
        if train.is_empty() || test.is_empty() {
            return None;
        }
        let (tr, ty): (Vec<usize>, Vec<bool>) = train.into_iter().unzip();
        let (te, ey): (Vec<usize>, Vec<bool>) = test.into_iter().unzip();
        Some((tr, ty, te, ey))
    }
}

/// The SAEBench-shaped JSON envelope shared by sparse_probing, scr and tpp:
/// `results` holds eval_config, eval_result_metrics, eval_result_details
/// and eval_result_unstructured.
pub(crate) fn saebench_json(
    input: &StageInput,
    variant: &str,
    eval_type: &str,
    results: Value,
    sae_cfg: &Value,
) -> Value {
    let mut out = json!({
        "eval_type_id": eval_type,
        "eval_id": format!("coact-{}-{}", input.planned.key, eval_type),
        "datetime_epoch_millis": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        "sae_bench_commit_hash": Value::Null,
        "sae_lens_id": variant,
        "sae_lens_release_id": format!("coact/{}", input.cfg.study),
        "sae_lens_version": Value::Null,
        "sae_cfg_dict": sae_cfg,
        "coact_version": env!("CARGO_PKG_VERSION"),
    });
    if let (Some(o), Value::Object(r)) = (out.as_object_mut(), results) {
        o.extend(r);
    }
    out
}

/// Long-format rows: the key columns are strings or optional integers.
pub(crate) struct Rows {
    pub names: Vec<&'static str>,
    /// Per key column: values (string or optional integer).
    pub str_cols: Vec<Vec<String>>,
    pub int_cols: Vec<Vec<Option<i64>>>,
    pub int_names: Vec<&'static str>,
    pub metric: Vec<String>,
    pub value: Vec<f64>,
}

impl Rows {
    pub fn new(str_names: &[&'static str], int_names: &[&'static str]) -> Self {
        Rows {
            names: str_names.to_vec(),
            str_cols: vec![Vec::new(); str_names.len()],
            int_cols: vec![Vec::new(); int_names.len()],
            int_names: int_names.to_vec(),
            metric: Vec::new(),
            value: Vec::new(),
        }
    }

    pub fn push(&mut self, strs: &[&str], ints: &[Option<i64>], metric: &str, value: f64) {
        for (c, v) in self.str_cols.iter_mut().zip(strs) {
            c.push(v.to_string());
        }
        for (c, v) in self.int_cols.iter_mut().zip(ints) {
            c.push(*v);
        }
        self.metric.push(metric.to_string());
        self.value.push(value);
    }

    /// Writes `<name>.parquet` into the unit's folder; the table entry.
    pub fn write(self, input: &StageInput, name: &str) -> Result<(String, TableEntry)> {
        let mut fields = Vec::new();
        let mut cols: Vec<ArrayRef> = Vec::new();
        for (n, c) in self.names.iter().zip(self.str_cols) {
            fields.push(Field::new(*n, DataType::Utf8, false));
            cols.push(Arc::new(StringArray::from(c)));
        }
        for (n, c) in self.int_names.iter().zip(self.int_cols) {
            fields.push(Field::new(*n, DataType::Int64, true));
            cols.push(Arc::new(Int64Array::from(c)));
        }
        fields.push(Field::new("metric", DataType::Utf8, false));
        cols.push(Arc::new(StringArray::from(self.metric)));
        fields.push(Field::new("value", DataType::Float64, false));
        cols.push(Arc::new(Float64Array::from(self.value)));
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)?;
        let file = format!("{name}.parquet");
        let rows = crate::artifacts::parquet_io::write_all(&input.out_dir.join(&file), &[batch])?;
        Ok((
            name.to_string(),
            TableEntry {
                files: vec![file],
                rows,
            },
        ))
    }
}

// ---------------------------------------------------------------------------
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

pub fn run(input: &StageInput, variant: &str) -> Result<StageOutput> {
    let sp = &input.cfg.bench.sparse_probing;
    let (sae, sae_cfg) = load_variant_sae(input, variant)?;
    let f = sae.cfg.d_sae;
    let mut rows = Rows::new(&["variant", "dataset", "task"], &["k", "seed"]);
    // (dataset, metric label) -> per problem -> per seed
    let mut acc: BTreeMap<(String, String), BTreeMap<String, Vec<f64>>> = BTreeMap::new();
    let mut skipped: Vec<String> = Vec::new();
    let mut dataset_names = Vec::new();
    let started = std::time::Instant::now();
    let mut t_encode = 0.0;
    let mut t_llm = 0.0;
    let mut t_sae = 0.0;
    for (_, key) in dataset_keys(input)? {
        let key = key.as_str();
        let t0 = std::time::Instant::now();
        let enc = encode_dataset(input, &sae, variant, key)?;
        t_encode += t0.elapsed().as_secs_f64();
        let data = &enc.data;
        let dm = data.d_model;
        dataset_names.push(data.name.clone());
        for task in &data.tasks {
            for prob in problems(data, task, false) {
                for seed in 0..sp.seeds {
                    let salt = format!("sparse_probing/{}/{}", data.name, prob.name);
                    let Some((tr, ty, te, ey)) = prob.sample(seed, &salt, sp.train_fraction) else {
                        skipped.push(format!("{}/{}", data.name, prob.name));
                        continue;
                    };
                    let pen = Penalty::sklearn_l2(sp.c, ty.len());
                    let mut record = |metric: &str, k: Option<usize>, v: f64| {
                        rows.push(
                            &[variant, &data.name, &prob.name],
                            &[k.map(|k| k as i64), Some(seed as i64)],
                            metric,
                            v,
                        );
                        let label = match k {
                            Some(k) => format!("{}_top_{k}_test_accuracy", &metric[..3]),
                            None => metric.to_string(),
                        };
                        acc.entry((data.name.clone(), label))
                            .or_default()
                            .entry(prob.name.clone())
                            .or_default()
                            .push(v);
                    };
                    // The model's residual: dense, then top-k channels.
                    let t1 = std::time::Instant::now();
                    let llm = memo(
                        format!(
                            "sparse_probing/llm/{key}/{}/{seed}/{}/{}/{:?}",
                            prob.name, sp.train_fraction, sp.c, sp.ks
                        ),
                        || -> Result<Vec<(Option<usize>, f64)>> {
                            let xtr = pm::gather_rows(&data.pooled, dm, &tr);
                            let xte = pm::gather_rows(&data.pooled, dm, &te);
                            let dense = fit_probe(&xtr, dm, &ty, pen, true)?;
                            let mut out = vec![(None, dense.accuracy(&xte, &ey))];
                            for &k in &sp.ks {
                                let cols = pm::top_k_mean_difference(&xtr, dm, &ty, k.min(dm));
                                let p = fit_probe(
                                    &pm::gather_columns(&xtr, dm, &cols),
                                    cols.len(),
                                    &ty,
                                    pen,
                                    false,
                                )?;
                                out.push((
                                    Some(k),
                                    p.accuracy(&pm::gather_columns(&xte, dm, &cols), &ey),
                                ));
                            }
                            Ok(out)
                        },
                    )?;
                    for &(k, a) in llm.iter() {
                        record("llm_test_accuracy", k, a);
                    }
                    // The SAE's latents.
                    t_llm += t1.elapsed().as_secs_f64();
                    let t1 = std::time::Instant::now();
                    let ftr = pm::gather_rows(&enc.latents, f, &tr);
                    let fte = pm::gather_rows(&enc.latents, f, &te);
                    if sp.all_latents {
                        let p = fit_probe(&ftr, f, &ty, pen, true)?;
                        record("sae_test_accuracy", None, p.accuracy(&fte, &ey));
                    }
                    for &k in &sp.ks {
                        let cols = pm::top_k_mean_difference(&ftr, f, &ty, k.min(f));
                        let p = fit_probe(
                            &pm::gather_columns(&ftr, f, &cols),
                            cols.len(),
                            &ty,
                            pen,
                            false,
                        )?;
                        let a = p.accuracy(&pm::gather_columns(&fte, f, &cols), &ey);
                        record("sae_test_accuracy", Some(k), a);
                    }
                    t_sae += t1.elapsed().as_secs_f64();
                }
            }
        }
    }
    if !skipped.is_empty() {
        skipped.sort();
        skipped.dedup();
        input.progress.note(format!(
            "sparse_probing/{variant}: too few pieces of a class in train or test, left out: {}",
            skipped.join(", ")
        ));
    }

    // SAEBench's shape: per dataset, the mean over its probes (classes) of
    // each seed-mean; overall, the mean over datasets.
    let mut details: BTreeMap<String, serde_json::Map<String, Value>> = BTreeMap::new();
    let mut unstructured = serde_json::Map::new();
    for ((dataset, label), per_problem) in &acc {
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
    let labels: std::collections::BTreeSet<&String> = acc.keys().map(|(_, l)| l).collect();
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
    let out = saebench_json(
        input,
        variant,
        "sparse_probing",
        json!({
            "eval_config": {
                "dataset_names": dataset_names,
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
        }),
        &sae_cfg,
    );
    std::fs::write(
        input.out_dir.join("sparse_probing.json"),
        serde_json::to_string_pretty(&out)?,
    )?;
    let n_rows = rows.value.len();
    let (name, entry) = rows.write(input, "sparse_probing")?;
    input.progress.note(format!(
        "sparse_probing/{variant}: {n_rows} rows in {:.1} s (load and encode {t_encode:.1} s, residual probes {t_llm:.1} s, latent probes {t_sae:.1} s)",
        started.elapsed().as_secs_f64()
    ));
    Ok(StageOutput {
        tables: BTreeMap::from([(name, entry)]),
        summary: json!({
            "metrics": out["eval_result_metrics"],
            "skipped": skipped,
            "seconds": {"load_and_encode": t_encode, "residual_probes": t_llm, "latent_probes": t_sae},
        }),
    })
}
