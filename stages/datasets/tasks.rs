//! Tasks: label values to classes. A task's rule is `classes` (listed
//! values), `top` (the n most frequent values), `split_at` (numeric
//! thresholds) or `quantiles` (thresholds at the documents' quantiles, so
//! that the bins hold equal numbers of documents).

use crate::artifacts::corpus::{Document, LabelValue};
use crate::config::bench::datasets::TaskConfig;
use anyhow::{bail, Result};
use std::collections::BTreeMap;

/// A task with its classes resolved on the data.
#[derive(Debug, Clone)]
pub(crate) struct Task {
    pub name: String,
    pub column: String,
    /// The rule as resolved, for the summary (`top 2`, `quantiles 4 -> [..]`).
    pub rule: String,
    pub classes: Vec<String>,
    /// Numeric bins (thresholds); None for value lists.
    pub thresholds: Option<Vec<f64>>,
}

impl Task {
    /// The class of a label value; None outside every class.
    pub fn class_of(&self, v: &LabelValue) -> Option<usize> {
        match &self.thresholds {
            Some(t) => {
                let x = numeric(v)?;
                Some(t.iter().filter(|&&th| x >= th).count())
            }
            None => {
                let s = label_text(v)?;
                self.classes.iter().position(|c| *c == s)
            }
        }
    }
}

fn numeric(v: &LabelValue) -> Option<f64> {
    match v {
        LabelValue::Int(i) => Some(*i as f64),
        LabelValue::Float(f) if f.is_finite() => Some(*f),
        _ => None,
    }
}

fn label_text(v: &LabelValue) -> Option<String> {
    match v {
        LabelValue::Null => None,
        LabelValue::Int(i) => Some(i.to_string()),
        LabelValue::Float(f) => Some(fmt_num(*f)),
        LabelValue::Str(s) => Some(s.clone()),
    }
}

fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// Class names of numeric bins: `<t0`, `t0..t1`, ..., `>=tn`.
fn bin_names(t: &[f64]) -> Vec<String> {
    let mut out = vec![format!("<{}", fmt_num(t[0]))];
    for w in t.windows(2) {
        out.push(format!("{}..{}", fmt_num(w[0]), fmt_num(w[1])));
    }
    out.push(format!(">={}", fmt_num(t[t.len() - 1])));
    out
}

/// The n most frequent values (ties by value).
fn top_values(t: &TaskConfig, n: usize, values: &[&LabelValue], key: &str) -> Result<Vec<String>> {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for v in values {
        if let Some(s) = label_text(v) {
            *counts.entry(s).or_default() += 1;
        }
    }
    let mut by: Vec<(String, usize)> = counts.into_iter().collect();
    by.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    if by.len() < n {
        bail!(
            "{key} ({}): top = {n}, but column '{}' has only {} distinct values",
            t.name,
            t.column,
            by.len()
        );
    }
    Ok(by.into_iter().take(n).map(|(s, _)| s).collect())
}

/// Thresholds at the `q`-quantiles of the numeric values.
fn quantile_thresholds(t: &TaskConfig, q: usize, numeric: &[f64], key: &str) -> Result<Vec<f64>> {
    let mut sorted = numeric.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mut th: Vec<f64> = (1..q).map(|i| sorted[i * sorted.len() / q]).collect();
    th.dedup();
    if th.len() + 1 < q || th[0] <= sorted[0] {
        bail!(
            "{key} ({}): column '{}' has too few distinct values for {q} quantile bins",
            t.name,
            t.column
        );
    }
    Ok(th)
}

