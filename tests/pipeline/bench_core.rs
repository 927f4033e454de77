//! The core benchmark on the tiny study: `coact run bench` with only core
//! selected, the table and the SAEBench-shaped JSON, the cache, and the
//! CE / KL scores of known splices through the engine API.

use crate::{csv_rows, Study};
use coact::metrics::core_eval::{ce_loss_score, kl_div_score, mean};
use coact::metrics::splice::{sae_patch, splice_losses, zero_patch};
use coact_pipeline::artifacts::activations::EvalSplit;
use coact_pipeline::bench::core_eval::METRICS;

const CORE_ONLY: &str =
    "bench:\n  benchmarks: [core]\n  core:\n    ce_sequences: 2\n    forward_batch_size: 1\n";

fn study() -> Study {
    let s = Study::new(8, 40);
    s.set_config(&(s.config() + CORE_ONLY));
    s
}

/// The fresh artifact's manifest of a stage and unit.
fn manifest(s: &Study, stage: &str, unit: Option<&str>) -> (std::path::PathBuf, serde_json::Value) {
    for key in s.artifacts(stage) {
        let dir = s.dir.join("data").join(stage).join(&key);
        let Ok(text) = std::fs::read_to_string(dir.join("manifest.json")) else {
            continue;
        };
        let m: serde_json::Value = serde_json::from_str(&text).unwrap();
        if m["unit"].as_str() == unit {
            return (dir, m);
        }
    }
    panic!("no {stage} artifact for {unit:?}");
}

fn eval_split(s: &Study) -> EvalSplit {
    let (dir, m) = manifest(s, "extract", None);
    let files: Vec<String> = m["tables"]["activations"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().to_string())
        .collect();
    EvalSplit::read(&dir, &files).unwrap()
}

fn model(s: &Study) -> coact::lm::Gemma {
    crate::stage_model(&s.dir.join("model"))
}

