//! datasets stage (issue 7): the model's activations on labelled text, the
//! input of the probing benchmarks (sparse_probing, scr_tpp), shared by
//! every variant. One artifact per dataset (`datasets/<name>`).
//!
//! A dataset is a local JSONL or Parquet file with a text column and label
//! columns, or one file of a Hugging Face dataset repository fetched with
//! hf-hub (`hf`, `hf_file`). Without `bench.datasets` the stage derives one
//! dataset, `corpus`, from the study's own corpus and its label columns
//! ([`default_datasets`]: party, era and period tasks on the State of the
//! Union addresses).
//!
//! What happens to a dataset:
//! 1. Tasks turn label values into classes: `classes` (listed values), `top`
//!    (the n most frequent values), `split_at` (numeric thresholds) or
//!    `quantiles` (numeric thresholds at the documents' quantiles, so the
//!    bins hold equal numbers of documents). A document outside every task's
//!    classes is dropped.
//! 2. Documents (never pieces) are split into train and test by a seeded
//!    shuffle, stratified by the documents' classes in every task, so that
//!    no document has pieces on both sides and every class combination is
//!    split in the same proportion.
//! 3. Each document is tokenized and cut into pieces of `piece_tokens` (BOS +
//!    piece_tokens - 1 tokens, SAEBench's context_length); a text shorter
//!    than one piece gives one shorter piece. At most `pieces_per_doc`
//!    pieces are kept per document, evenly spaced through it (pieces of one
//!    document are alike, so many documents beat many pieces); with
//!    `pieces_per_class`, documents are taken in a seeded order as long as
//!    their pieces keep every class they belong to within that many pieces
//!    in their split.
//! 4. The model runs to the study layer on each piece (BOS first). Stored:
//!    `pieces.parquet` (piece, document, split, the class of each task, the
//!    residual mean-pooled over the non-BOS tokens, f32) and
//!    `tokens-NNNNN.parquet` (each non-BOS token's residual, f16 by default:
//!    the SAE benchmarks encode them, since mean-pooling latents needs
//!    per-token activations).
//!
//! Differences from SAEBench: SAEBench draws 4000 train and 1000 test texts
//! per class from datasets of short texts and truncates each to 128 tokens;
//! coact's default has 233 long addresses, so it cuts them into pieces and
//! splits by document, with much smaller sets (sized for the 2-core budget:
//! ~1.2k pieces of 64 tokens, ~2 minutes of model time).

use crate::artifacts::corpus::{read_corpus, LabelValue};
use crate::config::bench::datasets::{
    default_piece_tokens, default_pieces_per_doc, default_test_fraction, default_token_dtype,
    DatasetConfig, TaskConfig,
};
use crate::config::{Config, CorpusConfig, CorpusFormat, ExtractDtype};
use crate::pipeline::stage::{Registry, Stage, Unit};
use crate::pipeline::stage::{StageInput, StageOutput};
use crate::pipeline::store::{Store, TableEntry};
use anyhow::{anyhow, bail, Context, Result};
use arrow::array::{
    Array, ArrayRef, AsArray, FixedSizeListArray, Float16Array, Float32Array, Int32Array,
    RecordBatch, StringArray,
};
use arrow::datatypes::{DataType, Field, Float16Type, Float32Type, Int32Type, Schema};
use candle_core::{Device, Tensor};
use coact::lm::hook_name;
use coact::rng::SplitMix64;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The name of the dataset derived from the corpus.
pub const DEFAULT_DATASET: &str = "corpus";

