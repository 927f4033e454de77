//! End-to-end tests of the pipeline through the `coact` binary, on a tiny
//! study (word-level tokenizer, JSONL corpus) that each test writes.

#[path = "lm_support/mod.rs"]
mod lm_support;

// The later stages' tests, one file each, sharing the Study helper below.
#[path = "pipeline/bench_absorption.rs"]
mod bench_absorption;
#[path = "pipeline/bench_core.rs"]
mod bench_core;
#[path = "pipeline/bench_probing.rs"]
mod bench_probing;
#[path = "pipeline/compete.rs"]
mod compete;
#[path = "pipeline/external.rs"]
mod external;
#[path = "pipeline/plan_keys.rs"]
mod plan_keys;
#[path = "pipeline/report.rs"]
mod report;
#[path = "pipeline/store.rs"]
mod store;

use std::path::PathBuf;
use std::process::{Command, Output};

const WORDS: &[&str] = &[
    "the", "union", "is", "strong", "we", "must", "build", "roads", "and", "schools", "for", "all",
    "people", "of", "this", "nation", "war", "peace", "trade", "tax",
];

/// A study folder: tokenizer.json, corpus.jsonl and pipeline.yaml.
struct Study {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

impl Study {
    fn new(docs: usize, words_per_doc: usize) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let mut vocab = serde_json::Map::new();
        vocab.insert("<unk>".into(), 0.into());
        vocab.insert("<bos>".into(), 1.into());
        for (i, w) in WORDS.iter().enumerate() {
            vocab.insert(w.to_string(), (i + 2).into());
        }
        let tokenizer = serde_json::json!({
            "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
            "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null,
            "decoder": null, "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
        });
        std::fs::write(dir.join("tokenizer.json"), tokenizer.to_string()).unwrap();
        let mut lines = String::new();
        for d in 0..docs {
            let text: Vec<&str> = (0..words_per_doc)
                .map(|i| WORDS[(d * 7 + i * 3) % WORDS.len()])
                .collect();
            let party = if d % 2 == 0 {
                "Republican"
            } else {
                "Democratic"
            };
            lines += &serde_json::json!({
                "doc_id": format!("doc{d:02}"), "year": 1900 + d, "party": party, "text": text.join(" ")
            })
            .to_string();
            lines.push('\n');
        }
        std::fs::write(dir.join("corpus.jsonl"), lines).unwrap();
        // The absorption benchmark's word list at its default path: the
        // corpus words, which the tokenizer knows, and lines it must skip.
        std::fs::create_dir_all(dir.join("data/raw")).unwrap();
        let mut words: Vec<&str> = WORDS.to_vec();
        words.extend(["Union", "zebra", "don't", "", "the"]);
        std::fs::write(dir.join("data/raw/words.txt"), words.join("\n")).unwrap();
        // A tiny random gemma-3 whose vocabulary is the tokenizer's.
        let mut model = lm_support::Tiny::gemma3();
        model.vocab = WORDS.len() + 2;
        model.n_layers = 3;
        model.write(&dir.join("model"), 7);
        let study = Self { _tmp: tmp, dir };
        study.write_config(8, 32, "null", 0);
        study
    }

    fn write_config(&self, context: usize, eval_tokens: u64, train_tokens: &str, seed: u64) {
        self.write_config_with(context, eval_tokens, train_tokens, seed, "");
    }

    /// `extra` is appended (e.g. an extract section).
    fn write_config_with(
        &self,
        context: usize,
        eval_tokens: u64,
        train_tokens: &str,
        seed: u64,
        extra: &str,
    ) {
        let yaml = format!(
            "study: tiny\nmodel:\n  name: tiny\n  source: safetensors\n  path: model\n  tokenizer: tokenizer.json\n  layer: 1\n\
             corpus:\n  path: corpus.jsonl\n  id_column: doc_id\n  label_columns: [year, party]\n\
             tokenize:\n  context_size: {context}\n  eval_tokens: {eval_tokens}\n  train_tokens: {train_tokens}\n  seed: {seed}\n\
             train:\n  batch_size: 16\n  checkpoint_every: 2\n  dead_after_tokens: 64\n  base: {{kind: topk, d_sae: 32, k: 4, ortho: none}}\n  \
             variants:\n    - name: topk\n    - name: guided\n      ortho: guided\n      lambda: 0.1\n      tau: [0.0, 0.5]\n{extra}"
        );
        self.set_config(&yaml);
    }

