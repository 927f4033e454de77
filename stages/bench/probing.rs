//! What the probing benchmarks (sparse_probing, scr_tpp) share: the
//! datasets they read, a dataset with a variant's mean-pooled latents
//! (cached for the run), the binary probing problems of a task and their
//! seeded samples, the SAEBench JSON envelope and the long-format metric
//! tables.

use crate::artifacts::datasets::{self, DatasetData, TaskData};
use crate::artifacts::sae::VariantSae;
use crate::pipeline::cache::stage_key;
use crate::pipeline::stage::StageInput;
use crate::pipeline::store::TableEntry;
use anyhow::{bail, Result};
use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use coact::metrics::probing as pm;
use coact::rng::SplitMix64;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;

/// The datasets artifacts this unit reads: (name, key), in name order.
pub(crate) fn dataset_inputs(input: &StageInput) -> Result<Vec<(String, String)>> {
    let keys = input.inputs_of("datasets");
    if keys.is_empty() {
        bail!(
            "no labelled datasets: bench.datasets is empty and the corpus labels neither party nor year \
             (corpus.label_columns); add an entry to bench.datasets, or drop this benchmark from bench.benchmarks"
        );
    }
    Ok(keys)
}

/// The run cache's key of a datasets artifact read with its tokens.
fn dataset_cache_key(dataset_key: &str) -> String {
    stage_key("bench", &format!("datasets/{dataset_key}/with_tokens"))
}

/// The run cache's key of a dataset's mean-pooled latents under the SAE of
/// a train artifact.
fn latents_cache_key(dataset_key: &str, train_key: &str) -> String {
    stage_key(
        "bench",
        &format!("probing/latents/{train_key}/{dataset_key}"),
    )
}

/// A dataset with the variant's mean-pooled latents.
pub(crate) struct Encoded {
    pub data: Arc<DatasetData>,
    /// [pieces, d_sae].
    pub latents: Arc<Vec<f32>>,
}