/// The datasets the study uses: `bench.datasets`, or when that is empty one
/// dataset derived from the corpus: `party` (its two most frequent values:
/// Democratic and Republican on the SOTU corpus), `era` (year split at the
/// documents' median) and `period` (year in four quantile bins, the TPP
/// classes), for whichever of the columns party and year the corpus labels.
/// Empty when the corpus has neither.
pub fn default_datasets(cfg: &Config) -> Vec<DatasetConfig> {
    if !cfg.bench.datasets.is_empty() {
        return cfg.bench.datasets.clone();
    }
    let has = |c: &str| cfg.corpus.label_columns.iter().any(|l| l == c);
    let task = |name: &str, column: &str| TaskConfig {
        name: name.into(),
        column: column.into(),
        classes: None,
        top: None,
        split_at: None,
        quantiles: None,
    };
    let mut tasks = Vec::new();
    if has("party") {
        tasks.push(TaskConfig {
            top: Some(2),
            ..task("party", "party")
        });
    }
    if has("year") {
        tasks.push(TaskConfig {
            quantiles: Some(2),
            ..task("era", "year")
        });
        tasks.push(TaskConfig {
            quantiles: Some(4),
            ..task("period", "year")
        });
    }
    if tasks.is_empty() {
        return vec![];
    }
    vec![DatasetConfig {
        name: DEFAULT_DATASET.into(),
        path: Some(cfg.corpus.path.clone()),
        hf: None,
        hf_file: None,
        revision: None,
        text_column: cfg.corpus.text_column.clone(),
        id_column: cfg.corpus.id_column.clone(),
        tasks,
        piece_tokens: default_piece_tokens(),
        pieces_per_doc: default_pieces_per_doc(),
        pieces_per_class: None,
        test_fraction: default_test_fraction(),
        seed: 0,
        token_dtype: default_token_dtype(),
    }]
}

/// One artifact per dataset: (unit name, config its key hashes). The key
/// covers the dataset's settings and the content digest of a local file.
pub fn units(cfg: &Config) -> Result<Vec<(String, Value)>> {
    Ok(default_datasets(cfg)
        .into_iter()
        .map(|d| {
            let fingerprint = d
                .path
                .as_ref()
                .map(|p| crate::pipeline::fingerprint::fingerprint(cfg, &cfg.resolve(p), None))
                .unwrap_or_default();
            let mut v = serde_json::to_value(&d).expect("serialisable");
            v["fingerprint"] = json!(fingerprint);
            v["bos_token"] = json!(cfg.model.bos_token);
            (d.name.clone(), v)
        })
        .collect())
}

/// A task with its classes resolved on the data.
#[derive(Debug, Clone)]
struct Task {
    name: String,
    column: String,
    rule: String,
    classes: Vec<String>,
    /// Numeric bins (thresholds) or value lists.
    thresholds: Option<Vec<f64>>,
}

