//! datasets stage: the model's activations on labelled text, the
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

mod pieces;
mod tasks;

use crate::artifacts::corpus::{read_corpus, Document};
use crate::artifacts::datasets::{self as artifact, PiecesTable, TokenWriter};
use crate::config::bench::datasets::{
    default_piece_tokens, default_pieces_per_doc, default_test_fraction, default_token_dtype,
    DatasetConfig, TaskConfig,
};
use crate::config::{Config, CorpusConfig, CorpusFormat};
use crate::pipeline::stage::{Registry, Stage, StageInput, StageOutput, Unit};
use anyhow::{anyhow, bail, Result};
use candle_core::{Device, Tensor};
use coact::lm::hook_name;
use pieces::{choose_documents, doc_pieces, split_documents, Piece};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use tasks::{label_documents, Labelled};

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

/// One dataset being built: its config and the config key that names it
/// in errors (`bench.datasets[i]`).
struct Build<'a, 'b> {
    input: &'a StageInput<'b>,
    d: DatasetConfig,
    key: String,
}

/// The dataset's documents, labelled, and those in some task's classes.
struct Documents {
    source: PathBuf,
    docs: Vec<Document>,
    labelled: Labelled,
    /// The documents in some task's classes, in order.
    kept: Vec<usize>,
}

/// The pieces kept and the documents they come from.
struct Cut {
    /// Per document: in the test split.
    is_test: HashMap<usize, bool>,
    /// The documents whose pieces are kept, in order.
    chosen: Vec<usize>,
    /// Their pieces, in document order.
    pieces: Vec<Piece>,
}

/// The model's residual on every piece.
struct Activations {
    layer: usize,
    d_model: usize,
    /// Per piece: its non-BOS tokens' residuals, [tokens, d_model].
    per_piece: Vec<Vec<f32>>,
    /// Tokens run, BOS included.
    tokens: u64,
}

pub fn run(input: &StageInput) -> Result<StageOutput> {
    let b = Build::new(input)?;
    let docs = b.documents()?;
    let cut = b.cut(&docs)?;
    let acts = b.activations(&cut.pieces)?;
    b.write(&docs, &cut, &acts)
}

impl<'a, 'b> Build<'a, 'b> {
    /// The dataset this unit builds.
    fn new(input: &'a StageInput<'b>) -> Result<Self> {
        let cfg = input.cfg;
        let unit = input.unit()?;
        let all = default_datasets(cfg);
        let (index, d) = all
            .into_iter()
            .enumerate()
            .find(|(_, d)| d.name == unit)
            .ok_or_else(|| anyhow!("no dataset named {unit} in bench.datasets"))?;
        let key = if cfg.bench.datasets.is_empty() {
            "bench.datasets (default, from corpus)".to_string()
        } else {
            format!("bench.datasets[{index}]")
        };
        Ok(Build { input, d, key })
    }

    /// Reads the source with the corpus reader (the text column and the
    /// task columns) and labels its documents. A task of the derived
    /// default that the corpus cannot support (e.g. too few distinct years
    /// for four bins) is left out with a note; a configured one is an error.
    fn documents(&self) -> Result<Documents> {
        let (cfg, d, key) = (self.input.cfg, &self.d, &self.key);
        let file = source_file(cfg, d, key)?;
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
        let derived = cfg.bench.datasets.is_empty();
        let labelled = label_documents(&d.tasks, &columns, &corpus.docs, derived, key)?;
        for n in &labelled.notes {
            self.input
                .progress
                .note(format!("datasets/{}: {n}", d.name));
        }
        if labelled.tasks.is_empty() {
            bail!(
                "{key} ({}): no usable task ({})",
                d.name,
                labelled.notes.join("; ")
            );
        }
        let kept: Vec<usize> = (0..corpus.docs.len())
            .filter(|&i| labelled.doc_classes[i].iter().any(|c| c.is_some()))
            .collect();
        if kept.is_empty() {
            bail!(
                "{key} ({}): no document of {} falls in any task's classes",
                d.name,
                file.display()
            );
        }
        Ok(Documents {
            source: file,
            docs: corpus.docs,
            labelled,
            kept,
        })
    }

    /// Splits the documents into train and test (stratified by their class
    /// combination), tokenizes them and cuts them into pieces.
    fn cut(&self, docs: &Documents) -> Result<Cut> {
        let (d, key) = (&self.d, &self.key);
        let classes = &docs.labelled.doc_classes;
        let is_test = split_documents(&docs.kept, classes, d.test_fraction, d.seed);

        let tokenizer = self.input.tokenizer()?;
        let bos = tokenizer.bos_id();
        let texts: Vec<&str> = docs
            .kept
            .iter()
            .map(|&i| docs.docs[i].text.as_str())
            .collect();
        let spinner = self.input.progress.spinner(format!(
            "{}: tokenizing {} documents",
            d.name,
            texts.len()
        ));
        let toks = coact::text::encode_all(&tokenizer, &texts)?;
        spinner.finish_and_clear();
        let mut per_doc: HashMap<usize, Vec<Piece>> = HashMap::new();
        for (&doc, t) in docs.kept.iter().zip(&toks) {
            per_doc.insert(
                doc,
                doc_pieces(doc, t, d.piece_tokens, d.pieces_per_doc, bos),
            );
        }

        let chosen = choose_documents(
            &docs.kept,
            &per_doc,
            &is_test,
            classes,
            d.pieces_per_class,
            d.seed,
        );
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
        Ok(Cut {
            is_test,
            chosen,
            pieces,
        })
    }

