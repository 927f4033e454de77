//! The store's safety on the tiny study: one writer per data folder (the
//! lock), damaged artifacts found by size (status, run) and by content
//! (verify, run --verify) and rebuilt, raw inputs keyed by content.

use crate::{csv_rows, Study};
use coact_pipeline::pipeline::lock::RunLock;
use std::path::PathBuf;

const SMALL_SHARDS: &str = "extract:\n  batch_size: 3\n  shard_tokens: 16\n";

/// The published folder of a stage's artifact (of `unit`, for per-unit stages).
fn artifact(s: &Study, stage: &str, unit: Option<&str>) -> PathBuf {
    let found: Vec<PathBuf> = s
        .artifacts(stage)
        .into_iter()
        .filter(|n| !n.starts_with('.'))
        .map(|n| s.dir.join("data").join(stage).join(n))
        .filter(|d| {
            let m: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(d.join("manifest.json")).unwrap())
                    .unwrap();
            m["unit"].as_str() == unit
        })
        .collect();
    assert_eq!(found.len(), 1, "{stage} {unit:?}: {found:?}");
    found[0].clone()
}

fn key_of(dir: &std::path::Path) -> String {
    dir.file_name().unwrap().to_string_lossy().to_string()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[test]
fn a_second_run_on_the_same_data_folder_is_refused_at_once_and_reads_keep_working() {
    let s = Study::new(6, 30);
    s.ok(&["run", "tokenize", "-q"]);
    let tokenize = s.artifacts("tokenize");
    // Another run holds the folder (a second open of the lock file conflicts
    // like a second process: flock belongs to the open file description).
    let config = s.dir.join("pipeline.yaml");
    let held = RunLock::acquire(&s.dir.join("data"), &config, "coact run train --force").unwrap();
    let started = std::time::Instant::now();
    let err = s.fails(&["run", "train", "--force"]);
    assert!(
        started.elapsed().as_secs_f64() < 5.0,
        "refused at once, not after waiting"
    );
    let want = format!(
        "data/ is in use by `coact run train --force` (pid {}, started ",
        std::process::id()
    );
    assert!(err.contains(&want), "{err}");
    assert!(
        err.contains(&format!("config {}", config.display()))
            && err.contains("wait for it or stop it"),
        "{err}"
    );
    // Nothing of the holder's folder was touched.
    assert_eq!(s.artifacts("tokenize"), tokenize);
    assert!(
        s.artifacts("extract").is_empty(),
        "{:?}",
        s.artifacts("extract")
    );
    assert!(s.artifacts("train").is_empty());
    // clean writes too, so it waits its turn; status, query and verify read.
    let err = s.fails(&["clean", "--all"]);
    assert!(err.contains("is in use by"), "{err}");
    assert_eq!(s.artifacts("tokenize"), tokenize);
    let status = s.ok(&["status"]);
    assert!(
        status.contains("tokenize  fresh")
            && status.contains("in use by `coact run train --force`"),
        "{status}"
    );
    let n = csv_rows(&s.ok(&[
        "query",
        "--format",
        "csv",
        "select count(*) from tokenize_documents",
    ]));
    assert_eq!(n[1], vec!["6"]);
    s.ok(&["verify"]);
    // Once the holder is done, the next run goes ahead.
    drop(held);
    s.ok(&["run", "extract", "-q"]);
    assert!(s.ok(&["status"]).contains("extract   fresh"));
}

#[test]
fn a_lock_left_by_a_dead_run_is_taken_over_and_said_so() {
    let s = Study::new(6, 30);
    // A pid that is no longer running, as a `kill -9` leaves it.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    std::fs::create_dir_all(s.dir.join("data")).unwrap();
    let body = serde_json::json!({
        "pid": dead, "started_unix": 499162500u64, "config": "/elsewhere/pipeline.yaml",
        "command": "coact run extract"
    });
    std::fs::write(s.dir.join("data/.lock"), body.to_string()).unwrap();
    let out = s.coact(&["run", "tokenize", "-q"]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("taking over the lock")
            && err.contains(&format!("of pid {dead} (no longer running"))
            && err.contains("1985-10-26 08:15:00 UTC"),
        "{err}"
    );
    assert!(s.ok(&["status"]).contains("tokenize  fresh"));
    // Released cleanly: the next run takes it silently.
    assert_eq!(
        std::fs::read_to_string(s.dir.join("data/.lock")).unwrap(),
        ""
    );
    let out = s.coact(&["run", "tokenize", "-q"]);
    assert!(out.status.success() && !stderr(&out).contains("taking over"));
}

#[test]
fn a_truncated_shard_or_deleted_sae_file_is_damaged_and_run_rebuilds_it() {
    let s = Study::new(8, 30);
    s.write_config_with(8, 32, "null", 0, SMALL_SHARDS);
    s.ok(&["run", "train", "-q"]);
    let extract = artifact(&s, "extract", None);
    let shard = extract.join("eval-00001.parquet");
    let original = std::fs::read(&shard).unwrap();
    let sae = artifact(&s, "train", Some("topk"));
    let weights = std::fs::read(sae.join("sae_weights.safetensors")).unwrap();

    // Truncated: status says which file and what the manifest expected.
    let cut = original.len() / 2;
    std::fs::write(&shard, &original[..cut]).unwrap();
    let status = s.ok(&["status"]);
    let why = format!(
        "eval-00001.parquet is {cut} bytes, manifest says {}",
        original.len()
    );
    assert!(
        status.contains(&format!("extract   damaged  {}", key_of(&extract)))
            && status.contains(&why),
        "{status}"
    );
    // query leaves the damaged tables out and says why.
    let out = s.coact(&["query", "select count(*) from extract_activations"]);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("is damaged") && err.contains(&why) && !err.contains("Corrupt footer"),
        "{err}"
    );

    // run rebuilds it (saying so), to the same bytes; its dependants keep
    // their keys and stay cache hits.
    let out = s.coact(&["run", "train"]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "extract {}: damaged ({why}); rebuilding",
            key_of(&extract)
        )) && err.contains("extract   done"),
        "{err}"
    );
    assert_eq!(
        err.matches("cache hit").count(),
        4,
        "tokenize and 3 SAEs: {err}"
    );
    assert_eq!(std::fs::read(&shard).unwrap(), original);
    assert!(s.ok(&["status"]).contains("extract   fresh"));

    // A deleted file of one SAE: only that variant is damaged and rebuilt.
    std::fs::remove_file(sae.join("sae_weights.safetensors")).unwrap();
    let status = s.ok(&["status"]);
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("train     damaged") && l.contains("[topk]"))
            && status.contains("sae_weights.safetensors is missing"),
        "{status}"
    );
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("train     fresh") && l.contains("[guided-tau0]")),
        "{status}"
    );
    let out = s.coact(&["run", "train"]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("sae_weights.safetensors is missing); rebuilding")
            && err.contains("train/topk done")
            && err.contains("train/guided-tau0 fresh"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(sae.join("sae_weights.safetensors")).unwrap(),
        weights
    );
}

