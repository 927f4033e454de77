//! The stage graph and each stage's content key for a given config.

use crate::config::Config;
use crate::fingerprint::Fingerprints;
use crate::store::{compute_key, json_diff, Manifest, Store};
use crate::verify::{check_artifact, check_sizes};
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
    StageDef {
        name: "tokenize",
        deps: &[],
        format_version: 1,
        pending: None,
        resumable: false,
    },
    StageDef {
        name: "extract",
        deps: &["tokenize"],
        format_version: 1,
        pending: None,
        resumable: true,
    },
    StageDef {
        name: "train",
        deps: &["extract"],
        format_version: 1,
        pending: None,
        resumable: true,
    },
    StageDef {
        name: "compete",
        deps: &["tokenize", "extract", "train"],
        format_version: 1,
        pending: None,
        resumable: false,
    },
    StageDef {
        name: "letters",
        deps: &["extract"],
        format_version: 1,
        pending: None,
        resumable: false,
    },
    StageDef {
        name: "datasets",
        deps: &["extract"],
        format_version: 1,
        pending: None,
        resumable: false,
    },
    StageDef {
        name: "bench",
        deps: &["extract", "train", "letters", "datasets"],
        format_version: 1,
        pending: None,
        resumable: false,
    },
    StageDef {
        name: "report",
        deps: &["train", "compete", "bench"],
        format_version: 2,
        pending: None,
        resumable: false,
    },
];

pub fn stage_def(name: &str) -> Option<&'static StageDef> {
    STAGES.iter().find(|s| s.name == name)
}

pub fn stage_names() -> Vec<&'static str> {
    STAGES.iter().map(|s| s.name).collect()
}

/// What a built stage's artifact must be, given the config. Most stages make
/// one artifact; train makes one per variant (`unit` = the variant's name).
#[derive(Debug, Clone)]
pub struct Planned {
    pub stage: &'static str,
    pub unit: Option<String>,
    pub key: String,
    pub config: Value,
    pub inputs: BTreeMap<String, String>,
    pub format_version: u32,
}

/// Keys for every built stage, in dependency order. A stage's inputs are the
/// keys of every artifact of the stages it depends on (`train/<variant>` for
/// the train stage's units).
pub fn plan(cfg: &Config) -> Result<Vec<Planned>> {
    let mut keys: BTreeMap<String, String> = BTreeMap::new();
    let mut out: Vec<Planned> = Vec::new();
    for def in STAGES.iter().filter(|s| s.pending.is_none()) {
        let inputs: BTreeMap<String, String> = keys
            .iter()
            .filter(|(name, _)| {
                def.deps
                    .iter()
                    .any(|d| *name == d || name.starts_with(&format!("{d}/")))
            })
            .map(|(n, k)| (n.clone(), k.clone()))
            .collect();
        for Unit { unit, config, uses } in stage_units(def.name, cfg)? {
            // A unit that names what it uses gets only those inputs, so that
            // a change to one variant reruns only that variant's downstream.
            let inputs: BTreeMap<String, String> = match &uses {
                None => inputs.clone(),
                Some(uses) => inputs
                    .iter()
                    .filter(|(name, _)| {
                        uses.iter()
                            .any(|u| *name == u || name.starts_with(&format!("{u}/")))
                    })
                    .map(|(n, k)| (n.clone(), k.clone()))
                    .collect(),
            };
            let key = compute_key(def.name, def.format_version, &config, &inputs);
            out.push(Planned {
                stage: def.name,
                unit,
                key,
                config,
                inputs,
                format_version: def.format_version,
            });
        }
        for p in out.iter().filter(|p| p.stage == def.name) {
            let name = match &p.unit {
                Some(u) => format!("{}/{u}", def.name),
                None => def.name.to_string(),
            };
            keys.insert(name, p.key.clone());
        }
    }
    Ok(out)
}

/// One artifact of a stage: its unit name (None for single-artifact stages),
/// the config its key hashes, and the inputs it uses (None: every artifact of
/// the stages it depends on; names match exactly or as a `name/` prefix).
pub struct Unit {
    pub unit: Option<String>,
    pub config: Value,
    pub uses: Option<Vec<String>>,
}

