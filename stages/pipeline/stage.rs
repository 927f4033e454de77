//! The `Stage` trait: what the plan and the runner need to know of a stage,
//! and what a stage gets when it runs.

use super::benchmark::Benchmark;
use super::cache::RunCache;
use super::plan::Planned;
use super::progress::Progress;
use super::store::{Manifest, Store, TableEntry};
use crate::config::Config;
use anyhow::{anyhow, Result};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A pipeline stage. One unit struct per stage, listed once in
/// `crate::registry`; the plan and the runner see stages only through this.
pub trait Stage: Sync {
    fn name(&self) -> &'static str;
    /// One line for `coact --help` and `coact status`.
    fn about(&self) -> &'static str;
    /// The stages whose artifacts it reads.
    fn deps(&self) -> &'static [&'static str] {
        &[]
    }
    /// Bumped when the stage's output format changes, which invalidates old
    /// artifacts (it is part of every key).
    fn format_version(&self) -> u32 {
        1
    }
    /// Keeps its temporary folder across failures to continue from it.
    fn resumable(&self) -> bool {
        false
    }
    /// Its units are independent (none reads another's artifact) and their
    /// bytes do not depend on the number of threads, so several may run at
    /// once (`coact run --jobs`).
    fn concurrent_units(&self) -> bool {
        false
    }
    /// Builds its artifacts only when a later unit reads them (the
    /// benchmarks' inputs: no benchmark selected, nothing to build).
    fn on_demand(&self) -> bool {
        false
    }
    /// Checks of the config that need the registry (the schema cannot).
    fn validate(&self, _cfg: &Config, _registry: &Registry) -> Result<()> {
        Ok(())
    }
    /// The artifacts it makes for this config, each with the config its key
    /// hashes and the inputs it uses.
    fn units(&self, cfg: &Config, registry: &Registry) -> Result<Vec<Unit>>;
    /// Builds one unit into `input.out_dir`.
    fn run(&self, input: &StageInput) -> Result<StageOutput>;
}

/// Every stage and every benchmark, in graph (and report) order.
pub struct Registry {
    pub stages: &'static [&'static dyn Stage],
    pub benchmarks: &'static [&'static dyn Benchmark],
}

impl Registry {
    pub fn stage(&self, name: &str) -> Option<&'static dyn Stage> {
        self.stages.iter().copied().find(|s| s.name() == name)
    }

    pub fn stage_names(&self) -> Vec<&'static str> {
        self.stages.iter().map(|s| s.name()).collect()
    }

    pub fn benchmark(&self, name: &str) -> Option<&'static dyn Benchmark> {
        self.benchmarks.iter().copied().find(|b| b.name() == name)
    }

    /// The benchmarks the config selects, in registry order.
    pub fn selected_benchmarks<'a>(
        &'a self,
        cfg: &'a Config,
    ) -> impl Iterator<Item = &'static dyn Benchmark> + 'a {
        self.benchmarks
            .iter()
            .copied()
            .filter(|b| cfg.bench.selects(b.name()))
    }

    /// The config checks that need the registry; errors name the key.
    pub fn validate(&self, cfg: &Config) -> Result<()> {
        let names: Vec<&str> = self.benchmarks.iter().map(|b| b.name()).collect();
        cfg.bench.check_names(&names)?;
        for s in self.stages {
            s.validate(cfg, self)?;
        }
        Ok(())
    }
}

/// One artifact of a stage: its unit name (None for single-artifact stages),
/// the config its key hashes, and the inputs it uses (None: every artifact of
/// the stages it depends on; names match exactly or as a `name/` prefix).
pub struct Unit {
    pub unit: Option<String>,
    pub config: Value,
    pub uses: Option<Vec<String>>,
}

impl Unit {
    /// The one artifact of a single-artifact stage, reading every input.
    pub fn single(config: Value) -> Vec<Unit> {
        vec![Unit {
            unit: None,
            config,
            uses: None,
        }]
    }
}

/// What a stage gets: the config, its planned key and inputs, the store (to
/// read its inputs' artifacts), the folder to write into, the registry and
/// a cache that lives as long as the run.
pub struct StageInput<'a> {
    pub cfg: &'a Config,
    pub store: &'a Store,
    pub planned: &'a Planned,
    pub out_dir: &'a Path,
    pub progress: &'a Progress,
    pub registry: &'a Registry,
    pub cache: &'a RunCache,
}

/// An input artifact: where it is and what its manifest says.
pub struct InputArtifact {
    pub name: String,
    pub key: String,
    pub dir: PathBuf,
    pub manifest: Manifest,
}

impl StageInput<'_> {
    /// The key of the input named `name` (`extract`, `train/<variant>`, ...).
    pub fn input_key(&self, name: &str) -> Result<&str> {
        self.planned
            .inputs
            .get(name)
            .map(String::as_str)
            .ok_or_else(|| {
                let have: Vec<&str> = self.planned.inputs.keys().map(String::as_str).collect();
                anyhow!(
                    "needs the {name} artifact, which the plan does not give it (inputs: {})",
                    if have.is_empty() {
                        "none".to_string()
                    } else {
                        have.join(", ")
                    }
                )
            })
    }

    /// The input artifact named `name`, with its manifest.
    pub fn artifact(&self, name: &str) -> Result<InputArtifact> {
        let key = self.input_key(name)?.to_string();
        let stage = name.split('/').next().unwrap_or(name);
        let manifest = self.store.manifest(stage, &key)?;
        Ok(InputArtifact {
            name: name.to_string(),
            dir: self.store.artifact_dir(stage, &key),
            key,
            manifest,
        })
    }

    /// The inputs of stage `stage`'s units: (unit, key), in name order.
    pub fn inputs_of(&self, stage: &str) -> Vec<(String, String)> {
        let prefix = format!("{stage}/");
        self.planned
            .inputs
            .iter()
            .filter_map(|(name, key)| {
                name.strip_prefix(&prefix)
                    .map(|unit| (unit.to_string(), key.clone()))
            })
            .collect()
    }

    /// This unit's name; an error for single-artifact stages.
    pub fn unit(&self) -> Result<&str> {
        self.planned.unit.as_deref().ok_or_else(|| {
            anyhow!(
                "{} runs per unit, and this artifact has none",
                self.planned.stage
            )
        })
    }
}

pub struct StageOutput {
    pub tables: BTreeMap<String, TableEntry>,
    pub summary: Value,
}
