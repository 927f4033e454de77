//! `coact run`: runs stages in dependency order, serving fresh artifacts from
//! the store and publishing new ones atomically.

use crate::config::Config;
use crate::pipeline::cache::RunCache;
use crate::pipeline::estimate::Estimator;
use crate::pipeline::lock::{command_line, RunLock};
use crate::pipeline::plan::{plan, Planned};
use crate::pipeline::progress::Progress;
use crate::pipeline::stage::{Registry, Stage, StageInput};
use crate::pipeline::store::{now_unix, Manifest, Store};
use crate::pipeline::verify::{check_artifact, summary};
use anyhow::{anyhow, Result};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Runs the named stages (all when empty) and whatever they need. `force`
/// reruns the named stages (all when none are named) even when fresh. A
/// damaged artifact (a file missing or of the wrong size; with `verify`, of
/// the wrong content too) is rebuilt like a missing one. `jobs` units of a
/// stage whose units are independent run at once, the threads split among
/// them; the artifacts' bytes are the same for any `jobs`.
pub fn run(
    cfg: &Config,
    registry: &Registry,
    names: &[String],
    force: bool,
    verify: bool,
    jobs: usize,
    progress: &Progress,
) -> Result<()> {
    for n in names {
        registry.stage(n).ok_or_else(|| {
            anyhow!(
                "unknown stage '{n}'; stages: {}",
                registry.stage_names().join(", ")
            )
        })?;
    }
    let wanted = closure(registry, names);
    // Held until the run ends: a second run or clean on this data folder
    // fails at once instead of colliding with this one.
    let _lock = RunLock::acquire(&cfg.data_dir(), &cfg.file, &command_line())?;
    let store = Store::new(cfg.data_dir());
    let planned = plan(cfg, registry)?;
    let cache = RunCache::default();
    let estimator = Estimator::measure(&store, &registry.stage_names());
    let ctx = RunContext {
        cfg,
        registry,
        store: &store,
        cache: &cache,
        verify,
        progress,
    };
    for stage in registry.stages.iter().filter(|s| wanted.contains(s.name())) {
        let name = stage.name();
        let forced = force && (names.is_empty() || names.iter().any(|n| n == name));
        let units: Vec<&Planned> = planned.iter().filter(|p| p.stage == name).collect();
        let ran = if stage.concurrent_units() && jobs > 1 && units.len() > 1 {
            let order = estimator.start_order(cfg, &units);
            run_concurrently(&ctx, *stage, &units, &order, forced, jobs)
        } else {
            units
                .into_iter()
                .try_for_each(|p| run_unit(&ctx, *stage, p, forced))
        };
        cache.end_stage(name);
        ran?;
    }
    Ok(())
}

/// Runs `units` of one stage on `jobs` workers, each with its own rayon pool
/// of an equal share of the threads. Units start in `order` (indices into
/// `units`); after a failure no new unit starts, the running ones finish
/// (and publish), and the error of the failed unit earliest in plan order
/// is returned.
fn run_concurrently(
    ctx: &RunContext,
    stage: &dyn Stage,
    units: &[&Planned],
    order: &[usize],
    forced: bool,
    jobs: usize,
) -> Result<()> {
    let workers = jobs.min(units.len());
    let threads = (rayon::current_num_threads() / workers).max(1);
    let next = AtomicUsize::new(0);
    let failures: Mutex<Vec<(usize, anyhow::Error)>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                let pool = match rayon::ThreadPoolBuilder::new().num_threads(threads).build() {
                    Ok(pool) => pool,
                    Err(e) => {
                        let e = anyhow!("cannot start a worker's {threads} threads: {e}");
                        failures.lock().expect("failures").push((0, e));
                        return;
                    }
                };
                loop {
                    if !failures.lock().expect("failures").is_empty() {
                        return;
                    }
                    let Some(&i) = order.get(next.fetch_add(1, Ordering::SeqCst)) else {
                        return;
                    };
                    let p = units[i];
                    if let Err(e) = pool.install(|| run_unit(ctx, stage, p, forced)) {
                        failures.lock().expect("failures").push((i, e));
                    }
                }
            });
        }
    });
    let mut failures = failures.into_inner().expect("failures");
    failures.sort_by_key(|(i, _)| *i);
    match failures.into_iter().next() {
        Some((_, e)) => Err(e),
        None => Ok(()),
    }
}

/// What every unit of one run shares.
struct RunContext<'a> {
    cfg: &'a Config,
    registry: &'a Registry,
    store: &'a Store,
    cache: &'a RunCache,
    verify: bool,
    progress: &'a Progress,
}

fn run_unit(ctx: &RunContext, stage: &dyn Stage, p: &Planned, forced: bool) -> Result<()> {
    let (store, progress) = (ctx.store, ctx.progress);
    let name = stage.name();
    let label = p.label();
    if store.exists(name, &p.key) && !forced {
        let damage = check_artifact(store, name, &p.key, ctx.verify);
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
    let staging = if stage.resumable() {
        store.begin_resumable(name, &p.key)?
    } else {
        store.begin(name, &p.key)?
    };
    let input = StageInput {
        cfg: ctx.cfg,
        store,
        planned: p,
        out_dir: staging.path(),
        progress,
        registry: ctx.registry,
        cache: ctx.cache,
    };
    // The one place that names the stage and unit in a stage's errors.
    let out = stage
        .run(&input)
        .map_err(|e| anyhow!("stage {label} failed: {e:#}"))?;
    let elapsed_s = started.elapsed().as_secs_f64();
    let manifest = Manifest {
        stage: name.to_string(),
        unit: p.unit.clone(),
        key: p.key.clone(),
        format_version: p.format_version,
        inputs: p.inputs.clone(),
        config: p.config.clone(),
        coact_version: env!("CARGO_PKG_VERSION").to_string(),
        created_unix: now_unix(),
        elapsed_s,
        // The pool it ran in: all threads, or its share with units at once.
        threads: Some(rayon::current_num_threads()),
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
fn closure(registry: &Registry, names: &[String]) -> BTreeSet<&'static str> {
    let mut out = BTreeSet::new();
    let mut todo: Vec<&'static str> = if names.is_empty() {
        registry.stage_names()
    } else {
        names
            .iter()
            .filter_map(|n| registry.stage(n).map(|s| s.name()))
            .collect()
    };
    while let Some(n) = todo.pop() {
        if out.insert(n) {
            if let Some(s) = registry.stage(n) {
                todo.extend(s.deps().iter().copied());
            }
        }
    }
    out
}
