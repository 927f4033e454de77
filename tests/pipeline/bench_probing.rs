//! The datasets stage and the sparse_probing and scr_tpp benchmarks on the
//! tiny study (its corpus labels year and party).

use super::{csv_rows, Study};

/// The probing benchmarks only (core and absorption are other issues), on
/// a dataset cut into pieces of 8 tokens so that every class has pieces in
/// both splits.
const PROBING: &str = "bench:\n  benchmarks: [sparse_probing, scr_tpp]\n  datasets:\n    - name: speeches\n      path: corpus.jsonl\n      id_column: doc_id\n      piece_tokens: 8\n      pieces_per_doc: 4\n      tasks:\n        - {name: party, column: party, classes: [Democratic, Republican]}\n        - {name: era, column: year, split_at: [1912]}\n        - {name: period, column: year, quantiles: 3}\n  sparse_probing:\n    seeds: 2\n  scr_tpp:\n    seeds: 2\n    ns: [1, 2, 5]\n";

fn query(s: &Study, sql: &str) -> Vec<Vec<String>> {
    csv_rows(&s.ok(&["query", "--format", "csv", sql]))
}

#[test]
fn probing_benchmarks_make_queryable_tables_and_hit_the_cache() {
    let s = Study::new(24, 40);
    s.write_config_with(8, 32, "null", 0, PROBING);
    s.ok(&["run", "bench", "-q"]);

    // The dataset: pieces of whole documents on one side of the split,
    // classes per task, BOS dropped from the stored tokens.
    let pieces = query(
        &s,
        "select split, count(*), count(distinct doc_id), min(n_tokens), max(n_tokens) from datasets_pieces group by split order by split",
    );
    assert_eq!(pieces.len(), 3, "{pieces:?}");
    assert_eq!(pieces[1][0], "test");
    assert_eq!((pieces[1][3].as_str(), pieces[1][4].as_str()), ("7", "7"));
    let train_docs: usize = pieces[2][2].parse().unwrap();
    let test_docs: usize = pieces[1][2].parse().unwrap();
    assert_eq!(train_docs + test_docs, 24);
    assert!((5..=9).contains(&test_docs), "{pieces:?}");
    let both = query(
        &s,
        "select count(*) from (select doc_id from datasets_pieces group by doc_id having count(distinct split) > 1)",
    );
    assert_eq!(both[1], vec!["0"], "no document in both splits");
    let labels = query(
        &s,
        "select distinct task_party, task_era from datasets_pieces where doc_id = 'doc03'",
    );
    assert_eq!(labels[1], vec!["Democratic", "<1912"]);
    let tokens = query(
        &s,
        "select count(*), min(pos), (select sum(n_tokens) from datasets_pieces) from datasets_tokens",
    );
    assert_eq!(tokens[1][1], "1", "BOS is not stored");
    assert_eq!(tokens[1][0], tokens[1][2]);

    // Sparse probing: every variant, task, k and seed.
    let sp = query(
        &s,
        "select variant, count(distinct task), count(distinct seed), \
         sum(case when metric = 'llm_test_accuracy' and k is null then 1 else 0 end), \
         sum(case when metric = 'sae_test_accuracy' and k = 1 then 1 else 0 end), \
         min(value), max(value) from bench_sparse_probing group by variant order by variant",
    );
    assert_eq!(sp.len(), 4, "three variants: {sp:?}");
    for row in &sp[1..] {
        // party, era, and one-vs-rest for the three periods.
        assert_eq!(row[1], "5", "{row:?}");
        assert_eq!(row[2], "2", "{row:?}");
        assert_eq!(row[3], "10", "{row:?}");
        assert_eq!(row[4], "10", "{row:?}");
        let (lo, hi): (f64, f64) = (row[5].parse().unwrap(), row[6].parse().unwrap());
        assert!(lo >= 0.0 && hi <= 1.0, "{row:?}");
    }
    // The dense probe on the residual does not depend on the SAE.
    let llm = query(
        &s,
        "select count(distinct value) from bench_sparse_probing where metric = 'llm_test_accuracy' and k is null and task = 'era' and seed = 0",
    );
    assert_eq!(llm[1], vec!["1"]);

    // SCR: both directions per N and seed, the selected one as scr_metric.
    let scr = query(
        &s,
        "select direction, count(*) from bench_scr where metric = 'scr' group by direction order by direction",
    );
    assert_eq!(
        scr[1..],
        [
            vec!["era->party".to_string(), "18".into()],
            vec!["party->era".into(), "18".into()]
        ],
        "3 variants x 3 N x 2 seeds each"
    );
    let selected = query(
        &s,
        "select count(*) from bench_scr where metric = 'scr_metric'",
    );
    assert_eq!(selected[1], vec!["18"]);
    let tpp = query(
        &s,
        "select metric, count(*) from bench_tpp group by metric order by metric",
    );
    assert_eq!(
        tpp[1..],
        [
            vec!["tpp_intended_drop".to_string(), "18".into()],
            vec!["tpp_total".into(), "18".into()],
            vec!["tpp_unintended_drop".into(), "18".into()]
        ]
    );
    let consistent = query(
        &s,
        "select count(*) from bench_tpp t join bench_tpp i on t.variant = i.variant and t.n = i.n and t.seed = i.seed \
         join bench_tpp u on u.variant = t.variant and u.n = t.n and u.seed = t.seed \
         where t.metric = 'tpp_total' and i.metric = 'tpp_intended_drop' and u.metric = 'tpp_unintended_drop' \
         and abs(t.value - (i.value - u.value)) > 1e-9",
    );
    assert_eq!(consistent[1], vec!["0"], "total = intended - unintended");

    // SAEBench-shaped JSON beside the tables.
    let mut found = 0;
    for key in s.artifacts("bench") {
        let dir = s.dir.join("data/bench").join(&key);
        for (file, eval_type, metrics) in [
            ("sparse_probing.json", "sparse_probing", "sae"),
            ("scr.json", "scr", "scr_metrics"),
            ("tpp.json", "tpp", "tpp_metrics"),
        ] {
            if let Ok(text) = std::fs::read_to_string(dir.join(file)) {
                let v: serde_json::Value = serde_json::from_str(&text).unwrap();
                assert_eq!(v["eval_type_id"], eval_type);
                assert!(v["eval_result_metrics"][metrics].is_object(), "{v}");
                assert!(v["eval_result_details"].is_array());
                assert!(v["eval_config"].is_object());
                found += 1;
            }
        }
    }
    assert_eq!(found, 9, "three files for each of three variants");
    let sp_json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            s.artifacts("bench")
                .iter()
                .map(|k| s.dir.join("data/bench").join(k).join("sparse_probing.json"))
                .find(|p| p.exists())
                .unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    assert!(sp_json["eval_result_metrics"]["sae"]["sae_top_1_test_accuracy"].is_number());
    assert!(sp_json["eval_result_metrics"]["llm"]["llm_test_accuracy"].is_number());

    // A second run is served from the store.
    let out = s.coact(&["run", "bench"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains(" done "), "{err}");
    assert!(err.contains("datasets/speeches fresh"), "{err}");
    assert_eq!(err.matches("cache hit").count(), 2 + 3 + 1 + 6, "{err}");

    // Changing a probing setting reruns that benchmark only.
    s.edit_config(
        "  sparse_probing:\n    seeds: 2",
        "  sparse_probing:\n    seeds: 1",
    );
    let out = s.coact(&["run", "bench"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(err.matches("bench/sparse_probing/").count(), 3, "{err}");
    assert!(err.contains("bench/scr_tpp/topk fresh"), "{err}");
}

#[test]
fn the_default_dataset_comes_from_the_corpus_labels() {
    let s = Study::new(12, 30);
    s.write_config_with(
        8,
        32,
        "null",
        0,
        "bench:\n  benchmarks: [sparse_probing, scr_tpp]\n",
    );
    s.ok(&["run", "datasets", "-q"]);
    let tasks = query(
        &s,
        "select dataset, count(distinct task_party), count(distinct task_era), count(distinct task_period), count(*) from datasets_pieces group by dataset",
    );
    // One piece per document (30 words < 64 tokens); party, era (median
    // split) and period (quartiles).
    assert_eq!(tasks[1], vec!["corpus", "2", "2", "4", "12"]);
    let status = s.ok(&["status"]);
    assert!(status.contains("datasets  fresh"), "{status}");

    // A cap per class and split keeps the classes within it.
    s.write_config_with(
        8,
        32,
        "null",
        0,
        "bench:\n  datasets:\n    - name: capped\n      path: corpus.jsonl\n      piece_tokens: 8\n      pieces_per_doc: 3\n      pieces_per_class: 7\n      tasks:\n        - {name: party, column: party, top: 2}\n",
    );
    s.ok(&["run", "datasets", "-q"]);
    let counts = query(
        &s,
        "select split, task_party, count(*) from datasets_pieces where dataset = 'capped' group by split, task_party order by 1, 2",
    );
    assert_eq!(counts.len(), 5, "{counts:?}");
    for row in &counts[1..] {
        let n: usize = row[2].parse().unwrap();
        assert!(n <= 7 && n.is_multiple_of(3), "{counts:?}");
    }
}

#[test]
fn dataset_errors_name_the_file_the_column_or_the_hub_dataset() {
    let s = Study::new(6, 30);
    // A label column the file does not have.
    s.write_config_with(
        8,
        32,
        "null",
        0,
        "bench:\n  benchmarks: [sparse_probing]\n  datasets:\n    - name: bad\n      path: corpus.jsonl\n      tasks:\n        - {name: region, column: region, top: 2}\n",
    );
    let err = s.fails(&["run", "datasets"]);
    assert!(
        err.contains("corpus.jsonl") && err.contains("'region'"),
        "{err}"
    );
    assert!(s
        .artifacts("datasets")
        .iter()
        .all(|n| n.starts_with(".tmp")));

    // A Parquet file too.
    s.ok(&["run", "tokenize", "-q"]);
    let key = s.artifacts("tokenize").remove(0);
    let parquet = s
        .dir
        .join("data/tokenize")
        .join(key)
        .join("documents.parquet");
    std::fs::copy(&parquet, s.dir.join("docs.parquet")).unwrap();
    s.write_config_with(
        8,
        32,
        "null",
        0,
        "bench:\n  benchmarks: [sparse_probing]\n  datasets:\n    - name: bad\n      path: docs.parquet\n      text_column: source\n      tasks:\n        - {name: region, column: region, top: 2}\n",
    );
    let err = s.fails(&["run", "datasets"]);
    assert!(
        err.contains("docs.parquet") && err.contains("'region'"),
        "{err}"
    );

    // A hub dataset without network: fails fast, names it, says what to do.
    s.write_config_with(
        8,
        32,
        "null",
        0,
        "bench:\n  benchmarks: [sparse_probing]\n  datasets:\n    - name: bios\n      hf: LabHC/bias_in_bios\n      hf_file: data/train-00000-of-00001.parquet\n      text_column: hard_text\n      tasks:\n        - {name: gender, column: gender, classes: ['0', '1']}\n",
    );
    let hf_home = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_coact"))
        .current_dir(&s.dir)
        .args(["run", "datasets"])
        .env("HF_HOME", hf_home.path())
        .env("HF_ENDPOINT", "http://127.0.0.1:9")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("LabHC/bias_in_bios") && err.contains("local path") && err.contains("path"),
        "{err}"
    );

    // Bad settings name their key.
    s.write_config_with(
        8,
        32,
        "null",
        0,
        "bench:\n  datasets:\n    - name: x\n      path: corpus.jsonl\n      tasks:\n        - {name: era, column: year, quantiles: 1}\n",
    );
    let err = s.fails(&["status"]);
    assert!(
        err.contains("bench.datasets[0].tasks[0].quantiles = 1"),
        "{err}"
    );
    s.write_config_with(8, 32, "null", 0, "bench:\n  scr_tpp:\n    ns: [0, 2]\n");
    let err = s.fails(&["status"]);
    assert!(err.contains("bench.scr_tpp.ns"), "{err}");
    s.write_config_with(8, 32, "null", 0, "bench:\n  benchmarks: [sparse]\n");
    let err = s.fails(&["status"]);
    assert!(err.contains("bench.benchmarks[0] = 'sparse'"), "{err}");
}