/// The artifacts a stage makes.
fn stage_units(stage: &str, cfg: &Config) -> Result<Vec<Unit>> {
    let variants: Vec<String> = cfg.variants().into_iter().map(|v| v.name).collect();
    Ok(match stage {
        "train" => {
            let shared = json!({
                "batch_size": cfg.train.batch_size,
                "epochs": cfg.train.epochs,
                "lr": cfg.train.lr,
                "warmup_steps": cfg.train.warmup_steps,
                "decay_frac": cfg.train.decay_frac,
                "dead_after_tokens": cfg.train.dead_after_tokens,
                "uniform_pairs": cfg.train.uniform_pairs,
                "compute": cfg.train.compute.resolve("train.compute")?,
            });
            cfg.variants()
                .into_iter()
                .map(|v| Unit {
                    config: json!({ "variant": v.name, "sae": v.settings, "schedule": shared }),
                    unit: Some(v.name),
                    uses: None,
                })
                .collect()
        }
        "compete" => variants
            .iter()
            .map(|v| Unit {
                unit: Some(v.clone()),
                config: crate::compete::key_config(cfg),
                uses: Some(vec![
                    "tokenize".into(),
                    "extract".into(),
                    format!("train/{v}"),
                ]),
            })
            .collect(),
        // The benchmarks' input stages make nothing when no selected
        // benchmark reads them.
        "letters" | "datasets" if !cfg.bench.selected().any(|b| b.uses.contains(&stage)) => {
            vec![]
        }
        "datasets" => crate::datasets::units(cfg)?
            .into_iter()
            .map(|(name, config)| Unit {
                unit: Some(name),
                config,
                uses: None,
            })
            .collect(),
        "bench" => {
            let mut units = Vec::new();
            for bench in cfg.bench.selected() {
                for v in &variants {
                    units.push(Unit {
                        unit: Some(format!("{}/{v}", bench.name)),
                        config: (bench.key_config)(cfg),
                        uses: Some(
                            bench
                                .uses
                                .iter()
                                .map(|u| u.to_string())
                                .chain([format!("train/{v}")])
                                .collect(),
                        ),
                    });
                }
            }
            units
        }
        "report" => vec![Unit {
            unit: None,
            config: crate::report::key_config(cfg),
            uses: None,
        }],
        _ => vec![Unit {
            unit: None,
            config: stage_config(stage, cfg)?,
            uses: None,
        }],
    })
}

/// The part of the config a stage depends on, and fingerprints of the raw
/// files it reads (content digests, cached: see fingerprint.rs).
fn stage_config(stage: &str, cfg: &Config) -> Result<Value> {
    let mut fp = Fingerprints::open(&cfg.data_dir());
    Ok(match stage {
        "tokenize" => {
            let corpus_path = cfg.resolve(&cfg.corpus.path);
            let format = cfg.corpus_format().ok();
            let tokenizer = if cfg.model.tokenizer == "hf" {
                json!({ "hf_id": cfg.model.hf_id, "revision": cfg.model.revision })
            } else {
                let p = cfg.resolve(Path::new(&cfg.model.tokenizer));
                json!({ "path": cfg.model.tokenizer, "fingerprint": fp.path(&p, format) })
            };
            json!({
                "corpus": {
                    "path": cfg.corpus.path,
                    "format": format,
                    "text_column": cfg.corpus.text_column,
                    "id_column": cfg.corpus.id_column,
                    "label_columns": cfg.corpus.label_columns,
                    "fingerprint": fp.path(&corpus_path, format),
                },
                "tokenizer": tokenizer,
                "bos_token": cfg.model.bos_token,
                "tokenize": cfg.tokenize,
            })
        }
        "extract" => {
            let m = &cfg.model;
            let weights = match &m.path {
                Some(p) => json!({ "path": p, "fingerprint": fp.path(&cfg.resolve(p), None) }),
                None => json!({ "hf_id": m.hf_id, "revision": m.revision }),
            };
            // The resolved compute, not `auto`: bf16 and f32 make other bytes.
            let mut extract = serde_json::to_value(&cfg.extract)?;
            extract["compute"] = json!(cfg.extract.compute.resolve("extract.compute")?);
            json!({
                "model": { "name": m.name, "source": m.source, "weights": weights },
                "layer": m.layer,
                "extract": extract,
            })
        }
        "letters" => crate::letters::key_config(cfg),
        other => anyhow::bail!("stage {other} has no configuration yet"),
    })
}

#[derive(Debug, Clone, PartialEq)]
pub enum State {
    Fresh,
    /// An older artifact exists; the reasons say what changed.
    Stale(Vec<String>),
    Missing,
    /// Published, but a file is missing or not the size the manifest says
    /// (or the manifest is unreadable): `coact run` rebuilds it.
    Damaged(Vec<crate::verify::Damage>),
    NotImplemented(&'static str),
}

/// The state of every artifact (one line per stage, or per unit), in graph order.
pub fn status(cfg: &Config, store: &Store) -> Result<Vec<(&'static str, Option<Planned>, State)>> {
    let planned = plan(cfg)?;
    let mut out = Vec::new();
    for def in STAGES {
        if let Some(issue) = def.pending {
            out.push((def.name, None, State::NotImplemented(issue)));
            continue;
        }
        let existing = store.list(def.name)?;
        for p in planned.iter().filter(|p| p.stage == def.name) {
            let state = if store.exists(def.name, &p.key) {
                let damage = match existing.iter().find(|m| m.key == p.key) {
                    Some(m) => check_sizes(&store.artifact_dir(def.name, &p.key), m),
                    None => check_artifact(store, def.name, &p.key, false),
                };
                if damage.is_empty() {
                    State::Fresh
                } else {
                    State::Damaged(damage)
                }
            } else {
                match existing.iter().find(|m| m.unit == p.unit) {
                    Some(old) => State::Stale(why_stale(old, p)),
                    None => State::Missing,
                }
            };
            out.push((def.name, Some(p.clone()), state));
        }
    }
    Ok(out)
}

fn why_stale(old: &Manifest, new: &Planned) -> Vec<String> {
    let mut why = Vec::new();
    if old.format_version != new.format_version {
        why.push(format!(
            "format version {} -> {}",
            old.format_version, new.format_version
        ));
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