#[test]
fn verify_finds_a_flipped_byte_that_keeps_the_size_and_run_verify_rebuilds_it() {
    let s = Study::new(8, 30);
    s.ok(&["run", "train", "-q"]);
    let report = s.ok(&["verify"]);
    assert!(
        report.contains("none damaged") && report.contains("train     ok"),
        "{report}"
    );
    let sae = artifact(&s, "train", Some("guided-tau0"));
    let file = sae.join("sae_weights.safetensors");
    let original = std::fs::read(&file).unwrap();
    let mut flipped = original.clone();
    let at = flipped.len() - 5;
    flipped[at] ^= 0x01;
    std::fs::write(&file, &flipped).unwrap();

    // Same size: status and run (sizes only) cannot tell.
    assert!(!s.ok(&["status"]).contains("damaged"));
    // verify reads the content and fails naming the file.
    let out = s.coact(&["verify"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(!out.status.success(), "{text}");
    assert!(
        stderr(&out).contains("1 damaged artifact"),
        "{}",
        stderr(&out)
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("train     damaged") && l.contains("[guided-tau0]"))
            && text.contains("sae_weights.safetensors differs from what was published")
            && text.contains("train     ok")
            && text.contains("extract   ok"),
        "{text}"
    );
    assert!(s.fails(&["verify", "train"]).contains("1 damaged artifact"));
    let only = s.ok(&["verify", "extract"]);
    assert!(
        !only.contains("train") && only.contains("none damaged"),
        "{only}"
    );
    assert!(s
        .fails(&["verify", "trian"])
        .contains("unknown stage 'trian'"));

    // run --verify checks content before serving a cache hit.
    let out = s.coact(&["run", "train", "--verify"]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("sae_weights.safetensors differs from what was published")
            && err.contains("rebuilding")
            && err.contains("train/guided-tau0 done")
            && err.contains("train/topk fresh"),
        "{err}"
    );
    assert_eq!(std::fs::read(&file).unwrap(), original);
    s.ok(&["verify"]);

    // A manifest from before digests were recorded: sizes only, said so, no failure.
    let mpath = sae.join("manifest.json");
    let mut m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&mpath).unwrap()).unwrap();
    for f in m["files"].as_array_mut().unwrap() {
        f.as_object_mut().unwrap().remove("digest");
    }
    std::fs::write(&mpath, serde_json::to_string_pretty(&m).unwrap()).unwrap();
    let report = s.ok(&["verify", "train"]);
    assert!(
        report.contains("have no digest") && report.contains("none damaged"),
        "{report}"
    );
}