/// Resolves a task's rule on the documents' values of its column; `key`
/// names the task in the config for errors.
pub(crate) fn resolve_task(t: &TaskConfig, values: &[&LabelValue], key: &str) -> Result<Task> {
    let numbers: Vec<f64> = values.iter().filter_map(|v| numeric(v)).collect();
    let need_numeric = |what: &str| -> Result<()> {
        if numbers.is_empty() {
            bail!(
                "{key} ({}): {what} needs numbers, but column '{}' has no numeric values",
                t.name,
                t.column
            );
        }
        Ok(())
    };
    let (rule, classes, thresholds) = if let Some(c) = &t.classes {
        ("classes".to_string(), c.clone(), None)
    } else if let Some(n) = t.top {
        (format!("top {n}"), top_values(t, n, values, key)?, None)
    } else if let Some(s) = &t.split_at {
        need_numeric("split_at")?;
        (format!("split_at {s:?}"), bin_names(s), Some(s.clone()))
    } else {
        let q = t.quantiles.expect("validated: one rule");
        need_numeric("quantiles")?;
        let th = quantile_thresholds(t, q, &numbers, key)?;
        let names = bin_names(&th);
        (format!("quantiles {q} -> {th:?}"), names, Some(th))
    };
    Ok(Task {
        name: t.name.clone(),
        column: t.column.clone(),
        rule,
        classes,
        thresholds,
    })
}

/// A dataset's tasks resolved on its documents, with each document's class
/// per task.
pub(crate) struct Labelled {
    pub tasks: Vec<Task>,
    /// Per document, per task: its class.
    pub doc_classes: Vec<Vec<Option<usize>>>,
    /// Tasks left out, and why.
    pub notes: Vec<String>,
}

