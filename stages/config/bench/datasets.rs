//! bench.datasets: the labelled datasets the probing benchmarks read.

use crate::config::ExtractDtype;
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// One labelled dataset (an entry of `bench.datasets`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DatasetConfig {
    /// Names the artifact (`datasets/<name>`) and the `dataset` column of
    /// every benchmark table: letters, digits, '-', '_' and '.'.
    pub name: String,
    /// A local .jsonl or .parquet file, relative to the config file's folder.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// A Hugging Face dataset id (e.g. LabHC/bias_in_bios); needs `hf_file`
    /// and network access unless the file is in the HF cache already.
    #[serde(default)]
    pub hf: Option<String>,
    /// The .jsonl or .parquet file inside the hub dataset repository, e.g.
    /// data/train-00000-of-00001.parquet.
    #[serde(default)]
    pub hf_file: Option<String>,
    /// The hub revision (default main).
    #[serde(default)]
    pub revision: Option<String>,
    /// The column holding each document's text.
    #[serde(default = "default_text_column")]
    pub text_column: String,
    /// The column naming each document (its pieces stay in one split); the
    /// row number when absent.
    #[serde(default)]
    pub id_column: Option<String>,
    /// The labelled tasks: label column values -> classes.
    #[serde(default)]
    pub tasks: Vec<TaskConfig>,
    /// Tokens per piece, BOS included (SAEBench's context_length is 128).
    #[serde(default = "default_piece_tokens")]
    pub piece_tokens: usize,
    /// At most this many pieces per document, evenly spaced through it.
    #[serde(default = "default_pieces_per_doc")]
    pub pieces_per_doc: usize,
    /// At most this many pieces per class (of every task) and split; null
    /// for no cap.
    #[serde(default)]
    pub pieces_per_class: Option<usize>,
    /// Share of the documents in the test split.
    #[serde(default = "default_test_fraction")]
    pub test_fraction: f64,
    /// Seed of the train/test split and of the document order under a cap.
    #[serde(default)]
    pub seed: u64,
    /// Stored type of the per-token activations (f16 or f32); the
    /// mean-pooled activations are always f32.
    #[serde(default = "default_token_dtype")]
    pub token_dtype: ExtractDtype,
}

/// A task: one label column's values mapped to classes. Exactly one of
/// `classes`, `top`, `split_at` and `quantiles` is given.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TaskConfig {
    /// The task's name in the benchmark tables (e.g. party).
    pub name: String,
    /// The label column it reads.
    pub column: String,
    /// These values (as text) are the classes, in this order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classes: Option<Vec<String>>,
    /// The n most frequent values (by documents) are the classes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top: Option<usize>,
    /// Numeric thresholds t1 < t2 < ...: classes "<t1", "t1..t2", ">=tn".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split_at: Option<Vec<f64>>,
    /// n bins of equal document counts (thresholds at the quantiles).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantiles: Option<usize>,
}

pub fn default_text_column() -> String {
    "text".into()
}
pub fn default_piece_tokens() -> usize {
    64
}
pub fn default_pieces_per_doc() -> usize {
    5
}
pub fn default_test_fraction() -> f64 {
    0.3
}
pub fn default_token_dtype() -> ExtractDtype {
    ExtractDtype::F16
}

/// Checks `bench.datasets`; errors name the key, the value and what was expected.
pub fn validate(datasets: &[DatasetConfig]) -> Result<()> {
    let mut names = std::collections::HashSet::new();
    for (i, d) in datasets.iter().enumerate() {
        let key = format!("bench.datasets[{i}]");
        if d.name.is_empty()
            || !d
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            bail!(
                "{key}.name = '{}': expected letters, digits, '-', '_' or '.'",
                d.name
            );
        }
        if !names.insert(d.name.as_str()) {
            bail!("{key}.name = '{}': another dataset has that name", d.name);
        }
        match (&d.path, &d.hf) {
            (Some(_), Some(_)) => bail!("{key}: give either path or hf, not both"),
            (None, None) => bail!(
                "{key} ({}): missing path (a local .jsonl or .parquet file) or hf (a Hugging Face dataset id)",
                d.name
            ),
            (None, Some(id)) if d.hf_file.is_none() => bail!(
                "{key}.hf_file: missing; hf = {id} needs the file of the dataset repository to read, e.g. data/train-00000-of-00001.parquet"
            ),
            _ => {}
        }
        if d.tasks.is_empty() {
            bail!(
                "{key}.tasks: empty; expected at least one task (name, column, and classes, top, split_at or quantiles)"
            );
        }
        if d.piece_tokens < 2 {
            bail!(
                "{key}.piece_tokens = {}: expected >= 2 (BOS plus at least one token)",
                d.piece_tokens
            );
        }
        if d.pieces_per_doc == 0 {
            bail!("{key}.pieces_per_doc = 0: expected at least 1");
        }
        if d.pieces_per_class == Some(0) {
            bail!("{key}.pieces_per_class = 0: expected at least 1, or null for no cap");
        }
        if !(d.test_fraction > 0.0 && d.test_fraction < 1.0) {
            bail!(
                "{key}.test_fraction = {}: expected a fraction strictly between 0 and 1",
                d.test_fraction
            );
        }
        let mut tnames = std::collections::HashSet::new();
        for (j, t) in d.tasks.iter().enumerate() {
            let tkey = format!("{key}.tasks[{j}]");
            if t.name.is_empty()
                || !t
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                bail!(
                    "{tkey}.name = '{}': expected letters, digits, '-', '_' or '.'",
                    t.name
                );
            }
            if !tnames.insert(t.name.as_str()) {
                bail!("{tkey}.name = '{}': another task has that name", t.name);
            }
            if t.column == d.text_column {
                bail!("{tkey}.column = '{}': that is the text column", t.column);
            }
            let rules = [
                t.classes.is_some(),
                t.top.is_some(),
                t.split_at.is_some(),
                t.quantiles.is_some(),
            ];
            if rules.iter().filter(|r| **r).count() != 1 {
                bail!(
                    "{tkey} ({}): give exactly one of classes, top, split_at and quantiles",
                    t.name
                );
            }
            if let Some(c) = &t.classes {
                let distinct: std::collections::HashSet<&String> = c.iter().collect();
                if c.len() < 2 || distinct.len() != c.len() {
                    bail!("{tkey}.classes = {c:?}: expected at least two distinct values");
                }
            }
            if let Some(n) = t.top {
                if n < 2 {
                    bail!("{tkey}.top = {n}: expected at least 2 classes");
                }
            }
            if let Some(s) = &t.split_at {
                if s.is_empty()
                    || s.iter().any(|v| !v.is_finite())
                    || s.windows(2).any(|w| w[0] >= w[1])
                {
                    bail!("{tkey}.split_at = {s:?}: expected increasing finite thresholds");
                }
            }
            if let Some(q) = t.quantiles {
                if q < 2 {
                    bail!("{tkey}.quantiles = {q}: expected at least 2 bins");
                }
            }
        }
    }
    Ok(())
}
