//! What the report shows of the SCR and TPP benchmark: its metrics, and
//! tables `scr` (variant, dataset, direction, n, seed, metric, value) and
//! `tpp` (variant, dataset, n, seed, metric, value) read back into the
//! mean SCR and TPP at 10 and 20 ablated latents.

use crate::artifacts::columns::{f64s, i64s, mean, strs};
use crate::pipeline::benchmark::{Better, MetricDef, Summary};
use anyhow::Result;
use arrow::array::RecordBatch;
use std::collections::BTreeMap;

pub const METRIC_DEFS: &[MetricDef] = &[
    MetricDef {
        key: "scr_10",
        label: "SCR@10",
        better: Better::Higher,
        digits: 3,
        help: "spurious-correlation removal, top 10 latents ablated",
    },
    MetricDef {
        key: "scr_20",
        label: "SCR@20",
        better: Better::Higher,
        digits: 3,
        help: "spurious-correlation removal, top 20 latents ablated",
    },
    MetricDef {
        key: "tpp_10",
        label: "TPP@10",
        better: Better::Higher,
        digits: 3,
        help: "targeted probe perturbation, top 10 latents ablated",
    },
    MetricDef {
        key: "tpp_20",
        label: "TPP@20",
        better: Better::Higher,
        digits: 3,
        help: "targeted probe perturbation, top 20 latents ablated",
    },
];

pub const TABLES: &[&str] = &["scr", "tpp"];

/// The summary key of SCR's mean A_oracle - A_biased (its denominator; the
/// report warns when it is small).
pub const SCR_GAP: &str = "scr_oracle_minus_biased";

pub fn summarise(table: &str, batches: &[RecordBatch], into: &mut Summary) -> Result<()> {
    match table {
        "scr" => summarise_scr(batches, into),
        "tpp" => summarise_tpp(batches, into),
        _ => Ok(()),
    }
}

/// SCR at N = 10 and 20, averaged over datasets and seeds: SAEBench's
/// headline (`scr_metric` rows: the direction SAEBench selects) when the
/// table has it, else the mean of `scr` over both directions.
fn summarise_scr(batches: &[RecordBatch], into: &mut Summary) -> Result<()> {
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
            into.values.insert(format!("scr_{n}"), m);
        }
    }
    // SCR divides by A_oracle - A_biased: when that gap is tiny the
    // spurious signal is barely decodable and SCR is mostly noise.
    if let (Some(o), Some(b)) = (mean(&oracle), mean(&biased)) {
        into.values.insert(SCR_GAP.to_string(), o - b);
    }
    Ok(())
}

/// TPP's total and its two parts at N = 10 and 20, averaged over datasets
/// and seeds.
fn summarise_tpp(batches: &[RecordBatch], into: &mut Summary) -> Result<()> {
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
            into.values.insert(format!("tpp_{n}"), v);
        }
        for part in ["tpp_intended_drop", "tpp_unintended_drop"] {
            if let Some(v) = by.get(&(part.to_string(), n)).and_then(|v| mean(v)) {
                into.values.insert(format!("{part}_{n}"), v);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float64Array, Int64Array, StringArray};
    use std::sync::Arc;

    fn batch(rows: &[(Option<i64>, &str, f64)]) -> RecordBatch {
        RecordBatch::try_from_iter([
            (
                "n",
                Arc::new(Int64Array::from(
                    rows.iter().map(|r| r.0).collect::<Vec<_>>(),
                )) as _,
            ),
            (
                "metric",
                Arc::new(StringArray::from(
                    rows.iter().map(|r| r.1).collect::<Vec<_>>(),
                )) as _,
            ),
            (
                "value",
                Arc::new(Float64Array::from(
                    rows.iter().map(|r| r.2).collect::<Vec<_>>(),
                )) as _,
            ),
        ])
        .unwrap()
    }

    #[test]
    fn scr_prefers_the_headline_rows_and_records_the_gap() {
        let b = batch(&[
            (Some(10), "scr", 0.9),
            (Some(10), "scr_metric", 0.2),
            (Some(10), "scr_metric", 0.4),
            (Some(20), "scr", 0.5),
            (None, "a_oracle", 0.8),
            (None, "a_biased", 0.75),
        ]);
        let mut s = Summary::default();
        summarise("scr", &[b], &mut s).unwrap();
        assert!((s.values["scr_10"] - 0.3).abs() < 1e-12);
        // No headline row at 20: none, rather than the other definition.
        assert!(!s.values.contains_key("scr_20"));
        assert!((s.values[SCR_GAP] - 0.05).abs() < 1e-12);
        // Without any headline row, the mean of both directions.
        let b = batch(&[(Some(20), "scr", 0.5), (Some(20), "scr", 0.3)]);
        let mut s = Summary::default();
        summarise("scr", &[b], &mut s).unwrap();
        assert!((s.values["scr_20"] - 0.4).abs() < 1e-12);
    }

    #[test]
    fn tpp_total_and_parts() {
        let b = batch(&[
            (Some(10), "tpp_total", 0.1),
            (Some(10), "tpp_total", 0.3),
            (Some(20), "tpp_intended_drop", 0.4),
            (Some(20), "tpp_unintended_drop", 0.05),
        ]);
        let mut s = Summary::default();
        summarise("tpp", &[b], &mut s).unwrap();
        assert!((s.values["tpp_10"] - 0.2).abs() < 1e-12);
        assert_eq!(s.values["tpp_intended_drop_20"], 0.4);
        assert_eq!(s.values["tpp_unintended_drop_20"], 0.05);
        assert!(!s.values.contains_key("tpp_20"));
    }
}