impl Task {
    fn class_of(&self, v: &LabelValue) -> Option<usize> {
        match &self.thresholds {
            Some(t) => {
                let x = match v {
                    LabelValue::Int(i) => *i as f64,
                    LabelValue::Float(f) if f.is_finite() => *f,
                    _ => return None,
                };
                Some(t.iter().filter(|&&th| x >= th).count())
            }
            None => {
                let s = label_text(v)?;
                self.classes.iter().position(|c| *c == s)
            }
        }
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

fn bin_names(t: &[f64]) -> Vec<String> {
    let mut out = vec![format!("<{}", fmt_num(t[0]))];
    for w in t.windows(2) {
        out.push(format!("{}..{}", fmt_num(w[0]), fmt_num(w[1])));
    }
    out.push(format!(">={}", fmt_num(t[t.len() - 1])));
    out
}

/// Resolves `top` and `quantiles` on the documents' values.
fn resolve_task(t: &TaskConfig, values: &[&LabelValue], key: &str) -> Result<Task> {
    let numeric: Vec<f64> = values
        .iter()
        .filter_map(|v| match v {
            LabelValue::Int(i) => Some(*i as f64),
            LabelValue::Float(f) if f.is_finite() => Some(*f),
            _ => None,
        })
        .collect();
    let need_numeric = |what: &str| -> Result<()> {
        if numeric.is_empty() {
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
        let classes = by.into_iter().take(n).map(|(s, _)| s).collect();
        (format!("top {n}"), classes, None)
    } else if let Some(s) = &t.split_at {
        need_numeric("split_at")?;
        (format!("split_at {s:?}"), bin_names(s), Some(s.clone()))
    } else {
        let q = t.quantiles.expect("validated: one rule");
        need_numeric("quantiles")?;
        let mut sorted = numeric.clone();
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

/// The local file a dataset reads, fetching a hub file when needed.
fn source_file(cfg: &Config, d: &DatasetConfig, key: &str) -> Result<PathBuf> {
    if let Some(p) = &d.path {
        let path = cfg.resolve(p);
        if !path.is_file() {
            bail!(
                "{key}.path = {}: {} does not exist",
                p.display(),
                path.display()
            );
        }
        return Ok(path);
    }
    let id = d.hf.as_deref().expect("validated: path or hf");
    let file = d.hf_file.as_deref().expect("validated: hf needs hf_file");
    coact::hub::fetch_dataset_file(id, d.revision.as_deref(), file).map_err(|e| {
        anyhow!(
            "{key} ({}): the Hugging Face dataset {id} could not be fetched ({e:#}). \
             Offline, download {file} elsewhere and give its local path as {key}.path instead of hf",
            d.name
        )
    })
}

struct Piece {
    doc: usize,
    chunk: usize,
    tokens: Vec<u32>,
}

/// Builds the probing benchmarks' labelled datasets with their activations.
pub struct Datasets;

impl Stage for Datasets {
    fn name(&self) -> &'static str {
        "datasets"
    }
    fn about(&self) -> &'static str {
        "labelled datasets and their activations (the probing benchmarks' input)"
    }
    fn deps(&self) -> &'static [&'static str] {
        &["extract"]
    }
    fn on_demand(&self) -> bool {
        true
    }
    fn units(&self, cfg: &Config, _: &Registry) -> Result<Vec<Unit>> {
        Ok(units(cfg)?
            .into_iter()
            .map(|(name, config)| Unit {
                unit: Some(name),
                config,
                uses: None,
            })
            .collect())
    }
    fn run(&self, input: &StageInput) -> Result<StageOutput> {
        run(input)
    }
}

pub fn run(input: &StageInput) -> Result<StageOutput> {
    let cfg = input.cfg;
    let unit = input
        .planned
        .unit
        .as_deref()
        .context("datasets runs per unit")?;
    let all = default_datasets(cfg);
    let (index, d) = all
        .iter()
        .enumerate()
        .find(|(_, d)| d.name == unit)
        .ok_or_else(|| anyhow!("no dataset named {unit} in bench.datasets"))?;
    let key = if cfg.bench.datasets.is_empty() {
        "bench.datasets (default, from corpus)".to_string()
    } else {
        format!("bench.datasets[{index}]")
    };
    let file = source_file(cfg, d, &key)?;

    // Read it with the corpus reader: the text column and the task columns.
    let mut columns: Vec<String> = Vec::new();
    for t in &d.tasks {
        if !columns.contains(&t.column) {
            columns.push(t.column.clone());
        }
    }
    let format = match file.extension().and_then(|e| e.to_str()) {
        Some("jsonl") | Some("ndjson") => CorpusFormat::Jsonl,
        Some("parquet") => CorpusFormat::Parquet,
        _ => bail!(
            "{key} ({}): {}: expected a .jsonl or .parquet file",
            d.name,
            file.display()
        ),
    };
    let mut reader_cfg = cfg.clone();
    reader_cfg.corpus = CorpusConfig {
        path: file.clone(),
        format: Some(format),
        text_column: d.text_column.clone(),
        id_column: d.id_column.clone(),
        label_columns: columns.clone(),
    };
    let corpus = read_corpus(&reader_cfg).map_err(|e| anyhow!("{key} ({}): {e:#}", d.name))?;

    // Classes per task, on every document. A task of the derived default
    // that the corpus cannot support (e.g. too few distinct years for four
    // bins) is left out with a note; a configured one is an error.
    let derived = cfg.bench.datasets.is_empty();
    let mut tasks: Vec<Task> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    for (j, t) in d.tasks.iter().enumerate() {
        let col = columns.iter().position(|c| *c == t.column).expect("listed");
        let values: Vec<&LabelValue> = corpus.docs.iter().map(|doc| &doc.labels[col]).collect();
        match resolve_task(t, &values, &format!("{key}.tasks[{j}]")) {
            Ok(task) => tasks.push(task),
            Err(e) if derived => notes.push(format!("task {} left out: {e:#}", t.name)),
            Err(e) => return Err(e),
        }
    }
    for n in &notes {
        input.progress.note(format!("datasets/{}: {n}", d.name));
    }
    if tasks.is_empty() {
        bail!("{key} ({}): no usable task ({})", d.name, notes.join("; "));
    }
    let col_of: Vec<usize> = tasks
        .iter()
        .map(|t| columns.iter().position(|c| *c == t.column).expect("listed"))
        .collect();
    let doc_classes: Vec<Vec<Option<usize>>> = corpus
        .docs
        .iter()
        .map(|doc| {
            tasks
                .iter()
                .zip(&col_of)
                .map(|(t, &c)| t.class_of(&doc.labels[c]))
                .collect()
        })
        .collect();
    let kept: Vec<usize> = (0..corpus.docs.len())
        .filter(|&i| doc_classes[i].iter().any(|c| c.is_some()))
        .collect();
    if kept.is_empty() {
        bail!(
            "{key} ({}): no document of {} falls in any task's classes",
            d.name,
            file.display()
        );
    }

    // Train/test by document, stratified by the class combination.
    let is_test = split_documents(&kept, &doc_classes, d.test_fraction, d.seed);

    // Tokenize and cut into pieces.
    let tokenizer = crate::artifacts::tokens::load_tokenizer(cfg)?;
    let bos = tokenizer.bos_id();
    let texts: Vec<&str> = kept.iter().map(|&i| corpus.docs[i].text.as_str()).collect();
    let spinner =
        input
            .progress
            .spinner(format!("{}: tokenizing {} documents", d.name, texts.len()));
    let toks = coact::text::encode_all(&tokenizer, &texts)?;
    spinner.finish_and_clear();
    let mut per_doc: HashMap<usize, Vec<Piece>> = HashMap::new();
    for (&doc, t) in kept.iter().zip(&toks) {
        per_doc.insert(
            doc,
            doc_pieces(doc, t, d.piece_tokens, d.pieces_per_doc, bos),
        );
    }

    // Which documents' pieces are kept (all, unless a class cap applies).
    let mut order = kept.clone();
    if d.pieces_per_class.is_some() {
        SplitMix64::new(d.seed ^ 0xDA7A_5E75).shuffle(&mut order);
    }
    let mut counts: HashMap<(bool, usize, usize), usize> = HashMap::new();
    let mut chosen: Vec<usize> = Vec::new();
    for &doc in &order {
        let n = per_doc[&doc].len();
        if n == 0 {
            continue;
        }
        let test = is_test[&doc];
        let classes = &doc_classes[doc];
        if let Some(cap) = d.pieces_per_class {
            let full = classes.iter().enumerate().any(|(t, c)| {
                c.is_some_and(|c| counts.get(&(test, t, c)).copied().unwrap_or(0) + n > cap)
            });
            if full {
                continue;
            }
        }
        for (t, c) in classes.iter().enumerate() {
            if let Some(c) = c {
                *counts.entry((test, t, *c)).or_default() += n;
            }
        }
        chosen.push(doc);
    }
    chosen.sort_unstable();
    let pieces: Vec<Piece> = chosen
        .iter()
        .flat_map(|doc| per_doc.remove(doc).unwrap_or_default())
        .collect();
    if !pieces.iter().any(|p| is_test[&p.doc]) || pieces.iter().all(|p| is_test[&p.doc]) {
        bail!(
            "{key} ({}): {} pieces from {} documents leave the train or test split empty; \
             more documents or a different test_fraction are needed",
            d.name,
            pieces.len(),
            chosen.len()
        );
    }

    // The model, to the study layer.
    let model = crate::artifacts::model::load_model(cfg, input.progress)?;
    let layer = cfg.model.layer;
    let dm = model.config().d_model;
    if let Some(t) = pieces
        .iter()
        .flat_map(|p| &p.tokens)
        .find(|&&t| t as usize >= model.config().vocab)
    {
        bail!("token id {t} is outside the model's vocabulary of {}: model.tokenizer does not belong to the model", model.config().vocab);
    }
    let total_tokens: u64 = pieces.iter().map(|p| p.tokens.len() as u64).sum();
    let bar = input.progress.bar(
        total_tokens,
        format!("datasets/{} {}", d.name, hook_name(layer)),
        "tokens",
    );
    // Batches of equal-length pieces (no padding in the forward).
    let mut by_len: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, p) in pieces.iter().enumerate() {
        by_len.entry(p.tokens.len()).or_default().push(i);
    }
    let mut acts: Vec<Option<Vec<f32>>> = vec![None; pieces.len()];
    for (len, ids) in &by_len {
        for chunk in ids.chunks(cfg.extract.batch_size) {
            let flat: Vec<u32> = chunk
                .iter()
                .flat_map(|&i| pieces[i].tokens.iter().copied())
                .collect();
            let t = Tensor::from_vec(flat, (chunk.len(), *len), &Device::Cpu)?;
            let out = model
                .resid_post(&t, layer)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            for (k, &i) in chunk.iter().enumerate() {
                // Drop BOS (position 0).
                acts[i] = Some(out[(k * len + 1) * dm..(k + 1) * len * dm].to_vec());
            }
            bar.inc((chunk.len() * len) as u64);
        }
    }
    bar.finish_and_clear();

    // pieces.parquet
    let n = pieces.len();
    let mut pooled: Vec<f32> = Vec::with_capacity(n * dm);
    for a in &acts {
        let a = a.as_ref().expect("every piece ran");
        let offsets = [0, a.len() / dm];
        pooled.extend(coact::metrics::probing::mean_pool_rows(a, dm, &offsets));
    }
    let item32 = Arc::new(Field::new("item", DataType::Float32, false));
    let mut fields = vec![
        Field::new("dataset", DataType::Utf8, false),
        Field::new("piece", DataType::Int32, false),
        Field::new("doc_id", DataType::Utf8, false),
        Field::new("chunk", DataType::Int32, false),
        Field::new("split", DataType::Utf8, false),
        Field::new("n_tokens", DataType::Int32, false),
    ];
    let mut cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec![d.name.as_str(); n])),
        Arc::new(Int32Array::from_iter_values(0..n as i32)),
        Arc::new(StringArray::from_iter_values(
            pieces.iter().map(|p| corpus.docs[p.doc].id.as_str()),
        )),
        Arc::new(Int32Array::from_iter_values(
            pieces.iter().map(|p| p.chunk as i32),
        )),
        Arc::new(StringArray::from_iter_values(pieces.iter().map(|p| {
            if is_test[&p.doc] {
                "test"
            } else {
                "train"
            }
        }))),
        Arc::new(Int32Array::from_iter_values(
            pieces.iter().map(|p| p.tokens.len() as i32 - 1),
        )),
    ];
    for (j, t) in tasks.iter().enumerate() {
        fields.push(Field::new(format!("task_{}", t.name), DataType::Utf8, true));
        cols.push(Arc::new(StringArray::from(
            pieces
                .iter()
                .map(|p| doc_classes[p.doc][j].map(|c| t.classes[c].as_str()))
                .collect::<Vec<_>>(),
        )));
    }
    fields.push(Field::new(
        "activation",
        DataType::FixedSizeList(item32.clone(), dm as i32),
        false,
    ));
    cols.push(Arc::new(FixedSizeListArray::try_new(
        item32,
        dm as i32,
        Arc::new(Float32Array::from(pooled)),
        None,
    )?));
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)?;
    let piece_rows =
        crate::artifacts::parquet_io::write_all(&input.out_dir.join("pieces.parquet"), &[batch])?;

    // tokens-NNNNN.parquet: every non-BOS token's activation, in piece order.
    let mut token_files = Vec::new();
    let mut token_rows = 0u64;
    let rows_per_shard = 65536usize;
    let mut shard: Vec<(i32, i32, &[f32])> = Vec::new();
    let flush = |shard: &mut Vec<(i32, i32, &[f32])>, files: &mut Vec<String>| -> Result<()> {
        if shard.is_empty() {
            return Ok(());
        }
        let name = format!("tokens-{:05}.parquet", files.len());
        write_tokens(&input.out_dir.join(&name), shard, dm, d.token_dtype)?;
        files.push(name);
        shard.clear();
        Ok(())
    };
    for (i, a) in acts.iter().enumerate() {
        for (pos, row) in a.as_ref().expect("ran").chunks_exact(dm).enumerate() {
            shard.push((i as i32, pos as i32 + 1, row));
            token_rows += 1;
            if shard.len() == rows_per_shard {
                flush(&mut shard, &mut token_files)?;
            }
        }
    }
    flush(&mut shard, &mut token_files)?;

    // The class balance, per task and split.
    let mut task_summary = Vec::new();
    for (j, t) in tasks.iter().enumerate() {
        let count = |test: bool| -> Vec<usize> {
            (0..t.classes.len())
                .map(|c| {
                    pieces
                        .iter()
                        .filter(|p| is_test[&p.doc] == test && doc_classes[p.doc][j] == Some(c))
                        .count()
                })
                .collect()
        };
        let docs = |test: bool| -> Vec<usize> {
            (0..t.classes.len())
                .map(|c| {
                    chosen
                        .iter()
                        .filter(|&&doc| is_test[&doc] == test && doc_classes[doc][j] == Some(c))
                        .count()
                })
                .collect()
        };
        task_summary.push(json!({
            "name": t.name,
            "column": t.column,
            "rule": t.rule,
            "classes": t.classes,
            "pieces": {"train": count(false), "test": count(true)},
            "documents": {"train": docs(false), "test": docs(true)},
        }));
    }
    let split_count = |test: bool| pieces.iter().filter(|p| is_test[&p.doc] == test).count();
    let doc_count = |test: bool| chosen.iter().filter(|doc| is_test[doc] == test).count();
    input.progress.note(format!(
        "datasets/{}: {} pieces ({} train, {} test) from {} documents, {} tokens",
        d.name,
        n,
        split_count(false),
        split_count(true),
        chosen.len(),
        total_tokens
    ));
    Ok(StageOutput {
        tables: BTreeMap::from([
            (
                "pieces".to_string(),
                TableEntry {
                    files: vec!["pieces.parquet".into()],
                    rows: piece_rows,
                },
            ),
            (
                "tokens".to_string(),
                TableEntry {
                    files: token_files,
                    rows: token_rows,
                },
            ),
        ]),
        summary: json!({
            "dataset": d.name,
            "source": file.display().to_string(),
            "hf": d.hf,
            "model": cfg.model.name,
            "layer": layer,
            "hook_name": hook_name(layer),
            "d_model": dm,
            "piece_tokens": d.piece_tokens,
            "pieces": {"train": split_count(false), "test": split_count(true)},
            "documents": {"train": doc_count(false), "test": doc_count(true)},
            "tokens": total_tokens,
            "tasks": task_summary,
            "notes": notes,
        }),
    })
}

