//! corpus: where the documents are and which columns they carry.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CorpusFormat {
    /// A folder of .txt files, one document each.
    TxtDir,
    Jsonl,
    Parquet,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorpusConfig {
    pub path: PathBuf,
    /// Inferred from the path when absent (folder, .jsonl, .parquet).
    #[serde(default)]
    pub format: Option<CorpusFormat>,
    #[serde(default = "default_text_column")]
    pub text_column: String,
    /// Column naming each document; the row number when absent.
    #[serde(default)]
    pub id_column: Option<String>,
    /// Columns carried into `tokenize_documents` (for probing tasks).
    #[serde(default)]
    pub label_columns: Vec<String>,
}

fn default_text_column() -> String {
    "text".into()
}
