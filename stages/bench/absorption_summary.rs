//! What the report shows of the absorption benchmark: its metrics, and
//! table `absorption` (variant, letter, metric, value; the overall rows
//! have no letter) read back into per-variant values and per-letter
//! fractions.

use crate::artifacts::columns::{f64s, mean, opt_strs, strs};
use crate::pipeline::benchmark::{Better, MetricDef, Summary};
use anyhow::Result;
use arrow::array::RecordBatch;

pub const METRIC_DEFS: &[MetricDef] = &[
    MetricDef {
        key: "absorption",
        label: "Absorption",
        better: Better::Lower,
        digits: 4,
        help: "mean absorption fraction over letters (first-letter task)",
    },
    MetricDef {
        key: "full_absorption",
        label: "Full absorption",
        better: Better::Lower,
        digits: 4,
        help: "mean full-absorption rate over letters",
    },
];

pub const TABLES: &[&str] = &["absorption"];

/// The overall rows as `absorption`, `full_absorption` and
/// `absorption_<metric>`; each letter's `absorption_fraction` into
/// `letters`. Without the overall row, `absorption` is the mean over letters
/// (the same definition).
pub fn summarise(batches: &[RecordBatch], into: &mut Summary) -> Result<()> {
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
                    into.values.insert("absorption".into(), v);
                }
                (None, "mean_full_absorption_rate") => {
                    into.values.insert("full_absorption".into(), v);
                }
                (None, other) => {
                    into.values.insert(format!("absorption_{other}"), v);
                }
                (Some(l), "absorption_fraction") => {
                    into.letters.insert(l.clone(), v);
                }
                _ => {}
            }
        }
    }
    if !into.values.contains_key("absorption") && !into.letters.is_empty() {
        let v: Vec<f64> = into.letters.values().copied().collect();
        into.values
            .insert("absorption".into(), mean(&v).unwrap_or(f64::NAN));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float64Array, StringArray};
    use std::sync::Arc;

    fn batch(rows: &[(Option<&str>, &str, f64)]) -> RecordBatch {
        RecordBatch::try_from_iter([
            (
                "letter",
                Arc::new(StringArray::from(
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
    fn overall_rows_and_letters() {
        let b = batch(&[
            (None, "mean_absorption_fraction", 0.2),
            (None, "mean_full_absorption_rate", 0.1),
            (None, "letters_used", 3.0),
            (Some("a"), "absorption_fraction", 0.5),
            (Some("b"), "absorption_fraction", 0.25),
            (Some("b"), "split_count", 2.0),
        ]);
        let mut s = Summary::default();
        summarise(&[b], &mut s).unwrap();
        assert_eq!(s.values["absorption"], 0.2);
        assert_eq!(s.values["full_absorption"], 0.1);
        assert_eq!(s.values["absorption_letters_used"], 3.0);
        assert_eq!(s.letters.len(), 2);
        assert_eq!(s.letters["b"], 0.25);
    }

    #[test]
    fn without_the_overall_row_the_mean_over_letters() {
        let b = batch(&[
            (Some("a"), "absorption_fraction", 0.5),
            (Some("b"), "absorption_fraction", 0.25),
        ]);
        let mut s = Summary::default();
        summarise(&[b], &mut s).unwrap();
        assert_eq!(s.values["absorption"], 0.375);
        assert!(!s.values.contains_key("full_absorption"));
    }
}