/// Up to `m` pieces of a document, evenly spaced through it; a text shorter
/// than one piece gives one shorter piece.
fn doc_pieces(doc: usize, tokens: &[u32], piece_tokens: usize, m: usize, bos: u32) -> Vec<Piece> {
    let chunks = coact::text::pack_document(tokens, piece_tokens, bos);
    if chunks.is_empty() {
        if tokens.is_empty() {
            return vec![];
        }
        let mut t = vec![bos];
        t.extend_from_slice(tokens);
        return vec![Piece {
            doc,
            chunk: 0,
            tokens: t,
        }];
    }
    let n = chunks.len();
    let take = m.min(n);
    let picks: Vec<usize> = (0..take).map(|j| (2 * j + 1) * n / (2 * take)).collect();
    picks
        .into_iter()
        .map(|c| Piece {
            doc,
            chunk: c,
            tokens: chunks[c].clone(),
        })
        .collect()
}

/// Test membership per document, stratified by the documents' classes:
/// documents are grouped by their combination of classes (each group in a
/// seeded order, groups one after the other) and every 1/fraction-th
/// document of that sequence goes to test, so each group is split in
/// proportion and the test split holds round(fraction * n) documents even
/// when the groups are small.
fn split_documents(
    docs: &[usize],
    classes: &[Vec<Option<usize>>],
    fraction: f64,
    seed: u64,
) -> HashMap<usize, bool> {
    let mut groups: BTreeMap<Vec<Option<usize>>, Vec<usize>> = BTreeMap::new();
    for &d in docs {
        groups.entry(classes[d].clone()).or_default().push(d);
    }
    let mut rng = SplitMix64::new(seed ^ 0x5B11_7D0C);
    let mut sequence = Vec::with_capacity(docs.len());
    for (_, mut g) in groups {
        rng.shuffle(&mut g);
        sequence.extend(g);
    }
    // A seeded phase, so that the first document of each run is not always train.
    let phase = rng.next_f64();
    sequence
        .into_iter()
        .enumerate()
        .map(|(i, d)| {
            let a = (i as f64 * fraction + phase).floor();
            let b = ((i + 1) as f64 * fraction + phase).floor();
            (d, b > a)
        })
        .collect()
}

