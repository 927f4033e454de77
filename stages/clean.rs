//! `coact clean`: removes stale artifacts and leftovers of interrupted runs;
//! fresh artifacts too with `--all`.

use crate::config::Config;
use crate::plan::{plan, STAGES};
use crate::store::Store;
use anyhow::Result;

/// Returns the folders removed.
pub fn clean(cfg: &Config, all: bool) -> Result<Vec<String>> {
    let store = Store::new(cfg.data_dir());
    let planned = plan(cfg)?;
    let mut removed = Vec::new();
    for def in STAGES {
        for dir in store.leftovers(def.name) {
            std::fs::remove_dir_all(&dir)?;
            removed.push(dir.display().to_string());
        }
        let fresh: Vec<&str> = planned
            .iter()
            .filter(|p| p.stage == def.name)
            .map(|p| p.key.as_str())
            .collect();
        for m in store.list(def.name)? {
            if all || !fresh.contains(&m.key.as_str()) {
                store.remove(def.name, &m.key)?;
                removed.push(store.artifact_dir(def.name, &m.key).display().to_string());
            }
        }
    }
    Ok(removed)
}
