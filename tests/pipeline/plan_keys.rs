//! The content keys `plan()` gives the shipped study files stay byte-identical
//! across refactors, so that a user's cached artifacts stay valid. The raw
//! inputs are replaced by fixed fixture files (the keys hash their content),
//! and `compute: auto` is pinned to f32 (auto resolves per CPU).
//! Run with COACT_UPDATE_PLAN_KEYS=1 to rewrite the snapshot after a
//! deliberate format-version bump.

use coact_pipeline::config::{ComputeSetting, Config};
use std::collections::BTreeMap;
use std::path::Path;

const SNAPSHOT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/pipeline/plan_keys.json"
);
const STUDIES: &[&str] = &["pipeline.yaml", "pipeline.gemma2.yaml"];

fn keys_of(study: &str) -> BTreeMap<String, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::copy(root.join(study), dir.join(study)).unwrap();
    let raw = dir.join("data/raw");
    std::fs::create_dir_all(raw.join("sotu")).unwrap();
    for (file, text) in [
        ("gemma-3-270m-q4_k_m.gguf", "fixture weights"),
        ("tokenizer.json", "fixture tokenizer"),
        ("sotu/sotu.jsonl", "{\"text\": \"fixture corpus\"}\n"),
        ("words.txt", "fixture\nwords\n"),
    ] {
        std::fs::write(raw.join(file), text).unwrap();
    }
    let mut cfg = Config::load(&dir.join(study)).unwrap();
    cfg.extract.compute = ComputeSetting::F32;
    cfg.train.compute = ComputeSetting::F32;
    coact_pipeline::pipeline::plan::plan(&cfg, &coact_pipeline::registry::REGISTRY)
        .unwrap()
        .into_iter()
        .map(|p| {
            let name = match &p.unit {
                Some(u) => format!("{}/{u}", p.stage),
                None => p.stage.to_string(),
            };
            (name, p.key)
        })
        .collect()
}

#[test]
fn plan_keys_of_the_shipped_studies_match_the_snapshot() {
    let now: BTreeMap<String, BTreeMap<String, String>> = STUDIES
        .iter()
        .map(|s| (s.to_string(), keys_of(s)))
        .collect();
    if std::env::var_os("COACT_UPDATE_PLAN_KEYS").is_some() {
        let text = serde_json::to_string_pretty(&now).unwrap() + "\n";
        std::fs::write(SNAPSHOT, text).unwrap();
        return;
    }
    let want: BTreeMap<String, BTreeMap<String, String>> =
        serde_json::from_str(&std::fs::read_to_string(SNAPSHOT).unwrap()).unwrap();
    for study in STUDIES {
        let (now, want) = (&now[*study], &want[*study]);
        let names: Vec<&String> = now.keys().chain(want.keys()).collect();
        for name in names {
            assert_eq!(
                now.get(name),
                want.get(name),
                "{study}: the key of {name} changed; cached artifacts would rebuild"
            );
        }
    }
}