fn write_tokens(
    path: &Path,
    rows: &[(i32, i32, &[f32])],
    dm: usize,
    dtype: ExtractDtype,
) -> Result<()> {
    let values: Vec<f32> = rows.iter().flat_map(|r| r.2.iter().copied()).collect();
    let (item_type, arr): (DataType, ArrayRef) = match dtype {
        ExtractDtype::F32 => (DataType::Float32, Arc::new(Float32Array::from(values))),
        ExtractDtype::F16 => (
            DataType::Float16,
            Arc::new(Float16Array::from(
                values
                    .iter()
                    .map(|&v| half::f16::from_f32(v))
                    .collect::<Vec<_>>(),
            )),
        ),
    };
    let item = Arc::new(Field::new("item", item_type, false));
    let schema = Schema::new(vec![
        Field::new("piece", DataType::Int32, false),
        Field::new("pos", DataType::Int32, false),
        Field::new(
            "activation",
            DataType::FixedSizeList(item.clone(), dm as i32),
            false,
        ),
    ]);
    let batch = RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.1))),
            Arc::new(FixedSizeListArray::try_new(item, dm as i32, arr, None)?),
        ],
    )?;
    let props = WriterProperties::builder()
        .set_compression(Compression::UNCOMPRESSED)
        .set_dictionary_enabled(false)
        .set_max_row_group_row_count(Some(8192))
        .build();
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = ArrowWriter::try_new(file, batch.schema(), Some(props))?;
    w.write(&batch)?;
    w.close()?;
    Ok(())
}

