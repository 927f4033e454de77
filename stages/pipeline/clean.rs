//! `coact clean`: removes stale artifacts, unreadable ones and leftovers of
//! interrupted runs; fresh artifacts, and the resumable progress of the
//! current config (extract shards, train checkpoints), too with `--all`.

use crate::config::Config;
use crate::pipeline::lock::{command_line, RunLock};
use crate::pipeline::plan::plan;
use crate::pipeline::stage::Registry;
use crate::pipeline::store::Store;
use anyhow::Result;

/// Returns the folders removed.
pub fn clean(cfg: &Config, registry: &Registry, all: bool) -> Result<Vec<String>> {
    let _lock = RunLock::acquire(&cfg.data_dir(), &cfg.file, &command_line())?;
    let store = Store::new(cfg.data_dir());
    let planned = plan(cfg, registry)?;
    let mut removed = Vec::new();
    for stage in registry.stage_names() {
        let fresh: Vec<&str> = planned
            .iter()
            .filter(|p| p.stage == stage)
            .map(|p| p.key.as_str())
            .collect();
        for (dir, key) in store.leftovers(stage) {
            // A resumable run of the current config keeps its progress.
            if all || !fresh.contains(&key.as_str()) {
                std::fs::remove_dir_all(&dir)?;
                removed.push(dir.display().to_string());
            }
        }
        for name in store.unreadable(stage)? {
            store.remove(stage, &name)?;
            removed.push(store.artifact_dir(stage, &name).display().to_string());
        }
        for m in store.list(stage)? {
            if all || !fresh.contains(&m.key.as_str()) {
                store.remove(stage, &m.key)?;
                removed.push(store.artifact_dir(stage, &m.key).display().to_string());
            }
        }
    }
    Ok(removed)
}
