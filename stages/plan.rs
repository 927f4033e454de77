//! The stage graph and each stage's content key for a given config.

use crate::config::{Config, CorpusFormat};
use crate::store::{compute_key, json_diff, Manifest, Store};
use anyhow::Result;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;

pub struct StageDef {
    pub name: &'static str,
    pub deps: &'static [&'static str],
    /// Bumped when a stage's output format changes, which invalidates old artifacts.
    pub format_version: u32,
    /// None when built; otherwise the issue that will build it.
    pub pending: Option<&'static str>,
    /// Keeps its temporary folder across failures to continue from it.
    pub resumable: bool,
}

pub const STAGES: &[StageDef] = &[
    StageDef { name: "tokenize", deps: &[], format_version: 1, pending: None, resumable: false },
    StageDef { name: "extract", deps: &["tokenize"], format_version: 1, pending: None, resumable: true },
    StageDef { name: "train", deps: &["extract"], format_version: 1, pending: Some("issue 4"), resumable: true },
    StageDef { name: "compete", deps: &["train"], format_version: 1, pending: Some("issue 5"), resumable: false },
    StageDef {
        name: "bench",
        deps: &["extract", "train"],
        format_version: 1,
        pending: Some("issues 6 and 7"),
        resumable: false,
    },
    StageDef { name: "report", deps: &["compete", "bench"], format_version: 1, pending: Some("issue 8"), resumable: false },
];

pub fn stage_def(name: &str) -> Option<&'static StageDef> {
    STAGES.iter().find(|s| s.name == name)
}

pub fn stage_names() -> Vec<&'static str> {
    STAGES.iter().map(|s| s.name).collect()
}

/// What a built stage's artifact must be, given the config.
#[derive(Debug, Clone)]
pub struct Planned {
    pub stage: &'static str,
    pub key: String,
    pub config: Value,
    pub inputs: BTreeMap<String, String>,
    pub format_version: u32,
}

/// Keys for every built stage, in dependency order.
pub fn plan(cfg: &Config) -> Result<Vec<Planned>> {
    let mut keys: BTreeMap<String, String> = BTreeMap::new();
    let mut out = Vec::new();
    for def in STAGES.iter().filter(|s| s.pending.is_none()) {
        let config = stage_config(def.name, cfg)?;
        let inputs: BTreeMap<String, String> = def
            .deps
            .iter()
            .map(|d| (d.to_string(), keys.get(*d).cloned().unwrap_or_default()))
            .collect();
        let key = compute_key(def.name, def.format_version, &config, &inputs);
        keys.insert(def.name.to_string(), key.clone());
        out.push(Planned { stage: def.name, key, config, inputs, format_version: def.format_version });
    }
    Ok(out)
}

/// The part of the config a stage depends on, and fingerprints of the raw
/// files it reads (size and modification time, so that status stays instant).
fn stage_config(stage: &str, cfg: &Config) -> Result<Value> {
    Ok(match stage {
        "tokenize" => {
            let corpus_path = cfg.resolve(&cfg.corpus.path);
            let format = cfg.corpus_format().ok();
            let tokenizer = if cfg.model.tokenizer == "hf" {
                json!({ "hf_id": cfg.model.hf_id, "revision": cfg.model.revision })
            } else {
                let p = cfg.resolve(Path::new(&cfg.model.tokenizer));
                json!({ "path": cfg.model.tokenizer, "fingerprint": fingerprint(&p, format) })
            };
            json!({
                "corpus": {
                    "path": cfg.corpus.path,
                    "format": format,
                    "text_column": cfg.corpus.text_column,
                    "id_column": cfg.corpus.id_column,
                    "label_columns": cfg.corpus.label_columns,
                    "fingerprint": fingerprint(&corpus_path, format),
                },
                "tokenizer": tokenizer,
                "bos_token": cfg.model.bos_token,
                "tokenize": cfg.tokenize,
            })
        }
        "extract" => {
            let m = &cfg.model;
            let weights = match &m.path {
                Some(p) => json!({ "path": p, "fingerprint": fingerprint(&cfg.resolve(p), None) }),
                None => json!({ "hf_id": m.hf_id, "revision": m.revision }),
            };
            json!({
                "model": { "name": m.name, "source": m.source, "weights": weights },
                "layer": m.layer,
                "extract": cfg.extract,
            })
        }
        other => anyhow::bail!("stage {other} has no configuration yet"),
    })
}

/// size:mtime of a file, or of every .txt file of a corpus folder.
fn fingerprint(path: &Path, format: Option<CorpusFormat>) -> String {
    let one = |p: &Path| -> Option<String> {
        let m = std::fs::metadata(p).ok()?;
        let t = m.modified().ok()?.duration_since(std::time::UNIX_EPOCH).ok()?;
        Some(format!("{}:{}", m.len(), t.as_nanos()))
    };
    if format == Some(CorpusFormat::TxtDir) && path.is_dir() {
        let mut parts: Vec<String> = std::fs::read_dir(path)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter(|e| e.path().extension().is_some_and(|x| x == "txt"))
                    .filter_map(|e| Some(format!("{}={}", e.file_name().to_string_lossy(), one(&e.path())?)))
                    .collect()
            })
            .unwrap_or_default();
        parts.sort();
        return parts.join(",");
    }
    one(path).unwrap_or_else(|| "missing".into())
}

#[derive(Debug, Clone, PartialEq)]
pub enum State {
    Fresh,
    /// An older artifact exists; the reasons say what changed.
    Stale(Vec<String>),
    Missing,
    NotImplemented(&'static str),
}

/// The state of every stage, in graph order.
pub fn status(cfg: &Config, store: &Store) -> Result<Vec<(&'static str, Option<Planned>, State)>> {
    let planned = plan(cfg)?;
    let mut out = Vec::new();
    for def in STAGES {
        if let Some(issue) = def.pending {
            out.push((def.name, None, State::NotImplemented(issue)));
            continue;
        }
        let p = planned.iter().find(|p| p.stage == def.name).expect("planned").clone();
        let state = if store.exists(def.name, &p.key) {
            State::Fresh
        } else {
            match store.list(def.name)?.first() {
                Some(old) => State::Stale(why_stale(old, &p)),
                None => State::Missing,
            }
        };
        out.push((def.name, Some(p), state));
    }
    Ok(out)
}

fn why_stale(old: &Manifest, new: &Planned) -> Vec<String> {
    let mut why = Vec::new();
    if old.format_version != new.format_version {
        why.push(format!("format version {} -> {}", old.format_version, new.format_version));
    }
    for (stage, key) in &new.inputs {
        match old.inputs.get(stage) {
            Some(k) if k == key => {}
            Some(k) => why.push(format!("input {stage} changed ({k} -> {key})")),
            None => why.push(format!("new input {stage}")),
        }
    }
    let mut diffs = Vec::new();
    json_diff("", &old.config, &new.config, &mut diffs);
    why.extend(diffs.into_iter().map(|d| format!("config {d}")));
    if why.is_empty() {
        why.push(format!("key {} -> {}", old.key, new.key));
    }
    why
}