/// A dataset artifact as the benchmarks use it.
pub struct DatasetData {
    pub name: String,
    pub d_model: usize,
    /// Per piece: in the test split.
    pub is_test: Vec<bool>,
    /// Mean-pooled residual per piece, [pieces, d_model].
    pub pooled: Vec<f32>,
    /// Non-BOS token activations in piece order, [tokens, d_model].
    pub tokens: Vec<f32>,
    /// Piece p's tokens are rows offsets[p]..offsets[p + 1] of `tokens`.
    pub offsets: Vec<usize>,
    pub tasks: Vec<TaskData>,
}

pub struct TaskData {
    pub name: String,
    pub classes: Vec<String>,
    /// Per piece: its class, if any.
    pub labels: Vec<Option<usize>>,
}

impl DatasetData {
    pub fn pieces(&self) -> usize {
        self.is_test.len()
    }

    pub fn task(&self, name: &str) -> Option<&TaskData> {
        self.tasks.iter().find(|t| t.name == name)
    }
}

/// The task names and classes of a datasets artifact, from its manifest.
pub fn task_classes(store: &Store, key: &str) -> Result<Vec<(String, Vec<String>)>> {
    let m = store.manifest("datasets", key)?;
    let tasks = m.summary["tasks"]
        .as_array()
        .with_context(|| format!("datasets/{key}: manifest has no tasks"))?;
    Ok(tasks
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap_or_default().to_string(),
                t["classes"]
                    .as_array()
                    .map(|c| {
                        c.iter()
                            .map(|v| v.as_str().unwrap_or_default().to_string())
                            .collect()
                    })
                    .unwrap_or_default(),
            )
        })
        .collect())
}

