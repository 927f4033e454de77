//! The tokenize stage's artifact (`documents.parquet`: one row per
//! document with its split and labels; `sequences.parquet`: one row per
//! BOS-first sequence) and the tokenizer it was made with.

use crate::config::Config;
use crate::pipeline::stage::StageInput;
use crate::pipeline::store::Store;
use anyhow::{anyhow, Context, Result};
use arrow::array::AsArray;
use arrow::datatypes::{Int32Type, Int64Type};
use coact::text::TextTokenizer;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

pub const DOCUMENTS_FILE: &str = "documents.parquet";
pub const SEQUENCES_FILE: &str = "sequences.parquet";

/// Where the tokenizer.json comes from: a local path or the model's hub repo.
pub fn tokenizer_path(cfg: &Config) -> Result<PathBuf> {
    if cfg.model.tokenizer == "hf" {
        let repo = cfg
            .model
            .hf_id
            .as_deref()
            .expect("validated: hf tokenizer needs hf_id");
        coact::hub::fetch_file(repo, cfg.model.revision.as_deref(), "tokenizer.json")
            .map_err(|e| anyhow!("model.tokenizer = hf: {e}"))
    } else {
        Ok(cfg.resolve(std::path::Path::new(&cfg.model.tokenizer)))
    }
}

pub fn load_tokenizer(cfg: &Config) -> Result<TextTokenizer> {
    let path = tokenizer_path(cfg)?;
    TextTokenizer::from_file(&path, &cfg.model.bos_token).map_err(|e| {
        if path.exists() {
            anyhow!("model.tokenizer: {e}")
        } else {
            anyhow!(
                "model.tokenizer = {}: {e} (run `make setup` for the default assets)",
                cfg.model.tokenizer
            )
        }
    })
}

impl StageInput<'_> {
    /// The study's tokenizer, loaded once per run.
    pub fn tokenizer(&self) -> Result<Arc<TextTokenizer>> {
        self.cache
            .get_or_try_insert("tokenizer", || load_tokenizer(self.cfg))
    }
}

/// Token sequences of one split, in seq_id order.
pub struct Sequences {
    pub seq_ids: Vec<i64>,
    pub tokens: Vec<Vec<u32>>,
}

/// Reads `tokenize_sequences` of the given tokenize artifact, by split.
pub fn read_sequences(store: &Store, tokenize_key: &str) -> Result<BTreeMap<String, Sequences>> {
    let path = store
        .artifact_dir("tokenize", tokenize_key)
        .join(SEQUENCES_FILE);
    let mut out: BTreeMap<String, Sequences> = BTreeMap::new();
    for batch in crate::artifacts::parquet_io::read_all(&path)? {
        let ids = batch
            .column_by_name("seq_id")
            .context("sequences: no seq_id")?
            .as_primitive::<Int64Type>();
        let splits = batch
            .column_by_name("split")
            .context("sequences: no split")?
            .as_string::<i32>();
        let lists = batch
            .column_by_name("tokens")
            .context("sequences: no tokens")?
            .as_list::<i32>();
        for r in 0..batch.num_rows() {
            let toks = lists.value(r);
            let toks = toks.as_primitive::<Int32Type>();
            let s = out.entry(splits.value(r).to_string()).or_insert(Sequences {
                seq_ids: vec![],
                tokens: vec![],
            });
            s.seq_ids.push(ids.value(r));
            s.tokens
                .push(toks.values().iter().map(|&t| t as u32).collect());
        }
    }
    Ok(out)
}
