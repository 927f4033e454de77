//! `coact run`: runs stages in dependency order, serving fresh artifacts from
//! the store and publishing new ones atomically.

use crate::config::Config;
use crate::lock::{command_line, RunLock};
use crate::plan::{plan, stage_def, stage_names, Planned, STAGES};
use crate::progress::Progress;
use crate::store::{now_unix, Manifest, Store, TableEntry};
use crate::verify::{check_artifact, summary};
use anyhow::{anyhow, bail, Result};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// What a stage gets: the config, its planned key and inputs, the store (to
/// read its inputs' artifacts) and the folder to write into.
pub struct StageInput<'a> {
    pub cfg: &'a Config,
    pub store: &'a Store,
    pub planned: &'a Planned,
    pub out_dir: &'a Path,
    pub progress: &'a Progress,
}

pub struct StageOutput {
    pub tables: BTreeMap<String, TableEntry>,
    pub summary: Value,
}

fn run_stage(name: &str, input: &StageInput) -> Result<StageOutput> {
    match name {
        "tokenize" => crate::tokenize::run(input),
        "extract" => crate::extract::run(input),
        "train" => crate::train::run(input),
        "compete" => crate::compete::run(input),
        "letters" => crate::letters::run(input),
        "datasets" => crate::datasets::run(input),
        "bench" => crate::bench::run(input),
        "report" => crate::report::run(input),
        other => bail!("stage {other} is not implemented yet"),
    }
}

/// Runs the named stages (all when empty) and whatever they need. `force`
/// reruns the named stages (all when none are named) even when fresh. A
/// damaged artifact (a file missing or of the wrong size; with `verify`, of
/// the wrong content too) is rebuilt like a missing one.
pub fn run(
    cfg: &Config,
    names: &[String],
    force: bool,
    verify: bool,
    progress: &Progress,
) -> Result<()> {
    for n in names {
        let def = stage_def(n)
            .ok_or_else(|| anyhow!("unknown stage '{n}'; stages: {}", stage_names().join(", ")))?;
        if let Some(issue) = def.pending {
            bail!("stage {n} is not implemented yet ({issue}); `coact status` shows what is built");
        }
    }
    let wanted = closure(names);
    // Held until the run ends: a second run or clean on this data folder
    // fails at once instead of colliding with this one.
    let _lock = RunLock::acquire(&cfg.data_dir(), &cfg.file, &command_line())?;
    let store = Store::new(cfg.data_dir());
    let planned = plan(cfg)?;
    for def in STAGES.iter().filter(|d| wanted.contains(d.name)) {
        if let Some(issue) = def.pending {
            progress.note(format!("{:<9} not yet implemented ({issue})", def.name));
            continue;
        }
        for p in planned.iter().filter(|p| p.stage == def.name) {
            run_unit(
                cfg,
                &store,
                def,
                p,
                force && (names.is_empty() || names.iter().any(|n| n == def.name)),
                verify,
                progress,
            )?;
        }
    }
    Ok(())
}

fn run_unit(
    cfg: &Config,
    store: &Store,
    def: &crate::plan::StageDef,
    p: &Planned,
    forced: bool,
    verify: bool,
    progress: &Progress,
) -> Result<()> {
    let label = match &p.unit {
        Some(u) => format!("{}/{u}", def.name),
        None => def.name.to_string(),
    };
    if store.exists(def.name, &p.key) && !forced {
        let damage = check_artifact(store, def.name, &p.key, verify);
        if damage.is_empty() {
            progress.note(format!("{label:<9} fresh  {} (cache hit)", p.key));
            return Ok(());
        }
        // Said even with -q: the user should know why a fresh stage reruns.
        eprintln!(
            "{label} {}: damaged ({}); rebuilding",
            p.key,
            summary(&damage)
        );
    }
    let started = std::time::Instant::now();
    let staging = if def.resumable {
        store.begin_resumable(def.name, &p.key)?
    } else {
        store.begin(def.name, &p.key)?
    };
    let input = StageInput {
        cfg,
        store,
        planned: p,
        out_dir: staging.path(),
        progress,
    };
    let out = run_stage(def.name, &input).map_err(|e| anyhow!("stage {label} failed: {e:#}"))?;
    let elapsed_s = started.elapsed().as_secs_f64();
    let manifest = Manifest {
        stage: def.name.to_string(),
        unit: p.unit.clone(),
        key: p.key.clone(),
        format_version: p.format_version,
        inputs: p.inputs.clone(),
        config: p.config.clone(),
        coact_version: env!("CARGO_PKG_VERSION").to_string(),
        created_unix: now_unix(),
        elapsed_s,
        files: vec![],
        tables: out.tables,
        summary: out.summary,
    };
    let dir = staging.publish(manifest)?;
    progress.note(format!(
        "{label:<9} done   {} in {elapsed_s:.1} s -> {}",
        p.key,
        dir.display()
    ));
    Ok(())
}

/// The named stages plus all their prerequisites; every stage when none named.
fn closure(names: &[String]) -> BTreeSet<&'static str> {
    let mut out = BTreeSet::new();
    let mut todo: Vec<&'static str> = if names.is_empty() {
        stage_names()
    } else {
        names
            .iter()
            .filter_map(|n| stage_def(n).map(|d| d.name))
            .collect()
    };
    while let Some(n) = todo.pop() {
        if out.insert(n) {
            todo.extend(stage_def(n).expect("known stage").deps.iter().copied());
        }
    }
    out
}