/// The datasets artifact `key` (with its tokens) and its pieces'
/// mean-pooled latents under the variant's SAE. Both are cached for the
/// run: every variant reads the dataset, and both probing benchmarks the
/// latents; each is a deterministic function of its key, so reusing it
/// changes no result, only the time.
pub(crate) fn encode_dataset(input: &StageInput, sae: &VariantSae, key: &str) -> Result<Encoded> {
    let data = input.cache.get_or_try_insert(&dataset_cache_key(key), || {
        datasets::load(input.store, key, true)
    })?;
    if data.d_model != sae.sae.cfg.d_in {
        bail!(
            "datasets/{}: activations of width {} but the SAE reads {}",
            data.name,
            data.d_model,
            sae.sae.cfg.d_in
        );
    }
    let train_key = &sae.key;
    let latents = input
        .cache
        .get_or_try_insert(&latents_cache_key(key, train_key), || {
            pm::mean_pool_latents(&sae.sae, &data.tokens, &data.offsets)
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
pub(crate) struct Sample {
    pub train: Vec<usize>,
    pub train_y: Vec<bool>,
    pub test: Vec<usize>,
    pub test_y: Vec<bool>,
}

/// A seed's rng for one problem: independent streams per (seed, problem).
pub(crate) fn problem_rng(seed: usize, salt: &str) -> SplitMix64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in salt.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    SplitMix64::new(h ^ (seed as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

impl Problem {
    /// (train, test) rows and labels for a seed, classes balanced, `fraction`
    /// of the balanced train sides kept; None when a side is empty.
    pub fn sample(&self, seed: usize, salt: &str, fraction: f64) -> Option<Sample> {
        let mut rng = problem_rng(seed, salt);
        let neg: Vec<&[usize]> = self.train_neg.iter().map(|v| v.as_slice()).collect();
        let train = pm::balanced_sample(&self.train_pos, &neg, fraction, &mut rng);
        let neg: Vec<&[usize]> = self.test_neg.iter().map(|v| v.as_slice()).collect();
        let test = pm::balanced_sample(&self.test_pos, &neg, 1.0, &mut rng);
        if train.is_empty() || test.is_empty() {
            return None;
        }
        let (train, train_y) = train.into_iter().unzip();
        let (test, test_y) = test.into_iter().unzip();
        Some(Sample {
            train,
            train_y,
            test,
            test_y,
        })
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

/// A long-format metric table: string key columns, then optional integer
/// key columns, then `metric` and `value`, one row per measurement.
pub(crate) struct MetricTable {
    str_names: Vec<&'static str>,
    str_cols: Vec<Vec<String>>,
    int_names: Vec<&'static str>,
    int_cols: Vec<Vec<Option<i64>>>,
    metric: Vec<String>,
    value: Vec<f64>,
}

impl MetricTable {
    pub fn new(str_names: &[&'static str], int_names: &[&'static str]) -> Self {
        MetricTable {
            str_names: str_names.to_vec(),
            str_cols: vec![Vec::new(); str_names.len()],
            int_names: int_names.to_vec(),
            int_cols: vec![Vec::new(); int_names.len()],
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

    pub fn len(&self) -> usize {
        self.value.len()
    }

    /// Writes `<name>.parquet` into `dir`; the table's name and entry.
    pub fn write(self, dir: &Path, name: &str) -> Result<(String, TableEntry)> {
        let mut fields = Vec::new();
        let mut cols: Vec<ArrayRef> = Vec::new();
        for (n, c) in self.str_names.iter().zip(self.str_cols) {
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
        let rows = crate::artifacts::parquet_io::write_all(&dir.join(&file), &[batch])?;
        Ok((
            name.to_string(),
            TableEntry {
                files: vec![file],
                rows,
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dataset() -> DatasetData {
        // Six pieces, the last two in test; task `t` with three classes.
        DatasetData {
            name: "d".into(),
            d_model: 1,
            is_test: vec![false, false, false, false, true, true],
            pooled: vec![0.0; 6],
            tokens: vec![],
            offsets: vec![0; 7],
            tasks: vec![TaskData {
                name: "t".into(),
                classes: vec!["a".into(), "b".into(), "c".into()],
                labels: vec![Some(0), Some(1), Some(2), None, Some(0), Some(1)],
            }],
        }
    }

    #[test]
    fn cache_keys_name_the_dataset_and_the_variant() {
        assert_ne!(dataset_cache_key("k1"), dataset_cache_key("k2"));
        let keys = [
            latents_cache_key("d1", "t1"),
            latents_cache_key("d2", "t1"),
            latents_cache_key("d1", "t2"),
            dataset_cache_key("d1"),
        ];
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn problems_are_one_vs_rest_beyond_two_classes() {
        let data = dataset();
        let probs = problems(&data, &data.tasks[0], false);
        let names: Vec<&str> = probs.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, vec!["t=a", "t=b", "t=c"]);
        assert_eq!(probs[0].train_pos, vec![0]);
        assert_eq!(probs[0].train_neg, vec![vec![1], vec![2]]);
        assert_eq!(probs[0].test_pos, vec![4]);
        assert_eq!(probs[0].test_neg, vec![vec![5], vec![]]);

        let mut two = dataset();
        two.tasks[0].classes.pop();
        two.tasks[0].labels[2] = None;
        let probs = problems(&two, &two.tasks[0], false);
        assert_eq!(probs.len(), 1);
        assert_eq!(probs[0].name, "t");
        assert_eq!(problems(&two, &two.tasks[0], true).len(), 2);
    }

    #[test]
    fn samples_are_seeded_and_empty_sides_give_none() {
        let data = dataset();
        let probs = problems(&data, &data.tasks[0], false);
        let s = probs[0].sample(0, "x", 1.0).expect("both sides");
        assert_eq!(s.train.len(), s.train_y.len());
        assert_eq!(s.test, vec![4, 5]);
        assert_eq!(s.test_y, vec![true, false]);
        // Class c has no test pieces.
        assert!(probs[2].sample(0, "x", 1.0).is_none());
        assert_ne!(
            problem_rng(0, "a").next_u64(),
            problem_rng(1, "a").next_u64()
        );
        assert_ne!(
            problem_rng(0, "a").next_u64(),
            problem_rng(0, "b").next_u64()
        );
    }

    #[test]
    fn metric_tables_write_key_columns_then_metric_and_value() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = MetricTable::new(&["variant"], &["k"]);
        t.push(&["v"], &[None], "m", 0.5);
        t.push(&["v"], &[Some(3)], "m", 0.25);
        assert_eq!(t.len(), 2);
        let (name, entry) = t.write(dir.path(), "x").unwrap();
        assert_eq!((name.as_str(), entry.rows), ("x", 2));
        let batch =
            &crate::artifacts::parquet_io::read_all(&dir.path().join("x.parquet")).unwrap()[0];
        let names: Vec<String> = batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(names, vec!["variant", "k", "metric", "value"]);
    }
}
