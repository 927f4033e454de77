//! `coact status`: one line per stage, fresh / stale (and why) / missing /
//! damaged (which file), with the time each artifact to build should take
//! and their total, estimated from the throughput of the store's artifacts
//! (see [`super::estimate`]).

use crate::config::Config;
use crate::pipeline::estimate::{human, Estimator};
use crate::pipeline::plan::{status, Planned, State};
use crate::pipeline::stage::Registry;
use crate::pipeline::store::Store;
use anyhow::Result;
use std::fmt::Write;

pub fn report(cfg: &Config, registry: &Registry) -> Result<String> {
    let store = Store::new(cfg.data_dir());
    let mut out = String::new();
    writeln!(
        out,
        "study {} ({}), data in {}",
        cfg.study,
        cfg.file.display(),
        store.root().display()
    )?;
    if let Some(h) = crate::pipeline::lock::current_holder(store.root()) {
        writeln!(
            out,
            "in use by `{}` ({}): what it is building shows as missing until it publishes",
            h.command,
            h.describe()
        )?;
    }
    let states = status(cfg, &store, registry)?;
    let est = Estimator::measure(&store, &registry.stage_names());
    let (mut total, mut unknown, mut to_build) = (0.0, 0usize, 0usize);
    for s in registry.stages {
        let mine: Vec<&(Planned, State)> =
            states.iter().filter(|(p, _)| p.stage == s.name()).collect();
        // A stage this config gives nothing to build still gets its line.
        if mine.is_empty() {
            let why = if s.on_demand() {
                "not needed: no selected benchmark reads it"
            } else {
                "nothing to build for this config"
            };
            writeln!(out, "{:<9} -        {why}", s.name())?;
        }
        for (planned, state) in mine {
            let guess = (*state != State::Fresh).then(|| est.seconds(cfg, planned));
            if let Some(g) = guess {
                to_build += 1;
                match g {
                    Some(sec) => total += sec,
                    None => unknown += 1,
                }
            }
            write_state(&mut out, &store, planned, state, guess.flatten())?;
        }
    }
    if to_build > 0 {
        let unmeasured = if unknown > 0 {
            format!(
                ", plus {unknown} of a kind not built on this machine yet (no throughput to go by)"
            )
        } else {
            String::new()
        };
        writeln!(
            out,
            "to build: {to_build} artifacts, about {} from the throughput measured in {}{unmeasured}",
            human(total),
            store.root().display()
        )?;
    }
    Ok(out)
}

/// One artifact's line (and, when stale or damaged, why).
fn write_state(
    out: &mut String,
    store: &Store,
    planned: &Planned,
    state: &State,
    guess: Option<f64>,
) -> Result<()> {
    let est = guess
        .map(|s| format!("  ~{}", human(s)))
        .unwrap_or_default();
    let (stage, key) = (planned.stage, planned.key.as_str());
    let unit = planned
        .unit
        .as_deref()
        .map(|u| format!("  [{u}]"))
        .unwrap_or_default();
    match state {
        State::Fresh => {
            let m = store.manifest(stage, key)?;
            let tables: Vec<String> = m
                .tables
                .iter()
                .map(|(t, e)| format!("{stage}_{t} {} rows", e.rows))
                .collect();
            writeln!(
                out,
                "{stage:<9} fresh    {key}{unit}  {:.1} s; {}",
                m.elapsed_s,
                tables.join(", ")
            )?;
        }
        State::Stale(why) => {
            writeln!(out, "{stage:<9} stale    {key}{unit}  (rerun needed){est}")?;
            for w in why {
                writeln!(out, "{:<19}{w}", "")?;
            }
        }
        State::Missing => writeln!(out, "{stage:<9} missing  {key}{unit}{est}")?,
        State::Damaged(damage) => {
            writeln!(
                out,
                "{stage:<9} damaged  {key}{unit}  (`coact run` rebuilds it)"
            )?;
            for d in damage {
                writeln!(out, "{:<19}{d}", "")?;
            }
        }
    }
    Ok(())
}