    fn config(&self) -> String {
        std::fs::read_to_string(self.dir.join("pipeline.yaml")).unwrap()
    }

    fn set_config(&self, yaml: &str) {
        std::fs::write(self.dir.join("pipeline.yaml"), yaml).unwrap();
    }

    /// Replaces `from` (which must be there) by `to` in pipeline.yaml.
    fn edit_config(&self, from: &str, to: &str) {
        let yaml = self.config();
        assert!(
            yaml.contains(from),
            "pipeline.yaml has no {from:?}:\n{yaml}"
        );
        self.set_config(&yaml.replace(from, to));
    }

    fn coact(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_coact"))
            .current_dir(&self.dir)
            .args(args)
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.coact(args);
        assert!(
            out.status.success(),
            "coact {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn fails(&self, args: &[&str]) -> String {
        let out = self.coact(args);
        assert!(!out.status.success(), "coact {args:?} should have failed");
        String::from_utf8(out.stderr).unwrap()
    }

    fn artifacts(&self, stage: &str) -> Vec<String> {
        let d = self.dir.join("data").join(stage);
        let mut v: Vec<String> = std::fs::read_dir(&d)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().to_string())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

fn csv_rows(s: &str) -> Vec<Vec<String>> {
    s.lines()
        .map(|l| l.split(',').map(|c| c.to_string()).collect())
        .collect()
}

#[test]
fn tokenize_packs_bos_first_sequences_and_splits_by_document() {
    let s = Study::new(12, 30); // 30 words -> 4 sequences of 1 BOS + 7 words per doc
    s.ok(&["run", "tokenize", "-q"]);
    let q = |sql: &str| csv_rows(&s.ok(&["query", "--format", "csv", sql]));

    let docs = q("select count(*) as n from tokenize_documents");
    assert_eq!(docs, vec![vec!["n".to_string()], vec!["12".to_string()]]);
    // eval: 32 tokens = 4 sequences; train: all the rest of the other documents.
    let splits =
        q("select split, count(*) as n from tokenize_sequences group by split order by split");
    assert_eq!(splits[1], vec!["eval", "4"]);
    let train: usize = splits[2][1].parse().unwrap();
    assert_eq!(splits[2][0], "train");
    assert_eq!(
        train,
        11 * 4,
        "every sequence of the documents not used for eval"
    );
    // No document has sequences in both splits, and documents agree with sequences.
    let shared = q("select count(*) from (select doc_id from tokenize_sequences group by doc_id having count(distinct split) > 1)");
    assert_eq!(shared[1], vec!["0"]);
    let mismatch = q("select count(*) from tokenize_documents d join (select doc_id, split, count(*) as n from tokenize_sequences group by doc_id, split) s \
         on d.doc_id = s.doc_id where d.split <> s.split or d.n_sequences <> s.n");
    assert_eq!(mismatch[1], vec!["0"]);
    // Every sequence is context_size long and starts with BOS (id 1).
    let shape = q(
        "select count(*) from tokenize_sequences where array_length(tokens) <> 8 or tokens[1] <> 1",
    );
    assert_eq!(shape[1], vec!["0"]);
    // Labels are carried with their types.
    let labels = q("select year, party, n_tokens from tokenize_documents where doc_id = 'doc03'");
    assert_eq!(labels[1], vec!["1903", "Democratic", "30"]);
    // The first sequence of doc00 holds its first 7 words in order.
    let first = s.ok(&[
        "query",
        "--format",
        "json",
        "select tokens from tokenize_sequences where doc_id = 'doc00' order by seq_id limit 1",
    ]);
    let v: serde_json::Value = serde_json::from_str(&first).unwrap();
    let ids: Vec<u64> = v[0]["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect();
    let want: Vec<u64> = std::iter::once(1)
        .chain((0..7).map(|i| ((i * 3) % WORDS.len()) as u64 + 2))
        .collect();
    assert_eq!(ids, want);
}

#[test]
fn second_run_is_a_cache_hit_and_config_changes_make_only_tokenize_stale() {
    let s = Study::new(10, 30);
    s.ok(&["run", "tokenize", "-q"]);
    let first = s.artifacts("tokenize");
    assert_eq!(first.len(), 1);
    let out = s.coact(&["run", "tokenize"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cache hit"));
    let status = s.ok(&["status"]);
    assert!(status.contains("tokenize  fresh"), "{status}");
    assert!(status.contains("extract   missing"), "{status}");
    assert!(status.contains("report    missing"), "{status}");

    // A setting tokenize does not read (the layer) leaves it fresh.
    s.edit_config("layer: 1", "layer: 2");
    assert!(s.ok(&["status"]).contains("tokenize  fresh"));

    // Changing the split seed makes it stale and says why.
    s.write_config(8, 32, "null", 5);
    let status = s.ok(&["status"]);
    assert!(status.contains("tokenize  stale"), "{status}");
    assert!(status.contains("config tokenize.seed: 0 -> 5"), "{status}");
    s.ok(&["run", "tokenize", "-q"]);
    assert_eq!(s.artifacts("tokenize").len(), 2);
    // clean removes the stale one only; --all removes the fresh one too.
    s.ok(&["clean", "-q"]);
    let left = s.artifacts("tokenize");
    assert_eq!(left.len(), 1);
    assert_ne!(left, first);
    s.ok(&["clean", "--all", "-q"]);
    assert!(s.artifacts("tokenize").is_empty());
}

#[test]
fn force_rebuilds_identical_content() {
    let s = Study::new(6, 40);
    s.ok(&["run", "tokenize", "-q"]);
    let key = s.artifacts("tokenize").remove(0);
    let read = || {
        std::fs::read(
            s.dir
                .join("data/tokenize")
                .join(&key)
                .join("sequences.parquet"),
        )
        .unwrap()
    };
    let before = read();
    let out = s.coact(&["run", "tokenize", "--force"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("done"));
    assert_eq!(read(), before);
    assert_eq!(s.artifacts("tokenize"), vec![key]);
}

#[test]
fn a_failing_stage_leaves_no_artifact() {
    let s = Study::new(1, 30); // one document cannot give both an eval and a train split
    let err = s.fails(&["run", "tokenize", "-q"]);
    assert!(
        err.contains("stage tokenize failed") && err.contains("not enough"),
        "{err}"
    );
    assert!(
        s.artifacts("tokenize").is_empty(),
        "{:?}",
        s.artifacts("tokenize")
    );
    assert!(s.ok(&["status"]).contains("tokenize  missing"));
}

#[test]
fn bad_inputs_give_errors_that_name_them() {
    let s = Study::new(4, 30);
    let yaml = s.config();
    s.set_config(&yaml.replace("  seed: 0", "  seed: 0\n  sead: 1"));
    let err = s.fails(&["status"]);
    assert!(
        err.contains("pipeline.yaml") && err.contains("tokenize") && err.contains("sead"),
        "{err}"
    );

    s.write_config(8, 32, "null", 0);
    std::fs::remove_file(s.dir.join("tokenizer.json")).unwrap();
    let err = s.fails(&["run", "tokenize"]);
    assert!(
        err.contains("model.tokenizer") && err.contains("tokenizer.json"),
        "{err}"
    );

    let err = s.fails(&["run", "tokenise"]);
    assert!(
        err.contains("unknown stage 'tokenise'") && err.contains("tokenize"),
        "{err}"
    );
    let err = s.fails(&["--config", "nope.yaml", "status"]);
    assert!(err.contains("nope.yaml"), "{err}");
}

#[test]
fn query_lists_tables_and_explains_unknown_ones() {
    let s = Study::new(5, 30);
    let err = s.fails(&["query", "select 1 from tokenize_documents"]);
    assert!(err.contains("available tables: none yet"), "{err}");
    s.ok(&["run", "tokenize", "-q"]);
    let tables = s.ok(&["query", "--tables"]);
    assert!(tables.contains("tokenize_documents (5 rows)"), "{tables}");
    assert!(
        tables.contains("tokenize_sequences") && tables.contains("party"),
        "{tables}"
    );
    let err = s.fails(&["query", "select * from train_log"]);
    assert!(
        err.contains("train_log")
            && err.contains("available tables: tokenize_documents, tokenize_sequences"),
        "{err}"
    );
    let err = s.fails(&["query", "selec 1"]);
    assert!(err.contains("query failed"), "{err}");
    // An empty result still prints the CSV header.
    let empty = s.ok(&[
        "query",
        "--format",
        "csv",
        "select doc_id from tokenize_documents where year < 0",
    ]);
    assert_eq!(empty.trim(), "doc_id");
    let table = s.ok(&[
        "query",
        "select party, count(*) as n from tokenize_documents group by party order by party",
    ]);
    assert!(
        table.contains("| Democratic | 2 |") && table.contains("| Republican | 3 |"),
        "{table}"
    );
}

#[test]
fn txt_folder_corpus_and_budgets() {
    let s = Study::new(1, 1);
    let docs = s.dir.join("docs");
    std::fs::create_dir(&docs).unwrap();
    for d in 0..6 {
        let text: Vec<&str> = (0..50).map(|i| WORDS[(d + i) % WORDS.len()]).collect();
        std::fs::write(docs.join(format!("speech{d}.txt")), text.join(" ")).unwrap();
    }
    let yaml = s.config();
    let yaml = yaml
        .replace(
            "  path: corpus.jsonl\n  id_column: doc_id\n  label_columns: [year, party]\n",
            "  path: docs\n",
        )
        .replace("train_tokens: null", "train_tokens: 40");
    s.set_config(&yaml);
    s.ok(&["run", "tokenize", "-q"]);
    let splits = csv_rows(&s.ok(&[
        "query",
        "--format",
        "csv",
        "select split, count(*) from tokenize_sequences group by split order by split",
    ]));
    // 40 train tokens = 5 sequences of 8; eval 32 = 4.
    assert_eq!(
        &splits[1..],
        &[
            vec!["eval".to_string(), "4".into()],
            vec!["train".into(), "5".into()]
        ]
    );
    let ids = s.ok(&[
        "query",
        "--format",
        "csv",
        "select doc_id, source from tokenize_documents order by doc_id limit 1",
    ]);
    assert!(ids.contains("speech0,speech0.txt"), "{ids}");
}

/// Reads one Parquet file's rows of (seq_id, pos, token, is_special, activation).
fn read_shard(path: &std::path::Path) -> Vec<(i64, i32, i32, bool, Vec<f32>)> {
    use arrow::array::AsArray;
    use arrow::datatypes::{Float32Type, Int32Type, Int64Type};
    let file = std::fs::File::open(path).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let mut rows = Vec::new();
    for b in reader {
        let b = b.unwrap();
        let seq = b
            .column_by_name("seq_id")
            .unwrap()
            .as_primitive::<Int64Type>()
            .clone();
        let pos = b
            .column_by_name("pos")
            .unwrap()
            .as_primitive::<Int32Type>()
            .clone();
        let tok = b
            .column_by_name("token")
            .unwrap()
            .as_primitive::<Int32Type>()
            .clone();
        let sp = b.column_by_name("is_special").unwrap().as_boolean().clone();
        let act = b
            .column_by_name("activation")
            .unwrap()
            .as_fixed_size_list()
            .clone();
        for r in 0..b.num_rows() {
            let v = act.value(r);
            rows.push((
                seq.value(r),
                pos.value(r),
                tok.value(r),
                sp.value(r),
                v.as_primitive::<Float32Type>().values().to_vec(),
            ));
        }
    }
    rows
}

#[test]
fn extract_writes_the_models_resid_post_for_every_token() {
    let s = Study::new(6, 30);
    s.ok(&["run", "extract", "-q"]);
    let status = s.ok(&["status"]);
    assert!(status.contains("extract   fresh"), "{status}");
    // One row per token of every sequence, BOS flagged at position 0 only.
    let counts = csv_rows(&s.ok(&[
        "query",
        "--format",
        "csv",
        "select (select count(*) from tokenize_sequences) * 8 as want, count(*) as got, \
         sum(case when is_special then 1 else 0 end) as bos, sum(case when is_special and pos <> 0 then 1 else 0 end) as bad \
         from extract_activations",
    ]));
    assert_eq!(counts[1][0], counts[1][1]);
    assert_eq!(
        counts[1][2].parse::<usize>().unwrap() * 8,
        counts[1][1].parse::<usize>().unwrap()
    );
    assert_eq!(counts[1][3], "0");

    // The stored rows are the engine's resid_post at layer 1 for those tokens.
    let key = s.artifacts("extract").remove(0);
    let dir = s.dir.join("data/extract").join(&key);
    let rows = read_shard(&dir.join("eval-00000.parquet"));
    let model = stage_model(&s.dir.join("model"));
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(
        manifest["summary"]["compute"],
        serde_json::json!(model.compute()),
        "the manifest records the products' arithmetic"
    );
    // The forward of the batch extract ran (its first extract.batch_size = 8
    // sequences, 8 tokens each): a product's kernel, and so its last bits,
    // may depend on how many rows it has, so a token is compared with the
    // forward of the batch it was extracted in.
    let n_seq = (rows.len() / 8).min(8);
    let batch = &rows[..n_seq * 8];
    for (i, r) in batch.iter().enumerate() {
        assert_eq!(
            r.0,
            batch[i / 8 * 8].0,
            "the shard holds whole sequences in order"
        );
        assert_eq!(r.1 as usize, i % 8, "positions run 0..8 within a sequence");
    }
    let first: Vec<u32> = batch.iter().map(|r| r.2 as u32).collect();
    let ids = candle_core::Tensor::from_vec(first, (n_seq, 8), &candle_core::Device::Cpu).unwrap();
    let want: Vec<f32> = model
        .resid_post(&ids, 1)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let got: Vec<f32> = batch.iter().flat_map(|r| r.4.clone()).collect();
    assert_eq!(got.len(), want.len());
    assert_eq!(
        got, want,
        "stored activations must be the forward's, bit for bit"
    );

    // The manifest carries what later stages need.
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["summary"]["hook_name"], "blocks.1.hook_resid_post");
    assert_eq!(m["summary"]["d_model"], 48);
    assert_eq!(
        m["summary"]["splits"]["eval"]["dim_mean"]
            .as_array()
            .unwrap()
            .len(),
        48
    );
    assert!(
        m["summary"]["splits"]["train"]["mean_norm"]
            .as_f64()
            .unwrap()
            > 0.0
    );
}

#[test]
fn an_interrupted_extract_resumes_to_identical_shards() {
    let s = Study::new(8, 30);
    let small_shards = "extract:\n  batch_size: 3\n  shard_tokens: 16\n";
    s.write_config_with(8, 32, "null", 0, small_shards);
    s.ok(&["run", "extract", "-q"]);
    let key = s.artifacts("extract").remove(0);
    let dir = s.dir.join("data/extract").join(&key);
    let mut shards: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".parquet"))
        .collect();
    shards.sort();
    assert!(shards.len() >= 6, "{shards:?}");
    let original: Vec<Vec<u8>> = shards
        .iter()
        .map(|f| std::fs::read(dir.join(f)).unwrap())
        .collect();

    // Pretend a run was killed after three shards (one half-written).
    let tmp = s.dir.join("data/extract").join(format!(".tmp-{key}"));
    std::fs::rename(&dir, &tmp).unwrap();
    std::fs::remove_file(tmp.join("manifest.json")).unwrap();
    for f in &shards[3..] {
        std::fs::remove_file(tmp.join(f)).unwrap();
    }
    std::fs::write(
        tmp.join(shards[3].replace(".parquet", ".parquet.partial")),
        b"half",
    )
    .unwrap();
    assert!(s.ok(&["status"]).contains("extract   missing"));
    s.ok(&["run", "extract", "-q"]);
    for (f, bytes) in shards.iter().zip(&original) {
        assert_eq!(
            &std::fs::read(dir.join(f)).unwrap(),
            bytes,
            "{f} differs after resuming"
        );
    }
    assert!(!tmp.exists());
    assert!(!dir
        .join(shards[3].replace(".parquet", ".parquet.partial"))
        .exists());
}

#[test]
fn extract_rejects_a_layer_past_the_model_and_a_foreign_tokenizer() {
    let s = Study::new(4, 30);
    let yaml = s.config();
    s.set_config(&yaml.replace("layer: 1", "layer: 3"));
    let err = s.fails(&["run", "extract"]);
    assert!(
        err.contains("model.layer = 3") && err.contains("3 layers"),
        "{err}"
    );
    assert!(s
        .artifacts("extract")
        .iter()
        .all(|n| !n.starts_with(".tmp") || n.starts_with(".tmp-")));

    s.set_config(&yaml);
    let mut other = lm_support::Tiny::gemma3();
    other.vocab = 40;
    other.n_layers = 2;
    other.write(&s.dir.join("model"), 3);
    let err = s.fails(&["run", "extract"]);
    assert!(
        err.contains("tokenizer of 22 tokens") && err.contains("vocabulary of 40"),
        "{err}"
    );
    assert!(!s.ok(&["status"]).contains("extract   fresh"));
}

#[test]
fn train_makes_one_saelens_sae_per_variant_and_retrains_only_what_changed() {
    let s = Study::new(8, 40);
    s.ok(&["run", "-q"]);
    let status = s.ok(&["status"]);
    for v in ["[topk]", "[guided-tau0]", "[guided-tau0.5]"] {
        assert!(
            status
                .lines()
                .any(|l| l.starts_with("train     fresh") && l.contains(v)),
            "{status}"
        );
    }
    // Each variant is a SAELens folder the engine loads back, with unit decoder rows.
    let mut dirs = 0;
    for key in s.artifacts("train") {
        let dir = s.dir.join("data/train").join(&key);
        let (sae, meta) = coact::sae::load_saelens(&dir).unwrap();
        assert_eq!((sae.cfg.d_in, sae.cfg.d_sae), (48, 32));
        assert_eq!(meta.hook_name, "blocks.1.hook_resid_post");
        for row in sae.w_dec.chunks(48) {
            let norm: f32 = row.iter().map(|v| v * v).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-4, "decoder row norm {norm}");
        }
        let cfg: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("cfg.json")).unwrap()).unwrap();
        assert_eq!(cfg["architecture"], "topk");
        assert_eq!(cfg["k"], 4);
        assert!(!dir.join("checkpoint.safetensors").exists());
        dirs += 1;
    }
    assert_eq!(dirs, 3);
    // The training curves of all variants are one table.
    let log = csv_rows(&s.ok(&[
        "query",
        "--format",
        "csv",
        "select variant, count(*), max(l0), sum(case when competing_pairs > 0 then 1 else 0 end), \
        min(encode_ms), min(update_ms), min(ortho_ms) \
        from train_log group by variant order by variant",
    ]));
    assert_eq!(log.len(), 4, "{log:?}");
    let steps: usize = log[1][1].parse().unwrap();
    assert!(steps >= 2, "{log:?}");
    assert_eq!(
        log[1][2], "4.0",
        "TopK keeps k = 4 latents per token: {log:?}"
    );
    assert_ne!(
        log[1][3], "0",
        "guided training logs competing pairs: {log:?}"
    );
    assert_eq!(log[3][3], "0", "plain TopK logs none: {log:?}");
    // Every step logs its time per phase; the guided ones their pair pass's.
    for row in &log[1..] {
        let guided = row[3] != "0";
        for col in if guided { 4..7 } else { 4..6 } {
            let ms: f64 = row[col].parse().unwrap();
            assert!(ms > 0.0, "phase times: {log:?}");
        }
    }

