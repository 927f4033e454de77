//! The letters stage and the absorption benchmark on the tiny study.

use super::{csv_rows, Study};

/// The study's bench section with small prompts: 20 words (the corpus words
/// of the word list; its other lines are not one known token), 15 train and
/// 5 test, two examples then three words per prompt. Letters are kept
/// whatever their probe F1 (min_probe_f1 -1) when the probe detects one of
/// their test words; with a random model the ground-truth probes cannot
/// generalise to unseen words, so none does and every letter is left out
/// (the calculator's numbers are tested on a hand-built SAE in
/// tests/metrics_absorption.rs).
const BENCH: &str = "bench:\n  benchmarks: [absorption]\n  absorption:\n    test_fraction: 0.25\n    icl_examples: 2\n    words_per_prompt: 3\n    batch_size: 2\n    min_probe_f1: -1\n";

fn study() -> Study {
    let s = Study::new(8, 30);
    s.set_config(&(s.config() + BENCH));
    s
}

fn q(s: &Study, sql: &str) -> Vec<Vec<String>> {
    csv_rows(&s.ok(&["query", "--format", "csv", sql]))
}

#[test]
fn letters_and_absorption_tables_are_queryable_and_cached() {
    let s = study();
    s.ok(&["run", "bench", "-q"]);

    // letters: 20 single-token lowercase words; 15 train, 5 test.
    let splits = q(
        &s,
        "select split, count(*), count(distinct word) from letters_words group by split order by split",
    );
    assert_eq!(splits[1], vec!["test", "5", "5"], "{splits:?}");
    assert_eq!(splits[2], vec!["train", "15", "15"], "{splits:?}");
    let skipped = q(
        &s,
        "select count(*) from letters_words where word in ('Union', 'zebra', 'don''t', '')",
    );
    assert_eq!(skipped[1], vec!["0"]);
    // Each word's letter is its first letter, its prompt ends with its line,
    // and its token sits at its position: 2 examples plus the words before
    // it in its sequence precede it.
    let bad = q(
        &s,
        "select count(*) from letters_words where letter <> substr(word, 1, 1) \
         or prompt not like concat('%\n ', word, ' has the first letter:') \
         or examples < 2 or examples > 4",
    );
    assert_eq!(bad[1], vec!["0"], "{bad:?}");
    let lens = q(
        &s,
        "select min(array_length(activation)), max(array_length(activation)) from letters_words",
    );
    assert_eq!(lens[1], vec!["48", "48"]);
    let probes = q(
        &s,
        "select count(*), sum(case when trained then 1 else 0 end) from letters_probes",
    );
    assert_eq!(probes[1][0], "26");
    // 'the', 'this', 'trade', 'tax' ... : only the letters of train words
    // get a probe.
    let trained_letters = q(
        &s,
        "select count(distinct letter) from letters_words where split = 'train'",
    );
    assert_eq!(probes[1][1], trained_letters[1][0]);

    // bench_absorption: one set of rows per variant.
    let variants = q(
        &s,
        "select variant, count(*) from bench_absorption where letter is null group by variant order by variant",
    );
    assert_eq!(
        variants
            .iter()
            .skip(1)
            .map(|r| r[0].as_str())
            .collect::<Vec<_>>(),
        vec!["guided-tau0", "guided-tau0.5", "topk"]
    );
    for v in ["topk", "guided-tau0", "guided-tau0.5"] {
        let overall = q(
            &s,
            &format!(
                "select metric, value from bench_absorption where variant = '{v}' and letter is null order by metric"
            ),
        );
        let get = |m: &str| -> String {
            overall
                .iter()
                .find(|r| r[0] == m)
                .unwrap_or_else(|| panic!("{v}: no {m}: {overall:?}"))[1]
                .clone()
        };
        let used: f64 = get("letters_used").parse().unwrap();
        // Every letter has probe_f1, num_words and left_out rows.
        let per = q(
            &s,
            &format!(
                "select metric, count(*), sum(value) from bench_absorption where variant = '{v}' and letter is not null group by metric order by metric"
            ),
        );
        let row = |m: &str| per.iter().find(|r| r[0] == m).cloned();
        assert_eq!(row("probe_f1").unwrap()[1], "26", "{per:?}");
        assert_eq!(row("num_words").unwrap()[1], "26", "{per:?}");
        let left: f64 = row("left_out").unwrap()[2].parse().unwrap();
        assert_eq!(used, 26.0 - left, "{per:?}");
        // Absorption rows exactly for the letters kept.
        let kept = q(
            &s,
            &format!(
                "select count(*) from bench_absorption a where variant = '{v}' \
                 and metric = 'absorption_fraction' and letter in \
                 (select letter from bench_absorption where variant = '{v}' and metric = 'left_out' and value = 0)"
            ),
        );
        let all = q(
            &s,
            &format!("select count(*) from bench_absorption where variant = '{v}' and metric = 'absorption_fraction'"),
        );
        assert_eq!(kept[1][0], all[1][0]);
        assert_eq!(kept[1][0].parse::<f64>().unwrap(), used);
        get("mean_full_absorption_rate");
    }
    // Nothing generalises in the random tiny model: every letter is left out
    // for want of a detected test word, the means are NaN (null in JSON).
    let overall = q(
        &s,
        "select count(*), sum(value) from bench_absorption where metric = 'left_out'",
    );
    assert_eq!(overall[1], vec!["78", "78.0"], "{overall:?}");
    let means = q(
        &s,
        "select count(*) from bench_absorption where metric = 'mean_absorption_fraction' and isnan(value)",
    );
    assert_eq!(means[1], vec!["3"]);
    // The ranked latents of every letter with train words.
    let ranks = q(
        &s,
        "select count(*), max(rank), sum(case when is_main then 1 else 0 end) from bench_absorption_latents where variant = 'topk'",
    );
    assert_eq!(ranks[1][1], "10");
    assert_ne!(ranks[1][2], "0");

    // SAEBench-shaped JSON in each bench artifact, and the left-out letters
    // in the manifest.
    let mut seen = 0;
    for key in s.artifacts("bench") {
        let dir = s.dir.join("data/bench").join(&key);
        let j: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("eval_results.json")).unwrap())
                .unwrap();
        assert_eq!(j["eval_type_id"], "absorption_first_letter");
        assert_eq!(j["eval_config"]["max_k_value"], 10);
        assert_eq!(j["eval_config"]["prompt_token_pos"], -6);
        assert!(j["eval_result_metrics"]["mean"]["mean_absorption_fraction_score"].is_null());
        let m: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap())
                .unwrap();
        let left = m["summary"]["letters_left_out"].as_array().unwrap();
        assert!(left.iter().all(
            |l| l["reason"] == "no_detected_words" && l["letter"].as_str().unwrap().len() == 1
        ));
        assert_eq!(
            left.len() + m["summary"]["letters_used"].as_u64().unwrap() as usize,
            26
        );
        assert_eq!(
            j["eval_result_details"].as_array().unwrap().len(),
            m["summary"]["letters_used"].as_u64().unwrap() as usize
        );
        seen += 1;
    }
    assert_eq!(seen, 3);

    // A second run is a cache hit for letters and every absorption unit.
    let out = s.coact(&["run", "bench"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("letters   fresh"), "{err}");
    assert_eq!(err.matches("bench/absorption/").count(), 3, "{err}");
    assert!(!err.contains(" done "), "{err}");
}

