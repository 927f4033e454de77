//! Reading a text corpus: a folder of .txt files, or a JSONL / Parquet file
//! with a text column and optional id and label columns.

use crate::config::{Config, CorpusFormat};
use anyhow::{anyhow, bail, Context, Result};
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type, Int32Type, Int64Type};
use std::path::Path;

#[derive(Debug, Clone, PartialEq)]
pub enum LabelValue {
    Null,
    Int(i64),
    Float(f64),
    Str(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelType {
    Int,
    Float,
    Str,
}

#[derive(Debug, Clone)]
pub struct Document {
    pub id: String,
    /// Where the document came from (file, or file:row).
    pub source: String,
    pub text: String,
    /// One value per configured label column.
    pub labels: Vec<LabelValue>,
}

#[derive(Debug, Clone)]
pub struct Corpus {
    pub label_names: Vec<String>,
    pub label_types: Vec<LabelType>,
    pub docs: Vec<Document>,
}

pub fn read_corpus(cfg: &Config) -> Result<Corpus> {
    let path = cfg.resolve(&cfg.corpus.path);
    if !path.exists() {
        bail!(
            "corpus.path = {}: {} does not exist (run `make setup` for the default corpus)",
            cfg.corpus.path.display(),
            path.display()
        );
    }
    let docs = match cfg.corpus_format()? {
        CorpusFormat::TxtDir => read_txt_dir(&path, &cfg.corpus.label_columns)?,
        CorpusFormat::Jsonl => read_jsonl(&path, cfg)?,
        CorpusFormat::Parquet => read_parquet(&path, cfg)?,
    };
    if docs.is_empty() {
        bail!("corpus {}: no documents", path.display());
    }
    let mut seen = std::collections::HashSet::new();
    for d in &docs {
        if !seen.insert(d.id.as_str()) {
            bail!(
                "corpus {}: document id '{}' appears twice ({})",
                path.display(),
                d.id,
                d.source
            );
        }
    }
    let label_types = cfg
        .corpus
        .label_columns
        .iter()
        .enumerate()
        .map(|(i, name)| {
            label_type(&docs, i)
                .map_err(|e| anyhow!("corpus {}: label column '{name}': {e}", path.display()))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Corpus {
        label_names: cfg.corpus.label_columns.clone(),
        label_types,
        docs,
    })
}

/// One type per column: integers widen to floats; strings mix with nothing else.
fn label_type(docs: &[Document], col: usize) -> Result<LabelType> {
    let mut t: Option<LabelType> = None;
    for d in docs {
        let this = match &d.labels[col] {
            LabelValue::Null => continue,
            LabelValue::Int(_) => LabelType::Int,
            LabelValue::Float(_) => LabelType::Float,
            LabelValue::Str(_) => LabelType::Str,
        };
        t = Some(match (t, this) {
            (None, x) => x,
            (Some(a), b) if a == b => a,
            (Some(LabelType::Int), LabelType::Float) | (Some(LabelType::Float), LabelType::Int) => {
                LabelType::Float
            }
            (Some(a), b) => bail!("mixes {a:?} and {b:?} values (document {})", d.id),
        });
    }
    Ok(t.unwrap_or(LabelType::Str))
}

fn read_txt_dir(dir: &Path, labels: &[String]) -> Result<Vec<Document>> {
    if !labels.is_empty() {
        bail!("corpus.label_columns: a folder of .txt files has no label columns; use JSONL or Parquet for labels");
    }
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("listing corpus folder {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let text =
                std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
            Ok(Document {
                id: p
                    .file_stem()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .to_string(),
                source: p
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .to_string(),
                text,
                labels: vec![],
            })
        })
        .collect()
}

fn read_jsonl(path: &Path, cfg: &Config) -> Result<Vec<Document>> {
    let c = &cfg.corpus;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let file = path
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .to_string();
    let mut docs = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let at = format!("{}:{}", path.display(), i + 1);
        let obj: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(line).map_err(|e| anyhow!("{at}: not a JSON object: {e}"))?;
        let field = |name: &str| {
            obj.get(name)
                .ok_or_else(|| anyhow!("{at}: no field '{name}'"))
        };
        let body = field(&c.text_column)?
            .as_str()
            .ok_or_else(|| {
                anyhow!(
                    "{at}: field '{}' (corpus.text_column) is not a string",
                    c.text_column
                )
            })?
            .to_string();
        let id = match &c.id_column {
            Some(col) => match field(col)? {
                serde_json::Value::String(s) => s.clone(),
                v => v.to_string(),
            },
            None => i.to_string(),
        };
        let labels = c
            .label_columns
            .iter()
            .map(|col| {
                Ok(match field(col)? {
                    serde_json::Value::Null => LabelValue::Null,
                    serde_json::Value::String(s) => LabelValue::Str(s.clone()),
                    serde_json::Value::Bool(b) => LabelValue::Str(b.to_string()),
                    serde_json::Value::Number(n) => match n.as_i64() {
                        Some(v) => LabelValue::Int(v),
                        None => LabelValue::Float(n.as_f64().unwrap_or(f64::NAN)),
                    },
                    v => bail!("{at}: label '{col}' is {v}, expected a string, number or null"),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        docs.push(Document {
            id,
            source: format!("{file}:{}", i + 1),
            text: body,
            labels,
        });
    }
    Ok(docs)
}

fn read_parquet(path: &Path, cfg: &Config) -> Result<Vec<Document>> {
    let c = &cfg.corpus;
    let batches = crate::artifacts::parquet_io::read_all(path)?;
    let file = path
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .to_string();
    let mut docs = Vec::new();
    let mut row = 0usize;
    for batch in &batches {
        let col = |name: &str| -> Result<&dyn Array> {
            batch
                .column_by_name(name)
                .map(|a| a.as_ref())
                .ok_or_else(|| {
                    anyhow!(
                        "{}: no column '{name}' (columns: {})",
                        path.display(),
                        column_names(batch)
                    )
                })
        };
        let texts = col(&c.text_column)?;
        let ids = c.id_column.as_deref().map(col).transpose()?;
        let labels: Vec<&dyn Array> = c
            .label_columns
            .iter()
            .map(|n| col(n))
            .collect::<Result<_>>()?;
        for r in 0..batch.num_rows() {
            let body = match cell(texts, r)
                .map_err(|e| anyhow!("{}: column '{}': {e}", path.display(), c.text_column))?
            {
                LabelValue::Str(s) => s,
                _ => bail!(
                    "{}: column '{}' (corpus.text_column) is not text",
                    path.display(),
                    c.text_column
                ),
            };
            let id = match ids {
                Some(a) => match cell(a, r)? {
                    LabelValue::Str(s) => s,
                    LabelValue::Int(v) => v.to_string(),
                    other => bail!("{}: id value {other:?} at row {}", path.display(), row + r),
                },
                None => (row + r).to_string(),
            };
            let values = labels
                .iter()
                .zip(&c.label_columns)
                .map(|(a, n)| {
                    cell(*a, r).map_err(|e| anyhow!("{}: column '{n}': {e}", path.display()))
                })
                .collect::<Result<Vec<_>>>()?;
            docs.push(Document {
                id,
                source: format!("{file}:{}", row + r),
                text: body,
                labels: values,
            });
        }
        row += batch.num_rows();
    }
    Ok(docs)
}

fn column_names(batch: &RecordBatch) -> String {
    batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn cell(a: &dyn Array, r: usize) -> Result<LabelValue> {
    if a.is_null(r) {
        return Ok(LabelValue::Null);
    }
    Ok(match a.data_type() {
        DataType::Utf8 => LabelValue::Str(a.as_string::<i32>().value(r).to_string()),
        DataType::LargeUtf8 => LabelValue::Str(a.as_string::<i64>().value(r).to_string()),
        DataType::Utf8View => LabelValue::Str(a.as_string_view().value(r).to_string()),
        DataType::Int64 => LabelValue::Int(a.as_primitive::<Int64Type>().value(r)),
        DataType::Int32 => LabelValue::Int(a.as_primitive::<Int32Type>().value(r) as i64),
        DataType::Float64 => LabelValue::Float(a.as_primitive::<Float64Type>().value(r)),
        DataType::Boolean => LabelValue::Str(a.as_boolean().value(r).to_string()),
        t => bail!("type {t} is not supported (expected text, int32/int64, float64 or boolean)"),
    })
}
