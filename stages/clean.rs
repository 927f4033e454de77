//! `coact clean`: removes stale artifacts, unreadable ones and leftovers of
//! interrupted runs; fresh artifacts, and the resumable progress of the
//! current config (extract shards, train checkpoints), too with `--all`.

use crate::config::Config;
use crate::lock::{command_line, RunLock};
use crate::plan::{plan, STAGES};
use crate::store::Store;
use anyhow::Result;

/// Returns the folders removed.
pub fn clean(cfg: &Config, all: bool) -> Result<Vec<String>> {
    let _lock = RunLock::acquire(&cfg.data_dir(), &cfg.file, &command_line())?;
    let store = Store::new(cfg.data_dir());
    let planned = plan(cfg)?;
    let mut removed = Vec::new();
    for def in STAGES {
        let fresh: Vec<&str> = planned
            .iter()
            .filter(|p| p.stage == def.name)
            .map(|p| p.key.as_str())
            .collect();
        for (dir, key) in store.leftovers(def.name) {
            // A resumable run of the current config keeps its progress.
            if all || !fresh.contains(&key.as_str()) {
                std::fs::remove_dir_all(&dir)?;
                removed.push(dir.display().to_string());
            }
        }
        for name in store.unreadable(def.name)? {
            store.remove(def.name, &name)?;
            removed.push(store.artifact_dir(def.name, &name).display().to_string());
        }
        for m in store.list(def.name)? {
            if all || !fresh.contains(&m.key.as_str()) {
                store.remove(def.name, &m.key)?;
                removed.push(store.artifact_dir(def.name, &m.key).display().to_string());
            }
        }
    }
    Ok(removed)
}