#[test]
fn bench_settings_rerun_only_the_benchmark_and_the_word_list_reruns_letters() {
    let s = study();
    s.ok(&["run", "bench", "-q"]);
    // A benchmark-only knob: letters stays fresh, the absorption units go stale.
    s.edit_config(
        "    min_probe_f1: -1\n",
        "    min_probe_f1: -1\n    f1_jump: 0.05\n",
    );
    let status = s.ok(&["status"]);
    assert!(status.contains("letters   fresh"), "{status}");
    assert!(
        status
            .lines()
            .filter(|l| l.starts_with("bench     stale") && l.contains("[absorption/"))
            .count()
            == 3,
        "{status}"
    );
    assert!(status.contains("config f1_jump: 0.03 -> 0.05"), "{status}");
    // A prompt setting reruns letters.
    s.edit_config("    icl_examples: 2\n", "    icl_examples: 1\n");
    let status = s.ok(&["status"]);
    assert!(status.contains("letters   stale"), "{status}");
    assert!(status.contains("config icl_examples: 2 -> 1"), "{status}");
    s.edit_config("    icl_examples: 1\n", "    icl_examples: 2\n");
    assert!(s.ok(&["status"]).contains("letters   fresh"));
    // Editing the word list makes letters stale (its fingerprint is in the key).
    let path = s.dir.join("data/raw/words.txt");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("\nwar\n");
    std::fs::write(&path, text).unwrap();
    let status = s.ok(&["status"]);
    assert!(
        status.contains("letters   stale") && status.contains("words_fingerprint"),
        "{status}"
    );
}

#[test]
fn letters_errors_name_the_setting() {
    let s = study();
    s.edit_config(
        "    icl_examples: 2\n",
        "    icl_examples: 2\n    template: no word here\n",
    );
    let err = s.fails(&["status"]);
    assert!(
        err.contains("bench.absorption.template") && err.contains("{word}"),
        "{err}"
    );
    s.edit_config("    template: no word here\n", "    words: missing.txt\n");
    let err = s.fails(&["run", "letters", "-q"]);
    assert!(
        err.contains("bench.absorption.words = missing.txt") && err.contains("make setup"),
        "{err}"
    );
    s.edit_config("    words: missing.txt\n", "");
    s.edit_config(
        "  benchmarks: [absorption]\n",
        "  benchmarks: [absorbtion]\n",
    );
    let err = s.fails(&["status"]);
    assert!(
        err.contains("bench.benchmarks[0] = 'absorbtion'") && err.contains("absorption"),
        "{err}"
    );
}