/// Resolves `configs` on `docs`, whose labels are in `columns` order. A task
/// that the data cannot support is an error, or with `lenient` (the derived
/// default dataset) left out with a note (the caller decides what no task
/// left means).
pub(crate) fn label_documents(
    configs: &[TaskConfig],
    columns: &[String],
    docs: &[Document],
    lenient: bool,
    key: &str,
) -> Result<Labelled> {
    let col_of = |t: &str| columns.iter().position(|c| c == t).expect("listed");
    let mut tasks: Vec<Task> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    for (j, t) in configs.iter().enumerate() {
        let col = col_of(&t.column);
        let values: Vec<&LabelValue> = docs.iter().map(|doc| &doc.labels[col]).collect();
        match resolve_task(t, &values, &format!("{key}.tasks[{j}]")) {
            Ok(task) => tasks.push(task),
            Err(e) if lenient => notes.push(format!("task {} left out: {e:#}", t.name)),
            Err(e) => return Err(e),
        }
    }
    let cols: Vec<usize> = tasks.iter().map(|t| col_of(&t.column)).collect();
    let doc_classes = docs
        .iter()
        .map(|doc| {
            tasks
                .iter()
                .zip(&cols)
                .map(|(t, &c)| t.class_of(&doc.labels[c]))
                .collect()
        })
        .collect();
    Ok(Labelled {
        tasks,
        doc_classes,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(name: &str) -> TaskConfig {
        TaskConfig {
            name: name.into(),
            column: "c".into(),
            classes: None,
            top: None,
            split_at: None,
            quantiles: None,
        }
    }

    fn ints(v: &[i64]) -> Vec<LabelValue> {
        v.iter().map(|&i| LabelValue::Int(i)).collect()
    }

    fn strs(v: &[&str]) -> Vec<LabelValue> {
        v.iter().map(|s| LabelValue::Str(s.to_string())).collect()
    }

    fn resolve(t: &TaskConfig, values: &[LabelValue]) -> Result<Task> {
        let refs: Vec<&LabelValue> = values.iter().collect();
        resolve_task(t, &refs, "bench.datasets[0].tasks[0]")
    }

    #[test]
    fn top_takes_the_most_frequent_values_ties_by_name() {
        let v = strs(&["R", "D", "D", "W", "R", "F"]);
        let t = resolve(
            &TaskConfig {
                top: Some(2),
                ..cfg("party")
            },
            &v,
        )
        .unwrap();
        assert_eq!(t.classes, vec!["D", "R"]);
        assert_eq!(t.rule, "top 2");
        assert_eq!(t.class_of(&LabelValue::Str("R".into())), Some(1));
        assert_eq!(t.class_of(&LabelValue::Str("W".into())), None);
        assert_eq!(t.class_of(&LabelValue::Null), None);
        let err = resolve(
            &TaskConfig {
                top: Some(5),
                ..cfg("party")
            },
            &v,
        )
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("only 4 distinct values"),
            "{err:#}"
        );
    }

    #[test]
    fn quantiles_give_equal_bins_and_named_thresholds() {
        let v = ints(&[1900, 1910, 1920, 1930, 1940, 1950, 1960, 1970]);
        let t = resolve(
            &TaskConfig {
                quantiles: Some(4),
                ..cfg("period")
            },
            &v,
        )
        .unwrap();
        assert_eq!(t.thresholds, Some(vec![1920.0, 1940.0, 1960.0]));
        assert_eq!(
            t.classes,
            vec!["<1920", "1920..1940", "1940..1960", ">=1960"]
        );
        let per_class: Vec<usize> = (0..4)
            .map(|c| v.iter().filter(|x| t.class_of(x) == Some(c)).count())
            .collect();
        assert_eq!(per_class, vec![2, 2, 2, 2]);
        // Too few distinct values for the bins.
        let err = resolve(
            &TaskConfig {
                quantiles: Some(4),
                ..cfg("period")
            },
            &ints(&[1, 1, 1, 2]),
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("too few distinct values"));
    }

    #[test]
    fn split_at_bins_numbers_and_needs_them() {
        let t = resolve(
            &TaskConfig {
                split_at: Some(vec![1912.0]),
                ..cfg("era")
            },
            &ints(&[1900, 1912, 1950]),
        )
        .unwrap();
        assert_eq!(t.classes, vec!["<1912", ">=1912"]);
        assert_eq!(t.class_of(&LabelValue::Int(1911)), Some(0));
        assert_eq!(t.class_of(&LabelValue::Float(1912.0)), Some(1));
        assert_eq!(t.class_of(&LabelValue::Float(f64::NAN)), None);
        assert_eq!(t.class_of(&LabelValue::Str("1950".into())), None);
        let err = resolve(
            &TaskConfig {
                split_at: Some(vec![1.0]),
                ..cfg("era")
            },
            &strs(&["a", "b"]),
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("split_at needs numbers"));
    }

    #[test]
    fn listed_classes_match_label_text() {
        let t = resolve(
            &TaskConfig {
                classes: Some(vec!["3".into(), "1.5".into()]),
                ..cfg("k")
            },
            &[],
        )
        .unwrap();
        assert_eq!(t.class_of(&LabelValue::Int(3)), Some(0));
        assert_eq!(t.class_of(&LabelValue::Float(3.0)), Some(0));
        assert_eq!(t.class_of(&LabelValue::Float(1.5)), Some(1));
        assert_eq!(t.class_of(&LabelValue::Int(2)), None);
    }

    fn doc(labels: Vec<LabelValue>) -> Document {
        Document {
            id: "d".into(),
            source: "s".into(),
            text: "t".into(),
            labels,
        }
    }

    #[test]
    fn lenient_labelling_leaves_out_unsupported_tasks() {
        let columns = vec!["party".to_string(), "year".to_string()];
        let docs: Vec<Document> = [("D", 1900), ("R", 1900), ("D", 1900)]
            .iter()
            .map(|&(p, y)| doc(vec![LabelValue::Str(p.into()), LabelValue::Int(y)]))
            .collect();
        let configs = vec![
            TaskConfig {
                top: Some(2),
                column: "party".into(),
                ..cfg("party")
            },
            TaskConfig {
                quantiles: Some(2),
                column: "year".into(),
                ..cfg("era")
            },
        ];
        let l = label_documents(&configs, &columns, &docs, true, "k").unwrap();
        assert_eq!(l.tasks.len(), 1);
        assert_eq!(l.notes.len(), 1);
        assert!(l.notes[0].starts_with("task era left out"), "{:?}", l.notes);
        assert_eq!(
            l.doc_classes,
            vec![vec![Some(0)], vec![Some(1)], vec![Some(0)]]
        );
        let err = label_documents(&configs, &columns, &docs, false, "k")
            .err()
            .expect("a configured task the data cannot support is an error");
        assert!(
            format!("{err:#}").starts_with("k.tasks[1] (era)"),
            "{err:#}"
        );
        let none = label_documents(&configs[1..], &columns, &docs, true, "k").unwrap();
        assert!(none.tasks.is_empty());
    }
}
