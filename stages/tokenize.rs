//! tokenize: corpus -> `documents` and `sequences` tables.
//!
//! Each document is tokenized on its own and cut into BOS-first sequences of
//! context_size tokens; documents (never sequences) are split into train and
//! eval by a seeded shuffle, up to the configured token budgets.

use crate::artifacts::corpus::{read_corpus, Corpus, LabelType, LabelValue};
use crate::artifacts::tokens::{DOCUMENTS_FILE, SEQUENCES_FILE};
use crate::config::Config;
use crate::pipeline::fingerprint::Fingerprints;
use crate::pipeline::stage::{Registry, Stage, Unit};
use crate::pipeline::stage::{StageInput, StageOutput};
use crate::pipeline::store::TableEntry;
use anyhow::Result;
use arrow::array::{
    ArrayRef, Float64Builder, Int32Builder, Int64Builder, ListBuilder, RecordBatch, StringBuilder,
};
use arrow::datatypes::{DataType, Field, Schema};
use coact::text::{allocate_splits, encode_all, pack_document, Split};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// Splits the corpus into train and eval documents and packs each into
/// BOS-first sequences.
pub struct Tokenize;

impl Stage for Tokenize {
    fn name(&self) -> &'static str {
        "tokenize"
    }
    fn about(&self) -> &'static str {
        "split the corpus by document and pack BOS-first sequences"
    }
    fn units(&self, cfg: &Config, _: &Registry) -> Result<Vec<Unit>> {
        Ok(Unit::single(key_config(cfg)))
    }
    fn run(&self, input: &StageInput) -> Result<StageOutput> {
        run(input)
    }
}

/// The part of the config a tokenize artifact's key hashes, with content
/// digests of the corpus and the tokenizer file.
fn key_config(cfg: &Config) -> Value {
    let mut fp = Fingerprints::open(&cfg.data_dir());
    let corpus_path = cfg.resolve(&cfg.corpus.path);
    let format = cfg.corpus_format().ok();
    let tokenizer = if cfg.model.tokenizer == "hf" {
        json!({ "hf_id": cfg.model.hf_id, "revision": cfg.model.revision })
    } else {
        let p = cfg.resolve(Path::new(&cfg.model.tokenizer));
        json!({ "path": cfg.model.tokenizer, "fingerprint": fp.path(&p, format) })
    };
    json!({
        "corpus": {
            "path": cfg.corpus.path,
            "format": format,
            "text_column": cfg.corpus.text_column,
            "id_column": cfg.corpus.id_column,
            "label_columns": cfg.corpus.label_columns,
            "fingerprint": fp.path(&corpus_path, format),
        },
        "tokenizer": tokenizer,
        "bos_token": cfg.model.bos_token,
        "tokenize": cfg.tokenize,
    })
}

