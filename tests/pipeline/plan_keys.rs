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

/// A shipped study file in a temporary folder with fixture raw inputs.
fn study(study: &str) -> (tempfile::TempDir, Config) {
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
    (tmp, cfg)
}

fn keys_of(name: &str) -> BTreeMap<String, String> {
    let (_tmp, cfg) = study(name);
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

#[test]
fn with_nothing_measured_the_default_study_starts_its_dearest_train_units_first() {
    let (_tmp, cfg) = study("pipeline.yaml");
    let registry = &coact_pipeline::registry::REGISTRY;
    let planned = coact_pipeline::pipeline::plan::plan(&cfg, registry).unwrap();
    let units: Vec<_> = planned.iter().filter(|p| p.stage == "train").collect();
    let store = coact_pipeline::pipeline::store::Store::new(cfg.data_dir());
    let est =
        coact_pipeline::pipeline::estimate::Estimator::measure(&store, &registry.stage_names());
    let order: Vec<&str> = est
        .start_order(&cfg, &units)
        .into_iter()
        .map(|i| units[i].unit.as_deref().unwrap())
        .collect();
    let mut sorted = order.clone();
    sorted.sort();
    let mut all: Vec<&str> = units.iter().map(|p| p.unit.as_deref().unwrap()).collect();
    all.sort();
    assert_eq!(sorted, all, "every unit once");
    let at = |name: &str| order.iter().position(|&u| u == name).unwrap();
    assert_eq!(order[0], "guided-batchtopk", "{order:?}");
    assert!(at("ortsae-seed2") < at("guided-tau0.1-seed0"), "{order:?}");
    assert!(at("guided-tau0.1-seed2") < at("topk-seed0"), "{order:?}");
    // Ties keep plan order.
    assert!(at("topk-seed0") < at("topk-seed1") && at("topk-seed2") < at("uniform"));
    assert_eq!(*order.last().unwrap(), "uniform", "{order:?}");
}