#[test]
fn run_bench_with_core_only_writes_bench_core_and_then_hits_the_cache() {
    let s = study();
    s.ok(&["run", "bench", "-q"]);
    let rows = csv_rows(&s.ok(&[
        "query",
        "--format",
        "csv",
        "select variant, metric, value from bench_core order by variant, metric",
    ]));
    // Three variants, every metric once each.
    assert_eq!(rows.len(), 1 + 3 * METRICS.len(), "{rows:?}");
    let get = |variant: &str, metric: &str| -> f64 {
        rows.iter()
            .find(|r| r[0] == variant && r[1] == metric)
            .unwrap_or_else(|| panic!("no {variant} {metric}: {rows:?}"))[2]
            .parse()
            .unwrap()
    };
    for v in ["topk", "guided-tau0", "guided-tau0.5"] {
        // 4 eval sequences of 8 tokens, BOS left out: 28 tokens; CE on 2
        // sequences, positions 1..=6 each.
        assert_eq!(get(v, "eval_tokens"), 28.0);
        assert_eq!(get(v, "ce_tokens"), 12.0);
        let l0 = get(v, "l0");
        assert!(l0 > 0.0 && l0 <= 4.0, "TopK k = 4 keeps at most 4: {l0}");
        for metric in ["cossim", "frac_dead", "frac_dense_1pct", "mean_max_dec_cos"] {
            let x = get(v, metric);
            assert!((-1.0..=1.0).contains(&x), "{v} {metric} = {x}");
        }
        assert!(get(v, "explained_variance") <= 1.0);
        assert!(get(v, "kl_sae") >= 0.0 && get(v, "kl_zero") > 0.0);
        let ce = ce_loss_score(get(v, "ce_orig"), get(v, "ce_sae"), get(v, "ce_zero"));
        assert!((ce - get(v, "ce_loss_score")).abs() < 1e-9);
    }
    // CE_orig and the zero ablation do not depend on the SAE.
    assert_eq!(get("topk", "ce_orig"), get("guided-tau0", "ce_orig"));
    assert_eq!(get("topk", "ce_zero"), get("guided-tau0.5", "ce_zero"));
    assert_eq!(get("topk", "kl_zero"), get("guided-tau0", "kl_zero"));

    // The SAEBench-shaped JSON beside the table.
    let (dir, m) = manifest(&s, "bench", Some("core/topk"));
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join(m["summary"]["json"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    assert_eq!(json["eval_type_id"], "core");
    let groups = &json["eval_result_metrics"];
    assert_eq!(
        groups["model_performance_preservation"]["ce_loss_score"]
            .as_f64()
            .unwrap(),
        get("topk", "ce_loss_score")
    );
    assert_eq!(
        groups["reconstruction_quality"]["explained_variance_legacy"]
            .as_f64()
            .unwrap(),
        get("topk", "explained_variance_legacy")
    );
    for g in [
        "model_behavior_preservation",
        "shrinkage",
        "sparsity",
        "misc_metrics",
        "token_stats",
    ] {
        assert!(groups[g].is_object(), "{g}");
    }
    assert_eq!(json["eval_result_details"].as_array().unwrap().len(), 32);
    assert_eq!(json["sae_cfg_dict"]["architecture"], "topk");

    let eval = eval_split(&s);
    let model = model(&s);
    // With units at once, which unit makes a sequence's shared forwards
    // depends on scheduling, but each is made once: 3 + 1 + 1 passes per
    // sequence in all (6, 2, 2 one unit at a time).
    let passes: Vec<u64> = ["topk", "guided-tau0", "guided-tau0.5"]
        .iter()
        .map(|v| {
            let (_, bm) = manifest(&s, "bench", Some(&format!("core/{v}")));
            bm["summary"]["forward_passes"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(passes.iter().sum::<u64>(), 10, "{passes:?}");
    // The engine API on the same sequences gives the table's figures,
    // whichever unit made the shared forwards.
    for v in ["topk", "guided-tau0.5"] {
        let (train_dir, _) = manifest(&s, "train", Some(v));
        let (sae, _) = coact::sae::load_saelens(&train_dir).unwrap();
        // (One sequence per forward pass, as bench.core.forward_batch_size = 1.)
        let (mut ce_orig, mut ce_sae, mut kl_sae, mut kl_zero) = (vec![], vec![], vec![], vec![]);
        for i in 0..2 {
            let seq = &eval.tokens[eval.sequences[i].clone()];
            let special = &eval.special[eval.sequences[i].clone()];
            let patch = sae_patch(&sae, special);
            let l = splice_losses(&model, 1, &[seq], &[special], &[&patch, &zero_patch]).unwrap();
            ce_orig.extend(l.ce_orig);
            ce_sae.extend(&l.ce[0]);
            kl_sae.extend(&l.kl[0]);
            kl_zero.extend(&l.kl[1]);
        }
        // Same computation, so equal up to the CSV's printing.
        assert!((mean(&ce_orig) - get(v, "ce_orig")).abs() < 1e-12);
        assert!((mean(&ce_sae) - get(v, "ce_sae")).abs() < 1e-12);
        assert!((mean(&kl_sae) - get(v, "kl_sae")).abs() < 1e-12);
        assert!((mean(&kl_zero) - get(v, "kl_zero")).abs() < 1e-12);
    }

    // A second run serves every unit from the store.
    let out = s.coact(&["run", "bench"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("done"), "{err}");
    assert_eq!(err.matches("core/").count(), 3, "{err}");
    assert!(
        err.lines()
            .filter(|l| l.contains("core/"))
            .all(|l| l.contains("cache hit")),
        "{err}"
    );
    // keep_original_mib changes the cost only: not part of the key.
    s.edit_config(
        "ce_sequences: 2\n",
        "ce_sequences: 2\n    keep_original_mib: 0\n",
    );
    let status = s.ok(&["status"]);
    assert!(
        status.lines().filter(|l| l.starts_with("bench")).count() == 3
            && status
                .lines()
                .filter(|l| l.starts_with("bench"))
                .all(|l| l.contains("fresh")),
        "{status}"
    );
}

#[test]
fn identity_splice_scores_one_and_zero_ablation_scores_zero() {
    let s = study();
    s.ok(&["run", "extract", "-q"]);
    let eval = eval_split(&s);
    assert_eq!(eval.sequences.len(), 4);
    assert!(eval.special[eval.sequences[1].start]);
    let model = model(&s);
    let seqs: Vec<&[u32]> = eval
        .sequences
        .iter()
        .map(|r| &eval.tokens[r.clone()])
        .collect();
    let special: Vec<&[bool]> = eval
        .sequences
        .iter()
        .map(|r| &eval.special[r.clone()])
        .collect();
    let identity =
        |r: &candle_core::Tensor| -> anyhow::Result<candle_core::Tensor> { Ok(r.clone()) };
    let l = splice_losses(&model, 1, &seqs, &special, &[&identity, &zero_patch]).unwrap();
    // 4 sequences: CE on positions 1..=6, KL on 1..=7.
    assert_eq!(l.ce_orig.len(), 24);
    assert_eq!(l.kl[0].len(), 28);
    let (ce_orig, ce_id, ce_zero) = (mean(&l.ce_orig), mean(&l.ce[0]), mean(&l.ce[1]));
    let (kl_id, kl_zero) = (mean(&l.kl[0]), mean(&l.kl[1]));
    assert!(kl_zero > 0.0 && (ce_zero - ce_orig).abs() > 1e-3);
    assert!((ce_loss_score(ce_orig, ce_id, ce_zero) - 1.0).abs() < 1e-6);
    assert!((kl_div_score(kl_id, kl_zero) - 1.0).abs() < 1e-6);
    assert!(ce_loss_score(ce_orig, ce_zero, ce_zero).abs() < 1e-12);
    assert!(kl_div_score(kl_zero, kl_zero).abs() < 1e-12);

    // One sequence at a time gives the same losses as all four at once, up
    // to float error.
    let one = splice_losses(&model, 1, &seqs[..1], &special[..1], &[&identity]).unwrap();
    assert_eq!(one.ce_orig.len(), 6);
    for (a, b) in one.ce_orig.iter().zip(&l.ce_orig) {
        assert!((a - b).abs() < 1e-4, "{a} vs {b}");
    }
    assert_eq!(one.kl[0], vec![0.0; 7]);
}

#[test]
fn bad_core_settings_name_their_key() {
    let s = Study::new(4, 30);
    let base = s.config();
    s.set_config(&(base.clone() + "bench:\n  benchmarks: [core, cor]\n"));
    let err = s.fails(&["status"]);
    assert!(
        err.contains("bench.benchmarks[1] = 'cor'")
            && err.contains("core, absorption, sparse_probing, scr_tpp"),
        "{err}"
    );
    s.set_config(&(base.clone() + "bench:\n  core:\n    ce_sequences: 0\n"));
    let err = s.fails(&["status"]);
    assert!(err.contains("bench.core.ce_sequences = 0"), "{err}");
    s.set_config(&(base + "bench:\n  core:\n    ce_selection: random\n"));
    let err = s.fails(&["status"]);
    assert!(
        err.contains("bench.core.ce_selection") && err.contains("random"),
        "{err}"
    );
}