/// Reads a datasets artifact; `with_tokens` also reads the per-token activations.
pub fn load(store: &Store, key: &str, with_tokens: bool) -> Result<DatasetData> {
    let m = store.manifest("datasets", key)?;
    let dir = store.artifact_dir("datasets", key);
    let name = m.summary["dataset"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let d_model = m.summary["d_model"].as_u64().unwrap_or(0) as usize;
    let tasks_meta = task_classes(store, key)?;
    let mut is_test = Vec::new();
    let mut pooled = Vec::new();
    let mut n_tokens = Vec::new();
    let mut labels: Vec<Vec<Option<usize>>> = vec![Vec::new(); tasks_meta.len()];
    for batch in crate::artifacts::parquet_io::read_all(&dir.join("pieces.parquet"))? {
        let split = batch
            .column_by_name("split")
            .context("pieces: no split column")?
            .as_string::<i32>();
        is_test.extend((0..batch.num_rows()).map(|r| split.value(r) == "test"));
        let nt = batch
            .column_by_name("n_tokens")
            .context("pieces: no n_tokens column")?
            .as_primitive::<Int32Type>();
        n_tokens.extend(nt.values().iter().map(|&v| v as usize));
        let act = batch
            .column_by_name("activation")
            .context("pieces: no activation column")?
            .as_fixed_size_list();
        pooled.extend_from_slice(act.values().as_primitive::<Float32Type>().values());
        for (j, (tname, classes)) in tasks_meta.iter().enumerate() {
            let col = batch
                .column_by_name(&format!("task_{tname}"))
                .with_context(|| format!("pieces: no task_{tname} column"))?
                .as_string::<i32>();
            labels[j].extend((0..batch.num_rows()).map(|r| {
                if col.is_null(r) {
                    None
                } else {
                    classes.iter().position(|c| c == col.value(r))
                }
            }));
        }
    }
    let mut offsets = vec![0usize];
    for n in &n_tokens {
        offsets.push(offsets.last().unwrap() + n);
    }
    let mut tokens = Vec::new();
    if with_tokens {
        tokens.reserve(offsets.last().unwrap() * d_model);
        for f in &m.tables.get("tokens").context("no tokens table")?.files {
            for batch in crate::artifacts::parquet_io::read_all(&dir.join(f))? {
                let act = batch
                    .column_by_name("activation")
                    .context("tokens: no activation column")?
                    .as_fixed_size_list();
                match act.values().data_type() {
                    DataType::Float32 => tokens
                        .extend_from_slice(act.values().as_primitive::<Float32Type>().values()),
                    DataType::Float16 => tokens.extend(
                        act.values()
                            .as_primitive::<Float16Type>()
                            .values()
                            .iter()
                            .map(|v| v.to_f32()),
                    ),
                    t => bail!("{f}: activation values are {t}, expected float32 or float16"),
                }
            }
        }
        if tokens.len() != offsets.last().unwrap() * d_model {
            bail!(
                "datasets/{key}: {} token activations for {} tokens of {} pieces",
                tokens.len() / d_model.max(1),
                offsets.last().unwrap(),
                n_tokens.len()
            );
        }
    }
    Ok(DatasetData {
        name,
        d_model,
        is_test,
        pooled,
        tokens,
        offsets,
        tasks: tasks_meta
            .into_iter()
            .zip(labels)
            .map(|((name, classes), labels)| TaskData {
                name,
                classes,
                labels,
            })
            .collect(),
    })
}
