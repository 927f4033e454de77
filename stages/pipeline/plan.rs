//! The stage graph and each stage's content key for a given config.

use super::stage::{Registry, Unit};
use crate::config::Config;
use crate::pipeline::store::{compute_key, json_diff, Manifest, Store};
use crate::pipeline::verify::{check_artifact, check_sizes};
use anyhow::{anyhow, Result};
use serde_json::Value;
use std::collections::BTreeMap;

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

impl Planned {
    /// `stage` or `stage/unit`.
    pub fn label(&self) -> String {
        match &self.unit {
            Some(u) => format!("{}/{u}", self.stage),
            None => self.stage.to_string(),
        }
    }
}

/// Keys for every stage's units, in dependency order. A unit's inputs are
/// the keys of every artifact of the stages it depends on (`train/<variant>`
/// for the train stage's units), or of those it names it uses.
pub fn plan(cfg: &Config, registry: &Registry) -> Result<Vec<Planned>> {
    registry.validate(cfg)?;
    let mut keys: BTreeMap<String, String> = BTreeMap::new();
    let mut out: Vec<Planned> = Vec::new();
    for stage in registry.stages {
        let name = stage.name();
        let deps = stage.deps();
        let inputs: BTreeMap<String, String> = keys
            .iter()
            .filter(|(n, _)| deps.iter().any(|d| matches(n, d)))
            .map(|(n, k)| (n.clone(), k.clone()))
            .collect();
        let units = stage
            .units(cfg, registry)
            .map_err(|e| anyhow!("planning stage {name}: {e:#}"))?;
        for Unit { unit, config, uses } in units {
            // A unit that names what it uses gets only those inputs, so that
            // a change to one variant reruns only that variant's downstream.
            let inputs: BTreeMap<String, String> = match &uses {
                None => inputs.clone(),
                Some(uses) => inputs
                    .iter()
                    .filter(|(n, _)| uses.iter().any(|u| matches(n, u)))
                    .map(|(n, k)| (n.clone(), k.clone()))
                    .collect(),
            };
            let key = compute_key(name, stage.format_version(), &config, &inputs);
            let label = match &unit {
                Some(u) => format!("{name}/{u}"),
                None => name.to_string(),
            };
            keys.insert(label, key.clone());
            out.push(Planned {
                stage: name,
                unit,
                key,
                config,
                inputs,
                format_version: stage.format_version(),
            });
        }
    }
    // On-demand stages keep only the units a later unit reads.
    let read: Vec<String> = out.iter().flat_map(|p| p.inputs.keys().cloned()).collect();
    out.retain(|p| {
        let on_demand = registry.stage(p.stage).is_some_and(|s| s.on_demand());
        !on_demand || read.contains(&p.label())
    });
    Ok(out)
}

/// Whether input `name` is `stage` or one of its units (`stage/...`).
fn matches(name: &str, stage: &str) -> bool {
    name == stage || name.strip_prefix(stage).is_some_and(|r| r.starts_with('/'))
}

#[derive(Debug, Clone, PartialEq)]
pub enum State {
    Fresh,
    /// An older artifact exists; the reasons say what changed.
    Stale(Vec<String>),
    Missing,
    /// Published, but a file is missing or not the size the manifest says
    /// (or the manifest is unreadable): `coact run` rebuilds it.
    Damaged(Vec<crate::pipeline::verify::Damage>),
}

/// The state of every artifact (one line per stage, or per unit), in graph order.
pub fn status(cfg: &Config, store: &Store, registry: &Registry) -> Result<Vec<(Planned, State)>> {
    let planned = plan(cfg, registry)?;
    let mut out = Vec::new();
    for stage in registry.stage_names() {
        let existing = store.list(stage)?;
        for p in planned.iter().filter(|p| p.stage == stage) {
            let state = if store.exists(stage, &p.key) {
                let damage = match existing.iter().find(|m| m.key == p.key) {
                    Some(m) => check_sizes(&store.artifact_dir(stage, &p.key), m),
                    None => check_artifact(store, stage, &p.key, false),
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
            out.push((p.clone(), state));
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