pub fn run(input: &StageInput) -> Result<StageOutput> {
    let cfg = input.cfg;
    let t = &cfg.tokenize;
    let tokenizer = crate::artifacts::tokens::load_tokenizer(cfg)?;
    let corpus = read_corpus(cfg)?;

    let spinner = input
        .progress
        .spinner(format!("tokenizing {} documents", corpus.docs.len()));
    let texts: Vec<&str> = corpus.docs.iter().map(|d| d.text.as_str()).collect();
    let tokens = encode_all(&tokenizer, &texts)?;
    spinner.finish_and_clear();

    let packed: Vec<Vec<Vec<u32>>> = tokens
        .iter()
        .map(|toks| pack_document(toks, t.context_size, tokenizer.bos_id()))
        .collect();
    let per_doc: Vec<usize> = packed.iter().map(|p| p.len()).collect();
    let ctx = t.context_size as u64;
    let alloc = allocate_splits(
        &per_doc,
        (t.eval_tokens / ctx) as usize,
        t.train_tokens.map(|n| (n / ctx) as usize),
        t.seed,
    )?;

    // Sequences: eval first, then train, each in document order, so seq_id is stable.
    let mut seq_ids = Int64Builder::new();
    let mut seq_docs = StringBuilder::new();
    let mut seq_split = StringBuilder::new();
    let mut seq_tokens = ListBuilder::new(Int32Builder::new()).with_field(Field::new(
        "item",
        DataType::Int32,
        false,
    ));
    let mut counts: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    let mut next_id = 0i64;
    for split in [Split::Eval, Split::Train] {
        for (d, a) in alloc.iter().enumerate().filter(|(_, a)| a.split == split) {
            for seq in &packed[d][..a.sequences] {
                seq_ids.append_value(next_id);
                seq_docs.append_value(&corpus.docs[d].id);
                seq_split.append_value(split.as_str());
                seq_tokens
                    .values()
                    .append_slice(&seq.iter().map(|&x| x as i32).collect::<Vec<_>>());
                seq_tokens.append(true);
                next_id += 1;
            }
            let c = counts.entry(split.as_str()).or_default();
            c.0 += 1;
            c.1 += a.sequences as u64;
        }
    }
    let sequences = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("seq_id", DataType::Int64, false),
            Field::new("doc_id", DataType::Utf8, false),
            Field::new("split", DataType::Utf8, false),
            Field::new(
                "tokens",
                DataType::List(Arc::new(Field::new("item", DataType::Int32, false))),
                false,
            ),
        ])),
        vec![
            Arc::new(seq_ids.finish()),
            Arc::new(seq_docs.finish()),
            Arc::new(seq_split.finish()),
            Arc::new(seq_tokens.finish()),
        ],
    )?;
    let documents = documents_table(&corpus, &tokens, &alloc)?;

    let out = input.out_dir;
    let doc_rows =
        crate::artifacts::parquet_io::write_all(&out.join(DOCUMENTS_FILE), &[documents])?;
    let seq_rows =
        crate::artifacts::parquet_io::write_all(&out.join(SEQUENCES_FILE), &[sequences])?;
    let tables = BTreeMap::from([
        (
            "documents".to_string(),
            TableEntry {
                files: vec![DOCUMENTS_FILE.into()],
                rows: doc_rows,
            },
        ),
        (
            "sequences".to_string(),
            TableEntry {
                files: vec![SEQUENCES_FILE.into()],
                rows: seq_rows,
            },
        ),
    ]);
    let split_summary: serde_json::Map<String, serde_json::Value> = counts
        .iter()
        .map(|(s, (docs, seqs))| {
            (
                s.to_string(),
                json!({"documents": docs, "sequences": seqs, "tokens": seqs * ctx}),
            )
        })
        .collect();
    let corpus_tokens: usize = tokens.iter().map(|t| t.len()).sum();
    input.progress.note(format!(
        "tokenize: {} documents, {} corpus tokens; eval {} / train {} sequences of {}",
        corpus.docs.len(),
        corpus_tokens,
        counts.get("eval").map_or(0, |c| c.1),
        counts.get("train").map_or(0, |c| c.1),
        t.context_size
    ));
    Ok(StageOutput {
        tables,
        summary: json!({
            "documents": corpus.docs.len(),
            "corpus_tokens": corpus_tokens,
            "context_size": t.context_size,
            "bos_id": tokenizer.bos_id(),
            "vocab_size": tokenizer.base_vocab_size(),
            "tokenizer": tokenizer.fingerprint(),
            "splits": split_summary,
        }),
    })
}

fn documents_table(
    corpus: &Corpus,
    tokens: &[Vec<u32>],
    alloc: &[coact::text::Allocation],
) -> Result<RecordBatch> {
    let mut fields = vec![
        Field::new("doc_id", DataType::Utf8, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("split", DataType::Utf8, false),
        Field::new("n_tokens", DataType::Int64, false),
        Field::new("n_sequences", DataType::Int64, false),
    ];
    let docs = &corpus.docs;
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(arrow::array::StringArray::from_iter_values(
            docs.iter().map(|d| d.id.as_str()),
        )),
        Arc::new(arrow::array::StringArray::from_iter_values(
            docs.iter().map(|d| d.source.as_str()),
        )),
        Arc::new(arrow::array::StringArray::from_iter_values(
            alloc.iter().map(|a| a.split.as_str()),
        )),
        Arc::new(arrow::array::Int64Array::from_iter_values(
            tokens.iter().map(|t| t.len() as i64),
        )),
        Arc::new(arrow::array::Int64Array::from_iter_values(
            alloc.iter().map(|a| a.sequences as i64),
        )),
    ];
    for (i, (name, ty)) in corpus
        .label_names
        .iter()
        .zip(&corpus.label_types)
        .enumerate()
    {
        let values = docs.iter().map(|d| &d.labels[i]);
        let (dt, array): (DataType, ArrayRef) = match ty {
            LabelType::Int => {
                let mut b = Int64Builder::new();
                for v in values {
                    match v {
                        LabelValue::Int(x) => b.append_value(*x),
                        _ => b.append_null(),
                    }
                }
                (DataType::Int64, Arc::new(b.finish()))
            }
            LabelType::Float => {
                let mut b = Float64Builder::new();
                for v in values {
                    match v {
                        LabelValue::Int(x) => b.append_value(*x as f64),
                        LabelValue::Float(x) => b.append_value(*x),
                        _ => b.append_null(),
                    }
                }
                (DataType::Float64, Arc::new(b.finish()))
            }
            LabelType::Str => {
                let mut b = StringBuilder::new();
                for v in values {
                    match v {
                        LabelValue::Str(s) => b.append_value(s),
                        _ => b.append_null(),
                    }
                }
                (DataType::Utf8, Arc::new(b.finish()))
            }
        };
        fields.push(Field::new(name, dt, true));
        columns.push(array);
    }
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}
