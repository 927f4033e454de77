//! What the report shows of the core benchmark: its metrics, and table
//! `core` (long: variant, metric, value) read back into per-variant values.

use crate::artifacts::columns::{f64s, strs};
use crate::pipeline::benchmark::{Better, MetricDef, Summary};
use anyhow::Result;
use arrow::array::RecordBatch;

/// The report's core columns, in order. Every other core metric is in the
/// summary too, by its `bench_core` name.
pub const METRIC_DEFS: &[MetricDef] = &[
    MetricDef {
        key: "l0",
        label: "L0",
        better: Better::Neither,
        digits: 1,
        help: "mean active latents per token",
    },
    MetricDef {
        key: "mse",
        label: "MSE",
        better: Better::Lower,
        digits: 4,
        help: "per-token squared error of the reconstruction (SAEBench: SSE / tokens)",
    },
    MetricDef {
        key: "explained_variance",
        label: "Expl. var.",
        better: Better::Higher,
        digits: 3,
        help: "explained variance about the mean (corrected, SAELens PR #665)",
    },
    MetricDef {
        key: "explained_variance_legacy",
        label: "Expl. var. (legacy)",
        better: Better::Higher,
        digits: 3,
        help: "SAEBench's legacy per-token formula (variance about zero)",
    },
    MetricDef {
        key: "ce_loss_score",
        label: "CE score",
        better: Better::Higher,
        digits: 3,
        help: "(CE_zero - CE_sae) / (CE_zero - CE_orig), SAE spliced in",
    },
    MetricDef {
        key: "kl_div_score",
        label: "KL score",
        better: Better::Higher,
        digits: 3,
        help: "(KL_zero - KL_sae) / KL_zero",
    },
    MetricDef {
        key: "mean_max_dec_cos",
        label: "Mean max dec. cos",
        better: Better::Lower,
        digits: 3,
        help: "mean over latents of the largest decoder cosine to another latent",
    },
    MetricDef {
        key: "frac_dead",
        label: "Dead",
        better: Better::Lower,
        digits: 3,
        help: "fraction of latents that never fired on the eval tokens",
    },
];

pub const TABLES: &[&str] = &["core"];

/// Every (metric, value) row, by the metric's name.
pub fn summarise(batches: &[RecordBatch], into: &mut Summary) -> Result<()> {
    for b in batches {
        let metric = strs(b, "metric")?;
        let value = f64s(b, "value")?;
        for (m, v) in metric.into_iter().zip(value) {
            if let (Some(m), Some(v)) = (m, v) {
                into.values.insert(m, v);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float32Array, StringArray};
    use std::sync::Arc;

    #[test]
    fn every_metric_row_becomes_a_value() {
        let b = RecordBatch::try_from_iter([
            (
                "metric",
                Arc::new(StringArray::from(vec![Some("mse"), Some("l0"), None])) as _,
            ),
            (
                "value",
                Arc::new(Float32Array::from(vec![Some(0.5), Some(4.0), Some(1.0)])) as _,
            ),
        ])
        .unwrap();
        let mut s = Summary::default();
        summarise(&[b], &mut s).unwrap();
        assert_eq!(s.values.len(), 2);
        assert_eq!(s.values["mse"], 0.5);
        assert_eq!(s.values["l0"], 4.0);
    }
}