    /// Runs the model to the study layer on every piece, in batches of
    /// equal-length pieces (no padding in the forward); BOS is dropped.
    fn activations(&self, pieces: &[Piece]) -> Result<Activations> {
        let (cfg, progress) = (self.input.cfg, self.input.progress);
        let model = self.input.model()?;
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
        let bar = progress.bar(
            total_tokens,
            format!("datasets/{} {}", self.d.name, hook_name(layer)),
            "tokens",
        );
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
        Ok(Activations {
            layer,
            d_model: dm,
            per_piece: acts
                .into_iter()
                .map(|a| a.expect("every piece ran"))
                .collect(),
            tokens: total_tokens,
        })
    }

    /// Writes the pieces and tokens tables; the stage's output.
    fn write(&self, docs: &Documents, cut: &Cut, acts: &Activations) -> Result<StageOutput> {
        let d = &self.d;
        let dm = acts.d_model;
        let mut pooled: Vec<f32> = Vec::with_capacity(cut.pieces.len() * dm);
        for a in &acts.per_piece {
            let offsets = [0, a.len() / dm];
            pooled.extend(coact::metrics::probing::mean_pool_rows(a, dm, &offsets));
        }
        let classes = &docs.labelled.doc_classes;
        let pieces_entry = artifact::write_pieces(
            self.input.out_dir,
            PiecesTable {
                dataset: &d.name,
                doc_ids: cut
                    .pieces
                    .iter()
                    .map(|p| docs.docs[p.doc].id.as_str())
                    .collect(),
                chunks: cut.pieces.iter().map(|p| p.chunk).collect(),
                is_test: cut.pieces.iter().map(|p| cut.is_test[&p.doc]).collect(),
                n_tokens: cut.pieces.iter().map(|p| p.tokens.len() - 1).collect(),
                tasks: docs
                    .labelled
                    .tasks
                    .iter()
                    .enumerate()
                    .map(|(j, t)| {
                        let per_piece = cut
                            .pieces
                            .iter()
                            .map(|p| classes[p.doc][j].map(|c| t.classes[c].as_str()))
                            .collect();
                        (t.name.as_str(), per_piece)
                    })
                    .collect(),
                d_model: dm,
                pooled,
            },
        )?;
        let mut tokens = TokenWriter::new(self.input.out_dir, dm, d.token_dtype);
        for (i, a) in acts.per_piece.iter().enumerate() {
            tokens.push_piece(i, a)?;
        }
        let tokens_entry = tokens.finish()?;
        Ok(StageOutput {
            tables: BTreeMap::from([
                (artifact::PIECES_TABLE.to_string(), pieces_entry),
                (artifact::TOKENS_TABLE.to_string(), tokens_entry),
            ]),
            summary: self.summary(docs, cut, acts),
        })
    }

    /// The manifest's summary (its `dataset`, `d_model` and `tasks` are
    /// what the artifact's reader needs) and the class balance, per task
    /// and split; notes the totals.
    fn summary(&self, docs: &Documents, cut: &Cut, acts: &Activations) -> Value {
        let d = &self.d;
        let (pieces, chosen, is_test) = (&cut.pieces, &cut.chosen, &cut.is_test);
        let classes = &docs.labelled.doc_classes;
        let mut task_summary = Vec::new();
        for (j, t) in docs.labelled.tasks.iter().enumerate() {
            let count = |test: bool| -> Vec<usize> {
                (0..t.classes.len())
                    .map(|c| {
                        pieces
                            .iter()
                            .filter(|p| is_test[&p.doc] == test && classes[p.doc][j] == Some(c))
                            .count()
                    })
                    .collect()
            };
            let count_docs = |test: bool| -> Vec<usize> {
                (0..t.classes.len())
                    .map(|c| {
                        chosen
                            .iter()
                            .filter(|&&doc| is_test[&doc] == test && classes[doc][j] == Some(c))
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
                "documents": {"train": count_docs(false), "test": count_docs(true)},
            }));
        }
        let split_count = |test: bool| pieces.iter().filter(|p| is_test[&p.doc] == test).count();
        let doc_count = |test: bool| chosen.iter().filter(|doc| is_test[doc] == test).count();
        self.input.progress.note(format!(
            "datasets/{}: {} pieces ({} train, {} test) from {} documents, {} tokens",
            d.name,
            pieces.len(),
            split_count(false),
            split_count(true),
            chosen.len(),
            acts.tokens
        ));
        json!({
            "dataset": d.name,
            "source": docs.source.display().to_string(),
            "hf": d.hf,
            "model": self.input.cfg.model.name,
            "layer": acts.layer,
            "hook_name": hook_name(acts.layer),
            "d_model": acts.d_model,
            "piece_tokens": d.piece_tokens,
            "pieces": {"train": split_count(false), "test": split_count(true)},
            "documents": {"train": doc_count(false), "test": doc_count(true)},
            "tokens": acts.tokens,
            "tasks": task_summary,
            "notes": docs.labelled.notes,
        })
    }
}