#[test]
fn an_edit_that_keeps_size_and_mtime_changes_the_raw_inputs_key() {
    let s = Study::new(6, 30);
    s.ok(&["run", "tokenize", "-q"]);
    let before = s.artifacts("tokenize");
    let corpus = s.dir.join("corpus.jsonl");
    let text = std::fs::read_to_string(&corpus).unwrap();
    let meta = std::fs::metadata(&corpus).unwrap();
    // A swapped label: same length, written in place, mtime put back (as
    // npm gives every file the same mtime).
    let edited = text.replacen("Republican", "Democratic", 1);
    assert_ne!(edited, text);
    assert_eq!(edited.len(), text.len());
    std::fs::write(&corpus, &edited).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&corpus)
        .unwrap()
        .set_modified(meta.modified().unwrap())
        .unwrap();
    let after = std::fs::metadata(&corpus).unwrap();
    assert_eq!(
        (after.len(), after.modified().unwrap()),
        (meta.len(), meta.modified().unwrap())
    );
    let status = s.ok(&["status"]);
    assert!(
        status.contains("tokenize  stale") && status.contains("config corpus.fingerprint: "),
        "{status}"
    );
    s.ok(&["run", "tokenize", "-q"]);
    assert_eq!(s.artifacts("tokenize").len(), before.len() + 1);
    let parties = csv_rows(&s.ok(&[
        "query",
        "--format",
        "csv",
        "select party from tokenize_documents where doc_id = 'doc00'",
    ]));
    assert_eq!(parties[1], vec!["Democratic"]);
}

#[test]
fn unchanged_raw_inputs_are_hashed_once_and_read_from_the_digest_cache() {
    let s = Study::new(6, 30);
    // Files changed within the last second are never cached (coarse clocks).
    std::thread::sleep(std::time::Duration::from_millis(1100));
    s.ok(&["run", "tokenize", "-q"]);
    let cache_path = s.dir.join("data/.fingerprints.json");
    let cache: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cache_path).unwrap()).unwrap();
    let corpus = std::path::absolute(s.dir.join("corpus.jsonl"))
        .unwrap()
        .to_string_lossy()
        .to_string();
    let digest = cache[&corpus]["digest"].as_str().unwrap().to_string();
    assert!(digest.starts_with("sha256:"), "{cache}");
    assert!(cache
        .as_object()
        .unwrap()
        .keys()
        .any(|k| k.ends_with("model.safetensors")));

    // Proof that status reads the cache instead of rehashing: a doctored
    // digest for an unchanged file is believed.
    let mut doctored = cache.clone();
    doctored[&corpus]["digest"] = "sha256:doctored".into();
    std::fs::write(&cache_path, doctored.to_string()).unwrap();
    let status = s.ok(&["status"]);
    assert!(
        status.contains("tokenize  stale") && status.contains("-> \"sha256:doctored\""),
        "{status}"
    );
    // Rewriting the file (same bytes) changes its ctime: hashed again, and
    // the same content gives the same key.
    let bytes = std::fs::read(s.dir.join("corpus.jsonl")).unwrap();
    std::fs::write(s.dir.join("corpus.jsonl"), bytes).unwrap();
    assert!(s.ok(&["status"]).contains("tokenize  fresh"));
}