    // Changing one variant's setting makes only that variant stale.
    s.edit_config("tau: [0.0, 0.5]", "tau: [0.0, 0.7]");
    let status = s.ok(&["status"]);
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("train     fresh") && l.contains("[topk]")),
        "{status}"
    );
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("train     fresh") && l.contains("[guided-tau0]")),
        "{status}"
    );
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("train     missing") && l.contains("[guided-tau0.7]")),
        "{status}"
    );
    let out = s.coact(&["run", "train"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(
        err.matches("cache hit").count(),
        4,
        "tokenize, extract and two variants: {err}"
    );
    assert!(err.contains("train/guided-tau0.7 done"), "{err}");
}

#[test]
fn bad_train_settings_name_the_variant_key() {
    let s = Study::new(4, 30);
    let yaml = s.config();
    s.set_config(&yaml.replace("tau: [0.0, 0.5]", "tau: [0.0, 1.5]"));
    let err = s.fails(&["status"]);
    assert!(err.contains("train.variants[1].tau = 1.5"), "{err}");
    s.set_config(&yaml.replace("k: 4,", "k: 32,"));
    let err = s.fails(&["status"]);
    assert!(
        err.contains("k = 32") && err.contains("d_sae = 32"),
        "{err}"
    );
    s.set_config(&yaml.replace("kind: topk", "kind: gated"));
    let err = s.fails(&["status"]);
    assert!(
        err.contains("train.base.kind") && err.contains("gated"),
        "{err}"
    );
    s.set_config(&yaml.replace("ortho: none}", "ortho: none, b_dec: frozen}"));
    let err = s.fails(&["status"]);
    assert!(
        err.contains("train.base.b_dec") && err.contains("frozen") && err.contains("`fixed`"),
        "{err}"
    );
}

#[test]
fn an_interrupted_training_resumes_to_the_same_weights() {
    // One unit at a time here; the interrupted and resumed run trains two
    // at once, so the comparison also checks that units at once give the
    // same bytes.
    let a = Study::new(8, 40);
    a.ok(&["run", "train", "-q", "--jobs", "1"]);
    let b = Study::new(8, 40);
    let out = Command::new(env!("CARGO_BIN_EXE_coact"))
        .current_dir(&b.dir)
        .args(["run", "train", "-q", "--jobs", "2"])
        .env("COACT_TRAIN_INTERRUPT_AT", "4")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("interrupted after step 4"),
        "{err}"
    );
    // The variants that were running keep their checkpoints in their
    // temporary folders (two, unless the first stopped before the second
    // worker took its unit); the third never started; nothing is published.
    let tmp: Vec<String> = b
        .artifacts("train")
        .into_iter()
        .filter(|n| n.starts_with(".tmp-"))
        .collect();
    assert!(matches!(tmp.len(), 1 | 2), "{:?}", b.artifacts("train"));
    assert_eq!(
        b.artifacts("train").len(),
        tmp.len(),
        "{:?}",
        b.artifacts("train")
    );
    for t in &tmp {
        assert!(b
            .dir
            .join("data/train")
            .join(t)
            .join("checkpoint.safetensors")
            .is_file());
    }
    // clean keeps the progress of the current config.
    b.ok(&["clean", "-q"]);
    assert!(b
        .dir
        .join("data/train")
        .join(&tmp[0])
        .join("checkpoint.safetensors")
        .is_file());
    let out = b.coact(&["run", "train", "--jobs", "2"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.matches("resuming at step 4").count() == tmp.len(),
        "{err}"
    );
    // Same bytes as the run that was never interrupted, variant by variant.
    let weights = |s: &Study| -> std::collections::BTreeMap<String, Vec<u8>> {
        s.artifacts("train")
            .into_iter()
            .map(|key| {
                let dir = s.dir.join("data/train").join(&key);
                let m: serde_json::Value = serde_json::from_str(
                    &std::fs::read_to_string(dir.join("manifest.json")).unwrap(),
                )
                .unwrap();
                (
                    m["unit"].as_str().unwrap().to_string(),
                    std::fs::read(dir.join("sae_weights.safetensors")).unwrap(),
                )
            })
            .collect()
    };
    let (wa, wb) = (weights(&a), weights(&b));
    assert_eq!(wa.len(), 3);
    for (variant, bytes) in &wa {
        assert!(
            &wb[variant] == bytes,
            "weights of {variant} differ after resuming"
        );
    }
}

#[test]
fn force_without_stage_names_rebuilds_everything() {
    let s = Study::new(5, 30);
    s.ok(&["run", "-q"]);
    let out = s.coact(&["run", "--force"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("cache hit"), "{err}");
    assert!(
        err.contains("tokenize  done")
            && err.contains("extract   done")
            && err.contains("train/topk done"),
        "{err}"
    );
}

#[test]
fn a_batch_larger_than_the_train_split_is_an_error() {
    let s = Study::new(4, 30);
    s.edit_config("batch_size: 16", "batch_size: 100000");
    let err = s.fails(&["run", "train"]);
    assert!(
        err.contains("train.batch_size = 100000") && err.contains("larger than"),
        "{err}"
    );
}

/// The fixture model as the stages load it: `extract.compute` is `auto` in
/// the fixtures, so bf16 where this CPU has bf16 hardware, else f32.
pub fn stage_model(dir: &std::path::Path) -> coact::lm::Gemma {
    let (compute, _) = coact::linalg::resolve(None, "extract.compute").unwrap();
    coact::lm::Gemma::load_with(
        &coact::lm::ModelSource::Safetensors(dir.to_path_buf()),
        &candle_core::Device::Cpu,
        &coact::lm::LoadOptions {
            compute,
            ..Default::default()
        },
    )
    .unwrap()
}
