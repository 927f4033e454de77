//! What the report shows of the sparse-probing benchmark: its metrics, and
//! table `sparse_probing` (variant, dataset, task, k, seed, metric, value)
//! read back into the mean top-k accuracies and the dense probe's reference.

use crate::artifacts::columns::{f64s, mean, opt_i64s, strs};
use crate::pipeline::benchmark::{Better, MetricDef, Summary};
use anyhow::Result;
use arrow::array::RecordBatch;
use std::collections::BTreeMap;

pub const METRIC_DEFS: &[MetricDef] = &[
    MetricDef {
        key: "probe_top1",
        label: "Probe top-1",
        better: Better::Higher,
        digits: 3,
        help: "sparse-probing test accuracy with the top 1 latent",
    },
    MetricDef {
        key: "probe_top2",
        label: "Probe top-2",
        better: Better::Higher,
        digits: 3,
        help: "sparse-probing test accuracy with the top 2 latents",
    },
    MetricDef {
        key: "probe_top5",
        label: "Probe top-5",
        better: Better::Higher,
        digits: 3,
        help: "sparse-probing test accuracy with the top 5 latents",
    },
];

pub const TABLES: &[&str] = &["sparse_probing"];

/// `probe_top<k>` (k = 1, 2, 5): the mean `sae_test_accuracy` at k over
/// datasets, tasks and seeds; each `llm_test_accuracy` row (no k) into
/// `dense_probe`.
pub fn summarise(batches: &[RecordBatch], into: &mut Summary) -> Result<()> {
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
                ("llm_test_accuracy", None) => into.dense_probe.push(v),
                _ => {}
            }
        }
    }
    for k in [1, 2, 5] {
        if let Some(v) = by_k.get(&k).and_then(|v| mean(v)) {
            into.values.insert(format!("probe_top{k}"), v);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float64Array, Int64Array, StringArray};
    use std::sync::Arc;

    #[test]
    fn means_per_k_and_the_dense_reference() {
        let b = RecordBatch::try_from_iter([
            (
                "k",
                Arc::new(Int64Array::from(vec![
                    Some(1),
                    Some(1),
                    Some(2),
                    None,
                    Some(1),
                ])) as _,
            ),
            (
                "metric",
                Arc::new(StringArray::from(vec![
                    "sae_test_accuracy",
                    "sae_test_accuracy",
                    "sae_test_accuracy",
                    "llm_test_accuracy",
                    "sae_train_accuracy",
                ])) as _,
            ),
            (
                "value",
                Arc::new(Float64Array::from(vec![0.6, 0.8, 0.9, 0.95, 0.1])) as _,
            ),
        ])
        .unwrap();
        let mut s = Summary::default();
        summarise(&[b], &mut s).unwrap();
        assert!((s.values["probe_top1"] - 0.7).abs() < 1e-12);
        assert_eq!(s.values["probe_top2"], 0.9);
        assert!(!s.values.contains_key("probe_top5"));
        assert_eq!(s.dense_probe, [0.95]);
    }
}
