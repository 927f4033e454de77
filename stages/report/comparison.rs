//! The comparison table as a long Parquet table, for SQL: one row per
//! variant and metric, with the variant's seed group and the group's spread.

use super::data::ReportData;
use anyhow::Result;
use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{Field, Schema};
use std::path::Path;
use std::sync::Arc;

/// The comparison table as a long Parquet table (variant, seed group, metric,
/// value, and the group's seed mean, min, max and count); its row count.
pub fn write_comparison(data: &ReportData, path: &Path) -> Result<u64> {
    let mut variant = Vec::new();
    let mut group = Vec::new();
    let mut metric_col = Vec::new();
    let mut value = Vec::new();
    let (mut mean, mut min, mut max, mut n) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for g in data.groups() {
        for m in &data.metrics {
            let s = data.spread(&g, m.key);
            for &i in &g.members {
                let name = &data.variants[i].name;
                let Some(v) = data.value(name, m.key) else {
                    continue;
                };
                variant.push(name.clone());
                group.push(g.label.clone());
                metric_col.push(m.key.to_string());
                value.push(v);
                mean.push(s.map(|s| s.mean));
                min.push(s.map(|s| s.min));
                max.push(s.map(|s| s.max));
                n.push(s.map(|s| s.n as i64));
            }
        }
    }
    if variant.is_empty() {
        return Ok(0);
    }
    let columns: Vec<(&str, ArrayRef, bool)> = vec![
        ("variant", Arc::new(StringArray::from(variant)), false),
        ("group", Arc::new(StringArray::from(group)), false),
        ("metric", Arc::new(StringArray::from(metric_col)), false),
        ("value", Arc::new(Float64Array::from(value)), false),
        ("group_mean", Arc::new(Float64Array::from(mean)), true),
        ("group_min", Arc::new(Float64Array::from(min)), true),
        ("group_max", Arc::new(Float64Array::from(max)), true),
        ("group_seeds", Arc::new(Int64Array::from(n)), true),
    ];
    let schema = Schema::new(
        columns
            .iter()
            .map(|(name, a, nullable)| Field::new(*name, a.data_type().clone(), *nullable))
            .collect::<Vec<_>>(),
    );
    let batch = RecordBatch::try_new(
        Arc::new(schema),
        columns.into_iter().map(|(_, a, _)| a).collect(),
    )?;
    crate::artifacts::parquet_io::write_all(path, &[batch])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifacts::columns::{f64s, i64s, strs};
    use crate::report::verdict::tests::{data, v};

    #[test]
    fn the_comparison_table_carries_group_spreads() {
        let mut data = data(vec![
            v("topk", "none", 0.0, 0),
            v("topk-seed1", "none", 0.0, 1),
        ]);
        for (n, x) in [("topk", 0.9), ("topk-seed1", 0.8)] {
            data.values
                .entry(n.into())
                .or_default()
                .insert("ce_loss_score".into(), x);
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.parquet");
        assert_eq!(write_comparison(&data, &path).unwrap(), 2);
        let b = &crate::artifacts::parquet_io::read_all(&path).unwrap()[0];
        assert_eq!(
            strs(b, "group").unwrap(),
            [Some("topk".to_string()), Some("topk".to_string())]
        );
        assert_eq!(f64s(b, "group_min").unwrap()[0], Some(0.8));
        assert_eq!(i64s(b, "group_seeds").unwrap()[1], Some(2));
        // Nothing measured: no table.
        let empty = super::super::verdict::tests::data(data.variants.clone());
        assert_eq!(write_comparison(&empty, &path).unwrap(), 0);
    }
}
